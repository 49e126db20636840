//! Fan-out: N clients across M rooms, senders at a scheduled rate, every
//! client receiving every message of its room (its own included).
//!
//! Open loop: message `seq` of a sender is *scheduled* at a fixed time and
//! its latency is measured from that time, so a server that stalls cannot
//! hide it by slowing the sender down. The scheduled time (microseconds
//! since the benchmark started) travels in the message's `client_id`:
//! `"{phase}.{sender}.{seq}.{scheduled_us}"`, which also lets every receiver
//! check that it got each message exactly once.
//!
//! The generator runs on one thread (a current-thread runtime). It reports
//! itself as the bottleneck when its CPU use nears a full core or when its
//! senders fall behind their schedule.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{self, Ws};
use crate::process::Usage;
use crate::stats::{Percentiles, cpu_per, thousands};
use crate::target::Target;

/// Most messages per second one sender connection sends: faster rooms get
/// more senders. (Chosen when chatroom capped every socket at 100 frames/s;
/// kept so that figures stay comparable across runs.)
pub const MAX_SENDER_RATE: f64 = 90.0;
/// p99 above this (or any loss) ends `--find-max`.
pub const MAX_P99_US: u32 = 50_000;
/// Receive buffer of each generator socket. tungstenite zero-fills it
/// before every read, so a big one costs the generator CPU.
const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 64;

#[derive(Debug, Clone)]
pub struct FanoutOpts {
    pub clients: usize,
    pub rooms: usize,
    pub text_bytes: usize,
    /// Most time to wait, after the last send, for deliveries to arrive.
    pub drain: Duration,
    /// A tag that keeps usernames unique across runs on one server.
    pub tag: String,
}

impl FanoutOpts {
    /// Messages per second each room must send for `delivered` deliveries/s.
    pub fn room_rate(&self, delivered: f64) -> f64 {
        delivered / self.clients as f64
    }
}

/// Figures of one phase (one rate, one duration).
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub target_delivered: f64,
    pub senders_per_room: usize,
    pub secs: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub dups: u64,
    pub lost: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Percentiles,
    /// How late senders sent, against their schedule.
    pub send_lag: Percentiles,
    /// How late a 1 ms timer fired on the generator's thread: high when
    /// the generator is busy or not scheduled.
    pub loop_lag: Percentiles,
    pub server_cpu: Option<Duration>,
    /// The kernel's part of `server_cpu`.
    pub server_sys: Option<Duration>,
    pub server_rss_kib: Option<u64>,
    /// Share of one core the generator used while sending.
    pub gen_cpu: f64,
}

impl PhaseResult {
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    /// Server CPU microseconds per delivered message.
    pub fn cpu_us_per_delivered(&self) -> Option<f64> {
        self.server_cpu.map(|c| cpu_per(c, self.delivered))
    }

    /// p99 ≤ 50 ms and nothing lost or duplicated.
    pub fn sustained(&self) -> bool {
        self.lost == 0 && self.dups == 0 && self.errors == 0 && self.latency.p99 <= MAX_P99_US
    }

    /// Whether the generator, not the server, limited this phase.
    pub fn generator_bound(&self) -> bool {
        self.gen_cpu > 0.90 || self.send_lag.p99 > 5_000
    }

    /// "12.3 µs (41% kernel)".
    pub fn cpu_text(&self) -> Option<String> {
        let per = self.cpu_us_per_delivered()?;
        let kernel = match (self.server_sys, self.server_cpu) {
            (Some(sys), Some(all)) if !all.is_zero() => sys.as_secs_f64() / all.as_secs_f64() * 100.0,
            _ => 0.0,
        };
        Some(format!("{per:.2} µs ({kernel:.0}% kernel)"))
    }

