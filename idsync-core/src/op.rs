//! Operations a sink takes ([`Op`], [`OpKind`], [`Patch`], [`Applied`]), listing pages
//! ([`Page`], [`PageRequest`], [`PageToken`], [`paged`]) and change sets ([`ChangeSet`],
//! [`SyncCursor`]): the plain types that adapters, the engine and the store share. They
//! depend on the model only, so the store can use them without depending on adapters.

use std::collections::BTreeMap;
use std::fmt;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};

/// An opaque, serializable position in a listing. Runs can checkpoint and resume from it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageToken(pub String);

impl fmt::Debug for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageToken({:?})", self.0)
    }
}

/// Which page to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// `None` for the first page, else the `next` of the previous page.
    pub token: Option<PageToken>,
    /// Desired page size; adapters cap it at their maximum and may ignore it.
    pub size: Option<usize>,
}

impl PageRequest {
    /// The first page with the adapter's default size.
    pub fn first() -> Self {
        PageRequest::default()
    }

    /// The first page with a given size.
    pub fn sized(size: usize) -> Self {
        PageRequest {
            token: None,
            size: Some(size),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<PageToken>,
}

impl<T> Page<T> {
    /// The last page.
    pub fn last(items: Vec<T>) -> Self {
        Page { items, next: None }
    }
}

/// An opaque incremental-sync position (an LDAP cookie, a USN, an event sequence).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyncCursor(pub String);

impl fmt::Debug for SyncCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncCursor({:?})", self.0)
    }
}

/// What changed since a cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Orgs created or changed (their full current state).
    pub org_upserts: Vec<Org>,
    /// Orgs deleted.
    pub org_deletes: Vec<Anchor>,
    /// Accounts created or changed (their full current state).
    pub account_upserts: Vec<Account>,
    /// Accounts deleted.
    pub account_deletes: Vec<Anchor>,
    /// Accounts whose source anchor changed (WeCom's `NewUserID`), in the order they
    /// happened. The engine moves the link of `from` to `to` before it plans, so the
    /// renamed account keeps its target and is never deleted and created again; its current
    /// state comes in `account_upserts` under `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub account_renames: Vec<Rename>,
    /// The cursor to store once these changes are applied.
    pub cursor: Option<SyncCursor>,
    /// `false`: the cursor was too old or the change log was lost; run a full sync instead.
    pub complete: bool,
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.org_upserts.is_empty()
            && self.org_deletes.is_empty()
            && self.account_upserts.is_empty()
            && self.account_deletes.is_empty()
            && self.account_renames.is_empty()
    }
}

/// A change of an entity's source anchor: the same entity, now known as `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rename {
    /// The anchor it had.
    pub from: Anchor,
    /// The anchor it has now.
    pub to: Anchor,
}

/// The kind of an [`Op`], for counting, guarding and configuration (never compare op
/// names as strings). Serialized as the op's snake_case name (`"disable_account"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// [`Op::CreateOrg`].
    CreateOrg,
    /// [`Op::UpdateOrg`].
    UpdateOrg,
    /// [`Op::MoveOrg`].
    MoveOrg,
    /// [`Op::DeleteOrg`].
    DeleteOrg,
    /// [`Op::CreateAccount`].
    CreateAccount,
    /// [`Op::UpdateAccount`].
    UpdateAccount,
    /// [`Op::DisableAccount`].
    DisableAccount,
    /// [`Op::EnableAccount`].
    EnableAccount,
    /// [`Op::DeleteAccount`].
    DeleteAccount,
}

impl OpKind {
    /// Every kind, in phase order.
    pub const ALL: [OpKind; 9] = [
        OpKind::CreateOrg,
        OpKind::UpdateOrg,
        OpKind::MoveOrg,
        OpKind::DeleteOrg,
        OpKind::CreateAccount,
        OpKind::UpdateAccount,
        OpKind::DisableAccount,
        OpKind::EnableAccount,
        OpKind::DeleteAccount,
    ];

