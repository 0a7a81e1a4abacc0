//! Against a real Samba Active Directory DC, started by `scripts/services/samba-ad.sh`
//! (root; fixed ports 389/636) unless `AD_URL` etc. are set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{Account, Anchor, ErrorKind, Op, Org, Sink, Source, Status};
use idsync_ldap::LdapDirectory;
use serde_json::json;

use common::{add, admin, modify, read, samba};

/// A fresh random OU (AD spells the attribute `OU`).
async fn namespace() -> String {
    let s = samba();
    let mut ldap = admin(s).await;
    let dn = format!("OU={},{}", common::random_name("t-"), s.base_dn());
    add(
        &mut ldap,
        &dn,
        &[("objectClass", &["top", "organizationalUnit"])],
    )
    .await;
    dn
}

/// A disabled user added behind idsync's back (no password needed while disabled).
async fn add_user(ldap: &mut ldap3::Ldap, dn: &str, sam: &str, extra: &[(&str, &str)]) {
    let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
        (b"objectClass".to_vec(), [b"user".to_vec()].into()),
        (b"sAMAccountName".to_vec(), [sam.as_bytes().to_vec()].into()),
        (b"userAccountControl".to_vec(), [b"514".to_vec()].into()),
    ];
    for (k, v) in extra {
        attrs.push((k.as_bytes().to_vec(), [v.as_bytes().to_vec()].into()));
    }
    ldap.add(dn, attrs)
        .await
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

fn by_name(orgs: &[Org]) -> BTreeMap<String, Org> {
    orgs.iter().map(|o| (o.name.clone(), o.clone())).collect()
}

fn by_username(accounts: &[Account]) -> BTreeMap<String, Account> {
    accounts
        .iter()
        .map(|a| (a.username.clone(), a.clone()))
        .collect()
}

fn is_guid(a: &Anchor) -> bool {
    idsync_ldap::guid_from_string(a.as_str()).is_some()
}

