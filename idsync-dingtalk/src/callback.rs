//! DingTalk HTTP event callbacks (事件订阅): an axum [`Router`] that checks, decrypts and
//! acknowledges pushes, and an [`EventLog`] that [`DingTalkSource::changes`](crate::DingTalkSource)
//! turns into a change set by re-reading the changed users and departments.
//!
//! A push is `POST <url>?signature=..&timestamp=..&nonce=..` (also `msg_signature`,
//! `timeStamp`) with `{"encrypt": "..."}`. The router
//!
//! 1. rejects a bad signature (HTTP 403) and a replay: a timestamp outside the window, or a
//!    nonce seen inside the window (HTTP 403);
//! 2. decrypts ([`CallbackCrypto`]), accepting both payload formats (legacy `UserId` /
//!    `DeptId` / `TimeStamp`, current `userId` / `deptId` / `timeStamp`);
//! 3. records the event in its event log ([`Events`]: the in-memory [`EventLog`], or the
//!    store's durable inbox through [`idsync_http::StoreEventLog`], which `idsync serve`
//!    uses) together with its nonce as a replay key, and only then answers the encrypted
//!    `success` (also for `check_url`), `{"msg_signature","timeStamp","nonce","encrypt"}`.
//!    A log that cannot record answers HTTP 503 (DingTalk delivers again); with the
//!    store's inbox, a nonce stays refused across restarts.
//!
//! Events carry ids only; the source re-reads each entity when changes are asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use idsync_core::{Clock, Result, SystemClock};
use idsync_http::{EventKey, Events, Incoming};
use serde_json::Value;

use crate::client::int_of;
use crate::config::CallbackConfig;
use crate::crypto::CallbackCrypto;
use crate::error::DingTalkError;

/// An entity an event names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventTarget {
    /// A user (`userid`).
    User(String),
    /// A department (`dept_id`).
    Dept(i64),
}

impl EventKey for EventTarget {
    fn to_key(&self) -> String {
        match self {
            EventTarget::User(u) => format!("user:{u}"),
            EventTarget::Dept(d) => format!("dept:{d}"),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key.split_once(':')? {
            ("user", u) => Some(EventTarget::User(u.to_owned())),
            ("dept", d) => d.parse().ok().map(EventTarget::Dept),
            _ => None,
        }
    }
}

/// Where DingTalk events go and where [`DingTalkSource::changes`](crate::DingTalkSource)
/// reads them: an [`EventLog`] or a store's inbox ([`idsync_http::StoreEventLog`]).
pub type DingTalkEvents = dyn Events<EventTarget>;

/// The event log of DingTalk events (the toolkit's [`idsync_http::EventLog`] naming
/// [`EventTarget`]s); fed by the callback router and Stream mode, read by
/// [`DingTalkSource::changes`](crate::DingTalkSource).
pub type EventLog = idsync_http::EventLog<EventTarget>;

/// One recorded DingTalk event.
pub type Event = idsync_http::Event<EventTarget>;

/// Reads a key in either casing (`UserId` / `userId`, `TimeStamp` / `timeStamp`).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn id_list(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Value::String(p.to_owned()))
            .collect(),
        Some(n @ Value::Number(_)) => vec![n.clone()],
        _ => Vec::new(),
    }
}

/// A decrypted event, parsed: its type and the entities it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// `EventType`.
    pub event_type: String,
    /// The entities it names, with "deleted".
    pub targets: Vec<(EventTarget, bool)>,
}

