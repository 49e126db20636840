//! kill -9 at random moments: the real `chatroom` binary, under traffic from
//! several WebSocket clients (posts with `client_id`s, edits and deletes of
//! their own acknowledged posts), is killed with SIGKILL after a random
//! number of acknowledgements and started again on the same data (the same
//! directory, or the same database). The clients ([`common::outbox`])
//! reconnect, resume with `after` and resend everything unacknowledged,
//! posts with the same `client_id`. At the end the room, read back over
//! HTTP (its event log and its messages as they are now), must hold every
//! acknowledged post exactly once, with seqs 1, 2, 3…; every acknowledged
//! edit and delete kept (a deleted text nowhere in the log); no resend
//! stored twice; and every client must have seen the room's seqs without a
//! gap across its reconnects.
//!
//! Configurations: JSON-lines with `--fsync always`, `batch` and `never`,
//! PostgreSQL (one node), and three nodes on PostgreSQL + Redis whose nodes
//! are killed in turn while a reader on a node that stays up must see every
//! message once, in order. A kill -9 does not lose the page cache, so even
//! `never` must keep everything acknowledged.
//!
//! Each configuration prints (straight to stderr, also when it passes):
//! kills, acknowledged posts / edits / deletes, resends, duplicates, lost,
//! and the time from a restart to the first acknowledgement after it.
//!
//! Environment:
//! - `CHATROOM_FAULT_KILLS` (default 20): kills per configuration; the
//!   cluster gets a quarter of them (default 5).
//! - `CHATROOM_FAULT_SEED`: replays a run (every configuration prints its
//!   seed).
//!
//! Without PostgreSQL or Redis their configurations are skipped loudly;
//! under `CI=true` they fail instead.

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backends::Backends;
use common::outbox::{Balancer, Client, Controls, Mix, PROGRESS_TIMEOUT, Tally, check_room, fault_seed, last_word, quantile};
use common::pg::TestDatabase;
use common::process::ServerProcess;
use common::print_figure;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOM: &str = "general";
/// Acknowledgements between two kills: a random count in this range.
const ACKS_BETWEEN_KILLS: Range<u64> = 40..160;

