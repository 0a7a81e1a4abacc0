//! [`CsvSource`]: accounts and orgs from CSV files, validated once, then listed page by page.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Capabilities, Descriptor, Error, ErrorKind, Org, Page, PageRequest, PageToken,
    Result, Source,
};

use crate::PROVIDER;
use crate::config::{CsvConfig, OrgLayout};
use crate::error::{CsvError, RowError, RowErrorKind};
use crate::rows::{AccountCols, Mapper, OrgCols};
use crate::text::{Format, Record, RecordReader, detect};

/// Row errors kept in detail; beyond this only the count grows.
const MAX_DETAIL: usize = 1000;
/// Row errors quoted in the abort error's message.
const MAX_IN_MESSAGE: usize = 10;
/// The largest page served.
const MAX_PAGE: usize = 10_000;

/// 128-bit fingerprint of an anchor: two SipHash-1-3 runs with different prefixes (fixed
/// keys, so stable within and across runs). A false duplicate needs a 128-bit collision.
fn fingerprint(s: &str) -> u128 {
    let mut a = DefaultHasher::new();
    0u8.hash(&mut a);
    s.hash(&mut a);
    let mut b = DefaultHasher::new();
    1u8.hash(&mut b);
    s.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Size and modification time: a file that changes after validation is not read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, Option<SystemTime>);

fn stamp(path: &Path) -> Result<Stamp> {
    let m = std::fs::metadata(path).map_err(|e| Error::from(CsvError::io(path, e)))?;
    Ok(Stamp(m.len(), m.modified().ok()))
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// An opened data file: its format, columns and where the data starts.
#[derive(Debug, Clone)]
pub(crate) struct DataFile<C> {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    pub(crate) format: Format,
    pub(crate) cols: C,
    pub(crate) data_offset: u64,
    pub(crate) data_line: u64,
}

pub(crate) fn open_file<C>(
    cfg: &CsvConfig,
    path: &Path,
    resolve: impl FnOnce(&CsvConfig, &str, Vec<String>) -> Result<C>,
) -> Result<DataFile<C>> {
    let name = display(path);
    let format = detect(path, cfg.text_encoding()?, cfg.delimiter_byte()?)?;
    let mut r = RecordReader::open(path, format, 0, 0)?.with_max_record(cfg.max_record_bytes);
    let mut rec = Record::default();
    let has_header = r
        .next_record(&mut rec)
        .map_err(|e| Error::from(CsvError::io(path, e)))?;
    if !has_header {
        return Err(
            Error::invalid_data(format!("{name}: the file is empty (no header line)"))
                .with_provider(PROVIDER)
                .with_context("file", name),
        );
    }
    let headers: Vec<String> = rec.iter().map(str::to_owned).collect();
    let cols = resolve(cfg, &name, headers)?;
    let (data_offset, data_line) = r.position();
    Ok(DataFile {
        path: path.to_owned(),
        name,
        format,
        cols,
        data_offset,
        data_line,
    })
}

/// Collects row errors and warnings.
#[derive(Debug, Default)]
struct Findings {
    errors: Vec<RowError>,
    error_count: usize,
    warnings: Vec<RowError>,
    warning_count: usize,
}

impl Findings {
    fn error(&mut self, e: RowError) {
        self.error_count += 1;
        if self.errors.len() < MAX_DETAIL {
            self.errors.push(e);
        }
    }

    fn warning(&mut self, e: RowError) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_DETAIL {
            self.warnings.push(e);
        }
    }
}

