//! Private rooms, their members and direct messages, on both stores and
//! across two nodes: only members find, read, join, post, edit, delete,
//! subscribe or mark read; everyone else gets exactly what a room that does
//! not exist gets (`room_not_found`, 404). A removed member's open sockets
//! stop receiving the room at once; membership changes are room events.
//!
//! The PostgreSQL cases use a database of their own (skipped loudly
//! without a server, mandatory under CI=true); the two-node case uses Redis.

mod common;

use common::redis::{Cluster, RedisPrefix};
use common::{TestServer, User, WsClient};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// ann's private room "team" with one message, and carol, who is not in it.
async fn team_and_outsider(server: &TestServer) -> (User, User, u64) {
    let ann = User::sign_up(server, "ann", PASSWORD).await;
    let (status, body) = ann.post("/api/rooms", json!({ "name": "team", "private": true })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["name"].as_str(), body["private"].as_bool()), (Some("team"), Some(true)), "{body}");
    let posted = ann.send_http("team", "the plan", "p1").await;
    let carol = User::sign_up(server, "carol", PASSWORD).await;
    (ann, carol, common::id(&posted))
}

/// What a request answers: its status and error code.
fn refusal((status, body): (u16, Value)) -> (u16, String) {
    (status, body["error"]["code"].as_str().unwrap_or("").to_string())
}

/// Every HTTP action a non-member might try on `room`.
async fn http_actions(user: &User, room: &str, id: u64) -> Vec<(&'static str, (u16, String))> {
    vec![
        ("history", refusal(user.get(&format!("/api/rooms/{room}/messages")).await)),
        ("events", refusal(user.get(&format!("/api/rooms/{room}/events")).await)),
        ("members", refusal(user.get(&format!("/api/rooms/{room}/members")).await)),
        ("send", refusal(user.post_message(room, "let me in", "x1").await)),
        (
            "edit",
            refusal({
                let response = user.request(reqwest::Method::PATCH, &format!("/api/rooms/{room}/messages/{id}")).json(&json!({"text": "mine now"}));
                common::read_reply(response.send().await.expect("PATCH")).await
            }),
        ),
        ("delete", refusal(user.delete(&format!("/api/rooms/{room}/messages/{id}")).await)),
        ("read", refusal(user.put(&format!("/api/rooms/{room}/read"), json!({ "id": id })).await)),
        ("subscribe", refusal(user.put(&format!("/api/subscriptions/{room}"), json!({})).await)),
        ("add self", refusal(user.put(&format!("/api/rooms/{room}/members/{}", user.name), json!({})).await)),
    ]
}

/// A non-member gets, for every action, exactly what a missing room gets.
async fn a_non_member_is_told_the_room_does_not_exist(server: &TestServer) {
    let (ann, carol, id) = team_and_outsider(server).await;
    let on_team = http_actions(&carol, "team", id).await;
    let on_nothing = http_actions(&carol, "nosuchroom", id).await;
    for ((action, got), (_, missing)) in on_team.iter().zip(&on_nothing) {
        assert_eq!(got, &(404, "room_not_found".to_string()), "{action} as a non-member");
        assert_eq!(got, missing, "{action}: a private room answers like a missing one");
    }
    let (_, listed) = carol.get("/api/rooms?q=team").await;
    assert_eq!(listed, json!([]), "a non-member does not find it");
    let (_, listed) = ann.get("/api/rooms?q=team").await;
    assert_eq!(listed[0]["name"], "team", "its member does: {listed}");

    let mut socket = carol.ws().await;
    socket.send_json(json!({ "type": "join", "room": "team" })).await;
    assert_eq!(socket.expect_error("room_not_found").await["room"], "team");
    socket.send_message("team", "hi", "w1").await;
    socket.expect_error("not_joined").await;
    let guest = server.guest("gus").await;
    assert_eq!(refusal(guest.get("/api/rooms/team/messages").await), (404, "room_not_found".into()), "guests are never members");
    assert_eq!(ann.all_messages("team").await.len(), 1, "nothing was stored by anyone else");
}

#[tokio::test]
async fn a_non_member_is_told_the_room_does_not_exist_on_files() {
    a_non_member_is_told_the_room_does_not_exist(&TestServer::start_unthrottled().await).await;
}

#[tokio::test]
async fn a_non_member_is_told_the_room_does_not_exist_on_postgres() {
    let Some((server, _database)) = TestServer::on_postgres().await else { return };
    a_non_member_is_told_the_room_does_not_exist(&server).await;
}

