//! The hub: where room events are sequenced, stored, then published.
//!
//! Each room that is in use has one `RoomChannel`, created on first use:
//! - a **writer task** that takes every queued event of the room (posts,
//!   edits, deletes), stores the batch with one append, and only then
//!   publishes the stored events through the [`Fanout`] seam, in seq order.
//!   One writer per room is what makes "published only after persisted" and
//!   "clients see seqs in order" hold at once, and batching is what makes
//!   persistence cheap under load;
//! - the room's **presence**: who has it open, counted per user so a user
//!   with two tabs goes offline only when both close. Presence and typing
//!   hints go out through the same fan-out, without a seq. Across nodes, the
//!   fan-out says whether a user's first/last connection here is also their
//!   first/last anywhere (`Fanout::arrive`/`depart`), and who is online
//!   elsewhere; the hub never knows whether other nodes exist.
//!
//! Lag policy: the fan-out keeps a bounded window per room
//! (`fanout::ROOM_CHANNEL_CAPACITY`). A connection that falls further
//! behind gets `Lagged` and re-reads the missed events from the store (see
//! `connection`), so a slow client loses typing/presence hints but never a
//! message.
//!
//! Release: a room that nobody has open and nobody has used for
//! `room_idle` loses its channel (and writer task) and its fan-out channel,
//! and the store is asked to close its file; the next use makes them anew.
//! So open files and memory follow the rooms in use, not every room ever
//! touched.
//!
//! Room creation is paced here: a token bucket per user and a five times
//! bigger one per address.

mod presence;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::presence::Presence;
use crate::error::ChatError;
use crate::config::ROOMS_PER_ADDRESS_FACTOR;
use crate::fanout::{Fanout, RoomEvent};
use crate::model::{Message, NewEvent, RoomName, StoredEvent, Username};
use crate::protocol::ServerEvent;
use crate::rate::{KeyedLimiter, SendRate};
use crate::store::{Appended, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, SearchPage, SearchQuery, ThreadPage};
use crate::telemetry;

/// Sends queued for one room's writer before senders wait.
const WRITER_QUEUE: usize = 4096;
/// Most messages stored in one append.
const MAX_BATCH: usize = 1024;

struct SendRequest {
    event: NewEvent,
    reply: oneshot::Sender<Result<Appended, ChatError>>,
}

struct RoomChannel {
    writer: mpsc::Sender<SendRequest>,
    presence: Mutex<Presence>,
    /// When the room was last used, in ms since [`EPOCH`].
    last_used: AtomicU64,
}

/// The origin of `RoomChannel::last_used`.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl RoomChannel {
    fn touch(&self) {
        self.last_used.store(now_ms(), Ordering::Relaxed);
    }

    /// Nobody used it for `idle`.
    fn is_unused_for(&self, idle: Duration) -> bool {
        let unused_ms = now_ms().saturating_sub(self.last_used.load(Ordering::Relaxed));
        Duration::from_millis(unused_ms) >= idle
    }
}

/// The hub's policies, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct HubSettings {
    /// Room creations per user (`None`: no limit); per address ×5.
    pub room_create_rate: Option<SendRate>,
    /// How long an unused room keeps its channel and open file.
    pub room_idle: Duration,
}

/// Token buckets for room creation: per user, and per address.
struct CreationPace {
    users: KeyedLimiter,
    addresses: KeyedLimiter,
}

/// Cheap to clone: a handle on shared state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn MessageStore>,
    fanout: Arc<dyn Fanout>,
    rooms: Mutex<HashMap<RoomName, Arc<RoomChannel>>>,
    creation: Option<CreationPace>,
    /// Rooms known to be public (privacy never changes).
    public_rooms: Mutex<HashSet<RoomName>>,
}

impl Hub {
    /// A hub over `store`; starts the task that releases idle rooms (it
    /// ends when the last handle on the hub is dropped).
    pub fn new(store: Arc<dyn MessageStore>, fanout: Arc<dyn Fanout>, settings: HubSettings) -> Self {
        let creation = settings.room_create_rate.map(|rate| CreationPace {
            users: KeyedLimiter::new(rate),
            addresses: KeyedLimiter::new(SendRate {
                per_second: rate.per_second * f64::from(ROOMS_PER_ADDRESS_FACTOR),
                burst: rate.burst.saturating_mul(ROOMS_PER_ADDRESS_FACTOR),
            }),
        });
        let inner = Arc::new(HubInner { store, fanout, rooms: Mutex::new(HashMap::new()), creation, public_rooms: Mutex::default() });
        tokio::spawn(release_idle_rooms(Arc::downgrade(&inner), settings.room_idle));
        Self { inner }
    }

