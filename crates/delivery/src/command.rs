//! [`Command`]: what the delivery core asks its driver to do.

use firstclick_engine::FinalCheckout;
use firstclick_model::EventTime;

/// One thing to do. Within a kind, commands are run in the order given and their results
/// reported in that order.
#[derive(Debug)]
pub enum Command<T, P> {
    /// Write the rows of these final checkouts (names from the directory, then the table), then
    /// call [`crate::Delivery::rows_written`] with `batch`. Retry until written: a delta that
    /// forgets these checkouts waits for it.
    WriteRows {
        /// The batch's number (consecutive from 0).
        batch: u64,
        /// The epoch whose delta finishes these checkouts. Two-phase rows: write them
        /// invisibly, as part of that epoch's transaction.
        epoch: u64,
        /// The checkouts.
        checkouts: Vec<FinalCheckout>,
    },
    /// Two-phase rows: every row of `epoch` is written; make them ready to commit (still
    /// invisible) and call [`crate::Delivery::rows_prepared`] with what commits them.
    PrepareRows {
        /// The epoch.
        epoch: u64,
    },
    /// Two-phase rows: make the rows of `transaction` visible, then call
    /// [`crate::Delivery::rows_committed`]. Committing what is already committed is success
    /// (after a restore, the last transaction is committed again).
    CommitRows {
        /// What [`crate::Delivery::rows_prepared`] was given.
        transaction: Vec<u8>,
    },
    /// Append these delta elements to the changelog (one atomic append), then call
    /// [`crate::Delivery::log_appended`] with `first_seq`.
    AppendLog {
        /// The sequence number of the first element.
        first_seq: u64,
        /// The elements, each at most `firstclick_checkpoint::MAX_ELEMENT_BYTES`.
        elements: Vec<Vec<u8>>,
    },
    /// Acknowledge these messages: their effect is durable.
    Ack(Vec<T>),
    /// Publish a click that arrived after the watermark passed its time to the late output
    /// (informational: the click itself is in state and is acknowledged with its epoch).
    PublishLate {
        /// What the driver attached to the click.
        payload: P,
        /// The watermark the click was behind.
        watermark: Option<EventTime>,
        /// Whether it was still kept for pending checkouts.
        stored: bool,
    },
    /// Start base `generation`: delete whatever an interrupted earlier attempt left under it.
    StartBase {
        /// The new base's generation.
        generation: u64,
    },
    /// Append a piece to base `generation`, then call [`crate::Delivery::piece_written`].
    WriteBasePiece {
        /// The base being written.
        generation: u64,
        /// The piece.
        piece: Vec<u8>,
    },
    /// Make base `generation` the current one and drop the changelog before `base_from_seq`,
    /// atomically; then call [`crate::Delivery::base_committed`].
    CommitBase {
        /// The new base.
        generation: u64,
        /// The first changelog element a restore replays over it.
        base_from_seq: u64,
        /// Pieces in it.
        pieces: u64,
        /// Bytes in it.
        bytes: u64,
    },
    /// Delete base `generation` (replaced).
    DropBase {
        /// The old base.
        generation: u64,
    },
}

impl<T, P> Command<T, P> {
    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::WriteRows { .. } => "write_rows",
            Command::PrepareRows { .. } => "prepare_rows",
            Command::CommitRows { .. } => "commit_rows",
            Command::AppendLog { .. } => "append_log",
            Command::Ack(_) => "ack",
            Command::PublishLate { .. } => "publish_late",
            Command::StartBase { .. } => "start_base",
            Command::WriteBasePiece { .. } => "write_base_piece",
            Command::CommitBase { .. } => "commit_base",
            Command::DropBase { .. } => "drop_base",
        }
    }
}
