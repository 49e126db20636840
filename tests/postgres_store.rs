//! What only the PostgreSQL store has to show, beyond the storage contract
//! (`store_contract.rs` runs that on it too): several nodes writing one
//! room at once, many rooms written at once (group commit across
//! rooms), several nodes racing for look-alike names, a database
//! newer than the binary, and a database that cannot be reached or is cut
//! off mid-way (answers within 5 s, then recovery without a restart).
//!
//! Each test has a database of its own (`common::pg`), dropped afterwards;
//! without a PostgreSQL server they are skipped, loudly.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatroom::model::{NewEvent, RoomName, Username};
use chatroom::store::postgres::PgStore;
use chatroom::store::{Appended, Fsync, HistoryQuery, MessageStore, StoreError, UserRecord, UserStore};
use common::pg::{self, TestDatabase};
use common::proxy::TcpProxy;

/// How long a failure may take to be reported (the promise).
const FAILURE_DEADLINE: Duration = Duration::from_secs(5);

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn post(user: &str, client_id: String) -> NewEvent {
    NewEvent::Post { user: Username::parse(user).unwrap(), text: format!("text of {client_id}"), client_id, thread: None }
}

/// Appends `count` messages of `writer` in batches of `batch`; the seqs
/// given, in the order they were answered.
async fn write_messages(store: Arc<PgStore>, writer: usize, count: usize, batch: usize) -> Vec<u64> {
    let general = room("general");
    let mut seqs = Vec::with_capacity(count);
    for start in (0..count).step_by(batch) {
        let events = (start..(start + batch).min(count)).map(|n| post(&format!("writer{writer}"), format!("w{writer}-{n}"))).collect();
        for answer in store.append(&general, events).await.expect("the batch is stored") {
            match answer.expect("every message is accepted") {
                Appended::New(event) => seqs.push(event.seq),
                Appended::Duplicate(m) => panic!("a new client_id was taken for a repeat of {}", m.id),
            }
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_writing_one_room_give_one_gap_free_order() {
    let Some(database) = TestDatabase::create().await else { return };
    let nodes = [Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap()), Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap())];
    let (writers, per_writer, batch) = (4, 500, 25);
    let tasks: Vec<_> = (0..writers).map(|w| tokio::spawn(write_messages(nodes[w % 2].clone(), w, per_writer, batch))).collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one writer's seqs only grow");
        all.extend(seqs);
    }
    let total = (writers * per_writer) as u64;
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "no seq given twice");
    assert_eq!(distinct, (1..=total).collect::<BTreeSet<u64>>(), "seqs 1..={total}, no gap");

    // Every node reads the same log, in seq order, each message once.
    for node in &nodes {
        assert_eq!(node.last_seq(&room("general")).await.unwrap(), total);
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let page = node.events(&room("general"), seen.last().copied().unwrap_or(0), 500).await.unwrap();
            assert!(!page.is_empty(), "the log ends at {:?}", seen.last());
            seen.extend(page.iter().map(|e| e.seq));
        }
        assert_eq!(seen, (1..=total).collect::<Vec<u64>>());
    }
    let latest = nodes[1].history(&room("general"), HistoryQuery::latest(3)).await.unwrap();
    assert_eq!(latest.iter().map(|m| m.id).collect::<Vec<_>>(), [total - 2, total - 1, total]);
}

