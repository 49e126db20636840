//! Storage: the only module that touches files and SQL.
//!
//! One trait per concern, each the contract every backend keeps:
//! [`MessageStore`] (rooms and messages, below; searching them, [`search`])
//! and the account side in
//! `accounts` ([`UserStore`], [`SessionStore`], [`SubscriptionStore`],
//! [`ReadMarkerStore`]); failures are a [`StoreError`]. The rest of the
//! server holds `Arc<dyn …>`s and never knows which backend is behind
//! them. The default backend, [`jsonl`], keeps human-readable JSON-lines
//! files (one per room); [`postgres`] keeps everything in one PostgreSQL
//! database that several nodes share; [`memory`] is the reference backend,
//! the contract in its plainest form. [`migrate`] copies a data directory
//! into PostgreSQL (`chatroom migrate`).
//!
//! The `MessageStore` contract, in words:
//! - `append` stores a batch of events *in order*, gives each the next `seq`
//!   of its room (seqs strictly increase; the store is the one authority
//!   for order) and returns only once the batch is written. Each item gets
//!   its own answer: a post whose `(user, client_id)` is already among the
//!   room's last [`DEDUP_WINDOW`] posts is not stored again (the stored one
//!   comes back as [`Appended::Duplicate`], across restarts too); an edit
//!   or delete of a message that does not exist (or is deleted) is
//!   `MessageNotFound`, of someone else's message `Forbidden`. A reply
//!   (`thread`) to a message that does not exist, is deleted or is a reply
//!   itself is `MessageNotFound`, and so is a reaction to a message that
//!   does not exist or is deleted; a reaction toggles (the store decides
//!   `added` from what it holds, the batch's earlier items included).
//! - `history` returns messages as they are now (edited text, deleted ones
//!   redacted), oldest first, never a partly written one, with each
//!   message's `reply_count`, `last_reply_at` and reactions (users' keys;
//!   `me` is the reader's, set by `chat`) as they are now; so do
//!   `find_sent` and `thread`. `events` returns the log itself, a deleted
//!   message's text taken out.
//! - Callers serialise appends per room (the hub does); reads may run
//!   concurrently with an append.

mod accounts;
mod error;
pub mod jsonl;
pub mod memory;
pub mod migrate;
pub mod postgres;
pub mod search;

pub use self::accounts::{ReadMarkerStore, SessionRecord, SessionStore, SubscriptionStore, UserRecord, UserStore};
pub use self::error::StoreError;
pub use self::search::{SearchPage, SearchQuery, SearchStore};


use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Message, NewEvent, RoomName, StoredEvent, Username};

/// How many of a room's latest messages are checked for a repeated
/// `client_id` (the protocol promises at least 1,000).
pub const DEDUP_WINDOW: usize = 1024;
/// Most messages one history request returns.
pub const MAX_PAGE: usize = 500;
/// Messages returned when no limit is given.
pub const DEFAULT_PAGE: usize = 50;

/// A room as listed by the API.
/// When a stored event reaches the disk before it is acknowledged
/// (`--fsync`; docs/RELIABILITY.md weighs the three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Synced by its own writer before it is acknowledged.
    Always,
    /// Synced before it is acknowledged, in rounds shared by the appends
    /// of a few milliseconds (group commit).
    Batch,
    /// Written to the operating system and acknowledged; synced when the
    /// operating system decides (survives a crash of the process, not
    /// of the machine).
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "never" => Ok(Self::Never),
            other => Err(format!("{other:?} is not one of always, batch, never")),
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::Never => "never",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// Only members may find, read or join it.
    #[serde(default)]
    pub private: bool,
    /// A direct message: a private room of two members that never change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dm: bool,
    /// A direct message's two members, as they spell their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

impl RoomInfo {
    /// A public room.
    pub fn public(name: impl Into<String>) -> Self {
        Self { name: name.into(), private: false, dm: false, members: Vec::new() }
    }
}

/// Who may read a room: everyone (public) or its members (private). A
/// room's privacy is fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomAccess {
    pub private: bool,
    /// A direct message (its members never change).
    pub dm: bool,
    pub created_by: String,
    /// A private room's members: lower-cased key → the name as spelled.
    pub members: BTreeMap<String, String>,
}

impl RoomAccess {
    /// Whether the user with this (lower-cased) key may read the room.
    pub fn admits(&self, user_key: &str) -> bool {
        !self.private || self.members.contains_key(user_key)
    }

    /// A new private room's access: its creator is a member (a direct
    /// message: both of its users).
    pub fn new_private(creator: &Username, kind: PrivateRoom<'_>) -> Self {
        let mut access = RoomAccess { private: true, dm: false, created_by: creator.to_string(), members: BTreeMap::new() };
        access.set_member(creator, true);
        if let PrivateRoom::Direct(other) = kind {
            access.dm = true;
            access.set_member(other, true);
        }
        access
    }

    /// Adds or removes a member; whether that changed anything.
    pub fn set_member(&mut self, member: &Username, added: bool) -> bool {
        if added {
            self.members.insert(member.key(), member.to_string()).is_none()
        } else {
            self.members.remove(&member.key()).is_some()
        }
    }

    /// The room as listed for a reader.
    pub fn info(&self, name: &str) -> RoomInfo {
        RoomInfo {
            name: name.to_string(),
            private: self.private,
            dm: self.dm,
            members: if self.dm { self.members.values().cloned().collect() } else { Vec::new() },
        }
    }
}

