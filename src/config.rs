//! Every setting, from flags or environment variables, validated at start.
//!
//! `chatroom --help` prints them all; README.md lists them too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::auth::sessions::SessionLimits;
pub use crate::rate::SendRate;
use crate::store::Fsync;

/// A small, fast, self-hosted chat server.
#[derive(Debug, Clone, Parser)]
#[command(name = "chatroom", version, about)]
pub struct Cli {
    /// Address to listen on (use 0.0.0.0:3000 to accept other machines).
    #[arg(long, env = "CHATROOM_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: String,

    /// Directory that holds rooms, messages, accounts and sessions.
    #[arg(long, env = "CHATROOM_DATA", default_value = "./data")]
    pub data_dir: PathBuf,

    /// An extra Origin allowed to use the API and WebSocket (repeatable,
    /// or comma-separated in the env var), e.g. https://chat.example.com.
    /// The server's own origin is always allowed.
    #[arg(long = "allow-origin", env = "CHATROOM_ALLOW_ORIGINS", value_delimiter = ',')]
    pub allow_origins: Vec<String>,

    /// The address users open, e.g. https://chat.example.com (repeatable,
    /// or comma-separated in the env var). Requests must name one of these
    /// hosts (or, on a loopback bind, a loopback name) and state-changing
    /// ones must come from one of these origins. Without it, a loopback
    /// bind answers only to loopback names (localhost, 127.0.0.1, [::1]).
    #[arg(long = "public-url", env = "CHATROOM_PUBLIC_URL", value_delimiter = ',')]
    pub public_urls: Vec<String>,

    /// Turn off guest (name-only) access: everyone must sign up or log in.
    #[arg(long, env = "CHATROOM_NO_GUESTS")]
    pub no_guests: bool,

    /// End a session after this many seconds without activity.
    #[arg(long, env = "CHATROOM_SESSION_IDLE_SECS", default_value_t = 30 * 60)]
    pub session_idle_secs: u64,

    /// End a session this many seconds after log-in, whatever the activity.
    #[arg(long, env = "CHATROOM_SESSION_MAX_SECS", default_value_t = 8 * 60 * 60)]
    pub session_max_secs: u64,

    /// Mark the session cookie `Secure` (serve over HTTPS behind a proxy).
    #[arg(long, env = "CHATROOM_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// Messages one connection may send per second, sustained (0 = no limit).
    #[arg(long, env = "CHATROOM_SEND_RATE", default_value_t = 10.0)]
    pub send_rate: f64,

    /// Messages one connection may send in a burst above the sustained rate.
    #[arg(long, env = "CHATROOM_SEND_BURST", default_value_t = 30)]
    pub send_burst: u32,

    /// Frames of any kind (typing, join, …) one connection may send per
    /// second, sustained (0 = no limit). Frames beyond it are dropped.
    #[arg(long, env = "CHATROOM_FRAME_RATE", default_value_t = 100.0)]
    pub frame_rate: f64,

    /// Frames one connection may send in a burst above the sustained rate.
    #[arg(long, env = "CHATROOM_FRAME_BURST", default_value_t = 200)]
    pub frame_burst: u32,

    /// Behind a reverse proxy: take the client's address (for log-in
    /// throttling) from the last entry of `X-Forwarded-For`.
    #[arg(long, env = "CHATROOM_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// When stored messages reach the disk before they are acknowledged:
    /// always (every message written and fsynced on its own), batch (group
    /// commit: a room's sends that queued while its last sync ran share
    /// the next one) or never (the operating system decides; survives a
    /// crash of the server, not a power cut). docs/RELIABILITY.md.
    #[arg(long, env = "CHATROOM_FSYNC", default_value = "batch")]
    pub fsync: Fsync,

    /// A request's headers must arrive whole within this many seconds
    /// (counted from the first byte, or from accept on a new connection).
    #[arg(long, env = "CHATROOM_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// An idle keep-alive HTTP connection is closed after this many seconds.
    #[arg(long, env = "CHATROOM_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,

