//! `chatroom-bench`: the load benchmark (see docs/BENCHMARKS.md).
//!
//! ```text
//! cargo build --release -p chatroom -p chatroom-bench
//! target/release/chatroom-bench fanout --find-max   # chatroom, then the relay
//! target/release/chatroom-bench all                 # a quick run of everything
//! target/release/chatroom-bench room --compare-bin OLD   # TCP_NODELAY before/after
//! target/release/chatroom-bench slow-readers        # peak RSS with paused readers
//! target/release/chatroom-bench persist --database-url postgres://postgres@127.0.0.1/postgres
//! target/release/chatroom-bench search --database-url postgres://postgres@127.0.0.1/postgres
//! target/release/chatroom-bench fanout --nodes 3 --database-url postgres://postgres@127.0.0.1/postgres \
//!     --redis-url redis://127.0.0.1:6379           # three nodes, messages crossing them
//! target/release/chatroom-bench capacity --connections 100000 --nodes 6 \
//!     --database-url postgres://postgres@127.0.0.1/postgres --redis-url redis://127.0.0.1:6379
//! ```
//!
//! A workspace member of its own (`bench/`, with its own dependencies): it
//! measures chatroom only through the public protocol (HTTP and WebSocket,
//! with the library's `protocol` types). Fixtures (the history scenario's
//! big room) are built through the library's store API, never by writing
//! a data file here.
//!
//! Each scenario starts what it measures as a child process —
//! `target/release/chatroom` (the workspace has one `target/`, so it is next
//! to this binary; `--server-bin` picks another) on a fresh temporary data
//! directory, or the minimal relay (`chatroom-bench relay`) — so server
//! CPU time and memory come from `/proc/<pid>`, apart from the generator's.
//! `--url` points the fan-out, connections, persist and room scenarios at a
//! server already running (no CPU or memory figures then). `--compare-bin`
//! starts a second chatroom binary for fan-out, room and slow-readers
//! (before/after in one run); flags an older binary does not know are
//! passed only to binaries whose `--help` lists them. `--database-url`
//! gives every started server (or cluster) a fresh PostgreSQL database on
//! that server, dropped afterwards; `--nodes N --redis-url …` starts N
//! nodes over it that share live traffic through Redis (a prefix per run).
//!
//! Scenarios: `fanout` (N clients in M rooms at a rate, against the relays),
//! `connections` (idle sockets: memory each), `capacity` (100,000 idle
//! sockets over several nodes and generator processes, then one message
//! to each room of 100), `history` (a 1,000,000-message
//! room), `persist` (stored messages per second), `room` (20 guests chatting
//! at a human pace, the generator's sockets *without* TCP_NODELAY: latency of
//! each guest's own acknowledgement and the share ≥ 35 ms, where Nagle's
//! algorithm meets delayed ACKs), `slow-readers` (readers that stop reading
//! while ~50 MiB is posted, then resume: server peak RSS and catch-up time),
//! `search` (a 1,000,000-message corpus on each store: query p50/p99 and
//! index catch-up).
//!
//! Modules: `client` (HTTP/1.1 + WebSocket client), `process` (children and
//! /proc), `target` (chatroom — one node or several — or relay), `backends`
//! (a fresh database, a Redis prefix), one module per scenario
//! (`fanout` with `compare`, `connections`, `capacity`, `history`, `persist`, `room`, `search`,
//! `slow_readers`), `relay` (the baseline server), `stats` and `report`
//! (the table).

mod backends;
mod capacity;
mod client;
mod compare;
mod connections;
mod fanout;
mod history;
mod persist;
mod process;
mod relay;
mod report;
mod room;
mod search;
mod slow_readers;
mod stats;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::fanout::FanoutOpts;
use crate::room::RoomOpts;
use crate::report::Report;
use crate::stats::{dur_ms, ms, thousands};
use crate::target::{Kind, ServerOpts, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N clients in M rooms, senders at a rate; chatroom then the relay.
    Fanout,
    /// The fan-out scenario against the minimal relay only.
    Baseline,
    /// Many idle WebSockets: server memory per connection.
    Connections,
    /// 100,000 idle WebSockets (several nodes, several generator
    /// processes), then one message to each room: rate, memory, latency.
    Capacity,
    /// A 1,000,000-message room: start-up and page times.
    History,
    /// Many writers into one room: stored messages per second.
    Persist,
    /// 20 guests chatting at a human pace in one room: acknowledgement
    /// latency, share ≥ 35 ms (TCP_NODELAY); with --compare-bin, in turns.
    Room,
    /// Paused readers in a busy room, then resumed: server peak RSS and
    /// catch-up time.
    SlowReaders,
    /// Message search over a 1,000,000-message corpus, JSON-lines
    /// (tantivy) and, with --database-url, PostgreSQL: query p50/p99 and
    /// index catch-up (send → findable).
    Search,
    /// A quick run of every scenario, one table.
    All,
    /// (internal) run the minimal relay server.
    Relay,
    /// (internal) one generator process of `capacity`.
    CapacityWorker,
}

