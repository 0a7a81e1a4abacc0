//! [`WeComSource`]: the corp's departments and members, page by page, and changes from
//! `change_contact` callbacks.
//!
//! * **Orgs**: `department/simplelist?id=<root>` (ids, parents, orders), then
//!   `department/get` per department, in pages ordered by id; the page token is the last id
//!   served, so departments created or removed meanwhile never shift the listing. With
//!   `use_department_list`, one `department/list` call instead (refused with 48009 to
//!   contact-sync secrets from a new IP since 2022-08-15). A department that vanishes
//!   between the two calls fails the page (temporarily), it is never skipped.
//! * **Accounts**: `user/list_id` cursor pages (one row per (user, department)), then
//!   `user/get` per user. A user in several departments is emitted once, from the row of its
//!   main department (the first department when the main one is unknown). A user deleted
//!   between the two calls (60111, WeCom's explicit "not found") is not listed. A user whose
//!   main department changes while the listing runs may be missed or listed twice; the
//!   next run (or the change callbacks) settles it.
//! * **Lookups**: `org` is `department/get`; `account` is `user/get`; `find_accounts` uses
//!   `user/get` for `username`/`anchor`, `user/get_userid_by_email` for `email` and
//!   `user/getuserid` for `phone`; any other field is an explicit scan of the listing.
//! * **Changes**: the events a callback router recorded, each entity re-read (`user/get`,
//!   `department/get`): only WeCom's explicit "not found" (60111 / 60003) becomes a delete;
//!   any other failure fails the call, so the cursor is not advanced. A `NewUserID` rename
//!   is a [`Rename`] of the change set (the engine moves the link, so the person keeps its
//!   target account) and an upsert under the new userid, never a delete of the old one.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use idsync_core::{
    Account, Anchor, Capabilities, ChangeSet, Descriptor, Entity, Error, ErrorKind, Org, Page,
    PageRequest, RateLimit, Rename, Result, Source, SourceExt, SyncCursor,
};
use idsync_http::{EventLog, decode_token, encode_token, int_of};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::PROVIDER;
use crate::client::WeComClient;
use crate::config::Connection;
use crate::error::has_code;
use crate::mapping::{account_from_user, listing_department, merge_dept_rows, org_from_department};

/// An entity a `change_contact` event names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A member (`userid`).
    User(String),
    /// A member whose userid changed (`update_user` with `NewUserID`): the same person, its
    /// link moves from `from` to `to`.
    UserRenamed {
        /// The old userid.
        from: String,
        /// The new userid (`NewUserID`), the one re-read.
        to: String,
    },
    /// A department (`id`).
    Dept(i64),
}

/// The event log a callback router feeds and [`WeComSource::changes`] reads.
pub type WeComEventLog = EventLog<Target>;

const DEFAULT_ORG_PAGE: usize = 100;

#[derive(Debug, Serialize, Deserialize)]
struct OrgToken {
    after: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountToken {
    cursor: String,
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) client: WeComClient,
    events: Option<Arc<crate::callback::WeComEvents>>,
}

/// The WeCom directory as a source.
#[derive(Clone)]
pub struct WeComSource {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for WeComSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeComSource")
            .field("conn", &self.inner.conn)
            .field("events", &self.inner.events.is_some())
            .finish()
    }
}

fn not_found_as_none<T>(r: Result<T>, code: i64) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if has_code(&e, code) => Ok(None),
        Err(e) => Err(e),
    }
}

impl WeComSource {
    /// A source without change tracking.
    pub fn new(conn: Connection) -> Result<Self> {
        Self::build(conn, None)
    }

    /// A source whose `changes` read `events` (fed by [`callback_router`](crate::callback_router)).
    pub fn with_events(
        conn: Connection,
        events: Arc<crate::callback::WeComEvents>,
    ) -> Result<Self> {
        Self::build(conn, Some(events))
    }

