//! Counters and gauges of the streaming service, shared between its tasks, printed as the
//! periodic stats line and served in Prometheus' text format on the metrics port. The
//! dependency and readiness gauges come from [`crate::health`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Every counter and gauge; see [`Metrics::prometheus`] for their names.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Click messages received.
    pub(crate) clicks_in: AtomicU64,
    /// Checkout messages received.
    pub(crate) checkouts_in: AtomicU64,
    /// Messages refused (not JSON, missing fields, bad timestamps, ...).
    pub(crate) bad: AtomicU64,
    /// Refused messages published to the dead-letter topic.
    pub(crate) dead_lettered: AtomicU64,
    /// Clicks that arrived behind the watermark.
    pub(crate) late_clicks: AtomicU64,
    /// Checkouts that arrived behind the retained state.
    pub(crate) late_checkouts: AtomicU64,
    /// Duplicate clicks and checkouts ignored.
    pub(crate) duplicates: AtomicU64,
    /// Rows written to BigQuery.
    pub(crate) rows_written: AtomicU64,
    /// Of those, with a click.
    pub(crate) rows_attributed: AtomicU64,
    /// Touch rows of multi-touch models written to the touches table.
    pub(crate) touches_written: AtomicU64,
    /// Rows BigQuery refused for good (dead-lettered).
    pub(crate) rows_rejected: AtomicU64,
    /// Storage Write: rows made visible by committing their epoch's stream.
    pub(crate) rows_committed: AtomicU64,
    /// Storage Write: pending streams gone before their commit, rows not in memory (lost).
    pub(crate) streams_lost: AtomicU64,
    /// Checkpoints written (changelog deltas appended).
    pub(crate) checkpoints: AtomicU64,
    /// Duration of the last changelog append, µs.
    pub(crate) last_checkpoint_micros: AtomicU64,
    /// Size of the last changelog delta, bytes.
    pub(crate) last_checkpoint_bytes: AtomicU64,
    /// Bytes of the current base snapshot in Redis.
    pub(crate) state_base_bytes: AtomicU64,
    /// Bytes of changelog a restore would replay over the base.
    pub(crate) state_changelog_bytes: AtomicU64,
    /// Bases written (compactions).
    pub(crate) compactions: AtomicU64,
    /// Bytes written to Redis for checkpoints (changelog and base pieces).
    pub(crate) checkpoint_bytes_written: AtomicU64,
    /// Longest time the worker spent in one step of the delivery core (events, ticks with
    /// their checkpoint sealing and compaction steps), µs, since start.
    pub(crate) longest_step_micros: AtomicU64,
    /// Duration of the last BigQuery insert, µs.
    pub(crate) last_insert_micros: AtomicU64,
    /// Clicks in state.
    pub(crate) live_clicks: AtomicU64,
    /// Checkouts waiting for the watermark.
    pub(crate) pending_checkouts: AtomicU64,
    /// Messages processed and not yet acknowledged (waiting for the next checkpoint).
    pub(crate) unacked: AtomicU64,
    /// The watermark, µs since the epoch (0 before the first click).
    pub(crate) watermark_micros: AtomicI64,
    /// Wall clock minus watermark, ms.
    pub(crate) watermark_lag_ms: AtomicI64,
    /// From a checkout's publish to its row being visible in BigQuery.
    pub(crate) row_latency: Histogram,
}

/// Upper bounds of the latency buckets, seconds.
/// (0.5 s apart up to 8 s, where the rows of a few seconds of out-of-orderness land).
const LATENCY_BUCKETS: [f64; 30] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5,
    8.0, 9.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 45.0, 60.0, 120.0,
];

