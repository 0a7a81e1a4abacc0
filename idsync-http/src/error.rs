//! Errors of the toolkit, the HTTP status classifier and the conversion into
//! [`idsync_core::Error`].
//!
//! The rules every provider gets from here:
//!
//! * timeouts, connection failures and resets, `408`, `429` and `5xx` are **temporary**;
//!   `Retry-After` (seconds or an HTTP date) is honoured;
//! * a bare HTTP status (no error body the provider recognises) and a body that is not JSON
//!   are **transport** errors ([`ErrorKind::Unavailable`]), never [`ErrorKind::NotFound`]: only
//!   the provider's explicit "not found" code may say an entity is gone;
//! * a body over the size cap is an error, not a truncated answer;
//! * no URL (and so no query-string secret) ever reaches an error message.

use std::time::Duration;

use idsync_core::{Error, ErrorKind, ErrorStatus};

/// How an error is handled: what went wrong, whether retrying may help, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether retrying may help.
    pub status: ErrorStatus,
    /// How long to wait before retrying, when known.
    pub retry_after: Option<Duration>,
}

impl Class {
    /// A class without a retry delay.
    pub const fn new(kind: ErrorKind, status: ErrorStatus) -> Self {
        Class {
            kind,
            status,
            retry_after: None,
        }
    }

    /// The same class with a retry delay.
    pub const fn after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

/// Classifies an HTTP status that came without an error body the provider recognises.
///
/// `429` is [`ErrorKind::RateLimited`], `408` and `5xx` [`ErrorKind::Unavailable`], both
/// temporary; `401`/`403` are authentication/permission errors; **every other status,
/// `404` included, is a permanent transport error** ([`ErrorKind::Unavailable`]): a bare
/// 404 comes from a wrong base URL or a proxy, it never means "the entity is gone".
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Class {
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    let c = match status {
        429 => Class::new(K::RateLimited, T),
        408 | 500..=599 => Class::new(K::Unavailable, T),
        401 => Class::new(K::Unauthenticated, P),
        403 => Class::new(K::PermissionDenied, P),
        _ => Class::new(K::Unavailable, P),
    };
    Class {
        retry_after: if c.status == T { retry_after } else { None },
        ..c
    }
}

/// Parses a `Retry-After` header value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// A provider error found in an answer body (on any HTTP status), already classified by
/// the provider's [`BodyCheck`](crate::BodyCheck).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The provider's most specific code (`"90018"`, not the umbrella `"88"` wrapping it);
    /// becomes [`Error::provider_code`].
    pub code: Option<String>,
    /// The provider's message.
    pub message: String,
    /// How to handle it.
    pub class: Class,
    /// The access token was rejected: refresh it and retry the call once.
    pub token_bad: bool,
    /// Extra context (request id, the wrapping code, ...). Never secrets.
    pub context: Vec<(String, String)>,
}

impl ApiError {
    /// An error with `code`, `message` and `class`.
    pub fn new(code: Option<String>, message: impl Into<String>, class: Class) -> Self {
        ApiError {
            code,
            message: message.into(),
            class,
            token_bad: false,
            context: Vec::new(),
        }
    }

    /// Marks the error as "the token is bad".
    pub fn token_bad(mut self) -> Self {
        self.token_bad = true;
        self
    }

    /// Adds a context entry.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
}

/// What went wrong with one HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The provider answered with an error body.
    #[error("{}{}", .0.message, .0.code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default())]
    Api(ApiError),
    /// The request did not complete (connect, timeout, reset, body read). The URL is
    /// stripped from the source.
    #[error("HTTP request failed: {what}")]
    Transport {
        /// Connect, timeout, ... in words.
        what: &'static str,
        /// The reqwest error, without its URL.
        #[source]
        source: reqwest::Error,
    },
    /// A non-2xx HTTP status without an error body the provider recognises.
    #[error("HTTP status {status} without a provider error body")]
    Status {
        /// The status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The body is not JSON.
    #[error("HTTP {status} with a body that is not JSON ({len} bytes)")]
    NotJson {
        /// The status.
        status: u16,
        /// Body length.
        len: usize,
    },
    /// The body is larger than the cap.
    #[error("answer body larger than the cap of {limit} bytes")]
    BodyTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The answer is JSON but not what was expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The client configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// No access token could be had (the token request failed); the error as it came.
    #[error("{0}")]
    Token(Error),
}

