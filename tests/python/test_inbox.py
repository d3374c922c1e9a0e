"""The inbox on one replica set (docs/inbox.md), as a client and an operator see it.

- list_dialogs and mark_read: replies, order, paging, unread counts, read receipts,
  the totals (the badge), a note to self, every refusal with its code and message,
  guest kept out, the server serving after bad calls;
- exact counts (issue 19): a retry with a request_id counts once, also after a
  dropped connection; kill -9 under 50 writers, a failover and a rejoin leave every
  acknowledged message counted and scripts/recount finding no difference;
- the operator's recount: finds each kind of difference, and repairs it;
- existing data: a data directory at schema version 3 gets its inboxes built on
  start, also across a kill -9 in the middle of the build, while it serves.

Real `tarantool init.lua` servers on 127.0.0.1 (harness.Server); the operator's
side through the admin socket (DIALOGS_ADMIN_SOCKET) and scripts/recount.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asynctnt
import msgpack
import pytest
import tarantool

from config_harness import CONFIG_STARTED, Cluster, has_config_module, no_config_reason
from conftest import forget_logs_of, report_logs_of
from dialogs_api import (BAD_ARITY, BAD_OPTION, BAD_TYPE, BAD_UUID, ER_ACCESS_DENIED, ID, TEXT,
                         derived_dialog_id, expect_error, get_dialog, message_id_of,
                         new_dialog, new_user, walk_dialog)
from harness import (REPO_ROOT, admin_eval, admin_socket, module_built, replica_set,
                     wait_until)
from inbox_api import (DEFAULT_LIST, DRIFT_COUNTS, EXIT_DRIFT, MAX_LIST, NOT_IN_DIALOG,
                       NOT_IN_DIALOG_MESSAGE, all_dialogs, list_dialogs, mark_read,
                       recount_clean, run_recount)
from iproto_raw import RawConnection
from sharded import make_cluster, needs_vshard  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

NIL_UUID = "00000000-0000-0000-0000-000000000000"
REPLICATION_WAIT_S = 15.0


def ids(entries) -> list:
    return [str(e["dialog_id"]) for e in entries]


def stored_ids(conn, dialog) -> list:
    return [str(t[ID]) for page in walk_dialog(conn, dialog, 1000) for t in page]


@pytest.fixture
def sock_dir():
    # Unix socket paths are limited to about 100 bytes: not under tmp_path.
    d = Path(tempfile.mkdtemp(prefix="dlg-inbox-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def admin_server(make_server, sock_dir: Path, name: str, start: bool = True, **kwargs):
    """A server with init.lua's own admin console (DIALOGS_ADMIN_SOCKET)."""
    srv = make_server(name, start=False, **kwargs)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(sock_dir / f"{name}.sock")
    return srv.start() if start else srv


# --- the calls, as a client sees them ---------------------------------------------------


def test_list_dialogs_most_recent_first_with_unread_last_message_and_totals(conn):
    a, b, c = new_user(), new_user(), new_user()
    ab, bc = derived_dialog_id(a, b), derived_dialog_id(b, c)
    m1 = new_dialog(conn, None, a, b, "one")
    m2 = new_dialog(conn, None, a, b, "two")
    m3 = new_dialog(conn, None, c, b, "from c")
    m4 = new_dialog(conn, None, a, b, "three")

    got = list_dialogs(conn, b)
    # b's dialog with a had the latest message: first.
    assert got == {
        "dialogs": [
            {"dialog_id": ab, "peer_id": a, "last_id": uuid.UUID(m4), "last_from": a,
             "last_text": "three", "unread": 3, "read_id": None,
             "peer_read_id": uuid.UUID(m4)},
            {"dialog_id": bc, "peer_id": c, "last_id": uuid.UUID(m3), "last_from": c,
             "last_text": "from c", "unread": 1, "read_id": None,
             "peer_read_id": uuid.UUID(m3)},
        ],
        "unread_messages": 4, "unread_dialogs": 2, "next": None,
    }
    # The sender: nothing unread (sending reads the dialog), no receipt yet.
    assert list_dialogs(conn, a) == {
        "dialogs": [{"dialog_id": ab, "peer_id": b, "last_id": uuid.UUID(m4), "last_from": a,
                     "last_text": "three", "unread": 0, "read_id": uuid.UUID(m4),
                     "peer_read_id": None}],
        "unread_messages": 0, "unread_dialogs": 0, "next": None,
    }
    # A reply moves the dialog up for both and reads it for the one who replies.
    m5 = new_dialog(conn, None, b, c, "reply")
    got = list_dialogs(conn, b)
    assert ids(got["dialogs"]) == [str(bc), str(ab)]
    assert [e["unread"] for e in got["dialogs"]] == [0, 3]
    assert got["dialogs"][0]["read_id"] == uuid.UUID(m5)
    assert (got["unread_messages"], got["unread_dialogs"]) == (3, 1)
    c_entry = list_dialogs(conn, c)["dialogs"][0]
    assert (c_entry["unread"], c_entry["last_from"], c_entry["peer_read_id"]) == \
        (1, b, uuid.UUID(m5))
    assert {m1, m2} <= set(stored_ids(conn, ab))


