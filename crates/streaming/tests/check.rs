//! `streaming check` against the real emulators and Redis (docs/design.md §11): a good
//! configuration passes every line, exit 0, and consumes nothing (a message published before is
//! still there, no checkpoint key appears, the table stays empty); a missing subscription, a
//! table with a wrong schema, Redis on a closed port and a wrong ack deadline each exit 78 with
//! the failed line naming what to fix; `--json` has one entry per check, as the text has one
//! line. The service's start-up runs the same checks: `streaming run` refuses the wrong ack
//! deadline too.
//!
//! Needs PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST (and its gRPC port,
//! BIGQUERY_EMULATOR_GRPC_HOST or 9060) and REDIS_URL (`scripts/dev-up`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_model::schema::{ColumnMode, OUTPUT_COLUMNS};
use firstclick_pubsub::{
    ensure_topology, Admin, Connection, OutgoingMessage, PubSubArgs, Publisher, SubscribeOptions,
    Subscription,
};
use serde_json::Value;

mod common;
use common::{count_rows, env, Proc};

/// The exit code of a configuration error (EX_CONFIG).
const EXIT_CONFIG: i32 = 78;

/// Every check of a configuration (Pub/Sub 7, Redis 3, BigQuery 3, settings 4).
const CHECKS: usize = 17;

/// The names of one test: its topics, subscriptions, dataset and checkpoint.
struct Setup {
    suffix: String,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Setup {
            suffix: format!("{tag}-{:08x}", nanos ^ std::process::id().rotate_left(16)),
        }
    }

    fn gcp(&self) -> GcpArgs {
        GcpArgs {
            project_id: std::env::var("PROJECT_ID").unwrap_or_else(|_| "test-project".into()),
            credentials: None,
        }
    }

    fn pubsub(&self) -> PubSubArgs {
        PubSubArgs {
            emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
            click_topic: format!("check-clicks-{}", self.suffix),
            checkout_topic: format!("check-checkouts-{}", self.suffix),
            dead_letter_topic: format!("check-dead-{}", self.suffix),
            late_topic: format!("check-late-{}", self.suffix),
            ..PubSubArgs::default()
        }
    }

    fn dataset(&self) -> String {
        format!("check_{}", self.suffix.replace('-', "_"))
    }

    fn bigquery(&self) -> BigQueryArgs {
        BigQueryArgs {
            emulator_host: Some(env("BIGQUERY_EMULATOR_HOST")),
            emulator_grpc_host: None,
            dataset: self.dataset(),
            table: "attributed_checkouts".into(),
            touches_table: "attributed_touches".into(),
            location: None,
        }
    }

    fn checkpoint_key(&self) -> String {
        format!("firstclick:test:check:{}", self.suffix)
    }

    /// Topics, subscriptions (create-pubsub's), dataset, tables and views (create-bq-table's).
    async fn provision(&self) -> (Connection, BigQuery) {
        let (gcp, pubsub) = (self.gcp(), self.pubsub());
        ensure_topology(&gcp, &pubsub)
            .await
            .expect("topics and subscriptions");
        let bq = BigQuery::connect(&gcp, &self.bigquery())
            .await
            .expect("BigQuery client");
        bq.ensure_table().await.expect("tables");
        let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
        (conn, bq)
    }

    /// Deletes the subscriptions and topics, and the dataset.
    async fn clean_up(&self, conn: &Connection, bq: &BigQuery, extra_subscriptions: &[&str]) {
        let admin = Admin::new(conn).await.expect("admin");
        let topology = self.pubsub().topology();
        for (subscription, _) in topology.subscriptions() {
            let _ = admin.delete_subscription(subscription).await;
        }
        for subscription in extra_subscriptions {
            let _ = admin.delete_subscription(subscription).await;
        }
        for topic in topology.topics() {
            let _ = admin.delete_topic(topic).await;
        }
        let sql = format!(
            "DROP SCHEMA IF EXISTS `{}.{}` CASCADE",
            bq.project(),
            self.dataset()
        );
        let _ = bq.query(&sql).await;
    }

    /// `streaming <mode>` with this test's names (the environment a deployment sets) and
    /// every model, so that the touches table is checked too.
    fn command(&self, mode: &[&str]) -> Command {
        let p = self.pubsub();
        let grpc = std::env::var("BIGQUERY_EMULATOR_GRPC_HOST").unwrap_or_else(|_| {
            let rest = env("BIGQUERY_EMULATOR_HOST");
            let host = rest.rsplit_once(':').map_or(rest.as_str(), |(h, _)| h);
            format!("{host}:9060")
        });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streaming"));
        cmd.args(mode)
            .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
            .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
            .env("BIGQUERY_EMULATOR_GRPC_HOST", grpc)
            .env("BIGQUERY_WRITE_API", "storage-write")
            .env("REDIS_URL", env("REDIS_URL"))
            .env("PROJECT_ID", self.gcp().project_id)
            .env("CLICK_TOPIC", &p.click_topic)
            .env("CHECKOUT_TOPIC", &p.checkout_topic)
            .env("DEAD_LETTER_TOPIC", &p.dead_letter_topic)
            .env("LATE_TOPIC", &p.late_topic)
            .env("BQ_DATASET", self.dataset())
            .env("BQ_TABLE", "attributed_checkouts")
            .env("BQ_TOUCHES_TABLE", "attributed_touches")
            .env("ATTRIBUTION_MODEL", "first_click,linear")
            .env("CHECKPOINT_KEY", self.checkpoint_key())
            .env("METRICS_ADDR", "")
            .env("RUST_BACKTRACE", "1")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("CLICK_SUBSCRIPTION")
            .env_remove("CHECKOUT_SUBSCRIPTION")
            .env_remove("PUBSUB_ACK_DEADLINE_SECS")
            .env_remove("RECOVERY_HOLD_SECS")
            .env_remove("STARTUP_TIMEOUT_SECS")
            .env_remove("CHECK_TIMEOUT_SECS");
        cmd
    }
}

