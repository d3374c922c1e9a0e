//! The inbox's spaces: `dialogs_inbox` (one entry per user and dialog),
//! `dialogs_inbox_totals` (one row per user) and `dialogs_outbox` (deliveries
//! still to make, on vshard storages), resolved by name with the store; the
//! build flag in `_schema`; and the reads, writes and message walks the inbox
//! rules need (src/inbox/). The rules themselves are pure (src/inbox/entry.rs):
//! here an entry is read, passed to a rule, and written back whole with one
//! `box_replace` (cheaper than several updates of its fields).

use std::cell::Cell;
use std::ffi::c_char;
use std::ptr::{self, NonNull};

use tarantool::ffi::tarantool as ffi;
use uuid::Uuid;

use super::schema::{check, index_id, space_id, SYSTEM_SCHEMA};
use super::tuple::{IndexCursor, Iter};
use super::{
    corrupt, key, Store, TupleRef, FIELD_DIALOG, FIELD_FROM, FIELD_ID, FIELD_TEXT, FIELD_TO,
    PRIMARY, SPACE,
};
use crate::bucket::{bucket_id, BUCKET_SPACE};
use crate::error::{Error, Result};
use crate::inbox::entry::{self, Delivery, Entry, Totals, NONE};
use crate::msgpack::{Reader, Value, Write};

/// The entries: `pk` (user_id, dialog_id), `activity` (user_id, last_id,
/// dialog_id), `bucket_id`.
pub const INBOX: &str = "dialogs_inbox";
const ACTIVITY: &str = "activity";
/// The totals: `pk` user_id, `bucket_id`.
pub const TOTALS: &str = "dialogs_inbox_totals";
/// The outbox: `pk` id, `bucket_id`.
pub const OUTBOX: &str = "dialogs_outbox";
/// `_schema` key set to true once the inbox has been built from the stored
/// messages; the upkeep is on from then.
pub const BUILT_KEY: &str = "dialogs_inbox_built";
/// `_schema` key of the build's position: the last message id walked.
pub const BUILD_AFTER_KEY: &str = "dialogs_inbox_build_after";
/// Field numbers (0-based) of an entry tuple the walks read.
const ENTRY_USER: u32 = 0;
const ENTRY_LAST: u32 = 3;
const ENTRY_BUCKET: u32 = 9;
/// Number of fields of an outbox tuple.
const OUTBOX_FIELDS: u32 = 5;

thread_local! {
    // Set once `_schema` says the inbox is built; read again on each write
    // until then. A `Copy` cell: no destructor (the module stays unloadable).
    static BUILT: Cell<bool> = const { Cell::new(false) };
    // Whether `_bucket` exists, and the schema version that answer is for
    // (u64::MAX: not asked yet). Every space created or dropped moves the
    // version on, so the answer is looked up again only after a schema change.
    static STORAGE: Cell<(u64, bool)> = const { Cell::new((u64::MAX, false)) };
}

/// Forgets the cached build flag (with the store's cache).
pub(super) fn forget_built() {
    BUILT.with(|b| b.set(false));
}

/// The ids of the inbox's spaces and the index list_dialogs walks.
#[derive(Clone, Copy, Debug)]
pub struct InboxSpaces {
    entries: u32,
    activity: u32,
    totals: u32,
    outbox: u32,
    schema: u32,
}

impl InboxSpaces {
    /// The spaces of schema version 4, or None where they do not exist yet.
    pub(super) fn resolve() -> Option<InboxSpaces> {
        let entries = space_id(INBOX).ok()?;
        Some(InboxSpaces {
            entries,
            activity: index_id(entries, ACTIVITY).ok()?,
            totals: space_id(TOTALS).ok()?,
            outbox: space_id(OUTBOX).ok()?,
            schema: space_id(SYSTEM_SCHEMA).ok()?,
        })
    }
}

