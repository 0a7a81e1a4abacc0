//! The JSON client against a local axum server: redirects, body cap, classifier, token
//! refresh, secrets kept out of errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use idsync_core::{ErrorKind, ErrorStatus};
use idsync_http::fake::{FakeServer, RawReply};
use idsync_http::{
    ApiError, Class, HttpSettings, IssuedToken, JsonClient, Request, TokenAuth, TokenPlacement,
    TokenSource,
};
use secrecy::SecretString;
use serde_json::{Value, json};

fn check(_status: u16, body: Value) -> Result<Value, ApiError> {
    match body.get("errcode").and_then(idsync_http::int_of) {
        None | Some(0) => Ok(body),
        // a throttle body whose own default wait is 1 s
        Some(45009) => Err(ApiError::new(
            Some("45009".into()),
            "throttled",
            Class::new(ErrorKind::RateLimited, ErrorStatus::Temporary)
                .after(Duration::from_secs(1)),
        )),
        Some(40014) => Err(ApiError::new(
            Some("40014".into()),
            "bad token",
            Class::new(ErrorKind::Unauthenticated, ErrorStatus::Permanent),
        )
        .token_bad()),
        Some(c) => Err(ApiError::new(
            Some(c.to_string()),
            "api error",
            Class::new(ErrorKind::NotFound, ErrorStatus::Permanent),
        )),
    }
}

#[derive(Default)]
struct Counters {
    tokens: AtomicU64,
    calls: AtomicU64,
}

async fn server() -> (FakeServer, Arc<Counters>) {
    let c = Arc::new(Counters::default());
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(json!({"errcode": 0, "v": 1})) }),
        )
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "https://elsewhere.example/")],
                    "",
                )
            }),
        )
        .route("/bare404", get(|| async { RawReply::bare_status(404) }))
        .route("/notjson", get(|| async { RawReply::not_json() }))
        .route("/big", get(|| async { RawReply::oversized(64 * 1024) }))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    "slow down",
                )
            }),
        )
        .route(
            "/throttled",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("x-ogw-ratelimit-reset", "9")],
                    axum::Json(json!({"errcode": 45009})),
                )
            }),
        )
        .route(
            "/gone",
            get(|| async { axum::Json(json!({"errcode": 60121})) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                axum::Json(json!({}))
            }),
        )
        .route("/token", post(issue))
        .route("/authed", get(authed))
        .with_state(c.clone());
    (FakeServer::start("test", app).await.unwrap(), c)
}

async fn issue(State(c): State<Arc<Counters>>) -> Response {
    let n = c.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(50)).await;
    axum::Json(json!({"access_token": format!("tok{n}")})).into_response()
}

/// Accepts only the second token and later ones (the first is "expired").
async fn authed(
    State(c): State<Arc<Counters>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    c.calls.fetch_add(1, Ordering::SeqCst);
    let tok = q
        .get("access_token")
        .cloned()
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if tok == "tok1" || tok.is_empty() {
        return axum::Json(json!({"errcode": 40014})).into_response();
    }
    axum::Json(json!({"errcode": 0, "token_was": tok})).into_response()
}

fn client(base: &str, f: impl FnOnce(&mut HttpSettings)) -> JsonClient {
    let mut s = HttpSettings::new(base);
    f(&mut s);
    JsonClient::new("test", &s, check).unwrap()
}

#[tokio::test]
async fn classifier_and_caps() {
    let (srv, _) = server().await;
    let c = client(&srv.base_url(), |s| {
        s.max_body_bytes = 16 * 1024;
        s.timeout = Duration::from_millis(300);
    });
    assert_eq!(c.send(&Request::get("/ok")).await.unwrap()["v"], 1);

    let e = c.send(&Request::get("/redirect")).await.unwrap_err();
    assert_eq!(e.provider_code(), Some("302"), "not followed: {e}");
    assert!(!e.is_temporary());

    let e = c.send(&Request::get("/bare404")).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Unavailable,
        "a bare 404 is no NotFound"
    );
    assert_eq!(e.provider_code(), Some("404"));
    assert_eq!(e.operation(), Some("/bare404"));

    let e = c.send(&Request::get("/notjson")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary());

    let e = c.send(&Request::get("/big")).await.unwrap_err();
    assert!(e.message().contains("cap"), "{}", e.message());

    let e = c.send(&Request::get("/busy")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_temporary());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    // a throttle body's default wait gives way to the reset header, when one is configured
    let e = c.send(&Request::get("/throttled")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    let with_reset = client(&srv.base_url(), |s| {
        s.reset_header = Some("x-ogw-ratelimit-reset");
    });
    let e = with_reset
        .send(&Request::get("/throttled"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));

    // only the provider's explicit code says "not found"
    let e = c.send(&Request::get("/gone")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.provider_code(), Some("60121"));

    let e = c.send(&Request::get("/slow")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary(), "timeouts are temporary");

    let e = c
        .send(
            &Request::get("/nowhere-but-json")
                .secret_query("access_token", "S3CRET".to_owned().into()),
        )
        .await
        .unwrap_err();
    assert!(!format!("{e:?}").contains("S3CRET"));
    assert!(!e.to_string().contains("S3CRET"));
}

