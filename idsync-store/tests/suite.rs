//! The store suite against the in-memory store, SQLite (file and memory) and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::sync::Arc;

use idsync_conformance::store::{CASES, run_all};
use idsync_core::{MemoryStore, Op, Org, PageRequest, Store};
use idsync_store::{PgStore, SqliteStore};

#[tokio::test]
async fn memory_store_passes_the_suite() {
    let n =
        run_all(
            |clock| async move { Ok(Arc::new(MemoryStore::with_clock(clock)) as Arc<dyn Store>) },
        )
        .await
        .unwrap();
    assert_eq!(n, CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let n =
        run_all(|clock| {
            let file = path.join(format!("s{:x}.db", rand::random::<u64>()));
            async move {
                Ok(Arc::new(SqliteStore::open(file).await?.with_clock(clock)) as Arc<dyn Store>)
            }
        })
        .await
        .unwrap();
    assert_eq!(n, CASES.len());
}

#[tokio::test]
async fn sqlite_memory_store_passes_the_suite() {
    let n = run_all(|clock| async move {
        Ok(Arc::new(SqliteStore::open_in_memory().await?.with_clock(clock)) as Arc<dyn Store>)
    })
    .await
    .unwrap();
    assert_eq!(n, CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_suite() {
    let n = run_all(|clock| async move {
        let url = common::fresh_pg_database("idsync_suite").await;
        Ok(Arc::new(PgStore::connect(&url).await?.with_clock(clock)) as Arc<dyn Store>)
    })
    .await
    .unwrap();
    assert_eq!(n, CASES.len());
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    {
        let s = SqliteStore::open(&file).await.unwrap();
        s.hub_apply(
            &Op::CreateOrg {
                org: Org::new("d1", None, "研发"),
            },
            None,
        )
        .await
        .unwrap();
        s.close().await;
    }
    // Opening again runs the (already applied) migrations and sees the data.
    let s = idsync_store::open(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let orgs = s.hub_orgs(PageRequest::first()).await.unwrap();
    assert_eq!(orgs.items.len(), 1);
    assert_eq!(orgs.items[0].name, "研发");
    assert_eq!(s.feed(0, 10).await.unwrap().len(), 1);
    let err = s
        .hub_apply(
            &Op::CreateOrg {
                org: Org::new("d1", None, "again"),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), idsync_core::ErrorKind::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_a_new_file_at_once_all_succeed() {
    // Each open has its own connection, as separate processes would: all of them find the
    // schema missing and race to create it.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let opens = futures::future::join_all((0..6).map(|_| SqliteStore::open(&path))).await;
        for o in opens {
            let store = o.unwrap_or_else(|e| panic!("round {round}: {e}"));
            store.hub_orgs(PageRequest::first()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn open_dispatches_on_the_url() {
    let s = idsync_store::open("sqlite::memory:").await.unwrap();
    assert!(format!("{s:?}").contains("SqliteStore"));
    let err = idsync_store::open("postgres://user:hunter2@[bad")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), idsync_core::ErrorKind::ConfigInvalid);
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_debug_and_errors_hide_the_password() {
    let url = common::fresh_pg_database("idsync_dbg").await;
    // The test server trusts loopback, so a made-up password still connects.
    let with_pw = url.replacen("postgres://postgres@", "postgres://postgres:s3cr3t-pw@", 1);
    let s = PgStore::connect(&with_pw).await.unwrap();
    let dbg = format!("{s:?}");
    assert!(
        dbg.contains("127.0.0.1") && !dbg.contains("s3cr3t-pw"),
        "{dbg}"
    );
    // A refused connection names the database, not the password.
    let bad = "postgres://postgres:s3cr3t-pw@127.0.0.1:1/nowhere";
    let err = PgStore::connect(bad).await.unwrap_err();
    assert!(!err.to_string().contains("s3cr3t-pw"), "{err}");
    assert!(
        err.is_temporary(),
        "a refused connection is temporary: {err}"
    );
}

/// Several writers at once on PostgreSQL: every op lands, and the feed has one entry per
/// op with sequence numbers 1..=n (commit order, no gaps, no duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_hub_writes_keep_the_feed_in_order() {
    let url = common::fresh_pg_database("idsync_conc").await;
    let a = Arc::new(PgStore::connect(&url).await.unwrap());
    let b = Arc::new(PgStore::connect(&url).await.unwrap());
    let mut tasks = Vec::new();
    for (w, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .hub_apply(
                        &Op::CreateOrg {
                            org: Org::new(format!("w{w}-{i:03}"), None, "x"),
                        },
                        None,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    // A reader following the feed while it grows never sees a gap.
    let reader = a.clone();
    let follow = tokio::spawn(async move {
        let mut since = 0u64;
        while since < 200 {
            for f in reader.feed(since, 1000).await.unwrap() {
                assert_eq!(f.seq, since + 1, "feed gap or reorder");
                since = f.seq;
            }
        }
    });
    for t in tasks {
        t.await.unwrap();
    }
    follow.await.unwrap();
    let feed = a.feed(0, 1000).await.unwrap();
    assert_eq!(feed.len(), 200);
    assert!(feed.iter().enumerate().all(|(i, f)| f.seq == i as u64 + 1));
    // Two creates of one anchor at once: exactly one wins.
    let op = Op::CreateOrg {
        org: Org::new("same", None, "x"),
    };
    let (r1, r2) = tokio::join!(a.hub_apply(&op, None), b.hub_apply(&op, None));
    assert_eq!(r1.is_ok() as u8 + r2.is_ok() as u8, 1);
}
