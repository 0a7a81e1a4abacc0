//! Two-way distribution through the hub, end to end: a real slapd on one side, the stateful
//! fake DingTalk (its API writes pushed as signed, encrypted event callbacks) on the other,
//! a memory hub in between. A rename and a move travel AD -> hub -> DingTalk and DingTalk
//! -> hub -> AD; every write an outbound job makes comes back to its spoke's inbound job as
//! a change, and plans nothing; a further cycle plans nothing at all. Field authority: a
//! title change made in DingTalk, where AD owns `title`, is refused and reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use idsync_core::engine::{Distribution, DistributionReport, JobOutcome};
use idsync_core::mapping::EntityMapping;
use idsync_core::model::ACCOUNT_FIELDS;
use idsync_core::{
    Engine, EntityKind, FieldAuthority, FieldRule, Guard, Hub, Job, Mapping, MemoryStore, Op,
    OpKind, Patch, Report, Sink, Source, Store, Target,
};
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use idsync_dingtalk::{
    CallbackConfig, CallbackCrypto, DingTalkConfig, DingTalkSink, DingTalkSource, EventLog,
    callback_router,
};
use secrecy::SecretString;
use serde_json::json;

use super::common::{add, admin, namespace, openldap, read};
use super::{add_owned, person};

/// The fields both spokes hold and both directions carry.
fn mapping() -> Mapping {
    let copy = |f: &str| FieldRule::copy(f, f);
    Mapping {
        // every typed field but the manager (not read from OpenLDAP here) and the status
        // (DingTalk has no disabled state)
        accounts: EntityMapping::rules(
            ACCOUNT_FIELDS
                .iter()
                .filter(|f| !matches!(**f, "manager" | "status"))
                .map(|f| copy(f))
                .collect(),
        ),
        orgs: EntityMapping::rules(vec![copy("name"), copy("parent")]),
    }
}

fn job(name: &str, source: Arc<dyn Source>, target: Target) -> Job {
    Job::new(name, source, target)
        .with_mapping(mapping())
        .with_guard(Guard::off())
}

fn ran<'a>(r: &'a DistributionReport, job: &str) -> &'a Report {
    r.job(job)
        .and_then(|j| j.report())
        .unwrap_or_else(|| panic!("job {job} did not run: {r:#?}"))
}

fn ops(r: &Report, kind: OpKind) -> usize {
    r.counts.by_op.get(&kind).copied().unwrap_or(0)
}

