//! [`DingTalkSource`]: the department tree and its members, page by page, and changes from
//! event callbacks.
//!
//! * Orgs: the root (`department/get`), then a breadth-first walk over
//!   `v2/department/listsub` with a visited set; each listed department is read with
//!   `v2/department/get` (order, leaders, `source_identifier` are only there).
//! * Accounts: the same walk; per department `v2/user/list` with cursor paging. A person in
//!   several departments is listed once, at the first department of the walk (the page
//!   token remembers the finished departments); such a person is read with `v2/user/get`
//!   so that orders and leader flags of all departments are known.
//!
//! Page tokens are small JSON values (the walk's state and a cursor), so a failed page is
//! retried on its own and a listing can resume.
//!
//! Nothing is read as "gone" from a failure (issue 11 point 5): the walk is an
//! [`idsync_http::TreeWalk`] (a cycle or a department under two parents fails the listing),
//! a department or person that vanishes between the listing and its detail read fails the
//! page with a temporary error (the retried page lists afresh), and only DingTalk's explicit
//! "user not found" (`60121`) / "department not found" (`60003`) turns an event into a
//! delete.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Capabilities, ChangeSet, Descriptor, Error, ErrorKind, ErrorStatus, Org, Page,
    PageRequest, PageToken, RateLimit, Result, Source, SyncCursor,
};
use idsync_http::{TreeWalk, decode_token, encode_token};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::PROVIDER;
use crate::callback::{DingTalkEvents, EventTarget};
use crate::client::{Client, int_of};
use crate::config::DingTalkConfig;
use crate::error::{DEPT_NOT_FOUND, USER_NOT_FOUND};
use crate::mapping;

/// Reads a DingTalk organization: departments, members, and (with an event log fed by
/// the [callback router](crate::callback::callback_router)) changes.
#[derive(Debug, Clone)]
pub struct DingTalkSource {
    pub(crate) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: DingTalkConfig,
    pub(crate) client: Client,
    pub(crate) events: Option<Arc<DingTalkEvents>>,
}

