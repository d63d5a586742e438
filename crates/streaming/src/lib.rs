//! The `streaming` binary as a library: parses flags and hands over to the mode:
//! `replay` (files), `demo` (embedded, no services) or, with a cloud configured, the streaming
//! pipeline.
//!
//! # Layout
//! - `args`: flags and environment variables ([`StreamingCli`]).
//! - `demo`: generator → engine → NDJSON file in one process.
//! - `replay_cmd`: the file replay command.
//! - `report_file`: the HTML report of a replay or the demo (`firstclick-report`), written
//!   through a temporary file.
//! - `run`: the streaming service: Pub/Sub in, Redis enrichment, BigQuery out; the partition
//!   layout, the routers and the lease loop.
//! - `owner`: the partitions this worker owns, under leases in Redis (the shell of
//!   `firstclick-partition`'s lease state machine).
//! - `runner`: one partition's pipeline: restore, intake, worker, stop.
//! - `router`: with P > 1, the original subscriptions routed to the partition topics by user.
//! - `intake`: one task per subscription: parse, dead-letter bad messages.
//! - `connect`: subscriptions and publishers opened while Pub/Sub may not answer (retried).
//! - `worker`: the thin driver of the delivery core (`firstclick-delivery`), which owns the
//!   engine: rows, checkpoint deltas and base pieces, acks.
//! - `sink`: the rows' way into BigQuery (`--bigquery-write-api`: insertAll, or exactly once
//!   through pending streams), with its retries.
//! - `state`: loading the checkpoint from Redis ([`load_checkpoint`], [`Loaded`]); `state
//!   inspect` and `state reset`.
//! - `preflight`: the checks of every dependency, run at start-up (exit code 78 when one
//!   fails) and by `check`, and their periodic probes afterwards.
//! - `check`: `streaming check`, the checklist of a configuration against the real services.
//! - `health`: readiness and each dependency's up/down state (/readyz, the gauges).
//! - `outage`: retries with jittered backoff that log an outage once.
//! - `shutdown`: SIGTERM/SIGINT handling, the grace period after which the stop is forced.
//! - `metrics`, `http`: counters, the stats line, /metrics, /healthz and /readyz.
//!
//! With no subcommand, `streaming` runs the service when a flag of `streaming run` is on the
//! command line or a cloud variable is set (PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST,
//! GOOGLE_APPLICATION_CREDENTIALS, PROJECT_ID), and the embedded demo otherwise; either way it
//! says on stderr which and why.
//!
//! The modules are private: the binary needs [`main_entry`] and [`exit_code`], the deployment
//! checks [`StreamingCli`], the checkpoint benchmark [`load_checkpoint`].

mod args;
mod check;
mod connect;
mod demo;
mod health;
mod http;
mod intake;
mod metrics;
mod outage;
mod owner;
mod preflight;
mod replay_cmd;
mod report_file;
mod router;
mod run;
mod runner;
mod shutdown;
mod sink;
mod state;
mod worker;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

use args::StreamingCommand;

pub use args::StreamingCli;
pub use state::{load as load_checkpoint, Loaded};

/// The environment variables that mean "a cloud is configured": with one of them set (not
/// empty), `streaming` without a subcommand runs the service.
pub(crate) const CLOUD_VARIABLES: [&str; 4] = [
    "PUBSUB_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "PROJECT_ID",
];

/// What `streaming` with no subcommand runs, and why.
#[derive(Debug, PartialEq, Eq)]
enum BareMode {
    /// The service: these flags were given on the command line.
    ServiceForFlags(Vec<String>),
    /// The service: these cloud variables are set.
    ServiceForVariables(Vec<&'static str>),
    /// The embedded demo: nothing says otherwise.
    Demo,
}

/// Decides what a bare `streaming` runs: the service when any flag of `streaming run` was
/// given on the command line (not from the environment or a default: `--project-id p` must
/// not be ignored), or when a variable of [`CLOUD_VARIABLES`] is set; otherwise the demo.
fn default_mode(matches: &ArgMatches, var_set: impl Fn(&str) -> bool) -> BareMode {
    let flags = run_flags_given(matches);
    if !flags.is_empty() {
        return BareMode::ServiceForFlags(flags);
    }
    let vars: Vec<&'static str> = CLOUD_VARIABLES.into_iter().filter(|v| var_set(v)).collect();
    if !vars.is_empty() {
        return BareMode::ServiceForVariables(vars);
    }
    BareMode::Demo
}

/// The flags of `streaming run` given on the command line before any subcommand (`--long`
/// names, in declaration order).
fn run_flags_given(matches: &ArgMatches) -> Vec<String> {
    let run_args = run::RunArgs::augment_args(clap::Command::new("run"));
    run_args
        .get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| match a.get_long() {
            Some(long) => format!("--{long}"),
            None => a.get_id().to_string(),
        })
        .collect()
}

