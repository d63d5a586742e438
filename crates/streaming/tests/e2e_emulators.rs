//! End to end on the real emulators (Pub/Sub, BigQuery) and a real redis-server: topics and
//! table are created, a deterministic data set is published (users into Redis), the `streaming`
//! binary runs until every checkout has its row, and the BigQuery table must equal the file
//! replay of the same events, row for row. Then malformed messages are published: each must
//! reach the dead-letter subscription with its reason, and no row may change. Finally SIGTERM
//! must stop the service cleanly (exit 0).
//!
//! Needs PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST and REDIS_URL (`scripts/dev-up` starts all
//! three; `scripts/test` runs this suite).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_datagen::{
    publish, write_data_set, DataSetPaths, Generator, GeneratorConfig, PublishTarget,
};
use firstclick_model::EventTime;
use firstclick_pubsub::{
    ensure_topology, Connection, OutgoingMessage, PubSubArgs, Publisher, SubscribeOptions,
    Subscription,
};
use firstclick_redis::{RedisArgs, UserDirectory};

mod common;
use common::prometheus::{dashboard_queries, Prometheus};
use common::{
    append_sentinel, by_checkout, count_rows, env, expected_rows, expected_rows_and_touches,
    free_port, keyed, nanos, normalize, Proc,
};

struct Names {
    suffix: String,
}

impl Names {
    fn pubsub(&self) -> PubSubArgs {
        PubSubArgs {
            emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
            click_topic: format!("clicks-{}", self.suffix),
            checkout_topic: format!("checkouts-{}", self.suffix),
            click_subscription: None,
            checkout_subscription: None,
            dead_letter_topic: format!("dead-{}", self.suffix),
            late_topic: format!("late-{}", self.suffix),
            ..PubSubArgs::default()
        }
    }

    fn bigquery(&self) -> BigQueryArgs {
        BigQueryArgs {
            emulator_host: Some(env("BIGQUERY_EMULATOR_HOST")),
            emulator_grpc_host: None,
            dataset: format!("e2e_{}", self.suffix.replace('-', "_")),
            table: "attributed_checkouts".into(),
            touches_table: "attributed_touches".into(),
            location: None,
        }
    }
}

fn gcp() -> GcpArgs {
    GcpArgs {
        project_id: std::env::var("PROJECT_ID").unwrap_or_else(|_| "test-project".into()),
        credentials: None,
    }
}

fn start_streaming(names: &Names, log: &Path, idle_timeout_secs: u32, write_api: &str) -> Proc {
    start_streaming_with(names, log, idle_timeout_secs, write_api, &[])
}

/// [`start_streaming`] with more environment variables.
fn start_streaming_with(
    names: &Names,
    log: &Path,
    idle_timeout_secs: u32,
    write_api: &str,
    extra_env: &[(&str, &str)],
) -> Proc {
    let pubsub = names.pubsub();
    let bigquery = names.bigquery();
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
        .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
        .env("REDIS_URL", env("REDIS_URL"))
        .env("PROJECT_ID", gcp().project_id)
        .env("CLICK_TOPIC", &pubsub.click_topic)
        .env("CHECKOUT_TOPIC", &pubsub.checkout_topic)
        .env("DEAD_LETTER_TOPIC", &pubsub.dead_letter_topic)
        .env("LATE_TOPIC", &pubsub.late_topic)
        .env("BQ_DATASET", &bigquery.dataset)
        .env("BQ_TABLE", &bigquery.table)
        .env(
            "CHECKPOINT_KEY",
            format!("firstclick:test:{}", names.suffix),
        )
        // Long enough that a stream slow to start on a cold emulator is not taken for idle
        // (the per-stream watermark would then go ahead without it).
        .env("IDLE_TIMEOUT_SECS", idle_timeout_secs.to_string())
        .env("BIGQUERY_WRITE_API", write_api)
        .env("CHECKPOINT_INTERVAL_SECS", "1")
        .env("STATS_INTERVAL_SECS", "2")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("streaming starts");
    Proc(Some(child))
}

