//! Providers: the `[providers.NAME]` tables, selected by `type`, and how each is built.
//!
//! Every provider type is one registration in [`registry`]: its `type` name and its config
//! type, which implements [`Provider`] (validation and a build function). The table is
//! deserialized straight into that config type, so unknown keys are errors with their
//! line and column. Secrets are named in the config (`KEY_env`, `KEY_file`) and read
//! through the one shared [`SecretRef`](idsync_core::secret::SecretRef).
//!
//! Adding a provider:
//!
//! ```text
//! #[async_trait]
//! impl Provider for idsync_acme::AcmeConfig {
//!     const TYPE: &'static str = "acme";
//!     async fn build(&self, name: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
//!         Ok(Built::both(idsync_acme::AcmeDirectory::new(self.clone())?))
//!     }
//! }
//! // and in `registry()`: Registration::of::<idsync_acme::AcmeConfig>(),
//! ```
//!
//! Every remote provider is wrapped in the recommended layer stack (see
//! [`RequestConfig`]), configurable per provider in `[providers.NAME.request]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::layers::{
    ConcurrencyLimitLayer, RateLimitLayer, RetryLayer, Stack, TimeoutLayer, TracingLayer,
};
use idsync_core::{
    Account, Anchor, Hub, MemoryAdapter, Org, RateLimit, Sink, Source, Status, Store, Target,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::config::ConfigError;
use crate::error::CliError;
use idsync_serve::inbox::Inbox;

/// A provider type: its config (deserialized from the `[providers.NAME]` table, without
/// `type` and `request`) and how it is built.
#[async_trait]
pub trait Provider: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The `type` name in the config.
    const TYPE: &'static str;
    /// Whether the layer stack of `[providers.NAME.request]` wraps it. Local providers
    /// (memory, the hub) are not wrapped.
    const LAYERED: bool = true;
    /// Keys that would hold a secret's value (`app_secret`, `callback.token`): written in
    /// the config they are refused with a message that names `KEY_env` / `KEY_file`.
    const SECRET_KEYS: &'static [&'static str] = &[];

    /// Problems serde cannot see, found without reading secrets or reaching the provider.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether it can be a job's sink.
    fn can_sink(&self) -> bool {
        true
    }

    /// Build it for a role. Secrets are read here.
    async fn build(&self, name: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError>;

    /// For `idsync serve`: when the config sets up the provider's events (a callback
    /// table), the source whose changes read `inbox` and the callback router that records
    /// verified events into it. `None`: this provider has no events configured, or none
    /// at all (the default).
    async fn serve_events(
        &self,
        _name: &str,
        _ctx: &BuildContext,
        _inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError> {
        Ok(None)
    }
}

/// What [`Provider::serve_events`] builds: a source that reads the inbox and the callback
/// router feeding it (served at `/callbacks/NAME`).
#[derive(Debug)]
pub struct ServedEvents {
    /// The source whose `changes` read the inbox.
    pub source: Arc<dyn Source>,
    /// The callback endpoint, authenticated by the provider's own signatures.
    pub router: axum::Router,
}

impl ServedEvents {
    /// From what an adapter's `source_with_inbox` returns.
    pub fn of<S: Source + 'static>((source, router): (S, axum::Router)) -> Option<Self> {
        Some(ServedEvents {
            source: Arc::new(source),
            router,
        })
    }
}

/// A provider's settings behind a pointer: what the registry hands out.
#[async_trait]
pub trait ProviderSettings: fmt::Debug + Send + Sync {
    /// The `type` name.
    fn type_name(&self) -> &'static str;
    /// See [`Provider::LAYERED`].
    fn layered(&self) -> bool;
    /// See [`Provider::validate`].
    fn validate(&self) -> Vec<String>;
    /// See [`Provider::can_sink`].
    fn can_sink(&self) -> bool;
    /// See [`Provider::build`].
    async fn build(&self, name: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError>;
    /// See [`Provider::serve_events`].
    async fn serve_events(
        &self,
        name: &str,
        ctx: &BuildContext,
        inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError>;
}

#[async_trait]
impl<T: Provider> ProviderSettings for T {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }
    fn layered(&self) -> bool {
        T::LAYERED
    }
    fn validate(&self) -> Vec<String> {
        Provider::validate(self)
    }
    fn can_sink(&self) -> bool {
        Provider::can_sink(self)
    }
    async fn build(&self, name: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
        Provider::build(self, name, ctx, role).await
    }
    async fn serve_events(
        &self,
        name: &str,
        ctx: &BuildContext,
        inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError> {
        Provider::serve_events(self, name, ctx, inbox).await
    }
}

type Parse = fn(toml::Table) -> Result<Arc<dyn ProviderSettings>, String>;

/// One provider type of the registry.
#[derive(Clone, Copy)]
pub struct Registration {
    /// The `type` name.
    pub type_name: &'static str,
    parse: Parse,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("type_name", &self.type_name)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The registration of config type `T`.
    pub fn of<T: Provider>() -> Self {
        fn parse<T: Provider>(t: toml::Table) -> Result<Arc<dyn ProviderSettings>, String> {
            if let Some(e) = inline_secret(&t, T::SECRET_KEYS) {
                return Err(e);
            }
            let cfg: T = toml::Value::Table(t)
                .try_into()
                .map_err(|e: toml::de::Error| e.message().trim_end().to_owned())?;
            Ok(Arc::new(cfg))
        }
        Registration {
            type_name: T::TYPE,
            parse: parse::<T>,
        }
    }

    /// A type this build was compiled without (its cargo feature is off).
    #[cfg_attr(
        all(
            feature = "provider-csv",
            feature = "provider-ldap",
            feature = "provider-dingtalk"
        ),
        allow(dead_code)
    )]
    fn missing(type_name: &'static str) -> Self {
        fn parse(_t: toml::Table) -> Result<Arc<dyn ProviderSettings>, String> {
            Err(
                "this idsync was built without this provider type's cargo feature \
                 (cargo build -p idsync-cli --features provider-TYPE)"
                    .into(),
            )
        }
        Registration { type_name, parse }
    }
}

