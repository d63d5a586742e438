//! The whole file replay, wired together: two parsed files, merged, through the pipeline, to an
//! NDJSON file, with bad lines reported on stderr (and optionally to a dead-letter file), a
//! progress bar on a terminal and the summary at the end.
//!
//! The inputs are opened before any output, and the outputs are written through
//! [`StagedOutputs`]: they replace existing files only when the whole replay succeeded. An
//! input with more than [`ReplayOptions::max_bad_share`] bad lines fails the replay
//! ([`ReplayError::TooManyBadLines`]): a file that is almost all bad is the wrong file, and
//! its replay would be a table of organic checkouts that looks plausible.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use firstclick_engine::EngineConfig;
use firstclick_model::EventKind;

use crate::merge::Merge;
use crate::observer::{NoObserver, RowObserver};
use crate::partitioned::Parallelism;
use crate::pipeline::Pipeline;
use crate::sink::{BackgroundWriter, DeadLetterRecord, FileSinkError};
use crate::source::{FileSource, Item, SourceError};
use crate::staged::StagedOutputs;
use crate::summary::Summary;
use crate::users::{load_users, UserNames, UsersError};

/// What to replay and where to.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Clicks NDJSON.
    pub clicks: PathBuf,
    /// Checkouts NDJSON.
    pub checkouts: PathBuf,
    /// Users NDJSON (optional: without it every name is NULL).
    pub users: Option<PathBuf>,
    /// Output rows NDJSON (`-` for standard output).
    pub out: PathBuf,
    /// Late clicks NDJSON (optional).
    pub late: Option<PathBuf>,
    /// Touch rows of the multi-touch models, NDJSON (optional).
    pub touches: Option<PathBuf>,
    /// Refused lines NDJSON with their reasons (optional; they are always reported on stderr).
    pub dead_letter: Option<PathBuf>,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    /// The largest share (0 to 1) of bad lines an input may have before the replay fails
    /// ([`ReplayError::TooManyBadLines`]); 1 accepts anything. [`DEFAULT_MAX_BAD_SHARE`] by
    /// default.
    pub max_bad_share: f64,
    /// Partitions and threads ([`Parallelism::default`]: one partition, one thread, the
    /// replay of this module; anything else runs `crate::partitioned`).
    pub parallelism: Parallelism,
}

/// The default of [`ReplayOptions::max_bad_share`]: a file with more bad lines than good
/// ones is taken for the wrong file.
pub const DEFAULT_MAX_BAD_SHARE: f64 = 0.5;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The users file could not be loaded.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// An output could not be written.
    #[error(transparent)]
    Sink(#[from] FileSinkError),
    /// Too many lines of an input are bad: most likely the wrong file.
    #[error(
        "{percent:.1} % of the lines of {path} ({bad} of {lines}) are not valid {kind}s, more \
         than --max-bad-share {max} allows: is it the right file (not the {other} file, not a \
         binary file)? No output was written; pass --max-bad-share 1 to replay it anyway",
        percent = 100.0 * *bad as f64 / (*lines).max(1) as f64
    )]
    TooManyBadLines {
        /// The input.
        path: PathBuf,
        /// `click` or `checkout`.
        kind: &'static str,
        /// `checkouts` or `clicks`: the file it might have been mistaken for.
        other: &'static str,
        /// Bad lines.
        bad: u64,
        /// Lines read (blank lines excluded).
        lines: u64,
        /// The share allowed.
        max: f64,
    },
}

/// Runs a replay; see the module documentation.
pub fn replay(opts: &ReplayOptions) -> Result<Summary, ReplayError> {
    replay_observed(opts, NoObserver)
}

/// [`replay()`], showing every row and touch to `observer` as well (pass `&mut report`).
pub fn replay_observed<O: RowObserver>(
    opts: &ReplayOptions,
    observer: O,
) -> Result<Summary, ReplayError> {
    let (summary, outputs) = replay_staged(opts, observer)?;
    outputs.commit()?;
    Ok(summary)
}

