//! The source against the stateful fake: tree walk, paging, de-duplication, leaders, token
//! expiry and throttling mid-listing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{
    Account, ErrorKind, ErrorStatus, PageRequest, PageToken, Result, Source, Status,
};
use idsync_dingtalk::DingTalkSource;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk, ThrottleStyle, TokenErrorStyle};

async fn seeded(depts: usize, users: usize) -> (FakeDingTalk, Vec<i64>) {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let ids = fake.seed(depts, users);
    (fake, ids)
}

/// Lists every account page by page, retrying a page (same token) on temporary errors, as
/// the retry layer does; `between` runs after each page.
async fn list_with_retry(
    src: &DingTalkSource,
    size: usize,
    pause: Duration,
    mut between: impl FnMut(usize),
) -> Result<(Vec<Account>, usize)> {
    let mut out = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut pages = 0;
    let mut retries = 0;
    loop {
        let req = PageRequest {
            token: token.clone(),
            size: Some(size),
        };
        let page = match src.accounts(req).await {
            Ok(p) => p,
            Err(e) if e.is_temporary() && retries < 200 => {
                retries += 1;
                tokio::time::sleep(
                    e.retry_after()
                        .unwrap_or(Duration::from_millis(50))
                        .min(Duration::from_millis(200)),
                )
                .await;
                continue;
            }
            Err(e) => return Err(e),
        };
        pages += 1;
        out.extend(page.items);
        between(pages);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok((out, retries)),
        }
    }
}

fn assert_same_people(fake: &FakeDingTalk, got: &[Account]) {
    let anchors: Vec<&str> = got.iter().map(|a| a.anchor.as_str()).collect();
    let unique: BTreeSet<&str> = anchors.iter().copied().collect();
    assert_eq!(anchors.len(), unique.len(), "nobody listed twice");
    let want: BTreeSet<String> = fake.users().into_iter().map(|u| u.userid).collect();
    let got: BTreeSet<String> = unique.into_iter().map(str::to_owned).collect();
    assert_eq!(got, want, "nobody lost");
}

#[tokio::test]
async fn full_listing_matches_the_tenant() {
    let (fake, ids) = seeded(25, 230).await;
    fake.set_leader(ids[3], "user00003");
    fake.modify_user("user00004", |u| u.active = false);
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    src.check().await.unwrap();

    let orgs = collect_orgs(&src).await.unwrap();
    assert_eq!(
        orgs.len(),
        25,
        "25 departments; the root department is the tenant itself"
    );
    let by_anchor: BTreeMap<&str, _> = orgs.iter().map(|o| (o.anchor.as_str(), o)).collect();
    assert!(!by_anchor.contains_key("1"));
    for d in fake.depts().into_iter().filter(|d| d.dept_id != 1) {
        let o = by_anchor[d.dept_id.to_string().as_str()];
        assert_eq!(o.name, d.name);
        assert_eq!(
            o.parent.as_ref().map(|p| p.as_str().to_owned()),
            d.parent_id.filter(|p| *p != 1).map(|p| p.to_string())
        );
    }
    let leaders = &by_anchor[ids[3].to_string().as_str()].attrs["leaders"];
    assert_eq!(leaders, &serde_json::json!(["user00003"]));

    let accounts = collect_accounts(&src).await.unwrap();
    assert_same_people(&fake, &accounts);
    for a in &accounts {
        let u = fake.user(a.anchor.as_str()).unwrap();
        let want: Vec<String> = u.dept_id_list.iter().map(i64::to_string).collect();
        let got: Vec<String> = a.orgs.iter().map(|o| o.as_str().to_owned()).collect();
        assert_eq!(got, want, "{} lists all its departments", a.anchor);
        assert_eq!(a.display_name.as_deref(), Some(u.name.as_str()));
        assert_eq!(a.email, u.email);
        assert_eq!(a.phone, u.mobile);
    }
    let multi = accounts.iter().filter(|a| a.orgs.len() > 1).count();
    assert!(
        multi >= 20,
        "the seed puts every 10th person in two departments: {multi}"
    );
    let a3 = accounts
        .iter()
        .find(|a| a.anchor.as_str() == "user00003")
        .unwrap();
    assert_eq!(
        a3.attrs["leader_in_depts"],
        serde_json::json!([ids[3].to_string()])
    );
    let a4 = accounts
        .iter()
        .find(|a| a.anchor.as_str() == "user00004")
        .unwrap();
    assert_eq!(a4.status, Status::Disabled);
    // absent personal fields stay absent
    let a1 = accounts
        .iter()
        .find(|a| a.anchor.as_str() == "user00001")
        .unwrap();
    assert_eq!(a1.email, None);
    assert_eq!(a1.title, None);
}

#[tokio::test]
async fn page_sizes_one_and_exact_multiples() {
    for (users, size) in [(7, 1), (40, 10), (30, 100)] {
        let (fake, _) = seeded(2, users).await;
        let src = DingTalkSource::new(fake.client_config()).unwrap();
        let (got, _) = list_with_retry(&src, size, Duration::ZERO, |_| {})
            .await
            .unwrap();
        assert_same_people(&fake, &got);
    }
    // an empty tenant: just the root
    let fake = FakeDingTalk::start(FakeConfig::default()).await.unwrap();
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    assert!(collect_accounts(&src).await.unwrap().is_empty());
    assert!(collect_orgs(&src).await.unwrap().is_empty());
}

