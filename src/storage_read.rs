//! `dialogs_storage_get(bucket_id, args)`: `get_dialog` on a vshard storage,
//! for the router, with the bucket checked in the same call.
//!
//! The router (`dialogs/router.lua`) calls this entry directly on the replica set
//! of the dialog's bucket, instead of going through `vshard.storage.call` and a
//! Lua function around the procedure, which turns the page into Lua values and
//! encodes it again (docs/sharding.md, "Cost: `make bench`, target `sharded`").
//! `args` is `get_dialog`'s own argument array: it is parsed by the procedure's
//! parser (the same errors). Then the bucket the dialog lives in
//! ([`crate::bucket`]) must be `bucket_id`, as in the write entry: a router that
//! names another bucket (one started with another bucket count than the
//! cluster's) would otherwise read where the dialog's messages are not. Then the
//! bucket is looked up in vshard's `_bucket` space and, if this instance may
//! serve reads of it, the page is read and returned as one value, an array of the
//! messages (on every server: the router keeps only a call's first values). A
//! bucket that is not the dialog's, or one this instance may not read (absent,
//! being received, sent, garbage, or no `_bucket` at all), is refused with
//! [`NOT_HERE`] and nothing else; the router then takes the ordinary way, which
//! retries and finds the bucket's new home, and runs this entry too (through
//! `vshard.storage.call` and `dialogs/storage.lua`, with the same checks). Not
//! granted to clients.
//!
//! Why no vshard bucket reference: a reference keeps a bucket in place while a
//! call that may yield uses it. This call never yields between the check and the
//! last tuple of the reply (memtx reads and building the reply do not yield), and
//! a bucket move or garbage collection runs in fibers of this same thread, so none
//! can change `_bucket` or the bucket's rows in between: the page is read from
//! exactly the state the check saw.

use tarantool::error::BoxError;
use uuid::Uuid;

use crate::bucket::{self, BUCKET_SPACE};
use crate::error::{Error, Result};
use crate::get_dialog::GetDialog;
use crate::msgpack::{Reader, Value};
use crate::store::Store;
use crate::Reply;

const PROC: &str = "dialogs_storage_get";

/// The refusal of a bucket this instance may not read (or, from the write entry,
/// src/storage_write.rs, write) now: an internal code, between the router and a
/// storage; clients never see it (the router falls back to `vshard.storage.call`).
pub const NOT_HERE: u32 = 1012;

/// The bucket statuses vshard serves reads from (its `bucket_status_is_readable`:
/// writable ones, and a bucket being sent or made read-only, whose rows are all
/// still here and take no writes).
pub(crate) const READABLE: &[&str] = &["active", "pinned", "sending", "readonly"];

/// Splits a storage entry's two arguments, `(bucket_id, {<procedure>'s
/// arguments})`, into the bucket and the bytes of the procedure's own argument
/// array. Anything else is a call that did not come from the router's code: a bug
/// there, refused as an internal error naming `proc` and what `inner` expects.
pub fn split_args<'a>(proc: &'static str, inner: &str, args: &'a [u8]) -> Result<(u64, &'a [u8])> {
    let misuse = |what: &str| Error::Internal {
        proc,
        what: format!("expected (bucket_id, {{{inner}'s arguments}}): {what}"),
    };
    let mut r = Reader::new(args);
    if r.read() != Ok(Value::Array(2)) {
        return Err(misuse("not two arguments"));
    }
    let Ok(Value::Uint(bucket_id)) = r.read() else {
        return Err(misuse("bucket_id is not an integer"));
    };
    Ok((bucket_id, r.rest()))
}

/// The [`NOT_HERE`] refusal by entry `proc` of `bucket_id`, which is not
/// `usable` ("readable", "writable") here, and why.
pub(crate) fn not_here(proc: &str, bucket_id: u64, usable: &str, why: &str) -> Error {
    Error::Box(Box::new(BoxError::new(
        NOT_HERE,
        format!("{proc}: bucket {bucket_id} is not {usable} here: {why}"),
    )))
}

/// Whether `dialog` lives in `bucket_id` among the store's `bucket_count`
/// buckets, or the refusal of entry `proc` naming the dialog's bucket: a storage
/// entry serves a dialog only under its own bucket, whatever bucket the caller
/// names.
pub(crate) fn check_dialog_bucket(
    proc: &str,
    bucket_id: u64,
    dialog: Uuid,
    bucket_count: u32,
    usable: &str,
) -> Result<()> {
    check_owner_bucket(proc, bucket_id, dialog, "dialog", bucket_count, usable)
}

/// Whether `owner` (a dialog, or a user whose inbox this is: `what` says
/// which) lives in `bucket_id` among `bucket_count` buckets, or the refusal of
/// entry `proc` naming the owner's bucket.
pub(crate) fn check_owner_bucket(
    proc: &str,
    bucket_id: u64,
    owner: Uuid,
    what: &str,
    bucket_count: u32,
    usable: &str,
) -> Result<()> {
    let owners_bucket = bucket::bucket_id(owner, bucket_count);
    if u64::from(owners_bucket) == bucket_id {
        return Ok(());
    }
    Err(not_here(
        proc,
        bucket_id,
        usable,
        &format!("the {what} is in bucket {owners_bucket}"),
    ))
}

/// Whether `_bucket` holds `bucket_id` in one of the `allowed` statuses now, or
/// the refusal of entry `proc` saying why not. Reads `_bucket` through the C API
/// only: it never yields.
pub(crate) fn check_bucket(
    proc: &str,
    bucket_id: u64,
    allowed: &[&str],
    usable: &str,
) -> Result<()> {
    let refuse = |why: &str| not_here(proc, bucket_id, usable, why);
    let Some(space) = tarantool::space::Space::find(BUCKET_SPACE) else {
        return Err(refuse("no _bucket space (not a vshard storage)"));
    };
    let tuple = space
        .get(&(bucket_id,))
        .map_err(|e| refuse(&e.to_string()))?
        .ok_or_else(|| refuse("not found"))?;
    let status: Option<&str> = tuple.field(1).map_err(|e| refuse(&e.to_string()))?;
    match status {
        Some(s) if allowed.contains(&s) => Ok(()),
        Some(s) => Err(refuse(&format!("status {s}"))),
        None => Err(refuse("no status")),
    }
}

/// Whether this instance may serve reads of `bucket_id` now, or why not.
fn check_readable(bucket_id: u64) -> Result<()> {
    check_bucket(PROC, bucket_id, READABLE, "readable")
}

/// The procedure body: read the two arguments, validate `get_dialog`'s, check the
/// dialog's bucket and the bucket's status, reply with the page.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let (bucket_id, get_dialog_args) = split_args(PROC, "get_dialog", args)?;
    let request = GetDialog::parse(get_dialog_args)?;
    let store = Store::get()?;
    check_dialog_bucket(
        PROC,
        bucket_id,
        request.page.dialog_id,
        store.bucket_count,
        "readable",
    )?;
    check_readable(bucket_id)?;
    request.apply_one_value(&store, reply)?;
    Ok(())
}
