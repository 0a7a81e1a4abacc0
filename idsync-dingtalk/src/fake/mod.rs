//! A stateful fake DingTalk (legacy `oapi`) server for tests, benches and examples.
//!
//! It listens on `127.0.0.1:0` and serves the same paths, JSON shapes and types as the real
//! API notes describe: `GET /gettoken`, `POST /topapi/v2/department/{listsub,listsubid,get,
//! create,update,delete}`, `POST /topapi/v2/user/{list,get,create,update,delete}` and
//! `POST /topapi/user/listid`. On top of the data it models what a client must survive:
//!
//! * **tokens** that expire after a configurable TTL (short in tests), answered with
//!   `88`/`sub_code "40014"` (or plain `42001`), and `88`/`"40000"` when missing;
//! * **per-API QPS throttling** over a sliding one-second window, answered with the real
//!   `88`/`sub_code "90018"` body (or plain `90018`);
//! * **injected failures**: the next N calls of a path answer with a chosen errcode;
//! * **inspection**: the current departments and users, and per-path call statistics;
//! * **event pushes**: with [`FakeDingTalk::register_callback`], every successful write
//!   (`user_add_org`, `user_modify_org`, `user_leave_org`, `org_dept_create`,
//!   `org_dept_modify`, `org_dept_remove`) is pushed, encrypted and signed, to the callback
//!   URL before the API call is answered (the real service pushes shortly after).
//!
//! The layout (a plain data [`state`](FakeUser) module plus a thin axum front that does
//! tokens, throttling and failure injection) is meant as the pattern for the WeCom and Lark
//! fakes.
//!
//! ```
//! # async fn demo() -> idsync_core::Result<()> {
//! use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
//! let fake = FakeDingTalk::start(FakeConfig::default()).await?;
//! let sales = fake.add_dept(1, "Sales");
//! fake.add_user("wang.fang", "王芳", &[sales]);
//! assert_eq!(fake.users().len(), 1);
//! # Ok(()) }
//! ```

mod state;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use idsync_core::Result;
use idsync_http::Limit;
use idsync_http::fake::{FailQueue, FakeServer, RateWindows, Reply, Tally, TokenIssuer};
use secrecy::SecretString;
use serde_json::{Value, json};

pub use idsync_http::fake::{FakeStats, PathStats, RawReply};
pub use state::{FakeDept, FakeUser};
pub use stream::StreamAck;

use crate::config::{DingTalkConfig, StreamConfig};
use crate::crypto::CallbackCrypto;
use state::Directory;

/// How the fake words a throttle answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleStyle {
    /// `{"errcode":88,"sub_code":"90018",...}` (what real responses show).
    Wrapped,
    /// `{"errcode":90018,...}` (what older docs list).
    Plain,
}

/// How the fake words an expired-token answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorStyle {
    /// `{"errcode":88,"sub_code":"40014",...}`.
    Wrapped,
    /// `{"errcode":42001,"errmsg":"access_token超时"}`.
    Plain,
}

/// Settings of a fake tenant.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The AppKey `gettoken` accepts.
    pub app_key: String,
    /// The AppSecret `gettoken` accepts.
    pub app_secret: String,
    /// Token lifetime (7200 s on the real service).
    pub token_ttl: Duration,
    /// Per-API limit, calls per second over a sliding window (`None`: unlimited).
    pub qps: Option<u32>,
    /// Wording of throttle answers.
    pub throttle_style: ThrottleStyle,
    /// Wording of expired-token answers.
    pub token_error_style: TokenErrorStyle,
    /// Whether users created through the API start `active` (the real service marks them
    /// inactive until the person joins; tests usually want `true`).
    pub new_users_active: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            app_key: "dingfakeappkey".to_owned(),
            app_secret: "fake-app-secret".to_owned(),
            token_ttl: Duration::from_secs(7200),
            qps: None,
            throttle_style: ThrottleStyle::Wrapped,
            token_error_style: TokenErrorStyle::Wrapped,
            new_users_active: true,
        }
    }
}

