//! Header resolution and the mapping of one record to an [`Account`] or [`Org`].

use std::borrow::Cow;
use std::collections::HashSet;

use idsync_core::{Account, Anchor, Error, Org, Result, Status};
use serde_json::Value;

use crate::config::{CsvConfig, OrgLayout};
use crate::error::{RowError, RowErrorKind};
use crate::text::Record;

/// Characters that make a spreadsheet treat a cell as a formula.
pub(crate) fn is_formula_trigger(c: char) -> bool {
    matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r')
}

/// Export side: prefix `'` to a value that a spreadsheet would run as a formula, and to a
/// value that already looks neutralized (`'=...`), so import can strip exactly one.
pub(crate) fn neutralize(s: &str) -> Cow<'_, str> {
    let rest = s.trim_start_matches('\'');
    match rest.chars().next() {
        Some(c) if is_formula_trigger(c) => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

/// Import side: the inverse of [`neutralize`].
pub(crate) fn unneutralize(s: &str) -> &str {
    if let Some(stripped) = s.strip_prefix('\'') {
        let rest = stripped.trim_start_matches('\'');
        if rest.chars().next().is_some_and(is_formula_trigger) {
            return stripped;
        }
    }
    s
}

fn norm(h: &str) -> String {
    h.trim().trim_start_matches('\u{feff}').to_lowercase()
}

fn find(headers: &[String], names: &[String]) -> Option<usize> {
    let normed: Vec<String> = headers.iter().map(|h| norm(h)).collect();
    names
        .iter()
        .find_map(|n| normed.iter().position(|h| *h == norm(n)))
}

fn attr_columns(headers: &[String], used: &HashSet<usize>, enabled: bool) -> Vec<(usize, String)> {
    if !enabled {
        return Vec::new();
    }
    headers
        .iter()
        .enumerate()
        .filter(|(i, h)| !used.contains(i) && !h.trim().is_empty())
        .map(|(i, h)| {
            let h = h.trim();
            let name = h.strip_prefix("attrs.").unwrap_or(h);
            (i, name.to_owned())
        })
        .collect()
}

/// Column indexes of an accounts file.
#[derive(Debug, Clone)]
pub(crate) struct AccountCols {
    pub(crate) headers: Vec<String>,
    pub(crate) anchor: usize,
    username: Option<usize>,
    display_name: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
    employee_id: Option<usize>,
    title: Option<usize>,
    pub(crate) orgs: Option<usize>,
    pub(crate) manager: Option<usize>,
    status: Option<usize>,
    attrs: Vec<(usize, String)>,
}

impl AccountCols {
    pub(crate) fn resolve(cfg: &CsvConfig, file: &str, headers: Vec<String>) -> Result<Self> {
        let c = &cfg.account_columns;
        let anchor = find(&headers, &c.anchor).ok_or_else(|| {
            Error::config(format!(
                "{file}:1: no key column: expected one of {:?}, found {:?}",
                c.anchor, headers
            ))
        })?;
        let cols = AccountCols {
            anchor,
            username: find(&headers, &c.username),
            display_name: find(&headers, &c.display_name),
            email: find(&headers, &c.email),
            phone: find(&headers, &c.phone),
            employee_id: find(&headers, &c.employee_id),
            title: find(&headers, &c.title),
            orgs: find(&headers, &c.orgs),
            manager: find(&headers, &c.manager),
            status: find(&headers, &c.status),
            attrs: Vec::new(),
            headers,
        };
        let used: HashSet<usize> = [
            Some(cols.anchor),
            cols.username,
            cols.display_name,
            cols.email,
            cols.phone,
            cols.employee_id,
            cols.title,
            cols.orgs,
            cols.manager,
            cols.status,
        ]
        .into_iter()
        .flatten()
        .collect();
        let attrs = attr_columns(&cols.headers, &used, cfg.extra_columns_as_attrs);
        Ok(AccountCols { attrs, ..cols })
    }

    pub(crate) fn header(&self, i: usize) -> String {
        self.headers.get(i).cloned().unwrap_or_default()
    }
}

/// Column indexes of an orgs file.
#[derive(Debug, Clone)]
pub(crate) struct OrgCols {
    headers: Vec<String>,
    anchor: Option<usize>,
    parent: Option<usize>,
    name: Option<usize>,
    order: Option<usize>,
    path: Option<usize>,
    attrs: Vec<(usize, String)>,
}

impl OrgCols {
    /// The header of the key column (id or path).
    pub(crate) fn key_header(&self) -> Option<String> {
        self.anchor
            .or(self.path)
            .and_then(|i| self.headers.get(i).cloned())
    }

    /// The header of the parent column.
    pub(crate) fn parent_header(&self) -> Option<String> {
        self.parent.and_then(|i| self.headers.get(i).cloned())
    }

    pub(crate) fn resolve(cfg: &CsvConfig, file: &str, headers: Vec<String>) -> Result<Self> {
        let c = &cfg.org_columns;
        let mut cols = OrgCols {
            anchor: find(&headers, &c.anchor),
            parent: find(&headers, &c.parent),
            name: find(&headers, &c.name),
            order: find(&headers, &c.order),
            path: find(&headers, &c.path),
            attrs: Vec::new(),
            headers,
        };
        match cfg.layout {
            OrgLayout::Ids => {
                if cols.anchor.is_none() || cols.name.is_none() {
                    return Err(Error::config(format!(
                        "{file}:1: the id layout needs a key column (one of {:?}) and a name column (one of {:?}); found {:?}",
                        c.anchor, c.name, cols.headers
                    )));
                }
                cols.path = None;
            }
            OrgLayout::Paths => {
                if cols.path.is_none() {
                    return Err(Error::config(format!(
                        "{file}:1: the path layout needs a path column (one of {:?}); found {:?}",
                        c.path, cols.headers
                    )));
                }
                cols.anchor = None;
                cols.parent = None;
                cols.name = None;
            }
        }
        let used: HashSet<usize> = [cols.anchor, cols.parent, cols.name, cols.order, cols.path]
            .into_iter()
            .flatten()
            .collect();
        cols.attrs = attr_columns(&cols.headers, &used, cfg.extra_columns_as_attrs);
        Ok(cols)
    }
}

/// Split a path into trimmed segments; `None` when a segment is empty. Separators at
/// either end are tolerated.
pub(crate) fn path_segments<'a>(s: &'a str, sep: &str) -> Option<Vec<&'a str>> {
    let s = s.trim();
    let s = s.strip_prefix(sep).unwrap_or(s);
    let s = s.strip_suffix(sep).unwrap_or(s);
    let segs: Vec<&str> = s.split(sep).map(str::trim).collect();
    if segs.iter().any(|x| x.is_empty()) {
        None
    } else {
        Some(segs)
    }
}

