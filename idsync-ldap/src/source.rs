//! [`LdapDirectory`]: the [`Source`] side (paged listings, anchor and DN lookups).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ldap3::{Ldap, Scope};
use tokio::sync::Mutex;

use idsync_core::{
    Account, Anchor, Capabilities, ChangeSet, Descriptor, Error, ErrorKind, Org, Page, PageRequest,
    PageToken, Result, Source, SyncCursor,
};

use crate::client::{self, RawEntry};
use crate::config::{Dialect, IncrementalMode, LdapConfig};
use crate::dn::Dn;
use crate::error::{LdapError, PROVIDER};
use crate::mapping;

/// How many unfinished listings (each with its own connection) are kept at once.
const MAX_LISTINGS: usize = 16;

/// An OpenLDAP or Active Directory server as an idsync [`Source`] and
/// [`Sink`](idsync_core::Sink).
///
/// * Orgs are the OUs below `base_dn` (the base entry itself is not an org: an OU directly
///   below it has no parent). Accounts belong to the nearest org above them; an account
///   directly below `base_dn` or in a non-OU container belongs to none.
/// * Listings are always paged. A paged-results cookie is bound to its connection, so each
///   listing gets a connection of its own, kept until its last page.
/// * The connection for lookups and writes is opened lazily and reopened when it drops.
pub struct LdapDirectory {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: LdapConfig,
    pub(crate) map: BTreeMap<String, String>,
    pub(crate) base: Dn,
    pub(crate) ops: Mutex<Option<Ldap>>,
    listings: Mutex<HashMap<u64, Listing>>,
    next_listing: AtomicU64,
}

type Fetched = std::result::Result<(Vec<RawEntry>, Option<Vec<u8>>), LdapError>;

/// Reads one page on its own (owned arguments, so it can run as a task).
async fn fetch_page(
    mut ldap: Ldap,
    base: String,
    filter: String,
    attrs: Vec<String>,
    size: u32,
    cookie: Vec<u8>,
) -> Fetched {
    let refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    client::paged_page(
        &mut ldap,
        &base,
        Scope::Subtree,
        &filter,
        &refs,
        size,
        &cookie,
    )
    .await
}

struct Listing {
    /// The next page, requested as soon as this one arrived: the server and the network
    /// work while the caller maps and stores the current page.
    prefetch: Option<tokio::task::JoinHandle<Fetched>>,
    ldap: Ldap,
    seq: u64,
    /// Pages served so far (part of the token: servers such as AD may repeat a cookie).
    pages: u64,
    /// DN key -> anchor of the nearest org at or above that DN (`None`: no org).
    orgs: HashMap<String, Option<Anchor>>,
    /// manager DN key -> anchor
    managers: HashMap<String, Option<Anchor>>,
}

