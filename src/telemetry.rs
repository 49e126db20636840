//! Metrics: what the server counts, and their Prometheus text for
//! `GET /metrics` (the `metrics` facade, recorded by
//! `metrics-exporter-prometheus`).
//!
//! | name | kind | what |
//! |---|---|---|
//! | `chatroom_open_sockets` | gauge | WebSockets open now |
//! | `chatroom_events_stored_total` | counter | room events stored (posts, edits, deletes) |
//! | `chatroom_deliveries_total` | counter | room-event frames queued to sockets from the fan-out |
//! | `chatroom_store_append_seconds` | histogram | one batch append in a room's writer |
//! | `chatroom_fanout_lag_seconds` | histogram | publish → the socket write that carries it: one sample per write, for its oldest event (1 ms resolution) |
//! | `chatroom_sends_rejected_total{reason}` | counter | sends refused, by error code |
//! | `chatroom_http_responses_total{class}` | counter | HTTP responses by status class (`2xx`, …) |
//!
//! The `metrics` facade takes one recorder per process. It is installed
//! the first time anything is recorded or rendered, and every server in the
//! process shares it (tests run many): the figures are the process's. Other
//! modules may record with `metrics::counter!` and friends too; it shows
//! up here. The handles of the hot-path instruments are registered once and
//! kept, so a socket write of relayed events costs one atomic add and one
//! histogram sample: no registry lookup, no allocation of ours.

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const OPEN_SOCKETS: &str = "chatroom_open_sockets";
pub const EVENTS_STORED: &str = "chatroom_events_stored_total";
pub const DELIVERIES: &str = "chatroom_deliveries_total";
pub const STORE_APPEND: &str = "chatroom_store_append_seconds";
pub const FANOUT_LAG: &str = "chatroom_fanout_lag_seconds";
pub const SENDS_REJECTED: &str = "chatroom_sends_rejected_total";
pub const HTTP_RESPONSES: &str = "chatroom_http_responses_total";
pub const FILE_SYNCS: &str = "chatroom_file_syncs_total";

/// From a tenth of a millisecond (a write into the page cache) to seconds
/// (an fsync on a busy disk, a database far away).
const STORE_APPEND_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Publish times are whole milliseconds, so the first bucket is 1 ms.
const FANOUT_LAG_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The `class` label of [`HTTP_RESPONSES`], by the status's first digit.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// How often histogram samples are folded into their buckets (between
/// scrapes, so they do not pile up in memory).
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

/// The recorder's handle and the hot-path instruments, registered once.
struct Instruments {
    /// `None` if another recorder was installed first (nothing to render).
    exporter: Option<PrometheusHandle>,
    open_sockets: Gauge,
    events_stored: Counter,
    deliveries: Counter,
    store_append: Histogram,
    fanout_lag: Histogram,
    http_responses: [Counter; 5],
    file_syncs: Counter,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(Instruments::register);

impl Instruments {
    fn register() -> Self {
        let exporter = install_recorder();
        describe();
        Self {
            exporter,
            open_sockets: metrics::gauge!(OPEN_SOCKETS),
            events_stored: metrics::counter!(EVENTS_STORED),
            deliveries: metrics::counter!(DELIVERIES),
            store_append: metrics::histogram!(STORE_APPEND),
            fanout_lag: metrics::histogram!(FANOUT_LAG),
            http_responses: STATUS_CLASSES.map(|class| metrics::counter!(HTTP_RESPONSES, "class" => class)),
            file_syncs: metrics::counter!(FILE_SYNCS),
        }
    }
}

/// Installs the Prometheus recorder for the process and starts its upkeep.
fn install_recorder() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STORE_APPEND.into()), STORE_APPEND_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FANOUT_LAG.into()), FANOUT_LAG_BUCKETS));
    let installed = builder.and_then(PrometheusBuilder::install_recorder);
    match installed {
        Ok(handle) => {
            start_upkeep(handle.clone());
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will have nothing to show");
            None
        }
    }
}

/// A thread of its own: servers (and tests' runtimes) come and go, the
/// recorder stays for the process.
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_PERIOD);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only when scraped");
    }
}

