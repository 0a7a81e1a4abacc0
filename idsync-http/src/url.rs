//! Base-URL checks and URL redaction.

use reqwest::Url;

use crate::error::HttpError;

/// Query parameters whose values are secrets whatever the provider: always redacted by
/// [`redact_url`].
pub const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "accesstoken",
    "appsecret",
    "app_secret",
    "corpsecret",
    "secret",
    "client_secret",
    "clientsecret",
    "ticket",
    "token",
    "password",
    "code",
];

/// True when `host` is the loopback interface (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Parses and checks a provider base URL.
///
/// `https://` is required, except that `http://` is accepted for a loopback host (a local
/// fake) or when `allow_plaintext` is set. The error says why, without echoing secrets
/// (a base URL carries none; its query and user info are refused).
pub fn check_base_url(base_url: &str, allow_plaintext: bool) -> Result<Url, HttpError> {
    let url = Url::parse(base_url.trim())
        .map_err(|e| HttpError::Config(format!("base_url {base_url:?} is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::Config(
            "base_url must not carry user info (credentials go in the secret settings)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(HttpError::Config(
            "base_url must not carry a query or fragment".into(),
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) || allow_plaintext => Ok(url),
        "http" => Err(HttpError::Config(format!(
            "base_url {base_url} is plaintext http:// to a host that is not loopback: tokens \
             and secrets would cross the network unencrypted; use https://, or set \
             allow_plaintext = true if this really is a trusted network"
        ))),
        other => Err(HttpError::Config(format!(
            "base_url {base_url} has scheme {other}://; use https://"
        ))),
    }
}

/// `url` as a string with the values of [`SECRET_PARAMS`] (and of `extra` names) replaced
/// by `[redacted]`; for logs. Unparseable input is replaced as a whole.
pub fn redact_url(url: &str, extra: &[&str]) -> String {
    let Ok(mut u) = Url::parse(url) else {
        return "[unparseable URL]".to_owned();
    };
    let _ = u.set_password(None);
    if u.query().is_none() {
        return u.to_string();
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s))
                || extra.iter().any(|s| k.eq_ignore_ascii_case(s));
            let v = if secret {
                "[redacted]".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_loopback_or_when_allowed() {
        assert!(check_base_url("https://oapi.dingtalk.com", false).is_ok());
        assert!(check_base_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_base_url("http://127.9.9.9", false).is_ok());
        assert!(check_base_url("http://localhost:1", false).is_ok());
        assert!(check_base_url("http://[::1]:1", false).is_ok());
        let e = check_base_url("http://oapi.example.com", false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("allow_plaintext"), "{msg}");
        assert!(msg.contains("not loopback"), "{msg}");
        assert!(check_base_url("http://oapi.example.com", true).is_ok());
        assert!(check_base_url("http://10.0.0.1", false).is_err());
        assert!(check_base_url("ftp://x", true).is_err());
        assert!(check_base_url("not a url", true).is_err());
        assert!(check_base_url("https://u:p@x.example", false).is_err());
        assert!(check_base_url("https://x.example/?access_token=1", false).is_err());
    }

    #[test]
    fn redaction() {
        let r = redact_url(
            "https://x.example/topapi/v2/user/get?access_token=SECRET1&dept_id=5&corpsecret=S2",
            &[],
        );
        assert!(!r.contains("SECRET1") && !r.contains("S2"), "{r}");
        assert!(r.contains("dept_id=5"), "{r}");
        let r = redact_url("https://x.example/a?sig=abc", &["sig"]);
        assert!(!r.contains("abc"), "{r}");
        assert_eq!(redact_url("::", &[]), "[unparseable URL]");
    }
}
