//! Threads and reactions end to end, on a real server with real clients,
//! on both stores (JSON-lines files and PostgreSQL) and across two nodes:
//! replies over HTTP and the socket, `reply_count`/`last_reply_at` in
//! history and after a restart, thread pages, replies to what cannot be
//! replied to, reactions toggled by several users with `me` per reader,
//! `reacted` frames on other sockets and nodes, refusals, and the
//! `mention` user event a thread's participants get.
//!
//! The PostgreSQL cases use a database of their own (skipped loudly
//! without a server, mandatory under CI=true); the two-node case uses Redis.

mod common;

use common::redis::{Cluster, RedisPrefix};
use common::{TestServer, User, id, ids, without_type};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// `POST …/messages` with `thread`.
async fn reply_http(user: &User, room: &str, text: &str, client_id: &str, thread: u64) -> (u16, Value) {
    user.post(&format!("/api/rooms/{room}/messages"), json!({ "text": text, "client_id": client_id, "thread": thread })).await
}

/// `PUT …/messages/{id}/reactions`.
async fn react_http(user: &User, room: &str, message: u64, emoji: &str) -> (u16, Value) {
    user.put(&format!("/api/rooms/{room}/messages/{message}/reactions"), json!({ "emoji": emoji })).await
}

/// The message with this id in `messages`.
fn with_id(messages: &[Value], wanted: u64) -> Value {
    messages.iter().find(|m| id(m) == wanted).cloned().unwrap_or_else(|| panic!("no message {wanted} in {messages:?}"))
}

/// `(status, code)` of an error answer.
fn refusal((status, body): (u16, Value)) -> (u16, String) {
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

// ---- replies and thread pages ----------------------------------------------

async fn replies_are_counted_paged_and_kept_across_a_restart(server: &mut TestServer) {
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    let mut bob_socket = bob.ws_in("general").await;
    let parent = ann.send_http("general", "what shall we build?", "a1").await;
    assert!(parent.get("reply_count").is_none() && parent.get("thread").is_none(), "{parent}");
    bob_socket.next_of_type("message").await;

    // Over HTTP and over the socket: a reply is a message with `thread`.
    let (status, first) = reply_http(&ann, "general", "a chat server", "a2", id(&parent)).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["thread"], id(&parent));
    assert_eq!(without_type(&bob_socket.next_of_type("message").await), first, "a reply reaches the room live");
    bob_socket.send_json(json!({ "type": "send", "room": "general", "text": "in rust", "client_id": "b1", "thread": id(&parent) })).await;
    let second = bob_socket.next_of_type("message").await;
    assert_eq!((second["thread"].as_u64(), second["client_id"].as_str()), (Some(id(&parent)), Some("b1")), "{second}");
    let mut later = Vec::new();
    for n in 3..=5 {
        later.push(reply_http(&bob, "general", &format!("reply {n}"), &format!("b{n}"), id(&parent)).await.1);
    }
    let last = later.pop().expect("three replies");
    ann.send_http("general", "not in the thread", "a3").await;

    // History: the parent carries the count and the latest reply's time.
    let history = ann.messages("general", "").await;
    let shown = with_id(&history, id(&parent));
    assert_eq!(shown["reply_count"], 5, "{shown}");
    assert_eq!(shown["last_reply_at"], last["ts"], "{shown}");
    assert_eq!(with_id(&history, id(&first))["thread"], id(&parent), "replies are in the room's history too");

    // A thread page, and the next.
    let (status, page) = ann.get(&format!("/api/rooms/general/threads/{}?limit=2", id(&parent))).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["parent"], shown);
    assert_eq!(ids(page["replies"].as_array().unwrap()), [id(&first), id(&second)]);
    assert_eq!(page["has_more"], true);
    let (_, rest) = ann.get(&format!("/api/rooms/general/threads/{}?after={}", id(&parent), id(&second))).await;
    assert_eq!(rest["replies"].as_array().unwrap().len(), 3, "{rest}");
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["replies"][2], last);

    // A retried reply answers the stored copy; nothing new is counted.
    let (status, again) = reply_http(&ann, "general", "a chat server", "a2", id(&parent)).await;
    assert_eq!((status, &again), (200, &first));

    // After a restart: the same counts, the same thread.
    let before = ann.all_messages("general").await;
    server.restart().await;
    let ann = ann.back_at(server, "ann").await;
    assert_eq!(ann.all_messages("general").await, before);
    let (_, after_restart) = ann.get(&format!("/api/rooms/general/threads/{}?limit=2", id(&parent))).await;
    assert_eq!(after_restart, page);
    let (status, sixth) = reply_http(&ann, "general", "one more", "a6", id(&parent)).await;
    assert_eq!(status, 201, "{sixth}");
    assert_eq!(with_id(&ann.messages("general", "").await, id(&parent))["reply_count"], 6);
}

