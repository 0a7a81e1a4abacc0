//! The TOML configuration: a store, named providers and named jobs.
//!
//! Every table denies unknown fields, so a typo is an error that names its line and column.
//! Parsing ([`Config::parse`]) checks the syntax and the types; [`Config::validate`] checks
//! what serde cannot (a job naming a provider that does not exist, an empty template, a
//! rule with two value sources, ...), also with line and column where the value has one.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use idsync_core::mapping::{EntityMapping, ValueSource};
use idsync_core::model::{ACCOUNT_FIELDS, ATTR_PREFIX, ORG_FIELDS};
use idsync_core::{
    Account, DeletionPolicy, FieldRule, Guard, Mapping, Org, Scope, Threshold, Transform,
};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::providers::ProviderConfig;

/// The name of the hub provider every config has, unless it defines its own `hub`.
pub const HUB: &str = "hub";

/// A configuration error, with the place in the file it comes from when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong.
    pub message: String,
    /// The file.
    pub path: Option<PathBuf>,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// The offending source line, for display.
    pub snippet: Option<String>,
}

impl ConfigError {
    /// An error without a position.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            path: None,
            position: None,
            snippet: None,
        }
    }

    /// An error at a byte range of `text`.
    pub fn at(message: impl Into<String>, text: &str, span: Option<Range<usize>>) -> Self {
        let mut e = ConfigError::new(message);
        if let Some(span) = span {
            let (line, col) = line_col(text, span.start);
            e.position = Some((line, col));
            e.snippet = text.lines().nth(line - 1).map(str::to_owned);
        }
        e
    }

    fn in_file(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}", p.display())?;
            if let Some((l, c)) = self.position {
                write!(f, ":{l}:{c}")?;
            }
            write!(f, ": ")?;
        } else if let Some((l, c)) = self.position {
            write!(f, "line {l}, column {c}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(s), Some((l, c))) = (&self.snippet, self.position) {
            let gutter = l.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{l} | {s}\n{:gutter$} | {:>c$}",
                "", "", "^"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// Where the hub and the engine's records live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A SQLite file (relative paths are relative to the working folder).
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// The name of an environment variable holding a PostgreSQL URL.
    #[serde(default)]
    pub postgres_env: Option<String>,
    /// A file holding a PostgreSQL URL.
    #[serde(default)]
    pub postgres_file: Option<PathBuf>,
    /// An in-memory store: nothing survives the process (tests, dry experiments).
    #[serde(default)]
    pub memory: bool,
}

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite at this path.
    Sqlite(PathBuf),
    /// PostgreSQL, URL in this environment variable.
    PostgresEnv(String),
    /// PostgreSQL, URL in this file.
    PostgresFile(PathBuf),
    /// In memory.
    Memory,
}

impl StoreConfig {
    /// The store this config names; the default is SQLite `idsync.db` in the working folder.
    pub fn kind(&self) -> Result<StoreKind, String> {
        let mut kinds = Vec::new();
        if let Some(p) = &self.sqlite {
            kinds.push(StoreKind::Sqlite(p.clone()));
        }
        if let Some(v) = &self.postgres_env {
            kinds.push(StoreKind::PostgresEnv(v.clone()));
        }
        if let Some(p) = &self.postgres_file {
            kinds.push(StoreKind::PostgresFile(p.clone()));
        }
        if self.memory {
            kinds.push(StoreKind::Memory);
        }
        match kinds.len() {
            0 => Ok(StoreKind::Sqlite(PathBuf::from("idsync.db"))),
            1 => Ok(kinds.remove(0)),
            _ => Err(
                "store: give exactly one of `sqlite`, `postgres_env`, `postgres_file`, `memory`"
                    .into(),
            ),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The store.
    #[serde(default = "spanned_default")]
    pub store: Spanned<StoreConfig>,
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Jobs by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, Spanned<JobConfig>>,
    /// `idsync serve`'s settings.
    #[serde(default)]
    pub serve: Option<Spanned<crate::serve::ServeConfig>>,
    /// Hub field → the one job allowed to change it (`[authority.accounts]`,
    /// `[authority.orgs]`).
    #[serde(default)]
    pub authority: Option<Spanned<idsync_core::FieldAuthority>>,
}

fn spanned_default<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

/// A `[jobs.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The provider read from.
    pub source: Spanned<String>,
    /// The provider written to.
    pub sink: Spanned<String>,
    /// How entities are mapped.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Account correlation rules, tried in order.
    #[serde(default = "default_correlation")]
    pub correlation: Spanned<Vec<String>>,
    /// What happens to target entities whose source is gone.
    #[serde(default = "spanned_default")]
    pub deletion: Spanned<DeletionConfig>,
    /// Safety thresholds.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Ops applied at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Page size asked of both sides.
    #[serde(default)]
    pub page_size: Option<usize>,
    /// The job is the only authority over the target: it also disables entities it never
    /// linked.
    #[serde(default)]
    pub authoritative: bool,
    /// Accept a source that lists no accounts at all.
    #[serde(default)]
    pub allow_empty_source: bool,
    /// Sync the org tree.
    #[serde(default = "yes")]
    pub sync_orgs: bool,
    /// Seconds a worker holds the job's lease before it must renew it.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// When `idsync serve` runs it (no schedule: serve does not run it).
    #[serde(default)]
    pub schedule: Option<Spanned<crate::serve::ScheduleConfig>>,
}

fn default_correlation() -> Spanned<Vec<String>> {
    Spanned::new(
        0..0,
        vec!["employee_id".into(), "email".into(), "username".into()],
    )
}

fn default_concurrency() -> usize {
    8
}

fn default_lease() -> u64 {
    60
}

fn yes() -> bool {
    true
}

/// `deletion = { policy = "disable" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionConfig {
    /// The policy.
    #[serde(default)]
    pub policy: PolicyName,
    /// Days a disabled account is kept (`disable_then_delete` only).
    #[serde(default)]
    pub retention_days: Option<u64>,
}

