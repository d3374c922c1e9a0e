//! The inbox entry ([`Entry`]: one user's view of one dialog) and the rules that
//! change it: a message delivered ([`deliver_message`]), a read receipt delivered
//! ([`deliver_receipt`]), the user's read cursor moved ([`mark_read`]), and what
//! each change does to the user's totals ([`Totals::apply`]). Pure functions of
//! their inputs: the store reads the entry, a rule says what it becomes, the
//! store writes it (src/store/inbox.rs). One implementation for every road: the
//! single store's inline upkeep, the build over stored messages and the
//! storages' `inbox_apply`.

use uuid::Uuid;

use crate::msgpack::{Reader, Value, Write};

/// Number of fields of a `dialogs_inbox` tuple.
pub const ENTRY_FIELDS: u32 = 10;
/// Number of fields of a `dialogs_inbox_totals` tuple.
pub const TOTALS_FIELDS: u32 = 4;

/// The nil uuid: "none" in a cursor or in a placeholder's last message.
pub const NONE: Uuid = Uuid::nil();

/// A user's entry for one dialog, as stored (docs/inbox.md, "The model").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub user_id: Uuid,
    pub dialog_id: Uuid,
    /// The other user of the last message delivered here (`user_id` for notes to
    /// self; nil in a placeholder).
    pub peer_id: Uuid,
    /// The last message delivered here; nil in a placeholder (never listed).
    pub last_id: Uuid,
    pub last_from: Uuid,
    pub last_text: &'a str,
    /// The user's unread messages in this dialog.
    pub unread: u64,
    /// The user's read cursor (nil: nothing read).
    pub read_id: Uuid,
    /// The peer's read cursor as delivered here (nil: none).
    pub peer_read_id: Uuid,
    /// vshard bucket of `user_id`.
    pub bucket_id: u64,
}

/// A message as the inbox sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub id: Uuid,
    pub dialog_id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub text: &'a str,
}

impl<'a> Entry<'a> {
    /// An entry with nothing delivered: no last message, nothing unread, no
    /// cursors.
    pub fn placeholder(user_id: Uuid, dialog_id: Uuid, bucket_id: u64) -> Entry<'static> {
        Entry {
            user_id,
            dialog_id,
            peer_id: NONE,
            last_id: NONE,
            last_from: NONE,
            last_text: "",
            unread: 0,
            read_id: NONE,
            peer_read_id: NONE,
            bucket_id,
        }
    }

    /// True for a placeholder: no message delivered yet.
    pub fn is_placeholder(&self) -> bool {
        self.last_id.is_nil()
    }

    /// The stored tuple's msgpack.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_array_header(ENTRY_FIELDS);
        out.put_uuid(&self.user_id);
        out.put_uuid(&self.dialog_id);
        out.put_uuid(&self.peer_id);
        out.put_uuid(&self.last_id);
        out.put_uuid(&self.last_from);
        out.put_str(self.last_text);
        out.put_uint(self.unread);
        out.put_uuid(&self.read_id);
        out.put_uuid(&self.peer_read_id);
        out.put_uint(self.bucket_id);
    }

    /// Reads a stored tuple's msgpack; None if it is not an entry.
    pub fn decode(tuple: &'a [u8]) -> Option<Entry<'a>> {
        let mut r = Reader::new(tuple);
        if r.read().ok()? != Value::Array(ENTRY_FIELDS) {
            return None;
        }
        let uuid = |r: &mut Reader<'a>| r.read().ok()?.as_uuid();
        let user_id = uuid(&mut r)?;
        let dialog_id = uuid(&mut r)?;
        let peer_id = uuid(&mut r)?;
        let last_id = uuid(&mut r)?;
        let last_from = uuid(&mut r)?;
        let Ok(Value::Str(text)) = r.read() else {
            return None;
        };
        let last_text = std::str::from_utf8(text).ok()?;
        let Ok(Value::Uint(unread)) = r.read() else {
            return None;
        };
        let read_id = uuid(&mut r)?;
        let peer_read_id = uuid(&mut r)?;
        let Ok(Value::Uint(bucket_id)) = r.read() else {
            return None;
        };
        Some(Entry {
            user_id,
            dialog_id,
            peer_id,
            last_id,
            last_from,
            last_text,
            unread,
            read_id,
            peer_read_id,
            bucket_id,
        })
    }
}

