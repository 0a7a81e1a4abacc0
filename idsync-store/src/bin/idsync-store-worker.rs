//! A worker process for the lease test (`tests/workers.rs`): it runs one "job" over and
//! over while it holds the job's lease in a PostgreSQL store, and writes a `start` and an
//! `end` marker around each run into the table `worker_markers` of the same database.
//!
//! ```text
//! idsync-store-worker --url URL --holder NAME [--job JOB] [--ttl-ms 1500] [--work-ms 200]
//!                     [--poll-ms 100] [--jobs N]
//! ```
//!
//! Before each run the worker takes or renews the lease (`acquire_lease`); without it, it
//! waits `poll-ms` and tries again. It never releases the lease between runs, so another
//! worker gets it only when this one releases it at exit (after `--jobs` runs) or dies and
//! the lease expires. Prints `start N` / `end N` lines as it goes.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use idsync_core::{Error, Result, Store};
use idsync_store::PgStore;

struct Args {
    url: String,
    holder: String,
    job: String,
    ttl: Duration,
    work: Duration,
    poll: Duration,
    jobs: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        url: std::env::var("DATABASE_URL").unwrap_or_default(),
        holder: String::new(),
        job: "lease-test".into(),
        ttl: Duration::from_millis(1500),
        work: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        jobs: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| Error::config(format!("{flag} needs a value")))?;
        let ms = || {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| Error::config(format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--url" => a.url = v.clone(),
            "--holder" => a.holder = v.clone(),
            "--job" => a.job = v.clone(),
            "--ttl-ms" => a.ttl = ms()?,
            "--work-ms" => a.work = ms()?,
            "--poll-ms" => a.poll = ms()?,
            "--jobs" => {
                a.jobs = v
                    .parse()
                    .map_err(|_| Error::config("--jobs: not a number"))?
            }
            _ => return Err(Error::config(format!("unknown flag {flag}"))),
        }
    }
    if a.url.is_empty() || a.holder.is_empty() {
        return Err(Error::config("--url and --holder are required"));
    }
    Ok(a)
}

async fn marker(store: &PgStore, holder: &str, kind: &str, n: usize) -> Result<()> {
    sqlx::query("INSERT INTO worker_markers (holder, kind, n) VALUES ($1, $2, $3)")
        .bind(holder)
        .bind(kind)
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .execute(store.pool())
        .await
        .map_err(|e| Error::unexpected(format!("marker: {e}")))?;
    Ok(())
}

async fn work(a: &Args) -> Result<()> {
    let store = PgStore::connect_with_size(&a.url, 2).await?;
    let mut done = 0;
    let mut out = std::io::stdout();
    while done < a.jobs {
        if store
            .acquire_lease(&a.job, &a.holder, a.ttl)
            .await?
            .is_none()
        {
            tokio::time::sleep(a.poll).await;
            continue;
        }
        marker(&store, &a.holder, "start", done).await?;
        let _ = writeln!(out, "start {done}");
        let _ = out.flush();
        tokio::time::sleep(a.work).await;
        marker(&store, &a.holder, "end", done).await?;
        let _ = writeln!(out, "end {done}");
        let _ = out.flush();
        done += 1;
    }
    store.release_lease(&a.job, &a.holder).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let code = match parse_args() {
        Ok(a) => match work(&a).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("worker {}: {e}", a.holder);
                1
            }
        },
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    std::process::exit(code);
}
