//! The `o200k_base` vocabulary (byte string -> rank) held compactly: every
//! token's bytes in one buffer and one hash map of slices into it.
//!
//! `tiktoken-rs` ships the vocabulary inside the binary, so nothing is
//! downloaded; its own encoder keeps each token in a `Vec` in two hash maps
//! and a sorted list, beside 128 copies of its pattern (46 MiB resident).
//! This table is read out of a temporary encoder once and holds about 8 MiB.

use std::collections::HashMap;
use std::sync::OnceLock;

use rustc_hash::FxBuildHasher;

/// A token's rank: its id, and its merge priority (lower merges first).
pub type Rank = u32;

/// Ranks below this are read from the encoder; `o200k_base`'s ordinary
/// tokens are 0..199 997, its special ones 199 999 and 200 018.
const RANKS_TO_READ: Rank = 200_019;

/// Byte string -> rank of every ordinary token of `o200k_base`.
pub struct Vocabulary {
    ranks: HashMap<&'static [u8], Rank, FxBuildHasher>,
}

static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();

impl Vocabulary {
    /// The process-wide table, read on first use (a fraction of a second).
    pub fn get() -> &'static Self {
        VOCABULARY.get_or_init(Self::read)
    }

    /// The table if it has been read already.
    pub fn if_ready() -> Option<&'static Self> {
        VOCABULARY.get()
    }

    /// The rank of a token, or `None` for bytes that are not one.
    #[inline]
    pub fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        self.ranks.get(bytes).copied()
    }

    /// How many ordinary tokens the vocabulary has (the tests check it).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    fn read() -> Self {
        // The vocabulary is compiled into the binary; a unit test reads it,
        // so a binary that passed its tests cannot fail here.
        let encoder = tiktoken_rs::o200k_base().expect("tiktoken-rs's own o200k_base file");
        let special = encoder.special_tokens();
        let mut tokens: Vec<(Rank, Vec<u8>)> = Vec::with_capacity(RANKS_TO_READ as usize);
        for rank in 0..RANKS_TO_READ {
            let Ok(bytes) = encoder.decode_bytes(&[rank]) else {
                continue;
            };
            let is_special = std::str::from_utf8(&bytes).is_ok_and(|s| special.contains(s));
            if !is_special {
                tokens.push((rank, bytes));
            }
        }
        drop(special);
        drop(encoder);
        Self::from_tokens(&tokens)
    }

    /// One buffer for every token's bytes, leaked because the table lives as
    /// long as the process (it is a `static`), and a map of slices into it.
    fn from_tokens(tokens: &[(Rank, Vec<u8>)]) -> Self {
        let mut bytes = Vec::with_capacity(tokens.iter().map(|(_, b)| b.len()).sum());
        for (_, b) in tokens {
            bytes.extend_from_slice(b);
        }
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let mut ranks = HashMap::with_capacity_and_hasher(tokens.len(), FxBuildHasher);
        let mut at = 0;
        for (rank, b) in tokens {
            ranks.insert(&bytes[at..at + b.len()], *rank);
            at += b.len();
        }
        Self { ranks }
    }
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
    }
}
