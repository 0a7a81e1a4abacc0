//! Target accounts whose source is gone: the deletion policy (disable, delete, ignore, or
//! disable then delete after a retention), adjusted to what the sink can do.

use super::accounts::AccPlanner;
use super::builder::Builder;
use super::{ACC_DELETE, ACC_STATUS};
use crate::engine::index::NONE;
use crate::engine::{DeletionPolicy, Engine};
use crate::error::{Error, Result};
use crate::model::{Anchor, EntityKind, Status};
use crate::source::{Op, OpKind};
use crate::store::Link;

impl AccPlanner<'_> {
    /// Plan what happens to linked targets whose source is gone: in a full run every link
    /// whose source was not listed, in a change set the explicit deletes.
    pub(super) async fn plan_deletions(
        &self,
        b: &mut Builder,
        engine: &Engine,
        full: bool,
        explicit_deletes: &[(Anchor, Option<Status>)],
    ) -> Result<()> {
        // Deletions: linked targets whose source is gone.
        let mut gone: Vec<(Anchor, Anchor, Status)> = Vec::new();
        if full {
            for (s, st) in self.state.iter().enumerate() {
                if st.link == NONE || st.seen {
                    continue;
                }
                let source = self.anchor(s as u32);
                let target = self.anchor(st.link);
                match self.entries.get(self.st(st.link).slot as usize) {
                    Some(e) => gone.push((source, target, e.status)),
                    None => b.stale.push(Link {
                        kind: EntityKind::Account,
                        source,
                        target,
                    }),
                }
            }
            if self.job.authoritative {
                for e in &self.entries {
                    if !e.linked && !e.claimed {
                        gone.push((Anchor::default(), self.anchor(e.id), e.status));
                    }
                }
            }
        } else {
            for (s, status) in explicit_deletes {
                if let Some(t) = self.linked_target(s)
                    && let Some(st) = status
                {
                    gone.push((s.clone(), t, *st));
                }
            }
        }
        gone.sort();
        let can_disable = self.job.target.capabilities().disable;
        let can_delete = self.job.target.capabilities().delete;
        let mut policy = self.job.deletion;
        if !can_disable && !gone.is_empty() {
            match policy {
                DeletionPolicy::Disable => {
                    b.warn(format!(
                        "the sink cannot disable accounts; {} accounts gone from the source are left as they are (use the delete policy to remove them)",
                        gone.len()
                    ));
                    policy = DeletionPolicy::Ignore;
                }
                DeletionPolicy::DisableThenDelete { .. } if can_delete => {
                    b.warn(
                        "the sink cannot disable accounts; accounts gone from the source are deleted at once",
                    );
                    policy = DeletionPolicy::Delete;
                }
                _ => {}
            }
        }
        for (s, t, status) in gone {
            let src = (!s.is_empty()).then_some(s);
            match policy {
                DeletionPolicy::Ignore => {}
                DeletionPolicy::Disable => {
                    if status == Status::Active {
                        b.push(ACC_STATUS, Op::DisableAccount { anchor: t }, src, vec![]);
                    }
                }
                DeletionPolicy::Delete => {
                    b.push(ACC_DELETE, Op::DeleteAccount { anchor: t }, src, vec![]);
                }
                DeletionPolicy::DisableThenDelete { retention } => {
                    if status == Status::Active {
                        b.push(ACC_STATUS, Op::DisableAccount { anchor: t }, src, vec![]);
                    } else if disabled_longer_than(engine, &self.job.name, &t, retention).await? {
                        b.push(ACC_DELETE, Op::DeleteAccount { anchor: t }, src, vec![]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether this job disabled the account more than `retention` ago (per the audit trail).
pub(super) async fn disabled_longer_than(
    engine: &Engine,
    job: &str,
    target: &Anchor,
    retention: std::time::Duration,
) -> Result<bool> {
    let trail = engine.store.audit(EntityKind::Account, target).await?;
    let last_disable = trail
        .iter()
        .rev()
        .find(|a| a.job == job && a.op == OpKind::DisableAccount);
    let Some(entry) = last_disable else {
        return Ok(false);
    };
    let retention = chrono::Duration::from_std(retention)
        .map_err(|_| Error::config("retention out of range"))?;
    Ok(engine.clock.now() - entry.at > retention)
}
