//! The shared conformance suite with CSV files as sink and as source.
//!
//! Two harnesses:
//! * `csv sink`: a [`CsvSink`] (reads come from its in-memory directory, every op rewrites
//!   the files);
//! * `csv files`: every read goes through a freshly opened [`CsvSource`] on the files the
//!   sink wrote, so each case also round-trips through the CSV text on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use idsync_conformance::{Harness, run_all};
use idsync_core::{
    Account, Anchor, Applied, Capabilities, Descriptor, MemoryAdapter, Op, Org, Page, PageRequest,
    Result, Sink, Source,
};
use idsync_csv::{CsvConfig, CsvSink, CsvSource, export};

struct Files {
    dirs: Mutex<Vec<tempfile::TempDir>>,
    through_source: bool,
}

impl Files {
    fn new(through_source: bool) -> Self {
        Files {
            dirs: Mutex::new(Vec::new()),
            through_source,
        }
    }

    fn config(&self) -> CsvConfig {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CsvConfig::new(
            dir.path().join("accounts.csv"),
            Some(dir.path().join("orgs.csv")),
        );
        self.dirs.lock().unwrap().push(dir);
        cfg
    }
}

/// A sink whose reads go through a `CsvSource` on the files on disk.
#[derive(Debug)]
struct FileBacked {
    cfg: CsvConfig,
    sink: CsvSink,
}

impl FileBacked {
    fn source(&self) -> Result<CsvSource> {
        CsvSource::open(self.cfg.clone())
    }
}

#[async_trait]
impl Source for FileBacked {
    fn describe(&self) -> Descriptor {
        self.sink.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.sink.capabilities()
    }
    async fn check(&self) -> Result<()> {
        self.source()?.check().await
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.source()?.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.source()?.accounts(page).await
    }

    async fn org(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Org>> {
        self.source()?.org(anchor).await
    }

    async fn account(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Account>> {
        self.source()?.account(anchor).await
    }

    async fn find_accounts(
        &self,
        field: &str,
        value: &str,
    ) -> idsync_core::Result<Vec<idsync_core::Account>> {
        self.source()?.find_accounts(field, value).await
    }
}

#[async_trait]
impl Sink for FileBacked {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.sink.apply(op).await
    }
}

#[async_trait]
impl Harness for Files {
    fn name(&self) -> String {
        if self.through_source {
            "csv files (reads through CsvSource)".into()
        } else {
            "csv sink".into()
        }
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let cfg = self.config();
        // Seed by exporting, as a user would hand over a spreadsheet.
        let seed = MemoryAdapter::with_data("seed", orgs, accounts);
        export(&seed, &cfg).await?;
        let sink = CsvSink::open(cfg.clone())?;
        if self.through_source {
            Ok(Arc::new(FileBacked { cfg, sink }))
        } else {
            Ok(Arc::new(sink))
        }
    }

    fn missing_anchor(&self, kind: idsync_core::EntityKind) -> Anchor {
        Anchor::from(format!("missing-{}", kind.as_str()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_csv_sink() {
    let report = run_all(&Files::new(false)).await;
    println!("{report}");
    report.assert_passed();
    assert!(report.passed_cases().len() >= 8, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_csv_files_through_source() {
    let report = run_all(&Files::new(true)).await;
    println!("{report}");
    report.assert_passed();
    assert!(report.passed_cases().len() >= 8, "{report}");
}
