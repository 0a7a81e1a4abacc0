//! PostgreSQL over TLS: `sslmode=require` and `verify-full` with the test CA against the
//! server `scripts/services/postgres.sh` starts with TLS on; a wrong CA fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::process::Command;

use idsync_core::{Op, Org, PageRequest, Store};
use idsync_store::PgStore;
use sqlx::Connection;

/// `url` with `query` appended.
fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Whether the session of `url` runs over TLS, as the server sees it.
async fn session_is_tls(url: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect with {url}: {e}"));
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    ssl
}

#[tokio::test]
async fn sslmode_require_uses_tls() {
    let url = with_query(&common::pg_url(), "sslmode=require");
    assert!(session_is_tls(&url).await);
    // and plain stays plain: the check above can tell them apart
    let plain = with_query(&common::pg_url(), "sslmode=disable");
    assert!(!session_is_tls(&plain).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_file_and_the_store_on_it() {
    let ca = common::pg_ca_file();
    let q = format!("sslmode=verify-full&sslrootcert={ca}");
    assert!(session_is_tls(&with_query(&common::pg_url(), &q)).await);

    // The store itself, over a verified connection.
    let url = with_query(&common::fresh_pg_database("tls").await, &q);
    let store = PgStore::connect(&url).await.unwrap();
    let op = Op::CreateOrg {
        org: Org::new("d1", None, "Root"),
    };
    store.hub_apply(&op, None).await.unwrap();
    let page = store.hub_orgs(PageRequest::first()).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_fails() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let key = dir.path().join("other-ca.key");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=not the test CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl must run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = format!("sslmode=verify-full&sslrootcert={}", other.display());
    let url = with_query(&common::pg_url(), &q);
    let e = sqlx::PgConnection::connect(&url)
        .await
        .expect_err("a certificate of another CA must be refused");
    let text = e.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "{text}"
    );
    let e = PgStore::connect(&url)
        .await
        .expect_err("the store refuses it too");
    assert!(!e.to_string().is_empty());
}
