//! A small axum server for what json-server does not do: a cursor in the body, a next URL
//! in the body, auth (bearer, basic, API key, OAuth2 client credentials), throttling, and
//! bad pages (no anchor, wrong types, not JSON, totals contradicted, repeats, loops).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const PEOPLE: usize = 25;

#[derive(Default)]
pub struct Counters {
    pub tokens_issued: AtomicU64,
    /// Tokens below this number are refused (a revoked token forces a refresh).
    pub min_token: AtomicU64,
}

type St = Arc<Counters>;

fn person(i: usize) -> Value {
    json!({"id": format!("u{i}"), "login": format!("user{i:02}"), "name": format!("User {i}")})
}

fn window(q: &HashMap<String, String>, key: &str) -> (usize, usize) {
    let start = q
        .get(key)
        .and_then(|v| v.trim_start_matches('c').parse().ok())
        .unwrap_or(0);
    let limit = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10);
    (start, limit)
}

async fn cursor(Query(q): Query<HashMap<String, String>>) -> Response {
    let (start, limit) = window(&q, "cursor");
    let end = (start + limit).min(PEOPLE);
    let items: Vec<Value> = (start..end).map(person).collect();
    let next = (end < PEOPLE).then(|| format!("c{end}"));
    axum::Json(json!({"data": items, "paging": {"next_cursor": next}})).into_response()
}

async fn next_url(Query(q): Query<HashMap<String, String>>) -> Response {
    let (start, limit) = window(&q, "offset");
    let end = (start + limit).min(PEOPLE);
    let items: Vec<Value> = (start..end).map(person).collect();
    // relative to the host, as many APIs hand them out
    let next = (end < PEOPLE).then(|| format!("/api/nexturl/people?offset={end}&limit={limit}"));
    axum::Json(json!({"items": items, "links": {"next": next}})).into_response()
}

async fn bad(Path(kind): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    match kind.as_str() {
        "noanchor" => axum::Json(json!({"data": [person(0), person(1), {"login": "ghost"}]})).into_response(),
        "type" => axum::Json(json!({"data": [person(0), {"id": "u1", "login": "x", "name": {"first": "A"}}]})).into_response(),
        "html" => ([("content-type", "text/html")], "<html>maintenance</html>").into_response(),
        // total 20, page size 10: page 1 is full, page 2 has 3 items
        "total" => {
            let items: Vec<Value> = if page == 1 { (0..10).map(person).collect() } else { (10..13).map(person).collect() };
            axum::Json(json!({"data": items, "meta": {"total": 20}})).into_response()
        }
        // total 4, but page 1 holds 5
        "over" => axum::Json(json!({"data": (0..5).map(person).collect::<Vec<_>>(), "meta": {"total": 4}})).into_response(),
        // the page parameter is ignored
        "repeat" => axum::Json(json!({"data": (0..10).map(person).collect::<Vec<_>>()})).into_response(),
        "loop" => {
            let next = match q.get("cursor").map(String::as_str) { None => "A", Some("A") => "B", _ => "A" };
            axum::Json(json!({"data": [person(page)], "paging": {"next_cursor": next}})).into_response()
        }
        "offsite" => axum::Json(json!({"items": [person(0)], "links": {"next": "http://elsewhere.example/steal?limit=5"}})).into_response(),
        "items" => axum::Json(json!({"data": {"not": "an array"}})).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn authorized(st: &Counters, h: &HeaderMap) -> bool {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth == "Bearer static-token" || auth == "Basic dXNlcjpwYXNzd29yZA==" {
        return true;
    }
    if h.get("x-api-key").and_then(|v| v.to_str().ok()) == Some("the-key") {
        return true;
    }
    if let Some(n) = auth
        .strip_prefix("Bearer oauth-")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return n >= st.min_token.load(Ordering::SeqCst)
            && n <= st.tokens_issued.load(Ordering::SeqCst);
    }
    false
}

async fn protected(State(st): State<St>, h: HeaderMap) -> Response {
    if !authorized(&st, &h) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "bad credentials"})),
        )
            .into_response();
    }
    axum::Json(json!({"data": (0..3).map(person).collect::<Vec<_>>()})).into_response()
}

async fn token(State(st): State<St>, body: String) -> Response {
    let ok = body.contains("grant_type=client_credentials")
        && body.contains("client_id=idsync")
        && body.contains("client_secret=s3cret");
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = st.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(
        json!({"access_token": format!("oauth-{n}"), "token_type": "Bearer", "expires_in": 3600}),
    )
    .into_response()
}

async fn throttled() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "2")],
        axum::Json(json!({"message": "slow down"})),
    )
        .into_response()
}

/// Serves on 127.0.0.1:0; the base URL is `http://127.0.0.1:PORT/api`.
pub async fn serve() -> (String, St) {
    let st: St = Arc::new(Counters::default());
    let app = Router::new()
        .route("/api/cursor/people", get(cursor))
        .route("/api/nexturl/people", get(next_url))
        .route("/api/bad/{kind}", get(bad))
        .route("/api/auth/people", get(protected))
        .route("/oauth/token", post(token))
        .route("/api/throttled/people", get(throttled))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/api"), st)
}

