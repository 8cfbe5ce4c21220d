//! The first step of `o200k_base`: cutting a text into the pieces BPE then
//! works on (words with their leading space, runs of up to three digits,
//! punctuation, line breaks, spaces).
//!
//! OpenAI's pattern ends with `\s+(?!\S)|\s+`: a run of spaces gives its last
//! space to the word after it. The lookahead needs a backtracking engine
//! (`fancy-regex`, which `tiktoken-rs` uses, is most of its cost); here the
//! pattern keeps only `\s+`, which `regex-automata` matches with a lazy DFA,
//! and [`Pieces`] gives the last space back by hand. The tests hold the
//! pieces' token counts equal to `tiktoken-rs`'s on texts built to hit every
//! branch.
//!
//! Every character starts some alternative (letters and marks the first two,
//! numbers the third, other symbols the fourth, spaces the last ones), so a
//! piece always begins where the previous one ended: the search is anchored
//! there, which spares the engine the backward scan an unanchored search
//! needs to find where a match starts.

use std::sync::LazyLock;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// OpenAI's `o200k_base` pattern without its `\s+(?!\S)` alternative.
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+",
);

static REGEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(PATTERN).expect("a constant pattern; the tests compile it"));

/// Compiles the pattern now rather than on the first text.
pub fn warm() {
    LazyLock::force(&REGEX);
}

/// The pieces of `text`, in order; together they are the whole text.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces {
        regex: &REGEX,
        text,
        at: 0,
    }
}

/// Iterator returned by [`pieces`].
pub struct Pieces<'t> {
    regex: &'static Regex,
    text: &'t str,
    at: usize,
}

impl<'t> Iterator for Pieces<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.at >= self.text.len() {
            return None;
        }
        if let Some(end) = super::ascii::piece_end(self.text.as_bytes(), self.at) {
            let start = std::mem::replace(&mut self.at, end);
            return Some(&self.text[start..end]);
        }
        let rest = Input::new(self.text).range(self.at..);
        let found = match self.regex.search(&rest.clone().anchored(Anchored::Yes)) {
            Some(found) => found,
            // Unreachable by the argument above; were it not, skip ahead as
            // an unanchored search (and tiktoken) would.
            None => self.regex.search(&rest)?,
        };
        let (start, mut end) = (found.start(), found.end());
        if end < self.text.len() {
            end = start + keep_of_space_run(&self.text[start..end]);
        }
        self.at = end;
        Some(&self.text[start..end])
    }
}

/// How much of a match followed by more text the original pattern keeps.
///
/// Only the last alternative, `\s+`, can end in a space that is not a line
/// break (the others end in a letter, digit, symbol or line break); there
/// the original's `\s+(?!\S)` matches first and leaves the last space to the
/// word that follows, unless that space is the whole run.
fn keep_of_space_run(matched: &str) -> usize {
    let mut chars = matched.char_indices().rev();
    match chars.next() {
        Some((last, c)) if c.is_whitespace() && c != '\r' && c != '\n' && last > 0 => last,
        _ => matched.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str) -> Vec<&str> {
        pieces(text).collect()
    }

    #[test]
    fn a_run_of_spaces_gives_its_last_space_to_the_next_word() {
        assert_eq!(cut("a   b"), ["a", "  ", " b"]);
        assert_eq!(cut("a b"), ["a", " b"]);
        assert_eq!(cut("a   "), ["a", "   "], "at the end the run stays whole");
        assert_eq!(cut("a \u{3000}b"), ["a", " ", "\u{3000}b"]);
    }

    #[test]
    fn line_breaks_digits_and_contractions_are_cut_like_openai() {
        assert_eq!(cut("x \n\n y"), ["x", " \n\n", " y"]);
        assert_eq!(cut("1234567"), ["123", "456", "7"]);
        assert_eq!(cut("They'RE here"), ["They'RE", " here"]);
        assert_eq!(cut("path/to\n"), ["path", "/to", "\n"]);
    }

    #[test]
    fn the_pieces_are_the_whole_text() {
        let text = "Héllo,  wörld!\r\n\t 42 ½ 中文 ✓✓ e\u{301}  ";
        assert_eq!(cut(text).concat(), text);
    }
}
