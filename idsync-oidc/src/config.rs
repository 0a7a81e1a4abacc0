//! The `[oidc.NAME]` tables of the idsync configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use idsync_core::mapping::EntityMapping;
use idsync_core::{FieldRule, Mapping};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::LoginError;

/// All configured providers, by name (`[oidc.okta]`, `[oidc.entra]`, ...).
pub type OidcConfig = BTreeMap<String, ProviderConfig>;

/// One OpenID Connect provider.
///
/// ```
/// let cfg: idsync_oidc::ProviderConfig = toml::from_str(r#"
///     issuer = "https://login.example.com"
///     client_id = "idsync"
///     client_secret_env = "OKTA_CLIENT_SECRET"
///     redirect_uri = "https://idsync.example.com/oidc/okta/callback"
///     unverified_email = "refuse"
///     [claims]
///     username = "preferred_username"
///     email = "email"
///     display_name = "name"
///     "attrs.groups" = "groups"
///     "attrs.department" = "department"
/// "#).unwrap();
/// assert!(cfg.validate("okta").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The issuer URL; discovery is read from `{issuer}/.well-known/openid-configuration`.
    /// `https` is required, except on loopback addresses (tests).
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// Name of the environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing white space is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The redirect URI registered at the provider: where `/callback` of this provider is
    /// served (`https://host/oidc/NAME/callback`).
    pub redirect_uri: String,
    /// Scopes asked for; `openid` is always sent.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Target field → claim name: how claims become the hub account (the job's mapping
    /// rules). `username` must be mapped; `status` cannot be (a login never changes an
    /// account's status). Defaults: username ← `preferred_username`, email ← `email`,
    /// display_name ← `name`, `attrs.groups` ← `groups`.
    #[serde(default = "default_claims")]
    pub claims: BTreeMap<String, String>,
    /// What the anchor of a login is.
    #[serde(default)]
    pub anchor: AnchorClaims,
    /// When the userinfo endpoint is read.
    #[serde(default)]
    pub userinfo: UserinfoMode,
    /// Treat every email this issuer sends as verified (only for issuers that own their
    /// users' mail domain; off by default).
    #[serde(default)]
    pub trust_email: bool,
    /// Target fields by which a login with a verified email links to an existing hub
    /// account that this provider never linked (default `["email"]`; empty: never link).
    /// `username`, `display_name` and `phone` are refused: people can often choose them.
    #[serde(default = "default_link_on")]
    pub link_on: Vec<String>,
    /// What a login without a verified email does when its email belongs to an existing
    /// hub account.
    #[serde(default)]
    pub unverified_email: UnverifiedPolicy,
    /// The job name links, runs and audit entries are kept under (default `oidc:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Which claims make a login's anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnchorClaims {
    /// `iss` and `sub` (the OIDC rule: `sub` is unique per issuer).
    #[default]
    IssSub,
    /// Entra ID's `tid` and `oid`: the same person in every application of the tenant
    /// (Entra's `sub` differs per application).
    TidOid,
}

/// When the userinfo endpoint is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserinfoMode {
    /// When a mapped claim (or `email_verified`) is missing from the ID token.
    #[default]
    WhenMissing,
    /// At every login.
    Always,
    /// Never.
    Never,
}

