//! `create-pubsub`: creates firstclick's Pub/Sub topics and subscriptions (clicks, checkouts,
//! dead letters, late clicks), idempotently, and prints what was created and what was already
//! there. Against the emulator: `PUBSUB_EMULATOR_HOST=127.0.0.1:8085 create-pubsub`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use firstclick_cli::{GcpArgs, LogArgs};
use firstclick_pubsub::{Outcome, PubSubArgs};

/// Create the Pub/Sub topics and subscriptions firstclick uses (safe to run again).
#[derive(Parser, Debug)]
#[command(name = "create-pubsub", version, about)]
struct Cli {
    #[command(flatten)]
    gcp: GcpArgs,
    #[command(flatten)]
    pubsub: PubSubArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    firstclick_pubsub::install_crypto_provider();
    let cli = Cli::parse();
    firstclick_cli::init_logging(&cli.log);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("create-pubsub: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let target = match &cli.pubsub.emulator_host {
        Some(host) if !host.trim().is_empty() => format!("the emulator at {host}"),
        _ => "Google Cloud".to_string(),
    };
    let report = runtime
        .block_on(firstclick_pubsub::ensure_topology(&cli.gcp, &cli.pubsub))
        .with_context(|| {
            format!(
                "cannot create the Pub/Sub topology in project {:?} on {target}",
                cli.gcp.project_id
            )
        })?;
    for r in &report.resources {
        let what = match r.outcome {
            Outcome::Created => "created",
            Outcome::AlreadyExisted => "exists ",
        };
        println!("{what} {:<12} {}", r.kind.to_string(), r.name);
    }
    println!(
        "{} created, {} already there (project {:?}, {target})",
        report.created().count(),
        report.existing().count(),
        cli.gcp.project_id
    );
    Ok(())
}
