//! Fuzzing through a real connection (issue 4, point 2): at least 10,000 random
//! argument lists for new_dialog and get_dialog, sent as raw msgpack (so invalid
//! UTF-8 and any extension type can be sent too).
//!
//! Properties: the server never dies and the connection never breaks; every reply
//! is a result of the documented shape or an error with a code documented for this
//! server (README "Errors": 1001..=1007 from the procedures, 1008 means a panic was
//! caught, which is a bug, so it fails here; and on a server that checks msgpack
//! extensions in requests, Tarantool's own 20 for a call whose arguments hold an
//! extension of a type it checks, always for a malformed uuid, never otherwise);
//! and at the end the number of stored messages (counted by admin) equals the
//! number of distinct ids that successful new_dialog calls returned, each of them
//! present. A failing case is shrunk by proptest to a small argument list.

use std::cell::RefCell;
use std::collections::HashSet;

use dialogs_e2e::iproto::RawConn;
use dialogs_e2e::server::{Server, PASSWORD, USER};
use dialogs_e2e::{
    message_id_result, message_tuples, server_checks_request_extensions, ER_INVALID_MSGPACK,
    INVALID_MSGPACK_BODY,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

const CASES: u32 = 10_000;
/// README "Errors": every code a refusal may carry. 1008 (a caught panic) is not
/// here on purpose.
const DOCUMENTED: std::ops::RangeInclusive<u32> = 1001..=1007;
/// Ids the generator draws from, so that calls hit each other's dialogs, users and
/// request ids; the last one is the nil uuid (always refused).
const POOL: [u128; 8] = [
    0x0b0f9b9e_4a3e_4b8e_9d1c_1f6f0c9f2a01,
    0x5d7c0a3e_2c11_4f0e_8f55_3a2b8c1d4e02,
    0x9a1e44c2_77d0_4c5b_a1f3_0c2d5e6f7a03,
    0x3f1c2d4e_5a6b_4c7d_8e9f_a0b1c2d3e4f5,
    0xc0ffee00_abcd_4ef0_9abc_def012345678,
    0x01890000_0000_7000_8000_000000000001,
    0xffffffff_ffff_ffff_ffff_ffffffffffff,
    0,
];
/// The msgpack extension types a server that checks extensions validates: decimal,
/// uuid, error, datetime, interval, tuple.
const CHECKED_EXT_TYPES: [i8; 6] = [1, 2, 3, 4, 6, 7];
const OPTION_NAMES: [&str; 6] = ["limit", "after", "before", "reverse", "request_id", "Limit"];

/// One generated argument, encoded by [`Arg::encode`].
#[derive(Debug, Clone)]
enum Arg {
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    F64(f64),
    F32(f32),
    Str(String),
    /// A msgpack str whose payload may be any bytes (invalid UTF-8 included).
    RawStr(Vec<u8>),
    Bin(Vec<u8>),
    /// POOL[i] as a string, upper-cased or not, possibly cut or extended.
    UuidStr(usize, bool, i8),
    /// POOL[i] as a msgpack uuid.
    UuidExt(usize),
    Ext(i8, Vec<u8>),
    Array(Vec<Arg>),
    Map(Vec<(Arg, Arg)>),
}

impl Arg {
    fn encode(&self, out: &mut Vec<u8>) {
        use rmp::encode as e;
        match self {
            Arg::Nil => e::write_nil(out).unwrap(),
            Arg::Bool(b) => e::write_bool(out, *b).unwrap(),
            Arg::Int(n) => {
                e::write_sint(out, *n).unwrap();
            }
            Arg::Uint(n) => {
                e::write_uint(out, *n).unwrap();
            }
            Arg::F64(f) => e::write_f64(out, *f).unwrap(),
            Arg::F32(f) => e::write_f32(out, *f).unwrap(),
            Arg::Str(s) => e::write_str(out, s).unwrap(),
            Arg::RawStr(b) => {
                e::write_str_len(out, b.len() as u32).unwrap();
                out.extend_from_slice(b);
            }
            Arg::Bin(b) => e::write_bin(out, b).unwrap(),
            Arg::UuidStr(i, upper, cut) => {
                let mut s = Uuid::from_u128(POOL[i % POOL.len()]).to_string();
                if *upper {
                    s = s.to_uppercase();
                }
                match cut {
                    c if *c < 0 => s.truncate(s.len().saturating_sub(c.unsigned_abs() as usize)),
                    c if *c > 0 => s.push_str(&"0".repeat(*c as usize)),
                    _ => {}
                }
                e::write_str(out, &s).unwrap();
            }
            Arg::UuidExt(i) => {
                e::write_ext_meta(out, 16, 2).unwrap();
                out.extend_from_slice(&POOL[i % POOL.len()].to_be_bytes());
            }
            Arg::Ext(kind, data) => {
                e::write_ext_meta(out, data.len() as u32, *kind).unwrap();
                out.extend_from_slice(data);
            }
            Arg::Array(items) => {
                e::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|a| a.encode(out));
            }
            Arg::Map(pairs) => {
                e::write_map_len(out, pairs.len() as u32).unwrap();
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }
}

impl Arg {
    /// Whether `pred` holds for this argument or anything inside it.
    fn any(&self, pred: &dyn Fn(&Arg) -> bool) -> bool {
        pred(self)
            || match self {
                Arg::Array(items) => items.iter().any(|a| a.any(pred)),
                Arg::Map(pairs) => pairs.iter().any(|(k, v)| k.any(pred) || v.any(pred)),
                _ => false,
            }
    }
}

/// An extension of a type the server checks (when it checks extensions at all).
fn checked_extension(a: &Arg) -> bool {
    matches!(a, Arg::Ext(kind, _) if CHECKED_EXT_TYPES.contains(kind))
        || matches!(a, Arg::UuidExt(_))
}

/// A uuid extension that is not 16 bytes: malformed by definition.
fn malformed_uuid(a: &Arg) -> bool {
    matches!(a, Arg::Ext(2, data) if data.len() != 16)
}

fn uuid_like() -> impl Strategy<Value = Arg> {
    prop_oneof![
        6 => (0..POOL.len(), any::<bool>()).prop_map(|(i, up)| Arg::UuidStr(i, up, 0)),
        4 => (0..POOL.len()).prop_map(Arg::UuidExt),
        1 => (0..POOL.len(), any::<bool>(), -3i8..=3).prop_map(|(i, up, c)| Arg::UuidStr(i, up, c)),
        1 => vec(any::<u8>(), 0..20).prop_map(|b| Arg::Ext(2, b)),
        1 => any_leaf(),
    ]
}

/// A dialog_id: a uuid-like value, or a string key (README "Dialog keys"): the
/// report's two-uuid keys over the pool (so keyed calls meet), short keys, keys
/// around the 255-byte limit, and any bytes.
fn dialog_like() -> impl Strategy<Value = Arg> {
    let pool_key = (0..POOL.len(), 0..POOL.len()).prop_map(|(i, j)| {
        Arg::Str(format!(
            "{}{}",
            Uuid::from_u128(POOL[i]),
            Uuid::from_u128(POOL[j])
        ))
    });
    prop_oneof![
        8 => uuid_like(),
        2 => pool_key,
        2 => "[a-zé語 :-]{1,12}".prop_map(Arg::Str),
        1 => vec(prop::sample::select(vec!['k', 'я']), 120..260)
            .prop_map(|c| Arg::Str(c.into_iter().collect())),
        1 => vec(any::<u8>(), 0..300).prop_map(Arg::RawStr),
    ]
}

fn text_like() -> impl Strategy<Value = Arg> {
    let chars = prop::sample::select(vec!['a', 'z', ' ', 'é', '語', '🙂', '\0', '\u{301}']);
    prop_oneof![
        8 => "[a-zé語🙂 ]{1,24}".prop_map(Arg::Str),
        2 => vec(chars, 4090..4100).prop_map(|c| Arg::Str(c.into_iter().collect())),
        1 => Just(Arg::Str(String::new())),
        1 => vec(any::<u8>(), 0..40).prop_map(Arg::RawStr),
        1 => any_leaf(),
    ]
}

fn any_leaf() -> BoxedStrategy<Arg> {
    prop_oneof![
        Just(Arg::Nil),
        any::<bool>().prop_map(Arg::Bool),
        any::<i64>().prop_map(Arg::Int),
        any::<u64>().prop_map(Arg::Uint),
        (-5i64..1100).prop_map(Arg::Int),
        any::<f64>().prop_map(Arg::F64),
        any::<f32>().prop_map(Arg::F32),
        ".{0,40}".prop_map(Arg::Str),
        vec(any::<u8>(), 0..40).prop_map(Arg::RawStr),
        vec(any::<u8>(), 0..40).prop_map(Arg::Bin),
        (0..POOL.len(), any::<bool>(), -3i8..=3).prop_map(|(i, u, c)| Arg::UuidStr(i, u, c)),
        (0..POOL.len()).prop_map(Arg::UuidExt),
        (any::<i8>(), vec(any::<u8>(), 0..20)).prop_map(|(k, d)| Arg::Ext(k, d)),
    ]
    .boxed()
}

fn any_arg() -> impl Strategy<Value = Arg> {
    any_leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Arg::Array),
            vec((inner.clone(), inner), 0..4).prop_map(Arg::Map),
        ]
    })
}

