//! One running generation: streams the AI's answer into the session's event
//! log, keeps its lease alive, notices when nobody has watched it for too long,
//! and always ends with exactly one `stream-end` (unless another instance
//! already ended it after this one lost its lease). Also the two loops that
//! end generations from elsewhere: a stop asked on another instance, and the
//! reaper of those whose owner vanished.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conversation::{ChatError, ConversationCore};
use super::limits::Slot;
use super::metering::AnswerTally;
use super::ports::{AbandonedGeneration, AiError, AiRequest, GenerationReport, TokenStream};
use crate::domain::answer::{AnswerDelta, Relay, ToolActivity};
use crate::domain::conversation::{ConversationEvent, Generation, GenerationFailure, Seq};
use crate::domain::transcript::{Speaker, TranscriptEntry};
use crate::domain::{ChatMessage, MessageId, Role, SessionId, StreamStatus};
use crate::error_chain::ErrorChain;

/// How often a running generation checks whether anyone still watches it.
const WATCH_CHECK: Duration = Duration::from_secs(1);
/// The pauses between tries at logging an answer's end the store refused,
/// doubling from the first to the longest, and how long it is tried.
const END_RETRY_FIRST: Duration = Duration::from_millis(250);
const END_RETRY_MAX: Duration = Duration::from_secs(2);
const END_RETRY_FOR: Duration = Duration::from_secs(120);

/// How a generation's stream loop ended.
enum Ending {
    Done(Result<StreamStatus, GenerationFailure>),
    /// Another instance reaped the lease: it writes the end, not us.
    LostLease,
}

/// Everything a generation task needs, moved into it.
pub(super) struct Job {
    pub session: SessionId,
    pub generation: Generation,
    /// The seq of its `stream-start`: where the answer stands in the transcript.
    pub start_seq: Seq,
    pub request: AiRequest,
    pub cancel: CancellationToken,
    /// The user's concurrent-generation slot, held until the end.
    pub slot: Option<Slot>,
    /// The answer's span in a trace (see `traces::answer_span`).
    pub traced: tracing::Span,
}

/// What a generation did, for its closing log line and the metrics.
struct Progress {
    reply: String,
    started: Instant,
    first_token: Option<Duration>,
    tokens: u64,
    /// What the upstream did: `ok`, `none` (never asked, or no answer
    /// before a stop), or the kind of its failure.
    upstream: &'static str,
    /// The upstream's HTTP status, when it failed with one.
    upstream_status: Option<u16>,
    /// What the answer said beside its text, for counting its cost.
    beside: Beside,
}

/// What an answer said beside its text: kept as it came, and counted once
/// at its end (tokenizing per delta would cost the hot path).
#[derive(Default)]
struct Beside {
    /// Any delta came: the answer reached the AI and costs tokens.
    reached: bool,
    reasoning: String,
    tools: String,
    usage: Option<crate::domain::answer::TokenUsage>,
}

impl Progress {
    fn new() -> Self {
        Self {
            reply: String::new(),
            started: Instant::now(),
            first_token: None,
            tokens: 0,
            upstream: "none",
            upstream_status: None,
            beside: Beside::default(),
        }
    }

    /// Adds the events of one delta of the answer to `batch`, noting what
    /// it says.
    fn delta(
        &mut self,
        delta: AnswerDelta,
        generation: &mut Generation,
        relay: Relay,
        batch: &mut Batch,
    ) {
        self.beside.reached = true;
        match delta {
            AnswerDelta::Text(text) => {
                self.token(&text);
                batch.add(generation.tokens(text));
            }
            AnswerDelta::Reasoning(text) => {
                self.heard();
                self.beside.reasoning.push_str(&text);
                batch.add(generation.reasoning(&text, relay));
            }
            AnswerDelta::Tool(activity) => {
                self.heard();
                self.tool(&activity);
                batch.add(generation.tool(activity, relay));
            }
            AnswerDelta::Usage(usage) => self.beside.usage = Some(usage),
        }
    }

    /// The upstream answered, with something other than text so far.
    fn heard(&mut self) {
        if self.upstream == "none" {
            self.upstream = "ok";
        }
    }

