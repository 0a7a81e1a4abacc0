//! [`ScimClient`]: the hub provisions a SCIM app. A [`Sink`] (and a [`Source`], to read the
//! app's users back) over any SCIM 2.0 service provider.
//!
//! * **Match before create**: a create first looks for the user by `userName` (or by
//!   `externalId`, [`MatchBy`]); a 404 on the lookup counts as "none". Found → adopted
//!   (updated in place). Not found → POST; a 409 on the POST re-queries and adopts.
//! * **Updates** are a PATCH of the changed fields in the RFC shape (`replace` with a path
//!   per attribute, `remove` for cleared ones), or, for apps that do not take PATCH, a GET +
//!   PUT of the whole resource ([`TargetConfig::put_only`]).
//! * **Deprovisioning** sets `active=false`; [`TargetConfig::hard_delete`] deletes instead.
//! * Errors keep their meaning for the layers: 429 is `RateLimited` (with `Retry-After`),
//!   5xx and transport failures are temporary `Unavailable`, 401/403 permanent, 404
//!   `NotFound`, 409 `AlreadyExists`. Wrap the client in the retry layer to retry them.
//! * A **circuit breaker** quarantines the target when most of the recent operations failed
//!   ([`TargetConfig::breaker`]): further operations fail fast with a temporary
//!   `Unavailable` until the cool-down has passed.
//! * Auth: a bearer token, or OAuth2 client credentials (the token is fetched, cached until
//!   shortly before it expires, and fetched again on a 401). Secrets are read from an
//!   environment variable or a file, never written in the config.
//!
//! The app's groups are not provisioned: the client's capabilities say `orgs: false`, so
//! the engine syncs accounts only (SCIM groups are flat; the hub's org tree does not fit).
//!
//! Field mapping: `userName` ← username, `displayName`, `title`, `active` ← status, one
//! `emails` value (work, primary) ← email, one `phoneNumbers` value (work, primary) ←
//! phone, `externalId` ← the hub anchor, enterprise `employeeNumber` ← employee id and
//! `manager.value` ← the manager's id in the app.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use idsync_core::{
    Account, Anchor, Applied, Capabilities, Descriptor, Error, ErrorKind, Op, Org, Page,
    PageRequest, PageToken, Patch, Result, Sink, Source, Status,
};

use crate::schema::{ENTERPRISE, LIST, PATCH_OP, USER};

/// How a create finds an existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    /// `userName eq "<username>"` (the default).
    #[default]
    UserName,
    /// `externalId eq "<hub anchor>"`.
    ExternalId,
}

/// Secrets by reference: `{ env = "VAR" }` or `{ file = "path" }` (the one type every
/// provider config shares).
pub use idsync_core::secret::SecretRef;

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A static bearer token.
    Bearer {
        /// Where the token is.
        token: SecretRef,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4).
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// Where the client secret is.
        client_secret: SecretRef,
        /// The scope to ask for.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// The circuit breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// How many recent operations are looked at.
    pub window: usize,
    /// The share of them (0–1) that must have failed to open the breaker.
    pub failure_ratio: f64,
    /// How long the target stays quarantined, in seconds.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            failure_ratio: 0.8,
            cooldown_secs: 60,
        }
    }
}

fn default_timeout() -> u64 {
    30
}

/// A SCIM target (`type = "scim"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The SCIM root, e.g. `https://app.example/scim/v2`.
    pub base_url: String,
    /// How to authenticate.
    pub auth: AuthConfig,
    /// How creates find existing users.
    #[serde(default)]
    pub match_by: MatchBy,
    /// Update with GET + PUT instead of PATCH.
    #[serde(default)]
    pub put_only: bool,
    /// Deprovision with DELETE instead of `active=false`.
    #[serde(default)]
    pub hard_delete: bool,
    /// Page size of listings (default: what the server returns).
    #[serde(default)]
    pub page_size: Option<usize>,
    /// Request timeout in seconds (30).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

