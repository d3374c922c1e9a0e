"""The sharded store through its router (docs/sharding.md).

A client talks to a router as to a single store: the same replies and the same
errors, bad calls refused before any storage is asked; a retry with the same
request_id after its bucket moved returns the first id; ids stay ordered within a
dialog after its bucket moved and after a storage failover. Needs vshard (VSHARD_DIR);
skipped without it.
"""

from __future__ import annotations

import struct
import uuid

import msgpack
import pytest
import tarantool

from dialogs_api import (ID, TEXT, USER_FROM, DIALOG_ID, derived_dialog_id, get_dialog,
                         key_dialog_id, new_dialog, new_user, walk_dialog)
from iproto_raw import RawConnection
from sharded import make_cluster, needs_vshard, retrying  # noqa: F401 (a fixture)

pytestmark = needs_vshard

NIL_UUID = "00000000-0000-0000-0000-000000000000"
UNAVAILABLE = 1009


def bucket_id(dialog_id: uuid.UUID, bucket_count: int = 3000) -> int:
    """docs/sharding.md's bucket function (test_bucket.py checks it is the product's)."""
    w0, w1, w2, w3 = struct.unpack(">4I", dialog_id.bytes)
    return 1 + (w0 ^ w1 ^ w2 ^ w3) % bucket_count


def outcome(conn, proc: str, args: list):
    """What a client sees of one call: ('ok', data) or ('error', code, message)."""
    try:
        return ("ok", conn.call(proc, args).data)
    except tarantool.error.NetworkError:
        raise
    except tarantool.error.DatabaseError as e:
        return ("error", e.code, e.message)


def bad_calls(d: str, a: str, b: str) -> list:
    """Calls every store must refuse (README, "Errors"), with their arguments."""
    opts = {"limit": 5}
    return [
        ("new_dialog", []),
        ("new_dialog", [None, a, b]),
        ("new_dialog", [None, a, b, "t", None, 1]),
        ("new_dialog", [True, a, b, "t"]),
        ("new_dialog", [[1, 2], a, b, "t"]),
        ("new_dialog", [{"k": 1}, a, b, "t"]),
        ("new_dialog", [d[:-1], a, b, "t"]),
        ("new_dialog", ["", a, b, "t"]),
        ("new_dialog", ["k" * 256, a, b, "t"]),
        ("new_dialog", ["{" + d + "}", a, b, "t"]),
        ("new_dialog", [None, None, b, "t"]),
        ("new_dialog", [None, a, 42, "t"]),
        ("new_dialog", [None, a, NIL_UUID, "t"]),
        ("new_dialog", [None, a, "{" + b + "}", "t"]),
        ("new_dialog", [None, a, b.replace("-", ""), "t"]),
        ("new_dialog", [None, a, b, ""]),
        ("new_dialog", [None, a, b, None]),
        ("new_dialog", [None, a, b, 12]),
        ("new_dialog", [None, a, b, "x" * 4097]),
        ("new_dialog", [None, a, b, "🙂" * 4097]),
        ("new_dialog", [None, a, b, "t", {"bogus": 1}]),
        ("new_dialog", [None, a, b, "t", {1: 2}]),
        ("new_dialog", [None, a, b, "t", {"request_id": "nope"}]),
        ("new_dialog", [None, a, b, "t", {"request_id": 5}]),
        ("new_dialog", [None, a, b, "t", "opts"]),
        ("new_dialog", [d, a, b, "t", [1]]),
        ("get_dialog", []),
        ("get_dialog", [None]),
        ("get_dialog", [True]),
        ("get_dialog", [d.replace("-", "")]),
        ("get_dialog", [""]),
        ("get_dialog", ["urn:uuid:" + d]),
        ("get_dialog", [NIL_UUID]),
        ("get_dialog", [d, opts, 1]),
        ("get_dialog", [d, {"limit": 0}]),
        ("get_dialog", [d, {"limit": 1001}]),
        ("get_dialog", [d, {"limit": -1}]),
        ("get_dialog", [d, {"limit": "10"}]),
        ("get_dialog", [d, {"after": "zzz"}]),
        ("get_dialog", [d, {"before": 5}]),
        ("get_dialog", [d, {"reverse": "yes"}]),
        ("get_dialog", [d, {"offset": 10}]),
        ("get_dialog", [d, "opts"]),
    ]


