//! The inbox's in-Tarantool tests: `list_dialogs` and `mark_read` as a client
//! sees them, the inline upkeep of `new_dialog`, the build from stored messages,
//! and the storage entries' checks (docs/inbox.md).

use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    assert_refused, call, count, lua_bool, lua_exec, lua_u64, q, send, stored_bucket_count, user,
    BucketSpace, Outcome,
};
use crate::bucket::bucket_id;
use crate::error::code;
use crate::ids::{key_dialog, pair_dialog};

/// Builds the inbox from the stored messages, as schema version 5 does, until
/// the walk is complete: the upkeep of new messages is on from then.
fn ensure_built() {
    lua_exec(
        "local f = box.func.dialogs_inbox_build local after = nil \
         repeat after = f:call{after, 1000} until after == nil",
    );
    assert!(lua_bool(
        "box.space._schema:get{'dialogs_inbox_built'}[2] == true"
    ));
}

/// `list_dialogs(user, opts)`'s one map.
fn list(user: Uuid, opts: &str) -> Json {
    let values = call("list_dialogs", &format!("{{{}, {opts}}}", q(&user))).ok();
    assert_eq!(values.len(), 1, "one return value: {values:?}");
    values.into_iter().next().unwrap_or_default()
}

/// The entries of a `list_dialogs` reply.
fn entries(reply: &Json) -> Vec<Json> {
    reply["dialogs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("dialogs is a list: {reply}"))
}

/// The user's entry for `dialog`, from the first page of 100.
fn entry(user: Uuid, dialog: Uuid) -> Json {
    entries(&list(user, "{limit = 100}"))
        .into_iter()
        .find(|e| e["dialog_id"] == Json::String(dialog.to_string()))
        .unwrap_or_else(|| panic!("no entry of {user} for {dialog}"))
}

/// The badge: (unread_messages, unread_dialogs).
fn totals(user: Uuid) -> (u64, u64) {
    let r = list(user, "{limit = 1}");
    (
        r["unread_messages"].as_u64().expect("a count"),
        r["unread_dialogs"].as_u64().expect("a count"),
    )
}

fn s(id: Uuid) -> Json {
    Json::String(id.to_string())
}

/// `mark_read(user, dialog, up_to)`'s unread count.
fn mark(user: Uuid, dialog: Uuid, up_to: Uuid) -> u64 {
    let values = call(
        "mark_read",
        &format!("{{{}, {}, {}}}", q(&user), q(&dialog), q(&up_to)),
    )
    .ok();
    assert_eq!(values.len(), 1, "one return value: {values:?}");
    values[0].as_u64().expect("an unsigned count")
}

#[tarantool::test]
fn a_note_to_self_appears_once_and_is_read() {
    ensure_built();
    let a = user();
    let m1 = send(None, a, a, "remember the milk");
    let m2 = send(None, a, a, "and the bread");
    let reply = list(a, "{}");
    let got = entries(&reply);
    assert_eq!(got.len(), 1, "{reply}");
    let e = &got[0];
    assert_eq!(e["dialog_id"], s(pair_dialog(a, a)));
    assert_eq!(e["peer_id"], s(a));
    assert_eq!(e["last_id"], s(m2));
    assert_eq!(e["last_from"], s(a));
    assert_eq!(e["last_text"], "and the bread");
    assert_eq!(e["unread"], 0);
    assert_eq!(e["read_id"], s(m2));
    assert_eq!(e["peer_read_id"], Json::Null);
    assert_eq!(totals(a), (0, 0));
    assert_ne!(m1, m2);
}

#[tarantool::test]
fn a_conversation_gives_both_users_their_entry() {
    ensure_built();
    let (a, b) = (user(), user());
    let d = pair_dialog(a, b);
    let m1 = send(None, a, b, "hi");
    let m2 = send(None, a, b, "are you there?");
    let eb = entry(b, d);
    assert_eq!(
        (
            &eb["peer_id"],
            &eb["last_id"],
            &eb["last_from"],
            &eb["unread"]
        ),
        (&s(a), &s(m2), &s(a), &Json::from(2))
    );
    assert_eq!(eb["last_text"], "are you there?");
    assert_eq!(eb["read_id"], Json::Null);
    // A has read up to its own message: B sees the receipt.
    assert_eq!(eb["peer_read_id"], s(m2));
    let ea = entry(a, d);
    assert_eq!(
        (&ea["peer_id"], &ea["unread"], &ea["read_id"]),
        (&s(b), &Json::from(0), &s(m2))
    );
    assert_eq!(ea["peer_read_id"], Json::Null);
    assert_eq!((totals(a), totals(b)), ((0, 0), (2, 1)));
    // B replies: its unread goes, A sees that B read up to its reply.
    let m3 = send(None, b, a, "yes");
    let eb = entry(b, d);
    assert_eq!((&eb["unread"], &eb["read_id"]), (&Json::from(0), &s(m3)));
    let ea = entry(a, d);
    assert_eq!(
        (&ea["unread"], &ea["peer_read_id"], &ea["last_from"]),
        (&Json::from(1), &s(m3), &s(b))
    );
    assert_eq!((totals(a), totals(b)), ((1, 1), (0, 0)));
    assert!(m1 < m2 && m2 < m3);
}

#[tarantool::test]
fn the_reply_holds_msgpack_uuids_and_nil_cursors() {
    ensure_built();
    let (a, b) = (user(), user());
    send(None, a, b, "typed");
    let check = format!(
        "(function() local function is_uuid(v) return type(v) == 'cdata' \
         and #tostring(v) == 36 end \
         local r = box.func.list_dialogs:call{{'{b}'}} local e = r.dialogs[1] \
         return is_uuid(e.dialog_id) and is_uuid(e.peer_id) \
         and is_uuid(e.last_id) and is_uuid(e.last_from) \
         and is_uuid(e.peer_read_id) and e.read_id == nil and r.next == nil \
         and type(e.unread) == 'number' end)()"
    );
    assert!(lua_bool(&check));
}

#[tarantool::test]
fn dialogs_come_most_recent_first_in_pages() {
    ensure_built();
    let me = user();
    let peers: Vec<Uuid> = (0..5).map(|_| user()).collect();
    let mut last = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        last.push(send(None, *p, me, &format!("from peer {i}")));
    }
    // The first dialog comes back to the top with a new message.
    last[0] = send(None, me, peers[0], "back to you");
    let order: Vec<Json> = [0usize, 4, 3, 2, 1].iter().map(|&i| s(last[i])).collect();
    let mut seen = Vec::new();
    let mut before: Option<Json> = None;
    let mut pages = 0;
    loop {
        let opts = match &before {
            None => "{limit = 2}".to_owned(),
            Some(b) => format!("{{limit = 2, before = '{}'}}", b.as_str().unwrap()),
        };
        let reply = list(me, &opts);
        let page = entries(&reply);
        pages += 1;
        seen.extend(page.iter().map(|e| e["last_id"].clone()));
        if page.len() == 2 {
            assert_eq!(reply["next"], page[1]["last_id"], "{reply}");
        } else {
            assert_eq!(reply["next"], Json::Null, "{reply}");
        }
        if reply["next"].is_null() {
            break;
        }
        before = Some(reply["next"].clone());
    }
    assert_eq!(seen, order);
    assert_eq!(pages, 3);
    // Without options: all five, the default limit being 20.
    assert_eq!(entries(&list(me, "{}")).len(), 5);
    assert_eq!(list(me, "{}")["next"], Json::Null);
    assert_eq!(totals(me), (4, 4));
}

