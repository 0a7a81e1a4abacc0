//! Pure conversions between directory entries and idsync's model: anchors (entryUUID,
//! objectGUID), accounts, orgs, and the attribute values the sink writes.

use std::collections::BTreeMap;

use serde_json::Value;

use idsync_core::{Account, Anchor, Error, Org, Result, Status};

use crate::client::RawEntry;
use crate::config::{Dialect, LdapConfig};
use crate::dn::{Dn, escape_filter_bytes, escape_filter_value};

/// AD `userAccountControl`: ACCOUNTDISABLE.
pub(crate) const UAC_DISABLED: u32 = 0x2;
/// AD `userAccountControl`: NORMAL_ACCOUNT.
pub(crate) const UAC_NORMAL: u32 = 0x200;

/// Formats AD's 16-byte `objectGUID` in its standard string form. The first three groups
/// are stored little-endian (Microsoft's mixed-endian GUID layout), the last two as-is.
pub fn guid_to_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// Parses the standard GUID string form back into AD's byte layout.
pub fn guid_from_string(s: &str) -> Option<[u8; 16]> {
    let plain = uuid_hex(s)?;
    let mut out = [0u8; 16];
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    for (i, src) in order.iter().enumerate() {
        out[i] = plain[*src];
    }
    Some(out)
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into 16 bytes in written order.
fn uuid_hex(s: &str) -> Option<[u8; 16]> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = s.split('-').collect();
    if groups.len() != 5 || groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats 16 raw bytes (RFC 4533 syncUUID) as an RFC 4122 UUID string, the form OpenLDAP
/// uses for `entryUUID`.
pub(crate) fn uuid_to_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// The anchor of an entry, or `None` when it lacks the anchor attribute.
pub(crate) fn anchor_of(cfg: &LdapConfig, e: &RawEntry) -> Option<Anchor> {
    if cfg.guid_anchor() {
        e.get_bytes(cfg.anchor_attr())
            .and_then(guid_to_string)
            .map(Anchor::new)
    } else {
        e.get(cfg.anchor_attr())
            .map(|s| Anchor::new(s.to_lowercase()))
    }
}

/// A filter matching the entry with this anchor.
pub(crate) fn anchor_filter(cfg: &LdapConfig, anchor: &Anchor) -> Result<String> {
    if cfg.guid_anchor() {
        let bytes = guid_from_string(anchor.as_str()).ok_or_else(|| {
            Error::invalid_data(format!("{anchor} is not a GUID"))
                .with_context("anchor", anchor.as_str())
        })?;
        Ok(format!(
            "({}={})",
            cfg.anchor_attr(),
            escape_filter_bytes(&bytes)
        ))
    } else {
        Ok(format!(
            "({}={})",
            cfg.anchor_attr(),
            escape_filter_value(anchor.as_str())
        ))
    }
}

/// Attributes to ask for when listing orgs.
pub(crate) fn org_attrs(cfg: &LdapConfig) -> Vec<String> {
    vec![
        cfg.anchor_attr().to_owned(),
        "ou".into(),
        "objectClass".into(),
        "description".into(),
    ]
}

/// Attributes to ask for when listing accounts.
pub(crate) fn account_attrs(cfg: &LdapConfig, map: &BTreeMap<String, String>) -> Vec<String> {
    // no objectClass: listings select accounts by filter (change reads add it, see org_attrs)
    let mut v = vec![cfg.anchor_attr().to_owned()];
    for attr in map.values() {
        if !v.iter().any(|a| a.eq_ignore_ascii_case(attr)) {
            v.push(attr.clone());
        }
    }
    if let Some(a) = &cfg.secondary_orgs_attribute {
        v.push(a.clone());
    }
    let fallback = &cfg.display_name_fallback;
    if !fallback.is_empty() && !v.iter().any(|a| a.eq_ignore_ascii_case(fallback)) {
        v.push(fallback.clone());
    }
    match cfg.dialect {
        Dialect::Ad => v.push("userAccountControl".into()),
        _ => {
            if let Some(m) = cfg.disable_marker() {
                v.push(m.attribute);
            }
        }
    }
    v
}

/// True when the entry is an org by object class (used where filters cannot be evaluated,
/// e.g. on content sync results).
pub(crate) fn is_org_entry(e: &RawEntry) -> bool {
    e.values("objectClass")
        .iter()
        .any(|c| c.eq_ignore_ascii_case(b"organizationalUnit"))
}

/// True when the entry is a person account by object class.
pub(crate) fn is_account_entry(cfg: &LdapConfig, e: &RawEntry) -> bool {
    let classes = e.values("objectClass");
    let has = |n: &str| classes.iter().any(|c| c.eq_ignore_ascii_case(n.as_bytes()));
    match cfg.dialect {
        Dialect::Ad => has("user") && !has("computer"),
        _ => cfg.account_classes().last().is_some_and(|c| has(c)),
    }
}

/// Builds an [`Org`] from its entry; `parent` is the anchor of the nearest org above it.
pub(crate) fn entry_to_org(cfg: &LdapConfig, e: &RawEntry, parent: Option<Anchor>) -> Result<Org> {
    let anchor = anchor_of(cfg, e).ok_or_else(|| {
        Error::invalid_data(format!("{} has no {}", e.dn, cfg.anchor_attr()))
            .with_context("dn", &e.dn)
    })?;
    let dn = Dn::parse(&e.dn).map_err(|err| Error::invalid_data(err.to_string()))?;
    let name = dn
        .rdn()
        .map(|r| r.first_value().to_owned())
        .unwrap_or_default();
    let mut org = Org::new(anchor, parent, name);
    if let Some(d) = e.get("description") {
        org.attrs.insert("description".into(), Value::String(d));
    }
    Ok(org)
}

/// Builds an [`Account`] from its entry. `org` is the anchor of the nearest org above it;
/// `manager` the resolved anchor of its manager.
pub(crate) fn entry_to_account(
    cfg: &LdapConfig,
    map: &BTreeMap<String, String>,
    e: &RawEntry,
    org: Option<Anchor>,
    manager: Option<Anchor>,
) -> Result<Account> {
    let anchor = anchor_of(cfg, e).ok_or_else(|| {
        Error::invalid_data(format!("{} has no {}", e.dn, cfg.anchor_attr()))
            .with_context("dn", &e.dn)
    })?;
    let mut acc = Account::new(anchor, String::new());
    for (field, attr) in map {
        if field == "manager" {
            continue;
        }
        let vals = e.values(attr);
        if vals.is_empty() {
            continue;
        }
        let text = |v: &Vec<u8>| String::from_utf8_lossy(v).into_owned();
        if let Some(name) = field.strip_prefix("attrs.") {
            let value = if vals.len() == 1 {
                Value::String(text(&vals[0]))
            } else {
                // LDAP values are a set: sort them so equal entries map to equal accounts
                let mut texts: Vec<String> = vals.iter().map(text).collect();
                texts.sort();
                Value::Array(texts.into_iter().map(Value::String).collect())
            };
            acc.attrs.insert(name.to_owned(), value);
        } else {
            let v = text(&vals[0]);
            match field.as_str() {
                "username" => acc.username = v,
                "display_name" => acc.display_name = Some(v),
                "email" => acc.email = Some(v),
                "phone" => acc.phone = Some(v),
                "employee_id" => acc.employee_id = Some(v),
                "title" => acc.title = Some(v),
                _ => {}
            }
        }
    }
    if acc.display_name.is_none() && !cfg.display_name_fallback.is_empty() {
        acc.display_name = e
            .values(&cfg.display_name_fallback)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }
    acc.orgs = org.into_iter().collect();
    if let Some(attr) = &cfg.secondary_orgs_attribute {
        for a in parse_secondary_orgs(e.values(attr)) {
            if !acc.orgs.contains(&a) {
                acc.orgs.push(a);
            }
        }
    }
    acc.manager = manager;
    acc.status = status_of(cfg, e);
    Ok(acc)
}

/// The values written for an account's further orgs: `N:anchor`, because LDAP keeps values
/// as a set and the order of orgs matters (the first is primary).
pub(crate) fn secondary_org_values(orgs: &[Anchor]) -> Vec<String> {
    orgs.iter()
        .skip(1)
        .enumerate()
        .map(|(i, o)| format!("{}:{}", i + 1, o.as_str()))
        .collect()
}

/// Reads [`secondary_org_values`] back in order (values without an index come last).
pub(crate) fn parse_secondary_orgs(values: &[Vec<u8>]) -> Vec<Anchor> {
    let mut v: Vec<(u64, String)> = values
        .iter()
        .map(|b| {
            let s = String::from_utf8_lossy(b).into_owned();
            match s.split_once(':') {
                Some((n, a)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                    (n.parse().unwrap_or(u64::MAX), a.to_owned())
                }
                _ => (u64::MAX, s),
            }
        })
        .filter(|(_, a)| !a.is_empty())
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| Anchor::new(a)).collect()
}

