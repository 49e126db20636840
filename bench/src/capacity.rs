//! Capacity: as many idle WebSockets as one box holds (100,000 is the
//! target), then one message to every room, timed until each member has it.
//!
//! One process may hold about as many sockets as its open-file limit allows
//! (20,000 on the benchmark box, a hard limit), so both sides are several
//! processes: `--nodes N` chatroom nodes over one PostgreSQL database and
//! Redis (a real deployment on one box), and `--workers W` generator
//! processes (this binary's `capacity-worker`), each holding a contiguous
//! slice of the clients. Client `i`:
//! - connects from its own address, [`source_addr`]`(i)` in 127.0.0.0/8
//!   (log-in and socket alike), so no address runs out of ports;
//! - talks to node `⌊i / rooms⌋ mod nodes`, so a room's members are spread
//!   over the nodes;
//! - joins room `i mod rooms` (rooms of `--room-size` members); client
//!   `i < rooms` is its room's sender.
//!
//! The parent drives the workers with one line per step on their stdin and
//! reads one line back from each on stdout ([`Opened`], [`Joined`],
//! [`Delivered`]):
//!
//! ```text
//! (start)              → opened <n> <errors> <done_unix_us> <login_us> <upgrade_us> [first error]
//! join                 → joined <n> <errors> <done_unix_us> [first error]
//! send <at_us> <spread_us> → delivered <got> <dups> <errors> <latencies in µs, comma-separated>
//! (stdin closed)       → the worker closes its sockets and exits
//! ```
//!
//! Each room's one message is scheduled at `at + spread · room / rooms`
//! (unix time: every process on the box reads the same clock) and its
//! latency is counted from that schedule, as in `fanout` (open loop).

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{self, Ws};
use crate::fanout::{Tag, client_id, parse_client_id};
use crate::process::{self, Usage};
use crate::stats::Percentiles;
use crate::target::Target;

/// Sockets each worker opens at once (log-in, then upgrade).
const OPEN_CONCURRENCY: usize = 100;
/// Joins each worker has in flight at once.
const JOIN_CONCURRENCY: usize = 100;
/// Receive buffer of each generator socket (idle sockets read little).
const READ_BUFFER: usize = 1024;
/// Open files a worker keeps for itself (in-flight log-ins, pipes, epoll).
const WORKER_SPARE_FDS: u64 = 1_000;
/// Open files a node keeps beyond its connections (PostgreSQL pool, Redis,
/// listener, log).
pub const NODE_SPARE_FDS: u64 = 100;

/// What a capacity run does.
#[derive(Debug, Clone)]
pub struct CapacityOpts {
    pub connections: usize,
    pub room_size: usize,
    pub workers: usize,
    /// The rooms' messages are scheduled evenly over this (zero: at once).
    pub spread: Duration,
    /// Deliveries stop being waited for once none came for this long.
    pub drain: Duration,
    pub text_bytes: usize,
    pub tag: String,
}

impl CapacityOpts {
    pub fn rooms(&self) -> usize {
        rooms(self.connections, self.room_size)
    }
}

fn rooms(connections: usize, room_size: usize) -> usize {
    connections.div_ceil(room_size.max(1)).max(1)
}

/// Generator processes needed so that none passes its open-file limit.
pub fn workers_needed(connections: usize, open_file_limit: u64) -> usize {
    let per_worker = open_file_limit.saturating_sub(WORKER_SPARE_FDS).max(100) as usize;
    connections.div_ceil(per_worker).max(1)
}

/// Client `i`'s own address: 127.1.0.1, 127.1.0.2, …, 127.1.0.254,
/// 127.1.1.1, … (never a .0 or .255 host, never 127.0.0.1).
pub fn source_addr(i: usize) -> Ipv4Addr {
    let host = (i % 254) as u8 + 1;
    let rest = i / 254;
    let second = u8::try_from(1 + rest / 256).expect("fewer than 16 million clients");
    Ipv4Addr::new(127, second, (rest % 256) as u8, host)
}