/// Load benchmark for chatroom. Prints one markdown table.
#[derive(Debug, Parser)]
#[command(name = "chatroom-bench")]
struct Args {
    scenario: Scenario,

    /// Use the chatroom server running at this address (http://host:port)
    /// instead of starting one. No server CPU/RSS figures then.
    #[arg(long)]
    url: Option<String>,
    /// The chatroom binary to start (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Fan-out, room, slow-readers: also measure this chatroom binary, in
    /// turns with the main one (before/after comparisons on a noisy machine).
    #[arg(long)]
    compare_bin: Option<PathBuf>,
    /// Pin the generator to CPU 0 and servers to CPU 1 (default: let the
    /// kernel share both cores).
    #[arg(long)]
    pin: bool,

    /// Fan-out: clients (spread evenly over the rooms).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Fan-out: rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Fan-out: delivered messages per second to run at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "20000,40000")]
    rate: Vec<f64>,
    /// Fan-out: seconds per fixed-rate phase.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Runs of each fan-out rate (in turns; the median p99 is kept), of
    /// persist (the median rate is kept) and of room (in turns; medians).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Fan-out: raise the rate until p99 > 50 ms or a message is lost.
    #[arg(long)]
    find_max: bool,
    /// --find-max: first rate (delivered/s).
    #[arg(long, default_value_t = 40_000.0)]
    start_rate: f64,
    /// --find-max: rate multiplier per step.
    #[arg(long, default_value_t = 1.25)]
    factor: f64,
    /// --find-max: seconds per step.
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    /// --find-max: never ask for more than this (delivered/s).
    #[arg(long, default_value_t = 600_000.0)]
    max_rate: f64,
    /// Fan-out: skip the relays.
    #[arg(long)]
    no_baseline: bool,
    /// Fan-out: also run the tuned relay (small read buffers, like chatroom).
    #[arg(long)]
    tuned_relay: bool,
    /// Message text length in bytes (fan-out, persist, room).
    #[arg(long, default_value_t = 200)]
    text_bytes: usize,
    /// Fan-out and capacity: seconds to wait for late deliveries after the
    /// last send (capacity: after the last new one).
    #[arg(long, default_value_t = 2.0)]
    drain_secs: f64,

