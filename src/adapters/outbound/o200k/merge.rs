//! Byte-pair merging of one piece that is not itself a token: the count of
//! tokens it becomes. The same merges, in the same order, as OpenAI's
//! `tiktoken` (the lowest-ranked adjacent pair first, the leftmost on a tie),
//! so the same tokens; only their number is kept.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::vocabulary::{Rank, Vocabulary};

/// Below this length the quadratic scan of `tiktoken` is the faster one
/// (a few dozen parts fit in cache); above it, a heap keeps a long piece
/// (a 10 000-letter "word") from costing its length squared.
const SHORT: usize = 100;

/// How many tokens `piece` (at least two bytes) becomes.
pub fn count(vocabulary: &Vocabulary, piece: &[u8]) -> usize {
    if piece.len() < SHORT {
        count_short(vocabulary, piece)
    } else {
        count_long(vocabulary, piece)
    }
}

/// `tiktoken`'s `_byte_pair_merge`: parts as (start, rank of the pair that
/// starts there), on the stack.
fn count_short(vocabulary: &Vocabulary, piece: &[u8]) -> usize {
    let rank_of = |bytes: &[u8]| vocabulary.rank(bytes).unwrap_or(Rank::MAX);
    let mut parts = [(0usize, Rank::MAX); SHORT + 1];
    let mut len = 0;
    for i in 0..piece.len() - 1 {
        parts[len] = (i, rank_of(&piece[i..i + 2]));
        len += 1;
    }
    parts[len] = (piece.len() - 1, Rank::MAX);
    parts[len + 1] = (piece.len(), Rank::MAX);
    len += 2;
    // The rank of the pair starting at part i once part i+1 is merged away.
    let rank_after = |parts: &[(usize, Rank)], len: usize, i: usize| {
        if i + 3 < len {
            rank_of(&piece[parts[i].0..parts[i + 3].0])
        } else {
            Rank::MAX
        }
    };
    while let Some(i) = lowest(&parts[..len - 1]) {
        if i > 0 {
            parts[i - 1].1 = rank_after(&parts, len, i - 1);
        }
        parts[i].1 = rank_after(&parts, len, i);
        parts.copy_within(i + 2..len, i + 1);
        len -= 1;
    }
    len - 1
}

/// Index of the lowest mergeable rank, the leftmost on a tie.
fn lowest(parts: &[(usize, Rank)]) -> Option<usize> {
    let mut best: Option<(Rank, usize)> = None;
    for (i, &(_, rank)) in parts.iter().enumerate() {
        if rank != Rank::MAX && best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, i));
        }
    }
    best.map(|(_, i)| i)
}

/// A token of the piece being merged: where it ends, where the one before
/// it starts, and the rank of merging it with the next (MAX: no merge).
#[derive(Clone, Copy)]
struct Node {
    end: usize,
    prev: usize,
    next_rank: Rank,
}

/// `tiktoken`'s `_byte_pair_merge_large`: a heap of candidate merges, stale
/// ones skipped when popped.
fn count_long(vocabulary: &Vocabulary, piece: &[u8]) -> usize {
    let n = piece.len();
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            end: i + 1,
            prev: i.wrapping_sub(1),
            next_rank: Rank::MAX,
        })
        .collect();
    let mut heap = BinaryHeap::with_capacity(n);
    for i in 0..n - 1 {
        if let Some(rank) = vocabulary.rank(&piece[i..i + 2]) {
            nodes[i].next_rank = rank;
            heap.push(Reverse((rank, i)));
        }
    }
    let mut tokens = n;
    while let Some(Reverse((rank, start))) = heap.pop() {
        if nodes[start].next_rank != rank {
            continue;
        }
        let right = nodes[start].end;
        let right_end = nodes[right].end;
        nodes[start].end = right_end;
        nodes[right].next_rank = Rank::MAX;
        tokens -= 1;
        if right_end < n {
            nodes[right_end].prev = start;
        }
        for left in [start, nodes[start].prev] {
            if left >= n {
                continue;
            }
            let end = nodes[left].end;
            let merged_end = if end < n { nodes[end].end } else { end };
            nodes[left].next_rank = Rank::MAX;
            if end < n {
                if let Some(rank) = vocabulary.rank(&piece[left..merged_end]) {
                    nodes[left].next_rank = rank;
                    heap.push(Reverse((rank, left)));
                }
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_merging_agree() {
        let v = Vocabulary::get();
        let texts: [&[u8]; 5] = [
            b"qzxvkjqwpzzxqqvk",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"antidisestablishmentarianismxyzzy",
            "ünïcödéwörðsßß".as_bytes(),
            b"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80",
        ];
        for text in texts {
            assert_eq!(count_short(v, text), count_long(v, text), "{text:?}");
        }
    }

    #[test]
    fn a_piece_of_unknown_pairs_stays_in_bytes() {
        // Two bytes that never merge: two tokens.
        let v = Vocabulary::get();
        assert_eq!(count(v, b"\xff\xfe"), 2);
    }
}
