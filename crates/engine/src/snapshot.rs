//! The engine's whole state as plain, serializable data (docs/design.md §6).
//!
//! A snapshot holds the live clicks, the pending checkouts in arrival order, the remembered
//! checkout ids, the watermark and the counters. Restoring it gives an engine that behaves
//! exactly as the one it was taken from (processing-time idle bookkeeping starts afresh).

use firstclick_model::{Checkout, Click, ClickRef, EventTime, Id};

use crate::clicks::ClickKey;
use crate::config::EngineConfig;
use crate::engine::{Engine, EngineStats, Progress};
use crate::restore::Restorer;

/// The engine's state, see the module documentation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineSnapshot {
    /// The configuration it ran with.
    pub config: EngineConfig,
    /// Live clicks, as the engine took them in.
    pub clicks: Vec<Click>,
    /// Checkouts not final yet, in arrival order.
    pub pending: Vec<Checkout>,
    /// Checkout ids remembered for de-duplication, with their event times.
    pub seen_checkouts: Vec<(Id, EventTime)>,
    /// Largest click time seen.
    pub max_click_time: Option<EventTime>,
    /// The watermark.
    pub watermark: Option<EventTime>,
    /// The watermark at the last eviction sweep.
    pub last_sweep: Option<EventTime>,
    /// Counters.
    pub stats: EngineStats,
}

impl Engine {
    /// Copies the whole state out, in a canonical order (for comparisons and tests; checkpoints
    /// use [`crate::Restorer`] and the engine's shards instead). Clicks and ids below the swept
    /// horizon are left out whether or not their memory is freed yet.
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut clicks: Vec<Click> = self
            .clicks
            .iter()
            .filter(|(_, c)| self.counts(c.time))
            .map(|(k, c)| Click {
                user_id: k.user_id,
                product_id: k.product_id.clone(),
                click_id: c.click_id.clone(),
                time: c.time,
            })
            .collect();
        clicks.sort_by(|a, b| {
            (a.time, &a.click_id, a.user_id, &a.product_id).cmp(&(
                b.time,
                &b.click_id,
                b.user_id,
                &b.product_id,
            ))
        });
        let mut seen: Vec<(Id, EventTime)> = self
            .seen_checkouts
            .iter()
            .filter(|(_, t)| self.counts(**t))
            .map(|(id, t)| (id.clone(), *t))
            .collect();
        seen.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        EngineSnapshot {
            config: self.config,
            clicks,
            pending: self.pending_in_order(),
            seen_checkouts: seen,
            max_click_time: self.max_click_time,
            watermark: self.watermark,
            last_sweep: self.last_sweep,
            stats: self.stats,
        }
    }

    /// Rebuilds an engine from a snapshot.
    pub fn restore(snapshot: EngineSnapshot) -> Engine {
        let mut restorer = Restorer::new(snapshot.config);
        for c in snapshot.clicks {
            restorer.click(
                ClickKey {
                    user_id: c.user_id,
                    product_id: c.product_id,
                },
                ClickRef {
                    click_id: c.click_id,
                    time: c.time,
                },
            );
        }
        for (id, time) in snapshot.seen_checkouts {
            restorer.seen_checkout(id, time);
        }
        for checkout in snapshot.pending {
            restorer.pending_checkout(checkout);
        }
        restorer.progress(Progress {
            max_click_time: snapshot.max_click_time,
            watermark: snapshot.watermark,
            last_sweep: snapshot.last_sweep,
            stats: snapshot.stats,
        });
        restorer.finish()
    }
}
