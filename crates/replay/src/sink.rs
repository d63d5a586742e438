//! NDJSON writers: output rows, late clicks and dead letters.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use firstclick_model::{AttributedRow, Click, TouchRow};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {cause}; check free space and permissions")]
pub struct FileSinkError {
    /// The file (or `-` for standard output).
    pub path: PathBuf,
    /// The cause (in the message already, so not a `source`: an error chain would print it
    /// twice).
    pub cause: std::io::Error,
}

/// A buffered NDJSON file (or standard output for `-`).
pub struct NdjsonWriter {
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
}

impl NdjsonWriter {
    /// Creates (truncates) `path`; `-` writes to standard output.
    pub fn create(path: &Path) -> Result<Self, FileSinkError> {
        let inner: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| FileSinkError {
                path: path.to_path_buf(),
                cause: source,
            })?)
        };
        Ok(NdjsonWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, inner),
            line: Vec::with_capacity(1024),
        })
    }

    fn err(&self, source: std::io::Error) -> FileSinkError {
        FileSinkError {
            path: self.path.clone(),
            cause: source,
        }
    }

    /// Writes one value as a line of JSON.
    pub fn write<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FileSinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value)
            .map_err(|e| self.err(std::io::Error::other(e)))?;
        self.line.push(b'\n');
        let line = std::mem::take(&mut self.line);
        let r = self.out.write_all(&line).map_err(|e| self.err(e));
        self.line = line;
        r
    }

    /// Writes one touch row as a line of JSON.
    pub fn write_touch(&mut self, touch: &TouchRow) -> Result<(), FileSinkError> {
        self.line.clear();
        touch.write_json(&mut self.line);
        self.line.push(b'\n');
        let line = std::mem::take(&mut self.line);
        let r = self.out.write_all(&line).map_err(|e| self.err(e));
        self.line = line;
        r
    }

    /// Writes lines already serialized (each ending in a newline).
    pub(crate) fn write_lines(&mut self, lines: &[u8]) -> Result<(), FileSinkError> {
        self.out.write_all(lines).map_err(|e| self.err(e))
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> Result<(), FileSinkError> {
        self.out.flush().map_err(|e| self.err(e))
    }
}

/// Where finished rows go.
pub trait RowSink {
    /// Writes one row.
    fn write_row(&mut self, row: AttributedRow) -> Result<(), FileSinkError>;
    /// Makes everything written so far durable (or visible).
    fn flush(&mut self) -> Result<(), FileSinkError>;
}

impl RowSink for NdjsonWriter {
    fn write_row(&mut self, row: AttributedRow) -> Result<(), FileSinkError> {
        self.line.clear();
        row.write_json(&mut self.line);
        self.line.push(b'\n');
        let line = std::mem::take(&mut self.line);
        let r = self.out.write_all(&line).map_err(|e| self.err(e));
        self.line = line;
        r
    }
    fn flush(&mut self) -> Result<(), FileSinkError> {
        NdjsonWriter::flush(self)
    }
}

/// Rows kept in memory (tests, benchmarks).
impl RowSink for Vec<AttributedRow> {
    fn write_row(&mut self, row: AttributedRow) -> Result<(), FileSinkError> {
        self.push(row);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), FileSinkError> {
        Ok(())
    }
}

/// Rows counted and dropped (benchmarks of the engine alone).
#[derive(Default)]
pub struct CountingSink {
    /// Rows seen.
    pub rows: u64,
}

impl RowSink for CountingSink {
    fn write_row(&mut self, _row: AttributedRow) -> Result<(), FileSinkError> {
        self.rows += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), FileSinkError> {
        Ok(())
    }
}

/// Rows batched to a writer thread that serializes and writes them, so the engine's thread
/// does not spend its time on JSON and system calls.
pub(crate) struct BackgroundWriter {
    batch: Vec<AttributedRow>,
    tx: Option<crossbeam_channel::Sender<Vec<AttributedRow>>>,
    handle: Option<std::thread::JoinHandle<Result<NdjsonWriter, FileSinkError>>>,
    path: PathBuf,
}

