//! The storage contract, one suite for every backend: each case is a
//! generic async fn over a [`Backend`], and `contract_suite!` runs all of
//! them against one backend. Adding a backend is one `Backend` impl and one
//! `contract_suite!` line.
//!
//! The `…_survive_a_reopen` cases close the store and open its data again;
//! a backend that keeps nothing past its life (the in-memory one) passes
//! them by saying so (`reopen` gives `None`).
//!
//! Backends: JSON-lines in a temporary directory, in-memory, and
//! PostgreSQL in a database of each test's own (`common::pg`: skipped,
//! loudly, without a server; mandatory under `CI=true`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chatroom::model::{EventKind, Message, NewEvent, RoomName, StoredEvent, Username};
use chatroom::store::jsonl::{JsonlAccounts, JsonlStore};
use chatroom::store::memory::MemoryStore;
use chatroom::store::postgres::PgStore;
use chatroom::store::{
    Appended, DEDUP_WINDOW, Fsync, HistoryQuery, MessageStore, PrivateRoom, ReadMarkerStore, SessionRecord, SessionStore, StoreError,
    SubscriptionStore, UserRecord, UserStore,
};
use common::pg::TestDatabase;

/// One backend's stores, one per concern, as the server holds them.
struct Stores {
    messages: Arc<dyn MessageStore>,
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    subscriptions: Arc<dyn SubscriptionStore>,
    read_markers: Arc<dyn ReadMarkerStore>,
}

impl Stores {
    /// `messages`, and `accounts` for every other concern.
    fn of<A: UserStore + SessionStore + SubscriptionStore + ReadMarkerStore + 'static>(
        messages: Arc<dyn MessageStore>,
        accounts: &Arc<A>,
    ) -> Self {
        Self {
            messages,
            users: accounts.clone(),
            sessions: accounts.clone(),
            subscriptions: accounts.clone(),
            read_markers: accounts.clone(),
        }
    }
}

/// A backend under test.
trait Backend: Sized {
    /// A new store with no data, or `None` when the backend cannot run
    /// here (it has said so loudly; under `CI=true` it panics instead).
    async fn fresh() -> Option<Self>;
    /// Its stores (handles on the same data).
    fn stores(&self) -> Stores;
    /// Closes the store and opens its data again, or `None` if the backend
    /// keeps nothing past its life. Drop every `Stores` first.
    async fn reopen(self) -> Option<Self>;
}

/// The JSON-lines files, in a temporary directory.
struct Jsonl {
    dir: tempfile::TempDir,
    messages: Arc<JsonlStore>,
    accounts: Arc<JsonlAccounts>,
}

impl Jsonl {
    fn open(dir: tempfile::TempDir) -> Self {
        let messages = Arc::new(JsonlStore::open(dir.path(), Fsync::Batch).expect("the message store opens"));
        let accounts = Arc::new(JsonlAccounts::open(dir.path(), Fsync::Batch).expect("the account store opens"));
        Self { dir, messages, accounts }
    }
}

impl Backend for Jsonl {
    async fn fresh() -> Option<Self> {
        Some(Self::open(tempfile::tempdir().expect("a temporary directory")))
    }

    fn stores(&self) -> Stores {
        Stores::of(self.messages.clone(), &self.accounts)
    }

    async fn reopen(self) -> Option<Self> {
        let Self { dir, messages, accounts } = self;
        messages.flush().await.expect("flushed");
        drop((messages, accounts));
        Some(Self::open(dir))
    }
}

/// The reference backend.
struct Memory(Arc<MemoryStore>);

impl Backend for Memory {
    async fn fresh() -> Option<Self> {
        Some(Self(Arc::new(MemoryStore::new())))
    }

    fn stores(&self) -> Stores {
        Stores::of(self.0.clone(), &self.0)
    }

    async fn reopen(self) -> Option<Self> {
        None
    }
}

/// PostgreSQL, in a database of the test's own (dropped afterwards).
struct Postgres {
    store: Arc<PgStore>,
    database: TestDatabase,
}

impl Backend for Postgres {
    async fn fresh() -> Option<Self> {
        let database = TestDatabase::create().await?;
        let store = Arc::new(PgStore::open(database.url(), Fsync::Batch).await.expect("the PostgreSQL store opens"));
        Some(Self { store, database })
    }

    fn stores(&self) -> Stores {
        Stores::of(self.store.clone(), &self.store)
    }

    /// Another store on the same database: what a restart, or another
    /// node, sees.
    async fn reopen(self) -> Option<Self> {
        let Self { store, database } = self;
        drop(store);
        let store = Arc::new(PgStore::open(database.url(), Fsync::Batch).await.expect("the PostgreSQL store opens again"));
        Some(Self { store, database })
    }
}

/// One `#[tokio::test]` per contract case, for `$backend`.
macro_rules! contract_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            contract_suite!(@cases $backend;
                users_are_created_once_and_found_by_key,
                look_alike_names_are_taken,
                users_survive_a_reopen,
                sessions_are_saved_found_touched_and_deleted,
                sessions_survive_a_reopen,
                subscriptions_are_idempotent_sorted_and_cleared,
                subscriptions_survive_a_reopen,
                read_markers_only_move_forward,
                read_markers_are_kept_per_subscriber_and_cleared,
                read_markers_survive_a_reopen,
                a_new_store_has_the_default_room_and_rooms_are_created_once,
                rooms_are_listed_exact_then_prefix_then_the_rest,
                appended_ids_increase_and_a_repeated_client_id_answers_the_stored_copy,
                a_client_id_is_remembered_for_the_last_1024_messages,
                history_reads_after_before_and_limit_oldest_first,
                messages_survive_a_reopen,
                edits_and_deletes_are_checked_and_logged_as_events,
                edits_and_deletes_survive_a_reopen,
                replies_are_counted_on_their_parent_and_paged_as_a_thread,
                a_reply_needs_a_live_parent_that_is_not_a_reply,
                threads_survive_a_reopen,
                reactions_toggle_and_group_by_emoji,
                reactions_need_a_live_message_and_survive_a_reopen,
                private_rooms_admit_members_only_and_are_never_listed,
                direct_messages_have_two_fixed_members,
                members_and_member_events_survive_a_reopen,
            );
        }
    };
    (@cases $backend:ty; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                use super::Backend;
                let Some(backend) = <$backend>::fresh().await else { return };
                super::$case::<$backend>(backend).await;
            }
        )+
    };
}

