//! The source against the fake: the walk, de-duplication, id types, token behaviour,
//! token expiry and throttling mid-listing, error classes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use idsync_core::source::{collect_accounts, collect_orgs};

use idsync_core::{Anchor, ErrorKind, PageRequest, Source, Status};
use idsync_lark::fake::{Failure, FakeConfig, FakeLark, FakeUser};
use idsync_lark::{LarkSource, UserIdType};

use crate::common::stack;

/// `n_depts` departments (a few levels) with `per` people each; the first person of every
/// department is also a member of the next one.
async fn tenant(cfg: FakeConfig, n_depts: usize, per: usize) -> (FakeLark, Vec<String>) {
    let fake = FakeLark::start(cfg).await.unwrap();
    let mut depts: Vec<String> = Vec::new();
    for i in 0..n_depts {
        let parent = if i == 0 {
            "0".to_owned()
        } else {
            depts[(i - 1) / 4].clone()
        };
        depts.push(fake.add_dept(&parent, &format!("部门 {i}")));
    }
    for (i, d) in depts.iter().enumerate() {
        for j in 0..per {
            let mut ds = vec![d.clone()];
            if j == 0 && i + 1 < depts.len() {
                ds.push(depts[i + 1].clone());
            }
            let mut u = FakeUser::new(format!("u{i:03}_{j:03}"), format!("用户 {i} {j}"), &ds);
            u.email = Some(format!("u{i:03}_{j:03}@fake.example"));
            fake.with_state(|s| s.put_user(u));
        }
    }
    (fake, depts)
}

