//! PATCH (RFC 7644 §3.5.2) on a resource's JSON: `add`, `remove`, `replace`, with attribute
//! paths, sub-attributes, value-path filters and extension URNs, plus what Entra ID and
//! Okta really send:
//!
//! * op names in any case (`"Replace"`), extra fields on an operation;
//! * booleans as strings (`"False"`);
//! * `remove` of `members` with a value list instead of a filter;
//! * path-less `add` / `replace` whose value has dotted keys (`"name.givenName"`) and
//!   extension-URN keys (`"urn:…:enterprise:2.0:User:department"`);
//! * PascalCase attribute names;
//! * `add` / `replace` on `emails[type eq "work"].value` when no work email exists yet
//!   (the value is created with `type` set).

use serde_json::{Map, Value};

use crate::error::{ScimError, ScimResult};
use crate::filter::{self, CompareOp, Filter};
use crate::resource::{normalize, normalize_single, normalize_value};
use crate::schema::{self, Attr, Mutability, ResourceType, Scope, Type, split_urn};

/// One PATCH operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `add`.
    Add,
    /// `remove`.
    Remove,
    /// `replace`.
    Replace,
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// What it does.
    pub kind: PatchKind,
    /// The target; `None` for path-less `add` / `replace`.
    pub path: Option<String>,
    /// The value.
    pub value: Option<Value>,
}

fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Parse a `PatchOp` message.
pub fn parse_request(body: &Value) -> ScimResult<Vec<PatchOperation>> {
    let m = body
        .as_object()
        .ok_or_else(|| ScimError::syntax("a PATCH body must be a JSON object"))?;
    if let Some(s) = get_ci(m, "schemas") {
        let ok = s
            .as_array()
            .is_some_and(|l| l.iter().any(|u| u.as_str() == Some(schema::PATCH_OP)));
        if !ok {
            return Err(ScimError::syntax(format!(
                "schemas must contain {}",
                schema::PATCH_OP
            )));
        }
    }
    let ops = get_ci(m, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::syntax("a PATCH body needs an Operations list"))?;
    if ops.is_empty() {
        return Err(ScimError::syntax("Operations is empty"));
    }
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let o = op
            .as_object()
            .ok_or_else(|| ScimError::syntax(format!("Operations[{i}] is not an object")))?;
        let name = get_ci(o, "op")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::syntax(format!("Operations[{i}] has no op")))?;
        let kind = match name.to_ascii_lowercase().as_str() {
            "add" => PatchKind::Add,
            "remove" => PatchKind::Remove,
            "replace" => PatchKind::Replace,
            other => {
                return Err(ScimError::syntax(format!(
                    "Operations[{i}]: unknown op {other:?}"
                )));
            }
        };
        let path = match get_ci(o, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p.trim().is_empty() => None,
            Some(Value::String(p)) => Some(p.trim().to_owned()),
            Some(_) => {
                return Err(ScimError::path(format!(
                    "Operations[{i}]: path must be a string"
                )));
            }
        };
        let value = get_ci(o, "value").cloned();
        if kind != PatchKind::Remove && value.is_none() {
            return Err(ScimError::syntax(format!(
                "Operations[{i}]: {name} needs a value"
            )));
        }
        if kind == PatchKind::Remove && path.is_none() {
            return Err(ScimError::no_target(format!(
                "Operations[{i}]: remove needs a path"
            )));
        }
        out.push(PatchOperation { kind, path, value });
    }
    Ok(out)
}

/// A resolved PATCH path.
#[derive(Debug)]
struct Target {
    scope: Scope,
    attr: &'static Attr,
    filter: Option<Filter>,
    sub: Option<&'static Attr>,
}