/// The inbox's refusal on a store without its spaces.
fn no_inbox() -> Error {
    Error::Internal {
        proc: "store",
        what: format!(
            "space {INBOX} not found: the schema is older than the inbox (run init.lua \
             on the writable instance)"
        ),
    }
}

/// What a message is to the inbox, read from its stored tuple.
pub struct StoredMessage {
    pub id: Uuid,
    pub dialog_id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub text: String,
}

impl StoredMessage {
    fn of(tuple: &TupleRef<'_>) -> Result<StoredMessage> {
        let uuid = |n| tuple.uuid(n).ok_or_else(|| corrupt(SPACE));
        Ok(StoredMessage {
            id: uuid(FIELD_ID)?,
            dialog_id: uuid(FIELD_DIALOG)?,
            from: uuid(FIELD_FROM)?,
            to: uuid(FIELD_TO)?,
            text: tuple.str_field(FIELD_TEXT).ok_or_else(|| corrupt(SPACE))?,
        })
    }

    /// The message as a delivery.
    pub fn delivery(&self) -> Delivery<'_> {
        Delivery {
            id: self.id,
            dialog_id: self.dialog_id,
            from: self.from,
            to: self.to,
            text: &self.text,
        }
    }

    /// Whether `user` sent or received it.
    pub fn involves(&self, user: Uuid) -> bool {
        self.from == user || self.to == user
    }
}

impl Store {
    /// The inbox's spaces, or the refusal of a store whose schema predates them.
    pub fn inbox(&self) -> Result<InboxSpaces> {
        self.inbox.ok_or_else(no_inbox)
    }

    /// Whether the inbox is built (`_schema['dialogs_inbox_built']` is true):
    /// read until it is, then cached for the life of the loaded module.
    pub fn inbox_built(&self) -> Result<bool> {
        if BUILT.with(Cell::get) {
            return Ok(true);
        }
        let Some(inbox) = self.inbox else {
            return Ok(false);
        };
        let mut k = Vec::with_capacity(BUILT_KEY.len() + 2);
        k.put_array_header(1);
        k.put_str(BUILT_KEY);
        let Some(t) = Self::get_tuple(inbox.schema, &k)? else {
            return Ok(false);
        };
        let bytes = t.to_vec();
        let mut r = Reader::new(&bytes);
        r.read().ok();
        r.read().ok();
        let built = r.read() == Ok(Value::Bool(true));
        if built {
            BUILT.with(|b| b.set(true));
        }
        Ok(built)
    }

    /// Records in `_schema` that the build is done (in the caller's transaction).
    pub fn set_built(&self) -> Result<()> {
        let inbox = self.inbox()?;
        let mut t = Vec::with_capacity(BUILT_KEY.len() + 4);
        t.put_array_header(2);
        t.put_str(BUILT_KEY);
        t.put_bool(true);
        Self::replace_raw(inbox.schema, &t)?;
        let mut k = Vec::with_capacity(BUILD_AFTER_KEY.len() + 2);
        k.put_array_header(1);
        k.put_str(BUILD_AFTER_KEY);
        Self::delete_raw(inbox.schema, &k)
    }

    /// Records in `_schema` how far the build walked (in the caller's transaction).
    pub fn set_build_after(&self, after: Uuid) -> Result<()> {
        let inbox = self.inbox()?;
        let mut t = Vec::with_capacity(BUILD_AFTER_KEY.len() + 22);
        t.put_array_header(2);
        t.put_str(BUILD_AFTER_KEY);
        t.put_uuid(&after);
        Self::replace_raw(inbox.schema, &t)
    }

