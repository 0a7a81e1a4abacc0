//! The event endpoint over a store's durable inbox (`idsync serve`): an event is in the
//! SQLite store before Lark gets its `success`, a replay is refused (also by a new router
//! on the same store, after a "restart"), a redelivery is acknowledged and kept once, and
//! the source's `changes` read the inbox; a log that cannot record answers 503.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::{Error, ErrorKind, InboxEvent, Result, Source, Store, SyncCursor};
use idsync_http::{Batch, Events, Incoming, StoreEventLog};
use idsync_lark::fake::{FakeConfig, FakeLark, envelope, post_sealed, seal};
use idsync_lark::{LarkConfig, LarkEvents, LarkSource, Target, callback_router};
use idsync_store::SqliteStore;
use serde_json::{Value, json};

const STREAM: &str = "lark:test";

/// A config for `fake` with its secrets in files under `dir` (no environment races).
fn config(fake: &FakeLark, dir: &Path) -> LarkConfig {
    let fc = fake.config();
    let write = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        p
    };
    serde_json::from_value(json!({
        "app_id": fc.app_id,
        "app_secret_file": write("app_secret", &fc.app_secret),
        "base_url": fake.base_url(),
        "events": {
            "verification_token_file": write("vt", &fc.verification_token),
            "encrypt_key_file": write("ek", fc.encrypt_key.as_deref().unwrap()),
        },
    }))
    .unwrap()
}

/// Serves `router` on 127.0.0.1 until the handle is aborted; its URL.
async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}/"), task)
}

/// One "process": the store file opened, the source and its router over the inbox.
async fn open(
    fake: &FakeLark,
    dir: &Path,
) -> (
    Arc<dyn Store>,
    LarkSource,
    String,
    tokio::task::JoinHandle<()>,
) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("hub.db")).await.unwrap());
    let events: Arc<LarkEvents> = Arc::new(StoreEventLog::<Target>::new(store.clone(), STREAM));
    let (source, router) = idsync_lark::source_with_inbox(&config(fake, dir), events).unwrap();
    let (url, task) = serve(router).await;
    (store, source, url, task)
}

async fn inbox(store: &Arc<dyn Store>) -> Vec<InboxEvent> {
    store.inbox_since(STREAM, 0, 100).await.unwrap()
}

/// The inbox's targets, in order.
fn targets(events: &[InboxEvent]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| e.targets.iter().map(|t| t.target.clone()))
        .collect()
}

