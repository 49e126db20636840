//! The HTTP API: the polling transport side by side with the sockets,
//! paging, rooms, sessions, pages and their headers.

mod common;

use common::{TestServer, id, ids, no_redirect_client, texts, without_type};
use serde_json::json;

#[tokio::test]
async fn the_polling_api_sees_socket_messages_and_sockets_see_posted_ones() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await; // on a socket
    let bob = server.guest("bob").await; // polling
    let mut a = ann.ws_in("general").await;

    // POST → every socket in the room gets it.
    let (status, posted) = bob.post_message("general", "  polled hello ", "bob-1").await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["id"], 1);
    assert_eq!(posted["room"], "general");
    assert_eq!(posted["user"], "bob");
    assert_eq!(posted["text"], "polled hello");
    assert_eq!(posted["client_id"], "bob-1");
    assert!(common::is_rfc3339_utc(posted["ts"].as_str().unwrap()), "{posted}");
    let pushed = a.next_of_type("message").await;
    assert_eq!(without_type(&pushed), posted);

    // A socket send → the polling client reads it.
    let echo = a.send_and_echo("general", "socket hello", "ann-1").await;
    let polled = bob.messages("general", "after=1").await;
    assert_eq!(polled, vec![without_type(&echo)]);
    let all = bob.messages("general", "").await;
    assert_eq!(texts(&all), vec!["polled hello", "socket hello"]);
    assert_eq!(ids(&all), vec![1, 2]);

    // A POST retried with the same client_id: 200 with the stored message,
    // nothing new stored, nothing pushed.
    let (status, again) = bob.post_message("general", "polled hello", "bob-1").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, posted);
    assert_eq!(bob.messages("general", "").await.len(), 2);
    let next = bob.send_http("general", "third", "bob-2").await;
    assert_eq!(id(&next), 3);
    assert_eq!(without_type(&a.next_of_type("message").await), next, "the retry was not pushed");
}

