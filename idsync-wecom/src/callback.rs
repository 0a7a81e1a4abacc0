//! The `change_contact` callback endpoint (接收事件服务器): an axum [`Router`] that answers
//! WeCom's URL verification and records directory events in a [`WeComEventLog`](crate::WeComEventLog).
//!
//! * `GET /?msg_signature&timestamp&nonce&echostr`: the signature is checked over the
//!   URL-decoded `echostr`, which is decrypted and answered **raw** (no quotes, BOM or
//!   newline).
//! * `POST /?msg_signature&timestamp&nonce` with the XML envelope: signature over
//!   `<Encrypt>`, decryption, receive-id (CorpID) check, XML parse; `change_contact` events
//!   become log entries (see [`event_of`] on redeliveries), recorded in the event log
//!   ([`Events`]: the in-memory [`WeComEventLog`](crate::WeComEventLog), or a store's durable inbox through
//!   [`idsync_http::StoreEventLog`]) with their (timestamp, nonce) as a replay key, and only
//!   then is the answer `success` (HTTP 503 when the log cannot record: WeCom delivers
//!   again).
//! * Refused with HTTP 403 and nothing recorded: a bad signature, a ciphertext for another
//!   corp, a timestamp outside the replay window, a (timestamp, nonce) pair seen before
//!   (with the store's inbox: also before a restart).
//!
//! Events carry ids only; [`WeComSource::changes`](crate::WeComSource) re-reads each
//! entity. A `NewUserID` rename is recorded as a rename
//! ([`Target::UserRenamed`](crate::Target)): the change set carries it, the engine moves
//! the link, and the person keeps its account; never a delete and a create.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idsync_core::Result;
use idsync_http::{EventKey, Events, Incoming};

use crate::config::CallbackKeys;
use crate::crypto::CallbackCrypto;
use crate::event::{CallbackMessage, ContactChange, parse_envelope, parse_message};
use crate::source::Target;

/// Remembers the (timestamp, nonce) pairs seen inside the replay window.
#[derive(Debug)]
struct ReplayGuard {
    window: Duration,
    seen: HashSet<(i64, String)>,
    order: VecDeque<(i64, String)>,
}

