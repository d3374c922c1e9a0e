"""A retry never acknowledges a write that is not committed (docs/guarantees.md).

Where it bites: a synchronous replica set (quorum 2 of 2) whose replica is paused
with SIGSTOP, so a first try of `new_dialog` waits for its quorum. On Tarantool 2.x
(no MVCC) its `dialogs_requests` row is visible meanwhile; a retry with the same
`opts.request_id` on a second connection must wait for the first try's outcome
instead of answering from that row. Then either the quorum timeout rolls the first
try back (the retry stores the message itself), or the replica comes back and both
tries get the same id.

No step stands on the clock: a try is known to wait in the synchronous queue once
the master's WAL holds its rows (box.info.lsn), and each round sets the quorum
timeout through the admin console: long while its tries are put in place, short
when the round wants them to fail.

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
from harness import admin_eval, module_built, replica_set, wait_until
from synchro import wait_master

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

# Seconds a synchronous write waits for its quorum while a round sets its tries
# up: longer than any round takes, so that no try times out before the round
# decides it should (the round then shortens it: see quorum_timeout).
WAIT_S = 120
# The quorum timeout that ends round 1's first try (and so, by the queue's order,
# the retry's confirmation queued behind it); the retry's own write, begun then,
# gets as long for the replica to come back, which it does as soon as the first
# try has failed.
ROLL_BACK_AFTER_S = 2
# Round 3's: nobody gets the quorum, the sooner both fail the better.
GIVE_UP_AFTER_S = 0.1
ER_SYNC_QUORUM_TIMEOUT = 216
ER_SYNC_ROLLBACK = 217
REPLICATION_WAIT_S = 30.0
# How long a try may take to reach the master's WAL (a bounded wait for an event).
QUEUED_WAIT_S = 30.0
# What a first try writes (its request row and its message, one transaction) and
# what a retry that finds the row writes while waiting for it (the row rewritten).
FIRST_TRY_ROWS = 2
RETRY_ROWS = 1


def quorum_timeout(master, seconds: float) -> None:
    """Sets how long the master's synchronous writes wait for their quorum; a write
    already waiting longer than that fails at once."""
    admin_eval(master, f"box.cfg{{replication_synchro_timeout = {seconds}}}")


def master_lsn(master) -> int:
    return admin_eval(master, "box.info.lsn")


def wait_queued(master, lsn: int, what: str) -> None:
    """Until the master's WAL holds `lsn`: a synchronous transaction written there
    waits for its quorum, so its call is in the queue."""
    wait_until(lambda: master_lsn(master) >= lsn, QUEUED_WAIT_S, what)


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
                                  env={"DIALOGS_SYNC_TIMEOUT": str(WAIT_S)})
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

    def first_then_retry(args):
        """The first try, waiting for its quorum, then the retry, waiting behind it:
        each seen in the master's WAL before the next step (the replica paused)."""
        lsn = master_lsn(master)
        first, retry = Call(master, args), Call(master, args)
        first.start()
        wait_queued(master, lsn + FIRST_TRY_ROWS, "the first try in the synchronous queue")
        retry.start()
        wait_queued(master, lsn + FIRST_TRY_ROWS + RETRY_ROWS,
                    "the retry's confirmation queued behind the first try")
        return first, retry

    # Round 1: the quorum timeout rolls the first try back while the retry waits.
    req = str(uuid.uuid4())
    args = (None, str(a), str(b), "rolled back first", {"request_id": req})
    quorum_timeout(master, WAIT_S)
    with Paused(replica) as paused:
        first, retry = first_then_retry(args)
        quorum_timeout(master, ROLL_BACK_AFTER_S)
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
    quorum_timeout(master, WAIT_S)
    with Paused(replica) as paused:
        first, retry = first_then_retry(args2)
        assert first.is_alive() and retry.is_alive(), "answered without the quorum"
        paused.resume()
        first_id, retry_id = first.outcome(), retry.outcome()
    assert first_id is not None and retry_id == first_id
    got(args2[3], first_id)

    # Round 3: the replica stays away past both timeouts: nobody gets an id.
    req3 = str(uuid.uuid4())
    args3 = (None, str(a), str(b), "never stored", {"request_id": req3})
    quorum_timeout(master, WAIT_S)
    with Paused(replica):
        first, retry = first_then_retry(args3)
        quorum_timeout(master, GIVE_UP_AFTER_S)
        assert first.outcome() is None and retry.outcome() is None
    quorum_timeout(master, WAIT_S)

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
