//! Readers that stop reading for a while in a busy room: the server's
//! memory stays bounded (it does not grow with what they missed), and each
//! then sees every message once, in order — on its socket, or, when its
//! writes stalled for `--write-timeout-secs` and it was dropped, by
//! resuming with `after` from the last id it saw.
//!
//! The server runs as a child process (`common::process`) so its memory is
//! read from `/proc/<pid>`. This suite is a test binary of its own: the
//! busy room loads the machine, which would upset the timing of the
//! neighbouring tests in tests/slow_readers.rs (pings, stalls).
//!
//! `CHATROOM_SLOW_PAUSE_SECS` (default 6) sets how long half the readers
//! stop reading (30 for the figure); `--write-timeout-secs` is half
//! of it, and the other half pause for half the write timeout (so they must
//! never be dropped). Printed (`FIGURE`): the server's peak RSS growth, and
//! how many readers caught up on their socket or were dropped and resumed.
//! In the short default run the kernel's socket buffers (megabytes on
//! loopback) may hold all a reader missed, so none is dropped; with 30 s
//! the long-paused ones are, and the memory bound is far below what they
//! missed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::{Endpoint, TIMEOUT, User, WsClient, id, print_figure};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn reader(endpoint: &Endpoint, name: &str, room: &str) -> (User, WsClient) {
    let user = endpoint.guest(name).await;
    let ws = user.ws_in(room).await;
    (user, ws)
}

fn assert_exactly(ids: &[u64], first: u64, last: u64, who: &str) {
    let expected: Vec<u64> = (first..=last).collect();
    assert!(ids == expected, "{who}: {} ids, first {:?}, last {:?}; not exactly {first}..={last} in order", ids.len(), ids.first(), ids.last());
}

fn slow_pause() -> Duration {
    let secs = std::env::var("CHATROOM_SLOW_PAUSE_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(6);
    Duration::from_secs(secs.max(2))
}

/// Text size of the busy room's messages, and each writer's pace.
const BUSY_TEXT: usize = 4000;
const BUSY_EVERY: Duration = Duration::from_millis(10);

/// A writer of the busy room: sends a message of [`BUSY_TEXT`] every
/// [`BUSY_EVERY`] until `stop`, while a task of its own drains its socket
/// (it is no slow reader; it only looks for its own echoes, without
/// parsing the room's traffic). Returns once all it sent are stored: how
/// many.
async fn busy_writer(ws: WsClient, w: usize, stop: Arc<AtomicBool>) -> usize {
    let (mut sink, mut stream) = ws.into_stream().split();
    let mine = format!("\"client_id\":\"b{w}-");
    let (tell_echoes, mut echoes) = tokio::sync::watch::channel(0usize);
    let drain = tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            if let WsMessage::Text(text) = frame
                && text.as_str().contains(&mine)
            {
                tell_echoes.send_modify(|n| *n += 1);
            }
        }
    });
    let text = "w".repeat(BUSY_TEXT);
    let mut tick = tokio::time::interval(BUSY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let frame = json!({"type": "send", "room": "general", "text": text, "client_id": format!("b{w}-{sent}")});
        tokio::time::timeout(TIMEOUT, sink.send(WsMessage::text(frame.to_string()))).await.expect("the server reads the writer").expect("a send");
        sent += 1;
    }
    tokio::time::timeout(TIMEOUT, echoes.wait_for(|&n| n >= sent)).await.expect("every send echoed").expect("the drain runs");
    drain.abort();
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
    const READERS: usize = 20;
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
    let paused_mib = peak_sampled_kib.saturating_sub(baseline_kib) as f64 / 1024.0;
    let missed_mib = (last_id as usize * BUSY_TEXT) as f64 / (1024.0 * 1024.0);
    print_figure(&format!(
        "{READERS} readers paused {pause:?} / {short_pause:?} (write timeout {write_timeout} s) while {WRITERS} writers sent {last_id} messages ({missed_mib:.1} MiB each reader missed): server RSS {baseline_kib} KiB → peak {peak_kib} KiB (+{grew_mib:.1} MiB; +{paused_mib:.1} MiB sampled while they paused); {on_socket} caught up on their socket, {resumed} were closed and resumed with after"
    ));
    // Bounded: the room's channel and its de-duplication window (they hold
    // the last events whoever reads), per reader its queue and a catch-up
    // page, plus slack for the resumed readers' pages of 500 and the
    // allocator; not what the readers missed (READERS × missed).
    let per_message = BUSY_TEXT + 512;
    let room_bytes = (chatroom::fanout::ROOM_CHANNEL_CAPACITY + chatroom::store::DEDUP_WINDOW) * per_message;
    let reader_bytes = READERS * (2 * chatroom::connection::MAX_QUEUED_BYTES + 100 * per_message);
    let bound_mib = (room_bytes + reader_bytes) as f64 / (1024.0 * 1024.0) + 32.0;
    assert!(grew_mib < bound_mib, "the server's peak RSS grew {grew_mib:.1} MiB (bound {bound_mib:.1} MiB) while readers paused");
}
