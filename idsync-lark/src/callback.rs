//! The contact-event endpoint (事件订阅 → 请求地址): an axum [`Router`] answering `POST /`.
//!
//! * The body is `{"encrypt": "…"}` when an Encrypt Key is set (decrypted with
//!   `SHA-256(encrypt_key)`, IV in the first 16 bytes), plain JSON otherwise; a plain body
//!   when a key is set is refused.
//! * `url_verification`: the token is checked and `{"challenge": …}` answered at once
//!   (Lark wants it within 1 s; nothing else is done).
//! * Events: with an Encrypt Key, `X-Lark-Signature` must equal
//!   `hex(SHA-256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce + encrypt_key + raw body))`,
//!   the timestamp must be within the replay window and the (timestamp, nonce) pair new;
//!   `header.token` must be the Verification Token. Then the event's targets are recorded
//!   once per `header.event_id` (Lark redelivers at 15 s, 5 min, 1 h and 6 h: a
//!   redelivery is acknowledged and not recorded again) and `{"msg": "success"}` answered.
//! * Refused with HTTP 403 (401 for a bad token) and nothing recorded: a bad signature,
//!   token or ciphertext, a replay.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idsync_core::{Error, Result};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::config::{EventKeys, UserIdType};
use crate::crypto;
use crate::event::{Callback, parse_callback, targets};
use crate::source::LarkEventLog;

/// Remembers the (timestamp, nonce) pairs seen inside the replay window.
#[derive(Debug)]
struct Replays {
    window: Duration,
    seen: HashSet<(i64, String)>,
    order: VecDeque<(i64, String)>,
}

impl Replays {
    fn admit(
        &mut self,
        ts: &str,
        nonce: &str,
        now: SystemTime,
    ) -> std::result::Result<(), &'static str> {
        let ts: i64 = ts
            .trim()
            .parse()
            .map_err(|_| "X-Lark-Request-Timestamp is not a number")?;
        let now = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
            .unwrap_or(i64::MAX);
        let window = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        if (now - ts).abs() > window {
            return Err("timestamp outside the replay window");
        }
        while self.order.front().is_some_and(|(t, _)| now - *t > window) {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let key = (ts, nonce.to_owned());
        if !self.seen.insert(key.clone()) {
            return Err("timestamp and nonce seen before (replay)");
        }
        self.order.push_back(key);
        Ok(())
    }
}

struct Shared {
    keys: EventKeys,
    id_type: UserIdType,
    replays: Mutex<Replays>,
    log: Arc<LarkEventLog>,
}

fn refuse(status: StatusCode, why: &str) -> Response {
    tracing::warn!(reason = why, "Lark event refused");
    (status, axum::Json(json!({"msg": why}))).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Ok(outer) = serde_json::from_slice::<Value>(&raw) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let key = s
        .keys
        .encrypt_key
        .as_ref()
        .map(|k| k.expose_secret().to_owned());
    let body = match (outer.get("encrypt").and_then(Value::as_str), &key) {
        (Some(enc), Some(k)) => match crypto::decrypt(k, enc)
            .ok()
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
        {
            Some(v) => v,
            None => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "the body does not decrypt with the Encrypt Key",
                );
            }
        },
        (Some(_), None) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "an encrypted body, but no Encrypt Key is configured",
            );
        }
        (None, Some(_)) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "a plain body, but an Encrypt Key is configured",
            );
        }
        (None, None) => outer,
    };
    let expected = s.keys.verification_token.expose_secret();
    let parsed = match parse_callback(&body) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.message()),
    };
    match parsed {
        Callback::UrlVerification { challenge, token } => {
            if !crypto::same(expected, &token) {
                return refuse(StatusCode::UNAUTHORIZED, "verification token mismatch");
            }
            axum::Json(json!({"challenge": challenge})).into_response()
        }
        Callback::Event(ev) => {
            if let Some(k) = &key {
                let ts = header(&headers, "x-lark-request-timestamp");
                let nonce = header(&headers, "x-lark-request-nonce");
                let sig = header(&headers, "x-lark-signature");
                if ts.is_empty() || nonce.is_empty() || sig.is_empty() {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "X-Lark-Request-Timestamp, X-Lark-Request-Nonce and X-Lark-Signature are required",
                    );
                }
                if !crypto::same(
                    &crypto::signature(ts, nonce, k, &raw),
                    &sig.to_ascii_lowercase(),
                ) {
                    return refuse(StatusCode::FORBIDDEN, "X-Lark-Signature mismatch");
                }
                let admitted = s
                    .replays
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .admit(ts, nonce, SystemTime::now());
                if let Err(why) = admitted {
                    return refuse(StatusCode::FORBIDDEN, why);
                }
            }
            if !crypto::same(expected, &ev.token) {
                return refuse(StatusCode::UNAUTHORIZED, "verification token mismatch");
            }
            let t = targets(&ev, s.id_type);
            if !s.log.push_once(&ev.event_id, &ev.event_type, t) {
                tracing::debug!(event_id = %ev.event_id, "Lark event redelivered; recorded once");
            }
            axum::Json(json!({"msg": "success"})).into_response()
        }
    }
}

/// The endpoint for `keys`, recording into `log` with users named by `id_type` (the
/// source's anchor type). Serve it at the request URL configured in the developer console.
pub fn callback_router(
    keys: &EventKeys,
    id_type: UserIdType,
    log: Arc<LarkEventLog>,
) -> Result<Router> {
    if keys.verification_token.expose_secret().is_empty() {
        return Err(Error::config("lark: the Verification Token is empty"));
    }
    let shared = Arc::new(Shared {
        keys: keys.clone(),
        id_type,
        replays: Mutex::new(Replays {
            window: keys.replay_window,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }),
        log,
    });
    Ok(Router::new().route("/", post(receive)).with_state(shared))
}
