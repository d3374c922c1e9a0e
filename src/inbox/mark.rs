//! `mark_read(user_id, dialog_id, up_to_id)` on one store: the user's read
//! cursor moves forward to a message of the dialog, never back; the unread
//! count after it is counted from the messages, the totals follow, and the
//! peer's entry gets the read receipt, all in one transaction.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result};
use crate::inbox::entry::{self, Entry};
use crate::msgpack::Write;
use crate::store::{within, Store, StoredMessage};
use crate::Reply;

const SIGNATURE: &str = "3 arguments (user_id, dialog_id, up_to_id)";

/// A validated `mark_read` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkRead {
    pub user_id: Uuid,
    pub dialog_id: Uuid,
    pub up_to: Uuid,
}

impl MarkRead {
    /// Validates the msgpack argument array; the first bad argument is the error.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut args = Args::open("mark_read", buf, 3, 3, SIGNATURE)?;
        Ok(MarkRead {
            user_id: args::uuid(Arg::UserId, args.read()?)?,
            dialog_id: args::dialog_id(args.read()?)?,
            up_to: args::uuid(Arg::UpToId, args.read()?)?,
        })
    }

    /// The message `up_to` names, if it is one of this user in this dialog; else
    /// the refusal 1013.
    pub fn check_message(&self, store: &Store) -> Result<StoredMessage> {
        match store.message(self.up_to)? {
            Some(m) if m.dialog_id == self.dialog_id && m.involves(self.user_id) => Ok(m),
            _ => Err(Error::NotInDialog),
        }
    }

    /// Moves the cursor and returns the unread count after it. A cursor already
    /// at `up_to` or past it changes nothing: the reply is the current count.
    pub fn apply(&self, store: &Store) -> Result<u64> {
        store.inbox()?;
        within(|| {
            let message = self.check_message(store)?;
            let stored = store.entry_bytes(self.user_id, self.dialog_id)?;
            let old = match &stored {
                Some(b) => Some(Entry::decode(b).ok_or_else(corrupt_entry)?),
                None => None,
            };
            let old = old.unwrap_or_else(|| {
                Entry::placeholder(
                    self.user_id,
                    self.dialog_id,
                    store.user_bucket(self.user_id),
                )
            });
            if self.up_to <= old.read_id {
                return Ok(old.unread);
            }
            // Fast path: nothing delivered after the cursor.
            let unread = if self.up_to >= old.last_id {
                0
            } else {
                store.count_unread(self.dialog_id, self.user_id, self.up_to, Some(old.last_id))?
            };
            // The peer whose entry shows the receipt: the entry's, or (an entry
            // not delivered yet) the other user of the message read.
            let peer = if old.peer_id.is_nil() {
                if message.from == self.user_id {
                    message.to
                } else {
                    message.from
                }
            } else {
                old.peer_id
            };
            let old_unread = old.unread;
            let Some(new) = entry::mark_read(old, self.up_to, unread) else {
                return Ok(old_unread);
            };
            store.put_entry(&new)?;
            store.count_unread_change(self.user_id, old_unread, unread)?;
            if peer != self.user_id {
                store.deliver_receipt(peer, self.dialog_id, self.up_to)?;
            }
            Ok(unread)
        })
        .map_err(|e| e.in_write("mark_read"))
    }
}

fn corrupt_entry() -> Error {
    Error::Internal {
        proc: "mark_read",
        what: "an inbox entry does not match its format".into(),
    }
}

/// The reply: the unread count, one unsigned.
pub fn reply(unread: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.put_uint(unread);
    out
}

/// The procedure body: parse, apply, reply with the count.
pub fn call(args: &[u8], reply_to: &mut Reply) -> Result<()> {
    let request = MarkRead::parse(args)?;
    let unread = request.apply(&Store::get()?)?;
    reply_to.mp(&reply(unread))
}
