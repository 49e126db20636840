//! Property tests of the `MessageStore` contract (src/store/mod.rs): any
//! interleaving of appends (posts with repeated `client_id`s, replies to
//! live, deleted, unknown messages and to replies, reactions toggled on
//! any of them, edits and deletes of live, deleted, unknown and others'
//! messages, batches of a few, and floods of posts past the dedup window),
//! reads with arbitrary bounds (thread pages too), and restarts (the store
//! dropped and opened again on its data) leaves a log whose replay is the
//! live state.
//!
//! Each case runs one generated sequence against a backend and, step by
//! step, against the in-memory reference store (the executable spec):
//! - every append answers as the reference does (a new event with the same
//!   seq, the same duplicate, the same refusal), and new seqs strictly
//!   increase;
//! - every history, events or thread read with random `after`/`before`/
//!   `limit` returns what the reference returns (thread participants too);
//! - after every restart and at the end: the whole history equals the
//!   reference's, the whole event log equals the reference's, replaying
//!   the backend's own log gives exactly its own history (timestamps
//!   included), seqs strictly increase up to `last_seq`, and every
//!   `(user, client_id)` sent so far is found (or not) as the reference
//!   finds it — dedup holds across restarts.
//!
//! Timestamps differ between two stores, so answers are compared with
//! them blanked; the replay check keeps them.
//!
//! Backends: JSON-lines in a temporary directory, and PostgreSQL in a
//! database of each case's own (`common::pg`; skipped loudly without a
//! server, mandatory under `CI=true`), with fewer cases.
//!
//! `PROPTEST_CASES=N` sets the JSON-lines case count (default 24); the
//! PostgreSQL test runs a sixteenth of it (at least 4). Each test prints its
//! case count and time. A failure is shrunk and saved under
//! tests/proptest-regressions/ (commit it: it is replayed first).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chatroom::model::{EventKind, Message, NewEvent, ReactionSet, RoomName, StoredEvent, Username};
use chatroom::store::jsonl::JsonlStore;
use chatroom::store::memory::MemoryStore;
use chatroom::store::postgres::PgStore;
use chatroom::store::{Appended, DEDUP_WINDOW, Fsync, HistoryQuery, MAX_PAGE, MessageStore, StoreError};
use common::pg::TestDatabase;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// Authors: "ANN" is "ann" in another case (the same user: same dedup key,
/// allowed to change ann's messages).
const USERS: [&str; 3] = ["ann", "ANN", "bob"];
/// How many `client_id`s regular posts draw from (few, so they repeat).
const CLIENT_IDS: usize = 4;
/// Steps per generated sequence.
const MAX_STEPS: usize = 30;
/// The emoji reactions draw from.
const EMOJI: [&str; 2] = ["👍", "🎉"];

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Step {
    /// One append of a batch of a few events.
    Append(Vec<Change>),
    /// One batch of about [`DEDUP_WINDOW`] posts by one user, with
    /// `client_id`s `flood-0…`: it pushes earlier posts out of the dedup
    /// window, and a second flood repeats the first's ids.
    Flood { user: usize, posts: usize },
    /// A history read, compared with the reference.
    History { after: Option<u64>, before: Option<u64>, limit: usize },
    /// An events read, compared with the reference.
    Events { after: u64, limit: usize },
    /// A thread page and the thread's participants, compared with the
    /// reference.
    Thread { target: Target, after: u64, limit: usize },
    /// Drop the store and open it again on its data.
    Restart,
}

#[derive(Debug, Clone)]
enum Change {
    Post { user: usize, client: usize },
    Edit { user: usize, target: Target },
    Delete { user: usize, target: Target },
    Reply { user: usize, client: usize, target: Target },
    React { user: usize, target: Target, emoji: usize },
}

/// Which message an edit or delete names.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// One of the posts stored so far (deleted ones included).
    Posted(Index),
    /// Any id: mostly ones that exist, some that never will.
    Id(u64),
}

// ---- strategies ------------------------------------------------------------

