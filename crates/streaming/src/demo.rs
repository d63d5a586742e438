//! The embedded demo: the data generator feeds the engine directly, rows go to an NDJSON file.
//! Every message still goes through the real parser, so the demo shows bad messages, duplicates,
//! disorder and unknown users being handled as in production. The HTML report of the rows goes
//! next to them (`demo-report.html`), and so do the bad messages with their reasons
//! (`demo-dead-letter.ndjson`, what the dead-letter topic gets in production): the log shows
//! the first [`BAD_SHOWN`] and says how many more there are and where.

use anyhow::Context;
use firstclick_datagen::{Generator, GeneratorConfig};
use firstclick_model::{parse_checkout, parse_click, EventKind};
use firstclick_replay::{NdjsonWriter, Pipeline};
use firstclick_report::{RenderInfo, Report};

use crate::args::DemoArgs;

/// Bad messages logged one by one; the rest are counted in one line.
const BAD_SHOWN: u64 = 5;

/// A bad message as the demo's dead-letter file holds it.
#[derive(serde::Serialize)]
struct DeadLetter<'a> {
    /// `click` or `checkout`.
    stream: &'a str,
    /// The offending field, if one is to blame.
    field: Option<&'a str>,
    /// Why it was refused.
    reason: &'a str,
    /// The message.
    text: &'a str,
}

/// Runs the demo and prints its summary.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let engine = args.engine.config();
    let generator = Generator::new(GeneratorConfig {
        seed: args.seed,
        clicks: Some(args.clicks),
        disorder_secs: 10.0,
        duplicate_rate: 0.01,
        stale_click_rate: 0.02,
        organic_rate: 0.05,
        unknown_user_rate: 0.02,
        malformed_rate: 0.001,
        stale_after_secs: args.engine.lookback_secs,
        ..GeneratorConfig::default()
    });
    let users: firstclick_replay::UserNames = generator
        .users()
        .iter()
        .map(|u| (u.id, u.user_name.clone()))
        .collect();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    }
    let sink = NdjsonWriter::create(&args.out)?;
    let dead_path = args.out.with_file_name("demo-dead-letter.ndjson");
    let mut dead = NdjsonWriter::create(&dead_path)?;
    let mut report = Report::new();
    let mut pipeline = Pipeline::new(engine, users, sink).with_observer(&mut report);
    let mut bad_seen: u64 = 0;
    for event in generator {
        let parsed = match event.kind {
            EventKind::Click => parse_click(event.line.as_bytes()).map(|c| pipeline.click(c)),
            EventKind::Checkout => {
                parse_checkout(event.line.as_bytes()).map(|c| pipeline.checkout(c))
            }
        };
        match parsed {
            Ok(written) => written?,
            Err(bad) => {
                pipeline.bad();
                bad_seen += 1;
                if bad_seen <= BAD_SHOWN {
                    tracing::warn!(reason = %bad, "bad message (dead-lettered in production)");
                }
                dead.write(&DeadLetter {
                    stream: event.kind.as_str(),
                    field: bad.field,
                    reason: &bad.reason,
                    text: &event.line,
                })?;
            }
        }
    }
    dead.flush()?;
    if bad_seen > BAD_SHOWN {
        tracing::warn!(
            "... and {} more bad messages not shown; all {bad_seen} are in {} with their reasons",
            bad_seen - BAD_SHOWN,
            dead_path.display()
        );
    }
    let (summary, _) = pipeline.finish()?;
    println!("{summary}");
    println!("rows written to {}", args.out.display());
    println!(
        "bad messages ({bad_seen}) written to {}",
        dead_path.display()
    );
    let report_path = args.out.with_file_name("demo-report.html");
    let info = RenderInfo {
        title: "firstclick demo report".into(),
        facts: crate::report_file::run_facts(&summary, &engine),
    };
    let w = crate::report_file::write_report(&report_path, &report, &info)?;
    println!(
        "report written to {} ({} bytes); open it in a browser",
        report_path.display(),
        w.bytes
    );
    Ok(())
}
