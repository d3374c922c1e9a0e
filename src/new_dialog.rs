//! `new_dialog(dialog_id, user_from, user_to, text [, opts])`: store one message,
//! reply with its id as a string.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result, ER_TRANSACTION_CONFLICT, ER_TUPLE_FOUND};
use crate::ids::{pair_dialog, IdGenerator, Issued};
use crate::msgpack::Write;
use crate::store::{Message, Store};
use crate::Reply;

const SIGNATURE: &str = "4 or 5 arguments (dialog_id, user_from, user_to, text [, opts])";
const OPTIONS: &[&str] = &["request_id"];

thread_local! {
    // Cells only: no destructor, so the module stays unloadable on reload.
    static IDS: IdGenerator = const { IdGenerator::new() };
}

/// A validated `new_dialog` call.
#[derive(Debug, PartialEq, Eq)]
pub struct NewDialog<'a> {
    /// None: derive it from the user pair.
    pub dialog_id: Option<Uuid>,
    pub user_from: Uuid,
    pub user_to: Uuid,
    pub text: &'a str,
    /// Makes a retried call return the first call's id instead of storing twice.
    pub request_id: Option<Uuid>,
}

impl<'a> NewDialog<'a> {
    /// Validates the msgpack argument array; the first bad argument is the error.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut args = Args::open("new_dialog", buf, 4, 5, SIGNATURE)?;
        let dialog_id = args::optional_uuid(Arg::DialogId, args.read()?)?;
        let user_from = args::uuid(Arg::UserFrom, args.read()?)?;
        let user_to = args::uuid(Arg::UserTo, args.read()?)?;
        let text = args::text(args.read()?)?;
        let mut request_id = None;
        if args.count == 5 {
            args::options(&mut args, OPTIONS, |_name, value| {
                request_id = Some(args::uuid(Arg::RequestId, value)?);
                Ok(())
            })?;
        }
        Ok(NewDialog {
            dialog_id,
            user_from,
            user_to,
            text,
            request_id,
        })
    }

    /// The dialog this message belongs to.
    pub fn dialog(&self) -> Uuid {
        self.dialog_id
            .unwrap_or_else(|| pair_dialog(self.user_from, self.user_to))
    }

    /// Stores the message (or finds the one a previous try with the same
    /// `request_id` stored) and returns its id.
    pub fn apply(&self, store: &Store) -> Result<Uuid> {
        let dialog_id = self.dialog();
        if let Some(request_id) = self.request_id {
            if let Some(id) = self.earlier_try(store, request_id, dialog_id)? {
                return Ok(id);
            }
        }
        // SAFETY: a plain clock read.
        let now_us = unsafe { tarantool::ffi::tarantool::clock_realtime64() } / 1000;
        let stored_max = store.max_id()?;
        let Issued { id, floor_ahead_ms } = IDS
            .with(|ids| ids.issue(now_us / 1000, stored_max))
            .ok_or_else(|| Error::Internal {
                proc: "new_dialog",
                what: "message ids exhausted".into(),
            })?;
        if let Some(ahead) = floor_ahead_ms {
            warn_clock_behind(ahead);
        }
        let message = Message {
            id,
            dialog_id,
            user_from: self.user_from,
            user_to: self.user_to,
            text: self.text,
            created_at_us: now_us,
        };
        match self.request_id {
            None => store.insert(&message)?,
            Some(request_id) => match store.insert_with_request(&message, request_id) {
                Ok(()) => {}
                // Another try of the same request got there first (a duplicate key,
                // or a conflict under memtx MVCC): answer as that try did.
                Err(e) if matches!(e.code(), ER_TUPLE_FOUND | ER_TRANSACTION_CONFLICT) => {
                    return self.earlier_try(store, request_id, dialog_id)?.ok_or(e);
                }
                Err(e) => return Err(e),
            },
        }
        Ok(id)
    }

    /// The id an earlier try of `request_id` stored, if there was one; an error if
    /// that try stored other content.
    fn earlier_try(
        &self,
        store: &Store,
        request_id: Uuid,
        dialog_id: Uuid,
    ) -> Result<Option<Uuid>> {
        let Some(done) = store.request(request_id)? else {
            return Ok(None);
        };
        match done.content {
            Some(c)
                if c.dialog_id != dialog_id
                    || c.user_from != self.user_from
                    || c.user_to != self.user_to
                    || c.text != self.text =>
            {
                Err(Error::RequestConflict {
                    message_id: done.message_id,
                })
            }
            // Same content, or the message was deleted since: the same answer.
            _ => Ok(Some(done.message_id)),
        }
    }

    /// The reply: the id as a canonical lowercase string.
    pub fn reply(id: Uuid) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.put_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        out
    }
}

/// Says in the log that ids are pinned ahead of this server's clock (README,
/// "Guarantees": what an operator does about it).
fn warn_clock_behind(ahead_ms: u64) {
    tarantool::say_warn!(
        "dialogs: the greatest stored message id is {:.3} s ahead of this server's clock: \
         new ids carry that time until the clock passes it (a clock set wrong on the \
         instance that wrote it, or on this one; see README, Guarantees)",
        // Milliseconds to seconds for the log line; exact below 2^53 ms.
        ahead_ms as f64 / 1000.0
    );
}

/// The procedure body: parse, apply, encode.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let request = NewDialog::parse(args)?;
    let id = request.apply(&Store::get()?)?;
    reply.mp(&NewDialog::reply(id))
}