impl BackgroundWriter {
    /// Rows per batch handed to the writer thread.
    const BATCH: usize = 1024;

    /// Starts the writer thread around `inner`.
    pub(crate) fn spawn(mut inner: NdjsonWriter) -> Result<Self, FileSinkError> {
        let path = inner.path.clone();
        let (tx, rx) = crossbeam_channel::bounded::<Vec<AttributedRow>>(4);
        let handle = std::thread::Builder::new()
            .name("write-rows".into())
            .spawn(move || {
                for batch in rx {
                    for row in batch {
                        inner.write_row(row)?;
                    }
                }
                inner.flush()?;
                Ok(inner)
            })
            .map_err(|source| FileSinkError {
                path: path.clone(),
                cause: source,
            })?;
        Ok(BackgroundWriter {
            batch: Vec::with_capacity(Self::BATCH),
            tx: Some(tx),
            handle: Some(handle),
            path,
        })
    }

    fn send(&mut self) -> Result<(), FileSinkError> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(Self::BATCH));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer thread stopped: its own error says why.
            self.join().and_then(|_| {
                Err(FileSinkError {
                    path: self.path.clone(),
                    cause: std::io::Error::other("the row writer thread stopped"),
                })
            })
        }
    }

    fn join(&mut self) -> Result<(), FileSinkError> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            None | Some(Ok(Ok(_))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(FileSinkError {
                path: self.path.clone(),
                cause: std::io::Error::other("the row writer thread panicked"),
            }),
        }
    }
}

impl RowSink for BackgroundWriter {
    fn write_row(&mut self, row: AttributedRow) -> Result<(), FileSinkError> {
        self.batch.push(row);
        if self.batch.len() >= Self::BATCH {
            self.send()?;
        }
        Ok(())
    }

    /// Sends what is batched, waits for the writer thread to write and flush everything, and
    /// stops it: call once, at the end.
    fn flush(&mut self) -> Result<(), FileSinkError> {
        if !self.batch.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

/// A late click as written to the late output.
#[derive(serde::Serialize)]
pub(crate) struct LateClickRecord<'a> {
    /// The click.
    pub(crate) click_id: String,
    /// The user.
    pub(crate) user_id: i64,
    /// The product.
    pub(crate) product_id: String,
    /// Its event time.
    pub(crate) datetime_occured: String,
    /// The watermark when it arrived.
    pub(crate) watermark: String,
    /// Whether it was still kept for checkouts not final yet.
    pub(crate) kept_for_pending: bool,
    /// Why it is here.
    pub(crate) reason: &'a str,
}

impl<'a> LateClickRecord<'a> {
    /// The record of `click`, late against `watermark`.
    pub(crate) fn new(
        click: &Click,
        watermark: Option<firstclick_model::EventTime>,
        kept: bool,
    ) -> Self {
        LateClickRecord {
            click_id: click.click_id.to_string(),
            user_id: click.user_id,
            product_id: click.product_id.to_string(),
            datetime_occured: click.time.to_rfc3339(),
            watermark: watermark.map(|w| w.to_rfc3339()).unwrap_or_default(),
            kept_for_pending: kept,
            reason:
                "arrived after the watermark passed its event time; written rows were not changed",
        }
    }
}

/// A refused line as written to the dead-letter output.
#[derive(serde::Serialize)]
pub(crate) struct DeadLetterRecord<'a> {
    /// `click` or `checkout`.
    pub(crate) stream: &'a str,
    /// Source file.
    pub(crate) file: &'a str,
    /// 1-based line number.
    pub(crate) line: u64,
    /// The offending field, if one is to blame.
    pub(crate) field: Option<&'a str>,
    /// Why it was refused.
    pub(crate) reason: &'a str,
    /// The line (cut to 1,000 bytes).
    pub(crate) text: &'a str,
}
