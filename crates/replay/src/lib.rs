//! File replay: NDJSON in, the engine, NDJSON rows out (the contract of
//! `streaming replay --clicks .. --checkouts .. --users .. --out ..`).
//!
//! # Layout
//! - `source`: reads an NDJSON file on its own thread and parses it into batches of events,
//!   keeping line numbers for bad lines ([`SourceError`]).
//! - `merge`: merges the click and checkout sources by the event time of their next line
//!   (ties: click first), each keeping its own order.
//! - `pipeline`: [`Pipeline`], the synchronous driver around the engine: events in, rows
//!   enriched with user names out to a [`RowSink`], late clicks and bad lines accounted for.
//! - `sink`: [`RowSink`] and its implementations ([`NdjsonWriter`], [`CountingSink`]), NDJSON
//!   writers for late clicks and dead letters, [`FileSinkError`].
//! - `observer`: [`RowObserver`], what sees every row and touch (the HTML report of
//!   `firstclick_report`, which it implements), and [`NoObserver`].
//! - `users`: loading the users file into [`UserNames`] ([`UsersError`]).
//! - `summary`: [`Summary`], the counters printed at the end of a run.
//! - `replay`: [`replay()`], the whole replay wired together ([`ReplayOptions`],
//!   [`ReplayError`], [`DEFAULT_MAX_BAD_SHARE`]); [`replay_observed`] with an observer,
//!   [`replay_staged`] leaving the outputs to commit.
//! - `staged`: [`StagedOutputs`], outputs written to temporary files beside their targets and
//!   renamed into place only when the replay succeeded.
//! - `partitioned`: the replay over P partitions on N threads ([`Parallelism`], chosen by
//!   [`ReplayOptions::parallelism`]): a chunked, parallel parse, one engine per partition, and
//!   one deterministic output order for every N.
//! - `chunked`: an input file in chunks of whole lines, read in order, parsed on any thread
//!   into events per partition.
//!
//! The modules are private; the items above are re-exported here.

mod chunked;
mod merge;
mod observer;
mod partitioned;
mod pipeline;
mod replay;
mod sink;
mod source;
mod staged;
mod summary;
mod users;

pub use observer::{NoObserver, RowObserver};
pub use partitioned::Parallelism;
pub use pipeline::Pipeline;
pub use replay::{
    replay, replay_observed, replay_staged, ReplayError, ReplayOptions, DEFAULT_MAX_BAD_SHARE,
};
pub use sink::{CountingSink, FileSinkError, NdjsonWriter, RowSink};
pub use source::SourceError;
pub use staged::StagedOutputs;
pub use summary::Summary;
pub use users::{UserNames, UsersError};
