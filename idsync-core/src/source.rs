//! The [`Source`] and [`Sink`] traits, pages, operations and change sets.
//!
//! Adapters implement pages ([`Source::orgs`], [`Source::accounts`]); core turns them into
//! streams ([`SourceExt`]). Both traits are object-safe: engines hold `Arc<dyn Source>` and
//! `Arc<dyn Sink>`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};

/// An opaque, serializable position in a listing. Runs can checkpoint and resume from it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageToken(pub String);

impl fmt::Debug for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageToken({:?})", self.0)
    }
}

/// Which page to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// `None` for the first page, else the `next` of the previous page.
    pub token: Option<PageToken>,
    /// Desired page size; adapters cap it at their maximum and may ignore it.
    pub size: Option<usize>,
}

impl PageRequest {
    /// The first page with the adapter's default size.
    pub fn first() -> Self {
        PageRequest::default()
    }

    /// The first page with a given size.
    pub fn sized(size: usize) -> Self {
        PageRequest {
            token: None,
            size: Some(size),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<PageToken>,
}

impl<T> Page<T> {
    /// The last page.
    pub fn last(items: Vec<T>) -> Self {
        Page { items, next: None }
    }
}

/// A provider's rate limit: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed ...
    pub requests: u32,
    /// ... per this period.
    pub per: Duration,
}

/// What an adapter can do. The engine branches on these, never on provider names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// It holds an org tree (false: accounts only).
    pub orgs: bool,
    /// Listings can be read (false: a push-only sink, diffed against the store's shadow copy).
    pub readable: bool,
    /// [`Source::changes`] and [`Source::current_cursor`] work.
    pub changes: bool,
    /// Creates are accepted.
    pub create: bool,
    /// Updates are accepted.
    pub update: bool,
    /// Disable / enable are accepted.
    pub disable: bool,
    /// Deletes are accepted.
    pub delete: bool,
    /// An org can be moved to another parent.
    pub move_org: bool,
    /// The sink chooses the anchor of a created entity (and returns it in [`Applied`]).
    pub assigns_anchors: bool,
    /// The largest page the adapter serves.
    pub max_page_size: Option<usize>,
    /// The provider's documented rate limit, used as the default of the rate-limit layer.
    pub rate_limit: Option<RateLimit>,
}

impl Capabilities {
    /// A readable source that takes no writes.
    pub fn read_only() -> Self {
        Capabilities {
            orgs: true,
            readable: true,
            changes: false,
            create: false,
            update: false,
            disable: false,
            delete: false,
            move_org: false,
            assigns_anchors: false,
            max_page_size: None,
            rate_limit: None,
        }
    }

    /// A readable sink that takes every operation.
    pub fn read_write() -> Self {
        Capabilities {
            create: true,
            update: true,
            disable: true,
            delete: true,
            move_org: true,
            ..Capabilities::read_only()
        }
    }

    /// Whether the adapter takes this operation.
    pub fn supports(&self, op: &Op) -> bool {
        match op {
            Op::CreateOrg { .. } | Op::CreateAccount { .. } => self.create,
            Op::UpdateOrg { .. } | Op::UpdateAccount { .. } => self.update,
            Op::MoveOrg { .. } => self.move_org,
            Op::DisableAccount { .. } | Op::EnableAccount { .. } => self.disable,
            Op::DeleteOrg { .. } | Op::DeleteAccount { .. } => self.delete,
        }
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::read_only()
    }
}

/// Who an adapter is: provider name and instance (tenant, host, file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// e.g. `"ldap"`, `"dingtalk"`, `"memory"`.
    pub provider: String,
    /// e.g. the host, tenant or file name. Never a secret.
    pub instance: String,
}

impl Descriptor {
    /// A descriptor.
    pub fn new(provider: impl Into<String>, instance: impl Into<String>) -> Self {
        Descriptor {
            provider: provider.into(),
            instance: instance.into(),
        }
    }
}

/// An opaque incremental-sync position (an LDAP cookie, a USN, an event sequence).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyncCursor(pub String);

