//! The contact-event endpoint (事件订阅 → 请求地址): an axum [`Router`] answering `POST /`.
//!
//! * The body is `{"encrypt": "…"}` when an Encrypt Key is set (decrypted with
//!   `SHA-256(encrypt_key)`, IV in the first 16 bytes), plain JSON otherwise; a plain body
//!   when a key is set is refused.
//! * `url_verification`: the token is checked and `{"challenge": …}` answered at once
//!   (Lark wants it within 1 s; nothing else is done).
//! * Events: with an Encrypt Key, `X-Lark-Signature` must equal
//!   `hex(SHA-256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce + encrypt_key + raw body))`
//!   and the timestamp must be within the replay window; `header.token` must be the
//!   Verification Token. Then the event's targets are recorded in the event log
//!   ([`Events`]: the in-memory [`LarkEventLog`](crate::LarkEventLog), or a store's
//!   durable inbox through [`idsync_http::StoreEventLog`]) under two replay keys,
//!   `header.event_id` (kept [`REDELIVERY_WINDOW`]) and the request's (timestamp, nonce),
//!   and only then is `{"msg": "success"}` answered (HTTP 503 when the log cannot record:
//!   Lark delivers again).
//! * Lark redelivers an unacknowledged event at 15 s, 5 min, 1 h and 6 h with a new
//!   timestamp and nonce: a redelivery of a recorded `event_id` is acknowledged and not
//!   recorded again (with the store's inbox: also after a restart).
//! * Refused with HTTP 403 (401 for a bad token) and nothing recorded: a bad signature,
//!   token or ciphertext, a timestamp outside the window, a replay (a (timestamp, nonce)
//!   pair seen before).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idsync_core::{Error, Result};
use idsync_http::{EventKey, Events, Incoming};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::config::{EventKeys, UserIdType};
use crate::crypto;
use crate::event::{Callback, parse_callback, targets};
use crate::source::Target;

/// How long a `header.event_id` is remembered: Lark redelivers an unacknowledged event at
/// 15 s, 5 min, 1 h and 6 h, so a redelivery inside this window is acknowledged and not
/// recorded again.
pub const REDELIVERY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Where Lark events go and where [`LarkSource::changes`](crate::LarkSource) reads them:
/// a [`LarkEventLog`](crate::LarkEventLog) or a store's inbox
/// ([`idsync_http::StoreEventLog`]).
pub type LarkEvents = dyn Events<Target>;

impl EventKey for Target {
    fn to_key(&self) -> String {
        match self {
            Target::User(u) => format!("user:{u}"),
            Target::Dept(d) => format!("dept:{d}"),
            Target::Scope => "scope".to_owned(),
        }
    }

    /// The prefix ends at the first `:`; the rest is the id as it was (it may hold `:`).
    fn from_key(key: &str) -> Option<Self> {
        if key == "scope" {
            return Some(Target::Scope);
        }
        match key.split_once(':')? {
            ("user", u) => Some(Target::User(u.to_owned())),
            ("dept", d) => Some(Target::Dept(d.to_owned())),
            _ => None,
        }
    }
}

/// The replay key of one event (`header.event_id`).
fn event_key(event_id: &str) -> String {
    format!("event:{event_id}")
}

/// The replay key of one signed request (its timestamp, a number, and its nonce).
fn request_key(ts: i64, nonce: &str) -> String {
    format!("ts-nonce:{ts}:{nonce}")
}

/// The request's timestamp when it is within `window` of `now`.
fn fresh(ts: &str, now: SystemTime, window: Duration) -> std::result::Result<i64, &'static str> {
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| "X-Lark-Request-Timestamp is not a number")?;
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        .unwrap_or(i64::MAX);
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(ts).saturating_abs() > window {
        return Err("timestamp outside the replay window");
    }
    Ok(ts)
}

