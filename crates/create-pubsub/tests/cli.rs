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

    // Nothing listens on port 1: non-zero exit, and the message says what to do.
    let failed = run("127.0.0.1:1", &project);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("not reachable"),
        "{err}"
    );
    assert!(err.contains("PUBSUB_EMULATOR_HOST"), "{err}");
}
