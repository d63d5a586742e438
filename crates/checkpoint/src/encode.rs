//! Writing checkpoints: [`ChangeLog`] collects the engine's changes between two checkpoints and
//! seals them into deltas; [`PieceWriter`] turns the live engine into base pieces, a bounded
//! amount of work per call.
//!
//! Changes are encoded as they happen, so sealing a delta costs a copy of its bytes, not a walk
//! of the state; a delta is cut into several elements when it would pass [`MAX_ELEMENT_BYTES`].

use firstclick_engine::{ClickKey, Engine, Progress, STATE_SHARDS};
use firstclick_model::{Checkout, Click, ClickRef, EventTime, Id};
use serde::ser::{SerializeTuple, Serializer};
use serde::Serialize;

use crate::wire::{
    uuid_bytes, BaseHead, DeltaHead, RowsCommit, WireChange, WireCheckout, WireProgress,
};
use crate::{ElementKind, FORMAT_VERSION, MAGIC, MAX_ELEMENT_BYTES};

/// Room kept in an element for its prefix and head.
const HEAD_ROOM: usize = 256;

pub(crate) fn start_element(kind: ElementKind, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out
}

fn put<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serializing plain data into a Vec cannot fail: postcard only errs on unsupported types
    // (none here) or a full fixed buffer (a Vec grows).
    let taken = std::mem::take(out);
    *out = postcard::to_extend(value, taken).unwrap_or_default();
}

/// The element that follows an epoch's delta when the rows of that epoch wait to be committed
/// by `transaction` (the sink's name for them, opaque here). A restore hands the last one to
/// the sink again, since a crash may have come between the append and the commit.
pub fn rows_commit_element(transaction: &[u8]) -> Vec<u8> {
    let mut out = start_element(ElementKind::RowsCommit, transaction.len() + 16);
    put(
        &RowsCommit {
            transaction: transaction.to_vec(),
        },
        &mut out,
    );
    out
}

/// A UUID id as its 16 bytes, any other as text; serializes exactly as `wire::WireId`.
enum IdOut<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl<'a> From<&'a Id> for IdOut<'a> {
    fn from(id: &'a Id) -> Self {
        match id {
            Id::Uuid(halves) => IdOut::Uuid(uuid_bytes(*halves)),
            Id::Text(t) => IdOut::Text(t),
        }
    }
}

impl Serialize for IdOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IdOut::Uuid(b) => s.serialize_newtype_variant("WireId", 0, "Uuid", b),
            IdOut::Text(t) => s.serialize_newtype_variant("WireId", 1, "Text", t),
        }
    }
}

/// A click change, serialized exactly as `WireChange::Click`.
struct ClickOut<'a> {
    user_id: i64,
    product_id: IdOut<'a>,
    click_id: IdOut<'a>,
    time: i64,
}

impl Serialize for ClickOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        let mut v = s.serialize_struct_variant("WireChange", 0, "Click", 4)?;
        v.serialize_field("user_id", &self.user_id)?;
        v.serialize_field("product_id", &self.product_id)?;
        v.serialize_field("click_id", &self.click_id)?;
        v.serialize_field("time", &self.time)?;
        v.end()
    }
}

/// The clicks of one key, serialized exactly as `wire::WireKeyClicks`.
struct KeyClicksOut<'a>(&'a ClickKey, &'a [ClickRef]);

impl Serialize for KeyClicksOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.0.user_id)?;
        t.serialize_element(&IdOut::from(&self.0.product_id))?;
        t.serialize_element(&ClicksOut(self.1))?;
        t.end()
    }
}

struct ClicksOut<'a>(&'a [ClickRef]);

impl Serialize for ClicksOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|c| (IdOut::from(&c.click_id), c.time.as_micros())),
        )
    }
}

/// Changes since the last checkpoint, already encoded. See the module documentation.
#[derive(Debug, Default)]
pub struct ChangeLog {
    /// Full chunks cut at the size limit, each with its number of changes.
    full: Vec<(Vec<u8>, u64)>,
    buf: Vec<u8>,
    count: u64,
    bytes: usize,
}

impl ChangeLog {
    /// An empty changelog.
    pub fn new() -> Self {
        ChangeLog::default()
    }

