//! Planning: correlate and diff the two sides into an ordered, serializable [`Plan`].
//!
//! This file owns the plan's types and its phases. The rest, one concern a file:
//!
//! | file | owns |
//! |---|---|
//! | `builder.rs` | collecting ops, links and conflicts; the plan's stable order |
//! | `read.rs` | reading both sides: streams, read-ahead tasks, links, shadow copies, read errors |
//! | `orgs.rs` | the org planner: correlation by place and name, updates, moves, creates, deletes |
//! | `accounts.rs` | the account planner's index of the target and what it observes of the source |
//! | `correlate.rs` | correlating unlinked accounts by the job's rules |
//! | `creates.rs` | account creates, managers before the people they manage |
//! | `updates.rs` | updates and status changes of linked and correlated accounts |
//! | `deletions.rs` | what happens to target accounts whose source is gone; retention |
//! | `guard.rs` | the guard's verdict on a plan |
//! | `full.rs` / `changes.rs` | the two entry points: a full run, a change set |
//! | `recovery.rs` | earlier runs' unfinished creates |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::GuardVerdict;
use crate::model::{Anchor, EntityKind};
use crate::source::{Op, OpKind, SyncCursor};
use crate::store::Link;

mod accounts;
mod builder;
mod changes;
mod correlate;
mod creates;
mod deletions;
mod full;
mod guard;
mod orgs;
mod read;
mod recovery;
mod updates;

pub(crate) use changes::plan_changes;
pub(crate) use full::plan_full;
pub(crate) use recovery::{crashed_create, resolve_open_creates};

// Phases: ops of a phase run concurrently; a phase starts when the previous one ended.

// Phases: ops of a phase run concurrently; a phase starts when the previous one ended.
pub(crate) const ORG_CREATE: u32 = 0; // + depth of the pending chain
pub(crate) const ORG_UPDATE: u32 = 1000;
pub(crate) const ORG_MOVE: u32 = 1001; // + depth in the new tree
pub(crate) const ACC_CREATE: u32 = 2000; // + depth of the manager chain
const MAX_MANAGER_DEPTH: u32 = 500;
pub(crate) const ACC_UPDATE: u32 = 2600;
pub(crate) const ACC_MANAGER: u32 = 2601;
pub(crate) const ACC_STATUS: u32 = 2602;
pub(crate) const ACC_DELETE: u32 = 3000;
pub(crate) const ORG_DELETE: u32 = 4000; // + (999 - depth): deepest first
const MAX_DEPTH: u32 = 998;

/// A reference inside an op to an entity created by another op of the same plan; the
/// engine fills in the created anchor before sending the op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    /// `"parent"`, `"orgs"`, `"manager"`, or `"anchor"` (the op's own target).
    pub field: String,
    /// Position in a list field.
    pub index: usize,
    /// The op whose created anchor goes here.
    pub op: usize,
}

/// One planned operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// Index in the plan.
    pub id: usize,
    /// Ops of one phase run concurrently, phases in order.
    pub phase: u32,
    /// The operation (pending references hold the source anchor until resolved).
    pub op: Op,
    /// The source entity it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Anchor>,
    /// Ops that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<usize>,
    /// References filled from other ops' results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingRef>,
}

/// An entity the engine would not guess about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Org or account.
    pub kind: EntityKind,
    /// The source entity.
    pub source: Anchor,
    /// The target candidates.
    pub candidates: Vec<Anchor>,
    /// The correlation rule that matched more than once.
    pub rule: String,
    /// Explanation.
    pub message: String,
}

/// What a run will do. Serializable, with a stable order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The job.
    pub job: String,
    /// The run this plan belongs to.
    pub run_id: String,
    /// When it was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `true` for an incremental (change-set) plan.
    pub incremental: bool,
    /// The operations, ordered by phase.
    pub ops: Vec<PlannedOp>,
    /// Correlations that need no operation, only a link.
    pub links: Vec<Link>,
    /// Links whose target no longer exists (forgotten on apply).
    pub stale_links: Vec<Link>,
    /// Ambiguous correlations: nothing is done for these.
    pub conflicts: Vec<Conflict>,
    /// Things worth reading (dropped references and the like), aggregated.
    pub warnings: Vec<String>,
    /// Entities read: source orgs, source accounts, target orgs, target accounts.
    pub read: BTreeMap<String, usize>,
    /// Changes of hub fields another job owns ([`FieldAuthority`](crate::FieldAuthority)):
    /// taken out of the ops, one entry per entity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<crate::authority::Refusal>,
    /// The guard's verdict.
    pub guard: GuardVerdict,
    /// The source cursor to commit after a fully successful apply.
    pub cursor: Option<SyncCursor>,
    /// The cursor that was stored when the plan was made (optimistic check).
    pub cursor_from: Option<SyncCursor>,
}

/// Counts of a plan, by op kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlanSummary {
    /// Ops by kind.
    pub ops: BTreeMap<OpKind, usize>,
    /// New links without an op.
    pub links: usize,
    /// Conflicts.
    pub conflicts: usize,
    /// Field changes refused by field authority.
    #[serde(default)]
    pub refused_fields: usize,
    /// Guard stopped it.
    pub needs_approval: bool,
}

impl Plan {
    /// True when the plan does nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.links.is_empty() && self.stale_links.is_empty()
    }

    /// Counts by op kind.
    pub fn summary(&self) -> PlanSummary {
        let mut ops = BTreeMap::new();
        for p in &self.ops {
            *ops.entry(p.op.kind()).or_insert(0) += 1;
        }
        PlanSummary {
            ops,
            links: self.links.len(),
            conflicts: self.conflicts.len(),
            refused_fields: self.refused_fields(),
            needs_approval: self.guard.stopped,
        }
    }

    /// How many field changes field authority refused.
    pub fn refused_fields(&self) -> usize {
        self.refused.iter().map(|r| r.fields.len()).sum()
    }

    /// Number of ops of one kind.
    pub fn count(&self, kind: OpKind) -> usize {
        self.ops.iter().filter(|p| p.op.kind() == kind).count()
    }
}
