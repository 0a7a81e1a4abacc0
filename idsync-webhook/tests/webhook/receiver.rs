//! The Python receiver (`scripts/services/webhook-receiver.sh`): verifies every delivery
//! with the reference library `standardwebhooks`. Taken from `WEBHOOK_RECEIVER_URL` /
//! `WEBHOOK_RECEIVER_SECRET`, or started here once per test binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// A running receiver.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) secret: String,
}

static RECEIVER: OnceLock<Result<Receiver, String>> = OnceLock::new();

fn start() -> Result<Receiver, String> {
    if let (Ok(url), Ok(secret)) = (
        std::env::var("WEBHOOK_RECEIVER_URL"),
        std::env::var("WEBHOOK_RECEIVER_SECRET"),
    ) {
        return Ok(Receiver { url, secret });
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webhook-receiver");
    let out = Command::new("bash")
        .arg(root.join("scripts/services/webhook-receiver.sh"))
        .arg("start")
        .arg(&dir)
        .env("WEBHOOK_RECEIVER_OWNER_PID", std::process::id().to_string())
        .output()
        .map_err(|e| format!("cannot run webhook-receiver.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "webhook-receiver.sh start failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let fact = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .ok_or_else(|| format!("webhook-receiver.sh printed no {k}: {text}"))
    };
    Ok(Receiver {
        url: fact("WEBHOOK_RECEIVER_URL")?,
        secret: fact("WEBHOOK_RECEIVER_SECRET")?,
    })
}

/// The receiver; fails loudly when it cannot be had.
pub(crate) fn receiver() -> &'static Receiver {
    match RECEIVER.get_or_init(start) {
        Ok(r) => r,
        Err(e) => panic!("the Standard Webhooks receiver is needed and could not start: {e}"),
    }
}

impl Receiver {
    /// A fresh path of its own for one test.
    pub(crate) fn path(&self, test: &str) -> String {
        format!("/{test}-{}", uuid::Uuid::new_v4().simple())
    }

    /// Script answers or a per-path secret (`POST /_control`).
    pub(crate) async fn control(&self, body: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_control", self.url))
            .json(&body)
            .send()
            .await
            .expect("receiver control");
        assert!(r.status().is_success(), "control {body}: {}", r.status());
    }

    /// Answer the next `count` deliveries to `path` with `status` (every later one: `None`).
    pub(crate) async fn script(
        &self,
        path: &str,
        status: u16,
        retry_after: Option<&str>,
        count: Option<u32>,
    ) {
        self.control(
            json!({"path": path, "status": status, "retry_after": retry_after, "count": count}),
        )
        .await;
    }

    /// What the receiver recorded for `path`: every attempt, verified or not.
    pub(crate) async fn received(&self, path: &str) -> Vec<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/received", self.url))
            .query(&[("path", path)])
            .send()
            .await
            .expect("receiver /received");
        r.json::<Vec<Value>>().await.expect("receiver JSON")
    }

    /// The verified deliveries it answered 200.
    pub(crate) async fn delivered(&self, path: &str) -> Vec<Value> {
        self.received(path)
            .await
            .into_iter()
            .filter(|r| r["verified"] == json!(true) && r["answered"] == json!(200))
            .collect()
    }
}
