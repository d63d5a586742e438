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
}

impl Restorer {
    /// Starts from an empty engine with `config`.
    pub fn new(config: EngineConfig) -> Self {
        Restorer {
            engine: Engine::new(config),
            pending: HashMap::default(),
            next_seq: 0,
            horizon: None,
        }
    }

    /// A live click.
    pub fn click(&mut self, key: ClickKey, click: ClickRef) {
        if self.horizon.is_some_and(|h| click.time < h) {
            return;
        }
        self.engine.insert_restored_click(key, click);
    }

    /// A remembered checkout id.
    pub fn seen_checkout(&mut self, id: Id, time: EventTime) {
        if self.horizon.is_some_and(|h| time < h) {
            return;
        }
        self.engine.seen_checkouts.insert(id, time);
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

    /// An eviction sweep at `horizon` (as [`Engine::swept_horizon`] reports it).
    pub fn horizon(&mut self, horizon: EventTime) {
        if self.horizon.is_none_or(|h| horizon > h) {
            self.horizon = Some(horizon);
            self.engine.evict_restored(horizon);
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
        let mut pending: Vec<(u64, Checkout)> = self.pending.into_values().collect();
        pending.sort_by_key(|(seq, _)| *seq);
        for (_, checkout) in pending {
            self.engine.push_pending(checkout);
        }
        self.engine
    }
}
