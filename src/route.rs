//! `dialogs_route(bucket_count, proc, args)`: a router's check of a call before
//! any storage sees it.
//!
//! A vshard router (`dialogs/router.lua`) passes the arguments a client gave
//! `new_dialog` or `get_dialog` (`args`, one array) together with the procedure's
//! name and the cluster's bucket count. They are validated by the procedure's own
//! parser, so a bad call is refused here with exactly the code and message the
//! procedure would give, and no storage is asked. A good call replies with the
//! bucket its dialog lives in (for a `new_dialog` with a nil `dialog_id`, the
//! dialog of the user pair). Not granted to clients: only the router's Lua calls it.

use crate::bucket::bucket_id;
use crate::error::{Error, Result};
use crate::get_dialog::GetDialog;
use crate::msgpack::{Reader, Value, Write};
use crate::new_dialog::NewDialog;
use crate::Reply;

const PROC: &str = "dialogs_route";

/// A call of this entry that did not come from the router's code: a bug there.
fn misuse(what: &str) -> Error {
    Error::Internal {
        proc: PROC,
        what: format!("expected (bucket_count, 'new_dialog' | 'get_dialog', {{args}}): {what}"),
    }
}

/// The bucket of a validated call of `proc` with the msgpack argument array `args`.
pub fn bucket_of(proc: &[u8], args: &[u8], bucket_count: u32) -> Result<u32> {
    let dialog = match proc {
        b"new_dialog" => NewDialog::parse(args)?.dialog(),
        b"get_dialog" => GetDialog::parse(args)?.page.dialog_id,
        _ => return Err(misuse("unknown procedure")),
    };
    Ok(bucket_id(dialog, bucket_count))
}

/// The procedure body: read the three arguments, validate, reply with the bucket.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let mut r = Reader::new(args);
    if r.read() != Ok(Value::Array(3)) {
        return Err(misuse("not three arguments"));
    }
    let bucket_count = match r.read() {
        Ok(Value::Uint(n)) => u32::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| misuse("bucket_count out of range"))?,
        _ => return Err(misuse("bucket_count is not an integer")),
    };
    let Ok(Value::Str(proc)) = r.read() else {
        return Err(misuse("proc is not a string"));
    };
    // The third argument, the call's own argument array, is the rest of the input.
    let bucket = bucket_of(proc, r.rest(), bucket_count)?;
    let mut out = Vec::with_capacity(5);
    out.put_uint(u64::from(bucket));
    reply.mp(&out)
}