fn resolve_path(rt: &ResourceType, path: &str) -> ScimResult<Target> {
    let bad = || ScimError::path(format!("bad path {path:?}"));
    let (head, filter_text, after) = match path.find('[') {
        Some(open) => {
            let close = path.rfind(']').ok_or_else(bad)?;
            if close < open {
                return Err(bad());
            }
            let after = &path[close + 1..];
            let after = if after.is_empty() {
                None
            } else {
                Some(after.strip_prefix('.').ok_or_else(bad)?)
            };
            (&path[..open], Some(&path[open + 1..close]), after)
        }
        None => (path, None, None),
    };
    // `attr.sub` (after an optional URN)
    let (head, dotted_sub) = match split_urn(head) {
        Some((urn, rest)) => match rest.split_once('.') {
            Some((a, s)) => (format!("{urn}:{a}"), Some(s)),
            None => (head.to_owned(), None),
        },
        None => match head.split_once('.') {
            Some((a, s)) => (a.to_owned(), Some(s)),
            None => (head.to_owned(), None),
        },
    };
    if filter_text.is_some() && dotted_sub.is_some() {
        return Err(bad());
    }
    let (scope, attr) = rt
        .resolve(&head)
        .ok_or_else(|| ScimError::path(format!("unknown attribute in path {path:?}")))?;
    let sub_name = after.or(dotted_sub);
    let sub = match sub_name {
        Some(s) => Some(
            attr.sub_attr(s)
                .ok_or_else(|| ScimError::path(format!("unknown sub-attribute in {path:?}")))?,
        ),
        None => None,
    };
    let filter = match filter_text {
        Some(f) => {
            if !attr.multi || attr.ty != Type::Complex {
                return Err(ScimError::path(format!(
                    "{path:?}: a filter needs a complex multi-valued attribute"
                )));
            }
            Some(filter::parse_inner(f).map_err(|e| ScimError::path(e.detail))?)
        }
        None => None,
    };
    if attr.mutability == Mutability::ReadOnly
        || sub.is_some_and(|s| s.mutability == Mutability::ReadOnly)
    {
        return Err(ScimError::mutability(format!("{path} is read-only")));
    }
    Ok(Target {
        scope,
        attr,
        filter,
        sub,
    })
}

/// Apply operations to a resource (canonical JSON without `id`/`meta`/`schemas`).
/// Nothing is applied unless every operation succeeds.
pub fn apply(
    rt: &ResourceType,
    doc: &Map<String, Value>,
    ops: &[PatchOperation],
) -> ScimResult<Map<String, Value>> {
    let mut doc = doc.clone();
    for op in ops {
        match &op.path {
            None => pathless(rt, &mut doc, op)?,
            Some(p) => {
                // A bare extension URN names the whole extension object.
                if let Some((urn, _)) = rt.extension(p) {
                    extension_op(rt, &mut doc, urn, op)?;
                    continue;
                }
                let t = resolve_path(rt, p)?;
                apply_one(&mut doc, &t, op.kind, op.value.as_ref(), p)?;
            }
        }
    }
    Ok(doc)
}

fn extension_op(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    urn: &'static str,
    op: &PatchOperation,
) -> ScimResult<()> {
    match op.kind {
        PatchKind::Remove => {
            doc.remove(urn);
            Ok(())
        }
        kind => {
            let v = op.value.clone().unwrap_or(Value::Null);
            let obj = v
                .as_object()
                .ok_or_else(|| ScimError::value(format!("{urn}: the value must be an object")))?;
            for (k, sv) in obj {
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let t = resolve_path(rt, &format!("{urn}:{k}"))?;
                apply_one(doc, &t, kind, Some(sv), k)?;
            }
            Ok(())
        }
    }
}

fn pathless(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    op: &PatchOperation,
) -> ScimResult<()> {
    let v = op
        .value
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ScimError::value("an add or replace without a path needs an object value")
        })?;
    for (k, sv) in v {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some((urn, _)) = rt.extension(k) {
            let sub_op = PatchOperation {
                kind: op.kind,
                path: Some(urn.to_owned()),
                value: Some(sv.clone()),
            };
            extension_op(rt, doc, urn, &sub_op)?;
            continue;
        }
        // id, meta and other read-only keys in a path-less value are ignored (Entra
        // sends the resource it read back).
        if let Some((_, a)) = rt.resolve(k)
            && a.mutability == Mutability::ReadOnly
        {
            continue;
        }
        let t = resolve_path(rt, k)?;
        apply_one(doc, &t, op.kind, Some(sv), k)?;
    }
    Ok(())
}

