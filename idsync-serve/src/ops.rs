//! Operations: `/healthz`, `/readyz`, Prometheus `/metrics`, and the [`Metrics`] registry
//! every part of the service counts into.
//!
//! The registry renders the Prometheus text format (version 0.0.4) itself: a map of
//! counters and gauges by name and labels behind one mutex. That is all the service
//! needs (no histograms), and it adds no dependency; `prometheus-client` would bring its
//! own encoder, derive macros and `dtoa`/`itoa` for the same output.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `idsync_runs_total` | counter | `job`, `outcome` (`succeeded`, `partially_failed`, `failed`, `needs_approval`, `error`, `lease_lost`) |
//! | `idsync_ops_total` | counter | `job`, `kind` (`create_account`, ...), `outcome` (`applied`, `failed`, `skipped`) |
//! | `idsync_guard_stops_total` | counter | `job` |
//! | `idsync_job_paused` | gauge | `job` (1 while the job waits for `idsync approve`) |
//! | `idsync_job_running` | gauge | `job` |
//! | `idsync_inbox_lag` | gauge | `stream` (events recorded and not yet consumed by the job reading them) |
//! | `idsync_inbox_events_total` | counter | `stream`, `outcome` (`recorded`, `replay`, `error`) |
//! | `idsync_feed_head` | gauge | — (the hub feed's newest sequence number) |
//! | `idsync_webhook_deliveries_total` | counter | `endpoint`, `outcome` (counted by the webhook sink: [`Metrics::webhook_delivery`]) |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use idsync_core::Store;
use serde::Serialize;

/// Whether a metric only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only grows.
    Counter,
    /// Set to its current value.
    Gauge,
}

/// The metrics this service knows: name, type, help.
const KNOWN: &[(&str, MetricType, &str)] = &[
    (
        "idsync_runs_total",
        MetricType::Counter,
        "Job runs by outcome.",
    ),
    (
        "idsync_ops_total",
        MetricType::Counter,
        "Operations applied by jobs, by kind and outcome.",
    ),
    (
        "idsync_guard_stops_total",
        MetricType::Counter,
        "Runs the guard stopped (the job pauses until approved).",
    ),
    (
        "idsync_job_paused",
        MetricType::Gauge,
        "1 while the job waits for approval after a guard stop.",
    ),
    (
        "idsync_job_running",
        MetricType::Gauge,
        "1 while a run of the job goes on in this process.",
    ),
    (
        "idsync_inbox_lag",
        MetricType::Gauge,
        "Inbox events recorded and not yet consumed by the job reading them.",
    ),
    (
        "idsync_inbox_events_total",
        MetricType::Counter,
        "Provider events offered to the inbox, by outcome.",
    ),
    (
        "idsync_feed_head",
        MetricType::Gauge,
        "The newest sequence number of the hub's change feed.",
    ),
    (
        "idsync_webhook_deliveries_total",
        MetricType::Counter,
        "Webhook deliveries by endpoint and outcome.",
    ),
];

type Key = (String, Vec<(String, String)>);

/// A small registry of counters and gauges, rendered in the Prometheus text format.
///
/// Cheap to clone (a shared handle). Metric names outside the table in the
/// [module docs](self) are accepted too (typed by [`Metrics::inc`] as counters and
/// [`Metrics::set`] as gauges), so another module (the webhook sink, the change feed) can
/// add its own.
///
/// ```
/// use idsync_serve::ops::Metrics;
/// let m = Metrics::new();
/// m.inc("idsync_runs_total", &[("job", "hr"), ("outcome", "succeeded")], 1);
/// m.webhook_delivery("crm", "delivered");
/// let text = m.render();
/// assert!(text.contains("idsync_runs_total{job=\"hr\",outcome=\"succeeded\"} 1"));
/// assert!(text.contains("idsync_webhook_deliveries_total{endpoint=\"crm\",outcome=\"delivered\"} 1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<Key, (MetricType, f64)>>>,
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    (name.to_owned(), l)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, (MetricType, f64)>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add `n` to a counter.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        let mut g = self.lock();
        let e = g
            .entry(key(name, labels))
            .or_insert((MetricType::Counter, 0.0));
        e.1 += n as f64;
    }

    /// Set a gauge.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.lock()
            .insert(key(name, labels), (MetricType::Gauge, v));
    }

    /// The current value (0 when never set).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.lock().get(&key(name, labels)).map_or(0.0, |e| e.1)
    }

    /// Count one webhook delivery of `endpoint` (`outcome`: `delivered`, `failed`,
    /// `retried`, `disabled`, ...). The hook the webhook sink counts through.
    pub fn webhook_delivery(&self, endpoint: &str, outcome: &str) {
        self.inc(
            "idsync_webhook_deliveries_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
            1,
        );
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        let mut last: Option<&str> = None;
        for ((name, labels), (ty, v)) in g.iter() {
            if last != Some(name.as_str()) {
                let known = KNOWN.iter().find(|(n, _, _)| n == name);
                let help = known.map_or("idsync metric.", |k| k.2);
                let ty = known.map_or(*ty, |k| k.1);
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(
                    out,
                    "# TYPE {name} {}",
                    match ty {
                        MetricType::Counter => "counter",
                        MetricType::Gauge => "gauge",
                    }
                );
                last = Some(name.as_str());
            }
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {v}");
        }
        out
    }
}

