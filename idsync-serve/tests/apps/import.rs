//! `POST /api/v1/import/{job}`.

use std::sync::Arc;

use idsync_core::{Engine, Hub, MemoryStore, PageRequest, Store};
use idsync_serve::import::{self, ImportConfig};
use serde_json::{Value, json};

use super::common::serve;

async fn post(url: &str, body: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().post(url).body(body.to_owned());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap(), replayed)
}

async fn setup() -> (Arc<dyn Store>, String) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let jobs = vec![import::import_job("hr-import", hub)];
    let base = serve(import::router(engine, jobs, ImportConfig::default())).await;
    (store, format!("{base}/api/v1/import"))
}

fn records() -> String {
    json!([
        {"type": "org", "anchor": "d1", "name": "研发中心"},
        {"type": "org", "anchor": "d2", "name": "Backend", "parent": "d1"},
        {"type": "account", "anchor": "u1", "username": "alice", "orgs": ["d1"], "email": "alice@example.com"},
        {"type": "account", "anchor": "u2", "username": "bob", "orgs": ["d2"]},
        {"type": "account", "anchor": "u3", "username": "carol", "orgs": ["d2"]},
        {"type": "account", "anchor": "u4", "username": "dave", "orgs": ["d2"]}
    ])
    .to_string()
}

