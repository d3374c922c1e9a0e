//! The in-Tarantool test suite (feature `test`), run by
//! `tarantool-test -p target/dialogs-test/libdialogs.so -- -i tests/init.lua`.
//!
//! Every test calls the procedures the way a client does, through the
//! registered functions (`box.func[name]:call`, via `dialogs_call` in
//! tests/init.lua), and checks what a client would see: the reply, the stored
//! tuples, the error code and text, and that the space is unchanged after a
//! refusal. Tests use fresh random user ids, so they do not see each other's data.

use std::ffi::{c_char, c_int};

use serde_json::Value as Json;
use tarantool::ffi::tarantool::BoxFunctionCtx;
use uuid::Uuid;

use crate::bucket::bucket_id;
use crate::error::code;
use crate::ids::{key_dialog, pair_dialog};
use crate::new_dialog::NewDialog;
use crate::store::{self, Store, TimeField};
use crate::Results;

mod inbox;

// --- the runner --------------------------------------------------------------

/// A probe of this server: why a test does not apply here (None: it applies).
type Applies = fn() -> Option<&'static str>;

/// Tests that apply to some servers only: the test's function name and its probe.
const CONDITIONAL: &[(&str, Applies)] = &[
    (
        "created_at_is_a_datetime_where_the_server_has_the_type",
        || {
            (!tarantool::ffi::has_datetime())
                .then_some("this server has no datetime type (Tarantool < 2.10)")
        },
    ),
    (
        "created_at_is_microseconds_where_the_server_has_no_datetime",
        || {
            tarantool::ffi::has_datetime()
                .then_some("this server has the datetime type: created_at is a datetime")
        },
    ),
];

/// The suite's entry point, called by `tarantool-test` (what
/// `tarantool_test::bind_test_suite!` generates, plus skips). A test that does not
/// apply to this server is printed as `SKIPPED <name>: <reason>` and handed to the
/// runner as ignored, so the runner's own summary counts it:
/// `test result: ok. N passed; 0 failed; S ignored; 0 measured; 0 filtered out`.
#[tarantool::proc]
fn default_test_entrypoint(input: String) -> Result<(), Box<dyn std::error::Error>> {
    let cfg: tarantool_test::TestsConfig = serde_json::from_str(&input)?;
    let cfg = tarantool_test::TestsConfig {
        filter: cfg.filter.filter(|f| !f.is_empty()),
    };
    let mut tests = tarantool_test::collect_tests::<()>(cfg);
    for (name, _) in CONDITIONAL {
        let known = tarantool::test::test_cases()
            .iter()
            .any(|t| t.name().ends_with(&format!("::{name}")));
        if !known {
            return Err(format!("CONDITIONAL names no test {name:?}").into());
        }
    }
    for test in &mut tests {
        let name = test.desc.name.as_slice().to_owned();
        let reason = CONDITIONAL
            .iter()
            .find(|(n, _)| name.ends_with(&format!("::{n}")))
            .and_then(|(_, probe)| probe());
        if let Some(reason) = reason {
            println!("SKIPPED {name}: {reason}");
            test.desc.ignore = true;
        }
    }
    let opts = tester::TestOpts {
        list: false,
        filter: None,
        filter_exact: false,
        force_run_in_process: false,
        exclude_should_panic: false,
        run_ignored: tester::RunIgnored::No,
        run_tests: true,
        bench_benchmarks: false,
        logfile: None,
        nocapture: false,
        color: tester::ColorConfig::AutoColor,
        format: tester::OutputFormat::Pretty,
        test_threads: Some(1),
        skip: vec![],
        time_options: None,
        options: tester::Options::new(),
    };
    if tester::run_tests_console(&opts, tests)? {
        Ok(())
    } else {
        Err("some tests failed".into())
    }
}

/// A test-only procedure: stores a message, then panics. The write is in a
/// transaction of its own, or in the caller's when one is open. Proves that a
/// panic becomes an error reply, undoes the procedure's write and nothing else,
/// and leaves the server serving.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_test_panic(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    crate::serve("dialogs_test_panic", ctx, args, args_end, |args, _| {
        let request = NewDialog::parse(args)?;
        let store = Store::get()?;
        let write_then_panic = || -> crate::error::Result<()> {
            request.apply(&store)?;
            panic!("deliberate panic after a write");
        };
        if tarantool::transaction::is_in_transaction() {
            write_then_panic()
        } else {
            store::atomically(write_then_panic)
        }
    })
}

// --- helpers ---------------------------------------------------------------

/// Runs Lua code that returns a string.
fn lua_string(code: &str) -> String {
    tarantool::lua_state()
        .eval::<String>(code)
        .unwrap_or_else(|e| panic!("lua {code:?}: {e}"))
}

/// Runs Lua code for its effect.
fn lua_exec(code: &str) {
    tarantool::lua_state()
        .exec(code)
        .unwrap_or_else(|e| panic!("lua {code:?}: {e}"))
}

