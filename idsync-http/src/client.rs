//! The JSON client: one provider's base URL, pacing, body cap and error-body hook.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::Result;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::{ApiError, HttpError, parse_retry_after};
use crate::pace::{Limit, Pacer};
use crate::token::{IssuedToken, Token, TokenCache};
use crate::url::check_base_url;

/// Default cap of an answer body: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The provider hook that finds error bodies in answers, **also on HTTP 200**.
///
/// Called with every answer that is JSON. Return `Err` with a classified [`ApiError`] when
/// the body is a provider error (DingTalk/WeCom `errcode != 0`, Lark `code != 0`), `Ok`
/// with the body otherwise. A non-2xx answer for which the hook returns `Ok` becomes a
/// transport error ([`HttpError::Status`]), never "not found".
pub trait BodyCheck: Send + Sync + 'static {
    /// Checks one decoded answer.
    fn check(&self, http_status: u16, body: Value) -> std::result::Result<Value, ApiError>;
}

/// A [`BodyCheck`] from a function.
impl<F> BodyCheck for F
where
    F: Fn(u16, Value) -> std::result::Result<Value, ApiError> + Send + Sync + 'static,
{
    fn check(&self, http_status: u16, body: Value) -> std::result::Result<Value, ApiError> {
        self(http_status, body)
    }
}

/// Settings of one [`JsonClient`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The base URL; paths are appended to it.
    pub base_url: String,
    /// Accept `http://` to a host that is not loopback.
    pub allow_plaintext: bool,
    /// Timeout of one whole request (connect to last body byte).
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Answer bodies larger than this are an error.
    pub max_body_bytes: usize,
    /// Pacing of every path (`None`: unpaced).
    pub pacing: Option<Limit>,
    /// Pacing of particular paths (overrides `pacing`).
    pub path_limits: Vec<(String, Limit)>,
    /// Names of query parameters that are secrets beyond [`SECRET_PARAMS`](crate::SECRET_PARAMS).
    pub secret_params: Vec<String>,
    /// A response header that gives the seconds until a throttled window resets (Lark's
    /// `x-ogw-ratelimit-reset`). On a rate-limited answer it sets the retry delay, over
    /// the default the provider's [`BodyCheck`] chose; a `Retry-After` header wins over both.
    pub reset_header: Option<&'static str>,
}

impl HttpSettings {
    /// Settings for `base_url` with defaults: 30 s timeout, 10 s connect timeout, an
    /// 8 MiB body cap, no pacing, plaintext refused.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpSettings {
            base_url: base_url.into(),
            allow_plaintext: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pacing: None,
            path_limits: Vec::new(),
            secret_params: Vec::new(),
            reset_header: None,
        }
    }
}

/// A query-string value: plain, or a secret that is redacted in logs.
#[derive(Clone)]
enum QueryValue {
    Plain(String),
    Secret(SecretString),
}

/// Pairs with their secret values exposed, for the wire only.
fn exposed(pairs: &[(String, QueryValue)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                match v {
                    QueryValue::Plain(p) => p.as_str(),
                    QueryValue::Secret(s) => s.expose_secret(),
                },
            )
        })
        .collect()
}

