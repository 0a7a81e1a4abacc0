//! The account planner's state: anchors of both sides interned, links and the target index
//! as flat tables by anchor id (a target account is a row of field hashes, never a record),
//! and what it observes of each mapped source account. The later steps are
//! `correlate.rs`, `creates.rs`, `updates.rs` and `deletions.rs`.

use rustc_hash::FxHashMap;

use super::PendingRef;
use super::builder::Builder;
use super::orgs::{Lookup, OrgPlanner};
use super::read::BATCH;
use crate::engine::index::{
    AccField, Interner, NONE, Names, attr_hashes, field_hash, field_str, key_hash,
};
use crate::engine::{Engine, Job};
use crate::error::{Error, Result};
use crate::model::{Account, Anchor, EntityKind, Status};
use crate::source::PageRequest;
use crate::store::Link;

/// A target account in the index (its field hashes live in `AccPlanner::hashes`).
pub(super) struct TEntry {
    /// The target's anchor id.
    pub(super) id: u32,
    /// Attribute hashes, when the mapping owns all attributes.
    pub(super) attrs: Box<[(u32, u64)]>,
    pub(super) status: Status,
    pub(super) linked: bool,
    pub(super) claimed: bool,
}

/// What the planner knows of one anchor id (as a source anchor and as a target anchor).
#[derive(Clone, Copy)]
pub(super) struct IdState {
    /// As a source: the linked target's id, or [`NONE`].
    pub(super) link: u32,
    /// As a target: its entry in the index, or [`NONE`].
    pub(super) slot: u32,
    /// As a source: listed in this run.
    pub(super) seen: bool,
    /// As a target: a link of this job points to it.
    pub(super) link_target: bool,
}

pub(super) const FRESH: IdState = IdState {
    link: NONE,
    slot: NONE,
    seen: false,
    link_target: false,
};

/// A source account that needs an op or a link.
pub(super) struct Work {
    /// The source anchor's id.
    pub(super) sid: u32,
    /// The linked target's anchor id.
    pub(super) target: Option<u32>,
    /// The mapped account, references translated to the target where known.
    pub(super) acc: Account,
    /// Org references to orgs created by this plan.
    pub(super) pending: Vec<PendingRef>,
    /// The source anchor of a manager not linked (yet).
    pub(super) manager: Option<Anchor>,
}

/// Plans accounts. Anchors of both sides are interned ([`Interner`]); links, the target
/// index and the seen marks are flat tables indexed by anchor id, and a target account
/// is kept as a row of field hashes, never as a record.
pub(super) struct AccPlanner<'a> {
    pub(super) job: &'a Job,
    pub(super) fields: Vec<AccField>,
    pub(super) all_attrs: bool,
    pub(super) own_status: bool,
    pub(super) names: Names,
    pub(super) ids: Interner,
    pub(super) state: Vec<IdState>,
    /// Links in `state`.
    pub(super) n_links: usize,
    pub(super) entries: Vec<TEntry>,
    /// `stride` hashes per entry: one per owned field, then one correlation key per rule
    /// (0: none).
    pub(super) hashes: Vec<u64>,
    pub(super) stride: usize,
    /// Correlation key -> the newest (entry, rule) slot with it (unlinked targets only);
    /// older slots with the same key are chained through `key_next`.
    pub(super) keys: FxHashMap<u64, u32>,
    pub(super) key_next: Vec<u32>,
    /// the correlation rules, parsed
    pub(super) rules: Vec<Option<AccField>>,
    /// Source accounts that need an op or a link.
    pub(super) work: Vec<Work>,
    pub(super) source_count: usize,
}

pub(super) fn too_many() -> Error {
    Error::invalid_data("more than 4,294,967,294 distinct account anchors in one plan")
}

impl<'a> AccPlanner<'a> {
    pub(super) fn new(job: &'a Job, with_orgs: bool) -> Self {
        let mut owned = job.mapping.accounts.owned_fields::<Account>();
        // Only the fields the target holds are diffed (the others read back different on
        // every run); memberships are a set where the target keeps no primary org.
        let caps = job.target.capabilities();
        owned.retain(|f| caps.holds_account_field(f));
        let mut fields = Vec::new();
        let mut all_attrs = false;
        let mut own_status = false;
        for f in &owned {
            match AccField::parse(f) {
                Some(AccField::AllAttrs) => all_attrs = true,
                Some(AccField::Orgs) if !with_orgs => {}
                Some(AccField::Orgs) if !caps.ordered_orgs => fields.push(AccField::OrgSet),
                Some(AccField::Status) => {
                    own_status = true;
                    fields.push(AccField::Status);
                }
                Some(af) => fields.push(af),
                None => {}
            }
        }
        let rules: Vec<Option<AccField>> =
            job.correlation.iter().map(|r| AccField::parse(r)).collect();
        AccPlanner {
            job,
            stride: fields.len() + rules.len(),
            fields,
            all_attrs,
            own_status,
            names: Names::default(),
            ids: Interner::default(),
            state: Vec::new(),
            n_links: 0,
            entries: Vec::new(),
            hashes: Vec::new(),
            keys: FxHashMap::default(),
            key_next: Vec::new(),
            rules,
            work: Vec::new(),
            source_count: 0,
        }
    }

