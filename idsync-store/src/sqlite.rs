//! [`SqliteStore`]: the store in one SQLite file (the embedded default).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use idsync_core::{Clock, Error, ErrorKind, Result, SystemClock};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};
use tokio::sync::{mpsc, oneshot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Readers a file store keeps open besides its one writer.
const READERS: u32 = 4;

/// Most writes one transaction of the writer takes.
const MAX_GROUP: usize = 512;

/// Called once the transaction a write ran in has ended: with the commit's error, if any.
type Finish = Box<dyn FnOnce(Option<Error>) + Send>;

/// A write, type-erased for the writer task: runs on the writer connection inside the
/// group's transaction and says whether it succeeded.
type WriteJob =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// Where writes go.
#[derive(Clone)]
enum Writer {
    /// The writer task of a file store (group commit).
    Task(mpsc::Sender<WriteJob>),
    /// One pooled connection, one transaction per write (the in-memory store).
    Pool(SqlitePool),
}

/// The writer task: takes every write waiting in the queue (up to [`MAX_GROUP`]), runs them
/// in one `BEGIN IMMEDIATE` transaction, commits once, then answers each. A write that
/// fails is rolled back to its savepoint and does not disturb the others; a failed commit
/// fails them all. Ends when every sender is gone.
/// One control statement on the writer (boxed: keeps the writer future `Send` for
/// `tokio::spawn`).
fn control<'c>(conn: &'c mut SqliteConnection, sql: String) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(err)
    })
}

fn writer_loop(conn: SqliteConnection, rx: mpsc::Receiver<WriteJob>) -> BoxFuture<'static, ()> {
    Box::pin(writer_loop_inner(conn, rx))
}

async fn writer_loop_inner(mut conn: SqliteConnection, mut rx: mpsc::Receiver<WriteJob>) {
    let mut jobs: Vec<WriteJob> = Vec::with_capacity(MAX_GROUP);
    let mut finishers: Vec<Finish> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = control(&mut conn, "BEGIN IMMEDIATE".into()).await {
            // Dropping the jobs answers their callers with "writer failed".
            tracing::warn!(error = %e, "sqlite store: cannot start a write transaction");
            jobs.clear();
            continue;
        }
        for job in jobs.drain(..) {
            let (ok, finish) = job(&mut conn).await;
            if !ok {
                // Undo a batch that failed half-way (no savepoint: nothing was written).
                let undo = format!("ROLLBACK TO {sp}; RELEASE {sp}", sp = crate::sql::SAVEPOINT);
                let _ = control(&mut conn, undo).await;
            }
            finishers.push(finish);
        }
        let failure = match control(&mut conn, "COMMIT".into()).await {
            Ok(()) => None,
            Err(e) => {
                let _ = control(&mut conn, "ROLLBACK".into()).await;
                Some(e)
            }
        };
        for f in finishers.drain(..) {
            f(failure.as_ref().map(Error::clone_lossy));
        }
    }
}

/// The [`Store`](idsync_core::Store) in a SQLite file.
///
/// * WAL journal, `synchronous = NORMAL` (a committed transaction survives a crash of the
///   process; a power loss may lose the last transactions but never corrupts the file),
///   a 10 s busy timeout, an in-memory temp store and a 32 MiB page cache.
/// * One writer connection, owned by a writer task, and a few read-only connections that
///   read a consistent snapshot while the writer works. SQLite has one writer at a time, so
///   the task **group-commits**: every write waiting when a transaction starts (e.g. the
///   journal intents and hub ops of the engine's concurrent applies) shares that
///   transaction and its commit, and each caller is answered only after the commit. Each
///   write is all-or-nothing on its own (a savepoint), so one failing op does not undo the
///   others. Transactions start with `BEGIN IMMEDIATE`, so several processes on the same
///   file wait for each other instead of failing.
/// * The statements of one write go to SQLite as one multi-statement query (one round trip
///   to the connection's thread); statements are prepared once per connection and cached.
/// * [`hub_apply_batch`](idsync_core::Store::hub_apply_batch) runs a whole batch as one
///   write of the group: runs of creates as multi-row `INSERT`s (anonymous `?`
///   parameters, 100 rows a statement), every other op in its own savepoint.
/// * The writer task runs on the Tokio runtime the store was opened in.
/// * The schema is migrated on open (`migrations/sqlite`); a hub made before the index of
///   correlation keys gets its keys then (in pages of 1,000 accounts).
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    pub(crate) clock: Arc<dyn Clock>,
    /// Set on the handles [`Store::fenced`](idsync_core::Store::fenced) returns.
    pub(crate) fence: Option<idsync_core::Fence>,
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

