//! The inbox's entries on a vshard storage, for routers and the outbox drainer
//! (docs/inbox.md, "On a sharded store"; never granted to clients). Each takes
//! the bucket its caller routed by and checks it the way the message entries
//! do (src/storage_read.rs, src/storage_write.rs): the data named must live in
//! that bucket, and `_bucket` must let this instance read it (reads) or write it
//! (writes, checked inside the write's own transaction, with no yield before
//! its statements); else 1012 and nothing written.
//!
//! - `dialogs_storage_list(bucket_id, args)`: `list_dialogs(unpack(args))` in
//!   the user's bucket;
//! - `dialogs_storage_inbox_apply(bucket_id, events)`: deliveries to users of
//!   one bucket, in one transaction;
//! - `dialogs_storage_read_count(bucket_id, args)`: `mark_read`'s count on the
//!   dialog's storage;
//! - `dialogs_storage_mark_read_apply(bucket_id, args)`: `mark_read`'s write on
//!   the user's storage, with the receipt's outbox row.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result};
use crate::inbox::entry::{self, Delivery, Entry, NONE};
use crate::inbox::list::ListDialogs;
use crate::inbox::mark::MarkRead;
use crate::msgpack::{Reader, Value, Write};
use crate::new_dialog::issue_id;
use crate::storage_read::{check_bucket, check_owner_bucket, split_args, READABLE};
use crate::storage_write::WRITABLE;
use crate::store::{atomically, Store};
use crate::Reply;

/// `dialogs_storage_list(bucket_id, args)` → `list_dialogs(unpack(args))`'s
/// reply, if `bucket_id` is the user's bucket and readable here.
pub fn list(args: &[u8], reply: &mut Reply) -> Result<()> {
    const PROC: &str = "dialogs_storage_list";
    let (bucket_id, list_args) = split_args(PROC, "list_dialogs", args)?;
    let request = ListDialogs::parse(list_args)?;
    let store = Store::get()?;
    check_owner_bucket(
        PROC,
        bucket_id,
        request.user_id,
        "user",
        store.bucket_count,
        "readable",
    )?;
    check_bucket(PROC, bucket_id, READABLE, "readable")?;
    reply.mp(&request.apply(&store)?)
}

/// One event of `inbox_apply`. The text is a copy: a call made from Lua (the
/// drainer's, through vshard) has its arguments on the fiber's region, which
/// the statements of the transaction may reuse.
enum Event {
    /// deliver_message(user, message).
    Message {
        user: Uuid,
        id: Uuid,
        dialog_id: Uuid,
        from: Uuid,
        to: Uuid,
        text: String,
    },
    /// deliver_receipt(user, dialog, read_id).
    Receipt {
        user: Uuid,
        dialog: Uuid,
        read_id: Uuid,
    },
}

impl Event {
    fn user(&self) -> Uuid {
        match self {
            Event::Message { user, .. } | Event::Receipt { user, .. } => *user,
        }
    }
}

/// A call that did not come from the drainer's or the router's code: a bug
/// there, refused whole.
fn misuse(proc: &'static str, what: &str) -> Error {
    Error::Internal {
        proc,
        what: what.to_owned(),
    }
}

/// Reads `events`: `{'m', user_id, message_id, dialog_id, user_from, user_to,
/// text}` and `{'r', user_id, dialog_id, read_id}`.
fn parse_events<'a>(proc: &'static str, buf: &'a [u8]) -> Result<Vec<Event>> {
    let bad = |what: &str| misuse(proc, &format!("events: {what}"));
    let mut r = Reader::new(buf);
    let Ok(Value::Array(n)) = r.read() else {
        return Err(bad("not an array"));
    };
    let uuid = |r: &mut Reader<'a>, what: &str| -> Result<Uuid> {
        r.read()
            .ok()
            .and_then(wire_uuid)
            .filter(|id| !id.is_nil())
            .ok_or_else(|| bad(&format!("{what} is not a uuid")))
    };
    let mut events = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1024));
    for _ in 0..n {
        let len = match r.read() {
            Ok(Value::Array(len)) => len,
            _ => return Err(bad("an event is not an array")),
        };
        let event = match (r.read(), len) {
            (Ok(Value::Str(b"m")), 7) => {
                let user = uuid(&mut r, "user_id")?;
                let id = uuid(&mut r, "message_id")?;
                let dialog_id = uuid(&mut r, "dialog_id")?;
                let from = uuid(&mut r, "user_from")?;
                let to = uuid(&mut r, "user_to")?;
                let text = match r.read() {
                    Ok(Value::Str(t)) => std::str::from_utf8(t)
                        .map_err(|_| bad("text is not UTF-8"))?
                        .to_owned(),
                    _ => return Err(bad("text is not a string")),
                };
                if user != from && user != to {
                    return Err(bad(
                        "a message event for a user who neither sent nor received it",
                    ));
                }
                Event::Message {
                    user,
                    id,
                    dialog_id,
                    from,
                    to,
                    text,
                }
            }
            (Ok(Value::Str(b"r")), 4) => Event::Receipt {
                user: uuid(&mut r, "user_id")?,
                dialog: uuid(&mut r, "dialog_id")?,
                read_id: uuid(&mut r, "read_id")?,
            },
            _ => {
                return Err(bad(
                    "an event is neither {'m', 7 fields} nor {'r', 4 fields}",
                ))
            }
        };
        events.push(event);
    }
    Ok(events)
}

