//! The whole file replay, wired together: two parsed files, merged, through the pipeline, to an
//! NDJSON file, with bad lines reported on stderr (and optionally to a dead-letter file), a
//! progress bar on a terminal and the summary at the end.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use firstclick_engine::EngineConfig;
use firstclick_model::EventKind;

use crate::merge::Merge;
use crate::observer::{NoObserver, RowObserver};
use crate::partitioned::Parallelism;
use crate::pipeline::Pipeline;
use crate::sink::{BackgroundWriter, DeadLetterRecord, FileSinkError, NdjsonWriter};
use crate::source::{FileSource, Item, SourceError};
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
    /// Partitions and threads ([`Parallelism::default`]: one partition, one thread, the
    /// replay of this module; anything else runs `crate::partitioned`).
    pub parallelism: Parallelism,
}

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
    if opts.parallelism != Parallelism::default() {
        return crate::partitioned::replay_partitioned(opts, observer);
    }
    let users: UserNames = match &opts.users {
        Some(p) => load_users(p)?,
        None => UserNames::new(),
    };
    let clicks = FileSource::open(&opts.clicks, EventKind::Click)?;
    let checkouts = FileSource::open(&opts.checkouts, EventKind::Checkout)?;
    let rows = BackgroundWriter::spawn(NdjsonWriter::create(&opts.out)?)?;
    let mut pipeline = Pipeline::new(opts.engine, users, rows).with_observer(observer);
    if let Some(late) = &opts.late {
        pipeline = pipeline.with_late_output(NdjsonWriter::create(late)?);
    }
    if let Some(touches) = &opts.touches {
        pipeline = pipeline.with_touches_output(NdjsonWriter::create(touches)?);
    }
    let mut dead = match &opts.dead_letter {
        Some(p) => Some(NdjsonWriter::create(p)?),
        None => None,
    };
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
    Ok(summary)
}

fn display(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
