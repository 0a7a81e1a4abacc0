//! Configuration of a Lark / Feishu app connection.
//!
//! [`LarkConfig`] is what a config file holds: secrets only by reference (`*_env`, an
//! environment variable's name, or `*_file`, a file path), never their values.
//! [`LarkConfig::resolve`] reads them into a [`Connection`], which the source and sink are
//! built from (tests and the fake build a `Connection` directly).

use std::path::PathBuf;
use std::time::Duration;

use idsync_core::secret::SecretRef;
use idsync_core::{Error, Result};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Feishu's (China) API base URL.
pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn/open-apis";
/// Lark's (international) API base URL: same paths and shapes.
pub const LARK_BASE_URL: &str = "https://open.larksuite.com/open-apis";

/// Which brand's cloud the app lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Brand {
    /// 飞书, `open.feishu.cn`.
    #[default]
    Feishu,
    /// Lark, `open.larksuite.com`.
    Lark,
}

impl Brand {
    /// The brand's API base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Brand::Feishu => FEISHU_BASE_URL,
            Brand::Lark => LARK_BASE_URL,
        }
    }
}

/// Which user id is the account anchor (and the `user_id_type` of every call).
///
/// * `union_id` (default): one id per person across all apps of the same developer
///   (tenant), so links survive moving the sync to another app of the company; it is
///   system-made and never changes.
/// * `open_id`: per app; changes when another app is used.
/// * `user_id`: the tenant's own, customisable id; an admin may change it, and reading it
///   needs the `contact:user.employee_id:readonly` scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserIdType {
    /// `union_id` (`on_…`).
    #[default]
    UnionId,
    /// `open_id` (`ou_…`).
    OpenId,
    /// `user_id` (tenant-defined).
    UserId,
}

impl UserIdType {
    /// The value of the `user_id_type` query parameter and the user field holding the id.
    pub fn as_str(self) -> &'static str {
        match self {
            UserIdType::UnionId => "union_id",
            UserIdType::OpenId => "open_id",
            UserIdType::UserId => "user_id",
        }
    }
}

/// The `department_id_type` of every call: the system-made, immutable
/// `open_department_id` (`department_id` is custom and may be changed by an admin).
pub const DEPARTMENT_ID_TYPE: &str = "open_department_id";

/// Lark's documented limit of the contact APIs: 50 calls per second per app.
pub const DEFAULT_QPS: u32 = 50;

/// One Lark / Feishu app, as a config file describes it.
///
/// ```
/// let cfg: idsync_lark::LarkConfig = serde_json::from_value(serde_json::json!({
///     "app_id": "cli_a5f3c9e1b7d24068",
///     "app_secret_env": "LARK_APP_SECRET",
///     "brand": "lark",
///     "events": { "verification_token_env": "LARK_VT", "encrypt_key_file": "/run/secrets/lark_ek" }
/// })).unwrap();
/// assert_eq!(cfg.qps, 50);
/// assert_eq!(cfg.base_url(), "https://open.larksuite.com/open-apis");
/// // a secret written into the config is refused
/// assert!(serde_json::from_value::<idsync_lark::LarkConfig>(serde_json::json!({
///     "app_id": "cli_1", "app_secret": "s3cret"
/// })).is_err());
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LarkConfig {
    /// `feishu` (default, `open.feishu.cn`) or `lark` (`open.larksuite.com`).
    #[serde(default)]
    pub brand: Brand,
    /// A private deployment's API base (e.g. `https://open.lark.example.com/open-apis`);
    /// overrides `brand`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The App ID (`cli_…`).
    pub app_id: String,
    /// Environment variable holding the App Secret.
    #[serde(default)]
    pub app_secret_env: Option<String>,
    /// File holding the App Secret.
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    /// Which user id anchors accounts (default `union_id`; see [`UserIdType`]).
    #[serde(default)]
    pub user_id_type: UserIdType,
    /// A name for reports (defaults to the App ID).
    #[serde(default)]
    pub instance: Option<String>,
    /// Contact calls per second the client keeps to (Lark's documented limit: 50).
    #[serde(default = "default_qps")]
    pub qps: u32,
    /// Timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Carry Lark's extra fields (`open_id`, `en_name`, `city`, …) in `attrs`. Turn off for
    /// hub → Lark jobs with an identity mapping.
    #[serde(default = "default_true")]
    pub extra_attrs: bool,
    /// Contact event (schema 2.0) settings; absent when events are not used.
    #[serde(default)]
    pub events: Option<EventsConfig>,
}

