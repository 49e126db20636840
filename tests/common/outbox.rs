//! A chat client that outlives its server, for the fault suites
//! (`fault_kill.rs`, `soak.rs`). It behaves as the protocol tells a client
//! to (docs/PROTOCOL.md §10.5, §11):
//!
//! - it keeps an outbox of posts (each with its own `client_id`), edits and
//!   deletes of its own acknowledged posts, with a window of items in
//!   flight; an item counts as acknowledged only when the server's frame
//!   says it is stored (the echo of the post, the `edited` or `deleted`
//!   frame);
//! - when its socket ends, it reconnects to the node a [`Balancer`] names,
//!   joins with `after` = the highest seq it saw, takes what it missed
//!   (paging `GET …/events` when `has_more`), and only then resends every
//!   item still unacknowledged, posts with the same `client_id`.
//!
//! What it was told ([`Ledger`]) is what the suites check the room against
//! at the end ([`check_room`]); what it saw on its socket (seqs in order,
//! gaps, repeats) is counted in the client itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::{TIMEOUT, User, WsClient, connect_ws};

/// How long a client waits before trying a node again after a failed
/// connection (a reconnect backoff, not a synchronisation).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);
/// How long a client waits before resending after a node said it could
/// not store (`store_unavailable`, `internal`).
const STORE_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Where each node listens now (`None` while it is down): what a load
/// balancer knows. Cheap to clone.
#[derive(Clone)]
pub struct Balancer {
    nodes: Arc<watch::Sender<Vec<Option<SocketAddr>>>>,
}

impl Balancer {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self { nodes: Arc::new(watch::Sender::new(addrs.into_iter().map(Some).collect())) }
    }

    pub fn down(&self, node: usize) {
        self.nodes.send_modify(|nodes| nodes[node] = None);
    }

    pub fn up(&self, node: usize, addr: SocketAddr) {
        self.nodes.send_modify(|nodes| nodes[node] = Some(addr));
    }

    /// `preferred` if it is up, else the next node that is; waits while
    /// none is.
    pub async fn pick(&self, preferred: usize) -> SocketAddr {
        let mut changes = self.nodes.subscribe();
        let nodes = changes.wait_for(|nodes| nodes.iter().any(Option::is_some)).await.expect("the balancer lives");
        (0..nodes.len()).find_map(|k| nodes[(preferred + k) % nodes.len()]).expect("a node is up")
    }
}

/// What every client of one run saw, for the printed figures.
#[derive(Default)]
pub struct Tally {
    pub acked_posts: AtomicU64,
    pub acked_edits: AtomicU64,
    pub acked_deletes: AtomicU64,
    /// Items sent again after a reconnect.
    pub resent: AtomicU64,
    pub reconnects: AtomicU64,
    /// Error frames, as received.
    pub errors: Mutex<Vec<Value>>,
    /// Send → delivery times of other clients' posts received live.
    pub latencies: Mutex<Vec<Duration>>,
    acks: watch::Sender<u64>,
    restarted: Mutex<Option<Instant>>,
    /// Restart → first acknowledgement, one per restart.
    pub recoveries: Mutex<Vec<Duration>>,
}

impl Tally {
    /// Acknowledgements so far (posts, edits and deletes).
    pub fn acks(&self) -> u64 {
        *self.acks.borrow()
    }

    /// Waits until `count` acknowledgements have come; panics after
    /// `within` (the clients made no progress).
    pub async fn wait_for_acks(&self, count: u64, within: Duration) {
        let mut acks = self.acks.subscribe();
        tokio::time::timeout(within, acks.wait_for(|&n| n >= count))
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} acknowledgements within {within:?}", self.acks()))
            .expect("the tally lives");
    }

    /// A server has just restarted: the next acknowledgement measures how
    /// long clients took to get going again.
    pub fn restarted_now(&self) {
        *self.restarted.lock().unwrap() = Some(Instant::now());
    }

    fn acknowledged(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.acks.send_modify(|n| *n += 1);
        if let Some(restarted) = self.restarted.lock().unwrap().take() {
            self.recoveries.lock().unwrap().push(restarted.elapsed());
        }
    }

    pub fn error_count(&self) -> usize {
        self.errors.lock().unwrap().len()
    }
}

