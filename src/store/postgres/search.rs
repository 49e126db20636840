//! [`SearchStore`] on PostgreSQL: `message_search` (migration 4), one row
//! of tokens per live message, GIN-indexed, written by the same
//! transaction as the message ([`write_rows`], called by `messages::write`).
//!
//! A query becomes a `tsquery` of its terms' tokens (every term's whole
//! words, and its last token as a prefix: `'example' & 'com':*`); rows come
//! newest first (`ts_ms, room, id` descending, after the cursor) joined
//! with `messages` for the text and with `rooms` for who may see them, a
//! batch at a time — first from a window of the newest rows, then, for
//! rare terms, from the GIN index ([`WINDOW`]) — and [`PageBuilder`] keeps
//! what really matches.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio::time::Instant;

use super::plan::{MessageNow, Writes};
use super::{PgStore, db_error, execute, from_db, rows, run_until, to_db};
use crate::model::Message;
use crate::store::search::text::{QueryTerm, fold, tokens};
use crate::store::search::{PageBuilder, SearchPage, SearchQuery, SearchStore, ts_ms};
use crate::store::StoreError;

const UPSERT: &str = "INSERT INTO message_search (room, id, ts_ms, words)
    SELECT room, id, ts_ms, array_to_tsvector(string_to_array(words, ' '))
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS w (room, id, ts_ms, words)
    ON CONFLICT (room, id) DO UPDATE SET words = excluded.words";
const DELETE: &str = "DELETE FROM message_search AS s USING unnest($1::text[], $2::bigint[]) AS d (room, id)
    WHERE s.room = d.room AND s.id = d.id";

/// The candidates of one batch, newest first. `$1` the tsquery, `$2` the
/// reader's private rooms, `$3` one room or NULL, `$4..$6` the cursor
/// (exclusive), `$7` the batch size; `$8` the window (see [`WINDOW`]),
/// `$9` what the GIN index is asked for (the same tsquery).
macro_rules! candidates {
    ($source:expr, $words:literal) => {
        concat!(
            "SELECT m.room, m.id, m.author, m.text, m.ts, m.deleted, s.ts_ms FROM ",
            $source,
            " s JOIN rooms r ON r.name = s.room
            JOIN messages m ON m.room = s.room AND m.id = s.id
            WHERE ",
            $words,
            " AND (NOT r.private OR s.room = ANY($2::text[]))
              AND ($3::text IS NULL OR s.room = $3::text)
              AND (s.ts_ms, s.room, s.id) < ($4::bigint, $5::text, $6::bigint)
              AND $8::bigint > 0 AND $9::text IS NOT NULL
            ORDER BY s.ts_ms DESC, s.room DESC, s.id DESC LIMIT $7"
        )
    };
}
/// The newest [`WINDOW`] rows after the cursor, walked in time order (the
/// order index), then filtered: cheap whatever the terms, and what a
/// query matching many messages needs.
macro_rules! window {
    () => {
        "(SELECT * FROM message_search WHERE (ts_ms, room, id) < ($4::bigint, $5::text, $6::bigint)
          ORDER BY ts_ms DESC, room DESC, id DESC LIMIT $8)"
    };
}
const WORDS_IN_WINDOW: &str = candidates!(window!(), "s.words @@ $1::text::tsquery");
/// The rare-terms step: every row the GIN index finds for the tsquery
/// (`$9`) first, materialised so the planner cannot trade it for a walk of
/// the time order, then sorted; with `room`, the room's rows only.
const WORDS: &str = candidates!(
    "(WITH hits AS MATERIALIZED (SELECT room, id, ts_ms, words FROM message_search WHERE words @@ $9::text::tsquery AND $3::text IS NULL)
      SELECT * FROM hits)",
    "s.words @@ $1::text::tsquery"
);
const WORDS_IN_ROOM: &str = candidates!(
    "(WITH hits AS MATERIALIZED (SELECT room, id, ts_ms, words FROM message_search WHERE words @@ $9::text::tsquery AND room = $3::text)
      SELECT * FROM hits)",
    "s.words @@ $1::text::tsquery"
);
/// For a query with no token at all (only punctuation): every message is
/// a candidate, walked in time order; `$1` is unused.
const ANY_IN_WINDOW: &str = candidates!(window!(), "$1::text IS NOT NULL");
/// Where a window after the cursor ends: its oldest row (`$4` = window − 1).
const WINDOW_EDGE: &str = "SELECT ts_ms, room, id FROM message_search WHERE (ts_ms, room, id) < ($1::bigint, $2::text, $3::bigint)
    ORDER BY ts_ms DESC, room DESC, id DESC OFFSET $4 LIMIT 1";
