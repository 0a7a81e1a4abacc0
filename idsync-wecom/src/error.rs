//! WeCom errors: the private error enum, the one [`classify`] table of `errcode`s, and the
//! conversion into [`idsync_core::Error`].
//!
//! WeCom answers HTTP 200 for everything; the `errcode` of the body is what the client
//! branches on (the `errmsg` carries a hint and the caller's IP, and is kept only as text).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idsync_core::{Error, ErrorKind, ErrorStatus};
use idsync_http::{ApiError, Class as HttpClass, int_of};
use serde_json::Value;

use crate::PROVIDER;

/// What can go wrong inside this crate besides API answers (those are
/// [`ApiError`]s of the toolkit, classified by [`classify`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WeComError {
    /// The answer could not be understood.
    #[error("unexpected WeCom answer: {0}")]
    Decode(String),
    /// Callback signature, encryption or replay problem.
    #[error("callback: {0}")]
    Crypto(String),
}

/// How long to wait before a retry may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Nothing the provider says.
    None,
    /// A fixed back-off.
    For(Duration),
    /// `45009`: the ban lasts until the current rate window (a minute) ends.
    UntilWindowEnds,
}

/// How a WeCom `errcode` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// What went wrong.
    pub(crate) kind: ErrorKind,
    /// Whether retrying may help.
    pub(crate) status: ErrorStatus,
    /// How long to wait before retrying.
    pub(crate) wait: Wait,
    /// The token is bad: refresh it and retry once.
    pub(crate) token_bad: bool,
    /// What the operator has to configure, for permission errors.
    pub(crate) hint: Option<&'static str>,
}

const fn class(kind: ErrorKind, status: ErrorStatus) -> Class {
    Class {
        kind,
        status,
        wait: Wait::None,
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

/// The one classification of WeCom `errcode`s (doc 90313, rate limits doc 90312).
pub(crate) fn classify(errcode: i64) -> Class {
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    match errcode {
        // invalid / expired / missing access_token: refresh and retry once.
        40014 | 42001 | 41001 => Class {
            token_bad: true,
            ..class(K::Unauthenticated, P)
        },
        40013 => hinted(
            K::Unauthenticated,
            "the corpid is wrong: copy the CorpID from 我的企业 → 企业信息",
        ),
        40001 => hinted(
            K::Unauthenticated,
            "the secret is wrong: copy it again from the app or 通讯录同步 page (several wrong tries ban the IP for an hour)",
        ),
        // per-minute / per-hour frequency limit: banned until the window ends.
        45009 => Class {
            wait: Wait::UntilWindowEnds,
            ..class(K::RateLimited, T)
        },
        // too many concurrent calls.
        45033 => Class {
            wait: Wait::For(Duration::from_secs(1)),
            ..class(K::RateLimited, T)
        },
        // system busy.
        -1 => Class {
            wait: Wait::For(Duration::from_secs(1)),
            ..class(K::Unavailable, T)
        },
        60011 => hinted(
            K::PermissionDenied,
            "no privilege: writes need the contact-sync (通讯录同步) secret, reads need the entity in the app's visible range",
        ),
        60020 => hinted(
            K::PermissionDenied,
            "this server's IP is not trusted: add it to the app's trusted IP list (企业可信IP)",
        ),
        48009 => hinted(
            K::PermissionDenied,
            "contact-sync APIs are refused from a new IP: add the IP to the trusted IP list, and keep use_department_list off (department/simplelist + user/list_id still work)",
        ),
        48002 => hinted(
            K::PermissionDenied,
            "the API is forbidden for this secret: enable API access for the app or use the contact-sync secret",
        ),
        // user / department not found, invalid party id, no member with that mobile / email
        60111 | 60003 | 60123 | 46004 => class(K::NotFound, P),
        // userid / mobile / email / department name already exist
        60102 | 60104 | 60106 | 60008 => class(K::AlreadyExists, P),
        // department still has members / sub-departments
        60005 | 60006 => class(K::Conflict, P),
        // parent department not found, invalid parameters, invalid userid / name / mobile / email
        60004 | 40058 | 40003 | 60112 | 60103 | 60105 | 60009 | 60129 => class(K::InvalidData, P),
        _ => class(K::Unexpected, P),
    }
}

impl Class {
    /// The wait as a duration at `now`. The `45009` window is a minute of wall-clock time
    /// by default (`window` lets tests use a shorter one).
    pub(crate) fn retry_after(&self, now: SystemTime, window: Duration) -> Option<Duration> {
        match self.wait {
            Wait::None => None,
            Wait::For(d) => Some(d),
            Wait::UntilWindowEnds => Some(until_window_ends(now, window)),
        }
    }
}

/// Time from `now` to the end of the current `window` (aligned to the Unix epoch, as
/// WeCom's minute windows are), at least 1 ms.
pub(crate) fn until_window_ends(now: SystemTime, window: Duration) -> Duration {
    let window_ms = window.as_millis().max(1);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let left = window_ms - now_ms % window_ms;
    Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX).max(1))
}

