//! Raw HTTP client for the legacy DingTalk API: token cache and error bodies. No mapping here.
//!
//! * The access token comes from `GET /gettoken`, is cached, and is refreshed shortly before
//!   it expires. Only one refresh runs at a time: concurrent callers wait for it.
//! * A token error (`40014`/`42001`/`40001`, or `88` with one of those as `sub_code`)
//!   invalidates the token the failed call used (not a newer one) and retries the call once.
//! * Every answer is checked for an error body, also on HTTP 200.
//! * Requests are paced per API path (a sliding one-second window of `qps` requests, the
//!   way DingTalk counts its per-app per-API limit), because one page of a listing makes
//!   several calls to different APIs. No retries beyond the token retry: retrying throttled
//!   or failed pages is the core retry layer's job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::DingTalkConfig;
use crate::error::DingTalkError;

struct CachedToken {
    value: SecretString,
    /// When the token should be replaced (expiry minus the refresh margin).
    refresh_at: Instant,
    generation: u64,
}

/// The legacy-API HTTP client of one app.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    app_key: String,
    app_secret: SecretString,
    margin: Duration,
    token: Mutex<Option<CachedToken>>,
    generation: AtomicU64,
    token_fetches: AtomicU64,
    pacer: Pacer,
}

/// Per-path sliding-window pacing: at most `qps` requests in any one second.
///
/// A request's slot is timed from when its *answer* came back, an upper bound of when the
/// server counted it; so the next request, sent at least one second later, reaches the
/// server at least one second after it whatever the network jitter.
#[derive(Debug)]
struct Pacer {
    qps: usize,
    paths: std::sync::Mutex<HashMap<String, Arc<PathWindow>>>,
}

#[derive(Debug, Default)]
struct PathWindow {
    /// Serves waiters first come, first served.
    queue: Mutex<()>,
    slots: std::sync::Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    /// (id, time, answered): send time while in flight, answer time once answered.
    entries: Vec<(u64, Instant, bool)>,
}

/// A taken slot; give it back with [`Pacer::done`].
struct Ticket {
    window: Arc<PathWindow>,
    id: u64,
}

fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pacer {
    fn new(qps: u32) -> Self {
        Pacer {
            qps: usize::try_from(qps.max(1)).unwrap_or(usize::MAX),
            paths: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a request to `path` fits in its window.
    async fn wait(&self, path: &str) -> Ticket {
        let window = lock_std(&self.paths)
            .entry(path.to_owned())
            .or_default()
            .clone();
        let _turn = window.queue.lock().await;
        let second = Duration::from_secs(1);
        loop {
            let now = Instant::now();
            let sleep_until = {
                let mut slots = lock_std(&window.slots);
                slots
                    .entries
                    .retain(|(_, t, answered)| !*answered || now.duration_since(*t) < second);
                if slots.entries.len() < self.qps {
                    slots.next_id += 1;
                    let id = slots.next_id;
                    slots.entries.push((id, now, false));
                    return Ticket {
                        window: window.clone(),
                        id,
                    };
                }
                slots
                    .entries
                    .iter()
                    .filter(|(_, _, answered)| *answered)
                    .map(|(_, t, _)| *t + second)
                    .min()
                    // all in flight: look again shortly
                    .unwrap_or(now + Duration::from_millis(5))
            };
            tokio::time::sleep_until(sleep_until).await;
        }
    }

    /// The request of `ticket` got its answer (or failed).
    fn done(ticket: &Ticket) {
        let now = Instant::now();
        let mut slots = lock_std(&ticket.window.slots);
        if let Some(e) = slots.entries.iter_mut().find(|(id, _, _)| *id == ticket.id) {
            e.1 = now;
            e.2 = true;
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("app_key", &self.app_key)
            .finish_non_exhaustive()
    }
}

/// Reads an integer that DingTalk may send as a number or a string.
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Client {
    pub(crate) fn new(cfg: &DingTalkConfig) -> Result<Self, DingTalkError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DingTalkError::Config(format!("HTTP client: {}", e.without_url())))?;
        Ok(Client {
            http,
            base: cfg.base().to_owned(),
            app_key: cfg.app_key.clone(),
            app_secret: cfg.app_secret.clone(),
            margin: Duration::from_secs(cfg.token_refresh_margin_secs),
            token: Mutex::new(None),
            generation: AtomicU64::new(0),
            token_fetches: AtomicU64::new(0),
            pacer: Pacer::new(cfg.qps),
        })
    }

    /// How many times `gettoken` was called (for tests and reports).
    pub(crate) fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    /// The cached token, fetching a new one if there is none or it is due for refresh.
    /// The lock is held across the fetch: that is the single-flight refresh.
    async fn token(&self) -> Result<(SecretString, u64), DingTalkError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok((t.value.clone(), t.generation));
            }
        }
        let (value, expires_in) = self.fetch_token().await?;
        let ttl = Duration::from_secs(expires_in.max(1));
        // Refresh `margin` early, but never more than a quarter of the lifetime early.
        let margin = self.margin.min(ttl / 4);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *guard = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + ttl - margin,
            generation,
        });
        Ok((value, generation))
    }

    /// Forget the token of `generation` (a newer one stays).
    async fn invalidate(&self, generation: u64) {
        let mut guard = self.token.lock().await;
        if guard.as_ref().is_some_and(|t| t.generation == generation) {
            *guard = None;
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, u64), DingTalkError> {
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let ticket = self.pacer.wait("/gettoken").await;
        let sent = self
            .http
            .get(format!("{}/gettoken", self.base))
            .query(&[
                ("appkey", self.app_key.as_str()),
                ("appsecret", self.app_secret.expose_secret()),
            ])
            .send()
            .await;
        let body = match sent {
            Ok(resp) => Self::read(resp).await,
            Err(e) => Err(DingTalkError::Transport(e.without_url())),
        };
        Pacer::done(&ticket);
        let body = body?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| DingTalkError::Decode("gettoken: no access_token".into()))?;
        let expires_in = body
            .get("expires_in")
            .and_then(int_of)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(7200);
        Ok((SecretString::from(token.to_owned()), expires_in))
    }

    /// `POST <base><path>?access_token=...` with a JSON body; returns the whole answer
    /// (`errcode` 0). Refreshes the token and retries once on a token error.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, DingTalkError> {
        let mut retried = false;
        loop {
            let (token, generation) = self.token().await?;
            let result = self.post_once(path, body, &token).await;
            match result {
                Err(e) if !retried && e.is_token_error() => {
                    tracing::debug!(path, "DingTalk token rejected; refreshing once");
                    self.invalidate(generation).await;
                    retried = true;
                }
                other => return other,
            }
        }
    }

    async fn post_once(
        &self,
        path: &str,
        body: &Value,
        token: &SecretString,
    ) -> Result<Value, DingTalkError> {
        let ticket = self.pacer.wait(path).await;
        let sent = self
            .http
            .post(format!("{}{}", self.base, path))
            .query(&[("access_token", token.expose_secret())])
            .json(body)
            .send()
            .await;
        let answer = match sent {
            Ok(resp) => Self::read(resp).await,
            Err(e) => Err(DingTalkError::Transport(e.without_url())),
        };
        Pacer::done(&ticket);
        answer
    }

    /// Reads an answer and turns error bodies (on any HTTP status) into errors.
    async fn read(resp: reqwest::Response) -> Result<Value, DingTalkError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| DingTalkError::Transport(e.without_url()))?;
        let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
            if status.is_success() {
                return Err(DingTalkError::Decode(format!(
                    "HTTP {} with a body that is not JSON ({} bytes)",
                    status.as_u16(),
                    bytes.len()
                )));
            }
            return Err(DingTalkError::Status {
                status: status.as_u16(),
            });
        };
        check_body(status.as_u16(), json)
    }
}

