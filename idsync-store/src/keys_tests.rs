//! Tests of the index of correlation keys (`hub_keys`): its rows match the hub exactly
//! after every write path, a lookup is one probe of its primary key whatever the hub's
//! size, and a hub without keys (made before the table, or emptied) is backfilled at open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;

use idsync_core::{Account, Anchor, HubWrite, Op, Org, PageRequest, Store};
use serde_json::json;
use sqlx::Connection;

use crate::sql::{FIND_BY_KEY, account_keys};
use crate::{PgStore, SqliteStore};

type KeyRow = (String, String, String);

fn account(i: usize) -> Account {
    let mut a = Account::new(format!("p{i:06}"), format!("User{i}"));
    a.email = Some(format!("User{i}@Example.com"));
    a.orgs = vec!["d1".into()];
    a
}

/// Creates `n` accounts in org d1 through the multi-row path, 1,000 a batch.
async fn fill(store: &dyn Store, n: usize) {
    store
        .hub_apply(
            &Op::CreateOrg {
                org: Org::new("d1", None, "Dept"),
            },
            None,
        )
        .await
        .unwrap();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let writes = chunk
            .iter()
            .map(|&i| HubWrite {
                op: Op::CreateAccount {
                    account: account(i),
                },
                record: None,
            })
            .collect();
        for r in store.hub_apply_batch(writes).await {
            r.unwrap();
        }
    }
}

/// The rows `hub_keys` should hold for the hub as it is: the keys of every account.
async fn expected_rows(store: &dyn Store) -> BTreeSet<KeyRow> {
    let mut out = BTreeSet::new();
    let mut req = PageRequest::sized(5000);
    loop {
        let page = store.hub_accounts(req.clone()).await.unwrap();
        for a in &page.items {
            for (f, k) in account_keys(a) {
                out.insert((f.to_owned(), k, a.anchor.as_str().to_owned()));
            }
        }
        match page.next {
            Some(t) => req.token = Some(t),
            None => return out,
        }
    }
}

/// Every write path, mixed: single creates, a batch of creates, a batch that falls back to
/// one by one, updates of keyed and unkeyed fields, a key that changes only by case,
/// disable, delete.
async fn mixed_writes(s: &dyn Store) {
    s.hub_apply(
        &Op::CreateOrg {
            org: Org::new("d1", None, "Dept"),
        },
        None,
    )
    .await
    .unwrap();
    let mut a = Account::new("a1", "Ärger");
    a.email = Some("Ärger@Example.com".into());
    a.employee_id = Some(" E-1 ".into());
    a.phone = Some("   ".into());
    s.hub_apply(&Op::CreateAccount { account: a }, None)
        .await
        .unwrap();
    let batch: Vec<HubWrite> = (0..5)
        .map(|i| HubWrite {
            op: Op::CreateAccount {
                account: account(i),
            },
            record: None,
        })
        .collect();
    for r in s.hub_apply_batch(batch).await {
        r.unwrap();
    }
    // One create of this batch fails (taken anchor): the others go one by one.
    let mut taken = account(100);
    taken.anchor = "a1".into();
    let answers = s
        .hub_apply_batch(vec![
            HubWrite {
                op: Op::CreateAccount {
                    account: account(10),
                },
                record: None,
            },
            HubWrite {
                op: Op::CreateAccount { account: taken },
                record: None,
            },
            HubWrite {
                op: Op::CreateAccount {
                    account: account(11),
                },
                record: None,
            },
        ])
        .await;
    assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok());
    let update = |anchor: &str, field: &str, v: serde_json::Value| Op::UpdateAccount {
        anchor: anchor.into(),
        changes: [(field.to_owned(), v)].into_iter().collect(),
    };
    for op in [
        update("a1", "email", json!("new@example.com")),
        update("a1", "display_name", json!("Ärger Ä.")),
        update("p000001", "email", json!("user1@example.com")),
        update("p000002", "phone", json!("+49 1")),
        update("p000003", "email", serde_json::Value::Null),
        Op::DisableAccount {
            anchor: "p000002".into(),
        },
        Op::DeleteAccount {
            anchor: "p000004".into(),
        },
    ] {
        s.hub_apply(&op, None).await.unwrap();
    }
}

async fn sqlite_rows(path: &Path) -> BTreeSet<KeyRow> {
    let mut c = sqlite_conn(path).await;
    let rows: Vec<KeyRow> = sqlx::query_as("SELECT field, key, anchor FROM hub_keys")
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.into_iter().collect()
}

