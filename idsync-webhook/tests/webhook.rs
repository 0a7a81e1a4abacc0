//! The webhook sink end to end: the engine pushes into a receiver that verifies every
//! delivery with the Standard Webhooks reference library (Python `standardwebhooks`).

// test helpers fail the test loudly
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "webhook/receiver.rs"]
mod receiver;

use std::sync::Arc;
use std::time::Duration;

use idsync_core::secret::SecretRef;
use idsync_core::{
    Account, Anchor, DeletionPolicy, Engine, ErrorKind, Guard, Hub, Job, MemoryAdapter,
    MemoryStore, Op, Org, Sink, Store,
};
use idsync_webhook::{
    BreakerConfig, DeliveryOutcome, PayloadMode, Signer, WebhookConfig, WebhookSink,
};
use receiver::receiver;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// A secret file of its own (secrets go by reference, never in the config).
fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretRef {
    let p = dir.path().join(name);
    std::fs::write(&p, value).expect("write secret");
    SecretRef::File(p)
}

fn config(url: String, secrets: Vec<SecretRef>) -> WebhookConfig {
    WebhookConfig {
        secrets,
        retry_schedule: vec![
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::from_millis(20),
        ],
        jitter: 0.1,
        ..WebhookConfig::new(url, SecretRef::Env(String::new()))
    }
}

fn sample() -> (Vec<Org>, Vec<Account>) {
    let orgs = vec![
        Org::new("root", None, "公司"),
        Org::new("rd", Some(Anchor::from("root")), "研发中心"),
        Org::new("hr", Some(Anchor::from("root")), "人力资源"),
    ];
    let mut accounts = Vec::new();
    for (a, user, org) in [
        ("1", "zhangsan", "rd"),
        ("2", "lisi", "hr"),
        ("3", "alice", "rd"),
    ] {
        let mut acc = Account::new(a, user);
        acc.display_name = Some(user.to_uppercase());
        acc.email = Some(format!("{user}@example.com"));
        acc.orgs = vec![Anchor::from(org)];
        accounts.push(acc);
    }
    (orgs, accounts)
}

fn types(records: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = records
        .iter()
        .map(|r| r["body"]["type"].as_str().unwrap_or("?").to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_pushes_through_the_hub_and_every_delivery_verifies() {
    let rx = receiver();
    let path = rx.path("e2e");
    let dir = tempfile::tempdir().unwrap();
    let (orgs, accounts) = sample();
    let source = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let inbound = Job::new("hr-in", source.clone(), hub.clone())
        .with_guard(Guard::off())
        .with_deletion(DeletionPolicy::Delete);
    let mut cfg = config(
        format!("{}{path}?token=QUERYSECRET", rx.url),
        vec![secret_file(&dir, "s", &rx.secret)],
    );
    cfg.payload = PayloadMode::Full;
    cfg.name = Some("crm".into());
    let seen = Arc::new(std::sync::Mutex::new(
        Vec::<(String, DeliveryOutcome)>::new(),
    ));
    let log = seen.clone();
    let sink = Arc::new(
        WebhookSink::new(cfg)
            .unwrap()
            .with_lookup(hub.clone())
            .with_observer(move |ep: &str, o: DeliveryOutcome| {
                log.lock().unwrap().push((ep.to_owned(), o))
            }),
    );
    let push = Job::new("crm-push", hub.clone(), sink.clone())
        .with_guard(Guard::off())
        .with_deletion(DeletionPolicy::Delete);

    let r = engine.run(&inbound).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let r = engine.run(&push).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let got = rx.delivered(&path).await;
    assert_eq!(
        types(&got),
        [
            "account.created",
            "account.created",
            "account.created",
            "org.created",
            "org.created",
            "org.created"
        ]
    );
    assert!(
        rx.received(&path)
            .await
            .iter()
            .all(|r| r["verified"] == json!(true))
    );
    assert!(
        got.iter().all(|r| r["query"] == json!("token=QUERYSECRET")),
        "the query is sent"
    );
    let zs = got
        .iter()
        .find(|r| r["body"]["data"]["entity"]["username"] == json!("zhangsan"))
        .expect("a full payload carries the entity");
    assert_eq!(zs["body"]["data"]["kind"], json!("account"));
    assert_eq!(zs["body"]["data"]["op"], json!("create_account"));
    assert!(zs["body"]["data"]["version"].as_u64().is_some());
    assert!(zs["body"]["timestamp"].as_str().is_some());
    assert!(zs["id"].as_str().is_some_and(|i| i.starts_with("msg_")));
    assert_eq!(sink.stats().delivered, 6);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|(ep, o)| ep == "crm" && *o == DeliveryOutcome::Delivered)
    );

    // The sink cannot be read: the second plan is against the shadow copy, and empty.
    assert!(engine.plan(&push).await.unwrap().is_empty());
    let r = engine.run(&push).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    assert_eq!(
        rx.delivered(&path).await.len(),
        6,
        "nothing delivered twice"
    );

    // An update and a delete travel source → hub → endpoint.
    source
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("1")).unwrap().title = Some("架构师".into());
            d.accounts.remove(&Anchor::from("2"));
        })
        .unwrap();
    engine.run(&inbound).await.unwrap();
    let r = engine.run(&push).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let got = rx.delivered(&path).await;
    assert_eq!(got.len(), 8);
    let upd = got
        .iter()
        .find(|r| r["body"]["type"] == json!("account.updated"))
        .expect("account.updated");
    assert_eq!(upd["body"]["data"]["changes"]["title"], json!("架构师"));
    assert_eq!(
        upd["body"]["data"]["entity"]["title"],
        json!("架构师"),
        "looked up in the hub"
    );
    let del = got
        .iter()
        .find(|r| r["body"]["type"] == json!("account.deleted"))
        .expect("account.deleted");
    assert!(del["body"]["data"].get("entity").is_none());
    assert!(engine.plan(&push).await.unwrap().is_empty());
}

