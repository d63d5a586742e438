//! The output: one [`AttributedRow`] per checkout, and its JSON form.
//!
//! The same JSON object is a line of the NDJSON file sink and the `json` of a BigQuery insertAll
//! row: keys are the [`crate::schema::OUTPUT_COLUMNS`] names in order, timestamps are RFC 3339
//! UTC strings, NULL is JSON null.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::Checkout;
use crate::id::Id;
use crate::time::EventTime;

/// How a checkout's credit is given to the clicks in its window (docs/design.md §1). First
/// click is the default.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AttributionModel {
    /// The earliest click in the window, by `(event time, click_id)`.
    #[default]
    FirstClick,
    /// The latest click in the window, by `(event time, click_id)`.
    LastClick,
    /// Equal credit to every click in the window.
    Linear,
    /// Credit proportional to 2^(-(T - t) / half-life) for a click at `t` and a checkout at `T`.
    TimeDecay,
    /// 40 % to the first click, 40 % to the last, 20 % shared by those in between (one click:
    /// 100 %; two: 50 % each).
    PositionBased,
}

impl AttributionModel {
    /// Every model, in the order rows are written.
    pub const ALL: [AttributionModel; 5] = [
        AttributionModel::FirstClick,
        AttributionModel::LastClick,
        AttributionModel::Linear,
        AttributionModel::TimeDecay,
        AttributionModel::PositionBased,
    ];

    /// The name written to the `attribution_model` column and accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AttributionModel::FirstClick => "first_click",
            AttributionModel::LastClick => "last_click",
            AttributionModel::Linear => "linear",
            AttributionModel::TimeDecay => "time_decay",
            AttributionModel::PositionBased => "position_based",
        }
    }

    /// Whether the model shares the credit among several clicks (then its touches are written
    /// to the touches table too).
    pub fn is_multi_touch(self) -> bool {
        !matches!(
            self,
            AttributionModel::FirstClick | AttributionModel::LastClick
        )
    }
}

impl std::str::FromStr for AttributionModel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().replace('-', "_");
        AttributionModel::ALL
            .into_iter()
            .find(|m| m.as_str() == wanted)
            .ok_or_else(|| {
                format!(
                    "expected an attribution model (first_click, last_click, linear, time_decay \
                     or position_based), found {s:?}"
                )
            })
    }
}

/// A set of models (`--model first_click,linear`), iterated in [`AttributionModel::ALL`]
/// order. Never empty: the default is first click alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ModelSet(u8);

impl Default for ModelSet {
    fn default() -> Self {
        ModelSet::of(&[AttributionModel::FirstClick])
    }
}

impl ModelSet {
    /// The set of `models`; first click alone when `models` is empty.
    pub fn of(models: &[AttributionModel]) -> Self {
        let bits = models.iter().fold(0u8, |b, m| {
            b | 1
                << AttributionModel::ALL
                    .iter()
                    .position(|x| x == m)
                    .unwrap_or(0)
        });
        if bits == 0 {
            ModelSet(1)
        } else {
            ModelSet(bits)
        }
    }

