//! Graceful shutdown: a run under way gets its grace period, then its lease is taken so the
//! engine stops before its next op; the op in flight finishes at the sink; the lease is
//! free at once; the next run converges without duplicates.

use std::sync::Arc;
use std::time::Duration;

use idsync_conformance::store::GateSink;
use idsync_core::{
    Account, Engine, Job, JobLease, MemoryAdapter, MemoryStore, PageRequest, Sink, Source, Store,
};
use idsync_serve::schedule::{Recurrence, Schedule};
use idsync_serve::server::{ServeJob, ServeOptions, Server};

use super::common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_op_in_flight_finish_and_frees_the_lease() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let people: Vec<Account> = (0..8)
        .map(|i| Account::new(format!("p{i}"), format!("person{i}")))
        .collect();
    let source = Arc::new(MemoryAdapter::with_data("hr", vec![], people));
    let app = Arc::new(MemoryAdapter::new("app"));
    let gate = Arc::new(GateSink::new(app.clone(), 3));
    let sink: Arc<dyn Sink> = gate.clone();
    let job = Job::new("hr-to-app", source.clone(), sink).with_concurrency(1);
    let schedule = Schedule {
        every: Some(Recurrence::every("1h").unwrap()),
        ..Schedule::default()
    };
    let server = Server::new(
        store.clone(),
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            shutdown_grace: Duration::from_millis(300),
            ..ServeOptions::default()
        },
    )
    .job(ServeJob::new(job.clone(), schedule));
    let metrics = server.metrics_handle();
    let mut srv = start(server).await;
    // The first run holds its third op in the sink.
    tokio::time::timeout(Duration::from_secs(20), gate.stalled.notified())
        .await
        .expect("the run reaches its third op");
    srv.stop();
    // Past the grace period the lease is taken away; then the held op goes through.
    tokio::time::sleep(Duration::from_millis(800)).await;
    gate.release.notify_one();
    srv.shutdown().await;
    assert_eq!(gate.calls(), 3, "no op is sent after the lease was taken");
    let sent = app
        .accounts(PageRequest::first())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(sent, 3, "the op in flight finished at the sink");
    assert_eq!(
        metrics.get(
            "idsync_runs_total",
            &[("job", "hr-to-app"), ("outcome", "lease_lost")]
        ),
        1.0
    );
    // The lease is free now (another worker takes it at once).
    let other = store
        .acquire_lease("hr-to-app", "other-worker", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(other.is_some(), "the lease was released");
    store
        .release_lease("hr-to-app", "other-worker")
        .await
        .unwrap();
    // The next run resolves the op whose record the lost lease refused, and converges.
    let lease = JobLease::acquire(&store, "hr-to-app", "next", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let fresh =
        Job::new("hr-to-app", source, app.clone() as Arc<dyn Sink>).with_fence(lease.fence());
    let report = Engine::new(store.clone()).run(&fresh).await.unwrap();
    lease.release().await.unwrap();
    assert_eq!(report.counts.failed, 0, "{report:?}");
    let all = app.accounts(PageRequest::first()).await.unwrap().items;
    assert_eq!(all.len(), 8, "every person once: {all:?}");
}
