//! [`MessageStore`] on PostgreSQL: `rooms` (with each room's seq counter),
//! `events` (the log) and `messages` (as they are now).
//!
//! An append is stored by the store's committer (`commit`), together with
//! the batches of other rooms queued meanwhile, in one transaction with a
//! fixed number of round trips whatever the number of rooms and the batch
//! sizes; here are the statements it runs, each over all the rooms of a
//! group at once (a room column in the `UNNEST`), and the writer
//! (`chatroom migrate`'s import uses them too, for one room).
//!
//! History is a range scan of `messages`' primary key, the log one of
//! `events`'; room search a trigram index on `lower(name)`; message search
//! is `search`'s (its rows written here, with the messages).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::plan::{Counters, EventRow, MessageNow, Writes};
use super::{PgStore, execute, from_db, rows, to_db};
use crate::model::reaction::Reacted;
use crate::model::{Message, NewEvent, ReactionSet, RoomName, StoredEvent, Username};
use crate::store::{Appended, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, StoreError, ThreadPage};

/// The columns that make a [`MessageNow`], in its order: `messages`
/// (as `m`) and its reactions (as `r`, from [`messages_with_reactions`]).
macro_rules! message_columns {
    () => {
        "m.id, m.post_no, m.author, m.author_key, m.client_id, m.text, m.ts, m.edited_at, m.deleted, \
         m.thread, m.reply_count, m.last_reply_at, r.emojis, r.users, r.seqs"
    };
}

/// `messages` as `m`, each row with its reactions as three arrays in seq
/// order (`r`: NULL when it has none); one probe of the primary key of
/// `reactions` per message.
macro_rules! messages_with_reactions {
    () => {
        "messages AS m LEFT JOIN LATERAL (SELECT array_agg(emoji ORDER BY seq) AS emojis, \
         array_agg(user_key ORDER BY seq) AS users, array_agg(seq ORDER BY seq) AS seqs \
         FROM reactions WHERE reactions.room = m.room AND reactions.message_id = m.id) AS r ON true"
    };
}

/// Where [`MESSAGES_BY_ID`] and [`SENT_IN_WINDOW`] put the room.
pub(super) const ROOM_COLUMN: usize = 15;

const ROOM_COUNTERS: &str = "SELECT last_seq, posts FROM rooms WHERE name = $1";
const LOCK_ROOM: &str = "SELECT last_seq, posts FROM rooms WHERE name = $1 FOR UPDATE";
const CREATE_ROOM: &str = "INSERT INTO rooms (name, created_by) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const LIST_ALL_ROOMS: &str = "SELECT name FROM rooms WHERE NOT private ORDER BY name LIMIT $1";
/// Exact match, then prefix, then the rest, each by name (`rank_rooms`).
const SEARCH_ROOMS: &str = "SELECT name FROM rooms WHERE lower(name) LIKE $1 AND NOT private
    ORDER BY lower(name) <> $2, NOT starts_with(lower(name), $2), name LIMIT $3";
const EVENTS_AFTER: &str = "SELECT seq, kind, message_id, author, text, client_id, ts, thread, subject, added, reactions FROM events
    WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3";
/// Locks every room of a group of batches, in one fixed order (by name,
/// "C" collation): two nodes locking overlapping sets never deadlock.
pub(super) const LOCK_ROOMS: &str = "SELECT name, last_seq, posts FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE";
const INSERT_EVENTS: &str = "INSERT INTO events (room, seq, kind, message_id, author, text, client_id, ts, thread, subject, added, reactions)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],
        $9::bigint[], $10::text[], $11::bool[], $12::text[])";
const INSERT_MESSAGES: &str = "INSERT INTO messages (room, id, post_no, author, author_key, client_id, text, ts, edited_at, deleted,
        thread, reply_count, last_reply_at)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[],
        $11::bigint[], $12::int[], $13::text[])";
const UPDATE_MESSAGES: &str = "UPDATE messages AS m SET text = c.text, edited_at = c.edited_at, deleted = c.deleted,
        reply_count = c.reply_count, last_reply_at = c.last_reply_at
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bool[], $6::int[], $7::text[])
        AS c (room, id, text, edited_at, deleted, reply_count, last_reply_at)
    WHERE m.room = c.room AND m.id = c.id";
/// Reactions added (or added again, with a new seq)…
const ADD_REACTIONS: &str = "INSERT INTO reactions (room, message_id, emoji, user_key, seq)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
    ON CONFLICT (room, message_id, emoji, user_key) DO UPDATE SET seq = EXCLUDED.seq";
/// …and taken back (never the same rows as added in one batch).
const REMOVE_REACTIONS: &str = "DELETE FROM reactions AS r USING unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS d (room, id, emoji, user_key)
    WHERE r.room = d.room AND r.message_id = d.id AND r.emoji = d.emoji AND r.user_key = d.user_key";
