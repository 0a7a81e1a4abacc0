//! SCIM resources as JSON: checking and normalizing what clients send, turning it into hub
//! accounts and orgs, rendering those back, projecting `attributes`, computing versions.
//!
//! How a User maps onto a hub [`Account`]: `id` is the account's anchor; `userName`,
//! `displayName`, `title`, `active`, the primary (or first) of `emails` and `phoneNumbers`,
//! and the enterprise `employeeNumber` and `manager.value` are the account's typed fields;
//! everything else of the resource (names, addresses, `externalId`, the enterprise
//! `department` ...) is kept whole under the account attribute `scim`. The typed fields
//! win when a resource is rendered, so changes other jobs make to the hub show. `groups`
//! lists the account's orgs. `password` is accepted and dropped: the hub holds no
//! credentials.
//!
//! A Group is a hub org: `id` is its anchor, `displayName` its name, `members` the accounts
//! whose orgs contain it.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use idsync_core::{Account, Anchor, Org, Status};

use crate::error::{ScimError, ScimResult};
use crate::schema::{
    self, Attr, ENTERPRISE, Mutability, ResourceType, Returned, Scope, Type, split_urn,
};

/// The account attribute holding the rest of a SCIM resource.
pub const BLOB: &str = "scim";

/// Normalize a client's resource: canonical attribute names (they arrive in any case),
/// booleans sent as strings (`"False"`) turned into booleans, read-only attributes
/// dropped, unknown attributes and wrongly typed values refused.
pub fn normalize(rt: &ResourceType, input: &Value) -> ScimResult<Map<String, Value>> {
    let obj = input
        .as_object()
        .ok_or_else(|| ScimError::syntax("the resource must be a JSON object"))?;
    let mut out = Map::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") {
            check_schemas(rt, v)?;
            continue;
        }
        if let Some((urn, attrs)) = rt.extension(k) {
            let inner = v.as_object().ok_or_else(|| {
                ScimError::syntax(format!("{urn} must be an object of attributes"))
            })?;
            let mut ext = Map::new();
            for (ek, ev) in inner {
                let a = attrs
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(ek))
                    .ok_or_else(|| ScimError::syntax(format!("unknown attribute {urn}:{ek}")))?;
                if a.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(nv) = normalize_value(a, ev, &format!("{urn}:{}", a.name))? {
                    ext.insert(a.name.to_owned(), nv);
                }
            }
            if !ext.is_empty() {
                out.insert(urn.to_owned(), Value::Object(ext));
            }
            continue;
        }
        let (scope, a) = rt
            .resolve(k)
            .ok_or_else(|| ScimError::syntax(format!("unknown attribute {k:?}")))?;
        if a.mutability == Mutability::ReadOnly {
            continue;
        }
        let Some(nv) = normalize_value(a, v, a.name)? else {
            continue;
        };
        match scope {
            Scope::Core => {
                out.insert(a.name.to_owned(), nv);
            }
            Scope::Extension(u) => {
                let e = out
                    .entry(u.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = e.as_object_mut() {
                    m.insert(a.name.to_owned(), nv);
                }
            }
        }
    }
    Ok(out)
}

fn check_schemas(rt: &ResourceType, v: &Value) -> ScimResult<()> {
    let list = v
        .as_array()
        .ok_or_else(|| ScimError::syntax("schemas must be a list of URNs"))?;
    for s in list {
        let s = s
            .as_str()
            .ok_or_else(|| ScimError::syntax("schemas must be a list of URNs"))?;
        if !s.eq_ignore_ascii_case(rt.schema) && rt.extension(s).is_none() {
            return Err(ScimError::syntax(format!(
                "schema {s} is not one of {}",
                rt.name
            )));
        }
    }
    Ok(())
}

