//! Configuration: files, column names, org layout, status words, error policy, format.

use std::path::PathBuf;

use idsync_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::text::TextEncoding;

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Header names of the account columns. Each field accepts several names (compared
/// trimmed and case-insensitively); the **first** name is the one an export writes.
/// A field whose names match no header is simply absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountColumns {
    /// The key (anchor). Required.
    pub anchor: Vec<String>,
    /// Login name. Without such a column the username is the key.
    pub username: Vec<String>,
    /// Display name.
    pub display_name: Vec<String>,
    /// Email.
    pub email: Vec<String>,
    /// Phone.
    pub phone: Vec<String>,
    /// Employee number (may name the same column as the key).
    pub employee_id: Vec<String>,
    /// Job title.
    pub title: Vec<String>,
    /// Departments: ids or paths (see [`OrgLayout`]); several split by
    /// [`CsvConfig::multi_separator`], the first is the primary one.
    pub orgs: Vec<String>,
    /// The manager's key.
    pub manager: Vec<String>,
    /// Active / disabled (see [`StatusWords`]).
    pub status: Vec<String>,
}

impl Default for AccountColumns {
    fn default() -> Self {
        AccountColumns {
            anchor: v(&[
                "id", "anchor", "user_id", "userid", "账号ID", "用户ID", "工号",
            ]),
            username: v(&["username", "login", "账号", "用户名"]),
            display_name: v(&["display_name", "name", "姓名"]),
            email: v(&["email", "mail", "邮箱"]),
            phone: v(&["phone", "mobile", "手机", "手机号"]),
            employee_id: v(&["employee_id", "工号"]),
            title: v(&["title", "职位", "职务"]),
            orgs: v(&["departments", "department", "部门"]),
            manager: v(&["manager", "直属上级", "上级"]),
            status: v(&["status", "状态"]),
        }
    }
}

/// Header names of the org columns (same rules as [`AccountColumns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgColumns {
    /// The key (anchor), in the id layout.
    pub anchor: Vec<String>,
    /// The parent's key, in the id layout; empty for a root.
    pub parent: Vec<String>,
    /// Name (in the path layout the last path segment is the name).
    pub name: Vec<String>,
    /// Sort order among siblings (an integer).
    pub order: Vec<String>,
    /// The full path, in the path layout.
    pub path: Vec<String>,
}

impl Default for OrgColumns {
    fn default() -> Self {
        OrgColumns {
            anchor: v(&["id", "dept_id", "部门ID", "部门编号"]),
            parent: v(&["parent_id", "parent", "上级部门ID", "上级部门编号"]),
            name: v(&["name", "部门名称", "名称"]),
            order: v(&["order", "排序"]),
            path: v(&["path", "部门路径", "路径"]),
        }
    }
}

/// How departments are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrgLayout {
    /// Orgs have an id and a parent-id column; accounts name department ids.
    #[default]
    Ids,
    /// Orgs are paths (`研发中心/后端组`), in the org file's path column or only in the
    /// accounts' department column. A path org's anchor is its **normalized path**: the
    /// segments trimmed and joined by the separator (`研发中心/后端组`). Its parent is the
    /// path without the last segment, its name the last segment. Renaming a department
    /// therefore changes its anchor.
    Paths,
}

/// Words of the status column, compared trimmed and case-insensitively. The first word of
/// each list is what an export writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusWords {
    /// Words meaning active.
    pub active: Vec<String>,
    /// Words meaning disabled.
    pub disabled: Vec<String>,
}

impl Default for StatusWords {
    fn default() -> Self {
        StatusWords {
            active: v(&[
                "active", "enabled", "true", "yes", "1", "在职", "正常", "启用", "是",
            ]),
            disabled: v(&[
                "disabled", "inactive", "false", "no", "0", "离职", "停用", "禁用", "否",
            ]),
        }
    }
}

/// When does a bad row abort the import?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorPolicy {
    /// Bad rows tolerated: they are skipped and reported, the good rows are imported.
    /// One more, and every listing fails with `InvalidData` so nothing is planned.
    ///
    /// **A skipped account is missing from the listing**, so a job that disables accounts
    /// whose source is gone would disable it; that is why the default is 0.
    pub max_errors: usize,
    /// Any row error aborts, and warnings (unknown managers) count as errors.
    pub strict: bool,
}

