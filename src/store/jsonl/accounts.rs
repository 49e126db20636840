//! Accounts, sessions and subscriptions as JSON-lines files:
//!
//! ```text
//! data/users.jsonl          {"username","password_hash","created_at"}  (argon2id PHC)
//! data/sessions.jsonl       {"op":"open",…} {"op":"seen",…} {"op":"end",…}  (id hashes only)
//! data/subscriptions.jsonl  {"op":"add","user","room"} {"op":"remove",…}
//! ```
//!
//! All three are small: they are replayed into memory at start and the two
//! logs are compacted then (only live sessions and current subscriptions are
//! kept). A change is made in memory only after its record was written, so
//! memory never claims what a restart would not find.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::log_file::LogFile;
use crate::error::ChatError;
use crate::model::{RoomName, Username, name_skeletons};
use crate::store::{AccountStore, SessionRecord, UserRecord};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum SessionOp {
    Open(SessionRecord),
    Seen { id_hash: String, at_ms: u64 },
    End { id_hash: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum SubscriptionOp {
    Add { user: String, room: String },
    Remove { user: String, room: String },
}

struct Inner {
    /// lower-cased name → account
    users: HashMap<String, UserRecord>,
    /// name skeleton → lower-cased name of the (first) account that has it;
    /// derived at start, never stored
    look_alikes: HashMap<String, String>,
    users_log: LogFile,
    sessions: HashMap<String, SessionRecord>,
    sessions_log: LogFile,
    subscriptions: HashMap<String, BTreeSet<String>>,
    subscriptions_log: LogFile,
}

impl Inner {
    /// An account whose name shares a skeleton with `name`.
    fn look_alike(&self, name: &str) -> Option<&UserRecord> {
        name_skeletons(name).iter().find_map(|k| self.look_alikes.get(k)).and_then(|key| self.users.get(key))
    }
}

#[derive(Clone)]
pub struct JsonlAccounts {
    inner: Arc<Mutex<Inner>>,
}

impl JsonlAccounts {
    /// Loads and compacts the account files of `data_dir`. Blocking.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let users_path = data_dir.join("users.jsonl");
        let mut users = HashMap::new();
        let mut look_alikes = HashMap::new();
        for user in LogFile::read_all::<UserRecord>(&users_path)? {
            index_look_alikes(&mut look_alikes, &user);
            users.insert(user.username.to_lowercase(), user);
        }
        let sessions_path = data_dir.join("sessions.jsonl");
        let sessions = replay_sessions(LogFile::read_all(&sessions_path)?);
        let live: Vec<SessionOp> = sessions.values().cloned().map(SessionOp::Open).collect();
        let subscriptions_path = data_dir.join("subscriptions.jsonl");
        let subscriptions = replay_subscriptions(LogFile::read_all(&subscriptions_path)?);
        let current: Vec<SubscriptionOp> = subscriptions
            .iter()
            .flat_map(|(user, rooms)| rooms.iter().map(|room| SubscriptionOp::Add { user: user.clone(), room: room.clone() }))
            .collect();
        let inner = Inner {
            users,
            look_alikes,
            users_log: LogFile::open(&users_path)?,
            sessions,
            sessions_log: LogFile::rewrite(&sessions_path, &live)?,
            subscriptions,
            subscriptions_log: LogFile::rewrite(&subscriptions_path, &current)?,
        };
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }

    /// Runs `op` on the state off the async runtime (it may write a file).
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Inner) -> Result<T, ChatError> + Send + 'static,
    ) -> Result<T, ChatError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&mut inner.lock().expect("accounts lock")))
            .await
            .map_err(|e| ChatError::Internal(e.to_string()))?
    }
}

/// Indexes an account under its name's skeletons (an older account keeps a
/// skeleton it shares with a later one: both still load and log in).
fn index_look_alikes(look_alikes: &mut HashMap<String, String>, user: &UserRecord) {
    for skeleton in name_skeletons(&user.username) {
        look_alikes.entry(skeleton).or_insert_with(|| user.username.to_lowercase());
    }
}

fn replay_sessions(ops: Vec<SessionOp>) -> HashMap<String, SessionRecord> {
    let mut sessions = HashMap::new();
    for op in ops {
        match op {
            SessionOp::Open(record) => {
                sessions.insert(record.id_hash.clone(), record);
            }
            SessionOp::Seen { id_hash, at_ms } => {
                if let Some(s) = sessions.get_mut(&id_hash) {
                    s.last_seen_ms = s.last_seen_ms.max(at_ms);
                }
            }
            SessionOp::End { id_hash } => {
                sessions.remove(&id_hash);
            }
        }
    }
    sessions
}

fn replay_subscriptions(ops: Vec<SubscriptionOp>) -> HashMap<String, BTreeSet<String>> {
    let mut subscriptions: HashMap<String, BTreeSet<String>> = HashMap::new();
    for op in ops {
        match op {
            SubscriptionOp::Add { user, room } => {
                subscriptions.entry(user).or_default().insert(room);
            }
            SubscriptionOp::Remove { user, room } => {
                if let Some(rooms) = subscriptions.get_mut(&user) {
                    rooms.remove(&room);
                }
            }
        }
    }
    subscriptions.retain(|_, rooms| !rooms.is_empty());
    subscriptions
}

