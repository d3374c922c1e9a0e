//! `list_dialogs(user_id [, opts])`: a user's dialogs, most recent activity
//! first, with the user's totals (the badge), as one map.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Error, Result};
use crate::inbox::entry::Entry;
use crate::msgpack::Write;
use crate::store::Store;
use crate::Reply;

/// No page holds more dialogs than this.
pub const MAX_LIST: u32 = 100;
/// A page without `opts.limit` holds this many.
pub const DEFAULT_LIST: u32 = 20;
/// Initial size of a reply: a page of 20 dialogs with short texts.
const REPLY_BUF_START: usize = 4096;

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
    /// next}`, one msgpack map (docs/inbox.md, "Replies").
    pub fn apply(&self, store: &Store) -> Result<Vec<u8>> {
        let totals = store.totals(self.user_id)?;
        let mut out = Vec::with_capacity(REPLY_BUF_START);
        out.put_map_header(4);
        out.put_str("dialogs");
        // An array32 header whose count is filled in after the walk.
        let count_at = out.len() + 1;
        out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        let mut last = None;
        let count = store.walk_entries(self.user_id, self.before, self.limit, |tuple| {
            let e = Entry::decode(tuple).ok_or_else(|| Error::Internal {
                proc: "list_dialogs",
                what: "an inbox entry does not match its format".into(),
            })?;
            put_entry(&mut out, &e);
            last = Some(e.last_id);
            Ok(())
        })?;
        if let Some(len) = out.get_mut(count_at..count_at + 4) {
            len.copy_from_slice(&count.to_be_bytes());
        }
        out.put_str("unread_messages");
        out.put_uint(totals.unread_messages);
        out.put_str("unread_dialogs");
        out.put_uint(totals.unread_dialogs);
        out.put_str("next");
        match last.filter(|_| count == self.limit) {
            Some(id) => out.put_uuid(&id),
            None => out.put_nil(),
        }
        Ok(out)
    }
}

/// One entry as a client sees it: a map of eight keys, cursors nil when none.
fn put_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.put_map_header(8);
    out.put_str("dialog_id");
    out.put_uuid(&e.dialog_id);
    out.put_str("peer_id");
    out.put_uuid(&e.peer_id);
    out.put_str("last_id");
    out.put_uuid(&e.last_id);
    out.put_str("last_from");
    out.put_uuid(&e.last_from);
    out.put_str("last_text");
    out.put_str(e.last_text);
    out.put_str("unread");
    out.put_uint(e.unread);
    for (name, cursor) in [("read_id", e.read_id), ("peer_read_id", e.peer_read_id)] {
        out.put_str(name);
        if cursor.is_nil() {
            out.put_nil();
        } else {
            out.put_uuid(&cursor);
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
