//! The streaming service: connects Pub/Sub, Redis and BigQuery, restores the last checkpoint,
//! starts one intake task per subscription and the worker, and stops gracefully on SIGTERM or
//! SIGINT (stop pulling, finish in-flight work, flush, checkpoint, ack, exit 0). Before anything
//! is consumed or restored, `crate::preflight` checks every dependency; a stop that the grace
//! period forces is `crate::shutdown`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use firstclick_bigquery::{BigQueryArgs, EpochWriter, StorageWriter};
use firstclick_cli::GcpArgs;
use firstclick_delivery::DeliveryConfig;
use firstclick_model::EventKind;
use firstclick_pubsub::{PubSubArgs, Publisher, SubscribeOptions, Subscription};
use firstclick_redis::{CheckpointStore, RedisArgs, UserDirectory};
use tokio::sync::mpsc;

use crate::args::EngineArgs;
use crate::intake::{self, IntakeContext};
use crate::metrics::Metrics;
use crate::preflight::ConfigError;
use crate::shutdown::Shutdown;
use crate::sink::{RowSink, WriteApi};
use crate::worker::{Worker, WorkerConfig, WorkerIo};

/// Everything the streaming service reads from flags or the environment.
#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// Google Cloud project and key.
    #[command(flatten)]
    pub(crate) gcp: GcpArgs,
    /// Topics and subscriptions.
    #[command(flatten)]
    pub(crate) pubsub: PubSubArgs,
    /// Output table.
    #[command(flatten)]
    pub(crate) bigquery: BigQueryArgs,
    /// Users and checkpoints.
    #[command(flatten)]
    pub(crate) redis: RedisArgs,
    /// Attribution.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Service behaviour.
    #[command(flatten)]
    pub(crate) service: ServiceArgs,
    /// Start-up checks and shutdown grace.
    #[command(flatten)]
    pub(crate) lifecycle: crate::args::LifecycleArgs,
}

/// Checkpoints, batching, observability.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServiceArgs {
    /// Longest time between two checkpoints while messages wait for their ack, in seconds.
    /// With `storage-write` it is also how long finished rows wait before their commit.
    #[arg(
        long = "checkpoint-interval-secs",
        env = "CHECKPOINT_INTERVAL_SECS",
        default_value_t = 1
    )]
    pub(crate) checkpoint_interval_secs: u64,
    /// Name of this pipeline's checkpoint; its Redis keys are firstclick:{NAME}:meta, :log and
    /// :base:N [default: PROJECT:CLICK_SUBSCRIPTION].
    #[arg(long = "checkpoint-key", env = "CHECKPOINT_KEY")]
    pub(crate) checkpoint_key: Option<String>,
    /// Write a new base snapshot once the changelog since the last one holds at least this many
    /// bytes (and `--compact-ratio` times the base).
    #[arg(
        long = "compact-min-bytes",
        env = "COMPACT_MIN_BYTES",
        default_value_t = 64 << 20
    )]
    pub(crate) compact_min_bytes: u64,
    /// Write a new base snapshot once the changelog holds this many times the base's bytes.
    /// Redis then receives about (1 + 1/RATIO) times the changelog's bytes in all, and a
    /// restore reads at most about (1 + RATIO) times the base: 2.0 gives 1.5x and 3x.
    #[arg(long = "compact-ratio", env = "COMPACT_RATIO", default_value_t = 2.0)]
    pub(crate) compact_ratio: f64,
    /// Bytes of base snapshot encoded per tick (200 ms) during a compaction: bounds the event
    /// loop's work per tick and sets how fast a base is written (5 MiB/s by default).
    #[arg(
        long = "compact-piece-bytes",
        env = "COMPACT_PIECE_BYTES",
        default_value_t = 1 << 20
    )]
    pub(crate) compact_piece_bytes: usize,
    /// How rows reach BigQuery: `storage-write` writes each checkpoint epoch's rows to a
    /// pending stream committed after the checkpoint (exactly one row per checkout in the
    /// table; the BigQuery emulator only, in this build); `insert-all` uses insertAll (at
    /// least once: after a crash some rows are written again, the `_dedup` view hides them).
    #[arg(
        long = "bigquery-write-api",
        env = "BIGQUERY_WRITE_API",
        value_enum,
        default_value_t = WriteApi::InsertAll
    )]
    pub(crate) write_api: WriteApi,
    /// Rows per BigQuery flush at most.
    #[arg(long = "bq-batch-rows", env = "BQ_BATCH_ROWS", default_value_t = 500)]
    pub(crate) batch_rows: usize,
    /// Seconds between two stats lines in the log.
    #[arg(
        long = "stats-interval-secs",
        env = "STATS_INTERVAL_SECS",
        default_value_t = 10
    )]
    pub(crate) stats_interval_secs: u64,
    /// Address of the /metrics and /healthz endpoint; empty to disable.
    #[arg(
        long = "metrics-addr",
        env = "METRICS_ADDR",
        default_value = "0.0.0.0:9100"
    )]
    pub(crate) metrics_addr: String,
    /// After a crash, seconds to keep the watermark still while the messages that were in
    /// flight come back (their leases expire) [default: the ack deadline + 5 s].
    #[arg(long = "recovery-hold-secs", env = "RECOVERY_HOLD_SECS")]
    pub(crate) recovery_hold_secs: Option<u64>,
    /// Event times further ahead of the wall clock than this many seconds are refused
    /// (dead-lettered): a clock far in the future would flush all state.
    #[arg(
        long = "max-future-secs",
        env = "MAX_FUTURE_SECS",
        default_value_t = 86_400
    )]
    pub(crate) max_future_secs: u64,
}

