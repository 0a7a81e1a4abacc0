//! Incremental reads: RFC 4533 content sync (OpenLDAP), DirSync (AD), `modifyTimestamp`
//! polling (other servers).
//!
//! The cursor is opaque to callers: `sync:` / `dirsync:` / `mts:` followed by the base64 of
//! the server's cookie (or the timestamp). The engine stores it and commits it only after the
//! changes were applied, so a failed run reads the same changes again.
//!
//! Deletes arrive as bare anchors (a content-sync syncUUID or a DirSync tombstone's
//! objectGUID) without saying whether the entry was an org or an account, so each deleted
//! anchor is listed in both `org_deletes` and `account_deletes`; an anchor nobody knows is a
//! no-op for the engine.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ldap3::Scope;
use ldap3::controls::RawControl;

use idsync_core::{Anchor, ChangeSet, Error, ErrorKind, Result, SyncCursor};

use crate::ber;
use crate::client::{self, RawEntry};
use crate::config::IncrementalMode;
use crate::error::{LdapError, PROVIDER, check};
use crate::mapping;
use crate::source::LdapDirectory;

pub(crate) const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub(crate) const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
pub(crate) const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
pub(crate) const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";
const MATCH_NOTHING: &str = "(objectClass=idsyncMatchesNothing)";

/// Content sync: one entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncStateKind {
    Present,
    Add,
    Modify,
    Delete,
}

/// A decoded Sync State control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncStateCtl {
    pub(crate) state: SyncStateKind,
    pub(crate) uuid: Vec<u8>,
}

/// A decoded Sync Info intermediate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncInfoMsg {
    NewCookie(Vec<u8>),
    RefreshDelete {
        cookie: Option<Vec<u8>>,
    },
    RefreshPresent {
        cookie: Option<Vec<u8>>,
    },
    IdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<Vec<u8>>,
    },
}

/// The Sync Request control (refreshOnly, with an optional cookie).
pub(crate) fn sync_request(cookie: Option<&[u8]>) -> RawControl {
    let mut inner = Vec::new();
    ber::write(&mut inner, 0x0a, &[1]); // refreshOnly
    if let Some(c) = cookie {
        ber::write(&mut inner, 0x04, c);
    }
    let mut val = Vec::new();
    ber::write(&mut val, 0x30, &inner);
    RawControl {
        ctype: SYNC_REQUEST_OID.into(),
        crit: true,
        val: Some(val),
    }
}

pub(crate) fn parse_sync_state(val: &[u8]) -> Option<SyncStateCtl> {
    let kids = ber::read_all(val)?.children()?;
    let state = kids
        .first()
        .filter(|t| t.is_universal(ber::ENUMERATED))?
        .int()?;
    let uuid = kids.get(1).filter(|t| t.is_universal(ber::OCTET_STRING))?;
    let state = match state {
        0 => SyncStateKind::Present,
        1 => SyncStateKind::Add,
        2 => SyncStateKind::Modify,
        3 => SyncStateKind::Delete,
        _ => return None,
    };
    Some(SyncStateCtl {
        state,
        uuid: uuid.content.to_vec(),
    })
}

/// Sync Done: (cookie, refreshDeletes).
pub(crate) fn parse_sync_done(val: &[u8]) -> Option<(Option<Vec<u8>>, bool)> {
    let kids = ber::read_all(val)?.children()?;
    let mut cookie = None;
    let mut deletes = false;
    for k in kids {
        if k.is_universal(ber::OCTET_STRING) {
            cookie = Some(k.content.to_vec());
        } else if k.is_universal(ber::BOOLEAN) {
            deletes = k.boolean()?;
        } else {
            return None;
        }
    }
    Some((cookie, deletes))
}

