//! A change set: only the changed entities are read on the target side.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;

use super::Plan;
use super::accounts::AccPlanner;
use super::builder::Builder;
use super::guard::apply_guard;
use super::orgs::{map_orgs, plan_orgs, sync_orgs};
use super::read::{load_links, read_err, target_accounts, target_orgs};
use crate::engine::{Engine, Job};
use crate::error::Result;
use crate::model::{Account, Anchor, Entity, EntityKind, Org};
use crate::source::ChangeSet;

/// Plan a change set: only the changed entities are read on the target side.
pub(crate) async fn plan_changes(
    engine: &Engine,
    job: &Job,
    run_id: &str,
    cs: ChangeSet,
) -> Result<Plan> {
    let with_orgs = sync_orgs(job);
    let org_links = load_links(engine, &job.name, EntityKind::Org, |t| t).await?;
    let mut b = Builder::new();
    let mut read = BTreeMap::new();
    let touches_orgs = with_orgs && (!cs.org_upserts.is_empty() || !cs.org_deletes.is_empty());
    let target_orgs: Vec<Org> = if touches_orgs {
        target_orgs(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "orgs", e))?
    } else {
        Vec::new()
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

    // Target accounts: the linked ones of the changed entities, plus correlation
    // candidates of unlinked ones.
    let mut ap = AccPlanner::new(job, with_orgs);
    ap.load_links(engine).await?;
    let readable = job.sink.capabilities().readable;
    let mut shadow: Option<HashMap<Anchor, Account>> = None;
    if !readable {
        let all: Vec<Account> = target_accounts(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "accounts", e))?;
        shadow = Some(all.into_iter().map(|a| (a.anchor.clone(), a)).collect());
    }
    let fetch = |t: Anchor| {
        let shadow = &shadow;
        async move {
            match shadow {
                Some(s) => Ok(s.get(&t).cloned()),
                None => job.sink.account(&t).await,
            }
        }
    };
    let mut mapped_upserts = Vec::new();
    for a in cs.account_upserts {
        if let Some(m) = job.mapping.map_account(&a)? {
            mapped_upserts.push(m);
        }
    }
    let mut explicit_deletes = Vec::new();
    for s in &cs.account_deletes {
        let status = match ap.linked_target(s) {
            Some(t) => {
                let found = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?;
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
        if let Some(t) = ap.linked_target(&m.anchor) {
            if !ap.has_target(&t)
                && let Some(a) = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(&a)?;
            }
        } else {
            for rule in &job.correlation {
                let Some(v) = m.get(rule).as_str().map(str::to_owned) else {
                    continue;
                };
                if v.trim().is_empty() {
                    continue;
                }
                let found = match &shadow {
                    Some(s) => s
                        .values()
                        .filter(|a| {
                            a.get(rule)
                                .as_str()
                                .is_some_and(|x| x.trim().eq_ignore_ascii_case(v.trim()))
                        })
                        .cloned()
                        .collect(),
                    None => job
                        .sink
                        .find_accounts(rule, &v)
                        .await
                        .map_err(|e| read_err("target", "accounts", e))?,
                };
                for a in &found {
                    if !ap.has_target(&a.anchor) {
                        ap.add_target(a)?;
                    }
                }
            }
        }
        // A manager linked to a target is translated by `translate`; make sure that target
        // counts as known.
        if let Some(mg) = &m.manager
            && let Some(t) = ap.linked_target(mg)
            && !ap.has_target(&t)
        {
            if let Some(a) = fetch(t)
                .await
                .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(&a)?;
            }
        }
    }
    ap.mark_links();
    read.insert("source_accounts".to_owned(), mapped_upserts.len());
    read.insert("target_accounts".to_owned(), ap.entries.len());
    ap.observe_batch(&mut b, &orgs, with_orgs, mapped_upserts)?;
    let total = ap.n_links.max(ap.entries.len());
    ap.finish(&mut b, engine, false, &explicit_deletes).await?;
    let mut plan = b.finish(job, run_id, true, read);
    apply_guard(
        job,
        &mut plan,
        total,
        org_links.len().max(target_orgs.len()),
    );
    Ok(plan)
}
