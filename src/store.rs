//! The message store: the only code that touches Tarantool's spaces.
//!
//! [`Store`] holds the ids of the `dialogs` space, its `dialog_id_k` index and the
//! `dialogs_requests` space, resolved by name once and cached for the life of the
//! loaded module (a schema change that drops them resets the cache), with the
//! bucket count the messages are sharded by. Every method
//! goes straight to the C API: no Lua, no serde, no intermediate tuples on the
//! hot path. Stored tuples come back either owned ([`Tuple`], referenced, for the
//! single-row look-ups) or borrowed ([`TupleRef`], tied by its lifetime to the
//! iterator step that produced it, for pages).

use std::cell::Cell;
use std::ffi::c_char;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use tarantool::datetime::Datetime;
use tarantool::ffi::tarantool as ffi;
use tarantool::msgpack::{Context, Encode};
use tarantool::transaction::{self, TransactionError};
use tarantool::tuple::Tuple;
use uuid::Uuid;

use crate::bucket::bucket_id;
use crate::error::{Error, Result};
use crate::get_dialog::GetDialog;
use crate::msgpack::{Reader, Value, Write};

/// The message space, as `init.lua` creates it.
const SPACE: &str = "dialogs";
/// `(dialog_id, id)`: a dialog's messages in id order.
const BY_DIALOG: &str = "dialog_id_k";
/// `request_id -> message_id`, for retried `new_dialog` calls.
const REQUESTS: &str = "dialogs_requests";
/// Every space's primary index.
const PRIMARY: u32 = 0;
/// Field numbers (0-based) of the message tuple.
const FIELD_ID: u32 = 0;
const FIELD_DIALOG: u32 = 1;
/// `bucket_id`, vshard's bucket of the message's dialog: the store's own field,
/// never sent to clients.
const FIELD_BUCKET: u32 = 6;
/// Number of fields in a message tuple.
const MESSAGE_FIELDS: u32 = 7;
/// The fields a client gets of a message: all but `bucket_id`.
const CLIENT_FIELDS: u32 = FIELD_BUCKET;
/// Number of fields in a `dialogs_requests` tuple: request_id, message_id, bucket_id.
const REQUEST_FIELDS: u32 = 3;
/// Where init.lua keeps the bucket count (fixed for the life of the data).
const SYSTEM_SCHEMA: &str = "_schema";
const BUCKET_COUNT_KEY: &str = "dialogs_bucket_count";
/// Tarantool error codes after which the cached ids are stale.
const ER_NO_SUCH_INDEX_ID: u32 = 35;
const ER_NO_SUCH_SPACE: u32 = 36;

/// Tarantool iterator types (box_index_iterator).
#[derive(Clone, Copy)]
#[repr(i32)]
pub enum Iter {
    /// Equal keys, ascending.
    Eq = 0,
    /// Equal keys, descending.
    Req = 1,
    /// Keys below, descending.
    Lt = 3,
    /// Keys above, ascending.
    Gt = 6,
}

/// How `created_at` is stored: the space's format decides, not the server
/// version, so a data directory made on a server without `datetime` keeps
/// working after an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeField {
    /// A Tarantool `datetime` (2.10+).
    Datetime,
    /// Unsigned microseconds since the Unix epoch.
    Micros,
}

/// A message to store.
pub struct Message<'a> {
    pub id: Uuid,
    pub dialog_id: Uuid,
    pub user_from: Uuid,
    pub user_to: Uuid,
    pub text: &'a str,
    /// Microseconds since the Unix epoch.
    pub created_at_us: u64,
}

/// Handles to the spaces; cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Store {
    space: u32,
    by_dialog: u32,
    requests: u32,
    pub created_at: TimeField,
    /// How many vshard buckets dialogs are spread over.
    pub bucket_count: u32,
}

thread_local! {
    // Procedures run in the tx thread only; a `Copy` value needs no destructor,
    // so the module can still be unloaded by box.schema.func.reload.
    static CACHED: Cell<Option<Store>> = const { Cell::new(None) };
}