async fn sqlite_conn(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

async fn pg_rows(s: &PgStore) -> BTreeSet<KeyRow> {
    let rows: Vec<KeyRow> = sqlx::query_as("SELECT field, key, anchor FROM hub_keys")
        .fetch_all(s.pool())
        .await
        .unwrap();
    rows.into_iter().collect()
}

fn anchors(v: Vec<Account>) -> Vec<Anchor> {
    v.into_iter().map(|a| a.anchor).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keys_follow_every_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    let s = SqliteStore::open(&file).await.unwrap();
    mixed_writes(&s).await;
    let want = expected_rows(&s).await;
    assert!(want.contains(&("email".into(), "new@example.com".into(), "a1".into())));
    assert!(want.contains(&("phone".into(), "+49 1".into(), "p000002".into())));
    assert!(!want.iter().any(|r| r.0 == "phone" && r.2 == "a1"), "blank");
    assert_eq!(sqlite_rows(&file).await, want);
    assert_eq!(
        anchors(s.hub_find_accounts("username", "ärger").await.unwrap()),
        vec![Anchor::from("a1")]
    );
    assert!(
        s.hub_find_accounts("email", "user4@example.com")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_memory_keys_follow_every_write_path() {
    // The in-memory store writes without the writer task, one transaction per write.
    let s = SqliteStore::open_in_memory().await.unwrap();
    mixed_writes(&s).await;
    let want = expected_rows(&s).await;
    let mut found = BTreeSet::new();
    for (field, key, _) in &want {
        for a in s.hub_find_accounts(field, key).await.unwrap() {
            found.insert((field.clone(), key.clone(), a.anchor.as_str().to_owned()));
        }
    }
    assert_eq!(found, want);
    assert!(
        s.hub_find_accounts("email", "ärger@example.com")
            .await
            .unwrap()
            .is_empty(),
        "the old email is no key any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keys_follow_every_write_path() {
    let url = common::fresh_pg_database("idsync_keys").await;
    let s = PgStore::connect(&url).await.unwrap();
    mixed_writes(&s).await;
    let want = expected_rows(&s).await;
    assert!(want.len() > 10);
    assert_eq!(pg_rows(&s).await, want);
    s.close().await;
}

/// A lookup in a hub of 20,000 accounts is one search of the keys' primary key and one
/// primary-key read per match: no scan, whatever the hub's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lookup_in_20000_accounts_searches_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    let s = SqliteStore::open(&file).await.unwrap();
    fill(&s, 20_000).await;
    assert_eq!(
        anchors(
            s.hub_find_accounts("email", " USER12345@example.com")
                .await
                .unwrap()
        ),
        vec![Anchor::from("p012345")]
    );
    let mut c = sqlite_conn(&file).await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM hub_keys")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 40_000, "username and email of each account");
    let steps = explain_sqlite(&mut c, FIND_BY_KEY, 2).await;
    assert_eq!(
        steps,
        vec![
            "SEARCH k USING PRIMARY KEY (field=? AND key=?)".to_owned(),
            "SEARCH a USING PRIMARY KEY (anchor=?)".to_owned(),
        ],
        "the lookup searches both primary keys and sorts nothing"
    );
    let steps = explain_sqlite(
        &mut c,
        "DELETE FROM hub_keys WHERE field = $1 AND key = $2 AND anchor = $3",
        3,
    )
    .await;
    assert_eq!(
        steps,
        vec!["SEARCH hub_keys USING PRIMARY KEY (field=? AND key=? AND anchor=?)".to_owned()]
    );
}

/// The detail column of `EXPLAIN QUERY PLAN sql`, with `params` text parameters bound.
async fn explain_sqlite(c: &mut sqlx::SqliteConnection, sql: &str, params: usize) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
    for i in 0..params {
        q = q.bind(format!("v{i}"));
    }
    q.fetch_all(c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lookup_in_20000_accounts_uses_index_scans() {
    let url = common::fresh_pg_database("idsync_keys").await;
    let s = PgStore::connect(&url).await.unwrap();
    fill(&s, 20_000).await;
    assert_eq!(
        anchors(s.hub_find_accounts("username", "user19999 ").await.unwrap()),
        vec![Anchor::from("p019999")]
    );
    sqlx::query("ANALYZE hub_keys")
        .execute(s.pool())
        .await
        .unwrap();
    sqlx::query("ANALYZE hub_accounts")
        .execute(s.pool())
        .await
        .unwrap();
    let explain = format!("EXPLAIN (FORMAT JSON) {FIND_BY_KEY}");
    let (plan,): (sqlx::types::Json<serde_json::Value>,) = sqlx::query_as(&explain)
        .bind("username")
        .bind("user19999")
        .fetch_one(s.pool())
        .await
        .unwrap();
    let text = plan.0.to_string();
    assert!(!text.contains("Seq Scan"), "a scan in {text}");
    assert!(!text.contains("\"Sort\""), "a sort in {text}");
    assert!(
        text.contains("hub_keys_pkey"),
        "no probe of hub_keys in {text}"
    );
    assert!(
        text.contains("hub_accounts_pkey"),
        "no probe of hub_accounts in {text}"
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_emptied_keys_are_backfilled_at_open_by_concurrent_openers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    let want = {
        let s = SqliteStore::open(&file).await.unwrap();
        fill(&s, 2_500).await; // three pages of the backfill
        mixed_writes_after_fill(&s).await;
        let want = expected_rows(&s).await;
        assert_eq!(sqlite_rows(&file).await, want);
        s.close().await;
        want
    };
    let mut c = sqlite_conn(&file).await;
    sqlx::query("DELETE FROM hub_keys")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(&file), SqliteStore::open(&file));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(sqlite_rows(&file).await, want);
    for s in [&a, &b] {
        assert_eq!(
            anchors(
                s.hub_find_accounts("email", "user2499@example.COM")
                    .await
                    .unwrap()
            ),
            vec![Anchor::from("p002499")]
        );
    }
    let mut c = sqlite_conn(&file).await;
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM hub_keys_backfill")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0, "the backfill marker is gone when it is done");
}

/// Changes after the fill, so a backfill has more than the fill's keys to find.
async fn mixed_writes_after_fill(s: &dyn Store) {
    s.hub_apply(
        &Op::UpdateAccount {
            anchor: "p000007".into(),
            changes: [("employee_id".to_owned(), json!("Ｅ７"))]
                .into_iter()
                .collect(),
        },
        None,
    )
    .await
    .unwrap();
    s.hub_apply(
        &Op::DeleteAccount {
            anchor: "p000008".into(),
        },
        None,
    )
    .await
    .unwrap();
}

/// A store made before the table: its migration record and both tables gone, as before
/// `0004_hub_keys`. Opening migrates and fills the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_from_before_the_index_is_backfilled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    let want = {
        let s = SqliteStore::open(&file).await.unwrap();
        fill(&s, 1_200).await;
        let want = expected_rows(&s).await;
        s.close().await;
        want
    };
    let mut c = sqlite_conn(&file).await;
    for sql in [
        "DROP TABLE hub_keys",
        "DROP TABLE hub_keys_backfill",
        "DELETE FROM _sqlx_migrations WHERE version = 4",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
    let s = SqliteStore::open(&file).await.unwrap();
    assert_eq!(sqlite_rows(&file).await, want);
    assert_eq!(want.len(), 2_400);
    assert_eq!(
        anchors(s.hub_find_accounts("username", "USER1199").await.unwrap()),
        vec![Anchor::from("p001199")]
    );
}

/// A backfill interrupted by a crash (its marker left, the keys written only up to the
/// marker's anchor, so the table is not empty) is finished at the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backfill_resumes_after_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    {
        let s = SqliteStore::open(&file).await.unwrap();
        fill(&s, 10).await;
        s.close().await;
    }
    let mut c = sqlite_conn(&file).await;
    for sql in [
        "DELETE FROM hub_keys WHERE anchor > 'p000004'",
        "INSERT INTO hub_keys_backfill (id, after) VALUES (1, 'p000004')",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
    let s = SqliteStore::open(&file).await.unwrap();
    assert_eq!(sqlite_rows(&file).await, expected_rows(&s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_emptied_keys_are_backfilled_by_concurrent_workers() {
    let url = common::fresh_pg_database("idsync_keys").await;
    let want = {
        let s = PgStore::connect(&url).await.unwrap();
        fill(&s, 2_500).await;
        mixed_writes_after_fill(&s).await;
        let want = expected_rows(&s).await;
        assert_eq!(pg_rows(&s).await, want);
        sqlx::query("DELETE FROM hub_keys")
            .execute(s.pool())
            .await
            .unwrap();
        s.close().await;
        want
    };
    let (a, b) = tokio::join!(PgStore::connect(&url), PgStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(pg_rows(&a).await, want);
    for s in [&a, &b] {
        assert_eq!(
            anchors(s.hub_find_accounts("employee_id", "ｅ７").await.unwrap()),
            vec![Anchor::from("p000007")]
        );
    }
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM hub_keys_backfill")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    a.close().await;
    b.close().await;
}
