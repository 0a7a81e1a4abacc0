//! Direct reads for incremental runs: one org or account by anchor, and the accounts whose
//! field has a given value. Each is one subtree search below `base_dn` with an escaped
//! equality filter (plus the base-scope reads that resolve an entry's parent org and its
//! manager), never a listing.
//!
//! * By anchor: `(&<org or account filter>(entryUUID=<value>))` on OpenLDAP, and on AD
//!   `(objectGUID=\xx\xx...)` with the GUID's 16 bytes in AD's mixed-endian layout, every
//!   byte escaped (RFC 4515). An anchor that cannot name an entry (not a GUID, on AD) is
//!   simply not found.
//! * By field: the field's mapped attribute (`account_attributes`) in an equality filter
//!   with the trimmed value escaped; the server's matching rule selects candidates, and
//!   each candidate's mapped field is then compared trimmed and case-folded, as the
//!   engine's correlation does. A field without an attribute is an `Unsupported` error,
//!   not a scan.

use std::collections::{BTreeMap, HashMap};

use ldap3::Scope;
use serde_json::Value;

use idsync_core::{Account, Anchor, Error, ErrorKind, Org, Result};

use crate::client::{self, RawEntry};
use crate::config::LdapConfig;
use crate::dn::escape_filter_value;
use crate::error::PROVIDER;
use crate::mapping::{self, guid_from_string};
use crate::source::LdapDirectory;

/// The page size of a `find_accounts` search: one request for any plausible number of
/// matches (a server may still send fewer per page, e.g. AD's `MaxPageSize`, 1000).
const FIND_PAGE: u32 = 1000;

/// A filter in parentheses (a configured filter may be written without them).
fn paren(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    }
}

/// The filter that finds the entry of `class_filter` with this anchor; `None` when the
/// anchor cannot name any entry of this directory.
pub(crate) fn anchor_lookup_filter(
    cfg: &LdapConfig,
    class_filter: &str,
    anchor: &Anchor,
) -> Result<Option<String>> {
    let a = anchor.as_str().trim();
    if a.is_empty() || (cfg.guid_anchor() && guid_from_string(a).is_none()) {
        return Ok(None);
    }
    let by_anchor = mapping::anchor_filter(cfg, &Anchor::new(a))?;
    Ok(Some(format!("(&{}{by_anchor})", paren(class_filter))))
}

/// True for a plain attribute description (`mail`, `employeeNumber`, `2.5.4.3`,
/// `userCertificate;binary`): nothing that could change a filter's structure.
fn plain_attribute(attr: &str) -> bool {
    !attr.is_empty()
        && attr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b';'))
}

/// The filter that selects the candidates for `find_accounts(field, value)`; `None` when
/// the trimmed value is empty (LDAP stores no empty values, so nothing can match).
pub(crate) fn field_filter(
    cfg: &LdapConfig,
    map: &BTreeMap<String, String>,
    field: &str,
    value: &str,
) -> Result<Option<String>> {
    if field == "manager" {
        return Err(Error::unsupported(
            "find_accounts by manager: the field holds the manager's anchor, not an attribute value; correlate on another field",
        )
        .with_provider(PROVIDER)
        .with_context("field", field));
    }
    let attr = map.get(field).ok_or_else(|| {
        Error::unsupported(format!(
            "find_accounts: the account field {field:?} has no LDAP attribute (map one in account_attributes), so it cannot be searched"
        ))
        .with_provider(PROVIDER)
        .with_context("field", field)
    })?;
    if !plain_attribute(attr) {
        return Err(Error::config(format!(
            "account_attributes.{field}: {attr:?} is not an attribute name"
        ))
        .with_provider(PROVIDER));
    }
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "(&{}({attr}={}))",
        paren(cfg.account_filter()),
        escape_filter_value(v)
    )))
}

/// A correlation key: core's one rule ([`idsync_core::correlation_key`]); blank is "".
pub(crate) fn fold(s: &str) -> String {
    idsync_core::correlation_key(s)
        .map(|k| k.into_owned())
        .unwrap_or_default()
}

/// True when a mapped field value (a string, or a list of them) folds to `want`.
pub(crate) fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => fold(s) == want,
        Value::Array(items) => items.iter().any(|i| value_matches(i, want)),
        _ => false,
    }
}

