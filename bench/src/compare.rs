//! The fan-out scenario against several servers in one run: chatroom and
//! the baseline relays, all started up front and measured *in turns* (a
//! phase on chatroom, the same phase on each relay, the next rate...), so
//! that whatever else the machine is doing weighs on all of them alike and
//! their ratio holds on a noisy box.

use crate::fanout::{self, FanoutOpts, Fleet, MaxResult, PhaseResult};
use crate::report::Report;
use crate::stats::{dur_ms, ms, thousands};
use crate::target::{Kind, ServerOpts, Target};

/// What the seeds' Express + Socket.IO chat sustains in the fan-out scenario
/// on this machine (from the issue): chatroom must reach twice that.
const SOCKET_IO_MAX: f64 = 60_000.0;
/// The rate whose p99 has a target.
const LATENCY_TARGET_RATE: f64 = 20_000.0;
/// The p99 target at that rate, in microseconds.
const LATENCY_TARGET_US: u32 = 5_000;

/// What to run: fixed rates, then optionally a search for the maximum.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Delivered messages per second of each fixed phase.
    pub rates: Vec<f64>,
    pub secs: f64,
    /// Runs of each fixed rate; the one with the median p99 is reported.
    pub repeat: usize,
    pub find_max: Option<FindMax>,
}

#[derive(Debug, Clone, Copy)]
pub struct FindMax {
    pub start: f64,
    pub factor: f64,
    pub limit: f64,
    pub step_secs: f64,
}

/// Everything one server did.
pub struct Outcome {
    pub kind: Kind,
    pub fixed: Vec<PhaseResult>,
    pub max: Option<MaxResult>,
    pub warnings: u64,
}

struct Contender {
    target: Target,
    fleet: Fleet,
    outcome: Outcome,
}

pub async fn run(server: &ServerOpts, kinds: &[Kind], opts: &FanoutOpts, plan: &Plan) -> Result<Vec<Outcome>, String> {
    let t0 = std::time::Instant::now();
    let mut contenders = Vec::new();
    for &kind in kinds {
        let target = Target::start(server, kind)?;
        let pid = target.process.as_ref().map_or(String::new(), |p| format!(" (pid {})", p.pid));
        let nodes = match target.node_count() {
            1 => String::new(),
            n => format!(" and {} more nodes", n - 1),
        };
        eprintln!("fanout: {} at {}{pid}{nodes}, {} clients in {} rooms", target.label(), target.addr, opts.clients, opts.rooms);
        let fleet = Fleet::connect(&target, opts, t0).await?;
        eprintln!("  connected in {}", dur_ms(fleet.connect_time));
        let outcome = Outcome { kind, fixed: Vec::new(), max: None, warnings: 0 };
        contenders.push(Contender { target, fleet, outcome });
    }
    for &rate in &plan.rates {
        let mut runs: Vec<Vec<PhaseResult>> = contenders.iter().map(|_| Vec::new()).collect();
        for _ in 0..plan.repeat.max(1) {
            for (c, runs) in contenders.iter_mut().zip(&mut runs) {
                runs.push(phase(c, rate, plan.secs, "@").await?);
            }
        }
        for (c, runs) in contenders.iter_mut().zip(runs) {
            c.outcome.fixed.push(median_by_p99(runs));
        }
    }
    if let Some(search) = plan.find_max {
        find_max(&mut contenders, search).await?;
    }
    let mut outcomes = Vec::new();
    for mut c in contenders {
        c.outcome.warnings = c.target.warnings();
        c.fleet.close().await;
        outcomes.push(c.outcome);
    }
    Ok(outcomes)
}

/// The run whose p99 is the median (the later one of the two middle runs).
fn median_by_p99(mut runs: Vec<PhaseResult>) -> PhaseResult {
    runs.sort_by_key(|r| r.latency.p99);
    runs.swap_remove(runs.len() / 2)
}

