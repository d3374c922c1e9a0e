//! `dialogs_inbox_build(after_id|nil, limit)`: one batch of the build of the
//! inboxes from the stored messages (schema version 5, dialogs/schema.lua), in
//! one transaction: the next `limit` messages after `after_id` in id order are
//! delivered to both users' entries (a single store) or given their outbox row
//! (a vshard storage: the drainer delivers them). Redelivery changes nothing (an
//! entry skips a message at or below its last id; an outbox row is replaced by
//! the same row), so a batch repeated after a crash is harmless. The position
//! is kept in `_schema['dialogs_inbox_build_after']` in the batch's transaction;
//! the batch that finds the end sets `_schema['dialogs_inbox_built'] = true` in
//! its own transaction (and drops the position), and the native upkeep of new
//! messages is on from then. New messages always get ids above every stored
//! one, so the walk also reaches those written while it runs. Not granted to
//! anyone: admin and schema code call it.

use uuid::Uuid;

use crate::args::Args;
use crate::error::{Error, Result};
use crate::msgpack::{Value, Write};
use crate::store::{atomically, Store};
use crate::Reply;

const PROC: &str = "dialogs_inbox_build";
const SIGNATURE: &str = "2 arguments (after_id | nil, limit)";
/// The most messages one call walks (one transaction, no yield).
pub const MAX_BUILD_BATCH: u64 = 10_000;

/// A validated call: where to go on from, and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Build {
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// A call of this entry that did not come from the schema code: a bug there.
fn misuse(what: &str) -> Error {
    Error::Internal {
        proc: PROC,
        what: format!("expected (after_id | nil, limit 1..={MAX_BUILD_BATCH}): {what}"),
    }
}

impl Build {
    /// Reads `(after_id | nil, limit)`.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut args = Args::open(PROC, buf, 2, 2, SIGNATURE)?;
        let after = match args.read()? {
            Value::Nil => None,
            v => Some(
                v.as_uuid()
                    .ok_or_else(|| misuse("after_id is not a uuid"))?,
            ),
        };
        let limit = match args.read()? {
            Value::Uint(n) if (1..=MAX_BUILD_BATCH).contains(&n) => {
                u32::try_from(n).map_err(|_| misuse("limit out of range"))?
            }
            _ => return Err(misuse("limit out of range")),
        };
        Ok(Build { after, limit })
    }

    /// Runs one batch; returns the last message id walked, or None when the walk
    /// is complete (the flag was set in this same transaction).
    pub fn apply(&self, store: &Store) -> Result<Option<Uuid>> {
        store.inbox()?;
        let storage = Store::is_storage();
        atomically(|| {
            let batch = store.messages_after(self.after, self.limit)?;
            for m in &batch {
                if storage {
                    store.put_outbox_message(m.id, m.dialog_id)?;
                } else {
                    let d = m.delivery();
                    store.deliver_message(m.from, &d)?;
                    if m.to != m.from {
                        store.deliver_message(m.to, &d)?;
                    }
                }
            }
            // Fewer than asked for: nothing follows (nothing can be written
            // meanwhile, this transaction does not yield before its commit).
            match batch.last() {
                Some(last) if batch.len() == self.limit as usize => {
                    store.set_build_after(last.id)?;
                    Ok(Some(last.id))
                }
                _ => {
                    store.set_built()?;
                    Ok(None)
                }
            }
        })
    }
}

/// The procedure body: parse, run one batch, reply with the last id or nil.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let last = Build::parse(args)?.apply(&Store::get()?)?;
    let mut out = Vec::with_capacity(18);
    match last {
        Some(id) => out.put_uuid(&id),
        None => out.put_nil(),
    }
    reply.mp(&out)
}
