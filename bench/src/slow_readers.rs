//! Slow readers: sockets that stop reading while their room is busy, then
//! resume. What does the server hold meanwhile and while they catch up?
//!
//! 1. `--readers` (5) guests open a WebSocket each, join one room, get
//!    `joined` — and then stop reading: nothing polls their sockets, so
//!    once the kernel's buffers on both sides are full the server cannot
//!    write to them.
//! 2. `--writers` guests post `--megabytes` (50) MiB of `--slow-text-bytes`
//!    (1,024-byte) messages to the room over HTTP (`POST
//!    /api/rooms/{room}/messages`, closed loop, keep-alive), as fast as the
//!    server stores them. Writers over HTTP are not room members, so they
//!    need not read anything back.
//! 3. The readers resume and read until each has every acknowledged id
//!    once; missing, duplicated and out-of-order ids are counted. A reader
//!    the server closes reconnects, joins with `after` and pages what the
//!    join did not send over HTTP, as a client would (counted as a close).
//!
//! Server memory (`VmHWM`, the peak RSS so far, and `VmRSS`) is read from
//! `/proc/<pid>/status` before the pause, after the writes and after the
//! catch-up; the catch-up time runs from the resume to the moment the last
//! reader has everything.
//!
//! Paused readers must not be closed by the server for being slow: the
//! scenario passes `--write-timeout-secs 600 --ping-secs 0` to binaries
//! whose `--help` lists those flags (older ones do not know them).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{self, HttpConn, Ws};
use crate::process::Usage;
use crate::target::Target;

pub const ROOM: &str = "bench-slow";
/// Each reader's receive buffer: they read tens of megabytes at the end.
const READ_BUFFER: usize = 64 * 1024;
/// A reader that gets nothing new for this long is given up on.
const STALL: Duration = Duration::from_secs(60);
/// Pause after the writes, so the server writes what the readers' socket
/// buffers still take before memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// The largest page `GET /api/rooms/{room}/messages` gives.
const HTTP_PAGE: usize = 500;

#[derive(Debug, Clone)]
pub struct SlowOpts {
    pub readers: usize,
    pub writers: usize,
    /// MiB of message text to write while the readers are paused.
    pub megabytes: f64,
    pub text_bytes: usize,
    pub tag: String,
}

impl SlowOpts {
    pub fn messages(&self) -> u64 {
        (self.megabytes * 1024.0 * 1024.0 / self.text_bytes.max(1) as f64).round() as u64
    }
}

/// Server memory at one moment, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

impl Memory {
    fn of(target: &Target) -> Option<Self> {
        target.usage().map(|u: Usage| Self { hwm_kib: u.hwm_kib, rss_kib: u.rss_kib })
    }
}

/// What one reader saw after it resumed.
#[derive(Debug, Clone, Default)]
pub struct ReaderResult {
    pub unique: u64,
    pub dups: u64,
    /// Ids that came after a higher one.
    pub out_of_order: u64,
    /// Ids above the highest acknowledged one.
    pub unknown: u64,
    /// From the resume to the last missing id (`None`: never complete).
    pub done_in: Option<Duration>,
    /// Times the server closed this reader's socket.
    pub closed: u32,
    pub error: Option<String>,
}

pub struct SlowResult {
    pub messages: u64,
    pub write_time: Duration,
    pub before: Option<Memory>,
    pub after_writes: Option<Memory>,
    pub after_catch_up: Option<Memory>,
    pub catch_up_cpu: Option<Duration>,
    pub readers: Vec<ReaderResult>,
}

