"""The router's writes through the storages' native write entry (docs/sharding.md,
"How a call travels", "Cost: `make bench`, target `sharded`").

A router stores a message by calling `dialogs_storage_new` on the master of the
bucket's replica set; the entry checks, inside the write's own transaction, that the
dialog is in the bucket named and that vshard's `_bucket` holds that bucket writable
here, and otherwise refuses (error 1012, never seen by clients) and writes nothing;
the router then takes the ordinary way (`vshard.storage.call` of the storage's Lua
function). What a client sees is the same either way, request ids included. The
ordinary way is observed by counting the calls of the storage's Lua write function.
Needs vshard (VSHARD_DIR); skipped without it.
"""

from __future__ import annotations

import json
import uuid

from dialogs_api import ID, TEXT, derived_dialog_id, get_dialog, new_dialog, new_user
from sharded import make_cluster, needs_vshard, no_rw_refs_lua  # noqa: F401 (a fixture)
from test_sharded import bucket_id

pytestmark = needs_vshard

NOT_HERE = 1012
ENTRY = "dialogs_storage_new"

# On a storage: counts the calls of its Lua write function (the ordinary way through
# vshard.storage.call, which looks the function up by name at each call).
COUNT_ORDINARY_WRITES = (
    "(function() if rawget(_G, 'ordinary_writes') == nil then "
    "rawset(_G, 'ordinary_writes', 0) local write = dialogs_storage.new_dialog "
    "dialogs_storage.new_dialog = function(...) "
    "rawset(_G, 'ordinary_writes', ordinary_writes + 1) return write(...) end end "
    "return ordinary_writes end)()")


def ordinary_writes(cluster) -> int:
    return sum(cluster.eval(s, COUNT_ORDINARY_WRITES) for s in cluster.storages())


def lua(value) -> str:
    """A Lua literal of a JSON-like value (strings, numbers, nil, lists, maps)."""
    if value is None:
        return "box.NULL"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    return json.dumps(value)


def entry_outcome(cluster, srv, bucket: int, args: list, status: str = None):
    """The write entry called as admin on `srv`: ['ok', id, rows written] or
    ['error', code, message, rows written]. With `status`, the bucket is given that
    status in `_bucket` for the call (vshard's status checks, recovery and garbage
    collection held meanwhile) and made active again after it."""
    call = (f"local f = box.func.{ENTRY} local before = box.space.dialogs:len() "
            f"local ok, r = pcall(f.call, f, {{{bucket}, {lua(args)}}}) "
            "local written = box.space.dialogs:len() - before ")
    if status is not None:
        call = (
            "local e = vshard.storage.internal.errinj "
            f"local old = box.space._bucket:get{{{bucket}}} "
            "local gen = {generation = (old[4] and old[4].generation or 0) + 1} "
            "e.ERRINJ_RECOVERY_PAUSE = true e.ERRINJ_BUCKET_GC_PAUSE = true "
            "e.ERRINJ_SKIP_BUCKET_STATUS_VALIDATE = true "
            + no_rw_refs_lua([bucket]) +
            f"box.space._bucket:replace{{{bucket}, '{status}', "
            "'elsewhere', gen} "
            + call +
            f"box.space._bucket:replace{{{bucket}, 'active', box.NULL, gen}} "
            "e.ERRINJ_SKIP_BUCKET_STATUS_VALIDATE = false "
            "e.ERRINJ_RECOVERY_PAUSE = false e.ERRINJ_BUCKET_GC_PAUSE = false ")
    return cluster.eval(srv, "(function() " + call +
                        "if ok then return {'ok', r, written} end "
                        "return {'error', r.code, r.message, written} end)()")


