//! # chatroom
//!
//! A real-time chat server: one binary serves a plain-HTML front end, pushes
//! messages over WebSockets and keeps every room's history in a readable
//! JSON-lines file. See ARCHITECTURE.md for the bird's-eye view.
//!
//! # Layout
//! - [`config`]: every setting, validated at start.
//! - [`model`]: validated names and texts; the stored message.
//! - [`protocol`]: WebSocket frames (serde enums tagged by `type`).
//! - [`store`]: the storage traits (one per concern), the JSON-lines
//!   backend — the only code that touches files —, the PostgreSQL backend
//!   (the only code that speaks SQL) and the in-memory reference backend.
//! - [`hub`]: per-room writer (store, then publish), presence, idle rooms.
//! - [`fanout`]: the seam that carries room events to connections
//!   (`LocalFanout`: one broadcast channel per room).
//! - [`auth`]: guests, accounts, sessions (through the sessions store).
//! - [`chat`]: the use cases (send, edit, delete, history, rooms, …), one
//!   method per action, for every transport.
//! - [`connection`]: one WebSocket client's life, transport-agnostic.
//! - [`http`]: the only module that knows warp: routes, pages, upgrade,
//!   and the accept loop (connection limits and timeouts).
//! - [`os`]: the open-file limit, raised at start.
//! - [`health`]: what `/healthz` answers (the store's check, cached).
//! - [`telemetry`]: the metrics and their Prometheus text (`/metrics`).
//!
//! [`App::open`] builds all of it from a [`Config`]; [`App::serve`] runs it
//! on a listener until a shutdown future resolves. `main.rs` is just glue.

pub mod auth;
pub mod chat;
pub mod config;
pub mod connection;
pub mod error;
pub mod fanout;
pub mod health;
pub mod http;
pub mod hub;
pub mod model;
pub mod os;
pub mod protocol;
pub mod rate;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_logs;

/// What the fuzz targets (`fuzz/`) and their corpus test
/// (`tests/fuzz_corpus.rs`) reach that is not public otherwise: the codec
/// of one room-file line. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::store::jsonl::event_line::{line_of, parse as parse_line, redact_in_place, seq_of};
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

pub use crate::config::Config;
use crate::config::MetricsEndpoint;
use crate::health::Health;
use crate::auth::{Auth, AuthStores};
use crate::error::ChatError;
use crate::chat::Chat;
use crate::auth::sessions::EndReason;
use crate::fanout::{Fanout, SessionEnd};
use crate::hub::{Hub, HubSettings};
use crate::store::{Fsync, MessageStore};
use crate::store::jsonl::{JsonlAccounts, JsonlStore};
use crate::store::postgres::PgStore;

/// How long shutdown waits for open sockets to close.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A server ready to serve: storage opened, state built.
pub struct App {
    config: Arc<Config>,
    store: Arc<dyn MessageStore>,
    auth: Arc<Auth>,
    /// `--metrics ADDR`'s listener, once bound ([`App::bind_metrics`]).
    metrics_listener: Option<TcpListener>,
}

/// Every store a server needs, from one backend or several.
pub struct Stores {
    pub messages: Arc<dyn MessageStore>,
    pub accounts: AuthStores,
}

impl Stores {
    /// The configured storage: PostgreSQL when `config.database_url` is
    /// set (every node on that database shares everything, sessions
    /// included), else the JSON-lines files of the data directory.
    pub async fn open(config: &Config) -> Result<Self, ChatError> {
        match &config.database_url {
            Some(url) => Self::open_postgres(url, config.fsync).await,
            None => Self::open_data_dir(config).await,
        }
    }

    /// The storage `config` names, as it may be logged (never a password).
    pub fn describe(config: &Config) -> String {
        match &config.database_url {
            Some(url) => format!("PostgreSQL at {}", store::postgres::display_url(url)),
            None => format!("the data directory {}", config.data_dir.display()),
        }
    }

    /// The PostgreSQL database at `url`, its schema brought up to date.
    pub async fn open_postgres(url: &str, fsync: Fsync) -> Result<Self, ChatError> {
        let store = Arc::new(PgStore::open(url, fsync).await?);
        Ok(Self { messages: store.clone(), accounts: AuthStores::of(store) })
    }

    /// The JSON-lines files of `config.data_dir`.
    pub async fn open_data_dir(config: &Config) -> Result<Self, ChatError> {
        let dir = config.data_dir.clone();
        let fsync = config.fsync;
        let (store, accounts) = tokio::task::spawn_blocking(move || {
            Ok::<_, ChatError>((JsonlStore::open(&dir, fsync)?, JsonlAccounts::open(&dir, fsync)?))
        })
        .await
        .map_err(|e| ChatError::Internal(e.to_string()))??;
        Ok(Self { messages: Arc::new(store), accounts: AuthStores::of(Arc::new(accounts)) })
    }
}

