//! The account-side traits on PostgreSQL: `users` with `user_skeletons`
//! (every look-alike skeleton of every name, each held by one account),
//! `sessions`, `subscriptions` and `read_markers`.
//!
//! What must be one step is one statement or one transaction: creating an
//! account claims its name and all its skeletons in one transaction (the
//! unique keys decide between two creators of look-alike names), and a read
//! marker moves with one `INSERT … ON CONFLICT … WHERE last_id < …`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, db_error, execute, from_db, rows, to_db};
use crate::model::{RoomName, Username, name_skeletons};
use crate::store::{ReadMarkerStore, SessionRecord, SessionStore, StoreError, SubscriptionStore, UserRecord, UserStore};

const INSERT_USER: &str = "INSERT INTO users (key, username, password_hash, created_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (key) DO NOTHING";
const CLAIM_SKELETONS: &str = "INSERT INTO user_skeletons (skeleton, user_key) SELECT unnest($1::text[]), $2
    ON CONFLICT (skeleton) DO NOTHING";
const FIND_USER: &str = "SELECT username, password_hash, created_at FROM users WHERE key = $1";
/// The oldest account holding one of these skeletons.
const FIND_LOOK_ALIKE: &str = "SELECT u.username, u.password_hash, u.created_at
    FROM user_skeletons s JOIN users u ON u.key = s.user_key
    WHERE s.skeleton = ANY($1) ORDER BY u.no LIMIT 1";

const SAVE_SESSION: &str = "INSERT INTO sessions (id_hash, username, guest, created_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (id_hash) DO UPDATE SET username = EXCLUDED.username, guest = EXCLUDED.guest,
        created_ms = EXCLUDED.created_ms, last_seen_ms = EXCLUDED.last_seen_ms";
const FIND_SESSION: &str = "SELECT id_hash, username, guest, created_ms, last_seen_ms FROM sessions WHERE id_hash = $1";
const LOAD_SESSIONS: &str = "SELECT id_hash, username, guest, created_ms, last_seen_ms FROM sessions";
const TOUCH_SESSIONS: &str = "UPDATE sessions AS s SET last_seen_ms = greatest(s.last_seen_ms, t.seen)
    FROM unnest($1::text[], $2::bigint[]) AS t (id_hash, seen) WHERE s.id_hash = t.id_hash";
const DELETE_SESSIONS: &str = "DELETE FROM sessions WHERE id_hash = ANY($1)";

const SUBSCRIBE: &str = "INSERT INTO subscriptions (subscriber, room) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const SUBSCRIPTIONS: &str = "SELECT room FROM subscriptions WHERE subscriber = $1 ORDER BY room";
const UNSUBSCRIBE: &str = "DELETE FROM subscriptions WHERE subscriber = $1 AND room = $2";
const CLEAR_SUBSCRIPTIONS: &str = "DELETE FROM subscriptions WHERE subscriber = $1";

const READ_MARKER: &str = "SELECT last_id FROM read_markers WHERE subscriber = $1 AND room = $2";
const MARKERS: &str = "SELECT room, last_id FROM read_markers WHERE subscriber = $1";
/// Creates the marker or moves it forward; a row comes back only if it moved.
const ADVANCE_MARKER: &str = "INSERT INTO read_markers AS r (subscriber, room, last_id) VALUES ($1, $2, $3)
    ON CONFLICT (subscriber, room) DO UPDATE SET last_id = EXCLUDED.last_id WHERE r.last_id < EXCLUDED.last_id
    RETURNING last_id";
const CLEAR_MARKERS: &str = "DELETE FROM read_markers WHERE subscriber = $1";

fn user_of(row: &Row) -> UserRecord {
    UserRecord { username: row.get(0), password_hash: row.get(1), created_at: row.get(2) }
}

fn session_of(row: &Row) -> SessionRecord {
    SessionRecord {
        id_hash: row.get(0),
        user: row.get(1),
        guest: row.get(2),
        created_ms: from_db(row.get(3)),
        last_seen_ms: from_db(row.get(4)),
    }
}

/// How a new account's claim on its name and skeletons is settled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LookAlikes {
    /// Any skeleton already held refuses the account (`create_user`).
    Refuse,
    /// The account is stored anyway and keeps only the skeletons still
    /// free (copying accounts made before names were compared so).
    Allow,
}

