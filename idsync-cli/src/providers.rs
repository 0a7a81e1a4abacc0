//! Providers: the `[providers.NAME]` tables, selected by `type`, and how each is built.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use idsync_core::{Account, Anchor, Hub, MemoryAdapter, Org, Sink, Source, Status, Store};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CliError;

/// A `[providers.NAME]` table; `type` says which provider it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// In-memory data: inline, or generated sample data.
    Memory(MemoryConfig),
    /// The hub directory in the configured store.
    Hub(HubConfig),
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
        }
    }

    /// Whether it can be a job's sink.
    pub fn can_sink(&self) -> bool {
        match self {
            ProviderConfig::Memory(_) | ProviderConfig::Hub(_) => true,
        }
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
        }
        out
    }
}

/// A built provider: always a source, a sink when it takes writes.
#[derive(Debug, Clone)]
pub struct Built {
    /// As a source.
    pub source: Arc<dyn Source>,
    /// As a sink.
    pub sink: Option<Arc<dyn Sink>>,
}

impl Built {
    fn both<T: Sink + 'static>(t: T) -> Built {
        let t = Arc::new(t);
        Built {
            source: t.clone(),
            sink: Some(t),
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

/// Build a provider. Secrets are read here, from the environment or files.
pub async fn build(
    name: &str,
    cfg: &ProviderConfig,
    ctx: &BuildContext,
) -> Result<Built, CliError> {
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
        ProviderConfig::Hub(_) => Ok(Built::both(Hub::new(ctx.store.clone()))),
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
}
