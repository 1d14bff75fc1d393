//! A private PostgreSQL schema for one run: tests and benchmarks share a database with
//! other work, so each run creates `<prefix>_<16 hex>`, confines its connections to it with
//! libpq `options` (`search_path`), and drops it afterwards.

use sqlx::Connection;

use crate::StoreError;

/// A schema created by [`create_schema`]; hand [`ScratchSchema::url`] to
/// `Store::open_postgres` or `serin server --database-url`.
#[derive(Debug, Clone)]
pub struct ScratchSchema {
    pub base_url: String,
    pub schema: String,
    pub url: String,
}

/// Creates `<prefix>_<16 hex>` in the database at `base_url`. `prefix` must be a plain SQL
/// identifier (letters, digits, `_`), as it is spliced into DDL.
pub async fn create_schema(base_url: &str, prefix: &str) -> Result<ScratchSchema, StoreError> {
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(StoreError::Invalid(format!(
            "{prefix:?} is not a schema prefix (lowercase letters, digits, _)"
        )));
    }
    let schema = format!("{prefix}_{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut conn = sqlx::PgConnection::connect(base_url).await?;
    // Checked above and completed with hex digits: safe to splice.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(ScratchSchema {
        base_url: base_url.to_owned(),
        url: with_search_path(base_url, &schema),
        schema,
    })
}

impl ScratchSchema {
    /// Drops the schema and everything in it. Close stores (and stop servers) using it first.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let mut conn = sqlx::PgConnection::connect(&self.base_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(())
    }
}

/// `base` with `options=-c search_path=<schema>` appended (URL-encoded).
pub fn with_search_path(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
