//! The SCIM service provider: an axum [`Router`] over the hub.
//!
//! Every write goes through the engine as a change set of one job per SCIM client
//! (`scim-<client>`), whose sink is the hub: it is planned, guarded, journaled and audited
//! like any other job. Writes are serialized (one at a time per server), so a request that
//! carries `If-Match` sees the version the previous write left, and of two racing PATCHes
//! with the same `If-Match` one gets 412.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use idsync_core::{
    Account, Anchor, ChangeSet, DeletionPolicy, Engine, FieldRule, Guard, Hub, Job, Mapping,
    MemoryAdapter, Org, PageRequest, Report, Status, Store, Threshold, mapping::EntityMapping,
};

use crate::error::{SCIM_JSON, ScimError, ScimResult};
use crate::filter::{self, Filter};
use crate::patch;
use crate::resource::{self, BLOB};
use crate::schema::{self, GROUP_TYPE, ResourceType, USER_TYPE};

/// What DELETE of a User does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// The hub account is disabled (`active=false`) and the SCIM resource is gone (404);
    /// a later POST of the same `userName` brings the account back. The default.
    #[default]
    Disable,
    /// The hub account is deleted.
    Delete,
}

/// One SCIM client allowed to call the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client's name; its writes run as the job `scim-<name>`.
    pub name: String,
    /// The SHA-256 of its bearer token, in hex ([`hash_token`]). The token itself is never
    /// stored.
    pub token_sha256: String,
}

fn default_body() -> usize {
    1024 * 1024
}

fn default_max_results() -> usize {
    1000
}

/// The server's configuration (`[serve.scim]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The public URL of the SCIM root (`https://idsync.example/scim/v2`), used in
    /// `meta.location` and `$ref`.
    pub base_url: String,
    /// Who may call.
    pub clients: Vec<ClientConfig>,
    /// What DELETE of a User does.
    #[serde(default)]
    pub delete: DeletePolicy,
    /// The largest request body, in bytes (default 1 MiB).
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// The largest page (`count`) a list returns (default 1000).
    #[serde(default = "default_max_results")]
    pub max_results: usize,
}

impl ServerConfig {
    /// A config with the defaults and no clients.
    pub fn new(base_url: impl Into<String>) -> Self {
        ServerConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            clients: Vec::new(),
            delete: DeletePolicy::default(),
            max_body_bytes: default_body(),
            max_results: default_max_results(),
        }
    }

    /// Set the request body cap.
    pub fn with_body_cap(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Set what DELETE of a User does.
    pub fn with_delete(mut self, policy: DeletePolicy) -> Self {
        self.delete = policy;
        self
    }

    /// Allow a client with this bearer token (only its hash is kept).
    pub fn with_client(mut self, name: impl Into<String>, token: &str) -> Self {
        self.clients.push(ClientConfig {
            name: name.into(),
            token_sha256: hash_token(token),
        });
        self
    }
}

/// The hex SHA-256 of a bearer token, as [`ClientConfig::token_sha256`] holds it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Debug)]
struct Client {
    name: String,
    hash: [u8; 32],
}

struct Inner {
    store: Arc<dyn Store>,
    engine: Engine,
    /// The hub the SCIM jobs write into (the engine commits each op with its records).
    target: Arc<Hub>,
    cfg: ServerConfig,
    clients: Vec<Client>,
    writes: tokio::sync::Mutex<()>,
    /// The soft-deleted (hidden) users: found by one scan on the first list, kept by this
    /// server's writes, and checked on every list (see [`ScimServer::tombstones`]).
    tombstones: tokio::sync::Mutex<Option<BTreeSet<Anchor>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimServer")
            .field("base_url", &self.cfg.base_url)
            .field(
                "clients",
                &self.clients.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A SCIM server over the hub of a store.
#[derive(Debug, Clone)]
pub struct ScimServer {
    inner: Arc<Inner>,
}

/// Which fields a job owns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// User writes: everything SCIM maps except org membership.
    Users,
    /// Group writes: also membership.
    Groups,
}

const USER_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "email",
    "phone",
    "employee_id",
    "title",
    "manager",
    "status",
];

