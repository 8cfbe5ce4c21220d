//! The AI service section: the primary upstream and its fallback (or the
//! built-in echo model), their timeouts, retries and circuit breakers.

use std::time::Duration;

use super::settings::{
    Setting, AI_BREAKER_COOLDOWN, AI_BREAKER_FAILURES, AI_CONNECT_TIMEOUT, AI_FALLBACK_FASTAPI_URL,
    AI_FALLBACK_OPENAI_API_KEY, AI_FALLBACK_OPENAI_BASE_URL, AI_FALLBACK_OPENAI_MODEL,
    AI_FALLBACK_PROVIDER, AI_FALLBACK_SYSTEM_PROMPT, AI_FIRST_TOKEN_TIMEOUT, AI_IDLE_TIMEOUT,
    AI_MAX_RETRIES, AI_PROVIDER, AI_RETRY_BACKOFF, AI_SYSTEM_PROMPT, ECHO_TOKEN_DELAY, FASTAPI_URL,
    OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL, RELAY_REASONING, RELAY_TOOL_ARGUMENTS,
};
use super::{ApiKey, ConfigError, Vars};
use crate::domain::answer::Relay;

/// One AI upstream and the contract it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamConfig {
    /// `POST {url}/api/v1/chat/ai-response` (`FASTAPI_URL`).
    FastApi { url: String },
    /// `POST {base_url}/chat/completions` (`AI_PROVIDER=openai`).
    OpenAi {
        /// Including the API version, e.g. `https://api.openai.com/v1`.
        base_url: String,
        api_key: Option<ApiKey>,
        model: String,
        system_prompt: Option<String>,
    },
}

impl UpstreamConfig {
    /// `fastapi` or `openai`.
    pub fn provider(&self) -> &'static str {
        match self {
            UpstreamConfig::FastApi { .. } => "fastapi",
            UpstreamConfig::OpenAi { .. } => "openai",
        }
    }

    /// The base URL, for the start-up log.
    pub fn url(&self) -> &str {
        match self {
            UpstreamConfig::FastApi { url } => url,
            UpstreamConfig::OpenAi { base_url, .. } => base_url,
        }
    }
}

/// The AI service (and its fallback), or the built-in echo model when none
/// is configured, and how hard to try each one.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// `None`: the built-in echo model answers.
    pub primary: Option<UpstreamConfig>,
    /// Asked when the primary fails before its first token or its breaker is open.
    pub fallback: Option<UpstreamConfig>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    /// Delay between words of the built-in echo model.
    pub echo_token_delay: Duration,
    /// `AI_MAX_RETRIES`: further attempts of one chat on one upstream, before
    /// its first token only.
    pub max_retries: u32,
    /// `AI_RETRY_BACKOFF`: the wait before the first retry; it doubles (with
    /// jitter) for each next one.
    pub retry_backoff: Duration,
    /// `AI_BREAKER_FAILURES`: consecutive failed chats that open an
    /// upstream's breaker; `None` (`0`) never opens it.
    pub breaker_failures: Option<u32>,
    /// `AI_BREAKER_COOLDOWN`: how long an open breaker skips its upstream.
    pub breaker_cooldown: Duration,
    /// `RELAY_REASONING` and `RELAY_TOOL_ARGUMENTS`: what clients see of an
    /// answer's reasoning and tool calls.
    pub relay: Relay,
}

/// The names of one upstream's variables: the primary's, or the fallback's
/// (the same names prefixed `AI_FALLBACK_`, the `AI_` of a name dropped).
struct UpstreamVars {
    provider: Setting,
    fastapi_url: Setting,
    openai_base_url: Setting,
    openai_api_key: Setting,
    openai_model: Setting,
    system_prompt: Setting,
}

const PRIMARY_VARS: UpstreamVars = UpstreamVars {
    provider: AI_PROVIDER,
    fastapi_url: FASTAPI_URL,
    openai_base_url: OPENAI_BASE_URL,
    openai_api_key: OPENAI_API_KEY,
    openai_model: OPENAI_MODEL,
    system_prompt: AI_SYSTEM_PROMPT,
};

const FALLBACK_VARS: UpstreamVars = UpstreamVars {
    provider: AI_FALLBACK_PROVIDER,
    fastapi_url: AI_FALLBACK_FASTAPI_URL,
    openai_base_url: AI_FALLBACK_OPENAI_BASE_URL,
    openai_api_key: AI_FALLBACK_OPENAI_API_KEY,
    openai_model: AI_FALLBACK_OPENAI_MODEL,
    system_prompt: AI_FALLBACK_SYSTEM_PROMPT,
};