def test_a_router_answers_as_a_single_store_does(make_cluster, make_server):
    cluster = make_cluster({"s1": 1, "s2": 1})
    via_router, direct = cluster.connect(), make_server("single").connect()
    a, b = new_user(), new_user()
    d = derived_dialog_id(a, b)

    # Every refusal: the same code and the same message, word for word.
    for proc, args in bad_calls(str(d), str(a), str(b)):
        got, want = outcome(via_router, proc, args), outcome(direct, proc, args)
        assert want[0] == "error", (proc, args, want)
        assert got == want, (proc, args)

    # The same conversation on both: the same replies, shape included.
    rid = str(uuid.uuid4())
    # A string key (README "Dialog keys"): the same dialog on both, and in the
    # router's bucket.
    key = str(a) + str(b)
    calls = [
        ("new_dialog", [key, str(a), str(b), "by key"]),
        ("new_dialog", [None, str(a), str(b), "hi Bob"]),
        ("new_dialog", [None, str(b), str(a), "hi Alice"]),
        ("new_dialog", [d, a, b, "msgpack uuids"]),
        ("new_dialog", [str(d), str(a), str(b), "once", {"request_id": rid}]),
        ("new_dialog", [str(d), str(a), str(b), "once", {"request_id": rid}]),
    ]
    ids = {}
    for proc, args in calls:
        got, want = outcome(via_router, proc, args), outcome(direct, proc, args)
        assert got[0] == want[0] == "ok", (got, want)
        # [[id]] on both (or [id] on both, where C results travel one each)
        assert [type(x) for x in got[1]] == [type(x) for x in want[1]]
        ids.setdefault("router", []).append(got[1])
        ids.setdefault("direct", []).append(want[1])
    # The retry returned the first try's id, on both.
    assert ids["router"][4] == ids["router"][5] and ids["direct"][4] == ids["direct"][5]

    conflict = [str(d), str(a), str(b), "other text", {"request_id": rid}]
    got, want = outcome(via_router, "new_dialog", conflict), outcome(direct, "new_dialog",
                                                                        conflict)
    assert got[:2] == want[:2] == ("error", 1007)
    assert got[2] == want[2].replace(_first_id(ids["direct"][4]),
                                     _first_id(ids["router"][4]))

    for opts in [None, {}, {"limit": 2}, {"reverse": True, "limit": 3}, {"limit": 1000}]:
        args = [str(d)] + ([] if opts is None else [opts])
        got, want = outcome(via_router, "get_dialog", args), outcome(direct, "get_dialog", args)
        assert got[0] == want[0] == "ok"
        assert _shape(got[1]) == _shape(want[1]), opts
    rows = get_dialog(via_router, d)
    assert [r[TEXT] for r in rows] == ["hi Bob", "hi Alice", "msgpack uuids", "once"]
    assert [r[USER_FROM] for r in rows] == [a, b, a, a]
    assert all(r[DIALOG_ID] == d for r in rows)
    assert get_dialog(via_router, uuid.uuid4()) == []
    for conn in (via_router, direct):
        keyed = get_dialog(conn, key)
        assert [r[TEXT] for r in keyed] == ["by key"]
        assert keyed[0][DIALOG_ID] == key_dialog_id(key)
        assert get_dialog(conn, key_dialog_id(key)) == keyed


def _first_id(data) -> str:
    return data[0][0] if isinstance(data[0], list) else data[0]


def _shape(data) -> list:
    """A get_dialog reply without what differs between two stores (ids, times)."""
    def row(t):
        return [type(t[0]).__name__, str(t[1]), str(t[2]), str(t[3]), t[4], type(t[5]).__name__]
    return [[row(t) for t in page] for page in data]


def msgpack_only_calls(d: str, a: str, b: str) -> list:
    """Calls a Lua caller could not tell from good ones, as argument bytes: an
    integral float where an integer goes, `bin` where a string goes (16 uuid bytes,
    a uuid's text, valid UTF-8 text)."""
    def pack(args):
        return msgpack.packb(args, use_bin_type=True)
    return [
        ("get_dialog", pack([d, {"limit": 5.0}])),
        ("get_dialog", pack([uuid.UUID(d).bytes])),
        ("new_dialog", pack([None, a, uuid.UUID(b).bytes, "t"])),
        ("new_dialog", pack([None, a, b.encode(), "t"])),
        ("new_dialog", pack([None, a, b, "bin text".encode()])),
        ("new_dialog", pack([d, a, b, "t", {"request_id": str(uuid.uuid4()).encode()}])),
    ]


