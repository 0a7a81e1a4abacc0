//! Just-in-time provisioning of a verified login into the hub, through the engine.
//!
//! The login's claims become a source account (anchor from `iss`+`sub` or `tid`+`oid`,
//! every claim under `attrs.CLAIM`); the provider's job maps it with its claim rules and
//! plans it with [`Engine::plan_changes`]: map → correlate → plan → apply, journaled and
//! audited like any other run. What links is decided here, before the engine correlates:
//!
//! * already linked: the login updates the fields it owns (only those that changed);
//! * not linked, email verified (or the issuer trusted for email): the job correlates by
//!   `link_on` (default `email`), so an existing hub account with that email is linked;
//! * not linked, email **not** verified: the job has no correlation rules at all (a
//!   username is as easy to claim as an email) and its mapping leaves `email` out, so the
//!   login can never take over an existing account; when an existing account has that
//!   email, the policy creates a separate account or refuses the login.
//!
//! A login never owns `status`: a disabled hub account stays disabled, and its login is
//! refused. Every login writes an `oidc_login` audit entry on the hub account saying which
//! path it took; a refused login writes `oidc_login_refused` on the accounts concerned.

use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, AuditEntry, ChangeSet, Descriptor, Engine, EntityKind, Error, Hub, Job, Op,
    OpRecord, Org, Page, PageRequest, Source, Status,
};
use idsync_core::{Capabilities, Entity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{AnchorClaims, UnverifiedPolicy};
use crate::error::{LoginError, LoginErrorKind};
use crate::provider::{Claims, OidcProvider};

/// Which path a login took to its hub account (also written to the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPath {
    /// The hub account was linked to this login before.
    Linked,
    /// First login: linked to an existing hub account by a verified email.
    LinkedVerifiedEmail,
    /// First login: a new hub account.
    Created,
    /// First login without a verified email whose email belongs to an existing hub
    /// account: a separate hub account was created, the existing one left alone.
    CreatedSeparateUnverified,
}

impl LinkPath {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPath::Linked => "linked",
            LinkPath::LinkedVerifiedEmail => "linked_verified_email",
            LinkPath::Created => "created",
            LinkPath::CreatedSeparateUnverified => "created_separate_unverified_email",
        }
    }
}

/// A provisioned login: what the application gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    /// The provider's name.
    pub provider: String,
    /// The login's own anchor (`iss|sub`, or `entra:tid:oid`).
    pub subject: Anchor,
    /// The hub account, as it is after the login.
    pub account: Account,
    /// How the login reached it.
    pub path: LinkPath,
    /// Whether the email was taken as verified.
    pub email_verified: bool,
    /// Fields the login changed on the hub account (empty when nothing changed).
    pub changed: Vec<String>,
}

/// The job's source: stands for the provider. An OIDC provider has no directory to read,
/// so every read answers `unsupported` (accounts arrive by login only), and a full run of
/// the job fails instead of reading an empty directory.
#[derive(Debug, Clone)]
pub struct LoginSource {
    issuer: String,
}

impl LoginSource {
    /// The source of the provider at `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        LoginSource {
            issuer: issuer.into(),
        }
    }

    fn no_directory(&self) -> Error {
        Error::unsupported(format!(
            "OIDC provider {} has no directory to read: accounts arrive by login",
            self.issuer
        ))
    }
}

#[async_trait]
impl Source for LoginSource {
    fn describe(&self) -> Descriptor {
        Descriptor::new("oidc", self.issuer.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            orgs: false,
            ..Capabilities::read_only()
        }
    }

    async fn check(&self) -> idsync_core::Result<()> {
        Ok(())
    }

    async fn orgs(&self, _page: PageRequest) -> idsync_core::Result<Page<Org>> {
        Err(self.no_directory())
    }

    async fn accounts(&self, _page: PageRequest) -> idsync_core::Result<Page<Account>> {
        Err(self.no_directory())
    }

