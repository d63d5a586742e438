//! Chunked input for the partitioned replay: an NDJSON file cut into chunks of whole lines.
//!
//! [`ChunkedFile`] hands out the file as numbered chunks of about [`CHUNK`] bytes that end at a
//! newline (the last one at the end of the file). Reading is sequential and happens under the
//! file's lock, which only the short `read` calls hold; [`parse_chunk`] then parses a chunk on
//! whichever thread claimed it, with no lock: every line into a click or a checkout routed to
//! its user's partition ([`firstclick_partition::partition_of`]), or into a bad line numbered
//! within the chunk. The chunk's line count lets the consumer, which sees the chunks in order,
//! turn those into line numbers of the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use firstclick_model::EventKind;

use crate::source::{append_from, parse_line, Item, SourceError};

/// Bytes per chunk (a chunk is longer when a line crosses its end, so it ends at a newline).
pub(crate) const CHUNK: usize = 2 << 20;

/// The router's mark for a bad line in [`ParsedChunk::order`] (no event time is this small).
pub(crate) const BAD: i64 = i64::MIN;

/// A file read chunk by chunk, in order, by any thread.
pub(crate) struct ChunkedFile {
    /// Clicks or checkouts.
    pub(crate) kind: EventKind,
    /// The file.
    pub(crate) path: PathBuf,
    /// Its size when opened (for progress).
    pub(crate) size: u64,
    /// Bytes read so far (for progress).
    pub(crate) bytes_read: AtomicU64,
    /// Bytes per chunk ([`CHUNK`] but in tests).
    chunk: usize,
    cursor: Mutex<Cursor>,
}

struct Cursor {
    file: File,
    /// The start of a line cut by the previous chunk's end.
    carry: Vec<u8>,
    /// The next chunk's number.
    next: usize,
    eof: bool,
}

impl ChunkedFile {
    /// Opens `path` as `kind` messages, to be read in chunks of about `chunk` bytes.
    pub(crate) fn open(path: &Path, kind: EventKind, chunk: usize) -> Result<Self, SourceError> {
        let err = |e| source_error(path, e);
        let file = File::open(path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if meta.is_dir() {
            return Err(err(std::io::Error::other(
                "it is a directory, expected an NDJSON file (one JSON object per line)",
            )));
        }
        let size = meta.len();
        Ok(ChunkedFile {
            kind,
            path: path.to_path_buf(),
            size,
            bytes_read: AtomicU64::new(0),
            chunk: chunk.max(1),
            cursor: Mutex::new(Cursor {
                file,
                carry: Vec::new(),
                next: 0,
                eof: false,
            }),
        })
    }

    /// Reads the next chunk into `buf`: [`Next::Chunk`] with its number, or [`Next::End`] with
    /// the number of chunks once the file is read to its end.
    pub(crate) fn next_chunk(&self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        let mut c = self
            .cursor
            .lock()
            .map_err(|_| source_error(&self.path, std::io::Error::other("a reader panicked")))?;
        if c.eof {
            return Ok(Next::End(c.next));
        }
        buf.clear();
        buf.append(&mut c.carry);
        let mut searched = 0;
        loop {
            let start = buf.len();
            append_from(&c.file, buf, self.chunk).map_err(|e| source_error(&self.path, e))?;
            let filled = buf.len();
            self.bytes_read
                .fetch_add((filled - start) as u64, Ordering::Relaxed);
            if filled < start + self.chunk {
                // End of file: the rest is the last chunk (a last line may lack its newline).
                c.eof = true;
                if buf.is_empty() {
                    return Ok(Next::End(c.next));
                }
                break;
            }
            // Cut after the last newline; a line longer than the chunk makes it longer.
            if let Some(i) = memchr::memrchr(b'\n', &buf[searched..]) {
                let end = searched + i + 1;
                c.carry.extend_from_slice(&buf[end..]);
                buf.truncate(end);
                break;
            }
            searched = buf.len();
        }
        let n = c.next;
        c.next += 1;
        Ok(Next::Chunk(n))
    }
}

/// What [`ChunkedFile::next_chunk`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Chunk number `n` is in the buffer.
    Chunk(usize),
    /// The file is read to its end; it has this many chunks.
    End(usize),
}