pub fn room_name(room: usize) -> String {
    format!("cap-{room}")
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------------
// The worker's reports, as lines.

/// A worker's sockets are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub opened: usize,
    pub errors: usize,
    pub done_us: u64,
    /// Time spent in log-ins and in upgrades, summed over its sockets.
    pub login_us: u64,
    pub upgrade_us: u64,
    pub first_error: Option<String>,
}

/// A worker's sockets joined their rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub joined: usize,
    pub errors: usize,
    pub done_us: u64,
    pub first_error: Option<String>,
}

/// What a worker's sockets received of the rooms' messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub got: usize,
    pub dups: u64,
    pub errors: u64,
    pub latencies_us: Vec<u32>,
}

fn with_error(line: String, error: &Option<String>) -> String {
    match error {
        Some(e) => format!("{line} {}", e.replace(['\n', '\r'], " ")),
        None => line,
    }
}

impl Opened {
    pub fn line(&self) -> String {
        let line = format!("opened {} {} {} {} {}", self.opened, self.errors, self.done_us, self.login_us, self.upgrade_us);
        with_error(line, &self.first_error)
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("opened ")?.splitn(6, ' ');
        Some(Self {
            opened: f.next()?.parse().ok()?,
            errors: f.next()?.parse().ok()?,
            done_us: f.next()?.parse().ok()?,
            login_us: f.next()?.parse().ok()?,
            upgrade_us: f.next()?.parse().ok()?,
            first_error: f.next().map(str::to_string),
        })
    }
}

impl Joined {
    pub fn line(&self) -> String {
        with_error(format!("joined {} {} {}", self.joined, self.errors, self.done_us), &self.first_error)
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("joined ")?.splitn(4, ' ');
        Some(Self {
            joined: f.next()?.parse().ok()?,
            errors: f.next()?.parse().ok()?,
            done_us: f.next()?.parse().ok()?,
            first_error: f.next().map(str::to_string),
        })
    }
}

impl Delivered {
    pub fn line(&self) -> String {
        let latencies: Vec<String> = self.latencies_us.iter().map(u32::to_string).collect();
        format!("delivered {} {} {} {}", self.got, self.dups, self.errors, latencies.join(","))
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("delivered ")?.splitn(4, ' ');
        let (got, dups, errors) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        let latencies_us = f.next().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(Self { got, dups, errors, latencies_us })
    }
}

// ---------------------------------------------------------------------
// The worker: one slice of the clients, in one process.

/// The slice of clients one worker holds, and where they go.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    pub nodes: Vec<SocketAddr>,
    pub first: usize,
    pub count: usize,
    pub connections: usize,
    pub room_size: usize,
    pub text_bytes: usize,
    pub drain: Duration,
    pub tag: String,
}

/// The step every socket task follows, set from the parent's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Idle,
    Join,
    Send { at_us: u64, spread_us: u64 },
    Close,
}

/// One client's place in the run.
struct Client {
    /// Index within the worker (its slot in `Tally::got`).
    slot: usize,
    room: usize,
    rooms: usize,
    sender: bool,
}

/// Counts shared by one worker's socket tasks.
#[derive(Default)]
struct Tally {
    joined: usize,
    join_errors: usize,
    got: Vec<bool>,
    delivered: usize,
    dups: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn error(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }

    fn on_text(&mut self, client: &Client, text: &str) {
        if text.starts_with(r#"{"type":"message""#) {
            let Some(tag) = parse_client_id(text) else { return };
            if tag.sender as usize != client.room {
                self.errors += 1;
                self.error(format!("client in room {} got room {}'s message", client.room, tag.sender));
                return;
            }
            if std::mem::replace(&mut self.got[client.slot], true) {
                self.dups += 1;
                return;
            }
            self.delivered += 1;
            self.latencies_us.push(u32::try_from(unix_us().saturating_sub(tag.scheduled_us)).unwrap_or(u32::MAX));
        } else if text.starts_with(r#"{"type":"error""#) {
            self.errors += 1;
            self.error(text.chars().take(200).collect());
        }
    }
}