/// A deleted message's post (seq = its id) loses its text…
const REDACT_POSTS: &str = "UPDATE events AS e SET text = NULL FROM unnest($1::text[], $2::bigint[]) AS d (room, id)
    WHERE e.room = d.room AND e.seq = d.id AND e.kind = 'post'";
/// …and so do its edits.
const REDACT_EDITS: &str = "UPDATE events AS e SET text = NULL FROM unnest($1::text[], $2::bigint[]) AS d (room, id)
    WHERE e.room = d.room AND e.message_id = d.id AND e.kind = 'edit'";
const SET_COUNTERS: &str = "UPDATE rooms AS r SET last_seq = c.last_seq, posts = c.posts
    FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS c (name, last_seq, posts) WHERE r.name = c.name";

/// The messages named by `(room, id)` pairs (`$1`, `$2`), each with its
/// room ([`ROOM_COLUMN`]).
pub(super) const MESSAGES_BY_ID: &str = concat!(
    "SELECT found.*, k.room FROM unnest($1::text[], $2::bigint[]) AS k (room, id) CROSS JOIN LATERAL (SELECT ",
    message_columns!(),
    " FROM ",
    messages_with_reactions!(),
    " WHERE m.room = k.room AND m.id = k.id) AS found"
);
/// For each `(room, window start, author_key, client_id)`, the newest post
/// of that room's dedup window (`post_no >` the start) with the pair, with
/// its room ([`ROOM_COLUMN`]): one backward probe of `messages_sent` per
/// pair (LATERAL … LIMIT 1 keeps the plan so even when it is generic).
pub(super) const SENT_IN_WINDOW: &str = concat!(
    "SELECT found.*, k.room FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS k (room, since, key, client)
    CROSS JOIN LATERAL (SELECT ",
    message_columns!(),
    " FROM ",
    messages_with_reactions!(),
    " WHERE m.room = k.room AND m.author_key = k.key AND m.client_id = k.client AND m.post_no > k.since
      ORDER BY m.post_no DESC LIMIT 1) AS found"
);
const HISTORY_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM ",
    messages_with_reactions!(),
    " WHERE m.room = $1 AND m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4"
);
const HISTORY_LATEST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM ",
    messages_with_reactions!(),
    " WHERE m.room = $1 AND m.id < $2 ORDER BY m.id DESC LIMIT $3"
);
const ONE_MESSAGE: &str = concat!("SELECT ", message_columns!(), " FROM ", messages_with_reactions!(), " WHERE m.room = $1 AND m.id = $2");
/// A thread's replies after `$3`, by the `messages_thread` index.
const THREAD_REPLIES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM ",
    messages_with_reactions!(),
    " WHERE m.room = $1 AND m.thread = $2 AND m.id > $3 ORDER BY m.id LIMIT $4"
);

pub(super) fn message_of(row: &Row) -> MessageNow {
    let emojis: Vec<String> = row.get::<_, Option<Vec<String>>>(12).unwrap_or_default();
    let users: Vec<String> = row.get::<_, Option<Vec<String>>>(13).unwrap_or_default();
    let seqs: Vec<i64> = row.get::<_, Option<Vec<i64>>>(14).unwrap_or_default();
    let reactions = emojis.into_iter().zip(users).zip(seqs).map(|((emoji, user), seq)| Reacted { emoji, user, seq: from_db(seq) }).collect();
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
        thread: row.get::<_, Option<i64>>(9).map(from_db),
        reply_count: u32::try_from(row.get::<_, i32>(10)).unwrap_or(0),
        last_reply_at: row.get(11),
        reactions: ReactionSet::from_entries(reactions),
    }
}

/// The counters in columns `at` and `at + 1` of `row`.
pub(super) fn counters_of(row: &Row, at: usize) -> Counters {
    Counters { last_seq: from_db(row.get(at)), posts: from_db(row.get(at + 1)) }
}

