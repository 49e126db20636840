//! Connections: open many idle WebSockets (each a guest with its own
//! session) and see what each costs the server in resident memory.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::client::{self, Ws};
use crate::target::Target;

/// Sockets opening at once.
const CONCURRENCY: usize = 100;
/// Receive buffer of each idle generator socket (they never receive much).
const IDLE_READ_BUFFER: usize = 1024;

pub struct ConnectionsResult {
    pub opened: usize,
    pub open_time: Duration,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl ConnectionsResult {
    /// Server RSS growth per open socket, in KiB.
    pub fn kib_per_connection(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        Some(after.saturating_sub(before) as f64 / self.opened as f64)
    }
}

pub async fn run(target: &Target, count: usize, tag: &str) -> Result<ConnectionsResult, String> {
    let rss_before_kib = target.usage().map(|u| u.rss_kib);
    let started = Instant::now();
    let sockets: Vec<Result<Ws, String>> = futures::stream::iter(0..count)
        .map(|i| open(target, format!("{tag}idle{i}")))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let open_time = started.elapsed();
    let sockets: Vec<Ws> = sockets.into_iter().collect::<Result<_, _>>()?;
    // Let the server finish whatever the last upgrades started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = target.usage().map(|u| u.rss_kib);
    let opened = sockets.len();
    drop(sockets);
    Ok(ConnectionsResult { opened, open_time, rss_before_kib, rss_after_kib })
}

async fn open(target: &Target, username: String) -> Result<Ws, String> {
    let cookie = target.login(&username).await?;
    client::ws_connect(target.addr, cookie.as_deref(), IDLE_READ_BUFFER).await
}
