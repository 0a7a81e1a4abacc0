//! A stateful fake WeCom (feature `fake`) on the toolkit's fake skeleton: the same paths
//! under `/cgi-bin/`, the same JSON shapes and error codes (HTTP 200 for everything),
//! `gettoken` per secret with expiry, the per-API call limit counted in fixed windows of
//! wall-clock time (a minute by default, answered with `45009` until the window ends), the
//! `48009` new-IP restriction of contact-sync secrets as an option, injected failures, and
//! `change_contact` callbacks pushed (encrypted and signed) to a registered URL after every
//! write, as WeCom's contact-sync assistant sends them: ids only.
//!
//! ```
//! # async fn demo() -> idsync_core::Result<()> {
//! use idsync_core::{Source, PageRequest};
//! use idsync_wecom::fake::{FakeConfig, FakeWeCom};
//! let fake = FakeWeCom::start(FakeConfig::default()).await?;
//! let sales = fake.add_dept(1, "Sales");
//! fake.add_user("zhangsan", "张三", &[sales]);
//! let source = idsync_wecom::WeComSource::new(fake.connection())?;
//! let page = source.accounts(PageRequest::first()).await?;
//! assert_eq!(page.items[0].orgs[0].as_str(), sales.to_string());
//! # Ok(()) }
//! ```

pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::routing::any;
use idsync_core::Result;
use idsync_http::fake::{FailQueue, FakeServer, FakeStats, Reply, Tally, TokenIssuer};
use secrecy::SecretString;
use serde_json::{Value, json};

pub use state::{FakeDept, FakeUser, State};

use crate::config::Connection;
use crate::crypto::CallbackCrypto;
use crate::event::{ContactChange, contact_event_xml};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The CorpID.
    pub corp_id: String,
    /// The read secret (an app's).
    pub secret: String,
    /// The contact-sync secret; when set, only its tokens may write (others get 60011).
    pub contact_secret: Option<String>,
    /// Token lifetime (`expires_in`).
    pub token_ttl: Duration,
    /// Calls per API per window (`None`: unlimited; `Some(0)`: everything throttled).
    pub limit: Option<u32>,
    /// The window the limit is counted in (WeCom: a minute).
    pub window: Duration,
    /// Contact-sync secrets "calling from a new IP": `department/list` and `user/list`
    /// answer 48009.
    pub new_ip_restriction: bool,
    /// Withhold the personal fields new self-built apps no longer get.
    pub withhold_fields: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            corp_id: "wwfake0000000001".into(),
            secret: "fake-app-secret".into(),
            contact_secret: None,
            token_ttl: Duration::from_secs(7200),
            limit: None,
            window: Duration::from_secs(60),
            new_ip_restriction: false,
            withhold_fields: false,
        }
    }
}

/// Which secret a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Read,
    Contact,
}