#[tokio::test]
async fn history_pages_with_after_before_and_limit() {
    let server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    for i in 1..=120 {
        let m = ann.send_http("general", &format!("message {i}"), &format!("c{i}")).await;
        assert_eq!(id(&m), i);
    }
    let range = |a: u64, b: u64| (a..=b).collect::<Vec<u64>>();

    // Default: the latest 50, oldest first.
    let latest = ann.messages("general", "").await;
    assert_eq!(ids(&latest), range(71, 120));
    assert_eq!(latest[0]["text"], "message 71");
    assert_eq!(ids(&ann.messages("general", "limit=").await), range(71, 120), "an empty limit is the default");

    assert_eq!(ids(&ann.messages("general", "after=10&limit=5").await), range(11, 15));
    assert_eq!(ids(&ann.messages("general", "after=0&limit=3").await), range(1, 3));
    assert_eq!(ids(&ann.messages("general", "after=100").await), range(101, 120));
    assert_eq!(ids(&ann.messages("general", "after=120").await), Vec::<u64>::new());
    assert_eq!(ids(&ann.messages("general", "after=5000").await), Vec::<u64>::new());
    assert_eq!(ids(&ann.messages("general", "before=20&limit=5").await), range(15, 19));
    assert_eq!(ids(&ann.messages("general", "before=30").await), range(1, 29));
    assert_eq!(ids(&ann.messages("general", "before=1").await), Vec::<u64>::new());
    assert_eq!(ids(&ann.messages("general", "after=10&before=15").await), range(11, 14));
    assert_eq!(ids(&ann.messages("general", "after=10&before=15&limit=2").await), range(11, 12));
    assert_eq!(ids(&ann.messages("general", "limit=1").await), vec![120]);
    assert_eq!(ids(&ann.messages("general", "limit=120").await), range(1, 120));
    assert_eq!(ids(&ann.messages("general", "limit=500").await), range(1, 120));

    // Paging backwards with before= walks the whole history without gaps.
    let mut seen: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let q = match before {
            Some(b) => format!("before={b}&limit=25"),
            None => "limit=25".to_string(),
        };
        let page = ann.messages("general", &q).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 25);
        before = Some(id(&page[0]));
        let mut ids = ids(&page);
        ids.extend(seen);
        seen = ids;
    }
    assert_eq!(seen, range(1, 120));

    for bad in ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "after=abc", "after=-1", "before=x"] {
        let (status, body) = ann.get(&format!("/api/rooms/general/messages?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn a_page_holds_at_most_500_messages() {
    let server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    // 520 messages, 20 writers at a time.
    for chunk in 0..26 {
        let sends = (0..20).map(|i| {
            let n = chunk * 20 + i;
            let ann = &ann;
            async move { ann.send_http("general", &format!("m{n}"), &format!("c{n}")).await }
        });
        futures::future::join_all(sends).await;
    }
    let page = ann.messages("general", "limit=100000").await;
    assert_eq!(ids(&page), (21..=520).collect::<Vec<u64>>(), "capped at the latest 500");
    let page = ann.messages("general", "after=0&limit=501").await;
    assert_eq!(ids(&page), (1..=500).collect::<Vec<u64>>());
    assert_eq!(ann.all_messages("general").await.len(), 520);
}

#[tokio::test]
async fn rooms_are_searched_case_insensitively() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    for room in ["rustaceans", "trust", "rust", "python", "rust-lang"] {
        ann.create_room(room).await;
    }
    let names = |body: &serde_json::Value| -> Vec<String> {
        body.as_array()
            .unwrap_or_else(|| panic!("a list of rooms: {body}"))
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_string())
            .collect()
    };

    let (status, body) = ann.get("/api/rooms?q=RuSt").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["rust", "rust-lang", "rustaceans", "trust"], "exact, then prefixes, then the rest");
    let (_, body) = ann.get("/api/rooms?q=rust&limit=2").await;
    assert_eq!(names(&body), vec!["rust", "rust-lang"]);
    let (_, body) = ann.get("/api/rooms?q=PYTH").await;
    assert_eq!(names(&body), vec!["python"]);
    let (_, body) = ann.get("/api/rooms?q=zzz").await;
    assert_eq!(body, json!([]));
    let (_, body) = ann.get("/api/rooms").await;
    let mut all = names(&body);
    all.sort();
    assert_eq!(all, vec!["general", "python", "rust", "rust-lang", "rustaceans", "trust"]);
    assert_eq!(body[0], json!({"name": "general", "private": false}), "entries look like {{\"name\",\"private\"}}: {body}");

    let (status, body) = ann.get("/api/rooms?limit=0").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.anonymous().get("/api/rooms").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn creating_rooms_201_409_400() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let (status, body) = ann.post("/api/rooms", json!({"name": "team-1_x"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "team-1_x");
    let (status, body) = ann.post("/api/rooms", json!({"name": "team-1_x"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "room_exists");
    let (status, body) = ann.post("/api/rooms", json!({"name": "general"})).await;
    assert_eq!(status, 409, "general always exists: {body}");
    let (status, body) = ann.post("/api/rooms", json!({"name": "Team!"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_room_name");
    let (status, body) = ann.post("/api/rooms", json!({"nom": "x"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.anonymous().post("/api/rooms", json!({"name": "anon-room"})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    // The new room works; an unknown one is 404.
    assert_eq!(ann.messages("team-1_x", "").await, Vec::<serde_json::Value>::new());
    let m = ann.send_http("team-1_x", "first", "c1").await;
    assert_eq!(id(&m), 1);
    let (status, body) = ann.get("/api/rooms/nope/messages").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "room_not_found");
    let (status, body) = ann.post_message("nope", "hi", "c1").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "room_not_found");
    assert!(!server.room_file("nope").exists());
    assert!(!server.room_file("anon-room").exists());
}

#[tokio::test]
async fn me_needs_a_session() {
    let server = TestServer::start().await;
    let anon = server.anonymous();
    let (status, body) = anon.get("/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));

    let forged = common::http_client()
        .get(server.url("/api/me"))
        .header("cookie", format!("{}={}", common::COOKIE, "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let ann = server.guest("  Ann  ").await;
    let (status, body) = ann.get("/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "Ann");
    // Messages need a session too.
    let (status, _) = anon.get("/api/rooms/general/messages").await;
    assert_eq!(status, 401);
    let (status, _) = anon.post_message("general", "hi", "c1").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_guest_cookie_is_http_only_and_same_site() {
    let server = TestServer::start().await;
    let response = common::http_client()
        .post(server.url("/api/guest"))
        .json(&json!({"username": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
    assert!(cookie.starts_with("chatroom_session="), "{cookie}");
    let value = cookie.split(';').next().unwrap().trim_start_matches("chatroom_session=");
    assert!(value.len() >= 32, "at least 128 random bits: {cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
}

#[tokio::test]
async fn a_name_held_by_someone_online_is_taken_case_insensitively() {
    let server = TestServer::start().await;
    let (mut ann, _online) = server.guest_in("Ann", "general").await;

    for name in ["ann", "ANN", "  aNn "] {
        let (status, body) = server.anonymous().post("/api/guest", json!({"username": name})).await;
        assert_eq!(status, 409, "{name:?}: {body}");
        assert_eq!(body["error"]["code"], "name_taken", "{body}");
    }
    // Other names are free.
    server.guest("Anna").await;

    // The same browser may post its own name again.
    let (status, body) = ann.login_guest("Ann").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "Ann");
    let (status, body) = ann.get("/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "Ann");
    // Still held against others.
    let (status, _) = server.anonymous().post("/api/guest", json!({"username": "ann"})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let server = TestServer::start().await;
    let client = no_redirect_client();
    for path in ["/", "/api/me", "/style.css"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let h = response.headers();
        let csp = h.get("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP")).to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
    }
    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let ct = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(response.text().await.unwrap().to_lowercase().contains("<html"));
}

#[tokio::test]
async fn home_redirects_without_a_session_and_landing_redirects_with_one() {
    let server = TestServer::start().await;
    let client = no_redirect_client();
    let response = client.get(server.url("/home")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/");

    let ann = server.guest("ann").await;
    let cookie = ann.cookie.clone().unwrap();
    let response = client.get(server.url("/home")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let response = client.get(server.url("/")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/home");
}

#[tokio::test]
async fn static_files_are_served_with_their_content_type() {
    let server = TestServer::start().await;
    let client = no_redirect_client();
    for (path, want) in [("/style.css", "text/css"), ("/home.js", "javascript"), ("/api.js", "javascript")] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let ct = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains(want), "{path}: {ct}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path} is empty");
    }
    // Nothing outside the embedded front end is reachable.
    for path in ["/Cargo.toml", "/..%2FCargo.toml", "/%2E%2E/Cargo.toml", "/src/lib.rs", "/frontend/style.css"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(!body.contains("[package]") && !body.contains("pub mod"), "{path} leaked a file: {body}");
    }
}

/// Unknown paths answer 404 `not_found` (GET and POST), not 405.
#[tokio::test]
async fn unknown_paths_are_404() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    for path in ["/nope.js", "/a/b", "/Cargo.toml", "/api/nope", "/api/rooms//messages", "/api/rooms/general/messages/x"] {
        let (status, body) = ann.get(path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "GET {path}: {body}");
    }
    for path in ["/api/nope", "/api/rooms//messages"] {
        let (status, body) = ann.post(path, json!({"text": "x", "client_id": "c"})).await;
        assert_eq!(status, 404, "POST {path}: {body}");
    }
    // A known path with the wrong method is a 405.
    let response = ann.http.delete(ann.url("/api/me")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

/// A 405's `Allow` names the methods of that path, not of the whole API
/// (RFC 9110 §10.2.1; found by tests/openapi.rs: schemathesis compares it
/// with docs/openapi.yaml).
#[tokio::test]
async fn a_405_allows_the_methods_of_its_own_path() {
    use reqwest::Method;
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let cases = [
        (Method::GET, "/api/guest", "POST"),
        (Method::GET, "/api/logout", "POST"),
        (Method::DELETE, "/api/me", "GET"),
        (Method::PUT, "/api/rooms", "GET, POST"),
        (Method::DELETE, "/api/rooms/general/messages", "GET, POST"),
        (Method::GET, "/api/rooms/general/messages/1", "PATCH, DELETE"),
        (Method::POST, "/api/rooms/general/events", "GET"),
        (Method::GET, "/api/rooms/general/read", "PUT"),
        (Method::POST, "/api/subscriptions", "GET"),
        (Method::GET, "/api/subscriptions/general", "PUT, DELETE"),
        (Method::POST, "/", "GET"),
        (Method::OPTIONS, "/home", "GET"),
        (Method::PUT, "/ws", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::DELETE, "/metrics", "GET"),
        (Method::POST, "/style.css", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = ann.request(method.clone(), path).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let allowed = response.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{method} {path}");
    }
}

/// Many browsers asking for the same free name at once: exactly one gets
/// it, the others 409, and the winner's session works. (On several
/// threads, like the real server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guests_racing_for_one_name_get_it_once() {
    let server = TestServer::start().await;
    for round in 0..60 {
        let name = format!("racer{round}");
        let mut browsers: Vec<common::User> = (0..32).map(|_| server.anonymous()).collect();
        let attempts = browsers.iter_mut().map(|b| {
            let name = name.clone();
            async move { b.login_guest(&name).await }
        });
        let results = futures::future::join_all(attempts).await;
        let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
        let winners: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i] == 200).collect();
        assert_eq!(winners.len(), 1, "{name}: statuses {statuses:?}");
        assert!(statuses.iter().all(|&s| s == 200 || s == 409), "{name}: {statuses:?}");
        let (status, me) = browsers[winners[0]].get("/api/me").await;
        assert_eq!(status, 200, "{name}: the winner's session does not work: {me}");
        assert_eq!(me["username"], name.as_str());
    }
}

/// The same retry sent many times at once (two tabs, an impatient outbox):
/// stored once, every answer is that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_client_id_are_stored_once() {
    let server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    for round in 0..5 {
        let client_id = format!("same-{round}");
        let posts = (0..10).map(|_| ann.post_message("general", "once", &client_id));
        let results = futures::future::join_all(posts).await;
        let created = results.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(created, 1, "{client_id}: {results:?}");
        assert!(results.iter().all(|(s, _)| *s == 201 || *s == 200), "{client_id}: {results:?}");
        let first = &results[0].1;
        assert!(results.iter().all(|(_, m)| m == first), "{client_id}: different answers {results:?}");
    }
    assert_eq!(ids(&ann.messages("general", "").await), vec![1, 2, 3, 4, 5]);
}
