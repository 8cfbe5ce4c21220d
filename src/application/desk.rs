//! The desk: which agents are available, away or offline, and how many
//! conversations each holds, as every agent console shows it. One loop per
//! instance reads it again when something changed (a handoff change or an
//! agent's socket or status, on any instance, or every [`DESK_REFRESH`] for
//! leases that lapsed with a dead instance) and hands it to this instance's
//! agent sockets, so a change costs one read per instance, not per socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::conversation::{ConversationCore, HANDOFF_LISTED};
use super::ports::ConversationStoreError;
use crate::domain::desk::{arrange, DeskAgent, DeskStatus};
use crate::domain::handoff::Mode;
use crate::domain::signal::{Signal, SignalTopic};
use crate::domain::{UserId, Username};
use crate::error_chain::ErrorChain;

/// Offline agents are shown when they were seen this recently (a shift).
pub const DESK_SEEN_WITHIN: Duration = Duration::from_secs(12 * 60 * 60);

/// Most agents the desk lists.
pub const DESK_LIMIT: usize = 200;

/// How often the desk is read even when nobody said it changed.
const DESK_REFRESH: Duration = Duration::from_secs(10);

/// After a change, what else comes within this is read with it.
const DESK_SETTLE: Duration = Duration::from_millis(150);

/// Usernames the loop remembers (agents are few; cleared when it is full).
const NAMES_KEPT: usize = 1000;

/// Keeps `core.desk` up to date until `stop`.
pub(super) async fn keep_desk(core: Arc<ConversationCore>, stop: CancellationToken) {
    let mut changes = core.handoffs.changes();
    let mut changes_open = true;
    let mut signals = core.signals.subscribe(&SignalTopic::Desk);
    let mut names: HashMap<UserId, Username> = HashMap::new();
    let mut tick = tokio::time::interval(DESK_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            change = changes.recv(), if changes_open => {
                changes_open = !matches!(change, Err(RecvError::Closed));
            }
            Some(_) = signals.next() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DESK_SETTLE) => {}
        }
        // What came meanwhile is in this read.
        while changes.try_recv().is_ok() {}
        match read(&core, &mut names).await {
            Ok(desk) => {
                core.desk.send_if_modified(|shown| {
                    let changed = **shown != desk;
                    if changed {
                        *shown = Arc::new(desk);
                    }
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not read the desk"),
        }
    }
}

/// Every instance reads its desk again soon (a socket opened or closed, a
/// status changed). A failing transport only delays it to the next refresh.
pub(super) async fn announce(core: &ConversationCore) {
    if let Err(e) = core
        .signals
        .publish(&SignalTopic::Desk, Signal::DeskChanged)
        .await
    {
        tracing::info!(error = %ErrorChain(&e), "could not announce a desk change");
    }
}

/// The desk now: agents seen lately, and agents holding conversations.
async fn read(
    core: &ConversationCore,
    names: &mut HashMap<UserId, Username>,
) -> Result<Vec<DeskAgent>, ConversationStoreError> {
    let since = Utc::now() - chrono::Duration::from_std(DESK_SEEN_WITHIN).unwrap_or_default();
    let seen = core.presence.seen(since, DESK_LIMIT).await?;
    let mut load: HashMap<UserId, (Username, usize)> = HashMap::new();
    for h in core.handoffs.active(HANDOFF_LISTED).await? {
        if let Mode::Assigned { agent, .. } = &h.mode {
            load.entry(agent.id.clone())
                .or_insert_with(|| (agent.username.clone(), 0))
                .1 += 1;
        }
    }
    let mut desk = Vec::new();
    for agent in seen {
        let held = load.remove(&agent.id);
        let username = match held.as_ref().map(|(name, _)| name.clone()) {
            Some(name) => name,
            None => match username_of(core, names, &agent.id).await {
                Some(name) => name,
                // No such user any more.
                None => continue,
            },
        };
        desk.push(DeskAgent {
            status: DeskStatus::of(agent.online, agent.away),
            id: agent.id,
            username,
            conversations: held.map_or(0, |(_, n)| n),
        });
    }
    // Holding conversations, not seen lately: within their grace.
    for (id, (username, conversations)) in load {
        desk.push(DeskAgent {
            id,
            username,
            status: DeskStatus::Offline,
            conversations,
        });
    }
    Ok(arrange(desk, DESK_LIMIT))
}

async fn username_of(
    core: &ConversationCore,
    names: &mut HashMap<UserId, Username>,
    id: &UserId,
) -> Option<Username> {
    if let Some(name) = names.get(id) {
        return Some(name.clone());
    }
    match core.users.find_by_id(id).await {
        Ok(Some(user)) => {
            if names.len() >= NAMES_KEPT {
                names.clear();
            }
            names.insert(id.clone(), user.username.clone());
            Some(user.username)
        }
        Ok(None) => None,
        Err(e) => {
            core.stats.store_error("users");
            tracing::warn!(error = %ErrorChain(&e), "could not read an agent for the desk");
            None
        }
    }
}