    fn tool(&mut self, activity: &ToolActivity) {
        let tools = &mut self.beside.tools;
        if let Some(arguments) = &activity.arguments {
            tools.push_str(activity.name.as_str());
            tools.push(' ');
            tools.push_str(arguments);
            tools.push('\n');
        }
    }

    /// What the answer said, for counting it; `None` when it never reached
    /// the AI (nothing came, and it did not complete).
    fn tally(&mut self, prompt: Vec<String>, text: &str, completed: bool) -> Option<AnswerTally> {
        if !self.beside.reached && !completed {
            return None;
        }
        let beside = std::mem::take(&mut self.beside);
        Some(AnswerTally {
            prompt,
            text: text.to_owned(),
            reasoning: beside.reasoning,
            tools: beside.tools,
            usage: beside.usage,
        })
    }

    fn token(&mut self, delta: &str) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
            self.upstream = "ok";
        }
        self.tokens += 1;
        self.reply.push_str(delta);
    }

    fn upstream_failed(&mut self, e: &AiError) {
        self.upstream = match e {
            AiError::Unavailable(_) => "unavailable",
            AiError::Status { status, .. } => {
                self.upstream_status = Some(*status);
                "status"
            }
            AiError::Rejected(_) => "rejected",
            AiError::CircuitOpen => "circuit_open",
            AiError::Timeout(_) => "timeout",
            AiError::Protocol(_) => "protocol_error",
        };
    }

    /// Counts the generation and writes its one closing line (never its text).
    fn report(
        &self,
        inner: &ConversationCore,
        session: &SessionId,
        message_id: &MessageId,
        outcome: &'static str,
    ) {
        let duration = self.started.elapsed();
        inner.stats.generation_ended(&GenerationReport {
            outcome,
            first_token: self.first_token,
            duration,
            tokens: self.tokens,
        });
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            session_id = %session,
            %message_id,
            outcome,
            ttft_ms = self.first_token.map(millis),
            tokens = self.tokens,
            duration_ms = millis(duration),
            upstream = self.upstream,
            upstream_status = self.upstream_status,
            "generation ended"
        );
    }
}

/// The metric label of how a generation ended.
fn outcome_label(outcome: &Result<StreamStatus, GenerationFailure>) -> &'static str {
    match outcome {
        Ok(status) => status.as_str(),
        Err(_) => "failed",
    }
}

/// Runs the generation to its end and releases everything it held.
pub(super) async fn run(inner: Arc<ConversationCore>, job: Job) {
    let Job {
        session,
        mut generation,
        start_seq,
        request,
        cancel,
        slot,
        traced,
    } = job;
    let owner = request.user_id.clone();
    let prompt = prompt_of(&request);
    let mut progress = Progress::new();
    let ending = stream_answer(
        &inner,
        &session,
        &mut generation,
        request,
        &cancel,
        slot.as_ref(),
        &mut progress,
    )
    .await;
    inner.limits.release(slot).await;
    let message_id = generation.message_id().clone();
    let said = Said {
        owner,
        seq: start_seq,
        reply: std::mem::take(&mut progress.reply),
    };
    let completed = matches!(ending, Ending::Done(Ok(StreamStatus::Completed)));
    let tally = progress.tally(prompt, &said.reply, completed);
    let outcome = match ending {
        Ending::LostLease => {
            tracing::warn!(session_id = %session, %message_id, "lost the generation lease; another instance ended it");
            // It cost what it cost, whoever logs its end.
            let cost = inner.metering.settle(&said.owner, tally).await;
            super::traces::answered(&traced, "lost_lease", cost.usage.as_ref());
            // What was streamed was delivered; another instance ended it as failed.
            record_answer(&inner, &session, &message_id, said, StreamStatus::Failed).await;
            inner.forget_local(&session, &message_id);
            progress.report(&inner, &session, &message_id, "lost_lease");
            return;
        }
        Ending::Done(outcome) => outcome,
    };
    let cost = inner.metering.settle(&said.owner, tally).await;
    super::traces::answered(&traced, outcome_label(&outcome), cost.usage.as_ref());
    keep_answer(&inner, &session, &message_id, said, outcome, &mut progress).await;
    let end = generation.end_with(outcome, Some(cost));
    // The lease goes before the stream-end is published, so a chat sent in
    // reply to that stream-end is never refused as "in progress".
    let logged = log_end(&inner, &session, &message_id, end, &cancel).await;
    if let Err(e) = inner.registry.finish(&session, &message_id).await {
        tracing::warn!(error = %ErrorChain(&e), "could not release the generation lease");
    }
    inner.forget_local(&session, &message_id);
    if let Some(logged) = logged {
        inner.publish(&session, &logged).await;
    }
    progress.report(&inner, &session, &message_id, outcome_label(&outcome));
}

