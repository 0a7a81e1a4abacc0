//! [`PgStore`]: the store in PostgreSQL (several workers share it).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use idsync_core::{Clock, Error, ErrorKind, Result, SystemClock};
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The [`Store`](idsync_core::Store) in a PostgreSQL database.
///
/// * A pool of connections (8 by default); every hub write takes the next feed sequence
///   number first (a row lock on `feed_head` held to commit), so hub writes of all workers
///   are serialized and feed sequence numbers become visible in order.
/// * Leases, cursors and journal writes are single statements (atomic check-and-set).
/// * The schema is migrated on connect (`migrations/postgres`; sqlx takes an advisory lock,
///   so workers starting together migrate once); a hub made before the index of
///   correlation keys gets its keys then (in pages of 1,000 accounts, under the hub write
///   lock, so workers starting together share the work).
/// * `Debug` shows host, port, database and user, never the password.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    pub(crate) clock: Arc<dyn Clock>,
    /// Set on the handles [`Store::fenced`](idsync_core::Store::fenced) returns.
    pub(crate) fence: Option<idsync_core::Fence>,
    display: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.display)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn err(e: sqlx::Error) -> Error {
    crate::util::db_err("postgres", e)
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db`), migrating the schema.
    /// Errors never repeat the URL (it may hold a password).
    pub async fn connect(url: &str) -> Result<PgStore> {
        PgStore::connect_with_size(url, 8).await
    }

    /// Connect with a pool of at most `max_connections`.
    pub async fn connect_with_size(url: &str, max_connections: u32) -> Result<PgStore> {
        let opts = PgConnectOptions::from_str(url).map_err(|_| {
            Error::new(
                ErrorKind::ConfigInvalid,
                "postgres store: the database URL is malformed",
            )
        })?;
        let display = format!(
            "{}@{}:{}/{}",
            opts.get_username(),
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|e| err(e).with_context("database", display.clone()))?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            Error::unexpected(format!("postgres store: migration failed: {e}")).with_source(e)
        })?;
        let store = PgStore {
            pool,
            clock: Arc::new(SystemClock),
            fence: None,
            display,
        };
        store.backfill_keys().await?;
        Ok(store)
    }

    /// Use another clock (feed, journal and audit times follow it; lease expiry is judged
    /// by the database's own clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PgStore {
        self.clock = clock;
        self
    }

    /// The connection pool (for diagnostics and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Close every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Run `f` in a transaction of its own.
    async fn exec_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let v = f(&mut tx).await?;
        tx.commit().await.map_err(err)?;
        Ok(v)
    }
}

// Hub writes lock feed_head first: all hub writes of all workers are serialized, so the
// checks made on the rows read see every earlier write, and feed numbers commit in order.
crate::sql::sql_store!(
    PgStore,
    Postgres,
    "postgres",
    "SELECT seq FROM feed_head WHERE id = 1 FOR UPDATE",
    one_by_one,
    false,
    "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    " FOR SHARE"
);
