//! The data every target serves: users, the dialogs the read workloads ask for,
//! and the requests each workload makes.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
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
}

impl Dataset {
    pub fn new(read_dialogs: usize, page_dialog_len: usize) -> Dataset {
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
        Dataset {
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
        let ds = Dataset::new(10, 100);
        let mut rng = SmallRng::seed_from_u64(1);
        let writes = (0..10_000)
            .filter(|_| matches!(ds.next_op(Workload::Mixed, &mut rng), Op::Write { .. }))
            .count();
        assert!((800..1200).contains(&writes), "{writes}");
    }
}
