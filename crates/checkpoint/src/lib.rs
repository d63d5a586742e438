//! The checkpoint format of firstclick (docs/design.md §6): what the streaming worker writes to
//! Redis so that a restarted worker has the state its acknowledged messages built.
//!
//! A checkpoint is a **base** (a list of pieces: a header, clicks, remembered checkout ids,
//! pending checkouts) plus a **changelog** (a list of deltas, one per checkpoint epoch: the
//! clicks and checkouts taken in, the checkouts finished, the eviction horizon, and the
//! watermark and counters at the end of the epoch; with an exactly-once sink, each delta is
//! followed by a rows-commit element). Each piece and each delta is one Redis list element, at
//! most [`MAX_ELEMENT_BYTES`].
//!
//! Every element starts with the magic `FC`, the format version ([`FORMAT_VERSION`], checked on
//! load) and its kind, then a postcard body. Identifiers that are canonical UUIDs take 16 bytes,
//! times are zig-zag varints of microseconds: a new click costs about 45 bytes in the changelog.
//!
//! # Layout
//! - `wire`: the serde types of the bodies.
//! - `encode`: [`ChangeLog`] (changes accumulated between checkpoints, sealed into deltas),
//!   [`PieceWriter`] (a base taken from the live engine shard by shard) and
//!   [`rows_commit_element`] (what commits an epoch's rows in an exactly-once sink).
//! - `decode`: [`apply`] an element to a [`firstclick_engine::Restorer`]; [`describe`] one
//!   ([`ElementKind`], [`Applied`]); [`LogTail`], what the changelog's end says.
//! - `error`: [`FormatError`], with what to do about it.
//!
//! The modules are private; the items above are re-exported here.

mod decode;
mod encode;
mod error;
mod wire;

pub use decode::{apply, describe, Applied, ElementKind, LogTail};
pub use encode::{rows_commit_element, ChangeLog, PieceWriter};
pub use error::FormatError;

/// The version of the format this build writes and reads. Version 1 was the whole engine
/// state as one JSON string.
pub const FORMAT_VERSION: u16 = 2;

/// The largest element written (Redis refuses strings over 512 MB; large values also stall
/// the server while they are copied).
pub const MAX_ELEMENT_BYTES: usize = 16 << 20;

/// The first bytes of every element.
pub(crate) const MAGIC: [u8; 2] = *b"FC";

/// Bytes before the body: magic, version, kind.
pub(crate) const PREFIX_LEN: usize = 5;
