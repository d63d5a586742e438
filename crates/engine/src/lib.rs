//! The attribution engine: a pure, synchronous, deterministic state machine (docs/design.md §1, §3).
//!
//! Connectors feed it clicks and checkouts in arrival order and drain the checkouts that have
//! become final. It reads no clock and does no I/O: processing time, where it matters (the idle
//! watermark advance), is passed in. The same engine runs file replays, the streaming pipeline,
//! the property tests against a brute-force oracle and the benchmarks.
//!
//! # Layout
//! - `config`: [`EngineConfig`]: lookback, allowed out-of-orderness, idle timeout, attribution
//!   models, time-decay half-life.
//! - `credit`: the attribution models over a checkout's window ([`Attribution`], [`Touch`]).
//! - `clicks`: [`ClickStore`], live clicks grouped by `(user, product)` ([`ClickKey`]), compact
//!   per click, in [`STATE_SHARDS`] shards; [`SeenCheckouts`], the remembered checkout ids.
//! - `engine`: [`Engine`] itself: watermark per stream, pending checkouts, finality, eviction,
//!   statistics ([`EngineStats`], [`Progress`]), and what it answers ([`ClickOutcome`],
//!   [`CheckoutOutcome`], [`FinalCheckout`]).
//! - `pending`: the checkouts waiting for the watermark, ordered by `(time, arrival)` in a heap
//!   of small keys over a slab (the checkouts themselves are not moved by the heap).
//! - `snapshot`: [`EngineSnapshot`], the whole state as plain data, in a canonical order
//!   (comparisons).
//! - `restore`: [`Restorer`], which rebuilds an engine from a checkpoint's base pieces and
//!   changelog.
//!
//! The modules are private; the items above are re-exported here.
//!
//! # Time
//! The watermark is the largest click event time seen minus the allowed out-of-orderness. A
//! checkout at `T` is final once the watermark is past `T` (strictly), so a click that is at most
//! the out-of-orderness behind the newest click is never missed. Clicks are evicted once older
//! than `watermark - lookback - out_of_orderness`: the extra out-of-orderness keeps the full window
//! for checkouts that themselves arrive up to that much behind the clicks.

mod clicks;
mod config;
mod credit;
mod engine;
mod pending;
mod restore;
mod snapshot;

pub use clicks::{ClickKey, ClickStore, SeenCheckouts, STATE_SHARDS};
pub use config::EngineConfig;
pub use credit::{Attribution, Touch};
pub use engine::{CheckoutOutcome, ClickOutcome, Engine, EngineStats, FinalCheckout, Progress};
pub use restore::Restorer;
pub use snapshot::EngineSnapshot;