    pub fn one_line(&self, label: &str) -> String {
        format!(
            "{label}: {} delivered/s (asked {}; {} sends, {} expected deliveries), latency p50/p99/p99.9/max {}, lost {}, dup {}, errors {}, server CPU {}, generator {:.0}% of a core, send lag p99 {}, loop lag p99 {} max {}{}",
            thousands(self.delivered_per_sec()),
            thousands(self.target_delivered),
            self.sent,
            self.expected,
            self.latency.summary(),
            self.lost,
            self.dups,
            self.errors,
            self.cpu_text().unwrap_or_else(|| "n/a".into()),
            self.gen_cpu * 100.0,
            crate::stats::ms(self.send_lag.p99),
            crate::stats::ms(self.loop_lag.p99),
            crate::stats::ms(self.loop_lag.max),
            self.first_error.as_ref().map_or(String::new(), |e| format!(", first error: {e}")),
        )
    }
}

/// Where each (receiver, sender, seq) of a phase has its bit in `Seen`:
/// sender `room + k * rooms` is the room's `k`-th sender.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    rooms: u32,
    senders_per_room: u32,
    /// Messages per sender (the most any sender sends).
    per_sender: u32,
}

/// One bit per expected delivery: cheaper than a hash set at 100,000
/// deliveries a second, and it never grows mid-phase.
#[derive(Default)]
struct Seen {
    layout: Layout,
    bits: Vec<u64>,
    count: u64,
}

impl Seen {
    fn new(layout: Layout, receivers: u32) -> Self {
        let total = u64::from(receivers) * u64::from(layout.senders_per_room) * u64::from(layout.per_sender);
        Self { layout, bits: vec![0; total.div_ceil(64) as usize], count: 0 }
    }

    /// Marks a delivery; `None` if it does not belong to this phase's plan,
    /// `Some(false)` if it was seen before.
    fn insert(&mut self, receiver: u32, sender: u32, seq: u32) -> Option<bool> {
        let l = self.layout;
        let k = sender / l.rooms.max(1);
        if k >= l.senders_per_room || seq >= l.per_sender {
            return None;
        }
        let index = (u64::from(receiver) * u64::from(l.senders_per_room) + u64::from(k)) * u64::from(l.per_sender) + u64::from(seq);
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        let slot = self.bits.get_mut(word)?;
        let fresh = *slot & bit == 0;
        *slot |= bit;
        self.count += u64::from(fresh);
        Some(fresh)
    }

    fn len(&self) -> u64 {
        self.count
    }
}

/// What receivers saw during the current phase.
#[derive(Default)]
struct Recorder {
    phase: u32,
    latencies_us: Vec<u32>,
    seen: Seen,
    dups: u64,
    /// Messages from an earlier phase (arrived after its drain window).
    stray: u64,
    errors: u64,
    first_error: Option<String>,
    closed: u64,
}

impl Recorder {
    fn on_frame(&mut self, receiver: u32, frame: &str, t0: Instant) {
        if frame.starts_with(r#"{"type":"message""#) {
            self.on_message(receiver, frame, t0);
        } else if frame.starts_with(r#"{"type":"error""#) {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(frame.chars().take(200).collect());
            }
        }
    }

    fn on_message(&mut self, receiver: u32, frame: &str, t0: Instant) {
        let Some(tag) = parse_client_id(frame) else { return };
        if tag.phase != self.phase {
            self.stray += 1;
            return;
        }
        match self.seen.insert(receiver, tag.sender, tag.seq) {
            Some(true) => {}
            Some(false) => {
                self.dups += 1;
                return;
            }
            None => {
                self.stray += 1;
                return;
            }
        }
        let now_us = t0.elapsed().as_micros() as u64;
        let latency = now_us.saturating_sub(tag.scheduled_us);
        self.latencies_us.push(u32::try_from(latency).unwrap_or(u32::MAX));
    }

    /// Sized up front: growing a big table mid-phase stalls the generator.
    fn start_phase(&mut self, phase: u32, layout: Layout, receivers: u32, expected: usize) {
        *self = Self {
            phase,
            closed: self.closed,
            latencies_us: Vec::with_capacity(expected),
            seen: Seen::new(layout, receivers),
            ..Self::default()
        };
    }
}

/// What a message's `client_id` carries (the room scenario uses it too).
#[derive(Debug, PartialEq, Eq)]
pub struct Tag {
    pub phase: u32,
    pub sender: u32,
    pub seq: u32,
    pub scheduled_us: u64,
}

