//! What the load goes to: a chatroom server (started here as a child
//! process, or already running at `--url`) or the baseline relay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::backends::{self, FreshDatabase};
use crate::client::{self, HttpConn};
use crate::process::{self, ServerProcess, TempDir, Usage};
use crate::relay;

/// The line `chatroom` logs once it accepts connections.
const CHATROOM_LISTENING: &str = "chatroom is listening on";

/// How servers are started.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// Connect to this running chatroom instead of starting one.
    pub url: Option<SocketAddr>,
    /// The `chatroom` binary.
    pub server_bin: PathBuf,
    /// Another chatroom binary to measure in turns with this one.
    pub compare_bin: Option<PathBuf>,
    /// CPUs for the server processes (`taskset -c`), if pinning.
    pub server_cpus: Option<String>,
    /// Extra chatroom flags (`--flag`, value), each passed only to binaries
    /// whose `--help` lists it: an older binary refuses a flag it does not
    /// know, and before/after runs start both.
    pub flags_if_supported: Vec<(String, String)>,
    /// Keep data in a fresh database on this PostgreSQL server (one per
    /// target, shared by its nodes) instead of a data directory.
    pub database_server: Option<String>,
    /// Nodes share live traffic through this Redis (a prefix per target).
    pub redis_url: Option<String>,
    /// chatroom processes per target (clients are spread over them).
    pub nodes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chatroom,
    /// The minimal relay with tungstenite's default socket settings.
    Relay,
    /// The minimal relay reading through a small buffer like chatroom's.
    TunedRelay,
    /// A second chatroom binary (`--compare-bin`), for before/after runs.
    Compared,
}

/// The tuned relay's read buffer: chatroom's (see src/http/ws.rs).
pub const TUNED_RELAY_READ_BUFFER: usize = 1024;

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Chatroom => "chatroom",
            Kind::Relay => "relay",
            Kind::TunedRelay => "tuned relay",
            Kind::Compared => "compared chatroom",
        }
    }

    pub fn is_relay(self) -> bool {
        matches!(self, Kind::Relay | Kind::TunedRelay)
    }
}

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub process: Option<ServerProcess>,
    /// The temporary data directory, removed when the target is dropped
    /// (after the process: fields drop in order). Held only for that: the
    /// benchmark never reads the server's files.
    _data: Option<TempDir>,
    /// The other nodes of a cluster (`--nodes`), over the same database.
    pub peers: Vec<Target>,
    /// Dropped last, once every node is gone.
    _database: Option<FreshDatabase>,
}

impl Target {
    /// Starts chatroom on a fresh temporary data directory (or uses `--url`).
    pub fn chatroom(opts: &ServerOpts) -> Result<Self, String> {
        if let Some(addr) = opts.url {
            return Ok(Self { kind: Kind::Chatroom, addr, process: None, _data: None, peers: Vec::new(), _database: None });
        }
        Self::chatroom_from(opts, &opts.server_bin, Kind::Chatroom)
    }

    /// One node, or `opts.nodes` nodes over one fresh database and one
    /// Redis prefix.
    fn chatroom_from(opts: &ServerOpts, bin: &Path, kind: Kind) -> Result<Self, String> {
        let database = opts.database_server.as_deref().map(FreshDatabase::create).transpose()?;
        let mut shared = Vec::new();
        if let Some(database) = &database {
            shared.push(("--database-url".to_string(), database.url.clone()));
        }
        if let Some(redis) = &opts.redis_url {
            shared.push(("--redis-url".to_string(), redis.clone()));
            shared.push(("--redis-prefix".to_string(), backends::redis_prefix(&crate::run_tag())));
        }
        let mut first = Self::node(opts, bin, kind, &shared)?;
        for _ in 1..opts.nodes.max(1) {
            first.peers.push(Self::node(opts, bin, kind, &shared)?);
        }
        first._database = database;
        Ok(first)
    }

    fn node(opts: &ServerOpts, bin: &Path, kind: Kind, shared: &[(String, String)]) -> Result<Self, String> {
        let data = TempDir::new("data").map_err(|e| format!("temp dir: {e}"))?;
        let process = spawn_chatroom(opts, bin, &data.0, shared)?;
        Ok(Self { kind, addr: process.addr, process: Some(process), _data: Some(data), peers: Vec::new(), _database: None })
    }

    /// Starts chatroom on an existing data directory (kept afterwards).
    pub fn chatroom_on(opts: &ServerOpts, data_dir: &Path) -> Result<Self, String> {
        let process = spawn_chatroom(opts, &opts.server_bin, data_dir, &[])?;
        Ok(Self { kind: Kind::Chatroom, addr: process.addr, process: Some(process), _data: None, peers: Vec::new(), _database: None })
    }

    /// A chatroom node on the PostgreSQL database at `url` (which the
    /// caller made and drops), `data_dir` for the rest.
    pub fn chatroom_on_database(opts: &ServerOpts, data_dir: &Path, url: &str) -> Result<Self, String> {
        let process = spawn_chatroom(opts, &opts.server_bin, data_dir, &[("--database-url".to_string(), url.to_string())])?;
        Ok(Self { kind: Kind::Chatroom, addr: process.addr, process: Some(process), _data: None, peers: Vec::new(), _database: None })
    }