    /// The stable snake_case name: `"create_org"`, `"disable_account"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::CreateOrg => "create_org",
            OpKind::UpdateOrg => "update_org",
            OpKind::MoveOrg => "move_org",
            OpKind::DeleteOrg => "delete_org",
            OpKind::CreateAccount => "create_account",
            OpKind::UpdateAccount => "update_account",
            OpKind::DisableAccount => "disable_account",
            OpKind::EnableAccount => "enable_account",
            OpKind::DeleteAccount => "delete_account",
        }
    }

    /// Org or account.
    pub fn entity(self) -> EntityKind {
        match self {
            OpKind::CreateOrg | OpKind::UpdateOrg | OpKind::MoveOrg | OpKind::DeleteOrg => {
                EntityKind::Org
            }
            _ => EntityKind::Account,
        }
    }

    /// Deletes and disables: what the guard counts as harm.
    pub fn is_destructive(self) -> bool {
        matches!(
            self,
            OpKind::DeleteOrg | OpKind::DeleteAccount | OpKind::DisableAccount
        )
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OpKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown operation {s:?} (known: {})",
                    OpKind::ALL.map(OpKind::as_str).join(", ")
                ))
            })
    }
}

/// Changed fields of an update, by field name (`"email"`, `"attrs.x"`); `Null` clears a field.
pub type Patch = BTreeMap<String, Value>;

/// One write to a sink. Anchors here are the sink's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create an org; `org.anchor` is a proposal a sink that assigns anchors ignores.
    CreateOrg {
        /// The new org.
        org: Org,
    },
    /// Change an org's fields (not its parent: see `MoveOrg`).
    UpdateOrg {
        /// The org.
        anchor: Anchor,
        /// The changed fields only.
        changes: Patch,
    },
    /// Move an org under another parent.
    MoveOrg {
        /// The org.
        anchor: Anchor,
        /// The new parent (`None`: a root).
        parent: Option<Anchor>,
    },
    /// Delete an org (it has no children or members by then).
    DeleteOrg {
        /// The org.
        anchor: Anchor,
    },
    /// Create an account; `account.anchor` is a proposal a sink that assigns anchors ignores.
    CreateAccount {
        /// The new account.
        account: Account,
    },
    /// Change an account's fields.
    UpdateAccount {
        /// The account.
        anchor: Anchor,
        /// The changed fields only.
        changes: Patch,
    },
    /// Disable an account.
    DisableAccount {
        /// The account.
        anchor: Anchor,
    },
    /// Enable a disabled account.
    EnableAccount {
        /// The account.
        anchor: Anchor,
    },
    /// Delete an account.
    DeleteAccount {
        /// The account.
        anchor: Anchor,
    },
}

impl Op {
    /// The op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::CreateOrg { .. } => OpKind::CreateOrg,
            Op::UpdateOrg { .. } => OpKind::UpdateOrg,
            Op::MoveOrg { .. } => OpKind::MoveOrg,
            Op::DeleteOrg { .. } => OpKind::DeleteOrg,
            Op::CreateAccount { .. } => OpKind::CreateAccount,
            Op::UpdateAccount { .. } => OpKind::UpdateAccount,
            Op::DisableAccount { .. } => OpKind::DisableAccount,
            Op::EnableAccount { .. } => OpKind::EnableAccount,
            Op::DeleteAccount { .. } => OpKind::DeleteAccount,
        }
    }

    /// The kind's stable name, for messages and logs: `"create_org"`, ...
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Org or account.
    pub fn entity(&self) -> EntityKind {
        self.kind().entity()
    }

    /// The target anchor (the proposal, for creates).
    pub fn anchor(&self) -> &Anchor {
        match self {
            Op::CreateOrg { org } => &org.anchor,
            Op::CreateAccount { account } => &account.anchor,
            Op::UpdateOrg { anchor, .. }
            | Op::MoveOrg { anchor, .. }
            | Op::DeleteOrg { anchor }
            | Op::UpdateAccount { anchor, .. }
            | Op::DisableAccount { anchor }
            | Op::EnableAccount { anchor }
            | Op::DeleteAccount { anchor } => anchor,
        }
    }

    /// True for creates.
    pub fn is_create(&self) -> bool {
        matches!(self, Op::CreateOrg { .. } | Op::CreateAccount { .. })
    }

    /// True for deletes and disables: the operations the guard counts.
    pub fn is_destructive(&self) -> bool {
        self.kind().is_destructive()
    }

    /// Whether applying this op twice has the same effect as once. Creates are not
    /// idempotent for sinks that assign anchors; the retry layer retries those only when
    /// the request provably never reached the provider.
    pub fn is_idempotent(&self) -> bool {
        !self.is_create()
    }
}

