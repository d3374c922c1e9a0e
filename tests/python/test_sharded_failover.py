"""Failures of a sharded store (docs/sharding.md, "Failover of a storage").

kill -9 of a storage master: writes to its dialogs fail fast with 1009 until its
replica set fails over (scripts/promote), then succeed; the other replica set does
not notice; reads of its dialogs go on from its replica. A router restart loses
nothing: clients reconnect and retry with their request ids, and every acknowledged
message is stored exactly once. After both, once the outboxes have drained, the
inboxes' recount finds no drift. Needs vshard; skipped without it.
"""

from __future__ import annotations

import threading
import time
import uuid

import tarantool

from dialogs_api import ID, MAX_PAGE, derived_dialog_id, new_dialog, walk_dialog
from harness import wait_until
from sharded import (build_inboxes, make_cluster, needs_vshard, no_drift,  # noqa: F401
                     recount)
from sharded_failover import CLUSTER_ENV, LAYOUT, ROUTER_TIMEOUT_S, UNAVAILABLE, failover_run

pytestmark = needs_vshard

# Messages every writer has acknowledged before the router restarts, and after it
# is back: the restart falls in the middle of the load, whatever the machine's pace.
ACKED_BEFORE_RESTART = 3
ACKED_AFTER_RESTART = 3
LOAD_WAIT_S = 60


def test_a_killed_storage_master_fails_fast_and_fails_over(make_cluster):
    # How fast is reported (measure_sharded_failover.py), not asserted: that
    # depends on the machine's load.
    cluster = make_cluster(LAYOUT, env=CLUSTER_ENV)
    run = failover_run(cluster)
    assert run.problems == []
    drift = recount(cluster)
    assert no_drift(drift), drift
    print(f"\nfailover: refusals while down {min(run.refusals_s):.2f}.."
          f"{max(run.refusals_s):.2f} s (router timeout {ROUTER_TIMEOUT_S} s); promote -> "
          f"writes again in {run.promote_to_writes_s:.2f} s")


def test_a_router_restart_loses_nothing(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    build_inboxes(cluster)
    router = cluster.routers[0]
    acked, failures = [], []
    acked_by = [0] * 8  # messages acknowledged, per writer
    stop = threading.Event()
    lock = threading.Lock()

    def connect():
        # Not the harness's (it closes those when it stops the server): the
        # client's own, which it must reopen itself.
        return tarantool.Connection(router.host, router.port, user=router.user,
                                    password=router.password, reconnect_max_attempts=0,
                                    connection_timeout=5, socket_timeout=30)

    def writer(i: int) -> None:
        conn = connect()
        a, b = uuid.uuid4(), uuid.uuid4()
        n = 0
        while not stop.is_set():
            text, rid = f"w{i} m{n}", str(uuid.uuid4())
            deadline = time.monotonic() + 60
            while True:
                try:
                    msg = new_dialog(conn, None, a, b, text, {"request_id": rid})
                    with lock:
                        acked.append(((a, b), msg, text))
                        acked_by[i] += 1
                    break
                except tarantool.error.NetworkError:
                    # The router went away: connect again, then retry the same call.
                    time.sleep(0.05)
                    try:
                        conn = connect()
                    except tarantool.error.NetworkError:
                        pass
                except tarantool.error.DatabaseError as e:
                    if e.code != UNAVAILABLE:
                        with lock:
                            failures.append(repr(e))
                        break
                if time.monotonic() > deadline:
                    with lock:
                        failures.append(f"{text}: no answer in 60 s")
                    break
            n += 1

    threads = [threading.Thread(target=writer, args=(i,), daemon=True)
               for i in range(len(acked_by))]
    for t in threads:
        t.start()

    def every_writer_has(n: int):
        return lambda: min(acked_by) >= n or failures

    wait_until(every_writer_has(ACKED_BEFORE_RESTART), LOAD_WAIT_S,
               "every writer's first messages")
    router.restart()
    after = max(acked_by) + ACKED_AFTER_RESTART
    wait_until(every_writer_has(after), LOAD_WAIT_S,
               "every writer's messages through the restarted router")
    stop.set()
    for t in threads:
        t.join(90)
    assert failures == []

    conn = cluster.connect()
    by_pair: dict = {}
    for pair, msg, text in acked:
        by_pair.setdefault(pair, []).append(msg)
    for pair, ids in by_pair.items():
        # Every page: a writer may have sent more than one page's worth.
        rows = [r for page in walk_dialog(conn, derived_dialog_id(*pair), MAX_PAGE)
                for r in page]
        got = [str(r[ID]) for r in rows]
        assert got == ids, pair  # each once, in the order they were acknowledged
    drift = recount(cluster)
    assert no_drift(drift), drift
