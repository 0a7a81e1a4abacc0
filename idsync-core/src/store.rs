//! The [`Store`] trait: the hub directory, links, shadow copies, sync cursors, runs and
//! their journals, audit entries, an ordered change feed, and job leases.
//!
//! Three implementations share one test suite: [`MemoryStore`](crate::MemoryStore) here,
//! SQLite and PostgreSQL in `idsync-store`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};
use crate::source::{Applied, Op, OpKind, Page, PageRequest, SyncCursor};

/// A link between a source entity and a target entity of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Org or account.
    pub kind: EntityKind,
    /// The source's anchor.
    pub source: Anchor,
    /// The target's anchor.
    pub target: Anchor,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Planned, not applied (a dry run).
    Planned,
    /// Stopped by the guard; waits for approval.
    NeedsApproval,
    /// Approved; will be applied by the next `apply`.
    Approved,
    /// Being applied.
    Running,
    /// Every op succeeded.
    Succeeded,
    /// Some ops failed.
    PartiallyFailed,
    /// The run failed before or while applying (e.g. a read error).
    Failed,
}

impl RunStatus {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Planned => "planned",
            RunStatus::NeedsApproval => "needs_approval",
            RunStatus::Approved => "approved",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::PartiallyFailed => "partially_failed",
            RunStatus::Failed => "failed",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique id.
    pub id: String,
    /// The job's name.
    pub job: String,
    /// Status.
    pub status: RunStatus,
    /// When planning started.
    pub started_at: DateTime<Utc>,
    /// When it ended (applied, failed, or stopped at the guard).
    pub finished_at: Option<DateTime<Utc>>,
    /// The plan (serialized [`Plan`](crate::Plan)), kept for review and approval.
    pub plan: Option<Value>,
    /// Counts and notes (serialized report summary).
    pub summary: Option<Value>,
}

/// The state of one op in a run's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// About to be sent to the sink.
    Intent,
    /// Applied.
    Done,
    /// Failed.
    Failed,
    /// Not attempted (a dependency failed).
    Skipped,
    /// Sent, but its answer was lost (a timeout or a reset after the request went out): the
    /// sink may have applied it. Like an intent it stays open, and the job's next run
    /// resolves it first: it looks the entity up and adopts it, instead of creating it
    /// again.
    Unknown,
}

/// One op of a run, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The run.
    pub run_id: String,
    /// The op's index in the plan.
    pub op_index: usize,
    /// The op as sent (anchors resolved).
    pub op: Op,
    /// The source entity it came from.
    pub source_anchor: Option<Anchor>,
    /// The target anchor written (for creates: the one the sink assigned).
    pub target_anchor: Option<Anchor>,
    /// State.
    pub state: JournalState,
    /// The error, for failed ops.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Before and after of one entity in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The run.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// Org or account.
    pub kind: EntityKind,
    /// The target anchor.
    pub anchor: Anchor,
    /// What happened: an op of the engine, or another event (e.g. a login).
    pub op: AuditAction,
    /// The entity (or the changed fields) before.
    pub before: Option<Value>,
    /// The entity (or the changed fields) after.
    pub after: Option<Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What an [`AuditEntry`] records: an op the engine applied, or an event of another part
/// (e.g. `"oidc_login"`). Stored as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditAction {
    /// An op.
    Op(OpKind),
    /// Another event, by name.
    Event(String),
}

impl AuditAction {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            AuditAction::Op(k) => k.as_str(),
            AuditAction::Event(e) => e,
        }
    }
}

impl From<OpKind> for AuditAction {
    fn from(k: OpKind) -> Self {
        AuditAction::Op(k)
    }
}

impl From<String> for AuditAction {
    fn from(s: String) -> Self {
        match s.parse::<OpKind>() {
            Ok(k) => AuditAction::Op(k),
            Err(_) => AuditAction::Event(s),
        }
    }
}

impl From<&str> for AuditAction {
    fn from(s: &str) -> Self {
        AuditAction::from(s.to_owned())
    }
}

