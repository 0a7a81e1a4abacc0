//! Configuration of a DingTalk tenant connection.

use std::path::PathBuf;
use std::time::Duration;

use idsync_core::Result;
use idsync_core::secret::SecretRef;
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::DingTalkError;

/// Base URL of the standard (mainland) legacy API.
pub const STANDARD_BASE_URL: &str = "https://oapi.dingtalk.com";
/// Base URL of the international (dingtalk.io) legacy API. Single public source: verify it
/// for your tenant.
pub const INTERNATIONAL_BASE_URL: &str = "https://oapi.dingtalk.io";

/// How to reach one DingTalk organization with one internal app.
///
/// `base_url` is [`STANDARD_BASE_URL`] by default; use [`INTERNATIONAL_BASE_URL`] for
/// dingtalk.io tenants, or your own host for a Dedicated DingTalk (专属钉钉) deployment.
///
/// A config file names the secrets, never holds them: `app_secret_env` (an environment
/// variable) or `app_secret_file` (a file), and the same for the callback's `token` and
/// `aes_key`. They are read through [`SecretRef`] when a source, sink or endpoint is built
/// ([`read_secrets`](Self::read_secrets)); code can set the values directly
/// ([`DingTalkConfig::new`]).
///
/// ```
/// let file = std::env::temp_dir().join(format!("idsync-dt-doc-{}", std::process::id()));
/// std::fs::write(&file, "s3cret\n").unwrap();
/// let mut cfg: idsync_dingtalk::DingTalkConfig = serde_json::from_value(serde_json::json!({
///     "app_key": "dingabc", "app_secret_file": file,
///     "base_url": "https://oapi.example.com"
/// })).unwrap();
/// assert_eq!(cfg.base_url, "https://oapi.example.com");
/// cfg.read_secrets().unwrap();
/// assert!(!format!("{cfg:?}").contains("s3cret"));
/// # std::fs::remove_file(&file).unwrap();
/// // a secret written into the config is refused
/// assert!(serde_json::from_value::<idsync_dingtalk::DingTalkConfig>(serde_json::json!({
///     "app_key": "dingabc", "app_secret": "s3cret"
/// })).is_err());
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkConfig {
    /// Legacy API base URL (no trailing slash needed).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The app's AppKey (also the default callback owner key).
    pub app_key: String,
    /// The app's AppSecret, when set in code or read by [`read_secrets`](Self::read_secrets);
    /// never read from a config file.
    #[serde(skip_deserializing, default = "unset")]
    pub app_secret: SecretString,
    /// The environment variable holding the AppSecret.
    #[serde(default)]
    pub app_secret_env: Option<String>,
    /// The file holding the AppSecret.
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    /// A name for reports (defaults to the AppKey).
    #[serde(default)]
    pub instance: Option<String>,
    /// The department the tree walk starts from (`1`, the root, by default).
    #[serde(default = "default_root")]
    pub root_dept_id: i64,
    /// Page size of `v2/user/list` (at most 100).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// `language` sent with reads.
    #[serde(default = "default_language")]
    pub language: String,
    /// Call `v2/user/get` for every listed user, to read `manager_userid` (one more call
    /// per user). Without it accounts carry no manager, in full and incremental reads alike.
    #[serde(default)]
    pub fetch_user_details: bool,
    /// Carry DingTalk's extra fields (`unionid`, `dept_order`, leaders, ...) in `attrs`.
    /// Turn off for hub → DingTalk jobs with an identity mapping: `unionid` is assigned by
    /// DingTalk and would never match the hub.
    #[serde(default = "default_true")]
    pub extra_attrs: bool,
    /// Create people without a mobile number as exclusive accounts (专属账号, Dedicated
    /// DingTalk): `exclusive_account: true`, `exclusive_account_type: "dingtalk"`,
    /// `login_id` = username. Without it, a person needs a mobile number.
    #[serde(default)]
    pub exclusive_accounts: bool,
    /// Requests per second per API the client keeps to (DingTalk's per-app per-API limit,
    /// 20 for standard orgs), counted over a sliding second; also the rate-limit layer's
    /// default through `capabilities().rate_limit`.
    #[serde(default = "default_qps")]
    pub qps: u32,
    /// Timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Accept an `http://` base URL to a host that is not loopback (tokens and the app
    /// secret would cross the network unencrypted). Off by default.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Answers larger than this many bytes are an error (8 MiB by default).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Refresh the access token this many seconds before it expires.
    #[serde(default = "default_margin")]
    pub token_refresh_margin_secs: u64,
    /// Event callback settings; absent when events are not used.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    /// Stream mode settings (events over a WebSocket the client opens); absent when
    /// Stream mode is not used.
    #[serde(default)]
    pub stream: Option<StreamConfig>,
}

