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
//! - `dialogs_storage_inbox_apply_many(groups)`: deliveries to users of many
//!   buckets of this replica set, in one transaction, a refused bucket's group
//!   skipped;
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

    /// deliver_message or deliver_receipt, in the caller's transaction.
    fn apply(&self, store: &Store) -> Result<()> {
        match self {
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
        Ok(())
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

/// Reads `events` at `r`: `{'m', user_id, message_id, dialog_id, user_from,
/// user_to, text}` and `{'r', user_id, dialog_id, read_id}`, and leaves `r`
/// after them.
fn read_events<'a>(proc: &'static str, r: &mut Reader<'a>) -> Result<Vec<Event>> {
    let bad = |what: &str| misuse(proc, &format!("events: {what}"));
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
                let user = uuid(r, "user_id")?;
                let id = uuid(r, "message_id")?;
                let dialog_id = uuid(r, "dialog_id")?;
                let from = uuid(r, "user_from")?;
                let to = uuid(r, "user_to")?;
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
                user: uuid(r, "user_id")?,
                dialog: uuid(r, "dialog_id")?,
                read_id: uuid(r, "read_id")?,
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
    let events = read_events(PROC, &mut Reader::new(events_buf))?;
    let store = Store::get()?;
    store.inbox()?;
    check_owners(PROC, bucket_id, &events, store.bucket_count)?;
    let applied = atomically(|| {
        check_bucket(PROC, bucket_id, WRITABLE, "writable")?;
        for e in &events {
            e.apply(&store)?;
        }
        Ok(events.len() as u64)
    })
    .map_err(|e| e.in_write(PROC))?;
    let mut out = Vec::with_capacity(9);
    out.put_uint(applied);
    reply.mp(&out)
}

/// Whether every event's user lives in `bucket_id`: else the 1012 refusal of
/// entry `proc` naming the user's bucket (a caller that grouped them wrong).
fn check_owners(proc: &str, bucket_id: u64, events: &[Event], bucket_count: u32) -> Result<()> {
    for e in events {
        check_owner_bucket(proc, bucket_id, e.user(), "user", bucket_count, "writable")?;
    }
    Ok(())
}

/// The groups of one `inbox_apply_many` call, with their buckets, at most
/// this many allocated ahead whatever a header claims (a round of the drainer
/// names at most its rows' destination buckets).
const GROUPS_RESERVED_MAX: usize = 1024;

/// `dialogs_storage_inbox_apply_many(groups)`, `groups` an array of `{bucket_id,
/// events}` (each as `inbox_apply`'s two arguments) → `{applied = n, refused =
/// {bucket_id...}}`: in ONE transaction, each group whose bucket `_bucket`
/// holds writable here (checked inside the transaction, just before the group's
/// statements, with no yield in between) has its events applied; a group whose
/// bucket is not writable here (moving, gone: the caller's routing was stale) is
/// skipped, nothing of it written, and its bucket listed in `refused` (in the
/// groups' order); `applied` counts the events of the groups applied. A group
/// with an event whose user is not in its bucket refuses the whole call (1012,
/// nothing written): its caller grouped them wrong. The outbox drainer's
/// delivery to a replica set's master, one call per round (dialogs/outbox.lua).
pub fn inbox_apply_many(args: &[u8], reply: &mut Reply) -> Result<()> {
    const PROC: &str = "dialogs_storage_inbox_apply_many";
    let bad = |what: &str| {
        misuse(
            PROC,
            &format!("expected ({{{{bucket_id, events}}, ...}}): {what}"),
        )
    };
    let mut r = Reader::new(args);
    if r.read() != Ok(Value::Array(1)) {
        return Err(bad("not one argument"));
    }
    let Ok(Value::Array(n)) = r.read() else {
        return Err(bad("groups is not an array"));
    };
    let mut groups = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(GROUPS_RESERVED_MAX));
    for _ in 0..n {
        if r.read() != Ok(Value::Array(2)) {
            return Err(bad("a group is not {bucket_id, events}"));
        }
        let Ok(Value::Uint(bucket_id)) = r.read() else {
            return Err(bad("a group's bucket_id is not an integer"));
        };
        groups.push((bucket_id, read_events(PROC, &mut r)?));
    }
    let store = Store::get()?;
    store.inbox()?;
    for (bucket_id, events) in &groups {
        check_owners(PROC, *bucket_id, events, store.bucket_count)?;
    }
    let (applied, refused) = atomically(|| {
        let (mut applied, mut refused) = (0u64, Vec::new());
        for (bucket_id, events) in &groups {
            if check_bucket(PROC, *bucket_id, WRITABLE, "writable").is_err() {
                refused.push(*bucket_id);
                continue;
            }
            for e in events {
                e.apply(&store)?;
            }
            applied += events.len() as u64;
        }
        Ok((applied, refused))
    })
    .map_err(|e| e.in_write(PROC))?;
    let mut out = Vec::with_capacity(32 + 9 * refused.len());
    out.put_map_header(2);
    out.put_str("applied");
    out.put_uint(applied);
    out.put_str("refused");
    out.put_array_header(u32::try_from(refused.len()).unwrap_or(u32::MAX));
    for b in &refused {
        out.put_uint(*b);
    }
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