/// The texts the AI is sent for `request` (history, then the query), kept
/// for counting the answer should its upstream not say what it cost.
fn prompt_of(request: &AiRequest) -> Vec<String> {
    request
        .history
        .iter()
        .map(|m| m.content.clone())
        .chain(std::iter::once(request.query.clone()))
        .collect()
}

/// Logs the answer's end. A store that refuses it (it went away) is asked
/// again until it is back, so the log ends the answer as its tabs were told
/// (their subscriptions were cut, and they resume from the log): each try
/// first renews the lease, and gives up when the lease is no longer this
/// generation's (another instance ended it, or the store came back empty).
/// Gives up too on a stop, on shutdown, or after [`END_RETRY_FOR`].
async fn log_end(
    inner: &ConversationCore,
    session: &SessionId,
    message_id: &MessageId,
    end: Vec<ConversationEvent>,
    cancel: &CancellationToken,
) -> Option<Vec<super::ports::SharedEvent>> {
    if let Some(logged) = inner.append(session, end.clone()).await {
        return Some(logged);
    }
    tracing::warn!(%message_id, "the answer's end is not logged; retrying until the store is back");
    let deadline = Instant::now() + END_RETRY_FOR;
    let mut pause = END_RETRY_FIRST;
    while Instant::now() < deadline {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = inner.shut_down.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(END_RETRY_MAX);
        match inner
            .registry
            .renew(session, message_id, inner.settings.lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%message_id, "the store is back without this answer's lease; its end is not logged here");
                return None;
            }
            Err(_) => continue,
        }
        let at = Utc::now();
        let stamped = end.iter().cloned().map(|e| (at, e)).collect();
        if let Ok(logged) = inner.log.append(session, stamped).await {
            tracing::info!(%message_id, "logged the answer's end after the store came back");
            return Some(logged);
        }
    }
    tracing::error!(%message_id, "gave up logging the answer's end; a reaper ends it when its lease lapses");
    None
}

