//! idsync's service parts mounted in your own axum app.
//!
//! Your `axum::Router` keeps its own routes; idsync adds, over a SQLite hub:
//!
//! * the change feed and snapshots for apps ([`idsync_serve::feed::router`]:
//!   `GET /api/v1/changes`, `/api/v1/accounts`, `/api/v1/orgs`) behind a token with scope
//!   `read`;
//! * the bulk import API ([`idsync_serve::import::router`]: `POST /api/v1/import/{job}`)
//!   behind a token with scope `import`;
//! * `/healthz`, `/readyz` and `/metrics` ([`idsync_serve::ops::router`]) without a token
//!   (keep them on an internal network, or layer `auth::require(Scope::Read)` on them too).
//!
//! [`Tokens::layer`] goes once around everything; each protected router gets
//! [`auth::require`] with its scope. Your own routes can use the same tokens (`/whoami`
//! below reads the [`Caller`] that `require` puts in the request).
//!
//! ```text
//! cargo run --example serve_embedded                  # serves 127.0.0.1:8080 until Ctrl-C
//! cargo run --example serve_embedded -- 127.0.0.1:9000
//! cargo run --example serve_embedded -- --once        # port 0, calls itself, prints, exits
//! ```
//!
//! With `--once` it imports the bundled sample org chart (20 departments, 200 people)
//! through its own import API, reads the change feed with and without a token, and stops.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Json, Router};
use idsync_core::{Engine, Hub, Store};
use idsync_serve::auth::{self, Caller, Scope, TokenEntry, Tokens};
use idsync_serve::feed;
use idsync_serve::import::{self, ImportConfig};
use idsync_serve::ops::{self, Jobs, Metrics, OpsState};
use idsync_store::SqliteStore;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The import job of this app: records posted to `/api/v1/import/hr-import` go into the hub.
pub(crate) const IMPORT_JOB: &str = "hr-import";

/// The app: your own routes, and idsync's routers over `store`, with `tokens` accepted.
pub(crate) fn app(store: Arc<dyn Store>, tokens: &Tokens) -> Router {
    // Your own routes: one open, one behind the same tokens.
    let mine = Router::new()
        .route("/", get(|| async { "my service, with idsync inside\n" }))
        .merge(
            Router::new()
                .route("/whoami", get(whoami))
                .layer(auth::require(Scope::Read)),
        );

    // idsync: the feed for apps (read), the import API (import), health and metrics.
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let import_job = import::import_job(IMPORT_JOB, hub);
    let feed = feed::router(store.clone()).layer(auth::require(Scope::Read));
    let imports = import::router(engine, vec![import_job], ImportConfig::default())
        .layer(auth::require(Scope::Import));
    let ops = ops::router(OpsState {
        store,
        metrics: Metrics::new(),
        jobs: Jobs::new(),
        stuck_after: chrono::Duration::hours(1),
    });

    mine.merge(feed)
        .merge(imports)
        .merge(ops)
        // Outside every `require`: hands them the accepted tokens.
        .layer(tokens.layer())
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({ "token": caller.name, "scopes": caller.scopes }))
}

/// Two tokens, made fresh: one to read, one to import. Only their SHA-256 hashes are kept
/// by the service (a config keeps `sha256 = "..."`, see `idsync_serve::auth`).
pub(crate) struct Secrets {
    pub(crate) read: String,
    pub(crate) import: String,
}

impl Secrets {
    pub(crate) fn generate() -> Self {
        Secrets {
            read: format!("read-{:032x}", rand::random::<u128>()),
            import: format!("import-{:032x}", rand::random::<u128>()),
        }
    }

    pub(crate) fn tokens(&self) -> Tokens {
        Tokens::new(vec![
            TokenEntry::new("reader", auth::hash_token(&self.read), vec![Scope::Read]),
            TokenEntry::new(
                "importer",
                auth::hash_token(&self.import),
                vec![Scope::Import],
            ),
        ])
    }
}

/// What `--once` saw.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// `GET /api/v1/changes` without a token: status.
    pub(crate) no_token: u16,
    /// `GET /api/v1/changes` with the read token, before the import: status and body.
    pub(crate) feed_before: (u16, Value),
    /// `POST /api/v1/import/hr-import` with the read token: status (a scope it lacks).
    pub(crate) import_with_read_token: u16,
    /// `POST /api/v1/import/hr-import` with the import token: status and body.
    pub(crate) import: (u16, Value),
    /// `GET /api/v1/changes?cursor=<next_cursor of feed_before>`: status and body.
    pub(crate) feed_after: (u16, Value),
    /// `GET /whoami` with the read token: status and body.
    pub(crate) whoami: (u16, Value),
    /// `GET /healthz` without a token: status.
    pub(crate) healthz: u16,
}

