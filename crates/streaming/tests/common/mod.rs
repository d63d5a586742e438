//! What the service-level tests share: the services' addresses, the expected rows (the file
//! replay of the same events), the end-of-input sentinel click, and rows made comparable
//! whether they come from the replay's JSON or from BigQuery's answer; and the processes the
//! tests start (the service, private redis-servers), and the Pub/Sub pass-through that makes
//! the emulator end a dead client's streaming pulls ([`pubsub_proxy`]), and a real Prometheus
//! scraping the service ([`prometheus`]).
#![allow(dead_code)]

pub(crate) mod prometheus;
pub(crate) mod pubsub_proxy;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_bigquery::BigQuery;
use firstclick_datagen::DataSetPaths;
use firstclick_engine::EngineConfig;
use firstclick_model::EventTime;
use firstclick_replay::{replay, ReplayOptions, Summary};
use serde_json::Value;

/// A service address from the environment; panics with what to run when it is unset.
pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the emulators and Redis. Run `scripts/test`, or \
             `scripts/dev-up && source .dev/env`."
        )
    })
}

fn as_micros(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s
            .parse::<i64>()
            .ok()
            .or_else(|| EventTime::parse(s).ok().map(|t| t.as_micros())),
        _ => None,
    }
}

/// A JSON number or numeric string as a float.
pub(crate) fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The comparable part of a row (every column but `processed_at`; timestamps as µs, NUMERIC
/// as a float), from the replay's JSON or BigQuery's answer.
pub(crate) fn normalize(row: &serde_json::Map<String, Value>) -> Value {
    let text = |k: &str| row.get(k).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "checkout_id": text("checkout_id"),
        "user_id": text("user_id"),
        "user_name": text("user_name"),
        "product_id": text("product_id"),
        "payment_method": text("payment_method"),
        "total_amount": row.get("total_amount").and_then(as_f64),
        "shipping_address": text("shipping_address"),
        "billing_address": text("billing_address"),
        "user_agent": text("user_agent"),
        "ip_address": text("ip_address"),
        "checkout_time": row.get("checkout_time").and_then(as_micros),
        "click_id": text("click_id"),
        "click_time": row.get("click_time").and_then(as_micros),
        "attribution_model": text("attribution_model"),
    })
}

/// Rows keyed by checkout id.
pub(crate) type Rows = BTreeMap<String, Value>;

/// Normalizes rows and keys them by checkout id; panics on a second row for one checkout.
pub(crate) fn by_checkout<'a>(
    rows: impl IntoIterator<Item = &'a serde_json::Map<String, Value>>,
) -> Rows {
    let mut out = Rows::new();
    for r in rows {
        let row = normalize(r);
        let id = row["checkout_id"].as_str().unwrap_or("").to_string();
        assert!(
            out.insert(id.clone(), row).is_none(),
            "two rows for checkout {id}"
        );
    }
    out
}

/// What the table must hold: the file replay of the data set in `files`, written to `dir`.
pub(crate) fn expected_rows(files: &DataSetPaths, dir: &Path) -> (Summary, Rows) {
    let out = dir.join("expected.ndjson");
    let summary = replay(&ReplayOptions {
        clicks: files.clicks.clone(),
        checkouts: files.checkouts.clone(),
        users: Some(files.users.clone()),
        out: out.clone(),
        late: None,
        touches: None,
        dead_letter: None,
        engine: EngineConfig::default(),
        progress: false,
        max_bad_share: firstclick_replay::DEFAULT_MAX_BAD_SHARE,
        parallelism: Default::default(),
    })
    .expect("replay of the data set");
    let objects: Vec<serde_json::Map<String, Value>> = std::fs::read_to_string(&out)
        .expect("expected rows")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .collect();
    (summary, by_checkout(&objects))
}

