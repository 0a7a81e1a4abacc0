//! The bulk import API ("API operations to import multiple accounts at a time").
//!
//! [`router`] serves `POST /api/v1/import/{job}` (scope **import**: `idsync serve` mounts
//! it behind its token layer; the router checks no tokens itself). The body is a JSON array
//! or NDJSON (one record a line; told apart by the first character, whatever the
//! `Content-Type`) of records:
//!
//! ```text
//! {"type": "org", "anchor": "d1", "name": "研发中心", "parent": null}
//! {"type": "account", "anchor": "u1", "username": "alice", "orgs": ["d1"], "email": "alice@example.com"}
//! {"type": "account", "anchor": "u7", "delete": true}
//! ```
//!
//! Each record is an [`Org`] or an [`Account`] as the model spells it, plus `type`; with
//! `"delete": true` only the anchor counts and the entity is deleted (or disabled, as the
//! job's deletion policy says).
//!
//! * **Validated** before anything is planned: every problem is reported as
//!   `{"index", "line", "field", "reason"}` (the record's index from 0; for NDJSON the line
//!   from 1) — bad JSON, a missing `type`, a wrong field type, an empty anchor, an anchor
//!   given twice, an org or parent that is neither in the import nor known to the job, a
//!   loop in the imported tree. With the error policy `reject` (the default) one problem
//!   rejects the whole import (`422`, nothing applied); with `skip` (`?errors=skip`, or
//!   [`ImportConfig::errors`]) the valid records are imported and the others reported.
//! * **Planned and guarded like any run**: the records become one change set of the named
//!   job, through [`Engine::plan_changes`] and [`Engine::apply`] — the job's mapping,
//!   correlation, field authority and guard apply; a plan that crosses the guard is stored
//!   as waiting for approval (`202`, `"status": "needs_approval"`, with its `run_id`) and
//!   nothing is applied.
//! * **Idempotent** under an `Idempotency-Key` header: the key, a digest of the request and
//!   the answer are kept in the store ([`Store::idempotency_put`]). The same key with the same
//!   body gets the same answer again (header `idempotent-replayed: true`), without a new run;
//!   the same key with another body is refused with `422 idempotency_key_reused`. Answers of
//!   5xx are not kept (the client may retry them). Imports of one job run one at a time.
//!
//! Answer (`200`, or `202` when guarded):
//!
//! ```text
//! {"job": "hr-import", "run_id": "...", "status": "succeeded", "received": 3, "accepted": 3,
//!  "rejected": 0, "errors": [], "counts": {"planned": 3, "applied": 3, "failed": 0, ...},
//!  "failures": []}
//! ```
//!
//! An import job is a [`Job`] whose target is the hub (or any sink); its source is never
//! read (the records are the source) — [`import_job`] makes one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use idsync_core::store::IdempotencyRecord;
use idsync_core::{
    Account, Anchor, ChangeSet, Engine, EntityKind, Error, Job, MemoryAdapter, Org, Report, Store,
    Target,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::feed::ApiError;

/// What happens to an import with invalid records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// One invalid record rejects the import: nothing is applied.
    #[default]
    Reject,
    /// The valid records are imported; the invalid ones are reported.
    Skip,
}

/// Settings of the import API.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// The default error policy (a request may choose with `?errors=`).
    pub errors: ErrorPolicy,
    /// The largest request body (default 256 MiB).
    pub max_body_bytes: usize,
    /// The most records in one request (default 1,000,000).
    pub max_records: usize,
    /// The most problems listed in an answer (default 1,000; the count is always given).
    pub max_errors: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            errors: ErrorPolicy::Reject,
            max_body_bytes: 256 * 1024 * 1024,
            max_records: 1_000_000,
            max_errors: 1000,
        }
    }
}

/// One problem of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// The record's index (from 0).
    pub index: usize,
    /// The line (from 1), for NDJSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// An import job named `name` into `target` (e.g. `Arc<Hub>`): the defaults of
/// [`Job::new`]; its source is a placeholder that is never read.
pub fn import_job(name: &str, target: impl Into<Target>) -> Job {
    Job::new(name, Arc::new(MemoryAdapter::new("import")), target)
}

