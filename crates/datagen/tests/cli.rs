//! The `datagen` binary as a user runs it: exit codes (2 bad command line, 78 configuration
//! error), no backtrace under `RUST_BACKTRACE=1`, logging flags anywhere, and the defaults of
//! the two modes: files reproducible, publishing from the clock (said on stderr before
//! anything is written). Needs no service: the publishing run points at closed ports.

use std::process::{Command, Output};

use firstclick_model::EventTime;

fn datagen(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datagen"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("datagen runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// No backtrace, and short: the error is the user's to act on.
fn assert_user_error(out: &Output, code: i32) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(err.lines().count() <= 6, "{err}");
}

#[test]
fn a_file_data_set_without_clicks_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = datagen(&["--out", "data"], dir.path());
    assert_user_error(&out, 78);
    let err = text(&out.stderr);
    assert!(err.contains("datagen: error: expected --clicks N"), "{err}");
}

#[test]
fn bad_command_lines_exit_2_and_help_documents_the_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_user_error(&datagen(&["--rate=-1"], dir.path()), 2);
    assert_user_error(&datagen(&["--no-such-flag"], dir.path()), 2);
    let help = datagen(&["--help"], dir.path());
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(help.contains("78  configuration error"), "{help}");
    assert!(help.contains("Defaults of the two modes"), "{help}");
}

/// Same flags, same bytes; the logging flags are accepted after the others too.
#[test]
fn file_mode_is_reproducible_and_says_its_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--out", "a", "--clicks", "300", "--log-format", "json"];
    let first = datagen(&args, dir.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let err = text(&first.stderr);
    assert!(
        err.contains("seed 42 (the default), event time from 2026-01-01T00:00:00Z (the default)"),
        "{err}"
    );
    let second = datagen(&["--out", "b", "--clicks", "300"], dir.path());
    assert!(second.status.success(), "{}", text(&second.stderr));
    for f in ["users.ndjson", "clicks.ndjson", "checkouts.ndjson"] {
        let a = std::fs::read(dir.path().join("a").join(f)).expect("first run's file");
        let b = std::fs::read(dir.path().join("b").join(f)).expect("second run's file");
        assert!(!a.is_empty());
        assert_eq!(a, b, "{f} differs between two runs with the same flags");
    }
}

/// The publishing mode's start is the wall clock (not 2026-01-01, behind the watermark of a
/// previous run) and its seed is new: both printed with how to repeat the run. Pub/Sub on a
/// closed port makes the run fail after saying so; nothing is published.
#[test]
fn publishing_starts_at_the_clock_and_says_how_to_repeat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let before = firstclick_model::time::wall_clock();
    let out = Command::new(env!("CARGO_BIN_EXE_datagen"))
        .args(["--clicks", "10"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PUBSUB_EMULATOR_HOST", format!("127.0.0.1:{port}"))
        .env("REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("datagen runs");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("(from the clock)"), "{first}");
    let start = first
        .split("event time from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| EventTime::parse(t).ok())
        .unwrap_or_else(|| panic!("no start in {first:?}"));
    let off = (start.as_micros() - before.as_micros()).abs();
    assert!(off < 60_000_000, "start {start} is {off} µs from now");
    assert!(first.contains("to repeat this run: --seed "), "{first}");
    assert!(!first.contains("seed 42 "), "{first}");
}
