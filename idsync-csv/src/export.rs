//! Writing CSV: RFC 4180 (CRLF, quotes only where needed), optional UTF-8 BOM, stable order
//! by anchor, formula-injection safe, atomic (temp file + rename).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use idsync_core::{Account, Anchor, Error, Org, Result, Source, SourceExt, Status};
use serde_json::Value;

use futures::TryStreamExt;

use crate::PROVIDER;
use crate::config::{CsvConfig, OrgLayout};
use crate::rows::neutralize;

fn first(names: &[String], fallback: &str) -> String {
    names
        .first()
        .cloned()
        .unwrap_or_else(|| fallback.to_owned())
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::unexpected(format!("{}: writing failed: {e}", path.display()))
        .with_provider(PROVIDER)
        .with_context("file", path.display().to_string())
}

fn attr_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Write a header and rows as CSV to `out`: the BOM when `cfg.bom`, RFC 4180 with CRLF,
/// every cell formula-neutralised when `cfg.neutralize_formulas`. `place` names the
/// destination in errors.
fn write_csv(
    cfg: &CsvConfig,
    out: &mut dyn Write,
    place: &Path,
    header: &[String],
    rows: &mut dyn Iterator<Item = Vec<String>>,
) -> Result<()> {
    if cfg.bom {
        out.write_all(b"\xEF\xBB\xBF")
            .map_err(|e| io_err(place, e))?;
    }
    let delimiter = cfg.delimiter_byte()?.unwrap_or(b',');
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out);
    let cell = |s: &str| -> String {
        if cfg.neutralize_formulas {
            neutralize(s).into_owned()
        } else {
            s.to_owned()
        }
    };
    w.write_record(header.iter().map(|h| cell(h)))
        .map_err(|e| io_err(place, e))?;
    for row in rows {
        w.write_record(row.iter().map(|c| cell(c)))
            .map_err(|e| io_err(place, e))?;
    }
    w.flush().map_err(|e| io_err(place, e))?;
    Ok(())
}

