//! The fan-out across nodes: Redis pub/sub behind the [`Fanout`] seam.
//!
//! - **Local first.** A [`LocalFanout`] inside delivers this node's own
//!   events to its own sockets directly, whether Redis is up or not.
//! - **Out.** `publish` (and the user and session-end variants) also queue
//!   an envelope (`envelope.rs`) for the *publisher* task, which sends what
//!   is queued as one pipeline of `PUBLISH`es. The queue is bounded; what
//!   cannot be sent (queue full, Redis down) is remembered per room and a
//!   "resync" envelope goes out once Redis takes it again, so the other
//!   nodes re-read that room from the store.
//! - **In.** The *link* task holds one pub/sub connection, subscribed to
//!   `{prefix}:user`, `{prefix}:session-ends` and `{prefix}:room:{room}` for
//!   every room with a local subscriber (subscribed on the first, dropped on
//!   [`Fanout::release`]). It drops its own node's envelopes and puts the
//!   others' into the local channels.
//! - **Nothing missed.** Redis only carries live traffic; the store is the
//!   truth. When a room subscription is confirmed, when the link is lost,
//!   when it is back, and every ~1 s while it is down, every local room
//!   channel gets a resync marker ([`RoomEvent::resync`]): each connection
//!   then re-reads the room from the store after the last seq it delivered
//!   (and a seq gap does the same, see `connection`).
//! - **Failure.** The link reconnects by itself with backoff, logs a warning
//!   once when Redis goes and an info line when it is back, and `status()`
//!   says `Up` or `Down`.
//! - **Presence** across nodes: `presence.rs`.

mod envelope;
mod presence;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use ::redis::{AsyncConnectionConfig, Client, Msg, RedisError};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use self::envelope::{decode_room_event, decode_session_end, decode_user_event, encode_room_event, encode_session_end, encode_user_event};
use self::presence::PresenceOp;
use super::{Fanout, FanoutStatus, LocalFanout, RoomEvent, SessionEnd, UserEvent};
use crate::model::RoomName;

