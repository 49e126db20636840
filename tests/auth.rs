//! Step 2: accounts and sessions against the real server on 127.0.0.1:0
//! with real HTTP and WebSocket clients.

use std::path::Path;
use std::time::{Duration, Instant};

use chatroom::{Config, RunningServer};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);
const PASSWORD: &str = "correct horse battery";

struct Server {
    running: Option<RunningServer>,
    dir: tempfile::TempDir,
    tune: fn(&mut Config),
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: fn(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let running = Some(Self::launch(dir.path(), tune).await);
        Self { running, dir, tune }
    }

    async fn launch(dir: &Path, tune: fn(&mut Config)) -> RunningServer {
        let mut config = Config::for_data_dir(dir);
        tune(&mut config);
        RunningServer::start(config).await.unwrap()
    }

    async fn restart(&mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        self.running = Some(Self::launch(self.dir.path(), self.tune).await);
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// One browser-like user: a cookie jar and the last session cookie seen.
struct User {
    http: reqwest::Client,
    cookie: Option<String>,
}

impl User {
    fn new() -> Self {
        let http = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookie: None }
    }

    async fn post(&mut self, server: &Server, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self.http.post(server.url(path)).json(&body).send().await.unwrap();
        self.remember_cookie(&response);
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    async fn get(&self, server: &Server, path: &str) -> (u16, Value) {
        let response = self.http.get(server.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    }

    fn remember_cookie(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap();
            if let Some(id) = pair.strip_prefix("chatroom_session=") {
                self.cookie = (!id.is_empty()).then(|| id.to_string());
            }
        }
    }

    async fn sign_up(server: &Server, name: &str) -> Self {
        let mut user = Self::new();
        let (status, body, _) = user.post(server, "/api/signup", json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(status, 201, "{body}");
        user
    }

    async fn socket(&self, server: &Server) -> Socket {
        let mut request = format!("ws://{}/ws", server.addr()).into_client_request().unwrap();
        let cookie = format!("chatroom_session={}", self.cookie.as_deref().unwrap());
        request.headers_mut().insert("cookie", cookie.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Socket(ws)
    }
}

struct Socket(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>);

impl Socket {
    async fn join(&mut self, room: &str) -> Value {
        self.0.send(Message::text(json!({"type": "join", "room": room}).to_string())).await.unwrap();
        loop {
            let event = self.next().await.expect("socket open");
            if event["type"] == "joined" {
                return event;
            }
        }
    }

    /// The next JSON event, or `None` when the server closed the socket.
    async fn next(&mut self) -> Option<Value> {
        match tokio::time::timeout(WAIT, self.0.next()).await.expect("no event in time") {
            Some(Ok(Message::Text(t))) => Some(serde_json::from_str(&t).unwrap()),
            _ => None,
        }
    }

    /// Waits for the close frame and returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(WAIT, self.0.next()).await.expect("no close in time") {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn sign_up_logs_in_and_me_says_not_guest() {
    let server = Server::start().await;
    let ann = User::sign_up(&server, "Ann").await;
    assert_eq!(ann.get(&server, "/api/me").await, (200, json!({"username": "Ann", "guest": false})));
    assert_eq!(ann.get(&server, "/api/subscriptions").await, (200, json!([{"name": "general"}])));
}

#[tokio::test]
async fn duplicate_names_and_weak_passwords_are_refused() {
    let server = Server::start().await;
    User::sign_up(&server, "Ann").await;
    let mut other = User::new();
    let (status, body, _) = other.post(&server, "/api/signup", json!({"username": "ANN", "password": PASSWORD})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")));
    let (status, body, _) = other.post(&server, "/api/signup", json!({"username": "bob", "password": "short"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("weak_password")));
    let long = "x".repeat(129);
    let (status, _, _) = other.post(&server, "/api/signup", json!({"username": "bob", "password": long})).await;
    assert_eq!(status, 400);
    let (status, body, _) = other.post(&server, "/api/signup", json!({"username": "bad\u{202E}name", "password": PASSWORD})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_username")));
    // A guest may not take an account's name.
    let (status, body, _) = other.post(&server, "/api/guest", json!({"username": "ann"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")));
}

#[tokio::test]
async fn log_in_right_and_wrong_with_enumeration_safe_answers() {
    let server = Server::start().await;
    User::sign_up(&server, "Ann").await;
    let mut visitor = User::new();
    let (wrong_status, wrong_body, _) = visitor.post(&server, "/api/login", json!({"username": "ann", "password": "not the password"})).await;
    let (unknown_status, unknown_body, _) = visitor.post(&server, "/api/login", json!({"username": "nobody", "password": "not the password"})).await;
    assert_eq!(wrong_status, 401);
    assert_eq!((unknown_status, &unknown_body), (wrong_status, &wrong_body), "unknown user and wrong password must look the same");
    assert_eq!(visitor.get(&server, "/api/me").await.0, 401);

    let (status, body, _) = visitor.post(&server, "/api/login", json!({"username": "ANN", "password": PASSWORD})).await;
    assert_eq!((status, body), (200, json!({"username": "Ann", "guest": false})));
    assert_eq!(visitor.get(&server, "/api/me").await.0, 200);
}

#[tokio::test]
async fn each_log_in_gets_a_fresh_session_id() {
    let server = Server::start().await;
    let mut ann = User::sign_up(&server, "Ann").await;
    let first = ann.cookie.clone().unwrap();
    let (status, _, _) = ann.post(&server, "/api/login", json!({"username": "Ann", "password": PASSWORD})).await;
    assert_eq!(status, 200);
    let second = ann.cookie.clone().unwrap();
    assert_ne!(first, second);
    assert_eq!(first.len(), 64, "256-bit ids, hex-encoded");
    // The old id no longer works.
    let stale = reqwest::Client::new();
    let response = stale.get(server.url("/api/me")).header("cookie", format!("chatroom_session={first}")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_retry_after() {
    let server = Server::start().await;
    User::sign_up(&server, "Ann").await;
    let mut attacker = User::new();
    for _ in 0..5 {
        let (status, _, _) = attacker.post(&server, "/api/login", json!({"username": "ann", "password": "guess guess"})).await;
        assert_eq!(status, 401);
    }
    // Even the right password is refused now: the name is locked for a while.
    let (status, body, headers) = attacker.post(&server, "/api/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
}

#[tokio::test]
async fn logout_closes_that_sessions_sockets_and_the_cookie_stops_working() {
    let server = Server::start().await;
    let mut ann = User::sign_up(&server, "Ann").await;
    let mut socket = ann.socket(&server).await;
    socket.join("general").await;
    let old_cookie = ann.cookie.clone().unwrap();

    let (status, _, headers) = ann.post(&server, "/api/logout", json!({})).await;
    assert_eq!(status, 204);
    let cleared = headers["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(socket.close_code().await, 4401);

    let response = reqwest::Client::new()
        .get(server.url("/api/me"))
        .header("cookie", format!("chatroom_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn idle_sessions_expire_and_close_their_sockets() {
    let server = Server::start_with(|c| c.session_limits.idle = Duration::from_secs(1)).await;
    let ann = User::sign_up(&server, "Ann").await;
    let mut socket = ann.socket(&server).await;
    socket.join("general").await;
    let started = Instant::now();
    assert_eq!(socket.close_code().await, 4401);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(ann.get(&server, "/api/me").await.0, 401);
}

#[tokio::test]
async fn absolute_limit_ends_even_an_active_session() {
    let server = Server::start_with(|c| c.session_limits.absolute = Duration::from_secs(1)).await;
    let ann = User::sign_up(&server, "Ann").await;
    let mut socket = ann.socket(&server).await;
    socket.join("general").await;
    // Activity does not extend it.
    assert_eq!(ann.get(&server, "/api/me").await.0, 200);
    assert_eq!(socket.close_code().await, 4401);
    assert_eq!(ann.get(&server, "/api/me").await.0, 401);
}

#[tokio::test]
async fn sessions_and_subscriptions_survive_a_restart() {
    let mut server = Server::start().await;
    let mut ann = User::sign_up(&server, "Ann").await;
    let (status, _, _) = ann.post(&server, "/api/rooms", json!({"name": "rust"})).await;
    assert_eq!(status, 201);
    let put = ann.http.put(server.url("/api/subscriptions/rust")).json(&json!({})).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let cookie = ann.cookie.clone().unwrap();

    server.restart().await;
    let response = reqwest::Client::new()
        .get(server.url("/api/subscriptions"))
        .header("cookie", format!("chatroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!([{"name": "general"}, {"name": "rust"}]));
    // Log-in still works after the restart (the hash was stored).
    let mut again = User::new();
    let (status, _, _) = again.post(&server, "/api/login", json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn no_password_or_raw_session_id_is_ever_written() {
    let mut server = Server::start().await;
    let mut ann = User::sign_up(&server, "Ann").await;
    let (status, _, _) = ann.post(&server, "/api/login", json!({"username": "Ann", "password": PASSWORD})).await;
    assert_eq!(status, 200);
    let mut guest = User::new();
    guest.post(&server, "/api/guest", json!({"username": "gus"})).await;
    let ids = [ann.cookie.clone().unwrap(), guest.cookie.clone().unwrap()];
    server.restart().await;

    let mut files = Vec::new();
    collect_files(server.dir.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("users.jsonl")));
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!content.contains(PASSWORD), "{} holds a password", file.display());
        for id in &ids {
            assert!(!content.contains(id.as_str()), "{} holds a raw session id", file.display());
        }
    }
    let users = std::fs::read_to_string(server.dir.path().join("users.jsonl")).unwrap();
    assert!(users.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{users}");
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { collect_files(&path, out) } else { out.push(path) }
    }
}

#[tokio::test]
async fn cross_origin_posts_and_socket_upgrades_are_refused() {
    let server = Server::start().await;
    let ann = User::sign_up(&server, "Ann").await;
    let response = ann
        .http
        .post(server.url("/api/rooms"))
        .header("origin", "http://evil.example")
        .json(&json!({"name": "phish"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "forbidden_origin");

    let mut request = format!("ws://{}/ws", server.addr()).into_client_request().unwrap();
    request.headers_mut().insert("cookie", format!("chatroom_session={}", ann.cookie.as_deref().unwrap()).parse().unwrap());
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("a cross-site upgrade must be refused, got {:?}", other.map(|_| ())),
    }

    // The server's own origin is fine.
    let own = format!("http://{}", server.addr());
    let response = ann.http.post(server.url("/api/rooms")).header("origin", own).json(&json!({"name": "ok"})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_do_not() {
    let server = Server::start_with(|c| c.allowed_origins = vec!["https://chat.example.com".into()]).await;
    let ann = User::sign_up(&server, "Ann").await;
    let response = ann
        .http
        .get(server.url("/api/me"))
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://chat.example.com");
    assert_eq!(response.headers()["access-control-allow-credentials"], "true");
    let preflight = ann
        .http
        .request(reqwest::Method::OPTIONS, server.url("/api/rooms"))
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let foreign = ann.http.get(server.url("/api/me")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn guests_can_be_turned_off() {
    let server = Server::start_with(|c| c.guests_allowed = false).await;
    let mut visitor = User::new();
    let (status, body, _) = visitor.post(&server, "/api/guest", json!({"username": "gus"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("guests_disabled")));
    User::sign_up(&server, "Ann").await;
}

#[tokio::test]
async fn pages_redirect_by_session_and_send_a_strict_policy() {
    let server = Server::start().await;
    let visitor = User::new();
    let landing = visitor.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(landing.status().as_u16(), 200);
    let csp = landing.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(landing.headers()["x-content-type-options"], "nosniff");
    assert!(landing.headers().contains_key("referrer-policy"));
    let home = visitor.http.get(server.url("/home")).send().await.unwrap();
    assert_eq!((home.status().as_u16(), home.headers()["location"].to_str().unwrap()), (302, "/"));

    let ann = User::sign_up(&server, "Ann").await;
    let landing = ann.http.get(server.url("/")).send().await.unwrap();
    assert_eq!((landing.status().as_u16(), landing.headers()["location"].to_str().unwrap()), (302, "/home"));
    assert_eq!(ann.http.get(server.url("/home")).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn cookies_are_http_only_same_site_and_secure_when_asked() {
    let server = Server::start_with(|c| c.secure_cookies = true).await;
    let response = reqwest::Client::new()
        .post(server.url("/api/signup"))
        .json(&json!({"username": "Ann", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
}

#[tokio::test]
async fn guest_subscriptions_last_as_long_as_the_session_even_across_restarts() {
    let mut server = Server::start().await;
    let mut gus = User::new();
    let (status, _, _) = gus.post(&server, "/api/guest", json!({"username": "gus"})).await;
    assert_eq!(status, 200);
    gus.post(&server, "/api/rooms", json!({"name": "lobby"})).await;
    let put = gus.http.put(server.url("/api/subscriptions/lobby")).json(&json!({})).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let cookie = gus.cookie.clone().unwrap();
    server.restart().await;

    let subscriptions = |server: &Server, cookie: &str| {
        reqwest::Client::new().get(server.url("/api/subscriptions")).header("cookie", format!("chatroom_session={cookie}")).send()
    };
    let response = subscriptions(&server, &cookie).await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), json!([{"name": "general"}, {"name": "lobby"}]));

    // After logout a new guest of the same name starts afresh.
    let (status, _, _) = gus.post(&server, "/api/logout", json!({})).await;
    assert_eq!(status, 204);
    let mut again = User::new();
    again.post(&server, "/api/guest", json!({"username": "gus"})).await;
    assert_eq!(again.get(&server, "/api/subscriptions").await, (200, json!([{"name": "general"}])));
}

#[tokio::test]
async fn state_changing_requests_must_be_json() {
    let server = Server::start().await;
    let ann = User::sign_up(&server, "Ann").await;
    // What a cross-site HTML form could send:
    let form_logout = ann.http.post(server.url("/api/logout")).header("content-type", "application/x-www-form-urlencoded").body("").send().await.unwrap();
    assert_eq!(form_logout.status().as_u16(), 415);
    let bare_put = ann.http.put(server.url("/api/subscriptions/general")).send().await.unwrap();
    assert_eq!(bare_put.status().as_u16(), 415);
    let bare_delete = ann.http.delete(server.url("/api/subscriptions/general")).send().await.unwrap();
    assert_eq!(bare_delete.status().as_u16(), 415);
    assert_eq!(ann.get(&server, "/api/me").await.0, 200, "still logged in");
    assert_eq!(ann.get(&server, "/api/subscriptions").await.1, json!([{"name": "general"}]));
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let server = Server::start().await;
    let response = reqwest::get(server.url("/no/such/page")).await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "not_found");
}
