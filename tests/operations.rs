//! Operating a node: `GET /healthz` (200, or 503 while the store cannot
//! take writes, and back without a restart), sends refused with
//! `store_unavailable` meanwhile, and `GET /metrics` (what it counts, and
//! `--metrics on|off|ADDR`).
//!
//! The metrics recorder is the process's, shared by every server this file
//! starts, so counters are compared before and after (other tests may add
//! to them too). `chatroom_open_sockets` is compared exactly, so the tests
//! that open sockets take [`SOCKETS`] and stop their server (which waits
//! for its sockets to close) before they let go of it.

mod common;

use std::time::Duration;

use chatroom::config::{MetricsEndpoint, SendRate};
use common::faulty_store::FaultyNode;
use common::{Scrape, TIMEOUT, TestServer, scrape};
use serde_json::Value;

/// Held by every test that opens sockets (see the module doc).
static SOCKETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often a test looks again at something that changes on its own
/// (a cached health answer, a socket's task ending).
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------- healthz

#[tokio::test]
async fn healthz_answers_200_with_the_store_and_fanout_state_without_a_session() {
    let server = TestServer::start().await;
    let response = reqwest::get(server.url("/healthz")).await.expect("GET /healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["store"], "ok", "{body}");
    assert_eq!(body["fanout"], "local", "{body}");
    let node = body["node"].as_str().unwrap_or_else(|| panic!("node: {body}"));
    assert!(node.len() == 16 && node.bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
}

/// A load balancer names the node by its address: `/healthz` answers
/// whatever the Host, where every other route refuses a foreign one.
#[tokio::test]
async fn healthz_and_metrics_answer_any_host() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/metrics"] {
        let response = client.get(server.url(path)).header("host", "10.1.2.3:3000").send().await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = client.get(server.url("/api/me")).header("host", "10.1.2.3:3000").send().await.expect("GET");
    assert_eq!(response.status(), 403, "other routes keep the Host check");
}

#[tokio::test]
async fn a_store_that_is_down_makes_healthz_503_and_refuses_sends_until_it_returns() {
    let _sockets = SOCKETS.lock().await;
    let node = FaultyNode::start().await;
    let ann = node.endpoint().guest("ann").await;
    let mut socket = ann.ws_in("general").await;
    node.wait_for_health(200).await;
    let before = scrape(&node.url("/metrics")).await;

    node.store.set_down(true);
    let body = node.wait_for_health(503).await;
    assert_eq!(body["store"], "down", "{body}");
    assert_eq!(body["fanout"], "local", "the fan-out is fine: {body}");

    // A send is refused, never acknowledged.
    socket.send_message("general", "while down", "down-1").await;
    let refused = socket.expect_error("store_unavailable").await;
    assert_eq!(refused["client_id"], "down-1", "{refused}");
    assert_eq!(refused["room"], "general", "{refused}");
    socket.expect_silence().await;
    let (status, body) = ann.post_message("general", "while down", "down-2").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let after = scrape(&node.url("/metrics")).await;
    let refusals = "chatroom_sends_rejected_total{reason=\"store_unavailable\"}";
    assert!(after.value(refusals) >= before.value(refusals) + 2.0, "{}", after.0);

    // Back without a restart: 200 again, and sends are stored.
    node.store.set_down(false);
    let body = node.wait_for_health(200).await;
    assert_eq!(body["store"], "ok", "{body}");
    let echo = socket.send_and_echo("general", "back", "up-1").await;
    assert_eq!(echo["id"], 1, "nothing was stored while down: {echo}");
    assert_eq!(common::texts(&ann.messages("general", "").await), vec!["back"]);
    node.stop().await;
}

/// A store that does not answer at all (a database behind a dead
/// network) is down once its check takes over 3 s; meanwhile a flood of
/// health checks costs it one check, not one each.
#[tokio::test]
async fn a_store_that_does_not_answer_makes_healthz_503_and_checks_are_not_repeated_per_request() {
    let node = FaultyNode::start().await;
    node.wait_for_health(200).await;
    let checks_before = node.store.checks();
    let flooding = std::time::Instant::now();
    let flood = (0..50).map(|_| async { reqwest::get(node.url("/healthz")).await.expect("GET /healthz").status() });
    assert!(futures::future::join_all(flood).await.iter().all(|s| *s == 200));
    let checks = node.store.checks() - checks_before;
    // One check a second at most (a slow box may take more than one).
    let allowed = flooding.elapsed().as_secs() as usize + 1;
    assert!(checks <= allowed, "50 health checks asked the store {checks} times (at most {allowed})");

    node.store.set_silent(true);
    let started = std::time::Instant::now();
    let body = node.wait_for_health(503).await;
    assert_eq!(body["store"], "down", "{body}");
    assert!(started.elapsed() >= Duration::from_secs(2), "down only once the check timed out ({:?})", started.elapsed());
    node.store.set_silent(false);
    node.wait_for_health(200).await;
    node.stop().await;
}

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_count_stores_deliveries_sockets_and_refusals() {
    let _sockets = SOCKETS.lock().await;
    // Two sends in a burst, then the third is over the rate.
    let mut server = TestServer::start_with(|c| c.send_rate = Some(SendRate { per_second: 0.001, burst: 2 })).await;
    let metrics_url = server.url("/metrics");
    let response = reqwest::get(&metrics_url).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("a text header").to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let before = Scrape(response.text().await.expect("a body"));

    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut b) = server.guest_in("bob", "general").await;
    let open = scrape(&metrics_url).await;
    assert_eq!(open.value("chatroom_open_sockets"), before.value("chatroom_open_sockets") + 2.0, "{}", open.0);

    a.send_and_echo("general", "hello", "m-1").await;
    b.next_of_type("message").await;
    let sent = scrape(&metrics_url).await;
    for (series, at_least) in [
        ("chatroom_events_stored_total", 1.0),
        ("chatroom_deliveries_total", 2.0),
        ("chatroom_store_append_seconds_count", 1.0),
        ("chatroom_fanout_lag_seconds_count", 2.0),
    ] {
        assert!(sent.value(series) >= before.value(series) + at_least, "{series}:\n{}", sent.0);
    }
    assert!(sent.0.contains("# TYPE chatroom_store_append_seconds histogram"), "{}", sent.0);
    assert!(sent.0.contains("# TYPE chatroom_fanout_lag_seconds histogram"), "{}", sent.0);

    // Refusals, by reason.
    a.send_message("elsewhere", "not joined", "r-1").await;
    a.expect_error("not_joined").await;
    a.send_message("general", "   ", "r-2").await;
    a.expect_error("invalid_text").await;
    let (status, body) = ann.post_message("general", "", "r-3").await;
    assert_eq!((status, &body["error"]["code"]), (400, &Value::from("invalid_text")), "{body}");
    a.send_and_echo("general", "second", "m-2").await;
    a.send_message("general", "third", "r-4").await;
    a.expect_error("rate_limited").await;
    let refused = scrape(&metrics_url).await;
    for (reason, at_least) in [("not_joined", 1.0), ("invalid_text", 2.0), ("rate_limited", 1.0)] {
        let series = format!("chatroom_sends_rejected_total{{reason=\"{reason}\"}}");
        assert!(refused.value(&series) >= before.value(&series) + at_least, "{series}:\n{}", refused.0);
    }
    for class in ["2xx", "4xx"] {
        let series = format!("chatroom_http_responses_total{{class=\"{class}\"}}");
        assert!(refused.value(&series) > before.value(&series), "{series}:\n{}", refused.0);
    }

    // A socket that closes is no longer counted.
    let baseline = before.value("chatroom_open_sockets");
    a.close().await;
    wait_for_open_sockets(&metrics_url, baseline + 1.0).await;
    b.close().await;
    wait_for_open_sockets(&metrics_url, baseline).await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_off_is_404_and_healthz_stays() {
    let server = TestServer::start_with(|c| c.metrics = MetricsEndpoint::Off).await;
    assert_eq!(server.metrics_addr(), None);
    let (status, body) = server.anonymous().get("/metrics").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.anonymous().get("/healthz").await.0, 200);
}

#[tokio::test]
async fn metrics_on_an_address_of_their_own_are_served_only_there() {
    let server = TestServer::start_with(|c| c.metrics = MetricsEndpoint::Separate("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.metrics_addr().expect("the metrics listener's address");
    assert_ne!(metrics_addr, server.addr());

    let response = reqwest::get(format!("http://{metrics_addr}/metrics")).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(response.text().await.unwrap().contains("# TYPE chatroom_open_sockets gauge"));
    for path in ["/healthz", "/", "/api/me"] {
        let response = reqwest::get(format!("http://{metrics_addr}{path}")).await.expect("GET");
        assert_eq!(response.status(), 404, "{path} is not served on the metrics address");
    }

    assert_eq!(server.anonymous().get("/metrics").await.0, 404, "not on the main address");
    assert_eq!(server.anonymous().get("/healthz").await.0, 200);
}

// ---------------------------------------------------------------- helpers

/// Waits until `chatroom_open_sockets` is `want` (a socket's count goes
/// when its task ends, just after the close handshake).
async fn wait_for_open_sockets(metrics_url: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = scrape(metrics_url).await.value("chatroom_open_sockets");
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "chatroom_open_sockets stayed {now}, not {want}");
        tokio::time::sleep(POLL).await;
    }
}
