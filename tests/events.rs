//! The room event log: edits and deletes seen live, resumed with `after`,
//! refused for someone else's message; history as it is now; the polling
//! events endpoint equal to the socket's stream; a deleted message's text
//! gone from the API and the files at once; step-1 files still loading.

mod common;

use common::{TestServer, User, WsClient, id, read_room_events};
use serde_json::{Value, json};

/// PATCH /api/rooms/{room}/messages/{id} → (status, body).
async fn patch(user: &User, room: &str, id: u64, text: &str) -> (u16, Value) {
    let response = user
        .request(reqwest::Method::PATCH, &format!("/api/rooms/{room}/messages/{id}"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// DELETE /api/rooms/{room}/messages/{id} → (status, body).
async fn delete(user: &User, room: &str, id: u64) -> (u16, Value) {
    let response = user.request(reqwest::Method::DELETE, &format!("/api/rooms/{room}/messages/{id}")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET /api/rooms/{room}/events?{query} → the body.
async fn events(user: &User, room: &str, query: &str) -> Value {
    let (status, body) = user.get(&format!("/api/rooms/{room}/events?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn edit_ws(ws: &mut WsClient, room: &str, id: u64, text: &str) {
    ws.send_json(json!({"type": "edit", "room": room, "id": id, "text": text})).await;
}

async fn delete_ws(ws: &mut WsClient, room: &str, id: u64) {
    ws.send_json(json!({"type": "delete", "room": room, "id": id})).await;
}

#[tokio::test]
async fn edits_and_deletes_are_seen_live_by_everyone_in_the_room() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut b) = server.guest_in("bob", "general").await;
    let first = a.send_and_echo("general", "helo", "a1").await;
    assert_eq!(id(&b.next_of_type("message").await), id(&first));

    edit_ws(&mut a, "general", id(&first), "hello").await;
    for ws in [&mut a, &mut b] {
        let edited = ws.next_of_type("edited").await;
        assert_eq!((edited["room"].as_str(), edited["id"].as_u64(), edited["text"].as_str()), (Some("general"), Some(1), Some("hello")));
        assert_eq!(edited["seq"], 2);
        assert!(edited["edited_at"].as_str().is_some_and(common::is_rfc3339_utc), "{edited}");
    }
    delete_ws(&mut a, "general", id(&first)).await;
    for ws in [&mut a, &mut b] {
        let deleted = ws.next_of_type("deleted").await;
        assert_eq!(deleted, json!({"type": "deleted", "room": "general", "id": 1, "seq": 3}));
    }
}

#[tokio::test]
async fn only_the_author_may_edit_or_delete_and_unknown_ids_are_not_found() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (bob, mut b) = server.guest_in("bob", "general").await;
    let message = a.send_and_echo("general", "mine", "a1").await;
    b.next_of_type("message").await;
    let mine = id(&message);

    edit_ws(&mut b, "general", mine, "yours now").await;
    let err = b.expect_error("forbidden").await;
    assert_eq!(err["room"], "general");
    delete_ws(&mut b, "general", mine).await;
    b.expect_error("forbidden").await;
    assert_eq!(patch(&bob, "general", mine, "yours now").await.0, 403);
    let (status, body) = delete(&bob, "general", mine).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    edit_ws(&mut a, "general", 99, "nothing there").await;
    a.expect_error("not_found").await;
    assert_eq!(patch(&ann, "general", 99, "x").await.0, 404);
    assert_eq!(delete(&ann, "nope", mine).await.0, 404, "an unknown room");
    // Edited text is checked like a sent one.
    edit_ws(&mut a, "general", mine, "   ").await;
    a.expect_error("invalid_text").await;
    assert_eq!(patch(&ann, "general", mine, &"x".repeat(4001)).await.0, 400);

    // Nothing changed; a deleted message cannot be edited or deleted again.
    assert_eq!(ann.messages("general", "").await, vec![common::without_type(&message)]);
    assert_eq!(delete(&ann, "general", mine).await.0, 200);
    assert_eq!(patch(&ann, "general", mine, "back").await.0, 404);
    assert_eq!(delete(&ann, "general", mine).await.0, 404);
}

#[tokio::test]
async fn a_client_that_was_away_resumes_with_the_edits_and_deletes_it_missed() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    a.send_and_echo("general", "one", "a1").await;
    a.send_and_echo("general", "two", "a2").await;
    // Bob saw ids 1 and 2, then went away.
    let bob = server.guest("bob").await;
    let (status, _) = patch(&ann, "general", 1, "one, edited").await;
    assert_eq!(status, 200);
    assert_eq!(delete(&ann, "general", 2).await.0, 200);
    ann.send_http("general", "three", "a3").await;

    let mut b = bob.ws().await;
    let joined = b.join_after("general", 2).await;
    let history = joined["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{joined}");
    assert_eq!((history[0]["type"].as_str(), history[0]["id"].as_u64(), history[0]["text"].as_str()), (Some("edited"), Some(1), Some("one, edited")));
    assert_eq!(history[0]["seq"], 3);
    assert_eq!(history[1], json!({"type": "deleted", "room": "general", "id": 2, "seq": 4}));
    assert_eq!((history[2]["id"].as_u64(), history[2]["text"].as_str()), (Some(5), Some("three")));
    assert_eq!(joined["seq"], 5);
    assert_eq!(joined["has_more"], false);
    // Live events continue after it, each once.
    ann.send_http("general", "four", "a4").await;
    assert_eq!(id(&b.next_of_type("message").await), 6);
    let seen_by_ann: Vec<u64> = [a.next_matching("edited", |e| e["type"] == "edited").await, a.next_matching("deleted", |e| e["type"] == "deleted").await]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seen_by_ann, vec![3, 4], "ann's own socket got the changes made over HTTP");
}

#[tokio::test]
async fn history_shows_each_message_as_it_is_now() {
    let mut server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    for i in 1..=3 {
        a.send_and_echo("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    patch(&ann, "general", 1, "m1 (edited)").await;
    patch(&ann, "general", 1, "m1 (edited twice)").await;
    delete(&ann, "general", 2).await;

    let check = |messages: &[Value]| {
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0]["text"], "m1 (edited twice)");
        assert!(messages[0]["edited_at"].as_str().is_some_and(common::is_rfc3339_utc));
        assert_eq!(messages[1], json!({"id": 2, "room": "general", "deleted": true}));
        assert_eq!((messages[2]["text"].as_str(), messages[2].get("edited_at")), (Some("m3"), None));
    };
    check(&ann.messages("general", "").await);
    let mut again = ann.ws().await;
    let joined = again.join("general").await;
    check(joined["history"].as_array().unwrap());
    assert_eq!(joined["seq"], 6);
    // The same after a restart (edits and deletes are read back from the file).
    server.restart().await;
    let ann = ann.back_at(&server, "ann").await;
    check(&ann.messages("general", "").await);
}

#[tokio::test]
async fn the_polling_events_endpoint_equals_the_sockets_stream() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut watcher) = server.guest_in("bob", "general").await;
    a.send_and_echo("general", "one", "a1").await;
    a.send_and_echo("general", "two", "a2").await;
    edit_ws(&mut a, "general", 1, "one!").await;
    delete_ws(&mut a, "general", 2).await;
    a.send_message("general", "three", "a3").await;

    let mut streamed = Vec::new();
    while streamed.len() < 5 {
        let event = watcher.next_event().await;
        if ["message", "edited", "deleted"].contains(&event["type"].as_str().unwrap_or("")) {
            streamed.push(event);
        }
    }
    let body = events(&ann, "general", "after=0").await;
    // The log: the post of message 2 is redacted everywhere now, so compare
    // it as the log shows it.
    let mut expected = streamed.clone();
    expected[1] = json!({"type": "message", "id": 2, "room": "general", "deleted": true});
    assert_eq!(body["events"].as_array().unwrap(), &expected);
    assert_eq!((body["seq"].as_u64(), body["has_more"].as_bool()), (Some(5), Some(false)));

    // Paged: two at a time, each page's `seq` is where the next starts.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = events(&ann, "general", &format!("after={after}&limit=2")).await;
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        after = page["seq"].as_u64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(paged, expected);
    // Up to date: nothing, and the seq stays.
    let none = events(&ann, "general", "after=5").await;
    assert_eq!(none, json!({"events": [], "seq": 5, "has_more": false}));
}

