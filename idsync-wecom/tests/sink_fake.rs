//! The sink against the fake WeCom: every op, and the contract's quirks (deletes are GET,
//! a non-empty department cannot be deleted, department name rules, one of mobile or email
//! required, writes need the contact-sync secret).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idsync_core::{Account, Anchor, ErrorKind, Op, Org, Patch, Sink, Source, Status};
use idsync_wecom::WeComSink;
use idsync_wecom::fake::{FakeConfig, FakeWeCom};
use serde_json::json;

async fn fake() -> FakeWeCom {
    FakeWeCom::start(FakeConfig {
        contact_secret: Some("contact-sync".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

fn person(userid: &str, orgs: &[&Anchor]) -> Account {
    let mut a = Account::new(userid, userid);
    a.display_name = Some(format!("{userid} name"));
    a.phone = Some(format!("139{:08}", userid.len()));
    a.orgs = orgs.iter().map(|o| (*o).clone()).collect();
    a
}

fn patch(v: serde_json::Value) -> Patch {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn every_op_with_the_contact_sync_secret() {
    let fake = fake().await;
    let sink = WeComSink::new(fake.connection()).unwrap();
    let create_org = |name: &str, parent: Option<Anchor>| Op::CreateOrg {
        org: Org::new("proposal", parent, name),
    };
    let rd = sink
        .apply(&create_org("研发", None))
        .await
        .unwrap()
        .anchor
        .unwrap();
    let qa = sink
        .apply(&create_org("测试", Some(rd.clone())))
        .await
        .unwrap()
        .anchor
        .unwrap();
    let ops = sink
        .apply(&create_org("运维", None))
        .await
        .unwrap()
        .anchor
        .unwrap();
    let d = fake.depts();
    let qa_dept = d.iter().find(|x| x.id.to_string() == qa.as_str()).unwrap();
    assert_eq!(qa_dept.parentid.to_string(), rd.as_str());

    let mut boss = person("boss", &[&rd]);
    boss.title = Some("CTO".into());
    sink.apply(&Op::CreateAccount { account: boss })
        .await
        .unwrap();
    let mut dev = person("dev01", &[&qa, &rd]);
    dev.manager = Some(Anchor::new("boss"));
    let applied = sink
        .apply(&Op::CreateAccount { account: dev })
        .await
        .unwrap();
    assert_eq!(applied.anchor, Some(Anchor::new("dev01")));
    let read = sink.account(&Anchor::new("dev01")).await.unwrap().unwrap();
    assert_eq!(read.orgs, vec![qa.clone(), rd.clone()]);
    assert_eq!(read.manager, Some(Anchor::new("boss")));
    assert_eq!(read.status, Status::Active);

    sink.apply(&Op::UpdateAccount {
        anchor: Anchor::new("dev01"),
        changes: patch(
            json!({"title": "SRE", "orgs": [ops.as_str()], "email": "dev01@example.com"}),
        ),
    })
    .await
    .unwrap();
    let read = sink.account(&Anchor::new("dev01")).await.unwrap().unwrap();
    assert_eq!(read.title.as_deref(), Some("SRE"));
    assert_eq!(read.orgs, vec![ops.clone()]);
    assert_eq!(read.email.as_deref(), Some("dev01@example.com"));

    // disable through enable: 0, and back
    sink.apply(&Op::DisableAccount {
        anchor: Anchor::new("dev01"),
    })
    .await
    .unwrap();
    let u = fake
        .users()
        .into_iter()
        .find(|u| u.userid == "dev01")
        .unwrap();
    assert_eq!(u.status, 2);
    assert_eq!(
        sink.account(&Anchor::new("dev01"))
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Disabled
    );
    sink.apply(&Op::EnableAccount {
        anchor: Anchor::new("dev01"),
    })
    .await
    .unwrap();
    assert_eq!(
        sink.account(&Anchor::new("dev01"))
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Active
    );

    // rename, reorder and move a department
    let mut changes = patch(json!({"name": "质量保障"}));
    changes.insert("order".into(), json!(5));
    sink.apply(&Op::UpdateOrg {
        anchor: qa.clone(),
        changes,
    })
    .await
    .unwrap();
    sink.apply(&Op::MoveOrg {
        anchor: qa.clone(),
        parent: Some(ops.clone()),
    })
    .await
    .unwrap();
    let org = sink.org(&qa).await.unwrap().unwrap();
    assert_eq!(org.name, "质量保障");
    assert_eq!(org.parent, Some(ops.clone()));
    assert_eq!(org.order, Some(5));
    sink.apply(&Op::MoveOrg {
        anchor: qa.clone(),
        parent: None,
    })
    .await
    .unwrap();
    assert_eq!(sink.org(&qa).await.unwrap().unwrap().parent, None);

    // a department with members cannot be deleted: a conflict, nothing changed
    let e = sink
        .apply(&Op::DeleteOrg {
            anchor: ops.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.provider_code(), Some("60005"));
    // deletes are GET calls
    sink.apply(&Op::DeleteAccount {
        anchor: Anchor::new("dev01"),
    })
    .await
    .unwrap();
    sink.apply(&Op::DeleteOrg {
        anchor: ops.clone(),
    })
    .await
    .unwrap();
    assert_eq!(sink.org(&ops).await.unwrap(), None);
    assert_eq!(sink.account(&Anchor::new("dev01")).await.unwrap(), None);
    let e = sink
        .apply(&Op::DeleteAccount {
            anchor: Anchor::new("dev01"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = sink
        .apply(&Op::DeleteOrg {
            anchor: Anchor::new("1"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let stats = fake.stats();
    assert!(stats.path("user/delete").calls >= 2);
    assert!(stats.path("department/delete").calls >= 2);
}

#[tokio::test]
async fn bad_input_is_refused_before_calling_wecom() {
    let fake = fake().await;
    let sink = WeComSink::new(fake.connection()).unwrap();
    fake.reset_stats();
    for bad in ["a*b", "名字:冒号", &"长".repeat(33), ""] {
        let e = sink
            .apply(&Op::CreateOrg {
                org: Org::new("x", None, bad),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{bad:?}");
    }
    let mut nobody = Account::new("ghost", "ghost");
    nobody.display_name = Some("Ghost".into());
    let e = sink
        .apply(&Op::CreateAccount { account: nobody })
        .await
        .unwrap_err();
    assert!(e.message().contains("mobile or an email"), "{e}");
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("-bad", &[]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(fake.stats().total().calls, 0, "nothing reached WeCom");
    // conflicts WeCom reports
    sink.apply(&Op::CreateAccount {
        account: person("zhang", &[]),
    })
    .await
    .unwrap();
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("Zhang", &[]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(e.provider_code(), Some("60102"));
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("other", &[]),
        })
        .await
        .unwrap_err();
    // same mobile number (derived from the userid length)
    assert_eq!(e.provider_code(), Some("60104"));
}

#[tokio::test]
async fn writes_with_an_app_secret_say_to_use_the_contact_sync_secret() {
    let fake = fake().await;
    let mut conn = fake.connection();
    conn.contact_secret = None; // the app secret for everything
    let sink = WeComSink::new(conn).unwrap();
    assert!(
        sink.account(&Anchor::new("nobody"))
            .await
            .unwrap()
            .is_none(),
        "reads work"
    );
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("zhang", &[]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert_eq!(e.provider_code(), Some("60011"));
    assert!(e.message().contains("contact-sync"), "{e}");
    assert!(!e.is_temporary());
}
