//! [`MessageStore`] over [`MemoryStore`]'s rooms: each room a vector of its
//! events, oldest first, so the contract reads straight off it — the
//! executable spec the JSON-lines backend must agree with.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryStore, lock};
use crate::store::StoreError;
use crate::model::{EventKind, Message, NewEvent, ReactionSet, RoomName, StoredEvent, Username, now_rfc3339};
use crate::store::{Appended, DEDUP_WINDOW, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, ThreadPage, rank_rooms};

/// A room's messages as they are now, oldest first: latest text, replies
/// counted on their parent, reactions (deleted ones redacted).
pub(super) fn messages_now(events: &[StoredEvent]) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    let mut reactions: BTreeMap<u64, ReactionSet> = BTreeMap::new();
    // Ids only increase: a message is found by binary search.
    fn find(messages: &mut [Message], id: u64) -> Option<&mut Message> {
        messages.binary_search_by_key(&id, |m| m.id).ok().map(|at| &mut messages[at])
    }
    for event in events {
        match &event.kind {
            EventKind::Post(m) => {
                if let Some(parent) = m.thread.and_then(|p| find(&mut messages, p)) {
                    parent.reply_count += 1;
                    parent.last_reply_at = Some(m.ts.clone());
                }
                messages.push(m.clone());
            }
            EventKind::Edit { id, text: Some(text), ts, .. } => {
                if let Some(m) = find(&mut messages, *id) {
                    m.text = text.clone();
                    m.edited_at = Some(ts.clone());
                }
            }
            EventKind::Edit { .. } | EventKind::Member { .. } => {}
            EventKind::Delete { id, .. } => {
                if let Some(m) = find(&mut messages, *id) {
                    *m = m.redacted();
                }
                reactions.remove(id);
            }
            EventKind::React { id, user, emoji, added, .. } => {
                reactions.entry(*id).or_default().set(emoji, &user.to_lowercase(), event.seq, *added);
            }
        }
    }
    for m in messages.iter_mut().filter(|m| !m.deleted) {
        m.reactions = reactions.get(&m.id).map(ReactionSet::reactions).unwrap_or_default();
    }
    messages
}

/// Message `id` as it is now, if it is there and not deleted.
fn live(events: &[StoredEvent], id: u64) -> Option<Message> {
    messages_now(events).into_iter().find(|m| m.id == id && !m.deleted)
}

/// The reactions on message `id` now, as the store keeps them.
fn reaction_set(events: &[StoredEvent], id: u64) -> ReactionSet {
    let mut set = ReactionSet::default();
    for event in events.iter().filter(|e| e.message_id() == id) {
        match &event.kind {
            EventKind::React { user, emoji, added, .. } => {
                set.set(emoji, &user.to_lowercase(), event.seq, *added);
            }
            EventKind::Delete { .. } => set = ReactionSet::default(),
            _ => {}
        }
    }
    set
}

/// Message `parent` and its replies as they are now; `MessageNotFound`
/// when there is no such message or it is a reply.
fn thread_of(events: &[StoredEvent], parent: u64) -> Result<(Message, Vec<Message>), StoreError> {
    let messages = messages_now(events);
    let found = messages.iter().find(|m| m.id == parent && m.thread.is_none()).cloned().ok_or(StoreError::MessageNotFound(parent))?;
    let replies = messages.into_iter().filter(|m| m.thread == Some(parent)).collect();
    Ok((found, replies))
}

/// The post `user` (any case) made with `client_id`, as it is now: looked
/// for among the last [`DEDUP_WINDOW`] posts before `batch_start` and the
/// posts after it (the batch so far).
fn sent_before(events: &[StoredEvent], batch_start: usize, user: &Username, client_id: &str) -> Option<Message> {
    let before: Vec<&Message> = events[..batch_start].iter().filter_map(StoredEvent::as_post).collect();
    let window = before[before.len().saturating_sub(DEDUP_WINDOW)..].iter().copied();
    let batch = events[batch_start..].iter().filter_map(StoredEvent::as_post);
    let id = window.chain(batch).rfind(|m| m.client_id == client_id && m.user.to_lowercase() == user.key())?.id;
    messages_now(events).into_iter().find(|m| m.id == id)
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
    /// Runs `use_room` on the events of an existing room.
    fn with_room<T>(&self, room: &RoomName, use_room: impl FnOnce(&mut Vec<StoredEvent>) -> T) -> Result<T, StoreError> {
        let mut rooms = lock(&self.rooms);
        let events = rooms.get_mut(room.as_str()).ok_or_else(|| StoreError::RoomNotFound(room.to_string()))?;
        Ok(use_room(events))
    }
}

