//! One test suite for every [`Store`]: the in-memory store, SQLite and PostgreSQL.
//!
//! [`run_all`] takes a factory that makes a **fresh, empty** store on a given
//! [`ManualClock`] and runs every case on its own store. The cases are public, so a store
//! can also run them one by one. A failed check returns an error naming the case and what
//! differed (the suite does not panic).
//!
//! Every [`Store`] method is covered: the hub directory (checked op by op against the
//! in-memory [`Directory`], which defines the rules), paging, the change feed's order,
//! the atomicity of `hub_apply` with a record, `hub_apply_batch` (answers as one by one, in
//! order), links, shadow copies, cursor conflicts,
//! runs, the journal and open intents, feed retention (prune and floor; the hub as a change
//! source from a pruned cursor), idempotency keys, audit trails, leases (expiry on the store's clock,
//! tokens) and fenced writes, a worker that stalls while another takes its lease over, and
//! the engine end to end (memory source → hub over the store; a second run plans nothing),
//! and the inbox of provider events (replay keys, order under concurrent pushes, trims).
//!
//! Not API-stable; meant for tests. (It lives here, in the conformance crate, beside the
//! adapter suite: no production crate carries it.)
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let passed = idsync_conformance::store::run_all(|clock| async move {
//!     Ok(Arc::new(MemoryStore::with_clock(clock)) as Arc<dyn Store>)
//! })
//! .await?;
//! assert_eq!(passed, idsync_conformance::store::CASES.len());
//! # Ok(())
//! # }
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::LocalBoxFuture;
use idsync_core::{
    Account, Anchor, AuditEntry, Directory, Engine, EntityKind, Error, ErrorKind, Fence, Hub,
    HubWrite, Job, JournalEntry, JournalState, Lease, LinkChange, ManualClock, MemoryAdapter, Op,
    OpKind, OpRecord, Org, PageRequest, Result, RunRecord, RunStatus, ShadowChange, Sink, Source,
    Status, Store, SyncCursor,
};
use idsync_core::{Clock, InboxPush, InboxTarget};
use serde_json::{Value, json};

/// A case: a fresh store and its clock.
pub type Case =
    for<'a> fn(&'a Arc<dyn Store>, &'a Arc<ManualClock>) -> LocalBoxFuture<'a, Result<()>>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("hub_directory", |s, c| Box::pin(hub_directory(s, c))),
    ("hub_paging", |s, c| Box::pin(hub_paging(s, c))),
    ("hub_positions", |s, c| Box::pin(hub_positions(s, c))),
    ("feed_order", |s, c| Box::pin(feed_order(s, c))),
    ("feed_retention", |s, c| Box::pin(feed_retention(s, c))),
    ("hub_changes_after_prune", |s, c| {
        Box::pin(hub_changes_after_prune(s, c))
    }),
    ("idempotency_keys", |s, c| Box::pin(idempotency_keys(s, c))),
    ("hub_apply_atomic", |s, c| Box::pin(hub_apply_atomic(s, c))),
    ("hub_apply_batch", |s, c| Box::pin(hub_apply_batch(s, c))),
    ("links_and_shadow", |s, c| Box::pin(links_and_shadow(s, c))),
    ("cursors", |s, c| Box::pin(cursors(s, c))),
    ("runs", |s, c| Box::pin(runs(s, c))),
    ("journal", |s, c| Box::pin(journal(s, c))),
    ("audit_trail", |s, c| Box::pin(audit_trail(s, c))),
    ("leases", |s, c| Box::pin(leases(s, c))),
    ("lookups", |s, c| Box::pin(lookups(s, c))),
    ("fenced_writes", |s, c| Box::pin(fenced_writes(s, c))),
    ("fenced_takeover_mid_apply", |s, c| {
        Box::pin(fenced_takeover_mid_apply(s, c))
    }),
    ("fenced_stall_before_apply", |s, c| {
        Box::pin(fenced_stall_before_apply(s, c))
    }),
    ("engine_end_to_end", |s, c| {
        Box::pin(engine_end_to_end(s, c))
    }),
    // --- inbox
    ("inbox", |s, c| Box::pin(inbox(s, c))),
    ("inbox_concurrent_pushes", |s, c| {
        Box::pin(inbox_concurrent_pushes(s, c))
    }),
];

/// The instant the suite's clocks start at.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .unwrap_or_default()
}

/// Run every case, each on a fresh store from `factory`. Returns the number of cases
/// passed; the first failure is returned as an error naming its case.
pub async fn run_all<F, Fut>(factory: F) -> Result<usize>
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Result<Arc<dyn Store>>>,
{
    let mut passed = 0;
    for (name, case) in CASES {
        let clock = Arc::new(ManualClock::new(epoch()));
        let store = factory(clock.clone()).await?;
        case(&store, &clock)
            .await
            .map_err(|e| Error::new(e.kind(), format!("store suite case {name}: {e}")))?;
        passed += 1;
    }
    Ok(passed)
}

fn fail(msg: String) -> Error {
    Error::unexpected(msg)
}

fn ensure(cond: bool, what: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(fail(format!("check failed: {what}")))
    }
}

#[allow(clippy::needless_pass_by_value)] // callers pass temporaries
fn same<T: PartialEq + Debug>(got: T, want: T, what: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(fail(format!("{what}: got {got:?}, want {want:?}")))
    }
}

