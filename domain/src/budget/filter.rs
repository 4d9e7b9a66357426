//! A Bloom filter of settled reservation ids: what a snapshot carries instead of the
//! whole settled list, so that a cold load costs the same in a month's first week as in
//! its last.
//!
//! A month keeps every settled id, because an id may never be reused. The list grows to
//! tens of thousands of ids (17 bytes each); the filter takes about 1.25 bytes per id and
//! answers "certainly not settled" for nearly every new id. Only when it answers "may be
//! settled" (about one id in a hundred that is not, and every id that is) does the
//! command side read the list itself (`Settled::list`). The filter is stored, so its
//! hash is fixed here, in plain arithmetic, and never taken from `std`'s hasher, whose
//! algorithm may change between Rust releases.

use std::fmt;

use crate::ids::ReservationId;

/// Bits per id: with [`HASHES`] probes, about 0.8 % of the ids not in the filter are
/// reported as possibly in it.
pub const BITS_PER_ID: usize = 10;
/// Probes per id.
pub const HASHES: u8 = 7;
/// The smallest filter, so an empty month's filter is still a valid one.
const MIN_BYTES: usize = 8;

/// A Bloom filter over reservation ids, with the number of ids it was built from.
#[derive(Clone, PartialEq, Eq)]
pub struct SettledFilter {
    bits: Box<[u8]>,
    hashes: u8,
    count: u64,
}

/// Why stored filter parts are not a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a settled filter needs at least {MIN_BYTES} bytes, not {0}")]
    TooSmall(usize),
    #[error("a settled filter probes 1 to 32 times per id, not {0}")]
    BadHashes(u8),
}

impl SettledFilter {
    /// A filter of these ids, sized for `count` of them (the ids need not be sorted).
    pub fn build<'a>(count: usize, ids: impl IntoIterator<Item = &'a ReservationId>) -> Self {
        let bytes = count.saturating_mul(BITS_PER_ID).div_ceil(8).max(MIN_BYTES);
        let mut filter = Self {
            bits: vec![0; bytes].into_boxed_slice(),
            hashes: HASHES,
            count: 0,
        };
        for id in ids {
            for bit in filter.probes(id) {
                filter.bits[bit / 8] |= 1 << (bit % 8);
            }
            filter.count += 1;
        }
        filter
    }

    /// A filter from its stored parts, as [`SettledFilter::bits`],
    /// [`SettledFilter::hashes`] and [`SettledFilter::count`] give them.
    pub fn from_parts(bits: Vec<u8>, hashes: u8, count: u64) -> Result<Self, FilterError> {
        if bits.len() < MIN_BYTES {
            return Err(FilterError::TooSmall(bits.len()));
        }
        if !(1..=32).contains(&hashes) {
            return Err(FilterError::BadHashes(hashes));
        }
        Ok(Self {
            bits: bits.into_boxed_slice(),
            hashes,
            count,
        })
    }

    /// False when the id was certainly not among those the filter was built from.
    pub fn may_contain(&self, id: &ReservationId) -> bool {
        self.probes(id)
            .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    pub fn hashes(&self) -> u8 {
        self.hashes
    }

    /// How many ids the filter was built from.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bit positions of one id: double hashing (`h1 + i·h2`) of two 64-bit mixes of
    /// its 16 bytes, so every id costs two mixes whatever the number of probes.
    fn probes(&self, id: &ReservationId) -> impl Iterator<Item = usize> + use<> {
        let bytes = id.as_uuid().as_u128();
        // Truncating casts on purpose: the two halves of the id.
        let (high, low) = ((bytes >> 64) as u64, bytes as u64);
        let h1 = mix(low ^ mix(high ^ 0x9e37_79b9_7f4a_7c15));
        // Odd, so the probes walk the whole table whatever its size's factors.
        let h2 = mix(high ^ mix(low ^ 0xc2b2_ae3d_27d4_eb4f)) | 1;
        let bits = (self.bits.len() * 8) as u64;
        (0..u64::from(self.hashes)).map(move |i| {
            // Below `bits`, which came from a `usize`.
            (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize
        })
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl fmt::Debug for SettledFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettledFilter")
            .field("bytes", &self.bits.len())
            .field("hashes", &self.hashes)
            .field("count", &self.count)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn id(n: u128) -> ReservationId {
        ReservationId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn every_id_a_filter_was_built_from_may_be_in_it() {
        let ids: Vec<_> = (0..5_000u128).map(|n| id(n * 7_919)).collect();
        let filter = SettledFilter::build(ids.len(), &ids);
        assert_eq!(filter.count(), 5_000);
        assert!(ids.iter().all(|id| filter.may_contain(id)));
    }

    #[test]
    fn about_one_id_in_a_hundred_that_is_not_in_the_filter_may_be() {
        let ids: Vec<_> = (0..10_000u128)
            .map(|n| id(Uuid::now_v7().as_u128() ^ n))
            .collect();
        let filter = SettledFilter::build(ids.len(), &ids);
        let others = (0..100_000u128).map(|n| id(u128::MAX - n * 104_729));
        let hits = others.filter(|id| filter.may_contain(id)).count();
        // 0.8 % expected; the bound leaves room for chance.
        assert!(hits < 2_000, "{hits} false positives in 100,000");
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let filter = SettledFilter::build(0, []);
        assert_eq!(filter.bits().len(), MIN_BYTES);
        assert!(!filter.may_contain(&id(1)));
    }

    #[test]
    fn the_probes_of_an_id_never_change() {
        // The filter is stored: a build that hashed differently would read every stored
        // filter wrong. These positions are pinned.
        let filter = SettledFilter::build(100, []);
        let probes: Vec<usize> = filter.probes(&id(0x1234_5678_9abc_def0)).collect();
        assert_eq!(probes, [724, 817, 526, 619, 328, 421, 130]);
    }

    #[test]
    fn stored_parts_that_make_no_filter_are_refused() {
        assert_eq!(
            SettledFilter::from_parts(vec![0; 4], 7, 0),
            Err(FilterError::TooSmall(4))
        );
        assert_eq!(
            SettledFilter::from_parts(vec![0; 8], 0, 0),
            Err(FilterError::BadHashes(0))
        );
    }
}