#[tokio::test]
async fn imports_are_planned_applied_and_idempotent() {
    let (store, url) = setup().await;
    let (st, a, replayed) = post(&format!("{url}/hr-import"), &records(), Some("k-1")).await;
    assert_eq!(st, 200, "{a}");
    assert!(replayed.is_none());
    assert_eq!(a["status"], "succeeded", "{a}");
    assert_eq!(a["received"], 6);
    assert_eq!(a["accepted"], 6);
    assert_eq!(a["counts"]["applied"], 6);
    assert_eq!(
        store
            .hub_accounts(PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    let head = store.feed_head().await.unwrap();
    let runs = store.runs(Some("hr-import"), 100).await.unwrap().len();

    // Same key, same body: the same answer, no new run.
    let (st2, a2, replayed) = post(&format!("{url}/hr-import"), &records(), Some("k-1")).await;
    assert_eq!(st2, 200);
    assert_eq!(a2, a, "the kept answer");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(
        store.runs(Some("hr-import"), 100).await.unwrap().len(),
        runs
    );
    // Same key, another body: refused.
    let other = json!([{"type": "account", "anchor": "u5", "username": "eve"}]).to_string();
    let (st3, e, _) = post(&format!("{url}/hr-import"), &other, Some("k-1")).await;
    assert_eq!(st3, 422, "{e}");
    assert_eq!(e["error"], "idempotency_key_reused");
    assert_eq!(store.feed_head().await.unwrap(), head, "nothing applied");

    // Without a key the same import again plans nothing (equal content, no op).
    let (st4, a4, _) = post(&format!("{url}/hr-import"), &records(), None).await;
    assert_eq!(st4, 200, "{a4}");
    assert_eq!(a4["counts"]["planned"], 0, "{a4}");

    // NDJSON; an org known to the job from the earlier import is a valid reference.
    let nd = "{\"type\":\"account\",\"anchor\":\"u5\",\"username\":\"eve\",\"orgs\":[\"d2\"]}\n\
              {\"type\":\"account\",\"anchor\":\"u1\",\"username\":\"alice\",\"orgs\":[\"d1\"],\"title\":\"Lead\",\"email\":\"alice@example.com\"}\n";
    let (st5, a5, _) = post(&format!("{url}/hr-import"), nd, Some("k-2")).await;
    assert_eq!(st5, 200, "{a5}");
    assert_eq!(a5["counts"]["applied"], 2, "{a5}");
    let alice = store.hub_account(&"u1".into()).await.unwrap().unwrap();
    assert_eq!(alice.title.as_deref(), Some("Lead"));

    // Unknown job: a JSON 404.
    let (st6, e, _) = post(&format!("{url}/nope"), &records(), None).await;
    assert_eq!(st6, 404, "{e}");
    assert_eq!(e["error"], "unknown_job");
}

#[tokio::test]
async fn invalid_records_reject_or_skip_by_policy() {
    let (store, url) = setup().await;
    let nd = [
        r#"{"type":"org","anchor":"d1","name":"R&D"}"#,
        r#"{"type":"account","anchor":"u1","username":"alice","orgs":["d1"]}"#,
        r#"{"type":"account","anchor":"u2","username":"bob","orgs":["ghost"]}"#,
        r#"{"type":"account","anchor":"u3","email":"x@example.com"}"#,
        r#"{"type":"account","anchor":"u1","username":"alice2"}"#,
        r#"{"type":"org","anchor":"d8","name":"A","parent":"d9"}"#,
        r#"{"type":"org","anchor":"d9","name":"B","parent":"d8"}"#,
    ]
    .join("\n");
    let (st, e, _) = post(&format!("{url}/hr-import"), &nd, Some("bad-1")).await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"], "invalid_records");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("nothing was imported"),
        "{e}"
    );
    let errors = e["errors"].as_array().unwrap();
    let got: Vec<(u64, u64, Value)> = errors
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["line"].as_u64().unwrap(),
                x["field"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 3, json!("orgs")),
            (3, 4, json!("username")),
            (4, 5, json!("anchor")),
            (5, 6, json!("parent")),
            (6, 7, json!("parent")),
        ],
        "{e}"
    );
    assert!(
        errors[0]["reason"].as_str().unwrap().contains("ghost"),
        "{e}"
    );
    assert_eq!(store.feed_head().await.unwrap(), 0, "nothing applied");
    // The rejection is kept under its key too.
    let (st, e2, replayed) = post(&format!("{url}/hr-import"), &nd, Some("bad-1")).await;
    assert_eq!((st, replayed.as_deref()), (422, Some("true")));
    assert_eq!(e2, e);

    // errors=skip: the valid records go in, the others are reported.
    let (st, a, _) = post(&format!("{url}/hr-import?errors=skip"), &nd, None).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["accepted"], 2);
    assert_eq!(a["rejected"], 5);
    assert_eq!(a["errors"].as_array().unwrap().len(), 5);
    assert_eq!(a["counts"]["applied"], 2);
    assert!(store.hub_account(&"u1".into()).await.unwrap().is_some());
    assert!(store.hub_account(&"u2".into()).await.unwrap().is_none());

    // Not JSON at all: 400 with where.
    let (st, e, _) = post(&format!("{url}/hr-import"), "[{\"type\": ", None).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("line 1"), "{e}");
}

#[tokio::test]
async fn imports_are_guarded_like_any_run() {
    let (store, url) = setup().await;
    let (st, _, _) = post(&format!("{url}/hr-import"), &records(), None).await;
    assert_eq!(st, 200);
    // Deleting 3 of the 4 accounts the job links crosses the default guard (5%).
    let del = json!([
        {"type": "account", "anchor": "u2", "delete": true},
        {"type": "account", "anchor": "u3", "delete": true},
        {"type": "account", "anchor": "u4", "delete": true}
    ])
    .to_string();
    let head = store.feed_head().await.unwrap();
    let (st, a, _) = post(&format!("{url}/hr-import"), &del, None).await;
    assert_eq!(st, 202, "{a}");
    assert_eq!(a["status"], "needs_approval", "{a}");
    assert!(!a["guard"].as_array().unwrap().is_empty(), "{a}");
    assert_eq!(store.feed_head().await.unwrap(), head, "nothing applied");
    let run = store
        .run(a["run_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, idsync_core::RunStatus::NeedsApproval);
    let bob = store.hub_account(&"u2".into()).await.unwrap().unwrap();
    assert_eq!(bob.status, idsync_core::Status::Active);
}
