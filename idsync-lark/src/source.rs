//! [`LarkSource`]: the department tree and its members, page by page, and changes from
//! contact events.
//!
//! * **Orgs**: a breadth-first walk from the root `"0"` over
//!   `contact/v3/departments/:id/children` (page size ≤ 50; the objects are complete, no
//!   detail read), with the toolkit's [`TreeWalk`]: a cycle or a department under two
//!   parents fails the listing.
//! * **Accounts**: the same walk; per department `contact/v3/users/find_by_department`
//!   (direct members, page size ≤ 50). A person in several departments is listed once, at
//!   the first of them the walk reaches (the page token remembers the finished
//!   departments), with the primary department (`orders[].is_primary_dept`) first.
//! * **Lookups**: `org` is `GET departments/:id`, `account` is `GET users/:id`;
//!   `find_accounts` by `anchor` is a lookup, other fields an explicit scan of the
//!   listing.
//! * **Changes**: the events a [callback router](crate::callback_router) recorded.
//!   `*_deleted_v3` is Lark's explicit word that an entity is gone; every other event is
//!   re-read with the id types of this source (only Lark's explicit "not found", 40015 /
//!   41012, makes a delete; any other failure fails the call, so the cursor does not
//!   advance). `contact.scope.updated_v3` (the app's visible range changed) answers an
//!   incomplete change set: a full run is due, and nothing is deleted or disabled from it.
//!
//! Page tokens are small JSON values (the walk's state and Lark's page token), so a
//! failed page is retried on its own and a listing can resume. A page makes at most five
//! API calls (it may hold fewer items than asked for), so a page read again after a
//! throttle redoes little.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Capabilities, ChangeSet, Descriptor, Error, Org, Page, PageRequest, RateLimit,
    Result, Source, SyncCursor,
};
use idsync_http::{EventLog, TreeWalk, decode_token, encode_token};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PROVIDER;
use crate::callback::LarkEvents;
use crate::client::LarkClient;
use crate::config::Connection;
use crate::error::{DEPT_NOT_FOUND, USER_NOT_FOUND, has_code};
use crate::mapping::{ROOT, UserMapping, account_from_user, org_from_department};

/// What a contact event names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A user, by the source's anchor id type.
    User(String),
    /// A department, by `open_department_id`.
    Dept(String),
    /// The app's contact scope changed (`contact.scope.updated_v3`).
    Scope,
}

/// The in-memory event log a callback router feeds and [`LarkSource::changes`] reads
/// (`idsync serve` uses the store's inbox instead: [`LarkEvents`]).
pub type LarkEventLog = EventLog<Target>;

/// Lark's page size maximum for `children` and `find_by_department`.
pub(crate) const LARK_PAGE_MAX: usize = 50;
/// Lark allows 25 department levels; the walk refuses deeper trees.
const MAX_DEPTH: u32 = 64;
const DEFAULT_PAGE: usize = 200;
/// A page makes at most this many API calls (then it ends early, with its token): a page
/// the retry layer reads again after a throttle redoes only these.
const CALLS_PER_PAGE: usize = 5;

/// The department path of children.
pub(crate) fn children_path(id: &str) -> String {
    format!("/contact/v3/departments/{id}/children")
}

/// The path of users find_by_department.
pub(crate) const FIND_BY_DEPARTMENT: &str = "/contact/v3/users/find_by_department";

#[derive(Debug, Serialize, Deserialize)]
struct OrgToken {
    w: TreeWalk<String>,
    /// The department whose children are being paged, its depth, Lark's page token.
    c: Option<(String, u32, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountToken {
    w: TreeWalk<String>,
    /// Departments finished (their members listed).
    d: BTreeSet<String>,
    /// The department being paged and Lark's page token in it.
    c: Option<(String, String)>,
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) client: LarkClient,
    events: Option<Arc<LarkEvents>>,
}

/// The Lark directory as a source.
#[derive(Clone)]
pub struct LarkSource {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LarkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarkSource")
            .field("conn", &self.inner.conn)
            .field("events", &self.inner.events.is_some())
            .finish()
    }
}

fn bad_answer(msg: String) -> Error {
    Error::invalid_data(msg).with_provider(PROVIDER)
}

/// `items` (absent on an empty page), `has_more`, `page_token` (absent or `""` at the end).
fn page_parts(v: &Value, what: &str) -> Result<(Vec<Value>, Option<String>)> {
    let items = match v.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad_answer(format!("{what}: items is not a list"))),
    };
    let more = matches!(v.get("has_more"), Some(Value::Bool(true)));
    let token = v
        .get("page_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    match (more, token) {
        (true, None) => Err(bad_answer(format!("{what}: has_more without page_token"))),
        (true, Some(t)) => Ok((items, Some(t))),
        (false, _) => Ok((items, None)),
    }
}

impl LarkSource {
    /// A source without change tracking.
    pub fn new(conn: Connection) -> Result<Self> {
        Self::build(conn, None)
    }