async fn all_orgs(s: &dyn Store, size: usize) -> Result<Vec<Org>> {
    let mut out = Vec::new();
    let mut req = PageRequest::sized(size);
    loop {
        let p = s.hub_orgs(req.clone()).await?;
        ensure(p.items.len() <= size, "a page is at most the asked size")?;
        out.extend(p.items);
        match p.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

async fn all_accounts(s: &dyn Store, size: usize) -> Result<Vec<Account>> {
    let mut out = Vec::new();
    let mut req = PageRequest::sized(size);
    loop {
        let p = s.hub_accounts(req.clone()).await?;
        ensure(p.items.len() <= size, "a page is at most the asked size")?;
        out.extend(p.items);
        match p.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

fn account(anchor: &str, orgs: &[&str]) -> Account {
    let mut a = Account::new(anchor, format!("user-{anchor}"));
    a.orgs = orgs.iter().map(|o| Anchor::from(*o)).collect();
    a.email = Some(format!("{anchor}@example.com"));
    a
}

fn org(anchor: &str, parent: Option<&str>) -> Org {
    Org::new(anchor, parent.map(Anchor::from), format!("Org {anchor}"))
}

fn patch(pairs: &[(&str, Value)]) -> idsync_core::Patch {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Ops covering every rule of the hub directory, good and bad.
fn directory_script() -> Vec<Op> {
    vec![
        Op::CreateOrg {
            org: org("root", None),
        },
        Op::CreateOrg {
            org: org("root", None),
        }, // AlreadyExists
        Op::CreateOrg {
            org: org("eng", Some("root")),
        },
        Op::CreateOrg {
            org: org("ops", Some("root")),
        },
        Op::CreateOrg {
            org: org("x", Some("missing")),
        }, // NotFound
        Op::CreateOrg { org: org("", None) }, // InvalidData
        Op::CreateOrg {
            org: org("selfish", Some("selfish")),
        }, // NotFound: own parent
        Op::CreateOrg {
            org: org("eng", Some("missing")),
        }, // AlreadyExists before NotFound
        Op::CreateOrg {
            org: org("研发", Some("eng")),
        },
        Op::CreateAccount {
            account: account("u1", &["eng"]),
        },
        Op::CreateAccount {
            account: account("u1", &["eng"]),
        }, // AlreadyExists
        Op::CreateAccount {
            account: account("u2", &["nope"]),
        }, // NotFound
        Op::CreateAccount {
            account: account("u2", &["ops", "研发"]),
        },
        Op::CreateAccount {
            account: account("u3", &[]),
        },
        Op::CreateAccount {
            account: account("u1", &["missing"]),
        }, // AlreadyExists first
        Op::CreateAccount {
            account: account("", &[]),
        }, // InvalidData
        Op::CreateAccount {
            account: account("u4", &["ops", "ops", "root"]),
        },
        Op::UpdateOrg {
            anchor: "eng".into(),
            changes: patch(&[("name", json!("Engineering")), ("order", json!(3))]),
        },
        Op::UpdateOrg {
            anchor: "eng".into(),
            changes: patch(&[("parent", json!("ops"))]),
        }, // InvalidData: parent via update
        Op::UpdateOrg {
            anchor: "ghost".into(),
            changes: patch(&[("name", json!("G"))]),
        }, // NotFound
        Op::MoveOrg {
            anchor: "root".into(),
            parent: Some("研发".into()),
        }, // InvalidData: cycle through two levels
        Op::MoveOrg {
            anchor: "eng".into(),
            parent: Some("eng".into()),
        }, // InvalidData: self
        Op::MoveOrg {
            anchor: "eng".into(),
            parent: Some("ghost".into()),
        }, // NotFound
        Op::MoveOrg {
            anchor: "研发".into(),
            parent: Some("ops".into()),
        },
        Op::MoveOrg {
            anchor: "ops".into(),
            parent: None,
        },
        Op::DeleteOrg {
            anchor: "root".into(),
        }, // Conflict: child eng
        Op::DeleteOrg {
            anchor: "ops".into(),
        }, // Conflict: child 研发
        Op::DeleteOrg {
            anchor: "eng".into(),
        }, // Conflict: member u1
        Op::UpdateAccount {
            anchor: "u1".into(),
            changes: patch(&[("orgs", json!(["ops"])), ("title", json!("Lead"))]),
        },
        Op::UpdateAccount {
            anchor: "u1".into(),
            changes: patch(&[("orgs", json!(["ghost"]))]),
        }, // NotFound
        Op::DeleteOrg {
            anchor: "eng".into(),
        }, // now empty: ok
        Op::DisableAccount {
            anchor: "u2".into(),
        },
        Op::DisableAccount {
            anchor: "ghost".into(),
        }, // NotFound
        Op::EnableAccount {
            anchor: "u2".into(),
        },
        Op::DisableAccount {
            anchor: "u3".into(),
        },
        Op::DeleteAccount {
            anchor: "u3".into(),
        },
        Op::DeleteAccount {
            anchor: "u3".into(),
        }, // NotFound
        Op::UpdateAccount {
            anchor: "u2".into(),
            changes: patch(&[("orgs", json!(["ops"]))]),
        },
        Op::DeleteOrg {
            anchor: "研发".into(),
        }, // no members left
        Op::UpdateAccount {
            anchor: "u2".into(),
            changes: patch(&[("attrs.costCenter", json!("42")), ("manager", json!("u1"))]),
        },
    ]
}

/// The hub applies ops exactly like the in-memory [`Directory`]: same results, same
/// error kinds, same final content.
pub async fn hub_directory(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let mut reference = Directory::new();
    for (i, op) in directory_script().iter().enumerate() {
        let want = reference.apply(op, None).map(|(a, _)| a);
        let got = s.hub_apply(op, None).await;
        match (&want, &got) {
            (Ok(w), Ok(g)) => same(g, w, &format!("op {i} ({}) result", op.name()))?,
            (Err(w), Err(g)) => same(g.kind(), w.kind(), &format!("op {i} ({}) error", op.name()))?,
            _ => {
                return Err(fail(format!(
                    "op {i} ({}): store gave {:?}, directory gave {:?}",
                    op.name(),
                    got.as_ref().map_err(|e| e.to_string()),
                    want.as_ref().map_err(|e| e.to_string())
                )));
            }
        }
    }
    let orgs = all_orgs(s, 2).await?;
    same(
        orgs,
        reference.orgs.values().cloned().collect::<Vec<_>>(),
        "hub orgs after the script",
    )?;
    let accounts = all_accounts(s, 1).await?;
    same(
        accounts,
        reference.accounts.values().cloned().collect::<Vec<_>>(),
        "hub accounts after the script",
    )?;
    same(
        s.hub_org(&"研发".into()).await?,
        None,
        "deleted org is gone",
    )?;
    let ops = s.hub_org(&"ops".into()).await?;
    same(ops.and_then(|o| o.parent), None, "ops moved to the root")?;
    let u2 = s
        .hub_account(&"u2".into())
        .await?
        .ok_or_else(|| fail("u2 missing".into()))?;
    same(u2.status, Status::Active, "u2 enabled again")?;
    same(u2.manager, Some(Anchor::from("u1")), "u2 manager")?;
    same(
        u2.attrs.get("costCenter").cloned(),
        Some(json!("42")),
        "u2 attribute",
    )?;
    same(s.hub_account(&"u3".into()).await?, None, "u3 deleted")?;
    // Memberships follow updates: ops still has members, so it cannot be deleted.
    let err = s
        .hub_apply(
            &Op::DeleteOrg {
                anchor: "ops".into(),
            },
            None,
        )
        .await
        .err()
        .map(|e| e.kind());
    same(err, Some(ErrorKind::Conflict), "org with members is kept")?;
    Ok(())
}

/// Hub listings page by anchor, byte-wise, with no empty last page.
pub async fn hub_paging(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let first = s.hub_orgs(PageRequest::first()).await?;
    ensure(first.items.is_empty() && first.next.is_none(), "empty hub")?;
    let anchors = ["b", "B", "a", "ä", "a-1", "Z", "中", "10", "9"];
    for a in anchors {
        s.hub_apply(&Op::CreateOrg { org: org(a, None) }, None)
            .await?;
        s.hub_apply(
            &Op::CreateAccount {
                account: account(a, &[a]),
            },
            None,
        )
        .await?;
    }
    let mut want: Vec<String> = anchors.iter().map(|a| (*a).to_owned()).collect();
    want.sort(); // byte-wise, as Rust orders strings
    for size in [1, 2, 3, 9, 10, 500] {
        let got: Vec<String> = all_orgs(s, size)
            .await?
            .into_iter()
            .map(|o| o.anchor.into_string())
            .collect();
        same(&got, &want, &format!("orgs paged by {size}"))?;
        let got: Vec<String> = all_accounts(s, size)
            .await?
            .into_iter()
            .map(|o| o.anchor.into_string())
            .collect();
        same(&got, &want, &format!("accounts paged by {size}"))?;
    }
    // An exact multiple ends without an empty page.
    let p1 = s.hub_orgs(PageRequest::sized(3)).await?;
    let mut req = PageRequest::sized(3);
    req.token = p1.next.clone();
    let p2 = s.hub_orgs(req.clone()).await?;
    req.token = p2.next.clone();
    let p3 = s.hub_orgs(req).await?;
    same(p3.items.len(), 3, "third page of nine by three")?;
    same(p3.next, None, "no page after an exact multiple")?;
    // Default page size.
    let all = s.hub_accounts(PageRequest::first()).await?;
    same(all.items.len(), anchors.len(), "default page holds all")?;
    Ok(())
}

/// Positional listing (SCIM list pages): counts, `offset` / `limit` windows in anchor
/// order with and without `except`, org windows, and the members of an org.
pub async fn hub_positions(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    same(s.hub_account_count(&[]).await?, 0, "empty hub: no accounts")?;
    same(s.hub_org_count().await?, 0, "empty hub: no orgs")?;
    same(
        s.hub_accounts_at(0, 10, &[]).await?,
        Vec::new(),
        "empty window",
    )?;
    let anchors = ["b", "B", "a", "ä", "a-1", "Z", "中", "10", "9"];
    for a in ["o1", "o2"] {
        s.hub_apply(&Op::CreateOrg { org: org(a, None) }, None)
            .await?;
    }
    for (i, a) in anchors.iter().enumerate() {
        let orgs: &[&str] = if i % 2 == 0 { &["o1"] } else { &["o2", "o1"] };
        s.hub_apply(
            &Op::CreateAccount {
                account: account(a, orgs),
            },
            None,
        )
        .await?;
    }
    let mut want: Vec<String> = anchors.iter().map(|a| (*a).to_owned()).collect();
    want.sort();
    let ids = |v: Vec<Account>| -> Vec<String> {
        v.into_iter().map(|a| a.anchor.into_string()).collect()
    };
    same(s.hub_account_count(&[]).await?, 9, "nine accounts")?;
    for (offset, limit) in [(0, 9), (0, 3), (3, 3), (7, 5), (9, 1), (20, 2), (4, 0)] {
        let end = (offset + limit).min(want.len());
        let expect: Vec<String> = want.get(offset.min(end)..end).unwrap_or(&[]).to_vec();
        same(
            ids(s.hub_accounts_at(offset, limit, &[]).await?),
            expect,
            &format!("accounts at {offset}+{limit}"),
        )?;
    }
    // Excepted accounts take no position; unknown ones change nothing.
    let except = [
        Anchor::from("B"),
        Anchor::from("a-1"),
        Anchor::from("nobody"),
    ];
    let rest: Vec<String> = want
        .iter()
        .filter(|a| !except.iter().any(|e| e.as_str() == a.as_str()))
        .cloned()
        .collect();
    same(s.hub_account_count(&except).await?, 7, "count without two")?;
    same(
        ids(s.hub_accounts_at(0, 100, &except).await?),
        rest.clone(),
        "all but two",
    )?;
    same(
        ids(s.hub_accounts_at(2, 3, &except).await?),
        rest[2..5].to_vec(),
        "a window without two",
    )?;
    // Orgs.
    same(s.hub_org_count().await?, 2, "two orgs")?;
    let org_ids: Vec<String> = s
        .hub_orgs_at(1, 5)
        .await?
        .into_iter()
        .map(|o| o.anchor.into_string())
        .collect();
    same(org_ids, vec!["o2".to_owned()], "orgs at 1+5")?;
    // Members, in anchor order, whether the org is first or second in `orgs`.
    same(
        ids(s.hub_org_members(&Anchor::from("o1")).await?),
        want.clone(),
        "members of o1",
    )?;
    let odd: Vec<String> = {
        let mut v: Vec<String> = anchors
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, a)| (*a).to_owned())
            .collect();
        v.sort();
        v
    };
    same(
        ids(s.hub_org_members(&Anchor::from("o2")).await?),
        odd,
        "members of o2",
    )?;
    same(
        ids(s.hub_org_members(&Anchor::from("none")).await?),
        Vec::new(),
        "members of no org",
    )?;
    // The windows follow writes.
    s.hub_apply(&Op::DeleteAccount { anchor: "Z".into() }, None)
        .await?;
    same(s.hub_account_count(&[]).await?, 8, "after a delete")?;
    same(
        ids(s.hub_accounts_at(0, 1, &[]).await?),
        vec!["10".to_owned()],
        "first after deleting Z",
    )?;
    Ok(())
}

/// The feed: one entry per applied op, strictly increasing from 1, readable from any
/// sequence number, nothing for failed ops.
pub async fn feed_order(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    same(s.feed(0, 100).await?.len(), 0, "empty feed")?;
    let mut expected: Vec<(EntityKind, String, bool)> = Vec::new();
    for i in 0..5 {
        let a = format!("o{i}");
        s.hub_apply(&Op::CreateOrg { org: org(&a, None) }, None)
            .await?;
        expected.push((EntityKind::Org, a, true));
        clock.advance(chrono::Duration::seconds(1));
    }
    // A failed op leaves no entry and uses no sequence number.
    let e = s
        .hub_apply(
            &Op::CreateOrg {
                org: org("o1", None),
            },
            None,
        )
        .await;
    ensure(e.is_err(), "duplicate create fails")?;
    s.hub_apply(
        &Op::CreateAccount {
            account: account("u", &["o0"]),
        },
        None,
    )
    .await?;
    expected.push((EntityKind::Account, "u".into(), true));
    s.hub_apply(
        &Op::DeleteOrg {
            anchor: "o4".into(),
        },
        None,
    )
    .await?;
    expected.push((EntityKind::Org, "o4".into(), false));
    s.hub_apply(&Op::DisableAccount { anchor: "u".into() }, None)
        .await?;
    expected.push((EntityKind::Account, "u".into(), true));

    let feed = s.feed(0, 1000).await?;
    same(feed.len(), expected.len(), "feed length")?;
    for (i, (f, (kind, anchor, present))) in feed.iter().zip(&expected).enumerate() {
        same(
            f.seq,
            i as u64 + 1,
            "sequence numbers count from 1 without gaps",
        )?;
        same(f.kind, *kind, "feed kind")?;
        same(f.anchor.as_str(), anchor.as_str(), "feed anchor")?;
        same(
            f.entity.is_some(),
            *present,
            "feed entity present unless deleted",
        )?;
    }
    same(feed[0].at, epoch(), "feed time from the store's clock")?;
    same(
        feed[1].at,
        epoch() + chrono::Duration::seconds(1),
        "feed time follows the clock",
    )?;
    let last = &feed[feed.len() - 1];
    same(
        last.entity.as_ref().and_then(|e| e.get("status")).cloned(),
        Some(json!("disabled")),
        "feed carries the entity after the change",
    )?;
    // Reading from a cursor, in pieces.
    let mut since = 0;
    let mut seen = Vec::new();
    loop {
        let batch = s.feed(since, 3).await?;
        ensure(batch.len() <= 3, "feed limit")?;
        let Some(l) = batch.last() else { break };
        since = l.seq;
        seen.extend(batch.into_iter().map(|f| f.seq));
    }
    same(
        seen,
        (1..=expected.len() as u64).collect::<Vec<_>>(),
        "feed read in pieces",
    )?;
    same(
        s.feed(4, 2)
            .await?
            .iter()
            .map(|f| f.seq)
            .collect::<Vec<_>>(),
        vec![5, 6],
        "feed from 4",
    )?;
    same(s.feed(1_000, 10).await?.len(), 0, "feed past the end")?;
    Ok(())
}

/// `feed_prune` drops a prefix of the feed by time, `feed_floor` says where the retained
/// feed starts, and the head and the next sequence numbers do not move.
pub async fn feed_retention(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    same(s.feed_floor().await?, 0, "floor of an empty feed")?;
    same(
        s.feed_prune(epoch()).await?,
        0,
        "pruning an empty feed removes nothing",
    )?;
    same(
        s.feed_floor().await?,
        0,
        "floor of an empty feed after a prune",
    )?;
    for i in 0..6 {
        s.hub_apply(
            &Op::CreateOrg {
                org: org(&format!("r{i}"), None),
            },
            None,
        )
        .await?;
        clock.advance(chrono::Duration::seconds(10));
    }
    // Entries at epoch + 0, 10, ..., 50 s, seq 1..=6.
    same(s.feed_floor().await?, 0, "nothing pruned yet")?;
    same(
        s.feed_prune(epoch()).await?,
        0,
        "nothing is older than the first entry",
    )?;
    same(
        s.feed_prune(epoch() + chrono::Duration::seconds(25))
            .await?,
        3,
        "the entries before the first at or after the cut",
    )?;
    same(s.feed_floor().await?, 3, "floor after the prune")?;
    same(s.feed_head().await?, 6, "the head does not move")?;
    same(
        s.feed(0, 100)
            .await?
            .iter()
            .map(|f| f.seq)
            .collect::<Vec<_>>(),
        vec![4, 5, 6],
        "the retained feed",
    )?;
    same(
        s.feed_prune(epoch() + chrono::Duration::seconds(25))
            .await?,
        0,
        "pruning twice at the same time removes nothing more",
    )?;
    same(
        s.feed_prune(epoch() + chrono::Duration::days(1)).await?,
        3,
        "everything is older",
    )?;
    same(
        s.feed_floor().await?,
        6,
        "floor of a feed pruned empty is the head",
    )?;
    same(s.feed_head().await?, 6, "the head still does not move")?;
    same(s.feed(0, 100).await?.len(), 0, "nothing retained")?;
    s.hub_apply(
        &Op::CreateOrg {
            org: org("after", None),
        },
        None,
    )
    .await?;
    let feed = s.feed(0, 100).await?;
    same(
        feed.iter().map(|f| f.seq).collect::<Vec<_>>(),
        vec![7],
        "numbers go on after the pruned head",
    )?;
    same(s.feed_floor().await?, 6, "floor below the new entry")?;
    Ok(())
}

/// The hub as a change source over this store's feed: `changes` from a cursor the retained
/// feed continues from is complete; from a cursor older than the floor (`feed_prune`) or
/// past the head it is not (the changes in between are gone), and an outbound job's
/// incremental run then makes a full run, which catches the change pruned from the feed.
pub async fn hub_changes_after_prune(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
) -> Result<()> {
    let s = store.as_ref();
    let hub = Arc::new(Hub::new(store.clone()));
    let at = |n: &str| SyncCursor(n.to_owned());
    for i in 0..3 {
        s.hub_apply(
            &Op::CreateOrg {
                org: org(&format!("c{i}"), None),
            },
            None,
        )
        .await?;
        clock.advance(chrono::Duration::seconds(10));
    }
    s.hub_apply(
        &Op::CreateAccount {
            account: account("a1", &["c0"]),
        },
        None,
    )
    .await?;
    clock.advance(chrono::Duration::seconds(10));
    // Entries at epoch + 0, 10, 20, 30 s, seq 1..=4.
    let cs = hub.changes(&at("0")).await?;
    ensure(
        cs.complete,
        "changes from 0 are complete while nothing is pruned",
    )?;
    same(cs.org_upserts.len(), 3, "org upserts from 0")?;
    same(cs.account_upserts.len(), 1, "account upserts from 0")?;
    same(cs.cursor, Some(at("4")), "cursor after reading from 0")?;

    same(
        s.feed_prune(epoch() + chrono::Duration::seconds(25))
            .await?,
        3,
        "prune seq 1..=3",
    )?;
    same(s.feed_floor().await?, 3, "floor after the prune")?;
    for since in ["0", "2"] {
        let cs = hub.changes(&at(since)).await?;
        ensure(
            !cs.complete,
            &format!("changes from {since}, below the floor 3, are not complete"),
        )?;
        ensure(cs.is_empty(), "a stale change set carries no changes")?;
        same(
            cs.cursor,
            Some(at("4")),
            "a stale change set's cursor is the head",
        )?;
    }
    let cs = hub.changes(&at("3")).await?;
    ensure(cs.complete, "changes from the floor are complete")?;
    same(
        cs.account_upserts
            .iter()
            .map(|a| a.anchor.as_str())
            .collect::<Vec<_>>(),
        vec!["a1"],
        "changes from the floor",
    )?;
    ensure(cs.org_upserts.is_empty(), "no org changed after the floor")?;
    let cs = hub.changes(&at("4")).await?;
    ensure(
        cs.complete && cs.is_empty(),
        "changes from the head: complete, none",
    )?;
    same(cs.cursor, Some(at("4")), "cursor from the head")?;
    let cs = hub.changes(&at("9")).await?;
    ensure(!cs.complete, "changes from past the head are not complete")?;

    // An outbound job: its first incremental run is a full one (no cursor yet).
    let app = Arc::new(MemoryAdapter::new("app"));
    let engine = Engine::new(store.clone()).with_clock(clock.clone());
    let job = Job::new("hub-to-app", hub.clone(), app.clone());
    let r = engine.run_changes(&job).await?;
    same(r.status, RunStatus::Succeeded, "first outbound run")?;
    same(r.counts.applied, 4, "three orgs and an account out")?;
    same(
        s.cursor("hub-to-app").await?,
        Some(at("4")),
        "outbound cursor at the head",
    )?;
    // A change in the hub, then the feed pruned past it: the job's cursor (4) is below
    // the floor (5), and the change is no longer in the feed.
    s.hub_apply(
        &Op::UpdateAccount {
            anchor: "a1".into(),
            changes: patch(&[("title", json!("Chief"))]),
        },
        None,
    )
    .await?;
    clock.advance(chrono::Duration::seconds(10));
    same(
        s.feed_prune(epoch() + chrono::Duration::days(1)).await?,
        2,
        "prune everything",
    )?;
    same(s.feed_floor().await?, 5, "floor at the head")?;
    let r = engine.run_changes(&job).await?;
    same(
        r.status,
        RunStatus::Succeeded,
        "outbound run after the prune",
    )?;
    same(
        r.counts.applied,
        1,
        "the full run applies the change the pruned feed lost",
    )?;
    let title = app
        .snapshot()?
        .accounts
        .values()
        .find(|a| a.username == "user-a1")
        .and_then(|a| a.title.clone());
    same(title, Some("Chief".to_owned()), "the app has the change")?;
    same(
        s.cursor("hub-to-app").await?,
        Some(at("5")),
        "outbound cursor at the head again",
    )?;
    same(
        engine.run_changes(&job).await?.counts.planned,
        0,
        "then incremental again, and quiet",
    )?;
    Ok(())
}

/// `idempotency_put` keeps the first record of a (scope, key) and answers later ones with
/// it; `idempotency_prune` forgets old records.
pub async fn idempotency_keys(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    use idsync_core::store::IdempotencyRecord;
    let s = store.as_ref();
    let rec = |scope: &str, key: &str, hash: &str, at: DateTime<Utc>| IdempotencyRecord {
        scope: scope.into(),
        key: key.into(),
        request_hash: hash.into(),
        response: json!({"status": 200, "body": {"hash": hash, "名": "导入"}}),
        at,
    };
    same(
        s.idempotency_get("import:a", "k1").await?,
        None,
        "unknown key",
    )?;
    let first = rec("import:a", "k1", "h1", epoch());
    same(s.idempotency_put(&first).await?, None, "first put stores")?;
    same(
        s.idempotency_get("import:a", "k1").await?,
        Some(first.clone()),
        "stored record read back",
    )?;
    clock.advance(chrono::Duration::seconds(30));
    let second = rec(
        "import:a",
        "k1",
        "h2",
        epoch() + chrono::Duration::seconds(30),
    );
    same(
        s.idempotency_put(&second).await?,
        Some(first.clone()),
        "a taken key answers with the first record",
    )?;
    same(
        s.idempotency_get("import:a", "k1").await?,
        Some(first.clone()),
        "the first record stays",
    )?;
    let other_scope = rec(
        "import:b",
        "k1",
        "h3",
        epoch() + chrono::Duration::seconds(30),
    );
    same(
        s.idempotency_put(&other_scope).await?,
        None,
        "the same key in another scope is free",
    )?;
    same(
        s.idempotency_prune(epoch() + chrono::Duration::seconds(10))
            .await?,
        1,
        "prune forgets the older record",
    )?;
    same(
        s.idempotency_get("import:a", "k1").await?,
        None,
        "pruned record gone",
    )?;
    same(
        s.idempotency_get("import:b", "k1").await?,
        Some(other_scope),
        "newer record kept",
    )?;
    Ok(())
}

fn journal_entry(
    run: &str,
    idx: usize,
    op: &Op,
    state: JournalState,
    at: DateTime<Utc>,
) -> JournalEntry {
    JournalEntry {
        run_id: run.into(),
        op_index: idx,
        op: op.clone(),
        source_anchor: Some(format!("src-{}", op.anchor()).into()),
        target_anchor: (state != JournalState::Intent).then(|| op.anchor().clone()),
        state,
        error: (state == JournalState::Failed).then(|| "boom".to_owned()),
        at,
    }
}

fn run_record(id: &str, job: &str, status: RunStatus, at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: id.into(),
        job: job.into(),
        status,
        started_at: at,
        finished_at: None,
        plan: None,
        summary: None,
    }
}

fn full_record(job: &str, run: &str, idx: usize, op: &Op, at: DateTime<Utc>) -> OpRecord {
    let target = op.anchor().clone();
    OpRecord {
        job: job.into(),
        kind: op.entity(),
        journal: Some(journal_entry(run, idx, op, JournalState::Done, at)),
        link: Some(LinkChange::Put {
            source: format!("src-{target}").into(),
            target: target.clone(),
        }),
        shadow: Some(ShadowChange::Put {
            anchor: target.clone(),
            entity: json!({"anchor": target.as_str(), "shadow": true}),
        }),
        audit: Some(AuditEntry {
            run_id: run.into(),
            job: job.into(),
            kind: op.entity(),
            anchor: target,
            op: op.kind().into(),
            before: None,
            after: Some(json!({"from": "engine"})),
            at,
        }),
    }
}

/// `hub_apply` with a record writes entity, feed, journal, link, shadow and audit
/// together; when the op fails none of them is written.
pub async fn hub_apply_atomic(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = clock.now_for_suite();
    s.put_run(&run_record("r1", "job", RunStatus::Running, t))
        .await?;
    let create = Op::CreateOrg {
        org: org("d1", None),
    };
    s.journal_intent(&journal_entry("r1", 0, &create, JournalState::Intent, t))
        .await?;
    same(s.open_intents("job").await?.len(), 1, "one open intent")?;
    s.hub_apply(&create, Some(&full_record("job", "r1", 0, &create, t)))
        .await?;
    same(
        s.open_intents("job").await?.len(),
        0,
        "intent closed by the record",
    )?;
    let links = s
        .links("job", EntityKind::Org, PageRequest::first())
        .await?;
    same(links.items.len(), 1, "link written")?;
    same(links.items[0].target.as_str(), "d1", "link target")?;
    same(
        s.shadow("job", EntityKind::Org, PageRequest::first())
            .await?
            .items
            .len(),
        1,
        "shadow written",
    )?;
    let trail = s.audit(EntityKind::Org, &"d1".into()).await?;
    same(trail.len(), 1, "audit written")?;
    same(trail[0].before.clone(), None, "audit before of a create")?;
    same(
        trail[0].after.as_ref().and_then(|a| a.get("name")).cloned(),
        Some(json!("Org d1")),
        "the hub's own before/after replace the engine's",
    )?;
    same(s.feed(0, 10).await?.len(), 1, "feed written")?;
    same(
        s.journal("r1").await?.first().map(|j| j.state),
        Some(JournalState::Done),
        "journal done",
    )?;

    // A failing op with a record: nothing of the record is written.
    let dup = Op::CreateOrg {
        org: org("d1", None),
    };
    let mut rec = full_record("job", "r1", 1, &dup, t);
    rec.link = Some(LinkChange::Put {
        source: "src-other".into(),
        target: "d1".into(),
    });
    s.journal_intent(&journal_entry("r1", 1, &dup, JournalState::Intent, t))
        .await?;
    let err = s.hub_apply(&dup, Some(&rec)).await.err().map(|e| e.kind());
    same(err, Some(ErrorKind::AlreadyExists), "duplicate create")?;
    same(
        s.links("job", EntityKind::Org, PageRequest::first())
            .await?
            .items
            .len(),
        1,
        "no link from a failed op",
    )?;
    same(
        s.audit(EntityKind::Org, &"d1".into()).await?.len(),
        1,
        "no audit from a failed op",
    )?;
    same(
        s.feed(0, 10).await?.len(),
        1,
        "no feed entry from a failed op",
    )?;
    let open = s.open_intents("job").await?;
    same(open.len(), 1, "the failed op's intent is still open")?;
    same(open[0].op_index, 1, "open intent index")?;
    // A bad parent fails the same way, inside the transaction.
    let orphan = Op::CreateAccount {
        account: account("u9", &["nowhere"]),
    };
    let err = s
        .hub_apply(&orphan, Some(&full_record("job", "r1", 2, &orphan, t)))
        .await
        .err()
        .map(|e| e.kind());
    same(err, Some(ErrorKind::NotFound), "account in a missing org")?;
    same(
        s.links("job", EntityKind::Account, PageRequest::first())
            .await?
            .items
            .len(),
        0,
        "no account link",
    )?;
    same(s.hub_account(&"u9".into()).await?, None, "no account")?;
    Ok(())
}

/// The record `hub_apply_batch` writes with a create in the suite: journal, link, audit.
fn batch_record(job: &str, run: &str, idx: usize, op: &Op, at: DateTime<Utc>) -> OpRecord {
    OpRecord {
        shadow: None,
        ..full_record(job, run, idx, op, at)
    }
}

/// `hub_apply_batch` answers each write as `hub_apply` would, in order, each write
/// all-or-nothing with its record: the directory script in one batch (runs of creates
/// with failures among them), 300 good creates (the stores' multi-row path, over several
/// statements), and a batch whose child org follows its parent.
pub async fn hub_apply_batch(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = clock.now_for_suite();
    s.put_run(&run_record("b1", "job", RunStatus::Running, t))
        .await?;
    let script = directory_script();
    let writes: Vec<HubWrite> = script
        .iter()
        .enumerate()
        .map(|(i, op)| HubWrite {
            op: op.clone(),
            record: Some(batch_record("job", "b1", i, op, t)),
        })
        .collect();
    let answers = s.hub_apply_batch(writes).await;
    same(answers.len(), script.len(), "one answer per write")?;
    let mut reference = Directory::new();
    let mut applied = Vec::new();
    for (i, (op, got)) in script.iter().zip(&answers).enumerate() {
        let want = reference.apply(op, None).map(|(a, _)| a);
        match (&want, got) {
            (Ok(w), Ok(g)) => {
                same(g, w, &format!("batch op {i} ({}) result", op.name()))?;
                applied.push(i);
            }
            (Err(w), Err(g)) => same(
                g.kind(),
                w.kind(),
                &format!("batch op {i} ({}) error", op.name()),
            )?,
            _ => {
                return Err(fail(format!(
                    "batch op {i} ({}): store gave {:?}, directory gave {:?}",
                    op.name(),
                    got.as_ref().map_err(|e| e.to_string()),
                    want.as_ref().map_err(|e| e.to_string())
                )));
            }
        }
    }
    same(
        all_orgs(s, 3).await?,
        reference.orgs.values().cloned().collect::<Vec<_>>(),
        "hub orgs after the batched script",
    )?;
    same(
        all_accounts(s, 3).await?,
        reference.accounts.values().cloned().collect::<Vec<_>>(),
        "hub accounts after the batched script",
    )?;
    // Only the applied writes left a journal entry and a feed entry, in batch order.
    let journal: Vec<usize> = s.journal("b1").await?.iter().map(|j| j.op_index).collect();
    same(
        journal,
        applied.clone(),
        "journal entries of the applied writes",
    )?;
    let feed = s.feed(0, 1000).await?;
    same(
        feed.iter().map(|f| f.anchor.clone()).collect::<Vec<_>>(),
        applied
            .iter()
            .map(|&i| script[i].anchor().clone())
            .collect::<Vec<_>>(),
        "feed entries of the applied writes, in order",
    )?;
    ensure(
        feed.windows(2).all(|w| w[0].seq < w[1].seq),
        "feed sequence numbers increase",
    )?;

    // 300 good creates: 3 orgs, then 297 accounts in them (two batches).
    let orgs: Vec<Op> = ["g0", "g1", "g2"]
        .iter()
        .map(|a| Op::CreateOrg {
            org: org(a, Some("ops")),
        })
        .collect();
    let accounts: Vec<Op> = (0..297)
        .map(|i| Op::CreateAccount {
            account: account(&format!("m{i:03}"), &[["g0", "g1", "g2"][i % 3], "ops"]),
        })
        .collect();
    let head = feed.last().map_or(0, |f| f.seq);
    let mut idx = 1000;
    for ops in [&orgs, &accounts] {
        let writes: Vec<HubWrite> = ops
            .iter()
            .map(|op| {
                idx += 1;
                HubWrite {
                    op: op.clone(),
                    record: Some(batch_record("job", "b1", idx, op, t)),
                }
            })
            .collect();
        for (i, a) in s.hub_apply_batch(writes).await.into_iter().enumerate() {
            let a = a.map_err(|e| fail(format!("good create {i}: {e}")))?;
            same(a.anchor.as_ref(), Some(ops[i].anchor()), "created anchor")?;
        }
    }
    let feed = s.feed(head, 1000).await?;
    same(feed.len(), 300, "a feed entry per create")?;
    same(
        feed.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (head + 1..=head + 300).collect::<Vec<_>>(),
        "contiguous sequence numbers",
    )?;
    let m150 = s
        .hub_account(&"m150".into())
        .await?
        .ok_or_else(|| fail("m150 missing".into()))?;
    same(
        m150.orgs.clone(),
        vec![Anchor::from("g0"), Anchor::from("ops")],
        "m150's orgs",
    )?;
    same(
        feed.iter()
            .find(|f| f.anchor.as_str() == "m150")
            .and_then(|f| f.entity.clone()),
        Some(serde_json::to_value(&m150)?),
        "the feed carries the entity",
    )?;
    let trail = s.audit(EntityKind::Account, &"m150".into()).await?;
    same(trail.len(), 1, "m150's audit entry")?;
    same(
        trail[0].after.clone(),
        Some(serde_json::to_value(&m150)?),
        "audit after is the created entity",
    )?;
    let links = s
        .links("job", EntityKind::Account, PageRequest::sized(1000))
        .await?;
    ensure(
        links
            .items
            .iter()
            .any(|l| l.source.as_str() == "src-m296" && l.target.as_str() == "m296"),
        "link of the last create",
    )?;
    same(
        s.journal("b1").await?.len(),
        applied.len() + 300,
        "journal entries",
    )?;
    // The group g0 now has members: it cannot be deleted.
    let err = s
        .hub_apply(
            &Op::DeleteOrg {
                anchor: "g0".into(),
            },
            None,
        )
        .await
        .err()
        .map(|e| e.kind());
    same(err, Some(ErrorKind::Conflict), "memberships were written")?;

    // A child after its parent in one batch, and an anchor twice: as if one by one.
    let ops = [
        Op::CreateOrg {
            org: org("p", None),
        },
        Op::CreateOrg {
            org: org("p-child", Some("p")),
        },
        Op::CreateOrg {
            org: org("p", None),
        },
    ];
    let answers = s
        .hub_apply_batch(
            ops.iter()
                .map(|op| HubWrite {
                    op: op.clone(),
                    record: None,
                })
                .collect(),
        )
        .await;
    same(
        answers
            .iter()
            .map(|a| a.as_ref().err().map(|e| e.kind()))
            .collect::<Vec<_>>(),
        vec![None, None, Some(ErrorKind::AlreadyExists)],
        "parent, child, duplicate",
    )?;
    same(
        s.hub_org(&"p-child".into()).await?.and_then(|o| o.parent),
        Some(Anchor::from("p")),
        "the child is under its parent",
    )?;
    Ok(())
}

/// Links and shadow copies: put, replace, remove, per job and kind, paged by anchor.
pub async fn links_and_shadow(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let rec = |job: &str,
               kind: EntityKind,
               link: Option<LinkChange>,
               shadow: Option<ShadowChange>| OpRecord {
        job: job.into(),
        kind,
        journal: None,
        link,
        shadow,
        audit: None,
    };
    let sources = ["s5", "s1", "S3", "s2", "é", "s0", "s6"];
    for src in sources {
        s.record(&rec(
            "a",
            EntityKind::Account,
            Some(LinkChange::Put {
                source: src.into(),
                target: format!("t-{src}").into(),
            }),
            Some(ShadowChange::Put {
                anchor: format!("t-{src}").into(),
                entity: json!({"anchor": format!("t-{src}"), "username": src}),
            }),
        ))
        .await?;
    }
    // Other jobs and kinds do not mix in.
    s.record(&rec(
        "b",
        EntityKind::Account,
        Some(LinkChange::Put {
            source: "s1".into(),
            target: "x".into(),
        }),
        None,
    ))
    .await?;
    s.record(&rec(
        "a",
        EntityKind::Org,
        Some(LinkChange::Put {
            source: "s1".into(),
            target: "o".into(),
        }),
        Some(ShadowChange::Put {
            anchor: "o".into(),
            entity: json!({"anchor": "o"}),
        }),
    ))
    .await?;
    // Replace one target, remove one link and one shadow entry.
    s.record(&rec(
        "a",
        EntityKind::Account,
        Some(LinkChange::Put {
            source: "s1".into(),
            target: "t-new".into(),
        }),
        None,
    ))
    .await?;
    s.record(&rec(
        "a",
        EntityKind::Account,
        Some(LinkChange::Remove {
            source: "s6".into(),
        }),
        Some(ShadowChange::Remove {
            anchor: "t-s6".into(),
        }),
    ))
    .await?;
    let mut want: Vec<&str> = sources.iter().copied().filter(|s| *s != "s6").collect();
    want.sort();
    for size in [1, 2, 3, 6, 100] {
        let mut got = Vec::new();
        let mut req = PageRequest::sized(size);
        loop {
            let p = s.links("a", EntityKind::Account, req.clone()).await?;
            ensure(p.items.len() <= size, "link page size")?;
            got.extend(p.items);
            match p.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
        same(
            got.iter().map(|l| l.source.as_str()).collect::<Vec<_>>(),
            want.clone(),
            &format!("links paged by {size}"),
        )?;
        ensure(
            got.iter().all(|l| l.kind == EntityKind::Account),
            "link kind",
        )?;
        let s1 = got
            .iter()
            .find(|l| l.source.as_str() == "s1")
            .map(|l| l.target.as_str().to_owned());
        same(s1.as_deref(), Some("t-new"), "link target replaced")?;
    }
    let exact = s
        .links("a", EntityKind::Account, PageRequest::sized(6))
        .await?;
    same(exact.next, None, "six links in a page of six: no next page")?;
    same(
        s.links("b", EntityKind::Account, PageRequest::first())
            .await?
            .items
            .len(),
        1,
        "job b has its own link",
    )?;
    same(
        s.links("a", EntityKind::Org, PageRequest::first())
            .await?
            .items
            .len(),
        1,
        "org links apart",
    )?;
    same(
        s.links("zzz", EntityKind::Org, PageRequest::first())
            .await?
            .items
            .len(),
        0,
        "unknown job",
    )?;
    // Shadow: ordered by anchor, paged.
    let mut shadow = Vec::new();
    let mut req = PageRequest::sized(4);
    loop {
        let p = s.shadow("a", EntityKind::Account, req.clone()).await?;
        shadow.extend(p.items);
        match p.next {
            Some(t) => req.token = Some(t),
            None => break,
        }
    }
    let mut want_shadow: Vec<String> = want.iter().map(|s| format!("t-{s}")).collect();
    want_shadow.sort();
    same(
        shadow
            .iter()
            .map(|v| {
                v.get("anchor")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>(),
        want_shadow,
        "shadow paged by anchor",
    )?;
    same(
        shadow[0].get("username").cloned(),
        Some(json!("S3")),
        "shadow entity kept whole",
    )?;
    same(
        s.shadow("a", EntityKind::Org, PageRequest::first())
            .await?
            .items,
        vec![json!({"anchor": "o"})],
        "org shadow apart",
    )?;
    Ok(())
}

/// Cursors: committed only when the stored one is the expected one.
pub async fn cursors(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let c = |v: &str| SyncCursor(v.into());
    same(s.cursor("j").await?, None, "no cursor yet")?;
    s.commit_cursor("j", None, &c("1")).await?;
    same(s.cursor("j").await?, Some(c("1")), "first cursor")?;
    let kind = |r: Result<()>| r.err().map(|e| e.kind());
    same(
        kind(s.commit_cursor("j", None, &c("2")).await),
        Some(ErrorKind::Conflict),
        "expected none, found one",
    )?;
    same(
        kind(s.commit_cursor("j", Some(&c("0")), &c("2")).await),
        Some(ErrorKind::Conflict),
        "expected a stale cursor",
    )?;
    same(
        kind(s.commit_cursor("other", Some(&c("1")), &c("2")).await),
        Some(ErrorKind::Conflict),
        "expected one, found none",
    )?;
    same(
        s.cursor("j").await?,
        Some(c("1")),
        "unchanged after conflicts",
    )?;
    s.commit_cursor("j", Some(&c("1")), &c("2")).await?;
    same(s.cursor("j").await?, Some(c("2")), "moved")?;
    // Two writers that both read "2": exactly one wins.
    let (two, three_a, three_b) = (c("2"), c("3a"), c("3b"));
    let (a, b) = futures::join!(
        s.commit_cursor("j", Some(&two), &three_a),
        s.commit_cursor("j", Some(&two), &three_b)
    );
    same(
        a.is_ok() as u8 + b.is_ok() as u8,
        1,
        "exactly one concurrent commit wins",
    )?;
    same(s.cursor("other").await?, None, "other job untouched")?;
    Ok(())
}

/// Runs: insert, replace, read back, newest first, per job, limited.
pub async fn runs(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = epoch();
    same(s.run("nope").await?, None, "unknown run")?;
    let mut r1 = run_record("r1", "a", RunStatus::Planned, t);
    r1.plan = Some(json!({"ops": [{"op": "create_org"}], "名": "值"}));
    s.put_run(&r1).await?;
    same(s.run("r1").await?, Some(r1.clone()), "run read back")?;
    r1.status = RunStatus::Succeeded;
    r1.finished_at = Some(t + chrono::Duration::milliseconds(1500));
    r1.summary = Some(json!({"applied": 1}));
    s.put_run(&r1).await?;
    same(s.run("r1").await?, Some(r1.clone()), "run replaced")?;
    s.put_run(&run_record(
        "r2",
        "b",
        RunStatus::NeedsApproval,
        t + chrono::Duration::seconds(2),
    ))
    .await?;
    s.put_run(&run_record(
        "r3",
        "a",
        RunStatus::Failed,
        t + chrono::Duration::seconds(3),
    ))
    .await?;
    s.put_run(&run_record("r0", "a", RunStatus::PartiallyFailed, t))
        .await?; // same time as r1
    s.put_run(&run_record(
        "r4",
        "a",
        RunStatus::Approved,
        t + chrono::Duration::seconds(1),
    ))
    .await?;
    s.put_run(&run_record(
        "r5",
        "a",
        RunStatus::Running,
        t + chrono::Duration::seconds(1),
    ))
    .await?;
    let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    same(
        ids(s.runs(None, 10).await?),
        vec!["r3", "r2", "r5", "r4", "r1", "r0"]
            .into_iter()
            .map(String::from)
            .collect(),
        "all runs newest first (ties by id, descending)",
    )?;
    same(
        ids(s.runs(Some("a"), 3).await?),
        vec!["r3", "r5", "r4"]
            .into_iter()
            .map(String::from)
            .collect(),
        "runs of one job, limited",
    )?;
    same(
        s.runs(Some("zzz"), 3).await?.len(),
        0,
        "runs of an unknown job",
    )?;
    same(s.runs(None, 0).await?.len(), 0, "limit zero")?;
    let statuses: Vec<RunStatus> = s
        .runs(None, 10)
        .await?
        .into_iter()
        .map(|r| r.status)
        .collect();
    ensure(
        statuses.contains(&RunStatus::NeedsApproval),
        "statuses round-trip",
    )?;
    Ok(())
}

/// The journal: latest state per op, in op order; open intents per job, oldest first.
pub async fn journal(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = clock.now_for_suite();
    s.put_run(&run_record("r1", "a", RunStatus::Running, t))
        .await?;
    s.put_run(&run_record("r2", "b", RunStatus::Running, t))
        .await?;
    let op = |i: usize| Op::DisableAccount {
        anchor: format!("u{i}").into(),
    };
    // Intents written out of order, at different times.
    for (idx, secs) in [(3usize, 5i64), (1, 1), (2, 1), (0, 9)] {
        s.journal_intent(&journal_entry(
            "r1",
            idx,
            &op(idx),
            JournalState::Intent,
            t + chrono::Duration::seconds(secs),
        ))
        .await?;
    }
    s.journal_intent(&journal_entry("r2", 0, &op(7), JournalState::Intent, t))
        .await?;
    let open: Vec<usize> = s
        .open_intents("a")
        .await?
        .iter()
        .map(|e| e.op_index)
        .collect();
    same(
        open,
        vec![1, 2, 3, 0],
        "open intents oldest first, then by index",
    )?;
    same(
        s.open_intents("b").await?.len(),
        1,
        "intents of job b apart",
    )?;
    same(
        s.open_intents("c").await?.len(),
        0,
        "no intents of an unknown job",
    )?;
    // Done, failed and skipped close intents.
    let close = |idx: usize, state: JournalState| OpRecord {
        job: "a".into(),
        kind: EntityKind::Account,
        journal: Some(journal_entry(
            "r1",
            idx,
            &op(idx),
            state,
            t + chrono::Duration::seconds(20),
        )),
        link: None,
        shadow: None,
        audit: None,
    };
    s.record(&close(1, JournalState::Done)).await?;
    s.record(&close(3, JournalState::Failed)).await?;
    let open = s.open_intents("a").await?;
    same(
        open.iter().map(|e| e.op_index).collect::<Vec<_>>(),
        vec![2, 0],
        "two left open",
    )?;
    same(
        open[0].clone(),
        journal_entry(
            "r1",
            2,
            &op(2),
            JournalState::Intent,
            t + chrono::Duration::seconds(1),
        ),
        "an open intent round-trips",
    )?;
    let j = s.journal("r1").await?;
    same(
        j.iter().map(|e| e.op_index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "journal by op index",
    )?;
    same(
        j.iter().map(|e| e.state).collect::<Vec<_>>(),
        vec![
            JournalState::Intent,
            JournalState::Done,
            JournalState::Intent,
            JournalState::Failed,
        ],
        "latest state of each op",
    )?;
    same(j[3].error.as_deref(), Some("boom"), "failure message kept")?;
    same(
        j[1].target_anchor.clone(),
        Some(Anchor::from("u1")),
        "target anchor kept",
    )?;
    same(
        Some(j[1].clone()),
        close(1, JournalState::Done).journal,
        "done entry round-trips",
    )?;
    same(
        s.journal("nope").await?.len(),
        0,
        "journal of an unknown run",
    )?;
    Ok(())
}

/// Audit trails: per entity, oldest first, across runs.
pub async fn audit_trail(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = clock.now_for_suite();
    let entry = |run: &str, op: OpKind, anchor: &str, kind: EntityKind, after: Value| AuditEntry {
        run_id: run.into(),
        job: "j".into(),
        kind,
        anchor: anchor.into(),
        op: op.into(),
        before: Some(json!({"x": 1})),
        after: Some(after),
        at: t,
    };
    let rec = |a: AuditEntry| OpRecord {
        job: "j".into(),
        kind: a.kind,
        journal: None,
        link: None,
        shadow: None,
        audit: Some(a),
    };
    let e1 = entry(
        "r1",
        OpKind::CreateAccount,
        "u1",
        EntityKind::Account,
        json!({"n": 1}),
    );
    let e2 = entry(
        "r1",
        OpKind::CreateAccount,
        "u2",
        EntityKind::Account,
        json!({"n": 2}),
    );
    let e3 = entry(
        "r2",
        OpKind::UpdateAccount,
        "u1",
        EntityKind::Account,
        json!({"n": 3}),
    );
    let e4 = entry(
        "r2",
        OpKind::CreateOrg,
        "u1",
        EntityKind::Org,
        json!({"n": 4}),
    );
    let e5 = entry(
        "r3",
        OpKind::DisableAccount,
        "u1",
        EntityKind::Account,
        json!({"status": "disabled"}),
    );
    for e in [&e1, &e2, &e3, &e4, &e5] {
        s.record(&rec(e.clone())).await?;
    }
    same(
        s.audit(EntityKind::Account, &"u1".into()).await?,
        vec![e1, e3, e5],
        "trail of u1",
    )?;
    same(
        s.audit(EntityKind::Org, &"u1".into()).await?,
        vec![e4],
        "org u1 apart",
    )?;
    same(
        s.audit(EntityKind::Account, &"u3".into()).await?.len(),
        0,
        "no trail",
    )?;
    Ok(())
}

/// Waits out a lease of `ttl` on both clocks a store may judge leases by: the suite's
/// manual clock (the memory store's) and real time (a database server's own clock).
async fn wait_out(clock: &ManualClock, ttl: Duration) {
    let ttl = ttl + Duration::from_millis(100);
    clock.advance(chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::hours(1)));
    tokio::time::sleep(ttl).await;
}

fn take(lease: Option<Lease>, what: &str) -> Result<Lease> {
    lease.ok_or_else(|| fail(format!("check failed: {what}")))
}

/// Leases: one holder at a time, renewable (same token), released, expired on the store's
/// clock; the token grows every time the lease changes hands, also across a release.
pub async fn leases(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let long = Duration::from_secs(60);
    let a1 = take(
        s.acquire_lease("job", "A", long).await?,
        "A takes a free lease",
    )?;
    same(
        (a1.job.as_str(), a1.holder.as_str()),
        ("job", "A"),
        "lease of A",
    )?;
    ensure(
        s.acquire_lease("job", "B", long).await?.is_none(),
        "B cannot take A's lease",
    )?;
    ensure(
        s.acquire_lease("other", "B", long).await?.is_some(),
        "leases are per job",
    )?;
    clock.advance(chrono::Duration::seconds(20));
    let a2 = take(s.acquire_lease("job", "A", long).await?, "A renews")?;
    same(a2.token, a1.token, "a renewal keeps the token")?;
    ensure(
        a2.expires_at >= a1.expires_at,
        "a renewal moves the expiry on",
    )?;
    clock.advance(chrono::Duration::seconds(20));
    ensure(
        s.acquire_lease("job", "B", long).await?.is_none(),
        "renewed lease still held 40 s after the first take",
    )?;
    s.release_lease("job", "B").await?; // not B's: no-op
    ensure(
        s.acquire_lease("job", "B", long).await?.is_none(),
        "release by a non-holder is a no-op",
    )?;
    // A renews with a short TTL and dies: once it ran out, B takes over, A is out.
    let short = Duration::from_millis(300);
    take(
        s.acquire_lease("job", "A", short).await?,
        "A renews shortly",
    )?;
    wait_out(clock, short).await;
    let b = take(
        s.acquire_lease("job", "B", long).await?,
        "B takes an expired lease",
    )?;
    same(b.token, a1.token + 1, "a new holder gets the next token")?;
    ensure(
        s.acquire_lease("job", "A", long).await?.is_none(),
        "A lost it",
    )?;
    s.release_lease("job", "B").await?;
    let a3 = take(
        s.acquire_lease("job", "A", long).await?,
        "free again after release",
    )?;
    same(a3.token, b.token + 1, "the token grows across a release")?;
    // Zero TTL: expires at once.
    let z = take(
        s.acquire_lease("z", "A", Duration::ZERO).await?,
        "zero ttl taken",
    )?;
    let z2 = take(
        s.acquire_lease("z", "B", long).await?,
        "zero ttl lease expired at once",
    )?;
    same(z2.token, z.token + 1, "next token after a zero ttl")?;
    Ok(())
}

fn expect_lease_lost<T: Debug>(r: Result<T>, generation: Option<u64>, what: &str) -> Result<()> {
    match r {
        Err(e) if idsync_core::is_lease_lost(&e) => {
            same(e.kind(), ErrorKind::Conflict, what)?;
            if let Some(g) = generation {
                let want = format!("is now held by generation {g}");
                ensure(
                    e.to_string().contains(&want),
                    &format!("{what}: {e} says {want:?}"),
                )?;
            }
            Ok(())
        }
        other => Err(fail(format!("{what}: got {other:?}, want lease lost"))),
    }
}

/// Fenced writes: through [`Store::fenced`], every write succeeds while the fence holds the
/// lease, and once another holder took it over (or it ran out) every write fails with
/// "lease lost" and changes nothing: hub, feed, links, shadow, journal, audit, cursor.
pub async fn fenced_writes(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t = clock.now_for_suite();
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    let a = take(
        s.acquire_lease("job", "A", long).await?,
        "A takes the lease",
    )?;
    let fa = s.fenced(a.fence());
    let root = Op::CreateOrg {
        org: org("root", None),
    };
    fa.hub_apply(&root, Some(&full_record("job", "r1", 0, &root, t)))
        .await?;
    let u1 = Op::CreateAccount {
        account: account("u1", &["root"]),
    };
    fa.journal_intent(&journal_entry("r1", 1, &u1, JournalState::Intent, t))
        .await?;
    fa.record(&full_record("job", "r1", 1, &u1, t)).await?;
    let c1 = SyncCursor("1".into());
    fa.commit_cursor("job", None, &c1).await?;

    // A's last renewal is a short one; then A stalls past it.
    take(s.acquire_lease("job", "A", short).await?, "A renews")?;
    wait_out(clock, short).await;
    let b = take(s.acquire_lease("job", "B", long).await?, "B takes over")?;
    ensure(b.token > a.token, "B's token is greater")?;
    let feed = s.feed(0, 1000).await?.len();
    let x = Op::CreateOrg {
        org: org("x", Some("root")),
    };
    let g = Some(b.token);
    expect_lease_lost(
        fa.hub_apply(&x, Some(&full_record("job", "r1", 2, &x, t)))
            .await,
        g,
        "hub_apply under a lost lease",
    )?;
    expect_lease_lost(fa.hub_apply(&x, None).await, g, "hub_apply without record")?;
    let y = Op::CreateOrg {
        org: org("y", Some("root")),
    };
    let answers = fa
        .hub_apply_batch(vec![
            HubWrite {
                op: x.clone(),
                record: Some(batch_record("job", "r1", 3, &x, t)),
            },
            HubWrite {
                op: y.clone(),
                record: Some(batch_record("job", "r1", 4, &y, t)),
            },
        ])
        .await;
    same(answers.len(), 2, "one answer per batch write")?;
    for a in answers {
        expect_lease_lost(a, g, "hub_apply_batch under a lost lease")?;
    }
    let u2 = Op::CreateAccount {
        account: account("u2", &["root"]),
    };
    expect_lease_lost(
        fa.journal_intent(&journal_entry("r1", 5, &u2, JournalState::Intent, t))
            .await,
        g,
        "journal_intent under a lost lease",
    )?;
    expect_lease_lost(
        fa.record(&full_record("job", "r1", 5, &u2, t)).await,
        g,
        "record under a lost lease",
    )?;
    expect_lease_lost(
        fa.commit_cursor("job", Some(&c1), &SyncCursor("2".into()))
            .await,
        g,
        "commit_cursor under a lost lease",
    )?;
    same(s.hub_org(&"x".into()).await?, None, "no org x")?;
    same(s.hub_org(&"y".into()).await?, None, "no org y")?;
    same(s.feed(0, 1000).await?.len(), feed, "no feed entry")?;
    let links = s
        .links("job", EntityKind::Account, PageRequest::sized(100))
        .await?;
    same(links.items.len(), 1, "only u1's link")?;
    let shadow = s
        .shadow("job", EntityKind::Account, PageRequest::sized(100))
        .await?;
    same(shadow.items.len(), 1, "only u1's shadow")?;
    same(
        s.journal("r1")
            .await?
            .iter()
            .map(|j| j.op_index)
            .collect::<Vec<_>>(),
        vec![0, 1],
        "journal of r1",
    )?;
    same(
        s.audit(EntityKind::Account, &"u2".into()).await?.len(),
        0,
        "no audit of u2",
    )?;
    same(s.cursor("job").await?, Some(c1.clone()), "cursor not moved")?;

    // B's fence writes; unfenced writes are not affected.
    let fb = s.fenced(b.fence());
    fb.hub_apply(&x, Some(&full_record("job", "r2", 0, &x, t)))
        .await?;
    fb.commit_cursor("job", Some(&c1), &SyncCursor("2".into()))
        .await?;
    s.hub_apply(&y, None).await?;

    // A lease that ran out with nobody taking over fences too, until renewed.
    let c = take(s.acquire_lease("solo", "C", long).await?, "C takes solo")?;
    let fc = s.fenced(c.fence());
    let link = |src: &str| OpRecord {
        job: "solo".into(),
        kind: EntityKind::Account,
        journal: None,
        link: Some(LinkChange::Put {
            source: src.into(),
            target: src.into(),
        }),
        shadow: None,
        audit: None,
    };
    fc.record(&link("s1")).await?;
    take(s.acquire_lease("solo", "C", short).await?, "C renews")?;
    wait_out(clock, short).await;
    expect_lease_lost(
        fc.record(&link("s2")).await,
        None,
        "record after the lease ran out",
    )?;
    let c2 = take(s.acquire_lease("solo", "C", long).await?, "C renews late")?;
    same(c2.token, c.token, "nobody took it in between: same token")?;
    fc.record(&link("s3")).await?;
    s.release_lease("solo", "C").await?;
    expect_lease_lost(fc.record(&link("s4")).await, None, "record after release")?;
    let solo = s
        .links("solo", EntityKind::Account, PageRequest::sized(100))
        .await?;
    same(
        solo.items
            .iter()
            .map(|l| l.source.as_str())
            .collect::<Vec<_>>(),
        vec!["s1", "s3"],
        "links of solo",
    )?;
    // A fence of a job never leased.
    let never = Fence {
        job: "never".into(),
        holder: "A".into(),
        token: 1,
    };
    expect_lease_lost(
        s.fenced(never).commit_cursor("never", None, &c1).await,
        None,
        "a fence of a job never leased",
    )?;
    same(s.cursor("never").await?, None, "no cursor of never")?;
    Ok(())
}

/// A sink in front of another that counts the ops sent to it and holds the `stall_at`-th
/// (1-based) until released, telling `stalled` when it got there.
#[derive(Debug)]
pub struct GateSink {
    inner: Arc<MemoryAdapter>,
    stall_at: usize,
    calls: std::sync::atomic::AtomicUsize,
    /// Notified when the gate holds an op.
    pub stalled: tokio::sync::Notify,
    /// Notify to let the held op through.
    pub release: tokio::sync::Notify,
}

impl GateSink {
    /// A gate in front of `inner` that holds its `stall_at`-th op.
    pub fn new(inner: Arc<MemoryAdapter>, stall_at: usize) -> Self {
        GateSink {
            inner,
            stall_at,
            calls: std::sync::atomic::AtomicUsize::new(0),
            stalled: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        }
    }

    /// Ops sent so far (counted as they arrive, before they are held).
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Source for GateSink {
    fn describe(&self) -> idsync_core::Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> idsync_core::Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn orgs(&self, page: PageRequest) -> Result<idsync_core::Page<Org>> {
        self.inner.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<idsync_core::Page<Account>> {
        self.inner.accounts(page).await
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.inner.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.inner.account(anchor).await
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.inner.find_accounts(field, value).await
    }
}

#[async_trait::async_trait]
impl Sink for GateSink {
    async fn apply(&self, op: &Op) -> Result<idsync_core::Applied> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.stall_at {
            let released = self.release.notified();
            self.stalled.notify_one();
            released.await;
        }
        self.inner.apply(op).await
    }
}

fn takeover_data() -> (Vec<Org>, Vec<Account>) {
    let orgs = vec![org("root", None)];
    let accounts = (0..6)
        .map(|i| account(&format!("p{i}"), &["root"]))
        .collect();
    (orgs, accounts)
}

/// Worker A stalls inside its sink (past its lease's TTL) while worker B takes the lease
/// over and runs the job; released, A sends nothing more to the sink and writes nothing
/// more to the store: its report says the lease was lost.
pub async fn fenced_takeover_mid_apply(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
) -> Result<()> {
    let (orgs, accounts) = takeover_data();
    let total = orgs.len() + accounts.len();
    let source = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
    let target = Arc::new(MemoryAdapter::new("app"));
    // A's ops: the org, p0, p1 pass; p2 is held.
    let gate = Arc::new(GateSink::new(target.clone(), 3));
    let engine = Engine::new(store.clone()).with_clock(clock.clone());
    let short = Duration::from_millis(300);
    let la = take(
        store
            .acquire_lease("sync", "A", Duration::from_secs(60))
            .await?,
        "A's lease",
    )?;
    let job_a = Job::new("sync", source.clone(), gate.clone())
        .with_concurrency(1)
        .with_fence(la.fence());
    let worker_a = engine.run(&job_a);
    let worker_b = async {
        gate.stalled.notified().await;
        let held = gate.calls();
        // A's last renewal before the stall was a short one; the stall outlasts it.
        take(store.acquire_lease("sync", "A", short).await?, "A renews")?;
        wait_out(clock, short).await;
        let lb = take(
            store
                .acquire_lease("sync", "B", Duration::from_secs(60))
                .await?,
            "B takes over the run-out lease",
        )?;
        let job_b = Job::new("sync", source.clone(), target.clone()).with_fence(lb.fence());
        let rb = engine.run(&job_b).await?;
        gate.release.notify_one();
        Ok::<_, Error>((held, lb, rb))
    };
    let (ra, b) = futures::future::join(worker_a, worker_b).await;
    let (held, lb, rb) = b?;
    let ra = ra?;
    same(rb.status, RunStatus::Succeeded, "B's run")?;
    same(
        rb.counts.applied,
        total - 2,
        "B applies what A had not recorded",
    )?;
    same(held, 3, "A had sent three ops when it stalled")?;
    same(gate.calls(), held, "A sends nothing after it is released")?;
    same(ra.status, RunStatus::Failed, "A's run status")?;
    let lost = ra
        .lease_lost
        .as_ref()
        .ok_or_else(|| fail(format!("A's report names no lost lease: {ra:?}")))?;
    same(lost.kind, ErrorKind::Conflict, "A's stop is a conflict")?;
    ensure(
        lost.message.contains(&format!("generation {}", lb.token)),
        &format!("A's error names B's generation: {}", lost.message),
    )?;
    let states: Vec<_> = ra
        .outcomes
        .iter()
        .map(|o| (o.op.as_str(), o.state))
        .collect();
    same(
        ra.counts.applied,
        2,
        &format!("A applied the org and p0 only: {states:?}"),
    )?;
    same(
        ra.counts.failed,
        1,
        &format!("the held op failed: {states:?}"),
    )?;
    same(
        ra.counts.skipped,
        total - 3,
        &format!("A's later ops were not attempted: {states:?}"),
    )?;
    same(ra.cursor_committed, false, "A committed no cursor")?;
    // The store holds B's view: one link per entity, A's journal ends at the held op.
    same(
        engine.links("sync", EntityKind::Account).await?.len(),
        total - 1,
        "one link per account",
    )?;
    let ja = store.journal(&ra.run_id).await?;
    same(ja.len(), 3, "A journaled three ops")?;
    same(
        ja.iter().filter(|j| j.state == JournalState::Done).count(),
        2,
        "two of them done",
    )?;
    same(
        store.run(&ra.run_id).await?.map(|r| r.status),
        Some(RunStatus::Failed),
        "A's stored run",
    )?;
    same(
        idsync_core::source::collect_accounts(target.as_ref())
            .await?
            .len(),
        total - 1,
        "each account once at the target",
    )?;
    Ok(())
}

/// Worker A plans into the hub, then stalls past its lease's TTL; B takes over and runs;
/// A's apply of its stale plan writes nothing at all to the hub.
pub async fn fenced_stall_before_apply(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
) -> Result<()> {
    let (orgs, accounts) = takeover_data();
    let total = orgs.len() + accounts.len();
    let source = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone()).with_clock(clock.clone());
    let short = Duration::from_millis(300);
    let la = take(
        store
            .acquire_lease("in", "A", Duration::from_secs(60))
            .await?,
        "A's lease",
    )?;
    let job_a = Job::new("in", source.clone(), hub.clone()).with_fence(la.fence());
    let plan_a = engine.plan(&job_a).await?;
    same(plan_a.ops.len(), total, "A plans every entity")?;
    take(store.acquire_lease("in", "A", short).await?, "A renews")?;
    wait_out(clock, short).await;
    let lb = take(
        store
            .acquire_lease("in", "B", Duration::from_secs(60))
            .await?,
        "B takes over",
    )?;
    // B's source has a change A's plan does not know about.
    source.edit(|d| {
        if let Some(a) = d.accounts.get_mut(&Anchor::from("p1")) {
            a.title = Some("B's title".into());
        }
    })?;
    let job_b = Job::new("in", source.clone(), hub).with_fence(lb.fence());
    let rb = engine.run(&job_b).await?;
    same(rb.counts.applied, total, "B applies everything")?;
    let feed = store.feed(0, 10_000).await?;
    let ra = engine.apply(&job_a, &plan_a).await?;
    same(ra.status, RunStatus::Failed, "A's apply fails")?;
    ensure(ra.lease_lost.is_some(), "A's report names the lost lease")?;
    same(ra.counts.applied, 0, "A applies nothing")?;
    same(
        store.feed(0, 10_000).await?,
        feed,
        "the hub's feed is B's alone",
    )?;
    same(
        store.journal(&ra.run_id).await?.len(),
        0,
        "A journals nothing",
    )?;
    let p1 = store.hub_account(&"p1".into()).await?;
    same(
        p1.and_then(|a| a.title),
        Some("B's title".to_owned()),
        "B's write stands",
    )?;
    Ok(())
}

/// The lookups incremental runs use instead of listings: `feed_head`, `links_of`,
/// `link_count`, and `hub_find_accounts` under the one correlation-key rule (trimmed,
/// Unicode lowercase), kept up to date by creates, updates, batches and deletes.
pub async fn lookups(store: &Arc<dyn Store>, _clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    same(s.feed_head().await?, 0, "feed head of an empty store")?;
    let mut a = account("u1", &[]);
    a.email = Some("Ärger@Example.com".into());
    a.employee_id = Some(" E-1 ".into());
    let mut b = account("u2", &[]);
    b.email = Some("ärger@example.com".into());
    b.username = "ＡＢＣ".into();
    let mut c = account("u3", &[]);
    c.email = Some("other@example.com".into());
    s.hub_apply(&Op::CreateAccount { account: a }, None).await?;
    let answers = s
        .hub_apply_batch(vec![
            HubWrite {
                op: Op::CreateAccount { account: b },
                record: None,
            },
            HubWrite {
                op: Op::CreateAccount { account: c },
                record: None,
            },
        ])
        .await;
    for r in answers {
        r?;
    }
    same(s.feed_head().await?, 3, "feed head after three creates")?;
    let anchors = |v: Vec<Account>| v.into_iter().map(|a| a.anchor).collect::<Vec<_>>();
    same(
        anchors(s.hub_find_accounts("email", "  ÄRGER@example.COM ").await?),
        vec![Anchor::from("u1"), Anchor::from("u2")],
        "accounts by a case-folded, trimmed email",
    )?;
    same(
        anchors(s.hub_find_accounts("employee_id", "e-1").await?),
        vec![Anchor::from("u1")],
        "accounts by employee id",
    )?;
    same(
        anchors(s.hub_find_accounts("username", "ａｂｃ").await?),
        vec![Anchor::from("u2")],
        "full-width username, lowercased",
    )?;
    same(
        anchors(s.hub_find_accounts("username", "abc").await?),
        vec![],
        "full-width letters are not ASCII letters",
    )?;
    same(
        anchors(s.hub_find_accounts("email", "   ").await?),
        vec![],
        "a blank value finds nothing",
    )?;
    ensure(
        s.hub_find_accounts("title", "x")
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Unsupported),
        "a field without a key index is Unsupported",
    )?;
    // Updates and deletes keep the keys current.
    s.hub_apply(
        &Op::UpdateAccount {
            anchor: "u1".into(),
            changes: patch(&[("email", json!("new@example.com"))]),
        },
        None,
    )
    .await?;
    s.hub_apply(
        &Op::DeleteAccount {
            anchor: "u2".into(),
        },
        None,
    )
    .await?;
    same(
        anchors(s.hub_find_accounts("email", "ärger@example.com").await?),
        vec![],
        "old keys are gone after an update and a delete",
    )?;
    same(
        anchors(s.hub_find_accounts("email", "NEW@example.com").await?),
        vec![Anchor::from("u1")],
        "the new key is found",
    )?;
    same(s.feed_head().await?, 5, "feed head after five writes")?;
    // Links by source anchor, and their count.
    for (src, tgt) in [("s1", "t1"), ("s2", "t2"), ("s3", "t3")] {
        s.record(&OpRecord {
            job: "j".into(),
            kind: EntityKind::Account,
            journal: None,
            link: Some(LinkChange::Put {
                source: src.into(),
                target: tgt.into(),
            }),
            shadow: None,
            audit: None,
        })
        .await?;
    }
    let got = s
        .links_of(
            "j",
            EntityKind::Account,
            &["s3".into(), "nope".into(), "s1".into(), "s1".into()],
        )
        .await?;
    same(
        got.iter()
            .map(|l| (l.source.as_str().to_owned(), l.target.as_str().to_owned()))
            .collect::<Vec<_>>(),
        vec![("s1".into(), "t1".into()), ("s3".into(), "t3".into())],
        "links of some source anchors",
    )?;
    same(
        s.links_of("j", EntityKind::Org, &["s1".into()])
            .await?
            .len(),
        0,
        "links of another kind",
    )?;
    same(
        s.link_count("j", EntityKind::Account).await?,
        3,
        "link count",
    )?;
    same(
        s.link_count("other", EntityKind::Account).await?,
        0,
        "link count of another job",
    )?;
    let many: Vec<Anchor> = (0..450).map(|i| Anchor::from(format!("s{i}"))).collect();
    same(
        s.links_of("j", EntityKind::Account, &many).await?.len(),
        3,
        "links of more anchors than one statement takes",
    )?;
    Ok(())
}

/// The engine end to end: a memory source into the hub over this store (engine and hub
/// share the store, so each op commits with its records), a second run plans nothing, a
/// change at the source flows through as an update and a disable, with audit and feed.
pub async fn engine_end_to_end(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let mut orgs = vec![org("root", None)];
    for i in 0..5 {
        orgs.push(org(&format!("d{i}"), Some("root")));
        orgs.push(org(&format!("d{i}-x"), Some(&format!("d{i}"))));
    }
    let accounts: Vec<Account> = (0..40)
        .map(|i| {
            let mut a = account(&format!("p{i:03}"), &[&format!("d{}-x", i % 5)]);
            a.employee_id = Some(format!("E{i}"));
            if i > 0 {
                a.manager = Some("p000".into());
            }
            a
        })
        .collect();
    let source = Arc::new(MemoryAdapter::with_data(
        "hr",
        orgs.clone(),
        accounts.clone(),
    ));
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone()).with_clock(clock.clone());
    let job = Job::new("hr-to-hub", source.clone(), hub).with_page_size(7);

    let r = engine.run(&job).await?;
    same(r.status, RunStatus::Succeeded, "first run status")?;
    same(
        r.counts.applied,
        orgs.len() + accounts.len(),
        "first run applies everything",
    )?;
    let again = engine.run(&job).await?;
    same(again.counts.planned, 0, "second run plans nothing")?;
    same(
        engine.links("hr-to-hub", EntityKind::Account).await?.len(),
        accounts.len(),
        "account links",
    )?;
    same(
        engine.links("hr-to-hub", EntityKind::Org).await?.len(),
        orgs.len(),
        "org links",
    )?;
    let hub_accounts = all_accounts(store.as_ref(), 9).await?;
    same(hub_accounts.len(), accounts.len(), "hub accounts")?;
    let p5 = hub_accounts
        .iter()
        .find(|a| a.anchor.as_str() == "p005")
        .ok_or_else(|| fail("p005 missing".into()))?;
    same(
        p5.manager.clone(),
        Some(Anchor::from("p000")),
        "manager resolved",
    )?;
    same(
        store.feed(0, 10_000).await?.len(),
        orgs.len() + accounts.len(),
        "one feed entry per applied op",
    )?;
    let journal = store.journal(&r.run_id).await?;
    same(journal.len(), r.counts.applied, "every op journaled")?;
    ensure(
        journal.iter().all(|j| j.state == JournalState::Done),
        "every journal entry done",
    )?;
    same(
        store.open_intents("hr-to-hub").await?.len(),
        0,
        "no open intents",
    )?;
    let stored = store
        .run(&r.run_id)
        .await?
        .ok_or_else(|| fail("run not stored".into()))?;
    same(stored.status, RunStatus::Succeeded, "stored run status")?;

    // A rename and a leaver at the source.
    source.edit(|d| {
        if let Some(a) = d.accounts.get_mut(&Anchor::from("p001")) {
            a.title = Some("Chief".into());
        }
        d.accounts.remove(&Anchor::from("p002"));
    })?;
    let r3 = engine.run(&job).await?;
    same(r3.counts.applied, 2, "an update and a disable")?;
    same(
        r3.counts.by_op.get(&OpKind::UpdateAccount).copied(),
        Some(1),
        "one update",
    )?;
    same(
        r3.counts.by_op.get(&OpKind::DisableAccount).copied(),
        Some(1),
        "one disable",
    )?;
    let p2 = store
        .hub_account(&"p002".into())
        .await?
        .ok_or_else(|| fail("p002 gone".into()))?;
    same(p2.status, Status::Disabled, "leaver disabled, not deleted")?;
    let trail = store.audit(EntityKind::Account, &"p001".into()).await?;
    same(
        trail.iter().map(|a| a.op.as_str()).collect::<Vec<_>>(),
        vec!["create_account", "update_account"],
        "audit trail of p001",
    )?;
    same(
        trail[1]
            .after
            .as_ref()
            .and_then(|a| a.get("title"))
            .cloned(),
        Some(json!("Chief")),
        "audit after of the update",
    )?;
    same(
        store.runs(Some("hr-to-hub"), 10).await?.len(),
        3,
        "three runs recorded",
    )?;
    same(engine.run(&job).await?.counts.planned, 0, "converged again")?;
    Ok(())
}

/// Helpers on the suite's clock.
trait SuiteClock {
    fn now_for_suite(&self) -> DateTime<Utc>;
}

impl SuiteClock for Arc<ManualClock> {
    fn now_for_suite(&self) -> DateTime<Utc> {
        idsync_core::Clock::now(self.as_ref())
    }
}

// --- inbox

fn inbox_push(stream: &str, keys: &[&str], targets: &[&str], at: DateTime<Utc>) -> InboxPush {
    InboxPush {
        stream: stream.to_owned(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        window: Duration::from_secs(60),
        event_type: "user_add_org".into(),
        targets: targets
            .iter()
            .map(|t| InboxTarget {
                target: (*t).to_owned(),
                deleted: t.starts_with("gone:"),
            })
            .collect(),
        at,
    }
}

/// The inbox: pushes numbered 1, 2, ... per stream; a replay key refused within its window
/// (and nothing written, even when only the second key is a replay), accepted again after
/// it; reads after a position, limited; the head survives a trim; streams are separate.
pub async fn inbox(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Result<()> {
    let s = store.as_ref();
    let t0 = clock.now();
    same(s.inbox_head("dt").await?, 0, "empty head")?;
    same(s.inbox_since("dt", 0, 10).await?.len(), 0, "empty stream")?;
    let p1 = inbox_push("dt", &["n1"], &["user:a", "gone:b"], t0);
    same(s.inbox_push(&p1).await?, Some(1), "first push")?;
    same(
        s.inbox_push(&inbox_push("dt", &["n2", "e2"], &["user:c"], t0))
            .await?,
        Some(2),
        "second push",
    )?;
    same(
        s.inbox_push(&inbox_push("dt", &["n1"], &["user:z"], t0))
            .await?,
        None,
        "a replayed nonce is refused",
    )?;
    same(
        s.inbox_push(&inbox_push("dt", &["n3", "e2"], &["user:z"], t0))
            .await?,
        None,
        "a replayed second key is refused",
    )?;
    // n3 was not kept by the refused push: it is accepted now.
    same(
        s.inbox_push(&inbox_push("dt", &["n3"], &["user:d"], t0))
            .await?,
        Some(3),
        "a key of a refused push is free",
    )?;
    same(
        s.inbox_push(&inbox_push("other", &["n1"], &["user:q"], t0))
            .await?,
        Some(1),
        "streams are separate",
    )?;
    same(
        s.inbox_push(&inbox_push("dt", &[], &[], t0)).await?,
        Some(4),
        "no keys, no targets",
    )?;
    let all = s.inbox_since("dt", 0, 10).await?;
    same(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "seqs",
    )?;
    same(all[0].targets.clone(), p1.targets.clone(), "targets kept")?;
    same(all[0].at, t0, "time kept")?;
    same(all[0].event_type.as_str(), "user_add_org", "type kept")?;
    same(
        s.inbox_since("dt", 1, 2)
            .await?
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![2, 3],
        "after and limit",
    )?;
    // After the window the key is free again.
    let later = t0 + chrono::Duration::seconds(61);
    same(
        s.inbox_push(&inbox_push("dt", &["n1"], &["user:a"], later))
            .await?,
        Some(5),
        "a key is free after its window",
    )?;
    same(
        s.inbox_trim("dt", 3, later).await?,
        3,
        "trimmed the consumed events",
    )?;
    same(
        s.inbox_since("dt", 0, 10)
            .await?
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![4, 5],
        "what is left",
    )?;
    same(s.inbox_head("dt").await?, 5, "a trim keeps the head")?;
    same(s.inbox_head("other").await?, 1, "other head")?;
    // The trim at `later` forgot n2 (its window ended), kept n1 (claimed again at `later`).
    same(
        s.inbox_push(&inbox_push("dt", &["n2"], &["user:c"], later))
            .await?,
        Some(6),
        "an expired key was forgotten",
    )?;
    same(
        s.inbox_push(&inbox_push("dt", &["n1"], &["user:a"], later))
            .await?,
        None,
        "a live key survives the trim",
    )?;
    same(
        s.inbox_since("other", 0, 10).await?.len(),
        1,
        "other stream untouched by the trim",
    )?;
    Ok(())
}

/// Concurrent pushes of one stream: every one lands, numbered 1..=n without gaps; the same
/// key pushed twice at once lands once.
pub async fn inbox_concurrent_pushes(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
) -> Result<()> {
    let s = store.as_ref();
    let t0 = clock.now();
    let pushes: Vec<InboxPush> = (0..40)
        .map(|i| {
            let k = format!("k{i}");
            inbox_push("dt", &[k.as_str()], &["user:x"], t0)
        })
        .collect();
    let results = futures::future::join_all(pushes.iter().map(|p| s.inbox_push(p))).await;
    let mut seqs = Vec::new();
    for r in results {
        seqs.push(r?.ok_or_else(|| fail("a fresh key was refused".into()))?);
    }
    seqs.sort_unstable();
    same(seqs, (1..=40).collect::<Vec<u64>>(), "seqs 1..=40")?;
    let twice = inbox_push("dt", &["same"], &["user:y"], t0);
    let (a, b) = futures::join!(s.inbox_push(&twice), s.inbox_push(&twice));
    same(
        a?.is_some() as u8 + b?.is_some() as u8,
        1,
        "one of two equal pushes lands",
    )?;
    same(s.inbox_head("dt").await?, 41, "head")?;
    same(s.inbox_since("dt", 0, 100).await?.len(), 41, "all kept")?;
    Ok(())
}
