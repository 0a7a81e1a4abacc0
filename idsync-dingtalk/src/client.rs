//! DingTalk's legacy-API client on the [`idsync_http`] toolkit: only the contract is here.
//!
//! * The access token comes from `GET /gettoken?appkey=..&appsecret=..` and goes into the
//!   query string as `access_token`; the toolkit caches it, refreshes it shortly before it
//!   expires (single flight), and on a token error (`40014`/`42001`/`40001`, or `88` with
//!   one of those as `sub_code`) invalidates it and retries the call once.
//! * Every answer is checked for DingTalk's error shapes ([`check_body`]), also on HTTP 200;
//!   the error code reported is the specific one (`90018`), not the umbrella `88`.
//! * Requests are paced per API path (a sliding one-second window of `qps` requests, the
//!   way DingTalk counts its per-app per-API limit). No retries beyond the token retry:
//!   retrying throttled or failed pages is the core retry layer's job.

use std::time::Duration;

use async_trait::async_trait;
use idsync_core::{ErrorKind, ErrorStatus, Result};
pub(crate) use idsync_http::int_of;
use idsync_http::{
    ApiError, Class, HttpSettings, IssuedToken, JsonClient, Limit, Request, TokenAuth,
    TokenPlacement, TokenSource,
};
use secrecy::SecretString;
use serde_json::Value;

use crate::PROVIDER;
use crate::config::DingTalkConfig;
use crate::error::classify;

/// The legacy-API HTTP client of one app.
#[derive(Debug)]
pub(crate) struct Client {
    auth: TokenAuth,
}

/// `GET /gettoken` with the app's key and secret.
struct GetToken {
    app_key: String,
    app_secret: SecretString,
}

#[async_trait]
impl TokenSource for GetToken {
    async fn fetch(&self, client: &JsonClient) -> Result<IssuedToken> {
        let body = client
            .send(
                &Request::get("/gettoken")
                    .query("appkey", self.app_key.as_str())
                    .secret_query("appsecret", self.app_secret.clone()),
            )
            .await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                idsync_core::Error::invalid_data("gettoken: no access_token")
                    .with_provider(PROVIDER)
                    .with_operation("/gettoken")
            })?;
        let expires_in = body
            .get("expires_in")
            .and_then(int_of)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(7200);
        Ok(IssuedToken {
            value: SecretString::from(token.to_owned()),
            expires_in: Duration::from_secs(expires_in),
        })
    }
}

impl Client {
    pub(crate) fn new(cfg: &DingTalkConfig) -> Result<Self> {
        let mut settings = HttpSettings::new(cfg.base());
        settings.allow_plaintext = cfg.allow_plaintext;
        settings.timeout = cfg.timeout();
        settings.max_body_bytes = cfg.max_body_bytes;
        settings.pacing = Some(Limit::per_second(cfg.qps.max(1)));
        let client = JsonClient::new(PROVIDER, &settings, check_body)?;
        Ok(Client {
            auth: TokenAuth::new(
                client,
                GetToken {
                    app_key: cfg.app_key.clone(),
                    app_secret: cfg.app_secret.clone(),
                },
                TokenPlacement::Query("access_token"),
                Duration::from_secs(cfg.token_refresh_margin_secs),
            ),
        })
    }

    /// How many times `gettoken` was called (for tests and reports).
    pub(crate) fn token_fetches(&self) -> u64 {
        self.auth.token_fetches()
    }

    /// `POST <base><path>?access_token=...` with a JSON body; returns the whole answer
    /// (`errcode` 0).
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.auth.send(&Request::post(path, body.clone())).await
    }
}

/// Checks a decoded answer for DingTalk's error shapes (on any HTTP status).
pub(crate) fn check_body(http_status: u16, json: Value) -> std::result::Result<Value, ApiError> {
    if let Some(code) = json.get("errcode").and_then(int_of) {
        if code == 0 {
            return Ok(json);
        }
        let sub_code = json.get("sub_code").and_then(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let errmsg = json
            .get("sub_msg")
            .or_else(|| json.get("errmsg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let c = classify(code, sub_code.as_deref());
        // `88` wraps the real code in `sub_code`: report that one.
        let specific = match (&sub_code, code) {
            (Some(s), 88) if s.parse::<i64>().is_ok() => s.clone(),
            _ => code.to_string(),
        };
        let mut e = ApiError::new(Some(specific), errmsg, c.class);
        if c.token_bad {
            e = e.token_bad();
        }
        if code == 88 {
            e = e.with_context("wrapper_code", "88");
        }
        if let Some(s) = sub_code {
            e = e.with_context("sub_code", s);
        }
        if let Some(r) = json.get("request_id").and_then(Value::as_str) {
            e = e.with_context("request_id", r);
        }
        return Err(e);
    }
    if json.get("status").and_then(int_of) == Some(1111) {
        let wait = json
            .get("wait")
            .and_then(int_of)
            .and_then(|w| u64::try_from(w).ok())
            .unwrap_or(5);
        let c = classify(1111, None);
        return Err(ApiError::new(
            Some("1111".to_owned()),
            format!("IP banned by DingTalk for {wait} minutes"),
            c.class.after(Duration::from_secs(wait.saturating_mul(60))),
        ));
    }
    if (200..300).contains(&http_status) {
        return Err(ApiError::new(
            None,
            "unexpected DingTalk answer: no errcode",
            Class::new(ErrorKind::InvalidData, ErrorStatus::Permanent),
        ));
    }
    // a non-2xx JSON body that is not DingTalk's: the toolkit reports the bare status
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_on_http_200() {
        let ok = check_body(200, json!({"errcode": 0, "errmsg": "ok", "result": {}}));
        assert!(ok.is_ok());
        let e = check_body(
            200,
            json!({"errcode": 88, "sub_code": "40014", "sub_msg": "不合法的access_token",
                   "errmsg": "ding talk error[subcode=40014]", "request_id": "h4qx"}),
        )
        .unwrap_err();
        assert!(e.token_bad);
        assert_eq!(e.code.as_deref(), Some("40014"));
        let e = check_body(200, json!({"errcode": "42001", "errmsg": "timeout"})).unwrap_err();
        assert!(e.token_bad);
        let e = check_body(200, json!({"errcode": 90018, "errmsg": "qps"})).unwrap_err();
        assert!(!e.token_bad);
        let e = check_body(200, json!({"status": 1111, "wait": 5, "punish": "deny"})).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("1111"));
        assert_eq!(e.class.retry_after, Some(Duration::from_secs(300)));
        // not DingTalk's body on a non-2xx: left to the toolkit (a bare status)
        assert!(check_body(502, json!({"message": "bad gateway"})).is_ok());
        let e = check_body(200, json!({"hello": 1})).unwrap_err();
        assert_eq!(e.class.kind, ErrorKind::InvalidData);
    }
}
