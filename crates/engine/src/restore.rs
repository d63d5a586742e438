//! [`Restorer`]: rebuilds an engine from a checkpoint's parts, in any order that a changelog
//! replay produces.
//!
//! A checkpoint is a base snapshot taken piece by piece from the live engine while it kept
//! changing (a "fuzzy" snapshot), followed by the changelog of everything that happened from the
//! moment the base was started. Replaying the changelog over such a base gives the exact state
//! because every change is idempotent and commutes with the base:
//! - a click or a remembered checkout id is a set member: adding it twice is adding it once;
//! - the eviction horizon only grows, and every click is added at or after the horizon of its
//!   time, so evicting below the latest horizon once is the same as every sweep that happened;
//! - a pending checkout is added by its id and removed by its id ("finished"), and a finish is
//!   always logged after the add of the same checkout.
//!
//! The progress (watermark, counters) is taken from the last part that carries one.

use std::collections::HashMap;

use firstclick_model::{Checkout, ClickRef, EventTime, Id};

use crate::clicks::ClickKey;
use crate::config::EngineConfig;
use crate::engine::{Engine, Progress};

/// See the module documentation.
#[derive(Debug)]
pub struct Restorer {
    engine: Engine,
    /// Pending checkouts by id, with their arrival order.
    pending: HashMap<Id, (u64, Checkout), foldhash::fast::FixedState>,
    next_seq: u64,
    horizon: Option<EventTime>,
    /// The horizon memory was last freed at, and the clicks inserted since.
    evicted_at: Option<EventTime>,
    inserted_since: usize,
}

impl Restorer {
    /// Starts from an empty engine with `config`.
    pub fn new(config: EngineConfig) -> Self {
        Restorer {
            engine: Engine::new(config),
            pending: HashMap::default(),
            next_seq: 0,
            horizon: None,
            evicted_at: None,
            inserted_since: 0,
        }
    }

    /// Makes room in shard `shard` (`0..STATE_SHARDS`) for `keys` click keys and `ids`
    /// remembered checkout ids, so that restoring millions of clicks does not grow the tables
    /// step by step.
    pub fn reserve(&mut self, shard: usize, keys: usize, ids: usize) {
        self.engine.clicks.reserve(shard, keys);
        self.engine.seen_checkouts.reserve(shard, ids);
    }

    /// A live click.
    pub fn click(&mut self, key: ClickKey, click: ClickRef) {
        if self.horizon.is_some_and(|h| click.time < h) {
            return;
        }
        self.engine.insert_restored_click(key, click);
        self.inserted_since += 1;
    }

    /// A remembered checkout id.
    pub fn seen_checkout(&mut self, id: Id, time: EventTime) {
        // (Ids below the horizon are freed with the clicks.)
        if self.horizon.is_some_and(|h| time < h) {
            return;
        }
        self.engine.insert_restored_seen(id, time);
    }

    /// A checkout that was taken in and is not final yet (unless a later [`Restorer::finished`]
    /// says so). It is also remembered for de-duplication.
    pub fn pending_checkout(&mut self, checkout: Checkout) {
        self.seen_checkout(checkout.checkout_id.clone(), checkout.time);
        if !self.pending.contains_key(&checkout.checkout_id) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pending
                .insert(checkout.checkout_id.clone(), (seq, checkout));
        }
    }

    /// A checkout that became final (its row is written).
    pub fn finished(&mut self, id: &Id) {
        self.pending.remove(id);
    }

    /// An eviction sweep at `horizon` (as [`Engine::swept_horizon`] reports it). Clicks below
    /// it are dropped as they come; the memory of those already held is freed once a quarter
    /// of the state was inserted since the last time (a changelog holds several sweeps, and a
    /// pass over millions of clicks for each would dominate the restore), and at the end.
    pub fn horizon(&mut self, horizon: EventTime) {
        if self.horizon.is_none_or(|h| horizon > h) {
            self.horizon = Some(horizon);
            if self.inserted_since * 8 >= self.engine.live_clicks().max(1) {
                self.free_below_horizon();
            }
        }
    }

    fn free_below_horizon(&mut self) {
        if let Some(h) = self.horizon {
            if self.evicted_at != Some(h) {
                self.engine.evict_restored(h);
                self.evicted_at = Some(h);
                self.inserted_since = 0;
            }
        }
    }

    /// Watermark, progress and counters at the end of a part; the last call wins.
    pub fn progress(&mut self, progress: Progress) {
        self.engine.set_progress(progress);
    }

    /// Clicks held so far.
    pub fn live_clicks(&self) -> usize {
        self.engine.live_clicks()
    }

    /// The engine.
    pub fn finish(mut self) -> Engine {
        self.free_below_horizon();
        let mut pending: Vec<(u64, Checkout)> = self.pending.into_values().collect();
        pending.sort_by_key(|(seq, _)| *seq);
        for (_, checkout) in pending {
            self.engine.push_pending(checkout);
        }
        self.engine
    }
}