struct Inner {
    cfg: FakeConfig,
    data: State,
    read_tokens: TokenIssuer,
    contact_tokens: TokenIssuer,
    windows: HashMap<String, (u128, u32)>,
    fails: FailQueue<i64>,
    stats: FakeStats,
    callback: Option<(String, Arc<CallbackCrypto>)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake corp. Dropping it stops the server.
pub struct FakeWeCom {
    shared: Shared,
    server: FakeServer,
    http: reqwest::Client,
}

impl std::fmt::Debug for FakeWeCom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWeCom")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const WRITES: &[&str] = &[
    "user/create",
    "user/update",
    "user/delete",
    "department/create",
    "department/update",
    "department/delete",
];

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// One call: counters, injected failure, window, token, answer.
fn answer(
    inner: &mut Inner,
    path: &str,
    q: &HashMap<String, String>,
    body: &Value,
) -> (Value, Vec<ContactChange>) {
    let now = Instant::now();
    inner.stats.call(path, now);
    if let Some(code) = inner.fails.take(path) {
        inner.stats.tally(path, Tally::Injected);
        return (
            json!({"errcode": code, "errmsg": "injected failure"}),
            Vec::new(),
        );
    }
    if let Some(limit) = inner.cfg.limit {
        let window = inner.cfg.window.as_millis().max(1);
        let idx = wall_ms() / window;
        let slot = inner.windows.entry(path.to_owned()).or_insert((idx, 0));
        if slot.0 != idx {
            *slot = (idx, 0);
        }
        if slot.1 >= limit {
            inner.stats.tally(path, Tally::Throttled);
            return (
                json!({"errcode": 45009, "errmsg": "api freq out of limit, hint: [fake], more info at https://open.work.weixin.qq.com/devtool/query?e=45009"}),
                Vec::new(),
            );
        }
        slot.1 += 1;
    }
    if path == "gettoken" {
        let corp = q.get("corpid").map(String::as_str).unwrap_or_default();
        let secret = q.get("corpsecret").map(String::as_str).unwrap_or_default();
        if corp != inner.cfg.corp_id {
            inner.stats.tally(path, Tally::Api);
            return (
                json!({"errcode": 40013, "errmsg": "invalid corpid"}),
                Vec::new(),
            );
        }
        let which = if secret == inner.cfg.secret {
            Secret::Read
        } else if inner.cfg.contact_secret.as_deref() == Some(secret) {
            Secret::Contact
        } else {
            inner.stats.tally(path, Tally::Api);
            return (
                json!({"errcode": 40001, "errmsg": "invalid credential"}),
                Vec::new(),
            );
        };
        let ttl = inner.cfg.token_ttl;
        let issuer = match which {
            Secret::Read => &mut inner.read_tokens,
            Secret::Contact => &mut inner.contact_tokens,
        };
        let token = issuer.issue(now, ttl, true);
        inner.stats.tally(path, Tally::Ok);
        return (
            json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": ttl.as_secs()}),
            Vec::new(),
        );
    }
    let token = q
        .get("access_token")
        .map(String::as_str)
        .unwrap_or_default();
    let which = if token.is_empty() {
        inner.stats.tally(path, Tally::Token);
        return (
            json!({"errcode": 41001, "errmsg": "access_token missing"}),
            Vec::new(),
        );
    } else if inner.read_tokens.is_valid(token, now) {
        Secret::Read
    } else if inner.contact_tokens.is_valid(token, now) {
        Secret::Contact
    } else {
        inner.stats.tally(path, Tally::Token);
        let code = if token.starts_with("fake") {
            42001
        } else {
            40014
        };
        return (
            json!({"errcode": code, "errmsg": "access_token expired or invalid"}),
            Vec::new(),
        );
    };
    let is_contact = which == Secret::Contact || inner.cfg.contact_secret.is_none();
    if WRITES.contains(&path) && !is_contact {
        inner.stats.tally(path, Tally::Api);
        return (
            json!({"errcode": 60011, "errmsg": "no privilege to access/modify contact/party/agent"}),
            Vec::new(),
        );
    }
    if inner.cfg.new_ip_restriction
        && is_contact
        && (path == "department/list" || path == "user/list")
    {
        inner.stats.tally(path, Tally::Api);
        return (
            json!({"errcode": 48009, "errmsg": "api forbidden for contact sync from new ip"}),
            Vec::new(),
        );
    }
    inner.data.withhold_fields = inner.cfg.withhold_fields;
    let v = inner.data.call(path, q, body);
    let ok = v.get("errcode").and_then(Value::as_i64) == Some(0);
    inner
        .stats
        .tally(path, if ok { Tally::Ok } else { Tally::Api });
    (v, std::mem::take(&mut inner.data.pending))
}

async fn handle(
    AxState((shared, http)): AxState<(Shared, reqwest::Client)>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return Reply::Json(json!({"errcode": 47001, "errmsg": "data format error"})),
        }
    };
    let (v, events) = answer(&mut lock(&shared), &path, &q, &body);
    deliver(&shared, &http, events).await;
    Reply::Json(v)
}

/// Pushes events to the registered callback, one request each, before the write is
/// answered (so a test sees them in order).
async fn deliver(shared: &Shared, http: &reqwest::Client, events: Vec<ContactChange>) {
    let (target, corp) = {
        let g = lock(shared);
        (g.callback.clone(), g.cfg.corp_id.clone())
    };
    let Some((url, crypto)) = target else {
        return;
    };
    for change in events {
        let ok = push_one(http, &url, &crypto, &corp, &change).await;
        let mut g = lock(shared);
        if ok {
            g.stats.events_delivered += 1;
        } else {
            g.stats.events_failed += 1;
        }
    }
}

async fn push_one(
    http: &reqwest::Client,
    url: &str,
    crypto: &CallbackCrypto,
    corp: &str,
    change: &ContactChange,
) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let ts = now.to_string();
    let mut r = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut r);
    let nonce: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let xml = contact_event_xml(corp, i64::try_from(now).unwrap_or(0), change);
    let Ok((body, sig)) = crate::crypto::seal_event(crypto, &xml, &ts, &nonce, "") else {
        return false;
    };
    let sent = http
        .post(url)
        .query(&[("msg_signature", sig), ("timestamp", ts), ("nonce", nonce)])
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => resp
            .text()
            .await
            .map(|t| t == "success" || t.is_empty())
            .unwrap_or(false),
        _ => false,
    }
}