/// Rows a window walks. A query first takes the newest window after its
/// cursor in time order; when that holds less than a batch of matches the
/// terms are rare, and the rest comes from the GIN index (few rows to
/// sort). So both kinds cost little, whatever the planner would guess
/// about how the terms combine.
const WINDOW: i64 = 4096;
/// Candidates per round once the GIN index answers: each round runs the
/// index lookup again, so few large rounds beat many small ones (a term's
/// rows may pass the tsquery and still fail the exact match).
const RARE_BATCH: i64 = 2048;

/// The tsquery of `terms`: their whole words, and each last token as a
/// prefix; `None` when they have no token.
fn tsquery(terms: &[QueryTerm]) -> Option<String> {
    // Tokens are word characters only: no quote or backslash to escape.
    let words = terms.iter().flat_map(|t| t.words.iter().map(|w| format!("'{w}'")));
    let prefixes = terms.iter().flat_map(|t| t.prefix.iter().map(|p| format!("'{p}':*")));
    let all: Vec<String> = words.chain(prefixes).collect();
    (!all.is_empty()).then(|| all.join(" & "))
}

#[async_trait]
impl SearchStore for PgStore {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        const WHAT: &str = "search messages";
        let tsq = tsquery(&query.terms);
        let room = query.room.as_ref().map(|r| r.to_string());
        self.run(WHAT, async |client| {
            let mut page = PageBuilder::new(query);
            let (mut ts, mut after_room, mut after_id) = match &query.before {
                Some(b) => (b.ts_ms, b.room.clone(), to_db(b.id)),
                None => (i64::MAX, String::new(), 0),
            };
            let mut batch: i64 = ((query.limit as i64 + 1) * 2).max(64);
            // One room: its matches straight from the index (a window of
            // every room's newest rows holds few of one room's).
            let mut windowed = tsq.is_none() || room.is_none();
            if !windowed {
                batch = RARE_BATCH;
            }
            let words = tsq.clone().unwrap_or_default();
            // Every token goes to the GIN index (asking it for fewer read
            // long lists of common words in measurements either way).
            let index_words = words.clone();
            loop {
                let sql = match (&tsq, windowed, &room) {
                    (None, _, _) => ANY_IN_WINDOW,
                    (Some(_), true, _) => WORDS_IN_WINDOW,
                    (Some(_), false, None) => WORDS,
                    (Some(_), false, Some(_)) => WORDS_IN_ROOM,
                };
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                    [&words, &member_of, &room, &ts, &after_room, &after_id, &batch, &WINDOW, &index_words];
                let found = rows(&*client, WHAT, sql, &params).await?;
                for row in &found {
                    if !page.offer(&message_of(row)) {
                        return Ok(page.finish());
                    }
                }
                if let Some(last) = found.last().filter(|_| found.len() as i64 == batch) {
                    (ts, after_room, after_id) = (last.get(6), last.get(0), last.get(1));
                    batch = (batch * 2).min(4096);
                    continue;
                }
                if !windowed {
                    break;
                }
                // The window held less than a batch: go on after it.
                let edge = rows(&*client, WHAT, WINDOW_EDGE, &[&ts, &after_room, &after_id, &(WINDOW - 1)]).await?;
                let Some(edge) = edge.first() else { break };
                (ts, after_room, after_id) = (edge.get(0), edge.get(1), edge.get(2));
                windowed = tsq.is_none();
                if !windowed {
                    batch = RARE_BATCH;
                }
            }
            Ok(page.finish())
        })
        .await
    }
}

/// A candidate row as a message (its text as it is now).
fn message_of(row: &tokio_postgres::Row) -> Message {
    Message {
        room: row.get(0),
        id: from_db(row.get(1)),
        user: row.get(2),
        text: row.get(3),
        ts: row.get(4),
        deleted: row.get(5),
        ..Message::default()
    }
}

