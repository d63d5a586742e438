//! The fast path of message parsing: a hand-written, single-pass, validating JSON scanner for the
//! flat click and checkout objects (docs/design.md §2).
//!
//! One pass over the line, sixteen bytes at a time (SSE2 or NEON through the safe `wide`
//! crate), first learns whether it is pure ASCII (then it is UTF-8, and no further check is
//! needed), whether it holds any byte below 0x20 (if not, strings need no check for raw control
//! characters) or any backslash, and where its quotes are, as a bitmap. In a line of up to
//! 1 KiB without backslashes or control bytes, which is every producer message, each quote
//! opens or closes a string, so the end of a string is the next set bit. Otherwise string ends
//! are found eight bytes at a time with word arithmetic (SWAR), escapes decoded on the way.
//!
//! Then the scanner walks the top-level object once. The value of a known key is read straight
//! into what [`Click`] or [`Checkout`] needs: identifiers become [`Id`]s (a canonical UUID is
//! recognised in place and packed without allocating), `user_id` an integer,
//! `datetime_occured` an [`EventTime`] read from the borrowed bytes, text fields are copied
//! once. The value of an unknown key is skipped but still validated as JSON.
//!
//! The contract is to accept exactly the messages that the serde_json fast path of
//! [`crate::event`] accepted (`serde_json::from_str` into the derived `RawClick`/`RawCheckout`,
//! after one UTF-8 check of the whole line), with the same result. That pins down details of
//! serde_json 1.0 that a generic JSON parser would get differently:
//! - Keys and the strings of known fields are fully checked: escapes are decoded and a `\u`
//!   surrogate must be a proper high-low pair. Strings of skipped values only need well-formed
//!   escapes (`\u` and four hex digits), so a lone surrogate there is accepted, as serde_json's
//!   `IgnoredAny` does. Raw control characters (below 0x20) are refused in every string.
//! - Numbers follow the JSON grammar (`01`, `1.`, `.5`, `-` are refused). An integer that fits
//!   `u64` (or, negative, `i64`) is an integer; anything else, `-0` included, is a float. Floats of
//!   known fields are converted by serde_json itself unless the conversion is one exact IEEE
//!   operation, so the values are bit-identical. Skipped numbers are only checked for grammar
//!   (`1e400` is fine there, as it is for serde_json).
//! - A known key given twice is refused (serde's derive does; the slow path then decides). An
//!   unknown key may repeat.
//! - Nesting of skipped values is unlimited in serde_json; the scanner tracks 128 levels and
//!   answers [`ScanOutcome::Defer`] beyond that, so the caller hands the message to serde_json.
//! - Only an object is a message. (serde's derive would also read a JSON array as the struct's
//!   fields in order; that was never meant to be accepted, and the slow path refuses it.)
//!
//! The scanner never explains a refusal: the slow path of [`crate::event`] does that.

use std::borrow::Cow;
use std::ops::Range;
use std::str::FromStr;

use crate::details::{CheckoutDetails, DetailTexts};
use crate::event::{amount_from_text, user_id_from_text, Checkout, Click, UserId};
use crate::id::{parse_canonical_uuid, Id};
use crate::time::{parse_timestamp, EventTime};

use wide::u8x16;

/// What the scanner made of a message.
#[derive(Debug, PartialEq)]
pub(crate) enum ScanOutcome<T> {
    /// The message is valid; this is what serde_json's fast path would have produced.
    Done(T),
    /// serde_json's fast path would refuse the message too.
    Reject,
    /// Beyond what the scanner handles (very deep nesting): ask serde_json.
    Defer,
}

/// Why scanning stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Reject,
    Defer,
}

type R<T> = Result<T, Stop>;

impl<T> From<R<T>> for ScanOutcome<T> {
    fn from(r: R<T>) -> Self {
        match r {
            Ok(v) => ScanOutcome::Done(v),
            Err(Stop::Reject) => ScanOutcome::Reject,
            Err(Stop::Defer) => ScanOutcome::Defer,
        }
    }
}

