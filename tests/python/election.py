"""A leader kill under write load in config/replicaset-election.yaml, shared by
test_role_election.py (which checks what survived) and measure_role_failover.py
(which repeats it and reports the times).

`failover_run` starts the three instances from a copy of the shipped file, waits for
the elected leader to set the store up, runs writer threads (each its own dialog,
one message at a time, each with a request_id, retried with the same request_id on
the next address until some instance acknowledges it, as docs/operations.md tells
clients to do), kills the leader with SIGKILL, waits until every writer has had writes
acknowledged after the kill, stops the load and returns what happened. The caller
owns the Cluster (and stops it).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import tarantool

from config_harness import Cluster, ConfigServer
from dialogs_api import READ_ONLY, derived_dialog_id, new_dialog, new_user, walk_dialog
from harness import admin_eval, wait_until

CONFIG_FILE = "replicaset-election.yaml"
NAMES = ("dialogs-a", "dialogs-b", "dialogs-c")
SET_UP_LINE = "dialogs: set up as the writable instance"

# Replies that mean "not here, not now": the write did not happen (or, for the
# detached-synchronous timeout, may still happen: the retry's request_id settles it).
# Tarantool's own codes (errcode.h) and the store's READ_ONLY.
RETRYABLE = {
    READ_ONLY,
    7,    # ER_READONLY
    116,  # ER_LOADING
    214,  # ER_UNCOMMITTED_FOREIGN_SYNC_TXNS
    216,  # ER_SYNC_QUORUM_TIMEOUT
    217,  # ER_SYNC_ROLLBACK
    225,  # ER_TXN_ROLLBACK
    226,  # ER_NOT_LEADER
    227,  # ER_SYNC_QUEUE_UNCLAIMED
    228,  # ER_SYNC_QUEUE_FOREIGN
    295,  # ER_SYNC_TIMEOUT
}
RETRY_PAUSE_S = 0.02
WRITERS = 4
# Before the kill: every writer has this many acknowledged writes (the load is
# under way, however busy the machine), within RESUME_BOUND_S.
ACKS_BEFORE_KILL = 10
# After the kill: every writer must have this many acknowledged writes, within the
# bound; then the load goes on a little longer and stops.
ACKS_AFTER_KILL = 20
RESUME_BOUND_S = 60.0
LOAD_AFTER_RESUME_S = 0.5


class Writer(threading.Thread):
    def __init__(self, n: int, servers: list, stop: threading.Event):
        super().__init__(daemon=True, name=f"writer-{n}")
        self.n = n
        self.a, self.b = new_user(), new_user()
        self.dialog = derived_dialog_id(self.a, self.b)
        self.servers, self.stop_event = servers, stop
        self.at = n % len(servers)
        # (seq, message id, monotonic time of the reply, the server that replied)
        self.acked: list = []
        self.retries = 0
        self.error: Optional[BaseException] = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test, never swallowed
            self.error = e

    def _run(self):
        conn, conn_of = None, None
        seq = 0
        while not self.stop_event.is_set():
            request_id = str(uuid.uuid4())
            text = f"writer {self.n} seq {seq}"
            while True:
                srv = self.servers[self.at]
                try:
                    if conn is None or conn_of is not srv:
                        if conn is not None:
                            conn.close()
                        conn, conn_of = None, None
                        conn = tarantool.Connection(
                            srv.host, srv.port, user=srv.user, password=srv.password,
                            connection_timeout=1, socket_timeout=10, reconnect_max_attempts=0)
                        conn_of = srv
                    msg_id = new_dialog(conn, None, str(self.a), str(self.b), text,
                                        {"request_id": request_id})
                    self.acked.append((seq, msg_id, time.monotonic(), srv))
                    break
                except (tarantool.error.NetworkError, OSError):
                    pass
                except tarantool.error.DatabaseError as e:
                    if e.args[0] not in RETRYABLE:
                        raise
                if conn is not None:
                    conn.close()
                conn, conn_of = None, None
                self.retries += 1
                self.at = (self.at + 1) % len(self.servers)
                if self.stop_event.is_set():
                    return
                time.sleep(RETRY_PAUSE_S)
            seq += 1
        if conn is not None:
            conn.close()


@dataclass
class Failover:
    servers: dict
    old_leader: ConfigServer
    writers: list
    killed_at: float
    # Seconds from the kill (the killed process reaped) to the first write another
    # instance acknowledged.
    first_ack_after_kill: float
    new_leader: Optional[ConfigServer] = None
    acked_before_kill: int = 0
    notes: list = field(default_factory=list)


def leader_of(servers) -> Optional[ConfigServer]:
    """The instance that is elected and writable, if exactly one is."""
    found = []
    for s in servers:
        if not s.is_running():
            continue
        try:
            if admin_eval(s, "box.info.election.state == 'leader' and not box.info.ro", 5):
                found.append(s)
        except (OSError, RuntimeError, AssertionError):
            continue
    return found[0] if len(found) == 1 else None


def start_cluster(cluster: Cluster) -> dict:
    servers = {n: cluster.server(n) for n in NAMES}
    for s in servers.values():
        s.start(wait=False)
    for s in servers.values():
        s.wait_ready(60)
    return servers


def failover_run(cluster: Cluster) -> Failover:
    servers = start_cluster(cluster)
    leader = wait_until(lambda: leader_of(servers.values()), 60, "an elected leader")
    wait_until(lambda: SET_UP_LINE in leader.log_of_run(), 30, "the leader's set-up")
    stop = threading.Event()
    order = list(servers.values())
    writers = [Writer(i, order, stop) for i in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        wait_until(lambda: any(w.error for w in writers)
                   or all(len(w.acked) >= ACKS_BEFORE_KILL for w in writers),
                   RESUME_BOUND_S, "writes acknowledged before the kill")
        leader.kill()
        killed_at = time.monotonic()
        acked_before = sum(len(w.acked) for w in writers)
        wait_until(lambda: any(w.error for w in writers) or all(
            sum(1 for _, _, t, by in w.acked if t > killed_at and by is not leader)
            >= ACKS_AFTER_KILL for w in writers), RESUME_BOUND_S,
            "writes acknowledged after the kill")
        time.sleep(LOAD_AFTER_RESUME_S)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    after = [t for w in writers for _, _, t, by in w.acked if t > killed_at and by is not leader]
    result = Failover(servers=servers, old_leader=leader, writers=writers, killed_at=killed_at,
                      first_ack_after_kill=min(after) - killed_at if after else float("inf"),
                      acked_before_kill=acked_before)
    result.new_leader = wait_until(lambda: leader_of(servers.values()), 30, "the new leader")
    return result


def stored_problems(run: Failover) -> list:
    """What the new leader stores that differs from what was acknowledged: for each
    writer, its dialog must hold every acknowledged message exactly once, with its
    text, in acknowledgement order, ids increasing, and nothing else. Empty: none."""
    problems = []
    conn = run.new_leader.connect()
    try:
        for w in run.writers:
            rows = [t for page in walk_dialog(conn, w.dialog, 1000) for t in page]
            ids = [str(t[0]) for t in rows]
            if ids != [a[1] for a in w.acked]:
                problems.append(f"{w.name}: {len(ids)} stored, {len(w.acked)} acknowledged, "
                                "or not the same ids in the same order")
            if [t[4] for t in rows] != [f"writer {w.n} seq {a[0]}" for a in w.acked]:
                problems.append(f"{w.name}: stored texts differ from the acknowledged ones")
            if not all(x < y for x, y in zip(map(uuid.UUID, ids), map(uuid.UUID, ids[1:]))):
                problems.append(f"{w.name}: ids do not increase")
    finally:
        conn.close()
    return problems