impl fmt::Debug for SyncCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncCursor({:?})", self.0)
    }
}

/// What changed since a cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Orgs created or changed (their full current state).
    pub org_upserts: Vec<Org>,
    /// Orgs deleted.
    pub org_deletes: Vec<Anchor>,
    /// Accounts created or changed (their full current state).
    pub account_upserts: Vec<Account>,
    /// Accounts deleted.
    pub account_deletes: Vec<Anchor>,
    /// The cursor to store once these changes are applied.
    pub cursor: Option<SyncCursor>,
    /// `false`: the cursor was too old or the change log was lost; run a full sync instead.
    pub complete: bool,
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.org_upserts.is_empty()
            && self.org_deletes.is_empty()
            && self.account_upserts.is_empty()
            && self.account_deletes.is_empty()
    }
}

/// Changed fields of an update, by field name (`"email"`, `"attrs.x"`); `Null` clears a field.
pub type Patch = BTreeMap<String, Value>;

/// One write to a sink. Anchors here are the sink's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create an org; `org.anchor` is a proposal a sink that assigns anchors ignores.
    CreateOrg {
        /// The new org.
        org: Org,
    },
    /// Change an org's fields (not its parent: see `MoveOrg`).
    UpdateOrg {
        /// The org.
        anchor: Anchor,
        /// The changed fields only.
        changes: Patch,
    },
    /// Move an org under another parent.
    MoveOrg {
        /// The org.
        anchor: Anchor,
        /// The new parent (`None`: a root).
        parent: Option<Anchor>,
    },
    /// Delete an org (it has no children or members by then).
    DeleteOrg {
        /// The org.
        anchor: Anchor,
    },
    /// Create an account; `account.anchor` is a proposal a sink that assigns anchors ignores.
    CreateAccount {
        /// The new account.
        account: Account,
    },
    /// Change an account's fields.
    UpdateAccount {
        /// The account.
        anchor: Anchor,
        /// The changed fields only.
        changes: Patch,
    },
    /// Disable an account.
    DisableAccount {
        /// The account.
        anchor: Anchor,
    },
    /// Enable a disabled account.
    EnableAccount {
        /// The account.
        anchor: Anchor,
    },
    /// Delete an account.
    DeleteAccount {
        /// The account.
        anchor: Anchor,
    },
}

impl Op {
    /// A short stable name: `"create_org"`, `"disable_account"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateOrg { .. } => "create_org",
            Op::UpdateOrg { .. } => "update_org",
            Op::MoveOrg { .. } => "move_org",
            Op::DeleteOrg { .. } => "delete_org",
            Op::CreateAccount { .. } => "create_account",
            Op::UpdateAccount { .. } => "update_account",
            Op::DisableAccount { .. } => "disable_account",
            Op::EnableAccount { .. } => "enable_account",
            Op::DeleteAccount { .. } => "delete_account",
        }
    }

    /// Org or account.
    pub fn entity(&self) -> EntityKind {
        match self {
            Op::CreateOrg { .. }
            | Op::UpdateOrg { .. }
            | Op::MoveOrg { .. }
            | Op::DeleteOrg { .. } => EntityKind::Org,
            _ => EntityKind::Account,
        }
    }

    /// The target anchor (the proposal, for creates).
    pub fn anchor(&self) -> &Anchor {
        match self {
            Op::CreateOrg { org } => &org.anchor,
            Op::CreateAccount { account } => &account.anchor,
            Op::UpdateOrg { anchor, .. }
            | Op::MoveOrg { anchor, .. }
            | Op::DeleteOrg { anchor }
            | Op::UpdateAccount { anchor, .. }
            | Op::DisableAccount { anchor }
            | Op::EnableAccount { anchor }
            | Op::DeleteAccount { anchor } => anchor,
        }
    }

    /// True for creates.
    pub fn is_create(&self) -> bool {
        matches!(self, Op::CreateOrg { .. } | Op::CreateAccount { .. })
    }

    /// True for deletes and disables: the operations the guard counts.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Op::DeleteOrg { .. } | Op::DeleteAccount { .. } | Op::DisableAccount { .. }
        )
    }

    /// Whether applying this op twice has the same effect as once. Creates are not
    /// idempotent for sinks that assign anchors; the retry layer retries those only when
    /// the request provably never reached the provider.
    pub fn is_idempotent(&self) -> bool {
        !self.is_create()
    }
}

