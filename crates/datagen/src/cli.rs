//! The `datagen` command line, in the library so that deployment checks can compare it with
//! the variables docker-compose passes, and the defaults of the two modes
//! ([`DatagenCli::resolve`]).
//!
//! A file data set (`--out DIR`) is reproducible: seed 42 and event time from
//! 2026-01-01T00:00:00Z unless told otherwise. Publishing (no `--out`) feeds a running pipeline
//! that remembers what it saw (ids for deduplication, the watermark), so a second run with the
//! same defaults would be all duplicates, or all late: there the defaults come from the clock
//! (see [`DatagenCli::resolve`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use firstclick_cli::GcpArgs;
use firstclick_model::EventTime;
use firstclick_pubsub::PubSubArgs;
use firstclick_redis::RedisArgs;

use crate::config::GeneratorConfig;

fn parse_publish_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "expected messages per second, 0 (as fast as Pub/Sub takes them) or more, found {s:?}"
        )),
    }
}

/// The `--help` text after the flags: the two modes' defaults and the exit status.
const AFTER_HELP: &str = "\
Defaults of the two modes:
  --out DIR (files)   reproducible: --seed 42, --start 2026-01-01T00:00:00Z
  publishing          a seed from the clock and --start now, with --event-rate following
                      --rate, so that a second run against the same pipeline is neither all
                      duplicates nor all late; the seed and start used are printed, pass them
                      to repeat a run

Exit status:
  0   done
  1   failed while running (a service refused a request or could not be reached); running
      again later may succeed
  2   bad command line (an unknown flag, a value that does not parse)
  78  configuration error (EX_CONFIG): a setting cannot be used (a bad name, a missing or
      refused key, --out without --clicks); the message names the setting to fix, running
      again unchanged cannot succeed";

/// Generates fake users, clicks and checkouts, deterministically under --seed.
#[derive(Parser, Debug)]
#[command(name = "datagen", version, about, after_help = AFTER_HELP)]
pub struct DatagenCli {
    /// Write the data set as NDJSON files into this directory (created if missing) instead of
    /// publishing it.
    #[arg(long, env = "DATAGEN_OUT")]
    pub out: Option<PathBuf>,

    /// Messages per second to publish (0: as fast as Pub/Sub takes them).
    #[arg(long, env = "DATAGEN_RATE", default_value_t = 100.0, value_parser = parse_publish_rate)]
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

/// Where a setting of a run came from, for the line `datagen` prints before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Given as a flag or an environment variable.
    Given,
    /// The built-in default (file mode).
    Default,
    /// Taken from the clock (publishing without the flag).
    Clock,
    /// Derived from `--rate` (publishing without `--event-rate`).
    Rate,
}

/// The command line with the defaults of its mode applied ([`DatagenCli::resolve`]).
#[derive(Debug)]
pub struct Resolved {
    /// The settings to run with.
    pub cli: DatagenCli,
    /// Where `--seed` came from.
    pub seed: Origin,
    /// Where `--start` came from.
    pub start: Origin,
    /// Where `--event-rate` came from.
    pub event_rate: Origin,
}

impl Resolved {
    /// One line saying what the run uses and how to repeat it.
    pub fn describe(&self) -> String {
        let g = &self.cli.generator;
        let said = |o: Origin| match o {
            Origin::Given => "",
            Origin::Default => " (the default)",
            Origin::Clock => " (from the clock)",
            Origin::Rate => {
                " (--rate × clicks per message, so event time keeps pace with the clock)"
            }
        };
        let mut line = format!(
            "seed {}{}, event time from {}{}, {} clicks per second of event time{}",
            g.seed,
            said(self.seed),
            g.start.to_rfc3339(),
            said(self.start),
            short(g.event_rate),
            said(self.event_rate),
        );
        if self.seed == Origin::Clock || self.start == Origin::Clock {
            line.push_str(&format!(
                "; to repeat this run: --seed {} --start {}",
                g.seed,
                g.start.to_rfc3339()
            ));
        }
        line
    }
}