/// Base URL of the new API, where Stream connections are opened.
pub const STREAM_BASE_URL: &str = "https://api.dingtalk.com";

/// Stream mode (WebSocket) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// New-API base URL (`POST /v1.0/gateway/connections/open`).
    #[serde(default = "default_stream_base")]
    pub base_url: String,
    /// Accept `http://` / `ws://` to a host that is not loopback. Off by default.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Seconds between keep-alive pings; a connection silent for three of them is
    /// replaced.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// First reconnect delay, in milliseconds (doubled up to `reconnect_max_secs`).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, in seconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            base_url: default_stream_base(),
            allow_plaintext: false,
            keepalive_secs: default_keepalive(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_secs: default_reconnect_max(),
        }
    }
}

fn default_stream_base() -> String {
    STREAM_BASE_URL.to_owned()
}
fn default_keepalive() -> u64 {
    30
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    60
}

/// HTTP event subscription (事件订阅) settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// The signing token (set in code, or read from `token_env` / `token_file`).
    #[serde(skip_deserializing, default = "unset")]
    pub token: SecretString,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The 43-character EncodingAESKey (set in code, or read from `aes_key_env` /
    /// `aes_key_file`).
    #[serde(skip_deserializing, default = "unset")]
    pub aes_key: SecretString,
    /// The environment variable holding the EncodingAESKey.
    #[serde(default)]
    pub aes_key_env: Option<String>,
    /// The file holding the EncodingAESKey.
    #[serde(default)]
    pub aes_key_file: Option<PathBuf>,
    /// The key that ends each plaintext: AppKey (default), CorpId or suiteKey.
    #[serde(default)]
    pub owner_key: Option<String>,
    /// Requests whose timestamp is further than this from now are rejected as replays.
    #[serde(default = "default_window")]
    pub replay_window_secs: u64,
    /// How many events the in-memory change log keeps.
    #[serde(default = "default_log")]
    pub event_log_capacity: usize,
}

fn unset() -> SecretString {
    SecretString::from(String::new())
}

/// Reads the secret `{key}_env` / `{key}_file` names into `value`; without a reference,
/// `value` must have been set in code.
fn read_into(
    value: &mut SecretString,
    what: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<()> {
    use secrecy::ExposeSecret;
    if let Some(v) = SecretRef::read_keys(what, env, file)? {
        *value = v;
    } else if value.expose_secret().is_empty() {
        SecretRef::required(what, None, None)?;
    }
    Ok(())
}

fn default_base_url() -> String {
    STANDARD_BASE_URL.to_owned()
}
fn default_true() -> bool {
    true
}
fn default_root() -> i64 {
    1
}
fn default_page_size() -> usize {
    100
}
fn default_language() -> String {
    "zh_CN".to_owned()
}
fn default_qps() -> u32 {
    20
}
fn default_timeout() -> u64 {
    30
}
fn default_max_body() -> usize {
    idsync_http::DEFAULT_MAX_BODY_BYTES
}
fn default_margin() -> u64 {
    300
}
fn default_window() -> u64 {
    300
}
fn default_log() -> usize {
    10_000
}

impl std::fmt::Debug for DingTalkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkConfig")
            .field("base_url", &self.base_url)
            .field("app_key", &self.app_key)
            .field("app_secret", &"[redacted]")
            .field("app_secret_env", &self.app_secret_env)
            .field("app_secret_file", &self.app_secret_file)
            .field("instance", &self.instance)
            .field("root_dept_id", &self.root_dept_id)
            .field("page_size", &self.page_size)
            .field("language", &self.language)
            .field("fetch_user_details", &self.fetch_user_details)
            .field("extra_attrs", &self.extra_attrs)
            .field("exclusive_accounts", &self.exclusive_accounts)
            .field("qps", &self.qps)
            .field("timeout_secs", &self.timeout_secs)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("token_refresh_margin_secs", &self.token_refresh_margin_secs)
            .field("callback", &self.callback)
            .field("stream", &self.stream)
            .finish()
    }
}

impl std::fmt::Debug for CallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("token", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("aes_key_env", &self.aes_key_env)
            .field("aes_key_file", &self.aes_key_file)
            .field("owner_key", &self.owner_key)
            .field("replay_window_secs", &self.replay_window_secs)
            .field("event_log_capacity", &self.event_log_capacity)
            .finish()
    }
}

