//! Outbound decorator: a second upstream, asked when the first fails before
//! its first token (after its own retries) or is skipped by its breaker.
//! Once a token has come from either, the answer stays with that one.

use std::sync::Arc;

use async_trait::async_trait;

use super::resilient_ai::{lazy, until_first_token};
use crate::application::ports::{
    AiError, AiHealth, AiModel, AiRequest, TokenStream, UpstreamState,
};

/// The primary upstream, with a fallback behind it.
#[derive(Clone)]
pub struct FallbackAi {
    primary: Arc<dyn AiModel>,
    fallback: Arc<dyn AiModel>,
}

impl FallbackAi {
    pub fn new(primary: Arc<dyn AiModel>, fallback: Arc<dyn AiModel>) -> Self {
        Self { primary, fallback }
    }
}

/// The model's answer up to its first token.
async fn first_token_of(model: &dyn AiModel, request: AiRequest) -> Result<TokenStream, AiError> {
    until_first_token(model.stream(request).await?).await
}

#[async_trait]
impl AiModel for FallbackAi {
    async fn stream(&self, request: AiRequest) -> Result<TokenStream, AiError> {
        let primary = self.primary.clone();
        let fallback = self.fallback.clone();
        Ok(lazy(async move {
            let first = match first_token_of(primary.as_ref(), request.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            tracing::info!(error = %first, "primary AI upstream failed before the first token; asking the fallback");
            // The client hears of the failure that gives it the best advice:
            // if the primary will be back (an open breaker, an outage) while
            // the fallback refused this chat, that is the primary's.
            first_token_of(fallback.as_ref(), request)
                .await
                .map_err(|second| {
                    if !second.retryable() && first.retryable() {
                        first
                    } else {
                        second
                    }
                })
        }))
    }

    /// The primary's probe, or the fallback's when the primary does not answer.
    async fn health(&self) -> AiHealth {
        let (primary, fallback) = tokio::join!(self.primary.health(), self.fallback.health());
        if primary == AiHealth::Ok {
            primary
        } else {
            fallback
        }
    }

    fn upstreams(&self) -> Vec<UpstreamState> {
        let mut all = self.primary.upstreams();
        all.extend(self.fallback.upstreams());
        all
    }
}
