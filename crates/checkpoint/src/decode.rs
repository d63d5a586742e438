//! Reading checkpoints: [`apply`] feeds one element (a base piece or a delta) to a
//! [`Restorer`]; [`describe`] reads only its prefix and counts, for `state inspect`.

use firstclick_engine::{ClickKey, Progress, Restorer};
use firstclick_model::{ClickRef, EventTime, Id};
use serde::de::DeserializeOwned;

use crate::error::FormatError;
use crate::wire::{uuid_halves, BaseHead, DeltaHead, RowsCommit, WireCheckout};
use crate::{FORMAT_VERSION, MAGIC, PREFIX_LEN};

/// The kinds of elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ElementKind {
    /// A changelog delta.
    Delta = 1,
    /// A base's header: watermark and counters when the base was finished.
    BaseHead = 2,
    /// A base piece of clicks.
    Clicks = 3,
    /// A base piece of remembered checkout ids.
    Seen = 4,
    /// A base piece of pending checkouts.
    Pending = 5,
    /// The first piece of a base: how many keys and ids each shard held when it was started.
    Sizes = 6,
    /// After an epoch's delta: what commits the rows written for that epoch (exactly-once
    /// sinks), so that a restore can finish the commit a crash interrupted.
    RowsCommit = 7,
}

impl ElementKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => ElementKind::Delta,
            2 => ElementKind::BaseHead,
            3 => ElementKind::Clicks,
            4 => ElementKind::Seen,
            5 => ElementKind::Pending,
            6 => ElementKind::Sizes,
            7 => ElementKind::RowsCommit,
            _ => return None,
        })
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ElementKind::Delta => "delta",
            ElementKind::BaseHead => "base header",
            ElementKind::Clicks => "clicks",
            ElementKind::Seen => "checkout ids",
            ElementKind::Pending => "pending checkouts",
            ElementKind::Sizes => "sizes",
            ElementKind::RowsCommit => "rows commit",
        }
    }
}

/// What an element held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Clicks (in a piece, or added in a delta).
    pub clicks: u64,
    /// Checkouts (pending in a piece, or taken in by a delta).
    pub checkouts: u64,
    /// Checkouts finished (deltas).
    pub finished: u64,
    /// Remembered checkout ids (pieces).
    pub seen: u64,
    /// The progress it records, if it records one (deltas and base headers).
    pub progress: Option<Progress>,
    /// A delta written by a graceful shutdown.
    pub clean_shutdown: bool,
    /// A base header's start time (µs since the epoch, wall clock).
    pub started_at: Option<i64>,
    /// A rows-commit element's transaction: what the sink needs to commit the rows of the
    /// epoch whose delta precedes it.
    pub rows_commit: Option<Vec<u8>>,
}

/// What the end of a changelog says besides the state, read element by element with
/// [`LogTail::record`]: whether the last delta was written by a graceful shutdown, and which
/// rows transaction its rows-commit element names (the one a crash may have left uncommitted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    /// The last delta was written by a graceful shutdown (true for an empty changelog).
    pub clean_shutdown: bool,
    /// The transaction after the last delta, if it names one.
    pub rows_to_commit: Option<Vec<u8>>,
}

impl Default for LogTail {
    fn default() -> Self {
        LogTail {
            clean_shutdown: true,
            rows_to_commit: None,
        }
    }
}

impl LogTail {
    /// Takes in what [`apply`] returned for the next changelog element.
    pub fn record(&mut self, applied: Applied) {
        match applied.rows_commit {
            // An empty transaction: the epoch had no rows to commit.
            Some(t) => self.rows_to_commit = (!t.is_empty()).then_some(t),
            None => {
                self.clean_shutdown = applied.clean_shutdown;
                self.rows_to_commit = None;
            }
        }
    }
}

fn prefix(bytes: &[u8]) -> Result<(ElementKind, &[u8]), FormatError> {
    if bytes.len() < PREFIX_LEN || bytes[..2] != MAGIC {
        let found = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
        return Err(FormatError::NotACheckpoint { found });
    }
    let version = u16::from_le_bytes([bytes[2], bytes[3]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let kind = ElementKind::from_byte(bytes[4]).ok_or_else(|| FormatError::Corrupt {
        kind: format!("#{}", bytes[4]),
        reason: "unknown element kind".into(),
    })?;
    Ok((kind, &bytes[PREFIX_LEN..]))
}

struct Reader<'a> {
    kind: ElementKind,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<T: DeserializeOwned>(&mut self) -> Result<T, FormatError> {
        let (value, rest) =
            postcard::take_from_bytes::<T>(self.rest).map_err(|e| FormatError::Corrupt {
                kind: self.kind.as_str().into(),
                reason: e.to_string(),
            })?;
        self.rest = rest;
        Ok(value)
    }

    fn corrupt(&self, reason: &str) -> FormatError {
        FormatError::Corrupt {
            kind: self.kind.as_str().into(),
            reason: reason.into(),
        }
    }

    // The hot items (ids, times, click changes) are read by hand: postcard's wire format is a
    // documented, stable specification (LEB128 varints, zig-zag signed integers, a varint
    // variant index before an enum's fields), and serde's visitor for a `[u8; 16]` reads it
    // byte by byte, which was a fifth of a restore's time.

    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut value = 0u64;
        for (i, b) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(self.corrupt("a varint runs past its end"))
    }

    fn signed(&mut self) -> Result<i64, FormatError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < n {
            return Err(self.corrupt("shorter than its last item"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn id(&mut self) -> Result<Id, FormatError> {
        match self.varint()? {
            0 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(self.bytes(16)?);
                Ok(Id::Uuid(uuid_halves(&b)))
            }
            1 => {
                let n = self.varint()? as usize;
                let b = self.bytes(n)?;
                let text =
                    std::str::from_utf8(b).map_err(|_| self.corrupt("an id is not UTF-8"))?;
                Ok(Id::Text(text.into()))
            }
            _ => Err(self.corrupt("unknown id kind")),
        }
    }

    /// A piece's item count: 8 bytes, little-endian.
    fn count(&mut self) -> Result<u64, FormatError> {
        if self.rest.len() < 8 {
            return Err(FormatError::Corrupt {
                kind: self.kind.as_str().into(),
                reason: "shorter than its item count".into(),
            });
        }
        let (head, rest) = self.rest.split_at(8);
        self.rest = rest;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Ok(u64::from_le_bytes(b))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Corrupt {
                kind: self.kind.as_str().into(),
                reason: format!("{} bytes left over after the last item", self.rest.len()),
            })
        }
    }
}

