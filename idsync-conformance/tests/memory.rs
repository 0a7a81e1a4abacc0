//! The in-memory adapter passes the suite bare, with its own anchors and small pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use idsync_conformance::{ChaosLayer, Fault, Harness, run_all};
use idsync_core::{Account, ErrorKind, Layer, MemoryAdapter, Org, Result, Sink, Source};

struct Memory {
    assign: bool,
    max_page: Option<usize>,
    pages: Arc<AtomicU64>,
}

#[async_trait]
impl Harness for Memory {
    fn name(&self) -> String {
        format!(
            "memory (assign anchors: {}, max page: {:?})",
            self.assign, self.max_page
        )
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let mut m = MemoryAdapter::with_data("conformance", orgs, accounts)
            .with_page_counter(self.pages.clone());
        if self.assign {
            m = m.assigning_anchors();
        }
        if let Some(n) = self.max_page {
            m = m.with_max_page_size(n);
        }
        Ok(Arc::new(m))
    }

    fn listing_reads(&self) -> Option<u64> {
        Some(self.pages.load(Ordering::Relaxed))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        Some(
            ChaosLayer::always(Fault::Fail(ErrorKind::Unauthenticated))
                .layer_source(Arc::new(MemoryAdapter::new("bad-credentials"))),
        )
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        Some(
            ChaosLayer::always(Fault::Throttle(std::time::Duration::from_secs(1)))
                .layer_source(Arc::new(MemoryAdapter::new("throttled"))),
        )
    }
}

#[tokio::test]
async fn memory_bare() {
    let report = run_all(&Memory {
        assign: false,
        max_page: None,
        pages: Arc::default(),
    })
    .await;
    println!("{report}");
    report.assert_passed();
    assert!(report.skipped_cases().is_empty(), "{report}");
}

#[tokio::test]
async fn memory_assigning_anchors_small_pages() {
    let report = run_all(&Memory {
        assign: true,
        max_page: Some(2),
        pages: Arc::default(),
    })
    .await;
    println!("{report}");
    report.assert_passed();
    assert!(report.skipped_cases().is_empty(), "{report}");
}
