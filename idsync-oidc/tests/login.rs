//! Logins against a real oidc-provider: provisioning, safe linking, and refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{App, Browser, JsonHandler, login_of, provider, random_id};
use idsync_core::{Account, Anchor, EntityKind, Op, Status};
use idsync_oidc::{
    LinkPath, LoginErrorKind, OidcProvider, SessionCookie, UnverifiedPolicy, UserinfoMode,
};
use secrecy::SecretBox;
use serde_json::json;

fn kind_of(body: &str) -> String {
    // "NAME (kind): message"
    body.split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(k, _)| k.to_owned())
        .unwrap_or_else(|| panic!("not an error answer: {body}"))
}

async fn seed(app: &App, anchor: &str, username: &str, email: &str, status: Status) {
    let mut a = Account::new(anchor, username);
    a.email = Some(email.to_owned());
    a.display_name = Some("From AD".into());
    a.status = status;
    app.store
        .hub_apply(&Op::CreateAccount { account: a }, None)
        .await
        .unwrap();
}

async fn audit_ops(app: &App, anchor: &str) -> Vec<(String, serde_json::Value)> {
    app.store
        .audit(EntityKind::Account, &Anchor::new(anchor))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.op.to_string(), e.after.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_provisions_and_second_updates_only_the_changed_claim() {
    let op = provider();
    let id = random_id("jit-");
    op.set_account(
        &id,
        json!({"email": format!("{id}@example.com"), "email_verified": true, "name": "First Name",
               "preferred_username": id, "groups": ["staff", "vpn"]}),
    );
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let auth = b.start_login(&app, "op").await;
    let q = b.authenticate(op, &auth, &id).await;
    // the callback: code exchange, ID token and userinfo checks, provisioning
    let t = Instant::now();
    let first = login_of(&b.callback(&app, "op", &q).await);
    let took = t.elapsed();
    println!("first login callback took {took:?}");
    let anchor = format!("{}|{id}", op.issuer());
    assert_eq!(first.path, LinkPath::Created);
    assert_eq!(first.subject.as_str(), anchor);
    assert!(first.email_verified);
    let hub = app.accounts().await;
    assert_eq!(hub.len(), 1, "{hub:?}");
    let acc = &hub[0];
    assert_eq!(acc.anchor.as_str(), anchor);
    assert_eq!(acc.username, id);
    assert_eq!(
        acc.email.as_deref(),
        Some(format!("{id}@example.com").as_str())
    );
    assert_eq!(acc.display_name.as_deref(), Some("First Name"));
    assert_eq!(acc.attrs.get("groups"), Some(&json!(["staff", "vpn"])));
    assert_eq!(acc.status, Status::Active);
    // well under a second on an idle machine; bounded loosely for a busy CI
    assert!(took < Duration::from_secs(3), "the callback took {took:?}");

    // the provider changes one claim; the next login updates only that field
    op.set_account(
        &id,
        json!({"email": format!("{id}@example.com"), "email_verified": true, "name": "Second Name",
               "preferred_username": id, "groups": ["staff", "vpn"]}),
    );
    let second = login_of(&b.login(&app, "op", op, &id).await);
    assert_eq!(second.path, LinkPath::Linked);
    assert_eq!(second.changed, vec!["display_name".to_owned()]);
    assert_eq!(second.account.display_name.as_deref(), Some("Second Name"));
    let hub = app.accounts().await;
    assert_eq!(hub.len(), 1);
    assert_eq!(hub[0].display_name.as_deref(), Some("Second Name"));

    let trail = audit_ops(&app, &anchor).await;
    let ops: Vec<&str> = trail.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        ops,
        vec![
            "create_account",
            "oidc_login",
            "update_account",
            "oidc_login"
        ],
        "{trail:?}"
    );
    assert_eq!(trail[1].1["path"], "created");
    assert_eq!(trail[3].1["path"], "linked");
    // the hub's audit keeps before and after of the update: only display_name differs
    let full = app
        .store
        .audit(EntityKind::Account, &Anchor::new(anchor.as_str()))
        .await
        .unwrap();
    let before = full[2].before.as_ref().unwrap().as_object().unwrap();
    let after = full[2].after.as_ref().unwrap().as_object().unwrap();
    let differ: Vec<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(differ, vec!["display_name", "display_name"]);

    // a third login with nothing changed writes nothing but its audit entry
    let third = login_of(&b.login(&app, "op", op, &id).await);
    assert!(third.changed.is_empty(), "{:?}", third.changed);
    assert_eq!(audit_ops(&app, &anchor).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_never_links_to_an_existing_account() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let victim = format!("{}@example.com", random_id("victim-"));
    seed(&app, "ad-victim", "victim", &victim, Status::Active).await;

    let id = random_id("attacker-");
    // same address, not verified (as the string "false")
    op.set_account(
        &id,
        json!({"email": victim.to_uppercase(), "email_verified": "false", "name": "Mallory",
               "preferred_username": "victim"}),
    );
    let mut b = Browser::new();
    let login = login_of(&b.login(&app, "op", op, &id).await);
    assert_eq!(login.path, LinkPath::CreatedSeparateUnverified);
    assert!(!login.email_verified);
    assert_ne!(login.account.anchor.as_str(), "ad-victim");
    assert_eq!(
        login.account.email, None,
        "an unverified email is not written"
    );

    let before = app
        .store
        .hub_account(&Anchor::new("ad-victim"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.display_name.as_deref(), Some("From AD"));
    assert_eq!(before.email.as_deref(), Some(victim.as_str()));
    assert_eq!(app.accounts().await.len(), 2);
    let links = app
        .engine
        .links("oidc:op", EntityKind::Account)
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].target, login.account.anchor);
    assert!(
        audit_ops(&app, "ad-victim")
            .await
            .iter()
            .all(|(o, _)| o != "update_account")
    );
    let trail = audit_ops(&app, login.account.anchor.as_str()).await;
    assert_eq!(
        trail.last().unwrap().1["path"],
        "created_separate_unverified_email"
    );

    // a later login of the same person stays on the separate account
    let again = login_of(&b.login(&app, "op", op, &id).await);
    assert_eq!(again.path, LinkPath::Linked);
    assert_eq!(again.account.anchor, login.account.anchor);
    assert_eq!(app.accounts().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refuse_policy_refuses_an_unverified_email_of_an_existing_account() {
    let op = provider();
    let mut cfg = op.config();
    cfg.unverified_email = UnverifiedPolicy::Refuse;
    let app = App::start(vec![("op", op, cfg)], Arc::new(JsonHandler)).await;
    let victim = format!("{}@example.com", random_id("victim-"));
    seed(&app, "ad-victim", "victim", &victim, Status::Active).await;
    let id = random_id("attacker-");
    op.set_account(
        &id,
        json!({"email": victim, "preferred_username": id, "name": "Mallory"}), // no email_verified
    );
    let mut b = Browser::new();
    let a = b.login(&app, "op", op, &id).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(kind_of(&a.body), "link_refused");
    assert_eq!(app.accounts().await.len(), 1, "nothing is provisioned");
    let trail = audit_ops(&app, "ad-victim").await;
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].0, "oidc_login_refused");
    assert_eq!(trail[0].1["reason"], "link_refused");
    assert_eq!(trail[0].1["email_verified"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_email_links_but_a_disabled_account_stays_disabled() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let email = format!("{}@example.com", random_id("carol-"));
    seed(&app, "ad-carol", "carol", &email, Status::Active).await;
    let id = random_id("carol-");
    // "true" as a string counts as verified
    op.set_account(
        &id,
        json!({"email": email, "email_verified": "true", "name": "Carol From OIDC",
               "preferred_username": "carol"}),
    );
    let mut b = Browser::new();
    let login = login_of(&b.login(&app, "op", op, &id).await);
    assert_eq!(login.path, LinkPath::LinkedVerifiedEmail);
    assert_eq!(login.account.anchor.as_str(), "ad-carol");
    assert_eq!(
        login.account.display_name.as_deref(),
        Some("Carol From OIDC")
    );
    assert_eq!(app.accounts().await.len(), 1);
    assert_eq!(
        audit_ops(&app, "ad-carol").await.last().unwrap().1["path"],
        "linked_verified_email"
    );

    // disabled in the hub (by its own source): the login is refused, nothing re-enables it
    app.store
        .hub_apply(
            &Op::DisableAccount {
                anchor: Anchor::new("ad-carol"),
            },
            None,
        )
        .await
        .unwrap();
    op.set_account(
        &id,
        json!({"email": email, "email_verified": true, "name": "Carol Again",
               "preferred_username": "carol"}),
    );
    let a = b.login(&app, "op", op, &id).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(kind_of(&a.body), "account_disabled");
    let acc = app
        .store
        .hub_account(&Anchor::new("ad-carol"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acc.status, Status::Disabled);
    assert_eq!(
        acc.display_name.as_deref(),
        Some("Carol From OIDC"),
        "not updated"
    );
    assert_eq!(
        audit_ops(&app, "ad-carol").await.last().unwrap().0,
        "oidc_login_refused"
    );

    // a first login correlating to a disabled account is refused before anything is written
    let email2 = format!("{}@example.com", random_id("dave-"));
    seed(&app, "ad-dave", "dave", &email2, Status::Disabled).await;
    let id2 = random_id("dave-");
    op.set_account(
        &id2,
        json!({"email": email2, "email_verified": true, "name": "Dave", "preferred_username": "dave"}),
    );
    let a = b.login(&app, "op", op, &id2).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(kind_of(&a.body), "account_disabled");
    let links = app
        .engine
        .links("oidc:op", EntityKind::Account)
        .await
        .unwrap();
    assert!(
        links.iter().all(|l| l.target.as_str() != "ad-dave"),
        "{links:?}"
    );
    let dave = app
        .store
        .hub_account(&Anchor::new("ad-dave"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dave.status, Status::Disabled);
    assert_eq!(dave.display_name.as_deref(), Some("From AD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_only_in_userinfo_are_read() {
    let op = provider();
    let id = random_id("ui-");
    op.set_account(
        &id,
        json!({"email": format!("{id}@example.com"), "email_verified": true, "name": "Only In Userinfo",
               "preferred_username": id, "groups": ["g1"],
               "_userinfo_only": ["name", "groups", "email", "email_verified"]}),
    );
    let mut never = op.config();
    never.userinfo = UserinfoMode::Never;
    never.job = Some("oidc:never".into());
    // two hubs: one issuer's subject is one anchor in a hub
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let bare_app = App::start(vec![("never", op, never)], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    // without userinfo the ID token alone lacks these claims
    let bare = login_of(&b.login(&bare_app, "never", op, &id).await);
    assert_eq!(bare.account.display_name, None);
    assert_eq!(bare.account.email, None);
    assert!(!bare.email_verified);

    let mut b = Browser::new();
    let full = login_of(&b.login(&app, "op", op, &id).await);
    assert_eq!(
        full.account.display_name.as_deref(),
        Some("Only In Userinfo")
    );
    assert_eq!(
        full.account.email.as_deref(),
        Some(format!("{id}@example.com").as_str())
    );
    assert_eq!(full.account.attrs.get("groups"), Some(&json!(["g1"])));
    assert!(full.email_verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_nonce_is_refused() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let auth = b.start_login(&app, "op").await;
    let mut url = reqwest::Url::parse(&auth).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "not-the-nonce".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    assert!(pairs.iter().any(|(k, _)| k == "nonce"));
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let q = b.authenticate(op, url.as_str(), "alice").await;
    let a = b.callback(&app, "op", &q).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(kind_of(&a.body), "invalid_id_token");
    assert!(a.body.to_lowercase().contains("nonce"), "{}", a.body);
    assert!(app.accounts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_foreign_state_is_refused() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let auth = b.start_login(&app, "op").await;
    let q = b.authenticate(op, &auth, "bob").await;
    let state_cookie = b.jar.get(idsync_oidc::STATE_COOKIE).cloned().unwrap();
    login_of(&b.callback(&app, "op", &q).await);
    // the same callback again, even with the state cookie put back
    b.jar.insert(idsync_oidc::STATE_COOKIE.into(), state_cookie);
    let a = b.callback(&app, "op", &q).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(kind_of(&a.body), "invalid_state");
    assert!(a.body.contains("already used"), "{}", a.body);

    // a callback delivered to another browser (login CSRF) is refused
    let mut b = Browser::new();
    let auth = b.start_login(&app, "op").await;
    let q = b.authenticate(op, &auth, "bob").await;
    let mut other = Browser::new();
    let a = other.callback(&app, "op", &q).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(kind_of(&a.body), "invalid_state");
    assert!(a.body.contains("not started by this browser"), "{}", a.body);
    // a made-up state
    let a = b.callback(&app, "op", "code=abc&state=made-up").await;
    assert_eq!(kind_of(&a.body), "invalid_state");
    assert_eq!(
        app.accounts().await.len(),
        1,
        "only the first login provisioned"
    );
}

/// A genuine ID token straight from the provider (code flow without our router).
async fn genuine_tokens(op: &common::Op, nonce: &str) -> (String, String) {
    let mut b = Browser::new();
    let mut auth = reqwest::Url::parse(&format!("{}/auth", op.issuer())).unwrap();
    auth.query_pairs_mut()
        .append_pair("client_id", &op.var("OIDC_CLIENT_ID"))
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile")
        .append_pair("redirect_uri", &op.redirect_uri())
        .append_pair("state", "s")
        .append_pair("nonce", nonce);
    let q = b.authenticate(op, auth.as_str(), "alice").await;
    let code = reqwest::Url::parse(&format!("http://x/?{q}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", op.issuer()))
        .basic_auth(op.var("OIDC_CLIENT_ID"), Some(op.var("OIDC_CLIENT_SECRET")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", op.redirect_uri().as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        resp["id_token"].as_str().unwrap().to_owned(),
        resp["access_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_id_token_is_refused() {
    let op = provider();
    let p = OidcProvider::discover_with_secret("op", &op.config(), op.secret())
        .await
        .unwrap();
    let (raw, access) = genuine_tokens(op, "n-1").await;
    let claims = p.verify_id_token(&raw, "n-1", Some(&access)).await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = raw.split('.').collect();
    // a changed claim under the original signature
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["email"] = json!("victim@example.com");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    let e = p
        .verify_id_token(&forged, "n-1", Some(&access))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), LoginErrorKind::InvalidIdToken, "{e}");
    // no signature at all
    let none = format!("{}.{}.", b64.encode(br#"{"alg":"none"}"#), parts[1]);
    let e = p
        .verify_id_token(&none, "n-1", Some(&access))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), LoginErrorKind::InvalidIdToken, "{e}");
    // a wrong nonce
    let e = p
        .verify_id_token(&raw, "n-2", Some(&access))
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("nonce"), "{e}");
    // another key's signature: the token of the provider of another test binary is not
    // at hand, so take this token's header and payload with a signature of other bytes
    let other_sig = b64.encode([0u8; 256]);
    let e = p
        .verify_id_token(
            &format!("{}.{}.{other_sig}", parts[0], parts[1]),
            "n-1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), LoginErrorKind::InvalidIdToken, "{e}");
    // another client's audience
    let mut cfg = op.config();
    cfg.client_id = "someone-else".into();
    let q = OidcProvider::discover_with_secret("q", &cfg, op.secret())
        .await
        .unwrap();
    let e = q.verify_id_token(&raw, "n-1", None).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("audience"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_and_a_provider_that_is_down_provision_nothing() {
    // a provider of this test's own, whose codes live 2 seconds, stopped at the end
    let (op, dir) = common::start_own("short", 2);
    let app = App::start(vec![("short", &op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let auth = b.start_login(&app, "short").await;
    let q = b.authenticate(&op, &auth, "alice").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let a = b.callback(&app, "short", &q).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(kind_of(&a.body), "code_rejected");
    assert!(a.body.contains("invalid_grant"), "{}", a.body);
    assert!(app.accounts().await.is_empty());

    let auth = b.start_login(&app, "short").await;
    let q = b.authenticate(&op, &auth, "alice").await;
    common::stop_own(&dir);
    let a = b.callback(&app, "short", &q).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(kind_of(&a.body), "provider_unavailable");
    assert!(
        a.body.contains(&format!("{}/token", op.issuer())),
        "{}",
        a.body
    );
    assert!(app.accounts().await.is_empty());
    assert!(
        app.store.runs(None, 10).await.unwrap().is_empty(),
        "no run was started"
    );

    let e = OidcProvider::discover_with_secret("short", &op.config(), op.secret())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), LoginErrorKind::ProviderUnavailable, "{e}");
    assert!(
        e.to_string().contains("/.well-known/openid-configuration"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_carries_the_hub_account_and_logout_clears_it() {
    let op = provider();
    let sessions = Arc::new(
        SessionCookie::new(SecretBox::new(Box::new(vec![42u8; 32])))
            .unwrap()
            .insecure_http()
            .with_redirects("/home", "/bye"),
    );
    let app = App::start(vec![("op", op, op.config())], sessions.clone()).await;
    let mut b = Browser::new();
    let a = b.login(&app, "op", op, "bob").await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location.as_deref(), Some("/home"));
    let value = b
        .jar
        .get("idsync_session")
        .cloned()
        .expect("a session cookie");
    let s = sessions.verify(&value).expect("a valid session");
    assert_eq!(s.provider, "op");
    assert_eq!(s.username, "bob");
    assert_eq!(s.anchor, format!("{}|bob", op.issuer()));
    let mut forged = value.clone();
    forged.insert(0, 'x');
    assert!(sessions.verify(&forged).is_none());
    assert!(
        !b.jar.contains_key(idsync_oidc::STATE_COOKIE),
        "the state cookie is cleared"
    );

    let out = b.get(&format!("{}/logout", app.base)).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location.as_deref(), Some("/bye"));
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("idsync_session=;") && c.contains("Max-Age=0"))
    );
    assert!(!b.jar.contains_key("idsync_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_provider_is_a_404() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let a = b.get(&format!("{}/nope/login", app.base)).await;
    assert_eq!(a.status, 404);
    assert_eq!(kind_of(&a.body), "unknown_provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_is_fetched_again() {
    let (op, dir) = common::start_own("rotate", 600);
    let app = App::start(vec![("rot", &op, op.config())], Arc::new(JsonHandler)).await;
    let old_jwks: serde_json::Value = reqwest::get(format!("{}/jwks", op.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // the provider comes back with a new key (its keys live in DATADIR/keys.json)
    common::stop_own(&dir);
    std::fs::remove_file(dir.join("keys.json")).unwrap();
    common::restart_own(&op, &dir);
    let new_jwks: serde_json::Value = reqwest::get(format!("{}/jwks", op.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(old_jwks["keys"][0]["kid"], new_jwks["keys"][0]["kid"]);
    let mut b = Browser::new();
    let login = login_of(&b.login(&app, "rot", &op, "alice").await);
    assert_eq!(login.account.username, "alice");
    common::stop_own(&dir);
}

/// Sign an ID token with the provider's own key (from its data dir), through node.
fn sign_with_provider_key(dir: &std::path::Path, payload: &serde_json::Value) -> String {
    let js = r#"
const fs = require('fs'), c = require('crypto');
const k = JSON.parse(fs.readFileSync(process.argv[1], 'utf8')).jwks.keys[0];
const key = c.createPrivateKey({ key: k, format: 'jwk' });
const b = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
const input = b({ alg: 'RS256', typ: 'JWT', kid: k.kid }) + '.' + b(JSON.parse(process.argv[2]));
process.stdout.write(input + '.' + c.sign('sha256', Buffer.from(input), key).toString('base64url'));
"#;
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(js)
        .arg(dir.join("keys.json"))
        .arg(payload.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_aud_exp_and_at_hash_are_checked_on_validly_signed_tokens() {
    use sha2::Digest as _;
    let (op, dir) = common::start_own("sign", 600);
    let p = OidcProvider::discover_with_secret("sign", &op.config(), op.secret())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hash = sha2::Sha256::digest(b"access-A");
    let at_hash = b64.encode(&hash[..16]);
    let claims = json!({"iss": op.issuer(), "aud": op.var("OIDC_CLIENT_ID"), "sub": "s1",
                        "iat": now, "exp": now + 300, "nonce": "n", "at_hash": at_hash});
    let good = sign_with_provider_key(&dir, &claims);
    let ok = p
        .verify_id_token(&good, "n", Some("access-A"))
        .await
        .unwrap();
    assert_eq!(ok["sub"], "s1");
    let e = p
        .verify_id_token(&good, "n", Some("access-B"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at_hash"), "{e}");

    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        sign_with_provider_key(&dir, &c)
    };
    let cases = [
        ("exp", json!(now - 3600), "expired"),
        ("aud", json!("another-client"), "audience"),
        ("iss", json!("http://127.0.0.1:1"), "issuer"),
    ];
    for (k, v, want) in cases {
        let e = p.verify_id_token(&with(k, v), "n", None).await.unwrap_err();
        assert_eq!(e.kind(), LoginErrorKind::InvalidIdToken, "{e}");
        assert!(e.to_string().to_lowercase().contains(want), "{k}: {e}");
    }
    common::stop_own(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_answer_is_reported_with_its_code() {
    let op = provider();
    let app = App::start(vec![("op", op, op.config())], Arc::new(JsonHandler)).await;
    let mut b = Browser::new();
    let auth = b.start_login(&app, "op").await;
    let state = reqwest::Url::parse(&auth)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let q = format!("error=access_denied&error_description=the+user+said+no&state={state}");
    let a = b.callback(&app, "op", &q).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(kind_of(&a.body), "provider_denied");
    assert!(
        a.body.contains("access_denied: the user said no"),
        "{}",
        a.body
    );
    // a mix-up: a callback naming another issuer
    let auth = b.start_login(&app, "op").await;
    let q = b.authenticate(op, &auth, "alice").await;
    let q = q.replace("iss=", "iss=https%3A%2F%2Fevil.example&was=");
    let a = b.callback(&app, "op", &q).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("is not the issuer"), "{}", a.body);
    assert!(app.accounts().await.is_empty());
}
