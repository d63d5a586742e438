//! Command-line flags of `streaming` (each also an environment variable).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use firstclick_engine::EngineConfig;
use firstclick_model::ModelSet;

/// firstclick streaming: first-click attribution of checkouts, in real time.
///
/// With no subcommand it runs the pipeline against Pub/Sub, Redis and BigQuery (`streaming
/// run`) when any flag of `streaming run` is on the command line or a cloud is configured
/// (PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS or PROJECT_ID
/// set), and otherwise the embedded demo, which needs no external service; it says on stderr
/// which one and why. Scripts and images should name the subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "streaming",
    version,
    about,
    long_about,
    after_help = EXIT_STATUS_HELP
)]
pub struct StreamingCli {
    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Option<StreamingCommand>,

    /// The streaming service's settings (when no subcommand is given).
    #[command(flatten)]
    pub(crate) run: Box<crate::run::RunArgs>,

    /// Logging.
    #[command(flatten)]
    pub(crate) log: firstclick_cli::LogArgs,
}

/// The exit status of the service, for `--help` (docs/design.md §4.6, §11).
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   stopped by SIGTERM/SIGINT, nothing acknowledged lost; also when the stop was forced
      (grace period over, or a second signal) while a dependency was down: unwritten
      messages were never acknowledged and are redelivered
  1   failed while running (e.g. BigQuery refuses the rows for good)
  2   bad command line
  78  configuration error (EX_CONFIG): a start-up check failed or a setting cannot be used;
      the message names the setting to fix";

/// The outputs and exit status of `streaming replay`, for `--help`.
pub(crate) const REPLAY_HELP: &str = "\
Outputs (--out, --late, --touches, --dead-letter, --report) are written to a temporary file
next to each and renamed into place only when the whole replay succeeded: a failed replay
leaves every existing output as it was.

Exit status:
  0   replayed, every output in place
  1   failed: an input cannot be read (or the users file has a bad line), an output cannot
      be written, or more than --max-bad-share of an input's lines are bad (the wrong file,
      e.g. the checkouts given as --clicks); no output was replaced
  2   bad command line";

/// Start-up checks and the shutdown grace period of the service.
#[derive(Args, Debug, Clone)]
pub(crate) struct LifecycleArgs {
    /// Seconds the start-up checks (Pub/Sub, Redis, BigQuery, run side by side) may take in
    /// all, asking again a dependency that does not answer yet; then the service exits 78.
    #[arg(
        long = "startup-timeout-secs",
        env = "STARTUP_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub(crate) startup_timeout_secs: u64,
    /// Seconds after the first SIGTERM/SIGINT before the stop is forced: retries of a service
    /// that is down give up, unwritten messages stay unacknowledged (redelivered later). Keep
    /// it below the platform's own grace period (Kubernetes: 30 s).
    #[arg(
        long = "shutdown-grace-secs",
        env = "SHUTDOWN_GRACE_SECS",
        default_value_t = 25
    )]
    pub(crate) shutdown_grace_secs: u64,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum StreamingCommand {
    /// Run the streaming service (the default when a flag of it is given or a cloud is
    /// configured).
    #[command(after_help = EXIT_STATUS_HELP)]
    Run(Box<crate::run::RunArgs>),
    /// Replay NDJSON files of clicks and checkouts through the engine into NDJSON rows.
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
    /// Generate events in process and attribute them into an NDJSON file (no external service).
    Demo(DemoArgs),
    /// Check the configuration of `run` against the real services, consuming nothing; prints a
    /// checklist, exit 78 when a check fails.
    #[command(after_help = crate::check::EXIT_STATUS_HELP)]
    Check(Box<crate::check::CheckArgs>),
    /// Look at or delete the service's checkpoint in Redis.
    #[command(subcommand)]
    State(StateCommand),
}

/// `streaming state ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum StateCommand {
    /// Print the checkpoint: keys, format version, live clicks, pending checkouts, watermark,
    /// changelog length, age and size of the base snapshot (reads it all, as a restore would).
    Inspect(StateInspectArgs),
    /// Delete the checkpoint (the service then starts with empty state; messages not yet
    /// acknowledged are redelivered, rows already written stay). Stop the service first.
    Reset(StateResetArgs),
}

/// `streaming state inspect`.
#[derive(Args, Debug)]
pub(crate) struct StateInspectArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// The service's settings (the checkpoint's name derives from them, as in `run`).
    #[command(flatten)]
    pub(crate) run: Box<crate::run::RunArgs>,
}

/// `streaming state reset`.
#[derive(Args, Debug)]
pub(crate) struct StateResetArgs {
    /// Confirms the deletion; without it nothing is deleted.
    #[arg(long)]
    pub(crate) yes: bool,
    /// The service's settings (the checkpoint's name derives from them, as in `run`).
    #[command(flatten)]
    pub(crate) run: Box<crate::run::RunArgs>,
}

/// Attribution settings.
#[derive(Args, Clone, Debug)]
pub(crate) struct EngineArgs {
    /// How far before a checkout its click may be, in seconds (inclusive).
    #[arg(long = "lookback-secs", env = "LOOKBACK_SECS", default_value_t = 3600)]
    pub(crate) lookback_secs: u64,

