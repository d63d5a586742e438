//! The service's metrics: one [`prometheus_client`] registry, rendered for `GET /metrics` and
//! read back for the periodic stats line, so both always say the same thing.
//!
//! Every number has one source, counted once where it happens:
//! - intake: messages received, refused by reason, dead-lettered ([`Metrics::received`] ...);
//! - the engine's own statistics (late and duplicate events), which each partition's worker
//!   hands over each tick with its state ([`Metrics::set_partition`]) and a collector exports
//!   at scrape time, labelled by partition, rather than the worker counting the engine's
//!   outcomes a second time;
//! - the sink: rows written by model and outcome, commits, refusals, request latency;
//! - the worker: checkpoints, state gauges, publish → row latency;
//! - [`crate::health`]: dependency up/down, failed calls, readiness (exported by the same
//!   collector);
//! - the process: CPU, memory, threads, file descriptors (`metrics-process`).
//!
//! Names follow Prometheus' conventions: base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total` (the encoder adds it), variants are labels (`topic`, `reason`,
//! `model`, `outcome`, `operation`, `dependency`). docs/design.md §12 describes them;
//! `deploy/observability/metrics.txt`, which the dashboard and alerts are checked against,
//! lists them (a test keeps it equal to the registry).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firstclick_engine::EngineStats;
use firstclick_model::{AttributionModel, EventKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One label.
type Label = [(&'static str, &'static str); 1];
/// Two labels.
type Labels = [(&'static str, &'static str); 2];
/// A gauge of seconds (or another fractional quantity).
type GaugeF64 = Gauge<f64, AtomicU64>;
/// A labelled family of histograms that share their buckets.
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

/// Upper bounds of the publish → row buckets, seconds: 0.5 s apart up to 8 s, where the rows
/// of a few seconds of out-of-orderness land.
const LATENCY_BUCKETS: [f64; 30] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5,
    8.0, 9.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 45.0, 60.0, 120.0,
];

/// Upper bounds of the request and checkpoint duration buckets, seconds.
const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the checkpoint size buckets, bytes: 256 B to 64 MiB, ×4 apart.
const SIZE_BUCKETS: [f64; 10] = [
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The label value of a stream's topic.
pub(crate) fn topic(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Click => "clicks",
        EventKind::Checkout => "checkouts",
    }
}

const TOPICS: [EventKind; 2] = [EventKind::Click, EventKind::Checkout];

/// A BigQuery call whose duration is measured.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BigQueryCall {
    /// `tabledata.insertAll`.
    InsertAll,
    /// A Storage Write append.
    Append,
    /// A Storage Write batch commit.
    Commit,
}

/// A Redis call whose duration is measured.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RedisCall {
    /// Reading a batch of user names.
    UserLookup,
    /// Appending a checkpoint delta to the changelog.
    CheckpointAppend,
}

/// What the stats line and `/metrics` show about the engine and the delivery core, handed
/// over by the worker (the only task that holds them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StateGauges {
    /// Clicks in state.
    pub(crate) live_clicks: u64,
    /// Checkouts waiting for the watermark.
    pub(crate) pending_checkouts: u64,
    /// Messages processed and not yet acknowledged.
    pub(crate) unacked: u64,
    /// Bytes of the base snapshot in Redis.
    pub(crate) base_bytes: u64,
    /// Bytes of changelog a restore replays.
    pub(crate) changelog_bytes: u64,
    /// The watermark, µs since the epoch, if there is one yet.
    pub(crate) watermark_micros: Option<i64>,
    /// The wall clock, µs since the epoch.
    pub(crate) now_micros: i64,
}

impl StateGauges {
    /// Wall clock minus watermark, seconds, once there is a watermark.
    fn lag_secs(&self) -> Option<f64> {
        self.watermark_micros
            .map(|w| (self.now_micros - w) as f64 / 1e6)
    }
}

/// What the worker of one partition last handed over.
#[derive(Clone, Copy, Debug, Default)]
struct PartitionState {
    stats: EngineStats,
    state: StateGauges,
}

