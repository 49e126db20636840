//! Soak: mixed traffic with faults against three real `chatroom` nodes on
//! PostgreSQL + Redis, for `CHATROOM_SOAK_SECS` (default 20 in the test
//! run; 600 for the real figure):
//!
//! - writers on every node post at a steady pace and now and then edit or
//!   delete one of their own posts ([`common::outbox`]);
//! - a reader on every node, and a slow reader that stops reading for a few
//!   seconds at a time (the server's side of its socket backs up);
//! - reconnect storms: every few seconds a group of readers drop their
//!   sockets at once and resume with `after`;
//! - node kills: every few seconds node 1 or 2 is killed with SIGKILL and
//!   started again; its clients resume on another node. Node 0 stays up,
//!   so its memory can be followed over the whole run.
//!
//! Each node's RSS is sampled every second. Printed (straight to stderr,
//! also when it passes): traffic, error rate, send → delivery p50 / p99 /
//! max at the readers, and RSS over time. Checked: every acknowledged post
//! stored once and as last acknowledged, every reader saw every event once
//! and in order, and node 0's RSS did not keep growing (the median of the
//! run's last third within 20 % + 4 MiB of the middle third's).
//!
//! Environment:
//! - `CHATROOM_SOAK_SECS` (default 20): how long the traffic runs.
//! - `CHATROOM_SOAK_RATE` (default 100): new items per second, all writers.
//! - `CHATROOM_FAULT_SEED`: replays the fault schedule (printed).
//! - `CHATROOM_TEST_BINARY`: the server to run (e.g.
//!   `target/release/chatroom`); the test profile's build by default.
//!
//! Without PostgreSQL or Redis it is skipped loudly; under `CI=true` it
//! fails instead.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backends::Backends;
use common::outbox::{
    Balancer, Client, Control, Controls, Mix, PROGRESS_TIMEOUT, Pauses, Tally, check_room, fault_seed, last_word, quantile,
};
use common::process::ServerProcess;
use common::print_figure;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOM: &str = "general";
const NODES: usize = 3;
const WRITERS_PER_NODE: usize = 2;
/// Readers that take part in reconnect storms, spread over the nodes.
const STORMERS: usize = 6;
const STORM_EVERY: Duration = Duration::from_secs(4);
/// A kill comes every 4–8 s (random).
const KILL_EVERY_MS: std::ops::Range<u64> = 4_000..8_000;
const RSS_EVERY: Duration = Duration::from_secs(1);
/// Node 0's RSS over the last third may exceed the middle third's by this
/// share plus [`RSS_SLACK_KIB`], no more.
const RSS_GROWTH_SHARE: f64 = 0.2;
const RSS_SLACK_KIB: u64 = 4 * 1024;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_under_mixed_traffic_and_faults_lose_nothing_and_do_not_grow() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let seconds = env_number("CHATROOM_SOAK_SECS", 20);
    let rate = env_number("CHATROOM_SOAK_RATE", 100).max(1);
    let seed = fault_seed("soak");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nodes = backends.start_nodes(NODES);
    let balancer = Balancer::new(nodes.iter().map(|n| n.addr).collect());
    let (writer_tally, reader_tally, slow_tally) = (Arc::new(Tally::default()), Arc::new(Tally::default()), Arc::new(Tally::default()));
    let (controls, control) = Controls::new();

    let mut readers = Vec::new();
    let spawn = |client: Client, control: &Control| tokio::spawn(client.run(control.clone()));
    for n in 0..NODES {
        let user = nodes[n].endpoint().guest(&format!("reader{n}")).await;
        readers.push(spawn(Client::new(user, ROOM, balancer.clone(), n, reader_tally.clone(), Mix::reader(), rng.random()), &control));
    }
    let slow = Mix { pauses: Some(Pauses { every: Duration::from_secs(5), length: Duration::from_secs(3) }), ..Mix::reader() };
    let user = nodes[1].endpoint().guest("slowreader").await;
    readers.push(spawn(Client::new(user, ROOM, balancer.clone(), 1, slow_tally.clone(), slow, rng.random()), &control));
    for s in 0..STORMERS {
        let user = nodes[s % NODES].endpoint().guest(&format!("stormer{s}")).await;
        let mix = Mix { storms: true, ..Mix::reader() };
        readers.push(spawn(Client::new(user, ROOM, balancer.clone(), s % NODES, reader_tally.clone(), mix, rng.random()), &control));
    }
    let writer_count = (NODES * WRITERS_PER_NODE) as u64;
    let pace = Duration::from_micros(1_000_000 * writer_count / rate);
    let mut writers = Vec::new();
    for n in 0..NODES {
        for w in 0..WRITERS_PER_NODE {
            let user = nodes[n].endpoint().guest(&format!("writer{n}x{w}")).await;
            let mix = Mix { pace: Some(pace), ..Mix::writer(4) };
            writers.push(spawn(Client::new(user, ROOM, balancer.clone(), n, writer_tally.clone(), mix, rng.random()), &control));
        }
    }

    let started = Instant::now();
    let faults = run_faults(&mut nodes, &balancer, &controls, &mut rng, Duration::from_secs(seconds)).await;
    let _ = controls.stop_sending.send(true);
    let writers = finish(writers).await;
    let auditor = nodes[0].endpoint().guest("auditor").await;
    let (events, messages) = last_word(&auditor, ROOM).await;
    let last_seq = events.len() as u64;
    let _ = controls.read_until.send(last_seq);
    let readers = finish(readers).await;
    let check = check_room(&writers, 1, &events, &messages);

    let acked = writer_tally.acks();
    let errors = writer_tally.error_count() + reader_tally.error_count() + slow_tally.error_count();
    let mut latencies = reader_tally.latencies.lock().unwrap().clone();
    let mut slow_latencies = slow_tally.latencies.lock().unwrap().clone();
    print_figure(&format!(
        "soak: {:?} of traffic at {rate} items/s over {NODES} nodes ({} writers, {} readers); {} kills, {} storms; \
         acknowledged {} posts, {} edits, {} deletes; {} resent; {errors} error frames (error rate {:.4} %); \
         duplicates {}; lost {}; send → delivery p50 {:?}, p99 {:?}, max {:?} over {} deliveries (slow reader p99 {:?})",
        started.elapsed(),
        writers.len(),
        readers.len(),
        faults.kills,
        faults.storms,
        writer_tally.acked_posts.load(Ordering::Relaxed),
        writer_tally.acked_edits.load(Ordering::Relaxed),
        writer_tally.acked_deletes.load(Ordering::Relaxed),
        writer_tally.resent.load(Ordering::Relaxed),
        100.0 * errors as f64 / acked.max(1) as f64,
        check.duplicates,
        check.lost.len(),
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.99),
        quantile(&mut latencies, 1.0),
        latencies.len(),
        quantile(&mut slow_latencies, 0.99),
    ));
    print_rss(&faults.rss);

    check.assert_clean();
    for reader in &readers {
        assert!(reader.gaps.is_empty(), "{} saw gaps (last seen, next): {:?}", reader.user.name, reader.gaps);
        assert_eq!(reader.seen, last_seq, "{} saw each of {last_seq} events once", reader.user.name);
    }
    let error_frames: Vec<_> = [&writer_tally, &reader_tally, &slow_tally].iter().flat_map(|t| t.errors.lock().unwrap().clone()).collect();
    assert!(error_frames.is_empty(), "error frames: {error_frames:?}");
    assert_rss_levels_off(&faults.rss);
}

