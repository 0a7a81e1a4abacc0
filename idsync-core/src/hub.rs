//! [`Hub`]: the hub directory of a [`Store`] as a [`Source`].
//!
//! Outbound jobs read from it; inbound jobs write into it as their
//! [`Target::Hub`](crate::engine::Target::Hub), through the engine, which commits each op
//! with its records in one store transaction. (It is deliberately not a `Sink`: a write
//! into the hub without its records would break that.) Its change feed makes it an
//! incremental source: `changes(since)` returns what changed after a feed sequence number.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};
use crate::source::{Capabilities, ChangeSet, Descriptor, Page, PageRequest, Source, SyncCursor};
use crate::store::{HUB_KEY_FIELDS, Store};

/// The provider name a hub describes itself with ([`Descriptor::provider`]); layers pass
/// it through, so a wrapped hub is still recognized as the hub.
pub const PROVIDER: &str = "hub";

/// The hub directory over a store.
#[derive(Debug, Clone)]
pub struct Hub {
    store: Arc<dyn Store>,
    name: String,
}

impl Hub {
    /// The hub of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Hub {
            store,
            name: "hub".to_owned(),
        }
    }

    /// The store behind the hub.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

const FEED_BATCH: usize = 10_000;

#[async_trait]
impl Source for Hub {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.name.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: true,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        self.store.hub_orgs(PageRequest::sized(1)).await.map(|_| ())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.store.hub_orgs(page).await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.store.hub_accounts(page).await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.store.hub_org(anchor).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.store.hub_account(anchor).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        // By anchor: a lookup (a job whose sources carry hub anchors correlates by them).
        if field == "anchor" {
            let anchor = Anchor::new(value.trim());
            return Ok(self.store.hub_account(&anchor).await?.into_iter().collect());
        }
        if HUB_KEY_FIELDS.contains(&field) {
            return self.store.hub_find_accounts(field, value).await;
        }
        // No index for this field: an explicit scan of the hub.
        crate::source::scan_find_accounts(self, field, value).await
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        Ok(SyncCursor(self.store.feed_head().await?.to_string()))
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let mut from: u64 = since.0.parse().map_err(|_| {
            Error::new(ErrorKind::InvalidData, "hub: malformed cursor")
                .with_context("cursor", since.0.clone())
        })?;
        let mut touched: BTreeSet<(EntityKind, Anchor)> = BTreeSet::new();
        loop {
            let batch = self.store.feed(from, FEED_BATCH).await?;
            let Some(last) = batch.last() else { break };
            from = last.seq;
            touched.extend(batch.into_iter().map(|f| (f.kind, f.anchor)));
        }
        let mut cs = ChangeSet {
            cursor: Some(SyncCursor(from.to_string())),
            complete: true,
            ..ChangeSet::default()
        };
        for (kind, anchor) in touched {
            match kind {
                EntityKind::Org => match self.store.hub_org(&anchor).await? {
                    Some(o) => cs.org_upserts.push(o),
                    None => cs.org_deletes.push(anchor),
                },
                EntityKind::Account => match self.store.hub_account(&anchor).await? {
                    Some(a) => cs.account_upserts.push(a),
                    None => cs.account_deletes.push(anchor),
                },
            }
        }
        Ok(cs)
    }
}
