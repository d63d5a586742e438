//! The engine's knobs and their defaults.

use firstclick_model::time::MICROS_PER_SECOND;
use firstclick_model::ModelSet;

/// How the engine attributes and when it considers a checkout final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// How far before a checkout a click may be and still count, in microseconds (inclusive).
    pub lookback_micros: i64,
    /// How far a click may arrive behind the newest click already seen, in microseconds.
    pub out_of_orderness_micros: i64,
    /// Processing time without any click after which the watermark starts to follow processing
    /// time, in microseconds.
    pub idle_timeout_micros: i64,
    /// The attribution models, each giving its rows (first click alone by default).
    pub models: ModelSet,
    /// `time_decay`: the age at which a click's weight halves, in microseconds.
    pub half_life_micros: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lookback_micros: 3600 * MICROS_PER_SECOND,
            out_of_orderness_micros: 15 * MICROS_PER_SECOND,
            idle_timeout_micros: 30 * MICROS_PER_SECOND,
            models: ModelSet::default(),
            half_life_micros: 7 * 24 * 3600 * MICROS_PER_SECOND,
        }
    }
}

impl EngineConfig {
    /// How far the watermark must move between two sweeps of expired state: an eighth of the
    /// lookback (at least a second), so each click is visited about eight times and state
    /// overshoots the retention by at most an eighth of the lookback.
    pub(crate) fn sweep_interval_micros(&self) -> i64 {
        (self.lookback_micros / 8).max(MICROS_PER_SECOND)
    }

    /// How far behind the watermark state is kept.
    pub(crate) fn retention_micros(&self) -> i64 {
        self.lookback_micros
            .saturating_add(self.out_of_orderness_micros)
    }
}
