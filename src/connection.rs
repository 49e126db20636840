//! One WebSocket connection: reads client events, joins rooms, relays room
//! events back, until the client leaves, its session ends or the server
//! shuts down.
//!
//! Generic over any `Stream + Sink` of tungstenite messages, so tests can
//! drive it without a port; `http::ws` hands it real upgraded sockets.
//!
//! Guarantees kept here:
//! - a client sees each message id of a room at most once, in increasing
//!   order, with no gap from the history it was sent on `join` (history and
//!   live events are stitched together by id);
//! - a client that lags behind the room's channel re-reads what it missed
//!   from the store instead of losing it — a page at a time, each page
//!   written before the next is read, so a reader that paused while its
//!   room was busy costs the server one page, not the whole gap;
//! - the same catch-up runs when a room's events arrive with a gap in their
//!   seqs (events from several nodes may cross; the store has every seq up
//!   to the newest one seen) and when the fan-out sends a resync marker
//!   (it may have lost events: Redis was down), so a client gets every
//!   seq once, in order, whatever the fan-out dropped;
//! - a catch-up whose store read fails is tried again after 50, 200 and
//!   800 ms (a timer the loop waits on with everything else, so the socket
//!   keeps relaying its other rooms); if the store still fails, the socket
//!   is closed with 1013 ([`CLOSE_TRY_AGAIN`]) and the client resumes with
//!   `after`: it is never left open and silently behind;
//! - at most [`MAX_QUEUED_BYTES`] of frames are gathered before a write,
//!   and queued frames are written with one flush, not one syscall each;
//! - a write that makes no progress for `write_timeout` drops the socket
//!   (the client resumes with `after`), and a session that ends or a
//!   shutdown interrupts a stuck write too;
//! - with `ping_interval`, the client is pinged; one that sends nothing
//!   back (not even a pong) for a whole interval is dropped.
//!
//! Shutdown, the session's end, the keepalive timer and the user's own
//! events are polled only when their own waker fired ([`WakeGate`]), not on
//! every event relayed.

mod wake_gate;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::auth::sessions::{EndReason, Session};
use crate::error::ChatError;
use crate::chat::{Actor, Chat};
use crate::fanout::{RoomEvent, UserEvent};
use crate::model::{EventKind, MAX_CLIENT_ID, RoomName};
use crate::protocol::{ClientEvent, HistoryItem, ServerEvent};
use crate::rate::{RateLimiter, SendRate};
use crate::store::Appended;
use crate::telemetry;
use self::wake_gate::WakeGate;

/// Largest frame a client may send (bigger: closed with 1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Rooms one connection may have joined at once.
pub const MAX_JOINED_ROOMS: usize = 256;
/// Sends of one connection being stored at once; reading pauses beyond.
const MAX_PENDING_SENDS: usize = 64;
/// Frames written before a flush when many are queued.
const MAX_FRAMES_PER_FLUSH: usize = 256;
/// Bytes of frames gathered before they are written (one more frame may
/// pass it).
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;
/// Messages read from the store per catch-up step.
const CATCH_UP_PAGE: usize = 100;
/// Waits before each new try of a catch-up read that failed; once they are
/// used up, the socket is closed with [`CLOSE_TRY_AGAIN`].
const CATCH_UP_RETRIES: [Duration; 3] = [Duration::from_millis(50), Duration::from_millis(200), Duration::from_millis(800)];
/// How long the close frame may take once a socket is being dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Typing events relayed per user and room, at most one per this period.
const TYPING_PERIOD: Duration = Duration::from_secs(1);
/// Numbers each connection, so its own news is not echoed back to it.
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Close code for "your session ended" (application range 4000–4999).
pub const CLOSE_SESSION_ENDED: u16 = 4401;
/// Close code for "try again later" (RFC 6455's 1013): missed events could
/// not be re-read from the store; the client rejoins with `after`.
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// What a connection needs from the rest of the server.
pub struct ConnectionContext {
    pub chat: Chat,
    pub session: Arc<Session>,
    pub shutdown: watch::Receiver<bool>,
    /// Frames of any kind per second (`None`: no limit).
    pub frame_rate: Option<SendRate>,
    /// A write that makes no progress for this long drops the socket.
    pub write_timeout: Duration,
    /// Ping this often; drop a client silent for a whole interval.
    pub ping_interval: Option<Duration>,
}

/// A stored (or refused) event: its room (as sent), the post's
/// `client_id`, the answer.
type SendDone = (String, Option<String>, Result<Appended, ChatError>);
type PendingSend = BoxFuture<'static, SendDone>;

/// An edit, delete or reaction asked for over the socket.
enum Change {
    Edit(u64, String),
    Delete(u64),
    React(u64, String),
}