def test_mark_read_moves_the_cursor_forward_only_and_the_peer_sees_it(conn):
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    sent = [new_dialog(conn, None, a, b, f"m{i}") for i in range(5)]

    assert mark_read(conn, b, dialog, sent[1]) == 3
    entry = list_dialogs(conn, b)["dialogs"][0]
    assert (entry["unread"], entry["read_id"]) == (3, uuid.UUID(sent[1]))
    # The read receipt: a sees how far b has read.
    assert list_dialogs(conn, a)["dialogs"][0]["peer_read_id"] == uuid.UUID(sent[1])
    # Repeated or stale: nothing changes, the reply is the current count.
    assert mark_read(conn, b, dialog, sent[1]) == 3
    assert mark_read(conn, b, dialog, sent[0]) == 3
    assert list_dialogs(conn, b)["dialogs"][0]["read_id"] == uuid.UUID(sent[1])
    assert list_dialogs(conn, a)["dialogs"][0]["peer_read_id"] == uuid.UUID(sent[1])
    # The dialog's key form names the same dialog.
    assert mark_read(conn, str(b), str(dialog), sent[3]) == 1
    # To the end: nothing unread, the badge follows.
    assert mark_read(conn, b, dialog, sent[4]) == 0
    got = list_dialogs(conn, b)
    assert (got["unread_messages"], got["unread_dialogs"]) == (0, 0)
    assert list_dialogs(conn, a)["dialogs"][0]["peer_read_id"] == uuid.UUID(sent[4])
    # A user may mark its own message read: it is already read.
    assert mark_read(conn, a, dialog, sent[2]) == 0
    # A new message after that is unread again.
    new_dialog(conn, None, a, b, "more")
    assert list_dialogs(conn, b)["dialogs"][0]["unread"] == 1


def test_pages_follow_next_through_every_dialog_once(conn):
    user = new_user()
    peers = [new_user() for _ in range(45)]
    for i, p in enumerate(peers):
        new_dialog(conn, None, p, user, f"hello {i}")
    newest_first = [str(derived_dialog_id(user, p)) for p in reversed(peers)]

    first = list_dialogs(conn, user)
    assert len(first["dialogs"]) == DEFAULT_LIST
    assert first["next"] == first["dialogs"][-1]["last_id"]
    assert (first["unread_messages"], first["unread_dialogs"]) == (45, 45)
    walked = []
    opts = {"limit": 7}
    while True:
        page = list_dialogs(conn, user, dict(opts))
        walked += ids(page["dialogs"])
        # The badge is the user's, on every page.
        assert (page["unread_messages"], page["unread_dialogs"]) == (45, 45)
        if page["next"] is None:
            assert len(page["dialogs"]) < 7
            break
        assert len(page["dialogs"]) == 7
        opts["before"] = str(page["next"])
    assert walked == newest_first
    assert ids(all_dialogs(conn, user, MAX_LIST)) == newest_first
    # A full last page has a `next`, and the page after it is empty.
    page = list_dialogs(conn, user, {"limit": 45})
    assert len(page["dialogs"]) == 45 and page["next"] is not None
    empty = list_dialogs(conn, user, {"before": page["next"]})
    assert (empty["dialogs"], empty["next"], empty["unread_messages"]) == ([], None, 45)


def test_a_note_to_self_is_one_dialog_with_nothing_unread(conn):
    me = new_user()
    dialog = derived_dialog_id(me, me)
    first = new_dialog(conn, None, me, me, "note 1")
    last = new_dialog(conn, None, me, me, "note 2")
    assert list_dialogs(conn, me) == {
        "dialogs": [{"dialog_id": dialog, "peer_id": me, "last_id": uuid.UUID(last),
                     "last_from": me, "last_text": "note 2", "unread": 0,
                     "read_id": uuid.UUID(last), "peer_read_id": None}],
        "unread_messages": 0, "unread_dialogs": 0, "next": None,
    }
    assert mark_read(conn, me, dialog, first) == 0


def test_a_user_without_dialogs_has_an_empty_inbox(conn):
    assert list_dialogs(conn, new_user()) == {"dialogs": [], "unread_messages": 0,
                                              "unread_dialogs": 0, "next": None}


# (arguments, code, exact message or None, pattern or None)
BAD_LIST = [
    pytest.param([], BAD_ARITY, "list_dialogs: expected 1 or 2 arguments (user_id [, opts]), "
                 "got 0", None, id="arity-0"),
    pytest.param(["u", {}, 1], BAD_ARITY, None, r"^list_dialogs: ", id="arity-3"),
    pytest.param([None], BAD_TYPE, None, r"^user_id: ", id="user-nil"),
    pytest.param([42], BAD_TYPE, None, r"^user_id: ", id="user-integer"),
    pytest.param(["abc"], BAD_UUID, 'user_id: malformed uuid "abc"', None, id="user-malformed"),
    pytest.param([NIL_UUID], BAD_UUID, None, r"^user_id: ", id="user-nil-uuid"),
    pytest.param(["u", {"limit": 0}], BAD_OPTION, "opts.limit: must be 1 to 100, got 0", None,
                 id="limit-0"),
    pytest.param(["u", {"limit": 101}], BAD_OPTION, "opts.limit: must be 1 to 100, got 101",
                 None, id="limit-101"),
    pytest.param(["u", {"limit": "5"}], BAD_TYPE, None, r"^opts\.limit: ", id="limit-string"),
    pytest.param(["u", {"before": "zzz"}], BAD_UUID, None, r"^opts\.before: ",
                 id="before-malformed"),
    pytest.param(["u", {"after": "x"}], BAD_OPTION, None, r"^opts\b.*\bafter\b",
                 id="unknown-option"),
    pytest.param(["u", "opts"], BAD_TYPE, None, r"^opts: ", id="opts-string"),
]


@pytest.mark.parametrize("args, code, message, pattern", BAD_LIST)
def test_bad_list_dialogs_is_refused_and_the_server_serves_on(conn, args, code, message,
                                                               pattern):
    user = new_user()
    new_dialog(conn, None, new_user(), user, "hi")
    args = [str(user) if a == "u" else a for a in args]
    expect_error(lambda: conn.call("list_dialogs", args), code, message, pattern)
    assert list_dialogs(conn, user)["unread_messages"] == 1


