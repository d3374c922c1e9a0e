//! `get_dialog(dialog_id [, opts])`: one page of a dialog's messages.

use uuid::Uuid;

use crate::args::{self, Args};
use crate::error::{Arg, Result};
use crate::store::Store;
use crate::Reply;

/// No call returns more messages than this.
pub const MAX_PAGE: u32 = 1000;

const SIGNATURE: &str = "1 or 2 arguments (dialog_id [, opts])";
const OPTIONS: &[&str] = &["limit", "after", "before", "reverse"];

/// A validated `get_dialog` call.
#[derive(Debug, PartialEq, Eq)]
pub struct GetDialog {
    pub dialog_id: Uuid,
    pub limit: u32,
    /// Only messages with a greater id.
    pub after: Option<Uuid>,
    /// Only messages with a smaller id.
    pub before: Option<Uuid>,
    /// Newest first.
    pub reverse: bool,
}

impl GetDialog {
    /// Validates the msgpack argument array.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut args = Args::open("get_dialog", buf, 1, 2, SIGNATURE)?;
        let mut req = GetDialog {
            dialog_id: args::uuid(Arg::DialogId, args.read()?)?,
            limit: MAX_PAGE,
            after: None,
            before: None,
            reverse: false,
        };
        if args.count == 2 {
            args::options(&mut args, OPTIONS, |name, value| {
                match name {
                    "limit" => {
                        let n = args::integer(Arg::Limit, value, 1, u64::from(MAX_PAGE))?;
                        req.limit = u32::try_from(n).unwrap_or(MAX_PAGE);
                    }
                    "after" => req.after = Some(args::uuid(Arg::After, value)?),
                    "before" => req.before = Some(args::uuid(Arg::Before, value)?),
                    _ => req.reverse = args::boolean(Arg::Reverse, value)?,
                }
                Ok(())
            })?;
        }
        Ok(req)
    }

    /// Adds the page's messages to `reply`, one return value each.
    pub fn apply(&self, store: &Store, reply: &mut Reply) -> Result<u32> {
        store.page(
            self.dialog_id,
            self.after,
            self.before,
            self.reverse,
            self.limit,
            |tuple| reply.message(tuple),
        )
    }
}

/// The procedure body: parse, apply (the reply is built as the page is read).
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    GetDialog::parse(args)?.apply(&Store::get()?, reply)?;
    Ok(())
}
