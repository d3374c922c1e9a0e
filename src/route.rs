//! `dialogs_route(bucket_count, proc, args)`: a router's check of a call before
//! any storage sees it.
//!
//! A vshard router (`dialogs/router.lua`) passes the arguments a client gave
//! `new_dialog`, `get_dialog`, `list_dialogs` or `mark_read` (`args`, one
//! array) together with the procedure's
//! name and the cluster's bucket count. They are validated by the procedure's own
//! parser, so a bad call is refused here with exactly the code and message the
//! procedure would give, and no storage is asked. A good call replies with the
//! bucket its dialog lives in (for a `new_dialog` with a nil `dialog_id`, the
//! dialog of the user pair); for `list_dialogs`, the user's bucket (an inbox
//! lives in its owner's); for `mark_read`, an array of two: the dialog's bucket
//! (where the unread count is taken) and the user's (where the cursor moves).
//! Not granted to clients: only the router's Lua calls it.

use crate::bucket::bucket_id;
use crate::error::{Error, Result};
use crate::get_dialog::GetDialog;
use crate::inbox::list::ListDialogs;
use crate::inbox::mark::MarkRead;
use crate::msgpack::{Reader, Value, Write};
use crate::new_dialog::NewDialog;
use crate::Reply;

const PROC: &str = "dialogs_route";

/// A call of this entry that did not come from the router's code: a bug there.
fn misuse(what: &str) -> Error {
    Error::Internal {
        proc: PROC,
        what: format!(
            "expected (bucket_count, 'new_dialog' | 'get_dialog' | 'list_dialogs' | \
             'mark_read', {{args}}): {what}"
        ),
    }
}

/// Where a validated call goes: one bucket, or (`mark_read`) the dialog's and
/// then the user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    One(u32),
    Two(u32, u32),
}

/// The bucket(s) of a validated call of `proc` with the msgpack argument array `args`.
pub fn route_of(proc: &[u8], args: &[u8], bucket_count: u32) -> Result<Route> {
    let one = |id| Ok(Route::One(bucket_id(id, bucket_count)));
    match proc {
        b"new_dialog" => one(NewDialog::parse(args)?.dialog()),
        b"get_dialog" => one(GetDialog::parse(args)?.page.dialog_id),
        b"list_dialogs" => one(ListDialogs::parse(args)?.user_id),
        b"mark_read" => {
            let m = MarkRead::parse(args)?;
            Ok(Route::Two(
                bucket_id(m.dialog_id, bucket_count),
                bucket_id(m.user_id, bucket_count),
            ))
        }
        _ => Err(misuse("unknown procedure")),
    }
}

/// The procedure body: read the three arguments, validate, reply with the
/// bucket (an array of two for `mark_read`).
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let mut r = Reader::new(args);
    if r.read() != Ok(Value::Array(3)) {
        return Err(misuse("not three arguments"));
    }
    let bucket_count = match r.read() {
        Ok(Value::Uint(n)) => u32::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| misuse("bucket_count out of range"))?,
        _ => return Err(misuse("bucket_count is not an integer")),
    };
    let Ok(Value::Str(proc)) = r.read() else {
        return Err(misuse("proc is not a string"));
    };
    // The third argument, the call's own argument array, is the rest of the input.
    let mut out = Vec::with_capacity(11);
    match route_of(proc, r.rest(), bucket_count)? {
        Route::One(bucket) => out.put_uint(u64::from(bucket)),
        Route::Two(dialogs, users) => {
            out.put_array_header(2);
            out.put_uint(u64::from(dialogs));
            out.put_uint(u64::from(users));
        }
    }
    reply.mp(&out)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn args(parts: &[Uuid]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_array_header(parts.len() as u32);
        for p in parts {
            buf.put_uuid(p);
        }
        buf
    }

    #[test]
    fn the_inbox_calls_go_to_their_owners_buckets() {
        let (user, dialog, up_to) = (Uuid::from_u128(7), Uuid::from_u128(9), Uuid::from_u128(11));
        assert_eq!(
            route_of(b"list_dialogs", &args(&[user]), 3000).unwrap(),
            Route::One(bucket_id(user, 3000))
        );
        assert_eq!(
            route_of(b"mark_read", &args(&[user, dialog, up_to]), 3000).unwrap(),
            Route::Two(bucket_id(dialog, 3000), bucket_id(user, 3000))
        );
        // A bad call gets the procedure's own error.
        let e = route_of(b"mark_read", &args(&[user, dialog]), 3000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mark_read: expected 3 arguments (user_id, dialog_id, up_to_id), got 2"
        );
        assert!(route_of(b"list_dialog", &args(&[user]), 3000).is_err());
    }
}