    /// Hash a batch of anchors and warm their table slots (see [`Interner`]); 0 for none.
    pub(super) fn warm<'b>(&self, anchors: impl Iterator<Item = Option<&'b str>>) -> Vec<u64> {
        anchors
            .map(|a| match a {
                Some(a) => {
                    let h = Interner::hash(a);
                    self.ids.peek(h);
                    h
                }
                None => 0,
            })
            .collect()
    }

    /// The id of an anchor (hash `h`), interned.
    pub(super) fn intern_at(&mut self, h: u64, a: &str) -> Result<u32> {
        let id = self.ids.intern_at(h, a).ok_or_else(too_many)?;
        if id as usize >= self.state.len() {
            self.state.resize(id as usize + 1, FRESH);
        }
        Ok(id)
    }

    pub(super) fn st(&self, id: u32) -> IdState {
        self.state.get(id as usize).copied().unwrap_or(FRESH)
    }

    pub(super) fn st_mut(&mut self, id: u32) -> Option<&mut IdState> {
        self.state.get_mut(id as usize)
    }

    pub(super) fn anchor(&self, id: u32) -> Anchor {
        Anchor::new(self.ids.resolve(id))
    }

    /// The target linked to a source anchor.
    pub(super) fn link_of(&self, source: &Anchor) -> Option<u32> {
        self.link_of_at(Interner::hash(source.as_str()), source)
    }

    /// [`link_of`](Self::link_of) with the anchor's hash computed.
    pub(super) fn link_of_at(&self, h: u64, source: &Anchor) -> Option<u32> {
        let id = self.ids.get_at(h, source.as_str())?;
        Some(self.st(id).link).filter(|t| *t != NONE)
    }

    /// The target linked to a source anchor, as an anchor.
    pub(super) fn linked_target(&self, source: &Anchor) -> Option<Anchor> {
        self.link_of(source).map(|t| self.anchor(t))
    }

    pub(super) fn set_link(&mut self, source: u32, target: u32) {
        if let Some(t) = self.st_mut(target) {
            t.link_target = true;
        }
        let Some(s) = self.st_mut(source) else { return };
        let had = s.link != NONE;
        s.link = target;
        match (had, target != NONE) {
            (false, true) => self.n_links += 1,
            (true, false) => self.n_links -= 1,
            _ => {}
        }
    }

    /// Make room in the index for `n` more target accounts.
    pub(super) fn reserve_targets(&mut self, n: usize) {
        self.entries.reserve(n);
        self.hashes.reserve(n.saturating_mul(self.stride));
    }

    /// Whether a target account is in the index.
    pub(super) fn has_target(&self, t: &Anchor) -> bool {
        self.ids
            .get(t.as_str())
            .is_some_and(|id| self.st(id).slot != NONE)
    }

    pub(super) fn entry(&self, target: u32) -> Option<(&TEntry, &[u64])> {
        let slot = self.st(target).slot;
        let e = self.entries.get(slot as usize)?;
        let at = slot as usize * self.stride;
        Some((e, self.hashes.get(at..at + self.stride)?))
    }

    /// Load this job's account links from the store.
    pub(super) async fn load_links(&mut self, engine: &Engine) -> Result<()> {
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = engine
                .store
                .links(&self.job.name, EntityKind::Account, req.clone())
                .await?;
            self.add_links(&page.items)?;
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// Take links into the tables (a page of them, or the few a change set needs).
    pub(super) fn add_links(&mut self, links: &[Link]) -> Result<()> {
        for chunk in links.chunks(BATCH) {
            let hs = self.warm(chunk.iter().map(|l| Some(l.source.as_str())));
            let ht = self.warm(
                chunk
                    .iter()
                    .map(|l| (l.target != l.source).then_some(l.target.as_str())),
            );
            for ((l, hs), ht) in chunk.iter().zip(hs).zip(ht) {
                let s = self.intern_at(hs, l.source.as_str())?;
                let t = match l.target == l.source {
                    true => s,
                    false => self.intern_at(ht, l.target.as_str())?,
                };
                self.set_link(s, t);
            }
        }
        Ok(())
    }

    /// Index one target account (its fingerprint and correlation keys, not the record).
    pub(super) fn add_target(&mut self, a: &Account) -> Result<()> {
        self.add_target_at(Interner::hash(a.anchor.as_str()), a)
    }

    /// Index a batch of target accounts.
    pub(super) fn add_targets(&mut self, batch: &[Account]) -> Result<()> {
        let hs = self.warm(batch.iter().map(|a| Some(a.anchor.as_str())));
        for (a, h) in batch.iter().zip(hs) {
            self.add_target_at(h, a)?;
        }
        Ok(())
    }

    /// [`add_target`](Self::add_target) with the anchor's hash computed.
    pub(super) fn add_target_at(&mut self, h: u64, a: &Account) -> Result<()> {
        let id = self.intern_at(h, a.anchor.as_str())?;
        let slot = match self.st(id).slot {
            NONE => {
                let slot = u32::try_from(self.entries.len()).map_err(|_| too_many())?;
                self.entries.push(TEntry {
                    id,
                    attrs: Box::new([]),
                    status: a.status,
                    linked: false,
                    claimed: false,
                });
                self.hashes.resize(self.hashes.len() + self.stride, 0);
                if let Some(s) = self.st_mut(id) {
                    s.slot = slot;
                }
                slot
            }
            // Listed twice: the later listing wins.
            slot => slot,
        };
        let at = slot as usize * self.stride;
        let row = self
            .hashes
            .get_mut(at..at + self.stride)
            .ok_or_else(|| Error::unexpected("planner index out of step"))?;
        let nf = self.fields.len();
        for (h, f) in row.iter_mut().zip(&self.fields) {
            *h = field_hash(a, f);
        }
        // Correlation keys serve unlinked targets only; a link's target keeps none.
        let link_target = self.state.get(id as usize).is_some_and(|s| s.link_target);
        for (i, (h, rule)) in row[nf..].iter_mut().zip(&self.rules).enumerate() {
            *h = rule
                .as_ref()
                .filter(|_| !link_target)
                .and_then(|r| field_str(a, r))
                .and_then(|v| key_hash(i, v))
                .unwrap_or(0);
        }
        let attrs = if self.all_attrs {
            attr_hashes(a, &mut self.names)
        } else {
            Box::new([])
        };
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.attrs = attrs;
            e.status = a.status;
        }
        Ok(())
    }

    /// After the targets are indexed: mark linked ones, and index correlation keys of the
    /// others.
    pub(super) fn mark_links(&mut self) {
        for i in 0..self.state.len() {
            let t = self.state[i].link;
            if t == NONE {
                continue;
            }
            let slot = self.st(t).slot;
            if let Some(e) = self.entries.get_mut(slot as usize) {
                e.linked = true;
            }
        }
        let nf = self.fields.len();
        let nr = self.rules.len();
        self.keys.clear();
        self.key_next = vec![NONE; self.entries.len() * nr];
        for (slot, e) in self.entries.iter().enumerate() {
            if e.linked {
                continue;
            }
            let row = &self.hashes[slot * self.stride + nf..(slot + 1) * self.stride];
            for (rule, k) in row.iter().enumerate() {
                if *k != 0 {
                    let ks = (slot * nr + rule) as u32;
                    let older = self.keys.insert(*k, ks).unwrap_or(NONE);
                    self.key_next[ks as usize] = older;
                }
            }
        }
    }

    /// How many links point to a target that is not in the index (after the target was
    /// read): linked entities missing from the target.
    pub(super) fn missing_link_targets(&self) -> usize {
        self.state
            .iter()
            .filter(|s| s.link != NONE && self.st(s.link).slot == NONE)
            .count()
    }

    /// Unlinked, unclaimed targets whose correlation key `k` (of `rule`) matches, in
    /// anchor order.
    pub(super) fn candidates(&self, k: u64) -> Vec<u32> {
        let nr = self.rules.len().max(1);
        let mut out = Vec::new();
        let mut ks = self.keys.get(&k).copied().unwrap_or(NONE);
        while ks != NONE {
            let slot = ks as usize / nr;
            if let Some(e) = self.entries.get(slot)
                && !e.linked
                && !e.claimed
                && !out.contains(&e.id)
            {
                out.push(e.id);
            }
            ks = self.key_next.get(ks as usize).copied().unwrap_or(NONE);
        }
        out.sort_by(|a, b| self.ids.resolve(*a).cmp(self.ids.resolve(*b)));
        out
    }

    /// Translate a mapped source account's org references into target anchors (`hm`:
    /// the hash of its manager's anchor).
    pub(super) fn translate(
        &self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        a: &mut Account,
        hm: u64,
    ) -> (Vec<PendingRef>, Option<Anchor>) {
        let mut pending = Vec::new();
        if with_orgs {
            // In place: most references translate to an equal or already-linked anchor.
            let mut kept = 0usize;
            let anchor = &a.anchor;
            a.orgs.retain_mut(|o| match orgs.lookup(o) {
                Lookup::Same => {
                    kept += 1;
                    true
                }
                Lookup::Target(t) => {
                    *o = t.clone();
                    kept += 1;
                    true
                }
                Lookup::Pending(op) => {
                    pending.push(PendingRef {
                        field: "orgs".into(),
                        index: kept,
                        op,
                    });
                    kept += 1;
                    true
                }
                Lookup::Unplaced => {
                    b.warn(format!(
                        "account {anchor} is in org {o} which is not synced; that membership is left out"
                    ));
                    false
                }
            });
        } else {
            a.orgs.clear();
        }
        // Manager: linked managers translate now; others are resolved after correlation.
        let mut unresolved = None;
        if let Some(m) = &a.manager {
            match self.link_of_at(hm, m) {
                Some(t) => {
                    let t = self.ids.resolve(t);
                    if t != m.as_str() {
                        a.manager = Some(Anchor::new(t));
                    }
                }
                None => unresolved = a.manager.take(),
            }
        }
        (pending, unresolved)
    }

    pub(super) fn differs(&self, a: &Account, t: u32) -> bool {
        let Some((entry, row)) = self.entry(t) else {
            return true;
        };
        if self
            .fields
            .iter()
            .zip(row)
            .any(|(f, h)| field_hash(a, f) != *h)
        {
            return true;
        }
        if self.all_attrs {
            if a.attrs.len() != entry.attrs.len() {
                return true;
            }
            let mut mine: Vec<(u32, u64)> = Vec::with_capacity(a.attrs.len());
            for (k, v) in &a.attrs {
                match self.names.get(k) {
                    Some(id) => mine.push((id, crate::engine::index::hash_value(v))),
                    None => return true,
                }
            }
            mine.sort_unstable();
            return mine[..] != entry.attrs[..];
        }
        false
    }

    /// Observe a batch of mapped source accounts; the accounts that need nothing are
    /// given back.
    pub(super) fn observe_batch(
        &mut self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        batch: Vec<Account>,
    ) -> Result<Vec<Account>> {
        let ha = self.warm(batch.iter().map(|a| Some(a.anchor.as_str())));
        let hm = self.warm(batch.iter().map(|a| a.manager.as_ref().map(Anchor::as_str)));
        if with_orgs {
            orgs.warm(batch.iter().flat_map(|a| &a.orgs));
        }
        let mut spent = Vec::with_capacity(batch.len());
        for ((a, ha), hm) in batch.into_iter().zip(ha).zip(hm) {
            spent.extend(self.observe(b, orgs, with_orgs, a, (ha, hm))?);
        }
        Ok(spent)
    }

    /// Observe one mapped source account (`(ha, hm)`: the hashes of its anchor and its
    /// manager's); the account comes back when it needs nothing.
    pub(super) fn observe(
        &mut self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        mut mapped: Account,
        (ha, hm): (u64, u64),
    ) -> Result<Option<Account>> {
        self.source_count += 1;
        if mapped.anchor.is_empty() {
            return Err(Error::invalid_data(format!(
                "source account {:?} has an empty anchor",
                mapped.username
            )));
        }
        let sid = self.intern_at(ha, mapped.anchor.as_str())?;
        let st = self.st(sid);
        if st.seen {
            return Err(Error::invalid_data(format!(
                "source account anchor {} appears more than once",
                mapped.anchor
            ))
            .with_context("anchor", mapped.anchor.as_str()));
        }
        if let Some(s) = self.st_mut(sid) {
            s.seen = true;
        }
        let (pending, manager) = self.translate(b, orgs, with_orgs, &mut mapped, hm);
        let acc = mapped;
        let target = match st.link {
            NONE => None,
            t if self.st(t).slot != NONE => {
                if pending.is_empty() && manager.is_none() && !self.differs(&acc, t) {
                    return Ok(Some(acc));
                }
                Some(t)
            }
            t => {
                b.stale.push(Link {
                    kind: EntityKind::Account,
                    source: acc.anchor.clone(),
                    target: self.anchor(t),
                });
                self.set_link(sid, NONE);
                None
            }
        };
        self.work.push(Work {
            sid,
            target,
            acc,
            pending,
            manager,
        });
        Ok(None)
    }

    /// Correlate, diff and plan every observed account; then deletions.
    pub(super) async fn finish(
        mut self,
        b: &mut Builder,
        engine: &Engine,
        full: bool,
        explicit_deletes: &[(Anchor, Option<Status>)],
    ) -> Result<()> {
        let matched = self.correlate(b);
        let creates = self.plan_creates(b, &matched);
        self.plan_updates(b, &matched, &creates);
        self.plan_deletions(b, engine, full, explicit_deletes).await
    }
}
