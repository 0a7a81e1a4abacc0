//! LDAP errors and their one classification into idsync's error kinds.

use idsync_core::{Error, ErrorKind, ErrorStatus};

/// The provider name used in errors and descriptors.
pub const PROVIDER: &str = "ldap";

/// Errors of this crate before they become [`idsync_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum LdapError {
    /// The server answered with a non-success result code.
    #[error("LDAP result {rc} ({name}){}{}", matched_suffix(.matched), text_suffix(.text))]
    Result {
        rc: u32,
        name: &'static str,
        matched: String,
        text: String,
    },
    /// Transport, TLS, protocol or timeout problems from ldap3.
    #[error("LDAP connection: {0}")]
    Client(#[from] ldap3::LdapError),
    /// A server reply we could not decode.
    #[error("malformed server reply: {0}")]
    Malformed(String),
    /// TLS setup (CA file) failed.
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn matched_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(", matched {m:?}")
    }
}

fn text_suffix(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

impl LdapError {
    pub(crate) fn from_result(res: &ldap3::LdapResult) -> LdapError {
        LdapError::Result {
            rc: res.rc,
            name: rc_name(res.rc),
            matched: res.matched.clone(),
            text: res.text.clone(),
        }
    }

    pub(crate) fn rc(&self) -> Option<u32> {
        match self {
            LdapError::Result { rc, .. } => Some(*rc),
            LdapError::Client(ldap3::LdapError::LdapResult { result }) => Some(result.rc),
            _ => None,
        }
    }
}

/// Checks a result code: 0 (and the given extra codes) pass, everything else is an error.
pub(crate) fn check(res: ldap3::LdapResult) -> Result<ldap3::LdapResult, LdapError> {
    if res.rc == 0 {
        Ok(res)
    } else {
        Err(LdapError::from_result(&res))
    }
}

/// The RFC 4511 name of a result code.
pub(crate) fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        4096 => "e-syncRefreshRequired",
        _ => "unknown",
    }
}

/// The one place where LDAP outcomes become idsync error kinds.
///
/// `rc` is the LDAP result code; `None` means no result arrived (connection refused or
/// reset, timeout, TLS failure), which is temporary.
pub(crate) fn classify(rc: Option<u32>) -> (ErrorKind, ErrorStatus) {
    use ErrorKind::*;
    use ErrorStatus::*;
    match rc {
        None => (Unavailable, Temporary),
        Some(rc) => match rc {
            3 => (Unavailable, Temporary),                   // timeLimitExceeded
            4 | 11 => (Incomplete, Permanent),               // size / admin limit
            7 | 8 | 13 | 48 => (Unauthenticated, Permanent), // auth method / TLS needed
            12 => (Unsupported, Permanent),                  // critical control
            16 | 17 | 18 | 19 | 21 | 34 | 64 | 65 | 67 | 69 => (InvalidData, Permanent),
            20 | 68 => (AlreadyExists, Permanent), // value / entry exists
            32 => (NotFound, Permanent),           // noSuchObject
            49 => (Unauthenticated, Permanent),    // invalidCredentials
            50 => (PermissionDenied, Permanent),   // insufficientAccessRights
            51 | 52 => (Unavailable, Temporary),   // busy / unavailable
            53 => (PermissionDenied, Permanent),   // unwillingToPerform
            66 => (Conflict, Permanent),           // notAllowedOnNonLeaf
            81 | 85 | 91 => (Unavailable, Temporary), // client: down/timeout/connect
            4096 => (Incomplete, Permanent),       // e-syncRefreshRequired
            1 | 2 | 10 | 54 | 71 | 80 => (Unexpected, Permanent),
            _ => (Unexpected, Permanent),
        },
    }
}

impl From<LdapError> for Error {
    fn from(e: LdapError) -> Error {
        let rc = e.rc();
        let (kind, status) = match &e {
            LdapError::Malformed(_) => (ErrorKind::InvalidData, ErrorStatus::Permanent),
            LdapError::Tls(_) => (ErrorKind::ConfigInvalid, ErrorStatus::Permanent),
            LdapError::Client(ldap3::LdapError::LdapResult { .. }) | LdapError::Result { .. } => {
                classify(rc)
            }
            LdapError::Client(ldap3::LdapError::UrlParsing { .. })
            | LdapError::Client(ldap3::LdapError::UnknownScheme(_)) => {
                (ErrorKind::ConfigInvalid, ErrorStatus::Permanent)
            }
            LdapError::Client(_) => classify(None),
        };
        let mut err = Error::new(kind, e.to_string())
            .with_status(status)
            .with_provider(PROVIDER);
        if let Some(rc) = rc {
            err = err.with_provider_code(rc.to_string());
        }
        err.with_source(e)
    }
}

/// Builds an error for an LDAP result code with an operation name (used by tests and the
/// sink when a result is inspected by hand).
pub(crate) fn result_error(res: &ldap3::LdapResult, operation: &str) -> Error {
    Error::from(LdapError::from_result(res)).with_operation(operation.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use ErrorKind::*;
        use ErrorStatus::*;
        let table: &[(Option<u32>, ErrorKind, ErrorStatus)] = &[
            (None, Unavailable, Temporary),
            (Some(3), Unavailable, Temporary),
            (Some(4), Incomplete, Permanent),
            (Some(11), Incomplete, Permanent),
            (Some(8), Unauthenticated, Permanent),
            (Some(19), InvalidData, Permanent),
            (Some(20), AlreadyExists, Permanent),
            (Some(32), NotFound, Permanent),
            (Some(34), InvalidData, Permanent),
            (Some(49), Unauthenticated, Permanent),
            (Some(50), PermissionDenied, Permanent),
            (Some(51), Unavailable, Temporary),
            (Some(52), Unavailable, Temporary),
            (Some(53), PermissionDenied, Permanent),
            (Some(65), InvalidData, Permanent),
            (Some(66), Conflict, Permanent),
            (Some(68), AlreadyExists, Permanent),
            (Some(80), Unexpected, Permanent),
            (Some(4096), Incomplete, Permanent),
            (Some(9999), Unexpected, Permanent),
        ];
        for (rc, kind, status) in table {
            assert_eq!(classify(*rc), (*kind, *status), "rc {rc:?}");
        }
    }

    #[test]
    fn conversion_keeps_rc_and_text() {
        let res = ldap3::LdapResult {
            rc: 49,
            matched: String::new(),
            text: "invalid credentials".into(),
            refs: vec![],
            ctrls: vec![],
        };
        let err = result_error(&res, "bind");
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
        assert!(!err.is_temporary());
        assert_eq!(err.provider_code(), Some("49"));
        assert_eq!(err.provider(), Some(PROVIDER));
        assert!(err.to_string().contains("invalidCredentials"), "{err}");
        let busy = Error::from(LdapError::Result {
            rc: 51,
            name: rc_name(51),
            matched: String::new(),
            text: String::new(),
        });
        assert!(busy.is_temporary());
    }
}
