//! Mentions and notifications: `@name` notifies that user on every socket,
//! even one that never opened the room; `@here` everyone online in the
//! room but the author; a direct message its other member. Only people who
//! may read the room are notified. Mention counts come with the read state
//! (`GET /api/subscriptions`, `GET /api/dms`), survive a restart and clear
//! with the read marker. Across nodes through Redis.

mod common;

use common::redis::{Cluster, RedisPrefix};
use common::{TestServer, User, WsClient};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The next `mention` event, skipping the room's own events.
async fn next_mention(socket: &mut WsClient) -> Value {
    socket.next_matching("a mention", |e| e["type"] == "mention").await
}

fn summary(mention: &Value) -> (String, String, String, String) {
    let field = |name: &str| mention[name].as_str().unwrap_or_default().to_string();
    (field("room"), field("user"), field("text"), field("reason"))
}

#[tokio::test]
async fn a_mention_reaches_every_socket_of_its_user_even_outside_the_room() {
    let server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let bob = User::sign_up(&server, "Bob", PASSWORD).await;
    ann.create_room("random").await;
    let mut phone = bob.ws().await;
    let mut laptop = bob.ws_in("general").await;
    let sent = ann.send_http("random", "lunch, @bob?", "m1").await;
    for socket in [&mut phone, &mut laptop] {
        let mention = next_mention(socket).await;
        assert_eq!(summary(&mention), ("random".into(), "ann".into(), "lunch, @bob?".into(), "mention".into()));
        assert_eq!(mention["id"], sent["id"]);
    }
    // The author is never notified of her own mention.
    let mut ann_socket = ann.ws().await;
    ann.send_http("random", "note to self @ann", "m2").await;
    ann.send_http("random", "@bob again", "m3").await;
    assert_eq!(next_mention(&mut phone).await["text"], "@bob again");
    bob.send_http("general", "@ann ping", "m4").await;
    assert_eq!(next_mention(&mut ann_socket).await["text"], "@ann ping", "her first mention is bob's, not her own");
}

#[tokio::test]
async fn only_people_who_may_read_the_room_are_notified() {
    let server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let carol = User::sign_up(&server, "carol", PASSWORD).await;
    let (status, _) = ann.post("/api/rooms", json!({ "name": "team", "private": true })).await;
    assert_eq!(status, 201);
    let mut carol_socket = carol.ws().await;
    ann.send_http("team", "secret plans, @carol", "t1").await;
    ann.send_http("general", "hello @carol", "g1").await;
    let first = next_mention(&mut carol_socket).await;
    assert_eq!(summary(&first).0, "general", "not told of a room she may not read: {first}");
}

#[tokio::test]
async fn here_notifies_those_online_in_the_room_and_a_dm_its_other_member() {
    let server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let bob = User::sign_up(&server, "bob", PASSWORD).await;
    let carol = User::sign_up(&server, "carol", PASSWORD).await;
    ann.create_room("ops").await;
    let mut bob_socket = bob.ws_in("ops").await;
    let mut carol_socket = carol.ws().await;
    let mut ann_socket = ann.ws_in("ops").await;
    ann.send_http("ops", "@here deploy in 5", "h1").await;
    assert_eq!(summary(&next_mention(&mut bob_socket).await).3, "here");

    let (_, dm) = ann.post("/api/dms", json!({ "user": "carol" })).await;
    let dm = dm["name"].as_str().unwrap().to_string();
    ann.send_http(&dm, "just you and me", "d1").await;
    let mention = next_mention(&mut carol_socket).await;
    assert_eq!(summary(&mention), (dm.clone(), "ann".into(), "just you and me".into(), "dm".into()), "carol was not online in ops: her first is the DM");
    bob.send_http("ops", "@ann done", "b1").await;
    assert_eq!(summary(&next_mention(&mut ann_socket).await).2, "@ann done", "ann got no @here of her own");
}

#[tokio::test]
async fn mention_counts_come_with_the_read_state_survive_a_restart_and_clear_when_read() {
    let mut server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let bob = User::sign_up(&server, "bob", PASSWORD).await;
    ann.send_http("general", "morning all", "c1").await;
    ann.send_http("general", "@bob can you look?", "c2").await;
    let last = ann.send_http("general", "(@bob) thanks!", "c3").await;
    let state = |rooms: &Value| {
        let general = rooms.as_array().unwrap().iter().find(|r| r["name"] == "general").cloned().unwrap();
        (general["unread"].as_u64(), general["mentions"].as_u64())
    };
    let (_, rooms) = bob.get("/api/subscriptions").await;
    assert_eq!(state(&rooms), (Some(3), Some(2)), "{rooms}");
    server.restart().await;
    let bob = bob.at(&server);
    let (_, rooms) = bob.get("/api/subscriptions").await;
    assert_eq!(state(&rooms), (Some(3), Some(2)), "after a restart: {rooms}");
    bob.put("/api/rooms/general/read", json!({ "id": last["id"] })).await;
    let (_, rooms) = bob.get("/api/subscriptions").await;
    assert_eq!(state(&rooms), (Some(0), Some(0)));

    let ann = ann.at(&server);
    let (_, dm) = ann.post("/api/dms", json!({ "user": "bob" })).await;
    ann.send_http(dm["name"].as_str().unwrap(), "@bob in private", "c4").await;
    let (_, dms) = bob.get("/api/dms").await;
    assert_eq!((dms[0]["unread"].as_u64(), dms[0]["mentions"].as_u64()), (Some(1), Some(1)), "{dms}");
}

#[tokio::test]
async fn a_guest_is_notified_by_name() {
    let server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    ann.create_room("lounge").await;
    let mut bob_socket = bob.ws().await;
    ann.send_http("lounge", "hey @bob", "g1").await;
    assert_eq!(summary(&next_mention(&mut bob_socket).await), ("lounge".into(), "ann".into(), "hey @bob".into(), "mention".into()));
}

#[tokio::test]
async fn a_mention_crosses_nodes() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).anonymous().signed_up("ann", PASSWORD).await;
    let bob = cluster.node(1).anonymous().signed_up("bob", PASSWORD).await;
    let mut bob_socket = bob.ws().await;
    ann.send_http("general", "@bob from the other node", "x1").await;
    assert_eq!(summary(&next_mention(&mut bob_socket).await).2, "@bob from the other node");
    cluster.stop().await;
}
