//! `dialogs_storage_new(bucket_id, args)`: `new_dialog` on a vshard storage, for
//! the router, with the bucket checked inside the write's own transaction.
//!
//! The write twin of [`crate::storage_read`]: the router (`dialogs/router.lua`)
//! calls this entry directly on the master of the dialog's replica set, instead of
//! going through `vshard.storage.call` (a bucket reference, a `pcall`, a Lua
//! function that decodes the arguments into Lua values and a `box.func` call that
//! encodes them again; docs/sharding.md, "Cost: `make bench`, target `sharded`").
//! `args` is `new_dialog`'s own argument array: it is parsed by the procedure's
//! parser (the same errors). Then the bucket the message's dialog lives in
//! ([`crate::bucket`]) must be `bucket_id`, and vshard's `_bucket` must hold it
//! with a status vshard writes to (`active`, `pinned`); else the call is refused
//! with [`NOT_HERE`](crate::storage_read::NOT_HERE) and writes nothing, and the
//! router takes the ordinary way, which waits for a bucket on the move and finds
//! its new home. The reply is `new_dialog`'s on this server. A `request_id` works
//! as in `new_dialog`: its record is written with the message, in the same bucket
//! and transaction, and the bucket is checked first in every transaction that
//! writes (the rewrite that confirms an earlier try's record too). Not granted to
//! clients; inside a caller's transaction the call is refused (79).
//!
//! The ordinary way runs this entry too (`dialogs/storage.lua`, called through
//! `vshard.storage.call` with the same two arguments), so no path stores a
//! message under a bucket other than its dialog's: a router that names another
//! (one started with another bucket count than the cluster's) gets the refusal
//! from both.
//!
//! # Why no vshard bucket reference (checked against vshard 0.1.42)
//!
//! `vshard.storage.call` takes a write reference (`bucket_refrw`) because the
//! function it calls may yield between vshard's check of the bucket and its
//! writes. A move (`bucket_send`) first turns the bucket `readonly` (which also
//! locks out new references), waits until the write references are gone and the
//! replicas have caught up, turns it `sending`, copies its rows (`index:pairs`
//! over `bucket_id`), turns it `sent`, and garbage collection later deletes them;
//! the receiver keeps it `receiving` until the last rows arrived. Each status
//! change is an autocommit `_bucket` statement, which returns once committed.
//!
//! Here the check and the writes are statements of one transaction with nothing
//! that yields between them: the message id is issued before the transaction
//! begins, `_bucket` is read and the rows inserted through memtx's C API, and
//! the only yield is the commit's WAL write, after the last statement. A status
//! change runs in another fiber of this thread, so it is either
//!
//! - made before the check, which then sees it (memtx without MVCC reads what
//!   is not yet committed, too) and refuses anything but `active` or `pinned`;
//! - or made after the writes: then its WAL write follows ours, and the sender
//!   goes on (to wait for the replicas, to copy) only once it is committed,
//!   which the WAL's order (and the synchronous queue's, where an asynchronous
//!   transaction waits behind an unconfirmed one) says happens after ours is
//!   committed; if ours is rolled back, so is every transaction behind it, the
//!   status change too, and the move fails with the bucket still here. So the
//!   copy sees our rows, in their bucket: they move with it, never lost; and
//!   every later call sees a status other than `active`/`pinned` and writes
//!   nothing here, so no write lands on the old storage after a move.
//!
//! With memtx MVCC the check is the transaction's first statement, a read that
//! sees committed data: a status change that is prepared but not yet committed
//! sends the transaction to a read view, and its first write then fails with a
//! transaction conflict (97): nothing written, and the router takes the
//! ordinary way. (A change prepared after the read cannot come before the
//! writes: nothing yields.)
//!
//! Two things `vshard.storage.call` checks and this entry leaves to the server:
//! whether vshard counts this instance as its replica set's master (here the
//! instance must be writable, else the read-only refusal 1006 and the router's
//! ordinary way; vshard's `read_only` from its configuration, Tarantool 3's
//! configuration and elections keep the two the same: only an instance made
//! writable by hand against the configuration would take a write vshard refuses),
//! and whether vshard's storage is disabled (while it is configured). Neither
//! decides where a bucket's rows are: `_bucket` does.

use crate::error::Result;
use crate::new_dialog::NewDialog;
use crate::storage_read::{check_bucket, check_dialog_bucket, split_args};
use crate::store::Store;
use crate::Reply;

const PROC: &str = "dialogs_storage_new";

/// The bucket statuses vshard writes to (its `bucket_status_is_writable`); a
/// bucket `readonly`, `sending`, `receiving`, `sent` or `garbage` is not one.
pub(crate) const WRITABLE: &[&str] = &["active", "pinned"];

/// The procedure body: read the two arguments, validate `new_dialog`'s, check
/// the dialog's bucket, write with `_bucket` checked inside the transaction,
/// reply with the id.
pub fn call(args: &[u8], reply: &mut Reply) -> Result<()> {
    let (bucket_id, new_dialog_args) = split_args(PROC, "new_dialog", args)?;
    let request = NewDialog::parse(new_dialog_args)?;
    let store = Store::get()?;
    check_dialog_bucket(
        PROC,
        bucket_id,
        request.dialog(),
        store.bucket_count,
        "writable",
    )?;
    let writable = || check_bucket(PROC, bucket_id, WRITABLE, "writable");
    let id = request.apply_guarded(&store, Some(&writable))?;
    reply.mp(&NewDialog::reply(id))
}