/// Many rooms written at once, from concurrent tasks over two nodes: the
/// committers store them in groups across rooms, and each room still gets
/// seqs 1..=n once, in the order each writer sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_rooms_appended_at_once_each_get_one_gap_free_order() {
    let Some(database) = TestDatabase::create().await else { return };
    let nodes = [Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap()), Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap())];
    let (rooms, per_room) = (50, 20);
    for r in 0..rooms {
        nodes[0].create_room(&room(&format!("room{r}")), "ann").await.unwrap();
    }
    // Each room has two writers, one per node, sending one message at a
    // time; a missing room in the same groups fails only its own caller.
    let mut tasks = Vec::new();
    for r in 0..rooms {
        for w in 0..2 {
            let node = nodes[w].clone();
            tasks.push(tokio::spawn(async move {
                let name = room(&format!("room{r}"));
                let mut seqs = Vec::new();
                for n in (w..per_room).step_by(2) {
                    let answers = node.append(&name, vec![post("ann", format!("r{r}-{n}"))]).await.expect("the batch is stored");
                    match answers.into_iter().next().unwrap().expect("the message is accepted") {
                        Appended::New(event) => seqs.push(event.seq),
                        Appended::Duplicate(m) => panic!("a new client_id was taken for a repeat of {}", m.id),
                    }
                }
                (r, seqs)
            }));
        }
    }
    let missing: Vec<_> = (0..10)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { node.append(&room(&format!("nowhere{i}")), vec![post("ann", format!("lost{i}"))]).await })
        })
        .collect();
    let mut by_room = vec![Vec::new(); rooms];
    for task in tasks {
        let (r, seqs) = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one writer's seqs only grow in room{r}: {seqs:?}");
        by_room[r].extend(seqs);
    }
    for task in missing {
        let answer = task.await.unwrap();
        assert!(matches!(answer, Err(StoreError::RoomNotFound(_))), "{answer:?}");
    }
    for (r, mut seqs) in by_room.into_iter().enumerate() {
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=per_room as u64).collect::<Vec<_>>(), "room{r}: seqs 1..={per_room} once each");
        let name = room(&format!("room{r}"));
        for node in &nodes {
            assert_eq!(node.last_seq(&name).await.unwrap(), per_room as u64);
            let log = node.events(&name, 0, 100).await.unwrap();
            assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=per_room as u64).collect::<Vec<_>>(), "room{r}'s log");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_racing_for_look_alike_names_give_one_account() {
    let Some(database) = TestDatabase::create().await else { return };
    let nodes = [Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap()), Arc::new(PgStore::open(database.url(), Fsync::Batch).await.unwrap())];
    // Latin, Cyrillic а/А and upper case: one skeleton, six creators.
    let names = ["admin", "\u{0430}dmin", "ADMIN", "\u{0410}dmin", "Admin", "adm\u{0456}n"];
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let node = nodes[i % 2].clone();
            let user = UserRecord { username: name.to_string(), password_hash: "$argon2id$x".into(), created_at: "2025-01-01T00:00:00Z".into() };
            tokio::spawn(async move { node.create_user(user).await })
        })
        .collect();
    let mut created = Vec::new();
    for (task, name) in tasks.into_iter().zip(names) {
        match task.await.unwrap() {
            Ok(()) => created.push(name),
            Err(StoreError::NameTaken(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one wins: {created:?}");
    let winner = nodes[0].find_look_alike(&Username::parse("admin").unwrap()).await.unwrap().expect("the account");
    assert_eq!(winner.username, created[0]);
}

#[tokio::test]
async fn a_database_at_a_newer_schema_is_refused() {
    let Some(database) = TestDatabase::create().await else { return };
    drop(PgStore::open(database.url(), Fsync::Batch).await.expect("a new database is migrated"));
    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let known: i32 = client.query_one("SELECT max(version) FROM schema_migrations", &[]).await.unwrap().get(0);
    let newer = known + 1;
    client.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&newer]).await.unwrap();

    let refused = PgStore::open(database.url(), Fsync::Batch).await.err().expect("a newer schema is refused");
    assert!(matches!(refused, StoreError::SchemaTooNew { database, known: k } if database == newer && k == known), "{refused}");
    let message = refused.to_string();
    assert!(message.contains(&format!("schema version {newer}")) && message.ends_with("upgrade chatroom"), "{message}");
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_within_five_seconds() {
    let closed_port = common::free_port();
    let started = Instant::now();
    let refused = PgStore::open(&format!("postgres://postgres@127.0.0.1:{closed_port}/test"), Fsync::Batch).await.err().expect("nothing listens there");
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    assert!(started.elapsed() < FAILURE_DEADLINE, "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_cut_connection_fails_sends_within_five_seconds_and_the_store_recovers() {
    let Some(database) = TestDatabase::create().await else { return };
    let proxy = TcpProxy::start(pg::SERVER.parse().unwrap()).await;
    let store = PgStore::open(&database.url_via(proxy.addr), Fsync::Batch).await.expect("the store opens through the proxy");
    let general = room("general");
    store.append(&general, vec![post("ann", "before".into())]).await.unwrap().remove(0).unwrap();
    store.check().await.expect("reachable");

    proxy.stall();
    let started = Instant::now();
    let failed = store.append(&general, vec![post("ann", "during".into())]).await;
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(started.elapsed() < FAILURE_DEADLINE, "the send was answered after {:?}", started.elapsed());
    let started = Instant::now();
    assert!(matches!(store.check().await, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < FAILURE_DEADLINE, "the check was answered after {:?}", started.elapsed());

    proxy.restore();
    let after = store.append(&general, vec![post("ann", "after".into())]).await.expect("the store reconnects by itself");
    assert!(matches!(&after[0], Ok(Appended::New(e)) if e.seq == 2), "the refused send was not stored: {after:?}");
    store.check().await.expect("reachable again");
}

/// Two real servers on one database: a cookie issued by one works on the
/// other (the session is read from the table), and each serves what the
/// other stored.
#[tokio::test]
async fn two_servers_on_one_database_share_sessions_and_messages() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = database.url().to_string();
    let on_database = move |config: &mut chatroom::Config| config.database_url = Some(url.clone());
    let node_a = common::TestServer::start_with(on_database.clone()).await;
    let node_b = common::TestServer::start_with(on_database).await;

    let ann = common::User::sign_up(&node_a, "ann", "correct horse battery").await;
    let sent = ann.send_http("general", "hello from A", "c1").await;
    let ann = ann.at(&node_b);
    let seen_on_b = ann.all_messages("general").await;
    assert_eq!(seen_on_b, std::slice::from_ref(&sent), "node B serves what node A stored");
    let answered_by_b = ann.send_http("general", "hello from B", "c2").await;
    assert_eq!(answered_by_b["id"].as_u64(), sent["id"].as_u64().map(|id| id + 1), "one order for both nodes");
    let (status, _) = ann.post_message("general", "hello again", "c1").await;
    assert_eq!(status, 200, "a repeated client_id is recognised on the other node");
}
