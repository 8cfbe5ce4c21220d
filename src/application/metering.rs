//! What answers cost: each answer's token usage (the upstream's own count,
//! or an estimate made once at its end), counted once per answer against its
//! user's budget window, and the check that refuses a new answer once the
//! budget is used up.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::ports::{Stats, TokenCounter, UsageStore, UsageStoreError};
use crate::domain::answer::{Relay, TokenUsage};
use crate::domain::budget::{BudgetWindow, Quota, TokenBudget};
use crate::domain::conversation::AnswerCost;
use crate::domain::UserId;
use crate::error_chain::ErrorChain;

/// Tokens a chat message costs beyond its text, and the reply's priming, as
/// OpenAI's chat format counts them (role markers and separators).
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_REPLY: u64 = 3;

/// How answers are shown and budgeted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerSettings {
    /// What an answer's events show of its reasoning and tool calls.
    pub relay: Relay,
    /// `USER_TOKEN_BUDGET` over `USER_TOKEN_BUDGET_WINDOW`.
    pub budget: TokenBudget,
}

/// Everything an answer said, for counting it when the upstream did not.
#[derive(Debug, Default)]
pub struct AnswerTally {
    /// The texts the AI was sent (history and query), one per message.
    pub prompt: Vec<String>,
    /// The answer's text as delivered.
    pub text: String,
    pub reasoning: String,
    /// The tool calls' names and arguments.
    pub tools: String,
    /// What the upstream said it cost, if it did.
    pub usage: Option<TokenUsage>,
}

/// The user's budget is used up until `resets_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted {
    pub resets_at: DateTime<Utc>,
}

/// Counts answers' tokens and keeps the budgets.
#[derive(Clone)]
pub struct Metering {
    usage: Arc<dyn UsageStore>,
    counter: Arc<dyn TokenCounter>,
    stats: Arc<dyn Stats>,
    budget: TokenBudget,
}

impl Metering {
    pub fn new(
        usage: Arc<dyn UsageStore>,
        counter: Arc<dyn TokenCounter>,
        stats: Arc<dyn Stats>,
        budget: TokenBudget,
    ) -> Self {
        Self {
            usage,
            counter,
            stats,
            budget,
        }
    }

    pub fn window(&self) -> BudgetWindow {
        self.budget.window
    }

    /// Where `user` stands in the current window.
    ///
    /// # Errors
    /// [`UsageStoreError`] when the usage store fails (counted).
    pub async fn quota(&self, user: &UserId) -> Result<Quota, UsageStoreError> {
        let now = Utc::now();
        let used = self
            .usage
            .used(user, self.budget.window.span(now))
            .await
            .inspect_err(|_| self.stats.store_error("usage"))?;
        Ok(self.budget.quota(used, now))
    }

