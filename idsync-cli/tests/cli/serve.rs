//! `idsync serve` as a process: the durable inbox survives `kill -9` in the middle of a
//! burst of signed DingTalk events, two processes on one PostgreSQL share a job through
//! fenced leases (one is killed, the other takes over), and the bundled sample serves.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idsync_core::{EntityKind, PageRequest, Store};
use idsync_dingtalk::CallbackCrypto;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use secrecy::SecretString;

use super::*;

const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const CB_TOKEN: &str = "callback-token";
const READ_TOKEN: &str = "test-read-token";

/// A running `idsync serve`: its address and everything it printed so far.
struct Served {
    child: Child,
    addr: String,
    output: Arc<Mutex<String>>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, no lease released, nothing flushed.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success());
        let status = self.child.wait().unwrap();
        let out = self.output();
        assert!(status.success(), "serve exited with {status}\n{out}");
        out
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `idsync serve` in `dir` and wait for its "listening on" line.
fn start_serve(dir: &Path, env: &[(&str, &str)]) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idsync"));
    cmd.current_dir(dir)
        .args(["serve"])
        .env_remove("IDSYNC_CONFIG")
        .env_remove("DATABASE_URL")
        .env("IDSYNC_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn idsync serve");
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let o = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("idsync serve: listening on http://") {
                let _ = tx.send(rest.trim().to_owned());
            }
            let mut g = o.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let err = child.stderr.take().unwrap();
    let o = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut g = o.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Served {
            child,
            addr,
            output,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "idsync serve did not start listening:\n{}",
                output.lock().unwrap()
            );
        }
    }
}

/// Poll `f` until it is true; panic with `what` after `secs`.
async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

fn token_line(name: &str, token: &str, scopes: &str) -> String {
    format!(
        "{{ name = \"{name}\", sha256 = \"{}\", scopes = [{scopes}] }}",
        idsync_serve::auth::hash_token(token)
    )
}

/// GET `url` with a bearer token, the answer as JSON (`Null` when it is not JSON).
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_default()
}

/// One signed, encrypted DingTalk push: its query string and body.
fn signed_push(
    crypto: &idsync_dingtalk::CallbackCrypto,
    nonce: &str,
    payload: &serde_json::Value,
) -> (Vec<(String, String)>, serde_json::Value) {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    idsync_dingtalk::crypto::seal_event(crypto, &payload.to_string(), &ts, nonce).unwrap()
}

/// `success`, decrypted from a callback answer, or the status when it was not a 200.
async fn push(
    http: &reqwest::Client,
    url: &str,
    crypto: &CallbackCrypto,
    push: &(Vec<(String, String)>, serde_json::Value),
) -> Result<(), String> {
    let r = http
        .post(url)
        .query(&push.0)
        .json(&push.1)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = r.status();
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let reply: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let msg = crypto
        .decrypt(reply["encrypt"].as_str().unwrap_or_default())
        .map_err(|e| e.to_string())?
        .message;
    if msg == "success" { Ok(()) } else { Err(msg) }
}

async fn hub_accounts(store: &dyn Store) -> Vec<idsync_core::Account> {
    let mut out = Vec::new();
    let mut req = PageRequest::sized(1000);
    loop {
        let p = store.hub_accounts(req.clone()).await.unwrap();
        out.extend(p.items);
        match p.next {
            Some(t) => req.token = Some(t),
            None => return out,
        }
    }
}