#[tokio::test]
async fn token_expiry_mid_listing_is_survived() {
    for style in [TokenErrorStyle::Wrapped, TokenErrorStyle::Plain] {
        let fake = FakeDingTalk::start(FakeConfig {
            token_error_style: style,
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        fake.seed(6, 120);
        let src = DingTalkSource::new(fake.client_config()).unwrap();
        let (got, retries) = list_with_retry(&src, 10, Duration::ZERO, |page| {
            if page % 4 == 0 {
                fake.expire_tokens();
            }
        })
        .await
        .unwrap();
        assert_same_people(&fake, &got);
        assert_eq!(retries, 0, "a token error is handled inside the client");
        let stats = fake.stats();
        assert!(stats.total().token_errors >= 2, "{stats:?}");
        assert_eq!(src.token_fetches(), 1 + stats.total().token_errors);
    }
}

#[tokio::test]
async fn short_token_ttl_is_refreshed_before_expiry() {
    let fake = FakeDingTalk::start(FakeConfig {
        token_ttl: Duration::from_secs(1),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    fake.seed(3, 30);
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    let (got, _) = list_with_retry(&src, 5, Duration::from_millis(150), |_| {})
        .await
        .unwrap();
    assert_same_people(&fake, &got);
    assert!(src.token_fetches() >= 2, "refreshed at least once");
}

#[tokio::test]
async fn one_refresh_for_many_concurrent_requests() {
    let (fake, _) = seeded(2, 5).await;
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    src.check().await.unwrap();
    assert_eq!(src.token_fetches(), 1);
    fake.expire_tokens();
    let checks = (0..20).map(|_| src.check());
    for r in futures::future::join_all(checks).await {
        r.unwrap();
    }
    assert_eq!(src.token_fetches(), 2, "single-flight refresh");
}

#[tokio::test]
async fn throttling_mid_listing_loses_and_duplicates_nobody() {
    for style in [ThrottleStyle::Wrapped, ThrottleStyle::Plain] {
        let fake = FakeDingTalk::start(FakeConfig {
            qps: Some(4),
            throttle_style: style,
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        fake.seed(4, 60);
        let src = DingTalkSource::new(fake.client_config()).unwrap();
        let (got, retries) = list_with_retry(&src, 5, Duration::ZERO, |_| {})
            .await
            .unwrap();
        assert_same_people(&fake, &got);
        assert!(retries > 0, "the fake throttled at least once");
        assert!(fake.stats().total().throttled > 0);
    }
}

#[tokio::test]
async fn errors_are_classified() {
    let (fake, _) = seeded(2, 5).await;
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    fake.set_qps(Some(1));
    src.check().await.unwrap();
    let e = src.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_temporary());
    // issue 11 point 5: the specific code, not the umbrella 88 that wraps it
    assert_eq!(e.provider_code(), Some("90018"));
    assert!(
        e.context()
            .iter()
            .any(|(k, v)| k == "wrapper_code" && v == "88")
    );
    fake.set_qps(None);

    fake.fail_next("/topapi/v2/user/list", 1, -1, None);
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary());
    assert_eq!(e.provider_code(), Some("-1"));
    assert!(src.accounts(PageRequest::first()).await.is_ok());

    fake.fail_next("/topapi/v2/user/list", 1, 88, Some("60011"));
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert_eq!(e.status(), ErrorStatus::Permanent);
    assert_eq!(e.provider_code(), Some("60011"));

    let mut bad = fake.client_config();
    bad.app_secret = "wrong".to_owned().into();
    let e = DingTalkSource::new(bad).unwrap().check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(e.status(), ErrorStatus::Permanent);
    assert_eq!(e.provider_code(), Some("40096"));
    assert!(!format!("{e:?}").contains("fake-app-secret"));

    let mut missing_root = fake.client_config();
    missing_root.root_dept_id = 999_999;
    let e = DingTalkSource::new(missing_root)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let tok = PageRequest {
        token: Some(PageToken("garbage".into())),
        size: None,
    };
    assert_eq!(
        src.accounts(tok).await.unwrap_err().kind(),
        ErrorKind::InvalidData
    );
}

#[tokio::test]
async fn details_bring_the_manager() {
    let (fake, ids) = seeded(2, 4).await;
    fake.modify_user("user00001", |u| u.manager_userid = Some("user00000".into()));
    let mut cfg = fake.client_config();
    let plain = collect_accounts(&DingTalkSource::new(cfg.clone()).unwrap())
        .await
        .unwrap();
    assert!(plain.iter().all(|a| a.manager.is_none()));
    cfg.fetch_user_details = true;
    let detailed = collect_accounts(&DingTalkSource::new(cfg).unwrap())
        .await
        .unwrap();
    let a1 = detailed
        .iter()
        .find(|a| a.anchor.as_str() == "user00001")
        .unwrap();
    assert_eq!(a1.manager.as_ref().map(|m| m.as_str()), Some("user00000"));
    assert_eq!(a1.orgs[0].as_str(), ids[1].to_string());
}
