//! Schedules: a job on `every` runs repeatedly; a guard stop pauses it (once, not in a
//! loop), shows in /readyz, /api/v1/jobs and metrics; approving the stopped run resumes it.

use std::sync::Arc;
use std::time::Duration;

use idsync_core::{
    Account, Anchor, Engine, Hub, Job, JobLease, MemoryAdapter, MemoryStore, Op, RunStatus, Store,
};
use idsync_serve::auth::{Scope, TokenEntry, Tokens, hash_token};
use idsync_serve::schedule::{Recurrence, Schedule};
use idsync_serve::server::{ServeJob, ServeOptions, Server};

use super::common::{metric, start, wait_until};

fn people(n: usize) -> Vec<Account> {
    (0..n)
        .map(|i| Account::new(format!("u{i:02}"), format!("user{i:02}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_stop_pauses_the_job_until_approved() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let source = Arc::new(MemoryAdapter::with_data("hr", vec![], people(10)));
    let job = Job::new(
        "hr-to-hub",
        source.clone(),
        Arc::new(Hub::new(store.clone())),
    );
    let schedule = Schedule {
        every: Some(Recurrence::every("100ms").unwrap()),
        ..Schedule::default()
    };
    let tokens = Tokens::new(vec![TokenEntry::new(
        "admin",
        hash_token("t0ken"),
        vec![Scope::Admin],
    )]);
    let server = Server::new(
        store.clone(),
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeOptions::default()
        },
    )
    .tokens(tokens)
    .job(ServeJob::new(job.clone(), schedule));
    let metrics = server.metrics_handle();
    let srv = start(server).await;
    let http = reqwest::Client::new();
    let m = metrics.clone();
    wait_until(10, "two successful runs", move || {
        let m = m.clone();
        async move {
            m.get(
                "idsync_runs_total",
                &[("job", "hr-to-hub"), ("outcome", "succeeded")],
            ) >= 2.0
        }
    })
    .await;
    assert_eq!(
        store
            .hub_accounts(Default::default())
            .await
            .unwrap()
            .items
            .len(),
        10
    );
    assert_eq!(
        metrics.get(
            "idsync_ops_total",
            &[
                ("job", "hr-to-hub"),
                ("kind", "create_account"),
                ("outcome", "applied")
            ]
        ),
        10.0
    );

    // 5 of 10 people leave: disabling half of what the job links crosses the guard.
    source
        .edit(|d| {
            for i in 0..5 {
                d.apply(
                    &Op::DeleteAccount {
                        anchor: Anchor::new(format!("u{i:02}")),
                    },
                    None,
                )
                .unwrap();
            }
        })
        .unwrap();
    let m = metrics.clone();
    wait_until(10, "a guard stop", move || {
        let m = m.clone();
        async move { m.get("idsync_guard_stops_total", &[("job", "hr-to-hub")]) >= 1.0 }
    })
    .await;
    // Ten more turns of the schedule: none runs into the guard again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let runs = store.runs(Some("hr-to-hub"), 100).await.unwrap();
    let stopped: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::NeedsApproval)
        .collect();
    assert_eq!(
        stopped.len(),
        1,
        "paused, not re-run into the guard: {runs:?}"
    );
    assert_eq!(runs[0].status, RunStatus::NeedsApproval, "the newest run");
    let run_id = stopped[0].id.clone();
    assert_eq!(
        metrics.get("idsync_guard_stops_total", &[("job", "hr-to-hub")]),
        1.0
    );
    let text = http
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "idsync_job_paused{job=\"hr-to-hub\"}"),
        1.0,
        "{text}"
    );
    let ready = http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains(&run_id));
    let jobs: serde_json::Value = http
        .get(srv.url("/api/v1/jobs"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["hr-to-hub"]["paused"], serde_json::json!(run_id));
    // An operator acknowledges the pause: ready again, still paused.
    let ack = http
        .post(srv.url("/api/v1/jobs/hr-to-hub/acknowledge"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let ready = http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        store
            .hub_accounts(Default::default())
            .await
            .unwrap()
            .items
            .len(),
        10
    );

    // `idsync approve RUN` (another process): under the lease, the stored plan applied.
    let lease = JobLease::acquire_waiting(
        &store,
        "hr-to-hub",
        "approver",
        Duration::from_secs(30),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    let report = Engine::new(store.clone())
        .approve(&job.clone().with_fence(lease.fence()), &run_id)
        .await
        .unwrap();
    lease.release().await.unwrap();
    assert_eq!(report.counts.applied, 5, "{report:?}");
    let m = metrics.clone();
    wait_until(10, "the job resumes", move || {
        let m = m.clone();
        async move { m.get("idsync_job_paused", &[("job", "hr-to-hub")]) == 0.0 }
    })
    .await;
    let before = metrics.get(
        "idsync_runs_total",
        &[("job", "hr-to-hub"), ("outcome", "succeeded")],
    );
    let m = metrics.clone();
    wait_until(10, "runs again after approval", move || {
        let m = m.clone();
        async move {
            m.get(
                "idsync_runs_total",
                &[("job", "hr-to-hub"), ("outcome", "succeeded")],
            ) > before
        }
    })
    .await;
    srv.shutdown().await;
}