/// One search below `base_dn` on the ops connection.
async fn search(
    dir: &LdapDirectory,
    filter: &str,
    attrs: &[String],
    size: u32,
    what: &'static str,
) -> Result<Vec<RawEntry>> {
    let refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut ldap = dir.ops().await?;
    let found = client::paged_all(
        &mut ldap,
        &dir.inner.cfg.base_dn,
        Scope::Subtree,
        filter,
        &refs,
        size,
    )
    .await
    .map_err(|e| Error::from(e).with_operation(what))?;
    Ok(found.into_iter().filter(|e| !dir.is_base(&e.dn)).collect())
}

/// At most one entry, or a conflict naming the anchor.
fn single(mut found: Vec<RawEntry>, anchor: &Anchor, what: &str) -> Result<Option<RawEntry>> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Error::new(
            ErrorKind::Conflict,
            format!("{n} {what} entries carry anchor {anchor}"),
        )
        .with_provider(PROVIDER)
        .with_context("anchor", anchor.as_str())),
    }
}

/// [`Source::org`](idsync_core::Source::org): one search by anchor.
pub(crate) async fn org(dir: &LdapDirectory, anchor: &Anchor) -> Result<Option<Org>> {
    let cfg = &dir.inner.cfg;
    if !cfg.orgs {
        return Ok(None);
    }
    let Some(filter) = anchor_lookup_filter(cfg, cfg.org_filter(), anchor)? else {
        return Ok(None);
    };
    let found = search(dir, &filter, &mapping::org_attrs(cfg), 2, "look up org").await?;
    match single(found, anchor, "org")? {
        Some(e) => Ok(Some(dir.to_org(&e, &mut HashMap::new()).await?)),
        None => Ok(None),
    }
}

/// [`Source::account`](idsync_core::Source::account): one search by anchor.
pub(crate) async fn account(dir: &LdapDirectory, anchor: &Anchor) -> Result<Option<Account>> {
    let cfg = &dir.inner.cfg;
    let Some(filter) = anchor_lookup_filter(cfg, cfg.account_filter(), anchor)? else {
        return Ok(None);
    };
    let attrs = mapping::account_attrs(cfg, &dir.inner.map);
    let found = search(dir, &filter, &attrs, 2, "look up account").await?;
    match single(found, anchor, "account")? {
        Some(e) => Ok(Some(
            dir.to_account(&e, &mut HashMap::new(), &mut HashMap::new())
                .await?,
        )),
        None => Ok(None),
    }
}

