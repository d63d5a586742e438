//! The replay contract end to end: `datagen --out` writes a data set with disorder inside the
//! bound, duplicates, unknown users, stale clicks, organic checkouts and malformed lines; the
//! `streaming replay` binary must produce exactly the rows of a brute-force oracle written here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};

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

/// A decimal text (`"12.5"`, `"0.333333334"`) or JSON number as exact billionths.
fn billionths(v: &Value) -> i64 {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => format!("{:.9}", n.as_f64().expect("a number")),
        other => panic!("not a decimal: {other}"),
    };
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) => (-1, d.to_string()),
        None => (1, text.clone()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((&digits, ""));
    let frac = format!("{frac:0<9}");
    sign * (whole.parse::<i64>().expect("digits") * 1_000_000_000
        + frac[..9].parse::<i64>().expect("digits"))
}

fn replay_with(dir: &Path, models: &str, out: &Path, touches: Option<&Path>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streaming"));
    cmd.arg("replay")
        .args(["--clicks", &dir.join("clicks.ndjson").to_string_lossy()])
        .args([
            "--checkouts",
            &dir.join("checkouts.ndjson").to_string_lossy(),
        ])
        .args(["--users", &dir.join("users.ndjson").to_string_lossy()])
        .args(["--out", &out.to_string_lossy()])
        .args(["--model", models, "--half-life", "20m"]);
    if let Some(t) = touches {
        cmd.args(["--touches", &t.to_string_lossy()]);
    }
    let output = cmd.output().expect("streaming replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_model_at_once_keeps_first_click_and_credits_sum_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = GeneratorConfig {
        clicks: Some(8_000),
        seed: 3,
        users: 20,
        disorder_secs: 10.0,
        duplicate_rate: 0.03,
        repeat_probability: 0.7,
        organic_rate: 0.05,
        event_rate: 5.0,
        ..GeneratorConfig::default()
    };
    write_data_set(
        Generator::new(config),
        &DataSetPaths::in_dir(dir.path()),
        |_| {},
    )
    .expect("data set written");
    let alone = dir.path().join("alone.ndjson");
    replay_with(dir.path(), "first_click", &alone, None);
    let all = dir.path().join("all.ndjson");
    let touches = dir.path().join("touches.ndjson");
    replay_with(
        dir.path(),
        "first_click,last_click,linear,time_decay,position_based",
        &all,
        Some(&touches),
    );

    // One row per checkout and model; the first-click rows are first click alone's.
    let strip = |mut v: Value| {
        v.as_object_mut().expect("row").remove("processed_at");
        v
    };
    let first_alone: BTreeMap<String, Value> = lines(&alone)
        .into_iter()
        .map(|r| (r["checkout_id"].as_str().expect("id").to_string(), strip(r)))
        .collect();
    let mut by_model: BTreeMap<(String, String), Value> = BTreeMap::new();
    for r in lines(&all) {
        let key = (
            r["checkout_id"].as_str().expect("id").to_string(),
            r["attribution_model"].as_str().expect("model").to_string(),
        );
        assert!(
            by_model.insert(key.clone(), strip(r)).is_none(),
            "two rows for {key:?}"
        );
    }
    assert_eq!(by_model.len(), first_alone.len() * 5);
    for (id, row) in &first_alone {
        assert_eq!(
            by_model.get(&(id.clone(), "first_click".into())),
            Some(row),
            "{id}"
        );
    }

    // The touches: for each checkout and multi-touch model, credits sum to exactly 1 and
    // credited revenue to exactly total_amount; each row's click is in its touches.
    let mut credit: BTreeMap<(String, String), (i64, i64, usize)> = BTreeMap::new();
    let mut clicks_of: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for t in lines(&touches) {
        let key = (
            t["checkout_id"].as_str().expect("id").to_string(),
            t["attribution_model"].as_str().expect("model").to_string(),
        );
        let e = credit.entry(key.clone()).or_default();
        e.0 += billionths(&t["credit"]);
        if !t["credited_revenue"].is_null() {
            e.1 += billionths(&t["credited_revenue"]);
        }
        e.2 += 1;
        clicks_of
            .entry(key)
            .or_default()
            .push(t["click_id"].as_str().expect("click").to_string());
    }
    let mut several = 0;
    for ((id, model), (sum, revenue, n)) in &credit {
        assert_eq!(*sum, 1_000_000_000, "credits of {id} under {model}");
        let row = &by_model[&(id.clone(), model.clone())];
        if !row["total_amount"].is_null() {
            assert_eq!(
                *revenue,
                billionths(&row["total_amount"]),
                "revenue of {id} under {model}"
            );
        }
        let credited = row["click_id"]
            .as_str()
            .expect("a multi-touch row with touches has a click");
        assert!(clicks_of[&(id.clone(), model.clone())]
            .iter()
            .any(|c| c == credited));
        several += usize::from(*n > 1);
    }
    // Every attributed checkout has touches under each multi-touch model, organic ones none.
    let attributed = first_alone
        .values()
        .filter(|r| !r["click_id"].is_null())
        .count();
    assert_eq!(credit.len(), attributed * 3);
    assert!(several > 100, "windows with several clicks: {several}");
}

