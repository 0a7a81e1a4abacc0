//! [`WebhookSink`]: every operation becomes one signed delivery to one endpoint.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use idsync_core::{
    Account, Anchor, Applied, Capabilities, Clock, Descriptor, EntityKind, Error, ErrorKind, Op,
    Org, Page, PageRequest, Result, Sink, Source, SystemClock,
};
use idsync_http::breaker::Breaker;
use idsync_http::{HttpError, HttpSettings, JsonClient, Method, Request, header};

use crate::config::{PayloadMode, WebhookConfig};
use crate::signer::Signer;

/// The provider name in errors and descriptors.
pub const PROVIDER: &str = "webhook";

/// What happened to one delivery attempt or one delivery, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx: the op is applied.
    Delivered,
    /// An attempt failed with a temporary error; another one follows.
    Retried,
    /// The delivery failed for good (the schedule is spent, or a permanent refusal).
    Failed,
    /// The endpoint answered `410 Gone`: it is disabled, later ops fail fast.
    Disabled,
    /// The circuit breaker is open: the delivery was not attempted.
    Quarantined,
}

impl DeliveryOutcome {
    /// The stable name: `delivered`, `retried`, `failed`, `disabled`, `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retried => "retried",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Disabled => "disabled",
            DeliveryOutcome::Quarantined => "quarantined",
        }
    }
}

/// Told about every outcome ([`DeliveryOutcome`]) with the endpoint's name: the hook a
/// metrics registry counts through (e.g. `idsync_serve::ops::Metrics::webhook_delivery`).
/// A closure `Fn(&str, DeliveryOutcome)` is one.
pub trait DeliveryObserver: Send + Sync + 'static {
    /// One outcome of endpoint `endpoint`.
    fn observe(&self, endpoint: &str, outcome: DeliveryOutcome);
}

impl<F> DeliveryObserver for F
where
    F: Fn(&str, DeliveryOutcome) + Send + Sync + 'static,
{
    fn observe(&self, endpoint: &str, outcome: DeliveryOutcome) {
        self(endpoint, outcome)
    }
}

/// Counts of outcomes since the sink was made ([`WebhookSink::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Deliveries that failed for good.
    pub failed: u64,
    /// `410 Gone` answers (the endpoint was disabled).
    pub disabled: u64,
    /// Deliveries refused by the open breaker or the disabled endpoint, unattempted.
    pub quarantined: u64,
}