/// Scans one click message.
pub(crate) fn click(bytes: &[u8]) -> ScanOutcome<Click> {
    scan_click(bytes, true).into()
}

/// Scans one checkout message.
pub(crate) fn checkout(bytes: &[u8]) -> ScanOutcome<Checkout> {
    scan_checkout(bytes, true).into()
}

/// [`click`] without the quote bitmap, so that tests cover both ways of finding string ends.
#[cfg(test)]
pub(crate) fn click_unindexed(bytes: &[u8]) -> ScanOutcome<Click> {
    scan_click(bytes, false).into()
}

/// [`checkout`] without the quote bitmap.
#[cfg(test)]
pub(crate) fn checkout_unindexed(bytes: &[u8]) -> ScanOutcome<Checkout> {
    scan_checkout(bytes, false).into()
}

fn scan_click(bytes: &[u8], index: bool) -> R<Click> {
    let mut cur = Cursor::new(bytes, index)?;
    let mut click_id = Slot::default();
    let mut user_id = Slot::default();
    let mut product_id = Slot::default();
    let mut time = Slot::default();
    cur.expect(b'{')?;
    let mut scratch = String::new();
    while let Some(key) = cur.next_key(&mut scratch)? {
        match key {
            b"click_id" => click_id.set(cur.id()?)?,
            b"user_id" => user_id.set(cur.user_id()?)?,
            b"product_id" => product_id.set(cur.id()?)?,
            b"datetime_occured" => time.set(cur.time()?)?,
            _ => cur.skip_value()?,
        }
    }
    cur.end()?;
    Ok(Click {
        click_id: click_id.required()?,
        user_id: user_id.required()?,
        product_id: product_id.required()?,
        time: time.required()?,
    })
}

fn scan_checkout(bytes: &[u8], index: bool) -> R<Checkout> {
    let mut cur = Cursor::new(bytes, index)?;
    // Five text fields to copy: one UTF-8 check of the line is cheaper than five.
    cur.check_utf8()?;
    let mut checkout_id = Slot::default();
    let mut user_id = Slot::default();
    let mut product_id = Slot::default();
    let mut time = Slot::default();
    let mut payment_method = Slot::default();
    let mut total_amount = Slot::default();
    let mut shipping_address = Slot::default();
    let mut billing_address = Slot::default();
    let mut user_agent = Slot::default();
    let mut ip_address = Slot::default();
    cur.expect(b'{')?;
    let mut scratch = String::new();
    while let Some(key) = cur.next_key(&mut scratch)? {
        match key {
            b"checkout_id" => checkout_id.set(cur.id()?)?,
            b"user_id" => user_id.set(cur.user_id()?)?,
            b"product_id" => product_id.set(cur.id()?)?,
            b"datetime_occured" => time.set(cur.time()?)?,
            b"payment_method" => payment_method.set(cur.detail_text()?)?,
            b"total_amount" => total_amount.set(cur.amount()?)?,
            b"shipping_address" => shipping_address.set(cur.detail_text()?)?,
            b"billing_address" => billing_address.set(cur.detail_text()?)?,
            b"user_agent" => user_agent.set(cur.detail_text()?)?,
            b"ip_address" => ip_address.set(cur.detail_text()?)?,
            _ => cur.skip_value()?,
        }
    }
    cur.end()?;
    let texts = [
        payment_method.optional(),
        shipping_address.optional(),
        billing_address.optional(),
        user_agent.optional(),
        ip_address.optional(),
    ];
    // A text borrowed from the line had no escape, so it has no quote or backslash, and the
    // scanner refuses raw control characters: it needs no escaping in JSON.
    let known_plain = texts
        .iter()
        .flatten()
        .all(|t| matches!(t, Cow::Borrowed(_)));
    let [payment_method, shipping_address, billing_address, user_agent, ip_address] = texts;
    let details = CheckoutDetails::new(
        DetailTexts {
            payment_method: payment_method.as_deref(),
            shipping_address: shipping_address.as_deref(),
            billing_address: billing_address.as_deref(),
            user_agent: user_agent.as_deref(),
            ip_address: ip_address.as_deref(),
        },
        known_plain,
    );
    Ok(Checkout {
        checkout_id: checkout_id.required()?,
        user_id: user_id.required()?,
        product_id: product_id.required()?,
        time: time.required()?,
        total_amount: total_amount.optional(),
        details,
    })
}