impl App {
    /// Opens the configured storage ([`Stores::open`]) and builds the
    /// server's state.
    pub async fn open(config: Config) -> Result<Self, ChatError> {
        let stores = Stores::open(&config).await?;
        Self::with_stores(config, stores).await
    }

    /// Builds the server's state over stores the caller opened (tests run
    /// two nodes over one shared store this way).
    pub async fn with_stores(config: Config, stores: Stores) -> Result<Self, ChatError> {
        let auth = Auth::open(stores.accounts, config.session_limits, config.guests_allowed).await?;
        Ok(Self { config: Arc::new(config), store: stores.messages, auth: Arc::new(auth), metrics_listener: None })
    }

    /// With `--metrics ADDR`, binds that address now (`serve` does it
    /// otherwise), so the caller knows where `/metrics` is; its bound
    /// address, or `None` when metrics are not served apart.
    pub async fn bind_metrics(&mut self) -> Result<Option<SocketAddr>, ChatError> {
        let MetricsEndpoint::Separate(addr) = self.config.metrics else { return Ok(None) };
        let cannot = |e: std::io::Error| ChatError::Internal(format!("cannot listen on {addr} for --metrics: {e}"));
        let listener = match self.metrics_listener.take() {
            Some(listener) => listener,
            None => TcpListener::bind(addr).await.map_err(cannot)?,
        };
        let bound = listener.local_addr().map_err(cannot)?;
        self.metrics_listener = Some(listener);
        Ok(Some(bound))
    }

    /// Serves on `listener` until `shutdown` resolves, then closes every
    /// socket with 1001 ("going away") and flushes storage.
    pub async fn serve(mut self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ChatError> {
        self.bind_metrics().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let node: u64 = rand::random();
        let fanout = fanout::open(self.config.redis_url.as_deref(), &self.config.redis_prefix, node)
            .await
            .map_err(|e| ChatError::Internal(e.to_string()))?;
        let health = Arc::new(Health::new(self.store.clone(), fanout.clone(), node));
        tracing::info!(node = health.node(), "node started");
        let hub = Hub::new(
            self.store.clone(),
            fanout.clone(),
            HubSettings { room_create_rate: self.config.room_create_rate, room_idle: self.config.room_idle },
        );
        tokio::spawn(relay_session_ends(self.auth.clone(), fanout.clone(), node, stop_rx.clone()));
        let state = http::State {
            chat: Chat::new(hub, self.auth.clone(), fanout, self.config.send_rate),
            auth: self.auth.clone(),
            config: self.config.clone(),
            shutdown: stop_rx.clone(),
            connections: connections.clone(),
            health,
        };
        let metrics_server = self.metrics_listener.take().map(|metrics_listener| {
            let mut stop = stop_rx.clone();
            let stopped = async move { let _ = stop.wait_for(|s| *s).await; };
            tokio::spawn(http::serve_metrics(metrics_listener, self.config.limits, stopped))
        });
        tokio::spawn(session_upkeep(self.auth.clone(), stop_rx));
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; closing sockets");
            let _ = stop_tx.send(true);
        };
        http::serve(state, listener, signal).await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        connections.close();
        if tokio::time::timeout(SOCKET_CLOSE_GRACE, connections.wait()).await.is_err() {
            tracing::warn!(open = connections.len(), "some sockets did not close in time");
        }
        if let Err(e) = self.auth.write_unwritten_ends().await {
            tracing::error!(error = %e, "could not write the end of some sessions; they will be live after a restart");
        }
        self.store.flush().await?;
        tracing::info!("stopped; all data flushed");
        Ok(())
    }
}

/// Ends sessions past their time limits (so their sockets close promptly),
/// retries the session ends that could not be written, and writes session
/// activity to disk.
async fn session_upkeep(auth: Arc<Auth>, mut stop: watch::Receiver<bool>) {
    let shortest = auth.limits().idle.min(auth.limits().absolute);
    let period = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match auth.upkeep().await {
                    Ok(0) => {}
                    Ok(ended) => tracing::info!(ended, "sessions expired"),
                    Err(e) => tracing::error!(error = %e, "session upkeep failed"),
                }
            }
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
        }
    }
}

