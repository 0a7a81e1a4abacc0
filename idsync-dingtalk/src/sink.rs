//! [`DingTalkSink`]: creates, updates, moves and deletes users and departments.
//!
//! Request quirks kept here: `dept_id_list` is a comma-separated string, cleared fields go
//! into `force_update_fields`, department names may not contain `-`, `,` or `，`, a user
//! needs a `mobile` (or, with `exclusive_accounts`, becomes an exclusive account) and at
//! least one department. DingTalk has no "disabled" users (a person leaves by deletion), so
//! `disable` is not offered.
//!
//! The root department (`root_dept_id`, 1 by default) is the tenant itself: root orgs
//! (`parent: None`) are created under it, and a person in no org is a member of it.

use async_trait::async_trait;
use idsync_core::{Anchor, Applied, Capabilities, Error, Op, Result, Sink};
use serde_json::{Value, json};

use crate::PROVIDER;
use crate::config::DingTalkConfig;
use crate::mapping;
use crate::source::DingTalkSource;

/// Writes to a DingTalk organization; reads like [`DingTalkSource`].
#[derive(Debug, Clone)]
pub struct DingTalkSink {
    source: DingTalkSource,
}

impl DingTalkSink {
    /// A sink for the tenant and app in `cfg`.
    pub fn new(cfg: DingTalkConfig) -> Result<Self> {
        Ok(DingTalkSink {
            source: DingTalkSource::new(cfg)?,
        })
    }

    /// A sink over an existing source (sharing its token cache and event log).
    pub fn from_source(source: DingTalkSource) -> Self {
        DingTalkSink { source }
    }

    /// The source side.
    pub fn source(&self) -> &DingTalkSource {
        &self.source
    }

    fn root(&self) -> i64 {
        self.source.inner.cfg.root_dept_id
    }

    fn warn_skipped(op: &Op, skipped: &[String]) {
        if !skipped.is_empty() {
            tracing::warn!(
                op = op.name(),
                anchor = %op.anchor(),
                fields = ?skipped,
                "DingTalk cannot write these fields; skipped"
            );
        }
    }

    async fn apply_op(&self, op: &Op) -> Result<Applied> {
        let s = &self.source;
        match op {
            Op::CreateOrg { org } => {
                // Root orgs live directly under the tenant's root department.
                let parent = match &org.parent {
                    Some(p) => mapping::dept_id(p)?,
                    None => self.root(),
                };
                let body = mapping::dept_create_body(org, parent)?;
                let v = s.post("/topapi/v2/department/create", body).await?;
                let id = v
                    .pointer("/result/dept_id")
                    .and_then(crate::client::int_of)
                    .ok_or_else(|| Error::invalid_data("department/create: no dept_id"))?;
                Ok(Applied::with_anchor(Anchor::new(id.to_string())))
            }
            Op::UpdateOrg { anchor, changes } => {
                let dept = mapping::dept_id(anchor)?;
                let (body, skipped) = mapping::dept_update_body(dept, changes)?;
                Self::warn_skipped(op, &skipped);
                if body.as_object().is_some_and(|o| o.len() > 1) {
                    s.post("/topapi/v2/department/update", body).await?;
                }
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::MoveOrg { anchor, parent } => {
                let dept = mapping::dept_id(anchor)?;
                let parent_id = match parent {
                    Some(p) => mapping::dept_id(p)?,
                    None => self.root(),
                };
                s.post(
                    "/topapi/v2/department/update",
                    json!({"dept_id": dept, "parent_id": parent_id}),
                )
                .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DeleteOrg { anchor } => {
                let dept = mapping::dept_id(anchor)?;
                if dept == self.root() {
                    return Err(Error::unsupported("the root department cannot be deleted"));
                }
                s.post("/topapi/v2/department/delete", json!({"dept_id": dept}))
                    .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::CreateAccount { account } => {
                let mut account = account.clone();
                if account.orgs.is_empty() {
                    // no org: a member of the root department (the tenant itself)
                    account.orgs.push(Anchor::new(self.root().to_string()));
                }
                let cfg = &self.source.inner.cfg;
                let body = mapping::user_create_body_with(&account, cfg.exclusive_accounts)?;
                let v = s.post("/topapi/v2/user/create", body).await?;
                let id = v
                    .pointer("/result/userid")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::invalid_data("user/create: no userid"))?;
                Ok(Applied::with_anchor(Anchor::new(id)))
            }
            Op::UpdateAccount { anchor, changes } => {
                let mut changes = changes.clone();
                if let Some(orgs) = changes.get_mut("orgs") {
                    let empty = orgs.is_null() || orgs.as_array().is_some_and(Vec::is_empty);
                    if empty {
                        *orgs = json!([self.root().to_string()]);
                    }
                }
                let (body, skipped) = mapping::user_update_body(anchor.as_str(), &changes)?;
                Self::warn_skipped(op, &skipped);
                if body.as_object().is_some_and(|o| o.len() > 1) {
                    s.post("/topapi/v2/user/update", body).await?;
                }
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DisableAccount { .. } | Op::EnableAccount { .. } => Err(Error::unsupported(
                "DingTalk has no disabled state: a person leaves by deletion",
            )),
            Op::DeleteAccount { anchor } => {
                s.post("/topapi/v2/user/delete", json!({"userid": anchor.as_str()}))
                    .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
        }
    }
}

impl DingTalkSink {
    /// What the sink can do: the source's reads plus the writes it takes.
    fn sink_capabilities(&self) -> Capabilities {
        Capabilities {
            create: true,
            update: true,
            delete: true,
            move_org: true,
            disable: false,
            assigns_anchors: true,
            ..self.source.capabilities_read()
        }
    }
}

idsync_core::forward_source!(DingTalkSink, source, DingTalkSink::sink_capabilities);

#[async_trait]
impl Sink for DingTalkSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.apply_op(op).await.map_err(|e| {
            e.with_provider(PROVIDER)
                .with_operation(op.name())
                .with_context("anchor", op.anchor().as_str())
        })
    }
}
