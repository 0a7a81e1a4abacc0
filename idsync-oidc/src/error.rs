//! Why a login failed.

use axum::http::StatusCode;

/// What kind of failure a [`LoginError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginErrorKind {
    /// The configuration is wrong (names the key).
    Config,
    /// No provider of that name is configured.
    UnknownProvider,
    /// The callback lacks a parameter or carries a malformed one.
    BadRequest,
    /// The state is unknown, already used, expired, or not this browser's.
    InvalidState,
    /// The provider answered the authorization request with an error.
    ProviderDenied,
    /// The token endpoint refused the code (expired, used, or not issued to us).
    CodeRejected,
    /// The ID token failed verification (signature, iss, aud, exp, nonce, at_hash).
    InvalidIdToken,
    /// Userinfo failed or belongs to another subject.
    InvalidUserinfo,
    /// A claim needed for the account is missing or malformed.
    InvalidClaims,
    /// The provider is unreachable or answered with a server error.
    ProviderUnavailable,
    /// The login was refused by the link policy (an unverified email that belongs to an
    /// existing account, or several accounts that match).
    LinkRefused,
    /// The hub account is disabled; a login does not enable it.
    AccountDisabled,
    /// Provisioning through the engine failed.
    Provisioning,
}

impl LoginErrorKind {
    /// A short stable name, e.g. `"invalid_state"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginErrorKind::Config => "config",
            LoginErrorKind::UnknownProvider => "unknown_provider",
            LoginErrorKind::BadRequest => "bad_request",
            LoginErrorKind::InvalidState => "invalid_state",
            LoginErrorKind::ProviderDenied => "provider_denied",
            LoginErrorKind::CodeRejected => "code_rejected",
            LoginErrorKind::InvalidIdToken => "invalid_id_token",
            LoginErrorKind::InvalidUserinfo => "invalid_userinfo",
            LoginErrorKind::InvalidClaims => "invalid_claims",
            LoginErrorKind::ProviderUnavailable => "provider_unavailable",
            LoginErrorKind::LinkRefused => "link_refused",
            LoginErrorKind::AccountDisabled => "account_disabled",
            LoginErrorKind::Provisioning => "provisioning",
        }
    }

    /// The HTTP status the router answers with.
    pub fn status(self) -> StatusCode {
        match self {
            LoginErrorKind::Config | LoginErrorKind::Provisioning => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            LoginErrorKind::UnknownProvider => StatusCode::NOT_FOUND,
            LoginErrorKind::BadRequest | LoginErrorKind::InvalidState => StatusCode::BAD_REQUEST,
            LoginErrorKind::ProviderDenied
            | LoginErrorKind::CodeRejected
            | LoginErrorKind::InvalidIdToken
            | LoginErrorKind::InvalidUserinfo
            | LoginErrorKind::InvalidClaims => StatusCode::UNAUTHORIZED,
            LoginErrorKind::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            LoginErrorKind::LinkRefused | LoginErrorKind::AccountDisabled => StatusCode::FORBIDDEN,
        }
    }
}

/// A failed login or provider setup. The message names the place (config key, endpoint
/// URL, provider error code) and never holds a secret, a code or a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} ({}): {message}", provider.as_deref().unwrap_or("oidc"), kind.as_str())]
pub struct LoginError {
    kind: LoginErrorKind,
    provider: Option<String>,
    message: String,
}

impl LoginError {
    /// An error of `kind`.
    pub fn new(kind: LoginErrorKind, message: impl Into<String>) -> Self {
        LoginError {
            kind,
            provider: None,
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        LoginError::new(LoginErrorKind::Config, message)
    }

    /// Name the provider (kept if one is set already).
    pub fn with_provider(mut self, name: &str) -> Self {
        if self.provider.is_none() {
            self.provider = Some(name.to_owned());
        }
        self
    }

    /// The kind.
    pub fn kind(&self) -> LoginErrorKind {
        self.kind
    }

    /// The message (without the provider and kind prefix).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The provider's name, when known.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
}

impl From<idsync_core::Error> for LoginError {
    fn from(e: idsync_core::Error) -> Self {
        LoginError::new(LoginErrorKind::Provisioning, e.to_string())
    }
}