#[tokio::test]
async fn replies_are_counted_paged_and_kept_across_a_restart_on_files() {
    let mut server = TestServer::start_unthrottled().await;
    replies_are_counted_paged_and_kept_across_a_restart(&mut server).await;
}

#[tokio::test]
async fn replies_are_counted_paged_and_kept_across_a_restart_on_postgres() {
    let Some((mut server, _database)) = TestServer::on_postgres().await else { return };
    replies_are_counted_paged_and_kept_across_a_restart(&mut server).await;
}

async fn what_cannot_be_replied_to_is_not_found(server: &TestServer) {
    let ann = server.guest("ann").await;
    let mut socket = ann.ws_in("general").await;
    let parent = ann.send_http("general", "parent", "a1").await;
    let gone = ann.send_http("general", "soon gone", "a2").await;
    let (_, reply) = reply_http(&ann, "general", "a reply", "a3", id(&parent)).await;
    let (status, _) = ann.delete(&format!("/api/rooms/general/messages/{}", id(&gone))).await;
    assert_eq!(status, 200);
    for (target, why) in [(999, "a missing message"), (id(&gone), "a deleted message"), (id(&reply), "a reply (one level only)")] {
        let answer = reply_http(&ann, "general", "nope", &format!("x{target}"), target).await;
        assert_eq!(refusal(answer), (404, "not_found".into()), "{why}");
        let (status, body) = ann.get(&format!("/api/rooms/general/threads/{target}")).await;
        if target != id(&gone) {
            assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "the thread of {why}: {body}");
        }
    }
    socket.send_json(json!({ "type": "send", "room": "general", "text": "nope", "client_id": "s1", "thread": id(&reply) })).await;
    let error = socket.next_matching("the refusal", |e| e["type"] == "error").await;
    assert_eq!((error["code"].as_str(), error["client_id"].as_str()), (Some("not_found"), Some("s1")), "{error}");
    let (status, page) = ann.get(&format!("/api/rooms/general/threads/{}", id(&parent))).await;
    assert_eq!((status, page["replies"].as_array().map(Vec::len)), (200, Some(1)), "nothing refused was stored: {page}");
}

#[tokio::test]
async fn what_cannot_be_replied_to_is_not_found_on_files() {
    what_cannot_be_replied_to_is_not_found(&TestServer::start_unthrottled().await).await;
}

#[tokio::test]
async fn what_cannot_be_replied_to_is_not_found_on_postgres() {
    let Some((server, _database)) = TestServer::on_postgres().await else { return };
    what_cannot_be_replied_to_is_not_found(&server).await;
}

// ---- reactions ----------------------------------------------------------------