#[tarantool::test]
fn totals_add_up_over_dialogs() {
    ensure_built();
    let me = user();
    let (p1, p2, p3) = (user(), user(), user());
    let mut m = Vec::new();
    for _ in 0..2 {
        m.push(send(None, p1, me, "one"));
    }
    for _ in 0..3 {
        send(None, p2, me, "two");
    }
    send(None, p3, me, "three");
    send(None, me, p3, "answered");
    assert_eq!(totals(me), (5, 2));
    assert_eq!(mark(me, pair_dialog(me, p1), m[0]), 1);
    assert_eq!(totals(me), (4, 2));
    assert_eq!(mark(me, pair_dialog(me, p1), m[1]), 0);
    assert_eq!(totals(me), (3, 1));
    // Each peer sees its own unread as nothing.
    assert_eq!(totals(p1), (0, 0));
}

#[tarantool::test]
fn mark_read_moves_forward_only() {
    ensure_built();
    let (a, b) = (user(), user());
    let d = pair_dialog(a, b);
    let m: Vec<Uuid> = (0..4).map(|i| send(None, a, b, &format!("m{i}"))).collect();
    assert_eq!(entry(b, d)["unread"], 4);
    // Partial: the messages after the cursor stay unread.
    assert_eq!(mark(b, d, m[1]), 2);
    assert_eq!(entry(b, d)["read_id"], s(m[1]));
    assert_eq!(totals(b), (2, 1));
    // Repeated and stale: nothing changes, the count is the current one.
    assert_eq!(mark(b, d, m[1]), 2);
    assert_eq!(mark(b, d, m[0]), 2);
    assert_eq!(entry(b, d)["read_id"], s(m[1]));
    // The receipt reaches A's entry: B read up to m1.
    assert_eq!(entry(a, d)["peer_read_id"], s(m[1]));
    // A reads its own message: allowed (one of A's in this dialog), changes
    // nothing (A read it by sending it).
    assert_eq!(mark(a, d, m[2]), 0);
    // B reads everything.
    assert_eq!(mark(b, d, m[3]), 0);
    assert_eq!(totals(b), (0, 0));
    // A new message after the cursor is unread again.
    let m4 = send(None, a, b, "m4");
    assert_eq!(entry(b, d)["unread"], 1);
    assert_eq!(mark(b, d, m4), 0);
    // A dialog key works as the dialog_id, as in the other procedures.
    let key = "mark-read-by-key";
    let kd = key_dialog(key);
    let c = user();
    let k1 = send(Some(kd), a, c, "keyed");
    let values = call("mark_read", &format!("{{{}, '{key}', {}}}", q(&c), q(&k1))).ok();
    assert_eq!(values, vec![Json::from(0)]);
}

