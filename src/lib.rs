//! dialogs: direct-message storage inside Tarantool.
//!
//! This library is loaded by Tarantool as the C functions `new_dialog`,
//! `get_dialog`, and the inbox's `list_dialogs` and `mark_read` ([`inbox`],
//! docs/inbox.md; `box.schema.func.create(name, {language = 'C'})`), with the
//! inbox's internal entries (`dialogs_inbox_build` and the `dialogs_storage_*`
//! entries of [`inbox::storage`], granted to no client), and on a
//! vshard router as `dialogs_route`, the check of a call before it is routed
//! ([`route`]), and on a vshard storage as `dialogs_storage_get`, `get_dialog`
//! with its bucket checked, which routers call for reads ([`storage_read`]), and
//! `dialogs_storage_new`, `new_dialog` likewise, for writes ([`storage_write`]). A call
//! enters at the `extern "C"` functions below, is parsed and validated into a
//! typed request ([`new_dialog::NewDialog`], [`get_dialog::GetDialog`]), applied
//! to the [`store::Store`] (the only code that touches spaces), and the reply is
//! encoded as msgpack. A panic anywhere in that path is caught here and becomes
//! an error reply: a procedure never takes the server down.

use std::ffi::{c_char, c_int};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use tarantool::ffi::tarantool::{box_return_mp, box_return_tuple, BoxFunctionCtx};

pub mod args;
pub mod bucket;
pub mod error;
pub mod get_dialog;
pub mod ids;
pub mod inbox;
pub mod msgpack;
pub mod new_dialog;
pub mod route;
pub mod stats;
pub mod storage_read;
pub mod storage_write;
pub mod store;

#[cfg(feature = "test")]
mod tests;

use error::{Error, Result};

/// The longest message text, in characters (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 4096;

/// How the server sends a C function's results to a caller over IPROTO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Results {
    /// All wrapped in one array: Tarantool 2.x, and 3.x with the compat option
    /// `c_func_iproto_multireturn` set to `'old'`.
    Wrapped,
    /// One value each: 3.x's default (`c_func_iproto_multireturn = 'new'`).
    OneEach,
}

/// The server's [`Results`], probed once per loaded module: 0 not yet, 1
/// [`Results::Wrapped`], 2 [`Results::OneEach`]. An atomic, not a value with a
/// destructor, so that the module stays unloadable on reload.
static RESULTS: AtomicU8 = AtomicU8::new(0);

/// True where the compat option exists and is `'new'`. The option's accessor
/// raises for an option the server does not know (2.11), and the module does not
/// exist before 2.11: both mean wrapped results.
const RESULTS_PROBE: &str = "
    local ok, compat = pcall(require, 'compat')
    if not ok then return false end
    local known, option = pcall(function() return compat.c_func_iproto_multireturn end)
    return known and option ~= nil and option:is_new() or false
";

impl Results {
    /// This server's behaviour: asked of the server (its `compat` module) at the
    /// first call, never inferred from a version string. A later change of the
    /// option by an operator takes effect with the next start of the process (or a
    /// `box.schema.func.reload` of the procedure).
    pub fn of_server() -> Results {
        match RESULTS.load(Ordering::Relaxed) {
            1 => Results::Wrapped,
            2 => Results::OneEach,
            _ => {
                let one_each = tarantool::lua_state()
                    .eval::<bool>(RESULTS_PROBE)
                    .unwrap_or(false);
                RESULTS.store(if one_each { 2 } else { 1 }, Ordering::Relaxed);
                if one_each {
                    Results::OneEach
                } else {
                    Results::Wrapped
                }
            }
        }
    }
}

/// Where a procedure puts its results: each call adds one return value.
pub struct Reply {
    ctx: *mut BoxFunctionCtx,
    /// Reused for each message of a page (no allocation per message).
    scratch: Vec<u8>,
}

impl Reply {
    /// Returns one msgpack value (copied).
    pub fn mp(&mut self, value: &[u8]) -> Result<()> {
        let range = value.as_ptr_range();
        // SAFETY: `ctx` is the live call context; `value` is one msgpack value.
        if unsafe { box_return_mp(self.ctx, range.start.cast(), range.end.cast()) } < 0 {
            return Err(Error::last_box_error());
        }
        Ok(())
    }