/// A queued failure: a DingTalk error body, or a raw reply.
#[derive(Debug, Clone)]
enum Injected {
    Api {
        errcode: i64,
        sub_code: Option<String>,
    },
    Raw(RawReply),
}

struct Inner {
    cfg: FakeConfig,
    dir: Directory,
    tokens: TokenIssuer,
    windows: RateWindows,
    injected: FailQueue<Injected>,
    stats: FakeStats,
    request_seq: u64,
    callback: Option<(String, Arc<CallbackCrypto>)>,
    stream: stream::StreamHub,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake DingTalk. Dropping it stops the server.
pub struct FakeDingTalk {
    server: FakeServer,
    inner: Shared,
    stream_task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDingTalk {
    fn drop(&mut self) {
        self.stream_task.abort();
    }
}

impl std::fmt::Debug for FakeDingTalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDingTalk")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock only happens in a failing test; keep serving.
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeDingTalk {
    /// Starts a fake on `127.0.0.1:0`. Fails loudly (an error) when it cannot listen.
    pub async fn start(cfg: FakeConfig) -> Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            dir: Directory::new(cfg.new_users_active),
            windows: RateWindows::new(cfg.qps.map(Limit::per_second)),
            cfg,
            tokens: TokenIssuer::new(),
            injected: FailQueue::new(),
            stats: FakeStats::default(),
            request_seq: 0,
            callback: None,
            stream: stream::StreamHub::default(),
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start("DingTalk", app).await?;
        // the Stream gateway's WebSocket side
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| {
                idsync_core::Error::new(
                    idsync_core::ErrorKind::Unavailable,
                    "fake DingTalk: cannot listen for Stream connections",
                )
                .with_source(e)
            })?;
        lock(&inner).stream.addr = ws.local_addr().ok();
        let stream_task = tokio::spawn(stream::serve(ws, inner.clone()));
        Ok(FakeDingTalk {
            server,
            inner,
            stream_task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// A client configuration pointing at this fake, with its credentials.
    pub fn client_config(&self) -> DingTalkConfig {
        let g = lock(&self.inner);
        DingTalkConfig::new(
            g.cfg.app_key.clone(),
            SecretString::from(g.cfg.app_secret.clone()),
        )
        .with_base_url(self.base_url())
    }

    /// Pushes directory events to `url` (the app's HTTP event subscription), encrypted
    /// with `crypto` (whose owner key is usually the AppKey).
    pub fn register_callback(&self, url: impl Into<String>, crypto: CallbackCrypto) {
        lock(&self.inner).callback = Some((url.into(), Arc::new(crypto)));
    }

    /// Stream mode settings pointing at this fake (quick reconnects, 1 s keep-alive).
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            base_url: self.base_url(),
            keepalive_secs: 1,
            reconnect_min_ms: 50,
            reconnect_max_secs: 1,
            ..StreamConfig::default()
        }
    }

    /// Sends an `EVENT` frame (`data` holds the ids, e.g. `{"userId": ["u1"]}`) to every
    /// connected Stream client; returns its `eventId`.
    pub fn stream_event(&self, event_type: &str, data: &Value) -> String {
        let mut r = [0u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut r);
        let event_id: String = r.iter().map(|b| format!("{b:02x}")).collect();
        self.stream_event_with_id(&event_id, event_type, data);
        event_id
    }

    /// [`stream_event`](FakeDingTalk::stream_event) with a given `eventId` (a redelivery);
    /// returns the frame's `messageId`.
    pub fn stream_event_with_id(&self, event_id: &str, event_type: &str, data: &Value) -> String {
        let mut g = lock(&self.inner);
        let mid = g.stream.message_id();
        let frame = stream::event_frame(&mid, event_id, event_type, &g.cfg.app_key, data);
        g.stream.broadcast(&frame);
        mid
    }

