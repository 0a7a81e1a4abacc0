//! The Lark client on the toolkit: one [`JsonClient`] (rustls, no redirects, timeouts,
//! body cap, Lark's error-body check on every status), one tenant access token
//! (`auth/v3/tenant_access_token/internal`, cached, refreshed a few minutes before
//! `expire` — Lark answers the same token with its *remaining* lifetime until less than
//! 30 minutes are left — and refreshed once on 99991663/99991664/99991661/99991671), the
//! `Authorization: Bearer` header, and app-wide pacing: Lark counts its 50 calls per
//! second per app over all contact APIs, not per path, so all of them share one window.
//! Every contact call carries the configured `user_id_type` and
//! `department_id_type=open_department_id`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::{Error, Result};
use idsync_http::{
    HttpSettings, IssuedToken, JsonClient, Limit, Method, Pacer, Request, TokenAuth,
    TokenPlacement, TokenSource, int_of,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::PROVIDER;
use crate::config::{Connection, DEPARTMENT_ID_TYPE, UserIdType};
use crate::error::check_body;

/// The token path.
pub(crate) const TOKEN_PATH: &str = "/auth/v3/tenant_access_token/internal";
/// The pacing key every contact call shares (the limit is per app).
const PACE_KEY: &str = "contact";

/// `tenant_access_token/internal` for one app.
struct TenantToken {
    app_id: String,
    app_secret: SecretString,
}

#[async_trait]
impl TokenSource for TenantToken {
    async fn fetch(&self, client: &JsonClient) -> Result<IssuedToken> {
        let req = Request::post(
            TOKEN_PATH,
            json!({"app_id": self.app_id, "app_secret": self.app_secret.expose_secret()}),
        );
        let v = client.send(&req).await?;
        let token = v
            .get("tenant_access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_data("Lark tenant_access_token/internal answered without a token")
                    .with_provider(PROVIDER)
                    .with_operation(TOKEN_PATH)
            })?;
        // the remaining lifetime of the (possibly same) token
        let secs = v.get("expire").and_then(int_of).unwrap_or(7200).max(1);
        Ok(IssuedToken {
            value: SecretString::from(token.to_owned()),
            expires_in: Duration::from_secs(u64::try_from(secs).unwrap_or(7200)),
        })
    }
}

/// Calls of one app.
#[derive(Debug, Clone)]
pub(crate) struct LarkClient {
    auth: Arc<TokenAuth>,
    pacer: Arc<Pacer>,
    user_id_type: UserIdType,
}

impl LarkClient {
    pub(crate) fn new(conn: &Connection) -> Result<Self> {
        conn.validate()?;
        let mut settings = HttpSettings::new(conn.base_url.trim_end_matches('/'));
        settings.timeout = conn.timeout;
        settings.allow_plaintext = conn.allow_plaintext;
        settings.secret_params = vec!["app_secret".into()];
        // a throttle waits until Lark says its window resets, not a fixed second
        settings.reset_header = Some("x-ogw-ratelimit-reset");
        let http = JsonClient::new(PROVIDER, &settings, check_body)?;
        let auth = TokenAuth::new(
            http,
            TenantToken {
                app_id: conn.app_id.clone(),
                app_secret: conn.app_secret.clone(),
            },
            TokenPlacement::Bearer,
            Duration::from_secs(300),
        );
        Ok(LarkClient {
            auth: Arc::new(auth),
            pacer: Arc::new(Pacer::new(Some(Limit::per_second(conn.qps)), [])),
            user_id_type: conn.user_id_type,
        })
    }

    /// One contact call: the id types, pacing, the token; answers `data` (or `{}`).
    async fn call(&self, req: Request) -> Result<Value> {
        let req = req
            .query("user_id_type", self.user_id_type.as_str())
            .query("department_id_type", DEPARTMENT_ID_TYPE);
        let ticket = self.pacer.wait(PACE_KEY).await;
        let out = self.auth.send(&req).await;
        drop(ticket);
        let mut v = out?;
        Ok(v.get_mut("data")
            .map(Value::take)
            .unwrap_or_else(|| json!({})))
    }

    /// `GET path?query`.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let mut req = Request::get(path);
        for (k, v) in query {
            req = req.query(*k, v.clone());
        }
        self.call(req).await
    }

    /// A write with a JSON body (`POST`, `PATCH`) and query parameters.
    pub(crate) async fn write(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Value,
    ) -> Result<Value> {
        let mut req = Request::new(method, path).json(body);
        for (k, v) in query {
            req = req.query(*k, v.clone());
        }
        self.call(req).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<Value> {
        self.call(Request::new(Method::DELETE, path)).await
    }

    /// Fetches the token: the credentials check.
    pub(crate) async fn check_token(&self) -> Result<()> {
        self.auth.token().await.map(|_| ())
    }

    /// Tokens fetched so far.
    pub(crate) fn token_fetches(&self) -> u64 {
        self.auth.token_fetches()
    }

    /// The user id type of every call.
    pub(crate) fn user_id_type(&self) -> UserIdType {
        self.user_id_type
    }
}
