//! The partitioned replay: `streaming replay --partitions P --threads N` (docs/design.md §3.6).
//!
//! A user's clicks and checkouts belong to partition [`firstclick_partition::partition_of`]`(user,
//! P)`, and each partition has its own engine and watermark, as in a P-partition deployment.
//! Partition `p` replays what its own two files would hold: the lines of partition `p` of each
//! input, merged by the event time of each file's next line (ties: click first), exactly as a
//! one-partition replay of those filtered files would. With P = 1 that is today's replay.
//!
//! # Threads
//! N workers share the work: reading a chunk of an input ([`crate::chunked`], sequential per
//! file, under its lock), parsing it (anywhere, no lock) into one vector of events per partition,
//! and running a partition's engine over the chunks it has been given, in chunk order. A
//! partition runs on one worker at a time (any worker: whichever is free), so its events reach
//! its engine in file order whatever N is. Workers prefer running a partition to parsing, and
//! parse at most [`WINDOW`] chunks of a file ahead of the partition that has consumed the
//! fewest, and none while [`BACKLOG`] outputs wait for the writer: memory is bounded by a
//! window of parsed events and of output rows, never by the file. (Should the window ever stop
//! every worker, as adversarial inputs whose files are far apart in time can, the last idle
//! worker admits one more chunk rather than wait.)
//!
//! # Output order
//! The calling thread is the writer: rows, touches and late clicks go out in one deterministic
//! order, the same for every N. Every output of a partition carries its *clock*: the largest
//! event time that partition had read when it made it (the final flush carries +∞). Outputs are
//! written by `(clock, partition)`, each partition's own outputs in the order its engine made
//! them. Each partition sends, with its outputs, the clock it has reached, and an output is
//! written once no other partition can still make one that sorts before it. With P = 1 this is
//! the engine's order, as in the single-threaded replay.
//!
//! Bad lines (dead letters and their reports on stderr) belong to no partition (a deployment's
//! router dead-letters them, once): they go out in the order of the merge of the two whole
//! files, as in the single-threaded replay, whatever P and N; the writer runs that merge over
//! each chunk's event times.
//!
//! The summary adds up the partitions' counters; its peak of live clicks is the sum of each
//! partition's peak.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use firstclick_engine::{CheckoutOutcome, ClickOutcome, Engine, EngineConfig, FinalCheckout};
use firstclick_model::{AttributedRow, EventKind, EventTime, TouchRow};

use crate::chunked::{parse_chunk, source_error, ChunkedFile, Next, ParsedChunk, BAD};
use crate::observer::RowObserver;
use crate::replay::{ReplayError, ReplayOptions};
use crate::sink::{DeadLetterRecord, FileSinkError, LateClickRecord, NdjsonWriter};
use crate::source::{Item, SourceError};
use crate::staged::StagedOutputs;
use crate::summary::Summary;
use crate::users::{load_users, UserNames};

/// Chunks of a file parsed ahead of the partition that has consumed the fewest.
pub(crate) const WINDOW: usize = 6;

/// Chunk size and window ([`CHUNK`](crate::chunked::CHUNK) and [`WINDOW`] but in tests).
#[derive(Clone, Copy, Debug)]
struct Tuning {
    chunk: usize,
    window: usize,
}
/// Outputs sent to the writer and not yet written above which no more chunks are parsed.
pub(crate) const BACKLOG: usize = 1 << 16;

const CLICKS: usize = 0;
const CHECKOUTS: usize = 1;

/// How a replay is spread: partitions and worker threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallelism {
    /// Partitions (key groups), each with its own engine and watermark; at least 1.
    pub partitions: u32,
    /// Worker threads that parse and run the partitions (the writer is one more); at least 1.
    pub threads: usize,
    /// Stamp every row with this `processed_at` instead of the clock's time (for outputs that
    /// can be compared byte for byte).
    pub processed_at: Option<EventTime>,
}

impl Default for Parallelism {
    /// One partition on one thread: the single-threaded replay.
    fn default() -> Self {
        Parallelism {
            partitions: 1,
            threads: 1,
            processed_at: None,
        }
    }
}

impl Parallelism {
    /// `partitions` partitions on as many threads as the machine has cores.
    pub fn with_cores(partitions: u32) -> Self {
        Parallelism {
            partitions,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            processed_at: None,
        }
    }
}

/// Which file an output line goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Row,
    Touch,
    Late,
}

/// One output of a partition: its clock, its file, and where its line (serialized on the
/// partition's worker) ends in [`Out::bytes`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    clock: i64,
    kind: Kind,
    end: usize,
}

/// A row or touch kept for an observer, in the order of its entry.
enum Seen {
    Row(AttributedRow),
    Touch(TouchRow),
}

/// Outputs of a partition, serialized: the writer only copies the bytes.
#[derive(Default)]
struct Out {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    seen: Vec<Seen>,
}

/// Buffers handed back for reuse, so the steady state allocates no fresh memory for them.
#[derive(Default)]
struct Pool {
    items: Mutex<Vec<Vec<Item>>>,
    bytes: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    const KEEP: usize = 256;