fn dingtalk_serve_config(base_url: &str) -> String {
    format!(
        r#"store = {{ sqlite = "hub.db" }}

[providers.dt]
type = "dingtalk"
base_url = "{base_url}"
app_key = "dingfakeappkey"
app_secret_file = "secret"
qps = 1000

[providers.dt.callback]
token_file = "cb-token"
aes_key_file = "cb-aes"

[jobs.dt-in]
source = "dt"
sink = "hub"
lease_seconds = 3
schedule = {{ on_events = true, debounce = "50ms", poll = "200ms" }}

[serve]
listen = "127.0.0.1:0"
tokens = [{}]
"#,
        token_line("test", READ_TOKEN, "\"read\"")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_a_burst_of_1000_signed_events_loses_none_and_applies_each_once() {
    const N: usize = 1000;
    let fake = FakeDingTalk::start(FakeConfig::default())
        .await
        .expect("the fake DingTalk must start");
    let rd = fake.add_dept(1, "研发部");
    for i in 0..N {
        fake.add_user(&format!("u{i:04}"), &format!("名{i}"), &[rd]);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "secret", "fake-app-secret");
    write(d, "cb-token", CB_TOKEN);
    write(d, "cb-aes", AES_KEY);
    write(d, "idsync.toml", &dingtalk_serve_config(&fake.base_url()));
    let crypto = CallbackCrypto::new(
        idsync_dingtalk::PROVIDER,
        SecretString::from(CB_TOKEN),
        &SecretString::from(AES_KEY),
        fake.client_config().app_key,
    )
    .unwrap();
    let pushes: Vec<_> = (0..N)
        .map(|i| {
            signed_push(
                &crypto,
                &format!("nonce{i:04}"),
                &serde_json::json!({
                    "EventType": "user_add_org",
                    "UserId": [format!("u{i:04}")],
                    "CorpId": "ding1"
                }),
            )
        })
        .collect();
    let pushes = Arc::new(pushes);
    let crypto = Arc::new(crypto);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let first = start_serve(d, &[]);
    let url = first.url("/callbacks/dt");
    // The burst: 8 senders; the process is killed once 400 pushes were acknowledged,
    // with requests still in flight.
    let acked: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![false; N]));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (http, url, crypto, pushes, acked, next) = (
            http.clone(),
            url.clone(),
            crypto.clone(),
            pushes.clone(),
            acked.clone(),
            next.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    return;
                }
                if push(&http, &url, &crypto, &pushes[i]).await.is_ok() {
                    acked.lock().unwrap()[i] = true;
                } else {
                    // the server is gone: stop sending
                    return;
                }
            }
        }));
    }
    let a = acked.clone();
    wait_until(120, "400 acknowledged pushes", move || {
        let a = a.clone();
        async move { a.lock().unwrap().iter().filter(|x| **x).count() >= 400 }
    })
    .await;
    first.kill_9();
    for s in senders {
        s.await.unwrap();
    }
    let acked_before: Vec<bool> = acked.lock().unwrap().clone();
    let n_acked = acked_before.iter().filter(|x| **x).count();
    assert!(
        (400..N).contains(&n_acked),
        "the kill landed mid-burst: {n_acked} of {N} acknowledged"
    );

    // Every acknowledged event is in the store, though the process died without a word.
    {
        let store = idsync_store::SqliteStore::open(d.join("hub.db"))
            .await
            .unwrap();
        let head = store.inbox_head("dingtalk:dt").await.unwrap();
        assert!(
            head as usize >= n_acked,
            "acknowledged {n_acked} but the inbox holds {head}"
        );
    }

    // Restart; the provider retries whatever it got no `success` for.
    let second = start_serve(d, &[]);
    let url = second.url("/callbacks/dt");
    let mut refused_as_replay = 0;
    for (i, p) in pushes.iter().enumerate() {
        if acked_before[i] {
            continue;
        }
        match push(&http, &url, &crypto, p).await {
            Ok(()) => {}
            // recorded before the kill, its answer lost: a retry is a replay
            Err(e) if e.contains("403") => refused_as_replay += 1,
            Err(e) => panic!("push {i} after the restart: {e}\n{}", second.output()),
        }
    }
    // A replay of an event acknowledged before the kill is still refused.
    let replayed = acked_before.iter().position(|x| *x).unwrap();
    let err = push(&http, &url, &crypto, &pushes[replayed])
        .await
        .expect_err("a replay after the restart is refused");
    assert!(err.contains("403"), "{err}");

    let (u, h) = (second.url("/api/v1/jobs"), http.clone());
    wait_until(180, "job dt-in caught up with the inbox", move || {
        let (u, h) = (u.clone(), h.clone());
        async move {
            let Ok(r) = h.get(&u).bearer_auth(READ_TOKEN).send().await else {
                return false;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                return false;
            };
            v["dt-in"]["running"] == false && v["dt-in"]["last_run"].is_array() && {
                let m = h
                    .get(u.replace("/api/v1/jobs", "/metrics"))
                    .send()
                    .await
                    .ok();
                match m {
                    Some(m) => m.text().await.unwrap_or_default().lines().any(|l| {
                        l.starts_with("idsync_inbox_lag{stream=\"dingtalk:dt\"}")
                            && l.ends_with(" 0")
                    }),
                    None => false,
                }
            }
        }
    })
    .await;
    let out = second.terminate();
    assert!(out.contains("shutting down"), "{out}");

    eprintln!(
        "acknowledged before the kill: {n_acked}; retried after it: {}, refused as replays: {refused_as_replay}",
        N - n_acked
    );
    let store = idsync_store::SqliteStore::open(d.join("hub.db"))
        .await
        .unwrap();
    // Each event recorded exactly once (retries of recorded ones were refused) ...
    assert_eq!(
        store.inbox_head("dingtalk:dt").await.unwrap() as usize,
        N,
        "{refused_as_replay} retries were refused as replays"
    );
    assert_eq!(
        store.cursor("dt-in").await.unwrap().map(|c| c.0),
        Some(format!("dingtalk:dt#{N}")),
        "the job's committed position is the inbox head"
    );
    // ... and applied exactly once: every person is in the hub, created once, never
    // touched again.
    let accounts = hub_accounts(&store).await;
    assert_eq!(accounts.len(), N);
    for a in &accounts {
        let trail = store.audit(EntityKind::Account, &a.anchor).await.unwrap();
        assert_eq!(trail.len(), 1, "{} applied once: {trail:?}", a.anchor);
    }
}

