//! Read markers: stored per user and room, moved forward only, shared by
//! the user's devices (their other sockets hear of it), carried by
//! `joined`, surviving restarts; unread counts in `GET /api/subscriptions`.

mod common;

use common::{TestServer, User};
use serde_json::{Value, json};

/// PUT /api/rooms/{room}/read {"id"} → (status, body).
async fn put_read(user: &User, room: &str, id: u64) -> (u16, Value) {
    user.put(&format!("/api/rooms/{room}/read"), json!({ "id": id })).await
}

/// The read state of `room` in GET /api/subscriptions.
async fn state_of(user: &User, room: &str) -> Value {
    let (status, body) = user.get("/api/subscriptions").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().iter().find(|r| r["name"] == room).cloned().unwrap_or_else(|| panic!("{room} not in {body}"))
}

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_marker_moves_forward_only_and_reaches_the_users_other_sockets() {
    let server = TestServer::start().await;
    let bob = server.guest("bob").await;
    for i in 1..=5 {
        bob.send_http("general", &format!("m{i}"), &format!("b{i}")).await;
    }
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let mut phone = ann.ws_in("general").await;
    let mut laptop = ann.ws_in("general").await;

    phone.send_json(json!({"type": "read", "room": "general", "id": 3})).await;
    let heard = laptop.next_of_type("read").await;
    assert_eq!(heard, json!({"type": "read", "room": "general", "id": 3}));
    // The socket that said it does not hear it back; a step back is ignored.
    phone.send_json(json!({"type": "read", "room": "general", "id": 2})).await;
    assert_eq!(put_read(&ann, "general", 1).await, (200, json!({"room": "general", "id": 3})));
    phone.expect_silence().await;
    laptop.expect_silence().await;
    // Over HTTP too, and past the newest message it stops at the newest.
    assert_eq!(put_read(&ann, "general", 99).await, (200, json!({"room": "general", "id": 5})));
    assert_eq!(phone.next_of_type("read").await["id"], 5);
    assert_eq!(laptop.next_of_type("read").await["id"], 5);
    // Errors: an unknown room, a bad body.
    assert_eq!(put_read(&ann, "nope", 1).await.0, 404);
    let (status, _) = ann.put("/api/rooms/general/read", json!({"id": "x"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn markers_survive_a_restart_and_joined_carries_them() {
    let mut server = TestServer::start().await;
    let bob = server.guest("bob").await;
    for i in 1..=4 {
        bob.send_http("general", &format!("m{i}"), &format!("b{i}")).await;
    }
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    put_read(&ann, "general", 2).await;
    server.restart().await;
    let mut ann = ann.at(&server);
    let (status, _, _) = ann.log_in("Ann", PASSWORD).await;
    assert_eq!(status, 200);
    let mut ws = ann.ws().await;
    let joined = ws.join("general").await;
    assert_eq!(joined["read"], 2);
    assert_eq!(state_of(&ann, "general").await, json!({"name": "general", "read": 2, "unread": 2, "mentions": 0}));
}

#[tokio::test]
async fn unread_counts_skip_ones_own_and_deleted_messages() {
    let server = TestServer::start().await;
    let ann = User::sign_up(&server, "Ann", PASSWORD).await;
    let bob = server.guest("bob").await;
    assert_eq!(state_of(&ann, "general").await, json!({"name": "general", "read": 0, "unread": 0, "mentions": 0}));
    bob.send_http("general", "b1", "b1").await;
    ann.send_http("general", "a2", "a2").await;
    bob.send_http("general", "b3", "b3").await;
    bob.send_http("general", "b4", "b4").await;
    assert_eq!(state_of(&ann, "general").await["unread"], 3, "ann's own message is not unread");
    let response = bob.request(reqwest::Method::DELETE, "/api/rooms/general/messages/3").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(state_of(&ann, "general").await["unread"], 2, "a deleted message is not unread");
    put_read(&ann, "general", 3).await;
    assert_eq!(state_of(&ann, "general").await, json!({"name": "general", "read": 3, "unread": 1, "mentions": 0}));
    put_read(&ann, "general", 5).await;
    assert_eq!(state_of(&ann, "general").await["unread"], 0);
    // Another user's marker is their own.
    assert_eq!(state_of(&bob, "general").await["read"], 0);
}

#[tokio::test]
async fn a_guests_markers_last_as_long_as_its_session() {
    let server = TestServer::start().await;
    let bob = server.guest("bob").await;
    bob.send_http("general", "hello", "b1").await;
    let mut cleo = server.guest("cleo").await;
    put_read(&cleo, "general", 1).await;
    assert_eq!(state_of(&cleo, "general").await["read"], 1);
    let (status, _) = cleo.post("/api/logout", json!({})).await;
    assert_eq!(status, 204);
    let (status, _) = cleo.login_guest("cleo").await;
    assert_eq!(status, 200);
    assert_eq!(state_of(&cleo, "general").await, json!({"name": "general", "read": 0, "unread": 1, "mentions": 0}), "a new guest session starts afresh");
}