/// Deletion policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Disable accounts, keep orgs.
    #[default]
    Disable,
    /// Delete accounts, then orgs.
    Delete,
    /// Leave them.
    Ignore,
    /// Disable, then delete after `retention_days`.
    DisableThenDelete,
}

/// `{ max_count = 500, max_percent = 5.0 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Absolute maximum.
    #[serde(default)]
    pub max_count: Option<usize>,
    /// Maximum percentage of the target's entities.
    #[serde(default)]
    pub max_percent: Option<f64>,
}

impl From<ThresholdConfig> for Threshold {
    fn from(t: ThresholdConfig) -> Self {
        Threshold::new(t.max_count, t.max_percent)
    }
}

/// `[jobs.NAME.guard]`. Omitted thresholds keep the defaults (accounts disabled or deleted:
/// at most 500 and 5%; orgs deleted: at most 100 and 5%).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// No thresholds at all.
    #[serde(default)]
    pub off: bool,
    /// Disables and deletes of accounts.
    #[serde(default)]
    pub destructive_accounts: Option<ThresholdConfig>,
    /// Org deletes.
    #[serde(default)]
    pub org_deletes: Option<ThresholdConfig>,
    /// Per op name.
    #[serde(default = "spanned_default")]
    pub per_op: Spanned<BTreeMap<String, ThresholdConfig>>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            off: false,
            destructive_accounts: None,
            org_deletes: None,
            per_op: spanned_default(),
        }
    }
}

/// `[jobs.NAME.mapping]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Accounts.
    #[serde(default)]
    pub accounts: EntityMappingConfig,
    /// Orgs.
    #[serde(default)]
    pub orgs: EntityMappingConfig,
}

/// The mapping of one entity kind: without `rules`, everything is copied (identity).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityMappingConfig {
    /// Field rules; absent means identity.
    #[serde(default)]
    pub rules: Option<Vec<Spanned<RuleConfig>>>,
    /// Only source entities matching this are handled, e.g.
    /// `{ not_equals = { field = "attrs.type", value = "contractor" } }` or
    /// `{ all = [ {...}, {...} ] }`.
    #[serde(default)]
    pub scope: Option<Scope>,
}

/// `{ to = "email", template = "{username}@example.com", transforms = ["lowercase"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The target field.
    pub to: String,
    /// Copy this source field.
    #[serde(default)]
    pub from: Option<String>,
    /// A constant value.
    #[serde(default)]
    pub constant: Option<Value>,
    /// A template: `{field}` is replaced by the source field.
    #[serde(default)]
    pub template: Option<String>,
    /// Transforms, in order: `"trim"`, `"lowercase"`, `"uppercase"`, `"empty_as_null"`,
    /// or `{ replace = { from = " ", to = "." } }`.
    #[serde(default)]
    pub transforms: Vec<Transform>,
}

/// A parsed configuration with its text, for error positions.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The folder relative provider paths are resolved against.
    pub base_dir: PathBuf,
    /// The file's text.
    pub text: String,
    /// The parsed content.
    pub file: ConfigFile,
}

