//! The fan-out seam: how a stored room event — and the live-only presence
//! and typing hints — reach every connection that opened the room.
//!
//! The hub publishes each event once, after the store returned; every
//! connection, the writer's own included, delivers from [`Fanout::subscribe`].
//! A subscriber that falls behind gets `Lagged` and re-reads from the store by
//! `seq` (see `connection`), so the fan-out may drop what a slow subscriber
//! missed: the store is the truth, the fan-out only carries live traffic.
//!
//! [`LocalFanout`] keeps one tokio broadcast channel per room in this
//! process. [`RedisFanout`] puts Redis pub/sub behind the same trait, so
//! several nodes share live traffic: each node's own events still reach its
//! sockets through a `LocalFanout` inside it, and what Redis may have dropped
//! is re-read from the store (a *resync* marker, [`RoomEvent::resync`]).
//!
//! Presence across nodes goes through the same seam: [`Fanout::arrive`],
//! [`Fanout::depart`] and [`Fanout::online_across_nodes`] default to "this
//! node is the whole cluster", so the hub counts connections and never
//! knows whether Redis is there.

mod local;
pub mod redis;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use self::local::LocalFanout;
pub use self::redis::{RedisFanout, RedisFanoutError, RedisTimings};
use crate::model::RoomName;
use crate::protocol::ServerEvent;

/// Events a room's channel holds for a slow subscriber.
pub const ROOM_CHANNEL_CAPACITY: usize = 4096;

/// One event on a room's channel, serialised once for every receiver.
#[derive(Debug)]
pub struct RoomEvent {
    /// The JSON text frame.
    pub frame: Utf8Bytes,
    /// Set for stored events: receivers skip seqs they already have.
    pub seq: Option<u64>,
    /// Set for events that must not go back to their author (typing,
    /// presence): the author's lower-cased name.
    pub skip_user: Option<String>,
    /// When it was published (unix ms, on the publishing node): the
    /// fan-out lag is measured from here.
    pub published_at_ms: u64,
    /// Not a frame but a marker: "live events of this room may have been
    /// lost (the broker was down or dropped some); re-read from the store
    /// after the last seq you delivered". `frame` is empty.
    pub resync: bool,
}

impl RoomEvent {
    pub fn new(event: &ServerEvent, seq: Option<u64>, skip_user: Option<String>) -> Arc<Self> {
        Arc::new(Self { frame: event.to_json().into(), seq, skip_user, published_at_ms: crate::model::unix_ms(), resync: false })
    }

    /// The "re-read this room from the store" marker.
    pub fn resync() -> Arc<Self> {
        Arc::new(Self { frame: Utf8Bytes::default(), seq: None, skip_user: None, published_at_ms: crate::model::unix_ms(), resync: true })
    }
}

/// The fan-out a node runs: through the Redis at `redis_url` (keys and
/// channels under `prefix`, this node's envelopes marked `node`), or
/// [`LocalFanout`] without one. A Redis that cannot be reached yet is not
/// an error: the node serves, `Down`, and keeps trying.
pub async fn open(redis_url: Option<&str>, prefix: &str, node: u64) -> Result<Arc<dyn Fanout>, RedisFanoutError> {
    let Some(url) = redis_url else {
        tracing::info!("fan-out: this node alone (no --redis-url)");
        return Ok(Arc::new(LocalFanout::default()));
    };
    let fanout = RedisFanout::connect(url, prefix, node).await?;
    tracing::info!(prefix, node, status = fanout.status().name(), "fan-out: Redis, shared with the other nodes");
    Ok(Arc::new(fanout))
}

/// How this node's fan-out reaches the others (`/healthz` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutStatus {
    /// One node: nothing to reach.
    Local,
    /// Connected to the shared broker.
    Up,
    /// The broker cannot be reached: this node's own sockets still get
    /// everything, read from the store.
    Down,
}

impl FanoutStatus {
    pub fn name(self) -> &'static str {
        match self {
            FanoutStatus::Local => "local",
            FanoutStatus::Up => "ok",
            FanoutStatus::Down => "down",
        }
    }
}

/// Publish a room's events; subscribe to them.
pub trait Fanout: Send + Sync + 'static {
    /// Sends the event `make` builds to the room's subscribers; builds
    /// nothing when the room has none.
    fn publish(&self, room: &RoomName, make: &dyn Fn() -> Arc<RoomEvent>);
    /// Starts receiving the room's events. Subscribe *before* reading
    /// history, so nothing falls between the two.
    fn subscribe(&self, room: &RoomName) -> broadcast::Receiver<Arc<RoomEvent>>;
    /// Whether anyone here receives the room's events.
    fn has_subscribers(&self, room: &RoomName) -> bool;
    /// Forgets a room nobody receives (its channel's memory); `false` if
    /// someone does.
    fn release(&self, room: &RoomName) -> bool;
    /// Sends an event to every socket of one subscriber (an account's
    /// devices, or one guest session), e.g. "read up to here".
    fn publish_to_user(&self, subscriber: &str, event: Arc<UserEvent>);
    /// Starts receiving a subscriber's own events.
    fn subscribe_user(&self, subscriber: &str) -> broadcast::Receiver<Arc<UserEvent>>;
    /// Tells every node that a session ended (by its id hash; `reason` as
    /// `EndReason` names it), so each closes that session's sockets.
    fn publish_session_end(&self, end: SessionEnd);
    /// Starts receiving the sessions ended on any node.
    fn subscribe_session_ends(&self) -> broadcast::Receiver<SessionEnd>;
    /// Whether the other nodes can be reached.
    fn status(&self) -> FanoutStatus {
        FanoutStatus::Local
    }
    /// `user` opened `room` on this node (their first connection to it
    /// here). Resolves to whether they are new to the room in the whole
    /// cluster, i.e. whether to announce them online. Ordered with
    /// [`depart`](Self::depart): the call, not the await, takes its turn.
    fn arrive(&self, _room: &RoomName, _user: &str) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }
    /// `user` closed their last connection to `room` on this node.
    /// Resolves to whether they left the whole cluster (announce offline).
    fn depart(&self, _room: &RoomName, _user: &str) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }
    /// Who has `room` open on any node, as far as the cluster knows (this
    /// node's users may be missing; the hub adds them).
    fn online_across_nodes(&self, _room: &RoomName) -> BoxFuture<'static, Vec<String>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}

/// "This session ended", from the node that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub id_hash: String,
    /// `logged_out`, `replaced` or `expired`.
    pub reason: &'static str,
    /// The node that ended it (it has already closed its sockets).
    pub node: u64,
}

/// An event for one subscriber's sockets, serialised once.
#[derive(Debug)]
pub struct UserEvent {
    pub frame: Utf8Bytes,
    /// The connection it came from, which does not need it back.
    pub from_connection: Option<u64>,
}

impl UserEvent {
    pub fn new(event: &ServerEvent, from_connection: Option<u64>) -> Arc<Self> {
        Arc::new(Self { frame: event.to_json().into(), from_connection })
    }
}

/// Events a subscriber's channel holds (read markers: rare, and a lagged
/// receiver loses only hints). Small, because every socket holds one.
pub const USER_CHANNEL_CAPACITY: usize = 8;
