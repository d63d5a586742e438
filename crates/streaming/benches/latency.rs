//! The latency benchmark (issue 10; numbers in BENCHMARKS.md): publish → row visible in
//! BigQuery, for a steady live stream through the real `streaming` binary on the emulators.
//!
//! ```text
//! scripts/dev-up && source .dev/env
//! cargo bench -p firstclick-streaming --bench latency -- --rates 500,2000 \
//!     --write-apis insert-all,storage-write --secs 60
//! ```
//!
//! For each write path and rate: fresh topics, subscriptions and table; the service started
//! with `--out-of-orderness-secs 5` (the generator's disorder is 4 s); live events (event time
//! starts at the wall clock and keeps its pace) published at the rate for `--secs`. The
//! service's histogram `firstclick_publish_to_row_seconds` is read from its /metrics 15 s into
//! the run and at the end of publishing; the difference is the steady state (the start-up and
//! the tail after the last message, which waits for the idle timeout, are left out). Printed:
//! rows in the window, p50, p90, p99 (interpolated inside 0.5 s buckets) and the mean.

mod shared;
use shared::{env, flag, forget_users};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_datagen::{publish, Generator, GeneratorConfig, PublishTarget};
use firstclick_model::time::wall_clock;
use firstclick_pubsub::{ensure_topology, Connection, PubSubArgs};
use firstclick_redis::{RedisArgs, UserDirectory};

/// Messages per click the generator sends on average (clicks, checkouts, duplicates).
const MESSAGES_PER_CLICK: f64 = 1.55;
/// The service's out-of-orderness bound in the benchmark, seconds.
const OUT_OF_ORDERNESS_SECS: u64 = 5;

/// Cumulative bucket counts of the latency histogram, by upper bound (seconds).
fn histogram(metrics_addr: &str) -> BTreeMap<u64, f64> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{metrics_addr}/metrics")])
        .output()
        .expect("curl /metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut buckets = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("firstclick_publish_to_row_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().expect("a bound") * 1000.0) as u64
        };
        buckets.insert(le, count.trim().parse::<f64>().expect("a count"));
    }
    buckets
}

/// The `p` quantile (seconds) of the observations between two cumulative histograms,
/// interpolated linearly inside its bucket.
fn quantile(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>, p: f64) -> f64 {
    let diff: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = diff.last().map_or(0.0, |d| d.1);
    let rank = p * total;
    let mut lower = (0u64, 0.0);
    for (le, n) in diff {
        if n >= rank {
            if le == u64::MAX {
                return lower.0 as f64 / 1000.0;
            }
            let share = if n > lower.1 {
                (rank - lower.1) / (n - lower.1)
            } else {
                0.0
            };
            return (lower.0 as f64 + share * (le - lower.0) as f64) / 1000.0;
        }
        lower = (le, n);
    }
    f64::NAN
}

