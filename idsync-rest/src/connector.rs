//! [`RestDirectory`]: the configured API as a [`Source`] and a [`Sink`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, ChangeSet, Descriptor, Entity, Error, ErrorKind, Op,
    Org, Page, PageRequest, Patch, RateLimit, Result, Sink, Source, SyncCursor,
};
use idsync_http::header::{HeaderName, HeaderValue};
use idsync_http::{
    Answer, ApiError, Class, ClientCredentials, HttpError, HttpSettings, JsonClient, Method,
    Request, TokenAuth, TokenPlacement,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PROVIDER;
use crate::config::{AuthConfig, EntityConfig, Pagination, RestConfig, TimeFormat};
use crate::error::{At, RestError};
use crate::map;

/// How many next-page positions a page token remembers to refuse a cycle.
const TRAIL: usize = 64;

enum Auth {
    None,
    Header(HeaderName, SecretString),
    Basic(String, SecretString),
    Token(TokenAuth),
}

/// The connector: one REST/JSON API, configured by [`RestConfig`]. Cheap to share
/// (`Arc`); every request goes through the `idsync-http` client (rustls, no redirects,
/// timeouts, a body cap).
pub struct RestDirectory {
    cfg: RestConfig,
    client: JsonClient,
    auth: Auth,
    headers: Vec<(HeaderName, String)>,
    instance: String,
    /// The base URL's path (`/api/v1`), so errors name the whole URL path.
    base_path: String,
}

impl std::fmt::Debug for RestDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestDirectory")
            .field("base_url", &self.cfg.base_url)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The error-body check: `401` is a rejected credential (an OAuth2 token is fetched again
/// once), `409` an existing entity, `400`/`422` refused input with the API's message;
/// every other status goes to the toolkit's classifier.
fn check(status: u16, body: Value) -> std::result::Result<Value, ApiError> {
    use idsync_core::ErrorStatus::Permanent;
    let message = || {
        [
            "/message",
            "/error_description",
            "/error/message",
            "/detail",
            "/title",
            "/error",
        ]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
        .map(|m| m.chars().take(300).collect::<String>())
    };
    let (kind, what) = match status {
        401 => {
            return Err(ApiError::new(
                Some("401".into()),
                format!(
                    "HTTP 401: the credentials were refused{}",
                    message().map(|m| format!(": {m}")).unwrap_or_default()
                ),
                Class::new(ErrorKind::Unauthenticated, Permanent),
            )
            .token_bad());
        }
        409 => (ErrorKind::AlreadyExists, "conflict"),
        400 | 422 => (ErrorKind::InvalidData, "the request was refused"),
        _ => return Ok(body),
    };
    Err(ApiError::new(
        Some(status.to_string()),
        format!(
            "HTTP {status}: {what}{}",
            message().map(|m| format!(": {m}")).unwrap_or_default()
        ),
        Class::new(kind, Permanent),
    ))
}

/// Percent-escapes an anchor as one path segment (RFC 3986 unreserved characters stay).
pub fn escape_segment(s: &str) -> String {
    if s == "." || s == ".." {
        // a dot segment would be resolved away by URL normalization
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fill(template: &str, anchor: &Anchor) -> String {
    template.replace("{anchor}", &escape_segment(anchor.as_str()))
}

/// The resumable state of one listing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// 0-based index of the page to read.
    #[serde(rename = "i")]
    index: u64,
    /// Items read before it.
    #[serde(rename = "n")]
    seen: u64,
    /// Page size of the listing (fixed once it starts: page numbers depend on it).
    #[serde(rename = "s")]
    size: usize,
    /// The cursor or next URL of this page.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pos: Option<String>,
    /// Fingerprint of the previous page's anchors (page and offset styles).
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    prev: Option<u64>,
    /// Fingerprints of the positions seen so far (the last [`TRAIL`]).
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    trail: Vec<u64>,
}

fn fingerprint<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn int_at(v: &Value, pointer: &str) -> Option<u64> {
    map::at(v, pointer)
        .and_then(idsync_http::int_of)
        .and_then(|n| u64::try_from(n).ok())
}

impl RestDirectory {
    /// Builds the connector: checks the config and reads the secret it names.
    pub fn new(cfg: RestConfig) -> Result<Self> {
        cfg.check()?;
        let mut settings = HttpSettings::new(cfg.base_url.trim_end_matches('/'));
        settings.allow_plaintext = cfg.allow_plaintext;
        settings.timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        if let Some(m) = cfg.max_body_bytes {
            settings.max_body_bytes = m;
        }
        let client = JsonClient::new(PROVIDER, &settings, check)?;
        let secret = match cfg.auth.secret_ref()? {
            Some(r) => Some(r.read(&format!("{PROVIDER} auth"))?),
            None => None,
        };
        let auth = match (&cfg.auth, secret) {
            (AuthConfig::Bearer { .. }, Some(s)) => {
                use secrecy::ExposeSecret;
                Auth::Header(
                    idsync_http::header::AUTHORIZATION,
                    SecretString::from(format!("Bearer {}", s.expose_secret())),
                )
            }
            (AuthConfig::Basic { username, .. }, Some(s)) => Auth::Basic(username.clone(), s),
            (AuthConfig::ApiKey { header, .. }, Some(s)) => Auth::Header(
                HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    Error::config(format!(
                        "{PROVIDER}: auth.header {header:?} is not a header name"
                    ))
                })?,
                s,
            ),
            (
                AuthConfig::Oauth2 {
                    token_url,
                    client_id,
                    scope,
                    basic,
                    ..
                },
                Some(s),
            ) => {
                let mut cc = ClientCredentials::new(
                    PROVIDER,
                    token_url,
                    client_id.clone(),
                    s,
                    scope.clone(),
                    &settings,
                )?;
                if *basic {
                    cc = cc.with_basic_auth();
                }
                Auth::Token(TokenAuth::new(
                    client.clone(),
                    cc,
                    TokenPlacement::Bearer,
                    Duration::from_secs(60),
                ))
            }
            _ => Auth::None,
        };
        let mut headers = Vec::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Error::config(format!("{PROVIDER}: header {k:?} is not a header name"))
            })?;
            if name == idsync_http::header::AUTHORIZATION {
                return Err(Error::config(format!(
                    "{PROVIDER}: `headers` must not hold Authorization (a secret): use `auth`"
                )));
            }
            HeaderValue::from_str(v)
                .map_err(|_| Error::config(format!("{PROVIDER}: header {k} has a bad value")))?;
            headers.push((name, v.clone()));
        }
        let instance = cfg.instance.clone().unwrap_or_else(|| {
            idsync_http::check_base_url(&cfg.base_url, true)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| cfg.base_url.clone())
        });
        let base_path = idsync_http::check_base_url(&cfg.base_url, true)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(RestDirectory {
            cfg,
            client,
            auth,
            headers,
            instance,
            base_path,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RestConfig {
        &self.cfg
    }

    /// How many OAuth2 tokens were fetched (0 for other auth).
    pub fn token_fetches(&self) -> u64 {
        match &self.auth {
            Auth::Token(t) => t.token_fetches(),
            _ => 0,
        }
    }

    async fn exchange(&self, req: Request) -> std::result::Result<Answer, HttpError> {
        let mut req = req;
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        match &self.auth {
            Auth::None => self.client.try_send_full(&req).await,
            Auth::Header(name, value) => {
                self.client
                    .try_send_full(&req.secret_header(name.clone(), value.clone()))
                    .await
            }
            Auth::Basic(user, pw) => self.client.try_send_full(&req.basic_auth(user, pw)).await,
            Auth::Token(t) => t.try_send_full(&req).await,
        }
    }

    /// Sends; a bare 404 becomes `NotFound` only when `item` (the path names one entity).
    async fn send(&self, req: Request, page: Option<u64>, item: bool) -> Result<Answer> {
        let path = req.path().to_owned();
        match self.exchange(req).await {
            Ok(a) => Ok(a),
            Err(HttpError::Status { status: 404, .. }) if item => Err(Error::new(
                ErrorKind::NotFound,
                format!("{path}: not found (HTTP 404)"),
            )
            .with_provider(PROVIDER)
            .with_operation(path)
            .with_provider_code("404")),
            Err(e) => {
                let mut err = e.into_error(PROVIDER, &path);
                if let Some(p) = page {
                    err = err.with_context("page", p.to_string());
                }
                Err(err)
            }
        }
    }

    fn entity(&self, kind: idsync_core::EntityKind) -> Result<&EntityConfig> {
        match kind {
            idsync_core::EntityKind::Account => Ok(&self.cfg.accounts),
            idsync_core::EntityKind::Org => {
                self.cfg.orgs.as_ref().ok_or_else(|| {
                    Error::unsupported(format!("{PROVIDER}: no `orgs` are configured"))
                })
            }
        }
    }

    fn listing_request(
        &self,
        cfg: &EntityConfig,
        st: &State,
        since: Option<&(String, String)>,
    ) -> Result<Request> {
        let base = |r: Request| {
            let mut r = r;
            for (k, v) in &cfg.query {
                r = r.query(k.clone(), v.clone());
            }
            if let Some((k, v)) = since {
                r = r.query(k.clone(), v.clone());
            }
            r
        };
        let size = st.size.to_string();
        Ok(match &cfg.pagination {
            Pagination::None => base(Request::get(cfg.path.clone())),
            Pagination::Page {
                param,
                size_param,
                first,
                ..
            } => base(Request::get(cfg.path.clone()))
                .query(param.clone(), (first + st.index).to_string())
                .query(size_param.clone(), size),
            Pagination::Offset {
                param, size_param, ..
            } => base(Request::get(cfg.path.clone()))
                .query(param.clone(), st.seen.to_string())
                .query(size_param.clone(), size),
            Pagination::Cursor {
                param, size_param, ..
            } => {
                let r = base(Request::get(cfg.path.clone())).query(size_param.clone(), size);
                match &st.pos {
                    Some(c) => r.query(param.clone(), c.clone()),
                    None => r,
                }
            }
            Pagination::NextUrl { size_param, .. } => match &st.pos {
                Some(u) => Request::follow(self.client.base_url(), u)
                    .map_err(|e| e.into_error(PROVIDER, &cfg.path))?,
                None => base(Request::get(cfg.path.clone())).query(size_param.clone(), size),
            },
            Pagination::LinkHeader {
                size_param,
                first_query,
            } => match &st.pos {
                Some(u) => Request::follow(self.client.base_url(), u)
                    .map_err(|e| e.into_error(PROVIDER, &cfg.path))?,
                None => {
                    let mut r =
                        base(Request::get(cfg.path.clone())).query(size_param.clone(), size);
                    for (k, v) in first_query {
                        r = r.query(k.clone(), v.clone());
                    }
                    r
                }
            },
        })
    }

    /// One page of `kind`, read into entities by `read`.
    async fn page<E, F>(
        &self,
        cfg: &EntityConfig,
        req: PageRequest,
        since: Option<&(String, String)>,
        read: F,
    ) -> Result<Page<E>>
    where
        E: Anchored,
        F: Fn(&Value, &At, usize) -> Result<E>,
    {
        let st: State = match &req.token {
            Some(t) => idsync_http::decode_token(PROVIDER, t)?,
            None => State {
                size: req.size.unwrap_or(cfg.page_size).clamp(1, cfg.page_size),
                ..State::default()
            },
        };
        let http = self.listing_request(cfg, &st, since)?;
        let path = format!("{}{}", self.base_path, http.path());
        let number = st.index + 1;
        let at_ = At::page(path.clone(), number);
        let answer = self.send(http, Some(number), false).await?;
        let body = &answer.body;
        let Some(items) = map::at(body, &cfg.items) else {
            return Err(RestError::Shape {
                at: at_,
                pointer: cfg.items.clone(),
                what: format!("no items at {:?}", cfg.items),
            }
            .into());
        };
        let Value::Array(items) = items else {
            return Err(RestError::Shape {
                at: at_,
                pointer: cfg.items.clone(),
                what: format!(
                    "the items at {:?} are {}, not an array",
                    cfg.items,
                    map::kind_of(items)
                ),
            }
            .into());
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(read(item, &at_, i)?);
        }
        let n = out.len() as u64;
        let total = match &cfg.pagination {
            Pagination::Page {
                total,
                total_header,
                ..
            }
            | Pagination::Offset {
                total,
                total_header,
                ..
            } => {
                let from_header = total_header
                    .as_deref()
                    .and_then(|h| answer.header(h))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let from_body = total.as_deref().and_then(|p| int_at(body, p));
                if total_header.is_some() && from_header.is_none() {
                    return Err(RestError::Shape {
                        at: at_,
                        pointer: String::new(),
                        what: format!(
                            "the total header {} is missing or not a number",
                            total_header.as_deref().unwrap_or_default()
                        ),
                    }
                    .into());
                }
                if let Some(p) = total
                    && from_body.is_none()
                {
                    return Err(RestError::Shape {
                        at: at_,
                        pointer: p.clone(),
                        what: format!("the total at {p} is missing or not a number"),
                    }
                    .into());
                }
                from_header.or(from_body)
            }
            _ => None,
        };
        let seen = st.seen + n;
        if let Some(t) = total
            && seen > t
        {
            return Err(RestError::Incomplete {
                at: at_,
                what: format!(
                    "the page contradicts its own total: {seen} items read by this page, the \
                     total says {t}"
                ),
            }
            .into());
        }
        let next_state = |pos: Option<String>, prev: Option<u64>| {
            let mut trail = st.trail.clone();
            if let Some(p) = &pos {
                trail.push(fingerprint(p.as_str()));
                if trail.len() > TRAIL {
                    trail.remove(0);
                }
            }
            State {
                index: st.index + 1,
                seen,
                size: st.size,
                pos,
                prev,
                trail,
            }
        };
        let next: Option<State> = match &cfg.pagination {
            Pagination::None => None,
            Pagination::Page { .. } | Pagination::Offset { .. } => {
                let fp = fingerprint(
                    &out.iter()
                        .map(|e| e.anchor_ref().as_str())
                        .collect::<Vec<_>>(),
                );
                if n > 0 && st.prev == Some(fp) {
                    return Err(RestError::Incomplete {
                        at: at_,
                        what: "the page repeats the previous page (is the page parameter \
                               ignored?)"
                            .into(),
                    }
                    .into());
                }
                let short = (n as usize) < st.size;
                match total {
                    Some(t) if seen == t => None,
                    Some(t) if n == 0 || short => {
                        return Err(RestError::Incomplete {
                            at: at_,
                            what: format!(
                                "the page contradicts its own total: it ends the listing \
                                 ({n} items) after {seen} items, the total says {t}"
                            ),
                        }
                        .into());
                    }
                    _ if n == 0 || short => None,
                    _ => Some(next_state(None, Some(fp))),
                }
            }
            Pagination::Cursor { next, has_more, .. } => {
                let more = match has_more {
                    Some(p) => match map::at(body, p) {
                        Some(Value::Bool(b)) => Some(*b),
                        None | Some(Value::Null) => None,
                        Some(other) => {
                            return Err(RestError::Shape {
                                at: at_,
                                pointer: p.clone(),
                                what: format!("has_more is {}, not a boolean", map::kind_of(other)),
                            }
                            .into());
                        }
                    },
                    None => None,
                };
                let cursor =
                    map::id_text(map::at(body, next)).map_err(|what| RestError::Shape {
                        at: at_.clone(),
                        pointer: next.clone(),
                        what: format!("the next cursor: {what}"),
                    })?;
                match (more, cursor) {
                    (Some(false), _) | (None, None) => None,
                    (Some(true), None) => {
                        return Err(RestError::Incomplete {
                            at: at_,
                            what: format!("has_more is true but there is no cursor at {next}"),
                        }
                        .into());
                    }
                    (_, Some(c)) => Some(next_state(Some(c), None)),
                }
            }
            Pagination::NextUrl { next, .. } => match map::at(body, next) {
                None | Some(Value::Null) => None,
                Some(Value::String(u)) if u.is_empty() => None,
                Some(Value::String(u)) => Some(next_state(Some(u.clone()), None)),
                Some(other) => {
                    return Err(RestError::Shape {
                        at: at_,
                        pointer: next.clone(),
                        what: format!("the next URL is {}, not a string", map::kind_of(other)),
                    }
                    .into());
                }
            },
            Pagination::LinkHeader { .. } => answer.next_link().map(|u| next_state(Some(u), None)),
        };
        if let Some(ns) = &next
            && let Some(p) = &ns.pos
        {
            let fp = fingerprint(p.as_str());
            if st.trail.contains(&fp) {
                return Err(RestError::Incomplete {
                    at: at_,
                    what: "the next-page position was handed out before: the pages loop".into(),
                }
                .into());
            }
        }
        let next = match next {
            Some(ns) => Some(idsync_http::encode_token(&ns)?),
            None => None,
        };
        Ok(Page { items: out, next })
    }

    fn read_account(&self, item: &Value, at_: &At, i: usize) -> Result<Account> {
        let cfg = &self.cfg.accounts;
        let mut a: Account = map::read(item, cfg, at_, i)?;
        if let Some(s) = &cfg.status {
            a.status = map::read_status(item, s, at_, i)?;
        }
        Ok(a)
    }

    fn read_org(&self, cfg: &EntityConfig, item: &Value, at_: &At, i: usize) -> Result<Org> {
        map::read(item, cfg, at_, i)
    }

    async fn lookup(&self, cfg: &EntityConfig, anchor: &Anchor) -> Result<Option<Value>> {
        let Some(tpl) = &cfg.item_path else {
            return Ok(None);
        };
        let path = fill(tpl, anchor);
        match self.send(Request::get(path.clone()), None, true).await {
            Ok(a) => match map::at(&a.body, &cfg.item) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(RestError::Shape {
                    at: At::single(path),
                    pointer: cfg.item.clone(),
                    what: format!("no entity at {:?} in the answer", cfg.item),
                }
                .into()),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn since_param(
        &self,
        cfg: &EntityConfig,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Option<(String, String)> {
        cfg.incremental.as_ref().map(|inc| {
            let from =
                since - chrono::Duration::seconds(i64::try_from(inc.overlap_secs).unwrap_or(0));
            let v = match inc.format {
                TimeFormat::Rfc3339 => from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                TimeFormat::Unix => from.timestamp().to_string(),
            };
            (inc.param.clone(), v)
        })
    }

    async fn write(
        &self,
        cfg_name: &str,
        spec: &crate::config::WriteSpec,
        default: Method,
        anchor: Option<&Anchor>,
        body: Option<Value>,
    ) -> Result<Answer> {
        let method = match &spec.method {
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| Error::config(format!("{PROVIDER}: {cfg_name}: bad method {m:?}")))?,
            None => default,
        };
        let path = match anchor {
            Some(a) => fill(&spec.path, a),
            None => spec.path.clone(),
        };
        let mut req = Request::new(method, path);
        if let Some(b) = body {
            let mut wrapped = Value::Null;
            map::set_at(&mut wrapped, &spec.envelope, b);
            req = req.json(wrapped);
        }
        self.send(req, None, anchor.is_some()).await
    }

    async fn update(
        &self,
        kind: idsync_core::EntityKind,
        anchor: &Anchor,
        patch: &Patch,
    ) -> Result<Applied> {
        let cfg = self.entity(kind)?;
        let spec = cfg.update.as_ref().ok_or_else(|| {
            Error::unsupported(format!("{PROVIDER}: no `update` endpoint for {kind}s"))
        })?;
        let body = map::patch_body(patch, cfg)?;
        let put = spec
            .method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("PUT"));
        let body = if put {
            // PUT replaces the whole entity: read it, change the fields, send it back
            let path = fill(cfg.item_path.as_deref().unwrap_or(&spec.path), anchor);
            let current = self.send(Request::get(path.clone()), None, true).await?;
            let mut whole =
                map::at(&current.body, &cfg.item)
                    .cloned()
                    .ok_or_else(|| -> Error {
                        RestError::Shape {
                            at: At::single(path),
                            pointer: cfg.item.clone(),
                            what: "no entity in the answer".into(),
                        }
                        .into()
                    })?;
            map::merge(&mut whole, body);
            whole
        } else {
            body
        };
        self.write(
            &format!("{kind}s.update"),
            spec,
            Method::PATCH,
            Some(anchor),
            Some(body),
        )
        .await?;
        Ok(Applied::with_anchor(anchor.clone()))
    }

    async fn create<E: Entity>(
        &self,
        kind: idsync_core::EntityKind,
        e: &E,
        body: impl Fn(&EntityConfig, bool) -> Result<Value>,
    ) -> Result<Applied> {
        let cfg = self.entity(kind)?;
        let spec = cfg.create.as_ref().ok_or_else(|| {
            Error::unsupported(format!("{PROVIDER}: no `create` endpoint for {kind}s"))
        })?;
        let b = body(cfg, spec.id.is_none())?;
        let answer = self
            .write(
                &format!("{kind}s.create"),
                spec,
                Method::POST,
                None,
                Some(b),
            )
            .await?;
        match &spec.id {
            None => Ok(Applied::with_anchor(e.anchor().clone())),
            Some(p) => match map::id_text(map::at(&answer.body, p)) {
                Ok(Some(id)) => Ok(Applied::with_anchor(Anchor::new(id))),
                Ok(None) | Err(_) => Err(Error::invalid_data(format!(
                    "{}: the create answer has no id at {p}",
                    spec.path
                ))
                .with_provider(PROVIDER)
                .with_operation(spec.path.clone())
                .with_context("pointer", p.as_str())),
            },
        }
    }

    async fn delete(&self, kind: idsync_core::EntityKind, anchor: &Anchor) -> Result<Applied> {
        let cfg = self.entity(kind)?;
        let spec = cfg.delete.as_ref().ok_or_else(|| {
            Error::unsupported(format!("{PROVIDER}: no `delete` endpoint for {kind}s"))
        })?;
        self.write(
            &format!("{kind}s.delete"),
            spec,
            Method::DELETE,
            Some(anchor),
            None,
        )
        .await?;
        Ok(Applied::with_anchor(anchor.clone()))
    }

    async fn all_changed<E, F>(
        &self,
        cfg: &EntityConfig,
        since: &(String, String),
        read: F,
    ) -> Result<Vec<E>>
    where
        E: Anchored,
        F: Fn(&Value, &At, usize) -> Result<E> + Copy,
    {
        let mut out = Vec::new();
        let mut req = PageRequest::first();
        loop {
            let p = self.page(cfg, req.clone(), Some(since), read).await?;
            out.extend(p.items);
            match p.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

fn changed_at(item: &Value, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    match map::at(item, pointer)? {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
        _ => None,
    }
}

fn parse_cursor(c: &SyncCursor) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(&c.0)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            Error::invalid_data(format!(
                "{PROVIDER}: cursor {:?} is not an RFC 3339 time",
                c.0
            ))
            .with_provider(PROVIDER)
        })
}

fn cursor_of(t: chrono::DateTime<chrono::Utc>) -> SyncCursor {
    SyncCursor(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[async_trait]
impl Source for RestDirectory {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.instance.clone())
    }

    fn capabilities(&self) -> Capabilities {
        let a = &self.cfg.accounts;
        let o = self.cfg.orgs.as_ref();
        let both = |f: fn(&EntityConfig) -> bool| f(a) && o.is_none_or(f);
        Capabilities {
            orgs: o.is_some(),
            readable: true,
            changes: both(|e| e.incremental.is_some()),
            create: both(|e| e.create.is_some()),
            update: both(|e| e.update.is_some()),
            disable: a.update.is_some() && a.status.is_some(),
            delete: both(|e| e.delete.is_some()),
            move_org: o.is_some_and(|o| o.update.is_some() && o.fields.contains_key("parent")),
            assigns_anchors: [Some(a), o]
                .into_iter()
                .flatten()
                .any(|e| e.create.as_ref().is_some_and(|c| c.id.is_some())),
            max_page_size: Some(o.map_or(a.page_size, |o| o.page_size.min(a.page_size))),
            rate_limit: self.cfg.requests_per_second.map(|n| RateLimit {
                requests: n,
                per: Duration::from_secs(1),
            }),
            ..Capabilities::read_only()
        }
    }

    async fn check(&self) -> Result<()> {
        let cfg = &self.cfg.accounts;
        self.page(cfg, PageRequest::sized(1), None, |v, at_, i| {
            self.read_account(v, at_, i)
        })
        .await
        .map(|_| ())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        let Some(cfg) = &self.cfg.orgs else {
            return Ok(Page::last(Vec::new()));
        };
        self.page(cfg, page, None, |v, at_, i| self.read_org(cfg, v, at_, i))
            .await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.page(&self.cfg.accounts, page, None, |v, at_, i| {
            self.read_account(v, at_, i)
        })
        .await
    }

    /// Looked up at `item_path`; without one, the listing is read ([`idsync_core::source::scan_org`]).
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        let Some(cfg) = &self.cfg.orgs else {
            return Ok(None);
        };
        if cfg.item_path.is_none() {
            return idsync_core::source::scan_org(self, anchor).await;
        }
        match self.lookup(cfg, anchor).await? {
            Some(v) => {
                let path = fill(cfg.item_path.as_deref().unwrap_or_default(), anchor);
                Ok(Some(self.read_org(
                    cfg,
                    &v,
                    &At::single(self.base_path.clone() + &path),
                    0,
                )?))
            }
            None => Ok(None),
        }
    }

    /// Looked up at `item_path`; without one, the listing is read ([`idsync_core::source::scan_account`]).
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        let cfg = &self.cfg.accounts;
        if cfg.item_path.is_none() {
            return idsync_core::source::scan_account(self, anchor).await;
        }
        match self.lookup(cfg, anchor).await? {
            Some(v) => {
                let path = fill(cfg.item_path.as_deref().unwrap_or_default(), anchor);
                Ok(Some(self.read_account(
                    &v,
                    &At::single(self.base_path.clone() + &path),
                    0,
                )?))
            }
            None => Ok(None),
        }
    }

    /// A generic API has no search that folds case the way correlation keys do: the
    /// listing is read and compared by [`idsync_core::correlation_key`]
    /// ([`idsync_core::source::scan_find_accounts`], explicitly).
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        idsync_core::source::scan_find_accounts(self, field, value).await
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        if !self.capabilities().changes {
            return Err(Error::unsupported(format!(
                "{PROVIDER}: `incremental` is not configured for every entity"
            )));
        }
        Ok(cursor_of(chrono::Utc::now()))
    }

    /// The listings with the "updated since" parameter at the cursor minus the overlap;
    /// the new cursor is the highest change time seen. Deletes are not reported: the
    /// periodic full run catches them.
    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        if !self.capabilities().changes {
            return Err(Error::unsupported(format!(
                "{PROVIDER}: `incremental` is not configured for every entity"
            )));
        }
        let from = parse_cursor(since)?;
        let mut high = from;
        let mut cs = ChangeSet {
            complete: true,
            ..ChangeSet::default()
        };
        let mut bump = |item_time: Option<chrono::DateTime<chrono::Utc>>,
                        what: &str,
                        anchor: &Anchor|
         -> Result<()> {
            match item_time {
                Some(t) => {
                    high = high.max(t);
                    Ok(())
                }
                None => Err(Error::invalid_data(format!(
                    "{PROVIDER}: {what} {anchor} has no change time (RFC 3339 or Unix seconds) \
                     at the incremental pointer"
                ))
                .with_provider(PROVIDER)),
            }
        };
        if let Some(cfg) = &self.cfg.orgs
            && let (Some(p), Some(inc)) = (self.since_param(cfg, from), &cfg.incremental)
        {
            let raw = self
                .all_changed(cfg, &p, |v: &Value, at_: &At, i| {
                    Ok((self.read_org(cfg, v, at_, i)?, changed_at(v, &inc.pointer)))
                })
                .await?;
            for (o, t) in raw {
                bump(t, "org", &o.anchor)?;
                cs.org_upserts.push(o);
            }
        }
        let cfg = &self.cfg.accounts;
        if let (Some(p), Some(inc)) = (self.since_param(cfg, from), &cfg.incremental) {
            let raw = self
                .all_changed(cfg, &p, |v: &Value, at_: &At, i| {
                    Ok((self.read_account(v, at_, i)?, changed_at(v, &inc.pointer)))
                })
                .await?;
            for (a, t) in raw {
                bump(t, "account", &a.anchor)?;
                cs.account_upserts.push(a);
            }
        }
        cs.cursor = Some(cursor_of(high));
        Ok(cs)
    }
}