    /// Connections and capacity: idle sockets to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Capacity: members per room (rooms = connections / room size).
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Capacity: generator processes (default: as few as stay under the
    /// open-file limit, ~19,000 sockets each).
    #[arg(long)]
    workers: Option<usize>,
    /// Capacity: the rooms' messages are scheduled evenly over this many
    /// seconds (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    spread_secs: f64,
    /// Capacity worker (internal): the nodes' addresses.
    #[arg(long, value_delimiter = ',', hide = true)]
    worker_nodes: Vec<SocketAddr>,
    /// Capacity worker (internal): its first client.
    #[arg(long, default_value_t = 0, hide = true)]
    worker_first: usize,
    /// Capacity worker (internal): its clients.
    #[arg(long, default_value_t = 0, hide = true)]
    worker_count: usize,
    /// Capacity worker (internal): the run's tag (unique usernames).
    #[arg(long, default_value = "", hide = true)]
    worker_tag: String,

    /// History: messages in the big room.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// History: requests timed per kind of page; search: per query.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Search: messages sent, then searched for until found (catch-up).
    #[arg(long, default_value_t = 100)]
    catch_ups: usize,

    /// Persist and slow-readers: concurrent writers (HTTP).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Persist: seconds.
    #[arg(long, default_value_t = 5.0)]
    persist_secs: f64,

    /// Room: guests in the room.
    #[arg(long, default_value_t = 20)]
    guests: usize,
    /// Room: seconds each run chats for.
    #[arg(long, default_value_t = 20.0)]
    room_secs: f64,
    /// Room: mean seconds between two messages of one guest (each gap is
    /// drawn evenly from half to one and a half of it).
    #[arg(long, default_value_t = 1.0)]
    interval_secs: f64,
    /// Room: set TCP_NODELAY on the generator's sockets too (default: off,
    /// like an ordinary client).
    #[arg(long)]
    client_nodelay: bool,
    /// Room: turn TCP_QUICKACK off on the generator's sockets after every
    /// read, so their kernel delays ACKs (a client that Linux's quick-ACK
    /// heuristics do not help).
    #[arg(long)]
    client_delayed_ack: bool,

    /// Slow-readers: sockets that stop reading, then resume.
    #[arg(long, default_value_t = 5)]
    readers: usize,
    /// Slow-readers: MiB of message text written while they are paused.
    #[arg(long, default_value_t = 50.0)]
    megabytes: f64,
    /// Slow-readers: text bytes per message.
    #[arg(long, default_value_t = 1024)]
    slow_text_bytes: usize,

    /// Relay (internal): read buffer per socket in bytes (default:
    /// tungstenite's 128 KiB).
    #[arg(long)]
    relay_read_buffer: Option<usize>,

    /// Keep chatroom's data in PostgreSQL: a fresh database per server
    /// (or cluster) on this server, e.g. postgres://postgres@127.0.0.1/postgres,
    /// dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// Nodes share live traffic through this Redis (a prefix per run).
    #[arg(long)]
    redis_url: Option<String>,
    /// Start chatroom with `--fsync always|batch|never` (default: the
    /// server's own, batch). With PostgreSQL, never = `synchronous_commit
    /// off`: no commit (a guest's session, a message) waits for the disk.
    #[arg(long)]
    server_fsync: Option<String>,
    /// chatroom processes per server (fan-out: client i joins node
    /// ⌊i / rooms⌋ mod nodes, so a room's members sit on different nodes).
    /// More than one needs --database-url and --redis-url.
    #[arg(long, default_value_t = 1)]
    nodes: usize,

    /// Relay: address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.scenario == Scenario::Relay {
        return match relay::run(args.addr, args.relay_read_buffer) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if args.scenario == Scenario::CapacityWorker {
        return match run_capacity_worker(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let server = match server_opts(&args) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if args.pin
        && let Err(e) = process::pin_self("0")
    {
        return fail(&e);
    }
    // The generator: one thread, so it can never take more than one core.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let mut report = Report::default();
    let outcome = local.block_on(&runtime, run(&args, &server, &mut report));
    println!("\n{}", report.markdown());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// One generator process of `capacity`, on one thread like the others.
fn run_capacity_worker(args: &Args) -> Result<(), String> {
    if args.worker_nodes.is_empty() {
        return Err("capacity-worker is started by `capacity`, with --worker-nodes".into());
    }
    let opts = capacity::WorkerOpts {
        nodes: args.worker_nodes.clone(),
        first: args.worker_first,
        count: args.worker_count,
        connections: args.connections,
        room_size: args.room_size,
        text_bytes: args.text_bytes,
        drain: Duration::from_secs_f64(args.drain_secs),
        tag: args.worker_tag.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    tokio::task::LocalSet::new().block_on(&runtime, capacity::worker(opts))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("chatroom-bench: {message}");
    ExitCode::FAILURE
}

fn server_opts(args: &Args) -> Result<ServerOpts, String> {
    if args.nodes > 1 && (args.database_url.is_none() || args.redis_url.is_none()) {
        return Err("--nodes above 1 needs --database-url and --redis-url".into());
    }
    let url = args
        .url
        .as_deref()
        .map(|u| {
            let hostport = u.trim_start_matches("http://").trim_end_matches('/');
            hostport.parse::<SocketAddr>().map_err(|_| format!("--url {u}: expected http://IP:PORT"))
        })
        .transpose()?;
    Ok(ServerOpts {
        url,
        server_bin: args.server_bin.clone().unwrap_or_else(|| process::sibling_binary("chatroom")),
        compare_bin: args.compare_bin.clone(),
        server_cpus: args.pin.then(|| "1".to_string()),
        flags_if_supported: args.server_fsync.iter().map(|f| ("--fsync".to_string(), f.clone())).collect(),
        database_server: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        nodes: args.nodes,
    })
}

/// A tag that keeps usernames unique across runs against one server.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("b{:x}", nanos % 0xfffff)
}

async fn run(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    print_machine();
    match args.scenario {
        Scenario::Fanout => fanout_scenario(args, server, report, &fanout_kinds(args)).await,
        Scenario::Baseline => {
            let kinds = if args.tuned_relay { vec![Kind::Relay, Kind::TunedRelay] } else { vec![Kind::Relay] };
            fanout_scenario(args, server, report, &kinds).await
        }
        Scenario::Connections => connections_scenario(args, server, report).await,
        Scenario::Capacity => capacity_scenario(args, server, report).await,
        Scenario::History => history_scenario(args, server, report).await,
        Scenario::Persist => persist_scenario(args, server, report).await,
        Scenario::Room => room_scenario(args, server, report).await,
        Scenario::SlowReaders => slow_readers_scenario(args, server, report).await,
        Scenario::Search => search_scenario(args, server, report).await,
        Scenario::All => {
            let quick = Args { find_max: true, tuned_relay: true, ..clone_args(args) };
            fanout_scenario(&quick, server, report, &fanout_kinds(&quick)).await?;
            connections_scenario(args, server, report).await?;
            history_scenario(args, server, report).await?;
            persist_scenario(args, server, report).await?;
            room_scenario(args, server, report).await?;
            slow_readers_scenario(args, server, report).await
        }
        Scenario::Relay | Scenario::CapacityWorker => unreachable!("handled in main"),
    }
}

fn fanout_kinds(args: &Args) -> Vec<Kind> {
    let mut kinds = vec![Kind::Chatroom];
    if args.compare_bin.is_some() {
        kinds.push(Kind::Compared);
    }
    if !args.no_baseline && args.url.is_none() {
        kinds.push(Kind::Relay);
        if args.tuned_relay {
            kinds.push(Kind::TunedRelay);
        }
    }
    kinds
}

fn clone_args(a: &Args) -> Args {
    Args { worker_nodes: a.worker_nodes.clone(), worker_tag: a.worker_tag.clone(), server_fsync: a.server_fsync.clone(), rate: a.rate.clone(), url: a.url.clone(), server_bin: a.server_bin.clone(), compare_bin: a.compare_bin.clone(), database_url: a.database_url.clone(), redis_url: a.redis_url.clone(), relay_read_buffer: a.relay_read_buffer, ..*a }
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("machine: {cores} CPUs, {cpu}; load average {}", load_average());
}

/// The 1-minute load average: other work on the box skews every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)).unwrap_or_default()
}

async fn fanout_scenario(args: &Args, server: &ServerOpts, report: &mut Report, kinds: &[Kind]) -> Result<(), String> {
    let opts = FanoutOpts {
        clients: args.clients,
        rooms: args.rooms,
        text_bytes: args.text_bytes,
        drain: Duration::from_secs_f64(args.drain_secs),
        tag: run_tag(),
    };
    let find_max = args.find_max.then_some(compare::FindMax {
        start: args.start_rate,
        factor: args.factor,
        limit: args.max_rate,
        step_secs: args.step_secs,
    });
    let plan = compare::Plan { rates: args.rate.clone(), secs: args.secs, repeat: args.repeat, find_max };
    let outcomes = compare::run(server, kinds, &opts, &plan).await?;
    compare::report(report, &outcomes);
    Ok(())
}

async fn connections_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let target = Target::chatroom(server)?;
    eprintln!("connections: opening {} idle sockets to {}", args.connections, target.addr);
    let result = connections::run(&target, args.connections, &run_tag()).await?;
    let scenario = format!("connections {}", thousands(result.opened as f64));
    report.info(&scenario, "time to open (log-in + upgrade)", format!("{:.2} s", result.open_time.as_secs_f64()));
    report.info(&scenario, "opened per second", thousands(result.opened as f64 / result.open_time.as_secs_f64()));
    if let Some(per) = result.kib_per_connection() {
        let after = result.rss_after_kib.unwrap_or(0) as f64 / 1024.0;
        report.check(&scenario, "server RSS per connection", format!("{per:.1} KiB (total {after:.0} MiB)"), "≤ 16 KiB", per <= 16.0);
    }
    Ok(())
}

/// Many idle sockets over `--nodes` nodes (each may hold as many as its
/// open-file limit allows) from several generator processes, then one
/// message to each room.
async fn capacity_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let limit = process::open_file_limit().unwrap_or(1024);
    let node_max = limit.saturating_sub(capacity::NODE_SPARE_FDS);
    let mut server = server.clone();
    server.flags_if_supported.push(("--max-connections".into(), node_max.to_string()));
    let target = Target::chatroom(&server)?;
    let opts = capacity::CapacityOpts {
        connections: args.connections,
        room_size: args.room_size,
        workers: args.workers.unwrap_or_else(|| capacity::workers_needed(args.connections, limit)).max(1),
        spread: Duration::from_secs_f64(args.spread_secs),
        drain: Duration::from_secs_f64(args.drain_secs),
        text_bytes: args.text_bytes,
        tag: run_tag(),
    };
    eprintln!("capacity: open-file limit {limit} per process; nodes accept up to {node_max} connections each");
    let r = capacity::run(&target, &opts).await?;
    let scenario = format!("capacity {} sockets, {} nodes", thousands(opts.connections as f64), r.nodes);
    let asked = thousands(opts.connections as f64);
    let value = format!("{} of {asked} ({} failed)", thousands(r.opened as f64), thousands(r.open_errors as f64));
    report.check(&scenario, "sockets open", value, &format!("= {asked}"), r.opened == opts.connections);
    let rate = format!("{} ({:.2} s, {} generator processes)", thousands(r.opened_per_sec()), r.open_time.as_secs_f64(), r.workers);
    report.check(&scenario, "opened per second (log-in + upgrade)", rate, "≥ 5,000", r.opened_per_sec() >= 5_000.0);
    let halves = format!("{} / {}", dur_ms(r.login_mean), dur_ms(r.upgrade_mean));
    report.info(&scenario, "mean log-in / upgrade per socket", halves);
    report.info(&scenario, "CPU while opening", r.open_cpu.text());
    if target.process.is_some() {
        let per = r.kib_per_socket(r.rss_open_kib);
        let value = format!("{per:.2} KiB (all nodes {:.0} MiB)", r.rss_open_kib as f64 / 1024.0);
        report.check(&scenario, "server RSS per idle socket", value, "≤ 8 KiB", per <= 8.0);
        let joined = format!("{:.2} KiB", r.kib_per_socket(r.rss_joined_kib));
        report.info(&scenario, "server RSS per socket, rooms joined", joined);
        let fds = format!("{} / {} of {limit}", thousands(r.node_fds_max as f64), thousands(r.worker_fds_max as f64));
        report.info(&scenario, "most open files in one node / one generator", fds);
    }
    report.info(&scenario, "generator RSS (all workers)", format!("{:.0} MiB", r.generator_rss_kib as f64 / 1024.0));
    let join = format!("{} in {:.2} s ({} failed)", thousands(r.joined as f64), r.join_time.as_secs_f64(), r.join_errors);
    report.info(&scenario, &format!("joined {} rooms of {}", thousands(r.rooms as f64), opts.room_size), join);
    report.info(&scenario, "CPU while joining", r.join_cpu.text());
    let spread = if opts.spread.is_zero() { "at once".to_string() } else { format!("over {:.1} s", opts.spread.as_secs_f64()) };
    let metric = format!("one message per room ({spread}): p50 / p99 / p99.9 / max");
    report.info(&scenario, &metric, r.latency.summary());
    let value = format!("{} / {} / {}", thousands(r.delivered as f64), r.lost(), r.dups);
    report.check(&scenario, "delivered / lost / duplicated", value, "lost 0, dup 0", r.lost() == 0 && r.dups == 0 && r.joined > 0);
    report.info(&scenario, "CPU while delivering", r.delivery_cpu.text());
    if let Some(e) = &r.first_error {
        report.note(format!("{scenario}: first error: {e}"));
    }
    if r.errors > 0 {
        report.note(format!("{scenario}: {} error frames while delivering", r.errors));
    }
    Ok(())
}

async fn history_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let dir = process::TempDir::new("history").map_err(|e| e.to_string())?;
    eprintln!("history: storing {} messages in {} through the store API", thousands(args.messages as f64), dir.0.display());
    let r = history::run(server, &dir.0, args.messages, args.samples, &run_tag()).await?;
    let scenario = format!("history {} msgs ({} MiB)", thousands(r.messages as f64), r.data_bytes >> 20);
    eprintln!("  data stored in {}", dur_ms(r.write_time));
    let fixture = format!("fixture built (JsonlStore, batches of {})", thousands(history::BATCH as f64));
    report.info(&scenario, &fixture, dur_ms(r.write_time));
    report.check(&scenario, "start-up (spawn → listening)", dur_ms(r.startup), "≤ 1 s", r.startup <= Duration::from_secs(1));
    report.info(&scenario, "first latest 50 (opens the room)", dur_ms(r.first_latest));
    let page = |p: &stats::Percentiles| format!("p50 {} / p99 {} / max {}", ms(p.p50), ms(p.p99), ms(p.max));
    report.check(&scenario, "latest 50", page(&r.latest), "≤ 5 ms", r.latest.max <= 5_000);
    report.check(&scenario, "middle page of 50", page(&r.middle), "≤ 10 ms", r.middle.max <= 10_000);
    report.check(&scenario, "random pages of 50", page(&r.random), "≤ 10 ms", r.random.max <= 10_000);
    Ok(())
}

