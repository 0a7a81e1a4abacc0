//! Earlier runs of a job that crashed with creates in flight: their intents tell the apply
//! step not to create the same entity twice.

use crate::engine::Engine;
use crate::error::Result;
use crate::model::Anchor;
use crate::store::JournalState;

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