impl ReplayGuard {
    fn new(window: Duration) -> Self {
        ReplayGuard {
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Accepts a request whose timestamp is within the window of `now`; with `remember`,
    /// only once per (timestamp, nonce) (event pushes leave that to the event log, which
    /// claims the pair only when it records the event).
    fn admit(
        &mut self,
        timestamp: &str,
        nonce: &str,
        now: SystemTime,
        remember: bool,
    ) -> std::result::Result<(), &'static str> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "timestamp is not a number")?;
        let now_s = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
            .unwrap_or(i64::MAX);
        let window = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        if (now_s - ts).abs() > window {
            return Err("timestamp outside the replay window");
        }
        if !remember {
            return Ok(());
        }
        while self.order.front().is_some_and(|(t, _)| now_s - *t > window) {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let key = (ts, nonce.to_owned());
        if !self.seen.insert(key.clone()) {
            return Err("nonce seen before (replay)");
        }
        self.order.push_back(key);
        Ok(())
    }
}

struct Shared {
    crypto: CallbackCrypto,
    guard: Mutex<ReplayGuard>,
    log: Arc<WeComEvents>,
}

impl EventKey for Target {
    fn to_key(&self) -> String {
        match self {
            Target::User(u) => format!("user:{u}"),
            // a userid holds no ':' (WeCom allows letters, digits and `_-@.`)
            Target::UserRenamed { from, to } => format!("renamed:{from}:{to}"),
            Target::Dept(d) => format!("dept:{d}"),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key.split_once(':')? {
            ("user", u) => Some(Target::User(u.to_owned())),
            ("renamed", pair) => pair.split_once(':').map(|(from, to)| Target::UserRenamed {
                from: from.to_owned(),
                to: to.to_owned(),
            }),
            ("dept", d) => d.parse().ok().map(Target::Dept),
            _ => None,
        }
    }
}

/// Where WeCom events go and where [`WeComSource::changes`](crate::WeComSource) reads
/// them: a [`WeComEventLog`](crate::WeComEventLog) or a store's inbox ([`idsync_http::StoreEventLog`]).
pub type WeComEvents = dyn Events<Target>;

fn refuse(why: &str) -> Response {
    tracing::warn!(reason = why, "WeCom callback refused");
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

impl Shared {
    fn admit(
        &self,
        q: &HashMap<String, String>,
        encrypt: &str,
        remember: bool,
    ) -> std::result::Result<String, String> {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        let (sig, ts, nonce) = (get("msg_signature"), get("timestamp"), get("nonce"));
        if sig.is_empty() || ts.is_empty() || nonce.is_empty() {
            return Err("msg_signature, timestamp and nonce are required".to_owned());
        }
        // authenticate first, so that forged requests cannot fill the nonce cache
        let decrypted = self
            .crypto
            .verify_and_decrypt(sig, ts, nonce, encrypt)
            .map_err(|e| e.message().to_owned())?;
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(ts, nonce, SystemTime::now(), remember)
            .map_err(str::to_owned)?;
        Ok(decrypted.message)
    }
}

async fn verify_url(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let echostr = q.get("echostr").cloned().unwrap_or_default();
    match s.admit(&q, &echostr, true) {
        // the plaintext, raw
        Ok(plain) => (StatusCode::OK, plain).into_response(),
        Err(why) => refuse(&why),
    }
}

async fn receive(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let env = match parse_envelope(&body) {
        Ok(e) => e,
        Err(e) => return (StatusCode::BAD_REQUEST, e.message().to_owned()).into_response(),
    };
    let plain = match s.admit(&q, &env.encrypt, false) {
        Ok(p) => p,
        Err(why) => return refuse(&why),
    };
    match parse_message(&plain) {
        Ok(m) => {
            let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
            let (event_type, targets) = event_of(&m)
                .map(|(kind, target, deleted)| (kind, vec![(target, deleted)]))
                .unwrap_or(("other", Vec::new()));
            let incoming = Incoming {
                keys: vec![format!("ts-nonce:{}:{}", get("timestamp"), get("nonce"))],
                window: s.guard_window().saturating_mul(2),
                at: chrono::Utc::now(),
                event_type: event_type.to_owned(),
                targets,
            };
            match s.log.record(incoming).await {
                Ok(true) => (StatusCode::OK, "success").into_response(),
                Ok(false) => refuse("nonce seen before (replay)"),
                Err(e) => {
                    tracing::warn!(error = %e, "WeCom callback: the event log cannot record; answering 503");
                    (StatusCode::SERVICE_UNAVAILABLE, "cannot record the event").into_response()
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "WeCom callback with an unreadable event");
            (StatusCode::BAD_REQUEST, e.message().to_owned()).into_response()
        }
    }
}

impl Shared {
    fn guard_window(&self) -> Duration {
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .window
    }
}

/// What a decrypted message names for the log: (event type, entity, deleted); `None` for
/// messages that are no directory change.
///
/// A redelivered event (a new timestamp and nonce) is recorded again on purpose: every
/// event is only a reason to re-read its entity, so a second record costs one read and
/// loses nothing, while deduplicating on (corp, time, type, id) would drop a second real
/// change of the same entity within the same second.
pub fn event_of(m: &CallbackMessage) -> Option<(&'static str, Target, bool)> {
    let CallbackMessage::Contact { change, .. } = m else {
        return None;
    };
    let (kind, target, deleted) = match change {
        ContactChange::UserCreated { userid } => {
            ("create_user", Target::User(userid.clone()), false)
        }
        ContactChange::UserUpdated { userid, new_userid } => (
            "update_user",
            match new_userid {
                Some(to) if to != userid => Target::UserRenamed {
                    from: userid.clone(),
                    to: to.clone(),
                },
                _ => Target::User(userid.clone()),
            },
            false,
        ),
        ContactChange::UserDeleted { userid } => {
            ("delete_user", Target::User(userid.clone()), true)
        }
        ContactChange::DeptCreated { id } => ("create_party", Target::Dept(*id), false),
        ContactChange::DeptUpdated { id } => ("update_party", Target::Dept(*id), false),
        ContactChange::DeptDeleted { id } => ("delete_party", Target::Dept(*id), true),
    };
    Some((kind, target, deleted))
}

/// The callback endpoint at `/` for one corp (`corp_id` is the receive id every message
/// must carry).
pub fn callback_router(
    keys: &CallbackKeys,
    corp_id: &str,
    log: Arc<WeComEvents>,
) -> Result<Router> {
    let crypto = CallbackCrypto::new(crate::PROVIDER, keys.token.clone(), &keys.aes_key, corp_id)?;
    let shared = Arc::new(Shared {
        crypto,
        guard: Mutex::new(ReplayGuard::new(keys.replay_window)),
        log,
    });
    Ok(Router::new()
        .route("/", get(verify_url).post(receive))
        .with_state(shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_window_and_nonces() {
        let mut g = ReplayGuard::new(Duration::from_secs(300));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(g.admit("1700000000", "n1", now, true).is_ok());
        assert_eq!(
            g.admit("1700000000", "n1", now, true),
            Err("nonce seen before (replay)")
        );
        assert!(g.admit("1700000000", "n2", now, true).is_ok());
        assert!(g.admit("1699999000", "n3", now, true).is_err());
        assert!(g.admit("1700000400", "n3", now, true).is_err());
        assert!(g.admit("abc", "n4", now, true).is_err());
        // once outside the window, old pairs are forgotten (and refused by time anyway)
        let later = now + Duration::from_secs(1000);
        assert!(g.admit("1700001000", "n1", later, true).is_ok());
        assert_eq!(g.seen.len(), 1);
        // without `remember` (event pushes: the log claims the pair) only the time counts
        assert!(g.admit("1700001000", "n1", later, false).is_ok());
        assert!(g.admit("1600000000", "n9", later, false).is_err());
    }
}
