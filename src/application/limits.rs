//! Abuse limits as use-case policy: which events count against which quota,
//! what a refusal says, and what happens when the limiter itself fails.
//!
//! A limiter that does not answer lets the request through (logged): limits
//! shield the service, and a store outage must not also lock every user out;
//! password hashing stays bounded on its own, and the stores that failed with
//! it give their own clear errors.

use std::sync::Arc;
use std::time::Duration;

use super::ports::{Admission, EventId, Quota, RateLimiter, SlotId, Stats};
use crate::domain::signal::{Side, TYPING_INTERVAL};
use crate::domain::{ClientIp, SessionId, UserId};
use crate::error_chain::ErrorChain;

/// A refused request and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

/// What a refused concurrency limit suggests waiting: nobody knows when a
/// slot frees, and a second is a polite retry pace.
pub const SLOT_RETRY_HINT: Duration = Duration::from_secs(1);

/// At most `max` events in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub max: u32,
    pub window: Duration,
}

/// Every limit; `None` turns one off.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    pub login_per_account_ip: Option<Rule>,
    pub login_per_ip: Option<Rule>,
    pub login_per_account: Option<Rule>,
    pub register_per_ip: Option<Rule>,
    pub verify_per_ip: Option<Rule>,
    pub ws_tickets_per_user: Option<Rule>,
    pub chats_per_user: Option<Rule>,
    pub chat_concurrent_per_user: Option<u32>,
    pub ws_connections_per_user: Option<u32>,
    pub ws_connections_per_ip: Option<u32>,
    /// How long a connection's slot lives without renewal (renewed on each
    /// ping tick, so a few ping intervals).
    pub connection_lease: Duration,
}

/// A held concurrency slot; renew it before its lease ends, release it when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    key: String,
    id: SlotId,
    lease: Duration,
}

/// A login that was let through, counted as a failure until it succeeds.
#[derive(Debug)]
pub struct LoginAttempt {
    counted: Option<(Vec<String>, EventId)>,
    account_ip: String,
}

/// A chat that was let through: its place in the rate window and, when the
/// concurrency limit is on, the slot its generation holds.
#[derive(Debug, Default)]
pub struct ChatPermit {
    counted: Option<(String, EventId)>,
    pub(super) slot: Option<Slot>,
}

/// The slots one WebSocket connection holds (per user and per address).
#[derive(Debug, Default)]
pub struct ConnectionPermit {
    slots: Vec<Slot>,
}

/// The limits, shared by the auth and chat use cases.
#[derive(Clone, Default)]
pub struct Limits {
    limiter: Option<Arc<dyn RateLimiter>>,
    settings: Arc<LimitSettings>,
    /// Counts refusals and limiter failures; `None` counts nothing.
    stats: Option<Arc<dyn Stats>>,
}

