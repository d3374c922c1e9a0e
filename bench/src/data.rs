//! The data every target serves: users, the dialogs the read workloads ask for,
//! and the requests each workload makes.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use crate::model::Workload;

/// Users among whom `write` picks random pairs.
pub const USERS: usize = 10_000;
/// Messages in each dialog that `read` returns whole.
pub const READ_DIALOG_LEN: usize = 20;
/// Messages `page` asks for: the newest end of the long dialog.
pub const PAGE_LEN: usize = 50;
/// Characters in every message text (ASCII, so also bytes).
pub const TEXT_CHARS: usize = 100;
/// The `read` workload's limit: the product's maximum page, so a whole
/// 20-message dialog comes back in one call.
pub const READ_LIMIT: i64 = 1000;
/// Entries `list` asks for: list_dialogs' default page, the size the inbox's
/// cost is stated at (against `read`, a 20-message get_dialog).
pub const LIST_LEN: usize = 20;
/// Dialogs with a message each of every user `list` asks for: more than a page,
/// so every call returns a full one (and a cursor to the next).
pub const LIST_DIALOGS_PER_USER: usize = 25;
const _: () = assert!(LIST_DIALOGS_PER_USER > LIST_LEN);
/// Share of writes in `mixed`, percent.
pub const MIXED_WRITE_PERCENT: u32 = 10;

/// The namespace of derived dialog ids (README, "Derived dialog ids").
pub const DIALOG_NAMESPACE: Uuid = Uuid::from_u128(0x891430a2_525c_5f8d_a17c_599239615dc5);

/// The dialog of two users, as the product derives it for `dialog_id = nil`:
/// UUIDv5 over the two ids' bytes, smaller first. The load generator passes it
/// explicitly, so that every target does the same work.
pub fn pair_dialog(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lo.as_bytes());
    name[16..].copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&DIALOG_NAMESPACE, &name)
}

/// One message to store: its dialog and its two users.
#[derive(Clone, Copy, Debug)]
pub struct Msg {
    pub dialog: Uuid,
    pub from: Uuid,
    pub to: Uuid,
}

/// One `mark` request: `user` reads `dialog` up to its message `up_to`.
#[derive(Clone, Copy, Debug)]
pub struct MarkOp {
    pub user: Uuid,
    pub dialog: Uuid,
    pub up_to: Uuid,
}

/// The `mark` requests of the cell about to run: each is used once (a second
/// mark_read up to the same message changes nothing and costs less), so a seeding
/// step refills the queue before every `mark` cell.
#[derive(Default)]
pub struct MarkQueue {
    ops: Mutex<Arc<Vec<MarkOp>>>,
    next: AtomicUsize,
}

impl MarkQueue {
    /// Replaces the queue with `ops`, taken from the first.
    pub fn set(&self, ops: Vec<MarkOp>) {
        if let Ok(mut q) = self.ops.lock() {
            *q = Arc::new(ops);
        }
        self.next.store(0, Ordering::SeqCst);
    }

    /// The next unused request, or None when the seeded ones are used up.
    pub fn take(&self) -> Option<MarkOp> {
        let ops = self.ops.lock().ok()?.clone();
        ops.get(self.next.fetch_add(1, Ordering::Relaxed)).copied()
    }