/// Where a table goes.
enum Dest<'a> {
    /// Replace this file atomically.
    File(&'a Path),
    /// Stream to a writer (stdout, a pipe).
    Writer(&'a mut dyn Write),
}

fn write_table(
    cfg: &CsvConfig,
    dest: Dest<'_>,
    header: &[String],
    rows: &mut dyn Iterator<Item = Vec<String>>,
) -> Result<()> {
    match dest {
        Dest::File(p) => write_atomic(cfg, p, header, rows),
        Dest::Writer(w) => write_csv(cfg, w, Path::new("<output>"), header, rows),
    }
}

/// Write rows to `path` atomically: a temp file in the same directory, synced, renamed.
fn write_atomic(
    cfg: &CsvConfig,
    path: &Path,
    header: &[String],
    rows: &mut dyn Iterator<Item = Vec<String>>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".idsync-csv-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| io_err(path, e))?;
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file());
        write_csv(cfg, &mut out, path, header, rows)?;
        out.flush().map_err(|e| io_err(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| io_err(path, e))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    Ok(())
}

/// Full paths of orgs (path layout), built from names along the parent chain.
fn org_paths(cfg: &CsvConfig, orgs: &[Org]) -> HashMap<Anchor, String> {
    let by: HashMap<&Anchor, &Org> = orgs.iter().map(|o| (&o.anchor, o)).collect();
    let mut out = HashMap::with_capacity(orgs.len());
    for o in orgs {
        let mut segs: Vec<&str> = Vec::new();
        let mut cur = Some(o);
        let mut steps = 0;
        while let Some(c) = cur {
            segs.push(c.name.trim());
            steps += 1;
            if steps > orgs.len() {
                break; // a cycle: stop rather than loop
            }
            cur = c.parent.as_ref().and_then(|p| by.get(p).copied());
        }
        segs.reverse();
        out.insert(o.anchor.clone(), segs.join(&cfg.path_separator));
    }
    out
}

/// Write an org file (sorted by anchor).
pub(crate) fn write_orgs(cfg: &CsvConfig, path: &Path, orgs: &[Org]) -> Result<()> {
    orgs_table(cfg, Dest::File(path), orgs)
}

/// Write orgs as CSV to `out`, in the layout of `cfg` (`layout`, `org_columns`,
/// `delimiter`), sorted by anchor: one `attrs.NAME` column per attribute, a UTF-8 BOM
/// when `cfg.bom`, and every cell formula-neutralised unless `cfg.neutralize_formulas` is
/// off (a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, which
/// [`CsvSource`](crate::CsvSource) strips again on import).
pub fn write_orgs_to(cfg: &CsvConfig, out: &mut dyn Write, orgs: &[Org]) -> Result<()> {
    orgs_table(cfg, Dest::Writer(out), orgs)
}

fn orgs_table(cfg: &CsvConfig, dest: Dest<'_>, orgs: &[Org]) -> Result<()> {
    let mut orgs: Vec<&Org> = orgs.iter().collect();
    orgs.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    let keys: BTreeSet<&String> = orgs.iter().flat_map(|o| o.attrs.keys()).collect();
    let c = &cfg.org_columns;
    let paths = (cfg.layout == OrgLayout::Paths)
        .then(|| org_paths(cfg, &orgs.iter().map(|o| (*o).clone()).collect::<Vec<_>>()));
    let mut header = match &paths {
        None => vec![
            first(&c.anchor, "id"),
            first(&c.parent, "parent_id"),
            first(&c.name, "name"),
            first(&c.order, "order"),
        ],
        Some(_) => vec![first(&c.path, "path"), first(&c.order, "order")],
    };
    header.extend(keys.iter().map(|k| format!("attrs.{k}")));
    let mut rows = orgs.iter().map(|o| {
        let mut row = match &paths {
            None => vec![
                o.anchor.as_str().to_owned(),
                o.parent
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                o.name.clone(),
            ],
            Some(p) => vec![p.get(&o.anchor).cloned().unwrap_or_default()],
        };
        row.push(o.order.map(|n| n.to_string()).unwrap_or_default());
        row.extend(
            keys.iter()
                .map(|k| o.attrs.get(*k).map(attr_text).unwrap_or_default()),
        );
        row
    });
    write_table(cfg, dest, &header, &mut rows)
}

/// Write an accounts file (sorted by anchor). `orgs` is needed for the path layout.
pub(crate) fn write_accounts(
    cfg: &CsvConfig,
    path: &Path,
    accounts: &[&Account],
    orgs: &[Org],
) -> Result<()> {
    accounts_table(cfg, Dest::File(path), accounts, orgs)
}

/// Write accounts as CSV to `out`, in the layout of `cfg` (`account_columns`, `layout`,
/// `multi_separator`, status words), sorted by anchor: list fields joined, one
/// `attrs.NAME` column per attribute, a UTF-8 BOM when `cfg.bom`, and every cell
/// formula-neutralised unless `cfg.neutralize_formulas` is off. `orgs` is needed for the
/// path layout only.
pub fn write_accounts_to(
    cfg: &CsvConfig,
    out: &mut dyn Write,
    accounts: &[&Account],
    orgs: &[Org],
) -> Result<()> {
    accounts_table(cfg, Dest::Writer(out), accounts, orgs)
}

fn accounts_table(
    cfg: &CsvConfig,
    dest: Dest<'_>,
    accounts: &[&Account],
    orgs: &[Org],
) -> Result<()> {
    let mut accounts: Vec<&Account> = accounts.to_vec();
    accounts.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    let keys: BTreeSet<&String> = accounts.iter().flat_map(|a| a.attrs.keys()).collect();
    let paths = (cfg.layout == OrgLayout::Paths).then(|| org_paths(cfg, orgs));
    let c = &cfg.account_columns;
    let fields: Vec<(&str, String)> = vec![
        ("anchor", first(&c.anchor, "id")),
        ("username", first(&c.username, "username")),
        ("display_name", first(&c.display_name, "display_name")),
        ("email", first(&c.email, "email")),
        ("phone", first(&c.phone, "phone")),
        ("employee_id", first(&c.employee_id, "employee_id")),
        ("title", first(&c.title, "title")),
        ("orgs", first(&c.orgs, "departments")),
        ("manager", first(&c.manager, "manager")),
        ("status", first(&c.status, "status")),
    ];
    // One column per header name: the first field naming it wins.
    let mut seen = BTreeSet::new();
    let fields: Vec<(&str, String)> = fields
        .into_iter()
        .filter(|(_, h)| seen.insert(h.to_lowercase()))
        .collect();
    let mut header: Vec<String> = fields.iter().map(|(_, h)| h.clone()).collect();
    header.extend(keys.iter().map(|k| format!("attrs.{k}")));
    let active = first(&cfg.status.active, "active");
    let disabled = first(&cfg.status.disabled, "disabled");
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut rows = accounts.iter().map(|a| {
        let mut row: Vec<String> = fields
            .iter()
            .map(|(f, _)| match *f {
                "anchor" => a.anchor.as_str().to_owned(),
                "username" => a.username.clone(),
                "display_name" => opt(&a.display_name),
                "email" => opt(&a.email),
                "phone" => opt(&a.phone),
                "employee_id" => opt(&a.employee_id),
                "title" => opt(&a.title),
                "orgs" => a
                    .orgs
                    .iter()
                    .map(|o| match &paths {
                        Some(p) => p.get(o).cloned().unwrap_or_else(|| o.to_string()),
                        None => o.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(&cfg.multi_separator),
                "manager" => a
                    .manager
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                _ => match a.status {
                    Status::Active => active.clone(),
                    Status::Disabled => disabled.clone(),
                },
            })
            .collect();
        row.extend(
            keys.iter()
                .map(|k| a.attrs.get(*k).map(attr_text).unwrap_or_default()),
        );
        row
    });
    write_table(cfg, dest, &header, &mut rows)
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Orgs written (0 without an org file in the configuration).
    pub orgs: usize,
    /// Accounts written.
    pub accounts: usize,
}

/// Export everything a source lists to the files of `cfg` (accounts, and orgs when
/// `cfg.orgs` is set), in the format [`CsvSource`](crate::CsvSource) reads back: sorted by
/// anchor, RFC 4180 with CRLF line ends, a UTF-8 BOM unless `cfg.bom` is off, and
/// formula-injection safe unless `cfg.neutralize_formulas` is off. Each file is replaced
/// atomically. The listing is held in memory to sort it.
pub async fn export(source: &dyn Source, cfg: &CsvConfig) -> Result<ExportSummary> {
    cfg.validate()?;
    let orgs: Vec<Org> = if source.capabilities().orgs {
        source.org_stream(None).try_collect().await?
    } else {
        Vec::new()
    };
    let accounts: Vec<Account> = source.account_stream(None).try_collect().await?;
    let refs: Vec<&Account> = accounts.iter().collect();
    let mut written = 0;
    if let Some(p) = &cfg.orgs {
        write_orgs(cfg, p, &orgs)?;
        written = orgs.len();
    }
    write_accounts(cfg, &cfg.accounts, &refs, &orgs)?;
    Ok(ExportSummary {
        orgs: written,
        accounts: accounts.len(),
    })
}
