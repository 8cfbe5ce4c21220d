//! Outbound adapter: the built-in echo model, answering when no AI service is
//! configured so the gateway can be run and demonstrated on its own.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;

use crate::application::ports::{
    AiError, AiHealth, AiModel, AiPurpose, AiRequest, TokenStream, UpstreamState,
};
use crate::domain::answer::AnswerDelta;
use crate::domain::{ChatMessage, Role};

/// Repeats the query back, one word at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoAi {
    delay_per_token: Duration,
}

impl EchoAi {
    /// `delay_per_token` paces the words like a real model, so that streaming
    /// and stopping a generation can be seen and tested.
    pub fn new(delay_per_token: Duration) -> Self {
        Self { delay_per_token }
    }
}

impl Default for EchoAi {
    fn default() -> Self {
        Self::new(Duration::from_millis(40))
    }
}

/// Splits text into words, each keeping the whitespace that follows it, so the
/// tokens concatenate back to exactly the input.
fn tokenize(text: &str) -> VecDeque<String> {
    let mut tokens = VecDeque::new();
    let mut start = 0;
    let mut prev_was_space = false;
    for (i, c) in text.char_indices() {
        let is_space = c.is_whitespace();
        if prev_was_space && !is_space && i > start {
            tokens.push_back(text[start..i].to_owned());
            start = i;
        }
        prev_was_space = is_space;
    }
    if start < text.len() {
        tokens.push_back(text[start..].to_owned());
    }
    tokens
}

/// Turns the echo model's summary covers.
const SUMMARY_TURNS: usize = 4;
/// Characters of each turn it quotes.
const SUMMARY_QUOTE_CHARS: usize = 80;

/// The echo model's summary of a conversation: its last turns, quoted
/// short, so an agent (and a test) sees exactly what it was built from.
fn summary_of(history: &[ChatMessage]) -> String {
    let skip = history.len().saturating_sub(SUMMARY_TURNS);
    let turns: Vec<String> = history[skip..]
        .iter()
        .map(|m| {
            let who = match m.role {
                Role::User => "customer",
                Role::Assistant => "assistant",
            };
            let quoted: String = m.content.chars().take(SUMMARY_QUOTE_CHARS).collect();
            format!(
                "{who}: {}",
                quoted.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    format!(
        "Summary of the last {} of {} turns. {}",
        turns.len(),
        history.len(),
        turns.join(" | ")
    )
}

#[async_trait]
impl AiModel for EchoAi {
    async fn stream(&self, request: AiRequest) -> Result<TokenStream, AiError> {
        let text = match request.purpose {
            AiPurpose::Answer => format!("You said: {}", request.query),
            AiPurpose::Summary => summary_of(&request.history),
        };
        let tokens = tokenize(&text);
        let delay = self.delay_per_token;
        let stream =
            futures_util::stream::unfold((tokens, true), move |(mut tokens, first)| async move {
                let token = tokens.pop_front()?;
                if !first {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok(AnswerDelta::Text(token)), (tokens, false)))
            });
        Ok(Box::pin(stream))
    }

    async fn health(&self) -> AiHealth {
        AiHealth::Echo
    }

    fn upstreams(&self) -> Vec<UpstreamState> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::time::Instant;

    use super::*;
    use crate::domain::{SessionId, UserId};

    fn request(query: &str) -> AiRequest {
        AiRequest {
            query: query.to_owned(),
            user_id: UserId::parse("u1").unwrap(),
            session_id: SessionId::generate(),
            history: Vec::new(),
            trace: None,
            purpose: AiPurpose::Answer,
        }
    }

    async fn collect(ai: &EchoAi, query: &str) -> Vec<String> {
        ai.stream(request(query))
            .await
            .unwrap()
            .map(|item| match item.unwrap() {
                AnswerDelta::Text(t) => t,
                other => panic!("the echo model only says text: {other:?}"),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn tokens_concatenate_to_the_reply() {
        let ai = EchoAi::new(Duration::ZERO);
        for query in [
            "hello world",
            "  spaced   out\tand\nlines  ",
            "x",
            "héllo wörld ✓",
        ] {
            let tokens = collect(&ai, query).await;
            assert_eq!(tokens.concat(), format!("You said: {query}"));
            assert!(tokens.iter().all(|t| !t.is_empty()));
        }
    }

    #[tokio::test]
    async fn a_summary_quotes_the_last_turns() {
        let turn = |role, content: &str| ChatMessage {
            role,
            content: content.to_owned(),
            timestamp: chrono::Utc::now(),
            message_id: None,
        };
        let mut asked = request("Summarise this for the agent.");
        asked.purpose = AiPurpose::Summary;
        asked.history = vec![
            turn(Role::User, "hello"),
            turn(Role::Assistant, "You said: hello"),
            turn(Role::User, "my  order\nis late"),
            turn(Role::Assistant, "You said: my order is late"),
            turn(Role::User, "I want a human"),
        ];
        let text: String = EchoAi::new(Duration::ZERO)
            .stream(asked)
            .await
            .unwrap()
            .map(|item| match item.unwrap() {
                AnswerDelta::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(
            text,
            "Summary of the last 4 of 5 turns. assistant: You said: hello | customer: my order is late | \
             assistant: You said: my order is late | customer: I want a human"
        );
    }

    #[tokio::test]
    async fn streams_word_by_word() {
        let tokens = collect(&EchoAi::new(Duration::ZERO), "how are you").await;
        assert_eq!(tokens, ["You ", "said: ", "how ", "are ", "you"]);
    }

    #[tokio::test]
    async fn paces_tokens() {
        let ai = EchoAi::new(Duration::from_millis(20));
        let started = Instant::now();
        let tokens = collect(&ai, "one two three").await;
        assert_eq!(tokens.len(), 5);
        assert!(started.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn health_is_echo() {
        assert_eq!(EchoAi::default().health().await, AiHealth::Echo);
    }

    #[test]
    fn tokenize_edge_cases() {
        assert!(tokenize("").is_empty());
        assert_eq!(tokenize("   "), ["   "]);
        assert_eq!(tokenize("a  b "), ["a  ", "b "]);
    }
}
