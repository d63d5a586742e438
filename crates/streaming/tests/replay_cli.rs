//! The replay contract end to end: `datagen --out` writes a data set with disorder inside the
//! bound, duplicates, unknown users, stale clicks, organic checkouts and malformed lines; the
//! `streaming replay` binary must produce exactly the rows of a brute-force oracle written here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use firstclick_datagen::{write_data_set, DataSetPaths, Generator, GeneratorConfig};
use firstclick_model::EventTime;
use serde_json::Value;

const LOOKBACK_SECS: i64 = 3600;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("readable file")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn micros(v: &Value) -> Option<i64> {
    EventTime::parse(v.as_str()?).ok().map(|t| t.as_micros())
}

fn user_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.trim_start_matches('0').to_string())
        }
        _ => None,
    }
}

/// checkout_id -> expected row (as the JSON the binary writes, minus processed_at).
fn oracle(dir: &Path) -> BTreeMap<String, Value> {
    let users: HashMap<String, String> = lines(&dir.join("users.ndjson"))
        .into_iter()
        .map(|u| {
            (
                u["id"].to_string(),
                u["user_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut seen = HashSet::new();
    let mut clicks: HashMap<(String, String), Vec<(i64, String)>> = HashMap::new();
    for c in lines(&dir.join("clicks.ndjson")) {
        let (Some(id), Some(user), Some(product), Some(t)) = (
            c["click_id"].as_str(),
            user_text(&c["user_id"]),
            c["product_id"].as_str(),
            micros(&c["datetime_occured"]),
        ) else {
            continue;
        };
        if seen.insert(id.to_string()) {
            clicks
                .entry((user, product.to_string()))
                .or_default()
                .push((t, id.to_string()));
        }
    }
    let mut rows = BTreeMap::new();
    for k in lines(&dir.join("checkouts.ndjson")) {
        let (Some(id), Some(user), Some(product), Some(t)) = (
            k["checkout_id"].as_str(),
            user_text(&k["user_id"]),
            k["product_id"].as_str(),
            micros(&k["datetime_occured"]),
        ) else {
            continue;
        };
        if rows.contains_key(id) {
            continue;
        }
        // Brute force over every distinct click of the same user and product.
        let best = clicks
            .get(&(user.clone(), product.to_string()))
            .into_iter()
            .flatten()
            .filter(|c| c.0 >= t - LOOKBACK_SECS * 1_000_000 && c.0 <= t)
            .min();
        let ts = |m: i64| Value::String(EventTime::from_micros(m).to_rfc3339());
        let row = serde_json::json!({
            "checkout_id": id,
            "user_id": user,
            "user_name": users.get(&user),
            "product_id": product,
            "payment_method": k["payment_method"],
            "total_amount": k["total_amount"],
            "shipping_address": k["shipping_address"],
            "billing_address": k["billing_address"],
            "user_agent": k["user_agent"],
            "ip_address": k["ip_address"],
            "checkout_time": ts(t),
            "click_id": best.map(|c| c.1.clone()),
            "click_time": best.map(|c| ts(c.0)),
            "attribution_model": "first_click",
        });
        rows.insert(id.to_string(), row);
    }
    rows
}

#[test]
fn replay_equals_the_brute_force_oracle() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The same generator as `datagen --out DIR`, called as a library.
    let config = GeneratorConfig {
        clicks: Some(30_000),
        seed: 7,
        users: 50,
        disorder_secs: 15.0,
        duplicate_rate: 0.03,
        stale_click_rate: 0.05,
        organic_rate: 0.05,
        unknown_user_rate: 0.05,
        malformed_rate: 0.01,
        event_rate: 5.0,
        ..GeneratorConfig::default()
    };
    let stats = write_data_set(
        Generator::new(config),
        &DataSetPaths::in_dir(dir.path()),
        |_| {},
    )
    .expect("data set written");
    let out = dir.path().join("rows.ndjson");
    let dead = dir.path().join("dead.ndjson");
    let output = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .arg("replay")
        .args([
            "--clicks",
            &dir.path().join("clicks.ndjson").to_string_lossy(),
        ])
        .args([
            "--checkouts",
            &dir.path().join("checkouts.ndjson").to_string_lossy(),
        ])
        .args([
            "--users",
            &dir.path().join("users.ndjson").to_string_lossy(),
        ])
        .args(["--out", &out.to_string_lossy()])
        .args(["--dead-letter", &dead.to_string_lossy()])
        .arg("--summary-json")
        .output()
        .expect("streaming replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let expected = oracle(dir.path());
    let mut got = BTreeMap::new();
    for mut row in lines(&out) {
        let obj = row.as_object_mut().expect("row object");
        assert!(obj.remove("processed_at").is_some_and(|p| p.is_string()));
        let id = obj["checkout_id"]
            .as_str()
            .expect("checkout_id")
            .to_string();
        assert!(got.insert(id.clone(), row).is_none(), "two rows for {id}");
    }
    assert_eq!(got.len(), expected.len());
    let attributed = expected
        .values()
        .filter(|r| !r["click_id"].is_null())
        .count();
    let named = expected
        .values()
        .filter(|r| !r["user_name"].is_null())
        .count();
    assert!(attributed > expected.len() / 2 && attributed < expected.len());
    assert!(named > expected.len() / 2 && named < expected.len());
    for (id, want) in &expected {
        assert_eq!(got.get(id), Some(want), "row {id}");
    }

    // Every malformed line is reported with its line number and dead-lettered.
    let summary: Value = serde_json::from_slice(&output.stdout).expect("summary JSON");
    let dead_lines = lines(&dead);
    assert_eq!(dead_lines.len() as u64, stats.malformed);
    assert_eq!(summary["bad"].as_u64(), Some(dead_lines.len() as u64));
    assert_eq!(summary["late_clicks"].as_u64(), Some(0));
    assert_eq!(summary["rows"].as_u64(), Some(expected.len() as u64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for d in &dead_lines {
        let needle = format!("{}:{}:", d["file"].as_str().unwrap_or("?"), d["line"]);
        assert!(stderr.contains(&needle), "{needle} not reported on stderr");
    }
}

#[test]
fn replay_reports_a_missing_file_clearly() {
    let output = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .args(["replay", "--clicks", "/nonexistent/c.ndjson"])
        .args(["--checkouts", "/nonexistent/k.ndjson", "--out", "-"])
        .output()
        .expect("streaming runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/c.ndjson"), "{stderr}");
}
