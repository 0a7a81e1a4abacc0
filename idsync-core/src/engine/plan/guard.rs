//! The guard's verdict on a plan: thresholds per operation kind, absolute and as a share
//! of what the job links.

use super::Plan;
use crate::engine::{GuardVerdict, Job};

pub(super) fn apply_guard(job: &Job, plan: &mut Plan, target_accounts: usize, target_orgs: usize) {
    let mut reasons = Vec::new();
    let destructive = plan.count("disable_account") + plan.count("delete_account");
    if let Some(r) = job
        .guard
        .destructive_accounts
        .crossed(destructive, target_accounts)
    {
        reasons.push(format!("accounts disabled or deleted: {r}"));
    }
    if let Some(r) = job
        .guard
        .org_deletes
        .crossed(plan.count("delete_org"), target_orgs)
    {
        reasons.push(format!("orgs deleted: {r}"));
    }
    for (name, th) in &job.guard.per_op {
        let total = if name.ends_with("_org") {
            target_orgs
        } else {
            target_accounts
        };
        if let Some(r) = th.crossed(plan.count(name), total) {
            reasons.push(format!("{name}: {r}"));
        }
    }
    plan.guard = GuardVerdict {
        stopped: !reasons.is_empty(),
        reasons,
    };
}
