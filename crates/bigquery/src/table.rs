//! Creating the output objects, idempotently: the dataset, the table built from
//! [`firstclick_model::schema`], its primary key, and the deduplicating view.
//!
//! Each step first looks at what exists and reports it ([`EnsureOutcome::Existed`]) instead of
//! failing, so `create-bq-table` can run on every deploy. An existing table is compared column by column
//! with ours: a missing, extra, retyped or re-moded column is an error that names each column
//! ([`SchemaDifference`]); differing descriptions, partitioning or clustering are only noted,
//! because rows still insert fine.
//!
//! The client crate's table model has no `tableConstraints`, so the primary key is declared with
//! DDL (`ALTER TABLE ... ADD PRIMARY KEY (checkout_id) NOT ENFORCED`). Backends that refuse it
//! (the emulator) leave the table without a key: reported as [`PrimaryKeyOutcome::NotApplied`],
//! not an error. The view is created with `CREATE VIEW IF NOT EXISTS`, whose result the emulator
//! can read back (a view created through `tables.insert` comes back without a schema there).

use std::fmt;

use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;

use firstclick_model::schema::{
    dedup_view_sql, Column, ColumnMode, ColumnType, CLUSTER_COLUMNS, OUTPUT_COLUMNS,
    PARTITION_COLUMN, PRIMARY_KEY,
};

use crate::error::{ApiError, EnsureError, QueryError};
use crate::query::type_name;
use crate::BigQuery;

/// The output table's description in BigQuery.
const TABLE_DESCRIPTION: &str =
    "firstclick: one row per checkout with its attributed click (first click by default).";

/// Whether an object was made by this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// This run created it.
    Created,
    /// It was already there (and, for the table, has our columns).
    Existed,
}

impl fmt::Display for EnsureOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnsureOutcome::Created => "created",
            EnsureOutcome::Existed => "already existed",
        })
    }
}

/// What became of the `PRIMARY KEY (checkout_id) NOT ENFORCED` declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimaryKeyOutcome {
    /// This run declared it.
    Applied,
    /// The table already had a primary key on these columns.
    AlreadyPresent {
        /// The key's columns, when the backend told us (empty when it only refused a second
        /// key).
        columns: Vec<String>,
    },
    /// The backend refused the DDL (the emulator does not support table constraints). The table
    /// works without it; deduplication relies on insertIds and the `_dedup` view.
    NotApplied {
        /// The backend's message.
        reason: String,
    },
}

/// What [`BigQuery::ensure_table`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsureReport {
    /// `project.dataset`.
    pub dataset_path: String,
    /// Whether the dataset was created.
    pub dataset: EnsureOutcome,
    /// `project.dataset.table`.
    pub table_path: String,
    /// Whether the table was created.
    pub table: EnsureOutcome,
    /// The primary key declaration.
    pub primary_key: PrimaryKeyOutcome,
    /// `project.dataset.table_dedup`.
    pub view_path: String,
    /// Whether the view was created.
    pub view: EnsureOutcome,
    /// Differences of existing objects that do not stop the sink (descriptions, partitioning,
    /// clustering, dataset location, view definition).
    pub notes: Vec<String>,
}

