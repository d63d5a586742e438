//! The scanner ([`crate::scan`]) against the serde_json fast path it replaced and against the
//! slow path, on generated and hand-written messages.
//!
//! For every text, [`check`] asserts that:
//! 0. the scanner gives the same result with and without its quote bitmap;
//! 1. the scanner gives exactly what serde_json's derive gives (the same click or checkout, bit
//!    for bit, or a refusal), except for a top-level array (see the `scan` module docs);
//! 2. `parse_click`/`parse_checkout` give the same result as before the scanner (serde fast
//!    path, then slow path), reasons included;
//! 3. for a "clean" message (no duplicate keys, nothing that serde_json's `IgnoredAny` accepts
//!    but its `Value` refuses), the fast path succeeds exactly when the slow path does, with the
//!    same value.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::scan::{self, ScanOutcome};

fn slow_click(b: &[u8]) -> Result<Click, BadMessage> {
    diagnose(b, EventKind::Click).and_then(|o| click_from_value(&o))
}

fn slow_checkout(b: &[u8]) -> Result<Checkout, BadMessage> {
    diagnose(b, EventKind::Checkout).and_then(|o| checkout_from_value(&o))
}

/// `parse_click` as it was before the scanner.
fn old_parse_click(b: &[u8]) -> Result<Click, BadMessage> {
    serde_click(b).map_or_else(|| slow_click(b), Ok)
}

/// `parse_checkout` as it was before the scanner.
fn old_parse_checkout(b: &[u8]) -> Result<Checkout, BadMessage> {
    serde_checkout(b).map_or_else(|| slow_checkout(b), Ok)
}

/// Equality that also tells `0.0` from `-0.0` (Debug prints every f64 distinctly).
fn same<T: fmt::Debug + PartialEq>(a: &T, b: &T) -> bool {
    a == b && format!("{a:?}") == format!("{b:?}")
}

fn is_top_level_array(b: &[u8]) -> bool {
    b.iter()
        .find(|c| !matches!(c, b' ' | b'\n' | b'\t' | b'\r'))
        .is_some_and(|&c| c == b'[')
}

#[allow(clippy::too_many_arguments)]
fn check_kind<T: fmt::Debug + PartialEq>(
    text: &[u8],
    clean: bool,
    scanned: ScanOutcome<T>,
    unindexed: ScanOutcome<T>,
    serde: Option<T>,
    public: Result<T, BadMessage>,
    old_public: Result<T, BadMessage>,
    slow: Result<T, BadMessage>,
) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(text);
    let array = is_top_level_array(text);
    match (&scanned, &unindexed) {
        (ScanOutcome::Done(a), ScanOutcome::Done(b)) => {
            prop_assert!(same(a, b), "{shown}: {a:?} != {b:?}")
        }
        (a, b) => prop_assert_eq!(a, b, "{} (with and without the quote bitmap)", shown),
    }
    match (&scanned, &serde) {
        (ScanOutcome::Done(a), Some(b)) => prop_assert!(same(a, b), "{shown}: {a:?} != {b:?}"),
        (ScanOutcome::Reject, None) => {}
        (ScanOutcome::Reject, Some(_)) if array => {}
        (ScanOutcome::Defer, _) => prop_assert!(false, "{shown}: deferred"),
        (a, b) => prop_assert!(false, "{shown}: scanner {a:?}, serde {b:?}"),
    }
    if !array {
        match (&public, &old_public) {
            (Ok(a), Ok(b)) => prop_assert!(same(a, b), "{shown}: {a:?} != {b:?}"),
            (a, b) => prop_assert_eq!(a, b, "{}", shown),
        }
    }
    if clean {
        match (&scanned, &slow) {
            (ScanOutcome::Done(a), Ok(b)) => prop_assert!(same(a, b), "{shown}: {a:?} != {b:?}"),
            (ScanOutcome::Reject, Err(_)) => {}
            (a, b) => prop_assert!(false, "{shown}: fast {a:?}, slow {b:?}"),
        }
    }
    Ok(())
}