/// deliver_message(U, M): what `user`'s entry for M's dialog becomes when M is
/// delivered to it (`entry`: the stored one, None if absent; `bucket_id`: the
/// user's bucket, for a new entry). None: nothing changes (M or a later message
/// was delivered already: messages of a dialog reach an entry in id order, so
/// the last id says exactly what was delivered).
///
/// Own messages (notes to self included) read the dialog: every earlier
/// message of it was delivered first. A message from the peer says the peer has
/// read up to it, and counts as unread unless the user's cursor is already past
/// it (a cursor moved ahead of the deliveries, on a sharded store).
pub fn deliver_message<'a>(
    entry: Option<Entry<'a>>,
    user: Uuid,
    m: &Delivery<'a>,
    bucket_id: u64,
) -> Option<Entry<'a>> {
    let mut e = entry.unwrap_or_else(|| Entry::placeholder(user, m.dialog_id, bucket_id));
    if m.id <= e.last_id {
        return None;
    }
    e.last_id = m.id;
    e.last_from = m.from;
    e.last_text = m.text;
    e.peer_id = if m.from == user { m.to } else { m.from };
    if m.from == user {
        e.read_id = e.read_id.max(m.id);
        e.unread = 0;
    } else {
        e.peer_read_id = e.peer_read_id.max(m.id);
        if m.id > e.read_id {
            e.unread = e.unread.saturating_add(1);
        }
    }
    Some(e)
}

/// deliver_receipt(U, D, R): `user`'s entry for `dialog_id` once the peer's read
/// cursor `read_id` reaches it. None: nothing changes (a cursor at or past it
/// was delivered already). An absent entry becomes a placeholder that carries
/// the receipt until the messages arrive.
pub fn deliver_receipt<'a>(
    entry: Option<Entry<'a>>,
    user: Uuid,
    dialog_id: Uuid,
    read_id: Uuid,
    bucket_id: u64,
) -> Option<Entry<'a>> {
    match entry {
        None => Some(Entry {
            peer_read_id: read_id,
            ..Entry::placeholder(user, dialog_id, bucket_id)
        }),
        Some(e) if read_id > e.peer_read_id => Some(Entry {
            peer_read_id: read_id,
            ..e
        }),
        Some(_) => None,
    }
}

/// mark_read(U, D, up_to): the entry once the user's cursor moves to `up_to`,
/// with `unread` messages after it (counted by the caller among those delivered
/// to the entry). None: the cursor is already there or past it, a stale or
/// repeated call, which changes nothing.
pub fn mark_read(entry: Entry<'_>, up_to: Uuid, unread: u64) -> Option<Entry<'_>> {
    if up_to <= entry.read_id {
        return None;
    }
    Some(Entry {
        read_id: up_to,
        unread,
        ..entry
    })
}

/// A user's totals: the badge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub unread_messages: u64,
    pub unread_dialogs: u64,
}

impl Totals {
    /// The totals after one entry's unread count went from `old` to `new`:
    /// messages by the difference, dialogs by whether it is unread now and was
    /// before. Saturating: totals written around the store never wrap.
    pub fn apply(self, old: u64, new: u64) -> Totals {
        let messages = if new >= old {
            self.unread_messages.saturating_add(new - old)
        } else {
            self.unread_messages.saturating_sub(old - new)
        };
        let dialogs = match (old > 0, new > 0) {
            (false, true) => self.unread_dialogs.saturating_add(1),
            (true, false) => self.unread_dialogs.saturating_sub(1),
            _ => self.unread_dialogs,
        };
        Totals {
            unread_messages: messages,
            unread_dialogs: dialogs,
        }
    }

    /// The stored tuple's msgpack.
    pub fn encode(&self, user_id: Uuid, bucket_id: u64, out: &mut Vec<u8>) {
        out.put_array_header(TOTALS_FIELDS);
        out.put_uuid(&user_id);
        out.put_uint(self.unread_messages);
        out.put_uint(self.unread_dialogs);
        out.put_uint(bucket_id);
    }

