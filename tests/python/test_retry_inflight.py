"""A retry never acknowledges a write that is not committed (docs/guarantees.md).

Where it bites: a synchronous replica set (quorum 2 of 2) whose replica is paused
with SIGSTOP, so a first try of `new_dialog` waits for its quorum. On Tarantool 2.x
(no MVCC) its `dialogs_requests` row is visible meanwhile; a retry with the same
`opts.request_id` on a second connection must wait for the first try's outcome
instead of answering from that row. Then either the quorum timeout rolls the first
try back (the retry stores the message itself), or the replica comes back and both
tries get the same id.

At the end (the replica resumed), every id any client received exists, exactly once,
and every request stored its message exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
import tarantool

from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import module_built, replica_set, wait_until
from synchro import wait_master

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

# Seconds a synchronous write waits for its quorum: short, so the test is quick, and
# long enough for a retry to arrive while the first try waits.
SYNC_TIMEOUT_S = 4
# How long after the first try the retry is sent.
RETRY_AFTER_S = 0.5
ER_SYNC_QUORUM_TIMEOUT = 216
ER_SYNC_ROLLBACK = 217
REPLICATION_WAIT_S = 30.0


class Call(threading.Thread):
    """One new_dialog call on its own connection, in the background: its outcome
    (an id, or a Tarantool error code) and when it ended."""

    def __init__(self, srv, args):
        super().__init__(daemon=True)
        self.conn = srv.connect()
        self.args = args
        self.id = None
        self.error = None
        self.ended = None

    def run(self):
        try:
            self.id = new_dialog(self.conn, *self.args)
        except tarantool.error.DatabaseError as e:
            self.error = e.args[0]
        self.ended = time.monotonic()

    def outcome(self, timeout: float = 60.0):
        self.join(timeout)
        assert not self.is_alive(), "the call never returned"
        assert self.id is not None or self.error in (ER_SYNC_QUORUM_TIMEOUT,
                                                     ER_SYNC_ROLLBACK), \
            f"unexpected error {self.error}"
        return self.id


@pytest.fixture
def pair(make_server):
    master, replica = replica_set(make_server, ["m", "r"], sync_quorum=2,
                                  env={"DIALOGS_SYNC_TIMEOUT": str(SYNC_TIMEOUT_S)})
    master.start()
    replica.start()
    wait_master(master)
    yield master, replica
    if replica.is_running():
        os.kill(replica.pid, signal.SIGCONT)


class Paused:
    """The replica stopped with SIGSTOP (it keeps its connections, but acknowledges
    nothing) until resumed."""

    def __init__(self, replica):
        self.pid = replica.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def resume(self):
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
            self.pid = None

    def __exit__(self, *exc):
        self.resume()


def test_a_retry_waits_for_the_first_try_and_never_returns_a_rolled_back_id(pair):
    master, replica = pair
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    conn = master.connect()
    received = {}  # text -> every id a client got for it

    def got(text, msg_id):
        if msg_id is not None:
            received.setdefault(text, []).append(msg_id)

    # Round 1: the quorum timeout rolls the first try back while the retry waits.
    req = str(uuid.uuid4())
    args = (None, str(a), str(b), "rolled back first", {"request_id": req})
    with Paused(replica) as paused:
        first = Call(master, args)
        first.start()
        time.sleep(RETRY_AFTER_S)
        retry = Call(master, args)
        retry.start()
        first_id = first.outcome()
        # Resumed as soon as the first try has failed: the retry's own write, which
        # it began only then, gets its quorum.
        paused.resume()
        retry_id = retry.outcome()
    assert first_id is None and first.error in (ER_SYNC_QUORUM_TIMEOUT, ER_SYNC_ROLLBACK)
    assert retry.ended >= first.ended, "the retry answered before the first try ended"
    got(args[3], retry_id)

    # Round 2: the replica comes back while both tries wait: one id for both.
    req2 = str(uuid.uuid4())
    args2 = (None, str(a), str(b), "committed late", {"request_id": req2})
    with Paused(replica) as paused:
        first = Call(master, args2)
        first.start()
        time.sleep(RETRY_AFTER_S)
        retry = Call(master, args2)
        retry.start()
        time.sleep(RETRY_AFTER_S)
        assert first.is_alive() and retry.is_alive(), "answered without the quorum"
        paused.resume()
        first_id, retry_id = first.outcome(), retry.outcome()
    assert first_id is not None and retry_id == first_id
    got(args2[3], first_id)

    # Round 3: the replica stays away past both timeouts: nobody gets an id.
    req3 = str(uuid.uuid4())
    args3 = (None, str(a), str(b), "never stored", {"request_id": req3})
    with Paused(replica):
        first = Call(master, args3)
        first.start()
        time.sleep(RETRY_AFTER_S)
        retry = Call(master, args3)
        retry.start()
        assert first.outcome() is None and retry.outcome() is None

    # Every request retried once more with the replica back: each returns the id a
    # client already has, or stores the message now.
    wait_master(master)
    for r, text in ((req, args[3]), (req2, args2[3]), (req3, args3[3])):
        final = new_dialog(conn, None, str(a), str(b), text, {"request_id": r})
        if text in received:
            assert final == received[text][0], f"{text}: a second id"
        got(text, final)

    # Every id any client received exists, exactly once, on both instances; each
    # request stored its message exactly once.
    stored = [(str(t[0]), t[4]) for t in get_dialog(conn, dialog)]
    for text, ids in received.items():
        assert len(set(ids)) == 1, f"{text}: clients got different ids {ids}"
    assert sorted(stored) == sorted((ids[0], text) for text, ids in received.items())
    wait_until(lambda: [(str(t[0]), t[4]) for t in get_dialog(replica.connect(), dialog)]
               == stored, REPLICATION_WAIT_S, "the dialog on the replica")