/// A CSV file pair (accounts, and optionally orgs) as a [`Source`].
///
/// [`CsvSource::open`] reads the files once to validate them: orgs are kept (they are
/// few), accounts are not — only a 128-bit fingerprint per key (for duplicates) and per
/// manager reference. Listings then stream the accounts file page by page; a page token is
/// the byte offset and physical line of the next record, so any page can be re-read or
/// resumed after a restart. Rows with errors are skipped when the [`ErrorPolicy`]
/// tolerates them and reported by [`row_errors`](CsvSource::row_errors); past the
/// policy, `check`, `orgs` and `accounts` fail with `InvalidData`, naming file and line, so
/// the engine plans nothing — no disable or delete can follow from a bad file.
///
/// Listings read the file with blocking I/O inside the async methods: a page is a few
/// hundred kilobytes at most.
///
/// [`ErrorPolicy`]: crate::ErrorPolicy
#[derive(Debug)]
pub struct CsvSource {
    cfg: CsvConfig,
    accounts: DataFile<AccountCols>,
    accounts_stamp: Stamp,
    orgs: Option<Vec<Org>>,
    bad_lines: HashSet<u64>,
    findings: Findings,
    abort: Option<(String, String, u64)>,
    account_count: usize,
}

impl CsvSource {
    /// Open and validate the files. Fails on I/O errors and configuration errors (e.g. no
    /// key column); bad rows do not fail here, see the type's docs.
    pub fn open(cfg: CsvConfig) -> Result<CsvSource> {
        cfg.validate()?;
        let accounts = open_file(&cfg, &cfg.accounts, AccountCols::resolve)?;
        let accounts_stamp = stamp(&accounts.path)?;
        let mut findings = Findings::default();
        let mut bad_lines = HashSet::new();
        let orgs = match &cfg.orgs {
            Some(p) => Some(load_orgs(&cfg, p, &mut findings)?),
            None => None,
        };
        let mut src = CsvSource {
            cfg,
            accounts,
            accounts_stamp,
            orgs,
            bad_lines: HashSet::new(),
            findings: Findings::default(),
            abort: None,
            account_count: 0,
        };
        let derived = src.validate_accounts(&mut findings, &mut bad_lines)?;
        if src.orgs.is_none() && src.cfg.layout == OrgLayout::Paths {
            src.orgs = Some(derived);
        }
        src.bad_lines = bad_lines;
        src.findings = findings;
        src.decide();
        Ok(src)
    }

