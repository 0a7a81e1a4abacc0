//! The service: the HTTP listener (plain or TLS) with every router mounted, and the
//! scheduler that runs the jobs, both stopped gracefully.
//!
//! * **Routes.** Provider callbacks (`callback`) are mounted without tokens (their own
//!   signatures authenticate them); API routers (`api`) behind
//!   [`auth::require`] with their scope; browser-facing routers such
//!   as the OIDC login (`public`) as they are; `/healthz`, `/readyz`, `/metrics` (see
//!   [`ops`]) without tokens (serve them on an internal network, or put a
//!   proxy rule in front); `GET /api/v1/jobs` (read) and
//!   `POST /api/v1/jobs/{job}/acknowledge` (admin: a paused job stops failing `/readyz`).
//!   Every request body is capped (`body_limit`, 1 MiB by default: 413 above it).
//! * **Jobs** run under the store's fenced leases ([`JobLease`], [`Job::with_fence`]), one
//!   run at a time per job across every process sharing the store: a process that finds
//!   the lease held skips that turn, and takes the job over once the holder's lease runs
//!   out (a killed worker's after its TTL).
//! * **Triggers**: a job's [`Schedule`]; `on_events` wakes a job whose inbox received
//!   events, and a job that reads the hub (an outbound job of a two-way distribution) when
//!   the hub's change feed moved past its cursor — woken by a run of this process that
//!   changed the hub, and seen by a poll every `poll` otherwise (imports, SCIM writes,
//!   other processes).
//! * **Shutdown** (the future given to [`Bound::serve`] resolves): the listener stops
//!   taking connections and finishes the requests under way; a job run under way gets
//!   `shutdown_grace` to end on its own, then its lease is taken from it, so the engine
//!   stops before its next op (the op in flight finishes: fenced writes check the lease in
//!   the transaction of every op); leases are released.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use idsync_core::{Engine, Error, ErrorKind, Job, JobLease, Report, Result, RunStatus, Store};
use tokio::sync::{Notify, watch};

use crate::auth::{self, Scope, Tokens};
use crate::inbox::Inbox;
use crate::ops::{self, Jobs, Metrics, OpsState};
use crate::schedule::{RunKind, Schedule};

/// TLS for the listener: a PEM certificate chain and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Listener and lifecycle settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS, or plain HTTP (then deploy behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// The largest request body accepted (bytes).
    pub body_limit: usize,
    /// How long a run under way may go on after shutdown began before its lease is taken.
    pub shutdown_grace: Duration,
    /// A run longer than this makes `/readyz` report the job stuck.
    pub stuck_after: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            body_limit: 1 << 20,
            shutdown_grace: Duration::from_secs(10),
            stuck_after: Duration::from_secs(3600),
        }
    }
}

/// A job the service runs: the job (without a fence: each run gets its lease's), when it
/// runs, and the inbox its source reads (for `on_events`, the lag and trimming).
#[derive(Debug, Clone)]
pub struct ServeJob {
    /// The job.
    pub job: Job,
    /// When it runs.
    pub schedule: Schedule,
    /// The lease's time to live (renewed every third of it while a run goes on).
    pub lease_ttl: Duration,
    /// The inbox the job's source reads, if any.
    pub inbox: Option<Inbox>,
}

impl ServeJob {
    /// A job on a schedule, with a 60 s lease.
    pub fn new(job: Job, schedule: Schedule) -> Self {
        ServeJob {
            job,
            schedule,
            lease_ttl: Duration::from_secs(60),
            inbox: None,
        }
    }