    /// A source whose `changes` read `events` (fed by [`callback_router`](crate::callback_router)):
    /// a [`LarkEventLog`] or a store's inbox ([`idsync_http::StoreEventLog`]).
    pub fn with_events(conn: Connection, events: Arc<LarkEvents>) -> Result<Self> {
        Self::build(conn, Some(events))
    }

    fn build(conn: Connection, events: Option<Arc<LarkEvents>>) -> Result<Self> {
        let client = LarkClient::new(&conn)?;
        Ok(LarkSource {
            inner: Arc::new(Inner {
                conn,
                client,
                events,
            }),
        })
    }

    /// Access tokens fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.inner.client.token_fetches()
    }

    pub(crate) fn client(&self) -> &LarkClient {
        &self.inner.client
    }

    pub(crate) fn user_mapping(&self) -> UserMapping {
        UserMapping {
            id_type: self.inner.client.user_id_type(),
            extra_attrs: self.inner.conn.extra_attrs,
        }
    }

    /// One user by anchor; `None` only on Lark's explicit "not found" (41012).
    pub async fn user(&self, id: &str) -> Result<Option<Account>> {
        if !plain_id(id) {
            return Ok(None);
        }
        match self
            .inner
            .client
            .get(&format!("/contact/v3/users/{id}"), &[])
            .await
        {
            Ok(v) => {
                let u = v
                    .get("user")
                    .ok_or_else(|| bad_answer(format!("users/{id}: no user")))?;
                Ok(Some(account_from_user(u, &self.user_mapping())?))
            }
            Err(e) if has_code(&e, USER_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One department by `open_department_id`; `None` for the root (the tenant) and on
    /// Lark's explicit "not found" (40015).
    pub async fn dept(&self, id: &str) -> Result<Option<Org>> {
        if id == ROOT || !plain_id(id) {
            return Ok(None);
        }
        match self
            .inner
            .client
            .get(&format!("/contact/v3/departments/{id}"), &[])
            .await
        {
            Ok(v) => {
                let d = v
                    .get("department")
                    .ok_or_else(|| bad_answer(format!("departments/{id}: no department")))?;
                Ok(Some(org_from_department(d, self.inner.conn.extra_attrs)?))
            }
            Err(e) if has_code(&e, DEPT_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn children(
        &self,
        dept: &str,
        size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let mut q = vec![("page_size", size.clamp(1, LARK_PAGE_MAX).to_string())];
        if let Some(t) = token {
            q.push(("page_token", t.to_owned()));
        }
        let path = children_path(dept);
        let v = self.inner.client.get(&path, &q).await?;
        page_parts(&v, "departments/children")
    }

    async fn org_page(&self, page: PageRequest) -> Result<Page<Org>> {
        let want = page.size.unwrap_or(DEFAULT_PAGE).max(1);
        let mut tok = match &page.token {
            None => OrgToken {
                w: TreeWalk::new(ROOT.to_owned(), MAX_DEPTH),
                c: None,
            },
            Some(t) => decode_token(PROVIDER, t)?,
        };
        let mut items = Vec::new();
        let mut calls = 0;
        while items.len() < want && calls < CALLS_PER_PAGE {
            calls += 1;
            let (dept, depth, cursor) = match tok.c.take() {
                Some((d, depth, c)) => (d, depth, Some(c)),
                None => match tok.w.next() {
                    Some((d, depth)) => (d, depth, None),
                    None => break,
                },
            };
            let (list, next) = self
                .children(&dept, want - items.len(), cursor.as_deref())
                .await?;
            let mut ids = Vec::with_capacity(list.len());
            for d in &list {
                let mut org = org_from_department(d, self.inner.conn.extra_attrs)?;
                if org.parent.is_none() && dept != ROOT {
                    org.parent = Some(Anchor::new(dept.clone()));
                }
                ids.push(org.anchor.as_str().to_owned());
                items.push(org);
            }
            tok.w.add_children(&dept, depth, ids).map_err(|e| {
                e.with_provider(PROVIDER)
                    .with_operation("/contact/v3/departments/:id/children")
            })?;
            if let Some(n) = next {
                tok.c = Some((dept, depth, n));
            }
        }
        let next = if tok.c.is_none() && tok.w.is_done() {
            None
        } else {
            Some(encode_token(&tok)?)
        };
        Ok(Page { items, next })
    }

    /// Lists the children ids of `dept` (all pages), for the account walk; counts the
    /// calls into `calls`.
    async fn all_children(&self, dept: &str, calls: &mut usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            *calls += 1;
            let (list, next) = self
                .children(dept, LARK_PAGE_MAX, cursor.as_deref())
                .await?;
            for d in &list {
                let id = d
                    .get("open_department_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_answer("children: no open_department_id".into()))?;
                out.push(id.to_owned());
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }

    async fn account_page(&self, page: PageRequest) -> Result<Page<Account>> {
        let size = page.size.unwrap_or(DEFAULT_PAGE).max(1);
        let mut tok = match &page.token {
            None => AccountToken {
                w: TreeWalk::new(ROOT.to_owned(), MAX_DEPTH),
                d: BTreeSet::new(),
                c: None,
            },
            Some(t) => decode_token(PROVIDER, t)?,
        };
        let map = self.user_mapping();
        let key = map.id_type.as_str();
        let mut items: Vec<Account> = Vec::with_capacity(size.min(1000));
        let mut this_page = HashSet::new();
        let mut calls = 0;
        while items.len() < size && calls < CALLS_PER_PAGE {
            let (dept, cursor) = match tok.c.take() {
                Some((d, c)) => (d, Some(c)),
                None => {
                    let Some((dept, depth)) = tok.w.next() else {
                        break;
                    };
                    let children = self.all_children(&dept, &mut calls).await?;
                    tok.w.add_children(&dept, depth, children).map_err(|e| {
                        e.with_provider(PROVIDER)
                            .with_operation("/contact/v3/departments/:id/children")
                    })?;
                    (dept, None)
                }
            };
            let mut q = vec![
                ("department_id", dept.clone()),
                (
                    "page_size",
                    (size - items.len()).clamp(1, LARK_PAGE_MAX).to_string(),
                ),
            ];
            if let Some(c) = &cursor {
                q.push(("page_token", c.clone()));
            }
            calls += 1;
            let v = self.inner.client.get(FIND_BY_DEPARTMENT, &q).await?;
            let (list, next) = page_parts(&v, "users/find_by_department")?;
            for u in &list {
                let id = u.get(key).and_then(Value::as_str).unwrap_or_default();
                let depts: Vec<&str> = u
                    .get("department_ids")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                // listed already at a finished department (or twice on this page)
                if depts.iter().any(|d| *d != dept && tok.d.contains(*d))
                    || !this_page.insert(id.to_owned())
                {
                    continue;
                }
                items.push(account_from_user(u, &map)?);
            }
            match next {
                Some(n) => tok.c = Some((dept, n)),
                None => {
                    tok.d.insert(dept);
                }
            }
        }
        let next = if tok.c.is_none() && tok.w.is_done() {
            None
        } else {
            Some(encode_token(&tok)?)
        };
        Ok(Page { items, next })
    }

    async fn collect_changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let Some(log) = &self.inner.events else {
            return Err(no_events());
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
        if batch.targets.iter().any(|(t, _)| *t == Target::Scope) {
            // The visible range changed: who is in it is only known from a full read. No
            // delete or disable comes from here.
            cs.complete = false;
            return Ok(cs);
        }
        for (target, deleted) in batch.targets {
            match target {
                Target::User(id) if deleted => cs.account_deletes.push(Anchor::new(id)),
                Target::User(id) => match self.user(&id).await? {
                    Some(a) => cs.account_upserts.push(a),
                    None => cs.account_deletes.push(Anchor::new(id)),
                },
                Target::Dept(id) if deleted => cs.org_deletes.push(Anchor::new(id)),
                Target::Dept(id) => match self.dept(&id).await? {
                    Some(o) => cs.org_upserts.push(o),
                    None => cs.org_deletes.push(Anchor::new(id)),
                },
                Target::Scope => {}
            }
        }
        Ok(cs)
    }
}

fn no_events() -> Error {
    Error::unsupported("lark: changes need contact events (LarkSource::with_events)")
        .with_provider(PROVIDER)
}

#[async_trait]
impl Source for LarkSource {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.inner.conn.instance_name())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: self.inner.events.is_some(),
            max_page_size: Some(1000),
            rate_limit: Some(RateLimit {
                requests: self.inner.conn.qps,
                per: std::time::Duration::from_secs(1),
            }),
            ..Capabilities::read_only()
        }
    }

    async fn check(&self) -> Result<()> {
        self.inner.client.check_token().await?;
        self.children(ROOT, 1, None).await.map(|_| ())
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
        self.dept(anchor.as_str()).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.user(anchor.as_str()).await
    }

    /// `anchor` is a direct lookup; Lark has no search by the other fields for apps, so
    /// they are an explicit scan of the account listing (one full read).
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        if idsync_core::correlation_key(value).is_none() {
            return Ok(Vec::new());
        }
        if field == "anchor" {
            let mut found: Vec<Account> = self.user(value.trim()).await?.into_iter().collect();
            found.retain(|a| idsync_core::key_matches(a, field, value));
            return Ok(found);
        }
        idsync_core::source::scan_find_accounts(self, field, value).await
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        match &self.inner.events {
            Some(log) => log.current().await,
            None => Err(no_events()),
        }
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.collect_changes(since)
            .await
            .map_err(|e| e.with_operation("changes"))
    }
}

/// True for an id that can go into a path as it is (Lark ids are `[A-Za-z0-9_-]`; custom
/// `user_id`s may hold `.` and `@`).
pub(crate) fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}
