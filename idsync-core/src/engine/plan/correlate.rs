//! Correlating unlinked source accounts with unlinked target accounts by the job's rules,
//! in order: only a unique match links; a rule that matches several targets, or a target
//! that several source accounts match, is a conflict and nothing is done for them.

use rustc_hash::{FxHashMap, FxHashSet};

use super::accounts::AccPlanner;
use super::builder::Builder;
use crate::engine::index::key_hash;
use crate::model::{Entity, EntityKind};

/// What correlation decided, by index in the planner's work list.
pub(super) struct Matched {
    /// The target a rule matched (unlinked accounts only).
    pub(super) matches: Vec<Option<u32>>,
    /// Accounts in a conflict: nothing is done for them.
    pub(super) skip: FxHashSet<usize>,
    /// The target of each account: linked, or correlated now; `None`: to be created.
    pub(super) targets: Vec<Option<u32>>,
}

impl AccPlanner<'_> {
    /// Correlate the unlinked accounts of the work list (sorted by anchor first); the
    /// links found count from here on.
    pub(super) fn correlate(&mut self, b: &mut Builder) -> Matched {
        self.work.sort_by(|x, y| x.acc.anchor.cmp(&y.acc.anchor));
        // Correlate unlinked accounts: first compute each one's match.
        let mut matches: Vec<Option<u32>> = vec![None; self.work.len()];
        let mut claims: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
        let mut skip: FxHashSet<usize> = FxHashSet::default();
        for (i, w) in self.work.iter().enumerate() {
            let acc = &w.acc;
            if w.target.is_some() {
                continue;
            }
            for (ri, rule) in self.job.correlation.iter().enumerate() {
                let Some(v) = acc.get(rule).as_str().map(str::to_owned) else {
                    continue;
                };
                let Some(k) = key_hash(ri, &v) else { continue };
                let free = self.candidates(k);
                if free.len() == 1 {
                    claims.entry(free[0]).or_default().push(i);
                    matches[i] = Some(free[0]);
                    break;
                } else if free.len() > 1 {
                    let free = free.into_iter().map(|t| self.anchor(t)).collect();
                    b.conflict(EntityKind::Account, &acc.anchor, free, rule);
                    skip.insert(i);
                    break;
                }
            }
        }
        let mut claims: Vec<(u32, Vec<usize>)> = claims.into_iter().collect();
        claims.sort_by(|x, y| self.ids.resolve(x.0).cmp(self.ids.resolve(y.0)));
        for (t, who) in &claims {
            if who.len() > 1 {
                for i in who {
                    let src = self.work[*i].acc.anchor.clone();
                    b.conflict(
                        EntityKind::Account,
                        &src,
                        vec![self.anchor(*t)],
                        "several source accounts match one target",
                    );
                    skip.insert(*i);
                    matches[*i] = None;
                }
            } else {
                let slot = self.st(*t).slot;
                if let Some(e) = self.entries.get_mut(slot as usize) {
                    e.claimed = true;
                }
            }
        }
        // Targets: linked, or correlated now (their links count from here on).
        let mut targets: Vec<Option<u32>> = Vec::with_capacity(self.work.len());
        let mut new_links: Vec<(u32, u32)> = Vec::new();
        for (i, (w, matched)) in self.work.iter().zip(&matches).enumerate() {
            if skip.contains(&i) {
                targets.push(None);
                continue;
            }
            let target = w.target.or(*matched);
            if w.target.is_none()
                && let Some(tg) = target
            {
                new_links.push((w.sid, tg));
            }
            targets.push(target);
        }
        for (source, target) in new_links {
            self.set_link(source, target);
        }
        Matched {
            matches,
            skip,
            targets,
        }
    }
}
