//! An agent's canned replies, kept in the user store: listed, added or
//! replaced by shortcut (at most [`MAX_REPLIES`] per agent), deleted.

use thiserror::Error;

use super::auth::AuthService;
use super::ports::SavedReply;
use crate::domain::canned::{CannedReply, Shortcut, MAX_REPLIES};
use crate::domain::UserId;

/// Why a reply was not saved or deleted.
#[derive(Debug, Error)]
pub enum ReplyRefusal {
    /// The agent already keeps [`MAX_REPLIES`].
    #[error("at most {MAX_REPLIES} canned replies per agent")]
    TooMany,
    /// No reply has that shortcut.
    #[error("no canned reply has that shortcut")]
    NotFound,
    /// The user store failed (logged and counted).
    #[error("the user store failed")]
    Failed,
}

impl AuthService {
    /// `agent`'s canned replies, by shortcut.
    ///
    /// # Errors
    /// [`ReplyRefusal::Failed`] when the user store fails.
    pub async fn replies(&self, agent: &UserId) -> Result<Vec<CannedReply>, ReplyRefusal> {
        self.users.replies(agent).await.map_err(|e| {
            self.store_failed("users", "could not list canned replies", &e);
            ReplyRefusal::Failed
        })
    }

    /// Adds `reply`, or replaces the one with its shortcut; `true` when added.
    ///
    /// # Errors
    /// [`ReplyRefusal::TooMany`] when the agent has [`MAX_REPLIES`] already.
    pub async fn save_reply(
        &self,
        agent: &UserId,
        reply: &CannedReply,
    ) -> Result<bool, ReplyRefusal> {
        match self.users.save_reply(agent, reply, MAX_REPLIES).await {
            Ok(SavedReply::Added) => Ok(true),
            Ok(SavedReply::Replaced) => Ok(false),
            Ok(SavedReply::Full) => Err(ReplyRefusal::TooMany),
            Err(e) => {
                self.store_failed("users", "could not save a canned reply", &e);
                Err(ReplyRefusal::Failed)
            }
        }
    }

    /// Deletes the reply with `shortcut`.
    ///
    /// # Errors
    /// [`ReplyRefusal::NotFound`] when there is none.
    pub async fn delete_reply(
        &self,
        agent: &UserId,
        shortcut: &Shortcut,
    ) -> Result<(), ReplyRefusal> {
        match self.users.delete_reply(agent, shortcut).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReplyRefusal::NotFound),
            Err(e) => {
                self.store_failed("users", "could not delete a canned reply", &e);
                Err(ReplyRefusal::Failed)
            }
        }
    }
}