/// Normalize one attribute's value; `None` when it is unassigned (null, empty list).
pub fn normalize_value(a: &Attr, v: &Value, place: &str) -> ScimResult<Option<Value>> {
    if v.is_null() {
        return Ok(None);
    }
    if a.multi {
        let items: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let mut out = Vec::new();
        for it in items {
            if let Some(n) = normalize_single(a, it, place)? {
                out.push(n);
            }
        }
        return Ok(if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        });
    }
    if v.is_array() {
        return Err(ScimError::value(format!(
            "{place} is single-valued, got a list"
        )));
    }
    normalize_single(a, v, place)
}

/// Normalize one value (one element of a multi-valued attribute).
pub fn normalize_single(a: &Attr, v: &Value, place: &str) -> ScimResult<Option<Value>> {
    match a.ty {
        Type::Complex => {
            let obj = v.as_object().ok_or_else(|| {
                ScimError::value(format!("{place} is complex: expected an object"))
            })?;
            let mut out = Map::new();
            for (k, sv) in obj {
                let sa = a
                    .sub_attr(k)
                    .ok_or_else(|| ScimError::syntax(format!("unknown attribute {place}.{k}")))?;
                if let Some(n) = normalize_single(sa, sv, &format!("{place}.{}", sa.name))? {
                    out.insert(sa.name.to_owned(), n);
                }
            }
            Ok(if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            })
        }
        Type::Boolean => match v {
            Value::Bool(_) => Ok(Some(v.clone())),
            Value::Null => Ok(None),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
            other => Err(ScimError::value(format!(
                "{place} is a boolean, got {other}"
            ))),
        },
        Type::String | Type::Reference | Type::Binary | Type::DateTime => match v {
            Value::String(_) => Ok(Some(v.clone())),
            Value::Null => Ok(None),
            other => Err(ScimError::value(format!(
                "{place} is a string, got {other}"
            ))),
        },
    }
}

/// The primary (or else first) `value` of a multi-valued attribute.
fn primary_value(list: Option<&Value>) -> Option<String> {
    let items = list?.as_array()?;
    let chosen = items
        .iter()
        .find(|i| i.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| items.first())?;
    chosen.get("value")?.as_str().map(str::to_owned)
}

fn str_of(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// Build the hub account for a normalized User. `existing` supplies what SCIM does not
/// own (orgs, other attributes). `meta` is the `created` / `lastModified` to keep.
pub fn user_to_account(
    id: &Anchor,
    user: &Map<String, Value>,
    existing: Option<&Account>,
    meta: Value,
) -> ScimResult<Account> {
    let user_name = str_of(user, "userName")
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ScimError::value("userName is required"))?;
    let mut a = existing.cloned().unwrap_or_default();
    a.anchor = id.clone();
    a.username = user_name;
    a.display_name = str_of(user, "displayName");
    a.title = str_of(user, "title");
    a.email = primary_value(user.get("emails"));
    a.phone = primary_value(user.get("phoneNumbers"));
    let ext = user.get(ENTERPRISE).and_then(Value::as_object);
    a.employee_id = ext.and_then(|e| str_of(e, "employeeNumber"));
    a.manager = ext
        .and_then(|e| e.get("manager"))
        .and_then(|m| m.get("value"))
        .and_then(Value::as_str)
        .map(Anchor::from);
    a.status = match user.get("active") {
        Some(Value::Bool(false)) => Status::Disabled,
        _ => Status::Active,
    };
    let mut blob = user.clone();
    blob.remove("password");
    blob.insert("meta".into(), meta);
    a.attrs.insert(BLOB.into(), Value::Object(blob));
    Ok(a)
}

/// Build the hub org for a normalized Group. `existing` keeps the org's parent and order.
pub fn group_to_org(
    id: &Anchor,
    group: &Map<String, Value>,
    existing: Option<&Org>,
    meta: Value,
) -> ScimResult<Org> {
    let name = str_of(group, "displayName")
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ScimError::value("displayName is required"))?;
    let mut o = existing.cloned().unwrap_or_default();
    o.anchor = id.clone();
    o.name = name;
    let mut blob = Map::new();
    if let Some(x) = group.get("externalId") {
        blob.insert("externalId".into(), x.clone());
    }
    blob.insert("meta".into(), meta);
    o.attrs.insert(BLOB.into(), Value::Object(blob));
    Ok(o)
}

