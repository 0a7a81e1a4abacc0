//! Providers: the `[providers.NAME]` tables, selected by `type`, and how each is built.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use idsync_core::{Account, Anchor, Hub, MemoryAdapter, Org, Sink, Source, Status, Store, Target};
use serde::Deserialize;
use serde_json::Value;

use crate::config::ConfigError;
use crate::error::CliError;

/// A `[providers.NAME]` table; `type` says which provider it is.
///
/// LDAP and DingTalk tables are kept as TOML until they are built, because their secrets
/// are named (`bind_password_env`, `app_secret_file`, ...) rather than written, and are
/// read only then.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// In-memory data: inline, or generated sample data.
    Memory(MemoryConfig),
    /// The hub directory in the configured store.
    Hub(HubConfig),
    /// CSV files (`idsync_csv::CsvConfig`; paths relative to the config file's folder).
    #[cfg(feature = "provider-csv")]
    Csv(Box<idsync_csv::CsvConfig>),
    /// CSV files (this build lacks the `provider-csv` feature).
    #[cfg(not(feature = "provider-csv"))]
    Csv(toml::Table),
    /// OpenLDAP or Active Directory (`idsync_ldap::LdapConfig`, with `bind_password_env`
    /// or `bind_password_file` instead of `bind_password`).
    Ldap(toml::Table),
    /// DingTalk (`idsync_dingtalk::DingTalkConfig`, with `app_secret_env` or
    /// `app_secret_file`; callback `token_env`/`token_file`, `aes_key_env`/`aes_key_file`).
    Dingtalk(toml::Table),
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

impl ProviderConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::Memory(_) => "memory",
            ProviderConfig::Hub(_) => "hub",
            ProviderConfig::Csv(_) => "csv",
            ProviderConfig::Ldap(_) => "ldap",
            ProviderConfig::Dingtalk(_) => "dingtalk",
        }
    }

    /// Whether it can be a job's sink.
    pub fn can_sink(&self) -> bool {
        true
    }

    /// Whether it can be a job's source.
    pub fn can_source(&self) -> bool {
        true
    }

    /// Problems serde cannot see.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            ProviderConfig::Memory(m) => {
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
            }
            ProviderConfig::Hub(_) => {}
            #[cfg(feature = "provider-csv")]
            ProviderConfig::Csv(c) => {
                if c.page_size == 0 {
                    out.push("page_size must be at least 1".into());
                }
            }
            #[cfg(not(feature = "provider-csv"))]
            ProviderConfig::Csv(_) => out.push(missing_feature("csv")),
            ProviderConfig::Ldap(t) => {
                if let Err(e) = typed_ldap(t, false) {
                    out.push(e.message);
                }
            }
            ProviderConfig::Dingtalk(t) => {
                if let Err(e) = typed_dingtalk(t, false) {
                    out.push(e.message);
                }
            }
        }
        out
    }
}

#[cfg_attr(
    all(
        feature = "provider-csv",
        feature = "provider-ldap",
        feature = "provider-dingtalk"
    ),
    allow(dead_code)
)]
fn missing_feature(provider: &str) -> String {
    format!(
        "this idsync was built without the `provider-{provider}` feature \
         (cargo build -p idsync-cli --features provider-{provider})"
    )
}

/// Take a secret named by `KEY_env` / `KEY_file` out of a table. With `resolve` false
/// (offline validation) only the names are checked and a placeholder is returned.
fn take_secret(
    t: &mut toml::Table,
    key: &str,
    what: &str,
    required: bool,
    resolve: bool,
) -> Result<Option<secrecy::SecretString>, ConfigError> {
    if t.contains_key(key) {
        return Err(ConfigError::new(format!(
            "{what}: secrets are not written in the config; name an environment variable \
             with `{key}_env` or a file with `{key}_file`"
        )));
    }
    let mut name = |suffix: &str| -> Result<Option<String>, ConfigError> {
        let k = format!("{key}_{suffix}");
        match t.remove(&k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ConfigError::new(format!(
                "{what}: `{k}` must be a string, not a {}",
                other.type_str()
            ))),
        }
    };
    let env = name("env")?;
    let file = name("file")?;
    if env.is_none() && file.is_none() && !required {
        return Ok(None);
    }
    if !resolve {
        return match (&env, &file) {
            (Some(_), Some(_)) => Err(ConfigError::new(format!(
                "{what}: give either `{key}_env` or `{key}_file`, not both"
            ))),
            (None, None) => Err(ConfigError::new(format!(
                "{what}: missing; set `{key}_env` (an environment variable name) or \
                 `{key}_file` (a file path)"
            ))),
            _ => Ok(Some(secrecy::SecretString::from("placeholder"))),
        };
    }
    crate::secret::resolve(
        &format!("{what} ({key})"),
        env.as_deref(),
        file.as_deref().map(Path::new),
    )
    .map(Some)
}