    /// Most connections (HTTP and WebSocket) open at once; beyond it new
    /// ones get 503 `server_full`. 0 = three quarters of the open-file limit.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most connections open at once from one address (0 = no limit).
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// A WebSocket whose writes make no progress for this many seconds is
    /// closed (it resumes with `after` when it reconnects).
    #[arg(long, env = "CHATROOM_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub write_timeout_secs: u64,

    /// Ping every WebSocket this often; one that sends nothing back (not
    /// even a pong) for a whole period is closed (0 = no pings).
    #[arg(long, env = "CHATROOM_PING_SECS", default_value_t = 30)]
    pub ping_secs: u64,

    /// A room nobody has open releases its file and memory after this many
    /// seconds unused (it reopens on demand).
    #[arg(long, env = "CHATROOM_ROOM_IDLE_SECS", default_value_t = 60)]
    pub room_idle_secs: u64,

    /// Rooms one user may create at once (0 = no limit); one address may
    /// create five times as many.
    #[arg(long, env = "CHATROOM_ROOM_CREATE_BURST", default_value_t = 20)]
    pub room_create_burst: u32,

    /// Rooms one user may create per hour once the burst is used (one
    /// address: five times as many).
    #[arg(long, env = "CHATROOM_ROOM_CREATE_PER_HOUR", default_value_t = 60.0)]
    pub room_create_per_hour: f64,

    /// Keep everything in PostgreSQL instead of the data directory, e.g.
    /// postgres://chat@db.example.com/chat (migrations run at start).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Share live traffic with other nodes through this Redis, e.g.
    /// redis://127.0.0.1:6379 (without it, this node is on its own).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Every Redis key and channel starts with this, so two deployments
    /// (or test runs) can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "chatroom")]
    pub redis_prefix: String,

    /// Where `GET /metrics` (Prometheus text) is served: `on` (the main
    /// address), `off`, or an address of its own such as 127.0.0.1:9100.
    #[arg(long, env = "CHATROOM_METRICS", default_value = "on")]
    pub metrics: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Copy a JSON-lines data directory into PostgreSQL (idempotent).
    Migrate {
        /// The data directory to read.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database to fill, postgres://…
        #[arg(long)]
        to: String,
    },
}

/// Where the Prometheus endpoint is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsEndpoint {
    Off,
    /// `GET /metrics` on the main address.
    Main,
    /// A listener of its own.
    Separate(SocketAddr),
}

/// How many connections the server takes at most, and how it treats them.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub keepalive_idle: Duration,
    pub max_connections: usize,
    pub max_per_ip: Option<usize>,
    pub write_timeout: Duration,
    pub ping_interval: Option<Duration>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub allowed_origins: Vec<String>,
    /// `--public-url`s as normalised origins (`scheme://host[:port]`).
    pub public_urls: Vec<String>,
    pub guests_allowed: bool,
    pub session_limits: SessionLimits,
    pub secure_cookies: bool,
    pub send_rate: Option<SendRate>,
    pub frame_rate: Option<SendRate>,
    pub trust_proxy: bool,
    pub fsync: Fsync,
    pub limits: ConnectionLimits,
    /// How long an unused room keeps its file open.
    pub room_idle: Duration,
    /// Room creations per user (`None`: no limit); per address ×5.
    pub room_create_rate: Option<SendRate>,
    /// PostgreSQL instead of the data directory.
    pub database_url: Option<String>,
    /// Redis for sharing live traffic between nodes.
    pub redis_url: Option<String>,
    /// The start of every Redis key and channel.
    pub redis_prefix: String,
    pub metrics: MetricsEndpoint,
}

/// An address may create this many times the rooms one user may.
pub const ROOMS_PER_ADDRESS_FACTOR: u32 = 5;
/// Open files kept free for data files when `--max-connections` is 0.
const FILES_RESERVED: usize = 64;


