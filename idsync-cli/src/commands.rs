//! The commands.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use idsync_core::engine::OpState;
use idsync_core::source::PageRequest;
use idsync_core::{
    Account, Engine, EntityKind, ErrorKind, Job, JobLease, Org, Plan, Report, RunRecord, RunStatus,
    Store,
};
use serde_json::Value;

use crate::cli::{Cli, Command, ExportFormat, ExportWhat, KindArg, RunArgs};
use crate::config::{Config, ConfigError};
use crate::error::{CliError, exit};
use crate::progress::{CountingSink, CountingSource, Meter, Side};
use crate::providers::{self, BuildContext, Role};
use crate::table::Table;

/// The sample configuration `idsync init` writes.
pub const SAMPLE_CONFIG: &str = include_str!("sample.toml");

/// Run a parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    match &cli.command {
        Command::Init { force } => init(&cli.config, *force),
        Command::Check { offline } => check(&cli.config, *offline).await,
        Command::Plan {
            job,
            changes,
            json,
            all,
        } => plan(&cli.config, job, *changes, *json, *all).await,
        Command::Run(args) => run(&cli.config, args, cli.quiet).await,
        Command::Serve => crate::serve::serve(&load(&cli.config)?).await,
        Command::Token { name, scopes } => crate::serve::token(name, scopes),
        Command::Approve { run, json, wait } => {
            approve(&cli.config, run, *json, *wait, cli.quiet).await
        }
        Command::Runs { job, limit, json } => {
            runs(&cli.config, job.as_deref(), *limit, *json).await
        }
        Command::Show { kind, anchor, json } => show(&cli.config, *kind, anchor, *json).await,
        Command::Export {
            what,
            format,
            output,
            bom,
        } => export(&cli.config, *what, *format, output.as_deref(), *bom).await,
    }
}

/// Load and fully validate a config: syntax, references, and every provider's settings
/// (secrets included) by building it against an in-memory store.
fn load(path: &Path) -> Result<Config, CliError> {
    let cfg = Config::load(path)?;
    let errs = cfg.validate();
    if !errs.is_empty() {
        return Err(CliError::Config(errs));
    }
    Ok(cfg)
}

fn init(path: &Path, force: bool) -> Result<u8, CliError> {
    if path.exists() && !force {
        return Err(CliError::Other(format!(
            "{} exists; use --force to overwrite it",
            path.display()
        )));
    }
    std::fs::write(path, SAMPLE_CONFIG)?;
    println!("wrote {}", path.display());
    println!("next: idsync --config {} check", path.display());
    println!("      idsync --config {} run sample", path.display());
    Ok(exit::OK)
}