fn event_row_of(row: &Row) -> EventRow {
    let kind = match row.get::<_, &str>(1) {
        "post" => super::plan::POST,
        "edit" => super::plan::EDIT,
        "react" => super::plan::REACT,
        "member" => super::plan::MEMBER,
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
        thread: row.get::<_, Option<i64>>(7).map(from_db),
        subject: row.get(8),
        added: row.get(9),
        reactions: row.get(10),
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
    found.first().map(|row| counters_of(row, 0)).ok_or_else(|| StoreError::RoomNotFound(room.to_string()))
}

/// Writes what batches planned, each room's [`Writes`] with its room, all
/// rooms together (pipelined statements, one of each kind at most, in the
/// caller's transaction). Nothing stored, nothing written.
pub(super) async fn write(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<(), StoreError> {
    let rooms: Vec<(&str, &Writes)> = rooms.iter().copied().filter(|(_, w)| w.counters.is_some()).collect();
    if rooms.is_empty() {
        return Ok(());
    }
    tokio::try_join!(
        insert_events(client, &rooms),
        insert_messages(client, &rooms),
        update_messages(client, &rooms),
        redact_events(client, &rooms),
        set_counters(client, &rooms),
        add_reactions(client, &rooms),
        remove_reactions(client, &rooms),
        super::search::write_rows(client, &rooms),
    )?;
    Ok(())
}

/// Every `(room, item)` of `rooms`, `items` picking a room's list out of
/// its writes.
fn each<'a, T: 'a>(rooms: &[(&'a str, &'a Writes)], items: impl Fn(&'a Writes) -> &'a [T]) -> Vec<(&'a str, &'a T)> {
    rooms.iter().flat_map(|&(room, writes)| items(writes).iter().map(move |item| (room, item))).collect()
}

async fn insert_events(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let events = each(rooms, |w| &w.events);
    if events.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = events.iter().map(|(room, _)| *room).collect();
    let seqs: Vec<i64> = events.iter().map(|(_, e)| to_db(e.seq)).collect();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind).collect();
    let message_ids: Vec<i64> = events.iter().map(|(_, e)| to_db(e.message_id)).collect();
    let authors: Vec<&str> = events.iter().map(|(_, e)| e.author.as_str()).collect();
    let texts: Vec<Option<&str>> = events.iter().map(|(_, e)| e.text.as_deref()).collect();
    let client_ids: Vec<Option<&str>> = events.iter().map(|(_, e)| e.client_id.as_deref()).collect();
    let times: Vec<&str> = events.iter().map(|(_, e)| e.ts.as_str()).collect();
    let threads: Vec<Option<i64>> = events.iter().map(|(_, e)| e.thread.map(to_db)).collect();
    let subjects: Vec<Option<&str>> = events.iter().map(|(_, e)| e.subject.as_deref()).collect();
    let added: Vec<Option<bool>> = events.iter().map(|(_, e)| e.added).collect();
    let reactions: Vec<Option<&str>> = events.iter().map(|(_, e)| e.reactions.as_deref()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] =
        [&names, &seqs, &kinds, &message_ids, &authors, &texts, &client_ids, &times, &threads, &subjects, &added, &reactions];
    execute(client, "store events", INSERT_EVENTS, &params).await
}

async fn insert_messages(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let messages = each(rooms, |w| &w.new_messages);
    if messages.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = messages.iter().map(|(room, _)| *room).collect();
    let ids: Vec<i64> = messages.iter().map(|(_, m)| to_db(m.id)).collect();
    let post_nos: Vec<i64> = messages.iter().map(|(_, m)| to_db(m.post_no)).collect();
    let authors: Vec<&str> = messages.iter().map(|(_, m)| m.author.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|(_, m)| m.author_key.as_str()).collect();
    let client_ids: Vec<&str> = messages.iter().map(|(_, m)| m.client_id.as_str()).collect();
    let texts: Vec<&str> = messages.iter().map(|(_, m)| m.text.as_str()).collect();
    let times: Vec<&str> = messages.iter().map(|(_, m)| m.ts.as_str()).collect();
    let edited: Vec<Option<&str>> = messages.iter().map(|(_, m)| m.edited_at.as_deref()).collect();
    let deleted: Vec<bool> = messages.iter().map(|(_, m)| m.deleted).collect();
    let threads: Vec<Option<i64>> = messages.iter().map(|(_, m)| m.thread.map(to_db)).collect();
    let reply_counts: Vec<i32> = messages.iter().map(|(_, m)| reply_count_to_db(m.reply_count)).collect();
    let last_replies: Vec<Option<&str>> = messages.iter().map(|(_, m)| m.last_reply_at.as_deref()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] =
        [&names, &ids, &post_nos, &authors, &keys, &client_ids, &texts, &times, &edited, &deleted, &threads, &reply_counts, &last_replies];
    execute(client, "store messages", INSERT_MESSAGES, &params).await
}

async fn update_messages(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let messages = each(rooms, |w| &w.changed_messages);
    if messages.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = messages.iter().map(|(room, _)| *room).collect();
    let ids: Vec<i64> = messages.iter().map(|(_, m)| to_db(m.id)).collect();
    let texts: Vec<&str> = messages.iter().map(|(_, m)| m.text.as_str()).collect();
    let edited: Vec<Option<&str>> = messages.iter().map(|(_, m)| m.edited_at.as_deref()).collect();
    let deleted: Vec<bool> = messages.iter().map(|(_, m)| m.deleted).collect();
    let reply_counts: Vec<i32> = messages.iter().map(|(_, m)| reply_count_to_db(m.reply_count)).collect();
    let last_replies: Vec<Option<&str>> = messages.iter().map(|(_, m)| m.last_reply_at.as_deref()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [&names, &ids, &texts, &edited, &deleted, &reply_counts, &last_replies];
    execute(client, "change messages", UPDATE_MESSAGES, &params).await
}

fn reply_count_to_db(count: u32) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

async fn add_reactions(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let added = each(rooms, |w| &w.reactions_added);
    if added.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = added.iter().map(|(room, _)| *room).collect();
    let ids: Vec<i64> = added.iter().map(|(_, (id, _))| to_db(*id)).collect();
    let emojis: Vec<&str> = added.iter().map(|(_, (_, r))| r.emoji.as_str()).collect();
    let users: Vec<&str> = added.iter().map(|(_, (_, r))| r.user.as_str()).collect();
    let seqs: Vec<i64> = added.iter().map(|(_, (_, r))| to_db(r.seq)).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&names, &ids, &emojis, &users, &seqs];
    execute(client, "store reactions", ADD_REACTIONS, &params).await
}

async fn remove_reactions(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let removed = each(rooms, |w| &w.reactions_removed);
    if removed.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = removed.iter().map(|(room, _)| *room).collect();
    let ids: Vec<i64> = removed.iter().map(|(_, (id, _, _))| to_db(*id)).collect();
    let emojis: Vec<&str> = removed.iter().map(|(_, (_, emoji, _))| emoji.as_str()).collect();
    let users: Vec<&str> = removed.iter().map(|(_, (_, _, user))| user.as_str()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&names, &ids, &emojis, &users];
    execute(client, "take back reactions", REMOVE_REACTIONS, &params).await
}

/// A deleted message's post and edits lose their text (two statements,
/// pipelined: each uses its own index).
async fn redact_events(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    const WHAT: &str = "take a deleted message's text out of the log";
    let redacted = each(rooms, |w| &w.redacted);
    if redacted.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = redacted.iter().map(|(room, _)| *room).collect();
    let ids: Vec<i64> = redacted.iter().map(|(_, id)| to_db(**id)).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&names, &ids];
    let (posts, edits) = tokio::try_join!(execute(client, WHAT, REDACT_POSTS, &params), execute(client, WHAT, REDACT_EDITS, &params))?;
    Ok(posts + edits)
}

/// Every room's counters, in one statement.
async fn set_counters(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let set: Vec<(&str, Counters)> = rooms.iter().filter_map(|&(room, w)| Some((room, w.counters?))).collect();
    let names: Vec<&str> = set.iter().map(|(room, _)| *room).collect();
    let last_seqs: Vec<i64> = set.iter().map(|(_, c)| to_db(c.last_seq)).collect();
    let posts: Vec<i64> = set.iter().map(|(_, c)| to_db(c.posts)).collect();
    execute(client, "set the rooms' counters", SET_COUNTERS, &[&names, &last_seqs, &posts]).await
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
        Ok(RoomInfo::public(room.as_str()))
    }

    async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError> {
        self.insert_private_room(room, creator, kind).await
    }

    async fn room_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError> {
        self.read_access(room).await
    }

    async fn set_member(&self, room: &RoomName, member: &Username, by: &str, added: bool) -> Result<bool, StoreError> {
        self.write_member(room, member, by, added).await
    }

    async fn private_rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError> {
        self.rooms_of(user_key).await
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
            Ok(found.iter().map(|row| RoomInfo::public(row.get::<_, String>(0))).collect())
        })
        .await
    }

    /// Handed to this store's committer, which stores it together with
    /// the batches of other rooms queued meanwhile, in one transaction
    /// (`commit`); answered once that has committed.
    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        self.appends.append(room, batch).await
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        self.run("look for a repeated send", async |client| {
            let counters = counters(&*client, room, false).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&vec![room.as_str()], &vec![to_db(counters.window_start())], &vec![user.key()], &vec![client_id]];
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

    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError> {
        const WHAT: &str = "read a thread";
        let limit = to_db(limit as u64);
        self.run(WHAT, async |client| {
            let client = &*client;
            let (name, id) = (room.as_str(), to_db(parent));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&name, &id, &to_db(after), &limit];
            let (_, found, replies) = tokio::try_join!(
                counters(client, room, false),
                rows(client, WHAT, ONE_MESSAGE, &params[..2]),
                rows(client, WHAT, THREAD_REPLIES, &params),
            )?;
            let parent_now = found.first().map(message_of).filter(|m| m.thread.is_none()).ok_or(StoreError::MessageNotFound(parent))?;
            let replies = replies.iter().map(|row| message_of(row).shown(room.as_str())).collect();
            Ok(ThreadPage { parent: parent_now.shown(room.as_str()), replies })
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