#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--addr {0:?} is not an address like 127.0.0.1:3000 or [::]:8080")]
    Addr(String),
    #[error("--allow-origin {0:?} is not an origin like https://chat.example.com (scheme://host[:port], no path)")]
    Origin(String),
    #[error("--public-url {0:?} is not a URL like https://chat.example.com (scheme://host[:port], no path)")]
    PublicUrl(String),
    #[error("--session-idle-secs and --session-max-secs must be at least 1")]
    SessionLimits,
    #[error("--send-rate must be a finite number >= 0, and --send-burst at least 1")]
    SendRate,
    #[error("--frame-rate must be a finite number >= 0, and --frame-burst at least 1")]
    FrameRate,
    #[error("--header-timeout-secs and --keepalive-secs must be at least 1, and --write-timeout-secs at least 1")]
    Timeouts,
    #[error("--room-create-per-hour must be a finite number > 0 when --room-create-burst is set")]
    RoomCreate,
    #[error("--database-url must be a postgres:// or postgresql:// URL")]
    DatabaseUrl,
    #[error("--redis-url must be a redis:// or rediss:// URL")]
    RedisUrl,
    #[error("--redis-prefix must be 1 to 64 letters, digits or -_.:")]
    RedisPrefix,
    #[error("--metrics {0:?} must be on, off or an address like 127.0.0.1:9100")]
    Metrics(String),
}

impl Config {
    /// Checks and converts the command line (touches no files: the store
    /// checks the data directory when it opens it).
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let addr = cli.addr.parse().map_err(|_| ConfigError::Addr(cli.addr.clone()))?;
        let allowed_origins = origins(&cli.allow_origins, ConfigError::Origin)?;
        let public_urls = origins(&cli.public_urls, ConfigError::PublicUrl)?;
        if cli.session_idle_secs == 0 || cli.session_max_secs == 0 {
            return Err(ConfigError::SessionLimits);
        }
        let send_rate = token_bucket(cli.send_rate, cli.send_burst).ok_or(ConfigError::SendRate)?;
        let frame_rate = token_bucket(cli.frame_rate, cli.frame_burst).ok_or(ConfigError::FrameRate)?;
        let limits = connection_limits(&cli)?;
        let room_create_rate = if cli.room_create_burst == 0 {
            None
        } else if cli.room_create_per_hour.is_nan() || cli.room_create_per_hour <= 0.0 {
            return Err(ConfigError::RoomCreate);
        } else {
            token_bucket(cli.room_create_per_hour / 3600.0, cli.room_create_burst).ok_or(ConfigError::RoomCreate)?
        };
        Ok(Self {
            addr,
            data_dir: cli.data_dir,
            allowed_origins,
            public_urls,
            guests_allowed: !cli.no_guests,
            session_limits: SessionLimits {
                idle: Duration::from_secs(cli.session_idle_secs),
                absolute: Duration::from_secs(cli.session_max_secs),
            },
            secure_cookies: cli.secure_cookies,
            send_rate,
            frame_rate,
            trust_proxy: cli.trust_proxy,
            fsync: cli.fsync,
            limits,
            room_idle: Duration::from_secs(cli.room_idle_secs.max(1)),
            room_create_rate,
            database_url: checked_url(cli.database_url, &["postgres://", "postgresql://"], ConfigError::DatabaseUrl)?,
            redis_url: checked_url(cli.redis_url, &["redis://", "rediss://"], ConfigError::RedisUrl)?,
            redis_prefix: redis_prefix(cli.redis_prefix)?,
            metrics: metrics_endpoint(&cli.metrics)?,
        })
    }

    /// Settings for tests and embedding: defaults, with this data directory.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let cli = Cli::parse_from(["chatroom", "--addr", "127.0.0.1:0"]);
        let mut config = Self::from_cli(Cli { data_dir: data_dir.into(), ..cli }).expect("default settings are valid");
        config.addr = "127.0.0.1:0".parse().expect("valid address");
        config
    }
}

fn connection_limits(cli: &Cli) -> Result<ConnectionLimits, ConfigError> {
    if cli.header_timeout_secs == 0 || cli.keepalive_secs == 0 || cli.write_timeout_secs == 0 {
        return Err(ConfigError::Timeouts);
    }
    let max_connections = match cli.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    Ok(ConnectionLimits {
        header_timeout: Duration::from_secs(cli.header_timeout_secs),
        keepalive_idle: Duration::from_secs(cli.keepalive_secs),
        max_connections,
        max_per_ip: (cli.max_connections_per_ip > 0).then_some(cli.max_connections_per_ip),
        write_timeout: Duration::from_secs(cli.write_timeout_secs),
        ping_interval: (cli.ping_secs > 0).then(|| Duration::from_secs(cli.ping_secs)),
    })
}