contract_suite!(jsonl, super::Jsonl);
contract_suite!(memory, super::Memory);
contract_suite!(postgres, super::Postgres);

// ---- helpers -------------------------------------------------------------

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("a valid room name")
}

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("a valid name")
}

fn user(username: &str) -> UserRecord {
    UserRecord { username: username.into(), password_hash: "$argon2id$v=19$test".into(), created_at: "2025-01-01T00:00:00Z".into() }
}

/// A session of `user` whose id hash is made from `n` (64 hex digits, like
/// a real one).
fn session(n: u64, user: &str) -> SessionRecord {
    SessionRecord { id_hash: format!("{n:064x}"), user: user.into(), guest: false, created_ms: 1_000, last_seen_ms: 1_000 }
}

fn send(user: &str, text: &str, client_id: &str) -> NewEvent {
    NewEvent::Post { user: name(user), text: text.into(), client_id: client_id.into(), thread: None }
}

/// Each item's answer of an append, asserting none was refused.
fn ok(answers: Vec<Result<Appended, StoreError>>) -> Vec<Appended> {
    answers.into_iter().map(|a| a.expect("an item of the batch was refused")).collect()
}

/// The message an append answered with (a new post, or the stored copy).
fn msg(appended: &Appended) -> Message {
    match appended {
        Appended::New(event) => event.as_post().expect("a post").clone(),
        Appended::Duplicate(message) => message.clone(),
    }
}

/// Appends messages `1..=count` ("m1", "m2"…) to `room`, one at a time.
async fn fill(messages: &dyn MessageStore, room: &RoomName, count: u64) {
    for n in 1..=count {
        messages.append(room, vec![send("ann", &format!("m{n}"), &format!("c{n}"))]).await.expect("appended");
    }
}

fn ids(messages: &[chatroom::model::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.id).collect()
}

fn names(rooms: Vec<chatroom::store::RoomInfo>) -> Vec<String> {
    rooms.into_iter().map(|r| r.name).collect()
}

// ---- users ---------------------------------------------------------------

async fn users_are_created_once_and_found_by_key<B: Backend>(backend: B) {
    let users = backend.stores().users;
    users.create_user(user("Ann")).await.unwrap();
    assert_eq!(users.find_user("ann").await.unwrap(), Some(user("Ann")), "found by the lower-cased name");
    assert_eq!(users.find_user("bob").await.unwrap(), None);
    let again = users.create_user(user("ANN")).await;
    assert!(matches!(again, Err(StoreError::NameTaken(ref n)) if n == "ANN"), "{again:?}");
    users.create_user(user("bob")).await.unwrap();
    assert_eq!(users.find_user("ann").await.unwrap().unwrap().username, "Ann", "the first account is kept");
}

async fn look_alike_names_are_taken<B: Backend>(backend: B) {
    let users = backend.stores().users;
    users.create_user(user("admin")).await.unwrap();
    // Cyrillic а and А look like Latin a and A.
    let found = users.find_look_alike(&name("\u{0430}dmin")).await.unwrap();
    assert_eq!(found.map(|u| u.username), Some("admin".into()));
    assert_eq!(users.find_look_alike(&name("ADMIN")).await.unwrap().map(|u| u.username), Some("admin".into()));
    assert_eq!(users.find_look_alike(&name("admins")).await.unwrap(), None);
    assert!(matches!(users.create_user(user("\u{0410}DMIN")).await, Err(StoreError::NameTaken(_))));
    assert_eq!(users.find_user("\u{0430}dmin").await.unwrap(), None, "a refused account is not stored");
}

async fn users_survive_a_reopen<B: Backend>(backend: B) {
    backend.stores().users.create_user(user("Ann")).await.unwrap();
    let Some(backend) = backend.reopen().await else { return };
    let users = backend.stores().users;
    assert_eq!(users.find_user("ann").await.unwrap(), Some(user("Ann")));
    assert!(matches!(users.create_user(user("\u{0410}nn")).await, Err(StoreError::NameTaken(_))), "look-alikes too");
}

// ---- sessions ------------------------------------------------------------

async fn sessions_are_saved_found_touched_and_deleted<B: Backend>(backend: B) {
    let sessions = backend.stores().sessions;
    let (ann, bob) = (session(1, "ann"), session(2, "bob"));
    sessions.save_session(ann.clone()).await.unwrap();
    sessions.save_session(bob.clone()).await.unwrap();
    assert_eq!(sessions.find_session(&ann.id_hash).await.unwrap(), Some(ann.clone()));
    assert_eq!(sessions.find_session(&session(3, "x").id_hash).await.unwrap(), None);

    let unknown = session(3, "x").id_hash;
    sessions.touch_sessions(vec![(ann.id_hash.clone(), 5_000), (unknown.clone(), 9_000)]).await.unwrap();
    sessions.touch_sessions(vec![(ann.id_hash.clone(), 2_000)]).await.unwrap();
    let touched = sessions.find_session(&ann.id_hash).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_ms, 5_000, "activity only moves forward");
    assert_eq!(sessions.find_session(&unknown).await.unwrap(), None, "touching an unknown session creates none");

    let mut all = sessions.load_sessions().await.unwrap();
    all.sort_by(|a, b| a.id_hash.cmp(&b.id_hash));
    assert_eq!(all, vec![touched, bob.clone()]);

    sessions.delete_sessions(vec![ann.id_hash.clone(), unknown]).await.unwrap();
    sessions.delete_sessions(vec![ann.id_hash.clone()]).await.unwrap(); // a repeat is harmless
    assert_eq!(sessions.find_session(&ann.id_hash).await.unwrap(), None);
    assert_eq!(sessions.load_sessions().await.unwrap(), vec![bob]);
}

