//! The scale-out benchmark (issue 9; numbers in BENCHMARKS.md): messages per second end to
//! end with 1, 2 and 3 `streaming` workers on the emulators, the CPU each message costs, and
//! the Redis commands per event.
//!
//! ```text
//! scripts/dev-up && source .dev/env
//! cargo bench -p firstclick-streaming --bench scale_out -- --workers 1,2,3 --partitions 8 \
//!     --clicks 20000
//! ```
//!
//! For each worker count: fresh topics (P partition topics too), table and checkpoint; the
//! whole data set is published first (a backlog), then the workers start together and the
//! clock runs until every checkout's row is in the table. Printed per run: messages, wall
//! time, messages/s, the workers' CPU seconds per message (user + system, from
//! /proc/PID/stat, router included), and Redis commands per event (the difference of
//! `INFO commandstats` on the Redis the workers use, over the messages). A run with P = 1 and
//! one worker is the baseline the router's cost is read against.

mod shared;
use shared::{env, flag, forget_users};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_datagen::{publish, Generator, GeneratorConfig, PublishTarget};
use firstclick_model::time::wall_clock;
use firstclick_pubsub::{ensure_topology, Connection, PubSubArgs};
use firstclick_redis::{RedisArgs, UserDirectory};

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// Commands Redis at `url` has executed, from `INFO commandstats`.
fn redis_commands(url: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-u", url, "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

async fn rows_in(bq: &BigQuery) -> usize {
    bq.query(&format!(
        "SELECT COUNT(DISTINCT checkout_id) AS n FROM `{}`",
        bq.table_path()
    ))
    .await
    .ok()
    .and_then(|r| {
        r.first()
            .and_then(|r| r.get("n"))
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_f64()))
    })
    .map_or(0, |n: f64| n as usize)
}

/// Users the benchmark writes (ids 1..=USERS).
const USERS: u32 = 2_000;

async fn run_once(workers: usize, partitions: u32, clicks: u64) {
    let suffix = format!("{:x}", wall_clock().as_micros() % 0xffff_ffff);
    let gcp = GcpArgs {
        project_id: "test-project".into(),
        credentials: None,
    };
    let pubsub = PubSubArgs {
        emulator_host: Some(env("PUBSUB_EMULATOR_HOST")),
        click_topic: format!("bclicks-{suffix}"),
        checkout_topic: format!("bcheckouts-{suffix}"),
        dead_letter_topic: format!("bdead-{suffix}"),
        late_topic: format!("blate-{suffix}"),
        partitions,
        ack_deadline_secs: 10,
        ..PubSubArgs::default()
    };
    let bq_args = BigQueryArgs {
        emulator_host: Some(env("BIGQUERY_EMULATOR_HOST")),
        dataset: format!("scale_{suffix}"),
        ..BigQueryArgs::default()
    };
    ensure_topology(&gcp, &pubsub).await.expect("topics");
    let conn = Connection::connect(&gcp, &pubsub).await.expect("Pub/Sub");
    let bq = BigQuery::connect(&gcp, &bq_args).await.expect("BigQuery");
    bq.ensure_table().await.expect("table");
    let redis_url = env("REDIS_URL");
    let users = UserDirectory::new(&RedisArgs {
        redis_url: redis_url.clone(),
        ..RedisArgs::default()
    })
    .expect("Redis");
    let config = GeneratorConfig {
        clicks: Some(clicks),
        seed: 5,
        users: USERS,
        ..GeneratorConfig::default()
    };
    let target = PublishTarget {
        conn: &conn,
        click_topic: &pubsub.click_topic,
        checkout_topic: &pubsub.checkout_topic,
        users: &users,
        rate: 0.0,
        max_in_flight: 2000,
    };
    let (stats, messages) = publish(Generator::new(config), target, |_| {})
        .await
        .expect("published");
    let want = stats.checkouts as usize;
    // The end of the input: a click now (the data's event time is months behind) in every
    // partition, of unknown users, so every partition's watermark passes every checkout.
    let clicks_topic = firstclick_pubsub::Publisher::new(&conn, &pubsub.click_topic)
        .await
        .expect("publisher");
    for p in 0..partitions {
        let user = (1..)
            .map(|u: i64| -u)
            .find(|u| firstclick_partition::partition_of(*u, partitions) == p)
            .expect("a user per partition");
        let sentinel = serde_json::json!({
            "click_id": format!("end-{p}"), "user_id": user, "product_id": "end",
            "datetime_occured": wall_clock().to_rfc3339(),
        });
        clicks_topic
            .publish(firstclick_pubsub::OutgoingMessage::new(
                sentinel.to_string().into_bytes(),
            ))
            .await
            .expect("sentinel");
    }

    let commands_before = redis_commands(&redis_url);
    let started = Instant::now();
    let mut children: Vec<Child> = (0..workers)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_streaming"))
                .arg("run")
                .env("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))
                .env("BIGQUERY_EMULATOR_HOST", env("BIGQUERY_EMULATOR_HOST"))
                .env("REDIS_URL", &redis_url)
                .env("PROJECT_ID", &gcp.project_id)
                .env("CLICK_TOPIC", &pubsub.click_topic)
                .env("CHECKOUT_TOPIC", &pubsub.checkout_topic)
                .env("DEAD_LETTER_TOPIC", &pubsub.dead_letter_topic)
                .env("LATE_TOPIC", &pubsub.late_topic)
                .env("PARTITIONS", partitions.to_string())
                .env("WORKER_ID", format!("bench-{i}"))
                .env("BQ_DATASET", &bq_args.dataset)
                .env("CHECKPOINT_KEY", format!("firstclick:bench:{suffix}"))
                .env("IDLE_TIMEOUT_SECS", "3")
                // Partitions handed over hold their watermark for the ack deadline + 5 s.
                .env("PUBSUB_ACK_DEADLINE_SECS", "10")
                .env("METRICS_ADDR", "")
                .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(
                        std::env::temp_dir().join(format!("scale-{suffix}-{i}.log")),
                    )
                    .expect("log"),
                )
                .spawn()
                .expect("streaming starts")
        })
        .collect();
    let deadline = started + Duration::from_secs(300);
    let mut done = 0;
    while Instant::now() < deadline {
        done = rows_in(&bq).await;
        if done >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu: f64 = children.iter().map(|c| cpu_secs(c.id())).sum();
    let commands = redis_commands(&redis_url).saturating_sub(commands_before);
    for c in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    forget_users(&redis_url, USERS).await;
    println!(
        "workers {workers}, P {partitions}: {messages} messages, {done}/{want} rows in \
         {secs:.1} s = {:.0} msg/s end to end; CPU {cpu:.1} s = {:.1} µs/message; Redis \
         {commands} commands = {:.2} per message (the workers' and the checks'; users were \
         written before the clock started)",
        messages as f64 / secs,
        cpu * 1e6 / messages as f64,
        commands as f64 / messages as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    firstclick_pubsub::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let workers: Vec<usize> = flag(&args, "--workers", "1,2,3")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let partitions: u32 = flag(&args, "--partitions", "8")
        .parse()
        .expect("--partitions");
    let clicks: u64 = flag(&args, "--clicks", "20000").parse().expect("--clicks");
    if flag(&args, "--baseline", "yes") == "yes" {
        run_once(1, 1, clicks).await;
    }
    for w in workers {
        run_once(w, partitions, clicks).await;
    }
}