    /// Rooms whose name contains `filter` (see `MessageStore::list_rooms`).
    pub async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, ChatError> {
        Ok(self.inner.store.list_rooms(filter, limit).await?)
    }

    /// The room, if it exists; `RoomNotFound` otherwise.
    pub async fn existing_room(&self, room: &RoomName) -> Result<RoomInfo, ChatError> {
        match self.inner.store.room_exists(room).await? {
            true => Ok(RoomInfo::public(room.as_str())),
            false => Err(ChatError::RoomNotFound(room.to_string())),
        }
    }

    /// The channel of an existing room, created (with its writer) on first use.
    async fn channel(&self, room: &RoomName) -> Result<Arc<RoomChannel>, ChatError> {
        if let Some(ch) = self.inner.rooms.lock().expect("rooms lock").get(room) {
            ch.touch();
            return Ok(ch.clone());
        }
        if !self.inner.store.room_exists(room).await? {
            return Err(ChatError::RoomNotFound(room.to_string()));
        }
        let mut rooms = self.inner.rooms.lock().expect("rooms lock");
        let channel = rooms.entry(room.clone()).or_insert_with(|| {
            let (writer, queue) = mpsc::channel(WRITER_QUEUE);
            tokio::spawn(run_writer(self.inner.store.clone(), self.inner.fanout.clone(), room.clone(), queue));
            Arc::new(RoomChannel { writer, presence: Mutex::new(Presence::default()), last_used: AtomicU64::new(0) })
        });
        channel.touch();
        Ok(channel.clone())
    }

    /// Starts receiving a room's events. Subscribe *before* reading history
    /// so nothing falls between the two (duplicates are skipped by id).
    pub async fn subscribe(&self, room: &RoomName) -> Result<broadcast::Receiver<Arc<RoomEvent>>, ChatError> {
        self.channel(room).await?;
        Ok(self.inner.fanout.subscribe(room))
    }

    /// Stores an event (a post, an edit, a delete), then broadcasts it.
    /// Returns once it is on disk.
    pub async fn send(&self, room: &RoomName, event: NewEvent) -> Result<Appended, ChatError> {
        let channel = self.channel(room).await?;
        let (reply, answer) = oneshot::channel();
        channel
            .writer
            .send(SendRequest { event, reply })
            .await
            .map_err(|_| ChatError::Internal("the room writer stopped".into()))?;
        answer.await.map_err(|_| ChatError::Internal("the room writer dropped a send".into()))?
    }

    /// Stores an event if its sender is within its send rate. Over the
    /// rate, a retry of a post already stored is still answered with the
    /// stored copy (so retries never look lost); anything else gets
    /// `RateLimited`.
    pub async fn send_paced(&self, room: &RoomName, event: NewEvent, within_rate: bool) -> Result<Appended, ChatError> {
        if within_rate {
            return self.send(room, event).await;
        }
        let NewEvent::Post { user, client_id, .. } = &event else { return Err(ChatError::RateLimited) };
        match self.inner.store.find_sent(room, user, client_id).await? {
            Some(stored) => Ok(Appended::Duplicate(stored)),
            None => Err(ChatError::RateLimited),
        }
    }

    /// Up to `limit` events of the room after `after` (the log).
    pub async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, ChatError> {
        Ok(self.inner.store.events(room, after, limit).await?)
    }

    /// The room's newest seq.
    pub async fn last_seq(&self, room: &RoomName) -> Result<u64, ChatError> {
        Ok(self.inner.store.last_seq(room).await?)
    }

    /// Creates a room for `creator` (connected from `from`), within the
    /// creation pace: `RateLimitedFor` when the user's or the address's
    /// bucket is empty.
    pub async fn create_room(&self, room: &RoomName, creator: &Username, from: Option<IpAddr>) -> Result<RoomInfo, ChatError> {
        self.take_creation_pace(room, creator, from).await?;
        Ok(self.inner.store.create_room(room, creator.as_str()).await?)
    }

