//! The accept loop: every TCP connection the server takes, and the limits
//! that stop one client from pinning its resources.
//!
//! - `TCP_NODELAY` on every accepted socket (HTTP and WebSocket alike): a
//!   chat's small frames must not wait for Nagle's algorithm.
//! - At most `--max-connections` open at once, and optionally
//!   `--max-connections-per-ip` from one address. A connection over either
//!   gets one JSON `503 server_full` / `429 too_many_connections` answer and
//!   is closed. The count covers upgraded WebSockets too: the [`Ticket`]
//!   lives inside the socket's I/O object, which the upgrade hands on.
//! - Deadlines on the request head: the whole head must arrive within
//!   `--header-timeout-secs` of its first byte (of accept, on a new
//!   connection), and an idle keep-alive connection closes after
//!   `--keepalive-secs`. hyper has one timer for both ("waiting for a
//!   head"); [`HeadTimer`] decides which deadline applies from what
//!   [`TimedIo`] saw on the socket.
//! - Accept errors (`EMFILE` when out of file descriptors, …) are logged
//!   and waited out, never spun on and never fatal.
//! - Shutdown stops accepting, lets requests in flight finish and closes
//!   idle keep-alive connections.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::reply::{self, HttpResponse};
use crate::config::ConnectionLimits;
use crate::error::ChatError;