    /// Sends a `SYSTEM` `ping` frame carrying `data`; returns its `messageId`.
    pub fn stream_ping(&self, data: &Value) -> String {
        let mut g = lock(&self.inner);
        let mid = g.stream.message_id();
        g.stream
            .broadcast(&stream::system_frame(&mid, "ping", data));
        mid
    }

    /// Sends a `SYSTEM` `disconnect` frame: clients should reconnect.
    pub fn stream_disconnect(&self) {
        let mut g = lock(&self.inner);
        let mid = g.stream.message_id();
        g.stream
            .broadcast(&stream::system_frame(&mid, "disconnect", &json!({})));
    }

    /// The acks Stream clients sent so far.
    pub fn stream_acks(&self) -> Vec<StreamAck> {
        lock(&self.inner).stream.acks.clone()
    }

    /// Stream connections accepted so far.
    pub fn stream_connections(&self) -> u64 {
        lock(&self.inner).stream.connections
    }

    /// Stream clients connected now.
    pub fn stream_clients(&self) -> usize {
        lock(&self.inner).stream.clients()
    }

    /// Changes the QPS limit while running.
    pub fn set_qps(&self, qps: Option<u32>) {
        let mut g = lock(&self.inner);
        g.cfg.qps = qps;
        g.windows.set_default(qps.map(Limit::per_second));
    }

    /// Changes the token lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.inner).cfg.token_ttl = ttl;
    }

    /// Expires every issued token now.
    pub fn expire_tokens(&self) {
        lock(&self.inner).tokens.expire_all();
    }

    /// The next `n` calls of `path` answer with `errcode` (and `sub_code` when given).
    pub fn fail_next(&self, path: &str, n: u32, errcode: i64, sub_code: Option<&str>) {
        lock(&self.inner).injected.push(
            path,
            n,
            Injected::Api {
                errcode,
                sub_code: sub_code.map(str::to_owned),
            },
        );
    }

    /// The next `n` calls of `path` get `reply` instead of a DingTalk answer: a bare
    /// status, a body that is not JSON, an oversized body (what proxies and gateways send).
    pub fn fail_next_raw(&self, path: &str, n: u32, reply: RawReply) {
        lock(&self.inner)
            .injected
            .push(path, n, Injected::Raw(reply));
    }

    /// Adds a department under `parent`, returns its id.
    pub fn add_dept(&self, parent: i64, name: &str) -> i64 {
        let mut g = lock(&self.inner);
        let id = g.dir.next_dept_id;
        g.dir.next_dept_id += 1;
        g.dir
            .depts
            .insert(id, FakeDept::new(id, Some(parent), name));
        id
    }

    /// Inserts or replaces a department as given.
    pub fn put_dept(&self, dept: FakeDept) {
        let mut g = lock(&self.inner);
        if dept.dept_id >= g.dir.next_dept_id {
            g.dir.next_dept_id = dept.dept_id + 1;
        }
        g.dir.depts.insert(dept.dept_id, dept);
    }

    /// Adds an active user with a generated mobile, returns its `userid`.
    pub fn add_user(&self, userid: &str, name: &str, depts: &[i64]) -> String {
        let mut g = lock(&self.inner);
        let seq = g.dir.next_seq;
        g.dir.next_seq += 1;
        let u = FakeUser {
            userid: userid.to_owned(),
            unionid: format!("union{seq:08}"),
            name: name.to_owned(),
            mobile: Some(format!("138{seq:08}")),
            dept_id_list: depts.to_vec(),
            active: true,
            seq,
            ..FakeUser::default()
        };
        g.dir.users.insert(userid.to_owned(), u);
        userid.to_owned()
    }

    /// Inserts or replaces a user as given (its `seq` is assigned).
    pub fn put_user(&self, mut user: FakeUser) {
        let mut g = lock(&self.inner);
        user.seq = g.dir.next_seq;
        g.dir.next_seq += 1;
        g.dir.users.insert(user.userid.clone(), user);
    }