/// Evaluates a Lua integer expression exactly.
fn lua_u64(expr: &str) -> u64 {
    let digits = lua_string(&format!("return dialogs_int({expr})"));
    digits
        .parse()
        .unwrap_or_else(|e| panic!("{expr} = {digits:?}: {e}"))
}

/// Evaluates a Lua boolean expression.
fn lua_bool(expr: &str) -> bool {
    lua_string(&format!("return tostring({expr})")) == "true"
}

/// What a client sees of one call.
#[derive(Debug)]
enum Outcome {
    Ok(Vec<Json>),
    Err(u32, String),
}

impl Outcome {
    fn ok(self) -> Vec<Json> {
        match self {
            Outcome::Ok(v) => v,
            Outcome::Err(code, msg) => panic!("expected success, got error {code}: {msg}"),
        }
    }
}

/// Calls `name` with `args`, a Lua table constructor. Yields first (outside a
/// transaction, where a yield would abort it): tests make thousands of calls, and
/// a fiber that runs longer than its slice without yielding gets "fiber slice is
/// exceeded" (Tarantool 2.11+).
fn call(name: &str, args: &str) -> Outcome {
    if !tarantool::transaction::is_in_transaction() {
        tarantool::fiber::reschedule();
    }
    let json = lua_string(&format!("return dialogs_call('{name}', {args})"));
    let v: Json = serde_json::from_str(&json).expect("dialogs_call returns JSON");
    if v["ok"] == Json::Bool(true) {
        Outcome::Ok(v["values"].as_array().cloned().unwrap_or_default())
    } else {
        let code = v["code"].as_u64().expect("error code") as u32;
        Outcome::Err(code, v["message"].as_str().unwrap_or_default().to_owned())
    }
}

/// The bucket count init.lua stored with the data.
fn stored_bucket_count() -> u32 {
    u32::try_from(lua_u64("box.space._schema:get{'dialogs_bucket_count'}[2]")).unwrap()
}

fn q(id: &Uuid) -> String {
    format!("'{id}'")
}

fn user() -> Uuid {
    Uuid::new_v4()
}

fn count() -> u64 {
    lua_u64("box.space.dialogs:len()")
}

/// Sends one message with string ids; returns its id.
fn send(dialog: Option<Uuid>, from: Uuid, to: Uuid, text: &str) -> Uuid {
    let dialog = dialog.map_or_else(|| "box.NULL".to_owned(), |d| q(&d));
    let values = call(
        "new_dialog",
        &format!("{{{dialog}, {}, {}, {text:?}}}", q(&from), q(&to)),
    )
    .ok();
    assert_eq!(values.len(), 1, "one return value: {values:?}");
    let id = values[0].as_str().expect("the id is a string");
    Uuid::parse_str(id).expect("the id is a uuid")
}

/// get_dialog's message tuples, from what a Lua caller got (README "Reply
/// shape"): one value, the list of tuples, where the server sends a C function's
/// results one value each; else one value per tuple. Any other shape fails.
fn messages(values: Vec<Json>) -> Vec<Json> {
    let is_tuple = |t: &Json| {
        t.as_array()
            .is_some_and(|f| f.len() == 6 && f[0].is_string())
    };
    match Results::of_server() {
        Results::OneEach => {
            assert_eq!(values.len(), 1, "one return value: {values:?}");
            let list = values[0].as_array().cloned();
            let list = list.unwrap_or_else(|| panic!("a list of tuples: {values:?}"));
            assert!(list.iter().all(is_tuple), "a list of tuples: {list:?}");
            list
        }
        Results::Wrapped => {
            assert!(values.iter().all(is_tuple), "one tuple each: {values:?}");
            values
        }
    }
}

/// A page of get_dialog as (id, text) pairs.
fn page(dialog: Uuid, opts: &str) -> Vec<(Uuid, String)> {
    messages(call("get_dialog", &format!("{{{}, {opts}}}", q(&dialog))).ok())
        .iter()
        .map(|t| {
            let id = Uuid::parse_str(t[0].as_str().expect("id")).expect("uuid");
            (id, t[4].as_str().expect("text").to_owned())
        })
        .collect()
}

/// The server's real-time clock in microseconds.
fn now_us() -> u64 {
    lua_u64("require('clock').realtime64() / 1000")
}

/// vshard's `_bucket` space (`{id, status}`) of a test's own making, for the
/// storage entries and the pruner outside a vshard storage. Dropped with the
/// value, whether the test passes or fails midway (its panic unwinds through
/// the drop), so that no later test finds it.
struct BucketSpace;

impl BucketSpace {
    fn create() -> Self {
        lua_exec(
            "box.schema.space.create('_bucket', {format = {{'id', 'unsigned'}, \
             {'status', 'string'}}}):create_index('pk')",
        );
        BucketSpace
    }

    /// Gives `bucket` the status `status`.
    fn set(&self, bucket: u32, status: &str) {
        lua_exec(&format!(
            "box.space._bucket:replace{{{bucket}, '{status}'}}"
        ));
    }
}

