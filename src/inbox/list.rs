//! `list_dialogs(user_id [, opts])`: a user's dialogs, most recent activity
//! first, with the user's totals (the badge), as one map.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result};
use crate::inbox::entry::NONE;
use crate::msgpack::{Reader, Value, Write, EXT_UUID};
use crate::store::Store;
use crate::Reply;

/// No page holds more dialogs than this.
pub const MAX_LIST: u32 = 100;
/// A page without `opts.limit` holds this many.
pub const DEFAULT_LIST: u32 = 20;
/// The most an entry of the reply takes besides its text's bytes: its map
/// header (1 byte) and keys (74), six uuids (108), the unread count (9) and
/// the text's string header (5).
const ENTRY_BYTES_BESIDES_TEXT: usize = 197;
/// The text length a reply's buffer is first sized for, per entry: a page of
/// texts this long or shorter is written without the buffer growing.
const TEXT_BYTES_TYPICAL: usize = 128;
/// The reply around its entries, at most (85 bytes): the map header, four
/// keys (44), the array header (5), two counts (9 each) and `next` (18).
const REPLY_BYTES_BESIDES_ENTRIES: usize = 85;

/// A map key as its msgpack bytes (a fixstr), built at compile time.
const fn key<const N: usize>(name: &str) -> [u8; N] {
    let name = name.as_bytes();
    assert!(name.len() + 1 == N && name.len() < 32);
    let mut out = [0u8; N];
    // A fixstr: 0xa0 plus the length (under 32, checked above).
    out[0] = 0xa0 | name.len() as u8;
    let mut i = 0;
    while i < name.len() {
        out[i + 1] = name[i];
        i += 1;
    }
    out
}

const KEY_DIALOGS: [u8; 8] = key("dialogs");
const KEY_UNREAD_MESSAGES: [u8; 16] = key("unread_messages");
const KEY_UNREAD_DIALOGS: [u8; 15] = key("unread_dialogs");
const KEY_NEXT: [u8; 5] = key("next");
const KEY_DIALOG_ID: [u8; 10] = key("dialog_id");
const KEY_PEER_ID: [u8; 8] = key("peer_id");
const KEY_LAST_ID: [u8; 8] = key("last_id");
const KEY_LAST_FROM: [u8; 10] = key("last_from");
const KEY_LAST_TEXT: [u8; 10] = key("last_text");
const KEY_UNREAD: [u8; 7] = key("unread");
const KEY_READ_ID: [u8; 8] = key("read_id");
const KEY_PEER_READ_ID: [u8; 13] = key("peer_read_id");
/// Keys in an entry's map.
const ENTRY_KEYS: u32 = 8;
/// Keys in the reply's map.
const REPLY_KEYS: u32 = 4;

const SIGNATURE: &str = "1 or 2 arguments (user_id [, opts])";
const OPTIONS: &[&str] = &["limit", "before"];

/// A validated `list_dialogs` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListDialogs {
    pub user_id: Uuid,
    pub limit: u32,
    /// Only dialogs whose last message is older than this id: the `next` of the
    /// previous page.
    pub before: Option<Uuid>,
}

impl ListDialogs {
    /// Validates the msgpack argument array; the first bad argument is the error.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut args = Args::open("list_dialogs", buf, 1, 2, SIGNATURE)?;
        let mut req = ListDialogs {
            user_id: args::uuid(Arg::UserId, args.read()?)?,
            limit: DEFAULT_LIST,
            before: None,
        };
        if args.count == 2 {
            args::options(&mut args, OPTIONS, |name, value| {
                match name {
                    "limit" => {
                        let n = args::integer(Arg::Limit, value, 1, u64::from(MAX_LIST))?;
                        req.limit = u32::try_from(n).unwrap_or(MAX_LIST);
                    }
                    _ => req.before = Some(args::uuid(Arg::Before, value)?),
                }
                Ok(())
            })?;
        }
        Ok(req)
    }

    /// The reply: `{dialogs = {entry...}, unread_messages, unread_dialogs,
    /// next}`, one msgpack map (docs/inbox.md, "Replies"), written once, straight
    /// from the stored entries' bytes, into a buffer sized for the page.
    pub fn apply(&self, store: &Store) -> Result<Vec<u8>> {
        let totals = store.totals(self.user_id)?;
        let entries = usize::try_from(self.limit)
            .unwrap_or(0)
            .min(MAX_LIST as usize);
        let mut out = Vec::with_capacity(
            REPLY_BYTES_BESIDES_ENTRIES + entries * (ENTRY_BYTES_BESIDES_TEXT + TEXT_BYTES_TYPICAL),
        );
        out.put_map_header(REPLY_KEYS);
        out.extend_from_slice(&KEY_DIALOGS);
        // An array32 header whose count is filled in after the walk.
        let count_at = out.len() + 1;
        out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        let mut last = None;
        let count = store.walk_entries(self.user_id, self.before, self.limit, |fields| {
            let e = Listed::read(fields).ok_or_else(|| Error::Internal {
                proc: "list_dialogs",
                what: "an inbox entry does not match its format".into(),
            })?;
            e.put(&mut out);
            last = Some(*e.last_id);
            Ok(())
        })?;
        if let Some(len) = out.get_mut(count_at..count_at + 4) {
            len.copy_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(&KEY_UNREAD_MESSAGES);
        out.put_uint(totals.unread_messages);
        out.extend_from_slice(&KEY_UNREAD_DIALOGS);
        out.put_uint(totals.unread_dialogs);
        out.extend_from_slice(&KEY_NEXT);
        match last.filter(|_| count == self.limit) {
            Some(id) => out.extend_from_slice(&id),
            None => out.put_nil(),
        }
        Ok(out)
    }
}

