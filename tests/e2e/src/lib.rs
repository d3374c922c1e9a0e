//! End-to-end tests of the dialogs store from Rust: a real `tarantool init.lua` on a
//! free port ([`server`]), called over the network with `rusty_tarantool` (the
//! pipelining tokio client) and, where that client hides something a user sees (the
//! error code, raw msgpack), with a minimal IPROTO client ([`iproto`]).
//!
//! The tests live in `tests/`; this library is what they share.

pub mod admin;
pub mod iproto;
pub mod server;

use std::sync::OnceLock;

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

/// What a procedure's reply looks like on the wire (README "Reply shape"), exactly,
/// for the server under test:
///
/// | how the server sends a C function's results | new_dialog | get_dialog |
/// |---|---|---|
/// | in one array (2.x: no compat option `c_func_iproto_multireturn`) | `[[id]]` | `[[t1, t2, ...]]` |
/// | one value each (3.x: the option at its default, `new`) | `[id]` | `[[t1, t2, ...]]` |
///
/// Which applies is asked of the server binary (the option exists, and its
/// value), never read from a version string; the store leaves the option alone,
/// so every server of the suite runs with the binary's default.
pub fn results_one_value_each() -> bool {
    static STATE: OnceLock<bool> = OnceLock::new();
    *STATE.get_or_init(|| {
        let state = probe_binary(MULTIRETURN_PROBE_LUA);
        assert!(
            ["absent", "new", "old"].contains(&state.as_str()),
            "reply-shape probe: {state:?}"
        );
        state == "new"
    })
}

/// `tostring()` of a Lua expression evaluated by a fresh instance of the server
/// binary under test (no `box.cfg`).
pub fn probe_binary(lua_expr: &str) -> String {
    let out = std::process::Command::new(server::tarantool_binary())
        .args(["-e", &format!("print(tostring({lua_expr})) os.exit(0)")])
        .output()
        .expect("run tarantool");
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !value.is_empty(),
        "probe {lua_expr:?} failed: {:?} {value:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    value
}

/// Tarantool's own code for a request whose msgpack it refuses (README "Errors").
pub const ER_INVALID_MSGPACK: u32 = 20;
/// Its message when the arguments hold a malformed extension.
pub const INVALID_MSGPACK_BODY: &str = "Invalid MsgPack - packet body";

/// Whether the server checks the msgpack extensions of every request (decimal,
/// uuid, error, datetime, interval, tuple) before any procedure runs, refusing a
/// malformed one with [`ER_INVALID_MSGPACK`]. Tarantool began to in 2.10.1
/// (gh-6857) and has no option or flag that says so, so this asks for what came
/// in the same release: the module API function `box_tuple_field_by_path`
/// (gh-7228), exported from 2.10.1 on and never before. Sending a malformed
/// extension to see what happens would probe the behaviour under test itself.
pub fn server_checks_request_extensions() -> bool {
    static STATE: OnceLock<bool> = OnceLock::new();
    *STATE.get_or_init(|| {
        probe_binary(
            "(function() local ffi = require('ffi') \
             pcall(ffi.cdef, 'void *dlsym(void *handle, const char *symbol);') \
             return ffi.C.dlsym(nil, 'box_tuple_field_by_path') ~= nil end)()",
        ) == "true"
    })
}

/// A Lua expression: `absent` (no such compat option: results are always wrapped),
/// else the option's state, `new` (one value each) or `old` (wrapped).
pub const MULTIRETURN_PROBE_LUA: &str = "(function() \
    local ok, compat = pcall(require, 'compat') \
    if not ok then return 'absent' end \
    local has, opt = pcall(function() return compat.c_func_iproto_multireturn end) \
    if not has then return 'absent' end \
    return opt:is_new() and 'new' or 'old' end)()";

/// A new_dialog result: the message id string.
pub fn is_message_id(v: &Value) -> bool {
    v.is_str()
}

/// A get_dialog result: a message tuple, 6 fields, the first a msgpack uuid.
pub fn is_message_tuple(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|f| f.len() == 6 && matches!(f[0], Value::Ext(MP_UUID, _)))
}

/// new_dialog's reply data: the id string, from exactly the server's shape (see
/// [`results_one_value_each`]). Panics on any other shape.
pub fn message_id_result(data: Value) -> String {
    let one_each = results_one_value_each();
    let id = match (&data, one_each) {
        (Value::Array(items), true) => match items.as_slice() {
            [id] => id.as_str(),
            _ => None,
        },
        (Value::Array(items), false) => match items.as_slice() {
            [Value::Array(inner)] => match inner.as_slice() {
                [id] => id.as_str(),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let expected = if one_each { "[id]" } else { "[[id]]" };
    id.map(str::to_owned)
        .unwrap_or_else(|| panic!("new_dialog: expected {expected}, got {data:?}"))
}

/// get_dialog's reply data, `[[t1, t2, ...]]` on every server: the message tuples.
/// Panics on any other shape.
pub fn message_tuples(data: Value) -> Vec<Value> {
    match data {
        Value::Array(items) => match <[Value; 1]>::try_from(items) {
            Ok([Value::Array(rows)]) if rows.iter().all(is_message_tuple) => rows,
            Ok(other) => panic!("get_dialog: expected [[t1, t2, ...]], got {other:?}"),
            Err(items) => panic!("get_dialog: expected [[t1, t2, ...]], got {items:?}"),
        },
        other => panic!("get_dialog: expected [[t1, t2, ...]], got {other:?}"),
    }
}
