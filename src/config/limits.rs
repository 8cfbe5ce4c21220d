//! The abuse limits section: login, registration, verification, ticket and
//! chat rates, concurrent answers and connections, and the proxies trusted
//! to name the client.

use std::time::Duration;

use super::settings::{
    CHAT_MAX_CONCURRENT_PER_USER, CHAT_MESSAGES_PER_MINUTE, CHAT_MESSAGES_WINDOW,
    LOGIN_ACCOUNT_WINDOW, LOGIN_FAILURE_WINDOW, LOGIN_MAX_FAILURES_PER_ACCOUNT,
    LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY, LOGIN_MAX_FAILURES_PER_IP, REGISTER_PER_IP_PER_HOUR,
    REGISTER_WINDOW, SESSIONS_MAX_PER_USER, TRUSTED_PROXIES, USER_TOKEN_BUDGET,
    USER_TOKEN_BUDGET_WINDOW, VERIFY_PER_IP_PER_MINUTE, VERIFY_WINDOW, WS_MAX_CONNECTIONS_PER_IP,
    WS_MAX_CONNECTIONS_PER_USER, WS_TICKETS_PER_USER_PER_MINUTE, WS_TICKETS_WINDOW,
};
use super::{ConfigError, Vars};
use crate::domain::budget::{BudgetWindow, TokenBudget};
use crate::domain::TrustedProxies;

/// At most `max` events in any `window`; `None` when the limit is off (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub max: u32,
    pub window: Duration,
}

/// Abuse limits; every count set to `0` turns its limit off.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Failed logins per (account, client IP) in `LOGIN_FAILURE_WINDOW`.
    pub login_per_account_ip: Option<WindowLimit>,
    /// Failed logins per client IP over all accounts in `LOGIN_FAILURE_WINDOW`.
    pub login_per_ip: Option<WindowLimit>,
    /// Failed logins per account over all IPs in `LOGIN_ACCOUNT_WINDOW` (1 h).
    pub login_per_account: Option<WindowLimit>,
    pub register_per_ip: Option<WindowLimit>,
    pub verify_per_ip: Option<WindowLimit>,
    pub ws_tickets_per_user: Option<WindowLimit>,
    pub chats_per_user: Option<WindowLimit>,
    /// Generations running at once per user, over all sessions and instances.
    pub chat_concurrent_per_user: Option<u32>,
    pub ws_connections_per_user: Option<u32>,
    pub ws_connections_per_ip: Option<u32>,
    /// Live sessions per user; one more evicts the least recently active.
    pub sessions_per_user: Option<u32>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// `USER_TOKEN_BUDGET` per `USER_TOKEN_BUDGET_WINDOW`; no limit at `0`.
    pub token_budget: TokenBudget,
}

impl LimitsConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let failures = vars.duration(LOGIN_FAILURE_WINDOW)?;
        let proxies = vars.get(TRUSTED_PROXIES).unwrap_or_default();
        let trusted_proxies = TrustedProxies::parse(&proxies)
            .map_err(|e| ConfigError::invalid(TRUSTED_PROXIES.name, &proxies, &e.to_string()))?;
        Ok(Self {
            login_per_account_ip: vars.window_limit(LOGIN_MAX_FAILURES_PER_ACCOUNT, failures)?,
            login_per_ip: vars.window_limit(LOGIN_MAX_FAILURES_PER_IP, failures)?,
            login_per_account: vars.window_limit(
                LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY,
                vars.duration(LOGIN_ACCOUNT_WINDOW)?,
            )?,
            register_per_ip: vars
                .window_limit(REGISTER_PER_IP_PER_HOUR, vars.duration(REGISTER_WINDOW)?)?,
            verify_per_ip: vars
                .window_limit(VERIFY_PER_IP_PER_MINUTE, vars.duration(VERIFY_WINDOW)?)?,
            ws_tickets_per_user: vars.window_limit(
                WS_TICKETS_PER_USER_PER_MINUTE,
                vars.duration(WS_TICKETS_WINDOW)?,
            )?,
            chats_per_user: vars.window_limit(
                CHAT_MESSAGES_PER_MINUTE,
                vars.duration(CHAT_MESSAGES_WINDOW)?,
            )?,
            chat_concurrent_per_user: vars.limit(CHAT_MAX_CONCURRENT_PER_USER)?,
            ws_connections_per_user: vars.limit(WS_MAX_CONNECTIONS_PER_USER)?,
            ws_connections_per_ip: vars.limit(WS_MAX_CONNECTIONS_PER_IP)?,
            sessions_per_user: vars.limit(SESSIONS_MAX_PER_USER)?,
            trusted_proxies,
            token_budget: token_budget(vars)?,
        })
    }
}

/// `USER_TOKEN_BUDGET` (tokens, `0` = off) over `USER_TOKEN_BUDGET_WINDOW`.
fn token_budget(vars: &Vars) -> Result<TokenBudget, ConfigError> {
    let limit: u64 = vars.required(
        USER_TOKEN_BUDGET,
        "a whole number of tokens (0 turns the budget off)",
    )?;
    let length = vars.duration(USER_TOKEN_BUDGET_WINDOW)?;
    let window = BudgetWindow::parse(length).map_err(|e| {
        let text = vars.get(USER_TOKEN_BUDGET_WINDOW).unwrap_or_default();
        ConfigError::invalid(USER_TOKEN_BUDGET_WINDOW.name, &text, &e.to_string())
    })?;
    Ok(TokenBudget {
        limit: (limit > 0).then_some(limit),
        window,
    })
}