impl Config {
    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("cannot read {}: {e}", path.display())).in_file(path)
        })?;
        Config::parse(path, text)
    }

    /// Parse a file's text.
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            let span = refine_span(&text, e.message(), e.span());
            ConfigError::at(e.message().trim_end().to_owned(), &text, span).in_file(path)
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Config {
            path: path.to_owned(),
            base_dir,
            text,
            file,
        })
    }

    fn err(&self, message: impl Into<String>, span: Option<Range<usize>>) -> ConfigError {
        let span = span.filter(|s| s.end > 0);
        ConfigError::at(message, &self.text, span).in_file(&self.path)
    }

    /// Names of all providers, the implicit `hub` included.
    pub fn provider_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.file.providers.keys().cloned().collect();
        if !self.file.providers.contains_key(HUB) {
            v.push(HUB.to_owned());
        }
        v.sort();
        v
    }

    /// The provider config of a name (the implicit hub when `name` is `hub`).
    pub fn provider(&self, name: &str) -> Option<ProviderConfig> {
        match self.file.providers.get(name) {
            Some(p) => Some(p.clone()),
            None if name == HUB => Some(ProviderConfig::hub()),
            None => None,
        }
    }

    /// A job's config.
    pub fn job(&self, name: &str) -> Result<&Spanned<JobConfig>, ConfigError> {
        self.file.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.file.jobs.keys().map(String::as_str).collect();
            self.err(
                format!(
                    "no job named {name:?} (jobs in this config: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
                None,
            )
        })
    }

    /// Every problem serde cannot see, each with its position when known.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if let Err(m) = self.file.store.get_ref().kind() {
            errs.push(self.err(m, Some(self.file.store.span())));
        }
        for (name, p) in &self.file.providers {
            for m in p.validate() {
                errs.push(self.err(
                    format!("provider {name}: {m}"),
                    find_table(&self.text, &["providers", name]),
                ));
            }
        }
        for (name, job) in &self.file.jobs {
            errs.extend(self.validate_job(name, job));
        }
        if let Some(s) = &self.file.serve {
            for m in s.get_ref().problems(self) {
                errs.push(self.err(format!("serve: {m}"), Some(s.span())));
            }
        }
        if let Some(a) = &self.file.authority {
            let writers: Vec<&str> = self
                .file
                .jobs
                .iter()
                .filter(|(_, j)| self.writes_hub(j.get_ref()))
                .map(|(n, _)| n.as_str())
                .chain(
                    self.file
                        .serve
                        .iter()
                        .flat_map(|s| s.get_ref().import.iter())
                        .flat_map(|i| i.jobs.iter().map(String::as_str)),
                )
                .collect();
            if let Err(e) = a.get_ref().validate(Some(&writers)) {
                errs.push(self.err(
                    format!(
                        "authority: {} (owners are jobs that write into the hub)",
                        e.message()
                    ),
                    Some(a.span()),
                ));
            }
        }
        errs
    }

    /// Whether a job writes into the hub (its sink is a provider of type `hub`).
    pub fn writes_hub(&self, j: &JobConfig) -> bool {
        self.provider(j.sink.get_ref())
            .is_some_and(|p| p.type_name() == "hub")
    }

    /// The field authority, when `[authority]` is given.
    pub fn authority(&self) -> Option<std::sync::Arc<idsync_core::FieldAuthority>> {
        self.file
            .authority
            .as_ref()
            .map(|a| std::sync::Arc::new(a.get_ref().clone()))
    }

    fn validate_job(&self, name: &str, job: &Spanned<JobConfig>) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let j = job.get_ref();
        let names = self.provider_names();
        for (what, r) in [("source", &j.source), ("sink", &j.sink)] {
            match self.provider(r.get_ref()) {
                None => errs.push(self.err(
                    format!(
                        "job {name}: {what} {:?} is not a provider (providers: {})",
                        r.get_ref(),
                        names.join(", ")
                    ),
                    Some(r.span()),
                )),
                Some(p) if what == "sink" && !p.can_sink() => errs.push(self.err(
                    format!(
                        "job {name}: provider {:?} ({}) cannot be a sink",
                        r.get_ref(),
                        p.type_name()
                    ),
                    Some(r.span()),
                )),
                Some(p) if what == "source" && !p.can_source() => errs.push(self.err(
                    format!(
                        "job {name}: provider {:?} ({}) cannot be a source",
                        r.get_ref(),
                        p.type_name()
                    ),
                    Some(r.span()),
                )),
                Some(_) => {}
            }
        }
        if j.source.get_ref() == j.sink.get_ref() {
            errs.push(self.err(
                format!("job {name}: source and sink are the same provider"),
                Some(j.sink.span()),
            ));
        }
        for f in j.correlation.get_ref() {
            if !is_field::<Account>(f) {
                errs.push(self.err(
                    format!("job {name}: correlation field {f:?} is not an account field"),
                    Some(j.correlation.span()),
                ));
            }
        }
        if j.concurrency == 0 {
            errs.push(self.err(
                format!("job {name}: concurrency must be at least 1"),
                Some(job.span()),
            ));
        }
        if j.page_size == Some(0) {
            errs.push(self.err(
                format!("job {name}: page_size must be at least 1"),
                Some(job.span()),
            ));
        }
        if let Some(sc) = &j.schedule
            && let Err(m) = sc.get_ref().schedule()
        {
            errs.push(self.err(format!("job {name}: schedule: {m}"), Some(sc.span())));
        }
        if j.lease_seconds < 3 {
            errs.push(self.err(
                format!("job {name}: lease_seconds must be at least 3"),
                Some(job.span()),
            ));
        }
        let d = j.deletion.get_ref();
        match (d.policy, d.retention_days) {
            (PolicyName::DisableThenDelete, None) => errs.push(self.err(
                format!("job {name}: deletion policy disable_then_delete needs retention_days"),
                Some(j.deletion.span()),
            )),
            (PolicyName::DisableThenDelete, Some(_)) | (_, None) => {}
            (_, Some(_)) => errs.push(self.err(
                format!("job {name}: retention_days only applies to disable_then_delete"),
                Some(j.deletion.span()),
            )),
        }
        for op in j.guard.per_op.get_ref().keys() {
            if let Err(e) = op.parse::<idsync_core::OpKind>() {
                errs.push(self.err(
                    format!("job {name}: guard.per_op: {}", e.message()),
                    Some(j.guard.per_op.span()),
                ));
            }
        }
        for (kind, m) in [("accounts", &j.mapping.accounts), ("orgs", &j.mapping.orgs)] {
            for rule in m.rules.iter().flatten() {
                if let Err(msg) = check_rule(kind, rule.get_ref()) {
                    errs.push(self.err(
                        format!("job {name}: mapping.{kind}: {msg}"),
                        Some(rule.span()),
                    ));
                }
            }
        }
        errs
    }

    /// The core job settings of a job (everything but the providers).
    pub fn job_settings(&self, name: &str) -> Result<JobSettings, ConfigError> {
        let j = self.job(name)?.get_ref();
        let mapping = Mapping {
            accounts: entity_mapping(&j.mapping.accounts),
            orgs: entity_mapping(&j.mapping.orgs),
        };
        let d = j.deletion.get_ref();
        let deletion = match d.policy {
            PolicyName::Disable => DeletionPolicy::Disable,
            PolicyName::Delete => DeletionPolicy::Delete,
            PolicyName::Ignore => DeletionPolicy::Ignore,
            PolicyName::DisableThenDelete => DeletionPolicy::DisableThenDelete {
                retention: std::time::Duration::from_secs(
                    d.retention_days.unwrap_or(0).saturating_mul(86_400),
                ),
            },
        };
        let guard = if j.guard.off {
            Guard::off()
        } else {
            let mut g = Guard::default();
            if let Some(t) = j.guard.destructive_accounts {
                g.destructive_accounts = t.into();
            }
            if let Some(t) = j.guard.org_deletes {
                g.org_deletes = t.into();
            }
            g.per_op = j
                .guard
                .per_op
                .get_ref()
                .iter()
                // Names were checked when the file was validated.
                .filter_map(|(k, v)| Some((k.parse().ok()?, (*v).into())))
                .collect();
            g
        };
        Ok(JobSettings {
            source: j.source.get_ref().clone(),
            sink: j.sink.get_ref().clone(),
            mapping,
            correlation: j.correlation.get_ref().clone(),
            deletion,
            guard,
            concurrency: j.concurrency.max(1),
            page_size: j.page_size,
            authoritative: j.authoritative,
            allow_empty_source: j.allow_empty_source,
            sync_orgs: j.sync_orgs,
            lease_seconds: j.lease_seconds.max(3),
        })
    }
}

