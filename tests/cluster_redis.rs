//! Several nodes as one chat, through Redis: two nodes in this process
//! over one shared in-memory store (what a shared database gives) and one
//! Redis prefix. Messages, presence, typing and session ends cross nodes;
//! a Redis outage loses no message (the nodes re-read the store) and live
//! delivery resumes when it is back. The fan-out itself is tested too:
//! status, reconnect, and a dead node's users leaving presence.
//!
//! Uses the machine's Redis under a random prefix, or a `redis-server` of
//! its own for outages; skipped loudly without them (fails under CI=true).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chatroom::fanout::{Fanout, FanoutStatus, RedisFanout, RedisTimings, RoomEvent};
use chatroom::model::RoomName;
use chatroom::protocol::ServerEvent;
use common::redis::{Cluster, PrivateRedis, RedisPrefix};
use common::{TIMEOUT, WsClient, id, ids};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// Reads message events until `count` distinct ids were seen; asserts ids
/// only grow (no repeat, one order) and returns them.
async fn collect_messages(socket: &mut WsClient, count: usize) -> Vec<u64> {
    let seen = ids(&socket.next_messages(count).await);
    assert!(seen.is_sorted_by(|a, b| a < b), "ids out of order or repeated: {seen:?}");
    seen
}

#[tokio::test]
async fn a_message_sent_on_one_node_reaches_the_other_with_the_same_seq() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).guest("ann").await;
    ann.create_room("lobby").await;
    let bob = cluster.node(1).guest("bob").await;
    let mut on_a = ann.ws_in("lobby").await;
    let mut on_b = bob.ws_in("lobby").await;

    let first = on_a.send_and_echo("lobby", "hello from A", "a1").await;
    let got = on_b.next_of_type("message").await;
    assert_eq!(got, first, "node B's client gets node A's message as stored");

    let second = on_b.send_and_echo("lobby", "hello from B", "b1").await;
    let got = on_a.next_of_type("message").await;
    assert_eq!(got, second);
    assert_eq!(id(&second), id(&first) + 1, "one seq order for the room");
    cluster.stop().await;
}

#[tokio::test]
async fn concurrent_senders_on_both_nodes_are_seen_by_everyone_once_in_one_order() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let owner = cluster.node(0).guest("owner").await;
    owner.create_room("busy").await;
    const SENDERS: usize = 4;
    const EACH: usize = 40;
    let mut sockets = Vec::new();
    for n in 0..SENDERS {
        let user = cluster.node(n % 2).guest(&format!("sender{n}")).await;
        sockets.push(user.ws_in("busy").await);
    }
    let mut tasks = Vec::new();
    for (n, mut socket) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                socket.send_message("busy", &format!("{n}-{i}"), &format!("c{n}-{i}")).await;
            }
            collect_messages(&mut socket, SENDERS * EACH).await
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.expect("a client task"));
    }
    let first = &orders[0];
    assert_eq!(first.len(), SENDERS * EACH);
    assert_eq!(first.iter().copied().collect::<BTreeSet<_>>().len(), SENDERS * EACH, "no duplicates");
    for order in &orders {
        assert_eq!(order, first, "every client, on either node, sees the same messages in the same order");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn presence_and_typing_span_nodes() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).guest("Ann").await;
    ann.create_room("lobby").await;
    let mut ann_on_a = ann.ws_in("lobby").await;
    let bob = cluster.node(1).guest("Bob").await;
    let mut bob_on_b = bob.ws().await;
    let joined = bob_on_b.join("lobby").await;
    assert_eq!(joined["online"], json!(["Ann", "Bob"]), "node B's list has node A's user: {joined}");

    let came = ann_on_a.next_matching("Bob online", |e| e["type"] == "presence").await;
    assert_eq!(came, json!({"type": "presence", "room": "lobby", "user": "Bob", "online": true}));

    ann_on_a.send_json(json!({"type": "typing", "room": "lobby"})).await;
    let typing = bob_on_b.next_matching("Ann typing", |e| e["type"] == "typing").await;
    assert_eq!(typing, json!({"type": "typing", "room": "lobby", "user": "Ann"}));

    // A second tab of Ann's on node B: closing the one on A is not leaving.
    let ann_on_b = ann.on(&cluster.node(1)).ws_in("lobby").await;
    ann_on_a.close().await;
    ann_on_b.close().await;
    let went = bob_on_b.next_matching("Ann offline", |e| e["type"] == "presence").await;
    assert_eq!(went, json!({"type": "presence", "room": "lobby", "user": "Ann", "online": false}));
    let rejoined = bob_on_b.join("lobby").await;
    assert_eq!(rejoined["online"], json!(["Bob"]));
    cluster.stop().await;
}

