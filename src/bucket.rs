//! Buckets: the vshard virtual bucket a dialog lives in.
//!
//! `bucket_id = 1 + (w0 ^ w1 ^ w2 ^ w3) mod bucket_count`, where `w0..w3` are the
//! dialog id's 16 bytes read as four big-endian unsigned 32-bit words (docs/sharding.md,
//! "The bucket of a dialog"). Folding all four words keeps buckets even for every kind of
//! dialog id: random (v4) and derived (v5) ids, and time-ordered (v7) ones whose
//! leading bytes are a clock. Routers, storages and clients compute the same
//! number; the vectors in `tests/bucket_vectors.txt` pin it down.

use uuid::Uuid;

/// vshard's bucket space, `{id, status, destination, ...}` with primary key `id`:
/// where it exists, this instance is a vshard storage (the storage entries read a
/// bucket's status there; a new message's inbox upkeep is an outbox row).
pub const BUCKET_SPACE: &str = "_bucket";

/// vshard's own default, and ours: fixed for the life of a cluster.
pub const DEFAULT_BUCKET_COUNT: u32 = 3000;

/// The bucket of `dialog` among `bucket_count` buckets, in `1..=bucket_count`
/// (a count of 0 is taken as 1, so the result is always a valid bucket).
pub fn bucket_id(dialog: Uuid, bucket_count: u32) -> u32 {
    let v = dialog.as_u128();
    // Each shift leaves the wanted word in the low 32 bits; the casts keep
    // exactly those bits.
    let folded = (v >> 96) as u32 ^ (v >> 64) as u32 ^ (v >> 32) as u32 ^ v as u32;
    // folded % count <= count - 1, so adding 1 cannot overflow.
    1 + folded % bucket_count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dialog_id bucket_count bucket_id` lines, shared with the Python and Lua
    /// implementations' test (tests/python/test_bucket.py).
    const VECTORS: &str = include_str!("../tests/bucket_vectors.txt");

    #[test]
    fn matches_the_shared_vectors() {
        let mut checked = 0;
        for line in VECTORS.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, count, want] = parts[..] else {
                panic!("bad vector line {line:?}");
            };
            let id = Uuid::parse_str(id).unwrap();
            let count: u32 = count.parse().unwrap();
            let want: u32 = want.parse().unwrap();
            assert_eq!(bucket_id(id, count), want, "{line}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} vectors");
    }

    #[test]
    fn always_a_valid_bucket() {
        let max = Uuid::from_u128(u128::MAX);
        assert_eq!(bucket_id(max, u32::MAX), 1);
        assert_eq!(bucket_id(max, 0), 1);
        assert_eq!(bucket_id(Uuid::from_u128(7), 1), 1);
        for n in [1u32, 2, 3000, 30_000, u32::MAX] {
            for v in [
                0u128,
                1,
                u128::MAX,
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            ] {
                let b = bucket_id(Uuid::from_u128(v), n);
                assert!((1..=n).contains(&b), "{v:x} {n} -> {b}");
            }
        }
    }

    #[test]
    fn time_ordered_ids_spread_over_buckets() {
        // 3000 v7-like ids one millisecond apart, random tails from a fixed LCG:
        // every bucket of 30 gets some.
        let mut seen = [0u32; 30];
        let mut x: u64 = 1;
        for ms in 0..3000u128 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = ((1_700_000_000_000 + ms) << 80) | (0x7 << 76) | u128::from(x);
            seen[(bucket_id(Uuid::from_u128(id), 30) - 1) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
