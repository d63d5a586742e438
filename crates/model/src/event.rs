//! Clicks and checkouts, and how they are read from one JSON message each (docs/design.md §2).
//!
//! Parsing has two paths. The fast path, the scanner of `scan.rs`, reads the needed fields
//! in one pass over the bytes and skips (but validates) unknown ones; it runs for every message.
//! It is held to the result of serde_json's derive into borrowed structs (`RawClick`,
//! `RawCheckout` below, the earlier fast path), which also takes the rare messages the scanner
//! defers. When the fast path fails, the slow path reads the message as a generic JSON value and
//! checks each field in turn, so the [`BadMessage`] names the field, what was expected and what
//! was found. Property tests hold the paths to the same results, except in corner cases that
//! serde_json itself treats differently when it skips a value rather than reads it (a lone
//! surrogate escape, a number out of range, nesting deeper than 128 in an unknown field: the
//! fast path accepts those), and a known field given twice (the fast path refuses it, the slow
//! path reads the last one). Each message goes to the slow path only if the fast path fails.
//!
//! Accepted values: identifiers (`*_id`) are non-empty strings or integers; `user_id` is an
//! integer or a string of digits; `datetime_occured` is a timestamp in one of the forms of
//! [`crate::time`]; optional text fields take any JSON scalar (numbers and booleans are kept as
//! their JSON text) or null; `total_amount` is a number, a numeric string or null.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::details::{CheckoutDetails, DetailTexts};
use crate::error::{BadMessage, EventKind};
use crate::id::Id;
use crate::scan::{self, ScanOutcome};
use crate::time::{parse_timestamp, EventTime};

/// A user's numeric id. Producers send it as a JSON number or as a numeric string.
pub type UserId = i64;

/// What the engine keeps of a click: the rest of the message is not needed for attribution.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Click {
    /// The click's unique id; duplicates are one click.
    pub click_id: Id,
    /// Who clicked.
    pub user_id: UserId,
    /// What was clicked.
    pub product_id: Id,
    /// When it happened (`datetime_occured`).
    pub time: EventTime,
}

/// A checkout of one product by one user, with everything the output row copies from it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "CheckoutFields", into = "CheckoutFields")]
pub struct Checkout {
    /// The checkout's unique id; the output has exactly one row per id.
    pub checkout_id: Id,
    /// Who bought.
    pub user_id: UserId,
    /// What was bought.
    pub product_id: Id,
    /// When it happened (`datetime_occured`).
    pub time: EventTime,
    /// Copied to the row (NUMERIC).
    pub total_amount: Option<f64>,
    /// The texts copied to the row: payment method, addresses, user agent, IP address.
    pub details: CheckoutDetails,
}

/// A checkout's serialized form (snapshots, test fixtures): one field per column, as the
/// producers send them.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct CheckoutFields {
    checkout_id: Id,
    user_id: UserId,
    product_id: Id,
    time: EventTime,
    payment_method: Option<Box<str>>,
    total_amount: Option<f64>,
    shipping_address: Option<Box<str>>,
    billing_address: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    ip_address: Option<Box<str>>,
}

impl From<CheckoutFields> for Checkout {
    fn from(f: CheckoutFields) -> Self {
        Checkout {
            details: DetailTexts {
                payment_method: f.payment_method.as_deref(),
                shipping_address: f.shipping_address.as_deref(),
                billing_address: f.billing_address.as_deref(),
                user_agent: f.user_agent.as_deref(),
                ip_address: f.ip_address.as_deref(),
            }
            .into(),
            checkout_id: f.checkout_id,
            user_id: f.user_id,
            product_id: f.product_id,
            time: f.time,
            total_amount: f.total_amount,
        }
    }
}

impl From<Checkout> for CheckoutFields {
    fn from(c: Checkout) -> Self {
        let t = c.details.texts();
        let boxed = |s: Option<&str>| s.map(Box::<str>::from);
        CheckoutFields {
            payment_method: boxed(t.payment_method),
            shipping_address: boxed(t.shipping_address),
            billing_address: boxed(t.billing_address),
            user_agent: boxed(t.user_agent),
            ip_address: boxed(t.ip_address),
            checkout_id: c.checkout_id,
            user_id: c.user_id,
            product_id: c.product_id,
            time: c.time,
            total_amount: c.total_amount,
        }
    }
}

