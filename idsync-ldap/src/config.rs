//! Configuration: where the directory is, how to bind, and how entries map to the model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use idsync_core::secret::SecretRef;
use idsync_core::{Error, Result};

/// Which kind of server this is; it picks the defaults for every setting left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenLDAP: `entryUUID` anchors, `inetOrgPerson` accounts, RFC 4533 content sync.
    #[default]
    Openldap,
    /// Active Directory (and Samba AD): `objectGUID` anchors, `user` accounts, DirSync.
    Ad,
    /// Any other RFC 4512 server: `entryUUID` anchors, `inetOrgPerson`, `modifyTimestamp`
    /// polling. Set the attributes explicitly where the server differs.
    Generic,
}

/// How incremental changes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncrementalMode {
    /// RFC 4533 content synchronization, refreshOnly, with the server's cookie.
    Syncrepl,
    /// Active Directory's DirSync control (1.2.840.113556.1.4.841); needs the "Replicating
    /// Directory Changes" right (Administrator has it).
    Dirsync,
    /// Poll `modifyTimestamp` (no deletes: a full sync finds those).
    ModifyTimestamp,
    /// No incremental reads.
    None,
}

/// How a disabled account is marked, for servers without AD's `userAccountControl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableMarker {
    /// The attribute, e.g. `pwdAccountLockedTime` (OpenLDAP ppolicy).
    pub attribute: String,
    /// The value that means disabled, e.g. `000001010000Z` (ppolicy: locked until an
    /// administrator unlocks). An enabled account has no value.
    pub value: String,
}

/// Settings of an LDAP source or sink.
///
/// Every setting except `url` and `base_dn` has a default that depends on [`Dialect`].
/// `Debug` never shows the bind password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// Allow a bind password over `ldap://` without StartTLS, i.e. in clear text on the
    /// network. Off by default: such a config is refused.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// PEM file with the CA certificate(s) that sign the server's certificate. Without it
    /// the system's roots are used. Verification is always on.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// DN (or, for AD, `user@domain`) to bind with; anonymous when absent.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Password for `bind_dn`, when set in code ([`with_bind`](Self::with_bind)). A config
    /// file never holds it: it names it with `bind_password_env` or `bind_password_file`,
    /// read through [`SecretRef`] when the directory is built.
    #[serde(skip_deserializing)]
    pub bind_password: Option<SecretString>,
    /// The environment variable holding the bind password.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// The file holding the bind password (its trailing line break removed).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Everything below this DN is in scope; its own entry is neither an org nor an account.
    pub base_dn: String,
    /// The server kind.
    #[serde(default)]
    pub dialect: Dialect,
    /// Entries per page of the paged results control (the listing is always paged).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seconds to wait for a connection or an operation.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The immutable id attribute; default `entryUUID`, AD `objectGUID`.
    #[serde(default)]
    pub anchor_attribute: Option<String>,
    /// Read orgs (the OU tree under `base_dn`). Default true.
    #[serde(default = "default_true")]
    pub orgs: bool,
    /// Filter selecting orgs; default `(objectClass=organizationalUnit)`.
    #[serde(default)]
    pub org_filter: Option<String>,
    /// Filter selecting accounts; default `(objectClass=inetOrgPerson)`, AD
    /// `(&(objectClass=user)(objectCategory=person))`.
    #[serde(default)]
    pub account_filter: Option<String>,
    /// Object classes of accounts the sink creates.
    #[serde(default)]
    pub account_object_classes: Option<Vec<String>>,
    /// RDN attribute of accounts the sink creates; default `uid`, AD `cn`.
    #[serde(default)]
    pub account_rdn_attribute: Option<String>,
    /// Where the sink puts an account that belongs to no org; default `base_dn`.
    #[serde(default)]
    pub account_container: Option<String>,
    /// Account field -> LDAP attribute, over the dialect's defaults. Fields: `username`,
    /// `display_name`, `email`, `phone`, `employee_id`, `title`, `manager` and
    /// `attrs.NAME`. An empty attribute name drops a default.
    #[serde(default)]
    pub account_attributes: BTreeMap<String, String>,
    /// How a disabled account is marked on non-AD servers; default (OpenLDAP) the ppolicy
    /// `pwdAccountLockedTime: 000001010000Z`. AD always uses `userAccountControl` bit 0x2.
    #[serde(default)]
    pub disable_marker: Option<DisableMarker>,
    /// How changes are read; default `syncrepl`, AD `dirsync`, generic `modify_timestamp`.
    #[serde(default)]
    pub incremental: Option<IncrementalMode>,
    /// A multi-valued string attribute holding the anchors of an account's further orgs
    /// (an entry lives in one OU, its primary org). Unset (the default): accounts have one
    /// org. E.g. `departmentNumber` (inetOrgPerson), `url` (AD `user`).
    #[serde(default)]
    pub secondary_orgs_attribute: Option<String>,
    /// The attribute an account's display name is read from when its display name
    /// attribute (`displayName`) is absent; default `cn`, empty for none.
    #[serde(default = "default_display_name_fallback")]
    pub display_name_fallback: String,
}