    /// Scan the accounts file: map every row, find duplicates, unknown departments and
    /// managers. Returns the orgs derived from department paths (path layout, no org file).
    fn validate_accounts(
        &mut self,
        findings: &mut Findings,
        bad_lines: &mut HashSet<u64>,
    ) -> Result<Vec<Org>> {
        let f = &self.accounts;
        let mapper = Mapper {
            cfg: &self.cfg,
            file: &f.name,
        };
        let known: Option<HashSet<&str>> = self
            .orgs
            .as_ref()
            .map(|orgs| orgs.iter().map(|o| o.anchor.as_str()).collect());
        let mut derived: BTreeMap<String, ()> = BTreeMap::new();
        let derive = self.orgs.is_none() && self.cfg.layout == OrgLayout::Paths;
        let mut seen: HashMap<u128, u64> = HashMap::new();
        let mut managers: Vec<(u128, u64)> = Vec::new();
        let mut r = RecordReader::open(&f.path, f.format, f.data_offset, f.data_line)?
            .with_max_record(self.cfg.max_record_bytes);
        let mut rec = Record::default();
        let mut errs = Vec::new();
        let mut count = 0usize;
        while r
            .next_record(&mut rec)
            .map_err(|e| Error::from(CsvError::io(&f.path, e)))?
        {
            errs.clear();
            let acc = mapper.account(&rec, &f.cols, &mut errs);
            if let Some(a) = &acc {
                match seen.entry(fingerprint(a.anchor.as_str())) {
                    Entry::Occupied(first) => errs.push(RowError {
                        file: f.name.clone(),
                        line: rec.line,
                        column: Some(f.cols.header(f.cols.anchor)),
                        kind: RowErrorKind::DuplicateAnchor,
                        message: format!(
                            "key {:?} appears already on line {}",
                            a.anchor.as_str(),
                            first.get()
                        ),
                    }),
                    Entry::Vacant(v) => {
                        v.insert(rec.line);
                    }
                }
                for o in &a.orgs {
                    // Ids without an org file: a path here would name no org, and the
                    // account would silently lose its department.
                    if known.is_none()
                        && self.cfg.layout == OrgLayout::Ids
                        && o.as_str().contains(self.cfg.path_separator.as_str())
                    {
                        return Err(Error::config(format!(
                            "{}:{}: department {:?} (column {:?}) looks like a path, but \
                             the layout is \"ids\" and there is no org file; set \
                             `layout = \"paths\"` to build the org tree from the paths, or \
                             name an org file with `orgs`",
                            f.name,
                            rec.line,
                            o.as_str(),
                            f.cols.orgs.map(|i| f.cols.header(i)).unwrap_or_default()
                        ))
                        .with_provider(PROVIDER)
                        .with_context("file", f.name.clone())
                        .with_context("line", rec.line.to_string()));
                    }
                    if let Some(known) = &known
                        && !known.contains(o.as_str())
                    {
                        errs.push(RowError {
                            file: f.name.clone(),
                            line: rec.line,
                            column: f.cols.orgs.map(|i| f.cols.header(i)),
                            kind: RowErrorKind::UnknownDepartment,
                            message: format!(
                                "department {:?} is not in {}",
                                o.as_str(),
                                self.cfg.orgs.as_deref().map(display).unwrap_or_default()
                            ),
                        });
                    }
                    if derive && !derived.contains_key(o.as_str()) {
                        let sep = self.cfg.path_separator.as_str();
                        let mut prefix = String::new();
                        for seg in o.as_str().split(sep) {
                            if !prefix.is_empty() {
                                prefix.push_str(sep);
                            }
                            prefix.push_str(seg);
                            derived.entry(prefix.clone()).or_insert(());
                        }
                    }
                }
                if let Some(m) = &a.manager {
                    managers.push((fingerprint(m.as_str()), rec.line));
                }
            }
            if errs.is_empty() {
                count += 1;
            } else {
                bad_lines.insert(rec.line);
                for e in errs.drain(..) {
                    findings.error(e);
                }
            }
        }
        for (m, line) in managers {
            if !seen.contains_key(&m) {
                findings.warning(RowError {
                    file: f.name.clone(),
                    line,
                    column: f.cols.manager.map(|i| f.cols.header(i)),
                    kind: RowErrorKind::UnknownManager,
                    message: "the manager is not an account of this file".into(),
                });
            }
        }
        self.account_count = count;
        let sep = self.cfg.path_separator.as_str();
        Ok(derived
            .into_keys()
            .map(|p| {
                let (parent, name) = match p.rsplit_once(sep) {
                    Some((parent, name)) => (Some(Anchor::from(parent)), name.to_owned()),
                    None => (None, p.clone()),
                };
                Org::new(p.as_str(), parent, name)
            })
            .collect())
    }

    /// Apply the error policy.
    fn decide(&mut self) {
        let f = &self.findings;
        let strict = self.cfg.errors.strict;
        let counted = f.error_count + if strict { f.warning_count } else { 0 };
        let limit = if strict {
            0
        } else {
            self.cfg.errors.max_errors
        };
        if counted <= limit {
            return;
        }
        let mut all: Vec<&RowError> = f.errors.iter().collect();
        if strict {
            all.extend(f.warnings.iter());
        }
        let Some(first) = all.first() else {
            return;
        };
        let mut msg = format!(
            "{}:{}: import aborted, nothing was read: {} row error(s){} (max_errors {}{}): ",
            first.file,
            first.line,
            f.error_count,
            if strict && f.warning_count > 0 {
                format!(" and {} warning(s)", f.warning_count)
            } else {
                String::new()
            },
            self.cfg.errors.max_errors,
            if strict { ", strict" } else { "" }
        );
        for (i, e) in all.iter().take(MAX_IN_MESSAGE).enumerate() {
            if i > 0 {
                msg.push_str("; ");
            }
            msg.push_str(&e.to_string());
        }
        if counted > MAX_IN_MESSAGE {
            msg.push_str(&format!("; and {} more", counted - MAX_IN_MESSAGE));
        }
        self.abort = Some((msg, first.file.clone(), first.line));
    }