/// Parses one click message.
pub fn parse_click(bytes: &[u8]) -> Result<Click, BadMessage> {
    match scan::click(bytes) {
        ScanOutcome::Done(click) => return Ok(click),
        ScanOutcome::Defer => {
            if let Some(click) = serde_click(bytes) {
                return Ok(click);
            }
        }
        ScanOutcome::Reject => {}
    }
    diagnose(bytes, EventKind::Click).and_then(|obj| click_from_value(&obj))
}

/// Parses one checkout message.
pub fn parse_checkout(bytes: &[u8]) -> Result<Checkout, BadMessage> {
    match scan::checkout(bytes) {
        ScanOutcome::Done(checkout) => return Ok(checkout),
        ScanOutcome::Defer => {
            if let Some(checkout) = serde_checkout(bytes) {
                return Ok(checkout);
            }
        }
        ScanOutcome::Reject => {}
    }
    diagnose(bytes, EventKind::Checkout).and_then(|obj| checkout_from_value(&obj))
}

// ---------------------------------------------------------------------------------------------
// serde fast path: the reference the scanner is held to, and its fallback for what it defers

/// The click as serde_json's derive reads it (the fast path before [`crate::scan`]); `None`
/// when that refuses the message.
fn serde_click(bytes: &[u8]) -> Option<Click> {
    fast_path(bytes, |t| {
        serde_json::from_str::<RawClick<'_>>(t).map(RawClick::validate)
    })
}

/// The checkout as serde_json's derive reads it; see [`serde_click`].
fn serde_checkout(bytes: &[u8]) -> Option<Checkout> {
    fast_path(bytes, |t| {
        serde_json::from_str::<RawCheckout<'_>>(t).map(RawCheckout::validate)
    })
}

/// Checks UTF-8 once for the whole line (cheaper than serde_json's check of every string), then
/// deserializes; `None` sends the message to the slow path for a precise reason.
fn fast_path<'a, T>(
    bytes: &'a [u8],
    parse: impl FnOnce(&'a str) -> Result<Result<T, ()>, serde_json::Error>,
) -> Option<T> {
    let text = std::str::from_utf8(bytes).ok()?;
    parse(text).ok()?.ok()
}

#[derive(Deserialize)]
struct RawClick<'a> {
    #[serde(default, borrow, deserialize_with = "de_id")]
    click_id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "de_user_id")]
    user_id: Option<UserId>,
    #[serde(default, borrow, deserialize_with = "de_id")]
    product_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    datetime_occured: Option<Cow<'a, str>>,
}

impl RawClick<'_> {
    fn validate(self) -> Result<Click, ()> {
        Ok(Click {
            click_id: Id::new(&self.click_id.ok_or(())?),
            user_id: self.user_id.ok_or(())?,
            product_id: Id::new(&self.product_id.ok_or(())?),
            time: parse_timestamp(self.datetime_occured.ok_or(())?.as_bytes()).map_err(|_| ())?,
        })
    }
}

#[derive(Deserialize)]
struct RawCheckout<'a> {
    #[serde(default, borrow, deserialize_with = "de_id")]
    checkout_id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "de_user_id")]
    user_id: Option<UserId>,
    #[serde(default, borrow, deserialize_with = "de_id")]
    product_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    datetime_occured: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    payment_method: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "de_amount")]
    total_amount: Option<f64>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    shipping_address: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    billing_address: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    user_agent: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_text")]
    ip_address: Option<Cow<'a, str>>,
}

impl RawCheckout<'_> {
    fn validate(self) -> Result<Checkout, ()> {
        Ok(Checkout {
            checkout_id: Id::new(&self.checkout_id.ok_or(())?),
            user_id: self.user_id.ok_or(())?,
            product_id: Id::new(&self.product_id.ok_or(())?),
            time: parse_timestamp(self.datetime_occured.ok_or(())?.as_bytes()).map_err(|_| ())?,
            total_amount: self.total_amount,
            details: DetailTexts {
                payment_method: self.payment_method.as_deref(),
                shipping_address: self.shipping_address.as_deref(),
                billing_address: self.billing_address.as_deref(),
                user_agent: self.user_agent.as_deref(),
                ip_address: self.ip_address.as_deref(),
            }
            .into(),
        })
    }
}

