//! A node over the memory store with faults a test switches on and off:
//! `append` and `check` fail while it is *down* (what a database that went
//! away looks like to a node), `check` never answers while it is *silent*,
//! and `events` fails a given number of times (a catch-up read that
//! fails). Everything else passes straight through. Used by the operations
//! and catch-up suites.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatroom::auth::AuthStores;
use chatroom::model::{Message, NewEvent, RoomName, StoredEvent, Username};
use chatroom::store::memory::MemoryStore;
use chatroom::store::{
    Appended, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, SearchPage, SearchQuery, SearchStore, StoreError, ThreadPage,
};
use chatroom::{Config, RunningServer, Stores};
use tempfile::TempDir;

use super::Endpoint;

/// The memory store with switchable faults (see the module doc).
#[derive(Default)]
pub struct FaultyStore {
    /// The store behind it, for writing past the faults.
    pub inner: Arc<MemoryStore>,
    down: AtomicBool,
    silent: AtomicBool,
    /// How many times `check` was called.
    checks: AtomicUsize,
    /// How many more reads of `events` fail (`usize::MAX`: until told otherwise).
    events_failures_left: AtomicUsize,
    /// How many reads of `events` failed.
    events_failed: AtomicUsize,
}

impl FaultyStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// How many times `check` was called.
    pub fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }

    /// Makes the next `times` reads of `events` fail (`usize::MAX`: all of
    /// them, until told otherwise; 0: none).
    pub fn fail_events(&self, times: usize) {
        self.events_failures_left.store(times, Ordering::SeqCst);
    }

    /// How many reads of `events` failed.
    pub fn failed_events(&self) -> usize {
        self.events_failed.load(Ordering::SeqCst)
    }

    fn available(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::Unavailable("switched off by the test".into())),
            false => Ok(()),
        }
    }

    /// Whether this read of `events` is to fail (counted if so).
    fn take_events_failure(&self) -> bool {
        let taken = self.events_failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            0 => None,
            usize::MAX => Some(usize::MAX),
            left => Some(left - 1),
        });
        if taken.is_ok() {
            self.events_failed.fetch_add(1, Ordering::SeqCst);
        }
        taken.is_ok()
    }
}

#[async_trait]
impl SearchStore for FaultyStore {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        self.inner.search(query, member_of).await
    }
}

#[async_trait]
impl MessageStore for FaultyStore {
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
        self.available()?;
        self.inner.append(room, batch).await
    }
    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        self.inner.find_sent(room, user, client_id).await
    }
    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.history(room, query).await
    }
    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError> {
        self.inner.thread(room, parent, after, limit).await
    }
    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if self.take_events_failure() {
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
    async fn check(&self) -> Result<(), StoreError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.available()
    }
}

/// A server over a [`FaultyStore`], with the memory store's accounts.
pub struct FaultyNode {
    pub server: RunningServer,
    pub store: Arc<FaultyStore>,
    _dir: TempDir,
}

impl FaultyNode {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(FaultyStore::default());
        let stores = Stores { messages: store.clone(), accounts: AuthStores::of(store.inner.clone()) };
        let server = RunningServer::start_with_stores(Config::for_data_dir(dir.path()), stores).await.expect("the server starts");
        Self { server, store, _dir: dir }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.server.addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// GET /healthz until it answers `status` (its answer is cached for
    /// about a second), within 10 s; the body.
    pub async fn wait_for_health(&self, status: u16) -> serde_json::Value {
        self.endpoint().wait_for_health(status, Duration::from_secs(10)).await
    }

    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(30), self.server.stop())
            .await
            .expect("the server stops within 30 s")
            .expect("the server stops cleanly");
    }
}