    /// Returns one stored message as clients see it: its six fields, without
    /// the store's `bucket_id` (the stored tuple itself, or a new one built in
    /// the scratch buffer; referenced, not copied).
    pub fn message(&mut self, tuple: &store::TupleRef<'_>) -> Result<()> {
        let client = tuple.client_form(&mut self.scratch)?;
        // SAFETY: `ctx` is the live call context; `client` is live (the scratch
        // buffer is not touched meanwhile) and Tarantool takes its own reference.
        if unsafe { box_return_tuple(self.ctx, client.as_ptr()) } < 0 {
            return Err(Error::last_box_error());
        }
        Ok(())
    }
}

/// Runs one procedure call: `body` reads the msgpack arguments and adds the
/// results to the [`Reply`]. Errors and panics become the fiber's last error
/// (after a panic, what the call wrote is undone: its own transaction, or its
/// part of a caller's, see [`store::TxnMark`]); the return value is
/// what Tarantool expects of a C function: 0, or -1 with the error set. Every
/// call is counted, and logged if slow ([`stats`]).
///
/// # Safety
/// `ctx` and `args..args_end` must be what Tarantool passed to the C function.
unsafe fn serve(
    proc: &'static str,
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
    body: fn(&[u8], &mut Reply) -> Result<()>,
) -> c_int {
    let call = stats::Call::start(proc);
    let len = usize::try_from(args_end.offset_from(args)).unwrap_or(0);
    let args = std::slice::from_raw_parts(args.cast::<u8>(), len);
    let mut reply = Reply {
        ctx,
        scratch: Vec::new(),
    };
    let result = store::TxnMark::take().and_then(|mark| {
        // Our own boundary: #[tarantool::proc] has none, and a panic that
        // unwinds into Tarantool's C frames aborts the whole server.
        match panic::catch_unwind(AssertUnwindSafe(|| body(args, &mut reply))) {
            Ok(result) => result,
            Err(payload) => {
                // A panic may have left the procedure's writes in place: undo
                // them, and only them. (An error has not: store::atomically rolls
                // back on every error, and a caller's transaction is the
                // caller's to end.)
                mark.undo();
                let what = panic_message(payload.as_ref());
                // Once per panic, in Tarantool's log (the client gets 1008).
                tarantool::say_error!(
                    "dialogs: {proc} panicked: {what}; its writes were undone, the call \
                     was refused with error 1008, and the server goes on"
                );
                Err(Error::Internal { proc, what })
            }
        }
    });
    call.end(args, result.as_ref().err().map(Error::code));
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.set_last();
            -1
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// `new_dialog(dialog_id, user_from, user_to, text [, opts])` → the new
/// message's id as a string. See README.md for the contract and its errors.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn new_dialog(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("new_dialog", ctx, args, args_end, new_dialog::call)
}

/// `get_dialog(dialog_id [, opts])` → the page's message tuples: one return value
/// (an array of them) where the server sends results one value each, else one
/// return value per tuple (which the server wraps in one array). Either way a
/// connector's `data[0]` is the list of messages.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn get_dialog(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("get_dialog", ctx, args, args_end, get_dialog::call)
}

/// `dialogs_route(bucket_count, proc, args)` → the bucket of a valid call of
/// `proc` with `args`; a bad call gets the procedure's own error. Used by the
/// vshard router (docs/sharding.md, "How a call travels"); not for clients.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_route(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("dialogs_route", ctx, args, args_end, route::call)
}

/// `dialogs_storage_get(bucket_id, args)` → `get_dialog(unpack(args))`'s page as
/// one value, if the dialog is in `bucket_id` and this storage may read it now;
/// else error 1012 ([`storage_read::NOT_HERE`]). Called by the vshard router on a
/// storage, directly or through `vshard.storage.call` (docs/sharding.md, "How a
/// call travels"); not for clients.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_get(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_get",
        ctx,
        args,
        args_end,
        storage_read::call,
    )
}

