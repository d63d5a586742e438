//! Start-up checks and the shutdown grace, against the real emulators and redis-servers
//! (docs/design.md §4.5, §4.6, §11): a misconfigured `streaming run` (Redis on a closed port, a
//! table or a subscription that does not exist) exits 78 within a bound with a message that
//! names the setting to fix; a SIGTERM during the start-up checks stops at once; and a Redis
//! outage that begins after start (a private redis-server killed by the test) shows in
//! `/readyz` and `/metrics`, and a SIGTERM during the worker's retries ends the process within
//! the grace period, exit 0, with the messages it held left unacknowledged.
//!
//! Needs PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST and REDIS_URL (`scripts/dev-up`), and
//! `redis-server` on the PATH.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_pubsub::{ensure_topology, Connection, OutgoingMessage, PubSubArgs, Publisher};

mod common;
use common::{env, free_port, start_redis, Proc};

/// The exit code of a configuration error (EX_CONFIG).
const EXIT_CONFIG: i32 = 78;

struct Names {
    suffix: String,
}

impl Names {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Names {
            suffix: format!("{tag}-{:08x}", nanos ^ std::process::id().rotate_left(16)),
        }
    }

    fn pubsub(&self) -> PubSubArgs {
        PubSubArgs {
            emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
            click_topic: format!("clicks-{}", self.suffix),
            checkout_topic: format!("checkouts-{}", self.suffix),
            dead_letter_topic: format!("dead-{}", self.suffix),
            late_topic: format!("late-{}", self.suffix),
            ..PubSubArgs::default()
        }
    }

    fn dataset(&self) -> String {
        format!("startup_{}", self.suffix.replace('-', "_"))
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

    /// The service's command with these names; `log` receives its stderr.
    fn command(&self, log: &Path) -> Command {
        let p = self.pubsub();
        let log = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streaming"));
        cmd.arg("run")
            .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
            .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
            .env("REDIS_URL", env("REDIS_URL"))
            .env("PROJECT_ID", gcp().project_id)
            .env("CLICK_TOPIC", &p.click_topic)
            .env("CHECKOUT_TOPIC", &p.checkout_topic)
            .env("DEAD_LETTER_TOPIC", &p.dead_letter_topic)
            .env("LATE_TOPIC", &p.late_topic)
            .env("BQ_DATASET", self.dataset())
            .env("BQ_TABLE", "attributed_checkouts")
            .env("CHECKPOINT_KEY", format!("firstclick:test:{}", self.suffix))
            .env("CHECKPOINT_INTERVAL_SECS", "1")
            .env("METRICS_ADDR", "")
            .env("LOG_FORMAT", "json")
            // A user error never comes with a backtrace, even when one is asked for.
            .env("RUST_BACKTRACE", "1")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("STARTUP_TIMEOUT_SECS")
            .env_remove("SHUTDOWN_GRACE_SECS")
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }
}

fn gcp() -> GcpArgs {
    GcpArgs {
        project_id: std::env::var("PROJECT_ID").unwrap_or_else(|_| "test-project".into()),
        credentials: None,
    }
}

/// Topics, subscriptions, dataset and table of one test.
async fn provision(names: &Names) -> Connection {
    let (gcp, pubsub) = (gcp(), names.pubsub());
    ensure_topology(&gcp, &pubsub)
        .await
        .expect("topics and subscriptions");
    let bq = BigQuery::connect(&gcp, &names.bigquery())
        .await
        .expect("BigQuery client");
    bq.ensure_table().await.expect("table");
    Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub")
}

/// Waits at most `limit` for the process to exit; its status and how long it took.
async fn wait_exit(proc: &mut Proc, limit: Duration, log: &Path) -> (ExitStatus, Duration) {
    let started = Instant::now();
    let child = proc.0.as_mut().expect("a running child");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "no exit within {limit:?}; log:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn sigterm(proc: &Proc) {
    let pid = proc.0.as_ref().expect("a running child").id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Runs the service to its end (at most `limit`); its exit status, the time and its stderr.
async fn run_to_exit(cmd: &mut Command, log: &Path, limit: Duration) -> (i32, Duration, String) {
    let mut proc = Proc(Some(cmd.spawn().expect("streaming starts")));
    let (status, took) = wait_exit(&mut proc, limit, log).await;
    (status.code().unwrap_or(-1), took, read(log))
}

/// The last line of the log: the error `main` prints.
fn error_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.starts_with("streaming: error:"))
        .unwrap_or_else(|| panic!("no error line in the log:\n{log}"))
}