/// The member ids of a normalized Group.
pub fn group_members(group: &Map<String, Value>) -> ScimResult<Vec<Anchor>> {
    let mut out = Vec::new();
    for m in group
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("group"))
        {
            return Err(ScimError::value(
                "members of type Group are not supported: groups are hub orgs, members are users",
            ));
        }
        let v = m
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::value("every member needs a value (the user's id)"))?;
        let a = Anchor::from(v);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

fn blob_of(attrs: &idsync_core::Attrs) -> Map<String, Value> {
    attrs
        .get(BLOB)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `created` / `lastModified` of a stored resource.
pub fn stored_meta(attrs: &idsync_core::Attrs) -> Value {
    attrs
        .get(BLOB)
        .and_then(|b| b.get("meta"))
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// Put `typed` in as the primary value of a multi-valued attribute, unless it is already.
fn overlay_primary(out: &mut Map<String, Value>, key: &str, typed: Option<&str>) {
    let derived = primary_value(out.get(key));
    if derived.as_deref() == typed {
        return;
    }
    let Some(t) = typed else {
        out.remove(key);
        return;
    };
    match out.get_mut(key).and_then(Value::as_array_mut) {
        Some(items) if !items.is_empty() => {
            let idx = items
                .iter()
                .position(|i| i.get("primary") == Some(&Value::Bool(true)))
                .unwrap_or(0);
            if let Some(obj) = items[idx].as_object_mut() {
                obj.insert("value".into(), json!(t));
            }
        }
        _ => {
            out.insert(key.into(), json!([{"value": t, "primary": true}]));
        }
    }
}

fn set_opt(out: &mut Map<String, Value>, key: &str, v: Option<&String>) {
    match v {
        Some(s) => {
            out.insert(key.into(), json!(s));
        }
        None => {
            out.remove(key);
        }
    }
}

/// Render an account as a User. `org_name` names the account's orgs for `groups`.
pub fn render_user(a: &Account, base: &str, org_name: &dyn Fn(&Anchor) -> Option<String>) -> Value {
    let mut out = blob_of(&a.attrs);
    let meta = out.remove("meta").unwrap_or_else(|| json!({}));
    out.remove("id");
    out.insert("userName".into(), json!(a.username));
    set_opt(&mut out, "displayName", a.display_name.as_ref());
    set_opt(&mut out, "title", a.title.as_ref());
    // A resource written over SCIM without `active` (or whose `active` was removed) shows
    // none while the account is active; a disabled account always says `active: false`.
    let has_blob = a.attrs.contains_key(BLOB);
    if a.status == Status::Disabled || !has_blob || out.contains_key("active") {
        out.insert("active".into(), json!(a.status == Status::Active));
    }
    overlay_primary(&mut out, "emails", a.email.as_deref());
    overlay_primary(&mut out, "phoneNumbers", a.phone.as_deref());
    let mut ext = out
        .remove(ENTERPRISE)
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    set_opt(&mut ext, "employeeNumber", a.employee_id.as_ref());
    match &a.manager {
        Some(m) => {
            let mut mg = ext
                .get("manager")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if mg.get("value").and_then(Value::as_str) != Some(m.as_str()) {
                mg = Map::new();
                mg.insert("value".into(), json!(m.as_str()));
                mg.insert("$ref".into(), json!(format!("{base}/Users/{m}")));
            }
            ext.insert("manager".into(), Value::Object(mg));
        }
        None => {
            ext.remove("manager");
        }
    }
    if a.orgs.is_empty() {
        out.remove("groups");
    } else {
        let groups: Vec<Value> = a
            .orgs
            .iter()
            .map(|o| {
                let mut g = json!({
                    "value": o.as_str(),
                    "$ref": format!("{base}/Groups/{o}"),
                    "type": "direct",
                });
                if let Some(n) = org_name(o) {
                    g["display"] = json!(n);
                }
                g
            })
            .collect();
        out.insert("groups".into(), Value::Array(groups));
    }
    let mut schemas = vec![json!(schema::USER)];
    if !ext.is_empty() {
        out.insert(ENTERPRISE.into(), Value::Object(ext));
        schemas.push(json!(ENTERPRISE));
    }
    let mut doc = Map::new();
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), json!(a.anchor.as_str()));
    doc.extend(out);
    finish_meta(
        &mut doc,
        &meta,
        "User",
        &format!("{base}/Users/{}", a.anchor),
    );
    Value::Object(doc)
}