async fn check(path: &Path, offline: bool) -> Result<u8, CliError> {
    let cfg = Config::load(path)?;
    let mut errs = cfg.validate();
    // Building a provider reads its secrets and checks its settings; do it for all of
    // them, offline, so every config error is reported at once.
    let scratch: Arc<dyn Store> = Arc::new(idsync_core::MemoryStore::new());
    let ctx = BuildContext {
        store: scratch,
        base_dir: cfg.base_dir.clone(),
        metrics: None,
    };
    let names = cfg.provider_names();
    for name in &names {
        if let Some(p) = cfg.provider(name)
            && p.validate().is_empty()
            && let Err(e) = providers::build(name, &p, &ctx, role_of(&cfg, name)).await
        {
            match e {
                CliError::Config(v) => errs.extend(v.into_iter().map(|mut c| {
                    c.path = Some(cfg.path.clone());
                    c
                })),
                other => errs.push(ConfigError::new(format!("provider {name}: {other}"))),
            }
        }
    }
    if !errs.is_empty() {
        return Err(CliError::Config(errs));
    }
    println!(
        "config {}: ok ({} providers, {} jobs)",
        cfg.path.display(),
        names.len(),
        cfg.file.jobs.len()
    );
    for (name, job) in &cfg.file.jobs {
        let j = job.get_ref();
        println!(
            "  job {name}: {} -> {}",
            j.source.get_ref(),
            j.sink.get_ref()
        );
    }
    if offline {
        return Ok(exit::OK);
    }
    let opened = crate::store::open(cfg.file.store.get_ref()).await?;
    println!("store {}: ok", opened.description);
    let ctx = BuildContext {
        store: opened.store,
        base_dir: cfg.base_dir.clone(),
        metrics: None,
    };
    let mut failed: Vec<Verdict> = Vec::new();
    for name in &names {
        let Some(p) = cfg.provider(name) else {
            continue;
        };
        let built = match providers::build(name, &p, &ctx, role_of(&cfg, name)).await {
            Ok(b) => b,
            Err(CliError::Core(e)) => {
                let v = Verdict::of(&e);
                println!(
                    "provider {name}: FAILED ({}): {}: {e}",
                    p.type_name(),
                    v.text()
                );
                failed.push(v);
                continue;
            }
            Err(other) => return Err(other),
        };
        let d = built.source.describe();
        let res = tokio::time::timeout(Duration::from_secs(30), built.source.check()).await;
        match res {
            Ok(Ok(())) => println!("provider {name}: ok ({} {})", p.type_name(), d.instance),
            Ok(Err(e)) => {
                let v = Verdict::of(&e);
                println!(
                    "provider {name}: FAILED ({} {}): {}: {e}",
                    p.type_name(),
                    d.instance,
                    v.text()
                );
                failed.push(v);
            }
            Err(_) => {
                println!(
                    "provider {name}: FAILED ({} {}): {}: no answer within 30 s",
                    p.type_name(),
                    d.instance,
                    Verdict::Unreachable.text()
                );
                failed.push(Verdict::Unreachable);
            }
        }
    }
    if !failed.is_empty() {
        let mut parts = Vec::new();
        for v in [
            Verdict::Unreachable,
            Verdict::Refused,
            Verdict::BadData,
            Verdict::BadConfig,
            Verdict::Other,
        ] {
            let n = failed.iter().filter(|f| **f == v).count();
            if n > 0 {
                parts.push(format!("{n} {}", v.text()));
            }
        }
        eprintln!("{} provider(s) failed: {}", failed.len(), parts.join(", "));
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}

/// Why `check` failed a provider: whether it could not be reached, or answered with a
/// refusal or bad data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No answer: network, timeout, 5xx, throttled.
    Unreachable,
    /// It answered and refused the credentials or the access.
    Refused,
    /// It answered (or its files were read) and the data is bad.
    BadData,
    /// Its settings are wrong.
    BadConfig,
    /// Anything else.
    Other,
}

impl Verdict {
    fn of(e: &idsync_core::Error) -> Self {
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::RateLimited => Verdict::Unreachable,
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => Verdict::Refused,
            ErrorKind::InvalidData | ErrorKind::Conflict | ErrorKind::Incomplete => {
                Verdict::BadData
            }
            ErrorKind::ConfigInvalid => Verdict::BadConfig,
            _ => Verdict::Other,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Unreachable => "cannot be reached",
            Verdict::Refused => "answered but refused access",
            Verdict::BadData => "answered but its data is bad",
            Verdict::BadConfig => "is misconfigured",
            Verdict::Other => "failed",
        }
    }
}

/// How `check` builds a provider: as a sink when jobs only write to it, else as a source.
fn role_of(cfg: &Config, name: &str) -> Role {
    let jobs = cfg.file.jobs.values().map(|j| j.get_ref());
    let mut read = false;
    let mut written = false;
    for j in jobs {
        read |= j.source.get_ref() == name;
        written |= j.sink.get_ref() == name;
    }
    if written && !read {
        Role::Sink
    } else {
        Role::Source
    }
}

/// A job ready to plan or run.
struct Prepared {
    engine: Engine,
    job: Job,
    store: Arc<dyn Store>,
}