/// One known field: not seen, seen as null (`Some(None)`), or seen with a value.
struct Slot<T>(Option<Option<T>>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot(None)
    }
}

impl<T> Slot<T> {
    /// Records the field's value; a second occurrence of the key refuses the message.
    #[inline]
    fn set(&mut self, value: Option<T>) -> R<()> {
        if self.0.is_some() {
            return Err(Stop::Reject);
        }
        self.0 = Some(value);
        Ok(())
    }

    #[inline]
    fn required(self) -> R<T> {
        self.0.flatten().ok_or(Stop::Reject)
    }

    #[inline]
    fn optional(self) -> Option<T> {
        self.0.flatten()
    }
}

/// A string value: where its raw bytes are in the line when there was no escape, else the
/// decoded text.
enum Str {
    Raw(Range<usize>),
    Decoded(String),
}

/// A JSON scalar of a known field, before the field's rules apply.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Str(Str),
    Num(NumLit<'a>),
}

/// A number literal, checked against the JSON grammar.
#[derive(Clone, Copy)]
struct NumLit<'a> {
    /// The literal as written (ASCII).
    text: &'a [u8],
    negative: bool,
    /// The decimal digits (integer and fraction part) as one integer; meaningless (wrapped) past
    /// 19 digits.
    mantissa: u64,
    /// How many digits `mantissa` holds.
    digits: u32,
    /// Digits after the decimal point; `None` without a decimal point.
    fraction: Option<u32>,
    exponent: bool,
}

/// A number as serde_json classifies it.
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

/// Powers of ten that are exact in `f64`, for the fast decimal conversion.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

impl<'a> NumLit<'a> {
    /// Classifies and converts as serde_json's `deserialize_any` does.
    fn number(self) -> R<Number> {
        if !self.exponent {
            match self.fraction {
                // Up to 18 digits always fit; `-0` is a float for serde_json.
                None if self.digits <= 18 => {
                    return Ok(match (self.negative, self.mantissa) {
                        (false, m) => Number::U64(m),
                        (true, 0) => Number::F64(-0.0),
                        // mantissa < 10^18 < 2^63: the negation is exact.
                        (true, m) => Number::I64(-(m as i64)),
                    });
                }
                // A mantissa below 2^53 and a power of ten up to 10^15 are exact, so one
                // division gives the correctly rounded value, as serde_json's does.
                Some(frac) if self.digits <= 15 => {
                    let f = self.mantissa as f64 / POW10[frac as usize];
                    return Ok(Number::F64(if self.negative { -f } else { f }));
                }
                _ => {}
            }
        }
        self.number_by_serde()
    }

    #[cold]
    fn number_by_serde(self) -> R<Number> {
        let text = std::str::from_utf8(self.text).map_err(|_| Stop::Reject)?;
        let n = serde_json::Number::from_str(text).map_err(|_| Stop::Reject)?;
        if let Some(v) = n.as_u64() {
            Ok(Number::U64(v))
        } else if let Some(v) = n.as_i64() {
            Ok(Number::I64(v))
        } else {
            n.as_f64().map(Number::F64).ok_or(Stop::Reject)
        }
    }

