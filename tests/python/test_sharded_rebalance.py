"""Live rebalancing (docs/sharding.md, "Adding a replica set"): one storage replica set under
load from 50 writing clients and a few readers; a second replica set joins; vshard
moves half the buckets while the clients go on.

During and after the move: no acknowledged message is lost or stored twice; every
dialog pages completely and in id order; a write that meets a bucket in transit is
retried by the router or refused with a retryable code (1009, 1010), and nothing is
stored on the old replica set after its bucket left; a read never returns another
dialog's rows. The inboxes, whose buckets move too, end exact: once the outboxes
have drained, every user's list shows each of their dialogs with its last message,
and the recount finds no drift. The test prints the move's duration, its speed and the clients'
errors by code (and writes them as JSON to $DIALOGS_MEASURE_OUT when set: the
sizing in docs/sharding.md uses them). Needs vshard; skipped without it.
"""

from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
import uuid

import tarantool

from dialogs_api import DIALOG_ID, ID, TEXT, derived_dialog_id, walk_dialog
from harness import wait_until
from sharded import (build_inboxes, list_dialogs, make_cluster, needs_vshard,  # noqa: F401
                     no_drift, recount)

pytestmark = needs_vshard

WRITERS = 50
READERS = 5
DIALOGS_PER_WRITER = 3
# Small enough that the move takes seconds on a busy two-core machine, large
# enough that every replica set gets many; the measurement for the sizing
# also runs with the product's defaults (DIALOGS_REBALANCE_BUCKETS=3000
# DIALOGS_REBALANCE_MAX_SENDING=1).
BUCKETS = int(os.environ.get("DIALOGS_REBALANCE_BUCKETS") or 300)
MAX_SENDING = int(os.environ.get("DIALOGS_REBALANCE_MAX_SENDING") or 15)
# Messages stored before the load starts (0 unless measuring how fast buckets
# full of messages move: DIALOGS_REBALANCE_PRELOAD=200000), through new_dialog on
# the storage itself, 100-character texts in 1000 dialogs.
PRELOAD = int(os.environ.get("DIALOGS_REBALANCE_PRELOAD") or 0)
PRELOAD_LUA = """(function(n)
    local uuid, f = require('uuid'), box.func.new_dialog
    local text = string.rep('x', 100)
    local dialogs = {}
    for i = 1, 1000 do dialogs[i] = uuid.str() end
    local a, b = uuid.str(), uuid.str()
    for i = 1, n, 1000 do
        box.begin()
        for j = i, math.min(n, i + 999) do f:call({dialogs[j % 1000 + 1], a, b, text}) end
        box.commit()
    end
    return box.space.dialogs:len()
end)(PRELOAD_N)"""
# Messages the load has acknowledged before the move starts, and after it ends,
# whatever the machine's pace; how long it may take to get there.
ACKED_BEFORE_MOVE = 300
ACKED_AFTER_MOVE = 200
LOAD_WAIT_S = 120.0
MOVE_TIMEOUT_S = 300.0
RETRYABLE = (1009, 1010)
# How long one write may keep retrying before the test counts it as failed.
WRITE_DEADLINE_S = 30.0
PAGE = 100


