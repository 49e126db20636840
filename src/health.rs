//! `/healthz`'s answer: can this node take sends (does its store answer),
//! and how does its fan-out reach the other nodes.
//!
//! A node whose store does not answer [`MessageStore::check`] within
//! [`CHECK_TIMEOUT`] is `down`: `http` answers 503 so a load balancer takes
//! it out. A fan-out that is down still leaves the node serving (its own
//! sockets get everything from the store), so it is reported, not failed.
//!
//! The store's answer is kept for [`CACHE_FOR`], and one check runs at a
//! time (the others wait for its answer), so a flood of health checks costs
//! the store at most one query a second. Worst case from a store going away
//! to `down`: `CACHE_FOR` + `CHECK_TIMEOUT`, 4 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::fanout::Fanout;
use crate::store::MessageStore;

/// How long a store check's answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// A store that has not answered by then is down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the store takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreHealth {
    Ok,
    Down,
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub store: StoreHealth,
    /// `local` (one node), `ok` or `down` (`FanoutStatus::name`).
    pub fanout: &'static str,
    /// This node's id (16 hex digits, new at every start, logged at start).
    pub node: String,
    /// The server's version.
    pub version: &'static str,
}

impl HealthReport {
    /// Whether the node can accept sends (a load balancer should send it
    /// traffic).
    pub fn ready(&self) -> bool {
        self.store == StoreHealth::Ok
    }
}

/// The last store check.
#[derive(Clone, Copy)]
struct Checked {
    at: Instant,
    store: StoreHealth,
}

pub struct Health {
    store: Arc<dyn MessageStore>,
    fanout: Arc<dyn Fanout>,
    node: String,
    last: Mutex<Option<Checked>>,
}

impl Health {
    pub fn new(store: Arc<dyn MessageStore>, fanout: Arc<dyn Fanout>, node: u64) -> Self {
        Self { store, fanout, node: format!("{node:016x}"), last: Mutex::new(None) }
    }

    /// This node's id, as `/healthz` shows it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How the node is now (the store's state at most [`CACHE_FOR`] old).
    pub async fn report(&self) -> HealthReport {
        HealthReport {
            store: self.store_health().await,
            fanout: self.fanout.status().name(),
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The cached answer, or a new check (one at a time: the lock is held
    /// across it, so callers that arrive meanwhile get its answer). A
    /// change is logged once, not at every check.
    async fn store_health(&self) -> StoreHealth {
        let mut last = self.last.lock().await;
        if let Some(checked) = *last
            && checked.at.elapsed() < CACHE_FOR
        {
            return checked.store;
        }
        let was = last.map(|c| c.store);
        let store = match self.check_store().await {
            Ok(()) => StoreHealth::Ok,
            Err(why) => {
                if was != Some(StoreHealth::Down) {
                    tracing::warn!(why, "the store cannot take writes: /healthz answers 503");
                }
                StoreHealth::Down
            }
        };
        if was == Some(StoreHealth::Down) && store == StoreHealth::Ok {
            tracing::info!("the store answers again: /healthz answers 200");
        }
        *last = Some(Checked { at: Instant::now(), store });
        store
    }

    /// `MessageStore::check` within [`CHECK_TIMEOUT`]; why not, if not.
    async fn check_store(&self) -> Result<(), String> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    }
}
