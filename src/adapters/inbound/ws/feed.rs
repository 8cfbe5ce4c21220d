//! Feeds a session's conversation to one socket: the replay first, then every
//! live event, each once and in `seq` order, as text frames for the writer.

use super::protocol::{event_json, quota_after, Reply};
use super::transport::{CloseReason, FeedFrame, FrameFeed};
use crate::application::{Attachment, Feed};
use crate::telemetry::ErrorChain;

/// A connection's attachment to its conversation, as frames.
pub struct ConversationFeed {
    attachment: Attachment,
    /// Once the feed must close, every later call says so again without
    /// asking the attachment, whose live stream may have ended for good.
    ending: Option<CloseReason>,
    /// The `quota` message due right after the `stream-end` just sent
    /// (boxed text: two words, not three, in every idle socket).
    quota: Option<Box<str>>,
}

impl ConversationFeed {
    pub fn new(attachment: Attachment) -> Self {
        Self {
            attachment,
            ending: None,
            quota: None,
        }
    }

    /// The store stopped delivering: say so (for clients that ignore close
    /// codes), then close with 4503 on the next call.
    fn store_unavailable(&mut self) -> FeedFrame {
        self.ending = Some(CloseReason::StoreUnavailable);
        FeedFrame::Text(Reply::store_unavailable().to_json())
    }
}

impl FrameFeed for ConversationFeed {
    /// Cancel-safe because [`Attachment::next`] is, and nothing is awaited
    /// after it.
    async fn next_frame(&mut self) -> FeedFrame {
        if let Some(reason) = self.ending {
            return FeedFrame::Close(reason);
        }
        if let Some(quota) = self.quota.take() {
            return FeedFrame::Text(quota.into_string());
        }
        match self.attachment.next().await {
            Ok(Feed::Event(event)) => {
                self.quota = quota_after(&event).map(String::into_boxed_str);
                FeedFrame::Text(event_json(&event))
            }
            Ok(Feed::Typing { state }) => FeedFrame::Text(
                Reply::Typing {
                    state,
                    timestamp: super::protocol::now(),
                }
                .to_json(),
            ),
            Ok(Feed::FellBehind) => {
                tracing::info!("connection fell behind its conversation; closing it");
                self.ending = Some(CloseReason::FellBehind);
                FeedFrame::Close(CloseReason::FellBehind)
            }
            Ok(Feed::StoreUnavailable) => {
                // The store's adapter warned once; every socket saying so
                // again would only flood the log.
                tracing::info!("live delivery was cut; closing so the client resumes");
                self.store_unavailable()
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not read the event log");
                self.store_unavailable()
            }
        }
    }
}