/// The refusal of a secret written into the config, if one of `keys` is there.
fn inline_secret(t: &toml::Table, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|path| {
        let (table, key) = match path.split_once('.') {
            Some((sub, key)) => (t.get(sub)?.as_table()?, key),
            None => (t, *path),
        };
        table.contains_key(key).then(|| {
            format!(
                "`{path}`: secrets are not written in the config; name an environment \
                 variable with `{key}_env` or a file with `{key}_file`"
            )
        })
    })
}

/// Every provider type this binary knows.
pub fn registry() -> Vec<Registration> {
    vec![
        Registration::of::<MemoryConfig>(),
        Registration::of::<HubConfig>(),
        #[cfg(feature = "provider-csv")]
        Registration::of::<idsync_csv::CsvConfig>(),
        #[cfg(not(feature = "provider-csv"))]
        Registration::missing("csv"),
        #[cfg(feature = "provider-ldap")]
        Registration::of::<idsync_ldap::LdapConfig>(),
        #[cfg(not(feature = "provider-ldap"))]
        Registration::missing("ldap"),
        #[cfg(feature = "provider-dingtalk")]
        Registration::of::<idsync_dingtalk::DingTalkConfig>(),
        #[cfg(not(feature = "provider-dingtalk"))]
        Registration::missing("dingtalk"),
        #[cfg(feature = "provider-wecom")]
        Registration::of::<idsync_wecom::WeComConfig>(),
        #[cfg(not(feature = "provider-wecom"))]
        Registration::missing("wecom"),
        #[cfg(feature = "provider-lark")]
        Registration::of::<idsync_lark::LarkConfig>(),
        #[cfg(not(feature = "provider-lark"))]
        Registration::missing("lark"),
        #[cfg(feature = "provider-scim")]
        Registration::of::<idsync_scim::TargetConfig>(),
        #[cfg(not(feature = "provider-scim"))]
        Registration::missing("scim"),
        #[cfg(feature = "provider-rest")]
        Registration::of::<idsync_rest::RestConfig>(),
        #[cfg(not(feature = "provider-rest"))]
        Registration::missing("rest"),
        #[cfg(feature = "provider-webhook")]
        Registration::of::<idsync_webhook::WebhookConfig>(),
        #[cfg(not(feature = "provider-webhook"))]
        Registration::missing("webhook"),
    ]
}

/// `type = "wecom"`: WeCom (`idsync_wecom::WeComConfig`; secrets by `*_env` / `*_file`).
/// As a source it reads with the app's secret, as a sink it writes with the contact-sync
/// secret.
#[cfg(feature = "provider-wecom")]
#[async_trait]
impl Provider for idsync_wecom::WeComConfig {
    const TYPE: &'static str = "wecom";
    const SECRET_KEYS: &'static [&'static str] = &[
        "secret",
        "contact_secret",
        "callback.token",
        "callback.aes_key",
    ];

    async fn build(&self, _: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
        let c = wecom_resolved(self, ctx);
        match role {
            Role::Source => Ok(Built {
                source: Arc::new(idsync_wecom::source_from_config(&c)?),
                sink: None,
            }),
            Role::Sink => Ok(Built::both(idsync_wecom::sink_from_config(&c)?)),
        }
    }

    async fn serve_events(
        &self,
        _: &str,
        ctx: &BuildContext,
        inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError> {
        if self.callback.is_none() {
            return Ok(None);
        }
        Ok(ServedEvents::of(idsync_wecom::source_with_inbox(
            &wecom_resolved(self, ctx),
            inbox.events::<idsync_wecom::Target>(),
        )?))
    }
}

#[cfg(feature = "provider-wecom")]
fn wecom_resolved(
    cfg: &idsync_wecom::WeComConfig,
    ctx: &BuildContext,
) -> idsync_wecom::WeComConfig {
    let mut c = cfg.clone();
    for f in [&mut c.secret_file, &mut c.contact_secret_file] {
        ctx.resolve_opt(f);
    }
    if let Some(cb) = c.callback.as_mut() {
        ctx.resolve_opt(&mut cb.token_file);
        ctx.resolve_opt(&mut cb.aes_key_file);
    }
    c
}

/// `type = "lark"`: Lark / Feishu (`idsync_lark::LarkConfig`; the App Secret by
/// `app_secret_env` / `app_secret_file`; `brand = "feishu" | "lark"` or a private
/// deployment's `base_url`).
#[cfg(feature = "provider-lark")]
#[async_trait]
impl Provider for idsync_lark::LarkConfig {
    const TYPE: &'static str = "lark";

    async fn build(&self, _: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
        let c = lark_resolved(self, ctx);
        match role {
            Role::Source => Ok(Built {
                source: Arc::new(idsync_lark::source_from_config(&c)?),
                sink: None,
            }),
            Role::Sink => Ok(Built::both(idsync_lark::sink_from_config(&c)?)),
        }
    }