fn option_value(name: &str) -> BoxedStrategy<Arg> {
    match name {
        "limit" => prop_oneof![4 => (0i64..1002).prop_map(Arg::Int), 1 => any_leaf()].boxed(),
        "reverse" => prop_oneof![4 => any::<bool>().prop_map(Arg::Bool), 1 => any_leaf()].boxed(),
        _ => uuid_like().boxed(),
    }
}

/// An options map: mostly known names with fitting values, sometimes anything.
fn opts_like() -> impl Strategy<Value = Arg> {
    let entry = prop::sample::select(OPTION_NAMES.to_vec())
        .prop_flat_map(|name| (Just(Arg::Str(name.to_owned())), option_value(name)));
    prop_oneof![
        6 => vec(entry, 0..4).prop_map(Arg::Map),
        1 => Just(Arg::Nil),
        1 => Just(Arg::Array(vec![])),
        1 => any_arg(),
    ]
}

/// A call: the procedure and its argument list.
fn call() -> impl Strategy<Value = (&'static str, Vec<Arg>)> {
    let dialog_or_nil = prop_oneof![3 => dialog_like(), 1 => Just(Arg::Nil)];
    let new_shaped = (
        dialog_or_nil,
        uuid_like(),
        uuid_like(),
        text_like(),
        opts_like(),
        any::<bool>(),
    )
        .prop_map(|(d, f, t, x, o, with_opts)| {
            let mut v = vec![d, f, t, x];
            if with_opts {
                v.push(o);
            }
            ("new_dialog", v)
        });
    let get_shaped = (dialog_like(), opts_like(), any::<bool>())
        .prop_map(|(d, o, with_opts)| ("get_dialog", if with_opts { vec![d, o] } else { vec![d] }));
    let proc = prop::sample::select(vec!["new_dialog", "get_dialog"]);
    prop_oneof![
        5 => new_shaped,
        3 => get_shaped,
        2 => (proc, vec(any_arg(), 0..=6)),
    ]
}

