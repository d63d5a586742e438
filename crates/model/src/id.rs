//! Compact identifiers for clicks, checkouts and products.
//!
//! The producers send UUIDs as text (36 bytes plus a heap header). The engine keeps every live
//! click in memory, so a canonical lowercase UUID is stored as its 128-bit value instead, and any
//! other identifier as text. Both compare and print exactly as the original text does, so the
//! `(event time, click_id)` tie-break and the output are unaffected by the packing.

use std::cmp::Ordering;
use std::fmt;

/// An identifier as sent by a producer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A canonical lowercase hyphenated UUID, as two big-endian halves.
    Uuid([u64; 2]),
    /// Any other identifier, kept verbatim.
    Text(Box<str>),
}

impl Id {
    /// Packs `text`, as a UUID when it is one in canonical lowercase form.
    pub fn new(text: &str) -> Self {
        match parse_canonical_uuid(text.as_bytes()) {
            Some(v) => Id::Uuid(v),
            None => Id::Text(text.into()),
        }
    }

    /// The identifier's text, exactly as it was received.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Id::Uuid(_) => std::borrow::Cow::Owned(self.to_string()),
            Id::Text(t) => std::borrow::Cow::Borrowed(t),
        }
    }

    /// Writes the identifier's text into `out`.
    pub fn write_to(&self, out: &mut String) {
        match self {
            Id::Uuid([hi, lo]) => {
                let mut buf = [0u8; 36];
                write_uuid(*hi, *lo, &mut buf);
                // write_uuid only writes ASCII hex digits and hyphens.
                out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
            }
            Id::Text(t) => out.push_str(t),
        }
    }
}

impl From<&str> for Id {
    fn from(text: &str) -> Self {
        Id::new(text)
    }
}

impl Ord for Id {
    /// Orders as the identifiers' texts do (byte-wise), which for two canonical lowercase UUIDs
    /// is the order of their 128-bit values.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Id::Uuid(a), Id::Uuid(b)) => a.cmp(b),
            (Id::Text(a), Id::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => self.as_text().as_bytes().cmp(other.as_text().as_bytes()),
        }
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(36);
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_text())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Id::new(&text))
    }
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

fn parse_canonical_uuid(b: &[u8]) -> Option<[u64; 2]> {
    if b.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if HYPHENS.contains(&i) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(nibble);
    }
    Some([(value >> 64) as u64, value as u64])
}

fn write_uuid(hi: u64, lo: u64, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let value = (u128::from(hi) << 64) | u128::from(lo);
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if HYPHENS.contains(&i) {
            *slot = b'-';
        } else {
            nibble -= 1;
            *slot = HEX[((value >> (nibble * 4)) & 0xf) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_canonical_uuids_only() {
        let u = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(matches!(Id::new(u), Id::Uuid(_)));
        assert_eq!(Id::new(u).to_string(), u);
        let upper = "0F8FAD5B-D9CB-469F-A165-70867728950E";
        assert!(matches!(Id::new(upper), Id::Text(_)));
        assert_eq!(Id::new(upper).to_string(), upper);
        assert!(matches!(Id::new("click-1"), Id::Text(_)));
    }

    proptest! {
        #[test]
        fn order_and_text_match_the_original_strings(
            a in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[ -~]{0,12}",
            b in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[ -~]{0,12}",
        ) {
            let (ia, ib) = (Id::new(&a), Id::new(&b));
            prop_assert_eq!(ia.to_string(), a.clone());
            prop_assert_eq!(ia.cmp(&ib), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(ia == ib, a == b);
        }
    }
}
