//! `GET /api/v1/changes`, `/api/v1/accounts`, `/api/v1/orgs`.

use std::sync::Arc;
use std::time::Duration;

use idsync_core::{Account, Clock, ManualClock, MemoryStore, Op, Org, Store};
use idsync_serve::feed::{self, decode_cursor, encode_cursor};
use serde_json::Value;

use super::common::{get, serve};

fn start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .unwrap()
        .to_utc()
}

async fn seed(store: &dyn Store, clock: &ManualClock) {
    store
        .hub_apply(
            &Op::CreateOrg {
                org: Org::new("d1", None, "研发中心"),
            },
            None,
        )
        .await
        .unwrap();
    for i in 0..5 {
        clock.advance(chrono::Duration::seconds(1));
        let mut a = Account::new(format!("u{i}"), format!("user{i}"));
        a.orgs = vec!["d1".into()];
        store
            .hub_apply(&Op::CreateAccount { account: a }, None)
            .await
            .unwrap();
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn feed_pages_cursors_tombstones_and_expiry() {
    let clock = Arc::new(ManualClock::new(start()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock.clone()));
    seed(store.as_ref(), &clock).await;
    let base = serve(feed::router(store.clone())).await;

    // From the start, in pages of 4: entries, next_cursor, has_more.
    let (st, p1) = get(&format!("{base}/api/v1/changes?limit=4")).await;
    assert_eq!(st, 200, "{p1}");
    assert_eq!(seqs(&p1), vec![1, 2, 3, 4]);
    assert_eq!(p1["has_more"], true);
    let e0 = &p1["entries"][0];
    assert_eq!(e0["kind"], "org");
    assert_eq!(e0["anchor"], "d1");
    assert_eq!(e0["op"], "upsert");
    assert_eq!(e0["version"], 1);
    assert_eq!(e0["at"], "2026-01-02T03:04:05Z");
    assert_eq!(e0["entity"]["name"], "研发中心");
    let c1 = p1["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(decode_cursor(&c1).unwrap(), 4);
    let (_, p2) = get(&format!("{base}/api/v1/changes?cursor={c1}&limit=4")).await;
    assert_eq!(seqs(&p2), vec![5, 6]);
    assert_eq!(p2["has_more"], false);
    let c2 = p2["next_cursor"].as_str().unwrap().to_owned();

    // An empty page still has a next_cursor: the same position.
    let (st, p3) = get(&format!("{base}/api/v1/changes?cursor={c2}")).await;
    assert_eq!(st, 200);
    assert!(p3["entries"].as_array().unwrap().is_empty());
    assert_eq!(p3["next_cursor"], c2.as_str());

    // A delete is a tombstone: op delete, entity null, a higher version.
    store
        .hub_apply(
            &Op::DeleteAccount {
                anchor: "u0".into(),
            },
            None,
        )
        .await
        .unwrap();
    let (_, p4) = get(&format!("{base}/api/v1/changes?cursor={c2}")).await;
    let t = &p4["entries"][0];
    assert_eq!(t["op"], "delete");
    assert_eq!(t["anchor"], "u0");
    assert!(t["entity"].is_null());
    assert_eq!(t["version"], 7);

    // Bad input: a JSON error with a clear message.
    let (st, e) = get(&format!("{base}/api/v1/changes?cursor=nonsense")).await;
    assert_eq!(st, 400);
    assert_eq!(e["error"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("nonsense"), "{e}");
    let (st, e) = get(&format!("{base}/api/v1/changes?limit=0")).await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = get(&format!("{base}/api/v1/changes?limit=100000")).await;
    assert_eq!(st, 400);

    // Retention: prune what is older than 7 days; an old cursor answers 410 with a hint.
    clock.advance(chrono::Duration::days(8));
    store
        .hub_apply(
            &Op::UpdateAccount {
                anchor: "u1".into(),
                changes: [("title".to_owned(), serde_json::json!("Lead"))]
                    .into_iter()
                    .collect(),
            },
            None,
        )
        .await
        .unwrap();
    let removed = feed::prune(store.as_ref(), feed::DEFAULT_RETENTION, clock.now())
        .await
        .unwrap();
    assert_eq!(removed, 7, "everything older than 7 days");
    let (st, e) = get(&format!("{base}/api/v1/changes?cursor={c1}")).await;
    assert_eq!(st, 410, "{e}");
    assert_eq!(e["error"], "cursor_expired");
    assert!(e["resync"]["accounts"].as_str().is_some(), "{e}");
    let (st, _) = get(&format!("{base}/api/v1/changes")).await;
    assert_eq!(st, 410, "no cursor reads from the start, which is gone");
    // The cursor at the floor continues.
    let c7 = encode_cursor(7);
    let (st, p5) = get(&format!("{base}/api/v1/changes?cursor={c7}")).await;
    assert_eq!(st, 200, "{p5}");
    assert_eq!(seqs(&p5), vec![8]);
    // A cursor past the head (a rebuilt hub) also asks for a resync.
    let (st, e) = get(&format!(
        "{base}/api/v1/changes?cursor={}",
        encode_cursor(99)
    ))
    .await;
    assert_eq!(st, 410, "{e}");
}

#[tokio::test]
async fn snapshots_hand_out_a_consistent_cursor() {
    let clock = Arc::new(ManualClock::new(start()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock.clone()));
    seed(store.as_ref(), &clock).await;
    let base = serve(feed::router(store.clone())).await;

    let (st, o) = get(&format!("{base}/api/v1/orgs")).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["items"].as_array().unwrap().len(), 1);
    assert!(o["next_page"].is_null());
    let cursor = o["cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        decode_cursor(&cursor).unwrap(),
        6,
        "the head before the read"
    );

    // Accounts in pages of 2 under the orgs' cursor; a change lands mid-snapshot.
    let (_, a1) = get(&format!("{base}/api/v1/accounts?limit=2&cursor={cursor}")).await;
    assert_eq!(a1["items"].as_array().unwrap().len(), 2);
    assert_eq!(a1["cursor"], cursor.as_str());
    let mut late = Account::new("u9", "late");
    late.orgs = vec!["d1".into()];
    store
        .hub_apply(&Op::CreateAccount { account: late }, None)
        .await
        .unwrap();
    let mut seen: Vec<String> = a1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["anchor"].as_str().unwrap().to_owned())
        .collect();
    let mut page = a1["next_page"].as_str().map(str::to_owned);
    while let Some(p) = page {
        let (st, a) = get(&format!("{base}/api/v1/accounts?limit=2&page={p}")).await;
        assert_eq!(st, 200, "{a}");
        assert_eq!(
            a["cursor"],
            cursor.as_str(),
            "every page hands out the same cursor"
        );
        seen.extend(
            a["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["anchor"].as_str().unwrap().to_owned()),
        );
        page = a["next_page"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, vec!["u0", "u1", "u2", "u3", "u4", "u9"]);
    // The change made during the snapshot is in the feed after its cursor (at least once).
    let (_, ch) = get(&format!("{base}/api/v1/changes?cursor={cursor}")).await;
    assert_eq!(seqs(&ch), vec![7]);
    assert_eq!(ch["entries"][0]["anchor"], "u9");

    // A snapshot outliving the retention is refused like an old cursor.
    clock.advance(chrono::Duration::days(8));
    store
        .hub_apply(
            &Op::DisableAccount {
                anchor: "u2".into(),
            },
            None,
        )
        .await
        .unwrap();
    feed::prune(store.as_ref(), Duration::from_secs(3600), clock.now())
        .await
        .unwrap();
    let (st, e) = get(&format!("{base}/api/v1/accounts?cursor={cursor}")).await;
    assert_eq!(st, 410, "{e}");
    assert_eq!(e["error"], "cursor_expired");
    let (st, e) = get(&format!("{base}/api/v1/accounts?page=xyz")).await;
    assert_eq!(st, 400, "{e}");
}
