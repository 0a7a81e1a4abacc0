//! DingTalk Stream mode: directory events over a WebSocket the client opens, so no public
//! callback URL is needed (what most companies behind NAT want). Events go into the same
//! [`EventLog`] as HTTP callbacks; [`DingTalkSource::changes`](crate::DingTalkSource)
//! reads them the same way.
//!
//! The protocol (contract §4d):
//!
//! 1. `POST <stream base>/v1.0/gateway/connections/open` with the AppKey and AppSecret
//!    (in the body, never logged) and an `EVENT` subscription → `{endpoint, ticket}`;
//! 2. connect the WebSocket to `<endpoint>?ticket=<ticket>` (`wss://`; `ws://` only to
//!    loopback or with `allow_plaintext`); a ticket is single-use, so every reconnect opens
//!    a new connection first;
//! 3. every frame is acknowledged on the socket: events with `{"status": "SUCCESS"}` once
//!    recorded, `SYSTEM` `ping` frames with their own `data` (keep-alive);
//! 4. a `SYSTEM` `disconnect` frame ends the connection and a new one is opened at once;
//!    any socket error or a connection silent for three keep-alive intervals is replaced
//!    with exponential backoff and jitter. Events redelivered after a reconnect are
//!    recorded once (de-duplicated on `eventId`).
//!
//! Event frames carry the ids under `data` (`{"userId": [...]}`, `{"deptId": [...]}`) and
//! the type in the `eventType` header.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use idsync_core::{Error, ErrorKind, ErrorStatus, Result};
use idsync_http::{ApiError, Class, HttpSettings, JsonClient, Request, classify_status};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::PROVIDER;
use crate::callback::{EventLog, parse_event};
use crate::config::{DingTalkConfig, StreamConfig};

/// The path that opens a Stream connection.
pub const OPEN_PATH: &str = "/v1.0/gateway/connections/open";

/// Counters of a [`StreamClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// WebSocket connections established.
    pub connections: u64,
    /// Event frames recorded in the log.
    pub events: u64,
    /// Event frames seen before (redeliveries), acknowledged and not recorded again.
    pub duplicates: u64,
    /// Event frames whose `data` could not be read (acknowledged, logged as a warning).
    pub unreadable: u64,
    /// Frames acknowledged.
    pub acks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    events: AtomicU64,
    duplicates: AtomicU64,
    unreadable: AtomicU64,
    acks: AtomicU64,
}

struct Inner {
    http: JsonClient,
    app_key: String,
    app_secret: SecretString,
    cfg: StreamConfig,
    log: Arc<EventLog>,
    counters: Counters,
}

/// A DingTalk Stream mode client feeding an [`EventLog`].
#[derive(Clone)]
pub struct StreamClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("app_key", &self.inner.app_key)
            .field("cfg", &self.inner.cfg)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How one connection ended.
enum End {
    Stopped,
    /// The server asked us to reconnect.
    Disconnect,
    /// The socket closed or went silent.
    Lost,
}

/// The new API's error shape: HTTP 4xx with `{"code": "<string>", "message": "..."}`.
fn check_new_api(status: u16, body: Value) -> std::result::Result<Value, ApiError> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let Some(code) = body.get("code").and_then(Value::as_str) else {
        return Ok(body); // a bare status: the toolkit reports it as a transport error
    };
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let class = if code.eq_ignore_ascii_case("invalidClientIdOrSecret")
        || code.eq_ignore_ascii_case("InvalidAuthentication")
    {
        Class::new(ErrorKind::Unauthenticated, ErrorStatus::Permanent)
    } else if code.starts_with("Forbidden.AccessDenied.Qps") {
        Class::new(ErrorKind::RateLimited, ErrorStatus::Temporary).after(Duration::from_secs(1))
    } else {
        classify_status(status, None)
    };
    let mut e = ApiError::new(Some(code.to_owned()), message, class);
    if let Some(r) = body.get("requestid").and_then(Value::as_str) {
        e = e.with_context("request_id", r);
    }
    Err(e)
}

/// The WebSocket URL for `endpoint` and `ticket`: `wss://`, or `ws://` to loopback or
/// with `allow_plaintext`.
pub fn stream_url(endpoint: &str, ticket: &str, allow_plaintext: bool) -> Result<String> {
    let trimmed = endpoint.trim();
    let (as_http, scheme) = if let Some(rest) = trimmed.strip_prefix("wss://") {
        (format!("https://{rest}"), "wss")
    } else if let Some(rest) = trimmed.strip_prefix("ws://") {
        (format!("http://{rest}"), "ws")
    } else {
        return Err(Error::invalid_data(
            "connections/open: the endpoint is not a ws:// or wss:// URL",
        )
        .with_provider(PROVIDER)
        .with_operation(OPEN_PATH));
    };
    let mut url = idsync_http::check_base_url(&as_http, allow_plaintext)
        .map_err(|e| e.into_error(PROVIDER, OPEN_PATH))?;
    url.set_scheme(scheme).map_err(|()| {
        Error::invalid_data("connections/open: bad endpoint scheme").with_provider(PROVIDER)
    })?;
    url.query_pairs_mut().append_pair("ticket", ticket);
    Ok(url.to_string())
}