/// A scalar read by the fast path: borrowed text where the JSON had no escapes.
struct ScalarText<'a>(Option<Cow<'a, str>>);

/// Which JSON scalars a text field takes besides strings.
struct TextVisitor {
    /// Integers, kept as their decimal text (identifiers and free text).
    integers: bool,
    /// Floats and booleans, kept as their JSON text (free text only).
    other_scalars: bool,
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = ScalarText<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ScalarText(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ScalarText(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(ScalarText(Some(Cow::Owned(v))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.integers {
            Ok(ScalarText(Some(Cow::Owned(v.to_string()))))
        } else {
            Err(E::custom("number"))
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.integers {
            Ok(ScalarText(Some(Cow::Owned(v.to_string()))))
        } else {
            Err(E::custom("number"))
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if self.other_scalars {
            Ok(ScalarText(Some(Cow::Owned(Value::from(v).to_string()))))
        } else {
            Err(E::custom("number"))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        if self.other_scalars {
            Ok(ScalarText(Some(Cow::Borrowed(if v {
                "true"
            } else {
                "false"
            }))))
        } else {
            Err(E::custom("bool"))
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ScalarText(None))
    }
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    let v = d.deserialize_any(TextVisitor {
        integers: true,
        other_scalars: false,
    })?;
    match v.0 {
        Some(s) if s.is_empty() => Err(de::Error::custom("empty")),
        other => Ok(other),
    }
}

fn de_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(d.deserialize_any(TextVisitor {
        integers: true,
        other_scalars: true,
    })?
    .0)
}

fn de_user_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UserId>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<UserId>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            UserId::try_from(v).map(Some).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            user_id_from_text(v).map(Some).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn de_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            amount_from_text(v).map(Some).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

pub(crate) fn user_id_from_text(v: &str) -> Result<UserId, String> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected an integer or a string of digits, found the string {v:?}"
        ));
    }
    v.parse::<UserId>()
        .map_err(|_| format!("expected an integer that fits in 64 bits, found {v:?}"))
}

pub(crate) fn amount_from_text(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "expected a number or a numeric string, found the string {v:?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Slow path: precise reasons

fn diagnose(bytes: &[u8], kind: EventKind) -> Result<serde_json::Map<String, Value>, BadMessage> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        BadMessage::whole(
            kind,
            format!(
                "expected UTF-8 JSON, found invalid UTF-8 at byte {}",
                e.valid_up_to()
            ),
        )
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| BadMessage::whole(kind, format!("expected one JSON object, {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(BadMessage::whole(
            kind,
            format!("expected a JSON object, found {}", type_name(&other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

type Obj = serde_json::Map<String, Value>;

fn present<'v>(obj: &'v Obj, field: &str) -> Option<&'v Value> {
    obj.get(field).filter(|v| !v.is_null())
}

fn required<'v>(
    obj: &'v Obj,
    kind: EventKind,
    field: &'static str,
) -> Result<&'v Value, BadMessage> {
    present(obj, field)
        .ok_or_else(|| BadMessage::field(kind, field, "required field is missing (or null)"))
}

fn id_value(obj: &Obj, kind: EventKind, field: &'static str) -> Result<Id, BadMessage> {
    match required(obj, kind, field)? {
        Value::String(s) if s.is_empty() => Err(BadMessage::field(
            kind,
            field,
            "expected a non-empty identifier, found an empty string",
        )),
        Value::String(s) => Ok(Id::new(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Id::new(&n.to_string())),
        other => Err(BadMessage::field(
            kind,
            field,
            format!(
                "expected a string (or integer) identifier, found {}",
                type_name(other)
            ),
        )),
    }
}

fn user_id_value(obj: &Obj, kind: EventKind) -> Result<UserId, BadMessage> {
    const F: &str = "user_id";
    match required(obj, kind, F)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| BadMessage::field(kind, F, format!("expected an integer, found {n}"))),
        Value::String(s) => user_id_from_text(s).map_err(|r| BadMessage::field(kind, F, r)),
        other => Err(BadMessage::field(
            kind,
            F,
            format!(
                "expected an integer or a string of digits, found {}",
                type_name(other)
            ),
        )),
    }
}

fn time_value(obj: &Obj, kind: EventKind) -> Result<EventTime, BadMessage> {
    const F: &str = "datetime_occured";
    match required(obj, kind, F)? {
        Value::String(s) => {
            parse_timestamp(s.as_bytes()).map_err(|e| BadMessage::field(kind, F, e))
        }
        other => Err(BadMessage::field(
            kind,
            F,
            format!("expected a timestamp string, found {}", type_name(other)),
        )),
    }
}

fn text_value(
    obj: &Obj,
    kind: EventKind,
    field: &'static str,
) -> Result<Option<Box<str>>, BadMessage> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str().into())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string().into())),
        Some(other) => Err(BadMessage::field(
            kind,
            field,
            format!("expected a string, found {}", type_name(other)),
        )),
    }
}

