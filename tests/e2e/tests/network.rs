//! new_dialog / get_dialog from a Rust service's point of view: a real server, the
//! `rusty_tarantool` client, string and msgpack uuids, cursors, errors, pipelining.

use std::time::{SystemTime, UNIX_EPOCH};

use dialogs_e2e::iproto::{ErrorReply, RawConn};
use dialogs_e2e::server::{Server, PASSWORD, USER};
use dialogs_e2e::*;
use futures::future::join_all;
use rmpv::Value;
use rusty_tarantool::tarantool::{Client, ClientConfig, ExecWithParamaters, TarantoolResponse};
use uuid::Uuid;

const REQUEST_TIMEOUT_MS: u64 = 30_000;
const RECONNECT_MS: u64 = 200;
/// How far created_at may lie outside the call that stored it, by this machine's
/// clock (the server reads the same clock; this covers a step of it).
const CLOCK_SLACK_MICROS: i64 = 5_000_000;

/// A rusty_tarantool client.
struct Conn {
    c: Client,
}

fn client(server: &Server) -> Conn {
    Conn {
        c: ClientConfig::new(server.addr(), USER, PASSWORD)
            .set_timeout_time_ms(REQUEST_TIMEOUT_MS)
            .set_reconnect_time_ms(RECONNECT_MS)
            .build(),
    }
}

/// The message id in a new_dialog reply: a canonical lowercase uuid string.
fn message_id(reply: TarantoolResponse) -> Uuid {
    let data: Value = reply.decode().expect("msgpack reply");
    let id = message_id_result(data);
    let parsed = Uuid::parse_str(&id).expect("a uuid");
    assert_eq!(parsed.to_string(), id, "canonical form");
    parsed
}

async fn new_dialog<D: serde::Serialize>(
    c: &Conn,
    dialog: &D,
    from: Uuid,
    to: Uuid,
    text: &str,
) -> Uuid {
    let (from, to) = (from.to_string(), to.to_string());
    let reply = c.c.call_fn4("new_dialog", dialog, &from, &to, &text).await;
    message_id(reply.expect("new_dialog"))
}

async fn get_dialog(c: &Conn, dialog: Uuid, opts: Vec<(&str, Value)>) -> Vec<Vec<Value>> {
    let opts = Value::Map(opts.into_iter().map(|(k, v)| (k.into(), v)).collect());
    let reply = c.c.call_fn2("get_dialog", &dialog.to_string(), &opts).await;
    let data: Value = reply.expect("get_dialog").decode().expect("msgpack reply");
    message_tuples(data)
        .into_iter()
        .map(|r| match r {
            Value::Array(fields) => fields,
            other => unreachable!("checked to be a tuple: {other:?}"),
        })
        .collect()
}