    /// The inbox its source reads.
    pub fn with_inbox(mut self, inbox: Inbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Another lease TTL.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
}

/// The service, assembled: see the [module docs](self).
#[derive(Debug)]
pub struct Server {
    store: Arc<dyn Store>,
    options: ServeOptions,
    tokens: Tokens,
    metrics: Metrics,
    jobs: Vec<ServeJob>,
    callbacks: Vec<(String, Router)>,
    public: Vec<(String, Router)>,
    api: Vec<(String, Router, Scope)>,
    holder: String,
    hub_moved: Arc<Notify>,
}

impl Server {
    /// A service over `store`, with no token (every API request is refused until
    /// [`tokens`](Self::tokens) are given), no job and no router yet.
    pub fn new(store: Arc<dyn Store>, options: ServeOptions) -> Self {
        Server {
            store,
            options,
            tokens: Tokens::default(),
            metrics: Metrics::new(),
            jobs: Vec::new(),
            callbacks: Vec::new(),
            public: Vec::new(),
            api: Vec::new(),
            holder: JobLease::unique_holder(),
            hub_moved: Arc::new(Notify::new()),
        }
    }

    /// The accepted API tokens.
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Use this metrics registry (share it with inboxes and other parts).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry the service counts into.
    pub fn metrics_handle(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Run a job.
    pub fn job(mut self, job: ServeJob) -> Self {
        self.jobs.push(job);
        self
    }

    /// Mount a provider callback router at `path` (no token: its signatures authenticate).
    pub fn callback(mut self, path: impl Into<String>, router: Router) -> Self {
        self.callbacks.push((path.into(), router));
        self
    }

    /// Mount a browser-facing router at `path` as it is (e.g. the OIDC login routes).
    pub fn public(mut self, path: impl Into<String>, router: Router) -> Self {
        self.public.push((path.into(), router));
        self
    }

    /// Mount an API router at `path`, behind a token with `scope`.
    pub fn api(mut self, path: impl Into<String>, router: Router, scope: Scope) -> Self {
        self.api.push((path.into(), router, scope));
        self
    }

    /// This process's lease holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn ops_state(&self, jobs: &Jobs) -> OpsState {
        OpsState {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            jobs: jobs.clone(),
            stuck_after: chrono::Duration::from_std(self.options.stuck_after)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Everything mounted in one router (what the listener serves).
    pub fn router(&self, jobs: &Jobs) -> Router {
        let mut app = Router::new().merge(ops::router(self.ops_state(jobs)));
        let jobs_api = Router::new()
            .route("/api/v1/jobs", get(list_jobs))
            .layer(auth::require(Scope::Read))
            .merge(
                Router::new()
                    .route("/api/v1/jobs/{job}/acknowledge", post(acknowledge))
                    .layer(auth::require(Scope::Admin)),
            )
            .with_state(jobs.clone());
        app = app.merge(jobs_api);
        for (path, r, scope) in &self.api {
            app = mount(app, path, r.clone().layer(auth::require(*scope)));
        }
        for (path, r) in self.callbacks.iter().chain(&self.public) {
            app = mount(app, path, r.clone());
        }
        app.layer(self.tokens.layer())
            .layer(DefaultBodyLimit::max(self.options.body_limit))
    }

    /// Bind the listener (port 0 picks a free one; see [`Bound::local_addr`]).
    pub async fn bind(self) -> Result<Bound> {
        let listener = tokio::net::TcpListener::bind(self.options.listen)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("serve: cannot listen on {}", self.options.listen),
                )
                .with_source(e)
            })?;
        let tls = match &self.options.tls {
            Some(files) => Some(crate::tls::acceptor(files)?),
            None => None,
        };
        Ok(Bound {
            server: self,
            listener,
            tls,
        })
    }
}

fn mount(app: Router, path: &str, r: Router) -> Router {
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        app.merge(r)
    } else {
        app.nest(p, r)
    }
}

async fn list_jobs(State(jobs): State<Jobs>) -> Response {
    axum::Json(jobs.snapshot()).into_response()
}

async fn acknowledge(State(jobs): State<Jobs>, Path(job): Path<String>) -> Response {
    let found = jobs.snapshot().contains_key(&job);
    if !found {
        return (StatusCode::NOT_FOUND, "no such job\n").into_response();
    }
    let paused = jobs.update(&job, |s| {
        s.acknowledged = s.paused.is_some();
        s.paused.clone()
    });
    axum::Json(serde_json::json!({"job": job, "paused": paused, "acknowledged": paused.is_some()}))
        .into_response()
}

