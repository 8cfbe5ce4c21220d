//! The pre-split of the sibling `pieces` module for a piece that ASCII
//! alone decides, without the regex: most text a chat streams is ASCII, and
//! a regex search per piece (a few hundred nanoseconds of set-up for a piece of one to
//! three bytes) was most of what counting cost.
//!
//! Each rule below is one alternative of OpenAI's pattern read for ASCII
//! bytes, tried in the pattern's order. Wherever a byte of 0x80 or above
//! could change the answer (a letter, digit, mark or space outside ASCII
//! continuing a run, or `ſ` after an apostrophe, which folds to `s`), the
//! function returns `None` and the regex decides. The tests hold both ways
//! equal on texts mixing the two.

fn is_upper(b: u8) -> bool {
    b.is_ascii_uppercase()
}

fn is_lower(b: u8) -> bool {
    b.is_ascii_lowercase()
}

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

/// Unicode `White_Space` within ASCII (what `\s` means).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_line_break(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// `[^\s\p{L}\p{N}]` within ASCII: punctuation, symbols, control bytes.
fn is_other(b: u8) -> bool {
    b.is_ascii() && !is_space(b) && !is_letter(b) && !b.is_ascii_digit()
}

/// Where the piece starting at `at` ends, or `None` when a byte outside
/// ASCII could change it. `at` is inside `text`.
pub fn piece_end(text: &[u8], at: usize) -> Option<usize> {
    let c = text[at];
    let next = text.get(at + 1).copied();
    if !c.is_ascii() {
        return None;
    }
    if is_letter(c) {
        return word_end(text, at);
    }
    if c.is_ascii_digit() {
        return digits_end(text, at);
    }
    // `[^\r\n\p{L}\p{N}]?` before a word: any other byte but a line break.
    if !is_line_break(c) {
        match next {
            Some(n) if !n.is_ascii() => return None,
            Some(n) if is_letter(n) => return word_end(text, at + 1),
            _ => {}
        }
    }
    if c == b' ' && next.is_some_and(is_other) {
        return symbols_end(text, at + 1);
    }
    if is_space(c) {
        return spaces_end(text, at);
    }
    symbols_end(text, at)
}

/// `[\p{Lu}…]*[\p{Ll}…]+` or `[\p{Lu}…]+[\p{Ll}…]*` (both take the capitals
/// then the small letters), then a contraction.
fn word_end(text: &[u8], from: usize) -> Option<usize> {
    let mut end = from;
    while end < text.len() && is_upper(text[end]) {
        end += 1;
    }
    while end < text.len() && is_lower(text[end]) {
        end += 1;
    }
    if text.get(end).is_some_and(|b| !b.is_ascii()) {
        return None;
    }
    contraction_end(text, end)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` after a word ending at `end`.
fn contraction_end(text: &[u8], end: usize) -> Option<usize> {
    if text.get(end) != Some(&b'\'') {
        return Some(end);
    }
    let letter = |i: usize| text.get(end + i).map(u8::to_ascii_lowercase);
    match letter(1) {
        Some(b) if !b.is_ascii() => None,
        Some(b's' | b't' | b'm' | b'd') => Some(end + 2),
        Some(first @ (b'r' | b'v' | b'l')) => {
            let second = if first == b'l' { b'l' } else { b'e' };
            match letter(2) {
                Some(b) if !b.is_ascii() => None,
                Some(b) if b == second => Some(end + 3),
                _ => Some(end),
            }
        }
        _ => Some(end),
    }
}

/// `\p{N}{1,3}`.
fn digits_end(text: &[u8], from: usize) -> Option<usize> {
    let mut end = from;
    while end < text.len() && end - from < 3 && text[end].is_ascii_digit() {
        end += 1;
    }
    if end - from < 3 && text.get(end).is_some_and(|b| !b.is_ascii()) {
        return None;
    }
    Some(end)
}

/// `[^\s\p{L}\p{N}]+[\r\n/]*` from `from` (after the optional space).
fn symbols_end(text: &[u8], from: usize) -> Option<usize> {
    let mut end = from;
    while end < text.len() && is_other(text[end]) {
        end += 1;
    }
    if text.get(end).is_some_and(|b| !b.is_ascii()) {
        return None;
    }
    // After a line break a `/` is taken again (`,\n/` is one piece).
    while end < text.len() && matches!(text[end], b'\r' | b'\n' | b'/') {
        end += 1;
    }
    Some(end)
}

/// `\s*[\r\n]+`, else `\s+(?!\S)`, else `\s+`.
fn spaces_end(text: &[u8], from: usize) -> Option<usize> {
    let mut end = from;
    let mut after_break = None;
    while end < text.len() && is_space(text[end]) {
        if is_line_break(text[end]) {
            after_break = Some(end + 1);
        }
        end += 1;
    }
    if text.get(end).is_some_and(|b| !b.is_ascii()) {
        return None;
    }
    if after_break.is_some() {
        return after_break;
    }
    if end == text.len() || end - from == 1 {
        Some(end)
    } else {
        Some(end - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str) -> Vec<&str> {
        let bytes = text.as_bytes();
        let mut at = 0;
        let mut pieces = Vec::new();
        while at < bytes.len() {
            let end = piece_end(bytes, at).expect("ASCII only");
            pieces.push(&text[at..end]);
            at = end;
        }
        pieces
    }

    #[test]
    fn cuts_ascii_like_the_pattern() {
        assert_eq!(
            cut("Hello  world!!\n\n  ok"),
            ["Hello", " ", " world", "!!\n\n", " ", " ok"]
        );
        assert_eq!(
            cut("I'm sure they'RE x'l"),
            ["I'm", " sure", " they'RE", " x", "'l"]
        );
        assert_eq!(
            cut("1765123 !x\t/y"),
            ["176", "512", "3", " !", "x", "\t", "/y"]
        );
        assert_eq!(cut("a \t b   "), ["a", " \t", " b", "   "]);
        assert_eq!(cut("'\n/a"), ["'\n/", "a"]);
    }

    #[test]
    fn leaves_to_the_regex_what_a_non_ascii_byte_may_change() {
        for (text, at) in [
            ("café", 0),
            ("12٣", 0),
            (" é", 0),
            ("don'ſ", 0),
            ("a\u{a0}", 1),
        ] {
            assert_eq!(piece_end(text.as_bytes(), at), None, "{text:?}");
        }
        assert_eq!(
            piece_end("123٣".as_bytes(), 0),
            Some(3),
            "three digits end a piece"
        );
    }
}
