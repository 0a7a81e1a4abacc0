//! The durable inbox behind the DingTalk callback router, in one process: signed events
//! are in the store before `success`, an `on_events` job applies them (debounced), the
//! lag drops to 0, a replay is refused even by a new server on the same store.

use std::sync::Arc;
use std::time::Duration;

use idsync_core::{Account, EntityKind, Hub, Job, PageRequest, Store};
use idsync_dingtalk::callback::{EventTarget, callback_router};
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use idsync_dingtalk::{CallbackConfig, CallbackCrypto, DingTalkSource};
use idsync_serve::inbox::Inbox;
use idsync_serve::ops::Metrics;
use idsync_serve::schedule::Schedule;
use idsync_serve::server::{ServeJob, ServeOptions, Server};
use idsync_store::SqliteStore;
use secrecy::SecretString;

use super::common::{AES_KEY, CB_TOKEN, signed_push, start, wait_until};

fn server_for(store: Arc<dyn Store>, fake: &FakeDingTalk) -> (Server, Metrics) {
    let metrics = Metrics::new();
    let inbox = Inbox::new(store.clone(), "dingtalk:dt", metrics.clone());
    let log = inbox.events::<EventTarget>();
    let mut cfg = fake.client_config();
    cfg.qps = 1000;
    let cb = CallbackConfig::new(SecretString::from(CB_TOKEN), SecretString::from(AES_KEY));
    let router = callback_router(&cb, &cfg.app_key, log.clone()).unwrap();
    let source = Arc::new(DingTalkSource::with_events(cfg, log).unwrap());
    let job = Job::new("dt-to-hub", source, Arc::new(Hub::new(store.clone())));
    let schedule = Schedule {
        on_events: true,
        debounce: Duration::from_millis(100),
        poll: Duration::from_millis(200),
        ..Schedule::default()
    };
    let server = Server::new(
        store,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeOptions::default()
        },
    )
    .metrics(metrics.clone())
    .callback("/callbacks/dt", router)
    .job(ServeJob::new(job, schedule).with_inbox(inbox));
    (server, metrics)
}

async fn accounts(store: &Arc<dyn Store>) -> Vec<Account> {
    let mut out = Vec::new();
    let mut req = PageRequest::sized(500);
    loop {
        let p = store.hub_accounts(req.clone()).await.unwrap();
        out.extend(p.items);
        match p.next {
            Some(t) => req.token = Some(t),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_reach_the_hub_through_the_store_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let rd = fake.add_dept(1, "研发部");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("hub.db")).await.unwrap());
    let (server, metrics) = server_for(store.clone(), &fake);
    let srv = start(server).await;
    // the first run (no cursor yet) is a full one: the department
    let s = store.clone();
    wait_until(20, "the first full run", move || {
        let s = s.clone();
        async move { s.cursor("dt-to-hub").await.unwrap().is_some() }
    })
    .await;
    let app_key = fake.client_config().app_key;
    let crypto = CallbackCrypto::new(
        idsync_dingtalk::PROVIDER,
        SecretString::from(CB_TOKEN),
        &SecretString::from(AES_KEY),
        app_key,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let url = srv.url("/callbacks/dt");
    let mut first = None;
    for i in 0..30 {
        let id = format!("user{i:02}");
        fake.add_user(&id, &format!("名{i}"), &[rd]);
        let (q, body) = signed_push(
            &crypto,
            &format!("n{i}"),
            &serde_json::json!({"EventType": "user_add_org", "UserId": [id], "CorpId": "ding1"}),
        );
        let r = http.post(&url).query(&q).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let reply: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            crypto
                .decrypt(reply["encrypt"].as_str().unwrap())
                .unwrap()
                .message,
            "success"
        );
        first.get_or_insert((q, body));
    }
    // acknowledged = in the store
    assert_eq!(store.inbox_head("dingtalk:dt").await.unwrap(), 30);
    let s = store.clone();
    wait_until(30, "30 accounts in the hub", move || {
        let s = s.clone();
        async move { accounts(&s).await.len() == 30 }
    })
    .await;
    let s = store.clone();
    let m = metrics.clone();
    wait_until(10, "inbox lag 0", move || {
        let (s, m) = (s.clone(), m.clone());
        async move {
            let c = s.cursor("dt-to-hub").await.unwrap();
            c.is_some_and(|c| c.0 == "dingtalk:dt#30")
                && m.get("idsync_inbox_lag", &[("stream", "dingtalk:dt")]) == 0.0
        }
    })
    .await;
    for a in accounts(&store).await {
        let trail = store.audit(EntityKind::Account, &a.anchor).await.unwrap();
        assert_eq!(trail.len(), 1, "{} applied once: {trail:?}", a.anchor);
    }
    assert_eq!(
        metrics.get(
            "idsync_inbox_events_total",
            &[("stream", "dingtalk:dt"), ("outcome", "recorded")]
        ),
        30.0
    );
    // consumed events are trimmed; the replay keys stay
    assert!(
        store
            .inbox_since("dingtalk:dt", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    srv.shutdown().await;

    // A new server on the same store still refuses a replay of the first push.
    let (server, _) = server_for(store.clone(), &fake);
    let srv = start(server).await;
    let (q, body) = first.unwrap();
    let r = http
        .post(srv.url("/callbacks/dt"))
        .query(&q)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a replay after a restart is refused");
    assert_eq!(store.inbox_head("dingtalk:dt").await.unwrap(), 30);
    // A forged signature is refused and records nothing.
    let mut forged = q.clone();
    forged[2].1 = "fresh-nonce".into();
    let r = http
        .post(srv.url("/callbacks/dt"))
        .query(&forged)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(store.inbox_head("dingtalk:dt").await.unwrap(), 30);
    srv.shutdown().await;
}
