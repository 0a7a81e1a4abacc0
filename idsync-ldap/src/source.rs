//! [`LdapDirectory`]: the [`Source`] side (paged listings, anchor and DN lookups).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
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

/// How many listings (each unfinished one with its own connection) are kept at once.
const MAX_LISTINGS: usize = 16;

/// An OpenLDAP or Active Directory server as an idsync [`Source`] and
/// [`Sink`](idsync_core::Sink).
///
/// * Orgs are the OUs below `base_dn` (the base entry itself is not an org: an OU directly
///   below it has no parent). Accounts belong to the nearest org above them; an account
///   directly below `base_dn` or in a non-OU container belongs to none.
/// * Listings are always paged. A paged-results cookie is bound to its connection, so each
///   listing gets a connection of its own, kept until its last page.
/// * A page can be read again with the same token: the last page served is kept for a
///   replay, and a page whose fetch failed (or was cancelled) is read by re-issuing the
///   search on a new connection and skipping the entries already served, after checking
///   that they are the same entries in the same order.
/// * [`Source::org`], [`Source::account`] and [`Source::find_accounts`] are direct
///   searches, never listings.
/// * The connection for lookups and writes is opened lazily and reopened when it drops.
pub struct LdapDirectory {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: LdapConfig,
    pub(crate) map: BTreeMap<String, String>,
    pub(crate) base: Dn,
    pub(crate) ops: Mutex<Option<Ldap>>,
    listings: Mutex<BTreeMap<u64, Slot>>,
    next_listing: AtomicU64,
}

type Fetched = std::result::Result<(Vec<RawEntry>, Option<Vec<u8>>), LdapError>;

/// What one listing searches for; the same for every page of it, and for a re-issued search.
#[derive(Clone)]
struct Query {
    base: String,
    filter: String,
    attrs: Vec<String>,
}

/// Reads one page on its own (owned arguments, so it can run as a task).
async fn fetch_page(mut ldap: Ldap, q: Query, size: u32, cookie: Vec<u8>) -> Fetched {
    let refs: Vec<&str> = q.attrs.iter().map(String::as_str).collect();
    client::paged_page(
        &mut ldap,
        &q.base,
        Scope::Subtree,
        &q.filter,
        &refs,
        size,
        &cookie,
    )
    .await
}

/// A listing in the table: the random part of its tokens, and its state.
struct Slot {
    key: u64,
    listing: Arc<Mutex<Listing>>,
}

/// The connection that carries a listing on, with its next page already requested.
struct Conn {
    ldap: Ldap,
    /// The next page, requested as soon as the current one arrived: the server and the
    /// network work while the caller maps and stores the current page.
    next: tokio::task::JoinHandle<Fetched>,
}

/// A page as read from the server: the connection it came on, its entries, the next cookie.
type Arrived = (Ldap, Vec<RawEntry>, Option<Vec<u8>>);

struct Listing {
    id: u64,
    /// The random part of this listing's tokens.
    key: u64,
    kind: Kind,
    /// Pages served so far; the token for the next page carries this number (servers
    /// such as AD may repeat a cookie, so the cookie cannot identify a page).
    pages: u64,
    /// True once the last page was served.
    done: bool,
    /// Raw entries served so far, and an ordered digest of their anchors: a re-issued
    /// search skips that many entries and must reproduce the digest.
    served: u64,
    digest: DefaultHasher,
    /// The last page served and the token after it, for a replay of that page's token.
    last: Option<(Arc<Vec<RawEntry>>, Option<PageToken>)>,
    /// `None` when finished, or when the last fetch failed or was cancelled (then the
    /// next read re-issues the search).
    conn: Option<Conn>,
    /// DN key -> anchor of the nearest org at or above that DN (`None`: no org).
    orgs: HashMap<String, Option<Anchor>>,
    /// manager DN key -> anchor
    managers: HashMap<String, Option<Anchor>>,
}

/// Adds one entry to a listing digest: its anchor value, or its DN when it has none.
fn digest_entry(h: &mut DefaultHasher, anchor_attr: &str, e: &RawEntry) {
    match e.get_bytes(anchor_attr) {
        Some(b) => b.hash(h),
        None => e.dn.as_bytes().hash(h),
    }
}