pub fn client_id(tag: &Tag) -> String {
    format!("{}.{}.{}.{}", tag.phase, tag.sender, tag.seq, tag.scheduled_us)
}

/// Finds the tag in a `message` frame without parsing the whole JSON (the
/// generator must stay cheap): `client_id` is the last field.
pub fn parse_client_id(frame: &str) -> Option<Tag> {
    const KEY: &str = r#""client_id":""#;
    let start = frame.rfind(KEY)? + KEY.len();
    let value = &frame[start..start + frame[start..].find('"')?];
    let mut parts = value.split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
    Some(Tag {
        phase: u32::try_from(next()?).ok()?,
        sender: u32::try_from(next()?).ok()?,
        seq: u32::try_from(next()?).ok()?,
        scheduled_us: next()?,
    })
}

type Sink = SplitSink<Ws, WsMessage>;

/// Connected, joined clients and their reader tasks.
pub struct Fleet {
    opts: FanoutOpts,
    t0: Instant,
    recorder: Rc<RefCell<Recorder>>,
    /// Each client's write half, indexed by client number.
    sinks: Vec<Option<Sink>>,
    readers: Vec<JoinHandle<()>>,
    phase: u32,
    pub connect_time: Duration,
}

fn room_name(room: usize) -> String {
    format!("bench-{room}")
}

impl Fleet {
    /// Logs every client in, connects it and joins it to room `i % rooms`.
    /// Must run inside a `LocalSet`.
    pub async fn connect(target: &Target, opts: &FanoutOpts, t0: Instant) -> Result<Self, String> {
        let started = Instant::now();
        let rooms: Vec<String> = (0..opts.rooms).map(room_name).collect();
        target.create_rooms(&format!("{}admin", opts.tag), &rooms).await?;
        let results: Vec<Result<(usize, Ws), String>> = futures::stream::iter(0..opts.clients)
            .map(|i| connect_client(target, opts, i))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let recorder = Rc::new(RefCell::new(Recorder::default()));
        let mut sinks: Vec<Option<Sink>> = (0..opts.clients).map(|_| None).collect();
        let mut readers = Vec::with_capacity(opts.clients);
        for result in results {
            let (i, ws) = result?;
            let (sink, stream) = ws.split();
            sinks[i] = Some(sink);
            readers.push(tokio::task::spawn_local(read_loop(i as u32, stream, recorder.clone(), t0)));
        }
        Ok(Self { opts: opts.clone(), t0, recorder, sinks, readers, phase: 0, connect_time: started.elapsed() })
    }

    fn members(&self, room: usize) -> usize {
        (0..self.opts.clients).filter(|i| i % self.opts.rooms == room).count()
    }

