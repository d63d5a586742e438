//! [`Engine`]: watermark, pending checkouts, finality, eviction and statistics.
//!
//! The connectors call [`Engine::on_click`] and [`Engine::on_checkout`] in arrival order, then
//! [`Engine::drain_final`] to collect every checkout that the watermark has made final, each with
//! its attributed click. A streaming shell also calls [`Engine::tick`] with the processing time,
//! so a quiet click stream does not hold checkouts forever; a replay calls [`Engine::flush`] at
//! the end of its input.

use firstclick_model::{AttributedRow, Checkout, Click, ClickRef, EventTime, Id, RowRef, TouchRow};

use crate::credit::Attribution;

use crate::clicks::{ClickKey, ClickStore, Inserted, SeenCheckouts, STATE_SHARDS};

/// Shards evicted per [`Engine::drain_final`] call after a sweep: a sweep moves the horizon at
/// once (clicks and ids below it stop counting), while the memory is given back a few shards
/// at a time, so no single call walks millions of entries.
const EVICT_SHARDS_PER_CALL: usize = 2;
use crate::config::EngineConfig;
use crate::pending::PendingCheckouts;

/// What the engine did with a click.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickOutcome {
    /// Stored; it will take part in attributing checkouts that are not final yet.
    Stored,
    /// A click with this id is already stored for the same user and product; ignored.
    Duplicate,
    /// The watermark had already passed the click's time, so rows it could have changed may
    /// already be written. It is still stored for checkouts that are not final yet when
    /// `stored`; it is dropped when it is too old to matter to any of them.
    Late {
        /// Whether the click was kept for checkouts that are still pending.
        stored: bool,
    },
}

/// What the engine did with a checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// Held until the watermark makes it final.
    Pending,
    /// A checkout with this id was already received; it produces no second row.
    Duplicate,
    /// It arrived so far behind the clicks that part of its window may already be evicted. It
    /// still produces its row, attributed with the clicks that are left.
    Late,
}

/// A checkout that is final, with what each model makes of it.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalCheckout {
    /// The checkout.
    pub checkout: Checkout,
    /// One per model of [`EngineConfig::models`], in [`firstclick_model::AttributionModel::ALL`] order.
    pub attributions: Vec<Attribution>,
}

impl FinalCheckout {
    /// The credited click of the first model (the one click of a single-model run); `None` for
    /// an organic checkout.
    pub fn click(&self) -> Option<&ClickRef> {
        self.attributions.first().and_then(|a| a.click.as_ref())
    }

    /// The output rows, borrowed, once the buyer's name is known: one per model, as
    /// [`FinalCheckout::into_rows`] makes them, for writers that need no owned row.
    pub fn rows<'a>(
        &'a self,
        user_name: Option<&'a str>,
        processed_at: EventTime,
    ) -> impl Iterator<Item = RowRef<'a>> + 'a {
        self.attributions.iter().map(move |a| RowRef {
            checkout: &self.checkout,
            user_name,
            click: a.click.as_ref(),
            model: a.model,
            processed_at,
        })
    }

    /// How many touch rows [`FinalCheckout::into_rows`] makes (multi-touch models only).
    pub fn touch_count(&self) -> usize {
        self.attributions.iter().map(|a| a.touches.len()).sum()
    }

    /// The output rows, once the buyer's name is known: one row per model, and for the
    /// multi-touch models one touch row per credited click.
    pub fn into_rows(
        self,
        user_name: Option<String>,
        processed_at: EventTime,
    ) -> (Vec<AttributedRow>, Vec<TouchRow>) {
        let FinalCheckout {
            checkout,
            attributions,
        } = self;
        let mut rows = Vec::with_capacity(attributions.len());
        let mut touches = Vec::new();
        for a in &attributions {
            touches.extend(a.touches.iter().map(|t| TouchRow {
                checkout_id: checkout.checkout_id.clone(),
                user_id: checkout.user_id,
                product_id: checkout.product_id.clone(),
                checkout_time: checkout.time,
                click: t.click.clone(),
                model: a.model,
                credit: t.credit,
                credited_revenue: t.revenue,
                processed_at,
            }));
        }
        // Every model's row but the last gets a copy; the last takes the checkout itself, so
        // the one row of a single-model run costs no copy (this runs once per output row).
        let last = attributions.len().saturating_sub(1);
        let mut checkout = Some(checkout);
        for (i, a) in attributions.into_iter().enumerate() {
            let c = if i == last {
                checkout.take()
            } else {
                checkout.clone()
            };
            let Some(c) = c else { break };
            rows.push(AttributedRow {
                checkout: c,
                user_name: user_name.clone(),
                click: a.click,
                model: a.model,
                processed_at,
            });
        }
        (rows, touches)
    }
}