/// Envelopes waiting for the publisher; beyond, rooms are marked for resync.
const PUBLISH_QUEUE: usize = 16 * 1024;
/// Most envelopes sent in one pipeline.
const PUBLISH_BATCH: usize = 512;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The first reconnect wait; it doubles up to `RedisTimings::max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long `connect` waits for the first attempt before serving anyway.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(3);
/// Session ends kept for a Redis that is down (then the oldest go).
const MAX_UNSENT_ENDS: usize = 10_000;

/// The fan-out's periods; [`RedisTimings::default`] is what a node uses.
#[derive(Debug, Clone, Copy)]
pub struct RedisTimings {
    /// How long a node's presence entry lives without a heartbeat.
    pub presence_ttl: Duration,
    /// How often a node renews its presence entries.
    pub heartbeat: Duration,
    /// How often a node removes expired entries of the rooms it serves.
    pub prune: Duration,
    /// How often local rooms re-read the store while Redis is down.
    pub resync_while_down: Duration,
    /// The longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// How often the pub/sub link is pinged (a silent one is lost).
    pub ping: Duration,
}

impl Default for RedisTimings {
    /// A node that dies leaves presence within 30 s (25 s + one prune).
    fn default() -> Self {
        Self {
            presence_ttl: Duration::from_secs(25),
            heartbeat: Duration::from_secs(10),
            prune: Duration::from_secs(5),
            resync_while_down: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            ping: Duration::from_secs(5),
        }
    }
}

/// Why the Redis fan-out could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisFanoutError {
    #[error("--redis-url is not a usable Redis URL: {0}")]
    Url(#[source] RedisError),
}

/// Why the link to Redis is down.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("Redis closed the connection")]
    Closed,
}

/// The names of every key and channel, all under the prefix.
struct Keys {
    room_channel_prefix: String,
    user_channel: String,
    session_ends_channel: String,
    presence_prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            room_channel_prefix: format!("{prefix}:room:"),
            user_channel: format!("{prefix}:user"),
            session_ends_channel: format!("{prefix}:session-ends"),
            presence_prefix: format!("{prefix}:presence:"),
        }
    }

    fn room_channel(&self, room: &RoomName) -> String {
        format!("{}{room}", self.room_channel_prefix)
    }

    fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.room_channel_prefix)
    }

    /// The sorted set of who has `room` open, on every node.
    fn presence(&self, room: &RoomName) -> String {
        format!("{}{room}", self.presence_prefix)
    }
}

/// What the publisher sends.
enum Outgoing {
    Room(RoomName, Arc<RoomEvent>),
    User(String, Arc<UserEvent>),
    SessionEnd(SessionEnd),
}

/// Shared by the fan-out and its tasks.
struct Shared {
    local: LocalFanout,
    node: u64,
    keys: Keys,
    timings: RedisTimings,
    status: watch::Sender<FanoutStatus>,
    /// The current outage was logged.
    outage_reported: AtomicBool,
    /// Rooms with local subscribers: the room channels followed in Redis.
    rooms: Mutex<HashSet<RoomName>>,
    /// "This room joined or left `rooms`", for the link.
    room_changes: mpsc::UnboundedSender<RoomName>,
    outgoing: mpsc::Sender<Outgoing>,
    /// Rooms whose events did not reach Redis: a resync envelope follows.
    unsent_rooms: Mutex<HashSet<RoomName>>,
    /// Session ends that did not reach Redis yet.
    unsent_ends: Mutex<Vec<SessionEnd>>,
    /// The command connection, while Redis is up.
    commands: watch::Sender<Option<MultiplexedConnection>>,
}

/// Redis pub/sub behind the [`Fanout`] seam (see the module doc).
pub struct RedisFanout {
    shared: Arc<Shared>,
    presence: mpsc::UnboundedSender<PresenceOp>,
    stop: CancellationToken,
}

impl RedisFanout {
    /// Starts the fan-out of node `node` over the Redis at `url`, every key
    /// and channel under `prefix`. Waits a moment for the first connection;
    /// if Redis cannot be reached, starts anyway (`Down`) and keeps trying.
    pub async fn connect(url: &str, prefix: &str, node: u64) -> Result<Self, RedisFanoutError> {
        Self::connect_with(url, prefix, node, RedisTimings::default()).await
    }

    /// [`connect`](Self::connect) with other periods (tests shorten them).
    pub async fn connect_with(url: &str, prefix: &str, node: u64, timings: RedisTimings) -> Result<Self, RedisFanoutError> {
        let client = Client::open(url).map_err(RedisFanoutError::Url)?;
        let (room_changes, changed_rooms) = mpsc::unbounded_channel();
        let (outgoing, queue) = mpsc::channel(PUBLISH_QUEUE);
        let (presence, presence_ops) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            local: LocalFanout::default(),
            node,
            keys: Keys::new(prefix),
            timings,
            status: watch::Sender::new(FanoutStatus::Down),
            outage_reported: AtomicBool::new(false),
            rooms: Mutex::new(HashSet::new()),
            room_changes,
            outgoing,
            unsent_rooms: Mutex::new(HashSet::new()),
            unsent_ends: Mutex::new(Vec::new()),
            commands: watch::Sender::new(None),
        });
        let stop = CancellationToken::new();
        let (attempted, first_attempt) = oneshot::channel();
        tokio::spawn(run_link(shared.clone(), client, changed_rooms, attempted, stop.clone()));
        tokio::spawn(run_publisher(shared.clone(), queue, stop.clone()));
        tokio::spawn(resync_while_down(shared.clone(), stop.clone()));
        tokio::spawn(presence::run(shared.clone(), presence_ops, stop.clone()));
        let _ = tokio::time::timeout(FIRST_ATTEMPT_WAIT, first_attempt).await;
        Ok(Self { shared, presence, stop })
    }

    /// This node's id (its envelopes carry it).
    pub fn node(&self) -> u64 {
        self.shared.node
    }

    /// The status now and each change (`Up` / `Down`).
    pub fn status_changes(&self) -> watch::Receiver<FanoutStatus> {
        self.shared.status.subscribe()
    }

    fn presence_op(&self, make: impl FnOnce(oneshot::Sender<bool>) -> PresenceOp) -> BoxFuture<'static, bool> {
        let (reply, answer) = oneshot::channel();
        // Without the presence task (shutting down), act as one node.
        let _ = self.presence.send(make(reply));
        Box::pin(async move { answer.await.unwrap_or(true) })
    }
}

impl Drop for RedisFanout {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fanout for RedisFanout {
    fn publish(&self, room: &RoomName, make: &dyn Fn() -> Arc<RoomEvent>) {
        self.shared.publish(room, make());
    }

    fn subscribe(&self, room: &RoomName) -> broadcast::Receiver<Arc<RoomEvent>> {
        // One lock around both, so a release and a subscribe of the same
        // room cannot leave a local subscriber unfollowed in Redis.
        let mut rooms = self.shared.rooms.lock().expect("followed rooms");
        let receiver = self.shared.local.subscribe(room);
        if rooms.insert(room.clone()) {
            let _ = self.shared.room_changes.send(room.clone());
        }
        receiver
    }

    fn has_subscribers(&self, room: &RoomName) -> bool {
        self.shared.local.has_subscribers(room)
    }

    fn release(&self, room: &RoomName) -> bool {
        let mut rooms = self.shared.rooms.lock().expect("followed rooms");
        if !self.shared.local.release(room) {
            return false;
        }
        if rooms.remove(room) {
            let _ = self.shared.room_changes.send(room.clone());
        }
        true
    }

    fn publish_to_user(&self, subscriber: &str, event: Arc<UserEvent>) {
        self.shared.local.publish_to_user(subscriber, event.clone());
        self.shared.send(Outgoing::User(subscriber.to_string(), event));
    }

    fn subscribe_user(&self, subscriber: &str) -> broadcast::Receiver<Arc<UserEvent>> {
        self.shared.local.subscribe_user(subscriber)
    }

    fn publish_session_end(&self, end: SessionEnd) {
        self.shared.local.publish_session_end(end.clone());
        self.shared.send(Outgoing::SessionEnd(end));
    }

    fn subscribe_session_ends(&self) -> broadcast::Receiver<SessionEnd> {
        self.shared.local.subscribe_session_ends()
    }

    fn status(&self) -> FanoutStatus {
        *self.shared.status.borrow()
    }

    fn arrive(&self, room: &RoomName, user: &str) -> BoxFuture<'static, bool> {
        self.presence_op(|reply| PresenceOp::Arrive { room: room.clone(), user: user.to_string(), reply })
    }

    fn depart(&self, room: &RoomName, user: &str) -> BoxFuture<'static, bool> {
        self.presence_op(|reply| PresenceOp::Depart { room: room.clone(), user: user.to_string(), reply })
    }

    fn online_across_nodes(&self, room: &RoomName) -> BoxFuture<'static, Vec<String>> {
        let commands = self.shared.commands.borrow().clone();
        let key = self.shared.keys.presence(room);
        Box::pin(presence::online(commands, key))
    }
}

impl Shared {
    /// To this node's sockets now, and to the others through Redis.
    fn publish(&self, room: &RoomName, event: Arc<RoomEvent>) {
        self.local.publish(room, &|| event.clone());
        self.send(Outgoing::Room(room.clone(), event));
    }

    fn send(&self, outgoing: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(outgoing)) = self.outgoing.try_send(outgoing) {
            self.keep_unsent(outgoing);
        }
    }

    /// Remembers what could not reach Redis: a room is resynced later, a
    /// session end sent later; a user event is a hint and is dropped.
    fn keep_unsent(&self, outgoing: Outgoing) {
        match outgoing {
            Outgoing::Room(room, _) => {
                self.unsent_rooms.lock().expect("unsent rooms").insert(room);
            }
            Outgoing::User(..) => {}
            Outgoing::SessionEnd(end) => {
                let mut ends = self.unsent_ends.lock().expect("unsent ends");
                if ends.len() >= MAX_UNSENT_ENDS {
                    tracing::warn!("too many session ends waiting for Redis; the oldest is dropped");
                    ends.remove(0);
                }
                ends.push(end);
            }
        }
    }

    /// Tells every local connection to re-read its rooms from the store.
    fn resync_local_rooms(&self) {
        let rooms: Vec<RoomName> = self.rooms.lock().expect("followed rooms").iter().cloned().collect();
        for room in rooms {
            self.local.publish(&room, &RoomEvent::resync);
        }
    }

    fn went_up(&self, commands: MultiplexedConnection) {
        self.commands.send_replace(Some(commands));
        self.status.send_replace(FanoutStatus::Up);
        self.outage_reported.store(false, Ordering::Relaxed);
        tracing::info!(node = self.node, "Redis reachable: sharing live traffic with the other nodes");
    }

    /// Logs one warning per outage (the first failed attempt included).
    fn went_down(&self, why: &LinkError) {
        self.commands.send_replace(None);
        self.status.send_replace(FanoutStatus::Down);
        if !self.outage_reported.swap(true, Ordering::Relaxed) {
            tracing::warn!(node = self.node, error = %why, "Redis unreachable: serving this node's sockets from the store until it is back");
        }
    }

    /// One message from Redis into the local channels (unless it is this
    /// node's own).
    fn deliver(&self, message: &Msg) {
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        let delivered = if let Some(room) = self.keys.room_of_channel(channel) {
            self.deliver_room_event(room, payload)
        } else if channel == self.keys.user_channel {
            decode_user_event(payload).map(|user| {
                if user.node != self.node {
                    self.local.publish_to_user(&user.subscriber, user.event);
                }
            })
        } else if channel == self.keys.session_ends_channel {
            decode_session_end(payload).map(|end| {
                if end.node != self.node {
                    self.local.publish_session_end(end);
                }
            })
        } else {
            Ok(())
        };
        if let Err(e) = delivered {
            tracing::warn!(channel, error = %e, "ignored an unreadable message from Redis");
        }
    }

    fn deliver_room_event(&self, room: &str, payload: &[u8]) -> Result<(), envelope::EnvelopeError> {
        let envelope = decode_room_event(payload)?;
        if envelope.node == self.node {
            return Ok(());
        }
        match RoomName::parse(room) {
            Ok(room) => self.local.publish(&room, &|| envelope.event.clone()),
            Err(_) => tracing::warn!(room, "ignored a Redis room channel with an invalid room name"),
        }
        Ok(())
    }
}

/// The pub/sub link while it is up.
struct Link {
    commands: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Link {
    /// Connects and subscribes to every channel this node follows.
    async fn open(client: &Client, shared: &Shared, room_changes: &mut mpsc::UnboundedReceiver<RoomName>) -> Result<Self, LinkError> {
        let opening = async {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT));
            let commands = client.get_multiplexed_async_connection_with_config(&config).await?;
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            // Every followed room is subscribed below: earlier changes are in it.
            while room_changes.try_recv().is_ok() {}
            let mut channels = vec![shared.keys.user_channel.clone(), shared.keys.session_ends_channel.clone()];
            channels.extend(shared.rooms.lock().expect("followed rooms").iter().map(|room| shared.keys.room_channel(room)));
            sink.subscribe(channels).await?;
            Ok::<_, LinkError>(Self { commands, sink, stream })
        };
        tokio::time::timeout(CONNECT_TIMEOUT * 2, opening).await.map_err(|_| LinkError::TimedOut(CONNECT_TIMEOUT * 2))?
    }

    /// Delivers what Redis sends and follows the rooms that change, until
    /// the link is lost.
    async fn serve(mut self, shared: &Shared, room_changes: &mut mpsc::UnboundedReceiver<RoomName>) -> LinkError {
        let every = shared.timings.ping;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                message = self.stream.next() => match message {
                    Some(message) => shared.deliver(&message),
                    None => return LinkError::Closed,
                },
                Some(room) = room_changes.recv() => {
                    if let Err(e) = self.follow(shared, &room).await {
                        return e;
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(COMMAND_TIMEOUT, self.sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return e.into(),
                        Err(_) => return LinkError::TimedOut(COMMAND_TIMEOUT),
                    }
                }
            }
        }
    }

    /// Subscribes to a room that has local subscribers now, unsubscribes
    /// from one that has none. Once subscribed, the room's sockets re-read
    /// the store: whatever was published before the subscription took.
    async fn follow(&mut self, shared: &Shared, room: &RoomName) -> Result<(), LinkError> {
        let followed = shared.rooms.lock().expect("followed rooms").contains(room);
        let channel = shared.keys.room_channel(room);
        let change = async {
            if followed {
                self.sink.subscribe(&channel).await?;
                shared.local.publish(room, &RoomEvent::resync);
            } else {
                self.sink.unsubscribe(&channel).await?;
            }
            Ok::<_, LinkError>(())
        };
        tokio::time::timeout(COMMAND_TIMEOUT, change).await.map_err(|_| LinkError::TimedOut(COMMAND_TIMEOUT))?
    }
}

/// Keeps the link to Redis: connects, serves, and after a loss reconnects
/// with backoff. `attempted` hears the outcome of the first attempt.
async fn run_link(
    shared: Arc<Shared>,
    client: Client,
    mut room_changes: mpsc::UnboundedReceiver<RoomName>,
    attempted: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut attempted = Some(attempted);
    let mut backoff = MIN_BACKOFF;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = Link::open(&client, &shared, &mut room_changes) => opened,
        };
        match opened {
            Ok(link) => {
                backoff = MIN_BACKOFF;
                shared.went_up(link.commands.clone());
                attempted.take().map(|a| a.send(()));
                // What was published while this node was not subscribed.
                shared.resync_local_rooms();
                let lost = tokio::select! {
                    _ = stop.cancelled() => return,
                    lost = link.serve(&shared, &mut room_changes) => lost,
                };
                shared.went_down(&lost);
                shared.resync_local_rooms();
            }
            Err(e) => {
                shared.went_down(&e);
                attempted.take().map(|a| a.send(()));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.timings.max_backoff);
    }
}

/// While Redis is down, every local room re-reads the store every
/// `resync_while_down`: other nodes' messages still arrive, within that.
async fn resync_while_down(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.timings.resync_while_down);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if *shared.status.borrow() == FanoutStatus::Down {
                    shared.resync_local_rooms();
                }
            }
        }
    }
}

/// Sends queued envelopes as pipelines of `PUBLISH`; once a second it also
/// retries what could not be sent (resync envelopes, session ends).
async fn run_publisher(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = queue.recv_many(&mut batch, PUBLISH_BATCH) => if received == 0 { return },
            _ = retry.tick() => {}
        }
        shared.publish_batch(&mut batch).await;
    }
}

impl Shared {
    /// Sends `batch` (emptied) and whatever waits to be sent again.
    async fn publish_batch(&self, batch: &mut Vec<Outgoing>) {
        let commands = self.commands.borrow().clone();
        let Some(mut commands) = commands else {
            batch.drain(..).for_each(|outgoing| self.keep_unsent(outgoing));
            return;
        };
        let resync_rooms: Vec<RoomName> = self.unsent_rooms.lock().expect("unsent rooms").drain().collect();
        let ends: Vec<SessionEnd> = std::mem::take(&mut *self.unsent_ends.lock().expect("unsent ends"));
        if batch.is_empty() && resync_rooms.is_empty() && ends.is_empty() {
            return;
        }
        let mut pipe = ::redis::pipe();
        let resync = RoomEvent::resync();
        for room in &resync_rooms {
            pipe.cmd("PUBLISH").arg(self.keys.room_channel(room)).arg(encode_room_event(self.node, &resync)).ignore();
        }
        for end in &ends {
            pipe.cmd("PUBLISH").arg(&self.keys.session_ends_channel).arg(encode_session_end(end)).ignore();
        }
        for outgoing in batch.iter() {
            let (channel, payload) = self.encode(outgoing);
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut commands).await {
            // The link notices the loss and says so; this only keeps score.
            tracing::debug!(error = %e, "could not publish to Redis; will resync");
            self.unsent_rooms.lock().expect("unsent rooms").extend(resync_rooms);
            ends.into_iter().for_each(|end| self.keep_unsent(Outgoing::SessionEnd(end)));
            batch.drain(..).for_each(|outgoing| self.keep_unsent(outgoing));
        }
        batch.clear();
    }

    fn encode(&self, outgoing: &Outgoing) -> (String, Vec<u8>) {
        match outgoing {
            Outgoing::Room(room, event) => (self.keys.room_channel(room), encode_room_event(self.node, event)),
            Outgoing::User(subscriber, event) => (self.keys.user_channel.clone(), encode_user_event(self.node, subscriber, event)),
            Outgoing::SessionEnd(end) => (self.keys.session_ends_channel.clone(), encode_session_end(end)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerEvent;

    fn quick() -> RedisTimings {
        RedisTimings { resync_while_down: Duration::from_millis(30), max_backoff: Duration::from_millis(30), ..RedisTimings::default() }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
    }

    #[test]
    fn every_key_and_channel_starts_with_the_prefix() {
        let keys = Keys::new("deploy-1");
        let room = RoomName::parse("general").unwrap();
        assert_eq!(keys.room_channel(&room), "deploy-1:room:general");
        assert_eq!(keys.room_of_channel("deploy-1:room:general"), Some("general"));
        assert_eq!(keys.room_of_channel("deploy-2:room:general"), None);
        assert_eq!((keys.user_channel.as_str(), keys.session_ends_channel.as_str()), ("deploy-1:user", "deploy-1:session-ends"));
        assert_eq!(keys.presence(&room), "deploy-1:presence:general");
    }

    #[tokio::test]
    async fn without_redis_a_node_serves_its_own_sockets_resyncs_them_and_warns_once() {
        let (logged, _capturing) = crate::test_logs::capture();
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let fanout = RedisFanout::connect_with(&url, "t", 1, quick()).await.expect("a valid URL");
        assert_eq!(fanout.status(), FanoutStatus::Down);
        let room = RoomName::parse("general").unwrap();
        let mut events = fanout.subscribe(&room);
        let typing = ServerEvent::Typing { room: "general".into(), user: "ann".into() };
        fanout.publish(&room, &|| RoomEvent::new(&typing, None, None));
        let (mut own, mut resyncs) = (0, 0);
        // Several retries go by while three resync markers arrive.
        while resyncs < 3 {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event").expect("open");
            if event.resync { resyncs += 1 } else { own += 1 }
        }
        assert_eq!(own, 1, "the node's own event reached its socket");
        let warnings = logged.lines().iter().filter(|l| l.contains("Redis unreachable")).count();
        assert_eq!(warnings, 1, "one warning per outage: {:?}", logged.lines());
    }
}
