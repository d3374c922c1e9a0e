//! The schema cache: the store's spaces and index resolved by name once per loaded
//! module, the bucket count and the type of `created_at` read from the data, and
//! the error check that forgets them when the schema changes under the module.

use std::cell::Cell;
use std::ffi::c_char;

use tarantool::ffi::tarantool as ffi;

use super::inbox::InboxSpaces;
use super::{Store, TimeField, BY_DIALOG, REQUESTS, SPACE};
use crate::error::{Error, Result};
use crate::msgpack::{Reader, Value, Write};

/// Where init.lua keeps the bucket count (fixed for the life of the data) and
/// the inbox's build state.
pub(super) const SYSTEM_SCHEMA: &str = "_schema";
const BUCKET_COUNT_KEY: &str = "dialogs_bucket_count";
/// Tarantool error codes after which the cached ids are stale.
const ER_NO_SUCH_INDEX_ID: u32 = 35;
const ER_NO_SUCH_SPACE: u32 = 36;

thread_local! {
    // Procedures run in the tx thread only; a `Copy` value needs no destructor,
    // so the module can still be unloaded by box.schema.func.reload.
    static CACHED: Cell<Option<Store>> = const { Cell::new(None) };
}

/// Forgets the resolved store: the next [`Store::get`] resolves it again, and
/// the inbox's build flag is read again.
fn forget() {
    CACHED.with(|c| c.set(None));
    super::inbox::forget_built();
}

pub(super) fn check(rc: i32) -> Result<()> {
    if rc < 0 {
        let e = Error::last_box_error();
        if matches!(e.code(), ER_NO_SUCH_SPACE | ER_NO_SUCH_INDEX_ID) {
            forget();
        }
        return Err(e);
    }
    Ok(())
}

fn missing(what: &str) -> Error {
    Error::Internal {
        proc: "store",
        what: format!("{what} not found: the schema is not set up (run init.lua)"),
    }
}

pub(super) fn space_id(name: &str) -> Result<u32> {
    let len = u32::try_from(name.len()).map_err(|_| missing(name))?;
    // SAFETY: a valid pointer and length.
    let id = unsafe { ffi::box_space_id_by_name(name.as_ptr().cast::<c_char>(), len) };
    if id == ffi::BOX_ID_NIL {
        return Err(missing(name));
    }
    Ok(id)
}

pub(super) fn index_id(space: u32, name: &str) -> Result<u32> {
    let len = u32::try_from(name.len()).map_err(|_| missing(name))?;
    // SAFETY: a valid pointer and length.
    let id = unsafe { ffi::box_index_id_by_name(space, name.as_ptr().cast::<c_char>(), len) };
    if id == ffi::BOX_ID_NIL {
        return Err(missing(name));
    }
    Ok(id)
}

/// The bucket count init.lua stored in `_schema`.
fn stored_bucket_count() -> Result<u32> {
    let not_set = || missing(BUCKET_COUNT_KEY);
    let space = space_id(SYSTEM_SCHEMA)?;
    let mut k = Vec::with_capacity(BUCKET_COUNT_KEY.len() + 2);
    k.put_array_header(1);
    k.put_str(BUCKET_COUNT_KEY);
    let bytes = Store::get_tuple(space, &k)?.ok_or_else(not_set)?.to_vec();
    let mut r = Reader::new(&bytes);
    r.read().ok(); // the array header
    r.read().ok(); // the key
    match r.read() {
        Ok(Value::Uint(n)) => u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(not_set),
        _ => Err(not_set()),
    }
}

/// Reads the declared type of `created_at` (the sixth field) from the space format.
fn created_at_type() -> Result<TimeField> {
    use tarantool::util::Value as V;
    let space = tarantool::space::Space::find(SPACE).ok_or_else(|| missing(SPACE))?;
    let meta = space.meta().map_err(|e| Error::Internal {
        proc: "store",
        what: format!("reading the format of space {SPACE}: {e}"),
    })?;
    let kind = meta.format.get(5).and_then(|f| f.get("type"));
    match kind {
        Some(V::Str(t)) if t == "datetime" => Ok(TimeField::Datetime),
        Some(V::Str(t)) if t == "unsigned" => Ok(TimeField::Micros),
        other => Err(Error::Internal {
            proc: "store",
            what: format!("space {SPACE}: created_at has unexpected type {other:?}"),
        }),
    }
}

impl Store {
    /// The store, resolved on first use. The inbox's spaces (schema version 4)
    /// are looked up again on each call until they exist: a replica upgraded
    /// before its master serves messages meanwhile, and takes the inbox once
    /// the master's migration reaches it.
    pub fn get() -> Result<Store> {
        if let Some(mut s) = CACHED.with(Cell::get) {
            if s.inbox.is_none() {
                s.inbox = InboxSpaces::resolve();
                if s.inbox.is_some() {
                    CACHED.with(|c| c.set(Some(s)));
                }
            }
            return Ok(s);
        }
        let space = space_id(SPACE)?;
        let store = Store {
            space,
            by_dialog: index_id(space, BY_DIALOG)?,
            requests: space_id(REQUESTS)?,
            created_at: created_at_type()?,
            bucket_count: stored_bucket_count()?,
            inbox: InboxSpaces::resolve(),
        };
        CACHED.with(|c| c.set(Some(store)));
        Ok(store)
    }
}