/// Counters, cumulative since the engine was created (or restored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineStats {
    /// Clicks received.
    pub clicks: u64,
    /// Clicks ignored as duplicates of a stored click.
    pub duplicate_clicks: u64,
    /// Clicks that arrived after the watermark passed their time.
    pub late_clicks: u64,
    /// Checkouts received.
    pub checkouts: u64,
    /// Checkouts ignored as duplicates.
    pub duplicate_checkouts: u64,
    /// Checkouts that arrived behind the retained state.
    pub late_checkouts: u64,
    /// Final checkouts handed out (one per distinct checkout id).
    pub rows: u64,
    /// Of those, with a click.
    pub attributed: u64,
    /// Of those, without a click (organic).
    pub organic: u64,
    /// Clicks whose memory was freed once they fell below the eviction horizon (counted when
    /// freed, a few shards at a time after each sweep; a restore does not count the clicks
    /// that were below the horizon but not freed yet when its checkpoint was taken).
    pub evicted_clicks: u64,
}

/// Processing-time bookkeeping for the idle advance of the watermark.
#[derive(Clone, Debug, Default)]
struct Idle {
    /// A click arrived since the last tick.
    clicks_since_tick: bool,
    /// Processing time (µs) of the first tick without clicks.
    since: Option<i64>,
    /// The event time the idle advance counts from.
    base: Option<EventTime>,
}

/// One input of clicks with its own event-time progress: a Pub/Sub streaming pull, a file.
/// Each keeps roughly its own order, while several interleave arbitrarily, so the watermark
/// follows the slowest active stream (as Flink does per partition).
#[derive(Clone, Debug, Default)]
struct ClickStream {
    /// The largest click time this stream delivered.
    max_time: Option<EventTime>,
    /// A click arrived from it since the last tick.
    clicks_since_tick: bool,
    /// Processing time (µs) of the last tick at which it had delivered clicks.
    last_active: Option<i64>,
    /// No click for the idle timeout: it no longer holds the watermark back.
    idle: bool,
}