impl ScimServer {
    /// A server over `engine`'s store. Fails on a client whose token hash is not 64 hex
    /// digits, or a duplicate client name.
    pub fn new(engine: Engine, cfg: ServerConfig) -> idsync_core::Result<Self> {
        let store = engine.store().clone();
        let mut clients = Vec::new();
        for (i, c) in cfg.clients.iter().enumerate() {
            let hash = unhex(&c.token_sha256).ok_or_else(|| {
                idsync_core::Error::config(format!(
                    "serve.scim.clients[{i}] ({}): token_sha256 must be 64 hex digits",
                    c.name
                ))
            })?;
            if clients.iter().any(|x: &Client| x.name == c.name) {
                return Err(idsync_core::Error::config(format!(
                    "serve.scim.clients[{i}]: the name {} is used twice",
                    c.name
                )));
            }
            clients.push(Client {
                name: c.name.clone(),
                hash,
            });
        }
        let mut cfg = cfg;
        cfg.base_url = cfg.base_url.trim_end_matches('/').to_owned();
        Ok(ScimServer {
            inner: Arc::new(Inner {
                target: Arc::new(Hub::new(store.clone())),
                store,
                engine,
                cfg,
                clients,
                writes: tokio::sync::Mutex::new(()),
                tombstones: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The job name of a client's writes.
    pub fn job_name(client: &str) -> String {
        format!("scim-{client}")
    }

    /// The routes: `/Users`, `/Groups`, `/ServiceProviderConfig`, `/Schemas`,
    /// `/ResourceTypes`, `/.search`. Mount it where `base_url` points (`nest`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ServiceProviderConfig", get(spc))
            .route("/Schemas", get(schemas_list))
            .route("/Schemas/{id}", get(schema_one))
            .route("/ResourceTypes", get(types_list))
            .route("/ResourceTypes/{id}", get(type_one))
            .route("/Users", get(users_list).post(users_create))
            .route("/Users/.search", axum::routing::post(users_search))
            .route(
                "/Users/{id}",
                get(user_get)
                    .put(user_put)
                    .patch(user_patch)
                    .delete(user_delete),
            )
            .route("/Groups", get(groups_list).post(groups_create))
            .route("/Groups/.search", axum::routing::post(groups_search))
            .route(
                "/Groups/{id}",
                get(group_get)
                    .put(group_put)
                    .patch(group_patch)
                    .delete(group_delete),
            )
            .route("/.search", axum::routing::post(root_search))
            .fallback(not_found)
            // The cap is checked by the body extractor, whose rejection becomes a SCIM 413.
            .layer(DefaultBodyLimit::max(self.inner.cfg.max_body_bytes))
            .with_state(self.clone())
    }

    fn base(&self) -> &str {
        &self.inner.cfg.base_url
    }

    fn auth(&self, headers: &HeaderMap) -> ScimResult<&Client> {
        let unauthorized =
            || ScimError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        let h = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let token = h
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| h[7..].trim())
            .ok_or_else(unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare every byte of every client, so timing says nothing about the token.
        let mut found = None;
        for c in &self.inner.clients {
            let diff = c
                .hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(c);
            }
        }
        found.ok_or_else(unauthorized)
    }

    fn job(&self, client: &Client, scope: Scope, deletion: DeletionPolicy) -> Job {
        let mut rules: Vec<FieldRule> = USER_FIELDS
            .iter()
            .map(|f| FieldRule::copy(*f, *f))
            .collect();
        rules.push(FieldRule::copy(
            format!("attrs.{BLOB}"),
            format!("attrs.{BLOB}"),
        ));
        if scope == Scope::Groups {
            rules.push(FieldRule::copy("orgs", "orgs"));
        }
        let mapping = Mapping {
            accounts: EntityMapping::rules(rules),
            orgs: EntityMapping::rules(vec![
                FieldRule::copy("name", "name"),
                FieldRule::copy("parent", "parent"),
                FieldRule::copy(format!("attrs.{BLOB}"), format!("attrs.{BLOB}")),
            ]),
        };
        let name = Self::job_name(&client.name);
        let source = Arc::new(MemoryAdapter::new(format!("scim:{}", client.name)));
        // One SCIM request disables or deletes at most one user or group: anything more
        // is a bug, and the guard stops it. Requests are judged one by one (no rolling
        // window: a client deprovisioning users one request at a time is doing its job).
        let guard = Guard {
            destructive_accounts: Threshold::new(Some(1), None),
            org_deletes: Threshold::new(Some(1), None),
            per_op: BTreeMap::new(),
            window: std::time::Duration::ZERO,
            ..Guard::default()
        };
        let mut job = Job::new(name, source, self.inner.target.clone())
            .with_mapping(mapping)
            .with_correlation(vec!["anchor".into()])
            .with_deletion(deletion)
            .with_guard(guard)
            .with_concurrency(1);
        job.sync_orgs = true;
        job
    }

    async fn write(&self, job: &Job, cs: ChangeSet) -> ScimResult<Report> {
        let plan = self.inner.engine.plan_changes(job, cs, None).await?;
        if plan.guard.stopped {
            return Err(ScimError::new(
                StatusCode::CONFLICT,
                format!(
                    "the write crossed the guard ({}); run {} needs approval",
                    plan.guard.reasons.join("; "),
                    plan.run_id
                ),
            ));
        }
        if let Some(c) = plan.conflicts.first() {
            return Err(ScimError::uniqueness(format!("ambiguous match: {c:?}")));
        }
        let report = self.inner.engine.apply(job, &plan).await?;
        if let Some(f) = report.failures().next() {
            let e = f.error.clone();
            let msg = e
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "an operation failed".into());
            return Err(match e.map(|e| e.kind) {
                Some(idsync_core::ErrorKind::AlreadyExists) => ScimError::uniqueness(msg),
                Some(idsync_core::ErrorKind::InvalidData) => ScimError::value(msg),
                Some(idsync_core::ErrorKind::NotFound) => ScimError::not_found(msg),
                _ => ScimError::internal(format!("run {}: {msg}", report.run_id)),
            });
        }
        Ok(report)
    }

    async fn all_accounts(&self) -> ScimResult<Vec<Account>> {
        let mut out = Vec::new();
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = self.inner.store.hub_accounts(req.clone()).await?;
            out.extend(page.items);
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn all_orgs(&self) -> ScimResult<Vec<Org>> {
        let mut out = Vec::new();
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = self.inner.store.hub_orgs(req.clone()).await?;
            out.extend(page.items);
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn visible_account(&self, id: &str) -> ScimResult<Account> {
        match self.inner.store.hub_account(&Anchor::from(id)).await? {
            Some(a) if !hidden(&a) => Ok(a),
            _ => Err(ScimError::not_found(format!("no User {id}"))),
        }
    }

    async fn render_user(&self, a: &Account) -> ScimResult<Value> {
        let mut names = HashMap::new();
        for o in &a.orgs {
            if let Some(org) = self.inner.store.hub_org(o).await? {
                names.insert(o.clone(), org.name);
            }
        }
        Ok(resource::render_user(a, self.base(), &|o| {
            names.get(o).cloned()
        }))
    }

    async fn members_of(&self, id: &Anchor) -> ScimResult<Vec<(Anchor, String)>> {
        Ok(self
            .inner
            .store
            .hub_org_members(id)
            .await?
            .into_iter()
            .filter(|a| !hidden(a))
            .map(|a| {
                let d = a.display_name.clone().unwrap_or_else(|| a.username.clone());
                (a.anchor, d)
            })
            .collect())
    }

    /// The hidden (soft-deleted) users, for list pages to leave out. The first call scans
    /// the hub once; after that the set is kept by this server's DELETEs and re-checked on
    /// every call (one lookup per hidden user), so a user another job enabled again, or
    /// deleted, drops out. Soft deletes made by *another* server process are seen after a
    /// restart.
    async fn tombstones(&self) -> ScimResult<Vec<Anchor>> {
        let mut t = self.inner.tombstones.lock().await;
        if t.is_none() {
            let set: BTreeSet<Anchor> = self
                .all_accounts()
                .await?
                .into_iter()
                .filter(hidden)
                .map(|a| a.anchor)
                .collect();
            *t = Some(set);
        }
        let Some(set) = t.as_mut() else {
            return Ok(Vec::new());
        };
        let mut gone = Vec::new();
        for a in set.iter() {
            match self.inner.store.hub_account(a).await? {
                Some(acc) if hidden(&acc) => {}
                _ => gone.push(a.clone()),
            }
        }
        for g in &gone {
            set.remove(g);
        }
        Ok(set.iter().cloned().collect())
    }

    async fn note_tombstone(&self, a: &Anchor) {
        if let Some(set) = self.inner.tombstones.lock().await.as_mut() {
            set.insert(a.clone());
        }
    }

    async fn group_doc(&self, id: &str) -> ScimResult<(Org, Vec<(Anchor, String)>, Value)> {
        let anchor = Anchor::from(id);
        let org = self
            .inner
            .store
            .hub_org(&anchor)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("no Group {id}")))?;
        let members = self.members_of(&anchor).await?;
        let doc = resource::render_group(&org, &members, self.base());
        Ok((org, members, doc))
    }
}

fn hidden(a: &Account) -> bool {
    a.status == Status::Disabled
        && a.attrs
            .get(BLOB)
            .and_then(|b| b.get("deleted"))
            .is_some_and(|d| d == &Value::Bool(true))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

fn scim(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(v) = resource::version(body).and_then(|v| HeaderValue::from_str(v).ok()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn created(body: &Value) -> Response {
    let mut r = scim(StatusCode::CREATED, body);
    if let Some(l) = body
        .get("meta")
        .and_then(|m| m.get("location"))
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

fn json_body(body: Result<Bytes, BytesRejection>) -> ScimResult<Value> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ScimError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the server takes",
            )
        } else {
            ScimError::syntax(format!("cannot read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ScimError::syntax(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// `If-Match`: the client's version must be the current one.
fn check_if_match(headers: &HeaderMap, doc: &Value) -> ScimResult<()> {
    let Some(want) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let want = want
        .to_str()
        .map_err(|_| ScimError::syntax("If-Match is not ASCII"))?;
    let have = resource::version(doc).unwrap_or_default();
    let strip = |s: &str| s.trim().trim_start_matches("W/").to_owned();
    let ok = want
        .split(',')
        .any(|w| w.trim() == "*" || strip(w) == strip(have));
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition(format!(
            "the resource is at version {have}, not {want}"
        )))
    }
}

/// List parameters, from the query string or a `.search` body.
#[derive(Debug, Default, Clone)]
struct ListParams {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Option<String>,
    excluded: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

fn ci<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a String> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn int_param(v: Option<&String>, name: &str) -> ScimResult<Option<i64>> {
    v.map(|s| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| ScimError::value(format!("{name} must be an integer, got {s:?}")))
    })
    .transpose()
}

impl ListParams {
    fn from_query(q: &HashMap<String, String>) -> ScimResult<Self> {
        Ok(ListParams {
            filter: ci(q, "filter").cloned(),
            start_index: int_param(ci(q, "startIndex"), "startIndex")?,
            count: int_param(ci(q, "count"), "count")?,
            attributes: ci(q, "attributes").cloned(),
            excluded: ci(q, "excludedAttributes").cloned(),
            sort_by: ci(q, "sortBy").cloned(),
            sort_order: ci(q, "sortOrder").cloned(),
        })
    }

    fn from_search(body: &Value) -> ScimResult<Self> {
        let m = body
            .as_object()
            .ok_or_else(|| ScimError::syntax("a search request must be a JSON object"))?;
        let get = |k: &str| {
            m.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        };
        let list = |k: &str| -> ScimResult<Option<String>> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => Ok(Some(
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| ScimError::syntax(format!("{k} must list strings")))
                        })
                        .collect::<ScimResult<Vec<_>>>()?
                        .join(","),
                )),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::syntax(format!("{k} must be a list of names"))),
            }
        };
        let text = |k: &str| -> ScimResult<Option<String>> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::syntax(format!("{k} must be a string"))),
            }
        };
        let num = |k: &str| -> ScimResult<Option<i64>> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| ScimError::value(format!("{k} must be an integer"))),
                Some(_) => Err(ScimError::value(format!("{k} must be an integer"))),
            }
        };
        Ok(ListParams {
            filter: text("filter")?,
            start_index: num("startIndex")?,
            count: num("count")?,
            attributes: list("attributes")?,
            excluded: list("excludedAttributes")?,
            sort_by: text("sortBy")?,
            sort_order: text("sortOrder")?,
        })
    }
}

struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn projection(
    rt: &ResourceType,
    attributes: Option<&String>,
    excluded: Option<&String>,
) -> ScimResult<Projection> {
    Ok(Projection {
        attributes: attributes
            .map(|a| resource::parse_attr_list(rt, a))
            .transpose()?
            .unwrap_or_default(),
        excluded: excluded
            .map(|a| resource::parse_attr_list(rt, a))
            .transpose()?
            .unwrap_or_default(),
    })
}

fn sort_key(rt: &ResourceType, doc: &Value, path: &str) -> ScimResult<Option<String>> {
    let f = filter::parse(&format!("{path} pr"))
        .map_err(|_| ScimError::value(format!("bad sortBy {path:?}")))?;
    let Filter::Present(_) = f else {
        return Err(ScimError::value(format!("bad sortBy {path:?}")));
    };
    let (head, sub) = match schema::split_urn(path) {
        Some((u, rest)) => match rest.split_once('.') {
            Some((h, s)) => (format!("{u}:{h}"), Some(s)),
            None => (path.to_owned(), None),
        },
        None => match path.split_once('.') {
            Some((h, s)) => (h.to_owned(), Some(s)),
            None => (path.to_owned(), None),
        },
    };
    let (scope, attr) = rt
        .resolve(&head)
        .ok_or_else(|| ScimError::value(format!("unknown sortBy attribute {path:?}")))?;
    let c = match scope {
        schema::Scope::Core => Some(doc),
        schema::Scope::Extension(u) => doc.get(u),
    };
    let mut v = c.and_then(|c| c.get(attr.name)).cloned();
    if let Some(Value::Array(items)) = &v {
        let first = items
            .iter()
            .find(|i| i.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())
            .cloned();
        v = first;
    }
    let sub_name = match sub {
        Some(s) => Some(s),
        None if attr.ty == schema::Type::Complex => Some("value"),
        None => None,
    };
    if let Some(s) = sub_name {
        let name = attr.sub_attr(s).map(|a| a.name).unwrap_or(s);
        v = v.and_then(|x| x.get(name).cloned());
    }
    let case_exact = attr.case_exact;
    Ok(v.map(|x| match x {
        Value::String(s) if !case_exact => s.to_lowercase(),
        Value::String(s) => s,
        other => other.to_string(),
    }))
}