pub(crate) fn parse_sync_info(val: &[u8]) -> Option<SyncInfoMsg> {
    let t = ber::read_all(val)?;
    if t.class != 2 {
        return None;
    }
    if t.number == 0 {
        return (!t.constructed).then(|| SyncInfoMsg::NewCookie(t.content.to_vec()));
    }
    let kids = t.children()?;
    let mut cookie = None;
    let mut flag = None;
    let mut uuids = Vec::new();
    for k in kids {
        if k.is_universal(ber::OCTET_STRING) {
            cookie = Some(k.content.to_vec());
        } else if k.is_universal(ber::BOOLEAN) {
            flag = Some(k.boolean()?);
        } else if k.is_universal(ber::SET) {
            for u in k.children()? {
                if !u.is_universal(ber::OCTET_STRING) {
                    return None;
                }
                uuids.push(u.content.to_vec());
            }
        } else {
            return None;
        }
    }
    match t.number {
        1 => Some(SyncInfoMsg::RefreshDelete { cookie }),
        2 => Some(SyncInfoMsg::RefreshPresent { cookie }),
        3 => Some(SyncInfoMsg::IdSet {
            cookie,
            refresh_deletes: flag.unwrap_or(false),
            uuids,
        }),
        _ => None,
    }
}

/// The DirSync request control: flags 0, 1 MiB per round, cookie.
pub(crate) fn dirsync_request(cookie: &[u8]) -> RawControl {
    let mut inner = Vec::new();
    ber::write(&mut inner, 0x02, &ber::int_content(0));
    ber::write(&mut inner, 0x02, &ber::int_content(1_048_576));
    ber::write(&mut inner, 0x04, cookie);
    let mut val = Vec::new();
    ber::write(&mut val, 0x30, &inner);
    RawControl {
        ctype: DIRSYNC_OID.into(),
        crit: true,
        val: Some(val),
    }
}

/// DirSync response: (more results, cookie).
pub(crate) fn parse_dirsync_response(val: &[u8]) -> Option<(bool, Vec<u8>)> {
    let kids = ber::read_all(val)?.children()?;
    match kids.as_slice() {
        [more, _unused, cookie]
            if more.is_universal(ber::INTEGER) && cookie.is_universal(ber::OCTET_STRING) =>
        {
            Some((more.int()? != 0, cookie.content.to_vec()))
        }
        _ => None,
    }
}

/// Anchors of the orgs in scope when a cursor was made: deletions arrive as bare ids, and
/// this set tells an org's deletion from an account's.
type OrgSet = BTreeSet<String>;

fn encode_cursor(kind: &str, cookie: &[u8], orgs: Option<&OrgSet>) -> SyncCursor {
    let mut s = format!("{kind}:{}", B64.encode(cookie));
    if let Some(orgs) = orgs {
        let joined: Vec<&str> = orgs.iter().map(String::as_str).collect();
        s.push(':');
        s.push_str(&B64.encode(joined.join("\n")));
    }
    SyncCursor(s)
}