    /// Whether `model` is in the set.
    pub fn contains(self, model: AttributionModel) -> bool {
        AttributionModel::ALL
            .iter()
            .position(|x| *x == model)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The models, in [`AttributionModel::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = AttributionModel> {
        AttributionModel::ALL
            .into_iter()
            .filter(move |m| self.contains(*m))
    }

    /// How many models.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Never true; for clippy's sake.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether any model shares credit among clicks.
    pub fn any_multi_touch(self) -> bool {
        self.iter().any(AttributionModel::is_multi_touch)
    }
}

impl std::fmt::Display for ModelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(AttributionModel::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for ModelSet {
    type Err = String;
    /// A comma-separated list of model names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let models = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<AttributionModel>, String>>()?;
        if models.is_empty() {
            return Err(format!(
                "expected at least one attribution model, found {s:?}"
            ));
        }
        Ok(ModelSet::of(&models))
    }
}

/// The click credited with a checkout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClickRef {
    /// The click's id.
    pub click_id: Id,
    /// The click's event time.
    pub time: EventTime,
}

/// One row of the output table: a checkout, its buyer's name and its attributed click.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributedRow {
    /// The checkout, as received.
    pub checkout: Checkout,
    /// The buyer's name, when the user is known.
    pub user_name: Option<String>,
    /// The attributed click; `None` for an organic checkout.
    pub click: Option<ClickRef>,
    /// The model that chose the click.
    pub model: AttributionModel,
    /// When the row was produced (processing time).
    pub processed_at: EventTime,
}

impl AttributedRow {
    /// The row as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(640);
        self.write_json(&mut out);
        // write_json writes valid UTF-8: JSON punctuation, escaped strings and numbers.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the row as one line of JSON (no trailing newline) to `out`. Same text as the
    /// `Serialize` implementation, written directly: this runs once per output row.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.as_ref().write_json(out);
    }

    /// The row, borrowed.
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            checkout: &self.checkout,
            user_name: self.user_name.as_deref(),
            click: self.click.as_ref(),
            model: self.model,
            processed_at: self.processed_at,
        }
    }
}

/// An [`AttributedRow`] made of borrowed parts, for writing a row's JSON without first
/// copying the checkout and the buyer's name into one.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    /// The checkout, as received.
    pub checkout: &'a Checkout,
    /// The buyer's name, when the user is known.
    pub user_name: Option<&'a str>,
    /// The attributed click; `None` for an organic checkout.
    pub click: Option<&'a ClickRef>,
    /// The model that chose the click.
    pub model: AttributionModel,
    /// When the row was produced (processing time).
    pub processed_at: EventTime,
}

impl RowRef<'_> {
    /// Appends the row as one line of JSON (no trailing newline) to `out`; see
    /// [`AttributedRow::write_json`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let c = self.checkout;
        out.extend_from_slice(b"{\"checkout_id\":");
        json_id(out, &c.checkout_id);
        out.extend_from_slice(b",\"user_id\":\"");
        out.extend_from_slice(itoa::Buffer::new().format(c.user_id).as_bytes());
        out.extend_from_slice(b"\",\"user_name\":");
        json_opt_str(out, self.user_name);
        out.extend_from_slice(b",\"product_id\":");
        json_id(out, &c.product_id);
        let d = c.details.texts();
        // The details were checked for characters to escape when they were made.
        let text = if c.details.is_json_plain() {
            json_opt_plain_str
        } else {
            json_opt_str
        };
        out.extend_from_slice(b",\"payment_method\":");
        text(out, d.payment_method);
        out.extend_from_slice(b",\"total_amount\":");
        match c.total_amount {
            // serde_json writes finite floats with ryu, as the Serialize path does.
            Some(v) => {
                let _ = serde_json::to_writer(&mut *out, &v);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"shipping_address\":");
        text(out, d.shipping_address);
        out.extend_from_slice(b",\"billing_address\":");
        text(out, d.billing_address);
        out.extend_from_slice(b",\"user_agent\":");
        text(out, d.user_agent);
        out.extend_from_slice(b",\"ip_address\":");
        text(out, d.ip_address);
        out.extend_from_slice(b",\"checkout_time\":");
        json_time(out, c.time);
        out.extend_from_slice(b",\"click_id\":");
        match self.click {
            Some(k) => json_id(out, &k.click_id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"click_time\":");
        match self.click {
            Some(k) => json_time(out, k.time),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"attribution_model\":\"");
        out.extend_from_slice(self.model.as_str().as_bytes());
        out.extend_from_slice(b"\",\"processed_at\":");
        json_time(out, self.processed_at);
        out.push(b'}');
    }
}

/// Whether `s` can be written between quotes as it is: no control character, quote or
/// backslash. The check runs over blocks without an early exit, which the compiler turns into
/// vector instructions; it runs for every text field of every row.
pub(crate) fn is_plain_json_text(s: &str) -> bool {
    s.as_bytes().chunks(32).all(|block| {
        !block.iter().fold(false, |bad, &b| {
            bad | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    if is_plain_json_text(s) {
        json_plain_str(out, s);
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Writes `s`, which needs no escaping (see [`is_plain_json_text`]), as a JSON string.
fn json_plain_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// [`json_plain_str`], or `null`.
fn json_opt_plain_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_plain_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn json_id(out: &mut Vec<u8>, id: &Id) {
    match id {
        Id::Uuid([hi, lo]) => {
            out.push(b'"');
            Id::write_uuid_bytes(*hi, *lo, out);
            out.push(b'"');
        }
        Id::Text(t) => json_str(out, t),
    }
}

pub(crate) fn json_time(out: &mut Vec<u8>, t: EventTime) {
    out.push(b'"');
    t.write_rfc3339_bytes(out);
    out.push(b'"');
}

impl Serialize for AttributedRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.checkout;
        let mut m = s.serialize_map(Some(crate::schema::OUTPUT_COLUMNS.len()))?;
        m.serialize_entry("checkout_id", &c.checkout_id)?;
        m.serialize_entry("user_id", &c.user_id.to_string())?;
        m.serialize_entry("user_name", &self.user_name)?;
        m.serialize_entry("product_id", &c.product_id)?;
        m.serialize_entry("payment_method", &c.details.payment_method())?;
        m.serialize_entry("total_amount", &c.total_amount)?;
        m.serialize_entry("shipping_address", &c.details.shipping_address())?;
        m.serialize_entry("billing_address", &c.details.billing_address())?;
        m.serialize_entry("user_agent", &c.details.user_agent())?;
        m.serialize_entry("ip_address", &c.details.ip_address())?;
        m.serialize_entry("checkout_time", &c.time.to_rfc3339())?;
        m.serialize_entry("click_id", &self.click.as_ref().map(|k| &k.click_id))?;
        m.serialize_entry(
            "click_time",
            &self.click.as_ref().map(|k| k.time.to_rfc3339()),
        )?;
        m.serialize_entry("attribution_model", self.model.as_str())?;
        m.serialize_entry("processed_at", &self.processed_at.to_rfc3339())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::OUTPUT_COLUMNS;

    fn row() -> AttributedRow {
        AttributedRow {
            checkout: crate::parse_checkout(
                br#"{"checkout_id":"k1","user_id":7,"product_id":"p","total_amount":12.5,
                     "datetime_occured":"2024-05-01 12:00:00.250"}"#,
            )
            .expect("valid checkout"),
            user_name: Some("Ada".into()),
            click: Some(ClickRef {
                click_id: Id::new("c1"),
                time: EventTime::from_micros(1_000_000),
            }),
            model: AttributionModel::FirstClick,
            processed_at: EventTime::from_micros(0),
        }
    }

    #[test]
    fn json_keys_are_the_schema_columns_in_order() {
        let json = row().to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect("row is JSON");
        let obj = value.as_object().expect("row is an object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut names: Vec<&str> = OUTPUT_COLUMNS.iter().map(|c| c.name).collect();
        // serde_json's map is sorted unless preserve_order is on; compare as sets and check the
        // text order separately.
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        names.sort_unstable();
        assert_eq!(sorted, names);
        let mut last = 0;
        for c in OUTPUT_COLUMNS {
            let at = json
                .find(&format!("\"{}\":", c.name))
                .expect("column present");
            assert!(at >= last, "{} out of order in {json}", c.name);
            last = at;
        }
        assert_eq!(obj["user_id"], "7");
        assert_eq!(obj["checkout_time"], "2024-05-01T12:00:00.250Z");
        assert_eq!(obj["click_time"], "1970-01-01T00:00:01Z");
        assert_eq!(obj["total_amount"], 12.5);
        assert!(obj["shipping_address"].is_null());
    }

    #[test]
    fn direct_writer_matches_serde() {
        let mut r = row();
        assert_eq!(r.to_json(), serde_json::to_string(&r).expect("serializes"));
        r.click = None;
        r.user_name = Some("quote \" backslash \\ tab \t é".into());
        r.checkout.details = crate::DetailTexts {
            ip_address: Some("\u{1}"),
            ..r.checkout.details.texts()
        }
        .into();
        r.checkout.total_amount = Some(0.1 + 0.2);
        assert_eq!(r.to_json(), serde_json::to_string(&r).expect("serializes"));
        let back: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(back["user_name"], "quote \" backslash \\ tab \t é");
    }

    proptest::proptest! {
        /// The block-wise check must find a character that needs escaping wherever it is,
        /// also past the first block.
        #[test]
        fn strings_are_written_as_serde_writes_them(
            s in "[a-z\"\\\\\\x00-\\x1f\\x7f\u{e9}\u{2028}]{0,80}",
            pad in 0usize..70,
        ) {
            let text = format!("{}{s}", "x".repeat(pad));
            let mut out = Vec::new();
            json_str(&mut out, &text);
            proptest::prop_assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                serde_json::to_string(&text).expect("serializes")
            );
        }
    }

    #[test]
    fn organic_rows_have_null_click_fields() {
        let mut r = row();
        r.click = None;
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
        assert!(v["click_id"].is_null() && v["click_time"].is_null());
    }
}
