//! Message ids and derived dialog ids.
//!
//! A message id is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version,
//! 12 bits `rand_a`, the variant, 62 bits `rand_b`. Tarantool orders uuid values
//! as big-endian bytes, so in a TREE index these ids sort by time. To make them
//! strictly increasing, `rand_a ‖ rand_b` is read as one 74-bit counter (RFC 9562,
//! section 6.2, method 2: a monotonic random counter). When the clock is ahead of
//! `floor` (the greatest id issued or stored), a new id takes the clock and a
//! fresh random counter; otherwise it is `floor` plus a random increment. Two
//! instances that hold the same greatest id (two writable masters over the same
//! data) therefore walk apart instead of issuing the same ids.

use std::cell::Cell;

use uuid::{Builder, Uuid};

/// Namespace of dialog ids derived from a user pair (README, "Derived dialog ids").
pub const PAIR_NAMESPACE: Uuid = Uuid::from_u128(0x891430a2_525c_5f8d_a17c_599239615dc5);

/// Namespace of dialog ids named by a string key: `UUIDv5(KEY_NAMESPACE, the
/// key's UTF-8 bytes)` (README, "Dialog keys"; dialogs/ids.lua derives the same).
pub const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x2450fed4_12b1_4494_82cd_87a7412d823d);

/// The longest string key that names a dialog, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// A stored id stamped further than this ahead of the clock is logged as a warning
/// (docs/guarantees.md, "A clock far behind the ids is reported"): every later id carries that time until the clock passes it.
pub const CLOCK_BEHIND_WARNING_MS: u64 = 1000;

const COUNTER_BITS: u32 = 74;
const COUNTER_MAX: u128 = (1 << COUNTER_BITS) - 1;
/// A fresh counter keeps its top bit clear (RFC 9562, 6.2: counter rollover guard),
/// leaving 2^73 of room for the increments within one millisecond.
const FRESH_COUNTER_MASK: u128 = COUNTER_MAX >> 1;
/// Increments are drawn from `1..=2^INCREMENT_BITS`: large enough that two walks
/// from the same floor share an id with probability about 2^-47 per id, small
/// enough that one millisecond holds about 2^26 increments before carrying.
const INCREMENT_BITS: u32 = 48;
const MILLIS_MAX: u64 = (1 << 48) - 1;

/// The 48-bit millisecond timestamp and the 74-bit counter of a v7 id.
fn split(id: Uuid) -> (u64, u128) {
    let v = id.as_u128();
    // Shifting a u128 right by 80 leaves 48 bits: the cast is lossless.
    let millis = (v >> 80) as u64;
    let counter = ((v >> 64) & 0xfff) << 62 | (v & ((1 << 62) - 1));
    (millis, counter)
}

/// The v7 id of `millis` (its low 48 bits) and `counter` (its low 74 bits), built
/// by uuid's own v7 builder, which stamps the time, the version and the variant
/// around the 10 bytes it is given: `rand_a` in the low 12 of their first 16 bits,
/// `rand_b` in the low 62 of the other 64, the bits between left for the builder.
fn join(millis: u64, counter: u128) -> Uuid {
    let rand_a = (counter >> 62) & 0xfff;
    let rand_b = counter & ((1 << 62) - 1);
    let [_, _, _, _, _, _, counter_bytes @ ..] = (rand_a << 64 | rand_b).to_be_bytes();
    Builder::from_unix_timestamp_millis(millis & MILLIS_MAX, &counter_bytes).into_uuid()
}

/// The random bits of ids: `fastrand`'s generator (wyrand, a fast
/// non-cryptographic one), seeded from the operating system's entropy source on
/// first use. It lives in a `Cell`: `Rng` is a plain `u64` with no destructor, so
/// a thread-local that holds it registers none and the module stays unloadable on
/// reload (src/new_dialog.rs, `IDS`).
pub struct Random {
    /// `None` until the first draw seeds it.
    rng: Cell<Option<fastrand::Rng>>,
}

impl Random {
    /// An unseeded generator: it seeds itself on first use.
    pub const fn new() -> Self {
        Random {
            rng: Cell::new(None),
        }
    }

    /// 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut rng = self
            .rng
            .take()
            .unwrap_or_else(|| fastrand::Rng::with_seed(entropy()));
        let v = rng.u64(..);
        self.rng.set(Some(rng));
        v
    }

    fn next_u128(&self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }
}

// The generator is held in a thread-local (src/new_dialog.rs): it must not need
// dropping, or that thread-local would register a destructor.
const _: () = assert!(!std::mem::needs_drop::<IdGenerator>());

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

/// 64 bits from the kernel's entropy source (getrandom(2)). Should it ever fail,
/// the clock and the address space layout still differ between processes.
fn entropy() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        now ^ addr.rotate_left(32) ^ u64::from(std::process::id()).rotate_left(17)
    })
}

