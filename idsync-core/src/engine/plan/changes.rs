//! A change set: only the changed entities are read, on both sides of the store and the
//! target. The links of the changed accounts (and of their managers and orgs) are looked
//! up by anchor, the target accounts by anchor, correlation candidates by the sink's
//! `find_accounts`, so the cost follows the size of the change, not of the directory.
//! Changed orgs that are linked (with their parents) are looked up by anchor too. Three
//! paths read whole listings, and say so: a change set with an org that is not linked yet,
//! or whose parent is not, reads the target's org tree and every org link (correlation by
//! place needs them); a sink that cannot be read is diffed against its whole shadow copy;
//! and a change set of at least [`WHOLE_TARGET_AT`] accounts that is a quarter or more of
//! what the job links (a bulk import) reads the target's accounts once, indexed by anchor
//! and correlation keys, instead of one lookup per account.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use rustc_hash::FxHashMap;

use super::Plan;
use super::accounts::AccPlanner;
use super::builder::Builder;
use super::guard::{Harm, apply_guard, check_target_read};
use super::orgs::{map_orgs, plan_orgs, sync_orgs};
use super::read::{load_links, read_err, target_accounts, target_orgs};
use crate::engine::{Engine, Job};
use crate::error::Result;
use crate::model::{Account, Anchor, Entity, EntityKind, Org, key_matches};
use crate::source::{ChangeSet, Rename};
use crate::store::Link;

