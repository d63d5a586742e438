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
    Command::new(env!("CARGO_BIN_EXE_create-bq-table"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIGQUERY_EMULATOR_HOST", host)
        .env("BQ_DATASET", dataset)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run create-bq-table")
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
        out.contains("primary key (checkout_id, attribution_model) NOT ENFORCED"),
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

#[test]
fn a_bad_dataset_name_is_refused_before_any_request() {
    let out = run(&emulator_host(), "bad-name");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--bq-dataset/BQ_DATASET \"bad-name\""),
        "{err}"
    );
}