/// Filter, sort, page and project rendered resources.
fn list_response(
    rt: &ResourceType,
    docs: Vec<Value>,
    p: &ListParams,
    max_results: usize,
) -> ScimResult<Value> {
    let proj = projection(rt, p.attributes.as_ref(), p.excluded.as_ref())?;
    let filter = p.filter.as_deref().map(filter::parse).transpose()?;
    let mut hits = Vec::new();
    for d in docs {
        let keep = match &filter {
            Some(f) => filter::matches(f, rt, &d)?,
            None => true,
        };
        if keep {
            hits.push(d);
        }
    }
    if let Some(by) = &p.sort_by {
        let mut keyed = Vec::with_capacity(hits.len());
        for d in hits {
            keyed.push((sort_key(rt, &d, by)?, d));
        }
        let desc = match p
            .sort_order
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("ascending") => false,
            Some("descending") => true,
            Some(o) => return Err(ScimError::value(format!("bad sortOrder {o:?}"))),
        };
        // Missing values sort last either way (RFC 7644 §3.4.2.3); ties by id.
        keyed.sort_by(|(ka, da), (kb, db)| {
            let ord = match (ka, kb) {
                (Some(a), Some(b)) => {
                    if desc {
                        b.cmp(a)
                    } else {
                        a.cmp(b)
                    }
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            ord.then_with(|| id_of(da).cmp(id_of(db)))
        });
        hits = keyed.into_iter().map(|(_, d)| d).collect();
    }
    let total = hits.len();
    let start = p.start_index.unwrap_or(1).max(1) as usize;
    let count = p
        .count
        .map(|c| c.max(0) as usize)
        .unwrap_or(max_results)
        .min(max_results);
    let page: Vec<Value> = hits
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|d| resource::project(rt, d, &proj.attributes, &proj.excluded))
        .collect::<ScimResult<_>>()?;
    Ok(json!({
        "schemas": [schema::LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    }))
}

/// The indexed hub field and value a User filter pins with `eq` (itself or one side of an
/// `and`): every User the filter matches is among the hub accounts with that key, so the
/// filter can be evaluated on those alone. `anchor` stands for `id`.
fn index_key(f: &Filter) -> Option<(&'static str, String)> {
    match f {
        Filter::Compare(path, filter::CompareOp::Eq, Value::String(v)) => {
            let text = path.text.as_str();
            let (urn, name) = match schema::split_urn(text) {
                Some((u, rest)) => (Some(u), rest),
                None => (None, text),
            };
            let core = urn.is_none_or(|u| u.eq_ignore_ascii_case(schema::USER));
            let ext = urn.is_some_and(|u| u.eq_ignore_ascii_case(schema::ENTERPRISE));
            if core && name.eq_ignore_ascii_case("userName") {
                Some(("username", v.clone()))
            } else if core && name.eq_ignore_ascii_case("id") {
                Some(("anchor", v.clone()))
            } else if ext && name.eq_ignore_ascii_case("employeeNumber") {
                Some(("employee_id", v.clone()))
            } else {
                None
            }
        }
        Filter::And(a, b) => index_key(a).or_else(|| index_key(b)),
        _ => None,
    }
}

/// The indexed keys whose hub accounts hold every User the filter matches: one
/// ([`index_key`]), or one per side of an `or` when both sides pin one (`userName eq "a"
/// or userName eq "b"`). `None`: the filter needs a scan.
fn index_keys(f: &Filter) -> Option<Vec<(&'static str, String)>> {
    match f {
        Filter::Or(a, b) => {
            let mut keys = index_keys(a)?;
            keys.extend(index_keys(b)?);
            Some(keys)
        }
        other => index_key(other).map(|k| vec![k]),
    }
}

fn id_of(d: &Value) -> &str {
    d.get("id").and_then(Value::as_str).unwrap_or_default()
}

type Q = Query<HashMap<String, String>>;
type Body = Result<Bytes, BytesRejection>;

fn respond(r: ScimResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn not_found(State(s): State<ScimServer>, headers: HeaderMap) -> Response {
    respond(
        s.auth(&headers)
            .map(|_| ScimError::not_found("no such endpoint").into_response()),
    )
}

async fn spc(State(s): State<ScimServer>, headers: HeaderMap) -> Response {
    respond(s.auth(&headers).map(|_| {
        scim(
            StatusCode::OK,
            &schema::service_provider_config(s.base(), s.inner.cfg.max_results),
        )
    }))
}

fn fixed_list(items: &[Value]) -> Value {
    json!({
        "schemas": [schema::LIST],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

async fn schemas_list(State(s): State<ScimServer>, headers: HeaderMap) -> Response {
    respond(
        s.auth(&headers)
            .map(|_| scim(StatusCode::OK, &fixed_list(&schema::schemas(s.base())))),
    )
}

async fn schema_one(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(s.auth(&headers).and_then(|_| {
        schema::schemas(s.base())
            .into_iter()
            .find(|v| v["id"] == json!(id))
            .map(|v| scim(StatusCode::OK, &v))
            .ok_or_else(|| ScimError::not_found(format!("no schema {id}")))
    }))
}

async fn types_list(State(s): State<ScimServer>, headers: HeaderMap) -> Response {
    respond(s.auth(&headers).map(|_| {
        scim(
            StatusCode::OK,
            &fixed_list(&schema::resource_types(s.base())),
        )
    }))
}

async fn type_one(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(s.auth(&headers).and_then(|_| {
        schema::resource_types(s.base())
            .into_iter()
            .find(|v| v["id"] == json!(id))
            .map(|v| scim(StatusCode::OK, &v))
            .ok_or_else(|| ScimError::not_found(format!("no resource type {id}")))
    }))
}

// ---------------------------------------------------------------------------- Users

impl ScimServer {
    /// A list page of Users. Without a filter or `sortBy`, the page is read by position
    /// from the store (its cost follows the page, not the hub); a filter that pins
    /// `userName`, `employeeNumber` or `id` with `eq` (alone or in an `and`) reads its
    /// candidates through the hub's index and evaluates the whole filter on them; any
    /// other filter, and `sortBy`, scan the hub.
    async fn list_users(&self, p: &ListParams) -> ScimResult<Value> {
        let max = self.inner.cfg.max_results;
        let filter = p.filter.as_deref().map(filter::parse).transpose()?;
        // Check the projection before reading anything.
        projection(&USER_TYPE, p.attributes.as_ref(), p.excluded.as_ref())?;
        if filter.is_none() && p.sort_by.is_none() {
            let tomb = self.tombstones().await?;
            let start = p.start_index.unwrap_or(1).max(1) as usize;
            let count = p.count.map(|c| c.max(0) as usize).unwrap_or(max).min(max);
            let total = self.inner.store.hub_account_count(&tomb).await?;
            let accounts = if count == 0 {
                Vec::new()
            } else {
                self.inner
                    .store
                    .hub_accounts_at(start - 1, count, &tomb)
                    .await?
            };
            let docs = self.render_users(&accounts).await?;
            let mut out = list_response(
                &USER_TYPE,
                docs,
                &ListParams {
                    start_index: None,
                    count: Some(count as i64),
                    ..p.clone()
                },
                max,
            )?;
            out["totalResults"] = json!(total);
            out["startIndex"] = json!(start);
            return Ok(out);
        }
        let candidates = self.user_candidates(filter.as_ref()).await?;
        let visible: Vec<Account> = candidates.into_iter().filter(|a| !hidden(a)).collect();
        let docs = self.render_users(&visible).await?;
        list_response(&USER_TYPE, docs, p, max)
    }

    /// The hub accounts among which are all Users `filter` matches, in anchor order: read
    /// through the hub's index when the filter pins `userName`, `employeeNumber` or `id`
    /// with `eq` ([`index_keys`]), else the whole hub.
    async fn user_candidates(&self, filter: Option<&Filter>) -> ScimResult<Vec<Account>> {
        let Some(keys) = filter.and_then(index_keys) else {
            return self.all_accounts().await;
        };
        let mut out: Vec<Account> = Vec::new();
        for (field, v) in keys {
            if field == "anchor" {
                out.extend(
                    self.inner
                        .store
                        .hub_account(&Anchor::from(v.as_str()))
                        .await?,
                );
            } else {
                out.extend(self.inner.store.hub_find_accounts(field, &v).await?);
            }
        }
        out.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        out.dedup_by(|a, b| a.anchor == b.anchor);
        Ok(out)
    }

    /// Render users, looking up each org they name once.
    async fn render_users(&self, accounts: &[Account]) -> ScimResult<Vec<Value>> {
        let mut names: HashMap<Anchor, String> = HashMap::new();
        for o in accounts.iter().flat_map(|a| a.orgs.iter()) {
            if !names.contains_key(o)
                && let Some(org) = self.inner.store.hub_org(o).await?
            {
                names.insert(o.clone(), org.name);
            }
        }
        Ok(accounts
            .iter()
            .map(|a| resource::render_user(a, self.base(), &|o| names.get(o).cloned()))
            .collect())
    }

    async fn user_response(&self, id: &Anchor, status: StatusCode) -> ScimResult<Response> {
        let a = self
            .inner
            .store
            .hub_account(id)
            .await?
            .ok_or_else(|| ScimError::internal(format!("User {id} is gone after the write")))?;
        let doc = self.render_user(&a).await?;
        Ok(if status == StatusCode::CREATED {
            created(&doc)
        } else {
            scim(status, &doc)
        })
    }

    /// A visible account other than `except` with this userName.
    async fn user_name_taken(
        &self,
        name: &str,
        except: Option<&Anchor>,
    ) -> ScimResult<Option<Account>> {
        let want = name.to_lowercase();
        Ok(self
            .inner
            .store
            .hub_find_accounts("username", name)
            .await?
            .into_iter()
            .find(|a| Some(&a.anchor) != except && a.username.to_lowercase() == want))
    }

    async fn create_user(&self, client: &Client, body: Value) -> ScimResult<Response> {
        let n = resource::normalize(&USER_TYPE, &body)?;
        let name = n
            .get("userName")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ScimError::value("userName is required"))?
            .to_owned();
        let _w = self.inner.writes.lock().await;
        let (id, existing) = match self.user_name_taken(&name, None).await? {
            Some(a) if hidden(&a) => (a.anchor.clone(), Some(a)),
            Some(a) => {
                return Err(ScimError::uniqueness(format!(
                    "userName {name:?} is taken by User {}",
                    a.anchor
                )));
            }
            None => (Anchor::from(new_id()), None),
        };
        let t = now();
        let account = resource::user_to_account(
            &id,
            &n,
            existing.as_ref(),
            json!({"created": t, "lastModified": t}),
        )?;
        let job = self.job(client, Scope::Users, DeletionPolicy::Disable);
        self.write(
            &job,
            ChangeSet {
                account_upserts: vec![account],
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        self.user_response(&id, StatusCode::CREATED).await
    }

    async fn update_user(
        &self,
        client: &Client,
        id: &str,
        headers: &HeaderMap,
        change: impl FnOnce(&Map<String, Value>) -> ScimResult<Map<String, Value>>,
    ) -> ScimResult<Response> {
        let _w = self.inner.writes.lock().await;
        let current = self.visible_account(id).await?;
        let doc = self.render_user(&current).await?;
        check_if_match(headers, &doc)?;
        let mut editable = doc.as_object().cloned().unwrap_or_default();
        for k in ["id", "meta", "schemas", "groups"] {
            editable.remove(k);
        }
        let next = change(&editable)?;
        let n = resource::normalize(&USER_TYPE, &Value::Object(next))?;
        if let Some(name) = n.get("userName").and_then(Value::as_str)
            && !name.eq_ignore_ascii_case(&current.username)
            && let Some(other) = self.user_name_taken(name, Some(&current.anchor)).await?
        {
            return Err(ScimError::uniqueness(format!(
                "userName {name:?} is taken by User {}",
                other.anchor
            )));
        }
        let mut meta = resource::stored_meta(&current.attrs);
        meta["lastModified"] = json!(now());
        let account = resource::user_to_account(&current.anchor, &n, Some(&current), meta)?;
        let job = self.job(client, Scope::Users, DeletionPolicy::Disable);
        self.write(
            &job,
            ChangeSet {
                account_upserts: vec![account],
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        self.user_response(&current.anchor, StatusCode::OK).await
    }

    async fn delete_user(
        &self,
        client: &Client,
        id: &str,
        headers: &HeaderMap,
    ) -> ScimResult<Response> {
        let _w = self.inner.writes.lock().await;
        let current = self.visible_account(id).await?;
        let doc = self.render_user(&current).await?;
        check_if_match(headers, &doc)?;
        match self.inner.cfg.delete {
            DeletePolicy::Disable => {
                let mut a = current.clone();
                a.status = Status::Disabled;
                let blob = a
                    .attrs
                    .entry(BLOB.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !blob.is_object() {
                    *blob = Value::Object(Map::new());
                }
                blob["deleted"] = Value::Bool(true);
                blob["meta"]["lastModified"] = json!(now());
                let job = self.job(client, Scope::Users, DeletionPolicy::Disable);
                self.write(
                    &job,
                    ChangeSet {
                        account_upserts: vec![a],
                        complete: true,
                        ..ChangeSet::default()
                    },
                )
                .await?;
                self.note_tombstone(&current.anchor).await;
            }
            DeletePolicy::Delete => {
                let job = self.job(client, Scope::Users, DeletionPolicy::Delete);
                // An account the job never linked is linked first, so the delete finds it.
                self.write(
                    &job,
                    ChangeSet {
                        account_upserts: vec![current.clone()],
                        complete: true,
                        ..ChangeSet::default()
                    },
                )
                .await?;
                self.write(
                    &job,
                    ChangeSet {
                        account_deletes: vec![current.anchor.clone()],
                        complete: true,
                        ..ChangeSet::default()
                    },
                )
                .await?;
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

async fn users_list(State(s): State<ScimServer>, headers: HeaderMap, Query(q): Q) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let p = ListParams::from_query(&q)?;
            Ok(scim(StatusCode::OK, &s.list_users(&p).await?))
        }
        .await,
    )
}

async fn users_search(State(s): State<ScimServer>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let p = ListParams::from_search(&json_body(body)?)?;
            Ok(scim(StatusCode::OK, &s.list_users(&p).await?))
        }
        .await,
    )
}

async fn users_create(State(s): State<ScimServer>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let body = json_body(body)?;
            s.create_user(c, body).await
        }
        .await,
    )
}

async fn user_get(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let a = s.visible_account(&id).await?;
            let doc = s.render_user(&a).await?;
            let p = projection(
                &USER_TYPE,
                ci(&q, "attributes"),
                ci(&q, "excludedAttributes"),
            )?;
            let version = resource::version(&doc).map(str::to_owned);
            if let (Some(v), Some(inm)) = (&version, headers.get(header::IF_NONE_MATCH))
                && inm.to_str().is_ok_and(|x| x.trim() == v)
            {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
            let out = resource::project(&USER_TYPE, doc, &p.attributes, &p.excluded)?;
            let mut r = scim(StatusCode::OK, &out);
            if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        .await,
    )
}

async fn user_put(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let body = json_body(body)?;
            let n = patch::replace_all(&USER_TYPE, &body)?;
            s.update_user(c, &id, &headers, move |_| Ok(n)).await
        }
        .await,
    )
}

async fn user_patch(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let ops = patch::parse_request(&json_body(body)?)?;
            s.update_user(c, &id, &headers, |doc| patch::apply(&USER_TYPE, doc, &ops))
                .await
        }
        .await,
    )
}

async fn user_delete(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            s.delete_user(c, &id, &headers).await
        }
        .await,
    )
}

