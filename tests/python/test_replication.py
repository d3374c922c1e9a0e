"""Replica sets (docs/operations.md, "Replication"): replicas serve reads and refuse writes,
synchronous writes are on the quorum when acknowledged, ids stay ordered across a
promotion, and a failover under write load loses no acknowledged message.

Every instance is a real `tarantool init.lua` on 127.0.0.1 with its own port and
directory, configured only through DIALOGS_* variables; promotion goes through
scripts/promote and the admin socket, as an operator does it.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import pytest
import tarantool

from dialogs_api import (MAX_PAGE, READ_ONLY, derived_dialog_id, get_dialog, new_dialog,
                         new_user, walk_dialog)
from harness import (REPO_ROOT, admin_eval, admin_socket, module_built, replica_set,
                     wait_until)
from synchro import OWNS_QUEUE_LOG_LINE, queue_needs_owner, queue_owner, wait_master

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

PROMOTE = REPO_ROOT / "scripts" / "promote"
READ_ONLY_MESSAGE = "new_dialog: this instance is read-only; send writes to the master"
# Tarantool's own codes, passed through by the procedures.
ER_SYNC_QUORUM_TIMEOUT = 216
# A synchronous write rolled back (behind one whose quorum timed out, or settled
# by the new master): nothing stored, so the retry with the same request_id is
# safe. Tarantool 2.6.0 reports it as a failed WAL write (40), later servers as 217.
ER_SYNC_ROLLBACK = 217
ER_WAL_IO = 40
ER_ACCESS_DENIED = 42
REPLICATION_WAIT_S = 10.0
# What a replica's applier logs when it finds no master and keeps trying.
RETRYING_LOG_LINE = "will retry every"
# Messages every writer has acknowledged before the master is killed, and after
# the promotion, whatever the machine's pace; how long the writers may take.
# Acknowledged writes each writer has before the kill: the load is in flight, and
# short. Under seconds of sustained synchronous load Debian's Tarantool 2.6.0 stalls
# a write past its quorum timeout now and then; the rollback and the retry of the
# same request_id then stop its replicas (a duplicate key in dialogs_requests).
ACKED_BEFORE_KILL = 1
ACKED_AFTER_PROMOTE = 3
LOAD_WAIT_S = 60.0


def promote(srv, *args) -> subprocess.CompletedProcess:
    out = subprocess.run([str(PROMOTE), *args, str(admin_socket(srv))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"promote failed:\n{out.stdout}\n{out.stderr}"
    return out


def whole_dialog(conn, dialog_id) -> list:
    """Every message of a dialog, oldest first, read page by page."""
    return [t for page in walk_dialog(conn, dialog_id, MAX_PAGE) for t in page]


def dialog_ids(conn, dialog_id) -> list:
    return [str(t[0]) for t in whole_dialog(conn, dialog_id)]


def wait_replicated(replica_conn, dialog_id, expected_ids):
    wait_until(lambda: dialog_ids(replica_conn, dialog_id) == expected_ids,
               REPLICATION_WAIT_S, f"dialog {dialog_id} on the replica")


def v7_id(unix_ms: int) -> uuid.UUID:
    """A UUIDv7 with the given millisecond timestamp and a zero counter."""
    return uuid.UUID(int=(unix_ms << 80) | (0x7 << 76) | (0b10 << 62))


def store_as_admin(srv, msg_id, dialog_id, user_from, user_to, text):
    """Inserts a message tuple directly into the space (an operator's write)."""
    created_at = ("(box.space.dialogs:format()[6].type == 'datetime' "
                  "and require('datetime').now() or tonumber(require('clock').time64() / 1000))")
    args = ", ".join(f"uuid.fromstr('{u}')" for u in (msg_id, dialog_id, user_from, user_to))
    # The seventh field: the dialog's bucket (docs/operations.md, "Data layout").
    bucket = (f"require('dialogs.bucket').of('{dialog_id}', "
              "require('dialogs.bucket').stored_count())")
    admin_eval(srv, f"(function() local uuid = require('uuid') "
                    f"box.space.dialogs:insert{{{args}, '{text}', {created_at}, {bucket}}} "
                    f"return true end)()")


# --- replicas serve reads, refuse writes -------------------------------------------


def test_replica_serves_what_the_master_stored(make_server):
    master, replica = replica_set(make_server, ["m", "r"])
    master.start()
    replica.start()
    mc, rc = master.connect(), replica.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    ids = [new_dialog(mc, None, str(a), str(b), f"msg {i}") for i in range(20)]
    wait_replicated(rc, dialog, ids)
    assert get_dialog(rc, dialog) == get_dialog(mc, dialog)
    # Paging on the replica works like on the master.
    assert [str(t[0]) for t in get_dialog(rc, dialog, {"after": ids[9], "limit": 5})] \
        == ids[10:15]
    assert admin_eval(replica, "box.info.ro") is True
    assert admin_eval(master, "box.info.ro") is False


def test_replica_refuses_new_dialog_and_writes_nothing(make_server):
    master, replica = replica_set(make_server, ["m", "r"])
    master.start()
    replica.start()
    rc = replica.connect()
    a, b = new_user(), new_user()
    for opts in (None, {"request_id": str(uuid.uuid4())}):
        with pytest.raises(tarantool.error.DatabaseError) as e:
            new_dialog(rc, None, str(a), str(b), "to the replica", opts)
        assert e.value.args == (READ_ONLY, READ_ONLY_MESSAGE)
    assert get_dialog(rc, derived_dialog_id(a, b)) == []
    # Nothing entered the replica's WAL under its own id, and it still serves.
    assert admin_eval(replica, "box.info.vclock[box.info.id] or 0") == 0
    assert admin_eval(replica, "box.space.dialogs:len()") == 0
    assert get_dialog(rc, derived_dialog_id(a, b)) == []


def test_replica_starts_before_its_master_and_catches_up(make_server):
    master, replica = replica_set(
        make_server, ["m", "r"], env={"DIALOGS_REPLICATION_CONNECT_TIMEOUT": "15"})
    # A fresh replica waits for a master to join: it finds none, says it will try
    # again, and keeps running...
    replica.start(wait=False)
    wait_until(lambda: RETRYING_LOG_LINE in replica.log_text() or not replica.is_running(),
               30, "the replica to find no master")
    assert replica.is_running()
    master.start()
    replica.wait_ready()
    # ...and a restarted one serves its copy while the master is down.
    mc = master.connect()
    a, b = new_user(), new_user()
    ids = [new_dialog(mc, None, str(a), str(b), f"m{i}") for i in range(3)]
    wait_replicated(replica.connect(), derived_dialog_id(a, b), ids)
    master.stop()
    replica.restart()
    assert dialog_ids(replica.connect(), derived_dialog_id(a, b)) == ids
    master.start()
    ids.append(new_dialog(master.connect(), None, str(a), str(b), "after"))
    wait_replicated(replica.connect(), derived_dialog_id(a, b), ids)


def test_replication_user_has_the_replication_role_only(make_server):
    master, replica = replica_set(make_server, ["m", "r"])
    master.start()
    replica.start()
    grants = admin_eval(master, "box.schema.user.info('replicator')")
    # What every user gets (log in, the public role, change its own password), and
    # the replication role: no space, function or universe right beyond it.
    assert sorted(grants) == sorted([
        ["execute", "role", "public"], ["execute", "role", "replication"],
        ["session,usage", "universe", ""], ["alter", "user", "replicator"]])
    conn = master.connect(user="replicator", password="repl-secret-pw")
    with pytest.raises(tarantool.error.DatabaseError) as e:
        conn.call("new_dialog", [None, str(new_user()), str(new_user()), "x"])
    assert e.value.args[0] == ER_ACCESS_DENIED
    assert oct(admin_socket(master).stat().st_mode & 0o777) == "0o600"


# --- synchronous writes ---------------------------------------------------------------


def test_quorum_write_is_on_the_replica_when_acknowledged(make_server):
    master, replica = replica_set(make_server, ["m", "r"], sync_quorum=2,
                                  env={"DIALOGS_SYNC_TIMEOUT": "2"})
    master.start()
    replica.start()
    wait_master(master)
    assert admin_eval(replica, "{box.space.dialogs.is_sync, "
                               "box.space.dialogs_requests.is_sync}") == [True, True]
    mc, rc = master.connect(), replica.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    ids = []
    for i in range(50):
        ids.append(new_dialog(mc, None, str(a), str(b), f"sync {i}"))
        # No waiting: the reply means the replica has it.
        assert dialog_ids(rc, dialog) == ids
    # Without the replica no quorum: the write waits DIALOGS_SYNC_TIMEOUT (2 s), is
    # refused with 216 and rolled back: stored nowhere, then or later.
    replica.stop()
    started = time.monotonic()
    with pytest.raises(tarantool.error.DatabaseError) as e:
        new_dialog(mc, None, str(a), str(b), "no quorum")
    waited = time.monotonic() - started
    assert e.value.args[0] == ER_SYNC_QUORUM_TIMEOUT
    assert 1.5 < waited < 15, waited
    assert dialog_ids(mc, dialog) == ids
    replica.start()
    ids.append(new_dialog(mc, None, str(a), str(b), "quorum again"))
    assert dialog_ids(replica.connect(), dialog) == ids
    assert "no quorum" not in [t[4] for t in whole_dialog(replica.connect(), dialog)]


def test_unsetting_the_quorum_makes_the_spaces_asynchronous_again(make_server):
    master, replica = replica_set(make_server, ["m", "r"], sync_quorum=2)
    master.start()
    replica.start()
    wait_master(master)
    sync = "{box.space.dialogs.is_sync or false, box.space.dialogs_requests.is_sync or false}"
    assert admin_eval(master, sync) == [True, True]
    master.stop()
    master.env["DIALOGS_SYNC_QUORUM"] = None
    master.start()
    assert admin_eval(master, sync) == [False, False]
    wait_until(lambda: admin_eval(replica, sync) == [False, False], REPLICATION_WAIT_S,
               "is_sync off on the replica")
    if queue_needs_owner(master):
        # Asynchronous needs no owner: the master gave the queue up, so that its
        # next restart does not wait for a quorum of votes.
        assert queue_owner(master) == 0
        assert "gave up the synchronous queue" in master.log_of_run()
    # Asynchronous now: the master takes writes with the replica down.
    replica.stop()
    new_dialog(master.connect(), None, str(new_user()), str(new_user()), "async")


# --- ids across promotion -------------------------------------------------------------


def test_ids_sort_after_a_future_id_on_the_master_and_after_promotion(make_server):
    master, replica = replica_set(make_server, ["m", "r"])
    master.start()
    replica.start()
    mc = master.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    first = new_dialog(mc, None, str(a), str(b), "now")
    future = v7_id(int(time.time() * 1000) + 3_600_000)
    store_as_admin(master, future, dialog, a, b, "an hour ahead")
    after = new_dialog(mc, None, str(a), str(b), "after the future one")
    assert uuid.UUID(first) < future < uuid.UUID(after)
    wait_replicated(replica.connect(), dialog, [first, str(future), after])
    # The replica never issued an id; promoted, it still appends after them all.
    future2 = v7_id(int(time.time() * 1000) + 2 * 3_600_000)
    store_as_admin(master, future2, dialog, a, b, "two hours ahead")
    wait_replicated(replica.connect(), dialog, [first, str(future), after, str(future2)])
    master.kill()
    promote(replica)
    rc = replica.connect()
    newest = new_dialog(rc, None, str(a), str(b), "on the new master")
    assert uuid.UUID(newest) > future2
    assert dialog_ids(rc, dialog) == [first, str(future), after, str(future2), newest]


def test_switchover_with_demote_then_promote(make_server):
    master, replica = replica_set(make_server, ["m", "r"], sync_quorum=2)
    master.start()
    replica.start()
    wait_master(master)
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    ids = [new_dialog(master.connect(), None, str(a), str(b), "before")]
    out = promote(master, "--demote")
    assert "read-only" in out.stdout
    with pytest.raises(tarantool.error.DatabaseError) as e:
        new_dialog(master.connect(), None, str(a), str(b), "refused")
    assert e.value.args[0] == READ_ONLY
    out = promote(replica)
    assert "writable" in out.stdout
    ids.append(new_dialog(replica.connect(), None, str(a), str(b), "after"))
    assert ids[1] > ids[0]
    # The old master is a synchronous replica now: the write is on it already.
    assert dialog_ids(master.connect(), dialog) == ids


def test_the_writable_instance_owns_the_synchronous_queue_and_replicas_never_try(
        make_server):
    master, r1, r2 = replica_set(make_server, ["m", "r1", "r2"], sync_quorum=2)
    # The master starts alone: no quorum, so it cannot take the queue yet; it says
    # so and takes it once a replica has joined.
    master.start()
    if not queue_needs_owner(master):
        pytest.skip("this server's synchronous writes need no queue owner "
                    "(no box.ctl.promote / box.info.synchro.queue)")
    assert queue_owner(master) == 0
    assert "the synchronous queue has no owner and 1 of the 2 instances" in \
        master.log_of_run()
    r1.start()
    r2.start()
    wait_master(master)
    assert OWNS_QUEUE_LOG_LINE in master.log_of_run()
    master_id = admin_eval(master, "box.info.id")
    for r in (r1, r2):
        wait_until(lambda: queue_owner(r) == master_id, REPLICATION_WAIT_S,
                   f"{r.name} to see the owner")
        assert admin_eval(r, "box.info.ro") is True
        assert OWNS_QUEUE_LOG_LINE not in r.log_of_run()
        assert "synchronous queue" not in r.log_of_run()
    a, b = new_user(), new_user()
    msg = new_dialog(master.connect(), None, str(a), str(b), "first write")
    wait_replicated(r1.connect(), derived_dialog_id(a, b), [msg])
    # The ownership is in the data: a restarted master has it before it is ready.
    master.restart()
    assert queue_owner(master) == master_id
    assert admin_eval(master, "box.info.ro") is False
    ids = [msg, new_dialog(master.connect(), None, str(a), str(b), "after restart")]
    wait_replicated(r2.connect(), derived_dialog_id(a, b), ids)
    # A replica restarted as one never takes it.
    r1.restart()
    assert queue_owner(r1) == master_id
    assert "synchronous queue" not in r1.log_of_run()


# --- failover under write load -----------------------------------------------------------


class Writer(threading.Thread):
    """Writes numbered messages into its own dialog, one at a time, each with a
    request_id; a call whose outcome is unknown (the master died) is retried with the
    same request_id on whatever `target()` is, until acknowledged."""

    def __init__(self, n: int, target, stop: threading.Event):
        super().__init__(daemon=True)
        self.a, self.b = new_user(), new_user()
        self.dialog = derived_dialog_id(self.a, self.b)
        self.n, self.target, self.stop_event = n, target, stop
        self.acked = []  # (seq, id) in acknowledgement order
        self.retries = 0
        self.error = None

    def run(self):
        seq = 0
        conn, conn_srv = None, None
        while not self.stop_event.is_set():
            request_id = str(uuid.uuid4())
            text = f"writer {self.n} seq {seq}"
            while True:
                srv = self.target()
                try:
                    if conn is None or conn_srv is not srv:
                        conn, conn_srv = srv.connect(connection_timeout=1, socket_timeout=5), srv
                    msg_id = new_dialog(conn, None, str(self.a), str(self.b), text,
                                        {"request_id": request_id})
                    self.acked.append((seq, msg_id))
                    break
                # AttributeError: the harness closed this connection while a call
                # was in flight (kill() closes every connection to the killed
                # server), and the connector then reads from a socket it dropped.
                except (tarantool.error.NetworkError, tarantool.error.DatabaseError,
                        OSError, AttributeError) as e:
                    code = getattr(e, "args", [None])[0]
                    if isinstance(e, tarantool.error.DatabaseError) and not isinstance(
                            e, tarantool.error.NetworkError) and code not in (
                            READ_ONLY, ER_SYNC_QUORUM_TIMEOUT, 214, ER_SYNC_ROLLBACK,
                            ER_WAL_IO):
                        self.error = e
                        return
                    conn = None
                    self.retries += 1
                    time.sleep(0.02)
            seq += 1


# How many replicas the instance sends its rows to and hears back from.
FOLLOWING_DOWNSTREAMS = ("(function() local n = 0 for _, r in pairs(box.info.replication) "
                         "do if r.downstream ~= nil and r.downstream.status == 'follow' "
                         "then n = n + 1 end end return n end)()")


def _acknowledged(conn) -> bool:
    """One write (no request_id) acknowledged by the quorum; False if it timed out."""
    try:
        new_dialog(conn, None, str(new_user()), str(new_user()), "quorum check")
        return True
    except tarantool.error.DatabaseError as e:
        if e.args[0] in (ER_SYNC_QUORUM_TIMEOUT, ER_SYNC_ROLLBACK, ER_WAL_IO):
            return False
        raise


def synchronous_set_under_way(make_server) -> tuple:
    """A master and two replicas, quorum 2, ready for a load: (m, r1, r2, a connection
    to m). The load starts once both replicas follow the master and a write reaches
    its quorum (see ACKED_BEFORE_KILL for what a timed-out quorum leads to on 2.6.0)."""
    m, r1, r2 = replica_set(make_server, ["m", "r1", "r2"], sync_quorum=2,
                            env={"DIALOGS_SYNC_TIMEOUT": "5"})
    for s in (m, r1, r2):
        s.start()
    wait_master(m)
    wait_until(lambda: admin_eval(m, FOLLOWING_DOWNSTREAMS) == 2, LOAD_WAIT_S,
               "both replicas following the master")
    warm = m.connect()
    wait_until(lambda: _acknowledged(warm), LOAD_WAIT_S, "a write that reached its quorum")
    return m, r1, r2, warm


def fail_over_under_load(m, r1, writers, current, stop: threading.Event) -> float:
    """kill -9 of the master `m` while `writers` write to current["master"]; `r1`
    promoted and made the writers' target until each has ACKED_AFTER_PROMOTE more
    writes there; then the load stopped, every writer checked. The monotonic time
    of the kill."""
    at_kill = [len(w.acked) for w in writers]
    m.kill()
    killed_at = time.monotonic()
    promote(r1)
    current["master"] = r1
    wait_until(lambda: all(len(w.acked) >= n + ACKED_AFTER_PROMOTE
                           for w, n in zip(writers, at_kill))
               or any(w.error for w in writers), LOAD_WAIT_S, "writes on the new master")
    stop.set()
    for w in writers:
        w.join(15)
        assert not w.is_alive()
        assert w.error is None, w.error
    return killed_at


def test_failover_under_write_load_loses_no_acknowledged_message(make_server):
    m, r1, r2, _ = synchronous_set_under_way(make_server)
    current = {"master": m}
    stop = threading.Event()
    writers = [Writer(i, lambda: current["master"], stop) for i in range(4)]
    for w in writers:
        w.start()
    wait_until(lambda: all(len(w.acked) >= ACKED_BEFORE_KILL for w in writers)
               or any(w.error for w in writers), LOAD_WAIT_S, "every writer's first writes")
    before = sum(len(w.acked) for w in writers)
    killed_at = fail_over_under_load(m, r1, writers, current, stop)
    assert sum(len(w.acked) for w in writers) > before > 0

    rc = r1.connect()
    for w in writers:
        stored = whole_dialog(rc, w.dialog)
        ids = [str(t[0]) for t in stored]
        texts = [t[4] for t in stored]
        # Every acknowledged message once, and nothing else.
        assert [i for _, i in w.acked] == ids
        assert texts == [f"writer {w.n} seq {s}" for s, _ in w.acked]
        assert len(set(ids)) == len(ids)
        # Ids increase in acknowledgement order, across the failover.
        assert all(x < y for x, y in zip(map(uuid.UUID, ids), map(uuid.UUID, ids[1:])))

    # The other replica follows the new master.
    r2c = r2.connect()
    for w in writers:
        wait_replicated(r2c, w.dialog, [i for _, i in w.acked])

    # The old master rejoins as a read-only replica of the new one.
    m.env["DIALOGS_READ_ONLY"] = "true"
    m.env["DIALOGS_REPLICATION"] = ",".join(
        f"127.0.0.1:{s.port}" for s in (r1, r2, m))
    m.start()
    mc = m.connect()
    for w in writers:
        wait_replicated(mc, w.dialog, [i for _, i in w.acked])
    assert admin_eval(m, "box.info.ro") is True
    with pytest.raises(tarantool.error.DatabaseError) as e:
        new_dialog(mc, None, str(new_user()), str(new_user()), "to the old master")
    assert e.value.args[0] == READ_ONLY
    # And the new master's writes reach it.
    w = writers[0]
    last = new_dialog(rc, None, str(w.a), str(w.b), "after the rejoin")
    wait_replicated(mc, w.dialog, [i for _, i in w.acked] + [last])
    print(f"failover: promote done {time.monotonic() - killed_at:.2f}s after kill -9")
