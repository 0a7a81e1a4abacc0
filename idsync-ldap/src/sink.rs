//! The [`Sink`] side of [`LdapDirectory`]: add, modify (changed attributes only), modify-DN
//! for renames and moves, disable/enable, delete.

use std::collections::HashSet;

use async_trait::async_trait;
use ldap3::{Ldap, Mod};
use serde_json::Value;

use idsync_core::{Account, Anchor, Applied, Error, ErrorKind, Op, Org, Patch, Result, Sink};

use crate::client;
use crate::config::Dialect;
use crate::dn::{Dn, Rdn};
use crate::error::{LdapError, PROVIDER, check};
use crate::mapping::{self, UAC_DISABLED, UAC_NORMAL};
use crate::source::LdapDirectory;

type Attr = (Vec<u8>, HashSet<Vec<u8>>);

fn attr(name: &str, values: impl IntoIterator<Item = String>) -> Attr {
    (
        name.as_bytes().to_vec(),
        values.into_iter().map(String::into_bytes).collect(),
    )
}

fn replace(name: &str, values: Vec<String>) -> Mod<Vec<u8>> {
    Mod::Replace(
        name.as_bytes().to_vec(),
        values.into_iter().map(String::into_bytes).collect(),
    )
}

fn op_err<E: Into<LdapError>>(op: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::from(e.into()).with_operation(op.to_owned())
}

impl LdapDirectory {
    /// The DN under which a child of org `parent` lives (`None`: the base DN).
    async fn container_dn(&self, parent: Option<&Anchor>) -> Result<String> {
        match parent {
            Some(p) => self.require_dn(p, "org").await,
            None => Ok(self.inner.cfg.base_dn.clone()),
        }
    }

    async fn account_container(&self, orgs: &[Anchor]) -> Result<String> {
        match orgs.first() {
            Some(o) => self.require_dn(o, "org").await,
            None => Ok(self
                .inner
                .cfg
                .account_container
                .clone()
                .unwrap_or_else(|| self.inner.cfg.base_dn.clone())),
        }
    }

    async fn anchor_at(&self, ldap: &mut Ldap, dn: &str) -> Result<Anchor> {
        let attr = self.inner.cfg.anchor_attr().to_owned();
        let entry = client::read_entry(ldap, dn, &[attr.as_str()])
            .await
            .map_err(op_err("read anchor"))?
            .ok_or_else(|| {
                Error::unexpected(format!("{dn} vanished right after it was written"))
            })?;
        mapping::anchor_of(&self.inner.cfg, &entry)
            .ok_or_else(|| Error::unexpected(format!("{dn} has no {attr}")))
    }

    async fn create_org(&self, org: &Org) -> Result<Applied> {
        let parent_dn = self.container_dn(org.parent.as_ref()).await?;
        let parent = Dn::parse(&parent_dn).map_err(|e| Error::invalid_data(e.to_string()))?;
        let dn = parent.child(Rdn::new("ou", org.name.clone())).to_string();
        let mut attrs = vec![
            attr("objectClass", ["top".into(), "organizationalUnit".into()]),
            attr("ou", [org.name.clone()]),
        ];
        if let Some(d) = org.attrs.get("description").map(mapping::ldap_values)
            && !d.is_empty()
        {
            attrs.push(attr("description", d));
        }
        let mut ldap = self.ops().await?;
        check(ldap.add(&dn, attrs).await.map_err(op_err("create org"))?)
            .map_err(op_err("create org"))?;
        Ok(Applied::with_anchor(self.anchor_at(&mut ldap, &dn).await?))
    }

