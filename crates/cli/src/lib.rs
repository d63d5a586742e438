//! Command-line pieces every firstclick binary shares.
//!
//! Each connector crate owns the flags of its own service (`PubSubArgs`, `BigQueryArgs`,
//! `RedisArgs`); this crate owns what several of them need at once, so that a binary flattening
//! them all declares each flag and environment variable exactly once:
//! - [`GcpArgs`]: the Google Cloud project and the service-account key.
//! - [`LogArgs`] and [`init_logging`]: `tracing` output, human-readable or JSON.
//!
//! # Layout
//! One file, no modules: `src/lib.rs` holds the items above.

use clap::{Args, ValueEnum};

/// The Google Cloud project and how to authenticate to it.
#[derive(Args, Clone, Debug, Default)]
pub struct GcpArgs {
    /// Google Cloud project that holds the topics, subscriptions and dataset.
    #[arg(
        long = "project-id",
        env = "PROJECT_ID",
        default_value = "test-project"
    )]
    pub project_id: String,

    /// Path of a service-account JSON key. Not needed against the emulators; on Google Cloud,
    /// without it the application-default credentials are used.
    #[arg(long = "credentials", env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub credentials: Option<std::path::PathBuf>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Logging flags. The level filter comes from `RUST_LOG` (default `info`).
#[derive(Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the global `tracing` subscriber, writing to stderr. Call once, at the top of `main`.
pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber; that is not an error worth reporting.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
