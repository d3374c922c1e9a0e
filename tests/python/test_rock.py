"""The rock (dialogs-scm-1.rockspec): `luarocks make --tree DIR` builds the module with
cargo and installs the Lua modules, the role and the library into DIR, and a server
that knows nothing but DIR's paths finds all of it there: on 2.x a few lines of Lua
that use the modules, on Tarantool 3 a configuration with `roles: [dialogs]`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from config_harness import ConfigServer, TARANTOOL, has_config_module, no_config_reason
from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import DEFAULT_PASSWORD, REPO_ROOT, admin_eval, free_port, module_built

pytestmark = [
    pytest.mark.skipif(not module_built(), reason="run `make build` first"),
    pytest.mark.skipif(shutil.which("luarocks") is None,
                       reason="luarocks is not installed (`make deps` installs it)"),
]

ROCKSPEC = REPO_ROOT / "dialogs-scm-1.rockspec"
PROCEDURES = ("new_dialog", "get_dialog", "list_dialogs", "mark_read")

# A 2.x application using the installed modules: what init.lua does, minus the
# environment parsing, with nothing but the rocks tree on its paths.
APP_LUA = """
box.cfg{listen = os.getenv('LISTEN'), memtx_dir = 'data', wal_dir = 'data',
        memtx_memory = 64 * 1024 * 1024}
local access = require('dialogs.access')
local schema = require('dialogs.schema')
box.session.su('admin', function()
    schema.migrate()
    schema.register_functions()
    access.setup_app_user({user = 'dialogs', password = os.getenv('APP_PASSWORD')})
    access.restrict_public_role()
end)
local sources = {}
for _, m in ipairs({'dialogs.access', 'dialogs.schema', 'dialogs.config'}) do
    sources[m] = package.searchpath(m, package.path)
end
for _, p in ipairs({'new_dialog', 'get_dialog', 'list_dialogs', 'mark_read'}) do
    sources[p] = package.searchpath(p, package.cpath)
end
require('log').info('rock app: %s', require('json').encode(sources))
"""

# A Tarantool 3 configuration for a rock install: config/single.yaml's sections,
# without anything that points at a checkout.
ROCK_CONFIG = """
config:
  context:
    app_password:
      from: env
      env: DIALOGS_PASSWORD
credentials:
  users:
    dialogs:
      password: '{{{{ context.app_password }}}}'
      privileges:
        - permissions: [execute]
          functions: [new_dialog, get_dialog, list_dialogs, mark_read]
iproto:
  listen:
    - uri: 127.0.0.1:{port}
memtx:
  memory: 67108864
console:
  socket: data/tarantool.control
roles: [dialogs]
groups:
  g:
    replicasets:
      r:
        instances:
          dialogs: {{}}
"""


@pytest.fixture(scope="module")
def tree():
    d = Path(tempfile.mkdtemp(prefix="dlg-rock-"))
    out = subprocess.run(["luarocks", "make", "--tree", str(d), str(ROCKSPEC)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"luarocks make failed:\n{out.stdout}\n{out.stderr}"
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tree_paths(tree: Path) -> dict:
    """LUA_PATH / LUA_CPATH of the tree alone (what `luarocks path --tree` gives, minus
    the system's), so nothing can come from the checkout."""
    lua = tree / "share" / "lua" / "5.1"
    lib = tree / "lib" / "lua" / "5.1"
    return {"LUA_PATH": f"{lua}/?.lua;{lua}/?/init.lua;;", "LUA_CPATH": f"{lib}/?.so;;"}


def test_the_rock_installs_modules_role_and_library(tree):
    lua = tree / "share" / "lua" / "5.1" / "dialogs"
    installed = sorted(p.name for p in lua.glob("*.lua"))
    # Every module of the checkout, the role (init.lua) included.
    assert installed == sorted(p.name for p in (REPO_ROOT / "dialogs").glob("*.lua"))
    lib = tree / "lib" / "lua" / "5.1"
    for p in PROCEDURES:
        so = lib / f"{p}.so"
        assert so.is_file()
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True,
                                 text=True, check=True).stdout
        assert any(line.split()[-1] == p for line in symbols.splitlines())


def test_a_2x_style_application_runs_from_the_rock(tree, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "data").mkdir()
    (app / "app.lua").write_text(APP_LUA)
    port = free_port()
    srv = ConfigServer(app, name="rock-app", port=port, command=[TARANTOOL, "app.lua"],
                       cwd=app, console=app / "none",
                       env={"LISTEN": f"127.0.0.1:{port}", "APP_PASSWORD": DEFAULT_PASSWORD,
                            "LUA_PATH": None, **tree_paths(tree)})
    srv.start()
    try:
        conn = srv.connect()
        a, b = new_user(), new_user()
        msg = new_dialog(conn, None, str(a), str(b), "from the rock")
        assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [msg]
        # Modules and library came from the tree, not the checkout.
        sources = json.loads(srv.log_of_run().split("rock app: ", 1)[1].splitlines()[0])
        lua = tree / "share" / "lua" / "5.1" / "dialogs"
        assert sources == {
            "dialogs.access": f"{lua}/access.lua", "dialogs.schema": f"{lua}/schema.lua",
            "dialogs.config": f"{lua}/config.lua",
            **{p: f"{tree}/lib/lua/5.1/{p}.so" for p in PROCEDURES}}
    finally:
        srv.stop()


@pytest.mark.skipif(not has_config_module(), reason=no_config_reason())
def test_a_tarantool_3_configuration_finds_the_role_in_the_rock(tree, tmp_path):
    base = tmp_path / "cfg"
    base.mkdir()
    port = free_port()
    (base / "config.yaml").write_text(ROCK_CONFIG.format(port=port))
    srv = ConfigServer(base, name="dialogs", port=port,
                       command=[TARANTOOL, "--config", "config.yaml", "--name", "dialogs"],
                       cwd=base, console=base / "data" / "tarantool.control",
                       env={"LUA_PATH": None, **tree_paths(tree)})
    srv.start()
    try:
        conn = srv.connect()
        a, b = new_user(), new_user()
        msg = new_dialog(conn, None, str(a), str(b), "role from the rock")
        assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [msg]
        where = admin_eval(srv, "{package.search('dialogs'), package.search('new_dialog')}")
        assert where == [f"{tree}/share/lua/5.1/dialogs/init.lua",
                         f"{tree}/lib/lua/5.1/new_dialog.so"]
    finally:
        srv.stop()
