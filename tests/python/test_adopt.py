"""A data directory written by the report's own Lua store, opened by this store on both
roads (init.lua, and `make run`'s configuration on Tarantool 3): adopted in place,
once, logged with counts, nothing lost or doubled, also across a kill -9 in the middle
of it; and a directory with a `dialogs` space that is neither the report's nor this
store's refused, untouched (docs/coming-from-the-report.md, dialogs/adopt.lua).

The report's code is REPORT_INIT_LUA below, written from its description: it needs the
datetime module (Tarantool 2.10+; the report ran 3.x), so the adoption tests skip
themselves, with the reason, on a server without it (Debian's 2.6 in CI): set
TARANTOOL to a 3.x server. The refusal of a foreign space runs everywhere.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import tarantool

import config_harness
from conftest import forget_logs_of, report_logs_of
from dialogs_api import (ER_ACCESS_DENIED, ER_CREDS_MISMATCH, key_dialog_id, report_key,
                         tarantool_supports_datetime, walk_dialog)
from harness import (ServerError, admin_eval, free_port, module_built, run_init_expecting_exit,
                     tarantool_binary, wait_until)
from inbox_api import DRIFT_COUNTS, run_recount

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

BINARY = tarantool_binary()
HAS_DATETIME = tarantool_supports_datetime(BINARY)
needs_datetime = pytest.mark.skipif(
    not HAS_DATETIME, reason=f"{BINARY} has no datetime module: the report's code needs "
    "Tarantool 2.10+ (it ran on 3.x); set TARANTOOL to a 3.x server to run this")
needs_config = pytest.mark.skipif(
    not config_harness.has_config_module(BINARY), reason=config_harness.no_config_reason(BINARY))

# The report's store, as its description gives it: a plain `tarantool init.lua`
# with default directories (the working directory). It listens on REPORT_LISTEN
# (a free port) instead of its 3302, so that tests do not collide.
REPORT_ADMIN_PASSWORD = "report-admin-secret"
REPORT_INIT_LUA = """
local uuid = require('uuid')
local datetime = require('datetime')

box.cfg{listen = os.getenv('REPORT_LISTEN')}
box.schema.user.passwd('admin', '%s')

local s = box.schema.space.create('dialogs', {if_not_exists = true, format = {
    {name = 'id', type = 'uuid'},
    {name = 'dialog_id', type = 'string'},
    {name = 'user_from_id', type = 'uuid'},
    {name = 'user_to_id', type = 'uuid'},
    {name = 'text', type = 'string'},
    {name = 'created_at', type = 'datetime'},
}})
s:create_index('pk', {parts = {'id'}, if_not_exists = true})
s:create_index('dialog_id_k', {type = 'TREE', unique = false, parts = {'dialog_id'},
    if_not_exists = true})

function new_dialog(dialog_id, user_from, user_to, text)
    local id = uuid.new()
    box.space.dialogs:insert{id, dialog_id, uuid.fromstr(user_from), uuid.fromstr(user_to),
        text, datetime.now()}
    return id:str()
end

function get_dialog(dialog_id)
    return box.space.dialogs.index.dialog_id_k:select{dialog_id}
end

box.schema.func.create('new_dialog', {if_not_exists = true})
box.schema.func.create('get_dialog', {if_not_exists = true})
box.schema.user.grant('guest', 'execute', 'function', 'new_dialog', {if_not_exists = true})
box.schema.user.grant('guest', 'execute', 'function', 'get_dialog', {if_not_exists = true})
box.schema.user.grant('guest', 'read,write,execute', 'universe', nil, {if_not_exists = true})
""" % REPORT_ADMIN_PASSWORD

MESSAGES = 3000
DIALOGS = 120
# Keys the report took and this store's get_dialog refuses: kept in the dialog of
# their bytes (logged), read by that uuid.
REFUSED_KEYS = ["", "{" + str(uuid.uuid4()) + "}"]
# A small batch, so that the adoption takes many transactions and the pause lands
# after some of them.
TEST_BATCH = 100
PAUSE_AFTER_BATCHES = 7
PAUSED_LOG_LINE = "dialogs: adopting: paused"
ADOPTED_LOG_LINE = "dialogs: adopted the report's store"
START_TIMEOUT_S = 120.0


class Report:
    """The report's store, run in `data_dir`, filled through its own Lua functions as
    guest over IPROTO (as its service calls it)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir.parent / "report_init.lua").write_text(REPORT_INIT_LUA)
        self.port = free_port()
        self.log = data_dir.parent / "report.log"
        self.process = None

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [BINARY, str(self.data_dir.parent / "report_init.lua")], cwd=self.data_dir,
                env={**os.environ, "REPORT_LISTEN": f"127.0.0.1:{self.port}"},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def serves():
            if self.process.poll() is not None:
                raise ServerError(f"the report's store exited:\n{self.log.read_text()}")
            try:
                self.connect().call("get_dialog", ["probe"])
                return True
            except (tarantool.error.NetworkError, tarantool.error.DatabaseError):
                return False
        wait_until(serves, 60, "the report's store to serve")
        return self

    def connect(self, **kwargs):
        return tarantool.Connection("127.0.0.1", self.port, connect_now=True, **kwargs)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


