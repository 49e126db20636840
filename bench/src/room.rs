//! Room: an ordinary chat room at a human pace, to see what the server's
//! sockets do to small frames (TCP_NODELAY, Nagle's algorithm).
//!
//! `--guests` (20) guests join one room; each sends a message about once a
//! `--interval-secs` (1 s; each gap drawn evenly from half to one and a half
//! of it, so senders do not line up) for `--room-secs` (20 s). Each guest
//! times its own **acknowledgement** — from just before its `send` frame is
//! written to its own `message` echo, the one with its `client_id` — and
//! every other guest times the **delivery** of the same message. The send
//! time travels in the `client_id` (`run.sender.seq.sent_µs`, as in
//! fan-out), so every (receiver, sender, seq) is also checked for loss and
//! duplicates.
//!
//! The generator's WebSockets do **not** set TCP_NODELAY here (unless
//! `--client-nodelay`): a browser or an ordinary client may not, and then
//! its kernel delays the ACKs of what it receives (Linux: up to 40 ms, its
//! minimum delayed-ACK timeout) when it has nothing to send back. A server
//! socket with Nagle's algorithm on holds a small frame while an earlier one
//! is unacknowledged, so a frame that follows another within ~40 ms waits
//! for that delayed ACK: hence the share of acknowledgements ≥ 35 ms.
//!
//! A fresh server per run; with `--compare-bin` the two binaries run in
//! turns (new, old, new, old, …).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{self, Ws};
use crate::fanout::{Tag, client_id, parse_client_id};
use crate::stats::{Percentiles, ms};
use crate::target::Target;

/// An acknowledgement or delivery this late counts as "slow": a frame held
/// by Nagle's algorithm until a delayed ACK (~40 ms) lands above it.
pub const SLOW_US: u32 = 35_000;
const ROOM: &str = "bench-room";
const READ_BUFFER: usize = 4 * 1024;

#[derive(Debug, Clone)]
pub struct RoomOpts {
    pub guests: usize,
    pub secs: f64,
    /// Mean time between two sends of one guest.
    pub interval: f64,
    pub text_bytes: usize,
    /// Set TCP_NODELAY on the generator's sockets too.
    pub client_nodelay: bool,
    /// Turn TCP_QUICKACK off after every read.
    pub delayed_ack: bool,
    pub tag: String,
}

/// Latencies of one kind, with how many were slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub p: Percentiles,
    pub count: u64,
    /// At least [`SLOW_US`].
    pub slow: u64,
}

impl Latencies {
    fn of(samples: Vec<u32>) -> Self {
        let slow = samples.iter().filter(|&&us| us >= SLOW_US).count() as u64;
        Self { count: samples.len() as u64, slow, p: Percentiles::of(samples) }
    }

    /// Percentage of samples ≥ [`SLOW_US`].
    pub fn slow_pct(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.slow as f64 * 100.0 / self.count as f64 }
    }
}

#[derive(Debug, Clone)]
pub struct RoomResult {
    pub sent: u64,
    /// Own echoes.
    pub ack: Latencies,
    /// Everyone else's copies.
    pub delivery: Latencies,
    pub lost: u64,
    pub dups: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl RoomResult {
    pub fn one_line(&self, label: &str) -> String {
        format!(
            "{label}: {} sends, {} acks p50/p99/max {} / {} / {}, ≥ 35 ms {:.1}% ({}); deliveries p50/p99/max {} / {} / {}, ≥ 35 ms {:.1}%; lost {}, dup {}, errors {}{}",
            self.sent,
            self.ack.count,
            ms(self.ack.p.p50),
            ms(self.ack.p.p99),
            ms(self.ack.p.max),
            self.ack.slow_pct(),
            self.ack.slow,
            ms(self.delivery.p.p50),
            ms(self.delivery.p.p99),
            ms(self.delivery.p.max),
            self.delivery.slow_pct(),
            self.lost,
            self.dups,
            self.errors,
            self.first_error.as_ref().map_or(String::new(), |e| format!(", first error: {e}")),
        )
    }
}

#[derive(Default)]
struct Recorder {
    run: u32,
    acks: Vec<u32>,
    deliveries: Vec<u32>,
    seen: HashSet<(u32, u32, u32)>,
    dups: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn on_frame(&mut self, receiver: u32, frame: &str, t0: Instant) {
        if frame.starts_with(r#"{"type":"error""#) {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(frame.chars().take(200).collect());
            }
            return;
        }
        if !frame.starts_with(r#"{"type":"message""#) {
            return;
        }
        let Some(tag) = parse_client_id(frame) else { return };
        if tag.phase != self.run {
            return;
        }
        if !self.seen.insert((receiver, tag.sender, tag.seq)) {
            self.dups += 1;
            return;
        }
        let latency = (t0.elapsed().as_micros() as u64).saturating_sub(tag.scheduled_us);
        let latency = u32::try_from(latency).unwrap_or(u32::MAX);
        if receiver == tag.sender { self.acks.push(latency) } else { self.deliveries.push(latency) }
    }
}