async fn search_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let tag = run_tag();
    let mut results = Vec::new();
    let dir = process::TempDir::new("search").map_err(|e| e.to_string())?;
    eprintln!("search: {} messages in {} rooms into {} (JSON-lines, tantivy)", thousands(args.messages as f64), search::ROOMS, dir.0.display());
    results.push(search::run_jsonl(server, &dir.0, args.messages, args.samples, args.catch_ups, &tag).await?);
    drop(dir);
    if let Some(url) = &server.database_server {
        let dir = process::TempDir::new("search-pg").map_err(|e| e.to_string())?;
        eprintln!("search: {} messages into a fresh database (PostgreSQL)", thousands(args.messages as f64));
        results.push(search::run_postgres(server, &dir.0, url, args.messages, args.samples, args.catch_ups, &tag).await?);
    }
    for r in &results {
        let scenario = format!("search {} msgs, {}", thousands(args.messages as f64), r.store);
        let pct = |p: &stats::Percentiles| format!("p50 {} / p99 {} / max {}", ms(p.p50), ms(p.p99), ms(p.max));
        report.info(&scenario, "corpus stored (and indexed)", dur_ms(r.build));
        report.info(&scenario, "server start-up (spawn → listening)", dur_ms(r.startup));
        report.check(&scenario, "query mix (HTTP round trip)", pct(&r.all), "p99 ≤ 50 ms", r.all.p99 <= 50_000);
        report.info(&scenario, &format!("slowest kind: {}", r.worst.0), pct(&r.worst.1));
        report.check(&scenario, "catch-up (send answered → found)", pct(&r.catch_up), "p99 ≤ 1 s", r.catch_up.p99 <= 1_000_000);
        for (kind, p, found) in &r.kinds {
            eprintln!("  {:<22} {:<28} p50 {:>9} p99 {:>9} ({found} results)", r.store, kind, ms(p.p50), ms(p.p99));
        }
    }
    Ok(())
}

