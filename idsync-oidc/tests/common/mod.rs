//! Test harness: a real oidc-provider (scripts/services/oidc-provider.sh) per test binary,
//! unless the environment already describes one (as scripts/test.sh exports it), an app
//! serving the login routes on a free port, and a headless browser that logs in through
//! the provider's dev interactions.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_pass_by_value
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use idsync_core::{Engine, Hub, MemoryStore, Store};
use idsync_oidc::{Login, LoginError, LoginHandler, OidcProvider, OidcService, ProviderConfig};
use secrecy::SecretString;

/// Connection facts of a running provider.
#[derive(Debug, Clone)]
pub struct Op {
    pub vars: HashMap<String, String>,
}

impl Op {
    pub fn var(&self, k: &str) -> String {
        self.vars
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} is not known for this provider"))
    }
    pub fn issuer(&self) -> String {
        self.var("OIDC_ISSUER")
    }
    pub fn redirect_uri(&self) -> String {
        self.var("OIDC_REDIRECT_URI")
    }
    pub fn config(&self) -> ProviderConfig {
        let mut c = ProviderConfig::new(
            self.issuer(),
            self.var("OIDC_CLIENT_ID"),
            self.redirect_uri(),
        );
        c.client_secret_env = Some("UNUSED_IN_TESTS".into());
        c.scopes = vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "groups".into(),
        ];
        c
    }
    pub fn secret(&self) -> SecretString {
        SecretString::from(self.var("OIDC_CLIENT_SECRET"))
    }
    /// Write the claims the provider serves for login `id` (read again at every login).
    pub fn set_account(&self, id: &str, claims: serde_json::Value) {
        let dir = PathBuf::from(self.var("OIDC_ACCOUNTS_DIR"));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{id}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&claims).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{id}.json"))).unwrap();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("services")
        .join("oidc-provider.sh")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn run_script(cmd: &str, datadir: &PathBuf, env: &[(&str, String)]) -> HashMap<String, String> {
    let path = script();
    let mut c = Command::new("bash");
    c.arg(&path).arg(cmd).arg(datadir);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    if !out.status.success() {
        panic!(
            "{} {cmd} {} failed ({}); the OIDC provider is required, not optional.\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            datadir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Start a provider of our own (free port, own data dir, shared node_modules).
pub fn start_own(tag: &str, code_ttl: u32) -> (Op, PathBuf) {
    let dir = tmp().join(format!("idsync-oidc-{tag}-{}", std::process::id()));
    let vars = run_script(
        "start",
        &dir,
        &[
            ("OIDC_PORT", free_port().to_string()),
            ("OIDC_CODE_TTL", code_ttl.to_string()),
            (
                "OIDC_NODE_DIR",
                tmp().join("oidc-node").display().to_string(),
            ),
            ("OIDC_OWNER_PID", std::process::id().to_string()),
        ],
    );
    (Op { vars }, dir)
}

/// Start a stopped provider of our own again, on its port.
pub fn restart_own(op: &Op, dir: &PathBuf) {
    let port = op.issuer().rsplit(':').next().unwrap().to_owned();
    run_script(
        "start",
        dir,
        &[
            ("OIDC_PORT", port),
            ("OIDC_CODE_TTL", op.var("OIDC_CODE_TTL")),
            (
                "OIDC_NODE_DIR",
                tmp().join("oidc-node").display().to_string(),
            ),
            ("OIDC_OWNER_PID", std::process::id().to_string()),
        ],
    );
}

pub fn stop_own(dir: &PathBuf) {
    run_script("stop", dir, &[]);
}

/// The provider of this test binary: from the environment, else started here.
pub fn provider() -> &'static Op {
    static S: OnceLock<Op> = OnceLock::new();
    S.get_or_init(|| {
        let keys = [
            "OIDC_ISSUER",
            "OIDC_CLIENT_ID",
            "OIDC_CLIENT_SECRET",
            "OIDC_REDIRECT_URI",
            "OIDC_ACCOUNTS_DIR",
        ];
        if keys.iter().all(|k| std::env::var(k).is_ok()) {
            let vars = keys
                .iter()
                .map(|k| ((*k).to_owned(), std::env::var(k).unwrap()))
                .collect();
            return Op { vars };
        }
        start_own("main", 600).0
    })
}

pub fn random_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{n:012x}")
}

/// Answers a login with the Login as JSON (tests read it back).
#[derive(Debug)]
pub struct JsonHandler;

impl LoginHandler for JsonHandler {
    fn on_login(&self, login: Login) -> Response {
        Json(login).into_response()
    }
    fn on_logout(&self, _h: &HeaderMap) -> Response {
        "bye".into_response()
    }
}

/// An app serving the login routes of some providers into one in-memory hub.
pub struct App {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub hub: Arc<Hub>,
}

impl App {
    pub async fn start(
        providers: Vec<(&str, &Op, ProviderConfig)>,
        handler: Arc<dyn LoginHandler>,
    ) -> App {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let engine = Engine::new(store.clone());
        let hub = Arc::new(Hub::new(store.clone()));
        App::start_on(store, engine, hub, providers, handler).await
    }

    pub async fn start_on(
        store: Arc<dyn Store>,
        engine: Engine,
        hub: Arc<Hub>,
        providers: Vec<(&str, &Op, ProviderConfig)>,
        handler: Arc<dyn LoginHandler>,
    ) -> App {
        let mut svc = OidcService::new(handler).insecure_http();
        for (name, op, cfg) in providers {
            let p = OidcProvider::discover_with_secret(name, &cfg, op.secret())
                .await
                .unwrap_or_else(|e| panic!("discovery of {name}: {e}"));
            svc = svc.with_provider(p, engine.clone(), hub.clone());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, svc.router()).await.unwrap();
        });
        App {
            base,
            store,
            engine,
            hub,
        }
    }

    pub async fn accounts(&self) -> Vec<idsync_core::Account> {
        self.store
            .hub_accounts(idsync_core::PageRequest::sized(10_000))
            .await
            .unwrap()
            .items
    }
}

