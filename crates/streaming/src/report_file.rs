//! The HTML report of `streaming replay --report FILE` and of the demo
//! (`out/demo-report.html`): a [`Report`] observes the pipeline's rows and touches, and at the
//! end its page is written to a temporary file in the target's directory and renamed into
//! place, so a reader (a browser, a CI artefact upload) never sees half a report, and a failed
//! run leaves the previous one as it was.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use firstclick_engine::EngineConfig;
use firstclick_replay::{replay, replay_staged, ReplayOptions, Summary};
use firstclick_report::{RenderInfo, Report};

/// What writing a report took.
pub(crate) struct Written {
    pub(crate) bytes: usize,
    pub(crate) render: Duration,
}

/// [`replay`], and with `report` set the HTML report of its rows written there (announced on
/// stderr: stdout carries the summary, possibly as JSON). The replay's outputs are renamed
/// into place after the report is written: a failed report leaves them as they were too.
pub(crate) fn replay_with_report(
    opts: &ReplayOptions,
    report: Option<&Path>,
) -> anyhow::Result<Summary> {
    let Some(path) = report else {
        return replay(opts).context("replay failed");
    };
    let mut aggregates = Report::new();
    let (summary, outputs) = replay_staged(opts, &mut aggregates).context("replay failed")?;
    let mut facts = vec![
        ("clicks file".to_string(), opts.clicks.display().to_string()),
        (
            "checkouts file".to_string(),
            opts.checkouts.display().to_string(),
        ),
    ];
    facts.extend(run_facts(&summary, &opts.engine));
    let info = RenderInfo {
        title: "firstclick replay report".into(),
        facts,
    };
    let w = write_report(path, &aggregates, &info)?;
    outputs.commit().context("replay failed")?;
    eprintln!(
        "report written to {} ({} bytes, rendered in {:.1} ms)",
        path.display(),
        w.bytes,
        w.render.as_secs_f64() * 1e3
    );
    Ok(summary)
}

/// The facts of a run shown at the top of a report.
pub(crate) fn run_facts(summary: &Summary, engine: &EngineConfig) -> Vec<(String, String)> {
    let duplicates = summary.duplicate_clicks + summary.duplicate_checkouts;
    [
        (
            "generated",
            firstclick_model::time::wall_clock().to_rfc3339(),
        ),
        ("events read", summary.events_read.to_string()),
        ("clicks", summary.clicks.to_string()),
        ("checkouts", summary.checkouts.to_string()),
        ("rows written", summary.rows.to_string()),
        ("touch rows", summary.touches.to_string()),
        ("late clicks", summary.late_clicks.to_string()),
        ("bad lines", summary.bad.to_string()),
        ("duplicates ignored", duplicates.to_string()),
        ("unknown users", summary.unknown_users.to_string()),
        (
            "lookback",
            format!("{} s", engine.lookback_micros / 1_000_000),
        ),
        ("elapsed", format!("{:.3} s", summary.elapsed.as_secs_f64())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Renders `report` and writes it to `path` through a temporary file renamed into place.
pub(crate) fn write_report(
    path: &Path,
    report: &Report,
    info: &RenderInfo,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let html = report.render(info);
    let render = started.elapsed();
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("the report path {} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(html.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "cannot write the report to {} (through {}); check that the directory exists \
                 and is writable",
                path.display(),
                tmp.display()
            )
        });
    }
    Ok(Written {
        bytes: html.len(),
        render,
    })
}
