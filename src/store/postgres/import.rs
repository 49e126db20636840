//! What `chatroom migrate` writes: records copied from another backend as
//! they are (password hashes, session times, ids and seqs), each write
//! saying whether it copied something or found it there already, so a
//! second run changes nothing.

use tokio_postgres::types::ToSql;

use super::accounts::LookAlikes;
use super::plan::Batch;
use super::{PgStore, db_error, messages, rows, to_db};
use crate::model::{EventKind, RoomName, StoredEvent};
use crate::store::{ReadMarkerStore, SessionRecord, StoreError, UserRecord};

const INSERT_SESSION: &str = "INSERT INTO sessions (id_hash, username, guest, created_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (id_hash) DO NOTHING";
const SUBSCRIBE: &str = "INSERT INTO subscriptions (subscriber, room) VALUES ($1, $2) ON CONFLICT DO NOTHING";

impl PgStore {
    /// Copies an account as it is; `false` if its name is there already.
    /// Accounts stored before names were compared by look-alike skeleton
    /// are all kept (the first copied keeps a shared skeleton).
    pub async fn import_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        self.insert_user(user, LookAlikes::Allow).await
    }

    /// Copies a session as it is; `false` if its id hash is there already.
    pub async fn import_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let params: [&(dyn ToSql + Sync); 5] =
            [&session.id_hash, &session.user, &session.guest, &to_db(session.created_ms), &to_db(session.last_seen_ms)];
        Ok(self.run_statement("copy a session", INSERT_SESSION, &params).await? == 1)
    }

    /// Creates a room unless it exists; whether it was created.
    pub async fn import_room(&self, room: &RoomName, created_by: &str) -> Result<bool, StoreError> {
        self.ensure_room(room.as_str(), created_by).await
    }

    /// Subscribes `subscriber` to `room`; `false` if it already was.
    pub async fn import_subscription(&self, subscriber: &str, room: &RoomName) -> Result<bool, StoreError> {
        Ok(self.run_statement("copy a subscription", SUBSCRIBE, &[&subscriber, &room.as_str()]).await? == 1)
    }

    /// Moves a read marker to `id`; `false` if it was there (or further).
    pub async fn import_marker(&self, subscriber: &str, room: &RoomName, id: u64) -> Result<bool, StoreError> {
        self.advance_marker(subscriber, room, id).await
    }

    /// Appends events stored elsewhere, keeping their seqs (and so the
    /// message ids), in one transaction: those at or below the room's
    /// `last_seq` are skipped (copied before). How many were written. The
    /// room must exist.
    pub async fn import_events(&self, room: &RoomName, events: &[StoredEvent]) -> Result<usize, StoreError> {
        const WHAT: &str = "copy a room's events";
        self.run(WHAT, async |client| {
            let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
            let counters = messages::counters(&tx, room, true).await?;
            let fresh: Vec<&StoredEvent> = events.iter().filter(|e| e.seq > counters.last_seq).collect();
            if fresh.is_empty() {
                return Ok(0);
            }
            // The messages the events change (a reply changes its parent).
            let targets: Vec<i64> = fresh
                .iter()
                .filter_map(|e| if matches!(e.kind, EventKind::Post(_)) { e.thread() } else { Some(e.message_id()) })
                .map(to_db)
                .collect();
            let rooms = vec![room.as_str(); targets.len()];
            let known = rows(&tx, WHAT, messages::MESSAGES_BY_ID, &[&rooms, &targets]).await?;
            let mut batch = Batch::new(room.as_str(), counters, known.iter().map(messages::message_of).collect());
            for event in &fresh {
                batch.apply_stored(event);
            }
            messages::write(&tx, &[(room.as_str(), &batch.finish())]).await?;
            tx.commit().await.map_err(|e| db_error(WHAT, e))?;
            Ok(fresh.len())
        })
        .await
    }
}