impl SlowResult {
    /// The time the last reader took, if every reader finished.
    pub fn catch_up(&self) -> Option<Duration> {
        self.readers.iter().map(|r| r.done_in).collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    pub fn missing(&self) -> u64 {
        self.readers.iter().map(|r| self.messages.saturating_sub(r.unique)).sum()
    }

    pub fn dups(&self) -> u64 {
        self.readers.iter().map(|r| r.dups).sum()
    }

    pub fn out_of_order(&self) -> u64 {
        self.readers.iter().map(|r| r.out_of_order).sum()
    }

    pub fn closed(&self) -> u32 {
        self.readers.iter().map(|r| r.closed).sum()
    }
}

struct PausedReader {
    username: String,
    cookie: Option<String>,
    ws: Ws,
}

pub async fn run(target: &Target, opts: &SlowOpts) -> Result<SlowResult, String> {
    target.create_rooms(&format!("{}sadmin", opts.tag), &[ROOM.to_string()]).await?;
    let mut paused = Vec::new();
    for i in 0..opts.readers {
        let username = format!("{}r{i}", opts.tag);
        let cookie = target.login(&username).await?;
        let mut ws = client::ws_connect(target.addr, cookie.as_deref(), READ_BUFFER).await?;
        join(&mut ws, None).await?;
        paused.push(PausedReader { username, cookie, ws });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Memory::of(target);

    let total = opts.messages();
    eprintln!("  {} readers paused; writing {total} messages of {} bytes", opts.readers, opts.text_bytes);
    let started = Instant::now();
    let highest = write(target, opts, total).await?;
    let write_time = started.elapsed();
    if highest != total {
        return Err(format!("{total} messages acknowledged but the highest id is {highest}: was the room empty?"));
    }
    eprintln!("  written in {:.2} s ({:.0} msg/s)", write_time.as_secs_f64(), total as f64 / write_time.as_secs_f64());
    tokio::time::sleep(SETTLE).await;
    let after_writes = Memory::of(target);

    let cpu_before = target.usage();
    let resumed = Instant::now();
    let tasks: Vec<_> = paused.into_iter().map(|r| tokio::task::spawn_local(catch_up(target.addr, r, total, resumed))).collect();
    let mut readers = Vec::new();
    for task in tasks {
        readers.push(task.await.map_err(|e| e.to_string())?);
    }
    let after_catch_up = Memory::of(target);
    let catch_up_cpu = cpu_before.zip(target.usage()).map(|(b, a)| a.cpu_since(&b).0);
    Ok(SlowResult { messages: total, write_time, before, after_writes, after_catch_up, catch_up_cpu, readers })
}

/// Sends `join` (with `after`) and waits for `joined`; returns that frame.
async fn join(ws: &mut Ws, after: Option<u64>) -> Result<String, String> {
    let mut join = serde_json::json!({ "type": "join", "room": ROOM });
    if let Some(after) = after {
        join["after"] = after.into();
    }
    ws.send(WsMessage::Text(join.to_string().into())).await.map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| e.to_string())? {
            WsMessage::Text(t) if t.starts_with(r#"{"type":"joined""#) => return Ok(t.to_string()),
            WsMessage::Text(t) if t.starts_with(r#"{"type":"error""#) => return Err(format!("join: {t}")),
            _ => {}
        }
    }
    Err("closed before joining".into())
}

/// Posts `total` messages from `opts.writers` connections; returns the
/// highest id acknowledged.
async fn write(target: &Target, opts: &SlowOpts, total: u64) -> Result<u64, String> {
    let next = Rc::new(Cell::new(0u64));
    let text: Rc<str> = "x".repeat(opts.text_bytes).into();
    let mut tasks = Vec::new();
    for w in 0..opts.writers.max(1) {
        let conn = target.api(&format!("{}sw{w}", opts.tag)).await?;
        tasks.push(tokio::task::spawn_local(write_loop(conn, next.clone(), total, text.clone())));
    }
    let mut highest = 0;
    for task in tasks {
        highest = highest.max(task.await.map_err(|e| e.to_string())??);
    }
    Ok(highest)
}

async fn write_loop(mut conn: HttpConn, next: Rc<Cell<u64>>, total: u64, text: Rc<str>) -> Result<u64, String> {
    let path = format!("/api/rooms/{ROOM}/messages");
    let mut highest = 0;
    loop {
        let n = next.get();
        if n >= total {
            return Ok(highest);
        }
        next.set(n + 1);
        let body = format!(r#"{{"text":"{text}","client_id":"s{n}"}}"#);
        let res = conn.post_json(&path, &body).await.map_err(|e| format!("POST {path}: {e}"))?;
        if res.status != 201 {
            return Err(format!("POST {path}: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
        }
        let body = String::from_utf8_lossy(&res.body);
        let id = message_id(&body).ok_or_else(|| format!("POST answer without an id: {}", body.chars().take(200).collect::<String>()))?;
        highest = highest.max(id);
    }
}

/// The `id` of a message, as a `message` frame or a bare message object.
/// Cheap when `id` comes first (every frame does: the readers go through
/// tens of megabytes); otherwise the JSON is parsed (servers since the
/// event log answer a post with `id` elsewhere).
pub fn message_id(json: &str) -> Option<u64> {
    let rest = json.strip_prefix(r#"{"type":"message","#).unwrap_or_else(|| json.strip_prefix('{').unwrap_or(json));
    if let Some(digits) = rest.strip_prefix(r#""id":"#) {
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        return digits[..end].parse().ok();
    }
    serde_json::from_str::<serde_json::Value>(json).ok()?.get("id")?.as_u64()
}

/// Which ids of 1..=total a reader has.
struct Ids {
    bits: Vec<u64>,
    total: u64,
    highest: u64,
    result: ReaderResult,
}

impl Ids {
    fn new(total: u64) -> Self {
        Self { bits: vec![0; (total as usize + 1).div_ceil(64)], total, highest: 0, result: ReaderResult::default() }
    }

    fn mark(&mut self, id: u64) {
        if id == 0 || id > self.total {
            self.result.unknown += 1;
            return;
        }
        if id < self.highest {
            self.result.out_of_order += 1;
        }
        self.highest = self.highest.max(id);
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if self.bits[word] & bit != 0 {
            self.result.dups += 1;
        } else {
            self.bits[word] |= bit;
            self.result.unique += 1;
        }
    }

    fn complete(&self) -> bool {
        self.result.unique == self.total
    }

    /// The id before the first one missing: where a rejoin resumes.
    fn contiguous(&self) -> u64 {
        (1..=self.total).find(|&id| self.bits[(id / 64) as usize] & (1u64 << (id % 64)) == 0).map_or(self.total, |id| id - 1)
    }
}

/// Reads until every id of 1..=total arrived (or nothing came for
/// [`STALL`]); rejoins when the server closes the socket.
async fn catch_up(addr: std::net::SocketAddr, reader: PausedReader, total: u64, resumed: Instant) -> ReaderResult {
    let PausedReader { username, cookie, mut ws } = reader;
    let mut ids = Ids::new(total);
    let mut error = None;
    'outer: while !ids.complete() {
        match tokio::time::timeout(STALL, ws.next()).await {
            Err(_) => {
                error = Some(format!("{username}: nothing for {} s", STALL.as_secs()));
                break;
            }
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                if text.starts_with(r#"{"type":"message""#) {
                    match message_id(text.as_str()) {
                        Some(id) => ids.mark(id),
                        None => ids.result.unknown += 1,
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                // Closed by the server: rejoin after what we have, as a client would.
                ids.result.closed += 1;
                if ids.result.closed > 10 {
                    error = Some(format!("{username}: closed more than 10 times"));
                    break;
                }
                match rejoin(addr, cookie.as_deref(), &mut ids).await {
                    Ok(fresh) => ws = fresh,
                    Err(e) => {
                        error = Some(format!("{username}: rejoin: {e}"));
                        break 'outer;
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    ids.result.done_in = ids.complete().then(|| resumed.elapsed());
    ids.result.error = error;
    ids.result
}

/// A new socket joined with `after`; what the join does not send (it says
/// `has_more`) is paged over HTTP.
async fn rejoin(addr: std::net::SocketAddr, cookie: Option<&str>, ids: &mut Ids) -> Result<Ws, String> {
    let after = ids.contiguous();
    let mut ws = client::ws_connect(addr, cookie, READ_BUFFER).await?;
    let joined = join(&mut ws, Some(after)).await?;
    let joined: serde_json::Value = serde_json::from_str(&joined).map_err(|e| e.to_string())?;
    let history = joined["history"].as_array().cloned().unwrap_or_default();
    let mut last = after;
    for message in &history {
        let id = message["id"].as_u64().ok_or("history message without an id")?;
        ids.mark(id);
        last = last.max(id);
    }
    if joined["has_more"].as_bool() == Some(true) {
        let mut http = HttpConn::connect(addr).await.map_err(|e| e.to_string())?;
        http.cookie = cookie.map(str::to_string);
        loop {
            let res = http.get(&format!("/api/rooms/{ROOM}/messages?after={last}&limit={HTTP_PAGE}")).await.map_err(|e| e.to_string())?;
            let page: serde_json::Value = serde_json::from_slice(&res.body).map_err(|e| e.to_string())?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            for message in &messages {
                let id = message["id"].as_u64().ok_or("page message without an id")?;
                ids.mark(id);
                last = last.max(id);
            }
            if messages.len() < HTTP_PAGE {
                break;
            }
        }
    }
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_of_frames_and_messages() {
        assert_eq!(message_id(r#"{"type":"message","id":42,"room":"r","user":"u"}"#), Some(42));
        assert_eq!(message_id(r#"{"id":7,"room":"r"}"#), Some(7));
        assert_eq!(message_id(r#"{"room":"r","seq":8,"id":8,"text":"x"}"#), Some(8));
        assert_eq!(message_id(r#"{"type":"joined","room":"r"}"#), None);
    }

    #[test]
    fn counts_missing_duplicated_and_out_of_order_ids() {
        let mut ids = Ids::new(5);
        for id in [1, 2, 4, 2, 3, 9] {
            ids.mark(id);
        }
        assert_eq!((ids.result.unique, ids.result.dups, ids.result.out_of_order, ids.result.unknown), (4, 1, 2, 1));
        assert_eq!(ids.contiguous(), 4);
        assert!(!ids.complete());
        ids.mark(5);
        assert!(ids.complete());
        assert_eq!(ids.contiguous(), 5);
    }
}
