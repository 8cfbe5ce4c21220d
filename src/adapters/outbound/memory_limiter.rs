//! In-process [`RateLimiter`] for a single instance: exact sliding windows
//! and leased slots in two bounded maps.
//!
//! Not `governor`: it implements GCRA, which refills a burst continuously, so
//! "20 chats per rolling minute, all at once, the 21st refused" would let the
//! 21st through after 3 s; it can neither take a counted event back (a login
//! that turned out right) nor count one event against several quotas all or
//! nothing; and the Redis adapter must answer exactly as this one does (one
//! contract suite). A window holds at most `max` instants per key, so this is
//! small.
//!
//! Bounded: at most [`MAX_KEYS`] keys per map. When a map is full it first
//! drops what has expired, then the keys idle longest (half of them), so a
//! flood of new addresses costs a sweep now and then, never unbounded memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::application::ports::{Admission, EventId, Quota, RateLimitError, RateLimiter, SlotId};

/// Keys each map holds before it sweeps.
pub const MAX_KEYS: usize = 100_000;

/// One key's counted events, oldest first.
struct Window {
    window: Duration,
    events: VecDeque<(Instant, u64)>,
}

impl Window {
    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.events.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.events.pop_front();
        }
    }

    /// How long until one more fits under `max`, if it does not now.
    fn wait(&self, max: u32, now: Instant) -> Option<Duration> {
        if max == 0 {
            return Some(self.window);
        }
        let over = self.events.len().checked_sub(max as usize)?;
        let (at, _) = self.events[over];
        Some(
            (at + self.window)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    }

    fn last_used(&self) -> Option<Instant> {
        self.events.back().map(|(at, _)| *at)
    }
}

/// One key's held slots and when each lease ends.
type Slots = HashMap<u64, Instant>;

#[derive(Default)]
struct State {
    windows: HashMap<String, Window>,
    slots: HashMap<String, Slots>,
}

/// A [`RateLimiter`] in this process; see the module docs.
pub struct InMemoryRateLimiter {
    state: Mutex<State>,
    next_id: AtomicU64,
    max_keys: usize,
}

impl Default for InMemoryRateLimiter {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl InMemoryRateLimiter {
    /// A limiter whose maps sweep once they hold `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            max_keys: max_keys.max(2),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How many keys the maps hold (windows, slots).
    pub fn keys(&self) -> (usize, usize) {
        let state = self.lock();
        (state.windows.len(), state.slots.len())
    }
}

impl State {
    fn sweep_windows(&mut self, now: Instant, max_keys: usize) {
        self.windows.retain(|_, w| {
            w.forget_before(now);
            !w.events.is_empty()
        });
        if self.windows.len() < max_keys {
            return;
        }
        let mut ages: Vec<Instant> = self
            .windows
            .values()
            .filter_map(Window::last_used)
            .collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        self.windows
            .retain(|_, w| w.last_used().is_some_and(|at| at > cut));
    }

    fn sweep_slots(&mut self, now: Instant, max_keys: usize) {
        self.slots.retain(|_, held| {
            held.retain(|_, until| *until > now);
            !held.is_empty()
        });
        if self.slots.len() < max_keys {
            return;
        }
        let mut ages: Vec<Instant> = self
            .slots
            .values()
            .filter_map(|h| h.values().max().copied())
            .collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        self.slots
            .retain(|_, h| h.values().max().is_some_and(|until| *until > cut));
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn admit(&self, quotas: &[Quota]) -> Result<Admission, RateLimitError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.windows.len() + quotas.len() > self.max_keys {
            state.sweep_windows(now, self.max_keys);
        }
        let mut wait = Duration::ZERO;
        for q in quotas {
            if let Some(w) = state.windows.get_mut(&q.key) {
                w.window = q.window;
                w.forget_before(now);
                wait = wait.max(w.wait(q.max, now).unwrap_or_default());
            } else if q.max == 0 {
                wait = wait.max(q.window);
            }
        }
        if !wait.is_zero() {
            return Ok(Admission::Refused { retry_after: wait });
        }
        let id = self.id();
        for q in quotas {
            let w = state
                .windows
                .entry(q.key.clone())
                .or_insert_with(|| Window {
                    window: q.window,
                    events: VecDeque::with_capacity(q.max.min(32) as usize),
                });
            w.events.push_back((now, id));
        }
        Ok(Admission::Admitted(EventId(id.to_string())))
    }

