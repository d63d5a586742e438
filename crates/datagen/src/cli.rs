//! The `datagen` command line, in the library so that deployment checks can compare it with
//! the variables docker-compose passes.

use std::path::PathBuf;

use clap::Parser;
use firstclick_cli::GcpArgs;
use firstclick_pubsub::PubSubArgs;
use firstclick_redis::RedisArgs;

use crate::config::GeneratorConfig;

/// Generates fake users, clicks and checkouts, deterministically under --seed.
#[derive(Parser, Debug)]
#[command(name = "datagen", version, about)]
pub struct DatagenCli {
    /// Write the data set as NDJSON files into this directory (created if missing) instead of
    /// publishing it.
    #[arg(long, env = "DATAGEN_OUT")]
    pub out: Option<PathBuf>,

    /// Messages per second to publish (0: as fast as Pub/Sub takes them).
    #[arg(long, env = "DATAGEN_RATE", default_value_t = 100.0)]
    pub rate: f64,

    /// What to generate.
    #[command(flatten)]
    pub generator: GeneratorConfig,

    /// Google Cloud project and key.
    #[command(flatten)]
    pub gcp: GcpArgs,

    /// Topics.
    #[command(flatten)]
    pub pubsub: PubSubArgs,

    /// Where the users go.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Logging.
    #[command(flatten)]
    pub log: firstclick_cli::LogArgs,
}