/// A new id, and how far ahead of the clock the floor it had to stay above was,
/// when that is worth a warning (see [`IdGenerator::issue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub id: Uuid,
    /// Set once when the floor is first seen more than
    /// [`CLOCK_BEHIND_WARNING_MS`] ahead of the clock: the distance in ms.
    pub floor_ahead_ms: Option<u64>,
}

/// Issues strictly increasing v7 ids.
pub struct IdGenerator {
    last: Cell<u128>,
    random: Random,
    /// A floor far ahead of the clock has been reported and the clock has not
    /// passed it since.
    warned: Cell<bool>,
}

impl IdGenerator {
    pub const fn new() -> Self {
        IdGenerator {
            last: Cell::new(0),
            random: Random::new(),
            warned: Cell::new(false),
        }
    }

    /// A new id above every id this generator issued and above `stored_max` (the
    /// greatest id already in the space), stamped with `now_millis` unless that
    /// clock reading is not ahead of them. `None` only when ids are exhausted
    /// (year 10889).
    ///
    /// The first time the floor is more than [`CLOCK_BEHIND_WARNING_MS`] ahead
    /// of the clock, the result says by how much; not again until the clock has
    /// passed the floor (so one stored id from the future is reported once, and
    /// a later one again).
    pub fn issue(&self, now_millis: u64, stored_max: Option<Uuid>) -> Option<Issued> {
        let now_millis = now_millis.min(MILLIS_MAX);
        let last = Uuid::from_u128(self.last.get());
        let floor = match stored_max {
            Some(m) if m > last => m,
            _ => last,
        };
        let (floor_millis, floor_counter) = split(floor);
        let mut floor_ahead_ms = None;
        if now_millis > floor_millis {
            self.warned.set(false);
        } else if floor_millis - now_millis > CLOCK_BEHIND_WARNING_MS && !self.warned.get() {
            self.warned.set(true);
            floor_ahead_ms = Some(floor_millis - now_millis);
        }
        let fresh = |millis| join(millis, self.random.next_u128() & FRESH_COUNTER_MASK);
        let id = if now_millis > floor_millis {
            fresh(now_millis)
        } else {
            let increment = 1 + (self.random.next_u128() & ((1 << INCREMENT_BITS) - 1));
            match floor_counter.checked_add(increment) {
                Some(counter) if counter <= COUNTER_MAX => join(floor_millis, counter),
                // The millisecond is full: carry into the next one.
                _ if floor_millis < MILLIS_MAX => fresh(floor_millis + 1),
                _ => return None,
            }
        };
        // A floor that is no v7 id (an operator's insert) may have version bits
        // above 7: then the next millisecond is the first v7 id above it.
        let id = if id > floor {
            id
        } else if floor_millis < MILLIS_MAX {
            fresh(floor_millis + 1)
        } else {
            return None;
        };
        self.last.set(id.as_u128());
        Some(Issued { id, floor_ahead_ms })
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
    let (first, second) = name.split_at_mut(16);
    first.copy_from_slice(lo.as_bytes());
    second.copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&PAIR_NAMESPACE, &name)
}