async fn reactions_toggle_and_show_me_to_each_reader(server: &mut TestServer) {
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    let mut bob_socket = bob.ws_in("general").await;
    let message = ann.send_http("general", "react to me", "a1").await;
    bob_socket.next_of_type("message").await;
    let path = |m: &Value| format!("/api/rooms/general/messages/{}/reactions", id(m));

    // ann adds 👍: the answer and bob's live frame carry the counts.
    let (status, added) = react_http(&ann, "general", id(&message), "👍").await;
    assert_eq!(status, 200, "{added}");
    assert_eq!((added["type"].as_str(), added["added"].as_bool(), added["user"].as_str()), (Some("reacted"), Some(true), Some("ann")));
    assert_eq!(added["reactions"], json!([{ "emoji": "👍", "count": 1 }]));
    assert_eq!(bob_socket.next_of_type("reacted").await, added, "the frame reaches the room's other sockets");

    // bob over the socket: 👍 and 🎉.
    bob_socket.send_json(json!({ "type": "react", "room": "general", "id": id(&message), "emoji": "👍" })).await;
    let second = bob_socket.next_of_type("reacted").await;
    assert_eq!((second["user"].as_str(), second["reactions"].clone()), (Some("bob"), json!([{ "emoji": "👍", "count": 2 }])));
    assert!(second.get("me").is_none() && second["reactions"][0].get("me").is_none(), "live counts carry no `me`: {second}");
    bob_socket.send_json(json!({ "type": "react", "room": "general", "id": id(&message), "emoji": "🎉" })).await;
    bob_socket.next_of_type("reacted").await;

    // Each reader sees their own: `me`.
    let seen_by = |messages: Vec<Value>| with_id(&messages, id(&message))["reactions"].clone();
    assert_eq!(
        seen_by(ann.messages("general", "").await),
        json!([{ "emoji": "👍", "count": 2, "me": true }, { "emoji": "🎉", "count": 1, "me": false }])
    );
    assert_eq!(
        seen_by(bob.messages("general", "").await),
        json!([{ "emoji": "👍", "count": 2, "me": true }, { "emoji": "🎉", "count": 1, "me": true }])
    );
    let mut ann_socket = ann.ws().await;
    let joined = ann_socket.join("general").await;
    assert_eq!(seen_by(joined["history"].as_array().unwrap().clone())[0]["me"], true, "joined.history is the reader's too");

    // A second toggle takes it back.
    let (_, removed) = react_http(&ann, "general", id(&message), "👍").await;
    assert_eq!((removed["added"].as_bool(), removed["reactions"].clone()), (Some(false), json!([{ "emoji": "👍", "count": 1 }, { "emoji": "🎉", "count": 1 }])));
    assert_eq!(bob_socket.next_of_type("reacted").await, removed);
    assert_eq!(ann_socket.next_of_type("reacted").await, removed, "the reactor's own sockets get it too");
    assert_eq!(seen_by(ann.messages("general", "").await)[0], json!({ "emoji": "👍", "count": 1, "me": false }));

    // A resume with `after` replays the reactions as frames.
    let resumed = ann_socket.join_after("general", id(&message)).await;
    let replayed: Vec<&Value> = resumed["history"].as_array().unwrap().iter().filter(|e| e["type"] == "reacted").collect();
    assert_eq!(replayed.last().copied(), Some(&removed), "{resumed}");

    // Refusals: a deleted message, a missing one, a bad emoji.
    let doomed = ann.send_http("general", "doomed", "a2").await;
    ann.delete(&format!("/api/rooms/general/messages/{}", id(&doomed))).await;
    assert_eq!(refusal(react_http(&bob, "general", id(&doomed), "👍").await), (404, "not_found".into()), "a deleted message");
    assert_eq!(refusal(react_http(&bob, "general", 999, "👍").await), (404, "not_found".into()), "a missing message");
    for bad in ["", "two words", "a\nb", &"x".repeat(33)] {
        let (status, body) = react_http(&bob, "general", id(&message), bad).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_emoji")), "{bad:?}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("emoji")), "a clear message: {body}");
    }
    bob_socket.next_of_type("message").await;
    bob_socket.next_of_type("deleted").await;
    bob_socket.send_json(json!({ "type": "react", "room": "general", "id": id(&message), "emoji": " " })).await;
    bob_socket.expect_error("invalid_emoji").await;
    let (status, _) = bob.put(&path(&message), json!({ "emoji": 7 })).await;
    assert_eq!(status, 400, "an emoji is a string");

    // After a restart: the same reactions, and toggles go on from them.
    let before = bob.all_messages("general").await;
    drop((ann_socket, bob_socket));
    server.restart().await;
    let bob = bob.back_at(server, "bob").await;
    assert_eq!(bob.all_messages("general").await, before);
    let (_, taken_back) = react_http(&bob, "general", id(&message), "🎉").await;
    assert_eq!((taken_back["added"].as_bool(), taken_back["reactions"].clone()), (Some(false), json!([{ "emoji": "👍", "count": 1 }])));
}

#[tokio::test]
async fn reactions_toggle_and_show_me_to_each_reader_on_files() {
    let mut server = TestServer::start_unthrottled().await;
    reactions_toggle_and_show_me_to_each_reader(&mut server).await;
}

#[tokio::test]
async fn reactions_toggle_and_show_me_to_each_reader_on_postgres() {
    let Some((mut server, _database)) = TestServer::on_postgres().await else { return };
    reactions_toggle_and_show_me_to_each_reader(&mut server).await;
}