fn ws_error(e: &tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as W;
    let (kind, status) = match e {
        W::Http(resp) => {
            let c = classify_status(resp.status().as_u16(), None);
            (c.kind, c.status)
        }
        W::Url(_) | W::Tls(_) => (ErrorKind::ConfigInvalid, ErrorStatus::Permanent),
        _ => (ErrorKind::Unavailable, ErrorStatus::Temporary),
    };
    // tungstenite's messages never carry the URL (and so not the ticket)
    Error::new(kind, format!("DingTalk Stream WebSocket: {e}"))
        .with_status(status)
        .with_provider(PROVIDER)
        .with_operation("stream")
}

fn ack(message_id: &str, data: &str) -> Message {
    let v = json!({
        "code": 200,
        "headers": {"messageId": message_id, "contentType": "application/json"},
        "message": "OK",
        "data": data,
    });
    Message::Text(v.to_string().into())
}

impl StreamClient {
    /// A client for the app in `cfg` (its `stream` settings, or the defaults), recording
    /// events in `log`.
    pub fn new(cfg: &DingTalkConfig, log: Arc<EventLog>) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.read_secrets()?;
        let sc = cfg.stream.clone().unwrap_or_default();
        let mut settings = HttpSettings::new(sc.base_url.trim_end_matches('/'));
        settings.allow_plaintext = sc.allow_plaintext;
        settings.timeout = cfg.timeout();
        settings.max_body_bytes = cfg.max_body_bytes;
        let http = JsonClient::new(PROVIDER, &settings, check_new_api)?;
        Ok(StreamClient {
            inner: Arc::new(Inner {
                http,
                app_key: cfg.app_key.clone(),
                app_secret: cfg.app_secret.clone(),
                cfg: sc,
                log,
                counters: Counters::default(),
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        let c = &self.inner.counters;
        StreamStats {
            connections: c.connections.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            unreadable: c.unreadable.load(Ordering::Relaxed),
            acks: c.acks.load(Ordering::Relaxed),
        }
    }

    /// Step 1: a WebSocket URL with a fresh ticket.
    async fn open(&self) -> Result<String> {
        let body = json!({
            "clientId": self.inner.app_key,
            "clientSecret": self.inner.app_secret.expose_secret(),
            "subscriptions": [{"type": "EVENT", "topic": "*"}],
            "ua": concat!("idsync-dingtalk/", env!("CARGO_PKG_VERSION")),
            "localIp": "127.0.0.1",
        });
        let v = self
            .inner
            .http
            .send(&Request::post(OPEN_PATH, body))
            .await?;
        let get = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (Some(endpoint), Some(ticket)) = (get("endpoint"), get("ticket")) else {
            return Err(Error::invalid_data(
                "connections/open: no endpoint or ticket in the answer",
            )
            .with_provider(PROVIDER)
            .with_operation(OPEN_PATH));
        };
        stream_url(endpoint, ticket, self.inner.cfg.allow_plaintext)
    }

    /// Starts [`run`](StreamClient::run) on the runtime; stop it with the handle.
    pub fn spawn(self) -> StreamHandle {
        let (tx, rx) = watch::channel(false);
        let client = self.clone();
        let task = tokio::spawn(async move { client.run(rx).await });
        StreamHandle {
            client: self,
            stop: tx,
            task,
        }
    }

    /// Keeps a connection open until `stop` turns true (or its sender is dropped),
    /// reconnecting with backoff. Returns an error only for what reconnecting cannot fix
    /// (bad credentials, a bad configuration).
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let min = Duration::from_millis(self.inner.cfg.reconnect_min_ms.max(1));
        let max = Duration::from_secs(self.inner.cfg.reconnect_max_secs.max(1)).max(min);
        let mut delay = min;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            match self.session(&mut stop).await {
                Ok(End::Stopped) => return Ok(()),
                Ok(End::Disconnect) => {
                    delay = min;
                    continue;
                }
                Ok(End::Lost) => {
                    tracing::info!("DingTalk Stream connection lost; reconnecting");
                }
                Err(e)
                    if !e.is_temporary()
                        && matches!(
                            e.kind(),
                            ErrorKind::Unauthenticated
                                | ErrorKind::PermissionDenied
                                | ErrorKind::ConfigInvalid
                        ) =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DingTalk Stream connection failed; reconnecting");
                }
            }
            let jitter = rand::Rng::random_range(&mut rand::rng(), 0.5..1.0);
            let wait = delay.mul_f64(jitter);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(()),
            }
            delay = (delay * 2).min(max);
        }
    }

    async fn session(&self, stop: &mut watch::Receiver<bool>) -> Result<End> {
        let url = self.open().await?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| ws_error(&e))?;
        self.inner
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!("DingTalk Stream connected");
        let (mut tx, mut rx) = ws.split();
        let keepalive = Duration::from_secs(self.inner.cfg.keepalive_secs.max(1));
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ok(End::Stopped);
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > keepalive * 3 {
                        return Ok(End::Lost);
                    }
                    tx.send(Message::Ping(Vec::new().into())).await.map_err(|e| ws_error(&e))?;
                }
                m = rx.next() => match m {
                    None | Some(Ok(Message::Close(_))) => return Ok(End::Lost),
                    Some(Err(e)) => return Err(ws_error(&e)),
                    Some(Ok(Message::Text(text))) => {
                        last_seen = Instant::now();
                        let (reply, disconnect) = self.frame(text.as_str());
                        if let Some(r) = reply {
                            tx.send(r).await.map_err(|e| ws_error(&e))?;
                            self.inner.counters.acks.fetch_add(1, Ordering::Relaxed);
                        }
                        if disconnect {
                            let _ = tx.send(Message::Close(None)).await;
                            return Ok(End::Disconnect);
                        }
                    }
                    Some(Ok(_)) => last_seen = Instant::now(),
                },
            }
        }
    }

    /// Handles one text frame: the ack to send, and whether the server asked to reconnect.
    fn frame(&self, text: &str) -> (Option<Message>, bool) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("DingTalk Stream frame is not JSON; ignored");
            return (None, false);
        };
        let header = |k: &str| {
            frame
                .pointer(&format!("/headers/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let message_id = header("messageId");
        let data = frame.get("data").and_then(Value::as_str).unwrap_or("");
        match frame.get("type").and_then(Value::as_str).unwrap_or("") {
            "SYSTEM" => match header("topic") {
                "disconnect" | "TAG_DISCONNECT" => (None, true),
                // ping: echo its data (keep-alive); anything else: plain ack
                _ => (Some(ack(message_id, data)), false),
            },
            "EVENT" => {
                self.record(header("eventId"), header("eventType"), data);
                let status = json!({"status": "SUCCESS", "message": "success"});
                (Some(ack(message_id, &status.to_string())), false)
            }
            _ => {
                let status = json!({"status": "SUCCESS", "message": "not subscribed"});
                (Some(ack(message_id, &status.to_string())), false)
            }
        }
    }

    fn record(&self, event_id: &str, event_type: &str, data: &str) {
        let c = &self.inner.counters;
        let payload = match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(mut m)) => {
                m.insert("EventType".to_owned(), Value::String(event_type.to_owned()));
                Value::Object(m)
            }
            _ => {
                c.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    event_type,
                    event_id,
                    "DingTalk Stream event data unreadable"
                );
                return;
            }
        };
        let Ok(event) = parse_event(&payload.to_string()) else {
            c.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self
            .inner
            .log
            .push_once(event_id, &event.event_type, event.targets)
        {
            c.events.fetch_add(1, Ordering::Relaxed);
        } else {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running [`StreamClient`].
#[derive(Debug)]
pub struct StreamHandle {
    client: StreamClient,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl StreamHandle {
    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.client.stats()
    }

    /// True when the client stopped by itself (an error it cannot fix).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the client and waits for it; returns its error if it had stopped on one.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| {
            Error::unexpected(format!("DingTalk Stream task failed: {e}")).with_provider(PROVIDER)
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let u = stream_url(
            "wss://wss-open-connection.dingtalk.com:443/connect",
            "a b&c",
            false,
        )
        .unwrap();
        assert_eq!(
            u,
            "wss://wss-open-connection.dingtalk.com/connect?ticket=a+b%26c"
        );
        assert!(stream_url("ws://127.0.0.1:9/connect", "t", false).is_ok());
        let e = stream_url("ws://gateway.example.com/connect", "t", false).unwrap_err();
        assert!(e.message().contains("allow_plaintext"), "{}", e.message());
        assert!(stream_url("ws://gateway.example.com/connect", "t", true).is_ok());
        assert!(stream_url("https://x.example", "t", true).is_err());
    }

    #[test]
    fn new_api_errors() {
        let e = check_new_api(
            400,
            json!({"code": "invalidClientIdOrSecret", "message": "无效", "requestid": "r"}),
        )
        .unwrap_err();
        assert_eq!(e.class.kind, ErrorKind::Unauthenticated);
        assert_eq!(e.code.as_deref(), Some("invalidClientIdOrSecret"));
        let e = check_new_api(
            403,
            json!({"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"}),
        )
        .unwrap_err();
        assert_eq!(e.class.kind, ErrorKind::RateLimited);
        assert!(check_new_api(200, json!({"endpoint": "x"})).is_ok());
        assert!(
            check_new_api(502, json!({"nope": 1})).is_ok(),
            "left to the toolkit"
        );
    }
}