    /// Reads a stored tuple's msgpack; None if it is not a totals row.
    pub fn decode(tuple: &[u8]) -> Option<Totals> {
        let mut r = Reader::new(tuple);
        if r.read().ok()? != Value::Array(TOTALS_FIELDS) {
            return None;
        }
        r.read().ok()?.as_uuid()?;
        let (Ok(Value::Uint(unread_messages)), Ok(Value::Uint(unread_dialogs))) =
            (r.read(), r.read())
        else {
            return None;
        };
        Some(Totals {
            unread_messages,
            unread_dialogs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const D: Uuid = Uuid::from_u128(0xd);

    fn msg(id: u128, from: Uuid, to: Uuid) -> Delivery<'static> {
        Delivery {
            id: Uuid::from_u128(id),
            dialog_id: D,
            from,
            to,
            text: "hi",
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_first_message_creates_both_entries() {
        let m = msg(10, A, B);
        let a = deliver_message(None, A, &m, 1).unwrap();
        assert_eq!(
            (a.peer_id, a.last_id, a.unread, a.read_id, a.peer_read_id),
            (B, id(10), 0, id(10), NONE)
        );
        let b = deliver_message(None, B, &m, 2).unwrap();
        assert_eq!(
            (b.peer_id, b.last_id, b.unread, b.read_id, b.peer_read_id),
            (A, id(10), 1, NONE, id(10))
        );
        assert_eq!((b.last_from, b.last_text, b.bucket_id), (A, "hi", 2));
    }

    #[test]
    fn a_message_delivered_again_changes_nothing() {
        let b = deliver_message(None, B, &msg(10, A, B), 2).unwrap();
        let b = deliver_message(Some(b), B, &msg(11, A, B), 2).unwrap();
        assert_eq!(b.unread, 2);
        for again in [10, 11] {
            assert_eq!(
                deliver_message(Some(b.clone()), B, &msg(again, A, B), 2),
                None
            );
        }
    }

    #[test]
    fn sending_reads_the_dialog() {
        let mut b = None;
        for n in 1..=3 {
            b = deliver_message(b, B, &msg(n, A, B), 2);
        }
        let b = deliver_message(b, B, &msg(4, B, A), 2).unwrap();
        assert_eq!(
            (b.unread, b.read_id, b.peer_id, b.last_from),
            (0, id(4), A, B)
        );
        // The peer's cursor moved with its messages, not with ours.
        assert_eq!(b.peer_read_id, id(3));
    }

    #[test]
    fn a_note_to_self_is_read_and_its_own_peer() {
        let a = deliver_message(None, A, &msg(5, A, A), 1).unwrap();
        assert_eq!((a.peer_id, a.unread, a.read_id), (A, 0, id(5)));
    }

    #[test]
    fn a_cursor_ahead_of_the_deliveries_keeps_them_read() {
        let b = Entry {
            read_id: id(20),
            ..Entry::placeholder(B, D, 2)
        };
        let b = deliver_message(Some(b), B, &msg(15, A, B), 2).unwrap();
        assert_eq!((b.unread, b.last_id), (0, id(15)));
        let b = deliver_message(Some(b), B, &msg(25, A, B), 2).unwrap();
        assert_eq!(b.unread, 1);
    }

    #[test]
    fn receipts_only_move_forward_and_make_placeholders() {
        let a = deliver_receipt(None, A, D, id(7), 1).unwrap();
        assert!(a.is_placeholder());
        assert_eq!((a.peer_read_id, a.peer_id, a.unread), (id(7), NONE, 0));
        assert_eq!(deliver_receipt(Some(a.clone()), A, D, id(6), 1), None);
        assert_eq!(deliver_receipt(Some(a.clone()), A, D, id(7), 1), None);
        let a = deliver_receipt(Some(a), A, D, id(9), 1).unwrap();
        assert_eq!(a.peer_read_id, id(9));
        // The placeholder's receipt survives the first message.
        let a = deliver_message(Some(a), A, &msg(3, B, A), 1).unwrap();
        assert_eq!((a.peer_read_id, a.unread, a.last_id), (id(9), 1, id(3)));
    }

    #[test]
    fn mark_read_moves_the_cursor_forward_only() {
        let b = Entry {
            unread: 3,
            read_id: id(5),
            last_id: id(9),
            ..Entry::placeholder(B, D, 2)
        };
        assert_eq!(mark_read(b.clone(), id(5), 0), None);
        assert_eq!(mark_read(b.clone(), id(4), 0), None);
        let b = mark_read(b, id(7), 2).unwrap();
        assert_eq!((b.read_id, b.unread, b.last_id), (id(7), 2, id(9)));
    }

    #[test]
    fn totals_follow_every_change_of_unread() {
        let t = Totals::default();
        let t = t.apply(0, 1);
        assert_eq!((t.unread_messages, t.unread_dialogs), (1, 1));
        let t = t.apply(1, 3);
        assert_eq!((t.unread_messages, t.unread_dialogs), (3, 1));
        let t = t.apply(0, 2);
        assert_eq!((t.unread_messages, t.unread_dialogs), (5, 2));
        let t = t.apply(3, 0);
        assert_eq!((t.unread_messages, t.unread_dialogs), (2, 1));
        let t = t.apply(2, 2);
        assert_eq!((t.unread_messages, t.unread_dialogs), (2, 1));
        // Never below zero, whatever was stored.
        let t = Totals::default().apply(4, 0);
        assert_eq!(t, Totals::default());
    }

    #[test]
    fn entries_and_totals_round_trip() {
        let e = Entry {
            peer_id: B,
            last_id: id(9),
            last_from: B,
            last_text: "привет",
            unread: 300,
            read_id: id(3),
            peer_read_id: id(8),
            ..Entry::placeholder(A, D, 2999)
        };
        let mut buf = Vec::new();
        e.encode(&mut buf);
        assert_eq!(Entry::decode(&buf), Some(e));
        assert_eq!(Entry::decode(&buf[..buf.len() - 1]), None);
        let t = Totals {
            unread_messages: 70_000,
            unread_dialogs: 3,
        };
        let mut buf = Vec::new();
        t.encode(A, 7, &mut buf);
        assert_eq!(Totals::decode(&buf), Some(t));
    }
}
