//! The counter against `tiktoken-rs`'s own encoder: same counts on texts
//! built to reach every branch of the pattern and of merging.

use proptest::prelude::*;

use super::*;

fn tiktoken(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

fn ours(text: &str) -> u64 {
    count_tokens(Vocabulary::get(), text)
}

/// Characters each alternative of the pattern treats differently: spaces
/// (ASCII, no-break, ideographic, tab), line breaks, letters of every case
/// class (upper, lower, title `ǅ`, modifier `ʰ`, other `中`), a combining
/// mark, digits (ASCII, Arabic-Indic, `½`), apostrophes and the letters of
/// contractions (with `ſ` and the Kelvin sign, which fold to s and k),
/// punctuation, `/`, emoji and a lone byte-heavy script.
const ALPHABET: &[char] = &[
    ' ', ' ', ' ', '\u{a0}', '\u{3000}', '\t', '\n', '\r', 'a', 'e', 's', 't', 'm', 'l', 'd', 'r',
    'v', 'S', 'T', 'L', 'D', 'É', 'ß', 'ǅ', 'ʰ', '中', '文', '\u{301}', '0', '7', '٣', '½', '\'',
    '’', 'ſ', '\u{212a}', ',', '.', '!', '/', '-', '😀', '✓', 'Ж', 'ж', 'ק',
];

/// ASCII only: every byte class the ASCII rules tell apart, control bytes
/// and the vertical spaces among them.
const ASCII: &[char] = &[
    ' ', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{1f}', '\u{7f}', 'a', 'e', 's', 'l', 'd', 'r',
    'v', 'S', 'L', 'E', 'Q', '0', '9', '\'', '!', '/', '-', '_',
];

fn text_from(alphabet: &'static [char], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..max)
        .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn counts_like_tiktoken_on_mixed_text(text in text_from(ALPHABET, 80)) {
        prop_assert_eq!(ours(&text), tiktoken(&text), "{:?}", text);
    }

    #[test]
    fn counts_like_tiktoken_on_ascii_text(text in text_from(ASCII, 80)) {
        prop_assert_eq!(ours(&text), tiktoken(&text), "{:?}", text);
    }

    #[test]
    fn counts_like_tiktoken_on_any_text(text in any::<String>()) {
        prop_assert_eq!(ours(&text), tiktoken(&text), "{:?}", text);
    }

    /// Long words that are not tokens: merged by the heap (≥ 100 bytes).
    #[test]
    fn counts_like_tiktoken_on_long_words(text in text_from(&['a', 'q', 'z', 'x', 'é', 'ж', '中'], 400)) {
        prop_assert_eq!(ours(&text), tiktoken(&text), "{:?}", text);
    }
}

#[test]
fn counts_like_tiktoken_on_prose_code_and_numbers() {
    let texts = [
        "",
        "Hello world",
        "Hello   world  \n\n  and\tthen\r\n  some.",
        "I'm sure they'll say it's what we'd've DONE'S",
        "fn main() {\n    println!(\"{}\", 1_000_000 / 7);\n}\n",
        "1765123456789012345 1765123456789012346",
        "https://example.com/a/b?c=d&e=f#g",
        "Ünïcödé façade — naïve café 東京 🚀🚀 ",
        &"tokenization ".repeat(50),
        &"a".repeat(5000),
    ];
    for text in texts {
        assert_eq!(ours(text), tiktoken(text), "{text:?}");
    }
}

#[tokio::test]
async fn long_batches_are_counted_on_the_blocking_pool_too() {
    let counter = O200kCounter::warmed().await;
    let long = "word ".repeat(COUNT_IN_PLACE_BYTES);
    let counts = counter
        .count(vec![String::new(), "Hello world".into(), long.clone()])
        .await;
    assert_eq!(counts, vec![0, 2, tiktoken(&long)]);
}
