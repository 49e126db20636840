//! Sockets that stop reading: a reader that pauses while its room is busy
//! catches up in bounded server memory; one whose writes stall for
//! `--write-timeout-secs` is closed and resumes with `after` without a gap;
//! a session that ends closes its stuck socket too; a peer that answers no
//! ping is closed.
//!
//! The server runs as a child process (`common::process`) so its memory and
//! descriptors are read from `/proc/<pid>`.
//!
//! `CHATROOM_SLOW_PAUSE_SECS` (default 6) sets how long the readers of the
//! busy-room test stop reading (30 for the figure); its
//! `--write-timeout-secs` is half of it. It prints (`FIGURE`) the server's
//! peak RSS growth and how many readers resumed on their socket or were
//! closed and resumed with `after`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::{Endpoint, User, WsClient, id, print_figure};
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

fn slow_pause() -> Duration {
    let secs = std::env::var("CHATROOM_SLOW_PAUSE_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(6);
    Duration::from_secs(secs.max(2))
}

/// Text size of the busy room's messages, and each writer's pace.
const BUSY_TEXT: usize = 4000;
const BUSY_EVERY: Duration = Duration::from_millis(10);

/// A writer of the busy room: a message of [`BUSY_TEXT`] every
/// [`BUSY_EVERY`] until `stop`, reading its socket meanwhile (it is no slow
/// reader). Returns once all it sent are acknowledged: how many.
async fn busy_writer(mut ws: WsClient, w: usize, stop: Arc<AtomicBool>) -> usize {
    let text = "w".repeat(BUSY_TEXT);
    let mine = format!("b{w}-");
    let mut tick = tokio::time::interval(BUSY_EVERY);
    let (mut sent, mut acknowledged) = (0, 0);
    let is_mine = |event: &Value| event["type"] == "message" && event["client_id"].as_str().is_some_and(|c| c.starts_with(&mine));
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                ws.send_message("general", &text, &format!("{mine}{sent}")).await;
                sent += 1;
            }
            event = ws.next_event() => acknowledged += usize::from(is_mine(&event)),
        }
    }
    while acknowledged < sent {
        acknowledged += usize::from(is_mine(&ws.next_event().await));
    }
    sent
}

/// A reader that stops reading for `pause`, then reads until it has seen
/// id `last` or its socket ends; the ids it saw, and whether it ended.
async fn pause_then_read(mut ws: WsClient, pause: Duration, mut last: tokio::sync::watch::Receiver<Option<u64>>) -> (Vec<u64>, bool, WsClient) {
    tokio::time::sleep(pause).await; // the fault: this client does not read
    let mut ids = Vec::new();
    loop {
        let known_last = *last.borrow_and_update();
        if known_last.is_some_and(|l| ids.last().is_some_and(|&seen| seen >= l)) {
            return (ids, false, ws);
        }
        tokio::select! {
            _ = last.changed() => {}
            event = ws.next_event_or_end() => match event {
                Some(event) if event["type"] == "message" => ids.push(id(&event)),
                Some(_) => {}
                None => return (ids, true, ws),
            }
        }
    }
}

/// A reader whose socket ended resumes with `after` on a new one: the
/// `joined` history, then pages of events until `last`.
async fn resume_after(user: &User, seen_last: u64, last: u64) -> Vec<u64> {
    let mut again = user.ws().await;
    let joined = again.join_after("general", seen_last).await;
    let mut ids: Vec<u64> = joined["history"].as_array().expect("a history").iter().map(id).collect();
    while ids.last().copied().unwrap_or(seen_last) < last {
        let after = ids.last().copied().unwrap_or(seen_last);
        let page = user.messages("general", &format!("after={after}&limit=500")).await;
        assert!(!page.is_empty(), "no messages after {after}, expected up to {last}");
        ids.extend(page.iter().map(id));
    }
    ids
}