/// [`replay_observed`] without the last step: the outputs are complete and flushed but still
/// in their temporary files; [`StagedOutputs::commit`] puts them in place (after, say, the
/// report was written), dropping them deletes them.
pub fn replay_staged<O: RowObserver>(
    opts: &ReplayOptions,
    observer: O,
) -> Result<(Summary, StagedOutputs), ReplayError> {
    if opts.parallelism != Parallelism::default() {
        let mut outputs = StagedOutputs::new();
        let (summary, counts) =
            crate::partitioned::replay_partitioned(opts, observer, &mut outputs)?;
        check_bad_shares(opts, counts)?;
        return Ok((summary, outputs));
    }
    let users: UserNames = match &opts.users {
        Some(p) => load_users(p)?,
        None => UserNames::default(),
    };
    let clicks = FileSource::open(&opts.clicks, EventKind::Click)?;
    let checkouts = FileSource::open(&opts.checkouts, EventKind::Checkout)?;
    let mut outputs = StagedOutputs::new();
    let rows = BackgroundWriter::spawn(outputs.create(&opts.out)?)?;
    let mut pipeline = Pipeline::new(opts.engine, users, rows).with_observer(observer);
    if let Some(late) = &opts.late {
        pipeline = pipeline.with_late_output(outputs.create(late)?);
    }
    if let Some(touches) = &opts.touches {
        pipeline = pipeline.with_touches_output(outputs.create(touches)?);
    }
    let mut dead = match &opts.dead_letter {
        Some(p) => Some(outputs.create(p)?),
        None => None,
    };
    // Lines and bad lines of each input (clicks, checkouts).
    let mut counts = [(0u64, 0u64); 2];
    let total = clicks.size + checkouts.size;
    let counters = [clicks.bytes_read.clone(), checkouts.bytes_read.clone()];
    let bar = (opts.progress && std::io::stderr().is_terminal() && total > 32 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let stderr = std::io::stderr();
    let mut report = std::io::BufWriter::new(stderr.lock());
    let names = [display(&opts.clicks), display(&opts.checkouts)];
    let mut n: u64 = 0;
    for (kind, item) in Merge::new(clicks.batches.clone(), checkouts.batches.clone()) {
        let side = &mut counts[usize::from(kind == EventKind::Checkout)];
        side.0 += 1;
        side.1 += u64::from(matches!(item, Item::Bad { .. }));
        match item {
            Item::Click(c) => pipeline.click(c)?,
            Item::Checkout(c) => pipeline.checkout(c)?,
            Item::Bad { line, error, text } => {
                pipeline.bad();
                let file = &names[usize::from(kind == EventKind::Checkout)];
                // A closed stderr must not stop the replay; the count is in the summary.
                let _ = writeln!(report, "{file}:{line}: {error}");
                if let Some(d) = dead.as_mut() {
                    d.write(&DeadLetterRecord {
                        stream: kind.as_str(),
                        file,
                        line,
                        field: error.field,
                        reason: &error.reason,
                        text: &text,
                    })?;
                }
            }
        }
        n += 1;
        if n.is_multiple_of(65_536) {
            if let Some(bar) = &bar {
                bar.set_position(counters.iter().map(|c| c.load(Ordering::Relaxed)).sum());
            }
        }
    }
    let _ = report.flush();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    clicks.finish()?;
    checkouts.finish()?;
    if let Some(d) = dead.as_mut() {
        d.flush()?;
    }
    let (summary, _) = pipeline.finish()?;
    check_bad_shares(opts, counts)?;
    Ok((summary, outputs))
}

/// Fails when an input's bad lines are above [`ReplayOptions::max_bad_share`]; warns on
/// stderr when they are above [`DEFAULT_MAX_BAD_SHARE`] but allowed.
fn check_bad_shares(opts: &ReplayOptions, counts: [(u64, u64); 2]) -> Result<(), ReplayError> {
    let inputs = [
        (&opts.clicks, "click", "checkouts", counts[0]),
        (&opts.checkouts, "checkout", "clicks", counts[1]),
    ];
    for (path, kind, other, (lines, bad)) in inputs {
        if lines == 0 {
            continue;
        }
        let share = bad as f64 / lines as f64;
        if share > opts.max_bad_share {
            return Err(ReplayError::TooManyBadLines {
                path: path.clone(),
                kind,
                other,
                bad,
                lines,
                max: opts.max_bad_share,
            });
        }
        if share > DEFAULT_MAX_BAD_SHARE {
            eprintln!(
                "warning: {:.1} % of the lines of {} ({bad} of {lines}) are not valid {kind}s \
                 (accepted by --max-bad-share {}): is it the right file?",
                100.0 * share,
                path.display(),
                opts.max_bad_share
            );
        }
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
