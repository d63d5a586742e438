//! One partition's pipeline, from its subscriptions to its rows: restore the partition's
//! checkpoint, run its worker (engine and delivery core) with one intake task per
//! subscription, and stop. Everything a worker process runs per partition it owns; the
//! services it shares with the process's other partitions come in [`Shared`].
//!
//! A partition stops in one of two ways ([`Assignment`]): `stop` (the process stops, or the
//! partition is handed to another worker) is graceful: stop pulling, flush, checkpoint, ack;
//! `lost` (the lease is gone) is forced: retries give up, nothing more is acknowledged, and a
//! write already on its way is refused by the checkpoint's fence, so the partition's next
//! owner gets every unacknowledged message again (docs/design.md §7).

use std::sync::Arc;
use std::time::Duration;

use firstclick_bigquery::{BigQuery, EpochWriter, StorageWriter};
use firstclick_model::EventKind;
use firstclick_pubsub::{Connection, Publisher, SubscribeOptions, Topology};
use firstclick_redis::{CheckpointStore, UserDirectory};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::intake::{self, IntakeContext};
use crate::metrics::Metrics;
use crate::preflight::ConfigError;
use crate::run::{delivery_config, RunArgs};
use crate::sink::{RowSink, WriteApi};
use crate::worker::{LeaseLost, Worker, WorkerConfig, WorkerIo};

/// What every partition of the process shares: settings, connections, publishers, metrics.
pub(crate) struct Shared {
    /// The service's settings.
    pub(crate) args: RunArgs,
    /// The Pub/Sub connection.
    pub(crate) conn: Connection,
    /// The BigQuery client of the output table.
    pub(crate) bigquery: BigQuery,
    /// User names.
    pub(crate) users: Arc<UserDirectory>,
    /// Where refused messages and rows go.
    pub(crate) dead_letter: Arc<Publisher>,
    /// Where late clicks go.
    pub(crate) late: Arc<Publisher>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
}

/// One partition to run and how it is stopped.
pub(crate) struct Assignment {
    /// Its number (0 when the deployment is not partitioned).
    pub(crate) partition: u32,
    /// Its subscriptions (the original ones when not partitioned).
    pub(crate) topology: Topology,
    /// Its checkpoint, fenced by its lease.
    pub(crate) store: Arc<CheckpointStore>,
    /// The checkpoint's name before checkpoint names existed, when not partitioned.
    pub(crate) legacy_key: Option<String>,
    /// Another worker held the partition before (its lease token is not the first): its
    /// messages in flight there come back only when their ack deadline expires, so the
    /// watermark is held for them even after a clean hand-over.
    pub(crate) handover: bool,
    /// Graceful stop: stop pulling, flush, checkpoint, ack.
    pub(crate) stop: CancellationToken,
    /// Forced stop: the process's grace period is over, or the lease is lost.
    pub(crate) forced: CancellationToken,
}

/// How a partition's run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Stopped gracefully: everything written, checkpointed and acknowledged.
    Clean,
    /// Stopped by force: what was not written is unacknowledged and comes back.
    Forced,
}