def make_report_data(data_dir: Path) -> dict:
    """The report's data directory with MESSAGES messages over DIALOGS dialogs (and
    the REFUSED_KEYS ones), written one call at a time. Returns {key: [(from, to,
    text, created_at ns)...]} in the order written, read back from the report's own
    space."""
    report = Report(data_dir).start()
    try:
        conn = report.connect()
        rnd = random.Random(17)
        users = [uuid.uuid4() for _ in range(DIALOGS)]
        keys = []
        for i in range(DIALOGS):
            a, b = users[i], users[(i * 7 + 1) % DIALOGS]
            # Most keys are the report's service's; some dialogs are keyed by a
            # canonical uuid string, which stays that uuid here.
            keys.append(str(uuid.uuid4()) if i % 10 == 0 else report_key(a, b))
        keys += REFUSED_KEYS
        sent = {}
        for i in range(MESSAGES):
            key = keys[rnd.randrange(len(keys))] if i >= len(keys) else keys[i]
            a, b = str(uuid.uuid4()), str(uuid.uuid4())
            text = f"message {i} ✓ {rnd.random()}"
            message_id = conn.call("new_dialog", [key, a, b, text]).data[0]
            sent[message_id] = (key, a, b, text)
        # The admin password works on the report's store: anyone who has that code can
        # log in as admin over the network.
        admin = report.connect(user="admin", password=REPORT_ADMIN_PASSWORD)
        assert admin.eval("return box.session.user()").data == ["admin"]
        stored = {}
        for t in admin.select("dialogs", [], limit=MESSAGES * 2):
            key, a, b, text = sent[str(t[0])]
            assert (t[1], str(t[2]), str(t[3]), t[4]) == (key, a, b, text)
            stored.setdefault(key, []).append((t[5].value, a, b, text))
        assert sum(len(v) for v in stored.values()) == MESSAGES
        written = {}
        for key, rows in stored.items():
            rows.sort()
            written[key] = [(a, b, text, ns) for ns, a, b, text in rows]
        return written
    finally:
        report.stop()


def dialog_of(key: str) -> uuid.UUID:
    try:
        if len(key) == 36:
            return uuid.UUID(key)
    except ValueError:
        pass
    return key_dialog_id(key)


def read_every_message(conn, written: dict) -> None:
    """Every dialog reads back through get_dialog(key) (by its uuid for a key the
    store refuses) in the order written, sender, recipient, text and created_at
    kept; new v7 ids, increasing in created_at order over all dialogs; nothing
    doubled."""
    everything = []
    for key, want in written.items():
        by = dialog_of(key) if key in REFUSED_KEYS else key
        rows = [r for page in walk_dialog(conn, by, 1000) for r in page]
        assert [(str(r[2]), str(r[3]), r[4], r[5].value) for r in rows] == want, key
        assert all(r[1] == dialog_of(key) for r in rows), key
        everything += rows
    assert len(everything) == MESSAGES
    assert len({r[0] for r in everything}) == MESSAGES
    everything.sort(key=lambda r: r[5].value)
    for prev, r in zip(everything, everything[1:]):
        assert r[0].bytes > prev[0].bytes
    for r in everything:
        assert r[0].version == 7
        # The id carries the message's millisecond.
        assert int.from_bytes(r[0].bytes[:6], "big") == r[5].value // 1_000_000