    /// Whether this instance is a vshard storage (has `_bucket`). vshard creates
    /// the space after the store's own set-up, so the answer is not fixed when the
    /// store is resolved: it is kept for the schema version it was found at and
    /// looked up again once the schema changes (a name look-up reads `_vspace`;
    /// the version is one load).
    pub fn is_storage() -> bool {
        // SAFETY: a plain getter of the tx thread's schema version.
        let version = unsafe { ffi::box_schema_version() };
        let (known, storage) = STORAGE.with(Cell::get);
        if known == version {
            return storage;
        }
        let name = BUCKET_SPACE;
        let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        // SAFETY: a valid pointer and length.
        let id = unsafe { ffi::box_space_id_by_name(name.as_ptr().cast::<c_char>(), len) };
        let storage = id != ffi::BOX_ID_NIL;
        STORAGE.with(|c| c.set((version, storage)));
        storage
    }

    /// The bucket of a user's inbox (the same hash as a dialog's).
    pub fn user_bucket(&self, user: Uuid) -> u64 {
        u64::from(bucket_id(user, self.bucket_count))
    }

    /// The stored entry of `user` for `dialog`, as its msgpack (decode with
    /// [`Entry::decode`]).
    pub fn entry_bytes(&self, user: Uuid, dialog: Uuid) -> Result<Option<Vec<u8>>> {
        let inbox = self.inbox()?;
        Ok(Self::get_tuple(inbox.entries, &key(&[user, dialog]))?.map(|t| t.to_vec()))
    }

    /// Stores `e` in place of the entry of its user and dialog.
    pub fn put_entry(&self, e: &Entry<'_>) -> Result<()> {
        let inbox = self.inbox()?;
        let mut buf = Vec::with_capacity(200 + e.last_text.len());
        e.encode(&mut buf);
        Self::replace_raw(inbox.entries, &buf)
    }

    /// The totals of `user` (zero when it has no row).
    pub fn totals(&self, user: Uuid) -> Result<Totals> {
        let inbox = self.inbox()?;
        match Self::get_tuple(inbox.totals, &key(&[user]))? {
            None => Ok(Totals::default()),
            Some(t) => Totals::decode(&t.to_vec()).ok_or_else(|| corrupt(TOTALS)),
        }
    }

