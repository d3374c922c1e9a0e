"""The inbox through a router (docs/sharding.md, "The inbox across replica sets").

A conversation whose dialog lives on one replica set and whose users' inboxes on
the other: list_dialogs, mark_read and the read receipts through the router give
what a single store gives for the same calls, once the outboxes have delivered;
bad calls get the single store's errors; the recount finds no drift, and finds and
repairs drift made by hand; deliveries waiting in an outbox while the dialog's and
the users' buckets move are delivered once. Needs vshard; skipped without it.
"""

from __future__ import annotations

import time
import uuid

from dialogs_api import derived_dialog_id, expect_error, new_dialog, new_user
from harness import ADMIN_SOCKET_NAME, wait_until
from sharded import (DRAIN_TIMEOUT_S, build_inbox, build_inboxes, list_dialogs, make_cluster,  # noqa: F401
                     mark_read, needs_vshard, no_drift, outbox_backlog, owners, recount)
from test_sharded import bucket_id, outcome

pytestmark = needs_vshard

NOT_IN_DIALOG = 1013
RETRY = 1014


def user_on(where: dict, rs: str) -> uuid.UUID:
    """A new user whose inbox (their bucket) lives on replica set `rs`."""
    while True:
        u = new_user()
        if where[bucket_id(u)] == rs:
            return u


def pair_with_dialog_on(where: dict, a_rs: str, b_rs: str, dialog_rs: str):
    """Users a (inbox on a_rs) and b (on b_rs) whose derived dialog is on dialog_rs."""
    while True:
        a, b = user_on(where, a_rs), user_on(where, b_rs)
        if where[bucket_id(derived_dialog_id(a, b))] == dialog_rs:
            return a, b


def v7_millis(message_id: str) -> int:
    """The Unix milliseconds a message id (a UUIDv7) carries."""
    return uuid.UUID(message_id).int >> 80


