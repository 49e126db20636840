//! The in-memory reference backend: every storage trait, kept in plain
//! maps behind locks, and nothing kept past the process.
//!
//! It is the executable spec: each method does what its trait's doc says
//! in the most direct way (scans, not indexes), and `tests/store_contract.rs`
//! runs the same cases against it and every other backend. Where a backend
//! and this one disagree, the trait doc decides; if the doc is silent, the
//! doc is fixed. It also serves tests that want a server without a data
//! directory.
//!
//! No lock is held across an `.await`: every method takes its lock, does
//! its work and returns.

mod accounts;
mod messages;
mod search;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::model::{DEFAULT_ROOM, StoredEvent};
use crate::store::{RoomAccess, SessionRecord, UserRecord};

/// Every store, in memory. A new one holds the default room, like a new
/// data directory.
pub struct MemoryStore {
    /// in creation order (the oldest look-alike wins)
    users: Mutex<Vec<UserRecord>>,
    /// id hash → session
    sessions: Mutex<HashMap<String, SessionRecord>>,
    /// subscriber → rooms
    subscriptions: Mutex<HashMap<String, BTreeSet<String>>>,
    /// subscriber → room → last read id
    read_markers: Mutex<HashMap<String, BTreeMap<String, u64>>>,
    /// room name → its messages, oldest first
    rooms: Mutex<BTreeMap<String, Vec<StoredEvent>>>,
    /// room name → who may read it, for private rooms (the others are public)
    private_rooms: Mutex<BTreeMap<String, RoomAccess>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            users: Mutex::default(),
            sessions: Mutex::default(),
            subscriptions: Mutex::default(),
            read_markers: Mutex::default(),
            rooms: Mutex::new(BTreeMap::from([(DEFAULT_ROOM.to_string(), Vec::new())])),
            private_rooms: Mutex::default(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks one of the maps (a panic while it was held is a bug: go on).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
