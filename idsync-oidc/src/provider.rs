//! One OpenID Connect provider: discovery, the authorization request, the code exchange,
//! ID token verification (with JWKS refresh on key rotation) and userinfo.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DiscoveryError, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::config::{ProviderConfig, UserinfoMode};
use crate::error::{LoginError, LoginErrorKind};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// Claims of a verified login: the ID token's, completed by userinfo.
pub type Claims = Map<String, Value>;

/// The HTTP client's failure (transport or response building).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be sent or the answer not read.
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    /// The answer could not be turned into a response.
    #[error("{0}")]
    Http(#[source] openidconnect::http::Error),
}

/// An HTTP client for the provider: TLS verified (rustls), no redirects followed, bounded
/// time.
pub(crate) fn http_client() -> Result<reqwest::Client, LoginError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| LoginError::config(format!("cannot build the HTTP client: {e}")))
}

async fn send(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let resp = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError::Transport(e.without_url()))?;
    let mut out = openidconnect::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| HttpError::Transport(e.without_url()))?;
    out.body(body.to_vec()).map_err(HttpError::Http)
}

/// The start of a login: where to send the browser, and what to keep until the callback.
#[derive(Debug)]
pub struct AuthStart {
    /// The provider's authorization URL with state, nonce and the PKCE challenge.
    pub url: String,
    /// The state (CSRF token).
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: SecretString,
}

/// After a refresh of the signing keys, an unknown key makes us fetch them again only this
/// much later (a flood of forged tokens cannot make us hammer the JWKS endpoint).
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);

/// A discovered provider.
#[derive(Debug)]
pub struct OidcProvider {
    name: String,
    cfg: ProviderConfig,
    secret: SecretString,
    metadata: CoreProviderMetadata,
    /// The keys, and when they were last fetched again after discovery.
    jwks: RwLock<(CoreJsonWebKeySet, Option<Instant>)>,
    http: reqwest::Client,
}

fn discovery_error(issuer: &str, e: DiscoveryError<HttpError>) -> LoginError {
    match e {
        DiscoveryError::Request(e) => LoginError::new(
            LoginErrorKind::ProviderUnavailable,
            format!("discovery at {issuer}/.well-known/openid-configuration: {e}"),
        ),
        DiscoveryError::Response(status, _, _) => LoginError::new(
            if status.is_server_error() {
                LoginErrorKind::ProviderUnavailable
            } else {
                LoginErrorKind::Config
            },
            format!("discovery at {issuer}/.well-known/openid-configuration answered {status}"),
        ),
        other => LoginError::config(format!(
            "discovery at {issuer}/.well-known/openid-configuration: {other}"
        )),
    }
}

impl OidcProvider {
    /// Validate the config, read the secret from its reference, and discover the provider.
    pub async fn discover(name: &str, cfg: &ProviderConfig) -> Result<Self, LoginError> {
        let secret = cfg.client_secret(name)?;
        OidcProvider::discover_with_secret(name, cfg, secret).await
    }