fn amount_value(obj: &Obj, kind: EventKind) -> Result<Option<f64>, BadMessage> {
    const F: &str = "total_amount";
    match present(obj, F) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => amount_from_text(s)
            .map(Some)
            .map_err(|r| BadMessage::field(kind, F, r)),
        Some(other) => Err(BadMessage::field(
            kind,
            F,
            format!("expected a number, found {}", type_name(other)),
        )),
    }
}

fn click_from_value(obj: &Obj) -> Result<Click, BadMessage> {
    let k = EventKind::Click;
    Ok(Click {
        click_id: id_value(obj, k, "click_id")?,
        user_id: user_id_value(obj, k)?,
        product_id: id_value(obj, k, "product_id")?,
        time: time_value(obj, k)?,
    })
}

fn checkout_from_value(obj: &Obj) -> Result<Checkout, BadMessage> {
    let k = EventKind::Checkout;
    // Fields are checked in this order, so the first bad one is the one reported.
    let checkout_id = id_value(obj, k, "checkout_id")?;
    let user_id = user_id_value(obj, k)?;
    let product_id = id_value(obj, k, "product_id")?;
    let time = time_value(obj, k)?;
    let payment_method = text_value(obj, k, "payment_method")?;
    let total_amount = amount_value(obj, k)?;
    let shipping_address = text_value(obj, k, "shipping_address")?;
    let billing_address = text_value(obj, k, "billing_address")?;
    let user_agent = text_value(obj, k, "user_agent")?;
    let ip_address = text_value(obj, k, "ip_address")?;
    Ok(Checkout {
        checkout_id,
        user_id,
        product_id,
        time,
        total_amount,
        details: DetailTexts {
            payment_method: payment_method.as_deref(),
            shipping_address: shipping_address.as_deref(),
            billing_address: billing_address.as_deref(),
            user_agent: user_agent.as_deref(),
            ip_address: ip_address.as_deref(),
        }
        .into(),
    })
}

