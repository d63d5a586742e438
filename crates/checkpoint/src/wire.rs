//! The serde types of element bodies. They mirror the engine's types with the compact forms
//! postcard encodes well: UUIDs as 16 bytes, times as integer microseconds.

use firstclick_engine::{EngineStats, Progress};
use firstclick_model::{Checkout, DetailTexts, EventTime, Id};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum WireId {
    Uuid([u8; 16]),
    Text(String),
}

/// A UUID id's two halves as the 16 bytes written for it (big-endian, the text's order).
pub(crate) fn uuid_bytes([hi, lo]: [u64; 2]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b
}

/// The inverse of [`uuid_bytes`].
pub(crate) fn uuid_halves(b: &[u8; 16]) -> [u64; 2] {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&b[..8]);
    lo.copy_from_slice(&b[8..]);
    [u64::from_be_bytes(hi), u64::from_be_bytes(lo)]
}

impl From<&Id> for WireId {
    fn from(id: &Id) -> Self {
        match id {
            Id::Uuid(halves) => WireId::Uuid(uuid_bytes(*halves)),
            Id::Text(t) => WireId::Text(t.to_string()),
        }
    }
}

impl From<WireId> for Id {
    fn from(w: WireId) -> Self {
        match w {
            WireId::Uuid(b) => Id::Uuid(uuid_halves(&b)),
            WireId::Text(t) => Id::Text(t.into_boxed_str()),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct WireCheckout {
    pub(crate) checkout_id: WireId,
    pub(crate) user_id: i64,
    pub(crate) product_id: WireId,
    pub(crate) time: i64,
    pub(crate) payment_method: Option<String>,
    pub(crate) total_amount: Option<f64>,
    pub(crate) shipping_address: Option<String>,
    pub(crate) billing_address: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip_address: Option<String>,
}

impl From<&Checkout> for WireCheckout {
    fn from(c: &Checkout) -> Self {
        WireCheckout {
            checkout_id: (&c.checkout_id).into(),
            user_id: c.user_id,
            product_id: (&c.product_id).into(),
            time: c.time.as_micros(),
            payment_method: c.details.payment_method().map(str::to_owned),
            total_amount: c.total_amount,
            shipping_address: c.details.shipping_address().map(str::to_owned),
            billing_address: c.details.billing_address().map(str::to_owned),
            user_agent: c.details.user_agent().map(str::to_owned),
            ip_address: c.details.ip_address().map(str::to_owned),
        }
    }
}

impl From<WireCheckout> for Checkout {
    fn from(w: WireCheckout) -> Self {
        Checkout {
            checkout_id: w.checkout_id.into(),
            user_id: w.user_id,
            product_id: w.product_id.into(),
            time: EventTime::from_micros(w.time),
            total_amount: w.total_amount,
            details: DetailTexts {
                payment_method: w.payment_method.as_deref(),
                shipping_address: w.shipping_address.as_deref(),
                billing_address: w.billing_address.as_deref(),
                user_agent: w.user_agent.as_deref(),
                ip_address: w.ip_address.as_deref(),
            }
            .into(),
        }
    }
}

/// One change of the engine's state, in the order it happened.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum WireChange {
    Click {
        user_id: i64,
        product_id: WireId,
        click_id: WireId,
        time: i64,
    },
    Checkout(WireCheckout),
    Finished(WireId),
    Horizon(i64),
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct WireStats {
    pub(crate) counters: [u64; 10],
}

impl From<&EngineStats> for WireStats {
    fn from(s: &EngineStats) -> Self {
        WireStats {
            counters: [
                s.clicks,
                s.duplicate_clicks,
                s.late_clicks,
                s.checkouts,
                s.duplicate_checkouts,
                s.late_checkouts,
                s.rows,
                s.attributed,
                s.organic,
                s.evicted_clicks,
            ],
        }
    }
}

impl From<WireStats> for EngineStats {
    fn from(w: WireStats) -> Self {
        let [clicks, duplicate_clicks, late_clicks, checkouts, duplicate_checkouts, late_checkouts, rows, attributed, organic, evicted_clicks] =
            w.counters;
        EngineStats {
            clicks,
            duplicate_clicks,
            late_clicks,
            checkouts,
            duplicate_checkouts,
            late_checkouts,
            rows,
            attributed,
            organic,
            evicted_clicks,
        }
    }
}

/// Watermark, progress and counters.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct WireProgress {
    pub(crate) max_click_time: Option<i64>,
    pub(crate) watermark: Option<i64>,
    pub(crate) last_sweep: Option<i64>,
    pub(crate) stats: WireStats,
}

impl From<&Progress> for WireProgress {
    fn from(p: &Progress) -> Self {
        WireProgress {
            max_click_time: p.max_click_time.map(EventTime::as_micros),
            watermark: p.watermark.map(EventTime::as_micros),
            last_sweep: p.last_sweep.map(EventTime::as_micros),
            stats: (&p.stats).into(),
        }
    }
}

impl From<WireProgress> for Progress {
    fn from(w: WireProgress) -> Self {
        Progress {
            max_click_time: w.max_click_time.map(EventTime::from_micros),
            watermark: w.watermark.map(EventTime::from_micros),
            last_sweep: w.last_sweep.map(EventTime::from_micros),
            stats: w.stats.into(),
        }
    }
}

/// The head of a delta's body; `count` changes follow.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct DeltaHead {
    /// Written by a graceful shutdown: nothing was in flight.
    pub(crate) clean_shutdown: bool,
    pub(crate) progress: WireProgress,
    pub(crate) count: u64,
}

/// The body of a rows-commit element.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct RowsCommit {
    /// Opaque to the checkpoint: the sink's name for the rows to commit (for BigQuery's
    /// Storage Write API, the pending stream's name).
    pub(crate) transaction: Vec<u8>,
}

/// The body of a base's header piece.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct BaseHead {
    pub(crate) progress: WireProgress,
    /// Microseconds since the Unix epoch when the base was started (wall clock).
    pub(crate) started_at: i64,
}

/// The clicks of one key (the shape `encode` writes and `decode` reads by hand; the serde
/// form is kept to hold the two to it in a test).
#[allow(dead_code)]
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct WireKeyClicks {
    pub(crate) user_id: i64,
    pub(crate) product_id: WireId,
    pub(crate) clicks: Vec<(WireId, i64)>,
}
