//! The WeCom client on the toolkit: one [`JsonClient`] (rustls, no redirects, timeouts,
//! body cap, per-API pacing at the per-minute limit, WeCom's error-body check) and one
//! token per secret (`gettoken` per (corpid, secret), cached, refreshed once on
//! 40014/42001/41001). Reads use the read secret; writes use the contact-sync secret when
//! one is configured.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use idsync_core::{Error, Result};
use idsync_http::{
    HttpSettings, IssuedToken, JsonClient, Limit, Request, TokenAuth, TokenPlacement, TokenSource,
    int_of,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::PROVIDER;
use crate::config::Connection;
use crate::error::check_body;

/// `gettoken?corpid=..&corpsecret=..` for one secret.
struct GetToken {
    corp_id: String,
    secret: SecretString,
}

#[async_trait]
impl TokenSource for GetToken {
    async fn fetch(&self, client: &JsonClient) -> Result<IssuedToken> {
        let req = Request::get("/gettoken")
            .query("corpid", self.corp_id.clone())
            .secret_query("corpsecret", self.secret.clone());
        let v = client.send(&req).await?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_data("WeCom gettoken answered without access_token")
                    .with_provider(PROVIDER)
            })?;
        let secs = v.get("expires_in").and_then(int_of).unwrap_or(7200).max(1);
        Ok(IssuedToken {
            value: SecretString::from(token.to_owned()),
            expires_in: Duration::from_secs(u64::try_from(secs).unwrap_or(7200)),
        })
    }
}

/// Reads and writes of one corp.
#[derive(Debug, Clone)]
pub(crate) struct WeComClient {
    read: Arc<TokenAuth>,
    /// The contact-sync secret's token (`None`: writes use `read`).
    write: Option<Arc<TokenAuth>>,
    /// Calls in flight at once (45033 otherwise).
    slots: Arc<Semaphore>,
}

impl WeComClient {
    pub(crate) fn new(conn: &Connection) -> Result<Self> {
        conn.validate()?;
        let window = conn.rate_window;
        let mut settings = HttpSettings::new(conn.base_url.trim_end_matches('/'));
        settings.timeout = conn.timeout;
        settings.pacing = Some(Limit {
            requests: conn.per_minute,
            per: window,
        });
        settings.secret_params = vec!["corpsecret".into(), "access_token".into()];
        let http = JsonClient::new(PROVIDER, &settings, move |_status: u16, body: Value| {
            check_body(body, SystemTime::now(), window)
        })?;
        let auth = |secret: &SecretString| {
            Arc::new(TokenAuth::new(
                http.clone(),
                GetToken {
                    corp_id: conn.corp_id.clone(),
                    secret: secret.clone(),
                },
                TokenPlacement::Query("access_token"),
                Duration::from_secs(300),
            ))
        };
        Ok(WeComClient {
            read: auth(&conn.secret),
            write: conn.contact_secret.as_ref().map(auth),
            slots: Arc::new(Semaphore::new(conn.concurrency.max(1))),
        })
    }

    async fn send(&self, auth: &TokenAuth, req: Request) -> Result<Value> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::unexpected("WeCom client closed"))?;
        auth.send(&req).await
    }

    /// A read: `GET path?query`.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let mut req = Request::get(path);
        for (k, v) in query {
            req = req.query(*k, v.clone());
        }
        self.send(&self.read, req).await
    }

    /// A read with a JSON body (`user/list_id`).
    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(&self.read, Request::post(path, body)).await
    }

    fn writer(&self) -> &TokenAuth {
        self.write.as_deref().unwrap_or(&self.read)
    }

    /// A write with a JSON body, with the contact-sync secret.
    pub(crate) async fn write_post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(self.writer(), Request::post(path, body)).await
    }

    /// A write by query (the two deletes are GET), with the contact-sync secret.
    pub(crate) async fn write_get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let mut req = Request::get(path);
        for (k, v) in query {
            req = req.query(*k, v.clone());
        }
        self.send(self.writer(), req).await
    }

    /// Fetches the read token (and the write token, when separate): the credentials check.
    pub(crate) async fn check_tokens(&self) -> Result<()> {
        self.read.token().await?;
        if let Some(w) = &self.write {
            w.token().await?;
        }
        Ok(())
    }

    /// Tokens fetched so far (both secrets).
    pub(crate) fn token_fetches(&self) -> u64 {
        self.read.token_fetches() + self.write.as_ref().map_or(0, |w| w.token_fetches())
    }
}