// ---------------------------------------------------------------------------- Groups

impl ScimServer {
    async fn list_groups(&self, p: &ListParams) -> ScimResult<Value> {
        self.list_groups_with_max(p, self.inner.cfg.max_results)
            .await
    }

    async fn group_response(&self, id: &Anchor, status: StatusCode) -> ScimResult<Response> {
        let (_, _, doc) = self.group_doc(id.as_str()).await?;
        Ok(if status == StatusCode::CREATED {
            created(&doc)
        } else {
            scim(status, &doc)
        })
    }

    /// The accounts whose membership changes, with their new org lists.
    async fn membership_changes(
        &self,
        group: &Anchor,
        before: &[Anchor],
        after: &[Anchor],
    ) -> ScimResult<Vec<Account>> {
        let mut out = Vec::new();
        for id in after.iter().filter(|a| !before.contains(a)) {
            let mut a = self.visible_account(id.as_str()).await.map_err(|_| {
                ScimError::value(format!("member {id} is not a User of this server"))
            })?;
            if !a.orgs.contains(group) {
                a.orgs.push(group.clone());
                out.push(a);
            }
        }
        for id in before.iter().filter(|a| !after.contains(a)) {
            if let Some(mut a) = self.inner.store.hub_account(id).await? {
                a.orgs.retain(|o| o != group);
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn create_group(&self, client: &Client, body: Value) -> ScimResult<Response> {
        let n = resource::normalize(&GROUP_TYPE, &body)?;
        let members = resource::group_members(&n)?;
        let _w = self.inner.writes.lock().await;
        let id = Anchor::from(new_id());
        let t = now();
        let org = resource::group_to_org(&id, &n, None, json!({"created": t, "lastModified": t}))?;
        let accounts = self.membership_changes(&id, &[], &members).await?;
        let job = self.job(client, Scope::Groups, DeletionPolicy::Disable);
        self.write(
            &job,
            ChangeSet {
                org_upserts: vec![org],
                account_upserts: accounts,
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        self.group_response(&id, StatusCode::CREATED).await
    }

    async fn update_group(
        &self,
        client: &Client,
        id: &str,
        headers: &HeaderMap,
        change: impl FnOnce(&Map<String, Value>) -> ScimResult<Map<String, Value>>,
    ) -> ScimResult<Response> {
        let _w = self.inner.writes.lock().await;
        let (org, members, doc) = self.group_doc(id).await?;
        check_if_match(headers, &doc)?;
        let mut editable = doc.as_object().cloned().unwrap_or_default();
        for k in ["id", "meta", "schemas"] {
            editable.remove(k);
        }
        let next = change(&editable)?;
        let n = resource::normalize(&GROUP_TYPE, &Value::Object(next))?;
        let after = resource::group_members(&n)?;
        let before: Vec<Anchor> = members.into_iter().map(|(a, _)| a).collect();
        let mut meta = resource::stored_meta(&org.attrs);
        meta["lastModified"] = json!(now());
        let new_org = resource::group_to_org(&org.anchor, &n, Some(&org), meta)?;
        let accounts = self
            .membership_changes(&org.anchor, &before, &after)
            .await?;
        let job = self.job(client, Scope::Groups, DeletionPolicy::Disable);
        self.write(
            &job,
            ChangeSet {
                org_upserts: vec![new_org],
                account_upserts: accounts,
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        self.group_response(&org.anchor, StatusCode::OK).await
    }

    async fn delete_group(
        &self,
        client: &Client,
        id: &str,
        headers: &HeaderMap,
    ) -> ScimResult<Response> {
        let _w = self.inner.writes.lock().await;
        let (org, members, doc) = self.group_doc(id).await?;
        check_if_match(headers, &doc)?;
        let before: Vec<Anchor> = members.into_iter().map(|(a, _)| a).collect();
        let mut accounts = self.membership_changes(&org.anchor, &before, &[]).await?;
        // Hidden (soft-deleted) members leave the org too, or it cannot be deleted.
        for a in self.inner.store.hub_org_members(&org.anchor).await? {
            if hidden(&a) {
                let mut a = a;
                a.orgs.retain(|o| o != &org.anchor);
                accounts.push(a);
            }
        }
        let job = self.job(client, Scope::Groups, DeletionPolicy::Delete);
        // Link the org first (a no-op for groups this client created).
        self.write(
            &job,
            ChangeSet {
                org_upserts: vec![org.clone()],
                account_upserts: accounts,
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        self.write(
            &job,
            ChangeSet {
                org_deletes: vec![org.anchor.clone()],
                complete: true,
                ..ChangeSet::default()
            },
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

async fn groups_list(State(s): State<ScimServer>, headers: HeaderMap, Query(q): Q) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let p = ListParams::from_query(&q)?;
            Ok(scim(StatusCode::OK, &s.list_groups(&p).await?))
        }
        .await,
    )
}

async fn groups_search(State(s): State<ScimServer>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let p = ListParams::from_search(&json_body(body)?)?;
            Ok(scim(StatusCode::OK, &s.list_groups(&p).await?))
        }
        .await,
    )
}

async fn groups_create(State(s): State<ScimServer>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let body = json_body(body)?;
            s.create_group(c, body).await
        }
        .await,
    )
}

async fn group_get(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let (_, _, doc) = s.group_doc(&id).await?;
            let p = projection(
                &GROUP_TYPE,
                ci(&q, "attributes"),
                ci(&q, "excludedAttributes"),
            )?;
            let version = resource::version(&doc).map(str::to_owned);
            let out = resource::project(&GROUP_TYPE, doc, &p.attributes, &p.excluded)?;
            let mut r = scim(StatusCode::OK, &out);
            if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        .await,
    )
}

async fn group_put(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let n = patch::replace_all(&GROUP_TYPE, &json_body(body)?)?;
            s.update_group(c, &id, &headers, move |_| Ok(n)).await
        }
        .await,
    )
}

async fn group_patch(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            let ops = patch::parse_request(&json_body(body)?)?;
            s.update_group(c, &id, &headers, |doc| patch::apply(&GROUP_TYPE, doc, &ops))
                .await
        }
        .await,
    )
}

