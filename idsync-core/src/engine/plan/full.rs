//! A full run: read both sides completely (a failed or short read aborts before anything
//! is planned), then diff.

use std::collections::{BTreeMap, HashSet};

use futures::TryStreamExt;

use super::Plan;
use super::accounts::AccPlanner;
use super::builder::Builder;
use super::guard::{Harm, apply_guard, check_target_read};
use super::orgs::{map_orgs, plan_orgs, sync_orgs};
use super::read::{load_links, owned_accounts, read_ahead, read_err, target_accounts, target_orgs};
use crate::engine::{Engine, Job};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Anchor, EntityKind, Org, ProblemKind};
use crate::source::SourceExt;

/// Plan a full run: read both sides completely, then diff.
pub(crate) async fn plan_full(engine: &Engine, job: &Job, run_id: &str) -> Result<Plan> {
    let with_orgs = sync_orgs(job);
    let org_links = load_links(engine, &job.name, EntityKind::Org, |t| t).await?;
    let mut b = Builder::new();
    let mut read = BTreeMap::new();

    // Orgs: few enough to hold whole.
    let (source_orgs, target_orgs) = if with_orgs {
        let s: Vec<Org> = job
            .source
            .org_stream(job.page_size)
            .try_collect()
            .await
            .map_err(|e| read_err("source", "orgs", e))?;
        let t: Vec<Org> = target_orgs(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "orgs", e))?;
        (s, t)
    } else {
        (Vec::new(), Vec::new())
    };
    read.insert("source_orgs".to_owned(), source_orgs.len());
    read.insert("target_orgs".to_owned(), target_orgs.len());
    let source_orgs = map_orgs(job, source_orgs)?;
    let problems: Vec<_> = crate::model::check(&source_orgs, &[])
        .into_iter()
        .filter(|p| p.kind != ProblemKind::UnknownManager)
        .collect();
    crate::model::problems_to_result(&problems)?;
    if with_orgs && source_orgs.is_empty() && !org_links.is_empty() && !job.allow_empty_source {
        return Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "job {}: the source listed no orgs, but {} orgs are linked to it; refusing to treat that as 'all deleted'",
                job.name,
                org_links.len()
            ),
        ));
    }
    let org_missing = {
        let listed: HashSet<&Anchor> = target_orgs.iter().map(|o| &o.anchor).collect();
        org_links.values().filter(|t| !listed.contains(t)).count()
    };
    if with_orgs {
        check_target_read(
            job,
            EntityKind::Org,
            Some(target_orgs.len()),
            org_links.len(),
            org_missing,
        )?;
    }
    let org_base = if job.authoritative {
        org_links.len().max(target_orgs.len())
    } else {
        org_links.len()
    };
    let orgs = plan_orgs(
        &mut b,
        job,
        source_orgs,
        &target_orgs,
        &org_links,
        true,
        &[],
    );
    drop(target_orgs);

    // Accounts: the target is indexed by fingerprints, the source streamed.
    let mut ap = AccPlanner::new(job, with_orgs);
    ap.load_links(engine).await?;
    // Most targets are linked: size the index once instead of growing it step by step.
    ap.reserve_targets(ap.n_links);
    {
        let (mut t, spent) = read_ahead(target_accounts(engine, job));
        while let Some(batch) = t
            .try_next()
            .await
            .map_err(|e| read_err("target", "accounts", e))?
        {
            ap.add_targets(&batch)?;
            spent.give(batch);
        }
    }
    ap.mark_links();
    let target_count = ap.entries.len();
    read.insert("target_accounts".to_owned(), target_count);
    let missing = ap.missing_link_targets();
    check_target_read(
        job,
        EntityKind::Account,
        Some(target_count),
        ap.n_links,
        missing,
    )?;
    let base = if job.authoritative {
        target_count.max(ap.n_links)
    } else {
        ap.n_links
    };
    {
        let listing = owned_accounts(job.source.clone(), job.page_size);
        let (mut s, spent) = read_ahead(listing);
        while let Some(batch) = s
            .try_next()
            .await
            .map_err(|e| read_err("source", "accounts", e))?
        {
            let mut mapped = Vec::with_capacity(batch.len());
            for a in batch {
                match job.mapping.map_account_owned(a)? {
                    Some(m) => mapped.push(m),
                    None => ap.source_count += 1,
                }
            }
            spent.give(ap.observe_batch(&mut b, &orgs, with_orgs, mapped)?);
        }
    }
    read.insert("source_accounts".to_owned(), ap.source_count);
    if ap.source_count == 0 && ap.n_links > 0 && !job.allow_empty_source {
        return Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "job {}: the source listed no accounts, but {} accounts are linked to it; refusing to treat that as 'everyone left'",
                job.name, ap.n_links
            ),
        ));
    }
    ap.finish(&mut b, engine, true, &[]).await?;
    let mut plan = b.finish(job, run_id, false, read);
    let harm = Harm {
        base_accounts: base,
        base_orgs: org_base,
        missing_accounts: missing,
        missing_orgs: org_missing,
    };
    apply_guard(engine, job, &mut plan, harm).await?;
    Ok(plan)
}