impl Listing {
    fn new(id: u64, key: u64, kind: Kind) -> Self {
        Listing {
            id,
            key,
            kind,
            pages: 0,
            done: false,
            served: 0,
            digest: DefaultHasher::new(),
            last: None,
            conn: None,
            orgs: HashMap::new(),
            managers: HashMap::new(),
        }
    }

    /// Records a page as served and requests the next one on `ldap`. Returns the page,
    /// its next token, and the connection to unbind when the listing is finished.
    fn advance(
        &mut self,
        anchor_attr: &str,
        q: Query,
        size: u32,
        (ldap, entries, next): Arrived,
    ) -> (Arc<Vec<RawEntry>>, Option<PageToken>, Option<Ldap>) {
        for e in &entries {
            digest_entry(&mut self.digest, anchor_attr, e);
        }
        self.served += entries.len() as u64;
        self.pages += 1;
        let (token, finished) = match next {
            Some(cookie) => {
                self.conn = Some(Conn {
                    next: tokio::spawn(fetch_page(ldap.clone(), q, size, cookie)),
                    ldap,
                });
                (Some(make_token(self.id, self.pages, self.key)), None)
            }
            None => {
                self.done = true;
                self.conn = None;
                self.orgs = HashMap::new();
                self.managers = HashMap::new();
                (None, Some(ldap))
            }
        };
        let entries = Arc::new(entries);
        self.last = Some((Arc::clone(&entries), token.clone()));
        (entries, token, finished)
    }
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Orgs,
    Accounts,
}

/// One page of a listing, as [`LdapDirectory::list_page`] hands it out.
struct Served {
    entries: Arc<Vec<RawEntry>>,
    listing: Option<Arc<Mutex<Listing>>>,
    next: Option<PageToken>,
}

