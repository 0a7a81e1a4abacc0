//! The event endpoint: URL verification, decryption, signature, token, redeliveries,
//! replays, and the change sets events make.

use std::sync::Arc;

use idsync_core::{Account, Anchor, Op, Sink, Source};
use idsync_lark::fake::{FakeConfig, FakeLark, envelope, post_sealed, seal};
use idsync_lark::{LarkEventLog, LarkSink, LarkSource, Target, callback_router};
use serde_json::json;

use crate::common::serve;

async fn setup(cfg: FakeConfig) -> (FakeLark, Arc<LarkEventLog>, LarkSink, String) {
    let fake = FakeLark::start(cfg).await.unwrap();
    let conn = fake.connection();
    let log = Arc::new(LarkEventLog::new(100));
    let url =
        serve(callback_router(&fake.event_keys(), conn.user_id_type, log.clone()).unwrap()).await;
    fake.register_callback(url.clone());
    let sink = LarkSink::from_source(LarkSource::with_events(conn, log.clone()).unwrap());
    (fake, log, sink, url)
}

#[tokio::test]
async fn url_verification_plain_and_encrypted() {
    let (fake, _, _, _) = setup(FakeConfig::default()).await;
    let (status, body) = fake.verify_url("ch-42").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, json!({"challenge": "ch-42"}));
    let (fake, _, _, _) = setup(FakeConfig {
        encrypt_key: None,
        ..FakeConfig::default()
    })
    .await;
    assert_eq!(
        fake.verify_url("plain").await.unwrap().1,
        json!({"challenge": "plain"})
    );
}

#[tokio::test]
async fn signature_token_redelivery_and_replay() {
    let (fake, log, _, url) = setup(FakeConfig::default()).await;
    let cfg = fake.config();
    let http = reqwest::Client::new();
    let env = envelope(
        &cfg,
        "contact.user.created_v3",
        &json!({"object": {"union_id": "on_1", "open_id": "ou_1"}}),
    );
    let (body, headers) = seal(cfg.encrypt_key.as_deref(), &env);
    let (status, ack) = post_sealed(&http, &url, body.clone(), &headers)
        .await
        .unwrap();
    assert_eq!((status, ack), (200, json!({"msg": "success"})));
    assert_eq!(log.len(), 1);
    // the same request again: a replay, refused
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        403
    );
    // Lark's redelivery of the same event (new timestamp, nonce, IV): acknowledged, recorded once
    let (body, headers) = seal(cfg.encrypt_key.as_deref(), &env);
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        200
    );
    assert_eq!(log.len(), 1);
    // a tampered signature
    let env2 = envelope(
        &cfg,
        "contact.user.created_v3",
        &json!({"object": {"union_id": "on_2"}}),
    );
    let (body, mut headers) = seal(cfg.encrypt_key.as_deref(), &env2);
    headers[2].1 = "0".repeat(64);
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        403
    );
    // the wrong verification token
    let mut wrong = env2.clone();
    wrong["header"]["token"] = json!("not-the-token");
    let (body, headers) = seal(cfg.encrypt_key.as_deref(), &wrong);
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        401
    );
    // the wrong key
    let (body, headers) = seal(Some("another key"), &env2);
    assert_eq!(
        post_sealed(&http, &url, body, &headers).await.unwrap().0,
        403
    );
    // plain JSON although a key is set
    let (body, _) = seal(None, &env2);
    assert_eq!(post_sealed(&http, &url, body, &[]).await.unwrap().0, 403);
    assert_eq!(log.len(), 1, "nothing refused was recorded");
    assert_eq!(log.events()[0].target, Target::User("on_1".into()));
}

#[tokio::test]
async fn writes_become_change_sets_and_a_scope_change_disables_nobody() {
    let (fake, _, sink, _) = setup(FakeConfig::default()).await;
    let d = fake.add_dept("0", "A");
    let keep = fake.add_user("keep", "Keep", std::slice::from_ref(&d));
    let start = sink.current_cursor().await.unwrap();
    let mut a = Account::new("p", "newbie");
    a.email = Some("newbie@fake.example".into());
    a.orgs = vec![Anchor::new(d.clone())];
    let created = sink
        .apply(&Op::CreateAccount { account: a })
        .await
        .unwrap()
        .anchor
        .unwrap();
    sink.apply(&Op::DisableAccount {
        anchor: Anchor::new(keep.clone()),
    })
    .await
    .unwrap();
    sink.apply(&Op::DeleteAccount {
        anchor: created.clone(),
    })
    .await
    .unwrap();
    let cs = sink.changes(&start).await.unwrap();
    assert!(cs.complete);
    assert_eq!(
        cs.account_deletes,
        vec![created.clone()],
        "deleted_v3 is a delete"
    );
    assert_eq!(cs.account_upserts.len(), 1);
    assert_eq!(cs.account_upserts[0].anchor.as_str(), keep);
    assert_eq!(fake.stats().events_delivered, 3);
    let mid = cs.cursor.unwrap();
    // the app's visible range changed: a full run is due, nobody is deleted or disabled
    let (status, _) = fake
        .send_event(
            "contact.scope.updated_v3",
            json!({"added": {}, "removed": {}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let cs = sink.changes(&mid).await.unwrap();
    assert!(!cs.complete, "a full run is due");
    assert!(
        cs.account_deletes.is_empty() && cs.account_upserts.is_empty() && cs.org_deletes.is_empty()
    );
    // department events
    let after = sink.current_cursor().await.unwrap();
    let org = sink
        .apply(&Op::CreateOrg {
            org: idsync_core::Org::new("x", Some(Anchor::new(d.clone())), "Sub"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let cs = sink.changes(&after).await.unwrap();
    assert_eq!(cs.org_upserts.len(), 1);
    assert_eq!(cs.org_upserts[0].anchor, org);
    assert_eq!(cs.org_upserts[0].parent, Some(Anchor::new(d)));
}