/// The error-body check of every WeCom answer: `errcode != 0` (on HTTP 200, as WeCom
/// answers everything) becomes a classified [`ApiError`]; the `45009` wait is measured
/// from `now` to the end of the current `window`.
pub(crate) fn check_body(
    body: Value,
    now: SystemTime,
    window: Duration,
) -> std::result::Result<Value, ApiError> {
    let errcode = body.get("errcode").and_then(int_of).unwrap_or(0);
    if errcode == 0 {
        return Ok(body);
    }
    let errmsg = body
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(api_error(errcode, errmsg, now, window))
}

/// The classified error of one `errcode`.
pub(crate) fn api_error(errcode: i64, errmsg: &str, now: SystemTime, window: Duration) -> ApiError {
    let c = classify(errcode);
    let message = match c.hint {
        Some(hint) => format!("WeCom errcode {errcode}: {errmsg} — {hint}"),
        None => format!("WeCom errcode {errcode}: {errmsg}"),
    };
    let mut class = HttpClass::new(c.kind, c.status);
    if let Some(after) = c.retry_after(now, window) {
        class = class.after(after);
    }
    let e = ApiError::new(Some(errcode.to_string()), message, class);
    if c.token_bad { e.token_bad() } else { e }
}

/// True when `e` carries WeCom's `errcode`.
pub(crate) fn has_code(e: &Error, errcode: i64) -> bool {
    e.provider_code() == Some(errcode.to_string().as_str())
}

