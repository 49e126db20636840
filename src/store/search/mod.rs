//! Message search: the [`SearchStore`] contract every backend keeps, and
//! the pieces they share — the matching rule (`text`), the order of
//! results and the cursor that pages through them, and [`PageBuilder`],
//! which turns candidates into a page.
//!
//! The contract, in words (`SearchStore::search`):
//! - a result is a message as it is now whose text [`text::matches`]
//!   every term of the query: an edited message by its new text only, a
//!   deleted one never;
//! - only rooms the reader may see: public rooms, and the private rooms
//!   named in `member_of` (the reader's private rooms and DMs); with
//!   `query.room`, that room only;
//! - newest first, by [`SearchKey`] (the post's time in ms, then room, then
//!   id, all descending); with `query.before`, only results strictly older
//!   than that cursor;
//! - at most `query.limit` results, each with its `highlight` (UTF-16
//!   ranges of the matched parts), and `next_before` — the last result's
//!   cursor — only when more results follow;
//! - what was stored before the call started is found within about a
//!   second (an index may lag its store that long, never longer, and
//!   catches up by itself after a restart; one lost or damaged on disk is
//!   rebuilt from the store's data).
//!
//! Backends: `memory` scans (the reference), `jsonl` keeps a tantivy
//! index beside the data, `postgres` a GIN-indexed token column. Both
//! indexes look candidates up by [`text::tokens`] and confirm each with
//! [`text::matches`], so every backend answers alike.

pub mod text;

use async_trait::async_trait;
use serde::Serialize;

use self::text::QueryTerm;
use crate::model::{Message, RoomName};
use crate::store::StoreError;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most results one search returns.
pub const MAX_RESULTS: usize = 100;
/// Results returned when no limit is given.
pub const DEFAULT_RESULTS: usize = 20;

/// What to look for (validated by `chat::search`).
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// At least one.
    pub terms: Vec<QueryTerm>,
    /// Only this room.
    pub room: Option<RoomName>,
    /// Only results strictly older than this.
    pub before: Option<SearchKey>,
    /// 1 to [`MAX_RESULTS`].
    pub limit: usize,
}

impl SearchQuery {
    /// Whether a message with `key` lies inside the query's bounds (room
    /// and cursor; visibility is the store's).
    pub fn admits(&self, key: &SearchKey) -> bool {
        self.room.as_ref().is_none_or(|r| r.as_str() == key.room) && self.before.as_ref().is_none_or(|b| key < b)
    }
}

/// Where a message stands in search order: newest first is *descending*
/// `(ts_ms, room, id)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SearchKey {
    /// The post's time, ms since the Unix epoch.
    pub ts_ms: i64,
    pub room: String,
    pub id: u64,
}

impl SearchKey {
    pub fn of(message: &Message) -> Self {
        Self { ts_ms: ts_ms(&message.ts), room: message.room.clone(), id: message.id }
    }

    /// The opaque cursor clients send back as `before`.
    pub fn cursor(&self) -> String {
        format!("{}.{}.{}", self.ts_ms, self.id, self.room)
    }

    /// A cursor this server made; `None` for anything else.
    pub fn parse_cursor(cursor: &str) -> Option<Self> {
        let mut parts = cursor.splitn(3, '.');
        let ts_ms = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        let room = RoomName::parse(parts.next()?).ok()?;
        Some(Self { ts_ms, room: room.to_string(), id })
    }
}

/// An RFC 3339 time in ms since the Unix epoch (0 if it does not parse).
pub fn ts_ms(ts: &str) -> i64 {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchHit {
    pub room: String,
    pub id: u64,
    pub user: String,
    pub text: String,
    pub ts: String,
    /// `[start, end)` ranges of `text` in UTF-16 code units.
    pub highlight: Vec<[u32; 2]>,
}

/// One page of results, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchPage {
    pub results: Vec<SearchHit>,
    /// The cursor for the next page (`before`), when there is one.
    pub next_before: Option<String>,
}

/// Message search.
#[async_trait]
pub trait SearchStore: Send + Sync + 'static {
    /// The results of `query` that a reader who is a member of the private
    /// rooms `member_of` may see (see the module doc).
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError>;
}

/// Builds a page from candidates offered in search order (newest first):
/// keeps those inside the query's bounds whose text matches, until the
/// page is full and one more is known to follow.
pub struct PageBuilder<'q> {
    query: &'q SearchQuery,
    hits: Vec<(SearchKey, SearchHit)>,
    more: bool,
}

impl<'q> PageBuilder<'q> {
    pub fn new(query: &'q SearchQuery) -> Self {
        Self { query, hits: Vec::new(), more: false }
    }

    /// Offers the next candidate; `false` once the page needs no more.
    pub fn offer(&mut self, message: &Message) -> bool {
        if self.is_done() {
            return false;
        }
        let key = SearchKey::of(message);
        if message.deleted || !self.query.admits(&key) {
            return true;
        }
        let Some(highlight) = text::matches(&message.text, &self.query.terms) else { return true };
        if self.hits.len() == self.query.limit {
            self.more = true;
            return false;
        }
        let hit = SearchHit {
            room: message.room.clone(),
            id: message.id,
            user: message.user.clone(),
            text: message.text.clone(),
            ts: message.ts.clone(),
            highlight,
        };
        self.hits.push((key, hit));
        true
    }

    /// The page is full and another result follows.
    pub fn is_done(&self) -> bool {
        self.more
    }

    pub fn finish(self) -> SearchPage {
        let next_before = if self.more { self.hits.last().map(|(key, _)| key.cursor()) } else { None };
        SearchPage { results: self.hits.into_iter().map(|(_, hit)| hit).collect(), next_before }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let key = SearchKey { ts_ms: 1_700_000_000_123, room: "dev-ops_2".into(), id: 42 };
        assert_eq!(SearchKey::parse_cursor(&key.cursor()), Some(key));
        for bad in ["", "1.2", "x.2.general", "1.x.general", "1.2.Not A Room", "1.2.../etc"] {
            assert_eq!(SearchKey::parse_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_order_by_time_then_room_then_id() {
        let key = |ts_ms, room: &str, id| SearchKey { ts_ms, room: room.into(), id };
        assert!(key(2, "a", 1) > key(1, "z", 9));
        assert!(key(1, "b", 1) > key(1, "a", 9));
        assert!(key(1, "a", 2) > key(1, "a", 1));
        assert_eq!(ts_ms("2024-01-02T03:04:05.678Z"), 1_704_164_645_678);
    }
}
