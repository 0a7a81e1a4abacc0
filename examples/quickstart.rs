//! Quickstart: an inbound sync of a bundled sample org chart (200 people in 20
//! departments) through the in-memory adapter into a hub, printing the plan and the
//! report; then the same job again, which plans nothing.
//!
//! ```text
//! cargo run --example quickstart
//! ```
#![forbid(unsafe_code)]
use std::sync::Arc;

use idsync_core::{Engine, Hub, Job, MemoryAdapter, MemoryStore, Plan, Report, Store};

fn print_plan(plan: &Plan) {
    let summary = plan.summary();
    println!("plan {} ({} ops)", plan.run_id, plan.ops.len());
    if summary.ops.is_empty() {
        println!("  no operations: source and hub agree");
    }
    for (op, n) in &summary.ops {
        println!("  {op:<16} {n:>5}");
    }
    for p in plan.ops.iter().take(8) {
        println!("    #{:<4} {} {}", p.id, p.op.name(), p.op.anchor());
    }
    if plan.ops.len() > 8 {
        println!("    ... and {} more", plan.ops.len() - 8);
    }
    for c in &plan.conflicts {
        println!("  conflict: {}", c.message);
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
}

fn print_report(r: &Report) {
    println!(
        "report {}: {} — applied {}, failed {}, skipped {}",
        r.run_id,
        r.status.as_str(),
        r.counts.applied,
        r.counts.failed,
        r.counts.skipped
    );
    for f in r.failures() {
        if let Some(e) = &f.error {
            println!("  failed #{} {}: {}", f.id, f.op, e.message);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> idsync_core::Result<()> {
    let (orgs, accounts) = idsync_examples::sample_org_chart();
    let source = Arc::new(MemoryAdapter::with_data("sample-hr", orgs, accounts));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let job = Job::new("quickstart", source, hub);

    for round in 1..=2 {
        println!("== run {round} ==");
        let plan = engine.plan(&job).await?;
        print_plan(&plan);
        let report = engine.apply(&job, &plan).await?;
        print_report(&report);
        println!();
    }
    Ok(())
}