#[cfg(test)]
mod equivalence_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLICK: &str = r#"{"click_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "user_id": 17,
        "product_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "product": "lamp", "price": 12.5,
        "url": "http://x", "user_agent": "ua", "ip_address": "1.2.3.4",
        "datetime_occured": "2024-05-01 12:00:00.250"}"#;

    #[test]
    fn parses_a_click_and_ignores_unknown_fields() {
        let c = parse_click(CLICK.as_bytes()).expect("valid click");
        assert_eq!(c.user_id, 17);
        assert_eq!(
            c.click_id.to_string(),
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        assert_eq!(
            c.time,
            EventTime::parse("2024-05-01T12:00:00.25Z").expect("time")
        );
    }

    #[test]
    fn user_id_as_number_or_numeric_string() {
        let s = CLICK.replace("\"user_id\": 17", "\"user_id\": \"17\"");
        assert_eq!(parse_click(s.as_bytes()).map(|c| c.user_id), Ok(17));
        let s = CLICK.replace("\"user_id\": 17", "\"user_id\": \"17a\"");
        let e = parse_click(s.as_bytes()).expect_err("not numeric");
        assert_eq!(e.field, Some("user_id"));
        assert!(e.reason.contains("\"17a\""), "{}", e.reason);
    }

    #[test]
    fn each_bad_message_names_its_reason() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("not json", None, "expected one JSON object"),
            ("[1,2]", None, "found an array"),
            (r#"{"user_id": 1}"#, Some("click_id"), "missing"),
            (
                &CLICK.replace(
                    "\"datetime_occured\": \"2024-05-01 12:00:00.250\"",
                    "\"datetime_occured\": \"soon\"",
                ),
                Some("datetime_occured"),
                "expected RFC 3339",
            ),
            (
                &CLICK.replace("\"user_id\": 17", "\"user_id\": 1.5"),
                Some("user_id"),
                "integer",
            ),
            (
                &CLICK.replace("\"user_id\": 17", "\"user_id\": null"),
                Some("user_id"),
                "missing",
            ),
            (
                &CLICK.replace(
                    "\"product_id\": \"7c9e6679-7425-40de-944b-e07fc1f90ae7\"",
                    "\"product_id\": {}",
                ),
                Some("product_id"),
                "found an object",
            ),
        ];
        for (text, field, needle) in cases {
            let e = parse_click(text.as_bytes()).expect_err(text);
            assert_eq!(e.field, *field, "{text}: {e}");
            assert!(e.reason.contains(needle), "{text}: {e}");
        }
        let e = parse_click(b"{\"click_id\": \"\xff\"}").expect_err("invalid utf-8");
        assert!(e.reason.contains("UTF-8"), "{e}");
    }

    #[test]
    fn parses_a_checkout_with_lenient_optional_fields() {
        let text = r#"{"checkout_id": "c1", "user_id": "3", "product_id": 44,
            "payment_method": "card", "total_amount": "19.99", "shipping_address": null,
            "ip_address": 127, "datetime_occured": "2024-05-01T12:00:00Z", "extra": [1]}"#;
        let c = parse_checkout(text.as_bytes()).expect("valid");
        assert_eq!(c.product_id.to_string(), "44");
        assert_eq!(c.total_amount, Some(19.99));
        assert_eq!(c.details.shipping_address(), None);
        assert_eq!(c.details.ip_address(), Some("127"));
        let bad = text.replace("\"19.99\"", "\"lots\"");
        let e = parse_checkout(bad.as_bytes()).expect_err("bad amount");
        assert_eq!(e.field, Some("total_amount"));
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"\"".to_string()),
            Just("\"2024-05-01 12:00:00.250\"".to_string()),
            Just("\"2024-05-01T12:00:00+01:00\"".to_string()),
            Just("\"2024-02-30T12:00:00Z\"".to_string()),
            Just("\"0f8fad5b-d9cb-469f-a165-70867728950e\"".to_string()),
            Just("\"a\\\"b\"".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            (-5i64..5).prop_map(|n| n.to_string()),
            Just("1.5".to_string()),
            Just("18446744073709551615".to_string()),
            "[0-9]{1,3}".prop_map(|s| format!("\"{s}\"")),
            "[a-z ]{0,4}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    proptest! {
        /// The fast path and the precise slow path accept exactly the same messages, with the
        /// same result.
        #[test]
        fn fast_and_slow_paths_agree(values in proptest::collection::vec(proptest::option::of(scalar()), 10)) {
            let names = ["checkout_id", "user_id", "product_id", "datetime_occured", "payment_method",
                         "total_amount", "shipping_address", "billing_address", "user_agent", "ip_address"];
            let body: Vec<String> = names.iter().zip(&values)
                .filter_map(|(n, v)| v.as_ref().map(|v| format!("\"{n}\": {v}")))
                .collect();
            let text = format!("{{{}}}", body.join(", "));
            let slow = diagnose(text.as_bytes(), EventKind::Checkout).and_then(|o| checkout_from_value(&o));
            let fast = serde_json::from_slice::<RawCheckout<'_>>(text.as_bytes()).ok().and_then(|r| r.validate().ok());
            prop_assert_eq!(fast.is_some(), slow.is_ok(), "{}: {:?}", text, slow);
            if let (Some(f), Ok(s)) = (fast, slow) {
                prop_assert_eq!(f, s);
            }
            let click_text = text.replace("checkout_id", "click_id");
            let slow = diagnose(click_text.as_bytes(), EventKind::Click).and_then(|o| click_from_value(&o));
            let fast = serde_json::from_slice::<RawClick<'_>>(click_text.as_bytes()).ok().and_then(|r| r.validate().ok());
            prop_assert_eq!(fast.is_some(), slow.is_ok(), "{}: {:?}", click_text, slow);
            // And the scanner with them.
            super::equivalence_tests::check(text.as_bytes(), true)?;
            super::equivalence_tests::check(click_text.as_bytes(), true)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_click(&bytes);
            let _ = parse_checkout(&bytes);
        }
    }
}