impl fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Clone for LdapDirectory {
    fn clone(&self) -> Self {
        LdapDirectory {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Orgs,
    Accounts,
}

impl LdapDirectory {
    /// Checks the configuration; no connection is made until the first call.
    pub fn new(cfg: LdapConfig) -> Result<Self> {
        cfg.validate()?;
        let map = cfg.account_map()?;
        let base = Dn::parse(&cfg.base_dn).map_err(|e| Error::config(e.to_string()))?;
        Ok(LdapDirectory {
            inner: Arc::new(Inner {
                cfg,
                map,
                base,
                ops: Mutex::new(None),
                listings: Mutex::new(HashMap::new()),
                next_listing: AtomicU64::new(1),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LdapConfig {
        &self.inner.cfg
    }

    async fn list_page(
        &self,
        kind: Kind,
        req: PageRequest,
    ) -> Result<(Vec<RawEntry>, u64, Option<PageToken>)> {
        let inner = &self.inner;
        let size = req
            .size
            .map(|s| s.clamp(1, i32::MAX as usize) as u32)
            .unwrap_or(inner.cfg.page_size);
        let (id, cookie, mut listing) = match &req.token {
            None => {
                let ldap = client::connect(&inner.cfg).await.map_err(Error::from)?;
                let id = inner.next_listing.fetch_add(1, Ordering::Relaxed);
                (
                    id,
                    Vec::new(),
                    Listing {
                        prefetch: None,
                        ldap,
                        seq: id,
                        pages: 0,
                        orgs: HashMap::new(),
                        managers: HashMap::new(),
                    },
                )
            }
            Some(tok) => {
                let (id, page, cookie) = parse_token(tok)?;
                let listing = inner.listings.lock().await.remove(&id).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Incomplete,
                        "this page token's listing is gone (finished, evicted or from another process); start the listing again",
                    )
                    .with_provider(PROVIDER)
                })?;
                if listing.pages != page {
                    return Err(Error::new(
                        ErrorKind::Incomplete,
                        format!(
                            "page token for page {page} of a listing that is at page {}; start the listing again",
                            listing.pages
                        ),
                    )
                    .with_provider(PROVIDER));
                }
                (id, cookie, listing)
            }
        };
        let (filter, attrs) = match kind {
            Kind::Orgs => (
                inner.cfg.org_filter().to_owned(),
                mapping::org_attrs(&inner.cfg),
            ),
            Kind::Accounts => (
                inner.cfg.account_filter().to_owned(),
                mapping::account_attrs(&inner.cfg, &inner.map),
            ),
        };
        let fetched = match listing.prefetch.take() {
            Some(task) => task.await.map_err(|e| {
                Error::unexpected(format!("reading the next page failed: {e}"))
                    .with_provider(PROVIDER)
            })?,
            None => {
                fetch_page(
                    listing.ldap.clone(),
                    inner.cfg.base_dn.clone(),
                    filter.clone(),
                    attrs.clone(),
                    size,
                    cookie,
                )
                .await
            }
        };
        let (entries, next) =
            fetched.map_err(|e| Error::from(e).with_operation(kind_name(kind)))?;
        if let Some(c) = &next {
            listing.prefetch = Some(tokio::spawn(fetch_page(
                listing.ldap.clone(),
                inner.cfg.base_dn.clone(),
                filter,
                attrs,
                size,
                c.clone(),
            )));
        }
        let items = entries;
        let token = match next {
            Some(c) => {
                listing.pages += 1;
                let tok = PageToken(format!("{id}.{}.{}", listing.pages, B64.encode(&c)));
                Some(tok)
            }
            None => None,
        };
        // keep the listing's connection (and caches) for its next page
        let out_items = items;
        if token.is_some() {
            let mut all = inner.listings.lock().await;
            if all.len() >= MAX_LISTINGS
                && let Some(oldest) = all.values().map(|l| l.seq).min()
            {
                all.retain(|_, l| l.seq != oldest);
            }
            all.insert(id, listing);
        } else {
            let _ = listing.ldap.unbind().await;
        }
        Ok((out_items, id, token))
    }

    /// The ops connection, opened (again) when needed.
    pub(crate) async fn ops(&self) -> Result<Ldap> {
        let mut guard = self.inner.ops.lock().await;
        if let Some(l) = guard.as_mut()
            && !l.is_closed()
        {
            return Ok(l.clone());
        }
        let ldap = client::connect(&self.inner.cfg)
            .await
            .map_err(Error::from)?;
        *guard = Some(ldap.clone());
        Ok(ldap)
    }

    /// Finds the DN of the entry with this anchor below `base_dn`.
    pub(crate) async fn dn_of(&self, anchor: &Anchor) -> Result<Option<String>> {
        let filter = mapping::anchor_filter(&self.inner.cfg, anchor)?;
        let mut ldap = self.ops().await?;
        let found = client::paged_all(
            &mut ldap,
            &self.inner.cfg.base_dn,
            Scope::Subtree,
            &filter,
            &["1.1"],
            10,
        )
        .await
        .map_err(Error::from)?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.dn.clone())),
            _ => Err(Error::new(
                ErrorKind::Conflict,
                format!("{} entries carry anchor {anchor}", found.len()),
            )
            .with_provider(PROVIDER)),
        }
    }

    /// Like [`Self::dn_of`] but a missing entry is a NotFound error.
    pub(crate) async fn require_dn(&self, anchor: &Anchor, what: &str) -> Result<String> {
        self.dn_of(anchor).await?.ok_or_else(|| {
            Error::not_found(format!(
                "no {what} with anchor {anchor} below {}",
                self.inner.cfg.base_dn
            ))
            .with_provider(PROVIDER)
            .with_provider_code("32")
            .with_context("anchor", anchor.as_str())
        })
    }

    /// The anchor of the nearest org at or above `dn` (stopping at the base), using and
    /// filling `cache`.
    pub(crate) async fn org_at_or_above(
        &self,
        dn: &Dn,
        cache: &mut HashMap<String, Option<Anchor>>,
    ) -> Result<Option<Anchor>> {
        let mut walked = Vec::new();
        let mut cur = dn.clone();
        let mut found: Option<Anchor> = None;
        let base_key = self.inner.base.key();
        loop {
            let key = cur.key();
            if key == base_key || !cur.is_within(&self.inner.base) || cur.is_root() {
                break;
            }
            if let Some(hit) = cache.get(&key) {
                found = hit.clone();
                break;
            }
            walked.push(key);
            let mut ldap = self.ops().await?;
            let attr = self.inner.cfg.anchor_attr().to_owned();
            let res = client::search_raw(
                &mut ldap,
                &cur.to_string(),
                Scope::Base,
                self.inner.cfg.org_filter(),
                &[attr.as_str()],
                vec![],
            )
            .await
            .map_err(Error::from)?;
            let rc = res.result.as_ref().map(|r| r.rc).unwrap_or(80);
            if rc != 0 && rc != 32 {
                if let Some(r) = res.result {
                    return Err(crate::error::result_error(&r, "resolve org"));
                }
            }
            if let Some(e) = res.entries.first()
                && let Some(a) = mapping::anchor_of(&self.inner.cfg, e)
            {
                found = Some(a);
                break;
            }
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        for k in walked {
            cache.insert(k, found.clone());
        }
        Ok(found)
    }

    /// The anchor of the account at `dn` (a manager reference), cached.
    pub(crate) async fn account_anchor_at(
        &self,
        dn: &str,
        cache: &mut HashMap<String, Option<Anchor>>,
    ) -> Result<Option<Anchor>> {
        let Ok(parsed) = Dn::parse(dn) else {
            return Ok(None);
        };
        let key = parsed.key();
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let mut ldap = self.ops().await?;
        let attr = self.inner.cfg.anchor_attr().to_owned();
        let found = client::read_entry(&mut ldap, dn, &[attr.as_str()])
            .await
            .map_err(Error::from)?
            .and_then(|e| mapping::anchor_of(&self.inner.cfg, &e));
        cache.insert(key, found.clone());
        Ok(found)
    }

    /// The nearest org above the entry `dn`, cached by the raw parent DN string first (the
    /// common case: many entries below one OU cost one hash lookup each).
    async fn org_above(
        &self,
        dn: &str,
        cache: &mut HashMap<String, Option<Anchor>>,
    ) -> Result<Option<Anchor>> {
        let Some(parent_raw) = split_parent(dn) else {
            return Ok(None);
        };
        let mut raw_key = String::with_capacity(parent_raw.len() + 4);
        raw_key.push_str("raw:");
        raw_key.push_str(parent_raw.trim());
        raw_key.make_ascii_lowercase();
        if let Some(hit) = cache.get(&raw_key) {
            return Ok(hit.clone());
        }
        let parent = Dn::parse(parent_raw).map_err(|err| Error::invalid_data(err.to_string()))?;
        let found = self.org_at_or_above(&parent, cache).await?;
        cache.insert(raw_key, found.clone());
        Ok(found)
    }

    /// Maps an org entry (parent resolved through `cache`).
    pub(crate) async fn to_org(
        &self,
        e: &RawEntry,
        cache: &mut HashMap<String, Option<Anchor>>,
    ) -> Result<Org> {
        let dn = Dn::parse(&e.dn).map_err(|err| Error::invalid_data(err.to_string()))?;
        let parent = self.org_above(&e.dn, cache).await?;
        let org = mapping::entry_to_org(&self.inner.cfg, e, parent)?;
        cache.insert(dn.key(), Some(org.anchor.clone()));
        cache.insert(
            format!("raw:{}", e.dn.trim().to_ascii_lowercase()),
            Some(org.anchor.clone()),
        );
        Ok(org)
    }

    /// Maps an account entry (org and manager resolved through the caches).
    pub(crate) async fn to_account(
        &self,
        e: &RawEntry,
        orgs: &mut HashMap<String, Option<Anchor>>,
        managers: &mut HashMap<String, Option<Anchor>>,
    ) -> Result<Account> {
        let org = self.org_above(&e.dn, orgs).await?;
        let manager = match self.inner.map.get("manager").and_then(|a| e.get(a)) {
            Some(mdn) => self.account_anchor_at(&mdn, managers).await?,
            None => None,
        };
        mapping::entry_to_account(&self.inner.cfg, &self.inner.map, e, org, manager)
    }

    /// True when `dn` is the base entry itself.
    pub(crate) fn is_base(&self, dn: &str) -> bool {
        if dn.eq_ignore_ascii_case(&self.inner.cfg.base_dn) {
            return true;
        }
        // only a DN with as many RDNs as the base can be the base
        rdn_count(dn) == self.inner.base.0.len()
            && Dn::parse(dn).is_ok_and(|d| d.key() == self.inner.base.key())
    }

    async fn restore_listing_caches(
        &self,
        id: u64,
        orgs: HashMap<String, Option<Anchor>>,
        managers: HashMap<String, Option<Anchor>>,
    ) {
        if let Some(l) = self.inner.listings.lock().await.get_mut(&id) {
            l.orgs = orgs;
            l.managers = managers;
        }
    }

    async fn take_listing_caches(
        &self,
        id: u64,
    ) -> (
        HashMap<String, Option<Anchor>>,
        HashMap<String, Option<Anchor>>,
    ) {
        match self.inner.listings.lock().await.get_mut(&id) {
            Some(l) => (std::mem::take(&mut l.orgs), std::mem::take(&mut l.managers)),
            None => (HashMap::new(), HashMap::new()),
        }
    }
}

/// The parent part of a DN string (after the first unescaped separator), without parsing.
pub(crate) fn split_parent(dn: &str) -> Option<&str> {
    let b = dn.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b',' | b';' if !quoted => return dn.get(i + 1..),
            _ => {}
        }
        i += 1;
    }
    None
}