fn user() -> impl Strategy<Value = usize> {
    0..USERS.len()
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => any::<Index>().prop_map(Target::Posted), 1 => (0u64..40).prop_map(Target::Id), 1 => Just(Target::Id(u64::MAX))]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (user(), 0..CLIENT_IDS).prop_map(|(user, client)| Change::Post { user, client }),
        2 => (user(), target()).prop_map(|(user, target)| Change::Edit { user, target }),
        2 => (user(), target()).prop_map(|(user, target)| Change::Delete { user, target }),
        3 => (user(), 0..CLIENT_IDS, target()).prop_map(|(user, client, target)| Change::Reply { user, client, target }),
        3 => (user(), target(), 0..EMOJI.len()).prop_map(|(user, target, emoji)| Change::React { user, target, emoji }),
    ]
}

/// A seq bound: small ones (inside a short room), the largest, or any.
fn bound() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..60, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..60, 1 => Just(MAX_PAGE)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => prop::collection::vec(change(), 1..=3).prop_map(Step::Append),
        1 => (user(), (DEDUP_WINDOW - 8)..(DEDUP_WINDOW + 8)).prop_map(|(user, posts)| Step::Flood { user, posts }),
        3 => (prop::option::of(bound()), prop::option::of(bound()), limit())
            .prop_map(|(after, before, limit)| Step::History { after, before, limit }),
        2 => (bound(), limit()).prop_map(|(after, limit)| Step::Events { after, limit }),
        2 => (target(), bound(), limit()).prop_map(|(target, after, limit)| Step::Thread { target, after, limit }),
        3 => Just(Step::Restart),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..=MAX_STEPS)
}

// ---- backends ----------------------------------------------------------------

/// A store under test that can be closed and opened again on its data.
trait Subject: Sized {
    fn store(&self) -> Arc<dyn MessageStore>;
    /// Flushes, drops the store and opens its data again.
    async fn restart(self) -> Self;
}

/// The JSON-lines files in a temporary directory.
struct Jsonl {
    dir: tempfile::TempDir,
    store: Arc<JsonlStore>,
}

impl Jsonl {
    fn open(dir: tempfile::TempDir) -> Self {
        let store = Arc::new(JsonlStore::open(dir.path(), Fsync::Never).expect("the JSON-lines store opens"));
        Self { dir, store }
    }
}

impl Subject for Jsonl {
    fn store(&self) -> Arc<dyn MessageStore> {
        self.store.clone()
    }

    async fn restart(self) -> Self {
        self.store.flush().await.expect("flushed");
        assert_eq!(Arc::strong_count(&self.store), 1, "no handle outlives the store");
        let Self { dir, store } = self;
        drop(store);
        Self::open(dir)
    }
}

/// PostgreSQL, in a database of the case's own.
struct Postgres {
    store: Arc<PgStore>,
    database: TestDatabase,
}

impl Subject for Postgres {
    fn store(&self) -> Arc<dyn MessageStore> {
        self.store.clone()
    }

    async fn restart(self) -> Self {
        let Self { store, database } = self;
        drop(store);
        let store = Arc::new(PgStore::open(database.url(), Fsync::Never).await.expect("the PostgreSQL store opens again"));
        Self { store, database }
    }
}

// ---- the property ------------------------------------------------------------

/// Runs `steps` on `subject` and on a fresh reference store, checking as
/// the module doc says.
async fn check_sequence<S: Subject>(mut subject: S, forgets: Forgets, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let reference = MemoryStore::new();
    let room = RoomName::parse("general").expect("a valid name");
    let mut model = Model { forgets, ..Model::default() };
    for step in steps {
        match step {
            Step::Append(changes) => {
                let batch: Vec<NewEvent> = changes.iter().map(|c| model.new_event(c)).collect();
                model.append(&subject.store(), &reference, &room, batch).await?;
            }
            Step::Flood { user, posts } => {
                let batch = (0..posts).map(|n| model.post(user, format!("flood-{n}"))).collect();
                model.append(&subject.store(), &reference, &room, batch).await?;
            }
            Step::History { after, before, limit } => {
                let query = HistoryQuery { after, before, limit };
                let got = subject.store().history(&room, query).await.map_err(fail("history"))?;
                let want = reference.history(&room, query).await.map_err(fail("reference history"))?;
                prop_assert_eq!(blank_messages(got), blank_messages(want), "history {:?}", query);
            }
            Step::Events { after, limit } => {
                let got = subject.store().events(&room, after, limit).await.map_err(fail("events"))?;
                let want = reference.events(&room, after, limit).await.map_err(fail("reference events"))?;
                prop_assert_eq!(blank_events(got), blank_events(want), "events after {} limit {}", after, limit);
            }
            Step::Thread { target, after, limit } => {
                let parent = model.resolve(target);
                let got = subject.store().thread(&room, parent, after, limit).await;
                let want = reference.thread(&room, parent, after, limit).await;
                let blank = |page: Result<chatroom::store::ThreadPage, StoreError>| {
                    page.map(|p| (blank_message(p.parent), blank_messages(p.replies))).map_err(|e| e.to_string())
                };
                prop_assert_eq!(blank(got), blank(want), "thread {} after {} limit {}", parent, after, limit);
                let got = subject.store().thread_participants(&room, parent).await.map_err(|e| e.to_string());
                let want = reference.thread_participants(&room, parent).await.map_err(|e| e.to_string());
                prop_assert_eq!(got, want, "participants of {}", parent);
            }
            Step::Restart => {
                subject = subject.restart().await;
                check_whole(&subject.store(), &reference, &room, &model).await?;
            }
        }
    }
    check_whole(&subject.store(), &reference, &room, &model).await
}

