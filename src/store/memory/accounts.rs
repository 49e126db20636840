//! The account-side traits over [`MemoryStore`]'s maps.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{MemoryStore, lock};
use crate::model::{RoomName, Username, name_skeletons};
use crate::store::{ReadMarkerStore, SessionRecord, SessionStore, StoreError, SubscriptionStore, UserRecord, UserStore};

/// The oldest account whose name shares a skeleton with `name`.
fn look_alike<'a>(users: &'a [UserRecord], name: &str) -> Option<&'a UserRecord> {
    let wanted = name_skeletons(name);
    users.iter().find(|user| name_skeletons(&user.username).iter().any(|k| wanted.contains(k)))
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let mut users = lock(&self.users);
        let same_name = users.iter().any(|u| u.username.to_lowercase() == user.username.to_lowercase());
        if same_name || look_alike(&users, &user.username).is_some() {
            return Err(StoreError::NameTaken(user.username));
        }
        users.push(user);
        Ok(())
    }

    async fn find_user(&self, user_key: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(lock(&self.users).iter().find(|u| u.username.to_lowercase() == user_key).cloned())
    }

    async fn find_look_alike(&self, user: &Username) -> Result<Option<UserRecord>, StoreError> {
        Ok(look_alike(&lock(&self.users), user.as_str()).cloned())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        lock(&self.sessions).insert(session.id_hash.clone(), session);
        Ok(())
    }

    async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(lock(&self.sessions).get(id_hash).cloned())
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(lock(&self.sessions).values().cloned().collect())
    }

    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), StoreError> {
        let mut sessions = lock(&self.sessions);
        for (id_hash, at_ms) in seen {
            if let Some(session) = sessions.get_mut(&id_hash) {
                session.last_seen_ms = session.last_seen_ms.max(at_ms);
            }
        }
        Ok(())
    }

    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError> {
        let mut sessions = lock(&self.sessions);
        for id_hash in id_hashes {
            sessions.remove(&id_hash);
        }
        Ok(())
    }
}

#[async_trait]
impl SubscriptionStore for MemoryStore {
    async fn subscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        lock(&self.subscriptions).entry(subscriber.to_string()).or_default().insert(room.to_string());
        Ok(())
    }

    async fn subscriptions(&self, subscriber: &str) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.subscriptions).get(subscriber).map(|rooms| rooms.iter().cloned().collect()).unwrap_or_default())
    }

    async fn unsubscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        if let Some(rooms) = lock(&self.subscriptions).get_mut(subscriber) {
            rooms.remove(room.as_str());
        }
        Ok(())
    }

    async fn clear_subscriptions(&self, subscriber: &str) -> Result<(), StoreError> {
        lock(&self.subscriptions).remove(subscriber);
        Ok(())
    }
}

#[async_trait]
impl ReadMarkerStore for MemoryStore {
    async fn read_marker(&self, subscriber: &str, room: &RoomName) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.read_markers).get(subscriber).and_then(|rooms| rooms.get(room.as_str()).copied()))
    }

    async fn markers(&self, subscriber: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(lock(&self.read_markers).get(subscriber).cloned().unwrap_or_default())
    }

    async fn advance_marker(&self, subscriber: &str, room: &RoomName, id: u64) -> Result<bool, StoreError> {
        let mut markers = lock(&self.read_markers);
        let rooms = markers.entry(subscriber.to_string()).or_default();
        let moves = rooms.get(room.as_str()).is_none_or(|&at| at < id);
        if moves {
            rooms.insert(room.to_string(), id);
        }
        Ok(moves)
    }

    async fn clear_markers(&self, subscriber: &str) -> Result<(), StoreError> {
        lock(&self.read_markers).remove(subscriber);
        Ok(())
    }
}