/// `dialogs_storage_new(bucket_id, args)` → `new_dialog(unpack(args))`'s reply, if
/// the dialog is in `bucket_id` and this storage may write it now (checked in the
/// write's own transaction); else error 1012 ([`storage_read::NOT_HERE`]) and
/// nothing written. Called by the vshard router on a storage's master, directly
/// or through `vshard.storage.call` (docs/sharding.md, "How a call travels"); not
/// for clients.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_new(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_new",
        ctx,
        args,
        args_end,
        storage_write::call,
    )
}

/// `list_dialogs(user_id [, opts])` → one map: the user's dialogs, most recent
/// activity first, and the user's totals (docs/inbox.md, "Replies").
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn list_dialogs(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("list_dialogs", ctx, args, args_end, inbox::list::call)
}

/// `mark_read(user_id, dialog_id, up_to_id)` → the dialog's unread count after
/// it, one unsigned (docs/inbox.md, "Rules").
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn mark_read(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("mark_read", ctx, args, args_end, inbox::mark::call)
}

/// `dialogs_inbox_build(after_id | nil, limit)` → the last message id walked,
/// or nil once the walk is complete ([`inbox::build`]). Schema code only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_inbox_build(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_inbox_build",
        ctx,
        args,
        args_end,
        inbox::build::call,
    )
}

/// `dialogs_storage_list(bucket_id, args)` → `list_dialogs(unpack(args))`'s
/// reply in the user's bucket ([`inbox::storage::list`]). Routers only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_list(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_list",
        ctx,
        args,
        args_end,
        inbox::storage::list,
    )
}

/// `dialogs_storage_inbox_apply(bucket_id, events)` → how many events applied
/// ([`inbox::storage::inbox_apply`]). The outbox drainer only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_inbox_apply(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_inbox_apply",
        ctx,
        args,
        args_end,
        inbox::storage::inbox_apply,
    )
}

/// `dialogs_storage_inbox_apply_many(groups)` → `{applied, refused}`: the
/// deliveries to many buckets of this replica set in one transaction, a group
/// whose bucket is not writable here skipped
/// ([`inbox::storage::inbox_apply_many`]). The outbox drainer only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_inbox_apply_many(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_inbox_apply_many",
        ctx,
        args,
        args_end,
        inbox::storage::inbox_apply_many,
    )
}

/// `dialogs_storage_read_count(bucket_id, {user_id, dialog_id, up_to_id, L})` →
/// `{count, H}` ([`inbox::storage::read_count`]). Routers only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_read_count(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_read_count",
        ctx,
        args,
        args_end,
        inbox::storage::read_count,
    )
}

/// `dialogs_storage_mark_read_apply(bucket_id, {user_id, dialog_id, up_to_id,
/// count, H})` → `{unread, nil}` or `{nil, L}`
/// ([`inbox::storage::mark_read_apply`]). Routers only.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_storage_mark_read_apply(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_storage_mark_read_apply",
        ctx,
        args,
        args_end,
        inbox::storage::mark_read_apply,
    )
}

/// `dialogs_stats()` → the calls, errors and latencies of every procedure
/// called in this process, and the slow-call threshold, as one map
/// ([`stats::Counters::encode`]). For the store's Lua side (dialogs/metrics.lua);
/// granted to nobody.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_stats(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve("dialogs_stats", ctx, args, args_end, stats::stats_call)
}

/// `dialogs_slow_calls(ms)` → the threshold now set: calls at least `ms`
/// milliseconds long are logged (nil: none are). Set by dialogs/metrics.lua from
/// DIALOGS_SLOW_MS or the role's `slow_ms`; granted to nobody.
///
/// # Safety
/// Called by Tarantool only, with the arguments of a C stored procedure.
#[no_mangle]
pub unsafe extern "C" fn dialogs_slow_calls(
    ctx: *mut BoxFunctionCtx,
    args: *const c_char,
    args_end: *const c_char,
) -> c_int {
    serve(
        "dialogs_slow_calls",
        ctx,
        args,
        args_end,
        stats::slow_calls_call,
    )
}
