//! The login routes: `GET /{provider}/login`, `GET /{provider}/callback`, `GET|POST /logout`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idsync_core::{Engine, Hub};
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{LoginError, LoginErrorKind};
use crate::provider::OidcProvider;
use crate::provision::{Login, Provisioner};
use crate::session::LoginHandler;

/// The cookie binding a login's state to the browser that started it.
pub const STATE_COOKIE: &str = "idsync_oidc_state";
/// How long a started login may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// At most this many logins are pending at once (a flood of `/login` cannot grow memory).
pub const MAX_PENDING: usize = 10_000;

#[derive(Debug)]
struct Pending {
    provider: String,
    nonce: String,
    verifier: SecretString,
    started: Instant,
}

struct Entry {
    provider: OidcProvider,
    provisioner: Provisioner,
}

/// The login service: providers, provisioning, pending logins, the application's handler.
pub struct OidcService {
    entries: BTreeMap<String, Entry>,
    pending: Mutex<HashMap<String, Pending>>,
    handler: Arc<dyn LoginHandler>,
    secure_cookies: bool,
}

impl std::fmt::Debug for OidcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcService")
            .field("providers", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

impl OidcService {
    /// A service without providers yet, answering logins through `handler`.
    pub fn new(handler: Arc<dyn LoginHandler>) -> Self {
        OidcService {
            entries: BTreeMap::new(),
            pending: Mutex::new(HashMap::new()),
            handler,
            secure_cookies: true,
        }
    }

    /// Add a discovered provider (its routes are `/{name}/login` and `/{name}/callback`).
    pub fn with_provider(mut self, provider: OidcProvider, engine: Engine, hub: Arc<Hub>) -> Self {
        self.entries.insert(
            provider.name().to_owned(),
            Entry {
                provider,
                provisioner: Provisioner::new(engine, hub),
            },
        );
        self
    }

    /// The state cookie without `Secure` (plain-http loopback tests only).
    pub fn insecure_http(mut self) -> Self {
        self.secure_cookies = false;
        self
    }

    /// The axum router; nest it where the redirect URIs point (`/oidc`, ...).
    pub fn router(self) -> Router {
        Router::new()
            .route("/{provider}/login", get(login))
            .route("/{provider}/callback", get(callback))
            .route("/logout", get(logout).post(logout))
            .with_state(Arc::new(self))
    }

    fn entry(&self, name: &str) -> Result<&Entry, LoginError> {
        self.entries.get(name).ok_or_else(|| {
            LoginError::new(
                LoginErrorKind::UnknownProvider,
                format!("no OIDC provider {name:?} is configured"),
            )
        })
    }

    fn start(&self, name: &str) -> Result<(String, String), LoginError> {
        let entry = self.entry(name)?;
        let start = entry.provider.authorize()?;
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| LoginError::new(LoginErrorKind::Provisioning, "pending logins lock"))?;
        pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(LoginError::new(
                LoginErrorKind::ProviderUnavailable,
                "too many logins in progress; try again shortly",
            ));
        }
        pending.insert(
            start.state.clone(),
            Pending {
                provider: name.to_owned(),
                nonce: start.nonce,
                verifier: start.pkce_verifier,
                started: Instant::now(),
            },
        );
        Ok((start.url, start.state))
    }

    /// Check the callback and provision the login.
    async fn finish(
        &self,
        name: &str,
        q: CallbackQuery,
        headers: &HeaderMap,
    ) -> Result<Login, LoginError> {
        let entry = self.entry(name)?;
        let p = &entry.provider;
        let err = |kind, m: String| LoginError::new(kind, m).with_provider(name);
        let state = q.state.ok_or_else(|| {
            err(
                LoginErrorKind::BadRequest,
                "the callback has no state".into(),
            )
        })?;
        // Taken out at once: a state is good for one callback only.
        let pending = self
            .pending
            .lock()
            .map_err(|_| err(LoginErrorKind::Provisioning, "pending logins lock".into()))?
            .remove(&state)
            .ok_or_else(|| {
                err(
                    LoginErrorKind::InvalidState,
                    "unknown or already used state".into(),
                )
            })?;
        if pending.started.elapsed() >= LOGIN_TTL {
            return Err(err(
                LoginErrorKind::InvalidState,
                "the login expired".into(),
            ));
        }
        if pending.provider != name {
            return Err(err(
                LoginErrorKind::InvalidState,
                "the state belongs to another provider".into(),
            ));
        }
        if cookie(headers, STATE_COOKIE).as_deref() != Some(state.as_str()) {
            return Err(err(
                LoginErrorKind::InvalidState,
                "the state was not started by this browser".into(),
            ));
        }
        if let Some(iss) = &q.iss
            && iss != p.issuer()
        {
            return Err(err(
                LoginErrorKind::BadRequest,
                format!("the callback's iss {iss:?} is not the issuer (a mix-up?)"),
            ));
        }
        if let Some(e) = q.error {
            let desc = q
                .error_description
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Err(err(
                LoginErrorKind::ProviderDenied,
                format!("the provider answered error {e}{desc}"),
            ));
        }
        let code = q.code.ok_or_else(|| {
            err(
                LoginErrorKind::BadRequest,
                "the callback has no code".into(),
            )
        })?;
        let claims = p.finish(&code, &pending.nonce, &pending.verifier).await?;
        entry.provisioner.login(p, &claims).await
    }
}

fn clear_state(secure: bool) -> Option<HeaderValue> {
    let s = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{s}"
    ))
    .ok()
}

async fn login(State(svc): State<Arc<OidcService>>, Path(name): Path<String>) -> Response {
    match svc.start(&name) {
        Ok((url, state)) => {
            let secure = if svc.secure_cookies { "; Secure" } else { "" };
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{STATE_COOKIE}={state}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                LOGIN_TTL.as_secs()
            )) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => svc.handler.on_error(&e),
    }
}

async fn callback(
    State(svc): State<Arc<OidcService>>,
    Path(name): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let mut r = match svc.finish(&name, q, &headers).await {
        Ok(login) => svc.handler.on_login(login),
        Err(e) => {
            tracing::warn!(provider = %name, kind = e.kind().as_str(), error = %e, "oidc login failed");
            svc.handler.on_error(&e)
        }
    };
    if let Some(c) = clear_state(svc.secure_cookies) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

async fn logout(State(svc): State<Arc<OidcService>>, headers: HeaderMap) -> Response {
    svc.handler.on_logout(&headers)
}