impl LdapDirectory {
    /// Checks the configuration and reads the bind password it references
    /// (`bind_password_env` / `bind_password_file`); no connection is made until the first
    /// call.
    pub fn new(mut cfg: LdapConfig) -> Result<Self> {
        cfg.validate()?;
        cfg.read_secrets()?;
        let map = cfg.account_map()?;
        let base = Dn::parse(&cfg.base_dn).map_err(|e| Error::config(e.to_string()))?;
        Ok(LdapDirectory {
            inner: Arc::new(Inner {
                cfg,
                map,
                base,
                ops: Mutex::new(None),
                listings: Mutex::new(BTreeMap::new()),
                next_listing: AtomicU64::new(1),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LdapConfig {
        &self.inner.cfg
    }

    fn query(&self, kind: Kind) -> Query {
        let cfg = &self.inner.cfg;
        let (filter, attrs) = match kind {
            Kind::Orgs => (cfg.org_filter().to_owned(), mapping::org_attrs(cfg)),
            Kind::Accounts => (
                cfg.account_filter().to_owned(),
                mapping::account_attrs(cfg, &self.inner.map),
            ),
        };
        Query {
            base: cfg.base_dn.clone(),
            filter,
            attrs,
        }
    }

    async fn list_page(&self, kind: Kind, req: PageRequest) -> Result<Served> {
        let inner = &self.inner;
        let size = req
            .size
            .map(|s| s.clamp(1, i32::MAX as usize) as u32)
            .unwrap_or(inner.cfg.page_size);
        let q = self.query(kind);
        let anchor_attr = inner.cfg.anchor_attr();
        let fail = |e: LdapError| Error::from(e).with_operation(kind_name(kind));
        let Some(tok) = &req.token else {
            // a new listing on a connection of its own
            let ldap = client::connect(&inner.cfg).await.map_err(fail)?;
            let (entries, next) = fetch_page(ldap.clone(), q.clone(), size, Vec::new())
                .await
                .map_err(fail)?;
            let id = inner.next_listing.fetch_add(1, Ordering::Relaxed);
            let key = rand::random::<u64>();
            let mut listing = Listing::new(id, key, kind);
            let (entries, next, finished) =
                listing.advance(anchor_attr, q, size, (ldap, entries, next));
            if let Some(mut ldap) = finished {
                let _ = ldap.unbind().await;
                return Ok(Served {
                    entries,
                    listing: None,
                    next,
                });
            }
            let listing = Arc::new(Mutex::new(listing));
            let mut all = inner.listings.lock().await;
            while all.len() >= MAX_LISTINGS {
                // the oldest goes (ids grow)
                if all.pop_first().is_none() {
                    break;
                }
            }
            all.insert(
                id,
                Slot {
                    key,
                    listing: Arc::clone(&listing),
                },
            );
            return Ok(Served {
                entries,
                listing: Some(listing),
                next,
            });
        };
        let (id, page, key) = parse_token(tok)?;
        let gone = || {
            Error::new(
                ErrorKind::Incomplete,
                "this page token's listing is gone (evicted, or from another process); start the listing again",
            )
            .with_provider(PROVIDER)
            .with_operation(kind_name(kind))
        };
        let handle = {
            let all = inner.listings.lock().await;
            match all.get(&id) {
                Some(slot) if slot.key == key => Arc::clone(&slot.listing),
                _ => return Err(gone()),
            }
        };
        // held across the fetch: a second caller of the same listing waits, and a caller
        // that is cancelled (a timeout) leaves the listing in a state a retry can resume
        let mut l = handle.lock().await;
        if l.kind != kind {
            return Err(gone());
        }
        if page.checked_add(1) == Some(l.pages)
            && let Some((entries, next)) = &l.last
        {
            // a replay of the page served last (its answer was lost on the way up)
            return Ok(Served {
                entries: Arc::clone(entries),
                listing: Some(Arc::clone(&handle)),
                next: next.clone(),
            });
        }
        if page != l.pages || l.done {
            return Err(Error::new(
                ErrorKind::Incomplete,
                format!(
                    "page token for page {page} of a listing that has served {} pages{}; start the listing again",
                    l.pages,
                    if l.done { " and is finished" } else { "" }
                ),
            )
            .with_provider(PROVIDER)
            .with_operation(kind_name(kind)));
        }
        let arrived = match l.conn.take() {
            Some(conn) => {
                let fetched = conn.next.await.map_err(|e| {
                    Error::unexpected(format!("reading the next page failed: {e}"))
                        .with_provider(PROVIDER)
                        .with_operation(kind_name(kind))
                })?;
                // on an error the listing has no connection: the retry re-issues the search
                let (entries, next) = fetched.map_err(fail)?;
                (conn.ldap, entries, next)
            }
            None => self.resume(&l, &q, size).await?,
        };
        let (entries, next, finished) = l.advance(anchor_attr, q, size, arrived);
        drop(l);
        if let Some(mut ldap) = finished {
            let _ = ldap.unbind().await;
        }
        Ok(Served {
            entries,
            listing: Some(handle),
            next,
        })
    }

    /// Re-issues a listing's search on a new connection after a failed or cancelled page
    /// fetch: skips the entries already served, checks they are the same ones in the same
    /// order (else the listing cannot be resumed and fails), and returns the next page.
    async fn resume(&self, l: &Listing, q: &Query, size: u32) -> Result<Arrived> {
        let kind = l.kind;
        let fail = |e: LdapError| Error::from(e).with_operation(kind_name(kind));
        let anchor_attr = self.inner.cfg.anchor_attr();
        let ldap = client::connect(&self.inner.cfg).await.map_err(fail)?;
        let changed = |why: &str| {
            Error::new(
                ErrorKind::Incomplete,
                format!(
                    "page {} could not be re-read: the {} entries served before it {why}, so the directory changed while the listing was interrupted; start the listing again",
                    l.pages, l.served
                ),
            )
            .with_provider(PROVIDER)
            .with_operation(kind_name(kind))
        };
        let mut left = l.served;
        let mut digest = DefaultHasher::new();
        let mut verified = false;
        let mut cookie = Vec::new();
        loop {
            let (mut entries, next) = fetch_page(ldap.clone(), q.clone(), size, cookie)
                .await
                .map_err(fail)?;
            if !verified {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(entries.len());
                for e in &entries[..n] {
                    digest_entry(&mut digest, anchor_attr, e);
                }
                left -= n as u64;
                if left > 0 {
                    match next {
                        Some(c) => {
                            cookie = c;
                            continue;
                        }
                        None => return Err(changed("are no longer all there")),
                    }
                }
                if digest.finish() != l.digest.finish() {
                    return Err(changed("came back different"));
                }
                verified = true;
                entries.drain(..n);
            }
            match next {
                Some(c) if entries.is_empty() => cookie = c,
                next => return Ok((ldap, entries, next)),
            }
        }
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

    /// Puts a listing's caches back after a page was mapped (a finished listing drops them).
    async fn restore_listing_caches(
        listing: Option<&Arc<Mutex<Listing>>>,
        orgs: HashMap<String, Option<Anchor>>,
        managers: HashMap<String, Option<Anchor>>,
    ) {
        if let Some(l) = listing {
            let mut l = l.lock().await;
            if !l.done {
                l.orgs = orgs;
                l.managers = managers;
            }
        }
    }

    async fn take_listing_caches(
        listing: Option<&Arc<Mutex<Listing>>>,
    ) -> (
        HashMap<String, Option<Anchor>>,
        HashMap<String, Option<Anchor>>,
    ) {
        match listing {
            Some(l) => {
                let mut l = l.lock().await;
                (std::mem::take(&mut l.orgs), std::mem::take(&mut l.managers))
            }
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

fn make_token(id: u64, page: u64, key: u64) -> PageToken {
    PageToken(format!("{id}.{page}.{key:016x}"))
}

/// `"<listing id>.<pages served>.<random key>"`: the listing's state stays here; the key
/// keeps a token of another instance or an earlier listing from naming this one.
fn parse_token(tok: &PageToken) -> Result<(u64, u64, u64)> {
    let bad = || {
        Error::invalid_data(format!("malformed LDAP page token {:?}", tok.0))
            .with_provider(PROVIDER)
    };
    let mut parts = tok.0.splitn(3, '.');
    let (Some(id), Some(page), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let id = id.parse::<u64>().map_err(|_| bad())?;
    let page = page.parse::<u64>().map_err(|_| bad())?;
    if key.len() != 16 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let key = u64::from_str_radix(key, 16).map_err(|_| bad())?;
    Ok((id, page, key))
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
        let served = self.list_page(Kind::Orgs, page).await?;
        let (mut cache, managers) = Self::take_listing_caches(served.listing.as_ref()).await;
        let mut items = Vec::with_capacity(served.entries.len());
        for e in served.entries.iter() {
            if self.is_base(&e.dn) {
                continue;
            }
            items.push(self.to_org(e, &mut cache).await?);
        }
        Self::restore_listing_caches(served.listing.as_ref(), cache, managers).await;
        Ok(Page {
            items,
            next: served.next,
        })
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let served = self.list_page(Kind::Accounts, page).await?;
        let (mut orgs, mut managers) = Self::take_listing_caches(served.listing.as_ref()).await;
        let mut items = Vec::with_capacity(served.entries.len());
        for e in served.entries.iter() {
            if self.is_base(&e.dn) {
                continue;
            }
            items.push(self.to_account(e, &mut orgs, &mut managers).await?);
        }
        Self::restore_listing_caches(served.listing.as_ref(), orgs, managers).await;
        Ok(Page {
            items,
            next: served.next,
        })
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        crate::lookup::org(self, anchor).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        crate::lookup::account(self, anchor).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        crate::lookup::find_accounts(self, field, value).await
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
        let tok = make_token(7, 2, 0x00ab_cdef_0123_4567);
        assert_eq!(tok.0, "7.2.00abcdef01234567");
        assert_eq!(parse_token(&tok).unwrap(), (7, 2, 0x00ab_cdef_0123_4567));
        for bad in [
            "",
            "7",
            "7.2",
            "x.1.00abcdef01234567",
            "7.x.00abcdef01234567",
            "7.1.abc",
            "7.1.00abcdef0123456z",
            "7.1.+0abcdef01234567",
            "7.18446744073709551615.00abcdef01234567x",
            "7.1.00abcdef01234567.9",
        ] {
            assert!(parse_token(&PageToken(bad.into())).is_err(), "{bad}");
        }
    }
}