/// Streams tokens until the answer ends, is stopped, loses its audience or
/// its lease.
async fn stream_answer(
    inner: &Arc<ConversationCore>,
    session: &SessionId,
    generation: &mut Generation,
    request: AiRequest,
    cancel: &CancellationToken,
    slot: Option<&Slot>,
    progress: &mut Progress,
) -> Ending {
    let message_id = &generation.message_id().clone();
    let relay = inner.settings.answers.relay;
    let mut stream: TokenStream = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ending::Done(Ok(StreamStatus::Cancelled)),
        started = inner.ai.stream(request) => match started {
            Ok(stream) => stream,
            Err(e) => {
                progress.upstream_failed(&e);
                return Ending::Done(Err(failed(e, message_id)));
            }
        },
    };
    // Housekeeping (lease renewal, the unattended check) shares one timer, and
    // the stop signal is one pinned future: this loop runs once per token, and
    // re-creating or re-polling more of them per token showed in profiles.
    let renew_every = inner.settings.lease / 3;
    let mut next_renew = Instant::now() + renew_every;
    let mut next_watch = Instant::now() + WATCH_CHECK;
    let housekeeping = tokio::time::sleep_until(next_renew.min(next_watch));
    tokio::pin!(housekeeping);
    let stopped = cancel.cancelled();
    tokio::pin!(stopped);
    let mut unwatched_since: Option<Instant> = None;
    // Tokens go to the log (and live watchers) one batch at a time: while a
    // batch is on its way, the next deltas gather here and leave together
    // when it lands, so a store slower than the upstream costs one round
    // trip per batch, not one per token; a quiet answer's token leaves at once.
    let mut batch = Batch::default();
    let in_flight = nothing_like(|| deliver(inner, session, Vec::new()));
    tokio::pin!(in_flight);
    let mut finished: Option<Result<StreamStatus, GenerationFailure>> = None;
    let ending = loop {
        tokio::select! {
            biased;
            () = &mut stopped => break Ending::Done(Ok(StreamStatus::Cancelled)),
            () = &mut housekeeping => {
                let now = Instant::now();
                if now >= next_renew {
                    if !inner.renew(session, message_id).await {
                        break Ending::LostLease;
                    }
                    if let Some(slot) = slot {
                        inner.limits.renew(slot).await;
                    }
                    next_renew = now + renew_every;
                }
                if now >= next_watch {
                    if inner.unattended_for_too_long(session, &mut unwatched_since).await {
                        tracing::info!(session_id = %session, %message_id, "nobody watched the answer; cancelling it");
                        break Ending::Done(Ok(StreamStatus::Cancelled));
                    }
                    next_watch = now + WATCH_CHECK;
                }
                housekeeping.as_mut().reset(next_renew.min(next_watch));
            }
            delivered = &mut in_flight, if !in_flight.is_terminated() => {
                if !delivered {
                    break Ending::Done(Err(GenerationFailure::SessionStoreUnavailable));
                }
                batch.landed();
                // Publishing never waits, so nothing else would make this task
                // yield between buffered deltas: take part in tokio's
                // cooperative budget, so the writers that carry these tokens
                // get their turn.
                tokio::task::consume_budget().await;
                if let Some(events) = batch.take(progress.reply.len()) {
                    in_flight.set(deliver(inner, session, events).fuse());
                } else if let Some(outcome) = finished.take() {
                    break Ending::Done(outcome);
                }
            }
            item = stream.next(), if finished.is_none() && batch.has_room() => {
                match item {
                    Some(Ok(delta)) => progress.delta(delta, generation, relay, &mut batch),
                    Some(Err(e)) => {
                        progress.upstream_failed(&e);
                        finished = Some(Err(failed(e, message_id)));
                    }
                    None => finished = Some(Ok(StreamStatus::Completed)),
                }
                if in_flight.is_terminated() {
                    match batch.take(progress.reply.len()) {
                        Some(events) => in_flight.set(deliver(inner, session, events).fuse()),
                        None => if let Some(outcome) = finished.take() {
                            break Ending::Done(outcome);
                        },
                    }
                }
            }
        }
    };
    // What is still on its way settles first, so the reply holds exactly
    // what was delivered; what never left is not part of the answer.
    if !in_flight.is_terminated() && in_flight.as_mut().await {
        batch.landed();
    }
    progress.reply.truncate(batch.delivered);
    ending
}

/// Most token events gathered while a batch is on its way; beyond this the
/// upstream is not read until the batch lands (memory stays bounded).
const MAX_BATCH_EVENTS: usize = 256;

/// The tokens gathered for the next trip to the log, and how much of the
/// reply text has been delivered.
#[derive(Default)]
struct Batch {
    /// Gathered in the list the log is handed (with room for the time each
    /// is stamped with when the batch leaves): one list per batch, not
    /// one per delta and another for the stamps.
    events: Vec<(DateTime<Utc>, ConversationEvent)>,
    /// The reply's length once the batch on its way lands.
    sending: usize,
    /// The reply's length that the log holds.
    delivered: usize,
}

impl Batch {
    fn has_room(&self) -> bool {
        self.events.len() < MAX_BATCH_EVENTS
    }

    fn add(&mut self, events: impl IntoIterator<Item = ConversationEvent>) {
        // Stamped for real in `take`.
        let unstamped = DateTime::<Utc>::UNIX_EPOCH;
        self.events
            .extend(events.into_iter().map(|event| (unstamped, event)));
    }

    /// The events to send now, if any, stamped with the time they leave (as
    /// every append is); `reply_len` is the reply's length once they land.
    fn take(&mut self, reply_len: usize) -> Option<Vec<(DateTime<Utc>, ConversationEvent)>> {
        if self.events.is_empty() {
            return None;
        }
        self.sending = reply_len;
        let now = Utc::now();
        for (at, _) in &mut self.events {
            *at = now;
        }
        Some(std::mem::take(&mut self.events))
    }

