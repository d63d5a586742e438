//! `streaming`: the firstclick pipeline's entry point. Parses flags and hands over to the mode:
//! `replay` (files), `demo` (embedded, no services) or, with a cloud configured, the streaming
//! pipeline.
//!
//! # Layout
//! - [`args`]: flags and environment variables.
//! - [`demo`]: generator → engine → NDJSON file in one process.
//! - [`replay_cmd`]: the file replay command.

mod args;
mod demo;
mod replay_cmd;

use clap::Parser;

/// mimalloc: the replay allocates and frees a few small strings per event; measured 15-20%
/// faster than the system allocator on the 1.5 M-event replay (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use args::{Cli, Command};

fn cloud_configured() -> bool {
    ["PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    firstclick_cli::init_logging(&cli.log);
    match cli.command {
        Some(Command::Replay(args)) => replay_cmd::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        None if cloud_configured() => anyhow::bail!(
            "the Pub/Sub pipeline is not built into this binary yet; run `streaming demo` or \
             `streaming replay`"
        ),
        None => {
            tracing::info!(
                "no cloud configured (neither PUBSUB_EMULATOR_HOST nor \
                 GOOGLE_APPLICATION_CREDENTIALS is set): running the embedded demo"
            );
            match Cli::parse_from(["streaming", "demo"]).command {
                Some(Command::Demo(args)) => demo::run(args),
                _ => anyhow::bail!("internal error: the demo subcommand did not parse"),
            }
        }
    }
}