/// A stored tuple, borrowed for `'a`: from the iterator step or the call that
/// produced it, which does not yield while `'a` lasts (Tarantool keeps a tuple it
/// handed out alive until the fiber yields). Not `Copy`: it cannot outlive its
/// source by being copied out of it.
pub struct TupleRef<'a> {
    tuple: NonNull<ffi::BoxTuple>,
    _source: PhantomData<&'a ffi::BoxTuple>,
}

impl<'a> TupleRef<'a> {
    /// # Safety
    /// `tuple` must stay a live tuple for `'a`: either referenced by what `'a`
    /// borrows, or handed out by Tarantool in a stretch of code that does not yield.
    unsafe fn new(tuple: NonNull<ffi::BoxTuple>) -> Self {
        TupleRef {
            tuple,
            _source: PhantomData,
        }
    }

    /// An owned (referenced) tuple, borrowed.
    pub fn of(tuple: &'a Tuple) -> Self {
        // The pointer is never null (the Tuple holds it), and `tuple`'s reference
        // keeps it alive for 'a.
        TupleRef {
            tuple: NonNull::from(tuple_header(tuple)),
            _source: PhantomData,
        }
    }

    pub fn as_ptr(&self) -> *mut ffi::BoxTuple {
        self.tuple.as_ptr()
    }

    /// Where the stored `bucket_id` starts in the tuple's msgpack; None for a
    /// tuple of six fields or fewer (stored before sharding), which is already
    /// the message as clients see it. (One look-up: Tarantool keeps the offset
    /// of an indexed field, and `bucket_id` is indexed.)
    fn bucket_field(&self) -> Option<NonNull<u8>> {
        // SAFETY: a live tuple; box_tuple_field returns null for a field it lacks.
        let field = unsafe { ffi::box_tuple_field(self.as_ptr(), FIELD_BUCKET) };
        NonNull::new(field.cast_mut().cast::<u8>())
    }

    /// A uuid field, read in place.
    fn uuid(&self, fieldno: u32) -> Option<Uuid> {
        // SAFETY: box_tuple_field returns null or a pointer to the field's msgpack
        // inside the tuple. The format makes `fieldno` a uuid, so the 18 bytes read
        // lie within the tuple; they are checked to be a uuid before use.
        let bytes = unsafe {
            let start = ffi::box_tuple_field(self.as_ptr(), fieldno);
            if start.is_null() || ffi::box_tuple_bsize(self.as_ptr()) < UUID_MP_LEN {
                return None;
            }
            std::slice::from_raw_parts(start.cast::<u8>(), UUID_MP_LEN)
        };
        Reader::new(bytes).read().ok()?.as_uuid()
    }

    /// Appends the message as clients see it to `out`: a msgpack array of its
    /// first six fields, without the store's `bucket_id` (a stored tuple of six
    /// fields is copied whole).
    pub fn append_client_to(&self, out: &mut Vec<u8>) -> Result<()> {
        let Some(bucket) = self.bucket_field() else {
            return self.append_to(out);
        };
        // SAFETY: a live tuple; box_tuple_field returns null or a pointer into the
        // tuple's msgpack, where fields lie in order, so the bytes from the start
        // of field 0 to the start of field 6 are exactly fields 0..=5; they are
        // copied before anything can yield.
        let fields = unsafe {
            let first = ffi::box_tuple_field(self.as_ptr(), 0).cast::<u8>();
            let bucket = bucket.as_ptr().cast_const();
            if first.is_null() || bucket < first {
                return Err(corrupt(SPACE));
            }
            let len = usize::try_from(bucket.offset_from(first)).map_err(|_| corrupt(SPACE))?;
            std::slice::from_raw_parts(first, len)
        };
        out.put_array_header(CLIENT_FIELDS);
        out.extend_from_slice(fields);
        Ok(())
    }