impl HttpError {
    /// A transport error from reqwest, with its URL removed.
    pub fn transport(e: reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "the answer body could not be read"
        } else if e.is_redirect() {
            "redirect refused"
        } else if e.is_request() {
            "the request failed (connection reset?)"
        } else {
            "transport error"
        };
        HttpError::Transport {
            what,
            source: e.without_url(),
        }
    }

    /// The classification of this error.
    pub fn class(&self) -> Class {
        use ErrorKind as K;
        use ErrorStatus::{Permanent as P, Temporary as T};
        match self {
            HttpError::Api(a) => a.class,
            HttpError::Transport { source, .. } => {
                if source.is_redirect() || source.is_builder() {
                    Class::new(K::Unavailable, P)
                } else if let Some(s) = source.status() {
                    classify_status(s.as_u16(), None)
                } else {
                    Class::new(K::Unavailable, T)
                }
            }
            HttpError::Status {
                status,
                retry_after,
            } => classify_status(*status, *retry_after),
            HttpError::NotJson { status, .. } => {
                if (200..300).contains(status) {
                    // a proxy or gateway page in place of the API: transient as a rule
                    Class::new(K::Unavailable, T)
                } else {
                    classify_status(*status, None)
                }
            }
            HttpError::BodyTooLarge { .. } => Class::new(K::Unavailable, P),
            HttpError::Decode(_) => Class::new(K::InvalidData, P),
            HttpError::Config(_) => Class::new(K::ConfigInvalid, P),
            HttpError::Token(e) => Class {
                kind: e.kind(),
                status: e.status(),
                retry_after: e.retry_after(),
            },
        }
    }

    /// True when the access token was rejected (refresh and retry once).
    pub fn is_token_error(&self) -> bool {
        matches!(self, HttpError::Api(a) if a.token_bad)
    }

    /// Converts into an [`idsync_core::Error`] of `provider`, naming `path` as the
    /// operation. The provider code is the specific code (API errors) or the HTTP status.
    pub fn into_error(self, provider: &str, path: &str) -> Error {
        if let HttpError::Token(e) = self {
            return e;
        }
        let class = self.class();
        let (message, code, context) = match &self {
            HttpError::Api(a) => (a.message.clone(), a.code.clone(), a.context.clone()),
            HttpError::Status { status, .. } | HttpError::NotJson { status, .. } => {
                (self.to_string(), Some(status.to_string()), Vec::new())
            }
            other => (other.to_string(), None, Vec::new()),
        };
        let mut out = Error::new(class.kind, message)
            .with_status(class.status)
            .with_provider(provider.to_owned())
            .with_operation(path.to_owned());
        if let Some(after) = class.retry_after {
            out = out.with_retry_after(after);
        }
        if let Some(code) = code {
            out = out.with_provider_code(code);
        }
        for (k, v) in context {
            out = out.with_context(k, v);
        }
        // A throttled or refused request provably did nothing: creates may be retried.
        let not_sent = class.kind == ErrorKind::RateLimited
            || matches!(&self, HttpError::Transport { source, .. } if source.is_connect());
        if not_sent {
            out = out.with_context("request_sent", "no");
        }
        match self {
            HttpError::Transport { source, .. } => out.with_source(source),
            _ => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};

    #[test]
    fn status_table() {
        let table = [
            (429, K::RateLimited, T),
            (408, K::Unavailable, T),
            (500, K::Unavailable, T),
            (502, K::Unavailable, T),
            (503, K::Unavailable, T),
            (401, K::Unauthenticated, P),
            (403, K::PermissionDenied, P),
            (404, K::Unavailable, P),
            (400, K::Unavailable, P),
            (410, K::Unavailable, P),
        ];
        for (s, k, st) in table {
            let c = classify_status(s, None);
            assert_eq!((c.kind, c.status), (k, st), "{s}");
            assert_ne!(c.kind, K::NotFound, "{s}");
        }
        let c = classify_status(429, Some(Duration::from_secs(7)));
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            classify_status(404, Some(Duration::from_secs(7))).retry_after,
            None
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        let d = parse_retry_after(&later.to_rfc2822()).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(25),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn conversion_keeps_the_specific_code() {
        let api = ApiError::new(
            Some("90018".into()),
            "too many",
            Class::new(K::RateLimited, T).after(Duration::from_secs(1)),
        )
        .with_context("wrapper_code", "88");
        let e = HttpError::Api(api).into_error("demo", "/x");
        assert_eq!(e.provider_code(), Some("90018"));
        assert_eq!(e.provider(), Some("demo"));
        assert_eq!(e.operation(), Some("/x"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "request_sent" && v == "no")
        );
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "wrapper_code" && v == "88")
        );

        let e = HttpError::Status {
            status: 404,
            retry_after: None,
        }
        .into_error("demo", "/y");
        assert_eq!(e.kind(), K::Unavailable);
        assert_eq!(e.provider_code(), Some("404"));
        let e = HttpError::NotJson {
            status: 200,
            len: 5,
        }
        .into_error("demo", "/y");
        assert_eq!(e.kind(), K::Unavailable);
        assert!(e.is_temporary());
    }
}
