//! Several real `chatroom` processes over one PostgreSQL database and one
//! Redis prefix (or a private Redis), talked to as a load balancer's
//! clients would: each test makes its own database and prefix and drops
//! them after. Without PostgreSQL or Redis the suite is skipped loudly;
//! under `CI=true` it fails instead.
//!
//! What it shows: messages cross nodes once and in one order; presence
//! spans nodes; a log-out on one node closes the session's sockets on
//! another; a node killed with SIGKILL loses nothing acknowledged (its
//! clients resume on another node); a Redis restart makes nobody miss a
//! message; PostgreSQL taken away (through a proxy the test owns) gives
//! clear refusals, then recovery without restarting the nodes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::backends::Backends;
use common::pg::{self, TestDatabase};
use common::process::ServerProcess;
use common::proxy::TcpProxy;
use common::redis::PrivateRedis;
use common::{TIMEOUT, User, WsClient, connect_ws, ids};
use serde_json::{Value, json};

/// A guest on `node` in `room` (created by the first one to ask).
async fn guest_in(node: &ServerProcess, name: &str, room: &str) -> (User, WsClient) {
    let user = node.endpoint().guest(name).await;
    let (status, body) = user.post("/api/rooms", json!({ "name": room })).await;
    assert!(status == 201 || status == 409, "create {room}: {status} {body}");
    let mut ws = user.ws().await;
    ws.join(room).await;
    (user, ws)
}

