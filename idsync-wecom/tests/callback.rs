//! The `change_contact` callback endpoint: URL verification with the official vector,
//! forged / replayed / foreign requests refused, and events from the fake becoming change
//! sets (re-read, renames as renames, explicit "not found" as deletes, failures not
//! advancing the cursor), and a rename through the engine keeping its hub account.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idsync_core::{
    Account, Anchor, Engine, EntityKind, Guard, Hub, Job, MemoryStore, Op, OpKind, Org, Rename,
    Sink, Source, Status, Store,
};
use idsync_wecom::event::{ContactChange, contact_event_xml};
use idsync_wecom::fake::{FakeConfig, FakeWeCom};
use idsync_wecom::{
    CallbackCrypto, CallbackKeys, WeComEventLog, WeComSink, WeComSource, callback_router,
};
use secrecy::SecretString;
use serde_json::json;

// The official sample's Token, EncodingAESKey and CorpID (callback/Sample.py).
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const AES_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

fn keys(window: Duration) -> CallbackKeys {
    CallbackKeys {
        token: SecretString::from(TOKEN.to_owned()),
        aes_key: SecretString::from(AES_KEY.to_owned()),
        replay_window: window,
        event_log_capacity: 100,
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn url_verification_answers_the_official_echostr_raw() {
    // the official vector is from 2016: a window wide enough to accept it
    let window = Duration::from_secs(now_secs() - 1_476_416_373 + 3600);
    let log = Arc::new(WeComEventLog::new(10));
    let url = serve(callback_router(&keys(window), CORP, log).unwrap()).await;
    let http = reqwest::Client::new();
    let echostr =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    let verify = |sig: &'static str, nonce: &'static str| {
        http.get(&url)
            .query(&[
                ("msg_signature", sig),
                ("timestamp", "1476416373"),
                ("nonce", nonce),
                ("echostr", echostr),
            ])
            .send()
    };
    let r = verify("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "47744683")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"1288432023552776189");
    // the same request again is a replay
    let r = verify("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "47744683")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // a forged signature
    let r = verify("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebec", "47744684")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn events_are_refused_when_forged_replayed_stale_or_foreign() {
    let log = Arc::new(WeComEventLog::new(10));
    let url =
        serve(callback_router(&keys(Duration::from_secs(300)), CORP, log.clone()).unwrap()).await;
    let http = reqwest::Client::new();
    let crypto = CallbackCrypto::new(
        idsync_wecom::PROVIDER,
        SecretString::from(TOKEN.to_owned()),
        &SecretString::from(AES_KEY.to_owned()),
        CORP,
    )
    .unwrap();
    let post = |body: String, sig: String, ts: String, nonce: &'static str| {
        http.post(&url)
            .query(&[
                ("msg_signature", sig),
                ("timestamp", ts),
                ("nonce", nonce.to_owned()),
            ])
            .body(body)
            .send()
    };
    let xml = contact_event_xml(
        CORP,
        1_700_000_000,
        &ContactChange::UserCreated {
            userid: "zhangsan".into(),
        },
    );
    let ts = now_secs().to_string();
    let (body, sig) = idsync_wecom::crypto::seal_event(&crypto, &xml, &ts, "n1", "").unwrap();
    let r = post(body.clone(), sig.clone(), ts.clone(), "n1")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");
    assert_eq!(log.len(), 1);
    // replayed
    assert_eq!(
        post(body.clone(), sig.clone(), ts.clone(), "n1")
            .await
            .unwrap()
            .status(),
        403
    );
    // forged: the signature of another body
    let (other, _) = idsync_wecom::crypto::seal_event(&crypto, &xml, &ts, "n2", "").unwrap();
    assert_eq!(
        post(other, sig, ts.clone(), "n2").await.unwrap().status(),
        403
    );
    // stale timestamp, properly signed
    let old = (now_secs() - 3600).to_string();
    let (body, sig) = idsync_wecom::crypto::seal_event(&crypto, &xml, &old, "n3", "").unwrap();
    assert_eq!(post(body, sig, old, "n3").await.unwrap().status(), 403);
    // encrypted for another corp (same keys), properly signed
    let foreign = CallbackCrypto::new(
        idsync_wecom::PROVIDER,
        SecretString::from(TOKEN.to_owned()),
        &SecretString::from(AES_KEY.to_owned()),
        "wwsomeoneelse",
    )
    .unwrap();
    let (body, sig) = idsync_wecom::crypto::seal_event(&foreign, &xml, &ts, "n4", "").unwrap();
    assert_eq!(
        post(body, sig, ts.clone(), "n4").await.unwrap().status(),
        403
    );
    // not XML
    assert_eq!(
        post("{}".into(), "x".into(), ts, "n5")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(log.len(), 1, "nothing refused was recorded");
}

struct Wired {
    fake: FakeWeCom,
    sink: WeComSink,
}

async fn wired() -> Wired {
    let fake = FakeWeCom::start(FakeConfig {
        corp_id: CORP.into(),
        contact_secret: Some("contact".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let k = keys(Duration::from_secs(300));
    let log = Arc::new(WeComEventLog::new(100));
    let url = serve(callback_router(&k, CORP, log.clone()).unwrap()).await;
    fake.register_callback(
        url,
        CallbackCrypto::new(idsync_wecom::PROVIDER, k.token.clone(), &k.aes_key, CORP).unwrap(),
    );
    let source = WeComSource::with_events(fake.connection(), log).unwrap();
    Wired {
        fake,
        sink: WeComSink::from_source(source),
    }
}

fn person(userid: &str, org: &str) -> Account {
    let mut a = Account::new(userid, userid);
    a.display_name = Some(format!("{userid} name"));
    a.email = Some(format!("{userid}@example.com"));
    a.orgs = vec![Anchor::new(org)];
    a
}

#[tokio::test]
async fn events_become_change_sets_by_re_reading() {
    let w = wired().await;
    let c0 = w.sink.current_cursor().await.unwrap();
    let dept = w
        .sink
        .apply(&Op::CreateOrg {
            org: Org::new("proposal", None, "研发中心"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    w.sink
        .apply(&Op::CreateAccount {
            account: person("zhangsan", dept.as_str()),
        })
        .await
        .unwrap();
    let cs = w.sink.changes(&c0).await.unwrap();
    assert!(cs.complete);
    assert_eq!(cs.org_upserts.len(), 1);
    assert_eq!(cs.org_upserts[0].name, "研发中心");
    assert_eq!(cs.account_upserts.len(), 1);
    // re-read: the full state, although the event carried the userid only
    assert_eq!(
        cs.account_upserts[0].email.as_deref(),
        Some("zhangsan@example.com")
    );
    assert!(cs.account_deletes.is_empty() && cs.org_deletes.is_empty());
    let c1 = cs.cursor.unwrap();
    assert!(w.sink.changes(&c1).await.unwrap().is_empty());

    // a rename in the console: update_user with NewUserID → a rename and an upsert of the
    // new userid, no delete of the old one
    let r = w
        .fake
        .admin_call(
            "user/update",
            &[],
            json!({"userid": "zhangsan", "new_userid": "zhangsan001"}),
        )
        .await;
    assert_eq!(r["errcode"], 0, "{r}");
    let cs = w.sink.changes(&c1).await.unwrap();
    assert_eq!(cs.account_upserts.len(), 1);
    assert_eq!(cs.account_upserts[0].anchor.as_str(), "zhangsan001");
    assert_eq!(
        cs.account_renames,
        vec![Rename {
            from: Anchor::new("zhangsan"),
            to: Anchor::new("zhangsan001")
        }]
    );
    assert!(cs.account_deletes.is_empty(), "a rename is never a delete");
    let c2 = cs.cursor.unwrap();

    // a re-read that fails is an error (the cursor stays), never a delete
    w.fake
        .admin_call(
            "user/update",
            &[],
            json!({"userid": "zhangsan001", "position": "经理"}),
        )
        .await;
    w.fake.fail_next("user/get", 1, -1);
    let e = w.sink.changes(&c2).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let cs = w.sink.changes(&c2).await.unwrap();
    assert_eq!(cs.account_upserts[0].title.as_deref(), Some("经理"));
    let c3 = cs.cursor.unwrap();

    // deletes: the explicit "not found" of the re-read
    w.sink
        .apply(&Op::DeleteAccount {
            anchor: Anchor::new("zhangsan001"),
        })
        .await
        .unwrap();
    w.sink
        .apply(&Op::DeleteOrg {
            anchor: dept.clone(),
        })
        .await
        .unwrap();
    let cs = w.sink.changes(&c3).await.unwrap();
    assert_eq!(cs.account_deletes, vec![Anchor::new("zhangsan001")]);
    assert_eq!(cs.org_deletes, vec![dept]);
    assert!(cs.account_upserts.is_empty() && cs.org_upserts.is_empty());

    // a cursor of another log is stale: a full sync is needed
    let stale = w
        .sink
        .changes(&idsync_core::SyncCursor("0000:1".into()))
        .await
        .unwrap();
    assert!(!stale.complete);
    assert!(w.fake.stats().events_delivered >= 6);
    assert_eq!(w.fake.stats().events_failed, 0);
}

#[tokio::test]
async fn a_renamed_userid_keeps_its_hub_account_and_link() {
    let w = wired().await;
    let dept = w
        .sink
        .apply(&Op::CreateOrg {
            org: Org::new("proposal", None, "研发中心"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    for u in ["zhangsan", "lisi"] {
        w.sink
            .apply(&Op::CreateAccount {
                account: person(u, dept.as_str()),
            })
            .await
            .unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let source: Arc<dyn Source> = Arc::new(w.sink);
    let job = Job::new("wecom-to-hub", source, Arc::new(Hub::new(store.clone())))
        .with_guard(Guard::off());
    let first = engine.run_changes(&job).await.unwrap(); // no cursor yet: a full run
    assert_eq!(first.counts.failed, 0, "{first:#?}");
    assert_eq!(first.counts.by_op.get(&OpKind::CreateAccount), Some(&2));
    let links = engine.links(&job.name, EntityKind::Account).await.unwrap();
    let hub_of = |links: &[idsync_core::Link], src: &str| {
        links
            .iter()
            .find(|l| l.source.as_str() == src)
            .map(|l| l.target.clone())
    };
    let hub_zhangsan = hub_of(&links, "zhangsan").unwrap();

    // the console renames zhangsan (update_user with NewUserID) and changes the title
    let r = w
        .fake
        .admin_call(
            "user/update",
            &[],
            json!({"userid": "zhangsan", "new_userid": "zhangsan001", "position": "经理"}),
        )
        .await;
    assert_eq!(r["errcode"], 0, "{r}");
    let report = engine.run_changes(&job).await.unwrap();
    assert_eq!(report.counts.failed, 0, "{report:#?}");
    assert!(report.cursor_committed);
    for kind in [
        OpKind::CreateAccount,
        OpKind::DeleteAccount,
        OpKind::DisableAccount,
    ] {
        assert_eq!(
            report.counts.by_op.get(&kind),
            None,
            "{kind:?}: {report:#?}"
        );
    }
    assert_eq!(report.counts.by_op.get(&OpKind::UpdateAccount), Some(&1));

    // the same hub account, now linked from the new userid; no duplicate person
    let links = engine.links(&job.name, EntityKind::Account).await.unwrap();
    assert_eq!(links.len(), 2, "{links:#?}");
    assert_eq!(hub_of(&links, "zhangsan001"), Some(hub_zhangsan.clone()));
    assert_eq!(hub_of(&links, "zhangsan"), None);
    let hub = store.hub_account(&hub_zhangsan).await.unwrap().unwrap();
    assert_eq!(hub.status, Status::Active);
    assert_eq!(hub.title.as_deref(), Some("经理"));
    let all = idsync_core::source::collect_accounts(&Hub::new(store.clone()))
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    // and a full run agrees: nothing to do
    assert!(engine.plan(&job).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_config_with_a_callback_table_builds_source_and_endpoint() {
    let dir = std::env::temp_dir().join(format!("idsync-wecom-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, value) in [("secret", "app-secret"), ("token", TOKEN), ("aes", AES_KEY)] {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let cfg: idsync_wecom::WeComConfig = serde_json::from_value(json!({
        "corp_id": CORP,
        "secret_file": dir.join("secret"),
        "callback": {"token_file": dir.join("token"), "aes_key_file": dir.join("aes")}
    }))
    .unwrap();
    let (source, router) = idsync_wecom::source_with_callbacks(&cfg).unwrap();
    assert!(source.capabilities().changes);
    let c0 = source.current_cursor().await.unwrap();
    // the endpoint feeds this source's log
    let url = serve(router).await;
    let crypto = CallbackCrypto::new(
        idsync_wecom::PROVIDER,
        SecretString::from(TOKEN.to_owned()),
        &SecretString::from(AES_KEY.to_owned()),
        CORP,
    )
    .unwrap();
    let xml = contact_event_xml(CORP, 1_700_000_000, &ContactChange::DeptDeleted { id: 1 });
    let ts = now_secs().to_string();
    let (body, sig) = idsync_wecom::crypto::seal_event(&crypto, &xml, &ts, "cfg1", "").unwrap();
    let r = reqwest::Client::new()
        .post(&url)
        .query(&[
            ("msg_signature", sig),
            ("timestamp", ts),
            ("nonce", "cfg1".to_owned()),
        ])
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(source.current_cursor().await.unwrap(), c0);
    // without a callback table: a clear configuration error
    let plain: idsync_wecom::WeComConfig = serde_json::from_value(json!({
        "corp_id": CORP, "secret_file": dir.join("secret")
    }))
    .unwrap();
    let e = idsync_wecom::source_with_callbacks(&plain).unwrap_err();
    assert!(e.message().contains("callback"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_config_builds_source_and_endpoint_over_a_store_inbox() {
    let dir = std::env::temp_dir().join(format!("idsync-wecom-inbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, value) in [("secret", "app-secret"), ("token", TOKEN), ("aes", AES_KEY)] {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let cfg: idsync_wecom::WeComConfig = serde_json::from_value(json!({
        "corp_id": CORP,
        "secret_file": dir.join("secret"),
        "callback": {"token_file": dir.join("token"), "aes_key_file": dir.join("aes")}
    }))
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let inbox = |store: &Arc<dyn Store>| -> Arc<idsync_wecom::WeComEvents> {
        Arc::new(idsync_http::StoreEventLog::<idsync_wecom::Target>::new(
            store.clone(),
            "wecom:test",
        ))
    };
    let (source, router) = idsync_wecom::source_with_inbox(&cfg, inbox(&store)).unwrap();
    assert!(source.capabilities().changes);
    let c0 = source.current_cursor().await.unwrap();
    let url = serve(router).await;
    let crypto = CallbackCrypto::new(
        idsync_wecom::PROVIDER,
        SecretString::from(TOKEN.to_owned()),
        &SecretString::from(AES_KEY.to_owned()),
        CORP,
    )
    .unwrap();
    let xml = contact_event_xml(CORP, 1_700_000_000, &ContactChange::DeptDeleted { id: 7 });
    let ts = now_secs().to_string();
    let (body, sig) = idsync_wecom::crypto::seal_event(&crypto, &xml, &ts, "inb1", "").unwrap();
    let post = |url: String, body: String, sig: String, ts: String| async move {
        reqwest::Client::new()
            .post(&url)
            .query(&[
                ("msg_signature", sig),
                ("timestamp", ts),
                ("nonce", "inb1".to_owned()),
            ])
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        post(url.clone(), body.clone(), sig.clone(), ts.clone()).await,
        200
    );
    // in the store's inbox once answered
    let kept = store.inbox_since("wecom:test", 0, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].targets[0].target, "dept:7");
    assert!(kept[0].targets[0].deleted);
    assert_eq!(
        post(url, body.clone(), sig.clone(), ts.clone()).await,
        403,
        "a replay"
    );
    // a new endpoint on the same store still refuses it
    let (source2, router2) = idsync_wecom::source_with_inbox(&cfg, inbox(&store)).unwrap();
    let url2 = serve(router2).await;
    assert_eq!(
        post(url2, body, sig, ts).await,
        403,
        "a replay after a restart"
    );
    assert_eq!(
        store.inbox_since("wecom:test", 0, 10).await.unwrap().len(),
        1
    );
    // the source's position is the inbox's
    assert_eq!(c0.0, "wecom:test#0");
    assert_eq!(source2.current_cursor().await.unwrap().0, "wecom:test#1");
    // without a callback table: a clear configuration error
    let plain: idsync_wecom::WeComConfig = serde_json::from_value(json!({
        "corp_id": CORP, "secret_file": dir.join("secret")
    }))
    .unwrap();
    let e = idsync_wecom::source_with_inbox(&plain, inbox(&store)).unwrap_err();
    assert!(e.message().contains("callback"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
