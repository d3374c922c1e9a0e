//! `get_dialog(dialog_id [, opts])`: one page of a dialog's messages.

use std::sync::{Mutex, TryLockError};

use crate::args::{self, Args};
use crate::error::{Arg, Result};
use crate::store::{PageQuery, Store, TupleRef};
use crate::{Reply, Results};

/// No call returns more messages than this.
pub const MAX_PAGE: u32 = 1000;

/// Initial size of a page built as one array: a 20-message dialog of short texts.
const PAGE_BUF_START: usize = 4096;

/// A page buffer that grew beyond this is given back after the call, so one very
/// large page does not keep its memory: [`PAGE_BUF`] holds at most this much
/// between calls.
const PAGE_BUF_KEEP: usize = 256 * 1024;

/// The buffer of the one-value page, kept from call to call: once grown to a page,
/// building the next one allocates nothing. (Allocating and growing a fresh buffer
/// per call was measurable on Tarantool 3: a 50-message page cost 1.14x a raw
/// SELECT's server CPU, 1.02x with the buffer kept; docs/benchmarks.md.)
/// A plain `static`, never dropped: a thread-local with a destructor would register
/// a TLS destructor, which keeps an old build mapped after
/// `box.schema.func.reload`. The price is that a reload leaves the old build's
/// buffer allocated, at most [`PAGE_BUF_KEEP`] bytes per build loaded. Procedures
/// run in the tx thread, one call at a time, and a call does not yield while it
/// builds its reply, so the lock is never contended.
static PAGE_BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());

const SIGNATURE: &str = "1 or 2 arguments (dialog_id [, opts])";
const OPTIONS: &[&str] = &["limit", "after", "before", "reverse"];

/// A validated `get_dialog` call: the page it asks the store for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetDialog {
    pub page: PageQuery,
}

impl GetDialog {
    /// Validates the msgpack argument array.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut args = Args::open("get_dialog", buf, 1, 2, SIGNATURE)?;
        let mut req = PageQuery {
            dialog_id: args::dialog_id(args.read()?)?,
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
        Ok(GetDialog { page: req })
    }

    /// Adds the page to `reply` in the shape that gives a connector the list of
    /// messages as `data[0]` ([`Results`], README "Reply shape"): on a server
    /// that wraps a C function's results in one array, each message is one
    /// return value; on one that sends them one value each, the page is one
    /// return value, an array of the messages. A message is its six fields, as
    /// clients know it (the stored `bucket_id` stays in the store).
    pub fn apply(&self, store: &Store, reply: &mut Reply) -> Result<u32> {
        match Results::of_server() {
            Results::Wrapped => self.walk(store, |tuple| reply.message(tuple)),
            Results::OneEach => self.apply_one_value(store, reply),
        }
    }

    /// Adds the page to `reply` as one return value, an array of the messages,
    /// whatever the server does with a C function's results (3.x's
    /// [`Results::OneEach`] shape of [`GetDialog::apply`], and the storage read
    /// entry's on every server, src/storage_read.rs).
    pub fn apply_one_value(&self, store: &Store, reply: &mut Reply) -> Result<u32> {
        let mut buf = match PAGE_BUF.try_lock() {
            Ok(buf) => buf,
            // A panic while a page was built: the buffer is cleared below.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // In use only by a call this one made (none does today).
            Err(TryLockError::WouldBlock) => return self.one_value(store, reply, &mut Vec::new()),
        };
        let count = self.one_value(store, reply, &mut buf);
        if buf.capacity() > PAGE_BUF_KEEP {
            *buf = Vec::new();
        }
        count
    }

    /// The page as one return value, an array of the messages, built in `out`.
    fn one_value(&self, store: &Store, reply: &mut Reply, out: &mut Vec<u8>) -> Result<u32> {
        // An array32 header whose count is filled in after the walk: a fixed
        // width, so the tuples are copied once, in place.
        out.clear();
        out.reserve(PAGE_BUF_START);
        out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        let count = self.walk(store, |tuple| tuple.append_client_to(out))?;
        if let Some(len) = out.get_mut(1..5) {
            len.copy_from_slice(&count.to_be_bytes());
        }
        reply.mp(out)?;
        Ok(count)
    }

    /// Passes the page's tuples to `emit`, in page order; returns how many.
    fn walk(&self, store: &Store, emit: impl FnMut(&TupleRef<'_>) -> Result<()>) -> Result<u32> {
        store.page(&self.page, emit)
    }
}

/// The procedure body: parse, apply (the reply is built as the page is read).
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    GetDialog::parse(args)?.apply(&Store::get()?, reply)?;
    Ok(())
}