    fn items(&self, capacity: usize) -> Vec<Item> {
        let v = self.items.lock().ok().and_then(|mut p| p.pop());
        v.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    fn give_items(&self, mut v: Vec<Item>) {
        v.clear();
        if let Ok(mut p) = self.items.lock() {
            if p.len() < Self::KEEP {
                p.push(v);
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let v = self.bytes.lock().ok().and_then(|mut p| p.pop());
        v.unwrap_or_default()
    }

    fn give_bytes(&self, mut v: Vec<u8>) {
        v.clear();
        if let Ok(mut p) = self.bytes.lock() {
            if p.len() < Self::KEEP {
                p.push(v);
            }
        }
    }
}

/// What workers send the writer.
enum Msg {
    /// Outputs of a partition.
    Part(Batch),
    /// A parsed chunk's event times and bad lines (for the dead-letter order).
    Chunk { file: usize, chunk: RouterChunk },
    /// A file has this many chunks.
    Total { file: usize, chunks: usize },
}

/// Outputs of partition `part`, in its order, each with its clock; later ones will have a
/// clock of at least `clock`.
struct Batch {
    part: usize,
    out: Out,
    clock: i64,
    done: Option<Box<Summary>>,
}

/// What the writer needs of a chunk to place its bad lines.
struct RouterChunk {
    index: usize,
    lines: u64,
    order: Vec<i64>,
    bad: Vec<Item>,
}

/// A partition's engine and the merge of its two inputs.
struct Runner {
    part: usize,
    engine: Engine,
    users: Arc<UserNames>,
    /// Late clicks are written.
    late: bool,
    /// Touches are written.
    touches: bool,
    /// The observer wants the rows and touches.
    observe: bool,
    processed_at: Option<EventTime>,
    finals: Vec<FinalCheckout>,
    sides: [Side; 2],
    clock: i64,
    out: Out,
    pool: Arc<Pool>,
    summary: Summary,
}

/// One input of a partition: the rest of its current chunk (the next event at the front).
#[derive(Default)]
struct Side {
    batch: VecDeque<Item>,
    done: bool,
}

impl Side {
    fn time(&self) -> Option<i64> {
        match self.batch.front() {
            Some(Item::Click(c)) => Some(c.time.as_micros()),
            Some(Item::Checkout(c)) => Some(c.time.as_micros()),
            _ => None,
        }
    }
}

/// Why a runner stopped.
enum Step {
    /// It needs the next chunk of this input.
    Need(usize),
    /// Both inputs are consumed and everything is flushed.
    Finished,
}

impl Runner {
    fn new(part: usize, config: EngineConfig, users: Arc<UserNames>, pool: Arc<Pool>) -> Self {
        Runner {
            part,
            engine: Engine::new(config),
            users,
            late: false,
            touches: false,
            observe: false,
            processed_at: None,
            finals: Vec::with_capacity(256),
            sides: [Side::default(), Side::default()],
            clock: i64::MIN,
            out: Out::default(),
            pool,
            summary: Summary::default(),
        }
    }

    /// Feeds events until a side needs its next chunk or everything is done.
    fn advance(&mut self) -> Step {
        loop {
            for (f, side) in self.sides.iter().enumerate() {
                if side.batch.is_empty() && !side.done {
                    return Step::Need(f);
                }
            }
            let take_click = match (self.sides[CLICKS].time(), self.sides[CHECKOUTS].time()) {
                (None, None) => {
                    self.finish();
                    return Step::Finished;
                }
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(click), Some(checkout)) => click <= checkout,
            };
            let side = if take_click { CLICKS } else { CHECKOUTS };
            match self.sides[side].batch.pop_front() {
                Some(Item::Click(c)) => self.click(c),
                Some(Item::Checkout(c)) => self.checkout(c),
                _ => {}
            }
        }
    }

    /// The next chunk of input `f`.
    fn feed(&mut self, f: usize, events: Vec<Item>) {
        let spent = std::mem::replace(&mut self.sides[f].batch, events.into());
        self.pool.give_items(spent.into());
    }

    /// Input `f` has no more chunks.
    fn end(&mut self, f: usize) {
        self.sides[f].done = true;
    }

    /// As [`crate::Pipeline::click`].
    fn click(&mut self, click: firstclick_model::Click) {
        self.summary.events_read += 1;
        self.clock = self.clock.max(click.time.as_micros());
        let watermark = self.engine.watermark();
        let maybe_late = self.late && watermark.is_some_and(|w| click.time < w);
        let copy = maybe_late.then(|| click.clone());
        let outcome = self.engine.on_click(click);
        if let (ClickOutcome::Late { stored }, Some(c)) = (outcome, copy) {
            let record = LateClickRecord::new(&c, watermark, stored);
            let start = self.out.bytes.len();
            // Strings only: serializing into memory cannot fail; should it, the line is left
            // out rather than half written.
            if serde_json::to_writer(&mut self.out.bytes, &record).is_ok() {
                self.push(Kind::Late);
            } else {
                self.out.bytes.truncate(start);
            }
        }
        let live = self.engine.live_clicks() as u64;
        if live > self.summary.peak_live_clicks {
            self.summary.peak_live_clicks = live;
        }
        if self.engine.drain_final(&mut self.finals) > 0 {
            self.emit();
        }
    }

    /// As [`crate::Pipeline::checkout`].
    fn checkout(&mut self, checkout: firstclick_model::Checkout) {
        self.summary.events_read += 1;
        self.clock = self.clock.max(checkout.time.as_micros());
        if self.engine.on_checkout(checkout) == CheckoutOutcome::Late
            && self.engine.drain_final(&mut self.finals) > 0
        {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let now = self
            .processed_at
            .unwrap_or_else(firstclick_model::time::wall_clock);
        let users = Arc::clone(&self.users);
        let mut finals = std::mem::take(&mut self.finals);
        for f in finals.drain(..) {
            let name = users.get(&f.checkout.user_id).map(String::as_str);
            if name.is_none() {
                self.summary.unknown_users += 1;
            }
            let touch_count = f.touch_count();
            if !self.observe && (touch_count == 0 || !self.touches) {
                // Rows only: written from the final checkout as it is, without owned copies
                // (this runs once per output row).
                self.summary.touches += touch_count as u64;
                for row in f.rows(name, now) {
                    row.write_json(&mut self.out.bytes);
                    self.push(Kind::Row);
                    self.summary.rows += 1;
                }
                continue;
            }
            let (rows, touches) = f.into_rows(name.map(str::to_owned), now);
            self.summary.rows += rows.len() as u64;
            self.summary.touches += touches.len() as u64;
            for row in rows {
                row.write_json(&mut self.out.bytes);
                self.push(Kind::Row);
                if self.observe {
                    self.out.seen.push(Seen::Row(row));
                }
            }
            for t in touches {
                if self.touches {
                    t.write_json(&mut self.out.bytes);
                    self.out.bytes.push(b'\n');
                }
                self.out.entries.push(Entry {
                    clock: self.clock,
                    kind: Kind::Touch,
                    end: self.out.bytes.len(),
                });
                if self.observe {
                    self.out.seen.push(Seen::Touch(t));
                }
            }
        }
        self.finals = finals;
    }

    /// Ends the line just serialized as an output of `kind`.
    fn push(&mut self, kind: Kind) {
        self.out.bytes.push(b'\n');
        self.out.entries.push(Entry {
            clock: self.clock,
            kind,
            end: self.out.bytes.len(),
        });
    }

    /// The end of both inputs: everything pending is flushed (with the clock +∞).
    fn finish(&mut self) {
        self.engine.flush(&mut self.finals);
        self.clock = i64::MAX;
        self.emit();
        let s = self.engine.stats();
        let summary = &mut self.summary;
        summary.clicks = s.clicks;
        summary.checkouts = s.checkouts;
        summary.attributed = s.attributed;
        summary.unattributed = s.organic;
        summary.late_clicks = s.late_clicks;
        summary.late_checkouts = s.late_checkouts;
        summary.duplicate_clicks = s.duplicate_clicks;
        summary.duplicate_checkouts = s.duplicate_checkouts;
    }

    fn batch(&mut self, done: bool) -> Batch {
        let fresh = Out {
            entries: Vec::new(),
            bytes: self.pool.bytes(),
            seen: Vec::new(),
        };
        Batch {
            part: self.part,
            out: std::mem::replace(&mut self.out, fresh),
            clock: self.clock,
            done: done.then(|| Box::new(self.summary.clone())),
        }
    }
}

/// A partition as the scheduler sees it.
struct PartState {
    /// Parsed chunks not yet taken, per input, by chunk number.
    inbox: [BTreeMap<usize, Vec<Item>>; 2],
    /// The next chunk number the partition takes, per input.
    consumed: [usize; 2],
    /// The input whose next chunk it waits for (`None`: it can run).
    need: Option<usize>,
    /// Its runner, unless a worker is running it or it is finished.
    runner: Option<Box<Runner>>,
    done: bool,
}

impl PartState {
    fn runnable(&self, files: &[FileState; 2]) -> bool {
        self.runner.is_some()
            && !self.done
            && match self.need {
                None => true,
                Some(f) => {
                    let k = self.consumed[f];
                    self.inbox[f].contains_key(&k) || files[f].total.is_some_and(|t| k >= t)
                }
            }
    }
}

#[derive(Default)]
struct FileState {
    /// Reads handed out (including the one that found the end).
    issued: usize,
    /// Reads under way.
    reading: usize,
    /// Its number of chunks, once the end was found.
    total: Option<usize>,
}

struct State {
    parts: Vec<PartState>,
    files: [FileState; 2],
    /// Workers waiting for something to do.
    idle: usize,
    /// Partitions finished.
    finished: usize,
    /// The writer waits for outputs (it cannot write what it holds before they come).
    writer_waiting: bool,
    /// The first read error.
    error: Option<SourceError>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    abort: AtomicBool,
    /// Outputs sent to the writer and not yet written.
    backlog: AtomicUsize,
    files: [ChunkedFile; 2],
    partitions: usize,
    workers: usize,
    window: usize,
    pool: Arc<Pool>,
}

/// What a worker does next.
enum Task {
    Run(usize, Box<Runner>),
    Read(usize),
    Wait,
    Exit,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked sets `abort`; the state itself stays consistent enough to
        // stop, so a poisoned lock is taken as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.abort.store(true, Ordering::SeqCst);
        let _g = self.lock();
        self.wake.notify_all();
    }

    /// The next task for worker `id` (called with the state locked).
    fn next_task(&self, st: &mut State, id: usize) -> Task {
        if self.abort.load(Ordering::SeqCst) || st.finished == self.partitions {
            return Task::Exit;
        }
        let n = self.partitions;
        let start = id * n / self.workers;
        for i in 0..n {
            let p = (start + i) % n;
            if st.parts[p].runnable(&st.files) {
                if let Some(r) = st.parts[p].runner.take() {
                    return Task::Run(p, r);
                }
            }
        }
        match self.admissible(st, false) {
            Some(f) => Task::Read(f),
            None => Task::Wait,
        }
    }

    /// The input to read a chunk of next, if any may be read now (`force`: ignoring the
    /// window and the backlog).
    fn admissible(&self, st: &mut State, force: bool) -> Option<usize> {
        if !force && self.backlog.load(Ordering::SeqCst) >= BACKLOG {
            return None;
        }
        let mut best: Option<(bool, usize, usize)> = None;
        for f in [CLICKS, CHECKOUTS] {
            let fs = &st.files[f];
            if fs.total.is_some() {
                continue;
            }
            let live = st.parts.iter().filter(|p| !p.done);
            let low = live.clone().map(|p| p.consumed[f]).min().unwrap_or(0);
            let wanted = live
                .clone()
                .any(|p| p.need == Some(f) && p.consumed[f] >= fs.issued);
            if !force && fs.issued >= low + self.window {
                continue;
            }
            if force && !wanted {
                continue;
            }
            // Wanted first, then the input parsed least far ahead.
            let key = (!wanted, fs.issued - low.min(fs.issued), f);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        let f = best?.2;
        st.files[f].issued += 1;
        st.files[f].reading += 1;
        Some(f)
    }

    /// Whether nothing but an admission past the limits can move the replay on.
    fn stuck(&self, st: &State) -> bool {
        st.idle + 1 == self.workers
            && st.files.iter().all(|f| f.reading == 0)
            && st.parts.iter().all(|p| p.runner.is_some() || p.done)
            && (self.backlog.load(Ordering::SeqCst) < BACKLOG || st.writer_waiting)
    }
}

/// Sets `abort` if a worker unwinds, so the others and the writer stop too.
struct AbortOnPanic<'a>(&'a Shared);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

fn worker(sh: &Shared, id: usize, tx: &Sender<Msg>) {
    let _guard = AbortOnPanic(sh);
    let mut buf = Vec::new();
    let mut st = sh.lock();
    loop {
        let task = match sh.next_task(&mut st, id) {
            Task::Wait if sh.stuck(&st) => match sh.admissible(&mut st, true) {
                Some(f) => Task::Read(f),
                None => Task::Wait,
            },
            t => t,
        };
        match task {
            Task::Exit => {
                sh.wake.notify_all();
                return;
            }
            Task::Run(p, mut runner) => {
                st.parts[p].need = None;
                drop(st);
                st = run_partition(sh, p, &mut runner, tx);
                if !st.parts[p].done {
                    st.parts[p].runner = Some(runner);
                }
                if st.idle > 0 {
                    sh.wake.notify_all();
                }
            }
            Task::Read(f) => {
                drop(st);
                let read = read_chunk(sh, f, &mut buf, tx);
                st = sh.lock();
                st.files[f].reading -= 1;
                match read {
                    Ok(Parsed::Chunk(index, parts)) => {
                        for (p, events) in parts.into_iter().enumerate() {
                            st.parts[p].inbox[f].insert(index, events);
                        }
                    }
                    Ok(Parsed::End(total)) => {
                        if st.files[f].total.is_none() {
                            st.files[f].total = Some(total);
                            let _ = tx.send(Msg::Total {
                                file: f,
                                chunks: total,
                            });
                        }
                    }
                    Err(e) => {
                        st.error.get_or_insert(e);
                        sh.abort.store(true, Ordering::SeqCst);
                    }
                }
                sh.wake.notify_all();
            }
            Task::Wait => {
                st.idle += 1;
                st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle -= 1;
            }
        }
    }
}

/// Runs partition `p` until it needs a chunk that is not parsed yet, or to its end; returns
/// with the state locked.
fn run_partition<'a>(
    sh: &'a Shared,
    p: usize,
    runner: &mut Runner,
    tx: &Sender<Msg>,
) -> MutexGuard<'a, State> {
    let mut sent_clock = runner.clock;
    loop {
        let step = runner.advance();
        let finished = matches!(step, Step::Finished);
        if finished || !runner.out.entries.is_empty() || runner.clock != sent_clock {
            let batch = runner.batch(finished);
            sent_clock = batch.clock;
            sh.backlog
                .fetch_add(batch.out.entries.len(), Ordering::SeqCst);
            // A closed channel means the writer stopped; `abort` says so.
            let _ = tx.send(Msg::Part(batch));
        }
        let mut st = sh.lock();
        let Step::Need(f) = step else {
            st.parts[p].done = true;
            st.finished += 1;
            return st;
        };
        if sh.abort.load(Ordering::SeqCst) {
            return st;
        }
        let ended = st.files[f].total;
        let part = &mut st.parts[p];
        let k = part.consumed[f];
        if let Some(events) = part.inbox[f].remove(&k) {
            part.consumed[f] += 1;
            runner.feed(f, events);
            // The window may have moved.
            if st.idle > 0 {
                sh.wake.notify_all();
            }
        } else if ended.is_some_and(|t| k >= t) {
            runner.end(f);
        } else {
            part.need = Some(f);
            return st;
        }
    }
}