/// What one run of the binary gave.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}):\n{}", self.stdout))
    }
}

/// Runs `cmd` to its end, at most `limit`.
async fn run(mut cmd: Command, dir: &Path, limit: Duration) -> Outcome {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    cmd.stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut proc = Proc(Some(cmd.spawn().expect("streaming starts")));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let status = loop {
        let child = proc.0.as_mut().expect("a running child");
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "no exit within {limit:?}; stdout:\n{}\nstderr:\n{}",
            read(&out),
            read(&err)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: read(&out),
        stderr: read(&err),
        took: started.elapsed(),
    }
}

/// The entry of the check whose name starts with `check`.
fn entry<'a>(json: &'a Value, check: &str) -> &'a Value {
    json["checks"]
        .as_array()
        .and_then(|checks| {
            checks
                .iter()
                .find(|c| c["check"].as_str().is_some_and(|n| n.starts_with(check)))
        })
        .unwrap_or_else(|| panic!("no check {check:?} in {json:#}"))
}

/// Statuses of every entry but those named, which must be `status`.
fn others_pass(json: &Value, except: &[&str]) {
    for c in json["checks"].as_array().expect("checks") {
        let name = c["check"].as_str().unwrap_or("");
        if except.iter().any(|e| name.starts_with(e)) {
            continue;
        }
        assert_eq!(c["status"], "pass", "{c:#}");
    }
}