#[async_trait]
impl AccountStore for JsonlAccounts {
    async fn create_user(&self, user: UserRecord) -> Result<(), ChatError> {
        self.blocking(move |inner| {
            let key = user.username.to_lowercase();
            if inner.users.contains_key(&key) || inner.look_alike(&user.username).is_some() {
                return Err(ChatError::NameTaken(user.username));
            }
            inner.users_log.append(std::slice::from_ref(&user))?;
            index_look_alikes(&mut inner.look_alikes, &user);
            inner.users.insert(key, user);
            Ok(())
        })
        .await
    }

    async fn find_user(&self, user_key: &str) -> Result<Option<UserRecord>, ChatError> {
        Ok(self.inner.lock().expect("accounts lock").users.get(user_key).cloned())
    }

    async fn find_look_alike(&self, user: &Username) -> Result<Option<UserRecord>, ChatError> {
        Ok(self.inner.lock().expect("accounts lock").look_alike(user.as_str()).cloned())
    }

    async fn save_session(&self, session: SessionRecord) -> Result<(), ChatError> {
        self.blocking(move |inner| {
            inner.sessions_log.append(&[SessionOp::Open(session.clone())])?;
            inner.sessions.insert(session.id_hash.clone(), session);
            Ok(())
        })
        .await
    }

    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), ChatError> {
        self.blocking(move |inner| {
            let ops: Vec<SessionOp> = seen
                .into_iter()
                .filter(|(hash, _)| inner.sessions.contains_key(hash))
                .map(|(id_hash, at_ms)| SessionOp::Seen { id_hash, at_ms })
                .collect();
            inner.sessions_log.append(&ops)?;
            for op in &ops {
                if let SessionOp::Seen { id_hash, at_ms } = op
                    && let Some(s) = inner.sessions.get_mut(id_hash)
                {
                    s.last_seen_ms = s.last_seen_ms.max(*at_ms);
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), ChatError> {
        self.blocking(move |inner| {
            let ops: Vec<SessionOp> = id_hashes
                .into_iter()
                .filter(|hash| inner.sessions.contains_key(hash))
                .map(|id_hash| SessionOp::End { id_hash })
                .collect();
            // Forgotten only once written: a failed write can be retried.
            inner.sessions_log.append(&ops)?;
            for op in &ops {
                if let SessionOp::End { id_hash } = op {
                    inner.sessions.remove(id_hash);
                }
            }
            Ok(())
        })
        .await
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, ChatError> {
        Ok(self.inner.lock().expect("accounts lock").sessions.values().cloned().collect())
    }

    async fn subscriptions(&self, user_key: &str) -> Result<Vec<String>, ChatError> {
        let inner = self.inner.lock().expect("accounts lock");
        Ok(inner.subscriptions.get(user_key).map(|r| r.iter().cloned().collect()).unwrap_or_default())
    }

    async fn subscribe(&self, user_key: &str, room: &RoomName) -> Result<(), ChatError> {
        let (user, room) = (user_key.to_string(), room.to_string());
        self.blocking(move |inner| {
            if inner.subscriptions.get(&user).is_some_and(|r| r.contains(&room)) {
                return Ok(());
            }
            inner.subscriptions_log.append(&[SubscriptionOp::Add { user: user.clone(), room: room.clone() }])?;
            inner.subscriptions.entry(user).or_default().insert(room);
            Ok(())
        })
        .await
    }

    async fn unsubscribe(&self, user_key: &str, room: &RoomName) -> Result<(), ChatError> {
        let (user, room) = (user_key.to_string(), room.to_string());
        self.blocking(move |inner| {
            if !inner.subscriptions.get(&user).is_some_and(|r| r.contains(&room)) {
                return Ok(());
            }
            inner.subscriptions_log.append(&[SubscriptionOp::Remove { user: user.clone(), room: room.clone() }])?;
            if let Some(rooms) = inner.subscriptions.get_mut(&user) {
                rooms.remove(&room);
            }
            Ok(())
        })
        .await
    }

    async fn clear_subscriptions(&self, user_key: &str) -> Result<(), ChatError> {
        let user = user_key.to_string();
        self.blocking(move |inner| {
            let Some(rooms) = inner.subscriptions.get(&user) else { return Ok(()) };
            let ops: Vec<SubscriptionOp> =
                rooms.iter().map(|room| SubscriptionOp::Remove { user: user.clone(), room: room.clone() }).collect();
            inner.subscriptions_log.append(&ops)?;
            inner.subscriptions.remove(&user);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let accounts = JsonlAccounts::open(dir.path()).unwrap();
        // Both still load and are found by their own name.
        assert_eq!(accounts.find_user("admin").await.unwrap().unwrap().username, "admin");
        assert_eq!(accounts.find_user("\u{0430}dmin").await.unwrap().unwrap().username, "\u{0430}dmin");
        // A look-alike finds the older account; a different name finds none.
        let look_alike = Username::parse("\u{0410}DMIN").unwrap();
        assert_eq!(accounts.find_look_alike(&look_alike).await.unwrap().unwrap().username, "admin");
        assert!(accounts.find_look_alike(&Username::parse("admins").unwrap()).await.unwrap().is_none());
        // Creation refuses a look-alike in the same step that writes.
        assert!(matches!(accounts.create_user(record("ADM\u{0406}N")).await, Err(ChatError::NameTaken(_))));
        accounts.create_user(record("admins")).await.unwrap();
        assert!(matches!(accounts.create_user(record("\u{0430}dmins")).await, Err(ChatError::NameTaken(_))));
        // Nothing derived was written: users.jsonl holds the names as typed.
        let stored = std::fs::read_to_string(dir.path().join("users.jsonl")).unwrap();
        assert_eq!(stored.lines().count(), 3);
        assert!(stored.contains("\"username\":\"admins\""));
    }
}
