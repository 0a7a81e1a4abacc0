//! The skeleton of stateful fake providers (feature `fake`): a server on `127.0.0.1:0`,
//! token issue and expiry, per-path request windows that answer the provider's own
//! throttle body, injected failures, per-path request counters and raw replies (bare
//! statuses, non-JSON and oversized bodies).
//!
//! A provider's fake keeps its data and its API handlers; it holds these parts under one
//! lock and does, per request: count it ([`FakeStats::call`]), take an injected failure
//! ([`FailQueue::take`]), admit it through the window ([`RateWindows::admit`]), check the
//! token ([`TokenIssuer::is_valid`]), answer, and tally the outcome ([`FakeStats::tally`]).
//!
//! ```
//! # async fn demo() -> idsync_core::Result<()> {
//! use idsync_http::fake::{FakeServer, RateWindows};
//! use idsync_http::Limit;
//! let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
//! let server = FakeServer::start("demo", app).await?;
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! let mut windows = RateWindows::new(Some(Limit::per_second(1)));
//! let now = std::time::Instant::now();
//! assert!(windows.admit("/ping", now).is_ok());
//! assert!(windows.admit("/ping", now).is_err());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idsync_core::{Error, ErrorKind, Result};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::pace::Limit;

/// A running fake server. Dropping it stops the server.
pub struct FakeServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl FakeServer {
    /// Serves `app` on `127.0.0.1:0`. Fails loudly (an error naming `name`) when it
    /// cannot listen.
    pub async fn start(name: &str, app: Router) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("fake {name}: cannot listen"),
                )
                .with_source(e)
            })?;
        let addr = listener.local_addr().map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("fake {name}: no address")).with_source(e)
        })?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeServer {
            addr,
            shutdown: Some(tx),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Issues and checks access tokens with a lifetime.
#[derive(Debug, Clone, Default)]
pub struct TokenIssuer {
    /// token -> expiry
    tokens: HashMap<String, Instant>,
    seq: u64,
    issued: u64,
}

impl TokenIssuer {
    /// An issuer with no tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a token valid for `ttl`. With `renew`, a still-valid token is returned again
    /// with its lifetime renewed (DingTalk and WeCom do that).
    pub fn issue(&mut self, now: Instant, ttl: Duration, renew: bool) -> String {
        let existing = if renew {
            self.tokens
                .iter()
                .find(|(_, exp)| **exp > now)
                .map(|(t, _)| t.clone())
        } else {
            None
        };
        let token = existing.unwrap_or_else(|| {
            self.seq += 1;
            let mut r = [0u8; 8];
            rand::Rng::fill(&mut rand::rng(), &mut r);
            let tail: String = r.iter().map(|b| format!("{b:02x}")).collect();
            format!("fake{:04}{tail}", self.seq)
        });
        self.tokens.retain(|_, exp| *exp > now);
        self.tokens.insert(token.clone(), now + ttl);
        self.issued += 1;
        token
    }

    /// True when `token` was issued and has not expired.
    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        self.tokens.get(token).is_some_and(|exp| *exp > now)
    }

    /// Expires every token now.
    pub fn expire_all(&mut self) {
        self.tokens.clear();
    }

    /// Tokens issued (renewals count).
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

/// Per-path sliding windows of the fake's rate limits.
#[derive(Debug, Clone, Default)]
pub struct RateWindows {
    default: Option<Limit>,
    per_path: HashMap<String, Limit>,
    windows: HashMap<String, VecDeque<Instant>>,
}

impl RateWindows {
    /// Windows applying `default` to every path (`None`: unlimited).
    pub fn new(default: Option<Limit>) -> Self {
        RateWindows {
            default,
            ..Self::default()
        }
    }

    /// Changes the default limit.
    pub fn set_default(&mut self, default: Option<Limit>) {
        self.default = default;
    }

    /// Sets (or with `None` removes) the limit of one path.
    pub fn set_path(&mut self, path: &str, limit: Option<Limit>) {
        match limit {
            Some(l) => {
                self.per_path.insert(path.to_owned(), l);
            }
            None => {
                self.per_path.remove(path);
            }
        }
    }

    /// Counts a request to `path` at `now` if it fits; otherwise `Err(until)`, when the
    /// window frees a slot (for the throttle body's "limit ends at").
    pub fn admit(&mut self, path: &str, now: Instant) -> std::result::Result<(), Instant> {
        let Some(limit) = self.per_path.get(path).copied().or(self.default) else {
            return Ok(());
        };
        let window = self.windows.entry(path.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.per)
        {
            window.pop_front();
        }
        if window.len() >= usize::try_from(limit.requests).unwrap_or(usize::MAX) {
            let until = window.front().map_or(now, |t| *t + limit.per);
            return Err(until);
        }
        window.push_back(now);
        Ok(())
    }
}

/// Queued failures per path: the next N calls of a path get `F`.
#[derive(Debug, Clone)]
pub struct FailQueue<F> {
    queues: HashMap<String, VecDeque<(u32, F)>>,
}

impl<F> Default for FailQueue<F> {
    fn default() -> Self {
        FailQueue {
            queues: HashMap::new(),
        }
    }
}

impl<F: Clone> FailQueue<F> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` calls of `path` (after those queued already) fail with `failure`.
    pub fn push(&mut self, path: &str, n: u32, failure: F) {
        if n > 0 {
            self.queues
                .entry(path.to_owned())
                .or_default()
                .push_back((n, failure));
        }
    }

    /// The failure for this call of `path`, if one is queued.
    pub fn take(&mut self, path: &str) -> Option<F> {
        let queue = self.queues.get_mut(path)?;
        let front = queue.front_mut()?;
        let out = front.1.clone();
        front.0 = front.0.saturating_sub(1);
        if front.0 == 0 {
            queue.pop_front();
        }
        Some(out)
    }
}

/// A reply that is not the provider's JSON: a bare status, a non-JSON or an oversized
/// body (what proxies, gateways and broken deployments send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl RawReply {
    /// A bare status with an HTML page, like a reverse proxy's `404 Not Found`.
    pub fn bare_status(status: u16) -> Self {
        RawReply {
            status,
            content_type: "text/html",
            body: format!("<html><body><h1>{status}</h1></body></html>").into_bytes(),
        }
    }

    /// HTTP 200 with a body that is not JSON.
    pub fn not_json() -> Self {
        RawReply {
            status: 200,
            content_type: "text/html",
            body: b"<html><body>gateway login</body></html>".to_vec(),
        }
    }

    /// HTTP 200 with a JSON body of about `bytes` bytes.
    pub fn oversized(bytes: usize) -> Self {
        let mut body = br#"{"errcode":0,"pad":""#.to_vec();
        body.resize(body.len() + bytes, b'x');
        body.extend_from_slice(br#""}"#);
        RawReply {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
}

impl IntoResponse for RawReply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, self.body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        r
    }
}

/// A fake's answer: the provider's JSON (on a status) or a raw reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// JSON on HTTP 200.
    Json(Value),
    /// JSON on another status.
    JsonStatus(u16, Value),
    /// A raw reply.
    Raw(RawReply),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(v) => axum::Json(v).into_response(),
            Reply::JsonStatus(s, v) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, axum::Json(v)).into_response()
            }
            Reply::Raw(r) => r.into_response(),
        }
    }
}

/// How one request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Answered successfully.
    Ok,
    /// Answered with the throttle body.
    Throttled,
    /// Answered with a token error.
    Token,
    /// Answered with an injected failure.
    Injected,
    /// Answered with another API error.
    Api,
}

/// Per-path call statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Calls received.
    pub calls: u64,
    /// Calls answered with a throttle error.
    pub throttled: u64,
    /// Calls answered with a token error.
    pub token_errors: u64,
    /// Calls answered with an injected failure.
    pub injected: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// When the first call of this path arrived.
    pub first: Option<Instant>,
    /// When the last call of this path arrived.
    pub last: Option<Instant>,
}

/// Call statistics of a whole fake.
#[derive(Debug, Clone, Default)]
pub struct FakeStats {
    /// Event pushes acknowledged by the receiver.
    pub events_delivered: u64,
    /// Event pushes that failed or were not acknowledged.
    pub events_failed: u64,
    /// By path.
    pub paths: BTreeMap<String, PathStats>,
    /// Tokens issued (a renewal of a valid token counts too).
    pub tokens_issued: u64,
    /// When the first call arrived.
    pub first_call: Option<Instant>,
    /// When the last call arrived.
    pub last_call: Option<Instant>,
}

impl FakeStats {
    /// Counts a call of `path` arriving at `now`.
    pub fn call(&mut self, path: &str, now: Instant) {
        self.first_call.get_or_insert(now);
        self.last_call = Some(now);
        let ps = self.paths.entry(path.to_owned()).or_default();
        ps.calls += 1;
        ps.first.get_or_insert(now);
        ps.last = Some(now);
    }

    /// Counts how a call of `path` ended.
    pub fn tally(&mut self, path: &str, how: Tally) {
        let ps = self.paths.entry(path.to_owned()).or_default();
        match how {
            Tally::Ok => ps.ok += 1,
            Tally::Throttled => ps.throttled += 1,
            Tally::Token => ps.token_errors += 1,
            Tally::Injected => ps.injected += 1,
            Tally::Api => {}
        }
    }

    /// Sum over all paths.
    pub fn total(&self) -> PathStats {
        let mut t = PathStats::default();
        for p in self.paths.values() {
            t.calls += p.calls;
            t.throttled += p.throttled;
            t.token_errors += p.token_errors;
            t.injected += p.injected;
            t.ok += p.ok;
        }
        t.first = self.first_call;
        t.last = self.last_call;
        t
    }

    /// The stats of one path (zeros when never called).
    pub fn path(&self, path: &str) -> PathStats {
        self.paths.get(path).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_renew() {
        let mut t = TokenIssuer::new();
        let now = Instant::now();
        let a = t.issue(now, Duration::from_secs(10), true);
        assert!(t.is_valid(&a, now));
        assert_eq!(t.issue(now, Duration::from_secs(10), true), a, "renewed");
        assert_ne!(t.issue(now, Duration::from_secs(10), false), a);
        assert!(!t.is_valid(&a, now + Duration::from_secs(11)));
        t.expire_all();
        assert!(!t.is_valid(&a, now));
        assert_eq!(t.issued(), 3);
    }

    #[test]
    fn windows_and_failures() {
        let mut w = RateWindows::new(Some(Limit::per_second(2)));
        w.set_path("/m", Some(Limit::per_minute(1)));
        let t0 = Instant::now();
        assert!(w.admit("/a", t0).is_ok());
        assert!(w.admit("/a", t0).is_ok());
        assert_eq!(w.admit("/a", t0), Err(t0 + Duration::from_secs(1)));
        assert!(w.admit("/a", t0 + Duration::from_secs(1)).is_ok());
        assert!(w.admit("/m", t0).is_ok());
        assert!(w.admit("/m", t0 + Duration::from_secs(30)).is_err());
        assert!(w.admit("/m", t0 + Duration::from_secs(60)).is_ok());

        let mut f: FailQueue<u16> = FailQueue::new();
        f.push("/a", 2, 500);
        f.push("/a", 1, 404);
        assert_eq!(f.take("/a"), Some(500));
        assert_eq!(f.take("/b"), None);
        assert_eq!(f.take("/a"), Some(500));
        assert_eq!(f.take("/a"), Some(404));
        assert_eq!(f.take("/a"), None);

        let mut s = FakeStats::default();
        s.call("/a", t0);
        s.tally("/a", Tally::Throttled);
        s.call("/b", t0);
        s.tally("/b", Tally::Ok);
        assert_eq!(s.total().calls, 2);
        assert_eq!(s.path("/a").throttled, 1);
        assert_eq!(s.path("/zzz"), PathStats::default());
    }
}