async fn phase(c: &mut Contender, rate: f64, secs: f64, what: &str) -> Result<PhaseResult, String> {
    let result = c.fleet.run_phase(&c.target, rate, secs).await?;
    eprintln!("  {}", result.one_line(&format!("{} {what} {}", c.target.label(), thousands(rate))));
    fanout::settle().await;
    Ok(result)
}

/// Raises the rate by `factor` (all servers in turn) until each fails
/// twice in a row at one rate (p99 over 50 ms or anything lost): a single
/// failed step is run again, so one hiccup of a shared machine does not end
/// the search. Then tries each once halfway between its last good rate and
/// the failed one.
async fn find_max(contenders: &mut [Contender], search: FindMax) -> Result<(), String> {
    let mut searches: Vec<MaxResult> = contenders.iter().map(|_| MaxResult { best: None, failed: None }).collect();
    let mut rate = search.start;
    while rate <= search.limit && searches.iter().any(|s| s.failed.is_none()) {
        for (c, s) in contenders.iter_mut().zip(&mut searches) {
            if s.failed.is_some() {
                continue;
            }
            let mut result = phase(c, rate, search.step_secs, "find-max").await?;
            if !result.sustained() {
                result = phase(c, rate, search.step_secs, "find-max again").await?;
            }
            if result.sustained() { s.best = Some(result) } else { s.failed = Some(result) }
        }
        rate *= search.factor;
    }
    for (c, s) in contenders.iter_mut().zip(&mut searches) {
        let (Some(good), Some(bad)) = (&s.best, &s.failed) else { continue };
        let middle = (good.target_delivered + bad.target_delivered) / 2.0;
        let result = phase(c, middle, search.step_secs, "bisect").await?;
        if result.sustained() {
            s.best = Some(result);
        }
    }
    for (c, s) in contenders.iter_mut().zip(searches) {
        c.outcome.max = Some(s);
    }
    Ok(())
}

/// Adds the fan-out rows and the target checks to the report.
pub fn report(report: &mut Report, outcomes: &[Outcome]) {
    let find = |kind: Kind| outcomes.iter().find(|o| o.kind == kind);
    for o in outcomes {
        for phase in &o.fixed {
            let scenario = format!("fanout {} @ {}/s", o.kind.label(), thousands(phase.target_delivered));
            report_phase(report, &scenario, phase);
            if matches!(o.kind, Kind::Chatroom | Kind::Compared) {
                let same_rate = |kind| find(kind).and_then(|r| r.fixed.iter().find(|p| p.target_delivered == phase.target_delivered));
                report_cpu(report, &scenario, phase, same_rate(Kind::Relay), same_rate(Kind::TunedRelay));
                if o.kind == Kind::Chatroom && phase.target_delivered == LATENCY_TARGET_RATE {
                    let ok = phase.latency.p99 <= LATENCY_TARGET_US;
                    report.check(&scenario, "p99 send→deliver", ms(phase.latency.p99), "≤ 5 ms", ok);
                }
            } else {
                report_cpu(report, &scenario, phase, None, None);
            }
        }
        if o.warnings > 0 {
            report.note(format!("{} logged {} warnings during fan-out (see stderr)", o.kind.label(), o.warnings));
        }
    }
    report_max(report, outcomes);
}

fn report_phase(report: &mut Report, scenario: &str, phase: &PhaseResult) {
    report.info(scenario, "delivered msg/s", thousands(phase.delivered_per_sec()));
    report.info(scenario, "latency p50 / p99 / p99.9 / max", phase.latency.summary());
    let clean = phase.lost == 0 && phase.dups == 0;
    report.check(scenario, "lost / duplicated", format!("{} / {}", phase.lost, phase.dups), "0 / 0", clean);
    if let Some(rss) = phase.server_rss_kib {
        report.info(scenario, "server RSS", format!("{:.1} MiB", rss as f64 / 1024.0));
    }
    if phase.errors > 0 {
        report.note(format!("{scenario}: {} error frames, first: {}", phase.errors, phase.first_error.clone().unwrap_or_default()));
    }
    note_generator(report, scenario, phase);
}