/// [`Source::find_accounts`](idsync_core::Source::find_accounts): one escaped equality
/// search on the field's attribute, then the trimmed, case-folded comparison.
pub(crate) async fn find_accounts(
    dir: &LdapDirectory,
    field: &str,
    value: &str,
) -> Result<Vec<Account>> {
    use idsync_core::Entity;
    if field == "anchor" {
        return Ok(account(dir, &Anchor::new(value.trim()))
            .await?
            .into_iter()
            .collect());
    }
    let cfg = &dir.inner.cfg;
    let Some(filter) = field_filter(cfg, &dir.inner.map, field, value)? else {
        return Ok(Vec::new());
    };
    let want = fold(value);
    let attrs = mapping::account_attrs(cfg, &dir.inner.map);
    let found = search(
        dir,
        &filter,
        &attrs,
        cfg.page_size.max(FIND_PAGE),
        "find accounts",
    )
    .await?;
    let (mut orgs, mut managers) = (HashMap::new(), HashMap::new());
    let mut out = Vec::new();
    for e in &found {
        let acc = dir.to_account(e, &mut orgs, &mut managers).await?;
        if value_matches(&acc.get(field), &want) {
            out.push(acc);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dialect;
    use serde_json::json;

    fn ad() -> LdapConfig {
        LdapConfig::new(
            "ldaps://dc1.example.test",
            "DC=example,DC=test",
            Dialect::Ad,
        )
    }

    fn openldap() -> LdapConfig {
        LdapConfig::new("ldap://127.0.0.1", "dc=example,dc=com", Dialect::Openldap)
    }

    #[test]
    fn ad_anchor_lookups_escape_the_binary_guid() {
        let cfg = ad();
        let anchor = Anchor::new("01020304-0506-0708-090a-0b0c0d0e0f10");
        let guid = r"\04\03\02\01\06\05\08\07\09\0a\0b\0c\0d\0e\0f\10";
        assert_eq!(
            anchor_lookup_filter(&cfg, cfg.account_filter(), &anchor)
                .unwrap()
                .unwrap(),
            format!("(&(&(objectClass=user)(objectCategory=person))(objectGUID={guid}))")
        );
        assert_eq!(
            anchor_lookup_filter(&cfg, cfg.org_filter(), &anchor)
                .unwrap()
                .unwrap(),
            format!("(&(objectClass=organizationalUnit)(objectGUID={guid}))")
        );
        // braces and upper case are the same GUID
        let braced = Anchor::new("{01020304-0506-0708-090A-0B0C0D0E0F10}");
        assert_eq!(
            anchor_lookup_filter(&cfg, cfg.org_filter(), &braced).unwrap(),
            anchor_lookup_filter(&cfg, cfg.org_filter(), &anchor).unwrap()
        );
        // bytes that are filter syntax as text (0x28 '(', 0x29 ')', 0x2a '*', 0x5c '\',
        // 0x00) are escaped like every other byte
        let syntax = Anchor::new("2a28295c-0000-2a2a-2829-5c0000000000");
        let f = anchor_lookup_filter(&cfg, "(objectClass=user)", &syntax)
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            r"(&(objectClass=user)(objectGUID=\5c\29\28\2a\00\00\2a\2a\28\29\5c\00\00\00\00\00))"
        );
        // not a GUID: no AD entry can carry it
        for bad in ["jdoe", "", "01020304-0506-0708-090a-0b0c0d0e0f1", "  "] {
            assert_eq!(
                anchor_lookup_filter(&cfg, cfg.org_filter(), &Anchor::new(bad)).unwrap(),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn openldap_anchor_lookups_escape_the_text() {
        let cfg = openldap();
        let a = Anchor::new("6d842470-820b-1041-94cc-b1d11088e565");
        assert_eq!(
            anchor_lookup_filter(&cfg, cfg.account_filter(), &a)
                .unwrap()
                .unwrap(),
            "(&(objectClass=inetOrgPerson)(entryUUID=6d842470-820b-1041-94cc-b1d11088e565))"
        );
        let odd = Anchor::new("x*)(uid=*");
        assert_eq!(
            anchor_lookup_filter(&cfg, "objectClass=organizationalUnit", &odd)
                .unwrap()
                .unwrap(),
            r"(&(objectClass=organizationalUnit)(entryUUID=x\2a\29\28uid=\2a))"
        );
    }

    #[test]
    fn field_filters_escape_values_and_name_unmapped_fields() {
        let cfg = openldap();
        let map = cfg.account_map().unwrap();
        assert_eq!(
            field_filter(&cfg, &map, "employee_id", "  a*(b)\\c\0d ")
                .unwrap()
                .unwrap(),
            r"(&(objectClass=inetOrgPerson)(employeeNumber=a\2a\28b\29\5cc\00d))"
        );
        assert_eq!(
            field_filter(&cfg, &map, "email", "Ärger@Example.com")
                .unwrap()
                .unwrap(),
            "(&(objectClass=inetOrgPerson)(mail=Ärger@Example.com))"
        );
        assert_eq!(field_filter(&cfg, &map, "email", "   ").unwrap(), None);
        for field in ["orgs", "status", "attrs.nope", "nonsense"] {
            let err = field_filter(&cfg, &map, field, "x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{field}");
            assert!(err.to_string().contains(field), "{err}");
        }
        let err = field_filter(&cfg, &map, "manager", "x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);

        let cfg = ad();
        let map = cfg.account_map().unwrap();
        assert_eq!(
            field_filter(&cfg, &map, "username", "j*").unwrap().unwrap(),
            r"(&(&(objectClass=user)(objectCategory=person))(sAMAccountName=j\2a))"
        );
        let mut bad = BTreeMap::new();
        bad.insert("email".to_owned(), "mail)(uid=*".to_owned());
        let err = field_filter(&cfg, &bad, "email", "x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    }

    #[test]
    fn candidates_are_compared_trimmed_and_case_folded() {
        let want = fold("  ÄRGER@Example.COM ");
        assert_eq!(want, "ärger@example.com");
        assert!(value_matches(&json!("ärger@EXAMPLE.com"), &want));
        assert!(value_matches(&json!(["x", " Ärger@example.com"]), &want));
        assert!(!value_matches(&json!("arger@example.com"), &want));
        assert!(!value_matches(&Value::Null, &want));
        assert!(!value_matches(&json!(1), &want));
    }
}
