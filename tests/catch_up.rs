//! A socket that must re-read a room from the store (it lagged behind the
//! room's channel, saw a gap in seqs, or got a resync marker) while the
//! store fails those reads: it retries with a bounded backoff, and if the
//! store still fails it is closed with 1013 ("try again later"), so the
//! client resumes with `after`. It is never left open and silently behind.
//!
//! The catch-up is started the way another node starts it: an event is
//! stored without being published (its node's publish was lost), so the
//! next live event arrives after a gap in seqs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatroom::auth::AuthStores;
use chatroom::model::{Message, NewEvent, RoomName, StoredEvent, Username};
use chatroom::store::memory::MemoryStore;
use chatroom::store::{Appended, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, SearchPage, SearchQuery, SearchStore, StoreError, ThreadPage};
use chatroom::{Config, RunningServer, Stores};
use common::{Endpoint, TIMEOUT, User, WsClient, id};
use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ROOM: &str = "general";

#[tokio::test]
async fn a_catch_up_whose_reads_fail_a_few_times_still_delivers_every_event() {
    let node = Node::start().await;
    let (writer, _, mut reader) = node.writer_and_reader().await;
    writer.send_http(ROOM, "one", "c1").await;
    assert_eq!(id(&reader.next_of_type("message").await), 1);

    node.store_unpublished("two").await;
    node.store.fail_events(2);
    writer.send_http(ROOM, "three", "c3").await;

    let ids: Vec<u64> = reader.next_messages(2).await.iter().map(id).collect();
    assert_eq!(ids, [2, 3], "the catch-up retried past the failed reads");
    assert!(node.store.failed() >= 2, "the reads did fail: {}", node.store.failed());
    node.stop().await;
}

#[tokio::test]
async fn a_catch_up_whose_reads_keep_failing_closes_the_socket_with_1013_and_the_client_resumes() {
    let node = Node::start().await;
    let (writer, reading, mut reader) = node.writer_and_reader().await;
    writer.send_http(ROOM, "one", "c1").await;
    assert_eq!(id(&reader.next_of_type("message").await), 1);

    node.store_unpublished("two").await;
    node.store.fail_events(usize::MAX);
    writer.send_http(ROOM, "three", "c3").await;

    let (code, reason) = close_of(reader).await;
    assert_eq!(code, 1013, "closed with 'try again later' ({reason})");
    assert!(!reason.is_empty(), "the close says why");
    assert_eq!(node.store.failed(), 4, "one read and three retries");

    // The store is back: the client resumes with `after`, nothing missing.
    node.store.fail_events(0);
    let mut again = reading.ws().await;
    let joined = again.join_after(ROOM, 1).await;
    let history: Vec<u64> = joined["history"].as_array().expect("history").iter().map(id).collect();
    assert_eq!(history, [2, 3], "{joined}");
    node.stop().await;
}

/// Reads frames until the socket's close frame; its code and reason.
/// Fails on a message (the socket kept relaying while behind) or timeout.
async fn close_of(socket: WsClient) -> (u16, String) {
    let mut stream = socket.into_stream();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.next()).await.expect("the socket stayed open, silently behind");
        match frame {
            Some(Ok(WsMessage::Close(Some(close)))) => return (close.code.into(), close.reason.to_string()),
            Some(Ok(WsMessage::Text(text))) => {
                let event: Value = serde_json::from_str(text.as_str()).expect("a JSON event");
                assert!(event["type"] != "message", "a message after a failed catch-up: {event}");
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

/// A server over a [`FlakyEvents`] store, with the memory store's accounts.
struct Node {
    server: RunningServer,
    store: Arc<FlakyEvents>,
    _dir: TempDir,
}

impl Node {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let memory = Arc::new(MemoryStore::new());
        let store = Arc::new(FlakyEvents { inner: memory.clone(), failures_left: AtomicUsize::new(0), failed: AtomicUsize::new(0) });
        let stores = Stores { messages: store.clone(), accounts: AuthStores::of(memory) };
        let server = RunningServer::start_with_stores(Config::for_data_dir(dir.path()), stores).await.expect("the server starts");
        Self { server, store, _dir: dir }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.server.addr }
    }

    /// A writer (over HTTP), a reader and the reader's socket in [`ROOM`].
    async fn writer_and_reader(&self) -> (User, User, WsClient) {
        let writer = self.endpoint().guest("writer").await;
        let reader = self.endpoint().guest("reader").await;
        let socket = reader.ws_in(ROOM).await;
        (writer, reader, socket)
    }

    /// Stores a post straight in the store: what another node stored but
    /// whose publish never arrived.
    async fn store_unpublished(&self, text: &str) {
        let post = NewEvent::Post { user: Username::parse("other").unwrap(), text: text.into(), client_id: text.into(), thread: None };
        let room = RoomName::parse(ROOM).unwrap();
        let stored = self.store.inner.append(&room, vec![post]).await.expect("stored");
        assert!(matches!(stored.as_slice(), [Ok(Appended::New(_))]), "{stored:?}");
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(30), self.server.stop())
            .await
            .expect("the server stops within 30 s")
            .expect("the server stops cleanly");
    }
}

/// The memory store, whose `events` fails the next `failures_left` times
/// (`usize::MAX`: until told otherwise).
struct FlakyEvents {
    inner: Arc<MemoryStore>,
    failures_left: AtomicUsize,
    /// How many reads of `events` failed.
    failed: AtomicUsize,
}

impl FlakyEvents {
    fn fail_events(&self, times: usize) {
        self.failures_left.store(times, Ordering::SeqCst);
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    fn take_failure(&self) -> bool {
        let taken = self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            0 => None,
            usize::MAX => Some(usize::MAX),
            left => Some(left - 1),
        });
        taken.is_ok()
    }
}

#[async_trait]
impl SearchStore for FlakyEvents {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        self.inner.search(query, member_of).await
    }
}

#[async_trait]
impl MessageStore for FlakyEvents {
    async fn create_room(&self, room: &RoomName, created_by: &str) -> Result<RoomInfo, StoreError> {
        self.inner.create_room(room, created_by).await
    }
    async fn room_exists(&self, room: &RoomName) -> Result<bool, StoreError> {
        self.inner.room_exists(room).await
    }
    async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError> {
        self.inner.create_private_room(room, creator, kind).await
    }
    async fn room_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError> {
        self.inner.room_access(room).await
    }
    async fn set_member(&self, room: &RoomName, member: &Username, by: &str, added: bool) -> Result<bool, StoreError> {
        self.inner.set_member(room, member, by, added).await
    }
    async fn private_rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError> {
        self.inner.private_rooms_of(user_key).await
    }
    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        self.inner.list_rooms(filter, limit).await
    }
    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        self.inner.append(room, batch).await
    }
    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError> {
        self.inner.thread(room, parent, after, limit).await
    }
    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        self.inner.find_sent(room, user, client_id).await
    }
    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.history(room, query).await
    }
    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if self.take_failure() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("failing events on purpose".into()));
        }
        self.inner.events(room, after, limit).await
    }
    async fn last_seq(&self, room: &RoomName) -> Result<u64, StoreError> {
        self.inner.last_seq(room).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn release_idle(&self, idle: Duration) -> Result<usize, StoreError> {
        self.inner.release_idle(idle).await
    }
}