def test_writes_take_the_native_entry_and_fall_back_when_a_bucket_moved(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    conn = cluster.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    bucket = bucket_id(dialog)
    source = cluster.where(bucket)
    target = "s2" if source == "s1" else "s1"

    # Writes through the router: every one stored by the entry, none the ordinary way.
    base = ordinary_writes(cluster)
    ids = [new_dialog(conn, None, a, b, f"m{i}") for i in range(5)]
    request = str(uuid.uuid4())
    first = new_dialog(conn, None, a, b, "m5", {"request_id": request})
    assert new_dialog(conn, None, a, b, "m5", {"request_id": request}) == first
    ids.append(first)
    assert ordinary_writes(cluster) == base
    assert sorted(cluster.rows_of_bucket(cluster.master(source), "dialogs", bucket)) == \
        sorted(ids)
    assert cluster.rows_of_bucket(cluster.master(source), "dialogs_requests", bucket) == \
        [request]

    # The bucket moves behind the router's back: the entry on the source refuses it,
    # the router falls back, and the message lands where the bucket is now.
    cluster.move(bucket, target)
    ids.append(new_dialog(conn, None, a, b, "m6"))
    fell_back = ordinary_writes(cluster)
    assert fell_back > base
    # The request id moved with its bucket: a retry is answered with the first id.
    assert new_dialog(conn, None, a, b, "m5", {"request_id": request}) == first
    # The ordinary way told the router where the bucket is now: the entry answers again.
    ids.append(new_dialog(conn, None, a, b, "m7"))
    assert ordinary_writes(cluster) == fell_back
    assert sorted(cluster.rows_of_bucket(cluster.master(target), "dialogs", bucket)) == \
        sorted(ids)
    rows = get_dialog(conn, dialog)
    assert [str(r[ID]) for r in rows] == ids
    assert [r[TEXT] for r in rows] == [f"m{i}" for i in range(8)]


def test_the_entry_writes_only_a_bucket_writable_here(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    a, b = str(new_user()), str(new_user())
    dialog = derived_dialog_id(uuid.UUID(a), uuid.UUID(b))
    bucket = bucket_id(dialog)
    source = cluster.master(cluster.where(bucket))
    elsewhere = cluster.master("s2" if cluster.where(bucket) == "s1" else "s1")

    # Where the bucket is active: new_dialog's reply, the row in its bucket.
    ok = entry_outcome(cluster, source, bucket, [None, a, b, "here"])
    assert ok[0] == "ok" and ok[2] == 1, ok
    assert cluster.rows_of_bucket(source, "dialogs", bucket) == [ok[1]]
    # With a request id: one message, one record in the same bucket, the same id twice.
    request = str(uuid.uuid4())
    args = [str(dialog), a, b, "once", {"request_id": request}]
    once = entry_outcome(cluster, source, bucket, args)
    assert once[0] == "ok" and once[2] == 1, once
    assert entry_outcome(cluster, source, bucket, args) == ["ok", once[1], 0]
    assert cluster.rows_of_bucket(source, "dialogs_requests", bucket) == [request]

    # A bucket this replica set does not have: refused, nothing written.
    refused = entry_outcome(cluster, elsewhere, bucket, [None, a, b, "there"])
    assert refused[:2] == ["error", NOT_HERE] and refused[3] == 0, refused
    assert f"{ENTRY}: bucket {bucket} is not writable here: not found" == refused[2]
    # A bucket that is not the dialog's: refused, nothing written.
    other = bucket % 3000 + 1
    wrong = entry_outcome(cluster, source, other, [None, a, b, "wrong"])
    assert wrong[:2] == ["error", NOT_HERE] and wrong[3] == 0, wrong
    assert f"the dialog is in bucket {bucket}" in wrong[2]
    # A bucket on the move, or made read-only for a move: refused, nothing written.
    for status in ("sending", "receiving", "readonly"):
        moving = entry_outcome(cluster, source, bucket, [None, a, b, "moving"], status)
        assert moving == ["error", NOT_HERE,
                          f"{ENTRY}: bucket {bucket} is not writable here: status {status}",
                          0], moving
        # ...and a retry with a request id stored before is refused too.
        assert entry_outcome(cluster, source, bucket, args, status)[:2] == \
            ["error", NOT_HERE]
    # Active again: writable again.
    assert entry_outcome(cluster, source, bucket, [None, a, b, "back"])[0] == "ok"

    # new_dialog's own errors, code and message, before any bucket is looked at.
    for bad, code, message in [
        ([None, a, b], 1001, "new_dialog: expected 4 or 5 arguments (dialog_id, "
                             "user_from, user_to, text [, opts]), got 3"),
        (["{" + a + "}", a, b, "t"], 1003, f'dialog_id: malformed uuid "{{{a}}}"'),
        (["", a, b, "t"], 1003, "dialog_id: a dialog key must be 1 to 255 bytes, got 0"),
        ([None, a, b, ""], 1004, "text: must be 1 to 4096 characters, got 0"),
        ([None, a, b, "t", {"lim": 1}], 1005, 'opts: unknown option "lim"'),
    ]:
        assert entry_outcome(cluster, elsewhere, bucket, bad) == \
            ["error", code, message, 0], bad
    assert cluster.eval(source, "box.space.dialogs:len()") == 3


def test_the_entry_is_granted_to_the_routers_user_only(make_cluster):
    cluster = make_cluster({"s1": 1})
    srv = cluster.master("s1")
    grantees = cluster.eval(srv, "(function() local out = {} "
                            f"local f = box.func.{ENTRY} "
                            "for _, p in box.space._priv:pairs() do "
                            "if p[3] == 'function' and p[4] == f.id then "
                            "table.insert(out, box.space._vuser:get{p[2]}[3]) end end "
                            "table.sort(out) return out end)()")
    assert cluster.eval(srv, f"box.func.{ENTRY}.setuid") is True
    # Exactly one: the user the routers log in as (vshard's), no client, not public.
    assert len(grantees) == 1, grantees
    assert grantees[0] not in ("guest", "public", "dialogs"), grantees
    assert cluster.eval(srv, "box.space._user.index.name:get('%s')[4]" % grantees[0]) == "user"
