//! `WebhookConfig`: one endpoint, its secrets, payload shape, retry schedule and breaker.

use std::time::Duration;

use idsync_core::secret::SecretRef;
use idsync_core::{Error, Result};
use idsync_http::breaker::BreakerConfig;
use serde::{Deserialize, Serialize};

/// What a delivery's `data` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    /// `kind`, `anchor`, `op` and `version` only: the app fetches the entity itself (from the
    /// change feed or the snapshot API). The default.
    #[default]
    Thin,
    /// Also the entity: the whole entity of a create, and the changed fields (`changes`)
    /// of an update, the new `parent` of a move, plus the whole entity when the sink has a
    /// lookup ([`WebhookSink::with_lookup`](crate::WebhookSink::with_lookup)).
    Full,
}

/// One webhook endpoint as a sink (`type = "webhook"`).
///
/// ```toml
/// url = "https://crm.example/hooks/idsync"
/// secrets = [{ env = "CRM_WEBHOOK_SECRET" }, { env = "CRM_WEBHOOK_SECRET_OLD" }]
/// payload = "full"
/// retry_schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h"]
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint. `https://` (plaintext only to loopback or with `allow_plaintext`); a
    /// query string is sent but treated as secret: it never appears in errors or logs.
    pub url: String,
    /// The endpoint's name in errors, logs and metrics (default: the URL's host).
    #[serde(default)]
    pub name: Option<String>,
    /// The signing secrets, each `whsec_<base64>`, by reference (`{ env = "VAR" }` or
    /// `{ file = "path" }`). Several while a secret is rotated: every delivery carries one
    /// signature per secret, and the receiver accepts it when any one verifies.
    #[serde(deserialize_with = "secret_refs")]
    pub secrets: Vec<SecretRef>,
    /// `thin` (default) or `full`.
    #[serde(default)]
    pub payload: PayloadMode,
    /// Deliver org events too (default true); `false`: accounts only.
    #[serde(default = "yes")]
    pub orgs: bool,
    /// The wait before each attempt: the first is usually `0s` (immediately); the number of
    /// entries is the number of attempts. Each wait gets the jitter; a `Retry-After` of a
    /// `429` or `5xx` answer lengthens it (never shortens it). Default: immediately, 5 s,
    /// 5 min, 30 min, 2 h, 5 h, 10 h.
    #[serde(default = "default_schedule", with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Each wait is multiplied by a random factor in `1 ± jitter` (0.2).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// The longest `Retry-After` honoured (1 h): a longer one is cut to this.
    #[serde(default = "default_max_retry_after", with = "duration")]
    pub max_retry_after: Duration,
    /// The timeout of one attempt (15 s).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Accept `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The circuit breaker of the endpoint.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// The query string (often a token) is never shown.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.url.split_once('?') {
            Some((base, _)) => format!("{base}?[redacted]"),
            None => self.url.clone(),
        };
        f.debug_struct("WebhookConfig")
            .field("url", &url)
            .field("name", &self.name)
            .field("secrets", &self.secrets)
            .field("payload", &self.payload)
            .field("orgs", &self.orgs)
            .field("retry_schedule", &self.retry_schedule)
            .field("jitter", &self.jitter)
            .field("max_retry_after", &self.max_retry_after)
            .field("timeout", &self.timeout)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("breaker", &self.breaker)
            .finish()
    }
}

fn yes() -> bool {
    true
}

/// The default retry schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h.
pub fn default_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18_000, 36_000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn default_jitter() -> f64 {
    0.2
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}

fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

impl WebhookConfig {
    /// An endpoint with one secret and every default.
    pub fn new(url: impl Into<String>, secret: SecretRef) -> Self {
        WebhookConfig {
            url: url.into(),
            name: None,
            secrets: vec![secret],
            payload: PayloadMode::default(),
            orgs: true,
            retry_schedule: default_schedule(),
            jitter: default_jitter(),
            max_retry_after: default_max_retry_after(),
            timeout: default_timeout(),
            allow_plaintext: false,
            breaker: BreakerConfig::default(),
        }
    }