#[tokio::test]
async fn a_cookie_works_on_every_node_and_logging_out_on_one_closes_sockets_on_the_other() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).guest("ann").await;
    ann.create_room("lobby").await;
    let ann_at_b = ann.on(&cluster.node(1));
    let (status, me) = ann_at_b.get("/api/me").await;
    assert_eq!((status, &me["username"]), (200, &json!("ann")), "node A's cookie on node B: {me}");
    let mut socket_on_b = ann_at_b.ws_in("lobby").await;

    assert_eq!(ann.post("/api/logout", json!({})).await.0, 204);
    assert_eq!(socket_on_b.expect_close_code().await, 4401, "the session's socket on node B closes");
    assert_eq!(ann_at_b.get("/api/me").await.0, 401);
    cluster.stop().await;
}

#[tokio::test]
async fn a_redis_outage_loses_no_message_and_live_delivery_resumes() {
    let Some(mut redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::start(2, &redis.url(), "outage").await;
    let ann = cluster.node(0).guest("ann").await;
    ann.create_room("lobby").await;
    let bob = cluster.node(1).guest("bob").await;
    let mut on_a = ann.ws_in("lobby").await;
    let mut on_b = bob.ws_in("lobby").await;
    on_a.send_and_echo("lobby", "before", "a0").await;
    assert_eq!(collect_messages(&mut on_b, 1).await, vec![1]);

    redis.stop();
    // Both nodes keep acknowledging (each socket gets its own echo), and
    // each node's clients get the other node's messages from the store.
    send_in_turns(&mut on_a, &mut on_b, 1..=5).await;
    let during: Vec<u64> = (2..=11).collect();
    assert_eq!(collect_messages(&mut on_a, 10).await, during, "node A's client, Redis down");
    assert_eq!(collect_messages(&mut on_b, 10).await, during, "node B's client, Redis down");

    redis.restart();
    send_in_turns(&mut on_a, &mut on_b, 6..=8).await;
    let after: Vec<u64> = (12..=17).collect();
    assert_eq!(collect_messages(&mut on_a, 6).await, after, "node A's client, Redis back");
    assert_eq!(collect_messages(&mut on_b, 6).await, after, "node B's client, Redis back");
    on_a.expect_silence().await;
    on_b.expect_silence().await;
    assert_eq!(ann.all_messages("lobby").await.len(), 17);
    cluster.stop().await;
}

/// Node A's client sends `a{i}`, then node B's `b{i}`, for each `i`.
async fn send_in_turns(on_a: &mut WsClient, on_b: &mut WsClient, turns: std::ops::RangeInclusive<u32>) {
    for i in turns {
        on_a.send_message("lobby", &format!("a{i}"), &format!("a{i}")).await;
        on_b.send_message("lobby", &format!("b{i}"), &format!("b{i}")).await;
    }
}

fn short_timings() -> RedisTimings {
    RedisTimings {
        presence_ttl: Duration::from_millis(1500),
        heartbeat: Duration::from_millis(400),
        prune: Duration::from_millis(200),
        resync_while_down: Duration::from_millis(300),
        max_backoff: Duration::from_millis(500),
        ping: Duration::from_secs(1),
    }
}

async fn wait_for_status(changes: &mut watch::Receiver<FanoutStatus>, wanted: FanoutStatus) {
    tokio::time::timeout(TIMEOUT, changes.wait_for(|s| *s == wanted))
        .await
        .unwrap_or_else(|_| panic!("the fan-out did not become {wanted:?}"))
        .expect("the fan-out is running");
}

/// The next event that is not a resync marker, or a resync marker if `resync`.
async fn next_room_event(receiver: &mut broadcast::Receiver<Arc<RoomEvent>>, resync: bool) -> Arc<RoomEvent> {
    loop {
        let event = tokio::time::timeout(TIMEOUT, receiver.recv()).await.expect("a room event in time").expect("the channel is open");
        if event.resync == resync {
            return event;
        }
    }
}

fn stored_like(seq: u64) -> Arc<RoomEvent> {
    RoomEvent::new(&ServerEvent::Typing { room: "lobby".into(), user: format!("seq{seq}") }, Some(seq), None)
}

#[tokio::test]
async fn the_fan_out_reports_an_outage_keeps_local_delivery_and_recovers_by_itself() {
    let Some(mut redis) = PrivateRedis::start() else { return };
    let room = RoomName::parse("lobby").unwrap();
    let a = RedisFanout::connect_with(&redis.url(), "fo", 1, short_timings()).await.unwrap();
    let b = RedisFanout::connect_with(&redis.url(), "fo", 2, short_timings()).await.unwrap();
    assert_eq!((a.status(), b.status()), (FanoutStatus::Up, FanoutStatus::Up));
    let mut on_a = a.subscribe(&room);
    let mut on_b = b.subscribe(&room);
    // Once B follows the room in Redis, it says so with a resync marker.
    next_room_event(&mut on_b, true).await;
    a.publish(&room, &|| stored_like(1));
    assert_eq!(next_room_event(&mut on_b, false).await.seq, Some(1), "live through Redis");
    assert_eq!(next_room_event(&mut on_a, false).await.seq, Some(1), "and locally");

    let (mut a_status, mut b_status) = (a.status_changes(), b.status_changes());
    redis.stop();
    wait_for_status(&mut a_status, FanoutStatus::Down).await;
    wait_for_status(&mut b_status, FanoutStatus::Down).await;
    a.publish(&room, &|| stored_like(2));
    assert_eq!(next_room_event(&mut on_a, false).await.seq, Some(2), "a node's own events still reach its sockets");
    next_room_event(&mut on_b, true).await;
    next_room_event(&mut on_b, true).await; // and keep coming while down

    redis.restart();
    wait_for_status(&mut a_status, FanoutStatus::Up).await;
    wait_for_status(&mut b_status, FanoutStatus::Up).await;
    // B followed the room again; A resends a resync for what it could not send.
    a.publish(&room, &|| stored_like(3));
    assert_eq!(next_room_event(&mut on_b, false).await.seq, Some(3), "live delivery resumed");
}

/// Found by tests/fault_kill.rs: a node killed after storing an event and
/// before publishing it left the other nodes' sockets without that event
/// until the room's next one. Its expired presence is the sign that it
/// died: the node that prunes it sends the room a resync marker, so every
/// connection re-reads the room after its last seq.
#[tokio::test]
async fn a_dead_nodes_expired_presence_makes_every_node_reread_the_room() {
    let Some(redis) = RedisPrefix::new() else { return };
    let room = RoomName::parse("lobby").unwrap();
    let a = RedisFanout::connect_with(&redis.url, &redis.prefix, 1, short_timings()).await.unwrap();
    let b = RedisFanout::connect_with(&redis.url, &redis.prefix, 2, short_timings()).await.unwrap();
    let c = RedisFanout::connect_with(&redis.url, &redis.prefix, 3, short_timings()).await.unwrap();
    let (mut on_b, mut on_c) = (b.subscribe(&room), c.subscribe(&room));
    // Once a node follows the room in Redis, it says so with a resync marker.
    next_room_event(&mut on_b, true).await;
    next_room_event(&mut on_c, true).await;
    assert!(a.arrive(&room, "Ann").await);

    drop(a); // node A dies: maybe with an event stored and not published
    next_room_event(&mut on_b, true).await;
    next_room_event(&mut on_c, true).await;
}

#[tokio::test]
async fn a_dead_nodes_users_leave_presence_and_are_announced_offline() {
    let Some(redis) = RedisPrefix::new() else { return };
    let room = RoomName::parse("lobby").unwrap();
    let a = RedisFanout::connect_with(&redis.url, &redis.prefix, 1, short_timings()).await.unwrap();
    let b = RedisFanout::connect_with(&redis.url, &redis.prefix, 2, short_timings()).await.unwrap();
    let mut on_b = b.subscribe(&room);
    assert!(a.arrive(&room, "Ann").await, "Ann's first connection anywhere");
    assert!(!b.arrive(&room, "ann").await, "Ann is already online on node A");
    assert!(b.arrive(&room, "Bob").await);
    let online: BTreeSet<String> = b.online_across_nodes(&room).await.into_iter().collect();
    assert_eq!(online, BTreeSet::from(["Ann".to_string(), "Bob".to_string()]));
    assert!(!b.depart(&room, "ann").await, "Ann is still online on node A");

    drop(a); // node A dies: no departure, no more heartbeats
    let went = loop {
        let event = next_room_event(&mut on_b, false).await;
        if event.frame.contains("\"presence\"") {
            break event;
        }
    };
    let went: Value = serde_json::from_str(went.frame.as_str()).unwrap();
    assert_eq!(went, json!({"type": "presence", "room": "lobby", "user": "Ann", "online": false}));
    assert_eq!(b.online_across_nodes(&room).await, vec!["Bob".to_string()]);
    assert!(redis.keys().iter().all(|k| k.starts_with(&redis.prefix)));
}