/// One Standard Webhooks endpoint as a push-only [`Sink`].
///
/// Its capabilities say it cannot be read (`readable: false`), so the engine diffs against
/// the store's shadow copy of what was delivered. Each op is one delivery:
///
/// * headers `webhook-id` (`msg_<uuid>`, the same for every attempt of the op),
///   `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`
///   (`v1,<base64 HMAC-SHA256>` per secret, [`Signer`]);
/// * body `{"type": "account.created", "timestamp": "<RFC 3339>", "data": {...}}`, event
///   types `org.created|updated|moved|deleted` and
///   `account.created|updated|disabled|enabled|deleted`; `data` is `{kind, anchor, op,
///   version}` (thin) plus `entity` / `changes` / `parent` (full, [`PayloadMode`]);
///   `version` is the sink's delivery clock in milliseconds, growing with every delivery;
/// * attempts on the [retry schedule](WebhookConfig::retry_schedule) with jitter while the
///   errors are temporary (transport failures, 408, 429, 5xx; `Retry-After` honoured up to
///   [`max_retry_after`](WebhookConfig::max_retry_after)); other statuses fail at once;
/// * `410 Gone` disables the endpoint: this op and every later one fail with a permanent
///   error naming the endpoint (never its query string);
/// * a circuit breaker ([`idsync_http::breaker`]) counts attempts: when most recent ones
///   failed, deliveries fail fast with a temporary error until the cool-down has passed.
///
/// The sink retries itself: do not wrap it in a retry or timeout layer.
pub struct WebhookSink {
    cfg: WebhookConfig,
    name: String,
    /// The URL without query or user info: the only form errors and logs show.
    display: String,
    client: JsonClient,
    path: String,
    query: Vec<(String, SecretString)>,
    signer: Signer,
    breaker: Breaker,
    disabled: AtomicBool,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn DeliveryObserver>>,
    lookup: Option<Arc<dyn Source>>,
    version: AtomicU64,
    stats: Mutex<DeliveryStats>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("url", &self.display)
            .field("payload", &self.cfg.payload)
            .field("signer", &self.signer)
            .field("disabled", &self.disabled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A sink for `cfg`; reads the secrets now.
    pub fn new(cfg: WebhookConfig) -> Result<Self> {
        let secrets = cfg
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| s.read(&format!("webhook secrets[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let signer = Signer::new(&secrets, "webhook secrets")?;
        Self::with_signer(cfg, signer)
    }

    /// A sink for `cfg` that signs with `signer` (secrets held elsewhere; `cfg.secrets`
    /// is not read).
    pub fn with_signer(cfg: WebhookConfig, signer: Signer) -> Result<Self> {
        cfg.validated(false)?;
        let url = reqwest::Url::parse(cfg.url.trim())
            .map_err(|_| Error::config("webhook url: not a URL").with_provider(PROVIDER))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::config(
                "webhook url: must not carry user info (the signature authenticates)",
            )
            .with_provider(PROVIDER));
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let origin = match url.port() {
            Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("")),
            None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
        };
        let display = format!("{origin}{}", url.path());
        let mut settings = HttpSettings::new(origin);
        settings.allow_plaintext = cfg.allow_plaintext;
        settings.timeout = cfg.timeout.max(Duration::from_millis(1));
        settings.connect_timeout = settings.timeout.min(Duration::from_secs(10));
        settings.max_body_bytes = 64 * 1024;
        let client = JsonClient::new(PROVIDER, &settings, |_: u16, v: Value| Ok(v))
            .map_err(|e| Error::config(format!("webhook url {display}: {}", e.message())))?;
        let query = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), SecretString::from(v.into_owned())))
            .collect();
        Ok(WebhookSink {
            name: cfg.name.clone().unwrap_or(host),
            display,
            path: url.path().to_owned(),
            query,
            client,
            signer,
            breaker: Breaker::new(cfg.breaker),
            disabled: AtomicBool::new(false),
            clock: Arc::new(SystemClock),
            observer: None,
            lookup: None,
            version: AtomicU64::new(0),
            stats: Mutex::new(DeliveryStats::default()),
            cfg,
        })
    }

    /// Timestamps from `clock` (the `webhook-timestamp` header must be close to the
    /// receiver's clock: the reference libraries refuse more than 5 minutes off).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tells `observer` every outcome (metrics).
    pub fn with_observer(mut self, observer: impl DeliveryObserver) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Full payloads of updates, moves, disables and enables carry the whole entity, looked
    /// up by the op's anchor in `lookup` (the hub, in a hub → webhook job). A lookup that
    /// fails fails the op (temporary errors stay temporary).
    pub fn with_lookup(mut self, lookup: Arc<dyn Source>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// The endpoint's name (metrics label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint URL without its query string.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// True once the endpoint answered `410 Gone`.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Enables a disabled endpoint again (an operator fixed the receiver).
    pub fn reenable(&self) {
        self.disabled.store(false, Ordering::Relaxed);
    }

    /// Counts of outcomes so far.
    pub fn stats(&self) -> DeliveryStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe(&self, outcome: DeliveryOutcome) {
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                DeliveryOutcome::Delivered => s.delivered += 1,
                DeliveryOutcome::Retried => s.retried += 1,
                DeliveryOutcome::Failed => s.failed += 1,
                DeliveryOutcome::Disabled => s.disabled += 1,
                DeliveryOutcome::Quarantined => s.quarantined += 1,
            }
        }
        if let Some(o) = &self.observer {
            o.observe(&self.name, outcome);
        }
    }

    fn sink_capabilities(&self) -> Capabilities {
        Capabilities {
            orgs: self.cfg.orgs,
            readable: false,
            changes: false,
            create: true,
            update: true,
            disable: true,
            delete: true,
            move_org: true,
            assigns_anchors: false,
            max_page_size: None,
            rate_limit: None,
            ..Capabilities::read_write()
        }
    }

    fn unreadable(&self) -> Error {
        Error::unsupported(format!(
            "webhook endpoint {} is push-only: it cannot be listed or looked up (the engine \
             diffs against the store's shadow copy)",
            self.display
        ))
        .with_provider(PROVIDER)
    }

    fn disabled_error(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "webhook endpoint {} is disabled: it answered 410 Gone; fix the receiver and \
                 re-enable it (a new sink, or `reenable`)",
                self.display
            ),
        )
        .with_provider(PROVIDER)
        .with_provider_code("410")
        .permanent()
    }

    fn next_version(&self) -> u64 {
        let now = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0);
        let mut prev = self.version.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self
                .version
                .compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    async fn looked_up(&self, kind: EntityKind, anchor: &Anchor) -> Result<Option<Value>> {
        let Some(src) = &self.lookup else {
            return Ok(None);
        };
        let v = match kind {
            EntityKind::Org => src.org(anchor).await?.map(serde_json::to_value),
            EntityKind::Account => src.account(anchor).await?.map(serde_json::to_value),
        };
        v.transpose().map_err(Error::from)
    }

    /// The event type and `data` of `op`.
    async fn event(&self, op: &Op) -> Result<(String, Value)> {
        let kind = op.entity();
        let (noun, verb) = event_name(op);
        let anchor = op.anchor().clone();
        let mut data = Map::new();
        data.insert("kind".into(), json!(noun));
        data.insert("anchor".into(), json!(anchor));
        data.insert("op".into(), json!(op.kind().as_str()));
        data.insert("version".into(), json!(self.next_version()));
        if self.cfg.payload == PayloadMode::Full {
            match op {
                Op::CreateOrg { org } => {
                    data.insert("entity".into(), serde_json::to_value(org)?);
                }
                Op::CreateAccount { account } => {
                    data.insert("entity".into(), serde_json::to_value(account)?);
                }
                Op::UpdateOrg { changes, .. } | Op::UpdateAccount { changes, .. } => {
                    data.insert("changes".into(), serde_json::to_value(changes)?);
                }
                Op::MoveOrg { parent, .. } => {
                    data.insert("parent".into(), json!(parent));
                }
                _ => {}
            }
            if !op.is_create()
                && !matches!(op, Op::DeleteOrg { .. } | Op::DeleteAccount { .. })
                && let Some(e) = self.looked_up(kind, &anchor).await?
            {
                data.insert("entity".into(), e);
            }
        }
        Ok((format!("{noun}.{verb}"), Value::Object(data)))
    }

    fn jittered(&self, d: Duration) -> Duration {
        if d.is_zero() || self.cfg.jitter <= 0.0 {
            return d;
        }
        let j = self.cfg.jitter.min(1.0);
        let f: f64 = rand::rng().random_range((1.0 - j)..=(1.0 + j));
        d.mul_f64(f)
    }

    /// One attempt: sign with the attempt's timestamp and POST.
    async fn attempt(&self, id: &str, body: &[u8]) -> std::result::Result<(), HttpError> {
        let ts = self.clock.now().timestamp();
        let sig = self.signer.sign(id, ts, body);
        let mut req = Request::new(Method::POST, self.path.clone())
            .raw_body("application/json", body.to_vec())
            .header(header::HeaderName::from_static("webhook-id"), id)
            .header(
                header::HeaderName::from_static("webhook-timestamp"),
                ts.to_string(),
            )
            .header(header::HeaderName::from_static("webhook-signature"), sig)
            .header(header::USER_AGENT, "idsync-webhook");
        for (k, v) in &self.query {
            req = req.secret_query(k.clone(), v.clone());
        }
        self.client.try_send_raw(&req).await.map(|_| ())
    }

    fn failure(&self, e: &HttpError, event: &str, anchor: &Anchor, attempts: usize) -> Error {
        let class = e.class();
        let code = match e {
            HttpError::Status { status, .. } => Some(status.to_string()),
            _ => None,
        };
        let mut out = Error::new(
            class.kind,
            format!(
                "webhook: delivery of {event} (anchor {anchor}) to {} failed after {attempts} \
                 attempt(s): {e}",
                self.display
            ),
        )
        .with_provider(PROVIDER)
        .with_status(class.status)
        .with_context("endpoint", self.name.clone());
        if let Some(c) = code {
            out = out.with_provider_code(c);
        }
        out
    }

    async fn deliver(&self, op: &Op) -> Result<Applied> {
        let anchor = op.anchor().clone();
        if self.is_disabled() {
            self.observe(DeliveryOutcome::Quarantined);
            return Err(self.disabled_error());
        }
        let (event, data) = self.event(op).await?;
        let body = serde_json::to_vec(&json!({
            "type": event,
            "timestamp": self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        }))?;
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let schedule = &self.cfg.retry_schedule;
        let mut retry_after: Option<Duration> = None;
        for (i, wait) in schedule.iter().enumerate() {
            let mut wait = self.jittered(*wait);
            if let Some(ra) = retry_after.take() {
                wait = wait.max(ra.min(self.cfg.max_retry_after));
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if self.is_disabled() {
                self.observe(DeliveryOutcome::Quarantined);
                return Err(self.disabled_error());
            }
            if let Err(e) = self.breaker.check(PROVIDER, &self.display) {
                self.observe(DeliveryOutcome::Quarantined);
                return Err(e.with_context("endpoint", self.name.clone()));
            }
            match self.attempt(&id, &body).await {
                Ok(()) => {
                    self.breaker.record(true);
                    self.observe(DeliveryOutcome::Delivered);
                    tracing::debug!(endpoint = %self.name, event = %event, %anchor, id = %id, attempt = i + 1, "webhook delivered");
                    return Ok(Applied::with_anchor(anchor));
                }
                Err(HttpError::Status { status: 410, .. }) => {
                    self.disabled.store(true, Ordering::Relaxed);
                    self.observe(DeliveryOutcome::Disabled);
                    tracing::warn!(endpoint = %self.name, url = %self.display, "webhook endpoint answered 410 Gone: disabled");
                    return Err(self.disabled_error());
                }
                Err(e) => {
                    if self.breaker.record(false) {
                        tracing::warn!(endpoint = %self.name, url = %self.display, "webhook endpoint quarantined: most recent attempts failed");
                    }
                    let class = e.class();
                    let temporary = class.status == idsync_core::ErrorStatus::Temporary;
                    if !temporary {
                        self.observe(DeliveryOutcome::Failed);
                        return Err(self.failure(&e, &event, &anchor, i + 1));
                    }
                    if i + 1 == schedule.len() {
                        self.observe(DeliveryOutcome::Failed);
                        return Err(self.failure(&e, &event, &anchor, i + 1).persistent());
                    }
                    self.observe(DeliveryOutcome::Retried);
                    tracing::debug!(endpoint = %self.name, event = %event, %anchor, attempt = i + 1, error = %e, "webhook attempt failed; retrying");
                    retry_after = class.retry_after;
                }
            }
        }
        // an empty schedule is refused when the sink is made
        Err(Error::unexpected("webhook: empty retry schedule").with_provider(PROVIDER))
    }
}