/// What a sink reports after applying an op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The anchor of the entity written (for a create: the anchor the sink assigned).
    pub anchor: Option<Anchor>,
}

impl Applied {
    /// Applied, with the entity's anchor.
    pub fn with_anchor(anchor: Anchor) -> Self {
        Applied {
            anchor: Some(anchor),
        }
    }
}

/// Something that lists orgs and accounts.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// Provider and instance.
    fn describe(&self) -> Descriptor;

    /// What this adapter can do.
    fn capabilities(&self) -> Capabilities;

    /// Preflight: reachable and authorized.
    async fn check(&self) -> Result<()>;

    /// One page of orgs. Parents may come after children; the engine orders them.
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>>;

    /// One page of accounts.
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>>;

    /// One org by anchor. The default scans the listing; adapters that can look one up
    /// directly should override it (incremental runs use it).
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        let mut s = self.org_stream(None);
        while let Some(o) = s.try_next().await? {
            if &o.anchor == anchor {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// One account by anchor. The default scans the listing; override where possible.
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        let mut s = self.account_stream(None);
        while let Some(a) = s.try_next().await? {
            if &a.anchor == anchor {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Accounts whose `field` (a field name as in [`Entity::get`](crate::Entity::get))
    /// equals `value`, compared trimmed and case-insensitively. Used to correlate new
    /// entities in incremental runs. The default scans the listing; override where the
    /// provider can search.
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        use crate::model::Entity;
        let want = value.trim().to_lowercase();
        let mut out = Vec::new();
        let mut s = self.account_stream(None);
        while let Some(a) = s.try_next().await? {
            if let Some(v) = a.get(field).as_str()
                && v.trim().to_lowercase() == want
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// A cursor for "now", taken before a full read so that changes made during the read
    /// are picked up by the next incremental run.
    async fn current_cursor(&self) -> Result<SyncCursor> {
        Err(Error::unsupported(format!(
            "{} cannot report changes",
            self.describe().provider
        )))
    }

    /// What changed since `since`.
    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let _ = since;
        Err(Error::unsupported(format!(
            "{} cannot report changes",
            self.describe().provider
        )))
    }
}

/// Something that takes operations. A sink is readable like a source unless its
/// capabilities say `readable: false`.
#[async_trait]
pub trait Sink: Source {
    /// Apply one operation. A create returns the anchor the sink gave the entity.
    async fn apply(&self, op: &Op) -> Result<Applied>;

    /// `Some` when this sink is the hub directory of a store. The engine then writes each
    /// op together with its journal, link and audit records in one store transaction.
    /// Layers forward this to the sink they wrap.
    fn as_hub(&self) -> Option<&crate::hub::Hub> {
        None
    }
}

/// Streams derived from pages. Implemented for every `Source`, including `dyn Source`.
pub trait SourceExt: Source {
    /// All orgs, page by page.
    fn org_stream(&self, page_size: Option<usize>) -> BoxStream<'_, Result<Org>> {
        paged(page_size, move |req| self.orgs(req), "orgs")
    }

    /// All accounts, page by page.
    fn account_stream(&self, page_size: Option<usize>) -> BoxStream<'_, Result<Account>> {
        paged(page_size, move |req| self.accounts(req), "accounts")
    }
}

impl<S: Source + ?Sized> SourceExt for S {}

/// One org by anchor, found by reading the whole listing. For adapters whose provider
/// has no lookup by id: an adapter opts into this scan explicitly in its
/// [`Source::org`], and says so in its docs.
pub async fn scan_org(src: &(impl Source + ?Sized), anchor: &Anchor) -> Result<Option<Org>> {
    let mut s = src.org_stream(None);
    while let Some(o) = s.try_next().await? {
        if &o.anchor == anchor {
            return Ok(Some(o));
        }
    }
    Ok(None)
}

/// One account by anchor, by reading the whole listing (see [`scan_org`]).
pub async fn scan_account(
    src: &(impl Source + ?Sized),
    anchor: &Anchor,
) -> Result<Option<Account>> {
    let mut s = src.account_stream(None);
    while let Some(a) = s.try_next().await? {
        if &a.anchor == anchor {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// Accounts whose `field` has the correlation key of `value`
/// ([`correlation_key`](crate::model::correlation_key)), by reading the whole listing
/// (see [`scan_org`]).
pub async fn scan_find_accounts(
    src: &(impl Source + ?Sized),
    field: &str,
    value: &str,
) -> Result<Vec<Account>> {
    let mut out = Vec::new();
    let mut s = src.account_stream(None);
    while let Some(a) = s.try_next().await? {
        if crate::model::key_matches(&a, field, value) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Collect every org (tests and small sets only).
pub async fn collect_orgs(src: &dyn Source) -> Result<Vec<Org>> {
    src.org_stream(None).try_collect().await
}

/// Collect every account (tests and small sets only).
pub async fn collect_accounts(src: &dyn Source) -> Result<Vec<Account>> {
    src.account_stream(None).try_collect().await
}

/// Build a stream of items from a page function. A page that repeats the previous token is
/// an error (a provider bug would otherwise loop forever).
pub fn paged<'a, T, F, Fut>(
    page_size: Option<usize>,
    fetch: F,
    what: &'static str,
) -> BoxStream<'a, Result<T>>
where
    T: Send + 'a,
    F: Fn(PageRequest) -> Fut + Send + Sync + 'a,
    Fut: std::future::Future<Output = Result<Page<T>>> + Send + 'a,
{
    struct State<F> {
        fetch: F,
        token: Option<PageToken>,
        done: bool,
        size: Option<usize>,
    }
    let state = State {
        fetch,
        token: None,
        done: false,
        size: page_size,
    };
    stream::try_unfold(state, move |mut st| async move {
        if st.done {
            return Ok(None);
        }
        let req = PageRequest {
            token: st.token.clone(),
            size: st.size,
        };
        let page = (st.fetch)(req).await?;
        match page.next {
            Some(next) if Some(&next) == st.token.as_ref() => {
                return Err(Error::new(
                    ErrorKind::Incomplete,
                    format!("{what}: the provider returned the same page token twice"),
                )
                .with_context("token", next.0));
            }
            Some(next) => st.token = Some(next),
            None => st.done = true,
        }
        Ok(Some((stream::iter(page.items.into_iter().map(Ok)), st)))
    })
    .try_flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn paged_stream_follows_tokens_and_detects_loops() {
        let data: Vec<u32> = (0..10).collect();
        let s = paged(
            Some(3),
            |req: PageRequest| {
                let data = data.clone();
                async move {
                    let start: usize = req.token.map(|t| t.0.parse().unwrap()).unwrap_or(0);
                    let end = (start + req.size.unwrap()).min(data.len());
                    Ok(Page {
                        items: data[start..end].to_vec(),
                        next: (end < data.len()).then(|| PageToken(end.to_string())),
                    })
                }
            },
            "numbers",
        );
        let all: Vec<u32> = s.try_collect().await.unwrap();
        assert_eq!(all, data);

        let looping = paged(
            None,
            |_req: PageRequest| async {
                Ok(Page {
                    items: vec![1u8],
                    next: Some(PageToken("same".into())),
                })
            },
            "loop",
        );
        let err = looping.try_collect::<Vec<u8>>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Incomplete);
    }

    #[test]
    fn op_serializes_with_tag() {
        let op = Op::DisableAccount {
            anchor: "u1".into(),
        };
        let j = serde_json::to_value(&op).unwrap();
        assert_eq!(j["op"], "disable_account");
        assert!(op.is_destructive());
        assert_eq!(op.entity(), EntityKind::Account);
    }
}