/// Where a job stands in this process, for `/readyz`, `/api/v1/jobs` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobState {
    /// A run goes on in this process.
    pub running: bool,
    /// Since when (set while running).
    pub running_since: Option<DateTime<Utc>>,
    /// The guard stopped the newest run: the job waits for `idsync approve RUN`.
    pub paused: Option<String>,
    /// An operator acknowledged the pause (`POST /api/v1/jobs/{job}/acknowledge`); an
    /// unacknowledged pause makes `/readyz` answer 503.
    pub acknowledged: bool,
    /// When the last run ended, and how.
    pub last_run: Option<(DateTime<Utc>, String)>,
    /// The last error (a run that could not start or failed before applying).
    pub last_error: Option<String>,
}

/// The states of all jobs of this process, shared by the scheduler and the HTTP parts.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<BTreeMap<String, JobState>>>,
}

impl Jobs {
    /// No jobs.
    pub fn new() -> Self {
        Jobs::default()
    }

    /// Change one job's state.
    pub fn update<T>(&self, job: &str, f: impl FnOnce(&mut JobState) -> T) -> T {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(g.entry(job.to_owned()).or_default())
    }

    /// A copy of every job's state.
    pub fn snapshot(&self) -> BTreeMap<String, JobState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What `/healthz`, `/readyz` and `/metrics` read.
#[derive(Debug, Clone)]
pub struct OpsState {
    /// The store (`/readyz` reads the feed head from it).
    pub store: Arc<dyn Store>,
    /// The registry.
    pub metrics: Metrics,
    /// The jobs.
    pub jobs: Jobs,
    /// A run longer than this counts as stuck.
    pub stuck_after: chrono::Duration,
}

/// The readiness verdict: what `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// Everything is fine.
    pub ready: bool,
    /// Why not, one line each.
    pub problems: Vec<String>,
}

impl OpsState {
    /// Check readiness: the store answers, no run is stuck, no pause is unacknowledged.
    pub async fn readiness(&self) -> Readiness {
        let mut problems = Vec::new();
        match self.store.feed_head().await {
            Ok(head) => self.metrics.set("idsync_feed_head", &[], head as f64),
            Err(e) => problems.push(format!("store unreachable: {e}")),
        }
        let now = Utc::now();
        for (job, st) in self.jobs.snapshot() {
            if let Some(since) = st.running_since
                && st.running
                && now - since > self.stuck_after
            {
                problems.push(format!("job {job} has been running since {since} (stuck?)"));
            }
            if let Some(run) = &st.paused
                && !st.acknowledged
            {
                problems.push(format!(
                    "job {job} is paused by the guard (run {run}): review it, then `idsync approve {run}`, or acknowledge the pause"
                ));
            }
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }
}

/// `/healthz` (the process answers), `/readyz` (see [`OpsState::readiness`]) and
/// `/metrics` (Prometheus text). Mount it without authentication on an internal port, or
/// behind [`auth::require`](crate::auth::require) with the `read` scope.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(st): State<OpsState>) -> Response {
    let r = st.readiness().await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r)).into_response()
}

async fn metrics(State(st): State<OpsState>) -> Response {
    if let Ok(head) = st.store.feed_head().await {
        st.metrics.set("idsync_feed_head", &[], head as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.inc(
            "idsync_runs_total",
            &[("outcome", "ok"), ("job", "a\"b")],
            2,
        );
        m.inc(
            "idsync_runs_total",
            &[("job", "a\"b"), ("outcome", "ok")],
            1,
        );
        m.set("idsync_feed_head", &[], 7.0);
        let t = m.render();
        assert!(t.contains("# TYPE idsync_runs_total counter\n"), "{t}");
        assert!(
            t.contains("idsync_runs_total{job=\"a\\\"b\",outcome=\"ok\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE idsync_feed_head gauge\nidsync_feed_head 7\n"),
            "{t}"
        );
        assert_eq!(t.matches("# HELP idsync_runs_total").count(), 1);
    }
}