/// Whether a room event's frame says the user with this (lower-cased) key
/// was removed from the room. Only `member` frames are parsed.
fn removes(frame: &str, user_key: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct MemberFrame {
        user: String,
        added: bool,
    }
    frame.starts_with(r#"{"type":"member""#)
        && serde_json::from_str::<MemberFrame>(frame).is_ok_and(|m| !m.added && m.user.to_lowercase() == user_key)
}

/// Runs a connection to its end.
pub async fn run<S>(mut socket: S, ctx: ConnectionContext)
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    let _counted = ctx.session.socket_opened();
    let _open = telemetry::socket_opened();
    let mut conn = Connection::new(&ctx);
    // The user's own news (a read marker moved on another device).
    let mut user_events = BroadcastStream::new(conn.chat.user_events(&conn.actor));
    // A guest's mentions (they come by name, not on the session's channel).
    let mut name_events = conn.chat.guest_name_events(&conn.actor).map(BroadcastStream::new);
    let mut session_ended = ctx.session.ended();
    let mut shutdown = ctx.shutdown.clone();
    let mut pending: FuturesUnordered<PendingSend> = FuturesUnordered::new();
    // Made once and polled across turns of the loop: made anew each turn,
    // they registered and dropped a waiter on two watch channels (one
    // shared by every socket) for every event relayed. Gated, they are
    // polled only when one of the two channels woke them.
    let stop = async move {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => Stop::Shutdown,
            reason = session_ended.wait_for(Option::is_some) => Stop::SessionEnded(reason.ok().and_then(|r| *r)),
        }
    };
    tokio::pin!(stop);
    let mut stop = Gated::new(stop);
    let mut pings = Keepalive::new(ctx.ping_interval);
    let quiet = WakeGate::default();
    let mut catch_up_first = false;

    // The socket is not split: the branches below only borrow it while
    // waiting, and writes happen after the `select!`, so no lock is needed.
    let close = loop {
        let mut out = Outbox::default();
        let retry_at = conn.feeds.next_retry();
        tokio::select! {
            biased;
            stopped = &mut stop => break Some(stopped.close_frame()),
            // The keepalive timer and the user's own news: rarely anything,
            // so polled only when one of them woke the task.
            event = quiet_event(&quiet, &mut pings, &mut user_events, name_events.as_mut()) => match event {
                Quiet::PingDue => match pings.on_tick() {
                    Some(ping) => out.push(ping),
                    None => break None, // silent for a whole interval
                },
                // A lagged user channel loses only read hints: the next
                // `joined` or GET /api/subscriptions has the markers.
                Quiet::UserNews(news) => {
                    if let Ok(news) = news
                        && news.from_connection != conn.actor.connection
                    {
                        out.push(WsMessage::Text(news.frame.clone()));
                    }
                }
            },
            Some(done) = pending.next(), if !pending.is_empty() => conn.on_send_done(done, &mut out),
            frame = socket.next(), if pending.len() < MAX_PENDING_SENDS => match frame {
                Some(Ok(frame)) => {
                    pings.heard();
                    if frame.is_text() || frame.is_binary() {
                        ctx.session.touch();
                    }
                    if let Some(send) = conn.on_frame(frame, &mut out).await {
                        pending.push(send);
                    }
                }
                Some(Err(WsError::Capacity(_))) => break Some(close_frame(CloseCode::Size, "frame larger than 64 KiB")),
                Some(Err(WsError::Utf8(_))) => break Some(close_frame(CloseCode::Invalid, "text frame is not valid UTF-8")),
                Some(Err(_)) | None => break None,
            },
            // Catch-up and live events take turns, so neither starves the other.
            _ = std::future::ready(()), if catch_up_first && conn.feeds.catching_up().is_some() => {
                if let Err(close) = conn.catch_up_step(&mut out).await {
                    break Some(close);
                }
            }
            Some((feed, event)) = conn.feeds.next(), if !conn.feeds.is_empty() => {
                conn.on_room_event(feed, event, &mut out);
                // Take whatever else is ready now, to write it in one flush.
                while !out.is_full() {
                    let Some(Some((feed, event))) = conn.feeds.next().now_or_never() else { break };
                    conn.on_room_event(feed, event, &mut out);
                }
            }
            _ = std::future::ready(()), if conn.feeds.catching_up().is_some() => {
                if let Err(close) = conn.catch_up_step(&mut out).await {
                    break Some(close);
                }
            }
            // A catch-up waiting to try its read again: the next turn runs it.
            _ = retry_timer(retry_at), if retry_at.is_some() => {}
        }
        catch_up_first = !catch_up_first;
        if out.is_empty() {
            continue;
        }
        out.count_relayed();
        let mut write = std::pin::pin!(write_all(&mut socket, out.frames));
        // Most writes finish on the first try: only one that waits for the
        // client needs a deadline, and the watch on shutdown and session end.
        if let Poll::Ready(written) = futures::poll!(write.as_mut()) {
            match written {
                Ok(()) => continue,
                Err(_) => break None,
            }
        }
        tokio::select! {
            biased;
            stopped = &mut stop => break Some(stopped.close_frame()),
            written = tokio::time::timeout(ctx.write_timeout, write) => match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break None,
                Err(_) => {
                    tracing::info!(user = %conn.user, timeout = ?ctx.write_timeout, "dropping a socket whose writes made no progress");
                    break None;
                }
            },
        }
    };
    conn.leave_all();
    // The socket may be the one that is stuck: give the goodbye a moment only.
    if let Some(frame) = close {
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(frame)).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.close()).await;
}

