//! End-to-end tests of the dialogs store from Rust: a real `tarantool init.lua` on a
//! free port ([`server`]), called over the network with `rusty_tarantool` (the
//! pipelining tokio client) and, where that client hides something a user sees (the
//! error code, raw msgpack), with a minimal IPROTO client ([`iproto`]).
//!
//! The tests live in `tests/`; this library is what they share.

pub mod iproto;
pub mod server;

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
