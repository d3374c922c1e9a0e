"""Failures of a sharded store (docs/sharding.md, "Failover of a storage").

kill -9 of a storage master: writes to its dialogs fail fast with 1009 until its
replica set fails over (scripts/promote), then succeed; the other replica set does
not notice; reads of its dialogs go on from its replica. A router restart loses
nothing: clients reconnect and retry with their request ids, and every acknowledged
message is stored exactly once. Needs vshard; skipped without it.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid

import tarantool

from dialogs_api import ID, MAX_PAGE, derived_dialog_id, get_dialog, new_dialog, walk_dialog
from sharded import make_cluster, needs_vshard, retrying  # noqa: F401 (a fixture)

pytestmark = needs_vshard

UNAVAILABLE = 1009
# DIALOGS_ROUTER_TIMEOUT for these clusters, and how much later than that a
# refusal may arrive on a busy machine and still count as fast.
ROUTER_TIMEOUT_S = 1.0
SLACK_S = 1.5


def bucket_id(dialog_id: uuid.UUID, bucket_count: int = 3000) -> int:
    w0, w1, w2, w3 = struct.unpack(">4I", dialog_id.bytes)
    return 1 + (w0 ^ w1 ^ w2 ^ w3) % bucket_count


def pairs_by_replicaset(cluster, per_set: int) -> dict:
    """User pairs whose dialogs live on each replica set."""
    out = {name: [] for name in cluster.replicasets}
    while min(len(v) for v in out.values()) < per_set:
        a, b = uuid.uuid4(), uuid.uuid4()
        rs = cluster.where(bucket_id(derived_dialog_id(a, b)))
        if len(out[rs]) < per_set:
            out[rs].append((a, b))
    return out


def timed(fn):
    t0 = time.monotonic()
    try:
        return fn(), None, time.monotonic() - t0
    except tarantool.error.DatabaseError as e:
        if isinstance(e, tarantool.error.NetworkError):
            raise
        return None, e, time.monotonic() - t0


def test_a_killed_storage_master_fails_fast_and_fails_over(make_cluster):
    cluster = make_cluster({"s1": 2, "s2": 2},
                           env={"DIALOGS_ROUTER_TIMEOUT": str(ROUTER_TIMEOUT_S)})
    conn = cluster.connect()
    pairs = pairs_by_replicaset(cluster, 3)
    sent = {p: [new_dialog(conn, None, *p, f"before {i}") for i in range(5)]
            for ps in pairs.values() for p in ps}
    cluster.wait_replicated("s1")
    cluster.wait_replicated("s2")

    cluster.master("s1").kill()
    # s1's dialogs: every write refused with 1009, none later than the router's timeout.
    refusals = []
    for a, b in pairs["s1"]:
        for _ in range(3):
            _, err, took = timed(lambda: new_dialog(conn, None, a, b, "while down",
                                                    {"request_id": str(uuid.uuid4())}))
            assert err is not None and err.code == UNAVAILABLE, err
            assert err.message.startswith("new_dialog: the dialog's replica set is "
                                          "unavailable; retry")
            assert took < ROUTER_TIMEOUT_S + SLACK_S, took
            refusals.append(took)
    # Refused at once: the router sees its connection to the master lost and does
    # not wait for it (one refusal may meet the moment the connection tries again).
    assert sorted(refusals)[-2] < ROUTER_TIMEOUT_S / 2, refusals
    # s2's dialogs: written as before, promptly.
    for a, b in pairs["s2"]:
        msg, err, took = timed(lambda: new_dialog(conn, None, a, b, "s2 goes on"))
        assert err is None and took < SLACK_S, (err, took)
        sent[(a, b)].append(msg)
    # s1's dialogs are read from its replica: all that was acknowledged.
    for p in pairs["s1"]:
        rows, err, took = timed(lambda: get_dialog(conn, derived_dialog_id(*p)))
        assert err is None, err
        assert [str(r[ID]) for r in rows] == sent[p]

    t0 = time.monotonic()
    cluster.promote(cluster.replicasets["s1"][1])
    for a, b in pairs["s1"]:
        rid = str(uuid.uuid4())
        msg, codes = retrying(lambda: new_dialog(conn, None, a, b, "after failover",
                                                 {"request_id": rid}), timeout=60)
        assert set(codes) <= {UNAVAILABLE}
        sent[(a, b)].append(msg)
    first_write_s = time.monotonic() - t0
    for p, ids in sent.items():
        rows = get_dialog(conn, derived_dialog_id(*p))
        assert [str(r[ID]) for r in rows] == ids
    print(f"\nfailover: refusals while down {min(refusals):.2f}..{max(refusals):.2f} s "
          f"(router timeout {ROUTER_TIMEOUT_S} s); promote -> writes again in "
          f"{first_write_s:.2f} s")


def test_a_router_restart_loses_nothing(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    router = cluster.routers[0]
    acked, failures = [], []
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

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    router.restart()
    time.sleep(1.5)
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