/// `dialogs_storage_inbox_apply(bucket_id, events)` → how many events were
/// applied (those that changed nothing, delivered before, included). Every
/// event's user must live in `bucket_id`, writable here, checked inside the
/// transaction; else 1012 and nothing applied.
pub fn inbox_apply(args: &[u8], reply: &mut Reply) -> Result<()> {
    const PROC: &str = "dialogs_storage_inbox_apply";
    let (bucket_id, events_buf) = split_args(PROC, "inbox_apply", args)?;
    let events = parse_events(PROC, events_buf)?;
    let store = Store::get()?;
    store.inbox()?;
    for e in &events {
        check_owner_bucket(
            PROC,
            bucket_id,
            e.user(),
            "user",
            store.bucket_count,
            "writable",
        )?;
    }
    let applied = atomically(|| {
        check_bucket(PROC, bucket_id, WRITABLE, "writable")?;
        for e in &events {
            match e {
                Event::Message {
                    user,
                    id,
                    dialog_id,
                    from,
                    to,
                    text,
                } => store.deliver_message(
                    *user,
                    &Delivery {
                        id: *id,
                        dialog_id: *dialog_id,
                        from: *from,
                        to: *to,
                        text,
                    },
                )?,
                Event::Receipt {
                    user,
                    dialog,
                    read_id,
                } => store.deliver_receipt(*user, *dialog, *read_id)?,
            };
        }
        Ok(events.len() as u64)
    })
    .map_err(|e| e.in_write(PROC))?;
    let mut out = Vec::with_capacity(9);
    out.put_uint(applied);
    reply.mp(&out)
}

/// Reads `{user_id, dialog_id, up_to_id [, more...]}` with `mark_read`'s own
/// validation, and the reader positioned at what follows.
fn parse_mark<'a>(
    proc: &'static str,
    buf: &'a [u8],
    min: u32,
    max: u32,
    signature: &'static str,
) -> Result<(MarkRead, Args<'a>)> {
    let mut args = Args::open(proc, buf, min, max, signature)?;
    let request = MarkRead {
        user_id: args::uuid(Arg::UserId, args.read()?)?,
        dialog_id: args::dialog_id(args.read()?)?,
        up_to: args::uuid(Arg::UpToId, args.read()?)?,
    };
    Ok((request, args))
}

/// A uuid as the Lua of routers and drainers passes it: a msgpack uuid or its
/// string (the nil uuid included: it means "none" here).
fn wire_uuid(v: Value<'_>) -> Option<Uuid> {
    match v {
        Value::Str(s) => Uuid::try_parse_ascii(s).ok(),
        v => v.as_uuid(),
    }
}

/// A nil or a uuid (the nil uuid included) read from `args`.
fn optional_uuid(proc: &'static str, what: &str, v: Value<'_>) -> Result<Option<Uuid>> {
    match v {
        Value::Nil => Ok(None),
        v => wire_uuid(v)
            .map(Some)
            .ok_or_else(|| misuse(proc, &format!("{what} is not a uuid"))),
    }
}