/// What the test remembers between steps: the posts stored (for edit and
/// delete targets), the pairs sent, the newest seq.
#[derive(Default)]
struct Model {
    posted: Vec<u64>,
    sent: BTreeSet<(String, String)>,
    last_seq: u64,
    texts: u64,
    /// (user key, client_id) of each post stored, by id.
    keys: HashMap<u64, (String, String)>,
    /// Keys of deleted posts, when the backend forgets them (see
    /// [`Forgets`]): never sent again, nor looked up.
    deleted: BTreeSet<(String, String)>,
    forgets: Forgets,
}

/// Whether a backend forgets a deleted message's `client_id` at a restart.
/// JSON-lines does: the delete takes the `client_id` out of the file
/// (docs/PROTOCOL.md §11.8) but not out of memory, so a retry is a
/// duplicate until the next restart and a new message after it, while the
/// reference (and PostgreSQL) answer the deleted message each time. Until
/// that is settled, sequences for such a backend never repeat a deleted
/// post's `(user, client_id)`.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Forgets {
    #[default]
    Nothing,
    DeletedClientIds,
}

impl Model {
    fn new_event(&mut self, change: &Change) -> NewEvent {
        self.texts += 1;
        match *change {
            Change::Post { user, client } => self.post(user, format!("c{client}")),
            Change::Edit { user, target } => {
                NewEvent::Edit { user: name(USERS[user]), id: self.resolve(target), text: format!("edit {}", self.texts) }
            }
            Change::Delete { user, target } => NewEvent::Delete { user: name(USERS[user]), id: self.resolve(target) },
            Change::Reply { user, client, target } => {
                let thread = self.resolve(target);
                match self.post(user, format!("c{client}")) {
                    NewEvent::Post { user, text, client_id, .. } => NewEvent::Post { user, text, client_id, thread: Some(thread) },
                    other => other,
                }
            }
            Change::React { user, target, emoji } => {
                NewEvent::React { user: name(USERS[user]), id: self.resolve(target), emoji: EMOJI[emoji].into() }
            }
        }
    }

    /// A post by `USERS[user]` with `client_id`, or with a fresh one where
    /// the backend forgot the deleted post that had it.
    fn post(&mut self, user: usize, client_id: String) -> NewEvent {
        self.texts += 1;
        let forgotten = self.deleted.contains(&(USERS[user].to_lowercase(), client_id.clone()));
        let client_id = if forgotten { format!("{client_id}-{}", self.texts) } else { client_id };
        post(USERS[user], &client_id, self.texts)
    }

    fn resolve(&self, target: Target) -> u64 {
        match target {
            Target::Posted(index) if !self.posted.is_empty() => *index.get(&self.posted),
            Target::Posted(_) => 1,
            Target::Id(id) => id,
        }
    }