    /// Copies the tuple's msgpack to the end of `out`.
    fn append_to(&self, out: &mut Vec<u8>) -> Result<()> {
        // SAFETY: a live tuple; the copy goes into spare capacity reserved for it,
        // and the length is only extended by what box_tuple_to_buf wrote.
        unsafe {
            let size = ffi::box_tuple_bsize(self.as_ptr());
            out.reserve(size);
            let dst = out.as_mut_ptr().add(out.len()).cast::<c_char>();
            let written = ffi::box_tuple_to_buf(self.as_ptr(), dst, size);
            let written = usize::try_from(written).map_err(|_| Error::last_box_error())?;
            out.set_len(out.len() + written.min(size));
        }
        Ok(())
    }

    /// The message as clients see it, as a tuple: a stored tuple of six fields
    /// is itself; otherwise a new tuple (not stored) of its first six fields,
    /// built in `scratch`, alive until the next tuple is made: the borrow of
    /// `scratch` says so. (A tuple, not raw msgpack: Tarantool 2.6 cannot hand
    /// more than a few dozen msgpack results of a C procedure to a Lua caller, but
    /// any number of tuples.)
    pub fn client_form<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Result<TupleRef<'s>> {
        if self.bucket_field().is_none() {
            // SAFETY: the same tuple, for a shorter lifetime.
            return Ok(unsafe { TupleRef::new(self.tuple) });
        }
        scratch.clear();
        self.append_client_to(scratch)?;
        let range = scratch.as_ptr_range();
        // SAFETY: `scratch` holds one msgpack array; Tarantool copies it into a new
        // tuple, referenced until the next tuple is made (box_tuple_new's
        // contract), which needs `scratch` again, so not while 's lasts.
        let made = unsafe {
            ffi::box_tuple_new(
                ffi::box_tuple_format_default(),
                range.start.cast(),
                range.end.cast(),
            )
        };
        let made = NonNull::new(made).ok_or_else(Error::last_box_error)?;
        // SAFETY: see above.
        Ok(unsafe { TupleRef::new(made) })
    }
}

/// The box tuple an owned [`Tuple`] references.
fn tuple_header(tuple: &Tuple) -> &ffi::BoxTuple {
    // SAFETY: a Tuple always holds a live, referenced, non-null tuple.
    unsafe { &*tuple.as_ptr() }
}

/// Owns a box iterator and frees it on every path out.
struct IndexCursor(NonNull<ffi::BoxIterator>);

impl Drop for IndexCursor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from box_index_iterator and is freed once.
        unsafe { ffi::box_iterator_free(self.0.as_ptr()) }
    }
}

impl IndexCursor {
    /// The next tuple, valid until the cursor moves again.
    fn advance(&mut self) -> Result<Option<TupleRef<'_>>> {
        let mut tuple = ptr::null_mut();
        // SAFETY: a live iterator and a valid out-pointer.
        if unsafe { ffi::box_iterator_next(self.0.as_ptr(), &mut tuple) } < 0 {
            return Err(Error::last_box_error());
        }
        // SAFETY: the iterator's current tuple stays alive while the iterator
        // is borrowed (it keeps its own reference until it moves).
        Ok(NonNull::new(tuple).map(|t| unsafe { TupleRef::new(t) }))
    }
}

/// Length of a msgpack uuid: the fixext16 marker, the type, 16 bytes.
const UUID_MP_LEN: usize = 18;

