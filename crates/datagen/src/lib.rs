//! Deterministic fake data for firstclick: users, clicks and checkouts.
//!
//! One generator, several outputs: the `datagen` binary writes its events to NDJSON files or
//! publishes them to Pub/Sub (users go to a file or to Redis), and the embedded demo of
//! `streaming` pipes them straight into the engine.
//!
//! # Layout
//! - `cli`: [`DatagenCli`], the `datagen` binary's command line, and the defaults of its two
//!   modes ([`DatagenCli::resolve`], [`Resolved`], [`Origin`]): files reproducible, publishing
//!   from the clock.
//! - `config`: [`GeneratorConfig`], the knobs (seed, sizes, rates, disorder, faults), as clap
//!   flags with environment variables; [`TimestampFormat`].
//! - `generator`: [`Generator`], an iterator of [`GeneratedEvent`]s in arrival order, its
//!   [`User`]s and [`GeneratorStats`].
//! - `content`: the fake fields of each event (names, user agents, addresses, UUIDs).
//! - `files`: [`write_data_set`], the three NDJSON files of a replay ([`DataSetPaths`],
//!   [`FilesError`]).
//! - `publish`: [`publish()`], users into Redis and events onto the Pub/Sub topics
//!   ([`PublishTarget`], [`PublishError`]).
//!
//! The modules are private; the items above are re-exported here.
//!
//! # Shape
//! As in the original producer: pick a user, click a new product, then with probability 0.5
//! (repeated) click it again and check it out. Event time advances at `--event-rate` clicks per
//! second from `--start`; arrival order is event order disturbed by at most `--disorder-secs`.

mod cli;
mod config;
mod content;
mod files;
mod generator;
mod publish;

pub use cli::{DatagenCli, Origin, Resolved};
pub use config::{GeneratorConfig, TimestampFormat};
pub use files::{write_data_set, DataSetPaths, FilesError};
pub use generator::{GeneratedEvent, Generator, GeneratorStats, User};
pub use publish::{publish, PublishError, PublishTarget};