async fn persist_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let mut runs = Vec::new();
    for _ in 0..args.repeat.max(1) {
        // A fresh server (and data directory) per run.
        let target = Target::chatroom(server)?;
        eprintln!("persist: {} writers into one room for {} s", args.writers, args.persist_secs);
        let r = persist::run(&target, args.writers, args.persist_secs, args.text_bytes, &run_tag()).await?;
        eprintln!("  {} stored/s", thousands(r.per_sec()));
        runs.push(r);
    }
    runs.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
    let all: Vec<String> = runs.iter().map(|r| thousands(r.per_sec())).collect();
    let r = runs.swap_remove(runs.len() / 2);
    // PostgreSQL: each answer waits for a COMMIT (Centrifugo's PostgreSQL
    // broker reports ~17,000 publishes/s); JSON-lines: for the write.
    let (store, floor) = if server.database_server.is_some() { ("PostgreSQL", 20_000.0) } else { ("JSON-lines", 50_000.0) };
    let scenario = format!("persist {} writers (HTTP, {store})", r.writers);
    let value = if all.len() > 1 { format!("{} (median of {})", thousands(r.per_sec()), all.join(", ")) } else { thousands(r.per_sec()) };
    report.check(&scenario, "stored msg/s", value, &format!("≥ {}", thousands(floor)), r.per_sec() >= floor);
    report.info(&scenario, "ack latency p50 / p99 / p99.9 / max", r.latency.summary());
    if let Some(last) = r.last_id {
        let target = format!("= acknowledged ({})", thousands(r.stored as f64));
        report.check(&scenario, "messages in the room (last id, over HTTP)", thousands(last as f64), &target, last == r.stored);
    }
    if let Some(cpu) = r.server_cpu {
        report.info(&scenario, "server CPU per stored msg", format!("{:.2} µs", stats::cpu_per(cpu, r.stored)));
    }
    report.info(&scenario, "generator CPU", format!("{:.0}% of its core", r.gen_cpu * 100.0));
    if r.gen_cpu > 0.9 {
        report.note(format!("{scenario}: the generator was the bottleneck ({:.0}% of its core)", r.gen_cpu * 100.0));
    }
    if let Some(server_url) = &server.database_server {
        persist_inside_scenario(args, server_url, report).await?;
    }
    Ok(())
}