async fn prepare(cfg: &Config, job_name: &str, meter: &Meter) -> Result<Prepared, CliError> {
    let opened = crate::store::open(cfg.file.store.get_ref()).await?;
    // One store for the engine and the hub: ops on the hub then commit with their
    // records in one transaction.
    let store = opened.store;
    let ctx = BuildContext {
        store: store.clone(),
        base_dir: cfg.base_dir.clone(),
        metrics: None,
    };
    let job = build_job(cfg, job_name, &ctx, meter, None).await?;
    Ok(Prepared {
        engine: Engine::new(store.clone()),
        job,
        store,
    })
}

/// A job of the config, its providers built over `ctx`'s store; `source` replaces the
/// source provider's usual build (`idsync serve`: the one reading the inbox). A job that
/// writes into the hub is subject to `[authority]`.
pub(crate) async fn build_job(
    cfg: &Config,
    job_name: &str,
    ctx: &BuildContext,
    meter: &Meter,
    source: Option<Arc<dyn idsync_core::Source>>,
) -> Result<Job, CliError> {
    let s = cfg.job_settings(job_name)?;
    let src_cfg = cfg
        .provider(&s.source)
        .ok_or_else(|| CliError::config_msg(format!("no provider {}", s.source)))?;
    let sink_cfg = cfg
        .provider(&s.sink)
        .ok_or_else(|| CliError::config_msg(format!("no provider {}", s.sink)))?;
    let source = match source {
        Some(s) => s,
        None => {
            providers::build(&s.source, &src_cfg, ctx, Role::Source)
                .await?
                .source
        }
    };
    let sink = providers::build(&s.sink, &sink_cfg, ctx, Role::Sink)
        .await?
        .sink
        .ok_or_else(|| CliError::config_msg(format!("provider {} cannot be a sink", s.sink)))?;
    let writes_hub = sink.hub().is_some();
    let source = CountingSource::wrap(source, Side::Source, meter.clone());
    let sink = CountingSink::wrap_target(sink, meter.clone());
    let mut job = Job::new(job_name, source, sink)
        .with_mapping(s.mapping)
        .with_correlation(s.correlation)
        .with_deletion(s.deletion)
        .with_guard(s.guard)
        .with_concurrency(s.concurrency);
    let bar = meter.clone();
    job = job.with_progress(move |p| bar.applied(p.done));
    if let Some(n) = s.page_size {
        job = job.with_page_size(n);
    }
    if writes_hub && let Some(a) = cfg.authority() {
        job = job.with_authority(a);
    }
    job.authoritative = s.authoritative;
    job.allow_empty_source = s.allow_empty_source;
    job.sync_orgs = s.sync_orgs;
    Ok(job)
}

/// Plan a job, fully or incrementally as `Engine::run_changes` would: as a dry run (`plan`,
/// never approvable), or as the plan `run` applies next (a guard stop waits for approval).
async fn make_plan(p: &Prepared, changes: bool, dry: bool) -> Result<Plan, CliError> {
    if changes && !p.job.source.capabilities().changes {
        return Err(CliError::Core(idsync_core::Error::unsupported(format!(
            "source {} cannot report changes; run without --changes",
            p.job.source.describe().provider
        ))));
    }
    let e = &p.engine;
    Ok(match (changes, dry) {
        (false, true) => e.plan(&p.job).await?,
        (false, false) => e.plan_run(&p.job).await?,
        (true, true) => e.plan_run_changes(&p.job).await?,
        (true, false) => e.plan_next_changes(&p.job).await?,
    })
}

async fn plan(
    path: &Path,
    job: &str,
    changes: bool,
    json: bool,
    all: bool,
) -> Result<u8, CliError> {
    let cfg = load(path)?;
    cfg.job(job)?;
    let meter = Meter::hidden();
    let p = prepare(&cfg, job, &meter).await?;
    let plan = make_plan(&p, changes, true).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(idsync_core::Error::from)?
        );
        return Ok(exit::OK);
    }
    print_plan(&plan, if all { usize::MAX } else { 20 });
    Ok(exit::OK)
}