/// One connection to the file, its schema migrated.
async fn connect_and_migrate(opts: &SqliteConnectOptions, path: &Path) -> Result<SqliteConnection> {
    let mut conn = SqliteConnection::connect_with(opts)
        .await
        .map_err(|e| err(e).with_context("path", path.display().to_string()))?;
    MIGRATOR.run(&mut conn).await.map_err(|e| {
        Error::unexpected(format!("sqlite store: migration failed: {e}"))
            .with_source(e)
            .with_context("path", path.display().to_string())
    })?;
    Ok(conn)
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
        // Processes that open a new file at the same time race to set it up: switching it
        // to WAL can fail at once with "database is locked", and all but one find the
        // schema missing and then fail on "table already exists". Trying again finds the
        // file set up by the winner (each migration is one transaction, so a loser leaves
        // nothing behind); a real failure fails every attempt.
        let mut attempt = 0u64;
        let conn = loop {
            match connect_and_migrate(&opts, &path).await {
                Ok(conn) => break conn,
                Err(_) if attempt < 6 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer_loop(conn, rx));
        let writer = Writer::Task(tx);
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await
            .map_err(err)?;
        let store = SqliteStore {
            writer,
            reader,
            clock: Arc::new(SystemClock),
            fence: None,
            path: Some(path),
        };
        store.backfill_keys().await?;
        Ok(store)
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
        MIGRATOR.run(&pool).await.map_err(|e| {
            Error::unexpected(format!("sqlite store: migration failed: {e}")).with_source(e)
        })?;
        let store = SqliteStore {
            writer: Writer::Pool(pool.clone()),
            reader: pool,
            clock: Arc::new(SystemClock),
            fence: None,
            path: None,
        };
        store.backfill_keys().await?;
        Ok(store)
    }

    /// Use another clock (feed, journal and audit times follow it; lease expiry is judged
    /// by the database's own clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteStore {
        self.clock = clock;
        self
    }

    /// The file, if the store has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Close the read connections. The writer connection closes when the last clone of
    /// the store is dropped (after the writes queued before).
    pub async fn close(&self) {
        self.reader.close().await;
        if let Writer::Pool(p) = &self.writer {
            p.close().await;
        }
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Run `f` on the writer connection inside a write transaction; answer after commit.
    async fn exec_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        match &self.writer {
            Writer::Pool(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
                let v = f(&mut tx).await?;
                tx.commit().await.map_err(err)?;
                Ok(v)
            }
            Writer::Task(queue) => {
                let (reply, answer) = oneshot::channel::<Result<T>>();
                let job: WriteJob = Box::new(move |conn: &mut SqliteConnection| {
                    Box::pin(async move {
                        let r = f(conn).await;
                        let ok = r.is_ok();
                        let finish: Finish = Box::new(move |commit_failed: Option<Error>| {
                            let out = match (r, commit_failed) {
                                (Ok(_), Some(e)) => Err(e),
                                (r, _) => r,
                            };
                            let _ = reply.send(out);
                        });
                        (ok, finish)
                    })
                });
                let gone = || {
                    Error::new(
                        ErrorKind::Unavailable,
                        "sqlite store: the writer has stopped",
                    )
                    .temporary()
                    .with_provider("sqlite")
                };
                queue.send(job).await.map_err(|_| gone())?;
                answer.await.map_err(|_| gone())?
            }
        }
    }
}

// The database's clock: SQLite's own `julianday('now')`, in microseconds since the epoch.
crate::sql::sql_store!(
    SqliteStore,
    Sqlite,
    "sqlite",
    "",
    joined,
    true,
    "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    ""
);
