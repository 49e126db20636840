//! Threads and reactions: toggling a reaction, reading a thread page, and
//! telling a thread's participants of a new reply.
//!
//! The store keeps who reacted (users' keys); what a reader sees — whether
//! a reaction is theirs (`me`) — is decided here, per reader.

use std::collections::BTreeSet;

use serde::Serialize;

use super::mentions::Reason;
use super::{Actor, Chat};
use crate::error::ChatError;
use crate::model::{Message, NewEvent, RoomName, StoredEvent, validate_emoji};
use crate::store::{Appended, MAX_PAGE, RoomAccess};

/// A page of a thread, as one reader sees it:
/// `{"parent": Message, "replies": [Message…], "has_more": bool}`.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    pub parent: Message,
    pub replies: Vec<Message>,
    /// More replies follow the last one (ask again with `after` = its id).
    pub has_more: bool,
}

impl Chat {
    /// Toggles the actor's `emoji` on message `id`: added if it was not
    /// there, taken back if it was. The stored `react` event (every socket
    /// of the room gets it as a `reacted` frame).
    pub async fn react(&self, actor: &Actor, room: &str, id: u64, emoji: &str) -> Result<StoredEvent, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        let react = NewEvent::React { user: actor.session.user.clone(), id, emoji: validate_emoji(emoji)? };
        match self.hub.send_paced(&room, react, self.within_rate(actor)).await? {
            Appended::New(stored) => Ok(stored),
            Appended::Duplicate(_) => Err(ChatError::Internal("a reaction was answered as a repeated post".into())),
        }
    }

    /// Message `id` and up to `limit` of its replies after `after`, oldest
    /// first, as the actor sees them. `not_found` when there is no such
    /// message or it is a reply itself.
    pub async fn thread(&self, actor: &Actor, room: &str, id: u64, after: u64, limit: usize) -> Result<Thread, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let page = self.hub.thread(&room, id, after, limit + 1).await?;
        let reader = actor.session.user.key();
        let has_more = page.replies.len() > limit;
        let replies = page.replies.into_iter().take(limit).map(|m| m.seen_by(&reader)).collect();
        Ok(Thread { parent: page.parent.seen_by(&reader), replies, has_more })
    }

    /// Tells everyone taking part in the thread `reply` belongs to (the
    /// parent's author and the repliers) who may read the room and was not
    /// notified of it already (`notified`: the author, whom it mentions),
    /// of the new reply: a `mention` user event with `"reason":"thread"`,
    /// on every socket of theirs. Best effort: a failure to read the
    /// participants is logged, the reply stays stored.
    pub(super) async fn notify_thread(&self, room: &RoomName, access: &RoomAccess, reply: &Message, notified: &mut BTreeSet<String>) {
        let Some(parent) = reply.thread else { return };
        let participants = match self.hub.thread_participants(room, parent).await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(room = %room, parent, error = %err, "could not tell a thread of a reply");
                return;
            }
        };
        for key in participants {
            if access.admits(&key) && notified.insert(key.clone()) {
                self.notify(&key, room, reply, Reason::Thread);
            }
        }
    }
}