    fn build(conn: Connection, events: Option<Arc<crate::callback::WeComEvents>>) -> Result<Self> {
        let client = WeComClient::new(&conn)?;
        Ok(WeComSource {
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

    fn root(&self) -> i64 {
        self.inner.conn.root_dept_id
    }

    pub(crate) fn client(&self) -> &WeComClient {
        &self.inner.client
    }

    async fn user_json(&self, userid: &str) -> Result<Option<Value>> {
        not_found_as_none(
            self.inner
                .client
                .get("/user/get", &[("userid", userid.to_owned())])
                .await,
            60111,
        )
    }

    async fn dept_json(&self, id: i64) -> Result<Option<Value>> {
        let r = self
            .inner
            .client
            .get("/department/get", &[("id", id.to_string())])
            .await;
        Ok(not_found_as_none(r, 60003)?.and_then(|v| v.get("department").cloned()))
    }

    /// One member by userid.
    pub async fn user(&self, userid: &str) -> Result<Option<Account>> {
        match self.user_json(userid).await? {
            Some(v) => Ok(Some(account_from_user(
                &v,
                &self.inner.conn.user_mapping(),
            )?)),
            None => Ok(None),
        }
    }

    /// One department by id (`None` for the root: it is the corp, not an org).
    pub async fn dept(&self, id: i64) -> Result<Option<Org>> {
        if id == self.root() {
            return Ok(None);
        }
        match self.dept_json(id).await? {
            Some(v) => Ok(Some(org_from_department(
                &v,
                self.root(),
                self.inner.conn.extra_attrs,
            )?)),
            None => Ok(None),
        }
    }

    async fn orgs_by_list(&self) -> Result<Page<Org>> {
        let v = self
            .inner
            .client
            .get("/department/list", &[("id", self.root().to_string())])
            .await?;
        let items = v
            .get("department")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::invalid_data("department/list answered without department"))?;
        let mut out = Vec::with_capacity(items.len());
        for d in items {
            if d.get("id").and_then(int_of) == Some(self.root()) {
                continue;
            }
            out.push(org_from_department(
                d,
                self.root(),
                self.inner.conn.extra_attrs,
            )?);
        }
        Ok(Page::last(out))
    }

    async fn userid_for(&self, path: &str, body: Value) -> Result<Option<String>> {
        let r = self.inner.client.post(path, body).await;
        Ok(not_found_as_none(r, 46004)?
            .and_then(|v| v.get("userid").and_then(Value::as_str).map(str::to_owned)))
    }

    /// Re-reads every entity of `targets` into a change set. A rename becomes a
    /// [`Rename`] of the change set and a re-read of the new userid (once, however many
    /// events name it).
    async fn reread(&self, targets: Vec<(Target, bool)>) -> Result<ChangeSet> {
        let mut cs = ChangeSet {
            complete: true,
            ..ChangeSet::default()
        };
        let mut seen = BTreeSet::new();
        let mut reads = Vec::with_capacity(targets.len());
        for (t, _) in targets {
            let t = match t {
                Target::UserRenamed { from, to } => {
                    cs.account_renames.push(Rename {
                        from: Anchor::new(from),
                        to: Anchor::new(to.clone()),
                    });
                    Target::User(to)
                }
                t => t,
            };
            if seen.insert(t.clone()) {
                reads.push(t);
            }
        }
        let n = self.inner.conn.concurrency.max(1);
        let read: Vec<(Target, Option<Reread>)> = stream::iter(reads)
            .map(|t| async move {
                let r = match &t {
                    Target::User(u) | Target::UserRenamed { to: u, .. } => {
                        self.user(u).await?.map(Reread::Account)
                    }
                    Target::Dept(d) if *d == self.root() => Some(Reread::Root),
                    Target::Dept(d) => self.dept(*d).await?.map(Reread::Org),
                };
                Ok::<_, Error>((t, r))
            })
            .buffered(n)
            .try_collect()
            .await?;
        for (t, r) in read {
            match (t, r) {
                (_, Some(Reread::Account(a))) => cs.account_upserts.push(a),
                (_, Some(Reread::Org(o))) => cs.org_upserts.push(o),
                (_, Some(Reread::Root)) => {}
                (Target::User(u) | Target::UserRenamed { to: u, .. }, None) => {
                    cs.account_deletes.push(Anchor::new(u))
                }
                (Target::Dept(d), None) => cs.org_deletes.push(Anchor::new(d.to_string())),
            }
        }
        Ok(cs)
    }
}

enum Reread {
    Account(Account),
    Org(Org),
    Root,
}

#[async_trait]
impl Source for WeComSource {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.inner.conn.instance_name())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: self.inner.events.is_some(),
            max_page_size: Some(10_000),
            rate_limit: Some(RateLimit {
                requests: self.inner.conn.per_minute,
                per: self.inner.conn.rate_window,
            }),
            ..Capabilities::read_only()
        }
    }

    async fn check(&self) -> Result<()> {
        self.inner.client.check_tokens().await?;
        let root = self.root();
        match self.dept_json(root).await? {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!(
                "WeCom root department {root} does not exist (root_dept_id)"
            ))
            .with_provider(PROVIDER)),
        }
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        if self.inner.conn.use_department_list {
            return self.orgs_by_list().await;
        }
        let after = match &page.token {
            None => i64::MIN,
            Some(t) => decode_token::<OrgToken>(PROVIDER, t)?.after,
        };
        let size = page.size.unwrap_or(DEFAULT_ORG_PAGE).clamp(1, 10_000);
        let root = self.root();
        let v = self
            .inner
            .client
            .get("/department/simplelist", &[("id", root.to_string())])
            .await?;
        let items = v
            .get("department_id")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::invalid_data("department/simplelist answered without department_id")
                    .with_provider(PROVIDER)
            })?;
        let ids: BTreeSet<i64> = items
            .iter()
            .filter_map(|d| d.get("id").and_then(int_of))
            .filter(|id| *id != root && *id > after)
            .collect();
        let chosen: Vec<i64> = ids.iter().copied().take(size).collect();
        let more = ids.len() > chosen.len();
        let n = self.inner.conn.concurrency.max(1);
        let orgs: Vec<Org> = stream::iter(chosen.iter().copied())
            .map(|id| async move {
                self.dept(id).await?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("WeCom department {id} vanished between department/simplelist and department/get; the page is read again"),
                    )
                    .temporary()
                    .with_provider(PROVIDER)
                })
            })
            .buffered(n)
            .try_collect()
            .await?;
        let next = match (more, chosen.last()) {
            (true, Some(last)) => Some(encode_token(&OrgToken { after: *last })?),
            _ => None,
        };
        Ok(Page { items: orgs, next })
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let cursor = match &page.token {
            None => String::new(),
            Some(t) => decode_token::<AccountToken>(PROVIDER, t)?.cursor,
        };
        let limit = page
            .size
            .unwrap_or(self.inner.conn.list_limit)
            .clamp(1, 10_000);
        let v = self
            .inner
            .client
            .post("/user/list_id", json!({"cursor": cursor, "limit": limit}))
            .await?;
        let rows = v
            .get("dept_user")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::invalid_data("user/list_id answered without dept_user")
                    .with_provider(PROVIDER)
            })?;
        let merged = merge_dept_rows(rows)?;
        let n = self.inner.conn.concurrency.max(1);
        let map = self.inner.conn.user_mapping();
        let map = &map;
        let read: Vec<Option<Account>> = stream::iter(merged)
            .map(|(userid, depts)| async move {
                let Some(u) = self.user_json(&userid).await? else {
                    return Ok::<_, Error>(None);
                };
                // listed once: from the row of the main (else first) department
                let here = match listing_department(&u) {
                    Some(d) => depts.contains(&d),
                    None => true,
                };
                if !here {
                    return Ok(None);
                }
                Ok(Some(account_from_user(&u, map)?))
            })
            .buffered(n)
            .try_collect()
            .await?;
        let next_cursor = v
            .get("next_cursor")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let next = if next_cursor.is_empty() {
            None
        } else {
            Some(encode_token(&AccountToken {
                cursor: next_cursor.to_owned(),
            })?)
        };
        Ok(Page {
            items: read.into_iter().flatten().collect(),
            next,
        })
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        match anchor.as_str().parse::<i64>() {
            Ok(id) => self.dept(id).await,
            // not a department id: there is no such department
            Err(_) => Ok(None),
        }
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        if crate::mapping::check_userid(anchor.as_str()).is_err() {
            return Ok(None);
        }
        self.user(anchor.as_str()).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        let want = value.trim();
        if want.is_empty() {
            return Ok(Vec::new());
        }
        let userid = match field {
            "anchor" | "username" => {
                if crate::mapping::check_userid(want).is_err() {
                    return Ok(Vec::new());
                }
                Some(want.to_owned())
            }
            "email" => {
                self.userid_for(
                    "/user/get_userid_by_email",
                    json!({"email": want, "email_type": 2}),
                )
                .await?
            }
            "phone" => {
                self.userid_for("/user/getuserid", json!({"mobile": want}))
                    .await?
            }
            _ => {
                // WeCom has no search by other fields: an explicit scan of the listing.
                let low = want.to_lowercase();
                let mut out = Vec::new();
                let mut s = self.account_stream(None);
                while let Some(a) = s.try_next().await? {
                    if a.get(field)
                        .as_str()
                        .is_some_and(|v| v.trim().to_lowercase() == low)
                    {
                        out.push(a);
                    }
                }
                return Ok(out);
            }
        };
        let Some(userid) = userid else {
            return Ok(Vec::new());
        };
        // the lookup is exact in WeCom; the comparison here is the trait's (trimmed,
        // case-insensitive)
        Ok(self
            .user(&userid)
            .await?
            .into_iter()
            .filter(|a| {
                a.get(field)
                    .as_str()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
            })
            .collect())
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        match &self.inner.events {
            Some(log) => log.current().await,
            None => Err(Error::unsupported(
                "wecom: changes need callbacks (WeComSource::with_events)",
            )),
        }
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let Some(log) = &self.inner.events else {
            return Err(Error::unsupported(
                "wecom: changes need callbacks (WeComSource::with_events)",
            ));
        };
        let batch = log.since(since).await?;
        if !batch.complete {
            return Ok(ChangeSet {
                cursor: Some(batch.cursor),
                complete: false,
                ..ChangeSet::default()
            });
        }
        let mut cs = self.reread(batch.targets).await?;
        cs.cursor = Some(batch.cursor);
        Ok(cs)
    }
}