/// The dialog a string key names: `UUIDv5(KEY_NAMESPACE, key)` over its bytes.
/// One key is one dialog on every server, router and storage.
pub fn key_dialog(key: &str) -> Uuid {
    Uuid::new_v5(&KEY_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn id(g: &IdGenerator, now: u64, stored: Option<Uuid>) -> Uuid {
        g.issue(now, stored).unwrap().id
    }

    #[test]
    fn ids_are_v7_and_increase_under_a_stuck_clock() {
        let g = IdGenerator::new();
        let mut prev = id(&g, NOW, None);
        for _ in 0..10_000 {
            let next = id(&g, NOW, None);
            assert!(next > prev);
            assert_eq!(next.get_version_num(), 7);
            assert_eq!(next.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(split(next).0, NOW, "10,000 ids fit in one millisecond");
            prev = next;
        }
    }

    #[test]
    fn ids_take_the_clock_when_it_is_ahead() {
        let g = IdGenerator::new();
        let first = id(&g, NOW, None);
        let second = id(&g, NOW + 5, None);
        assert_eq!(split(first).0, NOW);
        assert_eq!(split(second).0, NOW + 5);
        assert!(split(second).1 <= FRESH_COUNTER_MASK);
    }

    #[test]
    fn ids_stay_above_a_future_stored_id() {
        let g = IdGenerator::new();
        let future = join(NOW + 3_600_000, 5);
        let first = id(&g, NOW, Some(future));
        assert!(first > future);
        assert_eq!(split(first).0, NOW + 3_600_000);
        let next = id(&g, NOW, None);
        assert!(next > first);
    }

    /// Two masters over the same data (a split brain): the same greatest stored
    /// id, a clock that is not ahead of it, 100,000 ids each.
    #[test]
    fn two_generators_from_the_same_floor_share_no_id() {
        let floor = join(NOW + 10_000, 0x1234_5678);
        let (g1, g2) = (IdGenerator::new(), IdGenerator::new());
        let mut seen = HashSet::new();
        for g in [&g1, &g2] {
            let mut prev = floor;
            for i in 0..100_000u64 {
                let next = id(g, NOW + i / 100, Some(floor));
                assert!(next > prev, "not increasing at {i}");
                assert!(seen.insert(next), "id {next} issued twice");
                prev = next;
            }
        }
        assert_eq!(seen.len(), 200_000);
    }

    #[test]
    fn a_full_millisecond_carries_into_the_next() {
        let g = IdGenerator::new();
        let floor = join(42, COUNTER_MAX);
        let next = id(&g, 0, Some(floor));
        assert_eq!(split(next).0, 43);
        assert!(g.issue(0, Some(join(MILLIS_MAX, COUNTER_MAX))).is_none());
    }

    #[test]
    fn a_floor_that_is_no_v7_id_is_still_exceeded() {
        let g = IdGenerator::new();
        let floor = Uuid::from_u128(u128::from(NOW) << 80 | 0xf << 76 | u128::from(u64::MAX));
        let next = id(&g, NOW, Some(floor));
        assert!(next > floor);
        assert_eq!(next.get_version_num(), 7);
    }

    #[test]
    fn a_far_future_floor_is_reported_once_until_the_clock_passes_it() {
        let g = IdGenerator::new();
        let future = join(NOW + 5_000, 0);
        let ahead = |now, stored| g.issue(now, stored).unwrap().floor_ahead_ms;
        assert_eq!(ahead(NOW, None), None);
        assert_eq!(ahead(NOW + 1, Some(future)), Some(4_999));
        assert_eq!(ahead(NOW + 2, Some(future)), None);
        assert_eq!(ahead(NOW + 3, None), None);
        // The clock passes it; a new stored id from the future is reported again.
        assert_eq!(ahead(NOW + 5_001, Some(future)), None);
        assert_eq!(ahead(NOW + 5_002, Some(join(NOW + 9_000, 0))), Some(3_998));
        // Near the clock (a failover to a clock a little behind): no report.
        let g = IdGenerator::new();
        let near = join(NOW + CLOCK_BEHIND_WARNING_MS, 0);
        assert_eq!(g.issue(NOW, Some(near)).unwrap().floor_ahead_ms, None);
    }

    /// The v7 builder puts the 74-bit counter exactly where RFC 9562 puts
    /// rand_a and rand_b, around the version and the variant.
    #[test]
    fn join_lays_out_time_version_counter_variant() {
        for (millis, counter) in [
            (NOW, 0),
            (NOW, COUNTER_MAX),
            (MILLIS_MAX, 0x2a5_5aa5_5aa5_5aa5_5aa5),
            (0, 1 << 73),
            (1, 1 << 62 | 1 << 61),
        ] {
            let id = join(millis, counter);
            let rand_a = (counter >> 62) & 0xfff;
            let rand_b = counter & ((1 << 62) - 1);
            let want = u128::from(millis) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b;
            assert_eq!(id.as_u128(), want, "{millis} {counter:x}");
            assert_eq!(split(id), (millis, counter));
        }
    }

    #[test]
    fn derived_dialogs_match_the_shared_vectors() {
        let vectors = include_str!("../tests/ids_vectors.txt");
        let mut checked = 0;
        for line in vectors.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(want), Some(rest)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("bad vector line {line:?}");
            };
            let want = Uuid::parse_str(want).unwrap();
            let got = match kind {
                "key" => key_dialog(rest),
                "pair" => {
                    let (a, b) = rest.split_once(' ').unwrap();
                    pair_dialog(Uuid::parse_str(a).unwrap(), Uuid::parse_str(b).unwrap())
                }
                _ => panic!("bad vector kind {line:?}"),
            };
            assert_eq!(got, want, "{line}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} vectors");
    }

    /// What issuing an id costs in process (the A/B of the generator's random
    /// source): `cargo test --release -p dialogs --lib ids::tests::issue_cost --
    /// --ignored --nocapture`. Prints ns per id under a stuck clock (the
    /// increment path) and under a moving one (fresh counters): the fastest of
    /// many short batches, which a busy machine's preemptions leave out.
    #[test]
    #[ignore = "a measurement: run it by name"]
    fn issue_cost() {
        const BATCHES: u64 = 200;
        const IDS_PER_BATCH: u64 = 100_000;
        for (what, step) in [("stuck clock", 0), ("moving clock", 1)] {
            let g = IdGenerator::new();
            let mut prev = Uuid::nil();
            let mut best = f64::MAX;
            for batch in 0..BATCHES {
                let started = std::time::Instant::now();
                for i in 0..IDS_PER_BATCH {
                    let next = id(&g, NOW + (batch * IDS_PER_BATCH + i) * step, None);
                    assert!(next > prev);
                    prev = next;
                }
                best = best.min(started.elapsed().as_nanos() as f64 / IDS_PER_BATCH as f64);
            }
            println!("issue_cost {what}: {best:.2} ns per id");
        }
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