/// What a sink reports after applying an op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The anchor of the entity written (for a create: the anchor the sink assigned).
    pub anchor: Option<Anchor>,
}

impl Applied {
    /// Applied, with the entity's anchor.
    pub fn with_anchor(anchor: Anchor) -> Self {
        Applied {
            anchor: Some(anchor),
        }
    }
}

/// Build a stream of items from a page function. A page whose next token was seen before in
/// this listing (repeated, or a cycle) is an `Incomplete` error: a provider bug would
/// otherwise loop forever.
pub fn paged<'a, T, F, Fut>(
    page_size: Option<usize>,
    fetch: F,
    what: &'static str,
) -> BoxStream<'a, Result<T>>
where
    T: Send + 'a,
    F: Fn(PageRequest) -> Fut + Send + Sync + 'a,
    Fut: std::future::Future<Output = Result<Page<T>>> + Send + 'a,
{
    struct State<F> {
        fetch: F,
        token: Option<PageToken>,
        /// Every token handed out so far (a listing of n pages keeps n short strings).
        seen: std::collections::HashSet<PageToken>,
        done: bool,
        size: Option<usize>,
    }
    let state = State {
        fetch,
        token: None,
        seen: std::collections::HashSet::new(),
        done: false,
        size: page_size,
    };
    stream::try_unfold(state, move |mut st| async move {
        if st.done {
            return Ok(None);
        }
        let req = PageRequest {
            token: st.token.clone(),
            size: st.size,
        };
        let page = (st.fetch)(req).await?;
        match page.next {
            // A token seen before (the same one again, or a cycle A, B, A) would loop
            // forever: the listing is refused as incomplete.
            Some(next) if !st.seen.insert(next.clone()) => {
                return Err(Error::new(
                    ErrorKind::Incomplete,
                    format!(
                        "{what}: the provider returned a page token it had returned before \
                         (the pages loop)"
                    ),
                )
                .with_context("token", next.0));
            }
            Some(next) => st.token = Some(next),
            None => st.done = true,
        }
        Ok(Some((stream::iter(page.items.into_iter().map(Ok)), st)))
    })
    .try_flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn paged_stream_follows_tokens_and_detects_loops() {
        let data: Vec<u32> = (0..10).collect();
        let s = paged(
            Some(3),
            |req: PageRequest| {
                let data = data.clone();
                async move {
                    let start: usize = req.token.map(|t| t.0.parse().unwrap()).unwrap_or(0);
                    let end = (start + req.size.unwrap()).min(data.len());
                    Ok(Page {
                        items: data[start..end].to_vec(),
                        next: (end < data.len()).then(|| PageToken(end.to_string())),
                    })
                }
            },
            "numbers",
        );
        let all: Vec<u32> = s.try_collect().await.unwrap();
        assert_eq!(all, data);

        let looping = paged(
            None,
            |_req: PageRequest| async {
                Ok(Page {
                    items: vec![1u8],
                    next: Some(PageToken("same".into())),
                })
            },
            "loop",
        );
        let err = looping.try_collect::<Vec<u8>>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Incomplete);

        // A cycle: A -> B -> A.
        let cycling = paged(
            None,
            |req: PageRequest| async move {
                let next = match req.token.as_ref().map(|t| t.0.as_str()) {
                    None => "A",
                    Some("A") => "B",
                    _ => "A",
                };
                Ok(Page {
                    items: vec![1u8],
                    next: Some(PageToken(next.into())),
                })
            },
            "cycle",
        );
        let err = cycling.try_collect::<Vec<u8>>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Incomplete, "{err}");
    }

    #[test]
    fn op_serializes_with_tag() {
        let op = Op::DisableAccount {
            anchor: "u1".into(),
        };
        let j = serde_json::to_value(&op).unwrap();
        assert_eq!(j["op"], "disable_account");
        assert!(op.is_destructive());
        assert_eq!(op.entity(), EntityKind::Account);
    }
}