#[derive(Debug)]
struct ImportState {
    engine: Engine,
    jobs: HashMap<String, Job>,
    cfg: ImportConfig,
    /// One import at a time per job (so that a key is checked and kept around its run).
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// `POST /api/v1/import/{job}` for these jobs (see the [module docs](self)), run by `engine`.
pub fn router(engine: Engine, jobs: Vec<Job>, cfg: ImportConfig) -> Router {
    let limit = cfg.max_body_bytes;
    let locks = jobs
        .iter()
        .map(|j| (j.name.clone(), Arc::new(tokio::sync::Mutex::new(()))))
        .collect();
    let jobs = jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
    Router::new()
        .route("/api/v1/import/{job}", post(import))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(ImportState {
            engine,
            jobs,
            cfg,
            locks,
        }))
}

#[derive(Debug, Deserialize)]
struct ImportQuery {
    errors: Option<ErrorPolicy>,
}

/// An answer as kept for idempotent replays.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    status: u16,
    body: Value,
}

impl IntoResponse for Kept {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        (status, Json(self.body)).into_response()
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn import(
    State(st): State<Arc<ImportState>>,
    Path(job_name): Path<String>,
    q: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(r) => return ApiError::from(r).into_response(),
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            return ApiError::new(
                r.status(),
                "body_rejected",
                format!(
                    "the request body was not read: {} (an import body may be up to {} bytes)",
                    r.body_text(),
                    st.cfg.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let Some(job) = st.jobs.get(&job_name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("no import job {job_name:?} is configured"),
        )
        .into_response();
    };
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
        Some(_) => {
            return ApiError::bad_request(
                "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let policy = q.errors.unwrap_or(st.cfg.errors);
    let _one_at_a_time = match st.locks.get(&job_name) {
        Some(l) => Some(l.lock().await),
        None => None,
    };
    let store = st.engine.store().clone();
    let scope = format!("import:{job_name}");
    let hash = request_hash(&job_name, policy, &body);
    if let Some(k) = &key {
        match store.idempotency_get(&scope, k).await {
            Ok(Some(rec)) => return replay(&rec, &hash),
            Ok(None) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let answer = match run_import(&st, job, policy, &body).await {
        Ok(kept) => kept,
        Err(e) => Kept {
            status: e.status.as_u16(),
            body: e.body(),
        },
    };
    if let Some(k) = key
        && answer.status < 500
    {
        let rec = IdempotencyRecord {
            scope,
            key: k,
            request_hash: hash.clone(),
            response: match serde_json::to_value(&answer) {
                Ok(v) => v,
                Err(e) => return ApiError::from(Error::from(e)).into_response(),
            },
            at: Utc::now(),
        };
        match store.idempotency_put(&rec).await {
            Ok(None) => {}
            // Another process kept an answer under this key first: that one stands.
            Ok(Some(existing)) => return replay(&existing, &hash),
            Err(e) => {
                tracing::warn!(job = %job_name, error = %e, "import: the idempotency key could not be kept");
            }
        }
    }
    answer.into_response()
}

fn request_hash(job: &str, policy: ErrorPolicy, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(job.as_bytes());
    h.update([0]);
    h.update(match policy {
        ErrorPolicy::Reject => b"reject".as_slice(),
        ErrorPolicy::Skip => b"skip".as_slice(),
    });
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn replay(rec: &IdempotencyRecord, hash: &str) -> Response {
    if rec.request_hash != hash {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "Idempotency-Key {:?} was used at {} for a different request; use a new key \
                 for a new import",
                rec.key,
                rec.at.to_rfc3339()
            ),
        )
        .into_response();
    }
    match serde_json::from_value::<Kept>(rec.response.clone()) {
        Ok(kept) => {
            let mut r = kept.into_response();
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Err(e) => ApiError::from(Error::from(e)).into_response(),
    }
}

/// The records of a request, parsed and validated.
#[derive(Debug, Default)]
struct Parsed {
    received: usize,
    orgs: Vec<(usize, Org)>,
    accounts: Vec<(usize, Account)>,
    org_deletes: Vec<(usize, Anchor)>,
    account_deletes: Vec<(usize, Anchor)>,
    errors: Vec<RecordError>,
    /// The line of each record, by index (NDJSON only).
    lines: Vec<usize>,
}

async fn run_import(
    st: &ImportState,
    job: &Job,
    policy: ErrorPolicy,
    body: &[u8],
) -> Result<Kept, ApiError> {
    let mut parsed = parse(body, st.cfg.max_records)?;
    check_references(st.engine.store().as_ref(), job, &mut parsed).await?;
    name_lines(&mut parsed);
    let rejected: HashSet<usize> = parsed.errors.iter().map(|e| e.index).collect();
    let errors_total = parsed.errors.len();
    let listed: Vec<RecordError> = parsed
        .errors
        .iter()
        .take(st.cfg.max_errors)
        .cloned()
        .collect();
    if errors_total > 0 && policy == ErrorPolicy::Reject {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_records",
            format!(
                "{} of {} records are invalid ({} problems); nothing was imported (error policy \
                 reject; ?errors=skip imports the valid ones)",
                rejected.len(),
                parsed.received,
                errors_total
            ),
        )
        .with("received", json!(parsed.received))
        .with("rejected", json!(rejected.len()))
        .with("errors_total", json!(errors_total))
        .with(
            "errors",
            serde_json::to_value(&listed).map_err(Error::from)?,
        ));
    }
    let keep = |i: &usize| !rejected.contains(i);
    let cs = ChangeSet {
        org_upserts: take(parsed.orgs, keep),
        org_deletes: take(parsed.org_deletes, keep),
        account_upserts: take(parsed.accounts, keep),
        account_deletes: take(parsed.account_deletes, keep),
        cursor: None,
        complete: true,
        ..ChangeSet::default()
    };
    let accepted = parsed.received - rejected.len();
    let plan = st.engine.plan_changes(job, cs, None).await?;
    let (status, report) = if plan.guard.stopped {
        (StatusCode::ACCEPTED, Report::guarded(&plan))
    } else {
        (StatusCode::OK, st.engine.apply(job, &plan).await?)
    };
    let failures: Vec<Value> = report
        .failures()
        .take(st.cfg.max_errors)
        .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
        .collect();
    Ok(Kept {
        status: status.as_u16(),
        body: json!({
            "job": job.name,
            "run_id": report.run_id,
            "status": report.status,
            "guard": plan.guard.reasons,
            "received": parsed.received,
            "accepted": accepted,
            "rejected": rejected.len(),
            "errors_total": errors_total,
            "errors": listed,
            "counts": report.counts,
            "failures": failures,
        }),
    })
}

fn take<T>(v: Vec<(usize, T)>, keep: impl Fn(&usize) -> bool) -> Vec<T> {
    v.into_iter()
        .filter(|(i, _)| keep(i))
        .map(|(_, t)| t)
        .collect()
}

/// Parse a JSON array or NDJSON into records; shape problems become record errors.
fn parse(body: &[u8], max_records: usize) -> Result<Parsed, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let mut out = Parsed::default();
    let too_many = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("an import takes at most {max_records} records; split it"),
        )
    };
    match first {
        None => {
            return Err(ApiError::bad_request(
                "the body is empty: send a JSON array or NDJSON",
            ));
        }
        Some(b'[') => {
            let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not a JSON array of records: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
            if items.len() > max_records {
                return Err(too_many());
            }
            out.received = items.len();
            for (i, v) in items.into_iter().enumerate() {
                record(&mut out, i, None, v);
            }
        }
        Some(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
            let mut index = 0;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                if index == max_records {
                    return Err(too_many());
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => record(&mut out, index, Some(n + 1), v),
                    Err(e) => out.errors.push(RecordError {
                        index,
                        line: Some(n + 1),
                        field: None,
                        reason: format!("not JSON: {e}"),
                    }),
                }
                out.lines.push(n + 1);
                index += 1;
            }
            out.received = index;
        }
    }
    check_duplicates(&mut out);
    name_lines(&mut out);
    Ok(out)
}

