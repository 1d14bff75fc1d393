//! Test helpers shared with other crates (enable the `testing` feature in dev-dependencies).
//!
//! PostgreSQL isolation: [`TestPostgres::create`] connects to `SERIN_TEST_DATABASE_URL`
//! (default [`DEFAULT_DATABASE_URL`]), creates a fresh schema `serin_t_<16 hex>` and hands out
//! a URL whose libpq `options` put that schema first on the `search_path`
//! (`...?options=-c%20search_path%3Dserin_t_...`). [`crate::Store::open_postgres`] (and any
//! `serin server --database-url` started with that URL) then migrates and works inside that
//! schema only. [`TestPostgres::cleanup`] (or, as a fallback, `Drop`) runs
//! `DROP SCHEMA ... CASCADE`.
//!
//! If PostgreSQL is unreachable, `create` fails, so CI really exercises it, unless
//! `SERIN_TEST_SKIP_POSTGRES=1`, in which case it returns `Ok(None)` and the test should return
//! early.
//!
//! ```no_run
//! # async fn t() -> Result<(), serin_store::StoreError> {
//! use serin_store::{Store, testing::TestPostgres};
//! let Some(db) = TestPostgres::create().await? else { return Ok(()) }; // skipped
//! let store = Store::open_postgres(db.url()).await?;
//! // ... test ...
//! store.close().await;
//! db.cleanup().await?;
//! # Ok(()) }
//! ```

use crate::StoreError;

/// Env var with the admin URL of the test database.
pub const DATABASE_URL_ENV: &str = "SERIN_TEST_DATABASE_URL";
/// Env var that, set to `1`/`true`, skips PostgreSQL tests instead of failing them.
pub const SKIP_POSTGRES_ENV: &str = "SERIN_TEST_SKIP_POSTGRES";
/// Used when [`DATABASE_URL_ENV`] is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// True when PostgreSQL tests should be skipped (`SERIN_TEST_SKIP_POSTGRES=1`).
pub fn postgres_skipped() -> bool {
    std::env::var(SKIP_POSTGRES_ENV)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// The admin URL of the test database.
pub fn base_url() -> String {
    std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// A fresh, private PostgreSQL schema for one test.
#[derive(Debug)]
pub struct TestPostgres {
    base_url: String,
    schema: String,
    url: String,
    cleaned: bool,
}

impl TestPostgres {
    /// Creates a fresh schema. `Ok(None)` when PostgreSQL tests are skipped; an error (telling
    /// how to skip) when the database cannot be reached.
    pub async fn create() -> Result<Option<TestPostgres>, StoreError> {
        if postgres_skipped() {
            return Ok(None);
        }
        TestPostgres::create_at(&base_url()).await.map(Some)
    }

    /// A fresh schema in the database at `base_url` (e.g. a private cluster a test runs).
    pub async fn create_at(base_url: &str) -> Result<TestPostgres, StoreError> {
        let base_url = base_url.to_owned();
        let created = crate::scratch::create_schema(&base_url, "serin_t")
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => unreachable_msg(&m),
                other => other,
            })?;
        let (schema, url) = (created.schema, created.url);
        Ok(TestPostgres {
            base_url,
            schema,
            url,
            cleaned: false,
        })
    }

    /// Connection URL confined to this schema; pass it to `Store::open_postgres` or
    /// `serin server --database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema name, `serin_t_<16 hex>`.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops the schema and everything in it. Close stores using it first.
    pub async fn cleanup(mut self) -> Result<(), StoreError> {
        self.cleaned = true;
        drop_schema(&self.base_url, &self.schema).await
    }
}

impl Drop for TestPostgres {
    /// Fallback when `cleanup` was not reached (e.g. the test panicked): drops the schema from
    /// a helper thread with its own runtime, best effort.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (base, schema) = (self.base_url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(drop_schema(&base, &schema)).ok()
        })
        .join();
    }
}

/// `base` with `options=-c search_path=<schema>` appended (URL-encoded).
pub fn with_search_path(base: &str, schema: &str) -> String {
    crate::scratch::with_search_path(base, schema)
}

async fn drop_schema(base_url: &str, schema: &str) -> Result<(), StoreError> {
    crate::scratch::ScratchSchema {
        base_url: base_url.to_owned(),
        schema: schema.to_owned(),
        url: String::new(),
    }
    .drop_schema()
    .await
}

fn unreachable_msg(e: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot reach the test PostgreSQL ({DATABASE_URL_ENV}, default {DEFAULT_DATABASE_URL}): \
         {e}; set {SKIP_POSTGRES_ENV}=1 to skip PostgreSQL tests"
    ))
}
