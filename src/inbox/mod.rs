//! The inbox: a user's dialogs with their unread counts and read receipts
//! (docs/inbox.md), one concept per file.
//!
//! - [`entry`]: the entry and the totals as stored, and the pure rules that
//!   change them (deliver a message, deliver a receipt, move the read cursor);
//! - [`list`]: `list_dialogs(user_id [, opts])`, parse, walk, reply;
//! - [`mark`]: `mark_read(user_id, dialog_id, up_to_id)` on one store;
//! - [`build`]: `dialogs_inbox_build(after_id, limit)`, the inboxes built from
//!   the stored messages, one batch per call;
//! - [`storage`]: the entries a vshard router and the outbox drainer call on a
//!   storage (`dialogs_storage_list`, `dialogs_storage_inbox_apply`,
//!   `dialogs_storage_inbox_apply_many`,
//!   `dialogs_storage_read_count`, `dialogs_storage_mark_read_apply`).
//!
//! The spaces are reached through [`crate::store::Store`] only
//! (src/store/inbox.rs); the inline upkeep of `new_dialog` runs in the
//! message's own transaction there (src/store/write.rs).

pub mod build;
pub mod entry;
pub mod list;
pub mod mark;
pub mod storage;