    fn landed(&mut self) {
        self.delivered = self.sending;
    }
}

/// A finished future of the type `make` would return (never called): the
/// slot a batch on its way is kept in, with no allocation per batch.
fn nothing_like<F: std::future::Future>(_make: impl FnOnce() -> F) -> Fuse<F> {
    Fuse::terminated()
}

/// Logs a batch of tokens and publishes it (one trip to the store where it
/// is also the live transport); false when the log refused it.
async fn deliver(
    inner: &ConversationCore,
    session: &SessionId,
    events: Vec<(DateTime<Utc>, ConversationEvent)>,
) -> bool {
    match inner.log_and_publish_stamped(session, events).await {
        Ok(_) => true,
        Err(e) => {
            inner.count_failure(&e);
            tracing::error!(session_id = %session, error = %ErrorChain(&e), "could not append to the event log");
            false
        }
    }
}

/// Keeps the answer wherever it belongs before its stream-end is logged (so
/// whoever sees the end can read it back): the transcript always, the
/// session's history (what the AI sees next) only when it completed.
async fn keep_answer(
    inner: &ConversationCore,
    session: &SessionId,
    message_id: &MessageId,
    said: Said,
    outcome: Result<StreamStatus, GenerationFailure>,
    progress: &mut Progress,
) {
    let completed = outcome == Ok(StreamStatus::Completed);
    let reply = completed.then(|| said.reply.clone());
    let ending = outcome.unwrap_or(StreamStatus::Failed);
    record_answer(inner, session, message_id, said, ending).await;
    if let Some(reply) = reply {
        if progress.upstream == "none" {
            // A complete but empty answer.
            progress.upstream = "ok";
        }
        store_reply(inner, session, message_id, reply).await;
    }
}

/// What an answer said, for its transcript entry.
struct Said {
    owner: crate::domain::UserId,
    seq: Seq,
    reply: String,
}

/// Keeps the answer in the transcript, honestly: a completed one whole, a
/// stopped or failed one with what had been delivered (nothing at all when
/// nothing had been).
async fn record_answer(
    inner: &ConversationCore,
    session: &SessionId,
    message_id: &MessageId,
    said: Said,
    ending: StreamStatus,
) {
    if ending != StreamStatus::Completed && said.reply.is_empty() {
        return;
    }
    inner
        .record(TranscriptEntry::new(
            session.clone(),
            said.owner,
            message_id.clone(),
            Speaker::Assistant { ending },
            said.reply,
            said.seq,
            Utc::now(),
        ))
        .await;
}

/// Only a completed answer joins the history the AI sees next time.
async fn store_reply(
    inner: &ConversationCore,
    session: &SessionId,
    message_id: &MessageId,
    reply: String,
) {
    let message = ChatMessage {
        role: Role::Assistant,
        content: reply,
        timestamp: Utc::now(),
        message_id: Some(message_id.clone()),
    };
    if let Err(e) = inner.sessions.append(session, message).await {
        inner.stats.store_error("sessions");
        tracing::warn!(error = %ErrorChain(&e), "could not store the answer in the session");
    }
}

/// Logs why the AI failed (the client only sees the code) and classifies it.
fn failed(e: AiError, message_id: &crate::domain::MessageId) -> GenerationFailure {
    let e = ChatError::from(e);
    tracing::warn!(%message_id, error = %ErrorChain(&e), "generation failed");
    failure_of(&e)
}

/// How the conversation records a failed generation.
pub(super) fn failure_of(e: &ChatError) -> GenerationFailure {
    match e {
        ChatError::Ai(AiError::Timeout(_)) => GenerationFailure::AiTimeout,
        ChatError::Ai(AiError::Protocol(_)) => GenerationFailure::AiStreamError,
        ChatError::Ai(
            e @ (AiError::Unavailable(_)
            | AiError::Status { .. }
            | AiError::Rejected(_)
            | AiError::CircuitOpen),
        ) => GenerationFailure::AiUnavailable {
            retryable: e.retryable(),
        },
        ChatError::SessionGone => GenerationFailure::SessionExpired,
        ChatError::SessionStore(_) | ChatError::Conversation(_) | ChatError::Transcripts(_) => {
            GenerationFailure::SessionStoreUnavailable
        }
    }
}

