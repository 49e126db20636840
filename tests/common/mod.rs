//! The integration-test harness: a real server on `127.0.0.1:0` with a
//! temporary data directory, real HTTP clients (one cookie jar per user) and
//! real WebSocket clients.
//!
//! Rules the helpers follow (and tests should too):
//! - nothing waits with a sleep: every wait is for an event, with a timeout
//!   that fails the test ([`TIMEOUT`]);
//! - only [`WsClient::expect_silence`] waits a fixed time, to show that
//!   something does *not* arrive.

#![allow(dead_code)]

pub mod backends;
pub mod disk;
pub mod faulty_store;
pub mod outbox;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod redis;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chatroom::{Config, RunningServer};
use futures::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long any single expected event may take. Exceeding it is a failure.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`WsClient::expect_silence`] listens.
pub const QUIET: Duration = Duration::from_millis(300);
/// The session cookie's name.
pub const COOKIE: &str = "chatroom_session";

type Configure = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// A test that cannot run here (`why`: a server or a program it needs is
/// missing) says so loudly and returns; under `CI=true` it fails instead
/// (there, what it needs is mandatory). The notice goes straight to the
/// process's stderr: libtest would swallow an `eprintln!` of a passing
/// test.
pub fn skip_or_fail(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} must run under CI=true, but {why}");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
}

/// One scrape of `/metrics` (Prometheus text).
pub struct Scrape(pub String);

impl Scrape {
    /// The value of one series, named as rendered (`name` or
    /// `name{label="value"}`); 0 if it is not there yet.
    pub fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// GETs `url` (a `/metrics` address), which must answer 200.
pub async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    Scrape(response.text().await.expect("a body"))
}

/// Prints one measured figure of a suite where it is seen even when the
/// test passes (straight to the process's stderr: libtest swallows an
/// `eprintln!` of a passing test), marked so it can be grepped.
pub fn print_figure(text: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr(), "FIGURE {test}: {text}");
}

/// A loopback port that was free a moment ago (nothing listens on it now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A server with its own temporary data directory.
pub struct TestServer {
    dir: TempDir,
    server: Option<RunningServer>,
    addr: SocketAddr,
    configure: Configure,
}

impl TestServer {
    /// A server with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server without send pacing (for tests that post in bulk).
    pub async fn start_unthrottled() -> Self {
        Self::start_with(|config| config.send_rate = None).await
    }

    /// A server without send pacing on a PostgreSQL database of its own
    /// (keep the database alive as long as the server), or `None` where
    /// there is no PostgreSQL (said loudly; a failure under CI=true).
    pub async fn on_postgres() -> Option<(Self, pg::TestDatabase)> {
        let database = pg::TestDatabase::create().await?;
        let url = database.url().to_string();
        let server = Self::start_with(move |config| {
            config.database_url = Some(url.clone());
            config.send_rate = None;
        })
        .await;
        Some((server, database))
    }

    /// A server whose settings `configure` adjusts (also on restarts).
    pub async fn start_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let configure: Configure = Arc::new(configure);
        let server = launch(dir.path(), &configure).await;
        let addr = server.addr;
        Self { dir, server: Some(server), addr, configure }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<data>/rooms/<room>.jsonl`
    pub fn room_file(&self, room: &str) -> PathBuf {
        self.dir.path().join("rooms").join(format!("{room}.jsonl"))
    }

    /// Shuts the server down gracefully (sockets closed, files flushed).
    pub async fn stop(&mut self) {
        let server = self.server.take().expect("the server is running");
        tokio::time::timeout(Duration::from_secs(30), server.stop())
            .await
            .expect("the server stops within 30 s")
            .expect("the server stops cleanly");
    }

    /// Starts a stopped server again on the same data directory (new port).
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is still running");
        let server = launch(self.dir.path(), &self.configure).await;
        self.addr = server.addr;
        self.server = Some(server);
    }

    /// Stops, then starts again on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Hands the running server over (to stop it concurrently with a client).
    pub fn take_running(&mut self) -> RunningServer {
        self.server.take().expect("the server is running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served with `--metrics ADDR` (`None` otherwise).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(RunningServer::metrics_addr)
    }

    /// The server's own origin, e.g. `http://127.0.0.1:4321`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.addr }
    }

    /// A browser with a guest session named `name` (asserts it succeeds).
    pub async fn guest(&self, name: &str) -> User {
        self.endpoint().guest(name).await
    }

    /// A guest named `name` with a WebSocket already joined to `room`:
    /// `server.guest(name)`, then [`User::ws_in`].
    pub async fn guest_in(&self, name: &str, room: &str) -> (User, WsClient) {
        let user = self.guest(name).await;
        let socket = user.ws_in(room).await;
        (user, socket)
    }

    /// A browser without a session.
    pub fn anonymous(&self) -> User {
        self.endpoint().anonymous()
    }

    /// A browser without a session that does not follow redirects.
    pub fn anonymous_no_redirect(&self) -> User {
        self.endpoint().anonymous_no_redirect()
    }

    /// GET `path` from a client without a cookie jar, sending only
    /// `cookie` (e.g. a [`User::cookie`] kept from before a log-out).
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> (u16, Value) {
        self.endpoint().get_with_cookie(path, cookie).await
    }
}

