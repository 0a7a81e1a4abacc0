//! OAuth2 client credentials (RFC 6749 §4.4) as a [`TokenSource`] for [`TokenAuth`].
//!
//! [`TokenAuth`]: crate::TokenAuth

use async_trait::async_trait;
use idsync_core::{Error, Result};
use secrecy::SecretString;
use serde_json::Value;

use crate::client::{HttpSettings, JsonClient, Request, TokenSource};
use crate::token::IssuedToken;

/// Fetches access tokens from a token endpoint with the client-credentials grant: a form
/// `POST` of `grant_type=client_credentials` with the client id and secret (in the body,
/// or as HTTP basic auth), and the scope when set. The endpoint may be on another host than
/// the API; it gets a client of its own (the same TLS, redirect and body rules).
#[derive(Clone)]
pub struct ClientCredentials {
    client: JsonClient,
    path: String,
    client_id: String,
    secret: SecretString,
    scope: Option<String>,
    basic: bool,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_endpoint", &self.client.base_url())
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// How long a token lives when the endpoint does not say (`expires_in` missing): 5 minutes.
const DEFAULT_TTL_SECS: u64 = 300;

impl ClientCredentials {
    /// A token source for `token_url` (absolute). `settings` gives the timeouts and the
    /// plaintext rule; its base URL is replaced by the token endpoint's origin.
    pub fn new(
        provider: &'static str,
        token_url: &str,
        client_id: impl Into<String>,
        secret: SecretString,
        scope: Option<String>,
        settings: &HttpSettings,
    ) -> Result<Self> {
        let url = reqwest::Url::parse(token_url).map_err(|e| {
            Error::config(format!(
                "{provider}: token_url {token_url:?} is not a URL: {e}"
            ))
        })?;
        if url.query().is_some() {
            return Err(Error::config(format!(
                "{provider}: token_url must not carry a query"
            )));
        }
        let origin = url.origin().ascii_serialization();
        let mut s = settings.clone();
        s.base_url = origin;
        s.pacing = None;
        s.path_limits = Vec::new();
        let client = JsonClient::new(provider, &s, |status: u16, body: Value| {
            if status == 400 || status == 401 {
                // RFC 6749 §5.2: invalid_client, invalid_grant, unauthorized_client, ...
                let code = body
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid_client")
                    .to_owned();
                return Err(crate::ApiError::new(
                    Some(code.clone()),
                    format!("the token endpoint refused the client credentials ({code})"),
                    crate::Class::new(
                        idsync_core::ErrorKind::Unauthenticated,
                        idsync_core::ErrorStatus::Permanent,
                    ),
                ));
            }
            Ok(body)
        })?;
        Ok(ClientCredentials {
            client,
            path: url.path().to_owned(),
            client_id: client_id.into(),
            secret,
            scope,
            basic: false,
        })
    }

    /// Send the client id and secret as HTTP basic auth (`client_secret_basic`) instead of
    /// form fields (`client_secret_post`).
    pub fn with_basic_auth(mut self) -> Self {
        self.basic = true;
        self
    }
}

#[async_trait]
impl TokenSource for ClientCredentials {
    async fn fetch(&self, _api: &JsonClient) -> Result<IssuedToken> {
        let mut req = Request::new(reqwest::Method::POST, self.path.clone())
            .form_field("grant_type", "client_credentials");
        req = if self.basic {
            req.basic_auth(&self.client_id, &self.secret)
        } else {
            req.form_field("client_id", self.client_id.clone())
                .secret_form_field("client_secret", self.secret.clone())
        };
        if let Some(scope) = &self.scope {
            req = req.form_field("scope", scope.clone());
        }
        let body = self.client.send(&req).await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_data("the token endpoint's answer has no access_token")
                    .with_provider(self.client.provider().to_owned())
                    .with_operation(self.path.clone())
            })?;
        let ttl = body
            .get("expires_in")
            .and_then(crate::int_of)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(DEFAULT_TTL_SECS);
        Ok(IssuedToken {
            value: SecretString::from(token.to_owned()),
            expires_in: std::time::Duration::from_secs(ttl),
        })
    }
}