def check_report_access_gone(srv, port: int) -> None:
    """The report's Lua functions, guest's grants and admin's password are gone."""
    assert admin_eval(srv, "box.func.new_dialog.language") == "C"
    assert admin_eval(srv, "box.func.get_dialog.language") == "C"
    assert admin_eval(srv, "box.space.dialogs_report == nil")
    assert admin_eval(srv, "next(box.space._user:get{1}[5]) == nil")
    # Tarantool's defaults: the public role, and session and usage on universe.
    assert [g[:3] for g in admin_eval(srv, "box.schema.user.info('guest')")] == [
        ["execute", "role", "public"], ["session,usage", "universe", ""]]
    # Admin with the report's password: the login is refused (the server's reply).
    with pytest.raises(tarantool.error.NetworkError) as info:
        tarantool.Connection("127.0.0.1", port, user="admin", password=REPORT_ADMIN_PASSWORD,
                             connect_now=True)
    refusal = info.value.__cause__
    assert isinstance(refusal, tarantool.error.DatabaseError), repr(info.value)
    assert refusal.code == ER_CREDS_MISMATCH, repr(refusal)
    # Guest cannot see the space's name: it is selected by id.
    space_id = admin_eval(srv, "box.space.dialogs.id")
    guest = tarantool.Connection("127.0.0.1", port, connect_now=True)
    for call in (lambda: guest.eval("return 1"), lambda: guest.select(space_id, []),
                 lambda: guest.call("get_dialog", ["k"])):
        with pytest.raises(tarantool.error.DatabaseError) as info:
            call()
        assert info.value.code == ER_ACCESS_DENIED, info.value
    guest.close()


def check_log(log: str, moved_before_restart: int) -> None:
    assert "dropped the report's Lua functions new_dialog, get_dialog" in log, log
    assert "revoked from guest what the report's code granted: read,write,execute on " \
           "universe" in log, log
    assert "removed admin's password" in log and "only on the local console" in log, log
    for key in REFUSED_KEYS:
        assert f"the key \"{key}\" is " in log, log
    line = next(x for x in log.splitlines() if ADOPTED_LOG_LINE in x)
    assert (f"{MESSAGES - moved_before_restart} messages moved ({moved_before_restart} "
            f"before a restart)") in line, line
    assert f"the store holds {MESSAGES} messages in {DIALOGS + len(REFUSED_KEYS)} " \
           "dialogs" in line, line


@needs_datetime
def test_init_lua_adopts_the_report_data_across_a_kill(make_server):
    srv = make_server("adopted", start=False, env={
        "DIALOGS_TEST_ADOPT_BATCH": str(TEST_BATCH),
        "DIALOGS_TEST_ADOPT_PAUSE_AFTER": str(PAUSE_AFTER_BATCHES),
    })
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / "admin.sock")
    written = make_report_data(srv.data_dir)

    # Stopped for good in the middle of the move, then killed.
    srv.start(wait=False)
    wait_until(lambda: PAUSED_LOG_LINE in srv.log_of_run(), START_TIMEOUT_S, "the pause")
    srv.kill()
    first = srv.log_of_run()
    assert "dialogs: adopting the report's store: 3000 messages in space dialogs" in first
    assert ADOPTED_LOG_LINE not in first

    # The next start finishes it.
    srv.env.update({"DIALOGS_TEST_ADOPT_BATCH": None, "DIALOGS_TEST_ADOPT_PAUSE_AFTER": None})
    srv.start(timeout=START_TIMEOUT_S)
    log = srv.log_of_run()
    check_log(first + log, PAUSE_AFTER_BATCHES * TEST_BATCH)
    assert srv.log_errors() == []
    read_every_message(srv.connect(), written)
    check_report_access_gone(srv, srv.port)
    # Every moved message reached its users' inboxes, once. (The report's test data
    # gives each message of a dialog other users, so read receipts name other peers:
    # receipts behind are expected; differences are not.)
    rc, counts, output = run_recount(srv.base_dir / "admin.sock")
    assert rc == 0 and {k: counts[k] for k in DRIFT_COUNTS} == dict.fromkeys(DRIFT_COUNTS, 0), output
    assert counts["messages"] == 3000 and counts["entries"] > 0, counts

    # Once: the next start has nothing to adopt and serves the same.
    srv.restart()
    assert "dialogs: adopt" not in srv.log_of_run()
    read_every_message(srv.connect(), written)


