//! Command-line pieces every firstclick binary shares.
//!
//! Each connector crate owns the flags of its own service (`PubSubArgs`, `BigQueryArgs`,
//! `RedisArgs`); this crate owns what several of them need at once, so that a binary flattening
//! them all declares each flag and environment variable exactly once:
//! - [`GcpArgs`]: the Google Cloud project and the service-account key.
//! - [`LogArgs`] and [`init_logging`]: `tracing` output, human-readable or JSON; global
//!   flags, accepted before or after a subcommand.
//! - [`exit`]: the exit codes every binary shares (0, 1, 2, 78), [`ConfigError`] for a
//!   setting that cannot be used, [`EXIT_STATUS_HELP`] for `--help`, and [`finish`], which
//!   prints an error as its chain of causes (never a backtrace) and picks the exit code.
//!
//! # Layout
//! One file, no modules: `src/lib.rs` holds the items above.

use std::process::ExitCode;

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
///
/// The flags are global: they are accepted before or after a subcommand
/// (`streaming replay ... --log-format json` as well as `streaming --log-format json replay
/// ...`).
#[derive(Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
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

/// The exit codes of every firstclick binary (documented in each one's `--help` and the
/// README).
pub mod exit {
    /// Failed while running: a service refused a request or could not be reached, a file
    /// could not be written. Running again later, unchanged, may succeed.
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap's own code): an unknown flag, a value that does not parse.
    pub const USAGE: u8 = 2;
    /// Configuration error (`EX_CONFIG` of sysexits.h): a setting cannot be used (a bad name,
    /// a missing key file, refused credentials); running again unchanged cannot succeed.
    pub const CONFIG: u8 = 78;
}

/// The exit status section of `--help` of the set-up jobs and `datagen`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   done
  1   failed while running (a service refused a request or could not be reached); running
      again later may succeed
  2   bad command line (an unknown flag, a value that does not parse)
  78  configuration error (EX_CONFIG): a setting cannot be used (a bad name, a missing or
      refused key); the message names the setting to fix, running again unchanged cannot
      succeed";

/// A setting that cannot be used: exits [`exit::CONFIG`] through [`finish`]. The message says
/// which setting, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Ends a binary's `main`: success exits 0; an error is printed on stderr as
/// `<binary>: error: ` and its chain of causes (`{:#}`, never a backtrace, whatever
/// `RUST_BACKTRACE` says: the error is the user's to act on, not a bug) and exits
/// [`exit::CONFIG`] when any cause is a [`ConfigError`] or `is_config` says so, and
/// [`exit::FAILURE`] otherwise.
pub fn finish(
    binary: &str,
    result: anyhow::Result<()>,
    is_config: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: error: {e:#}");
            ExitCode::from(exit_code(&e, is_config))
        }
    }
}

/// The exit code of `error`: [`exit::CONFIG`] when any cause in its chain is a [`ConfigError`]
/// or `is_config` says so, [`exit::FAILURE`] otherwise.
pub fn exit_code(
    error: &anyhow::Error,
    is_config: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> u8 {
    if error.chain().any(|c| c.is::<ConfigError>() || is_config(c)) {
        exit::CONFIG
    } else {
        exit::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("bad name")]
    struct BadName;

    #[test]
    fn a_config_error_anywhere_in_the_chain_exits_78() {
        let plain = anyhow::anyhow!("Redis is down");
        assert_eq!(exit_code(&plain, |_| false), exit::FAILURE);
        let wrapped = anyhow::Error::from(ConfigError("--out needs --clicks".into()))
            .context("cannot write the data set");
        assert_eq!(exit_code(&wrapped, |_| false), exit::CONFIG);
        let classified = anyhow::Error::from(BadName).context("cannot connect");
        assert_eq!(exit_code(&classified, |_| false), exit::FAILURE);
        assert_eq!(exit_code(&classified, |c| c.is::<BadName>()), exit::CONFIG);
    }
}