    /// Runs one phase at `delivered` deliveries per second for `secs`.
    pub async fn run_phase(&mut self, target: &Target, delivered: f64, secs: f64) -> Result<PhaseResult, String> {
        self.phase += 1;
        let phase = self.phase;
        let room_rate = self.opts.room_rate(delivered);
        let per_room = (room_rate / MAX_SENDER_RATE).ceil().max(1.0) as usize;
        if per_room > self.members(0) {
            return Err(format!("{room_rate:.0} msg/s per room needs {per_room} senders per room; add clients"));
        }
        let sender_rate = room_rate / per_room as f64;
        // Start a little in the future so every sender begins on time.
        let start_us = self.t0.elapsed().as_micros() as u64 + 100_000;
        let mut plans = Vec::new();
        let mut expected = 0u64;
        for room in 0..self.opts.rooms {
            let members = self.members(room) as u64;
            for k in 0..per_room {
                let client = room + k * self.opts.rooms;
                let plan = Plan::new(phase, client as u32, room_name(room), sender_rate, secs, start_us, self.opts.text_bytes);
                expected += plan.count as u64 * members;
                plans.push((client, plan));
            }
        }
        let per_sender = plans.iter().map(|(_, p)| p.count).max().unwrap_or(0);
        let layout = Layout { rooms: self.opts.rooms as u32, senders_per_room: per_room as u32, per_sender };
        self.recorder.borrow_mut().start_phase(phase, layout, self.opts.clients as u32, expected as usize);

        let server_before = target.usage();
        let gen_before = Usage::of_self();
        let probe = tokio::task::spawn_local(probe_loop(Duration::from_secs_f64(secs)));
        let mut senders = Vec::new();
        for (client, plan) in plans {
            let sink = self.sinks[client].take().ok_or("client has no socket")?;
            senders.push((client, tokio::task::spawn_local(send_loop(sink, plan, self.t0))));
        }
        let mut sent = 0;
        let mut lags = Vec::new();
        for (client, task) in senders {
            let (sink, report) = task.await.map_err(|e| e.to_string())?;
            self.sinks[client] = Some(sink);
            sent += report.sent;
            lags.extend(report.lag_us);
            if let Some(e) = report.error {
                return Err(format!("sender {client}: {e}"));
            }
        }
        let gen_after = Usage::of_self();
        let loop_lag = probe.await.map_err(|e| e.to_string())?;
        self.wait_for(expected).await;
        let server_after = target.usage();

        let mut rec = self.recorder.borrow_mut();
        let delivered_unique = rec.seen.len();
        Ok(PhaseResult {
            target_delivered: delivered,
            senders_per_room: per_room,
            secs,
            sent,
            expected,
            delivered: delivered_unique,
            dups: rec.dups,
            lost: expected.saturating_sub(delivered_unique),
            errors: rec.errors,
            first_error: rec.first_error.take(),
            latency: Percentiles::of(std::mem::take(&mut rec.latencies_us)),
            send_lag: Percentiles::of(lags),
            loop_lag: Percentiles::of(loop_lag),
            server_cpu: server_before.zip(server_after).map(|(b, a)| a.cpu_since(&b).0),
            server_sys: server_before.zip(server_after).map(|(b, a)| a.sys_since(&b)),
            server_rss_kib: server_after.map(|u| u.rss_kib),
            gen_cpu: gen_after.cpu_since(&gen_before).1,
        })
    }