    async fn serve_events(
        &self,
        _: &str,
        ctx: &BuildContext,
        inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError> {
        if self.events.is_none() {
            return Ok(None);
        }
        Ok(ServedEvents::of(idsync_lark::source_with_inbox(
            &lark_resolved(self, ctx),
            inbox.events::<idsync_lark::Target>(),
        )?))
    }
}

/// The config with its secret files resolved against the config's folder.
#[cfg(feature = "provider-lark")]
fn lark_resolved(cfg: &idsync_lark::LarkConfig, ctx: &BuildContext) -> idsync_lark::LarkConfig {
    let mut c = cfg.clone();
    ctx.resolve_opt(&mut c.app_secret_file);
    if let Some(ev) = c.events.as_mut() {
        ctx.resolve_opt(&mut ev.verification_token_file);
        ctx.resolve_opt(&mut ev.encrypt_key_file);
    }
    c
}

/// `type = "scim"`: a SCIM 2.0 service provider the hub provisions
/// (`idsync_scim::TargetConfig`; bearer token or OAuth2 client credentials by reference).
#[cfg(feature = "provider-scim")]
#[async_trait]
impl Provider for idsync_scim::TargetConfig {
    const TYPE: &'static str = "scim";

    async fn build(&self, _: &str, ctx: &BuildContext, _: Role) -> Result<Built, CliError> {
        let mut c = self.clone();
        let base = &ctx.base_dir;
        match &mut c.auth {
            idsync_scim::AuthConfig::Bearer { token: r }
            | idsync_scim::AuthConfig::Oauth2 {
                client_secret: r, ..
            } => *r = r.clone().relative_to(base),
        }
        Ok(Built::both(idsync_scim::ScimClient::new(c)?))
    }
}

/// `type = "rest"`: any REST/JSON API (`idsync_rest::RestConfig`: base URL, auth with
/// secrets by `*_env` / `*_file`, per entity the listing, pagination, field pointers and
/// optional write endpoints). Secret files are resolved against the config's folder.
#[cfg(feature = "provider-rest")]
#[async_trait]
impl Provider for idsync_rest::RestConfig {
    const TYPE: &'static str = "rest";

    fn validate(&self) -> Vec<String> {
        self.problems()
    }

    fn can_sink(&self) -> bool {
        std::iter::once(&self.accounts)
            .chain(self.orgs.as_ref())
            .any(|e| e.create.is_some() || e.update.is_some() || e.delete.is_some())
    }

    async fn build(&self, _: &str, ctx: &BuildContext, _: Role) -> Result<Built, CliError> {
        let cfg = self.clone().relative_to(&ctx.base_dir);
        Ok(Built::both(idsync_rest::RestDirectory::new(cfg)?))
    }
}

/// `type = "webhook"`: a Standard Webhooks endpoint, push-only (`idsync_webhook::WebhookConfig`:
/// `url`, `secrets = [{ env = "VAR" }, { file = "path" }]`, `payload`, `retry_schedule`, ...).
/// Only a job's sink. It retries on its own schedule, so the `[request]` layers do not
/// wrap it; secret files are resolved against the config's folder.
#[cfg(feature = "provider-webhook")]
#[async_trait]
impl Provider for idsync_webhook::WebhookConfig {
    const TYPE: &'static str = "webhook";
    const LAYERED: bool = false;

    fn validate(&self) -> Vec<String> {
        self.problems()
    }

    async fn build(&self, _: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
        if role == Role::Source {
            return Err(CliError::Core(idsync_core::Error::config(
                "a webhook endpoint is push-only: it can be a job's target, not its source",
            )));
        }
        let cfg = self.clone().relative_to(&ctx.base_dir);
        // Full payloads of updates carry the whole entity, looked up in the hub.
        let mut sink = idsync_webhook::WebhookSink::new(cfg)?
            .with_lookup(Arc::new(Hub::new(ctx.store.clone())));
        if let Some(m) = ctx.metrics.clone() {
            sink = sink.with_observer(move |endpoint: &str, o: idsync_webhook::DeliveryOutcome| {
                m.webhook_delivery(endpoint, o.as_str())
            });
        }
        Ok(Built::both(sink))
    }
}

/// A `[providers.NAME]` table: its `type`'s settings and the request layers.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The settings of the provider type.
    pub settings: Arc<dyn ProviderSettings>,
    /// `[providers.NAME.request]`.
    pub request: RequestConfig,
}

impl<'de> Deserialize<'de> for ProviderConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut t = toml::Table::deserialize(d)?;
        let ty = match t.remove("type") {
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`type` must be a string, not a {}",
                    other.type_str()
                )));
            }
            None => return Err(D::Error::custom("missing field `type`")),
        };
        let request = match t.remove("request") {
            Some(v) => v
                .try_into::<RequestConfig>()
                .map_err(|e| D::Error::custom(format!("request: {}", e.message().trim_end())))?,
            None => RequestConfig::default(),
        };
        let reg = registry();
        let Some(r) = reg.iter().find(|r| r.type_name == ty) else {
            let names: Vec<&str> = reg.iter().map(|r| r.type_name).collect();
            return Err(D::Error::custom(format!(
                "unknown provider type `{ty}`, expected one of {}",
                names.join(", ")
            )));
        };
        let settings = (r.parse)(t).map_err(D::Error::custom)?;
        Ok(ProviderConfig { settings, request })
    }
}

