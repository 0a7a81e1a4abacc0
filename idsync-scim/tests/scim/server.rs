//! idsync's SCIM server over HTTP: what scim2-tester does not cover (filters, paging,
//! sorting, ETags and races, errors, auth, the engine path), and one test per quirk of
//! what Microsoft Entra ID and Okta really send.

use crate::common;

use common::Running;
use idsync_core::{Anchor, EntityKind, Status};
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn create(s: &Running, body: Value) -> Value {
    let r = s.post("/Users", &body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn user(s: &Running, name: &str) -> Value {
    create(
        s,
        json!({"schemas": [USER], "userName": name, "displayName": format!("{name} display"),
               "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
               "active": true}),
    )
    .await
}

async fn list(s: &Running, query: &str) -> Value {
    let r = s.get(&format!("/Users?{query}")).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{query}: {v}");
    v
}

fn ids(v: &Value) -> Vec<String> {
    v["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn patch(s: &Running, id: &str, ops: Value) -> (u16, Value) {
    let r = s
        .patch(
            &format!("/Users/{id}"),
            &json!({"schemas": [PATCH], "Operations": ops}),
        )
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn writes_go_through_the_engine_as_the_clients_job() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let a = s
        .store
        .hub_account(&Anchor::from(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.username, "alice");
    assert_eq!(a.email.as_deref(), Some("alice@example.com"));
    let links = s
        .engine
        .links("scim-tests", EntityKind::Account)
        .await
        .unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    let runs = s.store.runs(Some("scim-tests"), 10).await.unwrap();
    assert!(!runs.is_empty(), "no run recorded for the SCIM job");
    let audit = s
        .store
        .audit(EntityKind::Account, &Anchor::from(id))
        .await
        .unwrap();
    assert!(!audit.is_empty(), "the create is not audited");
}

#[tokio::test]
async fn filters_over_http() {
    let s = common::start(|c| c).await;
    for n in ["alice", "bob", "carol", "dave"] {
        user(&s, n).await;
    }
    let q = |f: &str| format!("filter={}", enc(f));
    assert_eq!(ids(&list(&s, &q(r#"userName eq "BOB""#)).await), ["bob"]);
    assert_eq!(
        ids(&list(&s, &q(r#"userName sw "c" or userName ew "ve""#)).await).len(),
        2
    );
    assert_eq!(
        ids(&list(&s, &q(r#"emails[type eq "work" and value co "carol"]"#)).await),
        ["carol"]
    );
    assert_eq!(
        ids(&list(&s, &q(r#"not (userName ne "dave")"#)).await),
        ["dave"]
    );
    assert_eq!(
        list(&s, &q(r#"userName gt "bob" and active eq true"#)).await["totalResults"],
        2
    );
    assert_eq!(list(&s, &q("title pr")).await["totalResults"], 0);
    let r = s
        .get(&format!("/Users?{}", q(r#"userName eq"#)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scimType"], "invalidFilter");
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
}

#[tokio::test]
async fn pagination_is_stable_and_sorting_works() {
    let s = common::start(|c| c).await;
    for i in 0..7 {
        user(&s, &format!("user{i}")).await;
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let page = list(&s, &format!("startIndex={start}&count=3")).await;
        assert_eq!(page["totalResults"], 7);
        assert_eq!(page["startIndex"], start);
        let n = page["itemsPerPage"].as_u64().unwrap() as usize;
        if n == 0 {
            break;
        }
        seen.extend(ids(&page));
        start += n;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "every user once: {seen:?}");
    let again: Vec<String> = ids(&list(&s, "count=7").await);
    assert_eq!(again, seen, "the same order on every read");
    let desc = ids(&list(&s, "sortBy=userName&sortOrder=descending").await);
    assert_eq!(desc.first().map(String::as_str), Some("user6"));
    assert_eq!(desc.last().map(String::as_str), Some("user0"));
    let zero = list(&s, "count=0").await;
    assert_eq!(zero["itemsPerPage"], 0);
    assert_eq!(zero["totalResults"], 7);
}

#[tokio::test]
async fn attributes_and_excluded_attributes() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let r: Value = s
        .get(&format!("/Users/{id}?attributes=userName,emails.value"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["id"], id);
    assert_eq!(r["userName"], "alice");
    assert_eq!(r["emails"], json!([{"value": "alice@example.com"}]));
    assert!(r.get("displayName").is_none());
    let r: Value = s
        .get(&format!("/Users/{id}?excludedAttributes=emails,id"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r.get("emails").is_none());
    assert_eq!(r["id"], id, "id is always returned");
}

#[tokio::test]
async fn etags_and_if_match() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let r = s.get(&format!("/Users/{id}")).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["meta"]["version"], etag);
    let ops = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "CTO"}]});
    let ok = s
        .patch(&format!("/Users/{id}"), &ops)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let new_etag = ok.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let stale = s
        .patch(&format!("/Users/{id}"), &ops)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
    let v: Value = stale.json().await.unwrap();
    assert_eq!(v["status"], "412");
    let not_modified = s
        .get(&format!("/Users/{id}"))
        .header("if-none-match", &new_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status().as_u16(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_racing_on_one_user_one_gets_412() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap().to_owned();
    let etag = u["meta"]["version"].as_str().unwrap().to_owned();
    let send = |title: &'static str| {
        let req = s
            .patch(
                &format!("/Users/{id}"),
                &json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": title}]}),
            )
            .header("if-match", etag.clone());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let (a, b) = tokio::join!(send("one"), send("two"));
    let mut got = [a, b];
    got.sort();
    assert_eq!(got, [200, 412]);
}

#[tokio::test]
async fn user_name_conflicts_are_409_uniqueness() {
    let s = common::start(|c| c).await;
    user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let r = s
        .post("/Users", &json!({"schemas": [USER], "userName": "ALICE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scimType"], "uniqueness");
    let (st, v) = patch(
        &s,
        bob["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "userName", "value": "alice"}]),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["scimType"], "uniqueness");
}

#[tokio::test]
async fn bad_input_gets_a_scim_error_and_writes_nothing() {
    let s = common::start(|c| c.with_body_cap(2048)).await;
    let cases: Vec<(reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        (
            s.http
                .post(s.url("/Users"))
                .bearer_auth(common::TOKEN)
                .body("{\"userName\": \"x\","),
            400,
            Some("invalidSyntax"),
        ),
        (
            s.post("/Users", &json!({"userName": "x", "shoeSize": 44})),
            400,
            Some("invalidSyntax"),
        ),
        (
            s.post("/Users", &json!({"userName": "x", "active": "sometimes"})),
            400,
            Some("invalidValue"),
        ),
        (
            s.post("/Users", &json!({"displayName": "no name"})),
            400,
            Some("invalidValue"),
        ),
        (
            s.post(
                "/Users",
                &json!({"userName": "x", "title": "y".repeat(4096)}),
            ),
            413,
            None,
        ),
        (
            s.get("/Users?filter=userName%20zz%20%22x%22"),
            400,
            Some("invalidFilter"),
        ),
    ];
    for (i, (req, status, scim_type)) in cases.into_iter().enumerate() {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "case {i}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/scim+json",
            "case {i}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], status.to_string(), "case {i}: {v}");
        assert_eq!(v["scimType"].as_str(), scim_type, "case {i}: {v}");
    }
    assert_eq!(list(&s, "").await["totalResults"], 0, "nothing was written");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let s = common::start(|c| c).await;
    let r = s.http.get(s.url("/Users")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(s.url("/Users"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "401");
    assert!(!v.to_string().contains("not-the-token"));
}

#[tokio::test]
async fn delete_disables_the_account_and_hides_the_resource() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let r = s.delete(&format!("/Users/{id}")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let a = s
        .store
        .hub_account(&Anchor::from(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.status,
        Status::Disabled,
        "soft delete keeps the account, disabled"
    );
    let r = s.get(&format!("/Users/{id}")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(list(&s, "").await["totalResults"], 0);
    // the same userName comes back as the same account
    let again = user(&s, "alice").await;
    assert_eq!(again["id"], id);
    let a = s
        .store
        .hub_account(&Anchor::from(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, Status::Active);
}

#[tokio::test]
async fn pages_by_position_leave_out_soft_deleted_users() {
    let s = common::start(|c| c).await;
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(user(&s, &format!("p{i}")).await);
    }
    let del = |k: usize| {
        let id = made[k]["id"].as_str().unwrap().to_owned();
        let s = &s;
        async move {
            let r = s.delete(&format!("/Users/{id}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 204);
        }
    };
    // Deleted before the first list (found by the first scan) ...
    del(1).await;
    del(4).await;
    let walk = || async {
        let mut seen = Vec::new();
        let mut start = 1;
        loop {
            let v = list(&s, &format!("startIndex={start}&count=2")).await;
            let got = ids(&v);
            assert!(got.len() <= 2, "{v}");
            seen.extend(got.clone());
            start += got.len();
            if got.is_empty() || start > v["totalResults"].as_u64().unwrap() as usize {
                return (seen, v["totalResults"].as_u64().unwrap());
            }
        }
    };
    let (seen, total) = walk().await;
    assert_eq!(total, 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "no user twice, none missing: {seen:?}");
    assert!(!seen.contains(&"p1".to_owned()) && !seen.contains(&"p4".to_owned()));
    // ... and after it (kept by the server's own DELETE).
    del(6).await;
    let (seen, total) = walk().await;
    assert_eq!((seen.len(), total), (4, 4), "{seen:?}");
    assert!(!seen.contains(&"p6".to_owned()));
    // A user that comes back takes its place again.
    user(&s, "p4").await;
    let (seen, total) = walk().await;
    assert_eq!((seen.len(), total), (5, 5), "{seen:?}");
    assert!(seen.contains(&"p4".to_owned()));
    // Beyond the end: an empty page, the right total.
    let v = list(&s, "startIndex=50&count=10").await;
    assert_eq!((ids(&v).len(), v["totalResults"].as_u64()), (0, Some(5)));
    // count=0: only the total.
    let v = list(&s, "count=0").await;
    assert_eq!((ids(&v).len(), v["totalResults"].as_u64()), (0, Some(5)));
}

#[tokio::test]
async fn indexed_lookups_stay_exact() {
    let s = common::start(|c| c).await;
    let a = user(&s, "Alice.Smith").await;
    user(&s, "bob").await;
    let (st, _) = patch(
        &s,
        a["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "title", "value": "Boss"}]),
    )
    .await;
    assert_eq!(st, 200);
    let q = |f: &str| format!("filter={}", enc(f));
    // userName is case-insensitive; the index finds it whatever the case.
    assert_eq!(
        ids(&list(&s, &q("userName eq \"alice.smith\"")).await),
        ["Alice.Smith"]
    );
    assert_eq!(
        ids(&list(
            &s,
            &q("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"ALICE.SMITH\"")
        )
        .await),
        ["Alice.Smith"]
    );
    // The whole filter still applies to the candidates.
    assert_eq!(
        ids(&list(&s, &q("userName eq \"alice.smith\" and title eq \"Boss\"")).await),
        ["Alice.Smith"]
    );
    assert!(
        ids(&list(
            &s,
            &q("userName eq \"alice.smith\" and title eq \"Intern\"")
        )
        .await)
        .is_empty()
    );
    assert!(
        ids(&list(&s, &q("userName eq \" alice.smith\"")).await).is_empty(),
        "eq is not trimmed"
    );
    assert_eq!(
        ids(&list(&s, &q(&format!("id eq \"{}\"", a["id"].as_str().unwrap()))).await),
        ["Alice.Smith"]
    );
    // An `or` of indexed keys: the union of both lookups.
    let mut both = ids(&list(&s, &q("userName eq \"bob\" or userName eq \"ALICE.smith\"")).await);
    assert_eq!(both.len(), 2, "{both:?}");
    both.sort();
    assert_eq!(both, ["Alice.Smith", "bob"]);
    assert_eq!(
        ids(&list(&s, &q("userName eq \"bob\" or userName eq \"nobody\"")).await),
        ["bob"]
    );
    // One side not indexed: a scan, same answer.
    let mut scan = ids(&list(&s, &q("userName eq \"bob\" or title eq \"Boss\"")).await);
    scan.sort();
    assert_eq!(scan, ["Alice.Smith", "bob"]);
    // POST /.search reads its Users through the index too, with the whole filter applied.
    let r = s
        .post(
            "/.search",
            &json!({"filter": "userName eq \"alice.smith\" and title eq \"Boss\""}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["totalResults"], 1, "{v}");
    assert_eq!(v["Resources"][0]["userName"], "Alice.Smith", "{v}");
    // Soft-deleted users are not found.
    let r = s
        .delete(&format!("/Users/{}", a["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(ids(&list(&s, &q("userName eq \"alice.smith\"")).await).is_empty());
}

#[tokio::test]
async fn delete_policy_delete_removes_the_account() {
    let s = common::start(|c| c.with_delete(idsync_scim::DeletePolicy::Delete)).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let r = s.delete(&format!("/Users/{id}")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        s.store
            .hub_account(&Anchor::from(id))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn groups_are_hub_orgs_with_members() {
    let s = common::start(|c| c).await;
    let a = user(&s, "alice").await;
    let b = user(&s, "bob").await;
    let (aid, bid) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let r = s
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": "Engineering", "members": [{"value": aid}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let g: Value = r.json().await.unwrap();
    let gid = g["id"].as_str().unwrap();
    let org = s.store.hub_org(&Anchor::from(gid)).await.unwrap().unwrap();
    assert_eq!(org.name, "Engineering");
    let acc = s
        .store
        .hub_account(&Anchor::from(aid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acc.orgs, vec![Anchor::from(gid)]);
    let u: Value = s
        .get(&format!("/Users/{aid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["groups"][0]["value"], gid);
    assert_eq!(u["groups"][0]["display"], "Engineering");
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": bid}]},
                {"op": "remove", "path": format!("members[value eq \"{aid}\"]")}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let g: Value = r.json().await.unwrap();
    assert_eq!(
        g["members"],
        json!([{"value": bid, "$ref": format!("{}/Users/{bid}", s.base), "type": "User"}])
    );
    let acc = s
        .store
        .hub_account(&Anchor::from(aid))
        .await
        .unwrap()
        .unwrap();
    assert!(acc.orgs.is_empty());
    let r = s.delete(&format!("/Groups/{gid}")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(s.store.hub_org(&Anchor::from(gid)).await.unwrap().is_none());
    let acc = s
        .store
        .hub_account(&Anchor::from(bid))
        .await
        .unwrap()
        .unwrap();
    assert!(acc.orgs.is_empty());
}

// ------------------------------------------------------------------- Entra and Okta quirks

#[tokio::test]
async fn quirk_capitalised_op_names() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let (st, v) = patch(
        &s,
        u["id"].as_str().unwrap(),
        json!([{"op": "Replace", "path": "displayName", "value": "Alice A."},
               {"op": "Add", "path": "title", "value": "Dev"}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["displayName"], "Alice A.");
    assert_eq!(v["title"], "Dev");
}

#[tokio::test]
async fn quirk_booleans_as_strings() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let (st, v) = patch(
        &s,
        id,
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["active"], false);
    let a = s
        .store
        .hub_account(&Anchor::from(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, Status::Disabled);
}

#[tokio::test]
async fn quirk_member_removal_as_a_value_array() {
    let s = common::start(|c| c).await;
    let a = user(&s, "alice").await;
    let aid = a["id"].as_str().unwrap();
    let g: Value = s
        .post(
            "/Groups",
            &json!({"displayName": "Ops", "members": [{"value": aid}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gid = g["id"].as_str().unwrap();
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": [PATCH], "Operations": [
                {"op": "Remove", "path": "members", "value": [{"value": aid}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let g: Value = r.json().await.unwrap();
    assert!(g.get("members").is_none(), "{g}");
}

#[tokio::test]
async fn quirk_pathless_replace_with_dotted_keys_and_extension_urns() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let (st, v) = patch(
        &s,
        u["id"].as_str().unwrap(),
        json!([{"op": "Replace", "value": {
            "name.givenName": "Alice",
            "name.familyName": "Liddell",
            format!("{ENT}:department"): "Wonderland",
            format!("{ENT}:employeeNumber"): "42",
            "active": "True"}}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["name"],
        json!({"givenName": "Alice", "familyName": "Liddell"})
    );
    assert_eq!(v[ENT]["department"], "Wonderland");
    assert_eq!(v[ENT]["employeeNumber"], "42");
    assert_eq!(v["active"], true);
}

#[tokio::test]
async fn quirk_pascal_case_attribute_names() {
    let s = common::start(|c| c).await;
    let v = create(
        &s,
        json!({"schemas": [USER], "UserName": "Alice", "DisplayName": "A",
               "Emails": [{"Value": "a@example.com", "Type": "work", "Primary": "true"}]}),
    )
    .await;
    assert_eq!(v["userName"], "Alice");
    assert_eq!(v["emails"][0]["value"], "a@example.com");
    assert_eq!(v["emails"][0]["primary"], true);
    let (st, v) = patch(
        &s,
        v["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "DisplayName", "value": "B"}]),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["displayName"], "B");
}

#[tokio::test]
async fn quirk_extra_op_fields() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let (st, v) = patch(
        &s,
        u["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "title", "value": "Dev", "id": 1, "from": "entra"}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["title"], "Dev");
}

#[tokio::test]
async fn quirk_entra_work_email_value_path_on_a_user_without_one() {
    let s = common::start(|c| c).await;
    let v = create(&s, json!({"schemas": [USER], "userName": "bob"})).await;
    let (st, v) = patch(
        &s,
        v["id"].as_str().unwrap(),
        json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "bob@work.example"}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["emails"],
        json!([{"type": "work", "value": "bob@work.example"}])
    );
}

#[tokio::test]
async fn quirk_entra_connection_test_random_guid_filter() {
    let s = common::start(|c| c).await;
    user(&s, "alice").await;
    let f = enc("userName eq \"f3d0f1c2-5b8e-4f43-9a41-0e1f2a3b4c5d\"");
    let v = list(&s, &format!("filter={f}")).await;
    assert_eq!(v["totalResults"], 0);
    assert_eq!(v["Resources"], json!([]));
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
}

#[tokio::test]
async fn quirk_okta_username_lookup_with_count_100() {
    let s = common::start(|c| c).await;
    user(&s, "alice@example.com").await;
    user(&s, "bob@example.com").await;
    let f = enc("userName eq \"alice@example.com\"");
    let v = list(&s, &format!("filter={f}&startIndex=1&count=100")).await;
    assert_eq!(v["totalResults"], 1);
    assert_eq!(v["itemsPerPage"], 1);
    assert_eq!(v["Resources"][0]["userName"], "alice@example.com");
}

#[tokio::test]
async fn quirk_okta_put_updates() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let mut body = u.clone();
    body["name"] = json!({"givenName": "Alice", "familyName": "L"});
    body["active"] = json!(false);
    body["emails"] = json!([{"value": "new@example.com", "primary": true, "type": "work"}]);
    let r = s.put(&format!("/Users/{id}"), &body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"]["familyName"], "L");
    assert_eq!(v["active"], false);
    assert_eq!(v["id"], id, "id and meta in a PUT body are ignored");
    let a = s
        .store
        .hub_account(&Anchor::from(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.email.as_deref(), Some("new@example.com"));
    assert_eq!(a.status, Status::Disabled);
}

#[tokio::test]
async fn quirk_inactive_users_still_returned() {
    let s = common::start(|c| c).await;
    let u = user(&s, "alice").await;
    let id = u["id"].as_str().unwrap();
    let (st, _) = patch(
        &s,
        id,
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    assert_eq!(st, 200);
    let r = s.get(&format!("/Users/{id}")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let f = enc("userName eq \"alice\"");
    let v = list(&s, &format!("filter={f}")).await;
    assert_eq!(v["totalResults"], 1);
    assert_eq!(v["Resources"][0]["active"], false);
}

#[tokio::test]
async fn search_by_post_on_users_and_at_the_root() {
    let s = common::start(|c| c).await;
    user(&s, "alice").await;
    user(&s, "bob").await;
    s.post("/Groups", &json!({"displayName": "alice-fans"}))
        .send()
        .await
        .unwrap();
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                        "filter": "userName eq \"alice\"", "attributes": ["userName"]});
    let r = s.post("/Users/.search", &search).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["totalResults"], 1);
    assert_eq!(v["Resources"][0]["userName"], "alice");
    assert!(v["Resources"][0].get("emails").is_none());
    // At the root: a filter on displayName finds users and groups alike.
    let r = s
        .post("/.search", &json!({"filter": "displayName sw \"alice\""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["totalResults"], 2, "{v}");
    let r = s
        .post("/.search", &json!({"filter": "displayName sw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}