impl CallbackConfig {
    /// Callback settings with the default window and log size.
    pub fn new(token: SecretString, aes_key: SecretString) -> Self {
        CallbackConfig {
            token,
            token_env: None,
            token_file: None,
            aes_key,
            aes_key_env: None,
            aes_key_file: None,
            owner_key: None,
            replay_window_secs: default_window(),
            event_log_capacity: default_log(),
        }
    }

    /// Reads the token and the EncodingAESKey the `*_env` / `*_file` keys name (see
    /// [`DingTalkConfig::read_secrets`]).
    pub fn read_secrets(&mut self) -> Result<()> {
        read_into(
            &mut self.token,
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )?;
        read_into(
            &mut self.aes_key,
            "aes_key",
            self.aes_key_env.as_deref(),
            self.aes_key_file.as_deref(),
        )
    }
}

impl DingTalkConfig {
    /// A config with defaults for everything but the credentials.
    pub fn new(app_key: impl Into<String>, app_secret: SecretString) -> Self {
        DingTalkConfig {
            base_url: default_base_url(),
            app_key: app_key.into(),
            app_secret,
            app_secret_env: None,
            app_secret_file: None,
            instance: None,
            root_dept_id: default_root(),
            page_size: default_page_size(),
            language: default_language(),
            fetch_user_details: false,
            extra_attrs: true,
            exclusive_accounts: false,
            qps: default_qps(),
            timeout_secs: default_timeout(),
            allow_plaintext: false,
            max_body_bytes: default_max_body(),
            token_refresh_margin_secs: default_margin(),
            callback: None,
            stream: None,
        }
    }

