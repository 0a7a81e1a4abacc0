//! The change feed and snapshots for apps ("apps fetch from IDaaS").
//!
//! [`router`] serves, over any [`Store`]:
//!
//! | route | scope | answers |
//! |---|---|---|
//! | `GET /api/v1/changes?cursor=&limit=` | read | the hub's changes after `cursor`, in order |
//! | `GET /api/v1/accounts?page=&limit=&cursor=` | read | one page of a snapshot of the hub's accounts |
//! | `GET /api/v1/orgs?page=&limit=&cursor=` | read | one page of a snapshot of the hub's org tree |
//!
//! The router does not check tokens: `idsync serve` mounts it behind its bearer-token
//! layer, which gives these routes to tokens of scope `read`. A library user mounting it
//! in their own service puts their own authentication in front.
//!
//! # The feed
//!
//! ```text
//! GET /api/v1/changes?cursor=ZjEuMTI&limit=100
//! 200 {"entries": [{"seq": 13, "kind": "account", "anchor": "u1", "op": "upsert",
//!                   "version": 13, "at": "2026-01-02T03:04:05Z", "entity": {...}}, ...],
//!      "next_cursor": "ZjEuMTM", "has_more": false}
//! ```
//!
//! * The cursor is opaque; `next_cursor` is on every page, also an empty one, and is the
//!   cursor to ask with next. Without a cursor the feed is read from its start.
//! * `op` is `upsert` (the entity as it is after the change) or `delete` (a tombstone:
//!   `entity` is `null`). `version` grows with every change of the entity (it is the
//!   change's sequence number), so an app keeps, per anchor, the highest version seen.
//! * Entries, tombstones included, are kept for a retention (default 7 days,
//!   [`DEFAULT_RETENTION`]; [`prune`] and [`spawn_retention`] enforce it). A cursor older
//!   than what is retained answers `410 Gone` with `"error": "cursor_expired"` and a
//!   `resync` hint: read the snapshots again and continue from the cursor they hand out.
//!   So does a cursor past the feed's head (a hub that was rebuilt).
//!
//! # Snapshots
//!
//! `GET /api/v1/accounts` and `/api/v1/orgs` page through the hub in anchor order and hand
//! out, on every page, the feed `cursor` to continue from once the last page is read:
//!
//! ```text
//! GET /api/v1/orgs?limit=500            -> {"items": [...], "next_page": "...", "cursor": "ZjEuNDI"}
//! GET /api/v1/orgs?page=...             -> {"items": [...], "next_page": null,  "cursor": "ZjEuNDI"}
//! GET /api/v1/accounts?cursor=ZjEuNDI   -> the accounts, under the same feed position
//! GET /api/v1/changes?cursor=ZjEuNDI    -> everything that changed since
//! ```
//!
//! The feed head is taken **before** the first page is read, and carried in the page
//! tokens, so nothing is missed: a change made while the snapshot is read is in the feed
//! after that cursor. It may be in the snapshot too (**at least once**: the overlap is the
//! changes made during the snapshot), so apps apply feed entries as idempotent upserts and
//! deletes by anchor. To read both snapshots under one position, pass the cursor of the
//! first to the first page of the second (`?cursor=`). A snapshot read for longer than the
//! retention answers 410 like an expired cursor.
//!
//! Errors are JSON: `{"error": "<code>", "message": "<what and where>"}` (see [`ApiError`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use idsync_core::{
    Clock, EntityKind, Error, ErrorKind, FeedEntry, PageRequest, PageToken, Store, SystemClock,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long feed entries (and tombstones) are kept by default: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default and largest `limit` of a feed or snapshot page.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` of a feed or snapshot page.
pub const MAX_LIMIT: usize = 1000;

/// The hint of a `410`: what an app does when its cursor expired.
pub const RESYNC_HINT: &str = "read GET /api/v1/orgs and GET /api/v1/accounts again from their \
     first page and continue the feed from the cursor they hand out";

/// An error answer of the API: an HTTP status and `{"error": code, "message": ...}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code (`cursor_expired`, `bad_request`, `invalid_data`, ...).
    pub code: String,
    /// What went wrong, and where.
    pub message: String,
    /// More fields of the body (e.g. `resync`, per-record `errors`).
    pub extra: serde_json::Map<String, Value>,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// `410 cursor_expired` with the resync hint.
    fn expired(message: String) -> Self {
        ApiError::new(StatusCode::GONE, "cursor_expired", message).with(
            "resync",
            json!({
                "orgs": "/api/v1/orgs",
                "accounts": "/api/v1/accounts",
                "hint": RESYNC_HINT,
            }),
        )
    }

    /// The body.
    pub fn body(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("error".into(), Value::String(self.code.clone()));
        m.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(m)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind() {
            ErrorKind::InvalidData | ErrorKind::ConfigInvalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut out = ApiError::new(status, e.kind().as_str(), e.to_string());
        if e.is_temporary() {
            out = out.with("retry", Value::Bool(true));
        }
        out
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!(
            "the query string is not valid here: {}",
            r.body_text()
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The opaque form of a feed position.
pub fn encode_cursor(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("f1.{seq}"))
}

/// The feed position of a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "cursor {cursor:?} is not a cursor this API handed out"
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    text.strip_prefix("f1.")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

/// A feed entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// The change's sequence number.
    pub seq: u64,
    /// `org` or `account`.
    pub kind: EntityKind,
    /// The hub anchor.
    pub anchor: String,
    /// `upsert` or `delete`.
    pub op: ChangeOp,
    /// The entity's version after the change (grows with every change of it).
    pub version: u64,
    /// When the hub changed.
    pub at: DateTime<Utc>,
    /// The entity after the change; `null` for a delete.
    pub entity: Option<Value>,
}

/// What a [`ChangeEntry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Created or changed: `entity` is its state now.
    Upsert,
    /// Deleted (a tombstone).
    Delete,
}

