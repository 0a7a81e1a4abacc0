//! A stateful fake Lark (feature `fake`) on the toolkit's fake skeleton: the contact v3
//! paths under `/open-apis/`, the same JSON shapes, HTTP statuses and codes, `user_id_type`
//! / `department_id_type` honoured on every call (Lark's defaults, `open_id` and
//! `open_department_id`, when absent), page sizes capped at 50 (40011), Lark's token
//! behaviour (the same token again with its *remaining* lifetime, a new one only when
//! less than `token_renew_below` is left, the old one valid until it expires), 50 calls
//! per second per app answered with HTTP 429, `{"code": 99991400}` and the
//! `x-ogw-ratelimit-limit` / `x-ogw-ratelimit-reset` headers, injected failures, a
//! plain-text 404 for unknown paths, and schema 2.0 contact events pushed (encrypted and
//! signed when an Encrypt Key is set) to a registered URL after every write.
//!
//! Simplification: users created through the API are activated at once (a real tenant
//! shows them `is_activated: false` until the person joins).
//!
//! ```
//! # async fn demo() -> idsync_core::Result<()> {
//! use idsync_core::{PageRequest, Source};
//! use idsync_lark::fake::{FakeConfig, FakeLark};
//! let fake = FakeLark::start(FakeConfig::default()).await?;
//! let sales = fake.add_dept("0", "Sales");
//! fake.add_user("zhangsan", "张三", &[sales.clone()]);
//! let source = idsync_lark::LarkSource::new(fake.connection())?;
//! let page = source.accounts(PageRequest::first()).await?;
//! assert_eq!(page.items[0].orgs[0].as_str(), sales);
//! # Ok(()) }
//! ```

pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use idsync_core::Result;
use idsync_http::Limit;
use idsync_http::fake::{
    FailQueue, FakeServer, FakeStats, RateWindows, RawReply, Tally, TokenIssuer,
};
use secrecy::SecretString;
use serde_json::{Value, json};

pub use state::{FakeDept, FakeUser, State};

use crate::config::{Connection, EventKeys};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The App ID.
    pub app_id: String,
    /// The App Secret.
    pub app_secret: String,
    /// Token lifetime (Lark: 2 h).
    pub token_ttl: Duration,
    /// A new token is issued only when less than this is left (Lark: 30 min).
    pub token_renew_below: Duration,
    /// Contact calls per second per app (`None`: unlimited; `Some(0)`: all throttled).
    pub qps: Option<u32>,
    /// Expire every token after this many contact calls (token expiry mid-listing).
    pub expire_tokens_every: Option<u64>,
    /// Withhold `user_id` (no `contact:user.employee_id:readonly` scope).
    pub withhold_user_id: bool,
    /// The Verification Token put into events.
    pub verification_token: String,
    /// The Encrypt Key events are encrypted and signed with (`None`: plain JSON).
    pub encrypt_key: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            app_id: "cli_a5f3c9e1b7d24068".into(),
            app_secret: "fake-app-secret".into(),
            token_ttl: Duration::from_secs(7200),
            token_renew_below: Duration::from_secs(1800),
            qps: Some(50),
            expire_tokens_every: None,
            withhold_user_id: false,
            verification_token: "vT3kQ8mZ1xR6pL9nW2sY5cF7hJ0dB4gA".into(),
            encrypt_key: Some("F3kLq9ZrT2xW7mN4pV8sB1cH6dJ0yA5e".into()),
        }
    }
}

/// A queued failure: HTTP status and Lark code (`code` 0: a plain-text page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// Lark code (0: a plain-text body, no JSON).
    pub code: i64,
}

struct Inner {
    cfg: FakeConfig,
    data: State,
    tokens: TokenIssuer,
    current: Option<(String, Instant)>,
    windows: RateWindows,
    fails: FailQueue<Failure>,
    stats: FakeStats,
    calls: u64,
    callback: Option<String>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake tenant. Dropping it stops the server.
pub struct FakeLark {
    shared: Shared,
    server: FakeServer,
    http: reqwest::Client,
}

impl std::fmt::Debug for FakeLark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLark")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key all contact calls share in the rate window (Lark counts per app).
const WINDOW_KEY: &str = "contact";

fn json_reply(status: u16, v: Value) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (s, axum::Json(v)).into_response()
}

