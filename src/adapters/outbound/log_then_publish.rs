//! The [`Backplane`] of any two ports where the log is not its own live
//! transport: append to the log, then publish what it stored. (The server's
//! in-memory stores have a backplane of their own, which calls them without
//! going through the ports.)

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::application::ports::{
    Backplane, ConversationStoreError, EventLog, LiveDelivery, Written,
};
use crate::domain::conversation::ConversationEvent;
use crate::domain::SessionId;

/// Two ports written one after the other; the publish waits for the append
/// because only the log assigns seqs.
pub struct LogThenPublish {
    log: Arc<dyn EventLog>,
    live: Arc<dyn LiveDelivery>,
}

impl LogThenPublish {
    pub fn new(log: Arc<dyn EventLog>, live: Arc<dyn LiveDelivery>) -> Self {
        Self { log, live }
    }
}

#[async_trait]
impl Backplane for LogThenPublish {
    async fn write(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Written, ConversationStoreError> {
        let events = self.log.append(session, events).await?;
        let unpublished = self.live.publish(session, &events).await.err();
        Ok(Written {
            events,
            unpublished,
        })
    }
}