impl fmt::Display for EnsureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset {}: {}", self.dataset_path, self.dataset)?;
        writeln!(
            f,
            "table {}: {} ({} columns, partitioned by day of {}, clustered by {})",
            self.table_path,
            self.table,
            OUTPUT_COLUMNS.len(),
            PARTITION_COLUMN,
            CLUSTER_COLUMNS.join(", ")
        )?;
        write!(f, "primary key ({}) NOT ENFORCED: ", PRIMARY_KEY.join(", "))?;
        match &self.primary_key {
            PrimaryKeyOutcome::Applied => writeln!(f, "declared")?,
            PrimaryKeyOutcome::AlreadyPresent { columns } if columns.is_empty() => {
                writeln!(f, "already declared")?
            }
            PrimaryKeyOutcome::AlreadyPresent { columns } => {
                writeln!(f, "already declared on ({})", columns.join(", "))?
            }
            PrimaryKeyOutcome::NotApplied { reason } => {
                writeln!(f, "not applied, the backend refused it: {reason}")?
            }
        }
        write!(f, "view {}: {}", self.view_path, self.view)?;
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// One way an existing table's columns differ from [`OUTPUT_COLUMNS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaDifference {
    /// One of our columns is absent.
    Missing {
        /// The column.
        column: String,
        /// Its type and mode in our schema, e.g. `STRING NULLABLE`.
        expected: String,
    },
    /// The table has a column we do not write.
    Unexpected {
        /// The column.
        column: String,
        /// Its type and mode in the table.
        found: String,
    },
    /// Same column, other type.
    Type {
        /// The column.
        column: String,
        /// Our type.
        expected: String,
        /// The table's type.
        found: String,
    },
    /// Same column, other mode.
    Mode {
        /// The column.
        column: String,
        /// Our mode.
        expected: String,
        /// The table's mode.
        found: String,
    },
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaDifference::Missing { column, expected } => {
                write!(f, "column {column} is missing (expected {expected})")
            }
            SchemaDifference::Unexpected { column, found } => {
                write!(f, "column {column} ({found}) is not in firstclick's schema")
            }
            SchemaDifference::Type {
                column,
                expected,
                found,
            } => write!(f, "column {column} has type {found}, expected {expected}"),
            SchemaDifference::Mode {
                column,
                expected,
                found,
            } => write!(f, "column {column} has mode {found}, expected {expected}"),
        }
    }
}

fn field_type(t: ColumnType) -> FieldType {
    match t {
        ColumnType::String => FieldType::String,
        ColumnType::Numeric => FieldType::Numeric,
        ColumnType::Timestamp => FieldType::Timestamp,
    }
}

fn field(c: &Column) -> TableFieldSchema {
    let mut f = TableFieldSchema::new(c.name, field_type(c.column_type));
    f.mode = Some(c.mode.as_str().to_owned());
    f.description = Some(c.description.to_owned());
    f
}

/// The output table's schema, from [`OUTPUT_COLUMNS`] (types, modes, descriptions).
pub(crate) fn output_schema() -> TableSchema {
    TableSchema::new(OUTPUT_COLUMNS.iter().map(field).collect())
}

/// The table resource we create: schema, day partitioning on [`PARTITION_COLUMN`], clustering on
/// [`CLUSTER_COLUMNS`].
pub(crate) fn output_table(project: &str, dataset: &str, table: &str) -> Table {
    Table::new(project, dataset, table, output_schema())
        .description(TABLE_DESCRIPTION)
        .time_partitioning(TimePartitioning::per_day().field(PARTITION_COLUMN))
        .clustering(Clustering {
            fields: Some(CLUSTER_COLUMNS.iter().map(|c| (*c).to_owned()).collect()),
        })
}

/// BigQuery accepts aliases for some types; compare canonical names.
fn canonical_type(t: &FieldType) -> String {
    let name = type_name(t);
    match name.as_str() {
        "INT64" => "INTEGER".into(),
        "FLOAT64" => "FLOAT".into(),
        "BOOL" => "BOOLEAN".into(),
        "STRUCT" => "RECORD".into(),
        _ => name,
    }
}

fn mode_of(f: &TableFieldSchema) -> String {
    f.mode
        .as_deref()
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| ColumnMode::Nullable.as_str().to_owned())
}