impl From<AuditAction> for String {
    fn from(a: AuditAction) -> Self {
        match a {
            AuditAction::Op(k) => k.as_str().to_owned(),
            AuditAction::Event(e) => e,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<OpKind> for AuditAction {
    fn eq(&self, other: &OpKind) -> bool {
        matches!(self, AuditAction::Op(k) if k == other)
    }
}

/// A change of a link, recorded with the op that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkChange {
    /// Link source to target.
    Put {
        /// Source anchor.
        source: Anchor,
        /// Target anchor.
        target: Anchor,
    },
    /// Forget the link of this source anchor.
    Remove {
        /// Source anchor.
        source: Anchor,
    },
}

/// A change of a shadow copy (what was last written to an unreadable sink).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowChange {
    /// The entity as now written (JSON of an `Org` or `Account`).
    Put {
        /// Target anchor.
        anchor: Anchor,
        /// The entity.
        entity: Value,
    },
    /// The entity was deleted.
    Remove {
        /// Target anchor.
        anchor: Anchor,
    },
}

/// Everything one applied (or failed) op changes in the store. A store writes it atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    /// The job.
    pub job: String,
    /// Org or account.
    pub kind: EntityKind,
    /// The journal entry (state `Done` or `Failed`); `None` for a link-only record
    /// (an entity correlated to an equal target needs no op, only its link).
    pub journal: Option<JournalEntry>,
    /// The link to put or remove.
    pub link: Option<LinkChange>,
    /// The shadow copy to put or remove.
    pub shadow: Option<ShadowChange>,
    /// The audit entry.
    pub audit: Option<AuditEntry>,
}

/// One write of [`Store::hub_apply_batch`]: an op and, when given, its record.
#[derive(Debug, Clone, PartialEq)]
pub struct HubWrite {
    /// The op.
    pub op: Op,
    /// Its record, written in the same transaction.
    pub record: Option<OpRecord>,
}

/// The account fields whose correlation keys every store indexes for
/// [`Store::hub_find_accounts`]: the default correlation rules, and the phone number.
pub const HUB_KEY_FIELDS: &[&str] = &["employee_id", "email", "username", "phone"];

/// The error of [`Store::hub_find_accounts`] for a field outside [`HUB_KEY_FIELDS`].
pub fn unindexed(field: &str) -> crate::Error {
    crate::Error::unsupported(format!(
        "the hub indexes no correlation keys of field {field:?} (indexed: {})",
        HUB_KEY_FIELDS.join(", ")
    ))
}

/// One entry of the hub's ordered change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// Org or account.
    pub kind: EntityKind,
    /// The hub anchor.
    pub anchor: Anchor,
    /// The entity after the change; `None` for a delete.
    pub entity: Option<Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What [`Store::idempotency_put`] keeps of one request made under an `Idempotency-Key`:
/// a digest of the request, so that the same key with another body is told apart, and the
/// answer given, so that a retry gets the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// What the key is unique within (e.g. `"import:hr-to-hub"`).
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// A digest of the request (method, path, body), hex.
    pub request_hash: String,
    /// The answer given (status and body, as the caller chose to keep them).
    pub response: Value,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

/// A job's lease as the store granted it: who holds it, under which generation, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job: String,
    /// The holder (a worker's unique name).
    pub holder: String,
    /// The fencing token: the lease's generation. It grows by one every time the lease
    /// changes hands and stays the same while its holder renews it.
    pub token: u64,
    /// When the lease runs out unless renewed, on the clock that judges it (the database's
    /// for SQL stores, the injected clock for the memory store).
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The fence for writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            job: self.job.clone(),
            holder: self.holder.clone(),
            token: self.token,
        }
    }
}

/// What a write made under a lease proves: that `holder` still holds the lease of `job`
/// under generation `token`, and that it has not run out. See [`Store::fenced`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The job.
    pub job: String,
    /// The holder the lease was granted to.
    pub holder: String,
    /// The generation it was granted under ([`Lease::token`]).
    pub token: u64,
}

/// The error of a write under a lease that is no longer held ([`ErrorKind::Conflict`],
/// context `lease_lost` = the job). `held_by` is the generation now holding it, or `None`
/// when the lease ran out or was released without anyone taking it over.
pub fn lease_lost(fence: &Fence, held_by: Option<u64>) -> Error {
    let msg = match held_by {
        Some(generation) if generation != fence.token => format!(
            "lease lost: job {} is now held by generation {generation} (this worker held generation {})",
            fence.job, fence.token
        ),
        _ => format!(
            "lease lost: the lease of job {} (generation {}) ran out or was released",
            fence.job, fence.token
        ),
    };
    Error::new(ErrorKind::Conflict, msg).with_context(LEASE_LOST, fence.job.clone())
}

/// The context key that marks a [`lease_lost`] error.
pub const LEASE_LOST: &str = "lease_lost";

/// Whether `e` says that the writer's lease was lost (see [`lease_lost`]).
pub fn is_lease_lost(e: &Error) -> bool {
    e.kind() == ErrorKind::Conflict && e.context().iter().any(|(k, _)| k == LEASE_LOST)
}