    /// Like [`discover`](Self::discover), with the secret given.
    pub async fn discover_with_secret(
        name: &str,
        cfg: &ProviderConfig,
        secret: SecretString,
    ) -> Result<Self, LoginError> {
        cfg.validate(name)?;
        let http = http_client()?;
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| LoginError::config(format!("[oidc.{name}] issuer: {e}")))?;
        let client = |req| send(http.clone(), req);
        // discovery checks that the document's issuer equals ours, and fetches the JWKS
        let metadata = CoreProviderMetadata::discover_async(issuer, &client)
            .await
            .map_err(|e| discovery_error(&cfg.issuer, e).with_provider(name))?;
        if metadata.token_endpoint().is_none() {
            return Err(LoginError::config(format!(
                "{}: discovery names no token_endpoint",
                cfg.issuer
            ))
            .with_provider(name));
        }
        let jwks = metadata.jwks().clone();
        Ok(OidcProvider {
            name: name.to_owned(),
            cfg: cfg.clone(),
            secret,
            metadata,
            jwks: RwLock::new((jwks, None)),
            http,
        })
    }

    /// The provider's name (`NAME` of `[oidc.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its config.
    pub fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    fn client(&self) -> Result<Client, LoginError> {
        let redirect = RedirectUrl::new(self.cfg.redirect_uri.clone())
            .map_err(|e| LoginError::config(format!("[oidc.{}] redirect_uri: {e}", self.name)))?;
        // discovery made sure there is a token endpoint
        let token =
            self.metadata.token_endpoint().cloned().ok_or_else(|| {
                LoginError::config(format!("{}: no token_endpoint", self.cfg.issuer))
            })?;
        Ok(CoreClient::new(
            ClientId::new(self.cfg.client_id.clone()),
            self.metadata.issuer().clone(),
            self.jwks_now(),
        )
        .set_client_secret(ClientSecret::new(self.secret.expose_secret().to_owned()))
        .set_auth_uri(self.metadata.authorization_endpoint().clone())
        .set_token_uri(token)
        .set_redirect_uri(redirect))
    }

    fn jwks_now(&self) -> CoreJsonWebKeySet {
        match self.jwks.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// Start a login: the authorization URL with a fresh state, nonce and PKCE (S256).
    pub fn authorize(&self) -> Result<AuthStart, LoginError> {
        let client = self.client()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.cfg.scopes {
            if s != "openid" {
                req = req.add_scope(Scope::new(s.clone()));
            }
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(AuthStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: SecretString::from(verifier.secret().clone()),
        })
    }

    fn verifier(&self, jwks: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        let algs: Vec<CoreJwsSigningAlgorithm> = self
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| **a != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(self.cfg.client_id.clone()),
            ClientSecret::new(self.secret.expose_secret().to_owned()),
            self.metadata.issuer().clone(),
            jwks,
        )
        .set_allowed_algs(algs)
    }

    /// Fetch the JWKS again (key rotation), at most every few seconds.
    async fn refresh_jwks(&self) -> Result<bool, LoginError> {
        let fresh = match self.jwks.read() {
            Ok(g) => g.1.is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN),
            Err(_) => false,
        };
        if fresh {
            return Ok(false);
        }
        let client = |req| send(self.http.clone(), req);
        let url = self.metadata.jwks_uri();
        let jwks = CoreJsonWebKeySet::fetch_async(url, &client)
            .await
            .map_err(|e| {
                LoginError::new(
                    LoginErrorKind::ProviderUnavailable,
                    format!("JWKS at {}: {e}", url.url()),
                )
                .with_provider(&self.name)
            })?;
        if let Ok(mut g) = self.jwks.write() {
            *g = (jwks, Some(Instant::now()));
        }
        Ok(true)
    }

    /// Verify an ID token: signature against the provider's keys (fetched again once when
    /// no key matches, for key rotation), `iss`, `aud`, `exp`, `nonce`, and — when an
    /// access token is given and the token has one — `at_hash`. Returns its claims.
    pub async fn verify_id_token(
        &self,
        raw: &str,
        nonce: &str,
        access_token: Option<&str>,
    ) -> Result<Claims, LoginError> {
        let bad = |m: String| {
            LoginError::new(LoginErrorKind::InvalidIdToken, m).with_provider(&self.name)
        };
        let token: CoreIdToken = raw
            .parse()
            .map_err(|e| bad(format!("the ID token is malformed: {e}")))?;
        let nonce = Nonce::new(nonce.to_owned());
        let mut verifier = self.verifier(self.jwks_now());
        let mut outcome = token.claims(&verifier, &nonce).map(|_| ());
        if let Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) = &outcome
            && self.refresh_jwks().await?
        {
            verifier = self.verifier(self.jwks_now());
            outcome = token.claims(&verifier, &nonce).map(|_| ());
        }
        outcome.map_err(|e| bad(format!("ID token refused: {e}")))?;
        let claims = token
            .claims(&verifier, &nonce)
            .map_err(|e| bad(format!("ID token refused: {e}")))?;
        if let (Some(at), Some(expected)) = (access_token, claims.access_token_hash()) {
            let alg = token
                .signing_alg()
                .map_err(|e| bad(format!("ID token refused: {e}")))?;
            let key = token
                .signing_key(&verifier)
                .map_err(|e| bad(format!("ID token refused: {e}")))?;
            let actual = AccessTokenHash::from_token(&AccessToken::new(at.to_owned()), alg, key)
                .map_err(|e| bad(format!("at_hash cannot be checked: {e}")))?;
            if actual != *expected {
                return Err(bad(
                    "at_hash does not match the access token (a swapped token?)".into(),
                ));
            }
        }
        // The signature covers the payload: its claims are now trusted, read them as sent.
        let payload = raw
            .split('.')
            .nth(1)
            .ok_or_else(|| bad("the ID token is not a JWS".into()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| bad(format!("the ID token payload is not base64url: {e}")))?;
        serde_json::from_slice::<Claims>(&bytes)
            .map_err(|e| bad(format!("the ID token payload is not a JSON object: {e}")))
    }

    /// Exchange the code (with the PKCE verifier), verify the ID token, and read userinfo
    /// when the config asks for it. `iss` is the callback's RFC 9207 `iss` parameter.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &SecretString,
    ) -> Result<Claims, LoginError> {
        let client = self.client()?;
        let http = |req| send(self.http.clone(), req);
        let token_url = client.token_uri().url().to_string();
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                pkce_verifier.expose_secret().to_owned(),
            ))
            .request_async(&http)
            .await
            .map_err(|e| {
                let kind = match &e {
                    RequestTokenError::ServerResponse(_) => LoginErrorKind::CodeRejected,
                    RequestTokenError::Request(_) => LoginErrorKind::ProviderUnavailable,
                    RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
                        LoginErrorKind::CodeRejected
                    }
                };
                let what = match &e {
                    RequestTokenError::ServerResponse(r) => format!(
                        "error {}{}",
                        r.error().as_ref(),
                        r.error_description()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    ),
                    other => other.to_string(),
                };
                LoginError::new(kind, format!("token endpoint {token_url}: {what}"))
                    .with_provider(&self.name)
            })?;
        let raw = openidconnect::TokenResponse::id_token(&resp)
            .ok_or_else(|| {
                LoginError::new(
                    LoginErrorKind::InvalidIdToken,
                    format!("token endpoint {token_url} returned no id_token"),
                )
                .with_provider(&self.name)
            })?
            .to_string();
        let access = resp.access_token().secret().clone();
        let mut claims = self.verify_id_token(&raw, nonce, Some(&access)).await?;
        let want_userinfo = match self.cfg.userinfo {
            UserinfoMode::Always => true,
            UserinfoMode::Never => false,
            UserinfoMode::WhenMissing => {
                self.cfg.claims.values().any(|c| !claims.contains_key(c))
                    || (self.cfg.claims.contains_key("email")
                        && !claims.contains_key("email_verified"))
            }
        };
        if want_userinfo && let Some(url) = self.metadata.userinfo_endpoint() {
            let info = self.userinfo(url.url().as_str(), &access, &claims).await?;
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    /// Read userinfo (JSON) with the access token; its `sub` must be the ID token's.
    async fn userinfo(
        &self,
        url: &str,
        access_token: &str,
        id_claims: &Claims,
    ) -> Result<Claims, LoginError> {
        let err = |kind, m: String| {
            LoginError::new(kind, format!("userinfo {url}: {m}")).with_provider(&self.name)
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                err(
                    LoginErrorKind::ProviderUnavailable,
                    e.without_url().to_string(),
                )
            })?;
        let status = resp.status();
        if !status.is_success() {
            let kind = if status.is_server_error() {
                LoginErrorKind::ProviderUnavailable
            } else {
                LoginErrorKind::InvalidUserinfo
            };
            return Err(err(kind, format!("answered {status}")));
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !ctype.starts_with("application/json") {
            return Err(err(
                LoginErrorKind::InvalidUserinfo,
                format!(
                    "content type {ctype:?} is not application/json (signed userinfo is not supported)"
                ),
            ));
        }
        let info: Claims = resp.json().await.map_err(|e| {
            err(
                LoginErrorKind::InvalidUserinfo,
                format!("not a JSON object: {}", e.without_url()),
            )
        })?;
        if info.get("sub") != id_claims.get("sub") {
            return Err(err(
                LoginErrorKind::InvalidUserinfo,
                "its sub differs from the ID token's".into(),
            ));
        }
        Ok(info)
    }
}