/// Checks one new event against the room and stores it: a post's repeat
/// is found among the last posts before the batch plus the batch so far;
/// a reply needs a live parent that is not a reply; an edit or delete
/// needs a live message by the same author, a reaction a live message.
fn append_one(events: &mut Vec<StoredEvent>, batch_start: usize, room: &RoomName, new: NewEvent, ts: &str) -> Result<Appended, StoreError> {
    let seq = events.last().map_or(1, |e| e.seq + 1);
    let kind = match new {
        NewEvent::Post { user, text, client_id, thread } => {
            if let Some(stored) = sent_before(events, batch_start, &user, &client_id) {
                return Ok(Appended::Duplicate(stored));
            }
            if let Some(parent) = thread {
                live(events, parent).filter(|m| m.thread.is_none()).ok_or(StoreError::MessageNotFound(parent))?;
            }
            let message = Message {
                id: seq,
                room: room.to_string(),
                user: user.to_string(),
                text,
                ts: ts.to_string(),
                client_id,
                thread,
                ..Message::default()
            };
            EventKind::Post(message)
        }
        NewEvent::Edit { user, id, text } => {
            check_author(events, id, &user)?;
            EventKind::Edit { id, user: user.to_string(), text: Some(text), ts: ts.to_string() }
        }
        NewEvent::Delete { user, id } => {
            check_author(events, id, &user)?;
            EventKind::Delete { id, user: user.to_string(), ts: ts.to_string() }
        }
        NewEvent::React { user, id, emoji } => {
            live(events, id).ok_or(StoreError::MessageNotFound(id))?;
            let mut set = reaction_set(events, id);
            let added = set.toggle(&emoji, &user.key(), seq);
            EventKind::React { id, user: user.to_string(), emoji, added, ts: ts.to_string(), reactions: set.counts() }
        }
        NewEvent::Member { by, member, added } => EventKind::Member { user: member.to_string(), by: by.to_string(), added, ts: ts.to_string() },
    };
    let event = StoredEvent { seq, room: room.to_string(), kind };
    events.push(event.clone());
    Ok(Appended::New(event))
}

/// `NotFound` unless message `id` is live; `Forbidden` unless `user` wrote it.
fn check_author(events: &[StoredEvent], id: u64, user: &Username) -> Result<(), StoreError> {
    let message = live(events, id).ok_or(StoreError::MessageNotFound(id))?;
    if message.user.to_lowercase() != user.key() {
        return Err(StoreError::NotAuthor);
    }
    Ok(())
}

/// The log as it is shown: a deleted message's text taken out of its post
/// and edits (they stay whole in memory, so a retry of its `client_id` is
/// still recognised).
fn shown(events: &[StoredEvent]) -> Vec<StoredEvent> {
    let deleted: Vec<u64> = events.iter().filter(|e| matches!(e.kind, EventKind::Delete { .. })).map(StoredEvent::message_id).collect();
    events
        .iter()
        .cloned()
        .map(|mut event| {
            if deleted.contains(&event.message_id()) {
                match &mut event.kind {
                    EventKind::Post(m) => *m = m.redacted(),
                    EventKind::Edit { text, .. } => *text = None,
                    EventKind::Delete { .. } | EventKind::React { .. } | EventKind::Member { .. } => {}
                }
            }
            event
        })
        .collect()
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn create_room(&self, room: &RoomName, _created_by: &str) -> Result<RoomInfo, StoreError> {
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(room.as_str()) {
            return Err(StoreError::RoomExists(room.to_string()));
        }
        rooms.insert(room.to_string(), Vec::new());
        Ok(RoomInfo::public(room.as_str()))
    }

    async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError> {
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(room.as_str()) {
            return Err(StoreError::RoomExists(room.to_string()));
        }
        let access = RoomAccess::new_private(creator, kind);
        rooms.insert(room.to_string(), Vec::new());
        let info = access.info(room.as_str());
        lock(&self.private_rooms).insert(room.to_string(), access);
        Ok(info)
    }

    async fn room_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError> {
        if !lock(&self.rooms).contains_key(room.as_str()) {
            return Ok(None);
        }
        Ok(Some(lock(&self.private_rooms).get(room.as_str()).cloned().unwrap_or_default()))
    }

    async fn set_member(&self, room: &RoomName, member: &Username, _by: &str, added: bool) -> Result<bool, StoreError> {
        let mut private = lock(&self.private_rooms);
        let access = private.get_mut(room.as_str()).ok_or_else(|| StoreError::RoomNotFound(room.to_string()))?;
        Ok(access.set_member(member, added))
    }

    async fn private_rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError> {
        let private = lock(&self.private_rooms);
        Ok(private.iter().filter(|(_, access)| access.admits(user_key)).map(|(name, access)| access.info(name)).collect())
    }

    async fn room_exists(&self, room: &RoomName) -> Result<bool, StoreError> {
        Ok(lock(&self.rooms).contains_key(room.as_str()))
    }

    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let private = lock(&self.private_rooms);
        let rooms = lock(&self.rooms);
        Ok(rank_rooms(rooms.keys().map(String::as_str).filter(|name| !private.contains_key(*name)), filter, limit))
    }

    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let ts = now_rfc3339();
        self.with_room(room, |events| {
            let batch_start = events.len();
            batch.into_iter().map(|new| append_one(events, batch_start, room, new, &ts)).collect()
        })
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        self.with_room(room, |events| sent_before(events, events.len(), user, client_id))
    }

    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.with_room(room, |events| slice(&messages_now(events), query))
    }

    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError> {
        let (parent, replies) = self.with_room(room, |events| thread_of(events, parent))??;
        let replies = replies.into_iter().filter(|m| m.id > after).take(limit).collect();
        Ok(ThreadPage { parent, replies })
    }

    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_room(room, |events| shown(events).into_iter().filter(|e| e.seq > after).take(limit).collect())
    }

    async fn last_seq(&self, room: &RoomName) -> Result<u64, StoreError> {
        self.with_room(room, |events| events.last().map_or(0, |e| e.seq))
    }

    /// Nothing to make durable.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing to close: every room stays in memory.
    async fn release_idle(&self, _idle: Duration) -> Result<usize, StoreError> {
        Ok(0)
    }
}
