//! Step 2: accounts and sessions against the real server on 127.0.0.1:0
//! with real HTTP and WebSocket clients.

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use async_trait::async_trait;
use chatroom::auth::AuthStores;
use chatroom::store::memory::MemoryStore;
use chatroom::store::{SessionRecord, SessionStore, StoreError};
use chatroom::{Config, RunningServer, Stores};
use common::{COOKIE, Endpoint, TestServer, User, list_files, refused_status};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn sign_up_logs_in_and_me_says_not_guest() {
    let server = TestServer::start().await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    assert_eq!(ann.get("/api/me").await, (200, json!({"username": "Ann", "guest": false})));
    assert_eq!(ann.get("/api/subscriptions").await, (200, json!([{"name": "general", "read": 0, "unread": 0, "mentions": 0}])));
}

#[tokio::test]
async fn duplicate_names_and_weak_passwords_are_refused() {
    let server = TestServer::start().await;
    User::sign_up(&server, "Ann", PASSWORD).await;
    let mut other = server.anonymous();
    let (status, body) = other.try_sign_up("ANN", PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")));
    let (status, body) = other.try_sign_up("bob", "short").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("weak_password")));
    let long = "x".repeat(129);
    let (status, _) = other.try_sign_up("bob", &long).await;
    assert_eq!(status, 400);
    let (status, body) = other.try_sign_up("bad\u{202E}name", PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_username")));
    // A guest may not take an account's name.
    let (status, body) = other.login_guest("ann").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")));
}

