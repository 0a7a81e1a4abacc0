//! DingTalk errors: the one `classify` function of its error codes, and the crate's own
//! configuration and crypto errors.

use std::time::Duration;

use idsync_core::{Error, ErrorKind, ErrorStatus};
use idsync_http::Class;

use crate::PROVIDER;

/// Errors of this crate's own checks (configuration, callback crypto). HTTP and API
/// errors come from [`idsync_http`] with DingTalk's [`classify`] applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DingTalkError {
    /// Callback signature or encryption problem.
    #[error("callback crypto: {0}")]
    Crypto(String),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// How a DingTalk error code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DtClass {
    /// Kind, status and retry delay.
    pub(crate) class: Class,
    /// The token is bad: refresh it and retry once.
    pub(crate) token_bad: bool,
}

const fn class(kind: ErrorKind, status: ErrorStatus, retry_after: Option<Duration>) -> DtClass {
    DtClass {
        class: Class {
            kind,
            status,
            retry_after,
        },
        token_bad: false,
    }
}

/// The one classification of DingTalk's legacy `errcode` / `sub_code` pairs
/// (`errcode 88` wraps the real code in `sub_code`, a string).
pub(crate) fn classify(errcode: i64, sub_code: Option<&str>) -> DtClass {
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
        40014 | 42001 | 40001 => DtClass {
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

/// DingTalk's explicit "user not found" code: the only answer that turns an event into
/// an account delete.
pub(crate) const USER_NOT_FOUND: &str = "60121";
/// DingTalk's explicit "department not found" code.
pub(crate) const DEPT_NOT_FOUND: &str = "60003";

impl From<DingTalkError> for Error {
    fn from(e: DingTalkError) -> Self {
        let kind = match &e {
            DingTalkError::Crypto(_) => ErrorKind::InvalidData,
            DingTalkError::Config(_) => ErrorKind::ConfigInvalid,
        };
        Error::new(kind, e.to_string())
            .with_status(ErrorStatus::Permanent)
            .with_provider(PROVIDER)
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
            assert_eq!(c.class.kind, *kind, "{code} {sub:?}");
            assert_eq!(c.class.status, *status, "{code} {sub:?}");
            assert_eq!(
                c.class.retry_after,
                after.map(Duration::from_secs),
                "{code} {sub:?}"
            );
            assert_eq!(c.token_bad, *token_bad, "{code} {sub:?}");
        }
    }

    #[test]
    fn conversion_keeps_the_specific_code_and_sub_code() {
        let body = serde_json::json!({"errcode": 88, "sub_code": "90018",
            "sub_msg": "too many", "errmsg": "ding talk error", "request_id": "r1"});
        let api = crate::client::check_body(200, body).unwrap_err();
        let e = idsync_http::HttpError::Api(api).into_error(PROVIDER, "/topapi/v2/user/list");
        assert_eq!(e.kind(), K::RateLimited);
        assert!(e.is_temporary());
        // the specific code, not the umbrella 88 (issue 11 point 5)
        assert_eq!(e.provider_code(), Some("90018"));
        assert_eq!(e.provider(), Some("dingtalk"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let has = |k: &str, v: &str| e.context().iter().any(|(a, b)| a == k && b == v);
        assert!(has("request_sent", "no"));
        assert!(has("sub_code", "90018"));
        assert!(has("wrapper_code", "88"));
        assert!(has("request_id", "r1"));
        for (body, code) in [
            (
                serde_json::json!({"errcode": 88, "sub_code": "60011"}),
                "60011",
            ),
            (
                serde_json::json!({"errcode": 88, "sub_code": "40014"}),
                "40014",
            ),
            (serde_json::json!({"errcode": 60011}), "60011"),
            (
                serde_json::json!({"errcode": 88, "sub_code": "isv.bad"}),
                "88",
            ),
        ] {
            let api = crate::client::check_body(200, body).unwrap_err();
            assert_eq!(api.code.as_deref(), Some(code));
        }
        let ban = crate::client::check_body(200, serde_json::json!({"status": 1111, "wait": 5}))
            .unwrap_err();
        let ban = idsync_http::HttpError::Api(ban).into_error(PROVIDER, "/x");
        assert_eq!(ban.retry_after(), Some(Duration::from_secs(300)));
        assert!(ban.is_temporary());
    }
}
