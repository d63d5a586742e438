//! [`Delivery`]: the engine plus the bookkeeping of what is written, durable and acknowledged.
//! See the crate documentation for the rules.

use std::collections::VecDeque;

use firstclick_checkpoint::{rows_commit_element, ChangeLog, PieceWriter};
use firstclick_engine::{CheckoutOutcome, ClickOutcome, Engine, FinalCheckout};
use firstclick_model::{Checkout, Click, EventTime};

use crate::command::Command;

/// The core's knobs.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Longest time between two checkpoints while something changed, µs of processing time.
    pub checkpoint_interval_micros: i64,
    /// Seal an epoch as soon as this many messages wait for their ack.
    pub max_unacked: usize,
    /// Rows per [`Command::WriteRows`] at most.
    pub batch_rows: usize,
    /// Start a new base once the changelog since the current base holds at least this many
    /// bytes and at least `compact_ratio` times the base's bytes.
    pub compact_min_bytes: u64,
    /// See `compact_min_bytes`. Redis receives about (1 + 1/ratio) times the changelog's bytes
    /// in all, and a restore reads at most about (1 + ratio) times the base.
    pub compact_ratio: f64,
    /// Bytes of base pieces produced per tick at most (about; at least one shard).
    pub piece_bytes: usize,
    /// Base pieces given out and not yet reported written, at most.
    pub max_pieces_in_flight: usize,
    /// After restoring a checkpoint that a graceful shutdown did not write, how long the
    /// watermark stays still so that the crashed worker's in-flight messages come back in time.
    pub recovery_hold_micros: i64,
    /// Rows are written invisibly per epoch and committed after the epoch's delta is durable
    /// ([`Command::PrepareRows`], [`Command::CommitRows`]): exactly-once rows. Off: rows are
    /// visible when written, before the delta, and a crash in between writes them again.
    pub two_phase_rows: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            checkpoint_interval_micros: 5_000_000,
            max_unacked: 2_000,
            batch_rows: 500,
            compact_min_bytes: 64 << 20,
            compact_ratio: 2.0,
            piece_bytes: 1 << 20,
            max_pieces_in_flight: 2,
            recovery_hold_micros: 65_000_000,
            two_phase_rows: false,
        }
    }
}

/// What a restore found in the store (all zero for a fresh start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Sequence number of the next changelog element.
    pub next_seq: u64,
    /// The current base's generation (0: none yet).
    pub generation: u64,
    /// Bytes of the current base.
    pub base_bytes: u64,
    /// Bytes of the changelog a restore replays over the base.
    pub log_bytes: u64,
    /// The last delta was written by a graceful shutdown (or there is no checkpoint).
    pub clean_shutdown: bool,
    /// The transaction of the last rows-commit element, when the last delta has one: a crash
    /// may have come before it was committed, so it is committed again first (committing is
    /// idempotent).
    pub rows_to_commit: Option<Vec<u8>>,
}

/// Counters and sizes for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Epochs sealed.
    pub epochs: u64,
    /// Deltas appended (epochs durable).
    pub appended: u64,
    /// Bytes of deltas appended.
    pub log_bytes_written: u64,
    /// Bases committed.
    pub bases: u64,
    /// Bytes of base pieces given out.
    pub base_bytes_written: u64,
    /// Messages acknowledged.
    pub acked: u64,
}

/// An epoch sealed and waiting for its rows, then for its append.
#[derive(Debug)]
struct Sealed<T> {
    epoch: u64,
    first_seq: u64,
    elements: Vec<Vec<u8>>,
    tokens: Vec<T>,
    /// Row batches that must be written before it is appended (every batch given out so far).
    rows_needed: u64,
    /// Two-phase rows: the rows are prepared, and this commits them (`None`: there were none).
    prepared: Option<Option<Vec<u8>>>,
}

/// A base being written.
#[derive(Debug)]
struct Compaction {
    generation: u64,
    base_from_seq: u64,
    /// Changelog bytes before `base_from_seq` (dropped when it is committed).
    log_bytes_before: u64,
    writer: PieceWriter,
    /// The epoch in which the last piece was taken; the base is committed once it is durable.
    last_piece_epoch: Option<u64>,
    committing: bool,
}

