//! Creating the output objects, idempotently: the dataset, the output table and the touches
//! table built from [`firstclick_model::schema`], their primary keys, their deduplicating views
//! and the `model_comparison` view over both (docs/design.md §5).
//!
//! Both tables go through the same steps, described by a [`TableSpec`] (columns, key,
//! clustering), so an existing touches table is compared and reported like the output table.
//!
//! Each step first looks at what exists and reports it ([`EnsureOutcome::Existed`]) instead of
//! failing, so `create-bq-table` can run on every deploy. An existing table is compared column by column
//! with ours: a missing, extra, retyped or re-moded column is an error that names each column
//! ([`SchemaDifference`]); differing descriptions, partitioning or clustering are only noted,
//! because rows still insert fine.
//!
//! The client crate's table model has no `tableConstraints`, so the primary key is declared with
//! DDL (`ALTER TABLE ... ADD PRIMARY KEY (checkout_id) NOT ENFORCED`). The emulator cannot
//! parse that DDL, so against it the statement is not sent; a backend that refuses it leaves the
//! table without a key. Both are reported as [`PrimaryKeyOutcome::NotApplied`] in the report
//! (not logged as well: the caller prints the report), not as an error. The view is created with `CREATE VIEW IF NOT EXISTS`, whose result the emulator
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
    dedup_view_sql, model_comparison_sql, Column, ColumnMode, ColumnType, CLUSTER_COLUMNS,
    COMPARISON_VIEW, OUTPUT_COLUMNS, PARTITION_COLUMN, PRIMARY_KEY, TOUCH_CLUSTER_COLUMNS,
    TOUCH_COLUMNS, TOUCH_KEY,
};

use crate::error::{ApiError, EnsureError, QueryError};
use crate::query::type_name;
use crate::BigQuery;

/// The output table's description in BigQuery.
const TABLE_DESCRIPTION: &str =
    "firstclick: one row per checkout with its attributed click (first click by default).";

/// The touches table's description in BigQuery.
const TOUCHES_DESCRIPTION: &str = "firstclick: one row per checkout, click and multi-touch \
     model with the click's credit and credited revenue.";

/// What one of our tables is: the id, its columns, key and clustering.
#[derive(Clone, Debug)]
pub(crate) struct TableSpec {
    /// The table id in the client's dataset.
    pub(crate) id: String,
    /// `project.dataset.table`.
    pub(crate) path: String,
    /// Its columns, in order.
    pub(crate) columns: &'static [Column],
    /// The columns of its primary key (and of its dedup view's partition).
    pub(crate) key: &'static [&'static str],
    /// The columns it is clustered by.
    pub(crate) clustering: &'static [&'static str],
    /// Its description.
    pub(crate) description: &'static str,
}

impl TableSpec {
    /// The dedup view's id.
    fn view(&self) -> String {
        format!("{}_dedup", self.id)
    }
}

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