/// Carries session ends between this node's [`Auth`] and the fan-out: an
/// end made here (log-out, replaced, expired) is published for the other
/// nodes; an end another node published ends the session here too, so its
/// sockets on this node close with 4401. Connections only ever watch their
/// own session. Subscribes at once (before the returned future first
/// runs), so no end made after this call is missed.
fn relay_session_ends(auth: Arc<Auth>, fanout: Arc<dyn Fanout>, node: u64, mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> {
    let mut here = auth.sessions_ended_here();
    let mut everywhere = fanout.subscribe_session_ends();
    async move {
        loop {
            tokio::select! {
                Ok((id_hash, reason)) = here.recv() => fanout.publish_session_end(SessionEnd { id_hash, reason: reason.name(), node }),
                Ok(end) = everywhere.recv() => {
                    if end.node != node {
                        auth.end_elsewhere(&end.id_hash, EndReason::from_name(end.reason));
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Runs a command other than serving (`chatroom migrate …`), logging what
/// it did.
pub async fn run_command(command: config::Command) -> Result<(), ChatError> {
    match command {
        config::Command::Migrate { from, to } => {
            tracing::info!(from = %from.display(), to = %store::postgres::display_url(&to), "copying a data directory into PostgreSQL");
            let report = store::migrate::copy_data_dir(&from, &to).await?;
            for (kind, tally) in report.kinds() {
                tracing::info!(copied = tally.copied, already_there = tally.already_there, "{kind}");
            }
            match report.copied_nothing() {
                true => tracing::info!("nothing to copy: the database already holds everything"),
                false => tracing::info!("copied"),
            }
            Ok(())
        }
    }
}

/// A server running in the background: for tests, benchmarks and embedding.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served with `--metrics ADDR`.
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ChatError>>,
}

impl RunningServer {
    /// Opens the data directory, binds `config.addr` (port 0 picks a free
    /// port) and serves in a background task.
    pub async fn start(config: Config) -> Result<Self, ChatError> {
        let listener = TcpListener::bind(config.addr).await?;
        let app = App::open(config).await?;
        Self::serve(app, listener).await
    }

    /// Like [`start`](Self::start), over stores the caller opened.
    pub async fn start_with_stores(config: Config, stores: Stores) -> Result<Self, ChatError> {
        let listener = TcpListener::bind(config.addr).await?;
        let app = App::with_stores(config, stores).await?;
        Self::serve(app, listener).await
    }

    async fn serve(mut app: App, listener: TcpListener) -> Result<Self, ChatError> {
        let addr = listener.local_addr()?;
        let metrics_addr = app.bind_metrics().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, metrics_addr, stop: Some(stop), task })
    }

    /// Where `/metrics` is served with `--metrics ADDR` (its port, when
    /// ADDR asked for port 0); `None` otherwise.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Shuts down gracefully and waits until storage is flushed.
    pub async fn stop(mut self) -> Result<(), ChatError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| ChatError::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod session_end_tests {
    use super::*;
    use crate::auth::AuthStores;
    use crate::auth::sessions::SessionLimits;
    use crate::fanout::LocalFanout;
    use crate::store::memory::MemoryStore;

    /// Two nodes over one store and one fan-out (what a shared database and
    /// broker give): a log-out on node A ends the session on node B too.
    #[tokio::test]
    async fn a_session_ended_on_one_node_ends_on_the_others() {
        let store = Arc::new(MemoryStore::new());
        let limits = SessionLimits { idle: Duration::from_secs(60), absolute: Duration::from_secs(600) };
        let node_a = Arc::new(Auth::open(AuthStores::of(store.clone()), limits, true).await.unwrap());
        let node_b = Arc::new(Auth::open(AuthStores::of(store), limits, true).await.unwrap());
        let fanout: Arc<dyn Fanout> = Arc::new(LocalFanout::default());
        let (_stop, stopping) = watch::channel(false);
        tokio::spawn(relay_session_ends(node_a.clone(), fanout.clone(), 1, stopping.clone()));
        tokio::spawn(relay_session_ends(node_b.clone(), fanout, 2, stopping));

        let (raw, on_a) = node_a.guest_login("ann", None).await.unwrap();
        let on_b = node_b.session(&raw).await.unwrap().expect("node B finds the session in the store");
        let mut ended_on_b = on_b.ended();
        node_a.log_out(&on_a).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), ended_on_b.wait_for(Option::is_some)).await;
        assert_eq!(*reason.expect("the end reached node B").unwrap(), Some(EndReason::LoggedOut));
        assert!(node_b.session(&raw).await.unwrap().is_none(), "the cookie no longer works on node B");
    }
}