async fn one_account(sink: &WebhookSink, a: &str) -> idsync_core::Result<idsync_core::Applied> {
    sink.apply(&Op::CreateAccount {
        account: Account::new(a, format!("user{a}")),
    })
    .await
}

#[tokio::test]
async fn rotated_secrets_verify_with_either_side_and_a_wrong_one_is_refused() {
    let rx = receiver();
    let dir = tempfile::tempdir().unwrap();
    // The receiver still knows only the old secret; the sink signs with the new one too.
    let path = rx.path("rotated-old");
    let new = Signer::generate_secret();
    let sink = WebhookSink::new(config(
        format!("{}{path}", rx.url),
        vec![
            secret_file(&dir, "new", new.expose_secret()),
            secret_file(&dir, "old", &rx.secret),
        ],
    ))
    .unwrap();
    one_account(&sink, "1").await.unwrap();
    let got = rx.received(&path).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["verified"], json!(true), "{got:?}");
    assert_eq!(got[0]["signature"].as_str().unwrap().split(' ').count(), 2);

    // The receiver already switched to the new secret; the sink still signs with both.
    let path = rx.path("rotated-new");
    let new = Signer::generate_secret();
    rx.control(json!({"path": path, "secret": new.expose_secret()}))
        .await;
    let sink = WebhookSink::new(config(
        format!("{}{path}", rx.url),
        vec![
            secret_file(&dir, "new2", new.expose_secret()),
            secret_file(&dir, "old2", &rx.secret),
        ],
    ))
    .unwrap();
    one_account(&sink, "2").await.unwrap();
    assert_eq!(rx.delivered(&path).await.len(), 1);

    // A secret the receiver does not know: refused (401), a permanent error, not retried.
    let path = rx.path("wrong-secret");
    let wrong = Signer::generate_secret();
    let sink = WebhookSink::new(config(
        format!("{}{path}", rx.url),
        vec![secret_file(&dir, "wrong", wrong.expose_secret())],
    ))
    .unwrap();
    let e = one_account(&sink, "3").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!e.is_temporary());
    let got = rx.received(&path).await;
    assert_eq!(got.len(), 1, "a permanent refusal is not retried: {got:?}");
    assert_eq!(got[0]["verified"], json!(false));
    assert!(!e.to_string().contains(wrong.expose_secret()));
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_later_ops_fail_fast() {
    let rx = receiver();
    let dir = tempfile::tempdir().unwrap();
    let path = rx.path("gone");
    rx.script(&path, 410, None, None).await;
    let sink = WebhookSink::new(config(
        format!("{}{path}?sig=SECRETQ", rx.url),
        vec![secret_file(&dir, "s", &rx.secret)],
    ))
    .unwrap();
    let e = one_account(&sink, "1").await.unwrap_err();
    assert!(!e.is_temporary(), "{e}");
    assert!(sink.is_disabled());
    let later = one_account(&sink, "2").await.unwrap_err();
    assert!(!later.is_temporary());
    let text = later.to_string();
    assert!(
        text.contains(&format!("{}{path}", rx.url)),
        "names the endpoint: {text}"
    );
    assert!(text.contains("410"), "{text}");
    assert!(!text.contains("SECRETQ"), "never the query: {text}");
    assert_eq!(
        rx.received(&path).await.len(),
        1,
        "one attempt, then fail fast"
    );
    assert!(idsync_core::Source::check(&sink).await.is_err());
    assert_eq!(sink.stats().disabled, 1);
    assert_eq!(sink.stats().quarantined, 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_retry_after_is_honoured() {
    let rx = receiver();
    let dir = tempfile::tempdir().unwrap();
    let path = rx.path("retry");
    rx.script(&path, 429, Some("1"), Some(1)).await;
    rx.script(&path, 503, None, Some(1)).await;
    let sink = WebhookSink::new(config(
        format!("{}{path}", rx.url),
        vec![secret_file(&dir, "s", &rx.secret)],
    ))
    .unwrap();
    one_account(&sink, "1").await.unwrap();
    let got = rx.received(&path).await;
    let answered: Vec<&Value> = got.iter().map(|r| &r["answered"]).collect();
    assert_eq!(answered, [&json!(429), &json!(503), &json!(200)]);
    assert!(got.iter().all(|r| r["verified"] == json!(true)));
    // one message: the same id on every attempt, each attempt signed with its own time
    assert!(got.iter().all(|r| r["id"] == got[0]["id"]));
    let ts: Vec<i64> = got
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ts[1] > ts[0],
        "the second attempt waited for Retry-After: 1 (timestamps {ts:?})"
    );
    let s = sink.stats();
    assert_eq!((s.retried, s.delivered, s.failed), (2, 1, 0));

    // A schedule spent on 500s: a persistent error, after exactly as many attempts.
    let path = rx.path("spent");
    rx.script(&path, 500, None, None).await;
    let sink = WebhookSink::new(config(
        format!("{}{path}", rx.url),
        vec![secret_file(&dir, "s2", &rx.secret)],
    ))
    .unwrap();
    let e = one_account(&sink, "2").await.unwrap_err();
    assert_eq!(e.status(), idsync_core::ErrorStatus::Persistent, "{e}");
    assert_eq!(rx.received(&path).await.len(), 3);
}

#[tokio::test]
async fn the_breaker_opens_when_most_deliveries_fail() {
    let rx = receiver();
    let dir = tempfile::tempdir().unwrap();
    let path = rx.path("breaker");
    rx.script(&path, 500, None, None).await;
    let mut cfg = config(
        format!("{}{path}", rx.url),
        vec![secret_file(&dir, "s", &rx.secret)],
    );
    cfg.retry_schedule = vec![Duration::ZERO, Duration::from_millis(1)];
    cfg.breaker = BreakerConfig {
        window: 4,
        failure_ratio: 0.75,
        cooldown_secs: 600,
    };
    let sink = WebhookSink::new(cfg).unwrap();
    for a in ["1", "2"] {
        let e = one_account(&sink, a).await.unwrap_err();
        assert!(e.is_temporary() || e.status() == idsync_core::ErrorStatus::Persistent);
    }
    let e = one_account(&sink, "3").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary(), "quarantine is temporary: {e}");
    assert!(e.to_string().contains("quarantined"), "{e}");
    assert!(e.retry_after().is_some());
    assert_eq!(
        rx.received(&path).await.len(),
        4,
        "nothing sent while quarantined"
    );
    assert_eq!(sink.stats().quarantined, 1);

    // Through the engine: a push job into the failing endpoint fails its ops fast.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (orgs, accounts) = sample();
    let src = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
    let job = Job::new("push", src, Arc::new(sink)).with_guard(Guard::off());
    let r = Engine::new(store).run(&job).await.unwrap();
    // the root org fails fast; what depends on it is skipped
    assert_eq!(r.counts.applied, 0, "{r:#?}");
    assert_eq!(r.counts.failed + r.counts.skipped, 6, "{r:#?}");
    assert!(r.counts.failed >= 1);
    assert!(
        r.outcomes
            .iter()
            .filter_map(|o| o.error.as_ref())
            .all(|e| e.message.contains("quarantined")),
        "{r:#?}"
    );
    assert_eq!(
        rx.received(&path).await.len(),
        4,
        "the open breaker sent nothing"
    );
}