/// A PostgreSQL server for the test (the test command's, or one started by
/// scripts/services/postgres.sh) and a fresh database on it.
fn fresh_pg_database() -> String {
    let url = std::env::var("IDSYNC_TEST_PG_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/services/postgres.sh"
            );
            let datadir = std::env::temp_dir().join("idsync-cli-serve-pg");
            let out = Command::new("bash")
                .arg(script)
                .arg("start")
                .arg(&datadir)
                .env("POSTGRES_OWNER_PID", std::process::id().to_string())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "PostgreSQL could not be started by {script}:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("DATABASE_URL=").map(str::to_owned))
                .expect("postgres.sh printed no DATABASE_URL")
        });
    let name = format!("idsync_serve_{:08x}", rand::random::<u32>());
    let out = Command::new("psql")
        .arg(&url)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql must be installed (scripts/services/postgres.sh installs it)");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (url.clone(), String::new()),
    };
    let base = base
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(base);
    format!("{base}/{name}{query}")
}

/// A slow HR system: its listing takes `delay` per page of one, so a run lasts long
/// enough to kill a worker in the middle of it.
async fn slow_hr(delay: Duration, people: usize) -> String {
    use axum::extract::Query;
    let app = axum::Router::new().route(
        "/people",
        axum::routing::get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                tokio::time::sleep(delay).await;
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let items: Vec<serde_json::Value> = (page - 1..page)
                    .filter(|i| *i < people)
                    .map(|i| serde_json::json!({"id": format!("p{i}"), "login": format!("person{i}")}))
                    .collect();
                axum::Json(items)
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_on_postgres_share_a_job_and_one_takes_over_from_a_killed_one() {
    let db = fresh_pg_database();
    let hr = slow_hr(Duration::from_millis(150), 12).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        &format!(
            r#"store = {{ postgres_env = "IDSYNC_TEST_SERVE_PG" }}

[providers.hr]
type = "rest"
base_url = "{hr}"
allow_plaintext = true

[providers.hr.accounts]
path = "/people"
page_size = 1
pagination = {{ style = "page" }}
fields = {{ anchor = "/id", username = "/login" }}

[jobs.hr-in]
source = "hr"
sink = "hub"
lease_seconds = 3
sync_orgs = false
schedule = {{ every = "200ms" }}

[serve]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
tokens = [{}]
"#,
            token_line("test", READ_TOKEN, "\"read\"")
        ),
    );
    let env = [("IDSYNC_TEST_SERVE_PG", db.as_str())];
    let check = idsync_env(d, &["check", "--offline"], &env);
    ok(&check);
    let a = start_serve(d, &env);
    let b = start_serve(d, &env);
    let http = reqwest::Client::new();
    let store = Arc::new(idsync_store::PgStore::connect(&db).await.unwrap());

    // Both serve; the runs never overlap (one lease, fenced), and both take turns or
    // one holds on — either way each run ends before the next starts.
    let s = store.clone();
    wait_until(60, "two finished runs of hr-in", move || {
        let s = s.clone();
        async move {
            s.runs(Some("hr-in"), 10)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.finished_at.is_some())
                .count()
                >= 2
        }
    })
    .await;
    // Kill whichever process is running the job right now, mid-run.
    let a_runs_it = {
        let (ua, ub, h) = (a.url("/api/v1/jobs"), b.url("/api/v1/jobs"), http.clone());
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < end, "no process was seen running hr-in");
            let running = |u: String| {
                let h = h.clone();
                async move {
                    let v = get_json(&h, &u, READ_TOKEN).await;
                    v["hr-in"]["running"] == true
                }
            };
            if running(ua.clone()).await {
                break true;
            }
            if running(ub.clone()).await {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (killed, survivor) = if a_runs_it { (a, b) } else { (b, a) };
    let killed_at = chrono::Utc::now();
    killed.kill_9();

    // The survivor takes the job over once the dead holder's lease ran out, and its
    // runs succeed.
    let s = store.clone();
    wait_until(60, "a successful run started after the kill", move || {
        let s = s.clone();
        async move {
            s.runs(Some("hr-in"), 20).await.unwrap().iter().any(|r| {
                r.started_at > killed_at
                    && r.finished_at.is_some()
                    && r.status == idsync_core::RunStatus::Succeeded
            })
        }
    })
    .await;
    let v = get_json(&http, &survivor.url("/api/v1/jobs"), READ_TOKEN).await;
    assert!(v["hr-in"]["last_run"].is_array(), "{v}");
    // Never two runs at once: every finished run ended before the next one started.
    let mut runs = store.runs(Some("hr-in"), 1000).await.unwrap();
    runs.sort_by_key(|r| r.started_at);
    for w in runs.windows(2) {
        if let Some(end) = w[0].finished_at {
            assert!(
                end <= w[1].started_at,
                "runs {} and {} overlap",
                w[0].id,
                w[1].id
            );
        }
    }
    assert_eq!(hub_accounts(&*store).await.len(), 12);
    let out = survivor.terminate();
    assert!(out.contains("shutting down"), "{out}");
}

#[test]
fn the_bundled_serve_sample_serves_the_feed_behind_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/serve.toml");
    let text = std::fs::read_to_string(sample)
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace(
            "../idsync-csv/",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../idsync-csv/"),
        );
    write(d, "idsync.toml", &text);
    let served = start_serve(d, &[("IDSYNC_LOG_FORMAT", "json")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .get(served.url("/api/v1/changes"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "no token, no feed");
        let u = served.url("/api/v1/accounts?limit=1000");
        let h = http.clone();
        wait_until(60, "the sample's 200 people in the hub", move || {
            let (u, h) = (u.clone(), h.clone());
            async move {
                let Ok(r) = h.get(&u).bearer_auth("demo-read-token").send().await else {
                    return false;
                };
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                v["items"].as_array().is_some_and(|a| a.len() == 200)
            }
        })
        .await;
        // The outbound job took the hub to the app, and takes an import there too.
        let created = |text: &str| -> f64 {
            text.lines()
                .filter(|l| {
                    l.starts_with("idsync_ops_total{")
                        && l.contains("job=\"hub-to-app\"")
                        && l.contains("kind=\"create_account\"")
                        && l.contains("outcome=\"applied\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let metrics = |want: f64| {
            let (m, h) = (served.url("/metrics"), http.clone());
            move || {
                let (m, h) = (m.clone(), h.clone());
                async move {
                    let text = h.get(&m).send().await.unwrap().text().await.unwrap();
                    created(&text) == want
                }
            }
        };
        wait_until(60, "200 accounts created in the app", metrics(200.0)).await;
        let r = http
            .post(served.url("/api/v1/import/bulk"))
            .bearer_auth("demo-import-token")
            .body("{\"type\":\"account\",\"anchor\":\"X1\",\"username\":\"xavier\"}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        wait_until(60, "the import reached the app", metrics(201.0)).await;
        let r = http.get(served.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    });
    let out = served.terminate();
    assert!(out.contains("job quickstart: scheduled"), "{out}");
    // Structured logs: the service's log lines are JSON objects.
    let logs: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for msg in [
        "idsync serve: started",
        "idsync serve: shutting down",
        "run ended",
    ] {
        assert!(
            logs.iter().any(|v| v["fields"]["message"] == msg),
            "no JSON log line {msg:?} in\n{out}"
        );
    }
}

#[test]
fn token_prints_a_token_once_and_the_config_line_with_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let r = idsync(dir.path(), &["token", "crm", "--scopes", "read,import"]);
    ok(&r);
    let token = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once; give it to the client): "))
        .unwrap_or_else(|| panic!("{}", r.all()));
    assert!(
        token.starts_with("idsync_") && token.len() == 7 + 64,
        "{token}"
    );
    let line = format!(
        "tokens = [{{ name = \"crm\", sha256 = \"{}\", scopes = [\"read\", \"import\"] }}]",
        idsync_serve::auth::hash_token(token)
    );
    assert!(r.stdout.contains(&line), "{}", r.all());
    let again = idsync(dir.path(), &["token", "crm", "--scopes", "read"]);
    assert!(!again.stdout.contains(token), "a new token each time");
    let bad = idsync(dir.path(), &["token", "crm", "--scopes", "root"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
}

#[test]
fn serve_config_mistakes_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\nschedule = { every = \"soon\" }\n",
            "job j: schedule: every",
            6,
        ),
        (
            "[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\nschedule = { every = \"1m\", cron = \"* * * * *\" }\n",
            "not both",
            6,
        ),
        (
            "[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\nschedule = {}\n",
            "never runs the job",
            6,
        ),
        (
            "[serve]\nlisten = \"0.0.0.0:8080\"\n",
            "plain HTTP on a non-loopback address",
            3,
        ),
        (
            "[serve]\ntokens = [{ name = \"a\", sha256 = \"abc\", scopes = [\"read\"] }]\n",
            "64 hex",
            3,
        ),
        (
            "[serve]\ntokens = [{ name = \"a\", sha256 = \"abc\", scopes = [\"sudo\"] }]\n",
            "unknown variant",
            4,
        ),
        (
            "[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\n[authority.accounts]\nemail = \"nobody\"\n",
            "authority: field authority: account field \"email\" is owned by \"nobody\"",
            6,
        ),
        ("[authority.accounts]\nshoe_size = \"j\"\n", "shoe_size", 3),
    ];
    for (i, (tail, want, line)) in cases.iter().enumerate() {
        let text = format!("[providers.hr]\ntype = \"memory\"\n{tail}");
        write(d, "idsync.toml", &text);
        let r = idsync(d, &["check", "--offline"]);
        assert_eq!(r.code, 2, "case {i}: {}", r.all());
        assert!(
            r.stderr.contains(want),
            "case {i}: want {want:?} in {}",
            r.all()
        );
        if *line > 0 {
            assert!(
                r.stderr.contains(&format!("idsync.toml:{line}:")),
                "case {i}: line {line} in {}",
                r.all()
            );
        }
    }
    // A good one passes, with a serve table and an authority over a hub-writing job.
    write(
        d,
        "idsync.toml",
        "[providers.hr]\ntype = \"memory\"\n[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\n\
         schedule = { every = \"15m\", full_cron = \"0 3 * * *\" }\n\
         [authority.accounts]\nemail = \"j\"\n[serve]\nlisten = \"0.0.0.0:8443\"\nplaintext = true\n",
    );
    ok(&idsync(d, &["check", "--offline"]));
}

/// The oidc-provider of the test command (its variables), else one started here.
fn oidc_provider(dir: &Path) -> (String, String) {
    if let (Ok(i), Ok(c)) = (
        std::env::var("OIDC_ISSUER"),
        std::env::var("OIDC_CLIENT_ID"),
    ) {
        return (i, c);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/services/oidc-provider.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .arg("start")
        .arg(dir.join("oidc"))
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_OWNER_PID", std::process::id().to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "oidc-provider could not be started by {script}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let var = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(str::to_owned))
            .unwrap_or_else(|| panic!("{script} printed no {k}"))
    };
    (var("OIDC_ISSUER="), var("OIDC_CLIENT_ID="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_and_oidc_are_mounted_from_the_serve_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (issuer, client_id) = oidc_provider(d);
    let scim_token = "scim-client-token";
    write(
        d,
        "idsync.toml",
        &format!(
            r#"store = {{ sqlite = "hub.db" }}

[providers.hr]
type = "memory"
generate = {{ orgs = 3, accounts = 10 }}

[jobs.hr-in]
source = "hr"
sink = "hub"
schedule = {{ every = "1h" }}

[serve]
listen = "127.0.0.1:0"
tokens = [{}]

[serve.scim]
base_url = "http://127.0.0.1/scim/v2"
clients = [{{ name = "entra", token_sha256 = "{}" }}]

[serve.oidc]
session_key_env = "IDSYNC_TEST_SESSION_KEY"

[serve.oidc.providers.op]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_env = "IDSYNC_TEST_OIDC_SECRET"
redirect_uri = "http://127.0.0.1:8765/oidc/op/callback"
"#,
            token_line("test", READ_TOKEN, "\"read\""),
            idsync_serve::auth::hash_token(scim_token),
        ),
    );
    let env = [
        (
            "IDSYNC_TEST_SESSION_KEY",
            "0123456789abcdef0123456789abcdef-session",
        ),
        ("IDSYNC_TEST_OIDC_SECRET", "unused-by-the-login-redirect"),
    ];
    let served = start_serve(d, &env);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // SCIM: its own client tokens, the hub's accounts.
    let r = http.get(served.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(r.status(), 401, "SCIM without a token");
    let (u, h) = (served.url("/scim/v2/Users?count=100"), http.clone());
    wait_until(30, "10 SCIM users", move || {
        let (u, h) = (u.clone(), h.clone());
        async move {
            let v = get_json(&h, &u, scim_token).await;
            v["totalResults"] == 10
        }
    })
    .await;
    let r = http
        .post(served.url("/scim/v2/Users"))
        .bearer_auth(scim_token)
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"scim.made@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The SCIM write went through the engine into the hub: the feed has it.
    let feed = get_json(&http, &served.url("/api/v1/changes?limit=1000"), READ_TOKEN).await;
    assert!(
        feed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entity"]["username"] == "scim.made@example.com"),
        "{feed}"
    );
    // OIDC: the login route sends the browser to the provider with PKCE.
    let r = http.get(served.url("/oidc/op/login")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&issuer), "{to}");
    assert!(to.contains("code_challenge_method=S256"), "{to}");
    assert!(to.contains(&format!("client_id={client_id}")), "{to}");
    served.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_wecom_event_reaches_the_hub_through_serve() {
    use idsync_wecom::event::{ContactChange, contact_event_xml};
    use idsync_wecom::fake::{FakeConfig as WxConfig, FakeWeCom};
    const CORP: &str = "wwfake0000000001";
    let fake = FakeWeCom::start(WxConfig::default())
        .await
        .expect("the fake WeCom must start");
    let depts = fake.seed(2, 5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "secret", "fake-app-secret");
    write(d, "cb-token", CB_TOKEN);
    write(d, "cb-aes", AES_KEY);
    write(
        d,
        "idsync.toml",
        &format!(
            r#"store = {{ sqlite = "hub.db" }}

[providers.wx]
type = "wecom"
base_url = "{}"
corp_id = "{CORP}"
secret_file = "secret"
callback = {{ token_file = "cb-token", aes_key_file = "cb-aes" }}

[jobs.wx-in]
source = "wx"
sink = "hub"
schedule = {{ on_events = true, debounce = "50ms", poll = "200ms" }}

[serve]
listen = "127.0.0.1:0"
tokens = [{}]
"#,
            fake.base_url(),
            token_line("test", READ_TOKEN, "\"read\"")
        ),
    );
    let served = start_serve(d, &[]);
    let out = served.output.clone();
    wait_until(10, "the job's line with its callback URL", move || {
        let out = out.clone();
        async move {
            out.lock()
                .unwrap()
                .contains("job wx-in: scheduled; events at http://")
        }
    })
    .await;
    let http = reqwest::Client::new();
    let usernames = |u: String, h: reqwest::Client| async move {
        let v = get_json(&h, &u, READ_TOKEN).await;
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["anchor"].to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let u = served.url("/api/v1/accounts?limit=100");
    let (u1, h1) = (u.clone(), http.clone());
    wait_until(30, "the first full run: 5 people", move || {
        let (u, h) = (u1.clone(), h1.clone());
        async move { usernames(u, h).await.len() == 5 }
    })
    .await;
    // A person joins; WeCom calls back with a signed, encrypted change_contact event.
    fake.add_user("newcomer", "新人", &depts[..1]);
    let crypto = idsync_wecom::CallbackCrypto::new(
        idsync_wecom::PROVIDER,
        SecretString::from(CB_TOKEN),
        &SecretString::from(AES_KEY),
        CORP,
    )
    .unwrap();
    let xml = contact_event_xml(
        CORP,
        chrono::Utc::now().timestamp(),
        &ContactChange::UserCreated {
            userid: "newcomer".into(),
        },
    );
    let ts = chrono::Utc::now().timestamp().to_string();
    let (body, sig) = idsync_wecom::crypto::seal_event(&crypto, &xml, &ts, "n-wx-1", "").unwrap();
    let q = [
        ("msg_signature", sig.as_str()),
        ("timestamp", ts.as_str()),
        ("nonce", "n-wx-1"),
    ];
    let r = http
        .post(served.url("/callbacks/wx"))
        .query(&q)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");
    let (u1, h1) = (u.clone(), http.clone());
    wait_until(30, "the newcomer in the hub", move || {
        let (u, h) = (u1.clone(), h1.clone());
        async move { usernames(u, h).await.iter().any(|a| a.contains("newcomer")) }
    })
    .await;
    // A replay of the same signed request is refused.
    let r = http
        .post(served.url("/callbacks/wx"))
        .query(&q)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    served.terminate();
}

#[test]
fn authority_from_the_config_refuses_a_non_owners_write_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        r#"store = { sqlite = "hub.db" }

[providers.ad]
type = "memory"
accounts = [{ anchor = "u1", username = "alice", title = "Engineer", email = "alice@corp.example" }]

[providers.hr]
type = "memory"
accounts = [{ anchor = "u1", username = "alice", title = "Intern", email = "alice@hr.example" }]

[jobs.ad-in]
source = "ad"
sink = "hub"
sync_orgs = false

[jobs.hr-in]
source = "hr"
sink = "hub"
sync_orgs = false
correlation = ["username"]

[authority.accounts]
title = "ad-in"
"#,
    );
    ok(&idsync(d, &["run", "ad-in"]));
    let r = idsync(d, &["run", "hr-in", "--json"]);
    ok(&r);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["counts"]["refused_fields"], 1, "{report:#}");
    let refused = report["refused"].to_string();
    assert!(
        refused.contains("title") && refused.contains("ad-in"),
        "{refused}"
    );
    let shown = idsync(d, &["show", "account", "u1", "--json"]);
    ok(&shown);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    // the owner's title stays; the field nobody owns took the other job's value
    assert_eq!(v["record"]["title"], "Engineer", "{v:#}");
    assert_eq!(v["record"]["email"], "alice@hr.example", "{v:#}");
    // the refusal is in the audit trail, with the refused value and its owner
    let refusal = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["op"] == "authority_refused")
        .unwrap_or_else(|| panic!("no authority_refused entry: {v:#}"));
    assert_eq!(refusal["job"], "hr-in");
    assert_eq!(refusal["after"]["title"], "Intern");
    assert_eq!(refusal["before"]["title"], "ad-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_job_under_serve_pushes_hub_changes_and_counts_them_in_metrics() {
    // A plain endpoint that takes every delivery (the reference-library receiver checks the
    // signatures in idsync-webhook's own tests); it counts what it got.
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = g.clone();
            async move {
                assert!(headers.contains_key("webhook-signature"));
                g.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "whsec", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    write(
        d,
        "idsync.toml",
        &format!(
            r#"store = {{ sqlite = "hub.db" }}

[providers.hr]
type = "memory"
generate = {{ orgs = 2, accounts = 6 }}

[providers.crm]
type = "webhook"
url = "{hook}"
name = "crm"
allow_plaintext = true
secrets = [{{ file = "whsec" }}]

[jobs.hr-in]
source = "hr"
sink = "hub"
schedule = {{ every = "1h" }}

[jobs.hub-to-crm]
source = "hub"
sink = "crm"
schedule = {{ on_events = true, debounce = "50ms", poll = "200ms" }}

[serve]
listen = "127.0.0.1:0"
"#
        ),
    );
    let served = start_serve(d, &[]);
    let g = got.clone();
    wait_until(30, "8 deliveries (2 orgs, 6 accounts)", move || {
        let g = g.clone();
        async move { g.lock().unwrap().len() == 8 }
    })
    .await;
    let text = reqwest::get(served.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l
                == "idsync_webhook_deliveries_total{endpoint=\"crm\",outcome=\"delivered\"} 8"),
        "{text}"
    );
    let bodies = got.lock().unwrap().clone();
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("\"account.created\""))
            .count(),
        6,
        "{bodies:?}"
    );
    served.terminate();
}