fn ids(rows: &[Vec<Value>]) -> Vec<Uuid> {
    rows.iter().map(|r| as_uuid(&r[FIELD_ID])).collect()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Whether the Tarantool the harness runs has the datetime module (2.10+): asked of
/// the binary, not read from a version string.
fn tarantool_supports_datetime() -> bool {
    let status = std::process::Command::new(dialogs_e2e::server::tarantool_binary())
        .args(["-e", "os.exit(pcall(require, 'datetime') and 0 or 3)"])
        .status()
        .expect("run tarantool");
    match status.code() {
        Some(0) => true,
        Some(3) => false,
        other => panic!("capability probe failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_and_msgpack_uuids_store_one_message_each() {
    let server = Server::start();
    let c = client(&server);
    let (dialog, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    let before_send = now_micros();
    let m1 = new_dialog(&c, &dialog.to_string(), alice, bob, "as strings").await;
    let after_reply = now_micros();

    // All four uuids as msgpack uuid values (extension type 2), through serde.
    let reply =
        c.c.call_fn4(
            "new_dialog",
            &uuid_value(dialog),
            &uuid_value(bob),
            &uuid_value(alice),
            &"as msgpack uuids",
        )
        .await
        .expect("new_dialog with ext uuids");
    let m2 = message_id(reply);

    // The same, as raw msgpack bytes bound one argument at a time.
    let reply =
        c.c.prepare_fn_call("new_dialog")
            .bind_raw(encode(&uuid_value(dialog)))
            .unwrap()
            .bind_raw(encode(&uuid_value(alice)))
            .unwrap()
            .bind_raw(encode(&uuid_value(bob)))
            .unwrap()
            .bind("raw")
            .unwrap()
            .execute()
            .await
            .expect("new_dialog with raw msgpack");
    let m3 = message_id(reply);

    assert!(m1 < m2 && m2 < m3, "ids increase: {m1} {m2} {m3}");
    assert_eq!(m1.get_version_num(), 7);

    let rows = get_dialog(&c, dialog, vec![]).await;
    assert_eq!(ids(&rows), vec![m1, m2, m3]);
    for row in &rows {
        assert_eq!(row.len(), 6);
        assert_eq!(as_uuid(&row[FIELD_DIALOG_ID]), dialog);
    }
    let pairs: Vec<(Uuid, Uuid)> = rows
        .iter()
        .map(|r| (as_uuid(&r[FIELD_USER_FROM]), as_uuid(&r[FIELD_USER_TO])))
        .collect();
    assert_eq!(pairs, vec![(alice, bob), (bob, alice), (alice, bob)]);
    let texts: Vec<&str> = rows
        .iter()
        .map(|r| r[FIELD_TEXT].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["as strings", "as msgpack uuids", "raw"]);

    let created_at = &rows[0][FIELD_CREATED_AT];
    if tarantool_supports_datetime() {
        assert!(
            matches!(created_at, Value::Ext(4, _)),
            "created_at must be a msgpack datetime (ext 4), got {created_at:?}"
        );
    } else {
        let micros = created_at
            .as_u64()
            .expect("created_at: unsigned microseconds");
        // Within the call that stored it, however long the machine took since.
        let micros = micros as i64;
        assert!(
            before_send - CLOCK_SLACK_MICROS <= micros
                && micros <= after_reply + CLOCK_SLACK_MICROS,
            "created_at {micros} outside its call [{before_send}, {after_reply}]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nil_dialog_id_derives_the_pair_dialog_in_both_directions() {
    let server = Server::start();
    let c = client(&server);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let none: Option<String> = None;
    let m1 = new_dialog(&c, &none, alice, bob, "hi Bob").await;
    let m2 = new_dialog(&c, &Value::Nil, bob, alice, "hi Alice").await;

    let dialog = derived_dialog_id(alice, bob);
    assert_eq!(dialog, derived_dialog_id(bob, alice));
    let rows = get_dialog(&c, dialog, vec![]).await;
    assert_eq!(ids(&rows), vec![m1, m2]);
    assert!(rows.iter().all(|r| as_uuid(&r[FIELD_DIALOG_ID]) == dialog));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_dialog_pages_with_limit_after_before_reverse() {
    let server = Server::start();
    let c = client(&server);
    let (dialog, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(new_dialog(&c, &dialog.to_string(), a, b, &format!("m{i}")).await);
    }
    let s = |u: Uuid| Value::from(u.to_string());

    let page = get_dialog(&c, dialog, vec![("limit", 10.into())]).await;
    assert_eq!(ids(&page), sent[..10]);
    let page = get_dialog(
        &c,
        dialog,
        vec![("limit", 10.into()), ("after", s(sent[9]))],
    )
    .await;
    assert_eq!(ids(&page), sent[10..20]);
    // A cursor as a msgpack uuid works like a string.
    let page = get_dialog(
        &c,
        dialog,
        vec![("limit", 5.into()), ("after", uuid_value(sent[24]))],
    )
    .await;
    assert_eq!(ids(&page), sent[25..]);
    let page = get_dialog(&c, dialog, vec![("before", s(sent[3]))]).await;
    assert_eq!(ids(&page), sent[..3]);

    let newest: Vec<Uuid> = sent.iter().rev().copied().collect();
    let page = get_dialog(
        &c,
        dialog,
        vec![("reverse", true.into()), ("limit", 7.into())],
    )
    .await;
    assert_eq!(ids(&page), newest[..7]);
    let page = get_dialog(
        &c,
        dialog,
        vec![
            ("reverse", true.into()),
            ("limit", 7.into()),
            ("before", s(sent[23])),
        ],
    )
    .await;
    assert_eq!(ids(&page), newest[7..14]);

    // The whole dialog newest first, page by page.
    let mut walked = Vec::new();
    let mut opts = vec![("reverse", Value::from(true)), ("limit", 4.into())];
    loop {
        let page = get_dialog(&c, dialog, opts.clone()).await;
        walked.extend(ids(&page));
        if page.len() < 4 {
            break;
        }
        opts = vec![
            ("reverse", true.into()),
            ("limit", 4.into()),
            ("before", s(*walked.last().unwrap())),
        ];
    }
    assert_eq!(walked, newest);
}

fn args(values: Vec<Value>) -> Vec<u8> {
    encode(&Value::Array(values))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_the_client_with_code_and_message() {
    let server = Server::start();
    let c = client(&server);
    let (dialog, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // What rusty_tarantool shows: the message (it drops the code).
    let err =
        c.c.call_fn3(
            "new_dialog",
            &dialog.to_string(),
            &a.to_string(),
            &b.to_string(),
        )
        .await
        .expect_err("3 arguments are refused");
    assert_eq!(
        err.to_string(),
        "new_dialog: expected 4 or 5 arguments (dialog_id, user_from, user_to, text [, opts]), got 3"
    );
    let err =
        c.c.call_fn2(
            "get_dialog",
            &dialog.to_string(),
            &Value::Map(vec![("limit".into(), 0.into())]),
        )
        .await
        .expect_err("limit 0 is refused");
    assert_eq!(err.to_string(), "opts.limit: must be 1 to 1000, got 0");

    // The code, over the raw protocol.
    let mut raw = RawConn::connect(&server.addr(), USER, PASSWORD).expect("login");
    let str_uuid = |u: Uuid| Value::from(u.to_string());
    let reply = raw
        .call(
            "new_dialog",
            &args(vec![
                str_uuid(dialog),
                str_uuid(a),
                "abc".into(),
                "t".into(),
            ]),
        )
        .unwrap();
    assert_eq!(
        reply,
        Err(ErrorReply {
            code: code::BAD_UUID,
            message: "user_to: malformed uuid \"abc\"".into()
        })
    );
    let reply = raw
        .call(
            "new_dialog",
            &args(vec![str_uuid(dialog), true.into(), str_uuid(b), "t".into()]),
        )
        .unwrap();
    assert_eq!(
        reply,
        Err(ErrorReply {
            code: code::BAD_TYPE,
            message: "user_from: expected a uuid (string or msgpack uuid), got boolean".into()
        })
    );
    let long_text = "x".repeat(4097);
    let reply = raw
        .call(
            "new_dialog",
            &args(vec![
                str_uuid(dialog),
                str_uuid(a),
                str_uuid(b),
                long_text.into(),
            ]),
        )
        .unwrap();
    assert_eq!(
        reply,
        Err(ErrorReply {
            code: code::BAD_TEXT,
            message: "text: must be 1 to 4096 characters, got 4097".into()
        })
    );

    // A msgpack string that is not UTF-8: only raw bytes can say it.
    let mut bad_utf8 = Vec::new();
    rmp::encode::write_array_len(&mut bad_utf8, 4).unwrap();
    for u in [dialog, a, b] {
        rmp::encode::write_str(&mut bad_utf8, &u.to_string()).unwrap();
    }
    bad_utf8.extend_from_slice(&[0xa3, b'h', 0xff, 0xfe]);
    let err = raw.call("new_dialog", &bad_utf8).unwrap().unwrap_err();
    assert_eq!(err.code, code::BAD_TEXT, "{err}");
    assert!(err.message.starts_with("text: "), "{err}");

    // A malformed uuid that is a msgpack uuid of the wrong length: refused by the
    // server itself where it checks extensions in requests, else by the procedure
    // (README "Errors").
    let short_ext = Value::Ext(MP_UUID, vec![1, 2, 3]);
    let err = raw
        .call(
            "new_dialog",
            &args(vec![str_uuid(dialog), short_ext, str_uuid(b), "t".into()]),
        )
        .unwrap()
        .unwrap_err();
    let expected = if server_checks_request_extensions() {
        ErrorReply {
            code: ER_INVALID_MSGPACK,
            message: INVALID_MSGPACK_BODY.into(),
        }
    } else {
        ErrorReply {
            code: code::BAD_TYPE,
            message: "user_from: expected a uuid (string or msgpack uuid), \
                      got malformed uuid extension"
                .into(),
        }
    };
    assert_eq!(err, expected);

    let err = raw
        .call(
            "get_dialog",
            &args(vec![
                str_uuid(dialog),
                Value::Map(vec![("bogus".into(), 1.into())]),
            ]),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, code::BAD_OPTION, "{err}");
    assert!(err.message.contains("bogus"), "{err}");

    // Nothing was written, and both connections go on.
    assert!(get_dialog(&c, dialog, vec![]).await.is_empty());
    let id = new_dialog(&c, &dialog.to_string(), a, b, "fine").await;
    let rows = raw
        .call("get_dialog", &args(vec![uuid_value(dialog)]))
        .unwrap()
        .unwrap();
    let rows = message_tuples(rows);
    assert_eq!(rows.len(), 1);
    assert_eq!(as_uuid(&rows[0].as_array().unwrap()[FIELD_ID]), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_on_one_connection_get_distinct_increasing_ids() {
    const CALLS: usize = 1000;
    let mut server = Server::start();
    let c = client(&server);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let texts: Vec<String> = (0..CALLS).map(|i| format!("pipelined {i}")).collect();
    let (from, to) = (alice.to_string(), bob.to_string());
    let calls = texts
        .iter()
        .map(|t| c.c.call_fn4("new_dialog", &Value::Nil, &from, &to, t));
    let replies = join_all(calls).await;
    let sent: Vec<Uuid> = replies
        .into_iter()
        .map(|r| message_id(r.expect("every call succeeds")))
        .collect();
    let mut sorted = sent.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), CALLS, "duplicate ids");
    assert_eq!(sorted, sent, "ids follow the order the calls were sent");

    let dialog = derived_dialog_id(alice, bob);
    let mut stored = Vec::new();
    let mut opts = vec![("limit", Value::from(300))];
    loop {
        let page = get_dialog(&c, dialog, opts.clone()).await;
        stored.extend(ids(&page));
        if page.len() < 300 {
            break;
        }
        opts = vec![
            ("limit", 300.into()),
            ("after", uuid_value(*stored.last().unwrap())),
        ];
    }
    assert_eq!(stored, sent);
    assert!(server.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_a_restart_and_a_reconnecting_client_reads_them() {
    let mut server = Server::start();
    let c = client(&server);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(new_dialog(&c, &Value::Nil, alice, bob, &format!("m{i}")).await);
    }
    let pid = server.pid();
    server.restart();
    assert_ne!(server.pid(), pid);

    // A fresh client, and the old one once it has reconnected, see the same dialog.
    let dialog = derived_dialog_id(alice, bob);
    assert_eq!(
        ids(&get_dialog(&client(&server), dialog, vec![]).await),
        sent
    );
    let mut old_client_saw = None;
    for _ in 0..100 {
        let reply = c.c.call_fn1("get_dialog", &dialog.to_string()).await;
        if let Ok(reply) = reply {
            old_client_saw = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(RECONNECT_MS)).await;
    }
    let data: Value = old_client_saw
        .expect("the old client reconnects")
        .decode()
        .unwrap();
    let rows = message_tuples(data);
    assert_eq!(rows.len(), 20);

    let status = server.stop().expect("was running");
    assert!(
        status.success(),
        "SIGTERM ends the server cleanly: {status}"
    );
}

#[test]
fn wrong_credentials_are_refused_and_the_server_goes_on() {
    let mut server = Server::start();
    for (user, password) in [(USER, "wrong-password"), ("nobody", PASSWORD)] {
        let err = match RawConn::connect(&server.addr(), user, password) {
            Ok(_) => panic!("{user}/{password} logged in"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        let text = err.to_string();
        // 2.6 says which part was wrong; newer releases say only "credentials".
        assert!(
            ["password", "credentials", "not found"]
                .iter()
                .any(|w| text.contains(w)),
            "{text}"
        );
    }
    assert!(server.is_running());
    let mut ok = RawConn::connect(&server.addr(), USER, PASSWORD).expect("right password");
    let reply = ok
        .call(
            "get_dialog",
            &encode(&Value::Array(vec![uuid_value(Uuid::new_v4())])),
        )
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
}
