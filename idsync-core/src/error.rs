//! The one public error type of idsync.
//!
//! Every adapter converts its own private error into [`Error`] once. An error says what
//! went wrong ([`ErrorKind`]), whether trying again can help ([`ErrorStatus`]), how long to
//! wait ([`Error::retry_after`]), which provider and operation it came from, the provider's
//! own code (DingTalk `errcode`, LDAP result code, HTTP status), and keeps the real source
//! chain.

use std::fmt;
use std::time::Duration;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, independent of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The entity does not exist.
    NotFound,
    /// The entity exists already (a create collided).
    AlreadyExists,
    /// A conflicting state: optimistic-concurrency check failed, ambiguous correlation, lease held.
    Conflict,
    /// Authenticated but not allowed.
    PermissionDenied,
    /// Credentials missing, wrong or expired.
    Unauthenticated,
    /// The provider throttled the request.
    RateLimited,
    /// The provider or the network is unavailable (timeouts, 5xx, connection resets).
    Unavailable,
    /// The configuration is wrong.
    ConfigInvalid,
    /// Input data is malformed (bad rows, cycles, orphans, duplicate anchors, bad DNs).
    InvalidData,
    /// The adapter cannot do this (see its capabilities).
    Unsupported,
    /// A listing ended early or the read was otherwise incomplete.
    Incomplete,
    /// The run stopped because a guard threshold was crossed; it needs approval.
    NeedsApproval,
    /// Anything else.
    Unexpected,
}