#[tokio::test]
async fn walk_dedupe_primary_manager_status() {
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    let a = fake.add_dept("0", "A");
    let b = fake.add_dept(&a, "B");
    let boss = fake.add_user("boss", "Boss", std::slice::from_ref(&a));
    let mut u = FakeUser::new("multi", "Multi", &[a.clone(), b.clone()]);
    u.primary = Some(b.clone());
    u.leader = Some(boss.clone());
    u.email = Some("multi@fake.example".into());
    fake.with_state(|s| s.put_user(u));
    let mut frozen = FakeUser::new("frozen", "Frozen", std::slice::from_ref(&b));
    frozen.is_frozen = true;
    frozen.email = Some("frozen@fake.example".into());
    fake.with_state(|s| s.put_user(frozen));
    fake.add_user("root_member", "At root", &[]);

    let src = LarkSource::new(fake.connection()).unwrap();
    let orgs = collect_orgs(&src).await.unwrap();
    assert_eq!(orgs.len(), 2);
    assert_eq!(orgs[0].anchor.as_str(), a);
    assert_eq!(orgs[0].parent, None, "top level: \"0\" is no parent");
    assert_eq!(
        orgs[1].parent.as_ref().map(Anchor::as_str),
        Some(a.as_str())
    );
    let people = collect_accounts(&src).await.unwrap();
    assert_eq!(people.len(), 4, "{people:#?}");
    let multi = people.iter().find(|p| p.username == "multi").unwrap();
    assert_eq!(
        multi.orgs,
        vec![Anchor::new(b.clone()), Anchor::new(a.clone())],
        "primary first"
    );
    assert_eq!(multi.manager, Some(Anchor::new(boss.clone())));
    assert!(
        multi.anchor.as_str().starts_with("on_"),
        "union_id by default"
    );
    assert_eq!(
        people
            .iter()
            .find(|p| p.username == "frozen")
            .unwrap()
            .status,
        Status::Disabled
    );
    assert!(
        people
            .iter()
            .find(|p| p.username == "root_member")
            .unwrap()
            .orgs
            .is_empty()
    );
    assert_eq!(
        src.account(&Anchor::new(boss))
            .await
            .unwrap()
            .unwrap()
            .username,
        "boss"
    );
    assert!(
        src.account(&Anchor::new("on_missing"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(src.org(&Anchor::new("od-missing")).await.unwrap().is_none());
    // page sizes above Lark's 50 are never sent (the fake answers 40011 to them)
    let big = src.accounts(PageRequest::sized(500)).await.unwrap();
    assert!(!big.items.is_empty() && big.items.len() <= 4);
    let find = fake.stats().path("contact/v3/users/find_by_department");
    assert_eq!(find.calls, find.ok, "no call was refused");

    // open_id as the anchor type: every id in the answers follows it
    let mut conn = fake.connection();
    conn.user_id_type = UserIdType::OpenId;
    let src = LarkSource::new(conn).unwrap();
    let people = collect_accounts(&src).await.unwrap();
    let multi = people.iter().find(|p| p.username == "multi").unwrap();
    assert!(multi.anchor.as_str().starts_with("ou_"));
    assert!(multi.manager.as_ref().unwrap().as_str().starts_with("ou_"));
}

#[tokio::test]
async fn same_token_with_its_remaining_lifetime() {
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/auth/v3/tenant_access_token/internal", fake.base_url());
    let cfg = fake.config();
    let body = serde_json::json!({"app_id": cfg.app_id, "app_secret": cfg.app_secret});
    let first: serde_json::Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second: serde_json::Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["tenant_access_token"], second["tenant_access_token"]);
    assert!(second["expire"].as_u64().unwrap() < first["expire"].as_u64().unwrap());
    let bad: serde_json::Value = http
        .post(&url)
        .json(&serde_json::json!({"app_id": cfg.app_id, "app_secret": "wrong"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["code"], 10014);
}

/// Lists everything through `src` in pages of 40 (a page needs a few calls) and checks
/// that every person and department is there exactly once.
async fn check_complete(src: Arc<dyn Source>, n_depts: usize, per: usize) {
    use futures::TryStreamExt;
    use idsync_core::SourceExt;
    let people: Vec<_> = src.account_stream(Some(40)).try_collect().await.unwrap();
    let names: HashSet<&str> = people.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(names.len(), people.len(), "nobody listed twice");
    assert_eq!(people.len(), n_depts * per, "nobody lost");
    let orgs: Vec<_> = src.org_stream(Some(40)).try_collect().await.unwrap();
    assert_eq!(orgs.len(), n_depts);
}

#[tokio::test]
async fn token_expiry_mid_listing_loses_nobody() {
    let (fake, _) = tenant(
        FakeConfig {
            expire_tokens_every: Some(7),
            qps: None,
            ..FakeConfig::default()
        },
        20,
        30,
    )
    .await;
    let src = LarkSource::new(fake.connection()).unwrap();
    let layered = stack(None).source(Arc::new(src.clone()));
    check_complete(layered, 20, 30).await;
    assert!(
        fake.stats().total().token_errors > 0,
        "tokens expired mid-listing"
    );
    assert!(
        src.token_fetches() > 2,
        "refreshed: {}",
        src.token_fetches()
    );
}

#[tokio::test]
async fn throttling_mid_listing_loses_nobody() {
    // the client believes it may send 500/s; the fake allows 10/s and answers 429
    let (fake, _) = tenant(
        FakeConfig {
            qps: Some(10),
            ..FakeConfig::default()
        },
        10,
        60,
    )
    .await;
    let mut conn = fake.connection();
    conn.qps = 500;
    let src = LarkSource::new(conn).unwrap();
    let layered = stack(None).source(Arc::new(src));
    check_complete(layered, 10, 60).await;
    assert!(fake.stats().total().throttled > 0, "the fake throttled");
}

#[tokio::test]
async fn errors_say_what_they_are() {
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    fake.add_dept("0", "A");
    // a wrong base path: a plain-text 404, a transport error, never "not found"
    let mut conn = fake.connection();
    conn.base_url = format!("{}/wrong-apis", fake.base_url());
    let e = LarkSource::new(conn).unwrap().check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let src = LarkSource::new(fake.connection()).unwrap();
    fake.fail(
        "contact/v3/departments/0/children",
        1,
        Failure {
            status: 403,
            code: 40004,
        },
    );
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.message().contains("contact:department"), "{e}");
    assert_eq!(e.provider_code(), Some("40004"));
    fake.fail(
        "contact/v3/departments/0/children",
        1,
        Failure {
            status: 500,
            code: 40003,
        },
    );
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    fake.set_qps(Some(0));
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
}
