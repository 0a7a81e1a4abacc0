//! [`MemoryStore`]: the [`Store`] kept in memory (tests, examples, one-shot runs).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::directory::{DEFAULT_PAGE_SIZE, Directory};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org, key_matches};
use crate::source::{Applied, Op, Page, PageRequest, PageToken, SyncCursor};
use crate::store::{
    AuditEntry, FeedEntry, Fence, HUB_KEY_FIELDS, IdempotencyRecord, InboxEvent, InboxPush,
    JournalEntry, JournalState, Lease, Link, LinkChange, OpRecord, RunRecord, ShadowChange, Store,
    lease_lost, unindexed,
};

#[derive(Debug, Default)]
struct State {
    hub: Directory,
    feed: Vec<FeedEntry>,
    /// The highest sequence number pruned from `feed` (0: none).
    feed_floor: u64,
    /// (scope, key) → record.
    idempotency: HashMap<(String, String), IdempotencyRecord>,
    links: HashMap<(String, EntityKind), BTreeMap<Anchor, Anchor>>,
    shadow: HashMap<(String, EntityKind), BTreeMap<Anchor, Value>>,
    cursors: HashMap<String, SyncCursor>,
    runs: BTreeMap<String, RunRecord>,
    journal: HashMap<String, BTreeMap<usize, JournalEntry>>,
    /// (job, run, op index) of intents not yet done or failed.
    open: BTreeMap<(String, String, usize), JournalEntry>,
    audit: HashMap<(EntityKind, Anchor), Vec<AuditEntry>>,
    /// job → (holder, token, until). A released lease stays, run out, so that the next
    /// holder's token is still greater.
    leases: HashMap<String, (String, u64, DateTime<Utc>)>,
    // --- inbox
    /// stream → its events (by seq) and its head.
    inbox: HashMap<String, (BTreeMap<u64, InboxEvent>, u64)>,
    /// (stream, replay key) → until when it is kept.
    inbox_keys: HashMap<(String, String), DateTime<Utc>>,
}

impl State {
    fn feed_head(&self) -> u64 {
        self.feed.last().map_or(self.feed_floor, |f| f.seq)
    }

    /// Whether `fence` still holds its job's lease at `now`; else the [`lease_lost`] error.
    fn check_fence(&self, fence: Option<&Fence>, now: DateTime<Utc>) -> Result<()> {
        let Some(f) = fence else { return Ok(()) };
        match self.leases.get(&f.job) {
            Some((h, token, until)) if *h == f.holder && *token == f.token && *until > now => {
                Ok(())
            }
            Some((_, token, _)) => Err(lease_lost(f, Some(*token))),
            None => Err(lease_lost(f, None)),
        }
    }
}

/// A [`Store`] in memory.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    /// Set on the handles [`Store::fenced`] returns.
    fence: Option<Fence>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store on a given clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State::default())),
            clock,
            fence: None,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::unexpected("memory store lock poisoned"))
    }
}

