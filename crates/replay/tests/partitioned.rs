//! The partitioned replay (`Parallelism`): for a generated data set with disorder beyond the
//! watermark delay (late clicks), duplicates, stale clicks, organic checkouts, unknown users,
//! malformed lines and three models,
//! - the outputs (rows, touches, late clicks, dead letters) are byte-identical for 1, 2 and 3
//!   threads at P = 8, and so is the summary;
//! - at P = 1 they are those of the single-engine replay (whatever the threads);
//! - at P = 8 they are the union of independent P = 1 replays of each partition's lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firstclick_datagen::{write_data_set, DataSetPaths, Generator, GeneratorConfig};
use firstclick_engine::EngineConfig;
use firstclick_model::{parse_checkout, parse_click, AttributionModel, EventTime, ModelSet};
use firstclick_replay::{replay, Parallelism, ReplayOptions, Summary};

struct Outputs {
    rows: String,
    touches: String,
    late: String,
    dead: String,
    summary: Summary,
}

fn data_set(dir: &Path) -> DataSetPaths {
    let config = GeneratorConfig {
        clicks: Some(20_000),
        seed: 11,
        users: 300,
        // Twice the watermark delay: some clicks arrive behind the watermark.
        disorder_secs: 30.0,
        duplicate_rate: 0.03,
        stale_click_rate: 0.03,
        organic_rate: 0.05,
        unknown_user_rate: 0.03,
        malformed_rate: 0.01,
        event_rate: 5.0,
        ..GeneratorConfig::default()
    };
    let paths = DataSetPaths::in_dir(dir);
    write_data_set(Generator::new(config), &paths, |_| {}).expect("data set written");
    paths
}

fn engine() -> EngineConfig {
    EngineConfig {
        models: ModelSet::of(&[
            AttributionModel::FirstClick,
            AttributionModel::LastClick,
            AttributionModel::Linear,
        ]),
        ..EngineConfig::default()
    }
}

fn run(
    clicks: &Path,
    checkouts: &Path,
    users: &Path,
    out_dir: &Path,
    parallelism: Parallelism,
) -> Outputs {
    std::fs::create_dir_all(out_dir).expect("output dir");
    let file = |name: &str| out_dir.join(name);
    let opts = ReplayOptions {
        clicks: clicks.to_path_buf(),
        checkouts: checkouts.to_path_buf(),
        users: Some(users.to_path_buf()),
        out: file("rows.ndjson"),
        late: Some(file("late.ndjson")),
        touches: Some(file("touches.ndjson")),
        dead_letter: Some(file("dead.ndjson")),
        engine: engine(),
        progress: false,
        parallelism,
        max_bad_share: 1.0,
    };
    let mut summary = replay(&opts).expect("replay");
    summary.elapsed = Duration::ZERO;
    let read = |name: &str| std::fs::read_to_string(file(name)).expect("output");
    Outputs {
        rows: read("rows.ndjson"),
        touches: read("touches.ndjson"),
        late: read("late.ndjson"),
        dead: read("dead.ndjson"),
        summary,
    }
}

fn par(partitions: u32, threads: usize) -> Parallelism {
    Parallelism {
        partitions,
        threads,
        processed_at: Some(EventTime::from_micros(1_800_000_000_000_000)),
    }
}