impl From<FeedEntry> for ChangeEntry {
    fn from(f: FeedEntry) -> Self {
        ChangeEntry {
            seq: f.seq,
            kind: f.kind,
            anchor: f.anchor.as_str().to_owned(),
            op: if f.entity.is_some() {
                ChangeOp::Upsert
            } else {
                ChangeOp::Delete
            },
            version: f.seq,
            at: f.at,
            entity: f.entity,
        }
    }
}

/// One page of the feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangesPage {
    /// The changes, in order.
    pub entries: Vec<ChangeEntry>,
    /// The cursor to ask with next (also on an empty page).
    pub next_cursor: String,
    /// More entries were already there when this page was read.
    pub has_more: bool,
}

/// One page of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// Orgs or accounts, in anchor order.
    pub items: Vec<Value>,
    /// The token of the next page; `null` on the last.
    pub next_page: Option<String>,
    /// The feed cursor to continue from once the snapshot is read.
    pub cursor: String,
}

/// The query of `GET /api/v1/changes`.
#[derive(Debug, Deserialize)]
struct ChangesQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// The query of a snapshot page.
#[derive(Debug, Deserialize)]
struct SnapshotQuery {
    page: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// What the feed routes share.
#[derive(Debug, Clone)]
struct FeedState {
    store: Arc<dyn Store>,
}

/// The feed and snapshot routes over `store` (see the [module docs](self)).
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/orgs", get(orgs))
        .with_state(FeedState { store })
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(format!(
            "limit {n} is more than the largest page, {MAX_LIMIT}"
        ))),
        Some(n) => Ok(n),
    }
}

/// `since` is still a position the retained feed continues from; else the 410.
async fn check_position(store: &dyn Store, since: u64, what: &str) -> Result<(), ApiError> {
    let floor = store.feed_floor().await?;
    if since < floor {
        return Err(ApiError::expired(format!(
            "{what} is at change {since}, but changes up to {floor} are no longer kept \
             (the feed's retention)"
        )));
    }
    let head = store.feed_head().await?;
    if since > head {
        return Err(ApiError::expired(format!(
            "{what} is at change {since}, past the hub's newest change {head} (the hub was \
             rebuilt)"
        )));
    }
    Ok(())
}

