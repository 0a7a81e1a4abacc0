//! Access: bearer tokens, stored as SHA-256 hashes, each with scopes.
//!
//! * No default token exists: a service with no token refuses every API request (401).
//! * A token is given to clients once; the config keeps only `sha256 = "<hex>"` (make it
//!   with `printf %s "$TOKEN" | sha256sum`, or [`hash_token`]). Hashes are compared in
//!   constant time.
//! * Scopes: `read`, `write`, `import`, `admin`; `admin` includes the others.
//! * Provider callbacks (DingTalk, WeCom) are not behind tokens: they are authenticated by
//!   their own signatures.
//!
//! Mount a router behind [`require`]; the token set travels in a request extension that
//! [`Tokens::layer`] adds once, outside every protected router:
//!
//! ```
//! use axum::{Router, routing::get};
//! use idsync_serve::auth::{self, Scope, TokenEntry, Tokens};
//!
//! let tokens = Tokens::new(vec![TokenEntry::new("ci", auth::hash_token("s3cret"), vec![Scope::Read])]);
//! let api: Router = Router::new()
//!     .route("/api/v1/things", get(|| async { "[]" }))
//!     .layer(auth::require(Scope::Read));
//! let app: Router = api.layer(tokens.layer());
//! # let _ = app;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{FromFnLayer, Next};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read the hub, the change feed, jobs and metrics.
    Read,
    /// Write through the API (e.g. acknowledge a paused job, SCIM writes).
    Write,
    /// Use the bulk import API.
    Import,
    /// Everything.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Import => "import",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "import" => Ok(Scope::Import),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?} (read, write, import, admin)"
            )),
        }
    }
}

/// The SHA-256 of a token, lowercase hex: what the config keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One accepted token: a name (for logs), its hash, its scopes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for logs and audit.
    pub name: String,
    /// SHA-256 of the token, hex (64 characters).
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// A token entry.
    pub fn new(name: impl Into<String>, sha256: impl Into<String>, scopes: Vec<Scope>) -> Self {
        TokenEntry {
            name: name.into(),
            sha256: sha256.into().to_ascii_lowercase(),
            scopes,
        }
    }

    /// Whether it grants `scope`.
    pub fn grants(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }

    /// A problem with the entry (a malformed hash), if any.
    pub fn problem(&self) -> Option<String> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(format!(
                "token {}: sha256 must be 64 hex characters (printf %s \"$TOKEN\" | sha256sum)",
                self.name
            ));
        }
        if self.scopes.is_empty() {
            return Some(format!("token {}: no scopes", self.name));
        }
        None
    }
}

/// The accepted tokens. Empty by default: then every protected request is refused.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<TokenEntry>>,
}

/// Who a request authenticated as: put in the request's extensions by [`require`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

fn same_hex(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// These tokens.
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        Tokens {
            entries: Arc::new(entries),
        }
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is accepted (every protected request is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a presented token (compared by hash, in constant time per entry).
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        let h = hash_token(token);
        let mut found = None;
        for e in self.entries.iter() {
            if same_hex(&e.sha256, &h) && found.is_none() {
                found = Some(e);
            }
        }
        found
    }

    /// The layer that hands these tokens to every [`require`] below it.
    pub fn layer(&self) -> Extension<Tokens> {
        Extension(self.clone())
    }
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": why }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"idsync\""),
        );
    }
    r
}

/// The future [`require`]'s middleware returns.
pub type AuthFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Check a request against the tokens in its extensions: `Authorization: Bearer <token>`
/// whose entry grants `scope`. 401 without a (known) token, 403 without the scope, 401
/// when no token set was installed ([`Tokens::layer`]): the check fails closed.
pub async fn check(scope: Scope, mut req: Request, next: Next) -> Response {
    let Some(tokens) = req.extensions().get::<Tokens>().cloned() else {
        tracing::warn!("API request refused: no token set is installed (Tokens::layer)");
        return refuse(StatusCode::UNAUTHORIZED, "no API tokens are configured");
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented.filter(|t| !t.is_empty()) else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    let Some(entry) = tokens.find(presented) else {
        tracing::warn!(path = %req.uri().path(), "API request with an unknown token");
        return refuse(StatusCode::UNAUTHORIZED, "unknown token");
    };
    if !entry.grants(scope) {
        tracing::warn!(token = %entry.name, scope = scope.as_str(), path = %req.uri().path(), "API request without the scope");
        return refuse(StatusCode::FORBIDDEN, "the token lacks the scope");
    }
    req.extensions_mut().insert(Caller {
        name: entry.name.clone(),
        scopes: entry.scopes.clone(),
    });
    next.run(req).await
}

/// The layer that lets only requests with a token granting `scope` through (see
/// [`check`]). Put it on a router with `.layer(...)` (or `.route_layer(...)`).
#[allow(clippy::type_complexity)]
pub fn require(
    scope: Scope,
) -> FromFnLayer<impl Fn(Request, Next) -> AuthFuture + Clone + Send + Sync + 'static, (), (Request,)>
{
    axum::middleware::from_fn(move |req: Request, next: Next| -> AuthFuture {
        Box::pin(check(scope, req, next))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_scopes() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = Tokens::new(vec![
            TokenEntry::new("r", hash_token("one"), vec![Scope::Read]),
            TokenEntry::new("a", hash_token("two").to_uppercase(), vec![Scope::Admin]),
        ]);
        assert_eq!(t.find("one").map(|e| e.name.as_str()), Some("r"));
        assert!(t.find("one").is_some_and(|e| !e.grants(Scope::Import)));
        assert!(t.find("two").is_some_and(|e| e.grants(Scope::Import)));
        assert!(t.find("three").is_none());
        assert!(
            TokenEntry::new("x", "zz", vec![Scope::Read])
                .problem()
                .is_some()
        );
        assert!(!format!("{:?}", t.find("one")).contains(&hash_token("one")));
    }
}
