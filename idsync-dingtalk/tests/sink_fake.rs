//! The sink against the stateful fake: creates return anchors, updates and moves land,
//! request quirks are honoured (the fake rejects an array `dept_id_list`), errors classify.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{Account, Anchor, ErrorKind, Op, Org, Patch, Sink, Source};
use idsync_dingtalk::DingTalkSink;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use serde_json::{Value, json};

async fn setup() -> (FakeDingTalk, DingTalkSink) {
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let sink = DingTalkSink::new(fake.client_config()).unwrap();
    (fake, sink)
}

fn org(name: &str, parent: &Anchor) -> Org {
    let mut o = Org::new("proposal", Some(parent.clone()), name);
    o.order = Some(3);
    o
}

fn person(username: &str, mobile: &str, orgs: &[&Anchor]) -> Account {
    let mut a = Account::new("proposal", username);
    a.display_name = Some(format!("名{username}"));
    a.phone = Some(mobile.to_owned());
    a.title = Some("工程师".into());
    a.orgs = orgs.iter().map(|o| (*o).clone()).collect();
    a
}

#[tokio::test]
async fn create_update_move_delete() {
    let (fake, sink) = setup().await;
    assert!(sink.capabilities().assigns_anchors);
    assert!(!sink.capabilities().disable);
    let root = Anchor::new("1");

    // root orgs live directly under the tenant's root department, and read back as roots
    let corp = sink
        .apply(&Op::CreateOrg {
            org: Org::new("x", None, "Corp"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    assert_eq!(
        fake.dept(corp.as_str().parse().unwrap()).unwrap().parent_id,
        Some(1)
    );
    assert_eq!(sink.org(&corp).await.unwrap().unwrap().parent, None);
    assert_eq!(
        sink.org(&root).await.unwrap(),
        None,
        "the tenant itself is no org"
    );

    let rd = sink
        .apply(&Op::CreateOrg {
            org: org("研发部", &root),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let ops = sink
        .apply(&Op::CreateOrg {
            org: org("运维组", &rd),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let sales = sink
        .apply(&Op::CreateOrg {
            org: org("销售部", &root),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let d = fake.dept(ops.as_str().parse().unwrap()).unwrap();
    assert_eq!(d.parent_id, Some(rd.as_str().parse().unwrap()));
    assert_eq!(d.order, 3);

    // a user in two departments: dept_id_list goes as "a,b"
    let created = sink
        .apply(&Op::CreateAccount {
            account: person("wang.fang", "13800000001", &[&ops, &sales]),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    assert_eq!(created.as_str(), "wang.fang");
    let u = fake.user("wang.fang").unwrap();
    assert_eq!(
        u.dept_id_list,
        vec![
            ops.as_str().parse::<i64>().unwrap(),
            sales.as_str().parse().unwrap()
        ]
    );
    assert_eq!(u.title.as_deref(), Some("工程师"));

    // a user without a username gets a generated userid
    let mut anon = person("", "13800000002", &[&rd]);
    anon.display_name = Some("无名".into());
    let generated = sink
        .apply(&Op::CreateAccount { account: anon })
        .await
        .unwrap()
        .anchor
        .unwrap();
    assert!(fake.user(generated.as_str()).is_some());

    // update: change email, clear title, move to one department
    let mut patch = Patch::new();
    patch.insert("email".into(), json!("wf@example.com"));
    patch.insert("title".into(), Value::Null);
    patch.insert("orgs".into(), json!([sales.as_str()]));
    sink.apply(&Op::UpdateAccount {
        anchor: created.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    let u = fake.user("wang.fang").unwrap();
    assert_eq!(u.email.as_deref(), Some("wf@example.com"));
    assert_eq!(u.title, None);
    assert_eq!(u.dept_id_list, vec![sales.as_str().parse::<i64>().unwrap()]);

    // rename and move a department
    let mut patch = Patch::new();
    patch.insert("name".into(), json!("平台组"));
    sink.apply(&Op::UpdateOrg {
        anchor: ops.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    sink.apply(&Op::MoveOrg {
        anchor: ops.clone(),
        parent: Some(sales.clone()),
    })
    .await
    .unwrap();
    let d = fake.dept(ops.as_str().parse().unwrap()).unwrap();
    assert_eq!(d.name, "平台组");
    assert_eq!(d.parent_id, Some(sales.as_str().parse().unwrap()));

    // read back through the same adapter
    let orgs = collect_orgs(&sink).await.unwrap();
    assert_eq!(orgs.len(), 4);
    let accounts = collect_accounts(&sink).await.unwrap();
    assert_eq!(accounts.len(), 2);

    // deletes: a department with members is refused (Conflict), then works once empty
    let e = sink
        .apply(&Op::DeleteOrg { anchor: rd.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    sink.apply(&Op::DeleteAccount {
        anchor: generated.clone(),
    })
    .await
    .unwrap();
    sink.apply(&Op::DeleteOrg { anchor: rd.clone() })
        .await
        .unwrap();
    assert!(fake.dept(rd.as_str().parse().unwrap()).is_none());
    assert!(fake.user(generated.as_str()).is_none());
}

#[tokio::test]
async fn write_errors_classify() {
    let (fake, sink) = setup().await;
    let root = Anchor::new("1");
    let rd = sink
        .apply(&Op::CreateOrg {
            org: org("研发部", &root),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    sink.apply(&Op::CreateAccount {
        account: person("a1", "13900000000", &[&rd]),
    })
    .await
    .unwrap();
    // same mobile
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("a2", "13900000000", &[&rd]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(e.provider_code(), Some("60104"));
    // same userid
    let e = sink
        .apply(&Op::CreateAccount {
            account: person("a1", "13900000009", &[&rd]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    // duplicate sibling name, bad name
    let e = sink
        .apply(&Op::CreateOrg {
            org: org("研发部", &root),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = sink
        .apply(&Op::CreateOrg {
            org: org("R-D", &root),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    // missing entities
    let e = sink
        .apply(&Op::DeleteAccount {
            anchor: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = sink
        .apply(&Op::DeleteOrg {
            anchor: "424242".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // no disabled state in DingTalk
    let e = sink
        .apply(&Op::DisableAccount {
            anchor: "a1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    // a cycle is refused by the service
    let child = sink
        .apply(&Op::CreateOrg {
            org: org("子部门", &rd),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let e = sink
        .apply(&Op::MoveOrg {
            anchor: rd.clone(),
            parent: Some(child),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    // throttled writes are temporary
    fake.fail_next("/topapi/v2/user/update", 1, 88, Some("90018"));
    let mut p = Patch::new();
    p.insert("title".into(), json!("经理"));
    let e = sink
        .apply(&Op::UpdateAccount {
            anchor: "a1".into(),
            changes: p.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.is_temporary());
    sink.apply(&Op::UpdateAccount {
        anchor: "a1".into(),
        changes: p,
    })
    .await
    .unwrap();
    assert_eq!(fake.user("a1").unwrap().title.as_deref(), Some("经理"));
}

#[tokio::test]
async fn fake_rejects_an_array_dept_id_list() {
    // The quirk is real in the fake: a client sending an array would fail there too.
    let fake = FakeDingTalk::start(FakeConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let tok: Value = http
        .get(format!(
            "{}/gettoken?appkey=dingfakeappkey&appsecret=fake-app-secret",
            fake.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap();
    let url = format!(
        "{}/topapi/v2/user/create?access_token={token}",
        fake.base_url()
    );
    let bad: Value = http
        .post(&url)
        .json(&json!({"name": "x", "mobile": "1", "dept_id_list": [1]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["errcode"], json!(40035));
    let good: Value = http
        .post(&url)
        .json(&json!({"name": "x", "mobile": "1", "dept_id_list": "1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(good["errcode"], json!(0));
    assert!(
        good["result"]["unionId"].is_string(),
        "camelCase unionId on create"
    );
    assert!(good["request_id"].is_string());
}
