//! DingTalk errors: the private error enum, the one `classify` function, and the
//! conversion into [`idsync_core::Error`].

use std::time::Duration;

use idsync_core::{Error, ErrorKind, ErrorStatus};

use crate::PROVIDER;

/// Everything that can go wrong inside this crate. Converted once into
/// [`idsync_core::Error`]; never shown with secrets (URLs are stripped from HTTP errors
/// because the legacy API carries the access token in the query string).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DingTalkError {
    /// An answer with `errcode != 0` (HTTP 200 or not).
    #[error("DingTalk errcode {errcode}{}: {errmsg}", sub_code.as_deref().map(|s| format!(" (sub_code {s})")).unwrap_or_default())]
    Api {
        errcode: i64,
        sub_code: Option<String>,
        errmsg: String,
        request_id: Option<String>,
    },
    /// The request did not complete (connect, timeout, body read).
    #[error("HTTP request failed")]
    Transport(#[source] reqwest::Error),
    /// A non-2xx HTTP status without a DingTalk error body.
    #[error("HTTP status {status}")]
    Status { status: u16 },
    /// The IP-level ban answer `{"status":1111,"wait":5,...}`.
    #[error("IP banned by DingTalk for {wait_minutes} minutes")]
    IpBanned { wait_minutes: u64 },
    /// The answer could not be understood.
    #[error("unexpected DingTalk answer: {0}")]
    Decode(String),
    /// Callback signature or encryption problem.
    #[error("callback crypto: {0}")]
    Crypto(String),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// How a DingTalk error code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// What went wrong.
    pub(crate) kind: ErrorKind,
    /// Whether retrying may help.
    pub(crate) status: ErrorStatus,
    /// How long to wait before retrying, when the provider says so.
    pub(crate) retry_after: Option<Duration>,
    /// The token is bad: refresh it and retry once.
    pub(crate) token_bad: bool,
}

const fn class(kind: ErrorKind, status: ErrorStatus, retry_after: Option<Duration>) -> Class {
    Class {
        kind,
        status,
        retry_after,
        token_bad: false,
    }
}

/// The one classification of DingTalk's legacy `errcode` / `sub_code` pairs
/// (`errcode 88` wraps the real code in `sub_code`, a string).
pub(crate) fn classify(errcode: i64, sub_code: Option<&str>) -> Class {
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    // `88` is a wrapper: branch on its sub_code, never on 88 alone.
    let wrapped = errcode == 88;
    let code = if wrapped {
        match sub_code.and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(c) => c,
            None => return class(K::Unexpected, P, None),
        }
    } else {
        errcode
    };
    match code {
        // token invalid / expired: the client refreshes once; after that it is permanent.
        40014 | 42001 | 40001 => Class {
            token_bad: true,
            ..class(K::Unauthenticated, P, None)
        },
        // `88/40000` is "access_token is blank"; plain 40000 is 参数错误.
        40000 if wrapped => class(K::Unauthenticated, P, None),
        // bad AppKey/AppSecret, bad corp id / secret
        40096 | 40089 => class(K::Unauthenticated, P, None),
        // per-app per-API QPS limit, per-API platform limit: wait ~1 s.
        90018 | 90002 => class(K::RateLimited, T, Some(Duration::from_secs(1))),
        // monthly call quota of a free org: it does not come back within a retry window.
        90020 => class(K::RateLimited, P, None),
        // IP ban answer: `wait` is 5 minutes.
        1111 => class(K::RateLimited, T, Some(Duration::from_secs(300))),
        // 系统繁忙
        -1 => class(K::Unavailable, T, None),
        // no API permission, dept out of the app's scope, needs authorization
        60011 | 50004 | 43007 => class(K::PermissionDenied, P, None),
        // user not found, dept not found, bad userid
        60121 | 60003 | 33012 => class(K::NotFound, P, None),
        // mobile / userid / dept name already exist
        60104 | 60102 | 60008 => class(K::AlreadyExists, P, None),
        // dept still has members / sub-departments
        60005 | 60006 => class(K::Conflict, P, None),
        // bad parameters
        40000 | 400002 | 40035 | 40069 | 60001 | 60002 => class(K::InvalidData, P, None),
        _ => class(K::Unexpected, P, None),
    }
}

