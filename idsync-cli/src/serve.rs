//! `idsync serve`: the hub as a running service, assembled from the config.
//!
//! * Every job with a `schedule` runs under the store's fenced leases (several `serve`
//!   processes on one PostgreSQL share them; a killed one's jobs are taken over when its
//!   leases run out).
//! * A job whose source has events configured (DingTalk's or WeCom's `callback`, Lark's
//!   `events`) reads them from the store's durable inbox; its callback endpoint is served at
//!   `/callbacks/PROVIDER` and records every verified event in the store before it answers
//!   the provider.
//! * A job that reads the hub with `on_events = true` runs when the hub's change feed moved
//!   past it (two-way distribution: a change that reached the hub goes out to every spoke).
//! * `[authority]` gives hub fields their one owning job.
//! * The routers: `/healthz`, `/readyz`, `/metrics`, `/api/v1/jobs`, the change feed and
//!   snapshots (`feed`, scope `read`), the bulk import (`[serve.import]`, scope `import`),
//!   the SCIM service provider (`[serve.scim]`, its own client tokens) and the OIDC logins
//!   (`[serve.oidc]`).
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:8080"
//! tls = { cert = "tls/cert.pem", key = "tls/key.pem" }
//! tokens = [{ name = "app", sha256 = "…64 hex…", scopes = ["read"] }]
//!
//! [jobs.hr-to-hub]
//! source = "hr"
//! sink = "hub"
//! schedule = { every = "15m", full_cron = "0 3 * * *" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idsync_core::{Engine, Job, Store};
use idsync_serve::auth::{Scope, TokenEntry, Tokens};
use idsync_serve::import::{ErrorPolicy, ImportConfig};
use idsync_serve::inbox::Inbox;
use idsync_serve::ops::Metrics;
use idsync_serve::schedule::{Recurrence, Schedule, parse_duration};
use idsync_serve::server::{ServeJob, ServeOptions, Server, TlsFiles};
use serde::Deserialize;

use crate::config::Config;
use crate::error::CliError;
use crate::progress::Meter;
use crate::providers::{self, BuildContext};

/// The `[serve]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where to listen (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TLS for the listener: PEM files (relative to the config's folder).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Listen without TLS on an address other than loopback (behind a TLS-terminating
    /// proxy). Without it, such a `listen` needs `tls`.
    #[serde(default)]
    pub plaintext: bool,
    /// The largest request body in bytes (default 1 MiB; the import API has its own cap).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// How long a run under way may go on after shutdown began (default `10s`).
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
    /// The accepted API tokens (SHA-256 hashes; `idsync token NAME` makes one). None by
    /// default: every API request is refused.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Serve the change feed and the snapshots (`/api/v1/changes`, `/api/v1/accounts`,
    /// `/api/v1/orgs`, scope `read`). Default on.
    #[serde(default = "yes")]
    pub feed: bool,
    /// How long feed entries (and tombstones) are kept (default `7d`).
    #[serde(default = "default_retention")]
    pub feed_retention: String,
    /// The bulk import API.
    #[serde(default)]
    pub import: Option<ImportServeConfig>,
    /// The SCIM 2.0 service provider over the hub.
    #[cfg(feature = "provider-scim")]
    #[serde(default)]
    pub scim: Option<idsync_scim::ServerConfig>,
    /// OpenID Connect logins provisioning the hub.
    #[serde(default)]
    pub oidc: Option<OidcServeConfig>,
}

/// `tls = { cert = "…", key = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[serve.import]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportServeConfig {
    /// Import job names (`POST /api/v1/import/NAME`), each writing into the hub.
    pub jobs: Vec<String>,
    /// `reject` (default: one bad record and nothing is applied) or `skip`.
    #[serde(default)]
    pub errors: ErrorPolicy,
    /// The largest request body in bytes (default 256 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// The most records in one request (default 1,000,000).
    #[serde(default)]
    pub max_records: Option<usize>,
}

/// `[serve.oidc]`: the login routes at `/oidc/PROVIDER/login` and `/oidc/PROVIDER/callback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcServeConfig {
    /// The environment variable holding the session cookie's key (32 bytes or more).
    #[serde(default)]
    pub session_key_env: Option<String>,
    /// The file holding it.
    #[serde(default)]
    pub session_key_file: Option<PathBuf>,
    /// The providers by name.
    pub providers: idsync_oidc::OidcConfig,
}