async fn sessions_survive_a_reopen<B: Backend>(backend: B) {
    let sessions = backend.stores().sessions;
    let (ann, bob) = (session(1, "ann"), SessionRecord { guest: true, ..session(2, "gus") });
    sessions.save_session(ann.clone()).await.unwrap();
    sessions.save_session(bob.clone()).await.unwrap();
    sessions.touch_sessions(vec![(bob.id_hash.clone(), 7_000)]).await.unwrap();
    sessions.delete_sessions(vec![ann.id_hash.clone()]).await.unwrap();
    drop(sessions);
    let Some(backend) = backend.reopen().await else { return };
    let sessions = backend.stores().sessions;
    assert_eq!(sessions.find_session(&ann.id_hash).await.unwrap(), None, "a deleted session stays deleted");
    let expected = SessionRecord { last_seen_ms: 7_000, ..bob };
    assert_eq!(sessions.load_sessions().await.unwrap(), vec![expected]);
}

// ---- subscriptions -------------------------------------------------------

async fn subscriptions_are_idempotent_sorted_and_cleared<B: Backend>(backend: B) {
    let subs = backend.stores().subscriptions;
    let guest = session(9, "gus").id_hash;
    for r in ["rust", "general", "rust"] {
        subs.subscribe("ann", &room(r)).await.unwrap();
    }
    subs.subscribe(&guest, &room("go")).await.unwrap();
    assert_eq!(subs.subscriptions("ann").await.unwrap(), ["general", "rust"], "alphabetical, each once");
    assert_eq!(subs.subscriptions(&guest).await.unwrap(), ["go"], "a guest is a subscriber by its id hash");
    assert!(subs.subscriptions("bob").await.unwrap().is_empty());

    subs.unsubscribe("ann", &room("rust")).await.unwrap();
    subs.unsubscribe("ann", &room("rust")).await.unwrap(); // not subscribed: no change
    subs.unsubscribe("bob", &room("rust")).await.unwrap();
    assert_eq!(subs.subscriptions("ann").await.unwrap(), ["general"]);

    subs.clear_subscriptions("ann").await.unwrap();
    subs.clear_subscriptions("ann").await.unwrap();
    assert!(subs.subscriptions("ann").await.unwrap().is_empty());
    assert_eq!(subs.subscriptions(&guest).await.unwrap(), ["go"], "another subscriber's are kept");
}

async fn subscriptions_survive_a_reopen<B: Backend>(backend: B) {
    let subs = backend.stores().subscriptions;
    for r in ["rust", "general", "go"] {
        subs.subscribe("ann", &room(r)).await.unwrap();
    }
    subs.unsubscribe("ann", &room("go")).await.unwrap();
    subs.subscribe("bob", &room("go")).await.unwrap();
    subs.clear_subscriptions("bob").await.unwrap();
    drop(subs);
    let Some(backend) = backend.reopen().await else { return };
    let subs = backend.stores().subscriptions;
    assert_eq!(subs.subscriptions("ann").await.unwrap(), ["general", "rust"]);
    assert!(subs.subscriptions("bob").await.unwrap().is_empty());
}

// ---- read markers --------------------------------------------------------

async fn read_markers_only_move_forward<B: Backend>(backend: B) {
    let markers = backend.stores().read_markers;
    let general = room("general");
    assert_eq!(markers.read_marker("ann", &general).await.unwrap(), None);
    assert!(markers.advance_marker("ann", &general, 5).await.unwrap(), "the first advance creates the marker");
    assert!(!markers.advance_marker("ann", &general, 3).await.unwrap(), "never back");
    assert!(!markers.advance_marker("ann", &general, 5).await.unwrap(), "not moved: same place");
    assert_eq!(markers.read_marker("ann", &general).await.unwrap(), Some(5));
    assert!(markers.advance_marker("ann", &general, 9).await.unwrap());
    assert_eq!(markers.read_marker("ann", &general).await.unwrap(), Some(9));
}

async fn read_markers_are_kept_per_subscriber_and_cleared<B: Backend>(backend: B) {
    let markers = backend.stores().read_markers;
    let guest = session(9, "gus").id_hash;
    markers.advance_marker("ann", &room("general"), 9).await.unwrap();
    markers.advance_marker("ann", &room("rust"), 2).await.unwrap();
    markers.advance_marker(&guest, &room("general"), 4).await.unwrap();
    let expected = BTreeMap::from([("general".to_string(), 9), ("rust".to_string(), 2)]);
    assert_eq!(markers.markers("ann").await.unwrap(), expected);
    assert_eq!(markers.read_marker(&guest, &room("general")).await.unwrap(), Some(4));
    assert_eq!(markers.read_marker("bob", &room("general")).await.unwrap(), None);
    assert!(markers.markers("bob").await.unwrap().is_empty());

    markers.clear_markers("ann").await.unwrap();
    markers.clear_markers("ann").await.unwrap();
    assert!(markers.markers("ann").await.unwrap().is_empty());
    assert_eq!(markers.read_marker("ann", &room("general")).await.unwrap(), None);
    assert_eq!(markers.read_marker(&guest, &room("general")).await.unwrap(), Some(4), "another subscriber's are kept");
    assert!(markers.advance_marker("ann", &room("general"), 1).await.unwrap(), "after a clear, any id moves it");
}