#[cfg(any(feature = "provider-ldap", feature = "provider-dingtalk"))]
fn serde_msg(e: &toml::de::Error) -> ConfigError {
    ConfigError::new(e.message().trim_end().to_owned())
}

/// The LDAP config of a `type = "ldap"` table; the password is read when `resolve`.
#[cfg(feature = "provider-ldap")]
fn typed_ldap(t: &toml::Table, resolve: bool) -> Result<idsync_ldap::LdapConfig, ConfigError> {
    let mut t = t.clone();
    let pw = take_secret(&mut t, "bind_password", "ldap", false, resolve)?;
    let mut cfg: idsync_ldap::LdapConfig = t.try_into().map_err(|e| serde_msg(&e))?;
    cfg.bind_password = pw;
    cfg.validate()
        .map_err(|e| ConfigError::new(e.message().to_owned()))?;
    Ok(cfg)
}

#[cfg(not(feature = "provider-ldap"))]
fn typed_ldap(_t: &toml::Table, _resolve: bool) -> Result<(), ConfigError> {
    Err(ConfigError::new(missing_feature("ldap")))
}

/// The DingTalk config of a `type = "dingtalk"` table; secrets are read when `resolve`.
#[cfg(feature = "provider-dingtalk")]
fn typed_dingtalk(
    t: &toml::Table,
    resolve: bool,
) -> Result<idsync_dingtalk::DingTalkConfig, ConfigError> {
    let mut t = t.clone();
    let app_secret = take_secret(&mut t, "app_secret", "dingtalk", true, resolve)?;
    let callback = match t.get_mut("callback") {
        Some(toml::Value::Table(cb)) => {
            let token = take_secret(cb, "token", "dingtalk callback", true, resolve)?;
            let aes = take_secret(cb, "aes_key", "dingtalk callback", true, resolve)?;
            // Placeholders satisfy serde; the real secrets are set on the typed config.
            cb.insert("token".into(), toml::Value::String("placeholder".into()));
            cb.insert("aes_key".into(), toml::Value::String("placeholder".into()));
            token.zip(aes)
        }
        Some(_) => return Err(ConfigError::new("dingtalk: `callback` must be a table")),
        None => None,
    };
    t.insert(
        "app_secret".into(),
        toml::Value::String("placeholder".into()),
    );
    let mut cfg: idsync_dingtalk::DingTalkConfig = t.try_into().map_err(|e| serde_msg(&e))?;
    if let Some(secret) = app_secret {
        cfg.app_secret = secret;
    }
    if let (Some(cb), Some((token, aes))) = (cfg.callback.as_mut(), callback) {
        cb.token = token;
        cb.aes_key = aes;
    }
    if resolve {
        cfg.validate()
            .map_err(|e| ConfigError::new(e.message().to_owned()))?;
    }
    Ok(cfg)
}

#[cfg(not(feature = "provider-dingtalk"))]
fn typed_dingtalk(_t: &toml::Table, _resolve: bool) -> Result<(), ConfigError> {
    Err(ConfigError::new(missing_feature("dingtalk")))
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
    fn both<T: Sink + 'static>(t: T) -> Built {
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
}

