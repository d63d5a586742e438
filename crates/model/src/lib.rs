//! The vocabulary of firstclick: what a click, a checkout and an output row are, how they are
//! read from the producers' JSON, and the one definition of the output table.
//!
//! # Layout
//! - [`time`]: event time as integer microseconds since the Unix epoch; parsing of RFC 3339 and
//!   of the producers' `YYYY-MM-DD HH:MM:SS.mmm` form, RFC 3339 formatting, and
//!   [`time::wall_clock`] for the services' own bookkeeping.
//! - [`id`]: a compact identifier that stores canonical UUIDs in 16 bytes and anything else as text.
//! - [`event`]: [`Click`] and [`Checkout`], parsed and validated from one JSON message each.
//! - [`details`]: [`CheckoutDetails`], the texts a row copies from its checkout, in one
//!   allocation.
//! - `scan` (private): the single-pass JSON scanner behind the fast path of [`event`]; its
//!   property tests against serde_json are `event::equivalence_tests` (test builds only).
//! - [`error`]: [`BadMessage`], which names the field and the reason a message was refused.
//! - [`row`]: [`AttributedRow`], one output row per checkout and model, its JSON form, the
//!   models ([`AttributionModel`], [`ModelSet`]).
//! - [`touch`]: [`TouchRow`], a click's credit under a multi-touch model, exact decimals and
//!   the rounding rule ([`apportion`]).
//! - [`schema`]: the output tables' columns, partitioning, clustering and keys.
//! - [`user`]: the users file format used by replays and the file generator.
//!
//! Nothing here does I/O (only [`time::wall_clock`] reads the system clock); every other crate
//! of the workspace builds on these types.

pub mod details;
pub mod error;
pub mod event;
pub mod id;
pub mod row;
mod scan;
pub mod schema;
pub mod time;
pub mod touch;
pub mod user;

pub use details::{CheckoutDetails, DetailTexts};
pub use error::{BadMessage, EventKind};
pub use event::{parse_checkout, parse_click, Checkout, Click, UserId};
pub use id::Id;
pub use row::{AttributedRow, AttributionModel, ClickRef, ModelSet, RowRef};
pub use schema::{Column, ColumnMode, ColumnType, OUTPUT_COLUMNS, TOUCH_COLUMNS};
pub use time::EventTime;
pub use touch::{apportion, Decimal9, TouchRow};
pub use user::UserRecord;