    /// The error every listing returns when the policy was crossed.
    fn aborted(&self) -> Result<()> {
        match &self.abort {
            None => Ok(()),
            Some((msg, file, line)) => Err(Error::invalid_data(msg.clone())
                .with_provider(PROVIDER)
                .with_context("file", file.clone())
                .with_context("line", line.to_string())),
        }
    }

    /// The rows rejected (at most the first 1000; see [`error_count`](Self::error_count)).
    /// When the policy tolerates them, these rows were skipped and every other row is listed.
    pub fn row_errors(&self) -> &[RowError] {
        &self.findings.errors
    }

    /// How many row errors were found in total.
    pub fn error_count(&self) -> usize {
        self.findings.error_count
    }

    /// Warnings (unknown managers); errors in strict mode.
    pub fn warnings(&self) -> &[RowError] {
        &self.findings.warnings
    }

    /// The abort error, if the error policy was crossed.
    pub fn abort_error(&self) -> Option<Error> {
        self.aborted().err()
    }

    /// The number of valid accounts the listing yields.
    pub fn account_count(&self) -> usize {
        self.account_count
    }

    /// The configuration.
    pub fn config(&self) -> &CsvConfig {
        &self.cfg
    }

    /// Everything, in memory (the sink loads its files this way).
    pub(crate) fn load_all(&self) -> Result<(Vec<Org>, Vec<Account>)> {
        self.aborted()?;
        let orgs = self.orgs.clone().unwrap_or_default();
        let mut accounts = Vec::with_capacity(self.account_count);
        let mut req = PageRequest::sized(MAX_PAGE);
        loop {
            let page = self.read_accounts(&req)?;
            accounts.extend(page.items);
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok((orgs, accounts)),
            }
        }
    }

    fn parse_token(&self, t: &PageToken) -> Result<(u64, u64)> {
        let bad = || {
            Error::invalid_data(format!("csv: malformed page token {:?}", t.0))
                .with_provider(PROVIDER)
        };
        let (o, l) = t.0.split_once(':').ok_or_else(bad)?;
        let o: u64 = o.parse().map_err(|_| bad())?;
        let l: u64 = l.parse().map_err(|_| bad())?;
        if o < self.accounts.data_offset || o > self.accounts_stamp.0 {
            return Err(bad());
        }
        Ok((o, l))
    }

    fn read_accounts(&self, req: &PageRequest) -> Result<Page<Account>> {
        self.aborted()?;
        let f = &self.accounts;
        if stamp(&f.path)? != self.accounts_stamp {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{}: the file changed after it was validated; open it again",
                    f.name
                ),
            )
            .with_provider(PROVIDER));
        }
        let (offset, line) = match &req.token {
            None => (f.data_offset, f.data_line),
            Some(t) => self.parse_token(t)?,
        };
        let size = req.size.unwrap_or(self.cfg.page_size).clamp(1, MAX_PAGE);
        let io = |e| Error::from(CsvError::io(&f.path, e));
        let mapper = Mapper {
            cfg: &self.cfg,
            file: &f.name,
        };
        let mut r = RecordReader::open(&f.path, f.format, offset, line)?
            .with_max_record(self.cfg.max_record_bytes);
        let mut rec = Record::default();
        let mut errs = Vec::new();
        let mut items = Vec::with_capacity(size.min(4096));
        while r.next_record(&mut rec).map_err(io)? {
            if self.bad_lines.contains(&rec.line) {
                continue;
            }
            if items.len() == size {
                // One more good record exists: the next page starts there.
                return Ok(Page {
                    items,
                    next: Some(PageToken(format!("{}:{}", rec.offset, rec.line - 1))),
                });
            }
            errs.clear();
            match mapper.account(&rec, &f.cols, &mut errs) {
                Some(a) if errs.is_empty() => items.push(a),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "{}:{}: row differs from the validated file; open it again",
                            f.name, rec.line
                        ),
                    )
                    .with_provider(PROVIDER));
                }
            }
        }
        Ok(Page::last(items))
    }

    fn read_orgs(&self, req: &PageRequest) -> Result<Page<Org>> {
        self.aborted()?;
        let Some(orgs) = &self.orgs else {
            return Ok(Page::last(Vec::new()));
        };
        let start: usize = match &req.token {
            None => 0,
            Some(t) => t.0.parse().map_err(|_| {
                Error::invalid_data(format!("csv: malformed org page token {:?}", t.0))
                    .with_provider(PROVIDER)
            })?,
        };
        let size = req.size.unwrap_or(self.cfg.page_size).clamp(1, MAX_PAGE);
        let end = start.saturating_add(size).min(orgs.len());
        let items = orgs
            .get(start..end)
            .map(<[Org]>::to_vec)
            .unwrap_or_default();
        Ok(Page {
            items,
            next: (end < orgs.len()).then(|| PageToken(end.to_string())),
        })
    }
}