/// A DingTalk tenant whose API writes come back as events into `log`.
async fn dingtalk_with_events() -> (FakeDingTalk, DingTalkConfig, Arc<EventLog>) {
    let fake = FakeDingTalk::start(FakeConfig::default()).await.unwrap();
    let mut cfg = fake.client_config();
    cfg.extra_attrs = false;
    let cb = CallbackConfig::new(
        SecretString::from("callback-token".to_owned()),
        SecretString::from("o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus".to_owned()),
    );
    let log = Arc::new(EventLog::new(10_000));
    let router = callback_router(&cb, &cfg.app_key, log.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    fake.register_callback(
        url,
        CallbackCrypto::new(
            idsync_dingtalk::PROVIDER,
            cb.token.clone(),
            &cb.aes_key,
            cfg.app_key.clone(),
        )
        .unwrap(),
    );
    (fake, cfg, log)
}

fn dept_id(fake: &FakeDingTalk, name: &str) -> i64 {
    let found: Vec<i64> = fake
        .depts()
        .into_iter()
        .filter(|d| d.name == name)
        .map(|d| d.dept_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "departments named {name}: {:?}",
        fake.depts()
    );
    found[0]
}

fn entry_uuid(e: &ldap3::SearchEntry) -> String {
    e.attrs["entryUUID"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_move_travel_both_ways_through_the_hub_and_the_hub_goes_quiet() {
    let s = openldap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    for ou in [
        format!("ou=Sales,{ns}"),
        format!("ou=East,ou=Sales,{ns}"),
        format!("ou=RD,{ns}"),
    ] {
        add(&mut ldap, &ou, &[("objectClass", &["organizationalUnit"])]).await;
    }
    let people = [
        (
            "alice",
            "Alice",
            "ou=Sales",
            "13800000001",
            "E1",
            "Engineer",
        ),
        (
            "bob",
            "Bob",
            "ou=East,ou=Sales",
            "13800000002",
            "E2",
            "Sales Rep",
        ),
        ("carol", "Carol", "ou=RD", "13800000003", "E3", "Researcher"),
    ];
    for (uid, name, ou, mobile, number, title) in people {
        let mut attrs = person(uid, &[]);
        attrs.push(("displayName", vec![name.to_owned()]));
        attrs.push(("mail", vec![format!("{uid}@example.com")]));
        attrs.push(("mobile", vec![mobile.to_owned()]));
        attrs.push(("employeeNumber", vec![number.to_owned()]));
        attrs.push(("title", vec![title.to_owned()]));
        add_owned(&mut ldap, &format!("uid={uid},{ou},{ns}"), attrs).await;
    }

    let (fake, dt_cfg, log) = dingtalk_with_events().await;
    let dt_source = DingTalkSource::with_events(dt_cfg.clone(), log).unwrap();
    let dt_sink = Arc::new(DingTalkSink::from_source(dt_source.clone()));
    // An administrator working in DingTalk: the same API, so the same event pushes.
    let dt_admin = DingTalkSink::new(dt_cfg).unwrap();
    let ad = Arc::new(s.directory(&ns));

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let mut authority = FieldAuthority::new();
    authority
        .set(EntityKind::Account, "title", "ad-in")
        .unwrap();
    let dist = Distribution::new(Engine::new(store.clone()))
        .with_job(job("ad-in", ad.clone(), hub.clone().into()))
        .unwrap()
        .with_job(job("dingtalk-in", Arc::new(dt_source), hub.clone().into()))
        .unwrap()
        .with_job(job("hub-dingtalk", hub.clone(), dt_sink.into()))
        .unwrap()
        .with_job(job("hub-ad", hub.clone(), ad.clone().into()))
        .unwrap()
        .with_authority(authority)
        .unwrap();

    // 1. First pass: AD into the hub, the hub out to DingTalk; AD already agrees.
    let r = dist.cycle().await;
    assert_eq!(r.failed().count(), 0, "{r:#?}");
    assert_eq!(
        ran(&r, "ad-in").counts.applied,
        6,
        "3 OUs, 3 people: {r:#?}"
    );
    assert_eq!(ran(&r, "hub-dingtalk").counts.applied, 6, "{r:#?}");
    assert_eq!(ran(&r, "hub-ad").counts.planned, 0, "{r:#?}");
    let east = dept_id(&fake, "East");
    let sales = dept_id(&fake, "Sales");
    assert_eq!(fake.dept(east).unwrap().parent_id, Some(sales));
    assert_eq!(fake.user("bob").unwrap().dept_id_list, vec![east]);
    // DingTalk pushed an event for each of those creates: the echo links, and plans nothing.
    let echo = dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    assert_eq!(ran(&echo, "dingtalk-in").counts.linked, 6, "{echo:#?}");
    assert!(matches!(
        echo.job("hub-dingtalk").unwrap().outcome,
        JobOutcome::UpToDate
    ));

    // 2. In AD: rename an OU, move a person. AD -> hub -> DingTalk in one pass.
    let rd = entry_uuid(
        &read(&mut ldap, &format!("ou=RD,{ns}"), &["entryUUID"])
            .await
            .unwrap(),
    );
    ldap.modifydn(&format!("ou=RD,{ns}"), "ou=Research", true, None)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap.modifydn(
        &format!("uid=bob,ou=East,ou=Sales,{ns}"),
        "uid=bob",
        true,
        Some(&format!("ou=Research,{ns}")),
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let r = dist.cycle().await;
    assert_eq!(r.failed().count(), 0, "{r:#?}");
    let inbound = ran(&r, "ad-in");
    assert_eq!(ops(inbound, OpKind::UpdateOrg), 1, "{inbound:#?}");
    assert_eq!(ops(inbound, OpKind::UpdateAccount), 1, "{inbound:#?}");
    assert_eq!(
        inbound.counts.applied, 2,
        "a rename and a move: {inbound:#?}"
    );
    let out = ran(&r, "hub-dingtalk");
    assert_eq!(ops(out, OpKind::UpdateOrg), 1, "{out:#?}");
    assert_eq!(ops(out, OpKind::UpdateAccount), 1, "{out:#?}");
    assert_eq!(
        ran(&r, "hub-ad").counts.planned,
        0,
        "AD is where it came from"
    );
    let research = dept_id(&fake, "Research");
    assert_eq!(fake.user("bob").unwrap().dept_id_list, vec![research]);
    assert_eq!(
        store
            .hub_org(&rd.clone().into())
            .await
            .unwrap()
            .unwrap()
            .name,
        "Research"
    );
    // DingTalk's events of those two writes come back: nothing to do; then quiet.
    let echo = dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    assert!(ran(&echo, "dingtalk-in").counts.planned == 0, "{echo:#?}");

    // 3. In DingTalk: rename a department, move a person, and change a title (AD owns it).
    let patch = |field: &str, value: serde_json::Value| -> Patch {
        [(field.to_owned(), value)].into_iter().collect()
    };
    let console = [
        Op::UpdateOrg {
            anchor: east.to_string().into(),
            changes: patch("name", json!("Oost")),
        },
        Op::UpdateAccount {
            anchor: "carol".into(),
            changes: patch("orgs", json!([sales.to_string()])),
        },
        Op::UpdateAccount {
            anchor: "alice".into(),
            changes: patch("title", json!("Chief Seller")),
        },
    ];
    for op in &console {
        dt_admin.apply(op).await.unwrap();
    }
    let r = dist.cycle().await;
    assert_eq!(r.failed().count(), 0, "{r:#?}");
    let inbound = ran(&r, "dingtalk-in");
    assert_eq!(ops(inbound, OpKind::UpdateOrg), 1, "{inbound:#?}");
    assert_eq!(ops(inbound, OpKind::UpdateAccount), 1, "{inbound:#?}");
    assert_eq!(inbound.counts.applied, 2, "{inbound:#?}");
    // The title is AD's: not applied, and reported with its owner.
    assert_eq!(inbound.counts.refused_fields, 1, "{inbound:#?}");
    assert_eq!(inbound.refused.len(), 1);
    assert_eq!(
        inbound.refused[0].fields.get("title").map(String::as_str),
        Some("ad-in")
    );
    let out = ran(&r, "hub-ad");
    assert_eq!(ops(out, OpKind::UpdateOrg), 1, "{out:#?}");
    assert_eq!(ops(out, OpKind::UpdateAccount), 1, "{out:#?}");
    assert_eq!(
        ran(&r, "hub-dingtalk").counts.planned,
        0,
        "DingTalk is where it came from"
    );
    // In slapd: the OU renamed in place (same entryUUID), carol moved, alice's title kept.
    let oost = read(&mut ldap, &format!("ou=Oost,ou=Sales,{ns}"), &["entryUUID"])
        .await
        .unwrap_or_else(|| panic!("ou=Oost is not in slapd"));
    assert!(
        read(&mut ldap, &format!("ou=East,ou=Sales,{ns}"), &["ou"])
            .await
            .is_none()
    );
    let hub_east = store
        .hub_org(&entry_uuid(&oost).into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hub_east.name, "Oost");
    assert!(
        read(&mut ldap, &format!("uid=carol,ou=Sales,{ns}"), &["uid"])
            .await
            .is_some()
    );
    assert!(
        read(&mut ldap, &format!("uid=carol,ou=Research,{ns}"), &["uid"])
            .await
            .is_none()
    );
    let alice = read(&mut ldap, &format!("uid=alice,ou=Sales,{ns}"), &["title"])
        .await
        .unwrap();
    assert_eq!(alice.attrs["title"], vec!["Engineer".to_owned()]);

    // slapd reports hub-ad's writes to ad-in: nothing to do. Then a quiet hub: a further
    // cycle plans nothing and runs no outbound job.
    let echo = dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    let quiet = dist.cycle().await;
    assert!(quiet.is_quiet(), "{quiet:#?}");
    assert_eq!(quiet.planned(), 0);
    assert_eq!(quiet.refused_fields(), 0);
    assert!(dist.outbound_due().await.unwrap().is_empty());
}