/// What OpenAI's SDKs default to.
const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Most `AI_MAX_RETRIES`: each retry is another request to a struggling upstream.
pub(super) const MAX_AI_RETRIES: u32 = 10;

impl AiConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let primary = UpstreamConfig::parse(vars, &PRIMARY_VARS)?;
        let fallback = UpstreamConfig::parse(vars, &FALLBACK_VARS)?;
        if primary.is_none() && fallback.is_some() {
            return Err(ConfigError(
                "a fallback AI upstream (AI_FALLBACK_*) needs a primary one: \
                 set FASTAPI_URL, or AI_PROVIDER=openai"
                    .into(),
            ));
        }
        let max_retries: u32 = vars.required(AI_MAX_RETRIES, "a whole number 0-10")?;
        if max_retries > MAX_AI_RETRIES {
            let text = max_retries.to_string();
            return Err(ConfigError::invalid(
                AI_MAX_RETRIES.name,
                &text,
                "a whole number 0-10",
            ));
        }
        Ok(Self {
            primary,
            fallback,
            connect_timeout: vars.duration(AI_CONNECT_TIMEOUT)?,
            first_token_timeout: vars.duration(AI_FIRST_TOKEN_TIMEOUT)?,
            idle_timeout: vars.duration(AI_IDLE_TIMEOUT)?,
            echo_token_delay: vars.duration(ECHO_TOKEN_DELAY)?,
            max_retries,
            retry_backoff: vars.duration(AI_RETRY_BACKOFF)?,
            breaker_failures: vars.limit(AI_BREAKER_FAILURES)?,
            breaker_cooldown: vars.duration(AI_BREAKER_COOLDOWN)?,
            relay: Relay {
                reasoning: vars.boolean(RELAY_REASONING)?,
                tool_arguments: vars.boolean(RELAY_TOOL_ARGUMENTS)?,
            },
        })
    }
}

impl UpstreamConfig {
    /// The upstream `names` describe: `None` when its provider is not set
    /// and its FastAPI URL is not either.
    fn parse(vars: &Vars, names: &UpstreamVars) -> Result<Option<Self>, ConfigError> {
        let provider = vars.get(names.provider).map(|p| p.to_ascii_lowercase());
        match provider.as_deref() {
            None => Ok(ai_url(vars, names.fastapi_url)?.map(|url| Self::FastApi { url })),
            Some("fastapi") => match ai_url(vars, names.fastapi_url)? {
                Some(url) => Ok(Some(Self::FastApi { url })),
                None => Err(ConfigError(format!(
                    "{}=fastapi needs {}",
                    names.provider.name, names.fastapi_url.name
                ))),
            },
            Some("openai") => Self::openai(vars, names).map(Some),
            Some(other) => Err(ConfigError::invalid(
                names.provider.name,
                other,
                "fastapi or openai",
            )),
        }
    }

    fn openai(vars: &Vars, names: &UpstreamVars) -> Result<Self, ConfigError> {
        let base_url = ai_url(vars, names.openai_base_url)?
            .unwrap_or_else(|| OPENAI_DEFAULT_BASE_URL.to_owned());
        let model = vars.get(names.openai_model).ok_or_else(|| {
            ConfigError(format!(
                "{}=openai needs {} (the model name the upstream serves)",
                names.provider.name, names.openai_model.name
            ))
        })?;
        let api_key = match vars.get(names.openai_api_key) {
            // It travels as an HTTP header value.
            Some(key) if !key.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError::invalid_secret(
                    names.openai_api_key.name,
                    "printable ASCII without spaces",
                ))
            }
            key => key.map(ApiKey),
        };
        Ok(Self::OpenAi {
            base_url,
            api_key,
            model,
            system_prompt: vars.get(names.system_prompt),
        })
    }
}

/// An upstream's base URL: `http://` or `https://`, no query or fragment.
fn ai_url(vars: &Vars, setting: Setting) -> Result<Option<String>, ConfigError> {
    let Some(url) = vars.get(setting) else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#']) {
        return Err(ConfigError::invalid(
            setting.name,
            &url,
            "an http:// or https:// base URL without query or fragment",
        ));
    }
    Ok(Some(url))
}