/// A job's `schedule = { … }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Incremental runs every duration (`"15m"`, `"1h30m"`).
    #[serde(default)]
    pub every: Option<String>,
    /// Incremental runs on a cron expression (5 fields, UTC).
    #[serde(default)]
    pub cron: Option<String>,
    /// Full runs every duration (catches what events missed).
    #[serde(default)]
    pub full_every: Option<String>,
    /// Full runs on a cron expression.
    #[serde(default)]
    pub full_cron: Option<String>,
    /// An incremental run shortly after events arrive (for a job reading the hub: after
    /// the hub changed).
    #[serde(default)]
    pub on_events: bool,
    /// How long a burst of events may settle before the run (default `2s`).
    #[serde(default)]
    pub debounce: Option<String>,
    /// How often to look for events other processes recorded (default `1s`).
    #[serde(default)]
    pub poll: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_body_limit() -> usize {
    1 << 20
}
fn default_grace() -> String {
    "10s".into()
}
fn default_retention() -> String {
    "7d".into()
}
fn yes() -> bool {
    true
}

impl ScheduleConfig {
    /// The schedule, or what is wrong with it.
    pub fn schedule(&self) -> Result<Schedule, String> {
        let one = |d: &Option<String>, c: &Option<String>, what: &str| match (d, c) {
            (Some(_), Some(_)) => Err(format!("give `{what}every` or `{what}cron`, not both")),
            (Some(d), None) => Recurrence::every(d)
                .map(Some)
                .map_err(|e| format!("{what}every: {}", e.message())),
            (None, Some(c)) => Recurrence::cron(c)
                .map(Some)
                .map_err(|e| format!("{what}cron: {}", e.message())),
            (None, None) => Ok(None),
        };
        let mut s = Schedule {
            every: one(&self.every, &self.cron, "")?,
            full_every: one(&self.full_every, &self.full_cron, "full_")?,
            on_events: self.on_events,
            ..Schedule::default()
        };
        if let Some(d) = &self.debounce {
            s.debounce = parse_duration(d).map_err(|e| format!("debounce: {}", e.message()))?;
        }
        if let Some(d) = &self.poll {
            s.poll = parse_duration(d).map_err(|e| format!("poll: {}", e.message()))?;
        }
        if s.is_empty() {
            return Err("the schedule never runs the job: give `every`, `cron`, \
                        `full_every`, `full_cron` or `on_events = true`"
                .into());
        }
        Ok(s)
    }
}

