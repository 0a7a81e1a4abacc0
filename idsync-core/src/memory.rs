//! The in-memory adapter: a [`Source`] and [`Sink`] over a [`Directory`], for examples,
//! tests and the conformance suite's reference run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::directory::Directory;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};
use crate::source::{
    Applied, Capabilities, ChangeSet, Descriptor, Op, Page, PageRequest, Sink, Source, SyncCursor,
};

#[derive(Debug, Default)]
struct Inner {
    dir: Directory,
    /// Change log: (sequence, kind, anchor); a delete is recorded as its anchor with
    /// `deleted = true`.
    log: Vec<(u64, EntityKind, Anchor, bool)>,
    seq: u64,
}

/// An in-memory directory usable as a source and a sink.
///
/// It keeps a change log, so it also reports changes since a cursor.
#[derive(Debug)]
pub struct MemoryAdapter {
    name: String,
    inner: Mutex<Inner>,
    assign_anchors: bool,
    next_id: AtomicU64,
    max_page: Option<usize>,
    pages: Arc<AtomicU64>,
}

impl MemoryAdapter {
    /// An empty adapter named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryAdapter {
            name: name.into(),
            inner: Mutex::new(Inner::default()),
            assign_anchors: false,
            next_id: AtomicU64::new(1),
            max_page: None,
            pages: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An adapter holding these entities.
    pub fn with_data(name: impl Into<String>, orgs: Vec<Org>, accounts: Vec<Account>) -> Self {
        let a = MemoryAdapter::new(name);
        if let Ok(mut i) = a.inner.lock() {
            i.dir = Directory::from_parts(orgs, accounts);
        }
        a
    }

    /// Make the adapter assign its own anchors to created entities (like most SaaS APIs).
    pub fn assigning_anchors(mut self) -> Self {
        self.assign_anchors = true;
        self
    }

    /// Count the listing pages this adapter serves (orgs and accounts) into `counter`, which
    /// several adapters may share (a test harness checks that lookups list nothing).
    pub fn with_page_counter(mut self, counter: Arc<AtomicU64>) -> Self {
        self.pages = counter;
        self
    }

    /// Listing pages served so far (see [`with_page_counter`](Self::with_page_counter)).
    pub fn pages_served(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }

    /// Cap the page size (to exercise paging).
    pub fn with_max_page_size(mut self, size: usize) -> Self {
        self.max_page = Some(size.max(1));
        self
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::unexpected("memory adapter lock poisoned"))
    }

    /// A copy of the directory.
    pub fn snapshot(&self) -> Result<Directory> {
        Ok(self.lock()?.dir.clone())
    }

    /// Change the data directly (as a person would in the provider's admin console); the
    /// change is logged for `changes()`.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Directory) -> R) -> Result<R> {
        let mut i = self.lock()?;
        let before = i.dir.clone();
        let r = f(&mut i.dir);
        let after = i.dir.clone();
        let mut changes: Vec<(EntityKind, Anchor, bool)> = Vec::new();
        for (k, v) in &after.orgs {
            if before.orgs.get(k) != Some(v) {
                changes.push((EntityKind::Org, k.clone(), false));
            }
        }
        for k in before.orgs.keys() {
            if !after.orgs.contains_key(k) {
                changes.push((EntityKind::Org, k.clone(), true));
            }
        }
        for (k, v) in &after.accounts {
            if before.accounts.get(k) != Some(v) {
                changes.push((EntityKind::Account, k.clone(), false));
            }
        }
        for k in before.accounts.keys() {
            if !after.accounts.contains_key(k) {
                changes.push((EntityKind::Account, k.clone(), true));
            }
        }
        for (kind, anchor, deleted) in changes {
            i.seq += 1;
            let seq = i.seq;
            i.log.push((seq, kind, anchor, deleted));
        }
        Ok(r)
    }

    fn size(&self, req: &PageRequest) -> PageRequest {
        let mut r = req.clone();
        if let Some(max) = self.max_page {
            r.size = Some(r.size.unwrap_or(max).min(max));
        }
        r
    }
}