#[tokio::test]
async fn a_reacted_frame_reaches_a_socket_on_the_other_node() {
    let Some(redis) = RedisPrefix::new() else { return };
    let cluster = Cluster::start(2, &redis.url, &redis.prefix).await;
    let ann = cluster.node(0).guest("ann").await;
    let bob = cluster.node(1).guest("bob").await;
    let mut on_b = bob.ws_in("general").await;
    let message = ann.send_http("general", "across nodes", "a1").await;
    on_b.next_of_type("message").await;
    let (status, reacted) = react_http(&ann, "general", id(&message), "🚀").await;
    assert_eq!(status, 200, "{reacted}");
    assert_eq!(on_b.next_of_type("reacted").await, reacted, "node B's socket gets node A's reaction as stored");
    let (_, reply) = reply_http(&bob, "general", "from B", "b1", id(&message)).await;
    let (_, page) = ann.get(&format!("/api/rooms/general/threads/{}", id(&message))).await;
    assert_eq!(page["replies"], json!([reply]), "a reply on one node is in the thread on the other");
    cluster.stop().await;
}

// ---- thread notifications ---------------------------------------------------------

#[tokio::test]
async fn a_threads_participants_but_not_the_replier_are_told_of_a_reply() {
    let server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let bob = User::sign_up(&server, "bob", PASSWORD).await;
    let carol = User::sign_up(&server, "carol", PASSWORD).await;
    let dan = User::sign_up(&server, "dan", PASSWORD).await;
    let (mut ann_socket, mut bob_socket, mut carol_socket, mut dan_socket) = (ann.ws().await, bob.ws().await, carol.ws().await, dan.ws().await);
    let parent = ann.send_http("general", "lunch?", "a1").await;

    // bob replies: ann (the parent's author) is told; bob is not.
    let (_, first) = reply_http(&bob, "general", "yes please", "b1", id(&parent)).await;
    let told = ann_socket.next_of_type("mention").await;
    assert_eq!(
        told,
        json!({ "type": "mention", "room": "general", "id": id(&first), "user": "bob", "text": "yes please", "thread": id(&parent), "reason": "thread" })
    );
    // carol replies: ann and bob are told, carol and dan are not.
    let (_, second) = reply_http(&carol, "general", "me too", "c1", id(&parent)).await;
    assert_eq!(ann_socket.next_of_type("mention").await["id"], id(&second));
    assert_eq!(bob_socket.next_of_type("mention").await["id"], id(&second));
    carol_socket.expect_silence().await;
    dan_socket.expect_silence().await;
    // A reply that mentions a participant tells them once, as a mention.
    let (_, third) = reply_http(&dan, "general", "@ann count me in", "d1", id(&parent)).await;
    let once = ann_socket.next_of_type("mention").await;
    assert_eq!((once["id"].as_u64(), once["reason"].as_str(), once["thread"].as_u64()), (Some(id(&third)), Some("mention"), Some(id(&parent))));
    assert_eq!(bob_socket.next_of_type("mention").await["reason"], "thread");
    assert_eq!(carol_socket.next_of_type("mention").await["reason"], "thread");
    ann_socket.expect_silence().await;
    // A post outside the thread tells nobody.
    ann.send_http("general", "elsewhere", "a2").await;
    bob_socket.expect_silence().await;
    dan_socket.expect_silence().await;
}

#[tokio::test]
async fn a_private_rooms_threads_and_reactions_are_for_its_members_only() {
    let server = TestServer::start_unthrottled().await;
    let ann = User::sign_up(&server, "ann", PASSWORD).await;
    let carol = User::sign_up(&server, "carol", PASSWORD).await;
    let (status, _) = ann.post("/api/rooms", json!({ "name": "team", "private": true })).await;
    assert_eq!(status, 201);
    let parent = ann.send_http("team", "members only", "a1").await;
    let not_found = (404, "room_not_found".to_string());
    assert_eq!(refusal(react_http(&carol, "team", id(&parent), "👍").await), not_found);
    assert_eq!(refusal(reply_http(&carol, "team", "let me in", "c1", id(&parent)).await), not_found);
    assert_eq!(refusal(carol.get(&format!("/api/rooms/team/threads/{}", id(&parent))).await), not_found);
    assert_eq!(react_http(&ann, "team", id(&parent), "👍").await.0, 200, "a member may");
}
