//! One client floods while fifty others chat: the flooder is held to its
//! rates, the others lose nothing and stay fast.
//!
//! The real binary runs as a child process (`common::process`), with the
//! default limits (`--send-rate 10 --send-burst 30`, `--frame-rate 100
//! --frame-burst 200`), so its CPU is its own. The suite first measures 50
//! chatters' send→delivery latency (every chatter's message as seen by all
//! 50) in a quiet room, then again in a room where one more client sends
//! as fast as it can: valid sends far beyond its rate, malformed JSON,
//! binary frames, sends and joins to rooms it is not in or that do not
//! exist, and (on a second socket, over and over) frames over 64 KiB.
//!
//! Asserted: each chatter sees every chatter message once, in seq order,
//! and none of theirs is refused; the flooder's main socket gets no more
//! sends stored than its bucket allows, the rest refused with
//! `rate_limited`; its junk gets the documented answers; every oversize
//! frame closes its socket with `1009`; the flooder's stored messages are
//! exactly the ones it was told were stored (or were in flight when it
//! left), none it was refused; the server still serves a newcomer.
//! Printed (`FIGURE` lines): both p99s and their ratio (the target is ≤ 2×;
//! timing is a figure, not an assertion), the flooder's counts.
//!
//! `CHATROOM_FLOOD_SECS` (default 5) sets how long each run chats (each
//! chatter sends 2 messages a second).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::{TIMEOUT, User, WsClient, print_figure};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const CHATTERS: usize = 50;
/// Each chatter sends one message this often (well under `--send-rate`).
const CHAT_INTERVAL: Duration = Duration::from_millis(500);
/// The server's default send bucket (README: `--send-rate` / `--send-burst`).
const SEND_RATE: f64 = 10.0;
const SEND_BURST: f64 = 30.0;

fn run_length() -> Duration {
    let secs = std::env::var("CHATROOM_FLOOD_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(5);
    Duration::from_secs(secs.max(1))
}

/// What one chatter saw in a run.
struct ChatterLog {
    /// Send→delivery of each chatter message it received, in µs.
    latencies_us: Vec<u64>,
    /// The chatter messages it received (by client_id), and their ids in arrival order.
    received: Vec<String>,
    ids: Vec<u64>,
}

/// One chatter: sends `count` messages, one per [`CHAT_INTERVAL`] from
/// `first_send`, and reads until it has every chatter's message. Each text
/// carries its send time (µs since `base`), so every receiver measures its
/// latency.
async fn chat(mut ws: WsClient, me: usize, room: String, count: usize, base: Instant, first_send: tokio::time::Instant) -> ChatterLog {
    let expected = CHATTERS * count;
    let mut log = ChatterLog { latencies_us: Vec::new(), received: Vec::new(), ids: Vec::new() };
    let mut sent = 0;
    let mut next_send = first_send;
    while log.received.len() < expected || sent < count {
        let sending = sent < count;
        tokio::select! {
            _ = tokio::time::sleep_until(next_send), if sending => {
                let sent_at = base.elapsed().as_micros();
                ws.send_message(&room, &format!("{sent_at}"), &format!("c{me}-{sent}")).await;
                sent += 1;
                next_send += CHAT_INTERVAL;
            }
            event = ws.next_event() => {
                let arrived = base.elapsed().as_micros() as u64;
                match event["type"].as_str() {
                    Some("message") if event["user"].as_str().is_some_and(|u| u.starts_with("chatter")) => {
                        let sent_at: u64 = event["text"].as_str().and_then(|t| t.parse().ok()).expect("a chatter's text is its send time");
                        log.latencies_us.push(arrived.saturating_sub(sent_at));
                        log.received.push(event["client_id"].as_str().expect("a client_id").to_string());
                        log.ids.push(common::id(&event));
                    }
                    Some("message") => log.ids.push(common::id(&event)),
                    Some("error") => panic!("chatter{me:02} was refused: {event}"),
                    _ => {}
                }
            }
        }
    }
    log
}

/// Runs the 50 chatters in `room` for the run's length; asserts that each
/// saw every chatter message once, in seq order; returns all latencies.
async fn chat_run(chatters: &[User], room: &str) -> Vec<u64> {
    let count = (run_length().as_millis() / CHAT_INTERVAL.as_millis()) as usize;
    let mut sockets = Vec::new();
    for user in chatters {
        sockets.push(user.ws_in(room).await);
    }
    let base = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(me, ws)| {
            // Spread the chatters over the interval.
            let first = start + CHAT_INTERVAL * me as u32 / CHATTERS as u32;
            tokio::spawn(chat(ws, me, room.to_string(), count, base, first))
        })
        .collect();
    let everyone: BTreeSet<String> = (0..CHATTERS).flat_map(|c| (0..count).map(move |i| format!("c{c}-{i}"))).collect();
    let mut latencies = Vec::new();
    for (me, task) in tasks.into_iter().enumerate() {
        let log = task.await.unwrap_or_else(|e| panic!("chatter{me:02} failed: {e}"));
        let received: BTreeSet<String> = log.received.iter().cloned().collect();
        assert_eq!(received.len(), log.received.len(), "chatter{me:02} got a message twice");
        assert!(received == everyone, "chatter{me:02} missed {:?}", everyone.difference(&received).take(5).collect::<Vec<_>>());
        assert!(log.ids.windows(2).all(|w| w[0] < w[1]), "chatter{me:02} saw ids out of order");
        latencies.extend(log.latencies_us);
    }
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Duration::from_micros(sorted[index])
}