/// HTTP status classification for answers without a DingTalk body.
pub(crate) fn classify_http(status: u16) -> Class {
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    match status {
        429 => class(K::RateLimited, T, None),
        401 => class(K::Unauthenticated, P, None),
        403 => class(K::PermissionDenied, P, None),
        404 => class(K::NotFound, P, None),
        408 | 500..=599 => class(K::Unavailable, T, None),
        _ => class(K::Unexpected, P, None),
    }
}

impl DingTalkError {
    pub(crate) fn api_class(&self) -> Option<Class> {
        match self {
            DingTalkError::Api {
                errcode, sub_code, ..
            } => Some(classify(*errcode, sub_code.as_deref())),
            _ => None,
        }
    }

    /// True when the token should be refreshed and the call retried once.
    pub(crate) fn is_token_error(&self) -> bool {
        self.api_class().is_some_and(|c| c.token_bad)
    }
}

impl From<DingTalkError> for Error {
    fn from(e: DingTalkError) -> Self {
        let (class, code, ctx) = match &e {
            DingTalkError::Api {
                errcode,
                sub_code,
                request_id,
                ..
            } => {
                let mut ctx = Vec::new();
                if let Some(s) = sub_code {
                    ctx.push(("sub_code", s.clone()));
                }
                if let Some(r) = request_id {
                    ctx.push(("request_id", r.clone()));
                }
                (
                    classify(*errcode, sub_code.as_deref()),
                    Some(errcode.to_string()),
                    ctx,
                )
            }
            DingTalkError::Transport(t) => {
                let c = if t.is_timeout() || t.is_connect() || t.is_request() || t.is_body() {
                    class(ErrorKind::Unavailable, ErrorStatus::Temporary, None)
                } else if let Some(s) = t.status() {
                    classify_http(s.as_u16())
                } else {
                    class(ErrorKind::Unexpected, ErrorStatus::Permanent, None)
                };
                (c, None, Vec::new())
            }
            DingTalkError::Status { status } => {
                (classify_http(*status), Some(status.to_string()), Vec::new())
            }
            DingTalkError::IpBanned { wait_minutes } => (
                Class {
                    retry_after: Some(Duration::from_secs(wait_minutes.saturating_mul(60))),
                    ..classify(1111, None)
                },
                Some("1111".to_owned()),
                Vec::new(),
            ),
            DingTalkError::Decode(_) => (
                class(ErrorKind::InvalidData, ErrorStatus::Permanent, None),
                None,
                Vec::new(),
            ),
            DingTalkError::Crypto(_) => (
                class(ErrorKind::InvalidData, ErrorStatus::Permanent, None),
                None,
                Vec::new(),
            ),
            DingTalkError::Config(_) => (
                class(ErrorKind::ConfigInvalid, ErrorStatus::Permanent, None),
                None,
                Vec::new(),
            ),
        };
        let message = match &e {
            DingTalkError::Api { errmsg, .. } => errmsg.clone(),
            other => other.to_string(),
        };
        let mut out = Error::new(class.kind, message)
            .with_status(class.status)
            .with_provider(PROVIDER);
        if let Some(after) = class.retry_after {
            out = out.with_retry_after(after);
        }
        if let Some(code) = code {
            out = out.with_provider_code(code);
        }
        for (k, v) in ctx {
            out = out.with_context(k, v);
        }
        // A throttled or refused request provably did nothing: creates may be retried.
        let not_sent = class.kind == ErrorKind::RateLimited
            || matches!(&e, DingTalkError::Transport(t) if t.is_connect());
        if not_sent {
            out = out.with_context("request_sent", "no");
        }
        match e {
            DingTalkError::Transport(t) => out.with_source(t.without_url()),
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
    fn classify_table() {
        // (errcode, sub_code, kind, status, retry_after secs, token_bad)
        type Row = (
            i64,
            Option<&'static str>,
            ErrorKind,
            ErrorStatus,
            Option<u64>,
            bool,
        );
        let table: &[Row] = &[
            (88, Some("40014"), K::Unauthenticated, P, None, true),
            (88, Some("42001"), K::Unauthenticated, P, None, true),
            (88, Some("40001"), K::Unauthenticated, P, None, true),
            (40014, None, K::Unauthenticated, P, None, true),
            (42001, None, K::Unauthenticated, P, None, true),
            (40001, None, K::Unauthenticated, P, None, true),
            (88, Some("40000"), K::Unauthenticated, P, None, false),
            (40000, None, K::InvalidData, P, None, false),
            (40096, None, K::Unauthenticated, P, None, false),
            (88, Some("90018"), K::RateLimited, T, Some(1), false),
            (90018, None, K::RateLimited, T, Some(1), false),
            (90002, None, K::RateLimited, T, Some(1), false),
            (88, Some("90002"), K::RateLimited, T, Some(1), false),
            (90020, None, K::RateLimited, P, None, false),
            (-1, None, K::Unavailable, T, None, false),
            (88, Some("60011"), K::PermissionDenied, P, None, false),
            (60011, None, K::PermissionDenied, P, None, false),
            (50004, None, K::PermissionDenied, P, None, false),
            (43007, None, K::PermissionDenied, P, None, false),
            (60121, None, K::NotFound, P, None, false),
            (60003, None, K::NotFound, P, None, false),
            (33012, None, K::NotFound, P, None, false),
            (60104, None, K::AlreadyExists, P, None, false),
            (60102, None, K::AlreadyExists, P, None, false),
            (60008, None, K::AlreadyExists, P, None, false),
            (60005, None, K::Conflict, P, None, false),
            (400002, None, K::InvalidData, P, None, false),
            (40035, None, K::InvalidData, P, None, false),
            (40069, None, K::InvalidData, P, None, false),
            (88, None, K::Unexpected, P, None, false),
            (88, Some("junk"), K::Unexpected, P, None, false),
            (123456, None, K::Unexpected, P, None, false),
        ];
        for (code, sub, kind, status, after, token_bad) in table {
            let c = classify(*code, *sub);
            assert_eq!(c.kind, *kind, "{code} {sub:?}");
            assert_eq!(c.status, *status, "{code} {sub:?}");
            assert_eq!(
                c.retry_after,
                after.map(Duration::from_secs),
                "{code} {sub:?}"
            );
            assert_eq!(c.token_bad, *token_bad, "{code} {sub:?}");
        }
    }

    #[test]
    fn http_table() {
        let table = [
            (429, K::RateLimited, T),
            (500, K::Unavailable, T),
            (503, K::Unavailable, T),
            (401, K::Unauthenticated, P),
            (403, K::PermissionDenied, P),
            (404, K::NotFound, P),
            (400, K::Unexpected, P),
        ];
        for (s, k, st) in table {
            let c = classify_http(s);
            assert_eq!((c.kind, c.status), (k, st), "{s}");
        }
    }

    #[test]
    fn conversion_keeps_errcode_and_sub_code() {
        let e: Error = DingTalkError::Api {
            errcode: 88,
            sub_code: Some("90018".into()),
            errmsg: "too many".into(),
            request_id: Some("r1".into()),
        }
        .into();
        assert_eq!(e.kind(), K::RateLimited);
        assert!(e.is_temporary());
        assert_eq!(e.provider_code(), Some("88"));
        assert_eq!(e.provider(), Some("dingtalk"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "request_sent" && v == "no")
        );
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "sub_code" && v == "90018")
        );
        let ban: Error = DingTalkError::IpBanned { wait_minutes: 5 }.into();
        assert_eq!(ban.retry_after(), Some(Duration::from_secs(300)));
        assert!(ban.is_temporary());
    }
}
