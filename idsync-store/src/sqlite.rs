//! [`SqliteStore`]: the store in one SQLite file (the embedded default).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use idsync_core::{Clock, Error, Result, SystemClock};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Readers a file store keeps open besides its one writer.
const READERS: u32 = 4;

/// The [`Store`](idsync_core::Store) in a SQLite file.
///
/// * WAL journal, `synchronous = NORMAL` (a committed transaction survives a crash of the
///   process; a power loss may lose the last transactions but never corrupts the file),
///   a 10 s busy timeout, an in-memory temp store and a 32 MiB page cache.
/// * One writer connection (SQLite has one writer at a time; queuing in the pool is cheaper
///   than `SQLITE_BUSY` retries) and a few read-only connections that read a consistent
///   snapshot while the writer works. Write transactions start with `BEGIN IMMEDIATE`, so
///   several processes on the same file wait for each other instead of failing.
/// * Statements are prepared once per connection and cached.
/// * The schema is migrated on open (`migrations/sqlite`).
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    pub(crate) clock: Arc<dyn Clock>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn err(e: sqlx::Error) -> Error {
    crate::util::db_err("sqlite", e)
}

impl SqliteStore {
    /// Open (or create) the store in the file at `path`, migrating its schema.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32768")
            .statement_cache_capacity(256);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await
            .map_err(|e| {
                err(e).with_context("path", path.display().to_string())
            })?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| Error::unexpected(format!("sqlite store: migration failed: {e}")).with_source(e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await
            .map_err(err)?;
        Ok(SqliteStore {
            writer,
            reader,
            clock: Arc::new(SystemClock),
            path: Some(path),
        })
    }

    /// A store in memory (one connection; gone when the store is dropped). For tests and
    /// one-shot runs that want SQL semantics without a file.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(err)?
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts)
            .await
            .map_err(err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::unexpected(format!("sqlite store: migration failed: {e}")).with_source(e))?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
            clock: Arc::new(SystemClock),
            path: None,
        })
    }

    /// Use another clock (lease expiry and feed times follow it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteStore {
        self.clock = clock;
        self
    }

    /// The file, if the store has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Close every connection (waits for running statements).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(err)
    }
}

crate::sql::sql_store!(SqliteStore, Sqlite, "sqlite");
