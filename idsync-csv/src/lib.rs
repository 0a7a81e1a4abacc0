//! # idsync-csv
//!
//! Accounts and org charts as CSV files — the way spreadsheets really write them — as an
//! idsync [`Source`](idsync_core::Source) ([`CsvSource`]) and
//! [`Sink`](idsync_core::Sink) ([`CsvSink`]), plus a plain [`export`] function.
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{Engine, Hub, Job, MemoryStore, Store};
//! use idsync_csv::{CsvConfig, CsvSource};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let orgs = dir.path().join("orgs.csv");
//! let accounts = dir.path().join("accounts.csv");
//! // What Excel writes in a Chinese locale: GB18030, Chinese headers.
//! let gbk = |s: &str| encoding_rs::GB18030.encode(s).0.into_owned();
//! std::fs::write(&orgs, gbk("部门ID,上级部门ID,部门名称\r\n1,,示例科技\r\n2,1,研发中心\r\n")).unwrap();
//! std::fs::write(&accounts, gbk(
//!     "工号,账号,姓名,邮箱,部门,状态\r\nE1,zhang.san,张三,zhang.san@example.com,2,在职\r\n",
//! )).unwrap();
//!
//! let source = CsvSource::open(CsvConfig::new(&accounts, Some(orgs)))?;
//! assert!(source.row_errors().is_empty());
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let hub = Arc::new(Hub::new(store.clone()));
//! let engine = Engine::new(store);
//! let job = Job::new("hr-csv", Arc::new(source), hub);
//! let report = engine.run(&job).await?;
//! assert_eq!(report.counts.applied, 3); // two orgs, one account
//! # Ok(())
//! # }
//! ```
//!
//! ## What it reads
//!
//! | | |
//! |---|---|
//! | encodings | UTF-8 with or without BOM, GB18030 / GBK, UTF-16LE / BE with BOM; detected (a BOM decides, else UTF-16 by its zero bytes, else valid UTF-8 is UTF-8, else GB18030) or set with [`CsvConfig::encoding`] |
//! | delimiters | `,` `;` tab, detected from the header line, or [`CsvConfig::delimiter`] |
//! | quoting | RFC 4180: quoted cells with delimiters, `""` quotes, embedded newlines (CRLF, LF, or CR-only files) |
//! | columns | by header name, several names per field in any language ([`AccountColumns`], [`OrgColumns`]); other columns become attributes |
//! | orgs | an org file with id / parent-id columns, or paths (`研发中心/后端组`) in an org file or only in the accounts' department column ([`OrgLayout`]) |
//! | departments | several in one cell split by [`CsvConfig::multi_separator`] (`;`), the first is primary |
//! | status | configurable words: active / 在职 / true … and disabled / 离职 / false … ([`StatusWords`]) |
//!
//! ## Row errors
//!
//! [`CsvSource::open`] reads the files once and checks every row: missing key, duplicate
//! key, malformed email, unknown department, unknown parent, cycles in the org file,
//! malformed path, unknown status word, non-integer order, undecodable bytes, an
//! unterminated quote, and (as a warning) unknown managers. Each [`RowError`] names the
//! file, the **physical line where the record starts** (a quoted cell spanning lines does
//! not shift the lines after it), the column and the reason.
//!
//! The [`ErrorPolicy`] decides: up to `max_errors` bad rows are skipped and reported while
//! every valid row is imported; one more (or any, in `strict` mode, where warnings count
//! too) and `check`, `orgs` and `accounts` fail with `InvalidData`, naming `file:line`.
//! The engine then plans nothing — no disable or delete can follow from a bad file. The
//! default `max_errors` is 0, because a skipped account is absent from the listing and a
//! job would disable it.
//!
//! ## Streaming
//!
//! The accounts file is never held whole: validation keeps a 128-bit fingerprint per key
//! and per manager reference, listings stream page by page, and a page token is the byte
//! offset and line number of the next record, so a page can be re-read or resumed by a new
//! `CsvSource` on the same file. Org files are held in memory (they are small, and the
//! engine holds the org tree anyway).
//!
//! ## Writing
//!
//! [`export`] and [`CsvSink`] write RFC 4180 (CRLF, quotes only where needed), UTF-8 with
//! a BOM for Excel ([`CsvConfig::bom`]), rows sorted by anchor, every file replaced
//! atomically (temp file in the same directory, fsync, rename). The first name of each
//! column list is the header written, the first status word the status written.
//!
//! **Formula injection**: a cell starting with `=`, `+`, `-`, `@`, tab or carriage return
//! would run as a formula when the file is opened in a spreadsheet. Export prefixes such a
//! cell with `'` (and also a cell that already looks neutralized, like `'=x`, so the rule
//! stays reversible); import strips exactly one `'` from a cell that is `'` followed by
//! such a character (after any further `'`). Round trips are therefore lossless, and a
//! phone number `+86 …` shows as `'+86 …` in the spreadsheet. Turn it off with
//! [`CsvConfig::neutralize_formulas`] (both directions).
//!
//! Round trips are lossless for every typed field. Attributes come back as strings
//! (non-string values are written as JSON text); empty cells read as absent; keys and
//! department / manager references are trimmed.
//!
//! ## Sample data
//!
//! [`sample_source`] reads `data/sample-orgs.csv` and `data/sample-accounts.csv`: 20
//! departments under one company root and 200 invented people (Chinese and English names,
//! managers, some in two departments, a few disabled), UTF-8 with BOM and CRLF as Excel
//! writes it, with Chinese headers (`工号`, `姓名`, `部门`, …) that the default column
//! names understand.
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

use std::path::PathBuf;

pub use config::{
    AccountColumns, CsvConfig, DEFAULT_MAX_RECORD_BYTES, ErrorPolicy, OrgColumns, OrgLayout,
    StatusWords,
};
pub use error::{RowError, RowErrorKind};
pub use export::{ExportSummary, export, write_accounts_to, write_orgs_to};
pub use sink::{CsvSink, FlushPolicy};
pub use source::CsvSource;
pub use text::TextEncoding;

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "csv";

/// The configuration of the bundled sample data (`data/sample-*.csv` of this crate).
pub fn sample_config() -> CsvConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    CsvConfig::new(
        dir.join("sample-accounts.csv"),
        Some(dir.join("sample-orgs.csv")),
    )
}

/// The bundled sample data as a source: 20 departments, 200 invented people.
pub fn sample_source() -> idsync_core::Result<CsvSource> {
    CsvSource::open(sample_config())
}
