//! The touches output of multi-touch models: one [`TouchRow`] per (checkout, click, model),
//! with the click's share of the credit and of the revenue as exact decimals ([`Decimal9`],
//! BigQuery's NUMERIC scale), and the rounding rule that makes the shares of one checkout sum
//! exactly ([`apportion`]).

use crate::event::UserId;
use crate::id::Id;
use crate::row::{json_id, json_time, AttributionModel, ClickRef};
use crate::time::EventTime;

/// One unit in nanos: a [`Decimal9`] of 1.
pub const ONE: i64 = 1_000_000_000;

/// A decimal with 9 places (BigQuery NUMERIC's scale), held as integer billionths, so sums are
/// exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal9(pub i64);

impl Decimal9 {
    /// `v` rounded to 9 decimals as its shortest decimal text is (`12.5` is 12.500000000);
    /// `None` for a value that is not finite or out of range.
    pub fn from_f64(v: f64) -> Option<Self> {
        if !v.is_finite() || v.abs() >= 9.2e9 {
            return None;
        }
        let text = format!("{v:.9}");
        let (sign, digits) = match text.strip_prefix('-') {
            Some(d) => (-1, d),
            None => (1, text.as_str()),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, "0"));
        let whole: i64 = whole.parse().ok()?;
        let frac: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
        Some(Decimal9(sign * (whole * ONE + frac)))
    }

    /// As a float (for charts and sums that need not be exact).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / ONE as f64
    }
}

