//! Bad input, named precisely: the URL path (never its query, where secrets may be), the
//! page, the item's index on it and the JSON pointer.

use idsync_core::{Error, ErrorKind};

use crate::PROVIDER;

/// Where in a listing something was found.
#[derive(Debug, Clone)]
pub(crate) struct At {
    /// The URL path (no query).
    pub(crate) path: String,
    /// 1-based page number in the listing; `None`: a single-entity answer.
    pub(crate) page: Option<u64>,
}

impl At {
    pub(crate) fn page(path: impl Into<String>, page: u64) -> Self {
        At {
            path: path.into(),
            page: Some(page),
        }
    }

    pub(crate) fn single(path: impl Into<String>) -> Self {
        At {
            path: path.into(),
            page: None,
        }
    }

    fn prefix(&self) -> String {
        match self.page {
            Some(p) => format!("{} page {p}", self.path),
            None => self.path.clone(),
        }
    }
}

/// The connector's own errors, converted once into [`idsync_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestError {
    /// An item without its anchor.
    #[error("{}: item {item} has no anchor at {pointer}", .at.prefix())]
    NoAnchor {
        at: At,
        item: usize,
        pointer: String,
    },
    /// A value of the wrong type.
    #[error("{}: item {item}: {pointer}: {what}", .at.prefix())]
    Type {
        at: At,
        item: usize,
        pointer: String,
        what: String,
    },
    /// The page is not shaped as configured.
    #[error("{}: {what}", .at.prefix())]
    Shape {
        at: At,
        pointer: String,
        what: String,
    },
    /// The page contradicts its total, repeats, or ends early: the listing is incomplete.
    #[error("{}: {what}", .at.prefix())]
    Incomplete { at: At, what: String },
}

impl From<RestError> for Error {
    fn from(e: RestError) -> Self {
        let kind = match &e {
            RestError::Incomplete { .. } => ErrorKind::Incomplete,
            _ => ErrorKind::InvalidData,
        };
        let mut out = Error::new(kind, e.to_string()).with_provider(PROVIDER);
        let (at, item, pointer) = match &e {
            RestError::NoAnchor { at, item, pointer }
            | RestError::Type {
                at, item, pointer, ..
            } => (at, Some(*item), Some(pointer.as_str())),
            RestError::Shape { at, pointer, .. } => (at, None, Some(pointer.as_str())),
            RestError::Incomplete { at, .. } => (at, None, None),
        };
        out = out.with_operation(at.path.clone());
        if let Some(p) = at.page {
            out = out.with_context("page", p.to_string());
        }
        if let Some(i) = item {
            out = out.with_context("item", i.to_string());
        }
        if let Some(p) = pointer {
            out = out.with_context("pointer", p);
        }
        out
    }
}