impl Drop for BucketSpace {
    fn drop(&mut self) {
        // Never a panic here (one while unwinding aborts the server): the result
        // is left alone. A transaction the test left open ends first, as a space
        // cannot be dropped inside one.
        let _ = tarantool::lua_state().exec(
            "if box.is_in_txn() then box.rollback() end \
             if box.space._bucket ~= nil then box.space._bucket:drop() end",
        );
    }
}

fn assert_refused(name: &str, args: &str, code: u32, message: &str) {
    let before = count();
    match call(name, args) {
        Outcome::Err(c, m) => {
            assert_eq!((c, m.as_str()), (code, message), "{name}{args}");
        }
        Outcome::Ok(v) => panic!("{name}{args}: expected error {code}, got {v:?}"),
    }
    assert_eq!(count(), before, "{name}{args} wrote something");
}

// --- new_dialog ------------------------------------------------------------

#[tarantool::test]
fn new_dialog_stores_the_message_and_returns_its_id() {
    let (a, b, d) = (user(), user(), user());
    let t0 = now_us();
    let id = send(Some(d), a, b, "hello, Bob");
    let t1 = now_us();
    assert_eq!(id.get_version_num(), 7);
    let row = lua_string(&format!(
        "return require('json').encode(box.space.dialogs:get{{require('uuid').fromstr('{id}')}})"
    ));
    let row: Json = serde_json::from_str(&row).unwrap();
    assert_eq!(row[0], Json::String(id.to_string()));
    assert_eq!(row[1], Json::String(d.to_string()));
    assert_eq!(row[2], Json::String(a.to_string()));
    assert_eq!(row[3], Json::String(b.to_string()));
    assert_eq!(row[4], Json::String("hello, Bob".into()));
    // The store's seventh field, never in a reply: the dialog's vshard bucket.
    assert_eq!(row[6], Json::from(bucket_id(d, stored_bucket_count())));
    let created: u64 = lua_string(&format!(
        "local t = box.space.dialogs:get{{require('uuid').fromstr('{id}')}}[6]
         local ok, dt = pcall(require, 'datetime')
         if ok and dt.is_datetime(t) then
             return dialogs_int(t.epoch * 1000000ULL + math.floor(t.nsec / 1000))
         end
         return dialogs_int(t)"
    ))
    .parse()
    .unwrap();
    assert!(
        (t0..=t1).contains(&created),
        "created_at {created} not within the call [{t0}, {t1}]"
    );
    // The id's timestamp is the same clock in milliseconds. (No test here stores
    // an id from the future: tests/python/test_ids.py does, on its own server.)
    let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
    let id_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    assert!(
        (t0 / 1000..=t1 / 1000).contains(&id_ms),
        "id timestamp {id_ms} not within the call [{}, {}] ms",
        t0 / 1000,
        t1 / 1000
    );
}

#[tarantool::test]
fn new_dialog_accepts_msgpack_uuid_values() {
    let (a, b, d) = (user(), user(), user());
    let u = |id: &Uuid| format!("require('uuid').fromstr('{id}')");
    let values = call(
        "new_dialog",
        &format!("{{{}, {}, {}, 'binary ids'}}", u(&d), u(&a), u(&b)),
    )
    .ok();
    assert!(values[0].is_string());
    assert_eq!(page(d, "{}").len(), 1);
}

#[tarantool::test]
fn uuid_strings_in_either_case_name_the_same_ids() {
    let (a, b, d) = (user(), user(), user());
    let upper = |id: &Uuid| format!("'{}'", id.to_string().to_uppercase());
    call(
        "new_dialog",
        &format!("{{{}, {}, {}, 'upper'}}", upper(&d), upper(&a), upper(&b)),
    )
    .ok();
    let rows = messages(call("get_dialog", &format!("{{{}}}", q(&d))).ok());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][2], Json::String(a.to_string()));
}

#[tarantool::test]
fn a_nil_dialog_id_is_derived_from_the_pair_either_way() {
    let (a, b) = (user(), user());
    let first = send(None, a, b, "ping");
    let second = send(None, b, a, "pong");
    let dialog = pair_dialog(a, b);
    assert_eq!(
        page(dialog, "{}"),
        vec![(first, "ping".into()), (second, "pong".into())]
    );
    // The README's formula, computed independently (Python's uuid and hashlib).
    let x = Uuid::parse_str("0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01").unwrap();
    let y = Uuid::parse_str("5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02").unwrap();
    assert_eq!(
        pair_dialog(y, x).to_string(),
        "97bf9795-335b-54e5-a6bc-cffc41f97366"
    );
}