fn default_display_name_fallback() -> String {
    "cn".to_owned()
}

fn default_page_size() -> u32 {
    500
}
fn default_timeout() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("bind_dn", &self.bind_dn)
            .field(
                "bind_password",
                &self.bind_password.as_ref().map(|_| "[redacted]"),
            )
            .field("bind_password_env", &self.bind_password_env)
            .field("bind_password_file", &self.bind_password_file)
            .field("base_dn", &self.base_dn)
            .field("dialect", &self.dialect)
            .field("page_size", &self.page_size)
            .field("anchor_attribute", &self.anchor_attribute)
            .field("account_attributes", &self.account_attributes)
            .field("incremental", &self.incremental)
            .finish_non_exhaustive()
    }
}

/// The typed account fields an attribute can map to.
pub const ACCOUNT_MAP_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "email",
    "phone",
    "employee_id",
    "title",
    "manager",
];

impl LdapConfig {
    /// A configuration with every default for `dialect`.
    pub fn new(url: impl Into<String>, base_dn: impl Into<String>, dialect: Dialect) -> Self {
        LdapConfig {
            url: url.into(),
            starttls: false,
            allow_plaintext: false,
            tls_ca_file: None,
            bind_dn: None,
            bind_password: None,
            bind_password_env: None,
            bind_password_file: None,
            base_dn: base_dn.into(),
            dialect,
            page_size: default_page_size(),
            timeout_secs: default_timeout(),
            anchor_attribute: None,
            orgs: true,
            org_filter: None,
            account_filter: None,
            account_object_classes: None,
            account_rdn_attribute: None,
            account_container: None,
            account_attributes: BTreeMap::new(),
            disable_marker: None,
            incremental: None,
            secondary_orgs_attribute: None,
            display_name_fallback: default_display_name_fallback(),
        }
    }

    /// Sets the bind DN and password.
    pub fn with_bind(mut self, dn: impl Into<String>, password: impl Into<String>) -> Self {
        self.bind_dn = Some(dn.into());
        self.bind_password = Some(SecretString::from(password.into()));
        self
    }

    /// Sets the CA file used to verify the server's certificate.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Reads a configuration from `IDSYNC_LDAP_*`-style variables with the given prefix:
    /// `{P}URL`, `{P}BIND_DN`, `{P}BIND_PW`, `{P}BASE_DN`, `{P}TLS_CA_FILE` (e.g. prefix
    /// `LDAP_` for the variables `scripts/services/openldap.sh` prints, `AD_` for Samba).
    pub fn from_env(prefix: &str, dialect: Dialect) -> Result<Self> {
        let var = |name: &str| std::env::var(format!("{prefix}{name}")).ok();
        let url = var("URL").ok_or_else(|| Error::config(format!("{prefix}URL is not set")))?;
        let base =
            var("BASE_DN").ok_or_else(|| Error::config(format!("{prefix}BASE_DN is not set")))?;
        let mut cfg = LdapConfig::new(url, base, dialect);
        if let (Some(dn), Some(pw)) = (var("BIND_DN"), var("BIND_PW")) {
            cfg = cfg.with_bind(dn, pw);
        }
        if let Some(ca) = var("TLS_CA_FILE") {
            cfg.tls_ca_file = Some(ca.into());
        }
        Ok(cfg)
    }

    /// Reads the bind password `bind_password_env` / `bind_password_file` names (when one
    /// is set) into `bind_password`. Errors name the variable or file, never the value.
    pub fn read_secrets(&mut self) -> Result<()> {
        if let Some(pw) = SecretRef::read_keys(
            "bind_password",
            self.bind_password_env.as_deref(),
            self.bind_password_file.as_deref(),
        )? {
            self.bind_password = Some(pw);
        }
        Ok(())
    }

    fn has_password(&self) -> bool {
        self.bind_password.is_some()
            || self.bind_password_env.is_some()
            || self.bind_password_file.is_some()
    }

    pub(crate) fn password(&self) -> &str {
        self.bind_password
            .as_ref()
            .map(|p| p.expose_secret())
            .unwrap_or("")
    }

    /// The anchor attribute in effect.
    pub fn anchor_attr(&self) -> &str {
        match (&self.anchor_attribute, self.dialect) {
            (Some(a), _) => a,
            (None, Dialect::Ad) => "objectGUID",
            (None, _) => "entryUUID",
        }
    }