/// The configuration of a CSV source or sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The accounts file.
    pub accounts: PathBuf,
    /// The orgs file. Without it, orgs come from the accounts' department paths (path
    /// layout) or there are none (id layout: the source then has no org tree).
    #[serde(default)]
    pub orgs: Option<PathBuf>,
    /// How departments are given.
    #[serde(default)]
    pub layout: OrgLayout,
    /// Separator of path segments (default `/`).
    #[serde(default = "default_path_sep")]
    pub path_separator: String,
    /// Separator of several departments in one cell (default `;`); the first is primary.
    #[serde(default = "default_multi_sep")]
    pub multi_separator: String,
    /// Encoding label (`utf-8`, `gbk`, `gb18030`, `utf-16le`); detected when absent: a BOM
    /// decides, else UTF-16 by its zero bytes, else valid UTF-8 is UTF-8, else GB18030.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Field delimiter; detected from the header line when absent (`,` `;` or tab).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Account column names.
    #[serde(default)]
    pub account_columns: AccountColumns,
    /// Org column names.
    #[serde(default)]
    pub org_columns: OrgColumns,
    /// Columns that match no field become attributes named after the header (a header
    /// `attrs.x` becomes attribute `x`). On by default.
    #[serde(default = "yes")]
    pub extra_columns_as_attrs: bool,
    /// Status words.
    #[serde(default)]
    pub status: StatusWords,
    /// When bad rows abort.
    #[serde(default)]
    pub errors: ErrorPolicy,
    /// Formula-injection guard (on by default): an export prefixes `'` to a cell starting
    /// with `=` `+` `-` `@`, tab or carriage return; an import strips that prefix again.
    #[serde(default = "yes")]
    pub neutralize_formulas: bool,
    /// Write a UTF-8 BOM so Excel recognizes the encoding (on by default).
    #[serde(default = "yes")]
    pub bom: bool,
    /// Default page size of listings (default 1000).
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// The most bytes one record may take (default 1 MiB). A longer record fails the
    /// import with its file and line instead of growing without bound (an unterminated
    /// quote near the top of a large file would otherwise swallow the rest of it).
    #[serde(default = "default_max_record")]
    pub max_record_bytes: usize,
}

fn default_path_sep() -> String {
    "/".to_owned()
}
fn default_multi_sep() -> String {
    ";".to_owned()
}
fn yes() -> bool {
    true
}
fn default_page() -> usize {
    1000
}
/// 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
fn default_max_record() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

impl CsvConfig {
    /// A configuration with the defaults, for an accounts file and an optional orgs file.
    pub fn new(accounts: impl Into<PathBuf>, orgs: Option<PathBuf>) -> Self {
        CsvConfig {
            accounts: accounts.into(),
            orgs,
            layout: OrgLayout::Ids,
            path_separator: default_path_sep(),
            multi_separator: default_multi_sep(),
            encoding: None,
            delimiter: None,
            account_columns: AccountColumns::default(),
            org_columns: OrgColumns::default(),
            extra_columns_as_attrs: true,
            status: StatusWords::default(),
            errors: ErrorPolicy::default(),
            neutralize_formulas: true,
            bom: true,
            page_size: default_page(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Use the path layout.
    pub fn with_layout(mut self, layout: OrgLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Set the error policy.
    pub fn with_errors(mut self, max_errors: usize, strict: bool) -> Self {
        self.errors = ErrorPolicy { max_errors, strict };
        self
    }

    /// Force an encoding (a label such as `gbk`).
    pub fn with_encoding(mut self, label: impl Into<String>) -> Self {
        self.encoding = Some(label.into());
        self
    }

    /// Force a delimiter.
    pub fn with_delimiter(mut self, d: char) -> Self {
        self.delimiter = Some(d);
        self
    }

    pub(crate) fn text_encoding(&self) -> Result<Option<TextEncoding>> {
        match &self.encoding {
            None => Ok(None),
            Some(l) => TextEncoding::from_label(l)
                .map(Some)
                .ok_or_else(|| Error::config(format!("csv: unknown encoding {l:?}"))),
        }
    }

    pub(crate) fn delimiter_byte(&self) -> Result<Option<u8>> {
        match self.delimiter {
            None => Ok(None),
            Some(c) if c.is_ascii() && c != '"' && c != '\n' && c != '\r' => Ok(Some(c as u8)),
            Some(c) => Err(Error::config(format!(
                "csv: delimiter {c:?} must be one ASCII character other than a quote or newline"
            ))),
        }
    }

    /// Check the settings (separators, column names, encoding, delimiter, sizes) without
    /// touching the files.
    pub fn validate(&self) -> Result<()> {
        if self.page_size == 0 {
            return Err(Error::config("csv: page_size must be at least 1"));
        }
        if self.max_record_bytes == 0 {
            return Err(Error::config("csv: max_record_bytes must be at least 1"));
        }
        if self.path_separator.is_empty() || self.multi_separator.is_empty() {
            return Err(Error::config("csv: separators must not be empty"));
        }
        if self.path_separator == self.multi_separator {
            return Err(Error::config(
                "csv: path_separator and multi_separator must differ",
            ));
        }
        if self.account_columns.anchor.is_empty() {
            return Err(Error::config("csv: account_columns.anchor needs a name"));
        }
        self.text_encoding()?;
        self.delimiter_byte()?;
        Ok(())
    }
}
