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
//! * **Groups** ([`TargetConfig::groups`]): hub orgs become SCIM Groups. A Group is created
//!   **empty** (matched first by `externalId` = the hub anchor; on 409 the Group of the same
//!   `displayName` is adopted); members are then added and removed by PATCH `add` /
//!   `remove` of `members`, never by a PUT of the member list. Membership changes of one
//!   Group are queued and sent one PATCH at a time, at most [`TargetConfig::member_batch`]
//!   (100) members per PATCH, so concurrent ops share requests and a big group goes in
//!   several. A rename is a PATCH of `displayName`; a delete is a DELETE. In `nested` mode
//!   (the default) a child org is a member of type `Group` of its parent's Group, so the
//!   tree survives; `flat` keeps no parents (moves change nothing); `off` provisions no
//!   Groups. Read back, an account's orgs are its direct Groups (the User's `groups` when the
//!   app fills it, else a `members.value eq` search), sorted: SCIM has no primary group, so
//!   the capabilities say `ordered_orgs: false` and the engine compares memberships as a
//!   set. A Group holds no `order` and no attributes (`org_fields`), a User no attributes
//!   (`account_fields`): the engine does not diff what the app cannot keep.
//!
//! Field mapping: `userName` ← username, `displayName`, `title`, `active` ← status, one
//! `emails` value (work, primary) ← email, one `phoneNumbers` value (work, primary) ←
//! phone, `externalId` ← the hub anchor, enterprise `employeeNumber` ← employee id and
//! `manager.value` ← the manager's id in the app.

use std::collections::HashMap;
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

use crate::schema::{ENTERPRISE, GROUP, LIST, PATCH_OP, USER};

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

use idsync_http::breaker::Breaker;
/// The circuit breaker's settings (the one breaker of `idsync-http`).
pub use idsync_http::breaker::BreakerConfig;

fn default_timeout() -> u64 {
    30
}

fn default_member_batch() -> usize {
    100
}

/// How hub orgs are provisioned as SCIM Groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// Orgs are Groups, and a child org is a member (`type: "Group"`) of its parent's
    /// Group, so the whole tree is kept (RFC 7643 §4.2 allows groups in groups). The default.
    #[default]
    Nested,
    /// Orgs are Groups without parents: for apps that take no groups in groups (Okta).
    /// Moves change nothing in the app and the Groups read back as roots; the client's
    /// capabilities leave `parent` out of the org fields it holds, so the engine plans no
    /// moves into it.
    Flat,
    /// No Groups: accounts only.
    Off,
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
    /// How hub orgs become SCIM Groups (`nested`, `flat` or `off`).
    #[serde(default)]
    pub groups: GroupMode,
    /// The most members one PATCH of a Group adds or removes (100): a big group is
    /// filled by several PATCHes, never in one request.
    #[serde(default = "default_member_batch")]
    pub member_batch: usize,
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
            groups: GroupMode::default(),
            member_batch: default_member_batch(),
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

/// A SCIM 2.0 service provider as a sink and a source.
pub struct ScimClient {
    cfg: TargetConfig,
    http: reqwest::Client,
    auth: Auth,
    breaker: Breaker,
    /// Membership changes waiting for their Group's next PATCH ([`ScimClient::change_members`]).
    queues: Mutex<HashMap<Anchor, GroupQueue>>,
}

/// One change of a Group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    /// Add a User (`group: false`) or a Group (`group: true`).
    Add { id: Anchor, group: bool },
    /// Remove a member.
    Remove(Anchor),
}

