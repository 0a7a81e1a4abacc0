//! [`LarkSink`]: writes users and departments.
//!
//! | op | call |
//! |---|---|
//! | create org | `POST contact/v3/departments?client_token=` (Lark assigns the `open_department_id`) |
//! | update org | `PATCH contact/v3/departments/:id` (name, order, `attrs.leader_user_id`, `attrs.name_en`) |
//! | move org | `PATCH contact/v3/departments/:id` with `parent_department_id` (`"0"`: a root org) |
//! | delete org | `DELETE contact/v3/departments/:id` (43011 members / 43012 sub-departments: a conflict, said so) |
//! | create account | `POST contact/v3/users?client_token=` (`user_id` = username; `orders` with the primary department) |
//! | update account | `PATCH contact/v3/users/:id` (changed fields; `orders` always with `department_ids`) |
//! | disable / enable | `PATCH contact/v3/users/:id` with `is_frozen: true` / `false` |
//! | delete account | `DELETE contact/v3/users/:id` |
//!
//! **Idempotent creates**: the `client_token` is derived from the op itself (a SHA-256 of
//! its JSON), so a create retried after a lost answer gets the entity the first attempt
//! made, never a second one. The root department `"0"` is the tenant: it is never edited
//! or deleted (refused here before any call).

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, ChangeSet, Descriptor, Error, Op, Org, Page,
    PageRequest, Result, Sink, Source, SyncCursor,
};
use idsync_http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::PROVIDER;
use crate::config::Connection;
use crate::mapping::{
    ROOT, dept_create_body, dept_update_body, user_create_body, user_update_body,
};
use crate::source::{LarkSource, plain_id};

/// The Lark directory as a sink (and, through its source, readable).
#[derive(Debug, Clone)]
pub struct LarkSink {
    source: LarkSource,
}

/// The idempotency key of a create: the same op gives the same key.
pub(crate) fn client_token(op: &Op) -> Result<String> {
    let bytes = serde_json::to_vec(op)?;
    let d = Sha256::digest(&bytes);
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    // UUID-shaped
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn path_id<'a>(anchor: &'a Anchor, what: &str) -> Result<&'a str> {
    let id = anchor.as_str();
    if plain_id(id) {
        Ok(id)
    } else {
        Err(
            Error::invalid_data(format!("{what} anchor {anchor:?} is not a Lark id"))
                .with_provider(PROVIDER),
        )
    }
}

fn dept_path(anchor: &Anchor) -> Result<String> {
    let id = path_id(anchor, "department")?;
    if id == ROOT {
        return Err(Error::unsupported(
            "the Lark root department (0) is the tenant itself and cannot be edited, moved or deleted",
        )
        .with_provider(PROVIDER));
    }
    Ok(format!("/contact/v3/departments/{id}"))
}

fn user_path(anchor: &Anchor) -> Result<String> {
    Ok(format!("/contact/v3/users/{}", path_id(anchor, "user")?))
}

fn created_id(v: &Value, object: &str, field: &str) -> Result<Anchor> {
    v.get(object)
        .and_then(|o| o.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(Anchor::new)
        .ok_or_else(|| {
            Error::invalid_data(format!("Lark create answered without {object}.{field}"))
                .with_provider(PROVIDER)
        })
}

impl LarkSink {
    /// A sink over `conn`.
    pub fn new(conn: Connection) -> Result<Self> {
        Ok(LarkSink {
            source: LarkSource::new(conn)?,
        })
    }

    /// A sink that reads and writes through `source` (e.g. one with events).
    pub fn from_source(source: LarkSource) -> Self {
        LarkSink { source }
    }

    /// The source it reads with.
    pub fn source(&self) -> &LarkSource {
        &self.source
    }
}

#[async_trait]
impl Source for LarkSink {
    fn describe(&self) -> Descriptor {
        self.source.describe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create: true,
            update: true,
            disable: true,
            delete: true,
            move_org: true,
            assigns_anchors: true,
            ..self.source.capabilities()
        }
    }

    async fn check(&self) -> Result<()> {
        self.source.check().await
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.source.orgs(page).await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.source.accounts(page).await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.source.org(anchor).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.source.account(anchor).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.source.find_accounts(field, value).await
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        self.source.current_cursor().await
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.source.changes(since).await
    }
}

#[async_trait]
impl Sink for LarkSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let c = self.source.client();
        let key = self.source.user_mapping().id_type.as_str();
        match op {
            Op::CreateOrg { org } => {
                let q = [("client_token", client_token(op)?)];
                let v = c
                    .write(
                        Method::POST,
                        "/contact/v3/departments",
                        &q,
                        dept_create_body(org),
                    )
                    .await?;
                Ok(Applied::with_anchor(created_id(
                    &v,
                    "department",
                    "open_department_id",
                )?))
            }
            Op::UpdateOrg { anchor, changes } => {
                let path = dept_path(anchor)?;
                let body = dept_update_body(anchor, changes)?;
                c.write(Method::PATCH, &path, &[], body).await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::MoveOrg { anchor, parent } => {
                let path = dept_path(anchor)?;
                let p = parent.as_ref().map_or(ROOT, |p| p.as_str());
                c.write(
                    Method::PATCH,
                    &path,
                    &[],
                    json!({"parent_department_id": p}),
                )
                .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DeleteOrg { anchor } => {
                c.delete(&dept_path(anchor)?).await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::CreateAccount { account } => {
                let q = [("client_token", client_token(op)?)];
                let v = c
                    .write(
                        Method::POST,
                        "/contact/v3/users",
                        &q,
                        user_create_body(account)?,
                    )
                    .await?;
                Ok(Applied::with_anchor(created_id(&v, "user", key)?))
            }
            Op::UpdateAccount { anchor, changes } => {
                if key == "user_id" && changes.contains_key("username") {
                    return Err(Error::unsupported(format!(
                        "account {anchor}: the username is the user_id, which anchors accounts here; it is not changed"
                    ))
                    .with_provider(PROVIDER));
                }
                let path = user_path(anchor)?;
                let body = user_update_body(anchor, changes)?;
                c.write(Method::PATCH, &path, &[], body).await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DisableAccount { anchor } | Op::EnableAccount { anchor } => {
                let frozen = matches!(op, Op::DisableAccount { .. });
                c.write(
                    Method::PATCH,
                    &user_path(anchor)?,
                    &[],
                    json!({"is_frozen": frozen}),
                )
                .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DeleteAccount { anchor } => {
                c.delete(&user_path(anchor)?).await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_per_op() {
        let a = Op::CreateOrg {
            org: Org::new("p1", None, "Sales"),
        };
        let b = Op::CreateOrg {
            org: Org::new("p2", None, "Sales"),
        };
        assert_eq!(client_token(&a).unwrap(), client_token(&a.clone()).unwrap());
        assert_ne!(client_token(&a).unwrap(), client_token(&b).unwrap());
        assert_eq!(client_token(&a).unwrap().len(), 36);
        assert!(dept_path(&Anchor::new(ROOT)).is_err());
        assert!(user_path(&Anchor::new("a/b")).is_err());
    }
}