async fn read_markers_survive_a_reopen<B: Backend>(backend: B) {
    let markers = backend.stores().read_markers;
    markers.advance_marker("ann", &room("general"), 9).await.unwrap();
    markers.advance_marker("ann", &room("general"), 4).await.unwrap();
    markers.advance_marker("ann", &room("rust"), 2).await.unwrap();
    markers.advance_marker("bob", &room("rust"), 7).await.unwrap();
    markers.clear_markers("bob").await.unwrap();
    drop(markers);
    let Some(backend) = backend.reopen().await else { return };
    let markers = backend.stores().read_markers;
    let expected = BTreeMap::from([("general".to_string(), 9), ("rust".to_string(), 2)]);
    assert_eq!(markers.markers("ann").await.unwrap(), expected);
    assert!(markers.markers("bob").await.unwrap().is_empty());
    assert!(!markers.advance_marker("ann", &room("general"), 8).await.unwrap(), "still only forward");
}

// ---- rooms and messages --------------------------------------------------

async fn a_new_store_has_the_default_room_and_rooms_are_created_once<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    assert!(messages.room_exists(&room("general")).await.unwrap());
    assert!(!messages.room_exists(&room("rust")).await.unwrap());
    assert_eq!(messages.create_room(&room("rust"), "ann").await.unwrap().name, "rust");
    assert!(messages.room_exists(&room("rust")).await.unwrap());
    let again = messages.create_room(&room("rust"), "bob").await;
    assert!(matches!(again, Err(StoreError::RoomExists(ref r)) if r == "rust"), "{again:?}");
}

async fn rooms_are_listed_exact_then_prefix_then_the_rest<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    for r in ["trust", "rustacean", "go", "rust"] {
        messages.create_room(&room(r), "ann").await.unwrap();
    }
    assert_eq!(names(messages.list_rooms("rust", 10).await.unwrap()), ["rust", "rustacean", "trust"]);
    assert_eq!(names(messages.list_rooms(" RUST ", 2).await.unwrap()), ["rust", "rustacean"], "trimmed, any case, limited");
    assert_eq!(names(messages.list_rooms("", 10).await.unwrap()), ["general", "go", "rust", "rustacean", "trust"]);
    assert!(messages.list_rooms("python", 10).await.unwrap().is_empty());
}

async fn appended_ids_increase_and_a_repeated_client_id_answers_the_stored_copy<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    let first = ok(messages.append(&general, vec![send("ann", "one", "a"), send("bob", "two", "b")]).await.unwrap());
    assert!(matches!(first.as_slice(), [Appended::New(_), Appended::New(_)]));
    assert_eq!(first.iter().map(|a| msg(a).id).collect::<Vec<_>>(), [1, 2]);
    let one = msg(&first[0]).clone();
    assert_eq!((one.room.as_str(), one.user.as_str(), one.text.as_str(), one.client_id.as_str()), ("general", "ann", "one", "a"));

    let batch = vec![
        send("ANN", "one again", "a"),   // the same user (any case), the same client_id
        send("bob", "mine", "a"),        // another user may use the same client_id
        send("cat", "three", "c"),
        send("cat", "three again", "c"), // repeated inside one batch
    ];
    let second = ok(messages.append(&general, batch).await.unwrap());
    assert_eq!(second[0], Appended::Duplicate(one.clone()), "answered with the stored copy");
    assert!(matches!(&second[1], Appended::New(e) if e.seq == 3 && e.as_post().is_some_and(|m| m.user == "bob")));
    assert!(matches!(&second[2], Appended::New(e) if e.seq == 4));
    assert_eq!(second[3], Appended::Duplicate(msg(&second[2]).clone()));

    assert_eq!(messages.find_sent(&general, &name("Ann"), "a").await.unwrap(), Some(one));
    assert_eq!(messages.find_sent(&general, &name("ann"), "zzz").await.unwrap(), None);
    assert_eq!(ids(&messages.history(&general, HistoryQuery::latest(10)).await.unwrap()), [1, 2, 3, 4], "duplicates are not stored");

    let elsewhere = messages.append(&room("nowhere"), vec![send("ann", "x", "x")]).await;
    assert!(matches!(elsewhere, Err(StoreError::RoomNotFound(_))), "{elsewhere:?}");
    messages.create_room(&room("rust"), "ann").await.unwrap();
    let own = ok(messages.append(&room("rust"), vec![send("ann", "x", "a")]).await.unwrap());
    assert!(matches!(&own[0], Appended::New(e) if e.seq == 1), "ids and client_ids are per room");
}

async fn a_client_id_is_remembered_for_the_last_1024_messages<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    ok(messages.append(&general, vec![send("ann", "first", "old")]).await.unwrap());
    let others: Vec<NewEvent> = (2..=DEDUP_WINDOW).map(|n| send("bob", "x", &format!("b{n}"))).collect();
    ok(messages.append(&general, others).await.unwrap());
    let last_in_window = ok(messages.append(&general, vec![send("ann", "again", "old")]).await.unwrap());
    assert!(matches!(&last_in_window[0], Appended::Duplicate(m) if m.id == 1), "id 1 is one of the last 1,024");
    ok(messages.append(&general, vec![send("bob", "x", "pushes id 1 out")]).await.unwrap());
    assert_eq!(messages.find_sent(&general, &name("ann"), "old").await.unwrap(), None);
    let past_window = ok(messages.append(&general, vec![send("ann", "again", "old")]).await.unwrap());
    let expected_id = DEDUP_WINDOW as u64 + 2;
    assert!(matches!(&past_window[0], Appended::New(e) if e.seq == expected_id), "{past_window:?}");
}

