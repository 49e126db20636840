//! Redis for the cluster tests, without disturbing anyone else's:
//!
//! - [`RedisPrefix`]: a random key prefix on the machine's shared Redis
//!   (`REDIS_URL`, default `redis://127.0.0.1:6379`), its keys deleted on
//!   drop. Never `FLUSHALL`, never stopped: other tests use it meanwhile.
//! - [`PrivateRedis`]: a `redis-server` of the test's own on a free port,
//!   which the test may stop and start again on the same port (outages).
//!
//! Without Redis (or `redis-server`) they return `None` and print a loud
//! `SKIPPED` line; under `CI=true` they panic instead: CI must run them
//! ([`super::skip_or_fail`]).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatroom::RunningServer;
use chatroom::auth::AuthStores;
use chatroom::store::memory::MemoryStore;
use chatroom::{Config, Stores};
use std::sync::Arc;

use super::{Endpoint, TIMEOUT, free_port, skip_or_fail};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// How long a Redis may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn answers_ping(url: &str) -> Result<(), ::redis::RedisError> {
    let client = ::redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    ::redis::cmd("PING").query::<String>(&mut connection).map(|_| ())
}

/// A random prefix on the shared Redis; its keys go on drop.
pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl RedisPrefix {
    pub fn new() -> Option<Self> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| SHARED_REDIS.to_string());
        if let Err(e) = answers_ping(&url) {
            skip_or_fail(&format!("Redis is unavailable at {url}: {e}"));
            return None;
        }
        let prefix = format!("chatroom-test-{:016x}", rand::random::<u64>());
        Some(Self { url, prefix })
    }

    /// Keys under the prefix now.
    pub fn keys(&self) -> Vec<String> {
        let Ok(client) = ::redis::Client::open(self.url.as_str()) else { return Vec::new() };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return Vec::new() };
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let page = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<String>)>(&mut connection);
            let Ok((next, found)) = page else { return keys };
            keys.extend(found);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if keys.is_empty() {
            return;
        }
        if let Ok(client) = ::redis::Client::open(self.url.as_str())
            && let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2))
        {
            let _ = ::redis::cmd("DEL").arg(&keys).query::<u64>(&mut connection);
        }
    }
}

/// A `redis-server` of this test's own, on a free port.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Option<Self> {
        let port = free_port();
        let mut redis = Self { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(why) => {
                skip_or_fail(&why);
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage: connections drop at once).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty; returns once it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|why| panic!("{why}"));
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot be started: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        // Waits for a condition (it answers), not for a time.
        while let Err(e) = answers_ping(&self.url()) {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} did not answer: {e}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Chat nodes in this process sharing one in-memory store (what a shared
/// database gives) and one Redis under one prefix.
pub struct Cluster {
    pub store: Arc<MemoryStore>,
    nodes: Vec<RunningServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `count` nodes on `url` under `prefix`, without send pacing.
    pub async fn start(count: usize, url: &str, prefix: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(MemoryStore::new());
        let mut nodes = Vec::new();
        for _ in 0..count {
            let mut config = Config::for_data_dir(dir.path());
            config.redis_url = Some(url.to_string());
            config.redis_prefix = prefix.to_string();
            config.send_rate = None;
            let stores = Stores { messages: store.clone(), accounts: AuthStores::of(store.clone()) };
            let node = tokio::time::timeout(TIMEOUT * 3, RunningServer::start_with_stores(config, stores))
                .await
                .expect("a node starts within 30 s")
                .expect("a node starts");
            nodes.push(node);
        }
        Self { store, nodes, _dir: dir }
    }

    pub fn node(&self, index: usize) -> Endpoint {
        Endpoint { addr: self.nodes[index].addr }
    }

    pub async fn stop(self) {
        for node in self.nodes {
            tokio::time::timeout(TIMEOUT * 3, node.stop()).await.expect("a node stops within 30 s").expect("a node stops cleanly");
        }
    }
}
