//! `chatroom migrate --from <data dir> --to postgres://…`: a data directory
//! built through the JSON-lines store's API (accounts, sessions, rooms,
//! posts, an edit, deletes, subscriptions, read markers, and a room longer
//! than one page of copying) is copied into a fresh database, and both
//! sides are then read through the same store traits and compared. A
//! second run (the real binary) and a third (the library) change nothing.
//!
//! Needs PostgreSQL (a database of the test's own, `common::pg`); skipped
//! loudly without it.

mod common;

use std::path::Path;
use std::process::Command;

use chatroom::model::{NewEvent, RoomName, StoredEvent, Username};
use chatroom::store::jsonl::{JsonlAccounts, JsonlStore};
use chatroom::store::migrate::{MigrationReport, copy_data_dir};
use chatroom::store::postgres::PgStore;
use chatroom::store::{
    Appended, Fsync, HistoryQuery, MessageStore, PrivateRoom, ReadMarkerStore, SessionRecord, SessionStore, StoreError, SubscriptionStore,
    UserRecord, UserStore,
};
use common::pg::TestDatabase;

/// More than one page (1,000) of copying.
const LONG_ROOM_POSTS: usize = 1_500;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn name(raw: &str) -> Username {
    Username::parse(raw).unwrap()
}

fn post(user: &str, text: &str, client_id: &str) -> NewEvent {
    NewEvent::Post { user: name(user), text: text.into(), client_id: client_id.into(), thread: None }
}

