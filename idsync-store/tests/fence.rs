//! Two workers whose clocks disagree by far more than the lease's TTL share one job in a
//! real SQLite file and a real PostgreSQL: the database's clock judges the lease, so
//! neither steals a live lease, whichever clock runs ahead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use idsync_core::{
    Engine, EntityKind, Hub, Job, ManualClock, MemoryAdapter, Org, RunStatus, Store,
};
use idsync_store::{PgStore, SqliteStore};

const TTL: Duration = Duration::from_secs(30);

/// A clock `hours` away from real time.
fn skewed(hours: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc::now() + chrono::Duration::hours(hours),
    ))
}

/// `behind` runs an hour slow, `ahead` an hour fast: both handles on one database.
async fn skewed_workers(behind: Arc<dyn Store>, ahead: Arc<dyn Store>) {
    // The slow worker takes the lease: on its own clock it would have run out an hour ago.
    let a = behind
        .acquire_lease("job", "A", TTL)
        .await
        .unwrap()
        .expect("A takes the free lease");
    let drift = (a.expires_at - (Utc::now() + chrono::Duration::from_std(TTL).unwrap()))
        .num_seconds()
        .abs();
    assert!(
        drift < 10,
        "expiry {} is not on the database's clock",
        a.expires_at
    );
    assert!(
        ahead
            .acquire_lease("job", "B", TTL)
            .await
            .unwrap()
            .is_none(),
        "the fast worker stole a live lease"
    );
    // A works under its lease through its own handle: the fence holds on the database's clock.
    let source = Arc::new(MemoryAdapter::with_data(
        "hr",
        vec![Org::new("root", None, "Root")],
        Vec::new(),
    ));
    let job = Job::new("job", source, Arc::new(Hub::new(behind.clone()))).with_fence(a.fence());
    let report = Engine::new(behind.clone()).run(&job).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert!(report.lease_lost.is_none());
    assert_eq!(
        Engine::new(ahead.clone())
            .links("job", EntityKind::Org)
            .await
            .unwrap()
            .len(),
        1
    );
    behind.release_lease("job", "A").await.unwrap();

    // The other way round: the fast worker holds it, the slow one cannot take it.
    let b = ahead
        .acquire_lease("job", "B", TTL)
        .await
        .unwrap()
        .expect("B takes the released lease");
    assert_eq!(b.token, a.token + 1);
    assert!(
        behind
            .acquire_lease("job", "A", TTL)
            .await
            .unwrap()
            .is_none(),
        "the slow worker stole a live lease"
    );
    // A short lease runs out on the database's clock, whatever either worker's clock says.
    ahead
        .acquire_lease("job", "B", Duration::from_millis(300))
        .await
        .unwrap()
        .expect("B renews briefly");
    assert!(
        behind
            .acquire_lease("job", "A", TTL)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a2 = behind
        .acquire_lease("job", "A", TTL)
        .await
        .unwrap()
        .expect("A takes the run-out lease");
    assert_eq!(a2.token, b.token + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_leases_follow_the_database_clock() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fence.db");
    let behind = SqliteStore::open(&file)
        .await
        .unwrap()
        .with_clock(skewed(-1));
    let ahead = SqliteStore::open(&file)
        .await
        .unwrap()
        .with_clock(skewed(1));
    skewed_workers(Arc::new(behind), Arc::new(ahead)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_follow_the_database_clock() {
    let url = common::fresh_pg_database("idsync_fence").await;
    let behind = PgStore::connect(&url).await.unwrap().with_clock(skewed(-1));
    let ahead = PgStore::connect(&url).await.unwrap().with_clock(skewed(1));
    skewed_workers(Arc::new(behind), Arc::new(ahead)).await;
}