fn check(rc: i32) -> Result<()> {
    if rc < 0 {
        let e = Error::last_box_error();
        if matches!(e.code(), ER_NO_SUCH_SPACE | ER_NO_SUCH_INDEX_ID) {
            CACHED.with(|c| c.set(None));
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

fn space_id(name: &str) -> Result<u32> {
    let len = u32::try_from(name.len()).map_err(|_| missing(name))?;
    // SAFETY: a valid pointer and length.
    let id = unsafe { ffi::box_space_id_by_name(name.as_ptr().cast::<c_char>(), len) };
    if id == ffi::BOX_ID_NIL {
        return Err(missing(name));
    }
    Ok(id)
}

fn index_id(space: u32, name: &str) -> Result<u32> {
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
    /// The store, resolved on first use.
    pub fn get() -> Result<Store> {
        if let Some(s) = CACHED.with(Cell::get) {
            return Ok(s);
        }
        let space = space_id(SPACE)?;
        let store = Store {
            space,
            by_dialog: index_id(space, BY_DIALOG)?,
            requests: space_id(REQUESTS)?,
            created_at: created_at_type()?,
            bucket_count: stored_bucket_count()?,
        };
        CACHED.with(|c| c.set(Some(store)));
        Ok(store)
    }

    /// The greatest message id stored, if any.
    pub fn max_id(&self) -> Result<Option<Uuid>> {
        let key = [0x90u8];
        let mut tuple = ptr::null_mut();
        // SAFETY: a valid empty-array key and out-pointer.
        check(unsafe {
            ffi::box_index_max(
                self.space,
                PRIMARY,
                key.as_ptr().cast(),
                key.as_ptr_range().end.cast(),
                &mut tuple,
            )
        })?;
        // SAFETY: the greatest tuple, read before anything can yield.
        Ok(NonNull::new(tuple).and_then(|t| unsafe { TupleRef::new(t) }.uuid(FIELD_ID)))
    }

    /// The msgpack of a message tuple.
    fn encode(&self, m: &Message<'_>) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(96 + m.text.len());
        buf.put_array_header(MESSAGE_FIELDS);
        buf.put_uuid(&m.id);
        buf.put_uuid(&m.dialog_id);
        buf.put_uuid(&m.user_from);
        buf.put_uuid(&m.user_to);
        buf.put_str(m.text);
        match self.created_at {
            TimeField::Micros => buf.put_uint(m.created_at_us),
            TimeField::Datetime => created_at_datetime(m.created_at_us)?
                .encode(&mut buf, &Context::DEFAULT)
                .map_err(|e| Error::Internal {
                    proc: "store",
                    what: format!("encoding created_at: {e}"),
                })?,
        }
        buf.put_uint(u64::from(bucket_id(m.dialog_id, self.bucket_count)));
        Ok(buf)
    }

    fn insert_raw(space: u32, tuple: &[u8]) -> Result<()> {
        let range = tuple.as_ptr_range();
        // SAFETY: `tuple` is one msgpack array; Tarantool copies it.
        check(unsafe {
            ffi::box_insert(space, range.start.cast(), range.end.cast(), ptr::null_mut())
        })
    }

    fn replace_raw(space: u32, tuple: &[u8]) -> Result<()> {
        let range = tuple.as_ptr_range();
        // SAFETY: `tuple` is one msgpack array; Tarantool copies it.
        check(unsafe {
            ffi::box_replace(space, range.start.cast(), range.end.cast(), ptr::null_mut())
        })
    }

    /// Stores one message: with no guard, as one statement (in a caller's
    /// transaction, if one is open); with a guard, in a transaction of its own
    /// that runs the guard first.
    pub fn insert(&self, m: &Message<'_>, guard: Guard<'_>) -> Result<()> {
        let buf = self.encode(m)?;
        match guard {
            None => Self::insert_raw(self.space, &buf),
            Some(guard) => atomically(|| {
                guard()?;
                Self::insert_raw(self.space, &buf)
            }),
        }
    }

    /// Stores one message and records `request_id` for it, atomically (after
    /// the guard, if any, in the same transaction).
    pub fn insert_with_request(
        &self,
        m: &Message<'_>,
        request_id: Uuid,
        guard: Guard<'_>,
    ) -> Result<()> {
        let buf = self.encode(m)?;
        let mut req = Vec::with_capacity(48);
        req.put_array_header(REQUEST_FIELDS);
        req.put_uuid(&request_id);
        req.put_uuid(&m.id);
        // A request lives in its message's bucket and moves with it.
        req.put_uint(u64::from(bucket_id(m.dialog_id, self.bucket_count)));
        atomically(|| {
            run(guard)?;
            Self::insert_raw(self.requests, &req)?;
            Self::insert_raw(self.space, &buf)
        })
    }

    /// The message stored for `request_id`, as the message's own tuple fields
    /// (dialog, from, to, text) for comparison, with its id. On Tarantool 2.x
    /// (no MVCC) this also sees the rows of a try that still waits for its WAL
    /// write or its quorum: see [`Store::confirm_request`].
    pub fn request(&self, request_id: Uuid) -> Result<Option<StoredRequest>> {
        let Some(req) = Self::get_tuple(self.requests, &key(&[request_id]))? else {
            return Ok(None);
        };
        self.stored_request(&req)
    }

    /// What an earlier try of `request_id` stored, answered only once that try
    /// is committed. `same` says whether the earlier try stored this call's
    /// message. If it did not, the answer is given at once and nothing is
    /// written (the call is refused either way). If it did, the request's row is
    /// rewritten unchanged in a transaction of its own, which Tarantool commits
    /// after every transaction before it (the WAL and the synchronous queue keep
    /// their order) and rolls back with any of them (a failed WAL write or a
    /// quorum timeout rolls back every later transaction too). So
    /// `Ok(Some((_, true)))` means the try that stored the row is committed, and
    /// an error means it may have been rolled back: look again. The guard, if
    /// any, runs first, in the same transaction.
    pub fn confirm_request(
        &self,
        request_id: Uuid,
        same: impl FnOnce(&StoredRequest) -> bool,
        guard: Guard<'_>,
    ) -> Result<Option<(StoredRequest, bool)>> {
        atomically(|| {
            run(guard)?;
            let Some(req) = Self::get_tuple(self.requests, &key(&[request_id]))? else {
                return Ok(None);
            };
            let Some(stored) = self.stored_request(&req)? else {
                return Ok(None);
            };
            if !same(&stored) {
                return Ok(Some((stored, false)));
            }
            Self::replace_raw(self.requests, &req.to_vec())?;
            Ok(Some((stored, true)))
        })
    }

    fn stored_request(&self, req: &Tuple) -> Result<Option<StoredRequest>> {
        let message_id = TupleRef::of(req).uuid(1).ok_or_else(|| corrupt(REQUESTS))?;
        let Some(msg) = Self::get_tuple(self.space, &key(&[message_id]))? else {
            // The message was deleted since; the request is still answered.
            return Ok(Some(StoredRequest {
                message_id,
                content: None,
            }));
        };
        let content = StoredContent::decode(&msg.to_vec()).ok_or_else(|| corrupt(SPACE))?;
        Ok(Some(StoredRequest {
            message_id,
            content: Some(content),
        }))
    }

    /// The tuple of `key` in `space`'s primary index, referenced (it stays valid
    /// across a yield, such as a commit).
    fn get_tuple(space: u32, key: &[u8]) -> Result<Option<Tuple>> {
        let range = key.as_ptr_range();
        let mut tuple = ptr::null_mut();
        // SAFETY: a valid key and out-pointer.
        check(unsafe {
            ffi::box_index_get(
                space,
                PRIMARY,
                range.start.cast(),
                range.end.cast(),
                &mut tuple,
            )
        })?;
        Ok(Tuple::try_from_ptr(tuple))
    }

    /// Passes to `emit` the page `request` asks for: up to `limit` messages of
    /// its dialog strictly between `after` and `before`, ascending or (with
    /// `reverse`) descending by id. Returns how many it passed.
    pub fn page(
        &self,
        request: &GetDialog,
        mut emit: impl FnMut(&TupleRef<'_>) -> Result<()>,
    ) -> Result<u32> {
        let GetDialog {
            dialog_id,
            limit,
            after,
            before,
            reverse,
        } = *request;
        // Start at the cursor on the side we walk from; stop at the other one.
        let (iter, start, stop) = match (reverse, after, before) {
            (false, Some(a), _) => (Iter::Gt, Some(a), before),
            (false, None, _) => (Iter::Eq, None, before),
            (true, _, Some(b)) => (Iter::Lt, Some(b), after),
            (true, _, None) => (Iter::Req, None, after),
        };
        let start_key = match start {
            Some(s) => key(&[dialog_id, s]),
            None => key(&[dialog_id]),
        };
        let range = start_key.as_ptr_range();
        // SAFETY: a valid key; the iterator is freed by its guard.
        let it = unsafe {
            ffi::box_index_iterator(
                self.space,
                self.by_dialog,
                iter as i32,
                range.start.cast(),
                range.end.cast(),
            )
        };
        let Some(it) = NonNull::new(it) else {
            check(-1)?;
            return Ok(0);
        };
        let mut it = IndexCursor(it);
        let mut count = 0u32;
        while count < limit {
            let Some(tuple) = it.advance()? else { break };
            // GT and LT run on past the dialog; EQ and REQ never do.
            if matches!(iter, Iter::Gt | Iter::Lt) && tuple.uuid(FIELD_DIALOG) != Some(dialog_id) {
                break;
            }
            if let Some(stop) = stop {
                let id = tuple.uuid(FIELD_ID).ok_or_else(|| corrupt(SPACE))?;
                if (!reverse && id >= stop) || (reverse && id <= stop) {
                    break;
                }
            }
            emit(&tuple)?;
            count += 1;
        }
        Ok(count)
    }
}

/// An index key of uuid parts: a msgpack array of them.
fn key(parts: &[Uuid]) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + 18 * parts.len());
    key.put_array_header(u32::try_from(parts.len()).unwrap_or(u32::MAX));
    for part in parts {
        key.put_uuid(part);
    }
    key
}

fn corrupt(space: &str) -> Error {
    Error::Internal {
        proc: "store",
        what: format!("a tuple of space {space} does not match its format"),
    }
}

/// What a `request_id` already stored.
pub struct StoredRequest {
    pub message_id: Uuid,
    /// None when the message has been deleted since.
    pub content: Option<StoredContent>,
}

/// The fields of a stored message that a retry must repeat.
#[derive(Debug, PartialEq, Eq)]
pub struct StoredContent {
    pub dialog_id: Uuid,
    pub user_from: Uuid,
    pub user_to: Uuid,
    pub text: String,
}

impl StoredContent {
    /// Reads fields 2..=5 of a message tuple's msgpack.
    fn decode(tuple: &[u8]) -> Option<Self> {
        fn uuid(r: &mut Reader<'_>) -> Option<Uuid> {
            r.read().ok()?.as_uuid()
        }
        let mut r = Reader::new(tuple);
        r.read().ok()?; // the array header
        uuid(&mut r)?; // the message id
        let dialog_id = uuid(&mut r)?;
        let user_from = uuid(&mut r)?;
        let user_to = uuid(&mut r)?;
        match r.read() {
            Ok(Value::Str(s)) => Some(StoredContent {
                dialog_id,
                user_from,
                user_to,
                text: std::str::from_utf8(s).ok()?.to_owned(),
            }),
            _ => None,
        }
    }
}

/// `created_at` as a Tarantool `datetime`: UTC, to the microsecond. (Through
/// `time`'s calendar and back, this costs about 65 ns against 15 ns for the bytes
/// written by hand, measured in a release build: 0.2% of a write's 30 us of server
/// CPU, below what the A/B of whole calls can see, so the crate's type is used.)
fn created_at_datetime(us: u64) -> Result<Datetime> {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).map_err(|e| {
            Error::Internal {
                proc: "store",
                what: format!("created_at {us} us: {e}"),
            }
        })?;
    Ok(Datetime::from_inner(at))
}

/// A check a write makes first, inside the write's own transaction and with no
/// yield before the write's statements (the storage write entry's check of its
/// bucket, src/storage_write.rs); None for a client's call of `new_dialog`.
pub type Guard<'g> = Option<&'g dyn Fn() -> Result<()>>;

fn run(guard: Guard<'_>) -> Result<()> {
    guard.map_or(Ok(()), |guard| guard())
}

/// Runs `f` in a transaction of its own (the crate's), committing on success and
/// rolling back on an error. Inside a caller's transaction nothing runs: the call
/// is refused with Tarantool's own error for it (79, ER_ACTIVE_TRANSACTION).
pub fn atomically<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    transaction::transaction(f).map_err(|e| match e {
        TransactionError::RolledBack(e) => e,
        // Tarantool's error is still the fiber's last one: the box error itself
        // (code and message) is what the caller gets, as it always was.
        TransactionError::AlreadyStarted
        | TransactionError::FailedToCommit(_)
        | TransactionError::FailedToRollback(_) => Error::last_box_error(),
    })
}