    /// Requests taken so far (may exceed the queue's length once it ran out).
    pub fn taken(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

/// The same data for every store, from a fixed seed.
pub struct Dataset {
    pub users: Vec<Uuid>,
    /// Dialogs of READ_DIALOG_LEN messages each.
    pub read_dialogs: Vec<Uuid>,
    pub read_dialog_strs: Vec<String>,
    /// The long dialog `page` reads.
    pub page_dialog: Uuid,
    pub page_dialog_len: usize,
    /// Sender and recipient of the preloaded messages.
    pub fill_from: Uuid,
    pub fill_to: Uuid,
    pub text: String,
    /// The users `list` asks for, each in LIST_DIALOGS_PER_USER dialogs.
    pub list_users: Vec<Uuid>,
    pub list_user_strs: Vec<String>,
    /// The messages that give them those dialogs: one per dialog, with a peer of
    /// its own, sent by the user and to the user in turn.
    pub list_fill: Vec<Msg>,
    /// Dialogs `mark` makes unread and reads, round-robin: a new sender each, to
    /// the `users` in turn (so each of them has several).
    pub mark_pool: Vec<Msg>,
    /// The `mark` requests of the current cell.
    pub marks: MarkQueue,
}

impl Dataset {
    pub fn new(
        read_dialogs: usize,
        page_dialog_len: usize,
        list_users: usize,
        mark_dialogs: usize,
    ) -> Dataset {
        let mut rng = SmallRng::seed_from_u64(0x6469616c6f6773);
        let mut uuid = || uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
        let users: Vec<Uuid> = (0..USERS).map(|_| uuid()).collect();
        let read_dialogs: Vec<Uuid> = (0..read_dialogs).map(|_| uuid()).collect();
        let page_dialog = uuid();
        let fill_from = uuid();
        let fill_to = uuid();
        let text: String = "The quick brown fox jumps over the lazy dog; "
            .chars()
            .cycle()
            .take(TEXT_CHARS)
            .collect();
        let list_users: Vec<Uuid> = (0..list_users).map(|_| uuid()).collect();
        let mut list_fill = Vec::with_capacity(list_users.len() * LIST_DIALOGS_PER_USER);
        for &user in &list_users {
            for k in 0..LIST_DIALOGS_PER_USER {
                let peer = uuid();
                let (from, to) = if k % 2 == 0 {
                    (user, peer)
                } else {
                    (peer, user)
                };
                list_fill.push(Msg {
                    dialog: pair_dialog(user, peer),
                    from,
                    to,
                });
            }
        }
        let mark_pool = (0..mark_dialogs)
            .map(|i| {
                let (from, to) = (uuid(), users[i % users.len()]);
                Msg {
                    dialog: pair_dialog(from, to),
                    from,
                    to,
                }
            })
            .collect();
        Dataset {
            list_user_strs: list_users.iter().map(|u| u.to_string()).collect(),
            list_users,
            list_fill,
            mark_pool,
            marks: MarkQueue::default(),
            read_dialog_strs: read_dialogs.iter().map(|d| d.to_string()).collect(),
            users,
            read_dialogs,
            page_dialog,
            page_dialog_len,
            fill_from,
            fill_to,
            text,
        }
    }

    /// The next request of `workload`.
    pub fn next_op(&self, workload: Workload, rng: &mut SmallRng) -> Op {
        match workload {
            Workload::Write => self.write_op(rng),
            Workload::Read => Op::Read(rng.gen_range(0..self.read_dialogs.len())),
            Workload::Page => Op::Page,
            Workload::List => Op::List(rng.gen_range(0..self.list_users.len())),
            Workload::Mark => Op::Mark(self.marks.take()),
            Workload::Mixed => {
                if rng.gen_range(0..100) < MIXED_WRITE_PERCENT {
                    self.write_op(rng)
                } else {
                    Op::Read(rng.gen_range(0..self.read_dialogs.len()))
                }
            }
        }
    }

    fn write_op(&self, rng: &mut SmallRng) -> Op {
        let a = rng.gen_range(0..USERS);
        let mut b = rng.gen_range(0..USERS - 1);
        if b >= a {
            b += 1;
        }
        let (from, to) = (self.users[a], self.users[b]);
        Op::Write {
            dialog: pair_dialog(from, to),
            from,
            to,
        }
    }
}

/// One request, independent of the target that serves it.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Store one message.
    Write { dialog: Uuid, from: Uuid, to: Uuid },
    /// Read read_dialogs[i] whole.
    Read(usize),
    /// Read the newest PAGE_LEN messages of the long dialog.
    Page,
    /// The newest LIST_LEN inbox entries of list_users[i].
    List(usize),
    /// Mark a dialog read (None: the seeded requests ran out, an error).
    Mark(Option<MarkOp>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_dialog_is_symmetric_and_v5() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(pair_dialog(a, b), pair_dialog(b, a));
        assert_eq!(pair_dialog(a, b).get_version_num(), 5);
        assert_ne!(pair_dialog(a, b), pair_dialog(a, a));
    }

    #[test]
    fn mixed_is_mostly_reads() {
        let ds = Dataset::new(10, 100, 2, 10);
        let mut rng = SmallRng::seed_from_u64(1);
        let writes = (0..10_000)
            .filter(|_| matches!(ds.next_op(Workload::Mixed, &mut rng), Op::Write { .. }))
            .count();
        assert!((800..1200).contains(&writes), "{writes}");
    }

    #[test]
    fn list_users_have_more_than_a_page_of_dialogs() {
        let ds = Dataset::new(1, 10, 3, 5);
        for u in &ds.list_users {
            let dialogs: std::collections::HashSet<Uuid> = ds
                .list_fill
                .iter()
                .filter(|m| m.from == *u || m.to == *u)
                .map(|m| m.dialog)
                .collect();
            assert_eq!(dialogs.len(), LIST_DIALOGS_PER_USER);
        }
    }

    #[test]
    fn mark_queue_hands_each_request_once() {
        let q = MarkQueue::default();
        let op = |n| MarkOp {
            user: Uuid::from_u128(n),
            dialog: Uuid::from_u128(n),
            up_to: Uuid::from_u128(n),
        };
        q.set(vec![op(1), op(2)]);
        assert_eq!(q.take().map(|o| o.up_to), Some(Uuid::from_u128(1)));
        assert_eq!(q.take().map(|o| o.up_to), Some(Uuid::from_u128(2)));
        assert!(q.take().is_none());
        q.set(vec![op(3)]);
        assert_eq!(q.take().map(|o| o.up_to), Some(Uuid::from_u128(3)));
    }
}