/// Signals from the test to its clients.
#[derive(Clone)]
pub struct Control {
    /// `true`: make no new items; finish the outbox, then stop.
    pub stop_sending: watch::Receiver<bool>,
    /// Readers stop once they have seen this seq (0: not known yet).
    pub read_until: watch::Receiver<u64>,
    /// Each change: drop the socket and reconnect (a reconnect storm).
    pub storm: watch::Receiver<u64>,
}

/// The test's ends of [`Control`].
pub struct Controls {
    pub stop_sending: watch::Sender<bool>,
    pub read_until: watch::Sender<u64>,
    pub storm: watch::Sender<u64>,
}

impl Controls {
    pub fn new() -> (Self, Control) {
        let (stop_sending, stop_rx) = watch::channel(false);
        let (read_until, until_rx) = watch::channel(0);
        let (storm, storm_rx) = watch::channel(0);
        (Self { stop_sending, read_until, storm }, Control { stop_sending: stop_rx, read_until: until_rx, storm: storm_rx })
    }
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Items in flight at once (0: a reader that sends nothing).
    pub window: usize,
    /// Shares of new items that edit or delete one of its own posts.
    pub edit_share: f64,
    pub delete_share: f64,
    /// At least this long between new items (`None`: as fast as acks come).
    pub pace: Option<Duration>,
    /// A slow reader: every so often it stops reading for a while.
    pub pauses: Option<Pauses>,
    /// Whether it follows [`Control::storm`].
    pub storms: bool,
}

#[derive(Clone, Debug)]
pub struct Pauses {
    pub every: Duration,
    pub length: Duration,
}

impl Mix {
    pub fn writer(window: usize) -> Self {
        Self { window, edit_share: 0.08, delete_share: 0.04, pace: None, pauses: None, storms: false }
    }

    pub fn reader() -> Self {
        Self { window: 0, edit_share: 0.0, delete_share: 0.0, pace: None, pauses: None, storms: false }
    }
}

/// One of a client's posts, as far as it knows.
#[derive(Clone, Debug)]
pub struct Post {
    /// Its id, once acknowledged.
    pub id: Option<u64>,
    /// The text it has now (the last acknowledged edit's).
    pub text: String,
    pub deleted: bool,
    /// An edit or delete of it is waiting for its acknowledgement.
    busy: bool,
}

/// What a client was told is stored.
#[derive(Default, Debug)]
pub struct Ledger {
    /// By `client_id`.
    pub posts: BTreeMap<String, Post>,
    /// Ids of this client's posts.
    by_id: BTreeMap<u64, String>,
    /// A post acknowledged under a second id: stored twice.
    pub twice: Vec<(String, u64, u64)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Item {
    Post { client_id: String },
    Edit { id: u64, text: String },
    Delete { id: u64 },
}

/// A client: a browser (cookie jar), a room, an outbox and what it saw.
pub struct Client {
    pub user: User,
    room: String,
    balancer: Balancer,
    preferred: usize,
    tally: Arc<Tally>,
    mix: Mix,
    rng: StdRng,
    pub ledger: Ledger,
    outbox: VecDeque<Item>,
    in_flight: Vec<Item>,
    made: u64,
    /// The highest seq seen.
    pub last_seq: u64,
    /// New seqs seen (each above the one before).
    pub seen: u64,
    /// Times a new seq was not the one after the last.
    pub gaps: Vec<(u64, u64)>,
    /// Frames whose seq was not above the last one (repeats, and the
    /// stored copy answering a resend).
    pub stale: u64,
    next_send: Instant,
    next_pause: Instant,
    /// The server could not store something: reconnect and resend.
    must_retry: bool,
}

/// A process-wide time origin: posts carry `t=<µs since it>` so a reader
/// can tell how long delivery took.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_now() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// A message's or change's seq (a message's id is its seq).
fn seq_of(event: &Value) -> Option<u64> {
    match event["type"].as_str() {
        None | Some("message") => event["id"].as_u64(),
        Some("edited" | "deleted") => event["seq"].as_u64(),
        Some(_) => None,
    }
}

impl Client {
    pub fn new(user: User, room: &str, balancer: Balancer, preferred: usize, tally: Arc<Tally>, mix: Mix, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            user,
            room: room.to_string(),
            balancer,
            preferred,
            tally,
            rng: StdRng::seed_from_u64(seed),
            next_pause: now + mix.pauses.as_ref().map_or(Duration::ZERO, |p| p.every),
            mix,
            ledger: Ledger::default(),
            outbox: VecDeque::new(),
            in_flight: Vec::new(),
            made: 0,
            last_seq: 0,
            seen: 0,
            gaps: Vec::new(),
            stale: 0,
            next_send: now,
            must_retry: false,
        }
    }