/// Refusals being answered at once; connections beyond are just closed.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to send its request head.
const REFUSAL_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after an accept error that a retry cannot fix at once (no file
/// descriptors or memory left): the backlog keeps the waiting clients.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about accept errors per this period.
const ACCEPT_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// The TCP peer of a request, put in its extensions for
/// `guard::client_ip`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Accepts and serves connections on `listener` until `shutdown` resolves.
pub async fn serve(
    routes: BoxedFilter<(HttpResponse,)>,
    limits: ConnectionLimits,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let admission = Admission::new(&limits);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let connections = TaskTracker::new();
    let (stop, stopping) = watch::channel(false);
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_errors.wait_out(e).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match admission.admit(peer.ip()) {
            Ok(ticket) => {
                let timer = HeadTimer::new(limits.header_timeout, limits.keepalive_idle);
                let io = TimedIo::new(stream, Some(ticket), timer.activity.clone());
                connections.spawn(serve_connection(io, peer, routes.clone(), timer, stopping.clone()));
            }
            Err(refusal) => {
                let Ok(permit) = refusing.clone().try_acquire_owned() else { continue };
                let timer = HeadTimer::new(REFUSAL_HEAD_TIMEOUT, REFUSAL_HEAD_TIMEOUT);
                let io = TimedIo::new(stream, None, timer.activity.clone());
                connections.spawn(async move {
                    serve_connection(io, peer, refusal_route(refusal), timer, watch::channel(false).1).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    connections.wait().await;
}

/// Serves one connection's HTTP requests (and hands on an upgrade) until it
/// closes, or finishes gracefully once `stopping` turns true.
async fn serve_connection(
    io: TimedIo,
    peer: SocketAddr,
    routes: BoxedFilter<(HttpResponse,)>,
    timer: HeadTimer,
    mut stopping: watch::Receiver<bool>,
) {
    let header_timeout = timer.header_timeout;
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(header_timeout).keep_alive(true);
    let service = WithPeer { routes: warp::service(routes), peer };
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// Every request of a refused connection gets `refusal`, then it closes.
fn refusal_route(refusal: ChatError) -> BoxedFilter<(HttpResponse,)> {
    let refusal = Arc::new(refusal);
    warp::any()
        .map(move || {
            let mut response = reply::error(&refusal);
            response.headers_mut().insert("connection", warp::http::HeaderValue::from_static("close"));
            response.headers_mut().insert("retry-after", warp::http::HeaderValue::from_static("5"));
            response
        })
        .boxed()
}

/// warp's service, with the TCP peer put in each request's extensions.
#[derive(Clone)]
struct WithPeer<S> {
    routes: S,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for WithPeer<S>
where
    S: tower_service::Service<hyper::Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.routes.clone().call(request)
    }
}

/// Logs accept errors (at most once per [`ACCEPT_WARNING_PERIOD`]) and
/// pauses after those that a retry cannot fix at once.
#[derive(Default)]
struct AcceptErrors {
    last_warning: Option<Instant>,
    since_warning: u64,
}

impl AcceptErrors {
    async fn wait_out(&mut self, error: io::Error) {
        self.since_warning += 1;
        if self.last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_PERIOD) {
            tracing::warn!(error = %error, errors = self.since_warning, "cannot accept connections (waiting it out)");
            self.last_warning = Some(Instant::now());
            self.since_warning = 0;
        }
        // A peer that gave up before we accepted it: nothing to wait for.
        let transient = matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
        );
        if !transient {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }
}

/// Open connections per address (only with `--max-connections-per-ip`).
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Who may open a connection now.
struct Admission {
    open: Arc<Semaphore>,
    per_ip: Option<(usize, PerAddress)>,
}

/// One admitted connection; dropping it frees its place.
pub struct Ticket {
    _open: OwnedSemaphorePermit,
    from: Option<(IpAddr, PerAddress)>,
}

impl Admission {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            open: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: limits.max_per_ip.map(|max| (max, Arc::default())),
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<Ticket, ChatError> {
        let open = self.open.clone().try_acquire_owned().map_err(|_| ChatError::ServerFull)?;
        let Some((max, counts)) = &self.per_ip else { return Ok(Ticket { _open: open, from: None }) };
        let mut by_ip = counts.lock().expect("per-address counts");
        let count = by_ip.entry(ip).or_insert(0);
        if *count >= *max {
            return Err(ChatError::TooManyConnections(*max));
        }
        *count += 1;
        Ok(Ticket { _open: open, from: Some((ip, counts.clone())) })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some((ip, counts)) = &self.from else { return };
        let mut by_ip = counts.lock().expect("per-address counts");
        if let Some(count) = by_ip.get_mut(ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(ip);
            }
        }
    }
}

/// The origin of the instants kept in atomics as nanoseconds.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `at` as nanoseconds since [`START`] (never 0, which means "none").
fn nanos_since_start(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*START).as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn instant_at(nanos: u64) -> Instant {
    *START + Duration::from_nanos(nanos)
}

/// What [`TimedIo`] saw on its socket, for [`HeadTimer`].
#[derive(Default)]
struct Activity {
    /// Whether anything was written yet (a response: the connection is
    /// past its first request).
    wrote: AtomicBool,
    /// When the first byte since the last write arrived (0: none yet) —
    /// the start of the request head being read.
    head_started: AtomicU64,
}

/// A TCP stream that notes its reads and writes in [`Activity`] and holds
/// its connection's [`Ticket`] for as long as it lives (through an upgrade).
pub struct TimedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    _ticket: Option<Ticket>,
}

impl TimedIo {
    fn new(stream: TcpStream, ticket: Option<Ticket>, activity: Arc<Activity>) -> Self {
        Self { stream, activity, _ticket: ticket }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = nanos_since_start(Instant::now());
            let _ = self.activity.head_started.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote.store(true, Ordering::Relaxed);
            self.activity.head_started.store(0, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote.store(true, Ordering::Relaxed);
            self.activity.head_started.store(0, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// hyper's timer for "waiting for a request head", with two deadlines: a
/// head must arrive whole within `header_timeout` of its first byte (of
/// accept, for a connection's first request), and a connection idle
/// between requests closes after `keepalive_idle`.
#[derive(Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    header_timeout: Duration,
    keepalive_idle: Duration,
}

impl HeadTimer {
    fn new(header_timeout: Duration, keepalive_idle: Duration) -> Self {
        Self { activity: Arc::default(), header_timeout, keepalive_idle }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    /// hyper asks for `now + header_timeout` when it starts waiting for a
    /// head; the wait started `header_timeout` before `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let waiting_since = deadline.checked_sub(self.header_timeout).unwrap_or(deadline);
        let sleep = HeadSleep {
            timer: self.clone(),
            waiting_since,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        };
        Box::pin(sleep)
    }
}

struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

/// Resolves when the head being waited for is late. hyper polls it each
/// time the socket wakes its task (bytes arrived), so the deadline is
/// worked out again from [`Activity`] on every poll.
struct HeadSleep {
    timer: HeadTimer,
    waiting_since: Instant,
    deadline: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl HeadSleep {
    fn current_deadline(&self) -> Instant {
        let activity = &self.timer.activity;
        if !activity.wrote.load(Ordering::Relaxed) {
            return self.waiting_since + self.timer.header_timeout;
        }
        match activity.head_started.load(Ordering::Relaxed) {
            0 => self.waiting_since + self.timer.keepalive_idle,
            started => instant_at(started).max(self.waiting_since) + self.timer.header_timeout,
        }
    }
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.current_deadline();
        if deadline != self.deadline {
            self.deadline = deadline;
            self.sleep.as_mut().reset(deadline.into());
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}
