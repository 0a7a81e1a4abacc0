//! The source against the fake WeCom: listings, lookups, token expiry and throttling in the
//! middle of a listing, the 48009 new-IP restriction, withheld fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use idsync_core::layers::{RetryLayer, Stack};
use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{Account, Anchor, ErrorKind, PageRequest, Source, SourceExt};
use idsync_wecom::WeComSource;
use idsync_wecom::fake::{FakeConfig, FakeUser, FakeWeCom};

async fn corp(depts: usize, users: usize, cfg: FakeConfig) -> (FakeWeCom, Vec<i64>) {
    let fake = FakeWeCom::start(cfg).await.unwrap();
    let ids = fake.seed(depts, users);
    (fake, ids)
}

/// Every member exactly once, with its departments (main first, the root left out).
fn assert_everyone_once(fake: &FakeWeCom, accounts: &[Account]) {
    let mut seen = BTreeSet::new();
    for a in accounts {
        assert!(seen.insert(a.anchor.clone()), "{} listed twice", a.anchor);
    }
    let users = fake.users();
    assert_eq!(accounts.len(), users.len(), "nobody lost");
    let by_id: BTreeMap<&str, &Account> = accounts.iter().map(|a| (a.anchor.as_str(), a)).collect();
    for u in &users {
        let a = by_id[u.userid.as_str()];
        let mut want: Vec<Anchor> = vec![Anchor::new(u.main_department.to_string())];
        for d in &u.department {
            if *d != u.main_department {
                want.push(Anchor::new(d.to_string()));
            }
        }
        want.retain(|d| d.as_str() != "1");
        assert_eq!(a.orgs, want, "{}", u.userid);
    }
}

#[tokio::test]
async fn listing_merges_rows_and_lists_each_member_once() {
    let (fake, ids) = corp(12, 40, FakeConfig::default()).await;
    // one member whose main department is the second one
    let mut u = FakeUser::new("multi", "Multi", &[ids[1], ids[2], ids[3]]);
    u.main_department = ids[3];
    u.email = Some("multi@fake.example".into());
    fake.with_state(|s| s.put_user(u));
    let mut conn = fake.connection();
    conn.list_limit = 3; // rows of one member land on different pages
    let src = WeComSource::new(conn).unwrap();
    let accounts = collect_accounts(&src).await.unwrap();
    assert_everyone_once(&fake, &accounts);
    let multi = accounts
        .iter()
        .find(|a| a.anchor.as_str() == "multi")
        .unwrap();
    assert_eq!(multi.orgs[0], Anchor::new(ids[3].to_string()));
    let orgs = collect_orgs(&src).await.unwrap();
    assert_eq!(orgs.len(), 12);
    // children of the root are roots; the others keep their parent
    let roots = orgs.iter().filter(|o| o.parent.is_none()).count();
    assert_eq!(roots, 2);
    // small org pages, keyed by the last id: the same orgs
    let paged: Vec<_> = src.org_stream(Some(5)).try_collect().await.unwrap();
    assert_eq!(paged.len(), 12);
    assert!(fake.stats().path("department/simplelist").calls >= 3);
    assert_eq!(fake.stats().path("department/list").calls, 0);
}

#[tokio::test]
async fn token_expiry_mid_listing_is_survived() {
    let (fake, _) = corp(5, 30, FakeConfig::default()).await;
    let mut conn = fake.connection();
    conn.list_limit = 10;
    let src = WeComSource::new(conn).unwrap();
    let first = src.accounts(PageRequest::first()).await.unwrap();
    assert_eq!(src.token_fetches(), 1);
    fake.expire_tokens();
    let mut all = first.items;
    let mut next = first.next;
    while let Some(token) = next {
        let page = src
            .accounts(PageRequest {
                token: Some(token),
                size: None,
            })
            .await
            .unwrap();
        all.extend(page.items);
        next = page.next;
    }
    assert_everyone_once(&fake, &all);
    // one refresh after the 42001, not one per call
    assert_eq!(src.token_fetches(), 2);
    assert!(fake.stats().total().token_errors >= 1);
}

#[tokio::test]
async fn throttling_mid_listing_is_survived_without_loss_or_duplicates() {
    // The fake allows 15 calls per API per second; the client is told it may do 1,000
    // per second, so it runs into 45009 and waits for the window's end each time.
    let (fake, _) = corp(
        4,
        40,
        FakeConfig {
            limit: Some(15),
            window: Duration::from_secs(1),
            ..FakeConfig::default()
        },
    )
    .await;
    let mut conn = fake.connection();
    conn.per_minute = 1000;
    conn.list_limit = 7;
    let src: Arc<dyn Source> = Stack::new()
        .push(
            RetryLayer::new()
                .with_max_attempts(20)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(200))
                .with_max_retry_after(Duration::from_secs(2)),
        )
        .source(Arc::new(WeComSource::new(conn).unwrap()));
    let accounts = collect_accounts(src.as_ref()).await.unwrap();
    assert_everyone_once(&fake, &accounts);
    let stats = fake.stats();
    assert!(
        stats.path("user/get").throttled > 0,
        "the fake throttled: {stats:?}"
    );
}

