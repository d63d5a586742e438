//! `create-pubsub`: creates firstclick's Pub/Sub topics and subscriptions (clicks, checkouts,
//! dead letters, late clicks), idempotently, and prints what was created and what was already
//! there. Against the emulator: `PUBSUB_EMULATOR_HOST=127.0.0.1:8085 create-pubsub`.
//! The command line and the job live in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use firstclick_create_pubsub::CreatePubSubCli;

fn main() -> ExitCode {
    firstclick_pubsub::install_crypto_provider();
    let cli = CreatePubSubCli::parse();
    firstclick_cli::init_logging(&cli.log);
    match firstclick_create_pubsub::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("create-pubsub: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
