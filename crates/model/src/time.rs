//! Event time: microseconds since the Unix epoch, UTC.
//!
//! The producers write `datetime_occured` either as RFC 3339 (`2024-05-01T12:00:00.250Z`,
//! `...+02:00`) or as `YYYY-MM-DD HH:MM:SS.mmm` without an offset, which is read as UTC. Both are
//! parsed here by hand: timestamp parsing sits on the hot path of every event, and a small exact
//! parser is several times faster than a general date library. Microseconds are BigQuery's
//! TIMESTAMP precision; further digits are accepted and truncated.

use std::fmt;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// The first instant accepted as an event time (1970-01-01T00:00:00Z).
pub const MIN_EVENT_TIME: EventTime = EventTime(0);

/// The first instant no longer accepted (2200-01-01T00:00:00Z). Later timestamps are absurd for
/// click streams and would drag the watermark into the far future.
pub const MAX_EVENT_TIME: EventTime = EventTime(7_258_118_400 * MICROS_PER_SECOND);

/// An instant in event time, in microseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct EventTime(pub i64);

/// The system clock as an event time (the epoch if the clock is set before it). For the
/// services' own bookkeeping: how far ahead of now an event is, the watermark lag, when a base
/// was written. The engine never calls it: it reads no clock.
pub fn wall_clock() -> EventTime {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    EventTime(micros)
}

impl EventTime {
    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        EventTime(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// This instant moved by `micros` (negative moves back), saturating at the ends of `i64`.
    pub const fn offset(self, micros: i64) -> Self {
        EventTime(self.0.saturating_add(micros))
    }

    /// Parses one of the accepted timestamp forms (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        parse_timestamp(text.as_bytes())
    }

    /// Formats as RFC 3339 in UTC with `Z`, showing only the sub-second digits that are not zero
    /// (none, 3 or 6), like chrono's `SecondsFormat::AutoSi`.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(27);
        self.write_rfc3339(&mut out);
        out
    }

    /// Appends the RFC 3339 form (see [`EventTime::to_rfc3339`]) to `out`.
    pub fn write_rfc3339(self, out: &mut String) {
        let (buf, n) = self.rfc3339_ascii();
        // Every byte of the form is ASCII.
        out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
    }

    /// Appends the RFC 3339 form as bytes (ASCII) to `out`, for writers of JSON lines.
    pub fn write_rfc3339_bytes(self, out: &mut Vec<u8>) {
        let (buf, n) = self.rfc3339_ascii();
        out.extend_from_slice(&buf[..n]);
    }

    /// The RFC 3339 form in a buffer on the stack, and its length.
    ///
    /// Runs three times for every output row, so the date (`YYYY-MM-DDT`) of the last day
    /// formatted on this thread is kept (rows of one replay or one batch share a few days),
    /// and digits are written two at a time.
    fn rfc3339_ascii(self) -> ([u8; 32], usize) {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let mut buf = [0u8; 32];
        buf[..DATE_LEN].copy_from_slice(&date_prefix(days));
        put2(&mut buf, 11, sod / 3600);
        buf[13] = b':';
        put2(&mut buf, 14, sod / 60 % 60);
        buf[16] = b':';
        put2(&mut buf, 17, sod % 60);
        let mut n = 19;
        if micros != 0 {
            buf[n] = b'.';
            n += 1;
            if micros % 1000 == 0 {
                let ms = micros / 1000;
                buf[n] = b'0' + (ms / 100) as u8;
                put2(&mut buf, n + 1, ms % 100);
                n += 3;
            } else {
                put2(&mut buf, n, micros / 10_000);
                put2(&mut buf, n + 2, micros / 100 % 100);
                put2(&mut buf, n + 4, micros % 100);
                n += 6;
            }
        }
        buf[n] = b'Z';
        n += 1;
        (buf, n)
    }
}

/// Length of `YYYY-MM-DDT`.
const DATE_LEN: usize = 11;

/// The last two digits of `v` at `buf[at..at + 2]`.
#[inline]
fn put2(buf: &mut [u8], at: usize, v: i64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let i = (v.rem_euclid(100) as usize) * 2;
    buf[at] = PAIRS[i];
    buf[at + 1] = PAIRS[i + 1];
}

/// `YYYY-MM-DDT` of day `days` since 1970-01-01 (the year's last four digits), from the
/// thread's one-day cache when it is the day formatted last.
fn date_prefix(days: i64) -> [u8; DATE_LEN] {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<Option<(i64, [u8; DATE_LEN])>> = const { Cell::new(None) };
    }
    if let Some((d, text)) = LAST.get() {
        if d == days {
            return text;
        }
    }
    let (y, m, d) = civil_from_days(days);
    let mut text = [0u8; DATE_LEN];
    put2(&mut text, 0, y / 100);
    put2(&mut text, 2, y);
    text[4] = b'-';
    put2(&mut text, 5, m);
    text[7] = b'-';
    put2(&mut text, 8, d);
    text[10] = b'T';
    LAST.set(Some((days, text)));
    text
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not in one of the accepted forms.
    #[error(
        "expected RFC 3339 (2024-05-01T12:00:00Z) or `YYYY-MM-DD HH:MM:SS.mmm`, found {found:?}"
    )]
    Format {
        /// The text, cut to 64 characters.
        found: String,
    },
    /// A field is out of range (month 13, hour 25, February 30th, ...).
    #[error("{what} out of range in {found:?}")]
    Range {
        /// Which part of the timestamp.
        what: &'static str,
        /// The text, cut to 64 characters.
        found: String,
    },
    /// The instant is before 1970 or from 2200 on.
    #[error("timestamp {found:?} is outside the accepted years 1970 to 2199")]
    Bounds {
        /// The text, cut to 64 characters.
        found: String,
    },
}