fn assert_no_backtrace(log: &str) {
    assert!(
        !log.contains("Stack backtrace") && !log.contains("stack backtrace"),
        "a backtrace was printed:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_on_a_closed_port_exits_78_naming_redis_url() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("noredis");
    provision(&names).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    cmd.env("REDIS_URL", "redis://127.0.0.1:1")
        .env("STARTUP_TIMEOUT_SECS", "5");
    let (code, took, log) = run_to_exit(&mut cmd, &log, Duration::from_secs(60)).await;
    println!(
        "startup: REDIS_URL=redis://127.0.0.1:1 (budget 5 s) -> exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, EXIT_CONFIG, "{log}");
    let error = error_line(&log);
    assert!(error.contains("REDIS_URL"), "{error}");
    assert!(error.contains("redis://127.0.0.1:1"), "{error}");
    assert!(error.contains("Connection refused"), "{error}");
    // Only Redis is wrong: Pub/Sub and BigQuery are as configured.
    assert!(
        !error.contains("create-pubsub") && !error.contains("create-bq-table"),
        "{error}"
    );
    assert_no_backtrace(&log);
    // Nothing was consumed or restored.
    assert!(!log.contains("restored the last checkpoint"), "{log}");
    assert!(!log.contains("subscribed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_exits_78_naming_create_bq_table() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("notable");
    provision(&names).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    cmd.env("BQ_TABLE", "no_such_table");
    let (code, took, log) = run_to_exit(&mut cmd, &log, Duration::from_secs(60)).await;
    println!(
        "startup: missing table -> exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, EXIT_CONFIG, "{log}");
    let error = error_line(&log);
    assert!(error.contains("create-bq-table"), "{error}");
    assert!(error.contains("BQ_TABLE"), "{error}");
    assert!(
        error.contains(&format!("{}.no_such_table", names.dataset())),
        "{error}"
    );
    assert!(!error.contains("REDIS_URL"), "{error}");
    assert_no_backtrace(&log);

    // A dataset that does not exist either: named as such.
    let log = dir.path().join("streaming-nodataset.log");
    let mut cmd = names.command(&log);
    cmd.env("BQ_DATASET", "startup_no_such_dataset");
    let (code, _, log) = run_to_exit(&mut cmd, &log, Duration::from_secs(60)).await;
    assert_eq!(code, EXIT_CONFIG, "{log}");
    let error = error_line(&log);
    assert!(
        error.contains("no dataset") && error.contains("create-bq-table"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_write_with_a_closed_grpc_port_exits_78_naming_it() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("nogrpc");
    provision(&names).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    cmd.env("BIGQUERY_WRITE_API", "storage-write")
        .env("BIGQUERY_EMULATOR_GRPC_HOST", "127.0.0.1:1")
        .env("STARTUP_TIMEOUT_SECS", "3");
    let (code, took, log) = run_to_exit(&mut cmd, &log, Duration::from_secs(60)).await;
    println!(
        "startup: storage-write, closed gRPC port -> exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, EXIT_CONFIG, "{log}");
    let error = error_line(&log);
    assert!(error.contains("BIGQUERY_EMULATOR_GRPC_HOST"), "{error}");
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert_no_backtrace(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscription_exits_78_naming_create_pubsub() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("nosub");
    provision(&names).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    cmd.env(
        "CLICK_SUBSCRIPTION",
        format!("no-such-subscription-{}", names.suffix),
    );
    let (code, took, log) = run_to_exit(&mut cmd, &log, Duration::from_secs(60)).await;
    println!(
        "startup: missing subscription -> exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, EXIT_CONFIG, "{log}");
    let error = error_line(&log);
    assert!(error.contains("create-pubsub"), "{error}");
    assert!(error.contains("CLICK_SUBSCRIPTION"), "{error}");
    assert!(error.contains("no-such-subscription"), "{error}");
    // The checkout subscription exists: only one problem.
    assert!(!error.contains("CHECKOUT_SUBSCRIPTION"), "{error}");
    assert_no_backtrace(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_the_start_up_checks_stops_at_once() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("termcheck");
    provision(&names).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    // Redis never answers; the checks would go on for two minutes.
    cmd.env("REDIS_URL", "redis://127.0.0.1:1")
        .env("STARTUP_TIMEOUT_SECS", "120");
    let mut proc = Proc(Some(cmd.spawn().expect("streaming starts")));
    let started = Instant::now();
    while !read(&log).contains("does not answer yet") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&proc);
    let (status, took) = wait_exit(&mut proc, Duration::from_secs(20), &log).await;
    println!(
        "startup: SIGTERM during the start-up checks -> {status} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(status.code(), Some(0), "{}", read(&log));
    assert!(
        read(&log).contains("stopped during the start-up checks"),
        "{}",
        read(&log)
    );
}

/// The status line and body of `GET path` on the metrics port; `None` while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Polls `GET path` until `want(status, body)`, at most `limit`.
async fn until_http(port: u16, path: &str, limit: Duration, want: impl Fn(u16, &str) -> bool) {
    let started = Instant::now();
    loop {
        if let Some((status, body)) = http_get(port, path) {
            if want(status, &body) {
                return;
            }
        }
        assert!(
            started.elapsed() < limit,
            "GET {path}: not as expected within {limit:?}, last {:?}",
            http_get(port, path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn click(n: u32, suffix: &str) -> OutgoingMessage {
    let now = firstclick_model::time::wall_clock();
    OutgoingMessage::new(
        serde_json::json!({
            "click_id": format!("click-{suffix}-{n}"),
            "user_id": n % 7,
            "product_id": "p-1",
            "datetime_occured": now.to_rfc3339(),
        })
        .to_string()
        .into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_redis_outage_ends_within_the_grace_period() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names::new("outage");
    let conn = provision(&names).await;
    let clicks = Publisher::new(&conn, &names.pubsub().click_topic)
        .await
        .expect("publisher");
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_port = free_port();
    let mut redis = start_redis(redis_port, dir.path(), false);
    let metrics_port = free_port();
    let log = dir.path().join("streaming.log");
    let mut cmd = names.command(&log);
    // The default grace period (25 s) applies.
    cmd.env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
    let mut service = Proc(Some(cmd.spawn().expect("streaming starts")));

    // Ready once started, with every dependency up.
    until_http(metrics_port, "/readyz", Duration::from_secs(60), |s, _| {
        s == 200
    })
    .await;
    for n in 0..20 {
        clicks
            .publish(click(n, &names.suffix))
            .await
            .expect("publish");
    }
    // The clicks are checkpointed and acknowledged while Redis is up.
    let log_has = |text: &str| read(&log).contains(text);
    let started = Instant::now();
    while metric_checkpoints(metrics_port) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The outage begins: more clicks, which the worker cannot checkpoint.
    redis.kill();
    for n in 20..50 {
        clicks
            .publish(click(n, &names.suffix))
            .await
            .expect("publish");
    }
    until_http(
        metrics_port,
        "/readyz",
        Duration::from_secs(30),
        |s, body| s == 503 && body.contains("redis"),
    )
    .await;
    until_http(
        metrics_port,
        "/metrics",
        Duration::from_secs(30),
        |_, body| {
            body.contains("firstclick_dependency_up{dependency=\"redis\"} 0")
                && body.contains("firstclick_dependency_up{dependency=\"bigquery\"} 1")
        },
    )
    .await;
    // Liveness is not readiness: /healthz still answers 200.
    assert_eq!(http_get(metrics_port, "/healthz").map(|r| r.0), Some(200));
    // The worker is inside its retries.
    let started = Instant::now();
    while !log_has("unavailable; holding messages unacknowledged") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    sigterm(&service);
    let (status, took) = wait_exit(&mut service, Duration::from_secs(60), &log).await;
    println!(
        "startup: SIGTERM during a Redis outage (grace 25 s) -> {status} after {:.1} s",
        took.as_secs_f64()
    );
    let text = read(&log);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        text.contains("grace period over: forcing the stop"),
        "{text}"
    );
    let forced = text
        .lines()
        .find(|l| l.contains("left unacknowledged"))
        .unwrap_or_else(|| panic!("no forced-stop line in the log:\n{text}"));
    let held: u64 = forced
        .split("\"unacknowledged\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {forced}"));
    assert!(held > 0, "the clicks of the outage were held: {forced}");
}

/// `firstclick_checkpoints_total` from /metrics (0 while it does not answer).
fn metric_checkpoints(port: u16) -> u64 {
    http_get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with("firstclick_checkpoints_total "))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