/// Build a provider for a role. Secrets are read here, from the environment or files.
pub async fn build(
    name: &str,
    cfg: &ProviderConfig,
    ctx: &BuildContext,
    role: Role,
) -> Result<Built, CliError> {
    #[cfg(not(feature = "provider-csv"))]
    let _ = role;
    match cfg {
        ProviderConfig::Memory(m) => {
            let (orgs, accounts) = match m.generate {
                Some(g) => sample_directory(g.orgs, g.accounts),
                None => (
                    m.orgs.iter().map(Org::from).collect(),
                    m.accounts.iter().map(Account::from).collect(),
                ),
            };
            let mut a = MemoryAdapter::with_data(name, orgs, accounts);
            if m.assign_anchors {
                a = a.assigning_anchors();
            }
            if let Some(n) = m.max_page_size {
                a = a.with_max_page_size(n);
            }
            Ok(Built::both(a))
        }
        ProviderConfig::Hub(_) => {
            let hub = Arc::new(Hub::new(ctx.store.clone()));
            Ok(Built {
                source: hub.clone(),
                sink: Some(Target::Hub(hub)),
            })
        }
        #[cfg(feature = "provider-csv")]
        ProviderConfig::Csv(c) => {
            let mut c = (**c).clone();
            c.accounts = ctx.resolve(&c.accounts);
            c.orgs = c.orgs.as_deref().map(|p| ctx.resolve(p));
            match role {
                Role::Source => {
                    let src = idsync_csv::CsvSource::open(c)?;
                    Ok(Built {
                        source: Arc::new(src),
                        sink: None,
                    })
                }
                Role::Sink => Ok(Built::both(idsync_csv::CsvSink::open(c)?)),
            }
        }
        #[cfg(not(feature = "provider-csv"))]
        ProviderConfig::Csv(_) => Err(CliError::config_msg(missing_feature("csv"))),
        ProviderConfig::Ldap(t) => build_ldap(name, t),
        ProviderConfig::Dingtalk(t) => build_dingtalk(name, t),
    }
}

#[cfg(feature = "provider-ldap")]
fn build_ldap(name: &str, t: &toml::Table) -> Result<Built, CliError> {
    let cfg = typed_ldap(t, true).map_err(|e| prefix(name, e))?;
    Ok(Built::both(idsync_ldap::LdapDirectory::new(cfg)?))
}

#[cfg(not(feature = "provider-ldap"))]
fn build_ldap(name: &str, t: &toml::Table) -> Result<Built, CliError> {
    typed_ldap(t, true).map_err(|e| prefix(name, e))?;
    Err(CliError::config_msg(missing_feature("ldap")))
}

#[cfg(feature = "provider-dingtalk")]
fn build_dingtalk(name: &str, t: &toml::Table) -> Result<Built, CliError> {
    let cfg = typed_dingtalk(t, true).map_err(|e| prefix(name, e))?;
    let source = idsync_dingtalk::DingTalkSource::new(cfg.clone())?;
    let sink = idsync_dingtalk::DingTalkSink::new(cfg)?;
    Ok(Built {
        source: Arc::new(source),
        sink: Some(Arc::new(sink).into()),
    })
}

#[cfg(not(feature = "provider-dingtalk"))]
fn build_dingtalk(name: &str, t: &toml::Table) -> Result<Built, CliError> {
    typed_dingtalk(t, true).map_err(|e| prefix(name, e))?;
    Err(CliError::config_msg(missing_feature("dingtalk")))
}

fn prefix(name: &str, mut e: ConfigError) -> CliError {
    e.message = format!("provider {name}: {}", e.message);
    CliError::config(e)
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

    fn ctx() -> BuildContext {
        BuildContext {
            store: Arc::new(idsync_core::MemoryStore::new()),
            base_dir: ".".into(),
        }
    }

    #[cfg(feature = "provider-ldap")]
    #[tokio::test]
    async fn ldap_password_stays_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "sekrit-ldap-pw\n").unwrap();
        let text = format!(
            "[providers.ad]\ntype = \"ldap\"\nurl = \"ldap://127.0.0.1:9\"\n\
             base_dn = \"dc=example,dc=org\"\nbind_dn = \"cn=admin\"\n\
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

        // Written inline, a secret is refused.
        let cfg = crate::Config::parse(
            Path::new("t.toml"),
            "[providers.dt]\ntype = \"dingtalk\"\napp_key = \"k\"\napp_secret = \"x\"\n".into(),
        )
        .unwrap();
        let errs = cfg.validate();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("app_secret_env"), "{}", errs[0]);
        assert_eq!(errs[0].position, Some((1, 1)));
    }
}
