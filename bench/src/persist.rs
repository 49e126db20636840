//! Persist: many senders into one room, as fast as the server stores.
//!
//! Each writer is a guest with its own keep-alive connection posting to
//! `POST /api/rooms/{room}/messages` in a closed loop: the `201` comes back
//! only after the message is in the room's file, so stored messages per
//! second is simply answers per second. The HTTP API is used rather than
//! WebSocket senders because every WebSocket sender must join the room and
//! would then receive every other sender's message: that measures fan-out,
//! not storage (and chatroom caps a socket at 100 frames/s).
//!
//! When the server is our child (a fresh data directory), the room's last
//! message id is read afterwards over HTTP: the room must hold exactly the
//! acknowledged messages (ids are 1, 2, 3, … with no gaps). The benchmark
//! does not read the server's files.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{self, HttpConn};
use crate::stats::Percentiles;
use crate::target::Target;

pub const ROOM: &str = "persist";

pub struct PersistResult {
    pub writers: usize,
    pub secs: f64,
    pub stored: u64,
    pub latency: Percentiles,
    /// The room's last message id afterwards, when the server is our child
    /// (with `--url` the room may hold earlier runs' messages).
    pub last_id: Option<u64>,
    pub server_cpu: Option<Duration>,
    pub gen_cpu: f64,
}

impl PersistResult {
    pub fn per_sec(&self) -> f64 {
        self.stored as f64 / self.secs
    }
}

pub async fn run(target: &Target, writers: usize, secs: f64, text_bytes: usize, tag: &str) -> Result<PersistResult, String> {
    let mut admin = target.api(&format!("{tag}padmin")).await?;
    client::create_room(&mut admin, ROOM).await?;
    let mut conns = Vec::with_capacity(writers);
    for w in 0..writers {
        conns.push(target.api(&format!("{tag}w{w}")).await?);
    }
    let text = "x".repeat(text_bytes);
    let server_before = target.usage();
    let gen_before = crate::process::Usage::of_self();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let failed: Rc<Cell<Option<()>>> = Rc::default();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(w, conn)| tokio::task::spawn_local(write_loop(conn, w, text.clone(), deadline, failed.clone())))
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut stored = 0;
    for task in tasks {
        let report = task.await.map_err(|e| e.to_string())??;
        stored += report.0;
        latencies.extend(report.1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_after = target.usage();
    let gen_after = crate::process::Usage::of_self();
    let last_id = match target.process {
        Some(_) => Some(last_message_id(&mut target.api(&format!("{tag}pcheck")).await?).await?),
        None => None,
    };
    Ok(PersistResult {
        writers,
        secs: elapsed,
        stored,
        latency: Percentiles::of(latencies),
        last_id,
        server_cpu: server_before.zip(server_after).map(|(b, a)| a.cpu_since(&b).0),
        gen_cpu: gen_after.cpu_since(&gen_before).1,
    })
}

/// Posts until the deadline; returns (stored, latencies in µs).
async fn write_loop(mut conn: HttpConn, writer: usize, text: String, deadline: Instant, failed: Rc<Cell<Option<()>>>) -> Result<(u64, Vec<u32>), String> {
    let path = format!("/api/rooms/{ROOM}/messages");
    let mut stored = 0;
    let mut latencies = Vec::new();
    while Instant::now() < deadline && failed.get().is_none() {
        let body = format!(r#"{{"text":"{text}","client_id":"w{writer}-{stored}"}}"#);
        let started = Instant::now();
        let res = conn.post_json(&path, &body).await.map_err(|e| format!("POST {path}: {e}"))?;
        if res.status != 201 {
            failed.set(Some(()));
            return Err(format!("POST {path}: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
        }
        latencies.push(started.elapsed().as_micros() as u32);
        stored += 1;
    }
    Ok((stored, latencies))
}

/// The id of the room's newest message (0 when it has none), from
/// `GET /api/rooms/{room}/messages?limit=1`.
async fn last_message_id(conn: &mut HttpConn) -> Result<u64, String> {
    let path = format!("/api/rooms/{ROOM}/messages?limit=1");
    let res = conn.get(&path).await.map_err(|e| format!("GET {path}: {e}"))?;
    if res.status != 200 {
        return Err(format!("GET {path}: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
    }
    let body: serde_json::Value = serde_json::from_slice(&res.body).map_err(|e| format!("GET {path}: {e}"))?;
    Ok(body["messages"].as_array().and_then(|ms| ms.last()).and_then(|m| m["id"].as_u64()).unwrap_or(0))
}

/// What `run_inside` measured.
pub struct InsideResult {
    pub writers: usize,
    pub secs: f64,
    pub stored: u64,
    pub latency: Percentiles,
    pub last_seq: u64,
}

impl InsideResult {
    pub fn per_sec(&self) -> f64 {
        self.stored as f64 / self.secs
    }
}

/// The node's own persist path without HTTP: `writers` tasks each send
/// through the library's hub (a room's writer batches what is queued,
/// one transaction per batch) into `store`, in a closed loop; a send
/// returns after COMMIT. Shows what the store sustains when the HTTP edge
/// is not what limits (on this 2-core box the generator, the server and
/// PostgreSQL share the cores).
pub async fn run_inside(store: std::sync::Arc<dyn chatroom::store::MessageStore>, writers: usize, secs: f64, text_bytes: usize) -> Result<InsideResult, String> {
    use chatroom::fanout::LocalFanout;
    use chatroom::hub::{Hub, HubSettings};
    use chatroom::model::{NewEvent, RoomName, Username};

    let room = RoomName::parse(ROOM).map_err(|e| e.to_string())?;
    let _ = store.create_room(&room, "bench").await;
    let settings = HubSettings { room_create_rate: None, room_idle: Duration::from_secs(60) };
    let hub = Hub::new(store.clone(), std::sync::Arc::new(LocalFanout::default()), settings);
    let text = "x".repeat(text_bytes);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (hub, room, text) = (hub.clone(), room.clone(), text.clone());
            tokio::spawn(async move {
                let user = Username::parse(&format!("w{w}")).map_err(|e| e.to_string())?;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let post = NewEvent::Post { user: user.clone(), text: text.clone(), client_id: format!("w{w}-{}", latencies.len()), thread: None };
                    let sent = Instant::now();
                    hub.send(&room, post).await.map_err(|e| e.to_string())?;
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    let last_seq = store.last_seq(&room).await.map_err(|e| e.to_string())?;
    Ok(InsideResult { writers, secs, stored: latencies.len() as u64, latency: Percentiles::of(latencies), last_seq })
}
