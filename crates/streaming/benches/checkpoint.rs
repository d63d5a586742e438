//! The checkpoint benchmark (issue 8; numbers in BENCHMARKS.md): the delivery core and its
//! Redis commands, as the worker runs them, at a steady click rate over a large live state.
//!
//! ```text
//! redis-server --port 6390 --save "" --appendonly no --daemonize yes
//! REDIS_URL=redis://127.0.0.1:6390 cargo bench -p firstclick-streaming --bench checkpoint -- \
//!     --live 1000000,5000000,10000000 --rate 2000
//! ```
//!
//! For each live-state size N: N clicks are taken in (the warm-up, as a backlog), then the
//! stream goes on at `--rate` clicks per second of event time (and a checkout per three clicks)
//! with a tick every 200 ms of event time, as the worker ticks. The first ticks compact the
//! warm-up's changelog into a first base while events flow. From that base's commit to the
//! moment the next base is complete is one whole cycle of a long-running worker (changelog
//! deltas, then a base written piece by piece): Redis's own `total_net_input_bytes` over it
//! gives the bytes per second that really reach Redis. Then, right after a checkpoint and with
//! the second base not yet switched in (the largest restore: a base and a whole changelog),
//! the core is dropped without a shutdown, as SIGKILL leaves it, and the state restored from
//! Redis, timed and compared with the live one. Printed per size: changelog bytes per second
//! and per click, Redis input per second and per click over the cycle, the longest steps of
//! the event loop (a core call plus the inline changelog append, which is all the loop waits
//! for) as p99 and max, restore time, and the process's peak RSS (VmHWM). With
//! `--verify-rows`, the restarted process also replays the same events through a core that
//! never crashed and requires the same state and, once a click far ahead makes every pending
//! checkout final, the same rows (this holds two engines at once: use it up to a few million).

use std::sync::Arc;
use std::time::Instant;

use firstclick_delivery::{Command, Delivery, DeliveryConfig, Durable};
use firstclick_engine::{Engine, EngineConfig};
use firstclick_model::{Checkout, Click, DetailTexts, EventTime, Id};
use firstclick_redis::{CheckpointStore, RedisArgs};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn id(&mut self) -> Id {
        Id::Uuid([self.next(), self.next()])
    }
}

struct Stream {
    rng: Rng,
    /// Event time, µs.
    t: f64,
    step: f64,
    n: u64,
}

enum Event {
    Click(Click),
    Checkout(Checkout),
}

