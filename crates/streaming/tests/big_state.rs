//! State that grows (docs/design.md §6): 320,000 clicks live in the worker (a 20-minute span of
//! event time keeps them all inside the lookback), a SIGKILL while a compaction is writing a
//! new base, a restart that restores the state from Redis, then the checkouts (every fourth of
//! the generator's): every row must equal the replay of the same events, and the restore must
//! have had every live click that was acknowledged.
//!
//! The first life compacts slowly on purpose (`COMPACT_PIECE_BYTES` small) so that the kill
//! surely falls inside a compaction. Each life reads its own subscriptions, attached before
//! anything is published (the emulator keeps leasing a killed client's messages to its dead
//! streaming pulls; see docs/design.md §8), so the second life receives every click again and
//! the restored state must absorb them as duplicates.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_datagen::{write_data_set, DataSetPaths, Generator, GeneratorConfig};
use firstclick_pubsub::{
    ensure_topology, Admin, Connection, OutgoingMessage, PubSubArgs, Publisher,
};
use firstclick_redis::{RedisArgs, UserDirectory};

mod common;
use common::{
    append_sentinel, by_checkout, count_rows, env, expected_rows, free_port, start_redis, Proc,
};

const CLICKS: u64 = 320_000;
const LIVE_AT_KILL: u64 = 300_000;

struct Setup {
    suffix: String,
    dataset: String,
    redis_url: String,
}

impl Setup {
    fn pubsub(&self) -> PubSubArgs {
        PubSubArgs {
            emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
            click_topic: format!("bclicks-{}", self.suffix),
            checkout_topic: format!("bcheckouts-{}", self.suffix),
            dead_letter_topic: format!("bdead-{}", self.suffix),
            late_topic: format!("blate-{}", self.suffix),
            ..PubSubArgs::default()
        }
    }

    fn bigquery(&self) -> BigQueryArgs {
        BigQueryArgs {
            emulator_host: Some(env("BIGQUERY_EMULATOR_HOST")),
            emulator_grpc_host: None,
            dataset: self.dataset.clone(),
            table: "attributed_checkouts".into(),
            touches_table: "attributed_touches".into(),
            location: None,
        }
    }

    fn start(&self, life: usize, metrics_port: u16, log: &Path, extra: &[(&str, &str)]) -> Proc {
        let p = self.pubsub();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streaming"));
        cmd.arg("run")
            .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
            .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
            .env("REDIS_URL", &self.redis_url)
            .env("PROJECT_ID", "test-project")
            .env("CLICK_TOPIC", &p.click_topic)
            .env("CHECKOUT_TOPIC", &p.checkout_topic)
            .env(
                "CLICK_SUBSCRIPTION",
                format!("{}-life{life}", p.click_topic),
            )
            .env(
                "CHECKOUT_SUBSCRIPTION",
                format!("{}-life{life}", p.checkout_topic),
            )
            .env("CHECKPOINT_KEY", format!("test:big:{}", self.suffix))
            .env("DEAD_LETTER_TOPIC", &p.dead_letter_topic)
            .env("LATE_TOPIC", &p.late_topic)
            .env("BQ_DATASET", &self.dataset)
            .env("BQ_TABLE", "attributed_checkouts")
            .env("IDLE_TIMEOUT_SECS", "10")
            .env("CHECKPOINT_INTERVAL_SECS", "1")
            .env("STATS_INTERVAL_SECS", "5")
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LOG_FORMAT", "json")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Proc(Some(cmd.spawn().expect("streaming starts")))
    }
}

/// A gauge or counter from the service's /metrics, summed over its series; `None` while it
/// does not answer.
fn metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    // The sum over the metric's series (per-partition gauges carry a `partition` label).
    let values: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Publishes the lines of `file` to `topic`, 1,000 in flight.
async fn publish_lines(conn: &Connection, topic: &str, file: &Path) -> u64 {
    let publisher = Publisher::new(conn, topic).await.expect("publisher");
    let reader = std::io::BufReader::new(std::fs::File::open(file).expect("data file"));
    let messages = reader
        .lines()
        .map(|l| OutgoingMessage::new(l.expect("line").into_bytes()));
    publisher
        .publish_all(messages, 1000)
        .await
        .expect("published")
}

