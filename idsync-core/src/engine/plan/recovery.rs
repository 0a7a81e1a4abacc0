//! Earlier runs of a job whose creates have an open outcome — a crash between the sink's
//! write and the store's record (an intent), or an answer lost in transit (journaled
//! `Unknown`): before a new plan, each is looked up at the sink and, when found, adopted
//! (linked, journaled done) so that it is never created twice; when not found, it is
//! closed as failed and planned again like any missing entity.

use crate::engine::{Engine, Job};
use crate::error::Result;
use crate::model::{Account, Anchor, Entity};
use crate::source::{Op, SourceExt};
use crate::store::{AuditEntry, JournalEntry, JournalState, LinkChange, OpRecord};
use futures::TryStreamExt;

/// Intents of earlier crashed runs of this job that created `proposed` for `source`.
pub(crate) async fn crashed_create(
    engine: &Engine,
    job: &str,
    source: Option<&Anchor>,
    proposed: &Anchor,
) -> Result<bool> {
    let open = engine.store.open_intents(job).await?;
    Ok(open.iter().any(|e| {
        e.state == JournalState::Intent
            && e.op.is_create()
            && e.op.anchor() == proposed
            && e.source_anchor.as_ref() == source
    }))
}

/// Resolve the open creates of earlier runs of `job` (see the module docs). Returns how many
/// were adopted. Only for sinks the engine writes through `apply` (the hub's writes commit
/// with their records, so they have no open outcomes) that can be read.
pub(crate) async fn resolve_open_creates(engine: &Engine, job: &Job) -> Result<usize> {
    let open = engine.store.open_intents(&job.name).await?;
    let mut adopted = 0;
    for e in open {
        let Some(source) = e.source_anchor.clone() else {
            continue;
        };
        if !e.op.is_create() {
            continue;
        }
        let kind = e.op.entity();
        // Linked already (a later run adopted or created it): nothing to resolve.
        if !engine
            .store
            .links_of(&job.name, kind, std::slice::from_ref(&source))
            .await?
            .is_empty()
        {
            continue;
        }
        let found = find_created(job, &e.op).await?;
        let (state, link, error) = match &found {
            Some(target) => (
                JournalState::Done,
                Some(LinkChange::Put {
                    source: source.clone(),
                    target: target.clone(),
                }),
                None,
            ),
            None => (
                JournalState::Failed,
                None,
                Some("not found at the sink when the next run looked; created again".to_owned()),
            ),
        };
        let at = engine.clock.now();
        let audit = found.as_ref().map(|t| AuditEntry {
            run_id: e.run_id.clone(),
            job: job.name.clone(),
            kind,
            anchor: t.clone(),
            op: e.op.kind().into(),
            before: None,
            after: Some(
                serde_json::json!({ "adopted": "found at the sink after its answer was lost" }),
            ),
            at,
        });
        engine
            .store
            .record(&OpRecord {
                job: job.name.clone(),
                kind,
                journal: Some(JournalEntry {
                    state,
                    target_anchor: found.clone(),
                    error,
                    at,
                    ..e
                }),
                link,
                shadow: None,
                audit,
            })
            .await?;
        if found.is_some() {
            adopted += 1;
        }
    }
    Ok(adopted)
}

/// Where the sink has the entity a create may have made: under the proposed anchor, or —
/// for a sink that assigns anchors — the one target the job's correlation rules find (an
/// org: the one with the same parent and name).
async fn find_created(job: &Job, op: &Op) -> Result<Option<Anchor>> {
    let assigns = job.target.capabilities().assigns_anchors;
    match op {
        Op::CreateAccount { account } if !assigns => Ok(job
            .target
            .as_source()
            .account(&account.anchor)
            .await?
            .map(|a| a.anchor)),
        Op::CreateOrg { org } if !assigns => Ok(job
            .target
            .as_source()
            .org(&org.anchor)
            .await?
            .map(|o| o.anchor)),
        Op::CreateAccount { account } => find_by_rules(job, account).await,
        Op::CreateOrg { org } => {
            let name = crate::model::correlation_key(&org.name);
            let mut s = job.target.as_source().org_stream(job.page_size);
            let mut hits = Vec::new();
            while let Some(o) = s.try_next().await? {
                if o.parent == org.parent && crate::model::correlation_key(&o.name) == name {
                    hits.push(o.anchor);
                }
            }
            Ok(if hits.len() == 1 { hits.pop() } else { None })
        }
        _ => Ok(None),
    }
}

/// The one target account the job's correlation rules find for `account` (the first rule
/// with any match decides; several matches adopt nothing).
async fn find_by_rules(job: &Job, account: &Account) -> Result<Option<Anchor>> {
    for rule in &job.correlation {
        let Some(v) = account.get(rule).as_str().map(str::to_owned) else {
            continue;
        };
        if crate::model::correlation_key(&v).is_none() {
            continue;
        }
        let mut hits = job.target.as_source().find_accounts(rule, &v).await?;
        match hits.len() {
            0 => continue,
            1 => return Ok(hits.pop().map(|a| a.anchor)),
            _ => return Ok(None),
        }
    }
    Ok(None)
}