/// A headless browser: a cookie jar, no automatic redirects.
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: HashMap<String, String>,
}

pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let mut req = req;
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", c.join("; "));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut set_cookies = Vec::new();
        for v in resp.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap().to_owned();
            let pair = s.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if s.contains("Max-Age=0") || val.is_empty() {
                self.jar.remove(k.trim());
            } else {
                self.jar.insert(k.trim().to_owned(), val.to_owned());
            }
            set_cookies.push(s);
        }
        let body = resp.text().await.unwrap();
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        let req = self.http.get(url);
        self.send(req).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.http.post(url).form(form);
        self.send(req).await
    }

    /// Start a login at the app and return the provider's authorization URL.
    pub async fn start_login(&mut self, app: &App, provider: &str) -> String {
        let a = self.get(&format!("{}/{provider}/login", app.base)).await;
        assert_eq!(a.status, 303, "login: {}", a.body);
        a.location.expect("login redirects")
    }

    /// Log in at the provider as `login`, starting at `auth_url`; returns the query the
    /// provider sends to the redirect URI.
    pub async fn authenticate(&mut self, op: &Op, auth_url: &str, login: &str) -> String {
        let redirect = op.redirect_uri();
        let mut url = auth_url.to_owned();
        for _ in 0..20 {
            if url.starts_with(&redirect) {
                return url
                    .split_once('?')
                    .map(|(_, q)| q.to_owned())
                    .expect("a callback query");
            }
            let a = self.get(&url).await;
            if let Some(loc) = a.location {
                url = join(&url, &loc);
                continue;
            }
            assert_eq!(a.status, 200, "at {url}: {}", a.body);
            let action = between(&a.body, "action=\"", "\"").expect("a form");
            let prompt = between(&a.body, "name=\"prompt\" value=\"", "\"").expect("a prompt");
            let target = join(&url, &action);
            let b = if prompt == "login" {
                self.post_form(
                    &target,
                    &[("prompt", "login"), ("login", login), ("password", "x")],
                )
                .await
            } else {
                self.post_form(&target, &[("prompt", &prompt)]).await
            };
            url = join(&url, &b.location.expect("the form redirects"));
        }
        panic!("no callback after 20 hops");
    }

    /// Deliver the provider's callback query to the app.
    pub async fn callback(&mut self, app: &App, provider: &str, query: &str) -> Answer {
        self.get(&format!("{}/{provider}/callback?{query}", app.base))
            .await
    }

    /// The whole login; the app's answer.
    pub async fn login(&mut self, app: &App, provider: &str, op: &Op, login: &str) -> Answer {
        let auth = self.start_login(app, provider).await;
        let q = self.authenticate(op, &auth, login).await;
        self.callback(app, provider, &q).await
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(s[i..i + j].replace("&amp;", "&"))
}

fn join(base: &str, loc: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

pub fn login_of(a: &Answer) -> Login {
    assert_eq!(a.status, 200, "the login failed: {}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

pub fn error_kind(err: &LoginError) -> &'static str {
    err.kind().as_str()
}