/// The same load through the library's hub into a fresh PostgreSQL
/// database, in this process: what one node's persist path sustains
/// without the HTTP edge.
async fn persist_inside_scenario(args: &Args, server_url: &str, report: &mut Report) -> Result<(), String> {
    let database = backends::FreshDatabase::create(server_url)?;
    let store = chatroom::store::postgres::PgStore::open(&database.url, chatroom::store::Fsync::Batch).await.map_err(|e| e.to_string())?;
    eprintln!("persist inside: {} writers through the hub into PostgreSQL for {} s", args.writers, args.persist_secs);
    let r = persist::run_inside(std::sync::Arc::new(store), args.writers, args.persist_secs, args.text_bytes).await?;
    let scenario = format!("persist {} writers (hub → PostgreSQL, no HTTP)", r.writers);
    report.check(&scenario, "stored msg/s", thousands(r.per_sec()), "≥ 20,000", r.per_sec() >= 20_000.0);
    report.info(&scenario, "ack latency p50 / p99 / p99.9 / max", r.latency.summary());
    let target = format!("= acknowledged ({})", thousands(r.stored as f64));
    report.check(&scenario, "room's last seq", thousands(r.last_seq as f64), &target, r.last_seq == r.stored);
    Ok(())
}

/// The room scenario: a fresh server per run; with `--compare-bin` the two
/// binaries in turns, `--repeat` times each.
async fn room_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let mut kinds = vec![Kind::Chatroom];
    if args.compare_bin.is_some() && args.url.is_none() {
        kinds.push(Kind::Compared);
    }
    let opts = RoomOpts {
        guests: args.guests,
        secs: args.room_secs,
        interval: args.interval_secs,
        text_bytes: args.text_bytes,
        client_nodelay: args.client_nodelay,
        delayed_ack: args.client_delayed_ack,
        tag: run_tag(),
    };
    let mut runs: Vec<Vec<room::RoomResult>> = kinds.iter().map(|_| Vec::new()).collect();
    for r in 0..args.repeat.max(1) {
        for (&kind, runs) in kinds.iter().zip(&mut runs) {
            let target = Target::start(server, kind)?;
            let bin = match kind {
                Kind::Compared => server.compare_bin.as_deref(),
                _ => target.process.as_ref().map(|_| server.server_bin.as_path()),
            };
            eprintln!(
                "room: {} guests, one message every ~{} s for {} s, client TCP_NODELAY {}, on {} ({}) at {}",
                opts.guests,
                opts.interval,
                opts.secs,
                if opts.client_nodelay { "on" } else { "off" },
                target.label(),
                bin.map_or("--url".into(), |b| b.display().to_string()),
                target.addr
            );
            let result = room::run(&target, &opts, r as u32 + 1).await?;
            eprintln!("  {}", result.one_line(&format!("{} run {}", target.label(), r + 1)));
            runs.push(result);
        }
    }
    let pct = |v: f64| format!("{v:.1}%");
    for (kind, runs) in kinds.iter().zip(&runs) {
        let scenario = format!("room {} guests, {}", opts.guests, kind.label());
        let of = |f: &dyn Fn(&room::RoomResult) -> u32| runs.iter().map(f).collect::<Vec<u32>>();
        let acks: u64 = runs.iter().map(|r| r.ack.count).sum();
        let sent: u64 = runs.iter().map(|r| r.sent).sum();
        report.info(&scenario, "acknowledgements (own echo) / sends", format!("{acks} / {sent}"));
        report.info(&scenario, "ack p50", room::median_text(&of(&|r| r.ack.p.p50), ms));
        report.info(&scenario, "ack p99", room::median_text(&of(&|r| r.ack.p.p99), ms));
        report.info(&scenario, "ack max", room::median_text(&of(&|r| r.ack.p.max), ms));
        let slow: Vec<f64> = runs.iter().map(|r| r.ack.slow_pct()).collect();
        let slow_acks: u64 = runs.iter().map(|r| r.ack.slow).sum();
        let value = format!("{} ({slow_acks} of {acks})", room::median_text(&slow, pct));
        if *kind == Kind::Chatroom {
            report.check(&scenario, "acks ≥ 35 ms", value, "none", slow_acks == 0);
        } else {
            report.info(&scenario, "acks ≥ 35 ms", value);
        }
        report.info(&scenario, "delivery to others p50", room::median_text(&of(&|r| r.delivery.p.p50), ms));
        report.info(&scenario, "delivery to others p99", room::median_text(&of(&|r| r.delivery.p.p99), ms));
        report.info(&scenario, "delivery to others max", room::median_text(&of(&|r| r.delivery.p.max), ms));
        let slow: Vec<f64> = runs.iter().map(|r| r.delivery.slow_pct()).collect();
        report.info(&scenario, "deliveries ≥ 35 ms", room::median_text(&slow, pct));
        let (lost, dups) = (runs.iter().map(|r| r.lost).sum::<u64>(), runs.iter().map(|r| r.dups).sum::<u64>());
        report.check(&scenario, "lost / duplicated", format!("{lost} / {dups}"), "0 / 0", lost == 0 && dups == 0);
        if let Some(e) = runs.iter().find_map(|r| r.first_error.clone()) {
            report.note(format!("{scenario}: error frames, first: {e}"));
        }
    }
    let nodelay = if opts.client_nodelay { "on" } else { "off" };
    report.note(format!("room: the generator's sockets had TCP_NODELAY {nodelay}"));
    Ok(())
}