async fn run_once(write_api: &str, rate: f64, secs: u64) {
    let suffix = format!("{:x}", wall_clock().as_micros() % 0xffff_ffff);
    let gcp = GcpArgs {
        project_id: "test-project".into(),
        credentials: None,
    };
    let pubsub = PubSubArgs {
        emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
        click_topic: format!("lclicks-{suffix}"),
        checkout_topic: format!("lcheckouts-{suffix}"),
        click_subscription: Some(format!("lclicks-{suffix}-sub")),
        checkout_subscription: Some(format!("lcheckouts-{suffix}-sub")),
        dead_letter_topic: format!("ldead-{suffix}"),
        late_topic: format!("llate-{suffix}"),
        ..PubSubArgs::default()
    };
    let bq_args = BigQueryArgs {
        emulator_host: Some(env("BIGQUERY_EMULATOR_HOST")),
        dataset: format!("latency_{suffix}"),
        ..BigQueryArgs::default()
    };
    ensure_topology(&gcp, &pubsub).await.expect("topics");
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let topology = pubsub.topology();
    let bq = BigQuery::connect(&gcp, &bq_args).await.expect("BigQuery");
    bq.ensure_table().await.expect("table");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("latency-{suffix}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .arg("run")
        .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
        .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
        .env("REDIS_URL", env("REDIS_URL"))
        .env("PROJECT_ID", &gcp.project_id)
        .env("CLICK_TOPIC", &pubsub.click_topic)
        .env("CHECKOUT_TOPIC", &pubsub.checkout_topic)
        .env("CLICK_SUBSCRIPTION", &topology.click_subscription)
        .env("CHECKOUT_SUBSCRIPTION", &topology.checkout_subscription)
        .env("DEAD_LETTER_TOPIC", &pubsub.dead_letter_topic)
        .env("LATE_TOPIC", &pubsub.late_topic)
        .env("BQ_DATASET", &bq_args.dataset)
        .env("CHECKPOINT_KEY", format!("firstclick:latency:{suffix}"))
        .env("OUT_OF_ORDERNESS_SECS", OUT_OF_ORDERNESS_SECS.to_string())
        .env("BIGQUERY_WRITE_API", write_api)
        .env("METRICS_ADDR", &metrics_addr)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("streaming starts");

    let redis = RedisArgs {
        redis_url: env("REDIS_URL"),
        ..RedisArgs::default()
    };
    let users = UserDirectory::new(&redis).expect("Redis");
    let config = GeneratorConfig {
        clicks: Some((rate / MESSAGES_PER_CLICK * secs as f64) as u64),
        seed: 7,
        users: USERS,
        start: wall_clock(),
        event_rate: rate / MESSAGES_PER_CLICK,
        disorder_secs: (OUT_OF_ORDERNESS_SECS - 1) as f64,
        ..GeneratorConfig::default()
    };
    let started = Instant::now();
    let warm_up = Duration::from_secs(15.min(secs / 4));
    let publishing = tokio::spawn({
        let conn = conn.clone();
        let pubsub = pubsub.clone();
        async move {
            let target = PublishTarget {
                conn: &conn,
                click_topic: &pubsub.click_topic,
                checkout_topic: &pubsub.checkout_topic,
                users: &users,
                rate,
                max_in_flight: 1000,
            };
            publish(Generator::new(config), target, |_| {})
                .await
                .expect("published")
                .1
        }
    });
    tokio::time::sleep(warm_up).await;
    let before = histogram(&metrics_addr);
    let published = publishing.await.expect("publisher");
    let publish_secs = started.elapsed().as_secs_f64();
    let after = histogram(&metrics_addr);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let rows = after.get(&u64::MAX).copied().unwrap_or(0.0)
        - before.get(&u64::MAX).copied().unwrap_or(0.0);
    println!(
        "{write_api:>13} at {rate:>5.0} msg/s: {published} messages in {publish_secs:.1} s \
         ({:.0} msg/s), {rows:.0} rows in the window; publish -> row visible p50 {:.2} s, \
         p90 {:.2} s, p99 {:.2} s (out-of-orderness {OUT_OF_ORDERNESS_SECS} s)",
        published as f64 / publish_secs,
        quantile(&before, &after, 0.5),
        quantile(&before, &after, 0.9),
        quantile(&before, &after, 0.99),
    );
    assert!(rows > 0.0, "no rows observed; see {}", log.display());
    bq.raw()
        .dataset()
        .delete_if_exists(bq.project(), bq.dataset(), true)
        .await;
    forget_users(&env("REDIS_URL"), USERS).await;
}

/// Users the benchmark writes (ids 1..=USERS).
const USERS: u32 = 5_000;

#[tokio::main]
async fn main() {
    firstclick_pubsub::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let rates: Vec<f64> = flag(&args, "--rates", "500,2000")
        .split(',')
        .map(|r| r.parse().expect("--rates: numbers"))
        .collect();
    let apis = flag(&args, "--write-apis", "insert-all,storage-write");
    let secs: u64 = flag(&args, "--secs", "60")
        .parse()
        .expect("--secs: a number");
    for api in apis.split(',') {
        for rate in &rates {
            run_once(api, *rate, secs).await;
        }
    }
}