    async fn move_entry(
        &self,
        dn: &str,
        new_rdn: Option<Rdn>,
        new_parent: Option<String>,
    ) -> Result<String> {
        let cur = Dn::parse(dn).map_err(|e| Error::invalid_data(e.to_string()))?;
        let rdn = match new_rdn {
            Some(r) => r,
            None => cur
                .rdn()
                .cloned()
                .ok_or_else(|| Error::invalid_data("empty DN"))?,
        };
        let parent_now = cur.parent().unwrap_or_default();
        let target_parent = match &new_parent {
            Some(p) => Dn::parse(p).map_err(|e| Error::invalid_data(e.to_string()))?,
            None => parent_now.clone(),
        };
        let new_dn = target_parent.child(rdn.clone());
        if new_dn.key() == cur.key() && new_dn.to_string() == cur.to_string() {
            return Ok(dn.to_owned());
        }
        let sup = (target_parent.key() != parent_now.key()).then(|| target_parent.to_string());
        let mut ldap = self.ops().await?;
        check(
            ldap.modifydn(dn, &rdn.to_string(), true, sup.as_deref())
                .await
                .map_err(op_err("modify dn"))?,
        )
        .map_err(op_err("modify dn"))?;
        Ok(new_dn.to_string())
    }

    async fn update_org(&self, anchor: &Anchor, changes: &Patch) -> Result<Applied> {
        let mut dn = self.require_dn(anchor, "org").await?;
        let new_name = match changes.get("name") {
            Some(Value::String(n)) if !n.is_empty() => Some(Rdn::new("ou", n.clone())),
            _ => None,
        };
        let new_parent = match changes.get("parent") {
            Some(Value::Null) => Some(self.inner.cfg.base_dn.clone()),
            Some(Value::String(p)) => Some(self.require_dn(&Anchor::new(p.clone()), "org").await?),
            _ => None,
        };
        if new_name.is_some() || new_parent.is_some() {
            dn = self.move_entry(&dn, new_name, new_parent).await?;
        }
        let mut mods = Vec::new();
        if let Some(v) = changes.get("attrs.description") {
            mods.push(replace("description", mapping::ldap_values(v)));
        }
        if !mods.is_empty() {
            let mut ldap = self.ops().await?;
            check(ldap.modify(&dn, mods).await.map_err(op_err("update org"))?)
                .map_err(op_err("update org"))?;
        }
        Ok(Applied::default())
    }

    fn account_rdn(&self, acc: &Account) -> Rdn {
        let rdn_attr = self.inner.cfg.account_rdn_attr();
        let value = self
            .inner
            .map
            .iter()
            .find(|(_, a)| a.eq_ignore_ascii_case(rdn_attr))
            .map(|(f, _)| mapping::field_values(acc, f))
            .and_then(|v| v.into_iter().next())
            .unwrap_or_else(|| acc.username.clone());
        Rdn::new(rdn_attr, value)
    }

    async fn manager_dn(&self, manager: Option<&Anchor>) -> Result<Vec<String>> {
        match manager {
            Some(m) => Ok(vec![self.require_dn(m, "manager").await?]),
            None => Ok(vec![]),
        }
    }

