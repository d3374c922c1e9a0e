//! `new_dialog(dialog_id, user_from, user_to, text [, opts])`: store one message,
//! reply with its id as a string.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result, ER_TRANSACTION_CONFLICT, ER_TUPLE_FOUND};
use crate::ids::{pair_dialog, IdGenerator, Issued};
use crate::msgpack::Write;
use crate::store::{Guard, Message, Store, StoredContent, StoredRequest};
use crate::Reply;

const SIGNATURE: &str = "4 or 5 arguments (dialog_id, user_from, user_to, text [, opts])";
const OPTIONS: &[&str] = &["request_id"];
/// How many times a call with a `request_id` looks for an earlier try and
/// stores anew before it gives up with the last error. A round repeats only
/// when an earlier try was rolled back or another try got in first, which
/// settles within two rounds.
const REQUEST_ROUNDS: usize = 3;

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
        let dialog_id = args::optional_dialog_id(args.read()?)?;
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
    ///
    /// With a `request_id`, an earlier try is trusted only once it is committed
    /// ([`Store::confirm_request`]): a retry that arrives while the first try
    /// still waits for its WAL write or its quorum waits for that outcome. If the
    /// first try commits, the retry returns its id; if it is rolled back, the
    /// retry stores the message itself. Two tries that arrive together end the
    /// same way: the second finds the first's row (or collides with it on
    /// insert) and waits for it.
    pub fn apply(&self, store: &Store) -> Result<Uuid> {
        self.apply_guarded(store, None)
    }

    /// [`NewDialog::apply`], with `guard` run first inside each transaction that
    /// writes (the message's, and the confirmation of an earlier try's): a
    /// refusal by the guard writes nothing and is the call's error.
    pub fn apply_guarded(&self, store: &Store, guard: Guard<'_>) -> Result<Uuid> {
        let dialog_id = self.dialog();
        let Some(request_id) = self.request_id else {
            return self.store(store, dialog_id, self.text, None, guard);
        };
        // The arguments live in Tarantool's input buffer, which is reused once
        // the fiber yields (waiting for an earlier try does): keep a copy.
        let text = self.text.to_owned();
        let mine = StoredContent {
            dialog_id,
            user_from: self.user_from,
            user_to: self.user_to,
            text,
        };
        let mut last_error = None;
        for _ in 0..REQUEST_ROUNDS {
            // Same content, or the message was deleted since: the same request.
            let same = |done: &StoredRequest| done.content.as_ref().is_none_or(|c| *c == mine);
            match store.confirm_request(request_id, same, guard) {
                Ok(Some((done, true))) => return Ok(done.message_id),
                Ok(Some((done, false))) => {
                    return Err(Error::RequestConflict {
                        message_id: done.message_id,
                    })
                }
                Ok(None) => {}
                // The confirming write failed: if the earlier try's row is gone,
                // that try was rolled back and this one stores the message; if
                // not, the earlier try's outcome is still unknown here.
                Err(e) => {
                    if store.request(request_id)?.is_some() {
                        return Err(e);
                    }
                    last_error = Some(e);
                    continue;
                }
            }
            match self.store(store, dialog_id, &mine.text, Some(request_id), guard) {
                // Another try of the same request stored it first (a duplicate
                // key, or a conflict under memtx MVCC): confirm that one.
                Err(e) if matches!(e.code(), ER_TUPLE_FOUND | ER_TRANSACTION_CONFLICT) => {
                    last_error = Some(e);
                }
                stored => return stored,
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Internal {
            proc: "new_dialog",
            what: "opts.request_id: no outcome".into(),
        }))
    }

    /// Stores the message under a new id (with its `request_id` record, if any).
    fn store(
        &self,
        store: &Store,
        dialog_id: Uuid,
        text: &str,
        request_id: Option<Uuid>,
        guard: Guard<'_>,
    ) -> Result<Uuid> {
        let (id, now_us) = issue_id("new_dialog", store.max_id()?)?;
        let message = Message {
            id,
            dialog_id,
            user_from: self.user_from,
            user_to: self.user_to,
            text,
            created_at_us: now_us,
        };
        match request_id {
            None => store.insert(&message, guard)?,
            Some(request_id) => store.insert_with_request(&message, request_id, guard)?,
        }
        Ok(id)
    }

    /// The reply: the id as a canonical lowercase string.
    pub fn reply(id: Uuid) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.put_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        out
    }
}

/// A new id from this module's generator (the one every message id comes
/// from), above `stored_max` and every id issued before; with the time it was
/// issued at, in microseconds since the Unix epoch. `proc` names the caller in
/// the error of an exhausted generator.
pub(crate) fn issue_id(proc: &'static str, stored_max: Option<Uuid>) -> Result<(Uuid, u64)> {
    let now_us = tarantool::clock::time64() / 1000;
    let Issued { id, floor_ahead_ms } = IDS
        .with(|ids| ids.issue(now_us / 1000, stored_max))
        .ok_or_else(|| Error::Internal {
            proc,
            what: "message ids exhausted".into(),
        })?;
    if let Some(ahead) = floor_ahead_ms {
        warn_clock_behind(ahead);
    }
    Ok((id, now_us))
}

/// Says in the log that ids are pinned ahead of this server's clock (docs/guarantees.md,
/// "A clock far behind the ids is reported": what an operator does about it).
fn warn_clock_behind(ahead_ms: u64) {
    tarantool::say_warn!(
        "dialogs: the greatest stored message id is {:.3} s ahead of this server's clock: \
         new ids carry that time until the clock passes it (a clock set wrong on the \
         instance that wrote it, or on this one; see docs/guarantees.md)",
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
