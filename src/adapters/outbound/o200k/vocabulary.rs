//! The `o200k_base` vocabulary (byte string -> rank) held compactly: every
//! token's bytes in rank order and where each starts, both written by the
//! build script (build.rs) into the binary's read-only data, and an index
//! of 2 MiB built once at run time to find a byte string's rank.
//!
//! `tiktoken-rs` ships the vocabulary; its own encoder keeps each token in a
//! `Vec` in two hash maps and a sorted list beside 128 copies of its pattern
//! (46 MiB resident), and even read out of it at start-up into a hash map of
//! slices it cost ~15 MiB. Here it is 2.2 MB of the binary, paged in as
//! counting touches it, plus the index.

use std::hash::BuildHasher as _;
use std::sync::OnceLock;

use rustc_hash::FxBuildHasher;

/// A token's rank: its id, and its merge priority (lower merges first).
pub type Rank = u32;

/// Every ordinary token's bytes, rank after rank (build.rs).
static BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bytes"));
/// Where each rank's bytes start in [`BYTES`], as little-endian `u32`s, and
/// one more for where the last one ends (build.rs).
static STARTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.starts"));

/// Slots of the index: a power of two well above the 199 998 tokens, so a
/// lookup of bytes that are no token (most of a merge's lookups) ends at an
/// empty slot after one or two probes.
const SLOTS: usize = 1 << 19;
/// An empty slot of the index.
const EMPTY: u32 = u32::MAX;
/// A slot holds a rank in its low bits and, above, bits of the hash of the
/// token's bytes, so most probes are told apart without reading the bytes.
const RANK_BITS: u32 = 18;
const RANK_MASK: u32 = (1 << RANK_BITS) - 1;

/// Byte string -> rank of every ordinary token of `o200k_base`.
pub struct Vocabulary {
    /// Open addressing, linear probing: rank and hash tag per slot.
    index: Box<[u32]>,
}

static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();

impl Vocabulary {
    /// The process-wide table, indexed on first use (a few milliseconds).
    pub fn get() -> &'static Self {
        VOCABULARY.get_or_init(Self::build)
    }

    /// The table if it has been indexed already.
    pub fn if_ready() -> Option<&'static Self> {
        VOCABULARY.get()
    }

    /// The rank of a token, or `None` for bytes that are not one.
    #[inline]
    pub fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let hash = FxBuildHasher.hash_one(bytes);
        let tag = tag_of(hash);
        let mut slot = slot_of(hash);
        loop {
            let entry = self.index[slot];
            if entry == EMPTY {
                return None;
            }
            if entry & !RANK_MASK == tag && token(entry & RANK_MASK) == bytes {
                return Some(entry & RANK_MASK);
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }

    /// How many ordinary tokens the vocabulary has (the tests check it).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        STARTS.len() / 4 - 1
    }

    fn build() -> Self {
        let tokens = u32::try_from(STARTS.len() / 4 - 1).expect("fewer than 2^18 tokens");
        debug_assert!(tokens <= RANK_MASK);
        let mut index = vec![EMPTY; SLOTS].into_boxed_slice();
        for rank in 0..tokens {
            let hash = FxBuildHasher.hash_one(token(rank));
            let mut slot = slot_of(hash);
            while index[slot] != EMPTY {
                slot = (slot + 1) & (SLOTS - 1);
            }
            index[slot] = tag_of(hash) | rank;
        }
        Self { index }
    }
}

/// The bytes of the token of `rank`.
#[inline]
fn token(rank: Rank) -> &'static [u8] {
    let at = rank as usize * 4;
    let start = u32::from_le_bytes([STARTS[at], STARTS[at + 1], STARTS[at + 2], STARTS[at + 3]]);
    let end = u32::from_le_bytes([
        STARTS[at + 4],
        STARTS[at + 5],
        STARTS[at + 6],
        STARTS[at + 7],
    ]);
    &BYTES[start as usize..end as usize]
}

/// The first slot to probe for a hash: its low bits.
#[inline]
fn slot_of(hash: u64) -> usize {
    (hash as usize) & (SLOTS - 1)
}

/// The bits of a hash kept beside a rank: its top ones (the slot came from
/// the low ones).
#[inline]
fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32) & !RANK_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ordinary_token_is_read_and_no_special_one() {
        let v = Vocabulary::get();
        assert_eq!(v.len(), 199_998, "o200k_base's ordinary tokens");
        assert_eq!(v.rank(b"<|endoftext|>"), None);
        assert_eq!(v.rank(b"!"), Some(0), "the first byte token");
        for byte in 0..=u8::MAX {
            assert!(v.rank(&[byte]).is_some(), "every single byte is a token");
        }
        assert!(v.rank(b" hello").is_some());
        assert_eq!(v.rank(b""), None);
    }

    /// The table gives back every token's own rank, as tiktoken-rs has it.
    #[test]
    fn every_rank_is_found_from_its_bytes_as_tiktoken_has_it() {
        let v = Vocabulary::get();
        let encoder = tiktoken_rs::o200k_base().unwrap();
        for rank in 0..199_998u32 {
            let bytes = encoder.decode_bytes(&[rank]).unwrap();
            assert_eq!(token(rank), bytes.as_slice(), "rank {rank}");
            assert_eq!(v.rank(&bytes), Some(rank), "rank {rank}");
        }
    }
}