impl ProviderConfig {
    /// The implicit hub.
    pub fn hub() -> Self {
        ProviderConfig {
            settings: Arc::new(HubConfig {}),
            request: RequestConfig::default(),
        }
    }

    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        self.settings.type_name()
    }

    /// Whether it can be a job's sink.
    pub fn can_sink(&self) -> bool {
        self.settings.can_sink()
    }

    /// Whether it can be a job's source.
    pub fn can_source(&self) -> bool {
        true
    }

    /// Problems serde cannot see.
    pub fn validate(&self) -> Vec<String> {
        let mut out = self.settings.validate();
        out.extend(self.request.validate());
        if !self.settings.layered() && self.request != RequestConfig::default() {
            out.push(format!(
                "`request` does not apply to {} providers (they are local)",
                self.type_name()
            ));
        }
        out
    }
}

/// `[providers.NAME.request]`: the layers every call to a remote provider goes through.
///
/// Inside out: a timeout per attempt, the rate limit (by default the one the adapter
/// declares), retries of temporary errors with exponential backoff and full jitter
/// (honouring the provider's `retry_after`), a bound on calls in flight, and tracing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Seconds one attempt may take (default 30).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Attempts in all, the first included (default 4; 1 turns retries off).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The first backoff in milliseconds, doubled per retry (default 200).
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// The longest backoff in milliseconds (default 30000).
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    /// `{ requests = 20, per_secs = 1 }`; default: what the adapter declares.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Calls in flight at most (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// `rate_limit = { requests = 20, per_secs = 1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed...
    pub requests: u32,
    /// ...per this many seconds (default 1).
    #[serde(default = "one_sec")]
    pub per_secs: f64,
}

fn one_sec() -> f64 {
    1.0
}

impl RequestConfig {
    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = self.timeout_secs
            && !(t.is_finite() && t > 0.0)
        {
            out.push("request.timeout_secs must be a positive number".into());
        }
        if self.attempts == Some(0) {
            out.push("request.attempts must be at least 1".into());
        }
        if self.concurrency == Some(0) {
            out.push("request.concurrency must be at least 1".into());
        }
        if let Some(r) = self.rate_limit
            && (r.requests == 0 || !(r.per_secs.is_finite() && r.per_secs > 0.0))
        {
            out.push("request.rate_limit needs requests >= 1 and per_secs > 0".into());
        }
        out
    }

    /// The layer stack, inside out: timeout, rate limit, retry, concurrency, tracing.
    pub fn stack(&self) -> Stack {
        let timeout = Duration::from_secs_f64(self.timeout_secs.unwrap_or(30.0).max(0.001));
        let rate = match self.rate_limit {
            Some(r) => RateLimitLayer::new(RateLimit {
                requests: r.requests.max(1),
                per: Duration::from_secs_f64(r.per_secs.max(0.001)),
            }),
            None => RateLimitLayer::from_capabilities(),
        };
        let initial = Duration::from_millis(self.backoff_ms.unwrap_or(200));
        let max = Duration::from_millis(self.max_backoff_ms.unwrap_or(30_000));
        let mut retry = RetryLayer::new().with_backoff(initial, max);
        if let Some(n) = self.attempts {
            retry = retry.with_max_attempts(n);
        }
        Stack::new()
            .push(TimeoutLayer::new(timeout))
            .push(rate)
            .push(retry)
            .push(ConcurrencyLimitLayer::new(
                self.concurrency.unwrap_or(8).max(1),
            ))
            .push(TracingLayer::new())
    }
}

/// What a job needs a provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read from.
    Source,
    /// Written to.
    Sink,
}

/// `type = "hub"`: the hub directory of the configured store. Takes no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {}

#[async_trait]
impl Provider for HubConfig {
    const TYPE: &'static str = "hub";
    const LAYERED: bool = false;
    async fn build(&self, _: &str, ctx: &BuildContext, _: Role) -> Result<Built, CliError> {
        let hub = Arc::new(Hub::new(ctx.store.clone()));
        Ok(Built {
            source: hub.clone(),
            sink: Some(Target::Hub(hub)),
        })
    }
}

/// `type = "memory"`: a directory held in memory for the length of one command.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Generated sample data: `{ orgs = 20, accounts = 200 }`.
    #[serde(default)]
    pub generate: Option<GenerateConfig>,
    /// Inline orgs.
    #[serde(default)]
    pub orgs: Vec<InlineOrg>,
    /// Inline accounts.
    #[serde(default)]
    pub accounts: Vec<InlineAccount>,
    /// Assign new anchors to created entities, as most SaaS directories do.
    #[serde(default)]
    pub assign_anchors: bool,
    /// Cap the page size (to exercise paging).
    #[serde(default)]
    pub max_page_size: Option<usize>,
}

/// How much sample data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Number of orgs (one root, divisions, teams).
    pub orgs: usize,
    /// Number of accounts, spread over the teams.
    pub accounts: usize,
}

/// An org written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineOrg {
    /// Anchor.
    pub anchor: String,
    /// Parent anchor.
    #[serde(default)]
    pub parent: Option<String>,
    /// Name.
    pub name: String,
    /// Sort order.
    #[serde(default)]
    pub order: Option<i64>,
    /// Attributes.
    #[serde(default)]
    pub attrs: BTreeMap<String, Value>,
}