/// A small data set with a few malformed lines, in `dir`.
fn small_data_set(dir: &Path) {
    let config = GeneratorConfig {
        clicks: Some(2_000),
        seed: 11,
        users: 20,
        malformed_rate: 0.01,
        ..GeneratorConfig::default()
    };
    write_data_set(Generator::new(config), &DataSetPaths::in_dir(dir), |_| {})
        .expect("data set written");
}

/// `streaming replay` of `clicks` and `checkouts` (paths) into `out`, with `extra` flags.
fn replay_files(clicks: &Path, checkouts: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streaming"))
        .arg("replay")
        .args(["--clicks", &clicks.to_string_lossy()])
        .args(["--checkouts", &checkouts.to_string_lossy()])
        .args(["--out", &out.to_string_lossy()])
        .args(extra)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("streaming replay runs")
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Temporary files left in `dir` (there must be none after any run).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Every output goes through a temporary file renamed at the end: whatever fails (an input
/// that is a directory, an output that cannot be created, a report that cannot be written),
/// an existing `--out` keeps its bytes and no other output appears.
#[test]
fn a_failed_replay_leaves_an_existing_out_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    small_data_set(dir.path());
    let clicks = dir.path().join("clicks.ndjson");
    let checkouts = dir.path().join("checkouts.ndjson");
    let out = dir.path().join("rows.ndjson");
    let late = dir.path().join("late.ndjson");
    let previous = "{\"previous\": \"rows\"}\n";
    std::fs::write(&out, previous).expect("previous rows");
    let late_flag = ["--late", &*late.to_string_lossy()].map(str::to_string);
    let late_args: Vec<&str> = late_flag.iter().map(String::as_str).collect();

    // A directory as --clicks.
    let o = replay_files(dir.path(), &checkouts, &out, &late_args);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("it is a directory, expected an NDJSON file"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).expect("out"), previous);

    // A --dead-letter that cannot be created (its directory does not exist).
    let mut args = late_args.clone();
    args.extend(["--dead-letter", "/nonexistent/dead.ndjson"]);
    let o = replay_files(&clicks, &checkouts, &out, &args);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/dead.ndjson"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).expect("out"), previous);

    // The replay succeeds but the report cannot be written: nothing is replaced either.
    let mut args = late_args.clone();
    args.extend(["--report", "/nonexistent/report.html"]);
    let o = replay_files(&clicks, &checkouts, &out, &args);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/report.html"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).expect("out"), previous);
    assert!(
        !late.exists(),
        "the late output appeared after a failed replay"
    );
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());

    // And a good replay replaces it.
    let o = replay_files(&clicks, &checkouts, &out, &late_args);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let rows = lines(&out);
    assert!(rows.len() > 100 && rows.iter().all(|r| r.get("checkout_id").is_some()));
    assert!(late.exists());
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

