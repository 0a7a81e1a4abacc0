//! [`CsvSink`]: CSV files as the target of a job.

use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, Descriptor, Directory, Error, Op, Org, Page,
    PageRequest, Result, Sink, Source,
};

use crate::PROVIDER;
use crate::config::CsvConfig;
use crate::export::{write_accounts, write_orgs};
use crate::source::CsvSource;

/// When a [`CsvSink`] writes its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// After every applied operation (the default): when `Engine::run` returns, the files
    /// on disk are the result. Each write rewrites the files (atomically), so a plan of
    /// `n` ops on a file of `m` rows costs `n·m`: fine for thousands, not for millions.
    #[default]
    EveryOp,
    /// Only on [`CsvSink::flush`] (and, best effort, when the sink is dropped). For large
    /// exports; call `flush` after the run to see write errors.
    Manual,
}

#[derive(Debug, Default)]
struct State {
    dir: Directory,
    dirty: bool,
}

/// CSV files as a sink: the directory is kept in memory, operations change it, and the
/// files are rewritten atomically (temp file + rename) according to the [`FlushPolicy`].
///
/// Opening a sink whose files exist loads them; any bad row makes `open` fail (rewriting
/// the file would otherwise silently drop that row). Files that do not exist are created
/// at the first flush. Orgs are written only when the configuration names an org file;
/// without one the sink has no org tree (`capabilities().orgs == false`).
///
/// Capabilities: readable (the engine diffs against the in-memory directory), takes every
/// operation, keeps the anchors it is given, cannot report changes.
#[derive(Debug)]
pub struct CsvSink {
    cfg: CsvConfig,
    policy: FlushPolicy,
    state: Mutex<State>,
}

impl CsvSink {
    /// Open the sink, loading existing files.
    pub fn open(cfg: CsvConfig) -> Result<CsvSink> {
        cfg.validate()?;
        let mut dir = Directory::new();
        if cfg.accounts.exists() {
            let mut strict = cfg.clone().with_errors(0, false);
            if strict.orgs.as_ref().is_some_and(|p| !p.exists()) {
                strict.orgs = None;
            }
            let src = CsvSource::open(strict)?;
            if let Some(e) = src.abort_error() {
                return Err(e);
            }
            let (orgs, accounts) = src.load_all()?;
            dir = Directory::from_parts(orgs, accounts);
        } else if let Some(p) = &cfg.orgs
            && p.exists()
        {
            return Err(Error::config(format!(
                "csv sink: {} exists but {} does not; both or neither",
                p.display(),
                cfg.accounts.display()
            )));
        }
        Ok(CsvSink {
            cfg,
            policy: FlushPolicy::default(),
            state: Mutex::new(State { dir, dirty: false }),
        })
    }

    /// Set the flush policy.
    pub fn with_flush(mut self, policy: FlushPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::unexpected("csv sink lock poisoned").with_provider(PROVIDER))
    }

    fn write(&self, st: &mut State) -> Result<()> {
        let orgs: Vec<Org> = st.dir.orgs.values().cloned().collect();
        if let Some(p) = &self.cfg.orgs {
            write_orgs(&self.cfg, p, &orgs)?;
        }
        let accounts: Vec<&Account> = st.dir.accounts.values().collect();
        write_accounts(&self.cfg, &self.cfg.accounts, &accounts, &orgs)?;
        st.dirty = false;
        Ok(())
    }

    /// Write the files now if anything changed since the last write.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        if st.dirty {
            self.write(&mut st)?;
        }
        Ok(())
    }

    /// Write the files now, even if nothing changed (e.g. to create empty files).
    pub fn write_now(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.write(&mut st)
    }

    /// A copy of the directory as the sink holds it.
    pub fn snapshot(&self) -> Result<Directory> {
        Ok(self.lock()?.dir.clone())
    }
}

impl Drop for CsvSink {
    fn drop(&mut self) {
        let dirty = self.state.lock().map(|s| s.dirty).unwrap_or(false);
        if dirty && let Err(e) = self.flush() {
            tracing::error!(error = %e, file = %self.cfg.accounts.display(), "csv sink: final flush failed");
        }
    }
}

#[async_trait]
impl Source for CsvSink {
    fn describe(&self) -> Descriptor {
        Descriptor::new(PROVIDER, self.cfg.accounts.display().to_string())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            orgs: self.cfg.orgs.is_some(),
            changes: false,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        let dir = match self.cfg.accounts.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::config(format!(
                "csv sink: directory {} does not exist",
                dir.display()
            ))
            .with_provider(PROVIDER));
        }
        self.lock().map(|_| ())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        if self.cfg.orgs.is_none() {
            return Ok(Page::last(Vec::new()));
        }
        Ok(self.lock()?.dir.org_page(&page))
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        Ok(self.lock()?.dir.account_page(&page))
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        Ok(self.lock()?.dir.orgs.get(anchor).cloned())
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        Ok(self.lock()?.dir.accounts.get(anchor).cloned())
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        // The sink holds its file in memory: a pass over it, no listing.
        Ok(self
            .lock()?
            .dir
            .accounts
            .values()
            .filter(|a| idsync_core::key_matches(*a, field, value))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Sink for CsvSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let mut st = self.lock()?;
        if op.entity() == idsync_core::EntityKind::Org && self.cfg.orgs.is_none() {
            return Err(Error::unsupported(
                "csv sink: no org file configured; it holds no org tree",
            )
            .with_provider(PROVIDER));
        }
        let (applied, _) = st
            .dir
            .apply(op, None)
            .map_err(|e| e.with_provider(PROVIDER))?;
        st.dirty = true;
        if self.policy == FlushPolicy::EveryOp {
            self.write(&mut st)?;
        }
        Ok(applied)
    }
}
