"""One bucket function everywhere (docs/sharding.md, "The bucket of a dialog").

The fixed vectors of tests/bucket_vectors.txt against every implementation a user
meets: docs/sharding.md's Python and Lua snippets as printed, dialogs/bucket.lua (the schema
migration's), and the release module's (what new_dialog stores and a router routes
by, through its `dialogs_route` entry). src/bucket.rs checks the same vectors.
Needs no vshard: runs everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from harness import REPO_ROOT, lib_dir, module_built

VECTORS = REPO_ROOT / "tests" / "bucket_vectors.txt"
SHARDING_DOC = REPO_ROOT / "docs" / "sharding.md"


def vectors() -> list:
    out = []
    for line in VECTORS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            d, n, b = line.split()
            out.append((d, int(n), int(b)))
    assert len(out) >= 10
    return out


def doc_block(lang: str, marker: str) -> str:
    """The docs/sharding.md code block in `lang` that contains `marker`."""
    blocks = re.findall(rf"```{lang}\n(.*?)```", SHARDING_DOC.read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"docs/sharding.md: expected one {lang} block with {marker!r}"
    return found[0]


def test_the_docs_python_bucket_function_matches_the_vectors():
    scope: dict = {}
    exec(doc_block("python", "def bucket_id"), scope)
    bucket_id = scope["bucket_id"]
    for d, n, want in vectors():
        assert bucket_id(uuid.UUID(d), n) == want, (d, n)
    # The default count is the documented 3000.
    d, n, want = next(v for v in vectors() if v[1] == 3000)
    assert bucket_id(uuid.UUID(d)) == want


LUA_CHECK = """
local json = require('json')
local doc_bucket_id = dofile(arg[1])
local bucket = require('dialogs.bucket')
local fio = require('fio')
local dir = fio.cwd()
box.cfg{memtx_dir = dir, wal_dir = dir, log = fio.pathjoin(dir, 'log')}
package.cpath = arg[2] .. '/?.so;' .. package.cpath
box.schema.func.create('dialogs_route', {language = 'C'})
local route = box.func.dialogs_route
local uuid = require('uuid')
for line in io.lines(arg[3]) do
    local d, n = line:match('^(%x[%x-]+) (%d+) %d+$')
    if d then
        n = tonumber(n)
        -- uuid.fromstr refuses some bit patterns (all ones) that are fine here.
        local u = uuid.fromstr(d) or d
        print(json.encode({d, n,
            doc_bucket_id(d, n),
            doc_bucket_id(u, n),
            bucket.of(d, n),
            bucket.of(u, n),
            route:call({n, 'get_dialog', {d}}),
            route:call({n, 'new_dialog', {d, d, d, 'x'}}),
        }))
    end
end
os.exit(0)
"""


@pytest.mark.skipif(not module_built(), reason="the module is not built (make build)")
def test_lua_and_native_bucket_functions_match_the_vectors(tmp_path):
    doc_lua = tmp_path / "doc_bucket.lua"
    doc_lua.write_text(doc_block("lua", "function bucket_id") + "\nreturn bucket_id\n")
    script = tmp_path / "check.lua"
    script.write_text(LUA_CHECK)
    out = subprocess.run(
        ["tarantool", str(script), str(doc_lua), str(lib_dir()), str(VECTORS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, LUA_PATH=f"{REPO_ROOT}/?.lua;;"),
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("[")]
    want = {(d, n): b for d, n, b in vectors()}
    assert len(rows) == len(want)
    for d, n, *got in rows:
        assert got == [want[(d, n)]] * 6, (d, n, got)


@pytest.mark.skipif(not module_built(), reason="the module is not built (make build)")
def test_native_bucket_of_a_derived_dialog_is_the_pair_dialogs(tmp_path):
    """For new_dialog with a nil dialog_id the router routes by the user pair's
    dialog: the bucket docs/sharding.md's Python gives for derived_dialog_id(a, b)."""
    from dialogs_api import derived_dialog_id

    scope: dict = {}
    exec(doc_block("python", "def bucket_id"), scope)
    a, b = uuid.uuid4(), uuid.uuid4()
    script = tmp_path / "pair.lua"
    script.write_text(f"""
local dir = require('fio').cwd()
box.cfg{{memtx_dir = dir, wal_dir = dir, log = dir .. '/log'}}
package.cpath = '{lib_dir()}/?.so;' .. package.cpath
box.schema.func.create('dialogs_route', {{language = 'C'}})
print(box.func.dialogs_route:call({{3000, 'new_dialog', {{box.NULL, '{a}', '{b}', 'x'}}}}))
os.exit(0)
""")
    out = subprocess.run(["tarantool", str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == scope["bucket_id"](derived_dialog_id(a, b))