/// Runs the service until a stop signal; returns after a clean shutdown.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let grace = Duration::from_secs(args.lifecycle.shutdown_grace_secs);
    let shutdown = Shutdown::listen(grace).context("cannot install the signal handlers")?;
    let metrics = Arc::new(Metrics::default());
    if !args.service.metrics_addr.is_empty() {
        let addr: SocketAddr = args.service.metrics_addr.parse().map_err(|e| {
            ConfigError::one(
                "METRICS_ADDR",
                "HOST:PORT such as 0.0.0.0:9100",
                format!("{:?} ({e})", args.service.metrics_addr),
                "fix --metrics-addr / METRICS_ADDR, or set it empty to serve nothing",
            )
        })?;
        let bound = crate::http::serve(addr, metrics.clone(), shutdown.forced.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
        tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    }

    let topology = args.pubsub.topology();
    let bad_redis = |e: firstclick_redis::RedisError| {
        let fix = "fix REDIS_URL (and REDIS_PASSWORD)";
        ConfigError::one("REDIS_URL", "a Redis URL", e, fix)
    };
    let users = Arc::new(UserDirectory::new(&args.redis).map_err(bad_redis)?);
    let store =
        Arc::new(CheckpointStore::new(&args.redis, checkpoint_name(&args)).map_err(bad_redis)?);
    let Some(checked) =
        crate::preflight::check(&args, users.clone(), store.clone(), &shutdown.graceful).await?
    else {
        tracing::info!("stopped during the start-up checks");
        return Ok(());
    };
    let (conn, bigquery) = (checked.conn, checked.bigquery);
    let sink = match args.service.write_api {
        WriteApi::InsertAll => {
            RowSink::insert_all(bigquery, metrics.clone(), shutdown.forced.clone())
        }
        WriteApi::StorageWrite => {
            let writer = StorageWriter::connect(&bigquery, &args.bigquery).map_err(|e| {
                ConfigError::one(
                    "BIGQUERY_WRITE_API",
                    "a write path this build can use",
                    e,
                    "set BIGQUERY_WRITE_API=insert-all, or BIGQUERY_EMULATOR_HOST for the emulator",
                )
            })?;
            let touches = writer.for_touches(&bigquery);
            RowSink::epochs(
                EpochWriter::new(writer),
                EpochWriter::new(touches),
                metrics.clone(),
                shutdown.forced.clone(),
            )
        }
    };
    let dead_letter = Arc::new(
        Publisher::new(&conn, &topology.dead_letter_topic)
            .await
            .context("cannot open the dead-letter topic (run create-pubsub first)")?,
    );
    let late = Arc::new(
        Publisher::new(&conn, &topology.late_topic)
            .await
            .context("cannot open the late-clicks topic (run create-pubsub first)")?,
    );

    let options = SubscribeOptions::from_args(&args.pubsub);
    let max_unacked = (options.max_outstanding_messages as usize / 2).max(1);
    let legacy = (args.service.checkpoint_key.is_none())
        .then(|| crate::state::legacy_key(&args.gcp.project_id, &topology.click_subscription));
    // Nothing is consumed yet: the first stop signal ends a restore that waits for Redis.
    let loaded = match crate::state::load(
        &store,
        args.engine.config(),
        legacy.as_deref(),
        &shutdown.graceful,
    )
    .await
    {
        Err(e) if shutdown.graceful.is_cancelled() => {
            tracing::info!(reason = %format!("{e:#}"), "stopped while restoring the checkpoint");
            return Ok(());
        }
        loaded => loaded?,
    };
    let recovery_hold = Duration::from_secs(
        args.service
            .recovery_hold_secs
            .unwrap_or(u64::from(args.pubsub.ack_deadline_secs) + 5),
    );
    if loaded.meta.is_some() {
        let engine = &loaded.engine;
        let clean = loaded.durable.clean_shutdown;
        tracing::info!(
            clean_shutdown = clean,
            hold_secs = if clean { 0 } else { recovery_hold.as_secs() },
            checkpoint = store.name(),
            elements = loaded.elements,
            bytes = loaded.bytes,
            took_ms = loaded.took.as_millis() as u64,
            live_clicks = engine.live_clicks(),
            pending = engine.pending_checkouts(),
            watermark = ?engine.watermark().map(|w| w.to_rfc3339()),
            "restored the last checkpoint"
        );
    } else {
        tracing::info!(
            checkpoint = store.name(),
            "no checkpoint: starting with empty state"
        );
    }
    let worker = Worker::new(
        loaded,
        options.streams,
        WorkerIo {
            users,
            sink,
            late,
            dead_letter: dead_letter.clone(),
            store,
        },
        delivery_config(&args.service, max_unacked, recovery_hold),
        WorkerConfig {
            stats_interval: Duration::from_secs(args.service.stats_interval_secs.max(1)),
        },
        metrics.clone(),
        shutdown.forced.clone(),
    );

    let clicks = Subscription::start(&conn, &topology.click_subscription, options.clone())
        .await
        .context("cannot subscribe to clicks (run create-pubsub first)")?;
    let checkouts = Subscription::start(&conn, &topology.checkout_subscription, options)
        .await
        .context("cannot subscribe to checkouts (run create-pubsub first)")?;

    let (tx, rx) = mpsc::channel(4096);
    let max_future_micros = i64::try_from(args.service.max_future_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    let intake_task = |sub, kind| {
        let ctx = IntakeContext {
            kind,
            tx: tx.clone(),
            dead_letter: dead_letter.clone(),
            metrics: metrics.clone(),
            max_future_micros,
        };
        tokio::spawn(intake::run(sub, ctx, shutdown.graceful.clone()))
    };
    let click_intake = intake_task(clicks, EventKind::Click);
    let checkout_intake = intake_task(checkouts, EventKind::Checkout);
    drop(tx);
    crate::health::global().set_started();
    let probes_stop = shutdown.forced.child_token();
    checked.probes.spawn(probes_stop.clone());
    let _stop_probes = probes_stop.drop_guard();
    tracing::info!(
        clicks = %topology.click_subscription,
        checkouts = %topology.checkout_subscription,
        "streaming: first-click attribution running"
    );

    let worker_result = worker.run(rx).await;
    // Every ack handle is settled now (acked at the final checkpoint, or dropped on error and
    // so redelivered later): let the subscriptions send their pending acks (for a short while
    // only once the stop is forced).
    for task in [click_intake, checkout_intake] {
        let forced = &shutdown.forced;
        let done = crate::shutdown::unless_forced(forced, async {
            match task.await {
                Ok(sub) => sub.shutdown().await,
                Err(e) => tracing::error!(error = %e, "an intake task failed"),
            }
        });
        if done.await.is_none() {
            tracing::warn!("stop forced: not waiting any longer for a subscription to shut down");
        }
    }
    let unacked = metrics.unacked();
    if crate::shutdown::after_worker(worker_result, &shutdown.forced, unacked)? {
        tracing::info!("stopped cleanly");
    }
    Ok(())
}

/// The checkpoint's name: `--checkpoint-key`, or the project and the click subscription.
pub(crate) fn checkpoint_name(args: &RunArgs) -> String {
    args.service.checkpoint_key.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            args.gcp.project_id,
            args.pubsub.topology().click_subscription
        )
    })
}

fn delivery_config(
    service: &ServiceArgs,
    max_unacked: usize,
    recovery_hold: Duration,
) -> DeliveryConfig {
    DeliveryConfig {
        checkpoint_interval_micros: (service.checkpoint_interval_secs as i64)
            .saturating_mul(1_000_000),
        max_unacked,
        batch_rows: service.batch_rows.max(1),
        compact_min_bytes: service.compact_min_bytes,
        compact_ratio: service.compact_ratio.max(0.0),
        piece_bytes: service.compact_piece_bytes,
        recovery_hold_micros: recovery_hold.as_micros() as i64,
        two_phase_rows: service.write_api.two_phase(),
        ..DeliveryConfig::default()
    }
}