/// Keys hold what a client typed (a login name): bounded and brace-free.
fn key_part(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .take(256)
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// Every abuse limit a refusal is counted for (`Stats::rate_limited`), so
/// the metrics can show each at zero from start-up.
pub const LIMIT_NAMES: &[&str] = &[
    "login",
    "register",
    "verify",
    "ws_ticket",
    "chat",
    "chat_concurrent",
    "ws_connections",
];

impl Limits {
    pub fn new(limiter: Arc<dyn RateLimiter>, settings: LimitSettings) -> Self {
        Self {
            limiter: Some(limiter),
            settings: Arc::new(settings),
            stats: None,
        }
    }

    /// These limits counting their refusals and failures in `stats`.
    pub fn with_stats(mut self, stats: Arc<dyn Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Counts a refusal by `limit` and hands it back.
    fn refused(&self, limit: &'static str, retry_after: Duration) -> Limited {
        debug_assert!(
            LIMIT_NAMES.contains(&limit),
            "{limit} is missing from LIMIT_NAMES"
        );
        if let Some(stats) = &self.stats {
            stats.rate_limited(limit);
        }
        Limited { retry_after }
    }

    fn limiter_failed(&self) {
        if let Some(stats) = &self.stats {
            stats.store_error("limiter");
        }
    }

    /// No limits at all.
    pub fn off() -> Self {
        Self::default()
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Counts one event against every rule that is on; `Ok(None)` when none
    /// is on or the limiter failed (let through).
    async fn admit(
        &self,
        limit: &'static str,
        quotas: Vec<Quota>,
    ) -> Result<Option<(Vec<String>, EventId)>, Limited> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        if quotas.is_empty() {
            return Ok(None);
        }
        match limiter.admit(&quotas).await {
            Ok(Admission::Admitted(event)) => {
                Ok(Some((quotas.into_iter().map(|q| q.key).collect(), event)))
            }
            Ok(Admission::Refused { retry_after }) => Err(self.refused(limit, retry_after)),
            Err(e) => {
                self.limiter_failed();
                tracing::warn!(error = %ErrorChain(&e), "rate limiter failed; letting the request through");
                Ok(None)
            }
        }
    }

    /// Whether `side` of `session` may signal that it started typing now,
    /// counted over every instance (one a second per sender; each instance's
    /// own throttle already let it through here, so a customer with tabs on
    /// two instances still starts typing at most once a second). Let through
    /// with no limiter, or when it fails: typing is a courtesy, never worth
    /// an error or a log line per keystroke.
    pub async fn typing(&self, session: &SessionId, side: Side) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let quota = Quota {
            key: format!("typing:{session}:{}", side.as_str()),
            max: 1,
            window: TYPING_INTERVAL,
        };
        match limiter.admit(std::slice::from_ref(&quota)).await {
            Ok(Admission::Admitted(_)) => true,
            Ok(Admission::Refused { .. }) => false,
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "rate limiter failed; letting typing through");
                true
            }
        }
    }

    async fn withdraw(&self, keys: &[String], event: &EventId) {
        if let Some(limiter) = &self.limiter {
            if let Err(e) = limiter.withdraw(keys, event).await {
                tracing::warn!(error = %ErrorChain(&e), "could not take back a counted event");
            }
        }
    }

    /// Checks the login throttles before any hashing and counts the attempt
    /// as a failure until [`Limits::login_succeeded`] says otherwise.
    /// Unknown accounts count the same, so a refusal reveals nothing.
    pub async fn login_attempt(
        &self,
        account: &str,
        ip: ClientIp,
    ) -> Result<LoginAttempt, Limited> {
        let account = key_part(account);
        let account_ip = format!("login:account-ip:{account}|{ip}");
        let s = &self.settings;
        let quotas = [
            (s.login_per_account_ip, account_ip.clone()),
            (s.login_per_ip, format!("login:ip:{ip}")),
            (s.login_per_account, format!("login:account:{account}")),
        ];
        let counted = self.admit("login", quotas_of(quotas)).await?;
        Ok(LoginAttempt {
            counted,
            account_ip,
        })
    }

    /// The password was right: the attempt was no failure, and this address
    /// starts afresh for this account.
    pub async fn login_succeeded(&self, attempt: LoginAttempt) {
        self.login_not_a_failure(attempt.counted).await;
        if let (Some(limiter), true) = (&self.limiter, self.settings.login_per_account_ip.is_some())
        {
            if let Err(e) = limiter.reset(&attempt.account_ip).await {
                tracing::warn!(error = %ErrorChain(&e), "could not reset the login failures");
            }
        }
    }

    /// The attempt could not be judged (a dependency failed): it was no failure.
    pub async fn login_undecided(&self, attempt: LoginAttempt) {
        self.login_not_a_failure(attempt.counted).await;
    }

    async fn login_not_a_failure(&self, counted: Option<(Vec<String>, EventId)>) {
        if let Some((keys, event)) = counted {
            self.withdraw(&keys, &event).await;
        }
    }

    /// One registration attempt from `ip`.
    pub async fn register(&self, ip: ClientIp) -> Result<(), Limited> {
        let rule = self.settings.register_per_ip;
        self.admit("register", quotas_of([(rule, format!("register:ip:{ip}"))]))
            .await
            .map(drop)
    }

    /// One token verification from `ip`.
    pub async fn verify(&self, ip: ClientIp) -> Result<(), Limited> {
        let rule = self.settings.verify_per_ip;
        self.admit("verify", quotas_of([(rule, format!("verify:ip:{ip}"))]))
            .await
            .map(drop)
    }

    /// One WebSocket ticket for `user`.
    pub async fn ws_ticket(&self, user: &UserId) -> Result<(), Limited> {
        let rule = self.settings.ws_tickets_per_user;
        self.admit(
            "ws_ticket",
            quotas_of([(rule, format!("ws-ticket:user:{user}"))]),
        )
        .await
        .map(drop)
    }

    /// One chat of `user`: a place in the rate window and a generation slot
    /// (held for `lease`). Refused by either, it holds nothing.
    pub async fn chat(&self, user: &UserId, lease: Duration) -> Result<ChatPermit, Limited> {
        let slot = match self.settings.chat_concurrent_per_user {
            Some(max) => {
                self.slot(
                    "chat_concurrent",
                    format!("chat:running:{user}"),
                    max,
                    lease,
                )
                .await?
            }
            None => None,
        };
        let rule = self.settings.chats_per_user;
        match self
            .admit("chat", quotas_of([(rule, format!("chat:user:{user}"))]))
            .await
        {
            Ok(counted) => Ok(ChatPermit {
                counted: counted.map(|(mut keys, event)| (keys.remove(0), event)),
                slot,
            }),
            Err(limited) => {
                self.release(slot).await;
                Err(limited)
            }
        }
    }

    /// The chat was not accepted after all (busy session, failed store): it
    /// neither counts nor holds a slot.
    pub async fn chat_not_accepted(&self, permit: ChatPermit) {
        if let Some((key, event)) = permit.counted {
            self.withdraw(&[key], &event).await;
        }
        self.release(permit.slot).await;
    }

    /// Slots for one more WebSocket connection of `user` from `ip`.
    pub async fn connection(
        &self,
        user: &UserId,
        ip: ClientIp,
    ) -> Result<ConnectionPermit, Limited> {
        let s = &self.settings;
        let lease = s.connection_lease;
        let wanted = [
            (s.ws_connections_per_user, format!("ws:user:{user}")),
            (s.ws_connections_per_ip, format!("ws:ip:{ip}")),
        ];
        let mut permit = ConnectionPermit::default();
        for (max, key) in wanted {
            let Some(max) = max else { continue };
            match self.slot("ws_connections", key, max, lease).await {
                Ok(slot) => permit.slots.extend(slot),
                Err(limited) => {
                    self.release_connection(permit).await;
                    return Err(limited);
                }
            }
        }
        Ok(permit)
    }

    /// Whether one more connection would be admitted now, holding nothing:
    /// lets the ticket endpoint refuse with the same 429 before the upgrade.
    pub async fn connection_room(&self, user: &UserId, ip: ClientIp) -> Result<(), Limited> {
        let permit = self.connection(user, ip).await?;
        self.release_connection(permit).await;
        Ok(())
    }

    /// Keeps a connection's slots; a slot lost meanwhile (a long Redis outage)
    /// is simply no longer counted.
    pub async fn renew_connection(&self, permit: &ConnectionPermit) {
        for slot in &permit.slots {
            self.renew(slot).await;
        }
    }

    pub async fn release_connection(&self, permit: ConnectionPermit) {
        for slot in permit.slots {
            self.release(Some(slot)).await;
        }
    }

    async fn slot(
        &self,
        limit: &'static str,
        key: String,
        max: u32,
        lease: Duration,
    ) -> Result<Option<Slot>, Limited> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        match limiter.acquire(&key, max, lease).await {
            Ok(Some(id)) => Ok(Some(Slot { key, id, lease })),
            Ok(None) => Err(self.refused(limit, SLOT_RETRY_HINT)),
            Err(e) => {
                self.limiter_failed();
                tracing::warn!(error = %ErrorChain(&e), "rate limiter failed; letting the request through");
                Ok(None)
            }
        }
    }

    /// Pushes a slot's lease back; `false` when it was lost.
    pub async fn renew(&self, slot: &Slot) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        match limiter.renew(&slot.key, &slot.id, slot.lease).await {
            Ok(held) => held,
            Err(e) => {
                self.limiter_failed();
                tracing::warn!(error = %ErrorChain(&e), "could not renew a limit slot");
                true
            }
        }
    }

    pub async fn release(&self, slot: Option<Slot>) {
        let (Some(limiter), Some(slot)) = (&self.limiter, slot) else {
            return;
        };
        if let Err(e) = limiter.release(&slot.key, &slot.id).await {
            tracing::warn!(error = %ErrorChain(&e), "could not release a limit slot; its lease will end it");
        }
    }
}