/// Parses a decrypted event payload (either format). Unknown event types name nothing.
pub fn parse_event(message: &str) -> Result<ParsedEvent> {
    let v: Value = serde_json::from_str(message)
        .map_err(|_| DingTalkError::Crypto("event payload is not JSON".into()))?;
    let event_type = get_ci(&v, "EventType")
        .and_then(Value::as_str)
        .ok_or_else(|| DingTalkError::Crypto("event payload without EventType".into()))?
        .to_owned();
    let users = || {
        id_list(get_ci(&v, "UserId"))
            .iter()
            .filter_map(|u| match u {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let depts = || {
        id_list(get_ci(&v, "DeptId"))
            .iter()
            .filter_map(int_of)
            .collect::<Vec<_>>()
    };
    let targets = match event_type.as_str() {
        "user_add_org" | "user_modify_org" | "user_active_org" | "org_admin_add"
        | "org_admin_remove" => users()
            .into_iter()
            .map(|u| (EventTarget::User(u), false))
            .collect(),
        "user_leave_org" => users()
            .into_iter()
            .map(|u| (EventTarget::User(u), true))
            .collect(),
        "org_dept_create" | "org_dept_modify" => depts()
            .into_iter()
            .map(|d| (EventTarget::Dept(d), false))
            .collect(),
        "org_dept_remove" => depts()
            .into_iter()
            .map(|d| (EventTarget::Dept(d), true))
            .collect(),
        _ => Vec::new(),
    };
    Ok(ParsedEvent {
        event_type,
        targets,
    })
}

struct RouterState {
    crypto: CallbackCrypto,
    log: Arc<DingTalkEvents>,
    window: Duration,
    clock: Arc<dyn Clock>,
}

/// Builds the callback [`Router`] (mounted at `/`; nest it where you like). Events go into
/// `log` (an `Arc<EventLog>` or an `Arc<StoreEventLog<EventTarget>>`, as
/// `Arc<dyn Events<EventTarget>>`). The owner key defaults to the config's `owner_key`, else
/// `app_key`.
pub fn callback_router(
    cfg: &CallbackConfig,
    app_key: &str,
    log: Arc<DingTalkEvents>,
) -> Result<Router> {
    callback_router_with_clock(cfg, app_key, log, Arc::new(SystemClock))
}

/// [`callback_router`] with an injected clock (for tests of the replay window).
pub fn callback_router_with_clock(
    cfg: &CallbackConfig,
    app_key: &str,
    log: Arc<DingTalkEvents>,
    clock: Arc<dyn Clock>,
) -> Result<Router> {
    let owner = cfg.owner_key.clone().unwrap_or_else(|| app_key.to_owned());
    let mut cfg = cfg.clone();
    cfg.read_secrets()?;
    let crypto = CallbackCrypto::new(crate::PROVIDER, cfg.token.clone(), &cfg.aes_key, owner)?;
    let state = Arc::new(RouterState {
        crypto,
        log,
        window: Duration::from_secs(cfg.replay_window_secs),
        clock,
    });
    Ok(Router::new().route("/", post(receive)).with_state(state))
}

fn reject(status: StatusCode, why: &'static str) -> Response {
    tracing::warn!(why, "DingTalk callback rejected");
    (status, Json(serde_json::json!({"error": why}))).into_response()
}

fn random_nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut r);
    r.iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect()
}

async fn receive(
    State(st): State<Arc<RouterState>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let param = |a: &str, b: &str| q.get(a).or_else(|| q.get(b)).cloned();
    let (Some(signature), Some(timestamp), Some(nonce)) = (
        param("signature", "msg_signature"),
        param("timestamp", "timeStamp"),
        q.get("nonce").cloned(),
    ) else {
        return reject(
            StatusCode::BAD_REQUEST,
            "missing signature, timestamp or nonce",
        );
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return reject(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let Some(encrypt) = json.get("encrypt").and_then(Value::as_str) else {
        return reject(StatusCode::BAD_REQUEST, "body has no encrypt");
    };
    if !st.crypto.verify(&signature, &timestamp, &nonce, encrypt) {
        return reject(StatusCode::FORBIDDEN, "bad signature");
    }
    // replay: timestamp window (ms or s) here, the nonce when the event is recorded
    let now = st.clock.now();
    let now_ms = now.timestamp_millis();
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return reject(StatusCode::BAD_REQUEST, "timestamp is not a number");
    };
    let ts_ms = if ts < 100_000_000_000 {
        ts.saturating_mul(1000)
    } else {
        ts
    };
    let window_ms = i64::try_from(st.window.as_millis()).unwrap_or(i64::MAX);
    if (now_ms - ts_ms).abs() > window_ms {
        return reject(StatusCode::FORBIDDEN, "timestamp outside the replay window");
    }
    let Ok(decrypted) = st.crypto.decrypt(encrypt) else {
        return reject(StatusCode::BAD_REQUEST, "cannot decrypt");
    };
    let Ok(event) = parse_event(&decrypted.message) else {
        return reject(StatusCode::BAD_REQUEST, "not an event");
    };
    // Recorded (durably, with a store's inbox) before DingTalk hears `success`.
    let incoming = Incoming {
        keys: vec![format!("nonce:{nonce}")],
        // a timestamp may be up to one window old or ahead: keep the nonce for both
        window: st.window.saturating_mul(2),
        at: now,
        event_type: event.event_type,
        targets: event.targets,
    };
    match st.log.record(incoming).await {
        Ok(true) => {}
        Ok(false) => return reject(StatusCode::FORBIDDEN, "nonce replayed"),
        Err(e) => {
            tracing::warn!(error = %e, "DingTalk callback: the event log cannot record; answering 503");
            return reject(StatusCode::SERVICE_UNAVAILABLE, "cannot record the event");
        }
    }
    let reply_ts = now_ms.to_string();
    match crate::crypto::reply(&st.crypto, "success", &reply_ts, &random_nonce()) {
        Ok(v) => Json(v).into_response(),
        Err(_) => reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encrypt the reply",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_payload_formats() {
        let legacy = parse_event(
            r#"{"CorpId":"ding1","EventType":"user_add_org","UserId":["u1","u2"],"OptStaffId":"x","TimeStamp":"1718003521786"}"#,
        )
        .unwrap();
        assert_eq!(
            legacy.targets,
            vec![
                (EventTarget::User("u1".into()), false),
                (EventTarget::User("u2".into()), false)
            ]
        );
        let current = parse_event(
            r#"{"EventType":"org_dept_remove","EventTime":1,"CorpId":"c","BizId":"b","eventId":"e","timeStamp":1718003521786,"deptId":[563782301]}"#,
        )
        .unwrap();
        assert_eq!(current.targets, vec![(EventTarget::Dept(563782301), true)]);
        let leave = parse_event(r#"{"EventType":"user_leave_org","userId":["u9"]}"#).unwrap();
        assert_eq!(leave.targets, vec![(EventTarget::User("u9".into()), true)]);
        let check = parse_event(r#"{"EventType":"check_url"}"#).unwrap();
        assert!(check.targets.is_empty());
        assert!(parse_event("not json").is_err());
    }

    use idsync_core::SyncCursor;

    #[test]
    fn targets_round_trip_through_inbox_keys() {
        for t in [EventTarget::User("u:1".into()), EventTarget::Dept(-3)] {
            assert_eq!(EventTarget::from_key(&t.to_key()), Some(t));
        }
        assert_eq!(EventTarget::from_key("dept:x"), None);
        assert_eq!(EventTarget::from_key("other:1"), None);
    }

    #[test]
    fn event_log_cursors() {
        let log = EventLog::new(3);
        let start = log.current();
        log.push("user_add_org", EventTarget::User("a".into()), false);
        log.push("user_modify_org", EventTarget::User("a".into()), false);
        log.push("user_add_org", EventTarget::User("b".into()), false);
        let b = log.since(&start);
        assert!(b.complete);
        assert_eq!(b.targets.len(), 2, "coalesced by entity");
        let mid = b.cursor;
        log.push("user_leave_org", EventTarget::User("a".into()), true);
        let b2 = log.since(&mid);
        assert_eq!(b2.targets, vec![(EventTarget::User("a".into()), true)]);
        // start is now older than what the log keeps (capacity 3, 4 events)
        assert!(!log.since(&start).complete);
        assert!(!log.since(&SyncCursor("other:1".into())).complete);
        assert!(log.since(&log.current()).targets.is_empty());
    }
}