    /// Appends `batch` to both stores: the same answers, new seqs strictly
    /// increasing.
    async fn append(&mut self, subject: &Arc<dyn MessageStore>, reference: &MemoryStore, room: &RoomName, batch: Vec<NewEvent>) -> Result<(), TestCaseError> {
        for event in &batch {
            if let NewEvent::Post { user, client_id, .. } = event {
                self.sent.insert((user.key(), client_id.clone()));
            }
        }
        let got = subject.append(room, batch.clone()).await.map_err(fail("append"))?;
        let want = reference.append(room, batch).await.map_err(fail("reference append"))?;
        prop_assert_eq!(got.len(), want.len(), "one answer per event");
        for (got, want) in got.into_iter().zip(want) {
            if let Ok(Appended::New(event)) = &got {
                prop_assert!(event.seq > self.last_seq, "seq {} after {}", event.seq, self.last_seq);
                self.last_seq = event.seq;
                match &event.kind {
                    EventKind::Post(m) => {
                        self.posted.push(event.seq);
                        self.keys.insert(m.id, (m.user.to_lowercase(), m.client_id.clone()));
                    }
                    EventKind::Delete { id, .. } if self.forgets == Forgets::DeletedClientIds => {
                        self.deleted.extend(self.keys.get(id).cloned());
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(blank_answer(got), blank_answer(want));
        }
        Ok(())
    }
}

/// The whole state, after a restart or at the end (see the module doc).
async fn check_whole(subject: &Arc<dyn MessageStore>, reference: &MemoryStore, room: &RoomName, model: &Model) -> Result<(), TestCaseError> {
    let history = all_history(subject.as_ref(), room).await?;
    let events = all_events(subject.as_ref(), room).await?;
    prop_assert_eq!(blank_messages(history.clone()), blank_messages(all_history(reference, room).await?), "the whole history");
    prop_assert_eq!(blank_events(events.clone()), blank_events(all_events(reference, room).await?), "the whole log");
    prop_assert_eq!(replay(&events), history, "replaying the log gives the live state");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs strictly increase: {:?}", seqs);
    prop_assert_eq!(subject.last_seq(room).await.map_err(fail("last_seq"))?, seqs.last().copied().unwrap_or(0));
    prop_assert_eq!(seqs.last().copied().unwrap_or(0), model.last_seq);
    for (user, client_id) in model.sent.difference(&model.deleted) {
        let user = name(user);
        let got = subject.find_sent(room, &user, client_id).await.map_err(fail("find_sent"))?;
        let want = reference.find_sent(room, &user, client_id).await.map_err(fail("reference find_sent"))?;
        prop_assert_eq!(got.map(blank_message), want.map(blank_message), "find_sent({}, {})", user, client_id);
    }
    Ok(())
}

/// The live state a log describes: posts in order, edited to their latest
/// text (`edited_at` the edit's time), replies counted on their parent
/// (`last_reply_at` the latest's time), reactions as toggled, deleted ones
/// redacted.
fn replay(events: &[StoredEvent]) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    let mut at: HashMap<u64, usize> = HashMap::new();
    let mut reactions: HashMap<u64, ReactionSet> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::Post(message) => {
                if let Some(&i) = message.thread.and_then(|parent| at.get(&parent)) {
                    messages[i].reply_count += 1;
                    messages[i].last_reply_at = Some(message.ts.clone());
                }
                at.insert(message.id, messages.len());
                messages.push(message.clone());
            }
            EventKind::Edit { id, text: Some(text), ts, .. } => {
                if let Some(&i) = at.get(id) {
                    messages[i].text = text.clone();
                    messages[i].edited_at = Some(ts.clone());
                }
            }
            EventKind::Edit { text: None, .. } | EventKind::Member { .. } => {}
            EventKind::Delete { id, .. } => {
                if let Some(&i) = at.get(id) {
                    messages[i] = messages[i].redacted();
                }
            }
            EventKind::React { id, user, emoji, added, .. } => {
                reactions.entry(*id).or_default().set(emoji, &user.to_lowercase(), event.seq, *added);
            }
        }
    }
    for m in messages.iter_mut().filter(|m| !m.deleted) {
        m.reactions = reactions.get(&m.id).map(ReactionSet::reactions).unwrap_or_default();
    }
    messages
}

/// Every message, a page at a time.
async fn all_history(store: &dyn MessageStore, room: &RoomName) -> Result<Vec<Message>, TestCaseError> {
    let mut all: Vec<Message> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.id);
        let page = store.history(room, HistoryQuery::after(after, MAX_PAGE)).await.map_err(fail("history page"))?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// Every event, a page at a time.
async fn all_events(store: &dyn MessageStore, room: &RoomName) -> Result<Vec<StoredEvent>, TestCaseError> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store.events(room, after, MAX_PAGE).await.map_err(fail("events page"))?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