    async fn org(&self, _anchor: &Anchor) -> idsync_core::Result<Option<Org>> {
        Err(self.no_directory())
    }

    async fn account(&self, _anchor: &Anchor) -> idsync_core::Result<Option<Account>> {
        Err(self.no_directory())
    }

    async fn find_accounts(&self, _field: &str, _value: &str) -> idsync_core::Result<Vec<Account>> {
        Err(self.no_directory())
    }
}

/// `email_verified` as providers send it: `true`, or the string `"true"`.
pub fn email_verified(claims: &Claims) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn claim_str<'a>(claims: &'a Claims, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The anchor of a login.
pub fn subject_anchor(mode: AnchorClaims, claims: &Claims) -> Result<Anchor, LoginError> {
    let need = |name: &str| {
        claim_str(claims, name).ok_or_else(|| {
            LoginError::new(
                LoginErrorKind::InvalidClaims,
                format!("the {name} claim is missing; the anchor is made of it"),
            )
        })
    };
    Ok(match mode {
        AnchorClaims::IssSub => Anchor::new(format!("{}|{}", need("iss")?, need("sub")?)),
        AnchorClaims::TidOid => Anchor::new(format!("entra:{}:{}", need("tid")?, need("oid")?)),
    })
}

/// Provisions verified logins of one provider into the hub.
#[derive(Debug)]
pub struct Provisioner {
    engine: Engine,
    hub: Arc<Hub>,
    /// One login at a time per provider: two first logins of one person must not race to
    /// create two accounts.
    lock: tokio::sync::Mutex<()>,
}

