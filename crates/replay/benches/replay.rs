//! Replay benchmark: prints events/s of parsing alone and of parse + engine on one core, of the
//! engine alone, and the bytes of state per live click. Parsing is measured twice: on the
//! generator's lines, one heap string each (scattered in memory, in arrival order), and on the
//! same lines in one NDJSON buffer, as the file source reads them. Run with `cargo bench -p firstclick-replay`.
//! `BENCH_CLICKS` (default 300000) sets the data set size.
//!
//! Bytes per live click are measured with a counting allocator: everything the click store
//! allocates (table, lists, id text) divided by the clicks it holds.
//!
//! Last, the whole file replay (`firstclick_replay::replay`, files in a temporary directory,
//! rows to a file) for P = 1 and P = 8 partitions on 1 and 2 threads, and the single-engine
//! replay, each with its output compared to the one-thread run of the same P. These use the
//! bench's counting allocator (the system one), not the `streaming` binary's mimalloc: compare
//! them with each other; BENCHMARKS.md times the binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use firstclick_datagen::{Generator, GeneratorConfig};
use firstclick_engine::{Engine, EngineConfig};
use firstclick_model::{parse_checkout, parse_click, Checkout, Click, EventKind};
use firstclick_replay::CountingSink;
use firstclick_replay::Pipeline;
use firstclick_replay::{replay, Parallelism, ReplayOptions};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

enum Parsed {
    Click(Click),
    Checkout(Checkout),
}