#[tarantool::test]
fn the_receipt_follows_the_reader_to_the_peer() {
    ensure_built();
    let (a, b) = (user(), user());
    let d = pair_dialog(a, b);
    let m1 = send(None, b, a, "question");
    let m2 = send(None, a, b, "answer");
    // B has not read A's answer: A's entry shows B read up to its own question.
    assert_eq!(entry(a, d)["peer_read_id"], s(m1));
    assert_eq!(mark(b, d, m2), 0);
    assert_eq!(entry(a, d)["peer_read_id"], s(m2));
    assert_eq!(entry(a, d)["unread"], 0);
}

#[tarantool::test]
fn mark_read_refuses_a_message_that_is_not_the_users() {
    ensure_built();
    let (a, b, c) = (user(), user(), user());
    let d = pair_dialog(a, b);
    send(None, a, b, "ours");
    let elsewhere = send(None, a, c, "another dialog of a");
    let others = send(None, c, user(), "another pair");
    // A message of another pair in the same dialog (named by a key).
    let kd = key_dialog("a key dialog of others");
    let theirs = send(Some(kd), c, user(), "theirs");
    send(Some(kd), a, b, "ours too");
    let msg = "up_to_id: not a message of this user in this dialog";
    for (dialog, up_to) in [(d, elsewhere), (d, others), (kd, theirs), (d, user())] {
        let before = lua_u64("box.space.dialogs_inbox:len()");
        assert_refused(
            "mark_read",
            &format!("{{{}, {}, {}}}", q(&b), q(&dialog), q(&up_to)),
            code::NOT_IN_DIALOG,
            msg,
        );
        assert_eq!(lua_u64("box.space.dialogs_inbox:len()"), before);
    }
    assert_eq!(entry(b, d)["unread"], 1);
}

#[tarantool::test]
fn a_retried_request_counts_once() {
    ensure_built();
    let (a, b, r) = (user(), user(), user());
    let args = format!(
        "{{box.NULL, {}, {}, 'once', {{request_id = {}}}}}",
        q(&a),
        q(&b),
        q(&r)
    );
    let first = call("new_dialog", &args).ok();
    let again = call("new_dialog", &args).ok();
    assert_eq!(first, again);
    assert_eq!(entry(b, pair_dialog(a, b))["unread"], 1);
    assert_eq!(totals(b), (1, 1));
}