fn client_ids(messages: &[Value]) -> BTreeSet<String> {
    messages.iter().map(|m| m["client_id"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_cross_three_nodes_once_and_in_one_order() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let nodes = backends.start_nodes(3);
    const EACH: usize = 40;
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        clients.push(guest_in(node, &format!("user{n}"), "team").await);
    }
    // Everyone sends at once, without waiting for echoes.
    for (n, (_, ws)) in clients.iter_mut().enumerate() {
        for i in 0..EACH {
            ws.send_message("team", &format!("{n}:{i}"), &format!("c{n}-{i}")).await;
        }
    }
    let total = EACH * clients.len();
    let mut orders = Vec::new();
    for (_, ws) in &mut clients {
        let seen = ws.next_messages(total).await;
        assert_eq!(client_ids(&seen).len(), total, "every message once");
        orders.push(ids(&seen));
    }
    let expected: Vec<u64> = (1..=total as u64).collect();
    for order in &orders {
        assert_eq!(order, &expected, "one gap-free order for everyone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_and_typing_span_nodes() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let nodes = backends.start_nodes(2);
    let (_ann, mut ann_ws) = guest_in(&nodes[0], "ann", "team").await;
    let bob = nodes[1].endpoint().guest("bob").await;
    let mut bob_ws = bob.ws().await;
    let joined = bob_ws.join("team").await;
    let online: Vec<&str> = joined["online"].as_array().expect("online").iter().filter_map(Value::as_str).collect();
    assert!(online.contains(&"ann"), "bob on node 2 sees ann of node 1 online: {joined}");
    let seen = ann_ws.next_matching("bob online", |e| e["type"] == "presence" && e["user"] == "bob").await;
    assert_eq!(seen["online"], true);

    bob_ws.send_json(json!({ "type": "typing", "room": "team" })).await;
    ann_ws.next_matching("bob typing", |e| e["type"] == "typing" && e["user"] == "bob").await;

    bob_ws.close().await;
    let gone = ann_ws.next_matching("bob offline", |e| e["type"] == "presence" && e["user"] == "bob").await;
    assert_eq!(gone["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cookie_works_on_every_node_and_logout_closes_sockets_on_all() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let nodes = backends.start_nodes(3);
    let ann = nodes[0].endpoint().guest("ann").await;
    let cookie = ann.cookie.clone().expect("a session cookie");
    let (status, me) = nodes[1].endpoint().get_with_cookie("/api/me", &cookie).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("ann")), "node 2 knows node 1's cookie");
    let mut far = connect_ws(&format!("ws://{}/ws", nodes[2].addr), Some(&cookie), None).await.expect("a socket on node 3");
    far.join("general").await;

    let (status, _) = ann.post("/api/logout", json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(far.expect_close_code().await, 4401, "the socket on node 3 closes");
    let (status, _) = nodes[1].endpoint().get_with_cookie("/api/me", &cookie).await;
    assert_eq!(status, 401, "the cookie is dead on node 2 too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_traffic_loses_nothing_acknowledged() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let mut nodes = backends.start_nodes(3);
    let (writer, mut writer_ws) = guest_in(&nodes[0], "writer", "team").await;
    let (_reader, mut reader_ws) = guest_in(&nodes[1], "reader", "team").await;

    // 30 acknowledged one by one, then 10 in flight when the node dies.
    let mut last_acked = 0;
    for i in 0..30 {
        last_acked = writer_ws.send_and_echo("team", &format!("m{i}"), &format!("k{i}")).await["id"].as_u64().unwrap();
    }
    for i in 30..40 {
        writer_ws.send_message("team", &format!("m{i}"), &format!("k{i}")).await;
    }
    nodes[0].kill();

    // The writer's browser reconnects through the balancer to node 2,
    // resumes after what it saw and resends what was not acknowledged.
    let writer = writer.on(&nodes[1].endpoint());
    let mut writer_ws = writer.ws().await;
    writer_ws.join_after("team", last_acked).await;
    for i in 30..40 {
        writer_ws.send_message("team", &format!("m{i}"), &format!("k{i}")).await;
    }
    let mut acked = BTreeSet::new();
    while acked.len() < 10 {
        let echo = writer_ws.next_of_type("message").await;
        if let Some(k) = echo["client_id"].as_str().filter(|k| k[1..].parse::<u32>().is_ok_and(|i| i >= 30)) {
            acked.insert(k.to_string());
        }
    }

    let history = nodes[2].endpoint().guest("auditor").await.all_messages("team").await;
    let expected: BTreeSet<String> = (0..40).map(|i| format!("k{i}")).collect();
    assert_eq!(client_ids(&history), expected, "every message once");
    assert_eq!(history.len(), 40, "no message twice");
    assert_eq!(ids(&history), (1..=40).collect::<Vec<u64>>(), "gap-free seqs");

    let read = reader_ws.next_messages(40).await;
    assert_eq!(ids(&read), (1..=40).collect::<Vec<u64>>(), "the reader on a live node saw each once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_makes_nobody_miss_a_message() {
    let Some(database) = TestDatabase::create().await else { return };
    let Some(mut redis) = PrivateRedis::start() else { return };
    let backends = Backends {
        database_url: database.url().to_string(),
        redis_url: redis.url(),
        prefix: "chatroom".into(),
        database,
    };
    let nodes = backends.start_nodes(2);
    let (_ann, mut ann_ws) = guest_in(&nodes[0], "ann", "team").await;
    let (_bob, mut bob_ws) = guest_in(&nodes[1], "bob", "team").await;
    ann_ws.send_and_echo("team", "before", "b0").await;
    assert_eq!(ids(&bob_ws.next_messages(1).await), vec![1]);

    redis.stop();
    for i in 0..10 {
        ann_ws.send_and_echo("team", &format!("during {i}"), &format!("d{i}")).await;
    }
    let during = bob_ws.next_messages(10).await;
    assert_eq!(ids(&during), (2..=11).collect::<Vec<u64>>(), "read from the store while Redis is away");
    let (status, health) = nodes[1].endpoint().anonymous().get("/healthz").await;
    assert_eq!((status, health["fanout"].as_str()), (200, Some("down")), "{health}");

    redis.restart();
    for i in 0..10 {
        ann_ws.send_and_echo("team", &format!("after {i}"), &format!("a{i}")).await;
    }
    let after = bob_ws.next_messages(10).await;
    assert_eq!(ids(&after), (12..=21).collect::<Vec<u64>>(), "nothing missed, nothing twice");
    bob_ws.expect_silence().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_taken_away_gives_clear_refusals_then_recovery() {
    let Some((mut backends, _prefix)) = Backends::shared().await else { return };
    let proxy = TcpProxy::start(pg::SERVER.parse().unwrap()).await;
    backends.database_url = backends.database.url_via(proxy.addr);
    let nodes = backends.start_nodes(2);
    let (ann, mut ann_ws) = guest_in(&nodes[0], "ann", "team").await;
    ann_ws.send_and_echo("team", "before", "p0").await;

    proxy.stall();
    let asked = Instant::now();
    ann_ws.send_message("team", "lost?", "p1").await;
    let refusal = ann_ws.next_of_type("error").await;
    let waited = asked.elapsed();
    assert_eq!(refusal["code"], "store_unavailable", "{refusal}");
    assert_eq!(refusal["client_id"], "p1", "the refusal names the send");
    eprintln!("store_unavailable after {waited:?} (promised within 5 s)");
    assert!(waited < Duration::from_secs(6), "refused after {waited:?}");
    let polling = Instant::now();
    nodes[1].endpoint().wait_for_health(503, TIMEOUT * 2).await;
    eprintln!("/healthz 503 after {:?} (promised within 10 s)", polling.elapsed());
    let (status, _) = nodes[0].endpoint().anonymous().get("/").await;
    assert_eq!(status, 200, "pages still load");

    proxy.restore();
    nodes[0].endpoint().wait_for_health(200, TIMEOUT * 2).await;
    let again = ann_ws.send_and_echo("team", "lost?", "p1").await;
    assert_eq!(again["id"], 2, "the refused send was not stored; the retry is");
    let history = ann.all_messages("team").await;
    assert_eq!(client_ids(&history), ["p0", "p1"].iter().map(|s| s.to_string()).collect());
}