/// Service flags before a subcommand (`streaming --project-id p replay ...`) would be ignored:
/// a command-line error instead. (clap's `args_conflicts_with_subcommands` would also refuse
/// the global logging flags there.)
fn check_no_flags_before_subcommand(matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some((sub, _)) = matches.subcommand() else {
        return Ok(());
    };
    let flags = run_flags_given(matches);
    if flags.is_empty() {
        return Ok(());
    }
    Err(StreamingCli::command().error(
        clap::error::ErrorKind::ArgumentConflict,
        format!(
            "{} given before the subcommand `{sub}`, where it would be ignored: put the flags \
             of a subcommand after it (`streaming {sub} --help` lists them); only the logging \
             flags (--log-format) go anywhere",
            flags.join(", ")
        ),
    ))
}

fn var_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|s| !s.is_empty())
}

/// The exit code for an error [`main_entry`] returned: 78 (`EX_CONFIG`) for a configuration
/// error (a start-up check failed, a setting cannot be used), 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match preflight::exit_code(error) {
        firstclick_cli::exit::FAILURE => firstclick_cli::exit_code(error, |_| false),
        code => code,
    }
}

/// Parses the command line and runs the chosen mode.
pub fn main_entry() -> anyhow::Result<()> {
    firstclick_pubsub::install_crypto_provider();
    let matches = StreamingCli::command().get_matches();
    check_no_flags_before_subcommand(&matches).unwrap_or_else(|e| e.exit());
    let cli = StreamingCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    firstclick_cli::init_logging(&cli.log);
    match cli.command {
        Some(StreamingCommand::Replay(args)) => replay_cmd::run(args),
        Some(StreamingCommand::Demo(args)) => demo::run(args),
        Some(StreamingCommand::Check(args)) => in_runtime(check::run(*args)),
        Some(StreamingCommand::Run(args)) => run_service(*args),
        Some(StreamingCommand::State(cmd)) => in_runtime(state_command(cmd)),
        None => {
            // On stderr, whatever RUST_LOG says: which mode a bare command picked must never
            // be a guess the user cannot see.
            match default_mode(&matches, var_set) {
                BareMode::ServiceForFlags(flags) => {
                    eprintln!(
                        "streaming: no subcommand, and {} given: running the service \
                         (`streaming run`)",
                        flags.join(", ")
                    );
                    run_service(*cli.run)
                }
                BareMode::ServiceForVariables(vars) => {
                    eprintln!(
                        "streaming: no subcommand, and {} set: running the service \
                         (`streaming run`; `streaming demo` runs the embedded demo)",
                        vars.join(", ")
                    );
                    run_service(*cli.run)
                }
                BareMode::Demo => {
                    eprintln!(
                        "streaming: no subcommand and no cloud setting (no flag of `streaming \
                         run`, none of {} set): running the embedded demo; `streaming run` runs \
                         the service, `streaming demo` the demo without this note",
                        CLOUD_VARIABLES.join(", ")
                    );
                    let demo = StreamingCli::try_parse_from(["streaming", "demo"])
                        .map_err(|e| anyhow::anyhow!("internal error: {e}"))?;
                    match demo.command {
                        Some(StreamingCommand::Demo(args)) => demo::run(args),
                        _ => anyhow::bail!("internal error: the demo subcommand did not parse"),
                    }
                }
            }
        }
    }
}

fn run_service(args: run::RunArgs) -> anyhow::Result<()> {
    in_runtime(run::run(args))
}

