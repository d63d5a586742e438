//! The delivery rules of firstclick (docs/design.md §4, §6) as a sans-I/O core, in the way the
//! engine is one: [`Delivery`] takes events, `tick(now)` and the results of writes, and returns
//! the [`Command`]s to run. It does no I/O and reads no clock; the streaming worker is a thin
//! driver that runs the commands against BigQuery, Redis and Pub/Sub and reports back.
//!
//! The rules it enforces:
//! - **Ack after durable.** A message is acknowledged only once the changelog delta that holds
//!   its effect is appended (the epoch is durable).
//! - **Rows before forgetting.** A delta that finishes a checkout (removes it from the pending
//!   ones) is appended only after the row of that checkout is written.
//! - **Rows once (two-phase, [`DeliveryConfig::two_phase_rows`]).** An epoch's rows are written
//!   invisibly and prepared ([`Command::PrepareRows`]) before its delta; the delta is followed by
//!   a rows-commit element naming the transaction, and the rows are committed
//!   ([`Command::CommitRows`]) once the delta is durable. The next delta waits for that commit,
//!   so a crash can leave only the last delta's rows uncommitted, and a restore commits them
//!   again first ([`Durable::rows_to_commit`]). A crash before the append leaves the rows
//!   invisible for good and the messages unacknowledged: they are processed again.
//! - **One writer, in order.** Deltas are appended one at a time, in sequence; results must be
//!   reported in the order the commands were given, per kind.
//! - **Compaction never loses.** A new base is taken from the live engine piece by piece while
//!   events go on; it is switched in ([`Command::CommitBase`]) only once every piece is written
//!   and the delta of the epoch in which the last piece was taken is durable. A crash before
//!   that leaves the old base and the untrimmed changelog in force.
//!
//! # Layout
//! - `core`: [`Delivery`], [`DeliveryConfig`], [`DeliveryStats`], [`Durable`].
//! - `command`: [`Command`], what the driver runs.
//!
//! Both modules are private; everything a driver needs is re-exported here.

mod command;
mod core;

pub use command::Command;
pub use core::{Delivery, DeliveryConfig, DeliveryStats, Durable};