    /// Number of changes collected.
    pub fn len(&self) -> u64 {
        self.full.iter().map(|(_, n)| n).sum::<u64>() + self.count
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded bytes collected.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn push<T: Serialize>(&mut self, change: &T) {
        let before = self.buf.len();
        put(change, &mut self.buf);
        self.bytes += self.buf.len() - before;
        self.count += 1;
        if self.buf.len() + HEAD_ROOM >= MAX_ELEMENT_BYTES {
            self.full.push((
                std::mem::take(&mut self.buf),
                std::mem::take(&mut self.count),
            ));
        }
    }

    /// A click was stored.
    pub fn click(&mut self, click: &Click) {
        self.push(&ClickOut {
            user_id: click.user_id,
            product_id: (&click.product_id).into(),
            click_id: (&click.click_id).into(),
            time: click.time.as_micros(),
        });
    }

    /// A checkout was taken in (pending until finished).
    pub fn checkout(&mut self, checkout: &Checkout) {
        self.push(&WireChange::Checkout(WireCheckout::from(checkout)));
    }

    /// A checkout became final; its row is written before this change is durable.
    pub fn finished(&mut self, checkout_id: &Id) {
        self.push(&WireChange::Finished(checkout_id.into()));
    }

    /// The engine swept its state below `horizon`.
    pub fn horizon(&mut self, horizon: EventTime) {
        self.push(&WireChange::Horizon(horizon.as_micros()));
    }

    /// Seals everything collected into delta elements (at least one, so the end-of-epoch
    /// progress is always recorded) and starts afresh.
    pub fn seal(&mut self, progress: &Progress, clean_shutdown: bool) -> Vec<Vec<u8>> {
        let mut chunks = std::mem::take(&mut self.full);
        chunks.push((
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.count),
        ));
        self.bytes = 0;
        chunks
            .into_iter()
            .map(|(body, count)| {
                let mut out = start_element(ElementKind::Delta, body.len() + HEAD_ROOM);
                put(
                    &DeltaHead {
                        clean_shutdown,
                        progress: WireProgress::from(progress),
                        count,
                    },
                    &mut out,
                );
                out.extend_from_slice(&body);
                out
            })
            .collect()
    }
}

/// Where a base being written has got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Sizes,
    Clicks(usize),
    Seen(usize),
    Done,
}

/// Takes a base snapshot of a live engine in bounded steps. See the module documentation.
#[derive(Debug)]
pub struct PieceWriter {
    stage: Stage,
    /// Aimed-for bytes of one piece.
    piece_bytes: usize,
    started_at: i64,
    /// Every piece produced so far, with its bytes.
    pieces: u64,
    bytes: u64,
}

impl PieceWriter {
    /// Starts a base; `started_at` is the wall clock (µs since the epoch), recorded for
    /// `state inspect`. `piece_bytes` bounds the work of one [`PieceWriter::step`] (at least
    /// one shard is taken per step).
    pub fn new(started_at: i64, piece_bytes: usize) -> Self {
        PieceWriter {
            stage: Stage::Sizes,
            piece_bytes: piece_bytes.clamp(4096, MAX_ELEMENT_BYTES - HEAD_ROOM),
            started_at,
            pieces: 0,
            bytes: 0,
        }
    }

    /// Whether every piece was produced.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Pieces produced so far.
    pub fn pieces(&self) -> u64 {
        self.pieces
    }