/// An account written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineAccount {
    /// Anchor.
    pub anchor: String,
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Employee number.
    #[serde(default)]
    pub employee_id: Option<String>,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Org anchors, primary first.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// Manager's anchor.
    #[serde(default)]
    pub manager: Option<String>,
    /// `active` (default) or `disabled`.
    #[serde(default)]
    pub status: Status,
    /// Attributes.
    #[serde(default)]
    pub attrs: BTreeMap<String, Value>,
}

impl From<&InlineOrg> for Org {
    fn from(o: &InlineOrg) -> Self {
        Org {
            anchor: o.anchor.as_str().into(),
            parent: o.parent.as_deref().map(Anchor::from),
            name: o.name.clone(),
            order: o.order,
            attrs: o.attrs.clone(),
        }
    }
}

impl From<&InlineAccount> for Account {
    fn from(a: &InlineAccount) -> Self {
        Account {
            anchor: a.anchor.as_str().into(),
            username: a.username.clone(),
            display_name: a.display_name.clone(),
            email: a.email.clone(),
            phone: a.phone.clone(),
            employee_id: a.employee_id.clone(),
            title: a.title.clone(),
            orgs: a.orgs.iter().map(Anchor::from).collect(),
            manager: a.manager.as_deref().map(Anchor::from),
            status: a.status,
            attrs: a.attrs.clone(),
        }
    }
}

#[async_trait]
impl Provider for MemoryConfig {
    const TYPE: &'static str = "memory";
    const LAYERED: bool = false;

    fn validate(&self) -> Vec<String> {
        let m = self;
        let mut out = Vec::new();
        if m.generate.is_some() && (!m.orgs.is_empty() || !m.accounts.is_empty()) {
            out.push("give either `generate` or inline `orgs`/`accounts`, not both".into());
        }
        if let Some(g) = m.generate
            && g.orgs == 0
            && g.accounts > 0
        {
            out.push("generate: accounts need at least one org".into());
        }
        if m.max_page_size == Some(0) {
            out.push("max_page_size must be at least 1".into());
        }
        if m.generate.is_none() {
            let orgs: Vec<Org> = m.orgs.iter().map(Org::from).collect();
            let accounts: Vec<Account> = m.accounts.iter().map(Account::from).collect();
            for p in idsync_core::model::check(&orgs, &accounts) {
                out.push(p.to_string());
            }
        }
        out
    }

    async fn build(&self, name: &str, _: &BuildContext, _: Role) -> Result<Built, CliError> {
        let (orgs, accounts) = match self.generate {
            Some(g) => sample_directory(g.orgs, g.accounts),
            None => (
                self.orgs.iter().map(Org::from).collect(),
                self.accounts.iter().map(Account::from).collect(),
            ),
        };
        let mut a = MemoryAdapter::with_data(name, orgs, accounts);
        if self.assign_anchors {
            a = a.assigning_anchors();
        }
        if let Some(n) = self.max_page_size {
            a = a.with_max_page_size(n);
        }
        Ok(Built::both(a))
    }
}

/// `type = "csv"`: paths are relative to the config file's folder.
#[cfg(feature = "provider-csv")]
#[async_trait]
impl Provider for idsync_csv::CsvConfig {
    const TYPE: &'static str = "csv";

    fn validate(&self) -> Vec<String> {
        match idsync_csv::CsvConfig::validate(self) {
            Ok(()) => Vec::new(),
            Err(e) => vec![e.message().to_owned()],
        }
    }

    async fn build(&self, _: &str, ctx: &BuildContext, role: Role) -> Result<Built, CliError> {
        let mut c = self.clone();
        c.accounts = ctx.resolve(&c.accounts);
        c.orgs = c.orgs.as_deref().map(|p| ctx.resolve(p));
        match role {
            Role::Source => Ok(Built {
                source: Arc::new(idsync_csv::CsvSource::open(c)?),
                sink: None,
            }),
            Role::Sink => Ok(Built::both(idsync_csv::CsvSink::open(c)?)),
        }
    }
}

/// `type = "ldap"`: `idsync_ldap::LdapConfig`, with `bind_password_env` or
/// `bind_password_file` (never `bind_password`); the password is read when it is built.
#[cfg(feature = "provider-ldap")]
#[async_trait]
impl Provider for idsync_ldap::LdapConfig {
    const TYPE: &'static str = "ldap";
    const SECRET_KEYS: &'static [&'static str] = &["bind_password"];

    fn validate(&self) -> Vec<String> {
        match idsync_ldap::LdapConfig::validate(self) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("ldap: {}", e.message())],
        }
    }

    async fn build(&self, _: &str, ctx: &BuildContext, _: Role) -> Result<Built, CliError> {
        let mut c = self.clone();
        ctx.resolve_opt(&mut c.bind_password_file);
        Ok(Built::both(idsync_ldap::LdapDirectory::new(c)?))
    }
}