/// What the readers said about a file: the error of a read, with the file named.
pub(crate) fn source_error(path: &Path, e: std::io::Error) -> SourceError {
    SourceError {
        path: path.to_path_buf(),
        cause: e,
    }
}

/// One chunk, parsed.
pub(crate) struct ParsedChunk {
    /// Its number in the file.
    pub(crate) index: usize,
    /// Lines in it, blank ones included (to number the lines of the following chunks).
    pub(crate) lines: u64,
    /// The valid events of each partition, in file order.
    pub(crate) parts: Vec<Vec<Item>>,
    /// For the dead-letter order: every non-blank line's event time, or [`BAD`].
    pub(crate) order: Vec<i64>,
    /// The bad lines, in order, numbered from 1 within the chunk.
    pub(crate) bad: Vec<Item>,
}

/// Parses `bytes` (whole lines) as `kind` messages for `partitions` partitions, into vectors
/// from `vec` (given a capacity to start with).
pub(crate) fn parse_chunk(
    kind: EventKind,
    index: usize,
    bytes: &[u8],
    partitions: u32,
    mut vec: impl FnMut(usize) -> Vec<Item>,
) -> ParsedChunk {
    // About 440 bytes a line in the generator's files; the guess only sizes the vectors.
    let guess = bytes.len() / 400 + 16;
    let per_part = guess / partitions as usize + 16;
    let mut parts: Vec<Vec<Item>> = (0..partitions).map(|_| vec(per_part)).collect();
    let mut order = Vec::with_capacity(guess);
    let mut bad = Vec::new();
    let mut line_no: u64 = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        line_no += 1;
        let raw = &bytes[pos..end];
        pos = end + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let item = parse_line(kind, line_no, line);
        let (user, time) = match &item {
            Item::Click(c) => (c.user_id, c.time.as_micros()),
            Item::Checkout(c) => (c.user_id, c.time.as_micros()),
            Item::Bad { .. } => {
                order.push(BAD);
                bad.push(item);
                continue;
            }
        };
        order.push(time);
        let p = firstclick_partition::partition_of(user, partitions) as usize;
        parts[p].push(item);
    }
    ParsedChunk {
        index,
        lines: line_no,
        parts,
        order,
        bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Chunks end at newlines, cover the file exactly once in order, and a line longer than a
    /// chunk stays whole.
    #[test]
    fn chunks_are_whole_lines_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.ndjson");
        let mut f = File::create(&path).expect("file");
        let mut want = Vec::new();
        for i in 0..60_000u32 {
            let line = if i == 777 {
                "x".repeat(CHUNK * 2 + 3)
            } else {
                format!("line {i} {}", "y".repeat((i % 300) as usize))
            };
            want.extend_from_slice(line.as_bytes());
            want.push(b'\n');
        }
        want.extend_from_slice(b"last line without newline");
        f.write_all(&want).expect("written");
        drop(f);
        let file = ChunkedFile::open(&path, EventKind::Click, CHUNK).expect("opened");
        let mut got = Vec::new();
        let mut buf = Vec::new();
        let mut n = 0;
        while let Next::Chunk(i) = file.next_chunk(&mut buf).expect("read") {
            assert_eq!(i, n);
            n += 1;
            let last = got.len() + buf.len() == want.len();
            assert!(last || buf.ends_with(b"\n"), "chunk {i} cut a line");
            got.extend_from_slice(&buf);
        }
        assert!(n > 5);
        assert_eq!(got, want);
        assert_eq!(file.next_chunk(&mut buf).expect("read"), Next::End(n));
        assert_eq!(file.bytes_read.load(Ordering::Relaxed), want.len() as u64);
    }
}