/// What the flooder's main socket was answered.
#[derive(Default, Debug)]
struct FloodTally {
    frames_sent: u64,
    /// Its sends it was told were stored (echo), by client_id.
    stored: BTreeSet<String>,
    /// Its sends refused with `rate_limited`, by client_id.
    refused: BTreeSet<String>,
    /// Error frames by code (without a client_id, or for the junk).
    errors: BTreeMap<String, u64>,
}

/// The flooder's main socket: sends as fast as it can until `until`, a
/// cycle of six valid sends, malformed JSON, a binary frame, a send to a
/// room it has not joined and a join of a room that does not exist; reads
/// everything it is answered meanwhile.
async fn flood_main(ws: WsClient, room: &str, until: tokio::time::Instant) -> FloodTally {
    let (mut sink, mut stream) = ws.into_stream().split();
    let reader = tokio::spawn(async move {
        let mut tally = FloodTally::default();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(TIMEOUT, stream.next()).await {
            let WsMessage::Text(text) = frame else { continue };
            let event: Value = serde_json::from_str(text.as_str()).expect("a JSON frame");
            let client_id = event["client_id"].as_str().map(str::to_string);
            match (event["type"].as_str(), client_id) {
                (Some("message"), Some(cid)) if event["user"] == "flooder" => {
                    assert!(!tally.refused.contains(&cid), "{cid} refused, then stored");
                    assert!(tally.stored.insert(cid.clone()), "{cid} echoed twice");
                }
                (Some("error"), Some(cid)) if event["code"] == "rate_limited" => {
                    assert!(!tally.stored.contains(&cid), "{cid} stored, then refused");
                    assert!(tally.refused.insert(cid.clone()), "{cid} refused twice");
                }
                (Some("error"), _) => *tally.errors.entry(event["code"].as_str().unwrap_or("?").to_string()).or_default() += 1,
                _ => {}
            }
        }
        tally
    });
    let mut frames_sent = 0;
    for i in 0u64.. {
        if tokio::time::Instant::now() >= until {
            break;
        }
        let frame = match i % 10 {
            0..=5 => WsMessage::text(json!({"type": "send", "room": room, "text": format!("flood {i}"), "client_id": format!("f{i}")}).to_string()),
            6 => WsMessage::text("{\"type\":\"send\",\"room\":"),
            7 => WsMessage::binary(vec![0u8, 159, 146, 150]),
            8 => WsMessage::text(json!({"type": "send", "room": "not-joined-here", "text": "x", "client_id": format!("n{i}")}).to_string()),
            _ => WsMessage::text(json!({"type": "join", "room": "no-such-room"}).to_string()),
        };
        tokio::time::timeout(TIMEOUT, sink.send(frame)).await.expect("the server stopped reading the flooder").expect("a flood frame");
        frames_sent += 1;
    }
    let _ = sink.send(WsMessage::Close(None)).await;
    let mut tally = reader.await.expect("the flooder's reader");
    tally.frames_sent = frames_sent;
    tally
}

