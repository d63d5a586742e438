//! The user → partition hash. It is part of the stored layout: checkpoints are kept per
//! partition, so changing it (or P) moves users between partitions and needs a fresh start.
//! It must therefore never change, and is written down here and in docs/design.md §7:
//!
//! `partition = splitmix64(user_id as u64) mod P`, where `splitmix64` is the finalizer of
//! Steele, Lea and Flood's SplitMix64 generator:
//! `z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
//! z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31` (wrapping arithmetic).
//!
//! Why not `user_id mod P`: ids are often sequential or share factors with P (even ids, ids in
//! blocks per shop); the mixer spreads any id pattern evenly. Why not a std hasher: their output
//! may change between Rust releases.

use firstclick_model::UserId;

/// A partition's number, `0..P`.
pub type Partition = u32;

/// The SplitMix64 finalizer: a bijection on u64 that mixes every input bit into every output
/// bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The partition of `user_id` among `partitions` (at least 1; 0 is taken as 1).
pub fn partition_of(user_id: UserId, partitions: u32) -> Partition {
    let p = u64::from(partitions.max(1));
    (splitmix64(user_id as u64) % p) as Partition
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values are part of the stored layout: these must never change.
    #[test]
    fn the_hash_is_stable() {
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let got: Vec<Partition> = (1..=12).map(|u| partition_of(u, 8)).collect();
        assert_eq!(got, PINNED_8);
        assert_eq!(partition_of(42, 1), 0);
        assert_eq!(partition_of(-5, 0), 0);
    }

    /// partition_of(1..=12, 8), pinned when the hash was chosen.
    const PINNED_8: [Partition; 12] = [1, 6, 5, 2, 2, 0, 7, 6, 4, 2, 5, 3];

    #[test]
    fn sequential_ids_spread_evenly() {
        let p = 8;
        let mut counts = [0u32; 8];
        for u in 0..80_000 {
            counts[partition_of(u, p) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }
}
