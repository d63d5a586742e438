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

    /// Appends the identifier's text to `out` as bytes, for writers of JSON lines (the text
    /// is not escaped: a [`Id::Text`] may need it, see `row::json_id`).
    pub(crate) fn write_uuid_bytes(hi: u64, lo: u64, out: &mut Vec<u8>) {
        let mut buf = [0u8; 36];
        write_uuid(hi, lo, &mut buf);
        out.extend_from_slice(&buf);
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

/// Reads a canonical lowercase UUID (`8-4-4-4-12` hex digits) as two big-endian halves.
///
/// Branch-free over the digits: UUIDs are random, so a per-digit branch on "digit or letter"
/// would be mispredicted half of the time, and this runs twice for every event.
pub(crate) fn parse_canonical_uuid(b: &[u8]) -> Option<[u64; 2]> {
    let b: &[u8; 36] = b.try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let be4 = |at: usize| u64::from(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
    let be8 = |at: usize| (be4(at) << 32) | be4(at + 4);
    let (h0, v0) = hex8(be8(0));
    let (h1, v1) = hex8((be4(9) << 32) | be4(14));
    let (h2, v2) = hex8((be4(19) << 32) | be4(24));
    let (h3, v3) = hex8(be8(28));
    if h0 & h1 & h2 & h3 != ALL_HIGH {
        return None;
    }
    Some([(v0 << 32) | v1, (v2 << 32) | v3])
}

const ONES: u64 = 0x0101_0101_0101_0101;
const ALL_HIGH: u64 = ONES * 0x80;

/// Eight ASCII characters (the first in the high byte) as eight hex digits: returns a mask that
/// is [`ALL_HIGH`] exactly when every character is in `0-9` or `a-f`, and the 32-bit value.
fn hex8(x: u64) -> (u64, u64) {
    // For a byte c < 0x80, ((c | 0x80) - k) has its high bit set exactly when c >= k, and no
    // byte borrows from its neighbour.
    let ge = |k: u8| ((x | ALL_HIGH) - ONES * u64::from(k)) & ALL_HIGH;
    let digit = ge(b'0') & !ge(b'9' + 1);
    let letter = ge(b'a') & !ge(b'f' + 1);
    let valid = (digit | letter) & !x;
    // '0'-'9' are 0x30-0x39 and 'a'-'f' are 0x61-0x66: the low nibble, plus 9 for letters
    // (bit 6).
    let mut v = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    v = ((v >> 4) | v) & 0x00ff_00ff_00ff_00ff;
    v = ((v >> 8) | v) & 0x0000_ffff_0000_ffff;
    v = ((v >> 16) | v) & 0x0000_0000_ffff_ffff;
    (valid, v)
}

/// The canonical text of a UUID given as two big-endian halves: each byte is two digits from
/// a table, and the hyphens go at fixed places (this runs for several ids of every row).
pub(crate) fn write_uuid(hi: u64, lo: u64, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    // Where the text of byte i starts: two digits per byte, one hyphen after bytes 3, 5, 7, 9.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (b, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    for h in HYPHENS {
        out[h] = b'-';
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

    /// The previous, obviously correct reader, as the reference for the branch-free one.
    fn reference_uuid(b: &[u8]) -> Option<[u64; 2]> {
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

    #[test]
    fn every_byte_in_every_position_is_checked() {
        let base = *b"0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(parse_canonical_uuid(&base).is_some());
        for i in 0..36 {
            for c in 0..=255u8 {
                let mut b = base;
                b[i] = c;
                assert_eq!(parse_canonical_uuid(&b), reference_uuid(&b), "{i} {c}");
            }
        }
        assert_eq!(parse_canonical_uuid(&base[..35]), None);
    }

    proptest! {
        #[test]
        fn uuid_reader_matches_the_reference(
            s in "[0-9a-fA-F/:@`g-]{8}-[0-9a-f]{4}-[0-9a-fG]{4}-[0-9a-f]{4}-[0-9a-f\\x80\\u{e9}]{12}"
        ) {
            prop_assert_eq!(parse_canonical_uuid(s.as_bytes()), reference_uuid(s.as_bytes()));
        }

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