fn read_line(plan: &Plan) -> String {
    let r = |k: &str| plan.read.get(k).copied().unwrap_or(0);
    format!(
        "read: source {} orgs, {} accounts; target {} orgs, {} accounts",
        r("source_orgs"),
        r("source_accounts"),
        r("target_orgs"),
        r("target_accounts")
    )
}

fn op_label(op: &idsync_core::Op) -> String {
    use idsync_core::Op;
    match op {
        Op::CreateOrg { org } => org.name.clone(),
        Op::CreateAccount { account } => account.username.clone(),
        Op::UpdateOrg { changes, .. } | Op::UpdateAccount { changes, .. } => {
            let keys: Vec<&str> = changes.keys().map(String::as_str).collect();
            format!("changes {}", keys.join(", "))
        }
        Op::MoveOrg { parent, .. } => {
            format!("to {}", parent.as_ref().map_or("(root)", |p| p.as_str()))
        }
        _ => String::new(),
    }
}

fn print_plan(plan: &Plan, max_ops: usize) {
    println!(
        "plan for job {} (run {}){}",
        plan.job,
        plan.run_id,
        if plan.incremental {
            ", incremental"
        } else {
            ""
        }
    );
    println!("{}", read_line(plan));
    println!();
    if plan.is_empty() {
        println!("nothing to do: the target is up to date");
    } else {
        let summary = plan.summary();
        let mut t = Table::new(["operation", "count"]);
        for (name, n) in &summary.ops {
            t.row([name.to_string(), n.to_string()]);
        }
        if summary.links > 0 {
            t.row(["link (no change)".to_owned(), summary.links.to_string()]);
        }
        if !plan.stale_links.is_empty() {
            t.row([
                "forget stale link".to_owned(),
                plan.stale_links.len().to_string(),
            ]);
        }
        t.right_align(1);
        t.print();
    }
    if !plan.conflicts.is_empty() {
        println!();
        println!(
            "{} ambiguous correlation(s), left alone:",
            plan.conflicts.len()
        );
        for c in plan.conflicts.iter().take(max_ops) {
            println!("  {} {}: {}", c.kind, c.source, c.message);
        }
    }
    if !plan.warnings.is_empty() {
        println!();
        println!("warnings:");
        for w in plan.warnings.iter().take(max_ops) {
            println!("  {w}");
        }
    }
    if !plan.ops.is_empty() {
        println!();
        let mut t = Table::new(["#", "operation", "target", "source", "detail"]);
        for p in plan.ops.iter().take(max_ops) {
            t.row([
                p.id.to_string(),
                p.op.name().to_owned(),
                p.op.anchor().to_string(),
                p.source
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                op_label(&p.op),
            ]);
        }
        t.print();
        if plan.ops.len() > max_ops {
            println!(
                "... and {} more (--all lists every one, --json prints the plan)",
                plan.ops.len() - max_ops
            );
        }
    }
    println!();
    if plan.guard.stopped {
        println!("guard: STOPS this plan ({})", plan.guard.reasons.join("; "));
    } else {
        println!("guard: passes");
    }
}

/// Take the job's lease (core's [`JobLease`]: renewed in the background until released),
/// waiting for it with `--wait`, else exiting busy.
async fn take_lease(
    store: &Arc<dyn Store>,
    job: &str,
    ttl: u64,
    wait: bool,
) -> Result<JobLease, CliError> {
    let holder = JobLease::unique_holder();
    let ttl = Duration::from_secs(ttl);
    if wait {
        let poll = Duration::from_millis(500).min(ttl / 3);
        return Ok(JobLease::acquire_waiting(store, job, &holder, ttl, poll).await?);
    }
    JobLease::acquire(store, job, &holder, ttl)
        .await?
        .ok_or_else(|| {
            CliError::Busy(format!(
                "job {job} is running on another worker (its lease is held); \
                 try again later or pass --wait"
            ))
        })
}