impl Stream {
    fn next(&mut self) -> Event {
        self.n += 1;
        let user = (self.rng.next() % 100_000) as i64;
        if self.n.is_multiple_of(4) {
            let time = EventTime::from_micros(self.t as i64 - 2_000_000);
            return Event::Checkout(Checkout {
                checkout_id: self.rng.id(),
                user_id: user,
                product_id: self.rng.id(),
                time,
                total_amount: Some((self.rng.next() % 50_000) as f64 / 100.0),
                details: DetailTexts {
                    payment_method: Some("credit_card"),
                    shipping_address: Some("742 Evergreen Terrace, Springfield"),
                    billing_address: Some("742 Evergreen Terrace, Springfield"),
                    user_agent: Some(
                        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0",
                    ),
                    ip_address: Some("203.0.113.17"),
                }
                .into(),
            });
        }
        self.t += self.step;
        let jitter = (self.rng.next() % 4_000_000) as i64;
        Event::Click(Click {
            click_id: self.rng.id(),
            user_id: user,
            product_id: self.rng.id(),
            time: EventTime::from_micros(self.t as i64 - jitter),
        })
    }
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn redis_input_bytes(url: &str) -> u64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

type Core = Delivery<(), ()>;

/// Durations of the event loop's steps, µs, in a fixed histogram (1 µs buckets up to 1 s), so
/// that measuring does not grow the process by millions of samples.
struct Steps {
    counts: Vec<u32>,
    n: u64,
    max: u64,
}

impl Default for Steps {
    fn default() -> Self {
        Steps {
            counts: vec![0; 1_000_000],
            n: 0,
            max: 0,
        }
    }
}

impl Steps {
    fn push(&mut self, micros: u64) {
        let i = (micros as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(micros);
    }

    fn percentile(&self, p: f64) -> u64 {
        let want = (self.n as f64 * p).ceil() as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= want {
                return i as u64;
            }
        }
        self.max
    }
}

/// What the driver measured.
#[derive(Default)]
struct Driver {
    steps: Steps,
    log_bytes: u64,
    base_bytes: u64,
    base_lane: Vec<Command<(), ()>>,
    /// Bases committed.
    committed: u64,
    /// The second base is complete and its commit held back (the worst moment to crash).
    held_commit: bool,
}

impl Driver {
    /// Runs the core's commands as the worker does: appends inline, base pieces queued.
    async fn run(&mut self, core: &mut Core, store: &CheckpointStore) {
        while let Some(cmd) = core.poll() {
            match cmd {
                Command::WriteRows { batch, .. } => core.rows_written(batch),
                Command::PrepareRows { epoch } => core.rows_prepared(epoch, None),
                Command::CommitRows { .. } => core.rows_committed(),
                Command::AppendLog {
                    first_seq,
                    elements,
                } => {
                    self.log_bytes += elements.iter().map(|e| e.len() as u64).sum::<u64>();
                    store.append_log(&elements).await.expect("append");
                    core.log_appended(first_seq);
                }
                Command::Ack(_) | Command::PublishLate { .. } => {}
                base => self.base_lane.push(base),
            }
        }
    }