def test_bad_mark_read_is_refused_and_changes_nothing(conn):
    a, b, c = new_user(), new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    m = new_dialog(conn, None, a, b, "to b")
    other = new_dialog(conn, None, a, c, "to c")
    call = lambda *args: lambda: conn.call("mark_read", list(args))  # noqa: E731

    expect_error(call(str(b), str(dialog)), BAD_ARITY,
                 "mark_read: expected 3 arguments (user_id, dialog_id, up_to_id), got 2")
    expect_error(call(str(b), str(dialog), m, 1), BAD_ARITY, None, r"^mark_read: ")
    expect_error(call(None, str(dialog), m), BAD_TYPE, None, r"^user_id: ")
    expect_error(call("nope", str(dialog), m), BAD_UUID, 'user_id: malformed uuid "nope"')
    expect_error(call(str(b), None, m), BAD_TYPE, None, r"^dialog_id: ")
    expect_error(call(str(b), str(dialog), 7), BAD_TYPE, None, r"^up_to_id: ")
    expect_error(call(str(b), str(dialog), "x"), BAD_UUID, 'up_to_id: malformed uuid "x"')
    expect_error(call(str(b), str(dialog), NIL_UUID), BAD_UUID, None, r"^up_to_id: ")
    # Not a message of this user in this dialog: another dialog's, another user's,
    # none at all.
    expect_error(call(str(b), str(dialog), other), NOT_IN_DIALOG, NOT_IN_DIALOG_MESSAGE)
    expect_error(call(str(c), str(dialog), m), NOT_IN_DIALOG, NOT_IN_DIALOG_MESSAGE)
    expect_error(call(str(b), str(dialog), str(uuid.uuid4())), NOT_IN_DIALOG,
                 NOT_IN_DIALOG_MESSAGE)
    expect_error(call(str(b), str(derived_dialog_id(b, c)), m), NOT_IN_DIALOG,
                 NOT_IN_DIALOG_MESSAGE)

    got = list_dialogs(conn, b)
    assert (got["dialogs"][0]["unread"], got["dialogs"][0]["read_id"]) == (1, None)
    assert list_dialogs(conn, a)["dialogs"][0]["peer_read_id"] is None
    assert list_dialogs(conn, c)["unread_messages"] == 1
    assert mark_read(conn, b, dialog, m) == 0


@pytest.mark.parametrize("guest", [None, "execute"])
def test_guest_cannot_call_the_inbox(make_server, guest):
    srv = make_server("guest", env={"DIALOGS_GUEST": guest})
    user = new_user()
    new_dialog(srv.connect(), None, new_user(), user, "hi")
    anon = srv.connect(user=None)
    d = str(derived_dialog_id(user, user))
    expect_error(lambda: anon.call("list_dialogs", [str(user)]), ER_ACCESS_DENIED, None,
                 r"list_dialogs")
    expect_error(lambda: anon.call("mark_read", [str(user), d, d]), ER_ACCESS_DENIED, None,
                 r"mark_read")
    assert list_dialogs(srv.connect(), user)["unread_messages"] == 1


# --- exact counts ---------------------------------------------------------------------


def test_a_retry_with_a_request_id_counts_once(conn, shared_server):
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    rid = str(uuid.uuid4())
    first = new_dialog(conn, None, a, b, "once", {"request_id": rid})
    assert new_dialog(conn, None, a, b, "once", {"request_id": rid}) == first
    assert list_dialogs(conn, b)["dialogs"][0]["unread"] == 1

    # The reply lost with the connection: the call reached the server, the client
    # hung up before the reply, and retries on a new connection.
    rid = str(uuid.uuid4())
    raw = RawConnection(shared_server.host, shared_server.port, shared_server.user,
                        shared_server.password)
    raw.send_call("new_dialog", msgpack.packb([None, str(a), str(b), "lost reply",
                                               {"request_id": rid}]))
    wait_until(lambda: len(stored_ids(conn, dialog)) == 2, 10, "the first try stored")
    raw.abort()
    second = new_dialog(conn, None, a, b, "lost reply", {"request_id": rid})
    assert stored_ids(conn, dialog) == [first, second]
    got = list_dialogs(conn, b)
    assert (got["dialogs"][0]["unread"], got["unread_messages"]) == (2, 2)
    assert got["dialogs"][0]["last_id"] == uuid.UUID(second)


# --- the operator's recount -------------------------------------------------------------

# Corrupts one store's inbox as admin: one entry's count, one entry removed, one
# entry nobody's message made, one user's totals.
CORRUPT_LUA = """(function(b, dialog, c, c_dialog, stranger)
    local u = require('uuid')
    b, dialog, c, c_dialog, stranger = u.fromstr(b), u.fromstr(dialog), u.fromstr(c),
        u.fromstr(c_dialog), u.fromstr(stranger)
    local inbox, totals = box.space.dialogs_inbox, box.space.dialogs_inbox_totals
    inbox:update({b, dialog}, {{'=', 7, 9}})
    inbox:delete({c, c_dialog})
    local t = inbox:get({b, dialog}):totable()
    t[1] = stranger
    inbox:insert(t)
    totals:update({c}, {{'=', 2, 40}})
    return true
end)('%s', '%s', '%s', '%s', '%s')"""