/// A chunk read and parsed, or the end of its file.
enum Parsed {
    Chunk(usize, Vec<Vec<Item>>),
    End(usize),
}

/// Reads and parses the next chunk of input `f`, sends the writer what it needs of it for the
/// dead letters, and returns its events per partition.
fn read_chunk(
    sh: &Shared,
    f: usize,
    buf: &mut Vec<u8>,
    tx: &Sender<Msg>,
) -> Result<Parsed, SourceError> {
    let file = &sh.files[f];
    match file.next_chunk(buf)? {
        Next::End(total) => Ok(Parsed::End(total)),
        Next::Chunk(index) => {
            let ParsedChunk {
                index,
                lines,
                parts,
                order,
                bad,
            } = parse_chunk(file.kind, index, buf, sh.partitions as u32, |n| {
                sh.pool.items(n)
            });
            let _ = tx.send(Msg::Chunk {
                file: f,
                chunk: RouterChunk {
                    index,
                    lines,
                    order,
                    bad,
                },
            });
            Ok(Parsed::Chunk(index, parts))
        }
    }
}

/// A batch the writer has not written to its end: from entry `next`, whose line starts at
/// byte `start`.
struct Part {
    out: Out,
    next: usize,
    start: usize,
    seen: std::vec::IntoIter<Seen>,
}

