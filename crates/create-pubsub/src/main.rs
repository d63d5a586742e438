//! `create-pubsub`: creates firstclick's Pub/Sub topics and subscriptions (clicks, checkouts,
//! dead letters, late clicks), idempotently, and prints what was created and what was already
//! there. Against the emulator: `PUBSUB_EMULATOR_HOST=127.0.0.1:8085 create-pubsub`.
//! The command line and the job live in the library (`src/lib.rs`).
//!
//! Exit status (also in `--help`): 0 done, 1 failed while running (the emulator or Google
//! Cloud not reachable), 2 bad command line, 78 configuration error (a bad project, topic or
//! subscription name, an unusable or refused key, a subscription attached to another topic).
//! Errors are printed as their chain of causes, never with a backtrace.

use std::process::ExitCode;

use clap::Parser;
use firstclick_create_pubsub::CreatePubSubCli;

fn main() -> ExitCode {
    firstclick_pubsub::install_crypto_provider();
    let cli = CreatePubSubCli::parse();
    firstclick_cli::init_logging(&cli.log);
    firstclick_cli::finish(
        "create-pubsub",
        firstclick_create_pubsub::run(&cli),
        firstclick_create_pubsub::is_config_error,
    )
}
