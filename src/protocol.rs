//! The WebSocket protocol: every frame is a JSON object tagged by `type`.
//! See docs/PROTOCOL.md for the prose version; the serde shapes here are the
//! source of truth.

use serde::{Deserialize, Serialize};

use crate::error::ChatError;
use crate::model::{EventKind, Message, ReactionCount, StoredEvent};

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientEvent {
    /// Start receiving a room. `after`: resume after this seq (the last
    /// message id or event seq the client saw).
    Join { room: String, after: Option<u64> },
    /// Stop receiving a room.
    Leave { room: String },
    /// Post a message. `client_id` makes retries safe; `thread`: the id of
    /// the message this one replies to.
    Send {
        room: String,
        text: String,
        client_id: String,
        #[serde(default)]
        thread: Option<u64>,
    },
    /// "I am typing" (sent to the others in the room).
    Typing { room: String },
    /// Change the text of one's own message.
    Edit { room: String, id: u64, text: String },
    /// Delete one's own message.
    Delete { room: String, id: u64 },
    /// "I have read up to message `id`" (moves the marker forward only).
    Read { room: String, id: u64 },
    /// Toggle one's `emoji` on message `id`.
    React { room: String, id: u64, emoji: String },
}

impl ClientEvent {
    /// Reads a client's text frame (the only decoder of client frames);
    /// what cannot be read is `InvalidJson`, saying why.
    pub fn decode(frame: &str) -> Result<Self, ChatError> {
        serde_json::from_str(frame).map_err(|e| ChatError::InvalidJson(format!("could not read that frame: {e}")))
    }
}

/// A frame to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Answer to `join`: the history to show and who is online.
    /// `has_more`: resuming found more messages than one frame carries; fetch
    /// the rest with `GET /api/rooms/{room}/messages?after=`.
    /// `seq`: the room's position the client is now at (live events
    /// follow from there).
    /// `read`: the user's read marker in the room (0: none).
    Joined { room: String, history: Vec<HistoryItem>, online: Vec<String>, has_more: bool, seq: u64, read: u64 },
    /// Answer to `leave`.
    Left { room: String },
    /// A stored message (also the sender's acknowledgement).
    Message(Message),
    /// A message got new text (`text` absent once it is deleted).
    Edited {
        room: String,
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        edited_at: String,
        seq: u64,
    },
    /// A message was deleted.
    Deleted { room: String, id: u64, seq: u64 },
    /// `user` added (`added`) or took back their `emoji` on message `id`;
    /// `reactions`: the message's counts right after.
    Reacted { room: String, id: u64, user: String, emoji: String, added: bool, reactions: Vec<ReactionCount>, seq: u64 },
    /// `user` was added to (`added`) or removed from a private room by
    /// `by`. A removed member's sockets get it last: the room is left.
    Member { room: String, user: String, by: String, added: bool, seq: u64 },
    /// A message concerns the user (`reason`: `mention` for `@name`, `here`
    /// for `@here`, `dm` in a direct message, `thread` for a reply in a
    /// thread they took part in); sent to all of their sockets. `thread`:
    /// the parent, when the message is a reply.
    Mention {
        room: String,
        id: u64,
        user: String,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread: Option<u64>,
        reason: String,
    },
    /// The user's read marker moved (sent to the user's other sockets).
    Read { room: String, id: u64 },
    /// Someone came online in / left a room.
    Presence { room: String, user: String, online: bool },
    /// Someone is typing in a room.
    Typing { room: String, user: String },
    /// Something the client sent could not be done.
    Error {
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
}

/// One item of `joined.history`: a message object, or — when resuming with
/// `after` — an `edited`/`deleted` object exactly like the live frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HistoryItem {
    Message(Message),
    Change(ServerEvent),
}

impl HistoryItem {
    /// A stored event as a history item: posts as message objects.
    pub fn from_stored(event: StoredEvent) -> Self {
        match event.kind {
            EventKind::Post(message) => HistoryItem::Message(message),
            _ => HistoryItem::Change(ServerEvent::from_stored(event)),
        }
    }
}

impl ServerEvent {
    /// The live frame for a stored event.
    pub fn from_stored(event: StoredEvent) -> Self {
        match event.kind {
            EventKind::Post(message) => ServerEvent::Message(message),
            EventKind::Edit { id, text, ts, .. } => ServerEvent::Edited { room: event.room, id, text, edited_at: ts, seq: event.seq },
            EventKind::Delete { id, .. } => ServerEvent::Deleted { room: event.room, id, seq: event.seq },
            EventKind::React { id, user, emoji, added, reactions, .. } => {
                ServerEvent::Reacted { room: event.room, id, user, emoji, added, reactions, seq: event.seq }
            }
            EventKind::Member { user, by, added, .. } => ServerEvent::Member { room: event.room, user, by, added, seq: event.seq },
        }
    }

    pub fn error(err: &ChatError) -> Self {
        Self::Error { code: err.code().into(), message: err.client_message(), client_id: None, room: None }
    }

    pub fn error_for(err: &ChatError, room: Option<&str>, client_id: Option<&str>) -> Self {
        Self::Error {
            code: err.code().into(),
            message: err.client_message(),
            client_id: client_id.map(str::to_string),
            room: room.map(str::to_string),
        }
    }

    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_events_are_flat() {
        let m = Message {
            id: 7,
            room: "general".into(),
            user: "ann".into(),
            text: "hi".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            client_id: "c1".into(),
            ..Message::default()
        };
        let v: serde_json::Value = serde_json::from_str(&ServerEvent::Message(m).to_json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["id"], 7);
        assert_eq!(v["client_id"], "c1");
    }

    #[test]
    fn client_events_parse_and_reject_unknown_types() {
        let e: ClientEvent = serde_json::from_str(r#"{"type":"join","room":"general","after":3}"#).unwrap();
        assert_eq!(e, ClientEvent::Join { room: "general".into(), after: Some(3) });
        assert!(serde_json::from_str::<ClientEvent>(r#"{"type":"nuke"}"#).is_err());
        assert!(serde_json::from_str::<ClientEvent>(r#"{"type":"send","room":"g"}"#).is_err());
    }
}
