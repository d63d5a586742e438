//! The output table, defined once (docs/design.md §5).
//!
//! `create-bq-table` builds the BigQuery table from [`OUTPUT_COLUMNS`], the BigQuery sink and the
//! file sink write rows whose JSON keys are exactly these names in this order (a test in
//! [`crate::row`] holds the row to it), and the deduplicating view is derived from
//! [`PRIMARY_KEY`]. The touches table of multi-touch models ([`TOUCH_COLUMNS`], [`TOUCH_KEY`]) is
//! defined the same way, and [`model_comparison_sql`] compares the models over both.

/// A column's BigQuery type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `STRING`
    String,
    /// `NUMERIC`
    Numeric,
    /// `TIMESTAMP`
    Timestamp,
}

impl ColumnType {
    /// The type's name in BigQuery's REST API and DDL.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::Timestamp => "TIMESTAMP",
        }
    }
}

/// Whether a column may be NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnMode {
    /// Never NULL.
    Required,
    /// May be NULL.
    Nullable,
}

impl ColumnMode {
    /// The mode's name in BigQuery's REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnMode::Required => "REQUIRED",
            ColumnMode::Nullable => "NULLABLE",
        }
    }
}

/// One column of the output table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name, also the JSON key in every row.
    pub name: &'static str,
    /// BigQuery type.
    pub column_type: ColumnType,
    /// Whether it may be NULL.
    pub mode: ColumnMode,
    /// What it holds, shown as the column description in BigQuery.
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    column_type: ColumnType,
    mode: ColumnMode,
    description: &'static str,
) -> Column {
    Column {
        name,
        column_type,
        mode,
        description,
    }
}

use ColumnMode::{Nullable, Required};
use ColumnType::{Numeric, String as Str, Timestamp};

/// The output table's columns, in order.
pub const OUTPUT_COLUMNS: &[Column] = &[
    col(
        "checkout_id",
        Str,
        Required,
        "The checkout; exactly one row per id.",
    ),
    col("user_id", Str, Nullable, "The buyer's user id."),
    col(
        "user_name",
        Str,
        Nullable,
        "The buyer's name from Redis; NULL when the user is unknown.",
    ),
    col("product_id", Str, Nullable, "The product bought."),
    col("payment_method", Str, Nullable, "From the checkout."),
    col("total_amount", Numeric, Nullable, "From the checkout."),
    col("shipping_address", Str, Nullable, "From the checkout."),
    col("billing_address", Str, Nullable, "From the checkout."),
    col("user_agent", Str, Nullable, "From the checkout."),
    col("ip_address", Str, Nullable, "From the checkout."),
    col(
        "checkout_time",
        Timestamp,
        Required,
        "The checkout's event time.",
    ),
    col(
        "click_id",
        Str,
        Nullable,
        "The attributed click; NULL for an organic checkout.",
    ),
    col(
        "click_time",
        Timestamp,
        Nullable,
        "The attributed click's event time.",
    ),
    col(
        "attribution_model",
        Str,
        Nullable,
        "The attribution model, e.g. first_click.",
    ),
    col(
        "processed_at",
        Timestamp,
        Nullable,
        "When firstclick wrote the row.",
    ),
];

/// The columns that identify a row: one per checkout and model. The BigQuery insertId is
/// `checkout_id` for first click (as before several models existed), `checkout_id:model`
/// otherwise.
pub const PRIMARY_KEY: &[&str] = &["checkout_id", "attribution_model"];

/// The touches table's default name (`--bq-touches-table`).
pub const TOUCHES_TABLE: &str = "attributed_touches";

/// The touches table's columns, in order: one row per (checkout, click, multi-touch model).
pub const TOUCH_COLUMNS: &[Column] = &[
    col("checkout_id", Str, Required, "The checkout."),
    col("user_id", Str, Nullable, "The buyer's user id."),
    col(
        "product_id",
        Str,
        Nullable,
        "The product bought and clicked.",
    ),
    col(
        "checkout_time",
        Timestamp,
        Required,
        "The checkout's event time.",
    ),
    col("click_id", Str, Required, "The click credited."),
    col("click_time", Timestamp, Required, "The click's event time."),
    col(
        "attribution_model",
        Str,
        Required,
        "linear, time_decay or position_based.",
    ),
    col(
        "credit",
        Numeric,
        Required,
        "The click's share of the checkout; the shares of a checkout and model sum to 1.",
    ),
    col(
        "credited_revenue",
        Numeric,
        Nullable,
        "The click's share of total_amount; the shares sum to total_amount.",
    ),
    col(
        "processed_at",
        Timestamp,
        Nullable,
        "When firstclick wrote the row.",
    ),
];

/// The columns that identify a touch row.
pub const TOUCH_KEY: &[&str] = &["checkout_id", "attribution_model", "click_id"];

/// The column the table is partitioned on, by day.
pub const PARTITION_COLUMN: &str = "checkout_time";

/// The columns the table is clustered by.
pub const CLUSTER_COLUMNS: &[&str] = &["user_id"];

/// The SQL of a view over `table` (fully qualified, without backticks) that keeps one row per
/// `key` (e.g. [`PRIMARY_KEY`]), the earliest written: it hides duplicates that at-least-once
/// delivery can leave in the raw table.
pub fn dedup_view_sql(table: &str, key: &[&str]) -> String {
    format!(
        "SELECT * EXCEPT (row_number) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {} \
         ORDER BY processed_at) AS row_number FROM `{table}`) WHERE row_number = 1",
        key.join(", ")
    )
}

/// The columns the touches table is clustered by: the comparison view groups by them.
pub const TOUCH_CLUSTER_COLUMNS: &[&str] = &["attribution_model", "product_id"];

/// The name of the view that compares the models ([`model_comparison_sql`]).
pub const COMPARISON_VIEW: &str = "model_comparison";

/// The SQL of the view that compares the models: one row per `attribution_model` and
/// `product_id`, with `conversions` (NUMERIC) and `credited_revenue` (NUMERIC).
///
/// Single-touch models (first and last click) come from `checkouts_dedup`, the output table's
/// dedup view (fully qualified, without backticks): a checkout with a credited click is one
/// conversion worth its `total_amount`. Multi-touch models come from `touches_dedup`, the
/// touches table's dedup view: a click earns its `credit` of a conversion and its
/// `credited_revenue`. Organic checkouts count for no model. Every aggregate is aliased and
/// both halves have the same types, which the BigQuery emulator needs (docs/design.md §9).
pub fn model_comparison_sql(checkouts_dedup: &str, touches_dedup: &str) -> String {
    let single: Vec<String> = crate::row::AttributionModel::ALL
        .iter()
        .filter(|m| !m.is_multi_touch())
        .map(|m| format!("'{}'", m.as_str()))
        .collect();
    format!(
        "SELECT attribution_model, product_id, CAST(COUNT(*) AS NUMERIC) AS conversions, \
         SUM(total_amount) AS credited_revenue FROM `{checkouts_dedup}` \
         WHERE click_id IS NOT NULL AND attribution_model IN ({}) \
         GROUP BY attribution_model, product_id \
         UNION ALL \
         SELECT attribution_model, product_id, SUM(credit) AS conversions, \
         SUM(credited_revenue) AS credited_revenue FROM `{touches_dedup}` \
         GROUP BY attribution_model, product_id",
        single.join(", ")
    )
}