impl ServeConfig {
    /// Problems serde cannot see (without reading secrets or files).
    pub fn problems(&self, cfg: &Config) -> Vec<String> {
        let mut out = Vec::new();
        match self.listen.parse::<SocketAddr>() {
            Err(e) => out.push(format!("listen {:?}: {e} (e.g. 127.0.0.1:8080)", self.listen)),
            Ok(a) if !a.ip().is_loopback() && self.tls.is_none() && !self.plaintext => out.push(
                format!(
                    "listen {a}: plain HTTP on a non-loopback address; give `tls = {{ cert, key }}`, \
                     or `plaintext = true` when a TLS-terminating proxy is in front"
                ),
            ),
            Ok(_) => {}
        }
        if let Err(e) = parse_duration(&self.shutdown_grace) {
            out.push(format!("shutdown_grace: {}", e.message()));
        }
        if let Err(e) = parse_duration(&self.feed_retention) {
            out.push(format!("feed_retention: {}", e.message()));
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tokens {
            if let Some(p) = t.problem() {
                out.push(p);
            }
            if !names.insert(t.name.as_str()) {
                out.push(format!("tokens: the name {} is used twice", t.name));
            }
        }
        if let Some(i) = &self.import {
            if i.jobs.is_empty() {
                out.push("import: give at least one job name".into());
            }
            for j in &i.jobs {
                if cfg.file.jobs.contains_key(j) {
                    out.push(format!(
                        "import: {j:?} is also a [jobs] table; an import job is its own job"
                    ));
                }
            }
        }
        if let Some(o) = &self.oidc
            && o.session_key_env.is_none() == o.session_key_file.is_none()
        {
            out.push("oidc: give one of `session_key_env` or `session_key_file`".into());
        }
        out
    }
}

/// What `idsync serve` assembled (before it binds).
#[derive(Debug)]
pub struct Assembled {
    /// The server.
    pub server: Server,
    /// The scheduled jobs, by name, with the callback path of the ones reading events.
    pub jobs: BTreeMap<String, Option<String>>,
    /// The retention task's settings.
    pub retention: Option<Duration>,
    /// The store.
    pub store: Arc<dyn Store>,
}

fn config_err(m: impl Into<String>) -> CliError {
    CliError::config_msg(m)
}

/// Assemble the service a config describes.
pub async fn assemble(cfg: &Config) -> Result<Assembled, CliError> {
    let serve = cfg.file.serve.as_ref().ok_or_else(|| {
        config_err(
            "no [serve] table: `idsync serve` needs one (at least `[serve]` with the defaults); \
             see the README's \"idsync serve\" section",
        )
    })?;
    let serve = serve.get_ref();
    let problems = serve.problems(cfg);
    if !problems.is_empty() {
        return Err(config_err(format!("serve: {}", problems.join("; "))));
    }
    let opened = crate::store::open(cfg.file.store.get_ref()).await?;
    let store = opened.store;
    let metrics = Metrics::new();
    let ctx = BuildContext {
        store: store.clone(),
        base_dir: cfg.base_dir.clone(),
        metrics: Some(metrics.clone()),
    };
    let options = ServeOptions {
        // checked by problems()
        listen: serve
            .listen
            .parse()
            .map_err(|_| config_err("serve: listen"))?,
        tls: serve.tls.as_ref().map(|t| TlsFiles {
            cert: ctx.resolve(&t.cert),
            key: ctx.resolve(&t.key),
        }),
        body_limit: serve.body_limit,
        shutdown_grace: parse_duration(&serve.shutdown_grace)?,
        ..ServeOptions::default()
    };
    let mut server = Server::new(store.clone(), options)
        .tokens(Tokens::new(serve.tokens.clone()))
        .metrics(metrics.clone());
    let meter = Meter::new(false);
    let engine = Engine::new(store.clone());

    // Event providers: one inbox each, read by one job.
    let mut consumers: BTreeMap<&str, &str> = BTreeMap::new();
    let mut jobs = BTreeMap::new();
    for (name, j) in &cfg.file.jobs {
        let j = j.get_ref();
        let Some(sc) = &j.schedule else { continue };
        let schedule = sc
            .get_ref()
            .schedule()
            .map_err(|m| config_err(format!("job {name}: schedule: {m}")))?;
        let src_name = j.source.get_ref().as_str();
        let src_cfg = cfg
            .provider(src_name)
            .ok_or_else(|| config_err(format!("job {name}: no provider {src_name}")))?;
        let stream = format!("{}:{src_name}", src_cfg.type_name());
        let inbox = Inbox::new(store.clone(), stream, metrics.clone());
        let served = src_cfg
            .settings
            .serve_events(src_name, &ctx, &inbox)
            .await?;
        let (source, inbox, path) = match served {
            Some(ev) => {
                if let Some(other) = consumers.insert(src_name, name) {
                    return Err(config_err(format!(
                        "jobs {other} and {name} both read the events of provider \
                         {src_name}; one scheduled job per event provider (its inbox is \
                         trimmed by that job's position)"
                    )));
                }
                let path = format!("/callbacks/{src_name}");
                server = server.callback(path.clone(), ev.router);
                let source = providers::layered(&src_cfg, ev.source);
                (Some(source), Some(inbox), Some(path))
            }
            None => (None, None, None),
        };
        let job = crate::commands::build_job(cfg, name, &ctx, &meter, source).await?;
        let mut sj = ServeJob::new(job, schedule)
            .with_lease_ttl(Duration::from_secs(j.lease_seconds.max(3)));
        if let Some(inbox) = inbox {
            sj = sj.with_inbox(inbox);
        }
        server = server.job(sj);
        jobs.insert(name.clone(), path);
    }

    if serve.feed {
        server = server.api("/", idsync_serve::feed::router(store.clone()), Scope::Read);
    }
    if let Some(i) = &serve.import {
        let hub = Arc::new(idsync_core::Hub::new(store.clone()));
        let mut import_jobs: Vec<Job> = Vec::new();
        for n in &i.jobs {
            let mut j = idsync_serve::import::import_job(n, hub.clone());
            if let Some(a) = cfg.authority() {
                j = j.with_authority(a);
            }
            import_jobs.push(j);
        }
        let mut ic = ImportConfig {
            errors: i.errors,
            ..ImportConfig::default()
        };
        if let Some(n) = i.max_body_bytes {
            ic.max_body_bytes = n;
        }
        if let Some(n) = i.max_records {
            ic.max_records = n;
        }
        server = server.api(
            "/",
            idsync_serve::import::router(engine.clone(), import_jobs, ic),
            Scope::Import,
        );
    }
    #[cfg(feature = "provider-scim")]
    if let Some(sc) = &serve.scim {
        let path = url_path(&sc.base_url).ok_or_else(|| {
            config_err(format!(
                "serve.scim: base_url {:?} is not a URL",
                sc.base_url
            ))
        })?;
        let scim = idsync_scim::ScimServer::new(engine.clone(), sc.clone())?;
        // SCIM clients authenticate with their own tokens (`clients`).
        server = server.public(path, scim.router());
    }
    if let Some(o) = &serve.oidc {
        let key = idsync_core::secret::SecretRef::required(
            "serve.oidc.session_key",
            o.session_key_env.as_deref(),
            o.session_key_file
                .as_deref()
                .map(|p| ctx.resolve(p))
                .as_deref(),
        )?
        .read("serve.oidc session key")?;
        let bytes = secrecy::ExposeSecret::expose_secret(&key)
            .as_bytes()
            .to_vec();
        let sessions = idsync_oidc::SessionCookie::new(secrecy::SecretBox::new(Box::new(bytes)))
            .map_err(|e| config_err(format!("serve.oidc: {e}")))?;
        let mut service = idsync_oidc::OidcService::new(Arc::new(sessions));
        let hub = Arc::new(idsync_core::Hub::new(store.clone()));
        for (name, pc) in &o.providers {
            let mut pc = pc.clone();
            pc.client_secret_file = pc.client_secret_file.map(|p| ctx.resolve(&p));
            let provider = idsync_oidc::OidcProvider::discover(name, &pc)
                .await
                .map_err(|e| CliError::config_msg(format!("serve.oidc.providers.{name}: {e}")))?;
            service = service.with_provider(provider, engine.clone(), hub.clone());
        }
        server = server.public("/oidc", service.router());
    }
    let retention = if serve.feed {
        Some(parse_duration(&serve.feed_retention)?)
    } else {
        None
    };
    Ok(Assembled {
        server,
        jobs,
        retention,
        store,
    })
}

#[cfg(feature = "provider-scim")]
fn url_path(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(match rest.find('/') {
        Some(i) => rest[i..].trim_end_matches('/').to_owned(),
        None => String::new(),
    })
}

/// `idsync serve`: assemble, bind, print where, serve until SIGINT or SIGTERM.
pub async fn serve(cfg: &Config) -> Result<u8, CliError> {
    let a = assemble(cfg).await?;
    let bound = a.server.bind().await?;
    let addr = bound.local_addr()?;
    let scheme = if cfg
        .file
        .serve
        .as_ref()
        .is_some_and(|s| s.get_ref().tls.is_some())
    {
        "https"
    } else {
        "http"
    };
    // One line a supervisor (or a test) can wait for; then the jobs.
    println!("idsync serve: listening on {scheme}://{addr}");
    for (job, path) in &a.jobs {
        match path {
            Some(p) => println!("  job {job}: scheduled; events at {scheme}://{addr}{p}"),
            None => println!("  job {job}: scheduled"),
        }
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let retention = a.retention.map(|keep| {
        idsync_serve::feed::spawn_retention(a.store.clone(), keep, Duration::from_secs(3600), None)
    });
    let result = bound.serve(shutdown_signal()).await;
    if let Some(r) = retention {
        r.abort();
    }
    result?;
    Ok(crate::error::exit::OK)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `idsync token NAME --scopes read,import`: a new random token, printed once with the
/// `[serve]` line that accepts it (only its SHA-256 goes into the config).
pub fn token(name: &str, scopes: &[Scope]) -> Result<u8, CliError> {
    use rand::RngCore as _;
    if scopes.is_empty() {
        return Err(config_err(
            "token: give --scopes (read, write, import, admin)",
        ));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!(
        "idsync_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let hash = idsync_serve::auth::hash_token(&token);
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{:?}", s.as_str())).collect();
    println!("token (shown once; give it to the client): {token}");
    println!("config line for [serve]:");
    println!(
        "tokens = [{{ name = {name:?}, sha256 = \"{hash}\", scopes = [{}] }}]",
        scopes.join(", ")
    );
    Ok(crate::error::exit::OK)
}