fn decode_cursor(c: &SyncCursor, kind: &str) -> Result<(Vec<u8>, Option<OrgSet>)> {
    let bad = || {
        Error::invalid_data(format!(
            "cursor {:?} is not a {kind} cursor of this source",
            c.0
        ))
        .with_provider(PROVIDER)
    };
    let rest =
        c.0.strip_prefix(kind)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
    let (cookie, orgs) = match rest.split_once(':') {
        Some((c, o)) => (c, Some(o)),
        None => (rest, None),
    };
    let cookie = B64.decode(cookie).map_err(|_| bad())?;
    let orgs = match orgs {
        Some(o) => {
            let text = String::from_utf8(B64.decode(o).map_err(|_| bad())?).map_err(|_| bad())?;
            Some(
                text.split('\n')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        }
        None => None,
    };
    Ok((cookie, orgs))
}

/// The anchors of all orgs below the base (one paged search of anchors only).
async fn org_set(dir: &LdapDirectory) -> Result<Option<OrgSet>> {
    let cfg = &dir.inner.cfg;
    if !cfg.orgs {
        return Ok(None);
    }
    let mut ldap = dir.ops().await?;
    let attr = cfg.anchor_attr().to_owned();
    let entries = client::paged_all(
        &mut ldap,
        &cfg.base_dn,
        Scope::Subtree,
        cfg.org_filter(),
        &[attr.as_str()],
        cfg.page_size,
    )
    .await
    .map_err(|e| Error::from(e).with_operation("list org anchors"))?;
    Ok(Some(
        entries
            .iter()
            .filter(|e| !dir.is_base(&e.dn))
            .filter_map(|e| mapping::anchor_of(cfg, e))
            .map(Anchor::into_string)
            .collect(),
    ))
}

/// The org set after a change set: deleted orgs out, upserted orgs in.
fn next_org_set(before: Option<OrgSet>, set: &ChangeSet) -> Option<OrgSet> {
    let mut orgs = before?;
    for d in &set.org_deletes {
        orgs.remove(d.as_str());
    }
    for o in &set.org_upserts {
        orgs.insert(o.anchor.as_str().to_owned());
    }
    Some(orgs)
}

fn malformed(what: &str) -> Error {
    Error::from(LdapError::Malformed(what.to_owned()))
}

/// The attributes a changed entry is read with: those of orgs and accounts together.
fn change_attrs(dir: &LdapDirectory) -> Vec<String> {
    let inner = &dir.inner;
    let mut attrs = mapping::account_attrs(&inner.cfg, &inner.map);
    for a in mapping::org_attrs(&inner.cfg) {
        if !attrs.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
            attrs.push(a);
        }
    }
    attrs
}

fn scope_filter(dir: &LdapDirectory) -> String {
    let cfg = &dir.inner.cfg;
    if cfg.orgs {
        format!("(|{}{})", cfg.org_filter(), cfg.account_filter())
    } else {
        cfg.account_filter().to_owned()
    }
}

/// Adds an entry to the change set as an org or an account upsert.
async fn upsert(
    dir: &LdapDirectory,
    set: &mut ChangeSet,
    e: &RawEntry,
    orgs: &mut HashMap<String, Option<Anchor>>,
    managers: &mut HashMap<String, Option<Anchor>>,
) -> Result<()> {
    if dir.is_base(&e.dn) {
        return Ok(());
    }
    if mapping::is_org_entry(e) {
        if dir.inner.cfg.orgs {
            set.org_upserts.push(dir.to_org(e, orgs).await?);
        }
    } else if mapping::is_account_entry(&dir.inner.cfg, e) {
        set.account_upserts
            .push(dir.to_account(e, orgs, managers).await?);
    }
    Ok(())
}

fn push_delete(
    set: &mut ChangeSet,
    seen: &mut BTreeSet<String>,
    orgs: Option<&OrgSet>,
    anchor: Anchor,
) {
    if !seen.insert(anchor.as_str().to_owned()) {
        return;
    }
    match orgs {
        Some(orgs) if orgs.contains(anchor.as_str()) => set.org_deletes.push(anchor),
        Some(_) => set.account_deletes.push(anchor),
        // a cursor without the org set: say both, an unknown anchor is a no-op
        None => {
            set.org_deletes.push(anchor.clone());
            set.account_deletes.push(anchor);
        }
    }
}