/// What the writer holds of one partition.
struct Held {
    queue: VecDeque<Part>,
    /// Outputs still to come have at least this clock.
    clock: i64,
    summary: Option<Summary>,
}

/// The calling thread's part: outputs in order to their files, bad lines to stderr and the
/// dead letters.
struct Writer<'a, O: RowObserver> {
    sh: &'a Shared,
    observer: O,
    rows: NdjsonWriter,
    late: Option<NdjsonWriter>,
    touches: Option<NdjsonWriter>,
    held: Vec<Held>,
    router: Router,
    dead: Option<NdjsonWriter>,
    report: std::io::BufWriter<std::io::Stderr>,
    names: [String; 2],
}

impl<O: RowObserver> Writer<'_, O> {
    fn run(&mut self, rx: &Receiver<Msg>, bar: Option<&indicatif::ProgressBar>) -> WriteResult {
        let mut n: u64 = 0;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    self.waiting(true);
                    let m = rx.recv();
                    self.waiting(false);
                    match m {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                Msg::Part(mut b) => {
                    let h = &mut self.held[b.part];
                    if b.out.entries.is_empty() {
                        self.sh.pool.give_bytes(std::mem::take(&mut b.out.bytes));
                    } else {
                        let seen = std::mem::take(&mut b.out.seen).into_iter();
                        h.queue.push_back(Part {
                            out: b.out,
                            next: 0,
                            start: 0,
                            seen,
                        });
                    }
                    h.clock = b.clock;
                    if let Some(s) = b.done {
                        h.summary = Some(*s);
                    }
                    self.write_ready()?;
                }
                Msg::Chunk { file, chunk } => {
                    self.router.files[file].pending.insert(chunk.index, chunk);
                    self.route()?;
                }
                Msg::Total { file, chunks } => {
                    self.router.files[file].total = Some(chunks);
                    self.route()?;
                }
            }
            n += 1;
            if let Some(bar) = bar.filter(|_| n.is_multiple_of(64)) {
                bar.set_position(
                    self.sh
                        .files
                        .iter()
                        .map(|f| f.bytes_read.load(Ordering::Relaxed))
                        .sum(),
                );
            }
        }
        Ok(())
    }

    fn waiting(&self, waiting: bool) {
        let mut st = self.sh.lock();
        st.writer_waiting = waiting;
        if waiting && st.idle == self.sh.workers {
            self.sh.wake.notify_all();
        }
    }

    /// Writes every held output that no partition can still precede.
    fn write_ready(&mut self) -> Result<(), FileSinkError> {
        let mut written = 0usize;
        loop {
            let mut best: Option<(i64, usize)> = None;
            let mut limit: Option<(i64, usize)> = None;
            for (p, h) in self.held.iter().enumerate() {
                // A queued part always has an entry left (written-out parts are dropped).
                let front = h.queue.front().and_then(|q| q.out.entries.get(q.next));
                if let Some(e) = front {
                    if best.is_none_or(|b| (e.clock, p) < b) {
                        best = Some((e.clock, p));
                    }
                } else if h.summary.is_none() && limit.is_none_or(|l| (h.clock, p) < l) {
                    limit = Some((h.clock, p));
                }
            }
            let Some((clock, p)) = best else { break };
            if limit.is_some_and(|l| l < (clock, p)) {
                break;
            }
            while let Some(part) = self.held[p].queue.front_mut() {
                while let Some(&e) = part.out.entries.get(part.next) {
                    if e.clock != clock {
                        break;
                    }
                    let line = &part.out.bytes[part.start..e.end];
                    part.start = e.end;
                    part.next += 1;
                    written += 1;
                    let file = match e.kind {
                        Kind::Row => {
                            if let Some(Seen::Row(r)) = part.seen.next() {
                                self.observer.observe_row(&r);
                            }
                            Some(&mut self.rows)
                        }
                        Kind::Touch => {
                            if let Some(Seen::Touch(t)) = part.seen.next() {
                                self.observer.observe_touch(&t);
                            }
                            self.touches.as_mut()
                        }
                        Kind::Late => self.late.as_mut(),
                    };
                    if let (Some(w), false) = (file, line.is_empty()) {
                        w.write_lines(line)?;
                    }
                }
                if part.next < part.out.entries.len() {
                    break;
                }
                if let Some(done) = self.held[p].queue.pop_front() {
                    self.sh.pool.give_bytes(done.out.bytes);
                }
            }
        }
        if written > 0 {
            let before = self.sh.backlog.fetch_sub(written, Ordering::SeqCst);
            if before >= BACKLOG && before - written < BACKLOG {
                let _g = self.sh.lock();
                self.sh.wake.notify_all();
            }
        }
        Ok(())
    }

    /// Reports the bad lines the merge of the two whole files has reached.
    fn route(&mut self) -> Result<(), FileSinkError> {
        loop {
            let mut heads = [None; 2];
            for (f, head) in heads.iter_mut().enumerate() {
                match self.router.files[f].head() {
                    Head::Time(t) => *head = Some(t),
                    Head::Done => {}
                    Head::Wait => return Ok(()),
                }
            }
            let f = match heads {
                [None, None] => return Ok(()),
                [Some(BAD), _] => CLICKS,
                [_, Some(BAD)] => CHECKOUTS,
                [Some(_), None] => CLICKS,
                [None, Some(_)] => CHECKOUTS,
                [Some(a), Some(b)] => {
                    if a <= b {
                        CLICKS
                    } else {
                        CHECKOUTS
                    }
                }
            };
            if let Some((line, item)) = self.router.files[f].take() {
                self.bad_line(f, line, item)?;
            }
        }
    }

    fn bad_line(&mut self, f: usize, line: u64, item: Item) -> Result<(), FileSinkError> {
        let Item::Bad { error, text, .. } = item else {
            return Ok(());
        };
        self.router.bad += 1;
        self.router.bad_by_file[f] += 1;
        let file = &self.names[f];
        // A closed stderr must not stop the replay; the count is in the summary.
        let _ = writeln!(self.report, "{file}:{line}: {error}");
        if let Some(d) = self.dead.as_mut() {
            let kind = if f == CLICKS {
                EventKind::Click
            } else {
                EventKind::Checkout
            };
            d.write(&DeadLetterRecord {
                stream: kind.as_str(),
                file,
                line,
                field: error.field,
                reason: &error.reason,
                text: &text,
            })?;
        }
        Ok(())
    }

    /// Writes what is left and flushes every output.
    fn finish(&mut self) -> Result<(), FileSinkError> {
        self.write_ready()?;
        self.route()?;
        let _ = self.report.flush();
        for w in [
            Some(&mut self.rows),
            self.late.as_mut(),
            self.touches.as_mut(),
            self.dead.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            w.flush()?;
        }
        Ok(())
    }
}

