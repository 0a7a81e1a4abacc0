//! The guard's verdict on a plan: thresholds per operation kind, absolute and as a share
//! of what the job links, over this run and the job's other runs within the rolling
//! window; and the check that a target listing is not missing more linked entities than
//! the guard allows.

use std::collections::BTreeMap;

use super::Plan;
use crate::engine::{Engine, GuardVerdict, Job, ReportCounts, Threshold};
use crate::error::{Error, ErrorKind, Result};
use crate::model::EntityKind;
use crate::source::OpKind;
use crate::store::RunStatus;

/// What a plan can harm, as the guard measures it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Harm {
    /// Accounts the job links (the base of percentages); every target account for an
    /// authoritative job.
    pub(super) base_accounts: usize,
    /// Orgs the job links (or every target org, authoritative).
    pub(super) base_orgs: usize,
    /// Linked accounts missing from the target (their links are dropped, and they are
    /// created again).
    pub(super) missing_accounts: usize,
    /// Linked orgs missing from the target.
    pub(super) missing_orgs: usize,
}

/// Fail when a target listing is missing more of the job's linked entities than the guard
/// allows, or listed none while links exist: a short read must never turn into creating
/// everyone again. `listed`: how many the listing held (`None`: the target was read by
/// lookups, as for a change set).
pub(super) fn check_target_read(
    job: &Job,
    kind: EntityKind,
    listed: Option<usize>,
    linked: usize,
    missing: usize,
) -> Result<()> {
    if linked == 0 || missing == 0 {
        return Ok(());
    }
    let (what, th) = match kind {
        EntityKind::Account => ("accounts", &job.guard.destructive_accounts),
        EntityKind::Org => ("orgs", &job.guard.org_deletes),
    };
    let why = if listed == Some(0) && !job.allow_empty_target {
        Some(format!("it listed no {what} at all"))
    } else if listed == Some(0) {
        None
    } else {
        th.crossed(missing, linked)
            .map(|r| format!("{missing} of the {linked} linked {what} are missing from it ({r})"))
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "job {}: the target's listing of {what} looks short: {why}; nothing was planned \
                 (if the target really lost them, raise the guard or allow an empty target)",
                job.name
            ),
        )
        .with_context("job", job.name.clone())
        .with_context("side", "target")
        .with_context(
            "listed",
            listed.map_or_else(|| "lookups".to_owned(), |n| n.to_string()),
        )
        .with_context("linked", linked.to_string())
        .with_context("missing", missing.to_string())),
    }
}

/// Destructive ops of the job's earlier runs applied within the guard's window (runs that
/// were approved after a stop are left out: someone looked at those).
async fn window_counts(engine: &Engine, job: &Job) -> Result<BTreeMap<OpKind, usize>> {
    let mut out = BTreeMap::new();
    if job.guard.window.is_zero() {
        return Ok(out);
    }
    let window = chrono::Duration::from_std(job.guard.window)
        .map_err(|_| Error::config("guard window out of range"))?;
    let since = engine.clock.now() - window;
    for run in engine.store.runs(Some(&job.name), 10_000).await? {
        if run.started_at < since {
            break;
        }
        if !matches!(
            run.status,
            RunStatus::Succeeded | RunStatus::PartiallyFailed
        ) {
            continue;
        }
        let Some(counts) = run
            .summary
            .and_then(|v| serde_json::from_value::<ReportCounts>(v).ok())
        else {
            continue;
        };
        if counts.approved {
            continue;
        }
        for (k, n) in counts.by_op {
            if k.is_destructive() || job.guard.per_op.contains_key(&k) {
                *out.entry(k).or_insert(0) += n;
            }
        }
    }
    Ok(out)
}

/// Judge a plan: this run's ops (plus what it found missing from the target), and the
/// same added to the job's runs within the window.
pub(super) async fn apply_guard(
    engine: &Engine,
    job: &Job,
    plan: &mut Plan,
    harm: Harm,
) -> Result<()> {
    let earlier = window_counts(engine, job).await?;
    let before = |k: OpKind| earlier.get(&k).copied().unwrap_or(0);
    let mut reasons = Vec::new();
    let mut judge = |what: &str, th: &Threshold, now: usize, past: usize, base: usize| {
        if let Some(r) = th.crossed(now, base) {
            reasons.push(format!("{what}: {r}"));
        } else if past > 0
            && let Some(r) = th.crossed(now + past, base)
        {
            reasons.push(format!(
                "{what}, with the job's runs of the last {}: {r}",
                humanize(job.guard.window)
            ));
        }
    };
    let destructive = plan.count(OpKind::DisableAccount)
        + plan.count(OpKind::DeleteAccount)
        + harm.missing_accounts;
    judge(
        "accounts disabled, deleted or missing from the target",
        &job.guard.destructive_accounts,
        destructive,
        before(OpKind::DisableAccount) + before(OpKind::DeleteAccount),
        harm.base_accounts,
    );
    judge(
        "orgs deleted or missing from the target",
        &job.guard.org_deletes,
        plan.count(OpKind::DeleteOrg) + harm.missing_orgs,
        before(OpKind::DeleteOrg),
        harm.base_orgs,
    );
    for (kind, th) in &job.guard.per_op {
        let base = match kind.entity() {
            EntityKind::Org => harm.base_orgs,
            EntityKind::Account => harm.base_accounts,
        };
        judge(kind.as_str(), th, plan.count(*kind), before(*kind), base);
    }
    plan.guard = GuardVerdict {
        stopped: !reasons.is_empty(),
        reasons,
    };
    Ok(())
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}
