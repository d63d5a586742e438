//! The fault test (docs/design.md §4): a deterministic data set is published while the `streaming`
//! process is killed with SIGKILL at random moments and restarted, Redis is down for 30 s and
//! the BigQuery emulator is down for 30 s. At the end the table, through the dedup view, must
//! equal the replay of the same events exactly: 0 rows lost, 0 duplicated. Malformed messages
//! must all reach the dead-letter topic. The figures are printed.
//!
//! It runs its own redis-server (append-only file, so data survives the outage) and its own
//! BigQuery emulator (persistent, from the venv `scripts/dev-up` creates) so it can stop them;
//! Pub/Sub is the shared emulator (PUBSUB_EMULATOR_HOST). `FAULT_SEED` picks other kill moments.
//!
//! The Pub/Sub emulator leaks the streaming pulls of a killed process: their server threads
//! keep leasing messages, so after a few kills most messages bounce between dead leases for
//! minutes (measured: batches of 100 every ~30 s, 1,257 clicks arriving behind the watermark).
//! Google's service cancels the pulls of a closed connection. So each life of the process reads
//! its own subscription, attached before anything is published: it receives every message from
//! the start, like a consumer rewound to the beginning, and the restored checkpoint must absorb
//! everything it already processed (duplicate click and checkout ids) and lose nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_datagen::{
    publish, write_data_set, DataSetPaths, Generator, GeneratorConfig, PublishTarget,
};
use firstclick_pubsub::{
    ensure_topology, Admin, Connection, OutgoingMessage, PubSubArgs, Publisher, SubscribeOptions,
    Subscription,
};
use firstclick_redis::{RedisArgs, UserDirectory};

mod common;
use common::{
    append_sentinel, by_checkout, count, env, expected_rows, free_port, start_redis, wait_port,
    Proc,
};