/// Topics, subscriptions, dataset and table of one test; the BigQuery client.
async fn provision(names: &Names) -> (GcpArgs, PubSubArgs, BigQuery) {
    let (gcp, pubsub) = (gcp(), names.pubsub());
    ensure_topology(&gcp, &pubsub)
        .await
        .expect("topics and subscriptions");
    let bq = BigQuery::connect(&gcp, &names.bigquery())
        .await
        .expect("BigQuery client");
    bq.ensure_table().await.expect("table");
    (gcp, pubsub, bq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_to_bigquery_equals_the_replay() {
    end_to_end("insert-all").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_write_pubsub_to_bigquery_equals_the_replay() {
    end_to_end("storage-write").await;
}

/// Publishes a data set, runs the service with `write_api`, and compares the raw table with
/// the replay row for row; then bad messages, then a graceful stop.
async fn end_to_end(write_api: &str) {
    firstclick_pubsub::install_crypto_provider();
    let names = Names {
        suffix: format!("{:08x}", rand_suffix()),
    };
    let (gcp, pubsub, bq) = provision(&names).await;

    // The data set: disorder inside the bound, duplicates, stale clicks, organic checkouts and
    // unknown users; published to Pub/Sub and written to files for the replay.
    let config = GeneratorConfig {
        clicks: Some(3_000),
        seed: 11,
        users: 200,
        disorder_secs: 5.0,
        duplicate_rate: 0.02,
        stale_click_rate: 0.03,
        organic_rate: 0.03,
        unknown_user_rate: 0.05,
        event_rate: 50.0,
        ..GeneratorConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let files = DataSetPaths::in_dir(dir.path());
    write_data_set(Generator::new(config.clone()), &files, |_| {}).expect("files");
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let redis = RedisArgs {
        redis_url: env("REDIS_URL"),
        ..RedisArgs::default()
    };
    let users = UserDirectory::new(&redis).expect("Redis settings");
    let target = PublishTarget {
        conn: &conn,
        click_topic: &pubsub.click_topic,
        checkout_topic: &pubsub.checkout_topic,
        users: &users,
        rate: 0.0,
        max_in_flight: 1000,
    };
    let (_, published) = publish(Generator::new(config), target, |_| {})
        .await
        .expect("published");
    assert!(published > 4_000, "{published} messages published");

    // The end of the input (see common::append_sentinel).
    let sentinel = append_sentinel(&files);
    Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher")
        .publish(OutgoingMessage::new(sentinel.into_bytes()))
        .await
        .expect("sentinel published");

    // What the rows must be: the replay of the same files.
    let (summary, expected) = expected_rows(&files, dir.path());
    assert_eq!(expected.len() as u64, summary.rows);
    assert!(summary.attributed > 0 && summary.unattributed > 0 && summary.unknown_users > 0);

    let log = dir.path().join("streaming.log");
    let mut service = start_streaming(&names, &log, 10, write_api);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(240) {
        n = count_rows(&bq, &bq.table_path()).await;
        if n >= expected.len() {
            break;
        }
        if let Some(Ok(Some(status))) = service.0.as_mut().map(|c| c.try_wait()) {
            panic!(
                "streaming exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(
        n,
        expected.len(),
        "rows in BigQuery after {elapsed:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let report = format!(
        "e2e ({write_api}): {published} messages -> {n} rows in {:.1} s ({:.0} msg/s end to \
         end), every row equal to the replay",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64()
    );
    println!("{report}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{write_api}.report")),
        &report,
    );

    // Row for row, on the raw table: one row per checkout, equal to the replay.
    let sql = format!("SELECT * FROM `{}`", bq.table_path());
    let rows = bq.query(&sql).await.expect("rows");
    let got = by_checkout(&rows);
    for (id, want) in &expected {
        assert_eq!(got.get(id), Some(want), "row of checkout {id}");
    }

    // Malformed messages: each one dead-lettered with its reason, no row changes.
    let bad: Vec<(&str, &[u8])> = vec![
        ("clicks", b"not json at all"),
        ("clicks", b"{\"click_id\": \"c\", \"user_id\": 1}"),
        ("clicks", b"{\"click_id\": \"c\", \"user_id\": \"x\", \"product_id\": \"p\", \"datetime_occured\": \"2026-01-01T00:00:00Z\"}"),
        ("checkouts", b"{\"checkout_id\": \"k\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": \"tomorrow\"}"),
        ("checkouts", b"\xff\xfe invalid utf-8"),
        ("checkouts", b"[1, 2, 3]"),
    ];
    let clicks_pub = Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher");
    let checkouts_pub = Publisher::new(&conn, &pubsub.checkout_topic)
        .await
        .expect("publisher");
    for (topic, data) in &bad {
        let p = if *topic == "clicks" {
            &clicks_pub
        } else {
            &checkouts_pub
        };
        p.publish(OutgoingMessage::new(data.to_vec()))
            .await
            .expect("published");
    }
    let mut dead = Subscription::start(
        &conn,
        &pubsub.dead_letter_topic,
        SubscribeOptions::default(),
    )
    .await
    .expect("dead-letter subscription");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < bad.len() && Instant::now() < deadline {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), dead.next()).await
        else {
            continue;
        };
        let reason = m.attributes.get("reason").cloned().unwrap_or_default();
        assert!(!reason.is_empty(), "dead letter without a reason");
        assert!(
            bad.iter().any(|(_, d)| *d == &m.data[..]),
            "unexpected dead letter {:?}",
            m.data
        );
        seen.insert(m.data.to_vec());
        m.ack.ack();
    }
    dead.shutdown().await;
    assert_eq!(seen.len(), bad.len(), "dead-lettered messages");
    assert_eq!(
        count_rows(&bq, &bq.table_path()).await,
        expected.len(),
        "rows changed after bad messages"
    );

    // A graceful stop: exit 0.
    let mut child = service.0.take().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "streaming did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(code.success(), "exit status {code}; log:\n{log_text}");
    assert!(log_text.contains("stopped cleanly"), "{log_text}");
}

/// Every model at once on the exactly-once path: the output table holds one row per checkout
/// and model, the touches table one row per checkout, click and multi-touch model, both equal
/// to the replay (`streaming replay --model ... --touches`), and `model_comparison` answers
/// with the sums of the replay's rows, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_touch_models_write_both_tables_equal_to_the_replay() {
    const MODELS: &str = "first_click,linear,time_decay,position_based";
    firstclick_pubsub::install_crypto_provider();
    let names = Names {
        suffix: format!("mt{:08x}", rand_suffix()),
    };
    let (gcp, pubsub, bq) = provision(&names).await;
    let config = GeneratorConfig {
        clicks: Some(1_500),
        // The users (seed and count) of the other tests here: they share Redis's `user_{id}`
        // keys while running in parallel.
        seed: 11,
        users: 200,
        disorder_secs: 5.0,
        duplicate_rate: 0.02,
        organic_rate: 0.05,
        event_rate: 50.0,
        ..GeneratorConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let files = DataSetPaths::in_dir(dir.path());
    write_data_set(Generator::new(config.clone()), &files, |_| {}).expect("files");
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let redis = RedisArgs {
        redis_url: env("REDIS_URL"),
        ..RedisArgs::default()
    };
    let users = UserDirectory::new(&redis).expect("Redis settings");
    let target = PublishTarget {
        conn: &conn,
        click_topic: &pubsub.click_topic,
        checkout_topic: &pubsub.checkout_topic,
        users: &users,
        rate: 0.0,
        max_in_flight: 1000,
    };
    let (_, published) = publish(Generator::new(config), target, |_| {})
        .await
        .expect("published");
    // Refused messages among them, for the bad and dead-letter counts and panels.
    let bad_clicks: [&[u8]; 2] = [b"not json at all", b"{\"click_id\": \"c\", \"user_id\": 1}"];
    let bad_checkouts: [&[u8]; 1] = [b"{\"checkout_id\": \"k\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": \"tomorrow\"}"];
    for (topic, bad) in [
        (&pubsub.click_topic, &bad_clicks[..]),
        (&pubsub.checkout_topic, &bad_checkouts[..]),
    ] {
        let p = Publisher::new(&conn, topic).await.expect("publisher");
        for data in bad {
            p.publish(OutgoingMessage::new(data.to_vec()))
                .await
                .expect("published");
        }
    }
    let bad_count = bad_clicks.len() + bad_checkouts.len();
    let sentinel = append_sentinel(&files);
    Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher")
        .publish(OutgoingMessage::new(sentinel.into_bytes()))
        .await
        .expect("sentinel published");

    let (want_rows, want_touches) = expected_rows_and_touches(&files, dir.path(), MODELS);
    let expected = keyed(&want_rows, false);
    let expected_touches = keyed(&want_touches, true);
    assert_eq!(expected.len(), want_rows.len());
    assert!(
        expected_touches.len() > expected.len() / 4,
        "{} touches",
        expected_touches.len()
    );

    // A real Prometheus scrapes the service every second, with the repository's alert rules.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let prometheus = Prometheus::start(&metrics_addr);
    let log = dir.path().join("streaming.log");
    let mut service = start_streaming_with(
        &names,
        &log,
        10,
        "storage-write",
        &[
            ("ATTRIBUTION_MODEL", MODELS),
            ("METRICS_ADDR", &metrics_addr),
        ],
    );
    let started = Instant::now();
    let (mut n, mut t) = (0, 0);
    while started.elapsed() < Duration::from_secs(240) {
        n = count_rows(&bq, &bq.table_path()).await;
        t = count_rows(&bq, &bq.touches_table_path()).await;
        if n >= expected.len() && t >= expected_touches.len() {
            break;
        }
        if let Some(Ok(Some(status))) = service.0.as_mut().map(|c| c.try_wait()) {
            panic!(
                "streaming exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        n,
        expected.len(),
        "rows after {elapsed:?}; log:\n{}",
        log_text()
    );
    assert_eq!(
        t,
        expected_touches.len(),
        "touch rows after {elapsed:?}; log:\n{}",
        log_text()
    );
    let report = format!(
        "e2e (storage-write, {MODELS}): {published} messages -> {n} rows and {t} touch rows \
         in {:.1} s, both tables equal to the replay",
        elapsed.as_secs_f64()
    );
    println!("{report}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-multi-touch.report"),
        &report,
    );

    // Both raw tables, row for row (exactly once: no dedup view needed).
    let rows = bq
        .query(&format!("SELECT * FROM `{}`", bq.table_path()))
        .await
        .expect("rows");
    assert_eq!(keyed(&rows, false), expected, "output table");
    let touches = bq
        .query(&format!("SELECT * FROM `{}`", bq.touches_table_path()))
        .await
        .expect("touches");
    assert_eq!(keyed(&touches, true), expected_touches, "touches table");

    // The comparison view: the replay's sums per model and product, in billionths.
    let mut want: std::collections::BTreeMap<(String, String), (i128, i128)> = Default::default();
    let text = |r: &serde_json::Map<String, serde_json::Value>, k: &str| {
        r.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    for r in &want_rows {
        let model = text(r, "attribution_model");
        if model != "first_click" || r.get("click_id").is_none_or(|c| c.is_null()) {
            continue;
        }
        let e = want.entry((model, text(r, "product_id"))).or_default();
        e.0 += 1_000_000_000;
        e.1 += r.get("total_amount").and_then(nanos).unwrap_or(0);
    }
    for r in &want_touches {
        let e = want
            .entry((text(r, "attribution_model"), text(r, "product_id")))
            .or_default();
        e.0 += r.get("credit").and_then(nanos).expect("credit");
        e.1 += r.get("credited_revenue").and_then(nanos).unwrap_or(0);
    }
    let answer = bq
        .query(&format!(
            "SELECT attribution_model, product_id, conversions, credited_revenue FROM `{}`",
            bq.comparison_view_path()
        ))
        .await
        .expect("model_comparison answers");
    let got: std::collections::BTreeMap<(String, String), (i128, i128)> = answer
        .iter()
        .map(|r| {
            (
                (text(r, "attribution_model"), text(r, "product_id")),
                (
                    r.get("conversions").and_then(nanos).expect("conversions"),
                    r.get("credited_revenue").and_then(nanos).unwrap_or(0),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "model and product pairs");
    assert_eq!(got, want, "model_comparison");

    // What Prometheus scraped agrees with what was published and written.
    let received = (published + 1 + bad_count as u64) as f64;
    let wait = Duration::from_secs(20);
    assert_eq!(
        prometheus.wait_for_sum("firstclick_messages_received_total", received, wait),
        received,
        "messages received (published {published}, the sentinel, {bad_count} bad)"
    );
    for metric in [
        "firstclick_bad_messages_total",
        "firstclick_dead_lettered_total",
    ] {
        assert_eq!(
            prometheus.wait_for_sum(metric, bad_count as f64, wait),
            bad_count as f64,
            "{metric}"
        );
    }
    for model in MODELS.split(',') {
        for (outcome, attributed) in [("attributed", true), ("organic", false)] {
            let want = want_rows
                .iter()
                .filter(|r| text(r, "attribution_model") == model)
                .filter(|r| r.get("click_id").is_some_and(|c| !c.is_null()) == attributed)
                .count() as f64;
            let query =
                format!("firstclick_rows_written_total{{model=\"{model}\",outcome=\"{outcome}\"}}");
            assert_eq!(prometheus.wait_for_sum(&query, want, wait), want, "{query}");
        }
    }
    assert_eq!(
        prometheus.wait_for_sum("firstclick_rows_committed_total", n as f64, wait),
        n as f64,
        "rows committed"
    );
    assert_eq!(
        prometheus.wait_for_sum("firstclick_touch_rows_written_total", t as f64, wait),
        t as f64,
        "touch rows written"
    );
    // Every panel of the dashboard has data, and every alert rule loaded and evaluates.
    let queries = dashboard_queries("30s");
    assert!(queries.len() >= 15, "{} panel queries", queries.len());
    let empty: Vec<String> = queries
        .iter()
        .filter(|(_, expr)| prometheus.query(expr).is_empty())
        .map(|(title, expr)| format!("{title}: {expr}"))
        .collect();
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    let rules = prometheus.rules();
    assert!(rules.len() >= 6, "alert rules loaded: {rules:?}");
    assert!(
        rules.iter().all(|(_, _, health)| health == "ok"),
        "every rule evaluates: {rules:?}"
    );
    assert!(
        rules.iter().all(|(_, state, _)| state != "firing"),
        "no alert fires on a healthy run: {rules:?}"
    );
    service.kill();
}

/// Thousands of malformed messages of every kind, 1 MB payloads among them, mixed into a good
/// data set: each bad one reaches the dead-letter subscription with its reason, and the rows are
/// still exactly the replay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_flood_is_dead_lettered_and_good_events_still_attributed() {
    firstclick_pubsub::install_crypto_provider();
    let names = Names {
        suffix: format!("flood{:08x}", rand_suffix()),
    };
    let (gcp, pubsub, bq) = provision(&names).await;
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let clicks_pub = Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher");
    let checkouts_pub = Publisher::new(&conn, &pubsub.checkout_topic)
        .await
        .expect("publisher");

    // The bad messages: every way a producer can get it wrong.
    let far_future = EventTime::from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
            + 3 * 86_400_000_000,
    )
    .to_rfc3339();
    let mut bad: Vec<Vec<u8>> = Vec::new();
    for i in 0..2_000 {
        let id = format!("bad-{i}");
        let m = match i % 10 {
            0 => vec![0xff, 0xfe, b'{', (i % 251) as u8],
            1 => format!("not json {i}").into_bytes(),
            2 => format!("{{\"click_id\": \"{id}\", \"user_id\": 1}}").into_bytes(),
            3 => format!("{{\"click_id\": \"{id}\", \"user_id\": \"one\", \"product_id\": \"p\", \"datetime_occured\": \"2026-01-01T00:00:00Z\"}}").into_bytes(),
            4 => format!("{{\"click_id\": \"{id}\", \"user_id\": 1, \"product_id\": [1], \"datetime_occured\": \"2026-01-01T00:00:00Z\"}}").into_bytes(),
            5 => format!("{{\"click_id\": \"{id}\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": \"9999-12-31T23:59:59Z\"}}").into_bytes(),
            6 => format!("{{\"click_id\": \"{id}\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": \"1900-01-01 00:00:00.000\"}}").into_bytes(),
            7 => format!("{{\"click_id\": \"{id}\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": \"{far_future}\"}}").into_bytes(),
            8 => format!("[\"{id}\", 1, \"p\"]").into_bytes(),
            _ => format!("{{\"click_id\": \"{id}\", \"user_id\": 1, \"product_id\": \"p\", \"datetime_occured\": 1700000000}}").into_bytes(),
        };
        bad.push(m);
    }
    for i in 0..5 {
        // 1 MB: a valid-looking start, then a string that never closes.
        let mut m =
            format!("{{\"click_id\": \"huge-{i}\", \"user_id\": 1, \"url\": \"").into_bytes();
        m.resize(1 << 20, b'a');
        bad.push(m);
    }

    // Seed and users as in the other test of this file: both write users 1..=200 to the same
    // Redis, so their names must agree.
    let config = GeneratorConfig {
        clicks: Some(2_000),
        seed: 11,
        users: 200,
        disorder_secs: 5.0,
        duplicate_rate: 0.02,
        event_rate: 50.0,
        ..GeneratorConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let files = DataSetPaths::in_dir(dir.path());
    write_data_set(Generator::new(config.clone()), &files, |_| {}).expect("files");
    let redis = RedisArgs {
        redis_url: env("REDIS_URL"),
        ..RedisArgs::default()
    };
    let users = UserDirectory::new(&redis).expect("Redis settings");
    let log = dir.path().join("streaming.log");
    // The default idle timeout: this test does not wait for idle streams, and a stream busy
    // with thousands of malformed messages must not look idle.
    let service = start_streaming(&names, &log, 30, "storage-write");
    // Bad messages first, interleaved over both topics, then the good data set.
    let sends = bad.iter().enumerate().map(|(i, m)| {
        let p = if i % 2 == 0 {
            &clicks_pub
        } else {
            &checkouts_pub
        };
        p.publish(OutgoingMessage::new(m.clone()))
    });
    for r in futures::future::join_all(sends).await {
        r.expect("bad message published");
    }
    let target = PublishTarget {
        conn: &conn,
        click_topic: &pubsub.click_topic,
        checkout_topic: &pubsub.checkout_topic,
        users: &users,
        rate: 0.0,
        max_in_flight: 1000,
    };
    publish(Generator::new(config), target, |_| {})
        .await
        .expect("published");

    let (summary, expected) = expected_rows(&files, dir.path());

    // Dead letters: all of them, each with a reason.
    let mut dead = Subscription::start(
        &conn,
        &pubsub.dead_letter_topic,
        SubscribeOptions::default(),
    )
    .await
    .expect("dead-letter subscription");
    let wanted: HashSet<Vec<u8>> = bad.iter().cloned().collect();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.len() < wanted.len() && Instant::now() < deadline {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), dead.next()).await
        else {
            continue;
        };
        assert!(
            m.attributes.get("reason").is_some_and(|r| !r.is_empty()),
            "no reason"
        );
        assert!(
            wanted.contains(&m.data[..]),
            "a good message was dead-lettered: {:?}",
            String::from_utf8_lossy(&m.data[..m.data.len().min(200)])
        );
        seen.insert(m.data.to_vec());
        m.ack.ack();
    }
    dead.shutdown().await;
    assert_eq!(
        seen.len(),
        wanted.len(),
        "distinct bad messages dead-lettered"
    );

    // The good events: wait for every checkout's row (the last ones need the idle timeout and
    // clicks after them, so compare only the rows of checkouts the watermark has passed).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = 0;
    while Instant::now() < deadline {
        got = count_rows(&bq, &bq.table_path()).await;
        if got as u64 >= summary.rows.saturating_sub(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows = bq
        .query(&format!("SELECT * FROM `{}`", bq.table_path()))
        .await
        .expect("rows");
    assert!(
        rows.len() as u64 >= summary.rows.saturating_sub(20),
        "{} rows of {}",
        rows.len(),
        summary.rows
    );
    for r in &rows {
        let row = normalize(r);
        let id = row["checkout_id"].as_str().unwrap_or("").to_string();
        assert_eq!(expected.get(&id), Some(&row), "row of checkout {id}");
    }
    let report = format!(
        "flood: {} malformed messages (5 of 1 MB) dead-lettered with reasons; {} of {} rows \
         written, all equal to the replay",
        wanted.len(),
        rows.len(),
        summary.rows
    );
    println!("{report}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("flood.report"),
        &report,
    );
    drop(service);
    let _ = got;
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