/// What a listing page holds: something with an anchor (the page fingerprint uses it).
trait Anchored: Send {
    fn anchor_ref(&self) -> &Anchor;
}

impl Anchored for Org {
    fn anchor_ref(&self) -> &Anchor {
        &self.anchor
    }
}

impl Anchored for Account {
    fn anchor_ref(&self) -> &Anchor {
        &self.anchor
    }
}

/// An entity with its change time, read in one pass.
type Timed<E> = (E, Option<chrono::DateTime<chrono::Utc>>);

impl<E: Anchored> Anchored for Timed<E> {
    fn anchor_ref(&self) -> &Anchor {
        self.0.anchor_ref()
    }
}

#[async_trait]
impl Sink for RestDirectory {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        use idsync_core::EntityKind::{Account as A, Org as O};
        match op {
            Op::CreateOrg { org } => {
                self.create(O, org, |cfg, with_anchor| {
                    map::body_of(org, cfg, with_anchor)
                })
                .await
            }
            Op::CreateAccount { account } => {
                self.create(A, account, |cfg, with_anchor| {
                    map::account_body(account, cfg, with_anchor)
                })
                .await
            }
            Op::UpdateOrg { anchor, changes } => self.update(O, anchor, changes).await,
            Op::UpdateAccount { anchor, changes } => self.update(A, anchor, changes).await,
            Op::MoveOrg { anchor, parent } => {
                let mut p = Patch::new();
                p.insert(
                    "parent".into(),
                    parent
                        .as_ref()
                        .map_or(Value::Null, |a| Value::from(a.as_str())),
                );
                self.update(O, anchor, &p).await
            }
            Op::DisableAccount { anchor } | Op::EnableAccount { anchor } => {
                let mut p = Patch::new();
                let s = if matches!(op, Op::DisableAccount { .. }) {
                    "disabled"
                } else {
                    "active"
                };
                p.insert("status".into(), Value::from(s));
                self.update(A, anchor, &p).await
            }
            Op::DeleteOrg { anchor } => self.delete(O, anchor).await,
            Op::DeleteAccount { anchor } => self.delete(A, anchor).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn anchors_are_escaped_as_one_segment() {
        assert_eq!(escape_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(escape_segment("张"), "%E5%BC%A0");
        assert_eq!(escape_segment("u-1_2.3~"), "u-1_2.3~");
        assert_eq!(escape_segment(".."), "%2E%2E");
        assert_eq!(
            fill("/people/{anchor}", &Anchor::new("../x")),
            "/people/..%2Fx"
        );
    }

    #[test]
    fn error_bodies() {
        let e = check(401, serde_json::json!({"message": "expired"})).unwrap_err();
        assert!(e.token_bad && e.class.kind == ErrorKind::Unauthenticated);
        assert!(e.message.contains("expired"));
        let e = check(409, serde_json::json!({})).unwrap_err();
        assert_eq!(e.class.kind, ErrorKind::AlreadyExists);
        assert!(check(404, serde_json::json!({})).is_ok());
        assert!(check(429, serde_json::json!({})).is_ok());
    }
}