type WriteResult = Result<(), FileSinkError>;

/// The merge of the two whole files, over their event times, for the order of bad lines.
#[derive(Default)]
struct Router {
    files: [RouterFile; 2],
    bad: u64,
    /// Bad lines per input (clicks, checkouts), for the bad-line share.
    bad_by_file: [u64; 2],
}

#[derive(Default)]
struct RouterFile {
    /// Chunks received and not yet reached, by number.
    pending: BTreeMap<usize, RouterChunk>,
    /// The chunk being merged.
    current: Option<Current>,
    /// The next chunk's number.
    next: usize,
    /// Lines of the chunks before `current`.
    base: u64,
    total: Option<usize>,
}

struct Current {
    order: std::vec::IntoIter<i64>,
    head: Option<i64>,
    bad: std::vec::IntoIter<Item>,
    lines: u64,
}

enum Head {
    Time(i64),
    Done,
    Wait,
}

impl RouterFile {
    fn head(&mut self) -> Head {
        loop {
            if let Some(c) = &mut self.current {
                if c.head.is_none() {
                    c.head = c.order.next();
                }
                if let Some(t) = c.head {
                    return Head::Time(t);
                }
                self.base += c.lines;
                self.current = None;
            }
            if let Some(c) = self.pending.remove(&self.next) {
                self.next += 1;
                self.current = Some(Current {
                    order: c.order.into_iter(),
                    head: None,
                    bad: c.bad.into_iter(),
                    lines: c.lines,
                });
            } else if self.total.is_some_and(|t| self.next >= t) {
                return Head::Done;
            } else {
                return Head::Wait;
            }
        }
    }