    /// The background writer's share: one base command per call.
    async fn base_step(&mut self, core: &mut Core, store: &CheckpointStore) {
        if self.base_lane.is_empty() {
            return;
        }
        match self.base_lane.remove(0) {
            Command::StartBase { generation } => store.drop_base(generation).await.expect("del"),
            Command::WriteBasePiece { generation, piece } => {
                self.base_bytes += piece.len() as u64;
                store.append_base(generation, &piece).await.expect("piece");
                core.piece_written(generation);
            }
            Command::CommitBase { generation, .. } if self.committed >= 1 => {
                self.held_commit = true;
                let _ = generation;
            }
            Command::CommitBase {
                generation,
                base_from_seq,
                pieces,
                bytes,
            } => {
                store
                    .commit_base(generation, base_from_seq, pieces, bytes, 0)
                    .await
                    .expect("commit");
                core.base_committed(generation);
                self.committed += 1;
            }
            Command::DropBase { generation } => store.drop_base(generation).await.expect("drop"),
            _ => {}
        }
    }
}

async fn one(url: &str, live: u64, rate: u64, verify: bool) {
    let args = RedisArgs {
        redis_url: url.to_string(),
        ..RedisArgs::default()
    };
    let name = format!("bench:{live}:{rate}");
    let store = Arc::new(CheckpointStore::new(&args, name.clone()).expect("store"));
    store.reset().await.expect("reset");
    store.init().await.expect("init");
    // N clicks live at `rate`: the lookback spans N / rate seconds.
    let lookback_micros = (live as f64 / rate as f64 * 1e6) as i64;
    let config = EngineConfig {
        lookback_micros,
        ..EngineConfig::default()
    };
    let mut core: Core = Delivery::new(
        Engine::new(config),
        Durable {
            clean_shutdown: true,
            ..Durable::default()
        },
        DeliveryConfig::default(),
        0,
    );
    let mut stream = Stream {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        t: 1.7e15,
        step: 1e6 / rate as f64,
        n: 0,
    };
    let mut driver = Driver::default();
    let warm = Instant::now();
    while core.engine().live_clicks() < live as usize {
        match stream.next() {
            Event::Click(c) => {
                core.on_click(0, c, (), ());
            }
            Event::Checkout(c) => {
                core.on_checkout(c, ());
            }
        }
        driver.run(&mut core, &store).await;
    }
    let warm_secs = warm.elapsed().as_secs_f64();
    eprintln!(
        "after the warm-up: RSS {:.0} MB, peak {:.0} MB",
        rss_mb(),
        peak_rss_mb()
    );
    // Steady: ticks every 200 ms of event time; compaction of the warm-up's state first.
    let per_tick = (rate as f64 * 0.2 * 4.0 / 3.0).max(1.0) as u64;
    let mut sim = 0i64;
    let mut ticks = 0u64;
    let mut events = 0u64;
    let compaction = Instant::now();
    let mut compaction_secs = 0.0;
    // From the first base's commit to the moment the second base is complete: one whole cycle
    // of changelog and compaction, as a long-running worker repeats it.
    let mut cycle: Option<(u64, u64, i64, u64)> = None;
    while !driver.held_commit {
        for _ in 0..per_tick {
            let step = Instant::now();
            match stream.next() {
                Event::Click(c) => {
                    core.on_click(0, c, (), ());
                }
                Event::Checkout(c) => {
                    core.on_checkout(c, ());
                }
            }
            driver.run(&mut core, &store).await;
            driver.steps.push(step.elapsed().as_micros() as u64);
            events += 1;
        }
        sim += 200_000;
        ticks += 1;
        let step = Instant::now();
        core.tick(sim, sim);
        driver.run(&mut core, &store).await;
        driver.steps.push(step.elapsed().as_micros() as u64);
        // The background writer keeps up with the pieces (a few per tick).
        for _ in 0..4 {
            driver.base_step(&mut core, &store).await;
        }
        driver.run(&mut core, &store).await;
        if driver.committed == 1 && cycle.is_none() {
            eprintln!(
                "first base committed: RSS {:.0} MB, peak {:.0} MB",
                rss_mb(),
                peak_rss_mb()
            );
            compaction_secs = compaction.elapsed().as_secs_f64();
            cycle = Some((
                redis_input_bytes(url).await,
                driver.log_bytes,
                sim,
                stream.n,
            ));
            // The loop's steps are measured over the cycle only.
            driver.steps = Steps::default();
        }
        assert!(ticks < 100_000_000, "the second compaction never completed");
    }
    let (redis_before, log_before, sim_from, n_from) = cycle.unwrap_or_default();
    let redis_bytes = redis_input_bytes(url).await - redis_before;
    let log_bytes = driver.log_bytes - log_before;
    let secs = (sim - sim_from) as f64 / 1e6;
    let clicks = (stream.n - n_from) * 3 / 4;
    let base_bytes = core.base_bytes();
    let steps = std::mem::take(&mut driver.steps);
    // The kill comes right after a checkpoint, so the restore can be checked against the
    // live state (a kill at any other moment loses only what Pub/Sub redelivers); the second
    // base is not switched in yet: the restore reads the first base and the whole changelog.
    core.tick(sim + 5_000_000, sim + 5_000_000);
    driver.run(&mut core, &store).await;
    let live_at_crash = core.engine().live_clicks();
    let pending_at_crash = core.engine().pending_checkouts();
    let watermark_at_crash = core.engine().watermark();
    assert_eq!(core.unacked(), 0, "everything durable before the kill");
    let rss_before_restore = peak_rss_mb();
    eprintln!(
        "at the kill: RSS {:.0} MB, peak {rss_before_restore:.0} MB",
        rss_mb()
    );
    eprintln!(
        "at the kill: {live_at_crash} live clicks ({:.0} MB of click store), {} remembered checkout ids, {pending_at_crash} pending",
        core.engine().click_state_bytes() as f64 / 1e6,
        core.engine().remembered_checkouts()
    );
    // SIGKILL: the process is gone without a shutdown; a new process restores from Redis.
    drop(core);
    drop(driver);
    let exe = std::env::current_exe().expect("own path");
    let mut restart = std::process::Command::new(exe);
    restart.args([
        "--restore",
        &name,
        "--lookback-micros",
        &lookback_micros.to_string(),
    ]);
    if verify {
        restart.args(["--verify", &format!("{live},{rate},{ticks}")]);
    }
    let out = restart
        .env("REDIS_URL", url)
        .output()
        .expect("restore process");
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "restore failed: {answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| -> String {
        answer
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        field("live="),
        live_at_crash.to_string(),
        "live clicks restored"
    );
    assert_eq!(
        field("pending="),
        pending_at_crash.to_string(),
        "pending restored"
    );
    assert_eq!(
        field("watermark="),
        format!("{:?}", watermark_at_crash.map(|w| w.as_micros())),
        "watermark restored"
    );
    let restore_secs: f64 = field("secs=").parse().unwrap_or(0.0);
    let restore_rss = field("rss_mb=");
    let elements = field("elements=");
    let restore_mb = field("mb=");
    let verified = if verify {
        let v = field("verified=");
        assert!(!v.is_empty(), "the restore was not verified: {answer}");
        format!(" | {}", v.replace('_', " "))
    } else {
        String::new()
    };
    let log_rate = log_bytes as f64 / secs;
    println!(
        "live {live:>9} | rate {rate}/s | warm-up {warm_secs:.1} s, first base {:.0} MB in \
         {compaction_secs:.1} s wall | one cycle: {secs:.0} s of event time, {clicks} clicks, \
         changelog {:.1} KB/s = {:.0} B/click; Redis input with the next base {:.1} KB/s = \
         {:.0} B/click | loop step p99 {:.2} ms, max {:.1} ms | restore before the second \
         commit {restore_secs:.2} s in a new process ({elements} elements, {restore_mb} MB, \
         peak RSS {restore_rss} MB) | peak RSS {rss_before_restore:.0} MB | {events} events, \
         {ticks} ticks{verified}",
        base_bytes as f64 / 1e6,
        log_rate / 1e3,
        log_bytes as f64 / clicks.max(1) as f64,
        redis_bytes as f64 / secs / 1e3,
        redis_bytes as f64 / clicks.max(1) as f64,
        steps.percentile(0.99) as f64 / 1e3,
        steps.max as f64 / 1e3,
    );
    if std::env::var_os("BENCH_KEEP").is_none() {
        store.reset().await.expect("reset");
    }
}

