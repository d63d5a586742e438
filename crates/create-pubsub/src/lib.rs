//! `create-pubsub` as a library: the command line ([`CreatePubSubCli`]) and the job ([`run`]), so
//! that deployment checks can read the flags and environment variables of the binary without
//! running it. The binary (`src/main.rs`) only installs the crypto provider, parses and calls
//! [`run`].
//!
//! # Layout
//! No modules: `src/lib.rs` holds [`CreatePubSubCli`] and [`run`]; `src/main.rs` is the binary;
//! `tests/cli.rs` runs the binary against the emulator.

use anyhow::Context as _;
use clap::Parser;
use firstclick_cli::{GcpArgs, LogArgs};
use firstclick_pubsub::{PubSubArgs, ResourceOutcome};

/// Create the Pub/Sub topics and subscriptions firstclick uses (safe to run again).
#[derive(Parser, Debug)]
#[command(
    name = "create-pubsub",
    version,
    about,
    after_help = firstclick_cli::EXIT_STATUS_HELP
)]
pub struct CreatePubSubCli {
    /// Google Cloud project and key.
    #[command(flatten)]
    pub gcp: GcpArgs,
    /// Topics, subscriptions and the emulator address.
    #[command(flatten)]
    pub pubsub: PubSubArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Creates every topic and subscription that is missing and prints one line per resource
/// (`created` or `exists`) and a summary on stdout.
pub fn run(cli: &CreatePubSubCli) -> anyhow::Result<()> {
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
            ResourceOutcome::Created => "created",
            ResourceOutcome::AlreadyExisted => "exists ",
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

/// Whether `cause` is a configuration error (exit 78): a setting that cannot be used, as
/// opposed to a service that could not be reached (exit 1, running again may succeed).
pub fn is_config_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    use firstclick_pubsub::PubSubError as E;
    matches!(
        cause.downcast_ref::<E>(),
        Some(
            E::InvalidEmulatorHost { .. }
                | E::InvalidProject { .. }
                | E::InvalidName { .. }
                | E::CredentialsFile { .. }
                | E::CredentialsKey { .. }
                | E::Credentials { .. }
                | E::Unauthenticated { .. }
                | E::PermissionDenied { .. }
                | E::ProjectNotFound { .. }
                | E::SubscriptionConflict { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The flattened flag groups fit together (unique names and variables, valid defaults).
    #[test]
    fn command_line_is_consistent() {
        CreatePubSubCli::command().debug_assert();
    }
}