/// A service whose listener is bound: [`serve`](Self::serve) it.
pub struct Bound {
    server: Server,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("server", &self.server)
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Bound {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::unexpected("serve: no local address").with_source(e))
    }

    /// Serve until `shutdown` resolves, then stop gracefully (see the
    /// [module docs](self)).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Bound {
            server,
            listener,
            tls,
        } = self;
        let jobs = Jobs::new();
        for j in &server.jobs {
            jobs.update(&j.job.name, |_| ());
        }
        let app = server.router(&jobs);
        let (stop_tx, stop_rx) = watch::channel(false);
        let engine = Engine::new(server.store.clone());
        let mut runners = Vec::new();
        for j in server.jobs.iter().cloned() {
            let r = Runner {
                store: server.store.clone(),
                engine: engine.clone(),
                job: j,
                holder: server.holder.clone(),
                metrics: server.metrics.clone(),
                jobs: jobs.clone(),
                grace: server.options.shutdown_grace,
                hub_moved: server.hub_moved.clone(),
            };
            runners.push(tokio::spawn(r.run(stop_rx.clone())));
        }
        let mut http_stop = stop_rx.clone();
        let http_shutdown = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        let http = match tls {
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(http_shutdown)
                    .await
                    .map_err(|e| Error::unexpected("serve: the listener failed").with_source(e))
            }),
            Some(acceptor) => {
                tokio::spawn(crate::tls::serve(listener, acceptor, app, http_shutdown))
            }
        };
        tracing::info!(holder = %server.holder, jobs = server.jobs.len(), "idsync serve: started");
        shutdown.await;
        tracing::info!("idsync serve: shutting down");
        let _ = stop_tx.send(true);
        for r in runners {
            if let Err(e) = r.await {
                tracing::warn!(error = %e, "a job runner ended abnormally");
            }
        }
        match http.await {
            Ok(r) => r,
            Err(e) => Err(Error::unexpected("serve: the listener task failed").with_source(e)),
        }
    }
}

/// One job's loop: wait for a trigger, run under the lease, count.
struct Runner {
    store: Arc<dyn Store>,
    engine: Engine,
    job: ServeJob,
    holder: String,
    metrics: Metrics,
    jobs: Jobs,
    grace: Duration,
    /// Woken when a run of this process applied ops into the hub: the hub-reading jobs
    /// with `on_events` look whether the feed moved past them.
    hub_moved: Arc<Notify>,
}

fn sleep_until(t: Option<chrono::DateTime<Utc>>) -> tokio::time::Sleep {
    let wait = t
        .and_then(|t| (t - Utc::now()).to_std().ok())
        .unwrap_or(Duration::ZERO);
    match t {
        Some(_) => tokio::time::sleep(wait),
        // never: a day, re-armed by the loop
        None => tokio::time::sleep(Duration::from_secs(86_400)),
    }
}

