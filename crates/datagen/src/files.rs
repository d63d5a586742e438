//! Writing a generated data set as the three NDJSON files a replay reads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use firstclick_model::EventKind;

use crate::generator::{Generator, GeneratorStats};

/// Why writing the files failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file could not be created or written.
    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The paths of a written data set.
#[derive(Clone, Debug)]
pub struct DataSetPaths {
    /// `users.ndjson`
    pub users: PathBuf,
    /// `clicks.ndjson`
    pub clicks: PathBuf,
    /// `checkouts.ndjson`
    pub checkouts: PathBuf,
}

impl DataSetPaths {
    /// The three files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        DataSetPaths {
            users: dir.join("users.ndjson"),
            clicks: dir.join("clicks.ndjson"),
            checkouts: dir.join("checkouts.ndjson"),
        }
    }
}

struct Out {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Out {
    fn create(path: &Path) -> Result<Self, FilesError> {
        let f = File::create(path).map_err(|source| FilesError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Out {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
        })
    }

    fn line(&mut self, text: &str) -> Result<(), FilesError> {
        self.w
            .write_all(text.as_bytes())
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(|source| FilesError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(mut self) -> Result<(), FilesError> {
        self.w.flush().map_err(|source| FilesError::Io {
            path: self.path,
            source,
        })
    }
}

/// Writes users, clicks and checkouts of `generator` (which must be bounded) into `paths`,
/// calling `progress` with the number of clicks written so far every 10,000 events.
pub fn write_data_set(
    mut generator: Generator,
    paths: &DataSetPaths,
    mut progress: impl FnMut(u64),
) -> Result<GeneratorStats, FilesError> {
    let mut users = Out::create(&paths.users)?;
    for u in generator.users() {
        let line = serde_json::to_string(&u.record()).unwrap_or_default();
        users.line(&line)?;
    }
    users.finish()?;
    let mut clicks = Out::create(&paths.clicks)?;
    let mut checkouts = Out::create(&paths.checkouts)?;
    let mut n = 0u64;
    while let Some(e) = generator.next() {
        match e.kind {
            EventKind::Click => clicks.line(&e.line)?,
            EventKind::Checkout => checkouts.line(&e.line)?,
        }
        n += 1;
        if n.is_multiple_of(10_000) {
            progress(generator.stats().clicks);
        }
    }
    clicks.finish()?;
    checkouts.finish()?;
    Ok(generator.stats())
}