/// Event time only moves with clicks (or, once they stop, at the speed of processing time): a
/// last click a minute after every checkout lets the watermark pass them all, as the end of the
/// input does for the replay. It is appended to the clicks file (so it is in both inputs and
/// changes no row) and returned, to be published.
pub(crate) fn append_sentinel(files: &DataSetPaths) -> String {
    append_sentinel_click(files, "sentinel", 60)
}

/// [`append_sentinel`] for each of `partitions` partitions: a partition's watermark moves only
/// with its own clicks, so each gets its own last click (of an unknown user, chosen so that it
/// lands in that partition). Returns them, to be published.
pub(crate) fn append_partition_sentinels(files: &DataSetPaths, partitions: u32) -> Vec<String> {
    if partitions <= 1 {
        return vec![append_sentinel(files)];
    }
    (0..partitions)
        .map(|p| {
            let user = (1..)
                .map(|u: i64| -u)
                .find(|u| firstclick_partition::partition_of(*u, partitions) == p)
                .expect("a user for every partition");
            append_sentinel_click_of(files, &format!("sentinel-p{p}"), user, 60)
        })
        .collect()
}

/// A sentinel click `click_id`, `after_secs` after the last checkout, appended to the clicks
/// file and returned (see [`append_sentinel`]).
pub(crate) fn append_sentinel_click(
    files: &DataSetPaths,
    click_id: &str,
    after_secs: i64,
) -> String {
    append_sentinel_click_of(files, click_id, 0, after_secs)
}

/// [`append_sentinel_click`] of user `user_id`.
fn append_sentinel_click_of(
    files: &DataSetPaths,
    click_id: &str,
    user_id: i64,
    after_secs: i64,
) -> String {
    let last_checkout = std::fs::read_to_string(&files.checkouts)
        .expect("checkouts file")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v["datetime_occured"]
                .as_str()
                .and_then(|t| EventTime::parse(t).ok())
        })
        .max()
        .expect("some checkouts");
    let sentinel = serde_json::json!({
        "click_id": click_id, "user_id": user_id, "product_id": "end-of-test",
        "datetime_occured": last_checkout.offset(after_secs * 1_000_000).to_rfc3339(),
    })
    .to_string();
    let mut clicks = std::fs::read_to_string(&files.clicks).expect("clicks file");
    clicks.push_str(&sentinel);
    clicks.push('\n');
    std::fs::write(&files.clicks, clicks).expect("clicks file");
    sentinel
}

/// The `n` of a `SELECT COUNT(*) AS n ...` query; `None` while BigQuery does not answer.
pub(crate) async fn count(bq: &BigQuery, sql: &str) -> Option<usize> {
    let rows = bq.query(sql).await.ok()?;
    rows.first()?.get("n").and_then(as_f64).map(|n| n as usize)
}

/// Rows in `table` (a fully qualified name); 0 while BigQuery does not answer.
pub(crate) async fn count_rows(bq: &BigQuery, table: &str) -> usize {
    count(bq, &format!("SELECT COUNT(*) AS n FROM `{table}`"))
        .await
        .unwrap_or(0)
}

/// A child process killed (SIGKILL) when dropped, so that a failing test leaves nothing behind.
pub(crate) struct Proc(pub(crate) Option<Child>);

impl Proc {
    /// SIGKILL now (and reap it).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (at most a minute) until something listens on `port`.
pub(crate) fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private redis-server on `port` with its files in `dir`; with `append_only`, every write
/// is fsynced to its append-only file, so it survives being killed and restarted.
pub(crate) fn start_redis(port: u16, dir: &Path, append_only: bool) -> Proc {
    let aof: &[&str] = if append_only {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(aof)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    wait_port(port, "redis-server");
    Proc(Some(child))
}

/// Rows keyed by (checkout id, model), touch rows by (checkout id, model, click id).
pub(crate) type Keyed = BTreeMap<(String, String, String), Value>;

/// A NUMERIC as exact integer billionths, from decimal text (BigQuery's answer or the
/// replay's JSON string) or from a JSON float rounded to 9 decimals (the replay's
/// `total_amount`, written as BigQuery stores it).
pub(crate) fn nanos(v: &Value) -> Option<i128> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => format!("{:.9}", n.as_f64()?),
        _ => return None,
    };
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) => (-1, d),
        None => (1, text.as_str()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = format!("{frac:0<9}");
    let whole: i128 = whole.parse().ok()?;
    let frac: i128 = frac.get(..9)?.parse().ok()?;
    Some(sign * (whole * 1_000_000_000 + frac))
}