    /// Creates a private room or direct message for `creator`, within the
    /// same creation pace as public rooms.
    pub async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>, from: Option<IpAddr>) -> Result<RoomInfo, ChatError> {
        self.take_creation_pace(room, creator, from).await?;
        Ok(self.inner.store.create_private_room(room, creator, kind).await?)
    }

    /// Who may read a room (`RoomNotFound` when it does not exist). Public
    /// rooms stay public, so that answer is remembered; a private room's
    /// members are asked of the store each time.
    pub async fn access(&self, room: &RoomName) -> Result<RoomAccess, ChatError> {
        if self.inner.public_rooms.lock().expect("public rooms lock").contains(room) {
            return Ok(RoomAccess::default());
        }
        let access = self.inner.store.room_access(room).await?.ok_or_else(|| ChatError::RoomNotFound(room.to_string()))?;
        if !access.private {
            self.inner.public_rooms.lock().expect("public rooms lock").insert(room.clone());
        }
        Ok(access)
    }

    /// Adds or removes a private room's member (see `MessageStore::set_member`).
    pub async fn set_member(&self, room: &RoomName, member: &Username, by: &Username, added: bool) -> Result<bool, ChatError> {
        Ok(self.inner.store.set_member(room, member, by.as_str(), added).await?)
    }

    /// The private rooms and direct messages a user is a member of.
    pub async fn private_rooms_of(&self, user: &Username) -> Result<Vec<RoomInfo>, ChatError> {
        Ok(self.inner.store.private_rooms_of(&user.key()).await?)
    }

    /// Takes one room creation from the creator's and the address's
    /// buckets: `RoomExists` first, `RateLimitedFor` when a bucket is empty.
    async fn take_creation_pace(&self, room: &RoomName, creator: &Username, from: Option<IpAddr>) -> Result<(), ChatError> {
        if self.inner.store.room_exists(room).await? {
            return Err(ChatError::RoomExists(room.to_string()));
        }
        if let Some(pace) = &self.inner.creation {
            let user = creator.key();
            let address = from.map(|ip| ip.to_string());
            let wait = pace.users.wait(&user).max(address.as_deref().map_or(Duration::ZERO, |a| pace.addresses.wait(a)));
            if !wait.is_zero() {
                return Err(ChatError::RateLimitedFor { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
            }
            pace.users.take(&user);
            if let Some(address) = &address {
                pace.addresses.take(address);
            }
        }
        Ok(())
    }

    pub async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, ChatError> {
        Ok(self.inner.store.history(room, query).await?)
    }

    /// Messages matching `query` in public rooms and the private rooms
    /// `member_of` (`SearchStore::search`).
    pub async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, ChatError> {
        Ok(self.inner.store.search(query, member_of).await?)
    }

    /// A thread's parent and a page of its replies (`MessageStore::thread`).
    pub async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, ChatError> {
        Ok(self.inner.store.thread(room, parent, after, limit).await?)
    }

    /// Who takes part in a thread (`MessageStore::thread_participants`).
    pub async fn thread_participants(&self, room: &RoomName, parent: u64) -> Result<Vec<String>, ChatError> {
        Ok(self.inner.store.thread_participants(room, parent).await?)
    }

    /// Marks `user` present in `room`; announces it when this is the user's
    /// first connection there, on this node and (as far as the fan-out
    /// knows) on every other.
    pub async fn enter(&self, room: &RoomName, user: &str) -> Result<(), ChatError> {
        let channel = self.channel(room).await?;
        let first_here = channel.presence.lock().expect("presence lock").enter(user);
        if first_here && self.inner.fanout.arrive(room, user).await {
            announce_presence(self.inner.fanout.as_ref(), room, user, true);
        }
        Ok(())
    }

    /// Undoes one `enter`; announces the user gone after their last
    /// connection there, on every node (decided in the background).
    pub fn exit(&self, room: &RoomName, user: &str) {
        let Some(channel) = self.inner.rooms.lock().expect("rooms lock").get(room).cloned() else {
            return;
        };
        let last_here = channel.presence.lock().expect("presence lock").exit(user);
        if last_here {
            // Asked now, so it is ordered with the user's next `enter`;
            // answered at once on one node, in the background across nodes.
            let mut departed = self.inner.fanout.depart(room, user);
            match (&mut departed).now_or_never() {
                Some(gone) => {
                    if gone {
                        announce_presence(self.inner.fanout.as_ref(), room, user, false);
                    }
                }
                None => {
                    let (fanout, room, user) = (self.inner.fanout.clone(), room.clone(), user.to_string());
                    tokio::spawn(async move {
                        if departed.await {
                            announce_presence(fanout.as_ref(), &room, &user, false);
                        }
                    });
                }
            }
        }
    }

    /// Who has the room open on any node, sorted case-insensitively.
    pub async fn online(&self, room: &RoomName) -> Vec<String> {
        let here = self
            .inner
            .rooms
            .lock()
            .expect("rooms lock")
            .get(room)
            .map(|ch| ch.presence.lock().expect("presence lock").names())
            .unwrap_or_default();
        let mut seen: std::collections::HashSet<String> = here.iter().map(|n| n.to_lowercase()).collect();
        let mut names = here;
        for name in self.inner.fanout.online_across_nodes(room).await {
            if seen.insert(name.to_lowercase()) {
                names.push(name);
            }
        }
        names.sort_by_key(|n| n.to_lowercase());
        names
    }

    /// Tells the others in the room that `user` is typing.
    pub async fn typing(&self, room: &RoomName, user: &str) -> Result<(), ChatError> {
        self.channel(room).await?;
        let event = ServerEvent::Typing { room: room.to_string(), user: user.to_string() };
        self.inner.fanout.publish(room, &|| RoomEvent::new(&event, None, Some(user.to_lowercase())));
        Ok(())
    }
}

/// Tells the room (on every node) that `user` came or went.
fn announce_presence(fanout: &dyn Fanout, room: &RoomName, user: &str, online: bool) {
    let event = ServerEvent::Presence { room: room.to_string(), user: user.to_string(), online };
    fanout.publish(room, &|| RoomEvent::new(&event, None, Some(user.to_lowercase())));
}

/// Every `idle / 4` (at least 100 ms, at most 15 s), drops the channels
/// of idle rooms and asks the store to close files unused for `idle`.
async fn release_idle_rooms(hub: Weak<HubInner>, idle: Duration) {
    let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(15)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        // A channel held elsewhere (a send in flight) is in use: keep it.
        // Checked under the rooms lock, so no one can take a new handle
        // on a channel while it is being dropped.
        let fanout = &hub.fanout;
        hub.rooms.lock().expect("rooms lock").retain(|room, ch| {
            let in_use = Arc::strong_count(ch) > 1 || !ch.is_unused_for(idle) || fanout.has_subscribers(room);
            in_use || !fanout.release(room)
        });
        match hub.store.release_idle(idle).await {
            Ok(0) => {}
            Ok(closed) => tracing::debug!(closed, "closed idle rooms"),
            Err(e) => tracing::warn!(error = %e, "could not close idle rooms"),
        }
    }
}

/// A room's writer: drains queued events, stores them as one batch, answers
/// each sender, then broadcasts the new events in seq order.
async fn run_writer(store: Arc<dyn MessageStore>, fanout: Arc<dyn Fanout>, room: RoomName, mut queue: mpsc::Receiver<SendRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (new_events, replies): (Vec<NewEvent>, Vec<_>) = batch.drain(..).map(|r| (r.event, r.reply)).unzip();
        let started = Instant::now();
        let appended = store.append(&room, new_events).await;
        telemetry::store_appended(started.elapsed());
        match appended {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    // Nobody has the room open (posts over HTTP): no frame is built.
                    if let Ok(Appended::New(stored)) = &result {
                        telemetry::event_stored();
                        fanout.publish(&room, &|| RoomEvent::new(&ServerEvent::from_stored(stored.clone()), Some(stored.seq), None));
                    }
                    let _ = reply.send(result.map_err(ChatError::from));
                }
            }
            Err(err) => {
                // Each sender reports it once, where it is given up (the
                // HTTP answer or the socket's error frame).
                for reply in replies {
                    let _ = reply.send(Err(ChatError::from(err.clone())));
                }
            }
        }
    }
}