impl FakeWeCom {
    /// Starts a fake corp with only the root department (1).
    pub async fn start(cfg: FakeConfig) -> Result<Self> {
        let shared: Shared = Arc::new(Mutex::new(Inner {
            cfg,
            data: State::default(),
            read_tokens: TokenIssuer::new(),
            contact_tokens: TokenIssuer::new(),
            windows: HashMap::new(),
            fails: FailQueue::new(),
            stats: FakeStats::default(),
            callback: None,
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| idsync_core::Error::unexpected(format!("fake wecom: HTTP client: {e}")))?;
        let app = Router::new()
            .route("/cgi-bin/{*path}", any(handle))
            .with_state((shared.clone(), http.clone()));
        let server = FakeServer::start("wecom", app).await?;
        Ok(FakeWeCom {
            shared,
            server,
            http,
        })
    }

    /// `http://127.0.0.1:<port>/cgi-bin/`.
    pub fn base_url(&self) -> String {
        format!("{}/cgi-bin/", self.server.base_url())
    }

    /// A connection to this fake: its corp, the read secret, the contact-sync secret when
    /// configured, its limit and window.
    pub fn connection(&self) -> Connection {
        let g = lock(&self.shared);
        let mut c = Connection::new(
            g.cfg.corp_id.clone(),
            SecretString::from(g.cfg.secret.clone()),
        );
        c.base_url = self.base_url();
        c.contact_secret = g.cfg.contact_secret.clone().map(SecretString::from);
        if let Some(l) = g.cfg.limit.filter(|l| *l > 0) {
            c.per_minute = l;
        }
        c.rate_window = g.cfg.window;
        c
    }

    /// Pushes `change_contact` callbacks to `url` with `crypto` from now on.
    pub fn register_callback(&self, url: impl Into<String>, crypto: CallbackCrypto) {
        lock(&self.shared).callback = Some((url.into(), Arc::new(crypto)));
    }

    /// Reads or changes the data directly (no events, no counters).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.shared).data)
    }

    /// Adds a department under `parent` and returns its id.
    pub fn add_dept(&self, parent: i64, name: &str) -> i64 {
        self.with_state(|s| s.add_dept(parent, name))
    }

    /// Adds an active member with an email derived from the userid.
    pub fn add_user(&self, userid: &str, name: &str, depts: &[i64]) {
        let mut u = FakeUser::new(userid, name, depts);
        u.email = Some(format!("{userid}@fake.example"));
        self.with_state(|s| s.put_user(u));
    }

    /// A corp of `depts` departments (a tree: every tenth under the root, the others under
    /// those) and `users` members, every seventh in two departments.
    pub fn seed(&self, depts: usize, users: usize) -> Vec<i64> {
        self.with_state(|s| {
            let mut ids: Vec<i64> = Vec::with_capacity(depts);
            for i in 0..depts {
                let parent = if i % 10 == 0 || ids.is_empty() {
                    1
                } else {
                    ids[(i / 10) * 10]
                };
                ids.push(s.add_dept(parent, &format!("Dept {i:04}")));
            }
            for i in 0..users {
                let first = ids.get(i % depts.max(1)).copied().unwrap_or(1);
                let mut depts_of = vec![first];
                if i % 7 == 0 && ids.len() > 1 {
                    let second = ids[(i / 7 + 1) % ids.len()];
                    if second != first {
                        depts_of.push(second);
                    }
                }
                let mut u = FakeUser::new(format!("user{i:05}"), format!("User {i}"), &depts_of);
                u.mobile = Some(format!("138{i:08}"));
                u.email = Some(format!("user{i:05}@fake.example"));
                u.position = Some("Engineer".into());
                s.put_user(u);
            }
            ids
        })
    }

    /// Makes a change outside the API (as an admin in the console would) and pushes the
    /// events it queued.
    pub async fn change(&self, f: impl FnOnce(&mut State)) {
        let events = {
            let mut g = lock(&self.shared);
            f(&mut g.data);
            std::mem::take(&mut g.data.pending)
        };
        deliver(&self.shared, &self.http, events).await;
    }

    /// Calls the fake's own API as the console would (with its own checks), pushing the
    /// events; returns the JSON answer.
    pub async fn admin_call(&self, path: &str, query: &[(&str, &str)], body: Value) -> Value {
        let q: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (v, events) = {
            let mut g = lock(&self.shared);
            let v = g.data.call(path, &q, &body);
            (v, std::mem::take(&mut g.data.pending))
        };
        deliver(&self.shared, &self.http, events).await;
        v
    }

    /// Expires every token now.
    pub fn expire_tokens(&self) {
        let mut g = lock(&self.shared);
        g.read_tokens.expire_all();
        g.contact_tokens.expire_all();
    }

    /// The next `n` calls of `path` (e.g. `user/get`) answer `errcode`.
    pub fn fail_next(&self, path: &str, n: u32, errcode: i64) {
        lock(&self.shared).fails.push(path, n, errcode);
    }

    /// Changes the per-API limit.
    pub fn set_limit(&self, limit: Option<u32>) {
        lock(&self.shared).cfg.limit = limit;
    }

    /// Turns the 48009 new-IP restriction on or off.
    pub fn set_new_ip_restriction(&self, on: bool) {
        lock(&self.shared).cfg.new_ip_restriction = on;
    }

    /// The call counters.
    pub fn stats(&self) -> FakeStats {
        let g = lock(&self.shared);
        let mut s = g.stats.clone();
        s.tokens_issued = g.read_tokens.issued() + g.contact_tokens.issued();
        s
    }

    /// Clears the call counters.
    pub fn reset_stats(&self) {
        lock(&self.shared).stats = FakeStats::default();
    }

    /// A copy of the members.
    pub fn users(&self) -> Vec<FakeUser> {
        self.with_state(|s| s.users.values().cloned().collect())
    }

    /// A copy of the departments.
    pub fn depts(&self) -> Vec<FakeDept> {
        self.with_state(|s| s.depts.values().cloned().collect())
    }
}
