//! [`TokenCounter`] with OpenAI's `o200k_base` byte-pair encoding (GPT-4o
//! and later), from the vocabulary the `tiktoken-rs` crate ships: nothing is
//! downloaded at run time. Other models tokenize differently, so its counts
//! are estimates, and are marked so.

use async_trait::async_trait;

use crate::application::ports::TokenCounter;

/// Counts with `o200k_base` on the blocking pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct TiktokenCounter;

/// Estimates run one at a time: many answers ending together (500 chats
/// started at once end within the same second) would otherwise take every
/// core from the streams still running, and estimates can wait.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl TiktokenCounter {
    /// Builds the encoder (its vocabulary is parsed once, a fraction of a
    /// second) so the first answer does not wait for it.
    pub async fn warmed() -> Self {
        let _ = tokio::task::spawn_blocking(tiktoken_rs::o200k_base_singleton).await;
        Self
    }
}

#[async_trait]
impl TokenCounter for TiktokenCounter {
    async fn count(&self, texts: Vec<String>) -> Vec<u64> {
        let fallback = texts.len();
        let Ok(_turn) = ONE_AT_A_TIME.acquire().await else {
            return vec![0; fallback];
        };
        tokio::task::spawn_blocking(move || {
            let bpe = tiktoken_rs::o200k_base_singleton();
            texts
                .iter()
                .map(|t| u64::try_from(bpe.encode_ordinary(t).len()).unwrap_or(u64::MAX))
                .collect()
        })
        .await
        // The task only fails if the tokenizer panics; nothing is counted then.
        .unwrap_or_else(|_| vec![0; fallback])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_like_the_models_tokenizer() {
        let counts = TiktokenCounter
            .count(vec![
                String::new(),
                "Hello world".into(),
                "tokenization ".repeat(10),
            ])
            .await;
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1], 2, "two common words, two tokens");
        assert!(counts[2] >= 10 && counts[2] <= 40, "{}", counts[2]);
    }
}
