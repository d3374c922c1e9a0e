//! Inserts: a message, or a message with its `request_id` record in one
//! transaction, and the look-ups that let a retried `new_dialog` find and confirm
//! what an earlier try stored.

use std::ptr;

use tarantool::datetime::Datetime;
use tarantool::ffi::tarantool as ffi;
use tarantool::msgpack::{Context, Encode};
use tarantool::tuple::Tuple;
use uuid::Uuid;

use super::schema::check;
use super::txn::{atomically, within};
use super::{
    corrupt, key, Store, TimeField, TupleRef, MESSAGE_FIELDS, REQUESTS, REQUEST_FIELDS, SPACE,
};
use crate::bucket::bucket_id;
use crate::error::{Error, Result};
use crate::inbox::entry::Delivery;
use crate::msgpack::{Reader, Value, Write};

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

/// A check a write makes first, inside the write's own transaction and with no
/// yield before the write's statements (the storage write entry's check of its
/// bucket, src/storage_write.rs); None for a client's call of `new_dialog`.
pub type Guard<'g> = Option<&'g dyn Fn() -> Result<()>>;

fn run(guard: Guard<'_>) -> Result<()> {
    guard.map_or(Ok(()), |guard| guard())
}

impl Store {
    /// The msgpack of a message tuple, and where its text lies in it.
    fn encode(&self, m: &Message<'_>) -> Result<Encoded> {
        let mut buf = Vec::with_capacity(96 + m.text.len());
        buf.put_array_header(MESSAGE_FIELDS);
        buf.put_uuid(&m.id);
        buf.put_uuid(&m.dialog_id);
        buf.put_uuid(&m.user_from);
        buf.put_uuid(&m.user_to);
        buf.put_str(m.text);
        let text = buf.len() - m.text.len()..buf.len();
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
        Ok(Encoded { buf, text })
    }

    pub(super) fn insert_raw(space: u32, tuple: &[u8]) -> Result<()> {
        let range = tuple.as_ptr_range();
        // SAFETY: `tuple` is one msgpack array; Tarantool copies it.
        check(unsafe {
            ffi::box_insert(space, range.start.cast(), range.end.cast(), ptr::null_mut())
        })
    }

    pub(super) fn replace_raw(space: u32, tuple: &[u8]) -> Result<()> {
        let range = tuple.as_ptr_range();
        // SAFETY: `tuple` is one msgpack array; Tarantool copies it.
        check(unsafe {
            ffi::box_replace(space, range.start.cast(), range.end.cast(), ptr::null_mut())
        })
    }

    /// The inbox's part of storing `m` ([`Store::inbox_upkeep`]): both users'
    /// entries and totals, or the outbox row on a vshard storage; nothing before
    /// the inbox is built. The text is taken from the encoded tuple, not from
    /// `m`: a call made from Lua has its arguments on the fiber's region, which
    /// a read outside a transaction (the id generator's look-up of the greatest
    /// id) frees, and the statements before the upkeep reuse.
    fn upkeep(&self, m: &Message<'_>, encoded: &Encoded) -> Result<()> {
        self.inbox_upkeep(&Delivery {
            id: m.id,
            dialog_id: m.dialog_id,
            from: m.user_from,
            to: m.user_to,
            text: encoded.text(),
        })
    }

    /// Stores one message and its inbox upkeep, in one transaction (one WAL
    /// write): with no guard, in a caller's transaction if one is open, else in
    /// its own; with a guard, in a transaction of its own that runs the guard
    /// first.
    pub fn insert(&self, m: &Message<'_>, guard: Guard<'_>) -> Result<()> {
        let encoded = self.encode(m)?;
        let write = || {
            Self::insert_raw(self.space, &encoded.buf)?;
            self.upkeep(m, &encoded)
        };
        match guard {
            None => within(write),
            Some(guard) => atomically(|| {
                guard()?;
                write()
            }),
        }
    }

    /// Stores one message and records `request_id` for it, with its inbox
    /// upkeep, atomically (after the guard, if any, in the same transaction). A
    /// retry that finds the record writes nothing ([`Store::confirm_request`]
    /// rewrites the record only), so the inbox counts the message once.
    pub fn insert_with_request(
        &self,
        m: &Message<'_>,
        request_id: Uuid,
        guard: Guard<'_>,
    ) -> Result<()> {
        let encoded = self.encode(m)?;
        let mut req = Vec::with_capacity(48);
        req.put_array_header(REQUEST_FIELDS);
        req.put_uuid(&request_id);
        req.put_uuid(&m.id);
        // A request lives in its message's bucket and moves with it.
        req.put_uint(u64::from(bucket_id(m.dialog_id, self.bucket_count)));
        atomically(|| {
            run(guard)?;
            Self::insert_raw(self.requests, &req)?;
            Self::insert_raw(self.space, &encoded.buf)?;
            self.upkeep(m, &encoded)
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
}

/// A message tuple's msgpack, and the range of its text's bytes in it.
struct Encoded {
    buf: Vec<u8>,
    text: std::ops::Range<usize>,
}

impl Encoded {
    /// The message's text, in the encoded tuple.
    fn text(&self) -> &str {
        let bytes = self.buf.get(self.text.clone()).unwrap_or_default();
        // SAFETY: `text` is the range `encode` copied a `&str` into, whole.
        unsafe { std::str::from_utf8_unchecked(bytes) }
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