fn error_reply(status: u16, code: i64, msg: &str) -> Response {
    if code == 0 {
        return plain_404();
    }
    json_reply(
        status,
        json!({"code": code, "msg": msg, "error": {"log_id": state::hex_id("fake-"),
            "troubleshooter": "https://open.feishu.cn/search?log_id=fake"}}),
    )
}

fn plain_404() -> Response {
    RawReply {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: b"404 page not found".to_vec(),
    }
    .into_response()
}

fn answer(
    inner: &mut Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &state::Query,
    body: &Value,
) -> (Response, Vec<(String, Value)>) {
    let now = Instant::now();
    inner.stats.call(path, now);
    if let Some(f) = inner.fails.take(path).or_else(|| inner.fails.take("*")) {
        inner.stats.tally(path, Tally::Injected);
        return (
            error_reply(f.status, f.code, "injected failure"),
            Vec::new(),
        );
    }
    if path == "auth/v3/tenant_access_token/internal" && method == Method::POST {
        let id = body
            .get("app_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let secret = body
            .get("app_secret")
            .and_then(Value::as_str)
            .unwrap_or_default();
        inner.stats.tally(path, Tally::Ok);
        if id != inner.cfg.app_id {
            return (
                json_reply(
                    200,
                    json!({"code": 10003, "data": {}, "msg": "invalid param"}),
                ),
                Vec::new(),
            );
        }
        if secret != inner.cfg.app_secret {
            return (
                json_reply(200, json!({"code": 10014, "msg": "app secret invalid"})),
                Vec::new(),
            );
        }
        let ttl = inner.cfg.token_ttl;
        let keep = inner.current.as_ref().filter(|(t, exp)| {
            inner.tokens.is_valid(t, now)
                && exp.saturating_duration_since(now) >= inner.cfg.token_renew_below
        });
        let (token, exp) = match keep {
            Some((t, exp)) => (t.clone(), *exp),
            None => {
                let t = inner.tokens.issue(now, ttl, false);
                inner.current = Some((t.clone(), now + ttl));
                (t, now + ttl)
            }
        };
        inner.stats.tokens_issued += 1;
        let left = exp.saturating_duration_since(now).as_secs().max(1);
        return (
            json_reply(
                200,
                json!({"code": 0, "expire": left, "msg": "ok", "tenant_access_token": token}),
            ),
            Vec::new(),
        );
    }
    let Some(rest) = path.strip_prefix("contact/v3/") else {
        return (plain_404(), Vec::new());
    };
    if let Err(until) = inner.windows.admit(WINDOW_KEY, now) {
        inner.stats.tally(path, Tally::Throttled);
        let reset = until
            .saturating_duration_since(now)
            .as_secs_f64()
            .ceil()
            .max(1.0);
        let mut r = json_reply(
            429,
            json!({"code": 99991400, "msg": "request trigger frequency limit"}),
        );
        let limit = inner.cfg.qps.unwrap_or(0).to_string();
        if let Ok(v) = HeaderValue::from_str(&limit) {
            r.headers_mut().insert("x-ogw-ratelimit-limit", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{reset}")) {
            r.headers_mut().insert("x-ogw-ratelimit-reset", v);
        }
        return (r, Vec::new());
    }
    inner.calls += 1;
    if let Some(n) = inner.cfg.expire_tokens_every
        && n > 0
        && inner.calls % n == 0
    {
        inner.tokens.expire_all();
        inner.current = None;
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(token) = auth.strip_prefix("Bearer ") else {
        inner.stats.tally(path, Tally::Token);
        return (
            error_reply(
                400,
                99991661,
                "Missing access token for authorization. Please make a request with token attached.",
            ),
            Vec::new(),
        );
    };
    if !inner.tokens.is_valid(token.trim(), now) {
        inner.stats.tally(path, Tally::Token);
        return (
            error_reply(
                400,
                99991663,
                "Invalid access token for authorization. Please make a request with token attached.",
            ),
            Vec::new(),
        );
    }
    inner.data.withhold_user_id = inner.cfg.withhold_user_id;
    match inner.data.call(method.as_str(), rest, q, body) {
        Ok(data) => {
            inner.stats.tally(path, Tally::Ok);
            (
                json_reply(200, json!({"code": 0, "msg": "success", "data": data})),
                std::mem::take(&mut inner.data.pending),
            )
        }
        Err((status, code, msg)) => {
            inner.stats.tally(path, Tally::Api);
            (error_reply(status, code, &msg), Vec::new())
        }
    }
}

async fn handle(
    AxState((shared, http)): AxState<(Shared, reqwest::Client)>,
    method: Method,
    Path(path): Path<String>,
    Query(q): Query<state::Query>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return error_reply(400, 99992402, "field validation failed: body is not JSON");
            }
        }
    };
    let (r, events) = answer(&mut lock(&shared), &method, &path, &headers, &q, &body);
    deliver(&shared, &http, events).await;
    r
}

