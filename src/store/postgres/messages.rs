//! [`MessageStore`] on PostgreSQL: `rooms` (with each room's seq counter),
//! `events` (the log) and `messages` (as they are now).
//!
//! An append is one transaction with a fixed number of round trips,
//! whatever the batch size:
//! 1. lock the room's row (`SELECT … FOR UPDATE`): its `last_seq` and
//!    post count. Every appender of the room, on any node, queues here, so
//!    seqs are gap-free and seq n+1 commits only after seq n;
//! 2. look up, together (pipelined), the window's posts that the batch's
//!    `client_id`s might repeat and the messages its edits and deletes
//!    name;
//! 3. plan the batch in memory (`plan::Batch`, the reference backend's
//!    rules);
//! 4. write it (pipelined): the events and new messages as multi-row
//!    inserts over `UNNEST`, the changed messages, the redactions and the
//!    room's counters; then COMMIT. Only then does the caller hear back.
//!
//! History is a range scan of `messages`' primary key, the log one of
//! `events`'; room search a trigram index on `lower(name)`.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::plan::{Batch, Counters, EventRow, MessageNow, Writes};
use super::{PgStore, db_error, execute, from_db, rows, to_db};
use crate::model::{Message, NewEvent, RoomName, StoredEvent, Username, now_rfc3339};
use crate::store::{Appended, HistoryQuery, MessageStore, RoomInfo, StoreError};

/// The columns of `messages` that make a [`MessageNow`], in its order.
macro_rules! message_columns {
    () => {
        "id, post_no, author, author_key, client_id, text, ts, edited_at, deleted"
    };
}

const ROOM_COUNTERS: &str = "SELECT last_seq, posts FROM rooms WHERE name = $1";
const LOCK_ROOM: &str = "SELECT last_seq, posts FROM rooms WHERE name = $1 FOR UPDATE";
const CREATE_ROOM: &str = "INSERT INTO rooms (name, created_by) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const LIST_ALL_ROOMS: &str = "SELECT name FROM rooms ORDER BY name LIMIT $1";
/// Exact match, then prefix, then the rest, each by name (`rank_rooms`).
const SEARCH_ROOMS: &str = "SELECT name FROM rooms WHERE lower(name) LIKE $1
    ORDER BY lower(name) <> $2, NOT starts_with(lower(name), $2), name LIMIT $3";
const EVENTS_AFTER: &str = "SELECT seq, kind, message_id, author, text, client_id, ts FROM events
    WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3";
const INSERT_EVENTS: &str = "INSERT INTO events (room, seq, kind, message_id, author, text, client_id, ts)
    SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])";
const INSERT_MESSAGES: &str = "INSERT INTO messages (room, id, post_no, author, author_key, client_id, text, ts, edited_at, deleted)
    SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[])";
const UPDATE_MESSAGES: &str = "UPDATE messages AS m SET text = c.text, edited_at = c.edited_at, deleted = c.deleted
    FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[]) AS c (id, text, edited_at, deleted)
    WHERE m.room = $1 AND m.id = c.id";
/// A deleted message's post (seq = its id) and edits lose their text.
const REDACT_EVENTS: &str = "UPDATE events SET text = NULL
    WHERE room = $1 AND ((kind = 'post' AND seq = ANY($2)) OR (kind = 'edit' AND message_id = ANY($2)))";
const SET_COUNTERS: &str = "UPDATE rooms SET last_seq = $2, posts = $3 WHERE name = $1";

pub(super) const MESSAGES_BY_ID: &str = concat!("SELECT ", message_columns!(), " FROM messages WHERE room = $1 AND id = ANY($2)");
/// For each `(author_key, client_id)` pair, the newest post of the dedup
/// window (`post_no > $2`) with it: one backward probe of `messages_sent`
/// per pair (LATERAL … LIMIT 1 keeps the plan so even when it is generic).
const SENT_IN_WINDOW: &str = concat!(
    "SELECT m.* FROM unnest($3::text[], $4::text[]) AS k (key, client) CROSS JOIN LATERAL (SELECT ",
    message_columns!(),
    " FROM messages WHERE room = $1 AND author_key = k.key AND client_id = k.client AND post_no > $2
      ORDER BY post_no DESC LIMIT 1) AS m"
);
const HISTORY_AFTER: &str =
    concat!("SELECT ", message_columns!(), " FROM messages WHERE room = $1 AND id > $2 AND id < $3 ORDER BY id LIMIT $4");
const HISTORY_LATEST: &str = concat!("SELECT ", message_columns!(), " FROM messages WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3");

pub(super) fn message_of(row: &Row) -> MessageNow {
    MessageNow {
        id: from_db(row.get(0)),
        post_no: from_db(row.get(1)),
        author: row.get(2),
        author_key: row.get(3),
        client_id: row.get(4),
        text: row.get(5),
        ts: row.get(6),
        edited_at: row.get(7),
        deleted: row.get(8),
    }
}

