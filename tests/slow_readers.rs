//! Sockets that stop reading: a reader that pauses while its room is busy
//! catches up in bounded server memory; one whose writes stall for
//! `--write-timeout-secs` is closed and resumes with `after` without a gap;
//! a session that ends closes its stuck socket too; a peer that answers no
//! ping is closed.
//!
//! The server runs as a child process (`common::process`) so its memory and
//! descriptors are read from `/proc/<pid>`.
//!
//! Readers that stop for a while in a busy room, with the figures, are in
//! tests/fault_slow_clients.rs (a binary of its own: its load would upset
//! the timing of the tests here).

mod common;

use std::time::Duration;

use common::process::ServerProcess;
use common::{Endpoint, User, WsClient, id};
use serde_json::Value;

/// Posts `count` messages of about `size` bytes into `room` over HTTP, from
/// four users at once; returns when all are stored.
async fn post_bulk(endpoint: &Endpoint, room: &str, count: usize, size: usize) {
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let user = endpoint.guest(&format!("writer{w}")).await;
        let room = room.to_string();
        tasks.push(tokio::spawn(async move {
            let text = "x".repeat(size);
            for i in (w..count).step_by(writers) {
                user.send_http(&room, &text, &format!("w{w}-{i}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
}

/// Reads message events until it has seen id `last`; the ids, in order.
async fn read_ids_until(ws: &mut WsClient, last: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last().is_none_or(|&l| l < last) {
        let event = ws.next_event().await;
        if event["type"] == "message" {
            ids.push(id(&event));
        }
    }
    ids
}

fn assert_exactly(ids: &[u64], first: u64, last: u64, who: &str) {
    let expected: Vec<u64> = (first..=last).collect();
    assert!(ids == expected, "{who}: {} ids, first {:?}, last {:?}; not exactly {first}..={last} in order", ids.len(), ids.first(), ids.last());
}

async fn reader(endpoint: &Endpoint, name: &str, room: &str) -> (User, WsClient) {
    let user = endpoint.guest(name).await;
    let ws = user.ws_in(room).await;
    (user, ws)
}

#[tokio::test]
async fn paused_readers_catch_up_in_bounded_server_memory() {
    let args = ["--send-rate", "0", "--frame-rate", "0", "--write-timeout-secs", "600"];
    let Some(server) = ServerProcess::start(&args) else { return };
    let endpoint = server.endpoint();
    let mut readers = Vec::new();
    for r in 0..3 {
        readers.push(reader(&endpoint, &format!("reader{r}"), "general").await);
    }
    // 20 MB of 1 KB messages while the readers read nothing.
    let count = 20_000;
    post_bulk(&endpoint, "general", count, 1000).await;
    let before = server.peak_rss_kib();

    for (r, (_, ws)) in readers.iter_mut().enumerate() {
        let ids = read_ids_until(ws, count as u64).await;
        assert_exactly(&ids, 1, count as u64, &format!("reader{r}"));
    }
    let after = server.peak_rss_kib();
    let grew_mib = after.saturating_sub(before) / 1024;
    eprintln!("peak RSS {before} KiB after the writes, {after} KiB after 3 readers caught up (+{grew_mib} MiB)");
    assert!(grew_mib < 16, "three readers catching up on 20 MB raised the server's peak RSS by {grew_mib} MiB");
}

#[tokio::test]
async fn a_socket_whose_writes_stall_is_closed_and_resumes_without_a_gap() {
    let args = ["--send-rate", "0", "--write-timeout-secs", "2"];
    let Some(server) = ServerProcess::start(&args) else { return };
    let endpoint = server.endpoint();
    let (reader, mut ws) = reader(&endpoint, "stuck", "general").await;
    let client = ws.local_addr();
    assert!(server.holds_connection(client));
    // Enough to fill the socket's buffers many times over.
    let count = 12_000;
    post_bulk(&endpoint, "general", count, 1000).await;
    // The server drops the socket once its writes made no progress for 2 s.
    let closed = server.wait_until(Duration::from_secs(20), |s| !s.holds_connection(client)).await;
    assert!(closed, "the stuck socket was never closed");

    // What reached the client arrives in order; then the socket ends.
    let mut seen = Vec::new();
    while let Some(event) = next_or_end(&mut ws).await {
        if event["type"] == "message" {
            seen.push(id(&event));
        }
    }
    let last_seen = seen.last().copied().unwrap_or(0);
    assert_exactly(&seen, 1, last_seen, "before the close");
    assert!(last_seen < count as u64, "the whole room fit in the buffers; nothing was tested");

    // It resumes after what it saw: the rest, no gap, no duplicate.
    let mut again = reader.ws().await;
    let joined = again.join_after("general", last_seen).await;
    let mut ids: Vec<u64> = joined["history"].as_array().unwrap().iter().map(id).collect();
    let mut after = ids.last().copied().unwrap_or(last_seen);
    while joined["has_more"] == true && after < count as u64 {
        let page = reader.messages("general", &format!("after={after}&limit=500")).await;
        ids.extend(page.iter().map(id));
        after = ids.last().copied().unwrap_or(after);
    }
    assert_exactly(&ids, last_seen + 1, count as u64, "after resuming");
}

/// The next event, or `None` once the socket has ended (closed or reset).
async fn next_or_end(ws: &mut WsClient) -> Option<Value> {
    ws.next_event_or_end().await
}

#[tokio::test]
async fn a_session_that_ends_closes_its_socket_even_while_it_is_stuck() {
    let args = ["--send-rate", "0", "--write-timeout-secs", "600"];
    let Some(server) = ServerProcess::start(&args) else { return };
    let endpoint = server.endpoint();
    let (reader, ws) = reader(&endpoint, "stuck", "general").await;
    let client = ws.local_addr();
    post_bulk(&endpoint, "general", 12_000, 1000).await;
    assert!(server.holds_connection(client), "closed before the session ended");
    // Log out (the HTTP request is on another connection).
    let (status, body) = reader.post("/api/logout", serde_json::json!({})).await;
    assert_eq!(status, 204, "{body}");
    let closed = server.wait_until(Duration::from_secs(5), |s| !s.holds_connection(client)).await;
    assert!(closed, "a socket stuck writing outlived its session");
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_closed() {
    let Some(server) = ServerProcess::start(&["--ping-secs", "1"]) else { return };
    let endpoint = server.endpoint();
    // A live client: its reads answer pings.
    let (_live_user, mut live) = reader(&endpoint, "live", "general").await;
    // A dead one: joined, then never reads again (so never answers).
    let (_dead_user, dead) = reader(&endpoint, "dead", "general").await;
    let dead_end = dead.local_addr();
    let live_end = live.local_addr();
    let live_reads = async {
        loop {
            let _ = live.try_next_event(Duration::from_millis(200)).await;
        }
    };
    let closed = tokio::select! {
        closed = server.wait_until(Duration::from_secs(6), |s| !s.holds_connection(dead_end)) => closed,
        _ = live_reads => unreachable!(),
    };
    assert!(closed, "a socket that answered no ping for 6 periods is still open");
    assert!(server.holds_connection(live_end), "the socket that answered was closed too");
    // The live one is still served.
    live.send_and_echo("general", "still here", "l1").await;
}