/// Errors in index order, each naming its record's line (NDJSON).
fn name_lines(p: &mut Parsed) {
    for e in &mut p.errors {
        if e.line.is_none() {
            e.line = p.lines.get(e.index).copied();
        }
    }
    p.errors.sort_by_key(|e| e.index);
}

/// One record: its type, its shape, a non-empty anchor.
fn record(out: &mut Parsed, index: usize, line: Option<usize>, v: Value) {
    let mut err = |field: Option<&str>, reason: String| {
        out.errors.push(RecordError {
            index,
            line,
            field: field.map(str::to_owned),
            reason,
        })
    };
    let Value::Object(mut m) = v else {
        return err(None, "a record is a JSON object".to_owned());
    };
    let kind = match m.remove("type") {
        Some(Value::String(t)) if t == "org" => EntityKind::Org,
        Some(Value::String(t)) if t == "account" => EntityKind::Account,
        Some(other) => {
            return err(
                Some("type"),
                format!("type must be \"org\" or \"account\", not {other}"),
            );
        }
        None => return err(Some("type"), "missing: \"org\" or \"account\"".to_owned()),
    };
    let delete = match m.remove("delete") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            return err(
                Some("delete"),
                format!("must be true or false, not {other}"),
            );
        }
    };
    let anchor = match m.get("anchor") {
        Some(Value::String(a)) if !a.trim().is_empty() => Anchor::from(a.as_str()),
        Some(Value::String(_)) => return err(Some("anchor"), "must not be empty".to_owned()),
        Some(other) => return err(Some("anchor"), format!("must be a string, not {other}")),
        None => return err(Some("anchor"), "missing".to_owned()),
    };
    if delete {
        match kind {
            EntityKind::Org => out.org_deletes.push((index, anchor)),
            EntityKind::Account => out.account_deletes.push((index, anchor)),
        }
        return;
    }
    if let Some((field, reason)) = check_types(kind, &m) {
        return err(Some(field), reason);
    }
    let obj = Value::Object(m);
    match kind {
        EntityKind::Org => match serde_json::from_value::<Org>(obj) {
            Ok(o) if o.name.trim().is_empty() => err(Some("name"), "must not be empty".into()),
            Ok(o) => out.orgs.push((index, o)),
            Err(e) => err(field_of(&e).as_deref(), e.to_string()),
        },
        EntityKind::Account => match serde_json::from_value::<Account>(obj) {
            Ok(a) if a.username.trim().is_empty() => {
                err(Some("username"), "must not be empty".into())
            }
            Ok(a) => out.accounts.push((index, a)),
            Err(e) => err(field_of(&e).as_deref(), e.to_string()),
        },
    }
}