/// Seals an event body as Lark sends it: `{"encrypt": …}` with a random IV and the
/// signature headers (timestamp, nonce, signature), or the plain JSON without a key.
pub fn seal(encrypt_key: Option<&str>, plain: &Value) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let text = plain.to_string();
    let Some(key) = encrypt_key else {
        return (text.into_bytes(), Vec::new());
    };
    let mut iv = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut iv);
    let body = json!({"encrypt": crate::crypto::encrypt(key, &text, iv)})
        .to_string()
        .into_bytes();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let mut n = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut n);
    let nonce: String = n.iter().map(|b| format!("{b:02x}")).collect();
    let sig = crate::crypto::signature(&ts, &nonce, key, &body);
    (
        body,
        vec![
            ("x-lark-request-timestamp", ts),
            ("x-lark-request-nonce", nonce),
            ("x-lark-signature", sig),
        ],
    )
}

/// A schema 2.0 envelope around `event`.
pub fn envelope(cfg: &FakeConfig, event_type: &str, event: &Value) -> Value {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    json!({"schema": "2.0",
        "header": {"event_id": state::hex_id(""), "event_type": event_type,
                   "create_time": ms.to_string(), "token": cfg.verification_token,
                   "app_id": cfg.app_id, "tenant_key": "fake-tenant"},
        "event": event})
}

/// Posts one sealed body to `url`; true when acknowledged with HTTP 200.
pub async fn post_sealed(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> Option<(u16, Value)> {
    let mut req = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, v))
}

async fn deliver(shared: &Shared, http: &reqwest::Client, events: Vec<(String, Value)>) {
    let (url, cfg) = {
        let g = lock(shared);
        (g.callback.clone(), g.cfg.clone())
    };
    let Some(url) = url else { return };
    for (event_type, event) in events {
        let env = envelope(&cfg, &event_type, &event);
        let (body, headers) = seal(cfg.encrypt_key.as_deref(), &env);
        let ok = matches!(
            post_sealed(http, &url, body, &headers).await,
            Some((200, _))
        );
        let mut g = lock(shared);
        if ok {
            g.stats.events_delivered += 1;
        } else {
            g.stats.events_failed += 1;
        }
    }
}

