//! The binary against the BigQuery emulator: `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 cargo test
//! -p firstclick-create-bq-table`. Without the variable the tests panic and say so.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

fn emulator_host() -> String {
    match std::env::var("BIGQUERY_EMULATOR_HOST") {
        Ok(h) if !h.trim().is_empty() => h,
        _ => panic!(
            "BIGQUERY_EMULATOR_HOST is not set: these tests need the BigQuery emulator \
             (docs/design.md §9), e.g. BIGQUERY_EMULATOR_HOST=127.0.0.1:9050"
        ),
    }
}

fn run(host: &str, dataset: &str) -> Output {
    run_logging(host, dataset, "warn")
}

fn run_logging(host: &str, dataset: &str, rust_log: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_create-bq-table"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIGQUERY_EMULATOR_HOST", host)
        .env("BQ_DATASET", dataset)
        .env("RUST_LOG", rust_log)
        // As on the machines that run these tests: user errors must still print no backtrace.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run create-bq-table")
}

fn fresh_dataset(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn creates_then_reports_existing_objects() {
    let host = emulator_host();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dataset = format!("t_cli_{}_{}", std::process::id(), nanos % 1_000_000_000_000);

    let first = run(&host, &dataset);
    let out = text(&first.stdout);
    assert!(first.status.success(), "{out}\n{}", text(&first.stderr));
    assert!(
        out.contains(&format!("dataset test-project.{dataset}: created")),
        "{out}"
    );
    assert!(out.contains("attributed_checkouts: created"), "{out}");
    assert!(out.contains("attributed_checkouts_dedup: created"), "{out}");
    assert!(
        out.contains("primary key (checkout_id, attribution_model) NOT ENFORCED: skipped on the BigQuery emulator"),
        "{out}"
    );
    assert!(out.contains("attributed_touches: created"), "{out}");
    assert!(out.contains("attributed_touches_dedup: created"), "{out}");
    assert!(out.contains("model_comparison: created"), "{out}");
    assert!(
        out.contains("primary key (checkout_id, attribution_model, click_id) NOT ENFORCED"),
        "{out}"
    );

    let second = run(&host, &dataset);
    let out = text(&second.stdout);
    assert!(second.status.success(), "{out}\n{}", text(&second.stderr));
    // The dataset, both tables and the three views.
    assert_eq!(out.matches("already existed").count(), 6, "{out}");
}

#[test]
fn an_unreachable_backend_exits_non_zero_with_a_clear_message() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = run(&format!("127.0.0.1:{port}"), "t_cli_down");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: cannot create the output table"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert!(out.stdout.is_empty());
}

/// A bad setting is a configuration error (78, EX_CONFIG), one line, no backtrace.
#[test]
fn a_bad_dataset_name_is_refused_before_any_request() {
    let out = run(&emulator_host(), "bad-name");
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains("--bq-dataset/BQ_DATASET \"bad-name\""),
        "{err}"
    );
    assert!(err.starts_with("create-bq-table: error: "), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// At the default log level on the emulator: the primary keys are not sent (no `Parser
/// Error`), one line each says so, and nothing of the report is said a second time on stderr.
#[test]
fn the_emulator_run_says_everything_once() {
    let host = emulator_host();
    let dataset = fresh_dataset("t_cli_once");
    let first = run_logging(&host, &dataset, "info");
    let out = text(&first.stdout);
    let err = text(&first.stderr);
    assert!(first.status.success(), "{out}\n{err}");
    assert!(
        !out.contains("Parser Error") && !err.contains("Parser Error"),
        "{out}\n{err}"
    );
    assert_eq!(
        out.matches("skipped on the BigQuery emulator").count(),
        2,
        "one line per table: {out}"
    );
    let mut lines: Vec<&str> = out.lines().collect();
    let all = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), all, "a line printed twice: {out}");
    assert!(
        err.trim().is_empty(),
        "the report is on stdout only, stderr: {err}"
    );
}
