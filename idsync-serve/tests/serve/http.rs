//! Access (tokens, scopes, no default token, body cap), health, readiness, metrics, TLS.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use idsync_core::{MemoryStore, Store};
use idsync_serve::auth::{Scope, TokenEntry, Tokens, hash_token};
use idsync_serve::server::{ServeOptions, Server, TlsFiles};

use super::common::{metric, start};

fn echo() -> Router {
    Router::new().route("/", post(|b: Bytes| async move { b.len().to_string() }))
}

fn options(body_limit: usize) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        body_limit,
        ..ServeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_body_cap_and_ops_endpoints() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let tokens = Tokens::new(vec![
        TokenEntry::new("reader", hash_token("read-token"), vec![Scope::Read]),
        TokenEntry::new("root", hash_token("admin-token"), vec![Scope::Admin]),
    ]);
    let server =
        Server::new(store, options(4096))
            .tokens(tokens)
            .api("/api/v1/echo", echo(), Scope::Write);
    let srv = start(server).await;
    let http = reqwest::Client::new();

    let r = http.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "health needs no token");
    let r = http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = http.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("idsync_feed_head 0"));

    let r = http.get(srv.url("/api/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    assert!(r.headers().get("www-authenticate").is_some());
    let r = http
        .get(srv.url("/api/v1/jobs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "unknown token");
    let r = http
        .get(srv.url("/api/v1/jobs"))
        .bearer_auth("read-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let send = |token: &'static str, len: usize| {
        http.post(srv.url("/api/v1/echo"))
            .bearer_auth(token)
            .body(vec![b'x'; len])
            .send()
    };
    assert_eq!(
        send("read-token", 10).await.unwrap().status(),
        403,
        "read cannot write"
    );
    let ok = send("admin-token", 10).await.unwrap();
    assert_eq!(ok.status(), 200, "admin includes write");
    assert_eq!(ok.text().await.unwrap(), "10");
    assert_eq!(
        send("admin-token", 8192).await.unwrap().status(),
        413,
        "bodies are capped"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_every_api_request_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = Server::new(store, options(4096)).api("/api/v1/echo", echo(), Scope::Read);
    let srv = start(server).await;
    let http = reqwest::Client::new();
    for token in ["", "anything", "admin"] {
        let r = http
            .post(srv.url("/api/v1/echo"))
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
    }
    // health and metrics are not API routes
    let r = http.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_a_cert_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // a server certificate, not a CA: rustls refuses a CA as the end entity
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed to make the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut opts = options(4096);
    opts.tls = Some(TlsFiles {
        cert: cert.clone(),
        key,
    });
    let srv = start(Server::new(store, opts)).await;
    let pem = std::fs::read(&cert).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/healthz", srv.addr.port());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    // plain HTTP to the TLS port gets no HTTP answer
    let plain = reqwest::Client::new()
        .get(srv.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on the TLS port"
    );
    let m = http
        .get(format!("https://127.0.0.1:{}/metrics", srv.addr.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&m, "idsync_feed_head"), 0.0);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_file_is_a_config_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut opts = options(4096);
    opts.tls = Some(TlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let err = Server::new(store, opts).bind().await.unwrap_err();
    assert_eq!(err.kind(), idsync_core::ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
