//! Helpers: start a server on a free port, wait for conditions.

use std::net::SocketAddr;

use std::time::Duration;

use idsync_serve::server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A started server: its address, how to stop it, its task.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<idsync_core::Result<()>>,
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Begin the graceful shutdown.
    pub(crate) fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stop and wait for the server to end.
    pub(crate) async fn shutdown(mut self) {
        self.stop();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the server stops within 30 s")
            .expect("the server task ends")
            .expect("the server ends without an error");
    }
}

pub(crate) async fn start(server: Server) -> Running {
    let bound = server.bind().await.expect("bind 127.0.0.1:0");
    let addr = bound.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Poll `f` every 50 ms until it is true, at most `secs` seconds; panics with `what`.
pub(crate) async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

/// The value of one metric line in a Prometheus text (0 when absent).
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A 43-character EncodingAESKey and a token for signed DingTalk test pushes.
pub(crate) const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub(crate) const CB_TOKEN: &str = "callback-token";

/// One signed, encrypted DingTalk push of `payload` with `nonce`, as DingTalk sends it:
/// the query string and the JSON body.
pub(crate) fn signed_push(
    crypto: &idsync_dingtalk::CallbackCrypto,
    nonce: &str,
    payload: &serde_json::Value,
) -> (Vec<(String, String)>, serde_json::Value) {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    idsync_dingtalk::crypto::seal_event(crypto, &payload.to_string(), &ts, nonce).unwrap()
}
