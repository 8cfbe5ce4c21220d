//! Handoff state and agent presence in this process's memory, for a single
//! instance (`SESSION_STORE=memory`): the same contract as the Redis
//! adapters, with a mutex standing in for the store's atomicity.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::application::ports::{
    AgentOnline, AgentPresence, AgentSeen, ConversationStoreError, HandoffChange, HandoffStore,
    Swap,
};
use crate::domain::handoff::{Handoff, Mode};
use crate::domain::queue::WAIT_WINDOW;
use crate::domain::{SessionId, UserId};

/// How many changes a slow listener may fall behind before it is told it lagged.
pub const CHANGES_BUFFER: usize = 256;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queued and assigned conversations, keyed by session.
pub struct MemoryHandoffs {
    records: Mutex<HashMap<SessionId, Handoff>>,
    /// The position each queued customer was last told (only queued ones:
    /// a swap out of the queue forgets it).
    told: Mutex<HashMap<SessionId, u64>>,
    /// Recent waits per place, newest first, at most [`WAIT_WINDOW`].
    waits: Mutex<VecDeque<Duration>>,
    /// Who runs auto-assignment now, and until when.
    assigner: Mutex<Option<(String, tokio::time::Instant)>>,
    /// Per agent: who takes a conversation for them now, and until when
    /// (ended or lapsed leases go; at most one per agent).
    taking: Mutex<HashMap<UserId, (String, tokio::time::Instant)>>,
    /// The summary of an assigned conversation, while its agent holds it.
    summaries: Mutex<HashMap<SessionId, String>>,
    changes: broadcast::Sender<HandoffChange>,
}

impl Default for MemoryHandoffs {
    fn default() -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            told: Mutex::new(HashMap::new()),
            waits: Mutex::new(VecDeque::new()),
            assigner: Mutex::new(None),
            taking: Mutex::new(HashMap::new()),
            summaries: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_BUFFER).0,
        }
    }
}

impl MemoryHandoffs {
    fn select(&self, limit: usize, keep: impl Fn(&Handoff) -> bool) -> Vec<Handoff> {
        let mut out: Vec<Handoff> = lock(&self.records)
            .values()
            .filter(|h| keep(h))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (a.waiting_since, a.session.as_str()).cmp(&(b.waiting_since, b.session.as_str()))
        });
        out.truncate(limit);
        out
    }
}

#[async_trait]
impl HandoffStore for MemoryHandoffs {
    async fn get(&self, session: &SessionId) -> Result<Option<Handoff>, ConversationStoreError> {
        Ok(lock(&self.records).get(session).cloned())
    }

    async fn swap(
        &self,
        session: &SessionId,
        expected: u64,
        next: Option<Handoff>,
    ) -> Result<Swap, ConversationStoreError> {
        let mode = {
            let mut records = lock(&self.records);
            let current = records.get(session).map_or(0, |h| h.version);
            if current != expected {
                return Ok(Swap::Conflict);
            }
            let holder = |h: Option<&Handoff>| h.and_then(|h| h.mode.agent()).map(|a| a.id.clone());
            if holder(records.get(session)) != holder(next.as_ref()) || next.is_none() {
                lock(&self.summaries).remove(session);
            }
            match next {
                Some(mut next) => {
                    next.version = expected + 1;
                    let mode = next.mode.clone();
                    records.insert(session.clone(), next);
                    mode
                }
                None => {
                    records.remove(session);
                    Mode::Bot
                }
            }
        };
        if mode != Mode::Queued {
            lock(&self.told).remove(session);
        }
        // Nobody listening is fine: there is no agent socket on this instance.
        let _ = self.changes.send(HandoffChange {
            session: session.clone(),
            mode,
        });
        Ok(Swap::Done)
    }

    async fn queue(&self, limit: usize) -> Result<Vec<Handoff>, ConversationStoreError> {
        Ok(self.select(limit, |h| h.mode == Mode::Queued))
    }

    async fn position(&self, session: &SessionId) -> Result<Option<u64>, ConversationStoreError> {
        let records = lock(&self.records);
        let Some(me) = records.get(session).filter(|h| h.mode == Mode::Queued) else {
            return Ok(None);
        };
        // The queue's order: by waiting time, ties by session id.
        let key = |h: &Handoff| (h.waiting_since, h.session.as_str().to_owned());
        let ahead = records
            .values()
            .filter(|h| h.mode == Mode::Queued && key(h) < key(me))
            .count();
        Ok(Some(ahead as u64 + 1))
    }