/// The event subscription settings (事件订阅): Verification Token and Encrypt Key by
/// reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Environment variable holding the Verification Token.
    #[serde(default)]
    pub verification_token_env: Option<String>,
    /// File holding the Verification Token.
    #[serde(default)]
    pub verification_token_file: Option<PathBuf>,
    /// Environment variable holding the Encrypt Key (optional: without one, Lark sends
    /// events in plain JSON and unsigned).
    #[serde(default)]
    pub encrypt_key_env: Option<String>,
    /// File holding the Encrypt Key.
    #[serde(default)]
    pub encrypt_key_file: Option<PathBuf>,
    /// Signed requests whose `X-Lark-Request-Timestamp` is further than this from now are
    /// refused as replays.
    #[serde(default = "default_window")]
    pub replay_window_secs: u64,
    /// How many events the in-memory change log keeps.
    #[serde(default = "default_log")]
    pub event_log_capacity: usize,
}

fn default_qps() -> u32 {
    DEFAULT_QPS
}
fn default_timeout() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_window() -> u64 {
    300
}
fn default_log() -> usize {
    10_000
}

impl LarkConfig {
    /// The API base: `base_url` if set, else the brand's.
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| self.brand.base_url().to_owned())
    }

    /// Reads the referenced secrets and checks the settings.
    pub fn resolve(&self) -> Result<Connection> {
        let secret = SecretRef::required(
            "app_secret",
            self.app_secret_env.as_deref(),
            self.app_secret_file.as_deref(),
        )?
        .read("app_secret")?;
        let events = match &self.events {
            None => None,
            Some(ev) => {
                let token = SecretRef::required(
                    "verification_token",
                    ev.verification_token_env.as_deref(),
                    ev.verification_token_file.as_deref(),
                )?
                .read("verification_token")?;
                let key = SecretRef::from_keys(
                    "encrypt_key",
                    ev.encrypt_key_env.as_deref(),
                    ev.encrypt_key_file.as_deref(),
                )?
                .map(|r| r.read("encrypt_key"))
                .transpose()?;
                Some(EventKeys {
                    verification_token: token,
                    encrypt_key: key,
                    replay_window: Duration::from_secs(ev.replay_window_secs),
                    event_log_capacity: ev.event_log_capacity,
                })
            }
        };
        let mut c = Connection::new(&self.app_id, secret);
        c.base_url = self.base_url();
        c.user_id_type = self.user_id_type;
        c.instance.clone_from(&self.instance);
        c.qps = self.qps;
        c.timeout = Duration::from_secs(self.timeout_secs);
        c.extra_attrs = self.extra_attrs;
        c.events = events;
        c.validate()?;
        Ok(c)
    }
}

/// The resolved event keys.
#[derive(Clone)]
pub struct EventKeys {
    /// The Verification Token (`header.token` / `token` must equal it).
    pub verification_token: SecretString,
    /// The Encrypt Key (`None`: events come in plain JSON, unsigned).
    pub encrypt_key: Option<SecretString>,
    /// Replay window of signed requests.
    pub replay_window: Duration,
    /// Events the log keeps.
    pub event_log_capacity: usize,
}

impl EventKeys {
    /// Keys with the default replay window (300 s) and log capacity (10,000).
    pub fn new(verification_token: SecretString, encrypt_key: Option<SecretString>) -> Self {
        EventKeys {
            verification_token,
            encrypt_key,
            replay_window: Duration::from_secs(default_window()),
            event_log_capacity: default_log(),
        }
    }
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventKeys")
            .field("verification_token", &"[redacted]")
            .field(
                "encrypt_key",
                &self.encrypt_key.as_ref().map(|_| "[redacted]"),
            )
            .field("replay_window", &self.replay_window)
            .field("event_log_capacity", &self.event_log_capacity)
            .finish()
    }
}

