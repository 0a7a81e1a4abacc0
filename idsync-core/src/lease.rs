//! [`JobLease`]: hold a job's lease while a run goes — take it, renew it in the background,
//! give it up — and hand the run its [`Fence`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idsync_core::{Engine, Hub, Job, JobLease, MemoryAdapter, MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let source = Arc::new(MemoryAdapter::new("hr"));
//! let hub = Arc::new(Hub::new(store.clone()));
//! let holder = JobLease::unique_holder();
//! let ttl = Duration::from_secs(30);
//! // `None` means another worker runs the job (the CLI exits with its "busy" code).
//! let lease = JobLease::acquire(&store, "hr-to-hub", &holder, ttl).await?.expect("free");
//! // Every write of the run is fenced: it fails once another worker took the lease over.
//! let job = Job::new("hr-to-hub", source, hub).with_fence(lease.fence());
//! let report = Engine::new(store.clone()).run(&job).await?;
//! assert!(report.lease_lost.is_none());
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{Fence, Lease, Store};

/// A job's lease held by this worker, renewed every third of its TTL by a background task
/// until [`release`](Self::release)d or dropped (dropping stops the renewal without
/// releasing: the lease then runs out after its TTL).
///
/// If a renewal finds the lease taken over (or granted again under a new token, which
/// means another worker held it in between), the lease counts as lost: [`lost`](Self::lost)
/// says so, renewal stops, and the engine's fenced writes fail with
/// [`lease_lost`](crate::store::lease_lost) on their own.
#[derive(Debug)]
pub struct JobLease {
    store: Arc<dyn Store>,
    state: Arc<Mutex<LeaseState>>,
    renew: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct LeaseState {
    lease: Lease,
    lost: Option<String>,
}

impl JobLease {
    /// A holder name unique to this process and call: host, process id, a random number.
    pub fn unique_holder() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// Take the lease of `job` for `holder` and start renewing it; `None` while another
    /// holder has it. Must be called inside a Tokio runtime (the renewal is a task).
    pub async fn acquire(
        store: &Arc<dyn Store>,
        job: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<JobLease>> {
        if ttl.is_zero() {
            return Err(Error::config(format!(
                "job {job}: a lease needs a TTL above zero"
            )));
        }
        let Some(lease) = store.acquire_lease(job, holder, ttl).await? else {
            return Ok(None);
        };
        let state = Arc::new(Mutex::new(LeaseState { lease, lost: None }));
        let renew = tokio::spawn(renew_loop(store.clone(), state.clone(), ttl));
        Ok(Some(JobLease {
            store: store.clone(),
            state,
            renew,
        }))
    }

    /// [`acquire`](Self::acquire), trying again every `poll` until the lease is free.
    pub async fn acquire_waiting(
        store: &Arc<dyn Store>,
        job: &str,
        holder: &str,
        ttl: Duration,
        poll: Duration,
    ) -> Result<JobLease> {
        loop {
            if let Some(l) = JobLease::acquire(store, job, holder, ttl).await? {
                return Ok(l);
            }
            tokio::time::sleep(poll.max(Duration::from_millis(10))).await;
        }
    }

    /// The lease as last granted or renewed.
    pub fn lease(&self) -> Lease {
        self.with_state(|s| s.lease.clone())
    }

    /// The fence for the job's run ([`Job::with_fence`](crate::Job::with_fence)).
    pub fn fence(&self) -> Fence {
        self.with_state(|s| s.lease.fence())
    }

    /// Why the lease counts as lost, once a renewal found it taken over.
    pub fn lost(&self) -> Option<Error> {
        self.with_state(|s| s.lost.clone())
            .map(|m| Error::new(ErrorKind::Conflict, m))
    }

    /// Stop renewing and give the lease up.
    pub async fn release(self) -> Result<()> {
        self.renew.abort();
        let lease = self.lease();
        self.store.release_lease(&lease.job, &lease.holder).await
    }

    fn with_state<T>(&self, f: impl FnOnce(&LeaseState) -> T) -> T {
        match self.state.lock() {
            Ok(s) => f(&s),
            Err(e) => f(&e.into_inner()),
        }
    }
}

impl Drop for JobLease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

async fn renew_loop(store: Arc<dyn Store>, state: Arc<Mutex<LeaseState>>, ttl: Duration) {
    let (job, holder, token) = match state.lock() {
        Ok(s) => (s.lease.job.clone(), s.lease.holder.clone(), s.lease.token),
        Err(_) => return,
    };
    let set_lost = |msg: String| {
        tracing::warn!(job = %job, "{msg}");
        if let Ok(mut s) = state.lock() {
            s.lost = Some(msg);
        }
    };
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.acquire_lease(&job, &holder, ttl).await {
            Ok(Some(l)) if l.token == token => {
                if let Ok(mut s) = state.lock() {
                    s.lease = l;
                }
            }
            Ok(Some(l)) => {
                // Granted again under a new token: someone else held it in between, and
                // the run's fence is stale. Give the new grant back.
                set_lost(format!(
                    "lease lost: job {job} changed hands (generation {token} → {})",
                    l.token
                ));
                if let Err(e) = store.release_lease(&job, &holder).await {
                    tracing::warn!(job = %job, error = %e, "could not give back the job lease");
                }
                return;
            }
            Ok(None) => {
                set_lost(format!(
                    "lease lost: job {job} is held by another worker (this worker held generation {token})"
                ));
                return;
            }
            Err(e) => tracing::warn!(job = %job, error = %e, "could not renew the job lease"),
        }
    }
}
