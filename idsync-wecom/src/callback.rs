//! The `change_contact` callback endpoint (接收事件服务器): an axum [`Router`] that answers
//! WeCom's URL verification and records directory events in a [`WeComEventLog`].
//!
//! * `GET /?msg_signature&timestamp&nonce&echostr`: the signature is checked over the
//!   URL-decoded `echostr`, which is decrypted and answered **raw** (no quotes, BOM or
//!   newline).
//! * `POST /?msg_signature&timestamp&nonce` with the XML envelope: signature over
//!   `<Encrypt>`, decryption, receive-id (CorpID) check, XML parse; `change_contact` events
//!   become log entries (see [`record`] on redeliveries); the answer is `success`.
//! * Refused with HTTP 403 and nothing recorded: a bad signature, a ciphertext for another
//!   corp, a timestamp outside the replay window, a (timestamp, nonce) pair seen before.
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

use crate::config::CallbackKeys;
use crate::crypto::CallbackCrypto;
use crate::event::{CallbackMessage, ContactChange, parse_envelope, parse_message};
use crate::source::{Target, WeComEventLog};

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

    /// Accepts a request once: its timestamp must be within the window of `now` and its
    /// (timestamp, nonce) new.
    fn admit(
        &mut self,
        timestamp: &str,
        nonce: &str,
        now: SystemTime,
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
    log: Arc<WeComEventLog>,
}

fn refuse(why: &str) -> Response {
    tracing::warn!(reason = why, "WeCom callback refused");
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

impl Shared {
    fn admit(
        &self,
        q: &HashMap<String, String>,
        encrypt: &str,
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
            .admit(ts, nonce, SystemTime::now())
            .map_err(str::to_owned)?;
        Ok(decrypted.message)
    }
}

async fn verify_url(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let echostr = q.get("echostr").cloned().unwrap_or_default();
    match s.admit(&q, &echostr) {
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
    let plain = match s.admit(&q, &env.encrypt) {
        Ok(p) => p,
        Err(why) => return refuse(&why),
    };
    match parse_message(&plain) {
        Ok(m) => {
            record(&s.log, &m);
            (StatusCode::OK, "success").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "WeCom callback with an unreadable event");
            (StatusCode::BAD_REQUEST, e.message().to_owned()).into_response()
        }
    }
}

/// Records a decrypted message in the log (no-op for messages that are no directory
/// change).
///
/// A redelivered event is recorded again on purpose: every event is only a reason to
/// re-read its entity, so a second record costs one read and loses nothing, while
/// deduplicating on (corp, time, type, id) would drop a second real change of the same
/// entity within the same second.
pub fn record(log: &WeComEventLog, m: &CallbackMessage) {
    let CallbackMessage::Contact { change, .. } = m else {
        return;
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
    log.push(kind, target, deleted);
}

/// The callback endpoint at `/` for one corp (`corp_id` is the receive id every message
/// must carry).
pub fn callback_router(
    keys: &CallbackKeys,
    corp_id: &str,
    log: Arc<WeComEventLog>,
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
        assert!(g.admit("1700000000", "n1", now).is_ok());
        assert_eq!(
            g.admit("1700000000", "n1", now),
            Err("nonce seen before (replay)")
        );
        assert!(g.admit("1700000000", "n2", now).is_ok());
        assert!(g.admit("1699999000", "n3", now).is_err());
        assert!(g.admit("1700000400", "n3", now).is_err());
        assert!(g.admit("abc", "n4", now).is_err());
        // once outside the window, old pairs are forgotten (and refused by time anyway)
        let later = now + Duration::from_secs(1000);
        assert!(g.admit("1700001000", "n1", later).is_ok());
        assert_eq!(g.seen.len(), 1);
    }
}