/// The creator adds and removes members; no one else may; member changes
/// are room events in the log.
async fn the_creator_alone_changes_members(server: &TestServer) {
    let (ann, carol, _) = team_and_outsider(server).await;
    let bob = User::sign_up(server, "Bob", PASSWORD).await;
    let (status, body) = ann.put("/api/rooms/team/members/BOB", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], json!(["ann", "Bob"]), "names as their owners spell them");
    assert_eq!(bob.all_messages("team").await.len(), 1, "a member reads the history");
    assert_eq!(refusal(bob.put("/api/rooms/team/members/carol", json!({})).await), (403, "forbidden".into()), "only the creator adds");
    assert_eq!(refusal(ann.put("/api/rooms/team/members/nobody", json!({})).await), (404, "user_not_found".into()));
    assert_eq!(refusal(ann.delete("/api/rooms/team/members/ann").await), (403, "forbidden".into()), "the creator stays");
    assert_eq!(refusal(ann.put("/api/rooms/general/members/carol", json!({})).await), (409, "no_members".into()), "a public room has no members");
    assert_eq!(refusal(ann.get("/api/rooms/general/members").await), (409, "no_members".into()));

    let (status, body) = ann.delete("/api/rooms/team/members/bob").await;
    assert_eq!((status, &body["members"]), (200, &json!(["ann"])), "{body}");
    assert_eq!(refusal(bob.get("/api/rooms/team/messages").await), (404, "room_not_found".into()), "removed: gone");
    let events = ann.all_events("team").await;
    let members: Vec<(String, bool)> = events
        .iter()
        .filter(|e| e["type"] == "member")
        .map(|e| (e["user"].as_str().unwrap().to_string(), e["added"].as_bool().unwrap()))
        .collect();
    assert_eq!(members, [("ann".into(), true), ("Bob".into(), true), ("Bob".into(), false)], "{events:?}");
    assert!(events.iter().all(|e| e["type"] != "member" || e["by"] == "ann"));
    drop(carol);
}

#[tokio::test]
async fn the_creator_alone_changes_members_on_files() {
    the_creator_alone_changes_members(&TestServer::start_unthrottled().await).await;
}

#[tokio::test]
async fn the_creator_alone_changes_members_on_postgres() {
    let Some((server, _database)) = TestServer::on_postgres().await else { return };
    the_creator_alone_changes_members(&server).await;
}

/// bob, joined to "team" and "general" on `bob_socket`, is removed by ann
/// (on `ann_at`): his socket gets the member event, then `left`, and
/// nothing of "team" after it, while "general" goes on.
async fn removal_stops_delivery(ann: &User, bob_socket: &mut WsClient) {
    let (status, body) = ann.delete("/api/rooms/team/members/bob").await;
    assert_eq!(status, 200, "{body}");
    let member = bob_socket.next_of_type("member").await;
    assert_eq!((member["user"].as_str(), member["added"].as_bool(), member["room"].as_str()), (Some("bob"), Some(false), Some("team")));
    assert_eq!(bob_socket.next_of_type("left").await["room"], "team");
    ann.send_http("team", "after bob left", "after-1").await;
    ann.send_http("general", "in general", "after-2").await;
    let next = bob_socket.next_of_type("message").await;
    assert_eq!((next["room"].as_str(), next["text"].as_str()), (Some("general"), Some("in general")), "nothing of team after the removal");
    bob_socket.send_json(json!({ "type": "join", "room": "team" })).await;
    bob_socket.expect_error("room_not_found").await;
}

async fn a_removed_members_socket_stops_receiving_at_once(server: &TestServer) {
    let (ann, _carol, _) = team_and_outsider(server).await;
    let bob = User::sign_up(server, "bob", PASSWORD).await;
    ann.put("/api/rooms/team/members/bob", json!({})).await;
    let mut socket = bob.ws_in("team").await;
    socket.join("general").await;
    removal_stops_delivery(&ann, &mut socket).await;
    let (_, subscriptions) = bob.get("/api/subscriptions").await;
    assert!(subscriptions.as_array().unwrap().iter().all(|r| r["name"] != "team"), "unsubscribed: {subscriptions}");
}

#[tokio::test]
async fn a_removed_members_socket_stops_receiving_at_once_on_files() {
    a_removed_members_socket_stops_receiving_at_once(&TestServer::start_unthrottled().await).await;
}

#[tokio::test]
async fn a_removed_members_socket_stops_receiving_at_once_on_postgres() {
    let Some((server, _database)) = TestServer::on_postgres().await else { return };
    a_removed_members_socket_stops_receiving_at_once(&server).await;
}