/// A msgpack uuid as stored: the fixext16 marker, the uuid type, 16 bytes.
type MpUuid = [u8; UUID_MP_LEN];
const UUID_MP_LEN: usize = 18;
/// The first two bytes of every msgpack uuid.
const UUID_MP_HEAD: [u8; 2] = [0xd8, EXT_UUID as u8];

/// One listed entry, borrowed from its stored tuple: its uuids and its text
/// as their msgpack bytes, which the reply repeats as they are (nothing
/// decoded and encoded again; the text, like `get_dialog`'s, is sent as it
/// was stored, and the store only ever stores valid UTF-8).
struct Listed<'a> {
    dialog_id: &'a MpUuid,
    peer_id: &'a MpUuid,
    last_id: &'a MpUuid,
    last_from: &'a MpUuid,
    /// The msgpack string, header and bytes.
    last_text: &'a [u8],
    unread: u64,
    read_id: &'a MpUuid,
    peer_read_id: &'a MpUuid,
}

/// The next value of `rest` if it is a msgpack uuid, as its bytes.
fn mp_uuid<'a>(rest: &mut &'a [u8]) -> Option<&'a MpUuid> {
    let (value, tail) = rest.split_first_chunk::<UUID_MP_LEN>()?;
    if value[..2] != UUID_MP_HEAD {
        return None;
    }
    *rest = tail;
    Some(value)
}