/// A rate with at most two decimals (`66.67`, `100`).
fn short(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn given(matches: &ArgMatches, id: &str) -> bool {
    matches
        .value_source(id)
        .is_some_and(|s| s != ValueSource::DefaultValue)
}

impl DatagenCli {
    /// Parses `args` (the program name first) and applies the defaults of the mode
    /// ([`DatagenCli::resolve`]); `now` is the wall clock.
    pub fn try_parse_resolved<I, T>(args: I, now: EventTime) -> Result<Resolved, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        Ok(cli.resolve(&matches, now))
    }

    /// Applies the defaults of the mode to what `matches` did not set (flag or environment
    /// variable). With `--out` nothing changes: a file data set is reproducible. When
    /// publishing, a pipeline downstream remembers the ids it saw and its watermark, so:
    /// - `--start` defaults to `now` (whole milliseconds): a fixed date would be behind the
    ///   watermark a first run left, making every event of a second run late;
    /// - `--seed` defaults to one from the clock: the same seed again repeats every id, and
    ///   the pipeline drops them all as duplicates;
    /// - `--event-rate` (clicks per second of event time) follows `--rate` (messages per
    ///   second) when that is above 0: `rate / (1 + repeat probability)`, the clicks among
    ///   the messages, so event time keeps pace with the clock instead of running ahead.
    pub fn resolve(mut self, matches: &ArgMatches, now: EventTime) -> Resolved {
        let default_or = |id: &str, clock: Origin| {
            if given(matches, id) {
                Origin::Given
            } else {
                clock
            }
        };
        if self.out.is_some() {
            return Resolved {
                seed: default_or("seed", Origin::Default),
                start: default_or("start", Origin::Default),
                event_rate: default_or("event_rate", Origin::Default),
                cli: self,
            };
        }
        let g = &mut self.generator;
        let seed = default_or("seed", Origin::Clock);
        if seed == Origin::Clock {
            // Microseconds since 1970, mixed so that runs a moment apart differ in every bit.
            g.seed = (now.as_micros() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1;
        }
        let start = default_or("start", Origin::Clock);
        if start == Origin::Clock {
            g.start = EventTime::from_micros(now.as_micros() / 1000 * 1000);
        }
        let mut event_rate = default_or("event_rate", Origin::Default);
        if event_rate == Origin::Default && self.rate > 0.0 {
            g.event_rate = self.rate / (1.0 + g.repeat_probability);
            event_rate = Origin::Rate;
        }
        Resolved {
            cli: self,
            seed,
            start,
            event_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-05-01T12:00:00.123456Z.
    const NOW: i64 = 1_777_636_800_123_456;

    fn resolve(args: &[&str]) -> Resolved {
        let all = std::iter::once("datagen").chain(args.iter().copied());
        DatagenCli::try_parse_resolved(all, EventTime::from_micros(NOW)).expect("parses")
    }

    #[test]
    fn publishing_starts_at_the_clock_with_a_clock_seed() {
        let r = resolve(&[]);
        assert_eq!(r.start, Origin::Clock);
        assert_eq!(r.cli.generator.start.as_micros(), NOW / 1000 * 1000);
        assert_eq!(r.seed, Origin::Clock);
        assert_ne!(r.cli.generator.seed, 42);
        // Another moment, another seed.
        let later = DatagenCli::try_parse_resolved(["datagen"], EventTime::from_micros(NOW + 1))
            .expect("parses");
        assert_ne!(later.cli.generator.seed, r.cli.generator.seed);
        // 100 messages/s with repeat probability 0.5: two clicks in three messages.
        assert_eq!(r.event_rate, Origin::Rate);
        assert!((r.cli.generator.event_rate - 100.0 / 1.5).abs() < 1e-9);
        let line = r.describe();
        assert!(line.contains("(from the clock)"), "{line}");
        assert!(
            line.contains(&format!(
                "--seed {} --start 2026-05-01T12:00:00.123",
                r.cli.generator.seed
            )),
            "{line}"
        );
    }

    /// The real clock: what the binary does without --start is within a minute of now.
    #[test]
    fn publishing_without_start_is_within_a_minute_of_now() {
        let now = firstclick_model::time::wall_clock();
        let r = DatagenCli::try_parse_resolved(["datagen"], now).expect("parses");
        let ahead = (r.cli.generator.start.as_micros() - now.as_micros()).abs();
        assert!(ahead < 60_000_000, "{ahead} µs away from now");
    }

    #[test]
    fn given_values_win_when_publishing() {
        let r = resolve(&[
            "--seed",
            "7",
            "--start",
            "2026-02-01T00:00:00Z",
            "--event-rate",
            "10",
        ]);
        assert_eq!(
            (r.seed, r.start, r.event_rate),
            (Origin::Given, Origin::Given, Origin::Given)
        );
        assert_eq!(r.cli.generator.seed, 7);
        assert_eq!(r.cli.generator.start.to_rfc3339(), "2026-02-01T00:00:00Z");
        assert_eq!(r.cli.generator.event_rate, 10.0);
        assert!(!r.describe().contains("to repeat"), "{}", r.describe());
    }

    #[test]
    fn file_mode_stays_reproducible() {
        let r = resolve(&["--out", "data", "--clicks", "10"]);
        assert_eq!(
            (r.seed, r.start, r.event_rate),
            (Origin::Default, Origin::Default, Origin::Default)
        );
        assert_eq!(r.cli.generator.seed, 42);
        assert_eq!(r.cli.generator.start.to_rfc3339(), "2026-01-01T00:00:00Z");
        assert_eq!(r.cli.generator.event_rate, 100.0);
    }

    /// As fast as possible: no rate to follow, the event rate keeps its default.
    #[test]
    fn an_unpaced_run_keeps_the_default_event_rate() {
        let r = resolve(&["--rate", "0"]);
        assert_eq!(r.event_rate, Origin::Default);
        assert_eq!(r.cli.generator.event_rate, 100.0);
    }

    #[test]
    fn a_negative_rate_is_a_command_line_error() {
        let e =
            DatagenCli::try_parse_resolved(["datagen", "--rate=-1"], EventTime::from_micros(NOW))
                .expect_err("refused");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("expected messages per second"),
            "{e}"
        );
    }
}
