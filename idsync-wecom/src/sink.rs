//! [`WeComSink`]: writes members and departments with the contact-sync secret.
//!
//! | op | call |
//! |---|---|
//! | create org | `POST department/create` (WeCom assigns the id; the name is checked first: 1–32 characters, none of `\:*?"<>|`) |
//! | update org | `POST department/update` (name, order, `attrs.name_en`) |
//! | move org | `POST department/update` with `parentid` |
//! | delete org | `GET department/delete?id=` (a non-empty department is refused by WeCom: 60005 / 60006, a conflict) |
//! | create account | `POST user/create` (userid = username; one of mobile or email is required; `to_invite: false`) |
//! | update account | `POST user/update` (changed fields only) |
//! | disable / enable | `POST user/update` with `enable: 0` / `1` |
//! | delete account | `GET user/delete?userid=` |
//!
//! The root department (`root_dept_id`) is the corp itself: root orgs are created under it,
//! an account without orgs is a member of it, and it is never deleted. Reads are the
//! [`WeComSource`]'s.

use async_trait::async_trait;
use idsync_core::{Anchor, Applied, Capabilities, Error, Op, Result, Sink, Source};
use idsync_http::int_of;
use serde_json::json;

use crate::PROVIDER;
use crate::config::Connection;
use crate::mapping::{dept_create_body, dept_update_body, user_create_body, user_update_body};
use crate::source::WeComSource;

/// The WeCom directory as a sink (and, through its source, readable).
#[derive(Debug, Clone)]
pub struct WeComSink {
    source: WeComSource,
}

fn dept_id(anchor: &Anchor) -> Result<i64> {
    anchor.as_str().parse().map_err(|_| {
        Error::invalid_data(format!(
            "org anchor {anchor:?} is not a WeCom department id"
        ))
        .with_provider(PROVIDER)
    })
}

impl WeComSink {
    /// A sink over `conn` (set `contact_secret` for writes, unless `secret` is the
    /// contact-sync secret).
    pub fn new(conn: Connection) -> Result<Self> {
        Ok(WeComSink {
            source: WeComSource::new(conn)?,
        })
    }

    /// A sink that reads and writes through `source` (e.g. one with events).
    pub fn from_source(source: WeComSource) -> Self {
        WeComSink { source }
    }

    /// The source it reads with.
    pub fn source(&self) -> &WeComSource {
        &self.source
    }

    fn root(&self) -> i64 {
        self.source.inner.conn.root_dept_id
    }

    fn parent_id(&self, parent: Option<&Anchor>) -> Result<i64> {
        parent.map_or(Ok(self.root()), dept_id)
    }
}

impl WeComSink {
    /// What the sink can do: the source's reads plus the writes it takes.
    fn sink_capabilities(&self) -> Capabilities {
        Capabilities {
            create: true,
            update: true,
            disable: true,
            delete: true,
            move_org: true,
            // departments get their id from WeCom
            assigns_anchors: true,
            ..self.source.capabilities()
        }
    }
}

idsync_core::forward_source!(WeComSink, source, WeComSink::sink_capabilities);

#[async_trait]
impl Sink for WeComSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let c = self.source.client();
        let root = self.root();
        match op {
            Op::CreateOrg { org } => {
                let body = dept_create_body(org, self.parent_id(org.parent.as_ref())?)?;
                let v = c.write_post("/department/create", body).await?;
                let id = v.get("id").and_then(int_of).ok_or_else(|| {
                    Error::invalid_data("department/create answered without id")
                        .with_provider(PROVIDER)
                })?;
                Ok(Applied::with_anchor(Anchor::new(id.to_string())))
            }
            Op::UpdateOrg { anchor, changes } => {
                let id = dept_id(anchor)?;
                c.write_post("/department/update", dept_update_body(id, changes)?)
                    .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::MoveOrg { anchor, parent } => {
                let id = dept_id(anchor)?;
                let parentid = self.parent_id(parent.as_ref())?;
                c.write_post(
                    "/department/update",
                    json!({"id": id, "parentid": parentid}),
                )
                .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DeleteOrg { anchor } => {
                let id = dept_id(anchor)?;
                if id == root {
                    return Err(Error::unsupported(
                        "the WeCom root department is the corp itself and cannot be deleted",
                    )
                    .with_provider(PROVIDER));
                }
                c.write_get("/department/delete", &[("id", id.to_string())])
                    .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::CreateAccount { account } => {
                let body = user_create_body(account, &self.source.inner.conn.user_mapping())?;
                let userid = body
                    .get("userid")
                    .and_then(|u| u.as_str())
                    .unwrap_or_default()
                    .to_owned();
                c.write_post("/user/create", body).await?;
                Ok(Applied::with_anchor(Anchor::new(userid)))
            }
            Op::UpdateAccount { anchor, changes } => {
                let body = user_update_body(
                    anchor.as_str(),
                    changes,
                    &self.source.inner.conn.user_mapping(),
                )?;
                c.write_post("/user/update", body).await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DisableAccount { anchor } | Op::EnableAccount { anchor } => {
                let enable = i32::from(matches!(op, Op::EnableAccount { .. }));
                c.write_post(
                    "/user/update",
                    json!({"userid": anchor.as_str(), "enable": enable}),
                )
                .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
            Op::DeleteAccount { anchor } => {
                c.write_get("/user/delete", &[("userid", anchor.as_str().to_owned())])
                    .await?;
                Ok(Applied::with_anchor(anchor.clone()))
            }
        }
    }
}