def router_takes_raw_arguments(cluster) -> bool:
    return cluster.eval(cluster.routers[0], "box.func.new_dialog.takes_raw_args == true")


def raw_outcomes(srv, calls: list) -> list:
    conn = RawConnection(srv.host, srv.port, srv.user, srv.password)
    try:
        return [conn.call(proc, args) for proc, args in calls]
    finally:
        conn.close()


def test_a_router_with_raw_arguments_refuses_what_the_store_refuses(make_cluster, make_server):
    cluster = make_cluster({"s1": 1})
    if not router_takes_raw_arguments(cluster):
        pytest.skip("this server's Lua functions cannot take raw arguments (takes_raw_args): "
                    "the router sees decoded arguments (docs/sharding.md, \"What a client sees\")")
    a, b = str(new_user()), str(new_user())
    d = str(derived_dialog_id(uuid.UUID(a), uuid.UUID(b)))
    calls = msgpack_only_calls(d, a, b)
    got = raw_outcomes(cluster.routers[0], calls)
    want = raw_outcomes(make_server("single"), calls)
    for call, g, w in zip(calls, got, want):
        assert w[0] != 0, (call, w)
        assert g == w, call
    # Nothing reached a storage.
    assert get_dialog(cluster.connect(), uuid.UUID(d)) == []


def test_a_router_without_raw_arguments_sees_lua_values(make_cluster):
    cluster = make_cluster({"s1": 1})
    if router_takes_raw_arguments(cluster):
        pytest.skip("this server's router takes the client's argument bytes: no difference")
    a, b = str(new_user()), str(new_user())
    d = str(derived_dialog_id(uuid.UUID(a), uuid.UUID(b)))
    codes = [code for code, _ in raw_outcomes(cluster.routers[0], msgpack_only_calls(d, a, b))]
    # docs/sharding.md, "What a client sees": an integral float counts as the integer, bin as
    # a string (16 bytes: a malformed uuid, 1003; a uuid's text or UTF-8 text: taken).
    assert codes == [0, 1003, 1003, 0, 0, 0]


