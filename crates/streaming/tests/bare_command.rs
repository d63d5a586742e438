//! `streaming` as a new user first runs it: with no subcommand it must not guess silently. A
//! flag of `streaming run` on the command line means the service (here it fails with a
//! configuration error, 78, and writes nothing to `out/`); with nothing set, it says on stderr
//! that it runs the embedded demo and why, and the demo says how many bad messages it did not
//! show and where they all are. Errors never print a backtrace, even with `RUST_BACKTRACE=1`.
//! Needs no service.

use std::path::Path;
use std::process::{Command, Output};

/// `streaming args` in `cwd`, with an environment of only `vars` (and PATH, HOME, and
/// `RUST_BACKTRACE=1` as on the machines that run these tests).
fn streaming(args: &[&str], cwd: &Path, vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streaming"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("RUST_BACKTRACE", "1")
        .envs(vars.iter().copied())
        .output()
        .expect("streaming runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_no_backtrace(err: &str) {
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `--project-id p` without any cloud variable: the service, not the demo. Redis's URL (from
/// the environment, which alone would not choose the service) makes it stop at once.
#[test]
fn a_run_flag_means_the_service_even_without_a_cloud_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = streaming(
        &["--project-id", "p"],
        dir.path(),
        &[("REDIS_URL", "nonsense://"), ("METRICS_ADDR", "")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("no subcommand, and --project-id given: running the service"),
        "{err}"
    );
    assert!(err.contains("REDIS_URL"), "{err}");
    assert_no_backtrace(&err);
    assert!(err.lines().count() <= 4, "{err}");
    assert!(!dir.path().join("out").exists(), "the demo ran");
}

/// A cloud variable alone also means the service.
#[test]
fn a_cloud_variable_means_the_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = streaming(
        &[],
        dir.path(),
        &[
            ("PROJECT_ID", "p"),
            ("REDIS_URL", "nonsense://"),
            ("METRICS_ADDR", ""),
        ],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("no subcommand, and PROJECT_ID set"), "{err}");
    assert!(!dir.path().join("out").exists(), "the demo ran");
}

/// Nothing set: the demo, said on stderr first; of its bad messages, five are logged, then
/// how many more there are and the file that holds them all.
#[test]
fn the_bare_command_says_it_runs_the_demo_and_counts_hidden_bad_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = streaming(&[], dir.path(), &[("DEMO_CLICKS", "20000")]);
    let err = text(&o.stderr);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{err}");
    assert!(
        err.lines().next().unwrap_or_default().contains(
            "no subcommand and no cloud setting (no flag of `streaming run`, none of \
             PUBSUB_EMULATOR_HOST"
        ),
        "{err}"
    );
    assert!(
        err.contains("running the embedded demo; `streaming run` runs the service"),
        "{err}"
    );
    let bad: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("bad lines"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bad lines count in {out}"));
    assert!(bad > 5, "too few bad messages to hide any: {out}");
    assert_eq!(
        err.matches("bad message (dead-lettered in production)")
            .count(),
        5
    );
    let note = format!(
        "... and {} more bad messages not shown; all {bad} are in out/demo-dead-letter.ndjson",
        bad - 5
    );
    assert!(err.contains(&note), "{note:?} not in {err}");
    let dead = std::fs::read_to_string(dir.path().join("out/demo-dead-letter.ndjson"))
        .expect("dead letters");
    assert_eq!(dead.lines().count() as u64, bad);
    assert!(dead.lines().all(
        |l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["reason"].is_string())
    ));
    assert!(dir.path().join("out/demo-rows.ndjson").exists());
}

/// User errors of every kind: a short message, the documented code, no backtrace.
#[test]
fn user_errors_never_print_a_backtrace() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A bad command line: 2.
    for args in [
        &["--no-such-flag"][..],
        &["replay", "--clicks"][..],
        &["--project-id", "p", "demo"][..],
        &["demo", "--demo-clicks", "many"][..],
    ] {
        let o = streaming(args, dir.path(), &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_no_backtrace(&err);
        assert!(err.lines().count() <= 8, "{args:?}: {err}");
    }
    // A configuration error: 78.
    let o = streaming(
        &["run", "--redis-url", "nonsense://"],
        dir.path(),
        &[("METRICS_ADDR", "")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert_no_backtrace(&err);
    assert!(err.lines().count() <= 3, "{err}");
    // A failure: 1 (a missing input).
    let o = streaming(
        &[
            "replay",
            "--clicks",
            "missing.ndjson",
            "--checkouts",
            "missing.ndjson",
            "--out",
            "-",
        ],
        dir.path(),
        &[],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_no_backtrace(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    // The cause is said once, not once per level of the error chain.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
