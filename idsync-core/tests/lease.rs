//! [`JobLease`]: renewed in the background past its TTL, lost when another worker takes the
//! lease over, released for the next holder (memory store on a manual clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use idsync_core::{JobLease, ManualClock, MemoryStore, Store};

fn store_on(clock: &Arc<ManualClock>) -> Arc<dyn Store> {
    Arc::new(MemoryStore::with_clock(clock.clone()))
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_held_and_free_after_release() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = store_on(&clock);
    let ttl = Duration::from_secs(3);
    let a = JobLease::acquire(&store, "job", "A", ttl)
        .await
        .unwrap()
        .expect("a free lease");
    let first = a.lease();
    assert_eq!(first.token, 1);
    // Ten TTLs go by on both clocks, a second at a time; the renewal keeps the lease.
    for _ in 0..30 {
        clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            store
                .acquire_lease("job", "B", ttl)
                .await
                .unwrap()
                .is_none(),
            "B took a lease that A renews"
        );
    }
    assert!(a.lost().is_none());
    assert_eq!(a.lease().token, first.token, "renewals keep the token");
    assert!(
        a.lease().expires_at > first.expires_at,
        "renewals move the expiry"
    );
    assert_eq!(a.fence(), first.fence());
    a.release().await.unwrap();
    let b = store
        .acquire_lease("job", "B", ttl)
        .await
        .unwrap()
        .expect("free after release");
    assert_eq!(b.token, 2, "the next holder gets the next generation");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_finds_the_lease_taken_over_marks_it_lost() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = store_on(&clock);
    let ttl = Duration::from_secs(3);
    let a = JobLease::acquire(&store, "job", "A", ttl)
        .await
        .unwrap()
        .expect("a free lease");
    // A's worker stalls: the store's clock passes the TTL before A's next renewal.
    clock.advance(chrono::Duration::seconds(4));
    let b = store
        .acquire_lease("job", "B", ttl)
        .await
        .unwrap()
        .expect("run out");
    assert_eq!(b.token, 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lost = a.lost().expect("A's renewal noticed the takeover");
    assert_eq!(lost.kind(), idsync_core::ErrorKind::Conflict);
    assert!(lost.to_string().contains("lease lost"), "{lost}");
    // A's renewal stopped: B keeps the lease.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b2 = store
        .acquire_lease("job", "B", ttl)
        .await
        .unwrap()
        .expect("B renews");
    assert_eq!(b2.token, 2);
    // Releasing A's lost lease does not free B's.
    a.release().await.unwrap();
    assert!(
        store
            .acquire_lease("job", "C", ttl)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_zero_ttl_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = JobLease::acquire(&store, "job", "A", Duration::ZERO)
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), idsync_core::ErrorKind::ConfigInvalid);
}

#[tokio::test]
async fn a_fence_of_another_job_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let other = store
        .acquire_lease("other", "A", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free");
    let source = Arc::new(idsync_core::MemoryAdapter::with_data(
        "hr",
        vec![idsync_core::Org::new("root", None, "Root")],
        Vec::new(),
    ));
    let job = idsync_core::Job::new(
        "mine",
        source,
        Arc::new(idsync_core::Hub::new(store.clone())),
    )
    .with_fence(other.fence());
    let e = idsync_core::Engine::new(store.clone())
        .run(&job)
        .await
        .expect_err("a fence of job other cannot fence job mine");
    assert_eq!(e.kind(), idsync_core::ErrorKind::ConfigInvalid);
    assert!(store.hub_org(&"root".into()).await.unwrap().is_none());
}
