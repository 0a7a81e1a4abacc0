//! Lark errors: the one [`classify`] table of `code`s (with the HTTP status), the body
//! check every answer goes through, and the crate's private error enum.
//!
//! Lark puts errors in the HTTP status **and** the body: `{"code": <int>, "msg": "…"}` on
//! 400/403/404/429/5xx, and on HTTP 200 for the token endpoint's bad credentials. The
//! client branches on `code`; the status only decides codes the table does not know
//! (5xx and 429 are temporary). A body without `code` (a plain-text 404 from a wrong path
//! or a proxy) is a transport error of the toolkit, never "not found".

use std::time::Duration;

use idsync_core::{Error, ErrorKind, ErrorStatus};
use idsync_http::{ApiError, Class as HttpClass, int_of};
use serde_json::Value;

use crate::PROVIDER;

/// What can go wrong inside this crate besides API answers (those are the toolkit's
/// [`ApiError`]s, classified by [`classify`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LarkError {
    /// Event signature, encryption, token or replay problem.
    #[error("event callback: {0}")]
    Callback(String),
}

impl From<LarkError> for Error {
    fn from(e: LarkError) -> Self {
        Error::new(ErrorKind::PermissionDenied, e.to_string())
            .with_status(ErrorStatus::Permanent)
            .with_provider(PROVIDER)
    }
}

/// Lark's default wait on a throttle when `x-ogw-ratelimit-reset` is not known.
pub(crate) const THROTTLE_WAIT: Duration = Duration::from_secs(1);
/// Wait before retrying a write that hit a directory lock (44025 / 43030 / 43024).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How a Lark `code` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// What went wrong.
    pub(crate) kind: ErrorKind,
    /// Whether retrying may help.
    pub(crate) status: ErrorStatus,
    /// How long to wait before retrying.
    pub(crate) wait: Option<Duration>,
    /// The token was rejected: refresh it and retry once.
    pub(crate) token_bad: bool,
    /// What the operator has to do, for permission and configuration errors.
    pub(crate) hint: Option<&'static str>,
}

const fn class(kind: ErrorKind, status: ErrorStatus) -> Class {
    Class {
        kind,
        status,
        wait: None,
        token_bad: false,
        hint: None,
    }
}

const fn hinted(kind: ErrorKind, hint: &'static str) -> Class {
    Class {
        hint: Some(hint),
        ..class(kind, ErrorStatus::Permanent)
    }
}

/// Department not found.
pub(crate) const DEPT_NOT_FOUND: i64 = 40015;
/// User id invalid (no such user).
pub(crate) const USER_NOT_FOUND: i64 = 41012;

/// The one classification of Lark codes, with the HTTP status for codes it does not know.
pub(crate) fn classify(http_status: u16, code: i64) -> Class {
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    match code {
        // tenant / app access token invalid, missing (no `Bearer `) or malformed
        99991663 | 99991664 | 99991661 | 99991671 => Class {
            token_bad: true,
            ..class(K::Unauthenticated, P)
        },
        // user access tokens: not used by an app sync
        99991668 | 99991677 => class(K::Unauthenticated, P),
        10014 | 10003 => hinted(
            K::Unauthenticated,
            "the app_id or app_secret is wrong: copy both from the developer console (凭证与基础信息 / Credentials & Basic Info)",
        ),
        99991400 => Class {
            wait: Some(THROTTLE_WAIT),
            ..class(K::RateLimited, T)
        },
        40003 => Class {
            wait: Some(THROTTLE_WAIT),
            ..class(K::Unavailable, T)
        },
        // user / department / department-structure lock: "wait some seconds and retry"
        44025 | 43030 | 43024 => Class {
            wait: Some(LOCK_WAIT),
            ..class(K::Conflict, T)
        },
        40004 => hinted(
            K::PermissionDenied,
            "no authority over this department: add it to the app's contact scope (通讯录权限范围) and grant contact:department.base:readonly (contact:contact for writes)",
        ),
        41050 => hinted(
            K::PermissionDenied,
            "no authority over this user: widen the app's contact scope (通讯录权限范围) and grant contact:user.base:readonly (contact:contact for writes)",
        ),
        99991672 => hinted(
            K::PermissionDenied,
            "the app lacks an API scope: enable the scope named in the message (e.g. contact:contact.base:readonly or contact:contact) in the developer console and publish a new app version",
        ),
        DEPT_NOT_FOUND | USER_NOT_FOUND => class(K::NotFound, P),
        // mobile / email / user_id exist, user exists, department name / id exist
        41001 | 41002 | 41011 | 41053 | 43022 | 43007 | 43000 => class(K::AlreadyExists, P),
        43011 => hinted(
            K::Conflict,
            "the department still has members: move or remove them first",
        ),
        43012 => hinted(
            K::Conflict,
            "the department still has sub-departments: move or remove them first",
        ),
        44037 => hinted(
            K::Conflict,
            "the tenant manager cannot be deleted: transfer the role first",
        ),
        40002 => hinted(
            K::InvalidData,
            "the root department (0) is the tenant itself and cannot be edited or deleted",
        ),
        // page size too large, bad page token
        40011 | 40012 => class(K::InvalidData, P),
        // parent missing, too deep, orders without department_ids, field validation
        44101 | 43019 | 44002 | 99992402 => class(K::InvalidData, P),
        _ => match http_status {
            429 => Class {
                wait: Some(THROTTLE_WAIT),
                ..class(K::RateLimited, T)
            },
            500..=599 => class(K::Unavailable, T),
            _ => class(K::Unexpected, P),
        },
    }
}