    /// Runs until the test says stop and everything is acknowledged (a
    /// writer), or until it has seen [`Control::read_until`] (a reader).
    pub async fn run(mut self, mut control: Control) -> Self {
        let mut socket = self.connect().await;
        loop {
            if self.finished(&control) {
                socket.close().await;
                return self;
            }
            if !self.fill(&mut socket, &control).await {
                socket = self.reconnect().await;
                continue;
            }
            if self.mix.pauses.is_some() && Instant::now() >= self.next_pause {
                self.pause().await;
            }
            let pacing = self.pacing(&control);
            // A reader may hear nothing while writers reconnect.
            let quiet = if self.mix.window == 0 { PROGRESS_TIMEOUT } else { TIMEOUT };
            tokio::select! {
                event = socket.next_event_or_end_within(quiet) => match event {
                    Ok(Some(event)) => {
                        self.on_event(&event, true);
                        if self.must_retry {
                            // The node could not store: try again, from a
                            // resume (an error does not say which edit failed).
                            tokio::time::sleep(STORE_RETRY_BACKOFF).await;
                            socket = self.reconnect().await;
                        }
                    }
                    Ok(None) => socket = self.reconnect().await,
                    Err(_) => panic!(
                        "{} heard nothing for {quiet:?}: last seq {} (reading until {}; gaps {:?}), waiting for {:?}, queued {:?}",
                        self.user.name, self.last_seq, *control.read_until.borrow(), self.gaps, self.in_flight, self.outbox
                    ),
                },
                _ = tokio::time::sleep_until(pacing.unwrap_or_else(Instant::now).into()), if pacing.is_some() => {}
                _ = control.storm.changed(), if self.mix.storms => socket = self.reconnect().await,
                _ = control.stop_sending.changed() => {}
                _ = control.read_until.changed() => {}
            }
        }
    }

    fn finished(&self, control: &Control) -> bool {
        if self.mix.window == 0 {
            let until = *control.read_until.borrow();
            return until > 0 && self.last_seq >= until;
        }
        *control.stop_sending.borrow() && self.outbox.is_empty() && self.in_flight.is_empty()
    }

    /// When the next new item may go, if it is waiting only for its time.
    fn pacing(&self, control: &Control) -> Option<Instant> {
        let room_for_more = self.in_flight.len() < self.mix.window && self.outbox.is_empty();
        (self.mix.pace.is_some() && room_for_more && !*control.stop_sending.borrow()).then_some(self.next_send)
    }

    /// A slow reader stops reading for a while (the server's side of the
    /// socket backs up meanwhile).
    async fn pause(&mut self) {
        let pauses = self.mix.pauses.clone().expect("a slow reader");
        tokio::time::sleep(pauses.length).await;
        self.next_pause = Instant::now() + pauses.every;
    }

    /// Sends until the window is full; `false` if the socket failed.
    async fn fill(&mut self, socket: &mut WsClient, control: &Control) -> bool {
        while self.in_flight.len() < self.mix.window {
            let Some(item) = self.next_item(control) else { return true };
            let frame = self.frame(&item);
            self.in_flight.push(item);
            if !socket.try_send_json(&frame).await {
                return false;
            }
        }
        true
    }