fn rdn_count(dn: &str) -> usize {
    let mut n = 1;
    let mut rest = dn;
    while let Some(p) = split_parent(rest) {
        n += 1;
        rest = p;
    }
    n
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Orgs => "list orgs",
        Kind::Accounts => "list accounts",
    }
}

fn parse_token(tok: &PageToken) -> Result<(u64, u64, Vec<u8>)> {
    let bad = || {
        Error::invalid_data(format!("malformed LDAP page token {:?}", tok.0))
            .with_provider(PROVIDER)
    };
    let mut parts = tok.0.splitn(3, '.');
    let (Some(id), Some(page), Some(cookie)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let id = id.parse::<u64>().map_err(|_| bad())?;
    let page = page.parse::<u64>().map_err(|_| bad())?;
    let cookie = B64.decode(cookie).map_err(|_| bad())?;
    Ok((id, page, cookie))
}

#[async_trait]
impl Source for LdapDirectory {
    fn describe(&self) -> Descriptor {
        Descriptor::new(
            PROVIDER,
            format!("{} {}", self.inner.cfg.url, self.inner.cfg.base_dn),
        )
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::read_write();
        caps.orgs = self.inner.cfg.orgs;
        caps.changes = self.inner.cfg.incremental_mode() != IncrementalMode::None;
        caps.assigns_anchors = true;
        caps.disable =
            self.inner.cfg.dialect == Dialect::Ad || self.inner.cfg.disable_marker().is_some();
        caps.max_page_size = None;
        caps
    }

    async fn check(&self) -> Result<()> {
        let mut ldap = client::connect(&self.inner.cfg)
            .await
            .map_err(|e| Error::from(e).with_operation("check"))?;
        let found = client::read_entry(&mut ldap, &self.inner.cfg.base_dn, &["1.1"])
            .await
            .map_err(|e| Error::from(e).with_operation("check"))?;
        let _ = ldap.unbind().await;
        if found.is_none() {
            return Err(Error::not_found(format!(
                "base_dn {} does not exist",
                self.inner.cfg.base_dn
            ))
            .with_provider(PROVIDER)
            .with_operation("check"));
        }
        Ok(())
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        if !self.inner.cfg.orgs {
            return Ok(Page::last(Vec::new()));
        }
        let (entries, id, next) = self.list_page(Kind::Orgs, page).await?;
        let (mut cache, managers) = self.take_listing_caches(id).await;
        let mut items = Vec::with_capacity(entries.len());
        for e in &entries {
            if self.is_base(&e.dn) {
                continue;
            }
            items.push(self.to_org(e, &mut cache).await?);
        }
        self.restore_listing_caches(id, cache, managers).await;
        Ok(Page { items, next })
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let (entries, id, next) = self.list_page(Kind::Accounts, page).await?;
        let (mut orgs, mut managers) = self.take_listing_caches(id).await;
        let mut items = Vec::with_capacity(entries.len());
        for e in &entries {
            if self.is_base(&e.dn) {
                continue;
            }
            items.push(self.to_account(e, &mut orgs, &mut managers).await?);
        }
        self.restore_listing_caches(id, orgs, managers).await;
        Ok(Page { items, next })
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        crate::changes::current_cursor(self).await
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        crate::changes::changes(self, since).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parents_without_parsing() {
        assert_eq!(split_parent(r"uid=a\,b,ou=x,dc=y"), Some("ou=x,dc=y"));
        assert_eq!(split_parent(r"cn=a\\,ou=x"), Some("ou=x"));
        assert_eq!(split_parent(r#"cn="a,b",ou=x"#), Some("ou=x"));
        assert_eq!(split_parent("dc=com"), None);
        assert_eq!(rdn_count(r"uid=a\,b,ou=x,dc=y"), 3);
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let tok = PageToken(format!("7.2.{}", B64.encode(b"\x00cookie\xff")));
        assert_eq!(
            parse_token(&tok).unwrap(),
            (7, 2, b"\x00cookie\xff".to_vec())
        );
        for bad in ["", "7", "7.AA", "x.1.AA", "7.x.AA", "7.1.!!"] {
            assert!(parse_token(&PageToken(bad.into())).is_err(), "{bad}");
        }
    }
}