#[tarantool::test]
fn a_string_key_names_one_dialog_for_writes_reads_and_retries() {
    let (a, b) = (user(), user());
    // The report's key shape: two canonical ids, 72 characters.
    let key = format!("{a}{b}");
    let args = |text: &str, rid: &Uuid| {
        format!(
            "{{{key:?}, {}, {}, {text:?}, {{request_id = {}}}}}",
            q(&a),
            q(&b),
            q(rid)
        )
    };
    let rid = user();
    let first = call("new_dialog", &args("one", &rid)).ok();
    let again = call("new_dialog", &args("one", &rid)).ok();
    assert_eq!(first, again, "a retry by key returns the first id");
    let second = send(Some(key_dialog(&key)), b, a, "two");
    let dialog = key_dialog(&key);
    let by_uuid = page(dialog, "{}");
    assert_eq!(by_uuid.len(), 2);
    assert_eq!(by_uuid[1], (second, "two".into()));
    let by_key: Vec<Json> = messages(call("get_dialog", &format!("{{{key:?}}}")).ok());
    assert_eq!(by_key.len(), 2);
    assert_eq!(by_key[0][1].as_str(), Some(dialog.to_string().as_str()));
    // Stored under the key's dialog, in its bucket.
    let stored = lua_u64(&format!(
        "box.space.dialogs.index.dialog_id_k:count({{require('uuid').fromstr('{dialog}')}})"
    ));
    assert_eq!(stored, 2);
    let bucket = lua_u64(&format!(
        "box.space.dialogs.index.dialog_id_k:select({{require('uuid').fromstr('{dialog}')}})[1][7]"
    ));
    assert_eq!(bucket, u64::from(bucket_id(dialog, stored_bucket_count())));
    // Refused keys write nothing.
    let (qa, qb) = (q(&a), q(&b));
    assert_refused(
        "new_dialog",
        &format!("{{'', {qa}, {qb}, 'x'}}"),
        code::BAD_UUID,
        "dialog_id: a dialog key must be 1 to 255 bytes, got 0",
    );
    assert_refused(
        "new_dialog",
        &format!("{{string.rep('k', 256), {qa}, {qb}, 'x'}}"),
        code::BAD_UUID,
        "dialog_id: a dialog key must be 1 to 255 bytes, got 256",
    );
    assert_refused(
        "get_dialog",
        "{'chat\\xff'}",
        code::BAD_UUID,
        "dialog_id: a dialog key must be valid UTF-8",
    );
}

#[tarantool::test]
fn ids_follow_insertion_order() {
    let (a, b, d) = (user(), user(), user());
    let ids: Vec<Uuid> = (0..2000)
        .map(|i| send(Some(d), a, b, &format!("m{i}")))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    let got = page(d, "{limit = 1000}");
    let texts: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), ids[..1000]);
    assert_eq!(got.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), texts);
}

#[tarantool::test]
fn text_length_counts_characters_not_bytes() {
    let (a, b, d) = (user(), user(), user());
    for text in [
        "я".repeat(4096),
        "😀".repeat(4096),
        "x".to_owned(),
        "\u{0}".to_owned(),
    ] {
        send(Some(d), a, b, &text);
    }
    let rows = page(d, "{}");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].1.chars().count(), 4096);
    let args = |t: &str| format!("{{{}, {}, {}, {t:?}}}", q(&d), q(&a), q(&b));
    assert_refused(
        "new_dialog",
        &args(&"я".repeat(4097)),
        code::BAD_TEXT,
        "text: must be 1 to 4096 characters, got 4097",
    );
    assert_refused(
        "new_dialog",
        &args(""),
        code::BAD_TEXT,
        "text: must be 1 to 4096 characters, got 0",
    );
}

#[tarantool::test]
fn every_bad_new_dialog_call_is_refused_and_writes_nothing() {
    let (a, b) = (q(&user()), q(&user()));
    let signature =
        "new_dialog: expected 4 or 5 arguments (dialog_id, user_from, user_to, text [, opts])";
    let cases: Vec<(String, u32, String)> = vec![
        ("{}".into(), code::BAD_ARITY, format!("{signature}, got 0")),
        (
            format!("{{box.NULL, {a}, {b}}}"),
            code::BAD_ARITY,
            format!("{signature}, got 3"),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 'x', box.NULL, 1}}"),
            code::BAD_ARITY,
            format!("{signature}, got 6"),
        ),
        (
            format!("{{box.NULL, box.NULL, {b}, 'x'}}"),
            code::BAD_TYPE,
            "user_from: expected a uuid (string or msgpack uuid), got nil".into(),
        ),
        (
            format!("{{box.NULL, {a}, 42, 'x'}}"),
            code::BAD_TYPE,
            "user_to: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
        (
            format!("{{true, {a}, {b}, 'x'}}"),
            code::BAD_TYPE,
            "dialog_id: expected a uuid (string or msgpack uuid) or a dialog key (string), got boolean".into(),
        ),
        (
            format!("{{{{1}}, {a}, {b}, 'x'}}"),
            code::BAD_TYPE,
            "dialog_id: expected a uuid (string or msgpack uuid) or a dialog key (string), got array".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 12}}"),
            code::BAD_TYPE,
            "text: expected a string, got integer".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, box.NULL}}"),
            code::BAD_TYPE,
            "text: expected a string, got nil".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 1.5}}"),
            code::BAD_TYPE,
            "text: expected a string, got float".into(),
        ),
        (
            format!("{{box.NULL, 'abc', {b}, 'x'}}"),
            code::BAD_UUID,
            "user_from: malformed uuid \"abc\"".into(),
        ),
        (
            format!("{{box.NULL, {a}, '{{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}}', 'x'}}"),
            code::BAD_UUID,
            "user_to: malformed uuid \"{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}\"".into(),
        ),
        (
            format!("{{'0b0f9b9e4a3e4b8e9d1c1f6f0c9f2a01', {a}, {b}, 'x'}}"),
            code::BAD_UUID,
            "dialog_id: malformed uuid \"0b0f9b9e4a3e4b8e9d1c1f6f0c9f2a01\"".into(),
        ),
        (
            format!("{{box.NULL, '00000000-0000-0000-0000-000000000000', {b}, 'x'}}"),
            code::BAD_UUID,
            "user_from: the nil uuid is not a valid id".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 'x', {{foo = 1}}}}"),
            code::BAD_OPTION,
            "opts: unknown option \"foo\"".into(),
        ),
        (
            format!(
                "{{box.NULL, {a}, {b}, 'x', setmetatable({{[1] = 'a'}}, {{__serialize = 'map'}})}}"
            ),
            code::BAD_OPTION,
            "opts: option names must be strings, got integer".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 'x', 'opts'}}"),
            code::BAD_TYPE,
            "opts: expected a map, got string".into(),
        ),
        (
            format!("{{box.NULL, {a}, {b}, 'x', {{request_id = 7}}}}"),
            code::BAD_TYPE,
            "opts.request_id: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
    ];
    for (args, code, message) in cases {
        assert_refused("new_dialog", &args, code, &message);
    }
    // The server goes on: the next valid call succeeds.
    send(None, user(), user(), "still serving");
}