impl ErrorKind {
    /// A short stable name, e.g. `"rate_limited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::NeedsApproval => "needs_approval",
            ErrorKind::Unexpected => "unexpected",
        }
    }

    /// The status an error of this kind has unless the adapter says otherwise:
    /// rate limits and unavailability are temporary, everything else permanent.
    pub fn default_status(self) -> ErrorStatus {
        match self {
            ErrorKind::RateLimited | ErrorKind::Unavailable => ErrorStatus::Temporary,
            _ => ErrorStatus::Permanent,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorStatus {
    /// Retrying as is will not help.
    Permanent,
    /// Retrying later may help.
    Temporary,
    /// It was temporary, but retries ran out.
    Persistent,
}

/// The error of every idsync operation. One pointer wide: results stay small.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    status: ErrorStatus,
    message: String,
    retry_after: Option<Duration>,
    provider: Option<String>,
    operation: Option<String>,
    provider_code: Option<String>,
    context: Vec<(String, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with the kind's default status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                status: kind.default_status(),
                message: message.into(),
                retry_after: None,
                provider: None,
                operation: None,
                provider_code: None,
                context: Vec::new(),
                source: None,
            }),
        }
    }

    /// Shorthand for [`ErrorKind::InvalidData`].
    pub fn invalid_data(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidData, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// Shorthand for [`ErrorKind::ConfigInvalid`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::ConfigInvalid, message)
    }

    /// Shorthand for [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unexpected, message)
    }

    /// Mark the error temporary (retrying may help).
    pub fn temporary(mut self) -> Self {
        self.inner.status = ErrorStatus::Temporary;
        self
    }

    /// Mark the error permanent.
    pub fn permanent(mut self) -> Self {
        self.inner.status = ErrorStatus::Permanent;
        self
    }

    /// Mark the error persistent: it was temporary but retries ran out.
    pub fn persistent(mut self) -> Self {
        self.inner.status = ErrorStatus::Persistent;
        self
    }

    /// Set the status explicitly.
    pub fn with_status(mut self, status: ErrorStatus) -> Self {
        self.inner.status = status;
        self
    }

    /// How long the provider asked us to wait.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.inner.retry_after = Some(after);
        self
    }

    /// The provider this error came from (e.g. `"dingtalk"`), if not set already.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        if self.inner.provider.is_none() {
            self.inner.provider = Some(provider.into());
        }
        self
    }

    /// The operation that failed (e.g. `"accounts.next_page"`), if not set already.
    pub fn with_operation(mut self, operation: impl Into<String>) -> Self {
        if self.inner.operation.is_none() {
            self.inner.operation = Some(operation.into());
        }
        self
    }

    /// The provider's own error code (DingTalk `errcode`, LDAP rc, HTTP status).
    pub fn with_provider_code(mut self, code: impl Into<String>) -> Self {
        self.inner.provider_code = Some(code.into());
        self
    }

    /// A key/value pair of context (anchor, DN, file and line, ...). Never put secrets here.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.context.push((key.into(), value.into()));
        self
    }

    /// The underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether retrying can help.
    pub fn status(&self) -> ErrorStatus {
        self.inner.status
    }

    /// True when retrying may help.
    pub fn is_temporary(&self) -> bool {
        self.inner.status == ErrorStatus::Temporary
    }

    /// The human message, without context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// How long the provider asked to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The provider the error came from.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The operation that failed.
    pub fn operation(&self) -> Option<&str> {
        self.inner.operation.as_deref()
    }

    /// The provider's own error code.
    pub fn provider_code(&self) -> Option<&str> {
        self.inner.provider_code.as_deref()
    }

    /// Key/value context.
    pub fn context(&self) -> &[(String, String)] {
        &self.inner.context
    }

    /// A copy of this error without its source chain (the chain is rendered into the message).
    /// Used where one failure must be reported in several places.
    pub fn clone_lossy(&self) -> Error {
        let mut message = self.inner.message.clone();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        let i = &self.inner;
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                status: i.status,
                message,
                retry_after: i.retry_after,
                provider: i.provider.clone(),
                operation: i.operation.clone(),
                provider_code: i.provider_code.clone(),
                context: i.context.clone(),
                source: None,
            }),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}", self.inner.kind, self.inner.status)?;
        if let Some(p) = &self.inner.provider {
            write!(f, ", {p}")?;
        }
        if let Some(op) = &self.inner.operation {
            write!(f, " {op}")?;
        }
        if let Some(code) = &self.inner.provider_code {
            write!(f, ", code {code}")?;
        }
        write!(f, ")")?;
        if !self.inner.message.is_empty() {
            write!(f, ": {}", self.inner.message)?;
        }
        for (k, v) in &self.inner.context {
            write!(f, ", {k}={v}")?;
        }
        if let Some(after) = self.inner.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("status", &self.inner.status)
            .field("message", &self.inner.message);
        if let Some(p) = &self.inner.provider {
            d.field("provider", p);
        }
        if let Some(op) = &self.inner.operation {
            d.field("operation", op);
        }
        if let Some(code) = &self.inner.provider_code {
            d.field("provider_code", code);
        }
        if !self.inner.context.is_empty() {
            d.field("context", &self.inner.context);
        }
        if let Some(after) = &self.inner.retry_after {
            d.field("retry_after", after);
        }
        if let Some(src) = &self.inner.source {
            d.field("source", &src.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid_data("JSON").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_builders() {
        let e = Error::new(ErrorKind::RateLimited, "slow down")
            .with_provider("dingtalk")
            .with_provider_code("90018")
            .with_retry_after(Duration::from_secs(2))
            .with_context("anchor", "u1");
        assert!(e.is_temporary());
        assert_eq!(e.provider_code(), Some("90018"));
        let s = e.to_string();
        assert!(s.contains("rate_limited"), "{s}");
        assert!(s.contains("90018"), "{s}");
        assert!(s.contains("anchor=u1"), "{s}");
        assert_eq!(e.persistent().status(), ErrorStatus::Persistent);
        assert!(!Error::not_found("x").is_temporary());
    }

    #[test]
    fn clone_lossy_keeps_chain_text() {
        let io = std::io::Error::other("disk gone");
        let e = Error::unexpected("write").with_source(io);
        let c = e.clone_lossy();
        assert!(c.message().contains("disk gone"));
        assert_eq!(c.kind(), ErrorKind::Unexpected);
    }
}