/// Render an org as a Group with its members: (user id, display). `members.display` is
/// not rendered (it is optional, and clients compare members as they sent them).
pub fn render_group(o: &Org, members: &[(Anchor, String)], base: &str) -> Value {
    let mut blob = blob_of(&o.attrs);
    let meta = blob.remove("meta").unwrap_or_else(|| json!({}));
    let mut doc = Map::new();
    doc.insert("schemas".into(), json!([schema::GROUP]));
    doc.insert("id".into(), json!(o.anchor.as_str()));
    if let Some(x) = blob.get("externalId") {
        doc.insert("externalId".into(), x.clone());
    }
    doc.insert("displayName".into(), json!(o.name));
    if !members.is_empty() {
        let mut ms: Vec<&(Anchor, String)> = members.iter().collect();
        ms.sort_by(|a, b| a.0.cmp(&b.0));
        doc.insert(
            "members".into(),
            Value::Array(
                ms.into_iter()
                    .map(|(id, _display)| {
                        json!({
                            "value": id.as_str(),
                            "$ref": format!("{base}/Users/{id}"),
                            "type": "User",
                        })
                    })
                    .collect(),
            ),
        );
    }
    finish_meta(
        &mut doc,
        &meta,
        "Group",
        &format!("{base}/Groups/{}", o.anchor),
    );
    Value::Object(doc)
}

fn finish_meta(doc: &mut Map<String, Value>, stored: &Value, rtype: &str, location: &str) {
    let mut meta = Map::new();
    meta.insert("resourceType".into(), json!(rtype));
    for k in ["created", "lastModified"] {
        if let Some(v) = stored.get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    meta.insert("location".into(), json!(location));
    doc.insert("meta".into(), Value::Object(meta));
    let version = version_of(&Value::Object(doc.clone()));
    if let Some(Value::Object(m)) = doc.get_mut("meta") {
        m.insert("version".into(), json!(version));
    }
}

/// The weak ETag of a rendered resource (without its `meta.version`).
pub fn version_of(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// The version of a rendered resource.
pub fn version(doc: &Value) -> Option<&str> {
    doc.get("meta")?.get("version")?.as_str()
}

/// A parsed `attributes` / `excludedAttributes` name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    scope: Scope,
    attr: &'static str,
    sub: Option<&'static str>,
    whole_extension: bool,
}

fn parse_named(rt: &ResourceType, name: &str) -> ScimResult<Named> {
    if let Some((u, _)) = rt.extension(name) {
        return Ok(Named {
            scope: Scope::Extension(u),
            attr: "",
            sub: None,
            whole_extension: true,
        });
    }
    let (head, sub) = match split_urn(name) {
        Some((urn, rest)) => match rest.split_once('.') {
            Some((h, s)) => (format!("{urn}:{h}"), Some(s)),
            None => (name.to_owned(), None),
        },
        None => match name.split_once('.') {
            Some((h, s)) => (h.to_owned(), Some(s)),
            None => (name.to_owned(), None),
        },
    };
    let (scope, a) = rt
        .resolve(&head)
        .ok_or_else(|| ScimError::value(format!("unknown attribute {name:?}")))?;
    let sub = match sub {
        Some(s) => Some(
            a.sub_attr(s)
                .ok_or_else(|| ScimError::value(format!("unknown attribute {name:?}")))?
                .name,
        ),
        None => None,
    };
    Ok(Named {
        scope,
        attr: a.name,
        sub,
        whole_extension: false,
    })
}

/// Parse a comma-separated attribute list.
pub fn parse_attr_list(rt: &ResourceType, list: &str) -> ScimResult<Vec<String>> {
    let mut out = Vec::new();
    for n in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        parse_named(rt, n)?;
        out.push(n.to_owned());
    }
    Ok(out)
}

