//! The SCIM server's cost per list page at several hub sizes (first page, last page, a
//! `userName eq` lookup), then a full listing at `count=1000` and 1,000 PATCHes at the
//! largest size, for idsync's server over an in-memory hub and, as the reference, a real
//! scim2-server 0.8.3 holding the same users, in the same run.
//!
//!   cargo bench -p idsync-scim --bench scim_bench
//!
//! `IDSYNC_SCIM_BENCH_SIZES` (`1000,100000`) sets the hub sizes; `IDSYNC_SCIM_BENCH_PATCHES`
//! (1000) the PATCHes; `IDSYNC_SCIM_BENCH_PEER_USERS` (10000; 0 skips it) the users given
//! to scim2-server (filling it takes about 3 ms per user). Requests are sent one at a time
//! over keep-alive HTTP/1.1 on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use idsync_core::{Account, Engine, Guard, Job, MemoryAdapter, MemoryStore, Store};
use idsync_scim::{ScimServer, ServerConfig};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn user(i: usize) -> Account {
    let mut a = Account::new(format!("hub-{i:07}"), format!("user{i:07}"));
    a.display_name = Some(format!("User {i}"));
    a.email = Some(format!("user{i}@example.com"));
    a.employee_id = Some(i.to_string());
    a
}

struct Timings {
    list: Duration,
    pages: usize,
    listed: usize,
    patch: Duration,
    patches: usize,
}

async fn measure(http: &reqwest::Client, base: &str, token: &str, n_patch: usize) -> Timings {
    let t0 = Instant::now();
    let mut start = 1;
    let mut pages = 0;
    let mut listed = 0;
    let mut ids = Vec::new();
    loop {
        let v: Value = http
            .get(format!("{base}/Users?startIndex={start}&count=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = v["Resources"].as_array().cloned().unwrap_or_default();
        pages += 1;
        if items.is_empty() {
            break;
        }
        listed += items.len();
        for it in &items {
            if ids.len() < n_patch {
                ids.push(it["id"].as_str().unwrap().to_owned());
            }
        }
        start += items.len();
        if start > v["totalResults"].as_u64().unwrap() as usize {
            break;
        }
    }
    let list = t0.elapsed();
    let t1 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let r = http
            .patch(format!("{base}/Users/{id}"))
            .bearer_auth(token)
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "title", "value": format!("t{i}")}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "PATCH {id}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    Timings {
        list,
        pages,
        listed,
        patch: t1.elapsed(),
        patches: ids.len(),
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// Median milliseconds of 15 requests of a 100-user page at the start, a 100-user page at
/// the end, and a `userName eq` lookup of a user in the middle.
async fn page_costs(http: &reqwest::Client, base: &str, token: &str, n: usize) -> [f64; 3] {
    let name = |i: usize| format!("user{i:07}");
    let last = n.saturating_sub(99).max(1);
    let filter = format!("userName eq \"{}\"", name(n / 2));
    let queries = [
        "startIndex=1&count=100".to_owned(),
        format!("startIndex={last}&count=100"),
        format!("filter={}", urlencode(&filter)),
    ];
    let mut out = [0.0; 3];
    for (k, q) in queries.iter().enumerate() {
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let v: Value = http
                .get(format!("{base}/Users?{q}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            times.push(t.elapsed());
            let got = v["Resources"].as_array().map_or(0, Vec::len);
            let want = if k == 2 { 1 } else { 100.min(n) };
            assert_eq!(got, want, "{q}: {v}");
        }
        out[k] = median(times);
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn show_pages(name: &str, n: usize, c: [f64; 3]) {
    println!(
        "{name} @ {n} users: page 1 (count=100) {:.2} ms; last page {:.2} ms; userName eq {:.2} ms",
        c[0], c[1], c[2]
    );
}

fn show(name: &str, t: &Timings) {
    println!(
        "{name}: listed {} users in {} pages in {:.2} s ({:.1} ms/page); {} PATCHes in {:.2} s ({:.2} ms each)",
        t.listed,
        t.pages,
        t.list.as_secs_f64(),
        t.list.as_secs_f64() * 1000.0 / t.pages as f64,
        t.patches,
        t.patch.as_secs_f64(),
        t.patch.as_secs_f64() * 1000.0 / t.patches.max(1) as f64
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hub of `n` users filled by an ordinary engine run, served by idsync's SCIM server.
async fn serve_hub(n: usize) -> String {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let src = Arc::new(MemoryAdapter::with_data(
        "bench",
        Vec::new(),
        (0..n).map(user).collect(),
    ));
    let hub = Arc::new(idsync_core::Hub::new(store.clone()));
    let t = Instant::now();
    let r = engine
        .run(&Job::new("bench-seed", src, hub).with_guard(Guard::off()))
        .await
        .unwrap();
    assert_eq!(r.counts.failed, 0);
    println!(
        "idsync: hub seeded with {n} accounts in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/scim/v2", listener.local_addr().unwrap());
    let server = ScimServer::new(
        engine,
        ServerConfig::new(base.clone()).with_client("bench", TOKEN),
    )
    .unwrap();
    let app = axum::Router::new().nest("/scim/v2", server.router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("IDSYNC_SCIM_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let n_patch = env_usize("IDSYNC_SCIM_BENCH_PATCHES", 1000);
    let n_peer = env_usize("IDSYNC_SCIM_BENCH_PEER_USERS", 10_000);
    let http = reqwest::Client::new();

    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in &sizes {
        let base = serve_hub(n).await;
        show_pages("idsync-scim", n, page_costs(&http, &base, TOKEN, n).await);
        if n == largest {
            let ours = measure(&http, &base, TOKEN, n_patch).await;
            show("idsync-scim", &ours);
        }
    }
    if n_peer == 0 {
        return;
    }
    let n = n_peer;

    // scim2-server with the same users.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/scim2.sh");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scim2-bench-{}", std::process::id()));
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("start")
        .arg(&dir)
        .env("SCIM2_PORT", free_port().to_string());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (url, token) = (facts["SCIM2_URL"].clone(), facts["SCIM2_TOKEN"].clone());
    let t = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(8, |i| {
            let (http, url, token) = (&http, &url, &token);
            async move {
                let a = user(i);
                let r = http
                    .post(format!("{url}/Users"))
                    .bearer_auth(token)
                    .header("content-type", "application/scim+json")
                    .body(idsync_scim::client::user_json(&a).to_string())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "seed {i}: {}", r.status());
            }
        })
        .await;
    println!(
        "scim2-server: seeded with {n} users by POST in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    show_pages(
        "scim2-server 0.8.3",
        n,
        page_costs(&http, &url, &token, n).await,
    );
    let theirs = measure(&http, &url, &token, n_patch).await;
    show("scim2-server 0.8.3", &theirs);
    let _ = Command::new("bash")
        .arg(&script)
        .arg("purge")
        .arg(&dir)
        .output();
}