fn note_generator(report: &mut Report, scenario: &str, phase: &PhaseResult) {
    if phase.generator_bound() {
        report.note(format!(
            "{scenario}: the generator was the bottleneck or fell behind its schedule ({:.0}% of its core, send lag p99 {}, 1 ms timer late by {} at p99)",
            phase.gen_cpu * 100.0,
            ms(phase.send_lag.p99),
            ms(phase.loop_lag.p99)
        ));
    }
}

/// Server CPU per delivered message; for chatroom, checked against the
/// naive relay at the same rate and compared with the tuned one.
fn report_cpu(report: &mut Report, scenario: &str, phase: &PhaseResult, relay: Option<&PhaseResult>, tuned: Option<&PhaseResult>) {
    let (Some(cpu), Some(text)) = (phase.cpu_us_per_delivered(), phase.cpu_text()) else { return };
    let metric = "server CPU per delivered msg";
    match relay.and_then(PhaseResult::cpu_us_per_delivered) {
        Some(base) => {
            let value = format!("{text}, {:.2}× relay", cpu / base);
            report.check(scenario, metric, value, &format!("≤ relay ({base:.2} µs)"), cpu <= base);
        }
        None => report.info(scenario, metric, text),
    }
    if let Some(base) = tuned.and_then(PhaseResult::cpu_us_per_delivered) {
        report.info(scenario, "CPU vs tuned relay", format!("{:.2}× ({base:.2} µs)", cpu / base));
    }
}

fn best_rate(max: &MaxResult) -> f64 {
    max.best.as_ref().map_or(0.0, PhaseResult::delivered_per_sec)
}

fn report_max(report: &mut Report, outcomes: &[Outcome]) {
    let max_of = |kind: Kind| outcomes.iter().find(|o| o.kind == kind).and_then(|o| o.max.as_ref()).map(best_rate);
    for o in outcomes {
        let Some(max) = &o.max else { continue };
        let scenario = format!("fanout find-max {}", o.kind.label());
        let value = match &max.best {
            Some(b) => format!("{} (p99 {}, {} senders/room)", thousands(b.delivered_per_sec()), ms(b.latency.p99), b.senders_per_room),
            None => "none held".into(),
        };
        if let Some(b) = &max.best {
            note_generator(report, &scenario, b);
            if let Some(text) = b.cpu_text() {
                report.info(&scenario, "server CPU per delivered msg at max", text);
            }
        }
        match &max.failed {
            Some(f) => report.info(&scenario, "first failing step", format!("{} asked: p99 {}, lost {}", thousands(f.target_delivered), ms(f.latency.p99), f.lost)),
            None => report.note(format!("{scenario}: never failed up to --max-rate; the true maximum is higher")),
        }
        let own = best_rate(max);
        if o.kind != Kind::Chatroom {
            report.info(&scenario, "max sustained delivered/s", value);
            if o.kind == Kind::Compared && let Some(relay) = max_of(Kind::Relay).filter(|r| *r > 0.0) {
                report.info(&scenario, "vs relay", format!("{:.2}×", own / relay));
            }
            continue;
        }
        match max_of(Kind::Relay).filter(|r| *r > 0.0) {
            Some(relay) => {
                let value = format!("{value}; {:.2}× relay", own / relay);
                report.check(&scenario, "max sustained delivered/s", value, &format!("≥ 0.8× relay ({})", thousands(relay)), own >= 0.8 * relay);
            }
            None => report.info(&scenario, "max sustained delivered/s", value),
        }
        if let Some(tuned) = max_of(Kind::TunedRelay).filter(|r| *r > 0.0) {
            report.info(&scenario, "vs tuned relay", format!("{:.2}× ({})", own / tuned, thousands(tuned)));
        }
        let socket_io = 2.0 * SOCKET_IO_MAX;
        report.check(&scenario, "vs Express + Socket.IO", thousands(own), "≥ 120,000 (2 × 60,000)", own >= socket_io);
    }
}