fn counters_of(row: &Row) -> Counters {
    Counters { last_seq: from_db(row.get(0)), posts: from_db(row.get(1)) }
}

fn event_row_of(row: &Row) -> EventRow {
    let kind = match row.get::<_, &str>(1) {
        "post" => super::plan::POST,
        "edit" => super::plan::EDIT,
        _ => super::plan::DELETE,
    };
    EventRow {
        seq: from_db(row.get(0)),
        kind,
        message_id: from_db(row.get(2)),
        author: row.get(3),
        text: row.get(4),
        client_id: row.get(5),
        ts: row.get(6),
    }
}

/// `filter` as a LIKE pattern matching it anywhere, its own `%`, `_` and
/// `\` taken literally.
fn contains_pattern(filter: &str) -> String {
    let mut pattern = String::with_capacity(filter.len() + 2);
    pattern.push('%');
    for c in filter.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The room's counters; `RoomNotFound` if there is no such room.
pub(super) async fn counters(client: &impl GenericClient, room: &RoomName, lock: bool) -> Result<Counters, StoreError> {
    let sql = if lock { LOCK_ROOM } else { ROOM_COUNTERS };
    let found = rows(client, "read a room", sql, &[&room.as_str()]).await?;
    found.first().map(counters_of).ok_or_else(|| StoreError::RoomNotFound(room.to_string()))
}

/// The messages a batch may need: the window's posts its `client_id`s
/// might repeat, and the messages its edits and deletes name (two
/// queries, pipelined).
async fn known_messages(client: &impl GenericClient, room: &RoomName, counters: Counters, batch: &[NewEvent]) -> Result<Vec<MessageNow>, StoreError> {
    let (mut keys, mut client_ids, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for event in batch {
        match event {
            NewEvent::Post { user, client_id, .. } => {
                keys.push(user.key());
                client_ids.push(client_id.as_str());
            }
            NewEvent::Edit { id, .. } | NewEvent::Delete { id, .. } => targets.push(to_db(*id)),
        }
    }
    let window_start = to_db(counters.window_start());
    let sent = async {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        rows(client, "look for repeated sends", SENT_IN_WINDOW, &[&room.as_str(), &window_start, &keys, &client_ids]).await
    };
    let named = async {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        rows(client, "read the messages a batch changes", MESSAGES_BY_ID, &[&room.as_str(), &targets]).await
    };
    let (sent, named) = tokio::try_join!(sent, named)?;
    Ok(sent.iter().chain(named.iter()).map(message_of).collect())
}

/// Writes what a batch planned (pipelined statements, in the caller's
/// transaction). Nothing stored, nothing written.
pub(super) async fn write(client: &impl GenericClient, room: &str, writes: &Writes) -> Result<(), StoreError> {
    let Some(counters) = writes.counters else { return Ok(()) };
    tokio::try_join!(
        insert_events(client, room, &writes.events),
        insert_messages(client, room, &writes.new_messages),
        update_messages(client, room, &writes.changed_messages),
        redact_events(client, room, &writes.redacted),
        async {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&room, &to_db(counters.last_seq), &to_db(counters.posts)];
            execute(client, "set the room's counters", SET_COUNTERS, &params).await
        },
    )?;
    Ok(())
}

async fn insert_events(client: &impl GenericClient, room: &str, events: &[EventRow]) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = events.iter().map(|e| to_db(e.seq)).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let message_ids: Vec<i64> = events.iter().map(|e| to_db(e.message_id)).collect();
    let authors: Vec<&str> = events.iter().map(|e| e.author.as_str()).collect();
    let texts: Vec<Option<&str>> = events.iter().map(|e| e.text.as_deref()).collect();
    let client_ids: Vec<Option<&str>> = events.iter().map(|e| e.client_id.as_deref()).collect();
    let times: Vec<&str> = events.iter().map(|e| e.ts.as_str()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
        [&room, &seqs, &kinds, &message_ids, &authors, &texts, &client_ids, &times];
    execute(client, "store events", INSERT_EVENTS, &params).await
}

async fn insert_messages(client: &impl GenericClient, room: &str, messages: &[MessageNow]) -> Result<u64, StoreError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = messages.iter().map(|m| to_db(m.id)).collect();
    let post_nos: Vec<i64> = messages.iter().map(|m| to_db(m.post_no)).collect();
    let authors: Vec<&str> = messages.iter().map(|m| m.author.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.author_key.as_str()).collect();
    let client_ids: Vec<&str> = messages.iter().map(|m| m.client_id.as_str()).collect();
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    let times: Vec<&str> = messages.iter().map(|m| m.ts.as_str()).collect();
    let edited: Vec<Option<&str>> = messages.iter().map(|m| m.edited_at.as_deref()).collect();
    let deleted: Vec<bool> = messages.iter().map(|m| m.deleted).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] =
        [&room, &ids, &post_nos, &authors, &keys, &client_ids, &texts, &times, &edited, &deleted];
    execute(client, "store messages", INSERT_MESSAGES, &params).await
}

