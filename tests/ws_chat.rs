//! Real-time chat over WebSockets: delivery, presence, typing, leave,
//! resume after a reconnect, safe retries and several rooms on one socket.

mod common;

use common::{TestServer, id, ids, is_rfc3339_utc, texts, without_type};
use serde_json::json;

#[tokio::test]
async fn two_users_see_each_others_messages_including_their_own_echo() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    let mut a = ann.ws().await;
    let mut b = bob.ws().await;
    let joined = a.join("general").await;
    assert_eq!(joined["history"], json!([]));
    b.join("general").await;

    a.send_message("general", "  hello bob  ", "ann-1").await;
    let echo = a.next_of_type("message").await;
    assert_eq!(echo["type"], "message");
    assert_eq!(echo["id"], 1);
    assert_eq!(echo["room"], "general");
    assert_eq!(echo["user"], "ann");
    assert_eq!(echo["text"], "hello bob", "text is trimmed");
    assert_eq!(echo["client_id"], "ann-1");
    assert!(is_rfc3339_utc(echo["ts"].as_str().unwrap()), "{echo}");
    let at_bob = b.next_of_type("message").await;
    assert_eq!(at_bob, echo, "everyone gets the same message");

    let reply = b.send_and_echo("general", "hi ann", "bob-1").await;
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["user"], "bob");
    let at_ann = a.next_of_type("message").await;
    assert_eq!(at_ann, reply);

    // What the sockets saw is what was stored.
    let stored = ann.messages("general", "").await;
    assert_eq!(stored, vec![without_type(&echo), without_type(&reply)]);
}

#[tokio::test]
async fn presence_is_announced_and_listed_on_join() {
    let server = TestServer::start().await;
    let ann = server.guest("Ann").await;
    let bob = server.guest("bob").await;
    let mut a = ann.ws().await;
    let joined = a.join("general").await;
    assert_eq!(joined["online"], json!(["Ann"]));

    let mut b = bob.ws().await;
    let joined = b.join("general").await;
    assert_eq!(joined["online"], json!(["Ann", "bob"]), "sorted case-insensitively, self included");
    assert_eq!(a.next_event().await, json!({"type":"presence","room":"general","user":"bob","online":true}));

    // Bob does not get his own presence: the next thing he sees is Ann's message.
    let echo = a.send_and_echo("general", "sentinel", "s1").await;
    assert_eq!(b.next_event().await, echo);

    b.close().await;
    assert_eq!(a.next_event().await, json!({"type":"presence","room":"general","user":"bob","online":false}));

    // A newcomer sees only Ann online.
    let cy = server.guest("cy").await;
    let mut c = cy.ws().await;
    assert_eq!(c.join("general").await["online"], json!(["Ann", "cy"]));
}

#[tokio::test]
async fn typing_goes_to_the_others_not_the_typist() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut b) = server.guest_in("bob", "general").await;
    assert_eq!(a.next_event().await["type"], "presence"); // bob came online

    a.send_json(json!({"type":"typing","room":"general"})).await;
    assert_eq!(b.next_event().await, json!({"type":"typing","room":"general","user":"ann"}));

    // The typist's next event is its own message echo, not a typing event.
    a.send_message("general", "done typing", "t1").await;
    let next = a.next_event().await;
    assert_eq!(next["type"], "message", "the typist got {next}");
    assert_eq!(next["client_id"], "t1");
    assert_eq!(b.next_event().await, next);
}

#[tokio::test]
async fn joining_an_unknown_room_is_an_error_and_the_socket_goes_on() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let mut a = ann.ws().await;
    a.send_json(json!({"type":"join","room":"nowhere"})).await;
    let err = a.expect_error("room_not_found").await;
    assert_eq!(err["room"], "nowhere", "{err}");
    // Sending there is refused too, with the client_id.
    a.send_message("nowhere", "hello?", "x1").await;
    let err = a.next_of_type("error").await;
    assert!(err["code"] == "not_joined" || err["code"] == "room_not_found", "{err}");
    assert_eq!(err["client_id"], "x1");
    // Nothing was created for it.
    assert!(!server.room_file("nowhere").exists());
    let (status, body) = ann.get("/api/rooms/nowhere/messages").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "room_not_found");

    a.join("general").await;
    a.send_and_echo("general", "still here", "x2").await;
}