impl TargetConfig {
    /// A target with a bearer token read from environment variable `token_env`.
    pub fn bearer(base_url: impl Into<String>, token_env: impl Into<String>) -> Self {
        TargetConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            auth: AuthConfig::Bearer {
                token: SecretRef::Env(token_env.into()),
            },
            match_by: MatchBy::default(),
            put_only: false,
            hard_delete: false,
            page_size: None,
            timeout_secs: default_timeout(),
            breaker: BreakerConfig::default(),
        }
    }
}

enum Auth {
    Bearer(SecretString),
    Oauth2 {
        token_url: String,
        client_id: String,
        secret: SecretString,
        scope: Option<String>,
        cached: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
    },
}

struct Breaker {
    cfg: BreakerConfig,
    recent: VecDeque<bool>,
    open_until: Option<Instant>,
}

/// A SCIM 2.0 service provider as a sink and a source.
pub struct ScimClient {
    cfg: TargetConfig,
    http: reqwest::Client,
    auth: Auth,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.cfg.base_url)
            .field("put_only", &self.cfg.put_only)
            .field("hard_delete", &self.cfg.hard_delete)
            .finish_non_exhaustive()
    }
}

const PROVIDER: &str = "scim";

fn transport(e: reqwest::Error, what: &str) -> Error {
    // The error's URL is left out: it could carry a query string.
    let e = Error::new(
        ErrorKind::Unavailable,
        format!("{what}: {}", e.without_url()),
    )
    .with_provider(PROVIDER);
    e.temporary()
}