type Sink = SplitSink<Ws, WsMessage>;

/// One run on `target`: connect, chat for `opts.secs`, wait for the last
/// copies, close. `run` tags this run's messages.
pub async fn run(target: &Target, opts: &RoomOpts, run: u32) -> Result<RoomResult, String> {
    let t0 = Instant::now();
    target.create_rooms(&format!("{}radmin", opts.tag), &[ROOM.to_string()]).await?;
    let connected: Vec<Result<(usize, Ws), String>> = futures::stream::iter(0..opts.guests)
        .map(|i| connect(target, opts, i))
        .buffer_unordered(opts.guests.max(1))
        .collect()
        .await;
    let recorder = Rc::new(RefCell::new(Recorder { run, ..Recorder::default() }));
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for result in connected {
        let (i, ws) = result?;
        let fd = opts.delayed_ack.then(|| std::os::fd::AsRawFd::as_raw_fd(ws.get_ref()));
        let (sink, stream) = ws.split();
        sinks.push((i, sink));
        readers.push(tokio::task::spawn_local(read_loop(i as u32, stream, recorder.clone(), t0, fd)));
    }
    let senders: Vec<_> = sinks
        .into_iter()
        .map(|(i, sink)| tokio::task::spawn_local(send_loop(sink, i as u32, run, opts.clone(), t0)))
        .collect();
    let mut sent = 0;
    let mut sinks = Vec::new();
    let mut send_error = None;
    for task in senders {
        let (sink, count, error) = task.await.map_err(|e| e.to_string())?;
        sent += count;
        sinks.push(sink);
        send_error = send_error.or(error);
    }
    if let Some(e) = send_error {
        return Err(format!("room: a send failed: {e}"));
    }
    let expected = sent * opts.guests as u64;
    wait_for(&recorder, expected, Duration::from_secs(2)).await;
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    for reader in readers {
        reader.abort();
    }
    let mut rec = recorder.borrow_mut();
    let unique = rec.seen.len() as u64;
    Ok(RoomResult {
        sent,
        ack: Latencies::of(std::mem::take(&mut rec.acks)),
        delivery: Latencies::of(std::mem::take(&mut rec.deliveries)),
        lost: expected.saturating_sub(unique),
        dups: rec.dups,
        errors: rec.errors,
        first_error: rec.first_error.take(),
    })
}

async fn connect(target: &Target, opts: &RoomOpts, i: usize) -> Result<(usize, Ws), String> {
    let cookie = target.login(&format!("{}g{i}", opts.tag)).await?;
    let mut ws = client::ws_connect_with(target.addr, cookie.as_deref(), READ_BUFFER, opts.client_nodelay).await?;
    client::join(&mut ws, ROOM).await?;
    Ok((i, ws))
}

async fn read_loop(receiver: u32, mut stream: SplitStream<Ws>, recorder: Rc<RefCell<Recorder>>, t0: Instant, delayed_ack: Option<i32>) {
    while let Some(Ok(frame)) = stream.next().await {
        if let Some(fd) = delayed_ack {
            no_quick_ack(fd);
        }
        if let WsMessage::Text(text) = frame {
            recorder.borrow_mut().on_frame(receiver, text.as_str(), t0);
        }
    }
}

/// A small deterministic generator (splitmix64): the gaps only need to
/// look irregular, and runs stay comparable.
struct Gaps(u64);