#[tokio::test]
async fn events_are_in_the_store_before_success_and_replays_stay_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    let d = fake.add_dept("0", "A");
    let alice = fake.add_user("alice", "Alice", std::slice::from_ref(&d));
    let bob = fake.add_user("bob", "Bob", std::slice::from_ref(&d));
    let cfg = fake.config();
    let key = cfg.encrypt_key.clone();
    let http = reqwest::Client::new();

    let (store, source, url, task) = open(&fake, dir.path()).await;
    let start = source.current_cursor().await.unwrap();
    assert_eq!(start, SyncCursor(format!("{STREAM}#0")));
    assert!(inbox(&store).await.is_empty());

    let env = envelope(
        &cfg,
        "contact.user.updated_v3",
        &json!({"object": {"union_id": alice, "name": "Alice"}, "old_object": {"name": "A"}}),
    );
    let (body, headers) = seal(key.as_deref(), &env);
    let answer = post_sealed(&http, &url, body.clone(), &headers)
        .await
        .unwrap();
    assert_eq!(answer, (200, json!({"msg": "success"})));
    // the router answered only after recording: the event is in the store now
    let kept = inbox(&store).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event_type, "contact.user.updated_v3");
    assert_eq!(targets(&kept), vec![format!("user:{alice}")]);

    // the same request again: a replay, refused as before, nothing recorded
    let replay = post_sealed(&http, &url, body.clone(), &headers)
        .await
        .unwrap();
    assert_eq!(
        replay,
        (
            403,
            json!({"msg": "timestamp and nonce seen before (replay)"})
        )
    );
    // Lark's redelivery of the event (new timestamp, nonce, IV): acknowledged, kept once
    let (body2, headers2) = seal(key.as_deref(), &env);
    assert_eq!(
        post_sealed(&http, &url, body2.clone(), &headers2)
            .await
            .unwrap(),
        (200, json!({"msg": "success"}))
    );
    assert_eq!(targets(&inbox(&store).await), vec![format!("user:{alice}")]);

    // a "restart": the old router gone, the store file opened again by a new one
    task.abort();
    let _ = task.await;
    drop(source);
    let (store, source, url, _task) = open(&fake, dir.path()).await;
    for (b, h) in [(&body, &headers), (&body2, &headers2)] {
        assert_eq!(
            post_sealed(&http, &url, b.clone(), h).await.unwrap(),
            (
                403,
                json!({"msg": "timestamp and nonce seen before (replay)"})
            ),
            "a replay is refused after the restart"
        );
    }
    // a third delivery of the same event id after the restart: acknowledged, kept once
    let (body3, headers3) = seal(key.as_deref(), &env);
    assert_eq!(
        post_sealed(&http, &url, body3, &headers3).await.unwrap().0,
        200
    );
    assert_eq!(targets(&inbox(&store).await), vec![format!("user:{alice}")]);

    // a new event is recorded after the earlier ones
    let env_bob = envelope(
        &cfg,
        "contact.user.created_v3",
        &json!({"object": {"union_id": bob, "name": "Bob"}}),
    );
    let (body, headers) = seal(key.as_deref(), &env_bob);
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        200
    );
    assert_eq!(
        targets(&inbox(&store).await),
        vec![format!("user:{alice}"), format!("user:{bob}")]
    );

    // the source's changes read the inbox: both people, re-read from Lark
    let cs = source.changes(&start).await.unwrap();
    assert!(cs.complete);
    let mut names: Vec<(String, Option<String>)> = cs
        .account_upserts
        .iter()
        .map(|a| (a.anchor.as_str().to_owned(), a.display_name.clone()))
        .collect();
    names.sort();
    let mut want = vec![
        (alice, Some("Alice".to_owned())),
        (bob, Some("Bob".to_owned())),
    ];
    want.sort();
    assert_eq!(names, want);
    assert!(cs.account_deletes.is_empty());
    let head = cs.cursor.unwrap();
    assert_eq!(head, source.current_cursor().await.unwrap());
    let after = source.changes(&head).await.unwrap();
    assert!(after.complete && after.account_upserts.is_empty());
}

fn down() -> Error {
    Error::new(ErrorKind::Unavailable, "the store is down")
}

/// An event log that cannot record (a store that is down).
#[derive(Debug)]
struct Down;

#[async_trait]
impl Events<Target> for Down {
    async fn record(&self, _: Incoming<Target>) -> Result<bool> {
        Err(down())
    }
    async fn current(&self) -> Result<SyncCursor> {
        Err(down())
    }
    async fn since(&self, _: &SyncCursor) -> Result<Batch<Target>> {
        Err(down())
    }
}

#[tokio::test]
async fn a_log_that_cannot_record_answers_503_and_lark_delivers_again() {
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    let cfg = fake.config();
    let conn = fake.connection();
    let router = callback_router(&fake.event_keys(), conn.user_id_type, Arc::new(Down)).unwrap();
    let (url, _task) = serve(router).await;
    let env = envelope(
        &cfg,
        "contact.user.created_v3",
        &json!({"object": {"union_id": "on_1"}}),
    );
    let (body, headers) = seal(cfg.encrypt_key.as_deref(), &env);
    let (status, answer): (u16, Value) = post_sealed(&reqwest::Client::new(), &url, body, &headers)
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_ne!(answer, json!({"msg": "success"}));
}