/// The error-body check of every Lark answer: `code != 0` on any HTTP status becomes a
/// classified [`ApiError`]; JSON without a `code` is left to the toolkit (on a non-2xx
/// status it is a transport error).
pub(crate) fn check_body(http_status: u16, body: Value) -> std::result::Result<Value, ApiError> {
    let Some(code) = body.get("code").and_then(int_of) else {
        return Ok(body);
    };
    if code == 0 {
        return Ok(body);
    }
    let msg = body.get("msg").and_then(Value::as_str).unwrap_or_default();
    Err(api_error(http_status, code, msg, log_id(&body)))
}

fn log_id(body: &Value) -> Option<String> {
    body.pointer("/error/log_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The classified error of one `code`.
pub(crate) fn api_error(
    http_status: u16,
    code: i64,
    msg: &str,
    log_id: Option<String>,
) -> ApiError {
    let c = classify(http_status, code);
    let message = match c.hint {
        Some(hint) => format!("Lark code {code} (HTTP {http_status}): {msg} — {hint}"),
        None => format!("Lark code {code} (HTTP {http_status}): {msg}"),
    };
    let mut class = HttpClass::new(c.kind, c.status);
    if let Some(after) = c.wait {
        class = class.after(after);
    }
    let mut e = ApiError::new(Some(code.to_string()), message, class)
        .with_context("http_status", http_status.to_string());
    if let Some(id) = log_id {
        e = e.with_context("log_id", id);
    }
    if c.token_bad { e.token_bad() } else { e }
}

/// True when `e` carries Lark's `code`.
pub(crate) fn has_code(e: &Error, code: i64) -> bool {
    e.provider_code() == Some(code.to_string().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    use idsync_http::HttpError;

    #[test]
    fn classify_table() {
        let s1 = Some(Duration::from_secs(1));
        let s2 = Some(Duration::from_secs(2));
        // (http, code, kind, status, wait, token_bad, hint must contain)
        type Row = (
            u16,
            i64,
            ErrorKind,
            ErrorStatus,
            Option<Duration>,
            bool,
            Option<&'static str>,
        );
        let table: &[Row] = &[
            (400, 99991663, K::Unauthenticated, P, None, true, None),
            (400, 99991664, K::Unauthenticated, P, None, true, None),
            (400, 99991661, K::Unauthenticated, P, None, true, None),
            (400, 99991671, K::Unauthenticated, P, None, true, None),
            (400, 99991668, K::Unauthenticated, P, None, false, None),
            (
                200,
                10014,
                K::Unauthenticated,
                P,
                None,
                false,
                Some("app_secret"),
            ),
            (
                200,
                10003,
                K::Unauthenticated,
                P,
                None,
                false,
                Some("app_id"),
            ),
            (429, 99991400, K::RateLimited, T, s1, false, None),
            (400, 99991400, K::RateLimited, T, s1, false, None),
            (500, 40003, K::Unavailable, T, s1, false, None),
            (400, 44025, K::Conflict, T, s2, false, None),
            (400, 43030, K::Conflict, T, s2, false, None),
            (400, 43024, K::Conflict, T, s2, false, None),
            (
                403,
                40004,
                K::PermissionDenied,
                P,
                None,
                false,
                Some("contact:department"),
            ),
            (
                403,
                41050,
                K::PermissionDenied,
                P,
                None,
                false,
                Some("contact:user"),
            ),
            (
                403,
                99991672,
                K::PermissionDenied,
                P,
                None,
                false,
                Some("scope"),
            ),
            (400, 40015, K::NotFound, P, None, false, None),
            (400, 41012, K::NotFound, P, None, false, None),
            (400, 41001, K::AlreadyExists, P, None, false, None),
            (400, 41002, K::AlreadyExists, P, None, false, None),
            (400, 41011, K::AlreadyExists, P, None, false, None),
            (409, 41053, K::AlreadyExists, P, None, false, None),
            (400, 43022, K::AlreadyExists, P, None, false, None),
            (400, 43007, K::AlreadyExists, P, None, false, None),
            (400, 43011, K::Conflict, P, None, false, Some("members")),
            (
                400,
                43012,
                K::Conflict,
                P,
                None,
                false,
                Some("sub-departments"),
            ),
            (400, 40002, K::InvalidData, P, None, false, Some("root")),
            (400, 40011, K::InvalidData, P, None, false, None),
            (400, 40012, K::InvalidData, P, None, false, None),
            (503, 1234567, K::Unavailable, T, None, false, None),
            (429, 1234567, K::RateLimited, T, s1, false, None),
            (400, 1234567, K::Unexpected, P, None, false, None),
        ];
        for (http, code, kind, status, wait, token_bad, hint) in table {
            let c = classify(*http, *code);
            assert_eq!(c.kind, *kind, "{code}");
            assert_eq!(c.status, *status, "{code}");
            assert_eq!(c.wait, *wait, "{code}");
            assert_eq!(c.token_bad, *token_bad, "{code}");
            match hint {
                Some(h) => assert!(
                    c.hint.is_some_and(|x| x.contains(h)),
                    "{code}: {:?}",
                    c.hint
                ),
                None => assert_eq!(c.hint, None, "{code}"),
            }
        }
    }

    #[test]
    fn bodies_on_any_status() {
        let body = serde_json::json!({"code": 99991400, "msg": "request trigger frequency limit",
            "error": {"log_id": "20240520-abc"}});
        let api = check_body(429, body).unwrap_err();
        let e = HttpError::Api(api).into_error(PROVIDER, "/contact/v3/users/find_by_department");
        assert_eq!(e.kind(), K::RateLimited);
        assert!(e.is_temporary());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(e.provider_code(), Some("99991400"));
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "log_id" && v == "20240520-abc")
        );
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "request_sent" && v == "no")
        );
        // bad credentials on HTTP 200
        let api = check_body(
            200,
            serde_json::json!({"code": 10014, "msg": "app secret invalid"}),
        )
        .unwrap_err();
        assert_eq!(api.class.kind, K::Unauthenticated);
        assert!(!api.token_bad);
        let ok = serde_json::json!({"code": 0, "msg": "success", "data": {}});
        assert_eq!(check_body(200, ok.clone()), Ok(ok));
        // JSON without a code is the toolkit's to judge
        let other = serde_json::json!({"error": "x"});
        assert_eq!(check_body(404, other.clone()), Ok(other));
        assert!(
            check_body(400, serde_json::json!({"code": 99991663, "msg": "x"}))
                .unwrap_err()
                .token_bad
        );
        assert!(has_code(
            &HttpError::Api(api_error(400, 41012, "invalid", None)).into_error(PROVIDER, "/x"),
            41012
        ));
    }

    #[test]
    fn plain_text_404_is_a_transport_error() {
        let e = HttpError::Status {
            status: 404,
            retry_after: None,
        }
        .into_error(PROVIDER, "/x");
        assert_eq!(e.kind(), K::Unavailable);
        assert_ne!(e.kind(), K::NotFound);
    }
}
