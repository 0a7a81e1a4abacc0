//! Errors: the crate's private I/O error, and the public row errors of an import.

use std::fmt;
use std::path::{Path, PathBuf};

use idsync_core::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::PROVIDER;

/// File-level failures, converted once into [`idsync_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CsvError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CsvError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> CsvError {
        CsvError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<CsvError> for Error {
    fn from(e: CsvError) -> Error {
        match e {
            CsvError::Io { path, source } => {
                let kind = match source.kind() {
                    std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                    std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                        ErrorKind::InvalidData
                    }
                    _ => ErrorKind::Unavailable,
                };
                let msg = format!("{}: {source}", path.display());
                Error::new(kind, msg)
                    .with_provider(PROVIDER)
                    .with_context("file", path.display().to_string())
                    .with_source(source)
            }
        }
    }
}

/// What is wrong with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RowErrorKind {
    /// The key (anchor) cell is empty.
    MissingKey,
    /// A required cell (e.g. the username, an org's name) is empty.
    MissingValue,
    /// The key appears on an earlier row (the earlier row is kept).
    DuplicateAnchor,
    /// The email cell is not an address.
    MalformedEmail,
    /// The account names a department the org file does not have.
    UnknownDepartment,
    /// The org names a parent the org file does not have (or one that was rejected).
    UnknownParent,
    /// The org's parent chain loops back to itself.
    Cycle,
    /// A department path has an empty segment (`研发中心//后端组`).
    MalformedPath,
    /// The status cell is none of the configured active / disabled words.
    InvalidStatus,
    /// The order cell is not an integer.
    InvalidNumber,
    /// Bytes that are not valid in the file's encoding.
    Encoding,
    /// The file ends inside a quoted cell.
    UnterminatedQuote,
    /// The manager is not an account of the file (a warning unless strict).
    UnknownManager,
}

impl RowErrorKind {
    /// A short stable name, e.g. `"duplicate_anchor"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowErrorKind::MissingKey => "missing_key",
            RowErrorKind::MissingValue => "missing_value",
            RowErrorKind::DuplicateAnchor => "duplicate_anchor",
            RowErrorKind::MalformedEmail => "malformed_email",
            RowErrorKind::UnknownDepartment => "unknown_department",
            RowErrorKind::UnknownParent => "unknown_parent",
            RowErrorKind::Cycle => "cycle",
            RowErrorKind::MalformedPath => "malformed_path",
            RowErrorKind::InvalidStatus => "invalid_status",
            RowErrorKind::InvalidNumber => "invalid_number",
            RowErrorKind::Encoding => "encoding",
            RowErrorKind::UnterminatedQuote => "unterminated_quote",
            RowErrorKind::UnknownManager => "unknown_manager",
        }
    }
}

impl fmt::Display for RowErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bad row: file, physical line where the record starts, column, reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The file (as given in the configuration).
    pub file: String,
    /// The physical line (1-based) where the record starts; a record with a quoted
    /// multi-line cell is reported at its first line.
    pub line: u64,
    /// The column header, when one column is at fault.
    pub column: Option<String>,
    /// What is wrong.
    pub kind: RowErrorKind,
    /// A readable explanation.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(c) = &self.column {
            write!(f, "column {c:?}: ")?;
        }
        write!(f, "{} ({})", self.message, self.kind)
    }
}