/// Applies one element to `restorer`; elements must come in the order they were written
/// (base pieces, then deltas).
pub fn apply(bytes: &[u8], restorer: &mut Restorer) -> Result<Applied, FormatError> {
    read(bytes, Some(restorer))
}

/// Reads an element without applying it: its kind and what it holds.
pub fn describe(bytes: &[u8]) -> Result<(ElementKind, Applied), FormatError> {
    let (kind, _) = prefix(bytes)?;
    Ok((kind, read(bytes, None)?))
}

fn read(bytes: &[u8], mut restorer: Option<&mut Restorer>) -> Result<Applied, FormatError> {
    let (kind, rest) = prefix(bytes)?;
    let mut r = Reader { kind, rest };
    let mut applied = Applied::default();
    match kind {
        ElementKind::Delta => {
            let head: DeltaHead = r.take()?;
            for _ in 0..head.count {
                match r.varint()? {
                    0 => {
                        let user_id = r.signed()?;
                        let product_id = r.id()?;
                        let click_id = r.id()?;
                        let time = EventTime::from_micros(r.signed()?);
                        applied.clicks += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.click(
                                ClickKey {
                                    user_id,
                                    product_id,
                                },
                                ClickRef { click_id, time },
                            );
                        }
                    }
                    1 => {
                        let c: WireCheckout = r.take()?;
                        applied.checkouts += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.pending_checkout(c.into());
                        }
                    }
                    2 => {
                        let c = r.id()?;
                        applied.finished += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.finished(&c);
                        }
                    }
                    3 => {
                        let h = EventTime::from_micros(r.signed()?);
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.horizon(h);
                        }
                    }
                    other => {
                        return Err(r.corrupt(&format!("unknown change kind {other}")));
                    }
                }
            }
            let progress: Progress = head.progress.into();
            if let Some(rs) = restorer.as_deref_mut() {
                rs.progress(progress);
            }
            applied.progress = Some(progress);
            applied.clean_shutdown = head.clean_shutdown;
        }
        ElementKind::BaseHead => {
            let head: BaseHead = r.take()?;
            let progress: Progress = head.progress.into();
            if let Some(rs) = restorer.as_deref_mut() {
                rs.progress(progress);
            }
            applied.progress = Some(progress);
            applied.started_at = Some(head.started_at);
        }
        ElementKind::Clicks => {
            let count = r.count()?;
            for _ in 0..count {
                let user_id = r.signed()?;
                let product_id = r.id()?;
                let n = r.varint()?;
                applied.clicks += n;
                let key = ClickKey {
                    user_id,
                    product_id,
                };
                for _ in 0..n {
                    let click_id = r.id()?;
                    let time = EventTime::from_micros(r.signed()?);
                    if let Some(rs) = restorer.as_deref_mut() {
                        rs.click(key.clone(), ClickRef { click_id, time });
                    }
                }
            }
        }
        ElementKind::Seen => {
            let count = r.count()?;
            for _ in 0..count {
                let c = r.id()?;
                let t = EventTime::from_micros(r.signed()?);
                applied.seen += 1;
                if let Some(rs) = restorer.as_deref_mut() {
                    rs.seen_checkout(c, t);
                }
            }
        }
        ElementKind::Sizes => {
            let count = r.varint()?;
            for shard in 0..count as usize {
                let keys = r.varint()? as usize;
                let ids = r.varint()? as usize;
                if let Some(rs) = restorer.as_deref_mut() {
                    // A little more than the base held: the changelog adds what came since.
                    rs.reserve(shard, keys + keys / 8, ids + ids / 8);
                }
            }
        }
        ElementKind::RowsCommit => {
            let commit: RowsCommit = r.take()?;
            applied.rows_commit = Some(commit.transaction);
        }
        ElementKind::Pending => {
            let count = r.count()?;
            for _ in 0..count {
                let c: WireCheckout = r.take()?;
                applied.checkouts += 1;
                if let Some(rs) = restorer.as_deref_mut() {
                    rs.pending_checkout(c.into());
                }
            }
        }
    }
    r.end()?;
    Ok(applied)
}