/// Runs one partition until its stop; `Err` when it failed for good (the process then fails).
pub(crate) async fn run_partition(shared: Arc<Shared>, a: Assignment) -> anyhow::Result<Ended> {
    let args = &shared.args;
    let metrics = &shared.metrics;
    let sink = match args.service.write_api {
        WriteApi::InsertAll => {
            RowSink::insert_all(shared.bigquery.clone(), metrics.clone(), a.forced.clone())
        }
        WriteApi::StorageWrite => {
            let writer = StorageWriter::connect(&shared.bigquery, &args.bigquery).map_err(|e| {
                ConfigError::one(
                    "BIGQUERY_WRITE_API",
                    "a write path this build can use",
                    e,
                    "set BIGQUERY_WRITE_API=insert-all, or BIGQUERY_EMULATOR_HOST for the emulator",
                )
            })?;
            let touches = writer.for_touches(&shared.bigquery);
            RowSink::epochs(
                EpochWriter::new(writer),
                EpochWriter::new(touches),
                metrics.clone(),
                a.forced.clone(),
            )
        }
    };

    let options = SubscribeOptions::from_args(&args.pubsub);
    let max_unacked = (options.max_outstanding_messages as usize / 2).max(1);
    // Nothing is consumed yet: a stop ends a restore that waits for Redis.
    let loaded = match crate::state::load(
        &a.store,
        args.engine.config(),
        a.legacy_key.as_deref(),
        &a.stop,
    )
    .await
    {
        Err(e) if a.stop.is_cancelled() => {
            tracing::info!(partition = a.partition, reason = %format!("{e:#}"), "stopped while restoring the checkpoint");
            return Ok(Ended::Clean);
        }
        loaded => loaded?,
    };
    let mut loaded = loaded;
    if a.handover && loaded.meta.is_some() {
        // A clean checkpoint says every message the last owner processed is acknowledged,
        // not that nothing else was leased to it: those come back after their ack deadline.
        loaded.durable.clean_shutdown = false;
    }
    let recovery_hold = Duration::from_secs(
        args.service
            .recovery_hold_secs
            .unwrap_or(u64::from(args.pubsub.ack_deadline_secs) + 5),
    );
    if loaded.meta.is_some() {
        let engine = &loaded.engine;
        let clean = loaded.durable.clean_shutdown;
        tracing::info!(
            partition = a.partition,
            clean_shutdown = clean,
            hold_secs = if clean { 0 } else { recovery_hold.as_secs() },
            checkpoint = a.store.name(),
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
            partition = a.partition,
            checkpoint = a.store.name(),
            "no checkpoint: starting with empty state"
        );
    }
    let worker = Worker::new(
        loaded,
        options.streams,
        WorkerIo {
            users: shared.users.clone(),
            sink,
            late: shared.late.clone(),
            dead_letter: shared.dead_letter.clone(),
            store: a.store.clone(),
        },
        delivery_config(&args.service, max_unacked, recovery_hold),
        WorkerConfig {
            stats_interval: Duration::from_secs(args.service.stats_interval_secs.max(1)),
            partition: a.partition,
        },
        metrics.clone(),
        a.forced.clone(),
    );

    let topology = &a.topology;
    let subscribe = |name| crate::connect::subscribe(&shared.conn, name, &options, &a.stop);
    let Some(clicks) = subscribe(&topology.click_subscription).await? else {
        return Ok(Ended::Clean);
    };
    let Some(checkouts) = subscribe(&topology.checkout_subscription).await? else {
        return Ok(Ended::Clean);
    };

    let (tx, rx) = mpsc::channel(4096);
    let max_future_micros = i64::try_from(args.service.max_future_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    let intake_task = |sub, kind| {
        let ctx = IntakeContext {
            kind,
            tx: tx.clone(),
            dead_letter: shared.dead_letter.clone(),
            metrics: metrics.clone(),
            max_future_micros,
        };
        tokio::spawn(intake::run(sub, ctx, a.stop.clone()))
    };
    let click_intake = intake_task(clicks, EventKind::Click);
    let checkout_intake = intake_task(checkouts, EventKind::Checkout);
    drop(tx);
    tracing::info!(
        partition = a.partition,
        clicks = %topology.click_subscription,
        checkouts = %topology.checkout_subscription,
        "partition running"
    );

    let worker_result = worker.run(rx).await;
    // Every ack handle is settled now (acked at the final checkpoint, or dropped on error and
    // so redelivered later): let the subscriptions send their pending acks (for a short while
    // only once the stop is forced).
    for task in [click_intake, checkout_intake] {
        let done = crate::shutdown::unless_forced(&a.forced, async {
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
    if let Err(e) = &worker_result {
        if let Some(lost) = e.downcast_ref::<LeaseLost>() {
            tracing::warn!(partition = a.partition, reason = %lost, "partition given up: its checkpoint writes are fenced; nothing more was acknowledged");
            return Ok(Ended::Forced);
        }
    }
    match crate::shutdown::after_worker(worker_result, &a.forced, unacked)? {
        true => Ok(Ended::Clean),
        false => Ok(Ended::Forced),
    }
}