    async fn held_by(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<Handoff>, ConversationStoreError> {
        Ok(self.select(limit, |h| h.mode.agent().is_some_and(|a| a.id == *agent)))
    }

    async fn active(&self, limit: usize) -> Result<Vec<Handoff>, ConversationStoreError> {
        Ok(self.select(limit, |_| true))
    }

    async fn queue_length(&self) -> Result<u64, ConversationStoreError> {
        let records = lock(&self.records);
        Ok(records.values().filter(|h| h.mode == Mode::Queued).count() as u64)
    }

    async fn note_entry(
        &self,
        session: &SessionId,
        position: u64,
    ) -> Result<(), ConversationStoreError> {
        let records = lock(&self.records);
        if records.get(session).is_some_and(|h| h.mode == Mode::Queued) {
            lock(&self.told).insert(session.clone(), position);
        }
        Ok(())
    }

    async fn note_moves(
        &self,
        places: &[(SessionId, u64)],
    ) -> Result<Vec<SessionId>, ConversationStoreError> {
        let records = lock(&self.records);
        let mut told = lock(&self.told);
        let mut moved = Vec::new();
        for (session, position) in places {
            let queued = records.get(session).is_some_and(|h| h.mode == Mode::Queued);
            match told.get_mut(session) {
                Some(was) if queued && *position < *was => {
                    *was = *position;
                    moved.push(session.clone());
                }
                _ => {}
            }
        }
        Ok(moved)
    }

    async fn record_wait(&self, per_place: Duration) -> Result<(), ConversationStoreError> {
        let mut waits = lock(&self.waits);
        waits.push_front(per_place);
        waits.truncate(WAIT_WINDOW);
        Ok(())
    }

    async fn recent_waits(&self) -> Result<Vec<Duration>, ConversationStoreError> {
        Ok(lock(&self.waits).iter().copied().collect())
    }

    async fn lead_assignment(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, ConversationStoreError> {
        let now = tokio::time::Instant::now();
        let mut assigner = lock(&self.assigner);
        match &*assigner {
            Some((other, until)) if other != holder && *until > now => Ok(false),
            _ => {
                *assigner = Some((holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn end_assignment(&self, holder: &str) -> Result<(), ConversationStoreError> {
        let mut assigner = lock(&self.assigner);
        if assigner.as_ref().is_some_and(|(h, _)| h == holder) {
            *assigner = None;
        }
        Ok(())
    }

    async fn begin_taking(
        &self,
        agent: &UserId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, ConversationStoreError> {
        let now = tokio::time::Instant::now();
        let mut taking = lock(&self.taking);
        taking.retain(|_, (_, until)| *until > now);
        match taking.get(agent) {
            Some((other, _)) if other != holder => Ok(false),
            _ => {
                taking.insert(agent.clone(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn end_taking(&self, agent: &UserId, holder: &str) -> Result<(), ConversationStoreError> {
        let mut taking = lock(&self.taking);
        if taking.get(agent).is_some_and(|(h, _)| h == holder) {
            taking.remove(agent);
        }
        Ok(())
    }

    async fn keep_summary(
        &self,
        session: &SessionId,
        agent: &UserId,
        summary: &str,
    ) -> Result<bool, ConversationStoreError> {
        let records = lock(&self.records);
        let held = records
            .get(session)
            .and_then(|h| h.mode.agent())
            .is_some_and(|a| a.id == *agent);
        if held {
            lock(&self.summaries).insert(session.clone(), summary.to_owned());
        }
        Ok(held)
    }

    async fn summary(&self, session: &SessionId) -> Result<Option<String>, ConversationStoreError> {
        Ok(lock(&self.summaries).get(session).cloned())
    }

    fn changes(&self) -> broadcast::Receiver<HandoffChange> {
        self.changes.subscribe()
    }
}

/// One agent's open sockets (each with its lease's end) and when it was last seen.
#[derive(Default)]
struct Agent {
    sockets: HashMap<String, DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    away: bool,
    last_assigned: Option<DateTime<Utc>>,
}

impl Agent {
    /// Drops lapsed leases, remembering the latest as the last sighting.
    fn expire(&mut self, now: DateTime<Utc>) {
        let lapsed: Vec<DateTime<Utc>> = self
            .sockets
            .values()
            .copied()
            .filter(|until| *until <= now)
            .collect();
        self.sockets.retain(|_, until| *until > now);
        if let Some(latest) = lapsed.into_iter().max() {
            self.last_seen = Some(self.last_seen.map_or(latest, |s| s.max(latest)));
        }
    }
}

/// Agent sockets' leases, per agent.
#[derive(Default)]
pub struct MemoryPresence {
    agents: Mutex<HashMap<UserId, Agent>>,
}

#[async_trait]
impl AgentPresence for MemoryPresence {
    async fn renew(
        &self,
        agent: &UserId,
        socket: &str,
        lease: Duration,
    ) -> Result<(), ConversationStoreError> {
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut agents = lock(&self.agents);
        let entry = agents.entry(agent.clone()).or_default();
        entry.sockets.insert(socket.to_owned(), until);
        Ok(())
    }

    async fn leave(&self, agent: &UserId, socket: &str) -> Result<(), ConversationStoreError> {
        let mut agents = lock(&self.agents);
        if let Some(entry) = agents.get_mut(agent) {
            if entry.sockets.remove(socket).is_some() {
                entry.last_seen = Some(Utc::now());
            }
        }
        Ok(())
    }

    async fn online(&self, agent: &UserId) -> Result<bool, ConversationStoreError> {
        let mut agents = lock(&self.agents);
        Ok(agents.get_mut(agent).is_some_and(|a| {
            a.expire(Utc::now());
            !a.sockets.is_empty()
        }))
    }

    async fn last_seen(
        &self,
        agent: &UserId,
    ) -> Result<Option<DateTime<Utc>>, ConversationStoreError> {
        let mut agents = lock(&self.agents);
        Ok(agents.get_mut(agent).and_then(|a| {
            a.expire(Utc::now());
            a.last_seen
        }))
    }

    async fn online_count(&self) -> Result<u64, ConversationStoreError> {
        let now = Utc::now();
        let mut agents = lock(&self.agents);
        let mut online = 0;
        for agent in agents.values_mut() {
            agent.expire(now);
            online += u64::from(!agent.sockets.is_empty());
        }
        Ok(online)
    }

    async fn set_away(&self, agent: &UserId, away: bool) -> Result<(), ConversationStoreError> {
        lock(&self.agents).entry(agent.clone()).or_default().away = away;
        Ok(())
    }

    async fn away(&self, agent: &UserId) -> Result<bool, ConversationStoreError> {
        Ok(lock(&self.agents).get(agent).is_some_and(|a| a.away))
    }

    async fn note_assigned(
        &self,
        agent: &UserId,
        at: DateTime<Utc>,
    ) -> Result<(), ConversationStoreError> {
        lock(&self.agents)
            .entry(agent.clone())
            .or_default()
            .last_assigned = Some(at);
        Ok(())
    }

    async fn roster(&self, limit: usize) -> Result<Vec<AgentOnline>, ConversationStoreError> {
        let now = Utc::now();
        let mut agents = lock(&self.agents);
        let mut online = Vec::new();
        for (id, agent) in agents.iter_mut() {
            agent.expire(now);
            if !agent.sockets.is_empty() && online.len() < limit {
                online.push(AgentOnline {
                    id: id.clone(),
                    away: agent.away,
                    last_assigned: agent.last_assigned,
                });
            }
        }
        Ok(online)
    }

    async fn seen(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentSeen>, ConversationStoreError> {
        let now = Utc::now();
        let mut agents = lock(&self.agents);
        let mut seen: Vec<(DateTime<Utc>, AgentSeen)> = Vec::new();
        for (id, agent) in agents.iter_mut() {
            agent.expire(now);
            let online = !agent.sockets.is_empty();
            // Online counts as seen whatever `since` says.
            let at = if online {
                Some(DateTime::<Utc>::MAX_UTC)
            } else {
                agent.last_seen.filter(|at| *at >= since)
            };
            if let Some(at) = at {
                let row = AgentSeen {
                    id: id.clone(),
                    online,
                    away: agent.away,
                };
                seen.push((at, row));
            }
        }
        seen.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.id.as_str().cmp(b.1.id.as_str()))
        });
        Ok(seen.into_iter().take(limit).map(|(_, row)| row).collect())
    }
}
