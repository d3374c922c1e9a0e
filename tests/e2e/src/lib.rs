//! End-to-end tests of the dialogs store from Rust: a real `tarantool init.lua` on a
//! free port ([`server`]), called over the network with `rusty_tarantool` (the
//! pipelining tokio client) and, where that client hides something a user sees (the
//! error code, raw msgpack), with a minimal IPROTO client ([`iproto`]).
//!
//! The tests live in `tests/`; this library is what they share.

pub mod admin;
pub mod iproto;
pub mod server;

use std::collections::HashMap;
use std::sync::Mutex;

use rmpv::Value;
use uuid::Uuid;

/// README "Derived dialog ids": the UUIDv5 namespace of pair-derived dialogs.
pub const DIALOG_NAMESPACE: Uuid = uuid::uuid!("891430a2-525c-5f8d-a17c-599239615dc5");
/// The msgpack extension type of a uuid.
pub const MP_UUID: i8 = 2;
/// Message tuple fields, in order.
pub const FIELD_ID: usize = 0;
pub const FIELD_DIALOG_ID: usize = 1;
pub const FIELD_USER_FROM: usize = 2;
pub const FIELD_USER_TO: usize = 3;
pub const FIELD_TEXT: usize = 4;
pub const FIELD_CREATED_AT: usize = 5;

/// README "Errors": the stable codes.
pub mod code {
    pub const BAD_ARITY: u32 = 1001;
    pub const BAD_TYPE: u32 = 1002;
    pub const BAD_UUID: u32 = 1003;
    pub const BAD_TEXT: u32 = 1004;
    pub const BAD_OPTION: u32 = 1005;
}

/// The dialog of the unordered user pair {a, b}: UUIDv5(NS, lo ‖ hi) over raw bytes.
pub fn derived_dialog_id(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut name = lo.as_bytes().to_vec();
    name.extend_from_slice(hi.as_bytes());
    Uuid::new_v5(&DIALOG_NAMESPACE, &name)
}

/// A uuid as a msgpack value of extension type 2, as newer connectors send it.
pub fn uuid_value(u: Uuid) -> Value {
    Value::Ext(MP_UUID, u.as_bytes().to_vec())
}

/// The uuid in a reply field, which must be a msgpack uuid (not a string).
pub fn as_uuid(v: &Value) -> Uuid {
    match v {
        Value::Ext(MP_UUID, bytes) => Uuid::from_slice(bytes).expect("16 bytes"),
        other => panic!("expected a msgpack uuid, got {other:?}"),
    }
}

/// The raw msgpack encoding of a value.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("encode to a Vec");
    buf
}

/// What a procedure's reply looks like on the wire. A C procedure gives its results
/// as a list of return values: new_dialog one (the id), get_dialog one per message
/// tuple. Over IPROTO_CALL, Tarantool before 3.0 sends that list wrapped in one more
/// array (tarantool/tarantool#4799; 3.0 does not wrap by default): new_dialog's data
/// is `[[id]]` on 2.6 and `[id]` on 3.x; get_dialog's `[[t1, t2, ...]]` and
/// `[t1, t2, ...]`. The tests accept exactly one of the two shapes, the same for
/// every reply of one server: server address -> whether its replies are wrapped.
static REPLY_WRAPPED: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);

/// A new_dialog result: the message id string.
pub fn is_message_id(v: &Value) -> bool {
    v.is_str()
}

/// A get_dialog result: a message tuple, 6 fields, the first a msgpack uuid.
pub fn is_message_tuple(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|f| f.len() == 6 && matches!(f[0], Value::Ext(MP_UUID, _)))
}

/// A procedure's return values, from a reply's data (see `REPLY_WRAPPED`). Panics if
/// the data has neither shape or the server changed shape.
pub fn call_results(server: &str, data: Value, is_result: fn(&Value) -> bool) -> Vec<Value> {
    let items = match data {
        Value::Array(items) => items,
        other => panic!("reply data is not an array: {other:?}"),
    };
    let plain = items.iter().all(is_result);
    let wrapped = matches!(items.as_slice(),
        [Value::Array(inner)] if inner.iter().all(is_result));
    assert!(
        plain != wrapped,
        "neither results nor wrapped results: {items:?}"
    );
    let mut seen = REPLY_WRAPPED.lock().unwrap_or_else(|e| e.into_inner());
    let first = *seen
        .get_or_insert_with(HashMap::new)
        .entry(server.to_owned())
        .or_insert(wrapped);
    assert_eq!(
        first, wrapped,
        "reply shape changed on one server: {items:?}"
    );
    if !wrapped {
        return items;
    }
    match items.into_iter().next() {
        Some(Value::Array(inner)) => inner,
        _ => unreachable!("checked above"),
    }
}