impl ScimClient {
    /// A client for `cfg`. Reads the secrets now.
    pub fn new(cfg: TargetConfig) -> Result<Self> {
        let auth = match &cfg.auth {
            AuthConfig::Bearer { token } => Auth::Bearer(token.read("scim auth.token")?),
            AuthConfig::Oauth2 {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Auth::Oauth2 {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                secret: client_secret.read("scim auth.client_secret")?,
                scope: scope.clone(),
                cached: tokio::sync::Mutex::new(None),
            },
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
            .build()
            .map_err(|e| Error::config(format!("scim: cannot build the HTTP client: {e}")))?;
        let mut cfg = cfg;
        cfg.base_url = cfg.base_url.trim_end_matches('/').to_owned();
        Ok(ScimClient {
            breaker: Mutex::new(Breaker {
                cfg: cfg.breaker,
                recent: VecDeque::new(),
                open_until: None,
            }),
            cfg,
            http,
            auth,
        })
    }

    async fn token(&self, refresh: bool) -> Result<SecretString> {
        match &self.auth {
            Auth::Bearer(t) => Ok(t.clone()),
            Auth::Oauth2 {
                token_url,
                client_id,
                secret,
                scope,
                cached,
            } => {
                let mut c = cached.lock().await;
                if !refresh
                    && let Some((t, until)) = c.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(t.clone());
                }
                let mut form = vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.expose_secret().to_owned()),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s.clone()));
                }
                let r = self
                    .http
                    .post(token_url)
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| transport(e, "oauth2 token request"))?;
                let status = r.status();
                if !status.is_success() {
                    return Err(status_error(status, None, "oauth2 token request", "")
                        .with_context("token_url", token_url.as_str()));
                }
                let v: Value = r
                    .json()
                    .await
                    .map_err(|e| transport(e, "oauth2 token response"))?;
                let token = v
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::invalid_data("oauth2 token response has no access_token")
                            .with_provider(PROVIDER)
                    })?;
                let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
                let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1));
                let t = SecretString::from(token.to_owned());
                *c = Some((t.clone(), until));
                Ok(t)
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    fn breaker_check(&self) -> Result<()> {
        let mut b = self
            .breaker
            .lock()
            .map_err(|_| Error::unexpected("scim: breaker lock poisoned"))?;
        if let Some(until) = b.open_until {
            if Instant::now() < until {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "scim: target quarantined: most recent operations failed",
                )
                .with_provider(PROVIDER)
                .with_retry_after(until - Instant::now())
                .temporary());
            }
            b.open_until = None;
            b.recent.clear();
        }
        Ok(())
    }

    fn breaker_record(&self, ok: bool) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        let window = b.cfg.window.max(1);
        b.recent.push_back(ok);
        while b.recent.len() > window {
            b.recent.pop_front();
        }
        let failed = b.recent.iter().filter(|x| !**x).count();
        if b.recent.len() >= window && failed as f64 >= b.cfg.failure_ratio * window as f64 {
            b.open_until = Some(Instant::now() + Duration::from_secs(b.cfg.cooldown_secs));
            tracing::warn!(target_url = %self.cfg.base_url, failed, window, "scim target quarantined");
        }
    }

    /// One request; the JSON answer (`Null` for 204). A 401 with OAuth2 fetches a new token
    /// once.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut refreshed = false;
        loop {
            let token = self.token(refreshed).await?;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(token.expose_secret())
                .header("accept", "application/scim+json, application/json");
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/scim+json")
                    .body(b.to_string());
            }
            let what = format!("{method} {}", path_only(path));
            let r = req.send().await.map_err(|e| transport(e, &what))?;
            let status = r.status();
            if status == StatusCode::UNAUTHORIZED
                && !refreshed
                && matches!(self.auth, Auth::Oauth2 { .. })
            {
                refreshed = true;
                continue;
            }
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = r.text().await.map_err(|e| transport(e, &what))?;
            if !status.is_success() {
                let detail = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| {
                        let d = v.get("detail").and_then(Value::as_str).map(str::to_owned);
                        let t = v.get("scimType").and_then(Value::as_str).map(str::to_owned);
                        match (d, t) {
                            (Some(d), Some(t)) => Some(format!("{d} (scimType {t})")),
                            (Some(d), None) => Some(d),
                            (None, Some(t)) => Some(format!("scimType {t}")),
                            (None, None) => None,
                        }
                    })
                    .unwrap_or_default();
                return Err(status_error(status, retry_after, &what, &detail));
            }
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                Error::invalid_data(format!("{what}: the answer is not JSON: {e}"))
                    .with_provider(PROVIDER)
            });
        }
    }

    /// The users matching `filter` (a 404 on the search counts as none).
    async fn search(&self, filter: &str) -> Result<Vec<Value>> {
        let path = format!("/Users?filter={}&count=10", urlencode(filter));
        match self.call(Method::GET, &path, None).await {
            Ok(v) => Ok(v
                .get("Resources")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn find_existing(&self, a: &Account) -> Result<Option<Value>> {
        let filter = match self.cfg.match_by {
            MatchBy::UserName => format!("userName eq {}", quote(&a.username)),
            MatchBy::ExternalId => format!("externalId eq {}", quote(a.anchor.as_str())),
        };
        Ok(self.search(&filter).await?.into_iter().next())
    }

    async fn create(&self, a: &Account) -> Result<Applied> {
        let body = user_json(a);
        if let Some(found) = self.find_existing(a).await? {
            return self.adopt(&found, &body).await;
        }
        match self.call(Method::POST, "/Users", Some(&body)).await {
            Ok(v) => Ok(Applied::with_anchor(id_of(&v)?)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Created meanwhile, or taken under a match rule that did not find it:
                // the userName is what collides, so look it up by that and adopt it.
                let filter = format!("userName eq {}", quote(&a.username));
                let found = self.search(&filter).await?.into_iter().next().ok_or(e)?;
                self.adopt(&found, &body).await
            }
            Err(e) => Err(e),
        }
    }

    async fn adopt(&self, found: &Value, body: &Value) -> Result<Applied> {
        let id = id_of(found)?;
        let mut full = body.clone();
        full["id"] = json!(id.as_str());
        self.call(Method::PUT, &format!("/Users/{}", seg(&id)), Some(&full))
            .await?;
        Ok(Applied::with_anchor(id))
    }

    async fn update(&self, id: &Anchor, changes: &Patch) -> Result<Applied> {
        if self.cfg.put_only {
            let path = format!("/Users/{}", seg(id));
            let current = self.call(Method::GET, &path, None).await?;
            let mut a = account_of(&current)?;
            for (f, v) in changes {
                idsync_core::Entity::set(&mut a, f, v.clone())?;
            }
            let mut body = user_json(&a);
            if let Some(x) = current.get("externalId") {
                body["externalId"] = x.clone();
            }
            body["id"] = json!(id.as_str());
            self.call(Method::PUT, &path, Some(&body)).await?;
            return Ok(Applied::with_anchor(id.clone()));
        }
        let ops = patch_ops(changes);
        if ops.is_empty() {
            return Ok(Applied::with_anchor(id.clone()));
        }
        self.call(
            Method::PATCH,
            &format!("/Users/{}", seg(id)),
            Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await?;
        Ok(Applied::with_anchor(id.clone()))
    }

    async fn apply_inner(&self, op: &Op) -> Result<Applied> {
        match op {
            Op::CreateAccount { account } => self.create(account).await,
            Op::UpdateAccount { anchor, changes } => self.update(anchor, changes).await,
            Op::DisableAccount { anchor } | Op::EnableAccount { anchor } => {
                let active = matches!(op, Op::EnableAccount { .. });
                let mut p = Patch::new();
                p.insert(
                    "status".into(),
                    json!(if active { "active" } else { "disabled" }),
                );
                self.update(anchor, &p).await
            }
            Op::DeleteAccount { anchor } => {
                if self.cfg.hard_delete {
                    self.call(Method::DELETE, &format!("/Users/{}", seg(anchor)), None)
                        .await?;
                    Ok(Applied::with_anchor(anchor.clone()))
                } else {
                    let mut p = Patch::new();
                    p.insert("status".into(), json!("disabled"));
                    self.update(anchor, &p).await
                }
            }
            Op::CreateOrg { .. }
            | Op::UpdateOrg { .. }
            | Op::MoveOrg { .. }
            | Op::DeleteOrg { .. } => Err(Error::unsupported(
                "scim client: orgs are not provisioned (capabilities say orgs: false)",
            )
            .with_provider(PROVIDER)),
        }
    }
}

fn path_only(p: &str) -> &str {
    p.split('?').next().unwrap_or(p)
}

fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    what: &str,
    detail: &str,
) -> Error {
    let kind = match status.as_u16() {
        400 | 422 => ErrorKind::InvalidData,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::AlreadyExists,
        412 => ErrorKind::Conflict,
        429 => ErrorKind::RateLimited,
        s if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::Unexpected,
    };
    let msg = if detail.is_empty() {
        format!("{what}: HTTP {}", status.as_u16())
    } else {
        format!("{what}: HTTP {}: {detail}", status.as_u16())
    };
    let mut e = Error::new(kind, msg)
        .with_provider(PROVIDER)
        .with_provider_code(status.as_u16().to_string());
    if matches!(kind, ErrorKind::RateLimited | ErrorKind::Unavailable) {
        e = e.temporary();
        if let Some(d) = retry_after {
            e = e.with_retry_after(d);
        }
    } else {
        e = e.permanent();
    }
    e
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An id as one URL path segment.
fn seg(a: &Anchor) -> String {
    urlencode(a.as_str())
}

fn id_of(v: &Value) -> Result<Anchor> {
    v.get("id")
        .and_then(Value::as_str)
        .map(Anchor::from)
        .ok_or_else(|| {
            Error::invalid_data("scim: a resource without an id").with_provider(PROVIDER)
        })
}

/// The SCIM User for an account.
pub fn user_json(a: &Account) -> Value {
    let mut u = json!({
        "schemas": [USER],
        "userName": a.username,
        "active": a.status == Status::Active,
        "externalId": a.anchor.as_str(),
    });
    if let Some(d) = &a.display_name {
        u["displayName"] = json!(d);
    }
    if let Some(t) = &a.title {
        u["title"] = json!(t);
    }
    if let Some(e) = &a.email {
        u["emails"] = json!([{"value": e, "type": "work", "primary": true}]);
    }
    if let Some(p) = &a.phone {
        u["phoneNumbers"] = json!([{"value": p, "type": "work", "primary": true}]);
    }
    let mut ext = serde_json::Map::new();
    if let Some(n) = &a.employee_id {
        ext.insert("employeeNumber".into(), json!(n));
    }
    if let Some(m) = &a.manager {
        ext.insert("manager".into(), json!({"value": m.as_str()}));
    }
    if !ext.is_empty() {
        u[ENTERPRISE] = Value::Object(ext);
        u["schemas"] = json!([USER, ENTERPRISE]);
    }
    u
}

fn primary(v: &Value, key: &str) -> Option<String> {
    let items = v.get(key)?.as_array()?;
    let i = items
        .iter()
        .find(|i| i.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| items.first())?;
    i.get("value")?.as_str().map(str::to_owned)
}

/// The account for a SCIM User (anchor = the app's id).
pub fn account_of(v: &Value) -> Result<Account> {
    let id = id_of(v)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let ext = v.get(ENTERPRISE);
    let mut a = Account::new(id, s("userName").unwrap_or_default());
    a.display_name = s("displayName");
    a.title = s("title");
    a.email = primary(v, "emails");
    a.phone = primary(v, "phoneNumbers");
    a.employee_id = ext
        .and_then(|e| e.get("employeeNumber"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    a.manager = ext
        .and_then(|e| e.get("manager"))
        .and_then(|m| m.get("value"))
        .and_then(Value::as_str)
        .map(Anchor::from);
    a.status = match v.get("active") {
        Some(Value::Bool(false)) => Status::Disabled,
        Some(Value::String(x)) if x.eq_ignore_ascii_case("false") => Status::Disabled,
        _ => Status::Active,
    };
    Ok(a)
}

/// PATCH operations (RFC 7644 §3.5.2) for changed account fields.
pub fn patch_ops(changes: &Patch) -> Vec<Value> {
    let mut ops = Vec::new();
    for (f, v) in changes {
        let (path, value): (String, Option<Value>) = match f.as_str() {
            "username" => ("userName".into(), v.as_str().map(|s| json!(s))),
            "display_name" => ("displayName".into(), v.as_str().map(|s| json!(s))),
            "title" => ("title".into(), v.as_str().map(|s| json!(s))),
            "email" => (
                "emails".into(),
                v.as_str()
                    .map(|s| json!([{"value": s, "type": "work", "primary": true}])),
            ),
            "phone" => (
                "phoneNumbers".into(),
                v.as_str()
                    .map(|s| json!([{"value": s, "type": "work", "primary": true}])),
            ),
            "employee_id" => (
                format!("{ENTERPRISE}:employeeNumber"),
                v.as_str().map(|s| json!(s)),
            ),
            "manager" => (
                format!("{ENTERPRISE}:manager"),
                v.as_str().map(|s| json!({"value": s})),
            ),
            "status" => (
                "active".into(),
                Some(json!(v.as_str() != Some("disabled") && v != &json!(false))),
            ),
            // orgs and attributes have no SCIM counterpart here
            _ => continue,
        };
        ops.push(match value {
            Some(val) => json!({"op": "replace", "path": path, "value": val}),
            None => json!({"op": "remove", "path": path}),
        });
    }
    ops
}

#[async_trait]
impl Source for ScimClient {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.cfg.base_url.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            orgs: false,
            move_org: false,
            assigns_anchors: true,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        self.call(Method::GET, "/ServiceProviderConfig", None)
            .await
            .map(|_| ())
    }

    async fn orgs(&self, _page: PageRequest) -> Result<Page<Org>> {
        Ok(Page::last(Vec::new()))
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let start: usize = match &page.token {
            Some(t) => t.0.parse().map_err(|_| {
                Error::invalid_data("scim: malformed page token").with_provider(PROVIDER)
            })?,
            None => 1,
        };
        let count = page.size.or(self.cfg.page_size).unwrap_or(100);
        let v = self
            .call(
                Method::GET,
                &format!("/Users?startIndex={start}&count={count}"),
                None,
            )
            .await?;
        if v.get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.iter().any(|x| x == LIST))
        {
            return Err(
                Error::invalid_data("scim: GET /Users did not answer a ListResponse")
                    .with_provider(PROVIDER),
            );
        }
        let items: Vec<Account> = v
            .get("Resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(account_of)
            .collect::<Result<_>>()?;
        let total = v
            .get("totalResults")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                Error::invalid_data("scim: a ListResponse without totalResults")
                    .with_provider(PROVIDER)
            })? as usize;
        let next_start = start + items.len();
        if items.is_empty() && next_start <= total {
            return Err(Error::new(
                ErrorKind::Incomplete,
                format!("scim: an empty page at {start} of {total} users"),
            )
            .with_provider(PROVIDER));
        }
        Ok(Page {
            items,
            next: (next_start <= total).then(|| PageToken(next_start.to_string())),
        })
    }

    async fn org(&self, _anchor: &Anchor) -> Result<Option<Org>> {
        Ok(None)
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        match self
            .call(Method::GET, &format!("/Users/{}", seg(anchor)), None)
            .await
        {
            Ok(v) => account_of(&v).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        let attr = match field {
            "username" => "userName",
            "email" => "emails.value",
            "employee_id" => {
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
            }
            "display_name" => "displayName",
            "anchor" => "id",
            other => {
                return Err(
                    Error::unsupported(format!("scim: cannot search users by {other}"))
                        .with_provider(PROVIDER),
                );
            }
        };
        let found = self
            .search(&format!("{attr} eq {}", quote(value.trim())))
            .await?;
        found.iter().map(account_of).collect()
    }
}

#[async_trait]
impl Sink for ScimClient {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.breaker_check()?;
        let r = self.apply_inner(op).await;
        // Refusals of one op (bad data, not found) say nothing about the target's health.
        let healthy = match &r {
            Ok(_) => true,
            Err(e) => !e.is_temporary() && e.kind() != ErrorKind::Unauthenticated,
        };
        self.breaker_record(healthy);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_ops_have_the_rfc_shape() {
        let mut p = Patch::new();
        p.insert("email".into(), json!("a@x.example"));
        p.insert("title".into(), Value::Null);
        p.insert("status".into(), json!("disabled"));
        let ops = patch_ops(&p);
        assert_eq!(
            ops,
            vec![
                json!({"op": "replace", "path": "emails", "value": [{"value": "a@x.example", "type": "work", "primary": true}]}),
                json!({"op": "replace", "path": "active", "value": false}),
                json!({"op": "remove", "path": "title"}),
            ]
        );
    }

    #[test]
    fn errors_keep_their_meaning_for_the_layers() {
        let e = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "GET /Users",
            "",
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.is_temporary());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = status_error(StatusCode::BAD_GATEWAY, None, "GET /Users", "");
        assert!(e.is_temporary());
        let e = status_error(StatusCode::CONFLICT, None, "POST /Users", "taken");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert!(!e.is_temporary());
    }

    #[test]
    fn the_breaker_opens_when_most_operations_fail() {
        let cfg = TargetConfig {
            breaker: BreakerConfig {
                window: 4,
                failure_ratio: 0.75,
                cooldown_secs: 60,
            },
            ..TargetConfig::bearer("http://127.0.0.1:9/scim", "IDSYNC_SCIM_UNIT_TOKEN")
        };
        let c = ScimClient {
            auth: Auth::Bearer(SecretString::from("t".to_owned())),
            http: reqwest::Client::new(),
            breaker: Mutex::new(Breaker {
                cfg: cfg.breaker,
                recent: VecDeque::new(),
                open_until: None,
            }),
            cfg,
        };
        c.breaker_record(true);
        c.breaker_record(false);
        c.breaker_record(false);
        assert!(c.breaker_check().is_ok(), "3 of 4 not seen yet");
        c.breaker_record(false);
        let e = c.breaker_check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
    }
}
