//! Reading checkpoints: [`apply`] feeds one element (a base piece or a delta) to a
//! [`Restorer`]; [`describe`] reads only its prefix and counts, for `state inspect`.

use firstclick_engine::{ClickKey, Progress, Restorer};
use firstclick_model::{ClickRef, EventTime, Id};
use serde::de::DeserializeOwned;

use crate::error::FormatError;
use crate::wire::{BaseHead, DeltaHead, WireChange, WireCheckout, WireId, WireKeyClicks};
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
}

impl ElementKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => ElementKind::Delta,
            2 => ElementKind::BaseHead,
            3 => ElementKind::Clicks,
            4 => ElementKind::Seen,
            5 => ElementKind::Pending,
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
        }
    }
}

/// What an element held.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

fn id(w: WireId) -> Id {
    w.into()
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
                match r.take::<WireChange>()? {
                    WireChange::Click {
                        user_id,
                        product_id,
                        click_id,
                        time,
                    } => {
                        applied.clicks += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.click(
                                ClickKey {
                                    user_id,
                                    product_id: id(product_id),
                                },
                                ClickRef {
                                    click_id: id(click_id),
                                    time: EventTime::from_micros(time),
                                },
                            );
                        }
                    }
                    WireChange::Checkout(c) => {
                        applied.checkouts += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.pending_checkout(c.into());
                        }
                    }
                    WireChange::Finished(c) => {
                        applied.finished += 1;
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.finished(&id(c));
                        }
                    }
                    WireChange::Horizon(h) => {
                        if let Some(rs) = restorer.as_deref_mut() {
                            rs.horizon(EventTime::from_micros(h));
                        }
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
            let count: u64 = r.take()?;
            for _ in 0..count {
                let k: WireKeyClicks = r.take()?;
                applied.clicks += k.clicks.len() as u64;
                if let Some(rs) = restorer.as_deref_mut() {
                    let key = ClickKey {
                        user_id: k.user_id,
                        product_id: id(k.product_id),
                    };
                    for (click_id, time) in k.clicks {
                        rs.click(
                            key.clone(),
                            ClickRef {
                                click_id: id(click_id),
                                time: EventTime::from_micros(time),
                            },
                        );
                    }
                }
            }
        }
        ElementKind::Seen => {
            let count: u64 = r.take()?;
            for _ in 0..count {
                let (c, t): (WireId, i64) = r.take()?;
                applied.seen += 1;
                if let Some(rs) = restorer.as_deref_mut() {
                    rs.seen_checkout(id(c), EventTime::from_micros(t));
                }
            }
        }
        ElementKind::Pending => {
            let count: u64 = r.take()?;
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