/// Writes the search rows of what batches planned: a live message's
/// tokens (added or replaced), a deleted one's row removed. In the
/// caller's transaction, beside the messages.
pub(super) async fn write_rows(client: &impl GenericClient, rooms: &[(&str, &Writes)]) -> Result<u64, StoreError> {
    let all = rooms.iter().flat_map(|&(room, w)| w.new_messages.iter().chain(w.changed_messages.iter()).map(move |m| (room, m)));
    let (gone, live): (Vec<(&str, &MessageNow)>, Vec<(&str, &MessageNow)>) = all.partition(|(_, m)| m.deleted);
    let upserted = async {
        if live.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = live.iter().map(|(room, _)| *room).collect();
        let ids: Vec<i64> = live.iter().map(|(_, m)| to_db(m.id)).collect();
        let times: Vec<i64> = live.iter().map(|(_, m)| ts_ms(&m.ts)).collect();
        let words: Vec<String> = live.iter().map(|(_, m)| tokens(&fold(&m.text)).join(" ")).collect();
        execute(client, "index messages", UPSERT, &[&names, &ids, &times, &words]).await
    };
    let deleted = async {
        if gone.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = gone.iter().map(|(room, _)| *room).collect();
        let ids: Vec<i64> = gone.iter().map(|(_, m)| to_db(m.id)).collect();
        execute(client, "unindex deleted messages", DELETE, &[&names, &ids]).await
    };
    let (upserted, deleted) = tokio::try_join!(upserted, deleted)?;
    Ok(upserted + deleted)
}

/// Messages stored before migration 4, a chunk per round.
const BACKFILL_CHUNK: i64 = 2_000;
const BACKFILL_CURSOR: &str = "SELECT room, id FROM search_backfill LIMIT 1 FOR UPDATE SKIP LOCKED";
const BACKFILL_NEXT: &str = "SELECT room, id, text, ts FROM messages WHERE (room, id) > ($1::text, $2::bigint) AND NOT deleted
    ORDER BY room, id LIMIT $3";
const BACKFILL_ROWS: &str = "INSERT INTO message_search (room, id, ts_ms, words)
    SELECT room, id, ts_ms, array_to_tsvector(string_to_array(words, ' '))
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS w (room, id, ts_ms, words)
    ON CONFLICT (room, id) DO NOTHING";
const BACKFILL_MOVE: &str = "UPDATE search_backfill SET room = $1, id = $2";
const BACKFILL_DONE: &str = "DELETE FROM search_backfill";

/// Indexes the messages stored before search existed (migration 4 left
/// a cursor in `search_backfill`), a chunk per transaction, until none is
/// left; nodes share the work through the cursor's row lock. How many.
pub(super) async fn backfill(pool: &Pool) -> Result<u64, StoreError> {
    const WHAT: &str = "index older messages";
    const LIMIT: Duration = Duration::from_secs(30);
    let mut total = 0;
    loop {
        let done = run_until(pool, Instant::now() + LIMIT, LIMIT, WHAT, async |client| {
            let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
            let cursor = rows(&tx, WHAT, BACKFILL_CURSOR, &[]).await?;
            let Some(at) = cursor.first() else { return Ok(None) };
            let (room, id): (String, i64) = (at.get(0), at.get(1));
            let chunk = rows(&tx, WHAT, BACKFILL_NEXT, &[&room, &id, &BACKFILL_CHUNK]).await?;
            let names: Vec<String> = chunk.iter().map(|r| r.get(0)).collect();
            let ids: Vec<i64> = chunk.iter().map(|r| r.get(1)).collect();
            let times: Vec<i64> = chunk.iter().map(|r| ts_ms(r.get(3))).collect();
            let words: Vec<String> = chunk.iter().map(|r| tokens(&fold(r.get(2))).join(" ")).collect();
            execute(&tx, WHAT, BACKFILL_ROWS, &[&names, &ids, &times, &words]).await?;
            match (names.last(), ids.last()) {
                (Some(room), Some(id)) if chunk.len() as i64 == BACKFILL_CHUNK => {
                    execute(&tx, WHAT, BACKFILL_MOVE, &[room, id]).await?;
                }
                _ => {
                    execute(&tx, WHAT, BACKFILL_DONE, &[]).await?;
                }
            }
            tx.commit().await.map_err(|e| db_error(WHAT, e))?;
            Ok(Some(chunk.len() as u64))
        })
        .await?;
        match done {
            Some(count) => total += count,
            None => return Ok(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::search::text::parse_terms;

    #[test]
    fn terms_become_a_tsquery_of_words_and_prefixes() {
        assert_eq!(tsquery(&parse_terms("https://Example.com/a go")).as_deref(), Some("'example' & 'a':* & 'go':*"));
        assert_eq!(tsquery(&parse_terms("?!")), None);
    }
}