pub(crate) async fn current_cursor(dir: &LdapDirectory) -> Result<SyncCursor> {
    match dir.inner.cfg.incremental_mode() {
        IncrementalMode::Syncrepl => {
            let mut ldap = client::connect(&dir.inner.cfg).await.map_err(Error::from)?;
            let out = client::search_raw(
                &mut ldap,
                &dir.inner.cfg.base_dn,
                Scope::Subtree,
                MATCH_NOTHING,
                &["1.1"],
                vec![sync_request(None)],
            )
            .await
            .map_err(Error::from)?;
            let _ = ldap.unbind().await;
            let res = check(out.result.ok_or_else(|| malformed("no search result"))?)
                .map_err(|e| Error::from(e).with_operation("current cursor"))?;
            let cookie = client::find_control(&res, SYNC_DONE_OID)
                .and_then(|c| c.val.as_deref())
                .and_then(parse_sync_done)
                .and_then(|(c, _)| c)
                .ok_or_else(|| {
                    Error::unsupported(
                        "the server sent no content-sync cookie (is syncprov configured?)",
                    )
                    .with_provider(PROVIDER)
                })?;
            Ok(encode_cursor("sync", &cookie, org_set(dir).await?.as_ref()))
        }
        IncrementalMode::Dirsync => {
            let (_, cookie) = dirsync_round(dir, &[], true).await?;
            Ok(encode_cursor(
                "dirsync",
                &cookie,
                org_set(dir).await?.as_ref(),
            ))
        }
        IncrementalMode::ModifyTimestamp => {
            // now, minus a margin for clock skew: re-reading a few entries is harmless
            let t = generalized_time(std::time::SystemTime::now(), 300);
            Ok(encode_cursor("mts", t.as_bytes(), None))
        }
        IncrementalMode::None => {
            Err(Error::unsupported("incremental reads are turned off").with_provider(PROVIDER))
        }
    }
}

pub(crate) async fn changes(dir: &LdapDirectory, since: &SyncCursor) -> Result<ChangeSet> {
    match dir.inner.cfg.incremental_mode() {
        IncrementalMode::Syncrepl => {
            let (cookie, orgs) = decode_cursor(since, "sync")?;
            syncrepl_changes(dir, &cookie, orgs).await
        }
        IncrementalMode::Dirsync => {
            let (cookie, orgs) = decode_cursor(since, "dirsync")?;
            dirsync_changes(dir, &cookie, orgs).await
        }
        IncrementalMode::ModifyTimestamp => {
            let (t, _) = decode_cursor(since, "mts")?;
            let t = String::from_utf8(t).map_err(|_| malformed("mts cursor"))?;
            mts_changes(dir, &t).await
        }
        IncrementalMode::None => {
            Err(Error::unsupported("incremental reads are turned off").with_provider(PROVIDER))
        }
    }
}

