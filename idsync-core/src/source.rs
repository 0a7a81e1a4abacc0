//! The [`Source`] and [`Sink`] traits, pages, operations and change sets.
//!
//! Adapters implement pages ([`Source::orgs`], [`Source::accounts`]); core turns them into
//! streams ([`SourceExt`]). Both traits are object-safe: engines hold `Arc<dyn Source>` and
//! `Arc<dyn Sink>`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Account, Anchor, Org};

pub use crate::op::{
    Applied, ChangeSet, Op, OpKind, Page, PageRequest, PageToken, Patch, Rename, SyncCursor, paged,
};

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
    /// The org fields the adapter keeps and reads back (`name`, `parent`, `order`,
    /// `attrs.KEY`, `attrs.*` for every attribute); `None`: all of them. As a target, only
    /// these are diffed: a field the target cannot hold reads back different on every run,
    /// so comparing it would plan the same update forever.
    #[serde(default)]
    pub org_fields: Option<Vec<String>>,
    /// The account fields the adapter keeps and reads back, like
    /// [`org_fields`](Self::org_fields); `None`: all of them.
    #[serde(default)]
    pub account_fields: Option<Vec<String>>,
    /// The order of an account's orgs is kept (the first is the primary org). `false`: the
    /// adapter holds memberships as a set (SCIM Groups, LDAP groups) and reads them back in
    /// its own order; as a target, the engine compares an account's orgs as a set.
    #[serde(default = "yes")]
    pub ordered_orgs: bool,
}

fn yes() -> bool {
    true
}

/// Whether `field` is in a list of held fields (`None`: every field); `attrs.*` holds every
/// attribute.
fn holds(list: Option<&[String]>, field: &str) -> bool {
    list.is_none_or(|l| {
        l.iter()
            .any(|h| h == field || (h == "attrs.*" && field.starts_with("attrs.")))
    })
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
            org_fields: None,
            account_fields: None,
            ordered_orgs: true,
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

    /// Whether the adapter keeps and reads back this org field (see
    /// [`org_fields`](Self::org_fields)).
    pub fn holds_org_field(&self, field: &str) -> bool {
        holds(self.org_fields.as_deref(), field)
    }

    /// Whether the adapter keeps and reads back this account field (see
    /// [`account_fields`](Self::account_fields)).
    pub fn holds_account_field(&self, field: &str) -> bool {
        holds(self.account_fields.as_deref(), field)
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

    /// One org by anchor, looked up directly (incremental runs use it). There is no
    /// default: an adapter whose provider has no lookup opts into a scan explicitly with
    /// [`scan_org`] and says so in its docs.
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>>;

    /// One account by anchor, looked up directly (see [`org`](Self::org);
    /// [`scan_account`] for providers without a lookup).
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>>;

    /// Accounts whose `field` (a field name as in [`Entity::get`](crate::Entity::get)) has
    /// the correlation key of `value` ([`correlation_key`](crate::model::correlation_key):
    /// trimmed, case-folded). Incremental runs correlate new entities with it. A provider
    /// search where there is one; [`scan_find_accounts`] (explicitly) where there is not;
    /// `Unsupported` for a field the provider cannot search.
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>>;

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