async fn release_lease(lease: JobLease) {
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "could not release the job lease");
    }
}

fn progress_visible(quiet: bool, json: bool) -> bool {
    !quiet && !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

async fn run(path: &Path, args: &RunArgs, quiet: bool) -> Result<u8, CliError> {
    let cfg = load(path)?;
    cfg.job(&args.job)?;
    let settings = cfg.job_settings(&args.job)?;
    let meter = Meter::new(progress_visible(quiet, args.json));
    let p = prepare(&cfg, &args.job, &meter).await?;
    let mut p = p;
    let lease = take_lease(&p.store, &p.job.name, settings.lease_seconds, args.wait).await?;
    // Every write of the run is fenced by the lease: a worker that lost it stops.
    p.job = p.job.clone().with_fence(lease.fence());
    let result = run_locked(&p, args, quiet, &meter).await;
    release_lease(lease).await;
    result
}

async fn run_locked(
    p: &Prepared,
    args: &RunArgs,
    quiet: bool,
    meter: &Meter,
) -> Result<u8, CliError> {
    meter.start_reading();
    let plan = make_plan(p, args.changes, false).await;
    meter.finish_reading();
    let plan = plan?;
    if plan.guard.stopped {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&Report::guarded(&plan))
                    .map_err(idsync_core::Error::from)?
            );
        } else {
            println!("{}", read_line(&plan));
            println!(
                "guard: run {} STOPPED before applying anything: {}",
                plan.run_id,
                plan.guard.reasons.join("; ")
            );
            println!("planned: {}", plan_counts(&plan));
            println!(
                "review:  idsync show run {}   (the stored plan that approve applies)",
                plan.run_id
            );
            println!("approve: idsync approve {}", plan.run_id);
        }
        return Ok(exit::GUARD);
    }
    if !args.json && !quiet {
        println!("{}", read_line(&plan));
        if plan.is_empty() {
            println!("nothing to do: the target is up to date");
        } else {
            println!("planned: {}", plan_counts(&plan));
        }
    }
    meter.start_applying(plan.ops.len());
    let report = p.engine.apply(&p.job, &plan).await;
    meter.finish_applying();
    finish(&report?, args.json, quiet)
}