struct Shared {
    keys: EventKeys,
    id_type: UserIdType,
    log: Arc<LarkEvents>,
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
            let mut request = None;
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
                match fresh(ts, SystemTime::now(), s.keys.replay_window) {
                    Ok(ts) => request = Some(request_key(ts, nonce)),
                    Err(why) => return refuse(StatusCode::FORBIDDEN, why),
                }
            }
            if !crypto::same(expected, &ev.token) {
                return refuse(StatusCode::UNAUTHORIZED, "verification token mismatch");
            }
            record(
                &s,
                &ev.event_id,
                &ev.event_type,
                targets(&ev, s.id_type),
                request,
            )
            .await
        }
    }
}

/// Records an authenticated event under its replay keys (its `event_id` and, when signed,
/// its request's timestamp and nonce), and answers `success` only once it is recorded.
async fn record(
    s: &Shared,
    event_id: &str,
    event_type: &str,
    targets: Vec<(Target, bool)>,
    request: Option<String>,
) -> Response {
    let mut keys = vec![event_key(event_id)];
    keys.extend(request.clone());
    let at = chrono::Utc::now();
    let incoming = Incoming {
        keys,
        window: REDELIVERY_WINDOW.max(s.keys.replay_window.saturating_mul(2)),
        at,
        event_type: event_type.to_owned(),
        targets,
    };
    let recorded = match s.log.record(incoming).await {
        Ok(true) => return success(),
        Ok(false) => match request {
            // A key was claimed before: the request itself (a replay) or only the event
            // id (Lark's redelivery, with a new timestamp and nonce). Claiming the request
            // key alone tells them apart; it records no entity.
            Some(rk) => {
                s.log
                    .record(Incoming {
                        keys: vec![rk],
                        window: s.keys.replay_window.saturating_mul(2),
                        at,
                        event_type: event_type.to_owned(),
                        targets: Vec::new(),
                    })
                    .await
            }
            None => Ok(true),
        },
        Err(e) => Err(e),
    };
    match recorded {
        Ok(true) => {
            tracing::debug!(event_id, "Lark event redelivered; recorded once");
            success()
        }
        Ok(false) => refuse(
            StatusCode::FORBIDDEN,
            "timestamp and nonce seen before (replay)",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "Lark event: the event log cannot record; answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"msg": "cannot record the event"})),
            )
                .into_response()
        }
    }
}

fn success() -> Response {
    axum::Json(json!({"msg": "success"})).into_response()
}

/// The endpoint for `keys`, recording into `log` (the in-memory
/// [`LarkEventLog`](crate::LarkEventLog) or a store's inbox) with users named by `id_type`
/// (the source's anchor type). Serve it at the request URL configured in the developer
/// console.
pub fn callback_router(
    keys: &EventKeys,
    id_type: UserIdType,
    log: Arc<LarkEvents>,
) -> Result<Router> {
    if keys.verification_token.expose_secret().is_empty() {
        return Err(Error::config("lark: the Verification Token is empty"));
    }
    let shared = Arc::new(Shared {
        keys: keys.clone(),
        id_type,
        log,
    });
    Ok(Router::new().route("/", post(receive)).with_state(shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_through_their_keys() {
        for t in [
            Target::User("ou_1".into()),
            Target::User("a:b:c".into()),
            Target::User("dept:x".into()),
            Target::User(String::new()),
            Target::Dept("od-1".into()),
            Target::Dept(":".into()),
            Target::Dept("scope".into()),
            Target::Scope,
        ] {
            assert_eq!(Target::from_key(&t.to_key()), Some(t.clone()), "{t:?}");
        }
        assert_ne!(
            Target::User("dept:x".into()).to_key(),
            Target::Dept("x".into()).to_key()
        );
        assert_eq!(Target::from_key("group:1"), None);
        assert_eq!(Target::from_key("user"), None);
        assert_eq!(Target::from_key("scope:x"), None);
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = Duration::from_secs(300);
        assert_eq!(fresh(" 1700000000", now, w), Ok(1_700_000_000));
        assert!(fresh("1699999000", now, w).is_err());
        assert!(fresh("1700000400", now, w).is_err());
        assert!(fresh("abc", now, w).is_err());
        assert!(fresh("-9223372036854775808", now, w).is_err());
    }
}
