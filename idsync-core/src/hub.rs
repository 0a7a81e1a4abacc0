//! [`Hub`]: the hub directory of a [`Store`] as a [`Source`].
//!
//! Outbound jobs read from it; inbound jobs write into it as their
//! [`Target::Hub`](crate::engine::Target::Hub), through the engine, which commits each op
//! with its records in one store transaction. (It is deliberately not a `Sink`: a write
//! into the hub without its records would break that.) Its change feed makes it an
//! incremental source: `changes(since)` returns what changed after a feed sequence number.
//! A cursor older than the retained feed ([`Store::feed_floor`], moved by
//! [`Store::feed_prune`]) gets a change set with `complete: false`: the changes between
//! the cursor and the floor are gone, and the engine runs a full sync instead.

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

/// The answer to a cursor the feed no longer continues from: no changes, not complete
/// (the engine runs a full sync, which takes its own cursor before it reads).
fn stale(head: u64) -> ChangeSet {
    ChangeSet {
        cursor: Some(SyncCursor(head.to_string())),
        complete: false,
        ..ChangeSet::default()
    }
}

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
        // A cursor past the head is another hub's (this one was rebuilt): stale too.
        let head = self.store.feed_head().await?;
        if from > head {
            tracing::warn!(
                cursor = from,
                head,
                "hub: the change cursor is past the feed's head"
            );
            return Ok(stale(head));
        }
        let mut touched: BTreeSet<(EntityKind, Anchor)> = BTreeSet::new();
        loop {
            let batch = self.store.feed(from, FEED_BATCH).await?;
            // Checked after each read: entries up to the floor were pruned (the feed's
            // retention), so a batch read from below it has a gap before it, and the
            // changes in that gap are gone. Only a full run catches up then.
            let floor = self.store.feed_floor().await?;
            if from < floor {
                tracing::warn!(
                    cursor = from,
                    floor,
                    "hub: the change cursor is older than the retained feed"
                );
                return Ok(stale(self.store.feed_head().await?));
            }
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
