//! Event callbacks end to end: the official check_url push is answered with an encrypted
//! `success`; forged and replayed pushes are refused; directory events become a change set
//! by re-reading the fake.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use idsync_core::{ManualClock, Source};
use idsync_dingtalk::callback::callback_router_with_clock;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use idsync_dingtalk::{CallbackConfig, CallbackCrypto, DingTalkSource, EventLog};
use secrecy::SecretString;
use serde_json::{Value, json};

#[derive(serde::Deserialize)]
struct Vectors {
    official: Vec<Vector>,
}

#[derive(serde::Deserialize, Clone)]
struct Vector {
    token: String,
    encoding_aes_key: String,
    owner_key: String,
    timestamp: String,
    nonce: String,
    encrypt: String,
    signature: String,
}

fn official() -> Vec<Vector> {
    let v: Vectors = serde_json::from_str(include_str!("fixtures/crypto_vectors.json")).unwrap();
    v.official
}

fn cb_config(v: &Vector) -> CallbackConfig {
    let mut c = CallbackConfig::new(
        SecretString::from(v.token.clone()),
        SecretString::from(v.encoding_aes_key.clone()),
    );
    c.owner_key = Some(v.owner_key.clone());
    c
}

/// Serves the router on 127.0.0.1:0; fails loudly when it cannot listen.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("callback test server must listen");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/")
}