/// The delivery core. `T` is a message's ack token, `P` what the driver attaches to a click
/// for the late output. See the crate documentation.
#[derive(Debug)]
pub struct Delivery<T, P> {
    engine: Engine,
    cfg: DeliveryConfig,
    commands: VecDeque<Command<T, P>>,
    /// The open epoch: its changes and the messages they came from.
    epoch: u64,
    changes: ChangeLog,
    tokens: Vec<T>,
    dirty: bool,
    /// Final checkouts not yet given out in a [`Command::WriteRows`].
    finals: Vec<FinalCheckout>,
    rows_given: u64,
    rows_done: u64,
    sealed: VecDeque<Sealed<T>>,
    append_in_flight: bool,
    /// A [`Command::PrepareRows`] is given out and not reported.
    prepare_in_flight: bool,
    /// A [`Command::CommitRows`] is given out and not reported: the next delta waits for it, so
    /// only the last delta's rows can be left uncommitted by a crash.
    commit_in_flight: bool,
    next_seq: u64,
    /// The last epoch whose delta is appended.
    durable_epoch: Option<u64>,
    generation: u64,
    base_bytes: u64,
    log_bytes: u64,
    compaction: Option<Compaction>,
    pieces_in_flight: usize,
    last_horizon: Option<EventTime>,
    last_seal: Option<i64>,
    now: i64,
    wall: i64,
    stats: DeliveryStats,
    scratch: Vec<FinalCheckout>,
}