#[async_trait]
impl Source for MemoryAdapter {
    fn describe(&self) -> Descriptor {
        Descriptor::new("memory", self.name.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: true,
            assigns_anchors: self.assign_anchors,
            max_page_size: self.max_page,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        self.lock().map(|_| ())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        let req = self.size(&page);
        Ok(self.lock()?.dir.org_page(&req))
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        let req = self.size(&page);
        Ok(self.lock()?.dir.account_page(&req))
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        Ok(self.lock()?.dir.orgs.get(anchor).cloned())
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        Ok(self.lock()?.dir.accounts.get(anchor).cloned())
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        // In memory, a search is a pass over the map under the lock (no listing, no pages).
        Ok(self
            .lock()?
            .dir
            .accounts
            .values()
            .filter(|a| crate::model::key_matches(*a, field, value))
            .cloned()
            .collect())
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        Ok(SyncCursor(self.lock()?.seq.to_string()))
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let from: u64 = since.0.parse().map_err(|_| {
            Error::new(ErrorKind::InvalidData, "memory adapter: malformed cursor")
                .with_context("cursor", since.0.clone())
        })?;
        let i = self.lock()?;
        let mut cs = ChangeSet {
            cursor: Some(SyncCursor(i.seq.to_string())),
            complete: from <= i.seq,
            ..ChangeSet::default()
        };
        if !cs.complete {
            return Ok(cs);
        }
        // Latest state per entity since `from`.
        let mut seen = std::collections::BTreeSet::new();
        for (seq, kind, anchor, _) in i.log.iter().rev() {
            if *seq <= from {
                break;
            }
            if !seen.insert((*kind, anchor.clone())) {
                continue;
            }
            match kind {
                EntityKind::Org => match i.dir.orgs.get(anchor) {
                    Some(o) => cs.org_upserts.push(o.clone()),
                    None => cs.org_deletes.push(anchor.clone()),
                },
                EntityKind::Account => match i.dir.accounts.get(anchor) {
                    Some(a) => cs.account_upserts.push(a.clone()),
                    None => cs.account_deletes.push(anchor.clone()),
                },
            }
        }
        cs.org_upserts.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        cs.account_upserts.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        cs.org_deletes.sort();
        cs.account_deletes.sort();
        Ok(cs)
    }
}

#[async_trait]
impl Sink for MemoryAdapter {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let mut i = self.lock()?;
        let result = if self.assign_anchors {
            let prefix = match op.entity() {
                EntityKind::Org => "mo",
                EntityKind::Account => "ma",
            };
            let mut f = || {
                Anchor::from(format!(
                    "{prefix}{}",
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                ))
            };
            i.dir.apply(op, Some(&mut f))
        } else {
            i.dir.apply(op, None)
        };
        let (applied, change) = result.map_err(|e| e.with_provider("memory"))?;
        i.seq += 1;
        let seq = i.seq;
        let deleted = change.after.is_none();
        i.log.push((seq, op.entity(), change.anchor, deleted));
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_changes_since_a_cursor() {
        let m = MemoryAdapter::with_data(
            "t",
            vec![Org::new("r", None, "R")],
            vec![Account::new("u1", "a")],
        );
        let c0 = m.current_cursor().await.unwrap();
        m.edit(|d| {
            d.accounts.remove(&Anchor::from("u1"));
            d.accounts.insert("u2".into(), Account::new("u2", "b"));
        })
        .unwrap();
        let cs = m.changes(&c0).await.unwrap();
        assert!(cs.complete);
        assert_eq!(cs.account_deletes, vec![Anchor::from("u1")]);
        assert_eq!(cs.account_upserts.len(), 1);
        let c1 = cs.cursor.unwrap();
        assert!(m.changes(&c1).await.unwrap().is_empty());
        let stale = m.changes(&SyncCursor("999".into())).await.unwrap();
        assert!(!stale.complete);
    }
}
