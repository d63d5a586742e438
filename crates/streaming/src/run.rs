//! The streaming service: connects Pub/Sub, Redis and BigQuery, agrees on the partition layout,
//! starts the routers (P > 1) and the lease loop (`crate::owner`), which runs each partition it
//! owns (`crate::runner`: restore, intake, worker), and stops gracefully on SIGTERM or SIGINT
//! (stop pulling, finish in-flight work, flush, checkpoint, ack, give the leases back, exit 0).
//! Before anything is consumed or restored, `crate::preflight` checks every dependency; a stop
//! that the grace period forces is `crate::shutdown`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use firstclick_bigquery::BigQueryArgs;
use firstclick_cli::GcpArgs;
use firstclick_delivery::DeliveryConfig;
use firstclick_model::EventKind;
use firstclick_partition::lease::LeaseConfig;
use firstclick_pubsub::{PubSubArgs, SubscribeOptions, Subscription, Topology};
use firstclick_redis::{
    partition_checkpoint_name, CheckpointStore, LeaseStore, RedisArgs, UserDirectory,
};

use crate::args::EngineArgs;
use crate::metrics::Metrics;
use crate::owner::Owner;
use crate::preflight::ConfigError;
use crate::router::Router;
use crate::runner::Shared;
use crate::shutdown::Shutdown;
use crate::sink::WriteApi;

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
    /// This worker's name among the workers of a deployment (leases name their owner)
    /// [default: host name, process id and a random suffix].
    #[arg(long = "worker-id", env = "WORKER_ID")]
    pub(crate) worker_id: Option<String>,
    /// Seconds a partition's lease lasts without renewal: a worker that died or hangs loses
    /// its partitions this long after its last renewal (renewed every third of it).
    #[arg(long = "lease-ttl-secs", env = "LEASE_TTL_SECS", default_value_t = 10)]
    pub(crate) lease_ttl_secs: u64,
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
    // The start-up checks read the (first) partition's checkpoint meta.
    let first = partition_checkpoint_name(&checkpoint_name(&args), 0, topology.partitions);
    let store = Arc::new(CheckpointStore::new(&args.redis, first).map_err(bad_redis)?);
    let Some(checked) =
        crate::preflight::check(&args, users.clone(), store.clone(), &shutdown.graceful).await?
    else {
        tracing::info!("stopped during the start-up checks");
        return Ok(());
    };
    let (conn, bigquery) = (checked.conn, checked.bigquery);
    let stop = &shutdown.graceful;
    let dead_letter = crate::connect::publisher(
        &conn,
        &topology.dead_letter_topic,
        "the dead-letter topic",
        "run create-pubsub first",
        stop,
    );
    let Some(dead_letter) = dead_letter.await? else {
        return Ok(());
    };
    let late = crate::connect::publisher(
        &conn,
        &topology.late_topic,
        "the late-clicks topic",
        "run create-pubsub first",
        stop,
    );
    let Some(late) = late.await? else {
        return Ok(());
    };
    let (dead_letter, late) = (Arc::new(dead_letter), Arc::new(late));

    // Partitions and leases (docs/design.md §7): every worker agrees on P, owns partitions
    // under leases, and with P > 1 routes the original subscriptions to the partition topics.
    let name = checkpoint_name(&args);
    let worker_id = args
        .service
        .worker_id
        .clone()
        .unwrap_or_else(default_worker_id);
    let ttl = Duration::from_secs(args.service.lease_ttl_secs.max(3));
    let leases = LeaseStore::new(
        &args.redis,
        name.clone(),
        topology.partitions,
        worker_id.clone(),
        ttl.as_millis() as u64,
    )
    .map_err(bad_redis)?;
    match leases.record_layout().await {
        Ok(()) => {}
        Err(e @ firstclick_redis::RedisError::LayoutMismatch { .. }) => {
            return Err(ConfigError::one(
                "PARTITIONS",
                "the number of partitions this deployment's state was made with",
                e,
                "start every worker with the PARTITIONS the first one used (or reset the \
                 deployment's state with `streaming state reset` and start again)",
            )
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read the partition layout")),
    }
    let legacy = (args.service.checkpoint_key.is_none())
        .then(|| crate::state::legacy_key(&args.gcp.project_id, &topology.click_subscription));
    let shared = Arc::new(Shared {
        args: args.clone(),
        conn: conn.clone(),
        bigquery,
        users,
        dead_letter: dead_letter.clone(),
        late,
        metrics: metrics.clone(),
    });
    let routers = if topology.partitions > 1 {
        Some(start_routers(&shared, &topology, &shutdown).await?)
    } else {
        None
    };
    crate::health::global().set_started();
    let probes_stop = shutdown.forced.child_token();
    checked.probes.spawn(probes_stop.clone());
    let _stop_probes = probes_stop.drop_guard();
    tracing::info!(
        worker = %worker_id,
        partitions = topology.partitions,
        lease_ttl_secs = ttl.as_secs(),
        "streaming: first-click attribution running"
    );
    let owner = Owner::new(
        shared.clone(),
        leases,
        LeaseConfig::new(topology.partitions, ttl.as_millis() as u64),
        &worker_id,
        topology,
        name,
        legacy,
    );
    let owned = owner.run(&shutdown).await;
    if let Some(routers) = routers {
        for task in routers {
            let done = crate::shutdown::unless_forced(&shutdown.forced, async {
                match task.await {
                    Ok(sub) => sub.shutdown().await,
                    Err(e) => tracing::error!(error = %e, "a router task failed"),
                }
            });
            if done.await.is_none() {
                tracing::warn!("stop forced: not waiting any longer for a router to shut down");
            }
        }
    }
    owned?;
    if shutdown.forced.is_cancelled() {
        tracing::warn!("stopped by force: what was not written is unacknowledged and comes back");
    } else {
        tracing::info!("stopped cleanly");
    }
    Ok(())
}

/// This worker's id when `--worker-id` is not given: the host name, the process id and a
/// random suffix (a restarted container keeps its host name).
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Starts the routers of a partitioned deployment: one task per original subscription, each
/// stopping with the graceful stop.
async fn start_routers(
    shared: &Arc<Shared>,
    topology: &Topology,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Subscription>>> {
    let parts = topology.partition_topologies();
    let stop = &shutdown.graceful;
    let fix = format!(
        "run create-pubsub --partitions {} first",
        topology.partitions
    );
    let mut tasks = Vec::new();
    for (kind, subscription) in [
        (EventKind::Click, &topology.click_subscription),
        (EventKind::Checkout, &topology.checkout_subscription),
    ] {
        let mut publishers = Vec::with_capacity(parts.len());
        for part in &parts {
            let topic = match kind {
                EventKind::Click => &part.click_topic,
                EventKind::Checkout => &part.checkout_topic,
            };
            let opened =
                crate::connect::publisher(&shared.conn, topic, "the partition topic", &fix, stop)
                    .await?;
            let Some(publisher) = opened else {
                // Stopped while Pub/Sub did not answer: the owner loop sees the same stop.
                return Ok(tasks);
            };
            publishers.push(publisher);
        }
        let options = SubscribeOptions::from_args(&shared.args.pubsub);
        let Some(sub) =
            crate::connect::subscribe(&shared.conn, subscription, &options, stop).await?
        else {
            // Stopped while Pub/Sub did not answer: the owner loop sees the same stop.
            return Ok(tasks);
        };
        let router = Router {
            kind,
            partitions: Arc::new(publishers),
            dead_letter: shared.dead_letter.clone(),
            metrics: shared.metrics.clone(),
        };
        tasks.push(tokio::spawn(router.run(sub, shutdown.graceful.clone())));
    }
    Ok(tasks)
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

pub(crate) fn delivery_config(
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