/// The first-click attribution state machine. See the crate documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) clicks: ClickStore,
    pending: PendingCheckouts,
    pub(crate) seen_checkouts: SeenCheckouts,
    pub(crate) max_click_time: Option<EventTime>,
    pub(crate) watermark: Option<EventTime>,
    pub(crate) last_sweep: Option<EventTime>,
    idle: Idle,
    streams: Vec<ClickStream>,
    /// Processing time (µs) until which the watermark stays where it is (recovery).
    hold_until: Option<i64>,
    /// Processing time of the last tick.
    last_tick: Option<i64>,
    /// The next shard to evict below the swept horizon (`STATE_SHARDS`: all done).
    evict_cursor: usize,
    pub(crate) stats: EngineStats,
    /// The window of the checkout being finished (reused: one allocation, not one per
    /// checkout).
    window: Vec<ClickRef>,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            clicks: ClickStore::default(),
            pending: PendingCheckouts::default(),
            seen_checkouts: SeenCheckouts::default(),
            max_click_time: None,
            watermark: None,
            last_sweep: None,
            idle: Idle::default(),
            streams: vec![ClickStream::default()],
            hold_until: None,
            last_tick: None,
            evict_cursor: STATE_SHARDS,
            stats: EngineStats::default(),
            window: Vec::new(),
        }
    }

    /// Keeps the watermark where it is until processing time `until_micros` (as passed to
    /// [`Engine::tick`]). After a crash, the messages that were in flight come back only once
    /// their Pub/Sub lease expires, behind newer ones; holding the watermark for that long lets
    /// them in on time instead of late.
    pub fn hold_watermark_until(&mut self, until_micros: i64) {
        self.hold_until = Some(until_micros);
    }

    /// Whether the watermark is held (see [`Engine::hold_watermark_until`]).
    pub fn watermark_held(&self) -> bool {
        self.hold_until.is_some()
    }

    /// An empty engine whose clicks come from `streams` inputs (see [`Engine::on_click_from`]).
    pub fn with_streams(config: EngineConfig, streams: usize) -> Self {
        let mut engine = Engine::new(config);
        engine.expect_streams(streams);
        engine
    }

    /// Declares that clicks come from `streams` inputs, each of which holds the watermark back
    /// until it delivers or goes idle (for instance after restoring a snapshot).
    pub fn expect_streams(&mut self, streams: usize) {
        if streams > self.streams.len() {
            self.streams.resize(streams, ClickStream::default());
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The current watermark; `None` before the first click (or idle advance).
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark
    }

    /// The largest click event time seen.
    pub fn max_click_time(&self) -> Option<EventTime> {
        self.max_click_time
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Number of clicks held in state.
    pub fn live_clicks(&self) -> usize {
        self.clicks.len()
    }

    /// Number of checkouts waiting for the watermark.
    pub fn pending_checkouts(&self) -> usize {
        self.pending.len()
    }

    /// Number of checkout ids remembered for de-duplication.
    pub fn remembered_checkouts(&self) -> usize {
        self.seen_checkouts.len()
    }

    /// Heap bytes held by the click store (see [`ClickStore::heap_bytes`]).
    pub fn click_state_bytes(&self) -> usize {
        self.clicks.heap_bytes()
    }

    /// The click store, read-only.
    pub fn clicks(&self) -> &ClickStore {
        &self.clicks
    }

    /// The oldest event time still kept in state, given the current watermark.
    fn horizon(&self) -> Option<EventTime> {
        self.watermark
            .map(|w| w.offset(-self.config.retention_micros()))
    }

    /// Takes in one click (from stream 0: a single, roughly ordered input).
    pub fn on_click(&mut self, click: Click) -> ClickOutcome {
        self.on_click_from(0, click)
    }

    /// Takes in one click delivered by input `stream`. The watermark is the smallest of the
    /// active streams' largest click times, less the out-of-orderness; a stream that has not
    /// delivered yet holds it back until it is idle for the idle timeout (see [`Engine::tick`]).
    pub fn on_click_from(&mut self, stream: usize, click: Click) -> ClickOutcome {
        self.stats.clicks += 1;
        self.idle.clicks_since_tick = true;
        let watermark_before = self.watermark;
        if stream >= self.streams.len() {
            self.streams.resize(stream + 1, ClickStream::default());
        }
        if self.streams.iter().all(|s| s.idle) {
            // The first click after a quiet period (or at start-up): every stream gets a full
            // idle timeout to show up again before the first one alone sets the watermark.
            for s in &mut self.streams {
                s.idle = false;
                s.clicks_since_tick = false;
                s.last_active = self.last_tick;
            }
        }
        let s = &mut self.streams[stream];
        s.clicks_since_tick = true;
        s.idle = false;
        if s.max_time.is_none_or(|m| click.time > m) {
            s.max_time = Some(click.time);
        }
        if self.max_click_time.is_none_or(|m| click.time > m) {
            self.max_click_time = Some(click.time);
        }
        self.advance_to_streams();
        if let Some(h) = watermark_before.map(|w| w.offset(-self.config.retention_micros())) {
            if click.time < h {
                self.stats.late_clicks += 1;
                return ClickOutcome::Late { stored: false };
            }
        }
        let key = ClickKey {
            user_id: click.user_id,
            product_id: click.product_id,
        };
        let stored = ClickRef {
            time: click.time,
            click_id: click.click_id,
        };
        match self.clicks.insert(key, stored, self.swept_horizon()) {
            Inserted::Duplicate => {
                self.stats.duplicate_clicks += 1;
                ClickOutcome::Duplicate
            }
            Inserted::New if watermark_before.is_some_and(|w| click.time < w) => {
                self.stats.late_clicks += 1;
                ClickOutcome::Late { stored: true }
            }
            Inserted::New => ClickOutcome::Stored,
        }
    }

    /// Records that `stream` delivered something without an event time (a message refused as
    /// malformed): it is alive, so it must not be taken for idle.
    pub fn stream_alive(&mut self, stream: usize) {
        if let Some(s) = self.streams.get_mut(stream) {
            if !s.idle {
                s.clicks_since_tick = true;
            }
        }
    }

    /// Moves the watermark to the slowest active stream, less the out-of-orderness (never back).
    fn advance_to_streams(&mut self) {
        if self.hold_until.is_some() {
            return;
        }
        let mut slowest: Option<EventTime> = None;
        let mut fastest: Option<EventTime> = None;
        let mut any_active = false;
        for s in &self.streams {
            fastest = fastest.max(s.max_time);
            if s.idle {
                continue;
            }
            any_active = true;
            match s.max_time {
                // An active stream that has not delivered yet holds the watermark back.
                None => return,
                Some(m) => slowest = Some(slowest.map_or(m, |x| x.min(m))),
            }
        }
        // With every stream idle, the newest click seen sets it: the same as the fastest
        // stream in a live engine, and what a restored engine's checkpoint remembers when
        // nothing new arrives after a restart (its streams start empty).
        let progress = if any_active {
            slowest
        } else {
            fastest.max(self.max_click_time)
        };
        if let Some(p) = progress {
            let candidate = p.offset(-self.config.out_of_orderness_micros);
            if self.watermark.is_none_or(|w| candidate > w) {
                self.watermark = Some(candidate);
            }
        }
    }

    /// Takes in one checkout; it becomes final once the watermark passes its time.
    pub fn on_checkout(&mut self, checkout: Checkout) -> CheckoutOutcome {
        self.stats.checkouts += 1;
        let horizon = self.swept_horizon();
        if !self
            .seen_checkouts
            .insert(checkout.checkout_id.clone(), checkout.time, horizon)
        {
            self.stats.duplicate_checkouts += 1;
            return CheckoutOutcome::Duplicate;
        }
        let late = self
            .watermark
            .is_some_and(|w| checkout.time < w.offset(-self.config.out_of_orderness_micros));
        if late {
            self.stats.late_checkouts += 1;
        }
        self.pending.push(checkout);
        if late {
            CheckoutOutcome::Late
        } else {
            CheckoutOutcome::Pending
        }
    }

    /// Moves processing time forward to `now_micros` (any monotonic clock, in µs). When no click
    /// has arrived for the idle timeout, the watermark advances by the processing time passed
    /// since the clicks stopped; it never jumps to the wall clock. With no click ever seen, the
    /// advance starts from the earliest pending checkout, less the out-of-orderness.
    pub fn tick(&mut self, now_micros: i64) {
        self.last_tick = Some(now_micros);
        let idle_timeout = self.config.idle_timeout_micros;
        let mut changed = false;
        if let Some(until) = self.hold_until {
            if now_micros < until {
                // Held: streams and idleness start counting when the hold ends.
                for s in &mut self.streams {
                    s.clicks_since_tick = false;
                    s.last_active = Some(now_micros);
                }
                self.idle = Idle::default();
                return;
            }
            self.hold_until = None;
            changed = true;
        }
        for s in &mut self.streams {
            if s.clicks_since_tick || s.last_active.is_none() {
                s.clicks_since_tick = false;
                s.last_active = Some(now_micros);
            } else if !s.idle
                && s.last_active
                    .is_some_and(|t| now_micros.saturating_sub(t) >= idle_timeout)
            {
                s.idle = true;
                changed = true;
            }
        }
        if changed {
            self.advance_to_streams();
        }
        if self.idle.clicks_since_tick || self.idle.since.is_none() {
            self.idle = Idle {
                clicks_since_tick: false,
                since: Some(now_micros),
                base: self.watermark,
            };
            return;
        }
        let since = self.idle.since.unwrap_or(now_micros);
        let idle_for = now_micros.saturating_sub(since);
        if idle_for < self.config.idle_timeout_micros {
            return;
        }
        if self.idle.base.is_none() {
            self.idle.base = self
                .pending
                .earliest_time()
                .map(|t| t.offset(-self.config.out_of_orderness_micros));
        }
        if let Some(base) = self.idle.base {
            let candidate = base.offset(idle_for);
            if self.watermark.is_none_or(|w| candidate > w) {
                self.watermark = Some(candidate);
            }
        }
    }

    /// Appends to `out` every pending checkout the watermark has passed, in event-time order,
    /// then evicts state that has become too old. Returns how many were appended.
    pub fn drain_final(&mut self, out: &mut Vec<FinalCheckout>) -> usize {
        let Some(w) = self.watermark else {
            return 0;
        };
        let before = out.len();
        while self.pending.earliest_time().is_some_and(|t| t < w) {
            if let Some(checkout) = self.pending.pop() {
                out.push(self.finish(checkout));
            }
        }
        if self
            .last_sweep
            .is_none_or(|s| w.as_micros() - s.as_micros() >= self.config.sweep_interval_micros())
        {
            self.sweep();
        }
        self.evict_some();
        out.len() - before
    }

    /// Appends every pending checkout to `out`, final or not (end of a replay's input).
    pub fn flush(&mut self, out: &mut Vec<FinalCheckout>) -> usize {
        let before = out.len();
        while let Some(checkout) = self.pending.pop() {
            out.push(self.finish(checkout));
        }
        out.len() - before
    }

    fn finish(&mut self, checkout: Checkout) -> FinalCheckout {
        let key = ClickKey {
            user_id: checkout.user_id,
            product_id: checkout.product_id.clone(),
        };
        let horizon = self.swept_horizon();
        self.clicks.window(
            &key,
            checkout.time,
            self.config.lookback_micros,
            horizon,
            &mut self.window,
        );
        self.stats.rows += 1;
        if self.window.is_empty() {
            self.stats.organic += 1;
        } else {
            self.stats.attributed += 1;
        }
        let attributions = crate::credit::attribute(
            &self.config,
            self.config.models,
            &self.window,
            checkout.time,
            checkout.total_amount,
        );
        FinalCheckout {
            checkout,
            attributions,
        }
    }

    /// Moves the eviction horizon to `watermark - retention`: from now on clicks and
    /// remembered ids below it do not count; [`Engine::evict_some`] frees them shard by shard.
    fn sweep(&mut self) {
        if self.horizon().is_none() {
            return;
        }
        self.last_sweep = self.watermark;
        self.evict_cursor = 0;
    }

    /// Evicts a few shards below the swept horizon.
    fn evict_some(&mut self) {
        let Some(h) = self.swept_horizon() else {
            return;
        };
        let end = (self.evict_cursor + EVICT_SHARDS_PER_CALL).min(STATE_SHARDS);
        for shard in self.evict_cursor..end {
            self.stats.evicted_clicks += self.clicks.evict_shard_before(shard, h) as u64;
            self.seen_checkouts.evict_shard_before(shard, h);
        }
        self.evict_cursor = end;
    }

    /// The pending checkouts, in arrival order.
    pub fn pending_in_order(&self) -> Vec<Checkout> {
        self.pending
            .in_arrival_order()
            .into_iter()
            .cloned()
            .collect()
    }

    /// Remembered checkout ids, read-only.
    pub fn seen_checkouts(&self) -> &SeenCheckouts {
        &self.seen_checkouts
    }

    /// The eviction horizon of the last sweep: every click and remembered checkout id older
    /// than it is gone. `None` before the first sweep.
    pub fn swept_horizon(&self) -> Option<EventTime> {
        self.last_sweep
            .map(|w| w.offset(-self.config.retention_micros()))
    }

    pub(crate) fn push_pending(&mut self, checkout: Checkout) {
        self.pending.push(checkout);
    }

    pub(crate) fn insert_restored_click(&mut self, key: ClickKey, click: ClickRef) {
        let _ = self.clicks.insert(key, click, None);
    }

    pub(crate) fn insert_restored_seen(&mut self, id: Id, time: EventTime) {
        let _ = self.seen_checkouts.insert(id, time, None);
    }

    /// Whether a click or remembered id at `time` still counts (is not below the horizon).
    pub fn counts(&self, time: EventTime) -> bool {
        self.swept_horizon().is_none_or(|h| time >= h)
    }

    pub(crate) fn set_progress(&mut self, progress: Progress) {
        self.max_click_time = progress.max_click_time;
        self.watermark = progress.watermark;
        if progress.last_sweep != self.last_sweep {
            self.evict_cursor = 0;
        }
        self.last_sweep = progress.last_sweep;
        self.stats = progress.stats;
    }

    /// The engine's event-time progress and counters (what a checkpoint records at its end).
    pub fn progress(&self) -> Progress {
        Progress {
            max_click_time: self.max_click_time,
            watermark: self.watermark,
            last_sweep: self.last_sweep,
            stats: self.stats,
        }
    }

    /// Applies the eviction horizon `horizon` (as [`Engine::swept_horizon`] reports it).
    pub(crate) fn evict_restored(&mut self, horizon: EventTime) {
        self.clicks.evict_before(horizon);
        self.seen_checkouts.evict_before(horizon);
    }
}

/// The small part of the engine's state: watermark, progress and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Largest click time seen.
    pub max_click_time: Option<EventTime>,
    /// The watermark.
    pub watermark: Option<EventTime>,
    /// The watermark at the last eviction sweep.
    pub last_sweep: Option<EventTime>,
    /// Counters.
    pub stats: EngineStats,
}