/// Read and check the org file: keys, duplicates, parents, cycles. Bad orgs are dropped
/// (and their descendants, reported as unknown parent).
fn load_orgs(cfg: &CsvConfig, path: &Path, findings: &mut Findings) -> Result<Vec<Org>> {
    let f = open_file(cfg, path, OrgCols::resolve)?;
    let mapper = Mapper { cfg, file: &f.name };
    let mut r = RecordReader::open(&f.path, f.format, f.data_offset, f.data_line)?
        .with_max_record(cfg.max_record_bytes);
    let mut rec = Record::default();
    let mut errs = Vec::new();
    let mut orgs: Vec<(Org, u64)> = Vec::new();
    let mut index: HashMap<Anchor, usize> = HashMap::new();
    while r
        .next_record(&mut rec)
        .map_err(|e| Error::from(CsvError::io(&f.path, e)))?
    {
        errs.clear();
        let org = mapper.org(&rec, &f.cols, &mut errs);
        if let Some(o) = &org
            && let Some(first) = index.get(&o.anchor)
        {
            errs.push(RowError {
                file: f.name.clone(),
                line: rec.line,
                column: f.cols.key_header(),
                kind: RowErrorKind::DuplicateAnchor,
                message: format!(
                    "org {:?} appears already on line {}",
                    o.anchor.as_str(),
                    orgs[*first].1
                ),
            });
        }
        match org {
            Some(o) if errs.is_empty() => {
                index.insert(o.anchor.clone(), orgs.len());
                orgs.push((o, rec.line));
            }
            _ => {
                for e in errs.drain(..) {
                    findings.error(e);
                }
            }
        }
    }
    // Path layout: missing ancestors are implied.
    if cfg.layout == OrgLayout::Paths {
        let sep = cfg.path_separator.as_str();
        let mut implied = Vec::new();
        let mut have: HashSet<Anchor> = index.keys().cloned().collect();
        for (o, line) in &orgs {
            let mut cur = o.parent.clone();
            while let Some(p) = cur {
                if !have.insert(p.clone()) {
                    break;
                }
                let (parent, name) = match p.as_str().rsplit_once(sep) {
                    Some((a, b)) => (Some(Anchor::from(a)), b.to_owned()),
                    None => (None, p.as_str().to_owned()),
                };
                implied.push((Org::new(p.clone(), parent.clone(), name), *line));
                cur = parent;
            }
        }
        orgs.extend(implied);
        return Ok(orgs.into_iter().map(|(o, _)| o).collect());
    }
    // Cycles.
    let parent_of: HashMap<&Anchor, Option<&Anchor>> = orgs
        .iter()
        .map(|(o, _)| (&o.anchor, o.parent.as_ref()))
        .collect();
    let line_of: HashMap<&Anchor, u64> = orgs.iter().map(|(o, l)| (&o.anchor, *l)).collect();
    let mut rejected: HashSet<Anchor> = HashSet::new();
    let mut done: HashSet<&Anchor> = HashSet::new();
    for (o, _) in &orgs {
        let mut path: Vec<&Anchor> = Vec::new();
        let mut on_path: HashSet<&Anchor> = HashSet::new();
        let mut cur = Some(&o.anchor);
        while let Some(a) = cur {
            if done.contains(a) {
                break;
            }
            if !on_path.insert(a) {
                let pos = path.iter().position(|x| *x == a).unwrap_or(0);
                let cycle = &path[pos..];
                let first_line = cycle.iter().filter_map(|c| line_of.get(c)).min().copied();
                let names: Vec<&str> = cycle.iter().map(|c| c.as_str()).collect();
                findings.error(RowError {
                    file: f.name.clone(),
                    line: first_line.unwrap_or(0),
                    column: f.cols.parent_header(),
                    kind: RowErrorKind::Cycle,
                    message: format!(
                        "parent chain loops: {} -> {} (lines {})",
                        names.join(" -> "),
                        a.as_str(),
                        cycle
                            .iter()
                            .filter_map(|c| line_of.get(c).map(u64::to_string))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                rejected.extend(cycle.iter().map(|c| (*c).clone()));
                break;
            }
            path.push(a);
            cur = parent_of.get(a).copied().flatten();
        }
        done.extend(path);
    }
    // Unknown or rejected parents, to a fixed point.
    let mut valid: HashSet<Anchor> = orgs
        .iter()
        .map(|(o, _)| o.anchor.clone())
        .filter(|a| !rejected.contains(a))
        .collect();
    loop {
        let mut changed = false;
        for (o, line) in &orgs {
            if !valid.contains(&o.anchor) {
                continue;
            }
            if let Some(p) = &o.parent
                && !valid.contains(p)
            {
                let why = if index.contains_key(p) {
                    "which was rejected"
                } else {
                    "which is not in the file"
                };
                findings.error(RowError {
                    file: f.name.clone(),
                    line: *line,
                    column: f.cols.parent_header(),
                    kind: RowErrorKind::UnknownParent,
                    message: format!("parent {:?} {why}", p.as_str()),
                });
                valid.remove(&o.anchor);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(orgs
        .into_iter()
        .filter(|(o, _)| valid.contains(&o.anchor))
        .map(|(o, _)| o)
        .collect())
}

#[async_trait]
impl Source for CsvSource {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.accounts.name.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            orgs: self.orgs.is_some(),
            max_page_size: Some(MAX_PAGE),
            ..Capabilities::read_only()
        }
    }

    async fn check(&self) -> Result<()> {
        self.aborted()?;
        if stamp(&self.accounts.path)? != self.accounts_stamp {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{}: the file changed after it was validated",
                    self.accounts.name
                ),
            )
            .with_provider(PROVIDER));
        }
        Ok(())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.read_orgs(&page)
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.read_accounts(&page)
    }

    /// A CSV file has no index: looking one account up reads the file (an explicit scan).
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        idsync_core::source::scan_account(self, anchor).await
    }

    /// A CSV file has no index: a search reads the file (an explicit scan).
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        idsync_core::source::scan_find_accounts(self, field, value).await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.aborted()?;
        Ok(self
            .orgs
            .as_ref()
            .and_then(|o| o.iter().find(|o| &o.anchor == anchor).cloned()))
    }
}
