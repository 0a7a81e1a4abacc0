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
//! Page tokens are small JSON values (department ids and a cursor), so a failed page is
//! retried on its own and a listing can resume.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Capabilities, ChangeSet, Descriptor, Error, ErrorKind, Org, Page, PageRequest,
    PageToken, RateLimit, Result, Source, SyncCursor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::PROVIDER;
use crate::callback::{EventLog, EventTarget};
use crate::client::{Client, int_of};
use crate::config::DingTalkConfig;
use crate::mapping;

/// Reads a DingTalk organization: departments, members, and (with an [`EventLog`] fed by
/// the [callback router](crate::callback::callback_router)) changes.
#[derive(Debug, Clone)]
pub struct DingTalkSource {
    pub(crate) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: DingTalkConfig,
    pub(crate) client: Client,
    pub(crate) events: Option<Arc<EventLog>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OrgToken {
    /// Departments whose children are still to be listed.
    q: VecDeque<i64>,
    /// Children listed but not read yet: (child, parent).
    p: VecDeque<(i64, i64)>,
    /// Every department seen so far.
    v: BTreeSet<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountToken {
    /// Departments not started yet (their children not listed yet).
    q: VecDeque<i64>,
    /// Departments finished (their members emitted).
    d: BTreeSet<i64>,
    /// The department being paged, and the `v2/user/list` cursor in it.
    c: Option<(i64, i64)>,
}

fn decode_token<T: for<'de> Deserialize<'de>>(t: &PageToken) -> Result<T> {
    serde_json::from_str(&t.0).map_err(|e| {
        Error::invalid_data("not a DingTalk page token")
            .with_provider(PROVIDER)
            .with_source(e)
    })
}

fn encode_token<T: Serialize>(t: &T) -> Result<PageToken> {
    Ok(PageToken(serde_json::to_string(t)?))
}

impl DingTalkSource {
    /// A source for the tenant and app in `cfg`.
    pub fn new(cfg: DingTalkConfig) -> Result<Self> {
        Self::build(cfg, None)
    }

    /// A source whose [`Source::changes`] reads the events recorded in `events` (fed by
    /// [`callback_router`](crate::callback::callback_router)).
    pub fn with_events(cfg: DingTalkConfig, events: Arc<EventLog>) -> Result<Self> {
        Self::build(cfg, Some(events))
    }

    fn build(cfg: DingTalkConfig, events: Option<Arc<EventLog>>) -> Result<Self> {
        cfg.validate()?;
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
        self.inner
            .client
            .post(path, &body)
            .await
            .map_err(|e| Error::from(e).with_operation(path.to_owned()))
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

    /// One department (`v2/department/get`); `None` when it does not exist.
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
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One user (`v2/user/get`); `None` when it does not exist.
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
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn org_page(&self, page: PageRequest) -> Result<Page<Org>> {
        let root = self.inner.cfg.root_dept_id;
        let want = page.size.unwrap_or(100).max(1);
        let mut items = Vec::new();
        let mut tok = match &page.token {
            None => OrgToken {
                q: VecDeque::from([root]),
                p: VecDeque::new(),
                v: BTreeSet::from([root]),
            },
            Some(t) => decode_token(t)?,
        };
        // Read listed children, listing the next department's children when none are
        // pending, until the page is full.
        while items.len() < want {
            if let Some((child, parent)) = tok.p.pop_front() {
                if let Some(mut org) = self.dept(child).await? {
                    if org.parent.is_none() && parent != root {
                        org.parent = Some(Anchor::new(parent.to_string()));
                    }
                    items.push(org);
                    tok.q.push_back(child);
                }
                continue;
            }
            let Some(dept) = tok.q.pop_front() else { break };
            for child in self.listsub(dept).await? {
                // visited already: a repeated id or a cycle
                if tok.v.insert(child) {
                    tok.p.push_back((child, dept));
                }
            }
        }
        let next = if tok.q.is_empty() && tok.p.is_empty() {
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
                q: VecDeque::from([root]),
                ..AccountToken::default()
            },
            Some(t) => decode_token(t)?,
        };
        let mut items: Vec<Account> = Vec::with_capacity(size);
        let mut this_page = HashSet::new();
        // Fill the page from as many departments as it takes.
        while items.len() < size {
            let (dept, cursor) = match tok.c {
                Some(c) => c,
                None => {
                    let Some(dept) = tok.q.pop_front() else { break };
                    let mut seen: HashSet<i64> = tok.d.iter().copied().collect();
                    seen.extend(tok.q.iter().copied());
                    seen.insert(dept);
                    for child in self.listsub(dept).await? {
                        if seen.insert(child) {
                            tok.q.push_back(child);
                        }
                    }
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
                        None => continue, // left while listing
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
        let next = if tok.c.is_none() && tok.q.is_empty() {
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
        let batch = log.since(since);
        let mut cs = ChangeSet {
            cursor: Some(batch.cursor),
            complete: batch.complete,
            ..ChangeSet::default()
        };
        if !batch.complete {
            return Ok(cs);
        }
        for (target, deleted) in batch.targets {
            match target {
                EventTarget::User(id) => {
                    if deleted {
                        cs.account_deletes.push(Anchor::new(id));
                        continue;
                    }
                    match self.user(&id).await? {
                        Some(a) => cs.account_upserts.push(a),
                        None => cs.account_deletes.push(Anchor::new(id)),
                    }
                }
                EventTarget::Dept(id) => {
                    if deleted {
                        cs.org_deletes.push(Anchor::new(id.to_string()));
                        continue;
                    }
                    match self.dept(id).await? {
                        Some(o) => cs.org_upserts.push(o),
                        None => cs.org_deletes.push(Anchor::new(id.to_string())),
                    }
                }
            }
        }
        Ok(cs)
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
        self.user(anchor.as_str())
            .await
            .map_err(|e| e.with_operation("account"))
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        match &self.inner.events {
            Some(log) => Ok(log.current()),
            None => Err(Error::unsupported("changes need an EventLog").with_provider(PROVIDER)),
        }
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.collect_changes(since)
            .await
            .map_err(|e| e.with_operation("changes"))
    }
}
