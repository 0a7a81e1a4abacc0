//! Issue 11 point 5: DingTalk never reads "gone" from a failure. Each test here failed on
//! the code before the toolkit (a bare 404 was NotFound, a vanished department skipped its
//! subtree, a failed event re-read became a delete, bodies were not capped, the provider
//! code was the umbrella 88).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use idsync_core::source::collect_orgs;
use idsync_core::{Anchor, ErrorKind, PageRequest, Sink, Source};
use idsync_dingtalk::callback::EventTarget;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk, RawReply};
use idsync_dingtalk::{DingTalkSink, DingTalkSource, EventLog};

const DEPT_GET: &str = "/topapi/v2/department/get";
const USER_GET: &str = "/topapi/v2/user/get";
const USER_LIST: &str = "/topapi/v2/user/list";

async fn fake() -> FakeDingTalk {
    FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start")
}

#[tokio::test]
async fn a_bare_404_is_a_transport_error_and_skips_no_subtree() {
    let fake = fake().await;
    let a = fake.add_dept(1, "A");
    fake.add_dept(a, "A1");
    fake.add_dept(1, "B");
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    fake.fail_next_raw(DEPT_GET, 1, RawReply::bare_status(404));
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_ne!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.provider_code(), Some("404"));
    // afterwards the whole tree is there
    assert_eq!(collect_orgs(&src).await.unwrap().len(), 3);

    // a direct lookup answered by a bare 404 is an error, not "no such org"
    fake.fail_next_raw(DEPT_GET, 1, RawReply::bare_status(404));
    assert!(src.org(&Anchor::new(a.to_string())).await.is_err());
    assert!(
        src.org(&Anchor::new(a.to_string()))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_non_json_body_is_a_temporary_transport_error() {
    let fake = fake().await;
    let d = fake.add_dept(1, "A");
    fake.add_user("u1", "张三", &[d]);
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    fake.fail_next_raw(USER_LIST, 1, RawReply::not_json());
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert_eq!(
        src.accounts(PageRequest::first())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_department_vanishing_before_its_detail_read_fails_the_page() {
    let fake = fake().await;
    let a = fake.add_dept(1, "A");
    fake.add_dept(a, "A1");
    fake.add_dept(1, "B");
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    // listed by listsub, then "not found" at its detail read
    fake.fail_next(DEPT_GET, 1, 60003, None);
    let e = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incomplete, "{e}");
    assert!(e.is_temporary(), "the page is retried");
    // the retried page lists afresh: nothing skipped
    let page = src.orgs(PageRequest::first()).await.unwrap();
    assert_eq!(page.items.len(), 3);
}

#[tokio::test]
async fn a_person_vanishing_before_the_detail_read_fails_the_page() {
    let fake = fake().await;
    let a = fake.add_dept(1, "A");
    let b = fake.add_dept(1, "B");
    // in two departments: read with v2/user/get
    fake.add_user("u1", "张三", &[a, b]);
    fake.add_user("u2", "李四", &[a]);
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    fake.fail_next(USER_GET, 1, 60121, None);
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incomplete, "{e}");
    assert!(e.is_temporary());
    let page = src.accounts(PageRequest::first()).await.unwrap();
    assert_eq!(page.items.len(), 2);
}

#[tokio::test]
async fn a_failed_event_reread_is_retried_and_never_a_delete() {
    let fake = fake().await;
    let d = fake.add_dept(1, "A");
    fake.add_user("u1", "张三", &[d]);
    let log = Arc::new(EventLog::new(100));
    let src = DingTalkSource::with_events(fake.client_config(), log.clone()).unwrap();
    let start = src.current_cursor().await.unwrap();
    log.push("user_modify_org", EventTarget::User("u1".into()), false);

    // a transient failure of the re-read is retried inside the call
    fake.fail_next(USER_GET, 1, -1, None);
    let cs = src.changes(&start).await.unwrap();
    assert_eq!(cs.account_upserts.len(), 1);
    assert!(cs.account_deletes.is_empty());

    // a bare 404 is no "user not found": the call fails, nothing is deleted
    fake.fail_next_raw(USER_GET, 1, RawReply::bare_status(404));
    let e = src.changes(&start).await.unwrap_err();
    assert_ne!(e.kind(), ErrorKind::NotFound);
    // nor is "no permission" or any other code
    fake.fail_next(USER_GET, 1, 88, Some("60011"));
    let e = src.changes(&start).await.unwrap_err();
    assert_eq!(e.provider_code(), Some("60011"));
    // a temporary failure that persists through the retries (3 attempts) fails the call
    fake.fail_next(USER_GET, 3, -1, None);
    let e = src.changes(&start).await.unwrap_err();
    assert_eq!(e.provider_code(), Some("-1"));
    assert_eq!(
        fake.stats().path(USER_GET).injected,
        6,
        "1 + 1 + 1 + 3 attempts"
    );

    // only DingTalk's explicit "user not found" becomes a delete
    assert!(fake.remove_user("u1"));
    let cs = src.changes(&start).await.unwrap();
    assert!(cs.account_upserts.is_empty());
    assert_eq!(cs.account_deletes, vec![Anchor::new("u1")]);
}

#[tokio::test]
async fn bodies_are_capped() {
    let fake = fake().await;
    fake.add_dept(1, "A");
    let mut cfg = fake.client_config();
    assert_eq!(cfg.max_body_bytes, 8 * 1024 * 1024, "capped by default");
    cfg.max_body_bytes = 4096;
    let src = DingTalkSource::new(cfg).unwrap();
    fake.fail_next_raw(USER_LIST, 1, RawReply::oversized(100_000));
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert!(e.message().contains("cap of 4096"), "{}", e.message());
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn provider_codes_are_the_specific_ones() {
    let fake = fake().await;
    let d = fake.add_dept(1, "A");
    fake.add_user("u1", "张三", &[d]);
    let src = DingTalkSource::new(fake.client_config()).unwrap();
    // a token rejected twice (refreshed once in between): 40014, not 88
    fake.fail_next(USER_LIST, 2, 88, Some("40014"));
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(e.provider_code(), Some("40014"));
    fake.fail_next(USER_LIST, 1, 88, Some("60011"));
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.provider_code(), Some("60011"));
    fake.fail_next(USER_LIST, 1, 88, Some("90018"));
    let e = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(e.provider_code(), Some("90018"));
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

#[tokio::test]
async fn lookups_are_direct_on_source_and_sink() {
    let fake = fake().await;
    let d = fake.add_dept(1, "A");
    fake.add_user("u1", "张三", &[d]);
    fake.add_user("u2", "李四", &[d]);
    fake.modify_user("u2", |u| u.email = Some("Li.Si@Example.com".into()));
    let sink = DingTalkSink::new(fake.client_config()).unwrap();
    fake.reset_stats();

    let a = sink.account(&Anchor::new("u1")).await.unwrap().unwrap();
    assert_eq!(a.anchor.as_str(), "u1");
    assert!(
        sink.account(&Anchor::new("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    let o = sink
        .org(&Anchor::new(d.to_string()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.name, "A");
    assert!(
        sink.org(&Anchor::new("1")).await.unwrap().is_none(),
        "root is the tenant"
    );
    assert!(sink.org(&Anchor::new("999999")).await.unwrap().is_none());
    let found = sink.find_accounts("username", " u2 ").await.unwrap();
    assert_eq!(found.len(), 1);
    let s = fake.stats();
    assert_eq!(s.path(USER_LIST).calls, 0, "no listing for direct lookups");
    assert_eq!(s.path(USER_GET).calls, 3);

    // no email search in the legacy API: an explicit scan, trimmed and case-insensitive
    let found = sink
        .find_accounts("email", " li.si@example.com ")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].anchor.as_str(), "u2");
    assert!(fake.stats().path(USER_LIST).calls > 0);
    assert!(sink.find_accounts("email", "x@y").await.unwrap().is_empty());
    // the sink is also a Sink (compile-time check that both traits are in use)
    fn is_sink<T: Sink>(_: &T) {}
    is_sink(&sink);
}