// --- inbox (durable provider events) ---------------------------------------------------

/// One entity a provider event names, as the inbox keeps it: the entity in the provider's
/// own encoding (e.g. `user:manager4521` or `dept:42`) and whether the event says it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxTarget {
    /// The entity, encoded by the event log that wrote it.
    pub target: String,
    /// The event says the entity is gone (a hint: sources re-read before deleting).
    pub deleted: bool,
}

/// A verified provider event to record in an inbox ([`Store::inbox_push`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxPush {
    /// The inbox (one per provider instance, e.g. `dingtalk:corp1`).
    pub stream: String,
    /// Replay keys of the event (a nonce, an event id). The event is refused, and nothing
    /// is written, when any of them was recorded in this stream within `window` before `at`.
    pub keys: Vec<String>,
    /// How long a replay key is kept.
    pub window: Duration,
    /// The provider's event type, e.g. `user_add_org`.
    pub event_type: String,
    /// The entities it names (may be empty, e.g. a URL check: only its keys are kept).
    pub targets: Vec<InboxTarget>,
    /// When it was received (the receiver's clock; replay keys are judged on it).
    pub at: DateTime<Utc>,
}

/// One recorded event of an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// Position in its stream: 1, 2, 3, ... in commit order, no gaps.
    pub seq: u64,
    /// The provider's event type.
    pub event_type: String,
    /// The entities it names.
    pub targets: Vec<InboxTarget>,
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// The store behind the hub and the engine.
///
/// Listings are paged like a [`Source`](crate::Source)'s. All methods are safe to call
/// concurrently.
///
/// # Leases and fencing
///
/// A job runs on one worker at a time: the worker takes the job's lease
/// ([`acquire_lease`](Self::acquire_lease)), renews it well within its TTL, and gives it up
/// at the end ([`release_lease`](Self::release_lease)); [`JobLease`](crate::JobLease) does
/// all three. A lease's expiry is judged by the store's clock — the database server's for
/// SQL stores (never the worker's, so workers whose clocks disagree cannot steal a live
/// lease), the injected clock for the memory store.
///
/// A worker can stall (a pause, a slow sink) past its TTL while another worker takes the
/// lease over. So that it cannot write afterwards, every write the engine commits is
/// **fenced**: it goes through the handle [`fenced`](Self::fenced) returns, and that
/// handle's every write — [`hub_apply`](Self::hub_apply), [`hub_apply_batch`](Self::hub_apply_batch)
/// (each [`HubWrite`] and its [`OpRecord`]), [`record`](Self::record),
/// [`journal_intent`](Self::journal_intent) and [`commit_cursor`](Self::commit_cursor) —
/// first checks, **in the same transaction**, that the fence's holder still holds the
/// job's lease under the fence's token and that the lease has not run out. Otherwise the
/// write fails with [`lease_lost`] ([`ErrorKind::Conflict`]) and changes nothing. Reads,
/// [`put_run`](Self::put_run) (a run record is the worker's own, and a worker that lost its
/// lease must still be able to mark its run failed) and the lease methods are not fenced.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    // --- hub directory -------------------------------------------------------------
    /// One page of hub orgs, ordered by anchor.
    async fn hub_orgs(&self, page: PageRequest) -> Result<Page<Org>>;
    /// One page of hub accounts, ordered by anchor.
    async fn hub_accounts(&self, page: PageRequest) -> Result<Page<Account>>;
    /// One hub org.
    async fn hub_org(&self, anchor: &Anchor) -> Result<Option<Org>>;
    /// One hub account.
    async fn hub_account(&self, anchor: &Anchor) -> Result<Option<Account>>;
    /// Hub accounts whose `field` has the correlation key of `value`
    /// ([`correlation_key`](crate::model::correlation_key)), in anchor order. Stores keep
    /// an index of the keys of [`HUB_KEY_FIELDS`]; any other field is `Unsupported`, so
    /// that a caller decides explicitly whether a scan is acceptable.
    async fn hub_find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>>;
    /// Apply an op to the hub directory, append the change to the feed, and — when given —
    /// write the op's record, all in one transaction. Creates keep the proposed anchor and
    /// fail with `AlreadyExists` if it is taken. The record's audit entry gets its `before`
    /// and `after` from the change the hub made (whatever the caller put there is replaced).
    async fn hub_apply(&self, op: &Op, record: Option<&OpRecord>) -> Result<Applied>;

    /// Apply several hub writes, each all-or-nothing exactly as [`hub_apply`](Self::hub_apply)
    /// would, and answer each in order. A failing write does not stop the others. The
    /// writes must not depend on one another (the engine batches the ops of one plan phase).
    ///
    /// The default applies them one at a time; stores override it to write many in one
    /// transaction (the SQLite store turns a batch of creates into multi-row statements).
    async fn hub_apply_batch(&self, writes: Vec<HubWrite>) -> Vec<Result<Applied>> {
        let mut out = Vec::with_capacity(writes.len());
        for w in &writes {
            out.push(self.hub_apply(&w.op, w.record.as_ref()).await);
        }
        out
    }

    // --- positional listing (SCIM list pages) ------------------------------------------
    // For listings addressed by position (SCIM `startIndex` / `count`): a page costs what
    // the page holds, not the hub. The defaults read the paged listing (a scan); the
    // memory and SQL stores override them.

    /// How many hub accounts there are, not counting those in `except`.
    async fn hub_account_count(&self, except: &[Anchor]) -> Result<usize> {
        let mut n = 0;
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = self.hub_accounts(req.clone()).await?;
            n += page
                .items
                .iter()
                .filter(|a| !except.contains(&a.anchor))
                .count();
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(n),
            }
        }
    }

    /// The hub accounts at positions `offset .. offset + limit` of the anchor order, where
    /// the accounts in `except` (meant to be a short list) take no position.
    async fn hub_accounts_at(
        &self,
        offset: usize,
        limit: usize,
        except: &[Anchor],
    ) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        let mut skip = offset;
        let mut req = PageRequest::sized(10_000);
        while out.len() < limit {
            let page = self.hub_accounts(req.clone()).await?;
            for a in page.items {
                if except.contains(&a.anchor) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                } else if out.len() < limit {
                    out.push(a);
                }
            }
            match page.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// How many hub orgs there are.
    async fn hub_org_count(&self) -> Result<usize> {
        let mut n = 0;
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = self.hub_orgs(req.clone()).await?;
            n += page.items.len();
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(n),
            }
        }
    }

    /// The hub orgs at positions `offset .. offset + limit` of the anchor order.
    async fn hub_orgs_at(&self, offset: usize, limit: usize) -> Result<Vec<Org>> {
        let mut out = Vec::new();
        let mut skip = offset;
        let mut req = PageRequest::sized(10_000);
        while out.len() < limit {
            let page = self.hub_orgs(req.clone()).await?;
            for o in page.items {
                if skip > 0 {
                    skip -= 1;
                } else if out.len() < limit {
                    out.push(o);
                }
            }
            match page.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// The hub accounts whose `orgs` contain `org`, in anchor order.
    async fn hub_org_members(&self, org: &Anchor) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = self.hub_accounts(req.clone()).await?;
            out.extend(page.items.into_iter().filter(|a| a.orgs.contains(org)));
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }
    // --- end of positional listing --------------------------------------------------------

    // --- links ---------------------------------------------------------------------
    /// One page of a job's links of one kind, ordered by source anchor.
    async fn links(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Link>>;
    /// The links of these source anchors (those that have one), ordered by source anchor.
    /// Incremental runs read only the links of what changed.
    async fn links_of(&self, job: &str, kind: EntityKind, sources: &[Anchor]) -> Result<Vec<Link>>;
    /// The links that point to these target anchors, ordered by source anchor. A target
    /// some other source of the job is linked to is not free for correlation.
    async fn links_to(&self, job: &str, kind: EntityKind, targets: &[Anchor]) -> Result<Vec<Link>>;
    /// How many links of one kind a job holds (the guard's base).
    async fn link_count(&self, job: &str, kind: EntityKind) -> Result<usize>;

    // --- shadow copies ---------------------------------------------------------------
    /// One page of the shadow copy of a job's target (JSON entities), ordered by anchor.
    async fn shadow(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Value>>;

    // --- cursors -----------------------------------------------------------------------
    /// The committed incremental-sync cursor of a job.
    async fn cursor(&self, job: &str) -> Result<Option<SyncCursor>>;
    /// Commit a cursor, if the stored one still equals `expected` (else `Conflict`).
    async fn commit_cursor(
        &self,
        job: &str,
        expected: Option<&SyncCursor>,
        cursor: &SyncCursor,
    ) -> Result<()>;

    // --- runs and journal ----------------------------------------------------------------
    /// Insert or replace a run.
    async fn put_run(&self, run: &RunRecord) -> Result<()>;
    /// One run.
    async fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// The most recent runs (newest first), optionally of one job.
    async fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>>;
    /// Journal an intent (before the op is sent).
    async fn journal_intent(&self, entry: &JournalEntry) -> Result<()>;
    /// Write the record of an applied or failed op atomically: journal, link, shadow, audit.
    async fn record(&self, record: &OpRecord) -> Result<()>;
    /// The journal of a run, by op index (the latest state of each op).
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>>;
    /// Ops of a job whose outcome is open, oldest first: intents that never reached
    /// `Done`/`Failed` (a crashed run) and ops journaled `Unknown` (their answer was lost).
    async fn open_intents(&self, job: &str) -> Result<Vec<JournalEntry>>;

    // --- audit and feed ---------------------------------------------------------------
    /// The audit trail of one entity (target anchor), oldest first.
    async fn audit(&self, kind: EntityKind, anchor: &Anchor) -> Result<Vec<AuditEntry>>;
    /// Feed entries with `seq > since`, at most `limit`, in order.
    async fn feed(&self, since: u64, limit: usize) -> Result<Vec<FeedEntry>>;
    /// The sequence number of the newest feed entry (0 while the feed is empty), read
    /// without walking the feed.
    async fn feed_head(&self) -> Result<u64>;

    // --- feed retention ------------------------------------------------------------------
    /// Drop the feed's oldest entries: every entry before the first one made at or after
    /// `before` (all of them when there is none). The feed stays a contiguous run of
    /// sequence numbers after [`feed_floor`](Self::feed_floor); [`feed_head`](Self::feed_head)
    /// and the numbers handed out next are unchanged. Returns how many entries were removed.
    async fn feed_prune(&self, before: DateTime<Utc>) -> Result<u64>;
    /// The sequence number the retained feed starts after: entries with `seq <= floor` were
    /// pruned, so a reader at position `since` sees every change only while
    /// `since >= floor`. The oldest retained entry is `floor + 1`; 0 while nothing was
    /// pruned; the head when everything was.
    async fn feed_floor(&self) -> Result<u64>;

    // --- idempotency keys ---------------------------------------------------------------
    /// The record kept under `(scope, key)`, if any.
    async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>>;
    /// Keep `rec` unless its `(scope, key)` is taken: `None` when it was stored, else the
    /// record already there (unchanged; the first writer wins, also between processes).
    async fn idempotency_put(&self, rec: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>>;
    /// Forget the records stored before `before`; returns how many.
    async fn idempotency_prune(&self, before: DateTime<Utc>) -> Result<u64>;

    // --- inbox (durable provider events) ---------------------------------------------
    /// Record a verified provider event in its stream, in one transaction: claim its replay
    /// keys, then append it with the stream's next sequence number. Returns that number, or
    /// `None` (nothing written) when a key was claimed within the window before: a replay.
    /// A callback answers the provider only after this returned, so an acknowledged event
    /// is never lost. Sequence numbers become visible in order (concurrent pushes of a
    /// stream serialize), so a reader that moved past `n` never misses an event below `n`.
    async fn inbox_push(&self, push: &InboxPush) -> Result<Option<u64>>;
    /// Events of `stream` with `seq > after`, at most `limit`, in order.
    async fn inbox_since(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<InboxEvent>>;
    /// The sequence number of the newest event of `stream` (0 when none was ever pushed;
    /// trimming does not lower it).
    async fn inbox_head(&self, stream: &str) -> Result<u64>;
    /// Forget the events of `stream` with `seq <= upto` (consumed: their job's cursor is
    /// past them) and the replay keys whose window ended before `now`. Returns how many
    /// events were removed.
    async fn inbox_trim(&self, stream: &str, upto: u64, now: DateTime<Utc>) -> Result<u64>;

    // --- leases --------------------------------------------------------------------------
    /// Take or renew the lease on a job for `ttl`, as judged by the store's clock (see
    /// [Leases and fencing](Store#leases-and-fencing)). `None` while another holder has a
    /// lease that has not run out. Taking a lease another holder had (or a new one) gives a
    /// token greater than any before it; renewing keeps the token.
    async fn acquire_lease(&self, job: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Give the lease up (no-op when not held by `holder`). The next holder's token is
    /// still greater than this one's.
    async fn release_lease(&self, job: &str, holder: &str) -> Result<()>;

    /// A handle on this store whose writes are fenced by `fence` (see
    /// [Leases and fencing](Store#leases-and-fencing)); reads go to this store as they are.
    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn Store>;
}