fn main() {
    let clicks: u64 = std::env::var("BENCH_CLICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let config = GeneratorConfig {
        clicks: Some(clicks),
        users: 10_000,
        disorder_secs: 10.0,
        duplicate_rate: 0.01,
        organic_rate: 0.02,
        unknown_user_rate: 0.01,
        ..GeneratorConfig::default()
    };
    let generator = Generator::new(config.clone());
    let users: firstclick_replay::UserNames = generator
        .users()
        .iter()
        .map(|u| (u.id, u.user_name.clone()))
        .collect();
    let events: Vec<(EventKind, String)> = generator.map(|e| (e.kind, e.line)).collect();
    let bytes: usize = events.iter().map(|e| e.1.len() + 1).sum();
    println!(
        "data set: {} events ({} clicks), {:.1} MB of NDJSON, 100 clicks/s of event time",
        events.len(),
        clicks,
        bytes as f64 / 1e6
    );

    // The same lines as one NDJSON buffer, as the file source reads them (a block at a time,
    // in file order), rather than one heap string each.
    let mut ndjson: Vec<u8> = Vec::with_capacity(bytes);
    let mut spans: Vec<(EventKind, std::ops::Range<usize>)> = Vec::with_capacity(events.len());
    for (kind, line) in &events {
        let start = ndjson.len();
        ndjson.extend_from_slice(line.as_bytes());
        spans.push((*kind, start..ndjson.len()));
        ndjson.push(b'\n');
    }
    let separate: Vec<(EventKind, &[u8])> =
        events.iter().map(|(k, l)| (*k, l.as_bytes())).collect();
    let buffered: Vec<(EventKind, &[u8])> = spans
        .iter()
        .map(|(k, r)| (*k, &ndjson[r.clone()]))
        .collect();
    let layouts = [("lines apart", &separate), ("one buffer", &buffered)];

    // 0. Parsing alone (the results are dropped), one thread.
    for (layout, lines) in layouts {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let mut ok = 0usize;
            for (kind, line) in lines.iter() {
                ok += match kind {
                    EventKind::Click => parse_click(line).is_ok(),
                    EventKind::Checkout => parse_checkout(line).is_ok(),
                } as usize;
            }
            assert!(ok > 0);
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "parse alone, one core:     {:>10.0} events/s  ({:.0} MB/s of NDJSON; {layout})",
            lines.len() as f64 / best,
            bytes as f64 / best / 1e6
        );
    }

    // 1. Parse + engine + enrichment + row building, one thread.
    for (layout, lines) in layouts {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let mut p = Pipeline::new(
                EngineConfig::default(),
                users.clone(),
                CountingSink::default(),
            );
            for (kind, line) in lines.iter() {
                let r = match kind {
                    EventKind::Click => parse_click(line).map(|c| p.click(c)),
                    EventKind::Checkout => parse_checkout(line).map(|c| p.checkout(c)),
                };
                if let Ok(Err(e)) = r {
                    panic!("sink failed: {e}");
                }
            }
            let (summary, sink) = p.finish().expect("counting sink never fails");
            assert_eq!(summary.rows, sink.rows);
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "parse + engine + rows:     {:>10.0} events/s  ({:.0} MB/s of NDJSON; {layout}; \
             with name lookup and row building)",
            lines.len() as f64 / best,
            bytes as f64 / best / 1e6
        );
    }

    // 1b. Parse + engine only: final checkouts with their click, no enrichment or rows.
    for (layout, lines) in layouts {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let mut engine = Engine::new(EngineConfig::default());
            let mut out = Vec::with_capacity(1024);
            let mut rows = 0usize;
            for (kind, line) in lines.iter() {
                match kind {
                    EventKind::Click => {
                        if let Ok(c) = parse_click(line) {
                            engine.on_click(c);
                        }
                    }
                    EventKind::Checkout => {
                        if let Ok(c) = parse_checkout(line) {
                            engine.on_checkout(c);
                        }
                    }
                }
                engine.drain_final(&mut out);
                rows += out.len();
                out.clear();
            }
            engine.flush(&mut out);
            rows += out.len();
            assert!(rows > 0);
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "parse + engine, one core:  {:>10.0} events/s  ({:.0} MB/s of NDJSON; {layout})",
            lines.len() as f64 / best,
            bytes as f64 / best / 1e6
        );
    }

    // 2. The engine alone, on pre-parsed events.
    let parsed: Vec<Parsed> = events
        .iter()
        .filter_map(|(kind, line)| match kind {
            EventKind::Click => parse_click(line.as_bytes()).ok().map(Parsed::Click),
            EventKind::Checkout => parse_checkout(line.as_bytes()).ok().map(Parsed::Checkout),
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let input: Vec<Parsed> = parsed
            .iter()
            .map(|p| match p {
                Parsed::Click(c) => Parsed::Click(c.clone()),
                Parsed::Checkout(c) => Parsed::Checkout(c.clone()),
            })
            .collect();
        let start = Instant::now();
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Vec::with_capacity(1024);
        let mut rows = 0usize;
        for p in input {
            match p {
                Parsed::Click(c) => {
                    engine.on_click(c);
                }
                Parsed::Checkout(c) => {
                    engine.on_checkout(c);
                }
            }
            engine.drain_final(&mut out);
            rows += out.len();
            out.clear();
        }
        engine.flush(&mut out);
        rows += out.len();
        assert!(rows > 0);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "engine alone, one core:    {:>10.0} events/s",
        parsed.len() as f64 / best
    );

    // 3. Bytes of state per live click: only clicks, no eviction (they all fit in the window).
    let only_clicks: Vec<Click> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Click(c) => Some(c.clone()),
            Parsed::Checkout(_) => None,
        })
        .take(200_000)
        .collect();
    let mut engine = Engine::new(EngineConfig {
        lookback_micros: i64::MAX / 4,
        ..EngineConfig::default()
    });
    let before = LIVE.load(Ordering::Relaxed);
    let mut peak_per_click: f64 = 0.0;
    for (i, c) in only_clicks.iter().enumerate() {
        // Cloning a click whose ids are packed UUIDs allocates nothing.
        engine.on_click(c.clone());
        if i % 1000 == 999 {
            let per = (LIVE.load(Ordering::Relaxed) - before) as f64 / engine.live_clicks() as f64;
            peak_per_click = peak_per_click.max(per);
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    let live = engine.live_clicks();
    println!(
        "state per live click:      {:>10.1} bytes at {} clicks ({} keys), worst {:.1} bytes \
         right after a table resize; store's own count {:.1} bytes",
        (after - before) as f64 / live as f64,
        live,
        engine.clicks().keys(),
        peak_per_click,
        engine.click_state_bytes() as f64 / live as f64
    );

    file_replays(config);
}

/// The file replay, single-engine and partitioned, best of three runs each.
fn file_replays(config: GeneratorConfig) {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = firstclick_datagen::DataSetPaths::in_dir(dir.path());
    firstclick_datagen::write_data_set(Generator::new(config), &paths, |_| {})
        .expect("data set written");
    let bytes = std::fs::metadata(&paths.clicks).map_or(0, |m| m.len())
        + std::fs::metadata(&paths.checkouts).map_or(0, |m| m.len());
    let fixed = Some(firstclick_model::EventTime::from_micros(
        1_800_000_000_000_000,
    ));
    let cases = [
        ("single engine (today's replay)", Parallelism::default()),
        (
            "P = 1, 1 thread",
            Parallelism {
                partitions: 1,
                threads: 1,
                processed_at: fixed,
            },
        ),
        (
            "P = 1, 2 threads",
            Parallelism {
                partitions: 1,
                threads: 2,
                processed_at: fixed,
            },
        ),
        (
            "P = 8, 1 thread",
            Parallelism {
                partitions: 8,
                threads: 1,
                processed_at: fixed,
            },
        ),
        (
            "P = 8, 2 threads",
            Parallelism {
                partitions: 8,
                threads: 2,
                processed_at: fixed,
            },
        ),
    ];
    let mut first_of: HashMap<u32, Vec<u8>> = HashMap::new();
    for (name, parallelism) in cases {
        let out = dir.path().join("rows.ndjson");
        let mut best = f64::MAX;
        let mut events = 0;
        for _ in 0..3 {
            let opts = ReplayOptions {
                clicks: paths.clicks.clone(),
                checkouts: paths.checkouts.clone(),
                users: Some(paths.users.clone()),
                out: out.clone(),
                late: None,
                touches: None,
                dead_letter: None,
                engine: EngineConfig::default(),
                progress: false,
                max_bad_share: firstclick_replay::DEFAULT_MAX_BAD_SHARE,
                parallelism,
            };
            let start = Instant::now();
            let summary = replay(&opts).expect("replay");
            best = best.min(start.elapsed().as_secs_f64());
            events = summary.events_read;
        }
        let same = if parallelism.processed_at.is_some() {
            let rows = std::fs::read(&out).expect("rows");
            let first = first_of
                .entry(parallelism.partitions)
                .or_insert_with(|| rows.clone());
            if *first == rows {
                "same rows as 1 thread"
            } else {
                "ROWS DIFFER FROM 1 THREAD"
            }
        } else {
            ""
        };
        println!(
            "file replay, {name:<31} {best:>6.3} s  {:>10.0} events/s  ({:.0} MB/s) {same}",
            events as f64 / best,
            bytes as f64 / best / 1e6
        );
    }
}