fn user(username: &str, created_at: &str) -> UserRecord {
    UserRecord { username: username.into(), password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{username}$hash"), created_at: created_at.into() }
}

fn stored(answers: Vec<Result<Appended, StoreError>>) -> Vec<StoredEvent> {
    answers
        .into_iter()
        .map(|a| match a.expect("accepted") {
            Appended::New(event) => event,
            Appended::Duplicate(m) => panic!("unexpected repeat of {}", m.id),
        })
        .collect()
}

/// What the test data holds, to check the copy against.
struct Source {
    users: Vec<&'static str>,
    subscribers: Vec<String>,
    rooms: Vec<&'static str>,
}

/// A data directory with a bit of everything.
async fn build_data_dir(dir: &Path) -> Source {
    let messages = JsonlStore::open(dir, Fsync::Never).unwrap();
    let accounts = JsonlAccounts::open(dir, Fsync::Never).unwrap();
    for (username, created_at) in [("Ann", "2025-01-01T10:00:00Z"), ("bob", "2025-01-02T10:00:00Z")] {
        accounts.create_user(user(username, created_at)).await.unwrap();
    }
    let guest = format!("{:064x}", 7);
    for record in [
        SessionRecord { id_hash: format!("{:064x}", 1), user: "Ann".into(), guest: false, created_ms: 1_000, last_seen_ms: 1_000 },
        SessionRecord { id_hash: guest.clone(), user: "gus".into(), guest: true, created_ms: 2_000, last_seen_ms: 2_000 },
    ] {
        accounts.save_session(record).await.unwrap();
    }
    accounts.touch_sessions(vec![(format!("{:064x}", 1), 9_000)]).await.unwrap();

    let (general, rust, long) = (room("general"), room("rust"), room("long"));
    messages.create_room(&rust, "ann").await.unwrap();
    messages.create_room(&long, "bob").await.unwrap();
    let first = stored(messages.append(&general, vec![post("Ann", "hello", "a1"), post("bob", "hi ann", "b1"), post("Ann", "typo", "a2")]).await.unwrap());
    let (hello, typo) = (first[0].seq, first[2].seq);
    stored(messages.append(&general, vec![NewEvent::Edit { user: name("ann"), id: typo, text: "fixed".into() }]).await.unwrap());
    stored(messages.append(&general, vec![post("bob", "secret", "b2")]).await.unwrap());
    let secret = messages.last_seq(&general).await.unwrap();
    stored(messages.append(&general, vec![NewEvent::Edit { user: name("bob"), id: secret, text: "more secret".into() }]).await.unwrap());
    stored(messages.append(&general, vec![NewEvent::Delete { user: name("bob"), id: secret }, NewEvent::Delete { user: name("ann"), id: hello }]).await.unwrap());
    stored(messages.append(&rust, vec![post("Ann", "cargo?", "r1"), post("bob", "cargo!", "r2")]).await.unwrap());
    let posts: Vec<NewEvent> = (0..LONG_ROOM_POSTS).map(|n| post(if n % 2 == 0 { "Ann" } else { "bob" }, &format!("line {n}"), &format!("l{n}"))).collect();
    stored(messages.append(&long, posts).await.unwrap());

    for (subscriber, r) in [("ann", &general), ("ann", &rust), ("bob", &long), (guest.as_str(), &rust)] {
        accounts.subscribe(subscriber, r).await.unwrap();
    }
    accounts.advance_marker("ann", &general, 3).await.unwrap();
    accounts.advance_marker("bob", &long, 1_000).await.unwrap();
    accounts.advance_marker(&guest, &rust, 1).await.unwrap();
    messages.flush().await.unwrap();
    Source { users: vec!["ann", "bob"], subscribers: vec!["ann".into(), "bob".into(), guest], rooms: vec!["general", "long", "rust"] }
}

/// Every event of `room`, paging as a client would.
async fn whole_log(store: &dyn MessageStore, room: &RoomName) -> Vec<StoredEvent> {
    let mut log: Vec<StoredEvent> = Vec::new();
    loop {
        let page = store.events(room, log.last().map_or(0, |e| e.seq), 400).await.unwrap();
        if page.is_empty() {
            return log;
        }
        log.extend(page);
    }
}

/// Reads everything through the traits on both sides and compares.
async fn assert_same(source: &Source, dir: &Path, target: &PgStore) {
    let messages = JsonlStore::open(dir, Fsync::Never).unwrap();
    let accounts = JsonlAccounts::open(dir, Fsync::Never).unwrap();
    for key in &source.users {
        let original = accounts.find_user(key).await.unwrap().expect("the source has the account");
        assert_eq!(target.find_user(key).await.unwrap(), Some(original.clone()), "account {key}, password hash included");
        let look_alike = name(&key.replace('a', "\u{0430}"));
        assert_eq!(target.find_look_alike(&look_alike).await.unwrap(), Some(original), "look-alikes of {key} are taken");
    }
    let sorted = |mut sessions: Vec<SessionRecord>| {
        sessions.sort_by(|a, b| a.id_hash.cmp(&b.id_hash));
        sessions
    };
    assert_eq!(sorted(target.load_sessions().await.unwrap()), sorted(accounts.load_sessions().await.unwrap()));

    assert_eq!(target.list_rooms("", 100).await.unwrap(), messages.list_rooms("", 100).await.unwrap());
    for name in &source.rooms {
        let r = room(name);
        assert_eq!(target.last_seq(&r).await.unwrap(), messages.last_seq(&r).await.unwrap(), "{name}: last seq");
        assert_eq!(whole_log(target, &r).await, whole_log(&messages, &r).await, "{name}: the event log, seqs, edits and deletes");
        for query in [HistoryQuery::latest(500), HistoryQuery::after(0, 500), HistoryQuery { before: Some(5), limit: 3, ..Default::default() }] {
            assert_eq!(target.history(&r, query).await.unwrap(), messages.history(&r, query).await.unwrap(), "{name}: history {query:?}");
        }
    }
    for subscriber in &source.subscribers {
        assert_eq!(target.subscriptions(subscriber).await.unwrap(), accounts.subscriptions(subscriber).await.unwrap(), "{subscriber}");
        assert_eq!(target.markers(subscriber).await.unwrap(), accounts.markers(subscriber).await.unwrap(), "{subscriber}");
    }
}

/// `chatroom migrate --from <dir> --to <url>` as a process: its exit
/// status and what it logged.
fn run_binary(dir: &Path, url: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chatroom"))
        .args(["migrate", "--from"])
        .arg(dir)
        .args(["--to", url])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_copied_whole_and_a_second_run_changes_nothing() {
    let Some(database) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = build_data_dir(dir.path()).await;

    let first = copy_data_dir(dir.path(), database.url()).await.expect("the copy succeeds");
    let target = PgStore::open(database.url(), Fsync::Batch).await.unwrap();
    assert_same(&source, dir.path(), &target).await;

    let source_events: u64 = {
        let messages = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let mut total = 0;
        for name in &source.rooms {
            total += messages.last_seq(&room(name)).await.unwrap();
        }
        total
    };
    assert_eq!(first.users.copied, source.users.len() as u64, "{first}");
    assert_eq!(first.sessions.copied, 2, "{first}");
    assert_eq!((first.rooms.copied, first.rooms.already_there), (2, 1), "the default room exists in a new database: {first}");
    assert_eq!((first.events.copied, first.events.already_there), (source_events, 0), "{first}");
    assert_eq!(first.subscriptions.copied, 4, "{first}");
    assert_eq!(first.read_markers.copied, 3, "{first}");

    let (succeeded, log) = run_binary(dir.path(), database.url());
    assert!(succeeded, "a second run exits 0:\n{log}");
    assert!(log.contains("nothing to copy"), "{log}");

    let third = copy_data_dir(dir.path(), database.url()).await.unwrap();
    assert!(third.copied_nothing(), "{third}");
    let expected_there = |kind: &str| first.kinds().iter().find(|(k, _)| *k == kind).map(|(_, t)| t.copied + t.already_there).unwrap();
    for (kind, tally) in third.kinds() {
        assert_eq!(tally.already_there, expected_there(kind), "{kind}: {third}");
    }
    assert_same(&source, dir.path(), &target).await;
}

#[tokio::test]
async fn the_copy_goes_on_where_the_data_directory_left_off() {
    let Some(database) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    build_data_dir(dir.path()).await;
    let (succeeded, log) = run_binary(dir.path(), database.url());
    assert!(succeeded, "the binary copies:\n{log}");

    let target = PgStore::open(database.url(), Fsync::Batch).await.unwrap();
    let general = room("general");
    let last = target.last_seq(&general).await.unwrap();
    let next = target.append(&general, vec![post("bob", "again", "b1"), post("bob", "new", "b9")]).await.unwrap();
    assert!(matches!(&next[0], Ok(Appended::Duplicate(m)) if m.text == "hi ann"), "a client_id sent before the copy is still known: {next:?}");
    assert!(matches!(&next[1], Ok(Appended::New(e)) if e.seq == last + 1), "seqs go on after the copied ones: {next:?}");
    let edit = target.append(&general, vec![NewEvent::Edit { user: name("ann"), id: 3, text: "fixed again".into() }]).await.unwrap();
    assert!(matches!(&edit[0], Ok(Appended::New(_))), "a copied message can be edited by its author: {edit:?}");

    let again = copy_data_dir(dir.path(), database.url()).await.expect("a database that grew since the copy is no conflict");
    assert!(again.copied_nothing(), "{again}");
}

#[tokio::test]
async fn a_room_with_another_history_in_the_database_is_refused() {
    let Some(database) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    build_data_dir(dir.path()).await;
    let target = PgStore::open(database.url(), Fsync::Batch).await.unwrap();
    stored(target.append(&room("general"), vec![post("eve", "written here first", "e1")]).await.unwrap());

    let refused = copy_data_dir(dir.path(), database.url()).await.expect_err("two histories of general");
    assert!(matches!(&refused, StoreError::Conflict(why) if why.contains("'general'")), "{refused}");
    let log = target.events(&room("general"), 0, 10).await.unwrap();
    assert_eq!(log.len(), 1, "nothing was mixed into the room: {log:?}");
}

/// The report reads as one line per run.
#[test]
fn the_report_names_every_kind() {
    let text = MigrationReport::default().to_string();
    for kind in ["users", "sessions", "rooms", "events", "subscriptions", "read markers"] {
        assert!(text.contains(&format!("{kind}: 0 copied, 0 already there")), "{text}");
    }
}

#[tokio::test]
async fn private_rooms_and_direct_messages_are_copied_private_with_their_members_and_logs() {
    let Some(database) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (team, dm) = (room("team"), room("dm-0123456789abcdef"));
    {
        let messages = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        messages.create_private_room(&team, &name("ann"), PrivateRoom::Group).await.unwrap();
        messages.set_member(&team, &name("Bob"), "ann", true).await.unwrap();
        let member = NewEvent::Member { by: name("ann"), member: name("Bob"), added: true };
        stored(messages.append(&team, vec![member, post("ann", "the plan", "t1")]).await.unwrap());
        messages.create_private_room(&dm, &name("ann"), PrivateRoom::Direct(&name("carol"))).await.unwrap();
        stored(messages.append(&dm, vec![post("carol", "psst", "d1")]).await.unwrap());
    }
    let report = copy_data_dir(dir.path(), database.url()).await.expect("the copy succeeds");
    assert_eq!(report.rooms.copied, 2, "both private rooms are copied: {report}");
    let target = PgStore::open(database.url(), Fsync::Batch).await.unwrap();
    let access = target.room_access(&team).await.unwrap().expect("team is there");
    assert!(access.private && !access.dm && access.admits("bob") && !access.admits("carol"), "{access:?}");
    assert_eq!(access.created_by, "ann");
    let access = target.room_access(&dm).await.unwrap().expect("the DM is there");
    assert!(access.private && access.dm && access.admits("ann") && access.admits("carol"), "{access:?}");
    assert!(target.list_rooms("", 10).await.unwrap().iter().all(|r| !r.private), "never listed");
    assert_eq!(whole_log(&target, &team).await.len(), 2, "the member event and the post");
    assert_eq!(whole_log(&target, &dm).await.len(), 1);
    assert!(copy_data_dir(dir.path(), database.url()).await.unwrap().copied_nothing(), "a second run copies nothing");
}
