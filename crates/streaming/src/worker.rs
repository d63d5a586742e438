//! The worker: the one task that owns the engine in the streaming service.
//!
//! It takes events from the intake tasks, feeds the engine, and every 200 ms (or when a batch
//! is full) turns final checkouts into rows: user names from Redis, then BigQuery. Acks follow
//! DESIGN §4, Flink-style: a message is acknowledged only after a checkpoint that contains its
//! effect is durable, and a checkpoint is taken only after every row emitted before it is in
//! BigQuery. So a crash at any moment loses nothing: what was not acked is redelivered, and the
//! engine absorbs the duplicates (click and checkout ids are part of the checkpoint).
//!
//! While Redis or BigQuery is down the worker waits with backoff: its input channel fills, the
//! intake tasks stop, Pub/Sub flow control stops pulling, and messages stay unacked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use firstclick_bigquery::BigQuery;
use firstclick_engine::{
    CheckoutOutcome, ClickOutcome, Engine, EngineConfig, EngineSnapshot, FinalCheckout,
};
use firstclick_model::{AttributedRow, UserId};
use firstclick_pubsub::{AckHandle, OutgoingMessage, Publisher};
use firstclick_redis::{CheckpointStore, UserDirectory};
use firstclick_replay::pipeline::wall_clock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::intake::Input;
use crate::metrics::Metrics;
use crate::outage::{retry, Outage};

/// How often the worker looks at the clock (idle watermark, row flushes, checkpoints).
const TICK: Duration = Duration::from_millis(200);

/// The worker's knobs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Longest time between two checkpoints while there is something to checkpoint.
    pub checkpoint_interval: Duration,
    /// Checkpoint as soon as this many messages wait for their ack (keep it under the
    /// subscriptions' flow-control limit, or pulling stalls until the next interval).
    pub max_unacked: usize,
    /// Rows per BigQuery flush at most (more are flushed in several requests).
    pub batch_rows: usize,
    /// How often the stats line is logged.
    pub stats_interval: Duration,
    /// After restoring a checkpoint that was not written by a clean shutdown, how long the
    /// watermark stays still so that the crashed worker's in-flight messages come back in time.
    pub recovery_hold: Duration,
}

/// What is stored in Redis at each checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    /// Format version.
    version: u32,
    /// Written by a graceful shutdown (every message acknowledged, nothing in flight).
    clean_shutdown: bool,
    /// The engine's whole state.
    engine: EngineSnapshot,
}

/// The services the worker writes to.
pub struct WorkerIo {
    /// User names.
    pub users: Arc<UserDirectory>,
    /// The output table.
    pub bigquery: BigQuery,
    /// Late clicks go here.
    pub late: Arc<Publisher>,
    /// Rows BigQuery refuses for good go here.
    pub dead_letter: Arc<Publisher>,
    /// Checkpoints.
    pub store: CheckpointStore,
}

/// See the module documentation.
pub struct Worker {
    engine: Engine,
    io: WorkerIo,
    cfg: WorkerConfig,
    metrics: Arc<Metrics>,
    forced: CancellationToken,
    unacked: Vec<AckHandle>,
    finals: Vec<FinalCheckout>,
    dirty: bool,
    clean_shutdown: bool,
    started: Instant,
    last_checkpoint: Instant,
    last_stats: Instant,
}