    fn next_item(&mut self, control: &Control) -> Option<Item> {
        if let Some(item) = self.outbox.pop_front() {
            return Some(item);
        }
        if *control.stop_sending.borrow() || Instant::now() < self.next_send {
            return None;
        }
        if let Some(pace) = self.mix.pace {
            self.next_send = Instant::now() + pace;
        }
        let roll: f64 = self.rng.random();
        if roll < self.mix.edit_share + self.mix.delete_share
            && let Some(id) = self.changeable_post()
        {
            let client_id = self.ledger.by_id[&id].clone();
            self.ledger.posts.get_mut(&client_id).expect("a post of mine").busy = true;
            self.made += 1;
            return Some(if roll < self.mix.edit_share {
                Item::Edit { id, text: format!("{} edit {} t={}", self.user.name, self.made, micros_now()) }
            } else {
                Item::Delete { id }
            });
        }
        self.made += 1;
        let client_id = format!("{}-{}", self.user.name, self.made);
        let text = format!("{} post {} t={}", self.user.name, self.made, micros_now());
        self.ledger.posts.insert(client_id.clone(), Post { id: None, text, deleted: false, busy: false });
        Some(Item::Post { client_id })
    }

    /// A random acknowledged post of its own that is not deleted and has
    /// no change waiting.
    fn changeable_post(&mut self) -> Option<u64> {
        let candidates: Vec<u64> =
            self.ledger.posts.values().filter(|p| !p.deleted && !p.busy).filter_map(|p| p.id).collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    fn frame(&self, item: &Item) -> Value {
        match item {
            Item::Post { client_id } => {
                let text = &self.ledger.posts[client_id].text;
                json!({ "type": "send", "room": self.room, "text": text, "client_id": client_id })
            }
            Item::Edit { id, text } => json!({ "type": "edit", "room": self.room, "id": id, "text": text }),
            Item::Delete { id } => json!({ "type": "delete", "room": self.room, "id": id }),
        }
    }

    /// A frame from the server, live or from a `joined` history / events
    /// page: acknowledges what it stores, and moves the seq cursor.
    fn on_event(&mut self, event: &Value, live: bool) {
        match event["type"].as_str() {
            None | Some("message") => self.on_message(event, live),
            Some("edited") => {
                let (id, text) = (event["id"].as_u64(), event["text"].as_str());
                if let (Some(id), Some(text)) = (id, text)
                    && self.take_in_flight(&Item::Edit { id, text: text.to_string() })
                {
                    let client_id = self.ledger.by_id[&id].clone();
                    let post = self.ledger.posts.get_mut(&client_id).expect("a post of mine");
                    (post.text, post.busy) = (text.to_string(), false);
                    self.tally.acknowledged(&self.tally.acked_edits);
                }
            }
            Some("deleted") => {
                if let Some(id) = event["id"].as_u64()
                    && self.take_in_flight(&Item::Delete { id })
                {
                    let client_id = self.ledger.by_id[&id].clone();
                    let post = self.ledger.posts.get_mut(&client_id).expect("a post of mine");
                    (post.deleted, post.busy) = (true, false);
                    self.tally.acknowledged(&self.tally.acked_deletes);
                }
            }
            Some("error") => {
                self.must_retry |= matches!(event["code"].as_str(), Some("store_unavailable" | "internal"));
                self.tally.errors.lock().unwrap().push(event.clone());
            }
            Some(_) => return,
        }
        self.advance(event);
    }

    fn on_message(&mut self, event: &Value, live: bool) {
        let (Some(id), Some(client_id)) = (event["id"].as_u64(), event["client_id"].as_str()) else { return };
        if event["user"] != self.user.name.as_str() {
            if live && seq_of(event) > Some(self.last_seq) {
                self.record_latency(event);
            }
            return;
        }
        let Some(post) = self.ledger.posts.get_mut(client_id) else { return };
        match post.id {
            Some(first) if first != id => self.ledger.twice.push((client_id.to_string(), first, id)),
            Some(_) => {}
            None => {
                post.id = Some(id);
                self.ledger.by_id.insert(id, client_id.to_string());
                let item = Item::Post { client_id: client_id.to_string() };
                if !self.take_in_flight(&item) {
                    self.outbox.retain(|queued| *queued != item);
                }
                self.tally.acknowledged(&self.tally.acked_posts);
            }
        }
    }

    fn record_latency(&self, event: &Value) {
        let sent = event["text"].as_str().and_then(|t| t.rsplit_once("t=")).and_then(|(_, t)| t.parse::<u64>().ok());
        if let Some(sent) = sent {
            let took = Duration::from_micros(micros_now().saturating_sub(sent));
            self.tally.latencies.lock().unwrap().push(took);
        }
    }

    fn take_in_flight(&mut self, item: &Item) -> bool {
        match self.in_flight.iter().position(|waiting| waiting == item) {
            Some(at) => {
                self.in_flight.remove(at);
                true
            }
            None => false,
        }
    }

    fn advance(&mut self, event: &Value) {
        let Some(seq) = seq_of(event) else { return };
        if seq <= self.last_seq {
            self.stale += 1;
            return;
        }
        if seq != self.last_seq + 1 {
            self.gaps.push((self.last_seq, seq));
        }
        self.last_seq = seq;
        self.seen += 1;
    }

    async fn reconnect(&mut self) -> WsClient {
        self.tally.reconnects.fetch_add(1, Ordering::Relaxed);
        self.connect().await
    }

    /// A joined socket on a live node, caught up, with every unacknowledged
    /// item queued again (to go first).
    async fn connect(&mut self) -> WsClient {
        self.must_retry = false;
        loop {
            let addr = self.balancer.pick(self.preferred).await;
            if let Some(socket) = self.resume(addr).await {
                let resent = std::mem::take(&mut self.in_flight);
                self.tally.resent.fetch_add(resent.len() as u64, Ordering::Relaxed);
                for item in resent.into_iter().rev() {
                    self.outbox.push_front(item);
                }
                return socket;
            }
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
    }

    /// Joins the room on `addr` after the last seq seen and takes what was
    /// missed; `None` if the node failed meanwhile.
    async fn resume(&mut self, addr: SocketAddr) -> Option<WsClient> {
        let url = format!("ws://{addr}/ws");
        let mut socket = match connect_ws(&url, self.user.cookie.as_deref(), None).await {
            Ok(socket) => socket,
            Err(WsError::Http(response)) if response.status() == 401 => {
                panic!("{}'s session did not survive: the upgrade answered 401", self.user.name)
            }
            Err(_) => return None,
        };
        let join = json!({ "type": "join", "room": self.room, "after": self.last_seq });
        if !socket.try_send_json(&join).await {
            return None;
        }
        let joined = loop {
            let event = socket.next_event_or_end().await?;
            match event["type"].as_str() {
                Some("joined") => break event,
                Some("error") if event["code"] == "store_unavailable" => {
                    self.tally.errors.lock().unwrap().push(event);
                    return None;
                }
                Some("error") => panic!("{} could not join {}: {event}", self.user.name, self.room),
                _ => {}
            }
        };
        for event in joined["history"].as_array().expect("a history") {
            self.on_event(event, false);
        }
        if joined["has_more"] == true {
            self.page_events(addr, joined["seq"].as_u64().expect("a seq")).await?;
        }
        Some(socket)
    }

    /// `GET …/events` from `after` until `has_more` is false.
    async fn page_events(&mut self, addr: SocketAddr, mut after: u64) -> Option<()> {
        loop {
            let url = format!("http://{addr}/api/rooms/{}/events?after={after}&limit=500", self.room);
            let response = self.user.http.get(url).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            let page: Value = response.json().await.ok()?;
            for event in page["events"].as_array()? {
                self.on_event(event, false);
            }
            after = page["seq"].as_u64()?;
            if page["has_more"] != true {
                return Some(());
            }
        }
    }
}

/// What [`check_room`] found.
#[derive(Debug)]
pub struct RoomCheck {
    /// Posts in the room's log.
    pub stored: usize,
    /// Posts the clients made (every one acknowledged by the end).
    pub expected: usize,
    /// Posts stored more than once.
    pub duplicates: usize,
    /// Acknowledged posts missing, or not as last acknowledged.
    pub lost: Vec<String>,
    /// Other violations (order, deleted text still present).
    pub problems: Vec<String>,
}

impl RoomCheck {
    pub fn assert_clean(&self) {
        assert_eq!(self.duplicates, 0, "posts stored twice: {self:?}");
        assert!(self.lost.is_empty(), "acknowledged posts lost or changed: {:?}", self.lost);
        assert!(self.problems.is_empty(), "{:?}", self.problems);
        assert_eq!(self.stored, self.expected, "one stored post per post made");
    }
}

/// Checks the room, read back as its event log (`events`, from
/// `GET …/events`) and as it is now (`messages`, from `GET …/messages`),
/// against what every client was told (and `others` posts made besides).
pub fn check_room(clients: &[Client], others: usize, events: &[Value], messages: &[Value]) -> RoomCheck {
    let mut problems = Vec::new();
    let seqs: Vec<u64> = events.iter().filter_map(seq_of).collect();
    if seqs.len() != events.len() || seqs.iter().zip(1..).any(|(&seq, n)| seq != n) {
        problems.push(format!("the log's seqs are not 1, 2, 3…: {} events, seqs {:?}…", events.len(), &seqs[..seqs.len().min(20)]));
    }
    let posts: Vec<&Value> = events.iter().filter(|e| e["type"] == "message").collect();
    let mut keys = BTreeSet::new();
    let mut duplicates = 0;
    for post in posts.iter().filter(|p| p["deleted"] != true) {
        let key = (post["user"].as_str().unwrap_or_default().to_lowercase(), post["client_id"].to_string());
        if !keys.insert(key) {
            duplicates += 1;
        }
    }
    let now: BTreeMap<u64, &Value> = messages.iter().map(|m| (m["id"].as_u64().expect("an id"), m)).collect();
    let mut lost = Vec::new();
    let mut expected = others;
    let mut made_deleted = BTreeSet::new();
    let texts_in_log: BTreeSet<&str> = events.iter().filter_map(|e| e["text"].as_str()).collect();
    for client in clients {
        duplicates += client.ledger.twice.len();
        for (client_id, post) in &client.ledger.posts {
            expected += 1;
            let Some(id) = post.id else {
                lost.push(format!("{client_id}: never acknowledged"));
                continue;
            };
            let Some(message) = now.get(&id) else {
                lost.push(format!("{client_id} (id {id}): not in the room"));
                continue;
            };
            if post.deleted {
                made_deleted.insert(id);
                if message["deleted"] != true || message.get("text").is_some() {
                    lost.push(format!("{client_id} (id {id}): deleted, but the room shows {message}"));
                }
                if texts_in_log.contains(post.text.as_str()) {
                    problems.push(format!("the text of deleted {client_id} (id {id}) is still in the log"));
                }
            } else if message["client_id"] != client_id.as_str()
                || message["user"] != client.user.name.as_str()
                || message["text"] != post.text.as_str()
            {
                lost.push(format!("{client_id} (id {id}) as last acknowledged {:?}, the room has {message}", post.text));
            }
        }
    }
    let shown_deleted: BTreeSet<u64> = messages.iter().filter(|m| m["deleted"] == true).filter_map(|m| m["id"].as_u64()).collect();
    if shown_deleted != made_deleted {
        problems.push(format!("deleted in the room {shown_deleted:?}, deletes acknowledged {made_deleted:?}"));
    }
    RoomCheck { stored: posts.len(), expected, duplicates, lost, problems }
}

/// The `q`-quantile of `samples` (0 for none).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

/// Seed for a fault run: `CHATROOM_FAULT_SEED` to replay one, else random;
/// printed either way.
pub fn fault_seed(what: &str) -> u64 {
    let seed = std::env::var("CHATROOM_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    super::print_figure(&format!("{what}: CHATROOM_FAULT_SEED={seed}"));
    seed
}

/// Posts one last message through `node` and returns the room's log and
/// messages as they are then. An event stored by a node killed before it
/// published reaches the other nodes' sockets with the room's next event
/// (the gap starts a catch-up from the store), not before: this post is
/// that next event, so readers can be held to every seq.
pub async fn last_word(user: &User, room: &str) -> (Vec<Value>, Vec<Value>) {
    user.send_http(room, "the last word", "last-word").await;
    (user.all_events(room).await, user.all_messages(room).await)
}

/// [`TIMEOUT`] scaled for waits that span restarts.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(TIMEOUT.as_secs() * 6);