fn shown(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(text);
    s.chars().take(64).collect()
}

fn digits(text: &[u8], at: usize, len: usize) -> Option<i64> {
    let part = text.get(at..at + len)?;
    let mut v: i64 = 0;
    for &b in part {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(b - b'0');
    }
    Some(v)
}

/// Parses a timestamp from bytes; see the module documentation for the accepted forms.
pub fn parse_timestamp(text: &[u8]) -> Result<EventTime, TimeError> {
    let format = || TimeError::Format { found: shown(text) };
    let range = |what| TimeError::Range {
        what,
        found: shown(text),
    };
    if text.len() < 19 {
        return Err(format());
    }
    let year = digits(text, 0, 4).ok_or_else(format)?;
    let month = digits(text, 5, 2).ok_or_else(format)?;
    let day = digits(text, 8, 2).ok_or_else(format)?;
    let hour = digits(text, 11, 2).ok_or_else(format)?;
    let minute = digits(text, 14, 2).ok_or_else(format)?;
    let second = digits(text, 17, 2).ok_or_else(format)?;
    if text[4] != b'-' || text[7] != b'-' || text[13] != b':' || text[16] != b':' {
        return Err(format());
    }
    if !matches!(text[10], b'T' | b't' | b' ') {
        return Err(format());
    }
    if !(1..=12).contains(&month) {
        return Err(range("month"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(range("day"));
    }
    if hour > 23 {
        return Err(range("hour"));
    }
    if minute > 59 {
        return Err(range("minute"));
    }
    // A leap second (:60) is folded into the next second, as most systems do.
    if second > 60 {
        return Err(range("second"));
    }
    let mut pos = 19;
    let mut micros: i64 = 0;
    if text.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < text.len() && text[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(text[pos] - b'0');
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 {
            return Err(format());
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match text.get(pos) {
        None => 0,
        Some(b'Z') | Some(b'z') if pos + 1 == text.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(text, pos + 1, 2).ok_or_else(format)?;
            let (om, end) = if text.get(pos + 3) == Some(&b':') {
                (digits(text, pos + 4, 2).ok_or_else(format)?, pos + 6)
            } else {
                (digits(text, pos + 3, 2).ok_or_else(format)?, pos + 5)
            };
            if end != text.len() {
                return Err(format());
            }
            if oh > 23 || om > 59 {
                return Err(range("offset"));
            }
            let off = oh * 3600 + om * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        Some(_) => return Err(format()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let t = EventTime(secs * MICROS_PER_SECOND + micros);
    if t < MIN_EVENT_TIME || t >= MAX_EVENT_TIME {
        return Err(TimeError::Bounds { found: shown(text) });
    }
    Ok(t)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> i64 {
        EventTime::parse(s).expect(s).as_micros()
    }

    #[test]
    fn parses_both_forms() {
        assert_eq!(t("1970-01-01T00:00:00Z"), 0);
        assert_eq!(t("1970-01-01 00:00:01.5"), 1_500_000);
        assert_eq!(t("2024-05-01 12:00:00.250"), t("2024-05-01T12:00:00.25Z"));
        assert_eq!(t("2024-05-01T14:00:00+02:00"), t("2024-05-01T12:00:00Z"));
        assert_eq!(t("2024-05-01T10:30:00-0130"), t("2024-05-01T12:00:00Z"));
        assert_eq!(
            t("2024-05-01t12:00:00.123456789z"),
            t("2024-05-01T12:00:00.123456Z")
        );
        assert_eq!(t("2000-02-29T00:00:00Z"), 951_782_400 * MICROS_PER_SECOND);
    }

    #[test]
    fn refuses_bad_text_with_reason() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024/05/01 12:00:00",
            "2024-05-01X12:00:00",
            "2024-05-01T12:00:00.",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00+2",
        ] {
            assert!(
                matches!(EventTime::parse(bad), Err(TimeError::Format { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            EventTime::parse("2023-02-29 00:00:00"),
            Err(TimeError::Range { what: "day", .. })
        ));
        assert!(matches!(
            EventTime::parse("2024-13-01 00:00:00"),
            Err(TimeError::Range { what: "month", .. })
        ));
        assert!(matches!(
            EventTime::parse("9999-12-31T23:59:59Z"),
            Err(TimeError::Bounds { .. })
        ));
        assert!(matches!(
            EventTime::parse("1969-12-31T23:59:59Z"),
            Err(TimeError::Bounds { .. })
        ));
    }

    #[test]
    fn formats_auto_precision() {
        assert_eq!(EventTime(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            EventTime(1_250_000).to_rfc3339(),
            "1970-01-01T00:00:01.250Z"
        );
        assert_eq!(
            EventTime(1_000_001).to_rfc3339(),
            "1970-01-01T00:00:01.000001Z"
        );
        assert_eq!(
            EventTime::parse("2026-11-28T04:46:36.5Z").map(|t| t.to_rfc3339()),
            Ok("2026-11-28T04:46:36.500Z".to_string())
        );
        // Back to a day formatted before (the thread keeps only the last day's date).
        assert_eq!(
            EventTime(86_399_000_000).to_rfc3339(),
            "1970-01-01T23:59:59Z"
        );
        assert_eq!(
            EventTime(86_400_000_000).to_rfc3339(),
            "1970-01-02T00:00:00Z"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(micros in 0i64..MAX_EVENT_TIME.0) {
            let text = EventTime(micros).to_rfc3339();
            prop_assert_eq!(EventTime::parse(&text), Ok(EventTime(micros)));
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in ".{0,40}") {
            let _ = EventTime::parse(&s);
        }
    }
}