fn encode_args(args: &[Arg]) -> Vec<u8> {
    let mut out = Vec::new();
    Arg::Array(args.to_vec()).encode(&mut out);
    out
}

#[test]
fn random_argument_lists_get_a_result_or_a_documented_error() {
    let mut server = Server::start_with_admin(&[]);
    let addr = server.addr();
    let pid = server.pid();
    let conn = RefCell::new(RawConn::connect(&addr, USER, PASSWORD).expect("login"));
    let ids: RefCell<HashSet<Uuid>> = RefCell::new(HashSet::new());
    let tally = RefCell::new([0u64; 4]); // new ok, get ok, refused, calls

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let checks_extensions = server_checks_request_extensions();
    let result = runner.run(&call(), |(proc, args)| {
        let has_checked_ext = args.iter().any(|a| a.any(&checked_extension));
        let has_malformed_uuid = args.iter().any(|a| a.any(&malformed_uuid));
        let reply = conn
            .borrow_mut()
            .call(proc, &encode_args(&args))
            .map_err(|e| TestCaseError::fail(format!("connection broke: {e}")))?;
        let mut t = tally.borrow_mut();
        t[3] += 1;
        match reply {
            Ok(_) if checks_extensions && has_malformed_uuid => {
                return Err(TestCaseError::fail(format!(
                    "a malformed uuid extension was accepted: {proc}({args:?})"
                )));
            }
            Ok(data) => {
                if proc == "new_dialog" {
                    let id = message_id_result(data);
                    let parsed = Uuid::parse_str(&id)
                        .map_err(|_| TestCaseError::fail(format!("not an id: {id}")))?;
                    prop_assert_eq!(parsed.to_string(), id);
                    ids.borrow_mut().insert(parsed);
                    t[0] += 1;
                } else {
                    let rows = message_tuples(data);
                    prop_assert!(rows.len() <= 1000);
                    t[1] += 1;
                }
            }
            Err(e) => {
                if checks_extensions && (has_malformed_uuid || e.code == ER_INVALID_MSGPACK) {
                    // The server's own check, before any procedure runs.
                    prop_assert!(
                        has_checked_ext
                            && e.code == ER_INVALID_MSGPACK
                            && e.message == INVALID_MSGPACK_BODY,
                        "expected the server's {} for {}({:?}), got {}",
                        ER_INVALID_MSGPACK,
                        proc,
                        args,
                        e
                    );
                } else {
                    prop_assert!(
                        DOCUMENTED.contains(&e.code),
                        "undocumented error {} for {}({:?})",
                        e,
                        proc,
                        args
                    );
                }
                t[2] += 1;
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    assert!(server.is_running(), "the server died");
    assert_eq!(server.pid(), pid);
    let [new_ok, get_ok, refused, calls] = *tally.borrow();
    assert!(calls >= u64::from(CASES));
    assert!(
        new_ok > 500 && get_ok > 500 && refused > 1000,
        "{:?}",
        tally.borrow()
    );
    let mut admin = server.admin();
    let stored = admin.eval_u64("box.space.dialogs:len()").expect("count");
    let ids = ids.into_inner();
    assert_eq!(stored, ids.len() as u64, "stored vs acknowledged ids");
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    for chunk in ids.chunks(200) {
        let list: Vec<String> = chunk.iter().map(|s| format!("'{s}'")).collect();
        let present = admin
            .eval_u64(&format!(
                "(function() local u = require('uuid') local n = 0 \
                 for _, s in ipairs({{{}}}) do \
                 if box.space.dialogs:get(u.fromstr(s)) then n = n + 1 end end \
                 return n end)()",
                list.join(",")
            ))
            .expect("lookup");
        assert_eq!(present, chunk.len() as u64);
    }
    eprintln!(
        "fuzz: {calls} calls, new_dialog ok {new_ok}, get_dialog ok {get_ok}, \
         refused {refused}, stored {stored}"
    );
    server.stop();
}