async fn history_reads_after_before_and_limit_oldest_first<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    assert!(messages.history(&general, HistoryQuery::latest(50)).await.unwrap().is_empty());
    fill(messages.as_ref(), &general, 10).await;
    let read = |query| {
        let messages = messages.clone();
        let general = general.clone();
        async move { ids(&messages.history(&general, query).await.unwrap()) }
    };
    assert_eq!(read(HistoryQuery::latest(3)).await, [8, 9, 10]);
    assert_eq!(read(HistoryQuery::latest(50)).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(read(HistoryQuery::after(2, 3)).await, [3, 4, 5]);
    assert_eq!(read(HistoryQuery::after(10, 3)).await, Vec::<u64>::new());
    assert_eq!(read(HistoryQuery { before: Some(5), limit: 2, ..Default::default() }).await, [3, 4]);
    assert_eq!(read(HistoryQuery { before: Some(1), limit: 5, ..Default::default() }).await, Vec::<u64>::new());
    assert_eq!(read(HistoryQuery { after: Some(2), before: Some(6), limit: 10 }).await, [3, 4, 5]);
    assert_eq!(read(HistoryQuery { after: Some(2), before: Some(9), limit: 2 }).await, [3, 4], "after wins: the first ones");
    let texts: Vec<String> = messages.history(&general, HistoryQuery::latest(2)).await.unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["m9", "m10"]);
    let unknown = messages.history(&room("nowhere"), HistoryQuery::latest(5)).await;
    assert!(matches!(unknown, Err(StoreError::RoomNotFound(_))), "{unknown:?}");
}

async fn messages_survive_a_reopen<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    messages.create_room(&room("rust"), "ann").await.unwrap();
    fill(messages.as_ref(), &room("rust"), 3).await;
    drop(messages);
    let Some(backend) = backend.reopen().await else { return };
    let messages = backend.stores().messages;
    assert_eq!(names(messages.list_rooms("", 10).await.unwrap()), ["general", "rust"]);
    assert_eq!(ids(&messages.history(&room("rust"), HistoryQuery::latest(10)).await.unwrap()), [1, 2, 3]);
    let repeat = ok(messages.append(&room("rust"), vec![send("ann", "again", "c2"), send("ann", "four", "c4")]).await.unwrap());
    assert!(matches!(&repeat[0], Appended::Duplicate(m) if m.id == 2 && m.text == "m2"), "dedup holds across a restart");
    assert!(matches!(&repeat[1], Appended::New(e) if e.seq == 4), "ids go on from the last one");
}

// ---- the event log: edits and deletes --------------------------------------

fn edit(user: &str, id: u64, text: &str) -> NewEvent {
    NewEvent::Edit { user: name(user), id, text: text.into() }
}

fn delete(user: &str, id: u64) -> NewEvent {
    NewEvent::Delete { user: name(user), id }
}

fn kinds(events: &[StoredEvent]) -> Vec<(u64, &'static str, u64)> {
    events
        .iter()
        .map(|e| {
            let kind = match e.kind {
                EventKind::Post(_) => "post",
                EventKind::Edit { .. } => "edit",
                EventKind::Member { .. } => "member",
                EventKind::Delete { .. } => "delete",
                EventKind::React { .. } => "react",
            };
            (e.seq, kind, e.message_id())
        })
        .collect()
}

async fn edits_and_deletes_are_checked_and_logged_as_events<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 3).await;
    let answers = messages
        .append(&general, vec![edit("ANN", 1, "m1!"), edit("bob", 2, "mine now"), edit("ann", 9, "x"), delete("ann", 2), edit("ann", 2, "too late")])
        .await
        .unwrap();
    assert!(matches!(&answers[0], Ok(Appended::New(e)) if e.seq == 4 && e.message_id() == 1), "{answers:?}");
    assert!(matches!(answers[1], Err(StoreError::NotAuthor)), "another user's message: {:?}", answers[1]);
    assert!(matches!(answers[2], Err(StoreError::MessageNotFound(9))), "{:?}", answers[2]);
    assert!(matches!(&answers[3], Ok(Appended::New(e)) if e.seq == 5), "{:?}", answers[3]);
    assert!(matches!(answers[4], Err(StoreError::MessageNotFound(2))), "a deleted message: {:?}", answers[4]);
    assert_eq!(messages.last_seq(&general).await.unwrap(), 5);

    // History: as they are now.
    let now = messages.history(&general, HistoryQuery::latest(10)).await.unwrap();
    assert_eq!((now[0].text.as_str(), now[0].edited_at.is_some()), ("m1!", true));
    assert_eq!(now[1], Message { id: 2, room: "general".into(), ..now[1].redacted() });
    assert!(now[1].deleted && now[1].text.is_empty() && now[1].client_id.is_empty());
    assert_eq!((now[2].text.as_str(), now[2].edited_at.as_deref()), ("m3", None));

    // Events: the log, with the deleted message's text taken out.
    let log = messages.events(&general, 0, 100).await.unwrap();
    assert_eq!(kinds(&log), [(1, "post", 1), (2, "post", 2), (3, "post", 3), (4, "edit", 1), (5, "delete", 2)]);
    assert_eq!(log[0].as_post().map(|m| m.text.as_str()), Some("m1"), "a post keeps its first text");
    assert!(log[1].as_post().is_some_and(|m| m.deleted && m.text.is_empty()));
    assert_eq!(kinds(&messages.events(&general, 3, 1).await.unwrap()), [(4, "edit", 1)]);
    assert!(messages.events(&general, 5, 10).await.unwrap().is_empty());
    // A repeated client_id of a deleted message answers the deleted message.
    let again = ok(messages.append(&general, vec![send("ann", "m2", "c2")]).await.unwrap());
    assert!(matches!(&again[0], Appended::Duplicate(m) if m.id == 2 && m.deleted), "{again:?}");
}

