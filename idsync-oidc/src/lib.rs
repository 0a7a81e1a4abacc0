//! # idsync-oidc
//!
//! Just-in-time provisioning: an account reaches the idsync hub the first time its person
//! logs in through an OpenID Connect provider (Okta, Entra ID, Keycloak, any certified
//! provider).
//!
//! * **Login routes** ([`OidcService::router`], axum): `GET /{provider}/login` starts the
//!   authorization-code flow with PKCE (S256), state and nonce; the state is also bound to
//!   the browser by an HttpOnly cookie and is good for one callback within
//!   [`LOGIN_TTL`]. `GET /{provider}/callback` checks state (and RFC 9207 `iss`),
//!   exchanges the code, verifies the ID token (signature against the JWKS, fetched again
//!   when a key is unknown, `iss`, `aud`, `exp`, `nonce`, `at_hash`) and reads userinfo
//!   when mapped claims are only there (its `sub` must match). `GET|POST /logout` ends the
//!   session. Several providers can be served at once. The HTTP client verifies TLS
//!   (rustls) and follows no redirects.
//! * **Provisioning through the engine** ([`Provisioner`]): the anchor is `iss|sub` (or
//!   Entra's `tid`+`oid`), claims map to the account by the job's mapping rules
//!   ([`ProviderConfig::claims`]), and [`Engine::plan_changes`](idsync_core::Engine::plan_changes)
//!   takes it through map → correlate → plan → apply, journaled and audited. Later logins
//!   update only the fields that changed.
//! * **Safe linking**: a login links to an existing hub account only when `email_verified`
//!   is true (or `"true"`) or the issuer is trusted for email; otherwise the job has no
//!   correlation rule and does not write the email, so it cannot take over an account, and
//!   [`UnverifiedPolicy`] creates a separate account or refuses. A disabled hub account is
//!   never enabled by a login: the login is refused. The audit names the path
//!   ([`LinkPath`]).
//! * **What the application gets**: a [`Login`] through its [`LoginHandler`], or the signed
//!   session cookie of [`SessionCookie`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use idsync_core::{Engine, Hub, MemoryStore, Store};
//! use idsync_oidc::{OidcConfig, OidcProvider, OidcService, SessionCookie};
//! use secrecy::SecretBox;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config: OidcConfig = toml::from_str(r#"
//!     [okta]
//!     issuer = "https://example.okta.com"
//!     client_id = "idsync"
//!     client_secret_env = "OKTA_CLIENT_SECRET"
//!     redirect_uri = "https://idsync.example.com/oidc/okta/callback"
//! "#)?;
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let engine = Engine::new(store.clone());
//! let hub = Arc::new(Hub::new(store));
//! let sessions = SessionCookie::new(SecretBox::new(Box::new(vec![7u8; 32])))?;
//! let mut service = OidcService::new(Arc::new(sessions));
//! for (name, cfg) in &config {
//!     let provider = OidcProvider::discover(name, cfg).await?;
//!     service = service.with_provider(provider, engine.clone(), hub.clone());
//! }
//! let app = axum::Router::new().nest("/oidc", service.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod provider;
mod provision;
mod router;
mod session;

pub use config::{AnchorClaims, OidcConfig, ProviderConfig, UnverifiedPolicy, UserinfoMode};
pub use error::{LoginError, LoginErrorKind};
pub use provider::{AuthStart, Claims, HttpError, OidcProvider};
pub use provision::{LinkPath, Login, LoginSource, Provisioner, email_verified, subject_anchor};
pub use router::{LOGIN_TTL, MAX_PENDING, OidcService, STATE_COOKIE};
pub use session::{LoginHandler, Session, SessionCookie};