struct Waiting {
    change: Member,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// The membership changes of one Group: `busy` while a caller is sending its PATCHes.
#[derive(Default)]
struct GroupQueue {
    busy: bool,
    waiting: Vec<Waiting>,
}

/// Fails what is still queued for a Group when the caller sending its PATCHes is
/// cancelled (a timeout layer dropped its future), so nobody waits forever.
struct FlushGuard<'a> {
    queues: &'a Mutex<HashMap<Anchor, GroupQueue>>,
    group: &'a Anchor,
    armed: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut q) = self.queues.lock()
            && let Some(e) = q.remove(self.group)
        {
            for w in e.waiting {
                let _ = w.done.send(Err(Error::new(
                    ErrorKind::Unavailable,
                    "scim: the request carrying this membership change was cancelled",
                )
                .with_provider(PROVIDER)
                .temporary()));
            }
        }
    }
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
            breaker: Breaker::new(cfg.breaker),
            cfg,
            http,
            auth,
            queues: Mutex::new(HashMap::new()),
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
        self.breaker.check(PROVIDER, &self.cfg.base_url)
    }

    fn breaker_record(&self, ok: bool) {
        if self.breaker.record(ok) {
            tracing::warn!(target_url = %self.cfg.base_url, window = self.breaker.config().window, "scim target quarantined");
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
            Op::CreateAccount { account } => {
                let applied = self.create(account).await?;
                if self.cfg.groups != GroupMode::Off
                    && !account.orgs.is_empty()
                    && let Some(id) = &applied.anchor
                {
                    self.set_user_groups(id, &[], &account.orgs).await?;
                }
                Ok(applied)
            }
            Op::UpdateAccount { anchor, changes } => {
                let orgs = changes
                    .get("orgs")
                    .filter(|_| self.cfg.groups != GroupMode::Off);
                let applied = self.update(anchor, changes).await?;
                if let Some(v) = orgs {
                    let want: Vec<Anchor> = match v {
                        Value::Array(items) => items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(Anchor::from)
                            .collect(),
                        _ => Vec::new(),
                    };
                    let have = self.groups_of(anchor).await?;
                    self.set_user_groups(anchor, &have, &want).await?;
                }
                Ok(applied)
            }
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
            Op::CreateOrg { org } => self.create_group(org).await,
            Op::UpdateOrg { anchor, changes } => {
                self.groups_on()?;
                match changes.get("name").and_then(Value::as_str) {
                    Some(name) => self.rename_group(anchor, name).await,
                    // Other org fields have no SCIM counterpart.
                    None => Ok(Applied::with_anchor(anchor.clone())),
                }
            }
            Op::MoveOrg { anchor, parent } => self.move_group(anchor, parent.as_ref()).await,
            Op::DeleteOrg { anchor } => self.delete_group(anchor).await,
        }
    }
}

// ------------------------------------------------------------------------------ Groups

impl ScimClient {
    /// Add Users to a Group in PATCHes of at most [`TargetConfig::member_batch`] members
    /// each: how a big group is filled (a first load, a migration) without one huge request.
    pub async fn add_members(&self, group: &Anchor, users: &[Anchor]) -> Result<()> {
        self.groups_on()?;
        let changes = users
            .iter()
            .map(|u| Member::Add {
                id: u.clone(),
                group: false,
            })
            .collect();
        self.change_members(group, changes).await
    }

    fn groups_on(&self) -> Result<()> {
        if self.cfg.groups == GroupMode::Off {
            return Err(Error::unsupported(
                "scim client: orgs are not provisioned (groups = \"off\")",
            )
            .with_provider(PROVIDER));
        }
        Ok(())
    }