async fn group_delete(
    State(s): State<ScimServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            let c = s.auth(&headers)?;
            s.delete_group(c, &id, &headers).await
        }
        .await,
    )
}

/// `POST /.search`: Users and Groups together. A filter naming an attribute one type
/// lacks matches nothing of that type.
async fn root_search(State(s): State<ScimServer>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            s.auth(&headers)?;
            let p = ListParams::from_search(&json_body(body)?)?;
            if let Some(f) = &p.filter {
                filter::parse(f)?;
            }
            let everything = ListParams {
                start_index: None,
                count: Some(i64::MAX),
                sort_by: None,
                sort_order: None,
                ..p.clone()
            };
            let unbounded = usize::MAX;
            let mut all = Vec::new();
            let mut errors = Vec::new();
            for (rt, r) in [
                (
                    &USER_TYPE,
                    s.list_users_unbounded(&everything, unbounded).await,
                ),
                (
                    &GROUP_TYPE,
                    s.list_groups_unbounded(&everything, unbounded).await,
                ),
            ] {
                match r {
                    Ok(docs) => all.extend(docs),
                    Err(e) => errors.push((rt.name, e)),
                }
            }
            if errors.len() == 2 {
                let (_, e) = errors.remove(0);
                return Err(e);
            }
            let start = p.start_index.unwrap_or(1).max(1) as usize;
            let max = s.inner.cfg.max_results;
            let count = p.count.map(|c| c.max(0) as usize).unwrap_or(max).min(max);
            let total = all.len();
            let page: Vec<Value> = all.into_iter().skip(start - 1).take(count).collect();
            Ok(scim(
                StatusCode::OK,
                &json!({
                    "schemas": [schema::LIST],
                    "totalResults": total,
                    "startIndex": start,
                    "itemsPerPage": page.len(),
                    "Resources": page,
                }),
            ))
        }
        .await,
    )
}