fn container(doc: &mut Map<String, Value>, scope: Scope) -> ScimResult<&mut Map<String, Value>> {
    match scope {
        Scope::Core => Ok(doc),
        Scope::Extension(u) => {
            let e = doc
                .entry(u.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            e.as_object_mut()
                .ok_or_else(|| ScimError::internal(format!("{u} is not an object")))
        }
    }
}

fn apply_one(
    doc: &mut Map<String, Value>,
    t: &Target,
    kind: PatchKind,
    value: Option<&Value>,
    place: &str,
) -> ScimResult<()> {
    let scope = t.scope;
    let c = container(doc, scope)?;
    let name = t.attr.name;
    match (&t.filter, t.sub) {
        (None, None) => match kind {
            PatchKind::Remove => {
                match (value, c.get_mut(name)) {
                    // Entra: remove members with a list of values instead of a filter.
                    (Some(v), Some(Value::Array(items))) if t.attr.multi => {
                        let gone: Vec<Value> = match v {
                            Value::Array(l) => l.clone(),
                            one => vec![one.clone()],
                        };
                        items.retain(|i| !gone.iter().any(|g| same_value(i, g)));
                    }
                    _ => {
                        c.remove(name);
                    }
                }
            }
            PatchKind::Add | PatchKind::Replace => {
                let v = value.unwrap_or(&Value::Null);
                let nv = normalize_value(t.attr, v, place)?;
                match nv {
                    None => {
                        if kind == PatchKind::Replace {
                            c.remove(name);
                        }
                    }
                    Some(nv) => {
                        if t.attr.multi && kind == PatchKind::Add {
                            let items = c
                                .entry(name.to_owned())
                                .or_insert_with(|| Value::Array(Vec::new()));
                            if !items.is_array() {
                                *items = Value::Array(Vec::new());
                            }
                            if let (Value::Array(have), Value::Array(new)) = (items, nv) {
                                let new_primary = new
                                    .iter()
                                    .any(|n| n.get("primary") == Some(&Value::Bool(true)));
                                if new_primary {
                                    for h in have.iter_mut() {
                                        if let Some(o) = h.as_object_mut() {
                                            o.remove("primary");
                                        }
                                    }
                                }
                                for n in new {
                                    if !have.contains(&n) {
                                        have.push(n);
                                    }
                                }
                            }
                        } else if t.attr.ty == Type::Complex && !t.attr.multi {
                            // add and replace merge the sub-attributes given
                            let slot = c
                                .entry(name.to_owned())
                                .or_insert_with(|| Value::Object(Map::new()));
                            match (slot, nv) {
                                (Value::Object(have), Value::Object(new)) => have.extend(new),
                                (slot, nv) => *slot = nv,
                            }
                        } else {
                            c.insert(name.to_owned(), nv);
                        }
                    }
                }
            }
        },
        (None, Some(sub)) => {
            let slot = c.get_mut(name);
            match kind {
                PatchKind::Remove => match slot {
                    Some(Value::Object(o)) => {
                        o.remove(sub.name);
                    }
                    Some(Value::Array(items)) => {
                        for i in items.iter_mut() {
                            if let Some(o) = i.as_object_mut() {
                                o.remove(sub.name);
                            }
                        }
                    }
                    _ => {}
                },
                PatchKind::Add | PatchKind::Replace => {
                    let nv = normalize_single(sub, value.unwrap_or(&Value::Null), place)?;
                    if t.attr.multi {
                        match slot {
                            Some(Value::Array(items)) if !items.is_empty() => {
                                for i in items.iter_mut() {
                                    if let Some(o) = i.as_object_mut() {
                                        set_or_remove(o, sub.name, nv.clone());
                                    }
                                }
                            }
                            _ => {
                                return Err(ScimError::no_target(format!(
                                    "{place}: {name} has no values to change"
                                )));
                            }
                        }
                    } else {
                        let slot = c
                            .entry(name.to_owned())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if !slot.is_object() {
                            *slot = Value::Object(Map::new());
                        }
                        if let Some(o) = slot.as_object_mut() {
                            set_or_remove(o, sub.name, nv);
                        }
                    }
                }
            }
        }
        (Some(f), sub) => {
            let mut items: Vec<Value> = match c.remove(name) {
                Some(Value::Array(a)) => a,
                Some(Value::Null) | None => Vec::new(),
                Some(other) => vec![other],
            };
            let mut hit = Vec::new();
            for (i, it) in items.iter().enumerate() {
                if filter::matches_value(f, t.attr, it).map_err(|e| ScimError::path(e.detail))? {
                    hit.push(i);
                }
            }
            match kind {
                PatchKind::Remove => {
                    if let Some(s) = sub {
                        for &i in &hit {
                            if let Some(o) = items[i].as_object_mut() {
                                o.remove(s.name);
                            }
                        }
                    } else {
                        let mut idx = 0;
                        items.retain(|_| {
                            let keep = !hit.contains(&idx);
                            idx += 1;
                            keep
                        });
                    }
                }
                PatchKind::Add | PatchKind::Replace => {
                    let v = value.unwrap_or(&Value::Null);
                    match sub {
                        Some(s) => {
                            let nv = normalize_single(s, v, place)?;
                            if hit.is_empty() {
                                // Entra: the value the filter names does not exist yet.
                                let mut new = seed_from_filter(f, t.attr).ok_or_else(|| {
                                    ScimError::no_target(format!("{place}: nothing matches"))
                                })?;
                                set_or_remove(&mut new, s.name, nv);
                                items.push(Value::Object(new));
                            } else {
                                for &i in &hit {
                                    if let Some(o) = items[i].as_object_mut() {
                                        set_or_remove(o, s.name, nv.clone());
                                    }
                                }
                            }
                        }
                        None => {
                            let nv = normalize_single(t.attr, v, place)?;
                            if hit.is_empty() {
                                if kind == PatchKind::Replace {
                                    return Err(ScimError::no_target(format!(
                                        "{place}: nothing matches"
                                    )));
                                }
                                if let Some(n) = nv {
                                    items.push(n);
                                }
                            } else {
                                for &i in hit.iter().rev() {
                                    match &nv {
                                        Some(n) => {
                                            if let (Some(have), Some(new)) =
                                                (items[i].as_object_mut(), n.as_object())
                                            {
                                                if kind == PatchKind::Replace {
                                                    *have = new.clone();
                                                } else {
                                                    have.extend(new.clone());
                                                }
                                            }
                                        }
                                        None => {
                                            items.remove(i);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            items.retain(|i| !i.as_object().is_some_and(Map::is_empty));
            if !items.is_empty() {
                c.insert(name.to_owned(), Value::Array(items));
            }
        }
    }
    // Unassigned values disappear.
    let empty = match c.get(name) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        c.remove(name);
    }
    if let Scope::Extension(u) = scope
        && doc
            .get(u)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        doc.remove(u);
    }
    Ok(())
}

fn set_or_remove(o: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    match v {
        Some(v) => {
            o.insert(key.to_owned(), v);
        }
        None => {
            o.remove(key);
        }
    }
}

/// A new value for `attr[sub eq "x"]` that does not exist yet: `{sub: "x"}`.
fn seed_from_filter(f: &Filter, attr: &Attr) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    fn walk(f: &Filter, attr: &Attr, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::Compare(p, CompareOp::Eq, v) => match attr.sub_attr(&p.text) {
                Some(sa) => {
                    out.insert(sa.name.to_owned(), v.clone());
                    true
                }
                None => false,
            },
            Filter::And(a, b) => walk(a, attr, out) && walk(b, attr, out),
            _ => false,
        }
    }
    walk(f, attr, &mut out).then_some(out)
}

/// Whether a list element is the value a client names (`{"value": "x"}` or `"x"`).
fn same_value(item: &Value, given: &Value) -> bool {
    let want = match given {
        Value::Object(o) => get_ci(o, "value"),
        v => Some(v),
    };
    match (item.get("value"), want) {
        (Some(a), Some(b)) => a == b,
        _ => item == given,
    }
}

/// PUT: a whole new resource, normalized, replacing every writable attribute.
pub fn replace_all(rt: &ResourceType, body: &Value) -> ScimResult<Map<String, Value>> {
    normalize(rt, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE, GROUP_TYPE, USER_TYPE};
    use serde_json::json;

    #[allow(clippy::needless_pass_by_value)]
    fn run(doc: Value, ops: Value) -> ScimResult<Value> {
        let ops = parse_request(&json!({"schemas": [schema::PATCH_OP], "Operations": ops}))?;
        let d = doc.as_object().cloned().unwrap_or_default();
        apply(&USER_TYPE, &d, &ops).map(Value::Object)
    }

    #[test]
    fn add_replace_remove_with_paths() {
        let d = json!({"userName": "a", "emails": [{"value": "a@w", "type": "work"}]});
        let r = run(
            d,
            json!([{"op": "add", "path": "emails", "value": [{"value": "a@h", "type": "home"}]},
                   {"op": "replace", "path": "name.givenName", "value": "A"},
                   {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@w"}]),
        )
        .unwrap();
        assert_eq!(r["emails"][0]["value"], "b@w");
        assert_eq!(r["emails"][1]["value"], "a@h");
        assert_eq!(r["name"]["givenName"], "A");
        let r = run(
            r,
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        )
        .unwrap();
        assert_eq!(r["emails"].as_array().map(Vec::len), Some(1));
        let r = run(r, json!([{"op": "remove", "path": "emails"}])).unwrap();
        assert!(r.get("emails").is_none());
    }

    #[test]
    fn read_only_paths_and_bad_paths_are_refused() {
        let d = json!({"userName": "a"});
        let e = run(
            d.clone(),
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
        let e = run(
            d.clone(),
            json!([{"op": "add", "path": "shoeSize", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let e = run(d.clone(), json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e = run(
            d,
            json!([{"op": "frobnicate", "path": "title", "value": "x"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
    }

    #[test]
    fn nothing_is_applied_when_one_operation_fails() {
        let d = json!({"userName": "a", "title": "t"});
        let ops = parse_request(&json!({"Operations": [
            {"op": "replace", "path": "title", "value": "new"},
            {"op": "replace", "path": "active", "value": "maybe"}]}))
        .unwrap();
        let m = d.as_object().cloned().unwrap();
        assert!(apply(&USER_TYPE, &m, &ops).is_err());
        assert_eq!(m["title"], "t");
    }

    #[test]
    fn extension_paths_and_whole_extension_values() {
        let d = json!({"userName": "a"});
        let r = run(
            d,
            json!([{"op": "add", "path": format!("{ENTERPRISE}:manager.value"), "value": "m1"},
                   {"op": "add", "path": ENTERPRISE, "value": {"department": "D"}}]),
        )
        .unwrap();
        assert_eq!(
            r[ENTERPRISE],
            json!({"manager": {"value": "m1"}, "department": "D"})
        );
    }

    #[test]
    fn group_member_add_and_filtered_remove() {
        let d = json!({"displayName": "g", "members": [{"value": "u1"}]})
            .as_object()
            .cloned()
            .unwrap();
        let ops = parse_request(&json!({"Operations": [
            {"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u1"}]},
            {"op": "remove", "path": "members[value eq \"u1\"]"}]}))
        .unwrap();
        let r = apply(&GROUP_TYPE, &d, &ops).unwrap();
        assert_eq!(Value::Object(r)["members"], json!([{"value": "u2"}]));
    }
}