    /// Bytes produced so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Produces the next pieces: whole shards until about `piece_bytes` are encoded, a shard
    /// that is larger itself being cut into several pieces. The header (watermark and counters)
    /// comes last, with the pending checkouts. Empty once done.
    pub fn step(&mut self, engine: &Engine) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let kind = match self.stage {
            Stage::Sizes | Stage::Clicks(_) => ElementKind::Clicks,
            _ => ElementKind::Seen,
        };
        let mut piece = Piece::new(kind, self.piece_bytes);
        loop {
            match self.stage {
                Stage::Sizes => {
                    let mut sizes = start_element(ElementKind::Sizes, STATE_SHARDS * 8 + 16);
                    let counts: Vec<(u64, u64)> = (0..STATE_SHARDS)
                        .map(|s| {
                            (
                                engine.clicks().shard_key_count(s) as u64,
                                engine.seen_checkouts().shard_count(s) as u64,
                            )
                        })
                        .collect();
                    put(&counts, &mut sizes);
                    out.push(sizes);
                    self.stage = Stage::Clicks(0);
                }
                Stage::Clicks(shard) if shard < STATE_SHARDS => {
                    let horizon = engine.swept_horizon();
                    for (key, clicks) in engine.clicks().shard_keys(shard) {
                        match horizon {
                            // Swept clicks whose memory is not freed yet are left out.
                            Some(h) if clicks.iter().any(|c| c.time < h) => {
                                let kept: Vec<ClickRef> =
                                    clicks.iter().filter(|c| c.time >= h).cloned().collect();
                                if !kept.is_empty() {
                                    piece.add(&KeyClicksOut(key, &kept), &mut out);
                                }
                            }
                            _ => piece.add(&KeyClicksOut(key, clicks), &mut out),
                        }
                    }
                    self.stage = Stage::Clicks(shard + 1);
                }
                Stage::Clicks(_) => {
                    piece.finish(&mut out);
                    piece = Piece::new(ElementKind::Seen, self.piece_bytes);
                    self.stage = Stage::Seen(0);
                }
                Stage::Seen(shard) if shard < STATE_SHARDS => {
                    for (id, time) in engine.seen_checkouts().shard(shard) {
                        if engine.counts(*time) {
                            piece.add(&(IdOut::from(id), time.as_micros()), &mut out);
                        }
                    }
                    self.stage = Stage::Seen(shard + 1);
                }
                Stage::Seen(_) => {
                    piece.finish(&mut out);
                    piece = Piece::new(ElementKind::Pending, self.piece_bytes);
                    for checkout in engine.pending_in_order() {
                        piece.add(&WireCheckout::from(&checkout), &mut out);
                    }
                    piece.finish(&mut out);
                    let mut head = start_element(ElementKind::BaseHead, HEAD_ROOM);
                    put(
                        &BaseHead {
                            progress: WireProgress::from(&engine.progress()),
                            started_at: self.started_at,
                        },
                        &mut head,
                    );
                    out.push(head);
                    piece = Piece::new(ElementKind::Pending, 0);
                    self.stage = Stage::Done;
                }
                Stage::Done => break,
            }
            let produced: usize = out.iter().map(Vec::len).sum::<usize>() + piece.body_len();
            if produced >= self.piece_bytes {
                break;
            }
        }
        if self.stage != Stage::Done {
            piece.finish(&mut out);
        }
        self.pieces += out.len() as u64;
        self.bytes += out.iter().map(|p| p.len() as u64).sum::<u64>();
        out
    }
}

/// A piece being filled: the element's prefix, a count (8 bytes, little-endian, patched when
/// the piece is finished) and the encoded items, in one buffer sized up front so that it is
/// neither grown nor copied.
struct Piece {
    kind: ElementKind,
    element: Vec<u8>,
    count: u64,
    limit: usize,
}

/// Bytes of a piece before its items: prefix and count.
const PIECE_HEAD: usize = crate::PREFIX_LEN + 8;

impl Piece {
    fn new(kind: ElementKind, limit: usize) -> Self {
        Piece {
            kind,
            element: Vec::new(),
            count: 0,
            limit,
        }
    }

    fn add<T: Serialize>(&mut self, item: &T, out: &mut Vec<Vec<u8>>) {
        if self.element.is_empty() {
            self.element = start_element(self.kind, self.limit + HEAD_ROOM + (64 << 10));
            self.element.extend_from_slice(&[0; 8]);
        }
        put(item, &mut self.element);
        self.count += 1;
        if self.element.len() >= self.limit {
            self.finish(out);
        }
    }

    fn body_len(&self) -> usize {
        self.element.len().saturating_sub(PIECE_HEAD)
    }

    fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.count == 0 {
            return;
        }
        let mut element = std::mem::take(&mut self.element);
        element[crate::PREFIX_LEN..PIECE_HEAD].copy_from_slice(&self.count.to_le_bytes());
        self.count = 0;
        out.push(element);
    }
}