/// Slow readers on the main binary, then on `--compare-bin` if given.
async fn slow_readers_scenario(args: &Args, server: &ServerOpts, report: &mut Report) -> Result<(), String> {
    let mut kinds = vec![Kind::Chatroom];
    if args.compare_bin.is_some() && args.url.is_none() {
        kinds.push(Kind::Compared);
    }
    // Paused readers must stay connected: binaries that have these flags
    // get them, older ones (which never close a slow reader) do not.
    let mut server = server.clone();
    server.flags_if_supported.push(("--write-timeout-secs".into(), "600".into()));
    server.flags_if_supported.push(("--ping-secs".into(), "0".into()));
    let opts = slow_readers::SlowOpts {
        readers: args.readers,
        writers: args.writers,
        megabytes: args.megabytes,
        text_bytes: args.slow_text_bytes,
        tag: run_tag(),
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for kind in kinds {
        let bin = if kind == Kind::Compared { server.compare_bin.clone() } else { Some(server.server_bin.clone()) };
        let target = Target::start(&server, kind)?;
        eprintln!(
            "slow-readers: {} readers, {} MiB of {}-byte messages, {} writers, on {} ({}) at {}",
            opts.readers,
            opts.megabytes,
            opts.text_bytes,
            opts.writers,
            target.label(),
            bin.filter(|_| target.process.is_some()).map_or("--url".into(), |b| b.display().to_string()),
            target.addr
        );
        let r = slow_readers::run(&target, &opts).await?;
        let scenario = format!("slow-readers {} × {} MiB, {}", opts.readers, opts.megabytes, kind.label());
        let secs = r.write_time.as_secs_f64();
        report.info(&scenario, "messages written while paused", format!("{} of {} B in {secs:.2} s", thousands(r.messages as f64), opts.text_bytes));
        let memory = |m: Option<slow_readers::Memory>| m.map_or("n/a".into(), |m| format!("{} (RSS now {})", mib(m.hwm_kib), mib(m.rss_kib)));
        report.info(&scenario, "server peak RSS (VmHWM), readers joined", memory(r.before));
        report.info(&scenario, "server peak RSS (VmHWM), after the writes", memory(r.after_writes));
        report.info(&scenario, "server peak RSS (VmHWM), after catch-up", memory(r.after_catch_up));
        let catch_up = r.catch_up().map_or("not complete".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        report.info(&scenario, "catch-up (resume → last reader has all)", catch_up.clone());
        if let Some(cpu) = r.catch_up_cpu {
            report.info(&scenario, "server CPU during catch-up", format!("{:.2} s", cpu.as_secs_f64()));
        }
        let (missing, dups, ooo) = (r.missing(), r.dups(), r.out_of_order());
        report.check(&scenario, "missing / duplicated / out of order", format!("{missing} / {dups} / {ooo}"), "0 / 0 / 0", missing + dups + ooo == 0);
        report.info(&scenario, "readers closed by the server (rejoined)", r.closed().to_string());
        for e in r.readers.iter().filter_map(|x| x.error.as_ref()) {
            report.note(format!("{scenario}: {e}"));
        }
        let warnings = target.warnings();
        if warnings > 0 {
            report.note(format!("{scenario}: the server logged {warnings} warnings (see stderr)"));
        }
        eprintln!("  catch-up {catch_up}; peak RSS {}", r.after_catch_up.map_or("n/a".into(), |m| mib(m.hwm_kib)));
    }
    Ok(())
}