fn describe() {
    metrics::describe_gauge!(OPEN_SOCKETS, "WebSockets open now");
    metrics::describe_counter!(EVENTS_STORED, "Room events stored (posts, edits, deletes)");
    metrics::describe_counter!(DELIVERIES, "Room-event frames delivered to sockets from the fan-out");
    metrics::describe_histogram!(STORE_APPEND, Unit::Seconds, "Time to store one batch of a room's events");
    metrics::describe_histogram!(FANOUT_LAG, Unit::Seconds, "Time from publishing a room event to delivering it to a socket");
    metrics::describe_counter!(SENDS_REJECTED, "Sends refused, by error code");
    metrics::describe_counter!(HTTP_RESPONSES, "HTTP responses, by status class");
    metrics::describe_counter!(FILE_SYNCS, "fdatasync calls on room files before acknowledging (--fsync always/batch)");
}

/// Every metric in the Prometheus text format (version 0.0.4); `None` if
/// this process has no recorder of ours.
pub fn render() -> Option<String> {
    INSTRUMENTS.exporter.as_ref().map(PrometheusHandle::render)
}

/// Counts a WebSocket as open until it is dropped.
#[must_use = "the socket counts as open only while this lives"]
pub struct OpenSocket(());

pub fn socket_opened() -> OpenSocket {
    INSTRUMENTS.open_sockets.increment(1.0);
    OpenSocket(())
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        INSTRUMENTS.open_sockets.decrement(1.0);
    }
}

/// One room event stored.
pub fn event_stored() {
    INSTRUMENTS.events_stored.increment(1);
}

/// A room file was synced to disk (`--fsync` always or batch).
pub fn file_synced() {
    INSTRUMENTS.file_syncs.increment(1);
}

/// A room's writer stored a batch (or failed to) in `took`.
pub fn store_appended(took: Duration) {
    INSTRUMENTS.store_append.record(took.as_secs_f64());
}

/// `count` room events are going out to a socket now, in one write, the
/// oldest of them published at `oldest_published_at_ms` (unix ms): one
/// clock read and one lag sample per write, not per event (this runs for
/// every write of every socket). A publisher's clock ahead of ours counts
/// as no lag.
pub fn room_events_delivered(count: u64, oldest_published_at_ms: u64) {
    let lag_ms = crate::model::unix_ms().saturating_sub(oldest_published_at_ms);
    INSTRUMENTS.deliveries.increment(count);
    INSTRUMENTS.fanout_lag.record(lag_ms as f64 / 1000.0);
}

/// A send was refused; `reason` is its error code (`rate_limited`,
/// `store_unavailable`, …).
pub fn send_rejected(reason: &'static str) {
    LazyLock::force(&INSTRUMENTS);
    metrics::counter!(SENDS_REJECTED, "reason" => reason).increment(1);
}

/// An HTTP response with `status` went out.
pub fn http_response(status: u16) {
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    INSTRUMENTS.http_responses[class].increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `series` (name and labels as rendered).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn recorded_figures_are_rendered() {
        let before = render().expect("this process has our recorder");
        let open = socket_opened();
        event_stored();
        store_appended(Duration::from_millis(3));
        room_events_delivered(2, crate::model::unix_ms());
        send_rejected("invalid_text");
        http_response(204);
        let during = render().expect("a rendering");
        drop(open);
        let after = render().expect("a rendering");

        for series in [EVENTS_STORED, DELIVERIES, "chatroom_sends_rejected_total{reason=\"invalid_text\"}", "chatroom_http_responses_total{class=\"2xx\"}"] {
            assert!(value(&during, series) >= value(&before, series) + 1.0, "{series}:\n{during}");
        }
        assert!(value(&during, "chatroom_store_append_seconds_count") >= 1.0, "{during}");
        assert!(value(&during, "chatroom_fanout_lag_seconds_bucket{le=\"10\"}") >= 1.0, "{during}");
        assert!(during.contains("# TYPE chatroom_store_append_seconds histogram"), "{during}");
        assert_eq!(value(&after, OPEN_SOCKETS), value(&during, OPEN_SOCKETS) - 1.0, "{after}");
    }
}