/// The org links and target orgs a change set of orgs needs, when every changed org, every
/// parent and every org of a changed account is linked and each linked target is found
/// by a lookup: then nothing is correlated by place and no listing is read. `None`: the
/// whole tree is needed (an unlinked org, a stale link, a sink that cannot be read).
async fn linked_org_changes(
    engine: &Engine,
    job: &Job,
    upserts: &[Org],
    deletes: &[Anchor],
    accounts: &[Account],
) -> Result<Option<(FxHashMap<Anchor, Anchor>, Vec<Org>)>> {
    if !job.target.capabilities().readable {
        return Ok(None);
    }
    let mut wanted: Vec<Anchor> = upserts
        .iter()
        .flat_map(|o| std::iter::once(o.anchor.clone()).chain(o.parent.clone()))
        .chain(deletes.iter().cloned())
        .chain(accounts.iter().flat_map(|a| a.orgs.iter().cloned()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let links: FxHashMap<Anchor, Anchor> = engine
        .store
        .links_of(&job.name, EntityKind::Org, &wanted)
        .await?
        .into_iter()
        .map(|l| (l.source, l.target))
        .collect();
    let all_linked = upserts.iter().all(|o| {
        links.contains_key(&o.anchor) && o.parent.as_ref().is_none_or(|p| links.contains_key(p))
    });
    if !all_linked {
        return Ok(None);
    }
    let mut targets: Vec<Anchor> = upserts
        .iter()
        .map(|o| &o.anchor)
        .chain(deletes)
        .filter_map(|s| links.get(s).cloned())
        .collect();
    targets.sort();
    targets.dedup();
    let mut orgs = Vec::with_capacity(targets.len());
    for t in targets {
        match job
            .target
            .as_source()
            .org(&t)
            .await
            .map_err(|e| read_err("target", "orgs", e))?
        {
            Some(o) => orgs.push(o),
            None => return Ok(None),
        }
    }
    Ok(Some((links, orgs)))
}

/// From this many changed accounts on, a change set at least a quarter the size of the
/// job's links reads the target once instead of looking each account up.
const WHOLE_TARGET_AT: usize = 1000;

/// The target's accounts in memory, by anchor and by the correlation key of each of the
/// job's rules.
struct Snapshot {
    by_anchor: HashMap<Anchor, Account>,
    by_key: HashMap<String, HashMap<String, Vec<Anchor>>>,
}

impl Snapshot {
    fn new(all: Vec<Account>, rules: &[String]) -> Self {
        let mut by_key: HashMap<String, HashMap<String, Vec<Anchor>>> = HashMap::new();
        for rule in rules {
            let idx = by_key.entry(rule.clone()).or_default();
            for a in &all {
                if let serde_json::Value::String(v) = a.get(rule)
                    && let Some(k) = crate::model::correlation_key(&v)
                {
                    idx.entry(k.into_owned())
                        .or_default()
                        .push(a.anchor.clone());
                }
            }
        }
        let by_anchor = all.into_iter().map(|a| (a.anchor.clone(), a)).collect();
        Snapshot { by_anchor, by_key }
    }

    /// The accounts whose `rule` field has the correlation key of `value`.
    fn candidates(&self, rule: &str, value: &str) -> Vec<Account> {
        let Some(k) = crate::model::correlation_key(value) else {
            return Vec::new();
        };
        self.by_key
            .get(rule)
            .and_then(|idx| idx.get(k.as_ref()))
            .into_iter()
            .flatten()
            .filter_map(|t| self.by_anchor.get(t))
            .filter(|a| key_matches(*a, rule, value))
            .cloned()
            .collect()
    }
}

/// Plan a change set: only the changed entities are read on the target side.
pub(crate) async fn plan_changes(
    engine: &Engine,
    job: &Job,
    run_id: &str,
    cs: ChangeSet,
) -> Result<Plan> {
    let with_orgs = sync_orgs(job);
    let store = &engine.store;
    let mut b = Builder::new();
    let mut read = BTreeMap::new();
    let mut mapped_upserts = Vec::new();
    for a in cs.account_upserts {
        if let Some(m) = job.mapping.map_account_owned(a)? {
            mapped_upserts.push(m);
        }
    }
    let touches_orgs = with_orgs && (!cs.org_upserts.is_empty() || !cs.org_deletes.is_empty());
    // Org changes whose orgs and parents are all linked are planned from lookups by anchor;
    // only one that needs correlation by place reads all org links and the target's tree.
    let linked_orgs = if touches_orgs {
        linked_org_changes(
            engine,
            job,
            &cs.org_upserts,
            &cs.org_deletes,
            &mapped_upserts,
        )
        .await?
    } else {
        None
    };
    let whole_tree = touches_orgs && linked_orgs.is_none();
    let (org_links, target_orgs): (FxHashMap<Anchor, Anchor>, Vec<Org>) =
        if let Some(found) = linked_orgs {
            found
        } else if whole_tree {
            let links = load_links(engine, &job.name, EntityKind::Org, |t| t).await?;
            let orgs = target_orgs(engine, job)
                .try_collect()
                .await
                .map_err(|e| read_err("target", "orgs", e))?;
            (links, orgs)
        } else if with_orgs {
            // Only the links of the orgs the changed accounts are in.
            let mut refs: Vec<Anchor> = mapped_upserts
                .iter()
                .flat_map(|a| a.orgs.iter().cloned())
                .collect();
            refs.sort();
            refs.dedup();
            let links = store
                .links_of(&job.name, EntityKind::Org, &refs)
                .await?
                .into_iter()
                .map(|l| (l.source, l.target))
                .collect();
            (links, Vec::new())
        } else {
            (FxHashMap::default(), Vec::new())
        };
    read.insert("source_orgs".to_owned(), cs.org_upserts.len());
    read.insert("target_orgs".to_owned(), target_orgs.len());
    let source_orgs = if with_orgs {
        map_orgs(job, cs.org_upserts)?
    } else {
        Vec::new()
    };
    let orgs = plan_orgs(
        &mut b,
        job,
        source_orgs,
        &target_orgs,
        &org_links,
        false,
        &cs.org_deletes,
    );

    // Account links of what changed: the upserts, their managers, the deletes.
    let mut ap = AccPlanner::new(job, with_orgs);
    let mut wanted: Vec<Anchor> = mapped_upserts
        .iter()
        .flat_map(|a| std::iter::once(a.anchor.clone()).chain(a.manager.clone()))
        .chain(cs.account_deletes.iter().cloned())
        .chain(cs.account_renames.iter().map(|r| r.from.clone()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let links = store
        .links_of(&job.name, EntityKind::Account, &wanted)
        .await?;
    let links = relink_renames(&mut b, links, &cs.account_renames);
    ap.add_links(&links)?;

    // Target accounts: the linked ones of the changed entities, plus correlation
    // candidates of unlinked ones — looked up one by one, or, for a target that cannot be
    // read (its shadow copy) or a change set that is large beside what the job links (a
    // bulk import), read once and indexed.
    let readable = job.target.capabilities().readable;
    let changed = mapped_upserts.len() + cs.account_deletes.len();
    let whole = !readable
        || (changed >= WHOLE_TARGET_AT
            && changed.saturating_mul(4)
                >= store.link_count(&job.name, EntityKind::Account).await?);
    let mut shadow: Option<Snapshot> = None;
    if whole {
        let all: Vec<Account> = target_accounts(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "accounts", e))?;
        shadow = Some(Snapshot::new(all, &job.correlation));
    }
    let fetch = |t: Anchor| {
        let shadow = &shadow;
        async move {
            match shadow {
                Some(s) => Ok(s.by_anchor.get(&t).cloned()),
                None => job
                    .target
                    .as_source()
                    .account(&t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e)),
            }
        }
    };
    // Linked targets a lookup did not find: the guard counts them.
    let mut missing = 0usize;
    let mut explicit_deletes = Vec::new();
    for s in &cs.account_deletes {
        let status = match ap.linked_target(s) {
            Some(t) => {
                let found = fetch(t).await?;
                let status = found.as_ref().map(|a| a.status);
                if let Some(a) = &found {
                    ap.add_target(a)?;
                }
                status
            }
            None => None,
        };
        explicit_deletes.push((s.clone(), status));
    }
    for m in &mapped_upserts {
        let mut lookups: Vec<Anchor> = Vec::new();
        if let Some(t) = ap.linked_target(&m.anchor) {
            lookups.push(t);
        } else {
            let mut found: Vec<Account> = Vec::new();
            for rule in &job.correlation {
                let Some(v) = m.get(rule).as_str().map(str::to_owned) else {
                    continue;
                };
                if crate::model::correlation_key(&v).is_none() {
                    continue;
                }
                found.extend(match &shadow {
                    Some(s) => s.candidates(rule, &v),
                    None => job
                        .target
                        .as_source()
                        .find_accounts(rule, &v)
                        .await
                        .map_err(|e| read_err("target", "accounts", e))?,
                });
            }
            // A candidate another source of this job is linked to is not free: its link
            // goes into the tables first, so the target is indexed without correlation keys.
            let fresh: Vec<Anchor> = found
                .iter()
                .filter(|a| !ap.has_target(&a.anchor))
                .map(|a| a.anchor.clone())
                .collect();
            if !fresh.is_empty() {
                let taken = store
                    .links_to(&job.name, EntityKind::Account, &fresh)
                    .await?;
                ap.add_links(&taken)?;
            }
            for a in &found {
                if !ap.has_target(&a.anchor) {
                    ap.add_target(a)?;
                }
            }
        }
        // A manager linked to a target is translated by `translate`; make sure that target
        // counts as known.
        if let Some(mg) = &m.manager
            && let Some(t) = ap.linked_target(mg)
        {
            lookups.push(t);
        }
        for t in lookups {
            if ap.has_target(&t) {
                continue;
            }
            match fetch(t).await? {
                Some(a) => ap.add_target(&a)?,
                None => missing += 1,
            }
        }
    }
    // The guard's base (how many accounts the job links) is counted only when there is
    // something to measure against it: a count over every link costs more than the rest
    // of a one-entity change set.
    let guarded = !explicit_deletes.is_empty() || missing > 0 || !job.guard.per_op.is_empty();
    let linked_total = if guarded || job.authoritative {
        store.link_count(&job.name, EntityKind::Account).await?
    } else {
        0
    };
    check_target_read(job, EntityKind::Account, None, linked_total, missing)?;
    ap.mark_links();
    read.insert("source_accounts".to_owned(), mapped_upserts.len());
    read.insert("target_accounts".to_owned(), ap.entries.len());
    ap.observe_batch(&mut b, &orgs, with_orgs, mapped_upserts)?;
    let target_entries = ap.entries.len();
    ap.finish(&mut b, engine, false, &explicit_deletes).await?;
    let mut plan = b.finish(job, run_id, true, read);
    let org_base = if whole_tree {
        org_links.len()
    } else if plan.count(crate::source::OpKind::DeleteOrg) > 0 || !job.guard.per_op.is_empty() {
        store.link_count(&job.name, EntityKind::Org).await?
    } else {
        0
    };
    let linked_total = if linked_total == 0 && plan.ops.iter().any(|p| p.op.is_destructive()) {
        store.link_count(&job.name, EntityKind::Account).await?
    } else {
        linked_total
    };
    let base = if job.authoritative {
        linked_total.max(target_entries)
    } else {
        linked_total
    };
    let harm = Harm {
        base_accounts: base,
        base_orgs: org_base,
        missing_accounts: missing,
        missing_orgs: 0,
    };
    apply_guard(engine, job, &mut plan, harm).await?;
    Ok(plan)
}

/// Renamed source anchors keep their target: the link of `from` becomes a link of `to`
/// (a new link of the plan) and the old one a stale link, so the account is planned as
/// the linked entity it is (an update at most), never a delete and a create. Renames apply
/// in order (`a -> b`, then `b -> c`); one whose `from` is not linked, or whose `to` is
/// already linked, changes nothing.
fn relink_renames(b: &mut Builder, mut links: Vec<Link>, renames: &[Rename]) -> Vec<Link> {
    for r in renames {
        if r.from == r.to || links.iter().any(|l| l.source == r.to) {
            continue;
        }
        let Some(l) = links.iter_mut().find(|l| l.source == r.from) else {
            continue;
        };
        b.stale.push(l.clone());
        l.source = r.to.clone();
        b.links.push(l.clone());
    }
    links
}