/// Compares an existing table's columns with ours. Returns the blocking differences, and notes
/// about differing descriptions.
pub(crate) fn compare_schema(found: &TableSchema) -> (Vec<SchemaDifference>, Vec<String>) {
    let found_fields = found.fields.as_deref().unwrap_or_default();
    let mut diffs = Vec::new();
    let mut notes = Vec::new();
    for c in OUTPUT_COLUMNS {
        let expected_type = c.column_type.as_str();
        let expected_mode = c.mode.as_str();
        let Some(f) = found_fields.iter().find(|f| f.name == c.name) else {
            diffs.push(SchemaDifference::Missing {
                column: c.name.to_owned(),
                expected: format!("{expected_type} {expected_mode}"),
            });
            continue;
        };
        let found_type = canonical_type(&f.r#type);
        if found_type != expected_type {
            diffs.push(SchemaDifference::Type {
                column: c.name.to_owned(),
                expected: expected_type.to_owned(),
                found: found_type,
            });
        }
        let found_mode = mode_of(f);
        if found_mode != expected_mode {
            diffs.push(SchemaDifference::Mode {
                column: c.name.to_owned(),
                expected: expected_mode.to_owned(),
                found: found_mode,
            });
        }
        let found_desc = f.description.as_deref().unwrap_or("");
        if found_desc != c.description {
            notes.push(format!(
                "column {} has description {found_desc:?}, ours is {:?}",
                c.name, c.description
            ));
        }
    }
    for f in found_fields {
        if !OUTPUT_COLUMNS.iter().any(|c| c.name == f.name) {
            diffs.push(SchemaDifference::Unexpected {
                column: f.name.clone(),
                found: format!("{} {}", canonical_type(&f.r#type), mode_of(f)),
            });
        }
    }
    (diffs, notes)
}

/// The first line of a backend message (DuckDB appends the SQL with a caret on later lines).
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// Notes about partitioning and clustering that differ from ours.
fn layout_notes(t: &Table) -> Vec<String> {
    let mut notes = Vec::new();
    let partition = t
        .time_partitioning
        .as_ref()
        .map(|p| (p.r#type.as_str(), p.field.as_deref()));
    if partition != Some(("DAY", Some(PARTITION_COLUMN))) {
        notes.push(format!(
            "the table is partitioned by {}, expected by DAY of {PARTITION_COLUMN} (partitioning \
             cannot change on an existing table; recreate it to fix)",
            match partition {
                None => "nothing".to_owned(),
                Some((kind, field)) => format!(
                    "{kind} of {}",
                    field.unwrap_or("_PARTITIONTIME (ingestion time)")
                ),
            }
        ));
    }
    let clustered: Vec<&str> = t
        .clustering
        .as_ref()
        .and_then(|c| c.fields.as_deref())
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    if clustered != CLUSTER_COLUMNS {
        notes.push(format!(
            "the table is clustered by ({}), expected ({})",
            clustered.join(", "),
            CLUSTER_COLUMNS.join(", ")
        ));
    }
    notes
}

impl BigQuery {
    /// Makes sure the dataset, the output table (with our schema, day partitioning and
    /// clustering), its primary key where the backend supports it, and the `{table}_dedup` view
    /// exist. Safe to run again: existing objects are reported as [`EnsureOutcome::Existed`].
    ///
    /// Fails with [`EnsureError::SchemaMismatch`] listing every differing column when the table
    /// exists with other columns, types or modes.
    pub async fn ensure_table(&self) -> Result<EnsureReport, EnsureError> {
        let (dataset, mut notes) = self.ensure_dataset().await?;
        let (table, table_notes) = self.ensure_output_table().await?;
        notes.extend(table_notes);
        let primary_key = self.ensure_primary_key().await?;
        let (view, view_notes) = self.ensure_view().await?;
        notes.extend(view_notes);
        let report = EnsureReport {
            dataset_path: format!("{}.{}", self.project, self.dataset),
            dataset,
            table_path: self.table_path(),
            table,
            primary_key,
            view_path: self.view_path(),
            view,
            notes,
        };
        tracing::info!(
            table = %report.table_path,
            dataset = %report.dataset,
            outcome = %report.table,
            view = %report.view,
            primary_key = ?report.primary_key,
            "BigQuery output table ensured"
        );
        Ok(report)
    }

    /// Checks, without creating anything, that the output table exists and has our columns
    /// (the same comparison as [`BigQuery::ensure_table`]). Returns the notes about differences
    /// that do not stop the sink (descriptions, partitioning, clustering).
    ///
    /// Fails with [`EnsureError::NotFound`] when the dataset or the table is missing (run
    /// `create-bq-table`), [`EnsureError::SchemaMismatch`] or [`EnsureError::WrongKind`] when
    /// the table is not ours, and [`EnsureError::Api`] when BigQuery cannot be asked
    /// ([`EnsureError::is_transient`] says whether that may pass).
    pub async fn check_table(&self) -> Result<Vec<String>, EnsureError> {
        let path = self.table_path();
        let found = self
            .client
            .table()
            .get(&self.project, &self.dataset, &self.table, None)
            .await
            .map_err(|e| ApiError::from_bq(format!("get table {path}"), e));
        match found {
            Ok(t) => self.check_existing(&t),
            Err(e) if e.is_not_found() => {
                let dataset_path = format!("{}.{}", self.project, self.dataset);
                let dataset = self
                    .client
                    .dataset()
                    .get(&self.project, &self.dataset)
                    .await
                    .map_err(|e| ApiError::from_bq(format!("get dataset {dataset_path}"), e));
                match dataset {
                    Err(e) if e.is_not_found() => Err(EnsureError::NotFound {
                        kind: "dataset",
                        name: dataset_path,
                    }),
                    Err(e) => Err(e.into()),
                    Ok(_) => Err(EnsureError::NotFound {
                        kind: "table",
                        name: path,
                    }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_dataset(&self) -> Result<(EnsureOutcome, Vec<String>), EnsureError> {
        let path = format!("{}.{}", self.project, self.dataset);
        match self
            .client
            .dataset()
            .get(&self.project, &self.dataset)
            .await
        {
            Ok(ds) => {
                let mut notes = Vec::new();
                if let (Some(want), Some(found)) = (&self.location, &ds.location) {
                    if !want.eq_ignore_ascii_case(found) {
                        notes.push(format!(
                            "dataset {path} is in {found}, not in {want} as --bq-location says; \
                             queries run in {want} will not find it"
                        ));
                    }
                }
                return Ok((EnsureOutcome::Existed, notes));
            }
            Err(e) => {
                let e = ApiError::from_bq(format!("get dataset {path}"), e);
                if !e.is_not_found() {
                    return Err(e.into());
                }
            }
        }
        let mut ds = Dataset::new(&self.project, &self.dataset);
        if let Some(loc) = &self.location {
            ds = ds.location(loc);
        }
        match self.client.dataset().create(ds).await {
            Ok(_) => Ok((EnsureOutcome::Created, Vec::new())),
            Err(e) => {
                let e = ApiError::from_bq(format!("create dataset {path}"), e);
                if e.is_conflict() {
                    Ok((EnsureOutcome::Existed, Vec::new()))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Reads an existing table and checks it is ours.
    fn check_existing(&self, t: &Table) -> Result<Vec<String>, EnsureError> {
        let kind = t.r#type.as_deref().unwrap_or("TABLE");
        if kind != "TABLE" {
            return Err(EnsureError::WrongKind {
                name: self.table_path(),
                expected: "TABLE",
                found: kind.to_owned(),
            });
        }
        let (diffs, mut notes) = compare_schema(&t.schema);
        if !diffs.is_empty() {
            return Err(EnsureError::SchemaMismatch {
                table: self.table_path(),
                differences: diffs,
            });
        }
        notes.extend(layout_notes(t));
        Ok(notes)
    }

    async fn ensure_output_table(&self) -> Result<(EnsureOutcome, Vec<String>), EnsureError> {
        let path = self.table_path();
        let get = || async {
            self.client
                .table()
                .get(&self.project, &self.dataset, &self.table, None)
                .await
                .map_err(|e| ApiError::from_bq(format!("get table {path}"), e))
        };
        match get().await {
            Ok(t) => return Ok((EnsureOutcome::Existed, self.check_existing(&t)?)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let table = output_table(&self.project, &self.dataset, &self.table);
        match self.client.table().create(table).await {
            Ok(_) => Ok((EnsureOutcome::Created, Vec::new())),
            Err(e) => {
                let e = ApiError::from_bq(format!("create table {path}"), e);
                if e.is_conflict() {
                    // Someone created it between our get and create: check theirs.
                    let t = get().await?;
                    Ok((EnsureOutcome::Existed, self.check_existing(&t)?))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    async fn ensure_primary_key(&self) -> Result<PrimaryKeyOutcome, EnsureError> {
        // Real BigQuery lists declared keys in INFORMATION_SCHEMA; the emulator refuses the
        // query, and then we just try the DDL.
        let sql = format!(
            "SELECT k.column_name AS column_name \
             FROM `{p}.{d}`.INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS c \
             JOIN `{p}.{d}`.INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS k \
               ON k.constraint_name = c.constraint_name AND k.table_name = c.table_name \
             WHERE c.table_name = '{t}' AND c.constraint_type = 'PRIMARY KEY' \
             ORDER BY k.ordinal_position",
            p = self.project,
            d = self.dataset,
            t = self.table,
        );
        match self.query(&sql).await {
            Ok(rows) if !rows.is_empty() => {
                let columns = rows
                    .iter()
                    .filter_map(|r| r.get("column_name").and_then(|v| v.as_str()))
                    .map(str::to_owned)
                    .collect();
                return Ok(PrimaryKeyOutcome::AlreadyPresent { columns });
            }
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => tracing::debug!(error = %e, "cannot list table constraints; trying the DDL"),
        }
        let ddl = format!(
            "ALTER TABLE `{}` ADD PRIMARY KEY ({}) NOT ENFORCED",
            self.table_path(),
            PRIMARY_KEY.join(", ")
        );
        match self.query(&ddl).await {
            Ok(_) => Ok(PrimaryKeyOutcome::Applied),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                let reason = match &e {
                    QueryError::Api(api) => first_line(&api.message),
                    QueryError::Refused { errors, .. } => errors
                        .iter()
                        .map(|m| first_line(m))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => first_line(&other.to_string()),
                };
                if reason.to_ascii_lowercase().contains("already") {
                    Ok(PrimaryKeyOutcome::AlreadyPresent {
                        columns: Vec::new(),
                    })
                } else {
                    tracing::warn!(%reason, "primary key not declared");
                    Ok(PrimaryKeyOutcome::NotApplied { reason })
                }
            }
        }
    }

    async fn ensure_view(&self) -> Result<(EnsureOutcome, Vec<String>), EnsureError> {
        let view = self.view();
        let path = self.view_path();
        match self
            .client
            .table()
            .get(&self.project, &self.dataset, &view, None)
            .await
        {
            Ok(t) => {
                let kind = t.r#type.as_deref().unwrap_or("TABLE");
                if kind != "VIEW" {
                    return Err(EnsureError::WrongKind {
                        name: path,
                        expected: "VIEW",
                        found: kind.to_owned(),
                    });
                }
                let mut notes = Vec::new();
                if let Some(def) = &t.view {
                    if def.query != dedup_view_sql(&self.table_path(), PRIMARY_KEY) {
                        notes.push(format!(
                            "view {path} has another definition than ours; left unchanged: {}",
                            def.query
                        ));
                    }
                }
                return Ok((EnsureOutcome::Existed, notes));
            }
            Err(e) => {
                let e = ApiError::from_bq(format!("get view {path}"), e);
                if !e.is_not_found() {
                    return Err(e.into());
                }
            }
        }
        let ddl = format!(
            "CREATE VIEW IF NOT EXISTS `{path}` AS {}",
            dedup_view_sql(&self.table_path(), PRIMARY_KEY)
        );
        self.query(&ddl).await?;
        Ok((EnsureOutcome::Created, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_schema_has_no_differences() {
        let (diffs, notes) = compare_schema(&output_schema());
        assert!(diffs.is_empty(), "{diffs:?}");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn every_differing_column_is_named() {
        let mut fields: Vec<TableFieldSchema> = OUTPUT_COLUMNS.iter().map(field).collect();
        fields.retain(|f| f.name != "user_name");
        for f in &mut fields {
            if f.name == "total_amount" {
                f.r#type = FieldType::Float64;
            }
            if f.name == "checkout_time" {
                f.mode = None;
            }
        }
        fields.push(TableFieldSchema::integer("extra"));
        let (diffs, _) = compare_schema(&TableSchema::new(fields));
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "column user_name is missing (expected STRING NULLABLE)",
                "column total_amount has type FLOAT, expected NUMERIC",
                "column checkout_time has mode NULLABLE, expected REQUIRED",
                "column extra (INTEGER NULLABLE) is not in firstclick's schema",
            ]
        );
    }

    #[test]
    fn aliases_and_missing_modes_are_equivalent() {
        let mut fields: Vec<TableFieldSchema> = OUTPUT_COLUMNS.iter().map(field).collect();
        for f in &mut fields {
            if f.mode.as_deref() == Some("NULLABLE") {
                f.mode = None;
            }
        }
        let (diffs, _) = compare_schema(&TableSchema::new(fields));
        assert!(diffs.is_empty(), "{diffs:?}");
    }
}