/// Step 5: "is this name taken" compares confusable skeletons (UTS #39), so
/// a look-alike in another script cannot pose as an account or an online
/// guest — before and after a restart. Log-in still needs the exact name.
#[tokio::test]
async fn a_look_alike_name_cannot_pose_as_an_account_or_an_online_guest() {
    let mut server = TestServer::start().await;
    User::sign_up(&server, "admin", PASSWORD).await;
    let look_alikes = [
        "\u{0430}dmin",                          // Cyrillic а
        "\u{0410}DMIN",                          // Cyrillic А, upper case
        "\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", // fullwidth ａｄｍｉｎ
    ];
    let assert_taken = |status: u16, body: &Value, what: &str| {
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")), "{what}: {body}");
    };
    for name in look_alikes {
        let mut visitor = server.anonymous();
        let (status, body) = visitor.try_sign_up(name, PASSWORD).await;
        assert_taken(status, &body, &format!("sign-up {name:?} beside the account admin"));
        let (status, body) = visitor.login_guest(name).await;
        assert_taken(status, &body, &format!("guest {name:?} beside the account admin"));
    }
    // The look-alike is not a way into the account either.
    let (status, _, _) = server.anonymous().log_in("\u{0430}dmin", PASSWORD).await;
    assert_eq!(status, 401);

    // An online guest's name is held against look-alikes too.
    let root = server.guest("root").await;
    assert_eq!(root.get("/api/me").await.0, 200);
    let mut visitor = server.anonymous();
    let spoof = "r\u{043E}\u{043E}t"; // Cyrillic о twice
    let (status, body) = visitor.login_guest(spoof).await;
    assert_taken(status, &body, "guest look-alike of the guest root");
    let (status, body) = visitor.try_sign_up(spoof, PASSWORD).await;
    assert_taken(status, &body, "sign-up look-alike of the guest root");

    // The comparison key is derived at start, not stored: still taken.
    server.restart().await;
    let mut visitor = server.anonymous();
    let (status, body) = visitor.try_sign_up("\u{0430}dmin", PASSWORD).await;
    assert_taken(status, &body, "sign-up look-alike after a restart");
    let (status, body) = visitor.login_guest("\u{0430}dmin").await;
    assert_taken(status, &body, "guest look-alike after a restart");
    // And the display name is kept as typed.
    let (status, _, _) = visitor.log_in("admin", PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(visitor.get("/api/me").await, (200, json!({"username": "admin", "guest": false})));
}

#[tokio::test]
async fn log_in_right_and_wrong_with_enumeration_safe_answers() {
    let server = TestServer::start().await;
    User::sign_up(&server, "Ann", PASSWORD).await;
    let mut visitor = server.anonymous();
    let (wrong_status, wrong_body, _) = visitor.log_in("ann", "not the password").await;
    let (unknown_status, unknown_body, _) = visitor.log_in("nobody", "not the password").await;
    assert_eq!(wrong_status, 401);
    assert_eq!((unknown_status, &unknown_body), (wrong_status, &wrong_body), "unknown user and wrong password must look the same");
    assert_eq!(visitor.get("/api/me").await.0, 401);

    let (status, body, _) = visitor.log_in("ANN", PASSWORD).await;
    assert_eq!((status, body), (200, json!({"username": "Ann", "guest": false})));
    assert_eq!(visitor.get("/api/me").await.0, 200);
}

#[tokio::test]
async fn each_log_in_gets_a_fresh_session_id() {
    let server = TestServer::start().await;
    let mut ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let first = ann.session_id().unwrap().to_string();
    let (status, _, _) = ann.log_in("Ann", PASSWORD).await;
    assert_eq!(status, 200);
    let second = ann.session_id().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(first.len(), 64, "256-bit ids, hex-encoded");
    // The old id no longer works.
    assert_eq!(server.get_with_cookie("/api/me", &format!("{COOKIE}={first}")).await.0, 401);
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_retry_after() {
    let server = TestServer::start().await;
    User::sign_up(&server, "Ann", PASSWORD).await;
    let mut attacker = server.anonymous();
    for _ in 0..5 {
        let (status, _, _) = attacker.log_in("ann", "guess guess").await;
        assert_eq!(status, 401);
    }
    // Even the right password is refused now: the name is locked for a while.
    let (status, body, headers) = attacker.log_in("ann", PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
}

#[tokio::test]
async fn logout_closes_that_sessions_sockets_and_the_cookie_stops_working() {
    let server = TestServer::start().await;
    let mut ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let mut socket = ann.ws_in("general").await;
    let old_cookie = ann.cookie.clone().unwrap();

    let (status, _, headers) = ann.post_with_headers("/api/logout", json!({})).await;
    assert_eq!(status, 204);
    let cleared = headers["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(socket.expect_close_code().await, 4401);

    assert_eq!(server.get_with_cookie("/api/me", &old_cookie).await.0, 401);
}

#[tokio::test]
async fn idle_sessions_expire_and_close_their_sockets() {
    let server = TestServer::start_with(|c| c.session_limits.idle = Duration::from_secs(1)).await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let mut socket = ann.ws_in("general").await;
    let started = Instant::now();
    assert_eq!(socket.expect_close_code().await, 4401);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(ann.get("/api/me").await.0, 401);
}

#[tokio::test]
async fn absolute_limit_ends_even_an_active_session() {
    let server = TestServer::start_with(|c| c.session_limits.absolute = Duration::from_secs(1)).await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let mut socket = ann.ws_in("general").await;
    // Activity does not extend it.
    assert_eq!(ann.get("/api/me").await.0, 200);
    assert_eq!(socket.expect_close_code().await, 4401);
    assert_eq!(ann.get("/api/me").await.0, 401);
}

#[tokio::test]
async fn sessions_and_subscriptions_survive_a_restart() {
    let mut server = TestServer::start().await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    assert_eq!(ann.post("/api/rooms", json!({"name": "rust"})).await.0, 201);
    assert_eq!(ann.put("/api/subscriptions/rust", json!({})).await.0, 200);
    let cookie = ann.cookie.clone().unwrap();

    server.restart().await;
    assert_eq!(
        server.get_with_cookie("/api/subscriptions", &cookie).await,
        (200, json!([{"name": "general", "read": 0, "unread": 0, "mentions": 0}, {"name": "rust", "read": 0, "unread": 0, "mentions": 0}]))
    );
    // Log-in still works after the restart (the hash was stored).
    let mut again = server.anonymous();
    let (status, _, _) = again.log_in("ann", PASSWORD).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn no_password_or_raw_session_id_is_ever_written() {
    let mut server = TestServer::start().await;
    let mut ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let (status, _, _) = ann.log_in("Ann", PASSWORD).await;
    assert_eq!(status, 200);
    let mut guest = server.anonymous();
    guest.login_guest("gus").await;
    let ids = [ann.session_id().unwrap().to_string(), guest.session_id().unwrap().to_string()];
    server.restart().await;

    let files: Vec<String> = list_files(server.data_dir()).into_iter().filter(|f| !f.ends_with('/')).collect();
    assert!(files.iter().any(|f| f.ends_with("users.jsonl")));
    for file in files {
        let content = std::fs::read_to_string(server.data_dir().join(&file)).unwrap_or_default();
        assert!(!content.contains(PASSWORD), "{file} holds a password");
        for id in &ids {
            assert!(!content.contains(id.as_str()), "{file} holds a raw session id");
        }
    }
    let users = std::fs::read_to_string(server.data_dir().join("users.jsonl")).unwrap();
    assert!(users.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{users}");
}

#[tokio::test]
async fn cross_origin_posts_and_socket_upgrades_are_refused() {
    let server = TestServer::start().await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let response = ann
        .request(Method::POST, "/api/rooms")
        .header("origin", "http://evil.example")
        .json(&json!({"name": "phish"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "forbidden_origin");

    assert!(ann.cookie.is_some());
    assert_eq!(refused_status(ann.try_ws(Some("http://evil.example")).await), 403, "a cross-site upgrade must be refused");

    // The server's own origin is fine.
    let response = ann
        .request(Method::POST, "/api/rooms")
        .header("origin", server.origin())
        .json(&json!({"name": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_do_not() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://chat.example.com".into()]).await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let response = ann.request(Method::GET, "/api/me").header("origin", "https://chat.example.com").send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://chat.example.com");
    assert_eq!(response.headers()["access-control-allow-credentials"], "true");
    let preflight = ann
        .request(Method::OPTIONS, "/api/rooms")
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let foreign = ann.request(Method::GET, "/api/me").header("origin", "https://evil.example").send().await.unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn guests_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.guests_allowed = false).await;
    let mut visitor = server.anonymous();
    let (status, body) = visitor.login_guest("gus").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("guests_disabled")));
    User::sign_up(&server, "Ann", PASSWORD).await;
}

#[tokio::test]
async fn pages_redirect_by_session_and_send_a_strict_policy() {
    let server = TestServer::start().await;
    let visitor = server.anonymous_no_redirect();
    let landing = visitor.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(landing.status().as_u16(), 200);
    let csp = landing.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(landing.headers()["x-content-type-options"], "nosniff");
    assert!(landing.headers().contains_key("referrer-policy"));
    let home = visitor.request(Method::GET, "/home").send().await.unwrap();
    assert_eq!((home.status().as_u16(), home.headers()["location"].to_str().unwrap()), (302, "/"));

    let ann = server.anonymous_no_redirect().signed_up("Ann", PASSWORD).await;
    let landing = ann.request(Method::GET, "/").send().await.unwrap();
    assert_eq!((landing.status().as_u16(), landing.headers()["location"].to_str().unwrap()), (302, "/home"));
    assert_eq!(ann.request(Method::GET, "/home").send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn cookies_are_http_only_same_site_and_secure_when_asked() {
    let server = TestServer::start_with(|c| c.secure_cookies = true).await;
    let (_, _, headers) =
        server.anonymous().post_with_headers("/api/signup", json!({"username": "Ann", "password": PASSWORD})).await;
    let cookie = headers["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
}

#[tokio::test]
async fn guest_subscriptions_last_as_long_as_the_session_even_across_restarts() {
    let mut server = TestServer::start().await;
    let mut gus = server.anonymous();
    let (status, _) = gus.login_guest("gus").await;
    assert_eq!(status, 200);
    gus.post("/api/rooms", json!({"name": "lobby"})).await;
    assert_eq!(gus.put("/api/subscriptions/lobby", json!({})).await.0, 200);
    let cookie = gus.cookie.clone().unwrap();
    server.restart().await;

    let (_, subscriptions) = server.get_with_cookie("/api/subscriptions", &cookie).await;
    assert_eq!(subscriptions, json!([{"name": "general", "read": 0, "unread": 0, "mentions": 0}, {"name": "lobby", "read": 0, "unread": 0, "mentions": 0}]));

    // After logout a new guest of the same name starts afresh.
    let gus = gus.at(&server);
    assert_eq!(gus.post("/api/logout", json!({})).await.0, 204);
    let mut again = server.anonymous();
    again.login_guest("gus").await;
    assert_eq!(again.get("/api/subscriptions").await, (200, json!([{"name": "general", "read": 0, "unread": 0, "mentions": 0}])));
}

#[tokio::test]
async fn state_changing_requests_must_be_json() {
    let server = TestServer::start().await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    // What a cross-site HTML form could send:
    let form_logout = ann
        .request(Method::POST, "/api/logout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(form_logout.status().as_u16(), 415);
    let bare_put = ann.request(Method::PUT, "/api/subscriptions/general").send().await.unwrap();
    assert_eq!(bare_put.status().as_u16(), 415);
    let bare_delete = ann.request(Method::DELETE, "/api/subscriptions/general").send().await.unwrap();
    assert_eq!(bare_delete.status().as_u16(), 415);
    assert_eq!(ann.get("/api/me").await.0, 200, "still logged in");
    assert_eq!(ann.get("/api/subscriptions").await.1, json!([{"name": "general", "read": 0, "unread": 0, "mentions": 0}]));
}

/// Sends `POST path` over a raw connection, with exactly `headers` (plus
/// Host and `Connection: close`) and `body`; the response's status.
async fn raw_post(server: &TestServer, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("POST {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n", server.addr());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = Vec::new();
    tokio::time::timeout(common::TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .expect("read the response");
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).unwrap_or_else(|| panic!("no status line: {response}"));
    status.parse().unwrap_or_else(|_| panic!("no status in: {response}"))
}

#[tokio::test]
async fn logout_without_a_body_needs_no_content_type() {
    let server = TestServer::start().await;
    let gus = server.guest("gus").await;
    let cookie = gus.cookie.clone().unwrap();
    let with_cookie = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend_from_slice(extra);
        headers
    };
    // A foreign page is still refused, body or not.
    assert_eq!(raw_post(&server, "/api/logout", &with_cookie(&[("origin", "http://evil.example")]), "").await, 403);
    // A body that is not JSON is still refused, declared or not.
    assert_eq!(raw_post(&server, "/api/logout", &with_cookie(&[("content-length", "5")]), "hello").await, 415);
    let text = [("content-type", "text/plain"), ("content-length", "5")];
    assert_eq!(raw_post(&server, "/api/logout", &with_cookie(&text), "hello").await, 415);
    assert_eq!(server.get_with_cookie("/api/me", &cookie).await.0, 200, "still logged in");

    // What `curl -X POST` sends: no Content-Type, no Content-Length, no body.
    assert_eq!(raw_post(&server, "/api/logout", &with_cookie(&[]), "").await, 204);
    assert_eq!(server.get_with_cookie("/api/me", &cookie).await.0, 401, "logged out");

    // `Content-Length: 0` without a type is no body either.
    let hal = server.guest("hal").await;
    let hal_cookie = hal.cookie.clone().unwrap();
    let empty = [("cookie", hal_cookie.as_str()), ("content-length", "0")];
    assert_eq!(raw_post(&server, "/api/logout", &empty, "").await, 204);
    assert_eq!(server.get_with_cookie("/api/me", &hal_cookie).await.0, 401);

    // And a plain client's body-less POST.
    let ivy = server.guest("ivy").await;
    assert_eq!(ivy.request(Method::POST, "/api/logout").send().await.unwrap().status().as_u16(), 204);
    assert_eq!(ivy.get("/api/me").await.0, 401);
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let server = TestServer::start().await;
    let (status, body) = server.anonymous().get("/no/such/page").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

/// One failed log-in for `name`, as if from `client` behind our proxy.
async fn fail_login_via_proxy(visitor: &User, name: &str, client: &str) -> u16 {
    let response = visitor
        .request(Method::POST, "/api/login")
        .header("x-forwarded-for", format!("203.0.113.250, {client}"))
        .json(&json!({"username": name, "password": "not the password"}))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_throttling_counts_per_forwarded_address() {
    let server = TestServer::start_with(|config| config.trust_proxy = true).await;
    let visitor = server.anonymous();
    for n in 0..20 {
        assert_eq!(fail_login_via_proxy(&visitor, &format!("user{n}"), "198.51.100.7").await, 401);
    }
    // That address is locked out, whatever the name …
    assert_eq!(fail_login_via_proxy(&visitor, "someone-new", "198.51.100.7").await, 429);
    // … but another client behind the same proxy is not, and the first
    // (client-written) entry of the header is not what counts.
    assert_eq!(fail_login_via_proxy(&visitor, "someone-new", "198.51.100.8").await, 401);
}

/// Status codes of `statuses`, counted: (401s, 429s, anything else).
fn count_401_429(statuses: &[u16]) -> (usize, usize, Vec<u16>) {
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    let others = statuses.iter().copied().filter(|s| *s != 401 && *s != 429).collect();
    (unauthorized, throttled, others)
}

/// Wrong-password log-ins, all at once, for `names` (one each); their
/// statuses (0 for a request that got no answer in time).
async fn parallel_failed_logins(server: &TestServer, names: Vec<String>) -> Vec<u16> {
    let attempts = names.into_iter().enumerate().map(|(i, name)| {
        let visitor = server.anonymous();
        tokio::spawn(async move {
            let body = json!({"username": name, "password": format!("wrong guess {i}")});
            let sent = visitor.request(Method::POST, "/api/login").json(&body).send().await;
            sent.map_or(0, |response| response.status().as_u16())
        })
    });
    futures::future::join_all(attempts).await.into_iter().map(|r| r.expect("a log-in task")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_for_one_name_are_checked_at_most_five_times() {
    let server = TestServer::start().await;
    User::sign_up(&server, "Ann", PASSWORD).await;
    let statuses = parallel_failed_logins(&server, vec!["ann".to_string(); 60]).await;
    // In-flight attempts count: five passwords are tried, the rest are
    // refused before any hashing (and so none queue up into a 503).
    assert_eq!(count_401_429(&statuses), (5, 55, vec![]), "{statuses:?}");
    let (status, body, _) = server.anonymous().log_in("ann", PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "the window is closed for now");
}

#[tokio::test]
async fn a_right_password_does_not_count_as_a_failure() {
    let server = TestServer::start().await;
    User::sign_up(&server, "Ann", PASSWORD).await;
    let mut ann = server.anonymous();
    for _ in 0..10 {
        assert_eq!(ann.log_in("ann", PASSWORD).await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(ann.log_in("ann", "guess guess").await.0, 401);
    }
    assert_eq!(ann.log_in("ann", PASSWORD).await.0, 429);
}

// ------------------------------------------------ concurrent guest log-ins

/// Guest log-ins of different names run at once: each one's session write
/// waits (up to a second) for all the others to be writing too, which only
/// happens if none waits for another's log-in to finish.
#[tokio::test]
async fn guest_log_ins_of_different_names_run_at_once() {
    const GUESTS: usize = 16;
    let node = GatedNode::start(GUESTS).await;
    let endpoint = node.endpoint();
    let log_ins = (0..GUESTS).map(|i| {
        let mut visitor = endpoint.anonymous();
        async move { visitor.login_guest(&format!("guest{i}")).await }
    });
    let started = Instant::now();
    let answers = futures::future::join_all(log_ins).await;
    let took = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let most = node.sessions.most_at_once();
    assert_eq!(most, GUESTS, "session writes in flight at once (took {took:?})");
    node.stop().await;
}

/// Two log-ins of look-alike names at once: exactly one gets the name,
/// even though the first one's session write is held up meanwhile.
#[tokio::test]
async fn of_two_guest_log_ins_of_look_alike_names_at_once_exactly_one_wins() {
    for (a, b) in [("ann", "ANN"), ("admin", "\u{0430}dmin")] {
        let node = GatedNode::start(2).await;
        let endpoint = node.endpoint();
        let (mut first, mut second) = (endpoint.anonymous(), endpoint.anonymous());
        let (one, two) = tokio::join!(first.login_guest(a), second.login_guest(b));
        let mut statuses = [one.0, two.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?}: {}, {b:?}: {}", one.1, two.1);
        let loser = if one.0 == 409 { &one.1 } else { &two.1 };
        assert_eq!(loser["error"]["code"], "name_taken", "{loser}");
        assert_eq!(node.sessions.most_at_once(), 1, "the look-alike never reached its session write");
        node.stop().await;
    }
}

/// A server whose session writes go through [`GatedSessions`].
struct GatedNode {
    server: RunningServer,
    sessions: Arc<GatedSessions>,
    _dir: tempfile::TempDir,
}

impl GatedNode {
    async fn start(wait_for: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let memory = Arc::new(MemoryStore::new());
        let sessions = Arc::new(GatedSessions::new(memory.clone(), wait_for));
        let accounts = AuthStores { sessions: sessions.clone(), ..AuthStores::of(memory.clone()) };
        let stores = Stores { messages: memory, accounts };
        let server = RunningServer::start_with_stores(Config::for_data_dir(dir.path()), stores).await.expect("the server starts");
        Self { server, sessions, _dir: dir }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.server.addr }
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(30), self.server.stop())
            .await
            .expect("the server stops within 30 s")
            .expect("the server stops cleanly");
    }
}

/// The memory store's sessions, where each new session's write waits until
/// `wait_for` writes are in flight at once, or a second has passed; it
/// counts the most seen in flight.
struct GatedSessions {
    inner: Arc<MemoryStore>,
    wait_for: usize,
    in_flight: tokio::sync::watch::Sender<usize>,
    most: std::sync::atomic::AtomicUsize,
}

impl GatedSessions {
    fn new(inner: Arc<MemoryStore>, wait_for: usize) -> Self {
        Self { inner, wait_for, in_flight: tokio::sync::watch::channel(0).0, most: Default::default() }
    }

    fn most_at_once(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for GatedSessions {
    async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        let mut now = 0;
        self.in_flight.send_modify(|n| {
            *n += 1;
            now = *n;
        });
        self.most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        let mut all_in = self.in_flight.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(1), all_in.wait_for(|n| *n >= self.wait_for)).await;
        let saved = self.inner.save_session(session).await;
        self.in_flight.send_modify(|n| *n -= 1);
        saved
    }
    async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.find_session(id_hash).await
    }
    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.load_sessions().await
    }
    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), StoreError> {
        self.inner.touch_sessions(seen).await
    }
    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError> {
        self.inner.delete_sessions(id_hashes).await
    }
}
