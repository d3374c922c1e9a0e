//! Message ids and derived dialog ids.
//!
//! A message id is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version,
//! 12 bits `rand_a`, the variant, 62 bits `rand_b`. Tarantool orders uuid values
//! as big-endian bytes, so in a TREE index these ids sort by time. To make them
//! strictly increasing, `rand_a ‖ rand_b` is read as one 74-bit counter: a new id
//! takes the clock and fresh random bits, unless that would not be above `floor`
//! (the greatest id issued or stored); then it is `floor` plus one.

use std::cell::Cell;

use uuid::Uuid;

/// Namespace of dialog ids derived from a user pair (README, "Derived dialog ids").
pub const PAIR_NAMESPACE: Uuid = Uuid::from_u128(0x891430a2_525c_5f8d_a17c_599239615dc5);

const COUNTER_BITS: u32 = 74;
const COUNTER_MAX: u128 = (1 << COUNTER_BITS) - 1;
const MILLIS_MAX: u64 = (1 << 48) - 1;
const VERSION_7: u128 = 0x7 << 76;
const VARIANT_RFC: u128 = 0b10 << 62;

/// The 48-bit millisecond timestamp and the 74-bit counter of a v7 id.
fn split(id: Uuid) -> (u64, u128) {
    let v = id.as_u128();
    // Shifting a u128 right by 80 leaves 48 bits: the cast is lossless.
    let millis = (v >> 80) as u64;
    let counter = ((v >> 64) & 0xfff) << 62 | (v & ((1 << 62) - 1));
    (millis, counter)
}

fn join(millis: u64, counter: u128) -> Uuid {
    let rand_a = (counter >> 62) & 0xfff;
    let rand_b = counter & ((1 << 62) - 1);
    Uuid::from_u128(
        u128::from(millis & MILLIS_MAX) << 80 | VERSION_7 | rand_a << 64 | VARIANT_RFC | rand_b,
    )
}

/// The smallest v7 id above `floor`: the counter plus one, carrying into the
/// timestamp. `None` only past the year 10889.
fn successor(floor: Uuid) -> Option<Uuid> {
    let (millis, counter) = split(floor);
    if counter < COUNTER_MAX {
        Some(join(millis, counter + 1))
    } else if millis < MILLIS_MAX {
        Some(join(millis + 1, 0))
    } else {
        None
    }
}

/// A fast non-cryptographic generator (wyrand) for the random bits of ids.
pub struct Random {
    state: Cell<u64>,
}

impl Random {
    pub const fn new(seed: u64) -> Self {
        Random {
            state: Cell::new(seed),
        }
    }

    pub fn next_u64(&self) -> u64 {
        let s = self.state.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        // Folding the 128-bit product: both halves are meant to be truncated.
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Seeds from the clock and the address space layout once per process.
    pub fn reseed(&self, extra: u64) {
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        self.state
            .set(self.state.get() ^ extra ^ addr.rotate_left(32));
    }
}

/// Issues strictly increasing v7 ids.
pub struct IdGenerator {
    last: Cell<u128>,
    random: Random,
    seeded: Cell<bool>,
}

impl IdGenerator {
    pub const fn new() -> Self {
        IdGenerator {
            last: Cell::new(0),
            random: Random::new(0x2545_f491_4f6c_dd1d),
            seeded: Cell::new(false),
        }
    }

    /// A new id above every id this generator issued and above `stored_max` (the
    /// greatest id already in the space), stamped with `now_millis` unless that
    /// clock reading is behind them. `None` only when ids are exhausted (year 10889).
    pub fn issue(&self, now_millis: u64, stored_max: Option<Uuid>) -> Option<Uuid> {
        if !self.seeded.get() {
            self.random.reseed(now_millis);
            self.seeded.set(true);
        }
        let last = Uuid::from_u128(self.last.get());
        let floor = match stored_max {
            Some(m) if m > last => m,
            _ => last,
        };
        let fresh = u128::from(self.random.next_u64()) << 64 | u128::from(self.random.next_u64());
        let candidate = join(now_millis.min(MILLIS_MAX), fresh & COUNTER_MAX);
        let id = if candidate > floor {
            candidate
        } else {
            successor(floor)?
        };
        self.last.set(id.as_u128());
        Some(id)
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// The dialog of a user pair, the same whichever of them sends:
/// `UUIDv5(PAIR_NAMESPACE, lo ‖ hi)` over the raw bytes, smaller id first.
pub fn pair_dialog(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    for (dst, src) in name
        .iter_mut()
        .zip(lo.as_bytes().iter().chain(hi.as_bytes()))
    {
        *dst = *src;
    }
    Uuid::new_v5(&PAIR_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_increase_under_a_stuck_clock() {
        let g = IdGenerator::new();
        let mut prev = g.issue(1_700_000_000_000, None).unwrap();
        for _ in 0..10_000 {
            let id = g.issue(1_700_000_000_000, None).unwrap();
            assert!(id > prev);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            prev = id;
        }
    }

    #[test]
    fn ids_stay_above_a_future_stored_id() {
        let g = IdGenerator::new();
        let future = join(1_700_000_000_000 + 3_600_000, 5);
        let id = g.issue(1_700_000_000_000, Some(future)).unwrap();
        assert_eq!(id, join(1_700_000_000_000 + 3_600_000, 6));
        let next = g.issue(1_700_000_000_000, None).unwrap();
        assert!(next > id);
    }

    #[test]
    fn counter_overflow_carries_into_the_clock() {
        let floor = join(42, COUNTER_MAX);
        assert_eq!(successor(floor), Some(join(43, 0)));
        assert_eq!(successor(join(MILLIS_MAX, COUNTER_MAX)), None);
    }

    #[test]
    fn pair_dialog_is_symmetric() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(pair_dialog(a, b), pair_dialog(b, a));
        assert_ne!(pair_dialog(a, b), pair_dialog(a, a));
        assert_eq!(pair_dialog(a, b).get_version_num(), 5);
    }
}