/// One request: method, path (appended to the base URL; also the pacing key), query,
/// headers and an optional JSON body. Secrets go in through the `secret_*` methods, which
/// keep them out of logs and `Debug` output.
#[derive(Clone)]
pub struct Request {
    method: Method,
    path: String,
    query: Vec<(String, QueryValue)>,
    headers: Vec<(HeaderName, QueryValue)>,
    body: Option<Value>,
    /// A form body (`application/x-www-form-urlencoded`), in place of a JSON body.
    form: Option<Vec<(String, QueryValue)>>,
    /// Raw body bytes and their content type, sent exactly as given (a signed body).
    raw: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.display_query(&[]))
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request with any method.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            form: None,
            raw: None,
        }
    }

    /// `GET` of a URL a provider handed out (an RFC 8288 `Link: rel="next"` target, a
    /// `next` URL in a page body), relative to `base_url` or absolute. An absolute URL must
    /// lie under `base_url` (same scheme, host, port and path prefix): credentials never go
    /// to a host the configuration did not name. Its query becomes the request's query.
    pub fn follow(base_url: &str, url: &str) -> std::result::Result<Self, HttpError> {
        let base = reqwest::Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| HttpError::Config(format!("base URL is not a URL: {e}")))?;
        let joined = if url.starts_with('/') && !url.starts_with("//") {
            // a path: relative to the base URL's path, or absolute on its host
            let prefix = base.path().trim_end_matches('/');
            let path = if url.starts_with(&format!("{prefix}/")) || prefix.is_empty() {
                url.to_owned()
            } else {
                format!("{prefix}{url}")
            };
            base.join(&path)
        } else {
            reqwest::Url::parse(url)
        }
        .map_err(|_| HttpError::Decode("the next-page URL is not a URL".into()))?;
        let prefix = base.path().trim_end_matches('/');
        let same_origin = joined.scheme() == base.scheme()
            && joined.host_str() == base.host_str()
            && joined.port_or_known_default() == base.port_or_known_default();
        let rest = joined.path().strip_prefix(prefix).unwrap_or_default();
        if !same_origin
            || !(rest.is_empty() || rest.starts_with('/'))
            || !joined.path().starts_with(prefix)
        {
            return Err(HttpError::Decode(format!(
                "the next-page URL points outside the base URL (to {}{}); refused, \
                 credentials go only to the configured host",
                joined.host_str().unwrap_or("?"),
                joined.path()
            )));
        }
        let mut r = Request::get(if rest.is_empty() { "/" } else { rest });
        for (k, v) in joined.query_pairs() {
            r = r.query(k.into_owned(), v.into_owned());
        }
        Ok(r)
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path` with a JSON body.
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).json(body)
    }

    /// Sets the JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self.form = None;
        self.raw = None;
        self
    }

    /// Sets a body of raw bytes with its content type, sent byte for byte as given (a body
    /// whose bytes are signed, like a webhook's); replaces a JSON or form body.
    pub fn raw_body(mut self, content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = None;
        self.form = None;
        self.raw = Some((content_type.into(), bytes.into()));
        self
    }

    /// Adds a field of a form body (`application/x-www-form-urlencoded`, as OAuth2 token
    /// endpoints take it); a form body replaces a JSON body.
    pub fn form_field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.body = None;
        self.raw = None;
        self.form
            .get_or_insert_with(Vec::new)
            .push((key.into(), QueryValue::Plain(value.into())));
        self
    }

    /// Adds a secret field of a form body (kept out of logs and `Debug` output).
    pub fn secret_form_field(mut self, key: impl Into<String>, value: SecretString) -> Self {
        self.body = None;
        self.raw = None;
        self.form
            .get_or_insert_with(Vec::new)
            .push((key.into(), QueryValue::Secret(value)));
        self
    }

    /// `Authorization: Basic base64(user:password)` (RFC 7617), as a secret header.
    pub fn basic_auth(self, user: &str, password: &SecretString) -> Self {
        use base64::Engine as _;
        let raw = format!("{user}:{}", password.expose_secret());
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        self.secret_header(
            reqwest::header::AUTHORIZATION,
            SecretString::from(format!("Basic {encoded}")),
        )
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query
            .push((key.into(), QueryValue::Plain(value.into())));
        self
    }

    /// Adds a secret query parameter (redacted in logs).
    pub fn secret_query(mut self, key: impl Into<String>, value: SecretString) -> Self {
        self.query.push((key.into(), QueryValue::Secret(value)));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, QueryValue::Plain(value.into())));
        self
    }

    /// Adds a secret header (e.g. `Authorization`).
    pub fn secret_header(mut self, name: HeaderName, value: SecretString) -> Self {
        self.headers.push((name, QueryValue::Secret(value)));
        self
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The body, if any.
    pub fn body(&self) -> Option<&Value> {
        self.body.as_ref()
    }

    /// The query string for logs: secret values, and values of parameters named in
    /// [`SECRET_PARAMS`](crate::SECRET_PARAMS) or `extra`, redacted.
    fn display_query(&self, extra: &[String]) -> String {
        self.query
            .iter()
            .map(|(k, v)| {
                let named = crate::url::SECRET_PARAMS
                    .iter()
                    .any(|s| k.eq_ignore_ascii_case(s))
                    || extra.iter().any(|s| k.eq_ignore_ascii_case(s));
                match v {
                    QueryValue::Plain(p) if !named => format!("{k}={p}"),
                    _ => format!("{k}=[redacted]"),
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    fn with_token(&self, placement: &TokenPlacement, token: &Token) -> Request {
        let r = self.clone();
        match placement {
            TokenPlacement::Query(name) => r.secret_query(*name, token.secret().clone()),
            TokenPlacement::Header(name) => r.secret_header(name.clone(), token.secret().clone()),
            TokenPlacement::Bearer => r.secret_header(
                reqwest::header::AUTHORIZATION,
                SecretString::from(format!("Bearer {}", token.expose())),
            ),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    provider: &'static str,
    max_body: usize,
    pacer: Pacer,
    check: Box<dyn BodyCheck>,
    secret_params: Vec<String>,
    reset_header: Option<&'static str>,
}

/// A JSON-over-HTTPS client for one provider: rustls, no redirects, connect and request
/// timeouts, a body cap, per-path pacing, the provider's error-body hook, and errors that
/// never carry a URL. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct JsonClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonClient")
            .field("provider", &self.inner.provider)
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl JsonClient {
    /// A client of `provider` (its name in errors) with `settings` and the error-body
    /// hook `check`. Fails on a bad base URL (plaintext to a non-loopback host unless
    /// `allow_plaintext`).
    pub fn new(
        provider: &'static str,
        settings: &HttpSettings,
        check: impl BodyCheck,
    ) -> Result<Self> {
        let url = check_base_url(&settings.base_url, settings.allow_plaintext)
            .map_err(|e| e.into_error(provider, "config"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .https_only(url.scheme() == "https")
            .build()
            .map_err(|e| {
                HttpError::Config(format!("HTTP client: {}", e.without_url()))
                    .into_error(provider, "config")
            })?;
        Ok(JsonClient {
            inner: Arc::new(Inner {
                http,
                base: url.as_str().trim_end_matches('/').to_owned(),
                provider,
                max_body: settings.max_body_bytes.max(1),
                pacer: Pacer::new(settings.pacing, settings.path_limits.iter().cloned()),
                check: Box::new(check),
                secret_params: settings.secret_params.clone(),
                reset_header: settings.reset_header,
            }),
        })
    }

    /// The provider name.
    pub fn provider(&self) -> &'static str {
        self.inner.provider
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Sends `req` (paced), reads the capped body and runs the error-body hook.
    pub async fn send(&self, req: &Request) -> Result<Value> {
        self.try_send(req)
            .await
            .map_err(|e| e.into_error(self.inner.provider, req.path()))
    }

    /// [`send`](JsonClient::send) with the toolkit's error (to branch on token errors).
    pub async fn try_send(&self, req: &Request) -> std::result::Result<Value, HttpError> {
        self.try_send_full(req).await.map(|a| a.body)
    }

    /// Like [`send`](JsonClient::send), keeping the status and the response headers
    /// (`Link`, `X-Total-Count`, ...).
    pub async fn send_full(&self, req: &Request) -> Result<Answer> {
        self.try_send_full(req)
            .await
            .map_err(|e| e.into_error(self.inner.provider, req.path()))
    }

    /// [`send_full`](JsonClient::send_full) with the toolkit's error.
    pub async fn try_send_full(&self, req: &Request) -> std::result::Result<Answer, HttpError> {
        let ticket = self.inner.pacer.wait(&req.path).await;
        let out = self.exchange(req).await;
        drop(ticket);
        out
    }

    /// Sends `req` (paced) and reads the capped body **without** decoding it: for APIs that
    /// answer with any body or none (webhook receivers). A 2xx status is the answer; any
    /// other status is [`HttpError::Status`] with its `Retry-After`, classified by
    /// [`classify_status`](crate::classify_status) (redirects are not followed).
    pub async fn try_send_raw(&self, req: &Request) -> std::result::Result<RawAnswer, HttpError> {
        let ticket = self.inner.pacer.wait(&req.path).await;
        let out = async {
            let mut resp = self.start(req).await?;
            let status = resp.status().as_u16();
            let headers = std::mem::take(resp.headers_mut());
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = self.read_capped(resp).await?;
            if !(200..300).contains(&status) {
                return Err(HttpError::Status {
                    status,
                    retry_after,
                });
            }
            Ok(RawAnswer {
                status,
                headers,
                body,
            })
        }
        .await;
        drop(ticket);
        out
    }

    async fn read_capped(
        &self,
        mut resp: reqwest::Response,
    ) -> std::result::Result<Vec<u8>, HttpError> {
        let limit = self.inner.max_body;
        if resp
            .content_length()
            .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
        {
            return Err(HttpError::BodyTooLarge { limit });
        }
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(HttpError::transport)? {
            if bytes.len() + chunk.len() > limit {
                return Err(HttpError::BodyTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn exchange(&self, req: &Request) -> std::result::Result<Answer, HttpError> {
        let resp = self.start(req).await?;
        self.read(resp).await
    }

    async fn start(&self, req: &Request) -> std::result::Result<reqwest::Response, HttpError> {
        let url = format!("{}{}", self.inner.base, req.path);
        tracing::trace!(
            provider = self.inner.provider,
            method = %req.method,
            path = %req.path,
            query = %req.display_query(&self.inner.secret_params),
            "HTTP request"
        );
        let mut b = self.inner.http.request(req.method.clone(), url);
        if !req.query.is_empty() {
            b = b.query(&exposed(&req.query));
        }
        for (name, v) in &req.headers {
            let (raw, secret) = match v {
                QueryValue::Plain(p) => (p.as_str(), false),
                QueryValue::Secret(s) => (s.expose_secret(), true),
            };
            let mut hv = HeaderValue::from_str(raw).map_err(|_| {
                HttpError::Config(format!("header {name} has a value that is not allowed"))
            })?;
            hv.set_sensitive(secret);
            b = b.header(name.clone(), hv);
        }
        if let Some(body) = &req.body {
            b = b.json(body);
        }
        if let Some(form) = &req.form {
            b = b.form(&exposed(form));
        }
        if let Some((content_type, bytes)) = &req.raw {
            b = b
                .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                .body(bytes.clone());
        }
        b.send().await.map_err(HttpError::transport)
    }

    async fn read(&self, mut resp: reqwest::Response) -> std::result::Result<Answer, HttpError> {
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = self.read_capped(resp).await?;
        let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
            if (200..300).contains(&status) {
                return Err(HttpError::NotJson {
                    status,
                    len: bytes.len(),
                });
            }
            // a bare status (proxy page, empty body): transport, never "not found"
            return Err(HttpError::Status {
                status,
                retry_after,
            });
        };
        let json = self.inner.check.check(status, json).map_err(|mut e| {
            if e.class.kind == idsync_core::ErrorKind::RateLimited {
                let reset = self
                    .inner
                    .reset_header
                    .and_then(|h| headers.get(h))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if let Some(wait) = retry_after.or(reset) {
                    e.class.retry_after = Some(wait);
                }
            }
            HttpError::Api(e)
        })?;
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                status,
                retry_after,
            });
        }
        Ok(Answer {
            status,
            headers,
            body: json,
        })
    }
}

/// A whole answer: status, headers and the checked JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (2xx: other statuses are errors).
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body, after the error-body hook.
    pub body: Value,
}

impl Answer {
    /// A header's value as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The target of the RFC 8288 `Link` header's `rel="next"`, if any.
    pub fn next_link(&self) -> Option<String> {
        self.headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| crate::link::find_rel(v, "next"))
    }
}

/// A whole answer whose body was not decoded ([`JsonClient::try_send_raw`]).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The HTTP status (2xx: other statuses are errors).
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as it came (capped).
    pub body: Vec<u8>,
}

/// Where an access token goes in a request.
#[derive(Debug, Clone)]
pub enum TokenPlacement {
    /// A query parameter (`?access_token=`: DingTalk legacy, WeCom).
    Query(&'static str),
    /// A header (`x-acs-dingtalk-access-token`).
    Header(HeaderName),
    /// `Authorization: Bearer <token>` (Lark).
    Bearer,
}

/// Fetches a new access token (the provider's `gettoken`).
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// Asks the provider for a token, through `client`.
    async fn fetch(&self, client: &JsonClient) -> Result<IssuedToken>;
}

/// A [`JsonClient`] plus one cached access token: puts the token into each request,
/// refreshes it when due (single flight), and on a token error (`ApiError::token_bad`)
/// invalidates it and retries the call **once**.
pub struct TokenAuth {
    client: JsonClient,
    cache: TokenCache,
    source: Box<dyn TokenSource>,
    placement: TokenPlacement,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("client", &self.client)
            .field("cache", &self.cache)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// Tokens from `source`, refreshed `margin` before expiry, placed per `placement`.
    pub fn new(
        client: JsonClient,
        source: impl TokenSource,
        placement: TokenPlacement,
        margin: Duration,
    ) -> Self {
        TokenAuth {
            client,
            cache: TokenCache::new(margin),
            source: Box::new(source),
            placement,
        }
    }

    /// The client.
    pub fn client(&self) -> &JsonClient {
        &self.client
    }

    /// How many tokens were fetched.
    pub fn token_fetches(&self) -> u64 {
        self.cache.fetches()
    }

    /// The current token (fetching one if needed).
    pub async fn token(&self) -> Result<Token> {
        self.cache.get(|| self.source.fetch(&self.client)).await
    }

    async fn token_http(&self) -> std::result::Result<Token, HttpError> {
        self.token().await.map_err(HttpError::Token)
    }

    /// Sends `req` with the token; see the type's docs.
    pub async fn send(&self, req: &Request) -> Result<Value> {
        self.send_full(req).await.map(|a| a.body)
    }

    /// Like [`send`](TokenAuth::send), keeping the status and the headers.
    pub async fn send_full(&self, req: &Request) -> Result<Answer> {
        self.try_send_full(req)
            .await
            .map_err(|e| e.into_error(self.client.provider(), req.path()))
    }

    /// [`send_full`](TokenAuth::send_full) with the toolkit's error (to branch on statuses).
    pub async fn try_send_full(&self, req: &Request) -> std::result::Result<Answer, HttpError> {
        let mut retried = false;
        loop {
            let token = self.token_http().await?;
            match self
                .client
                .try_send_full(&req.with_token(&self.placement, &token))
                .await
            {
                Err(e) if !retried && e.is_token_error() => {
                    tracing::debug!(
                        provider = self.client.provider(),
                        path = req.path(),
                        "access token rejected; refreshing once"
                    );
                    self.cache.invalidate(&token).await;
                    retried = true;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_urls_stay_under_the_base_url() {
        let base = "https://hr.example.com/api/v2";
        let r =
            Request::follow(base, "https://hr.example.com/api/v2/people?page=2&x=a%20b").unwrap();
        assert_eq!(r.path(), "/people");
        assert_eq!(r.display_query(&[]), "page=2&x=a b");
        let r = Request::follow(base, "/api/v2/people?cursor=c1").unwrap();
        assert_eq!(r.path(), "/people");
        let r = Request::follow(base, "/people?cursor=c1").unwrap();
        assert_eq!(r.path(), "/people", "a path relative to the base");
        for bad in [
            "https://evil.example/api/v2/people",
            "http://hr.example.com/api/v2/people",
            "https://hr.example.com:8443/api/v2/people",
            "https://hr.example.com/other/people",
            "https://hr.example.com/api/v2x/people",
            "//evil.example/api/v2/people",
        ] {
            let e = Request::follow(base, bad).unwrap_err();
            assert!(
                e.to_string().contains("outside the base URL")
                    || e.to_string().contains("not a URL"),
                "{bad}: {e}"
            );
        }
        let form = Request::new(Method::POST, "/token")
            .form_field("grant_type", "client_credentials")
            .secret_form_field("client_secret", SecretString::from("S3".to_owned()))
            .basic_auth("id", &SecretString::from("pw".to_owned()));
        assert!(!format!("{form:?}").contains("S3"));
        assert!(form.body().is_none());
    }

    #[test]
    fn request_debug_and_logs_redact_secrets() {
        let r = Request::get("/x")
            .query("dept_id", "5")
            .query("corpsecret", "PLAIN-BUT-NAMED")
            .query("sig", "EXTRA-NAMED")
            .secret_query("access_token", SecretString::from("TOKEN".to_owned()))
            .secret_header(
                reqwest::header::AUTHORIZATION,
                SecretString::from("Bearer T2".to_owned()),
            );
        let dbg = format!("{r:?}");
        assert!(dbg.contains("dept_id=5"), "{dbg}");
        for secret in ["PLAIN-BUT-NAMED", "TOKEN", "T2"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        let logged = r.display_query(&["sig".to_owned()]);
        assert!(!logged.contains("EXTRA-NAMED"), "{logged}");
        assert!(logged.contains("dept_id=5"));
    }
}