fn event_name(op: &Op) -> (&'static str, &'static str) {
    match op {
        Op::CreateOrg { .. } => ("org", "created"),
        Op::UpdateOrg { .. } => ("org", "updated"),
        Op::MoveOrg { .. } => ("org", "moved"),
        Op::DeleteOrg { .. } => ("org", "deleted"),
        Op::CreateAccount { .. } => ("account", "created"),
        Op::UpdateAccount { .. } => ("account", "updated"),
        Op::DisableAccount { .. } => ("account", "disabled"),
        Op::EnableAccount { .. } => ("account", "enabled"),
        Op::DeleteAccount { .. } => ("account", "deleted"),
    }
}

#[async_trait]
impl Source for WebhookSink {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.name.clone())
    }

    fn capabilities(&self) -> Capabilities {
        self.sink_capabilities()
    }

    /// No request: Standard Webhooks has no ping. Fails when the endpoint is disabled.
    async fn check(&self) -> Result<()> {
        if self.is_disabled() {
            return Err(self.disabled_error());
        }
        Ok(())
    }

    async fn orgs(&self, _: PageRequest) -> Result<Page<Org>> {
        Err(self.unreadable())
    }

    async fn accounts(&self, _: PageRequest) -> Result<Page<Account>> {
        Err(self.unreadable())
    }

    async fn org(&self, _: &Anchor) -> Result<Option<Org>> {
        Err(self.unreadable())
    }

    async fn account(&self, _: &Anchor) -> Result<Option<Account>> {
        Err(self.unreadable())
    }

    async fn find_accounts(&self, _: &str, _: &str) -> Result<Vec<Account>> {
        Err(self.unreadable())
    }
}

