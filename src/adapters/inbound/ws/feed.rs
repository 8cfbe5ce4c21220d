//! Feeds a session's conversation to one socket: the replay first, then every
//! live event, each once and in `seq` order, as text frames for the writer.

use super::protocol::event_json;
use super::transport::{CloseReason, FeedFrame, FrameFeed};
use crate::application::{Attachment, Feed};
use crate::telemetry::ErrorChain;

/// A connection's attachment to its conversation, as frames.
pub struct ConversationFeed(pub Attachment);

impl FrameFeed for ConversationFeed {
    /// Cancel-safe because [`Attachment::next`] is.
    async fn next_frame(&mut self) -> FeedFrame {
        match self.0.next().await {
            Ok(Feed::Event(event)) => FeedFrame::Text(event_json(&event)),
            Ok(Feed::FellBehind) => {
                tracing::info!("connection fell behind its conversation; closing it");
                FeedFrame::Close(CloseReason::FellBehind)
            }
            // The subscription ended under us: resuming from the log is the way back.
            Ok(Feed::Ended) => FeedFrame::Close(CloseReason::FellBehind),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not read the event log");
                FeedFrame::Close(CloseReason::FellBehind)
            }
        }
    }
}
