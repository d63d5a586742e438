//! The output table, defined once (docs/design.md §5).
//!
//! `create-bq-table` builds the BigQuery table from [`OUTPUT_COLUMNS`], the BigQuery sink and the
//! file sink write rows whose JSON keys are exactly these names in this order (a test in
//! [`crate::row`] holds the row to it), and the deduplicating view is derived from
//! [`PRIMARY_KEY`].

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

/// The column that identifies a row; also the BigQuery insertId.
pub const PRIMARY_KEY: &str = "checkout_id";

/// The column the table is partitioned on, by day.
pub const PARTITION_COLUMN: &str = "checkout_time";

/// The columns the table is clustered by.
pub const CLUSTER_COLUMNS: &[&str] = &["user_id"];

/// The SQL of a view over `table` (fully qualified, without backticks) that keeps one row per
/// [`PRIMARY_KEY`], the earliest written: it hides duplicates that at-least-once delivery can
/// leave in the raw table.
pub fn dedup_view_sql(table: &str) -> String {
    format!(
        "SELECT * EXCEPT (row_number) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {PRIMARY_KEY} \
         ORDER BY processed_at) AS row_number FROM `{table}`) WHERE row_number = 1"
    )
}