/// How deep the department walk may go (DingTalk allows far fewer levels).
const MAX_DEPTH: u32 = 64;
/// Attempts of one entity re-read in [`Source::changes`] on temporary errors.
const REREAD_ATTEMPTS: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
struct OrgToken {
    /// The walk: departments whose children are still to be listed, and all seen.
    w: TreeWalk<i64>,
    /// Children listed but not read yet: (child, parent).
    p: VecDeque<(i64, i64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountToken {
    /// The walk: departments not started yet (their children not listed yet).
    w: TreeWalk<i64>,
    /// Departments finished (their members emitted).
    d: BTreeSet<i64>,
    /// The department being paged, and the `v2/user/list` cursor in it.
    c: Option<(i64, i64)>,
}

fn decode<T: for<'de> Deserialize<'de>>(t: &PageToken) -> Result<T> {
    decode_token(PROVIDER, t)
}

/// A department or person listed a moment ago is gone at its detail read: the page fails
/// (temporarily, so the retried page lists afresh), it is never skipped.
fn vanished(what: &str) -> Error {
    Error::new(
        ErrorKind::Incomplete,
        format!("{what} vanished between the listing and its detail read; the page is retried"),
    )
    .with_status(ErrorStatus::Temporary)
    .with_provider(PROVIDER)
}

/// True for DingTalk's explicit "not found" answer with `code`.
fn is_explicit(e: &Error, code: &str) -> bool {
    e.kind() == ErrorKind::NotFound && e.provider_code() == Some(code)
}

impl DingTalkSource {
    /// A source for the tenant and app in `cfg`.
    pub fn new(cfg: DingTalkConfig) -> Result<Self> {
        Self::build(cfg, None)
    }

    /// A source whose [`Source::changes`] reads the events recorded in `events` (fed by
    /// [`callback_router`](crate::callback::callback_router)).
    pub fn with_events(cfg: DingTalkConfig, events: Arc<DingTalkEvents>) -> Result<Self> {
        Self::build(cfg, Some(events))
    }

    fn build(mut cfg: DingTalkConfig, events: Option<Arc<DingTalkEvents>>) -> Result<Self> {
        cfg.validate()?;
        cfg.read_secrets()?;
        let client = Client::new(&cfg)?;
        Ok(DingTalkSource {
            inner: Arc::new(Shared {
                cfg,
                client,
                events,
            }),
        })
    }

    /// How many times an access token was fetched (tests and reports).
    pub fn token_fetches(&self) -> u64 {
        self.inner.client.token_fetches()
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.inner.client.post(path, &body).await
    }

    fn lang(&self) -> &str {
        &self.inner.cfg.language
    }

    async fn listsub(&self, dept: i64) -> Result<Vec<i64>> {
        let v = self
            .post(
                "/topapi/v2/department/listsub",
                json!({"dept_id": dept, "language": self.lang()}),
            )
            .await?;
        let Some(Value::Array(list)) = v.get("result") else {
            return Err(bad_answer("department/listsub: no result list"));
        };
        Ok(list
            .iter()
            .filter_map(|d| d.get("dept_id").and_then(int_of))
            .collect())
    }

    /// One department (`v2/department/get`); `None` only on DingTalk's explicit
    /// "department not found" (`60003`).
    pub(crate) async fn dept(&self, dept: i64) -> Result<Option<Org>> {
        let r = self
            .post(
                "/topapi/v2/department/get",
                json!({"dept_id": dept, "language": self.lang()}),
            )
            .await;
        match r {
            Ok(v) => {
                let org = mapping::org_from_detail(v.get("result").unwrap_or(&Value::Null))?;
                Ok(Some(self.scoped_org(org)))
            }
            Err(e) if is_explicit(&e, DEPT_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One user (`v2/user/get`); `None` only on DingTalk's explicit "user not found"
    /// (`60121`).
    pub(crate) async fn user(&self, userid: &str) -> Result<Option<Account>> {
        let r = self
            .post(
                "/topapi/v2/user/get",
                json!({"userid": userid, "language": self.lang()}),
            )
            .await;
        match r {
            Ok(v) => Ok(Some(self.scoped_account(mapping::account_from_detail(
                v.get("result").unwrap_or(&Value::Null),
                self.inner.cfg.fetch_user_details,
            )?))),
            Err(e) if is_explicit(&e, USER_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn org_page(&self, page: PageRequest) -> Result<Page<Org>> {
        let root = self.inner.cfg.root_dept_id;
        let want = page.size.unwrap_or(100).max(1);
        let mut items = Vec::new();
        let mut tok = match &page.token {
            None => OrgToken {
                w: TreeWalk::new(root, MAX_DEPTH),
                p: VecDeque::new(),
            },
            Some(t) => decode(t)?,
        };
        // Read listed children, listing the next department's children when none are
        // pending, until the page is full.
        while items.len() < want {
            if let Some((child, parent)) = tok.p.pop_front() {
                let Some(mut org) = self.dept(child).await? else {
                    return Err(vanished(&format!("department {child} (under {parent})")));
                };
                if org.parent.is_none() && parent != root {
                    org.parent = Some(Anchor::new(parent.to_string()));
                }
                items.push(org);
                continue;
            }
            let Some((dept, depth)) = tok.w.next() else {
                break;
            };
            let children = self.listsub(dept).await?;
            for child in tok.w.add_children(&dept, depth, children).map_err(|e| {
                e.with_provider(PROVIDER)
                    .with_operation("/topapi/v2/department/listsub")
            })? {
                tok.p.push_back((child, dept));
            }
        }
        let next = if tok.w.is_done() && tok.p.is_empty() {
            None
        } else {
            Some(encode_token(&tok)?)
        };
        Ok(Page { items, next })
    }

    async fn account_page(&self, page: PageRequest) -> Result<Page<Account>> {
        let root = self.inner.cfg.root_dept_id;
        let size = page
            .size
            .unwrap_or(self.inner.cfg.page_size)
            .clamp(1, self.inner.cfg.page_size);
        let mut tok = match &page.token {
            None => AccountToken {
                w: TreeWalk::new(root, MAX_DEPTH),
                d: BTreeSet::new(),
                c: None,
            },
            Some(t) => decode(t)?,
        };
        let mut items: Vec<Account> = Vec::with_capacity(size);
        let mut this_page = HashSet::new();
        // Fill the page from as many departments as it takes.
        while items.len() < size {
            let (dept, cursor) = match tok.c {
                Some(c) => c,
                None => {
                    let Some((dept, depth)) = tok.w.next() else {
                        break;
                    };
                    let children = self.listsub(dept).await?;
                    tok.w.add_children(&dept, depth, children).map_err(|e| {
                        e.with_provider(PROVIDER)
                            .with_operation("/topapi/v2/department/listsub")
                    })?;
                    (dept, 0)
                }
            };
            let want = size - items.len();
            let v = self
                .post(
                    "/topapi/v2/user/list",
                    json!({"dept_id": dept, "cursor": cursor, "size": want,
                           "order_field": "custom", "contain_access_limit": false,
                           "language": self.lang()}),
                )
                .await?;
            let result = v
                .get("result")
                .ok_or_else(|| bad_answer("v2/user/list: no result"))?;
            let list = match result.get("list") {
                Some(Value::Array(items)) => items.as_slice(),
                None | Some(Value::Null) => &[],
                Some(_) => return Err(bad_answer("v2/user/list: list is not an array")),
            };
            for item in list {
                let userid = item
                    .get("userid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let depts: Vec<i64> = match item.get("dept_id_list") {
                    Some(Value::Array(a)) => a.iter().filter_map(int_of).collect(),
                    _ => vec![dept],
                };
                // listed already at a finished department (or twice on this page)
                if depts.iter().any(|d| tok.d.contains(d)) || !this_page.insert(userid.to_owned()) {
                    continue;
                }
                let account = if mapping::dept_count(item) > 1 || self.inner.cfg.fetch_user_details
                {
                    match self.user(userid).await? {
                        Some(a) => a,
                        None => return Err(vanished(&format!("user {userid} (in {dept})"))),
                    }
                } else {
                    self.scoped_account(mapping::account_from_list_item(item, dept)?)
                };
                items.push(account);
            }
            let has_more = match result.get("has_more") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s == "true",
                _ => false,
            };
            if has_more {
                let next_cursor = result
                    .get("next_cursor")
                    .and_then(int_of)
                    .ok_or_else(|| bad_answer("v2/user/list: has_more without next_cursor"))?;
                if next_cursor <= cursor {
                    return Err(Error::new(
                        ErrorKind::Incomplete,
                        "v2/user/list: next_cursor does not advance",
                    )
                    .with_provider(PROVIDER));
                }
                tok.c = Some((dept, next_cursor));
            } else {
                tok.c = None;
                tok.d.insert(dept);
            }
        }
        let next = if tok.c.is_none() && tok.w.is_done() {
            None
        } else {
            Some(encode_token(&tok)?)
        };
        Ok(Page { items, next })
    }

    /// The root department is the tenant itself: it is not listed as an org, its children
    /// are roots (`parent: None`), and membership in it is no org membership.
    pub(crate) fn scoped_account(&self, mut a: Account) -> Account {
        let root = self.inner.cfg.root_dept_id.to_string();
        a.orgs.retain(|o| o.as_str() != root);
        if !self.inner.cfg.extra_attrs {
            a.attrs.clear();
        }
        a
    }

    fn scoped_org(&self, mut o: Org) -> Org {
        let root = self.inner.cfg.root_dept_id.to_string();
        if o.parent.as_ref().is_some_and(|p| p.as_str() == root) {
            o.parent = None;
        }
        if !self.inner.cfg.extra_attrs {
            o.attrs.clear();
        }
        o
    }

    pub(crate) fn capabilities_read(&self) -> Capabilities {
        Capabilities {
            changes: self.inner.events.is_some(),
            max_page_size: Some(self.inner.cfg.page_size),
            rate_limit: Some(RateLimit {
                requests: self.inner.cfg.qps,
                per: std::time::Duration::from_secs(1),
            }),
            ..Capabilities::read_only()
        }
    }

    async fn collect_changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let Some(log) = &self.inner.events else {
            return Err(
                Error::unsupported("changes need an EventLog fed by the callback router")
                    .with_provider(PROVIDER),
            );
        };
        let batch = log.since(since).await?;
        let mut cs = ChangeSet {
            cursor: Some(batch.cursor),
            complete: batch.complete,
            ..ChangeSet::default()
        };
        if !batch.complete {
            return Ok(cs);
        }
        // `user_leave_org` / `org_dept_remove` (signed pushes) are DingTalk's explicit
        // word that the entity is gone. Every other event is re-read: only DingTalk's
        // explicit not-found code makes a delete; any other failure is retried and then
        // fails the call (the cursor does not advance, so the events are read again).
        for (target, deleted) in batch.targets {
            match target {
                EventTarget::User(id) => {
                    if deleted {
                        cs.account_deletes.push(Anchor::new(id));
                        continue;
                    }
                    match self.reread(|| self.user(&id)).await? {
                        Some(a) => cs.account_upserts.push(a),
                        None => cs.account_deletes.push(Anchor::new(id)),
                    }
                }
                EventTarget::Dept(id) => {
                    if deleted {
                        cs.org_deletes.push(Anchor::new(id.to_string()));
                        continue;
                    }
                    match self.reread(|| self.dept(id)).await? {
                        Some(o) => cs.org_upserts.push(o),
                        None => cs.org_deletes.push(Anchor::new(id.to_string())),
                    }
                }
            }
        }
        Ok(cs)
    }
}

impl DingTalkSource {
    /// Runs one entity re-read, retrying temporary failures (with the provider's
    /// `retry_after`, else a short backoff) up to [`REREAD_ATTEMPTS`] times.
    async fn reread<T, F, Fut>(&self, read: F) -> Result<Option<T>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let mut attempt = 1;
        loop {
            match read().await {
                Err(e) if e.is_temporary() && attempt < REREAD_ATTEMPTS => {
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(200))
                        .min(Duration::from_secs(5));
                    tracing::debug!(attempt, error = %e, "DingTalk event re-read failed; retrying");
                    tokio::time::sleep(wait * attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Explicit scan of the account listing for `find_accounts` on fields DingTalk cannot
    /// search by: compares trimmed and case-insensitively, as the trait says.
    async fn scan_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        use idsync_core::Entity;
        let want = value.trim().to_lowercase();
        let mut out = Vec::new();
        let mut page = PageRequest::first();
        loop {
            let p = self.account_page(page).await?;
            out.extend(p.items.into_iter().filter(|a| {
                a.get(field)
                    .as_str()
                    .is_some_and(|v| v.trim().to_lowercase() == want)
            }));
            match p.next {
                Some(t) => {
                    page = PageRequest {
                        token: Some(t),
                        size: None,
                    }
                }
                None => return Ok(out),
            }
        }
    }
}

fn bad_answer(msg: &str) -> Error {
    Error::invalid_data(msg.to_owned()).with_provider(PROVIDER)
}

#[async_trait]
impl Source for DingTalkSource {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.inner.cfg.instance_name())
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities_read()
    }

    async fn check(&self) -> Result<()> {
        let root = self.inner.cfg.root_dept_id;
        match self.dept(root).await? {
            Some(_) => Ok(()),
            None => Err(
                Error::not_found(format!("root department {root} does not exist"))
                    .with_provider(PROVIDER),
            ),
        }
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.org_page(page)
            .await
            .map_err(|e| e.with_operation("orgs"))
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.account_page(page)
            .await
            .map_err(|e| e.with_operation("accounts"))
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        let Ok(id) = anchor.as_str().parse::<i64>() else {
            return Ok(None);
        };
        if id == self.inner.cfg.root_dept_id {
            return Ok(None); // the tenant itself, not an org
        }
        self.dept(id).await.map_err(|e| e.with_operation("org"))
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        match self.user(anchor.as_str()).await {
            // 33012 (not a valid userid) also answers "no such account" to a lookup
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            other => other.map_err(|e| e.with_operation("account")),
        }
    }

    /// `anchor` and `username` (both the `userid`) are a direct `v2/user/get`; other
    /// fields have no DingTalk search in the legacy API this crate uses, so they are an
    /// explicit scan of the account listing (one full read).
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        let found = match field {
            // The username is the userid: a direct read, as given and (correlation keys
            // are case-folded) lowercased; what comes back is checked by the one key rule.
            "anchor" | "username" => {
                let Some(key) = idsync_core::correlation_key(value) else {
                    return Ok(Vec::new());
                };
                let given = value.trim();
                let mut found: Vec<Account> = self
                    .account(&Anchor::new(given))
                    .await?
                    .into_iter()
                    .collect();
                if found.is_empty() && key != given {
                    found.extend(self.account(&Anchor::new(key.as_ref())).await?);
                }
                found.retain(|a| idsync_core::key_matches(a, field, value));
                found
            }
            _ => self.scan_accounts(field, value).await?,
        };
        Ok(found)
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        match &self.inner.events {
            Some(log) => log.current().await,
            None => Err(Error::unsupported("changes need an EventLog").with_provider(PROVIDER)),
        }
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.collect_changes(since)
            .await
            .map_err(|e| e.with_operation("changes"))
    }
}