/// The quotas of the rules that are on.
fn quotas_of<const N: usize>(rules: [(Option<Rule>, String); N]) -> Vec<Quota> {
    rules
        .into_iter()
        .filter_map(|(rule, key)| {
            rule.map(|r| Quota {
                key,
                max: r.max,
                window: r.window,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{MockRateLimiter, RateLimitError};

    fn ip() -> ClientIp {
        ClientIp::from(std::net::IpAddr::from([192, 0, 2, 1]))
    }

    fn rule(max: u32) -> Option<Rule> {
        Some(Rule {
            max,
            window: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn a_login_counts_against_all_three_throttles_at_once() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .withf(|q| {
                let keys: Vec<&str> = q.iter().map(|q| q.key.as_str()).collect();
                keys == [
                    "login:account-ip:alice|192.0.2.1",
                    "login:ip:192.0.2.1",
                    "login:account:alice",
                ]
            })
            .times(1)
            .returning(|_| {
                Ok(Admission::Refused {
                    retry_after: Duration::from_secs(7),
                })
            });
        let limits = Limits::new(
            Arc::new(limiter),
            LimitSettings {
                login_per_account_ip: rule(5),
                login_per_ip: rule(20),
                login_per_account: rule(100),
                ..LimitSettings::default()
            },
        );
        let refused = limits.login_attempt(" Alice ", ip()).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(7));
    }

    #[tokio::test]
    async fn a_failing_limiter_lets_requests_through() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .returning(|_| Err(RateLimitError::from(StoreFailure::bare("down"))));
        limiter
            .expect_acquire()
            .returning(|_, _, _| Err(RateLimitError::from(StoreFailure::bare("down"))));
        let limits = Limits::new(
            Arc::new(limiter),
            LimitSettings {
                register_per_ip: rule(1),
                chats_per_user: rule(1),
                chat_concurrent_per_user: Some(1),
                ..LimitSettings::default()
            },
        );
        assert!(limits.register(ip()).await.is_ok());
        let user = UserId::parse("u1").unwrap();
        let permit = limits.chat(&user, Duration::from_secs(1)).await.unwrap();
        assert!(permit.slot.is_none());
    }

    #[tokio::test]
    async fn a_chat_refused_by_its_rate_gives_its_slot_back() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_acquire()
            .returning(|_, _, _| Ok(Some(SlotId("s1".into()))));
        limiter.expect_admit().returning(|_| {
            Ok(Admission::Refused {
                retry_after: Duration::from_secs(3),
            })
        });
        limiter
            .expect_release()
            .withf(|key, slot| key == "chat:running:u1" && slot.0 == "s1")
            .times(1)
            .returning(|_, _| Ok(()));
        let limits = Limits::new(
            Arc::new(limiter),
            LimitSettings {
                chats_per_user: rule(20),
                chat_concurrent_per_user: Some(3),
                ..LimitSettings::default()
            },
        );
        let user = UserId::parse("u1").unwrap();
        let refused = limits
            .chat(&user, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(3));
    }

    #[tokio::test]
    async fn limits_that_are_off_never_ask_the_limiter() {
        let limits = Limits::new(Arc::new(MockRateLimiter::new()), LimitSettings::default());
        let user = UserId::parse("u1").unwrap();
        assert!(limits.login_attempt("alice", ip()).await.is_ok());
        assert!(limits.verify(ip()).await.is_ok());
        assert!(limits.ws_ticket(&user).await.is_ok());
        assert!(limits.connection(&user, ip()).await.is_ok());
        assert!(limits.chat(&user, Duration::from_secs(1)).await.is_ok());
    }
}