/// A savepoint inside a transaction (Tarantool's `box_txn_savepoint_t`).
#[repr(C)]
pub struct BoxTxnSavepoint {
    _opaque: [u8; 0],
}

extern "C" {
    // Exported by every Tarantool since 2.0 (box.savepoint is built on them), but
    // not declared in 2.6's module.h nor by the tarantool crate.
    fn box_txn_savepoint() -> *mut BoxTxnSavepoint;
    fn box_txn_rollback_to_savepoint(savepoint: *mut BoxTxnSavepoint) -> i32;
}

/// Where a procedure call began, as far as transactions go: what a caught panic
/// may undo. The procedure's own transaction is rolled back whole; inside a
/// caller's transaction (`box.begin()` in Lua, then a call), only what the
/// procedure wrote after this mark is undone, and the caller's transaction stays
/// open with the caller's own writes.
pub enum TxnMark {
    /// No transaction was active at entry.
    Outside,
    /// The caller's transaction, and a savepoint at the call's start.
    Inside(NonNull<BoxTxnSavepoint>),
}

impl TxnMark {
    /// Notes the transaction state at the start of a call. Inside a caller's
    /// transaction this takes a savepoint; if Tarantool cannot make one, the
    /// call is refused with its error before it writes anything.
    pub fn take() -> Result<TxnMark> {
        // SAFETY: plain C API calls in the tx thread; the savepoint lives on the
        // transaction's memory and is used only while that transaction is open.
        unsafe {
            if !transaction::is_in_transaction() {
                return Ok(TxnMark::Outside);
            }
            match NonNull::new(box_txn_savepoint()) {
                Some(sp) => Ok(TxnMark::Inside(sp)),
                None => Err(Error::last_box_error()),
            }
        }
    }