/// Ends, on behalf of its vanished owner, a generation whose lease expired:
/// what the log holds of its answer goes into the transcript first (as a
/// failed answer keeps what was delivered), then the log records its end.
pub(super) async fn end_abandoned(inner: &ConversationCore, gone: &AbandonedGeneration) {
    let (session, message_id) = (&gone.session, &gone.message_id);
    if let Some((seq, reply)) = delivered(inner, session, message_id).await {
        match inner.owner_of(session).await {
            Ok(Some(owner)) => {
                let said = Said { owner, seq, reply };
                record_answer(inner, session, message_id, said, StreamStatus::Failed).await;
            }
            Ok(None) => {}
            Err(e) => {
                inner.count_failure(&e);
                tracing::warn!(session_id = %session, %message_id, error = %ErrorChain(&e), "could not tell whose abandoned answer this is");
            }
        }
    }
    if let Some(logged) = inner.append(session, interrupted(message_id)).await {
        inner.publish(session, &logged).await;
    }
}

/// Events read from the log at a time while looking for an answer's tokens.
const LOG_PAGE: usize = 500;

/// The seq of the answer's `stream-start` and its tokens, as the log holds
/// them; `None` when the log no longer holds its start (trimmed, or erased),
/// already holds its end, or cannot be read. The log is bounded by
/// `EVENT_LOG_LIMIT`, so this reads at most that many events twice over.
async fn delivered(
    inner: &ConversationCore,
    session: &SessionId,
    message_id: &MessageId,
) -> Option<(Seq, String)> {
    let mut after: Seq = 0;
    let mut start = None;
    let mut reply = String::new();
    loop {
        let slice = match inner.log.read_after(session, after, LOG_PAGE).await {
            Ok(slice) => slice,
            Err(e) => {
                let e = ChatError::from(e);
                inner.count_failure(&e);
                tracing::warn!(session_id = %session, %message_id, error = %ErrorChain(&e), "could not read the abandoned answer back from the log");
                return None;
            }
        };
        for logged in &slice.events {
            match &logged.event {
                ConversationEvent::StreamStart { message_id: m, .. } if m == message_id => {
                    start = Some(logged.seq);
                }
                ConversationEvent::StreamToken {
                    message_id: m,
                    token,
                } if m == message_id => {
                    reply.push_str(token);
                }
                ConversationEvent::StreamEnd { message_id: m, .. } if m == message_id => {
                    return None;
                }
                _ => {}
            }
        }
        match slice.events.last() {
            Some(last) if last.seq < slice.head => after = last.seq,
            _ => return start.map(|seq| (seq, reply)),
        }
    }
}

/// The events that end a generation whose owner vanished.
pub(super) fn interrupted(message_id: &crate::domain::MessageId) -> Vec<ConversationEvent> {
    vec![
        ConversationEvent::GenerationFailed {
            message_id: message_id.clone(),
            failure: GenerationFailure::Interrupted,
        },
        ConversationEvent::StreamEnd {
            message_id: message_id.clone(),
            status: StreamStatus::Failed,
            cost: None,
        },
    ]
}

/// Cancels local generations that another instance was asked to stop, until
/// `stop`.
pub(super) async fn listen_for_stops(core: Arc<ConversationCore>, stop: CancellationToken) {
    let mut stops = core.registry.stop_requests();
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => return,
            request = stops.next() => request,
        };
        let Some((session, message_id)) = request else {
            return;
        };
        core.cancel_local(&session, Some(&message_id));
    }
}

/// Ends, on behalf of a vanished owner, every generation whose lease
/// expired, until `stop`.
pub(super) async fn reap_abandoned(core: Arc<ConversationCore>, stop: CancellationToken) {
    let mut tick = tokio::time::interval((core.settings.lease / 2).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let abandoned = match core.registry.reap_expired().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not look for abandoned generations");
                continue;
            }
        };
        for gone in abandoned {
            tracing::warn!(session_id = %gone.session, message_id = %gone.message_id, "generation's owner vanished; ending it");
            end_abandoned(&core, &gone).await;
        }
    }
}
