//! The SCIM client sink against a real scim2-server 0.8.3: the shared conformance suite,
//! a hub → scim2-server → read-back round trip, match-before-create and 409 adoption,
//! PUT-only mode, hard delete, and OAuth2 client credentials.

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::Peer;
use idsync_conformance::{Harness, run_all};
use idsync_core::{
    Account, Anchor, Engine, ErrorKind, Job, MemoryAdapter, MemoryStore, Op, Org, Result, Sink,
    Source, Status, Store,
};
use idsync_scim::{AuthConfig, GroupMode, MatchBy, ScimClient, SecretRef, TargetConfig};
use serde_json::{Value, json};

fn secret_file(value: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, format!("{value}\n")).unwrap();
    (dir, p)
}

struct Target {
    peer: Peer,
    _secret: tempfile::TempDir,
    cfg: TargetConfig,
}

fn target(tweak: impl FnOnce(TargetConfig) -> TargetConfig) -> Target {
    let peer = Peer::start();
    let (dir, file) = secret_file(&peer.token);
    let mut cfg = TargetConfig::bearer(peer.url.clone(), "UNUSED");
    cfg.auth = AuthConfig::Bearer {
        token: SecretRef::File(file),
    };
    Target {
        cfg: tweak(cfg),
        peer,
        _secret: dir,
    }
}

impl Target {
    fn client(&self) -> Arc<ScimClient> {
        Arc::new(ScimClient::new(self.cfg.clone()).unwrap())
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.peer.url))
            .bearer_auth(&self.peer.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let st = r.status().as_u16();
        let t = r.text().await.unwrap();
        (st, serde_json::from_str(&t).unwrap_or(Value::Null))
    }
}

/// One fresh scim2-server per seeded namespace; hub orgs as nested Groups, or no Groups.
struct ScimHarness {
    live: Mutex<Vec<Target>>,
    groups: GroupMode,
}

impl ScimHarness {
    fn new(groups: GroupMode) -> Self {
        ScimHarness {
            live: Mutex::new(Vec::new()),
            groups,
        }
    }

    fn target(&self) -> Target {
        let groups = self.groups;
        target(move |mut c| {
            c.groups = groups;
            c
        })
    }
}

#[async_trait]
impl Harness for ScimHarness {
    fn name(&self) -> String {
        format!("scim client, groups {:?} (scim2-server 0.8.3)", self.groups)
    }

    async fn seed(&self, orgs: Vec<Org>, mut accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let t = self.target();
        let orgs = if self.groups == GroupMode::Off {
            accounts.iter_mut().for_each(|a| a.orgs.clear());
            Vec::new()
        } else {
            orgs
        };
        let client = t.client();
        // The fixture's anchors become the server's ids: orgs (parents first) as Groups,
        // accounts as Users in them; managers are set once both exist.
        let mut groups: HashMap<Anchor, Anchor> = HashMap::new();
        for o in &orgs {
            let mut o2 = o.clone();
            o2.parent = o.parent.as_ref().map(|p| groups[p].clone());
            let applied = client.apply(&Op::CreateOrg { org: o2 }).await?;
            groups.insert(o.anchor.clone(), applied.anchor.unwrap());
        }
        let mut ids: HashMap<Anchor, Anchor> = HashMap::new();
        for a in &accounts {
            let mut a2 = a.clone();
            a2.manager = None;
            a2.orgs = a.orgs.iter().map(|o| groups[o].clone()).collect();
            let applied = client.apply(&Op::CreateAccount { account: a2 }).await?;
            ids.insert(a.anchor.clone(), applied.anchor.unwrap());
        }
        for a in &accounts {
            if let Some(m) = &a.manager {
                let mut p = idsync_core::Patch::new();
                p.insert("manager".into(), json!(ids[m].as_str()));
                client
                    .apply(&Op::UpdateAccount {
                        anchor: ids[&a.anchor].clone(),
                        changes: p,
                    })
                    .await?;
            }
        }
        self.live.lock().unwrap().push(t);
        Ok(client)
    }