#[async_trait]
impl Sink for WebhookSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.deliver(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(url: &str) -> Result<WebhookSink> {
        let signer = Signer::new(&[Signer::generate_secret()], "secrets")?;
        let cfg = WebhookConfig::new(url, idsync_core::secret::SecretRef::Env("UNUSED".into()));
        WebhookSink::with_signer(cfg, signer)
    }

    #[test]
    fn the_url_is_checked_and_shown_without_its_query() {
        let s = sink("https://hooks.example/in/idsync?token=SECRET123&x=1").unwrap();
        assert_eq!(s.url(), "https://hooks.example/in/idsync");
        assert_eq!(s.name(), "hooks.example");
        assert!(!format!("{s:?}").contains("SECRET123"));
        assert!(!s.disabled_error().to_string().contains("SECRET123"));
        let e = sink("http://hooks.example/in").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("plaintext"), "{e}");
        assert!(
            sink("http://127.0.0.1:9/in").is_ok(),
            "loopback may be plaintext"
        );
        let e = sink("https://user:pw@hooks.example/in").unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn capabilities_say_push_only() {
        let c = sink("https://hooks.example/in").unwrap().capabilities();
        assert!(!c.readable);
        assert!(c.create && c.update && c.delete && c.move_org && c.disable);
        assert!(!c.assigns_anchors);
    }

    #[test]
    fn event_names() {
        let a = Anchor::from("x");
        assert_eq!(
            event_name(&Op::DeleteAccount { anchor: a.clone() }),
            ("account", "deleted")
        );
        assert_eq!(
            event_name(&Op::MoveOrg {
                anchor: a,
                parent: None
            }),
            ("org", "moved")
        );
    }
}