async fn syncrepl_changes(
    dir: &LdapDirectory,
    cookie: &[u8],
    orgs_before: Option<OrgSet>,
) -> Result<ChangeSet> {
    let attrs = change_attrs(dir);
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut ldap = client::connect(&dir.inner.cfg).await.map_err(Error::from)?;
    let out = client::search_raw(
        &mut ldap,
        &dir.inner.cfg.base_dn,
        Scope::Subtree,
        &scope_filter(dir),
        &attr_refs,
        vec![sync_request(Some(cookie))],
    )
    .await
    .map_err(|e| Error::from(e).with_operation("content sync"))?;
    let _ = ldap.unbind().await;
    let res = out.result.ok_or_else(|| malformed("no search result"))?;
    if res.rc == 4096 {
        // e-syncRefreshRequired: the cookie is too old for the server's session log
        return Ok(ChangeSet {
            complete: false,
            ..ChangeSet::default()
        });
    }
    let res = check(res).map_err(|e| Error::from(e).with_operation("content sync"))?;
    let (done_cookie, refresh_deletes) = match client::find_control(&res, SYNC_DONE_OID) {
        Some(c) => parse_sync_done(c.val.as_deref().unwrap_or(&[]))
            .ok_or_else(|| malformed("sync done control"))?,
        None => (None, true),
    };
    let mut set = ChangeSet::default();
    let mut seen_deletes = BTreeSet::new();
    let mut present_phase = !refresh_deletes;
    let mut info_cookie = None;
    for iv in &out.intermediates {
        match parse_sync_info(iv).ok_or_else(|| malformed("sync info message"))? {
            SyncInfoMsg::NewCookie(c) => info_cookie = Some(c),
            SyncInfoMsg::RefreshPresent { cookie } => {
                present_phase = true;
                info_cookie = cookie.or(info_cookie);
            }
            SyncInfoMsg::RefreshDelete { cookie } => info_cookie = cookie.or(info_cookie),
            SyncInfoMsg::IdSet {
                refresh_deletes,
                uuids,
                cookie,
            } => {
                info_cookie = cookie.or(info_cookie);
                if refresh_deletes {
                    for u in uuids {
                        let a = mapping::uuid_to_string(&u).ok_or_else(|| malformed("syncUUID"))?;
                        push_delete(
                            &mut set,
                            &mut seen_deletes,
                            orgs_before.as_ref(),
                            Anchor::new(a),
                        );
                    }
                } else {
                    present_phase = true;
                }
            }
        }
    }
    let mut orgs = HashMap::new();
    let mut managers = HashMap::new();
    for e in &out.entries {
        let state = e
            .controls
            .iter()
            .find(|c| c.ctype == SYNC_STATE_OID)
            .and_then(|c| c.val.as_deref())
            .and_then(parse_sync_state)
            .ok_or_else(|| malformed("entry without a sync state control"))?;
        match state.state {
            SyncStateKind::Add | SyncStateKind::Modify => {
                upsert(dir, &mut set, e, &mut orgs, &mut managers).await?;
            }
            SyncStateKind::Delete => {
                let a =
                    mapping::uuid_to_string(&state.uuid).ok_or_else(|| malformed("syncUUID"))?;
                push_delete(
                    &mut set,
                    &mut seen_deletes,
                    orgs_before.as_ref(),
                    Anchor::new(a),
                );
            }
            SyncStateKind::Present => present_phase = true,
        }
    }
    // parents before children, so a new subtree applies in order
    sort_orgs_parent_first(&mut set.org_upserts);
    let last_cookie = done_cookie.or(info_cookie);
    let orgs_after = next_org_set(orgs_before, &set);
    set.cursor = Some(encode_cursor(
        "sync",
        last_cookie.as_deref().unwrap_or(cookie),
        orgs_after.as_ref(),
    ));
    // a present phase reports what still exists, not what was deleted: only a full sync
    // can find the deletions then
    set.complete = !present_phase;
    Ok(set)
}

fn sort_orgs_parent_first(orgs: &mut Vec<idsync_core::Org>) {
    let anchors: BTreeSet<String> = orgs.iter().map(|o| o.anchor.as_str().to_owned()).collect();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(orgs.len());
    let mut rest = std::mem::take(orgs);
    while !rest.is_empty() {
        let before = rest.len();
        let (ready, wait): (Vec<_>, Vec<_>) = rest.into_iter().partition(|o| match &o.parent {
            Some(p) => !anchors.contains(p.as_str()) || placed.contains(p.as_str()),
            None => true,
        });
        for o in &ready {
            placed.insert(o.anchor.as_str().to_owned());
        }
        out.extend(ready);
        rest = wait;
        if rest.len() == before {
            out.append(&mut rest); // a cycle: keep the order, the engine reports it
        }
    }
    *orgs = out;
}

/// The naming context root (DirSync needs it as its search base).
async fn naming_context(dir: &LdapDirectory) -> Result<String> {
    let mut ldap = dir.ops().await?;
    let root = client::read_entry(&mut ldap, "", &["defaultNamingContext", "namingContexts"])
        .await
        .map_err(Error::from)?
        .ok_or_else(|| malformed("no root DSE"))?;
    if let Some(nc) = root.get("defaultNamingContext") {
        return Ok(nc);
    }
    let base =
        crate::dn::Dn::parse(&dir.inner.cfg.base_dn).map_err(|e| Error::config(e.to_string()))?;
    for v in root.values("namingContexts") {
        let s = String::from_utf8_lossy(v).into_owned();
        if let Ok(nc) = crate::dn::Dn::parse(&s)
            && base.is_within(&nc)
        {
            return Ok(s);
        }
    }
    Err(Error::unsupported("cannot find the naming context of base_dn").with_provider(PROVIDER))
}

