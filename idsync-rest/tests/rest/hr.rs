//! The generated HR data set on json-server, read in each of its pagination styles.

use std::collections::BTreeMap;

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{Engine, Hub, Job, MemoryStore, Source, Status, Store, SyncCursor};
use serde_json::Value;

use crate::rest::server::{connector, hr, hr_config};

fn seed() -> (Vec<Value>, Vec<Value>) {
    let text = std::fs::read_to_string(&hr().seed).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        v["departments"].as_array().unwrap().clone(),
        v["people"].as_array().unwrap().clone(),
    )
}

const STYLES: &[(&str, &str)] = &[
    (
        "page",
        r#"{ style = "page", param = "_page", size_param = "_limit", total_header = "X-Total-Count" }"#,
    ),
    (
        "offset",
        r#"{ style = "offset", param = "_start", size_param = "_limit", total_header = "X-Total-Count" }"#,
    ),
    (
        "link",
        r#"{ style = "link_header", size_param = "_limit", first_query = { _page = "1" } }"#,
    ),
];

#[tokio::test]
async fn the_hr_set_reads_whole_in_every_json_server_style() {
    let (depts, people) = seed();
    assert!(
        people.len() >= 1000 && depts.len() >= 50,
        "a few thousand people"
    );
    let by_id: BTreeMap<&str, &Value> = people
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    for (name, pagination) in STYLES {
        let c = connector(&hr_config(&hr().url, pagination, 97));
        let orgs = collect_orgs(&c).await.unwrap();
        let accounts = collect_accounts(&c).await.unwrap();
        assert_eq!(orgs.len(), depts.len(), "{name}");
        assert_eq!(accounts.len(), people.len(), "{name}");
        idsync_core::model::validate(&orgs, &accounts).unwrap();
        for a in &accounts {
            let p = by_id[a.anchor.as_str()];
            assert_eq!(a.username, p["login"].as_str().unwrap(), "{name}");
            assert_eq!(a.email.as_deref(), p["work_email"].as_str(), "{name}");
            assert_eq!(
                a.manager.as_ref().map(|m| m.as_str()),
                p["manager_id"].as_str()
            );
            let orgs: Vec<&str> = a.orgs.iter().map(|o| o.as_str()).collect();
            let want: Vec<&str> = p["department_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(orgs, want);
            let active = p["active"].as_bool().unwrap();
            assert_eq!(a.status == Status::Active, active);
        }
        let root = orgs.iter().find(|o| o.parent.is_none()).unwrap();
        assert_eq!(root.anchor.as_str(), "d1");
        assert!(orgs.iter().all(|o| o.attrs.contains_key("cost_center")));
    }
}

#[tokio::test]
async fn the_hr_set_into_a_hub_then_nothing_to_do() {
    let (depts, people) = seed();
    let c = connector(&hr_config(&hr().url, STYLES[0].1, 100));
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let job = Job::new(
        "hr-to-hub",
        std::sync::Arc::new(c),
        std::sync::Arc::new(Hub::new(store)),
    );
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    assert_eq!(r.counts.applied, depts.len() + people.len());
    let again = engine.run(&job).await.unwrap();
    assert_eq!(again.counts.planned, 0);
}

#[tokio::test]
async fn lookups_by_item_path() {
    let c = connector(&hr_config(&hr().url, STYLES[0].1, 100));
    let a = c.account(&"p42".into()).await.unwrap().unwrap();
    assert_eq!(a.username, "emp00042");
    assert!(c.account(&"nobody here/..".into()).await.unwrap().is_none());
    let o = c.org(&"d3".into()).await.unwrap().unwrap();
    assert_eq!(
        o.parent.as_ref().map(|p| p.as_str()),
        Some("d2"),
        "d3 sits under d1 + (3 * 7) % 2"
    );
    assert!(c.org(&"d999999".into()).await.unwrap().is_none());
    let found = c
        .find_accounts("email", "  EMP00042@HR.example.com ")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn incremental_reads_by_updated_since_with_an_overlap() {
    let (_, people) = seed();
    let n = people.len();
    let at = |i: usize| people[i - 1]["updated_at"].as_str().unwrap().to_owned();
    let mut cfg = hr_config(&hr().url, STYLES[0].1, 100);
    for entity in ["orgs", "accounts"] {
        cfg = cfg.replace(
            &format!("[{entity}.fields]"),
            &format!(
                "incremental = {{ param = \"updated_at_gte\", pointer = \"/updated_at\", overlap_secs = 60 }}\n[{entity}.fields]"
            ),
        );
    }
    let c = connector(&cfg);
    assert!(c.capabilities().changes);
    // people's updated_at are a minute apart: the overlap of 60 s reads one more
    let since = SyncCursor(at(n - 9));
    let cs = c.changes(&since).await.unwrap();
    assert!(cs.complete);
    assert!(cs.org_upserts.is_empty(), "no department changed lately");
    assert_eq!(
        cs.account_upserts.len(),
        11,
        "the last 10 and one in the overlap"
    );
    let cursor = cs.cursor.unwrap();
    let highest = chrono::DateTime::parse_from_rfc3339(&at(n)).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&cursor.0).unwrap(),
        highest
    );
    // from the new cursor: only the overlap window again
    let again = c.changes(&cursor).await.unwrap();
    assert_eq!(again.account_upserts.len(), 2);
    assert!(c.changes(&SyncCursor("yesterday".into())).await.is_err());
}