#[tokio::test]
async fn a_deleted_messages_text_is_gone_from_the_api_and_the_files_at_once() {
    let mut server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    a.send_and_echo("general", "before", "a0").await;
    a.send_and_echo("general", "secret-one", "a1").await;
    patch(&ann, "general", 2, "secret-two").await;
    ann.send_http("general", "after", "a3").await;
    let path = server.room_file("general");
    let before = std::fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("secret-two"));

    assert_eq!(delete(&ann, "general", 2).await.0, 200);
    for file in common::list_files(server.data_dir()) {
        let bytes = std::fs::read(server.data_dir().join(&file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"), "{file} still holds the deleted text");
    }
    let after = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&after);
    assert!(!text.contains("secret"), "the file still holds the text:\n{text}");
    assert!(!text.contains("\"client_id\":\"a1\""), "the file still holds the client_id:\n{text}");
    assert_eq!(after.len(), before.len() + read_room_events(&path).last().map_or(0, |l| l.to_string().len() + 1), "lines were rewritten in place");
    // The file is still a valid, sorted log; nothing else changed.
    let lines = read_room_events(&path);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["text"], "before");
    assert_eq!(lines[3]["text"], "after");
    // Nor is it anywhere in the API.
    let everywhere = format!("{:?}{}", ann.messages("general", "").await, events(&ann, "general", "after=0").await);
    assert!(!everywhere.contains("secret") && !everywhere.contains("\"a1\""), "{everywhere}");
    // A restart does not bring it back.
    server.restart().await;
    let ann = ann.back_at(&server, "ann").await;
    let everywhere = format!("{:?}{}", ann.messages("general", "").await, events(&ann, "general", "after=0").await);
    assert!(!everywhere.contains("secret"), "{everywhere}");
}