/// The first field whose JSON type is wrong for the model.
fn check_types(
    kind: EntityKind,
    m: &serde_json::Map<String, Value>,
) -> Option<(&'static str, String)> {
    let text: &[&'static str] = match kind {
        EntityKind::Org => &["name", "parent"],
        EntityKind::Account => &[
            "username",
            "display_name",
            "email",
            "phone",
            "employee_id",
            "title",
            "manager",
            "status",
        ],
    };
    for f in text {
        match m.get(*f) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => return Some((*f, format!("must be a string, not {other}"))),
        }
    }
    match m.get("attrs") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(other) => return Some(("attrs", format!("must be an object, not {other}"))),
    }
    match kind {
        EntityKind::Org => match m.get("order") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.is_i64() => None,
            Some(other) => Some(("order", format!("must be an integer, not {other}"))),
        },
        EntityKind::Account => match m.get("orgs") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a))
                if a.iter()
                    .all(|v| matches!(v, Value::String(s) if !s.is_empty())) =>
            {
                None
            }
            Some(other) => Some((
                "orgs",
                format!("must be a list of org anchors (non-empty strings), not {other}"),
            )),
        },
    }
}

/// The field a serde error names (``missing field `x` ``, ``unknown field `x` ``), if any.
fn field_of(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    let name = &msg[start..start + len];
    // a field name, not a quoted value
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then(|| name.to_owned())
}

/// An anchor given twice (per kind) is an error of every later record giving it.
fn check_duplicates(out: &mut Parsed) {
    let mut seen: HashMap<(EntityKind, &str), usize> = HashMap::new();
    let mut dups = Vec::new();
    let all = out
        .orgs
        .iter()
        .map(|(i, o)| (EntityKind::Org, *i, o.anchor.as_str()))
        .chain(
            out.org_deletes
                .iter()
                .map(|(i, a)| (EntityKind::Org, *i, a.as_str())),
        )
        .chain(
            out.accounts
                .iter()
                .map(|(i, a)| (EntityKind::Account, *i, a.anchor.as_str())),
        )
        .chain(
            out.account_deletes
                .iter()
                .map(|(i, a)| (EntityKind::Account, *i, a.as_str())),
        );
    let mut ordered: Vec<(EntityKind, usize, &str)> = all.collect();
    ordered.sort_by_key(|(_, i, _)| *i);
    for (kind, i, a) in ordered {
        if let Some(first) = seen.insert((kind, a), i) {
            seen.insert((kind, a), first);
            dups.push(RecordError {
                index: i,
                line: None,
                field: Some("anchor".into()),
                reason: format!("{kind} {a} is already record {first} of this import"),
            });
        }
    }
    out.errors.extend(dups);
}