fn log_has(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|l| l.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_thousands_of_live_clicks_survive_a_kill_during_compaction() {
    firstclick_pubsub::install_crypto_provider();
    let suffix = format!("{:x}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    // A private redis-server (users and checkpoint): the 5,000 users of this test must not
    // become "known" users of the other suites, which share `REDIS_URL`.
    let redis_port = free_port();
    let _redis = start_redis(redis_port, dir.path(), false);
    let setup = Setup {
        dataset: format!("big_{suffix}"),
        suffix,
        redis_url: format!("redis://127.0.0.1:{redis_port}"),
    };
    let gcp = GcpArgs {
        project_id: "test-project".into(),
        credentials: None,
    };
    let pubsub = setup.pubsub();
    ensure_topology(&gcp, &pubsub).await.expect("topology");
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let admin = Admin::new(&conn).await.expect("admin");
    for life in 0..2 {
        for topic in [&pubsub.click_topic, &pubsub.checkout_topic] {
            admin
                .ensure_subscription(
                    &format!("{topic}-life{life}"),
                    topic,
                    Duration::from_secs(60),
                )
                .await
                .expect("subscription");
        }
    }
    let bq = BigQuery::connect(&gcp, &setup.bigquery())
        .await
        .expect("BigQuery");
    bq.ensure_table().await.expect("table");

    // 320 k clicks over 20 minutes of event time (inside the 1 h lookback: all stay live).
    let config = GeneratorConfig {
        clicks: Some(CLICKS),
        seed: 8,
        users: 5_000,
        disorder_secs: 2.0,
        duplicate_rate: 0.01,
        stale_click_rate: 0.0,
        organic_rate: 0.02,
        unknown_user_rate: 0.01,
        event_rate: CLICKS as f64 / 1200.0,
        ..GeneratorConfig::default()
    };
    let files = DataSetPaths::in_dir(dir.path());
    write_data_set(Generator::new(config), &files, |_| {}).expect("files");
    let users = UserDirectory::new(&RedisArgs {
        redis_url: setup.redis_url.clone(),
        ..RedisArgs::default()
    })
    .expect("Redis settings");
    let user_rows: Vec<(i64, String, String)> = std::fs::read_to_string(&files.users)
        .expect("users")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|u| {
            (
                u["id"].as_i64().unwrap_or(0),
                u["user_name"].as_str().unwrap_or("").to_string(),
                String::new(),
            )
        })
        .collect();
    users.put_users(&user_rows).await.expect("users into Redis");

    // Every fourth checkout only: the rows are what this test compares, and the BigQuery
    // emulator writes about 4,000 a second.
    let checkouts: String = std::fs::read_to_string(&files.checkouts)
        .expect("checkouts")
        .lines()
        .step_by(4)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&files.checkouts, checkouts).expect("checkouts");

    // The clicks first, then life 0 takes them all in, with a compaction slow enough to be
    // caught in the act.
    let published_clicks = publish_lines(&conn, &pubsub.click_topic, &files.clicks).await;
    let log = dir.path().join("streaming.log");
    let port0 = free_port();
    let mut life0 = setup.start(
        0,
        port0,
        &log,
        &[
            ("COMPACT_MIN_BYTES", "12000000"),
            ("COMPACT_PIECE_BYTES", "16384"),
        ],
    );
    let started = Instant::now();
    let mut live = 0.0;
    while started.elapsed() < Duration::from_secs(300) {
        live = metric(port0, "firstclick_live_clicks").unwrap_or(0.0);
        if live >= LIVE_AT_KILL as f64 && log_has(&log, "compaction started") {
            break;
        }
        if let Some(Ok(Some(status))) = life0.0.as_mut().map(|c| c.try_wait()) {
            panic!(
                "streaming exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        live >= LIVE_AT_KILL as f64,
        "only {live} live clicks after {:?}; log:\n{}",
        started.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !log_has(&log, "new base snapshot committed"),
        "the compaction finished before the kill"
    );
    let unacked = metric(port0, "firstclick_unacked_messages").unwrap_or(0.0);
    // SIGKILL in the middle of the compaction.
    if let Some(mut c) = life0.0.take() {
        c.kill().expect("SIGKILL");
        let _ = c.wait();
    }
    let killed_at = started.elapsed();

    // Life 1: restores, then reads every click again (duplicates) and the checkouts.
    let port1 = free_port();
    let restart = Instant::now();
    let mut life1 = setup.start(
        1,
        port1,
        &log,
        &[
            ("RECOVERY_HOLD_SECS", "5"),
            ("COMPACT_MIN_BYTES", "8000000"),
        ],
    );
    let restored_line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("restored the last checkpoint"))
        {
            break line.to_string();
        }
        assert!(
            restart.elapsed() < Duration::from_secs(120),
            "no restore in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let restore_secs = restart.elapsed().as_secs_f64();
    let restored_live: u64 = serde_json::from_str::<serde_json::Value>(&restored_line)
        .ok()
        .and_then(|v| v["fields"]["live_clicks"].as_u64())
        .unwrap_or_else(|| panic!("live_clicks in the restore line: {restored_line}"));
    assert!(
        restored_live as f64 >= live - unacked - 1.0 && restored_live >= LIVE_AT_KILL - 4_000,
        "restored {restored_live} live clicks, {live} were live with {unacked} unacknowledged"
    );
    let sentinel = append_sentinel(&files);
    let published_checkouts = publish_lines(&conn, &pubsub.checkout_topic, &files.checkouts).await;
    Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher")
        .publish(OutgoingMessage::new(sentinel.into_bytes()))
        .await
        .expect("sentinel");
    let (_, expected) = expected_rows(&files, dir.path());
    let mut n = 0;
    while restart.elapsed() < Duration::from_secs(420) {
        n = count_rows(&bq, &bq.table_path()).await;
        if n >= expected.len() {
            break;
        }
        if let Some(Ok(Some(status))) = life1.0.as_mut().map(|c| c.try_wait()) {
            panic!(
                "streaming exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(n, expected.len(), "rows in BigQuery");
    let rows = bq
        .query(&format!("SELECT * FROM `{}`", bq.table_path()))
        .await
        .expect("rows");
    let got = by_checkout(&rows);
    let mut wrong = 0;
    for (id, want) in &expected {
        if got.get(id) != Some(want) {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "{wrong} rows differ from the replay");
    let compacted = log_has(&log, "new base snapshot committed");
    let report = format!(
        "big state: {published_clicks} clicks, {live} live at the SIGKILL (during a compaction, \
         {killed_at:.0?} in), restore of {restored_live} live clicks {restore_secs:.1} s after \
         the restart, then {published_checkouts} checkouts: {n} rows, all equal to the replay; \
         the second life compacted: {compacted}"
    );
    println!("{report}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("big_state.report"),
        &report,
    );
    assert!(compacted, "the second life committed a base");
    if let Some(c) = life1.0.as_mut() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = c.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(status.success(), "exit status {status}");
        life1.0 = None;
    }
}