/// What ends a connection from outside.
enum Stop {
    Shutdown,
    SessionEnded(Option<EndReason>),
}

impl Stop {
    fn close_frame(self) -> WsMessage {
        let why = match self {
            Stop::Shutdown => return close_frame(CloseCode::Away, "server shutting down"),
            Stop::SessionEnded(Some(EndReason::LoggedOut)) => "logged out",
            Stop::SessionEnded(Some(EndReason::Replaced)) => "logged in again",
            Stop::SessionEnded(_) => "session expired",
        };
        close_frame(CloseCode::from(CLOSE_SESSION_ENDED), why)
    }
}

/// What the rarely busy branches of the loop have.
enum Quiet {
    PingDue,
    UserNews(Result<Arc<UserEvent>, BroadcastStreamRecvError>),
}

/// The next ping time or user event, through `gate`: the timer and the
/// user's channel are polled only when one of them woke the task.
fn quiet_event<'a>(
    gate: &'a WakeGate,
    pings: &'a mut Keepalive,
    user_events: &'a mut BroadcastStream<Arc<UserEvent>>,
    mut name_events: Option<&'a mut BroadcastStream<Arc<UserEvent>>>,
) -> impl Future<Output = Quiet> + 'a {
    futures::future::poll_fn(move |cx| {
        gate.poll(cx, |cx| {
            if pings.poll_tick(cx).is_ready() {
                return Poll::Ready(Quiet::PingDue);
            }
            if let Some(names) = name_events.as_deref_mut()
                && let Poll::Ready(Some(news)) = names.poll_next_unpin(cx)
            {
                return Poll::Ready(Quiet::UserNews(news));
            }
            match user_events.poll_next_unpin(cx) {
                Poll::Ready(Some(news)) => Poll::Ready(Quiet::UserNews(news)),
                // The channel closed: nothing more will come from it.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
    })
}

/// A future behind a [`WakeGate`].
struct Gated<F> {
    inner: F,
    gate: WakeGate,
}

impl<F> Gated<F> {
    fn new(inner: F) -> Self {
        Self { inner, gate: WakeGate::default() }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.gate.poll(cx, |cx| Pin::new(&mut this.inner).poll(cx))
    }
}

/// Frames to write after one turn of the loop, and their size.
#[derive(Default)]
struct Outbox {
    frames: Vec<WsMessage>,
    bytes: usize,
    /// Frames relayed from the rooms' live fan-out, and when the oldest
    /// of them was published (unix ms): counted once per write.
    relayed: u64,
    oldest_published_ms: u64,
}

impl Outbox {
    fn push(&mut self, frame: WsMessage) {
        self.bytes += frame.len();
        self.frames.push(frame);
    }

    /// A live room event's frame.
    fn push_relayed(&mut self, frame: WsMessage, published_at_ms: u64) {
        self.oldest_published_ms = if self.relayed == 0 { published_at_ms } else { self.oldest_published_ms.min(published_at_ms) };
        self.relayed += 1;
        self.push(frame);
    }

    /// Counts the relayed frames (one clock read and one lag sample for
    /// all of them, not one each).
    fn count_relayed(&self) {
        if self.relayed > 0 {
            telemetry::room_events_delivered(self.relayed, self.oldest_published_ms);
        }
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Enough gathered: write before taking more.
    fn is_full(&self) -> bool {
        self.frames.len() >= MAX_FRAMES_PER_FLUSH || self.bytes >= MAX_QUEUED_BYTES
    }
}

/// WebSocket keepalive: a ping every interval; a client that sent nothing
/// (no frame, no pong) since the previous ping is given up on.
struct Keepalive {
    interval: Option<tokio::time::Interval>,
    heard_since_ping: bool,
}

impl Keepalive {
    fn new(every: Option<Duration>) -> Self {
        let interval = every.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Self { interval, heard_since_ping: true }
    }

    /// Ready at the next ping time (never, without pings).
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.interval {
            Some(interval) => interval.poll_tick(cx).map(|_| ()),
            None => Poll::Pending,
        }
    }

    /// The ping to send, or `None` if the client stayed silent since the last.
    fn on_tick(&mut self) -> Option<WsMessage> {
        if !std::mem::replace(&mut self.heard_since_ping, false) {
            return None;
        }
        Some(WsMessage::Ping(Default::default()))
    }

    fn heard(&mut self) {
        self.heard_since_ping = true;
    }
}

async fn write_all<K>(sink: &mut K, frames: Vec<WsMessage>) -> Result<(), WsError>
where
    K: Sink<WsMessage, Error = WsError> + Unpin,
{
    for frame in frames {
        sink.feed(frame).await?;
    }
    sink.flush().await
}

/// Ready at `at` (never without one).
async fn retry_timer(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// A client's `client_id` to echo in an error, unless it is too long to be
/// one (then the error says so instead).
fn echoable(client_id: &str) -> Option<&str> {
    (client_id.len() <= MAX_CLIENT_ID).then_some(client_id)
}

fn event_frame(event: &ServerEvent) -> WsMessage {
    WsMessage::Text(event.to_json().into())
}

struct Connection {
    chat: Chat,
    actor: Actor,
    user: crate::model::Username,
    user_key: String,
    feeds: Feeds,
    frames: Option<RateLimiter>,
    last_flood_warning: Option<Instant>,
    last_typing: HashMap<RoomName, Instant>,
}

impl Connection {
    fn new(ctx: &ConnectionContext) -> Self {
        Self {
            chat: ctx.chat.clone(),
            actor: Actor {
                session: ctx.session.clone(),
                pace: ctx.chat.connection_pace(),
                connection: Some(NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            },
            user: ctx.session.user.clone(),
            user_key: ctx.session.user.key(),
            feeds: Feeds::default(),
            frames: ctx.frame_rate.map(RateLimiter::new),
            last_flood_warning: None,
            last_typing: HashMap::new(),
        }
    }

    /// Handles one frame from the client; a `send` becomes a pending store.
    async fn on_frame(&mut self, frame: WsMessage, out: &mut Outbox) -> Option<PendingSend> {
        // Text and binary frames count against the frame rate alike.
        let parsed = match frame {
            WsMessage::Text(text) => Some(ClientEvent::decode(text.as_str())),
            WsMessage::Binary(_) => None,
            _ => return None, // ping/pong/close are handled by tungstenite
        };
        if self.frames.as_mut().is_some_and(|limit| !limit.allow()) {
            self.refuse_flood(parsed.and_then(Result::ok), out);
            return None;
        }
        let Some(parsed) = parsed else {
            let err = ChatError::BadRequest("binary frames are not supported; send JSON text frames".into());
            out.push(event_frame(&ServerEvent::error(&err)));
            return None;
        };
        let event = match parsed {
            Ok(event) => event,
            Err(err) => {
                out.push(event_frame(&ServerEvent::error(&err)));
                return None;
            }
        };
        match event {
            ClientEvent::Join { room, after } => {
                self.join(&room, after, out).await;
                None
            }
            ClientEvent::Leave { room } => {
                self.leave(&room, out);
                None
            }
            ClientEvent::Send { room, text, client_id, thread } => self.send(room, text, client_id, thread, out),
            ClientEvent::Edit { room, id, text } => self.change(room, Change::Edit(id, text), out),
            ClientEvent::Delete { room, id } => self.change(room, Change::Delete(id), out),
            ClientEvent::React { room, id, emoji } => self.change(room, Change::React(id, emoji), out),
            ClientEvent::Read { room, id } => {
                if let Err(err) = self.chat.mark_read(&self.actor, &room, id).await {
                    out.push(event_frame(&ServerEvent::error_for(&err, Some(&room), None)));
                }
                None
            }
            ClientEvent::Typing { room } => {
                self.typing(&room, out).await;
                None
            }
        }
    }

    /// A frame over the frame rate is dropped. A dropped `send` is always
    /// answered (with its `client_id`, so the client knows to retry); other
    /// frames get at most one warning a second.
    fn refuse_flood(&mut self, dropped: Option<ClientEvent>, out: &mut Outbox) {
        if let Some(ClientEvent::Send { room, client_id, .. }) = dropped {
            telemetry::send_rejected(ChatError::RateLimited.code());
            out.push(event_frame(&ServerEvent::error_for(&ChatError::RateLimited, Some(&room), echoable(&client_id))));
            return;
        }
        let quiet = self.last_flood_warning.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if !quiet {
            self.last_flood_warning = Some(Instant::now());
            out.push(event_frame(&ServerEvent::error(&ChatError::RateLimited)));
        }
    }

    async fn join(&mut self, raw_room: &str, after: Option<u64>, out: &mut Outbox) {
        match self.try_join(raw_room, after).await {
            Ok(joined) => out.push(event_frame(&joined)),
            Err(err) => out.push(event_frame(&ServerEvent::error_for(&err, Some(raw_room), None))),
        }
    }

    async fn try_join(&mut self, raw_room: &str, after: Option<u64>) -> Result<ServerEvent, ChatError> {
        let room = RoomName::parse(raw_room)?;
        if self.feeds.len() >= MAX_JOINED_ROOMS && !self.feeds.contains(&room) {
            return Err(ChatError::TooManyRooms(MAX_JOINED_ROOMS));
        }
        let opened = self.chat.open_room(&self.actor, room.as_str(), after).await?;
        // With `has_more` the client pages the rest over HTTP (`after=`);
        // live events already flow, and it drops seqs it has by then.
        let rejoin = self.feeds.insert(room.clone(), BroadcastStream::new(opened.live), opened.seq, !opened.has_more);
        if !rejoin {
            self.chat.enter(&self.actor, &room).await?;
        }
        Ok(ServerEvent::Joined {
            online: self.chat.online(&room).await,
            room: room.to_string(),
            history: opened.history.into_iter().map(HistoryItem::from_stored).collect(),
            has_more: opened.has_more,
            seq: opened.seq,
            read: self.chat.read_marker(&self.actor, &room).await?,
        })
    }

    fn leave(&mut self, raw_room: &str, out: &mut Outbox) {
        let Ok(room) = RoomName::parse(raw_room) else {
            let err = ChatError::NotJoined(raw_room.chars().take(80).collect());
            out.push(event_frame(&ServerEvent::error(&err)));
            return;
        };
        if self.feeds.remove(&room) {
            self.chat.exit(&self.actor, &room);
        }
        out.push(event_frame(&ServerEvent::Left { room: room.to_string() }));
    }

    fn leave_all(&mut self) {
        for room in self.feeds.rooms() {
            self.chat.exit(&self.actor, room);
        }
        self.feeds.clear();
    }

    /// A `send` in a joined room becomes a pending store (the chat layer
    /// checks the text, `client_id` and send rate).
    fn send(&mut self, raw_room: String, text: String, client_id: String, thread: Option<u64>, out: &mut Outbox) -> Option<PendingSend> {
        if let Err(err) = self.joined_room(&raw_room) {
            telemetry::send_rejected(err.code());
            out.push(event_frame(&ServerEvent::error_for(&err, Some(&raw_room), echoable(&client_id))));
            return None;
        }
        let (chat, actor) = (self.chat.clone(), self.actor.clone());
        Some(
            async move {
                let result = chat.send(&actor, &raw_room, &text, &client_id, thread).await;
                (raw_room, Some(client_id), result)
            }
            .boxed(),
        )
    }

    /// An edit or delete of one's own message, or a reaction, in a joined room.
    fn change(&mut self, raw_room: String, change: Change, out: &mut Outbox) -> Option<PendingSend> {
        if let Err(err) = self.joined_room(&raw_room) {
            out.push(event_frame(&ServerEvent::error_for(&err, Some(&raw_room), None)));
            return None;
        }
        let (chat, actor) = (self.chat.clone(), self.actor.clone());
        Some(
            async move {
                let stored = match change {
                    Change::Edit(id, text) => chat.edit(&actor, &raw_room, id, &text).await,
                    Change::Delete(id) => chat.delete(&actor, &raw_room, id).await,
                    Change::React(id, emoji) => chat.react(&actor, &raw_room, id, &emoji).await,
                };
                (raw_room, None, stored.map(Appended::New))
            }
            .boxed(),
        )
    }

    /// A room this socket has joined.
    fn joined_room(&self, raw_room: &str) -> Result<RoomName, ChatError> {
        let room = RoomName::parse(raw_room)?;
        if !self.feeds.contains(&room) {
            return Err(ChatError::NotJoined(room.to_string()));
        }
        Ok(room)
    }

    /// A store finished: errors and repeated sends are answered directly;
    /// new events reach the sender through the room like everyone else.
    fn on_send_done(&mut self, (room, client_id, result): SendDone, out: &mut Outbox) {
        match result {
            Ok(Appended::New(_)) => {}
            Ok(Appended::Duplicate(message)) => out.push(event_frame(&ServerEvent::Message(message))),
            Err(err) => {
                if matches!(err, ChatError::Internal(_) | ChatError::Storage(_)) {
                    tracing::error!(room = %room, error = %err, "a send failed");
                }
                out.push(event_frame(&ServerEvent::error_for(&err, Some(room.as_str()), client_id.as_deref().and_then(echoable))));
            }
        }
    }

    async fn typing(&mut self, raw_room: &str, out: &mut Outbox) {
        let room = match self.joined_room(raw_room) {
            Ok(room) => room,
            Err(err) => return out.push(event_frame(&ServerEvent::error(&err))),
        };
        let recent = self.last_typing.get(&room).is_some_and(|t| t.elapsed() < TYPING_PERIOD);
        if !recent {
            self.last_typing.insert(room.clone(), Instant::now());
            let _ = self.chat.typing(&self.actor, &room).await;
        }
    }

    /// Relays one event of a joined room (`feed` is its place in `feeds`),
    /// skipping what the client has. A lag, a gap in seqs or a resync
    /// marker starts a catch-up from the store; while a room catches up, its
    /// live messages are left to the catch-up (they are stored before they
    /// are published, so it reads them).
    fn on_room_event(&mut self, feed: usize, event: Result<Arc<RoomEvent>, BroadcastStreamRecvError>, out: &mut Outbox) {
        let event = match event {
            Ok(event) => event,
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                let feed = self.feeds.get_mut(feed);
                if !feed.catching_up {
                    tracing::warn!(room = %feed.room, user = %self.user, missed, "slow client: re-reading missed messages");
                    feed.catching_up = true;
                }
                return;
            }
        };
        if event.resync {
            self.feeds.get_mut(feed).start_catch_up();
            return;
        }
        if event.skip_user.as_deref() == Some(self.user_key.as_str()) {
            return;
        }
        if let Some(seq) = event.seq
            && self.feeds.get_mut(feed).admit(seq) != Admit::Deliver
        {
            return;
        }
        out.push_relayed(WsMessage::Text(event.frame.clone()), event.published_at_ms);
        if removes(&event.frame, &self.user_key) {
            self.removed_from(feed, out);
        }
    }

    /// This user was removed from the room of `feed`: its events stop here
    /// (the `member` frame was the last), as if the client had left.
    fn removed_from(&mut self, feed: usize, out: &mut Outbox) {
        let room = self.feeds.get(feed).room.clone();
        tracing::info!(room = %room, user = %self.user, "removed from a private room: leaving it");
        self.leave(room.as_str(), out);
    }

    /// One step of a catch-up: the next page of events the store holds
    /// after the last seq the client saw, up to [`MAX_QUEUED_BYTES`]. A
    /// short page ends the catch-up. A failed read is tried again later
    /// ([`CATCH_UP_RETRIES`]); `Err` with the close frame once the tries
    /// are used up.
    async fn catch_up_step(&mut self, out: &mut Outbox) -> Result<(), WsMessage> {
        let Some(feed) = self.feeds.catching_up() else { return Ok(()) };
        let (room, after) = {
            let f = self.feeds.get(feed);
            (f.room.clone(), f.last_seq)
        };
        let missed = match self.chat.events(&self.actor, room.as_str(), after, CATCH_UP_PAGE).await {
            Ok(page) => page,
            Err(err) => return self.catch_up_failed(feed, &err),
        };
        self.feeds.get_mut(feed).read_succeeded();
        let more = missed.has_more;
        let mut all_sent = true;
        for event in missed.events {
            if out.is_full() {
                all_sent = false;
                break;
            }
            self.feeds.get_mut(feed).last_seq = event.seq;
            let removed = matches!(&event.kind, EventKind::Member { user, added: false, .. } if user.to_lowercase() == self.user_key);
            out.push(event_frame(&ServerEvent::from_stored(event)));
            if removed {
                self.removed_from(feed, out);
                return Ok(());
            }
        }
        if all_sent && !more {
            self.feeds.get_mut(feed).catching_up = false;
        }
        Ok(())
    }

    /// A catch-up read failed: try again after the next wait, or give up
    /// and close the socket (the client resumes with `after`).
    fn catch_up_failed(&mut self, feed: usize, err: &ChatError) -> Result<(), WsMessage> {
        let feed = self.feeds.get_mut(feed);
        match feed.read_failed() {
            Some(wait) => {
                tracing::warn!(room = %feed.room, user = %self.user, error = %err, ?wait, "could not re-read missed events; trying again");
                Ok(())
            }
            None => {
                tracing::error!(room = %feed.room, user = %self.user, error = %err, "could not re-read missed events; closing the socket for the client to resume");
                Err(close_frame(CloseCode::from(CLOSE_TRY_AGAIN), "missed events could not be read; rejoin with after"))
            }
        }
    }
}

/// The rooms a connection has joined: each room's events and the highest
/// message id delivered from it. A connection joins a few rooms, so this is
/// a vector searched by name on join and leave, and events come with their
/// place in it: nothing is hashed or cloned per event relayed.
#[derive(Default)]
struct Feeds {
    feeds: Vec<Feed>,
    /// Where the next poll starts, so one busy room cannot starve the others.
    start: usize,
}

struct Feed {
    room: RoomName,
    events: BroadcastStream<Arc<RoomEvent>>,
    /// Highest seq delivered from this room.
    last_seq: u64,
    /// The client fell behind the room's channel (or the fan-out may have
    /// lost events): messages come from the store, a page per turn, until
    /// it is level again.
    catching_up: bool,
    /// Catch-up reads that failed in a row.
    failed_reads: usize,
    /// When the catch-up may read again after a failure.
    retry_at: Option<tokio::time::Instant>,
    /// Seqs arrive one after another: a gap means events were lost on the
    /// way. Off after a join that left the client paging the rest
    /// (`has_more`), until the first live event sets the pace.
    contiguous: bool,
}

/// What to do with a room's stored event.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Deliver,
    /// Already delivered, or left to the catch-up under way.
    Skip,
    /// A gap before it: the catch-up (from the store) delivers it.
    CatchUp,
}

impl Feed {
    /// Decides about the event with `seq`, and notes what it delivers.
    fn admit(&mut self, seq: u64) -> Admit {
        if self.catching_up || seq <= self.last_seq {
            return Admit::Skip;
        }
        if self.contiguous && seq > self.last_seq + 1 {
            // The commit of seq n+1 follows seq n's: the store has the gap.
            self.catching_up = true;
            return Admit::CatchUp;
        }
        self.last_seq = seq;
        self.contiguous = true;
        Admit::Deliver
    }

    /// Re-read the store after the last seq delivered.
    fn start_catch_up(&mut self) {
        self.catching_up = true;
    }

    /// Whether the catch-up may read now (`now` is asked only while a
    /// retry waits).
    fn may_read(&self, now: &mut impl FnMut() -> tokio::time::Instant) -> bool {
        self.catching_up && self.retry_at.is_none_or(|at| at <= now())
    }

    /// A catch-up read failed: how long to wait before the next try, or
    /// `None` once the tries are used up.
    fn read_failed(&mut self) -> Option<Duration> {
        let wait = CATCH_UP_RETRIES.get(self.failed_reads).copied();
        self.failed_reads += 1;
        self.retry_at = wait.map(|wait| tokio::time::Instant::now() + wait);
        wait
    }

    fn read_succeeded(&mut self) {
        self.failed_reads = 0;
        self.retry_at = None;
    }
}

type FeedItem = (usize, Result<Arc<RoomEvent>, BroadcastStreamRecvError>);

impl Feeds {
    fn position(&self, room: &RoomName) -> Option<usize> {
        self.feeds.iter().position(|f| f.room == *room)
    }

    fn contains(&self, room: &RoomName) -> bool {
        self.position(room).is_some()
    }

    fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// A room that is catching up from the store and may read now, if any.
    fn catching_up(&self) -> Option<usize> {
        let mut now = None;
        let mut now = || *now.get_or_insert_with(tokio::time::Instant::now);
        self.feeds.iter().position(|f| f.may_read(&mut now))
    }

    /// The earliest time a catch-up waits for to read again, if any.
    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.feeds.iter().filter(|f| f.catching_up).filter_map(|f| f.retry_at).min()
    }

    fn len(&self) -> usize {
        self.feeds.len()
    }

    fn get(&self, feed: usize) -> &Feed {
        &self.feeds[feed]
    }

    fn get_mut(&mut self, feed: usize) -> &mut Feed {
        &mut self.feeds[feed]
    }

    /// Starts (or restarts) a room's feed at `last_seq`; `contiguous`
    /// unless the client still pages events before the live ones. `true`
    /// if it was already there.
    fn insert(&mut self, room: RoomName, events: BroadcastStream<Arc<RoomEvent>>, last_seq: u64, contiguous: bool) -> bool {
        let feed = Feed { room, events, last_seq, catching_up: false, failed_reads: 0, retry_at: None, contiguous };
        match self.position(&feed.room) {
            Some(i) => {
                self.feeds[i] = feed;
                true
            }
            None => {
                self.feeds.push(feed);
                false
            }
        }
    }

    /// Stops a room's feed; `true` if it was there.
    fn remove(&mut self, room: &RoomName) -> bool {
        let Some(i) = self.position(room) else { return false };
        self.feeds.swap_remove(i);
        true
    }

    fn rooms(&self) -> impl Iterator<Item = &RoomName> {
        self.feeds.iter().map(|f| &f.room)
    }

    fn clear(&mut self) {
        self.feeds.clear();
    }

    /// The next event of any room, with the room's place in `feeds`.
    fn next(&mut self) -> impl Future<Output = Option<FeedItem>> + '_ {
        futures::future::poll_fn(move |cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<FeedItem>> {
        let mut polled = 0;
        while polled < self.feeds.len() {
            let i = (self.start + polled) % self.feeds.len();
            match Pin::new(&mut self.feeds[i].events).poll_next(cx) {
                Poll::Ready(Some(event)) => {
                    self.start = i + 1;
                    return Poll::Ready(Some((i, event)));
                }
                // The room's channel closed: forget the room, look again.
                Poll::Ready(None) => {
                    self.feeds.swap_remove(i);
                    polled = 0;
                }
                Poll::Pending => polled += 1,
            }
        }
        if self.feeds.is_empty() { Poll::Ready(None) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_at(last_seq: u64, contiguous: bool) -> Feed {
        let (_, receiver) = tokio::sync::broadcast::channel(1);
        Feed {
            room: RoomName::parse("general").unwrap(),
            events: BroadcastStream::new(receiver),
            last_seq,
            catching_up: false,
            failed_reads: 0,
            retry_at: None,
            contiguous,
        }
    }

    #[tokio::test]
    async fn the_next_seq_is_delivered_and_repeats_are_skipped() {
        let mut feed = feed_at(4, true);
        assert_eq!(feed.admit(5), Admit::Deliver);
        assert_eq!(feed.last_seq, 5);
        assert_eq!(feed.admit(5), Admit::Skip);
        assert_eq!(feed.admit(3), Admit::Skip);
        assert!(!feed.catching_up);
    }

    #[tokio::test]
    async fn a_gap_in_seqs_starts_a_catch_up_instead_of_delivering() {
        // Seq 7 from this node overtook seq 6 from another.
        let mut feed = feed_at(5, true);
        assert_eq!(feed.admit(7), Admit::CatchUp);
        assert!(feed.catching_up);
        assert_eq!(feed.last_seq, 5, "the catch-up reads from 5, so 6 and 7 come from the store");
        assert_eq!(feed.admit(6), Admit::Skip, "live events wait for the catch-up");
    }

    #[tokio::test]
    async fn after_a_join_that_left_the_client_paging_the_first_live_seq_sets_the_pace() {
        let mut feed = feed_at(500, false);
        assert_eq!(feed.admit(900), Admit::Deliver);
        assert_eq!(feed.admit(902), Admit::CatchUp);
    }

    #[tokio::test]
    async fn a_failed_catch_up_read_waits_longer_each_time_then_gives_up() {
        let mut feeds = Feeds::default();
        feeds.feeds.push(feed_at(3, true));
        feeds.get_mut(0).start_catch_up();
        for wait in CATCH_UP_RETRIES {
            assert_eq!(feeds.catching_up(), Some(0));
            let before = tokio::time::Instant::now();
            assert_eq!(feeds.get_mut(0).read_failed(), Some(wait));
            assert_eq!(feeds.catching_up(), None, "no read before the wait is over");
            let retry = feeds.next_retry().expect("a retry time");
            assert!(retry >= before + wait && retry <= tokio::time::Instant::now() + wait);
            feeds.get_mut(0).retry_at = Some(tokio::time::Instant::now()); // the wait is over
        }
        assert_eq!(feeds.get_mut(0).read_failed(), None, "the tries are used up");
    }

    #[tokio::test]
    async fn a_successful_read_starts_the_tries_afresh() {
        let mut feed = feed_at(3, true);
        feed.start_catch_up();
        assert_eq!(feed.read_failed(), Some(CATCH_UP_RETRIES[0]));
        assert_eq!(feed.read_failed(), Some(CATCH_UP_RETRIES[1]));
        feed.read_succeeded();
        assert_eq!(feed.read_failed(), Some(CATCH_UP_RETRIES[0]));
    }

    #[tokio::test]
    async fn a_resync_marker_starts_a_catch_up_from_the_last_seq() {
        let mut feed = feed_at(9, true);
        feed.start_catch_up();
        assert!(feed.catching_up);
        assert_eq!(feed.admit(10), Admit::Skip);
        assert_eq!(feed.last_seq, 9);
    }
}