fn page_map<V: Clone, T>(
    map: Option<&BTreeMap<Anchor, V>>,
    req: &PageRequest,
    f: impl Fn(&Anchor, &V) -> T,
) -> Page<T> {
    let Some(map) = map else {
        return Page::last(Vec::new());
    };
    let size = req.size.unwrap_or(DEFAULT_PAGE_SIZE).max(1);
    let start = match &req.token {
        Some(t) => Bound::Excluded(Anchor::new(t.0.clone())),
        None => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut next = None;
    let mut last: Option<&Anchor> = None;
    for (k, v) in map.range((start, Bound::Unbounded)) {
        if items.len() == size {
            next = last.map(|l| PageToken(l.as_str().to_owned()));
            break;
        }
        items.push(f(k, v));
        last = Some(k);
    }
    Page { items, next }
}

fn apply_record(st: &mut State, rec: &OpRecord) {
    let key = (rec.job.clone(), rec.kind);
    match &rec.link {
        Some(LinkChange::Put { source, target }) => {
            st.links
                .entry(key.clone())
                .or_default()
                .insert(source.clone(), target.clone());
        }
        Some(LinkChange::Remove { source }) => {
            if let Some(m) = st.links.get_mut(&key) {
                m.remove(source);
            }
        }
        None => {}
    }
    match &rec.shadow {
        Some(ShadowChange::Put { anchor, entity }) => {
            st.shadow
                .entry(key)
                .or_default()
                .insert(anchor.clone(), entity.clone());
        }
        Some(ShadowChange::Remove { anchor }) => {
            if let Some(m) = st.shadow.get_mut(&key) {
                m.remove(anchor);
            }
        }
        None => {}
    }
    if let Some(j) = &rec.journal {
        let key = (rec.job.clone(), j.run_id.clone(), j.op_index);
        if j.state == JournalState::Unknown {
            st.open.insert(key, j.clone());
        } else {
            st.open.remove(&key);
        }
        st.journal
            .entry(j.run_id.clone())
            .or_default()
            .insert(j.op_index, j.clone());
    }
    if let Some(a) = &rec.audit {
        st.audit
            .entry((a.kind, a.anchor.clone()))
            .or_default()
            .push(a.clone());
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn hub_orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        Ok(self.lock()?.hub.org_page(&page))
    }

    async fn hub_accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        Ok(self.lock()?.hub.account_page(&page))
    }

    async fn hub_org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        Ok(self.lock()?.hub.orgs.get(anchor).cloned())
    }

    async fn hub_account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        Ok(self.lock()?.hub.accounts.get(anchor).cloned())
    }

    async fn hub_find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        if !HUB_KEY_FIELDS.contains(&field) {
            return Err(unindexed(field));
        }
        // The memory store is small by nature: its index is a scan under the lock.
        Ok(self
            .lock()?
            .hub
            .accounts
            .values()
            .filter(|a| key_matches(*a, field, value))
            .cloned()
            .collect())
    }

    // --- positional listing (SCIM list pages) ------------------------------------------
    // The memory store is small by nature: positions are counted under the lock.

    async fn hub_account_count(&self, except: &[Anchor]) -> Result<usize> {
        let st = self.lock()?;
        let gone = except
            .iter()
            .filter(|a| st.hub.accounts.contains_key(*a))
            .count();
        Ok(st.hub.accounts.len() - gone)
    }

    async fn hub_accounts_at(
        &self,
        offset: usize,
        limit: usize,
        except: &[Anchor],
    ) -> Result<Vec<Account>> {
        Ok(self
            .lock()?
            .hub
            .accounts
            .values()
            .filter(|a| !except.contains(&a.anchor))
            .skip(offset)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn hub_org_count(&self) -> Result<usize> {
        Ok(self.lock()?.hub.orgs.len())
    }

    async fn hub_orgs_at(&self, offset: usize, limit: usize) -> Result<Vec<Org>> {
        Ok(self
            .lock()?
            .hub
            .orgs
            .values()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn hub_org_members(&self, org: &Anchor) -> Result<Vec<Account>> {
        Ok(self
            .lock()?
            .hub
            .accounts
            .values()
            .filter(|a| a.orgs.contains(org))
            .cloned()
            .collect())
    }
    // --- end of positional listing --------------------------------------------------------

    async fn hub_apply(&self, op: &Op, record: Option<&OpRecord>) -> Result<Applied> {
        let now = self.clock.now();
        let mut st = self.lock()?;
        st.check_fence(self.fence.as_ref(), now)?;
        let (applied, change) = st.hub.apply(op, None)?;
        let seq = st.feed_head() + 1;
        st.feed.push(FeedEntry {
            seq,
            kind: op.entity(),
            anchor: change.anchor.clone(),
            entity: change.after.clone(),
            at: now,
        });
        if let Some(rec) = record {
            let mut rec = rec.clone();
            if let Some(a) = &mut rec.audit {
                a.before = change.before;
                a.after = change.after;
            }
            apply_record(&mut st, &rec);
        }
        Ok(applied)
    }

    async fn links(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Link>> {
        let st = self.lock()?;
        Ok(page_map(
            st.links.get(&(job.to_owned(), kind)),
            &page,
            |s, t| Link {
                kind,
                source: s.clone(),
                target: t.clone(),
            },
        ))
    }

    async fn links_of(&self, job: &str, kind: EntityKind, sources: &[Anchor]) -> Result<Vec<Link>> {
        let st = self.lock()?;
        let Some(map) = st.links.get(&(job.to_owned(), kind)) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Link> = sources
            .iter()
            .filter_map(|s| {
                map.get(s).map(|t| Link {
                    kind,
                    source: s.clone(),
                    target: t.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out.dedup_by(|a, b| a.source == b.source);
        Ok(out)
    }

    async fn links_to(&self, job: &str, kind: EntityKind, targets: &[Anchor]) -> Result<Vec<Link>> {
        let st = self.lock()?;
        let Some(map) = st.links.get(&(job.to_owned(), kind)) else {
            return Ok(Vec::new());
        };
        let want: std::collections::HashSet<&Anchor> = targets.iter().collect();
        // A pass over the job's links: the memory store has no reverse index.
        Ok(map
            .iter()
            .filter(|(_, t)| want.contains(t))
            .map(|(s, t)| Link {
                kind,
                source: s.clone(),
                target: t.clone(),
            })
            .collect())
    }

    async fn link_count(&self, job: &str, kind: EntityKind) -> Result<usize> {
        Ok(self
            .lock()?
            .links
            .get(&(job.to_owned(), kind))
            .map_or(0, BTreeMap::len))
    }

    async fn shadow(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Value>> {
        let st = self.lock()?;
        Ok(page_map(
            st.shadow.get(&(job.to_owned(), kind)),
            &page,
            |_, v| v.clone(),
        ))
    }

    async fn cursor(&self, job: &str) -> Result<Option<SyncCursor>> {
        Ok(self.lock()?.cursors.get(job).cloned())
    }

    async fn commit_cursor(
        &self,
        job: &str,
        expected: Option<&SyncCursor>,
        cursor: &SyncCursor,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock()?;
        st.check_fence(self.fence.as_ref(), now)?;
        if st.cursors.get(job) != expected {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the cursor of job {job} moved since it was read"),
            ));
        }
        st.cursors.insert(job.to_owned(), cursor.clone());
        Ok(())
    }

    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.lock()?.runs.insert(run.id.clone(), run.clone());
        Ok(())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        Ok(self.lock()?.runs.get(id).cloned())
    }

    async fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let st = self.lock()?;
        let mut v: Vec<RunRecord> = st
            .runs
            .values()
            .filter(|r| job.is_none_or(|j| r.job == j))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        v.truncate(limit);
        Ok(v)
    }

    async fn journal_intent(&self, entry: &JournalEntry) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock()?;
        st.check_fence(self.fence.as_ref(), now)?;
        let job = st
            .runs
            .get(&entry.run_id)
            .map(|r| r.job.clone())
            .unwrap_or_default();
        st.open
            .insert((job, entry.run_id.clone(), entry.op_index), entry.clone());
        st.journal
            .entry(entry.run_id.clone())
            .or_default()
            .insert(entry.op_index, entry.clone());
        Ok(())
    }

    async fn record(&self, record: &OpRecord) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock()?;
        st.check_fence(self.fence.as_ref(), now)?;
        apply_record(&mut st, record);
        Ok(())
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>> {
        Ok(self
            .lock()?
            .journal
            .get(run_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn open_intents(&self, job: &str) -> Result<Vec<JournalEntry>> {
        let st = self.lock()?;
        let mut v: Vec<JournalEntry> = st
            .open
            .iter()
            .filter(|((j, _, _), e)| {
                j == job && matches!(e.state, JournalState::Intent | JournalState::Unknown)
            })
            .map(|(_, e)| e.clone())
            .collect();
        v.sort_by(|a, b| a.at.cmp(&b.at).then(a.op_index.cmp(&b.op_index)));
        Ok(v)
    }

    async fn audit(&self, kind: EntityKind, anchor: &Anchor) -> Result<Vec<AuditEntry>> {
        Ok(self
            .lock()?
            .audit
            .get(&(kind, anchor.clone()))
            .cloned()
            .unwrap_or_default())
    }

    async fn feed(&self, since: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let st = self.lock()?;
        let start = st.feed.partition_point(|f| f.seq <= since);
        Ok(st.feed[start..].iter().take(limit).cloned().collect())
    }

    async fn feed_head(&self) -> Result<u64> {
        Ok(self.lock()?.feed_head())
    }

    async fn feed_prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut st = self.lock()?;
        let cut = st
            .feed
            .iter()
            .position(|f| f.at >= before)
            .unwrap_or(st.feed.len());
        if cut == 0 {
            return Ok(0);
        }
        st.feed_floor = st.feed[cut - 1].seq;
        st.feed.drain(..cut);
        Ok(cut as u64)
    }

    async fn feed_floor(&self) -> Result<u64> {
        let st = self.lock()?;
        Ok(st.feed.first().map_or(st.feed_floor, |f| f.seq - 1))
    }

    async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        Ok(self
            .lock()?
            .idempotency
            .get(&(scope.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn idempotency_put(&self, rec: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>> {
        let mut st = self.lock()?;
        match st.idempotency.entry((rec.scope.clone(), rec.key.clone())) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(Some(e.get().clone())),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(rec.clone());
                Ok(None)
            }
        }
    }

    async fn idempotency_prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut st = self.lock()?;
        let n = st.idempotency.len();
        st.idempotency.retain(|_, r| r.at >= before);
        Ok((n - st.idempotency.len()) as u64)
    }

    // --- inbox
    async fn inbox_push(&self, push: &InboxPush) -> Result<Option<u64>> {
        let window = chrono::Duration::from_std(push.window)
            .map_err(|_| Error::config("inbox replay window out of range"))?;
        let until = push
            .at
            .checked_add_signed(window)
            .ok_or_else(|| Error::config("inbox replay window out of range"))?;
        let mut st = self.lock()?;
        for k in &push.keys {
            if st
                .inbox_keys
                .get(&(push.stream.clone(), k.clone()))
                .is_some_and(|u| *u > push.at)
            {
                return Ok(None);
            }
        }
        for k in &push.keys {
            st.inbox_keys
                .insert((push.stream.clone(), k.clone()), until);
        }
        let (events, head) = st.inbox.entry(push.stream.clone()).or_default();
        *head += 1;
        let seq = *head;
        events.insert(
            seq,
            InboxEvent {
                seq,
                event_type: push.event_type.clone(),
                targets: push.targets.clone(),
                at: push.at,
            },
        );
        Ok(Some(seq))
    }

    async fn inbox_since(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<InboxEvent>> {
        let st = self.lock()?;
        Ok(st.inbox.get(stream).map_or_else(Vec::new, |(events, _)| {
            events
                .range((Bound::Excluded(after), Bound::Unbounded))
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }

    async fn inbox_head(&self, stream: &str) -> Result<u64> {
        Ok(self.lock()?.inbox.get(stream).map_or(0, |(_, head)| *head))
    }

    async fn inbox_trim(&self, stream: &str, upto: u64, now: DateTime<Utc>) -> Result<u64> {
        let mut st = self.lock()?;
        st.inbox_keys
            .retain(|(s, _), until| s != stream || *until > now);
        let Some((events, _)) = st.inbox.get_mut(stream) else {
            return Ok(0);
        };
        let keep = events.split_off(&(upto.saturating_add(1)));
        let removed = events.len();
        *events = keep;
        Ok(removed as u64)
    }

    async fn acquire_lease(&self, job: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let now = self.clock.now();
        let ttl =
            chrono::Duration::from_std(ttl).map_err(|_| Error::config("lease ttl out of range"))?;
        let until = now
            .checked_add_signed(ttl)
            .ok_or_else(|| Error::config("lease ttl out of range"))?;
        let mut st = self.lock()?;
        let token = match st.leases.get(job) {
            Some((h, _, until)) if h != holder && *until > now => return Ok(None),
            Some((h, token, _)) if h == holder => *token,
            Some((_, token, _)) => token + 1,
            None => 1,
        };
        st.leases
            .insert(job.to_owned(), (holder.to_owned(), token, until));
        Ok(Some(Lease {
            job: job.to_owned(),
            holder: holder.to_owned(),
            token,
            expires_at: until,
        }))
    }

    async fn release_lease(&self, job: &str, holder: &str) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock()?;
        if let Some((h, _, until)) = st.leases.get_mut(job)
            && h == holder
        {
            *until = (*until).min(now);
        }
        Ok(())
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Store> {
        Arc::new(MemoryStore {
            fence: Some(fence),
            ..self.clone()
        })
    }
}