    async fn create_account(&self, acc: &Account) -> Result<Applied> {
        let cfg = &self.inner.cfg;
        let container = self.account_container(&acc.orgs).await?;
        let container = Dn::parse(&container).map_err(|e| Error::invalid_data(e.to_string()))?;
        let rdn = self.account_rdn(acc);
        let dn = container.child(rdn.clone()).to_string();
        let mut attrs: Vec<Attr> = vec![attr("objectClass", cfg.account_classes())];
        let mut names: Vec<String> = vec!["objectclass".into()];
        let mut push = |attrs: &mut Vec<Attr>, name: &str, vals: Vec<String>| {
            if vals.is_empty() || names.contains(&name.to_ascii_lowercase()) {
                return;
            }
            names.push(name.to_ascii_lowercase());
            attrs.push(attr(name, vals));
        };
        for (field, a) in &self.inner.map {
            let vals = if field == "manager" {
                self.manager_dn(acc.manager.as_ref()).await?
            } else {
                mapping::field_values(acc, field)
            };
            push(&mut attrs, a, vals);
        }
        push(
            &mut attrs,
            rdn.0[0].attr.as_str(),
            vec![rdn.first_value().to_owned()],
        );
        if let Some(a) = &cfg.secondary_orgs_attribute {
            push(&mut attrs, a, mapping::secondary_org_values(&acc.orgs));
        }
        let label = acc
            .display_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| acc.username.clone());
        match cfg.dialect {
            Dialect::Ad => {
                let uac = if acc.status == idsync_core::Status::Disabled {
                    UAC_NORMAL | UAC_DISABLED
                } else {
                    UAC_NORMAL
                };
                push(&mut attrs, "userAccountControl", vec![uac.to_string()]);
                // an enabled AD account needs a password; nobody knows this one
                attrs.push((
                    b"unicodePwd".to_vec(),
                    [mapping::ad_password_value(&mapping::random_password())].into(),
                ));
            }
            _ => {
                let classes = cfg.account_classes();
                if classes.iter().any(|c| c.eq_ignore_ascii_case("person")) {
                    push(&mut attrs, "cn", vec![label.clone()]);
                    push(&mut attrs, "sn", vec![label]);
                }
                if acc.status == idsync_core::Status::Disabled {
                    let m = cfg.disable_marker().ok_or_else(|| {
                        Error::unsupported(
                            "no disable_marker configured; cannot create a disabled account",
                        )
                    })?;
                    push(&mut attrs, &m.attribute, vec![m.value]);
                }
            }
        }
        let mut ldap = self.ops().await?;
        check(
            ldap.add(&dn, attrs)
                .await
                .map_err(op_err("create account"))?,
        )
        .map_err(op_err("create account"))?;
        Ok(Applied::with_anchor(self.anchor_at(&mut ldap, &dn).await?))
    }

    async fn update_account(&self, anchor: &Anchor, changes: &Patch) -> Result<Applied> {
        let mut dn = self.require_dn(anchor, "account").await?;
        let rdn_attr = self.inner.cfg.account_rdn_attr().to_owned();
        // the patch applied to a scratch account, to compute values the same way as create
        let mut scratch = Account::default();
        for (field, value) in changes {
            use idsync_core::Entity;
            if field == "status" || field == "orgs" || field == "manager" {
                continue;
            }
            // unknown fields are not ours to write
            let _ = scratch.set(field, value.clone());
        }
        // rename (the RDN attribute changed) and/or move (the primary org changed)
        let rdn_field = self
            .inner
            .map
            .iter()
            .find(|(_, a)| a.eq_ignore_ascii_case(&rdn_attr))
            .map(|(f, _)| f.clone());
        let new_rdn = match &rdn_field {
            Some(f) if changes.contains_key(f) => mapping::field_values(&scratch, f)
                .into_iter()
                .next()
                .map(|v| Rdn::new(rdn_attr.clone(), v)),
            _ => None,
        };
        let mut mods: Vec<Mod<Vec<u8>>> = Vec::new();
        let new_parent = match changes.get("orgs") {
            Some(v) => {
                let orgs: Vec<Anchor> = mapping::ldap_values(v)
                    .into_iter()
                    .map(Anchor::new)
                    .collect();
                if let Some(a) = &self.inner.cfg.secondary_orgs_attribute {
                    mods.push(replace(a, mapping::secondary_org_values(&orgs)));
                }
                Some(self.account_container(&orgs).await?)
            }
            None => None,
        };
        if new_rdn.is_some() || new_parent.is_some() {
            dn = self.move_entry(&dn, new_rdn, new_parent).await?;
        }
        for (field, a) in &self.inner.map {
            if !changes.contains_key(field) || a.eq_ignore_ascii_case(&rdn_attr) {
                continue;
            }
            let vals = if field == "manager" {
                let m = changes
                    .get("manager")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(Anchor::new);
                self.manager_dn(m.as_ref()).await?
            } else {
                mapping::field_values(&scratch, field)
            };
            mods.push(replace(a, vals));
        }
        if let Some(status) = changes.get("status") {
            let disabled = matches!(status, Value::String(s) if s.eq_ignore_ascii_case("disabled"))
                || status == &Value::Bool(false);
            mods.extend(self.status_mods(&dn, disabled).await?);
        }
        if !mods.is_empty() {
            let mut ldap = self.ops().await?;
            check(
                ldap.modify(&dn, mods)
                    .await
                    .map_err(op_err("update account"))?,
            )
            .map_err(op_err("update account"))?;
        }
        Ok(Applied::default())
    }

    async fn status_mods(&self, dn: &str, disabled: bool) -> Result<Vec<Mod<Vec<u8>>>> {
        match self.inner.cfg.dialect {
            Dialect::Ad => {
                let mut ldap = self.ops().await?;
                let e = client::read_entry(&mut ldap, dn, &["userAccountControl"])
                    .await
                    .map_err(op_err("read userAccountControl"))?
                    .ok_or_else(|| {
                        Error::not_found(format!("{dn} not found")).with_provider(PROVIDER)
                    })?;
                let uac: u32 = e
                    .get("userAccountControl")
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .map(|v| v as u32)
                    .unwrap_or(UAC_NORMAL);
                let new = if disabled {
                    uac | UAC_DISABLED
                } else {
                    uac & !UAC_DISABLED
                };
                if new == uac {
                    return Ok(vec![]);
                }
                Ok(vec![replace("userAccountControl", vec![new.to_string()])])
            }
            _ => {
                let m = self.inner.cfg.disable_marker().ok_or_else(|| {
                    Error::unsupported("no disable_marker configured for this directory")
                        .with_provider(PROVIDER)
                })?;
                Ok(vec![replace(
                    &m.attribute,
                    if disabled { vec![m.value] } else { vec![] },
                )])
            }
        }
    }

    async fn set_status(&self, anchor: &Anchor, disabled: bool) -> Result<Applied> {
        let dn = self.require_dn(anchor, "account").await?;
        let mods = self.status_mods(&dn, disabled).await?;
        if !mods.is_empty() {
            let mut ldap = self.ops().await?;
            check(ldap.modify(&dn, mods).await.map_err(op_err("set status"))?)
                .map_err(op_err("set status"))?;
        }
        Ok(Applied::default())
    }

    async fn delete(&self, anchor: &Anchor, what: &str) -> Result<Applied> {
        let dn = self.require_dn(anchor, what).await?;
        let mut ldap = self.ops().await?;
        let res = ldap.delete(&dn).await.map_err(op_err("delete"))?;
        if res.rc == 66 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{dn} still has entries below it"),
            )
            .with_provider(PROVIDER)
            .with_provider_code("66")
            .with_operation("delete"));
        }
        check(res).map_err(op_err("delete"))?;
        Ok(Applied::default())
    }
}

#[async_trait]
impl Sink for LdapDirectory {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        match op {
            Op::CreateOrg { org } => self.create_org(org).await,
            Op::UpdateOrg { anchor, changes } => self.update_org(anchor, changes).await,
            Op::MoveOrg { anchor, parent } => {
                let dn = self.require_dn(anchor, "org").await?;
                let new_parent = self.container_dn(parent.as_ref()).await?;
                self.move_entry(&dn, None, Some(new_parent)).await?;
                Ok(Applied::default())
            }
            Op::DeleteOrg { anchor } => self.delete(anchor, "org").await,
            Op::CreateAccount { account } => self.create_account(account).await,
            Op::UpdateAccount { anchor, changes } => self.update_account(anchor, changes).await,
            Op::DisableAccount { anchor } => self.set_status(anchor, true).await,
            Op::EnableAccount { anchor } => self.set_status(anchor, false).await,
            Op::DeleteAccount { anchor } => self.delete(anchor, "account").await,
            #[allow(unreachable_patterns)]
            other => Err(Error::unsupported(format!(
                "{} is not supported",
                other.name()
            ))),
        }
    }
}
