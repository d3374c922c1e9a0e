"""A storage touches a dialog only under its own bucket, and only buckets it owns
(docs/sharding.md, "The bucket of a dialog").

The bucket of a dialog depends on the bucket count, fixed for the life of the data and
kept by every storage in `_schema`. A router started with another count would send a
dialog's calls to another bucket than the one its messages live in: it reads the count
the storages keep and, while the two differ, serves no call (error 1011, naming both
counts). And whatever a router sends, a storage stores a message only under its
dialog's bucket: the ordinary way (`vshard.storage.call` of the storage's Lua
function) refuses a bucket that is not the dialog's, as the native entries do. The
expiry of request ids deletes only records of buckets the storage owns (active or
pinned in vshard's `_bucket`); a bucket on the move is vshard's. Needs vshard
(VSHARD_DIR); skipped without it.
"""

from __future__ import annotations

import uuid

import pytest
import tarantool

from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from sharded import make_cluster, needs_vshard, no_rw_refs_lua  # noqa: F401 (a fixture)
from test_sharded import bucket_id

pytestmark = needs_vshard

SHARDING = 1011
CLUSTER_COUNT = 30


def stored_messages(cluster) -> int:
    return sum(cluster.eval(cluster.master(name), "box.space.dialogs:len()")
               for name in cluster.replicasets)


def test_a_router_with_another_bucket_count_serves_no_call(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1}, routers=3, bucket_count=CLUSTER_COUNT,
                           start=False)
    # Fewer buckets than the cluster's (each names a bucket that exists, most often
    # not the dialog's) and more (some name none).
    cluster.routers[1].env["DIALOGS_BUCKET_COUNT"] = "20"
    cluster.routers[2].env["DIALOGS_BUCKET_COUNT"] = "45"
    cluster.start()
    # A pair whose dialog another count would put in another bucket, under both
    # wrong counts (for about one pair in nine all three counts agree).
    while True:
        a, b = new_user(), new_user()
        dialog = derived_dialog_id(a, b)
        if bucket_id(dialog, CLUSTER_COUNT) not in (bucket_id(dialog, 20),
                                                    bucket_id(dialog, 45)):
            break

    for router, count in ((1, 20), (2, 45)):
        conn = cluster.connect(router)
        want = (f"this router was started with {count} buckets, but the cluster's "
                f"storages keep {CLUSTER_COUNT}")
        for call in (lambda: new_dialog(conn, None, a, b, "lost"),
                     lambda: new_dialog(conn, str(dialog), a, b, "lost", {"request_id":
                                                                          str(new_user())}),
                     lambda: get_dialog(conn, dialog)):
            with pytest.raises(tarantool.error.DatabaseError) as e:
                call()
            assert e.value.code == SHARDING, e.value
            assert want in e.value.message, e.value.message
        # The refusal is in the log, once, with both counts.
        log = cluster.routers[router].log_text()
        assert log.count(want) == 1, log
    assert stored_messages(cluster) == 0

    # The router with the cluster's count serves: the message in its dialog's bucket.
    conn = cluster.connect(0)
    mid = new_dialog(conn, None, a, b, "kept")
    bucket = bucket_id(dialog, CLUSTER_COUNT)
    assert cluster.rows_of_bucket(cluster.master(cluster.where(bucket)), "dialogs",
                                  bucket) == [mid]
    assert stored_messages(cluster) == 1
    assert [str(r[0]) for r in get_dialog(conn, dialog)] == [mid]