/// `dialogs_storage_read_count(bucket_id, {user_id, dialog_id, up_to_id, L|nil})`
/// → `{count, H}` on the dialog's storage: `count` messages of the dialog to the
/// user, not from the user, with ids in (up_to, L] (no bound without L), and `H`
/// the last id of a message of the dialog the user sent or received, at most L
/// (the nil uuid if none). 1013 when `up_to_id` is not the user's message of the
/// dialog.
pub fn read_count(args: &[u8], reply: &mut Reply) -> Result<()> {
    const PROC: &str = "dialogs_storage_read_count";
    const SIGNATURE: &str = "3 or 4 arguments (user_id, dialog_id, up_to_id [, L])";
    let (bucket_id, inner) = split_args(PROC, "read_count", args)?;
    let (request, mut rest) = parse_mark(PROC, inner, 3, 4, SIGNATURE)?;
    let at_most = if rest.count == 4 {
        optional_uuid(PROC, "L", rest.read()?)?
    } else {
        None
    };
    let store = Store::get()?;
    check_owner_bucket(
        PROC,
        bucket_id,
        request.dialog_id,
        "dialog",
        store.bucket_count,
        "readable",
    )?;
    check_bucket(PROC, bucket_id, READABLE, "readable")?;
    request.check_message(&store)?;
    let count = store.count_unread(request.dialog_id, request.user_id, request.up_to, at_most)?;
    let last = store.last_of(request.dialog_id, request.user_id, at_most)?;
    let mut out = Vec::with_capacity(32);
    out.put_array_header(2);
    out.put_uint(count);
    out.put_uuid(&last);
    reply.mp(&out)
}

/// `dialogs_storage_mark_read_apply(bucket_id, {user_id, dialog_id, up_to_id,
/// count, H})` → `{unread, nil}` when done (or when the cursor was there
/// already), `{nil, L}` when the entry's last id is not `H`: count again up to
/// `L` (the nil uuid for an absent entry). On the user's storage, the bucket
/// writable and checked inside the transaction; the receipt for the peer is an
/// outbox row in the same transaction.
pub fn mark_read_apply(args: &[u8], reply: &mut Reply) -> Result<()> {
    const PROC: &str = "dialogs_storage_mark_read_apply";
    const SIGNATURE: &str = "5 arguments (user_id, dialog_id, up_to_id, count, H)";
    let (bucket_id, inner) = split_args(PROC, "mark_read_apply", args)?;
    let (request, mut rest) = parse_mark(PROC, inner, 5, 5, SIGNATURE)?;
    let Value::Uint(count) = rest.read()? else {
        return Err(misuse(PROC, "count is not an unsigned integer"));
    };
    let last = optional_uuid(PROC, "H", rest.read()?)?.unwrap_or(NONE);
    let store = Store::get()?;
    store.inbox()?;
    let user = request.user_id;
    check_owner_bucket(
        PROC,
        bucket_id,
        user,
        "user",
        store.bucket_count,
        "writable",
    )?;
    let outcome = atomically(|| {
        check_bucket(PROC, bucket_id, WRITABLE, "writable")?;
        let stored = store.entry_bytes(user, request.dialog_id)?;
        let old = match &stored {
            Some(b) => Some(Entry::decode(b).ok_or_else(|| misuse(PROC, "a corrupt entry"))?),
            None => None,
        };
        if let Some(e) = &old {
            if request.up_to <= e.read_id {
                return Ok(Ok(e.unread));
            }
        }
        let entry_last = old.as_ref().map_or(NONE, |e| e.last_id);
        if entry_last != last {
            return Ok(Err(entry_last));
        }
        let old = old.unwrap_or_else(|| {
            Entry::placeholder(user, request.dialog_id, store.user_bucket(user))
        });
        let (old_unread, peer) = (old.unread, old.peer_id);
        let Some(new) = entry::mark_read(old, request.up_to, count) else {
            return Ok(Ok(old_unread));
        };
        store.put_entry(&new)?;
        store.count_unread_change(user, old_unread, count)?;
        if !peer.is_nil() && peer != user {
            let floor = store.max_id()?.max(store.max_outbox_id()?);
            let (id, _) = issue_id(PROC, floor)?;
            store.put_outbox_receipt(id, bucket_id, peer, request.dialog_id, request.up_to)?;
        }
        Ok(Ok(count))
    })
    .map_err(|e| e.in_write(PROC))?;
    let mut out = Vec::with_capacity(24);
    out.put_array_header(2);
    match outcome {
        Ok(unread) => {
            out.put_uint(unread);
            out.put_nil();
        }
        Err(l) => {
            out.put_nil();
            out.put_uuid(&l);
        }
    }
    reply.mp(&out)
}