    async fn cleanup(&self, _sink: Arc<dyn Sink>) -> Result<()> {
        // Each namespace is its own server: stopping it removes it.
        self.live.lock().unwrap().clear();
        Ok(())
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let t = target(|c| c);
        let (dir, file) = secret_file("not-the-token");
        let mut cfg = t.cfg.clone();
        cfg.auth = AuthConfig::Bearer {
            token: SecretRef::File(file),
        };
        let c: Arc<dyn Source> = Arc::new(ScimClient::new(cfg).unwrap());
        drop(dir);
        self.live.lock().unwrap().push(t);
        Some(c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_as_a_sink() {
    let h = ScimHarness::new(GroupMode::Nested);
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    // Memberships are compared as a set (the client has no primary Group): the cases on
    // accounts in several orgs run too; only what the client does not offer is skipped.
    assert_eq!(
        report.skipped_cases(),
        vec!["cursor_resume", "throttled"],
        "{report}"
    );
}

/// Without Groups, the whole suite runs: no case is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_as_a_sink_without_groups() {
    let h = ScimHarness::new(GroupMode::Off);
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
}

fn hub_data() -> (Vec<Org>, Vec<Account>) {
    let mut boss = Account::new("h-boss", "boss");
    boss.display_name = Some("The Boss".into());
    boss.email = Some("boss@example.com".into());
    boss.employee_id = Some("1".into());
    let mut alice = Account::new("h-alice", "alice");
    alice.display_name = Some("Alice".into());
    alice.email = Some("alice@example.com".into());
    alice.phone = Some("+1 555 0100".into());
    alice.title = Some("Engineer".into());
    alice.manager = Some("h-boss".into());
    let mut bob = Account::new("h-bob", "bob");
    bob.status = Status::Disabled;
    (Vec::new(), vec![boss, alice, bob])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_to_scim2_server_and_read_back_round_trip() {
    let t = target(|c| c);
    let (orgs, accounts) = hub_data();
    let hub_side = Arc::new(MemoryAdapter::with_data("hub", orgs, accounts.clone()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store);
    let job = Job::new("hub-to-app", hub_side.clone(), t.client());
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:?}");
    let again = engine.run(&job).await.unwrap();
    assert_eq!(
        again.counts.planned, 0,
        "a second run plans nothing: {again:?}"
    );

    // Read the app back as a source.
    let back = idsync_core::source::collect_accounts(&*t.client())
        .await
        .unwrap();
    let by_name: HashMap<String, Account> =
        back.into_iter().map(|a| (a.username.clone(), a)).collect();
    assert_eq!(by_name.len(), 3);
    let alice = &by_name["alice"];
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.phone.as_deref(), Some("+1 555 0100"));
    assert_eq!(alice.title.as_deref(), Some("Engineer"));
    assert_eq!(
        alice.manager.as_ref(),
        Some(&by_name["boss"].anchor),
        "manager is the app's id"
    );
    assert_eq!(by_name["boss"].employee_id.as_deref(), Some("1"));
    assert_eq!(by_name["bob"].status, Status::Disabled);

    // A change in the hub is a PATCH; a removal deprovisions as active=false.
    hub_side
        .edit(|d| {
            let mut a = d.accounts.get(&Anchor::from("h-alice")).cloned().unwrap();
            a.title = Some("Staff Engineer".into());
            d.accounts.insert(a.anchor.clone(), a);
            d.accounts.remove(&Anchor::from("h-boss"));
        })
        .unwrap();
    let job = job.with_guard(idsync_core::Guard::off());
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:?}");
    let (_, v) = t
        .raw(
            reqwest::Method::GET,
            &format!("/Users/{}", alice.anchor),
            None,
        )
        .await;
    assert_eq!(v["title"], "Staff Engineer");
    let (_, v) = t
        .raw(
            reqwest::Method::GET,
            &format!("/Users/{}", by_name["boss"].anchor),
            None,
        )
        .await;
    assert_eq!(v["active"], false, "deprovisioned, not deleted: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_before_create_adopts_an_existing_user() {
    let t = target(|c| c);
    let (st, existing) = t
        .raw(
            reqwest::Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "carol"})),
        )
        .await;
    assert_eq!(st, 201, "{existing}");
    let mut carol = Account::new("h-carol", "carol");
    carol.email = Some("carol@example.com".into());
    let applied = t
        .client()
        .apply(&Op::CreateAccount { account: carol })
        .await
        .unwrap();
    assert_eq!(
        applied.anchor.unwrap().as_str(),
        existing["id"].as_str().unwrap()
    );
    let (_, list) = t.raw(reqwest::Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1, "no duplicate: {list}");
    assert_eq!(
        list["Resources"][0]["emails"][0]["value"],
        "carol@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_on_create_is_re_queried_and_adopted() {
    // Matching by externalId does not find the user that holds the userName: the POST
    // gets 409 and the client adopts the user it finds by userName.
    let t = target(|mut c| {
        c.match_by = MatchBy::ExternalId;
        c
    });
    let (_, existing) = t
        .raw(
            reqwest::Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "dave"})),
        )
        .await;
    let applied = t
        .client()
        .apply(&Op::CreateAccount {
            account: Account::new("h-dave", "dave"),
        })
        .await
        .unwrap();
    assert_eq!(
        applied.anchor.unwrap().as_str(),
        existing["id"].as_str().unwrap()
    );
    let (_, v) = t
        .raw(
            reqwest::Method::GET,
            &format!("/Users/{}", existing["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(v["externalId"], "h-dave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_only_mode_and_hard_delete() {
    let t = target(|mut c| {
        c.put_only = true;
        c.hard_delete = true;
        c
    });
    let c = t.client();
    let mut erin = Account::new("h-erin", "erin");
    erin.display_name = Some("Erin".into());
    let id = c
        .apply(&Op::CreateAccount { account: erin })
        .await
        .unwrap()
        .anchor
        .unwrap();
    let mut p = idsync_core::Patch::new();
    p.insert("title".into(), json!("Chief"));
    c.apply(&Op::UpdateAccount {
        anchor: id.clone(),
        changes: p,
    })
    .await
    .unwrap();
    let a = c.account(&id).await.unwrap().unwrap();
    assert_eq!(a.title.as_deref(), Some("Chief"));
    assert_eq!(
        a.display_name.as_deref(),
        Some("Erin"),
        "PUT keeps the other fields"
    );
    c.apply(&Op::DeleteAccount { anchor: id.clone() })
        .await
        .unwrap();
    assert!(c.account(&id).await.unwrap().is_none());
    let e = c
        .apply(&Op::DisableAccount { anchor: id })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials() {
    use axum::routing::post;
    let t = target(|c| c);
    let token = t.peer.token.clone();
    let calls = Arc::new(Mutex::new(0u32));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| {
            let token = token.clone();
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() += 1;
                let ok = body.contains("grant_type=client_credentials")
                    && body.contains("client_id=idsync")
                    && body.contains("client_secret=s3cret");
                if ok {
                    (
                        axum::http::StatusCode::OK,
                        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
                            .to_string(),
                    )
                } else {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        json!({"error": "invalid_client"}).to_string(),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (_d1, good) = secret_file("s3cret");
    let (_d2, bad) = secret_file("wrong");
    let oauth = |file: PathBuf| {
        let mut cfg = t.cfg.clone();
        cfg.auth = AuthConfig::Oauth2 {
            token_url: format!("http://{addr}/token"),
            client_id: "idsync".into(),
            client_secret: SecretRef::File(file),
            scope: None,
        };
        ScimClient::new(cfg).unwrap()
    };
    let c = oauth(good);
    c.check().await.unwrap();
    c.apply(&Op::CreateAccount {
        account: Account::new("h-frank", "frank"),
    })
    .await
    .unwrap();
    assert_eq!(*calls.lock().unwrap(), 1, "the token is cached");
    let e = oauth(bad).check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(!format!("{e} {e:?}").contains("s3cret") && !format!("{e}").contains("wrong"));
}

// ------------------------------------------------------------------------------ Groups

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A recording proxy in front of a scim2-server: the method, path and JSON body of every
/// request the client sends, forwarded as is.
async fn recording_proxy(upstream_base: &str) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let (origin, prefix) = upstream_base
        .rsplit_once('/')
        .map(|(o, p)| (o.to_owned(), format!("/{p}")))
        .unwrap();
    let http = reqwest::Client::new();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, origin, log) = (http.clone(), origin.clone(), log.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let pq = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            log.lock().unwrap().push((
                parts.method.to_string(),
                pq.clone(),
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
            let mut r = http.request(parts.method, format!("{origin}{pq}"));
            for h in ["authorization", "content-type", "accept"] {
                if let Some(v) = parts.headers.get(h) {
                    r = r.header(h, v.clone());
                }
            }
            let resp = r.body(bytes).send().await.unwrap();
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            let mut out =
                axum::response::Response::new(axum::body::Body::from(resp.bytes().await.unwrap()));
            *out.status_mut() = status;
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}{prefix}"), seen)
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut v: Vec<String> = group["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_empty_then_members_go_by_patch_in_batches() {
    let mut t = target(|mut c| {
        c.member_batch = 2;
        c
    });
    let (proxied, seen) = recording_proxy(&t.peer.url).await;
    t.cfg.base_url = proxied;
    let c = t.client();
    let mut users = Vec::new();
    for i in 0..5 {
        let a = Account::new(format!("h-u{i}"), format!("user{i}"));
        users.push(
            c.apply(&Op::CreateAccount { account: a })
                .await
                .unwrap()
                .anchor
                .unwrap(),
        );
    }
    let g = c
        .apply(&Op::CreateOrg {
            org: Org::new("h-eng", None, "Engineering"),
        })
        .await
        .unwrap()
        .anchor
        .unwrap();
    c.add_members(&g, &users).await.unwrap();

    let group_path = format!("/v2/Groups/{g}");
    let log = seen.lock().unwrap().clone();
    let post = log
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v2/Groups")
        .expect("a POST /Groups");
    assert!(post.2.get("members").is_none(), "created empty: {}", post.2);
    assert_eq!(post.2["externalId"], "h-eng");
    let sizes: Vec<usize> = log
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p == &group_path)
        .map(|(_, _, b)| {
            assert_eq!(b["Operations"][0]["op"], "add", "{b}");
            assert_eq!(b["Operations"][0]["path"], "members", "{b}");
            b["Operations"][0]["value"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(sizes, vec![2, 2, 1], "five members in PATCHes of at most 2");
    let (_, v) = t
        .raw(reqwest::Method::GET, &format!("/Groups/{g}"), None)
        .await;
    let mut want: Vec<String> = users.iter().map(|u| u.as_str().to_owned()).collect();
    want.sort();
    assert_eq!(member_ids(&v), want);

    // A membership change is a PATCH remove of that member, not a PUT of the group.
    seen.lock().unwrap().clear();
    let mut p = idsync_core::Patch::new();
    p.insert("orgs".into(), json!([]));
    c.apply(&Op::UpdateAccount {
        anchor: users[0].clone(),
        changes: p,
    })
    .await
    .unwrap();
    let log = seen.lock().unwrap().clone();
    let patch = log
        .iter()
        .find(|(m, p, _)| m == "PATCH" && p == &group_path)
        .expect("a PATCH of the group");
    assert_eq!(
        patch.2["Operations"],
        json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", users[0])}])
    );
    let (_, v) = t
        .raw(reqwest::Method::GET, &format!("/Groups/{g}"), None)
        .await;
    assert_eq!(member_ids(&v).len(), 4);
    let back = c.account(&users[0]).await.unwrap().unwrap();
    assert!(back.orgs.is_empty(), "{back:?}");
    let back = c.account(&users[1]).await.unwrap().unwrap();
    assert_eq!(back.orgs, vec![g.clone()]);

    // A rename is a PATCH of displayName; the members stay.
    let mut p = idsync_core::Patch::new();
    p.insert("name".into(), json!("Engineering & Ops"));
    c.apply(&Op::UpdateOrg {
        anchor: g.clone(),
        changes: p,
    })
    .await
    .unwrap();
    let (_, v) = t
        .raw(reqwest::Method::GET, &format!("/Groups/{g}"), None)
        .await;
    assert_eq!(v["displayName"], "Engineering & Ops");
    assert_eq!(member_ids(&v).len(), 4);

    // Delete.
    c.apply(&Op::DeleteOrg { anchor: g.clone() }).await.unwrap();
    let (st, _) = t
        .raw(reqwest::Method::GET, &format!("/Groups/{g}"), None)
        .await;
    assert_eq!(st, 404);
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p, _)| m == "PUT" && p.starts_with("/v2/Groups")),
        "no group is ever PUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_orgs_to_scim2_server_groups_round_trip() {
    let t = target(|c| c);
    let company = Org::new("o-company", None, "Company");
    let eng = Org::new("o-eng", Some("o-company".into()), "Engineering");
    let ops = Org::new("o-ops", Some("o-company".into()), "Operations");
    let mut accounts = Vec::new();
    for (anchor, name, org) in [
        ("h-alice", "alice", "o-eng"),
        ("h-bob", "bob", "o-ops"),
        ("h-carol", "carol", "o-eng"),
    ] {
        let mut a = Account::new(anchor, name);
        a.orgs = vec![org.into()];
        accounts.push(a);
    }
    let hub_side = Arc::new(MemoryAdapter::with_data(
        "hub",
        vec![company, eng, ops],
        accounts,
    ));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store);
    let job = Job::new("hub-to-app", hub_side.clone(), t.client());
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:?}");
    let again = engine.run(&job).await.unwrap();
    assert_eq!(
        again.counts.planned, 0,
        "a second run plans nothing: {again:?}"
    );

    // The tree reads back: Groups with their parents, Users in their Groups.
    let read = |c: Arc<ScimClient>| async move {
        let orgs = idsync_core::source::collect_orgs(&*c).await.unwrap();
        let names: HashMap<Anchor, Org> =
            orgs.iter().map(|o| (o.anchor.clone(), o.clone())).collect();
        let path = |o: &Org| {
            let mut p = vec![o.name.clone()];
            let mut cur = o.parent.clone();
            while let Some(x) = cur {
                p.insert(0, names[&x].name.clone());
                cur = names[&x].parent.clone();
            }
            p.join("/")
        };
        let mut paths: Vec<String> = orgs.iter().map(path).collect();
        paths.sort();
        let accounts = idsync_core::source::collect_accounts(&*c).await.unwrap();
        let mut members: Vec<String> = accounts
            .iter()
            .map(|a| {
                let g: Vec<String> = a.orgs.iter().map(|o| path(&names[o])).collect();
                format!("{}:{}", a.username, g.join(","))
            })
            .collect();
        members.sort();
        (paths, members)
    };
    let (paths, members) = read(t.client()).await;
    assert_eq!(
        paths,
        ["Company", "Company/Engineering", "Company/Operations"]
    );
    assert_eq!(
        members,
        [
            "alice:Company/Engineering",
            "bob:Company/Operations",
            "carol:Company/Engineering"
        ]
    );

    // Rename, move an org, move a person: PATCHes; the read-back follows.
    hub_side
        .edit(|d| {
            d.orgs.get_mut(&Anchor::from("o-eng")).unwrap().name = "R&D".into();
            d.orgs.get_mut(&Anchor::from("o-ops")).unwrap().parent = Some("o-eng".into());
            d.accounts.get_mut(&Anchor::from("h-carol")).unwrap().orgs = vec!["o-ops".into()];
        })
        .unwrap();
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:?}");
    let (paths, members) = read(t.client()).await;
    assert_eq!(paths, ["Company", "Company/R&D", "Company/R&D/Operations"]);
    assert_eq!(
        members,
        [
            "alice:Company/R&D",
            "bob:Company/R&D/Operations",
            "carol:Company/R&D/Operations"
        ]
    );
    let again = engine.run(&job).await.unwrap();
    assert_eq!(again.counts.planned, 0, "converged: {again:?}");
}