/// The sample org chart as NDJSON import records.
fn sample_ndjson() -> Result<String, BoxError> {
    let (orgs, accounts) = idsync_examples::sample_org_chart();
    let mut body = String::new();
    let records = orgs.iter().map(|o| (serde_json::to_value(o), "org")).chain(
        accounts
            .iter()
            .map(|a| (serde_json::to_value(a), "account")),
    );
    for (v, kind) in records {
        let mut v = v?;
        v["type"] = kind.into();
        body.push_str(&v.to_string());
        body.push('\n');
    }
    Ok(body)
}

async fn status_json(r: reqwest::RequestBuilder) -> Result<(u16, Value), BoxError> {
    let r = r.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// Serve the app on 127.0.0.1, port 0, over a SQLite hub in a temporary directory; call it
/// as an app would; shut it down.
pub(crate) async fn run_once() -> Result<Outcome, BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("hub.db")).await?);
    let secrets = Secrets::generate();
    let app = app(store, &secrets.tokens());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let calls = async {
        let http = reqwest::Client::new();
        let changes = format!("{base}/api/v1/changes");
        let import_url = format!("{base}/api/v1/import/{IMPORT_JOB}");
        let no_token = http.get(&changes).send().await?.status().as_u16();
        let feed_before = status_json(http.get(&changes).bearer_auth(&secrets.read)).await?;
        let import_with_read_token = http
            .post(&import_url)
            .bearer_auth(&secrets.read)
            .body("[]")
            .send()
            .await?
            .status()
            .as_u16();
        let import = status_json(
            http.post(&import_url)
                .bearer_auth(&secrets.import)
                .header("Content-Type", "application/x-ndjson")
                .header("Idempotency-Key", "sample-chart-1")
                .body(sample_ndjson()?),
        )
        .await?;
        let cursor = feed_before.1["next_cursor"].as_str().unwrap_or_default();
        let feed_after = status_json(
            http.get(&changes)
                .query(&[("cursor", cursor), ("limit", "5")])
                .bearer_auth(&secrets.read),
        )
        .await?;
        let whoami = status_json(
            http.get(format!("{base}/whoami"))
                .bearer_auth(&secrets.read),
        )
        .await?;
        let healthz = http
            .get(format!("{base}/healthz"))
            .send()
            .await?
            .status()
            .as_u16();
        Ok::<_, BoxError>(Outcome {
            no_token,
            feed_before,
            import_with_read_token,
            import,
            feed_after,
            whoami,
            healthz,
        })
    };
    let outcome = calls.await;
    // Stop the server whatever the calls gave, then wait for it.
    let _ = stop.send(());
    server.await??;
    outcome
}

async fn serve(listen: SocketAddr) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("hub.db")).await?);
    let secrets = Secrets::generate();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("serving {base} (a SQLite hub in {})", dir.path().display());
    println!("tokens made for this run (the service keeps only their hashes):");
    println!(
        "  curl -H 'Authorization: Bearer {}' {base}/api/v1/changes",
        secrets.read
    );
    println!(
        "  curl -H 'Authorization: Bearer {}' --data-binary @records.ndjson {base}/api/v1/import/{IMPORT_JOB}",
        secrets.import
    );
    println!("Ctrl-C stops it.");
    axum::serve(listener, app(store, &secrets.tokens()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() != Some("--once") {
        let listen = arg.as_deref().unwrap_or("127.0.0.1:8080").parse()?;
        return serve(listen).await;
    }
    let o = run_once().await?;
    let import = format!("/api/v1/import/{IMPORT_JOB}");
    let show = |call: &str, answer: String| println!("{call:<46} -> {answer}");
    show("GET  /api/v1/changes, no token", o.no_token.to_string());
    show(
        "GET  /api/v1/changes, read token",
        format!(
            "{}, next_cursor {}",
            o.feed_before.0, o.feed_before.1["next_cursor"]
        ),
    );
    show(
        &format!("POST {import}, read token"),
        o.import_with_read_token.to_string(),
    );
    show(
        &format!("POST {import}, import token"),
        format!(
            "{} {}: received {}, applied {}",
            o.import.0,
            o.import.1["status"],
            o.import.1["received"],
            o.import.1["counts"]["applied"]
        ),
    );
    show(
        "GET  /api/v1/changes?cursor=..&limit=5",
        format!(
            "{}, has_more {}",
            o.feed_after.0, o.feed_after.1["has_more"]
        ),
    );
    for e in o.feed_after.1["entries"].as_array().into_iter().flatten() {
        println!(
            "       #{} {} {} {}",
            e["seq"], e["op"], e["kind"], e["anchor"]
        );
    }
    show(
        "GET  /whoami, read token",
        format!("{} {}", o.whoami.0, o.whoami.1),
    );
    show("GET  /healthz, no token", o.healthz.to_string());
    Ok(())
}