async fn edits_and_deletes_survive_a_reopen<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 2).await;
    ok(messages.append(&general, vec![edit("ann", 1, "edited"), delete("ann", 2)]).await.unwrap());
    drop(messages);
    let Some(backend) = backend.reopen().await else { return };
    let messages = backend.stores().messages;
    let now = messages.history(&general, HistoryQuery::latest(10)).await.unwrap();
    assert_eq!(now[0].text, "edited");
    assert!(now[1].deleted);
    assert_eq!(messages.last_seq(&general).await.unwrap(), 4);
    let answers = messages.append(&general, vec![edit("ann", 2, "back")]).await.unwrap();
    assert!(matches!(answers[0], Err(StoreError::MessageNotFound(2))), "still deleted after a reopen");
}

// ---- threads and reactions ------------------------------------------------

fn reply(user: &str, text: &str, client_id: &str, parent: u64) -> NewEvent {
    NewEvent::Post { user: name(user), text: text.into(), client_id: client_id.into(), thread: Some(parent) }
}

fn react(user: &str, id: u64, emoji: &str) -> NewEvent {
    NewEvent::React { user: name(user), id, emoji: emoji.into() }
}

/// `(emoji, count, users)` of each reaction.
fn reactions(message: &Message) -> Vec<(String, u32, Vec<String>)> {
    message.reactions.iter().map(|r| (r.emoji.clone(), r.count, r.users.clone())).collect()
}

/// The `added` and counts of a stored react event.
fn reacted(appended: &Appended) -> (bool, Vec<(String, u32)>) {
    match appended {
        Appended::New(StoredEvent { kind: EventKind::React { added, reactions, .. }, .. }) => {
            (*added, reactions.iter().map(|r| (r.emoji.clone(), r.count)).collect())
        }
        other => panic!("not a reaction: {other:?}"),
    }
}

async fn replies_are_counted_on_their_parent_and_paged_as_a_thread<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 2).await;
    let answers = ok(messages
        .append(&general, vec![reply("bob", "r1", "b1", 1), send("cy", "top", "c9"), reply("cy", "r2", "c2", 1), reply("bob", "r3", "b3", 1)])
        .await
        .unwrap());
    assert_eq!(msg(&answers[0]).thread, Some(1));
    assert_eq!(msg(&answers[1]).thread, None);
    let last_ts = msg(&answers[3]).ts;

    let now = messages.history(&general, HistoryQuery::latest(10)).await.unwrap();
    assert_eq!(ids(&now), [1, 2, 3, 4, 5, 6], "replies are in the room's history too");
    assert_eq!((now[0].reply_count, now[0].last_reply_at.as_deref()), (3, Some(last_ts.as_str())));
    assert_eq!((now[1].reply_count, now[1].last_reply_at.as_deref()), (0, None));
    assert_eq!(now[2].thread, Some(1));
    let log = messages.events(&general, 0, 100).await.unwrap();
    assert_eq!(log[0].as_post().map(|m| m.reply_count), Some(0), "the log keeps the post as posted");
    assert_eq!(log[2].thread(), Some(1));

    let page = messages.thread(&general, 1, 0, 2).await.unwrap();
    assert_eq!((page.parent.id, page.parent.reply_count), (1, 3));
    assert_eq!(ids(&page.replies), [3, 5]);
    assert_eq!(ids(&messages.thread(&general, 1, 3, 10).await.unwrap().replies), [5, 6]);
    assert!(messages.thread(&general, 2, 0, 10).await.unwrap().replies.is_empty());
    assert!(matches!(messages.thread(&general, 3, 0, 10).await, Err(StoreError::MessageNotFound(3))), "a reply is no thread");
    assert!(matches!(messages.thread(&general, 99, 0, 10).await, Err(StoreError::MessageNotFound(99))));
    assert_eq!(messages.thread_participants(&general, 1).await.unwrap(), ["ann", "bob", "cy"]);

    // A deleted reply stays in its thread, deleted, and still counts.
    ok(messages.append(&general, vec![delete("cy", 5), edit("bob", 3, "r1!")]).await.unwrap());
    let page = messages.thread(&general, 1, 0, 10).await.unwrap();
    assert_eq!(page.parent.reply_count, 3);
    assert_eq!(ids(&page.replies), [3, 5, 6]);
    assert!(page.replies[1].deleted && page.replies[1].text.is_empty());
    assert_eq!(page.replies[0].text, "r1!");
    assert_eq!(messages.thread_participants(&general, 1).await.unwrap(), ["ann", "bob"], "a deleted reply's author is not counted");
    // A repeated client_id of a reply answers it as it is now.
    let again = ok(messages.append(&general, vec![reply("bob", "r1", "b1", 1)]).await.unwrap());
    assert!(matches!(&again[0], Appended::Duplicate(m) if m.id == 3 && m.text == "r1!"), "{again:?}");
}

