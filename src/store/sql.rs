//! Multi-row statements built at run time: one round trip for a whole batch;
//! and the transaction they run in (`Tx`), with the helpers that run them,
//! shared by the batch writer (projections, writes) and rebuild.
//!
//! Parameters are `$n` for PostgreSQL and plain `?` for SQLite: SQLite looks
//! a named parameter up by a linear scan, so binding thousands of `$n` costs
//! time quadratic in their number, while `?` binds in order.

use super::{Dialect, StoreError};
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;

/// A value bound into a generated statement.
#[derive(Debug, Clone)]
pub enum SqlValue {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> SqlValue {
        SqlValue::Int(v)
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> SqlValue {
        SqlValue::Text(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> SqlValue {
        SqlValue::Text(v.to_string())
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> SqlValue {
        SqlValue::OptInt(v)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> SqlValue {
        SqlValue::OptText(v)
    }
}

impl From<Option<&str>> for SqlValue {
    fn from(v: Option<&str>) -> SqlValue {
        SqlValue::OptText(v.map(str::to_string))
    }
}

/// Parameters per statement, under SQLite's 32766 and PostgreSQL's 65535.
const MAX_PARAMS: usize = 30_000;

/// The `n`th (from 1) parameter of a statement.
pub fn param(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Sqlite => "?".to_string(),
    }
}

/// Binds `values` in order. The statement is not kept prepared: generated
/// SQL varies with the batch's row count, and caching every variant would
/// only evict the statements worth keeping.
pub fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    values: Vec<SqlValue>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for value in values {
        query = match value {
            SqlValue::Int(v) => query.bind(v),
            SqlValue::Text(v) => query.bind(v),
            SqlValue::OptText(v) => query.bind(v),
            SqlValue::OptInt(v) => query.bind(v),
        };
    }
    query.persistent(false)
}

/// `INSERT INTO table (columns) VALUES (…), (…) suffix`, split into as many
/// statements as the parameter limit needs. Returns (sql, values) pairs.
pub fn multi_insert(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<SqlValue>>,
    suffix: &str,
) -> Vec<(String, Vec<SqlValue>)> {
    let per_statement = (MAX_PARAMS / columns.len()).max(1);
    let mut statements = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<SqlValue>> = rows.by_ref().take(per_statement).collect();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut values = Vec::with_capacity(chunk.len() * columns.len());
        for (r, row) in chunk.into_iter().enumerate() {
            debug_assert_eq!(row.len(), columns.len());
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&param(dialect, values.len() + c + 1));
            }
            sql.push(')');
            values.extend(row);
        }
        sql.push(' ');
        sql.push_str(suffix);
        statements.push((sql, values));
    }
    statements
}

/// `(CAST($1 AS T1), CAST($2 AS T2)), (…)` for a `VALUES` list whose column
/// types both databases must know, split under the parameter limit.
pub fn values_lists(
    dialect: Dialect,
    types: &[&str],
    rows: Vec<Vec<SqlValue>>,
) -> Vec<(String, Vec<SqlValue>)> {
    let per_statement = (MAX_PARAMS / types.len()).max(1);
    let mut lists = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = String::new();
        let mut values = Vec::new();
        for (r, row) in rows.by_ref().take(per_statement).enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            let cells: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(c, t)| format!("CAST({} AS {t})", param(dialect, values.len() + c + 1)))
                .collect();
            sql.push_str(&format!("({})", cells.join(", ")));
            values.extend(row);
        }
        lists.push((sql, values));
    }
    lists
}

/// Ids per `IN (…)` list: far under both databases' parameter limits.
const IDS_PER_STATEMENT: usize = 1000;

/// `sql` (whose `{ids}` stands for an `IN` list) for every chunk of `ids`,
/// with the values to bind: one statement per 1000 ids.
pub fn by_ids<Id: std::fmt::Display>(
    dialect: Dialect,
    sql: &str,
    ids: &[Id],
) -> Vec<(String, Vec<SqlValue>)> {
    ids.chunks(IDS_PER_STATEMENT)
        .map(|chunk| {
            let sql = sql.replace("{ids}", &parameter_list(dialect, 1, chunk.len()));
            let values = chunk
                .iter()
                .map(|id| SqlValue::from(id.to_string()))
                .collect();
            (sql, values)
        })
        .collect()
}

/// The parameters of an `IN (…)` list of `count`, numbered from `first`.
pub fn parameter_list(dialect: Dialect, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| param(dialect, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The transaction a batch, or a rebuild, writes in.
pub type Tx<'a> = sqlx::Transaction<'a, Any>;

/// Runs `sql` (whose `{ids}` is replaced by an `IN` list) for `ids`, in
/// chunks, and returns every row.
pub async fn select_by_ids<Id: std::fmt::Display>(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    sql: &str,
    ids: &[Id],
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let mut rows = Vec::new();
    for (sql, values) in by_ids(dialect, sql, ids) {
        rows.extend(
            bind_all(sqlx::query(&sql), values)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    Ok(rows)
}

/// Runs each statement with its values, in order, in `tx`.
pub async fn execute_all(
    tx: &mut Tx<'_>,
    statements: Vec<(String, Vec<SqlValue>)>,
) -> Result<(), StoreError> {
    for (sql, values) in statements {
        bind_all(sqlx::query(&sql), values)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parameters_across_rows() {
        let rows = vec![
            vec![SqlValue::Int(1), "a".into()],
            vec![SqlValue::Int(2), "b".into()],
        ];
        let statements = multi_insert(
            Dialect::Postgres,
            "t",
            &["x", "y"],
            rows.clone(),
            "ON CONFLICT DO NOTHING",
        );
        assert_eq!(statements.len(), 1);
        assert_eq!(
            statements[0].0,
            "INSERT INTO t (x, y) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(statements[0].1.len(), 4);
        assert_eq!(parameter_list(Dialect::Postgres, 3, 2), "$3, $4");
        let statements = multi_insert(Dialect::Sqlite, "t", &["x", "y"], rows, "");
        assert_eq!(
            statements[0].0,
            "INSERT INTO t (x, y) VALUES (?, ?), (?, ?) "
        );
        assert_eq!(parameter_list(Dialect::Sqlite, 3, 2), "?, ?");
    }

    #[test]
    fn splits_under_the_parameter_limit() {
        let rows = (0..20_000)
            .map(|i| vec![SqlValue::Int(i), SqlValue::Int(i)])
            .collect();
        let statements = multi_insert(Dialect::Postgres, "t", &["x", "y"], rows, "");
        assert_eq!(statements.len(), 2);
        assert!(statements.iter().all(|(_, v)| v.len() <= MAX_PARAMS));
        assert!(statements[1]
            .0
            .starts_with("INSERT INTO t (x, y) VALUES ($1, $2)"));
    }
}