#[tokio::test]
async fn step_one_room_files_load_unchanged_and_their_messages_can_be_edited() {
    let mut server = TestServer::start().await;
    let ann = server.guest("ann").await;
    ann.create_room("old").await;
    server.stop().await;
    // A room file as step 1 wrote it: one message per line, no seq or op.
    let legacy = (1..=3)
        .map(|i| format!(r#"{{"id":{i},"room":"old","user":"ann","text":"old {i}","ts":"2026-01-01T00:00:0{i}.000Z","client_id":"c{i}"}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(server.room_file("old"), format!("{legacy}\n")).unwrap();
    server.start_again().await;
    let ann = ann.back_at(&server, "ann").await;
    assert_eq!(common::texts(&ann.messages("old", "").await), vec!["old 1", "old 2", "old 3"]);
    let (status, edited) = patch(&ann, "old", 2, "old 2, edited").await;
    assert_eq!((status, edited["seq"].as_u64()), (200, Some(4)), "{edited}");
    assert_eq!(id(&ann.send_http("old", "new", "c4").await), 5);
    let body = events(&ann, "old", "after=1").await;
    let kinds: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["message", "message", "edited", "message"]);
}

#[tokio::test]
async fn an_edit_of_a_message_far_back_shows_in_its_page_after_a_restart() {
    let mut server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    for i in 1..=5 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    // The edit and the delete are far back too: outside the tail read at open.
    patch(&ann, "general", 3, "m3, edited").await;
    delete(&ann, "general", 4).await;
    for i in 6..=1100 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    server.restart().await;
    let ann = ann.back_at(&server, "ann").await;
    // Message 3 is far outside the tail kept in memory: read from the file.
    let page = ann.messages("general", "after=2&limit=3").await;
    assert_eq!(page[0]["text"], "m3, edited");
    assert_eq!(page[1], json!({"id": 4, "room": "general", "deleted": true}));
    assert_eq!(page[2]["text"], "m5");
    // A retry of a recent client_id is still a repeat.
    let (status, again) = ann.post_message("general", "m1100", "c1100").await;
    assert_eq!((status, id(&again)), (200, 1102), "m1100 is seq 1102 (after the edit and the delete)");
    // The old deleted message stays deleted; an old live one can be edited.
    let mut server = server;
    server.restart().await;
    let ann = ann.back_at(&server, "ann").await;
    assert_eq!(patch(&ann, "general", 4, "back").await.0, 404, "deleted long ago, known after a restart");
    assert_eq!(patch(&ann, "general", 5, "m5, edited").await.0, 200);
}

#[tokio::test]
async fn the_change_index_is_derived_rebuilt_when_missing_and_never_needed_for_the_tail() {
    let mut server = TestServer::start_unthrottled().await;
    let ann = server.guest("ann").await;
    for i in 1..=3 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    patch(&ann, "general", 1, "m1, edited").await;
    delete(&ann, "general", 2).await;
    for i in 4..=1100 {
        ann.send_http("general", &format!("m{i}"), &format!("c{i}")).await;
    }
    let index = server.room_file("general").with_extension("jsonl.changes");
    let lines = std::fs::read_to_string(&index).expect("the index beside the room file");
    assert_eq!(lines.lines().count(), 2, "one line per edit or delete:\n{lines}");
    assert!(!lines.contains("m2"), "the deleted message's text is not in the index");

    // Without its index, a room still shows every change: the first read
    // past the tail rebuilds it from the log.
    server.stop().await;
    std::fs::remove_file(&index).unwrap();
    server.start_again().await;
    let ann = ann.back_at(&server, "ann").await;
    assert_eq!(ann.messages("general", "").await.len(), 50, "the latest page comes from the tail");
    let page = ann.messages("general", "after=0&limit=2").await;
    assert_eq!((page[0]["text"].as_str(), page[1]["deleted"].as_bool()), (Some("m1, edited"), Some(true)));
    assert_eq!(std::fs::read_to_string(&index).expect("rebuilt").lines().count(), 2);
}

#[tokio::test]
async fn a_change_the_index_missed_in_a_crash_is_recovered_from_the_tail() {
    let mut server = TestServer::start().await;
    let ann = server.guest("ann").await;
    ann.send_http("general", "m1", "c1").await;
    ann.send_http("general", "m2", "c2").await;
    patch(&ann, "general", 1, "m1, edited").await;
    delete(&ann, "general", 2).await;
    server.stop().await;
    // As if the process died between the room-file write and the index
    // append of the last batch: the index lacks the delete.
    let index = server.room_file("general").with_extension("jsonl.changes");
    let lines = std::fs::read_to_string(&index).unwrap();
    let first = lines.lines().next().unwrap();
    std::fs::write(&index, format!("{first}\n")).unwrap();
    server.start_again().await;
    let ann = ann.back_at(&server, "ann").await;
    let now = ann.messages("general", "").await;
    assert_eq!((now[0]["text"].as_str(), now[1]["deleted"].as_bool()), (Some("m1, edited"), Some(true)));
    assert_eq!(patch(&ann, "general", 2, "back").await.0, 404, "still deleted");
    assert_eq!(std::fs::read_to_string(&index).unwrap().lines().count(), 2, "the index is whole again");
}