/// `type = "dingtalk"`: `idsync_dingtalk::DingTalkConfig`, with `app_secret_env` or
/// `app_secret_file`; callback `token_env`/`token_file`, `aes_key_env`/`aes_key_file`.
#[cfg(feature = "provider-dingtalk")]
#[async_trait]
impl Provider for idsync_dingtalk::DingTalkConfig {
    const TYPE: &'static str = "dingtalk";
    const SECRET_KEYS: &'static [&'static str] =
        &["app_secret", "callback.token", "callback.aes_key"];

    fn validate(&self) -> Vec<String> {
        match idsync_dingtalk::DingTalkConfig::validate(self) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("dingtalk: {}", e.message())],
        }
    }

    async fn build(&self, _: &str, ctx: &BuildContext, _: Role) -> Result<Built, CliError> {
        let mut cfg = dingtalk_resolved(self, ctx);
        // one read of the secrets for both sides
        cfg.read_secrets()?;
        let source = idsync_dingtalk::DingTalkSource::new(cfg.clone())?;
        let sink = idsync_dingtalk::DingTalkSink::new(cfg)?;
        Ok(Built {
            source: Arc::new(source),
            sink: Some(Arc::new(sink).into()),
        })
    }

    async fn serve_events(
        &self,
        _: &str,
        ctx: &BuildContext,
        inbox: &Inbox,
    ) -> Result<Option<ServedEvents>, CliError> {
        if self.callback.is_none() {
            return Ok(None);
        }
        // source_with_inbox reads the secrets
        Ok(ServedEvents::of(idsync_dingtalk::source_with_inbox(
            &dingtalk_resolved(self, ctx),
            inbox.events::<idsync_dingtalk::callback::EventTarget>(),
        )?))
    }
}

/// The config with its secret files resolved against the config's folder.
#[cfg(feature = "provider-dingtalk")]
fn dingtalk_resolved(
    cfg: &idsync_dingtalk::DingTalkConfig,
    ctx: &BuildContext,
) -> idsync_dingtalk::DingTalkConfig {
    let mut cfg = cfg.clone();
    ctx.resolve_opt(&mut cfg.app_secret_file);
    if let Some(cb) = cfg.callback.as_mut() {
        ctx.resolve_opt(&mut cb.token_file);
        ctx.resolve_opt(&mut cb.aes_key_file);
    }
    cfg
}

/// A built provider: always a source, a sink when it takes writes.
#[derive(Debug, Clone)]
pub struct Built {
    /// As a source.
    pub source: Arc<dyn Source>,
    /// As a job's target.
    pub sink: Option<Target>,
}

impl Built {
    /// A provider that is both source and sink.
    pub fn both<T: Sink + 'static>(t: T) -> Built {
        let t = Arc::new(t);
        Built {
            source: t.clone(),
            sink: Some(Target::Sink(t)),
        }
    }
}

/// What building a provider needs.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The store (the hub lives in it).
    pub store: Arc<dyn Store>,
    /// The folder relative paths are resolved against (the config file's folder).
    pub base_dir: std::path::PathBuf,
    /// `idsync serve`'s metrics registry (webhook deliveries count into it).
    pub metrics: Option<idsync_serve::ops::Metrics>,
}

impl BuildContext {
    /// A path from the config, resolved against the config's folder.
    pub fn resolve(&self, p: &Path) -> std::path::PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// [`resolve`](Self::resolve) in place, for an optional path (a `*_file` secret).
    pub fn resolve_opt(&self, p: &mut Option<std::path::PathBuf>) {
        if let Some(path) = p.as_mut() {
            *path = self.resolve(path);
        }
    }
}

/// Build a provider for a role and wrap it in its layers. Secrets are read here, from the
/// environment or files.
pub async fn build(
    name: &str,
    cfg: &ProviderConfig,
    ctx: &BuildContext,
    role: Role,
) -> Result<Built, CliError> {
    // A setting or secret reference that is wrong is a config error naming the provider.
    let built = cfg
        .settings
        .build(name, ctx, role)
        .await
        .map_err(|e| match e {
            CliError::Core(e) if e.kind() == idsync_core::ErrorKind::ConfigInvalid => {
                CliError::config(ConfigError::new(format!(
                    "provider {name}: {}",
                    e.message()
                )))
            }
            other => other,
        })?;
    if !cfg.settings.layered() {
        return Ok(built);
    }
    let stack = cfg.request.stack();
    Ok(Built {
        source: stack.source(built.source),
        sink: built.sink.map(|t| match t {
            Target::Sink(s) => Target::Sink(stack.sink(s)),
            // The hub is written by the engine with its records: never wrapped.
            hub => hub,
        }),
    })
}

/// A source built another way (`serve_events`) wrapped in the provider's layers, as
/// [`build`] wraps its sources.
pub fn layered(cfg: &ProviderConfig, source: Arc<dyn Source>) -> Arc<dyn Source> {
    if cfg.settings.layered() {
        cfg.request.stack().source(source)
    } else {
        source
    }
}

const FIRST: &[&str] = &[
    "Alice", "Bao", "Carlos", "Dilnoza", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Jia",
    "Kwame", "Lena", "Mateo", "Nadia", "Oren", "Priya", "Quentin", "Rosa", "Sven", "Tomoko",
];
const LAST: &[&str] = &[
    "Chen", "Okafor", "Silva", "Novak", "Haddad", "Larsen", "Tanaka", "Müller", "Kowalski",
    "Nguyen", "Ibrahim", "Rossi", "Petrov", "Kim", "Dubois", "Singh", "Garcia", "Wang", "Ali",
    "Berg",
];
const DIVISIONS: &[&str] = &["Engineering", "Sales", "Operations", "Finance"];
const TITLES: &[&str] = &[
    "Engineer",
    "Analyst",
    "Specialist",
    "Coordinator",
    "Consultant",
];