/// A job's settings, converted to core types.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Source provider name.
    pub source: String,
    /// Sink provider name.
    pub sink: String,
    /// Mapping.
    pub mapping: Mapping,
    /// Correlation rules.
    pub correlation: Vec<String>,
    /// Deletion policy.
    pub deletion: DeletionPolicy,
    /// Guard.
    pub guard: Guard,
    /// Concurrency.
    pub concurrency: usize,
    /// Page size.
    pub page_size: Option<usize>,
    /// Authoritative.
    pub authoritative: bool,
    /// Allow an empty source.
    pub allow_empty_source: bool,
    /// Sync orgs.
    pub sync_orgs: bool,
    /// Lease time to live, seconds.
    pub lease_seconds: u64,
}

fn entity_mapping(m: &EntityMappingConfig) -> EntityMapping {
    EntityMapping {
        rules: m
            .rules
            .as_ref()
            .map(|rules| rules.iter().map(|r| field_rule(r.get_ref())).collect()),
        scope: m.scope.clone(),
    }
}

fn field_rule(r: &RuleConfig) -> FieldRule {
    let value = if let Some(f) = &r.from {
        ValueSource::Field(f.clone())
    } else if let Some(c) = &r.constant {
        ValueSource::Constant(c.clone())
    } else {
        ValueSource::Template(r.template.clone().unwrap_or_default())
    };
    FieldRule {
        to: r.to.clone(),
        value,
        transforms: r.transforms.clone(),
    }
}