/// The same events and ticks as `one` gave its core, through a core whose every write succeeds
/// at once and that never crashes: the replay the restored state must equal.
fn reference(live: u64, rate: u64, ticks: u64, config: EngineConfig) -> Core {
    let mut core: Core = Delivery::new(
        Engine::new(config),
        Durable {
            clean_shutdown: true,
            ..Durable::default()
        },
        DeliveryConfig::default(),
        0,
    );
    let answer = |core: &mut Core| {
        while let Some(cmd) = core.poll() {
            match cmd {
                Command::WriteRows { batch, .. } => core.rows_written(batch),
                Command::PrepareRows { epoch } => core.rows_prepared(epoch, None),
                Command::CommitRows { .. } => core.rows_committed(),
                Command::AppendLog { first_seq, .. } => core.log_appended(first_seq),
                Command::WriteBasePiece { generation, .. } => core.piece_written(generation),
                Command::CommitBase { generation, .. } => core.base_committed(generation),
                _ => {}
            }
        }
    };
    let mut stream = Stream {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        t: 1.7e15,
        step: 1e6 / rate as f64,
        n: 0,
    };
    let feed = |core: &mut Core, stream: &mut Stream| match stream.next() {
        Event::Click(c) => {
            core.on_click(0, c, (), ());
        }
        Event::Checkout(c) => {
            core.on_checkout(c, ());
        }
    };
    while core.engine().live_clicks() < live as usize {
        feed(&mut core, &mut stream);
        answer(&mut core);
    }
    let per_tick = (rate as f64 * 0.2 * 4.0 / 3.0).max(1.0) as u64;
    let mut sim = 0;
    for _ in 0..ticks {
        for _ in 0..per_tick {
            feed(&mut core, &mut stream);
            answer(&mut core);
        }
        sim += 200_000;
        core.tick(sim, sim);
        answer(&mut core);
    }
    core.tick(sim + 5_000_000, sim + 5_000_000);
    answer(&mut core);
    core
}