async fn a_reply_needs_a_live_parent_that_is_not_a_reply<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 2).await;
    ok(messages.append(&general, vec![delete("ann", 2)]).await.unwrap());
    let answers = messages
        .append(&general, vec![reply("bob", "a", "b1", 2), reply("bob", "b", "b2", 99), reply("bob", "c", "b3", 1), reply("bob", "d", "b4", 4)])
        .await
        .unwrap();
    assert!(matches!(answers[0], Err(StoreError::MessageNotFound(2))), "a deleted parent: {:?}", answers[0]);
    assert!(matches!(answers[1], Err(StoreError::MessageNotFound(99))), "a missing parent: {:?}", answers[1]);
    assert!(matches!(&answers[2], Ok(Appended::New(e)) if e.seq == 4), "{:?}", answers[2]);
    assert!(matches!(answers[3], Err(StoreError::MessageNotFound(4))), "a reply to a reply: {:?}", answers[3]);
    // Within one batch: a parent posted then replied to, then deleted.
    let answers = messages.append(&general, vec![send("ann", "new", "c5"), reply("bob", "yes", "b5", 5), delete("ann", 5), reply("bob", "no", "b6", 5)]).await.unwrap();
    assert!(matches!(&answers[1], Ok(Appended::New(e)) if e.thread() == Some(5)), "{:?}", answers[1]);
    assert!(matches!(answers[3], Err(StoreError::MessageNotFound(5))), "{:?}", answers[3]);
    assert_eq!(messages.last_seq(&general).await.unwrap(), 7);
}

async fn threads_survive_a_reopen<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 2).await;
    ok(messages.append(&general, vec![reply("bob", "r1", "b1", 1), reply("cy", "r2", "c2", 1), delete("cy", 4)]).await.unwrap());
    let before = messages.history(&general, HistoryQuery::latest(10)).await.unwrap();
    let thread_before = messages.thread(&general, 1, 0, 10).await.unwrap();
    drop(messages);
    let Some(backend) = backend.reopen().await else { return };
    let messages = backend.stores().messages;
    assert_eq!(messages.history(&general, HistoryQuery::latest(10)).await.unwrap(), before);
    assert_eq!(messages.thread(&general, 1, 0, 10).await.unwrap(), thread_before);
    assert_eq!(before[0].reply_count, 2);
    let answers = messages.append(&general, vec![reply("bob", "r3", "b3", 3), reply("bob", "r4", "b4", 1)]).await.unwrap();
    assert!(matches!(answers[0], Err(StoreError::MessageNotFound(3))), "still a reply after a reopen");
    assert!(matches!(&answers[1], Ok(Appended::New(_))), "{:?}", answers[1]);
    assert_eq!(messages.history(&general, HistoryQuery::latest(1)).await.unwrap()[0].id, 6);
    assert_eq!(messages.thread(&general, 1, 0, 10).await.unwrap().parent.reply_count, 3);
}

async fn reactions_toggle_and_group_by_emoji<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 1).await;
    let answers = ok(messages
        .append(&general, vec![react("ann", 1, "👍"), react("bob", 1, "🎉"), react("BOB", 1, "👍"), react("ann", 1, "👍")])
        .await
        .unwrap());
    assert_eq!(reacted(&answers[0]), (true, vec![("👍".into(), 1)]));
    assert_eq!(reacted(&answers[1]), (true, vec![("👍".into(), 1), ("🎉".into(), 1)]));
    assert_eq!(reacted(&answers[2]), (true, vec![("👍".into(), 2), ("🎉".into(), 1)]), "BOB is bob");
    // Taken back: an emoji's place is its earliest *current* reaction, so
    // 👍 (bob's, seq 4) now comes after 🎉 (seq 3).
    assert_eq!(reacted(&answers[3]), (false, vec![("🎉".into(), 1), ("👍".into(), 1)]), "a second toggle takes it back");
    let now = &messages.history(&general, HistoryQuery::latest(1)).await.unwrap()[0];
    assert_eq!(reactions(now), [("🎉".into(), 1, vec!["bob".into()]), ("👍".into(), 1, vec!["bob".into()])]);
    let log = messages.events(&general, 1, 10).await.unwrap();
    assert_eq!(kinds(&log), [(2, "react", 1), (3, "react", 1), (4, "react", 1), (5, "react", 1)]);
    assert_eq!(log, answers.iter().map(|a| match a { Appended::New(e) => e.clone(), _ => unreachable!() }).collect::<Vec<_>>());
    // The stored copy a repeated send answers carries them too.
    let again = ok(messages.append(&general, vec![send("ann", "m1", "c1")]).await.unwrap());
    assert_eq!(reactions(&msg(&again[0])), reactions(now));
    assert_eq!(reactions(&messages.find_sent(&general, &name("ann"), "c1").await.unwrap().unwrap()), reactions(now));
}

async fn reactions_need_a_live_message_and_survive_a_reopen<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let general = room("general");
    fill(messages.as_ref(), &general, 3).await;
    let answers = messages
        .append(&general, vec![react("bob", 1, "👍"), delete("ann", 2), react("bob", 2, "👍"), react("bob", 9, "👍"), react("cy", 3, ":+1:")])
        .await
        .unwrap();
    assert!(matches!(answers[2], Err(StoreError::MessageNotFound(2))), "a deleted message: {:?}", answers[2]);
    assert!(matches!(answers[3], Err(StoreError::MessageNotFound(9))), "a missing message: {:?}", answers[3]);
    ok(messages.append(&general, vec![react("ann", 3, "👍"), react("cy", 3, ":+1:"), react("cy", 3, ":+1:")]).await.unwrap());
    // Reacting to a message then deleting it: the deleted message shows none.
    ok(messages.append(&general, vec![react("ann", 1, "🎉"), delete("ann", 1)]).await.unwrap());
    let before = messages.history(&general, HistoryQuery::latest(10)).await.unwrap();
    assert!(before[0].deleted && before[0].reactions.is_empty());
    assert_eq!(reactions(&before[2]), [("👍".into(), 1, vec!["ann".into()]), (":+1:".into(), 1, vec!["cy".into()])], "cy's :+1: added again: later");
    let log_before = messages.events(&general, 0, 100).await.unwrap();
    drop(messages);
    let Some(backend) = backend.reopen().await else { return };
    let messages = backend.stores().messages;
    assert_eq!(messages.history(&general, HistoryQuery::latest(10)).await.unwrap(), before);
    assert_eq!(messages.events(&general, 0, 100).await.unwrap(), log_before);
    let again = ok(messages.append(&general, vec![react("cy", 3, ":+1:")]).await.unwrap());
    assert_eq!(reacted(&again[0]), (false, vec![("👍".into(), 1)]), "the toggle knows the state after a reopen");
    assert!(matches!(messages.append(&general, vec![react("cy", 1, "👍")]).await.unwrap()[0], Err(StoreError::MessageNotFound(1))));
}