    /// Moves `user`'s totals by one entry's change of unread from `old` to
    /// `new` (nothing written when it did not change). A row whose counts reach
    /// zero stays, with zeros.
    pub fn count_unread_change(&self, user: Uuid, old: u64, new: u64) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let inbox = self.inbox()?;
        let totals = self.totals(user)?.apply(old, new);
        let mut buf = Vec::with_capacity(40);
        totals.encode(user, self.user_bucket(user), &mut buf);
        Self::replace_raw(inbox.totals, &buf)
    }

    /// Applies a rule's outcome to `user`'s entry: writes `new` (if the rule
    /// changed anything) and the totals by the change of unread from `old_unread`.
    fn settle(&self, user: Uuid, old_unread: u64, new: Option<Entry<'_>>) -> Result<bool> {
        let Some(new) = new else {
            return Ok(false);
        };
        self.put_entry(&new)?;
        self.count_unread_change(user, old_unread, new.unread)?;
        Ok(true)
    }

    /// deliver_message(user, m), read-rule-write. Returns whether it changed
    /// anything (false: delivered before).
    pub fn deliver_message(&self, user: Uuid, m: &Delivery<'_>) -> Result<bool> {
        let stored = self.entry_bytes(user, m.dialog_id)?;
        let old = match &stored {
            Some(b) => Some(Entry::decode(b).ok_or_else(|| corrupt(INBOX))?),
            None => None,
        };
        let old_unread = old.as_ref().map_or(0, |e| e.unread);
        let new = entry::deliver_message(old, user, m, self.user_bucket(user));
        self.settle(user, old_unread, new)
    }

    /// deliver_receipt(user, dialog, read_id), read-rule-write. Returns whether
    /// it changed anything.
    pub fn deliver_receipt(&self, user: Uuid, dialog: Uuid, read_id: Uuid) -> Result<bool> {
        let stored = self.entry_bytes(user, dialog)?;
        let old = match &stored {
            Some(b) => Some(Entry::decode(b).ok_or_else(|| corrupt(INBOX))?),
            None => None,
        };
        let old_unread = old.as_ref().map_or(0, |e| e.unread);
        let new = entry::deliver_receipt(old, user, dialog, read_id, self.user_bucket(user));
        self.settle(user, old_unread, new)
    }

    /// The inline upkeep of a message just stored (single store), or its outbox
    /// row (vshard storage), in the caller's transaction; nothing before the
    /// inbox is built (the build delivers it then).
    pub fn inbox_upkeep(&self, m: &Delivery<'_>) -> Result<()> {
        if self.inbox.is_none() || !self.inbox_built()? {
            return Ok(());
        }
        if Self::is_storage() {
            return self.put_outbox_message(m.id, m.dialog_id);
        }
        self.deliver_message(m.from, m)?;
        if m.to != m.from {
            self.deliver_message(m.to, m)?;
        }
        Ok(())
    }

    /// The outbox row of a message: (id, the dialog's bucket). Replaces one
    /// left by an earlier try (the build repeated after a crash).
    pub fn put_outbox_message(&self, id: Uuid, dialog: Uuid) -> Result<()> {
        let inbox = self.inbox()?;
        let mut buf = Vec::with_capacity(32);
        buf.put_array_header(OUTBOX_FIELDS);
        buf.put_uuid(&id);
        buf.put_uint(u64::from(bucket_id(dialog, self.bucket_count)));
        buf.put_nil();
        buf.put_nil();
        buf.put_nil();
        Self::replace_raw(inbox.outbox, &buf)
    }

    /// The outbox row of a read receipt: (id, the reader's bucket, the peer,
    /// the dialog, the reader's new cursor).
    pub fn put_outbox_receipt(
        &self,
        id: Uuid,
        reader_bucket: u64,
        peer: Uuid,
        dialog: Uuid,
        read_id: Uuid,
    ) -> Result<()> {
        let inbox = self.inbox()?;
        let mut buf = Vec::with_capacity(80);
        buf.put_array_header(OUTBOX_FIELDS);
        buf.put_uuid(&id);
        buf.put_uint(reader_bucket);
        buf.put_uuid(&peer);
        buf.put_uuid(&dialog);
        buf.put_uuid(&read_id);
        Self::insert_raw(inbox.outbox, &buf)
    }

    /// The greatest id in the outbox, if any (a floor for fresh receipt ids).
    pub fn max_outbox_id(&self) -> Result<Option<Uuid>> {
        let inbox = self.inbox()?;
        let k = [0x90u8];
        let mut tuple = ptr::null_mut();
        // SAFETY: a valid empty-array key and out-pointer.
        check(unsafe {
            ffi::box_index_max(
                inbox.outbox,
                PRIMARY,
                k.as_ptr().cast(),
                k.as_ptr_range().end.cast(),
                &mut tuple,
            )
        })?;
        // SAFETY: the greatest tuple, read before anything can yield.
        Ok(NonNull::new(tuple).and_then(|t| unsafe { TupleRef::new(t) }.uuid(0)))
    }

    /// The stored message `id`, if any.
    pub fn message(&self, id: Uuid) -> Result<Option<StoredMessage>> {
        let Some(t) = Self::get_tuple(self.space, &key(&[id]))? else {
            return Ok(None);
        };
        StoredMessage::of(&TupleRef::of(&t)).map(Some)
    }

    /// Up to `limit` stored messages after `after` (from the first without),
    /// in id order: the build's batch.
    pub fn messages_after(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<StoredMessage>> {
        let (iter, k) = match after {
            Some(a) => (Iter::Gt, key(&[a])),
            None => (Iter::Ge, key(&[])),
        };
        let mut out = Vec::new();
        let Some(mut it) = IndexCursor::open(self.space, PRIMARY, iter, &k)? else {
            return Ok(out);
        };
        while out.len() < limit as usize {
            let Some(t) = it.advance()? else { break };
            out.push(StoredMessage::of(&t)?);
        }
        Ok(out)
    }

    /// How many messages of `dialog` with ids in (`after`, `up_to`] (no upper
    /// bound without `up_to`) were sent to `user` by someone else: the unread
    /// count after a read cursor at `after`.
    pub fn count_unread(
        &self,
        dialog: Uuid,
        user: Uuid,
        after: Uuid,
        up_to: Option<Uuid>,
    ) -> Result<u64> {
        // The iterator reads the key where it lies: it lives as long as the walk.
        let start = key(&[dialog, after]);
        let Some(mut it) = IndexCursor::open(self.space, self.by_dialog, Iter::Gt, &start)? else {
            return Ok(0);
        };
        let mut n = 0u64;
        while let Some(t) = it.advance()? {
            if t.uuid(FIELD_DIALOG) != Some(dialog) {
                break;
            }
            let id = t.uuid(FIELD_ID).ok_or_else(|| corrupt(SPACE))?;
            if up_to.is_some_and(|u| id > u) {
                break;
            }
            if t.uuid(FIELD_TO) == Some(user) && t.uuid(FIELD_FROM) != Some(user) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The id of the last message of `dialog` that `user` sent or received,
    /// at most `at_most` (no bound without it); the nil uuid if none.
    pub fn last_of(&self, dialog: Uuid, user: Uuid, at_most: Option<Uuid>) -> Result<Uuid> {
        let (iter, k) = match at_most {
            Some(l) => (Iter::Le, key(&[dialog, l])),
            None => (Iter::Req, key(&[dialog])),
        };
        let Some(mut it) = IndexCursor::open(self.space, self.by_dialog, iter, &k)? else {
            return Ok(NONE);
        };
        while let Some(t) = it.advance()? {
            if t.uuid(FIELD_DIALOG) != Some(dialog) {
                break;
            }
            if t.uuid(FIELD_FROM) == Some(user) || t.uuid(FIELD_TO) == Some(user) {
                return t.uuid(FIELD_ID).ok_or_else(|| corrupt(SPACE));
            }
        }
        Ok(NONE)
    }

    /// Passes to `emit` the listed entries of `user`, most recent activity
    /// first, those with a last message older than `before` (all without),
    /// at most `limit`; placeholders are never listed. Returns how many.
    /// Each entry is passed as the msgpack of its fields before `bucket_id`
    /// (user_id to peer_read_id, in the order of [`Entry::encode`]), read in
    /// place in the stored tuple: nothing is copied or looked up per entry
    /// beyond the walk itself.
    pub fn walk_entries(
        &self,
        user: Uuid,
        before: Option<Uuid>,
        limit: u32,
        mut emit: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u32> {
        let inbox = self.inbox()?;
        let (iter, k) = match before {
            Some(b) => (Iter::Lt, key(&[user, b])),
            None => (Iter::Req, key(&[user])),
        };
        let Some(mut it) = IndexCursor::open(inbox.entries, inbox.activity, iter, &k)? else {
            return Ok(0);
        };
        let mut count = 0u32;
        while count < limit {
            let Some(t) = it.advance()? else { break };
            // REQ stays within the user's entries; LT runs on past them.
            if matches!(iter, Iter::Lt) && t.uuid(ENTRY_USER) != Some(user) {
                break;
            }
            // Placeholders (a nil last id) sort below every listed entry.
            if t.uuid(ENTRY_LAST).is_none_or(|id| id.is_nil()) {
                break;
            }
            emit(
                t.fields_before(ENTRY_BUCKET)
                    .ok_or_else(|| corrupt(INBOX))?,
            )?;
            count += 1;
        }
        Ok(count)
    }

    fn delete_raw(space: u32, key: &[u8]) -> Result<()> {
        let range = key.as_ptr_range();
        // SAFETY: `key` is one msgpack array.
        check(unsafe {
            ffi::box_delete(
                space,
                PRIMARY,
                range.start.cast(),
                range.end.cast(),
                ptr::null_mut(),
            )
        })
    }
}
