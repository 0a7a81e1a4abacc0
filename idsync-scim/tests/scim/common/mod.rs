//! Test harness: idsync's SCIM server on a free loopback port over an in-memory hub, and
//! the real scim2-server / scim2-tester from the project's own script, started when the
//! environment does not describe a running one already (as scripts/test.sh does).
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use idsync_core::{Engine, MemoryStore, Store};
use idsync_scim::{ScimServer, ServerConfig};

pub const TOKEN: &str = "test-token-for-idsync";

/// A running idsync SCIM server.
pub struct Running {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub http: reqwest::Client,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(TOKEN)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .put(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
    }

    pub fn patch(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .patch(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(TOKEN)
    }
}

/// Start a server; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(ServerConfig) -> ServerConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}/scim/v2");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let cfg = tweak(ServerConfig::new(base.clone()).with_client("tests", TOKEN));
    let server = ScimServer::new(engine.clone(), cfg).unwrap();
    let app = axum::Router::new().nest("/scim/v2", server.router());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Running {
        base,
        store,
        engine,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("services")
        .join("scim2.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Facts of the scim2 service (scim2-cli and scim2-server installed in a venv): from the
/// environment when scripts/test.sh started it, else installed here by the project's script
/// (its `start`, then `stop`), failing loudly when that does not work.
pub fn scim2() -> &'static HashMap<String, String> {
    static S: OnceLock<HashMap<String, String>> = OnceLock::new();
    S.get_or_init(|| {
        let keys = ["SCIM2_URL", "SCIM2_TOKEN", "SCIM2_CLI", "SCIM2_VENV"];
        if keys.iter().all(|k| std::env::var(k).is_ok()) {
            return keys
                .iter()
                .map(|k| ((*k).to_owned(), std::env::var(k).unwrap()))
                .collect();
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "scim2-{}-{}",
            std::process::id(),
            free_port()
        ));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .env("SCIM2_PORT", free_port().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
        if !out.status.success() {
            panic!(
                "{} start {} failed ({}); scim2-server is required, not optional.\nstdout:\n{}\nstderr:\n{}",
                script().display(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The tests need the installed venv (scim2-cli, scim2-server); each starts servers
        // of its own, so this one is stopped again and nothing outlives the tests.
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&dir)
            .output();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// A scim2-server of its own (fresh, empty), sharing the installed venv.
pub struct Peer {
    pub url: String,
    pub token: String,
    dir: PathBuf,
}

impl Peer {
    pub fn start() -> Peer {
        let venv = scim2()["SCIM2_VENV"].clone();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "scim2-peer-{}-{}",
            std::process::id(),
            free_port()
        ));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .env("SCIM2_VENV", venv)
            .env("SCIM2_PORT", free_port().to_string())
            .env("SCIM2_TOKEN", "peer-token")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scim2.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let facts: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Peer {
            url: facts["SCIM2_URL"].clone(),
            token: facts["SCIM2_TOKEN"].clone(),
            dir,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("purge")
            .arg(&self.dir)
            .output();
    }
}