#[tokio::test]
async fn a_removal_on_one_node_stops_delivery_on_the_other() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).anonymous().signed_up("ann", PASSWORD).await;
    let (status, _) = ann.post("/api/rooms", json!({ "name": "team", "private": true })).await;
    assert_eq!(status, 201);
    let bob = cluster.node(1).anonymous().signed_up("bob", PASSWORD).await;
    let carol = cluster.node(1).anonymous().signed_up("carol", PASSWORD).await;
    ann.put("/api/rooms/team/members/bob", json!({})).await;
    let mut bob_socket = bob.ws_in("team").await;
    bob_socket.join("general").await;
    let sent = ann.send_http("team", "across nodes", "x1").await;
    assert_eq!(bob_socket.next_of_type("message").await["id"], sent["id"], "a member on the other node gets it");
    assert_eq!(refusal(carol.get("/api/rooms/team/messages").await), (404, "room_not_found".into()), "a non-member there does not");
    removal_stops_delivery(&ann, &mut bob_socket).await;
    cluster.stop().await;
}

/// A DM: the same room whoever opens it, seen by its two members only,
/// listed apart with unread counts.
async fn a_dm_is_one_room_of_two(server: &TestServer) {
    let ann = User::sign_up(server, "Ann", PASSWORD).await;
    let bob = User::sign_up(server, "bob", PASSWORD).await;
    let carol = User::sign_up(server, "carol", PASSWORD).await;
    let (status, opened) = ann.post("/api/dms", json!({ "user": "BOB" })).await;
    assert_eq!(status, 200, "{opened}");
    let name = opened["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("dm-"), "{opened}");
    assert_eq!((opened["private"].as_bool(), opened["dm"].as_bool(), opened["with"].as_str()), (Some(true), Some(true), Some("bob")));
    let (_, again) = bob.post("/api/dms", json!({ "user": "ann" })).await;
    assert_eq!(again["name"], name.as_str(), "the same room from the other side");
    assert_eq!(again["with"], "Ann");

    let mut bob_socket = bob.ws_in(&name).await;
    ann.send_http(&name, "psst", "d1").await;
    assert_eq!(bob_socket.next_of_type("message").await["text"], "psst");
    let (_, dms) = bob.get("/api/dms").await;
    assert_eq!(dms.as_array().map(Vec::len), Some(1), "{dms}");
    assert_eq!((dms[0]["name"].as_str(), dms[0]["with"].as_str(), dms[0]["unread"].as_u64()), (Some(name.as_str()), Some("Ann"), Some(1)));
    let (_, rooms) = bob.get("/api/rooms").await;
    assert!(rooms.as_array().unwrap().iter().all(|r| r["name"] != name.as_str()), "DMs are listed apart: {rooms}");

    assert_eq!(refusal(carol.get(&format!("/api/rooms/{name}/messages")).await), (404, "room_not_found".into()));
    assert_eq!(refusal(ann.put(&format!("/api/rooms/{name}/members/carol"), json!({})).await), (409, "no_members".into()), "a DM's members never change");
    assert_eq!(refusal(ann.post("/api/dms", json!({ "user": "nobody" })).await), (404, "user_not_found".into()));
    assert_eq!(refusal(ann.post("/api/dms", json!({ "user": "ann" })).await).0, 400, "not with oneself");
    let guest = server.guest("gus").await;
    assert_eq!(refusal(guest.post("/api/dms", json!({ "user": "ann" })).await), (403, "forbidden".into()));
    assert_eq!(refusal(ann.post("/api/rooms", json!({ "name": "dm-mine" })).await), (400, "invalid_room_name".into()), "the prefix is kept");
}

#[tokio::test]
async fn a_dm_is_one_room_of_two_on_files() {
    a_dm_is_one_room_of_two(&TestServer::start_unthrottled().await).await;
}

#[tokio::test]
async fn a_dm_is_one_room_of_two_on_postgres() {
    let Some((server, _database)) = TestServer::on_postgres().await else { return };
    a_dm_is_one_room_of_two(&server).await;
}

#[tokio::test]
async fn private_rooms_and_members_survive_a_restart() {
    let mut server = TestServer::start_unthrottled().await;
    let (ann, carol, _) = team_and_outsider(&server).await;
    let bob = User::sign_up(&server, "bob", PASSWORD).await;
    ann.put("/api/rooms/team/members/bob", json!({})).await;
    server.restart().await;
    let bob = bob.at(&server);
    assert_eq!(bob.all_messages("team").await.len(), 1, "bob is still a member");
    let carol = carol.at(&server);
    assert_eq!(refusal(carol.get("/api/rooms/team/messages").await), (404, "room_not_found".into()), "carol is still not");
}