impl Provisioner {
    /// Provision into `hub` (the hub of `engine`'s store).
    pub fn new(engine: Engine, hub: Arc<Hub>) -> Self {
        Provisioner {
            engine,
            hub,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn job(&self, p: &OidcProvider, verified: bool) -> Job {
        let cfg = p.config();
        let mut job = Job::new(
            cfg.job_name(p.name()),
            Arc::new(LoginSource::new(p.issuer())),
            self.hub.clone(),
        )
        .with_mapping(cfg.mapping(verified))
        .with_correlation(if verified {
            cfg.link_on.clone()
        } else {
            Vec::new()
        });
        job.sync_orgs = false;
        job
    }

    /// The hub account this provider's job linked to `source`, if any.
    async fn linked(&self, job: &str, source: &Anchor) -> Result<Option<Anchor>, LoginError> {
        let links = self
            .engine
            .store()
            .links_of(job, EntityKind::Account, std::slice::from_ref(source))
            .await?;
        Ok(links.into_iter().next().map(|l| l.target))
    }

    async fn audit(
        &self,
        job: &str,
        run_id: &str,
        anchor: &Anchor,
        op: &str,
        after: Value,
    ) -> Result<(), LoginError> {
        let entry = AuditEntry {
            run_id: run_id.to_owned(),
            job: job.to_owned(),
            kind: EntityKind::Account,
            anchor: anchor.clone(),
            op: idsync_core::AuditAction::Event(op.to_owned()),
            before: None,
            after: Some(after),
            at: chrono::Utc::now(),
        };
        let rec = OpRecord {
            job: job.to_owned(),
            kind: EntityKind::Account,
            journal: None,
            link: None,
            shadow: None,
            audit: Some(entry),
        };
        self.engine.store().record(&rec).await?;
        Ok(())
    }

    async fn refuse(
        &self,
        job: &str,
        anchors: &[Anchor],
        err: LoginError,
        facts: Value,
    ) -> Result<Login, LoginError> {
        let run_id = format!(
            "{job}-refused-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")
        );
        let mut facts = facts;
        facts["reason"] = Value::String(err.kind().as_str().to_owned());
        for a in anchors {
            self.audit(job, &run_id, a, "oidc_login_refused", facts.clone())
                .await?;
        }
        tracing::warn!(job, reason = err.kind().as_str(), "oidc login refused");
        Err(err)
    }

    /// Provision the verified claims of a login of provider `p`.
    pub async fn login(&self, p: &OidcProvider, claims: &Claims) -> Result<Login, LoginError> {
        self.login_inner(p, claims)
            .await
            .map_err(|e| e.with_provider(p.name()))
    }

    async fn login_inner(&self, p: &OidcProvider, claims: &Claims) -> Result<Login, LoginError> {
        let cfg = p.config();
        let subject = subject_anchor(cfg.anchor, claims)?;
        let verified = cfg.trust_email || email_verified(claims);
        let email = cfg
            .claims
            .get("email")
            .and_then(|c| claim_str(claims, c))
            .map(str::to_owned);
        if let Some(c) = cfg.claims.get("username")
            && claim_str(claims, c).is_none()
        {
            return Err(LoginError::new(
                LoginErrorKind::InvalidClaims,
                format!("the {c} claim is missing or empty; username is mapped from it"),
            ));
        }
        let job = self.job(p, verified);
        let facts = json!({
            "provider": p.name(),
            "issuer": p.issuer(),
            "subject": subject.as_str(),
            "email_verified": verified,
        });
        // The source account: every claim under attrs; the job's rules map it.
        let mut source = Account::new(subject.clone(), subject.as_str());
        for (k, v) in claims {
            if !v.is_null() {
                source.attrs.insert(k.clone(), v.clone());
            }
        }

        let _one_at_a_time = self.lock.lock().await;
        let linked = self.linked(&job.name, &subject).await?;
        let mut path = LinkPath::Created;
        if let Some(t) = &linked {
            path = LinkPath::Linked;
            if let Some(acc) = self.hub.account(t).await?
                && acc.status == Status::Disabled
            {
                let err = LoginError::new(
                    LoginErrorKind::AccountDisabled,
                    format!("hub account {t} is disabled"),
                );
                return self
                    .refuse(&job.name, std::slice::from_ref(t), err, facts)
                    .await;
            }
        } else if !verified && let Some(email) = &email {
            // Not a correlation key (the job has none), but an existing account with this
            // address decides the policy.
            let taken: Vec<Anchor> = self
                .hub
                .find_accounts("email", email)
                .await?
                .into_iter()
                .map(|a| a.anchor)
                .filter(|a| a != &subject)
                .collect();
            if !taken.is_empty() {
                match cfg.unverified_email {
                    UnverifiedPolicy::Refuse => {
                        let err = LoginError::new(
                            LoginErrorKind::LinkRefused,
                            "the email is not verified and belongs to an existing account",
                        );
                        return self.refuse(&job.name, &taken, err, facts).await;
                    }
                    UnverifiedPolicy::Separate => path = LinkPath::CreatedSeparateUnverified,
                }
            }
        }

        let cs = ChangeSet {
            account_upserts: vec![source],
            complete: true,
            ..ChangeSet::default()
        };
        let plan = self.engine.plan_changes(&job, cs, None).await?;
        if !plan.conflicts.is_empty() {
            let anchors: Vec<Anchor> = plan
                .conflicts
                .iter()
                .flat_map(|c| c.candidates.iter().cloned())
                .collect();
            let err = LoginError::new(
                LoginErrorKind::LinkRefused,
                format!(
                    "{} existing hub accounts match this login; none is linked",
                    anchors.len()
                ),
            );
            return self.refuse(&job.name, &anchors, err, facts).await;
        }
        if plan.guard.stopped {
            return Err(LoginError::new(
                LoginErrorKind::Provisioning,
                format!("run {} crossed the guard", plan.run_id),
            ));
        }
        let mut target = linked.clone();
        if target.is_none()
            && let Some(l) = plan.links.iter().find(|l| l.source == subject)
        {
            // a verified email correlated: refuse before writing when that account is disabled
            path = LinkPath::LinkedVerifiedEmail;
            if let Some(acc) = self.hub.account(&l.target).await?
                && acc.status == Status::Disabled
            {
                let err = LoginError::new(
                    LoginErrorKind::AccountDisabled,
                    format!("hub account {} is disabled", l.target),
                );
                return self
                    .refuse(&job.name, std::slice::from_ref(&l.target), err, facts)
                    .await;
            }
            target = Some(l.target.clone());
        }
        let mut changed: Vec<String> = Vec::new();
        for op in &plan.ops {
            match &op.op {
                Op::UpdateAccount { changes, .. } => changed.extend(changes.keys().cloned()),
                Op::CreateAccount { account } => {
                    changed.extend(
                        cfg.claims
                            .keys()
                            .filter(|f| !account.get(f).is_null())
                            .cloned(),
                    );
                }
                _ => {}
            }
        }
        let report = self.engine.apply(&job, &plan).await?;
        if report.counts.failed > 0 || report.counts.skipped > 0 {
            let why = report
                .outcomes
                .iter()
                .find_map(|o| o.error.as_ref().map(|e| e.message.clone()))
                .unwrap_or_else(|| "an op was skipped".into());
            return Err(LoginError::new(
                LoginErrorKind::Provisioning,
                format!("run {}: {why}", report.run_id),
            ));
        }
        let target = match target {
            Some(t) => t,
            None => report
                .outcomes
                .iter()
                .find(|o| o.source.as_ref() == Some(&subject) && o.anchor.is_some())
                .and_then(|o| o.anchor.clone())
                .ok_or_else(|| {
                    LoginError::new(
                        LoginErrorKind::Provisioning,
                        format!("run {} created no account for this login", report.run_id),
                    )
                })?,
        };
        let account = self.hub.account(&target).await?.ok_or_else(|| {
            LoginError::new(
                LoginErrorKind::Provisioning,
                format!("hub account {target} is gone"),
            )
        })?;
        let mut facts = facts;
        facts["path"] = Value::String(path.as_str().to_owned());
        facts["changed"] = json!(changed);
        self.audit(&job.name, &report.run_id, &target, "oidc_login", facts)
            .await?;
        tracing::info!(job = %job.name, path = path.as_str(), "oidc login provisioned");
        Ok(Login {
            provider: p.name().to_owned(),
            subject,
            account,
            path,
            email_verified: verified,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(m) => m,
            _ => Claims::new(),
        }
    }

    #[test]
    fn email_verified_takes_true_and_the_string_true_only() {
        assert!(email_verified(&claims(json!({"email_verified": true}))));
        assert!(email_verified(&claims(json!({"email_verified": "true"}))));
        assert!(email_verified(&claims(json!({"email_verified": "TRUE"}))));
        assert!(!email_verified(&claims(json!({"email_verified": "false"}))));
        assert!(!email_verified(&claims(json!({"email_verified": 1}))));
        assert!(!email_verified(&claims(json!({}))));
    }

    #[test]
    fn anchors_from_iss_sub_or_tid_oid() {
        let c = claims(
            json!({"iss": "https://login.microsoftonline.com/t1/v2.0", "sub": "per-app",
                              "tid": "t1", "oid": "o1"}),
        );
        assert_eq!(
            subject_anchor(AnchorClaims::IssSub, &c)
                .map(|a| a.into_string())
                .ok(),
            Some("https://login.microsoftonline.com/t1/v2.0|per-app".to_owned())
        );
        assert_eq!(
            subject_anchor(AnchorClaims::TidOid, &c)
                .map(|a| a.into_string())
                .ok(),
            Some("entra:t1:o1".to_owned())
        );
        let e = subject_anchor(
            AnchorClaims::TidOid,
            &claims(json!({"iss": "x", "sub": "y"})),
        );
        assert!(e.is_err_and(|e| e.message().contains("tid")));
    }
}