def test_bad_calls_are_refused_before_any_storage_is_asked(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    conn = cluster.connect()
    a, b = new_user(), new_user()
    d = derived_dialog_id(a, b)
    answers = {(proc, repr(args)): outcome(conn, proc, args)
               for proc, args in bad_calls(str(d), str(a), str(b))}
    for members in cluster.replicasets.values():
        for s in members:
            s.stop()
    # No storage is up: the refusals are the same, word for word; a good call is
    # told to retry.
    for proc, args in bad_calls(str(d), str(a), str(b)):
        assert outcome(conn, proc, args) == answers[(proc, repr(args))], (proc, args)
    for proc, args in [("new_dialog", [None, str(a), str(b), "t"]), ("get_dialog", [str(d)])]:
        got = outcome(conn, proc, args)
        assert got[:2] == ("error", UNAVAILABLE), got
        assert got[2].startswith(f"{proc}: the dialog's replica set is unavailable; retry"), got


def test_storages_take_no_client(make_cluster):
    cluster = make_cluster({"s1": 1})
    s = cluster.master("s1")
    with pytest.raises(tarantool.error.DatabaseError):
        s.connect().call("get_dialog", [str(uuid.uuid4())])
    assert cluster.eval(s, "box.schema.user.exists('dialogs')") is False


def test_a_retry_after_its_bucket_moved_returns_the_first_id(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    conn = cluster.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    bucket = bucket_id(dialog)
    rid = str(uuid.uuid4())
    first = new_dialog(conn, None, a, b, "exactly once", {"request_id": rid})
    before = [first] + [new_dialog(conn, None, b, a, f"m{i}") for i in range(20)]

    source = cluster.where(bucket)
    target = "s2" if source == "s1" else "s1"
    assert cluster.rows_of_bucket(cluster.master(source), "dialogs_requests", bucket) == [rid]
    cluster.move(bucket, target)
    assert cluster.where(bucket) == target
    # The message and its request record moved together.
    moved = cluster.rows_of_bucket(cluster.master(target), "dialogs", bucket)
    assert sorted(moved) == sorted(before)
    assert cluster.rows_of_bucket(cluster.master(target), "dialogs_requests", bucket) == [rid]

    # The router still thinks the bucket is on the source; the retry reaches the
    # target all the same and gets the first id, and nothing is stored twice.
    assert new_dialog(conn, None, a, b, "exactly once", {"request_id": rid}) == first
    after = [new_dialog(conn, None, a, b, f"after {i}") for i in range(5)]
    assert uuid.UUID(after[0]) > max(uuid.UUID(i) for i in before)
    rows = [r for page in walk_dialog(conn, dialog, 7) for r in page]
    assert [str(r[ID]) for r in rows] == before + after
    assert [r[ID] for r in rows] == sorted(r[ID] for r in rows)
    # Nothing was written to the source after the bucket left it: what it still
    # holds of the bucket (until vshard's garbage collector runs) is what moved.
    assert set(cluster.rows_of_bucket(cluster.master(source), "dialogs", bucket)) <= set(before)

    # Back to the source: the router, which saw the bucket on the target last, reads
    # it all the same (where the router takes raw replies, the target's refusal comes
    # back as a value and the call is made again the ordinary way).
    cluster.move(bucket, source)
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == before + after


# An inbox entry and a totals row of `bucket`, as the inbox keeps them
# (docs/inbox.md, "The model"), written by hand on a storage's master. (An outbox
# row would be delivered and deleted by the drainer meanwhile: test_sharded_inbox
# moves those with their bucket.)
INBOX_ROWS_LUA = ("(function(user, bucket) local u = require('uuid') user = u.fromstr(user) "
                  f"local none = u.fromstr('{NIL_UUID}') "
                  "box.space.dialogs_inbox:insert{user, u.new(), u.new(), u.new(), u.new(), "
                  "'moves with its bucket', 1, none, none, bucket} "
                  "box.space.dialogs_inbox_totals:insert{user, 1, 1, bucket} end)")


def test_the_inbox_rows_move_with_their_bucket(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    user = new_user()
    # A user's inbox lives in the bucket of the user's id (the dialogs' hash).
    bucket = bucket_id(user)
    source = cluster.where(bucket)
    target = "s2" if source == "s1" else "s1"
    cluster.eval(cluster.master(source), f"{INBOX_ROWS_LUA}('{user}', {bucket})")
    spaces = ("dialogs_inbox", "dialogs_inbox_totals")
    held = {s: cluster.rows_of_bucket(cluster.master(source), s, bucket) for s in spaces}
    assert held["dialogs_inbox"] == [str(user)]
    assert held["dialogs_inbox_totals"] == [str(user)]

    cluster.move(bucket, target)
    for space in spaces:
        assert cluster.rows_of_bucket(cluster.master(target), space, bucket) == held[space]
    entry = cluster.eval(cluster.master(target),
                         f"box.space.dialogs_inbox.index.activity:select{{require('uuid')"
                         f".fromstr('{user}')}}[1]")
    assert entry[5] == "moves with its bucket" and entry[9] == bucket


def test_ids_stay_ordered_after_a_storage_failover(make_cluster):
    cluster = make_cluster({"s1": 2, "s2": 1})
    conn = cluster.connect()
    # Dialogs of each replica set, by where their buckets are.
    pairs = {"s1": [], "s2": []}
    while min(len(v) for v in pairs.values()) < 3:
        a, b = new_user(), new_user()
        rs = cluster.where(bucket_id(derived_dialog_id(a, b)))
        if len(pairs[rs]) < 3:
            pairs[rs].append((a, b))
    sent = {}
    for rs, ps in pairs.items():
        for a, b in ps:
            sent[(a, b)] = [new_dialog(conn, None, a, b, f"before {i}") for i in range(10)]
    cluster.wait_replicated("s1")

    old_master, replica = cluster.replicasets["s1"]
    old_master.kill()
    # The other replica set goes on writing; s1's dialogs can still be read.
    for a, b in pairs["s2"]:
        sent[(a, b)].append(new_dialog(conn, None, a, b, "while s1 fails over"))
    for a, b in pairs["s1"]:
        rows, _ = retrying(lambda: get_dialog(conn, derived_dialog_id(a, b)), timeout=30)
        assert [str(r[ID]) for r in rows] == sent[(a, b)]
    cluster.promote(replica)
    for a, b in pairs["s1"]:
        rid = str(uuid.uuid4())
        msg, codes = retrying(lambda: new_dialog(conn, None, a, b, "after failover",
                                                 {"request_id": rid}), timeout=60)
        assert set(codes) <= {UNAVAILABLE}, codes
        sent[(a, b)].append(msg)
    for (a, b), ids in sent.items():
        rows = get_dialog(conn, derived_dialog_id(a, b))
        assert [str(r[ID]) for r in rows] == ids
        assert [r[ID] for r in rows] == sorted(r[ID] for r in rows)