/// The comparable part of a touch row (every column but `processed_at`; timestamps as µs,
/// NUMERICs as billionths).
pub(crate) fn normalize_touch(row: &serde_json::Map<String, Value>) -> Value {
    let text = |k: &str| row.get(k).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "checkout_id": text("checkout_id"),
        "user_id": text("user_id"),
        "product_id": text("product_id"),
        "checkout_time": row.get("checkout_time").and_then(as_micros),
        "click_id": text("click_id"),
        "click_time": row.get("click_time").and_then(as_micros),
        "attribution_model": text("attribution_model"),
        "credit": row.get("credit").and_then(nanos).map(|n| n.to_string()),
        "credited_revenue": row.get("credited_revenue").and_then(nanos).map(|n| n.to_string()),
    })
}

/// Rows (several models: keyed by checkout and model, click id empty) or touch rows (keyed by
/// checkout, model and click), normalized; panics on a second row for one key.
pub(crate) fn keyed<'a>(
    rows: impl IntoIterator<Item = &'a serde_json::Map<String, Value>>,
    touches: bool,
) -> Keyed {
    let mut out = Keyed::new();
    for r in rows {
        let row = if touches {
            normalize_touch(r)
        } else {
            normalize(r)
        };
        let part = |k: &str| row[k].as_str().unwrap_or("").to_string();
        let click = if touches {
            part("click_id")
        } else {
            String::new()
        };
        let key = (part("checkout_id"), part("attribution_model"), click);
        assert!(
            out.insert(key.clone(), row).is_none(),
            "two rows for {key:?}"
        );
    }
    out
}

/// One row as a JSON object.
pub(crate) type Object = serde_json::Map<String, Value>;

/// JSON objects of an NDJSON file.
fn ndjson(path: &Path) -> Vec<Object> {
    std::fs::read_to_string(path)
        .expect("NDJSON output")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .collect()
}

/// What both tables must hold with `models` (the `ATTRIBUTION_MODEL` list): the replay binary
/// (`streaming replay --model MODELS --touches FILE`) of the data set in `files`, run in `dir`.
/// Returns the raw rows and touch rows as JSON objects.
pub(crate) fn expected_rows_and_touches(
    files: &DataSetPaths,
    dir: &Path,
    models: &str,
) -> (Vec<Object>, Vec<Object>) {
    let (out, touches) = (dir.join("expected.ndjson"), dir.join("touches.ndjson"));
    let status = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .arg("replay")
        .arg("--clicks")
        .arg(&files.clicks)
        .arg("--checkouts")
        .arg(&files.checkouts)
        .arg("--users")
        .arg(&files.users)
        .arg("--out")
        .arg(&out)
        .arg("--touches")
        .arg(&touches)
        .args(["--model", models])
        .env_remove("ATTRIBUTION_MODEL")
        .stdout(Stdio::null())
        .status()
        .expect("streaming replay runs");
    assert!(status.success(), "streaming replay: {status}");
    (ndjson(&out), ndjson(&touches))
}

/// Checkout ids expected but missing, present but different, and present but not expected.
pub(crate) fn compare_rows(expected: &Rows, got: &Rows) -> (Vec<String>, Vec<String>, usize) {
    let lost = expected
        .keys()
        .filter(|k| !got.contains_key(*k))
        .cloned()
        .collect();
    let wrong = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k.clone())
        .collect();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    (lost, wrong, extra)
}