    /// Takes the head (after [`RouterFile::head`]); a bad line comes back with its line number
    /// in the file.
    fn take(&mut self) -> Option<(u64, Item)> {
        let c = self.current.as_mut()?;
        if c.head.take()? != BAD {
            return None;
        }
        let item = c.bad.next()?;
        let Item::Bad { line, .. } = &item else {
            return None;
        };
        Some((self.base + line, item))
    }
}

fn display(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn thread_error(what: &str) -> SourceError {
    source_error(
        Path::new("<replay worker>"),
        std::io::Error::other(what.to_string()),
    )
}

/// The partitioned replay of `opts` (see the module documentation), showing every row and
/// touch to `observer`.
///
/// Outputs are created in `outputs` (temporary files, renamed by the caller on success).
/// Returns the summary and, per input (clicks, checkouts), its lines and bad lines.
pub(crate) fn replay_partitioned<O: RowObserver>(
    opts: &ReplayOptions,
    observer: O,
    outputs: &mut StagedOutputs,
) -> Result<(Summary, [(u64, u64); 2]), ReplayError> {
    let tuning = Tuning {
        chunk: crate::chunked::CHUNK,
        window: WINDOW,
    };
    replay_tuned(opts, observer, outputs, tuning)
}

fn replay_tuned<O: RowObserver>(
    opts: &ReplayOptions,
    observer: O,
    outputs: &mut StagedOutputs,
    tuning: Tuning,
) -> Result<(Summary, [(u64, u64); 2]), ReplayError> {
    let par = opts.parallelism;
    let users: UserNames = match &opts.users {
        Some(p) => load_users(p)?,
        None => UserNames::default(),
    };
    let started = Instant::now();
    let users = Arc::new(users);
    let files = [
        ChunkedFile::open(&opts.clicks, EventKind::Click, tuning.chunk)?,
        ChunkedFile::open(&opts.checkouts, EventKind::Checkout, tuning.chunk)?,
    ];
    let rows = outputs.create(&opts.out)?;
    let mut create =
        |p: &Option<std::path::PathBuf>| p.as_deref().map(|p| outputs.create(p)).transpose();
    let late = create(&opts.late)?;
    let touches = create(&opts.touches)?;
    let dead = create(&opts.dead_letter)?;
    let partitions = par.partitions.max(1) as usize;
    let pool = Arc::new(Pool::default());
    let workers = par.threads.max(1);
    let parts = (0..partitions)
        .map(|p| {
            let mut r = Runner::new(p, opts.engine, users.clone(), pool.clone());
            r.late = opts.late.is_some();
            r.touches = opts.touches.is_some();
            r.observe = observer.wants_rows();
            r.processed_at = par.processed_at;
            PartState {
                inbox: [BTreeMap::new(), BTreeMap::new()],
                consumed: [0, 0],
                need: None,
                runner: Some(Box::new(r)),
                done: false,
            }
        })
        .collect();
    let total_bytes = files[0].size + files[1].size;
    let shared = Shared {
        state: Mutex::new(State {
            parts,
            files: [FileState::default(), FileState::default()],
            idle: 0,
            finished: 0,
            writer_waiting: false,
            error: None,
        }),
        wake: Condvar::new(),
        abort: AtomicBool::new(false),
        backlog: AtomicUsize::new(0),
        files,
        partitions,
        workers,
        window: tuning.window.max(1),
        pool,
    };
    let bar =
        (opts.progress && std::io::stderr().is_terminal() && total_bytes > 32 << 20).then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
    let mut writer = Writer {
        sh: &shared,
        observer,
        rows,
        late,
        touches,
        held: (0..partitions)
            .map(|_| Held {
                queue: VecDeque::new(),
                clock: i64::MIN,
                summary: None,
            })
            .collect(),
        router: Router::default(),
        dead,
        report: std::io::BufWriter::new(std::io::stderr()),
        names: [display(&opts.clicks), display(&opts.checkouts)],
    };
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let outcome: Result<(), ReplayError> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(workers);
        let mut spawn_error = None;
        for id in 0..workers {
            let tx = tx.clone();
            let sh = &shared;
            match std::thread::Builder::new()
                .name(format!("replay-{id}"))
                .spawn_scoped(s, move || worker(sh, id, &tx))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(e);
                    shared.stop();
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.run(&rx, bar.as_ref());
        if written.is_err() {
            shared.stop();
        }
        drop(rx);
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        // The first cause: a read error, a worker that could not start, a write error, a panic.
        if let Some(e) = shared.lock().error.take() {
            return Err(e.into());
        }
        if let Some(e) = spawn_error {
            return Err(thread_error(&format!("cannot start a replay worker: {e}")).into());
        }
        written?;
        if panicked {
            return Err(thread_error("a replay worker panicked").into());
        }
        Ok(())
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outcome?;
    writer.finish()?;
    let mut summary = Summary::default();
    for h in &writer.held {
        let Some(s) = &h.summary else {
            return Err(thread_error("a partition stopped before the end of its input").into());
        };
        summary.events_read += s.events_read;
        summary.clicks += s.clicks;
        summary.checkouts += s.checkouts;
        summary.rows += s.rows;
        summary.touches += s.touches;
        summary.attributed += s.attributed;
        summary.unattributed += s.unattributed;
        summary.late_clicks += s.late_clicks;
        summary.late_checkouts += s.late_checkouts;
        summary.duplicate_clicks += s.duplicate_clicks;
        summary.duplicate_checkouts += s.duplicate_checkouts;
        summary.unknown_users += s.unknown_users;
        summary.peak_live_clicks += s.peak_live_clicks;
    }
    summary.bad = writer.router.bad;
    summary.events_read += summary.bad;
    summary.elapsed = started.elapsed();
    let [bad_clicks, bad_checkouts] = writer.router.bad_by_file;
    let counts = [
        (summary.clicks + bad_clicks, bad_clicks),
        (summary.checkouts + bad_checkouts, bad_checkouts),
    ];
    Ok((summary, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::RowObserver;
    use std::fmt::Write as _;

    fn time(secs: i64) -> String {
        EventTime::from_micros((1_767_225_600 + secs) * 1_000_000).to_rfc3339()
    }

    fn options(dir: &Path, name: &str, partitions: u32, threads: usize) -> ReplayOptions {
        let out = |f: &str| dir.join(format!("{name}-{f}.ndjson"));
        ReplayOptions {
            clicks: dir.join("clicks.ndjson"),
            checkouts: dir.join("checkouts.ndjson"),
            users: None,
            out: out("rows"),
            late: Some(out("late")),
            touches: Some(out("touches")),
            dead_letter: Some(out("dead")),
            engine: EngineConfig::default(),
            progress: false,
            max_bad_share: 1.0,
            parallelism: Parallelism {
                partitions,
                threads,
                processed_at: Some(EventTime::from_micros(0)),
            },
        }
    }

    fn outputs(opts: &ReplayOptions) -> Vec<Vec<u8>> {
        [
            &opts.out,
            opts.late.as_ref().expect("late"),
            opts.touches.as_ref().expect("touches"),
            opts.dead_letter.as_ref().expect("dead"),
        ]
        .iter()
        .map(|p| std::fs::read(p).expect("output"))
        .collect()
    }

    /// Two users in different partitions whose events sit in opposite halves of the two
    /// files: each partition needs chunks of one file far ahead of where the other partition
    /// holds the window, so with a small window every worker would wait on the other. The
    /// replay still ends, with the outputs of a window as large as the files, which in turn
    /// shows that the outputs do not depend on the chunking.
    #[test]
    fn inputs_far_apart_in_time_neither_stall_nor_change_the_outputs() {
        let (a, b) = (
            1,
            (2..)
                .find(|u| {
                    firstclick_partition::partition_of(*u, 2)
                        != firstclick_partition::partition_of(1, 2)
                })
                .unwrap_or(2),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut clicks, mut checkouts) = (String::new(), String::new());
        let click = |s: &mut String, user: i64, i: i64, t: i64| {
            let _ = writeln!(
                s,
                r#"{{"click_id":"c{user}-{i}","user_id":{user},"product_id":"p{}","datetime_occured":"{}"}}"#,
                i % 7,
                time(t)
            );
        };
        for i in 0..2_000 {
            click(&mut clicks, a, i, 10_000 + i);
        }
        clicks.push_str("not json\n");
        for i in 0..2_000 {
            click(&mut clicks, b, i, i);
        }
        let checkout = |s: &mut String, user: i64, i: i64, t: i64| {
            let _ = writeln!(
                s,
                r#"{{"checkout_id":"k{user}-{i}","user_id":{user},"product_id":"p{}","total_amount":12.5,"datetime_occured":"{}"}}"#,
                i % 7,
                time(t)
            );
        };
        for i in 0..1_000 {
            checkout(&mut checkouts, b, i, 2 * i + 1);
        }
        checkouts.push_str("{\"checkout_id\": 3}\n");
        for i in 0..1_000 {
            checkout(&mut checkouts, a, i, 10_000 + 2 * i + 1);
        }
        std::fs::write(dir.path().join("clicks.ndjson"), clicks).expect("clicks");
        std::fs::write(dir.path().join("checkouts.ndjson"), checkouts).expect("checkouts");

        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let run = |name: &str, tuning: Tuning| {
                let opts = options(&path, name, 2, 2);
                let mut staged = StagedOutputs::new();
                let (summary, _) =
                    replay_tuned(&opts, crate::NoObserver, &mut staged, tuning).expect("replay");
                staged.commit().expect("outputs in place");
                (summary, outputs(&opts))
            };
            let small = run(
                "small",
                Tuning {
                    chunk: 2048,
                    window: 2,
                },
            );
            let whole = run(
                "whole",
                Tuning {
                    chunk: 1 << 24,
                    window: 64,
                },
            );
            let _ = tx.send((small, whole));
        });
        let ((small, small_out), (whole, whole_out)) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the replay with a small window stalled");
        assert_eq!(small.rows, 2_000);
        assert_eq!(small.bad, 2);
        assert!(small.attributed > 1_000, "{small:?}");
        assert_eq!(small_out, whole_out);
        assert_eq!(
            Summary {
                elapsed: Duration::ZERO,
                ..small
            },
            Summary {
                elapsed: Duration::ZERO,
                ..whole
            }
        );
    }

    #[derive(Default)]
    struct Count {
        rows: u64,
        touches: u64,
    }

    impl RowObserver for Count {
        fn observe_row(&mut self, _: &AttributedRow) {
            self.rows += 1;
        }
        fn observe_touch(&mut self, _: &TouchRow) {
            self.touches += 1;
        }
    }

    /// An observer sees every row and touch of every partition.
    #[test]
    fn the_observer_sees_every_row_and_touch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut clicks = String::new();
        let mut checkouts = String::new();
        for i in 0..3_000i64 {
            let user = i % 13;
            let _ = writeln!(
                clicks,
                r#"{{"click_id":"c{i}","user_id":{user},"product_id":"p{}","datetime_occured":"{}"}}"#,
                i % 5,
                time(i)
            );
            if i % 3 == 0 {
                let _ = writeln!(
                    checkouts,
                    r#"{{"checkout_id":"k{i}","user_id":{user},"product_id":"p{}","total_amount":3,"datetime_occured":"{}"}}"#,
                    (i + 1) % 5,
                    time(i + 30)
                );
            }
        }
        std::fs::write(dir.path().join("clicks.ndjson"), clicks).expect("clicks");
        std::fs::write(dir.path().join("checkouts.ndjson"), checkouts).expect("checkouts");
        let mut opts = options(dir.path(), "o", 4, 2);
        opts.engine.models = firstclick_model::ModelSet::of(&[
            firstclick_model::AttributionModel::FirstClick,
            firstclick_model::AttributionModel::Linear,
        ]);
        let mut count = Count::default();
        let mut staged = StagedOutputs::new();
        let (summary, _) = replay_partitioned(&opts, &mut count, &mut staged).expect("replay");
        assert_eq!(summary.rows, 2_000);
        assert_eq!(count.rows, summary.rows);
        assert!(summary.touches > 0);
        assert_eq!(count.touches, summary.touches);
    }
}
