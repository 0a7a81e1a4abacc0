//! SCIM errors (RFC 7644 §3.12): an HTTP status, an optional `scimType` and a detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idsync_core::ErrorKind;
use serde_json::json;

use crate::schema;

/// A SCIM error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `scimType` (`invalidFilter`, `uniqueness`, ...), when the RFC defines one.
    pub scim_type: Option<&'static str>,
    /// What went wrong, for a human.
    pub detail: String,
}

impl ScimError {
    /// An error with a status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }

    /// A 400 with a `scimType`.
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// 400 `invalidFilter`.
    pub fn filter(detail: impl Into<String>) -> Self {
        Self::bad("invalidFilter", detail)
    }

    /// 400 `invalidSyntax`.
    pub fn syntax(detail: impl Into<String>) -> Self {
        Self::bad("invalidSyntax", detail)
    }

    /// 400 `invalidValue`.
    pub fn value(detail: impl Into<String>) -> Self {
        Self::bad("invalidValue", detail)
    }

    /// 400 `invalidPath`.
    pub fn path(detail: impl Into<String>) -> Self {
        Self::bad("invalidPath", detail)
    }

    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad("noTarget", detail)
    }

    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad("mutability", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        ScimError {
            status: StatusCode::CONFLICT,
            scim_type: Some("uniqueness"),
            detail: detail.into(),
        }
    }

    /// 412: the resource changed since the version the client has.
    pub fn precondition(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, detail)
    }

    /// 500, for failures inside idsync.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut v = json!({
            "schemas": [schema::ERROR],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            v["scimType"] = json!(t);
        }
        v
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status.as_u16())?;
        if let Some(t) = self.scim_type {
            write!(f, " {t}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for ScimError {}

impl From<idsync_core::Error> for ScimError {
    fn from(e: idsync_core::Error) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists => {
                return ScimError::uniqueness(e.to_string());
            }
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::InvalidData => {
                return ScimError::value(e.to_string());
            }
            ErrorKind::Unavailable | ErrorKind::RateLimited => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ScimError::new(status, e.to_string())
    }
}

/// The SCIM media type.
pub const SCIM_JSON: &str = "application/scim+json";

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut r = (self.status, body).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"idsync-scim\""),
            );
        }
        r
    }
}

/// A SCIM result.
pub type ScimResult<T> = std::result::Result<T, ScimError>;
