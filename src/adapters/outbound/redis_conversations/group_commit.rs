//! Group commit for a single Redis: the batches of every session written
//! while a call is in flight go to Redis together, as one append script.
//!
//! Each answer's tokens are already batched per session (whatever arrived
//! while its previous batch was being written goes in its next). Under load
//! that still left one script call per session per round: at 500 answers
//! streaming at once, ~20 000 calls a second, each paying Redis's and the
//! driver's per-command cost. Here a small number of calls are in flight at
//! once; what arrives meanwhile waits in a bounded queue and leaves in the
//! next call, so the number of calls follows the load's rounds, not its
//! sessions. A write that finds a call free leaves at once: a quiet answer
//! waits for nothing.
//!
//! A Redis Cluster keeps one call per session: sessions hash to different
//! slots, and one script may only touch one.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::event_log::{PreparedAppend, RedisEventLog};
use crate::application::ports::{ConversationStoreError, SharedEvent, StoreFailure};
use crate::domain::conversation::Seq;

/// Calls in flight at once. Two, so Redis runs one while the driver reads
/// the answer to the other; more only lengthens the queue inside Redis.
const IN_FLIGHT: usize = 2;
/// Sessions' batches per call: bounds a call's size (and how long it holds
/// Redis) when thousands of sessions wait.
const MAX_PER_CALL: usize = 256;
/// Writes waiting for a call; a writer beyond it waits for room.
const QUEUE: usize = 4096;

/// One write waiting for its call; the append comes back with the answer,
/// since its events become the logged ones.
struct Pending {
    append: PreparedAppend,
    reply: oneshot::Sender<(PreparedAppend, Result<Seq, StoreFailure>)>,
}

/// The queue in front of the append script and the task that empties it.
/// Dropping it stops the task; writes still queued then fail.
pub(super) struct GroupCommit {
    tx: mpsc::Sender<Pending>,
    _task: DropGuard,
}

impl GroupCommit {
    /// Starts the task that sends `log`'s appends, published as `origin`.
    pub(super) fn start(log: RedisEventLog, origin: Arc<str>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let cancel = CancellationToken::new();
        tokio::spawn(run(log, origin, rx, cancel.clone()));
        Self {
            tx,
            _task: cancel.drop_guard(),
        }
    }

    /// Appends and publishes `append` with whatever else is waiting, and
    /// returns the events as logged.
    pub(super) async fn write(
        &self,
        append: PreparedAppend,
    ) -> Result<Vec<SharedEvent>, ConversationStoreError> {
        let stopped =
            || ConversationStoreError::from(StoreFailure::bare("the Redis writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { append, reply })
            .await
            .map_err(|_| stopped())?;
        let (append, first) = answer.await.map_err(|_| stopped())?;
        Ok(append.logged(first?))
    }
}

async fn run(
    log: RedisEventLog,
    origin: Arc<str>,
    mut rx: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
) {
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut calls = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = room.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            next = rx.recv() => match next {
                Some(pending) => pending,
                None => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_PER_CALL {
            let Ok(pending) = rx.try_recv() else { break };
            batch.push(pending);
        }
        let (log, origin) = (log.clone(), origin.clone());
        calls.spawn(async move {
            commit(&log, &origin, batch).await;
            drop(permit);
        });
        // Reap what has finished, so the set holds at most IN_FLIGHT calls.
        while calls.try_join_next().is_some() {}
    }
    calls.abort_all();
}

/// Sends one call and answers each of its writers.
async fn commit(log: &RedisEventLog, origin: &str, batch: Vec<Pending>) {
    let (appends, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.append, p.reply)).unzip();
    let results = match log.append_many(&appends, Some(origin)).await {
        Ok(results) => results,
        Err(failure) => {
            let shared = SharedFailure::from(failure);
            appends.iter().map(|_| Err(shared.failure())).collect()
        }
    };
    for ((reply, append), result) in replies.into_iter().zip(appends).zip(results) {
        let _ = reply.send((append, result));
    }
}

/// A call's failure, told to each of its writers with the driver's words.
struct SharedFailure {
    context: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl From<StoreFailure> for SharedFailure {
    fn from(failure: StoreFailure) -> Self {
        Self {
            context: failure.context,
            source: failure.source.map(Arc::from),
        }
    }
}

impl SharedFailure {
    fn failure(&self) -> StoreFailure {
        match &self.source {
            Some(source) => StoreFailure::new(self.context.clone(), SharedCause(source.clone())),
            None => StoreFailure::bare(self.context.clone()),
        }
    }
}

/// The driver's error, shared by the writers of one call.
#[derive(Debug)]
struct SharedCause(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