/// The rows both engines give once a click far ahead makes every pending checkout final.
fn final_rows(engine: &mut Engine) -> Vec<(String, Option<String>)> {
    let end = engine.max_click_time().map_or(0, |t| t.as_micros()) + 86_400_000_000;
    engine.on_click(Click {
        click_id: Id::Text("end".into()),
        user_id: -1,
        product_id: Id::Text("end".into()),
        time: EventTime::from_micros(end),
    });
    let mut out = Vec::new();
    engine.drain_final(&mut out);
    engine.flush(&mut out);
    let mut rows: Vec<(String, Option<String>)> = out
        .into_iter()
        .map(|f| {
            (
                f.checkout.checkout_id.to_string(),
                f.click().map(|c| c.click_id.to_string()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The restarted process: loads the checkpoint and prints what it found; with `verify`, also
/// compares the state with the reference replay and the rows both give from there on.
async fn restore(url: &str, name: &str, lookback_micros: i64, verify: Option<(u64, u64, u64)>) {
    let args = RedisArgs {
        redis_url: url.to_string(),
        ..RedisArgs::default()
    };
    let store = CheckpointStore::new(&args, name).expect("store");
    let config = EngineConfig {
        lookback_micros,
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let loaded =
        firstclick_streaming::load_checkpoint(&store, config, None, &CancellationToken::new())
            .await
            .expect("restore");
    println!(
        "secs={:.2} live={} pending={} watermark={:?} elements={} mb={:.0} rss_mb={:.0}",
        started.elapsed().as_secs_f64(),
        loaded.engine.live_clicks(),
        loaded.engine.pending_checkouts(),
        loaded.engine.watermark().map(|w| w.as_micros()),
        loaded.elements,
        loaded.bytes as f64 / 1e6,
        peak_rss_mb()
    );
    if let Some((live, rate, ticks)) = verify {
        let reference = reference(live, rate, ticks, config);
        let mut want = reference.engine().clone();
        drop(reference);
        let mut got = loaded.engine;
        let freed = |e: &Engine| {
            let mut s = e.snapshot();
            s.stats.evicted_clicks = 0;
            s
        };
        assert!(
            freed(&got) == freed(&want),
            "the restored state differs from the replay"
        );
        let (got_rows, want_rows) = (final_rows(&mut got), final_rows(&mut want));
        assert_eq!(
            got_rows, want_rows,
            "rows after the restore differ from the replay"
        );
        println!(
            "verified=state_and_{}_rows_equal_the_replay",
            got_rows.len()
        );
    }
}

fn main() {
    let mut live = vec![1_000_000u64];
    let mut restore_name: Option<String> = None;
    let mut lookback = 0i64;
    let mut verify: Option<(u64, u64, u64)> = None;
    let mut verify_rows = false;
    let mut rate = 2000u64;

    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--live" => {
                live = args
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or(live)
            }
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).unwrap_or(rate),
            "--restore" => restore_name = args.next(),
            "--verify-rows" => verify_rows = true,
            "--verify" => {
                verify = args.next().and_then(|v| {
                    let n: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
                    (n.len() == 3).then(|| (n[0], n[1], n[2]))
                })
            }
            "--lookback-micros" => lookback = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(name) = restore_name {
        runtime.block_on(restore(&url, &name, lookback, verify));
        return;
    }
    for n in live {
        runtime.block_on(one(&url, n, rate, verify_rows));
    }
}
