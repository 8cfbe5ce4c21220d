//! Forwards a session's conversation to one socket: the replay first, then
//! every live event, each once and in `seq` order, until told to stop.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::event_json;
use super::transport::{CloseReason, Outbound};
use crate::application::{Attachment, Feed};
use crate::telemetry::ErrorChain;

/// Why a feed ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// Asked to stop (the connection is closing); whatever was already
    /// available was forwarded first.
    Stopped,
    /// The socket's writer is gone.
    WriterGone,
    /// The connection fell behind or lost its subscription: close it so the
    /// client resumes from the log.
    MustClose(CloseReason),
}

/// Runs until `stop` is cancelled or the feed can no longer keep its promise.
pub async fn forward(
    mut attachment: Attachment,
    out: mpsc::Sender<Outbound>,
    stop: CancellationToken,
) -> FeedEnd {
    loop {
        // Biased towards events: once asked to stop, what is already
        // available still goes out before the feed ends.
        let next = tokio::select! {
            biased;
            next = attachment.next() => next,
            _ = stop.cancelled() => return FeedEnd::Stopped,
        };
        let event = match next {
            Ok(Feed::Event(event)) => event,
            Ok(Feed::FellBehind) => {
                tracing::info!("connection fell behind its conversation; closing it");
                return FeedEnd::MustClose(CloseReason::FellBehind);
            }
            Ok(Feed::Ended) => return FeedEnd::MustClose(CloseReason::FellBehind),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not read the event log");
                return FeedEnd::MustClose(CloseReason::FellBehind);
            }
        };
        if out
            .send(Outbound::Message(event_json(&event)))
            .await
            .is_err()
        {
            return FeedEnd::WriterGone;
        }
    }
}