    /// Makes `userid` a leader (`dept_manager_userid_list`) of `dept_id`.
    pub fn set_leader(&self, dept_id: i64, userid: &str) {
        let mut g = lock(&self.inner);
        if let Some(d) = g.dir.depts.get_mut(&dept_id) {
            if !d.manager_userids.iter().any(|m| m == userid) {
                d.manager_userids.push(userid.to_owned());
            }
        }
    }

    /// Seeds `depts` departments (a tree three levels deep at most) and `users` users
    /// spread over them; every 10th user also sits in a second department. Returns the
    /// department ids.
    pub fn seed(&self, depts: usize, users: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = Vec::with_capacity(depts);
        for i in 0..depts {
            // the first 10 under the root, the next under one of the first 10, and so on
            let parent = if i < 10 {
                1
            } else {
                ids[(i - 10) / 10 % ids.len().max(1)]
            };
            ids.push(self.add_dept(parent, &format!("部门{i:04}")));
        }
        for i in 0..users {
            let primary = ids.get(i % ids.len().max(1)).copied().unwrap_or(1);
            let mut dl = vec![primary];
            if i % 10 == 9 && ids.len() > 1 {
                let second = ids[(i / 10) % ids.len()];
                if second != primary {
                    dl.push(second);
                }
            }
            let id = self.add_user(&format!("user{i:05}"), &format!("用户{i:05}"), &dl);
            if i % 3 == 0 {
                let mut g = lock(&self.inner);
                if let Some(u) = g.dir.users.get_mut(&id) {
                    u.email = Some(format!("user{i:05}@example.com"));
                    u.job_number = Some(format!("E{i:05}"));
                    u.title = Some("工程师".to_owned());
                }
            }
        }
        ids
    }

    /// A copy of every department.
    pub fn depts(&self) -> Vec<FakeDept> {
        lock(&self.inner).dir.depts.values().cloned().collect()
    }

    /// A copy of every user.
    pub fn users(&self) -> Vec<FakeUser> {
        lock(&self.inner).dir.users.values().cloned().collect()
    }

    /// One user.
    pub fn user(&self, userid: &str) -> Option<FakeUser> {
        lock(&self.inner).dir.users.get(userid).cloned()
    }

    /// One department.
    pub fn dept(&self, dept_id: i64) -> Option<FakeDept> {
        lock(&self.inner).dir.depts.get(&dept_id).cloned()
    }

    /// Changes a user in place (as an admin would in the console).
    pub fn modify_user(&self, userid: &str, f: impl FnOnce(&mut FakeUser)) -> bool {
        let mut g = lock(&self.inner);
        match g.dir.users.get_mut(userid) {
            Some(u) => {
                f(u);
                true
            }
            None => false,
        }
    }

    /// Removes a user directly (as an admin would in the console).
    pub fn remove_user(&self, userid: &str) -> bool {
        let mut g = lock(&self.inner);
        for d in g.dir.depts.values_mut() {
            d.manager_userids.retain(|m| m != userid);
        }
        g.dir.users.remove(userid).is_some()
    }

    /// Call statistics so far.
    pub fn stats(&self) -> FakeStats {
        lock(&self.inner).stats.clone()
    }

    /// Forgets the call statistics.
    pub fn reset_stats(&self) {
        lock(&self.inner).stats = FakeStats::default();
    }
}

fn error_body(request_id: &str, errcode: i64, sub_code: Option<&str>, msg: &str) -> Value {
    match sub_code {
        Some(sub) => json!({
            "errcode": errcode,
            "sub_code": sub,
            "sub_msg": msg,
            "errmsg": format!("ding talk error[subcode={sub},submsg={msg}]"),
            "request_id": request_id,
        }),
        None => json!({"errcode": errcode, "errmsg": msg, "request_id": request_id}),
    }
}

