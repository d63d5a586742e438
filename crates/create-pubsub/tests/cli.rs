//! Runs the `create-pubsub` binary against the real emulator at `PUBSUB_EMULATOR_HOST`.

use std::process::{Command, Output};

fn emulator_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "PUBSUB_EMULATOR_HOST is not set: start the Pub/Sub emulator (e.g. \
             cloud-pubsub-emulator --host=127.0.0.1 --port=8185) and export \
             PUBSUB_EMULATOR_HOST=127.0.0.1:8185"
        )
    })
}

fn run(host: &str, project: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_create-pubsub"))
        .env_clear()
        .env("PUBSUB_EMULATOR_HOST", host)
        .env("PROJECT_ID", project)
        .env("CLICK_TOPIC", "cli-clicks")
        .env("RUST_LOG", "warn")
        // As on the machines that run these tests: user errors must still print no backtrace.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("create-pubsub runs")
}

#[test]
fn creates_then_reports_existing_then_fails_clearly() {
    let host = emulator_host();
    // A fresh project keeps this run's resources apart from every other run's.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let project = format!("cli-{}-{nanos}", std::process::id());

    let first = run(&host, &project);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("8 created, 0 already there"), "{out}");
    assert!(
        out.contains(&format!(
            "created subscription projects/{project}/subscriptions/cli-clicks"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("projects/{project}/topics/firstclick-dead-letter")),
        "{out}"
    );

    let second = run(&host, &project);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("0 created, 8 already there"), "{out}");

    // Nothing listens on port 1: a failure while running (1), and the message says what to do.
    let failed = run("127.0.0.1:1", &project);
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("not reachable"),
        "{err}"
    );
    assert!(err.contains("PUBSUB_EMULATOR_HOST"), "{err}");
}

/// A setting that cannot be used: 78 (EX_CONFIG), one line naming it, no backtrace.
#[test]
fn a_bad_project_id_is_a_configuration_error() {
    let out = run(&emulator_host(), "bad project");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("create-pubsub: error: "), "{err}");
    assert!(err.contains("fix --project-id / PROJECT_ID"), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

/// A bad command line: clap's 2, and the logging flags are global (accepted anywhere).
#[test]
fn a_bad_flag_exits_2_and_help_lists_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_create-pubsub"))
        .args(["--no-such-flag"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("create-pubsub runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(err.lines().count() <= 6, "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_create-pubsub"))
        .arg("--help")
        .output()
        .expect("create-pubsub runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    assert!(text.contains("78  configuration error"), "{text}");
}