/// The checkouts given as --clicks, or a binary file: every line is bad. The replay fails
/// (exit 1, nothing written) and says why, unless --max-bad-share allows it.
#[test]
fn an_input_of_mostly_bad_lines_fails_unless_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    small_data_set(dir.path());
    let clicks = dir.path().join("clicks.ndjson");
    let checkouts = dir.path().join("checkouts.ndjson");
    let out = dir.path().join("rows.ndjson");

    let o = replay_files(&checkouts, &checkouts, &out, &[]);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("100.0 % of the lines of"), "{err}");
    assert!(err.contains("are not valid clicks"), "{err}");
    assert!(err.contains("--max-bad-share 1"), "{err}");
    assert!(!out.exists(), "rows written by a failed replay");

    // Binary garbage (with newlines, so that there are lines) as --checkouts.
    let binary = dir.path().join("binary.bin");
    let bytes: Vec<u8> = (0..20_000u32)
        .map(|i| {
            if i % 97 == 0 {
                b'\n'
            } else {
                (i.wrapping_mul(2_654_435_761) >> 24) as u8
            }
        })
        .collect();
    std::fs::write(&binary, bytes).expect("binary file");
    let o = replay_files(&clicks, &binary, &out, &[]);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("are not valid checkouts"), "{err}");
    assert!(!out.exists());

    // The ordinary data set (1 % malformed) passes the default threshold.
    let o = replay_files(&clicks, &checkouts, &out, &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    std::fs::remove_file(&out).expect("remove rows");

    // Allowed: a loud warning, and the (all organic) rows.
    let o = replay_files(&checkouts, &checkouts, &out, &["--max-bad-share", "1"]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: 100.0 % of the lines of"), "{err}");
    let rows = lines(&out);
    assert!(!rows.is_empty() && rows.iter().all(|r| r["click_id"].is_null()));

    let o = replay_files(&clicks, &checkouts, &out, &["--max-bad-share", "1.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
}

/// The logging flags are global: accepted after the subcommand and its flags.
#[test]
fn logging_flags_go_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("temp dir");
    small_data_set(dir.path());
    let clicks = dir.path().join("clicks.ndjson");
    let checkouts = dir.path().join("checkouts.ndjson");
    let out = dir.path().join("rows.ndjson");
    let o = replay_files(&clicks, &checkouts, &out, &["--log-format", "json"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    // Parsed there, not ignored: a bad value is refused.
    let o = replay_files(&clicks, &checkouts, &out, &["--log-format", "yaml"]);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--log-format"), "{err}");
}

/// `--partitions 4 --threads 2`: with disorder inside the bound no partition sees a late
/// click, so the rows are still the oracle's; and they come out in the same order, byte for
/// byte but for `processed_at`, as with one thread (`PARTITIONS` / `REPLAY_THREADS` from the
/// environment), with the same dead letters as the single-engine replay.
#[test]
fn replay_with_partitions_and_threads_equals_the_oracle_and_one_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = GeneratorConfig {
        clicks: Some(12_000),
        seed: 5,
        users: 80,
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
    let run = |name: &str, flags: &[&str], env: &[(&str, &str)]| {
        let out = dir.path().join(format!("{name}.ndjson"));
        let dead = dir.path().join(format!("{name}-dead.ndjson"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streaming"));
        cmd.arg("replay")
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
            .args(flags)
            .env_remove("PARTITIONS")
            .env_remove("REPLAY_THREADS")
            .envs(env.iter().copied());
        let output = cmd.output().expect("streaming replay runs");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut summary: Value = serde_json::from_slice(&output.stdout).expect("summary JSON");
        summary.as_object_mut().expect("summary").remove("elapsed");
        let rows: Vec<Value> = lines(&out)
            .into_iter()
            .map(|mut r| {
                let obj = r.as_object_mut().expect("row");
                assert!(obj.remove("processed_at").is_some_and(|p| p.is_string()));
                r
            })
            .collect();
        let dead = std::fs::read(&dead).expect("dead letters");
        (
            rows,
            dead,
            summary,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (rows, dead, summary, stderr) = run("p4t2", &["--partitions", "4", "--threads", "2"], &[]);
    let (rows1, dead1, summary1, _) =
        run("p4t1", &[], &[("PARTITIONS", "4"), ("REPLAY_THREADS", "1")]);
    let (_, dead_single, summary_single, _) = run("single", &["--threads", "1"], &[]);
    assert!(rows == rows1, "the rows' order depends on the threads");
    assert_eq!(dead, dead1);
    assert_eq!(summary, summary1);
    assert_eq!(
        dead, dead_single,
        "bad lines are reported in the single replay's order"
    );

    let expected = oracle(dir.path());
    let mut got = BTreeMap::new();
    for row in rows {
        let id = row["checkout_id"]
            .as_str()
            .expect("checkout_id")
            .to_string();
        assert!(got.insert(id.clone(), row).is_none(), "two rows for {id}");
    }
    assert_eq!(got, expected);
    assert_eq!(summary["rows"].as_u64(), Some(expected.len() as u64));
    assert_eq!(summary["late_clicks"].as_u64(), Some(0));
    assert_eq!(summary["bad"].as_u64(), Some(stats.malformed));
    for key in [
        "events_read",
        "clicks",
        "checkouts",
        "rows",
        "attributed",
        "bad",
    ] {
        assert_eq!(summary[key], summary_single[key], "{key}");
    }
    for d in lines(&dir.path().join("p4t2-dead.ndjson")) {
        let needle = format!("{}:{}:", d["file"].as_str().unwrap_or("?"), d["line"]);
        assert!(stderr.contains(&needle), "{needle} not reported on stderr");
    }
}
