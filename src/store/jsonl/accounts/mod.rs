//! Accounts, sessions, subscriptions and read markers as JSON-lines files,
//! one [`Journal`] each:
//!
//! ```text
//! data/users.jsonl          {"username","password_hash","created_at"}  (argon2id PHC)
//! data/sessions.jsonl       {"op":"open",…} {"op":"seen",…} {"op":"end",…}  (id hashes only)
//! data/subscriptions.jsonl  {"op":"add","user","room"} {"op":"remove",…}
//! data/read_markers.jsonl   {"op":"advance","user","room","id"} {"op":"clear","user"}
//! ```
//!
//! All are small: they are replayed into memory at start, and the logs of
//! changes are compacted then (only live sessions, current
//! subscriptions and markers are kept). A change is made in memory only after its
//! record was written, so memory never claims what a restart would not
//! find. Each file has its own lock, so a slow write to one does not hold
//! up the others.

mod journal;
mod read_markers;
mod sessions;
mod subscriptions;
mod users;

use std::path::Path;

use self::journal::{Compaction, Journal};
use super::durability::Durability;
use crate::store::{Fsync, StoreError, UserRecord};

/// The account-side stores of one data directory.
pub struct JsonlAccounts {
    users: Journal<users::Users>,
    sessions: Journal<sessions::Sessions>,
    subscriptions: Journal<subscriptions::Subscriptions>,
    read_markers: Journal<read_markers::ReadMarkers>,
}

/// What the account files hold besides sessions (those come from
/// `SessionStore::load_sessions`): what `chatroom migrate` copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecords {
    /// Oldest first.
    pub users: Vec<UserRecord>,
    /// (subscriber, room)
    pub subscriptions: Vec<(String, String)>,
    /// (subscriber, room, last read id)
    pub read_markers: Vec<(String, String, u64)>,
}

impl JsonlAccounts {
    /// Every account, subscription and read marker, from memory.
    pub fn records(&self) -> AccountRecords {
        AccountRecords {
            users: self.users.read(users::Users::oldest_first),
            subscriptions: self.subscriptions.read(subscriptions::Subscriptions::pairs),
            read_markers: self.read_markers.read(read_markers::ReadMarkers::all),
        }
    }

    /// Loads (and compacts) the account files of `data_dir`; with `fsync`
    /// always or batch every change is synced before it is answered.
    /// Blocking.
    pub fn open(data_dir: &Path, fsync: Fsync) -> Result<Self, StoreError> {
        let sync = Durability::new(fsync).syncs();
        Ok(Self {
            users: Journal::open(&data_dir.join("users.jsonl"), Compaction::Keep, sync)?,
            sessions: Journal::open(&data_dir.join("sessions.jsonl"), Compaction::Rewrite, sync)?,
            subscriptions: Journal::open(&data_dir.join("subscriptions.jsonl"), Compaction::Rewrite, sync)?,
            read_markers: Journal::open(&data_dir.join("read_markers.jsonl"), Compaction::Rewrite, sync)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Username;
    use crate::model::RoomName;
    use crate::store::{ReadMarkerStore, UserRecord, UserStore};

    fn record(name: &str) -> UserRecord {
        UserRecord { username: name.to_string(), password_hash: "$argon2id$x".into(), created_at: "t".into() }
    }

    #[tokio::test]
    async fn look_alikes_are_derived_at_load_and_refused_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        // Written before names were compared by skeleton: two look-alikes.
        let lines: Vec<String> =
            ["admin", "\u{0430}dmin"].iter().map(|n| serde_json::to_string(&record(n)).unwrap() + "\n").collect();
        std::fs::write(dir.path().join("users.jsonl"), lines.concat()).unwrap();
        let accounts = JsonlAccounts::open(dir.path(), Fsync::Never).unwrap();
        // Both still load and are found by their own name.
        assert_eq!(accounts.find_user("admin").await.unwrap().unwrap().username, "admin");
        assert_eq!(accounts.find_user("\u{0430}dmin").await.unwrap().unwrap().username, "\u{0430}dmin");
        // A look-alike finds the older account; a different name finds none.
        let look_alike = Username::parse("\u{0410}DMIN").unwrap();
        assert_eq!(accounts.find_look_alike(&look_alike).await.unwrap().unwrap().username, "admin");
        assert!(accounts.find_look_alike(&Username::parse("admins").unwrap()).await.unwrap().is_none());
        // Creation refuses a look-alike in the same step that writes.
        assert!(matches!(accounts.create_user(record("ADM\u{0406}N")).await, Err(StoreError::NameTaken(_))));
        accounts.create_user(record("admins")).await.unwrap();
        assert!(matches!(accounts.create_user(record("\u{0430}dmins")).await, Err(StoreError::NameTaken(_))));
        // Nothing derived was written: users.jsonl holds the names as typed.
        let stored = std::fs::read_to_string(dir.path().join("users.jsonl")).unwrap();
        assert_eq!(stored.lines().count(), 3);
        assert!(stored.contains("\"username\":\"admins\""));
    }

    #[tokio::test]
    async fn read_markers_replay_forward_only_and_are_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read_markers.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"op\":\"advance\",\"user\":\"ann\",\"room\":\"general\",\"id\":7}\n",
                "{\"op\":\"advance\",\"user\":\"ann\",\"room\":\"general\",\"id\":3}\n",
                "{\"op\":\"advance\",\"user\":\"bob\",\"room\":\"rust\",\"id\":2}\n",
                "{\"op\":\"clear\",\"user\":\"bob\"}\n",
            ),
        )
        .unwrap();
        let accounts = JsonlAccounts::open(dir.path(), Fsync::Never).unwrap();
        let general = RoomName::parse("general").unwrap();
        assert_eq!(accounts.read_marker("ann", &general).await.unwrap(), Some(7));
        assert!(accounts.markers("bob").await.unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1, "one line per marker");
    }
}