    /// How far, in seconds, a click may arrive behind the newest click seen (watermark delay).
    #[arg(
        long = "out-of-orderness-secs",
        env = "OUT_OF_ORDERNESS_SECS",
        default_value_t = 15
    )]
    pub(crate) out_of_orderness_secs: u64,

    /// Seconds without any click after which the watermark follows processing time.
    #[arg(
        long = "idle-timeout-secs",
        env = "IDLE_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub(crate) idle_timeout_secs: u64,

    /// Attribution models, comma-separated: first_click (default), last_click, linear,
    /// time_decay, position_based. One row per checkout and model; the multi-touch ones
    /// (linear, time_decay, position_based) also write each click's credit to the touches
    /// output.
    #[arg(
        long = "model",
        visible_alias = "attribution-model",
        env = "ATTRIBUTION_MODEL",
        default_value = "first_click"
    )]
    pub(crate) models: ModelSet,

    /// time_decay: the age at which a click's weight halves, e.g. 7d, 12h, 30m, 90s (a bare
    /// number is seconds).
    #[arg(
        long = "half-life",
        env = "HALF_LIFE",
        default_value = "7d",
        value_parser = parse_duration_micros
    )]
    pub(crate) half_life_micros: i64,
}

/// `7d`, `12h`, `30m`, `90s` or a bare number of seconds, as microseconds (more than zero).
fn parse_duration_micros(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let secs_per: f64 = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "expected a duration such as 7d, 12h, 30m or 90s, found {s:?}"
            ))
        }
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 7d, 12h, 30m or 90s, found {s:?}"))?;
    let micros = n * secs_per * 1e6;
    if !(1.0..1e17).contains(&micros) {
        return Err(format!(
            "expected a positive duration of at most a few thousand years, found {s:?}"
        ));
    }
    Ok(micros as i64)
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub(crate) fn config(&self) -> EngineConfig {
        const S: i64 = 1_000_000;
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / S).saturating_mul(S);
        EngineConfig {
            lookback_micros: secs(self.lookback_secs),
            out_of_orderness_micros: secs(self.out_of_orderness_secs),
            idle_timeout_micros: secs(self.idle_timeout_secs),
            models: self.models,
            half_life_micros: self.half_life_micros,
        }
    }
}

/// `streaming replay`.
#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    /// Clicks, one JSON object per line.
    #[arg(long)]
    pub(crate) clicks: PathBuf,
    /// Checkouts, one JSON object per line.
    #[arg(long)]
    pub(crate) checkouts: PathBuf,
    /// Users, one {"id": <int>, "user_name": "<str>"} per line; without it names are NULL.
    #[arg(long)]
    pub(crate) users: Option<PathBuf>,
    /// Where the rows go, one JSON object per line (`-` for standard output).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Where late clicks go (optional).
    #[arg(long)]
    pub(crate) late: Option<PathBuf>,
    /// Where the multi-touch models' credits go, one row per checkout, click and model
    /// (optional; the `attributed_touches` table's rows).
    #[arg(long)]
    pub(crate) touches: Option<PathBuf>,
    /// Where refused lines go, with their reasons (optional; always reported on stderr).
    #[arg(long = "dead-letter")]
    pub(crate) dead_letter: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long = "summary-json")]
    pub(crate) summary_json: bool,
    /// Also write an HTML report of the rows (one self-contained file, charts in inline SVG).
    #[arg(long, env = "REPLAY_REPORT")]
    pub(crate) report: Option<PathBuf>,
    /// The largest share of bad lines an input may have, 0 to 1: above it the replay fails
    /// (exit 1, no output replaced), since such a file is most likely the wrong one (the
    /// checkouts given as --clicks, a binary file). 1 accepts any file.
    #[arg(
        long = "max-bad-share",
        env = "REPLAY_MAX_BAD_SHARE",
        default_value_t = firstclick_replay::DEFAULT_MAX_BAD_SHARE,
        value_parser = parse_share
    )]
    pub(crate) max_bad_share: f64,
    /// Partitions (key groups) to replay as: a user's events go to partition
    /// hash(user_id) mod P, each with its own engine and watermark, so the rows are those of a
    /// P-partition deployment. 1 is the single-engine replay.
    #[arg(
        long,
        env = "PARTITIONS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=65_536)
    )]
    pub(crate) partitions: u32,
    /// Worker threads that parse the inputs and run the partitions (default: the number of
    /// cores). The outputs are the same, byte for byte, for every number of threads.
    #[arg(
        long,
        env = "REPLAY_THREADS",
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub(crate) threads: Option<u32>,
    /// Attribution settings.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

/// A share between 0 and 1.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a share between 0 and 1 (e.g. 0.5), found {s:?}"
        )),
    }
}

/// `streaming demo` (also what `streaming` runs with no cloud configured).
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Where the rows go.
    #[arg(
        long = "demo-out",
        env = "DEMO_OUT",
        default_value = "out/demo-rows.ndjson"
    )]
    pub(crate) out: PathBuf,
    /// How many clicks to generate.
    #[arg(long = "demo-clicks", env = "DEMO_CLICKS", default_value_t = 200_000)]
    pub(crate) clicks: u64,
    /// Seed of the generator.
    #[arg(long = "demo-seed", env = "DEMO_SEED", default_value_t = 42)]
    pub(crate) seed: u64,
    /// Attribution settings.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flattened connector's flags fit together (unique names, valid defaults).
    #[test]
    fn command_line_is_consistent() {
        StreamingCli::command().debug_assert();
    }

    #[test]
    fn half_lives_take_units() {
        let s = 1_000_000;
        assert_eq!(super::parse_duration_micros("7d"), Ok(7 * 86_400 * s));
        assert_eq!(super::parse_duration_micros("30m"), Ok(1_800 * s));
        assert_eq!(super::parse_duration_micros("1.5h"), Ok(5_400 * s));
        assert_eq!(super::parse_duration_micros("90"), Ok(90 * s));
        assert!(super::parse_duration_micros("0s").is_err());
        assert!(super::parse_duration_micros("-3m").is_err());
        assert!(super::parse_duration_micros("soon").is_err());
        assert!(super::parse_duration_micros("3w").is_err());
    }
}