/// Orgs and parents must be in the import or known to the job (linked); the imported tree
/// must not loop.
async fn check_references(store: &dyn Store, job: &Job, p: &mut Parsed) -> Result<(), ApiError> {
    let in_import: HashSet<&str> = p.orgs.iter().map(|(_, o)| o.anchor.as_str()).collect();
    let mut outside: Vec<Anchor> = p
        .orgs
        .iter()
        .filter_map(|(_, o)| o.parent.clone())
        .chain(p.accounts.iter().flat_map(|(_, a)| a.orgs.iter().cloned()))
        .filter(|o| !in_import.contains(o.as_str()))
        .collect();
    outside.sort();
    outside.dedup();
    let mut known: HashSet<Anchor> = HashSet::new();
    for chunk in outside.chunks(1000) {
        known.extend(
            store
                .links_of(&job.name, EntityKind::Org, chunk)
                .await?
                .into_iter()
                .map(|l| l.source),
        );
    }
    let exists = |a: &Anchor| in_import.contains(a.as_str()) || known.contains(a);
    let mut errs = Vec::new();
    for (i, o) in &p.orgs {
        if let Some(parent) = &o.parent
            && !exists(parent)
        {
            errs.push(RecordError {
                index: *i,
                line: None,
                field: Some("parent".into()),
                reason: format!(
                    "parent org {parent} is neither in this import nor known to job {}",
                    job.name
                ),
            });
        }
    }
    for (i, a) in &p.accounts {
        for o in &a.orgs {
            if !exists(o) {
                errs.push(RecordError {
                    index: *i,
                    line: None,
                    field: Some("orgs".into()),
                    reason: format!(
                        "org {o} is neither in this import nor known to job {}",
                        job.name
                    ),
                });
            }
        }
    }
    // Loops among the imported orgs (the model's own check; parents outside the import are
    // judged above).
    let orgs: Vec<Org> = p.orgs.iter().map(|(_, o)| o.clone()).collect();
    let index_of: HashMap<&str, usize> = p
        .orgs
        .iter()
        .map(|(i, o)| (o.anchor.as_str(), *i))
        .collect();
    for problem in idsync_core::model::check(&orgs, &[]) {
        if problem.kind != idsync_core::model::ProblemKind::Cycle {
            continue;
        }
        for a in &problem.anchors {
            if let Some(i) = index_of.get(a.as_str()) {
                errs.push(RecordError {
                    index: *i,
                    line: None,
                    field: Some("parent".into()),
                    reason: problem.message.clone(),
                });
            }
        }
    }
    p.errors.extend(errs);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_parse_with_per_record_errors() {
        let body = br#"{"type":"org","anchor":"d1","name":"R&D"}
{"type":"account","anchor":"u1","username":"alice","orgs":["d1"]}

not json
{"type":"robot","anchor":"r1"}
{"type":"account","anchor":"","username":"x"}
{"type":"account","anchor":"u2","username":"bob","orgs":"d1"}
{"type":"account","anchor":"u1","username":"again"}
{"type":"account","anchor":"u3","delete":true}
"#;
        let p = parse(body, 100).unwrap();
        assert_eq!(p.received, 8);
        assert_eq!(p.orgs.len(), 1);
        assert_eq!(p.accounts.len(), 2, "u1 twice; the duplicate is an error");
        assert_eq!(p.account_deletes.len(), 1);
        let e: Vec<(usize, Option<usize>, Option<&str>)> = p
            .errors
            .iter()
            .map(|e| (e.index, e.line, e.field.as_deref()))
            .collect();
        assert_eq!(
            e,
            vec![
                (2, Some(4), None),
                (3, Some(5), Some("type")),
                (4, Some(6), Some("anchor")),
                (5, Some(7), Some("orgs")),
                (6, Some(8), Some("anchor")),
            ],
            "{:#?}",
            p.errors
        );
        assert!(
            p.errors[3].reason.contains("list of org anchors"),
            "{:?}",
            p.errors[3]
        );
        let arr = parse(br#"[{"type":"org","anchor":"d1"}]"#, 100).unwrap();
        assert_eq!(
            arr.errors[0].field.as_deref(),
            Some("name"),
            "{:?}",
            arr.errors
        );
        assert!(parse(b"[1,2,3]", 2).is_err(), "too many records");
        assert!(parse(b"  ", 2).is_err());
        assert_ne!(
            request_hash("j", ErrorPolicy::Reject, b"x"),
            request_hash("j", ErrorPolicy::Skip, b"x")
        );
    }
}