    /// True when anchors are AD GUIDs (binary, mixed-endian).
    pub(crate) fn guid_anchor(&self) -> bool {
        self.anchor_attr().eq_ignore_ascii_case("objectGUID")
    }

    /// The org filter in effect.
    pub fn org_filter(&self) -> &str {
        self.org_filter
            .as_deref()
            .unwrap_or("(objectClass=organizationalUnit)")
    }

    /// The account filter in effect.
    pub fn account_filter(&self) -> &str {
        match (&self.account_filter, self.dialect) {
            (Some(f), _) => f,
            (None, Dialect::Ad) => "(&(objectClass=user)(objectCategory=person))",
            (None, _) => "(objectClass=inetOrgPerson)",
        }
    }

    /// Object classes for new accounts.
    pub fn account_classes(&self) -> Vec<String> {
        match (&self.account_object_classes, self.dialect) {
            (Some(c), _) => c.clone(),
            (None, Dialect::Ad) => vec!["top", "person", "organizationalPerson", "user"]
                .into_iter()
                .map(String::from)
                .collect(),
            (None, _) => vec!["top", "person", "organizationalPerson", "inetOrgPerson"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    /// RDN attribute for new accounts.
    pub fn account_rdn_attr(&self) -> &str {
        match (&self.account_rdn_attribute, self.dialect) {
            (Some(a), _) => a,
            (None, Dialect::Ad) => "cn",
            (None, _) => "uid",
        }
    }

    /// The account field -> attribute map in effect (defaults merged with overrides).
    pub fn account_map(&self) -> Result<BTreeMap<String, String>> {
        let defaults: &[(&str, &str)] = match self.dialect {
            Dialect::Ad => &[
                ("username", "sAMAccountName"),
                ("display_name", "displayName"),
                ("email", "mail"),
                ("phone", "mobile"),
                ("employee_id", "employeeID"),
                ("title", "title"),
                ("manager", "manager"),
                ("attrs.user_principal_name", "userPrincipalName"),
            ],
            _ => &[
                ("username", "uid"),
                ("display_name", "displayName"),
                ("email", "mail"),
                ("phone", "mobile"),
                ("employee_id", "employeeNumber"),
                ("title", "title"),
                ("attrs.telephone_number", "telephoneNumber"),
            ],
        };
        let mut map: BTreeMap<String, String> = defaults
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (field, attr) in &self.account_attributes {
            let known = ACCOUNT_MAP_FIELDS.contains(&field.as_str())
                || field.strip_prefix("attrs.").is_some_and(|a| !a.is_empty());
            if !known {
                return Err(Error::config(format!(
                    "account_attributes: unknown field {field:?} (use one of {ACCOUNT_MAP_FIELDS:?} or attrs.NAME)"
                )));
            }
            if attr.is_empty() {
                map.remove(field);
            } else {
                map.insert(field.clone(), attr.clone());
            }
        }
        if !map.contains_key("username") {
            return Err(Error::config("account_attributes: username must be mapped"));
        }
        Ok(map)
    }

    /// The disable marker in effect (non-AD); `None` means disabling is unsupported.
    pub fn disable_marker(&self) -> Option<DisableMarker> {
        match (&self.disable_marker, self.dialect) {
            (Some(m), _) => Some(m.clone()),
            (None, Dialect::Openldap) => Some(DisableMarker {
                attribute: "pwdAccountLockedTime".into(),
                value: "000001010000Z".into(),
            }),
            (None, _) => None,
        }
    }

    /// The incremental mode in effect.
    pub fn incremental_mode(&self) -> IncrementalMode {
        match (self.incremental, self.dialect) {
            (Some(m), _) => m,
            (None, Dialect::Openldap) => IncrementalMode::Syncrepl,
            (None, Dialect::Ad) => IncrementalMode::Dirsync,
            (None, Dialect::Generic) => IncrementalMode::ModifyTimestamp,
        }
    }

    /// Checks the settings that can be checked without a server.
    pub fn validate(&self) -> Result<()> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
            return Err(Error::config(format!(
                "url {:?} must start with ldap:// or ldaps://",
                self.url
            )));
        }
        if self.starttls && lower.starts_with("ldaps://") {
            return Err(Error::config("starttls is for ldap:// URLs, not ldaps://"));
        }
        crate::dn::Dn::parse(&self.base_dn).map_err(|e| Error::config(format!("base_dn: {e}")))?;
        if self.page_size == 0 {
            return Err(Error::config("page_size must be at least 1"));
        }
        SecretRef::from_keys(
            "bind_password",
            self.bind_password_env.as_deref(),
            self.bind_password_file.as_deref(),
        )?;
        if self.bind_dn.is_some() != self.has_password() {
            return Err(Error::config(
                "bind_dn and bind_password (`bind_password_env` or `bind_password_file`) go together",
            ));
        }
        if self.has_password()
            && lower.starts_with("ldap://")
            && !self.starttls
            && !self.allow_plaintext
        {
            return Err(Error::config(format!(
                "url {:?}: the bind password would cross the network in clear text (ldap:// \
                 without StartTLS); use an ldaps:// URL or `starttls = true`, or set \
                 `allow_plaintext = true` to accept that",
                self.url
            )));
        }
        self.account_map()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_redacts() {
        let dir = std::env::temp_dir().join(format!("idsync-ldap-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret-Pa55\n").unwrap();
        let mut cfg: LdapConfig = serde_json::from_value(serde_json::json!({
            "url": "ldaps://dc1.example.test",
            "base_dn": "DC=example,DC=test",
            "dialect": "ad",
            "bind_dn": "admin@example.test",
            "bind_password_file": pw,
            "account_attributes": {"phone": "telephoneNumber", "title": ""}
        }))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.password(), "", "not read before read_secrets");
        cfg.read_secrets().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cfg.anchor_attr(), "objectGUID");
        assert_eq!(cfg.incremental_mode(), IncrementalMode::Dirsync);
        let map = cfg.account_map().unwrap();
        assert_eq!(map["username"], "sAMAccountName");
        assert_eq!(map["phone"], "telephoneNumber");
        assert!(!map.contains_key("title"));
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
        assert_eq!(cfg.password(), "s3cret-Pa55");
    }

    #[test]
    fn a_password_in_clear_text_needs_allow_plaintext() {
        let mut cfg = LdapConfig::new("ldap://ldap.example.test", "dc=x", Dialect::Openldap)
            .with_bind("cn=admin,dc=x", "pw");
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.kind(), idsync_core::ErrorKind::ConfigInvalid);
        assert!(e.message().contains("clear text"), "{e}");
        assert!(e.message().contains("allow_plaintext"), "{e}");
        assert!(!e.message().contains("pw\""), "{e}");
        cfg.starttls = true;
        cfg.validate().unwrap();
        cfg.starttls = false;
        cfg.allow_plaintext = true;
        cfg.validate().unwrap();
        let tls = LdapConfig::new("LDAPS://ldap.example.test", "dc=x", Dialect::Openldap)
            .with_bind("cn=admin,dc=x", "pw");
        tls.validate().unwrap();
        // anonymous binds send no password
        LdapConfig::new("ldap://ldap.example.test", "dc=x", Dialect::Openldap)
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let bad = serde_json::from_value::<LdapConfig>(serde_json::json!({
            "url": "ldap://x", "base_dn": "dc=x", "bogus": 1
        }));
        assert!(bad.is_err());
        // a password written into the config is refused; a reference is required
        let inline = serde_json::from_value::<LdapConfig>(serde_json::json!({
            "url": "ldaps://x", "base_dn": "dc=x", "bind_dn": "cn=a", "bind_password": "pw"
        }));
        assert!(inline.is_err());
        let both: LdapConfig = serde_json::from_value(serde_json::json!({
            "url": "ldaps://x", "base_dn": "dc=x", "bind_dn": "cn=a",
            "bind_password_env": "A", "bind_password_file": "/b"
        }))
        .unwrap();
        assert!(both.validate().unwrap_err().message().contains("not both"));
        let mut cfg = LdapConfig::new("http://x", "dc=x", Dialect::Openldap);
        assert!(cfg.validate().is_err());
        cfg.url = "ldap://x".into();
        cfg.validate().unwrap();
        cfg.account_attributes.insert("nonsense".into(), "x".into());
        assert_eq!(
            cfg.validate().unwrap_err().kind(),
            idsync_core::ErrorKind::ConfigInvalid
        );
        let mut cfg = LdapConfig::new("ldaps://x", "dc=x", Dialect::Openldap);
        cfg.starttls = true;
        assert!(cfg.validate().is_err());
        let cfg = LdapConfig::new("ldap://x", "dc=x,", Dialect::Openldap);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn dialect_defaults() {
        let o = LdapConfig::new("ldap://x", "dc=x", Dialect::Openldap);
        assert_eq!(o.anchor_attr(), "entryUUID");
        assert_eq!(o.account_rdn_attr(), "uid");
        assert_eq!(o.incremental_mode(), IncrementalMode::Syncrepl);
        assert_eq!(
            o.disable_marker().unwrap().attribute,
            "pwdAccountLockedTime"
        );
        let g = LdapConfig::new("ldap://x", "dc=x", Dialect::Generic);
        assert_eq!(g.incremental_mode(), IncrementalMode::ModifyTimestamp);
        assert!(g.disable_marker().is_none());
        assert_eq!(g.account_filter(), "(objectClass=inetOrgPerson)");
    }
}