/// A people-only config at `path` with `pagination` and `items`, plus extra TOML.
pub fn config(base: &str, path: &str, items: &str, pagination: &str, extra: &str) -> String {
    format!(
        r#"
base_url = "{base}"
{extra}
[accounts]
path = "{path}"
items = "{items}"
page_size = 10
pagination = {pagination}
[accounts.fields]
anchor = "/id"
username = "/login"
display_name = "/name"
"#
    )
}

mod styles {
    use super::*;
    use crate::rest::server::connector;
    use idsync_core::source::collect_accounts;
    use idsync_core::{ErrorKind, PageRequest, Source};

    fn secret_file(name: &str, value: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("idsync-rest-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(name);
        std::fs::write(&f, format!("{value}\n")).unwrap();
        f
    }

    #[tokio::test]
    async fn cursor_in_the_body_and_next_url_in_the_body() {
        let (base, _) = serve().await;
        let c = connector(&config(
            &base,
            "/cursor/people",
            "/data",
            r#"{ style = "cursor", param = "cursor", size_param = "limit", next = "/paging/next_cursor" }"#,
            "",
        ));
        let all = collect_accounts(&c).await.unwrap();
        assert_eq!(all.len(), PEOPLE);
        assert_eq!(all[24].username, "user24");
        let first = c.accounts(PageRequest::sized(10)).await.unwrap();
        assert_eq!(first.items.len(), 10);
        assert!(first.next.is_some());

        let n = connector(&config(
            &base,
            "/nexturl/people",
            "/items",
            r#"{ style = "next_url", next = "/links/next", size_param = "limit" }"#,
            "",
        ));
        let all = collect_accounts(&n).await.unwrap();
        let mut anchors: Vec<_> = all.iter().map(|a| a.anchor.as_str().to_owned()).collect();
        anchors.dedup();
        assert_eq!(anchors.len(), PEOPLE);
    }

    #[tokio::test]
    async fn bad_input_names_path_page_item_and_pointer() {
        let (base, _) = serve().await;
        let page =
            r#"{ style = "page", param = "page", size_param = "per_page", total = "/meta/total" }"#;
        let plain = r#"{ style = "page", param = "page", size_param = "per_page" }"#;
        let cases: &[(&str, &str, ErrorKind, &[&str])] = &[
            (
                "/bad/noanchor",
                plain,
                ErrorKind::InvalidData,
                &["/api/bad/noanchor", "page 1", "item 2", "no anchor at /id"],
            ),
            (
                "/bad/type",
                plain,
                ErrorKind::InvalidData,
                &["/api/bad/type", "page 1", "item 1", "/name"],
            ),
            (
                "/bad/total",
                page,
                ErrorKind::Incomplete,
                &["page 2", "total says 20"],
            ),
            (
                "/bad/over",
                page,
                ErrorKind::Incomplete,
                &["page 1", "total says 4"],
            ),
            (
                "/bad/repeat",
                plain,
                ErrorKind::Incomplete,
                &["page 2", "repeats"],
            ),
            (
                "/bad/items",
                plain,
                ErrorKind::InvalidData,
                &["page 1", "not an array"],
            ),
        ];
        for (path, pagination, kind, words) in cases {
            let c = connector(&config(&base, path, "/data", pagination, ""));
            let e = collect_accounts(&c).await.unwrap_err();
            assert_eq!(e.kind(), *kind, "{path}: {e}");
            let text = format!("{e} {:?}", e.context());
            for w in *words {
                assert!(text.contains(w), "{path}: {w:?} missing in {text}");
            }
        }
        // not JSON: an error naming the path and page, never a page
        let c = connector(&config(&base, "/bad/html", "/data", plain, ""));
        let e = c.accounts(PageRequest::first()).await.unwrap_err();
        assert_eq!(e.operation(), Some("/bad/html"), "{e}");
        assert!(e.message().contains("not JSON"), "{e}");
        assert!(
            e.context().iter().any(|(k, v)| k == "page" && v == "1"),
            "{e}"
        );
        // a cursor cycle A -> B -> A is refused
        let c = connector(&config(
            &base,
            "/bad/loop",
            "/data",
            r#"{ style = "cursor", next = "/paging/next_cursor" }"#,
            "",
        ));
        let e = collect_accounts(&c).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Incomplete, "{e}");
        // a next URL to another host is refused (credentials stay with the configured host)
        let c = connector(&config(
            &base,
            "/bad/offsite",
            "/items",
            r#"{ style = "next_url", next = "/links/next" }"#,
            "",
        ));
        let e = collect_accounts(&c).await.unwrap_err();
        assert!(e.message().contains("outside the base URL"), "{e}");
    }