async fn launch(dir: &Path, configure: &Configure) -> RunningServer {
    let mut config = Config::for_data_dir(dir);
    configure(&mut config);
    tokio::time::timeout(Duration::from_secs(30), RunningServer::start(config))
        .await
        .expect("the server starts within 30 s")
        .expect("the server starts")
}

/// Where a running server listens; cheap to clone into spawned tasks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
}

impl Endpoint {
    pub fn anonymous(&self) -> User {
        User { name: String::new(), http: http_client(), cookie: None, addr: self.addr }
    }

    /// A browser without a session whose cookie jar does not follow
    /// redirects (to see a page's own 302 and `location`).
    pub fn anonymous_no_redirect(&self) -> User {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .expect("an HTTP client");
        User { name: String::new(), http, cookie: None, addr: self.addr }
    }

    /// A browser with a guest session named `name` (asserts it succeeds).
    pub async fn guest(&self, name: &str) -> User {
        let mut user = self.anonymous();
        let (status, body) = user.login_guest(name).await;
        assert_eq!(status, 200, "POST /api/guest {name:?}: {body}");
        user.name = body["username"].as_str().expect("username in the reply").to_string();
        user
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path` from a client without a cookie jar, sending only
    /// `cookie` (e.g. a [`User::cookie`] kept from before a log-out, or
    /// issued by another node).
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> (u16, Value) {
        let response = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("an HTTP client")
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        read_reply(response).await
    }

    /// Polls `GET /healthz` (as a load balancer does) until it answers
    /// `status`, for at most `within`; the body it answered with.
    pub async fn wait_for_health(&self, status: u16, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let client = http_client();
        loop {
            let answer = match client.get(self.url("/healthz")).send().await {
                Ok(response) => Some(read_reply(response).await),
                Err(_) => None,
            };
            match answer {
                Some((now, body)) if now == status => return body,
                _ if tokio::time::Instant::now() >= deadline => {
                    panic!("/healthz did not answer {status} within {within:?}; last: {answer:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// An HTTP client that does not follow redirects.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// One browser: a cookie jar, and the session cookie to hand to WebSockets.
pub struct User {
    pub name: String,
    pub http: reqwest::Client,
    /// `chatroom_session=<id>` once logged in.
    pub cookie: Option<String>,
    addr: SocketAddr,
}

/// The body as JSON (`Value::String` of the text if it is not JSON).
pub async fn read_reply(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl User {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The same browser (cookie jar) talking to `server`, e.g. after a
    /// restart moved it to another port (cookies do not depend on ports).
    pub fn at(mut self, server: &TestServer) -> User {
        self.addr = server.addr();
        self
    }

    /// The same browser talking to another node (a load balancer sent it
    /// elsewhere, or a second tab): one cookie jar, shared.
    pub fn on(&self, endpoint: &Endpoint) -> User {
        User { name: self.name.clone(), http: self.http.clone(), cookie: self.cookie.clone(), addr: endpoint.addr }
    }

    /// The same browser after a restart: moved to the new port, and logged
    /// in as a guest again under `name` (whether or not its session lived).
    pub async fn back_at(self, server: &TestServer, name: &str) -> User {
        let mut user = self.at(server);
        let (status, body) = user.login_guest(name).await;
        assert_eq!(status, 200, "POST /api/guest {name:?} again: {body}");
        user.name = body["username"].as_str().expect("username").to_string();
        user
    }

    /// POST /api/guest with this browser's cookies; keeps the new cookie.
    pub async fn login_guest(&mut self, name: &str) -> (u16, Value) {
        let (status, body, _) = self.post_with_headers("/api/guest", json!({ "username": name })).await;
        (status, body)
    }

    /// POST a JSON body; keeps a new session cookie if one is set, and
    /// returns the response headers too.
    pub async fn post_with_headers(&mut self, path: &str, body: Value) -> (u16, Value, HeaderMap) {
        let response =
            self.http.post(self.url(path)).json(&body).send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie);
        }
        let headers = response.headers().clone();
        let (status, body) = read_reply(response).await;
        (status, body, headers)
    }

    /// POST /api/signup with this browser; keeps the new cookie.
    pub async fn try_sign_up(&mut self, name: &str, password: &str) -> (u16, Value) {
        let (status, body, _) =
            self.post_with_headers("/api/signup", json!({ "username": name, "password": password })).await;
        (status, body)
    }

    /// A fresh browser with a new account `name` (asserts 201).
    pub async fn sign_up(server: &TestServer, name: &str, password: &str) -> User {
        server.anonymous().signed_up(name, password).await
    }

    /// This browser after signing up as `name` (asserts 201).
    pub async fn signed_up(mut self, name: &str, password: &str) -> User {
        let (status, body) = self.try_sign_up(name, password).await;
        assert_eq!(status, 201, "POST /api/signup {name:?}: {body}");
        self.name = body["username"].as_str().unwrap_or(name).to_string();
        self
    }

    /// POST /api/login with this browser; keeps the new cookie.
    pub async fn log_in(&mut self, name: &str, password: &str) -> (u16, Value, HeaderMap) {
        self.post_with_headers("/api/login", json!({ "username": name, "password": password })).await
    }

    /// The raw session id (the cookie's value), once logged in.
    pub fn session_id(&self) -> Option<&str> {
        self.cookie.as_deref().and_then(|c| c.strip_prefix(&format!("{COOKIE}=")[..]))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        read_reply(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            self.http.post(self.url(path)).json(&body).send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read_reply(response).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            self.http.put(self.url(path)).json(&body).send().await.unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        read_reply(response).await
    }

    /// DELETE `path` (no body) → (status, body).
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.http.delete(self.url(path)).send().await.unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        read_reply(response).await
    }

    /// A request to `path` with this browser's cookies, to finish by hand
    /// (odd headers or bodies).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// POST /api/rooms/{room}/messages → (status, body).
    pub async fn post_message(&self, room: &str, text: &str, client_id: &str) -> (u16, Value) {
        self.post(&format!("/api/rooms/{room}/messages"), json!({ "text": text, "client_id": client_id })).await
    }

    /// POST a message and assert it was stored now (201); the stored message.
    pub async fn send_http(&self, room: &str, text: &str, client_id: &str) -> Value {
        let (status, body) = self.post_message(room, text, client_id).await;
        assert_eq!(status, 201, "POST message {client_id}: {body}");
        body
    }

    /// POST /api/rooms {"name"} and assert 201.
    pub async fn create_room(&self, name: &str) {
        let (status, body) = self.post("/api/rooms", json!({ "name": name })).await;
        assert_eq!(status, 201, "create room {name}: {body}");
        assert_eq!(body["name"], name);
    }

    /// GET /api/rooms/{room}/messages?{query}; asserts 200.
    pub async fn messages(&self, room: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            format!("/api/rooms/{room}/messages")
        } else {
            format!("/api/rooms/{room}/messages?{query}")
        };
        let (status, body) = self.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body["messages"].as_array().unwrap_or_else(|| panic!("GET {path}: no messages array: {body}")).clone()
    }

    /// Every message of a room, paging with `after`.
    pub async fn all_messages(&self, room: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, id);
            let page = self.messages(room, &format!("after={after}&limit=500")).await;
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// The room's whole event log (`GET …/events`, paged with `seq` until
    /// `has_more` is false); asserts each page answers 200.
    pub async fn all_events(&self, room: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/api/rooms/{room}/events?after={after}&limit=500");
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            all.extend(body["events"].as_array().unwrap_or_else(|| panic!("GET {path}: no events: {body}")).iter().cloned());
            after = body["seq"].as_u64().unwrap_or_else(|| panic!("GET {path}: no seq: {body}"));
            if body["has_more"] != true {
                return all;
            }
        }
    }

    /// A WebSocket with this browser's session cookie and no Origin.
    pub async fn ws(&self) -> WsClient {
        self.try_ws(None).await.unwrap_or_else(|e| panic!("WebSocket for {}: {}", self.name, describe_ws_error(&e)))
    }

    /// A WebSocket (as [`User::ws`]) that has joined `room` (as
    /// [`WsClient::join`], which checks the `joined` reply).
    pub async fn ws_in(&self, room: &str) -> WsClient {
        let mut socket = self.ws().await;
        socket.join(room).await;
        socket
    }

    /// A WebSocket attempt with this session cookie and an optional Origin.
    pub async fn try_ws(&self, origin: Option<&str>) -> Result<WsClient, WsError> {
        connect_ws(&self.ws_url(), self.cookie.as_deref(), origin).await
    }
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .find(|pair| pair.starts_with(&format!("{COOKIE}=")) && pair.len() > COOKIE.len() + 1)
        .map(str::to_string)
}

/// Opens a WebSocket with an optional `Cookie` and `Origin` header.
pub async fn connect_ws(url: &str, cookie: Option<&str>, origin: Option<&str>) -> Result<WsClient, WsError> {
    let mut request = url.into_client_request().expect("a WebSocket request");
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).expect("cookie header"));
    }
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("origin header"));
    }
    let (ws, _response) = tokio::time::timeout(TIMEOUT, connect_async(request)).await.expect("WebSocket connect timed out")?;
    Ok(WsClient { ws })
}

/// The HTTP status a refused WebSocket upgrade answered with.
pub fn refused_status(result: Result<WsClient, WsError>) -> u16 {
    match result {
        Ok(_) => panic!("the WebSocket upgrade was accepted"),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
    }
}

fn describe_ws_error(e: &WsError) -> String {
    match e {
        WsError::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            format!("HTTP {} {}", response.status(), body)
        }
        other => other.to_string(),
    }
}

/// A WebSocket client speaking the chat protocol.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_raw(&mut self, message: WsMessage) {
        tokio::time::timeout(TIMEOUT, self.ws.send(message))
            .await
            .expect("sending a frame timed out")
            .expect("sending a frame");
    }

    /// Sends a JSON frame; `false` if the socket has failed (its server
    /// died, say) instead of panicking.
    pub async fn try_send_json(&mut self, value: &Value) -> bool {
        matches!(tokio::time::timeout(TIMEOUT, self.ws.send(WsMessage::text(value.to_string()))).await, Ok(Ok(())))
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_raw(WsMessage::text(text.into())).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next frame as JSON; fails on timeout, close or a non-JSON frame.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {TIMEOUT:?}"));
            match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    return serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(frame))) => panic!("socket closed while waiting for an event: {frame:?}"),
                Some(Ok(other)) => panic!("unexpected frame: {other:?}"),
                Some(Err(e)) => panic!("socket error while waiting for an event: {e}"),
                None => panic!("socket ended while waiting for an event"),
            }
        }
    }

    /// The next event, or `None` once the socket has ended (a close frame,
    /// a reset or the end of the stream).
    pub async fn next_event_or_end(&mut self) -> Option<Value> {
        self.next_event_or_end_within(TIMEOUT).await.unwrap_or_else(|_| panic!("neither an event nor the end within {TIMEOUT:?}"))
    }

    /// [`next_event_or_end`](Self::next_event_or_end), or `Err` if neither
    /// came within `wait` (for the caller to say what it was waiting for).
    pub async fn next_event_or_end_within(&mut self, wait: Duration) -> Result<Option<Value>, tokio::time::error::Elapsed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await?;
            match frame {
                Some(Ok(WsMessage::Text(text))) => return Ok(Some(serde_json::from_str(text.as_str()).expect("a JSON event"))),
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The raw socket, for a test that must read and write at once
    /// (`StreamExt::split`).
    pub fn into_stream(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// This client's end of the TCP connection.
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(stream) => stream.local_addr().expect("a local address"),
            _ => panic!("tests use plain TCP"),
        }
    }

    /// The next event within `wait`, or `None` if none came (a closed or
    /// failed socket is still a failure).
    pub async fn try_next_event(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.next_event()).await.ok()
    }

    /// The next event of type `ty`, skipping presence and typing hints (any
    /// other event first is a failure).
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == ty {
                return event;
            }
            if event["type"] == "presence" || event["type"] == "typing" {
                continue;
            }
            panic!("expected a {ty:?} event, got {event}");
        }
    }

    /// The next `count` `message` frames, in arrival order (presence and
    /// typing hints skipped; anything else fails the test).
    pub async fn next_messages(&mut self, count: usize) -> Vec<Value> {
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            messages.push(self.next_of_type("message").await);
        }
        messages
    }

    /// The next event that is not a presence or typing hint.
    pub async fn next_significant(&mut self) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] != "presence" && event["type"] != "typing" {
                return event;
            }
        }
    }

    /// The next event matching `pred`, skipping any others.
    pub async fn next_matching(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
        loop {
            let event = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .unwrap_or_else(|_| panic!("no event matching {what}"));
            if pred(&event) {
                return event;
            }
        }
    }

    /// An error event; asserts its code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.next_of_type("error").await;
        assert_eq!(event["code"], code, "error event: {event}");
        assert!(event["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {event}");
        event
    }

    /// Joins a room and returns the `joined` reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send_json(json!({ "type": "join", "room": room })).await;
        let joined = self.next_of_type("joined").await;
        assert_eq!(joined["room"], room, "{joined}");
        joined
    }

    /// Joins a room resuming after message `after`; the `joined` reply.
    pub async fn join_after(&mut self, room: &str, after: u64) -> Value {
        self.send_json(json!({ "type": "join", "room": room, "after": after })).await;
        let joined = self.next_of_type("joined").await;
        assert_eq!(joined["room"], room, "{joined}");
        joined
    }

    pub async fn send_message(&mut self, room: &str, text: &str, client_id: &str) {
        self.send_json(json!({ "type": "send", "room": room, "text": text, "client_id": client_id })).await;
    }

    /// Sends a message and waits for its echo (the next message event must
    /// be it).
    pub async fn send_and_echo(&mut self, room: &str, text: &str, client_id: &str) -> Value {
        self.send_message(room, text, client_id).await;
        let echo = self.next_of_type("message").await;
        assert_eq!(echo["client_id"], client_id, "expected the echo of {client_id}: {echo}");
        assert_eq!(echo["room"], room, "{echo}");
        echo
    }

    /// Sends a message and waits for its echo, skipping other messages.
    pub async fn send_and_echo_skipping_others(&mut self, room: &str, text: &str, client_id: &str) -> Value {
        self.send_message(room, text, client_id).await;
        let echo = self
            .next_matching(client_id, |e| {
                e["client_id"] == client_id && (e["type"] == "message" || e["type"] == "error")
            })
            .await;
        assert_eq!(echo["type"], "message", "{echo}");
        echo
    }

    /// Reads until a close frame; its code (1005 for a close without one).
    /// Events before it are skipped. Fails on timeout or a connection that
    /// ends without a close frame.
    pub async fn expect_close_code(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close frame within {TIMEOUT:?}"));
            match frame {
                Some(Ok(WsMessage::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(WsMessage::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed without a close frame: {e}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Asserts that no event arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(frame) = tokio::time::timeout(QUIET, self.ws.next()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Closes the socket and waits until the server has answered.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}

/// A message's id.
pub fn id(message: &Value) -> u64 {
    message["id"].as_u64().unwrap_or_else(|| panic!("no id in {message}"))
}

pub fn ids(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(id).collect()
}

pub fn texts(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["text"].as_str().expect("text").to_string()).collect()
}

/// A `message` event without its `type`: the message as stored.
pub fn without_type(event: &Value) -> Value {
    let mut m = event.clone();
    m.as_object_mut().expect("an object").remove("type");
    m
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 - _ ~` (dots too, so no
/// segment becomes a dot segment).
pub fn encode_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every file under `dir`, relative to it, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                out.push(format!("{}/", path.strip_prefix(root).unwrap().display()));
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every line of a room file (the room's event log), parsed; asserts it is
/// whole lines of JSON with strictly increasing `seq` (a step-1 line's `id`).
pub fn read_room_events(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if bytes.is_empty() {
        return Vec::new();
    }
    assert_eq!(bytes.last(), Some(&b'\n'), "{} does not end with a newline", path.display());
    let text = String::from_utf8(bytes).expect("the room file is UTF-8");
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {} of {} is not JSON ({e}): {line}", n + 1, path.display()));
        events.push(event);
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.get("seq").or(e.get("id")).and_then(Value::as_u64).expect("a seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs in {} are not strictly increasing: {seqs:?}", path.display());
    events
}

/// The messages posted in a room file, as the API shows a message (the
/// post lines without their `seq` and `op`); asserts each is whole.
pub fn read_room_file(path: &Path) -> Vec<Value> {
    let mut messages = Vec::new();
    for mut event in read_room_events(path) {
        if event.get("op").is_some_and(|op| op != "post") {
            continue;
        }
        if let Some(object) = event.as_object_mut() {
            object.remove("seq");
            object.remove("op");
        }
        if event.get("deleted") != Some(&Value::Bool(true)) {
            for field in ["id", "room", "user", "text", "ts", "client_id"] {
                assert!(event.get(field).is_some(), "a post lacks {field}: {event}");
            }
        }
        messages.push(event);
    }
    messages
}

/// Whether `ts` looks like an RFC 3339 UTC time (`2026-01-01T00:00:00.000Z`).
pub fn is_rfc3339_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    ts.len() >= 20
        && ts.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
}
