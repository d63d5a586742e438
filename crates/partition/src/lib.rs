//! Partitions (key groups) of the firstclick pipeline, sans I/O.
//!
//! A deployment has a fixed number P of partitions, chosen at set-up. A user belongs to
//! partition [`partition_of`]`(user_id, P)`, so the clicks and checkouts of one user always
//! meet in one partition, and each partition has its own engine, watermark and checkpoint.
//! Workers own partitions through leases in Redis; [`lease`] is the state machine that decides,
//! from what Redis answered and the time it is given, which partitions a worker takes, keeps,
//! hands back or has lost. docs/design.md §7.
//!
//! # Layout
//! - `hash`: the stable user → partition hash.
//! - `lease`: fair shares and the lease state machine of one worker.

mod hash;
pub mod lease;

pub use hash::{partition_of, Partition};