    async fn withdraw(&self, keys: &[String], event: &EventId) -> Result<(), RateLimitError> {
        let Ok(id) = event.0.parse::<u64>() else {
            return Ok(());
        };
        let mut state = self.lock();
        for key in keys {
            if let Some(w) = state.windows.get_mut(key) {
                w.events.retain(|(_, e)| *e != id);
                if w.events.is_empty() {
                    state.windows.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<(), RateLimitError> {
        self.lock().windows.remove(key);
        Ok(())
    }

    async fn acquire(
        &self,
        key: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Option<SlotId>, RateLimitError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.slots.len() >= self.max_keys {
            state.sweep_slots(now, self.max_keys);
        }
        let held = state.slots.entry(key.to_owned()).or_default();
        held.retain(|_, until| *until > now);
        if held.len() >= max as usize {
            if held.is_empty() {
                state.slots.remove(key);
            }
            return Ok(None);
        }
        let id = self.id();
        held.insert(id, now + lease);
        Ok(Some(SlotId(id.to_string())))
    }

    async fn renew(
        &self,
        key: &str,
        slot: &SlotId,
        lease: Duration,
    ) -> Result<bool, RateLimitError> {
        let Ok(id) = slot.0.parse::<u64>() else {
            return Ok(false);
        };
        let now = Instant::now();
        let mut state = self.lock();
        let Some(until) = state.slots.get_mut(key).and_then(|h| h.get_mut(&id)) else {
            return Ok(false);
        };
        if *until <= now {
            return Ok(false);
        }
        *until = now + lease;
        Ok(true)
    }

    async fn release(&self, key: &str, slot: &SlotId) -> Result<(), RateLimitError> {
        let Ok(id) = slot.0.parse::<u64>() else {
            return Ok(());
        };
        let mut state = self.lock();
        if let Some(held) = state.slots.get_mut(key) {
            held.remove(&id);
            if held.is_empty() {
                state.slots.remove(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(key: &str, max: u32) -> Quota {
        Quota {
            key: key.to_owned(),
            max,
            window: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_flood_of_keys_stays_within_the_bound() {
        let limiter = InMemoryRateLimiter::with_max_keys(100);
        for i in 0..1_000 {
            let q = quota(&format!("ip:{i}"), 5);
            let got = limiter.admit(&[q]).await.unwrap();
            assert!(matches!(got, Admission::Admitted(_)));
            let key = format!("c:{i}");
            let slot = limiter.acquire(&key, 1, Duration::from_secs(60)).await;
            assert!(slot.unwrap().is_some());
        }
        let (windows, slots) = limiter.keys();
        assert!(windows <= 100 && slots <= 100, "{windows} {slots}");
        // The keys used last are the ones kept.
        let again = limiter.admit(&[quota("ip:999", 1)]).await.unwrap();
        assert!(matches!(again, Admission::Refused { .. }), "{again:?}");
    }

    #[tokio::test]
    async fn released_and_withdrawn_keys_are_dropped() {
        let limiter = InMemoryRateLimiter::default();
        let Admission::Admitted(event) = limiter.admit(&[quota("a", 2)]).await.unwrap() else {
            panic!("admitted");
        };
        limiter.withdraw(&["a".to_owned()], &event).await.unwrap();
        let slot = limiter
            .acquire("s", 2, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        limiter.release("s", &slot).await.unwrap();
        assert_eq!(limiter.keys(), (0, 0));
    }
}
