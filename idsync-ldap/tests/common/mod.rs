//! Test harness: one real server per test binary, started by the project's own scripts
//! unless the environment already describes one (as CI's `eval "$(scripts/services/... start)"`
//! does). Each test works in its own random OU.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use idsync_ldap::{Dialect, LdapConfig, LdapDirectory};
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};

pub mod proxy;

/// Connection facts of a running server.
#[derive(Debug, Clone)]
pub struct Server {
    pub vars: HashMap<String, String>,
    pub prefix: &'static str,
    pub dialect: Dialect,
}

impl Server {
    pub fn var(&self, name: &str) -> String {
        self.vars
            .get(&format!("{}{name}", self.prefix))
            .cloned()
            .unwrap_or_else(|| panic!("{}{name} is not known for this server", self.prefix))
    }
    pub fn url(&self) -> String {
        self.var("URL")
    }
    pub fn base_dn(&self) -> String {
        self.var("BASE_DN")
    }
    pub fn bind_dn(&self) -> String {
        self.var("BIND_DN")
    }
    pub fn bind_pw(&self) -> String {
        self.var("BIND_PW")
    }
    pub fn ca_file(&self) -> String {
        self.var("TLS_CA_FILE")
    }
    /// A config for `base_dn` with admin credentials and the test CA. The test servers
    /// listen on loopback, so a password over plain `ldap://` is allowed here.
    pub fn config(&self, base_dn: &str) -> LdapConfig {
        let mut cfg = LdapConfig::new(self.url(), base_dn, self.dialect)
            .with_bind(self.bind_dn(), self.bind_pw())
            .with_ca_file(self.ca_file());
        cfg.allow_plaintext = true;
        cfg
    }
    pub fn directory(&self, base_dn: &str) -> LdapDirectory {
        LdapDirectory::new(self.config(base_dn)).unwrap()
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("services")
        .join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_script(name: &str, datadir: &PathBuf, env: &[(&str, String)]) -> HashMap<String, String> {
    let path = script(name);
    let mut cmd = Command::new("bash");
    cmd.arg(&path).arg("start").arg(datadir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    if !out.status.success() {
        panic!(
            "{} start {} failed ({}); the test server is required, not optional.\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            datadir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn from_env(prefix: &str, keys: &[&str]) -> Option<HashMap<String, String>> {
    let url = std::env::var(format!("{prefix}URL")).ok()?;
    let mut vars = HashMap::new();
    vars.insert(format!("{prefix}URL"), url);
    for k in keys {
        if let Ok(v) = std::env::var(format!("{prefix}{k}")) {
            vars.insert(format!("{prefix}{k}"), v);
        }
    }
    Some(vars)
}

/// The OpenLDAP server of this test binary.
pub fn openldap() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let keys = [
            "BASE_DN",
            "BIND_DN",
            "BIND_PW",
            "TLS_CA_FILE",
            "CONFIG_BIND_DN",
            "CONFIG_BIND_PW",
        ];
        let mut vars = match from_env("LDAP_", &keys) {
            Some(v) => v,
            None => {
                let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("idsync-openldap-{}", std::process::id()));
                run_script(
                    "openldap.sh",
                    &dir,
                    &[
                        ("OPENLDAP_PORT", free_port().to_string()),
                        ("OPENLDAP_LDAPS_PORT", free_port().to_string()),
                        ("OPENLDAP_OWNER_PID", std::process::id().to_string()),
                    ],
                )
            }
        };
        if let Some(v) = std::env::var("LDAPS_URL")
            .ok()
            .or_else(|| vars.get("LDAPS_URL").cloned())
        {
            vars.insert("LDAP_LDAPS_URL".into(), v);
        }
        Server {
            vars,
            prefix: "LDAP_",
            dialect: Dialect::Openldap,
        }
    })
}

/// The Samba AD DC of this test binary (ports 389/636 are fixed, so the data dir is
/// shared by the test binaries and reused: provisioning costs ~11 s once).
pub fn samba() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let vars = match from_env(
            "AD_",
            &["BASE_DN", "BIND_DN", "BIND_PW", "TLS_CA_FILE", "LDAPS_URL"],
        ) {
            Some(v) => v,
            None => {
                let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idsync-samba-ad");
                run_script(
                    "samba-ad.sh",
                    &dir,
                    &[("SAMBA_OWNER_PID", std::process::id().to_string())],
                )
            }
        };
        Server {
            vars,
            prefix: "AD_",
            dialect: Dialect::Ad,
        }
    })
}

/// A raw admin connection for setting up fixtures.
pub async fn admin(server: &Server) -> ldap3::Ldap {
    let (conn, mut ldap) = LdapConnAsync::with_settings(LdapConnSettings::new(), &server.url())
        .await
        .unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&server.bind_dn(), &server.bind_pw())
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