    /// The node client `i` talks to (clients are dealt over the nodes).
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        match i % (self.peers.len() + 1) {
            0 => self.addr,
            n => self.peers[n - 1].addr,
        }
    }

    /// How many chatroom processes serve this target.
    pub fn node_count(&self) -> usize {
        self.peers.len() + 1
    }

    /// Starts a baseline relay (this binary, `relay` subcommand).
    pub fn relay(opts: &ServerOpts, kind: Kind) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = process::command(&me, opts.server_cpus.as_deref());
        command.args(["relay", "--addr", "127.0.0.1:0"]);
        if kind == Kind::TunedRelay {
            command.arg("--relay-read-buffer").arg(TUNED_RELAY_READ_BUFFER.to_string());
        }
        let process = ServerProcess::spawn("relay", command, relay::LISTENING)?;
        Ok(Self { kind, addr: process.addr, process: Some(process), _data: None, peers: Vec::new(), _database: None })
    }

    /// Starts whichever `kind` is.
    pub fn start(opts: &ServerOpts, kind: Kind) -> Result<Self, String> {
        match kind {
            Kind::Chatroom => Self::chatroom(opts),
            Kind::Compared => {
                let bin = opts.compare_bin.as_deref().ok_or("--compare-bin is not set")?;
                Self::chatroom_from(opts, bin, Kind::Compared)
            }
            relay => Self::relay(opts, relay),
        }
    }

    pub fn label(&self) -> &'static str {
        self.kind.label()
    }

    /// CPU time and RSS of the server (every node of it, summed), when it
    /// is our child.
    pub fn usage(&self) -> Option<Usage> {
        let own = self.process.as_ref().map(ServerProcess::usage)?;
        Some(self.peers.iter().filter_map(Target::usage).fold(own, |sum, peer| Usage {
            cpu: sum.cpu + peer.cpu,
            sys: sum.sys + peer.sys,
            rss_kib: sum.rss_kib + peer.rss_kib,
            hwm_kib: sum.hwm_kib + peer.hwm_kib,
            at: sum.at,
        }))
    }

    /// Warnings the server (every node) logged so far (0 when not our child).
    pub fn warnings(&self) -> u64 {
        let own = self.process.as_ref().map_or(0, |p| p.warnings.load(std::sync::atomic::Ordering::Relaxed));
        own + self.peers.iter().map(Target::warnings).sum::<u64>()
    }

    /// A session cookie for `username`, from the node at `addr` (the relay
    /// has no log-in: `None`).
    pub async fn login_at(&self, addr: SocketAddr, username: &str) -> Result<Option<String>, String> {
        if self.kind.is_relay() {
            return Ok(None);
        }
        Ok(Some(client::guest_login(addr, username).await?.1))
    }

    /// A session cookie for `username` from the first node.
    pub async fn login(&self, username: &str) -> Result<Option<String>, String> {
        self.login_at(self.addr, username).await
    }

    /// An HTTP connection logged in as `username` (chatroom only).
    pub async fn api(&self, username: &str) -> Result<HttpConn, String> {
        Ok(client::guest_login(self.addr, username).await?.0)
    }

    /// Makes sure these rooms exist (the relay makes rooms on first join).
    pub async fn create_rooms(&self, admin: &str, rooms: &[String]) -> Result<(), String> {
        if self.kind.is_relay() {
            return Ok(());
        }
        let mut api = self.api(admin).await?;
        for room in rooms {
            client::create_room(&mut api, room).await?;
        }
        Ok(())
    }
}

/// Starts one chatroom; `shared` flags (the database and Redis of a
/// cluster) are required, the rest passed only where supported.
fn spawn_chatroom(opts: &ServerOpts, bin: &Path, data_dir: &Path, shared: &[(String, String)]) -> Result<ServerProcess, String> {
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p chatroom` (or pass --server-bin)",
            bin.display()
        ));
    }
    let mut command = process::command(bin, opts.server_cpus.as_deref());
    command.args(["--addr", "127.0.0.1:0", "--send-rate", "0", "--frame-rate", "0", "--data-dir"]).arg(data_dir);
    // The generator creates its rooms from one guest: no creation pace.
    let always = [("--room-create-burst".to_string(), "0".to_string())];
    for (flag, value) in always.iter().chain(&opts.flags_if_supported) {
        if supports(bin, flag) {
            command.arg(flag).arg(value);
        } else {
            eprintln!("  {} does not know {flag}: started without it", bin.display());
        }
    }
    for (flag, value) in shared {
        if !supports(bin, flag) {
            return Err(format!("{} does not know {flag}, which this run needs", bin.display()));
        }
        command.arg(flag).arg(value);
    }
    command.env("RUST_LOG", "info");
    ServerProcess::spawn("chatroom", command, CHATROOM_LISTENING)
}

/// Whether `bin --help` lists `flag` (asked once per binary).
pub fn supports(bin: &Path, flag: &str) -> bool {
    static HELP: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut help = HELP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = help.entry(bin.to_path_buf()).or_insert_with(|| {
        std::process::Command::new(bin)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    });
    lists_flag(text, flag)
}

/// `flag` as a whole word of a `--help` text (`--ping-secs` is not
/// `--ping-secs-max`).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let after = help[at + flag.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_flags_in_help() {
        let help = "Options:\n      --write-timeout-secs <WRITE_TIMEOUT_SECS>\n      --ping-secs-max <N>\n";
        assert!(lists_flag(help, "--write-timeout-secs"));
        assert!(!lists_flag(help, "--ping-secs"));
        assert!(!lists_flag(help, "--write-timeout"));
    }
}