/// Writes on a json-server of this test's own: PUT updates (read, change, send whole), an
/// attrs object, creates that keep the proposed anchor, disable, delete, NotFound.
#[tokio::test]
async fn put_updates_attrs_object_and_deletes() {
    use idsync_core::{Account, ErrorKind, Op, Patch, Sink};
    let server = crate::rest::server::JsonServer::start(Some(
        r#"{"staff": [{"id": "s1", "login": "ann", "name": "Ann", "extra": {"cc": "1", "site": "SH"}, "active": true}]}"#,
    ));
    let c = connector(&format!(
        r#"
base_url = "{}"
[accounts]
path = "/staff"
attrs = "/extra"
item_path = "/staff/{{anchor}}"
create = {{ path = "/staff" }}
update = {{ path = "/staff/{{anchor}}", method = "PUT" }}
delete = {{ path = "/staff/{{anchor}}" }}
[accounts.fields]
anchor = "/id"
username = "/login"
display_name = "/name"
title = "/title"
[accounts.status]
pointer = "/active"
active = true
disabled = false
"#,
        server.url
    ));
    let caps = c.capabilities();
    assert!(caps.create && caps.update && caps.disable && caps.delete && !caps.assigns_anchors);
    let mut p = Patch::new();
    p.insert("attrs.cc".into(), Value::from("2"));
    p.insert("title".into(), Value::from("Lead"));
    c.apply(&Op::UpdateAccount {
        anchor: "s1".into(),
        changes: p,
    })
    .await
    .unwrap();
    let a = c.account(&"s1".into()).await.unwrap().unwrap();
    assert_eq!(a.title.as_deref(), Some("Lead"));
    assert_eq!(a.username, "ann", "PUT sent the whole entity");
    assert_eq!(a.attrs["cc"], Value::from("2"));
    assert_eq!(a.attrs["site"], Value::from("SH"), "other attrs kept");
    c.apply(&Op::DisableAccount {
        anchor: "s1".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.account(&"s1".into()).await.unwrap().unwrap().status,
        Status::Disabled
    );

    let mut b = Account::new("s2", "bob");
    b.attrs.insert("cc".into(), Value::from("9"));
    let applied = c.apply(&Op::CreateAccount { account: b }).await.unwrap();
    assert_eq!(applied.anchor.as_ref().map(|a| a.as_str()), Some("s2"));
    let all = collect_accounts(&c).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].attrs["cc"], Value::from("9"));
    assert_eq!(all[1].status, Status::Active);
    c.apply(&Op::DeleteAccount {
        anchor: "s2".into(),
    })
    .await
    .unwrap();
    let e = c
        .apply(&Op::DeleteAccount {
            anchor: "s2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let mut p = Patch::new();
    p.insert("phone".into(), Value::from("1"));
    let e = c
        .apply(&Op::UpdateAccount {
            anchor: "s1".into(),
            changes: p,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Unsupported,
        "an unmapped field is refused: {e}"
    );
}