/// Runs one worker: opens its sockets, then follows the parent's lines.
/// Must run inside a `LocalSet`.
pub async fn worker(opts: WorkerOpts) -> Result<(), String> {
    let rooms = rooms(opts.connections, opts.room_size);
    let tally = Rc::new(RefCell::new(Tally { got: vec![false; opts.count], ..Tally::default() }));
    let (steps, step) = watch::channel(Step::Idle);
    let join_permits = Rc::new(Semaphore::new(JOIN_CONCURRENCY));

    let opened = open_all(&opts, rooms, &tally, &step, &join_permits).await;
    say(&opened.line());

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("join") => {
                let _ = steps.send(Step::Join);
                say(&joined(&tally, opened.opened).await.line());
            }
            Some("send") => {
                let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
                let (Some(at_us), Some(spread_us)) = (number(), number()) else {
                    return Err(format!("bad command: {line}"));
                };
                let _ = steps.send(Step::Send { at_us, spread_us });
                let expected = tally.borrow().joined;
                say(&delivered(&tally, expected, at_us + spread_us, opts.drain).await.line());
            }
            _ => return Err(format!("unknown command: {line}")),
        }
    }
    let _ = steps.send(Step::Close);
    Ok(())
}

/// One line to the parent, flushed at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Opens every socket of the slice, `OPEN_CONCURRENCY` at a time; each
/// one's task starts as soon as it is open (it answers pings meanwhile).
async fn open_all(
    opts: &WorkerOpts,
    rooms: usize,
    tally: &Rc<RefCell<Tally>>,
    step: &watch::Receiver<Step>,
    join_permits: &Rc<Semaphore>,
) -> Opened {
    let mut report = Opened { opened: 0, errors: 0, done_us: 0, login_us: 0, upgrade_us: 0, first_error: None };
    let mut results = futures::stream::iter(0..opts.count).map(|slot| open_one(opts, slot)).buffer_unordered(OPEN_CONCURRENCY);
    while let Some((slot, result)) = results.next().await {
        match result {
            Ok((ws, login, upgrade)) => {
                report.opened += 1;
                report.login_us += login.as_micros() as u64;
                report.upgrade_us += upgrade.as_micros() as u64;
                let i = opts.first + slot;
                let client = Client { slot, room: i % rooms, rooms, sender: i < rooms };
                let run = drive(ws, client, step.clone(), tally.clone(), join_permits.clone(), opts.text_bytes);
                tokio::task::spawn_local(run);
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert(e);
            }
        }
    }
    report.done_us = unix_us();
    report
}

/// Logs client `first + slot` in and opens its socket, both from its own
/// address; how long each half took.
async fn open_one(opts: &WorkerOpts, slot: usize) -> (usize, Result<(Ws, Duration, Duration), String>) {
    let i = opts.first + slot;
    let rooms = rooms(opts.connections, opts.room_size);
    let node = opts.nodes[(i / rooms) % opts.nodes.len()];
    let source = Some(IpAddr::V4(source_addr(i)));
    let started = Instant::now();
    let result = async {
        let (_, cookie) = client::guest_login_from(node, source, &format!("{}c{i}", opts.tag)).await?;
        let login = started.elapsed();
        let ws = client::ws_connect_from(node, source, Some(&cookie), READ_BUFFER, true).await?;
        Ok((ws, login, started.elapsed() - login))
    }
    .await;
    (slot, result)
}