fn plan_counts(plan: &Plan) -> String {
    let s = plan.summary();
    let mut parts: Vec<String> = s.ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
    if s.links > 0 {
        parts.push(format!("{} links", s.links));
    }
    if s.conflicts > 0 {
        parts.push(format!("{} conflicts", s.conflicts));
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Print a report; the exit code says whether everything was applied.
fn finish(report: &Report, json: bool, quiet: bool) -> Result<u8, CliError> {
    let c = &report.counts;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(idsync_core::Error::from)?
        );
    } else {
        println!(
            "run {}: {} — applied {}, failed {}, skipped {}, linked {}{}",
            report.run_id,
            report.status.as_str(),
            c.applied,
            c.failed,
            c.skipped,
            c.linked,
            if report.cursor_committed {
                ", cursor committed"
            } else {
                ""
            }
        );
        if !quiet {
            for f in report.failures().take(20) {
                let err = f
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                println!(
                    "  failed #{} {} {}: {err}",
                    f.id,
                    f.op,
                    f.anchor
                        .as_ref()
                        .or(f.source.as_ref())
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
            }
            let n_failed = report.failures().count();
            if n_failed > 20 {
                println!(
                    "  ... and {} more failures (--json shows all)",
                    n_failed - 20
                );
            }
            if c.conflicts > 0 {
                println!(
                    "  {} ambiguous correlation(s) were left alone (idsync plan shows them)",
                    c.conflicts
                );
            }
        }
    }
    if let Some(lost) = &report.lease_lost {
        eprintln!(
            "run {} stopped: {} (another worker runs the job now)",
            report.run_id, lost.message
        );
        return Ok(exit::LEASE_LOST);
    }
    let partial = report.outcomes.iter().any(|o| o.state != OpState::Applied)
        || report.status == RunStatus::PartiallyFailed;
    Ok(if partial { exit::PARTIAL } else { exit::OK })
}

async fn approve(
    path: &Path,
    run_id: &str,
    json: bool,
    wait: bool,
    quiet: bool,
) -> Result<u8, CliError> {
    let cfg = load(path)?;
    let opened = crate::store::open(cfg.file.store.get_ref()).await?;
    let rec = opened.store.run(run_id).await?.ok_or_else(|| {
        CliError::Core(idsync_core::Error::not_found(format!(
            "no run {run_id} in the store"
        )))
    })?;
    drop(opened);
    if !cfg.file.jobs.contains_key(&rec.job) {
        return Err(CliError::config_msg(format!(
            "run {run_id} belongs to job {:?}, which this config does not define",
            rec.job
        )));
    }
    let settings = cfg.job_settings(&rec.job)?;
    let meter = Meter::new(progress_visible(quiet, json));
    let p = prepare(&cfg, &rec.job, &meter).await?;
    let mut p = p;
    let lease = take_lease(&p.store, &p.job.name, settings.lease_seconds, wait).await?;
    p.job = p.job.clone().with_fence(lease.fence());
    let planned = rec
        .plan
        .as_ref()
        .and_then(|v| v.get("ops"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    meter.start_applying(planned);
    let report = p.engine.approve(&p.job, run_id).await;
    meter.finish_applying();
    release_lease(lease).await;
    let report = report?;
    finish(&report, json, quiet)
}

fn summary_text(r: &RunRecord) -> String {
    let Some(s) = &r.summary else {
        return String::new();
    };
    if let Some(e) = s.get("error").and_then(Value::as_str) {
        let mut e = e.replace('\n', " ");
        if e.chars().count() > 80 {
            e = e.chars().take(77).collect::<String>() + "...";
        }
        return format!("error: {e}");
    }
    if let Some(applied) = s.get("applied").and_then(Value::as_u64) {
        let g = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        return format!(
            "applied {applied}/{}, failed {}, skipped {}",
            g("planned"),
            g("failed"),
            g("skipped")
        );
    }
    if let Some(ops) = s.get("ops").and_then(Value::as_object) {
        let total: u64 = ops.values().filter_map(Value::as_u64).sum();
        return format!("{total} ops planned");
    }
    String::new()
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

async fn open_store(path: &Path) -> Result<Arc<dyn Store>, CliError> {
    let cfg = load(path)?;
    Ok(crate::store::open(cfg.file.store.get_ref()).await?.store)
}

async fn runs(path: &Path, job: Option<&str>, limit: usize, json: bool) -> Result<u8, CliError> {
    let store = open_store(path).await?;
    let runs = store.runs(job, limit).await?;
    if json {
        let v: Vec<Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "job": r.job, "status": r.status,
                    "started_at": r.started_at, "finished_at": r.finished_at,
                    "summary": r.summary,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(idsync_core::Error::from)?
        );
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(exit::OK);
    }
    let mut t = Table::new([
        "run",
        "job",
        "status",
        "started (UTC)",
        "finished",
        "summary",
    ]);
    for r in &runs {
        t.row([
            r.id.clone(),
            r.job.clone(),
            r.status.as_str().to_owned(),
            time(&r.started_at),
            r.finished_at.as_ref().map(time).unwrap_or_default(),
            summary_text(r),
        ]);
    }
    t.print();
    Ok(exit::OK)
}

fn compact(v: &Option<Value>) -> String {
    match v {
        None => String::new(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 100 {
                s.chars().take(97).collect::<String>() + "..."
            } else {
                s
            }
        }
    }
}

/// `show run RUN`: a run's status and the plan stored with it (what `approve` applies).
async fn show_run(store: &Arc<dyn Store>, run_id: &str, json: bool) -> Result<u8, CliError> {
    let rec = store.run(run_id).await?.ok_or_else(|| {
        CliError::Core(idsync_core::Error::not_found(format!(
            "no run {run_id} in the store (idsync runs lists them)"
        )))
    })?;
    if json {
        let v = serde_json::json!({
            "id": rec.id, "job": rec.job, "status": rec.status,
            "started_at": rec.started_at, "finished_at": rec.finished_at,
            "summary": rec.summary, "plan": rec.plan,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(idsync_core::Error::from)?
        );
        return Ok(exit::OK);
    }
    println!(
        "run {} of job {}: {} (started {})",
        rec.id,
        rec.job,
        rec.status.as_str(),
        time(&rec.started_at)
    );
    let plan = rec
        .plan
        .clone()
        .map(serde_json::from_value::<Plan>)
        .transpose()
        .map_err(|e| {
            CliError::Other(format!("run {run_id}: the stored plan cannot be read: {e}"))
        })?;
    match plan {
        Some(plan) => {
            println!("stored plan:");
            print_plan(&plan, 50);
            if plan.ops.len() > 50 {
                println!("(--json shows all {} operations)", plan.ops.len());
            }
            if rec.status == RunStatus::NeedsApproval {
                println!();
                println!("approve: idsync approve {}", rec.id);
            }
        }
        None => println!("no plan is stored with this run"),
    }
    Ok(exit::OK)
}

async fn show(path: &Path, kind: KindArg, anchor: &str, json: bool) -> Result<u8, CliError> {
    let store = open_store(path).await?;
    if kind == KindArg::Run {
        return show_run(&store, anchor, json).await;
    }
    let anchor = idsync_core::Anchor::from(anchor);
    let (ek, record) = match kind {
        KindArg::Account => (
            EntityKind::Account,
            store
                .hub_account(&anchor)
                .await?
                .map(|a| serde_json::to_value(a).map_err(idsync_core::Error::from))
                .transpose()?,
        ),
        KindArg::Org | KindArg::Run => (
            EntityKind::Org,
            store
                .hub_org(&anchor)
                .await?
                .map(|o| serde_json::to_value(o).map_err(idsync_core::Error::from))
                .transpose()?,
        ),
    };
    let audit = store.audit(ek, &anchor).await?;
    if record.is_none() && audit.is_empty() {
        return Err(CliError::Core(idsync_core::Error::not_found(format!(
            "no {ek} {anchor} in the hub"
        ))));
    }
    if json {
        let v =
            serde_json::json!({ "kind": ek, "anchor": anchor, "record": record, "audit": audit });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(idsync_core::Error::from)?
        );
        return Ok(exit::OK);
    }
    match &record {
        Some(Value::Object(m)) => {
            println!("{ek} {anchor}");
            let width = m.keys().map(|k| k.chars().count()).max().unwrap_or(0);
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("  {k:<width$}  {text}");
            }
        }
        _ => println!("{ek} {anchor}: not in the hub (deleted)"),
    }
    println!();
    println!("audit trail ({} entries, oldest first):", audit.len());
    if !audit.is_empty() {
        let mut t = Table::new(["at (UTC)", "run", "job", "op", "after"]);
        for a in &audit {
            t.row([
                time(&a.at),
                a.run_id.clone(),
                a.job.clone(),
                a.op.to_string(),
                compact(&a.after),
            ]);
        }
        t.print();
    }
    Ok(exit::OK)
}

async fn export(
    path: &Path,
    what: ExportWhat,
    format: ExportFormat,
    output: Option<&Path>,
    bom: bool,
) -> Result<u8, CliError> {
    if bom && format != ExportFormat::Csv {
        return Err(CliError::Other("--bom applies to --format csv only".into()));
    }
    let store = open_store(path).await?;
    let out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = match format {
        ExportFormat::Csv => export_csv(&store, what, bom, out).await?,
        ExportFormat::Json => export_json(&store, what, out).await?,
    };
    if let Some(p) = output {
        eprintln!("exported {n} {} to {}", what_name(what), p.display());
    }
    Ok(exit::OK)
}

fn what_name(w: ExportWhat) -> &'static str {
    match w {
        ExportWhat::Accounts => "accounts",
        ExportWhat::Orgs => "orgs",
    }
}

const EXPORT_PAGE: usize = 1000;

/// Walk the hub page by page, calling `f` on each entity as JSON-ready rows.
async fn for_each_page(
    store: &Arc<dyn Store>,
    what: ExportWhat,
    mut f: impl FnMut(Entity<'_>) -> Result<(), CliError>,
) -> Result<usize, CliError> {
    let mut req = PageRequest::sized(EXPORT_PAGE);
    let mut n = 0;
    loop {
        let next = match what {
            ExportWhat::Accounts => {
                let page = store.hub_accounts(req.clone()).await?;
                for a in &page.items {
                    f(Entity::Account(a))?;
                    n += 1;
                }
                page.next
            }
            ExportWhat::Orgs => {
                let page = store.hub_orgs(req.clone()).await?;
                for o in &page.items {
                    f(Entity::Org(o))?;
                    n += 1;
                }
                page.next
            }
        };
        match next {
            Some(t) => req.token = Some(t),
            None => return Ok(n),
        }
    }
}

enum Entity<'a> {
    Account(&'a Account),
    Org(&'a Org),
}

/// CSV through idsync-csv's writer: the layout `CsvSource` reads back, every cell
/// formula-neutralised, a BOM on request. The hub is listed into memory to sort it.
async fn export_csv(
    store: &Arc<dyn Store>,
    what: ExportWhat,
    bom: bool,
    mut out: Box<dyn Write>,
) -> Result<usize, CliError> {
    let mut cfg = idsync_csv::CsvConfig::new("<output>", None);
    cfg.bom = bom;
    cfg.neutralize_formulas = true;
    let mut accounts: Vec<Account> = Vec::new();
    let mut orgs: Vec<Org> = Vec::new();
    let n = for_each_page(store, what, |e| {
        match e {
            Entity::Account(a) => accounts.push(a.clone()),
            Entity::Org(o) => orgs.push(o.clone()),
        }
        Ok(())
    })
    .await?;
    match what {
        ExportWhat::Accounts => {
            let refs: Vec<&Account> = accounts.iter().collect();
            idsync_csv::write_accounts_to(&cfg, &mut out, &refs, &[])?;
        }
        ExportWhat::Orgs => idsync_csv::write_orgs_to(&cfg, &mut out, &orgs)?,
    }
    out.flush()?;
    Ok(n)
}

async fn export_json(
    store: &Arc<dyn Store>,
    what: ExportWhat,
    mut out: Box<dyn Write>,
) -> Result<usize, CliError> {
    write!(out, "[")?;
    let mut first = true;
    let n = for_each_page(store, what, |e| {
        let v = match e {
            Entity::Account(a) => serde_json::to_string(a),
            Entity::Org(o) => serde_json::to_string(o),
        }
        .map_err(idsync_core::Error::from)?;
        write!(out, "{}\n  {v}", if first { "" } else { "," })?;
        first = false;
        Ok(())
    })
    .await?;
    writeln!(out, "{}]", if n == 0 { "" } else { "\n" })?;
    out.flush()?;
    Ok(n)
}

/// How a failed command's error is reported on stderr.
pub fn report_error(e: &CliError) {
    match e {
        CliError::Core(err) if err.kind() == ErrorKind::NeedsApproval => {
            eprintln!("guard: {err}");
        }
        CliError::Config(_) => eprintln!("{e}"),
        other => eprintln!("error: {other}"),
    }
}