/// Active or disabled, from `userAccountControl` (AD) or the disable marker.
pub(crate) fn status_of(cfg: &LdapConfig, e: &RawEntry) -> Status {
    match cfg.dialect {
        Dialect::Ad => {
            let uac = e
                .get("userAccountControl")
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if uac & i64::from(UAC_DISABLED) != 0 {
                Status::Disabled
            } else {
                Status::Active
            }
        }
        _ => match cfg.disable_marker() {
            Some(m)
                if e.values(&m.attribute)
                    .iter()
                    .any(|v| v == m.value.as_bytes()) =>
            {
                Status::Disabled
            }
            _ => Status::Active,
        },
    }
}

/// A JSON value as the LDAP values it is written as (null and "" mean none).
pub(crate) fn ldap_values(v: &Value) -> Vec<String> {
    match v {
        Value::Null => vec![],
        Value::String(s) if s.is_empty() => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(ldap_values).collect(),
        Value::Bool(b) => vec![if *b { "TRUE".into() } else { "FALSE".into() }],
        other => vec![other.to_string()],
    }
}

/// The LDAP values of one mapped field of an account.
pub(crate) fn field_values(acc: &Account, field: &str) -> Vec<String> {
    use idsync_core::Entity;
    ldap_values(&acc.get(field))
}