fn is_field<E: idsync_core::Entity>(f: &str) -> bool {
    E::typed_fields().contains(&f) || (f.starts_with(ATTR_PREFIX) && f.len() > ATTR_PREFIX.len())
}

fn check_rule(kind: &str, r: &RuleConfig) -> Result<(), String> {
    let n = usize::from(r.from.is_some())
        + usize::from(r.constant.is_some())
        + usize::from(r.template.is_some());
    if n != 1 {
        return Err(format!(
            "rule for {:?}: give exactly one of `from`, `constant`, `template`",
            r.to
        ));
    }
    let (typed, ok_to) = if kind == "accounts" {
        (ACCOUNT_FIELDS, is_field::<Account>(&r.to))
    } else {
        (ORG_FIELDS, is_field::<Org>(&r.to))
    };
    if !ok_to {
        return Err(format!(
            "rule target {:?} is not a field (one of {}, or attrs.NAME)",
            r.to,
            typed.join(", ")
        ));
    }
    // Let core try the rule on an empty entity: malformed templates fail here.
    let rule = field_rule(r);
    let em = EntityMapping::rules(vec![rule]);
    let res = if kind == "accounts" {
        em.map(&Account::default()).map(|_| ())
    } else {
        em.map(&Org::default()).map(|_| ())
    };
    res.map_err(|e| e.message().to_owned())
}

/// toml reports unknown fields of internally tagged tables at the table header; point at
/// the key itself when it can be found in that table.
fn refine_span(text: &str, message: &str, span: Option<Range<usize>>) -> Option<Range<usize>> {
    let span = span?;
    if message.starts_with("unknown provider type `") {
        return Some(find_value(text, span.start, "type").unwrap_or(span));
    }
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return Some(span);
    };
    let Some(key) = rest.split('`').next() else {
        return Some(span);
    };
    let mut offset = span.start;
    let mut first = true;
    for line in text[span.start.min(text.len())..].split_inclusive('\n') {
        let t = line.trim_start();
        if !first && t.starts_with('[') {
            break;
        }
        first = false;
        let lead = line.len() - t.len();
        let bare = t
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start().starts_with('=') || after.starts_with('.'));
        let quoted = t.strip_prefix(&format!("\"{key}\"")).is_some();
        if bare || quoted {
            return Some(offset + lead..offset + lead + key.len());
        }
        // inline tables: `key = { a = 1, typo = 2 }`
        if let Some(i) = find_inline_key(t, key) {
            return Some(offset + lead + i..offset + lead + i + key.len());
        }
        offset += line.len();
    }
    Some(span)
}

/// The span of the value of `key = value` in the table starting at `from`.
fn find_value(text: &str, from: usize, key: &str) -> Option<Range<usize>> {
    let mut offset = from.min(text.len());
    let mut first = true;
    for line in text[offset..].split_inclusive('\n') {
        let t = line.trim_start();
        if !first && t.starts_with('[') {
            break;
        }
        first = false;
        if let Some(after) = t.strip_prefix(key)
            && let Some(value) = after.trim_start().strip_prefix('=')
        {
            let v = value.trim_start();
            let at = offset + (line.len() - v.len());
            return Some(at..at + v.trim_end().len());
        }
        offset += line.len();
    }
    None
}

