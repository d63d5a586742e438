//! An NDJSON file parsed on its own thread.
//!
//! The file is read in large blocks, split at newlines, and every line parsed into a click or a
//! checkout (or a bad line with its number and reason). Batches go through a bounded channel, so
//! memory stays flat however large the file is, and parsing runs on another core than the engine.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use firstclick_model::{parse_checkout, parse_click, BadMessage, Checkout, Click, EventKind};

/// Events per batch sent from a parser thread.
const BATCH: usize = 1024;
/// Bytes read per block.
const BLOCK: usize = 4 << 20;

/// One parsed line.
#[derive(Debug)]
pub(crate) enum Item {
    /// A valid click.
    Click(Click),
    /// A valid checkout.
    Checkout(Checkout),
    /// A line that is not a valid message.
    Bad {
        /// 1-based line number.
        line: u64,
        /// Why.
        error: BadMessage,
        /// The line, cut to 1,000 bytes, for the dead-letter file.
        text: String,
    },
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {cause}")]
pub struct SourceError {
    /// The file.
    pub path: PathBuf,
    /// The cause (in the message already, so not a `source`: an error chain would print it
    /// twice).
    pub cause: std::io::Error,
}

/// A file being parsed in the background.
pub(crate) struct FileSource {
    /// Batches of parsed lines, in file order.
    pub(crate) batches: Receiver<Vec<Item>>,
    /// Bytes read so far (for progress).
    pub(crate) bytes_read: Arc<AtomicU64>,
    /// The file's size at open.
    pub(crate) size: u64,
    handle: JoinHandle<Result<(), SourceError>>,
}

impl FileSource {
    /// Opens `path` and starts parsing it as `kind` messages.
    pub(crate) fn open(path: &Path, kind: EventKind) -> Result<Self, SourceError> {
        let err = |cause| SourceError {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if meta.is_dir() {
            return Err(err(std::io::Error::other(
                "it is a directory, expected an NDJSON file (one JSON object per line)",
            )));
        }
        let size = meta.len();
        let (tx, rx) = bounded(4);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counter = bytes_read.clone();
        let owned = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name(format!("parse-{kind}"))
            .spawn(move || parse_file(file, &owned, kind, &tx, &counter))
            .map_err(err)?;
        Ok(FileSource {
            batches: rx,
            bytes_read,
            size,
            handle,
        })
    }

    /// Waits for the parser thread and returns its read error, if any.
    pub(crate) fn finish(self) -> Result<(), SourceError> {
        drop(self.batches);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => Err(SourceError {
                path: PathBuf::from("<parser thread>"),
                cause: std::io::Error::other("the parser thread panicked"),
            }),
        }
    }
}

/// Parses one line (without its newline) as `kind`.
pub(crate) fn parse_line(kind: EventKind, line_no: u64, bytes: &[u8]) -> Item {
    let parsed = match kind {
        EventKind::Click => parse_click(bytes).map(Item::Click),
        EventKind::Checkout => parse_checkout(bytes).map(Item::Checkout),
    };
    parsed.unwrap_or_else(|error| Item::Bad {
        line: line_no,
        error,
        text: String::from_utf8_lossy(&bytes[..bytes.len().min(1000)]).into_owned(),
    })
}

/// Appends up to `max` bytes of `file` to `buf` (fewer only at the end of the file); returns
/// how many. Reads into the vector's spare capacity, which `read_to_end` does not zero first
/// (a zeroed `resize` before each read was 2 % of a replay's CPU); interrupted reads are
/// retried.
pub(crate) fn append_from(file: &File, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    buf.reserve(max);
    file.take(max as u64).read_to_end(buf)
}

fn parse_file(
    file: File,
    path: &Path,
    kind: EventKind,
    tx: &crossbeam_channel::Sender<Vec<Item>>,
    bytes_read: &AtomicU64,
) -> Result<(), SourceError> {
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK * 2);
    let mut line_no: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut eof = false;
    while !eof {
        let n = append_from(&file, &mut buf, BLOCK).map_err(|cause| SourceError {
            path: path.to_path_buf(),
            cause,
        })?;
        bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        eof = n == 0;
        // Lines complete in the buffer; at end of file the rest is a last line without newline.
        let complete = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let mut pos = 0;
        while pos < complete {
            let end = memchr::memchr(b'\n', &buf[pos..complete]).map_or(complete, |i| pos + i);
            line_no += 1;
            let raw = &buf[pos..end];
            pos = end + 1;
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch.push(parse_line(kind, line_no, line));
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.send(full).is_err() {
                    return Ok(());
                }
            }
        }
        buf.drain(..complete);
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(())
}
