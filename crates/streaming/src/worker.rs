//! The worker: the thin async driver of the delivery core ([`firstclick_delivery::Delivery`]),
//! the one task that owns the engine in the streaming service.
//!
//! It feeds the core the events of the intake tasks and a tick every 200 ms, and runs the
//! commands the core returns: rows to the sink ([`RowSink`]: names from Redis first; with
//! two-phase rows also its prepare and commit), changelog deltas to Redis, acks to Pub/Sub,
//! late clicks to their topic. Base pieces of a compaction go to a
//! background task ([`base_lane`]) so that the event loop never waits for them. The rules of
//! what may be acknowledged when live in the core (docs/design.md §4, §6), not here.
//!
//! While Redis or BigQuery is down the worker waits with backoff: its input channel fills, the
//! intake tasks stop, Pub/Sub flow control stops pulling, and messages stay unacked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use firstclick_delivery::{Command, Delivery, DeliveryConfig};
use firstclick_engine::{CheckoutOutcome, ClickOutcome, FinalCheckout};
use firstclick_model::time::wall_clock;
use firstclick_model::{AttributedRow, EventTime, Id, TouchRow, UserId};
use firstclick_pubsub::{AckHandle, OutgoingMessage, Publisher};
use firstclick_redis::{CheckpointStore, UserDirectory};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::intake::Input;
use crate::metrics::{Metrics, RedisCall, StateGauges};
use crate::outage::retry;
use crate::sink::RowSink;
use crate::state::Loaded;

/// How often the worker looks at the clock (idle watermark, row flushes, checkpoints).
const TICK: Duration = Duration::from_millis(200);

type Core = Delivery<AckHandle, Bytes>;

/// The worker's knobs besides the delivery core's.
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    /// How often the stats line is logged.
    pub(crate) stats_interval: Duration,
    /// The partition this worker runs (0 when the deployment is not partitioned).
    pub(crate) partition: u32,
}

/// The services the worker writes to.
pub(crate) struct WorkerIo {
    /// User names.
    pub(crate) users: Arc<UserDirectory>,
    /// The output table.
    pub(crate) sink: RowSink,
    /// Late clicks go here.
    pub(crate) late: Arc<Publisher>,
    /// Rows BigQuery refuses for good go here.
    pub(crate) dead_letter: Arc<Publisher>,
    /// Checkpoints.
    pub(crate) store: Arc<CheckpointStore>,
}

/// A base-lane result reported back to the core.
enum BaseDone {
    Piece(u64),
    Committed(u64),
}

/// See the module documentation.
pub(crate) struct Worker {
    core: Core,
    io: WorkerIo,
    cfg: WorkerConfig,
    metrics: Arc<Metrics>,
    forced: CancellationToken,
    base_tx: mpsc::UnboundedSender<Command<AckHandle, Bytes>>,
    base_done: mpsc::UnboundedReceiver<anyhow::Result<BaseDone>>,
    started: Instant,
    /// Publish times (µs since the epoch) of the checkouts that wait for their row, for the
    /// publish → row latency; then of the rows written per epoch and per prepared transaction
    /// until they are visible.
    published: HashMap<Id, i64>,
    written_at: HashMap<u64, Vec<i64>>,
    prepared_at: HashMap<Vec<u8>, Vec<i64>>,
}

impl Worker {
    /// Builds the worker over a restored engine. `forced` aborts waits for services that are
    /// down.
    pub(crate) fn new(
        loaded: Loaded,
        click_streams: usize,
        io: WorkerIo,
        delivery: DeliveryConfig,
        cfg: WorkerConfig,
        metrics: Arc<Metrics>,
        forced: CancellationToken,
    ) -> Self {
        let Loaded {
            mut engine,
            durable,
            ..
        } = loaded;
        engine.expect_streams(click_streams);
        let started = Instant::now();
        let core = Delivery::new(engine, durable, delivery, 0);
        let (base_tx, base_rx) = mpsc::unbounded_channel();
        let (done_tx, base_done) = mpsc::unbounded_channel();
        tokio::spawn(base_lane(
            io.store.clone(),
            base_rx,
            done_tx,
            metrics.clone(),
            forced.clone(),
        ));
        Worker {
            core,
            io,
            cfg,
            metrics,
            forced,
            base_tx,
            base_done,
            started,
            published: HashMap::new(),
            written_at: HashMap::new(),
            prepared_at: HashMap::new(),
        }
    }

