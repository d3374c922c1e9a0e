"""kill -9 of a storage master in a sharded store, and its replica set's failover:
the run that test_sharded_failover.py checks and measure_sharded_failover.py times.

Two replica sets of two (s1, s2) behind one router whose calls last at most
ROUTER_TIMEOUT_S. Dialogs of both get messages; s1's master is killed; writes to
s1's dialogs must be refused with 1009, writes to s2's go on, s1's dialogs are read
from its replica; then scripts/promote makes the replica s1's master and writes to
s1's dialogs succeed again. The inboxes: s1's master is killed with deliveries
still in its outbox (its drainer stopped for the last messages), and s2's outbox
delivers to s1's users while s1 is down: the promoted replica delivers the first,
s2 retries the others until s1 has a master again (test_sharded_failover.py then
recounts). `failover_run` returns what happened, with how long
each step took; `FailoverRun.problems` lists what a user would see go wrong (the
times are figures to report, never checked: they depend on the machine's load).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import tarantool

from dialogs_api import ID, derived_dialog_id, get_dialog, new_dialog
from sharded import (DRAIN_TIMEOUT_S, Cluster, build_inboxes, outbox_backlog, retrying)
from harness import wait_until
from test_sharded import bucket_id

UNAVAILABLE = 1009
UNAVAILABLE_MESSAGE = "new_dialog: the dialog's replica set is unavailable; retry"
LAYOUT = {"s1": 2, "s2": 2}
# DIALOGS_ROUTER_TIMEOUT for these clusters.
ROUTER_TIMEOUT_S = 1.0
CLUSTER_ENV = {"DIALOGS_ROUTER_TIMEOUT": str(ROUTER_TIMEOUT_S)}
# User pairs whose dialogs live on each replica set, and writes tried per pair of
# the killed one while it is down.
PAIRS_PER_SET = 3
TRIES_WHILE_DOWN = 3
# How long a write to the failed-over replica set is retried after the promotion.
AFTER_PROMOTE_S = 60


def pairs_by_replicaset(cluster: Cluster, per_set: int) -> dict:
    """User pairs whose dialogs live on each replica set."""
    out: Dict[str, list] = {name: [] for name in cluster.replicasets}
    while min(len(v) for v in out.values()) < per_set:
        a, b = uuid.uuid4(), uuid.uuid4()
        rs = cluster.where(bucket_id(derived_dialog_id(a, b), cluster.bucket_count))
        if len(out[rs]) < per_set:
            out[rs].append((a, b))
    return out


def timed(fn) -> Tuple[object, Optional[tarantool.error.DatabaseError], float]:
    """fn()'s value or its database error, and the seconds it took. A lost
    connection to the router is not an answer: it raises."""
    t0 = time.monotonic()
    try:
        return fn(), None, time.monotonic() - t0
    except tarantool.error.DatabaseError as e:
        if isinstance(e, tarantool.error.NetworkError):
            raise
        return None, e, time.monotonic() - t0


@dataclass
class FailoverRun:
    # Seconds each write to the killed replica set's dialogs took to be refused.
    refusals_s: List[float] = field(default_factory=list)
    # Seconds each write to the other replica set's dialogs took while it was down.
    others_s: List[float] = field(default_factory=list)
    # From the promotion to the last of the killed set's dialogs written again.
    promote_to_writes_s: float = 0.0
    problems: List[str] = field(default_factory=list)


def failover_run(cluster: Cluster) -> FailoverRun:
    """The whole run on a started cluster of LAYOUT with CLUSTER_ENV."""
    run = FailoverRun()
    build_inboxes(cluster)
    conn = cluster.connect()
    pairs = pairs_by_replicaset(cluster, PAIRS_PER_SET)
    sent = {p: [new_dialog(conn, None, *p, f"before {i}") for i in range(5)]
            for ps in pairs.values() for p in ps}
    # Every delivery made and replicated (with asynchronous replication a master's
    # last writes die with it, deliveries to its inboxes included); then s1 stops
    # delivering, and its last messages wait in its outbox (replicated too).
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the outboxes to drain")
    cluster.eval(cluster.master("s1"), "require('dialogs.outbox').stop() or true")
    for p in pairs["s1"]:
        sent[p].append(new_dialog(conn, None, *p, "waits in the outbox"))
    cluster.wait_replicated("s1")
    cluster.wait_replicated("s2")

    cluster.master("s1").kill()
    # s1's dialogs: every write refused with 1009 (within the router's timeout).
    for a, b in pairs["s1"]:
        for _ in range(TRIES_WHILE_DOWN):
            _, err, took = timed(lambda: new_dialog(conn, None, a, b, "while down",
                                                    {"request_id": str(uuid.uuid4())}))
            run.refusals_s.append(took)
            if err is None or err.code != UNAVAILABLE \
                    or not err.message.startswith(UNAVAILABLE_MESSAGE):
                run.problems.append(f"a write to s1 while its master is down: {err!r}")
    # s2's dialogs: written as before.
    for a, b in pairs["s2"]:
        msg, err, took = timed(lambda: new_dialog(conn, None, a, b, "s2 goes on"))
        run.others_s.append(took)
        if err is not None:
            run.problems.append(f"a write to s2 while s1 is down: {err!r}")
        else:
            sent[(a, b)].append(msg)
    # s1's dialogs are read from its replica: all that was acknowledged.
    for p in pairs["s1"]:
        rows, err, _ = timed(lambda: get_dialog(conn, derived_dialog_id(*p)))
        if err is not None or [str(r[ID]) for r in rows] != sent[p]:
            run.problems.append(f"s1's dialog read from its replica: {err!r} {rows!r}")

    t0 = time.monotonic()
    cluster.promote(cluster.replicasets["s1"][1])
    for a, b in pairs["s1"]:
        rid = str(uuid.uuid4())
        msg, codes = retrying(lambda: new_dialog(conn, None, a, b, "after failover",
                                                 {"request_id": rid}),
                              timeout=AFTER_PROMOTE_S)
        if not set(codes) <= {UNAVAILABLE}:
            run.problems.append(f"a write to s1 after the promotion met {codes}")
        sent[(a, b)].append(msg)
    run.promote_to_writes_s = time.monotonic() - t0
    for p, ids in sent.items():
        rows = get_dialog(conn, derived_dialog_id(*p))
        if [str(r[ID]) for r in rows] != ids:
            run.problems.append(f"dialog {derived_dialog_id(*p)}: stored {len(rows)} "
                                f"messages, {len(ids)} acknowledged, or not in order")
    return run
