//! Against a real OpenLDAP slapd (syncprov, paged results), started by
//! `scripts/services/openldap.sh` unless `LDAP_URL` etc. are set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "openldap/two_way.rs"]
mod two_way;

use std::collections::BTreeMap;

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{
    Account, Anchor, ErrorKind, Op, Org, PageRequest, PageToken, Sink, Source, Status,
};
use idsync_ldap::{Dn, LdapDirectory, Rdn};
use serde_json::json;

use common::{add, admin, modify, namespace, openldap, read};

fn person(
    uid: &str,
    extra: &[(&'static str, &'static [&'static str])],
) -> Vec<(&'static str, Vec<String>)> {
    let mut v: Vec<(&'static str, Vec<String>)> = vec![
        ("objectClass", vec!["inetOrgPerson".into()]),
        ("uid", vec![uid.into()]),
        ("cn", vec![uid.into()]),
        ("sn", vec![uid.into()]),
    ];
    for (k, vals) in extra {
        v.push((k, vals.iter().map(|s| (*s).to_owned()).collect()));
    }
    v
}

async fn add_owned(ldap: &mut ldap3::Ldap, dn: &str, attrs: Vec<(&'static str, Vec<String>)>) {
    let refs: Vec<Vec<&str>> = attrs
        .iter()
        .map(|(_, v)| v.iter().map(String::as_str).collect())
        .collect();
    let pairs: Vec<(&str, &[&str])> = attrs
        .iter()
        .zip(refs.iter())
        .map(|((k, _), v)| (*k, v.as_slice()))
        .collect();
    add(ldap, dn, &pairs).await;
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

#[tokio::test]
async fn full_listing_maps_tree_accounts_managers_and_pages() {
    let s = openldap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    add(
        &mut ldap,
        &format!("ou=Sales,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add(
        &mut ldap,
        &format!("ou=East,ou=Sales,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add_owned(
        &mut ldap,
        &format!("uid=boss,ou=Sales,{ns}"),
        person(
            "boss",
            &[
                ("displayName", &["Big Boss"]),
                ("mail", &["boss@example.com"]),
            ],
        ),
    )
    .await;
    add_owned(
        &mut ldap,
        &format!("uid=ann,ou=East,ou=Sales,{ns}"),
        person(
            "ann",
            &[
                ("displayName", &["安妮"]),
                ("mobile", &["+86 138 0000 0000"]),
                ("employeeNumber", &["E-1"]),
                ("title", &["Engineer"]),
                ("telephoneNumber", &["1", "2"]),
            ],
        ),
    )
    .await;
    modify(
        &mut ldap,
        &format!("uid=ann,ou=East,ou=Sales,{ns}"),
        "manager",
        &[&format!("uid=boss,ou=Sales,{ns}")],
    )
    .await;
    add_owned(
        &mut ldap,
        &format!("uid=top,{ns}"),
        person("top", &[("pwdAccountLockedTime", &["000001010000Z"])]),
    )
    .await;
    for i in 0..5 {
        add_owned(
            &mut ldap,
            &format!("uid=p{i},ou=East,ou=Sales,{ns}"),
            person(&format!("p{i}"), &[]),
        )
        .await;
    }

    let mut cfg = s.config(&ns);
    cfg.account_attributes
        .insert("manager".into(), "manager".into());
    let dir = LdapDirectory::new(cfg).unwrap();
    dir.check().await.unwrap();
    let orgs = collect_orgs(&dir).await.unwrap();
    assert_eq!(orgs.len(), 2, "{orgs:?}");
    let o = by_name(&orgs);
    assert_eq!(o["Sales"].parent, None, "the base entry is not an org");
    assert_eq!(o["East"].parent.as_ref(), Some(&o["Sales"].anchor));
    assert_eq!(o["Sales"].anchor.as_str().len(), 36);

    let accounts = collect_accounts(&dir).await.unwrap();
    assert_eq!(accounts.len(), 8);
    let a = by_username(&accounts);
    let ann = &a["ann"];
    assert_eq!(ann.display_name.as_deref(), Some("安妮"));
    assert_eq!(ann.phone.as_deref(), Some("+86 138 0000 0000"));
    assert_eq!(ann.employee_id.as_deref(), Some("E-1"));
    assert_eq!(ann.title.as_deref(), Some("Engineer"));
    assert_eq!(ann.orgs, vec![o["East"].anchor.clone()]);
    assert_eq!(ann.manager.as_ref(), Some(&a["boss"].anchor));
    assert_eq!(ann.attrs["telephone_number"], json!(["1", "2"]));
    assert_eq!(a["boss"].orgs, vec![o["Sales"].anchor.clone()]);
    assert_eq!(a["boss"].email.as_deref(), Some("boss@example.com"));
    assert!(a["top"].orgs.is_empty());
    assert_eq!(a["top"].status, Status::Disabled);
    assert_eq!(ann.status, Status::Active);

    // page size 1: one entry per page, every entry exactly once
    let mut seen = Vec::new();
    let mut req = PageRequest::sized(1);
    let mut pages = 0;
    loop {
        let page = dir.accounts(req.clone()).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 1);
        seen.extend(page.items.into_iter().map(|a| a.username));
        match page.next {
            Some(t) => req.token = Some(t),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 8);
    seen.dedup();
    assert_eq!(seen.len(), 8);
    assert!(pages >= 8);

    // interleaved listings do not disturb each other (each has its own connection)
    let mut acc_req = PageRequest::sized(3);
    let mut org_req = PageRequest::sized(1);
    let (mut accs, mut orgs_seen) = (Vec::new(), Vec::new());
    let (mut acc_done, mut org_done) = (false, false);
    while !(acc_done && org_done) {
        if !acc_done {
            let p = dir.accounts(acc_req.clone()).await.unwrap();
            accs.extend(p.items);
            acc_req.token = p.next;
            acc_done = acc_req.token.is_none();
        }
        if !org_done {
            let p = dir.orgs(org_req.clone()).await.unwrap();
            orgs_seen.extend(p.items.into_iter().map(|o| o.name));
            org_req.token = p.next;
            org_done = org_req.token.is_none();
        }
    }
    assert_eq!(accs.len(), 8);
    orgs_seen.sort();
    assert_eq!(orgs_seen, vec!["East".to_string(), "Sales".to_string()]);
}

#[tokio::test]
async fn sink_creates_updates_renames_moves_disables_and_deletes() {
    let s = openldap();
    let ns = namespace(s).await;
    let dir = s.directory(&ns);
    let mut ldap = admin(s).await;

    let hq = dir
        .apply(&Op::CreateOrg {
            org: Org::new("x", None, "HQ"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let dev = dir
        .apply(&Op::CreateOrg {
            org: Org::new("y", Some(hq.clone()), "Dev"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let ops_org = dir
        .apply(&Op::CreateOrg {
            org: Org::new("z", None, "Ops"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    assert!(
        read(&mut ldap, &format!("ou=Dev,ou=HQ,{ns}"), &["ou"])
            .await
            .is_some()
    );

    let mut acc = Account::new("ignored", "jdoe");
    acc.display_name = Some("Jane Doe".into());
    acc.email = Some("jdoe@example.com".into());
    acc.title = Some("Dev".into());
    acc.orgs = vec![dev.clone()];
    let jdoe = dir
        .apply(&Op::CreateAccount { account: acc })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let e = read(
        &mut ldap,
        &format!("uid=jdoe,ou=Dev,ou=HQ,{ns}"),
        &["cn", "sn", "mail", "entryUUID"],
    )
    .await
    .unwrap();
    assert_eq!(e.attrs["mail"], vec!["jdoe@example.com"]);
    assert_eq!(e.attrs["entryUUID"], vec![jdoe.as_str().to_owned()]);

    // changed attributes only; a cleared field removes the attribute
    let mut patch = BTreeMap::new();
    patch.insert("email".to_owned(), json!("jane@example.com"));
    patch.insert("title".to_owned(), serde_json::Value::Null);
    dir.apply(&Op::UpdateAccount {
        anchor: jdoe.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    let e = read(
        &mut ldap,
        &format!("uid=jdoe,ou=Dev,ou=HQ,{ns}"),
        &["mail", "title", "cn"],
    )
    .await
    .unwrap();
    assert_eq!(e.attrs["mail"], vec!["jane@example.com"]);
    assert!(!e.attrs.contains_key("title"));
    assert_eq!(e.attrs["cn"], vec!["Jane Doe"]);

    // rename (username is the RDN) and move (primary org) in one update
    let mut patch = BTreeMap::new();
    patch.insert("username".to_owned(), json!("jane"));
    patch.insert("orgs".to_owned(), json!([ops_org.as_str()]));
    dir.apply(&Op::UpdateAccount {
        anchor: jdoe.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    assert!(
        read(&mut ldap, &format!("uid=jdoe,ou=Dev,ou=HQ,{ns}"), &["uid"])
            .await
            .is_none()
    );
    let e = read(
        &mut ldap,
        &format!("uid=jane,ou=Ops,{ns}"),
        &["uid", "entryUUID"],
    )
    .await
    .unwrap();
    assert_eq!(e.attrs["uid"], vec!["jane"], "the old RDN value is gone");
    assert_eq!(
        e.attrs["entryUUID"],
        vec![jdoe.as_str().to_owned()],
        "same entry, not a copy"
    );

    // disable / enable
    dir.apply(&Op::DisableAccount {
        anchor: jdoe.clone(),
    })
    .await
    .unwrap();
    let listed = collect_accounts(&dir).await.unwrap();
    assert_eq!(listed[0].status, Status::Disabled);
    dir.apply(&Op::EnableAccount {
        anchor: jdoe.clone(),
    })
    .await
    .unwrap();
    let listed = collect_accounts(&dir).await.unwrap();
    assert_eq!(listed[0].status, Status::Active);
    assert_eq!(listed[0].orgs, vec![ops_org.clone()]);

    // org rename (modrdn) and move (modrdn with newSuperior) keep anchors and children
    let mut patch = BTreeMap::new();
    patch.insert("name".to_owned(), json!("Engineering"));
    dir.apply(&Op::UpdateOrg {
        anchor: dev.clone(),
        changes: patch,
    })
    .await
    .unwrap();
    dir.apply(&Op::MoveOrg {
        anchor: dev.clone(),
        parent: Some(ops_org.clone()),
    })
    .await
    .unwrap();
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    assert_eq!(orgs["Engineering"].anchor, dev);
    assert_eq!(orgs["Engineering"].parent.as_ref(), Some(&ops_org));
    assert!(!orgs.contains_key("Dev"));
    dir.apply(&Op::MoveOrg {
        anchor: dev.clone(),
        parent: None,
    })
    .await
    .unwrap();
    assert_eq!(
        by_name(&collect_orgs(&dir).await.unwrap())["Engineering"].parent,
        None
    );

    // deleting an org that still holds an account is a conflict, not a silent cascade
    let err = dir
        .apply(&Op::DeleteOrg {
            anchor: ops_org.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    dir.apply(&Op::DeleteAccount {
        anchor: jdoe.clone(),
    })
    .await
    .unwrap();
    dir.apply(&Op::DeleteOrg {
        anchor: ops_org.clone(),
    })
    .await
    .unwrap();
    assert!(collect_accounts(&dir).await.unwrap().is_empty());
    let err = dir
        .apply(&Op::DeleteAccount {
            anchor: jdoe.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.provider_code(), Some("32"));
    let names: Vec<String> = collect_orgs(&dir)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let _ = hq;
}

#[tokio::test]
async fn incremental_sees_add_modify_rename_move_and_delete() {
    let s = openldap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    add(
        &mut ldap,
        &format!("ou=A,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add(
        &mut ldap,
        &format!("ou=B,{ns}"),
        &[("objectClass", &["organizationalUnit"])],
    )
    .await;
    add_owned(
        &mut ldap,
        &format!("uid=keep,ou=A,{ns}"),
        person("keep", &[]),
    )
    .await;
    add_owned(
        &mut ldap,
        &format!("uid=gone,ou=A,{ns}"),
        person("gone", &[]),
    )
    .await;
    let dir = s.directory(&ns);
    let accounts = by_username(&collect_accounts(&dir).await.unwrap());
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    let cursor = dir.current_cursor().await.unwrap();

    // nothing of ours changed yet (slapd's session log may report deletions made by tests
    // running next to this one elsewhere in the tree: unknown anchors, no-ops for the engine)
    let ours: Vec<Anchor> = accounts.values().map(|a| a.anchor.clone()).collect();
    let cs = dir.changes(&cursor).await.unwrap();
    assert!(
        cs.account_upserts.is_empty() && cs.org_upserts.is_empty(),
        "{cs:?}"
    );
    assert!(cs.org_deletes.is_empty(), "{cs:?}");
    assert!(
        ours.iter().all(|a| !cs.account_deletes.contains(a)),
        "{cs:?}"
    );
    assert!(cs.complete);

    // add, modify, rename, move, delete
    add_owned(
        &mut ldap,
        &format!("uid=new,ou=B,{ns}"),
        person("new", &[("mail", &["new@x"])]),
    )
    .await;
    modify(
        &mut ldap,
        &format!("uid=keep,ou=A,{ns}"),
        "title",
        &["Boss"],
    )
    .await;
    ldap.modifydn(
        &format!("uid=keep,ou=A,{ns}"),
        "uid=kept",
        true,
        Some(&format!("ou=B,{ns}")),
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    ldap.modifydn(&format!("ou=B,{ns}"), "ou=Bee", true, None)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap.delete(&format!("uid=gone,ou=A,{ns}"))
        .await
        .unwrap()
        .success()
        .unwrap();

    let cs = dir.changes(&cursor).await.unwrap();
    assert!(cs.complete);
    let up = by_username(&cs.account_upserts);
    assert_eq!(up.len(), 2, "{:?}", cs.account_upserts);
    assert_eq!(up["new"].email.as_deref(), Some("new@x"));
    assert_eq!(up["new"].orgs, vec![orgs["B"].anchor.clone()]);
    let kept = &up["kept"];
    assert_eq!(
        kept.anchor, accounts["keep"].anchor,
        "a rename keeps the anchor"
    );
    assert_eq!(kept.title.as_deref(), Some("Boss"));
    assert_eq!(kept.orgs, vec![orgs["B"].anchor.clone()], "moved to B");
    assert_eq!(cs.org_upserts.len(), 1);
    assert_eq!(cs.org_upserts[0].name, "Bee");
    assert_eq!(cs.org_upserts[0].anchor, orgs["B"].anchor);
    assert!(
        cs.account_deletes.contains(&accounts["gone"].anchor),
        "{cs:?}"
    );
    assert!(
        cs.org_deletes.is_empty(),
        "an account's deletion is not an org's: {cs:?}"
    );

    // the new cursor sees nothing more; the old one still sees everything (commit is the engine's)
    let next = cs.cursor.clone().unwrap();
    let again = dir.changes(&next).await.unwrap();
    assert!(
        again.account_upserts.is_empty() && again.org_upserts.is_empty(),
        "{again:?}"
    );
    assert!(
        !again.account_deletes.contains(&accounts["gone"].anchor),
        "{again:?}"
    );
    let replay = dir.changes(&cursor).await.unwrap();
    assert_eq!(replay.account_upserts.len(), 2);

    // an entry moved out of scope is a delete from this source's point of view
    ldap.modifydn(
        &format!("uid=new,ou=Bee,{ns}"),
        "uid=new",
        true,
        Some(&s.base_dn()),
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let cs = dir.changes(&next).await.unwrap();
    assert!(cs.account_deletes.contains(&up["new"].anchor), "{cs:?}");
    ldap.delete(&format!("uid=new,{}", s.base_dn()))
        .await
        .unwrap();
}

#[tokio::test]
async fn tricky_dns_round_trip() {
    let s = openldap();
    let ns = namespace(s).await;
    let dir = s.directory(&ns);
    let names = [
        "R&D, Europe",
        "a+b=c",
        "销售部",
        " lead",
        "#hash",
        "trail ",
        "back\\slash",
        "semi;colon<>\"q\"",
    ];
    let mut anchors = Vec::new();
    for n in names {
        let a = dir
            .apply(&Op::CreateOrg {
                org: Org::new("-", None, n),
            })
            .await
            .unwrap_or_else(|e| panic!("create org {n:?}: {e}"))
            .anchor
            .unwrap();
        let mut acc = Account::new("-", format!("u{}", anchors.len()));
        acc.display_name = Some(format!("Name, {n}"));
        acc.orgs = vec![a.clone()];
        dir.apply(&Op::CreateAccount { account: acc })
            .await
            .unwrap_or_else(|e| panic!("account in {n:?}: {e}"));
        anchors.push(a);
    }
    // a multi-valued RDN made outside idsync
    let mut ldap = admin(s).await;
    let mv = Dn(vec![Rdn(vec![
        idsync_ldap::dn::Ava::new("cn", "Multi, Valued"),
        idsync_ldap::dn::Ava::new("uid", "mv"),
    ])]);
    let mv_dn = format!("{mv},ou=销售部,{ns}");
    add_owned(&mut ldap, &mv_dn, person("mv", &[])).await;

    let orgs = collect_orgs(&dir).await.unwrap();
    let got: BTreeMap<String, Anchor> = orgs
        .iter()
        .map(|o| (o.name.clone(), o.anchor.clone()))
        .collect();
    for (n, a) in names.iter().zip(&anchors) {
        assert_eq!(
            got.get(*n),
            Some(a),
            "org {n:?} read back by name; have {got:?}"
        );
    }
    let accounts = by_username(&collect_accounts(&dir).await.unwrap());
    assert_eq!(accounts.len(), names.len() + 1);
    assert_eq!(accounts["mv"].orgs, vec![got["销售部"].clone()]);
    for (i, a) in anchors.iter().enumerate() {
        assert_eq!(accounts[&format!("u{i}")].orgs, vec![a.clone()]);
    }
    // rename to and from tricky names, and move below another tricky org
    let mut patch = BTreeMap::new();
    patch.insert("name".to_owned(), json!("x, y + z"));
    dir.apply(&Op::UpdateOrg {
        anchor: anchors[0].clone(),
        changes: patch,
    })
    .await
    .unwrap();
    dir.apply(&Op::MoveOrg {
        anchor: anchors[0].clone(),
        parent: Some(anchors[2].clone()),
    })
    .await
    .unwrap();
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    assert_eq!(orgs["x, y + z"].parent.as_ref(), Some(&anchors[2]));
    let accounts = by_username(&collect_accounts(&dir).await.unwrap());
    assert_eq!(accounts["u0"].orgs, vec![anchors[0].clone()]);
}

#[tokio::test]
async fn tls_ldaps_and_starttls_verify_the_server() {
    let s = openldap();
    let ns = namespace(s).await;
    // StartTLS on ldap://
    let mut cfg = s.config(&ns);
    cfg.starttls = true;
    LdapDirectory::new(cfg).unwrap().check().await.unwrap();
    // ldaps://
    if let Some(ldaps) = s.vars.get("LDAP_LDAPS_URL") {
        let mut cfg = s.config(&ns);
        cfg.url = ldaps.clone();
        LdapDirectory::new(cfg).unwrap().check().await.unwrap();
    }
    // a CA that did not sign the server's certificate: the handshake must fail
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut cfg = s.config(&ns).with_ca_file(&other_ca);
    cfg.starttls = true;
    let err = LdapDirectory::new(cfg).unwrap().check().await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate") || err.to_string().contains("TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_are_classified() {
    let s = openldap();
    let ns = namespace(s).await;
    let cfg = s.config(&ns).with_bind(s.bind_dn(), "wrong-password");
    let err = LdapDirectory::new(cfg).unwrap().check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(!err.is_temporary());
    assert_eq!(err.provider_code(), Some("49"));
    assert!(!err.to_string().contains("wrong-password"));

    let mut cfg = s.config(&ns);
    cfg.url = "ldap://127.0.0.1:1".into();
    let err = LdapDirectory::new(cfg).unwrap().check().await.unwrap_err();
    assert!(err.is_temporary(), "{err}");

    let dir = s.directory(&ns);
    let err = dir
        .apply(&Op::UpdateAccount {
            anchor: Anchor::new("00000000-0000-0000-0000-000000000000"),
            changes: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let mut acc = Account::new("-", "dup");
    acc.display_name = Some("Dup".into());
    dir.apply(&Op::CreateAccount {
        account: acc.clone(),
    })
    .await
    .unwrap();
    let err = dir
        .apply(&Op::CreateAccount { account: acc })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.provider_code(), Some("68"));

    let missing = s.directory(&format!("ou=missing,{ns}"));
    assert_eq!(
        missing.check().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// The server's size limit is smaller than the directory: paging still reads everything when
/// the server allows paging past it, and when it does not, the listing fails instead of
/// coming back short.
#[tokio::test]
async fn size_limit_smaller_than_directory_never_truncates() {
    let s = openldap();
    let Some(config_dn) = s.vars.get("LDAP_CONFIG_BIND_DN").cloned() else {
        panic!("LDAP_CONFIG_BIND_DN is needed to change the size limit on cn=config");
    };
    let config_pw = s.vars.get("LDAP_CONFIG_BIND_PW").cloned().unwrap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    // a non-root reader: the rootdn is exempt from limits
    let reader = format!("uid=reader,{ns}");
    add_owned(
        &mut ldap,
        &reader,
        person("reader", &[("userPassword", &["reader-pw"])]),
    )
    .await;
    for i in 0..12 {
        add_owned(
            &mut ldap,
            &format!("uid=s{i},{ns}"),
            person(&format!("s{i}"), &[]),
        )
        .await;
    }
    let (conn, mut cfgconn) = ldap3::LdapConnAsync::new(&s.url()).await.unwrap();
    ldap3::drive!(conn);
    cfgconn
        .simple_bind(&config_dn, &config_pw)
        .await
        .unwrap()
        .success()
        .unwrap();
    let db = {
        let (entries, _) = cfgconn
            .search(
                "cn=config",
                ldap3::Scope::OneLevel,
                "(olcSuffix=*)",
                vec!["olcSuffix"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        entries
            .into_iter()
            .map(ldap3::SearchEntry::construct)
            .find(|e| {
                e.attrs["olcSuffix"].iter().any(|sfx| {
                    Dn::parse(&s.base_dn())
                        .unwrap()
                        .is_within(&Dn::parse(sfx).unwrap())
                })
            })
            .unwrap()
            .dn
    };
    let set_limit = |v: &'static str| {
        let db = db.clone();
        let mut c = cfgconn.clone();
        async move {
            c.modify(&db, vec![ldap3::Mod::Replace("olcSizeLimit", [v].into())])
                .await
                .unwrap()
                .success()
                .unwrap();
        }
    };
    let mut cfg = s.config(&ns).with_bind(&reader, "reader-pw");
    cfg.page_size = 2;
    let dir = LdapDirectory::new(cfg).unwrap();

    // 1. limit 3, paging allowed past it (like AD's MaxPageSize): everything arrives
    set_limit("size.soft=3 size.hard=3 size.prtotal=unlimited").await;
    let all = collect_accounts(&dir).await;
    // 2. limit 3 for paged results too: the listing must fail, not come back short
    set_limit("3").await;
    let short = collect_accounts(&dir).await;
    set_limit("unlimited").await;

    let all = all.unwrap();
    assert_eq!(all.len(), 13, "every entry despite a size limit of 3");
    let err = short.expect_err("a truncated listing must be an error");
    assert_eq!(err.kind(), ErrorKind::Incomplete);
    assert_eq!(err.provider_code(), Some("4"));
    // and a plain (unpaged) search really is cut by the limit in case 1's setting
    set_limit("size.soft=3 size.hard=3 size.prtotal=unlimited").await;
    let (c2, mut plain) = ldap3::LdapConnAsync::new(&s.url()).await.unwrap();
    ldap3::drive!(c2);
    plain
        .simple_bind(&reader, "reader-pw")
        .await
        .unwrap()
        .success()
        .unwrap();
    let res = plain
        .search(
            &ns,
            ldap3::Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["uid"],
        )
        .await
        .unwrap();
    set_limit("unlimited").await;
    assert_eq!(res.1.rc, 4);
    assert!(res.0.len() <= 3);
}

#[tokio::test]
async fn conformance_suite_as_source_and_sink() {
    let harness = common::Harness {
        server: openldap(),
        tweak: |cfg| {
            cfg.account_attributes
                .insert("manager".into(), "manager".into());
            cfg.secondary_orgs_attribute = Some("departmentNumber".into());
        },
        options: idsync_conformance::Options::default(),
        one_namespace_at_a_time: false,
        live: Default::default(),
    };
    let report = idsync_conformance::run_all(&harness).await;
    println!("{report}");
    report.assert_passed();
}

/// `dialect = "generic"`: `modifyTimestamp` polling (no deletions), no disabling by default.
#[tokio::test]
async fn generic_dialect_polls_modify_timestamp() {
    let s = openldap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    add_owned(&mut ldap, &format!("uid=old,{ns}"), person("old", &[])).await;
    let mut cfg = idsync_ldap::LdapConfig::new(s.url(), &ns, idsync_ldap::Dialect::Generic)
        .with_bind(s.bind_dn(), s.bind_pw());
    cfg.allow_plaintext = true;
    let dir = LdapDirectory::new(cfg).unwrap();
    assert!(!dir.capabilities().disable, "no disable marker configured");
    assert!(dir.capabilities().changes);
    let cursor = dir.current_cursor().await.unwrap();
    assert!(cursor.0.starts_with("mts:"));
    add_owned(
        &mut ldap,
        &format!("uid=fresh,{ns}"),
        person("fresh", &[("title", &["New"])]),
    )
    .await;
    let cs = dir.changes(&cursor).await.unwrap();
    assert!(cs.complete);
    let up = by_username(&cs.account_upserts);
    assert_eq!(up["fresh"].title.as_deref(), Some("New"));
    // the cursor moves to the newest modifyTimestamp seen
    let next = cs.cursor.unwrap();
    assert_ne!(next, cursor);
    let err = dir
        .apply(&Op::DisableAccount {
            anchor: up["fresh"].anchor.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

/// Subtree searches among `searches`: a listing is one per page, a lookup exactly one.
fn subtree(searches: &[common::proxy::Search]) -> usize {
    searches.iter().filter(|s| s.is_subtree()).count()
}

/// `org`, `account` and `find_accounts` are direct searches: each issues exactly one subtree
/// search (counted by a proxy in front of slapd; a listing at page size 2 would need many),
/// plus base-scope reads resolving the parent org and manager. Filter values are escaped:
/// `*`, parentheses, backslash and NUL match only themselves.
#[tokio::test]
async fn lookups_are_single_searches_with_escaped_values() {
    let s = openldap();
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    let dept = format!("ou=Dept,{ns}");
    let team = format!("ou=Team,{dept}");
    for dn in [&dept, &team] {
        add(&mut ldap, dn, &[("objectClass", &["organizationalUnit"])]).await;
    }
    let boss_dn = format!("uid=boss,{dept}");
    add_owned(
        &mut ldap,
        &boss_dn,
        person(
            "boss",
            &[("mail", &[" Boss@Example.com"]), ("title", &["Lead"])],
        ),
    )
    .await;
    // employeeNumber values that are filter syntax, and decoys an unescaped filter matches
    let tricky: &[(&str, &str)] = &[
        ("star", "a*b"),
        ("starx", "aZZb"),
        ("inject", "x)(uid=*"),
        ("backslash", "back\\slash"),
        ("backhex", "back5cslash"),
        ("nul", "nul\0byte"),
        ("nulx", "nul"),
    ];
    for (uid, num) in tricky {
        let mut attrs = vec![
            ("objectClass", vec!["inetOrgPerson".to_owned()]),
            ("uid", vec![(*uid).to_owned()]),
            ("cn", vec![(*uid).to_owned()]),
            ("sn", vec![(*uid).to_owned()]),
            ("employeeNumber", vec![(*num).to_owned()]),
            ("title", vec!["Engineer".to_owned()]),
        ];
        if *uid == "star" {
            attrs.push(("displayName", vec!["Ärger Ölmann".to_owned()]));
        }
        add_owned(&mut ldap, &format!("uid={uid},{team}"), attrs).await;
    }
    modify(
        &mut ldap,
        &format!("uid=star,{team}"),
        "manager",
        &[&boss_dn],
    )
    .await;

    let proxy = common::proxy::Proxy::start(&s.url()).await;
    let mut cfg = s.config(&ns);
    cfg.url = proxy.url.clone();
    cfg.page_size = 2;
    cfg.account_attributes
        .insert("manager".into(), "manager".into());
    let dir = LdapDirectory::new(cfg).unwrap();

    let listed = by_username(&collect_accounts(&dir).await.unwrap());
    let orgs = by_name(&collect_orgs(&dir).await.unwrap());
    assert_eq!(listed.len(), 8);
    assert!(
        subtree(&proxy.searches()) >= 6,
        "page size 2: a listing takes one search per page"
    );

    // by anchor: the same account as the listing shows, in one search
    let mark = proxy.searches().len();
    let star = dir
        .account(&listed["star"].anchor)
        .await
        .unwrap()
        .expect("found by entryUUID");
    let used = proxy.searches_since(mark);
    assert_eq!(star, listed["star"]);
    assert_eq!(star.manager.as_ref(), Some(&listed["boss"].anchor));
    assert_eq!(star.orgs, vec![orgs["Team"].anchor.clone()]);
    assert_eq!(subtree(&used), 1, "one search, no listing: {used:?}");
    assert!(
        used.iter().all(|s| s.is_subtree() || s.scope == 0),
        "{used:?}"
    );
    assert!(
        used.len() <= 3,
        "the search, the parent OU, the manager: {used:?}"
    );

    let mark = proxy.searches().len();
    let t = dir.org(&orgs["Team"].anchor).await.unwrap().unwrap();
    assert_eq!(t, orgs["Team"]);
    assert_eq!(t.parent.as_ref(), Some(&orgs["Dept"].anchor));
    assert_eq!(subtree(&proxy.searches_since(mark)), 1);

    // anchors of other kinds, of the base entry, unknown or malformed: not found
    let base = read(&mut ldap, &ns, &["entryUUID"]).await.unwrap();
    let base_anchor = Anchor::new(base.attrs["entryUUID"][0].clone());
    assert_eq!(
        dir.org(&base_anchor).await.unwrap(),
        None,
        "the base is no org"
    );
    assert_eq!(dir.org(&listed["star"].anchor).await.unwrap(), None);
    assert_eq!(dir.account(&orgs["Team"].anchor).await.unwrap(), None);
    for missing in ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "*"] {
        assert_eq!(
            dir.account(&Anchor::new(missing)).await.unwrap(),
            None,
            "{missing}"
        );
    }
    let upper = Anchor::new(listed["boss"].anchor.as_str().to_uppercase());
    assert_eq!(
        dir.account(&upper).await.unwrap().map(|a| a.username),
        Some("boss".into())
    );

    // by field: escaped equality, then compared trimmed and case-folded
    let find = |field: &'static str, value: &'static str| {
        let dir = dir.clone();
        let proxy = proxy.clone();
        async move {
            let mark = proxy.searches().len();
            let mut names: Vec<String> = dir
                .find_accounts(field, value)
                .await
                .unwrap_or_else(|e| panic!("find {field}={value:?}: {e}"))
                .into_iter()
                .map(|a| a.username)
                .collect();
            let used = proxy.searches_since(mark);
            assert!(
                subtree(&used) <= 1,
                "find {field}={value:?}: one search at most: {used:?}"
            );
            names.sort();
            names
        }
    };
    assert_eq!(find("employee_id", "a*b").await, ["star"]);
    assert_eq!(find("employee_id", "a*").await, Vec::<String>::new());
    assert_eq!(find("employee_id", "x)(uid=*").await, ["inject"]);
    assert_eq!(find("employee_id", "back\\slash").await, ["backslash"]);
    assert_eq!(
        find("employee_id", "back\\5cslash").await,
        Vec::<String>::new()
    );
    assert_eq!(find("employee_id", "nul\0byte").await, ["nul"]);
    assert_eq!(find("employee_id", " NUL ").await, ["nulx"]);
    assert_eq!(find("email", "  boss@EXAMPLE.com ").await, ["boss"]);
    assert_eq!(find("display_name", " ärger ÖLMANN ").await, ["star"]);
    assert_eq!(find("username", "STAR").await, ["star"]);
    assert_eq!(find("email", "   ").await, Vec::<String>::new());
    assert_eq!(
        find("title", "engineer").await,
        [
            "backhex",
            "backslash",
            "inject",
            "nul",
            "nulx",
            "star",
            "starx"
        ],
        "seven matches at page size 2 are still one search"
    );
    let by_anchor = dir
        .find_accounts("anchor", listed["boss"].anchor.as_str())
        .await
        .unwrap();
    assert_eq!(by_anchor, vec![listed["boss"].clone()]);
    for field in ["orgs", "status", "manager", "attrs.nope"] {
        let err = dir.find_accounts(field, "x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{field}: {err}");
    }
}

/// One `accounts` call: its token, and the number of items or the error's kind and whether
/// it was temporary.
type Call = (Option<PageToken>, Result<usize, (ErrorKind, bool)>);

/// Records every `accounts` call of the directory it wraps.
#[derive(Debug)]
struct Recorder {
    inner: std::sync::Arc<dyn Source>,
    calls: std::sync::Mutex<Vec<Call>>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Source for Recorder {
    fn describe(&self) -> idsync_core::Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> idsync_core::Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> idsync_core::Result<()> {
        self.inner.check().await
    }
    async fn orgs(&self, page: PageRequest) -> idsync_core::Result<idsync_core::Page<Org>> {
        self.inner.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> idsync_core::Result<idsync_core::Page<Account>> {
        let token = page.token.clone();
        let res = self.inner.accounts(page).await;
        let outcome = match &res {
            Ok(p) => Ok(p.items.len()),
            Err(e) => Err((e.kind(), e.is_temporary())),
        };
        self.calls.lock().unwrap().push((token, outcome));
        res
    }
    async fn org(&self, anchor: &Anchor) -> idsync_core::Result<Option<Org>> {
        self.inner.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> idsync_core::Result<Option<Account>> {
        self.inner.account(anchor).await
    }
    async fn find_accounts(&self, field: &str, value: &str) -> idsync_core::Result<Vec<Account>> {
        self.inner.find_accounts(field, value).await
    }
    async fn current_cursor(&self) -> idsync_core::Result<idsync_core::SyncCursor> {
        self.inner.current_cursor().await
    }
    async fn changes(
        &self,
        since: &idsync_core::SyncCursor,
    ) -> idsync_core::Result<idsync_core::ChangeSet> {
        self.inner.changes(since).await
    }
}

/// 23 accounts in two OUs below a fresh namespace; returns the namespace and the DN of each
/// account by uid.
async fn paging_fixture(s: &common::Server) -> (String, BTreeMap<String, String>) {
    let ns = namespace(s).await;
    let mut ldap = admin(s).await;
    let mut dns = BTreeMap::new();
    for ou in ["A", "B"] {
        add(
            &mut ldap,
            &format!("ou={ou},{ns}"),
            &[("objectClass", &["organizationalUnit"])],
        )
        .await;
    }
    for i in 0..23 {
        let uid = format!("u{i:02}");
        let dn = format!("uid={uid},ou={},{ns}", if i % 2 == 0 { "A" } else { "B" });
        add_owned(&mut ldap, &dn, person(&uid, &[])).await;
        dns.insert(uid, dn);
    }
    (ns, dns)
}

/// The connection of a listing dies while one page is being fetched. The retry layer asks
/// for that page again with the same token; the listing re-issues its search, skips what it
/// already served and goes on: every account exactly once.
#[tokio::test]
async fn a_failed_page_fetch_is_re_read_by_the_retry_layer() {
    use idsync_core::layers::{Layer, RetryLayer};
    let s = openldap();
    let (ns, dns) = paging_fixture(s).await;
    let proxy = common::proxy::Proxy::start(&s.url()).await;
    let mut cfg = s.config(&ns);
    cfg.url = proxy.url.clone();
    cfg.page_size = 4;
    let rec = std::sync::Arc::new(Recorder {
        inner: std::sync::Arc::new(LdapDirectory::new(cfg).unwrap()),
        calls: Default::default(),
    });
    let src = RetryLayer::new()
        .with_backoff(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(2),
        )
        .layer_source(rec.clone());
    // search 1 is page 0, 2 the read-ahead of page 1, 3 the read-ahead of page 2: cut
    proxy.cut_at_subtree_search(3);
    let got: Vec<String> = collect_accounts(&*src)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no duplicates: {got:?}");
    assert_eq!(
        sorted,
        dns.keys().cloned().collect::<Vec<_>>(),
        "nothing missing"
    );

    assert_eq!(proxy.searches().iter().filter(|s| s.cut).count(), 1);
    let calls = rec.calls();
    let failed: Vec<usize> = (0..calls.len()).filter(|i| calls[*i].1.is_err()).collect();
    assert_eq!(failed.len(), 1, "one failed page fetch: {calls:?}");
    let f = failed[0];
    assert_eq!(calls[f].1, Err((ErrorKind::Unavailable, true)), "{calls:?}");
    assert!(calls[f].0.is_some(), "a later page failed: {calls:?}");
    assert_eq!(
        calls[f + 1].0,
        calls[f].0,
        "the retry re-read the same page"
    );
    assert_eq!(calls[f + 1].1, Ok(4), "{calls:?}");
    assert_eq!(calls.len(), 7, "6 pages and one retry: {calls:?}");
}

/// A page fetch that never gets an answer is cancelled by the timeout layer (the call's
/// future is dropped mid-fetch); the retry layer asks for the page again and the listing,
/// left without a connection, re-issues its search: every account exactly once.
#[tokio::test]
async fn a_timed_out_page_fetch_is_re_read() {
    use idsync_core::layers::{Layer, RetryLayer, TimeoutLayer};
    let s = openldap();
    let (ns, dns) = paging_fixture(s).await;
    let proxy = common::proxy::Proxy::start(&s.url()).await;
    let mut cfg = s.config(&ns);
    cfg.url = proxy.url.clone();
    cfg.page_size = 4;
    let dir: std::sync::Arc<dyn Source> = std::sync::Arc::new(LdapDirectory::new(cfg).unwrap());
    let rec = std::sync::Arc::new(Recorder {
        inner: TimeoutLayer::new(std::time::Duration::from_secs(2)).layer_source(dir),
        calls: Default::default(),
    });
    let src = RetryLayer::new()
        .with_backoff(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(2),
        )
        .layer_source(rec.clone());
    // search 4 is the read-ahead of page 3: it is never answered
    proxy.stall_at_subtree_search(4);
    let mut got: Vec<String> = collect_accounts(&*src)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    got.sort();
    assert_eq!(got, dns.keys().cloned().collect::<Vec<_>>(), "each once");
    assert_eq!(proxy.searches().iter().filter(|s| s.stalled).count(), 1);
    let calls = rec.calls();
    let failed: Vec<usize> = (0..calls.len()).filter(|i| calls[*i].1.is_err()).collect();
    assert_eq!(failed.len(), 1, "one timed-out page fetch: {calls:?}");
    let f = failed[0];
    assert_eq!(calls[f].1, Err((ErrorKind::Unavailable, true)), "{calls:?}");
    assert_eq!(
        calls[f + 1].0,
        calls[f].0,
        "the retry re-read the same page"
    );
    assert_eq!(calls[f + 1].1, Ok(4), "{calls:?}");
    assert_eq!(calls.len(), 7, "6 pages and one retry: {calls:?}");
}

/// A page token can be replayed: the same items and the same next token, and the listing
/// goes on after it. A re-read after the directory changed under an interrupted listing
/// fails (permanently) instead of skipping the wrong entries.
#[tokio::test]
async fn pages_replay_and_a_changed_directory_is_not_resumed() {
    let s = openldap();
    let (ns, dns) = paging_fixture(s).await;
    let proxy = common::proxy::Proxy::start(&s.url()).await;
    let mut cfg = s.config(&ns);
    cfg.url = proxy.url.clone();
    let dir = LdapDirectory::new(cfg).unwrap();

    let p0 = dir.accounts(PageRequest::sized(5)).await.unwrap();
    let mut req = PageRequest::sized(5);
    req.token = p0.next.clone();
    let p1 = dir.accounts(req.clone()).await.unwrap();
    let again = dir.accounts(req.clone()).await.unwrap();
    assert_eq!(p1, again, "a replayed token gives the same page");
    assert_ne!(p1.next, req.token);
    let mut names: Vec<String> = p0
        .items
        .iter()
        .chain(&p1.items)
        .map(|a| a.username.clone())
        .collect();
    req.token = p1.next.clone();
    while req.token.is_some() {
        let p = dir.accounts(req.clone()).await.unwrap();
        names.extend(p.items.into_iter().map(|a| a.username));
        req.token = p.next;
    }
    names.sort();
    assert_eq!(names, dns.keys().cloned().collect::<Vec<_>>());

    // interrupted at page 2; meanwhile an account served on page 0 is deleted
    proxy.cut_at_subtree_search(3);
    let p0 = dir.accounts(PageRequest::sized(5)).await.unwrap();
    let mut req = PageRequest::sized(5);
    req.token = p0.next.clone();
    let p1 = dir.accounts(req.clone()).await.unwrap();
    req.token = p1.next.clone();
    let err = dir.accounts(req.clone()).await.unwrap_err();
    assert!(err.is_temporary(), "the cut connection: {err}");
    let mut ldap = admin(s).await;
    ldap.delete(&dns[&p0.items[0].username])
        .await
        .unwrap()
        .success()
        .unwrap();
    let err = dir.accounts(req.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Incomplete, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("changed"), "{err}");
}