/// Runs DirSync rounds from `cookie` until the server has no more. With `skip_entries` the
/// entries are dropped (used to find the current cookie).
async fn dirsync_round(
    dir: &LdapDirectory,
    cookie: &[u8],
    skip_entries: bool,
) -> Result<(Vec<RawEntry>, Vec<u8>)> {
    let nc = naming_context(dir).await?;
    let mut attrs = change_attrs(dir);
    attrs.extend([
        "isDeleted".to_owned(),
        "name".to_owned(),
        "lastKnownParent".to_owned(),
    ]);
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let filter = if skip_entries {
        MATCH_NOTHING.to_owned()
    } else {
        "(|(objectClass=organizationalUnit)(objectClass=user))".to_owned()
    };
    let mut ldap = client::connect(&dir.inner.cfg).await.map_err(Error::from)?;
    let mut cookie = cookie.to_vec();
    let mut all = Vec::new();
    for _round in 0..10_000 {
        let out = client::search_raw(
            &mut ldap,
            &nc,
            Scope::Subtree,
            &filter,
            &attr_refs,
            vec![dirsync_request(&cookie)],
        )
        .await
        .map_err(|e| Error::from(e).with_operation("dirsync"))?;
        let res = check(out.result.ok_or_else(|| malformed("no search result"))?)
            .map_err(|e| Error::from(e).with_operation("dirsync"))?;
        let (more, next) = client::find_control(&res, DIRSYNC_OID)
            .and_then(|c| c.val.as_deref())
            .and_then(parse_dirsync_response)
            .ok_or_else(|| malformed("DirSync response control"))?;
        if !skip_entries {
            all.extend(out.entries);
        }
        cookie = next;
        if !more {
            let _ = ldap.unbind().await;
            return Ok((all, cookie));
        }
    }
    Err(Error::new(
        ErrorKind::Unexpected,
        "DirSync did not finish after 10000 rounds",
    )
    .with_provider(PROVIDER))
}

async fn dirsync_changes(
    dir: &LdapDirectory,
    cookie: &[u8],
    orgs_before: Option<OrgSet>,
) -> Result<ChangeSet> {
    let (entries, next) = dirsync_round(dir, cookie, false).await?;
    let cfg = &dir.inner.cfg;
    let mut set = ChangeSet::default();
    let mut seen_deletes = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut orgs = HashMap::new();
    let mut managers = HashMap::new();
    let attrs = change_attrs(dir);
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut ldap = dir.ops().await?;
    let base = crate::dn::Dn::parse(&cfg.base_dn).map_err(|e| Error::config(e.to_string()))?;
    for e in entries {
        let Some(anchor) = mapping::anchor_of(cfg, &e) else {
            continue;
        };
        if !seen.insert(anchor.as_str().to_owned()) {
            continue;
        }
        let deleted = e
            .get("isDeleted")
            .is_some_and(|v| v.eq_ignore_ascii_case("TRUE"));
        if deleted {
            // a tombstone remembers where it lived: skip deletions elsewhere in the domain
            let elsewhere = e
                .get("lastKnownParent")
                .and_then(|p| crate::dn::Dn::parse(&p).ok())
                .is_some_and(|p| !p.is_within(&base));
            if !elsewhere {
                push_delete(&mut set, &mut seen_deletes, orgs_before.as_ref(), anchor);
            }
            continue;
        }
        // DirSync sends changed attributes only: read the whole entry, within base_dn
        let filter = mapping::anchor_filter(cfg, &anchor)?;
        let found = client::paged_all(
            &mut ldap,
            &cfg.base_dn,
            Scope::Subtree,
            &filter,
            &attr_refs,
            10,
        )
        .await
        .map_err(Error::from)?;
        match found.first() {
            Some(full) => upsert(dir, &mut set, full, &mut orgs, &mut managers).await?,
            // not below base_dn (any more): it may have moved out, so it is gone from this
            // source's view; an anchor the engine never saw is a no-op
            None => push_delete(&mut set, &mut seen_deletes, orgs_before.as_ref(), anchor),
        }
    }
    sort_orgs_parent_first(&mut set.org_upserts);
    let orgs_after = next_org_set(orgs_before, &set);
    set.cursor = Some(encode_cursor("dirsync", &next, orgs_after.as_ref()));
    set.complete = true;
    Ok(set)
}

