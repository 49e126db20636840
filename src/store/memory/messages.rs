//! [`MessageStore`] over [`MemoryStore`]'s rooms: each room a vector of
//! its messages, oldest first, so the contract reads straight off it.

use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryStore, lock};
use crate::error::ChatError;
use crate::model::{Message, NewMessage, RoomName, Username, now_rfc3339};
use crate::store::{Appended, DEDUP_WINDOW, HistoryQuery, MessageStore, RoomInfo, rank_rooms};

/// The message `user` (any case) sent with `client_id` among `window`.
fn sent_in<'a>(window: &'a [Message], user: &Username, client_id: &str) -> Option<&'a Message> {
    window.iter().rev().find(|m| m.client_id == client_id && m.user.to_lowercase() == user.key())
}

/// The slice of `messages` (oldest first) that `query` asks for.
fn slice(messages: &[Message], query: HistoryQuery) -> Vec<Message> {
    let admitted: Vec<&Message> = messages.iter().filter(|m| query.admits(m.id)).collect();
    let kept = if query.after.is_some() {
        &admitted[..query.limit.min(admitted.len())]
    } else {
        &admitted[admitted.len().saturating_sub(query.limit)..]
    };
    kept.iter().map(|m| (*m).clone()).collect()
}

impl MemoryStore {
    /// Runs `use_room` on the messages of an existing room.
    fn with_room<T>(&self, room: &RoomName, use_room: impl FnOnce(&mut Vec<Message>) -> T) -> Result<T, ChatError> {
        let mut rooms = lock(&self.rooms);
        let messages = rooms.get_mut(room.as_str()).ok_or_else(|| ChatError::RoomNotFound(room.to_string()))?;
        Ok(use_room(messages))
    }
}

/// Appends one message to a room, or finds the copy already stored: the
/// window is the last [`DEDUP_WINDOW`] messages before the batch plus the
/// batch so far.
fn append_one(messages: &mut Vec<Message>, batch_start: usize, room: &RoomName, new: NewMessage, ts: &str) -> Appended {
    let window = &messages[batch_start.saturating_sub(DEDUP_WINDOW)..];
    if let Some(stored) = sent_in(window, &new.user, &new.client_id) {
        return Appended::Duplicate(stored.clone());
    }
    let message = Message {
        id: messages.last().map_or(1, |m| m.id + 1),
        room: room.to_string(),
        user: new.user.to_string(),
        text: new.text,
        ts: ts.to_string(),
        client_id: new.client_id,
    };
    messages.push(message.clone());
    Appended::New(message)
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn create_room(&self, room: &RoomName, _created_by: &str) -> Result<RoomInfo, ChatError> {
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(room.as_str()) {
            return Err(ChatError::RoomExists(room.to_string()));
        }
        rooms.insert(room.to_string(), Vec::new());
        Ok(RoomInfo { name: room.to_string() })
    }

    async fn room_exists(&self, room: &RoomName) -> Result<bool, ChatError> {
        Ok(lock(&self.rooms).contains_key(room.as_str()))
    }

    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, ChatError> {
        Ok(rank_rooms(lock(&self.rooms).keys().map(String::as_str), filter, limit))
    }

    async fn append(&self, room: &RoomName, batch: Vec<NewMessage>) -> Result<Vec<Appended>, ChatError> {
        let ts = now_rfc3339();
        self.with_room(room, |messages| {
            let batch_start = messages.len();
            batch.into_iter().map(|new| append_one(messages, batch_start, room, new, &ts)).collect()
        })
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, ChatError> {
        self.with_room(room, |messages| {
            let window = &messages[messages.len().saturating_sub(DEDUP_WINDOW)..];
            sent_in(window, user, client_id).cloned()
        })
    }

    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, ChatError> {
        self.with_room(room, |messages| slice(messages, query))
    }

    /// Nothing to make durable.
    async fn flush(&self) -> Result<(), ChatError> {
        Ok(())
    }

    /// Nothing to close: every room stays in memory.
    async fn release_idle(&self, _idle: Duration) -> Result<usize, ChatError> {
        Ok(0)
    }
}