impl<'a> Listed<'a> {
    /// Reads the fields of an entry before its `bucket_id`, in the stored order
    /// ([`Entry::encode`](crate::inbox::entry::Entry::encode)); None if they
    /// do not match the entry's format.
    fn read(mut fields: &'a [u8]) -> Option<Listed<'a>> {
        let rest = &mut fields;
        mp_uuid(rest)?; // user_id: the caller's, not in the reply
        let dialog_id = mp_uuid(rest)?;
        let peer_id = mp_uuid(rest)?;
        let last_id = mp_uuid(rest)?;
        let last_from = mp_uuid(rest)?;
        let mut r = Reader::new(rest);
        let Ok(Value::Str(_)) = r.read() else {
            return None;
        };
        let (last_text, _) = rest.split_at_checked(rest.len().checked_sub(r.rest().len())?)?;
        let Ok(Value::Uint(unread)) = r.read() else {
            return None;
        };
        *rest = r.rest();
        Some(Listed {
            dialog_id,
            peer_id,
            last_id,
            last_from,
            last_text,
            unread,
            read_id: mp_uuid(rest)?,
            peer_read_id: mp_uuid(rest)?,
        })
    }

    /// The entry as a client sees it: a map of eight keys, cursors nil when
    /// none (the nil uuid).
    fn put(&self, out: &mut Vec<u8>) {
        out.reserve(ENTRY_BYTES_BESIDES_TEXT + self.last_text.len());
        out.put_map_header(ENTRY_KEYS);
        out.extend_from_slice(&KEY_DIALOG_ID);
        out.extend_from_slice(self.dialog_id);
        out.extend_from_slice(&KEY_PEER_ID);
        out.extend_from_slice(self.peer_id);
        out.extend_from_slice(&KEY_LAST_ID);
        out.extend_from_slice(self.last_id);
        out.extend_from_slice(&KEY_LAST_FROM);
        out.extend_from_slice(self.last_from);
        out.extend_from_slice(&KEY_LAST_TEXT);
        out.extend_from_slice(self.last_text);
        out.extend_from_slice(&KEY_UNREAD);
        out.put_uint(self.unread);
        for (name, cursor) in [
            (&KEY_READ_ID[..], self.read_id),
            (&KEY_PEER_READ_ID[..], self.peer_read_id),
        ] {
            out.extend_from_slice(name);
            if cursor[UUID_MP_HEAD.len()..] == *NONE.as_bytes() {
                out.put_nil();
            } else {
                out.extend_from_slice(cursor);
            }
        }
    }
}

/// The procedure body: parse, apply, reply with the one map.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let request = ListDialogs::parse(args)?;
    let out = request.apply(&Store::get()?)?;
    reply.mp(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::entry::Entry;

    /// Writes one argument.
    type Put<'a> = &'a dyn Fn(&mut Vec<u8>);

    fn args(values: &[Put<'_>]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_array_header(values.len() as u32);
        for v in values {
            v(&mut buf);
        }
        buf
    }

    #[test]
    fn parses_the_user_and_the_options() {
        let user = Uuid::from_u128(7);
        let before = Uuid::from_u128(9);
        let req = ListDialogs::parse(&args(&[&|b| b.put_uuid(&user)])).unwrap();
        assert_eq!(
            (req.user_id, req.limit, req.before),
            (user, DEFAULT_LIST, None)
        );
        let req = ListDialogs::parse(&args(&[&|b| b.put_uuid(&user), &|b| {
            b.put_map_header(2);
            b.put_str("limit");
            b.put_uint(100);
            b.put_str("before");
            b.put_uuid(&before);
        }]))
        .unwrap();
        assert_eq!((req.limit, req.before), (100, Some(before)));
    }

    /// The stored fields of `e` before its `bucket_id` (a bucket under 128:
    /// one byte), as the walk passes them.
    fn listed_fields(e: &Entry<'_>) -> Vec<u8> {
        assert!(e.bucket_id < 128);
        let mut stored = Vec::new();
        e.encode(&mut stored);
        stored[1..stored.len() - 1].to_vec()
    }

    #[test]
    fn an_entry_is_written_as_its_eight_keys_from_the_stored_bytes() {
        let u = Uuid::from_u128;
        let e = Entry {
            user_id: u(1),
            dialog_id: u(2),
            peer_id: u(3),
            last_id: u(4),
            last_from: u(3),
            last_text: "h\u{e9}llo",
            unread: 300,
            read_id: NONE,
            peer_read_id: u(4),
            bucket_id: 77,
        };
        let fields = listed_fields(&e);
        let mut out = Vec::new();
        Listed::read(&fields).unwrap().put(&mut out);
        let mut want = Vec::new();
        want.put_map_header(8);
        for (name, id) in [
            ("dialog_id", 2),
            ("peer_id", 3),
            ("last_id", 4),
            ("last_from", 3),
        ] {
            want.put_str(name);
            want.put_uuid(&u(id));
        }
        want.put_str("last_text");
        want.put_str("h\u{e9}llo");
        want.put_str("unread");
        want.put_uint(300);
        want.put_str("read_id");
        want.put_nil();
        want.put_str("peer_read_id");
        want.put_uuid(&u(4));
        assert_eq!(out, want);
    }

    #[test]
    fn an_entry_off_its_format_is_not_listed() {
        let mut fields = listed_fields(&Entry::placeholder(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            5,
        ));
        assert!(Listed::read(&fields).is_some());
        // The dialog id's uuid type byte made another extension's.
        fields[19] = 1;
        assert!(Listed::read(&fields).is_none());
        // Cut inside the last cursor.
        let whole = listed_fields(&Entry::placeholder(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            5,
        ));
        assert!(Listed::read(&whole[..whole.len() - 1]).is_none());
    }

    #[test]
    fn refuses_bad_limits_and_users() {
        let user = Uuid::from_u128(7);
        for limit in [0u64, 101] {
            let e = ListDialogs::parse(&args(&[&|b| b.put_uuid(&user), &|b| {
                b.put_map_header(1);
                b.put_str("limit");
                b.put_uint(limit);
            }]))
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("opts.limit: must be 1 to 100, got {limit}")
            );
        }
        let e = ListDialogs::parse(&args(&[&|b| b.put_uint(1)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "user_id: expected a uuid (string or msgpack uuid), got integer"
        );
        let e = ListDialogs::parse(&args(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "list_dialogs: expected 1 or 2 arguments (user_id [, opts]), got 0"
        );
    }
}