impl Runner {
    fn name(&self) -> &str {
        &self.job.job.name
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let sched = self.job.schedule.clone();
        let start = Utc::now();
        // A first incremental run at start (catches up with the inbox, or does the first
        // full run), then the schedule.
        let mut next_inc = if sched.every.is_some() || sched.on_events {
            Some(start)
        } else {
            None
        };
        let mut next_full = sched.full_every.as_ref().and_then(|r| r.next_after(start));
        let mut pending_events = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let kind = tokio::select! {
                _ = stop.changed() => break,
                _ = sleep_until(next_inc), if next_inc.is_some() => RunKind::Incremental,
                _ = sleep_until(next_full), if next_full.is_some() => RunKind::Full,
                _ = self.event_arrived(&mut pending_events), if sched.on_events => {
                    // debounce: let a burst settle into one run
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(sched.debounce) => {}
                    }
                    RunKind::Incremental
                }
            };
            pending_events = false;
            self.run_once(kind, &stop).await;
            let now = Utc::now();
            match kind {
                RunKind::Full => {
                    next_full = sched.full_every.as_ref().and_then(|r| r.next_after(now));
                    // a full run covers the incremental schedule's turn too
                    next_inc = sched.every.as_ref().and_then(|r| r.next_after(now));
                }
                RunKind::Incremental => {
                    next_inc = sched.every.as_ref().and_then(|r| r.next_after(now));
                }
            }
        }
        tracing::debug!(job = %self.name(), "job runner stopped");
    }

    /// Resolves when events wait in the inbox: a local wake-up, or (every `poll`) a head
    /// beyond the job's committed position (events recorded by another process). For a
    /// job that reads the hub (an outbound job of a two-way distribution), the hub's change
    /// feed is its inbox: it resolves when the feed's head moved past the job's cursor
    /// (woken by a run of this process that changed the hub, or seen by the poll).
    async fn event_arrived(&self, pending: &mut bool) {
        if *pending {
            return;
        }
        let Some(inbox) = &self.job.inbox else {
            if self.reads_hub() {
                return self.hub_moved_past().await;
            }
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = inbox.notified() => return,
                _ = tokio::time::sleep(self.job.schedule.poll) => {
                    let cursor = self.store.cursor(self.name()).await.ok().flatten();
                    if inbox.lag(cursor.as_ref()).await.is_ok_and(|l| l > 0) {
                        *pending = true;
                        return;
                    }
                }
            }
        }
    }

    fn reads_hub(&self) -> bool {
        self.job.job.source.describe().provider == idsync_core::hub::PROVIDER
    }

    fn writes_hub(&self) -> bool {
        self.job.job.target.hub().is_some()
    }

    /// Resolves once the hub's feed head differs from the job's stored cursor.
    async fn hub_moved_past(&self) {
        loop {
            tokio::select! {
                _ = self.hub_moved.notified() => {}
                _ = tokio::time::sleep(self.job.schedule.poll) => {}
            }
            let stored = self.store.cursor(self.name()).await.ok().flatten();
            if let Ok(head) = self.job.job.source.current_cursor().await
                && stored.as_ref() != Some(&head)
            {
                return;
            }
        }
    }

    /// The paused run, if the job's newest run waits for approval.
    async fn paused(&self) -> Result<Option<String>> {
        let newest = self.store.runs(Some(self.name()), 1).await?;
        Ok(newest
            .into_iter()
            .next()
            .filter(|r| r.status == RunStatus::NeedsApproval)
            .map(|r| r.id))
    }

    async fn run_once(&self, kind: RunKind, stop: &watch::Receiver<bool>) {
        let name = self.name().to_owned();
        match self.paused().await {
            Ok(Some(run)) => {
                self.metrics
                    .set("idsync_job_paused", &[("job", &name)], 1.0);
                self.jobs.update(&name, |s| {
                    if s.paused.as_deref() != Some(run.as_str()) {
                        s.acknowledged = false;
                    }
                    s.paused = Some(run.clone());
                });
                tracing::info!(job = %name, run = %run, "job paused by the guard; waiting for `idsync approve`");
                return;
            }
            Ok(None) => {
                self.metrics
                    .set("idsync_job_paused", &[("job", &name)], 0.0);
                self.jobs.update(&name, |s| {
                    s.paused = None;
                    s.acknowledged = false;
                });
            }
            Err(e) => {
                self.record_error(&name, &e);
                return;
            }
        }
        let lease = match JobLease::acquire(&self.store, &name, &self.holder, self.job.lease_ttl)
            .await
        {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::debug!(job = %name, "job runs on another worker (lease held); skipped");
                return;
            }
            Err(e) => {
                self.record_error(&name, &e);
                return;
            }
        };
        let job = self.job.job.clone().with_fence(lease.fence());
        self.jobs.update(&name, |s| {
            s.running = true;
            s.running_since = Some(Utc::now());
        });
        self.metrics
            .set("idsync_job_running", &[("job", &name)], 1.0);
        let incremental = kind == RunKind::Incremental && job.source.capabilities().changes;
        let engine = self.engine.clone();
        let work = async move {
            if incremental {
                engine.run_changes(&job).await
            } else {
                engine.run(&job).await
            }
        };
        tokio::pin!(work);
        let mut stop = stop.clone();
        let result = tokio::select! {
            r = &mut work => r,
            _ = async {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(self.grace).await;
            } => {
                tracing::warn!(job = %name, "shutdown: the run goes on past the grace period; taking its lease so it stops before its next op");
                self.take_lease_away(&name).await;
                work.await
            }
        };
        if let Err(e) = lease.release().await {
            tracing::warn!(job = %name, error = %e, "could not release the job lease");
        }
        self.jobs.update(&name, |s| {
            s.running = false;
            s.running_since = None;
        });
        self.metrics
            .set("idsync_job_running", &[("job", &name)], 0.0);
        match result {
            Ok(report) => self.record_report(&name, &report).await,
            Err(e) => self.record_error(&name, &e),
        }
    }

    /// Make this process's lease on `job` end now, under a new generation, so the run's
    /// fenced writes fail before its next op; then free it.
    async fn take_lease_away(&self, job: &str) {
        let stopper = format!("{}-stop", self.holder);
        for _ in 0..20 {
            let _ = self.store.release_lease(job, &self.holder).await;
            if let Ok(Some(_)) = self
                .store
                .acquire_lease(job, &stopper, Duration::from_secs(5))
                .await
            {
                let _ = self.store.release_lease(job, &stopper).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn record_error(&self, name: &str, e: &Error) {
        tracing::warn!(job = %name, error = %e, "job run failed");
        self.metrics.inc(
            "idsync_runs_total",
            &[("job", name), ("outcome", "error")],
            1,
        );
        self.jobs.update(name, |s| {
            s.last_error = Some(e.to_string());
            s.last_run = Some((Utc::now(), "error".into()));
        });
    }

    async fn record_report(&self, name: &str, report: &Report) {
        let outcome = if report.lease_lost.is_some() {
            "lease_lost"
        } else {
            report.status.as_str()
        };
        self.metrics.inc(
            "idsync_runs_total",
            &[("job", name), ("outcome", outcome)],
            1,
        );
        let mut ops: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for o in &report.outcomes {
            let state = match o.state {
                idsync_core::engine::OpState::Applied => "applied",
                idsync_core::engine::OpState::Failed => "failed",
                idsync_core::engine::OpState::Skipped => "skipped",
            };
            *ops.entry((o.op.as_str().to_owned(), state)).or_default() += 1;
        }
        for ((kind, state), n) in ops {
            self.metrics.inc(
                "idsync_ops_total",
                &[("job", name), ("kind", &kind), ("outcome", state)],
                n,
            );
        }
        if report.status == RunStatus::NeedsApproval {
            self.metrics
                .inc("idsync_guard_stops_total", &[("job", name)], 1);
            self.metrics.set("idsync_job_paused", &[("job", name)], 1.0);
            tracing::warn!(job = %name, run = %report.run_id, reasons = %report.guard.reasons.join("; "), "guard stop: the job is paused until `idsync approve {}`", report.run_id);
            self.jobs.update(name, |s| {
                s.paused = Some(report.run_id.clone());
                s.acknowledged = false;
            });
        }
        tracing::info!(job = %name, run = %report.run_id, outcome, applied = report.counts.applied, failed = report.counts.failed, "run ended");
        if self.writes_hub() && report.counts.applied > 0 {
            self.hub_moved.notify_waiters();
        }
        self.jobs.update(name, |s| {
            s.last_run = Some((Utc::now(), outcome.to_owned()));
            s.last_error = None;
        });
        if let Some(inbox) = &self.job.inbox {
            let cursor = self.store.cursor(name).await.ok().flatten();
            if report.cursor_committed
                && let Some(c) = &cursor
                && let Err(e) = inbox.trim(c, Utc::now()).await
            {
                tracing::warn!(job = %name, error = %e, "could not trim the inbox");
            }
            let _ = inbox.lag(cursor.as_ref()).await;
        }
    }
}
