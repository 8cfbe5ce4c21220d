//! [`TokenCounter`] with OpenAI's `o200k_base` byte-pair encoding (GPT-4o
//! and later). Other models tokenize differently, so its counts are
//! estimates, and are marked so.
//!
//! The vocabulary comes from the `tiktoken-rs` crate, at build time (the
//! build script writes it into the binary: nothing is downloaded), but
//! counting does not go through its encoder, which cost a text-only answer
//! about 4 µs of CPU per streamed token and 46 MiB of memory: [`pieces`]
//! cuts a text with a DFA instead of a backtracking regex, [`vocabulary`]
//! reads the table where the binary holds it, and [`merge`] counts tokens
//! without building them. Tests hold every count equal to `tiktoken-rs`'s.

mod ascii;
mod merge;
mod pieces;
mod vocabulary;

use async_trait::async_trait;

use crate::application::ports::TokenCounter;
use vocabulary::Vocabulary;

/// Texts up to this many bytes in all are counted where the answer ends (a
/// few microseconds: an answer's prompt and text are usually far below it);
/// a longer batch goes to the blocking pool, so a long conversation's prompt
/// never holds up the streams that share the runtime's threads.
const COUNT_IN_PLACE_BYTES: usize = 16 * 1024;

/// Counts with `o200k_base`.
#[derive(Debug, Clone, Copy, Default)]
pub struct O200kCounter;

/// Long counts run one at a time: many answers ending together (500 chats
/// started at once end within the same second) would otherwise take every
/// core from the streams still running, and estimates can wait.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl O200kCounter {
    /// Indexes the vocabulary and compiles the pattern (milliseconds, on
    /// the blocking pool) so the first answer does not wait for them.
    pub async fn warmed() -> Self {
        let _ = tokio::task::spawn_blocking(|| {
            pieces::warm();
            Vocabulary::get();
        })
        .await;
        Self
    }
}

/// Tokens `text` becomes under `o200k_base` (without special tokens).
pub fn count_tokens(vocabulary: &Vocabulary, text: &str) -> u64 {
    let tokens: usize = pieces::pieces(text)
        .map(|piece| match vocabulary.rank(piece.as_bytes()) {
            Some(_) => 1,
            None => merge::count(vocabulary, piece.as_bytes()),
        })
        .sum();
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

fn count_all(vocabulary: &Vocabulary, texts: &[String]) -> Vec<u64> {
    texts.iter().map(|t| count_tokens(vocabulary, t)).collect()
}

#[async_trait]
impl TokenCounter for O200kCounter {
    async fn count(&self, texts: Vec<String>) -> Vec<u64> {
        let bytes: usize = texts.iter().map(String::len).sum();
        if let Some(vocabulary) = Vocabulary::if_ready() {
            if bytes <= COUNT_IN_PLACE_BYTES {
                return count_all(vocabulary, &texts);
            }
        }
        let fallback = texts.len();
        let Ok(_turn) = ONE_AT_A_TIME.acquire().await else {
            return vec![0; fallback];
        };
        tokio::task::spawn_blocking(move || count_all(Vocabulary::get(), &texts))
            .await
            // The task only fails if counting panics; nothing is counted then.
            .unwrap_or_else(|_| vec![0; fallback])
    }
}

#[cfg(test)]
mod tests;
