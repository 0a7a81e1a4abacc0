//! The sink's Lark specifics against the fake: idempotent creates, suspension, orders with
//! departments, non-empty departments, the root.

use idsync_core::{Account, Anchor, ErrorKind, Op, Org, Patch, Sink, Source, Status};
use idsync_lark::LarkSink;
use idsync_lark::fake::{FakeConfig, FakeLark};
use serde_json::json;

async fn setup() -> (FakeLark, LarkSink) {
    let fake = FakeLark::start(FakeConfig::default()).await.unwrap();
    let sink = LarkSink::new(fake.connection()).unwrap();
    (fake, sink)
}

#[tokio::test]
async fn a_retried_create_makes_one_entity() {
    let (fake, sink) = setup().await;
    let org = Op::CreateOrg {
        org: Org::new("proposal-1", None, "研发中心"),
    };
    let d1 = sink.apply(&org).await.unwrap().anchor.unwrap();
    let d2 = sink.apply(&org).await.unwrap().anchor.unwrap();
    assert_eq!(d1, d2, "the same client_token gives the same department");
    assert!(d1.as_str().starts_with("od-"));
    let mut a = Account::new("proposal-a", "lisi");
    a.display_name = Some("李四".into());
    a.phone = Some("+8613800000001".into());
    a.orgs = vec![d1.clone()];
    let op = Op::CreateAccount { account: a };
    let u1 = sink.apply(&op).await.unwrap().anchor.unwrap();
    let u2 = sink.apply(&op).await.unwrap().anchor.unwrap();
    assert_eq!(u1, u2);
    assert!(u1.as_str().starts_with("on_"), "the union_id is the anchor");
    assert_eq!(fake.with_state(|s| s.users.len()), 1);
    assert_eq!(fake.with_state(|s| s.depts.len()), 1);
}

#[tokio::test]
async fn suspend_move_and_orders_with_departments() {
    let (fake, sink) = setup().await;
    let a = fake.add_dept("0", "A");
    let b = fake.add_dept("0", "B");
    let u = fake.add_user("wangwu", "王五", std::slice::from_ref(&a));
    let anchor = Anchor::new(u.clone());
    sink.apply(&Op::DisableAccount {
        anchor: anchor.clone(),
    })
    .await
    .unwrap();
    assert!(fake.with_state(|s| s.users[&u].is_frozen));
    assert_eq!(
        sink.account(&anchor).await.unwrap().unwrap().status,
        Status::Disabled
    );
    sink.apply(&Op::EnableAccount {
        anchor: anchor.clone(),
    })
    .await
    .unwrap();
    assert!(!fake.with_state(|s| s.users[&u].is_frozen));
    let mut p = Patch::new();
    p.insert("orgs".into(), json!([b.clone(), a.clone()]));
    p.insert("title".into(), json!("经理"));
    sink.apply(&Op::UpdateAccount {
        anchor: anchor.clone(),
        changes: p,
    })
    .await
    .unwrap();
    let acc = sink.account(&anchor).await.unwrap().unwrap();
    assert_eq!(
        acc.orgs,
        vec![Anchor::new(b.clone()), Anchor::new(a.clone())]
    );
    assert_eq!(acc.title.as_deref(), Some("经理"));
    sink.apply(&Op::MoveOrg {
        anchor: Anchor::new(b.clone()),
        parent: Some(Anchor::new(a.clone())),
    })
    .await
    .unwrap();
    let moved = sink.org(&Anchor::new(b.clone())).await.unwrap().unwrap();
    assert_eq!(moved.parent, Some(Anchor::new(a.clone())));
    let e = sink
        .apply(&Op::UpdateAccount {
            anchor: Anchor::new("on_00000000000000000000000000000000"),
            changes: Patch::from([("title".to_owned(), json!("x"))]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn non_empty_departments_and_the_root() {
    let (fake, sink) = setup().await;
    let a = fake.add_dept("0", "A");
    let b = fake.add_dept(&a, "B");
    let u = fake.add_user("zhao", "赵", std::slice::from_ref(&b));
    let e = sink
        .apply(&Op::DeleteOrg {
            anchor: Anchor::new(a.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.provider_code(), Some("43012"));
    assert!(e.message().contains("sub-departments"), "{e}");
    let e = sink
        .apply(&Op::DeleteOrg {
            anchor: Anchor::new(b.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.provider_code(), Some("43011"));
    assert!(e.message().contains("members"), "{e}");
    sink.apply(&Op::DeleteAccount {
        anchor: Anchor::new(u),
    })
    .await
    .unwrap();
    sink.apply(&Op::DeleteOrg {
        anchor: Anchor::new(b),
    })
    .await
    .unwrap();
    let calls = fake.stats().total().calls;
    let e = sink
        .apply(&Op::UpdateOrg {
            anchor: Anchor::new("0"),
            changes: Patch::from([("name".to_owned(), json!("Tenant"))]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(fake.stats().total().calls, calls, "refused before any call");
}