impl FakeLark {
    /// Starts a fake tenant with only the root department `"0"`.
    pub async fn start(cfg: FakeConfig) -> Result<Self> {
        let windows = RateWindows::new(cfg.qps.map(Limit::per_second));
        let shared: Shared = Arc::new(Mutex::new(Inner {
            cfg,
            data: State::default(),
            tokens: TokenIssuer::new(),
            current: None,
            windows,
            fails: FailQueue::new(),
            stats: FakeStats::default(),
            calls: 0,
            callback: None,
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| idsync_core::Error::unexpected(format!("fake lark: HTTP client: {e}")))?;
        let app = Router::new()
            .route("/open-apis/{*path}", any(handle))
            .fallback(|| async { plain_404() })
            .with_state((shared.clone(), http.clone()));
        let server = FakeServer::start("lark", app).await?;
        Ok(FakeLark {
            shared,
            server,
            http,
        })
    }

    /// `http://127.0.0.1:<port>/open-apis`.
    pub fn base_url(&self) -> String {
        format!("{}/open-apis", self.server.base_url())
    }

    /// A connection to this fake (`union_id` anchors, its limit).
    pub fn connection(&self) -> Connection {
        let g = lock(&self.shared);
        let mut c = Connection::new(
            g.cfg.app_id.clone(),
            SecretString::from(g.cfg.app_secret.clone()),
        );
        c.base_url = self.base_url();
        if let Some(q) = g.cfg.qps.filter(|q| *q > 0) {
            c.qps = q;
        }
        c
    }

    /// The event keys matching this fake's Verification Token and Encrypt Key.
    pub fn event_keys(&self) -> EventKeys {
        let g = lock(&self.shared);
        EventKeys::new(
            SecretString::from(g.cfg.verification_token.clone()),
            g.cfg.encrypt_key.clone().map(SecretString::from),
        )
    }

    /// The configuration.
    pub fn config(&self) -> FakeConfig {
        lock(&self.shared).cfg.clone()
    }

    /// Pushes events of every write to `url` from now on.
    pub fn register_callback(&self, url: impl Into<String>) {
        lock(&self.shared).callback = Some(url.into());
    }

    /// Sends one event (sealed per the config) to the registered URL; the answer.
    pub async fn send_event(&self, event_type: &str, event: Value) -> Option<(u16, Value)> {
        let (url, cfg) = {
            let g = lock(&self.shared);
            (g.callback.clone()?, g.cfg.clone())
        };
        let (body, headers) = seal(
            cfg.encrypt_key.as_deref(),
            &envelope(&cfg, event_type, &event),
        );
        post_sealed(&self.http, &url, body, &headers).await
    }

    /// Sends the URL verification challenge; the answer.
    pub async fn verify_url(&self, challenge: &str) -> Option<(u16, Value)> {
        let (url, cfg) = {
            let g = lock(&self.shared);
            (g.callback.clone()?, g.cfg.clone())
        };
        let body = json!({"challenge": challenge, "token": cfg.verification_token, "type": "url_verification"});
        let (body, _) = seal(cfg.encrypt_key.as_deref(), &body);
        post_sealed(&self.http, &url, body, &[]).await
    }

    /// Reads or changes the data directly (no events, no counters).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.shared).data)
    }

    /// Adds a department under `parent` (`"0"`: top level); its `open_department_id`.
    pub fn add_dept(&self, parent: &str, name: &str) -> String {
        self.with_state(|s| s.add_dept(parent, name))
    }

    /// Adds an active user with an email derived from `user_id`; its union_id.
    pub fn add_user(&self, user_id: &str, name: &str, depts: &[String]) -> String {
        let mut u = FakeUser::new(user_id, name, depts);
        u.email = Some(format!("{user_id}@fake.example"));
        self.with_state(|s| s.put_user(u))
    }

    /// The next `n` calls of `path` (below `/open-apis/`, e.g. `contact/v3/users/find_by_department`;
    /// `*` for any path) fail with `failure`.
    pub fn fail(&self, path: &str, n: u32, failure: Failure) {
        lock(&self.shared).fails.push(path, n, failure);
    }

    /// Expires every token now.
    pub fn expire_tokens(&self) {
        let mut g = lock(&self.shared);
        g.tokens.expire_all();
        g.current = None;
    }

    /// Changes the per-second limit.
    pub fn set_qps(&self, qps: Option<u32>) {
        let mut g = lock(&self.shared);
        g.cfg.qps = qps;
        g.windows.set_default(qps.map(Limit::per_second));
    }

    /// Call statistics (paths below `/open-apis/`).
    pub fn stats(&self) -> FakeStats {
        lock(&self.shared).stats.clone()
    }
}
