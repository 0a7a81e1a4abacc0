//! [`HubTarget`]: the hub as the sink of the SCIM server's jobs, with direct lookups.

use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, Descriptor, Entity, Hub, Op, Org, Page, PageRequest,
    Result, Sink, Source, Store,
};

/// The hub of a store as a sink, looking entities up by anchor in the store instead of
/// scanning the listing. `find_accounts` by `anchor` is a direct lookup too (the SCIM
/// server correlates by anchor: a SCIM `id` is a hub anchor); by any other field it is an
/// explicit scan of the hub's accounts, page by page.
#[derive(Debug, Clone)]
pub struct HubTarget {
    hub: Hub,
    store: Arc<dyn Store>,
}

impl HubTarget {
    /// The hub of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        HubTarget {
            hub: Hub::new(store.clone()),
            store,
        }
    }
}

const SCAN_PAGE: usize = 5_000;

#[async_trait]
impl Source for HubTarget {
    fn describe(&self) -> Descriptor {
        self.hub.describe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: false,
            ..self.hub.capabilities()
        }
    }

    async fn check(&self) -> Result<()> {
        self.hub.check().await
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.store.hub_orgs(page).await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.store.hub_accounts(page).await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.store.hub_org(anchor).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.store.hub_account(anchor).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        if field == "anchor" {
            return Ok(self
                .store
                .hub_account(&Anchor::from(value.trim()))
                .await?
                .into_iter()
                .collect());
        }
        let want = value.trim().to_lowercase();
        let mut out = Vec::new();
        let mut req = PageRequest::sized(SCAN_PAGE);
        loop {
            let page = self.store.hub_accounts(req.clone()).await?;
            out.extend(page.items.into_iter().filter(|a| {
                a.get(field)
                    .as_str()
                    .is_some_and(|v| v.trim().to_lowercase() == want)
            }));
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl Sink for HubTarget {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.hub.apply(op).await
    }
}