/// Deterministic sample data: one root org, up to four divisions, teams below them, and
/// accounts spread over the teams (the first member of a team is its lead and the manager
/// of the others). Account `i` is the same whatever the total, so shrinking `accounts`
/// looks like people leaving.
pub fn sample_directory(n_orgs: usize, n_accounts: usize) -> (Vec<Org>, Vec<Account>) {
    let mut orgs = Vec::with_capacity(n_orgs);
    for i in 0..n_orgs {
        let anchor = format!("d{i:03}");
        let org = if i == 0 {
            Org::new(anchor, None, "Acme Corp")
        } else if i <= DIVISIONS.len() {
            Org::new(anchor, Some("d000".into()), DIVISIONS[i - 1])
        } else {
            let n_div = DIVISIONS.len().min(n_orgs - 1);
            let div = (i - DIVISIONS.len() - 1) % n_div + 1;
            let team = (i - DIVISIONS.len() - 1) / n_div + 1;
            Org::new(
                anchor,
                Some(format!("d{div:03}").into()),
                format!("{} Team {team}", DIVISIONS[div - 1]),
            )
        };
        orgs.push(org);
    }
    // Accounts go to the leaves (teams), or to whatever orgs there are.
    let leaves: Vec<Anchor> = if n_orgs > DIVISIONS.len() + 1 {
        orgs[DIVISIONS.len() + 1..]
            .iter()
            .map(|o| o.anchor.clone())
            .collect()
    } else {
        orgs.iter().map(|o| o.anchor.clone()).collect()
    };
    let mut accounts = Vec::with_capacity(n_accounts);
    if leaves.is_empty() {
        return (orgs, accounts);
    }
    for i in 1..=n_accounts {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        let round = i / (FIRST.len() * LAST.len());
        let mut username = format!("{}.{}", first.to_lowercase(), ascii_fold(last));
        if round > 0 {
            username.push_str(&round.to_string());
        }
        let mut a = Account::new(format!("u{i:04}"), username.clone());
        a.display_name = Some(format!("{first} {last}"));
        a.email = Some(format!("{username}@example.com"));
        a.employee_id = Some(format!("E{i:05}"));
        a.phone = Some(format!("+1-555-{:04}", i % 10_000));
        let slot = (i - 1) % leaves.len();
        a.orgs = vec![leaves[slot].clone()];
        let lead = slot + 1;
        if lead != i {
            a.manager = Some(format!("u{lead:04}").into());
            a.title = Some(TITLES[i % TITLES.len()].to_owned());
        } else {
            a.title = Some("Team Lead".to_owned());
        }
        accounts.push(a);
    }
    (orgs, accounts)
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ü' => 'u',
            'ö' => 'o',
            'ä' => 'a',
            c => c,
        })
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_data_is_valid_and_stable() {
        let (orgs, accounts) = sample_directory(20, 200);
        assert_eq!(orgs.len(), 20);
        assert_eq!(accounts.len(), 200);
        assert!(idsync_core::model::check(&orgs, &accounts).is_empty());
        let mut names: Vec<&str> = accounts.iter().map(|a| a.username.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 200, "usernames are unique");
        let (_, fewer) = sample_directory(20, 100);
        assert_eq!(
            fewer[..],
            accounts[..100],
            "account i does not depend on the total"
        );
        assert!(idsync_core::model::check(&orgs, &fewer).is_empty());
        for (o, a) in [(1, 5), (3, 10), (0, 0), (7, 1000)] {
            let (orgs, accounts) = sample_directory(o, a);
            assert!(
                idsync_core::model::check(&orgs, &accounts).is_empty(),
                "{o} {a}"
            );
        }
    }

    #[cfg(any(
        feature = "provider-ldap",
        feature = "provider-dingtalk",
        feature = "provider-rest",
        feature = "provider-webhook",
        feature = "provider-lark"
    ))]
    fn ctx() -> BuildContext {
        BuildContext {
            store: Arc::new(idsync_core::MemoryStore::new()),
            base_dir: ".".into(),
            metrics: None,
        }
    }

    #[cfg(feature = "provider-webhook")]
    #[tokio::test]
    async fn webhook_provider_builds_as_a_sink_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hook-secret"),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        )
        .unwrap();
        let text = "[providers.crm]\ntype = \"webhook\"\n\
             url = \"https://crm.example/hooks/idsync?token=QSECRET\"\n\
             secrets = [{ file = \"hook-secret\" }]\npayload = \"full\"\n\
             retry_schedule = [\"0s\", \"5s\", \"5m\"]\n";
        let cfg = crate::Config::parse(&dir.path().join("t.toml"), text.to_owned()).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let p = cfg.provider("crm").unwrap();
        let ctx = BuildContext {
            base_dir: dir.path().to_owned(),
            ..ctx()
        };
        let built = build("crm", &p, &ctx, Role::Sink).await.unwrap();
        assert!(built.sink.is_some());
        assert_eq!(built.source.describe().provider, "webhook");
        assert!(!built.source.capabilities().readable);
        // (the Config's own Debug shows the file's text; the provider's never the query)
        let debug = format!("{built:?} {p:?}");
        assert!(
            !debug.contains("MfKQ9r8") && !debug.contains("QSECRET"),
            "{debug}"
        );
        assert!(build("crm", &p, &ctx, Role::Source).await.is_err());
        // a secret written in the config is refused (secrets go by reference)
        let text = "[providers.crm]\ntype = \"webhook\"\nurl = \"https://crm.example/h\"\n\
             secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n";
        let e = crate::Config::parse(&dir.path().join("t.toml"), text.to_owned()).unwrap_err();
        assert!(!e.to_string().contains("MfKQ9r8"), "{e}");
    }

    #[cfg(feature = "provider-lark")]
    #[tokio::test]
    async fn lark_secret_files_are_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lark-secret"), "lark-app-secret\n").unwrap();
        std::fs::write(dir.path().join("lark-vt"), "verification-token\n").unwrap();
        let text = "[providers.lk]\ntype = \"lark\"\napp_id = \"cli_x\"\n\
             app_secret_file = \"lark-secret\"\n\
             events = { verification_token_file = \"lark-vt\" }\n";
        let cfg = crate::Config::parse(&dir.path().join("t.toml"), text.to_owned()).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let p = cfg.provider("lk").unwrap();
        // from another working folder, the files are found next to the config
        let ctx = BuildContext {
            base_dir: dir.path().to_owned(),
            ..ctx()
        };
        let built = build("lk", &p, &ctx, Role::Sink).await.unwrap();
        assert!(built.sink.is_some());
        let store: Arc<dyn Store> = Arc::new(idsync_core::MemoryStore::new());
        let inbox = Inbox::new(store, "lark:lk", idsync_serve::ops::Metrics::new());
        let served = p.settings.serve_events("lk", &ctx, &inbox).await.unwrap();
        assert!(served.is_some());
        // without the folder, the relative file is not found: the error names it
        let e = build("lk", &p, &self::ctx(), Role::Sink)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("lark-secret"), "{e}");
    }

    #[cfg(feature = "provider-rest")]
    #[tokio::test]
    async fn rest_provider_builds_with_a_secret_file_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hr-token"), "sekrit-rest-token\n").unwrap();
        let text = "[providers.hr]\ntype = \"rest\"\nbase_url = \"http://127.0.0.1:9/api\"\n\
             [providers.hr.auth]\ntype = \"bearer\"\ntoken_file = \"hr-token\"\n\
             [providers.hr.accounts]\npath = \"/people\"\n\
             update = { path = \"/people/{anchor}\" }\n\
             [providers.hr.accounts.fields]\nanchor = \"/id\"\nusername = \"/login\"\n";
        let cfg = crate::Config::parse(&dir.path().join("t.toml"), text.to_owned()).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let p = cfg.provider("hr").unwrap();
        let ctx = BuildContext {
            base_dir: dir.path().to_owned(),
            ..ctx()
        };
        let built = build("hr", &p, &ctx, Role::Sink).await.unwrap();
        assert!(built.sink.is_some());
        assert_eq!(built.source.describe().provider, "rest");
        let debug = format!("{built:?} {cfg:?} {p:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        // a missing anchor pointer is named by `validate`
        let bad = text.replace("anchor = \"/id\"\n", "");
        let cfg = crate::Config::parse(&dir.path().join("t.toml"), bad).unwrap();
        let problems = format!("{:?}", cfg.validate());
        assert!(problems.contains("anchor"), "{problems}");
    }

    #[cfg(feature = "provider-ldap")]
    #[tokio::test]
    async fn ldap_password_stays_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "sekrit-ldap-pw\n").unwrap();
        let text = format!(
            "[providers.ad]\ntype = \"ldap\"\nurl = \"ldap://127.0.0.1:9\"\n\
             base_dn = \"dc=example,dc=org\"\nbind_dn = \"cn=admin\"\nallow_plaintext = true\n\
             bind_password_file = {:?}\n",
            pw.display().to_string()
        );
        let cfg = crate::Config::parse(Path::new("t.toml"), text).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let p = cfg.provider("ad").unwrap();
        let built = build("ad", &p, &ctx(), Role::Source).await.unwrap();
        let debug = format!("{built:?} {cfg:?} {p:?}");
        assert!(debug.contains("ldap://127.0.0.1:9"), "{debug}");
        assert!(!debug.contains("sekrit"), "{debug}");
    }

    #[cfg(feature = "provider-dingtalk")]
    #[tokio::test]
    async fn dingtalk_secrets_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str, v: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, v).unwrap();
            p.display().to_string()
        };
        let text = format!(
            "[providers.dt]\ntype = \"dingtalk\"\napp_key = \"dingabc\"\n\
             app_secret_file = {:?}\n[providers.dt.callback]\ntoken_file = {:?}\n\
             aes_key_file = {:?}\n",
            f("s", "sekrit-app-secret"),
            f("t", "sekrit-token"),
            f("a", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        );
        let cfg = crate::Config::parse(Path::new("t.toml"), text).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let p = cfg.provider("dt").unwrap();
        let built = build("dt", &p, &ctx(), Role::Source).await.unwrap();
        let debug = format!("{built:?} {cfg:?}");
        assert!(debug.contains("dingabc"), "{debug}");
        assert!(!debug.contains("sekrit"), "{debug}");
        assert!(!debug.contains("abcdefghij"), "{debug}");

        // Written inline, a secret is refused, at the provider's table.
        for (table, key) in [
            ("app_secret = \"x\"\n", "app_secret_env"),
            ("[providers.dt.callback]\ntoken = \"x\"\n", "token_env"),
        ] {
            let e = crate::Config::parse(
                Path::new("t.toml"),
                format!("[providers.dt]\ntype = \"dingtalk\"\napp_key = \"k\"\n{table}"),
            )
            .unwrap_err();
            assert!(e.message.contains(key), "{e}");
            assert!(e.message.contains("not written in the config"), "{e}");
            assert!(e.position.is_some(), "{e}");
        }
    }
}
