//! Configuration of a WeCom corp connection.
//!
//! [`WeComConfig`] is what a config file holds: secrets only by reference (`*_env`, an
//! environment variable's name, or `*_file`, a file path), never their values, read
//! through the one shared [`SecretRef`].
//! [`WeComConfig::resolve`] reads them into a [`Connection`], which the source and sink are
//! built from (tests and the fake build a `Connection` directly).

use std::path::PathBuf;
use std::time::Duration;

use idsync_core::secret::SecretRef;
use idsync_core::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

/// WeCom's API base URL.
pub const BASE_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/";

/// One WeCom corp, as a config file describes it.
///
/// ```
/// let cfg: idsync_wecom::WeComConfig = serde_json::from_value(serde_json::json!({
///     "corp_id": "ww1436e0e65a779aee",
///     "secret_env": "WECOM_CONTACT_SECRET",
///     "callback": { "token_env": "WECOM_CB_TOKEN", "aes_key_file": "/run/secrets/wecom_aes" }
/// })).unwrap();
/// assert_eq!(cfg.per_minute, 10_000);
/// assert!(cfg.resolve().is_err() || std::env::var("WECOM_CONTACT_SECRET").is_ok());
/// // a secret written into the config is refused
/// assert!(serde_json::from_value::<idsync_wecom::WeComConfig>(serde_json::json!({
///     "corp_id": "ww1", "secret": "s3cret"
/// })).is_err());
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComConfig {
    /// API base URL (`https://qyapi.weixin.qq.com/cgi-bin/`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The CorpID (我的企业 → 企业信息).
    pub corp_id: String,
    /// Environment variable holding the secret used for reads (an app secret, or the
    /// contact-sync secret).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the read secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the contact-sync (通讯录同步) secret used for writes;
    /// without it writes use the read secret.
    #[serde(default)]
    pub contact_secret_env: Option<String>,
    /// File holding the contact-sync secret.
    #[serde(default)]
    pub contact_secret_file: Option<PathBuf>,
    /// A name for reports (defaults to the CorpID).
    #[serde(default)]
    pub instance: Option<String>,
    /// The department that is the corp itself (1): not listed as an org; its children are
    /// roots.
    #[serde(default = "default_root")]
    pub root_dept_id: i64,
    /// Read departments with `department/list` (one call) instead of
    /// `department/simplelist` + `department/get`. Contact-sync secrets calling from a new
    /// IP get `48009` for it since 2022-08-15: leave it off unless you know it works.
    #[serde(default)]
    pub use_department_list: bool,
    /// Rows per `user/list_id` page (1..=10000).
    #[serde(default = "default_list_limit")]
    pub list_limit: usize,
    /// Carry WeCom's extra fields (alias, leaders, orders, …) in `attrs`. Turn off for
    /// hub → WeCom jobs with an identity mapping.
    #[serde(default = "default_true")]
    pub extra_attrs: bool,
    /// The custom text attribute (`extattr`, defined in the admin console, e.g. `工号`)
    /// that holds the employee number; WeCom has no such field of its own.
    #[serde(default)]
    pub employee_id_attr: Option<String>,
    /// Calls per minute per API the client keeps to (WeCom's per-corp limit: 10,000).
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
    /// Calls in flight at once (WeCom answers 45033 to too many).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// `change_contact` callback settings; absent when callbacks are not used.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
}

/// The callback server settings (接收事件服务器): Token and EncodingAESKey by reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// Environment variable holding the Token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the Token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the 43-character EncodingAESKey.
    #[serde(default)]
    pub aes_key_env: Option<String>,
    /// File holding the EncodingAESKey.
    #[serde(default)]
    pub aes_key_file: Option<PathBuf>,
    /// Callbacks whose timestamp is further than this from now are refused as replays.
    #[serde(default = "default_window")]
    pub replay_window_secs: u64,
    /// How many events the in-memory change log keeps.
    #[serde(default = "default_log")]
    pub event_log_capacity: usize,
}

