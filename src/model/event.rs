//! The room event log: every change to a room is an event with a per-room
//! `seq`, strictly increasing, assigned by the store when it appends. A
//! message's id is the `seq` of the event that posted it.
//!
//! Kinds: a message posted (a reply names its parent in `thread`), edited,
//! deleted, reacted to; a member added to or removed from a private room.
//! The log is the log, not a view: a post then its edit are two events;
//! only a deleted message's text is taken out of its post (and its edits),
//! everywhere.

use super::{Message, ReactionCount, Username};

/// One stored change to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub room: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A message was posted (as posted; `deleted` once it is deleted).
    Post(Message),
    /// Message `id` got new text (`None` once the message is deleted).
    Edit { id: u64, user: String, text: Option<String>, ts: String },
    /// Message `id` was deleted.
    Delete { id: u64, user: String, ts: String },
    /// `user` added (`added`) or took back their `emoji` on message `id`;
    /// `reactions`: the message's counts right after (what the `reacted`
    /// frame carries, stored with the event so the log replays it).
    React { id: u64, user: String, emoji: String, added: bool, ts: String, reactions: Vec<ReactionCount> },
    /// `user` was added to (`added`) or removed from the private room, by
    /// `by`. Not about a message: its message id is 0.
    Member { user: String, by: String, added: bool, ts: String },
}

impl StoredEvent {
    /// A message as the post event that made it (its seq is its id).
    pub fn post(message: Message) -> Self {
        StoredEvent { seq: message.id, room: message.room.clone(), kind: EventKind::Post(message) }
    }

    /// The id of the message this event is about.
    pub fn message_id(&self) -> u64 {
        match &self.kind {
            EventKind::Post(m) => m.id,
            EventKind::Edit { id, .. } | EventKind::Delete { id, .. } | EventKind::React { id, .. } => *id,
            EventKind::Member { .. } => 0,
        }
    }

    /// The parent of the message this event posts, if it posts a reply.
    pub fn thread(&self) -> Option<u64> {
        self.as_post().and_then(|m| m.thread)
    }

    /// The post's message, if this event is a post.
    pub fn as_post(&self) -> Option<&Message> {
        match &self.kind {
            EventKind::Post(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_post(&self) -> bool {
        matches!(self.kind, EventKind::Post(_))
    }
}

/// A change someone asks to make; the store checks it, gives it a `seq`
/// and a time.
#[derive(Debug, Clone)]
pub enum NewEvent {
    /// `thread`: the message it replies to (a live message that is not a
    /// reply itself; `MessageNotFound` otherwise).
    Post { user: Username, text: String, client_id: String, thread: Option<u64> },
    Edit { user: Username, id: u64, text: String },
    Delete { user: Username, id: u64 },
    /// Toggles `user`'s `emoji` on live message `id` (`MessageNotFound`
    /// otherwise): the store decides whether it is added or taken back.
    React { user: Username, id: u64, emoji: String },
    /// `by` added `member` to (or removed them from) the room; who may do
    /// it is checked before (`chat::members`).
    Member { by: Username, member: Username, added: bool },
}

impl NewEvent {
    pub fn user(&self) -> &Username {
        match self {
            NewEvent::Post { user, .. } | NewEvent::Edit { user, .. } | NewEvent::Delete { user, .. } | NewEvent::React { user, .. } => user,
            NewEvent::Member { by, .. } => by,
        }
    }
}