/// Every metric of the service; see the module documentation for where each is counted.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    received: Family<Label, Counter>,
    /// `received`'s two series, resolved once: the intake counts every message.
    received_by_topic: [Counter; 2],
    routed: Family<Label, Counter>,
    bad: Family<Labels, Counter>,
    /// The (topic, reason) label pairs `bad` has, for the stats line's total.
    bad_labels: Mutex<BTreeSet<(&'static str, &'static str)>>,
    dead_lettered: Family<Label, Counter>,
    rows_written: Family<Labels, Counter>,
    touches_written: Family<Label, Counter>,
    rows_committed: Counter,
    rows_rejected: Counter,
    streams_lost: Counter,
    checkpoints: Counter,
    checkpoint_written_bytes: Counter,
    compactions: Counter,
    publish_to_row: Histogram,
    bigquery_requests: HistogramFamily,
    redis_requests: HistogramFamily,
    checkpoint_duration: Histogram,
    checkpoint_size: Histogram,
    oldest_age: Family<Label, GaugeF64>,
    /// Largest age (µs) of a message received since the last [`Metrics::roll_ages`], per topic.
    age_window: [AtomicI64; 2],
    /// When the last stats interval ended ([`Metrics::stats_due`]).
    last_stats: Mutex<Instant>,
    longest_step: GaugeF64,
    longest_step_micros: AtomicU64,
    /// For the stats line: the histogram's observations cannot be read back.
    last_checkpoint_micros: AtomicU64,
    partitions: Arc<Mutex<BTreeMap<u32, PartitionState>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub(crate) fn new() -> Self {
        let mut r = Registry::default();
        let partitions = Arc::new(Mutex::new(BTreeMap::new()));
        let m = Metrics {
            received: Family::default(),
            received_by_topic: [Counter::default(), Counter::default()],
            routed: Family::default(),
            bad: Family::default(),
            bad_labels: Mutex::new(BTreeSet::new()),
            dead_lettered: Family::default(),
            rows_written: Family::default(),
            touches_written: Family::default(),
            rows_committed: Counter::default(),
            rows_rejected: Counter::default(),
            streams_lost: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_written_bytes: Counter::default(),
            compactions: Counter::default(),
            publish_to_row: Histogram::new(LATENCY_BUCKETS),
            bigquery_requests: Family::new_with_constructor(request_histogram),
            redis_requests: Family::new_with_constructor(request_histogram),
            checkpoint_duration: request_histogram(),
            checkpoint_size: Histogram::new(SIZE_BUCKETS),
            oldest_age: Family::default(),
            age_window: [AtomicI64::new(0), AtomicI64::new(0)],
            last_stats: Mutex::new(Instant::now()),
            longest_step: GaugeF64::default(),
            longest_step_micros: AtomicU64::new(0),
            last_checkpoint_micros: AtomicU64::new(0),
            partitions: partitions.clone(),
            registry: Registry::default(),
        };
        // Label values that exist from the start, so that a dashboard or an alert over them
        // has a series at 0 rather than none before the first event.
        let mut m = m;
        m.received_by_topic =
            TOPICS.map(|kind| m.received.get_or_create_owned(&[("topic", topic(kind))]));
        for kind in TOPICS {
            let t = [("topic", topic(kind))];
            m.routed.get_or_create_owned(&t);
            m.dead_lettered.get_or_create_owned(&t);
            m.oldest_age.get_or_create_owned(&t);
        }
        r.register(
            "firstclick_messages_received",
            "Messages pulled from a subscription, valid or not",
            m.received.clone(),
        );
        r.register(
            "firstclick_messages_routed",
            "Messages the router pulled from an original subscription (P > 1), before its \
             partition topic",
            m.routed.clone(),
        );
        r.register(
            "firstclick_bad_messages",
            "Messages refused (reason: the offending field, or malformed)",
            m.bad.clone(),
        );
        r.register(
            "firstclick_dead_lettered",
            "Refused messages published to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        r.register(
            "firstclick_rows_written",
            "Rows written to BigQuery, by model and outcome (attributed or organic)",
            m.rows_written.clone(),
        );
        r.register(
            "firstclick_touch_rows_written",
            "Touch rows (click credits of multi-touch models) written to the touches table",
            m.touches_written.clone(),
        );
        r.register(
            "firstclick_rows_committed",
            "Rows made visible by Storage Write commits",
            m.rows_committed.clone(),
        );
        r.register(
            "firstclick_rows_rejected",
            "Rows BigQuery refused for good (dead-lettered)",
            m.rows_rejected.clone(),
        );
        r.register(
            "firstclick_streams_lost",
            "Pending streams gone before their commit with their rows not in memory",
            m.streams_lost.clone(),
        );
        r.register(
            "firstclick_checkpoints",
            "Checkpoint deltas appended to the changelog",
            m.checkpoints.clone(),
        );
        r.register(
            "firstclick_checkpoint_written_bytes",
            "Bytes written to Redis for checkpoints (changelog and base pieces)",
            m.checkpoint_written_bytes.clone(),
        );
        r.register(
            "firstclick_compactions",
            "Base snapshots written",
            m.compactions.clone(),
        );
        r.register(
            "firstclick_publish_to_row_seconds",
            "From a checkout's publish to its row being visible in BigQuery",
            m.publish_to_row.clone(),
        );
        r.register(
            "firstclick_bigquery_request_duration_seconds",
            "Duration of BigQuery calls (operation: insert_all, append, commit)",
            m.bigquery_requests.clone(),
        );
        r.register(
            "firstclick_redis_request_duration_seconds",
            "Duration of Redis calls (operation: user_lookup, checkpoint_append)",
            m.redis_requests.clone(),
        );
        r.register(
            "firstclick_checkpoint_duration_seconds",
            "Duration of one checkpoint (changelog append)",
            m.checkpoint_duration.clone(),
        );
        r.register(
            "firstclick_checkpoint_size_bytes",
            "Size of one checkpoint delta",
            m.checkpoint_size.clone(),
        );
        r.register(
            "firstclick_oldest_unacked_age_seconds",
            "Largest age (now minus publish time) of a message received in the last stats \
             interval; it is acknowledged at the next checkpoint",
            m.oldest_age.clone(),
        );
        r.register(
            "firstclick_longest_step_seconds",
            "Longest single step of the delivery core since start",
            m.longest_step.clone(),
        );
        r.register(
            "firstclick_build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register_collector(Box::new(ScrapeTime { partitions }));
        Metrics { registry: r, ..m }
    }

    /// All metrics in the OpenMetrics text format (which Prometheus reads).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// A message pulled from `kind`'s subscription, published `age_micros` ago (if known).
    pub(crate) fn received(&self, kind: EventKind, age_micros: Option<i64>) {
        self.received_by_topic[kind_index(kind)].inc();
        if let Some(age) = age_micros {
            self.age_window[kind_index(kind)].fetch_max(age, Ordering::Relaxed);
        }
    }

    /// A message pulled from an original subscription by the router.
    pub(crate) fn routed(&self, kind: EventKind) {
        self.routed.get_or_create(&[("topic", topic(kind))]).inc();
    }

    /// A message refused; `reason` is the offending field, or `malformed`.
    pub(crate) fn bad(&self, kind: EventKind, reason: &'static str) {
        let labels = [("topic", topic(kind)), ("reason", reason)];
        self.bad.get_or_create(&labels).inc();
        if let Ok(mut seen) = self.bad_labels.lock() {
            seen.insert((topic(kind), reason));
        }
    }

    /// A refused message published to the dead-letter topic.
    pub(crate) fn dead_lettered(&self, kind: EventKind) {
        self.dead_lettered
            .get_or_create(&[("topic", topic(kind))])
            .inc();
    }

    /// `n` rows of `model` written, with a click (`attributed`) or organic.
    pub(crate) fn rows_written(&self, model: AttributionModel, attributed: bool, n: u64) {
        let outcome = if attributed { "attributed" } else { "organic" };
        self.rows_written
            .get_or_create(&[("model", model.as_str()), ("outcome", outcome)])
            .inc_by(n);
    }

    /// `n` touch rows of `model` written.
    pub(crate) fn touches_written(&self, model: AttributionModel, n: u64) {
        self.touches_written
            .get_or_create(&[("model", model.as_str())])
            .inc_by(n);
    }

    /// `n` rows made visible by a commit.
    pub(crate) fn rows_committed(&self, n: u64) {
        self.rows_committed.inc_by(n);
    }

    /// A row BigQuery refused for good.
    pub(crate) fn row_rejected(&self) {
        self.rows_rejected.inc();
    }

    /// A pending stream lost with its rows.
    pub(crate) fn stream_lost(&self) {
        self.streams_lost.inc();
    }

    /// One BigQuery call took `secs`.
    pub(crate) fn bigquery_call(&self, call: BigQueryCall, secs: f64) {
        let op = match call {
            BigQueryCall::InsertAll => "insert_all",
            BigQueryCall::Append => "append",
            BigQueryCall::Commit => "commit",
        };
        self.bigquery_requests
            .get_or_create(&[("operation", op)])
            .observe(secs);
    }

    /// One Redis call took `secs`.
    pub(crate) fn redis_call(&self, call: RedisCall, secs: f64) {
        let op = match call {
            RedisCall::UserLookup => "user_lookup",
            RedisCall::CheckpointAppend => "checkpoint_append",
        };
        self.redis_requests
            .get_or_create(&[("operation", op)])
            .observe(secs);
    }

    /// A checkpoint delta of `bytes` appended in `secs`.
    pub(crate) fn checkpoint(&self, secs: f64, bytes: u64) {
        self.checkpoints.inc();
        self.checkpoint_written_bytes.inc_by(bytes);
        self.checkpoint_duration.observe(secs);
        self.last_checkpoint_micros
            .store((secs * 1e6) as u64, Ordering::Relaxed);
        self.checkpoint_size.observe(bytes as f64);
        self.redis_call(RedisCall::CheckpointAppend, secs);
    }

    /// A piece of a base snapshot written.
    pub(crate) fn base_piece_written(&self, bytes: u64) {
        self.checkpoint_written_bytes.inc_by(bytes);
    }

    /// A base snapshot committed.
    pub(crate) fn compaction(&self) {
        self.compactions.inc();
    }

    /// A row became visible `micros` after its checkout was published (negative: clocks
    /// apart, taken as 0).
    pub(crate) fn row_visible_after(&self, micros: i64) {
        self.publish_to_row.observe(micros.max(0) as f64 / 1e6);
    }

    /// One step of the delivery core took `micros`.
    pub(crate) fn step_took(&self, micros: u64) {
        let longest = self
            .longest_step_micros
            .fetch_max(micros, Ordering::Relaxed)
            .max(micros);
        self.longest_step.set(longest as f64 / 1e6);
    }

    /// Partition `partition`'s engine statistics and state, as of now. The statistics are
    /// exported as they are (one source); the state as gauges labelled by partition.
    pub(crate) fn set_partition(&self, partition: u32, stats: &EngineStats, state: &StateGauges) {
        if let Ok(mut all) = self.partitions.lock() {
            all.insert(
                partition,
                PartitionState {
                    stats: *stats,
                    state: *state,
                },
            );
        }
    }

    /// Messages of `partition` still unacknowledged (for the exit log after a forced stop).
    pub(crate) fn set_unacked(&self, partition: u32, n: u64) {
        if let Ok(mut all) = self.partitions.lock() {
            all.entry(partition).or_default().state.unacked = n;
        }
    }

    /// This worker no longer runs `partition`: its series disappear from this worker.
    pub(crate) fn forget_partition(&self, partition: u32) {
        if let Ok(mut all) = self.partitions.lock() {
            all.remove(&partition);
        }
    }

    /// Messages processed and not yet acknowledged, all partitions.
    pub(crate) fn unacked(&self) -> u64 {
        self.partitions
            .lock()
            .map(|all| all.values().map(|p| p.state.unacked).sum())
            .unwrap_or(0)
    }

    /// Whether a stats interval of `every` has ended since the last one, for the whole
    /// process: each partition's worker asks on its ticks, and only the first to ask after
    /// the interval gets `true` (so the process-wide stats line is logged, and the age window
    /// rolled, once per interval whatever the number of partitions).
    pub(crate) fn stats_due(&self, every: Duration) -> bool {
        let Ok(mut last) = self.last_stats.lock() else {
            return false;
        };
        if last.elapsed() < every {
            return false;
        }
        *last = Instant::now();
        true
    }

    /// Ends a stats interval: the oldest-age gauges take the largest age seen in it.
    pub(crate) fn roll_ages(&self) {
        for kind in TOPICS {
            let age = self.age_window[kind_index(kind)].swap(0, Ordering::Relaxed);
            self.oldest_age
                .get_or_create(&[("topic", topic(kind))])
                .set(age.max(0) as f64 / 1e6);
        }
    }

    /// Messages received from `kind`'s subscription.
    pub(crate) fn received_count(&self, kind: EventKind) -> u64 {
        self.received_by_topic[kind_index(kind)].get()
    }

    /// Messages refused, all topics and reasons.
    pub(crate) fn bad_count(&self) -> u64 {
        let Ok(seen) = self.bad_labels.lock() else {
            return 0;
        };
        seen.iter()
            .map(|&(t, r)| self.bad.get_or_create(&[("topic", t), ("reason", r)]).get())
            .sum()
    }

    /// Refused messages dead-lettered, all topics.
    pub(crate) fn dead_lettered_count(&self) -> u64 {
        TOPICS
            .iter()
            .map(|k| {
                self.dead_lettered
                    .get_or_create(&[("topic", topic(*k))])
                    .get()
            })
            .sum()
    }

    /// Rows written, all models: (all, attributed).
    pub(crate) fn rows_count(&self) -> (u64, u64) {
        let get = |m: AttributionModel, outcome| {
            self.rows_written
                .get(&[("model", m.as_str()), ("outcome", outcome)])
                .map_or(0, |c| c.get())
        };
        AttributionModel::ALL.iter().fold((0, 0), |(all, att), m| {
            let a = get(*m, "attributed");
            (all + a + get(*m, "organic"), att + a)
        })
    }

    /// Rows refused for good.
    pub(crate) fn rejected_count(&self) -> u64 {
        self.rows_rejected.get()
    }

    /// The one-line summary logged periodically.
    pub(crate) fn line(&self) -> String {
        let (mut engine, mut state) = (EngineStats::default(), StateGauges::default());
        let mut lag: Option<f64> = None;
        if let Ok(all) = self.partitions.lock() {
            for p in all.values() {
                engine.late_clicks += p.stats.late_clicks;
                engine.late_checkouts += p.stats.late_checkouts;
                engine.duplicate_clicks += p.stats.duplicate_clicks;
                engine.duplicate_checkouts += p.stats.duplicate_checkouts;
                state.live_clicks += p.state.live_clicks;
                state.pending_checkouts += p.state.pending_checkouts;
                state.unacked += p.state.unacked;
                if let Some(l) = p.state.lag_secs() {
                    lag = Some(lag.map_or(l, |m: f64| m.max(l)));
                }
            }
        }
        let (rows, attributed) = self.rows_count();
        format!(
            "in: {} clicks, {} checkouts | rows: {rows} ({attributed} attributed, {} rejected) \
             | bad {} (dead-lettered {}) | late {} clicks, {} checkouts | duplicates {} | \
             state: {} clicks, {} pending | unacked {} | watermark lag {} | checkpoints \
             {} (last {:.1} ms, {} KB written)",
            self.received_count(EventKind::Click),
            self.received_count(EventKind::Checkout),
            self.rejected_count(),
            self.bad_count(),
            self.dead_lettered_count(),
            engine.late_clicks,
            engine.late_checkouts,
            engine.duplicate_clicks + engine.duplicate_checkouts,
            state.live_clicks,
            state.pending_checkouts,
            state.unacked,
            lag.map_or("none yet".to_owned(), |l| format!("{l:.1} s")),
            self.checkpoints.get(),
            self.last_checkpoint_micros.load(Ordering::Relaxed) as f64 / 1e3,
            self.checkpoint_written_bytes.get() / 1024,
        )
    }
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::Click => 0,
        EventKind::Checkout => 1,
    }
}