    /// Queue membership changes of `group` and wait until they are sent. Changes of one
    /// Group go out one PATCH at a time, at most [`TargetConfig::member_batch`] members per
    /// PATCH: what callers queue while a PATCH is in flight goes into the next one, so
    /// concurrent ops share requests and a big group is filled in several.
    async fn change_members(&self, group: &Anchor, changes: Vec<Member>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut waits = Vec::with_capacity(changes.len());
        let lead = {
            let mut q = self
                .queues
                .lock()
                .map_err(|_| Error::unexpected("scim: membership queue lock poisoned"))?;
            let e = q.entry(group.clone()).or_default();
            for change in changes {
                let (done, rx) = tokio::sync::oneshot::channel();
                e.waiting.push(Waiting { change, done });
                waits.push(rx);
            }
            !std::mem::replace(&mut e.busy, true)
        };
        if lead {
            self.flush_members(group).await;
        }
        for rx in waits {
            rx.await.map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    "scim: a membership batch was dropped",
                )
                .with_provider(PROVIDER)
                .temporary()
            })??;
        }
        Ok(())
    }

    async fn flush_members(&self, group: &Anchor) {
        let mut guard = FlushGuard {
            queues: &self.queues,
            group,
            armed: true,
        };
        loop {
            let batch: Vec<Waiting> = {
                let Ok(mut q) = self.queues.lock() else {
                    return;
                };
                let Some(e) = q.get_mut(group) else {
                    guard.armed = false;
                    return;
                };
                if e.waiting.is_empty() {
                    q.remove(group);
                    guard.armed = false;
                    return;
                }
                let n = e.waiting.len().min(self.cfg.member_batch.max(1));
                e.waiting.drain(..n).collect()
            };
            let changes: Vec<&Member> = batch.iter().map(|w| &w.change).collect();
            let r = self.patch_members(group, &changes).await;
            for w in batch {
                let _ = w
                    .done
                    .send(r.as_ref().map(|_| ()).map_err(Error::clone_lossy));
            }
        }
    }

    /// One PATCH of a Group's members: runs of adds as one `add` of `members`, removals
    /// as `remove` with a value filter (RFC 7644 §3.5.2.2).
    async fn patch_members(&self, group: &Anchor, changes: &[&Member]) -> Result<()> {
        let mut ops: Vec<Value> = Vec::new();
        let mut adds: Vec<Value> = Vec::new();
        for c in changes {
            match c {
                Member::Add { id, group } => {
                    let mut m = json!({"value": id.as_str()});
                    if *group {
                        m["type"] = json!("Group");
                    }
                    adds.push(m);
                }
                Member::Remove(id) => {
                    if !adds.is_empty() {
                        ops.push(json!({"op": "add", "path": "members", "value": std::mem::take(&mut adds)}));
                    }
                    ops.push(json!({
                        "op": "remove",
                        "path": format!("members[value eq {}]", quote(id.as_str())),
                    }));
                }
            }
        }
        if !adds.is_empty() {
            ops.push(json!({"op": "add", "path": "members", "value": adds}));
        }
        self.call(
            Method::PATCH,
            &format!("/Groups/{}", seg(group)),
            Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await
        .map(|_| ())
    }

    /// The Groups that list `id` (a User or a Group) as a direct member, in id order.
    async fn groups_of(&self, id: &Anchor) -> Result<Vec<Anchor>> {
        let filter = urlencode(&format!("members.value eq {}", quote(id.as_str())));
        let mut out = Vec::new();
        let mut start = 1usize;
        loop {
            let path =
                format!("/Groups?filter={filter}&attributes=id&startIndex={start}&count=100");
            let v = match self.call(Method::GET, &path, None).await {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let items = resources(&v);
            for i in &items {
                out.push(id_of(i)?);
            }
            start += items.len();
            let total = v.get("totalResults").and_then(Value::as_u64).unwrap_or(0) as usize;
            if items.is_empty() || start > total {
                break;
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The groups of a User as the app reports them: its `groups` attribute (direct
    /// memberships) when the app fills it, else a search of the Groups.
    async fn user_groups(&self, user: &Value) -> Result<Vec<Anchor>> {
        if let Some(items) = user.get("groups").and_then(Value::as_array) {
            let mut out: Vec<Anchor> = items
                .iter()
                .filter(|g| g.get("type").and_then(Value::as_str) != Some("indirect"))
                .filter_map(|g| g.get("value").and_then(Value::as_str))
                .map(Anchor::from)
                .collect();
            out.sort();
            out.dedup();
            return Ok(out);
        }
        self.groups_of(&id_of(user)?).await
    }

    async fn org_of(&self, v: &Value) -> Result<Org> {
        let id = id_of(v)?;
        let parent = match self.cfg.groups {
            GroupMode::Nested => self.groups_of(&id).await?.into_iter().next(),
            GroupMode::Flat | GroupMode::Off => None,
        };
        let name = v
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(Org::new(id, parent, name))
    }

    async fn find_group(&self, filter: &str) -> Result<Option<Value>> {
        let path = format!(
            "/Groups?filter={}&excludedAttributes=members&count=10",
            urlencode(filter)
        );
        match self.call(Method::GET, &path, None).await {
            Ok(v) => Ok(resources(&v).into_iter().next()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a Group with no members (match by `externalId` first; on 409 adopt the one
    /// with the same `displayName`), then make it a member of its parent's Group.
    async fn create_group(&self, org: &Org) -> Result<Applied> {
        self.groups_on()?;
        let body = json!({
            "schemas": [GROUP],
            "displayName": org.name,
            "externalId": org.anchor.as_str(),
        });
        let by_ext = format!("externalId eq {}", quote(org.anchor.as_str()));
        let id = match self.find_group(&by_ext).await? {
            Some(found) => self.adopt_group(&found, org).await?,
            None => match self.call(Method::POST, "/Groups", Some(&body)).await {
                Ok(v) => id_of(&v)?,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let by_name = format!("displayName eq {}", quote(&org.name));
                    let found = self.find_group(&by_name).await?.ok_or(e)?;
                    self.adopt_group(&found, org).await?
                }
                Err(e) => return Err(e),
            },
        };
        if self.cfg.groups == GroupMode::Nested
            && let Some(p) = &org.parent
        {
            self.change_members(
                p,
                vec![Member::Add {
                    id: id.clone(),
                    group: true,
                }],
            )
            .await?;
        }
        Ok(Applied::with_anchor(id))
    }

    async fn adopt_group(&self, found: &Value, org: &Org) -> Result<Anchor> {
        let id = id_of(found)?;
        let ops = json!([
            {"op": "replace", "path": "displayName", "value": org.name},
            {"op": "replace", "path": "externalId", "value": org.anchor.as_str()},
        ]);
        self.call(
            Method::PATCH,
            &format!("/Groups/{}", seg(&id)),
            Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await?;
        Ok(id)
    }

    /// A rename: PATCH of `displayName` (members untouched). In PUT-only mode the whole
    /// Group is read and put back, members included: such apps get no other way.
    async fn rename_group(&self, id: &Anchor, name: &str) -> Result<Applied> {
        let path = format!("/Groups/{}", seg(id));
        if self.cfg.put_only {
            let mut g = self.call(Method::GET, &path, None).await?;
            g["displayName"] = json!(name);
            if let Some(m) = g.as_object_mut() {
                m.remove("meta");
            }
            self.call(Method::PUT, &path, Some(&g)).await?;
        } else {
            let ops = json!([{"op": "replace", "path": "displayName", "value": name}]);
            self.call(
                Method::PATCH,
                &path,
                Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
            )
            .await?;
        }
        Ok(Applied::with_anchor(id.clone()))
    }

    async fn move_group(&self, id: &Anchor, parent: Option<&Anchor>) -> Result<Applied> {
        self.groups_on()?;
        if self.cfg.groups == GroupMode::Nested {
            let old = self.groups_of(id).await?;
            for p in old.iter().filter(|p| Some(*p) != parent) {
                self.change_members(p, vec![Member::Remove(id.clone())])
                    .await?;
            }
            if let Some(p) = parent
                && !old.contains(p)
            {
                self.change_members(
                    p,
                    vec![Member::Add {
                        id: id.clone(),
                        group: true,
                    }],
                )
                .await?;
            }
        }
        Ok(Applied::with_anchor(id.clone()))
    }

    async fn delete_group(&self, id: &Anchor) -> Result<Applied> {
        self.groups_on()?;
        if self.cfg.groups == GroupMode::Nested {
            for p in self.groups_of(id).await? {
                self.change_members(&p, vec![Member::Remove(id.clone())])
                    .await?;
            }
        }
        self.call(Method::DELETE, &format!("/Groups/{}", seg(id)), None)
            .await?;
        Ok(Applied::with_anchor(id.clone()))
    }

    /// Make a User's direct Groups exactly `want`: PATCH adds and removes, no PUT.
    async fn set_user_groups(&self, user: &Anchor, have: &[Anchor], want: &[Anchor]) -> Result<()> {
        for g in want.iter().filter(|g| !have.contains(g)) {
            self.change_members(
                g,
                vec![Member::Add {
                    id: user.clone(),
                    group: false,
                }],
            )
            .await?;
        }
        for g in have.iter().filter(|g| !want.contains(g)) {
            self.change_members(g, vec![Member::Remove(user.clone())])
                .await?;
        }
        Ok(())
    }
}

impl ScimClient {
    /// One page of `/Users` or `/Groups` by `startIndex` (the page token) and `count`.
    async fn list_page(
        &self,
        resource: &str,
        extra: &str,
        page: &PageRequest,
    ) -> Result<(Vec<Value>, Option<PageToken>)> {
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
                &format!("{resource}?{extra}startIndex={start}&count={count}"),
                None,
            )
            .await?;
        if v.get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.iter().any(|x| x == LIST))
        {
            return Err(Error::invalid_data(format!(
                "scim: GET {resource} did not answer a ListResponse"
            ))
            .with_provider(PROVIDER));
        }
        let items = resources(&v);
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
                format!("scim: an empty page of {resource} at {start} of {total}"),
            )
            .with_provider(PROVIDER));
        }
        Ok((
            items,
            (next_start <= total).then(|| PageToken(next_start.to_string())),
        ))
    }
}

fn resources(v: &Value) -> Vec<Value> {
    v.get("Resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
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
        // What a User and a Group hold: the typed account fields (no attributes) and a
        // Group's displayName, plus its parent when Groups nest. No primary Group: an
        // account's Groups read back as a set.
        let org_fields: &[&str] = match self.cfg.groups {
            GroupMode::Nested => &["name", "parent"],
            GroupMode::Flat | GroupMode::Off => &["name"],
        };
        Capabilities {
            orgs: self.cfg.groups != GroupMode::Off,
            move_org: self.cfg.groups == GroupMode::Nested,
            assigns_anchors: true,
            org_fields: Some(org_fields.iter().map(|f| (*f).to_owned()).collect()),
            account_fields: Some(
                <Account as idsync_core::Entity>::typed_fields()
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect(),
            ),
            ordered_orgs: false,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        self.call(Method::GET, "/ServiceProviderConfig", None)
            .await
            .map(|_| ())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        if self.cfg.groups == GroupMode::Off {
            return Ok(Page::last(Vec::new()));
        }
        let (items, next) = self
            .list_page("/Groups", "excludedAttributes=members&", &page)
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for g in &items {
            out.push(self.org_of(g).await?);
        }
        Ok(Page { items: out, next })
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let (items, next) = self.list_page("/Users", "", &page).await?;
        let mut out = Vec::with_capacity(items.len());
        for u in &items {
            let mut a = account_of(u)?;
            if self.cfg.groups != GroupMode::Off {
                a.orgs = self.user_groups(u).await?;
            }
            out.push(a);
        }
        Ok(Page { items: out, next })
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        if self.cfg.groups == GroupMode::Off {
            return Ok(None);
        }
        let path = format!("/Groups/{}?excludedAttributes=members", seg(anchor));
        match self.call(Method::GET, &path, None).await {
            Ok(v) => self.org_of(&v).await.map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        match self
            .call(Method::GET, &format!("/Users/{}", seg(anchor)), None)
            .await
        {
            Ok(v) => {
                let mut a = account_of(&v)?;
                if self.cfg.groups != GroupMode::Off {
                    a.orgs = self.user_groups(&v).await?;
                }
                Ok(Some(a))
            }
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
        let mut out = Vec::with_capacity(found.len());
        for u in &found {
            let mut a = account_of(u)?;
            if self.cfg.groups != GroupMode::Off {
                a.orgs = self.user_groups(u).await?;
            }
            out.push(a);
        }
        Ok(out)
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
            breaker: Breaker::new(cfg.breaker),
            cfg,
            queues: Mutex::new(HashMap::new()),
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
