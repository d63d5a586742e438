//! What both checks share: the four binaries' `clap` parsers and the variables and flags a
//! command line of one of them reads. Used by `compose_env.rs` and `kubernetes_env.rs`; each
//! uses only part of it, hence `dead_code` allowed.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_norway::Value;

/// Variables that a binary reads although no `clap` argument declares them.
pub(crate) const READ_OUTSIDE_CLAP: &[&str] = &[
    // The log filter: `firstclick_cli::init_logging` hands it to tracing-subscriber's
    // `EnvFilter::try_from_default_env`, in every binary.
    "RUST_LOG",
];

/// Issue 9's scale-out settings, which the deployment files use and the binaries are being given:
/// `streaming run` reads PARTITIONS, LEASE_TTL_SECS, WORKER_ID and REDIS_CLUSTER, and
/// `create-pubsub` takes `--partitions`.
pub(crate) const SCALE_OUT: &[&str] = &[
    "PARTITIONS",
    "LEASE_TTL_SECS",
    "WORKER_ID",
    "REDIS_CLUSTER",
    "--partitions",
];

/// The note a problem about one of [`SCALE_OUT`] carries.
pub(crate) fn scale_out_note(name: &str) -> String {
    if SCALE_OUT.contains(&name) {
        " (one of issue 9's scale-out settings, which the binaries are being given)".to_string()
    } else {
        String::new()
    }
}

/// Whether a problem is about one of the scale-out settings only.
pub(crate) fn is_scale_out_problem(problem: &str) -> bool {
    problem.contains("issue 9's scale-out settings")
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn read_repo_file(name: &str) -> String {
    let path = repo_root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The four binaries' parsers, by binary name.
pub(crate) fn binaries() -> BTreeMap<String, clap::Command> {
    BTreeMap::from([
        (
            "create-pubsub".to_string(),
            firstclick_create_pubsub::CreatePubSubCli::command(),
        ),
        (
            "create-bq-table".to_string(),
            firstclick_create_bq_table::CreateBqTableCli::command(),
        ),
        (
            "datagen".to_string(),
            firstclick_datagen::DatagenCli::command(),
        ),
        (
            "streaming".to_string(),
            firstclick_streaming::StreamingCli::command(),
        ),
    ])
}

/// What one command line of a binary accepts: the command and each subcommand that the leading
/// words of its arguments name (`streaming run`).
pub(crate) struct CommandLine {
    /// The command path, `streaming run`.
    pub(crate) path: String,
    /// The `env` names of the arguments along the path, plus [`READ_OUTSIDE_CLAP`].
    pub(crate) env: BTreeSet<String>,
    /// The long flags (without `--`) of the last command of the path, its globals included.
    pub(crate) long_flags: BTreeSet<String>,
}

/// Walks `cmd` along the subcommands named by the leading words of `args`.
pub(crate) fn command_line(cmd: &clap::Command, args: &[String]) -> CommandLine {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut path = vec![cmd.get_name().to_string()];
    let mut env = BTreeSet::new();
    let mut current = &cmd;
    loop {
        for arg in current.get_arguments() {
            if let Some(name) = arg.get_env() {
                env.insert(name.to_string_lossy().into_owned());
            }
        }
        let next = args
            .get(path.len() - 1)
            .and_then(|word| current.find_subcommand(word.as_str()));
        match next {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                current = sub;
            }
            None => break,
        }
    }
    env.extend(READ_OUTSIDE_CLAP.iter().map(|v| v.to_string()));
    let long_flags = current
        .get_arguments()
        .flat_map(|a| {
            a.get_long_and_visible_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string)
        })
        .collect();
    CommandLine {
        path: path.join(" "),
        env,
        long_flags,
    }
}

/// The environment variables `cmd` reads when run with `args`, and the command path.
pub(crate) fn env_vars_read(cmd: &clap::Command, args: &[String]) -> (BTreeSet<String>, String) {
    let line = command_line(cmd, args);
    (line.env, line.path)
}

/// A list of words from `command`/`entrypoint`/`args`: a YAML list or a string split on
/// whitespace.
pub(crate) fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|w| match w {
                Value::String(s) => s.clone(),
                other => panic!("expected a string in command/entrypoint, found {other:?}"),
            })
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => panic!("expected a list or a string as command/entrypoint, found {other:?}"),
    }
}