impl std::fmt::Display for Decimal9 {
    /// Plain decimal text without an exponent or trailing zeros: `0.25`, `1`, `-3.000000001`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / ONE as u64, abs % ONE as u64);
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// Splits `total` into integer shares proportional to `weights` that sum to exactly `total`:
/// each share is first rounded down, then the units left over go one each to the shares with
/// the largest remainders, ties to the earlier index (the earlier click). This is the largest
/// remainder (Hamilton) method. Weights must be finite and not negative; all zero gives equal
/// shares. Empty weights give no shares.
pub fn apportion(total: i64, weights: &[f64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: f64 = weights.iter().sum();
    let weights: Vec<f64> = if sum > 0.0 && sum.is_finite() {
        weights.iter().map(|w| w / sum).collect()
    } else {
        vec![1.0 / weights.len() as f64; weights.len()]
    };
    let exact: Vec<f64> = weights.iter().map(|w| w * total as f64).collect();
    let mut shares: Vec<i64> = exact.iter().map(|e| e.floor() as i64).collect();
    let mut left = total - shares.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Largest remainder first; a stable sort keeps the earlier index first among equals.
    order.sort_by(|a, b| {
        let (ra, rb) = (exact[*a] - shares[*a] as f64, exact[*b] - shares[*b] as f64);
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
    });
    // Rounding of the floats can leave the floor sum off by more than the share count; cycle.
    let n = shares.len() as i64;
    while left != 0 {
        for &i in &order {
            if left == 0 {
                break;
            }
            let step = left.signum();
            shares[i] += step;
            left -= step;
        }
        if left.abs() > n * 4 {
            break;
        }
    }
    shares
}

/// A click's share of one checkout under one multi-touch model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchRow {
    /// The checkout.
    pub checkout_id: Id,
    /// The buyer.
    pub user_id: UserId,
    /// The product bought (and clicked).
    pub product_id: Id,
    /// The checkout's event time.
    pub checkout_time: EventTime,
    /// The click credited.
    pub click: ClickRef,
    /// The model.
    pub model: AttributionModel,
    /// The click's share of the checkout, in (0, 1]; the shares of one checkout and model sum
    /// to exactly 1.
    pub credit: Decimal9,
    /// The click's share of `total_amount` (the shares sum to exactly `total_amount` rounded
    /// to 9 decimals); `None` when the checkout has no amount.
    pub credited_revenue: Option<Decimal9>,
    /// When the row was produced (processing time).
    pub processed_at: EventTime,
}

impl TouchRow {
    /// The row as one line of JSON (no trailing newline); keys are
    /// [`crate::schema::TOUCH_COLUMNS`] in order, NUMERICs as decimal strings.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        // write_json writes valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the row as one line of JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"checkout_id\":");
        json_id(out, &self.checkout_id);
        out.extend_from_slice(b",\"user_id\":\"");
        out.extend_from_slice(itoa::Buffer::new().format(self.user_id).as_bytes());
        out.extend_from_slice(b"\",\"product_id\":");
        json_id(out, &self.product_id);
        out.extend_from_slice(b",\"checkout_time\":");
        json_time(out, self.checkout_time);
        out.extend_from_slice(b",\"click_id\":");
        json_id(out, &self.click.click_id);
        out.extend_from_slice(b",\"click_time\":");
        json_time(out, self.click.time);
        out.extend_from_slice(b",\"attribution_model\":\"");
        out.extend_from_slice(self.model.as_str().as_bytes());
        out.extend_from_slice(b"\",\"credit\":\"");
        out.extend_from_slice(self.credit.to_string().as_bytes());
        out.extend_from_slice(b"\",\"credited_revenue\":");
        match self.credited_revenue {
            Some(r) => {
                out.push(b'"');
                out.extend_from_slice(r.to_string().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"processed_at\":");
        json_time(out, self.processed_at);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TOUCH_COLUMNS;

    #[test]
    fn decimals_are_exact_text() {
        assert_eq!(Decimal9::from_f64(12.5), Some(Decimal9(12_500_000_000)));
        assert_eq!(Decimal9::from_f64(0.1 + 0.2), Some(Decimal9(300_000_000)));
        assert_eq!(Decimal9::from_f64(-1.25), Some(Decimal9(-1_250_000_000)));
        assert_eq!(Decimal9::from_f64(f64::NAN), None);
        assert_eq!(Decimal9(333_333_334).to_string(), "0.333333334");
        assert_eq!(Decimal9(ONE).to_string(), "1");
        assert_eq!(Decimal9(-1_000_000_001).to_string(), "-1.000000001");
    }

    #[test]
    fn apportion_sums_exactly_and_gives_leftovers_to_the_largest_remainders() {
        assert_eq!(
            apportion(ONE, &[1.0, 1.0, 1.0]),
            vec![333_333_334, 333_333_333, 333_333_333]
        );
        assert_eq!(apportion(10, &[0.4, 0.2, 0.4]), vec![4, 2, 4]);
        assert_eq!(apportion(7, &[1.0, 1.0]), vec![4, 3]);
        assert_eq!(apportion(5, &[0.0, 0.0]), vec![3, 2]);
        assert!(apportion(5, &[]).is_empty());
        for n in 1..40 {
            let w: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64)).collect();
            for total in [ONE, 12_345_678_901, 1, 0, 7] {
                assert_eq!(
                    apportion(total, &w).iter().sum::<i64>(),
                    total,
                    "{n} {total}"
                );
            }
        }
    }

    #[test]
    fn json_keys_are_the_touch_columns_in_order() {
        let row = TouchRow {
            checkout_id: Id::new("k1"),
            user_id: 7,
            product_id: Id::new("p"),
            checkout_time: EventTime::from_micros(2_000_000),
            click: ClickRef {
                click_id: Id::new("c1"),
                time: EventTime::from_micros(1_000_000),
            },
            model: AttributionModel::Linear,
            credit: Decimal9(500_000_000),
            credited_revenue: Some(Decimal9(6_250_000_000)),
            processed_at: EventTime::from_micros(0),
        };
        let json = row.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let obj = v.as_object().expect("object");
        assert_eq!(obj.len(), TOUCH_COLUMNS.len());
        let mut last = 0;
        for c in TOUCH_COLUMNS {
            let at = json
                .find(&format!("\"{}\":", c.name))
                .expect("column present");
            assert!(at >= last, "{} out of order in {json}", c.name);
            last = at;
        }
        assert_eq!(obj["credit"], "0.5");
        assert_eq!(obj["credited_revenue"], "6.25");
        assert_eq!(obj["attribution_model"], "linear");
    }
}