    /// The literal of an integer, which is its canonical decimal text.
    fn integer_text(self) -> R<&'a str> {
        std::str::from_utf8(self.text).map_err(|_| Stop::Reject)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = ONES * 0x80;

/// Flags (high bit of each byte) the bytes of `x` that are `"` or `\`, and with `control` also
/// those below 0x20. Only the lowest flag is exact (a borrow can flag a byte above a true one),
/// which is all a search for the first needs.
#[inline(always)]
fn special_bytes(x: u64, control: bool) -> u64 {
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    let mut m = (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
    if control {
        m |= x.wrapping_sub(ONES * 0x20) & !x;
    }
    m & HIGH
}

/// Lines up to this many bytes get a bitmap of their quotes (see [`Cursor::quotes`]).
const INDEXED_BYTES: usize = 1024;

/// What one pass over the line, sixteen bytes at a time, learns about it.
struct LineFacts {
    non_ascii: bool,
    control: bool,
    backslash: bool,
}

/// Running accumulators of [`scan_line`].
struct Facts {
    or: u8x16,
    min: u8x16,
    backslashes: u8x16,
}

impl Facts {
    /// Folds in 64 bytes and returns the bits of their quotes.
    #[inline(always)]
    fn block(&mut self, block: &[u8; 64]) -> u64 {
        let (chunks, _) = block.as_chunks::<16>();
        let mut quotes = 0u64;
        for (i, chunk) in chunks.iter().enumerate() {
            let v = u8x16::new(*chunk);
            self.or |= v;
            self.min = self.min.min(v);
            self.backslashes |= v.simd_eq(u8x16::splat(b'\\'));
            quotes |= u64::from(v.simd_eq(u8x16::splat(b'"')).to_bitmask()) << (i * 16);
        }
        quotes
    }
}

/// Learns [`LineFacts`] and sets the bits of `quotes` (one per byte of the first
/// [`INDEXED_BYTES`]) where the line has a `"`. Works on 64-byte blocks; the last, partial one
/// is read as the line's last 64 bytes (which overlap the block before), or padded with spaces
/// in a line shorter than that (spaces change none of the facts).
fn scan_line(bytes: &[u8], quotes: &mut [u64; INDEXED_BYTES / 64]) -> LineFacts {
    let mut facts = Facts {
        or: u8x16::splat(0),
        min: u8x16::splat(0xff),
        backslashes: u8x16::splat(0),
    };
    let (blocks, rest) = bytes.as_chunks::<64>();
    for (i, block) in blocks.iter().enumerate() {
        let bits = facts.block(block);
        if let Some(word) = quotes.get_mut(i) {
            *word = bits;
        }
    }
    if !rest.is_empty() {
        let bits = match bytes.last_chunk::<64>() {
            Some(last) => facts.block(last) >> (64 - rest.len()),
            None => {
                let mut padded = [b' '; 64];
                padded[..rest.len()].copy_from_slice(rest);
                facts.block(&padded)
            }
        };
        if let Some(word) = quotes.get_mut(blocks.len()) {
            *word = bits;
        }
    }
    LineFacts {
        non_ascii: facts.or.to_bitmask() != 0,
        control: facts.min.simd_lt(u8x16::splat(0x20)).any(),
        backslash: facts.backslashes.any(),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

fn hex_val(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// A cursor over one message, already known to be UTF-8.
struct Cursor<'a> {
    bytes: &'a [u8],
    /// The line as text, once checked as UTF-8 (only when needed: a line of ASCII is UTF-8).
    text: Option<&'a str>,
    pos: usize,
    /// Whether the message has any byte below 0x20; without one, strings need no check for raw
    /// control characters.
    has_control: bool,
    /// Whether no member of the top-level object has been read yet.
    first_member: bool,
    /// Whether [`Cursor::quotes`] is used: the line is at most [`INDEXED_BYTES`] long and has
    /// no backslash and no control byte, so every quote opens or closes a string and the end of
    /// a string is the next set bit.
    indexed: bool,
    /// One bit per byte, set where the line has a `"`.
    quotes: [u64; INDEXED_BYTES / 64],
}

impl<'a> Cursor<'a> {
    #[inline]
    fn new(bytes: &'a [u8], index: bool) -> R<Self> {
        let mut quotes = [0; INDEXED_BYTES / 64];
        let facts = scan_line(bytes, &mut quotes);
        let mut cur = Cursor {
            bytes,
            text: None,
            pos: 0,
            has_control: facts.control,
            first_member: true,
            indexed: index && bytes.len() <= INDEXED_BYTES && !facts.backslash && !facts.control,
            quotes,
        };
        if facts.non_ascii {
            cur.check_utf8()?;
        }
        Ok(cur)
    }

    /// Checks the whole line as UTF-8 (once), so that text fields are cut from it for free.
    fn check_utf8(&mut self) -> R<()> {
        if self.text.is_none() {
            self.text = Some(std::str::from_utf8(self.bytes).map_err(|_| Stop::Reject)?);
        }
        Ok(())
    }

    /// The text of the line at `range`, which is cut at ASCII quotes (so at character
    /// boundaries).
    #[inline]
    fn text_at(&self, range: Range<usize>) -> R<&'a str> {
        match self.text {
            Some(text) => text.get(range),
            None => self
                .bytes
                .get(range)
                .and_then(|b| std::str::from_utf8(b).ok()),
        }
        .ok_or(Stop::Reject)
    }

    /// The text of a string value.
    #[inline]
    fn str_text(&self, s: Str) -> R<Cow<'a, str>> {
        match s {
            Str::Raw(range) => self.text_at(range).map(Cow::Borrowed),
            Str::Decoded(s) => Ok(Cow::Owned(s)),
        }
    }

    /// The bytes of a string value.
    #[inline]
    fn str_bytes<'s>(&self, s: &'s Str) -> &'s [u8]
    where
        'a: 's,
    {
        match s {
            Str::Raw(range) => self.bytes.get(range.clone()).unwrap_or_default(),
            Str::Decoded(s) => s.as_bytes(),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace and returns the next byte without consuming it.
    #[inline(always)]
    fn peek_ws(&mut self) -> Option<u8> {
        // Compact JSON has none: every whitespace byte is at most b' '.
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => Some(b),
            _ => self.skip_ws(),
        }
    }

    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !is_ws(b) {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Skips whitespace, then consumes `want` or refuses.
    #[inline]
    fn expect(&mut self, want: u8) -> R<()> {
        if self.peek_ws() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::Reject)
        }
    }

    /// Moves to the next member of the top-level object (whose `{` is consumed) and returns its
    /// key, with the cursor on the value after the colon; `None` after the closing `}`. The
    /// value must be consumed before the next call. A key with escapes is decoded into
    /// `scratch`.
    #[inline(always)]
    fn next_key<'s>(&mut self, scratch: &'s mut String) -> R<Option<&'s [u8]>>
    where
        'a: 's,
    {
        match self.peek_ws() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(b'"') if self.first_member => {}
            Some(b',') if !self.first_member => {
                self.pos += 1;
                if self.peek_ws() != Some(b'"') {
                    return Err(Stop::Reject);
                }
            }
            _ => return Err(Stop::Reject),
        }
        self.first_member = false;
        let start = self.pos + 1;
        let end = self.string_stop(start)?;
        let bytes = self.bytes;
        let key: &'s [u8] = if bytes[end] == b'"' {
            self.pos = end + 1;
            &bytes[start..end]
        } else {
            *scratch = self.escaped_string(start)?;
            scratch.as_bytes()
        };
        self.expect(b':')?;
        Ok(Some(key))
    }

    /// Requires the end of the message, after optional whitespace.
    #[inline]
    fn end(&mut self) -> R<()> {
        match self.peek_ws() {
            None => Ok(()),
            Some(_) => Err(Stop::Reject),
        }
    }

    /// The position of the first `"` or `\` at or after `from`, inside a string; a raw control
    /// character before it refuses the message. With the quote bitmap, the next set bit; else
    /// eight bytes at a time (most strings here are short, where this beats `memchr`'s set-up).
    #[inline(always)]
    fn string_stop(&self, from: usize) -> R<usize> {
        if self.indexed {
            let mut word = from / 64;
            let mut bits = self.quotes.get(word).ok_or(Stop::Reject)? & (u64::MAX << (from % 64));
            while bits == 0 {
                word += 1;
                bits = *self.quotes.get(word).ok_or(Stop::Reject)?;
            }
            return Ok(word * 64 + bits.trailing_zeros() as usize);
        }
        let control = self.has_control;
        let mut i = from;
        while let Some(chunk) = self.bytes.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
            let m = special_bytes(u64::from_le_bytes(*chunk), control);
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                return match self.bytes.get(i) {
                    Some(b'"' | b'\\') => Ok(i),
                    _ => Err(Stop::Reject),
                };
            }
            i += 8;
        }
        while let Some(&b) = self.bytes.get(i) {
            match b {
                b'"' | b'\\' => return Ok(i),
                0..=0x1f => return Err(Stop::Reject),
                _ => i += 1,
            }
        }
        Err(Stop::Reject)
    }

    /// Reads a string whose opening quote is consumed, decoding escapes and checking `\u`
    /// surrogates as serde_json does for strings it keeps.
    #[inline(always)]
    fn string(&mut self) -> R<Str> {
        let start = self.pos;
        let end = self.string_stop(start)?;
        if self.bytes[end] == b'"' {
            self.pos = end + 1;
            return Ok(Str::Raw(start..end));
        }
        self.escaped_string(start).map(Str::Decoded)
    }

    /// Decodes a string with escapes from `start` (after the opening quote) to its closing
    /// quote, and moves past it.
    #[cold]
    fn escaped_string(&mut self, start: usize) -> R<String> {
        let mut out = Vec::new();
        self.pos = start;
        loop {
            let end = self.string_stop(self.pos)?;
            out.extend_from_slice(&self.bytes[self.pos..end]);
            self.pos = end + 1;
            if self.bytes[end] == b'"' {
                // Raw pieces are cut at ASCII bytes of a UTF-8 line, escapes add whole chars.
                return String::from_utf8(out).map_err(|_| Stop::Reject);
            }
            let esc = self.peek().ok_or(Stop::Reject)?;
            self.pos += 1;
            let c = match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\x08',
                b'f' => '\x0c',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape()?,
                _ => return Err(Stop::Reject),
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> R<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Stop::Reject)?;
        let mut v = 0u16;
        for &d in digits {
            v = (v << 4) | hex_val(d).ok_or(Stop::Reject)?;
        }
        self.pos += 4;
        Ok(v)
    }

    /// The character of a `\u` escape (after `\u`): a BMP character or a surrogate pair.
    fn unicode_escape(&mut self) -> R<char> {
        let n = self.hex4()?;
        let code = match n {
            0xDC00..=0xDFFF => return Err(Stop::Reject),
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(Stop::Reject);
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Stop::Reject);
                }
                ((u32::from(n - 0xD800) << 10) | u32::from(low - 0xDC00)) + 0x1_0000
            }
            _ => u32::from(n),
        };
        char::from_u32(code).ok_or(Stop::Reject)
    }

    /// Skips a string whose opening quote is consumed, checking only that escapes are well
    /// formed (serde_json's `IgnoredAny`).
    #[inline(always)]
    fn skip_string(&mut self) -> R<()> {
        loop {
            let end = self.string_stop(self.pos)?;
            self.pos = end + 1;
            if self.bytes[end] == b'"' {
                return Ok(());
            }
            let esc = self.peek().ok_or(Stop::Reject)?;
            self.pos += 1;
            match esc {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    self.hex4()?;
                }
                _ => return Err(Stop::Reject),
            }
        }
    }

    /// Reads a number literal starting at the cursor.
    #[inline]
    fn number(&mut self) -> R<NumLit<'a>> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut mantissa: u64 = 0;
        let mut digits: u32 = 0;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                digits = 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(Stop::Reject);
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    digits += 1;
                    self.pos += 1;
                }
            }
            _ => return Err(Stop::Reject),
        }
        let mut fraction = None;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let mut n = 0;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                n += 1;
                self.pos += 1;
            }
            if n == 0 {
                return Err(Stop::Reject);
            }
            digits += n;
            fraction = Some(n);
        }
        let mut exponent = false;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            exponent = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(Stop::Reject);
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        Ok(NumLit {
            text: &self.bytes[start..self.pos],
            negative,
            mantissa,
            digits,
            fraction,
            exponent,
        })
    }

    /// Consumes `word` (a literal) or refuses.
    #[inline]
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Stop::Reject)
        }
    }

    /// Reads the scalar value of a known field. Arrays and objects are refused: no known field
    /// takes them.
    #[inline]
    fn scalar(&mut self) -> R<Scalar<'a>> {
        match self.peek_ws().ok_or(Stop::Reject)? {
            b'"' => {
                self.pos += 1;
                self.string().map(Scalar::Str)
            }
            b'-' | b'0'..=b'9' => self.number().map(Scalar::Num),
            b'n' => self.literal(b"null").map(|()| Scalar::Null),
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            _ => Err(Stop::Reject),
        }
    }

    /// The common case of a number: 1 to 18 digits without sign, fraction or exponent (so an
    /// integer for serde_json too). `None`, with the cursor unmoved, for anything else.
    #[inline]
    fn small_integer(&mut self) -> Option<i64> {
        let mut i = self.pos;
        while self.bytes.get(i).is_some_and(|&b| is_ws(b)) {
            i += 1;
        }
        let start = i;
        let mut v: i64 = match self.bytes.get(i) {
            Some(&d @ b'1'..=b'9') => i64::from(d - b'0'),
            _ => return None,
        };
        i += 1;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(i) {
            if i - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
            i += 1;
        }
        if matches!(self.bytes.get(i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.pos = i;
        Some(v)
    }

    /// An identifier: a non-empty string or an integer (kept as its decimal text).
    #[inline]
    fn id(&mut self) -> R<Option<Id>> {
        // The common case: a canonical UUID (hex digits and hyphens, so nothing to unescape)
        // and its closing quote.
        if self.peek_ws() == Some(b'"') {
            let start = self.pos + 1;
            if let Some(s) = self.bytes.get(start..start + 37) {
                if s[36] == b'"' {
                    if let Some(v) = parse_canonical_uuid(&s[..36]) {
                        self.pos = start + 37;
                        return Ok(Some(Id::Uuid(v)));
                    }
                }
            }
        }
        match self.scalar()? {
            Scalar::Null => Ok(None),
            Scalar::Str(s) if self.str_bytes(&s).is_empty() => Err(Stop::Reject),
            Scalar::Str(s) => Ok(Some(Id::new(&self.str_text(s)?))),
            Scalar::Num(n) => match n.number()? {
                // An integer literal in range is already its canonical decimal text.
                Number::U64(_) | Number::I64(_) => Ok(Some(Id::new(n.integer_text()?))),
                Number::F64(_) => Err(Stop::Reject),
            },
            Scalar::Bool(_) => Err(Stop::Reject),
        }
    }

    /// `user_id`: an integer that fits `i64`, or a string of digits.
    #[inline]
    fn user_id(&mut self) -> R<Option<UserId>> {
        if let Some(v) = self.small_integer() {
            return Ok(Some(v));
        }
        match self.scalar()? {
            Scalar::Null => Ok(None),
            Scalar::Num(n) => match n.number()? {
                Number::U64(v) => UserId::try_from(v).map(Some).map_err(|_| Stop::Reject),
                Number::I64(v) => Ok(Some(v)),
                Number::F64(_) => Err(Stop::Reject),
            },
            Scalar::Str(s) => user_id_from_text(&self.str_text(s)?)
                .map(Some)
                .map_err(|_| Stop::Reject),
            Scalar::Bool(_) => Err(Stop::Reject),
        }
    }

    /// A text field: any scalar, numbers and booleans as their JSON text, or null.
    #[inline]
    fn text(&mut self) -> R<Option<Cow<'a, str>>> {
        Ok(match self.scalar()? {
            Scalar::Null => None,
            Scalar::Str(s) => Some(self.str_text(s)?),
            Scalar::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
            Scalar::Num(n) => Some(match n.number()? {
                Number::U64(_) | Number::I64(_) => Cow::Borrowed(n.integer_text()?),
                Number::F64(f) => Cow::Owned(serde_json::Value::from(f).to_string()),
            }),
        })
    }

    /// A text of the checkout's details, borrowed from the line unless it had escapes (the
    /// details are copied into one buffer afterwards).
    #[inline]
    fn detail_text(&mut self) -> R<Option<Cow<'a, str>>> {
        // The common case: a string without escapes.
        if self.peek_ws() == Some(b'"') {
            let start = self.pos + 1;
            let end = self.string_stop(start)?;
            if self.bytes[end] == b'"' {
                self.pos = end + 1;
                return Ok(Some(Cow::Borrowed(self.text_at(start..end)?)));
            }
        }
        self.text()
    }

    /// `datetime_occured`: a text field that must hold a timestamp.
    #[inline]
    fn time(&mut self) -> R<Option<EventTime>> {
        if self.peek_ws() == Some(b'"') {
            self.pos += 1;
            let s = self.string()?;
            return parse_timestamp(self.str_bytes(&s))
                .map(Some)
                .map_err(|_| Stop::Reject);
        }
        match self.text()? {
            None => Ok(None),
            Some(t) => parse_timestamp(t.as_bytes())
                .map(Some)
                .map_err(|_| Stop::Reject),
        }
    }

    /// `total_amount`: a number, a numeric string, or null.
    #[inline]
    fn amount(&mut self) -> R<Option<f64>> {
        match self.scalar()? {
            Scalar::Null => Ok(None),
            Scalar::Num(n) => Ok(Some(match n.number()? {
                Number::U64(v) => v as f64,
                Number::I64(v) => v as f64,
                Number::F64(f) => f,
            })),
            Scalar::Str(s) => amount_from_text(&self.str_text(s)?)
                .map(Some)
                .map_err(|_| Stop::Reject),
            Scalar::Bool(_) => Err(Stop::Reject),
        }
    }

    /// Skips and validates any JSON value (an unknown field's).
    #[inline]
    fn skip_value(&mut self) -> R<()> {
        match self.peek_ws().ok_or(Stop::Reject)? {
            b'"' => {
                self.pos += 1;
                self.skip_string()
            }
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => self.skip_value_slow(),
        }
    }

    /// [`Cursor::skip_value`] for any value, iteratively. The open arrays and objects are a
    /// stack of bits (1 = object); past 128 levels the scanner defers.
    fn skip_value_slow(&mut self) -> R<()> {
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value is expected here.
            match self.peek_ws().ok_or(Stop::Reject)? {
                b'"' => {
                    self.pos += 1;
                    self.skip_string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                open @ (b'[' | b'{') => {
                    if depth == u128::BITS {
                        return Err(Stop::Defer);
                    }
                    self.pos += 1;
                    let object = open == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek_ws() == Some(close) {
                        self.pos += 1;
                    } else {
                        stack = (stack << 1) | u128::from(object);
                        depth += 1;
                        if object {
                            self.skip_member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Stop::Reject),
            }
            // After a value: close what ends here, then a comma starts the next value.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = stack & 1 == 1;
                match self.peek_ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.skip_member_key()?;
                        }
                        break;
                    }
                    Some(b']') if !object => {}
                    Some(b'}') if object => {}
                    _ => return Err(Stop::Reject),
                }
                self.pos += 1;
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// Skips `"key":` inside a skipped object.
    fn skip_member_key(&mut self) -> R<()> {
        self.expect(b'"')?;
        self.skip_string()?;
        self.expect(b':')
    }
}
