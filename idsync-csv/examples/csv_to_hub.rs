//! Import an org chart and its people from CSV files into the hub, show the plan, apply it,
//! then export the hub back to CSV.
//!
//! ```text
//! cargo run -p idsync-csv --example csv_to_hub                      # the bundled sample
//! cargo run -p idsync-csv --example csv_to_hub -- accounts.csv orgs.csv
//! ```
//!
//! Bad rows are listed with file, line, column and reason; with any bad row the import
//! stops before anything is planned (set `max_errors` to import the good rows anyway).
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use idsync_core::{Engine, Hub, Job, MemoryStore, Store};
use idsync_csv::{CsvConfig, CsvSource, export, sample_config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> idsync_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match args.as_slice() {
        [] => sample_config(),
        [accounts] => CsvConfig::new(accounts, None),
        [accounts, orgs, ..] => CsvConfig::new(accounts, Some(orgs.into())),
    };
    println!("reading {}", cfg.accounts.display());
    let source = CsvSource::open(cfg)?;
    for e in source.row_errors() {
        println!("  error:   {e}");
    }
    for w in source.warnings() {
        println!("  warning: {w}");
    }
    if let Some(e) = source.abort_error() {
        println!("import stopped: {e}");
        return Err(e);
    }
    println!("{} valid accounts", source.account_count());

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let job = Job::new("csv-to-hub", Arc::new(source), hub.clone());

    let plan = engine.plan(&job).await?;
    println!("plan: {:?}", plan.summary().ops);
    let report = engine.apply(&job, &plan).await?;
    println!(
        "applied {} ops, {} failed",
        report.counts.applied, report.counts.failed
    );
    let again = engine.plan(&job).await?;
    println!("a second plan has {} ops", again.ops.len());

    // And back out: the hub as CSV (Excel-ready: UTF-8 with BOM, formula-safe).
    let dir = std::env::temp_dir().join("idsync-csv-example");
    std::fs::create_dir_all(&dir).map_err(|e| idsync_core::Error::unexpected(e.to_string()))?;
    let out = CsvConfig::new(dir.join("accounts.csv"), Some(dir.join("orgs.csv")));
    let summary = export(hub.as_ref(), &out).await?;
    println!(
        "exported {} orgs and {} accounts to {}",
        summary.orgs,
        summary.accounts,
        dir.display()
    );
    Ok(())
}