/// A resolved connection to one app: what the source and sink are built from.
#[derive(Clone)]
pub struct Connection {
    /// API base URL, ending in `/open-apis`.
    pub base_url: String,
    /// The App ID.
    pub app_id: String,
    /// The App Secret.
    pub app_secret: SecretString,
    /// Which user id anchors accounts.
    pub user_id_type: UserIdType,
    /// A name for reports.
    pub instance: Option<String>,
    /// Contact calls per second.
    pub qps: u32,
    /// Request timeout.
    pub timeout: Duration,
    /// Extra attributes.
    pub extra_attrs: bool,
    /// Accept `http://` to a host that is not loopback (never in production).
    pub allow_plaintext: bool,
    /// Event keys.
    pub events: Option<EventKeys>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &"[redacted]")
            .field("user_id_type", &self.user_id_type)
            .field("instance", &self.instance)
            .field("qps", &self.qps)
            .field("timeout", &self.timeout)
            .field("extra_attrs", &self.extra_attrs)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("events", &self.events)
            .finish()
    }
}

impl Connection {
    /// A connection with the defaults (Feishu, `union_id`, 50 calls/s) for everything but
    /// the app and its secret.
    pub fn new(app_id: impl Into<String>, app_secret: SecretString) -> Self {
        Connection {
            base_url: FEISHU_BASE_URL.to_owned(),
            app_id: app_id.into(),
            app_secret,
            user_id_type: UserIdType::default(),
            instance: None,
            qps: DEFAULT_QPS,
            timeout: Duration::from_secs(default_timeout()),
            extra_attrs: true,
            allow_plaintext: false,
            events: None,
        }
    }

    /// Checks the settings; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if self.app_id.trim().is_empty() {
            return Err(Error::config("lark: app_id is empty"));
        }
        if self.qps == 0 {
            return Err(Error::config("lark: qps must be at least 1"));
        }
        Ok(())
    }

    /// The instance name for descriptors.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| self.app_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn brands_hosts_and_secrets() {
        let dir = std::env::temp_dir().join(format!("idsync-lark-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "s3cret-value\n").unwrap();
        let cfg: LarkConfig = serde_json::from_value(serde_json::json!({
            "app_id": "cli_x", "app_secret_file": f
        }))
        .unwrap();
        let c = cfg.resolve().unwrap();
        assert_eq!(c.base_url, FEISHU_BASE_URL);
        assert_eq!(c.user_id_type, UserIdType::UnionId);
        assert_eq!(c.app_secret.expose_secret(), "s3cret-value");
        assert!(!format!("{c:?}").contains("s3cret"));
        let lark: LarkConfig = serde_json::from_value(serde_json::json!({
            "app_id": "cli_x", "app_secret_file": f, "brand": "lark", "user_id_type": "open_id"
        }))
        .unwrap();
        let c = lark.resolve().unwrap();
        assert_eq!(c.base_url, LARK_BASE_URL);
        assert_eq!(c.user_id_type.as_str(), "open_id");
        let private: LarkConfig = serde_json::from_value(serde_json::json!({
            "app_id": "cli_x", "app_secret_file": f, "brand": "lark",
            "base_url": "https://open.lark.corp.example/open-apis"
        }))
        .unwrap();
        assert_eq!(
            private.resolve().unwrap().base_url,
            "https://open.lark.corp.example/open-apis"
        );
        let missing: LarkConfig = serde_json::from_value(serde_json::json!({
            "app_id": "cli_x", "app_secret_env": "IDSYNC_LARK_TEST_UNSET_VAR"
        }))
        .unwrap();
        let e = missing.resolve().unwrap_err();
        assert!(e.message().contains("IDSYNC_LARK_TEST_UNSET_VAR"), "{e}");
        let zero: LarkConfig = serde_json::from_value(serde_json::json!({
            "app_id": "cli_x", "app_secret_file": f, "qps": 0
        }))
        .unwrap();
        assert!(zero.resolve().unwrap_err().message().contains("qps"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