/// Why no primary key is declared on the emulator (the report's line).
const EMULATOR_HAS_NO_KEYS: &str = "skipped on the BigQuery emulator, which cannot declare \
     table constraints (Google BigQuery does); duplicates are still dropped by the insertIds \
     and the _dedup view";

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
    /// Not declared: on the emulator, which cannot parse table constraints, the DDL is not
    /// sent; another backend refused it. The reason is the report's whole line after the key. The table works without it; deduplication relies on
    /// insertIds and the `_dedup` view.
    NotApplied {
        /// Why (the backend's message when it refused).
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
    /// `project.dataset.touches_table`.
    pub touches_path: String,
    /// Whether the touches table was created.
    pub touches: EnsureOutcome,
    /// The touches table's primary key declaration.
    pub touches_primary_key: PrimaryKeyOutcome,
    /// `project.dataset.touches_table_dedup`.
    pub touches_view_path: String,
    /// Whether the touches' dedup view was created.
    pub touches_view: EnsureOutcome,
    /// `project.dataset.model_comparison`.
    pub comparison_path: String,
    /// Whether the comparison view was created.
    pub comparison: EnsureOutcome,
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
        write_key(f, PRIMARY_KEY, &self.primary_key)?;
        writeln!(f, "view {}: {}", self.view_path, self.view)?;
        writeln!(
            f,
            "touches table {}: {} ({} columns, partitioned by day of {}, clustered by {})",
            self.touches_path,
            self.touches,
            TOUCH_COLUMNS.len(),
            PARTITION_COLUMN,
            TOUCH_CLUSTER_COLUMNS.join(", ")
        )?;
        write_key(f, TOUCH_KEY, &self.touches_primary_key)?;
        writeln!(f, "view {}: {}", self.touches_view_path, self.touches_view)?;
        write!(
            f,
            "view {}: {} (conversions and credited revenue per model and product)",
            self.comparison_path, self.comparison
        )?;
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// One line of the report: what became of a primary key.
fn write_key(f: &mut fmt::Formatter<'_>, key: &[&str], outcome: &PrimaryKeyOutcome) -> fmt::Result {
    write!(f, "primary key ({}) NOT ENFORCED: ", key.join(", "))?;
    match outcome {
        PrimaryKeyOutcome::Applied => writeln!(f, "declared"),
        PrimaryKeyOutcome::AlreadyPresent { columns } if columns.is_empty() => {
            writeln!(f, "already declared")
        }
        PrimaryKeyOutcome::AlreadyPresent { columns } => {
            writeln!(f, "already declared on ({})", columns.join(", "))
        }
        PrimaryKeyOutcome::NotApplied { reason } => writeln!(f, "{reason}"),
    }
}

/// One way an existing table's columns differ from ours ([`OUTPUT_COLUMNS`] or
/// [`TOUCH_COLUMNS`]).
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

/// A table's schema from its columns (types, modes, descriptions).
pub(crate) fn schema_of(columns: &[Column]) -> TableSchema {
    TableSchema::new(columns.iter().map(field).collect())
}

/// The table resource we create: schema, day partitioning on [`PARTITION_COLUMN`], the spec's
/// clustering.
pub(crate) fn table_resource(project: &str, dataset: &str, spec: &TableSpec) -> Table {
    Table::new(project, dataset, &spec.id, schema_of(spec.columns))
        .description(spec.description)
        .time_partitioning(TimePartitioning::per_day().field(PARTITION_COLUMN))
        .clustering(Clustering {
            fields: Some(spec.clustering.iter().map(|c| (*c).to_owned()).collect()),
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

/// Compares an existing table's columns with `columns`. Returns the blocking differences, and
/// notes about differing descriptions.
pub(crate) fn compare_schema(
    found: &TableSchema,
    columns: &[Column],
) -> (Vec<SchemaDifference>, Vec<String>) {
    let found_fields = found.fields.as_deref().unwrap_or_default();
    let mut diffs = Vec::new();
    let mut notes = Vec::new();
    for c in columns {
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
        if !columns.iter().any(|c| c.name == f.name) {
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
fn layout_notes(t: &Table, spec: &TableSpec) -> Vec<String> {
    let mut notes = Vec::new();
    let partition = t
        .time_partitioning
        .as_ref()
        .map(|p| (p.r#type.as_str(), p.field.as_deref()));
    if partition != Some(("DAY", Some(PARTITION_COLUMN))) {
        notes.push(format!(
            "table {} is partitioned by {}, expected by DAY of {PARTITION_COLUMN} (partitioning \
             cannot change on an existing table; recreate it to fix)",
            spec.path,
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
    if clustered != spec.clustering {
        notes.push(format!(
            "table {} is clustered by ({}), expected ({})",
            spec.path,
            clustered.join(", "),
            spec.clustering.join(", ")
        ));
    }
    notes
}

impl BigQuery {
    /// The output table's spec.
    pub(crate) fn output_spec(&self) -> TableSpec {
        TableSpec {
            id: self.table.clone(),
            path: self.table_path(),
            columns: OUTPUT_COLUMNS,
            key: PRIMARY_KEY,
            clustering: CLUSTER_COLUMNS,
            description: TABLE_DESCRIPTION,
        }
    }

    /// The touches table's spec.
    pub(crate) fn touches_spec(&self) -> TableSpec {
        TableSpec {
            id: self.touches_table.clone(),
            path: self.touches_table_path(),
            columns: TOUCH_COLUMNS,
            key: TOUCH_KEY,
            clustering: TOUCH_CLUSTER_COLUMNS,
            description: TOUCHES_DESCRIPTION,
        }
    }

    /// Makes sure the dataset, the output table and the touches table (with our schemas, day
    /// partitioning and clustering), their primary keys where the backend supports them, their
    /// `_dedup` views and the `model_comparison` view exist. Safe to run again: existing
    /// objects are reported as [`EnsureOutcome::Existed`].
    ///
    /// Fails with [`EnsureError::SchemaMismatch`] listing every differing column when a table
    /// exists with other columns, types or modes.
    pub async fn ensure_table(&self) -> Result<EnsureReport, EnsureError> {
        let (dataset, mut notes) = self.ensure_dataset().await?;
        let output = self.output_spec();
        let touches_spec = self.touches_spec();
        let (table, table_notes) = self.ensure_spec_table(&output).await?;
        notes.extend(table_notes);
        let primary_key = self.ensure_primary_key(&output).await?;
        let view_sql = dedup_view_sql(&output.path, output.key);
        let (view, view_notes) = self.ensure_view(&output.view(), &view_sql).await?;
        notes.extend(view_notes);
        let (touches, touches_notes) = self.ensure_spec_table(&touches_spec).await?;
        notes.extend(touches_notes);
        let touches_primary_key = self.ensure_primary_key(&touches_spec).await?;
        let touches_sql = dedup_view_sql(&touches_spec.path, touches_spec.key);
        let (touches_view, touches_view_notes) =
            self.ensure_view(&touches_spec.view(), &touches_sql).await?;
        notes.extend(touches_view_notes);
        let comparison_sql = model_comparison_sql(&self.view_path(), &self.touches_view_path());
        let (comparison, comparison_notes) =
            self.ensure_view(COMPARISON_VIEW, &comparison_sql).await?;
        notes.extend(comparison_notes);
        let report = EnsureReport {
            dataset_path: format!("{}.{}", self.project, self.dataset),
            dataset,
            table_path: output.path,
            table,
            primary_key,
            view_path: self.view_path(),
            view,
            touches_path: touches_spec.path,
            touches,
            touches_primary_key,
            touches_view_path: self.touches_view_path(),
            touches_view,
            comparison_path: self.comparison_view_path(),
            comparison,
            notes,
        };
        // The caller prints the report; a log line with the same content would say it twice.
        tracing::debug!(
            table = %report.table_path,
            dataset = %report.dataset,
            outcome = %report.table,
            view = %report.view,
            primary_key = ?report.primary_key,
            touches = %report.touches,
            touches_view = %report.touches_view,
            comparison = %report.comparison,
            "BigQuery output tables ensured"
        );
        Ok(report)
    }

    /// Checks, without creating anything, that the output table and the touches table exist
    /// and have our columns (the same comparison as [`BigQuery::ensure_table`]). Returns the
    /// notes about differences that do not stop the sink (descriptions, partitioning,
    /// clustering).
    ///
    /// Fails with [`EnsureError::NotFound`] when the dataset or a table is missing (run
    /// `create-bq-table`), [`EnsureError::SchemaMismatch`] or [`EnsureError::WrongKind`] when
    /// a table is not ours, and [`EnsureError::Api`] when BigQuery cannot be asked
    /// ([`EnsureError::is_transient`] says whether that may pass).
    ///
    /// The touches table is checked only `with_touches` (a multi-touch model runs), so that a
    /// first-click deployment made before the touches table existed starts unchanged.
    pub async fn check_table(&self, with_touches: bool) -> Result<Vec<String>, EnsureError> {
        let mut notes = self.check_spec_table(&self.output_spec()).await?;
        if with_touches {
            notes.extend(self.check_spec_table(&self.touches_spec()).await?);
        }
        Ok(notes)
    }

    /// Checks the touches table alone, as [`BigQuery::check_table`] does with `with_touches`
    /// (so a checklist can report the two tables on lines of their own).
    pub async fn check_touches_table(&self) -> Result<Vec<String>, EnsureError> {
        self.check_spec_table(&self.touches_spec()).await
    }

    async fn check_spec_table(&self, spec: &TableSpec) -> Result<Vec<String>, EnsureError> {
        let path = &spec.path;
        let found = self
            .client
            .table()
            .get(&self.project, &self.dataset, &spec.id, None)
            .await
            .map_err(|e| ApiError::from_bq(format!("get table {path}"), e));
        match found {
            Ok(t) => check_existing(&t, spec),
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
                        name: path.clone(),
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

    async fn ensure_spec_table(
        &self,
        spec: &TableSpec,
    ) -> Result<(EnsureOutcome, Vec<String>), EnsureError> {
        let path = &spec.path;
        let get = || async {
            self.client
                .table()
                .get(&self.project, &self.dataset, &spec.id, None)
                .await
                .map_err(|e| ApiError::from_bq(format!("get table {path}"), e))
        };
        match get().await {
            Ok(t) => return Ok((EnsureOutcome::Existed, check_existing(&t, spec)?)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let table = table_resource(&self.project, &self.dataset, spec);
        match self.client.table().create(table).await {
            Ok(_) => Ok((EnsureOutcome::Created, Vec::new())),
            Err(e) => {
                let e = ApiError::from_bq(format!("create table {path}"), e);
                if e.is_conflict() {
                    // Someone created it between our get and create: check theirs.
                    let t = get().await?;
                    Ok((EnsureOutcome::Existed, check_existing(&t, spec)?))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    async fn ensure_primary_key(&self, spec: &TableSpec) -> Result<PrimaryKeyOutcome, EnsureError> {
        if self.is_emulator() {
            // Its SQL parser stops at `PRIMARY KEY ... NOT ENFORCED` (a `Parser Error`), and
            // it has no INFORMATION_SCHEMA of constraints: nothing to ask, nothing to send.
            return Ok(PrimaryKeyOutcome::NotApplied {
                reason: EMULATOR_HAS_NO_KEYS.to_string(),
            });
        }
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
            t = spec.id,
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
            spec.path,
            spec.key.join(", ")
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
                    tracing::debug!(%reason, "primary key not declared");
                    Ok(PrimaryKeyOutcome::NotApplied {
                        reason: format!("not declared, BigQuery refused it: {reason}"),
                    })
                }
            }
        }
    }

    /// Creates the view `view` (an id in the dataset) as `sql` unless it exists; an existing
    /// view with another definition is noted and left alone.
    async fn ensure_view(
        &self,
        view: &str,
        sql: &str,
    ) -> Result<(EnsureOutcome, Vec<String>), EnsureError> {
        let path = format!("{}.{}.{view}", self.project, self.dataset);
        match self
            .client
            .table()
            .get(&self.project, &self.dataset, view, None)
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
                    if def.query != sql {
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
        let ddl = format!("CREATE VIEW IF NOT EXISTS `{path}` AS {sql}");
        self.query(&ddl).await?;
        Ok((EnsureOutcome::Created, Vec::new()))
    }
}

/// Checks that an existing table is ours: a table with `spec`'s columns.
fn check_existing(t: &Table, spec: &TableSpec) -> Result<Vec<String>, EnsureError> {
    let kind = t.r#type.as_deref().unwrap_or("TABLE");
    if kind != "TABLE" {
        return Err(EnsureError::WrongKind {
            name: spec.path.clone(),
            expected: "TABLE",
            found: kind.to_owned(),
        });
    }
    let (diffs, mut notes) = compare_schema(&t.schema, spec.columns);
    if !diffs.is_empty() {
        return Err(EnsureError::SchemaMismatch {
            table: spec.path.clone(),
            differences: diffs,
        });
    }
    notes.extend(layout_notes(t, spec));
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_schema_has_no_differences() {
        let (diffs, notes) = compare_schema(&schema_of(OUTPUT_COLUMNS), OUTPUT_COLUMNS);
        assert!(diffs.is_empty(), "{diffs:?}");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_touches_table_is_compared_with_the_touch_columns() {
        let (diffs, notes) = compare_schema(&schema_of(TOUCH_COLUMNS), TOUCH_COLUMNS);
        assert!(diffs.is_empty() && notes.is_empty(), "{diffs:?} {notes:?}");
        // An output table where the touches table should be: every touch-only column named.
        let (diffs, _) = compare_schema(&schema_of(OUTPUT_COLUMNS), TOUCH_COLUMNS);
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"column credit is missing (expected NUMERIC REQUIRED)".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"column click_id has mode NULLABLE, expected REQUIRED".to_owned()),
            "{text:?}"
        );
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
        let (diffs, _) = compare_schema(&TableSchema::new(fields), OUTPUT_COLUMNS);
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
        let (diffs, _) = compare_schema(&TableSchema::new(fields), OUTPUT_COLUMNS);
        assert!(diffs.is_empty(), "{diffs:?}");
    }
}