    /// Whether `user` may start an answer. Without a budget nothing is read;
    /// a usage store that cannot say lets the answer start (logged and
    /// counted): an outage of the counter must not stop every chat.
    ///
    /// # Errors
    /// [`BudgetExhausted`] once the user's budget is used up.
    pub async fn admit(&self, user: &UserId) -> Result<(), BudgetExhausted> {
        if self.budget.limit.is_none() {
            return Ok(());
        }
        match self.quota(user).await {
            Ok(quota) if quota.exhausted() => {
                self.stats.budget_exhausted();
                Err(BudgetExhausted {
                    resets_at: quota.resets_at.unwrap_or_else(Utc::now),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not read a token budget; the answer starts");
                Ok(())
            }
        }
    }

    /// Counts an answer once: its usage (the upstream's, else estimated
    /// here from `tally`; `None` when it never reached the AI) is added to
    /// its user's window, and the cost says where the user stands after it.
    pub async fn settle(&self, user: &UserId, tally: Option<AnswerTally>) -> AnswerCost {
        let usage = match tally {
            Some(tally) => Some(self.usage_of(tally).await),
            None => None,
        };
        let now = Utc::now();
        let span = self.budget.window.span(now);
        let used = match usage {
            Some(u) => {
                self.count(&u);
                self.usage.add(user, span, u.total_tokens).await
            }
            None => self.usage.used(user, span).await,
        };
        let quota = match used {
            Ok(used) => Some(self.budget.quota(used, now)),
            Err(e) => {
                self.stats.store_error("usage");
                tracing::warn!(error = %ErrorChain(&e), "could not count an answer's tokens");
                None
            }
        };
        AnswerCost { usage, quota }
    }

    /// The upstream's usage, or one counted now: the prompt as the chat
    /// format frames it, the completion as text, reasoning and tool calls.
    async fn usage_of(&self, tally: AnswerTally) -> TokenUsage {
        if let Some(usage) = tally.usage {
            return usage;
        }
        let messages = u64::try_from(tally.prompt.len()).unwrap_or(u64::MAX);
        let mut texts = tally.prompt;
        let tools = tally.tools;
        texts.extend([tally.text, tally.reasoning, tools]);
        let counts = self.counter.count(texts).await;
        let (prompt, answer) = counts.split_at(counts.len().saturating_sub(3));
        let part = |i: usize| answer.get(i).copied().unwrap_or(0);
        let prompt_tokens = prompt
            .iter()
            .sum::<u64>()
            .saturating_add(messages.saturating_mul(TOKENS_PER_MESSAGE))
            .saturating_add(TOKENS_PER_REPLY);
        TokenUsage::estimate(prompt_tokens, part(0) + part(2), part(1))
    }

    fn count(&self, u: &TokenUsage) {
        self.stats.tokens("prompt", u.estimated, u.prompt_tokens);
        self.stats
            .tokens("completion", u.estimated, u.completion_tokens);
        self.stats
            .tokens("reasoning", u.estimated, u.reasoning_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::{MockStats, MockTokenCounter, MockUsageStore, StoreFailure};
    use crate::domain::budget::BudgetWindow;

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn words() -> MockTokenCounter {
        let mut counter = MockTokenCounter::new();
        counter.expect_count().returning(|texts| {
            texts
                .iter()
                .map(|t| t.split_whitespace().count() as u64)
                .collect()
        });
        counter
    }

    fn budget(limit: Option<u64>) -> TokenBudget {
        TokenBudget {
            limit,
            window: BudgetWindow::default(),
        }
    }

    fn quiet_stats() -> MockStats {
        let mut stats = MockStats::new();
        stats.expect_tokens().returning(|_, _, _| ());
        stats.expect_store_error().returning(|_| ());
        stats.expect_budget_exhausted().returning(|| ());
        stats
    }

    #[tokio::test]
    async fn an_answer_without_upstream_usage_is_estimated_and_counted_once() {
        let mut usage = MockUsageStore::new();
        usage
            .expect_add()
            .times(1)
            .withf(|_, _, tokens| *tokens == 16)
            .returning(|_, _, tokens| Ok(tokens + 100));
        let metering = Metering::new(
            Arc::new(usage),
            Arc::new(words()),
            Arc::new(quiet_stats()),
            budget(Some(1000)),
        );
        let tally = AnswerTally {
            prompt: vec!["hello there".into(), "and you".into()],
            text: "one two".into(),
            reasoning: "hmm".into(),
            tools: String::new(),
            usage: None,
        };
        let cost = metering.settle(&user(), Some(tally)).await;
        let u = cost.usage.unwrap();
        assert!(u.estimated);
        // 4 words + 2 messages framed (6) + the reply's priming (3).
        assert_eq!(u.prompt_tokens, 13);
        assert_eq!((u.completion_tokens, u.reasoning_tokens), (3, 1));
        let quota = cost.quota.unwrap();
        assert_eq!(quota.used, u.total_tokens + 100);
        assert_eq!(quota.limit, Some(1000));
    }

    #[tokio::test]
    async fn the_upstreams_usage_is_taken_as_it_is() {
        let mut usage = MockUsageStore::new();
        usage.expect_add().returning(|_, _, tokens| Ok(tokens));
        let mut counter = MockTokenCounter::new();
        counter.expect_count().never();
        let metering = Metering::new(
            Arc::new(usage),
            Arc::new(counter),
            Arc::new(quiet_stats()),
            budget(None),
        );
        let said = TokenUsage {
            prompt_tokens: 5,
            completion_tokens: 7,
            reasoning_tokens: 2,
            total_tokens: 12,
            estimated: false,
        };
        let tally = AnswerTally {
            usage: Some(said),
            ..AnswerTally::default()
        };
        let cost = metering.settle(&user(), Some(tally)).await;
        assert_eq!(cost.usage, Some(said));
        assert_eq!(cost.quota.unwrap().resets_at, None, "no budget, no reset");
    }

    #[tokio::test]
    async fn an_answer_that_never_reached_the_ai_costs_nothing() {
        let mut usage = MockUsageStore::new();
        usage.expect_add().never();
        usage.expect_used().returning(|_, _| Ok(40));
        let metering = Metering::new(
            Arc::new(usage),
            Arc::new(words()),
            Arc::new(quiet_stats()),
            budget(Some(50)),
        );
        let cost = metering.settle(&user(), None).await;
        assert_eq!(cost.usage, None);
        assert_eq!(cost.quota.unwrap().used, 40);
    }

    #[tokio::test]
    async fn a_used_up_budget_refuses_and_an_unreadable_one_admits() {
        let mut usage = MockUsageStore::new();
        usage.expect_used().times(1).returning(|_, _| Ok(50));
        usage
            .expect_used()
            .returning(|_, _| Err(StoreFailure::bare("down").into()));
        let mut stats = quiet_stats();
        stats.checkpoint();
        stats.expect_budget_exhausted().times(1).returning(|| ());
        stats.expect_store_error().returning(|_| ());
        let metering = Metering::new(
            Arc::new(usage),
            Arc::new(words()),
            Arc::new(stats),
            budget(Some(50)),
        );
        let refused = metering.admit(&user()).await.unwrap_err();
        assert!(refused.resets_at > Utc::now());
        assert!(metering.admit(&user()).await.is_ok());
    }

    #[tokio::test]
    async fn without_a_budget_nothing_is_read_before_an_answer() {
        let mut usage = MockUsageStore::new();
        usage.expect_used().never();
        let metering = Metering::new(
            Arc::new(usage),
            Arc::new(words()),
            Arc::new(quiet_stats()),
            budget(None),
        );
        assert!(metering.admit(&user()).await.is_ok());
    }
}