class Load:
    """Writers and readers on their own connections to the router, until stopped."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # (dialog, id, text)
        self.failed_writes = []  # (text, error) of writes that never succeeded
        self.errors = collections.Counter()  # code -> count (clients' view)
        self.read_violations = []
        self.reads = 0
        self.pairs = [[(uuid.uuid4(), uuid.uuid4()) for _ in range(DIALOGS_PER_WRITER)]
                      for _ in range(WRITERS)]
        self.threads = ([threading.Thread(target=self.writer, args=(i,), daemon=True)
                         for i in range(WRITERS)]
                        + [threading.Thread(target=self.reader, args=(i,), daemon=True)
                           for i in range(READERS)])

    def dialogs(self):
        return [derived_dialog_id(a, b) for ps in self.pairs for a, b in ps]

    def connect(self):
        return self.cluster.connect(socket_timeout=30, connection_timeout=10)

    def count(self, key):
        with self.lock:
            self.errors[key] += 1

    def writer(self, i: int) -> None:
        conn = self.connect()
        rng = random.Random(i)
        n = 0
        while not self.stop.is_set():
            a, b = rng.choice(self.pairs[i])
            if rng.random() < 0.5:
                a, b = b, a
            text = f"w{i} n{n}"
            rid = str(uuid.uuid4())
            deadline = time.monotonic() + WRITE_DEADLINE_S
            while True:
                try:
                    data = conn.call("new_dialog", [None, str(a), str(b), text,
                                                    {"request_id": rid}]).data
                    msg = data[0][0] if isinstance(data[0], list) else data[0]
                    with self.lock:
                        self.acked.append((derived_dialog_id(a, b), msg, text))
                    break
                except tarantool.error.NetworkError as e:
                    self.count("network")
                    err = e
                    conn = self.connect()
                except tarantool.error.DatabaseError as e:
                    self.count(e.code)
                    err = e
                    if e.code not in RETRYABLE:
                        with self.lock:
                            self.failed_writes.append((text, repr(e)))
                        break
                if time.monotonic() > deadline:
                    with self.lock:
                        self.failed_writes.append((text, repr(err)))
                    break
                time.sleep(0.01)
            n += 1

    def reader(self, i: int) -> None:
        conn = self.connect()
        rng = random.Random(1000 + i)
        dialogs = self.dialogs()
        while not self.stop.is_set():
            d = rng.choice(dialogs)
            try:
                data = conn.call("get_dialog", [str(d), {"limit": 1000}]).data
            except tarantool.error.NetworkError:
                self.count("network")
                conn = self.connect()
                continue
            except tarantool.error.DatabaseError as e:
                self.count(e.code)
                continue
            rows = data[0]
            ids = [r[ID] for r in rows]
            with self.lock:
                self.reads += 1
                if any(r[DIALOG_ID] != d for r in rows):
                    self.read_violations.append(("another dialog's row", str(d)))
                if ids != sorted(set(ids)):
                    self.read_violations.append(("out of order or repeated", str(d)))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(WRITE_DEADLINE_S + 30)


def test_adding_a_replica_set_under_load_loses_nothing(make_cluster):
    cluster = make_cluster({"s1": 1}, bucket_count=BUCKETS,
                           env={"DIALOGS_REBALANCER_MAX_SENDING": str(MAX_SENDING)})
    if PRELOAD:
        cluster.eval(cluster.master("s1"),
                     " ".join(PRELOAD_LUA.replace("PRELOAD_N", str(PRELOAD)).split()),
                     timeout=600)
    build_inboxes(cluster)
    load = Load(cluster)
    load.start()
    wait_until(lambda: len(load.acked) >= ACKED_BEFORE_MOVE, LOAD_WAIT_S,
               "the load before the move")
    written_before = len(load.acked)

    t0 = time.monotonic()
    cluster.add_replicaset("s2", 1)
    build_inboxes(cluster)
    wait_until(lambda: cluster.bucket_counts() == {"s1": BUCKETS // 2, "s2": BUCKETS // 2},
               MOVE_TIMEOUT_S, "the rebalancer to move half the buckets", interval=0.1)
    move_s = time.monotonic() - t0
    written_during = len(load.acked) - written_before
    # What the move carried (plus the few writes to buckets already moved).
    rows_moved = cluster.eval(cluster.master("s2"), "box.space.dialogs:len()")
    after_move = len(load.acked) + ACKED_AFTER_MOVE
    wait_until(lambda: len(load.acked) >= after_move, LOAD_WAIT_S, "the load after the move")
    load.finish()

    # Every acknowledged write, exactly once, where it belongs, in order.
    assert load.failed_writes == [], load.failed_writes[:5]
    assert load.read_violations == [], load.read_violations[:5]
    assert set(load.errors) <= set(RETRYABLE) | {"network"}, load.errors
    conn = cluster.connect()
    by_dialog = collections.defaultdict(list)
    for d, msg, text in load.acked:
        by_dialog[d].append((msg, text))
    for d in load.dialogs():
        rows = [r for page in walk_dialog(conn, d, PAGE) for r in page]
        got = [(str(r[ID]), r[TEXT]) for r in rows]
        assert len(got) == len(set(got)), f"{d}: a message stored twice"
        assert sorted(got) == sorted(by_dialog[d]), f"{d}: stored != acknowledged"
        assert [r[ID] for r in rows] == sorted(r[ID] for r in rows)
        assert all(r[DIALOG_ID] == d for r in rows)

    # Nothing stored on s1 after a bucket left it: whatever s1 still holds of a
    # bucket that is now s2's (vshard collects it later) is also on s2.
    moved = cluster.eval(cluster.master("s2"), "(function() local out = {} "
                         "for _, b in box.space._bucket:pairs() do if b.status == 'active' "
                         "then table.insert(out, b.id) end end return out end)()")
    assert len(moved) == BUCKETS // 2
    s1, s2 = cluster.master("s1"), cluster.master("s2")
    leftover = 0
    for b in moved:
        on_s1 = set(cluster.rows_of_bucket(s1, "dialogs", b))
        assert on_s1 <= set(cluster.rows_of_bucket(s2, "dialogs", b)), f"bucket {b}"
        leftover += len(on_s1)

    # The inboxes: exact once the outboxes have drained (the recount waits for them).
    drift = recount(cluster)
    assert no_drift(drift), drift
    last_of = {}
    for d, msg, _ in load.acked:
        last_of[d] = max(last_of.get(d, msg), msg, key=uuid.UUID)
    for ps in load.pairs:
        for a, b in ps:
            d = derived_dialog_id(a, b)
            for user in (a, b):
                shown = {e["dialog_id"]: str(e["last_id"])
                         for e in list_dialogs(conn, user, {"limit": 100})["dialogs"]}
                assert shown.get(d) == last_of.get(d), (user, d)

    report = {
        "buckets": BUCKETS,
        "preloaded_messages": PRELOAD,
        "buckets_moved": len(moved),
        "rebalancer_max_sending": MAX_SENDING,
        "move_seconds": round(move_s, 2),
        "messages_before_move": written_before,
        "messages_during_move": written_during,
        "messages_total": len(load.acked),
        "messages_on_new_replica_set": rows_moved,
        "moved_messages_per_second": round(rows_moved / move_s, 1),
        "client_errors_by_code": {str(k): v for k, v in sorted(load.errors.items(),
                                                               key=lambda kv: str(kv[0]))},
        "reads": load.reads,
        "rows_left_on_old_replica_set_awaiting_gc": leftover,
        "inbox_entries_recounted": drift["entries"],
    }
    print("\nrebalance:", json.dumps(report))
    out = os.environ.get("DIALOGS_MEASURE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
