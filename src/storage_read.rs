//! `dialogs_storage_get(bucket_id, args)`: `get_dialog` on a vshard storage,
//! for the router, with the bucket checked in the same call.
//!
//! The router (`dialogs/router.lua`) calls this entry directly on the replica set
//! of the dialog's bucket, instead of going through `vshard.storage.call` and a
//! Lua function around the procedure, which turns the page into Lua values and
//! encodes it again (README, "Sharding by dialog_id with vshard", "Cost").
//! `args` is `get_dialog`'s own argument array: it is parsed by the procedure's
//! parser (the same errors), then the bucket is looked up in vshard's `_bucket`
//! space and, if this instance may serve reads of it, the page is read and
//! returned as one value, an array of the messages (on every server: the router
//! keeps only a call's first values). A bucket this instance may not read
//! (absent, being received, sent, garbage, or no `_bucket` at all) is refused
//! with [`NOT_HERE`] and nothing else; the router then takes the ordinary way,
//! which retries and finds the bucket's new home. Not granted to clients.
//!
//! Why no vshard bucket reference: a reference keeps a bucket in place while a
//! call that may yield uses it. This call never yields between the check and the
//! last tuple of the reply (memtx reads and building the reply do not yield), and
//! a bucket move or garbage collection runs in fibers of this same thread, so none
//! can change `_bucket` or the bucket's rows in between: the page is read from
//! exactly the state the check saw.

use tarantool::error::BoxError;

use crate::error::{Error, Result};
use crate::get_dialog::GetDialog;
use crate::msgpack::{Reader, Value};
use crate::store::Store;
use crate::Reply;

const PROC: &str = "dialogs_storage_get";

/// The refusal of a bucket this instance may not read now: an internal code,
/// between the router and a storage; clients never see it (the router falls back
/// to `vshard.storage.call`).
pub const NOT_HERE: u32 = 1012;

/// vshard's bucket space: `{id, status, destination, ...}`, primary key `id`.
const BUCKET_SPACE: &str = "_bucket";

/// The bucket statuses vshard serves reads from (its `bucket_status_is_readable`:
/// writable ones, and a bucket being sent or made read-only, whose rows are all
/// still here and take no writes).
const READABLE: &[&str] = &["active", "pinned", "sending", "readonly"];

/// A call of this entry that did not come from the router's code: a bug there.
fn misuse(what: &str) -> Error {
    Error::Internal {
        proc: PROC,
        what: format!("expected (bucket_id, {{get_dialog's arguments}}): {what}"),
    }
}

fn not_here(bucket_id: u64, why: &str) -> Error {
    Error::Box(Box::new(BoxError::new(
        NOT_HERE,
        format!("{PROC}: bucket {bucket_id} is not readable here: {why}"),
    )))
}

/// Whether this instance may serve reads of `bucket_id` now, or why not.
fn check_readable(bucket_id: u64) -> Result<()> {
    let Some(space) = tarantool::space::Space::find(BUCKET_SPACE) else {
        return Err(not_here(
            bucket_id,
            "no _bucket space (not a vshard storage)",
        ));
    };
    let tuple = space
        .get(&(bucket_id,))
        .map_err(|e| not_here(bucket_id, &e.to_string()))?
        .ok_or_else(|| not_here(bucket_id, "not found"))?;
    let status: Option<&str> = tuple
        .field(1)
        .map_err(|e| not_here(bucket_id, &e.to_string()))?;
    match status {
        Some(s) if READABLE.contains(&s) => Ok(()),
        Some(s) => Err(not_here(bucket_id, &format!("status {s}"))),
        None => Err(not_here(bucket_id, "no status")),
    }
}

/// The procedure body: read the two arguments, validate `get_dialog`'s, check the
/// bucket, reply with the page.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let mut r = Reader::new(args);
    if r.read() != Ok(Value::Array(2)) {
        return Err(misuse("not two arguments"));
    }
    let Ok(Value::Uint(bucket_id)) = r.read() else {
        return Err(misuse("bucket_id is not an integer"));
    };
    // The second argument, get_dialog's own argument array, is the rest.
    let request = GetDialog::parse(r.rest())?;
    check_readable(bucket_id)?;
    request.apply_one_value(&Store::get()?, reply)?;
    Ok(())
}