/// Runs every comparison of the module docs on `text`, as a click and as a checkout.
pub(super) fn check(text: &[u8], clean: bool) -> Result<(), TestCaseError> {
    check_kind(
        text,
        clean,
        scan::click(text),
        scan::click_unindexed(text),
        serde_click(text),
        parse_click(text),
        old_parse_click(text),
        slow_click(text),
    )?;
    check_kind(
        text,
        clean,
        scan::checkout(text),
        scan::checkout_unindexed(text),
        serde_checkout(text),
        parse_checkout(text),
        old_parse_checkout(text),
        slow_checkout(text),
    )
}

// ---------------------------------------------------------------------------------------------
// Generators

/// What the generators may produce.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Leave out what serde_json's `IgnoredAny` accepts and its `Value` refuses (lone
    /// surrogates, numbers out of `f64` range), so that the fast and slow paths must agree.
    uniform: bool,
    /// Only valid JSON and values of the right kind for known fields, every required field.
    valid: bool,
}

/// Pieces of a JSON string's body (as written between the quotes). `kept` strings (keys and
/// values of known fields) never get lone surrogates in valid mode.
fn string_piece(mode: Mode, kept: bool) -> BoxedStrategy<String> {
    let mut pieces = vec![
        "a",
        "Z",
        "0",
        " ",
        "-",
        ":",
        "é",
        "😀",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u00e9",
        "\\u0041",
        "\\u0000",
        "\\uD83D\\uDE00",
        "\\ud83d\\ude00",
        "\\uFFFF",
    ];
    if !mode.valid {
        pieces.extend(["\\x", "\\u12", "\\u00g0", "\u{1}", "\t", "\u{1f}"]);
    }
    // Lone surrogates: serde accepts them in skipped strings only; in kept ones they are there to
    // be refused, so not in valid mode.
    let lone_surrogates_allowed = !(mode.uniform || (mode.valid && kept));
    if lone_surrogates_allowed {
        pieces.extend([
            "\\ud800",
            "\\udc00",
            "\\ud800\\u0041",
            "\\ud800\\ud800",
            "\\udbff\\n",
        ]);
    }
    let pieces: Vec<String> = pieces.into_iter().map(String::from).collect();
    prop_oneof![
        4 => "[a-z0-9 ./:-]{0,40}",
        2 => proptest::sample::select(pieces),
    ]
    .boxed()
}

fn json_string(mode: Mode, kept: bool) -> BoxedStrategy<String> {
    proptest::collection::vec(string_piece(mode, kept), 0..4)
        .prop_map(|p| format!("\"{}\"", p.concat()))
        .boxed()
}

/// Number literals, valid and (unless in valid mode) not.
fn number(mode: Mode) -> BoxedStrategy<String> {
    let mut fixed = vec![
        "0",
        "1",
        "-0",
        "17",
        "-17",
        "1.5",
        "1.5e3",
        "1E+2",
        "1e-2",
        "-0.0",
        "0.1",
        "59.97",
        "4.35",
        "1.0000000000000002",
        "0.30000000000000004",
        "123456789.123456789",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "9223372036854775807",
        "9223372036854775808",
        "123456789012345678901234567890",
        "999999999999999999",
        "-999999999999999999",
        "0.000000000000000000001",
        "-1e-400",
        "12345678901234567.5",
    ];
    if !mode.valid {
        fixed.extend([
            "01", "1.", ".5", "-", "1e", "+1", "1.e3", "00", "-01", "1e+", "--1", "0x10",
        ]);
    }
    if !mode.uniform {
        fixed.extend(["1e400", "-1e309"]);
    }
    let fixed: Vec<String> = fixed.into_iter().map(String::from).collect();
    prop_oneof![
        3 => proptest::sample::select(fixed),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u64..100_000, 0u32..4).prop_map(|(c, d)| {
            let p = 10u64.pow(d);
            if d == 0 { c.to_string() } else { format!("{}.{:0w$}", c / p, c % p, w = d as usize) }
        }),
        // Well inside the range, where serde_json's conversion cannot overflow.
        1 => any::<f64>().prop_filter("in range", |f| f.abs() < 1e300).prop_map(|f| format!("{f:?}")),
        1 => any::<f64>().prop_filter("in range", |f| f.abs() < 1e300).prop_map(|f| format!("{f:e}")),
    ]
    .boxed()
}

