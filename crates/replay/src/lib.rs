//! File replay: NDJSON in, the engine, NDJSON rows out (the contract of
//! `streaming replay --clicks .. --checkouts .. --users .. --out ..`).
//!
//! # Layout
//! - [`source`]: reads an NDJSON file on its own thread and parses it into batches of events,
//!   keeping line numbers for bad lines.
//! - [`merge`]: merges the click and checkout sources by the event time of their next line
//!   (ties: click first), each keeping its own order.
//! - [`pipeline`]: [`Pipeline`], the synchronous driver around the engine: events in, rows
//!   enriched with user names out to a [`RowSink`], late clicks and bad lines accounted for.
//! - [`sink`]: NDJSON writers for rows, late clicks and dead letters.
//! - [`users`]: loading the users file.
//! - [`summary`]: the counters printed at the end of a run.
//! - [`replay`]: the whole replay, wired together.

pub mod merge;
pub mod pipeline;
pub mod replay;
pub mod sink;
pub mod source;
pub mod summary;
pub mod users;

pub use pipeline::{Pipeline, RowSink};
pub use replay::{replay, ReplayError, ReplayOptions};
pub use summary::Summary;