#[tarantool::test]
fn sending_resets_the_senders_unread() {
    ensure_built();
    let (a, b) = (user(), user());
    let d = pair_dialog(a, b);
    for i in 0..3 {
        send(None, a, b, &format!("ping {i}"));
    }
    assert_eq!(totals(b), (3, 1));
    let reply = send(None, b, a, "pong");
    let eb = entry(b, d);
    assert_eq!((&eb["unread"], &eb["read_id"]), (&Json::from(0), &s(reply)));
    assert_eq!(totals(b), (0, 0));
}

#[tarantool::test]
fn a_message_inside_a_callers_rolled_back_transaction_leaves_no_entry() {
    ensure_built();
    let (a, b) = (user(), user());
    lua_exec("box.begin()");
    let inside = call(
        "new_dialog",
        &format!("{{box.NULL, {}, {}, 'undone'}}", q(&a), q(&b)),
    );
    lua_exec("box.rollback()");
    assert!(matches!(inside, Outcome::Ok(_)), "{inside:?}");
    assert!(entries(&list(b, "{}")).is_empty());
    assert_eq!(totals(b), (0, 0));
}

/// The build over stored messages gives every entry and total what the inline
/// upkeep gave it: the conversation is written with the upkeep on, its rows are
/// dropped with the built flag (the upkeep off, as before version 5), a message
/// is written meanwhile, and the build is walked to its end.
#[tarantool::test]
fn the_build_gives_what_the_upkeep_gave() {
    ensure_built();
    let (a, b, c, n) = (user(), user(), user(), user());
    send(None, a, b, "one");
    send(None, b, a, "two");
    send(None, a, b, "three");
    send(None, a, c, "to c");
    send(None, c, a, "from c");
    send(None, c, a, "again from c");
    send(None, n, n, "a note");
    let users = [a, b, c, n];
    let before: Vec<Json> = users.iter().map(|u| list(*u, "{}")).collect();
    let drop_rows = |u: &Uuid| {
        lua_exec(&format!(
            "local u = require('uuid').fromstr('{u}') \
             for _, t in box.space.dialogs_inbox.index.activity:pairs{{u}} do \
             box.space.dialogs_inbox:delete{{t[1], t[2]}} end \
             box.space.dialogs_inbox_totals:delete{{u}}"
        ));
    };
    for u in &users {
        drop_rows(u);
    }
    // The flag gone, and new_dialog's module loaded afresh (it caches the flag
    // once it is set): the upkeep is off, as before version 5.
    lua_exec(
        "box.space._schema:delete{'dialogs_inbox_built'} box.schema.func.reload('new_dialog')",
    );
    // The upkeep is off: a new message reaches no entry.
    let (x, y) = (user(), user());
    send(None, x, y, "while unbuilt");
    assert!(entries(&list(y, "{}")).is_empty());
    assert!(entries(&list(a, "{}")).is_empty());
    // Batches of 2: many calls, each with its position kept in _schema.
    lua_exec(
        "local f = box.func.dialogs_inbox_build local after = nil \
         repeat after = f:call{after, 2} \
         if after ~= nil then assert(box.space._schema:get{'dialogs_inbox_build_after'}[2] \
         == after) end until after == nil",
    );
    assert!(lua_bool(
        "box.space._schema:get{'dialogs_inbox_built'}[2] == true \
         and box.space._schema:get{'dialogs_inbox_build_after'} == nil"
    ));
    let after: Vec<Json> = users.iter().map(|u| list(*u, "{}")).collect();
    assert_eq!(after, before);
    assert_eq!(entry(y, pair_dialog(x, y))["unread"], 1);
    // And the upkeep is on again.
    send(None, x, y, "built");
    assert_eq!(entry(y, pair_dialog(x, y))["unread"], 2);
}