async fn push(
    url: &str,
    sig_key: &str,
    sig: &str,
    ts_key: &str,
    ts: &str,
    nonce: &str,
    encrypt: &str,
) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .query(&[(sig_key, sig), (ts_key, ts), ("nonce", nonce)])
        .json(&json!({ "encrypt": encrypt }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn official_check_url_push_is_acknowledged_and_replays_refused() {
    let v = &official()[0];
    let at = Utc
        .timestamp_millis_opt(v.timestamp.parse().unwrap())
        .unwrap();
    let clock = Arc::new(ManualClock::new(at));
    let log = Arc::new(EventLog::new(100));
    let router =
        callback_router_with_clock(&cb_config(v), "unused", log.clone(), clock.clone()).unwrap();
    let url = serve(router).await;

    // forged: one character of the signature changed
    let mut forged = v.signature.clone();
    forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
    let (status, _) = push(
        &url,
        "signature",
        &forged,
        "timestamp",
        &v.timestamp,
        &v.nonce,
        &v.encrypt,
    )
    .await;
    assert_eq!(status, 403);

    // the official push: answered with an encrypted, signed "success"
    let (status, body) = push(
        &url,
        "msg_signature",
        &v.signature,
        "timeStamp",
        &v.timestamp,
        &v.nonce,
        &v.encrypt,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let crypto = CallbackCrypto::new(
        idsync_dingtalk::PROVIDER,
        SecretString::from(v.token.clone()),
        &SecretString::from(v.encoding_aes_key.clone()),
        v.owner_key.clone(),
    )
    .unwrap();
    let enc = body["encrypt"].as_str().unwrap();
    assert_eq!(crypto.decrypt(enc).unwrap().message, "success");
    assert!(crypto.verify(
        body["msg_signature"].as_str().unwrap(),
        body["timeStamp"].as_str().unwrap(),
        body["nonce"].as_str().unwrap(),
        enc
    ));
    assert!(log.is_empty(), "check_url records no change");

    // the same push again: replayed nonce
    let (status, _) = push(
        &url,
        "signature",
        &v.signature,
        "timestamp",
        &v.timestamp,
        &v.nonce,
        &v.encrypt,
    )
    .await;
    assert_eq!(status, 403);

    // a correctly signed push whose timestamp is outside the window
    clock.advance(chrono::Duration::minutes(10));
    let ts = v.timestamp.clone();
    let sig = crypto.signature(&ts, "freshnonce", &v.encrypt);
    let (status, _) = push(
        &url,
        "signature",
        &sig,
        "timestamp",
        &ts,
        "freshnonce",
        &v.encrypt,
    )
    .await;
    assert_eq!(status, 403);

    // a wrong owner key is refused too (signature fine, plaintext owner differs)
    let mut other = cb_config(v);
    other.owner_key = Some("dingSOMEBODYELSE".into());
    let log2 = Arc::new(EventLog::new(10));
    let url2 = serve(
        callback_router_with_clock(&other, "x", log2, Arc::new(ManualClock::new(at))).unwrap(),
    )
    .await;
    let (status, _) = push(
        &url2,
        "signature",
        &v.signature,
        "timestamp",
        &v.timestamp,
        &v.nonce,
        &v.encrypt,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn events_become_a_change_set() {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let rd = fake.add_dept(1, "研发部");
    fake.add_user("u1", "张三", &[rd]);
    fake.add_user("u2", "李四", &[rd]);

    let v = &official()[1]; // token/key of the Go sample; owner key = the fake's AppKey
    let mut cfg = cb_config(v);
    cfg.owner_key = None;
    let app_key = fake.client_config().app_key.clone();
    let log = Arc::new(EventLog::new(100));
    let url = serve(idsync_dingtalk::callback_router(&cfg, &app_key, log.clone()).unwrap()).await;
    let src = DingTalkSource::with_events(fake.client_config(), log.clone()).unwrap();
    assert!(src.capabilities().changes);
    let crypto = CallbackCrypto::new(
        idsync_dingtalk::PROVIDER,
        cfg.token.clone(),
        &cfg.aes_key,
        app_key.clone(),
    )
    .unwrap();

    let start = src.current_cursor().await.unwrap();
    let mut n = 0;
    let mut send = |payload: Value| {
        n += 1;
        let crypto = &crypto;
        let url = url.clone();
        async move {
            let ts = Utc::now().timestamp_millis().to_string();
            let nonce = format!("nonce{n}");
            // the Go helper pads to 16: accept that too
            let enc = crypto
                .encrypt_block(
                    &payload.to_string(),
                    [7u8; 16],
                    if n % 2 == 0 { 16 } else { 32 },
                )
                .unwrap();
            let sig = crypto.signature(&ts, &nonce, &enc);
            let (status, body) =
                push(&url, "signature", &sig, "timestamp", &ts, &nonce, &enc).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                crypto
                    .decrypt(body["encrypt"].as_str().unwrap())
                    .unwrap()
                    .message,
                "success"
            );
        }
    };

    // u1 modified, u3 added, u2 left, a department created (legacy and current formats)
    fake.modify_user("u1", |u| u.title = Some("经理".into()));
    fake.add_user("u3", "王五", &[rd]);
    fake.remove_user("u2");
    let ops = fake.add_dept(rd, "运维组");
    send(json!({"EventType": "user_modify_org", "UserId": ["u1"], "TimeStamp": "1718003521786", "CorpId": "ding1"})).await;
    send(json!({"EventType": "user_add_org", "userId": ["u3"], "timeStamp": 1718003521786i64, "CorpId": "ding1"})).await;
    send(json!({"EventType": "user_leave_org", "UserId": ["u2"], "CorpId": "ding1"})).await;
    send(json!({"EventType": "org_dept_create", "DeptId": [ops], "CorpId": "ding1"})).await;
    send(json!({"EventType": "label_user_change", "CorpId": "ding1"})).await;

    let cs = src.changes(&start).await.unwrap();
    assert!(cs.complete);
    let ups: Vec<&str> = cs
        .account_upserts
        .iter()
        .map(|a| a.anchor.as_str())
        .collect();
    assert_eq!(ups, vec!["u1", "u3"]);
    assert_eq!(cs.account_upserts[0].title.as_deref(), Some("经理"));
    assert_eq!(cs.account_deletes, vec!["u2".into()]);
    assert_eq!(cs.org_upserts.len(), 1);
    assert_eq!(cs.org_upserts[0].name, "运维组");
    assert_eq!(
        cs.org_upserts[0].parent.as_ref().unwrap().as_str(),
        rd.to_string()
    );

    // nothing new since the returned cursor; a dept removal after it
    let next = cs.cursor.clone().unwrap();
    assert!(src.changes(&next).await.unwrap().is_empty());
    send(json!({"EventType": "org_dept_remove", "deptId": [ops], "CorpId": "ding1"})).await;
    let cs2 = src.changes(&next).await.unwrap();
    assert_eq!(cs2.org_deletes, vec![ops.to_string().into()]);

    // a cursor from another log is stale: run a full sync
    let stale = src
        .changes(&idsync_core::SyncCursor("feedbeef0000:3".into()))
        .await
        .unwrap();
    assert!(!stale.complete);
}

#[tokio::test]
async fn source_with_inbox_records_into_the_store_before_success() {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let rd = fake.add_dept(1, "研发部");
    fake.add_user("u1", "张三", &[rd]);
    let v = &official()[1];
    let mut cb = cb_config(v);
    cb.owner_key = None;
    let mut cfg = fake.client_config();
    cfg.callback = Some(cb.clone());
    let app_key = cfg.app_key.clone();
    let store: Arc<dyn idsync_core::Store> = Arc::new(idsync_core::MemoryStore::new());
    let inbox =
        |store: &Arc<dyn idsync_core::Store>| -> Arc<idsync_dingtalk::callback::DingTalkEvents> {
            Arc::new(idsync_http::StoreEventLog::<
                idsync_dingtalk::callback::EventTarget,
            >::new(store.clone(), "dingtalk:test"))
        };
    let (src, router) = idsync_dingtalk::source_with_inbox(&cfg, inbox(&store)).unwrap();
    assert!(src.capabilities().changes);
    let start = src.current_cursor().await.unwrap();
    let url = serve(router).await;
    let crypto = CallbackCrypto::new(
        idsync_dingtalk::PROVIDER,
        cb.token.clone(),
        &cb.aes_key,
        app_key,
    )
    .unwrap();
    let ts = Utc::now().timestamp_millis().to_string();
    let payload = json!({"EventType": "user_modify_org", "UserId": ["u1"], "CorpId": "ding1"});
    let enc = crypto
        .encrypt_block(&payload.to_string(), [7u8; 16], 32)
        .unwrap();
    let sig = crypto.signature(&ts, "inbox1", &enc);
    let (status, body) = push(&url, "signature", &sig, "timestamp", &ts, "inbox1", &enc).await;
    assert_eq!(status, 200, "{body}");
    let kept = store.inbox_since("dingtalk:test", 0, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "in the store once answered");
    assert_eq!(kept[0].targets[0].target, "user:u1");
    let (status, _) = push(&url, "signature", &sig, "timestamp", &ts, "inbox1", &enc).await;
    assert_ne!(status, 200, "a replay");
    // a new endpoint on the same store still refuses it
    let (src2, router2) = idsync_dingtalk::source_with_inbox(&cfg, inbox(&store)).unwrap();
    let url2 = serve(router2).await;
    let (status, _) = push(&url2, "signature", &sig, "timestamp", &ts, "inbox1", &enc).await;
    assert_ne!(status, 200, "a replay after a restart");
    assert_eq!(
        store
            .inbox_since("dingtalk:test", 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let cs = src2.changes(&start).await.unwrap();
    assert!(cs.complete);
    let ups: Vec<&str> = cs
        .account_upserts
        .iter()
        .map(|a| a.anchor.as_str())
        .collect();
    assert_eq!(ups, vec!["u1"]);
    // without a callback table: a clear configuration error
    let e = idsync_dingtalk::source_with_inbox(&fake.client_config(), inbox(&store)).unwrap_err();
    assert!(e.message().contains("callback"), "{e}");
}