def test_recount_finds_each_difference_and_repair_fixes_it(make_server, sock_dir):
    srv = admin_server(make_server, sock_dir, "recount")
    conn = srv.connect()
    a, b, c = new_user(), new_user(), new_user()
    ab, ac = derived_dialog_id(a, b), derived_dialog_id(a, c)
    for i in range(3):
        new_dialog(conn, None, a, b, f"to b {i}")
        new_dialog(conn, None, a, c, f"to c {i}")
    new_dialog(conn, None, b, a, "reply")
    new_dialog(conn, None, c, c, "note")
    up_to = stored_ids(conn, ab)[1]
    mark_read(conn, a, ab, up_to)
    before = {u: list_dialogs(conn, u) for u in (a, b, c)}

    counts = recount_clean(admin_socket(srv))
    assert {k: counts[k] for k in ("messages", "dialogs", "entries", "users")} == \
        {"messages": 8, "dialogs": 3, "entries": 5, "users": 3}

    stranger = new_user()
    lua = CORRUPT_LUA % (b, ab, c, ac, stranger)
    assert admin_eval(srv, lua.replace("\n", " ")) is True
    rc, counts, output = run_recount(admin_socket(srv))
    assert rc == EXIT_DRIFT, output
    # b's count, c's missing entry, the stranger's entry; the totals of b (its
    # entry's count), c (the row itself) and the stranger.
    assert {k: counts[k] for k in DRIFT_COUNTS} == \
        {"wrong": 1, "missing": 1, "extra": 1, "totals_wrong": 1}, output
    assert f"wrong: user {b}, dialog {ab}: unread 9, expected 0" in output
    assert f"missing: user {c}, dialog {ac}" in output
    assert f"extra: user {stranger}, dialog {ab}" in output
    assert f"totals: user {c}: unread_messages 40, unread_dialogs 1, expected 3, 1" in output
    # A check changes nothing.
    assert list_dialogs(conn, b)["dialogs"][0]["unread"] == 9

    # make recount, as docs/inbox.md shows it.
    make = ["make", "-s", "--no-print-directory", "-C", str(REPO_ROOT), "recount",
            f"ADMIN_SOCKET={admin_socket(srv)}"]
    out = subprocess.run(make, capture_output=True, text=True, timeout=120)
    # make fails with 2 when its recipe failed, and names the recipe's status.
    assert out.returncode == 2 and f"Error {EXIT_DRIFT}" in out.stderr, out
    assert "wrong: 1\n" in out.stdout, out
    out = subprocess.run(make + ["REPAIR=1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "repaired: true" in out.stdout, out
    assert "wrong: 1\n" in out.stdout and "missing: 1\n" in out.stdout, out.stdout
    recount_clean(admin_socket(srv))
    assert {u: list_dialogs(conn, u) for u in (a, b, c)} == before
    assert list_dialogs(conn, stranger)["dialogs"] == []


def test_new_dialog_called_from_lua_keeps_the_inbox_exact(make_server, sock_dir):
    """scripts/rejoin replay (and an operator) call new_dialog from Lua on the
    instance, where the arguments live in memory the call's own writes reuse."""
    srv = admin_server(make_server, sock_dir, "from-lua")
    a, b = new_user(), new_user()
    texts = ["t", "text 1", "a longer text " * 20, "«ü» 🙂"]
    lua = ("(function(a, b, texts) for _, t in ipairs(texts) do "
           "box.func.new_dialog:call({box.NULL, a, b, t}) end return true end)"
           "('%s', '%s', require('json').decode('%s'))")
    for i in range(len(texts)):
        assert admin_eval(srv, lua % (a, b, json.dumps(texts[i:i + 1], ensure_ascii=False))) is True
        entry = list_dialogs(srv.connect(), b)["dialogs"][0]
        assert (entry["last_text"], entry["unread"]) == (texts[i], i + 1)
    recount_clean(admin_socket(srv))


def test_recount_refuses_what_it_cannot_do(make_server, sock_dir):
    srv = admin_server(make_server, sock_dir, "refusals")
    for opts, message in [
        ("{repair = 1}", "dialogs: recount: repair: expected true or false, got number"),
        ("{fix = true}", "dialogs: recount: unknown option fix (known: repair)"),
        ("'yes'", "dialogs: recount: expected a table of options {repair = true|false}, "
                  "got string"),
    ]:
        with pytest.raises(RuntimeError) as e:
            admin_eval(srv, f"require('dialogs').recount({opts})")
        assert str(e.value).endswith(message)
    rc, _, output = run_recount(sock_dir / "nobody.sock")
    assert rc == 1 and "cannot connect" in output, output
    for args in ([], ["--repair"], [str(admin_socket(srv)), "--fix"]):
        out = subprocess.run(["tarantool", str(REPO_ROOT / "scripts" / "recount"), *args],
                             capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stderr) == \
            (2, "usage: scripts/recount ADMIN_SOCKET [--repair]\n"), (args, out)


# A dialog longer than the recount's batch (dialogs.inbox.BATCH, 1000): walked in
# chunks with yields between them.
LONG_DIALOG = 2500
SEED_LUA = ("(function(a, b, n) for i = 1, n do box.func.new_dialog:call({box.NULL, "
            "i %% 2 == 0 and a or b, i %% 2 == 0 and b or a, 'seed ' .. i}) end "
            "return box.space.dialogs:len() end)('%s', '%s', %d)")
RECOUNTS_UNDER_LOAD = 4


async def write_and_read(srv, a, b, stop: asyncio.Event) -> int:
    """Writes into the dialog of a and b (both ways) and marks it read up to the
    newest message, until `stop`; how many calls it made."""
    conn = asynctnt.Connection(host=srv.host, port=srv.port, username=srv.user,
                               password=srv.password, connect_timeout=10,
                               request_timeout=60, reconnect_timeout=0)
    await conn.connect()
    key, dialog, calls = (srv.host, srv.port), str(derived_dialog_id(a, b)), 0
    try:
        while not stop.is_set():
            sender, reader = (a, b) if calls % 3 else (b, a)
            reply = await conn.call("new_dialog", [None, str(sender), str(reader), "live"])
            if calls % 4 == 0:
                await conn.call("mark_read", [str(reader), dialog, message_id_of(key, reply)])
            calls += 1
    finally:
        conn.close()
    return calls


def test_recount_under_writes_finds_nothing_wrong_and_repairs_nothing(make_server, sock_dir):
    """Each dialog and each user is checked against one state of the data, so a
    recount while clients write and read finds no difference in a store that has
    none, also in a dialog walked in chunks (docs/inbox.md, "Recount")."""
    srv = admin_server(make_server, sock_dir, "live")
    a, b = new_user(), new_user()
    assert admin_eval(srv, SEED_LUA % (a, b, LONG_DIALOG)) == LONG_DIALOG
    pairs = [(a, b)] * 4 + [(new_user(), new_user()) for _ in range(6)]

    async def run():
        stop = asyncio.Event()
        load = [asyncio.ensure_future(write_and_read(srv, x, y, stop)) for x, y in pairs]
        reports = []
        try:
            for i in range(RECOUNTS_UNDER_LOAD):
                assert not any(t.done() for t in load), [t.exception() for t in load]
                reports.append(await asyncio.to_thread(run_recount, admin_socket(srv),
                                                       repair=i % 2 == 1))
        finally:
            stop.set()
            calls = await asyncio.wait_for(asyncio.gather(*load), 60)
        return reports, calls

    reports, calls = asyncio.run(run())
    for rc, counts, output in reports:
        assert rc == 0, output
        assert {k: counts[k] for k in DRIFT_COUNTS} == dict.fromkeys(DRIFT_COUNTS, 0), output
    assert all(n > 0 for n in calls)
    assert reports[-1][1]["messages"] > LONG_DIALOG
    print(f"\n[recount under writes] calls={sum(calls)} walked_again="
          f"{[r[1]['walked_again'] for r in reports]}")
    recount_clean(admin_socket(srv))


# --- kill -9 under 50 writers -------------------------------------------------------------

WRITERS = 50
# Writers whose dialogs readers also mark read; the others' recipients count all.
READ_DIALOGS = 10
READERS = 5
RECIPIENTS = 5
ACKED_BEFORE_KILL = 1000
LOAD_WAIT_S = 120


class Load:
    """50 writers (one connection each, asyncio connector), each sending to one
    recipient in a dialog of its own with a request_id; readers mark read in the
    first READ_DIALOGS dialogs. Stops when the server dies."""

    def __init__(self, srv):
        self.srv = srv
        self.recipients = [new_user() for _ in range(RECIPIENTS)]
        self.senders = [new_user() for _ in range(WRITERS)]
        self.to = [self.recipients[i % RECIPIENTS] for i in range(WRITERS)]
        self.acked = [[] for _ in range(WRITERS)]   # (text, id)
        self.in_flight = [None] * WRITERS           # (text, request_id)
        self.errors: list = []
        self.killed = asyncio.Event()

    async def connect(self):
        conn = asynctnt.Connection(host=self.srv.host, port=self.srv.port,
                                   username=self.srv.user, password=self.srv.password,
                                   connect_timeout=10, request_timeout=60,
                                   reconnect_timeout=0)
        await conn.connect()
        return conn

    async def writer(self, n: int):
        conn = await self.connect()
        key = (self.srv.host, self.srv.port)
        i = 0
        try:
            while True:
                text, rid = f"writer {n} message {i}", str(uuid.uuid4())
                self.in_flight[n] = (text, rid)
                reply = await conn.call("new_dialog", [None, str(self.senders[n]),
                                                       str(self.to[n]), text,
                                                       {"request_id": rid}])
                self.acked[n].append((text, message_id_of(key, reply)))
                self.in_flight[n] = None
                i += 1
        except asynctnt.exceptions.TarantoolDatabaseError as e:
            self.errors.append(e)
        except Exception:  # the kill: this call's outcome is unknown
            if not self.killed.is_set():
                raise
        finally:
            conn.close()

    async def reader(self, n: int):
        conn = await self.connect()
        try:
            while True:
                w = random.randrange(READ_DIALOGS)
                if self.acked[w]:
                    up_to = random.choice(self.acked[w])[1]
                    await conn.call("mark_read", [str(self.to[w]),
                                                  str(derived_dialog_id(self.senders[w],
                                                                        self.to[w])), up_to])
                else:
                    await asyncio.sleep(0.01)
        except asynctnt.exceptions.TarantoolDatabaseError as e:
            self.errors.append(e)
        except Exception:
            if not self.killed.is_set():
                raise
        finally:
            conn.close()

    async def run(self):
        tasks = [asyncio.ensure_future(self.writer(n)) for n in range(WRITERS)]
        tasks += [asyncio.ensure_future(self.reader(n)) for n in range(READERS)]
        deadline = time.monotonic() + LOAD_WAIT_S
        while sum(map(len, self.acked)) < ACKED_BEFORE_KILL and not self.errors:
            assert time.monotonic() < deadline, "the load did not get under way"
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.05)
        self.killed.set()
        self.srv.kill()  # mid-load, every connection busy
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.mark.filterwarnings("ignore::tarantool.error.NetworkWarning")
def test_kill_9_under_50_writers_loses_no_count(make_server, sock_dir):
    srv = admin_server(make_server, sock_dir, "crash")
    load = Load(srv)
    asyncio.run(load.run())
    assert load.errors == []
    acked = sum(map(len, load.acked))

    srv.start()
    conn = srv.connect()
    # What the server has is what the recount sees, before any client retries.
    recount_clean(admin_socket(srv))
    # The calls in flight at the kill, retried with their request_id: stored once.
    for n, flight in enumerate(load.in_flight):
        if flight is not None:
            text, rid = flight
            msg_id = new_dialog(conn, None, load.senders[n], load.to[n], text,
                                {"request_id": rid})
            load.acked[n].append((text, msg_id))
    counts = recount_clean(admin_socket(srv))
    assert counts["messages"] == sum(map(len, load.acked)) >= acked

    # Every acknowledged message is counted: each dialog ends with its writer's last
    # message, the sender has read it all, and where no reader came the recipient
    # has every message unread.
    expect_unread = {r: [0, 0] for r in load.recipients}
    for n in range(WRITERS):
        dialog = derived_dialog_id(load.senders[n], load.to[n])
        assert stored_ids(conn, dialog) == [i for _, i in load.acked[n]]
        last = uuid.UUID(load.acked[n][-1][1])
        sender = list_dialogs(conn, load.senders[n])
        assert sender["dialogs"][0]["last_id"] == last
        assert (sender["dialogs"][0]["unread"], sender["unread_messages"]) == (0, 0)
        entry = {str(e["dialog_id"]): e for e in all_dialogs(conn, load.to[n])}[str(dialog)]
        assert entry["last_id"] == last
        if n >= READ_DIALOGS:
            assert entry["unread"] == len(load.acked[n])
            assert entry["read_id"] is None
            expect_unread[load.to[n]][0] += len(load.acked[n])
            expect_unread[load.to[n]][1] += 1
    for r in load.recipients:
        if load.to.index(r) >= READ_DIALOGS:  # a recipient no reader touched
            got = list_dialogs(conn, r)
            assert [got["unread_messages"], got["unread_dialogs"]] == expect_unread[r]
    print(f"\n[inbox crash] acknowledged={acked} in_flight="
          f"{sum(f is not None for f in load.in_flight)} stored={counts['messages']}")


# --- failover and rejoin ------------------------------------------------------------------


def on_quorum(write):
    """Runs `write` on a synchronous master until it is acknowledged: a write whose
    quorum timed out was rolled back (nothing stored; test_replication's codes), and
    the writes here may be repeated. Its reply."""
    from test_replication import ER_SYNC_QUORUM_TIMEOUT, ER_SYNC_ROLLBACK, ER_WAL_IO
    result = []

    def attempt() -> bool:
        try:
            result.append(write())
            return True
        except tarantool.error.DatabaseError as e:
            if e.args[0] in (ER_SYNC_QUORUM_TIMEOUT, ER_SYNC_ROLLBACK, ER_WAL_IO):
                return False
            raise
    wait_until(attempt, 60, "a write that reached its quorum")
    return result[0]


def test_after_a_failover_the_new_master_counts_every_acknowledged_message(make_server):
    # The load of test_replication's failover test, short for the reason it gives
    # (ACKED_BEFORE_KILL).
    from test_replication import (ACKED_BEFORE_KILL, LOAD_WAIT_S, Writer,
                                  fail_over_under_load, synchronous_set_under_way)
    m, r1, r2, warm = synchronous_set_under_way(make_server)
    current = {"master": m}
    stop = threading.Event()
    writers = [Writer(i, lambda: current["master"], stop) for i in range(4)]
    # Before the load: each dialog opens with a message its recipient then reads
    # (mark_read is a synchronous write too).
    first = {}
    for w in writers:
        first[w.n] = on_quorum(lambda: new_dialog(warm, None, w.a, w.b, "first"))
        assert on_quorum(lambda: mark_read(warm, w.b, w.dialog, first[w.n])) == 0
    for w in writers:
        w.start()
    wait_until(lambda: all(len(w.acked) >= ACKED_BEFORE_KILL for w in writers)
               or any(w.error for w in writers), LOAD_WAIT_S, "every writer's first writes")
    fail_over_under_load(m, r1, writers, current, stop)

    rc = r1.connect()
    recount_clean(admin_socket(r1))
    for w in writers:
        # Each acknowledged message once (the retries included), the inbox after it.
        assert stored_ids(rc, w.dialog) == [first[w.n]] + [i for _, i in w.acked]
        entry = list_dialogs(rc, w.b)["dialogs"][0]
        assert entry["last_id"] == uuid.UUID(w.acked[-1][1])
        assert entry["read_id"] == uuid.UUID(first[w.n])
        assert entry["unread"] == len(w.acked)
        assert list_dialogs(rc, w.a)["dialogs"][0]["peer_read_id"] == entry["read_id"]
    # The other replica holds the same, and a check runs there too (read-only).
    r2c = r2.connect()
    for w in writers:
        wait_until(lambda: stored_ids(r2c, w.dialog) == [first[w.n]] + [i for _, i in w.acked],
                   REPLICATION_WAIT_S, "the replica to catch up")
        assert list_dialogs(r2c, w.b) == list_dialogs(rc, w.b)
    recount_clean(admin_socket(r2))
    out = run_recount(admin_socket(r2), repair=True)
    assert out[0] == 1 and "run it on the writable instance" in out[2], out[2]


def test_a_rejoined_old_master_and_the_new_one_count_what_a_recount_counts(make_server,
                                                                          tmp_path):
    from test_rejoin import promote, rejoin
    old, new = replica_set(make_server, ["old", "new"])
    old.start()
    new.start()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    oc = old.connect()
    for i in range(4):
        new_dialog(oc, None, a, b, f"replicated {i}", {"request_id": str(uuid.uuid4())})
    nc = new.connect()
    wait_until(lambda: len(stored_ids(nc, dialog)) == 4, REPLICATION_WAIT_S,
               "the first writes on the replica")
    mark_read(oc, b, dialog, stored_ids(oc, dialog)[1])
    wait_until(lambda: list_dialogs(nc, b) == list_dialogs(oc, b), REPLICATION_WAIT_S,
               "the receipt on the replica")
    # The replica stops receiving; the old master acknowledges more, then dies.
    admin_eval(new, "(function() box.cfg{replication = {}} return true end)()")
    diverged = [(f"only on the old master {i}", str(uuid.uuid4())) for i in range(3)]
    for text, rid in diverged:
        new_dialog(oc, None, a, b, text, {"request_id": rid})
    mark_read(oc, b, dialog, stored_ids(oc, dialog)[-1])
    old.kill()
    promote(new)
    new.stop()
    new.env["DIALOGS_READ_ONLY"] = "false"
    new.start()
    nc = new.connect()
    # One diverged write retried by its client on the new master; new writes.
    new_dialog(nc, None, a, b, diverged[0][0], {"request_id": diverged[0][1]})
    new_dialog(nc, None, b, a, "on the new master")
    new_dialog(nc, None, a, b, "and back")

    export = tmp_path / "diverged.jsonl"
    rejoin("export", old.data_dir, "--master-socket", admin_socket(new), "--to", export,
           "--wipe")
    old.env["DIALOGS_READ_ONLY"] = "true"
    old.start()
    rejoin("replay", export, "--master-socket", admin_socket(new))
    oc = old.connect()

    recount_clean(admin_socket(new))
    texts = [t[TEXT] for page in walk_dialog(nc, dialog, 1000) for t in page]
    assert sorted(texts) == sorted([f"replicated {i}" for i in range(4)]
                                   + [t for t, _ in diverged]
                                   + ["on the new master", "and back"])
    # Counted as the recount counts: b read up to "on the new master" by sending it,
    # and everything after it from a is unread.
    entry = list_dialogs(nc, b)["dialogs"][0]
    last = get_dialog(nc, dialog, {"reverse": True, "limit": 1})[0]
    after_reply = texts[texts.index("on the new master") + 1:]
    assert (entry["last_id"], entry["last_text"], entry["unread"]) == \
        (last[ID], last[TEXT], len(after_reply))
    wait_until(lambda: list_dialogs(oc, b) == list_dialogs(nc, b)
               and list_dialogs(oc, a) == list_dialogs(nc, a), REPLICATION_WAIT_S,
               "the rejoined replica to hold the same inboxes")
    recount_clean(admin_socket(old))


# --- existing data: the build ----------------------------------------------------------------

# Takes a current data directory back to schema version 3 (as an older release left
# it: messages, no inbox), as admin; the next start migrates it again.
TO_V3_LUA = ("(function() for _, n in ipairs({'dialogs_inbox', 'dialogs_inbox_totals', "
             "'dialogs_outbox'}) do box.space[n]:drop() end "
             "for _, f in ipairs({'list_dialogs', 'mark_read', 'dialogs_inbox_build'}) do "
             "box.schema.func.drop(f, {if_exists = true}) end "
             "box.space._schema:replace{'dialogs_schema_version', 3} "
             "box.space._schema:delete{'dialogs_inbox_built'} "
             "box.space._schema:delete{'dialogs_inbox_build_after'} return true end)()")
BUILT_LOG_LINE = "dialogs: the inboxes are built"
PAUSED_LOG_LINE = "dialogs: building the inboxes: paused"


# The build's test hooks (dialogs/schema.lua): messages per call, calls before it
# stops for good.
BUILD_HOOKS = ("DIALOGS_TEST_INBOX_BUILD_BATCH", "DIALOGS_TEST_INBOX_BUILD_PAUSE_AFTER")


def start_paused_build(srv, batch: int, calls: int) -> None:
    """Starts `srv` (schema v3 data) with a build of `batch` messages per call that
    stops for good after `calls` calls; returns once it has stopped there."""
    srv.env.update(dict(zip(BUILD_HOOKS, (str(batch), str(calls)))))
    srv.start(wait=False)
    wait_until(lambda: PAUSED_LOG_LINE in srv.log_of_run(), 60, "the build's pause")


def fill_dialogs(conn, users: list, messages: int, read: bool = True) -> dict:
    """`messages` messages between random pairs of `users` (notes to self among
    them), some read (unless not `read`): {(sender, recipient): count}."""
    rnd = random.Random(19)
    sent: dict = {}
    for i in range(messages):
        a, b = rnd.choice(users), rnd.choice(users)
        m = new_dialog(conn, None, a, b, f"old {i}")
        sent[(a, b)] = sent.get((a, b), 0) + 1
        if read and i % 97 == 0:
            mark_read(conn, b, derived_dialog_id(a, b), m)
    return sent


def test_a_schema_v3_data_directory_gets_its_inboxes_built(make_server, sock_dir):
    srv = admin_server(make_server, sock_dir, "v3")
    conn = srv.connect()
    users = [new_user() for _ in range(12)]
    fill_dialogs(conn, users, 600)
    expected = {u: all_dialogs(conn, u) for u in users}
    totals = {u: list_dialogs(conn, u)["unread_messages"] for u in users}
    assert admin_eval(srv, TO_V3_LUA) is True
    srv.stop()

    srv.start()
    log = srv.log_of_run()
    assert "dialogs: schema migrated to version 4" in log
    assert "dialogs: schema migrated to version 5" in log
    assert "dialogs: building the inboxes (inboxes) from 600 stored messages" in log, log
    assert BUILT_LOG_LINE in log
    assert srv.log_errors() == []
    assert admin_eval(srv, "box.space._schema:get{'dialogs_inbox_built'}[2]") is True
    recount_clean(admin_socket(srv))
    conn = srv.connect()
    # Rebuilt from the messages: everything but the read cursors mark_read moved
    # past a user's own messages, which no message records.
    for u in users:
        got = all_dialogs(conn, u)
        assert [(e["dialog_id"], e["last_id"], e["last_text"], e["peer_id"]) for e in got] == \
            [(e["dialog_id"], e["last_id"], e["last_text"], e["peer_id"]) for e in expected[u]]
        assert list_dialogs(conn, u)["unread_messages"] >= totals[u]
    # The upkeep is on: a new message counts.
    a, b = users[0], users[1]
    before = list_dialogs(conn, b)["unread_messages"]
    new_dialog(conn, None, a, b, "after the build")
    assert list_dialogs(conn, b)["unread_messages"] == before + 1
    srv.restart()
    assert "building the inboxes" not in srv.log_of_run()


def test_a_build_killed_midway_resumes_and_the_instance_serves_meanwhile(make_server,
                                                                         sock_dir):
    srv = admin_server(make_server, sock_dir, "resume")
    conn = srv.connect()
    users = [new_user() for _ in range(20)]
    sent = fill_dialogs(conn, users, 1500)
    assert admin_eval(srv, TO_V3_LUA) is True
    srv.stop()

    # 50 messages per transaction; the build stops for good after 10 of them.
    start_paused_build(srv, 50, 10)
    # The instance serves its clients meanwhile; their messages are built too.
    conn = srv.connect()
    a, b = users[0], users[1]
    during = [new_dialog(conn, None, a, b, f"during the build {i}") for i in range(5)]
    assert [str(t[ID]) for t in get_dialog(conn, derived_dialog_id(a, b),
                                            {"reverse": True, "limit": 5})] == during[::-1]
    # The inbox's calls arrive with the end of the build (an older release had none).
    expect_error(lambda: conn.call("list_dialogs", [str(b)]), ER_ACCESS_DENIED,
                 "Execute access to function 'list_dialogs' is denied for user 'dialogs'")
    srv.kill()

    srv.env.update(dict.fromkeys(BUILD_HOOKS))
    srv.start()
    log = srv.log_of_run()
    # It went on from the 500th message, the last of the 10 batches done.
    walked = admin_eval(srv, "box.space.dialogs.index.pk:select({}, {limit = 500})[500][1]"
                             ":str()")
    assert f"resuming after message {walked}" in log, log
    assert BUILT_LOG_LINE in log, log
    recount_clean(admin_socket(srv))
    conn = srv.connect()
    entry = {str(e["dialog_id"]): e for e in all_dialogs(conn, b)}[str(derived_dialog_id(a, b))]
    assert entry["last_id"] == uuid.UUID(during[-1])
    assert entry["last_text"] == "during the build 4"
    assert sum(sent.values()) + len(during) == admin_eval(srv, "box.space.dialogs:len()")


@needs_vshard
def test_a_storage_builds_its_outbox_from_its_older_messages(make_cluster):
    """On a vshard storage the build gives every stored message its outbox row (the
    drainer delivers them to the users' storages); the recount there is refused."""
    cluster = make_cluster({"s1": 1, "s2": 1})
    conn = cluster.connect()
    users = [new_user() for _ in range(10)]
    fill_dialogs(conn, users, 200, read=False)
    s1 = cluster.master("s1")
    stored = cluster.eval(s1, "box.space.dialogs:len()")
    assert stored > 0
    assert cluster.eval(s1, TO_V3_LUA) is True
    s1.stop()
    s1.start()
    log = s1.log_of_run()
    assert f"building the inboxes (outbox rows) from {stored} stored messages" in log, log
    assert BUILT_LOG_LINE in log
    # One row per message, in its dialog's bucket; no inbox entry written here by
    # the build itself.
    assert cluster.eval(s1, "(function() local n = 0 for _, m in box.space.dialogs:pairs() "
                            "do local o = box.space.dialogs_outbox:get{m[1]} "
                            "if o ~= nil and o[2] == m[7] then n = n + 1 end end "
                            "return n end)()") == stored
    assert cluster.eval(s1, "box.space._schema:get{'dialogs_inbox_built'}[2]") is True
    with pytest.raises(RuntimeError) as e:
        cluster.eval(s1, "require('dialogs').recount()")
    assert "this instance is a vshard storage" in str(e.value)


@pytest.mark.skipif(not has_config_module(), reason=no_config_reason())
def test_the_role_builds_the_inboxes_of_older_data_and_serves_meanwhile():
    cluster = Cluster("single.yaml", on_server=report_logs_of)
    try:
        srv = cluster.server("dialogs").start()
        conn = srv.connect()
        users = [new_user() for _ in range(10)]
        fill_dialogs(conn, users, 400)
        assert admin_eval(srv, TO_V3_LUA) is True
        srv.stop()

        start_paused_build(srv, 20, 5)
        # The role is still being applied, and the store serves; the console is
        # there (Tarantool 3's), and the recount waits for the build.
        assert srv.config_status() not in CONFIG_STARTED
        with pytest.raises(RuntimeError) as e:
            admin_eval(srv, "require('dialogs').recount()")
        assert str(e.value).endswith("dialogs: recount: the inboxes are not built yet (the "
                                     "schema migration that builds them has not finished): "
                                     "run it when it has"), e.value
        conn = srv.connect()
        a, b = users[0], users[1]
        during = new_dialog(conn, None, a, b, "during the build")
        assert str(get_dialog(conn, derived_dialog_id(a, b),
                              {"reverse": True, "limit": 1})[0][ID]) == during
        srv.kill()

        srv.env.update(dict.fromkeys(BUILD_HOOKS))
        srv.start()
        log = srv.log_of_run()
        assert "resuming after message" in log and BUILT_LOG_LINE in log, log
        assert "dialogs: schema migrated to version 5" in log
        counts = recount_clean(srv.console)
        assert counts["messages"] == 401
        entry = {str(e["dialog_id"]): e for e in all_dialogs(srv.connect(), b)}[
            str(derived_dialog_id(a, b))]
        assert entry["last_id"] == uuid.UUID(during)
    finally:
        cluster.remove()
        forget_logs_of(cluster.servers.values())
