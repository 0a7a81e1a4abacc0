//! CSV source and sink for idsync.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod config;
mod error;
mod export;
mod rows;
mod sink;
mod source;
mod text;

pub use config::{AccountColumns, CsvConfig, ErrorPolicy, OrgColumns, OrgLayout, StatusWords};
pub use error::{RowError, RowErrorKind};
pub use export::{ExportSummary, export};
pub use sink::{CsvSink, FlushPolicy};
pub use source::CsvSource;
pub use text::TextEncoding;

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "csv";