/// One socket for the whole run: reads (so pings are answered) until told
/// to join, joins, and — the room's sender — sends its one message when
/// it is due; every message it receives is counted in `tally`.
async fn drive(
    mut ws: Ws,
    client: Client,
    mut step: watch::Receiver<Step>,
    tally: Rc<RefCell<Tally>>,
    join_permits: Rc<Semaphore>,
    text_bytes: usize,
) {
    let (mut joined, mut sent) = (false, false);
    loop {
        let now = *step.borrow_and_update();
        let due = match now {
            Step::Close => break,
            Step::Join | Step::Send { .. } if !joined => {
                joined = true;
                match join(&mut ws, &client, &join_permits, &tally).await {
                    Ok(()) => tally.borrow_mut().joined += 1,
                    Err(e) => {
                        let mut t = tally.borrow_mut();
                        t.join_errors += 1;
                        t.error(e);
                    }
                }
                continue;
            }
            Step::Send { at_us, spread_us } if client.sender && !sent => Some(at_us + spread_us * client.room as u64 / client.rooms as u64),
            _ => None,
        };
        let wait = async {
            match due {
                Some(due_us) => tokio::time::sleep(Duration::from_micros(due_us.saturating_sub(unix_us()))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => tally.borrow_mut().on_text(&client, text.as_str()),
                Some(Ok(_)) => {}
                _ => return,
            },
            changed = step.changed() => if changed.is_err() { break },
            () = wait => {
                sent = true;
                let frame = message_frame(client.room, due.unwrap_or(0), text_bytes);
                if let Err(e) = ws.send(frame).await {
                    tally.borrow_mut().error(format!("send: {e}"));
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Joins the client's room (a permit at a time per worker), reading what
/// comes meanwhile, until `joined` or an error frame.
async fn join(ws: &mut Ws, client: &Client, permits: &Semaphore, tally: &RefCell<Tally>) -> Result<(), String> {
    let permit = loop {
        tokio::select! {
            permit = permits.acquire() => break permit.map_err(|e| e.to_string())?,
            frame = ws.next() => if !matches!(frame, Some(Ok(_))) { return Err("closed before joining".into()) },
        }
    };
    let frame = serde_json::json!({ "type": "join", "room": room_name(client.room) }).to_string();
    ws.send(WsMessage::Text(frame.into())).await.map_err(|e| format!("join: {e}"))?;
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| format!("join: {e}"))? {
            WsMessage::Text(t) if t.starts_with(r#"{"type":"joined""#) => {
                drop(permit);
                return Ok(());
            }
            WsMessage::Text(t) if t.starts_with(r#"{"type":"error""#) => return Err(format!("join: {t}")),
            WsMessage::Text(t) => tally.borrow_mut().on_text(client, t.as_str()),
            _ => {}
        }
    }
    Err("closed before joining".into())
}

/// Room `room`'s message, tagged with its schedule.
fn message_frame(room: usize, scheduled_us: u64, text_bytes: usize) -> WsMessage {
    let tag = Tag { phase: 1, sender: room as u32, seq: 0, scheduled_us };
    let frame = serde_json::json!({
        "type": "send",
        "room": room_name(room),
        "text": "x".repeat(text_bytes),
        "client_id": client_id(&tag),
    });
    WsMessage::Text(frame.to_string().into())
}

/// Waits until every open socket joined (or failed to).
async fn joined(tally: &RefCell<Tally>, opened: usize) -> Joined {
    loop {
        {
            let t = tally.borrow();
            if t.joined + t.join_errors >= opened {
                return Joined { joined: t.joined, errors: t.join_errors, done_us: unix_us(), first_error: t.first_error.clone() };
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `expected` messages arrived, or — once the last one was
/// due (`last_due_us`) — nothing new came for `drain`.
async fn delivered(tally: &RefCell<Tally>, expected: usize, last_due_us: u64, drain: Duration) -> Delivered {
    let (mut last, mut quiet_since) = (0, Instant::now());
    loop {
        let got = tally.borrow().delivered;
        if got != last || unix_us() < last_due_us {
            (last, quiet_since) = (got, Instant::now());
        }
        if got >= expected || quiet_since.elapsed() >= drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut t = tally.borrow_mut();
    Delivered { got: t.delivered, dups: t.dups, errors: t.errors, latencies_us: std::mem::take(&mut t.latencies_us) }
}

// ---------------------------------------------------------------------
// The parent: starts the workers and reads the figures.

/// A worker process and its pipes.
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl WorkerProcess {
    fn spawn(opts: &CapacityOpts, nodes: &[SocketAddr], first: usize, count: usize) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let nodes: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
        let mut child = Command::new(me)
            .arg("capacity-worker")
            .args(["--worker-nodes", &nodes.join(",")])
            .args(["--worker-first", &first.to_string(), "--worker-count", &count.to_string()])
            .args(["--connections", &opts.connections.to_string(), "--room-size", &opts.room_size.to_string()])
            .args(["--text-bytes", &opts.text_bytes.to_string(), "--drain-secs", &opts.drain.as_secs_f64().to_string()])
            .args(["--worker-tag", &opts.tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a capacity worker: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self { child, stdin, stdout })
    }

    fn tell(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("worker stdin closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(|e| format!("worker {}: {e}", self.child.id()))
    }

    /// The worker's next line, parsed.
    fn hear<T>(&mut self, parse: fn(&str) -> Option<T>) -> Result<T, String> {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if read == 0 {
            let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("capacity worker {} ended ({status})", self.child.id()));
        }
        parse(line.trim_end()).ok_or_else(|| format!("capacity worker said: {}", line.trim_end()))
    }

    fn usage(&self) -> Usage {
        Usage::of_pid(&self.child.id().to_string())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Closing stdin ends the worker; give it a moment, then make sure.
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of everything the run involves, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub at: Option<Instant>,
    pub nodes: Duration,
    pub workers: Duration,
    pub postgres: Duration,
    pub redis: Duration,
}

/// CPU seconds each part used between two snapshots, and the wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSpent {
    pub wall: Duration,
    pub nodes: Duration,
    pub workers: Duration,
    pub postgres: Duration,
    pub redis: Duration,
}

impl CpuSnapshot {
    fn take(target: &Target, workers: &[WorkerProcess]) -> Self {
        Self {
            at: Some(Instant::now()),
            nodes: target.usage().map_or(Duration::ZERO, |u| u.cpu),
            workers: workers.iter().map(|w| w.usage().cpu).sum(),
            postgres: process::cpu_of_command("postgres"),
            redis: process::cpu_of_command("redis-server"),
        }
    }

    fn since(&self, earlier: &Self) -> CpuSpent {
        CpuSpent {
            wall: self.at.zip(earlier.at).map_or(Duration::ZERO, |(a, b)| a.duration_since(b)),
            nodes: self.nodes.saturating_sub(earlier.nodes),
            workers: self.workers.saturating_sub(earlier.workers),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            redis: self.redis.saturating_sub(earlier.redis),
        }
    }
}

impl CpuSpent {
    /// "nodes 12.3 s, generator 4.5 s, PostgreSQL 6.7 s, Redis 0.8 s (of 2 × 20.0 s)".
    pub fn text(&self) -> String {
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!(
            "nodes {}, generator {}, PostgreSQL {}, Redis {} (of {cores} × {})",
            s(self.nodes),
            s(self.workers),
            s(self.postgres),
            s(self.redis),
            s(self.wall)
        )
    }
}

/// Everything a capacity run measured.
#[derive(Debug, Clone, Default)]
pub struct CapacityResult {
    pub nodes: usize,
    pub workers: usize,
    pub rooms: usize,
    pub opened: usize,
    pub open_errors: usize,
    pub first_error: Option<String>,
    pub open_time: Duration,
    /// Mean per socket.
    pub login_mean: Duration,
    pub upgrade_mean: Duration,
    pub open_cpu: CpuSpent,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_joined_kib: u64,
    pub rss_after_kib: u64,
    /// Most open files in one node, and in one worker, once all were open.
    pub node_fds_max: usize,
    pub worker_fds_max: usize,
    pub generator_rss_kib: u64,
    pub joined: usize,
    pub join_errors: usize,
    pub join_time: Duration,
    pub join_cpu: CpuSpent,
    pub delivered: usize,
    pub dups: u64,
    pub errors: u64,
    pub latency: Percentiles,
    pub delivery_cpu: CpuSpent,
}

impl CapacityResult {
    pub fn lost(&self) -> usize {
        self.joined.saturating_sub(self.delivered)
    }

    pub fn opened_per_sec(&self) -> f64 {
        self.opened as f64 / self.open_time.as_secs_f64().max(1e-9)
    }

    /// Server RSS growth per open socket, in KiB (all nodes summed).
    pub fn kib_per_socket(&self, after_kib: u64) -> f64 {
        after_kib.saturating_sub(self.rss_before_kib) as f64 / self.opened.max(1) as f64
    }
}

/// Runs the whole capacity scenario against `target` (its nodes must be
/// our children for the memory figures).
pub async fn run(target: &Target, opts: &CapacityOpts) -> Result<CapacityResult, String> {
    let rooms = opts.rooms();
    let names: Vec<String> = (0..rooms).map(room_name).collect();
    eprintln!("capacity: creating {rooms} rooms");
    target.create_rooms(&format!("{}admin", opts.tag), &names).await?;
    let nodes: Vec<SocketAddr> = (0..target.node_count()).map(|n| target.node_addr(n)).collect();
    let mut r = CapacityResult { nodes: nodes.len(), workers: opts.workers, rooms, ..CapacityResult::default() };
    r.rss_before_kib = server_rss(target);

    eprintln!(
        "capacity: opening {} sockets from {} workers to {} nodes",
        opts.connections,
        opts.workers,
        nodes.len()
    );
    let started_us = unix_us();
    let mut workers = Vec::with_capacity(opts.workers);
    let per_worker = opts.connections.div_ceil(opts.workers);
    for w in 0..opts.workers {
        let first = w * per_worker;
        let count = per_worker.min(opts.connections.saturating_sub(first));
        workers.push(WorkerProcess::spawn(opts, &nodes, first, count)?);
    }
    let cpu_start = CpuSnapshot::take(target, &workers);
    let mut done_us = started_us;
    let (mut login_us, mut upgrade_us) = (0u64, 0u64);
    for worker in &mut workers {
        let o = worker.hear(Opened::parse)?;
        r.opened += o.opened;
        r.open_errors += o.errors;
        if r.first_error.is_none() {
            r.first_error = o.first_error;
        }
        (login_us, upgrade_us) = (login_us + o.login_us, upgrade_us + o.upgrade_us);
        done_us = done_us.max(o.done_us);
    }
    let cpu_opened = CpuSnapshot::take(target, &workers);
    r.open_time = Duration::from_micros(done_us - started_us);
    r.open_cpu = cpu_opened.since(&cpu_start);
    let per_socket = |us: u64| Duration::from_micros(us / r.opened.max(1) as u64);
    (r.login_mean, r.upgrade_mean) = (per_socket(login_us), per_socket(upgrade_us));
    eprintln!(
        "  opened {} ({} failed) in {:.2} s: {:.0}/s; CPU {}",
        r.opened,
        r.open_errors,
        r.open_time.as_secs_f64(),
        r.opened_per_sec(),
        r.open_cpu.text()
    );
    // Let the server finish whatever the last upgrades started.
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.rss_open_kib = server_rss(target);
    r.node_fds_max = node_pids(target).iter().filter_map(|pid| process::open_fds(&pid.to_string())).max().unwrap_or(0);
    r.worker_fds_max = workers.iter().filter_map(|w| process::open_fds(&w.child.id().to_string())).max().unwrap_or(0);
    r.generator_rss_kib = workers.iter().map(|w| w.usage().rss_kib).sum();
    eprintln!("  server RSS {:.1} KiB per socket", r.kib_per_socket(r.rss_open_kib));

    eprintln!("capacity: joining {rooms} rooms of {}", opts.room_size);
    let join_started_us = unix_us();
    let cpu_before_join = CpuSnapshot::take(target, &workers);
    for worker in &mut workers {
        worker.tell("join")?;
    }
    let mut done_us = join_started_us;
    for worker in &mut workers {
        let j = worker.hear(Joined::parse)?;
        r.joined += j.joined;
        r.join_errors += j.errors;
        if r.first_error.is_none() {
            r.first_error = j.first_error;
        }
        done_us = done_us.max(j.done_us);
    }
    r.join_cpu = CpuSnapshot::take(target, &workers).since(&cpu_before_join);
    r.join_time = Duration::from_micros(done_us - join_started_us);
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.rss_joined_kib = server_rss(target);
    eprintln!("  joined {} ({} failed) in {:.2} s", r.joined, r.join_errors, r.join_time.as_secs_f64());

    eprintln!("capacity: one message to each room, spread over {:.1} s", opts.spread.as_secs_f64());
    // A little ahead, so every worker has the line before the first is due.
    let at_us = unix_us() + 200_000;
    let cpu_before_send = CpuSnapshot::take(target, &workers);
    for worker in &mut workers {
        worker.tell(&format!("send {at_us} {}", opts.spread.as_micros()))?;
    }
    let mut latencies = Vec::with_capacity(r.joined);
    for worker in &mut workers {
        let d = worker.hear(Delivered::parse)?;
        r.delivered += d.got;
        r.dups += d.dups;
        r.errors += d.errors;
        latencies.extend(d.latencies_us);
    }
    r.delivery_cpu = CpuSnapshot::take(target, &workers).since(&cpu_before_send);
    r.latency = Percentiles::of(latencies);
    r.rss_after_kib = server_rss(target);
    eprintln!("  delivered {} of {}: latency p50/p99/p99.9/max {}", r.delivered, r.joined, r.latency.summary());
    drop(workers);
    Ok(r)
}

fn server_rss(target: &Target) -> u64 {
    target.usage().map_or(0, |u| u.rss_kib)
}

fn node_pids(target: &Target) -> Vec<u32> {
    let own = target.process.as_ref().map(|p| p.pid);
    own.into_iter().chain(target.peers.iter().flat_map(node_pids)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_has_its_own_loopback_address() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..200_000).map(source_addr).collect();
        assert_eq!(addrs.len(), 200_000);
        for a in &addrs {
            let [first, second, _, host] = a.octets();
            assert!(first == 127 && second >= 1 && host != 0 && host != 255, "{a}");
        }
        assert_eq!(source_addr(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_addr(254), Ipv4Addr::new(127, 1, 1, 1));
    }

    #[test]
    fn workers_stay_under_the_open_file_limit() {
        assert_eq!(workers_needed(100_000, 20_000), 6);
        assert_eq!(workers_needed(19_000, 20_000), 1);
        assert_eq!(workers_needed(19_001, 20_000), 2);
        assert_eq!(rooms(100_000, 100), 1_000);
        assert_eq!(rooms(150, 100), 2);
    }

    #[test]
    fn reports_round_trip_through_their_lines() {
        let opened = Opened { opened: 5, errors: 1, done_us: 9, login_us: 10, upgrade_us: 11, first_error: Some("HTTP 503 server full".into()) };
        assert_eq!(Opened::parse(&opened.line()), Some(opened));
        let joined = Joined { joined: 4, errors: 0, done_us: 12, first_error: None };
        assert_eq!(Joined::parse(&joined.line()), Some(joined));
        let delivered = Delivered { got: 3, dups: 0, errors: 0, latencies_us: vec![100, 2_000, 30_000] };
        assert_eq!(Delivered::parse(&delivered.line()), Some(delivered));
        let none = Delivered { got: 0, dups: 0, errors: 2, latencies_us: Vec::new() };
        assert_eq!(Delivered::parse(&none.line()), Some(none));
        assert_eq!(Opened::parse("joined 1 2 3"), None);
    }

    #[test]
    fn a_client_counts_its_rooms_message_once() {
        let mut tally = Tally { got: vec![false; 2], ..Tally::default() };
        let client = Client { slot: 1, room: 7, rooms: 10, sender: false };
        let frame = |room: u32| {
            let tag = Tag { phase: 1, sender: room, seq: 0, scheduled_us: unix_us() };
            format!(r#"{{"type":"message","id":1,"room":"cap-{room}","client_id":"{}"}}"#, client_id(&tag))
        };
        tally.on_text(&client, &frame(7));
        tally.on_text(&client, &frame(7));
        tally.on_text(&client, &frame(3));
        assert_eq!((tally.delivered, tally.dups, tally.errors), (1, 1, 1));
        assert_eq!(tally.got, vec![false, true]);
        assert_eq!(tally.latencies_us.len(), 1);
    }
}