/// What the fault schedule did, and the RSS samples taken meanwhile.
struct Faults {
    kills: usize,
    storms: u64,
    /// Per sample: seconds since the start, then each node's RSS in KiB
    /// (0 while a node is down).
    rss: Vec<(f64, Vec<u64>)>,
}

/// For `length`: samples RSS every second, starts a reconnect storm every
/// [`STORM_EVERY`], and kills node 1 or 2 every 4–8 s.
async fn run_faults(nodes: &mut [ServerProcess], balancer: &Balancer, controls: &Controls, rng: &mut StdRng, length: Duration) -> Faults {
    let start = Instant::now();
    let end = start + length;
    let mut faults = Faults { kills: 0, storms: 0, rss: Vec::new() };
    let (mut next_sample, mut next_storm) = (start, start + STORM_EVERY);
    let mut next_kill = start + Duration::from_millis(rng.random_range(KILL_EVERY_MS));
    loop {
        let now = Instant::now();
        if now >= end {
            return faults;
        }
        if now >= next_sample {
            faults.rss.push((start.elapsed().as_secs_f64(), nodes.iter().map(ServerProcess::rss_kib).collect()));
            next_sample = now + RSS_EVERY;
        }
        if now >= next_storm {
            faults.storms += 1;
            let _ = controls.storm.send(faults.storms);
            next_storm += STORM_EVERY;
        }
        if now >= next_kill {
            let victim = rng.random_range(1..nodes.len());
            balancer.down(victim);
            tokio::task::block_in_place(|| nodes[victim].restart());
            balancer.up(victim, nodes[victim].addr);
            faults.kills += 1;
            next_kill = Instant::now() + Duration::from_millis(rng.random_range(KILL_EVERY_MS));
        }
        // The fault schedule's clock, not a synchronisation.
        let next = next_sample.min(next_storm).min(next_kill).min(end);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Waits for every client task; panics if one does not finish in time.
async fn finish(tasks: Vec<tokio::task::JoinHandle<Client>>) -> Vec<Client> {
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(tokio::time::timeout(PROGRESS_TIMEOUT, task).await.expect("a client finishes").expect("a client task"));
    }
    clients
}

/// RSS over time, at most ~20 rows (every k-th sample).
fn print_rss(samples: &[(f64, Vec<u64>)]) {
    print_figure("soak: RSS over time (MiB; node 0 stays up, nodes 1–2 are killed and restarted):");
    let step = samples.len().div_ceil(20).max(1);
    let last = samples.last().filter(|_| (samples.len() - 1) % step != 0);
    for (at, rss) in samples.iter().step_by(step).chain(last) {
        let row: Vec<String> = rss.iter().map(|kib| format!("{:7.1}", *kib as f64 / 1024.0)).collect();
        print_figure(&format!("  {at:6.1} s {}", row.join(" ")));
    }
}

/// Node 0's RSS levels off: the median of the last third of the samples is
/// within [`RSS_GROWTH_SHARE`] + [`RSS_SLACK_KIB`] of the middle third's.
fn assert_rss_levels_off(samples: &[(f64, Vec<u64>)]) {
    let node0: Vec<u64> = samples.iter().map(|(_, rss)| rss[0]).collect();
    assert!(node0.len() >= 6, "too few RSS samples to judge growth: {node0:?}");
    let third = node0.len() / 3;
    let median = |part: &[u64]| {
        let mut part = part.to_vec();
        part.sort();
        part[part.len() / 2]
    };
    let (middle, last) = (median(&node0[third..2 * third]), median(&node0[2 * third..]));
    let bound = (middle as f64 * (1.0 + RSS_GROWTH_SHARE)) as u64 + RSS_SLACK_KIB;
    print_figure(&format!("soak: node 0 RSS median, middle third {} KiB, last third {last} KiB (bound {bound} KiB)", middle));
    assert!(last <= bound, "node 0's RSS kept growing: middle third {middle} KiB, last third {last} KiB (bound {bound}): {node0:?}");
}