#[tarantool::test]
fn every_bad_list_dialogs_call_is_refused() {
    let a = q(&user());
    let signature = "list_dialogs: expected 1 or 2 arguments (user_id [, opts])";
    let cases: Vec<(String, u32, String)> = vec![
        ("{}".into(), code::BAD_ARITY, format!("{signature}, got 0")),
        (
            format!("{{{a}, {{}}, 1}}"),
            code::BAD_ARITY,
            format!("{signature}, got 3"),
        ),
        (
            "{42}".into(),
            code::BAD_TYPE,
            "user_id: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
        (
            "{box.NULL}".into(),
            code::BAD_TYPE,
            "user_id: expected a uuid (string or msgpack uuid), got nil".into(),
        ),
        (
            "{'abc'}".into(),
            code::BAD_UUID,
            "user_id: malformed uuid \"abc\"".into(),
        ),
        (
            "{'00000000-0000-0000-0000-000000000000'}".into(),
            code::BAD_UUID,
            "user_id: the nil uuid is not a valid id".into(),
        ),
        (
            format!("{{{a}, 'opts'}}"),
            code::BAD_TYPE,
            "opts: expected a map, got string".into(),
        ),
        (
            format!("{{{a}, {{limit = 0}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 100, got 0".into(),
        ),
        (
            format!("{{{a}, {{limit = 101}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 100, got 101".into(),
        ),
        (
            format!("{{{a}, {{limit = -1}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 100, got -1".into(),
        ),
        (
            format!("{{{a}, {{limit = 'x'}}}}"),
            code::BAD_TYPE,
            "opts.limit: expected an integer, got string".into(),
        ),
        (
            format!("{{{a}, {{before = 'x'}}}}"),
            code::BAD_UUID,
            "opts.before: malformed uuid \"x\"".into(),
        ),
        (
            format!("{{{a}, {{before = 1}}}}"),
            code::BAD_TYPE,
            "opts.before: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
        (
            format!("{{{a}, {{after = {a}}}}}"),
            code::BAD_OPTION,
            "opts: unknown option \"after\"".into(),
        ),
    ];
    for (args, code, message) in cases {
        assert_refused("list_dialogs", &args, code, &message);
    }
    // The server goes on.
    assert!(entries(&list(user(), "{}")).is_empty());
}

#[tarantool::test]
fn every_bad_mark_read_call_is_refused() {
    ensure_built();
    let (ua, ub) = (user(), user());
    let m = send(None, ua, ub, "x");
    let (a, d, m) = (q(&ub), q(&pair_dialog(ua, ub)), q(&m));
    let signature = "mark_read: expected 3 arguments (user_id, dialog_id, up_to_id)";
    let cases: Vec<(String, u32, String)> = vec![
        ("{}".into(), code::BAD_ARITY, format!("{signature}, got 0")),
        (
            format!("{{{a}, {d}}}"),
            code::BAD_ARITY,
            format!("{signature}, got 2"),
        ),
        (
            format!("{{{a}, {d}, {m}, {{}}}}"),
            code::BAD_ARITY,
            format!("{signature}, got 4"),
        ),
        (
            format!("{{1, {d}, {m}}}"),
            code::BAD_TYPE,
            "user_id: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
        (
            format!("{{{a}, true, {m}}}"),
            code::BAD_TYPE,
            "dialog_id: expected a uuid (string or msgpack uuid) or a dialog key (string), got boolean".into(),
        ),
        (
            format!("{{{a}, {d}, box.NULL}}"),
            code::BAD_TYPE,
            "up_to_id: expected a uuid (string or msgpack uuid), got nil".into(),
        ),
        (
            format!("{{'x', {d}, {m}}}"),
            code::BAD_UUID,
            "user_id: malformed uuid \"x\"".into(),
        ),
        (
            format!("{{{a}, '{{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}}', {m}}}"),
            code::BAD_UUID,
            "dialog_id: malformed uuid \"{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}\"".into(),
        ),
        (
            format!("{{{a}, {d}, 'not-an-id'}}"),
            code::BAD_UUID,
            "up_to_id: malformed uuid \"not-an-id\"".into(),
        ),
        (
            format!("{{{a}, {d}, '00000000-0000-0000-0000-000000000000'}}"),
            code::BAD_UUID,
            "up_to_id: the nil uuid is not a valid id".into(),
        ),
        (
            format!("{{{a}, '', {m}}}"),
            code::BAD_UUID,
            "dialog_id: a dialog key must be 1 to 255 bytes, got 0".into(),
        ),
    ];
    for (args, code, message) in cases {
        let inbox = lua_u64("box.space.dialogs_inbox:len()");
        assert_refused("mark_read", &args, code, &message);
        assert_eq!(lua_u64("box.space.dialogs_inbox:len()"), inbox, "{args}");
    }
    // The server goes on, and nothing was marked.
    assert_eq!(
        call("mark_read", &format!("{{{a}, {d}, {m}}}")).ok(),
        vec![Json::from(0)]
    );
}

/// Creates the storage entry `name` as the storage does (setuid C).
fn define(name: &str) {
    lua_exec(&format!(
        "box.schema.func.create('{name}', {{language = 'C', setuid = true, \
         if_not_exists = true}})"
    ));
}

/// The storage entries serve their owner's bucket only (1012 otherwise, and
/// nothing written), and do what the router and the drainer count on: a message
/// on a storage is an outbox row; inbox_apply delivers it once; read_count and
/// mark_read_apply move the cursor and leave the receipt in the outbox.
#[tarantool::test]
fn the_storage_entries_serve_their_buckets() {
    ensure_built();
    for name in [
        "dialogs_storage_list",
        "dialogs_storage_inbox_apply",
        "dialogs_storage_read_count",
        "dialogs_storage_mark_read_apply",
    ] {
        define(name);
    }
    let n = stored_bucket_count();
    let (a, b) = (user(), user());
    let d = pair_dialog(a, b);
    let (ba, bb, bd) = (bucket_id(a, n), bucket_id(b, n), bucket_id(d, n));
    let m1 = send(None, a, b, "one");
    let m2 = send(None, a, b, "two");
    let other = |x: u32| x % n + 1;
    let refused = |entry: &str, bucket: u32, usable: &str, why: &str| {
        format!("{entry}: bucket {bucket} is not {usable} here: {why}")
    };
    // No _bucket: not a storage.
    assert_refused(
        "dialogs_storage_list",
        &format!("{{{bb}, {{{}}}}}", q(&b)),
        1012,
        &refused(
            "dialogs_storage_list",
            bb,
            "readable",
            "no _bucket space (not a vshard storage)",
        ),
    );
    let buckets = BucketSpace::create();
    for bucket in [ba, bb, bd] {
        buckets.set(bucket, "active");
    }
    // A message on a storage: an outbox row in the dialog's bucket, no entry.
    let m3 = send(None, a, b, "three");
    assert_eq!(
        lua_u64(&format!(
            "box.space.dialogs_outbox:get{{require('uuid').fromstr('{m3}')}}[2]"
        )),
        u64::from(bd)
    );
    assert!(lua_bool(&format!(
        "box.space.dialogs_outbox:get{{require('uuid').fromstr('{m3}')}}[3] == nil"
    )));
    let listed = call("dialogs_storage_list", &format!("{{{bb}, {{{}}}}}", q(&b))).ok();
    assert_eq!(listed, vec![list(b, "{}")]);
    assert_eq!(entry(b, d)["unread"], 2);
    // The drainer's delivery, applied once however often it comes.
    let event = format!(
        "{{{bb}, {{{{'m', {}, {}, {}, {}, {}, 'three'}}}}}}",
        q(&b),
        q(&m3),
        q(&d),
        q(&a),
        q(&b)
    );
    for _ in 0..2 {
        assert_eq!(
            call("dialogs_storage_inbox_apply", &event).ok(),
            vec![Json::from(1)]
        );
        assert_eq!(entry(b, d)["unread"], 3);
        assert_eq!(entry(b, d)["last_id"], s(m3));
    }
    // Another bucket than the user's: refused, nothing applied.
    let inbox = lua_u64("box.space.dialogs_inbox:len()");
    assert_refused(
        "dialogs_storage_inbox_apply",
        &format!(
            "{{{}, {{{{'r', {}, {}, {}}}}}}}",
            other(bb),
            q(&b),
            q(&d),
            q(&m3)
        ),
        1012,
        &refused(
            "dialogs_storage_inbox_apply",
            other(bb),
            "writable",
            &format!("the user is in bucket {bb}"),
        ),
    );
    assert_eq!(lua_u64("box.space.dialogs_inbox:len()"), inbox);
    // mark_read's count on the dialog's storage: (count, H).
    let count_of = |l: &str| {
        call(
            "dialogs_storage_read_count",
            &format!("{{{bd}, {{{}, {}, {}, {l}}}}}", q(&b), q(&d), q(&m1)),
        )
        .ok()
    };
    assert_eq!(
        count_of("box.NULL"),
        vec![Json::from(vec![Json::from(2), s(m3)])]
    );
    assert_eq!(
        count_of(&q(&m2)),
        vec![Json::from(vec![Json::from(1), s(m2)])]
    );
    assert_refused(
        "dialogs_storage_read_count",
        &format!("{{{}, {{{}, {}, {}}}}}", other(bd), q(&b), q(&d), q(&m1)),
        1012,
        &refused(
            "dialogs_storage_read_count",
            other(bd),
            "readable",
            &format!("the dialog is in bucket {bd}"),
        ),
    );
    assert_refused(
        "dialogs_storage_read_count",
        &format!("{{{bd}, {{{}, {}, {}}}}}", q(&b), q(&d), q(&user())),
        code::NOT_IN_DIALOG,
        "up_to_id: not a message of this user in this dialog",
    );
    // mark_read's write on the user's storage: an H that is not the entry's
    // last id asks for another count up to it; the right one applies.
    let apply = |h: Uuid| {
        call(
            "dialogs_storage_mark_read_apply",
            &format!(
                "{{{bb}, {{{}, {}, {}, 1, {}}}}}",
                q(&b),
                q(&d),
                q(&m1),
                q(&h)
            ),
        )
        .ok()
    };
    assert_eq!(apply(m2), vec![Json::from(vec![Json::Null, s(m3)])]);
    let outbox = lua_u64("box.space.dialogs_outbox:len()");
    assert_eq!(apply(m3), vec![Json::from(vec![Json::from(1), Json::Null])]);
    assert_eq!(entry(b, d)["read_id"], s(m1));
    assert_eq!(entry(b, d)["unread"], 1);
    assert_eq!(totals(b), (1, 1));
    // The receipt for A waits in the outbox, in B's bucket.
    assert_eq!(lua_u64("box.space.dialogs_outbox:len()"), outbox + 1);
    assert!(lua_bool(&format!(
        "(function() for _, t in box.space.dialogs_outbox:pairs() do \
         if t[3] ~= nil and tostring(t[3]) == '{a}' then \
         return t[2] == {bb} and tostring(t[4]) == '{d}' and tostring(t[5]) == '{m1}' \
         end end return false end)()"
    )));
    // Repeated: the cursor is there already, the count is the current one.
    assert_eq!(apply(m3), vec![Json::from(vec![Json::from(1), Json::Null])]);
    assert_eq!(lua_u64("box.space.dialogs_outbox:len()"), outbox + 1);
    assert_refused(
        "dialogs_storage_mark_read_apply",
        &format!(
            "{{{}, {{{}, {}, {}, 0, {}}}}}",
            other(bb),
            q(&b),
            q(&d),
            q(&m2),
            q(&m3)
        ),
        1012,
        &refused(
            "dialogs_storage_mark_read_apply",
            other(bb),
            "writable",
            &format!("the user is in bucket {bb}"),
        ),
    );
    assert_refused(
        "dialogs_storage_list",
        &format!("{{{}, {{{}}}}}", other(bb), q(&b)),
        1012,
        &refused(
            "dialogs_storage_list",
            other(bb),
            "readable",
            &format!("the user is in bucket {bb}"),
        ),
    );
    // The receipt delivered to A's entry.
    assert_eq!(
        call(
            "dialogs_storage_inbox_apply",
            &format!("{{{ba}, {{{{'r', {}, {}, {}}}}}}}", q(&a), q(&d), q(&m1)),
        )
        .ok(),
        vec![Json::from(1)]
    );
    assert_eq!(entry(a, d)["peer_read_id"], s(m1));
    lua_exec("box.space.dialogs_outbox:truncate()");
    drop(buckets);
    assert!(count() > 0);
}

/// The drainer's batch to a replica set: every group whose bucket is writable
/// here applied in one transaction, a group whose bucket is not (moving) skipped
/// whole and named in the reply; a group holding a user of another bucket
/// refuses the whole call, nothing written.
#[tarantool::test]
fn inbox_apply_many_skips_a_refused_bucket_and_applies_the_others() {
    ensure_built();
    define("dialogs_storage_inbox_apply_many");
    let n = stored_bucket_count();
    let (a, b) = (user(), user());
    let (ba, bb) = (bucket_id(a, n), bucket_id(b, n));
    // c: a user of a third bucket, which is on its way out.
    let c = loop {
        let c = user();
        if ![ba, bb].contains(&bucket_id(c, n)) {
            break c;
        }
    };
    let bc = bucket_id(c, n);
    let buckets = BucketSpace::create();
    buckets.set(ba, "active");
    buckets.set(bb, "pinned");
    buckets.set(bc, "sending");
    // A message from c to a, and a receipt of b's (placeholder entry).
    let (m, d, d2) = (Uuid::now_v7(), user(), user());
    let to_a = format!(
        "{{'m', {}, {}, {}, {}, {}, 'hi'}}",
        q(&a),
        q(&m),
        q(&d),
        q(&c),
        q(&a)
    );
    let to_c = format!(
        "{{'m', {}, {}, {}, {}, {}, 'hi'}}",
        q(&c),
        q(&m),
        q(&d),
        q(&c),
        q(&a)
    );
    let receipt_b = format!("{{'r', {}, {}, {}}}", q(&b), q(&d2), q(&m));
    let inbox_of = |u: Uuid| {
        lua_u64(&format!(
            "box.space.dialogs_inbox.index.activity:count{{require('uuid').fromstr('{u}')}}"
        ))
    };
    // A group of a user in another bucket: the whole call refused, even the
    // valid group before it not written.
    let inbox = lua_u64("box.space.dialogs_inbox:len()");
    assert_refused(
        "dialogs_storage_inbox_apply_many",
        &format!("{{{{{{{ba}, {{{to_a}}}}}, {{{ba}, {{{receipt_b}}}}}}}}}"),
        1012,
        &format!(
            "dialogs_storage_inbox_apply_many: bucket {ba} is not writable here: \
             the user is in bucket {bb}"
        ),
    );
    assert_eq!(lua_u64("box.space.dialogs_inbox:len()"), inbox);
    // Three groups, one refused: the other two applied, one reply.
    let groups =
        format!("{{{{{{{ba}, {{{to_a}}}}}, {{{bc}, {{{to_c}}}}}, {{{bb}, {{{receipt_b}}}}}}}}}");
    let expected = serde_json::json!({"applied": 2, "refused": [bc]});
    assert_eq!(
        call("dialogs_storage_inbox_apply_many", &groups).ok(),
        vec![expected.clone()]
    );
    assert_eq!(entry(a, d)["last_id"], s(m));
    assert_eq!(entry(a, d)["unread"], 1);
    assert_eq!(totals(a), (1, 1));
    assert_eq!(inbox_of(b), 1);
    assert!(lua_bool(&format!(
        "tostring(box.space.dialogs_inbox:get{{require('uuid').fromstr('{b}'), \
         require('uuid').fromstr('{d2}')}}[9]) == '{m}'"
    )));
    // Nothing of c's group: no entry, no totals row.
    assert_eq!(inbox_of(c), 0);
    assert!(lua_bool(&format!(
        "box.space.dialogs_inbox_totals:get{{require('uuid').fromstr('{c}')}} == nil"
    )));
    // Sent again (the drainer after a lost reply): the same reply, nothing counted twice.
    assert_eq!(
        call("dialogs_storage_inbox_apply_many", &groups).ok(),
        vec![expected]
    );
    assert_eq!(totals(a), (1, 1));
    // Once c's bucket is back, its group applies.
    buckets.set(bc, "active");
    assert_eq!(
        call(
            "dialogs_storage_inbox_apply_many",
            &format!("{{{{{{{bc}, {{{to_c}}}}}}}}}")
        )
        .ok(),
        vec![serde_json::json!({"applied": 1, "refused": []})]
    );
    assert_eq!(entry(c, d)["last_id"], s(m));
    assert_eq!(entry(c, d)["unread"], 0);
    // Not {groups}: refused, the server goes on.
    assert_refused(
        "dialogs_storage_inbox_apply_many",
        &format!("{{{ba}, {{}}}}"),
        code::INTERNAL,
        "dialogs_storage_inbox_apply_many: internal error: expected ({{bucket_id, events}, ...}): \
         not one argument",
    );
    drop(buckets);
}