/// Checks a decoded answer for DingTalk's error shapes.
pub(crate) fn check_body(http_status: u16, json: Value) -> Result<Value, DingTalkError> {
    if let Some(code) = json.get("errcode").and_then(int_of) {
        if code == 0 {
            return Ok(json);
        }
        let sub_code = json.get("sub_code").and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let errmsg = json
            .get("sub_msg")
            .or_else(|| json.get("errmsg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let request_id = json
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Err(DingTalkError::Api {
            errcode: code,
            sub_code,
            errmsg,
            request_id,
        });
    }
    if json.get("status").and_then(int_of) == Some(1111) {
        let wait = json
            .get("wait")
            .and_then(int_of)
            .and_then(|w| u64::try_from(w).ok())
            .unwrap_or(5);
        return Err(DingTalkError::IpBanned { wait_minutes: wait });
    }
    if !(200..300).contains(&http_status) {
        return Err(DingTalkError::Status {
            status: http_status,
        });
    }
    Err(DingTalkError::Decode("answer has no errcode".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_on_http_200() {
        let ok = check_body(200, json!({"errcode": 0, "errmsg": "ok", "result": {}}));
        assert!(ok.is_ok());
        let e = check_body(
            200,
            json!({"errcode": 88, "sub_code": "40014", "sub_msg": "不合法的access_token",
                   "errmsg": "ding talk error[subcode=40014]", "request_id": "h4qx"}),
        )
        .unwrap_err();
        assert!(e.is_token_error());
        let e = check_body(200, json!({"errcode": "42001", "errmsg": "timeout"})).unwrap_err();
        assert!(e.is_token_error());
        let e = check_body(200, json!({"errcode": 90018, "errmsg": "qps"})).unwrap_err();
        assert!(!e.is_token_error());
        assert!(matches!(
            check_body(200, json!({"status": 1111, "wait": 5, "punish": "deny"})),
            Err(DingTalkError::IpBanned { wait_minutes: 5 })
        ));
        assert!(matches!(
            check_body(502, json!({"message": "bad gateway"})),
            Err(DingTalkError::Status { status: 502 })
        ));
        assert!(matches!(
            check_body(200, json!({"hello": 1})),
            Err(DingTalkError::Decode(_))
        ));
    }
}