impl From<WeComError> for Error {
    fn from(e: WeComError) -> Self {
        Error::new(ErrorKind::InvalidData, e.to_string())
            .with_status(ErrorStatus::Permanent)
            .with_provider(PROVIDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind as K;
    use ErrorStatus::{Permanent as P, Temporary as T};
    use idsync_http::HttpError;

    #[test]
    fn classify_table() {
        // (errcode, kind, status, wait, token_bad, hint must contain)
        type Row = (
            i64,
            ErrorKind,
            ErrorStatus,
            Wait,
            bool,
            Option<&'static str>,
        );
        let table: &[Row] = &[
            (40014, K::Unauthenticated, P, Wait::None, true, None),
            (42001, K::Unauthenticated, P, Wait::None, true, None),
            (41001, K::Unauthenticated, P, Wait::None, true, None),
            (
                40013,
                K::Unauthenticated,
                P,
                Wait::None,
                false,
                Some("CorpID"),
            ),
            (
                40001,
                K::Unauthenticated,
                P,
                Wait::None,
                false,
                Some("secret"),
            ),
            (45009, K::RateLimited, T, Wait::UntilWindowEnds, false, None),
            (
                45033,
                K::RateLimited,
                T,
                Wait::For(Duration::from_secs(1)),
                false,
                None,
            ),
            (
                -1,
                K::Unavailable,
                T,
                Wait::For(Duration::from_secs(1)),
                false,
                None,
            ),
            (
                60011,
                K::PermissionDenied,
                P,
                Wait::None,
                false,
                Some("contact-sync"),
            ),
            (
                60020,
                K::PermissionDenied,
                P,
                Wait::None,
                false,
                Some("trusted IP list"),
            ),
            (
                48009,
                K::PermissionDenied,
                P,
                Wait::None,
                false,
                Some("trusted IP list"),
            ),
            (
                48002,
                K::PermissionDenied,
                P,
                Wait::None,
                false,
                Some("API"),
            ),
            (60111, K::NotFound, P, Wait::None, false, None),
            (60003, K::NotFound, P, Wait::None, false, None),
            (60123, K::NotFound, P, Wait::None, false, None),
            (46004, K::NotFound, P, Wait::None, false, None),
            (60102, K::AlreadyExists, P, Wait::None, false, None),
            (60104, K::AlreadyExists, P, Wait::None, false, None),
            (60106, K::AlreadyExists, P, Wait::None, false, None),
            (60008, K::AlreadyExists, P, Wait::None, false, None),
            (60005, K::Conflict, P, Wait::None, false, None),
            (60006, K::Conflict, P, Wait::None, false, None),
            (60004, K::InvalidData, P, Wait::None, false, None),
            (40058, K::InvalidData, P, Wait::None, false, None),
            (123456, K::Unexpected, P, Wait::None, false, None),
        ];
        for (code, kind, status, wait, token_bad, hint) in table {
            let c = classify(*code);
            assert_eq!(c.kind, *kind, "{code}");
            assert_eq!(c.status, *status, "{code}");
            assert_eq!(c.wait, *wait, "{code}");
            assert_eq!(c.token_bad, *token_bad, "{code}");
            match hint {
                Some(h) => assert!(c.hint.is_some_and(|x| x.contains(h)), "{code}"),
                None => assert_eq!(c.hint, None, "{code}"),
            }
        }
    }

    #[test]
    fn throttle_waits_until_the_window_ends() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let minute = Duration::from_secs(60);
        // 1_700_000_000 s is 20 s into a minute
        assert_eq!(
            until_window_ends(at(1_700_000_000_000), minute),
            Duration::from_secs(40)
        );
        assert_eq!(
            until_window_ends(at(1_700_000_039_500), minute),
            Duration::from_millis(500)
        );
        let e = HttpError::Api(api_error(
            45009,
            "api freq out of limit",
            at(1_700_000_030_000),
            minute,
        ))
        .into_error(PROVIDER, "/user/get");
        assert_eq!(e.kind(), K::RateLimited);
        assert!(e.is_temporary());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(10)));
        assert_eq!(e.provider_code(), Some("45009"));
        assert!(
            e.context()
                .iter()
                .any(|(k, v)| k == "request_sent" && v == "no")
        );
        assert!(api_error(42001, "expired", at(0), minute).token_bad);
        assert!(!api_error(60111, "no", at(0), minute).token_bad);
    }

    #[test]
    fn forbidden_says_what_to_configure_and_names_the_path() {
        let body = serde_json::json!({
            "errcode": 60020,
            "errmsg": "not allow to access from your ip, hint: [1718003600_21_x], from ip: 203.0.113.10"
        });
        let api = check_body(body, SystemTime::now(), Duration::from_secs(60)).unwrap_err();
        let e = HttpError::Api(api).into_error(PROVIDER, "/department/simplelist");
        assert_eq!(e.kind(), K::PermissionDenied);
        assert!(!e.is_temporary());
        assert!(e.message().contains("trusted IP list"), "{}", e.message());
        assert_eq!(e.operation(), Some("/department/simplelist"));
        assert_eq!(e.provider_code(), Some("60020"));
        let ok = serde_json::json!({"errcode": 0, "errmsg": "ok", "x": 1});
        assert_eq!(
            check_body(ok.clone(), SystemTime::now(), Duration::from_secs(60)),
            Ok(ok)
        );
        assert_eq!(e.provider(), Some("wecom"));
    }
}