impl<T, P> Delivery<T, P> {
    /// A core over `engine` (restored from the store as `durable` says, or empty). `now` is
    /// the processing time (µs, any monotonic clock) used by [`Delivery::tick`].
    pub fn new(mut engine: Engine, durable: Durable, cfg: DeliveryConfig, now: i64) -> Self {
        if !durable.clean_shutdown {
            engine.hold_watermark_until(now.saturating_add(cfg.recovery_hold_micros));
        }
        let last_horizon = engine.swept_horizon();
        let mut commands = VecDeque::new();
        let commit_in_flight = durable.rows_to_commit.is_some();
        if let Some(transaction) = durable.rows_to_commit {
            commands.push_back(Command::CommitRows { transaction });
        }
        Delivery {
            engine,
            cfg,
            commands,
            epoch: 0,
            changes: ChangeLog::new(),
            tokens: Vec::new(),
            dirty: false,
            finals: Vec::new(),
            rows_given: 0,
            rows_done: 0,
            sealed: VecDeque::new(),
            append_in_flight: false,
            prepare_in_flight: false,
            commit_in_flight,
            next_seq: durable.next_seq,
            durable_epoch: None,
            generation: durable.generation,
            base_bytes: durable.base_bytes,
            log_bytes: durable.log_bytes,
            compaction: None,
            pieces_in_flight: 0,
            last_horizon,
            last_seal: None,
            now,
            wall: 0,
            stats: DeliveryStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The knobs it runs with.
    pub fn config(&self) -> &DeliveryConfig {
        &self.cfg
    }

    /// The engine, read-only.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Counters.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }

    /// Messages taken in and not yet acknowledged (open and sealed epochs).
    pub fn unacked(&self) -> usize {
        self.tokens.len() + self.sealed.iter().map(|s| s.tokens.len()).sum::<usize>()
    }

    /// Bytes of the current base.
    pub fn base_bytes(&self) -> u64 {
        self.base_bytes
    }

    /// Bytes of changelog a restore would replay over the current base.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// The current base's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a base is being written.
    pub fn compacting(&self) -> bool {
        self.compaction.is_some()
    }

    /// The next command to run, if any.
    pub fn poll(&mut self) -> Option<Command<T, P>> {
        self.commands.pop_front()
    }

    /// A click delivered by input `stream`, with its ack token and what the late output needs.
    pub fn on_click(&mut self, stream: usize, click: Click, token: T, payload: P) -> ClickOutcome {
        let watermark = self.engine.watermark();
        let kept = click.clone();
        let outcome = self.engine.on_click_from(stream, click);
        match outcome {
            ClickOutcome::Stored | ClickOutcome::Late { stored: true } => self.changes.click(&kept),
            ClickOutcome::Duplicate | ClickOutcome::Late { stored: false } => {}
        }
        if let ClickOutcome::Late { stored } = outcome {
            self.commands.push_back(Command::PublishLate {
                payload,
                watermark,
                stored,
            });
        }
        self.taken(token);
        outcome
    }

    /// A checkout with its ack token.
    pub fn on_checkout(&mut self, checkout: Checkout, token: T) -> CheckoutOutcome {
        let duplicate = self
            .engine
            .seen_checkouts()
            .contains(&checkout.checkout_id, self.engine.swept_horizon());
        if !duplicate {
            self.changes.checkout(&checkout);
        }
        let outcome = self.engine.on_checkout(checkout);
        self.taken(token);
        outcome
    }

    /// Input `stream` delivered a message that was refused (dead-lettered): it is alive.
    pub fn on_alive(&mut self, stream: usize) {
        self.engine.stream_alive(stream);
    }

    fn taken(&mut self, token: T) {
        self.tokens.push(token);
        self.dirty = true;
        self.drain();
        if self.finals.len() >= self.cfg.batch_rows {
            self.give_rows();
        }
        if self.tokens.len() >= self.cfg.max_unacked {
            self.seal(false);
        }
    }

    /// Moves processing time to `now` (µs, monotonic) and the wall clock to `wall` (µs since
    /// the epoch, recorded in bases): idle watermark, row flushes, checkpoints, compaction.
    pub fn tick(&mut self, now: i64, wall: i64) {
        self.now = now;
        self.wall = wall;
        self.engine.tick(now);
        if self.drain() > 0 {
            self.dirty = true;
        }
        self.give_rows();
        let due = self
            .last_seal
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.checkpoint_interval_micros);
        let compaction_waits = self
            .compaction
            .as_ref()
            .is_some_and(|c| c.last_piece_epoch == Some(self.epoch));
        if (self.dirty && due) || compaction_waits {
            self.seal(false);
        }
        self.compact_step();
    }

    /// Graceful shutdown: every message taken in is sealed in a last epoch marked clean, and a
    /// base being written is abandoned (the next start writes it again). Run the commands until
    /// [`Delivery::settled`].
    pub fn shutdown(&mut self) {
        self.compaction = None;
        self.drain();
        self.give_rows();
        self.seal(true);
    }

    /// Whether nothing waits: every epoch appended and acknowledged, no row unwritten or
    /// uncommitted.
    pub fn settled(&self) -> bool {
        self.sealed.is_empty()
            && self.tokens.is_empty()
            && self.finals.is_empty()
            && !self.commit_in_flight
    }

    /// The rows of batch `batch` are written.
    pub fn rows_written(&mut self, batch: u64) {
        self.rows_done = self.rows_done.max(batch + 1);
        self.pump();
    }

    /// Two-phase rows: every row of `epoch` is written and prepared; `transaction` commits
    /// them (`None`: the epoch had no rows).
    pub fn rows_prepared(&mut self, epoch: u64, transaction: Option<Vec<u8>>) {
        let Some(front) = self.sealed.front_mut() else {
            return;
        };
        if front.epoch != epoch || !self.prepare_in_flight {
            return;
        }
        self.prepare_in_flight = false;
        front.prepared = Some(transaction);
        self.pump();
    }

    /// The rows of the last [`Command::CommitRows`] are committed (visible).
    pub fn rows_committed(&mut self) {
        if !self.commit_in_flight {
            return;
        }
        self.commit_in_flight = false;
        self.pump();
    }

    /// The delta elements starting at `first_seq` are appended.
    pub fn log_appended(&mut self, first_seq: u64) {
        let Some(front) = self.sealed.front() else {
            return;
        };
        if front.first_seq != first_seq || !self.append_in_flight {
            return;
        }
        self.append_in_flight = false;
        if let Some(done) = self.sealed.pop_front() {
            self.durable_epoch = Some(done.epoch);
            self.stats.appended += 1;
            self.stats.acked += done.tokens.len() as u64;
            if !done.tokens.is_empty() {
                // Safe before the commit: the commit is in the durable delta, and a restore
                // commits it again.
                self.commands.push_back(Command::Ack(done.tokens));
            }
            if let Some(Some(transaction)) = done.prepared {
                self.commit_in_flight = true;
                self.commands.push_back(Command::CommitRows { transaction });
            }
        }
        self.maybe_commit();
        self.pump();
    }

    /// A base piece is written.
    pub fn piece_written(&mut self, _generation: u64) {
        self.pieces_in_flight = self.pieces_in_flight.saturating_sub(1);
        self.maybe_commit();
    }

    /// Base `generation` is the current one.
    pub fn base_committed(&mut self, generation: u64) {
        let Some(c) = self.compaction.take_if(|c| c.generation == generation) else {
            return;
        };
        let old = self.generation;
        self.generation = generation;
        self.base_bytes = c.writer.bytes();
        self.log_bytes = self.log_bytes.saturating_sub(c.log_bytes_before);
        self.stats.bases += 1;
        if old > 0 {
            self.commands
                .push_back(Command::DropBase { generation: old });
        }
    }

    /// Drains final checkouts into `finals`, logging their finish and any sweep.
    fn drain(&mut self) -> usize {
        let n = self.engine.drain_final(&mut self.scratch);
        for f in self.scratch.drain(..) {
            self.changes.finished(&f.checkout.checkout_id);
            self.finals.push(f);
        }
        let horizon = self.engine.swept_horizon();
        if horizon != self.last_horizon {
            if let Some(h) = horizon {
                self.changes.horizon(h);
            }
            self.last_horizon = horizon;
        }
        n
    }

    fn give_rows(&mut self) {
        while !self.finals.is_empty() {
            let n = self.finals.len().min(self.cfg.batch_rows.max(1));
            let checkouts: Vec<FinalCheckout> = self.finals.drain(..n).collect();
            self.commands.push_back(Command::WriteRows {
                batch: self.rows_given,
                epoch: self.epoch,
                checkouts,
            });
            self.rows_given += 1;
        }
    }

    fn seal(&mut self, clean_shutdown: bool) {
        self.give_rows();
        let elements = self.changes.seal(&self.engine.progress(), clean_shutdown);
        let bytes: u64 = elements.iter().map(|e| e.len() as u64).sum();
        let first_seq = self.next_seq;
        // Two-phase rows: a rows-commit element follows the delta (its bytes are counted when
        // it is made).
        let commit_element = u64::from(self.cfg.two_phase_rows);
        self.next_seq += elements.len() as u64 + commit_element;
        self.log_bytes += bytes;
        self.stats.epochs += 1;
        self.stats.log_bytes_written += bytes;
        self.sealed.push_back(Sealed {
            epoch: self.epoch,
            first_seq,
            elements,
            tokens: std::mem::take(&mut self.tokens),
            rows_needed: self.rows_given,
            prepared: None,
        });
        self.epoch += 1;
        self.dirty = false;
        self.last_seal = Some(self.now);
        self.pump();
    }

    /// Gives out the next step of the oldest sealed epoch once the one before is done: its
    /// rows written, then (two-phase) prepared, then its append; the next epoch's append also
    /// waits for the previous commit.
    fn pump(&mut self) {
        if self.append_in_flight || self.prepare_in_flight || self.commit_in_flight {
            return;
        }
        let Some(front) = self.sealed.front_mut() else {
            return;
        };
        if front.rows_needed > self.rows_done {
            return;
        }
        let mut elements = std::mem::take(&mut front.elements);
        if self.cfg.two_phase_rows {
            let Some(transaction) = &front.prepared else {
                front.elements = elements;
                self.prepare_in_flight = true;
                self.commands
                    .push_back(Command::PrepareRows { epoch: front.epoch });
                return;
            };
            // An empty transaction records that this epoch left nothing to commit.
            let element = rows_commit_element(transaction.as_deref().unwrap_or_default());
            self.log_bytes += element.len() as u64;
            self.stats.log_bytes_written += element.len() as u64;
            elements.push(element);
        }
        self.append_in_flight = true;
        self.commands.push_back(Command::AppendLog {
            first_seq: front.first_seq,
            elements,
        });
    }

    fn compact_step(&mut self) {
        if self.compaction.is_none() {
            let threshold = self
                .cfg
                .compact_min_bytes
                .max((self.base_bytes as f64 * self.cfg.compact_ratio) as u64);
            if self.log_bytes < threshold {
                return;
            }
            let generation = self.generation + 1;
            self.commands.push_back(Command::StartBase { generation });
            self.compaction = Some(Compaction {
                generation,
                // The open epoch's changes may be in the pieces: replay from its delta on.
                base_from_seq: self.next_seq,
                log_bytes_before: self.log_bytes,
                writer: PieceWriter::new(self.wall, self.cfg.piece_bytes),
                last_piece_epoch: None,
                committing: false,
            });
        }
        let Some(c) = self.compaction.as_mut() else {
            return;
        };
        if c.writer.is_done() || self.pieces_in_flight >= self.cfg.max_pieces_in_flight {
            return;
        }
        let pieces = c.writer.step(&self.engine);
        self.pieces_in_flight += pieces.len();
        for piece in pieces {
            self.stats.base_bytes_written += piece.len() as u64;
            self.commands.push_back(Command::WriteBasePiece {
                generation: c.generation,
                piece,
            });
        }
        if c.writer.is_done() {
            c.last_piece_epoch = Some(self.epoch);
        }
    }

    fn maybe_commit(&mut self) {
        let durable = self.durable_epoch;
        let Some(c) = self.compaction.as_mut() else {
            return;
        };
        let ready = !c.committing
            && self.pieces_in_flight == 0
            && c.last_piece_epoch
                .is_some_and(|e| durable.is_some_and(|d| d >= e));
        if ready {
            c.committing = true;
            self.commands.push_back(Command::CommitBase {
                generation: c.generation,
                base_from_seq: c.base_from_seq,
                pieces: c.writer.pieces(),
                bytes: c.writer.bytes(),
            });
        }
    }
}