    fn now(&self) -> i64 {
        self.started.elapsed().as_micros() as i64
    }

    /// Runs until the input channel closes (the intake tasks stop on a graceful shutdown), then
    /// flushes, checkpoints and acknowledges everything.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        let result = self.run_until_closed(&mut rx).await;
        if result.is_err() {
            // What a forced stop leaves unacknowledged (redelivered later), for the exit log.
            let held = self.core.unacked() + rx.len();
            self.metrics.set_unacked(self.cfg.partition, held as u64);
        }
        result
    }

    async fn run_until_closed(&mut self, rx: &mut mpsc::Receiver<Input>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = tick.tick() => {
                    let step = Instant::now();
                    self.core.tick(self.now(), wall_clock().as_micros());
                    self.stepped(step);
                    self.run_commands().await?;
                    self.on_tick();
                }
                done = self.base_done.recv() => match done {
                    Some(Ok(BaseDone::Piece(generation))) => self.core.piece_written(generation),
                    Some(Ok(BaseDone::Committed(generation))) => {
                        self.core.base_committed(generation);
                        self.metrics.compaction();
                        tracing::info!(
                            generation,
                            base_bytes = self.core.base_bytes(),
                            "compaction: new base snapshot committed, changelog trimmed"
                        );
                        self.run_commands().await?;
                    }
                    Some(Err(e)) => return Err(e),
                    None => bail!("the checkpoint writer task stopped"),
                },
                input = rx.recv() => match input {
                    Some(input) => {
                        let step = Instant::now();
                        self.on_input(input);
                        self.stepped(step);
                        self.run_commands().await?;
                    }
                    None => break,
                },
            }
        }
        self.core.shutdown();
        self.run_commands().await?;
        if !self.core.settled() {
            bail!("internal error: the last checkpoint did not settle");
        }
        tracing::info!("{}", self.metrics.line());
        Ok(())
    }

    fn stepped(&self, since: Instant) {
        self.metrics.step_took(since.elapsed().as_micros() as u64);
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Click {
                click,
                data,
                stream,
                ack,
            } => {
                // Duplicates and late clicks are in the engine's statistics, which the
                // metrics export as they are; each click's fate is traced for debugging (its
                // id copied only when the trace is on: this runs for every click).
                let traced = tracing::enabled!(tracing::Level::TRACE)
                    .then(|| (click.click_id.clone(), click.user_id, click.time));
                let outcome: ClickOutcome = self.core.on_click(stream, click, ack, data);
                if let Some((click_id, user, time)) = traced {
                    tracing::trace!(
                        partition = self.cfg.partition,
                        %click_id,
                        user,
                        time = %time.to_rfc3339(),
                        ?outcome,
                        watermark = ?self.core.engine().watermark().map(|w| w.to_rfc3339()),
                        "click taken in"
                    );
                }
            }
            Input::Alive { stream } => self.core.on_alive(stream),
            Input::Checkout {
                checkout,
                ack,
                published,
            } => {
                let id = checkout.checkout_id.clone();
                match self.core.on_checkout(checkout, ack) {
                    CheckoutOutcome::Pending => {
                        if let Some(t) =
                            published.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        {
                            self.published.insert(id, t.as_micros() as i64);
                        }
                    }
                    CheckoutOutcome::Duplicate | CheckoutOutcome::Late => {}
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.update_gauges();
        // The line sums every partition of the process: one partition logs it per interval.
        if self.metrics.stats_due(self.cfg.stats_interval) {
            self.metrics.roll_ages();
            tracing::info!("{}", self.metrics.line());
        }
    }

    fn update_gauges(&self) {
        let engine = self.core.engine();
        self.metrics.set_partition(
            self.cfg.partition,
            engine.stats(),
            &StateGauges {
                live_clicks: engine.live_clicks() as u64,
                pending_checkouts: engine.pending_checkouts() as u64,
                unacked: self.core.unacked() as u64,
                base_bytes: self.core.base_bytes(),
                changelog_bytes: self.core.log_bytes(),
                watermark_micros: engine.watermark().map(|w| w.as_micros()),
                now_micros: wall_clock().as_micros(),
            },
        );
    }

    /// Runs every command the core has given out, reporting each result back (which may give
    /// out more).
    async fn run_commands(&mut self) -> anyhow::Result<()> {
        while let Some(command) = self.core.poll() {
            match command {
                Command::WriteRows {
                    batch,
                    epoch,
                    checkouts,
                } => {
                    self.write_rows(epoch, checkouts).await?;
                    self.core.rows_written(batch);
                }
                Command::PrepareRows { epoch } => {
                    let transaction = self.io.sink.prepare(epoch).await?;
                    let times = self.written_at.remove(&epoch).unwrap_or_default();
                    if let Some(t) = &transaction {
                        self.prepared_at.insert(t.clone(), times);
                    }
                    self.core.rows_prepared(epoch, transaction);
                }
                Command::CommitRows { transaction } => {
                    self.io.sink.commit(transaction.clone()).await?;
                    let times = self.prepared_at.remove(&transaction).unwrap_or_default();
                    self.observe_visible(&times);
                    self.core.rows_committed();
                }
                Command::AppendLog {
                    first_seq,
                    elements,
                } => {
                    let started = Instant::now();
                    let bytes: u64 = elements.iter().map(|e| e.len() as u64).sum();
                    let store = &self.io.store;
                    retry(
                        "Redis (checkpoint)",
                        &self.forced,
                        |e: &firstclick_redis::RedisError| e.is_transient(),
                        || store.append_log(&elements),
                    )
                    .await
                    .map_err(|e| checkpoint_error(e, "cannot append to the checkpoint's changelog; its messages stay unacknowledged"))?;
                    self.core.log_appended(first_seq);
                    self.metrics
                        .checkpoint(started.elapsed().as_secs_f64(), bytes);
                }
                Command::Ack(tokens) => {
                    for ack in tokens {
                        ack.ack();
                    }
                }
                Command::PublishLate {
                    payload,
                    watermark,
                    stored,
                } => self.publish_late(payload, watermark, stored),
                base => {
                    if let Command::StartBase { generation } = &base {
                        tracing::info!(
                            generation,
                            changelog_bytes = self.core.log_bytes(),
                            base_bytes = self.core.base_bytes(),
                            "compaction started: writing a new base snapshot"
                        );
                    }
                    if self.base_tx.send(base).is_err() {
                        bail!("the checkpoint writer task stopped");
                    }
                }
            }
        }
        Ok(())
    }

    fn publish_late(&self, data: Bytes, watermark: Option<EventTime>, stored: bool) {
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
        // The late output is informational (the click itself is in state and acked with its
        // epoch): a failed publish is logged only.
        let fut = self.io.late.publish(msg);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(error = %e, "cannot publish a late click");
            }
        });
    }

    /// Writes the rows of final checkouts as part of `epoch`: names from Redis, then the sink,
    /// retrying while either is down. Rows BigQuery refuses for good are dead-lettered.
    async fn write_rows(&mut self, epoch: u64, finals: Vec<FinalCheckout>) -> anyhow::Result<()> {
        if finals.is_empty() {
            return Ok(());
        }
        let ids: Vec<UserId> = finals
            .iter()
            .map(|f| f.checkout.user_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let users = self.io.users.clone();
        let lookup = Instant::now();
        let names: HashMap<UserId, Option<String>> = retry(
            "Redis",
            &self.forced,
            |e: &firstclick_redis::RedisError| e.is_transient(),
            || users.names(&ids),
        )
        .await
        .context("cannot look up user names")?;
        self.metrics
            .redis_call(RedisCall::UserLookup, lookup.elapsed().as_secs_f64());
        let now = wall_clock();
        let mut rows: Vec<AttributedRow> = Vec::with_capacity(finals.len());
        let mut touches: Vec<TouchRow> = Vec::new();
        for f in finals {
            let name = names.get(&f.checkout.user_id).cloned().flatten();
            let (r, t) = f.into_rows(name, now);
            rows.extend(r);
            touches.extend(t);
        }
        let times: Vec<i64> = rows
            .iter()
            .filter_map(|r| self.published.remove(&r.checkout.checkout_id))
            .collect();
        let refused = self.io.sink.write(epoch, rows, touches).await?;
        for r in refused.rows {
            let id = r.row.checkout.checkout_id.to_string();
            self.dead_letter("row", &id, r.row.to_json(), &r.reason)
                .await?;
        }
        for t in refused.touches {
            let id = t.row.checkout_id.to_string();
            self.dead_letter("touch", &id, t.row.to_json(), &t.reason)
                .await?;
        }
        if self.core.config().two_phase_rows {
            self.written_at.entry(epoch).or_default().extend(times);
        } else {
            self.observe_visible(&times);
        }
        Ok(())
    }

    /// Rows published at `times` (µs since the epoch) are visible now.
    fn observe_visible(&self, times: &[i64]) {
        let now = wall_clock().as_micros();
        for t in times {
            self.metrics.row_visible_after(now - t);
        }
    }

    /// Publishes a row (`stream` = `row`) or touch row (`touch`) BigQuery refused for good to
    /// the dead-letter topic, retrying until it is out.
    async fn dead_letter(
        &self,
        stream: &'static str,
        checkout_id: &str,
        json: String,
        reason: &str,
    ) -> anyhow::Result<()> {
        self.metrics.row_rejected();
        tracing::error!(
            checkout_id,
            stream,
            reason,
            "BigQuery refused a row: dead-lettered"
        );
        let publisher = self.io.dead_letter.clone();
        retry(
            "Pub/Sub (dead letters)",
            &self.forced,
            |_e: &firstclick_pubsub::PubSubError| true,
            || {
                publisher.publish(
                    OutgoingMessage::new(json.clone().into_bytes())
                        .with_attribute("reason", reason)
                        .with_attribute("stream", stream),
                )
            },
        )
        .await
        .context("cannot dead-letter a refused row")?;
        Ok(())
    }
}

