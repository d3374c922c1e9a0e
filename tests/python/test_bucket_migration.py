"""An existing data directory is upgraded in place to schema v3 (docs/operations.md,
"Data layout"): every message and request record of a previous release gets its bucket_id,
in batches, and the spaces their `bucket_id` index. Needs no vshard."""

from __future__ import annotations

import struct
import subprocess
import tempfile
import uuid
from pathlib import Path

from dialogs_api import ID, TEXT, get_dialog, new_dialog, new_user
from harness import admin_eval
from test_restart import SCHEMA_VERSION

# More than one batch of the migration (dialogs/schema.lua M.BATCH = 1000).
MESSAGES = 2500
DIALOGS = 50

# The data of the release before bucket_id: schema versions 1 and 2 as it made them.
OLD_RELEASE_DATA = """
local dir, n, dialogs = arg[1], tonumber(arg[2]), tonumber(arg[3])
box.cfg{memtx_dir = dir, wal_dir = dir, log = dir .. '/old.log'}
local uuid = require('uuid')
local s = box.schema.space.create('dialogs', {format = {
    {name = 'id', type = 'uuid'}, {name = 'dialog_id', type = 'uuid'},
    {name = 'user_from_id', type = 'uuid'}, {name = 'user_to_id', type = 'uuid'},
    {name = 'text', type = 'string'}, {name = 'created_at', type = 'unsigned'}}})
s:create_index('pk', {parts = {{field = 'id', type = 'uuid'}}})
s:create_index('dialog_id_k', {parts = {{field = 'dialog_id', type = 'uuid'},
    {field = 'id', type = 'uuid'}}})
local r = box.schema.space.create('dialogs_requests', {format = {
    {name = 'request_id', type = 'uuid'}, {name = 'message_id', type = 'uuid'}}})
r:create_index('pk', {parts = {{field = 'request_id', type = 'uuid'}}})
r:create_index('message_id', {unique = false, parts = {{field = 'message_id', type = 'uuid'}}})
box.space._schema:replace{'dialogs_schema_version', 2}
local ids = {}
for d = 1, dialogs do ids[d] = uuid.new() end
local ms = math.floor(require('clock').time() * 1000) - n
box.begin()
for i = 1, n do
    -- UUIDv7-shaped ids, one millisecond apart, as the old release issued them.
    local id = uuid.fromstr(string.format('%08x-%04x-7000-8000-%012x',
        math.floor((ms + i) / 65536), (ms + i) % 65536, i))
    s:insert{id, ids[i % dialogs + 1], uuid.new(), uuid.new(), 'old ' .. i, 1000000 + i}
    if i % 100 == 0 then
        r:insert{uuid.new(), id}
    end
end
-- A request whose message was deleted by hand.
r:insert{uuid.fromstr('5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02'), uuid.new()}
box.commit()
box.snapshot()
os.exit(0)
"""


def bucket_id(dialog_id, bucket_count=3000) -> int:
    w0, w1, w2, w3 = struct.unpack(">4I", uuid.UUID(str(dialog_id)).bytes)
    return 1 + (w0 ^ w1 ^ w2 ^ w3) % bucket_count


def test_a_previous_releases_data_gets_its_buckets_in_place(make_server, tmp_path):
    sock = Path(tempfile.mkdtemp(prefix="dlg-mig-")) / "admin.sock"
    srv = make_server("upgraded", start=False, env={"DIALOGS_ADMIN_SOCKET": str(sock)})
    srv.data_dir.mkdir(parents=True)
    script = tmp_path / "old_release.lua"
    script.write_text(OLD_RELEASE_DATA)
    subprocess.run(["tarantool", str(script), str(srv.data_dir), str(MESSAGES), str(DIALOGS)],
                   check=True, capture_output=True, timeout=120)

    srv.start(timeout=120)
    log = srv.log_of_run()
    assert f"dialogs: bucket_id given to {MESSAGES + MESSAGES // 100 + 1} existing rows" in log
    assert "dialogs: schema migrated to version 3" in log
    assert srv.log_errors() == []

    def ev(expr):
        return admin_eval(srv, expr, timeout=60)

    # Every message: its dialog's bucket. Every request: its message's, or (the
    # orphan) its own id's.
    rows = ev("(function() local out = {} for _, t in box.space.dialogs:pairs() do "
              "table.insert(out, {tostring(t[2]), t[7]}) end return out end)()")
    assert len(rows) == MESSAGES
    assert all(b == bucket_id(d) for d, b in rows)
    reqs = ev("(function() local out = {} for _, t in box.space.dialogs_requests:pairs() do "
              "local m = box.space.dialogs:get{t[2]} "
              "table.insert(out, {tostring(t[1]), m and tostring(m[2]) or box.NULL, t[3]}) "
              "end return out end)()")
    assert len(reqs) == MESSAGES // 100 + 1
    for rid, dialog, b in reqs:
        assert b == bucket_id(dialog if dialog is not None else rid), (rid, dialog, b)
    for space in ("dialogs", "dialogs_requests"):
        index = ev(f"(function() local i = box.space.{space}.index.bucket_id return "
                   "{i.unique, i.parts[1].type, i.parts[1].fieldno} end)()")
        assert index == [False, "unsigned", 7 if space == "dialogs" else 3]
        assert ev(f"box.space.{space}:format()[#box.space.{space}:format()].name") == "bucket_id"
    assert ev("box.space._schema:get{'dialogs_schema_version'}[2]") == SCHEMA_VERSION
    assert ev("box.space._schema:get{'dialogs_bucket_count'}[2]") == 3000

    # The old messages read as before (six fields), and new ones follow them.
    conn = srv.connect()
    some_dialog = rows[0][0]
    old = get_dialog(conn, some_dialog)
    assert len(old) == MESSAGES // DIALOGS and all(len(r) == 6 for r in old)
    a, b = new_user(), new_user()
    fresh = new_dialog(conn, some_dialog, a, b, "after the upgrade")
    page = get_dialog(conn, some_dialog)
    assert str(page[-1][ID]) == fresh and page[-1][TEXT] == "after the upgrade"
    assert ev(f"box.space.dialogs:get{{require('uuid').fromstr('{fresh}')}}[7]") == \
        bucket_id(some_dialog)

    # A second start finds nothing to do.
    srv.restart()
    assert "schema migrated" not in srv.log_of_run()
    assert len(get_dialog(srv.connect(), some_dialog)) == MESSAGES // DIALOGS + 1


def test_the_bucket_count_cannot_change_with_the_data(make_server):
    srv = make_server("counted", env={"DIALOGS_BUCKET_COUNT": "300"})
    srv.stop()
    srv.env["DIALOGS_BUCKET_COUNT"] = "3000"
    srv.start(wait=False)
    assert srv.process.wait(60) != 0
    assert ("dialogs: DIALOGS_BUCKET_COUNT: the data is spread over 300 buckets, which "
            "cannot change for the life of the data; got 3000") in srv.log_of_run()