fn default_base_url() -> String {
    BASE_URL.to_owned()
}
fn default_root() -> i64 {
    1
}
fn default_list_limit() -> usize {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_per_minute() -> u32 {
    10_000
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> u64 {
    30
}
fn default_window() -> u64 {
    300
}
fn default_log() -> usize {
    10_000
}

impl WeComConfig {
    /// Reads the referenced secrets and checks the settings.
    pub fn resolve(&self) -> Result<Connection> {
        let secret = SecretRef::required(
            "secret",
            self.secret_env.as_deref(),
            self.secret_file.as_deref(),
        )?
        .read("secret")?;
        let contact_secret = SecretRef::read_keys(
            "contact_secret",
            self.contact_secret_env.as_deref(),
            self.contact_secret_file.as_deref(),
        )?;
        let callback = match &self.callback {
            None => None,
            Some(cb) => Some(CallbackKeys {
                token: SecretRef::required(
                    "token",
                    cb.token_env.as_deref(),
                    cb.token_file.as_deref(),
                )?
                .read("token")?,
                aes_key: SecretRef::required(
                    "aes_key",
                    cb.aes_key_env.as_deref(),
                    cb.aes_key_file.as_deref(),
                )?
                .read("aes_key")?,
                replay_window: Duration::from_secs(cb.replay_window_secs),
                event_log_capacity: cb.event_log_capacity,
            }),
        };
        let mut c = Connection::new(&self.corp_id, secret);
        c.base_url.clone_from(&self.base_url);
        c.contact_secret = contact_secret;
        c.instance.clone_from(&self.instance);
        c.root_dept_id = self.root_dept_id;
        c.use_department_list = self.use_department_list;
        c.list_limit = self.list_limit;
        c.extra_attrs = self.extra_attrs;
        c.employee_id_attr.clone_from(&self.employee_id_attr);
        c.per_minute = self.per_minute;
        c.concurrency = self.concurrency;
        c.timeout = Duration::from_secs(self.timeout_secs);
        c.callback = callback;
        c.validate()?;
        Ok(c)
    }
}

/// The resolved callback keys.
#[derive(Clone)]
pub struct CallbackKeys {
    /// The Token.
    pub token: SecretString,
    /// The EncodingAESKey.
    pub aes_key: SecretString,
    /// Replay window.
    pub replay_window: Duration,
    /// Events the log keeps.
    pub event_log_capacity: usize,
}

impl std::fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackKeys")
            .field("token", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .field("replay_window", &self.replay_window)
            .field("event_log_capacity", &self.event_log_capacity)
            .finish()
    }
}

/// A resolved connection to one corp: what the source and sink are built from.
#[derive(Clone)]
pub struct Connection {
    /// API base URL, ending in `/`.
    pub base_url: String,
    /// The CorpID.
    pub corp_id: String,
    /// The read secret.
    pub secret: SecretString,
    /// The contact-sync secret for writes (`None`: the read secret).
    pub contact_secret: Option<SecretString>,
    /// A name for reports.
    pub instance: Option<String>,
    /// The corp's own department.
    pub root_dept_id: i64,
    /// Use `department/list`.
    pub use_department_list: bool,
    /// Rows per `user/list_id` page.
    pub list_limit: usize,
    /// Extra attributes.
    pub extra_attrs: bool,
    /// The `extattr` text attribute holding the employee number.
    pub employee_id_attr: Option<String>,
    /// Calls per API per rate window.
    pub per_minute: u32,
    /// The rate window WeCom counts in (a minute; tests shorten it together with the fake's).
    pub rate_window: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Request timeout.
    pub timeout: Duration,
    /// Callback keys.
    pub callback: Option<CallbackKeys>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("base_url", &self.base_url)
            .field("corp_id", &self.corp_id)
            .field("secret", &"[redacted]")
            .field(
                "contact_secret",
                &self.contact_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("instance", &self.instance)
            .field("root_dept_id", &self.root_dept_id)
            .field("use_department_list", &self.use_department_list)
            .field("list_limit", &self.list_limit)
            .field("extra_attrs", &self.extra_attrs)
            .field("employee_id_attr", &self.employee_id_attr)
            .field("per_minute", &self.per_minute)
            .field("rate_window", &self.rate_window)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("callback", &self.callback)
            .finish()
    }
}

impl Connection {
    /// A connection with the defaults for everything but the corp and its secret.
    pub fn new(corp_id: impl Into<String>, secret: SecretString) -> Self {
        Connection {
            base_url: default_base_url(),
            corp_id: corp_id.into(),
            secret,
            contact_secret: None,
            instance: None,
            root_dept_id: default_root(),
            use_department_list: false,
            list_limit: default_list_limit(),
            extra_attrs: true,
            employee_id_attr: None,
            per_minute: default_per_minute(),
            rate_window: Duration::from_secs(60),
            concurrency: default_concurrency(),
            timeout: Duration::from_secs(default_timeout()),
            callback: None,
        }
    }

    /// Checks the settings; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if self.corp_id.trim().is_empty() {
            return Err(Error::config("wecom: corp_id is empty"));
        }
        if !(1..=10_000).contains(&self.list_limit) {
            return Err(Error::config(format!(
                "wecom: list_limit must be 1..=10000, got {}",
                self.list_limit
            )));
        }
        if self.per_minute == 0 {
            return Err(Error::config("wecom: per_minute must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(Error::config("wecom: concurrency must be at least 1"));
        }
        Ok(())
    }

    /// The member mapping these settings make.
    pub fn user_mapping(&self) -> crate::mapping::UserMapping {
        crate::mapping::UserMapping {
            root: self.root_dept_id,
            extra_attrs: self.extra_attrs,
            employee_id_attr: self.employee_id_attr.clone(),
        }
    }

    /// The instance name for descriptors.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| self.corp_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_by_file_and_redacted() {
        let dir = std::env::temp_dir().join(format!("idsync-wecom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "s3cret-value\n").unwrap();
        let cfg: WeComConfig = serde_json::from_value(serde_json::json!({
            "corp_id": "wwcorp", "secret_file": f, "list_limit": 50
        }))
        .unwrap();
        let c = cfg.resolve().unwrap();
        assert_eq!(c.secret.expose_secret(), "s3cret-value");
        assert_eq!(c.list_limit, 50);
        assert!(!format!("{c:?}").contains("s3cret"));
        let missing: WeComConfig = serde_json::from_value(serde_json::json!({
            "corp_id": "wwcorp", "secret_env": "IDSYNC_WECOM_TEST_UNSET_VAR"
        }))
        .unwrap();
        let e = missing.resolve().unwrap_err();
        assert!(e.message().contains("IDSYNC_WECOM_TEST_UNSET_VAR"), "{e}");
        let bad: WeComConfig = serde_json::from_value(serde_json::json!({
            "corp_id": "wwcorp", "secret_file": f, "list_limit": 0
        }))
        .unwrap();
        assert!(bad.resolve().unwrap_err().message().contains("list_limit"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