/// AD's `unicodePwd` value: the password in double quotes, UTF-16LE.
pub(crate) fn ad_password_value(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A random password that meets AD's complexity rules.
pub(crate) fn random_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let body: String = (0..24)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{body}aZ9!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_mixed_endian_formatting() {
        // The bytes of GUID {01020304-0506-0708-090a-0b0c0d0e0f10} as AD stores them.
        let stored = [
            0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f, 0x10,
        ];
        let s = guid_to_string(&stored).unwrap();
        assert_eq!(s, "01020304-0506-0708-090a-0b0c0d0e0f10");
        assert_eq!(guid_from_string(&s).unwrap(), stored);
        assert_eq!(guid_from_string(&s.to_uppercase()).unwrap(), stored);
        assert_eq!(
            guid_from_string("{01020304-0506-0708-090A-0B0C0D0E0F10}").unwrap(),
            stored
        );
        assert!(guid_to_string(&stored[..15]).is_none());
        assert!(guid_from_string("01020304-0506-0708-090a").is_none());
        assert!(guid_from_string("0102030g-0506-0708-090a-0b0c0d0e0f10").is_none());
        // RFC 4122 order for syncUUIDs is plain
        assert_eq!(
            uuid_to_string(&stored).unwrap(),
            "04030201-0605-0807-090a-0b0c0d0e0f10"
        );
    }

    #[test]
    fn anchor_filters() {
        let ad = LdapConfig::new("ldap://x", "dc=x", Dialect::Ad);
        let f = anchor_filter(&ad, &Anchor::new("01020304-0506-0708-090a-0b0c0d0e0f10")).unwrap();
        assert_eq!(
            f,
            r"(objectGUID=\04\03\02\01\06\05\08\07\09\0a\0b\0c\0d\0e\0f\10)"
        );
        assert!(anchor_filter(&ad, &Anchor::new("nope")).is_err());
        let ol = LdapConfig::new("ldap://x", "dc=x", Dialect::Openldap);
        assert_eq!(
            anchor_filter(&ol, &Anchor::new("a*)(uid=*")).unwrap(),
            r"(entryUUID=a\2a\29\28uid=\2a)"
        );
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> RawEntry {
        RawEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                    )
                })
                .collect(),
            controls: vec![],
        }
    }

    #[test]
    fn maps_openldap_account() {
        let cfg = LdapConfig::new("ldap://x", "dc=x", Dialect::Openldap);
        let map = cfg.account_map().unwrap();
        let e = entry(
            "uid=zs,ou=a,dc=x",
            &[
                ("entryUUID", &["6A5AC338-7e93-1041-97fe-d3b4790f5d5e"]),
                ("uid", &["zs"]),
                ("displayName", &["张三"]),
                ("mail", &["zs@x"]),
                ("telephoneNumber", &["1", "2"]),
                ("pwdAccountLockedTime", &["000001010000Z"]),
            ],
        );
        let a = entry_to_account(&cfg, &map, &e, Some("ou-a".into()), None).unwrap();
        assert_eq!(a.anchor.as_str(), "6a5ac338-7e93-1041-97fe-d3b4790f5d5e");
        assert_eq!(a.username, "zs");
        assert_eq!(a.display_name.as_deref(), Some("张三"));
        assert_eq!(a.orgs, vec![Anchor::from("ou-a")]);
        assert_eq!(a.status, Status::Disabled);
        assert_eq!(a.attrs["telephone_number"], serde_json::json!(["1", "2"]));
        let missing = entry("uid=q,dc=x", &[("uid", &["q"])]);
        assert!(entry_to_account(&cfg, &map, &missing, None, None).is_err());
    }

    #[test]
    fn display_name_falls_back_to_cn() {
        let mut cfg = LdapConfig::new("ldap://x", "dc=x", Dialect::Openldap);
        let map = cfg.account_map().unwrap();
        assert!(account_attrs(&cfg, &map).iter().any(|a| a == "cn"));
        let e = entry(
            "uid=ls,dc=x",
            &[
                ("entryUUID", &["7a5ac338-7e93-1041-97fe-d3b4790f5d5e"]),
                ("uid", &["ls"]),
                ("cn", &["李四"]),
            ],
        );
        let a = entry_to_account(&cfg, &map, &e, None, None).unwrap();
        assert_eq!(a.display_name.as_deref(), Some("李四"));
        // displayName wins when present
        let both = entry(
            "uid=ls,dc=x",
            &[
                ("entryUUID", &["7a5ac338-7e93-1041-97fe-d3b4790f5d5e"]),
                ("uid", &["ls"]),
                ("cn", &["李四"]),
                ("displayName", &["Li Si"]),
            ],
        );
        let a = entry_to_account(&cfg, &map, &both, None, None).unwrap();
        assert_eq!(a.display_name.as_deref(), Some("Li Si"));
        // configurable, and off when empty
        cfg.display_name_fallback = String::new();
        let a = entry_to_account(&cfg, &map, &e, None, None).unwrap();
        assert_eq!(a.display_name, None);
    }

    #[test]
    fn secondary_orgs_keep_their_order() {
        let orgs = vec![
            Anchor::new("p"),
            Anchor::new("z"),
            Anchor::new("a"),
            Anchor::new("m"),
        ];
        let mut vals: Vec<Vec<u8>> = secondary_org_values(&orgs)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        assert_eq!(vals.len(), 3);
        vals.reverse();
        vals.push(b"plain".to_vec());
        let back = parse_secondary_orgs(&vals);
        let names: Vec<&str> = back.iter().map(Anchor::as_str).collect();
        assert_eq!(names, vec!["z", "a", "m", "plain"]);
    }

    #[test]
    fn ad_status_from_uac() {
        let cfg = LdapConfig::new("ldap://x", "dc=x", Dialect::Ad);
        assert_eq!(
            status_of(&cfg, &entry("cn=a", &[("userAccountControl", &["514"])])),
            Status::Disabled
        );
        assert_eq!(
            status_of(&cfg, &entry("cn=a", &[("userAccountControl", &["512"])])),
            Status::Active
        );
    }

    #[test]
    fn values_and_passwords() {
        assert!(ldap_values(&Value::Null).is_empty());
        assert!(ldap_values(&Value::from("")).is_empty());
        assert_eq!(ldap_values(&serde_json::json!(["a", 1])), vec!["a", "1"]);
        assert_eq!(ad_password_value("a"), vec![b'"', 0, b'a', 0, b'"', 0]);
        let p = random_password();
        assert!(p.len() >= 20 && p.chars().any(|c| c.is_ascii_digit()));
    }
}