#[tokio::test]
async fn leave_stops_delivery() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut b) = server.guest_in("bob", "general").await;
    let first = a.send_and_echo("general", "before leave", "a1").await;
    assert_eq!(b.next_of_type("message").await, first);

    b.send_json(json!({"type":"leave","room":"general"})).await;
    assert_eq!(b.next_significant().await, json!({"type":"left","room":"general"}));
    assert_eq!(
        a.next_event().await,
        json!({"type":"presence","room":"general","user":"bob","online":false}),
        "ann sees bob go"
    );

    let after = a.send_and_echo("general", "after leave", "a2").await;
    // The message is broadcast by now; had bob still been subscribed it
    // would come before the answer to this frame.
    b.send_json(json!({"type":"typing","room":"general"})).await;
    let next = b.next_event().await;
    assert_eq!(next["type"], "error", "bob still received {next}");
    assert_eq!(next["code"], "not_joined");
    b.send_message("general", "can I?", "b1").await;
    let next = b.next_event().await;
    assert_eq!(next["code"], "not_joined", "{next}");
    assert_eq!(next["client_id"], "b1");

    // Joining again brings the history, including what was missed.
    let joined = b.join("general").await;
    assert_eq!(ids(joined["history"].as_array().unwrap()), vec![id(&first), id(&after)]);
}

#[tokio::test]
async fn join_without_after_sends_the_latest_50() {
    let server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    for i in 1..=60 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut a = ann.ws().await;
    let joined = a.join("general").await;
    let history = joined["history"].as_array().unwrap();
    assert_eq!(ids(history), (11..=60).collect::<Vec<u64>>());
    assert_eq!(history[0]["text"], "m11");
    assert_eq!(joined["has_more"], false);
}

#[tokio::test]
async fn a_reconnecting_client_resumes_with_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    let (bob, mut b) = server.guest_in("bob", "general").await;

    let mut seen_by_bob = Vec::new();
    for i in 1..=3 {
        let echo = a.send_and_echo("general", &format!("early {i}"), &format!("e{i}")).await;
        let got = b.next_of_type("message").await;
        assert_eq!(got, echo);
        seen_by_bob.push(id(&got));
    }
    assert_eq!(seen_by_bob, vec![1, 2, 3]);
    let last_seen = 3;
    b.close().await;

    // While bob is away.
    let mut missed = Vec::new();
    for i in 1..=4 {
        missed.push(a.send_and_echo("general", &format!("missed {i}"), &format!("m{i}")).await);
    }
    let mut b = bob.ws().await;
    let joined = b.join_after("general", last_seen).await;
    let history = joined["history"].as_array().unwrap();
    assert_eq!(ids(history), vec![4, 5, 6, 7], "exactly the gap");
    assert_eq!(history.clone(), missed.iter().map(without_type).collect::<Vec<_>>());
    assert_eq!(joined["has_more"], false);

    // Live messages continue right after the history, each once.
    let live = a.send_and_echo("general", "live again", "l1").await;
    assert_eq!(id(&live), 8);
    assert_eq!(b.next_of_type("message").await, live);
    let echo = b.send_and_echo("general", "back", "b-back").await;
    assert_eq!(id(&echo), 9);

    // Resuming from the newest id gives an empty history.
    let mut b2 = bob.ws().await;
    let joined = b2.join_after("general", 9).await;
    assert_eq!(joined["history"], json!([]));
    // Resuming from the start gives everything.
    let mut b3 = bob.ws().await;
    let joined = b3.join_after("general", 0).await;
    assert_eq!(ids(joined["history"].as_array().unwrap()), (1..=9).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_resent_client_id_is_stored_once_and_answered_with_the_stored_message() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    let mut b = bob.ws_in("general").await;

    let mut a = ann.ws_in("general").await;
    let original = a.send_and_echo("general", "only once", "retry-1").await;
    assert_eq!(b.next_of_type("message").await, original);
    a.close().await;

    // The retry after a reconnect: same client_id (even with other text).
    let mut a = ann.ws().await;
    let joined = a.join_after("general", id(&original) - 1).await;
    assert_eq!(ids(joined["history"].as_array().unwrap()), vec![id(&original)]);
    a.send_message("general", "only once", "retry-1").await;
    let answer = a.next_of_type("message").await;
    assert_eq!(answer, original, "the stored message comes back, same id");
    a.send_message("general", "edited text", "retry-1").await;
    assert_eq!(a.next_of_type("message").await, original);

    // Bob is not told twice: his next message is the next new one.
    let next = a.send_and_echo("general", "a new one", "retry-2").await;
    assert_eq!(id(&next), id(&original) + 1);
    assert_eq!(b.next_of_type("message").await, next);

    // The same client_id from another user is another message.
    let bobs = b.send_and_echo("general", "mine", "retry-1").await;
    assert_eq!(id(&bobs), id(&next) + 1);

    let stored = ann.messages("general", "").await;
    assert_eq!(texts(&stored), vec!["only once", "a new one", "mine"]);
    let retried: Vec<_> = stored.iter().filter(|m| m["client_id"] == "retry-1" && m["user"] == "ann").collect();
    assert_eq!(retried.len(), 1);
}

