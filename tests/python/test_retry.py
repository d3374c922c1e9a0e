"""Retries without duplicates (issue 4, point 4), where the client cannot know the
outcome: the reply lost with a dropped connection, the server killed and restarted,
the retry racing the first try. test_errors.py covers the plain retry and conflicts;
test_restart.py a retry after a clean restart."""

from __future__ import annotations

import os
import signal
import time
import uuid

import msgpack
import pytest

from admin import reconnect_admin, remove_socket_dir, start_admin_server
from dialogs_api import ID, TEXT, get_dialog, message_id_of, new_dialog, walk_dialog
from harness import wait_until
from iproto_raw import RawConnection

BURST = 300
# The server's count of open client connections.
OPEN_CONNECTIONS = "box.stat.net().CONNECTIONS.current"


def args(dialog, a, b, text, rid) -> bytes:
    return msgpack.packb([str(dialog), str(a), str(b), text, {"request_id": str(rid)}])


def stored_request(admin, rid) -> str:
    """The message id the server recorded for a request id, or None."""
    return admin.eval(f"(function() local t = box.space.dialogs_requests:get("
                      f"require('uuid').fromstr('{rid}')) return t and tostring(t[2]) end)()")


@pytest.fixture
def admin_server(make_server):
    srv, admin = start_admin_server(make_server, "retry")
    yield srv, admin
    remove_socket_dir(srv)


def test_retry_after_the_connection_dropped_with_the_reply(admin_server):
    """The request reached the server and was stored; the client hung up before the
    reply. Retried on a new connection it returns the stored id and stores nothing."""
    srv, admin = admin_server
    dialog, a, b, rid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    raw = RawConnection(srv.host, srv.port, srv.user, srv.password)
    raw.send_call("new_dialog", args(dialog, a, b, "lost reply", rid))
    deadline = time.monotonic() + 10
    while stored_request(admin, rid) is None:  # committed: only the reply is missing
        assert time.monotonic() < deadline
        time.sleep(0.01)
    raw.abort()
    first = stored_request(admin, rid)

    conn = srv.connect()
    assert new_dialog(conn, dialog, a, b, "lost reply", {"request_id": rid}) == first
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == [first]


def test_retry_of_a_burst_cut_off_by_a_hang_up(admin_server):
    """Many calls sent, the connection reset before any reply was read: some were
    stored, some never arrived. Retrying all of them stores each exactly once."""
    srv, admin = admin_server
    dialog, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rids = [uuid.uuid4() for _ in range(BURST)]
    raw = RawConnection(srv.host, srv.port, srv.user, srv.password)
    # Counted once the server holds this connection (it answered the login); other
    # tests' connections may still be closing, so the count is taken now, not before.
    connections = admin.eval(OPEN_CONNECTIONS) - 1
    for i, rid in enumerate(rids):
        raw.send_call("new_dialog", args(dialog, a, b, f"burst {i}", rid))
    raw.abort()
    # The server lets a reset connection go once it has answered every call it
    # read from it: then what it stored before the retries is all it will store.
    wait_until(lambda: admin.eval(OPEN_CONNECTIONS) <= connections, 30,
               "the server to let the reset connection go")
    before_retry = admin.eval("box.space.dialogs:len()")

    conn = srv.connect()
    ids = [new_dialog(conn, dialog, a, b, f"burst {i}", {"request_id": rid})
           for i, rid in enumerate(rids)]
    assert len(set(ids)) == BURST
    rows = [r for page in walk_dialog(conn, dialog, 1000) for r in page]
    assert [r[TEXT] for r in rows] == [f"burst {i}" for i in range(BURST)]
    assert [str(r[ID]) for r in rows] == ids
    assert admin.eval("box.space.dialogs:len()") == BURST
    assert admin.eval("box.space.dialogs_requests:len()") == BURST
    # A second round of retries changes nothing.
    assert [new_dialog(conn, dialog, a, b, f"burst {i}", {"request_id": rid})
            for i, rid in enumerate(rids)] == ids
    assert admin.eval("box.space.dialogs:len()") == BURST
    print(f"\n[retry burst] stored before the retries: {before_retry} of {BURST}")


def test_retry_after_kill_9_and_restart(admin_server):
    """Acknowledged, then the server crashed (SIGKILL): the retry after the restart
    returns the same id."""
    srv, admin = admin_server
    conn = srv.connect()
    dialog, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rids = [uuid.uuid4() for _ in range(20)]
    ids = [new_dialog(conn, dialog, a, b, f"m{i}", {"request_id": rid})
           for i, rid in enumerate(rids)]
    os.kill(srv.pid, signal.SIGKILL)
    srv.process.wait()
    srv.start()
    conn = srv.connect()
    assert [new_dialog(conn, dialog, a, b, f"m{i}", {"request_id": rid})
            for i, rid in enumerate(rids)] == ids
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == ids
    admin = reconnect_admin(srv)
    assert admin.eval("box.space.dialogs:len()") == 20


def test_a_retry_racing_the_first_try(admin_server):
    """A client timed out and retried on another connection while its first try was
    still being written: both tries of one request get one id, one message."""
    srv, admin = admin_server
    dialog, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rids = [uuid.uuid4() for _ in range(200)]
    first = RawConnection(srv.host, srv.port, srv.user, srv.password)
    second = RawConnection(srv.host, srv.port, srv.user, srv.password)
    syncs = []
    for i, rid in enumerate(rids):
        body = args(dialog, a, b, f"raced {i}", rid)
        syncs.append((first.send_call("new_dialog", body), second.send_call("new_dialog", body)))
    for s1, s2 in syncs:
        c1, d1 = first.reply(s1)
        c2, d2 = second.reply(s2)
        assert (c1, c2) == (0, 0), (d1, d2)
        key = (srv.host, srv.port)
        assert message_id_of(key, d1) == message_id_of(key, d2)
    assert admin.eval("box.space.dialogs:len()") == len(rids)
