//! A socket that must re-read a room from the store (it lagged behind the
//! room's channel, saw a gap in seqs, or got a resync marker) while the
//! store fails those reads: it retries with a bounded backoff, and if the
//! store still fails it is closed with 1013 ("try again later"), so the
//! client resumes with `after`. It is never left open and silently behind.
//!
//! The catch-up is started the way another node starts it: an event is
//! stored without being published (its node's publish was lost), so the
//! next live event arrives after a gap in seqs.

mod common;

use chatroom::model::{NewEvent, RoomName, Username};
use chatroom::store::{Appended, MessageStore};
use common::faulty_store::FaultyNode;
use common::{TIMEOUT, User, WsClient, id};
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ROOM: &str = "general";

#[tokio::test]
async fn a_catch_up_whose_reads_fail_a_few_times_still_delivers_every_event() {
    let node = FaultyNode::start().await;
    let (writer, _, mut reader) = writer_and_reader(&node).await;
    writer.send_http(ROOM, "one", "c1").await;
    assert_eq!(id(&reader.next_of_type("message").await), 1);

    store_unpublished(&node, "two").await;
    node.store.fail_events(2);
    writer.send_http(ROOM, "three", "c3").await;

    let ids: Vec<u64> = reader.next_messages(2).await.iter().map(id).collect();
    assert_eq!(ids, [2, 3], "the catch-up retried past the failed reads");
    assert!(node.store.failed_events() >= 2, "the reads did fail: {}", node.store.failed_events());
    node.stop().await;
}

#[tokio::test]
async fn a_catch_up_whose_reads_keep_failing_closes_the_socket_with_1013_and_the_client_resumes() {
    let node = FaultyNode::start().await;
    let (writer, reading, mut reader) = writer_and_reader(&node).await;
    writer.send_http(ROOM, "one", "c1").await;
    assert_eq!(id(&reader.next_of_type("message").await), 1);

    store_unpublished(&node, "two").await;
    node.store.fail_events(usize::MAX);
    writer.send_http(ROOM, "three", "c3").await;

    let (code, reason) = close_of(reader).await;
    assert_eq!(code, 1013, "closed with 'try again later' ({reason})");
    assert!(!reason.is_empty(), "the close says why");
    assert_eq!(node.store.failed_events(), 4, "one read and three retries");

    // The store is back: the client resumes with `after`, nothing missing.
    node.store.fail_events(0);
    let mut again = reading.ws().await;
    let joined = again.join_after(ROOM, 1).await;
    let history: Vec<u64> = joined["history"].as_array().expect("history").iter().map(id).collect();
    assert_eq!(history, [2, 3], "{joined}");
    node.stop().await;
}

/// Reads frames until the socket's close frame; its code and reason.
/// Fails on a message (the socket kept relaying while behind) or timeout.
async fn close_of(socket: WsClient) -> (u16, String) {
    let mut stream = socket.into_stream();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.next()).await.expect("the socket stayed open, silently behind");
        match frame {
            Some(Ok(WsMessage::Close(Some(close)))) => return (close.code.into(), close.reason.to_string()),
            Some(Ok(WsMessage::Text(text))) => {
                let event: Value = serde_json::from_str(text.as_str()).expect("a JSON event");
                assert!(event["type"] != "message", "a message after a failed catch-up: {event}");
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

/// A writer (over HTTP), a reader and the reader's socket in [`ROOM`].
async fn writer_and_reader(node: &FaultyNode) -> (User, User, WsClient) {
    let writer = node.endpoint().guest("writer").await;
    let reader = node.endpoint().guest("reader").await;
    let socket = reader.ws_in(ROOM).await;
    (writer, reader, socket)
}

/// Stores a post straight in the store: what another node stored but
/// whose publish never arrived.
async fn store_unpublished(node: &FaultyNode, text: &str) {
    let post = NewEvent::Post { user: Username::parse("other").unwrap(), text: text.into(), client_id: text.into(), thread: None };
    let room = RoomName::parse(ROOM).unwrap();
    let stored = node.store.inner.append(&room, vec![post]).await.expect("stored");
    assert!(matches!(stored.as_slice(), [Ok(Appended::New(_))]), "{stored:?}");
}