fn find_inline_key(line: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let at = from + i;
        let before = line[..at].trim_end();
        let after = line[at + key.len()..].trim_start();
        if (before.ends_with('{') || before.ends_with(',')) && after.starts_with('=') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// The span of a `[a.b]` table header, if the file has one.
fn find_table(text: &str, path: &[&str]) -> Option<Range<usize>> {
    let header = format!("[{}]", path.join("."));
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t == header || t.starts_with(&format!("{header} ")) {
            let lead = line.len() - line.trim_start().len();
            return Some(offset + lead..offset + lead + header.len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), s.to_owned())
    }

    #[test]
    fn line_col_counts_characters() {
        let t = "ab\n研发x = 1\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 3 + "研发".len()), (2, 3));
    }

    #[test]
    fn unknown_field_in_provider_points_at_the_key() {
        let e = parse("[providers.hr]\ntype = \"memory\"\n\ngenerat = { orgs = 1 }\n").unwrap_err();
        assert_eq!(e.position, Some((4, 1)), "{e}");
        assert!(e.message.contains("generat"), "{e}");
        assert!(e.to_string().starts_with("t.toml:4:1: "), "{e}");
    }

    #[test]
    fn unknown_field_in_inline_table_points_at_the_key() {
        let e = parse("[providers.hr]\ntype = \"memory\"\ngenerate = { orgs = 1, acounts = 3 }\n")
            .unwrap_err();
        assert_eq!(e.position, Some((3, 24)), "{e}");
    }

    #[test]
    fn job_typo_and_bad_reference() {
        let e = parse("[jobs.j]\nsource = \"a\"\nsink = \"hub\"\nconcurency = 3\n").unwrap_err();
        assert_eq!(e.position, Some((4, 1)), "{e}");

        let c = parse("[jobs.j]\nsource = \"nope\"\nsink = \"hub\"\n").unwrap();
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].position, Some((2, 10)));
    }

    #[test]
    fn rules_are_checked() {
        let c = parse(
            r#"
[providers.hr]
type = "memory"

[jobs.j]
source = "hr"
sink = "hub"
mapping.accounts.rules = [
  { to = "email", template = "{username@x" },
  { to = "nosuch", from = "username" },
  { to = "title", from = "title", constant = "x" },
]
guard.per_op = { frobnicate = { max_count = 1 } }
deletion = { policy = "disable_then_delete" }
"#,
        )
        .unwrap();
        let errs = c.validate();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 5, "{text:#?}");
        assert!(text[0].contains("retention_days"), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("unclosed")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains(":9:3:")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("frobnicate")), "{text:#?}");
    }

    #[test]
    fn settings_convert_to_core() {
        let c = parse(
            r#"
[providers.hr]
type = "memory"

[jobs.j]
source = "hr"
sink = "hub"
correlation = ["email"]
deletion = { policy = "disable_then_delete", retention_days = 2 }
guard = { destructive_accounts = { max_count = 3 } }
[[jobs.j.mapping.accounts.rules]]
to = "username"
from = "username"
transforms = ["lowercase", { replace = { from = " ", to = "." } }]
[jobs.j.mapping.accounts.scope]
not_equals = { field = "attrs.type", value = "contractor" }
"#,
        )
        .unwrap();
        assert!(c.validate().is_empty());
        let s = c.job_settings("j").unwrap();
        assert_eq!(s.correlation, vec!["email"]);
        assert_eq!(
            s.deletion,
            DeletionPolicy::DisableThenDelete {
                retention: std::time::Duration::from_secs(2 * 86_400)
            }
        );
        assert_eq!(s.guard.destructive_accounts.max_count, Some(3));
        assert_eq!(s.guard.destructive_accounts.max_percent, None);
        let mut a = Account::new("u1", "Zhang San");
        let m = s.mapping.map_account(&a).unwrap().unwrap();
        assert_eq!(m.username, "zhang.san");
        a.attrs.insert("type".into(), Value::from("contractor"));
        assert!(s.mapping.map_account(&a).unwrap().is_none());
        assert!(c.job_settings("nope").is_err());
    }

    #[test]
    fn store_kinds() {
        assert_eq!(
            StoreConfig::default().kind().unwrap(),
            StoreKind::Sqlite("idsync.db".into())
        );
        let c = parse("store = { sqlite = \"a.db\", memory = true }\n").unwrap();
        let errs = c.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].position, Some((1, 9)));
    }
}