    /// Waits until `expected` deliveries arrived, or nothing new came for
    /// the drain time.
    async fn wait_for(&self, expected: u64) {
        let mut last = 0;
        let mut quiet_since = Instant::now();
        loop {
            let got = self.recorder.borrow().seen.len();
            if got >= expected || quiet_since.elapsed() >= self.opts.drain {
                return;
            }
            if got != last {
                last = got;
                quiet_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes every socket.
    pub async fn close(mut self) {
        for sink in self.sinks.iter_mut().filter_map(Option::as_mut) {
            let _ = sink.close().await;
        }
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Client `i` logs in and connects to node `i % nodes`: with several nodes,
/// a room's members and senders are spread over them, so most deliveries
/// cross nodes.
async fn connect_client(target: &Target, opts: &FanoutOpts, i: usize) -> Result<(usize, Ws), String> {
    let node = target.node_addr(i / opts.rooms);
    let cookie = target.login_at(node, &format!("{}c{i}", opts.tag)).await?;
    let mut ws = client::ws_connect(node, cookie.as_deref(), CLIENT_READ_BUFFER).await?;
    // Wait for `joined` so no message of the first phase can be missed.
    client::join(&mut ws, &room_name(i % opts.rooms)).await?;
    Ok((i, ws))
}

async fn read_loop(receiver: u32, mut stream: SplitStream<Ws>, recorder: Rc<RefCell<Recorder>>, t0: Instant) {
    while let Some(Ok(frame)) = stream.next().await {
        if let WsMessage::Text(text) = frame {
            recorder.borrow_mut().on_frame(receiver, text.as_str(), t0);
        }
    }
    recorder.borrow_mut().closed += 1;
}

/// Wakes every millisecond for `length`; returns how late each wake was.
async fn probe_loop(length: Duration) -> Vec<u32> {
    let started = Instant::now();
    let mut lags = Vec::with_capacity(length.as_millis() as usize + 1);
    let mut due = started;
    while due.duration_since(started) < length {
        due += Duration::from_millis(1);
        tokio::time::sleep_until(due.into()).await;
        lags.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    lags
}

/// One sender's schedule for a phase.
struct Plan {
    phase: u32,
    sender: u32,
    room: String,
    first_us: u64,
    interval_us: f64,
    count: u32,
    text: String,
}

impl Plan {
    fn new(phase: u32, sender: u32, room: String, rate: f64, secs: f64, start_us: u64, text_bytes: usize) -> Self {
        let interval_us = 1e6 / rate;
        // Spread senders over one interval (golden-ratio steps) so they do
        // not all fire in the same millisecond.
        let spread = (f64::from(sender) * 0.618_033_988_75).fract() * interval_us;
        Self {
            phase,
            sender,
            room,
            first_us: start_us + spread as u64,
            interval_us,
            count: (rate * secs).round() as u32,
            text: "x".repeat(text_bytes),
        }
    }

    fn scheduled_us(&self, seq: u32) -> u64 {
        self.first_us + (f64::from(seq) * self.interval_us) as u64
    }

    fn frame(&self, seq: u32) -> WsMessage {
        let tag = Tag { phase: self.phase, sender: self.sender, seq, scheduled_us: self.scheduled_us(seq) };
        WsMessage::Text(
            format!(r#"{{"type":"send","room":"{}","text":"{}","client_id":"{}"}}"#, self.room, self.text, client_id(&tag)).into(),
        )
    }
}

struct SendReport {
    sent: u64,
    lag_us: Vec<u32>,
    error: Option<String>,
}

/// Sends on schedule; when behind, sends what is due at once (one flush).
async fn send_loop(mut sink: Sink, plan: Plan, t0: Instant) -> (Sink, SendReport) {
    let mut report = SendReport { sent: 0, lag_us: Vec::with_capacity(plan.count as usize), error: None };
    for seq in 0..plan.count {
        let due = t0 + Duration::from_micros(plan.scheduled_us(seq));
        if Instant::now() < due {
            // On time: push out what was fed, then wait for the schedule.
            if let Err(e) = sink.flush().await {
                report.error = Some(e.to_string());
                return (sink, report);
            }
            tokio::time::sleep_until(due.into()).await;
        }
        report.lag_us.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX));
        if let Err(e) = sink.feed(plan.frame(seq)).await {
            report.error = Some(e.to_string());
            return (sink, report);
        }
        report.sent += 1;
    }
    if let Err(e) = sink.flush().await {
        report.error = Some(e.to_string());
    }
    (sink, report)
}

/// The outcome of `--find-max`.
#[derive(Debug, Clone)]
pub struct MaxResult {
    /// The fastest phase that held (p99 ≤ 50 ms, nothing lost).
    pub best: Option<PhaseResult>,
    /// The first phase that did not.
    pub failed: Option<PhaseResult>,
}

/// A pause between phases so one phase's backlog does not spill into the next.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip_through_a_frame() {
        let tag = Tag { phase: 3, sender: 17, seq: 42, scheduled_us: 1_234_567 };
        let frame = format!(
            r#"{{"type":"message","id":9,"room":"bench-1","user":"u","text":"xx","ts":"t","client_id":"{}"}}"#,
            client_id(&tag)
        );
        assert_eq!(parse_client_id(&frame), Some(tag));
    }

    #[test]
    fn recorder_counts_duplicates_and_strays() {
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        rec.start_phase(2, Layout { rooms: 2, senders_per_room: 1, per_sender: 10 }, 2, 20);
        let frame = |phase: u32, seq: u32| {
            let tag = Tag { phase, sender: 1, seq, scheduled_us: 0 };
            format!(r#"{{"type":"message","id":1,"client_id":"{}"}}"#, client_id(&tag))
        };
        rec.on_frame(0, &frame(2, 0), t0);
        rec.on_frame(0, &frame(2, 0), t0);
        rec.on_frame(1, &frame(2, 0), t0);
        rec.on_frame(1, &frame(1, 5), t0);
        rec.on_frame(1, &frame(2, 10), t0); // beyond the plan
        assert_eq!((rec.seen.len(), rec.dups, rec.stray), (2, 1, 2));
    }
}