/// The flooder's second socket: over and over, opens, joins and sends a
/// frame over 64 KiB; each must be closed with 1009. How many it sent.
async fn flood_oversize(flooder: &User, room: &str, until: tokio::time::Instant) -> u64 {
    let oversize = "x".repeat(70 * 1024);
    let mut closed = 0;
    while tokio::time::Instant::now() < until {
        let mut ws = flooder.ws_in(room).await;
        ws.send_text(json!({"type": "send", "room": room, "text": oversize, "client_id": "big"}).to_string()).await;
        assert_eq!(ws.expect_close_code().await, 1009, "an oversize frame closes its socket with 1009");
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_held_to_its_rates_while_fifty_others_chat_unharmed() {
    let Some(server) = ServerProcess::start(&["--ping-secs", "0"]) else { return };
    let endpoint = server.endpoint();
    let mut chatters = Vec::new();
    for c in 0..CHATTERS {
        chatters.push(endpoint.guest(&format!("chatter{c:02}")).await);
    }
    chatters[0].create_room("quiet-run").await;
    chatters[0].create_room("flood-run").await;

    let quiet = chat_run(&chatters, "quiet-run").await;

    let flooder = endpoint.guest("flooder").await;
    let main = flooder.ws_in("flood-run").await;
    // The flood starts before the chatters and ends after them.
    let flood_ends = tokio::time::Instant::now() + run_length() + Duration::from_secs(3);
    let flood_started = Instant::now();
    let flooding = tokio::spawn(async move { flood_main(main, "flood-run", flood_ends).await });
    let oversize_user = flooder.on(&endpoint);
    let oversizing = tokio::spawn(async move { flood_oversize(&oversize_user, "flood-run", flood_ends).await });
    let flooded = chat_run(&chatters, "flood-run").await;
    let tally = flooding.await.expect("the flooder");
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let oversize_closed = oversizing.await.expect("the oversize flooder");

    let (quiet_p99, flood_p99) = (percentile(&quiet, 0.99), percentile(&flooded, 0.99));
    let ratio = flood_p99.as_secs_f64() / quiet_p99.as_secs_f64();
    print_figure(&format!(
        "{CHATTERS} chatters, {} deliveries per run: p50 {:?} quiet / {:?} flooded; p99 {quiet_p99:?} quiet / {flood_p99:?} flooded = {ratio:.2}x (target <= 2x)",
        quiet.len(),
        percentile(&quiet, 0.5),
        percentile(&flooded, 0.5),
    ));
    print_figure(&format!(
        "flooder: {} frames in {flood_secs:.1} s ({:.0}/s), {} sends stored, {} refused rate_limited, other errors {:?}; {oversize_closed} oversize frames each closed with 1009",
        tally.frames_sent,
        tally.frames_sent as f64 / flood_secs,
        tally.stored.len(),
        tally.refused.len(),
        tally.errors,
    ));

    // Held to its send bucket: a burst, then the rate (plus slack for
    // timing), while it sent far more.
    let allowed = (SEND_BURST + SEND_RATE * flood_secs * 1.2 + 5.0) as usize;
    assert!(tally.stored.len() <= allowed, "the flooder got {} sends stored in {flood_secs:.1} s (allowed {allowed})", tally.stored.len());
    assert!(tally.stored.len() >= SEND_BURST as usize, "the flooder's burst was not stored: {}", tally.stored.len());
    assert!(tally.refused.len() > tally.stored.len(), "the flooder was hardly refused: {tally:?}");
    // Its junk got the documented answers (the frame limit then drops most
    // of it, with at most one rate_limited a second).
    for code in ["invalid_json", "bad_request", "not_joined", "room_not_found", "rate_limited"] {
        assert!(tally.errors.contains_key(code), "no {code} error for the flooder's frames: {:?}", tally.errors);
    }
    assert!(oversize_closed > 0, "no oversize frame was sent");

    // On disk: the flooder's stored sends include every echoed one, none it
    // was refused, and no more than its bucket allows (echoes can be fewer:
    // a flooder's socket that lags behind the room reads some back only by
    // catching up, and it may leave first). Every chatter message is
    // stored once.
    let history = chatters[0].all_messages("flood-run").await;
    let stored_flood: BTreeSet<String> =
        history.iter().filter(|m| m["user"] == "flooder").map(|m| m["client_id"].as_str().unwrap().to_string()).collect();
    assert!(stored_flood.is_superset(&tally.stored), "a flood send echoed as stored is not in the history");
    assert!(stored_flood.len() <= allowed, "{} flood sends stored (allowed {allowed}), {} echoed", stored_flood.len(), tally.stored.len());
    assert!(stored_flood.is_disjoint(&tally.refused), "a refused flood send was stored");
    let chat_stored = history.iter().filter(|m| m["user"].as_str().is_some_and(|u| u.starts_with("chatter"))).count();
    assert_eq!(chat_stored, flooded.len() / CHATTERS, "every chatter message stored once");

    // Still serving: a newcomer, and the flooder on a fresh socket.
    let newcomer = endpoint.guest("newcomer").await;
    newcomer.ws_in("flood-run").await.send_and_echo_skipping_others("flood-run", "hello", "new-1").await;
    let health = endpoint.anonymous().get("/healthz").await;
    assert_eq!(health.0, 200, "{}", health.1);
}