/// A Prometheus histogram of seconds with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation of `micros` microseconds (negative: clocks apart, taken as 0).
    pub(crate) fn observe_micros(&self, micros: i64) {
        let micros = micros.max(0) as u64;
        let secs = micros as f64 / 1e6;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The exposition lines of histogram `name`.
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += get(c);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {cumulative}",
            get(&self.sum_micros) as f64 / 1e6
        );
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Metrics {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// The one-line summary logged periodically.
    pub(crate) fn line(&self) -> String {
        format!(
            "in: {} clicks, {} checkouts | rows: {} ({} attributed, {} rejected) | bad {} \
             (dead-lettered {}) | late {} clicks, {} checkouts | duplicates {} | state: {} \
             clicks, {} pending | unacked {} | watermark lag {} ms | checkpoints {} (last {} ms, \
             {} KB)",
            get(&self.clicks_in),
            get(&self.checkouts_in),
            get(&self.rows_written),
            get(&self.rows_attributed),
            get(&self.rows_rejected),
            get(&self.bad),
            get(&self.dead_lettered),
            get(&self.late_clicks),
            get(&self.late_checkouts),
            get(&self.duplicates),
            get(&self.live_clicks),
            get(&self.pending_checkouts),
            get(&self.unacked),
            self.watermark_lag_ms.load(Ordering::Relaxed),
            get(&self.checkpoints),
            get(&self.last_checkpoint_micros) / 1000,
            get(&self.last_checkpoint_bytes) / 1024,
        )
    }

    /// All metrics in Prometheus' text exposition format.
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "firstclick_compactions_total",
                "Base snapshots written.",
                &self.compactions,
            ),
            (
                "firstclick_checkpoint_written_bytes_total",
                "Bytes written to Redis for checkpoints (changelog and base pieces).",
                &self.checkpoint_bytes_written,
            ),
            (
                "firstclick_clicks_in_total",
                "Click messages received.",
                &self.clicks_in,
            ),
            (
                "firstclick_checkouts_in_total",
                "Checkout messages received.",
                &self.checkouts_in,
            ),
            (
                "firstclick_bad_messages_total",
                "Messages refused.",
                &self.bad,
            ),
            (
                "firstclick_dead_lettered_total",
                "Refused messages published to the dead-letter topic.",
                &self.dead_lettered,
            ),
            (
                "firstclick_late_clicks_total",
                "Clicks that arrived behind the watermark.",
                &self.late_clicks,
            ),
            (
                "firstclick_late_checkouts_total",
                "Checkouts that arrived behind the retained state.",
                &self.late_checkouts,
            ),
            (
                "firstclick_duplicates_total",
                "Duplicate messages ignored.",
                &self.duplicates,
            ),
            (
                "firstclick_rows_written_total",
                "Rows written to BigQuery.",
                &self.rows_written,
            ),
            (
                "firstclick_rows_attributed_total",
                "Rows written with a click.",
                &self.rows_attributed,
            ),
            (
                "firstclick_touch_rows_written_total",
                "Touch rows (click credits of multi-touch models) written to the touches table.",
                &self.touches_written,
            ),
            (
                "firstclick_rows_rejected_total",
                "Rows BigQuery refused for good.",
                &self.rows_rejected,
            ),
            (
                "firstclick_rows_committed_total",
                "Rows made visible by Storage Write commits.",
                &self.rows_committed,
            ),
            (
                "firstclick_streams_lost_total",
                "Pending streams gone before their commit with their rows not in memory.",
                &self.streams_lost,
            ),
            (
                "firstclick_checkpoints_total",
                "Checkpoints written.",
                &self.checkpoints,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(v)
            );
        }
        let gauges: [(&str, &str, i64); 11] = [
            (
                "firstclick_state_base_bytes",
                "Bytes of the current base snapshot in Redis.",
                get(&self.state_base_bytes) as i64,
            ),
            (
                "firstclick_state_changelog_bytes",
                "Bytes of changelog a restore replays over the base.",
                get(&self.state_changelog_bytes) as i64,
            ),
            (
                "firstclick_longest_step_milliseconds",
                "Longest single step of the delivery core since start.",
                (get(&self.longest_step_micros) / 1000) as i64,
            ),
            (
                "firstclick_live_clicks",
                "Clicks in state.",
                get(&self.live_clicks) as i64,
            ),
            (
                "firstclick_pending_checkouts",
                "Checkouts waiting for the watermark.",
                get(&self.pending_checkouts) as i64,
            ),
            (
                "firstclick_unacked_messages",
                "Messages processed, not yet acknowledged.",
                get(&self.unacked) as i64,
            ),
            (
                "firstclick_watermark_lag_milliseconds",
                "Wall clock minus watermark.",
                self.watermark_lag_ms.load(Ordering::Relaxed),
            ),
            (
                "firstclick_watermark_seconds",
                "The watermark, seconds since the epoch.",
                self.watermark_micros.load(Ordering::Relaxed) / 1_000_000,
            ),
            (
                "firstclick_last_checkpoint_milliseconds",
                "Duration of the last checkpoint.",
                (get(&self.last_checkpoint_micros) / 1000) as i64,
            ),
            (
                "firstclick_last_checkpoint_bytes",
                "Size of the last checkpoint.",
                get(&self.last_checkpoint_bytes) as i64,
            ),
            (
                "firstclick_sink_latency_milliseconds",
                "Duration of the last BigQuery insert.",
                (get(&self.last_insert_micros) / 1000) as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.row_latency.write(
            &mut out,
            "firstclick_publish_to_row_seconds",
            "From a checkout's publish to its row being visible in BigQuery.",
        );
        let health = crate::health::global();
        let _ = writeln!(
            out,
            "# HELP firstclick_dependency_up 1 while the dependency answers, 0 during an outage.\n\
             # TYPE firstclick_dependency_up gauge"
        );
        for d in crate::health::Dependency::ALL {
            let _ = writeln!(
                out,
                "firstclick_dependency_up{{dependency=\"{}\"}} {}",
                d.label(),
                u8::from(health.is_up(d))
            );
        }
        let _ = writeln!(
            out,
            "# HELP firstclick_ready 1 when /readyz answers 200 (started, not stopping, every \
             dependency up).\n# TYPE firstclick_ready gauge\nfirstclick_ready {}",
            u8::from(health.readiness().is_ok())
        );
        out
    }
}