impl Gaps {
    /// Evenly in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends one message per gap (½ to 1½ × the interval, the first one
/// anywhere in the first interval) until `secs` have passed. Each frame is
/// written and flushed on its own, as a chat client does.
async fn send_loop(mut sink: Sink, sender: u32, run: u32, opts: RoomOpts, t0: Instant) -> (Sink, u64, Option<String>) {
    let mut gaps = Gaps(u64::from(sender) << 32 | u64::from(run));
    let interval = Duration::from_secs_f64(opts.interval);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.secs);
    let mut due = start + interval.mul_f64(gaps.unit());
    let text = "x".repeat(opts.text_bytes);
    let mut seq = 0;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let tag = Tag { phase: run, sender, seq, scheduled_us: t0.elapsed().as_micros() as u64 };
        let frame = format!(r#"{{"type":"send","room":"{ROOM}","text":"{text}","client_id":"{}"}}"#, client_id(&tag));
        if let Err(e) = sink.send(WsMessage::Text(frame.into())).await {
            return (sink, u64::from(seq), Some(e.to_string()));
        }
        seq += 1;
        due += interval.mul_f64(0.5 + gaps.unit());
    }
    (sink, u64::from(seq), None)
}

/// Until `expected` copies arrived, or nothing new came for `quiet`.
async fn wait_for(recorder: &Rc<RefCell<Recorder>>, expected: u64, quiet: Duration) {
    let mut last = 0;
    let mut quiet_since = Instant::now();
    loop {
        let got = recorder.borrow().seen.len() as u64;
        if got >= expected || quiet_since.elapsed() >= quiet {
            return;
        }
        if got != last {
            last = got;
            quiet_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The median of a figure over runs, with every run's value when there are
/// several: "12.3 ms (runs: 10.1 ms, 12.3 ms, 15.0 ms)".
pub fn median_text<T: Copy + PartialOrd>(values: &[T], show: impl Fn(T) -> String) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let Some(&median) = sorted.get(sorted.len() / 2) else { return String::new() };
    if values.len() == 1 {
        return show(median);
    }
    let all: Vec<String> = values.iter().map(|&v| show(v)).collect();
    format!("{} (median of {})", show(median), all.join(", "))
}

/// `setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, 0)`: Linux then delays the
/// ACKs of what arrives (until its delayed-ACK timer, or a reply to carry
/// them) instead of sending them at once. It does not stick, so it is set
/// again after each read.
fn no_quick_ack(fd: i32) {
    const IPPROTO_TCP: i32 = 6;
    const TCP_QUICKACK: i32 = 12;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    let off: i32 = 0;
    // SAFETY: `fd` is an open socket owned by a live WebSocket; the value
    // is a 4-byte int that outlives the call.
    unsafe {
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, (&raw const off).cast(), 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_echo_is_an_ack_others_are_deliveries() {
        let t0 = Instant::now();
        let mut rec = Recorder { run: 1, ..Recorder::default() };
        let frame = |run: u32, sender: u32, seq: u32| {
            let tag = Tag { phase: run, sender, seq, scheduled_us: 0 };
            format!(r#"{{"type":"message","id":1,"room":"r","user":"u","text":"x","ts":"t","client_id":"{}"}}"#, client_id(&tag))
        };
        rec.on_frame(3, &frame(1, 3, 0), t0);
        rec.on_frame(4, &frame(1, 3, 0), t0);
        rec.on_frame(4, &frame(1, 3, 0), t0);
        rec.on_frame(4, &frame(2, 3, 1), t0); // another run
        rec.on_frame(4, r#"{"type":"error","code":"x"}"#, t0);
        assert_eq!((rec.acks.len(), rec.deliveries.len(), rec.dups, rec.errors), (1, 1, 1, 1));
    }

    #[test]
    fn slow_share_and_medians() {
        let l = Latencies::of(vec![1_000, 34_999, 35_000, 40_000]);
        assert_eq!((l.count, l.slow), (4, 2));
        assert!((l.slow_pct() - 50.0).abs() < 1e-9);
        assert_eq!(median_text(&[3.0, 1.0, 2.0], |v| format!("{v}")), "2 (median of 3, 1, 2)");
        assert_eq!(median_text(&[7u32], |v| v.to_string()), "7");
    }

    #[test]
    fn gaps_stay_in_range() {
        let mut g = Gaps(42);
        assert!((0..1000).map(|_| g.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