    /// Problems found without reading secrets or reaching the endpoint.
    pub fn problems(&self) -> Vec<String> {
        self.problems_of(true)
    }

    fn problems_of(&self, secrets: bool) -> Vec<String> {
        let mut out = Vec::new();
        if secrets && self.secrets.is_empty() {
            out.push("secrets: at least one `whsec_...` secret is needed".to_owned());
        }
        if self.retry_schedule.is_empty() {
            out.push("retry_schedule: at least one attempt is needed (e.g. [\"0s\"])".to_owned());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            out.push(format!("jitter: {} is not between 0 and 1", self.jitter));
        }
        if !(0.0..=1.0).contains(&self.breaker.failure_ratio) {
            out.push(format!(
                "breaker.failure_ratio: {} is not between 0 and 1",
                self.breaker.failure_ratio
            ));
        }
        out
    }

    /// Secret files relative to `base` (the config file's folder).
    pub fn relative_to(mut self, base: &std::path::Path) -> Self {
        self.secrets = self
            .secrets
            .into_iter()
            .map(|s| s.relative_to(base))
            .collect();
        self
    }

    /// `Err` with the first problem (`secrets`: whether `secrets` must be given).
    pub(crate) fn validated(&self, secrets: bool) -> Result<()> {
        match self.problems_of(secrets).first() {
            None => Ok(()),
            Some(p) => Err(Error::config(format!("webhook: {p}"))),
        }
    }
}

/// Parses a duration: numbers with units `ms`, `s`, `m`, `h`, `d` (`"500ms"`, `"1h30m"`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad =
        || format!("bad duration {text:?}: use a number and a unit (500ms, 30s, 15m, 2h, 1d)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let d = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(d);
    }
    Ok(total)
}

fn format_duration(d: &Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 && !d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `secrets`: references only; a value written in the config is refused without echoing it.
fn secret_refs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<SecretRef>, D::Error> {
    struct Entry(SecretRef);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("{ env = \"VAR\" } or { file = \"path\" }")
                }
                fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<Entry, E> {
                    Err(E::custom(
                        "secrets: a secret is not written in the config; name it with \
                         { env = \"VAR\" } or { file = \"path\" }",
                    ))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    m: A,
                ) -> std::result::Result<Entry, A::Error> {
                    SecretRef::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                        .map(Entry)
                }
            }
            d.deserialize_any(V)
        }
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(super::format_duration))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| super::parse_duration(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(&Duration::from_millis(20)), "20ms");
        assert_eq!(format_duration(&Duration::from_secs(300)), "300s");
    }

    #[test]
    fn secrets_written_in_the_config_are_refused_without_echo() {
        let e =
            toml::from_str::<WebhookConfig>("url = \"https://h/x\"\nsecrets = [\"whsec_AAAA\"]")
                .unwrap_err();
        assert!(!e.message().contains("whsec_AAAA"), "{}", e.message());
        assert!(e.message().contains("env"), "{}", e.message());
        let c: WebhookConfig = toml::from_str(
            "url = \"https://h/x\"\nsecrets = [{ env = \"V\" }, { file = \"s\" }]\n\
             retry_schedule = [\"0s\", \"20ms\"]\npayload = \"full\"",
        )
        .unwrap();
        assert_eq!(c.secrets.len(), 2);
        assert_eq!(
            c.retry_schedule,
            vec![Duration::ZERO, Duration::from_millis(20)]
        );
        assert_eq!(c.payload, PayloadMode::Full);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn debug_hides_the_query() {
        let c = WebhookConfig::new(
            "https://h.example/in?token=QSECRET",
            SecretRef::Env("V".into()),
        );
        let d = format!("{c:?}");
        assert!(
            !d.contains("QSECRET") && d.contains("https://h.example/in"),
            "{d}"
        );
    }
}
