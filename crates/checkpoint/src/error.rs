//! [`FormatError`]: why a checkpoint element cannot be read, and what to do about it.

/// A checkpoint element that this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not a firstclick checkpoint element at all.
    #[error(
        "expected a firstclick checkpoint element (starting with \"FC\"), found {found:?}: the \
         key holds something else (another program's data, or a version-1 JSON checkpoint). \
         Point CHECKPOINT_KEY elsewhere, or run `streaming state reset --yes` to start afresh \
         (unacknowledged messages are redelivered)"
    )]
    NotACheckpoint {
        /// The first bytes found.
        found: String,
    },
    /// Written by another version of the format.
    #[error(
        "the checkpoint was written in format version {found}; this build reads version \
         {expected}. Run the firstclick release that wrote it to drain it, or run `streaming \
         state reset --yes` to start afresh (unacknowledged messages are redelivered)"
    )]
    Version {
        /// The version found.
        found: u16,
        /// The version this build reads.
        expected: u16,
    },
    /// The element's body does not decode.
    #[error(
        "a checkpoint element of kind {kind} is damaged ({reason}); run `streaming state \
         inspect` to see which, or `streaming state reset --yes` to start afresh"
    )]
    Corrupt {
        /// The element's kind.
        kind: String,
        /// What the decoder said.
        reason: String,
    },
}