pub fn random_name(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// Creates a fresh random OU under the server's base DN and returns its DN.
pub async fn namespace(server: &Server) -> String {
    let mut ldap = admin(server).await;
    let dn = format!("ou={},{}", random_name("t-"), server.base_dn());
    add(
        &mut ldap,
        &dn,
        &[("objectClass", &["top", "organizationalUnit"])],
    )
    .await;
    dn
}

pub async fn add(ldap: &mut ldap3::Ldap, dn: &str, attrs: &[(&str, &[&str])]) {
    let attrs: Vec<(String, std::collections::HashSet<String>)> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    ldap.add(dn, attrs)
        .await
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

pub async fn modify(ldap: &mut ldap3::Ldap, dn: &str, attr: &str, vals: &[&str]) {
    ldap.modify(
        dn,
        vec![Mod::Replace(
            attr.to_owned(),
            vals.iter().map(|s| (*s).to_owned()).collect(),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

pub async fn read(ldap: &mut ldap3::Ldap, dn: &str, attrs: &[&str]) -> Option<SearchEntry> {
    let res = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .unwrap();
    if res.1.rc == 32 {
        return None;
    }
    let (entries, _) = res.success().unwrap();
    entries.into_iter().next().map(SearchEntry::construct)
}

/// Deletes a subtree, children first.
pub async fn delete_subtree(server: &Server, dn: &str) {
    let mut ldap = admin(server).await;
    let res = ldap
        .search(dn, Scope::Subtree, "(objectClass=*)", vec!["1.1"])
        .await
        .unwrap();
    let mut dns: Vec<String> = res
        .0
        .into_iter()
        .map(|e| SearchEntry::construct(e).dn)
        .collect();
    dns.sort_by_key(|d| {
        std::cmp::Reverse(idsync_ldap::Dn::parse(d).map(|p| p.0.len()).unwrap_or(0))
    });
    for d in dns {
        let _ = ldap.delete(&d).await;
    }
}

/// The conformance harness: every namespace is a fresh random OU seeded through the sink.
#[derive(Debug)]
pub struct Harness {
    pub server: &'static Server,
    pub tweak: fn(&mut LdapConfig),
    pub options: idsync_conformance::Options,
    /// Remove the namespaces seeded before when seeding the next one. AD needs this: the
    /// suite seeds the same fixture more than once per case, and sAMAccountName is unique
    /// in the whole domain. (Cases read only their latest namespace.)
    pub one_namespace_at_a_time: bool,
    pub live: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl idsync_conformance::Harness for Harness {
    fn name(&self) -> String {
        format!("ldap ({:?})", self.server.dialect)
    }

    async fn seed(
        &self,
        orgs: Vec<idsync_core::Org>,
        accounts: Vec<idsync_core::Account>,
    ) -> idsync_core::Result<std::sync::Arc<dyn idsync_core::Sink>> {
        use idsync_core::{Anchor, Op, Sink};
        if self.one_namespace_at_a_time {
            let old: Vec<String> = self.live.lock().unwrap().drain(..).collect();
            for dn in old {
                delete_subtree(self.server, &dn).await;
            }
        }
        let ns = match self.server.dialect {
            Dialect::Ad => {
                let mut ldap = admin(self.server).await;
                let dn = format!("OU={},{}", random_name("c-"), self.server.base_dn());
                add(
                    &mut ldap,
                    &dn,
                    &[("objectClass", &["top", "organizationalUnit"])],
                )
                .await;
                dn
            }
            _ => namespace(self.server).await,
        };
        self.live.lock().unwrap().push(ns.clone());
        let mut cfg = self.server.config(&ns);
        (self.tweak)(&mut cfg);
        let dir = LdapDirectory::new(cfg)?;
        let mut ids: HashMap<Anchor, Anchor> = HashMap::new();
        for mut o in orgs {
            o.parent = o.parent.map(|p| ids.get(&p).cloned().unwrap_or(p));
            let proposed = o.anchor.clone();
            let got = dir.apply(&Op::CreateOrg { org: o }).await?.anchor.unwrap();
            ids.insert(proposed, got);
        }
        let mut managers = Vec::new();
        let mut acc_ids: HashMap<Anchor, Anchor> = HashMap::new();
        for mut a in accounts {
            a.orgs = a
                .orgs
                .iter()
                .map(|o| ids.get(o).cloned().unwrap_or_else(|| o.clone()))
                .collect();
            let proposed = a.anchor.clone();
            if let Some(m) = a.manager.take() {
                managers.push((proposed.clone(), m));
            }
            let got = dir
                .apply(&Op::CreateAccount { account: a })
                .await?
                .anchor
                .unwrap();
            acc_ids.insert(proposed, got);
        }
        for (who, m) in managers {
            let mut patch = idsync_core::Patch::new();
            let target = acc_ids.get(&m).cloned().unwrap_or(m);
            patch.insert(
                "manager".into(),
                serde_json::Value::String(target.into_string()),
            );
            dir.apply(&Op::UpdateAccount {
                anchor: acc_ids[&who].clone(),
                changes: patch,
            })
            .await?;
        }
        Ok(std::sync::Arc::new(dir))
    }

    async fn cleanup(
        &self,
        sink: std::sync::Arc<dyn idsync_core::Sink>,
    ) -> idsync_core::Result<()> {
        let desc = sink.describe();
        // instance = "<url> <base_dn>"
        if let Some((_, base)) = desc.instance.split_once(' ') {
            delete_subtree(self.server, base).await;
        }
        Ok(())
    }

    async fn bad_credentials(&self) -> Option<std::sync::Arc<dyn idsync_core::Source>> {
        let cfg = self
            .server
            .config(&self.server.base_dn())
            .with_bind(self.server.bind_dn(), "definitely-wrong");
        Some(std::sync::Arc::new(LdapDirectory::new(cfg).unwrap()))
    }

    fn missing_anchor(&self, _kind: idsync_core::EntityKind) -> idsync_core::Anchor {
        use rand::Rng;
        let b: [u8; 16] = rand::rng().random();
        idsync_core::Anchor::new(idsync_ldap::guid_to_string(&b).unwrap())
    }

    fn options(&self) -> idsync_conformance::Options {
        self.options.clone()
    }
}
