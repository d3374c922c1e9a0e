//! Transactions: a write's own (committed on success, rolled back on an error),
//! and the mark a call takes at its start, so that a caught panic undoes what the
//! call wrote and nothing else.

use std::ptr::NonNull;

use tarantool::transaction::{self, TransactionError};

use crate::error::{Error, Result};

/// Runs `f` in a transaction of its own (the crate's), committing on success and
/// rolling back on an error. Inside a caller's transaction nothing runs: the call
/// is refused with Tarantool's own error for it (79, ER_ACTIVE_TRANSACTION).
pub fn atomically<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    transaction::transaction(f).map_err(|e| match e {
        TransactionError::RolledBack(e) => e,
        // Tarantool's error is still the fiber's last one: the box error itself
        // (code and message) is what the caller gets, as it always was.
        TransactionError::AlreadyStarted
        | TransactionError::FailedToCommit(_)
        | TransactionError::FailedToRollback(_) => Error::last_box_error(),
    })
}

/// Runs `f` inside the caller's transaction if one is open (its writes then
/// commit or roll back with the caller's; an error of `f` undoes what `f` wrote,
/// back to a savepoint, and nothing of the caller's), else in a transaction of
/// its own, as [`atomically`]: either way every statement of `f` is in one
/// transaction, and a refused call leaves nothing behind.
pub fn within<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !transaction::is_in_transaction() {
        return atomically(f);
    }
    let mark = TxnMark::take()?;
    let result = f();
    if result.is_err() {
        mark.undo();
    }
    result
}

/// A savepoint inside a transaction (Tarantool's `box_txn_savepoint_t`).
#[repr(C)]
pub struct BoxTxnSavepoint {
    _opaque: [u8; 0],
}

extern "C" {
    // Exported by every Tarantool since 2.0 (box.savepoint is built on them), but
    // not declared in 2.6's module.h nor by the tarantool crate.
    fn box_txn_savepoint() -> *mut BoxTxnSavepoint;
    fn box_txn_rollback_to_savepoint(savepoint: *mut BoxTxnSavepoint) -> i32;
}

/// Where a procedure call began, as far as transactions go: what a caught panic
/// may undo. The procedure's own transaction is rolled back whole; inside a
/// caller's transaction (`box.begin()` in Lua, then a call), only what the
/// procedure wrote after this mark is undone, and the caller's transaction stays
/// open with the caller's own writes.
pub enum TxnMark {
    /// No transaction was active at entry.
    Outside,
    /// The caller's transaction, and a savepoint at the call's start.
    Inside(NonNull<BoxTxnSavepoint>),
}

impl TxnMark {
    /// Notes the transaction state at the start of a call. Inside a caller's
    /// transaction this takes a savepoint; if Tarantool cannot make one, the
    /// call is refused with its error before it writes anything.
    pub fn take() -> Result<TxnMark> {
        // SAFETY: plain C API calls in the tx thread; the savepoint lives on the
        // transaction's memory and is used only while that transaction is open.
        unsafe {
            if !transaction::is_in_transaction() {
                return Ok(TxnMark::Outside);
            }
            match NonNull::new(box_txn_savepoint()) {
                Some(sp) => Ok(TxnMark::Inside(sp)),
                None => Err(Error::last_box_error()),
            }
        }
    }

    /// Undoes what the call wrote (after a panic): rolls back a transaction the
    /// call opened, or returns the caller's transaction to the mark.
    pub fn undo(self) {
        match self {
            TxnMark::Outside => {
                if transaction::is_in_transaction() {
                    // What could fail here has no one to tell: the panic's own
                    // error is the reply.
                    let _ = transaction::rollback();
                }
            }
            // SAFETY: the caller's transaction is still the one the savepoint
            // belongs to: a procedure never commits or ends a transaction it did
            // not open (`atomically` refuses to begin inside one).
            TxnMark::Inside(sp) => unsafe {
                if transaction::is_in_transaction() {
                    box_txn_rollback_to_savepoint(sp.as_ptr());
                }
            },
        }
    }
}