impl PgStore {
    /// Stores `user` with its name's skeletons, in one transaction; whether
    /// it was stored (`false`: the name, or under [`LookAlikes::Refuse`] a
    /// look-alike, is taken).
    pub(super) async fn insert_user(&self, user: &UserRecord, look_alikes: LookAlikes) -> Result<bool, StoreError> {
        const WHAT: &str = "create an account";
        let key = user.username.to_lowercase();
        let skeletons = name_skeletons(&user.username);
        self.run(WHAT, async |client| {
            let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&key, &user.username, &user.password_hash, &user.created_at];
            if execute(&tx, WHAT, INSERT_USER, &params).await? == 0 {
                return Ok(false);
            }
            let claimed = execute(&tx, WHAT, CLAIM_SKELETONS, &[&skeletons, &key]).await?;
            if look_alikes == LookAlikes::Refuse && claimed < skeletons.len() as u64 {
                return Ok(false); // dropping `tx` rolls the account back
            }
            tx.commit().await.map_err(|e| db_error(WHAT, e))?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        match self.insert_user(&user, LookAlikes::Refuse).await? {
            true => Ok(()),
            false => Err(StoreError::NameTaken(user.username)),
        }
    }

    async fn find_user(&self, user_key: &str) -> Result<Option<UserRecord>, StoreError> {
        self.run("find an account", async |client| {
            Ok(rows(&*client, "find an account", FIND_USER, &[&user_key]).await?.first().map(user_of))
        })
        .await
    }

    async fn find_look_alike(&self, user: &Username) -> Result<Option<UserRecord>, StoreError> {
        let skeletons = user.skeletons();
        self.run("find a look-alike account", async |client| {
            Ok(rows(&*client, "find a look-alike account", FIND_LOOK_ALIKE, &[&skeletons]).await?.first().map(user_of))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&session.id_hash, &session.user, &session.guest, &to_db(session.created_ms), &to_db(session.last_seen_ms)];
        self.run_statement("save a session", SAVE_SESSION, &params).await?;
        Ok(())
    }

    async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.run("find a session", async |client| {
            Ok(rows(&*client, "find a session", FIND_SESSION, &[&id_hash]).await?.first().map(session_of))
        })
        .await
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.run("load sessions", async |client| Ok(rows(&*client, "load sessions", LOAD_SESSIONS, &[]).await?.iter().map(session_of).collect()))
            .await
    }

    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), StoreError> {
        // One row per session (its latest time): an UPDATE … FROM applies
        // only one of several rows that match the same session.
        let mut latest: HashMap<String, u64> = HashMap::new();
        for (id_hash, at_ms) in seen {
            let at = latest.entry(id_hash).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (hashes, times): (Vec<String>, Vec<i64>) = latest.into_iter().map(|(hash, at)| (hash, to_db(at))).unzip();
        self.run_statement("record session activity", TOUCH_SESSIONS, &[&hashes, &times]).await?;
        Ok(())
    }

    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError> {
        if id_hashes.is_empty() {
            return Ok(());
        }
        self.run_statement("end sessions", DELETE_SESSIONS, &[&id_hashes]).await?;
        Ok(())
    }
}

#[async_trait]
impl SubscriptionStore for PgStore {
    async fn subscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        self.run_statement("subscribe", SUBSCRIBE, &[&subscriber, &room.as_str()]).await?;
        Ok(())
    }

    async fn subscriptions(&self, subscriber: &str) -> Result<Vec<String>, StoreError> {
        self.run("read subscriptions", async |client| {
            Ok(rows(&*client, "read subscriptions", SUBSCRIPTIONS, &[&subscriber]).await?.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    async fn unsubscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        self.run_statement("unsubscribe", UNSUBSCRIBE, &[&subscriber, &room.as_str()]).await?;
        Ok(())
    }

    async fn clear_subscriptions(&self, subscriber: &str) -> Result<(), StoreError> {
        self.run_statement("clear subscriptions", CLEAR_SUBSCRIPTIONS, &[&subscriber]).await?;
        Ok(())
    }
}

#[async_trait]
impl ReadMarkerStore for PgStore {
    async fn read_marker(&self, subscriber: &str, room: &RoomName) -> Result<Option<u64>, StoreError> {
        self.run("read a read marker", async |client| {
            let found = rows(&*client, "read a read marker", READ_MARKER, &[&subscriber, &room.as_str()]).await?;
            Ok(found.first().map(|row| from_db(row.get(0))))
        })
        .await
    }

    async fn markers(&self, subscriber: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        self.run("read read markers", async |client| {
            let found = rows(&*client, "read read markers", MARKERS, &[&subscriber]).await?;
            Ok(found.iter().map(|row| (row.get(0), from_db(row.get(1)))).collect())
        })
        .await
    }

    async fn advance_marker(&self, subscriber: &str, room: &RoomName, id: u64) -> Result<bool, StoreError> {
        self.run("move a read marker", async |client| {
            let moved = rows(&*client, "move a read marker", ADVANCE_MARKER, &[&subscriber, &room.as_str(), &to_db(id)]).await?;
            Ok(!moved.is_empty())
        })
        .await
    }

    async fn clear_markers(&self, subscriber: &str) -> Result<(), StoreError> {
        self.run_statement("clear read markers", CLEAR_MARKERS, &[&subscriber]).await?;
        Ok(())
    }
}
