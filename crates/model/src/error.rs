//! Why a message was refused.
//!
//! A bad message is never fatal: the pipeline counts it, logs this reason and sends the message to
//! the dead-letter destination. The reason therefore names the field, what was expected and what
//! was found, so whoever reads the dead-letter queue can fix the producer.

use std::fmt;

/// Which stream a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The clicks topic or file.
    Click,
    /// The checkouts topic or file.
    Checkout,
}

impl EventKind {
    /// `click` or `checkout`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Click => "click",
            EventKind::Checkout => "checkout",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {kind} message: {reason}")]
pub struct BadMessage {
    /// The stream the message came from.
    pub kind: EventKind,
    /// The offending field, when one field is to blame.
    pub field: Option<&'static str>,
    /// What was expected and what was found.
    pub reason: String,
}

impl BadMessage {
    pub(crate) fn whole(kind: EventKind, reason: impl Into<String>) -> Self {
        BadMessage {
            kind,
            field: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn field(kind: EventKind, field: &'static str, reason: impl fmt::Display) -> Self {
        BadMessage {
            kind,
            field: Some(field),
            reason: format!("field `{field}`: {reason}"),
        }
    }
}