fn click(suffix: &str) -> OutgoingMessage {
    let now = firstclick_model::time::wall_clock();
    OutgoingMessage::new(
        serde_json::json!({
            "click_id": format!("click-{suffix}"),
            "user_id": 1,
            "product_id": "p-1",
            "datetime_occured": now.to_rfc3339(),
        })
        .to_string()
        .into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_configuration_passes_every_check_and_consumes_nothing() {
    firstclick_pubsub::install_crypto_provider();
    let setup = Setup::new("good");
    let (conn, bq) = setup.provision().await;
    let topology = setup.pubsub().topology();
    let message = click(&setup.suffix);
    let data = message.data.clone();
    Publisher::new(&conn, &topology.click_topic)
        .await
        .expect("publisher")
        .publish(message)
        .await
        .expect("publish");
    let dir = tempfile::tempdir().expect("temp dir");

    // The checklist as text: one line per check, every one passed.
    let text = run(
        setup.command(&["check"]),
        dir.path(),
        Duration::from_secs(60),
    )
    .await;
    println!(
        "check (good configuration, {:.1} s):\n{}",
        text.took.as_secs_f64(),
        text.stdout
    );
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);
    let marked: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("      "))
        .collect();
    assert_eq!(marked.len(), CHECKS, "{}", text.stdout);
    assert!(
        marked.iter().all(|l| l.starts_with("  ✓ ")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("✓ partitions: 1 (not partitioned)"));
    assert!(text
        .stdout
        .contains(&format!("{CHECKS} checks: {CHECKS} passed")));

    // The same as JSON: one entry per check.
    let json = run(
        setup.command(&["check", "--json"]),
        dir.path(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(json.code, 0, "{}\n{}", json.stdout, json.stderr);
    let json = json.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["failed"], 0);
    assert_eq!(json["checks"].as_array().map(Vec::len), Some(CHECKS));
    others_pass(&json, &[]);
    for group in ["pubsub", "redis", "bigquery", "settings"] {
        assert!(
            json["checks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|e| e["group"] == group)),
            "no {group} check: {json:#}"
        );
    }
    assert!(entry(&json, "ack deadline of")["found"]
        .as_str()
        .is_some_and(|f| f.starts_with("60 s")));

    // Nothing consumed: the click published before the checks is still there to pull...
    let mut sub = Subscription::start(&conn, &topology.click_subscription, {
        SubscribeOptions {
            streams: 1,
            ..SubscribeOptions::default()
        }
    })
    .await
    .expect("subscription");
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
    let Ok(Some(Ok(m))) = got else {
        panic!("the click published before the check is gone: {got:?}");
    };
    assert_eq!(m.data, data);
    m.ack.ack();
    sub.shutdown().await;
    // ... no checkpoint was created, nothing was written to the table.
    let mut redis = redis::Client::open(env("REDIS_URL"))
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let key = |part: &str| format!("firstclick:{{{}}}:{part}", setup.checkpoint_key());
    let written: u64 = redis::cmd("EXISTS")
        .arg(key("meta"))
        .arg(key("log"))
        .query(&mut redis)
        .expect("EXISTS");
    assert_eq!(written, 0, "the check wrote the checkpoint");
    assert_eq!(count_rows(&bq, &bq.table_path()).await, 0);

    setup.clean_up(&conn, &bq, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscription_fails_naming_it() {
    firstclick_pubsub::install_crypto_provider();
    let setup = Setup::new("nosub");
    let (conn, bq) = setup.provision().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!("no-such-subscription-{}", setup.suffix);
    let mut cmd = setup.command(&["check", "--json"]);
    cmd.env("CLICK_SUBSCRIPTION", &missing);
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, EXIT_CONFIG, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["failed"], 1, "{json:#}");
    let failed = entry(&json, &format!("subscription \"{missing}\""));
    assert_eq!(failed["status"], "fail");
    assert!(failed["check"]
        .as_str()
        .is_some_and(|c| c.contains("CLICK_SUBSCRIPTION")));
    assert!(failed["found"]
        .as_str()
        .is_some_and(|f| f.contains(&missing)));
    assert!(failed["fix"]
        .as_str()
        .is_some_and(|f| f.contains("create-pubsub")));
    // Its ack deadline cannot be read: skipped, not failed.
    assert_eq!(
        entry(&json, &format!("ack deadline of \"{missing}\""))["status"],
        "skip"
    );
    others_pass(
        &json,
        &[&format!("subscription \"{missing}\""), "ack deadline of"],
    );
    assert!(
        out.stderr.contains("1 of 17 checks failed"),
        "{}",
        out.stderr
    );

    // The text names it on its failed line, with the fix on the next.
    let mut cmd = setup.command(&["check", "--plain"]);
    cmd.env("CLICK_SUBSCRIPTION", &missing);
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, EXIT_CONFIG);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("  FAIL "))
        .unwrap_or_else(|| panic!("no failed line:\n{}", out.stdout));
    assert!(
        line.contains(&missing) && line.contains("CLICK_SUBSCRIPTION"),
        "{line}"
    );
    setup.clean_up(&conn, &bq, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_wrong_schema_fails_naming_the_column() {
    firstclick_pubsub::install_crypto_provider();
    let setup = Setup::new("schema");
    let (conn, bq) = setup.provision().await;
    // firstclick's columns, but total_amount a FLOAT64 instead of a NUMERIC.
    let columns: Vec<String> = OUTPUT_COLUMNS
        .iter()
        .map(|c| {
            let kind = match c.name {
                "total_amount" => "FLOAT64",
                _ => c.column_type.as_str(),
            };
            let required = matches!(c.mode, ColumnMode::Required);
            format!(
                "{} {kind}{}",
                c.name,
                if required { " NOT NULL" } else { "" }
            )
        })
        .collect();
    let sql = format!(
        "CREATE TABLE `{}.{}.wrong_schema` ({})",
        bq.project(),
        setup.dataset(),
        columns.join(", ")
    );
    bq.query(&sql).await.expect("a table with a wrong schema");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = setup.command(&["check", "--json"]);
    cmd.env("BQ_TABLE", "wrong_schema");
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, EXIT_CONFIG, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    let failed = entry(&json, "table ");
    assert_eq!(failed["status"], "fail", "{failed:#}");
    assert!(failed["check"]
        .as_str()
        .is_some_and(|c| c.contains("wrong_schema")));
    let found = failed["found"].as_str().unwrap_or("");
    assert!(
        found.contains("column total_amount has type FLOAT, expected NUMERIC"),
        "{found}"
    );
    assert!(failed["fix"]
        .as_str()
        .is_some_and(|f| f.contains("BQ_TABLE")));
    others_pass(&json, &["table "]);
    setup.clean_up(&conn, &bq, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_on_a_closed_port_fails_within_the_timeout() {
    firstclick_pubsub::install_crypto_provider();
    let setup = Setup::new("noredis");
    let (conn, bq) = setup.provision().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = setup.command(&["check", "--json", "--timeout-secs", "3"]);
    cmd.env("REDIS_URL", "redis://127.0.0.1:1");
    let out = run(cmd, dir.path(), Duration::from_secs(30)).await;
    println!(
        "check: REDIS_URL=redis://127.0.0.1:1 (timeout 3 s) -> exit {} after {:.1} s",
        out.code,
        out.took.as_secs_f64()
    );
    assert_eq!(out.code, EXIT_CONFIG, "{}\n{}", out.stdout, out.stderr);
    // One attempt per check, bounded by the timeout: no start-up budget of 30 s.
    assert!(out.took < Duration::from_secs(15), "{:?}", out.took);
    let json = out.json();
    let ping = entry(&json, "answers PING");
    assert_eq!(ping["status"], "fail", "{ping:#}");
    assert!(ping["what"]
        .as_str()
        .is_some_and(|w| w.contains("redis://127.0.0.1:1")));
    assert!(ping["fix"]
        .as_str()
        .is_some_and(|f| f.contains("REDIS_URL")));
    assert_eq!(entry(&json, "user hashes")["status"], "skip");
    assert_eq!(entry(&json, "checkpoint ")["status"], "skip");
    others_pass(&json, &["answers PING", "user hashes", "checkpoint "]);
    assert!(!out.stderr.contains("acktrace"), "{}", out.stderr);

    // A port that takes the connection and never answers: the check ends at its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = silent.local_addr().expect("its port").port();
    let mut cmd = setup.command(&["check", "--json", "--timeout-secs", "2"]);
    cmd.env("REDIS_URL", format!("redis://127.0.0.1:{port}"));
    let out = run(cmd, dir.path(), Duration::from_secs(30)).await;
    println!(
        "check: Redis that never answers (timeout 2 s) -> exit {} after {:.1} s",
        out.code,
        out.took.as_secs_f64()
    );
    assert_eq!(out.code, EXIT_CONFIG, "{}\n{}", out.stdout, out.stderr);
    assert!(out.took < Duration::from_secs(10), "{:?}", out.took);
    let json = out.json();
    let ping = entry(&json, "answers PING");
    assert_eq!(ping["status"], "fail", "{ping:#}");
    assert!(
        ping["found"]
            .as_str()
            .is_some_and(|f| f.contains("no answer within") || f.contains("timed out")),
        "{ping:#}"
    );
    drop(silent);
    setup.clean_up(&conn, &bq, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ack_deadline_is_flagged_and_refused_at_start_up() {
    firstclick_pubsub::install_crypto_provider();
    let setup = Setup::new("deadline");
    let (conn, bq) = setup.provision().await;
    let topology = setup.pubsub().topology();
    let admin = Admin::new(&conn).await.expect("admin");
    // Longer than the recovery hold covers (fails); shorter than expected (warns).
    let (long, short) = (
        format!("check-long-{}", setup.suffix),
        format!("check-short-{}", setup.suffix),
    );
    admin
        .ensure_subscription(&long, &topology.click_topic, Duration::from_secs(120))
        .await
        .expect("subscription");
    admin
        .ensure_subscription(&short, &topology.checkout_topic, Duration::from_secs(30))
        .await
        .expect("subscription");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = setup.command(&["check", "--json"]);
    cmd.env("CLICK_SUBSCRIPTION", &long)
        .env("CHECKOUT_SUBSCRIPTION", &short);
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, EXIT_CONFIG, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    let failed = entry(&json, &format!("ack deadline of \"{long}\""));
    assert_eq!(failed["status"], "fail", "{failed:#}");
    assert_eq!(failed["expected"], "60 s (PUBSUB_ACK_DEADLINE_SECS)");
    assert!(failed["found"]
        .as_str()
        .is_some_and(|f| f.starts_with("120 s")));
    let fix = failed["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains("--ack-deadline=60") && fix.contains("PUBSUB_ACK_DEADLINE_SECS=120"),
        "{fix}"
    );
    let warned = entry(&json, &format!("ack deadline of \"{short}\""));
    assert_eq!(warned["status"], "warn", "{warned:#}");
    assert!(warned["found"]
        .as_str()
        .is_some_and(|f| f.starts_with("30 s")));
    assert_eq!(json["failed"], 1);
    assert_eq!(json["warnings"], 1);

    // With PUBSUB_ACK_DEADLINE_SECS set to the subscription's, the long one passes.
    let mut cmd = setup.command(&["check", "--json"]);
    cmd.env("CLICK_SUBSCRIPTION", &long)
        .env("PUBSUB_ACK_DEADLINE_SECS", "120");
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        entry(&out.json(), &format!("ack deadline of \"{long}\""))["status"],
        "pass"
    );

    // The service's start-up runs the same check: `streaming run` refuses it, exit 78.
    let mut cmd = setup.command(&["run"]);
    cmd.env("CLICK_SUBSCRIPTION", &long)
        .env("CHECKOUT_SUBSCRIPTION", &short);
    let out = run(cmd, dir.path(), Duration::from_secs(60)).await;
    assert_eq!(out.code, EXIT_CONFIG, "{}", out.stderr);
    let error = out
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("streaming: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", out.stderr));
    assert!(
        error.contains(&format!(
            "the ack deadline of Pub/Sub subscription \"{long}\""
        )),
        "{error}"
    );
    assert!(error.contains("120 s"), "{error}");
    assert!(
        !error.contains(&short),
        "a warning is not an error: {error}"
    );
    assert!(!out.stderr.contains("subscribed"), "{}", out.stderr);
    setup.clean_up(&conn, &bq, &[&long, &short]).await;
}