fn timestamp(mode: Mode) -> BoxedStrategy<String> {
    let mut fixed = vec![
        "\"2024-05-01T12:00:00Z\"",
        "\"2024-05-01T12:00:00.123456789+02:00\"",
        "\"2024-05-01T12:00:00\\u005a\"",
        "\"2024\\u002d05-01 12:00:00\"",
    ];
    if !mode.valid {
        fixed.extend([
            "\"2024-02-30T12:00:00Z\"",
            "\"1969-12-31T23:59:59Z\"",
            "\"soon\"",
            "\"\"",
            "20240501",
        ]);
    }
    prop_oneof![
        (0u32..28, 0u32..86_400, 0u32..1000).prop_map(|(d, s, ms)| format!(
            "\"2026-01-{:02} {:02}:{:02}:{:02}.{ms:03}\"",
            d + 1,
            s / 3600,
            s / 60 % 60,
            s % 60
        )),
        proptest::sample::select(fixed).prop_map(String::from),
    ]
    .boxed()
}

fn uuid(mode: Mode) -> BoxedStrategy<String> {
    let canonical = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
    prop_oneof![
        4 => canonical.prop_map(|u| format!("\"{u}\"")),
        // Not canonical (upper case, wrong length or layout): kept as text.
        1 => "[0-9a-fA-F]{8}-[0-9a-f]{4}-[0-9a-f-]{4}-[0-9a-f]{4}-[0-9a-f]{11,13}"
            .prop_map(|u| format!("\"{u}\"")),
        // Canonical once unescaped.
        1 => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11}"
            .prop_map(|u| format!("\"{u}\\u0030\"")),
        1 => json_string(mode, true).prop_filter("non-empty", move |s| !mode.valid || s != "\"\""),
        1 => (0u64..u64::MAX).prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn literal(mode: Mode) -> BoxedStrategy<String> {
    let mut fixed = vec!["null", "true", "false"];
    if !mode.valid {
        fixed.extend(["nul", "tru", "nulll", "True", "NaN"]);
    }
    proptest::sample::select(fixed)
        .prop_map(String::from)
        .boxed()
}

/// Whitespace between tokens.
fn ws() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just(String::new()),
        2 => Just(" ".to_string()),
        1 => proptest::sample::select(vec![" ", "\n", "\t", "\r\n  ", "  \t"]).prop_map(String::from),
    ]
    .boxed()
}

/// Any JSON value, nested, with whitespace (for unknown fields).
fn any_value(mode: Mode) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        3 => json_string(mode, false),
        2 => number(mode),
        1 => literal(mode),
    ];
    let mut malformed = vec![
        "[1,]",
        "[,1]",
        "{\"a\"}",
        "{\"a\":}",
        "{,}",
        "[",
        "{\"a\":1,}",
        "{1:2}",
        "{\"a\":1]",
        "[1}",
        "[{]}",
        "{\"a\":[}]",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
    ];
    if mode.valid {
        malformed.clear();
        malformed.push("[]");
    }
    leaf.prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            proptest::collection::vec((json_string(mode, false), ws(), inner, ws()), 0..4)
                .prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, a, v, b)| format!("{k}{a}:{v}{b}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            proptest::sample::select(malformed.clone()).prop_map(String::from),
        ]
    })
    .boxed()
}

/// A value for a known field: of the right kind in valid mode, sometimes anything otherwise.
fn known_value(name: &str, mode: Mode) -> BoxedStrategy<String> {
    let right = match name {
        "click_id" | "checkout_id" | "product_id" => uuid(mode),
        "user_id" => prop_oneof![
            3 => (1i64..100_000).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (any::<i64>(), 0usize..3).prop_map(|(n, z)| format!("\"{}{n}\"", "0".repeat(z))),
        ]
        .boxed(),
        "datetime_occured" => timestamp(mode),
        "total_amount" => prop_oneof![
            3 => number(mode),
            1 => proptest::sample::select(vec!["\"19.99\"", "\" 1e3 \"", "\"-0\"", "null"])
                .prop_map(String::from),
        ]
        .boxed(),
        _ => prop_oneof![
            3 => json_string(mode, true),
            1 => number(mode),
            1 => literal(mode),
        ]
        .boxed(),
    };
    if mode.valid {
        return right;
    }
    prop_oneof![
        12 => right,
        1 => "[0-9a-z-]{0,4}".prop_map(|s| format!("\"{s}\"")),
        1 => number(mode),
        1 => Just("null".to_string()),
        1 => any_value(mode),
    ]
    .boxed()
}