#[tarantool::test]
fn a_retry_with_the_same_request_id_stores_once() {
    let (a, b, r) = (user(), user(), user());
    let args = |text: &str| {
        format!(
            "{{box.NULL, {}, {}, '{text}', {{request_id = {}}}}}",
            q(&a),
            q(&b),
            q(&r)
        )
    };
    let first = call("new_dialog", &args("once")).ok();
    let before = count();
    let again = call("new_dialog", &args("once")).ok();
    assert_eq!(first, again);
    assert_eq!(count(), before);
    assert_refused(
        "new_dialog",
        &args("different"),
        code::REQUEST_CONFLICT,
        &format!(
            "opts.request_id: already used for message {} with other content",
            first[0].as_str().unwrap()
        ),
    );
    assert_eq!(page(pair_dialog(a, b), "{}").len(), 1);
    // The request record sits in its message's bucket, to move with it.
    let bucket = lua_u64(&format!(
        "box.space.dialogs_requests:get{{require('uuid').fromstr('{r}')}}[3]"
    ));
    assert_eq!(
        bucket,
        u64::from(bucket_id(pair_dialog(a, b), stored_bucket_count()))
    );
}

#[tarantool::test]
fn a_panic_becomes_an_error_and_rolls_the_write_back() {
    let (a, b, d) = (user(), user(), user());
    assert_refused(
        "dialogs_test_panic",
        &format!("{{{}, {}, {}, 'lost'}}", q(&d), q(&a), q(&b)),
        code::INTERNAL,
        "dialogs_test_panic: internal error: deliberate panic after a write",
    );
    assert!(page(d, "{}").is_empty());
    assert!(!lua_bool("box.is_in_txn()"));
    send(Some(d), a, b, "after the panic");
    assert_eq!(page(d, "{}").len(), 1);
}

#[tarantool::test]
fn a_panic_inside_the_callers_transaction_undoes_only_the_procedures_write() {
    let (a, b, d) = (user(), user(), user());
    lua_exec("box.begin()");
    let mine = send(Some(d), a, b, "the caller's own write");
    let refused = call(
        "dialogs_test_panic",
        &format!("{{{}, {}, {}, 'lost'}}", q(&d), q(&a), q(&b)),
    );
    let open = lua_bool("box.is_in_txn()");
    let inside = page(d, "{}");
    if open {
        lua_exec("box.commit()");
    }
    match refused {
        Outcome::Err(c, m) => assert_eq!(
            (c, m.as_str()),
            (
                code::INTERNAL,
                "dialogs_test_panic: internal error: deliberate panic after a write"
            )
        ),
        Outcome::Ok(v) => panic!("expected error {}, got {v:?}", code::INTERNAL),
    }
    assert!(open, "the panic ended the caller's transaction");
    assert_eq!(inside, vec![(mine, "the caller's own write".to_owned())]);
    // Committed by the caller: its write is stored, the procedure's is not.
    assert_eq!(
        page(d, "{}"),
        vec![(mine, "the caller's own write".to_owned())]
    );
    assert!(!lua_bool("box.is_in_txn()"));
}

// --- get_dialog ------------------------------------------------------------

/// A dialog of `n` messages; returns its id and the message ids in order.
fn dialog_of(n: usize) -> (Uuid, Vec<Uuid>) {
    let (a, b, d) = (user(), user(), user());
    let ids = (0..n)
        .map(|i| send(Some(d), a, b, &format!("{i}")))
        .collect();
    (d, ids)
}