async fn handle(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let now = Instant::now();
    let (answer, push) = {
        let mut g = lock(&inner);
        g.request_seq += 1;
        let request_id = format!("fake{:08x}", g.request_seq);
        g.stats.call(&path, now);
        let answer = process(&mut g, &method, &path, &query, &body, now, &request_id);
        let push = match &answer {
            Outcome::Ok(v) => {
                g.stats.tally(&path, Tally::Ok);
                event_for(&path, &body, v)
            }
            Outcome::Err(how, _) => {
                g.stats.tally(&path, *how);
                None
            }
        };
        let push = push.and_then(|ev| g.callback.clone().map(|cb| (cb, ev)));
        (answer, push)
    };
    if let Some(((url, crypto), event)) = push {
        let delivered = deliver(&url, &crypto, &event).await;
        let mut g = lock(&inner);
        if delivered {
            g.stats.events_delivered += 1;
        } else {
            g.stats.events_failed += 1;
        }
    }
    match answer {
        Outcome::Ok(v) => Reply::Json(v).into_response(),
        Outcome::Err(_, r) => r.into_response(),
    }
}

/// The event a successful write causes (legacy HTTP payload format).
fn event_for(path: &str, body: &[u8], answer: &Value) -> Option<Value> {
    let req: Value = serde_json::from_slice(body).ok()?;
    let (event_type, user) = match path {
        "/topapi/v2/user/create" => ("user_add_org", true),
        "/topapi/v2/user/update" => ("user_modify_org", true),
        "/topapi/v2/user/delete" => ("user_leave_org", true),
        "/topapi/v2/department/create" => ("org_dept_create", false),
        "/topapi/v2/department/update" => ("org_dept_modify", false),
        "/topapi/v2/department/delete" => ("org_dept_remove", false),
        _ => return None,
    };
    let stamp = chrono::Utc::now().timestamp_millis().to_string();
    if user {
        let id = answer
            .pointer("/result/userid")
            .or_else(|| req.get("userid"))?
            .clone();
        Some(
            json!({"EventType": event_type, "UserId": [id], "CorpId": "dingfakecorp",
                    "OptStaffId": "manager01", "TimeStamp": stamp}),
        )
    } else {
        let id = answer
            .pointer("/result/dept_id")
            .or_else(|| req.get("dept_id"))?
            .clone();
        Some(
            json!({"EventType": event_type, "DeptId": [id], "CorpId": "dingfakecorp",
                    "TimeStamp": stamp}),
        )
    }
}

/// Pushes one event as DingTalk does; true when answered with an encrypted `success`.
async fn deliver(url: &str, crypto: &CallbackCrypto, event: &Value) -> bool {
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let mut r = [0u8; 6];
    rand::Rng::fill(&mut rand::rng(), &mut r);
    let nonce: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let Ok((query, body)) =
        crate::crypto::seal_event(crypto, &event.to_string(), &timestamp, &nonce)
    else {
        return false;
    };
    let Ok(resp) = reqwest::Client::new()
        .post(url)
        .query(&query)
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    if !resp.status().is_success() {
        return false;
    }
    let Ok(reply) = resp.json::<Value>().await else {
        return false;
    };
    reply
        .get("encrypt")
        .and_then(Value::as_str)
        .and_then(|e| crypto.decrypt(e).ok())
        .is_some_and(|d| d.message == "success")
}

enum Outcome {
    Ok(Value),
    Err(Tally, Reply),
}

fn api_err(rid: &str, errcode: i64, sub_code: Option<&str>, msg: &str) -> Reply {
    Reply::Json(error_body(rid, errcode, sub_code, msg))
}