/// A key as written: usually plain, sometimes with one character escaped.
fn written_key(name: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just(format!("\"{name}\"")),
        1 => (0..name.len()).prop_map(move |i| {
            let c = name.as_bytes()[i];
            format!("\"{}\\u{:04x}{}\"", &name[..i], c, &name[i + 1..])
        }),
    ]
    .boxed()
}

const CLICK_FIELDS: [&str; 4] = ["click_id", "user_id", "product_id", "datetime_occured"];
const CHECKOUT_FIELDS: [&str; 10] = [
    "checkout_id",
    "user_id",
    "product_id",
    "datetime_occured",
    "payment_method",
    "total_amount",
    "shipping_address",
    "billing_address",
    "user_agent",
    "ip_address",
];
/// Unknown keys (`click_id` is unknown to a checkout and the other way round).
const UNKNOWN_KEYS: [&str; 8] = [
    "product",
    "price",
    "url",
    "x",
    "",
    "é",
    "click_id",
    "checkout_id",
];

/// A generated message and whether it is clean (see the module docs).
#[derive(Debug, Clone)]
struct Message {
    text: String,
    clean: bool,
}

/// A message of `fields` (the first four are required) plus unknown members, maybe (not in
/// valid mode) a member repeated, shuffled, with random whitespace. Clean when uniform and no
/// key repeats.
fn message(fields: &'static [&'static str], mode: Mode) -> BoxedStrategy<Message> {
    let known = fields
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let present = if !mode.valid {
                0.9
            } else if i < 4 {
                1.0
            } else {
                0.8
            };
            let member = (written_key(f), known_value(f, mode));
            let member = if present < 1.0 {
                proptest::option::weighted(present, member).boxed()
            } else {
                member.prop_map(Some).boxed()
            };
            member.prop_map(move |m| m.map(|(k, v)| (f, k, v)))
        })
        .collect::<Vec<_>>();
    let unknown = proptest::collection::vec(
        (
            proptest::sample::select(UNKNOWN_KEYS.to_vec())
                .prop_filter("unknown", move |k| !fields.contains(k)),
            any_value(mode),
        ),
        0..4,
    );
    let dup = if mode.valid {
        Just(None).boxed()
    } else {
        proptest::option::weighted(0.15, any::<prop::sample::Index>()).boxed()
    };
    (known, unknown, dup, ws(), ws())
        .prop_flat_map(move |(known, unknown, dup, lead, trail)| {
            let mut members: Vec<(String, String)> = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            for (name, key, value) in known.into_iter().flatten() {
                names.push(name);
                members.push((key, value));
            }
            for (name, value) in unknown {
                names.push(name);
                members.push((format!("\"{}\"", name.replace('é', "\\u00e9")), value));
            }
            if let (Some(i), false) = (dup, members.is_empty()) {
                let i = i.index(members.len());
                members.push(members[i].clone());
                names.push(names[i]);
            }
            let mut seen = std::collections::HashSet::new();
            let repeats = names.iter().any(|n| !seen.insert(*n));
            let n = members.len();
            (
                Just(members).prop_shuffle(),
                proptest::collection::vec((ws(), ws(), ws(), ws()), n),
                Just((lead, trail, mode.uniform && !repeats)),
            )
        })
        .prop_map(|(members, spaces, (lead, trail, clean))| {
            let body: Vec<String> = members
                .iter()
                .zip(&spaces)
                .map(|((k, v), (a, b, c, d))| format!("{a}{k}{b}:{c}{v}{d}"))
                .collect();
            Message {
                text: format!("{lead}{{{}}}{trail}", body.join(",")),
                clean,
            }
        })
        .boxed()
}

fn any_message() -> BoxedStrategy<Message> {
    let modes = [(true, true), (false, true), (true, false), (false, false)];
    let mut strategies = Vec::new();
    for (uniform, valid) in modes {
        let mode = Mode { uniform, valid };
        strategies.push(message(&CLICK_FIELDS, mode));
        strategies.push(message(&CHECKOUT_FIELDS, mode));
    }
    proptest::strategy::Union::new(strategies).boxed()
}