#[tokio::test]
async fn ad_full_listing_maps_guids_uac_and_managers() {
    let s = samba();
    let ns = namespace().await;
    let mut ldap = admin(s).await;
    add(
        &mut ldap,
        &format!("OU=Sales,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add(
        &mut ldap,
        &format!("OU=East,OU=Sales,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    let boss_dn = format!("CN=boss,OU=Sales,{ns}");
    add_user(
        &mut ldap,
        &boss_dn,
        &common::random_name("b")[..12],
        &[("displayName", "Big Boss")],
    )
    .await;
    let ann_sam = common::random_name("a")[..12].to_owned();
    add_user(
        &mut ldap,
        &format!("CN=ann,OU=East,OU=Sales,{ns}"),
        &ann_sam,
        &[
            ("displayName", "安妮"),
            ("mail", "ann@example.test"),
            ("mobile", "+86 138"),
            ("employeeID", "E-7"),
            ("title", "Engineer"),
            ("manager", &boss_dn),
        ],
    )
    .await;
    let dir = s.directory(&ns);
    dir.check().await.unwrap();
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    assert_eq!(orgs.len(), 2, "{orgs:?}");
    assert!(is_guid(&orgs["Sales"].anchor));
    assert_eq!(orgs["Sales"].parent, None);
    assert_eq!(orgs["East"].parent.as_ref(), Some(&orgs["Sales"].anchor));
    let accounts = collect_accounts(&dir).await.unwrap();
    assert_eq!(accounts.len(), 2);
    let ann = accounts.iter().find(|a| a.username == ann_sam).unwrap();
    let boss = accounts.iter().find(|a| a.username != ann_sam).unwrap();
    assert!(is_guid(&ann.anchor));
    assert_eq!(ann.display_name.as_deref(), Some("安妮"));
    assert_eq!(ann.email.as_deref(), Some("ann@example.test"));
    assert_eq!(ann.employee_id.as_deref(), Some("E-7"));
    assert_eq!(ann.orgs, vec![orgs["East"].anchor.clone()]);
    assert_eq!(ann.manager.as_ref(), Some(&boss.anchor));
    assert_eq!(ann.status, Status::Disabled);

    // the anchor is the GUID in standard form: the same one the server finds by filter
    let filter = format!(
        "(objectGUID={})",
        idsync_ldap::escape_filter_bytes(
            &idsync_ldap::guid_from_string(ann.anchor.as_str()).unwrap()
        )
    );
    let (hits, _) = ldap
        .search(&ns, ldap3::Scope::Subtree, &filter, vec!["sAMAccountName"])
        .await
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn ad_sink_round_trip() {
    let s = samba();
    let ns = namespace().await;
    let dir = s.directory(&ns);
    let mut ldap = admin(s).await;
    let hq = dir
        .apply(&Op::CreateOrg {
            org: Org::new("-", None, "HQ"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let dev = dir
        .apply(&Op::CreateOrg {
            org: Org::new("-", Some(hq.clone()), "Dev"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    assert!(is_guid(&dev));
    let sam = common::random_name("j")[..12].to_owned();
    let mut acc = Account::new("-", sam.clone());
    acc.display_name = Some("Jane Doe".into());
    acc.email = Some("jane@example.test".into());
    acc.orgs = vec![dev.clone()];
    let jane = dir
        .apply(&Op::CreateAccount { account: acc })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let dn = format!("CN={sam},OU=Dev,OU=HQ,{ns}");
    let e = read(&mut ldap, &dn, &["userAccountControl", "mail"])
        .await
        .unwrap();
    assert_eq!(
        e.attrs["userAccountControl"],
        vec!["512"],
        "created enabled, with a password"
    );

    let listed = collect_accounts(&dir).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].anchor, jane);
    assert_eq!(listed[0].status, Status::Active);

    let mut patch = BTreeMap::new();
    patch.insert("title".to_owned(), json!("CTO"));
    patch.insert("email".to_owned(), serde_json::Value::Null);
    dir.apply(&Op::UpdateAccount {
        anchor: jane.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    let e = read(&mut ldap, &dn, &["title", "mail"]).await.unwrap();
    assert_eq!(e.attrs["title"], vec!["CTO"]);
    assert!(!e.attrs.contains_key("mail"));

    dir.apply(&Op::DisableAccount {
        anchor: jane.clone(),
    })
    .await
    .unwrap();
    let e = read(&mut ldap, &dn, &["userAccountControl"]).await.unwrap();
    assert_eq!(e.attrs["userAccountControl"], vec!["514"]);
    dir.apply(&Op::EnableAccount {
        anchor: jane.clone(),
    })
    .await
    .unwrap();
    let e = read(&mut ldap, &dn, &["userAccountControl"]).await.unwrap();
    assert_eq!(e.attrs["userAccountControl"], vec!["512"]);

    // move the account to HQ (primary org changed), rename and move Dev
    let mut patch = BTreeMap::new();
    patch.insert("orgs".to_owned(), json!([hq.as_str()]));
    dir.apply(&Op::UpdateAccount {
        anchor: jane.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    assert!(
        read(&mut ldap, &format!("CN={sam},OU=HQ,{ns}"), &["cn"])
            .await
            .is_some()
    );
    let mut patch = BTreeMap::new();
    patch.insert("name".to_owned(), json!("R&D, Labs"));
    dir.apply(&Op::UpdateOrg {
        anchor: dev.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    dir.apply(&Op::MoveOrg {
        anchor: dev.clone(),
        parent: None,
    })
    .await
    .unwrap();
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    assert_eq!(orgs["R&D, Labs"].anchor, dev);
    assert_eq!(orgs["R&D, Labs"].parent, None);
    assert_eq!(
        collect_accounts(&dir).await.unwrap()[0].orgs,
        vec![hq.clone()]
    );

    let err = dir
        .apply(&Op::DeleteOrg { anchor: hq.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    dir.apply(&Op::DeleteAccount {
        anchor: jane.clone(),
    })
    .await
    .unwrap();
    dir.apply(&Op::DeleteOrg { anchor: hq.clone() })
        .await
        .unwrap();
    dir.apply(&Op::DeleteOrg {
        anchor: dev.clone(),
    })
    .await
    .unwrap();
    assert!(collect_orgs(&dir).await.unwrap().is_empty());
    assert!(collect_accounts(&dir).await.unwrap().is_empty());
    let err = dir
        .apply(&Op::DisableAccount { anchor: jane })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn ad_dirsync_sees_add_modify_rename_move_and_delete() {
    let s = samba();
    let ns = namespace().await;
    let mut ldap = admin(s).await;
    add(
        &mut ldap,
        &format!("OU=A,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add(
        &mut ldap,
        &format!("OU=B,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    let keep = common::random_name("k")[..12].to_owned();
    let gone = common::random_name("g")[..12].to_owned();
    add_user(&mut ldap, &format!("CN=keep,OU=A,{ns}"), &keep, &[]).await;
    add_user(&mut ldap, &format!("CN=gone,OU=A,{ns}"), &gone, &[]).await;
    let dir = s.directory(&ns);
    let accounts = by_username(&collect_accounts(&dir).await.unwrap());
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    let cursor = dir.current_cursor().await.unwrap();
    assert!(cursor.0.starts_with("dirsync:"));

    // other tests work in the same domain at the same time: nothing of ours changed
    let quiet = dir.changes(&cursor).await.unwrap();
    assert!(
        quiet.account_upserts.is_empty() && quiet.org_upserts.is_empty(),
        "{quiet:?}"
    );
    assert!(
        accounts
            .values()
            .all(|a| !quiet.account_deletes.contains(&a.anchor)),
        "{quiet:?}"
    );

    let new = common::random_name("n")[..12].to_owned();
    add_user(
        &mut ldap,
        &format!("CN=new,OU=B,{ns}"),
        &new,
        &[("mail", "new@example.test")],
    )
    .await;
    modify(&mut ldap, &format!("CN=keep,OU=A,{ns}"), "title", &["Boss"]).await;
    ldap.modifydn(
        &format!("CN=keep,OU=A,{ns}"),
        "CN=kept",
        true,
        Some(&format!("OU=B,{ns}")),
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    ldap.modifydn(&format!("OU=B,{ns}"), "OU=Bee", true, None)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap.delete(&format!("CN=gone,OU=A,{ns}"))
        .await
        .unwrap()
        .success()
        .unwrap();

    let cs = dir.changes(&cursor).await.unwrap();
    assert!(cs.complete);
    let up = by_username(&cs.account_upserts);
    assert_eq!(up.len(), 2, "{:?}", cs.account_upserts);
    assert_eq!(up[&new].email.as_deref(), Some("new@example.test"));
    let kept = &up[&keep];
    assert_eq!(kept.anchor, accounts[&keep].anchor);
    assert_eq!(kept.title.as_deref(), Some("Boss"));
    assert_eq!(kept.orgs, vec![orgs["B"].anchor.clone()]);
    assert_eq!(up[&new].orgs, vec![orgs["B"].anchor.clone()]);
    let bee = cs
        .org_upserts
        .iter()
        .find(|o| o.anchor == orgs["B"].anchor)
        .expect("renamed OU reported");
    assert_eq!(bee.name, "Bee");
    assert!(
        cs.account_deletes.contains(&accounts[&gone].anchor),
        "{cs:?}"
    );

    let next = cs.cursor.clone().unwrap();
    let again = dir.changes(&next).await.unwrap();
    assert!(
        again.account_upserts.is_empty() && again.org_upserts.is_empty(),
        "{again:?}"
    );
    assert!(
        !again.account_deletes.contains(&accounts[&gone].anchor),
        "{again:?}"
    );
}

#[tokio::test]
async fn ad_tricky_names_and_errors() {
    let s = samba();
    let ns = namespace().await;
    let dir = s.directory(&ns);
    let names = [
        "R&D, Europe",
        "a+b=c",
        "销售部",
        " lead",
        "#hash",
        "semi;colon",
    ];
    let mut anchors = Vec::new();
    for n in names {
        anchors.push(
            dir.apply(&Op::CreateOrg {
                org: Org::new("-", None, n),
            })
            .await
            .unwrap_or_else(|e| panic!("create {n:?}: {e}"))
            .anchor
            .unwrap(),
        );
    }
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    for (n, a) in names.iter().zip(&anchors) {
        assert_eq!(
            orgs.get(*n).map(|o| &o.anchor),
            Some(a),
            "{n:?} in {orgs:?}"
        );
    }
    let sam = common::random_name("t")[..12].to_owned();
    let mut acc = Account::new("-", sam.clone());
    acc.orgs = vec![anchors[2].clone()];
    dir.apply(&Op::CreateAccount { account: acc })
        .await
        .unwrap();
    let listed = collect_accounts(&dir).await.unwrap();
    assert_eq!(listed[0].orgs, vec![anchors[2].clone()]);

    let cfg = s.config(&ns).with_bind(s.bind_dn(), "not-the-password");
    let err = LdapDirectory::new(cfg).unwrap().check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert_eq!(err.provider_code(), Some("49"));

    // ldaps with the test CA
    if let Some(ldaps) = s.vars.get("AD_LDAPS_URL") {
        let mut cfg = s.config(&ns);
        cfg.url = ldaps.clone();
        LdapDirectory::new(cfg).unwrap().check().await.unwrap();
    }
    let mut cfg = s.config(&ns);
    cfg.starttls = true;
    LdapDirectory::new(cfg).unwrap().check().await.unwrap();
}

#[tokio::test]
async fn ad_conformance_suite_as_source_and_sink() {
    let harness = common::Harness {
        server: samba(),
        tweak: |cfg| {
            // AD's `user` has no free multi-valued string attribute for further orgs in the
            // base schema; `url` (multi-valued, Unicode) serves in tests
            cfg.secondary_orgs_attribute = Some("url".into());
        },
        options: idsync_conformance::Options::default(),
        one_namespace_at_a_time: true,
        live: Default::default(),
    };
    let report = idsync_conformance::run_all(&harness).await;
    println!("{report}");
    report.assert_passed();
}