fn kills() -> usize {
    std::env::var("CHATROOM_FAULT_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(20)
}

/// One node's flags: `--fsync`, and no pacing or pings.
fn single_node_args(fsync: &str) -> Vec<String> {
    ["--fsync", fsync, "--send-rate", "0", "--frame-rate", "0", "--ping-secs", "0"].map(String::from).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jsonl_fsync_always_keeps_everything_acknowledged_across_kills() {
    let Some(mut server) = ServerProcess::start(&refs(&single_node_args("always"))) else { return };
    survive_kills("JSON-lines --fsync always", std::slice::from_mut(&mut server), 0..1, 4, kills()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jsonl_fsync_batch_keeps_everything_acknowledged_across_kills() {
    let Some(mut server) = ServerProcess::start(&refs(&single_node_args("batch"))) else { return };
    survive_kills("JSON-lines --fsync batch", std::slice::from_mut(&mut server), 0..1, 4, kills()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jsonl_fsync_never_keeps_everything_acknowledged_across_kills() {
    let Some(mut server) = ServerProcess::start(&refs(&single_node_args("never"))) else { return };
    survive_kills("JSON-lines --fsync never", std::slice::from_mut(&mut server), 0..1, 4, kills()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_everything_acknowledged_across_kills() {
    let Some(database) = TestDatabase::create().await else { return };
    let mut args = single_node_args("batch");
    args.extend(["--database-url".to_string(), database.url().to_string()]);
    let Some(mut server) = ServerProcess::start(&refs(&args)) else { return };
    survive_kills("PostgreSQL", std::slice::from_mut(&mut server), 0..1, 4, kills()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_three_killed_again_and_again_loses_nothing() {
    let Some((backends, _prefix)) = Backends::shared().await else { return };
    let mut nodes = backends.start_nodes(3);
    // Node 0 hosts the reader and stays up; nodes 1 and 2 are killed.
    survive_kills("three nodes, PostgreSQL + Redis", &mut nodes, 1..3, 2, kills().div_ceil(4)).await;
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `writers_per_node` writers on each node (and, with several nodes, a
/// reader on node 0), kills a random node of `killable` `kills` times,
/// then checks the room and every client, printing the figures first.
async fn survive_kills(label: &str, nodes: &mut [ServerProcess], killable: Range<usize>, writers_per_node: usize, kills: usize) {
    let seed = fault_seed(label);
    let mut rng = StdRng::seed_from_u64(seed);
    let balancer = Balancer::new(nodes.iter().map(|n| n.addr).collect());
    let tally = Arc::new(Tally::default());
    let (controls, control) = Controls::new();
    let reader = if nodes.len() > 1 {
        let user = nodes[0].endpoint().guest("reader").await;
        let client = Client::new(user, ROOM, balancer.clone(), 0, tally.clone(), Mix::reader(), rng.random());
        Some(tokio::spawn(client.run(control.clone())))
    } else {
        None
    };
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..writers_per_node {
            let user = node.endpoint().guest(&format!("writer{n}x{w}")).await;
            let client = Client::new(user, ROOM, balancer.clone(), n, tally.clone(), Mix::writer(8), rng.random());
            writers.push(tokio::spawn(client.run(control.clone())));
        }
    }

    let mut downtimes = Vec::new();
    for _ in 0..kills {
        let acks = tally.acks() + rng.random_range(ACKS_BETWEEN_KILLS);
        tally.wait_for_acks(acks, PROGRESS_TIMEOUT).await;
        // The fault schedule, not a synchronisation: the kill lands at a
        // random point of the next few milliseconds of traffic.
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..3_000))).await;
        let victim = rng.random_range(killable.clone());
        balancer.down(victim);
        let killed = Instant::now();
        tokio::task::block_in_place(|| nodes[victim].restart());
        downtimes.push(killed.elapsed());
        balancer.up(victim, nodes[victim].addr);
        tally.restarted_now();
    }
    let _ = controls.stop_sending.send(true);
    let draining = Instant::now();
    let writers = finish(writers).await;
    let drained = draining.elapsed();

    let auditor = nodes[0].endpoint().guest("auditor").await;
    let (events, messages) = last_word(&auditor, ROOM).await;
    let last_seq = events.len() as u64;
    let check = check_room(&writers, 1, &events, &messages);
    let _ = controls.read_until.send(last_seq);
    let reader = match reader {
        Some(task) => finish(vec![task]).await.pop(),
        None => None,
    };
    print_figure(&format!("{label}: drained the outboxes in {drained:?}; read back and checked {last_seq} events in {:?}", draining.elapsed() - drained));

    report(label, kills, &tally, &check, &mut downtimes);
    let errors = tally.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "error frames: {errors:?}");
    for client in &writers {
        assert!(client.gaps.is_empty(), "{} saw gaps in the seqs (last seen, next): {:?}", client.user.name, client.gaps);
    }
    check.assert_clean();
    if let Some(reader) = reader {
        assert!(reader.gaps.is_empty(), "the reader saw gaps (last seen, next): {:?}", reader.gaps);
        assert_eq!((reader.seen, reader.stale), (last_seq, 0), "the reader saw each of {last_seq} events once, in order");
    }
}

/// Waits for every client task; panics if one does not finish in time.
async fn finish(tasks: Vec<tokio::task::JoinHandle<Client>>) -> Vec<Client> {
    let mut clients = Vec::new();
    for task in tasks {
        let client = tokio::time::timeout(PROGRESS_TIMEOUT, task).await.expect("a client finishes").expect("a client task");
        clients.push(client);
    }
    clients
}

fn report(label: &str, kills: usize, tally: &Tally, check: &common::outbox::RoomCheck, downtimes: &mut [Duration]) {
    let mut recoveries = tally.recoveries.lock().unwrap().clone();
    print_figure(&format!(
        "{label}: {kills} kills; acknowledged {} posts, {} edits, {} deletes; {} resent over {} reconnects; \
         {} posts stored of {} made; duplicates {}; lost {}; restart → first ack median {:?}, max {:?}; \
         kill → listening again median {:?}, max {:?}",
        tally.acked_posts.load(Ordering::Relaxed),
        tally.acked_edits.load(Ordering::Relaxed),
        tally.acked_deletes.load(Ordering::Relaxed),
        tally.resent.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed),
        check.stored,
        check.expected,
        check.duplicates,
        check.lost.len(),
        quantile(&mut recoveries, 0.5),
        quantile(&mut recoveries, 1.0),
        quantile(downtimes, 0.5),
        quantile(downtimes, 1.0),
    ));
}