/// Ways to break a message.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Append(&'static str),
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        proptest::sample::select(b"\"\\{}[],:0123456789.eE+-ntfu aZ\x00\x1f\x7f".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        proptest::sample::select(vec![
            "x", ",", "}", " {}", "\u{0}", "  ", "\n", "\u{feff}", "0"
        ])
        .prop_map(Mutation::Append),
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
    ]
}

fn mutate(text: &str, m: &Mutation) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    let len = b.len().max(1);
    match m {
        Mutation::Truncate(i) => b.truncate(i.index(len)),
        Mutation::Append(s) => b.extend_from_slice(s.as_bytes()),
        Mutation::Replace(i, c) if !b.is_empty() => b[i.index(len)] = *c,
        Mutation::Insert(i, c) => b.insert(i.index(len + 1).min(b.len()), *c),
        Mutation::Delete(i) if !b.is_empty() => {
            b.remove(i.index(len));
        }
        _ => {}
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Valid and nearly valid messages: random field order, unknown fields of every JSON type,
    /// escapes, whitespace, numbers, duplicate keys.
    #[test]
    fn scanner_matches_serde_and_slow_path(m in any_message()) {
        check(m.text.as_bytes(), m.clean)?;
    }

    /// The same messages truncated, with trailing garbage, or with a byte replaced, inserted or
    /// deleted.
    #[test]
    fn scanner_matches_on_mutated_messages(m in any_message(), muts in proptest::collection::vec(mutation(), 1..3)) {
        let mut text = m.text.into_bytes();
        for mu in &muts {
            text = mutate(&String::from_utf8_lossy(&text), mu);
        }
        check(&text, false)?;
    }

    #[test]
    fn scanner_matches_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        check(&bytes, false)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases

const UUID1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const UUID2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

fn click_with(extra: &str) -> String {
    format!(
        r#"{{"click_id":"{UUID1}","user_id":17,"product_id":"{UUID2}"{extra},"datetime_occured":"2024-05-01 12:00:00.250"}}"#
    )
}

fn checkout_with(fields: &str) -> String {
    format!(
        r#"{{"checkout_id":"c1","user_id":3,"product_id":"{UUID2}","datetime_occured":"2024-05-01T12:00:00Z"{fields}}}"#
    )
}

fn scan_click_ok(text: &str) -> Click {
    check(text.as_bytes(), false).expect("paths agree");
    match scan::click(text.as_bytes()) {
        ScanOutcome::Done(c) => c,
        other => panic!("{text}: {other:?}"),
    }
}

fn scan_checkout_ok(text: &str) -> Checkout {
    check(text.as_bytes(), false).expect("paths agree");
    match scan::checkout(text.as_bytes()) {
        ScanOutcome::Done(c) => c,
        other => panic!("{text}: {other:?}"),
    }
}

fn scan_click_refused(text: &str) {
    check(text.as_bytes(), false).expect("paths agree");
    assert_eq!(scan::click(text.as_bytes()), ScanOutcome::Reject, "{text}");
}

#[test]
fn tricky_strings() {
    // Escapes in skipped values, in keys and in kept values.
    scan_click_ok(&click_with(
        r#","url":"a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00""#,
    ));
    let c = scan_click_ok(&click_with(r#","\u0075rl":"x","click\u005fid2":1"#));
    assert_eq!(c.user_id, 17);
    let text = click_with("").replace("\"click_id\"", "\"click\\u005fid\"");
    assert_eq!(scan_click_ok(&text).click_id.to_string(), UUID1);
    let text = click_with("").replace(UUID1, "a\\u0000b\\\"\\ud83d\\ude00");
    assert_eq!(scan_click_ok(&text).click_id.to_string(), "a\0b\"\u{1f600}");
    let escaped_uuid = format!("{}\\u0065", &UUID1[..35]);
    let c = scan_click_ok(&click_with("").replace(UUID1, &escaped_uuid));
    assert!(matches!(c.click_id, Id::Uuid(_)));
    // Lone surrogates: accepted in skipped strings (serde's IgnoredAny), refused in kept ones and
    // in keys, whose refusal the slow path then explains.
    for lone in [
        r#"\ud800"#,
        r#"\udc00"#,
        r#"\ud800\u0041"#,
        r#"\ud800\ud800"#,
    ] {
        scan_click_ok(&click_with(&format!(r#","url":"{lone}""#)));
        scan_click_ok(&click_with(&format!(r#","x":[{{"{lone}":1}}]"#)));
        scan_click_refused(&click_with("").replace(UUID1, lone));
        scan_click_refused(&click_with(&format!(r#","{lone}":1"#)));
    }
    // Raw control characters are refused in any string; outside strings only the JSON
    // whitespace is allowed.
    scan_click_refused(&click_with(",\"url\":\"a\tb\""));
    scan_click_refused(&click_with(",\"url\":\"a\u{1}b\""));
    scan_click_ok(&click_with(",\n\t\"url\"\r\n:\t\"ab\""));
    scan_click_refused(&click_with(",\u{c}\"url\":1"));
    // Invalid escapes, unterminated strings, invalid UTF-8 anywhere.
    scan_click_refused(&click_with(r#","url":"\x""#));
    scan_click_refused(&click_with(r#","url":"\u12"#));
    scan_click_refused(&click_with(r#","url":"\u12g4""#));
    scan_click_refused(&click_with(r#","url":"abc"#));
    let mut bad = click_with(r#","url":"é""#).into_bytes();
    let at = bad.iter().position(|&b| b == 0xc3).expect("é");
    bad[at + 1] = b'x';
    check(&bad, false).expect("paths agree");
    assert_eq!(scan::click(&bad), ScanOutcome::Reject);
    scan_click_ok(&click_with(r#","url":"é😀 ünïcödé""#));
}

#[test]
fn tricky_numbers() {
    let user = |v: &str| click_with("").replace("\"user_id\":17", &format!("\"user_id\":{v}"));
    assert_eq!(scan_click_ok(&user("-5")).user_id, -5);
    assert_eq!(scan_click_ok(&user("\"-0\"")).user_id, 0);
    assert_eq!(
        scan_click_ok(&user("9223372036854775807")).user_id,
        i64::MAX
    );
    assert_eq!(
        scan_click_ok(&user("-9223372036854775808")).user_id,
        i64::MIN
    );
    assert_eq!(scan_click_ok(&user(" \"0017\" ")).user_id, 17);
    for bad in [
        "01",
        "-0",
        "1.5e3",
        "1.",
        ".5",
        "1e",
        "-",
        "+1",
        "9223372036854775808",
        "1.0",
        "true",
        "\"\"",
        "\"1 \"",
        "[]",
    ] {
        scan_click_refused(&user(bad));
    }
    // Skipped numbers: grammar only, any size.
    for ok in [
        "1",
        "-0",
        "1.5e3",
        "1E-2",
        "0.5",
        "1e400",
        "123456789012345678901234567890",
    ] {
        scan_click_ok(&click_with(&format!(",\"price\":{ok}")));
    }
    for bad in [
        "01", "1.", ".5", "-", "1e", "1e+", "+1", "0x1", "1.5.5", "--1", "NaN",
    ] {
        scan_click_refused(&click_with(&format!(",\"price\":{bad}")));
    }
    // Amounts and number text, bit for bit as serde_json converts and prints them.
    let amount =
        |v: &str| scan_checkout_ok(&checkout_with(&format!(",\"total_amount\":{v}"))).total_amount;
    assert_eq!(amount("1.5e3"), Some(1500.0));
    assert_eq!(amount("-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
    assert_eq!(amount("0.1"), Some(0.1));
    assert_eq!(amount("59.97"), Some(59.97));
    assert_eq!(amount("\" 19.99 \""), Some(19.99));
    assert_eq!(amount("18446744073709551616"), Some(18446744073709551616.0));
    assert_eq!(amount("null"), None);
    let text = |v: &str| {
        scan_checkout_ok(&checkout_with(&format!(",\"ip_address\":{v}")))
            .details
            .ip_address()
            .map(str::to_owned)
    };
    assert_eq!(text("1.5e3").as_deref(), Some("1500.0"));
    assert_eq!(text("-0").as_deref(), Some("-0.0"));
    assert_eq!(text("-12").as_deref(), Some("-12"));
    assert_eq!(
        text("1e-7").as_deref(),
        Some(&*serde_json::Value::from(1e-7).to_string())
    );
    assert_eq!(text("true").as_deref(), Some("true"));
    assert_eq!(text("\"\"").as_deref(), Some(""));
    for bad in ["1e400", "[1]", "{}", "01"] {
        let t = checkout_with(&format!(",\"ip_address\":{bad}"));
        check(t.as_bytes(), false).expect("paths agree");
        assert_eq!(scan::checkout(t.as_bytes()), ScanOutcome::Reject, "{t}");
    }
    let id = |v: &str| click_with("").replace(&format!("\"{UUID2}\""), v);
    assert_eq!(scan_click_ok(&id("-44")).product_id.to_string(), "-44");
    assert_eq!(
        scan_click_ok(&id("18446744073709551615"))
            .product_id
            .to_string(),
        "18446744073709551615"
    );
    for bad in ["-0", "1.5", "1e2", "18446744073709551616", "\"\"", "true"] {
        scan_click_refused(&id(bad));
    }
}

#[test]
fn tricky_structure() {
    let ok = click_with("");
    scan_click_ok(&format!(" \n\t\r{ok} \r\n\t"));
    scan_click_ok(&click_with(
        r#","product":{"a":[1,{"b":null}],"c":""},"tags":[],"o":{}"#,
    ));
    for bad in [
        format!("{ok}x"),
        format!("{ok}{ok}"),
        format!("{ok},"),
        format!("\u{feff}{ok}"),
        ok.replacen('{', "{,", 1),
        ok.replacen(",", ",,", 1),
        ok.replace("}", ",}"),
        ok.replacen(':', " ", 1),
        ok.replacen("\"click_id\"", "click_id", 1),
        click_with(r#","x":[1,]"#),
        click_with(r#","x":{"a"}"#),
        click_with(r#","x":{"a":1,}"#),
        click_with(r#","x":[1 2]"#),
        click_with(r#","x":nul"#),
        click_with(r#","x":tru"#),
        click_with(r#","x":]"#),
        "{}".to_string(),
        "{".to_string(),
        String::new(),
        " ".to_string(),
        "null".to_string(),
    ] {
        scan_click_refused(&bad);
    }
    // Duplicates: a known key twice is refused by serde's derive (and read by the slow path,
    // last one wins); an unknown key may repeat.
    let dup = click_with(r#","user_id":18"#);
    scan_click_refused(&dup);
    assert_eq!(parse_click(dup.as_bytes()).map(|c| c.user_id), Ok(18));
    scan_click_refused(&click_with("").replacen(
        "\"user_id\":17",
        "\"user_id\":null,\"user_id\":17",
        1,
    ));
    scan_click_ok(&click_with(r#","url":1,"url":"x""#));
    // A JSON array is not a message, even one that lists the fields in order (serde's derive
    // would read it as the struct).
    let array = format!(r#"["{UUID1}",17,"{UUID2}","2024-05-01 12:00:00.250"]"#);
    assert!(serde_click(array.as_bytes()).is_some());
    assert_eq!(scan::click(array.as_bytes()), ScanOutcome::Reject);
    let e = parse_click(array.as_bytes()).expect_err("an array");
    assert!(e.reason.contains("found an array"), "{e}");
}

#[test]
fn deep_nesting_is_handed_to_serde() {
    let nested = |depth: usize| {
        let open: String = (0..depth)
            .map(|i| if i % 2 == 0 { "[" } else { "{\"k\":" })
            .collect();
        let close: String = (0..depth)
            .rev()
            .map(|i| if i % 2 == 0 { "]" } else { "}" })
            .collect();
        click_with(&format!(",\"x\":{open}1{close}"))
    };
    for depth in [1, 2, 127, 128] {
        scan_click_ok(&nested(depth));
    }
    for depth in [129, 500] {
        let text = nested(depth);
        assert_eq!(scan::click(text.as_bytes()), ScanOutcome::Defer, "{depth}");
        // serde_json skips any depth; its Value (the slow path) stops at 128.
        assert!(parse_click(text.as_bytes()).is_ok(), "{depth}");
        assert_eq!(
            parse_click(text.as_bytes()),
            old_parse_click(text.as_bytes())
        );
    }
    // Broken past the depth the scanner handles: serde refuses, the slow path explains.
    let broken = nested(300).replace(":1}", ":01}");
    assert_ne!(broken, nested(300));
    assert_eq!(scan::click(broken.as_bytes()), ScanOutcome::Defer);
    assert!(parse_click(broken.as_bytes()).is_err());
}

#[test]
fn checkout_text_fields() {
    let c = scan_checkout_ok(&checkout_with(
        r#","payment_method":"card","total_amount":19.99,"shipping_address":"1 Main St, \"Apt\" 2","billing_address":null,"user_agent":"Mozilla\/5.0 é","ip_address":"127.0.0.1","extra":{"a":[1,2]}"#,
    ));
    assert_eq!(c.checkout_id.to_string(), "c1");
    assert_eq!(c.details.payment_method(), Some("card"));
    assert_eq!(c.details.shipping_address(), Some("1 Main St, \"Apt\" 2"));
    assert_eq!(c.details.billing_address(), None);
    assert_eq!(c.details.user_agent(), Some("Mozilla/5.0 é"));
    assert_eq!(c.details.ip_address(), Some("127.0.0.1"));
    assert_eq!(c.total_amount, Some(19.99));
}

/// Guards the generators: if most messages were refused, the properties above would only test
/// refusals.
#[test]
fn generated_messages_are_often_valid() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = any_message();
    let (mut accepted, mut clean, mut clean_accepted) = (0, 0, 0);
    for _ in 0..2000 {
        let m = strategy
            .new_tree(&mut runner)
            .expect("a generated message")
            .current();
        let ok = matches!(scan::click(m.text.as_bytes()), ScanOutcome::Done(_))
            || matches!(scan::checkout(m.text.as_bytes()), ScanOutcome::Done(_));
        accepted += usize::from(ok);
        clean += usize::from(m.clean);
        clean_accepted += usize::from(m.clean && ok);
    }
    assert!(accepted > 600, "only {accepted} of 2000 accepted");
    assert!(
        clean_accepted * 4 > clean,
        "{clean_accepted} of {clean} clean accepted"
    );
}

/// Every single-byte change (replaced or inserted) at every position of a few rich messages.
#[test]
fn every_single_byte_change() {
    let messages = [
        click_with(
            r#","product":"a\"b\u00e9\ud83d\ude00","price":-1.5e3,"url":"x","x":[{"k":[true,null,{}]},[],"é"]"#,
        ),
        checkout_with(
            r#","payment_method":"card","total_amount":19.99,"shipping_address":"1 Main St","billing_address":null,"user_agent":"Mozilla\/5.0","ip_address":127,"z":{"a":[1,2]}"#,
        ),
        format!(" {} \n", click_with(r#", "url" : "tab\tend" "#)),
    ];
    let bytes: Vec<u8> = b"\"\\{}[],:0129.eE+-ntfu aZ\x00\x01\t\n\x1f\x7f\xc3\xff".to_vec();
    for text in &messages {
        let text = text.as_bytes();
        check(text, false).expect("the original");
        for i in 0..=text.len() {
            let mut deleted = text.to_vec();
            if i < text.len() {
                deleted.remove(i);
                check(&deleted, false).expect("deleted");
            }
            for &b in &bytes {
                let mut inserted = text.to_vec();
                inserted.insert(i, b);
                check(&inserted, false).expect("inserted");
                if i < text.len() {
                    let mut replaced = text.to_vec();
                    replaced[i] = b;
                    check(&replaced, false).expect("replaced");
                }
            }
        }
    }
}

/// Strings of every length up to 40 with a raw control character (or a quote, a backslash, a
/// non-ASCII character) at every position, last in the message or not, so that every block
/// and tail of the scanner's string search meets one.
#[test]
fn special_bytes_at_every_position_of_strings() {
    let base = click_with("");
    let (head, tail) = base.split_at(base.len() - 1);
    for len in 0..40 {
        for at in 0..len {
            for special in [
                "\t", "\n", "\u{1}", "\u{1f}", "\"", "\\", "\\n", "é", "\u{7f}",
            ] {
                let mut s = "a".repeat(len);
                s.replace_range(at..at + 1, special);
                for (before, after) in [("", ""), ("", " \n"), (",\"x\":1", "")] {
                    let last = format!("{head},\"url\":\"{s}\"{before}{tail}{after}");
                    check(last.as_bytes(), false).expect("paths agree");
                    let key = format!("{head},\"{s}\":1{before}{tail}{after}");
                    check(key.as_bytes(), false).expect("paths agree");
                    let value = click_with("").replace(UUID1, &s);
                    check(value.as_bytes(), false).expect("paths agree");
                }
            }
        }
    }
}