fn process(
    g: &mut Inner,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    now: Instant,
    rid: &str,
) -> Outcome {
    // injected failures first
    if let Some(f) = g.injected.take(path) {
        let reply = match f {
            Injected::Api { errcode, sub_code } => {
                api_err(rid, errcode, sub_code.as_deref(), "injected failure")
            }
            Injected::Raw(r) => Reply::Raw(r),
        };
        return Outcome::Err(Tally::Injected, reply);
    }
    // per-API QPS over a sliding window, answered with the real throttle body
    if g.windows.admit(path, now).is_err() {
        let until = chrono::Utc::now() + chrono::Duration::seconds(1);
        let msg = format!(
            "您的企业调用钉钉开放平台当前接口次数过多，请求被暂时禁用了，限制将在 {} 结束",
            until.format("%Y-%m-%d %H:%M:%S")
        );
        let body = match g.cfg.throttle_style {
            ThrottleStyle::Wrapped => api_err(rid, 88, Some("90018"), &msg),
            ThrottleStyle::Plain => api_err(rid, 90018, None, &msg),
        };
        return Outcome::Err(Tally::Throttled, body);
    }
    if path == crate::stream::OPEN_PATH {
        return stream_open(g, method, body, rid);
    }
    if path == "/gettoken" {
        if method != Method::GET {
            return Outcome::Err(Tally::Api, api_err(rid, 22, None, "method not allowed"));
        }
        return gettoken(g, query, now, rid);
    }
    if method != Method::POST {
        return Outcome::Err(Tally::Api, api_err(rid, 22, None, "method not allowed"));
    }
    // token check
    match query.get("access_token").filter(|t| !t.is_empty()) {
        None => {
            return Outcome::Err(
                Tally::Token,
                api_err(rid, 88, Some("40000"), "access_token is blank"),
            );
        }
        Some(t) => {
            if !g.tokens.is_valid(t, now) {
                let body = match g.cfg.token_error_style {
                    TokenErrorStyle::Wrapped => {
                        api_err(rid, 88, Some("40014"), "不合法的access_token")
                    }
                    TokenErrorStyle::Plain => api_err(rid, 42001, None, "access_token超时"),
                };
                return Outcome::Err(Tally::Token, body);
            }
        }
    }
    let json: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return Outcome::Err(Tally::Api, api_err(rid, 400002, None, "无效的参数"));
            }
        }
    };
    match g.dir.call(path, &json) {
        Ok(result) => {
            let mut out = json!({"errcode": 0, "errmsg": "ok", "request_id": rid});
            if let Some(r) = result {
                out["result"] = r;
            }
            Outcome::Ok(out)
        }
        Err((code, sub, msg)) => Outcome::Err(Tally::Api, api_err(rid, code, sub.as_deref(), &msg)),
    }
}

/// `POST /v1.0/gateway/connections/open`: the new API's shapes (HTTP 400 with `code`).
fn stream_open(g: &mut Inner, method: &Method, body: &[u8], rid: &str) -> Outcome {
    let bad = |code: &str, msg: &str| {
        Outcome::Err(
            Tally::Api,
            Reply::JsonStatus(400, json!({"code": code, "message": msg, "requestid": rid})),
        )
    };
    if method != Method::POST {
        return bad("MethodNotAllowed", "POST only");
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad("InvalidParameter", "body is not JSON");
    };
    let ok = req.get("clientId").and_then(Value::as_str) == Some(g.cfg.app_key.as_str())
        && req.get("clientSecret").and_then(Value::as_str) == Some(g.cfg.app_secret.as_str());
    if !ok {
        return bad("invalidClientIdOrSecret", "无效的clientId或者clientSecret");
    }
    let Some(addr) = g.stream.addr else {
        return bad("ServiceUnavailable", "no Stream gateway");
    };
    let ticket = g.stream.ticket();
    Outcome::Ok(json!({"endpoint": format!("ws://{addr}/connect"), "ticket": ticket}))
}

fn gettoken(g: &mut Inner, query: &HashMap<String, String>, now: Instant, rid: &str) -> Outcome {
    let ok = query.get("appkey") == Some(&g.cfg.app_key)
        && query.get("appsecret") == Some(&g.cfg.app_secret);
    if !ok {
        return Outcome::Err(
            Tally::Api,
            api_err(rid, 40096, None, "不合法的appKey或appSecret"),
        );
    }
    let ttl = g.cfg.token_ttl;
    // Repeated calls inside the validity return the same token and renew it.
    let token = g.tokens.issue(now, ttl, true);
    g.stats.tokens_issued += 1;
    Outcome::Ok(json!({
        "errcode": 0,
        "access_token": token,
        "errmsg": "ok",
        "expires_in": ttl.as_secs().max(1),
    }))
}