// ---- private rooms and direct messages -----------------------------------

fn member_event(by: &str, member: &str, added: bool) -> NewEvent {
    NewEvent::Member { by: name(by), member: name(member), added }
}

async fn private_rooms_admit_members_only_and_are_never_listed<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let team = room("team");
    let info = messages.create_private_room(&team, &name("Ann"), PrivateRoom::Group).await.unwrap();
    assert!(info.private && !info.dm, "{info:?}");
    let again = messages.create_private_room(&team, &name("bob"), PrivateRoom::Group).await;
    assert!(matches!(again, Err(StoreError::RoomExists(_))), "{again:?}");
    assert!(matches!(messages.create_room(&team, "bob").await, Err(StoreError::RoomExists(_))));

    let access = messages.room_access(&team).await.unwrap().expect("the room exists");
    assert!(access.private && access.admits("ann") && !access.admits("bob"), "{access:?}");
    assert_eq!(access.members.get("ann").map(String::as_str), Some("Ann"), "the name as spelled");
    assert!(!messages.room_access(&room("general")).await.unwrap().unwrap().private);
    assert_eq!(messages.room_access(&room("nowhere")).await.unwrap(), None);

    assert!(messages.set_member(&team, &name("Bob"), "ann", true).await.unwrap());
    assert!(!messages.set_member(&team, &name("BOB"), "ann", true).await.unwrap(), "already a member, by key");
    assert!(messages.room_access(&team).await.unwrap().unwrap().admits("bob"));
    assert_eq!(names(messages.private_rooms_of("bob").await.unwrap()), ["team"]);
    assert!(messages.private_rooms_of("carol").await.unwrap().is_empty());
    assert_eq!(names(messages.list_rooms("", 10).await.unwrap()), ["general"], "private rooms are never listed");
    assert!(messages.list_rooms("team", 10).await.unwrap().is_empty());

    assert!(messages.set_member(&team, &name("bob"), "ann", false).await.unwrap());
    assert!(!messages.set_member(&team, &name("bob"), "ann", false).await.unwrap(), "not a member any more");
    assert!(!messages.room_access(&team).await.unwrap().unwrap().admits("bob"));
    assert!(messages.private_rooms_of("bob").await.unwrap().is_empty());

    let stored = ok(messages.append(&team, vec![member_event("ann", "Bob", true), send("ann", "hi", "c1")]).await.unwrap());
    assert!(
        matches!(&stored[0], Appended::New(StoredEvent { seq: 1, kind: EventKind::Member { user, by, added: true, .. }, .. }) if user == "Bob" && by == "ann"),
        "{stored:?}"
    );
    assert_eq!(kinds(&messages.events(&team, 0, 10).await.unwrap()), [(1, "member", 0), (2, "post", 2)]);
    assert_eq!(ids(&messages.history(&team, HistoryQuery::latest(10)).await.unwrap()), [2], "member events are not messages");
}

async fn direct_messages_have_two_fixed_members<B: Backend>(backend: B) {
    let messages = backend.stores().messages;
    let dm = room("dm-0123456789abcdef");
    let info = messages.create_private_room(&dm, &name("ann"), PrivateRoom::Direct(&name("Bob"))).await.unwrap();
    assert!(info.private && info.dm, "{info:?}");
    assert_eq!(info.members, ["ann", "Bob"]);
    let access = messages.room_access(&dm).await.unwrap().unwrap();
    assert!(access.dm && access.admits("ann") && access.admits("bob") && !access.admits("carol"));
    let of_bob = messages.private_rooms_of("bob").await.unwrap();
    assert_eq!(of_bob.len(), 1);
    assert!(of_bob[0].dm && of_bob[0].members == ["ann", "Bob"], "{of_bob:?}");
}

async fn members_and_member_events_survive_a_reopen<B: Backend>(backend: B) {
    let team = room("team");
    {
        let messages = backend.stores().messages;
        messages.create_private_room(&team, &name("ann"), PrivateRoom::Group).await.unwrap();
        messages.set_member(&team, &name("bob"), "ann", true).await.unwrap();
        messages.set_member(&team, &name("carol"), "ann", true).await.unwrap();
        messages.set_member(&team, &name("carol"), "ann", false).await.unwrap();
        ok(messages.append(&team, vec![member_event("ann", "bob", true)]).await.unwrap());
    }
    let Some(backend) = backend.reopen().await else { return };
    let messages = backend.stores().messages;
    let access = messages.room_access(&team).await.unwrap().unwrap();
    assert!(access.private && access.admits("ann") && access.admits("bob") && !access.admits("carol"), "{access:?}");
    assert_eq!(kinds(&messages.events(&team, 0, 10).await.unwrap()), [(1, "member", 0)]);
    assert!(messages.list_rooms("", 10).await.unwrap().iter().all(|r| r.name != "team"));
}