/// A non-empty URL with one of `schemes`, or `bad`; an empty one is none.
fn checked_url(url: Option<String>, schemes: &[&str], bad: ConfigError) -> Result<Option<String>, ConfigError> {
    match url.filter(|u| !u.trim().is_empty()) {
        None => Ok(None),
        Some(url) if schemes.iter().any(|s| url.starts_with(s)) => Ok(Some(url)),
        Some(_) => Err(bad),
    }
}

fn redis_prefix(prefix: String) -> Result<String, ConfigError> {
    let fits = (1..=64).contains(&prefix.len()) && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if fits { Ok(prefix) } else { Err(ConfigError::RedisPrefix) }
}

fn metrics_endpoint(raw: &str) -> Result<MetricsEndpoint, ConfigError> {
    match raw.trim() {
        "on" => Ok(MetricsEndpoint::Main),
        "off" => Ok(MetricsEndpoint::Off),
        addr => addr.parse().map(MetricsEndpoint::Separate).map_err(|_| ConfigError::Metrics(raw.to_string())),
    }
}

/// Three quarters of the open files this process may have (the rest stay
/// for room and account files), at least 16.
fn default_max_connections() -> usize {
    let open_files = crate::os::open_file_limit().unwrap_or(1024) as usize;
    (open_files.saturating_sub(FILES_RESERVED) * 3 / 4).max(16)
}

/// A rate limit from a rate and a burst: `Some(None)` for rate 0 (no
/// limit), `None` when the values make no sense.
fn token_bucket(per_second: f64, burst: u32) -> Option<Option<SendRate>> {
    if !per_second.is_finite() || per_second < 0.0 || burst == 0 {
        return None;
    }
    Some((per_second > 0.0).then_some(SendRate { per_second, burst }))
}

/// Each non-empty entry as a normalised origin, or `bad(entry)`.
fn origins(raw: &[String], bad: fn(String) -> ConfigError) -> Result<Vec<String>, ConfigError> {
    raw.iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| normalize_origin(o).ok_or_else(|| bad(o.clone())))
        .collect()
}

/// `scheme://host[:port]` in lower case, or `None` if it is not an origin.
pub fn normalize_origin(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = raw.split_once("://")?;
    let host_ok = !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    (matches!(scheme, "http" | "https") && host_ok).then_some(raw)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_or_refused() {
        assert_eq!(normalize_origin("HTTPS://Chat.Example.com/").as_deref(), Some("https://chat.example.com"));
        assert_eq!(normalize_origin("http://[::1]:3000").as_deref(), Some("http://[::1]:3000"));
        assert!(normalize_origin("chat.example.com").is_none());
        assert!(normalize_origin("https://x.com/path").is_none());
        assert!(normalize_origin("ftp://x.com").is_none());
    }

    #[test]
    fn bad_settings_get_clear_errors() {
        let base = Cli::parse_from(["chatroom", "--data-dir", "/tmp"]);
        let err = Config::from_cli(Cli { addr: "localhost".into(), ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--addr"), "{err}");
        let err = Config::from_cli(Cli { session_idle_secs: 0, ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("session"), "{err}");
        let err = Config::from_cli(Cli { header_timeout_secs: 0, ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--header-timeout-secs"), "{err}");
        let err = Config::from_cli(Cli { room_create_per_hour: 0.0, ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--room-create-per-hour"), "{err}");
        let err = Config::from_cli(Cli { database_url: Some("mysql://x".into()), ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--database-url"), "{err}");
        let err = Config::from_cli(Cli { redis_url: Some("http://x".into()), ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--redis-url"), "{err}");
        let err = Config::from_cli(Cli { redis_prefix: "a b".into(), ..base.clone() }).unwrap_err();
        assert!(err.to_string().contains("--redis-prefix"), "{err}");
        let err = Config::from_cli(Cli { metrics: "sometimes".into(), ..base }).unwrap_err();
        assert!(err.to_string().contains("--metrics"), "{err}");
    }
}