#[tokio::test]
async fn a_throttle_error_waits_until_the_window_ends() {
    let fake = FakeWeCom::start(FakeConfig {
        limit: Some(0),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let src = WeComSource::new(fake.connection()).unwrap();
    let e = src.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_temporary());
    assert_eq!(e.provider_code(), Some("45009"));
    let wait = e.retry_after().unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

#[tokio::test]
async fn new_ip_restriction_refuses_department_list_not_simplelist() {
    let (fake, _) = corp(
        6,
        5,
        FakeConfig {
            new_ip_restriction: true,
            ..FakeConfig::default()
        },
    )
    .await;
    let mut conn = fake.connection();
    conn.use_department_list = true;
    let src = WeComSource::new(conn).unwrap();
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert_eq!(e.provider_code(), Some("48009"));
    assert!(e.message().contains("trusted IP list"), "{e}");
    assert!(e.message().contains("use_department_list"), "{e}");
    // the default path still works
    let src = WeComSource::new(fake.connection()).unwrap();
    assert_eq!(collect_orgs(&src).await.unwrap().len(), 6);
    // and department/list works where it is allowed
    fake.set_new_ip_restriction(false);
    let mut conn = fake.connection();
    conn.use_department_list = true;
    let src = WeComSource::new(conn).unwrap();
    assert_eq!(collect_orgs(&src).await.unwrap().len(), 6);
}

#[tokio::test]
async fn withheld_fields_stay_absent() {
    let (fake, _) = corp(
        2,
        4,
        FakeConfig {
            withhold_fields: true,
            ..FakeConfig::default()
        },
    )
    .await;
    let src = WeComSource::new(fake.connection()).unwrap();
    for a in collect_accounts(&src).await.unwrap() {
        assert_eq!(a.email, None, "{}", a.anchor);
        assert_eq!(a.phone, None, "{}", a.anchor);
        assert!(a.display_name.is_some());
        assert!(a.title.is_some());
    }
}

#[tokio::test]
async fn lookups_are_direct() {
    let (fake, ids) = corp(3, 10, FakeConfig::default()).await;
    let src = WeComSource::new(fake.connection()).unwrap();
    fake.reset_stats();
    let a = src
        .account(&Anchor::new("user00003"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.email.as_deref(), Some("user00003@fake.example"));
    assert_eq!(src.account(&Anchor::new("nobody")).await.unwrap(), None);
    assert_eq!(
        src.account(&Anchor::new("not a userid")).await.unwrap(),
        None
    );
    let o = src
        .org(&Anchor::new(ids[1].to_string()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.name, "Dept 0001");
    assert_eq!(src.org(&Anchor::new("987654")).await.unwrap(), None);
    assert_eq!(
        src.org(&Anchor::new("1")).await.unwrap(),
        None,
        "the root is no org"
    );
    let by_mail = src
        .find_accounts("email", " USER00004@fake.example ")
        .await
        .unwrap();
    assert_eq!(by_mail.len(), 1);
    assert_eq!(by_mail[0].anchor.as_str(), "user00004");
    let by_phone = src.find_accounts("phone", "13800000005").await.unwrap();
    assert_eq!(by_phone[0].anchor.as_str(), "user00005");
    assert!(
        src.find_accounts("email", "none@x")
            .await
            .unwrap()
            .is_empty()
    );
    let by_name = src.find_accounts("username", "user00006").await.unwrap();
    assert_eq!(by_name.len(), 1);
    // none of these listed anyone
    let stats = fake.stats();
    assert_eq!(stats.path("user/list_id").calls, 0);
    assert_eq!(stats.path("department/simplelist").calls, 0);
    // other fields: an explicit scan of the listing
    let by_title = src.find_accounts("title", "engineer").await.unwrap();
    assert_eq!(by_title.len(), 10);
    assert!(fake.stats().path("user/list_id").calls > 0);
}

#[tokio::test]
async fn a_department_vanishing_mid_listing_fails_the_page_temporarily() {
    let (fake, _) = corp(3, 0, FakeConfig::default()).await;
    let src = WeComSource::new(fake.connection()).unwrap();
    fake.fail_next("department/get", 1, 60003);
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(e.message().contains("vanished"), "{e}");
    assert_eq!(src.orgs(PageRequest::first()).await.unwrap().items.len(), 3);
}

#[tokio::test]
async fn bad_credentials_say_what_to_fix() {
    let fake = FakeWeCom::start(FakeConfig::default()).await.unwrap();
    let mut conn = fake.connection();
    conn.secret = secrecy::SecretString::from("s3cr3t-VALUE-xyz".to_owned());
    let e = WeComSource::new(conn).unwrap().check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(e.provider_code(), Some("40001"));
    assert!(
        !e.to_string().contains("s3cr3t-VALUE-xyz"),
        "no secret in errors: {e}"
    );
    assert!(!format!("{e:?}").contains("s3cr3t-VALUE-xyz"));
    let mut conn = fake.connection();
    conn.corp_id = "wwother".into();
    let e = WeComSource::new(conn).unwrap().check().await.unwrap_err();
    assert_eq!(e.provider_code(), Some("40013"));
    assert!(e.message().contains("CorpID"), "{e}");
}