@needs_datetime
@needs_config
def test_make_run_adopts_the_report_data_across_a_kill(tmp_path):
    srv = config_harness.run_server(tmp_path, env={
        "DIALOGS_TEST_ADOPT_BATCH": str(TEST_BATCH),
        "DIALOGS_TEST_ADOPT_PAUSE_AFTER": str(PAUSE_AFTER_BATCHES),
    })
    report_logs_of(srv)
    try:
        written = make_report_data(srv.data_dir)
        srv.start(wait=False)
        wait_until(lambda: PAUSED_LOG_LINE in srv.log_of_run(), START_TIMEOUT_S, "the pause")
        srv.kill()
        first = srv.log_of_run()
        assert "holds data without instance names" in first, first
        srv.env.update({"DIALOGS_TEST_ADOPT_BATCH": None,
                        "DIALOGS_TEST_ADOPT_PAUSE_AFTER": None})
        srv.start(timeout=START_TIMEOUT_S)
        check_log(first + srv.log_of_run(), PAUSE_AFTER_BATCHES * TEST_BATCH)
        read_every_message(srv.connect(), written)
        check_report_access_gone(srv, srv.port)
    finally:
        srv.stop()
        forget_logs_of([srv])


FOREIGN_LUA = """
box.cfg{}
local s = box.schema.space.create('dialogs', {format = {
    {name = 'id', type = 'unsigned'}, {name = 'body', type = 'string'}}})
s:create_index('pk')
for i = 1, 10 do s:insert{i, 'not a message'} end
os.exit(0)
"""
FOREIGN_FOUND = ("dialogs: the data directory holds a space 'dialogs' that is neither "
                 "this store's (no schema version in _schema) nor the report's: format "
                 "{id unsigned, body string}, primary key pk on field 1, 10 tuples, engine "
                 "memtx. The report's store has format {id uuid, dialog_id string, "
                 "user_from_id uuid, user_to_id uuid, text string, created_at datetime}")


# The end-of-file marker of an xlog. Tarantool itself (box.cfg, before any code of
# the store runs) takes it off the last xlog when that one holds no rows, to append
# there, and a process that stops on an error does not put it back: the rows are
# what must stay the same.
XLOG_EOF_MARKER = bytes.fromhex("d510aded")


def files_of(directory: Path) -> dict:
    """Every file's name and the digest of its bytes (an xlog's without the marker)."""
    out = {}
    for p in sorted(directory.iterdir()):
        data = p.read_bytes()
        if p.suffix == ".xlog" and data.endswith(XLOG_EOF_MARKER):
            data = data[:-len(XLOG_EOF_MARKER)]
        out[p.name] = hashlib.sha256(data).hexdigest()
    return out


def make_foreign_data(data_dir: Path) -> dict:
    data_dir.mkdir(parents=True)
    script = data_dir.parent / "foreign.lua"
    script.write_text(FOREIGN_LUA)
    subprocess.run([BINARY, str(script)], cwd=data_dir, check=True, timeout=60,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return files_of(data_dir)


def test_init_lua_refuses_a_foreign_dialogs_space_untouched(tmp_path):
    before = make_foreign_data(tmp_path / "data")
    out = run_init_expecting_exit(tmp_path, {}, timeout=60)
    assert out.returncode != 0
    assert FOREIGN_FOUND in out.stdout + out.stderr, out.stderr
    assert files_of(tmp_path / "data") == before


@needs_config
def test_make_run_refuses_a_foreign_dialogs_space_untouched(tmp_path):
    srv = config_harness.run_server(tmp_path)
    before = make_foreign_data(srv.data_dir)
    out = srv.run_to_exit()
    assert out.returncode != 0
    assert FOREIGN_FOUND in out.stdout + out.stderr, out.stderr
    assert files_of(srv.data_dir) == before
