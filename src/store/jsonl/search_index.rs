//! The search index of a data directory: a tantivy index in `search/`,
//! beside the room files, and the thread that keeps it up to date.
//!
//! One document per live message: its key (`room/id`), room, visibility
//! scope (`*` for a public room, else the room's name), post time (ms, a
//! fast field: results come newest first), stored author, text and time,
//! and two token fields (`search::text`): `words` (whole tokens) and
//! `prefixes` (every token's first 1–12 characters). A query term looks up
//! its whole words and its last token's start, AND-ed; candidates come in
//! time order and [`PageBuilder`] keeps those the text really matches.
//!
//! Writes: `JsonlStore::append` hands every stored event to the indexer
//! thread ([`SearchIndex::record`]), which applies it (a post adds, an edit
//! replaces, a delete removes) and commits at most [`COMMIT_EVERY`] later,
//! then reloads the reader: a message is findable well within a second.
//! Each commit carries, as its payload, the last seq indexed per room; on
//! open the thread first replays each room file past that seq, so what a
//! crash kept from the index is caught up, and an index that is missing,
//! damaged or of another schema is deleted and rebuilt from the room files
//! (searches meanwhile find what is indexed so far). Events it already has
//! (seq at or below its mark) are skipped, so the replay and new appends
//! may overlap.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, DocSetCollector, TopDocs};
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::event_line;
use super::lines;
use crate::model::{EventKind, Message, RoomName, StoredEvent};
use crate::store::search::{PageBuilder, SearchPage, SearchQuery, text};

/// A change is findable at most this long after it is handed over (plus
/// the commit itself).
pub const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// The indexer's memory budget (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 50_000_000;
/// While replaying room files, commit every this many documents.
const REPLAY_COMMIT: usize = 200_000;
/// Bump when the schema or the tokens change: an older index is rebuilt.
const VERSION: u32 = 1;
/// The scope of a public room (no room name has a `*`).
const PUBLIC: &str = "*";

/// The fields of the schema.
#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    room: Field,
    scope: Field,
    id: Field,
    ts_ms: Field,
    ts: Field,
    user: Field,
    text: Field,
    words: Field,
    prefixes: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let tokens = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer("whitespace").set_index_option(IndexRecordOption::Basic));
    let fields = Fields {
        key: builder.add_text_field("key", STRING),
        room: builder.add_text_field("room", STRING | STORED),
        scope: builder.add_text_field("scope", STRING),
        id: builder.add_u64_field("id", STORED),
        ts_ms: builder.add_i64_field("ts_ms", FAST | INDEXED),
        ts: builder.add_text_field("ts", STORED),
        user: builder.add_text_field("user", STORED),
        text: builder.add_text_field("text", STORED),
        words: builder.add_text_field("words", tokens.clone()),
        prefixes: builder.add_text_field("prefixes", tokens),
    };
    (builder.build(), fields)
}

/// What each commit records: how far each room is indexed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Marks {
    version: u32,
    rooms: BTreeMap<String, u64>,
}

enum Op {
    Events(Vec<StoredEvent>),
    /// Commit now and answer.
    Commit(mpsc::Sender<()>),
}

/// The index of a data directory, and the handle on its indexer thread.
pub struct SearchIndex {
    reader: IndexReader,
    fields: Fields,
    ops: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    /// The indexer, until it is started.
    idle: Option<Indexer>,
}

