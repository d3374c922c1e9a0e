"""The router's reads through the storages' native read entry (docs/sharding.md,
"How a call travels", "Cost: `make bench`, target `sharded`").

A router reads a page by calling `dialogs_storage_get` on the bucket's replica set;
the entry checks the bucket in vshard's `_bucket` in the same call and refuses one
it may not read (error 1012, never seen by clients), and then the router takes the
ordinary way (`vshard.storage.call` of the storage's Lua function). What a client
sees is the same either way. The ordinary way is observed by counting the calls of
the storage's Lua read function. Needs vshard (VSHARD_DIR); skipped without it.
"""

from __future__ import annotations

import uuid

from dialogs_api import ID, TEXT, derived_dialog_id, get_dialog, new_dialog, new_user
from sharded import make_cluster, needs_vshard  # noqa: F401 (a fixture)
from test_sharded import bucket_id

pytestmark = needs_vshard

NOT_HERE = 1012

# On a storage: counts the calls of its Lua read function (the ordinary way through
# vshard.storage.call, which looks the function up by name at each call).
COUNT_ORDINARY_READS = (
    "(function() if rawget(_G, 'ordinary_reads') == nil then "
    "rawset(_G, 'ordinary_reads', 0) local read = dialogs_storage.get_dialog "
    "dialogs_storage.get_dialog = function(...) "
    "rawset(_G, 'ordinary_reads', ordinary_reads + 1) return read(...) end end "
    "return ordinary_reads end)()")


def ordinary_reads(cluster) -> int:
    return sum(cluster.eval(s, COUNT_ORDINARY_READS) for s in cluster.storages())


def entry_outcome(cluster, srv, bucket: int, args: list):
    """The read entry called as admin on `srv`: ['ok', messages] or ['error', code]."""
    lua_args = ", ".join(f"'{a}'" if isinstance(a, str) else a for a in args)
    return cluster.eval(srv, "(function() local f = box.func.dialogs_storage_get "
                        f"local ok, r = pcall(f.call, f, {{{bucket}, {{{lua_args}}}}}) "
                        "if ok then return {'ok', #r} end "
                        "return {'error', r.code, r.message} end)()")


def test_reads_take_the_native_entry_and_fall_back_when_a_bucket_moved(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    conn = cluster.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    bucket = bucket_id(dialog)
    ids = [new_dialog(conn, None, a, b, f"m{i}") for i in range(12)]
    source = cluster.where(bucket)
    target = "s2" if source == "s1" else "s1"

    # The entry itself: the page where the bucket is, a refusal elsewhere.
    assert entry_outcome(cluster, cluster.master(source), bucket, [str(dialog)]) == ["ok", 12]
    refused = entry_outcome(cluster, cluster.master(target), bucket, [str(dialog)])
    assert refused[:2] == ["error", NOT_HERE], refused
    assert f"bucket {bucket} is not readable here" in refused[2]
    # get_dialog's own errors come first, as the procedure gives them.
    bad = entry_outcome(cluster, cluster.master(source), bucket, ["{" + str(dialog) + "}"])
    assert bad[:2] == ["error", 1003], bad

    # Reads through the router: every page answered by the entry, none the ordinary way.
    base = ordinary_reads(cluster)
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == ids
    assert [str(r[ID]) for r in get_dialog(conn, dialog, {"limit": 5})] == ids[:5]
    assert [str(r[ID]) for r in get_dialog(conn, dialog, {"reverse": True, "limit": 3})] == \
        ids[::-1][:3]
    assert [str(r[ID]) for r in get_dialog(conn, dialog, {"after": ids[9]})] == ids[10:]
    assert get_dialog(conn, uuid.uuid4()) == []
    assert ordinary_reads(cluster) == base

    # The bucket moves behind the router's back: the entry on the source refuses it,
    # the router falls back, and the client gets the same page.
    cluster.move(bucket, target)
    rows = get_dialog(conn, dialog)
    assert [str(r[ID]) for r in rows] == ids
    assert [r[TEXT] for r in rows] == [f"m{i}" for i in range(12)]
    fell_back = ordinary_reads(cluster)
    assert fell_back > base
    # The ordinary way told the router where the bucket is now: the entry answers again.
    assert [str(r[ID]) for r in get_dialog(conn, dialog, {"limit": 4})] == ids[:4]
    assert ordinary_reads(cluster) == fell_back


def test_the_entry_is_granted_to_the_routers_user_only(make_cluster):
    cluster = make_cluster({"s1": 1})
    srv = cluster.master("s1")
    grantees = cluster.eval(srv, "(function() local out = {} "
                            "local f = box.func.dialogs_storage_get "
                            "for _, p in box.space._priv:pairs() do "
                            "if p[3] == 'function' and p[4] == f.id then "
                            "table.insert(out, box.space._vuser:get{p[2]}[3]) end end "
                            "table.sort(out) return out end)()")
    assert cluster.eval(srv, "box.func.dialogs_storage_get.setuid") is True
    # Exactly one: the user the routers log in as (vshard's), no client, not public.
    assert len(grantees) == 1, grantees
    assert grantees[0] not in ("guest", "public", "dialogs"), grantees
    assert cluster.eval(srv, "box.space._user.index.name:get('%s')[4]" % grantees[0]) == "user"


def test_the_entry_reads_a_dialog_only_under_its_own_bucket(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1}, bucket_count=30)
    conn = cluster.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    bucket = bucket_id(dialog, 30)
    home = cluster.where(bucket)
    ids = [new_dialog(conn, None, a, b, f"m{i}") for i in range(3)]
    master = cluster.master(home)
    assert entry_outcome(cluster, master, bucket, [str(dialog)]) == ["ok", 3]
    # Another bucket active on the same storage, where the dialog's rows are too:
    # refused all the same, as a router with another bucket count would name it.
    other = next(x for x in range(1, 31) if x != bucket and cluster.where(x) == home)
    assert entry_outcome(cluster, master, other, [str(dialog)]) == [
        "error", NOT_HERE,
        f"dialogs_storage_get: bucket {other} is not readable here: "
        f"the dialog is in bucket {bucket}"]
    # The ordinary way (vshard.storage.call of the storage's Lua function) refuses
    # it too; the router turns that into a sharding error.
    got = cluster.eval(cluster.routers[0], (
        "(function() local r, err = vshard.router.callbro("
        f"{other}, 'dialogs_storage.get_dialog', {{{other}, {{'{dialog}'}}}}) "
        "if err == nil then return {'ok', r} end "
        "return {'error', err.code, err.message} end)()"))
    assert got == ["error", NOT_HERE,
                   f"dialogs_storage_get: bucket {other} is not readable here: "
                   f"the dialog is in bucket {bucket}"], got
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == ids
