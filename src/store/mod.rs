//! The message store: the only code that touches Tarantool's spaces, one concept
//! per file.
//!
//! - [`schema`]: [`Store`], the ids of the `dialogs` space, its `dialog_id_k` index
//!   and the `dialogs_requests` space, resolved by name once and cached for the life
//!   of the loaded module (a schema change that drops them resets the cache), with
//!   the bucket count the messages are sharded by and how `created_at` is stored;
//! - [`tuple`]: the view of a stored tuple ([`TupleRef`]) and single-row look-ups;
//! - [`write`]: inserts of messages, with their `request_id` records, and the
//!   request protocol of retried calls;
//! - [`page`]: the page walk over a dialog ([`PageQuery`]);
//! - [`txn`]: transactions, and the savepoint a call's panic rolls back to;
//! - [`inbox`]: the inbox's three spaces (entries, totals, outbox), their
//!   reads and writes, and the walks over messages the inbox counts with.
//!
//! Every method goes straight to the C API: no Lua, no serde, no intermediate
//! tuples on the hot path. Stored tuples come back either owned ([`Tuple`],
//! referenced, for the single-row look-ups) or borrowed ([`TupleRef`], tied by its
//! lifetime to the iterator step that produced it, for pages).
//!
//! [`Tuple`]: tarantool::tuple::Tuple

use uuid::Uuid;

use crate::error::Error;
use crate::msgpack::Write;

pub mod inbox;
pub mod page;
pub mod schema;
pub mod tuple;
pub mod txn;
pub mod write;

pub use inbox::{InboxSpaces, StoredMessage};
pub use page::PageQuery;
pub use tuple::TupleRef;
pub use txn::{atomically, within, TxnMark};
pub use write::{Guard, Message, StoredContent, StoredRequest};

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
const FIELD_FROM: u32 = 2;
const FIELD_TO: u32 = 3;
const FIELD_TEXT: u32 = 4;
/// `bucket_id`, vshard's bucket of the message's dialog: the store's own field,
/// never sent to clients.
const FIELD_BUCKET: u32 = 6;
/// Number of fields in a message tuple.
const MESSAGE_FIELDS: u32 = 7;
/// The fields a client gets of a message: all but `bucket_id`.
const CLIENT_FIELDS: u32 = FIELD_BUCKET;
/// Number of fields in a `dialogs_requests` tuple: request_id, message_id, bucket_id.
const REQUEST_FIELDS: u32 = 3;

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

/// Handles to the spaces; cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Store {
    space: u32,
    by_dialog: u32,
    requests: u32,
    pub created_at: TimeField,
    /// How many vshard buckets dialogs are spread over.
    pub bucket_count: u32,
    /// The inbox's spaces; None before schema version 4.
    pub inbox: Option<InboxSpaces>,
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

/// A stored tuple that does not match its space's format (a bug, or data written
/// around the store).
fn corrupt(space: &str) -> Error {
    Error::Internal {
        proc: "store",
        what: format!("a tuple of space {space} does not match its format"),
    }
}