/// What a login without a verified email does when an existing hub account has its email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnverifiedPolicy {
    /// Create a separate hub account (without the unverified email) and say so in the audit.
    #[default]
    Separate,
    /// Refuse the login (the existing account's audit says that a login was refused).
    Refuse,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn default_claims() -> BTreeMap<String, String> {
    [
        ("username", "preferred_username"),
        ("email", "email"),
        ("display_name", "name"),
        ("attrs.groups", "groups"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn default_link_on() -> Vec<String> {
    vec!["email".to_owned()]
}

/// Target fields a claim may be mapped to (besides `attrs.*`).
const TARGETS: &[&str] = &[
    "username",
    "display_name",
    "email",
    "phone",
    "employee_id",
    "title",
];

impl ProviderConfig {
    /// A config with the defaults (scopes, claims, links) for a client at `issuer`.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        ProviderConfig {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret_env: None,
            client_secret_file: None,
            redirect_uri: redirect_uri.into(),
            scopes: default_scopes(),
            claims: default_claims(),
            anchor: AnchorClaims::default(),
            userinfo: UserinfoMode::default(),
            trust_email: false,
            link_on: default_link_on(),
            unverified_email: UnverifiedPolicy::default(),
            job: None,
        }
    }

    /// The job name of provider `name`.
    pub fn job_name(&self, name: &str) -> String {
        self.job.clone().unwrap_or_else(|| format!("oidc:{name}"))
    }

    /// Check the config of provider `name`; errors name the key at fault.
    pub fn validate(&self, name: &str) -> Result<(), LoginError> {
        let at = |key: &str| format!("[oidc.{name}] {key}");
        check_url(&self.issuer)
            .map_err(|m| LoginError::config(format!("{}: {m}", at("issuer"))))?;
        check_url(&self.redirect_uri)
            .map_err(|m| LoginError::config(format!("{}: {m}", at("redirect_uri"))))?;
        if self.client_id.trim().is_empty() {
            return Err(LoginError::config(format!("{} is empty", at("client_id"))));
        }
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(LoginError::config(format!(
                    "{}: set client_secret_env or client_secret_file, not both",
                    at("client_secret_*")
                )));
            }
            (None, None) => {
                return Err(LoginError::config(format!(
                    "{}: client_secret_env or client_secret_file is required",
                    at("client_secret_*")
                )));
            }
            _ => {}
        }
        for (to, claim) in &self.claims {
            let ok = TARGETS.contains(&to.as_str())
                || to.strip_prefix("attrs.").is_some_and(|a| !a.is_empty());
            if !ok {
                return Err(LoginError::config(format!(
                    "{}: cannot map a claim to {to:?} (allowed: {}, attrs.NAME; a login never \
                     changes status, orgs or manager)",
                    at("claims"),
                    TARGETS.join(", ")
                )));
            }
            if claim.trim().is_empty() {
                return Err(LoginError::config(format!(
                    "{}: the claim for {to:?} is empty",
                    at("claims")
                )));
            }
        }
        if !self.claims.contains_key("username") {
            return Err(LoginError::config(format!(
                "{}: username must be mapped from a claim",
                at("claims")
            )));
        }
        for f in &self.link_on {
            if ["username", "display_name", "phone"].contains(&f.as_str()) {
                return Err(LoginError::config(format!(
                    "{}: {f:?} cannot link a login to an existing account (people can often \
                     choose it at the provider; a verified email does not vouch for it)",
                    at("link_on")
                )));
            }
            if !self.claims.contains_key(f) {
                return Err(LoginError::config(format!(
                    "{}: {f:?} is not a mapped target field",
                    at("link_on")
                )));
            }
        }
        Ok(())
    }

    /// Read the client secret from its reference.
    pub fn client_secret(&self, name: &str) -> Result<SecretString, LoginError> {
        if let Some(var) = &self.client_secret_env {
            let v = std::env::var(var).map_err(|_| {
                LoginError::config(format!(
                    "[oidc.{name}] client_secret_env: environment variable {var} is not set"
                ))
            })?;
            return Ok(SecretString::from(v));
        }
        if let Some(path) = &self.client_secret_file {
            let v = std::fs::read_to_string(path).map_err(|e| {
                LoginError::config(format!(
                    "[oidc.{name}] client_secret_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(SecretString::from(v.trim_end().to_owned()));
        }
        Err(LoginError::config(format!(
            "[oidc.{name}]: client_secret_env or client_secret_file is required"
        )))
    }

    /// The job's mapping: one copy rule per mapped claim (claims are read from the
    /// login's `attrs.CLAIM`). Without `email` when `with_email` is false.
    pub(crate) fn mapping(&self, with_email: bool) -> Mapping {
        let rules = self
            .claims
            .iter()
            .filter(|(to, _)| with_email || to.as_str() != "email")
            .map(|(to, claim)| FieldRule::copy(to.clone(), format!("attrs.{claim}")))
            .collect();
        Mapping {
            accounts: EntityMapping::rules(rules),
            ..Mapping::identity()
        }
    }
}

/// https, or http on a loopback host.
fn check_url(s: &str) -> Result<(), String> {
    let url = openidconnect::url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host() {
            Some(openidconnect::url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(openidconnect::url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            Some(openidconnect::url::Host::Domain("localhost")) => Ok(()),
            _ => Err(format!(
                "{s:?}: http is allowed only on loopback; use https"
            )),
        },
        other => Err(format!("{s:?}: scheme {other} is not https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ProviderConfig {
        let mut c = ProviderConfig::new(
            "https://login.example.com",
            "idsync",
            "https://idsync.example.com/oidc/x/callback",
        );
        c.client_secret_env = Some("X_SECRET".into());
        c
    }

    fn err_of(c: &ProviderConfig) -> String {
        c.validate("x").unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<ProviderConfig>(
            "issuer = \"https://a\"\nclient_id = \"c\"\nredirect_uri = \"https://b\"\nclient_secret = \"inline\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("client_secret"), "{e}");
    }

    #[test]
    fn the_secret_is_a_reference_exactly_once() {
        let mut c = base();
        c.client_secret_file = Some("/run/secret".into());
        assert!(err_of(&c).contains("not both"));
        c.client_secret_env = None;
        c.client_secret_file = None;
        assert!(err_of(&c).contains("client_secret_env or client_secret_file is required"));
        let mut c = base();
        c.client_secret_env = Some("IDSYNC_OIDC_TEST_SURELY_UNSET".into());
        let e = c.client_secret("x").unwrap_err().to_string();
        assert!(
            e.contains("IDSYNC_OIDC_TEST_SURELY_UNSET is not set"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut c = base();
        c.issuer = "http://login.example.com".into();
        assert!(err_of(&c).contains("[oidc.x] issuer"), "{}", err_of(&c));
        c.issuer = "http://127.0.0.1:9090".into();
        assert!(c.validate("x").is_ok());
        c.redirect_uri = "ftp://x".into();
        assert!(err_of(&c).contains("redirect_uri"));
    }

    #[test]
    fn claims_cannot_change_status_and_username_is_required() {
        let mut c = base();
        c.claims.insert("status".into(), "active".into());
        assert!(err_of(&c).contains("\"status\""), "{}", err_of(&c));
        let mut c = base();
        c.claims.remove("username");
        assert!(err_of(&c).contains("username must be mapped"));
        let mut c = base();
        c.link_on = vec!["employee_id".into()];
        assert!(err_of(&c).contains("[oidc.x] link_on"));
        c.link_on = vec!["username".into()];
        assert!(err_of(&c).contains("cannot link"), "{}", err_of(&c));
    }

    #[test]
    fn an_unverified_mapping_leaves_email_out() {
        let c = base();
        let owned = |m: Mapping| m.accounts.owned_fields::<idsync_core::Account>();
        assert!(owned(c.mapping(true)).contains(&"email".to_owned()));
        let unverified = owned(c.mapping(false));
        assert!(!unverified.contains(&"email".to_owned()));
        assert!(unverified.contains(&"username".to_owned()));
    }
}