impl ScimServer {
    async fn list_users_unbounded(&self, p: &ListParams, max: usize) -> ScimResult<Vec<Value>> {
        let p = &only_known(&USER_TYPE, p);
        let filter = p.filter.as_deref().map(filter::parse).transpose()?;
        let visible: Vec<Account> = self
            .user_candidates(filter.as_ref())
            .await?
            .into_iter()
            .filter(|a| !hidden(a))
            .collect();
        let docs = self.render_users(&visible).await?;
        let out = list_response(&USER_TYPE, docs, p, max)?;
        Ok(out["Resources"].as_array().cloned().unwrap_or_default())
    }

    async fn list_groups_unbounded(&self, p: &ListParams, max: usize) -> ScimResult<Vec<Value>> {
        let p = &only_known(&GROUP_TYPE, p);
        let out = self.list_groups_with_max(p, max).await?;
        Ok(out["Resources"].as_array().cloned().unwrap_or_default())
    }

    /// A list page of Groups. Without a filter or `sortBy` the page is read by position;
    /// otherwise the orgs are scanned (members are read only for a filter on them). Members
    /// are read only for the Groups of the page, through the store's membership index, and
    /// not at all when the projection leaves them out.
    async fn list_groups_with_max(&self, p: &ListParams, max: usize) -> ScimResult<Value> {
        let proj = projection(&GROUP_TYPE, p.attributes.as_ref(), p.excluded.as_ref())?;
        let filter = p.filter.as_deref().map(filter::parse).transpose()?;
        let members_shown = !names_members(&proj.excluded)
            && (proj.attributes.is_empty() || names_members(&proj.attributes));
        if filter.is_none() && p.sort_by.is_none() {
            let start = p.start_index.unwrap_or(1).max(1) as usize;
            let count = p.count.map(|c| c.max(0) as usize).unwrap_or(max).min(max);
            let total = self.inner.store.hub_org_count().await?;
            let orgs = if count == 0 {
                Vec::new()
            } else {
                self.inner.store.hub_orgs_at(start - 1, count).await?
            };
            let mut docs = Vec::with_capacity(orgs.len());
            for o in &orgs {
                let m = if members_shown {
                    self.members_of(&o.anchor).await?
                } else {
                    Vec::new()
                };
                docs.push(resource::render_group(o, &m, self.base()));
            }
            let mut out = list_response(
                &GROUP_TYPE,
                docs,
                &ListParams {
                    start_index: None,
                    count: Some(count as i64),
                    ..p.clone()
                },
                max,
            )?;
            out["totalResults"] = json!(total);
            out["startIndex"] = json!(start);
            return Ok(out);
        }
        let orgs = self.all_orgs().await?;
        let filter_on_members = [&p.filter, &p.sort_by].iter().any(|x| {
            x.as_deref()
                .is_some_and(|f| f.to_ascii_lowercase().contains("members"))
        });
        let mut docs: Vec<Value> = Vec::with_capacity(orgs.len());
        if filter_on_members {
            let mut members: HashMap<Anchor, Vec<(Anchor, String)>> = HashMap::new();
            for a in self.all_accounts().await? {
                if hidden(&a) {
                    continue;
                }
                let d = a.display_name.clone().unwrap_or_else(|| a.username.clone());
                for o in &a.orgs {
                    members
                        .entry(o.clone())
                        .or_default()
                        .push((a.anchor.clone(), d.clone()));
                }
            }
            for o in &orgs {
                let m = members.get(&o.anchor).map(Vec::as_slice).unwrap_or(&[]);
                docs.push(resource::render_group(o, m, self.base()));
            }
            docs.sort_by(|a, b| id_of(a).cmp(id_of(b)));
            return list_response(&GROUP_TYPE, docs, p, max);
        }
        // Filter and sort on the Groups without members, then fill in the page's members.
        for o in &orgs {
            docs.push(resource::render_group(o, &[], self.base()));
        }
        docs.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        let mut out = list_response(
            &GROUP_TYPE,
            docs,
            &ListParams {
                attributes: None,
                excluded: None,
                ..p.clone()
            },
            max,
        )?;
        if let Some(page) = out["Resources"].as_array_mut() {
            let by_id: HashMap<&str, &Org> = orgs.iter().map(|o| (o.anchor.as_str(), o)).collect();
            for d in page.iter_mut() {
                let Some(o) = by_id.get(id_of(d)) else {
                    continue;
                };
                let m = if members_shown {
                    self.members_of(&o.anchor).await?
                } else {
                    Vec::new()
                };
                let doc = resource::render_group(o, &m, self.base());
                *d = resource::project(&GROUP_TYPE, doc, &proj.attributes, &proj.excluded)?;
            }
        }
        Ok(out)
    }
}

/// Whether an attribute list names Group `members` (or one of its sub-attributes).
fn names_members(names: &[String]) -> bool {
    let urn = format!("{}:", schema::GROUP.to_ascii_lowercase());
    names.iter().any(|n| {
        let l = n.to_ascii_lowercase();
        let l = l.strip_prefix(&urn).unwrap_or(&l);
        l == "members" || l.starts_with("members.")
    })
}

/// The parameters with only the attribute names `rt` knows.
fn only_known(rt: &ResourceType, p: &ListParams) -> ListParams {
    let keep = |l: &Option<String>| {
        l.as_deref()
            .map(|l| resource::known_attrs(rt, l).join(","))
            .filter(|l| !l.is_empty())
    };
    ListParams {
        attributes: keep(&p.attributes),
        excluded: keep(&p.excluded),
        ..p.clone()
    }
}