    /// Use another base URL (international, Dedicated DingTalk, or a fake).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Reads `IDSYNC_DINGTALK_APP_KEY`, `IDSYNC_DINGTALK_APP_SECRET` and optionally
    /// `IDSYNC_DINGTALK_BASE_URL`, `IDSYNC_DINGTALK_ROOT_DEPT_ID`,
    /// `IDSYNC_DINGTALK_CALLBACK_TOKEN` + `IDSYNC_DINGTALK_CALLBACK_AES_KEY`
    /// (+ `IDSYNC_DINGTALK_CALLBACK_OWNER_KEY`).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`DingTalkConfig::from_env`] over any lookup function (testable).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| DingTalkError::Config(format!("{k} is not set")))
        };
        let mut cfg = DingTalkConfig::new(
            need("IDSYNC_DINGTALK_APP_KEY")?,
            SecretString::from(need("IDSYNC_DINGTALK_APP_SECRET")?),
        );
        if let Some(url) = get("IDSYNC_DINGTALK_BASE_URL") {
            cfg.base_url = url;
        }
        if let Some(root) = get("IDSYNC_DINGTALK_ROOT_DEPT_ID") {
            cfg.root_dept_id = root.trim().parse().map_err(|_| {
                DingTalkError::Config("IDSYNC_DINGTALK_ROOT_DEPT_ID is not an integer".into())
            })?;
        }
        if let (Some(token), Some(aes)) = (
            get("IDSYNC_DINGTALK_CALLBACK_TOKEN"),
            get("IDSYNC_DINGTALK_CALLBACK_AES_KEY"),
        ) {
            let mut cb = CallbackConfig::new(SecretString::from(token), SecretString::from(aes));
            cb.owner_key = get("IDSYNC_DINGTALK_CALLBACK_OWNER_KEY");
            cfg.callback = Some(cb);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the secrets the config names (`app_secret_env` / `app_secret_file`, and the
    /// callback's `token_*` / `aes_key_*`) through [`SecretRef`]. A secret without a
    /// reference must have been set in code; errors name the key and the variable or
    /// file, never the value. Sources, sinks, the Stream client and the callback endpoint
    /// call it when they are built.
    pub fn read_secrets(&mut self) -> Result<()> {
        read_into(
            &mut self.app_secret,
            "app_secret",
            self.app_secret_env.as_deref(),
            self.app_secret_file.as_deref(),
        )?;
        if let Some(cb) = self.callback.as_mut() {
            cb.read_secrets()?;
        }
        Ok(())
    }

    /// Checks the values that can be checked offline (secret references included, without
    /// reading them).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| -> Result<()> { Err(DingTalkError::Config(m.to_owned()).into()) };
        if self.app_key.trim().is_empty() {
            return bad("app_key is empty");
        }
        SecretRef::from_keys(
            "app_secret",
            self.app_secret_env.as_deref(),
            self.app_secret_file.as_deref(),
        )?;
        if let Some(cb) = &self.callback {
            SecretRef::from_keys("token", cb.token_env.as_deref(), cb.token_file.as_deref())?;
            SecretRef::from_keys(
                "aes_key",
                cb.aes_key_env.as_deref(),
                cb.aes_key_file.as_deref(),
            )?;
        }
        idsync_http::check_base_url(&self.base_url, self.allow_plaintext)
            .map_err(|e| e.into_error(crate::PROVIDER, "config"))?;
        if self.page_size == 0 || self.page_size > 100 {
            return bad("page_size must be in 1..=100");
        }
        if self.qps == 0 {
            return bad("qps must be positive");
        }
        Ok(())
    }

    /// The base URL without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// The instance name for descriptors and reports.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| self.app_key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lookup_and_redaction() {
        let env = |k: &str| match k {
            "IDSYNC_DINGTALK_APP_KEY" => Some("dingkey".to_owned()),
            "IDSYNC_DINGTALK_APP_SECRET" => Some("topsecret".to_owned()),
            "IDSYNC_DINGTALK_BASE_URL" => Some(INTERNATIONAL_BASE_URL.to_owned()),
            "IDSYNC_DINGTALK_CALLBACK_TOKEN" => Some("cbtoken".to_owned()),
            "IDSYNC_DINGTALK_CALLBACK_AES_KEY" => Some("cbaeskey".to_owned()),
            _ => None,
        };
        let cfg = DingTalkConfig::from_lookup(env).unwrap();
        assert_eq!(cfg.base_url, INTERNATIONAL_BASE_URL);
        assert_eq!(cfg.root_dept_id, 1);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(!dbg.contains("cbtoken"), "{dbg}");
        assert!(!dbg.contains("cbaeskey"), "{dbg}");
        assert!(DingTalkConfig::from_lookup(|_| None).is_err());
    }

    #[test]
    fn unknown_fields_and_inline_secrets_are_rejected() {
        let r: std::result::Result<DingTalkConfig, _> = serde_json::from_value(
            serde_json::json!({"app_key": "a", "app_secret_env": "B", "bogus": 1}),
        );
        assert!(r.is_err());
        let inline: std::result::Result<DingTalkConfig, _> =
            serde_json::from_value(serde_json::json!({"app_key": "a", "app_secret": "b"}));
        assert!(inline.is_err());
        let dir = std::env::temp_dir().join(format!("idsync-dt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [("s", "app-s3cret"), ("t", "cb-t0ken"), ("k", "cb-aesk3y")] {
            std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
        }
        let mut ok: DingTalkConfig = serde_json::from_value(serde_json::json!({
            "app_key": "a", "app_secret_file": dir.join("s"),
            "callback": {"token_file": dir.join("t"), "aes_key_file": dir.join("k")}
        }))
        .unwrap();
        assert_eq!(ok.base_url, STANDARD_BASE_URL);
        assert_eq!(ok.page_size, 100);
        ok.validate().unwrap();
        ok.read_secrets().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(ok.app_secret.expose_secret(), "app-s3cret");
        let cb = ok.callback.as_ref().unwrap();
        assert_eq!(cb.token.expose_secret(), "cb-t0ken");
        assert_eq!(cb.aes_key.expose_secret(), "cb-aesk3y");
        let dbg = format!("{ok:?}");
        for v in ["app-s3cret", "cb-t0ken", "cb-aesk3y"] {
            assert!(!dbg.contains(v), "{dbg}");
        }
        // a reference is required, and only one
        let mut none: DingTalkConfig =
            serde_json::from_value(serde_json::json!({"app_key": "a"})).unwrap();
        let e = none.read_secrets().unwrap_err();
        assert!(e.message().contains("app_secret_env"), "{e}");
        let both: DingTalkConfig = serde_json::from_value(serde_json::json!({
            "app_key": "a", "app_secret_env": "A", "app_secret_file": "/b"
        }))
        .unwrap();
        assert!(both.validate().unwrap_err().message().contains("not both"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = DingTalkConfig::new("k", SecretString::from("s".to_owned()));
        assert!(c.validate().is_ok());
        c.page_size = 500;
        assert!(c.validate().is_err());
        let c =
            DingTalkConfig::new("k", SecretString::from("s".to_owned())).with_base_url("ftp://x");
        assert!(c.validate().is_err());
        // issue 11 point 4: plaintext only to loopback, or when allowed
        let mut c = DingTalkConfig::new("k", SecretString::from("s".to_owned()))
            .with_base_url("http://oapi.example.com");
        let e = c.validate().unwrap_err();
        assert!(e.message().contains("allow_plaintext"), "{}", e.message());
        c.allow_plaintext = true;
        assert!(c.validate().is_ok());
        let c = DingTalkConfig::new("k", SecretString::from("s".to_owned()))
            .with_base_url("http://127.0.0.1:9");
        assert!(c.validate().is_ok());
    }
}