fn in_runtime(job: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(job);
    // Tasks still waiting on a service (a forced stop) or a blocking DNS lookup must not hold
    // the exit: the work that matters is done or given up on.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// `state inspect` and `state reset`: every partition's checkpoint in turn (one when the
/// deployment is not partitioned); a reset also forgets the recorded partition layout.
async fn state_command(cmd: args::StateCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use args::StateCommand;
    let run = match &cmd {
        StateCommand::Inspect(a) => &a.run,
        StateCommand::Reset(a) => &a.run,
    };
    let deployment = run::checkpoint_name(run);
    let partitions = run.pubsub.partitions.max(1);
    if let StateCommand::Reset(a) = &cmd {
        if !a.yes {
            anyhow::bail!(
                "`state reset` deletes the checkpoint {deployment} ({partitions} partition(s)) \
                 on {}; run it again with --yes to confirm (stop every worker first)",
                run.redis.redacted_url()
            );
        }
    }
    for p in 0..partitions {
        let name = firstclick_redis::partition_checkpoint_name(&deployment, p, partitions);
        if partitions > 1 {
            println!("== partition {p} of {partitions}");
        }
        partition_state_command(&cmd, name).await?;
    }
    if let StateCommand::Reset(_) = &cmd {
        let leases = firstclick_redis::LeaseStore::new(
            &run.redis,
            deployment.clone(),
            partitions,
            "state-reset",
            1_000,
        )
        .context("bad Redis settings")?;
        if leases.forget_layout().await? {
            println!("forgot the recorded partition layout of {deployment}");
        }
    }
    Ok(())
}

/// One partition's part of [`state_command`], on its checkpoint `name`.
async fn partition_state_command(cmd: &args::StateCommand, name: String) -> anyhow::Result<()> {
    use anyhow::Context;
    use args::StateCommand;
    let run = match &cmd {
        StateCommand::Inspect(a) => &a.run,
        StateCommand::Reset(a) => &a.run,
    };
    let store = firstclick_redis::CheckpointStore::new(&run.redis, name.clone())
        .context("bad Redis settings")?;
    match cmd {
        StateCommand::Inspect(a) => {
            let forced = tokio_util::sync::CancellationToken::new();
            forced.cancel();
            match state::inspect(&store, a.run.engine.config(), &forced).await? {
                None => {
                    println!(
                        "no checkpoint named {name} on {} (keys firstclick:{{{name}}}:*)",
                        store.addr()
                    );
                }
                Some(i) if a.json => println!("{}", serde_json::to_string_pretty(&i)?),
                Some(i) => {
                    println!("checkpoint        {name} on {}", store.addr());
                    println!("keys              {}", i.keys.join(", "));
                    println!("format version    {}", i.format_version);
                    println!("live clicks       {}", i.live_clicks);
                    println!("pending checkouts {}", i.pending_checkouts);
                    println!("remembered ids    {}", i.remembered_checkouts);
                    println!(
                        "watermark         {}",
                        i.watermark.as_deref().unwrap_or("none yet")
                    );
                    println!(
                        "changelog         {} elements ({} replayed over the base, {} bytes)",
                        i.changelog_length, i.changelog_replayed, i.changelog_bytes
                    );
                    match (i.base_generation, i.base_age_secs) {
                        (0, _) => {
                            println!("base snapshot     none yet (everything is in the changelog)")
                        }
                        (g, age) => println!(
                            "base snapshot     generation {g}, {} pieces, {} bytes, written {}",
                            i.base_pieces,
                            i.base_bytes,
                            age.map_or("at an unknown time".to_string(), |a| format!(
                                "{a:.0} s ago"
                            ))
                        ),
                    }
                    println!("bytes in all      {}", i.base_bytes + i.changelog_bytes);
                    println!("clean shutdown    {}", i.clean_shutdown);
                    println!("restore took      {:.2} s", i.restore_secs);
                }
            }
            Ok(())
        }
        StateCommand::Reset(_) => {
            let deleted = state::reset(&store).await?;
            println!(
                "deleted checkpoint {name} on {} ({deleted} keys)",
                store.addr()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(args: &[&str], vars: &[&str]) -> BareMode {
        let matches = StreamingCli::command()
            .try_get_matches_from(std::iter::once("streaming").chain(args.iter().copied()))
            .expect("parses");
        default_mode(&matches, |v| vars.contains(&v))
    }

    #[test]
    fn any_run_flag_or_cloud_variable_means_the_service() {
        assert_eq!(mode(&[], &[]), BareMode::Demo);
        assert_eq!(
            mode(&["--project-id", "p"], &[]),
            BareMode::ServiceForFlags(vec!["--project-id".into()])
        );
        assert_eq!(
            mode(&["--lookback-secs=60", "--redis-url", "redis://r"], &[]),
            BareMode::ServiceForFlags(vec!["--redis-url".into(), "--lookback-secs".into()])
        );
        assert_eq!(
            mode(&[], &["PROJECT_ID"]),
            BareMode::ServiceForVariables(vec!["PROJECT_ID"])
        );
        // The logging flags belong to every mode: they choose none.
        assert_eq!(mode(&["--log-format", "json"], &[]), BareMode::Demo);
    }

    fn before_subcommand(args: &[&str]) -> Result<(), clap::Error> {
        let matches = StreamingCli::command()
            .try_get_matches_from(std::iter::once("streaming").chain(args.iter().copied()))
            .expect("parses");
        check_no_flags_before_subcommand(&matches)
    }

    #[test]
    fn service_flags_before_a_subcommand_are_refused_logging_flags_are_not() {
        assert!(before_subcommand(&["--log-format", "json", "demo"]).is_ok());
        assert!(before_subcommand(&["demo", "--log-format", "json"]).is_ok());
        assert!(before_subcommand(&["run", "--project-id", "p"]).is_ok());
        let e = before_subcommand(&["--project-id", "p", "run"]).expect_err("refused");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("--project-id given before the subcommand `run`"),
            "{e}"
        );
    }
}
