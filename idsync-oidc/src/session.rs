//! What the application gets after a login: a [`LoginHandler`] it supplies, or the signed
//! session cookie of [`SessionCookie`].

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::LoginError;
use crate::provision::Login;

/// Hands a provisioned login to the application, and ends sessions.
pub trait LoginHandler: Send + Sync + 'static {
    /// The answer to the browser after a successful login (a redirect with a session, ...).
    fn on_login(&self, login: Login) -> Response;

    /// The answer to `/logout`.
    fn on_logout(&self, request_headers: &HeaderMap) -> Response;

    /// The answer to a failed login. The default: the status of the error's kind and a
    /// plain-text message (it names no secret, code or token).
    fn on_error(&self, err: &LoginError) -> Response {
        (err.kind().status(), err.to_string()).into_response()
    }
}

/// The session of a signed cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The provider.
    pub provider: String,
    /// The hub account's anchor.
    pub anchor: String,
    /// Its username.
    pub username: String,
    /// Its orgs (anchors).
    pub orgs: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// A [`LoginHandler`] that sets a signed (HMAC-SHA256), HttpOnly, SameSite=Lax session
/// cookie and redirects to a fixed path; `/logout` clears it.
pub struct SessionCookie {
    key: SecretBox<Vec<u8>>,
    name: String,
    ttl: Duration,
    secure: bool,
    after_login: String,
    after_logout: String,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl SessionCookie {
    /// Sessions signed with `key` (at least 32 bytes), cookie `idsync_session`, 8 hours,
    /// `Secure`, redirecting to `/` after login and logout.
    pub fn new(key: SecretBox<Vec<u8>>) -> Result<Self, LoginError> {
        if key.expose_secret().len() < 32 {
            return Err(LoginError::config(
                "the session key must be at least 32 bytes",
            ));
        }
        Ok(SessionCookie {
            key,
            name: "idsync_session".into(),
            ttl: Duration::from_secs(8 * 3600),
            secure: true,
            after_login: "/".into(),
            after_logout: "/".into(),
        })
    }

    /// Without the `Secure` attribute (plain-http loopback tests only).
    pub fn insecure_http(mut self) -> Self {
        self.secure = false;
        self
    }

    /// Session lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Where the browser goes after login and after logout.
    pub fn with_redirects(mut self, after_login: &str, after_logout: &str) -> Self {
        self.after_login = after_login.to_owned();
        self.after_logout = after_logout.to_owned();
        self
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    fn mac(&self, payload: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(self.key.expose_secret()).ok()?;
        mac.update(payload.as_bytes());
        Some(mac)
    }

    /// The cookie value of a session.
    pub fn sign(&self, s: &Session) -> Option<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(s).ok()?);
        let tag = self.mac(&payload)?.finalize().into_bytes();
        Some(format!("{payload}.{}", b64.encode(tag)))
    }

    /// The session of a cookie value, if its signature holds and it has not expired.
    pub fn verify(&self, value: &str) -> Option<Session> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, tag) = value.split_once('.')?;
        let tag = b64.decode(tag).ok()?;
        self.mac(payload)?.verify_slice(&tag).ok()?;
        let s: Session = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        (s.exp > chrono::Utc::now().timestamp()).then_some(s)
    }

    /// The session of a request, from its `Cookie` headers.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        crate::router::cookie(headers, &self.name).and_then(|v| self.verify(&v))
    }

    fn cookie(&self, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.name
        ))
        .ok()
    }
}

fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

impl LoginHandler for SessionCookie {
    fn on_login(&self, login: Login) -> Response {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let s = Session {
            provider: login.provider,
            anchor: login.account.anchor.as_str().to_owned(),
            username: login.account.username,
            orgs: login
                .account
                .orgs
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect(),
            exp: chrono::Utc::now().timestamp().saturating_add(ttl),
        };
        match self.sign(&s) {
            Some(v) => redirect(&self.after_login, self.cookie(&v, self.ttl.as_secs())),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "cannot sign the session").into_response(),
        }
    }

    fn on_logout(&self, _request_headers: &HeaderMap) -> Response {
        redirect(&self.after_logout, self.cookie("", 0))
    }
}