#[tokio::test]
async fn connection_refused_is_temporary_and_unsent() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!("http://127.0.0.1:{port}"), |_| {});
    let e = c
        .send(&Request::get("/x").secret_query("access_token", "S3CRET".to_owned().into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary());
    assert!(
        e.context()
            .iter()
            .any(|(k, v)| k == "request_sent" && v == "no")
    );
    assert!(!format!("{e:?}").contains("S3CRET"), "{e:?}");
}

#[test]
fn plaintext_is_refused_unless_allowed() {
    let s = HttpSettings::new("http://directory.example.com");
    let e = JsonClient::new("test", &s, check).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.message().contains("allow_plaintext"), "{}", e.message());
    let mut s = HttpSettings::new("http://directory.example.com");
    s.allow_plaintext = true;
    assert!(JsonClient::new("test", &s, check).is_ok());
}

struct Src;

#[async_trait]
impl TokenSource for Src {
    async fn fetch(&self, client: &JsonClient) -> idsync_core::Result<IssuedToken> {
        let v = client.send(&Request::post("/token", json!({}))).await?;
        Ok(IssuedToken {
            value: SecretString::from(v["access_token"].as_str().unwrap_or_default().to_owned()),
            expires_in: Duration::from_secs(7200),
        })
    }
}

#[tokio::test]
async fn token_error_refreshes_once_and_single_flight() {
    let (srv, counters) = server().await;
    let auth = Arc::new(TokenAuth::new(
        client(&srv.base_url(), |_| {}),
        Src,
        TokenPlacement::Query("access_token"),
        Duration::from_secs(60),
    ));
    // ten concurrent callers: one fetch (tok1), rejected, one refresh (tok2)
    let mut hs = Vec::new();
    for _ in 0..10 {
        let a = auth.clone();
        hs.push(tokio::spawn(async move {
            a.send(&Request::get("/authed")).await
        }));
    }
    for h in hs {
        let v = h.await.unwrap().unwrap();
        assert_eq!(v["token_was"], "tok2");
    }
    assert_eq!(counters.tokens.load(Ordering::SeqCst), 2);
    assert_eq!(auth.token_fetches(), 2);

    let bearer = TokenAuth::new(
        client(&srv.base_url(), |_| {}),
        Src,
        TokenPlacement::Bearer,
        Duration::from_secs(60),
    );
    // tok3 is fetched first and accepted
    let v = bearer.send(&Request::get("/authed")).await.unwrap();
    assert_eq!(v["token_was"], "tok3");
    assert!(!format!("{bearer:?}").contains("tok3"));
}

#[tokio::test]
async fn a_token_rejected_twice_is_an_error_not_a_loop() {
    struct Stale;
    #[async_trait]
    impl TokenSource for Stale {
        async fn fetch(&self, _client: &JsonClient) -> idsync_core::Result<IssuedToken> {
            Ok(IssuedToken {
                value: SecretString::from("tok1".to_owned()),
                expires_in: Duration::from_secs(7200),
            })
        }
    }
    let (srv, counters) = server().await;
    let auth = TokenAuth::new(
        client(&srv.base_url(), |_| {}),
        Stale,
        TokenPlacement::Query("access_token"),
        Duration::from_secs(60),
    );
    let e = auth.send(&Request::get("/authed")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(counters.calls.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(auth.token_fetches(), 2);
}

#[tokio::test]
async fn raw_bodies_go_byte_for_byte_and_any_2xx_body_is_an_answer() {
    let app = Router::new()
        .route(
            "/echo",
            post(|headers: HeaderMap, body: axum::body::Bytes| async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (
                    StatusCode::OK,
                    format!("{ct}|{}", String::from_utf8_lossy(&body)),
                )
            }),
        )
        .route("/empty", post(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/busy",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "7")],
                    "busy",
                )
            }),
        );
    let srv = FakeServer::start("raw", app).await.unwrap();
    let c = client(&srv.base_url(), |_| {});
    let body = br#"{"b": 1,  "a":"x"}"#.to_vec();
    let r = c
        .try_send_raw(&Request::post("/echo", json!({})).raw_body("application/json", body))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"application/json|{"b": 1,  "a":"x"}"#,
        "sent as given, not re-encoded"
    );
    let r = c
        .try_send_raw(
            &Request::new(idsync_http::Method::POST, "/empty").raw_body("text/plain", "x"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let e = c
        .try_send_raw(&Request::new(idsync_http::Method::POST, "/busy").raw_body("text/plain", "x"))
        .await
        .unwrap_err();
    let class = e.class();
    assert_eq!(class.status, ErrorStatus::Temporary, "{e}");
    assert_eq!(class.retry_after, Some(Duration::from_secs(7)));
}