    /// Undoes what the call wrote (after a panic): rolls back a transaction the
    /// call opened, or returns the caller's transaction to the mark.
    pub fn undo(self) {
        match self {
            TxnMark::Outside => {
                if transaction::is_in_transaction() {
                    // What could fail here has no one to tell: the panic's own
                    // error is the reply.
                    let _ = transaction::rollback();
                }
            }
            // SAFETY: the caller's transaction is still the one the savepoint
            // belongs to: a procedure never commits or ends a transaction it did
            // not open (`atomically` refuses to begin inside one).
            TxnMark::Inside(sp) => unsafe {
                if transaction::is_in_transaction() {
                    box_txn_rollback_to_savepoint(sp.as_ptr());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's datetime writes what the store always wrote: a fixext of the
    /// seconds (i64 LE), and the nanoseconds (i32 LE) with a zero offset and zone
    /// only when there are any.
    #[test]
    fn created_at_datetime_bytes() {
        for us in [
            0u64,
            1,
            1_700_000_000_000_000,
            1_700_000_000_123_456,
            999_999,
        ] {
            let mut got = Vec::new();
            created_at_datetime(us)
                .unwrap()
                .encode(&mut got, &Context::DEFAULT)
                .unwrap();
            let secs = i64::try_from(us / 1_000_000).unwrap().to_le_bytes();
            let nanos = i32::try_from(us % 1_000_000 * 1000).unwrap().to_le_bytes();
            let mut want = Vec::new();
            if us % 1_000_000 == 0 {
                want.extend_from_slice(&[0xd7, 4]);
                want.extend_from_slice(&secs);
            } else {
                want.extend_from_slice(&[0xd8, 4]);
                want.extend_from_slice(&secs);
                want.extend_from_slice(&nanos);
                want.extend_from_slice(&[0, 0, 0, 0]);
            }
            assert_eq!(got, want, "{us} us");
        }
    }
}