impl Worker {
    /// Loads the last checkpoint (if any) and builds the worker. `forced` aborts waits for
    /// services that are down.
    pub async fn restore(
        engine_config: EngineConfig,
        click_streams: usize,
        io: WorkerIo,
        cfg: WorkerConfig,
        metrics: Arc<Metrics>,
        forced: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = &io.store;
        let saved = retry(
            "Redis (checkpoint)",
            &forced,
            |e: &firstclick_redis::RedisError| e.is_transient(),
            || store.load(),
        )
        .await
        .context("cannot read the last checkpoint")?;
        let engine = match saved {
            None => {
                tracing::info!(
                    key = store.key(),
                    "no checkpoint: starting with empty state"
                );
                Engine::new(engine_config)
            }
            Some(bytes) => {
                let checkpoint: Checkpoint = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "the checkpoint at Redis key {} is not a firstclick engine snapshot; \
                         delete the key to start afresh (unacknowledged messages are redelivered)",
                        store.key()
                    )
                })?;
                let clean = checkpoint.clean_shutdown;
                let mut snapshot = checkpoint.engine;
                if snapshot.config != engine_config {
                    tracing::warn!(
                        saved = ?snapshot.config,
                        now = ?engine_config,
                        "the checkpoint was taken with other engine settings; continuing with the new ones"
                    );
                    snapshot.config = engine_config;
                }
                let mut engine = Engine::restore(snapshot);
                if !clean {
                    engine.hold_watermark_until(cfg.recovery_hold.as_micros() as i64);
                }
                tracing::info!(
                    clean_shutdown = clean,
                    hold_secs = if clean { 0 } else { cfg.recovery_hold.as_secs() },
                    key = store.key(),
                    bytes = bytes.len(),
                    live_clicks = engine.live_clicks(),
                    pending = engine.pending_checkouts(),
                    watermark = ?engine.watermark().map(|w| w.to_rfc3339()),
                    "restored the last checkpoint"
                );
                engine
            }
        };
        let mut engine = engine;
        engine.expect_sources(click_streams);
        let now = Instant::now();
        Ok(Worker {
            engine,
            io,
            cfg,
            metrics,
            forced,
            unacked: Vec::new(),
            finals: Vec::new(),
            dirty: false,
            clean_shutdown: false,
            started: now,
            last_checkpoint: now,
            last_stats: now,
        })
    }

    /// Runs until the input channel closes (the intake tasks stop on a graceful shutdown), then
    /// flushes, checkpoints and acknowledges everything.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = tick.tick() => self.on_tick().await?,
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input).await?,
                    None => break,
                },
            }
        }
        self.clean_shutdown = true;
        self.checkpoint().await?;
        tracing::info!("{}", self.metrics.line());
        Ok(())
    }

    async fn on_input(&mut self, input: Input) -> anyhow::Result<()> {
        self.dirty = true;
        match input {
            Input::Click {
                click,
                data,
                stream,
                ack,
            } => {
                let watermark = self.engine.watermark();
                match self.engine.on_click_from(stream, click) {
                    ClickOutcome::Stored => {}
                    ClickOutcome::Duplicate => Metrics::add(&self.metrics.duplicates, 1),
                    ClickOutcome::Late { stored } => {
                        Metrics::add(&self.metrics.late_clicks, 1);
                        let msg = OutgoingMessage::new(data)
                            .with_attribute(
                                "reason",
                                "arrived after the watermark passed its event time",
                            )
                            .with_attribute(
                                "watermark",
                                watermark.map(|w| w.to_rfc3339()).unwrap_or_default(),
                            )
                            .with_attribute("kept_for_pending", stored.to_string());
                        // The late output is informational (the click itself is in state and
                        // acked with the next checkpoint): a failed publish is logged only.
                        let fut = self.io.late.publish(msg);
                        tokio::spawn(async move {
                            if let Err(e) = fut.await {
                                tracing::warn!(error = %e, "cannot publish a late click");
                            }
                        });
                    }
                }
                self.unacked.push(ack);
            }
            Input::Alive { stream } => {
                self.engine.source_alive(stream);
                return Ok(());
            }
            Input::Checkout { checkout, ack } => {
                match self.engine.on_checkout(checkout) {
                    CheckoutOutcome::Pending => {}
                    CheckoutOutcome::Duplicate => Metrics::add(&self.metrics.duplicates, 1),
                    CheckoutOutcome::Late => Metrics::add(&self.metrics.late_checkouts, 1),
                }
                self.unacked.push(ack);
            }
        }
        self.engine.drain_final(&mut self.finals);
        if self.finals.len() >= self.cfg.batch_rows {
            self.flush_rows().await?;
        }
        if self.unacked.len() >= self.cfg.max_unacked {
            self.checkpoint().await?;
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        self.engine.tick(self.started.elapsed().as_micros() as i64);
        if self.engine.drain_final(&mut self.finals) > 0 {
            self.dirty = true;
        }
        if !self.finals.is_empty() {
            self.flush_rows().await?;
        }
        if self.dirty && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval {
            self.checkpoint().await?;
        }
        self.update_gauges();
        if self.last_stats.elapsed() >= self.cfg.stats_interval {
            self.last_stats = Instant::now();
            tracing::info!("{}", self.metrics.line());
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        Metrics::set(&m.live_clicks, self.engine.live_clicks() as u64);
        Metrics::set(&m.pending_checkouts, self.engine.pending_checkouts() as u64);
        Metrics::set(&m.unacked, self.unacked.len() as u64);
        if let Some(w) = self.engine.watermark() {
            m.watermark_micros.store(w.as_micros(), Ordering::Relaxed);
            let lag = (wall_clock().as_micros() - w.as_micros()) / 1000;
            m.watermark_lag_ms.store(lag, Ordering::Relaxed);
        }
    }

    /// Writes the rows of every final checkout: names from Redis, then BigQuery, retrying
    /// while either is down. Rows BigQuery refuses for good are dead-lettered.
    async fn flush_rows(&mut self) -> anyhow::Result<()> {
        if self.finals.is_empty() {
            return Ok(());
        }
        let ids: Vec<UserId> = self
            .finals
            .iter()
            .map(|f| f.checkout.user_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let users = self.io.users.clone();
        let names: HashMap<UserId, Option<String>> = retry(
            "Redis",
            &self.forced,
            |e: &firstclick_redis::RedisError| e.is_transient(),
            || users.names(&ids),
        )
        .await
        .context("cannot look up user names")?;
        let now = wall_clock();
        let rows: Vec<AttributedRow> = self
            .finals
            .drain(..)
            .map(|f| {
                let name = names.get(&f.checkout.user_id).cloned().flatten();
                f.into_row(name, now)
            })
            .collect();
        self.insert(rows).await
    }

    async fn insert(&mut self, mut rows: Vec<AttributedRow>) -> anyhow::Result<()> {
        let mut outage = Outage::new("BigQuery");
        while !rows.is_empty() {
            let started = Instant::now();
            let result = self.io.bigquery.insert_rows(&rows).await;
            Metrics::set(
                &self.metrics.last_insert_micros,
                started.elapsed().as_micros() as u64,
            );
            let (report, failed_from) = match result {
                Ok(report) => (report, None),
                Err(e) if e.is_transient() => {
                    outage.failed(&e);
                    let from = e.done().attempted;
                    (e.done().clone(), Some(from))
                }
                Err(e) => bail!(
                    "BigQuery refuses the rows: {e}. Fix the table or the credentials (see \
                     create-bq-table); nothing unwritten was acknowledged"
                ),
            };
            let mut retry_rows = Vec::new();
            let mut taken = vec![false; rows.len()];
            for r in report.permanent() {
                if let Some(row) = rows.get(r.index) {
                    self.dead_letter_row(row, &r.to_string()).await?;
                    taken[r.index] = true;
                }
            }
            for r in report.retryable() {
                taken[r.index] = true;
                if let Some(row) = rows.get(r.index) {
                    retry_rows.push(row.clone());
                }
            }
            let handled = failed_from.unwrap_or(rows.len());
            let written = (0..handled).filter(|i| !taken[*i]).count() as u64;
            let attributed = (0..handled)
                .filter(|i| !taken[*i] && rows[*i].click.is_some())
                .count() as u64;
            Metrics::add(&self.metrics.rows_written, written);
            Metrics::add(&self.metrics.rows_attributed, attributed);
            let mut rest: Vec<AttributedRow> = rows.drain(..).skip(handled).collect();
            retry_rows.append(&mut rest);
            rows = retry_rows;
            if rows.is_empty() {
                outage.recovered();
            } else {
                if failed_from.is_none() {
                    outage.failed(&format!("{} rows refused for a passing reason", rows.len()));
                }
                if !outage.wait(&self.forced).await {
                    bail!("stopped while BigQuery was down; {} rows not written (their messages are not acknowledged)", rows.len());
                }
            }
        }
        Ok(())
    }

    async fn dead_letter_row(&self, row: &AttributedRow, reason: &str) -> anyhow::Result<()> {
        Metrics::add(&self.metrics.rows_rejected, 1);
        tracing::error!(checkout_id = %row.checkout.checkout_id, reason, "BigQuery refused a row: dead-lettered");
        let json = row.to_json();
        let publisher = self.io.dead_letter.clone();
        retry(
            "Pub/Sub (dead letters)",
            &self.forced,
            |_e: &firstclick_pubsub::PubSubError| true,
            || {
                publisher.publish(
                    OutgoingMessage::new(json.clone().into_bytes())
                        .with_attribute("reason", reason)
                        .with_attribute("stream", "row"),
                )
            },
        )
        .await
        .context("cannot dead-letter a refused row")?;
        Ok(())
    }

    /// Flushes rows, writes the engine's snapshot, then acknowledges every message taken in
    /// since the previous checkpoint.
    async fn checkpoint(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.flush_rows().await?;
        let bytes = serde_json::to_vec(&Checkpoint {
            version: 1,
            clean_shutdown: self.clean_shutdown,
            engine: self.engine.snapshot(),
        })
        .context("cannot serialize the engine snapshot")?;
        let store = &self.io.store;
        retry(
            "Redis (checkpoint)",
            &self.forced,
            |e: &firstclick_redis::RedisError| e.is_transient(),
            || store.save(&bytes),
        )
        .await
        .context("cannot write the checkpoint; its messages stay unacknowledged")?;
        for ack in self.unacked.drain(..) {
            ack.ack();
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Metrics::add(&self.metrics.checkpoints, 1);
        Metrics::set(
            &self.metrics.last_checkpoint_micros,
            started.elapsed().as_micros() as u64,
        );
        Metrics::set(&self.metrics.last_checkpoint_bytes, bytes.len() as u64);
        self.update_gauges();
        Ok(())
    }
}
