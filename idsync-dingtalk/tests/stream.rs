//! Stream mode against the fake DingTalk: connection open with key and secret, ticket,
//! WebSocket, per-message acks, keep-alive pings, reconnect on `disconnect`, events
//! de-duplicated and turned into a change set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use idsync_core::{Anchor, ErrorKind, Source};
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use idsync_dingtalk::{DingTalkSource, EventLog, StreamClient};
use serde_json::json;

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn stream_events_end_up_in_a_change_set() {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let rd = fake.add_dept(1, "研发部");
    fake.add_user("u1", "张三", &[rd]);
    let mut cfg = fake.client_config();
    cfg.stream = Some(fake.stream_config());
    let log = Arc::new(EventLog::new(1000));
    let src = DingTalkSource::with_events(cfg.clone(), log.clone()).unwrap();
    let start = src.current_cursor().await.unwrap();

    let handle = StreamClient::new(&cfg, log.clone()).unwrap().spawn();
    until("a Stream connection", || fake.stream_clients() == 1).await;

    // an event: acked SUCCESS and recorded
    fake.add_user("u3", "王五", &[rd]);
    let eid = fake.stream_event("user_add_org", &json!({"userId": ["u3"]}));
    until("the event's ack", || fake.stream_acks().len() == 1).await;
    let ack = &fake.stream_acks()[0];
    assert_eq!(ack.status.as_deref(), Some("SUCCESS"));
    assert!(ack.message_id.starts_with("fakemsg"));

    // a redelivery of the same event is acked and recorded once
    fake.stream_event_with_id(&eid, "user_add_org", &json!({"userId": ["u3"]}));
    until("the redelivery's ack", || fake.stream_acks().len() == 2).await;
    assert_eq!(handle.stats().events, 1);
    assert_eq!(handle.stats().duplicates, 1);
    assert_eq!(log.len(), 1);

    // keep-alive: a ping is answered with its own data
    let mid = fake.stream_ping(&json!({"opaque": "p-123"}));
    until("the ping's ack", || {
        fake.stream_acks().iter().any(|a| a.message_id == mid)
    })
    .await;
    let pong = fake
        .stream_acks()
        .into_iter()
        .find(|a| a.message_id == mid)
        .unwrap();
    assert_eq!(pong.data, json!({"opaque": "p-123"}).to_string());

    let cs = src.changes(&start).await.unwrap();
    assert!(cs.complete);
    let ups: Vec<&str> = cs
        .account_upserts
        .iter()
        .map(|a| a.anchor.as_str())
        .collect();
    assert_eq!(ups, vec!["u3"]);
    assert_eq!(cs.account_upserts[0].display_name.as_deref(), Some("王五"));

    // the server asks to reconnect: a new connection (new ticket), events keep flowing
    let next = cs.cursor.clone().unwrap();
    fake.stream_disconnect();
    until("a second connection", || {
        fake.stream_connections() == 2 && fake.stream_clients() == 1
    })
    .await;
    let ops = fake.add_dept(rd, "运维组");
    fake.stream_event("org_dept_create", &json!({"deptId": [ops]}));
    fake.stream_event("user_leave_org", &json!({"userId": ["u1"]}));
    until("both acks", || fake.stream_acks().len() == 5).await;
    let cs2 = src.changes(&next).await.unwrap();
    assert_eq!(cs2.org_upserts.len(), 1);
    assert_eq!(cs2.org_upserts[0].name, "运维组");
    assert_eq!(cs2.account_deletes, vec![Anchor::new("u1")]);
    assert_eq!(handle.stats().connections, 2);

    handle.stop().await.unwrap();
    until("the client to close", || fake.stream_clients() == 0).await;
}

#[tokio::test]
async fn bad_credentials_stop_the_client_and_the_secret_stays_out() {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let mut cfg = fake.client_config();
    cfg.app_secret = "wrong-secret-value".to_owned().into();
    cfg.stream = Some(fake.stream_config());
    let client = StreamClient::new(&cfg, Arc::new(EventLog::new(10))).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let e = tokio::time::timeout(Duration::from_secs(10), client.run(rx))
        .await
        .expect("a permanent error ends the loop")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(e.provider_code(), Some("invalidClientIdOrSecret"));
    assert!(!format!("{e:?}").contains("wrong-secret-value"));
    assert_eq!(fake.stream_connections(), 0);
}

#[tokio::test]
async fn plaintext_stream_base_to_a_remote_host_is_refused() {
    let mut cfg = idsync_dingtalk::DingTalkConfig::new("k", "s".to_owned().into());
    cfg.stream = Some(idsync_dingtalk::StreamConfig {
        base_url: "http://api.example.com".into(),
        ..Default::default()
    });
    let e = StreamClient::new(&cfg, Arc::new(EventLog::new(10))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.message().contains("allow_plaintext"));
}