/// Readers that stop reading in a busy room, some for longer than the
/// write timeout, some for less: the server's memory stays bounded (not
/// proportional to what they missed), and each then sees every message
/// once, in order: on its socket, or (closed for stuck writes) by
/// resuming with `after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_paused_in_a_busy_room_get_everything_in_order_in_bounded_memory() {
    let pause = slow_pause();
    let write_timeout = (pause.as_secs() / 2).max(1);
    let timeout_arg = write_timeout.to_string();
    let args = ["--send-rate", "0", "--frame-rate", "0", "--ping-secs", "0", "--write-timeout-secs", &timeout_arg];
    let Some(server) = ServerProcess::start(&args) else { return };
    let endpoint = server.endpoint();
    const READERS: usize = 10;
    const WRITERS: usize = 4;
    // Half pause for the whole time (stuck longer than the write timeout),
    // half for less than the write timeout (they must never be closed).
    let short_pause = Duration::from_millis(write_timeout * 1000 / 2);
    let mut readers = Vec::new();
    for r in 0..READERS {
        readers.push(reader(&endpoint, &format!("slow{r}"), "general").await);
    }
    let mut writer_sockets = Vec::new();
    for w in 0..WRITERS {
        writer_sockets.push(reader(&endpoint, &format!("busy{w}"), "general").await.1);
    }
    let baseline_kib = server.rss_kib();

    let (tell_last, last) = tokio::sync::watch::channel(None);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = writer_sockets.into_iter().enumerate().map(|(w, ws)| tokio::spawn(busy_writer(ws, w, stop.clone()))).collect();
    let mut paused = Vec::new();
    let mut users = Vec::new();
    for (r, (user, ws)) in readers.into_iter().enumerate() {
        let this_pause = if r % 2 == 0 { pause } else { short_pause };
        paused.push(tokio::spawn(pause_then_read(ws, this_pause, last.clone())));
        users.push(user);
    }
    // The room stays busy for the whole pause, and a little longer.
    let mut peak_sampled_kib = baseline_kib;
    while started.elapsed() < pause + Duration::from_secs(1) {
        peak_sampled_kib = peak_sampled_kib.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await; // a sampling period, not a synchronisation
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for writer in writers {
        sent += writer.await.expect("a busy writer");
    }
    // Every send is stored (no limits here); the last id is the total.
    let newest = users[0].messages("general", "limit=1").await;
    let last_id = newest.last().map(id).expect("messages were stored");
    assert_eq!(last_id, sent as u64, "every busy send was stored");
    tell_last.send(Some(last_id)).expect("the readers listen");

    let (mut on_socket, mut resumed) = (0, 0);
    for (r, task) in paused.into_iter().enumerate() {
        let (mut ids, ended, _ws) = task.await.expect("a paused reader");
        let who = format!("slow{r} (paused {:?})", if r % 2 == 0 { pause } else { short_pause });
        if ended {
            assert!(r % 2 == 0, "{who} was closed, though its writes stalled for less than the write timeout");
            let seen_last = ids.last().copied().unwrap_or(0);
            ids.extend(resume_after(&users[r], seen_last, last_id).await);
            resumed += 1;
        } else {
            on_socket += 1;
        }
        assert_exactly(&ids, 1, last_id, &who);
    }
    let peak_kib = server.peak_rss_kib().max(peak_sampled_kib);
    let grew_mib = peak_kib.saturating_sub(baseline_kib) as f64 / 1024.0;
    let missed_mib = (last_id as usize * BUSY_TEXT) as f64 / (1024.0 * 1024.0);
    print_figure(&format!(
        "{READERS} readers paused {pause:?} / {short_pause:?} (write timeout {write_timeout} s) while {WRITERS} writers sent {last_id} messages ({missed_mib:.1} MiB each reader missed): server RSS {baseline_kib} KiB → peak {peak_kib} KiB (+{grew_mib:.1} MiB); {on_socket} caught up on their socket, {resumed} were closed and resumed with after"
    ));
    // Bounded: the room's channel (it holds the last events whoever reads),
    // plus per reader its queue and a catch-up page, plus slack; not what
    // the readers missed (that would be READERS × missed).
    let per_message = BUSY_TEXT + 512;
    let bound_mib = (chatroom::fanout::ROOM_CHANNEL_CAPACITY * per_message + READERS * (2 * chatroom::connection::MAX_QUEUED_BYTES + 100 * per_message)) as f64
        / (1024.0 * 1024.0)
        + 24.0;
    assert!(grew_mib < bound_mib, "the server's peak RSS grew {grew_mib:.1} MiB (bound {bound_mib:.1} MiB) while readers paused");
}