/// What is read when Prometheus scrapes rather than kept in the registry: each partition's
/// engine statistics and state (labelled `partition`), the dependencies' health and the
/// process' resources.
#[derive(Debug)]
struct ScrapeTime {
    partitions: Arc<Mutex<BTreeMap<u32, PartitionState>>>,
}

/// A per-partition gauge: name, help, and its value in a partition's state.
type PartitionGauge = (&'static str, &'static str, fn(&StateGauges) -> Option<f64>);

/// `partition="N"` and, for the per-topic counters, `topic`.
type PartitionLabels = [(&'static str, String); 1];

impl ScrapeTime {
    fn per_topic_counter(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        parts: &BTreeMap<u32, PartitionState>,
        value: impl Fn(&EngineStats, EventKind) -> u64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (p, s) in parts {
            for kind in TOPICS {
                let labels = [
                    ("topic", topic(kind).to_owned()),
                    ("partition", p.to_string()),
                ];
                ConstCounter::new(value(&s.stats, kind)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn per_partition_gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        parts: &BTreeMap<u32, PartitionState>,
        value: impl Fn(&StateGauges) -> Option<f64>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (p, s) in parts {
            if let Some(v) = value(&s.state) {
                let labels: PartitionLabels = [("partition", p.to_string())];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let parts = self
            .partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        Self::per_topic_counter(
            &mut encoder,
            "firstclick_late_events",
            "Clicks that arrived behind the watermark, checkouts behind the retained state.",
            &parts,
            |s, k| match k {
                EventKind::Click => s.late_clicks,
                EventKind::Checkout => s.late_checkouts,
            },
        )?;
        Self::per_topic_counter(
            &mut encoder,
            "firstclick_duplicate_events",
            "Duplicate clicks and checkouts ignored.",
            &parts,
            |s, k| match k {
                EventKind::Click => s.duplicate_clicks,
                EventKind::Checkout => s.duplicate_checkouts,
            },
        )?;
        let gauges: [PartitionGauge; 7] = [
            ("firstclick_live_clicks", "Clicks in state.", |s| {
                Some(s.live_clicks as f64)
            }),
            (
                "firstclick_pending_checkouts",
                "Checkouts waiting for the watermark.",
                |s| Some(s.pending_checkouts as f64),
            ),
            (
                "firstclick_unacked_messages",
                "Messages processed, not yet acknowledged (they wait for the next checkpoint).",
                |s| Some(s.unacked as f64),
            ),
            (
                "firstclick_state_base_bytes",
                "Bytes of the current base snapshot in Redis.",
                |s| Some(s.base_bytes as f64),
            ),
            (
                "firstclick_state_changelog_bytes",
                "Bytes of changelog a restore replays over the base.",
                |s| Some(s.changelog_bytes as f64),
            ),
            (
                "firstclick_watermark_seconds",
                "The watermark, seconds since the epoch (absent before the first click).",
                |s| s.watermark_micros.map(|w| w as f64 / 1e6),
            ),
            (
                "firstclick_watermark_lag_seconds",
                "Wall clock minus watermark.",
                StateGauges::lag_secs,
            ),
        ];
        for (name, help, value) in gauges {
            Self::per_partition_gauge(&mut encoder, name, help, &parts, value)?;
        }

        let health = crate::health::global();
        let mut up = encoder.encode_descriptor(
            "firstclick_dependency_up",
            "1 while the dependency answers, 0 during an outage.",
            None,
            MetricType::Gauge,
        )?;
        for d in crate::health::Dependency::ALL {
            ConstGauge::new(i64::from(health.is_up(d)))
                .encode(up.encode_family(&[("dependency", d.label())])?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "firstclick_dependency_errors",
            "Failed calls to a dependency that were retried.",
            None,
            MetricType::Counter,
        )?;
        for d in crate::health::Dependency::ALL {
            ConstCounter::new(health.errors(d))
                .encode(errors.encode_family(&[("dependency", d.label())])?)?;
        }
        ConstGauge::new(i64::from(health.readiness().is_ok())).encode(
            encoder.encode_descriptor(
                "firstclick_ready",
                "1 when /readyz answers 200 (started, not stopping, every dependency up).",
                None,
                MetricType::Gauge,
            )?,
        )?;

        let p = metrics_process::collector::collect();
        if let Some(v) = p.cpu_seconds_total {
            ConstCounter::new(v).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                p.threads,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                p.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
                    .encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn one_stats_interval_is_due_once_for_all_partitions() {
        let m = Metrics::new();
        let every = Duration::from_millis(50);
        assert!(!m.stats_due(every), "due before the first interval ended");
        std::thread::sleep(Duration::from_millis(60));
        // Eight partitions' workers ask on their ticks: only the first gets the turn.
        let turns = (0..8).filter(|_| m.stats_due(every)).count();
        assert_eq!(turns, 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(m.stats_due(every), "the next interval is due again");
    }

    #[test]
    fn counters_carry_labels_and_the_total_suffix() {
        let m = Metrics::new();
        m.received(EventKind::Click, Some(2_000_000));
        m.received(EventKind::Click, None);
        m.bad(EventKind::Click, "user_id");
        m.dead_lettered(EventKind::Click);
        m.rows_written(AttributionModel::FirstClick, true, 3);
        m.rows_written(AttributionModel::Linear, false, 2);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"firstclick_messages_received_total{topic="clicks"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_messages_received_total{topic="checkouts"}"#
            ),
            Some("0"),
            "known label values exist before their first event"
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_bad_messages_total{topic="clicks",reason="user_id"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_rows_written_total{model="first_click",outcome="attributed"}"#
            ),
            Some("3")
        );
        assert_eq!(m.rows_count(), (5, 3));
        assert_eq!(m.bad_count(), 1);
        assert!(text.contains(r#"firstclick_build_info{version=""#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn engine_statistics_are_exported_as_they_are() {
        let m = Metrics::new();
        let stats = EngineStats {
            late_clicks: 7,
            duplicate_checkouts: 4,
            ..EngineStats::default()
        };
        m.set_partition(3, &stats, &StateGauges::default());
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"firstclick_late_events_total{topic="clicks",partition="3"}"#
            ),
            Some("7")
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_duplicate_events_total{topic="checkouts",partition="3"}"#
            ),
            Some("4")
        );
        assert!(m.line().contains("late 7 clicks"), "{}", m.line());
        m.forget_partition(3);
        assert!(!m.render().contains("partition=\"3\""));
    }

    #[test]
    fn histograms_and_gauges_use_base_units() {
        let m = Metrics::new();
        m.row_visible_after(1_500_000);
        m.checkpoint(0.004, 5000);
        m.set_partition(
            0,
            &EngineStats::default(),
            &StateGauges {
                live_clicks: 10,
                watermark_micros: Some(1_000_000_000),
                now_micros: 1_003_500_000,
                ..StateGauges::default()
            },
        );
        m.received(EventKind::Checkout, Some(4_250_000));
        m.roll_ages();
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"firstclick_publish_to_row_seconds_bucket{le="1.5"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_publish_to_row_seconds_bucket{le="1.0"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(&text, "firstclick_checkpoint_size_bytes_count"),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"firstclick_watermark_lag_seconds{partition="0"}"#),
            Some("3.5")
        );
        assert_eq!(
            sample(&text, r#"firstclick_live_clicks{partition="0"}"#),
            Some("10.0")
        );
        assert_eq!(
            sample(
                &text,
                r#"firstclick_oldest_unacked_age_seconds{topic="checkouts"}"#
            ),
            Some("4.25")
        );
        assert!(sample(&text, "process_resident_memory_bytes").is_some());
        assert!(sample(&text, r#"firstclick_dependency_up{dependency="redis"}"#).is_some());
    }

    /// `deploy/observability/metrics.txt` (what the dashboard and the alert rules may use)
    /// names exactly the families the registry renders, with their types.
    #[test]
    fn catalogue_file_matches_the_registry() {
        let m = Metrics::new();
        // Families with labels render a series once a label value exists.
        m.bad(EventKind::Click, "user_id");
        m.rows_written(AttributionModel::FirstClick, true, 1);
        m.touches_written(AttributionModel::Linear, 1);
        m.bigquery_call(BigQueryCall::Commit, 0.1);
        m.redis_call(RedisCall::UserLookup, 0.1);
        let state = StateGauges {
            watermark_micros: Some(1),
            ..StateGauges::default()
        };
        m.set_partition(0, &EngineStats::default(), &state);
        let text = m.render();
        let mut rendered = BTreeSet::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                k => (name.to_owned(), k),
            };
            rendered.insert(format!("{name} {kind}"));
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/observability/metrics.txt"
        );
        let file = std::fs::read_to_string(path).expect("metrics.txt");
        let listed: BTreeSet<String> = file
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let missing: Vec<_> = rendered.difference(&listed).collect();
        let stale: Vec<_> = listed
            .difference(&rendered)
            // Process metrics the platform may not provide everywhere.
            .filter(|l| !l.starts_with("process_"))
            .collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "rendered but not in metrics.txt: {missing:?}; in metrics.txt but not rendered: {stale:?}"
        );
    }
}