async fn mts_changes(dir: &LdapDirectory, since: &str) -> Result<ChangeSet> {
    let cfg = &dir.inner.cfg;
    let filter = format!(
        "(&{}(modifyTimestamp>={}))",
        scope_filter(dir),
        crate::dn::escape_filter_value(since)
    );
    let mut attrs = change_attrs(dir);
    attrs.push("modifyTimestamp".into());
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut ldap = client::connect(cfg).await.map_err(Error::from)?;
    let entries = client::paged_all(
        &mut ldap,
        &cfg.base_dn,
        Scope::Subtree,
        &filter,
        &attr_refs,
        cfg.page_size,
    )
    .await
    .map_err(|e| Error::from(e).with_operation("modifyTimestamp changes"))?;
    let _ = ldap.unbind().await;
    let mut set = ChangeSet::default();
    let mut newest = since.to_owned();
    let mut orgs = HashMap::new();
    let mut managers = HashMap::new();
    for e in &entries {
        if let Some(t) = e.get("modifyTimestamp")
            && t > newest
        {
            newest = t;
        }
        upsert(dir, &mut set, e, &mut orgs, &mut managers).await?;
    }
    sort_orgs_parent_first(&mut set.org_upserts);
    set.cursor = Some(encode_cursor("mts", newest.as_bytes(), None));
    set.complete = true;
    Ok(set)
}