const OUTAGE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_bigquery(rest: u16, grpc: u16, dir: &Path) -> Proc {
    let python = repo().join(".dev/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/dev-up once (it creates the BigQuery emulator's venv)",
        python.display()
    );
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bq.log"))
        .expect("bq log");
    let child = Command::new(python)
        .arg(repo().join("scripts/bq-emulator/launcher.py"))
        .args(["start", "--persistent", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--project", "test-project", "--rest-host", "127.0.0.1"])
        .args(["--rest-port", &rest.to_string(), "--grpc-host", "127.0.0.1"])
        .args(["--grpc-port", &grpc.to_string(), "--log-level", "warning"])
        .env("HOME", &home)
        .current_dir(&home)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("BigQuery emulator starts");
    wait_port(rest, "BigQuery emulator");
    wait_port(grpc, "BigQuery emulator (gRPC)");
    Proc(Some(child))
}

struct Setup {
    suffix: String,
    redis_url: String,
    bq_host: String,
    log: PathBuf,
}

impl Setup {
    fn pubsub(&self) -> PubSubArgs {
        PubSubArgs {
            emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
            click_topic: format!("fclicks-{}", self.suffix),
            checkout_topic: format!("fcheckouts-{}", self.suffix),
            dead_letter_topic: format!("fdead-{}", self.suffix),
            late_topic: format!("flate-{}", self.suffix),
            ack_deadline_secs: 10,
            ..PubSubArgs::default()
        }
    }

    fn bigquery(&self) -> BigQueryArgs {
        BigQueryArgs {
            emulator_host: Some(self.bq_host.clone()),
            emulator_grpc_host: None,
            dataset: "faults".into(),
            table: "attributed_checkouts".into(),
            location: None,
        }
    }

    fn subscriptions(&self, life: usize) -> (String, String) {
        (
            format!("fclicks-{}-life{life}", self.suffix),
            format!("fcheckouts-{}-life{life}", self.suffix),
        )
    }

    fn start_streaming(&self, life: usize) -> Proc {
        let p = self.pubsub();
        let (click_sub, checkout_sub) = self.subscriptions(life);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_streaming"))
            .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
            .env("BIGQUERY_EMULATOR_HOST", &self.bq_host)
            .env("REDIS_URL", &self.redis_url)
            .env("PROJECT_ID", "test-project")
            .env("CLICK_TOPIC", &p.click_topic)
            .env("CHECKOUT_TOPIC", &p.checkout_topic)
            .env("CLICK_SUBSCRIPTION", click_sub)
            .env("CHECKOUT_SUBSCRIPTION", checkout_sub)
            .env(
                "CHECKPOINT_KEY",
                format!("firstclick:faults:{}", self.suffix),
            )
            .env("DEAD_LETTER_TOPIC", &p.dead_letter_topic)
            .env("LATE_TOPIC", &p.late_topic)
            .env("BQ_DATASET", "faults")
            .env("BQ_TABLE", "attributed_checkouts")
            .env("PUBSUB_ACK_DEADLINE_SECS", "10")
            .env("RECOVERY_HOLD_SECS", "15")
            .env("IDLE_TIMEOUT_SECS", "3")
            .env("CHECKPOINT_INTERVAL_SECS", "1")
            .env("STATS_INTERVAL_SECS", "5")
            .env("METRICS_ADDR", "")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("streaming starts");
        Proc(Some(child))
    }
}

/// A tiny deterministic generator for the kill moments (xorshift).
struct Moments(u64);

impl Moments {
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 % 10_000) as f64 / 10_000.0;
        Duration::from_secs_f64(lo + (hi - lo) * unit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_outages_lose_nothing_and_duplicate_nothing() {
    firstclick_pubsub::install_crypto_provider();
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_128);
    let mut moments = Moments(seed | 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis_port, bq_rest, bq_grpc) = (free_port(), free_port(), free_port());
    let redis_dir = dir.path().join("redis");
    let bq_dir = dir.path().join("bq");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    std::fs::create_dir_all(&bq_dir).expect("bq dir");
    let mut redis = start_redis(redis_port, &redis_dir, true);
    let mut bigquery = start_bigquery(bq_rest, bq_grpc, &bq_dir);
    let setup = Setup {
        suffix: format!("{seed:x}-{}", std::process::id()),
        redis_url: format!("redis://127.0.0.1:{redis_port}"),
        bq_host: format!("127.0.0.1:{bq_rest}"),
        log: dir.path().join("streaming.log"),
    };
    let gcp = GcpArgs {
        project_id: "test-project".into(),
        credentials: None,
    };
    let pubsub = setup.pubsub();
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    ensure_topology(&gcp, &pubsub).await.expect("topology");
    // One subscription per life of the process (see the module documentation), all attached
    // before publishing.
    let admin = Admin::new(&conn).await.expect("admin");
    const LIVES: usize = 6;
    for life in 0..LIVES {
        let (clicks, checkouts) = setup.subscriptions(life);
        for (sub, topic) in [
            (clicks, &pubsub.click_topic),
            (checkouts, &pubsub.checkout_topic),
        ] {
            admin
                .ensure_subscription(&sub, topic, Duration::from_secs(10))
                .await
                .expect("subscription");
        }
    }
    let bq = BigQuery::connect(&gcp, &setup.bigquery())
        .await
        .expect("BigQuery");
    bq.ensure_table().await.expect("table");

    let config = GeneratorConfig {
        clicks: Some(6_000),
        seed: 3,
        users: 300,
        disorder_secs: 5.0,
        duplicate_rate: 0.02,
        stale_click_rate: 0.02,
        organic_rate: 0.03,
        unknown_user_rate: 0.03,
        malformed_rate: 0.01,
        event_rate: 50.0,
        ..GeneratorConfig::default()
    };
    let files = DataSetPaths::in_dir(dir.path());
    let stats = write_data_set(Generator::new(config.clone()), &files, |_| {}).expect("files");

    let mut streaming = setup.start_streaming(0);
    let started = Instant::now();

    // Publish in the background at ~250 msg/s while the chaos goes on.
    let publisher = {
        let conn = conn.clone();
        let (clicks, checkouts) = (pubsub.click_topic.clone(), pubsub.checkout_topic.clone());
        let redis_url = setup.redis_url.clone();
        let files = files.clone();
        tokio::spawn(async move {
            let users = UserDirectory::new(&RedisArgs {
                redis_url,
                ..RedisArgs::default()
            })
            .expect("Redis settings");
            let target = PublishTarget {
                conn: &conn,
                click_topic: &clicks,
                checkout_topic: &checkouts,
                users: &users,
                rate: 250.0,
                max_in_flight: 500,
            };
            let (_, n) = publish(Generator::new(config), target, |_| {})
                .await
                .expect("published");
            // The end of the input (see common::append_sentinel).
            let sentinel = append_sentinel(&files);
            Publisher::new(&conn, &clicks)
                .await
                .expect("publisher")
                .publish(OutgoingMessage::new(sentinel.into_bytes()))
                .await
                .expect("sentinel");
            n + 1
        })
    };

    let mut kills = 0;
    let mut kill_and_restart = |streaming: &mut Proc, pause: Duration| {
        streaming.kill();
        kills += 1;
        std::thread::sleep(pause);
        *streaming = setup.start_streaming(kills);
    };
    tokio::time::sleep(moments.secs(2.0, 6.0)).await;
    kill_and_restart(&mut streaming, moments.secs(0.2, 2.0));
    tokio::time::sleep(moments.secs(2.0, 6.0)).await;
    // Redis down for 30 s (the append-only file brings users and checkpoints back).
    redis.kill();
    tokio::time::sleep(OUTAGE).await;
    redis = start_redis(redis_port, &redis_dir, true);
    tokio::time::sleep(moments.secs(2.0, 6.0)).await;
    kill_and_restart(&mut streaming, moments.secs(0.2, 2.0));
    tokio::time::sleep(moments.secs(2.0, 6.0)).await;
    // BigQuery down for 30 s.
    bigquery.kill();
    tokio::time::sleep(OUTAGE).await;
    bigquery = start_bigquery(bq_rest, bq_grpc, &bq_dir);
    tokio::time::sleep(moments.secs(1.0, 4.0)).await;
    kill_and_restart(&mut streaming, moments.secs(0.2, 2.0));
    let published = publisher.await.expect("publisher task");
    tokio::time::sleep(moments.secs(1.0, 3.0)).await;
    kill_and_restart(&mut streaming, moments.secs(0.2, 2.0));

    // What the table must hold: the replay of the same files.
    let (summary, expected) = expected_rows(&files, dir.path());

    let view = format!("SELECT COUNT(*) AS n FROM `{}`", bq.view_path());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut in_view = 0;
    while Instant::now() < deadline {
        in_view = count(&bq, &view).await.unwrap_or(0);
        if in_view >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let log = || std::fs::read_to_string(&setup.log).unwrap_or_default();

    // A graceful stop at the end: final checkpoint, exit 0.
    let mut child = streaming.0.take().expect("running");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < stop_deadline,
            "no exit within 60 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let rows = bq
        .query(&format!("SELECT * FROM `{}`", bq.view_path()))
        .await
        .expect("rows");
    let got = by_checkout(&rows);
    let raw = count(
        &bq,
        &format!("SELECT COUNT(*) AS n FROM `{}`", bq.table_path()),
    )
    .await
    .unwrap_or(0);
    let lost: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let wrong: Vec<&String> = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();

    // Dead letters: every malformed message, with a reason.
    let mut dead = Subscription::start(
        &conn,
        &pubsub.dead_letter_topic,
        SubscribeOptions::default(),
    )
    .await
    .expect("dead-letter subscription");
    let mut dead_letters = 0u64;
    let mut distinct = HashSet::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), dead.next()).await {
        assert!(m.attributes.get("reason").is_some_and(|r| !r.is_empty()));
        dead_letters += 1;
        distinct.insert(m.data.to_vec());
        m.ack.ack();
    }
    dead.shutdown().await;

    let report = format!(
        "fault test (seed {seed}): {kills} kills + 1 graceful stop, Redis down {}s, BigQuery down \
         {}s; published {published} messages ({} malformed) in {:.0} s; rows expected {}, in the \
         dedup view {}, lost {}, wrong {}, extra {}; raw rows {} ({} raw duplicates hidden by the \
         view); dead letters received {dead_letters} ({} distinct payloads)",
        OUTAGE.as_secs(),
        OUTAGE.as_secs(),
        stats.malformed,
        started.elapsed().as_secs_f64(),
        expected.len(),
        got.len(),
        lost.len(),
        wrong.len(),
        extra,
        raw,
        raw.saturating_sub(got.len()),
        distinct.len(),
    );
    println!("{report}");
    // Reports are printed by scripts/test after the run (cargo test captures passing output).
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults.report"),
        &report,
    );
    for k in wrong.iter().take(3) {
        println!(
            "wrong row {k}:\n  expected {}\n  got      {}",
            expected[*k], got[*k]
        );
    }
    let _ = std::fs::copy(
        &setup.log,
        std::env::temp_dir().join("firstclick-faults-streaming.log"),
    );
    assert_eq!(summary.rows as usize, expected.len());
    assert!(
        status.success(),
        "exit status {status} after SIGTERM; log:\n{}",
        log()
    );
    assert!(
        lost.is_empty() && wrong.is_empty() && extra == 0,
        "lost {:?}, wrong {:?} (first few), in view {in_view}; log tail:\n{}",
        &lost[..lost.len().min(5)],
        &wrong[..wrong.len().min(5)],
        log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        dead_letters >= stats.malformed,
        "{dead_letters} dead letters for {} malformed",
        stats.malformed
    );
    let log_text = log();
    let outage_lines = |service: &str| {
        log_text
            .lines()
            .filter(|l| l.contains(service) && l.contains("unavailable; holding messages"))
            .count()
    };
    let (redis_lines, bq_lines) = (outage_lines("Redis"), outage_lines("BigQuery"));
    println!("outage log lines: Redis {redis_lines}, BigQuery {bq_lines}");
    assert!(redis_lines > 0, "the Redis outage was not noticed");
    assert!(bq_lines > 0, "the BigQuery outage was not noticed");
    // Once per outage and per process life (a kill during an outage starts a new one), never
    // once per message.
    assert!(
        redis_lines <= 3 * (kills + 1),
        "{redis_lines} lines for one Redis outage"
    );
    assert!(
        bq_lines <= 3 * (kills + 1),
        "{bq_lines} lines for one BigQuery outage"
    );
    drop(redis);
    drop(bigquery);
}
