//! Deterministic fake data for firstclick: users, clicks and checkouts.
//!
//! One generator, several outputs: the `datagen` binary writes its events to NDJSON files or
//! publishes them to Pub/Sub (users go to a file or to Redis), and the embedded demo of
//! `streaming` pipes them straight into the engine.
//!
//! # Layout
//! - [`cli`]: [`DatagenCli`], the `datagen` binary's command line.
//! - [`config`]: [`GeneratorConfig`], the knobs (seed, sizes, rates, disorder, faults), as clap
//!   flags with environment variables.
//! - [`generator`]: [`Generator`], an iterator of [`GeneratedEvent`]s in arrival order.
//! - [`content`]: the fake fields of each event (names, user agents, addresses, UUIDs).
//! - [`files`]: writing the three NDJSON files of a replay.
//! - [`publish`]: users into Redis, events onto the Pub/Sub topics.
//!
//! # Shape
//! As in the original producer: pick a user, click a new product, then with probability 0.5
//! (repeated) click it again and check it out. Event time advances at `--rate` clicks per second
//! from `--start`; arrival order is event order disturbed by at most `--disorder-secs`.

pub mod cli;
pub mod config;
pub mod content;
pub mod files;
pub mod generator;
pub mod publish;

pub use cli::DatagenCli;
pub use config::{GeneratorConfig, TimestampFormat};
pub use generator::{GeneratedEvent, Generator, GeneratorStats, User};