    #[tokio::test]
    async fn every_auth_kind_and_the_token_cache() {
        let (base, st) = serve().await;
        let auths = [
            format!(
                "[auth]\ntype = \"bearer\"\ntoken_file = {:?}",
                secret_file("tok", "static-token")
            ),
            format!(
                "[auth]\ntype = \"basic\"\nusername = \"user\"\npassword_file = {:?}",
                secret_file("pw", "password")
            ),
            format!(
                "[auth]\ntype = \"api_key\"\nheader = \"X-API-Key\"\nkey_file = {:?}",
                secret_file("key", "the-key")
            ),
        ];
        for a in &auths {
            let c = connector(&config(
                &base,
                "/auth/people",
                "/data",
                r#"{ style = "none" }"#,
                a,
            ));
            assert_eq!(collect_accounts(&c).await.unwrap().len(), 3, "{a}");
            assert!(!format!("{c:?}").contains("static-token"));
        }
        let token_url = base.replace("/api", "/oauth/token");
        let oauth = format!(
            "[auth]\ntype = \"oauth2\"\ntoken_url = \"{token_url}\"\nclient_id = \"idsync\"\nclient_secret_file = {:?}",
            secret_file("cs", "s3cret")
        );
        let c = connector(&config(
            &base,
            "/auth/people",
            "/data",
            r#"{ style = "none" }"#,
            &oauth,
        ));
        for _ in 0..3 {
            assert_eq!(collect_accounts(&c).await.unwrap().len(), 3);
        }
        assert_eq!(c.token_fetches(), 1, "the token is cached");
        // the server revokes the token: one 401, one refresh, the call goes through
        st.min_token.store(2, Ordering::SeqCst);
        assert_eq!(collect_accounts(&c).await.unwrap().len(), 3);
        assert_eq!(c.token_fetches(), 2);
        // wrong secrets: permanent Unauthenticated, without the secret in the message
        let bad = format!(
            "[auth]\ntype = \"bearer\"\ntoken_file = {:?}",
            secret_file("bad", "wrong-token")
        );
        let c = connector(&config(
            &base,
            "/auth/people",
            "/data",
            r#"{ style = "none" }"#,
            &bad,
        ));
        let e = c.check().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
        assert!(!e.is_temporary());
        assert!(!format!("{e} {e:?}").contains("wrong-token"));
        let badc = oauth.replace(
            &format!("{:?}", secret_file("cs", "s3cret")),
            &format!("{:?}", secret_file("cs2", "nope")),
        );
        let c = connector(&config(
            &base,
            "/auth/people",
            "/data",
            r#"{ style = "none" }"#,
            &badc,
        ));
        let e = c.check().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
        // throttled: temporary RateLimited with Retry-After
        let c = connector(&config(
            &base,
            "/throttled/people",
            "/data",
            r#"{ style = "none" }"#,
            "",
        ));
        let e = c.accounts(PageRequest::first()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.is_temporary());
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn config_problems_are_named() {
        let bad = r#"
base_url = "http://127.0.0.1:1"
[accounts]
path = "people"
items = "data"
[accounts.fields]
username = "/login"
"#;
        let cfg: idsync_rest::RestConfig = toml::from_str(bad).unwrap();
        let p = cfg.problems().join("\n");
        assert!(p.contains("anchor` is required"), "{p}");
        assert!(p.contains("must start with '/'"), "{p}");
        assert!(p.contains("accounts.items"), "{p}");
        let unknown = format!("{bad}\nsurprise = 1\n");
        assert!(toml::from_str::<idsync_rest::RestConfig>(&unknown).is_err());
        let inline = bad.replace(
            "base_url = \"http://127.0.0.1:1\"",
            "base_url = \"http://127.0.0.1:1\"\n[auth]\ntype = \"bearer\"\ntoken = \"x\"",
        );
        assert!(
            toml::from_str::<idsync_rest::RestConfig>(&inline).is_err(),
            "a secret in the config is refused"
        );
    }
}

mod docs {
    /// The `[providers.hr]` samples in the workspace README and the crate docs parse and
    /// have no problems.
    #[test]
    fn the_readme_samples_are_valid_configs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["../README.md", "README.md"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let block = text
                .split("```toml\n")
                .skip(1)
                .map(|b| b.split("```").next().unwrap())
                .find(|b| b.contains("type = \"rest\""))
                .unwrap_or_else(|| panic!("{file} has no rest sample"));
            let doc: toml::Table = toml::from_str(block).unwrap();
            let mut hr = doc["providers"]["hr"].as_table().unwrap().clone();
            assert_eq!(hr.remove("type").unwrap().as_str(), Some("rest"));
            let cfg: idsync_rest::RestConfig = toml::Value::Table(hr)
                .try_into()
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(cfg.problems().is_empty(), "{file}: {:?}", cfg.problems());
            assert!(
                cfg.orgs.is_some() && cfg.accounts.incremental.is_some(),
                "{file}"
            );
        }
    }
}