def test_the_ordinary_way_stores_only_under_the_dialogs_bucket(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1}, bucket_count=CLUSTER_COUNT)
    ua, ub = new_user(), new_user()
    a, b = str(ua), str(ub)
    dialog = derived_dialog_id(ua, ub)
    bucket = bucket_id(dialog, CLUSTER_COUNT)
    home = cluster.where(bucket)
    # Another bucket on the dialog's replica set, and one on the other replica set.
    for other in (next(x for x in range(1, CLUSTER_COUNT + 1)
                       if x != bucket and cluster.where(x) == home),
                  next(x for x in range(1, CLUSTER_COUNT + 1) if cluster.where(x) != home)):
        for args in (f"{{box.NULL, '{a}', '{b}', 'astray'}}",
                     f"{{'{dialog}', '{a}', '{b}', 'astray', {{request_id = "
                     f"'{new_user()}'}}}}"):
            got = cluster.eval(cluster.routers[0], (
                "(function() local r, err = vshard.router.callrw("
                f"{other}, 'dialogs_storage.new_dialog', {{{other}, {args}}}) "
                "if err == nil then return {'ok', r} end "
                "return {'error', err.code, err.message} end)()"))
            assert got == ["error", 1012,
                           f"dialogs_storage_new: bucket {other} is not writable here: "
                           f"the dialog is in bucket {bucket}"], got
    assert stored_messages(cluster) == 0
    # Through the router the message lands in its own bucket.
    mid = new_dialog(cluster.connect(), None, ua, ub, "home")
    assert cluster.rows_of_bucket(cluster.master(home), "dialogs", bucket) == [mid]


def test_request_ids_expire_only_in_buckets_the_storage_owns(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1}, bucket_count=CLUSTER_COUNT)
    conn = cluster.connect()
    master = cluster.master("s1")
    # Dialogs in buckets of s1, one bucket per status; two request ids each.
    statuses = ["sending", "receiving", "readonly", "active"]
    buckets = {}
    while len(buckets) < len(statuses):
        a, b = new_user(), new_user()
        bucket = bucket_id(derived_dialog_id(a, b), CLUSTER_COUNT)
        if bucket not in buckets and cluster.where(bucket) == "s1":
            buckets[bucket] = (a, b)
    for a, b in buckets.values():
        for text in ("one", "two"):
            new_dialog(conn, None, a, b, text, {"request_id": str(uuid.uuid4())})
    marked = dict(zip(buckets, statuses))
    # The pruner runs, a day from now with a TTL of a second (every record expired),
    # while the buckets have those statuses (vshard's own fibers held meanwhile);
    # then they are made active again.
    moving = [(bucket, status) for bucket, status in marked.items() if status != "active"]
    marks = " ".join(
        f"local old = box.space._bucket:get{{{bucket}}} "
        f"gen[{bucket}] = {{generation = (old[4] and old[4].generation or 0) + 1}} "
        f"box.space._bucket:replace{{{bucket}, '{status}', 'elsewhere', gen[{bucket}]}}"
        for bucket, status in moving)
    back = " ".join(
        f"box.space._bucket:replace{{{bucket}, 'active', box.NULL, gen[{bucket}]}}"
        for bucket, _ in moving)
    deleted = cluster.eval(master, (
        "(function() local e = vshard.storage.internal.errinj local gen = {} "
        "e.ERRINJ_RECOVERY_PAUSE = true e.ERRINJ_BUCKET_GC_PAUSE = true "
        "e.ERRINJ_SKIP_BUCKET_STATUS_VALIDATE = true "
        + no_rw_refs_lua([bucket for bucket, _ in moving]) +
        f"{marks} "
        "local ok, n = pcall(require('dialogs.requests').prune, 1, "
        "require('clock').time() * 1000 + 86400000) "
        f"{back} "
        "e.ERRINJ_SKIP_BUCKET_STATUS_VALIDATE = false "
        "e.ERRINJ_RECOVERY_PAUSE = false e.ERRINJ_BUCKET_GC_PAUSE = false "
        "if not ok then error(n) end return n end)()"))
    assert deleted == 2
    for bucket, status in marked.items():
        left = cluster.rows_of_bucket(master, "dialogs_requests", bucket)
        assert len(left) == (0 if status == "active" else 2), (bucket, status, left)
        assert len(cluster.rows_of_bucket(master, "dialogs", bucket)) == 2, (bucket, status)