async fn changes(
    State(st): State<FeedState>,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ChangesPage>, ApiError> {
    let Query(q) = q?;
    let limit = limit_of(q.limit)?;
    let since = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => decode_cursor(c)?,
    };
    let head = st.store.feed_head().await?;
    let entries = st.store.feed(since, limit).await?;
    // Checked after the read: had the feed been pruned past `since` meanwhile, what was
    // read would have a gap before it.
    check_position(st.store.as_ref(), since, "the cursor").await?;
    let last = entries.last().map_or(since, |e| e.seq);
    Ok(Json(ChangesPage {
        has_more: last < head,
        next_cursor: encode_cursor(last),
        entries: entries.into_iter().map(ChangeEntry::from).collect(),
    }))
}

/// A snapshot's page token: the store's page token and the feed head of the snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotToken {
    /// The feed position the snapshot continues from.
    h: u64,
    /// The store's page token.
    t: String,
}

fn encode_page(t: &SnapshotToken) -> Result<String, ApiError> {
    let raw = serde_json::to_vec(t).map_err(Error::from)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

fn decode_page(page: &str) -> Result<SnapshotToken, ApiError> {
    let bad = || ApiError::bad_request(format!("page {page:?} is not a page token of this API"));
    let raw = URL_SAFE_NO_PAD.decode(page).map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

async fn snapshot(
    st: &FeedState,
    q: SnapshotQuery,
    kind: EntityKind,
) -> Result<Json<SnapshotPage>, ApiError> {
    let limit = limit_of(q.limit)?;
    let (head, token) = match (&q.page, &q.cursor) {
        (Some(p), _) => {
            let t = decode_page(p)?;
            (t.h, Some(PageToken(t.t)))
        }
        (None, Some(c)) => (decode_cursor(c)?, None),
        // Taken before the first page is read: what changes while the snapshot is read is
        // in the feed after it.
        (None, None) => (st.store.feed_head().await?, None),
    };
    let req = PageRequest {
        size: Some(limit),
        token,
    };
    let (items, next) = match kind {
        EntityKind::Account => json_page(st.store.hub_accounts(req).await?)?,
        EntityKind::Org => json_page(st.store.hub_orgs(req).await?)?,
    };
    check_position(st.store.as_ref(), head, "the snapshot").await?;
    let next_page = next
        .map(|t| encode_page(&SnapshotToken { h: head, t: t.0 }))
        .transpose()?;
    Ok(Json(SnapshotPage {
        items,
        next_page,
        cursor: encode_cursor(head),
    }))
}

fn json_page<T: Serialize>(
    p: idsync_core::Page<T>,
) -> Result<(Vec<Value>, Option<PageToken>), ApiError> {
    let items = p
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)?;
    Ok((items, p.next))
}

async fn accounts(
    State(st): State<FeedState>,
    q: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Json<SnapshotPage>, ApiError> {
    snapshot(&st, q?.0, EntityKind::Account).await
}

async fn orgs(
    State(st): State<FeedState>,
    q: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Json<SnapshotPage>, ApiError> {
    snapshot(&st, q?.0, EntityKind::Org).await
}

/// Enforce the feed's retention once: drop the entries older than `retention` as of `now`.
/// Returns how many were removed.
pub async fn prune(
    store: &dyn Store,
    retention: Duration,
    now: DateTime<Utc>,
) -> idsync_core::Result<u64> {
    let keep = chrono::Duration::from_std(retention)
        .map_err(|_| Error::config(format!("feed retention {retention:?} is out of range")))?;
    let before = now
        .checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    store.feed_prune(before).await
}

/// Enforce the feed's retention every `every` on `clock` (the system clock when `None`),
/// until the task is aborted. A failed prune is logged and tried again at the next tick.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    retention: Duration,
    every: Duration,
    clock: Option<Arc<dyn Clock>>,
) -> tokio::task::JoinHandle<()> {
    let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune(store.as_ref(), retention, clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "feed retention: old entries removed"),
                Err(e) => tracing::warn!(error = %e, "feed retention: prune failed"),
            }
        }
    })
}