async fn update_messages(client: &impl GenericClient, room: &str, messages: &[MessageNow]) -> Result<u64, StoreError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = messages.iter().map(|m| to_db(m.id)).collect();
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    let edited: Vec<Option<&str>> = messages.iter().map(|m| m.edited_at.as_deref()).collect();
    let deleted: Vec<bool> = messages.iter().map(|m| m.deleted).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&room, &ids, &texts, &edited, &deleted];
    execute(client, "change messages", UPDATE_MESSAGES, &params).await
}

async fn redact_events(client: &impl GenericClient, room: &str, ids: &[u64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = ids.iter().map(|&id| to_db(id)).collect();
    execute(client, "take a deleted message's text out of the log", REDACT_EVENTS, &[&room, &ids]).await
}

impl PgStore {
    /// Creates `room` unless it exists; whether it was created.
    pub(super) async fn ensure_room(&self, room: &str, created_by: &str) -> Result<bool, StoreError> {
        Ok(self.run_statement("create a room", CREATE_ROOM, &[&room, &created_by]).await? == 1)
    }
}

#[async_trait]
impl MessageStore for PgStore {
    async fn create_room(&self, room: &RoomName, created_by: &str) -> Result<RoomInfo, StoreError> {
        if !self.ensure_room(room.as_str(), created_by).await? {
            return Err(StoreError::RoomExists(room.to_string()));
        }
        Ok(RoomInfo { name: room.to_string() })
    }

    async fn room_exists(&self, room: &RoomName) -> Result<bool, StoreError> {
        self.run("read a room", async |client| {
            Ok(!rows(&*client, "read a room", ROOM_COUNTERS, &[&room.as_str()]).await?.is_empty())
        })
        .await
    }

    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let filter = filter.trim().to_lowercase();
        let limit = to_db(limit as u64);
        self.run("search rooms", async |client| {
            let found = if filter.is_empty() {
                rows(&*client, "list rooms", LIST_ALL_ROOMS, &[&limit]).await?
            } else {
                rows(&*client, "search rooms", SEARCH_ROOMS, &[&contains_pattern(&filter), &filter, &limit]).await?
            };
            Ok(found.iter().map(|row| RoomInfo { name: row.get(0) }).collect())
        })
        .await
    }

    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        const WHAT: &str = "store a batch";
        let ts = now_rfc3339();
        self.run(WHAT, async |client| {
            let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
            let counters = counters(&tx, room, true).await?;
            let known = known_messages(&tx, room, counters, &batch).await?;
            let mut plan = Batch::new(room.as_str(), counters, known);
            let answers: Vec<Result<Appended, StoreError>> = batch.into_iter().map(|new| plan.apply_new(new, &ts)).collect();
            write(&tx, room.as_str(), &plan.finish()).await?;
            tx.commit().await.map_err(|e| db_error(WHAT, e))?;
            Ok(answers)
        })
        .await
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        self.run("look for a repeated send", async |client| {
            let counters = counters(&*client, room, false).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&room.as_str(), &to_db(counters.window_start()), &vec![user.key()], &vec![client_id]];
            let found = rows(&*client, "look for a repeated send", SENT_IN_WINDOW, &params).await?;
            Ok(found.iter().map(message_of).max_by_key(|m| m.id).map(|m| m.shown(room.as_str())))
        })
        .await
    }

    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        const WHAT: &str = "read history";
        let before = query.before.map_or(i64::MAX, to_db);
        let limit = to_db(query.limit as u64);
        self.run(WHAT, async |client| {
            let client = &*client;
            let read = async {
                match query.after {
                    Some(after) => rows(client, WHAT, HISTORY_AFTER, &[&room.as_str(), &to_db(after), &before, &limit]).await,
                    None => rows(client, WHAT, HISTORY_LATEST, &[&room.as_str(), &before, &limit]).await,
                }
            };
            let (_, found) = tokio::try_join!(counters(client, room, false), read)?;
            let mut messages: Vec<Message> = found.iter().map(|row| message_of(row).shown(room.as_str())).collect();
            if query.after.is_none() {
                messages.reverse();
            }
            Ok(messages)
        })
        .await
    }

    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        const WHAT: &str = "read the event log";
        self.run(WHAT, async |client| {
            let client = &*client;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&room.as_str(), &to_db(after), &to_db(limit as u64)];
            let (_, found) = tokio::try_join!(counters(client, room, false), rows(client, WHAT, EVENTS_AFTER, &params))?;
            Ok(found.iter().map(|row| event_row_of(row).to_event(room.as_str())).collect())
        })
        .await
    }

    async fn last_seq(&self, room: &RoomName) -> Result<u64, StoreError> {
        self.run("read a room", async |client| Ok(counters(&*client, room, false).await?.last_seq)).await
    }

    /// Every answer was committed before it was given: nothing to flush.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing is held per room between operations.
    async fn release_idle(&self, _idle: Duration) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_pattern_takes_wildcards_literally() {
        assert_eq!(contains_pattern("rust"), "%rust%");
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