impl SearchIndex {
    /// Opens `data_dir/search`, rebuilding it if it is missing, damaged or
    /// of another version. Blocking. Nothing is indexed until [`start`](Self::start).
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("search");
        let (index, marks) = match open_existing(&path) {
            Ok(found) => found,
            Err(why) => {
                if path.exists() {
                    tracing::warn!(index = %path.display(), %why, "the search index cannot be used; rebuilding it from the room files");
                    std::fs::remove_dir_all(&path)?;
                }
                std::fs::create_dir_all(&path)?;
                let (schema, _) = schema();
                (Index::create_in_dir(&path, schema).map_err(to_io)?, Marks { version: VERSION, ..Marks::default() })
            }
        };
        let (_, fields) = schema();
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(to_io)?;
        let writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(to_io)?;
        let indexer = Indexer { writer, reader: reader.clone(), fields, marks, pending: HashMap::new(), dirty: 0, is_private: Arc::new(|_| true) };
        Ok(Self { reader, fields, ops: None, thread: None, idle: Some(indexer) })
    }

    /// Starts the indexer, which first catches up with the files of
    /// `rooms` in `rooms_dir`. `is_private` says whether a room is
    /// private (fixed when it was created). Blocking only to spawn.
    pub fn start(&mut self, rooms_dir: &Path, rooms: Vec<RoomName>, is_private: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> io::Result<()> {
        let Some(mut indexer) = self.idle.take() else { return Ok(()) };
        indexer.is_private = is_private;
        let (ops, queue) = mpsc::channel();
        let rooms_dir = rooms_dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || indexer.run(&rooms_dir, rooms, queue))?;
        self.ops = Some(ops);
        self.thread = Some(thread);
        Ok(())
    }

    /// Hands stored events to the indexer (never blocks).
    pub fn record(&self, events: Vec<StoredEvent>) {
        if let Some(ops) = &self.ops
            && !events.is_empty()
        {
            let _ = ops.send(Op::Events(events));
        }
    }

    /// Waits until everything handed over so far is committed and
    /// searchable. Blocking.
    pub fn commit(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(ops) = &self.ops
            && ops.send(Op::Commit(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }

    /// A page of results for `query` among the public rooms and `member_of`.
    /// Blocking.
    pub fn search(&self, query: &SearchQuery, member_of: &[String]) -> io::Result<SearchPage> {
        let searcher = self.reader.searcher();
        let filter = self.filter(query, member_of);
        let mut page = PageBuilder::new(query);
        let mut upper = query.before.as_ref().map(|b| b.ts_ms);
        let mut batch = ((query.limit + 1) * 2).max(64);
        loop {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, filter.box_clone())];
            if let Some(upper) = upper {
                clauses.push((Occur::Must, self.time_range(Bound::Unbounded, Bound::Included(upper))));
            }
            let top = newest(&searcher, &BooleanQuery::new(clauses), batch).map_err(to_io)?;
            let Some(oldest) = top.last().map(|(ts, _)| ts.unwrap_or(i64::MIN)) else { break };
            let exhausted = top.len() < batch;
            let mut docs: Vec<DocAddress> = top.iter().filter(|(ts, _)| exhausted || ts.unwrap_or(i64::MIN) > oldest).map(|(_, d)| *d).collect();
            if !exhausted {
                // The oldest time's documents may not all have made the cut: take them all.
                let same = BooleanQuery::new(vec![
                    (Occur::Must, filter.box_clone()),
                    (Occur::Must, self.time_range(Bound::Included(oldest), Bound::Included(oldest))),
                ]);
                docs.extend(searcher.search(&same, &DocSetCollector).map_err(to_io)?);
            }
            let mut messages = docs.into_iter().map(|d| self.message(&searcher, d)).collect::<io::Result<Vec<_>>>()?;
            messages.sort_unstable_by_key(|m| std::cmp::Reverse(crate::store::search::SearchKey::of(m)));
            if messages.iter().any(|m| !page.offer(m)) || exhausted || oldest == i64::MIN {
                break;
            }
            upper = Some(oldest - 1);
            batch = (batch * 2).min(4096);
        }
        Ok(page.finish())
    }

    /// The query's terms, room and visibility, as one query.
    fn filter(&self, query: &SearchQuery, member_of: &[String]) -> Box<dyn Query> {
        let f = self.fields;
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for query_term in &query.terms {
            clauses.extend(query_term.words.iter().map(|w| (Occur::Must, term(f.words, w))));
            clauses.extend(query_term.prefix.iter().map(|p| (Occur::Must, term(f.prefixes, p))));
        }
        let scopes = std::iter::once(PUBLIC).chain(member_of.iter().map(String::as_str));
        clauses.push((Occur::Must, Box::new(TermSetQuery::new(scopes.map(|s| Term::from_field_text(f.scope, s))))));
        if let Some(room) = &query.room {
            clauses.push((Occur::Must, term(f.room, room.as_str())));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn time_range(&self, from: Bound<i64>, to: Bound<i64>) -> Box<dyn Query> {
        let term = |ts: i64| Term::from_field_i64(self.fields.ts_ms, ts);
        Box::new(RangeQuery::new(from.map(term), to.map(term)))
    }

    fn message(&self, searcher: &Searcher, address: DocAddress) -> io::Result<Message> {
        let doc: TantivyDocument = searcher.doc(address).map_err(to_io)?;
        Ok(message_of(&doc, &self.fields))
    }
}

/// The `limit` newest documents matching `query`, newest first. Segments
/// are searched newest first (by their greatest time), and a segment whose
/// every document is older than the `limit`-th found so far is skipped:
/// the index is written in time order, so a query matching many messages
/// reads only the recent segments, not every match.
fn newest(searcher: &Searcher, query: &dyn Query, limit: usize) -> tantivy::Result<Vec<(Option<i64>, DocAddress)>> {
    let collector = TopDocs::with_limit(limit).order_by_fast_field::<i64>("ts_ms", Order::Desc);
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let readers = searcher.segment_readers();
    let mut segments = Vec::with_capacity(readers.len());
    for (ord, reader) in readers.iter().enumerate() {
        segments.push((reader.fast_fields().i64("ts_ms")?.max_value(), ord));
    }
    segments.sort_unstable_by(|a, b| b.cmp(a));
    let mut best: Vec<(Option<i64>, DocAddress)> = Vec::new();
    for (newest_here, ord) in segments {
        let kth = best.get(limit.saturating_sub(1)).and_then(|(ts, _)| *ts);
        if best.len() >= limit && kth.is_some_and(|kth| kth > newest_here) {
            break;
        }
        let found = collector.collect_segment(weight.as_ref(), ord as u32, &readers[ord])?;
        best.extend(collector.merge_fruits(vec![found])?);
        best.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        best.truncate(limit);
    }
    Ok(best)
}

impl Drop for SearchIndex {
    /// Stops the indexer after its last commit (so the index can be opened
    /// again at once).
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The stored message of a document.
fn message_of(doc: &TantivyDocument, f: &Fields) -> Message {
    let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    Message {
        id: doc.get_first(f.id).and_then(|v| v.as_u64()).unwrap_or(0),
        room: text(f.room),
        user: text(f.user),
        text: text(f.text),
        ts: text(f.ts),
        ..Message::default()
    }
}

/// An index that exists, is whole, and is of this version, with its marks.
fn open_existing(path: &Path) -> Result<(Index, Marks), String> {
    if !path.join("meta.json").exists() {
        return Err("it does not exist".into());
    }
    let index = Index::open_in_dir(path).map_err(|e| e.to_string())?;
    if index.schema() != schema().0 {
        return Err("its schema is another version's".into());
    }
    let damaged = index.validate_checksum().map_err(|e| e.to_string())?;
    if !damaged.is_empty() {
        return Err(format!("damaged files: {damaged:?}"));
    }
    let payload = index.load_metas().map_err(|e| e.to_string())?.payload;
    let marks: Marks = match payload {
        Some(json) => serde_json::from_str(&json).map_err(|e| e.to_string())?,
        None => Marks { version: VERSION, ..Marks::default() },
    };
    if marks.version != VERSION {
        return Err(format!("it is version {}, this chatroom makes {VERSION}", marks.version));
    }
    Ok((index, marks))
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("search index: {e}"))
}

/// The indexer thread's state.
struct Indexer {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    marks: Marks,
    /// Messages added since the last commit (not yet searchable), by key:
    /// what an edit of one of them starts from.
    pending: HashMap<String, Message>,
    /// Changes since the last commit.
    dirty: usize,
    /// Whether a room is private (its documents' scope is its name).
    is_private: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Indexer {
    fn run(mut self, rooms_dir: &Path, rooms: Vec<RoomName>, queue: mpsc::Receiver<Op>) {
        let started = Instant::now();
        let mut replayed = 0;
        for room in rooms {
            match self.replay(&rooms_dir.join(format!("{room}.jsonl")), room.as_str()) {
                Ok(count) => replayed += count,
                Err(e) => tracing::warn!(room = %room, error = %e, "could not index a room's file"),
            }
        }
        self.commit();
        if replayed > 0 {
            tracing::info!(events = replayed, ms = started.elapsed().as_millis() as u64, "search index caught up with the room files");
        }
        let mut since_commit: Option<Instant> = None;
        loop {
            let wait = since_commit.map_or(Duration::from_secs(3600), |t| COMMIT_EVERY.saturating_sub(t.elapsed()));
            match queue.recv_timeout(wait) {
                Ok(Op::Events(events)) => {
                    events.iter().for_each(|e| self.apply(e));
                    since_commit.get_or_insert_with(Instant::now);
                }
                Ok(Op::Commit(done)) => {
                    self.commit();
                    since_commit = None;
                    let _ = done.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.commit();
                    since_commit = None;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if since_commit.is_some_and(|t| t.elapsed() >= COMMIT_EVERY) {
                self.commit();
                since_commit = None;
            }
        }
        self.commit();
    }

    /// Indexes the events of a room file past the room's mark; how many.
    fn replay(&mut self, path: &Path, room: &str) -> io::Result<usize> {
        let mark = self.marks.rooms.get(room).copied().unwrap_or(0);
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let start = lines::offset_of_first_seq_at_least(&file, len, mark + 1)?;
        file.seek(SeekFrom::Start(start))?;
        let hint = path.display().to_string();
        let mut count = 0;
        for line in BufReader::new(file).split(b'\n') {
            let Some(event) = event_line::parse(&line?, &hint) else { continue };
            self.apply(&event);
            count += 1;
            if self.dirty >= REPLAY_COMMIT {
                self.commit();
            }
        }
        Ok(count)
    }

    /// Applies one stored event, unless the index has it already.
    fn apply(&mut self, event: &StoredEvent) {
        let mark = self.marks.rooms.entry(event.room.clone()).or_insert(0);
        if event.seq <= *mark {
            return;
        }
        *mark = event.seq;
        match &event.kind {
            EventKind::Post(message) if !message.deleted => self.put(message.clone()),
            EventKind::Edit { id, text: Some(text), .. } => {
                if let Some(mut message) = self.current(&event.room, *id) {
                    message.text = text.clone();
                    self.put(message);
                }
            }
            EventKind::Delete { id, .. } => self.remove(&key(&event.room, *id)),
            _ => {}
        }
        self.dirty += 1;
    }

    /// Adds `message`, replacing any earlier copy.
    fn put(&mut self, message: Message) {
        let f = self.fields;
        let k = key(&message.room, message.id);
        self.remove(&k);
        let folded = text::fold(&message.text);
        let words = text::tokens(&folded);
        let mut doc = TantivyDocument::default();
        doc.add_text(f.key, &k);
        doc.add_text(f.room, &message.room);
        doc.add_text(f.scope, if (self.is_private)(&message.room) { message.room.as_str() } else { PUBLIC });
        doc.add_u64(f.id, message.id);
        doc.add_i64(f.ts_ms, crate::store::search::ts_ms(&message.ts));
        doc.add_text(f.ts, &message.ts);
        doc.add_text(f.user, &message.user);
        doc.add_text(f.text, &message.text);
        doc.add_text(f.prefixes, text::prefixes(&words).join(" "));
        doc.add_text(f.words, words.join(" "));
        if let Err(e) = self.writer.add_document(doc) {
            tracing::warn!(error = %e, "could not index a message");
        }
        self.pending.insert(k, message);
    }

    fn remove(&mut self, k: &str) {
        self.writer.delete_term(Term::from_field_text(self.fields.key, k));
        self.pending.remove(k);
    }

    /// Message `id` of `room` as indexed now (committed or not).
    fn current(&self, room: &str, id: u64) -> Option<Message> {
        let k = key(room, id);
        if let Some(message) = self.pending.get(&k) {
            return Some(message.clone());
        }
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.fields.key, &k), IndexRecordOption::Basic);
        let found = searcher.search(&query, &TopDocs::with_limit(1).order_by_score()).ok()?;
        let (_, address) = found.first()?;
        let doc: TantivyDocument = searcher.doc(*address).ok()?;
        Some(message_of(&doc, &self.fields))
    }

    /// Commits (with the marks) and makes it searchable.
    fn commit(&mut self) {
        if self.dirty == 0 {
            return;
        }
        let payload = serde_json::to_string(&self.marks).expect("marks serialise");
        let committed = self.writer.prepare_commit().and_then(|mut prepared| {
            prepared.set_payload(&payload);
            prepared.commit()
        });
        match committed.and_then(|_| self.reader.reload()) {
            Ok(()) => {
                self.pending.clear();
                self.dirty = 0;
            }
            Err(e) => tracing::warn!(error = %e, "could not commit the search index"),
        }
    }
}

/// A message's key in the index.
fn key(room: &str, id: u64) -> String {
    format!("{room}/{id}")
}