/// A plausible email address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub(crate) fn plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Maps records of one file.
#[derive(Debug)]
pub(crate) struct Mapper<'a> {
    pub(crate) cfg: &'a CsvConfig,
    pub(crate) file: &'a str,
}

impl Mapper<'_> {
    fn cell<'r>(&self, rec: &'r Record, i: Option<usize>) -> &'r str {
        match i {
            None => "",
            Some(i) => {
                let s = rec.get(i);
                if self.cfg.neutralize_formulas {
                    unneutralize(s)
                } else {
                    s
                }
            }
        }
    }

    fn opt(&self, rec: &Record, i: Option<usize>) -> Option<String> {
        let s = self.cell(rec, i);
        (!s.is_empty()).then(|| s.to_owned())
    }

    fn err(
        &self,
        rec: &Record,
        column: Option<String>,
        kind: RowErrorKind,
        message: String,
    ) -> RowError {
        RowError {
            file: self.file.to_owned(),
            line: rec.line,
            column,
            kind,
            message,
        }
    }

    fn record_errors(&self, rec: &Record, errs: &mut Vec<RowError>) {
        if rec.unterminated {
            errs.push(self.err(
                rec,
                None,
                RowErrorKind::UnterminatedQuote,
                "the file ends inside a quoted cell (a quote is missing)".into(),
            ));
        }
        if rec.bad_encoding {
            errs.push(self.err(
                rec,
                None,
                RowErrorKind::Encoding,
                "bytes not valid in the file's encoding (set `encoding` if detection was wrong)"
                    .into(),
            ));
        }
    }

    /// A department reference, normalized (paths) or trimmed (ids).
    pub(crate) fn org_ref(&self, raw: &str) -> Option<String> {
        match self.cfg.layout {
            OrgLayout::Ids => Some(raw.trim().to_owned()),
            OrgLayout::Paths => path_segments(raw, &self.cfg.path_separator)
                .map(|s| s.join(&self.cfg.path_separator)),
        }
    }

    /// Map an account row; problems are pushed to `errs` (the row is bad if any).
    pub(crate) fn account(
        &self,
        rec: &Record,
        cols: &AccountCols,
        errs: &mut Vec<RowError>,
    ) -> Option<Account> {
        self.record_errors(rec, errs);
        let anchor = self.cell(rec, Some(cols.anchor)).trim();
        if anchor.is_empty() {
            errs.push(self.err(
                rec,
                Some(cols.header(cols.anchor)),
                RowErrorKind::MissingKey,
                "the key cell is empty".into(),
            ));
            return None;
        }
        let mut a = Account::new(anchor, anchor);
        if let Some(i) = cols.username {
            let u = self.cell(rec, Some(i));
            if u.trim().is_empty() {
                errs.push(self.err(
                    rec,
                    Some(cols.header(i)),
                    RowErrorKind::MissingValue,
                    "the username cell is empty".into(),
                ));
            }
            a.username = u.to_owned();
        }
        a.display_name = self.opt(rec, cols.display_name);
        a.email = self.opt(rec, cols.email);
        if let (Some(e), Some(i)) = (&a.email, cols.email)
            && !plausible_email(e)
        {
            errs.push(self.err(
                rec,
                Some(cols.header(i)),
                RowErrorKind::MalformedEmail,
                format!("{e:?} is not an email address"),
            ));
        }
        a.phone = self.opt(rec, cols.phone);
        a.employee_id = self.opt(rec, cols.employee_id);
        a.title = self.opt(rec, cols.title);
        if let Some(i) = cols.orgs {
            let cell = self.cell(rec, Some(i));
            for part in cell.split(self.cfg.multi_separator.as_str()) {
                if part.trim().is_empty() {
                    continue;
                }
                match self.org_ref(part) {
                    Some(r) => {
                        let r = Anchor::from(r);
                        if !a.orgs.contains(&r) {
                            a.orgs.push(r);
                        }
                    }
                    None => errs.push(self.err(
                        rec,
                        Some(cols.header(i)),
                        RowErrorKind::MalformedPath,
                        format!("department path {part:?} has an empty segment"),
                    )),
                }
            }
        }
        if let Some(m) = self.opt(rec, cols.manager) {
            let m = m.trim();
            if !m.is_empty() {
                a.manager = Some(Anchor::from(m));
            }
        }
        if let Some(i) = cols.status {
            let s = self.cell(rec, Some(i)).trim();
            let is = |words: &[String]| {
                words.iter().any(|w| {
                    let w = w.trim();
                    w == s || (w.len() == s.len() && w.to_lowercase() == s.to_lowercase())
                })
            };
            a.status = if s.is_empty() || is(&self.cfg.status.active) {
                Status::Active
            } else if is(&self.cfg.status.disabled) {
                Status::Disabled
            } else {
                errs.push(self.err(
                    rec,
                    Some(cols.header(i)),
                    RowErrorKind::InvalidStatus,
                    format!(
                        "status {s:?} is neither active ({}) nor disabled ({})",
                        self.cfg.status.active.join("/"),
                        self.cfg.status.disabled.join("/")
                    ),
                ));
                Status::Active
            };
        }
        for (i, name) in &cols.attrs {
            let s = self.cell(rec, Some(*i));
            if !s.is_empty() {
                a.attrs.insert(name.clone(), Value::String(s.to_owned()));
            }
        }
        Some(a)
    }

    /// Map an org row.
    pub(crate) fn org(
        &self,
        rec: &Record,
        cols: &OrgCols,
        errs: &mut Vec<RowError>,
    ) -> Option<Org> {
        self.record_errors(rec, errs);
        let header = |i: Option<usize>| i.and_then(|i| cols.headers.get(i).cloned());
        let mut org = match self.cfg.layout {
            OrgLayout::Ids => {
                let anchor = self.cell(rec, cols.anchor).trim();
                if anchor.is_empty() {
                    errs.push(self.err(
                        rec,
                        header(cols.anchor),
                        RowErrorKind::MissingKey,
                        "the key cell is empty".into(),
                    ));
                    return None;
                }
                let name = self.cell(rec, cols.name);
                if name.trim().is_empty() {
                    errs.push(self.err(
                        rec,
                        header(cols.name),
                        RowErrorKind::MissingValue,
                        "the name cell is empty".into(),
                    ));
                }
                let parent = self.cell(rec, cols.parent).trim();
                Org::new(
                    anchor,
                    (!parent.is_empty()).then(|| Anchor::from(parent)),
                    name,
                )
            }
            OrgLayout::Paths => {
                let raw = self.cell(rec, cols.path);
                if raw.trim().is_empty() {
                    errs.push(self.err(
                        rec,
                        header(cols.path),
                        RowErrorKind::MissingKey,
                        "the path cell is empty".into(),
                    ));
                    return None;
                }
                let sep = self.cfg.path_separator.as_str();
                let Some(segs) = path_segments(raw, sep) else {
                    errs.push(self.err(
                        rec,
                        header(cols.path),
                        RowErrorKind::MalformedPath,
                        format!("path {raw:?} has an empty segment"),
                    ));
                    return None;
                };
                let name = segs.last().copied().unwrap_or_default();
                let parent =
                    (segs.len() > 1).then(|| Anchor::from(segs[..segs.len() - 1].join(sep)));
                Org::new(segs.join(sep), parent, name)
            }
        };
        let order = self.cell(rec, cols.order).trim();
        if !order.is_empty() {
            match order.parse::<i64>() {
                Ok(n) => org.order = Some(n),
                Err(_) => errs.push(self.err(
                    rec,
                    header(cols.order),
                    RowErrorKind::InvalidNumber,
                    format!("order {order:?} is not an integer"),
                )),
            }
        }
        for (i, name) in &cols.attrs {
            let s = self.cell(rec, Some(*i));
            if !s.is_empty() {
                org.attrs.insert(name.clone(), Value::String(s.to_owned()));
            }
        }
        Some(org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutralize_round_trips() {
        for s in [
            "=1+2",
            "+86 138",
            "-5",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "'=already",
            "''+x",
            "'plain",
            "plain",
            "",
            "'",
        ] {
            let out = neutralize(s);
            assert_eq!(unneutralize(&out), s, "{s:?} -> {out:?}");
            let first = out.chars().next();
            assert!(!first.is_some_and(is_formula_trigger), "{s:?} -> {out:?}");
        }
        assert_eq!(neutralize("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralize("plain"), "plain");
    }

    #[test]
    fn emails_and_paths() {
        assert!(plausible_email("zhang.san@example.com"));
        assert!(!plausible_email("zhang.san@"));
        assert!(!plausible_email("zhang san@example.com"));
        assert!(!plausible_email("a@b"));
        assert!(!plausible_email("a@@b.com"));
        assert_eq!(
            path_segments(" 研发中心 / 后端组 ", "/").unwrap(),
            vec!["研发中心", "后端组"]
        );
        assert_eq!(path_segments("/a/b/", "/").unwrap(), vec!["a", "b"]);
        assert!(path_segments("a//b", "/").is_none());
    }
}