#[tokio::test]
async fn one_socket_joined_to_two_rooms_gets_both() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    ann.create_room("second").await;
    let mut a = ann.ws().await;
    a.join("general").await;
    a.join("second").await;
    let mut b = bob.ws().await;
    b.join("general").await;
    b.join("second").await;

    let g = b.send_and_echo("general", "in general", "g1").await;
    assert_eq!(a.next_of_type("message").await, g);
    let s = b.send_and_echo("second", "in second", "s1").await;
    assert_eq!(a.next_of_type("message").await, s);
    assert_eq!(id(&g), 1);
    assert_eq!(id(&s), 1, "ids are per room");

    // Over HTTP too, to the right room.
    let h = bob.send_http("second", "posted", "h1").await;
    let got = a.next_of_type("message").await;
    assert_eq!(without_type(&got), h);
    assert_eq!(got["room"], "second");

    // Leaving one keeps the other.
    a.send_json(json!({"type":"leave","room":"second"})).await;
    assert_eq!(a.next_significant().await, json!({"type":"left","room":"second"}));
    bob.send_http("second", "not for ann", "h2").await;
    let g2 = bob.send_http("general", "for ann", "h3").await;
    assert_eq!(without_type(&a.next_of_type("message").await), g2);
    // Had "not for ann" reached her, it would come before this answer.
    a.send_json(json!({"type":"typing","room":"second"})).await;
    let next = a.next_significant().await;
    assert_eq!(next["code"], "not_joined", "{next}");
}

/// A client may resume with an id the room never reached (its data
/// directory was reset or restored from a backup since): it gets no
/// history, but it must still get new messages — above all the echo that
/// acknowledges its own send.
#[tokio::test]
async fn resuming_after_an_id_beyond_the_latest_still_delivers_new_messages() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    for i in 1..=3 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut b = bob.ws().await;
    let joined = b.join_after("general", 5000).await;
    assert_eq!(joined["history"], json!([]));
    let echo = b.send_and_echo("general", "am I acknowledged?", "b1").await;
    assert_eq!(id(&echo), 4);
    let posted = ann.send_http("general", "and do I see others?", "a5").await;
    assert_eq!(without_type(&b.next_of_type("message").await), posted);
}

/// A user with two tabs goes offline when the last one closes.
#[tokio::test]
async fn a_user_with_two_tabs_goes_offline_with_the_last() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let bob = server.guest("bob").await;
    let mut a = ann.ws_in("general").await;
    let mut tab1 = bob.ws().await;
    let mut tab2 = bob.ws().await;
    assert_eq!(tab1.join("general").await["online"], json!(["ann", "bob"]));
    assert_eq!(tab2.join("general").await["online"], json!(["ann", "bob"]));
    assert_eq!(a.next_event().await, json!({"type":"presence","room":"general","user":"bob","online":true}));
    tab1.close().await;

    // Bob is still online: a newcomer lists him, and Ann hears the newcomer
    // before (and not after) any news of bob.
    let cy = server.guest("cy").await;
    let mut c = cy.ws().await;
    assert_eq!(c.join("general").await["online"], json!(["ann", "bob", "cy"]));
    assert_eq!(a.next_event().await, json!({"type":"presence","room":"general","user":"cy","online":true}));
    tab2.close().await;
    assert_eq!(a.next_event().await, json!({"type":"presence","room":"general","user":"bob","online":false}));
    assert_eq!(c.next_event().await, json!({"type":"presence","room":"general","user":"bob","online":false}));
}