/// What kind of private room to create.
#[derive(Debug, Clone, Copy)]
pub enum PrivateRoom<'a> {
    /// A private room; its creator is its first member.
    Group,
    /// A direct message between the creator and this user.
    Direct(&'a Username),
}

/// Which slice of a room's history to read.
///
/// - `after` given: the first `limit` messages with `id > after`.
/// - otherwise: the last `limit` messages with `id < before` (or the latest
///   `limit` when `before` is absent).
///
/// Both bounds may be combined; results are always oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryQuery {
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub limit: usize,
}

impl HistoryQuery {
    pub fn latest(limit: usize) -> Self {
        Self { limit, ..Self::default() }
    }

    pub fn after(after: u64, limit: usize) -> Self {
        Self { after: Some(after), limit, ..Self::default() }
    }

    /// Whether `id` lies inside the query's bounds (ignoring the limit).
    pub fn admits(&self, id: u64) -> bool {
        self.after.is_none_or(|a| id > a) && self.before.is_none_or(|b| id < b)
    }
}

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with a fresh seq.
    New(StoredEvent),
    /// The same user already posted this `client_id`: the stored message,
    /// as it is now.
    Duplicate(Message),
}

/// A thread: its parent as it is now and a page of its replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPage {
    pub parent: Message,
    /// Oldest first (deleted ones as deleted messages).
    pub replies: Vec<Message>,
}

/// Most replies read to find a thread's participants.
const MAX_THREAD_READ: usize = 100_000;

/// The authors of a thread's parent and live replies, each once, in order.
fn participants(page: &ThreadPage) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for m in std::iter::once(&page.parent).chain(&page.replies).filter(|m| !m.deleted) {
        let key = m.user.to_lowercase();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Rooms and their messages (and searching them: [`SearchStore`], which
/// every message store is, since an index follows its store's writes).
#[async_trait]
pub trait MessageStore: SearchStore {
    /// Creates a room; `RoomExists` if it is already there.
    async fn create_room(&self, room: &RoomName, created_by: &str) -> Result<RoomInfo, StoreError>;
    /// Whether the room exists.
    async fn room_exists(&self, room: &RoomName) -> Result<bool, StoreError>;
    /// Creates a private room (or a direct message) whose first member is
    /// `creator` (a direct message: both); `RoomExists` if it is there.
    async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError>;
    /// Who may read the room; `None` when it does not exist.
    async fn room_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError>;
    /// Adds `member` to a private room (or removes them); whether that
    /// changed anything. Who may do it is the caller's rule.
    async fn set_member(&self, room: &RoomName, member: &Username, by: &str, added: bool) -> Result<bool, StoreError>;
    /// The private rooms and direct messages `user_key` is a member of, by
    /// name.
    async fn private_rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError>;
    /// Public rooms whose name contains `filter` (case-insensitive); exact
    /// match first, then prefix matches, then the rest, each
    /// alphabetically. Private rooms are never listed here.
    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, StoreError>;
    /// Stores a batch of events in order (see the module doc); one answer
    /// per item. `Err` only when the batch could not be written at all.
    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError>;
    /// The message `user` already stored with `client_id`, if it is among
    /// the room's last [`DEDUP_WINDOW`] messages (what `append` would answer
    /// as a duplicate).
    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError>;
    /// Reads a slice of history (messages as they are now), oldest first.
    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError>;
    /// Message `parent` as it is now, and up to `limit` of its replies with
    /// `id > after`, oldest first. `MessageNotFound` when there is no such
    /// message or it is a reply (a deleted parent is shown deleted).
    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError>;
    /// Who takes part in thread `parent` (lower-cased keys, each once): its
    /// author, then the authors of its replies that are not deleted, in the
    /// order of their first reply. `MessageNotFound` as for `thread`.
    async fn thread_participants(&self, room: &RoomName, parent: u64) -> Result<Vec<String>, StoreError> {
        let page = self.thread(room, parent, 0, MAX_THREAD_READ).await?;
        Ok(participants(&page))
    }
    /// Up to `limit` events with `seq > after`, in seq order (a deleted
    /// message's text taken out of its post and edits).
    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// The room's newest seq (0 when it has no events).
    async fn last_seq(&self, room: &RoomName) -> Result<u64, StoreError>;
    /// Makes everything written so far durable (called at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
    /// Closes rooms that no one has read or written for `idle` (their
    /// files and caches), after making them durable; how many. A closed
    /// room opens again on its next use.
    async fn release_idle(&self, idle: std::time::Duration) -> Result<usize, StoreError>;
    /// Whether the store can take writes now (a database answers a trivial
    /// query); `/healthz` asks. Files are always there: `Ok`.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Orders room names for a search: exact match, prefix matches, then other
/// matches, alphabetically within each group.
pub fn rank_rooms<'a>(names: impl Iterator<Item = &'a str>, filter: &str, limit: usize) -> Vec<RoomInfo> {
    let filter = filter.trim().to_lowercase();
    let mut hits: Vec<(u8, &str)> = names
        .filter(|n| n.contains(filter.as_str()))
        .map(|n| {
            let rank = if n == filter { 0 } else if n.starts_with(filter.as_str()) { 1 } else { 2 };
            (rank, n)
        })
        .collect();
    hits.sort_unstable();
    hits.into_iter().take(limit).map(|(_, n)| RoomInfo::public(n)).collect()
}