fn walk(dialog: Uuid, limit: usize, reverse: bool) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut cursor: Option<Uuid> = None;
    loop {
        let c = match (cursor, reverse) {
            (None, _) => String::new(),
            (Some(c), false) => format!(", after = {}", q(&c)),
            (Some(c), true) => format!(", before = {}", q(&c)),
        };
        let rows = page(
            dialog,
            &format!("{{limit = {limit}, reverse = {reverse}{c}}}"),
        );
        assert!(rows.len() <= limit);
        seen.extend(rows.iter().map(|r| r.0));
        if rows.len() < limit {
            return seen;
        }
        cursor = seen.last().copied();
    }
}

#[tarantool::test]
fn a_long_dialog_pages_without_gap_or_duplicate() {
    let (d, ids) = dialog_of(10_000);
    let mut reversed = ids.clone();
    reversed.reverse();
    for limit in [1, 7, 100, 999, 1000] {
        assert_eq!(walk(d, limit, false), ids, "forward, limit {limit}");
        assert_eq!(walk(d, limit, true), reversed, "reverse, limit {limit}");
    }
    // Without options: the oldest 1000, never more.
    assert_eq!(
        page(d, "{}").iter().map(|r| r.0).collect::<Vec<_>>(),
        ids[..1000]
    );
}

#[tarantool::test]
fn cursors_bound_a_window_and_are_positions() {
    let (d, ids) = dialog_of(50);
    let window = |opts: &str| page(d, opts).iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        window(&format!(
            "{{after = {}, before = {}}}",
            q(&ids[10]),
            q(&ids[20])
        )),
        ids[11..20]
    );
    let mut back = ids[11..20].to_vec();
    back.reverse();
    assert_eq!(
        window(&format!(
            "{{after = {}, before = {}, reverse = true}}",
            q(&ids[10]),
            q(&ids[20])
        )),
        back
    );
    assert_eq!(
        window(&format!("{{after = {}}}", q(&ids[49]))),
        Vec::<Uuid>::new()
    );
    assert_eq!(
        window(&format!("{{before = {}}}", q(&ids[0]))),
        Vec::<Uuid>::new()
    );
    assert_eq!(
        window(&format!("{{after = {0}, before = {0}}}", q(&ids[5]))),
        Vec::<Uuid>::new()
    );
    assert_eq!(
        window(&format!(
            "{{after = {}, before = {}}}",
            q(&ids[30]),
            q(&ids[5])
        )),
        Vec::<Uuid>::new()
    );
    assert_eq!(window("{limit = 1}"), ids[..1]);
    assert_eq!(window("{limit = 1, reverse = true}"), ids[49..]);
    // A cursor that is no message (or another dialog's) is a position by id.
    let (_, other) = dialog_of(1);
    assert_eq!(
        window(&format!("{{after = {}}}", q(&other[0]))),
        Vec::<Uuid>::new()
    );
    let max = Uuid::from_u128(u128::MAX >> 1);
    assert_eq!(
        window(&format!(
            "{{before = {}, limit = 3, reverse = true}}",
            q(&max)
        )),
        ids[47..].iter().rev().copied().collect::<Vec<_>>()
    );
    // Neighbouring dialogs never leak into a page.
    assert!(page(user(), "{}").is_empty());
}