/// Writes the base pieces of compactions in order, off the event loop, and reports back.
async fn base_lane(
    store: Arc<CheckpointStore>,
    mut jobs: mpsc::UnboundedReceiver<Command<AckHandle, Bytes>>,
    done: mpsc::UnboundedSender<anyhow::Result<BaseDone>>,
    metrics: Arc<Metrics>,
    forced: CancellationToken,
) {
    let transient = |e: &firstclick_redis::RedisError| e.is_transient();
    while let Some(job) = jobs.recv().await {
        let store = &store;
        let result = match job {
            Command::StartBase { generation } => {
                retry("Redis (checkpoint base)", &forced, transient, || {
                    store.drop_base(generation)
                })
                .await
                .map(|_| None)
            }
            Command::WriteBasePiece { generation, piece } => {
                metrics.base_piece_written(piece.len() as u64);
                retry("Redis (checkpoint base)", &forced, transient, || {
                    store.append_base(generation, &piece)
                })
                .await
                .map(|_| Some(BaseDone::Piece(generation)))
            }
            Command::CommitBase {
                generation,
                base_from_seq,
                pieces,
                bytes,
            } => {
                let now_ms = (wall_clock().as_micros() / 1000) as u64;
                retry("Redis (checkpoint base)", &forced, transient, || {
                    store.commit_base(generation, base_from_seq, pieces, bytes, now_ms)
                })
                .await
                .map(|_| Some(BaseDone::Committed(generation)))
            }
            Command::DropBase { generation } => {
                retry("Redis (checkpoint base)", &forced, transient, || {
                    store.drop_base(generation)
                })
                .await
                .map(|_| None)
            }
            _ => Ok(None),
        };
        let report = match result {
            Ok(None) => continue,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(checkpoint_error(e, "cannot write the checkpoint's base")),
        };
        if done.send(report).is_err() {
            return;
        }
    }
}

/// The partition's lease is gone: a checkpoint write was refused by its fence. Not a failure
/// of the process: the partition stops, and its next owner gets the unacknowledged messages.
#[derive(Debug, thiserror::Error)]
#[error("the lease of this partition is gone (another worker owns it now): {0}")]
pub(crate) struct LeaseLost(String);

/// A checkpoint write that gave up: [`LeaseLost`] when its fence refused it, else the error
/// with `what` as context.
fn checkpoint_error(
    e: crate::outage::GaveUp<firstclick_redis::RedisError>,
    what: &'static str,
) -> anyhow::Error {
    match &e {
        crate::outage::GaveUp::Permanent { error, .. } if error.is_fenced() => {
            anyhow::Error::new(LeaseLost(error.to_string()))
        }
        _ => anyhow::Error::new(e).context(what),
    }
}
