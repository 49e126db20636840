//! The account-side contracts, one trait per concern: who has an account
//! ([`UserStore`]), which sessions are live ([`SessionStore`]), who follows
//! which rooms ([`SubscriptionStore`]) and how far each has read
//! ([`ReadMarkerStore`]).
//!
//! Every backend keeps all four, and `tests/store_contract.rs` holds each
//! to the same cases. What every method promises, beyond its own doc:
//! - a method that returns `Ok` has done it: a change is durable as far as
//!   the backend is (the JSON-lines one has written the record), and what
//!   a later call reads reflects it;
//! - a failure is a [`StoreError`] returned with its cause, never logged
//!   here (the caller that gives up logs it, once);
//! - a *subscriber* is an account (its lower-cased name) or a guest
//!   session (its 64-character id hash, which no name of at most 32
//!   characters can equal). Subscriptions and read markers are keyed by it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::{RoomName, Username};

/// A registered account as stored: the password only as an argon2id PHC
/// string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: String,
    pub created_at: String,
}

/// What is persisted about a session (never the raw id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user: String,
    pub guest: bool,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds.
    pub last_seen_ms: u64,
}

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new account, unless its name or one that looks like it (a
    /// shared [`Username::skeletons`] key, so also in any case) is already
    /// an account: then [`StoreError::NameTaken`]. The check and the write
    /// are one step, so two creators of look-alike names cannot both win.
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError>;
    /// The account whose lower-cased name is `user_key`.
    async fn find_user(&self, user_key: &str) -> Result<Option<UserRecord>, StoreError>;
    /// An account whose name is `user` or looks like it (shares one of its
    /// [`Username::skeletons`]): is the name taken? When several do (stored
    /// before names were compared so), the oldest.
    async fn find_look_alike(&self, user: &Username) -> Result<Option<UserRecord>, StoreError>;
}

/// Sessions, by the SHA-256 hash of their id only.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session (or replaces the one with its id hash).
    async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError>;
    /// The stored session with this id hash, expired or not (the caller
    /// judges its age), if it was not deleted. A session saved through any
    /// handle on the same data (another node) is found.
    async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Every stored session, in no particular order (expired ones too).
    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
    /// Records activity of sessions (id hash, unix ms), in one write. The
    /// stored `last_seen_ms` only moves forward; unknown hashes are skipped.
    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), StoreError>;
    /// Forgets these sessions; unknown hashes are skipped, so a repeat is
    /// harmless.
    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError>;
}

/// Which rooms each subscriber follows.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Subscribes `subscriber` to `room`; already subscribed is no change.
    async fn subscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError>;
    /// The rooms `subscriber` follows, alphabetically (none: empty).
    async fn subscriptions(&self, subscriber: &str) -> Result<Vec<String>, StoreError>;
    /// Unsubscribes `subscriber` from `room`; not subscribed is no change.
    async fn unsubscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError>;
    /// Forgets every subscription of `subscriber`.
    async fn clear_subscriptions(&self, subscriber: &str) -> Result<(), StoreError>;
}

/// How far each subscriber has read in each room: the id of the last
/// message it has seen. A marker is created by its first advance.
#[async_trait]
pub trait ReadMarkerStore: Send + Sync + 'static {
    /// The last message id `subscriber` has read in `room`, if any.
    async fn read_marker(&self, subscriber: &str, room: &RoomName) -> Result<Option<u64>, StoreError>;
    /// Every marker of `subscriber`: room name → last read id.
    async fn markers(&self, subscriber: &str) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Moves the marker of `subscriber` in `room` to `id` if that is past
    /// where it is (or there is none yet); whether it moved. A marker never
    /// moves back, so read receipts arriving out of order are harmless.
    async fn advance_marker(&self, subscriber: &str, room: &RoomName, id: u64) -> Result<bool, StoreError>;
    /// Forgets every marker of `subscriber`.
    async fn clear_markers(&self, subscriber: &str) -> Result<(), StoreError>;
}
