//! dialogs: direct-message storage inside Tarantool.
//!
//! This library is loaded by Tarantool as the C functions `new_dialog` and
//! `get_dialog` (`box.schema.func.create(name, {language = 'C'})`), and on a
//! vshard router as `dialogs_route`, the check of a call before it is routed
//! ([`route`]). A call
//! enters at the `extern "C"` functions below, is parsed and validated into a
//! typed request ([`new_dialog::NewDialog`], [`get_dialog::GetDialog`]), applied
//! to the [`store::Store`] (the only code that touches spaces), and the reply is
//! encoded as msgpack. A panic anywhere in that path is caught here and becomes
//! an error reply: a procedure never takes the server down.

use std::ffi::{c_char, c_int};
use std::panic::{self, AssertUnwindSafe};

use tarantool::ffi::tarantool::{box_return_mp, box_return_tuple, BoxFunctionCtx};

pub mod args;
pub mod bucket;
pub mod error;
pub mod get_dialog;
pub mod ids;
pub mod msgpack;
pub mod new_dialog;
pub mod route;
pub mod store;

#[cfg(feature = "test")]
mod tests;

use error::{Error, Result};

/// The longest message text, in characters (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 4096;

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

    /// Returns one stored tuple (referenced, not copied).
    pub fn tuple(&mut self, tuple: store::TupleRef) -> Result<()> {
        // SAFETY: `ctx` is the live call context; the tuple is live and Tarantool
        // takes its own reference.
        if unsafe { box_return_tuple(self.ctx, tuple.as_ptr()) } < 0 {
            return Err(Error::last_box_error());
        }
        Ok(())
    }

    /// Returns one stored message as clients see it: its six fields, without
    /// the store's `bucket_id`.
    pub fn message(&mut self, tuple: store::TupleRef) -> Result<()> {
        let client = tuple.client_form(&mut self.scratch)?;
        self.tuple(client)
    }
}

/// Runs one procedure call: `body` reads the msgpack arguments and adds the
/// results to the [`Reply`]. Errors and panics become the fiber's last error
/// (after a panic, an open transaction is rolled back); the return value is
/// what Tarantool expects of a C function: 0, or -1 with the error set.
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
    let len = usize::try_from(args_end.offset_from(args)).unwrap_or(0);
    let args = std::slice::from_raw_parts(args.cast::<u8>(), len);
    let mut reply = Reply {
        ctx,
        scratch: Vec::new(),
    };
    let result = match panic::catch_unwind(AssertUnwindSafe(|| body(args, &mut reply))) {
        Ok(result) => result,
        Err(payload) => {
            // A panic may have left the procedure's own transaction open. (An
            // error has not: Transaction::run rolls back on every error, and a
            // caller's transaction is the caller's to end.)
            store::Transaction::rollback();
            Err(Error::Internal {
                proc,
                what: panic_message(payload.as_ref()),
            })
        }
    };
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

/// `get_dialog(dialog_id [, opts])` → the page's message tuples, one return value each.
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
/// vshard router (README, "Sharding by dialog_id with vshard"); not for clients.
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