/// Every `"processed_at":"..."` value replaced by the same text.
fn normalized(text: &str) -> String {
    const KEY: &str = "\"processed_at\":\"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push('T');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = normalized(text).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn outputs_are_the_same_for_every_thread_count_and_p1_is_the_single_engine_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = data_set(dir.path());
    let go = |name: &str, p: Parallelism| {
        run(&d.clicks, &d.checkouts, &d.users, &dir.path().join(name), p)
    };

    let one = go("p8-t1", par(8, 1));
    assert!(one.summary.rows > 10_000, "{:?}", one.summary);
    assert!(
        one.summary.late_clicks > 0,
        "no late clicks: {:?}",
        one.summary
    );
    assert!(one.summary.bad > 0 && one.summary.touches > 0 && one.summary.unattributed > 0);
    assert!(one.summary.duplicate_clicks > 0 && one.summary.duplicate_checkouts > 0);
    assert!(!one.late.is_empty() && !one.dead.is_empty());
    for threads in [2, 3] {
        let other = go(&format!("p8-t{threads}"), par(8, threads));
        assert!(one.rows == other.rows, "rows differ with {threads} threads");
        assert!(
            one.touches == other.touches,
            "touches differ with {threads} threads"
        );
        assert!(
            one.late == other.late,
            "late clicks differ with {threads} threads"
        );
        assert!(
            one.dead == other.dead,
            "dead letters differ with {threads} threads"
        );
        assert_eq!(one.summary, other.summary);
    }

    // P = 1: the single-engine replay (its processed_at is the clock's, so compared without).
    let single = go("single", Parallelism::default());
    for (name, p) in [
        ("p1-t1", par(1, 1)),
        ("p1-t2", par(1, 2)),
        ("p1-t3", par(1, 3)),
    ] {
        let got = go(name, p);
        assert!(
            normalized(&single.rows) == normalized(&got.rows),
            "{name}: rows differ"
        );
        assert!(
            normalized(&single.touches) == normalized(&got.touches),
            "{name}: touches differ"
        );
        assert!(single.late == got.late, "{name}: late clicks differ");
        assert!(single.dead == got.dead, "{name}: dead letters differ");
        assert_eq!(single.summary, got.summary, "{name}");
    }
    // Bad lines belong to no partition: reported in the same order whatever P.
    assert!(single.dead == one.dead, "dead letters depend on P");
    assert_eq!(single.summary.bad, one.summary.bad);
    assert_eq!(single.summary.events_read, one.summary.events_read);
}

/// The lines of `path` whose user is in `partition` of `p` (bad lines dropped).
fn filter(path: &Path, out: &Path, click: bool, partition: u32, p: u32) -> PathBuf {
    let text = std::fs::read(path).expect("input");
    let mut kept = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let user = if click {
            parse_click(line).map(|c| c.user_id)
        } else {
            parse_checkout(line).map(|c| c.user_id)
        };
        if let Ok(u) = user {
            if firstclick_partition::partition_of(u, p) == partition {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
    }
    std::fs::write(out, kept).expect("filtered input");
    out.to_path_buf()
}

#[test]
fn each_partition_is_an_independent_replay_of_its_own_lines() {
    const P: u32 = 8;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = data_set(dir.path());
    let all = run(
        &d.clicks,
        &d.checkouts,
        &d.users,
        &dir.path().join("p8"),
        par(P, 2),
    );
    let mut rows = Vec::new();
    let mut touches = Vec::new();
    let mut late = Vec::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for part in 0..P {
        let pd = dir.path().join(format!("part{part}"));
        std::fs::create_dir_all(&pd).expect("dir");
        let clicks = filter(&d.clicks, &pd.join("clicks.ndjson"), true, part, P);
        let checkouts = filter(&d.checkouts, &pd.join("checkouts.ndjson"), false, part, P);
        let one = run(
            &clicks,
            &checkouts,
            &d.users,
            &pd.join("out"),
            Parallelism::default(),
        );
        assert!(one.dead.is_empty());
        rows.extend(sorted_lines(&one.rows));
        touches.extend(sorted_lines(&one.touches));
        late.extend(sorted_lines(&one.late));
        let s = &one.summary;
        for (k, v) in [
            ("rows", s.rows),
            ("attributed", s.attributed),
            ("late_clicks", s.late_clicks),
            ("peak_live_clicks", s.peak_live_clicks),
            ("unknown_users", s.unknown_users),
            ("events_read", s.events_read),
        ] {
            *counts.entry(k).or_default() += v;
        }
    }
    rows.sort();
    touches.sort();
    late.sort();
    assert!(
        rows == sorted_lines(&all.rows),
        "rows differ from the partitions' replays"
    );
    assert!(touches == sorted_lines(&all.touches), "touches differ");
    assert!(late == sorted_lines(&all.late), "late clicks differ");
    assert!(!late.is_empty());
    let s = &all.summary;
    assert_eq!(counts["rows"], s.rows);
    assert_eq!(counts["attributed"], s.attributed);
    assert_eq!(counts["late_clicks"], s.late_clicks);
    assert_eq!(counts["peak_live_clicks"], s.peak_live_clicks);
    assert_eq!(counts["unknown_users"], s.unknown_users);
    assert_eq!(counts["events_read"] + s.bad, s.events_read);
}