def normalised(value, names: dict):
    """A reply with every message id replaced by its name in `names` (ids differ
    between two stores; everything else must not)."""
    if isinstance(value, dict):
        return {k: normalised(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalised(v, names) for v in value]
    if isinstance(value, uuid.UUID) and str(value) in names:
        return names[str(value)]
    if isinstance(value, str) and value in names:
        return names[value]
    return value


def delivered(conn, user, dialog, last_id) -> bool:
    """Whether `user`'s list shows `dialog` with `last_id` as its last message."""
    for e in list_dialogs(conn, user, {"limit": 100})["dialogs"]:
        if e["dialog_id"] == dialog:
            return str(e["last_id"]) == str(last_id)
    return False


def receipt(conn, user, dialog):
    for e in list_dialogs(conn, user, {"limit": 100})["dialogs"]:
        if e["dialog_id"] == dialog:
            return e.get("peer_read_id")
    return None


def bad_inbox_calls(a: str, d: str, other_message: str) -> list:
    """Calls every store refuses (README, "Errors"), with their arguments."""
    return [
        ("list_dialogs", []),
        ("list_dialogs", [None]),
        ("list_dialogs", ["zzz"]),
        ("list_dialogs", ["00000000-0000-0000-0000-000000000000"]),
        ("list_dialogs", [a, {"limit": 0}]),
        ("list_dialogs", [a, {"limit": 101}]),
        ("list_dialogs", [a, {"limit": "5"}]),
        ("list_dialogs", [a, {"before": "zzz"}]),
        ("list_dialogs", [a, {"bogus": 1}]),
        ("list_dialogs", [a, "opts"]),
        ("list_dialogs", [a, {}, 1]),
        ("mark_read", []),
        ("mark_read", [a, d]),
        ("mark_read", [a, d, "zzz"]),
        ("mark_read", [a, None, other_message]),
        ("mark_read", ["zzz", d, other_message]),
        ("mark_read", [a, d, other_message, 1]),
        # A message of another dialog, and a message that does not exist.
        ("mark_read", [a, d, other_message]),
        ("mark_read", [a, d, str(uuid.uuid4())]),
    ]


def converse(conn, a, b, c) -> list:
    """The conversation both stores get: (name, call, args) in order; new_dialog's
    ids are named m1, m2, ... by the caller."""
    d_ab, d_ac = derived_dialog_id(a, b), derived_dialog_id(a, c)
    return [
        ("m1", "new_dialog", [None, str(a), str(b), "hi b"]),
        ("m2", "new_dialog", [None, str(a), str(b), "are you there?"]),
        ("m3", "new_dialog", [None, str(b), str(a), "yes"]),
        ("m4", "new_dialog", [None, str(a), str(c), "hi c"]),
        ("m5", "new_dialog", [None, str(a), str(a), "a note to self"]),
        ("m6", "new_dialog", [None, str(c), str(a), "hello a"]),
        ("m7", "new_dialog", [str(d_ab), str(a), str(b), "one more"]),
        ("m8", "new_dialog", [d_ab, a, b, "and another"]),
    ], d_ab, d_ac


def test_the_inbox_through_a_router_is_the_single_stores(make_cluster, make_server):
    cluster = make_cluster({"s1": 1, "s2": 1})
    build_inboxes(cluster)
    single = make_server("single", start=False)
    single.env["DIALOGS_ADMIN_SOCKET"] = str(single.base_dir / ADMIN_SOCKET_NAME)
    single.start()
    build_inbox(single)
    via_router, direct = cluster.connect(), single.connect()
    where = owners(cluster)
    # The dialog of a and b on s1, both inboxes on s2; c's inbox on s1 and the
    # dialog of a and c on s2.
    a, b = pair_with_dialog_on(where, "s2", "s2", "s1")
    while True:
        c = user_on(where, "s1")
        if where[bucket_id(derived_dialog_id(a, c))] == "s2":
            break
    calls, d_ab, d_ac = converse(via_router, a, b, c)
    names = {"router": {}, "direct": {}}
    ids = {"router": {}, "direct": {}}
    for name, proc, args in calls:
        for side, conn in (("router", via_router), ("direct", direct)):
            got = outcome(conn, proc, args)
            assert got[0] == "ok", (side, name, got)
            value = got[1][0]
            msg = value[0] if isinstance(value, list) else value
            names[side][msg] = name
            ids[side][name] = msg
        # The next message gets a later millisecond: two replica sets' ids of one
        # millisecond may order either way, the lists' order with them.
        wait_until(lambda: time.time() * 1000 > v7_millis(ids["router"][name]) + 1, 5,
                   "the next millisecond")
    d_self = derived_dialog_id(a, a)
    last = {(a, d_ab): "m8", (b, d_ab): "m8", (a, d_ac): "m6", (c, d_ac): "m6",
            (a, d_self): "m5"}
    for (user, dialog), name in last.items():
        wait_until(lambda: delivered(via_router, user, dialog, ids["router"][name]),
                   DRAIN_TIMEOUT_S, f"{name} in {user}'s list")

    def same(proc, args_of):
        got = outcome(via_router, proc, args_of("router"))
        want = outcome(direct, proc, args_of("direct"))
        assert normalised(got, names["router"]) == normalised(want, names["direct"]), \
            (proc, args_of("direct"))
        return got

    # Every list and page, the same on both.
    for user in (a, b, c):
        for opts in (None, {}, {"limit": 1}, {"limit": 2}, {"limit": 100}):
            same("list_dialogs", lambda side: [str(user)] + ([] if opts is None else [opts]))
        same("list_dialogs", lambda side: [str(user), {"limit": 1, "before": ids[side]["m6"]}])
    page = list_dialogs(via_router, a)
    assert [e["dialog_id"] for e in page["dialogs"]] == [d_ab, d_ac, d_self]
    assert [e["unread"] for e in page["dialogs"]] == [0, 1, 0]
    assert page["unread_messages"] == 1 and page["unread_dialogs"] == 1
    assert list_dialogs(via_router, b)["unread_messages"] == 2

    # mark_read: forward, stale, to the end; by the dialog's uuid or its string.
    for args_of in (lambda s: [str(b), str(d_ab), ids[s]["m7"]],
                    lambda s: [str(b), str(d_ab), ids[s]["m1"]],
                    lambda s: [str(b), d_ab, uuid.UUID(ids[s]["m8"])],
                    lambda s: [str(a), str(d_ac), ids[s]["m4"]],
                    lambda s: [str(a), str(d_ac), ids[s]["m6"]]):
        same("mark_read", args_of)
    assert mark_read(via_router, b, d_ab, ids["router"]["m8"]) == 0
    # The receipts reach a (b read m8) and c (a read m6).
    wait_until(lambda: str(receipt(via_router, a, d_ab)) == ids["router"]["m8"],
               DRAIN_TIMEOUT_S, "b's receipt in a's list")
    wait_until(lambda: str(receipt(via_router, c, d_ac)) == ids["router"]["m6"],
               DRAIN_TIMEOUT_S, "a's receipt in c's list")
    for user in (a, b, c):
        same("list_dialogs", lambda side: [str(user)])

    # Refusals: the same code and message, word for word.
    for proc, args in bad_inbox_calls(str(a), str(d_ab), ids["router"]["m4"]):
        got = outcome(via_router, proc, args)
        want = outcome(direct, proc, [ids["direct"]["m4"] if x == ids["router"]["m4"] else x
                                      for x in args])
        assert got[0] == "error", (proc, args, got)
        assert normalised(got, names["router"]) == normalised(want, names["direct"]), \
            (proc, args)
    assert outcome(via_router, "mark_read", [str(c), str(d_ab), ids["router"]["m1"]])[:2] \
        == ("error", NOT_IN_DIALOG)

    report = recount(cluster)
    assert no_drift(report), report
    assert report["entries"] == 5


def test_the_recount_finds_and_repairs_drift(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    build_inboxes(cluster)
    conn = cluster.connect()
    where = owners(cluster)
    a, b = pair_with_dialog_on(where, "s1", "s2", "s1")
    d = derived_dialog_id(a, b)
    last = [new_dialog(conn, None, a, b, f"m{i}") for i in range(3)][-1]
    wait_until(lambda: delivered(conn, b, d, last), DRAIN_TIMEOUT_S, "the delivery")
    assert no_drift(recount(cluster))
    before = {u: list_dialogs(conn, u) for u in (a, b)}

    # By hand: b's unread count and totals wrong, a's entry gone, an entry of a
    # dialog without messages.
    s1, s2 = cluster.master("s1"), cluster.master("s2")
    cluster.eval(s2, f"box.space.dialogs_inbox:update({{require('uuid').fromstr('{b}'), "
                     f"require('uuid').fromstr('{d}')}}, {{{{'=', 7, 7}}}}) and true")
    cluster.eval(s2, f"box.space.dialogs_inbox_totals:update(require('uuid').fromstr('{b}'), "
                     "{{'=', 2, 9}}) and true")
    cluster.eval(s1, f"box.space.dialogs_inbox:delete({{require('uuid').fromstr('{a}'), "
                     f"require('uuid').fromstr('{d}')}}) and true")
    stray = uuid.uuid4()
    cluster.eval(s1, f"box.space.dialogs_inbox:insert{{require('uuid').fromstr('{a}'), "
                     f"require('uuid').fromstr('{stray}'), require('uuid').fromstr('{b}'), "
                     f"require('uuid').fromstr('{last}'), require('uuid').fromstr('{b}'), "
                     f"'x', 0, require('uuid').fromstr('00000000-0000-0000-0000-000000000000'), require('uuid').fromstr('00000000-0000-0000-0000-000000000000'), "
                     f"{bucket_id(a)}}} and true")
    report = recount(cluster)
    assert (report["wrong"], report["missing"], report["extra"], report["totals_wrong"]) \
        == (1, 1, 1, 1), report
    assert report["backlog"] == 0
    # Reported only: nothing changed.
    assert recount(cluster)["wrong"] == 1
    repaired = recount(cluster, repair=True)
    assert repaired["repaired"] is True
    assert no_drift(recount(cluster))
    assert {u: list_dialogs(conn, u) for u in (a, b)} == before


def test_deliveries_waiting_while_buckets_move_arrive_once(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    build_inboxes(cluster)
    conn = cluster.connect()
    where = owners(cluster)
    a, b = pair_with_dialog_on(where, "s2", "s1", "s1")
    d = derived_dialog_id(a, b)
    s1 = cluster.master("s1")
    first = new_dialog(conn, None, a, b, "before")
    wait_until(lambda: delivered(conn, a, d, first), DRAIN_TIMEOUT_S, "the first delivery")
    # (Its row is deleted just after the delivery.)
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the first row's deletion")

    # s1 delivers nothing for a while: its outbox keeps the rows.
    cluster.eval(s1, "require('dialogs.outbox').stop() or true")
    sent = [new_dialog(conn, None, b if i % 2 else a, a if i % 2 else b, f"m{i}")
            for i in range(6)]
    assert cluster.eval(s1, "box.space.dialogs_outbox:len()") == 6
    # The dialog's bucket goes to s2 with its outbox rows, and a's inbox to s1.
    cluster.move(bucket_id(d), "s2")
    cluster.move(bucket_id(a), "s1")
    assert cluster.eval(cluster.master("s2"), "box.space.dialogs_outbox:len()") == 6
    # s2 delivers them; b's inbox is still on s1, a's now too.
    wait_until(lambda: delivered(conn, a, d, sent[-1]) and delivered(conn, b, d, sent[-1]),
               DRAIN_TIMEOUT_S, "the deliveries after the moves")
    cluster.eval(s1, "require('dialogs.outbox').start() or true")
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the outboxes to drain")
    entries = {str(u): [e for e in list_dialogs(conn, u)["dialogs"] if e["dialog_id"] == d][0]
               for u in (a, b)}
    # Every message counted once: b sent the last one, a has the one before unread.
    assert entries[str(b)]["unread"] == 0
    assert entries[str(a)]["unread"] == 1
    report = recount(cluster)
    assert no_drift(report), report


def test_the_outbox_reports_its_state(make_cluster):
    cluster = make_cluster({"s1": 1})
    build_inboxes(cluster)
    conn = cluster.connect()
    a, b = new_user(), new_user()
    m = new_dialog(conn, None, a, b, "hi")
    wait_until(lambda: delivered(conn, b, derived_dialog_id(a, b), m), DRAIN_TIMEOUT_S,
               "the delivery")
    # The row is deleted (and counted) just after the delivery is applied.
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the row's deletion")
    info = cluster.eval(cluster.master("s1"), "require('dialogs.outbox').info()")
    assert info["backlog"] == 0
    assert info["delivered"] >= 1 and info["events"] >= 2, info
    assert info["draining"] is True
    assert info.get("oldest_age_s") is None  # nothing waits
    assert info["failures"] == 0
    # A waiting row has an age.
    cluster.eval(cluster.master("s1"), "require('dialogs.outbox').stop() or true")
    new_dialog(conn, None, b, a, "a reply")
    info = cluster.eval(cluster.master("s1"), "require('dialogs.outbox').info()")
    assert info["backlog"] == 1 and info["draining"] is False
    assert 0 <= info["oldest_age_s"] < 3600


def one_round(cluster, conn, where, count: int) -> tuple:
    """`count` conversations whose dialogs live on s1, the senders' inboxes on s1
    and the recipients' on s2, written while s1's drainer is stopped and then
    delivered by it: the change of its info() counters, and the recipients'
    buckets."""
    s1 = cluster.master("s1")
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the outboxes to drain")
    cluster.eval(s1, "require('dialogs.outbox').stop() or true")
    pairs = [pair_with_dialog_on(where, "s1", "s2", "s1") for _ in range(count)]
    sent = [new_dialog(conn, None, a, b, f"m{i}") for i, (a, b) in enumerate(pairs)]
    assert cluster.eval(s1, "box.space.dialogs_outbox:len()") == count
    info = "require('dialogs.outbox').info()"
    before = cluster.eval(s1, info)
    cluster.eval(s1, "require('dialogs.outbox').start() or true")
    for (a, b), m in zip(pairs, sent):
        d = derived_dialog_id(a, b)
        wait_until(lambda: delivered(conn, a, d, m) and delivered(conn, b, d, m),
                   DRAIN_TIMEOUT_S, "the deliveries")
    wait_until(lambda: outbox_backlog(cluster) == 0, DRAIN_TIMEOUT_S, "the rows' deletion")
    after = cluster.eval(s1, info)
    change = {k: after[k] - before[k]
              for k in ("rounds", "batch_calls", "local_batches", "bucket_calls", "events",
                        "delivered", "failures")}
    return change, {bucket_id(b) for _, b in pairs}


def test_a_rounds_deliveries_to_a_replica_set_are_one_call(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    build_inboxes(cluster)
    conn = cluster.connect()
    where = owners(cluster)
    change, buckets = one_round(cluster, conn, where, 10)
    assert len(buckets) > 1
    # One round: the recipients' ten events in one call to s2, the senders'
    # applied in place in one transaction, no call for one bucket.
    assert change == {"rounds": 1, "batch_calls": 1, "local_batches": 1, "bucket_calls": 0,
                      "events": 20, "delivered": 10, "failures": 0}, change

    # A master without the batch entry (a storage of an earlier release): the
    # batch is refused whole, and each of its buckets gets its own call.
    cluster.eval(cluster.master("s2"),
                 "box.schema.func.drop('dialogs_storage_inbox_apply_many') or true")
    change, buckets = one_round(cluster, conn, where, 5)
    assert change == {"rounds": 1, "batch_calls": 1, "local_batches": 1,
                      "bucket_calls": len(buckets), "events": 10, "delivered": 5,
                      "failures": 0}, change
    assert "the batch did not run" in cluster.master("s1").log_of_run()
    report = recount(cluster)
    assert no_drift(report), report


def test_mark_read_gives_up_with_1014_when_the_entry_keeps_changing(make_cluster):
    cluster = make_cluster({"s1": 1})
    build_inboxes(cluster)
    conn = cluster.connect()
    a, b = new_user(), new_user()
    d = derived_dialog_id(a, b)
    m = new_dialog(conn, None, a, b, "hi")
    wait_until(lambda: delivered(conn, b, d, m), DRAIN_TIMEOUT_S, "the delivery")
    # An entry whose last message is newer than any the count can reach: every
    # round's count is refused, as if a delivery kept coming in between.
    s1 = cluster.master("s1")
    cluster.eval(s1, f"box.space.dialogs_inbox:update({{require('uuid').fromstr('{b}'), "
                     f"require('uuid').fromstr('{d}')}}, {{{{'=', 4, require('uuid')"
                     ".fromstr('ffffffff-ffff-7fff-bfff-ffffffffffff')}}) and true")
    before = list_dialogs(conn, b)
    expect_error(lambda: mark_read(conn, b, d, m), RETRY,
                 "mark_read: the dialog kept changing; retry")
    assert list_dialogs(conn, b) == before