/// The names of a comma-separated list that `rt` knows (a search across resource types
/// names attributes of either).
pub fn known_attrs(rt: &ResourceType, list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && parse_named(rt, n).is_ok())
        .map(str::to_owned)
        .collect()
}

fn always(rt: &ResourceType, key: &str) -> bool {
    key == "schemas"
        || rt
            .core_attr(key)
            .is_some_and(|a| a.returned == Returned::Always)
}

/// Apply `attributes` (keep only these, and what is always returned) or
/// `excludedAttributes` (drop these, unless always returned) to a rendered resource.
pub fn project(
    rt: &ResourceType,
    doc: Value,
    attributes: &[String],
    excluded: &[String],
) -> ScimResult<Value> {
    let Value::Object(mut m) = doc else {
        return Ok(doc);
    };
    if !attributes.is_empty() {
        let named: Vec<Named> = attributes
            .iter()
            .map(|n| parse_named(rt, n))
            .collect::<ScimResult<_>>()?;
        let mut out = Map::new();
        for (k, v) in &m {
            if always(rt, k) {
                out.insert(k.clone(), v.clone());
            }
        }
        for n in &named {
            if n.whole_extension {
                if let Scope::Extension(u) = n.scope
                    && let Some(v) = m.get(u)
                {
                    out.insert(u.to_owned(), v.clone());
                }
                continue;
            }
            let (src, dst): (Option<&Map<String, Value>>, Option<&'static str>) = match n.scope {
                Scope::Core => (Some(&m), None),
                Scope::Extension(u) => (m.get(u).and_then(Value::as_object), Some(u)),
            };
            let Some(val) = src
                .and_then(|s| s.get(n.attr))
                .and_then(|v| pick_sub(v, n.sub))
            else {
                continue;
            };
            match dst {
                Some(u) => {
                    let e = out
                        .entry(u.to_owned())
                        .or_insert_with(|| Value::Object(Map::new()));
                    merge_into(e, n.attr, val);
                }
                None => merge_top(&mut out, n.attr, val),
            }
        }
        // The schemas list names only the extensions still present.
        fix_schemas(rt, &mut out);
        return Ok(Value::Object(out));
    }
    for n in excluded {
        let n = parse_named(rt, n)?;
        if n.whole_extension {
            if let Scope::Extension(u) = n.scope {
                m.remove(u);
            }
            continue;
        }
        if n.scope == Scope::Core && always(rt, n.attr) {
            continue;
        }
        let container = match n.scope {
            Scope::Core => Some(&mut m),
            Scope::Extension(u) => m.get_mut(u).and_then(Value::as_object_mut),
        };
        let Some(c) = container else { continue };
        match n.sub {
            None => {
                c.remove(n.attr);
            }
            Some(s) => {
                if let Some(v) = c.get_mut(n.attr) {
                    match v {
                        Value::Array(items) => {
                            for i in items.iter_mut() {
                                if let Some(o) = i.as_object_mut() {
                                    o.remove(s);
                                }
                            }
                        }
                        Value::Object(o) => {
                            o.remove(s);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (u, _) in rt.extensions {
        if m.get(*u)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            m.remove(*u);
        }
    }
    fix_schemas(rt, &mut m);
    Ok(Value::Object(m))
}

fn pick_sub(v: &Value, sub: Option<&str>) -> Option<Value> {
    let Some(s) = sub else {
        return Some(v.clone());
    };
    match v {
        Value::Array(items) => {
            let picked: Vec<Value> = items
                .iter()
                .filter_map(|i| i.get(s).map(|x| json!({ s: x })))
                .collect();
            (!picked.is_empty()).then_some(Value::Array(picked))
        }
        Value::Object(o) => o.get(s).map(|x| json!({ s: x })),
        _ => None,
    }
}

fn merge_top(out: &mut Map<String, Value>, key: &str, val: Value) {
    match out.get_mut(key) {
        Some(existing) => merge_values(existing, val),
        None => {
            out.insert(key.to_owned(), val);
        }
    }
}

fn merge_into(e: &mut Value, key: &str, val: Value) {
    if let Some(m) = e.as_object_mut() {
        merge_top(m, key, val);
    }
}

fn merge_values(existing: &mut Value, val: Value) {
    match (existing, val) {
        (Value::Object(a), Value::Object(b)) => a.extend(b),
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                merge_values(x, y);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn fix_schemas(rt: &ResourceType, m: &mut Map<String, Value>) {
    let mut schemas = vec![json!(rt.schema)];
    for (u, _) in rt.extensions {
        if m.contains_key(*u) {
            schemas.push(json!(u));
        }
    }
    m.insert("schemas".into(), Value::Array(schemas));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::USER_TYPE;

    #[test]
    fn normalize_folds_case_coerces_booleans_and_refuses_unknowns() {
        let n = normalize(
            &USER_TYPE,
            &json!({"UserName": "a", "Active": "False", "NAME": {"GivenName": "A"},
                    "id": "ignored", "groups": [{"value": "g"}]}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(n),
            json!({"userName": "a", "active": false, "name": {"givenName": "A"}})
        );
        let e = normalize(&USER_TYPE, &json!({"userName": "a", "shoeSize": 9})).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
        let e = normalize(&USER_TYPE, &json!({"userName": 7})).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
    }

    #[test]
    fn a_user_round_trips_through_an_account() {
        let input = json!({
            "userName": "bjensen", "displayName": "Babs", "title": "Tour Guide",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "home@x.example", "type": "home"},
                       {"value": "work@x.example", "type": "work", "primary": true}],
            "externalId": "e-1", "password": "secret",
            ENTERPRISE: {"employeeNumber": "42", "department": "Ops", "manager": {"value": "m1"}}
        });
        let n = normalize(&USER_TYPE, &input).unwrap();
        let a = user_to_account(&Anchor::from("u1"), &n, None, json!({})).unwrap();
        assert_eq!(a.email.as_deref(), Some("work@x.example"));
        assert_eq!(a.employee_id.as_deref(), Some("42"));
        assert_eq!(a.manager, Some(Anchor::from("m1")));
        assert!(!a.attrs[BLOB].to_string().contains("secret"));
        let doc = render_user(&a, "https://h/scim/v2", &|_| None);
        assert_eq!(doc["name"]["familyName"], "Jensen");
        assert_eq!(doc["emails"][1]["value"], "work@x.example");
        assert_eq!(doc[ENTERPRISE]["department"], "Ops");
        assert!(doc.get("password").is_none());
        assert!(version(&doc).is_some_and(|v| v.starts_with("W/\"")));
        // a change by another job to the typed email shows in the primary email
        let mut b = a;
        b.email = Some("new@x.example".into());
        let doc2 = render_user(&b, "https://h/scim/v2", &|_| None);
        assert_eq!(doc2["emails"][1]["value"], "new@x.example");
        assert_ne!(version(&doc), version(&doc2));
    }

    #[test]
    fn projection_keeps_always_attributes() {
        let doc = json!({"schemas": [schema::USER, ENTERPRISE], "id": "u1", "userName": "a",
                         "name": {"givenName": "A", "familyName": "B"},
                         ENTERPRISE: {"department": "D", "costCenter": "C"}});
        let p = project(&USER_TYPE, doc.clone(), &["name.familyName".into()], &[]).unwrap();
        assert_eq!(
            p,
            json!({"schemas": [schema::USER], "id": "u1", "name": {"familyName": "B"}})
        );
        let p = project(
            &USER_TYPE,
            doc.clone(),
            &[format!("{ENTERPRISE}:department")],
            &[],
        )
        .unwrap();
        assert_eq!(p[ENTERPRISE], json!({"department": "D"}));
        let p = project(&USER_TYPE, doc, &[], &["userName".into(), "id".into()]).unwrap();
        assert!(p.get("userName").is_none());
        assert_eq!(p["id"], "u1");
    }
}