/// `YYYYMMDDHHMMSSZ` for `t - margin_secs`.
fn generalized_time(t: std::time::SystemTime, margin_secs: u64) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(margin_secs);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_controls_decode() {
        // SyncState: add, uuid 16 bytes (from a real slapd answer)
        let st = B64.decode("MBUKAQEEEOszisZ+kxBBlWwP8DaKzGg=").unwrap();
        let s = parse_sync_state(&st).unwrap();
        assert_eq!(s.state, SyncStateKind::Add);
        assert_eq!(
            mapping::uuid_to_string(&s.uuid).unwrap(),
            "eb338ac6-7e93-1041-956c-0ff0368acc68"
        );
        // SyncDone with cookie and refreshDeletes TRUE (from a real slapd answer)
        let done = B64
            .decode(
                "MDkENHJpZD0wMDAsY3NuPTIwMjYxMTI3MDk1NDE2Ljk4NDY4MVojMDAwMDAwIzAwMCMwMDAwMDABAf8=",
            )
            .unwrap();
        let (cookie, deletes) = parse_sync_done(&done).unwrap();
        assert!(deletes);
        assert!(
            String::from_utf8(cookie.unwrap())
                .unwrap()
                .starts_with("rid=000,csn=2026")
        );
        assert!(parse_sync_state(b"\x30\x03\x0a\x01\x09").is_none());
        assert!(parse_sync_done(b"\x30\x03\x02\x01\x01").is_none());
    }

    #[test]
    fn sync_info_variants() {
        // syncIdSet [3] { cookie, refreshDeletes TRUE, SET { uuid } }
        let mut set = Vec::new();
        ber::write(&mut set, 0x04, &[0xab; 16]);
        let mut inner = Vec::new();
        ber::write(&mut inner, 0x04, b"c1");
        ber::write(&mut inner, 0x01, &[0xff]);
        ber::write(&mut inner, 0x31, &set);
        let mut msg = Vec::new();
        ber::write(&mut msg, 0xa3, &inner);
        match parse_sync_info(&msg).unwrap() {
            SyncInfoMsg::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            } => {
                assert_eq!(cookie.as_deref(), Some(&b"c1"[..]));
                assert!(refresh_deletes);
                assert_eq!(uuids, vec![vec![0xab; 16]]);
            }
            other => panic!("{other:?}"),
        }
        let mut nc = Vec::new();
        ber::write(&mut nc, 0x80, b"x");
        assert_eq!(
            parse_sync_info(&nc),
            Some(SyncInfoMsg::NewCookie(b"x".to_vec()))
        );
        let mut rp = Vec::new();
        ber::write(&mut rp, 0xa2, &[]);
        assert_eq!(
            parse_sync_info(&rp),
            Some(SyncInfoMsg::RefreshPresent { cookie: None })
        );
        assert!(parse_sync_info(b"\x04\x00").is_none());
    }

    #[test]
    fn request_controls_encode() {
        let r = sync_request(Some(b"ck"));
        assert!(r.crit);
        assert_eq!(r.val.unwrap(), b"\x30\x07\x0a\x01\x01\x04\x02ck".to_vec());
        let d = dirsync_request(b"");
        // SEQUENCE{0, 1048576, ""} as in the DirSync spec (ldapsearch's ::MAoCAQACAxAAAAQA)
        assert_eq!(B64.encode(d.val.unwrap()), "MAoCAQACAxAAAAQA");
        let mut resp = Vec::new();
        let mut inner = Vec::new();
        ber::write(&mut inner, 0x02, &[1]);
        ber::write(&mut inner, 0x02, &[0]);
        ber::write(&mut inner, 0x04, b"next");
        ber::write(&mut resp, 0x30, &inner);
        assert_eq!(
            parse_dirsync_response(&resp),
            Some((true, b"next".to_vec()))
        );
    }

    #[test]
    fn cursors_and_time() {
        let c = encode_cursor("sync", b"rid=000,csn=1", None);
        assert_eq!(
            decode_cursor(&c, "sync").unwrap(),
            (b"rid=000,csn=1".to_vec(), None)
        );
        let orgs: OrgSet = ["o1".to_string(), "o2".to_string()].into();
        let c2 = encode_cursor("sync", b"k", Some(&orgs));
        assert_eq!(
            decode_cursor(&c2, "sync").unwrap(),
            (b"k".to_vec(), Some(orgs.clone()))
        );
        let mut set = ChangeSet::default();
        let mut seen = BTreeSet::new();
        push_delete(&mut set, &mut seen, Some(&orgs), Anchor::new("o1"));
        push_delete(&mut set, &mut seen, Some(&orgs), Anchor::new("a9"));
        push_delete(&mut set, &mut seen, Some(&orgs), Anchor::new("a9"));
        assert_eq!(set.org_deletes, vec![Anchor::new("o1")]);
        assert_eq!(set.account_deletes, vec![Anchor::new("a9")]);
        let after = next_org_set(Some(orgs), &set).unwrap();
        assert_eq!(
            after.into_iter().collect::<Vec<_>>(),
            vec!["o2".to_string()]
        );
        assert!(decode_cursor(&c, "dirsync").is_err());
        assert!(decode_cursor(&SyncCursor("sync:@@".into()), "sync").is_err());
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(generalized_time(t, 0), "20231114221320Z");
        assert_eq!(generalized_time(t, 60), "20231114221220Z");
    }

    #[test]
    fn orgs_sorted_parent_first() {
        use idsync_core::Org;
        let mut v = vec![
            Org::new("c", Some("b".into()), "c"),
            Org::new("b", Some("a".into()), "b"),
            Org::new("a", Some("outside".into()), "a"),
        ];
        sort_orgs_parent_first(&mut v);
        let order: Vec<&str> = v.iter().map(|o| o.anchor.as_str()).collect();
        assert_eq!(order, vec!["a", "b", "c"]);
    }
}