#[tarantool::test]
fn every_bad_get_dialog_call_is_refused() {
    let d = q(&user());
    let signature = "get_dialog: expected 1 or 2 arguments (dialog_id [, opts])";
    let cases: Vec<(String, u32, String)> = vec![
        ("{}".into(), code::BAD_ARITY, format!("{signature}, got 0")),
        (
            format!("{{{d}, {{}}, 1}}"),
            code::BAD_ARITY,
            format!("{signature}, got 3"),
        ),
        (
            "{box.NULL}".into(),
            code::BAD_TYPE,
            "dialog_id: expected a uuid (string or msgpack uuid) or a dialog key (string), got nil"
                .into(),
        ),
        (
            "{'{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}'}".into(),
            code::BAD_UUID,
            "dialog_id: malformed uuid \"{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}\"".into(),
        ),
        (
            format!("{{{d}, {{limit = 0}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 1000, got 0".into(),
        ),
        (
            format!("{{{d}, {{limit = 1001}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 1000, got 1001".into(),
        ),
        (
            format!("{{{d}, {{limit = -1}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 1000, got -1".into(),
        ),
        (
            format!("{{{d}, {{limit = 18446744073709551615ULL}}}}"),
            code::BAD_OPTION,
            "opts.limit: must be 1 to 1000, got 18446744073709551615".into(),
        ),
        (
            format!("{{{d}, {{limit = 2.5}}}}"),
            code::BAD_TYPE,
            "opts.limit: expected an integer, got float".into(),
        ),
        (
            format!("{{{d}, {{limit = '10'}}}}"),
            code::BAD_TYPE,
            "opts.limit: expected an integer, got string".into(),
        ),
        (
            format!("{{{d}, {{reverse = 'yes'}}}}"),
            code::BAD_TYPE,
            "opts.reverse: expected a boolean, got string".into(),
        ),
        (
            format!("{{{d}, {{after = 'x'}}}}"),
            code::BAD_UUID,
            "opts.after: malformed uuid \"x\"".into(),
        ),
        (
            format!("{{{d}, {{before = 5}}}}"),
            code::BAD_TYPE,
            "opts.before: expected a uuid (string or msgpack uuid), got integer".into(),
        ),
        (
            format!("{{{d}, {{order = 'desc'}}}}"),
            code::BAD_OPTION,
            "opts: unknown option \"order\"".into(),
        ),
        (
            format!("{{{d}, 10}}"),
            code::BAD_TYPE,
            "opts: expected a map, got integer".into(),
        ),
    ];
    for (args, code, message) in cases {
        assert_refused("get_dialog", &args, code, &message);
    }
    // nil and {} (an empty Lua table is an empty array) mean no options.
    let (d, ids) = dialog_of(2);
    for opts in ["box.NULL", "{}", "{after = box.NULL}"] {
        assert_eq!(
            page(d, opts).iter().map(|r| r.0).collect::<Vec<_>>(),
            ids,
            "{opts}"
        );
    }
}

#[tarantool::test]
fn created_at_is_a_datetime_where_the_server_has_the_type() {
    assert_eq!(Store::get().unwrap().created_at, TimeField::Datetime);
    let (a, b, d) = (user(), user(), user());
    let id = send(Some(d), a, b, "dated");
    let is_dt = lua_bool(&format!(
        "require('datetime').is_datetime(box.space.dialogs:get{{require('uuid').fromstr('{id}')}}[6])"
    ));
    assert!(is_dt);
}

#[tarantool::test]
fn created_at_is_microseconds_where_the_server_has_no_datetime() {
    assert_eq!(Store::get().unwrap().created_at, TimeField::Micros);
    assert!(lua_bool("box.space.dialogs:format()[6].type == 'unsigned'"));
    let (a, b, d) = (user(), user(), user());
    let t0 = now_us();
    let id = send(Some(d), a, b, "stamped");
    let t1 = now_us();
    let stored = lua_u64(&format!(
        "box.space.dialogs:get{{require('uuid').fromstr('{id}')}}[6]"
    ));
    assert!((t0..=t1).contains(&stored), "{stored} not in [{t0}, {t1}]");
}

#[tarantool::test]
fn a_refused_call_leaves_the_callers_transaction_alone() {
    let (a, b, d) = (user(), user(), user());
    lua_exec("box.begin()");
    send(Some(d), a, b, "inside the caller's transaction");
    assert_refused(
        "new_dialog",
        &format!("{{{}, {}, {}, ''}}", q(&d), q(&a), q(&b)),
        code::BAD_TEXT,
        "text: must be 1 to 4096 characters, got 0",
    );
    // With a request_id, new_dialog needs a transaction of its own: Tarantool
    // refuses to open one inside the caller's, and the caller's stays as it was.
    let with_request = call(
        "new_dialog",
        &format!(
            "{{{}, {}, {}, 'x', {{request_id = {}}}}}",
            q(&d),
            q(&a),
            q(&b),
            q(&user())
        ),
    );
    let open = lua_bool("box.is_in_txn()");
    lua_exec("box.commit()");
    assert!(open, "a refusal ended the caller's transaction");
    assert!(
        matches!(&with_request, Outcome::Err(79, m)
            if m.trim_end() == "Operation is not permitted when there is an active transaction"),
        "{with_request:?}"
    );
    assert_eq!(page(d, "{}").len(), 1);
}

// --- the storages' write entry ---------------------------------------------

/// `dialogs_storage_new` outside a vshard storage, with a `_bucket` space of its
/// own making: a write only where the bucket's status is one vshard writes to,
/// `new_dialog`'s reply and row then; a refusal (1012) that writes nothing
/// otherwise, and inside a caller's transaction (the check must be the first
/// statement of the write's own).
#[tarantool::test]
fn the_storage_write_entry_writes_only_a_writable_bucket() {
    const ENTRY: &str = "dialogs_storage_new";
    lua_exec(&format!(
        "box.schema.func.create('{ENTRY}', {{language = 'C', setuid = true, \
         if_not_exists = true}})"
    ));
    let (a, b) = (user(), user());
    let bucket = bucket_id(pair_dialog(a, b), stored_bucket_count());
    let args = |text: &str| format!("{{{bucket}, {{box.NULL, {}, {}, '{text}'}}}}", q(&a), q(&b));
    let refused = |why: &str| format!("{ENTRY}: bucket {bucket} is not writable here: {why}");
    assert_refused(
        ENTRY,
        &args("no _bucket"),
        1012,
        &refused("no _bucket space (not a vshard storage)"),
    );
    let buckets = BucketSpace::create();
    assert_refused(ENTRY, &args("absent"), 1012, &refused("not found"));
    for status in ["sending", "receiving", "readonly", "sent", "garbage"] {
        buckets.set(bucket, status);
        assert_refused(
            ENTRY,
            &args(status),
            1012,
            &refused(&format!("status {status}")),
        );
    }
    let other = bucket % stored_bucket_count() + 1;
    assert_refused(
        ENTRY,
        &format!("{{{other}, {{box.NULL, {}, {}, 'wrong'}}}}", q(&a), q(&b)),
        1012,
        &format!("{ENTRY}: bucket {other} is not writable here: the dialog is in bucket {bucket}"),
    );
    for status in ["active", "pinned"] {
        buckets.set(bucket, status);
        let values = call(ENTRY, &args(status)).ok();
        assert_eq!(values.len(), 1, "one return value: {values:?}");
        let id = Uuid::parse_str(values[0].as_str().expect("the id is a string")).unwrap();
        let row = page(pair_dialog(a, b), "{}").pop().expect("the message");
        assert_eq!(row, (id, status.to_owned()));
    }
    lua_exec("box.begin()");
    let inside = call(ENTRY, &args("inside"));
    lua_exec("box.rollback()");
    assert!(matches!(&inside, Outcome::Err(79, _)), "{inside:?}");
    drop(buckets);
    assert_eq!(page(pair_dialog(a, b), "{}").len(), 2);
}

/// A test that fails midway, inside a transaction, leaves no `_bucket` behind
/// (nor the transaction): [`BucketSpace`] drops it as the failure unwinds.
#[tarantool::test]
fn a_test_failing_midway_leaves_no_bucket_space() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed = std::panic::catch_unwind(|| {
        let buckets = BucketSpace::create();
        buckets.set(1, "active");
        lua_exec("box.begin()");
        panic!("a test failing midway");
    });
    std::panic::set_hook(hook);
    assert!(failed.is_err());
    assert!(!lua_bool("box.is_in_txn()"));
    assert!(lua_bool("box.space._bucket == nil"));
}

// --- the expiry of request ids ---------------------------------------------

/// The pruner of dialogs/requests.lua on a storage (a `_bucket` space): it
/// deletes the expired request records of the buckets this instance owns
/// (active, pinned) and leaves every other one as it is: buckets being sent or
/// received, sent, garbage, read-only, or not here at all. Without `_bucket` (a
/// store that is not sharded) it deletes every expired record.
#[tarantool::test]
fn the_pruner_leaves_alone_the_buckets_a_storage_does_not_own() {
    // In the order of their records' age: the pruner passes records it leaves
    // alone to reach younger ones it deletes.
    const STATUSES: &[&str] = &[
        "sending",
        "receiving",
        "pinned",
        "sent",
        "garbage",
        "readonly",
        "absent",
        "active",
    ];
    let count = stored_bucket_count();
    // One dialog per status, each in a bucket of its own, two requests each.
    let mut dialogs: Vec<(Uuid, u32, &str)> = Vec::new();
    while dialogs.len() < STATUSES.len() {
        let d = user();
        let bucket = bucket_id(d, count);
        if dialogs.iter().all(|&(_, b, _)| b != bucket) {
            dialogs.push((d, bucket, STATUSES[dialogs.len()]));
        }
    }
    let (a, b) = (user(), user());
    for &(d, _, _) in &dialogs {
        for text in ["one", "two"] {
            let values = call(
                "new_dialog",
                &format!(
                    "{{{}, {}, {}, '{text}', {{request_id = {}}}}}",
                    q(&d),
                    q(&a),
                    q(&b),
                    q(&user())
                ),
            )
            .ok();
            assert_eq!(values.len(), 1, "{values:?}");
        }
    }
    let requests_of = |bucket: u32| {
        lua_u64(&format!(
            "box.space.dialogs_requests.index.bucket_id:count({bucket})"
        ))
    };
    let buckets = BucketSpace::create();
    for &(_, bucket, status) in &dialogs {
        if status != "absent" {
            buckets.set(bucket, status);
        }
    }
    // A day from now, with a TTL of a second: every record is expired. Three
    // records per transaction, so that some look at none it may delete.
    let prune = "(function() local r = require('dialogs.requests') local batch = r.BATCH \
                 r.BATCH = 3 local ok, n = pcall(r.prune, 1, \
                 require('clock').time() * 1000 + 86400000) r.BATCH = batch \
                 if not ok then error(n) end return n end)()";
    assert_eq!(lua_u64(prune), 4);
    for &(_, bucket, status) in &dialogs {
        let left = if matches!(status, "active" | "pinned") {
            0
        } else {
            2
        };
        assert_eq!(requests_of(bucket), left, "bucket {bucket}, {status}");
    }
    // The messages stay.
    for &(d, _, status) in &dialogs {
        assert_eq!(page(d, "{}").len(), 2, "{status}");
    }
    drop(buckets);
    // Not a storage: every expired record goes.
    assert!(lua_u64(prune) >= 12);
    assert_eq!(lua_u64("box.space.dialogs_requests:len()"), 0);
}