// ---- comparing two stores ------------------------------------------------------

/// An append's answer with its timestamps blanked, a refusal as its text.
#[derive(Debug, PartialEq)]
enum Answer {
    New(StoredEvent),
    Duplicate(Message),
    Refused(String),
}

fn blank_answer(answer: Result<Appended, StoreError>) -> Answer {
    match answer {
        Ok(Appended::New(event)) => Answer::New(blank_event(event)),
        Ok(Appended::Duplicate(message)) => Answer::Duplicate(blank_message(message)),
        Err(refused) => Answer::Refused(refused.to_string()),
    }
}

const BLANK: &str = "(time)";

fn blank_message(message: Message) -> Message {
    let ts = if message.ts.is_empty() { String::new() } else { BLANK.into() };
    let last_reply_at = message.last_reply_at.map(|_| BLANK.into());
    Message { ts, edited_at: message.edited_at.map(|_| BLANK.into()), last_reply_at, ..message }
}

fn blank_messages(messages: Vec<Message>) -> Vec<Message> {
    messages.into_iter().map(blank_message).collect()
}

/// Also blanks the author of a deleted message's edit: no frame shows it,
/// and JSON-lines' redacted edit line no longer holds it after a restart.
fn blank_event(event: StoredEvent) -> StoredEvent {
    let kind = match event.kind {
        EventKind::Post(message) => EventKind::Post(blank_message(message)),
        EventKind::Edit { id, text: None, .. } => EventKind::Edit { id, user: String::new(), text: None, ts: BLANK.into() },
        EventKind::Edit { id, user, text, .. } => EventKind::Edit { id, user, text, ts: BLANK.into() },
        EventKind::Delete { id, user, .. } => EventKind::Delete { id, user, ts: BLANK.into() },
        EventKind::React { id, user, emoji, added, reactions, .. } => EventKind::React { id, user, emoji, added, ts: BLANK.into(), reactions },
        EventKind::Member { user, by, added, .. } => EventKind::Member { user, by, added, ts: BLANK.into() },
    };
    StoredEvent { kind, ..event }
}

fn blank_events(events: Vec<StoredEvent>) -> Vec<StoredEvent> {
    events.into_iter().map(blank_event).collect()
}

// ---- helpers -------------------------------------------------------------------

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("a valid name")
}

fn post(user: &str, client_id: &str, n: u64) -> NewEvent {
    NewEvent::Post { user: name(user), text: format!("message {n}"), client_id: client_id.into(), thread: None }
}

/// A store failure as a failed case.
fn fail(what: &'static str) -> impl Fn(StoreError) -> TestCaseError {
    move |e| TestCaseError::fail(format!("{what} failed: {e}"))
}

/// `PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/store_properties.txt"))),
        ..Config::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Runs `cases` sequences through `check`, then prints the count and time.
fn run(label: &str, cases: u32, check: impl Fn(Vec<Step>) -> Result<(), TestCaseError>) {
    let started = Instant::now();
    let outcome = runner(cases).run(&steps(), check);
    if let Err(failure) = outcome {
        panic!("{label}: {failure}");
    }
    // Straight to stderr: libtest would swallow an `eprintln!` of a passing test.
    let figure = format!("{label}: {cases} generated sequences of up to {MAX_STEPS} steps passed in {:.1?}", started.elapsed());
    let _ = writeln!(std::io::stderr(), "{figure}");
}

#[test]
fn jsonl_store_keeps_the_contract_through_any_sequence_and_restarts() {
    run("JSON-lines", cases(24), |steps| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        runtime().block_on(check_sequence(Jsonl::open(dir), Forgets::DeletedClientIds, steps))
    });
}

#[test]
fn postgres_store_keeps_the_contract_through_any_sequence_and_restarts() {
    if runtime().block_on(TestDatabase::create()).is_none() {
        return;
    }
    run("PostgreSQL", (cases(24) / 16).max(4), |steps| {
        runtime().block_on(async {
            let database = TestDatabase::create().await.expect("PostgreSQL answered a moment ago");
            let store = Arc::new(PgStore::open(database.url(), Fsync::Never).await.expect("the PostgreSQL store opens"));
            check_sequence(Postgres { store, database }, Forgets::Nothing, steps).await
        })
    });
}
