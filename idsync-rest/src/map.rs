//! Items ↔ model entities through JSON pointers: pure functions, no I/O.

use idsync_core::{Account, Anchor, Entity, Error, Patch, Result, Status};
use serde_json::{Map, Value};

use crate::config::{EntityConfig, StatusSpec};
use crate::error::{At, RestError};

/// The value at `pointer` (`""`: the whole value); `None` when absent.
pub(crate) fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        Some(v)
    } else {
        v.pointer(pointer)
    }
}

/// Text of an id: a string or an integer. `None` for absent, null or empty.
pub(crate) fn id_text(v: Option<&Value>) -> std::result::Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "expected a string or an integer id, got {}",
            kind_of(other)
        )),
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads one item into an entity: anchor, mapped fields (with their read transforms),
/// the attrs object, and for accounts the status.
pub(crate) fn read<E: Entity + Default>(
    item: &Value,
    cfg: &EntityConfig,
    at_: &At,
    index: usize,
) -> Result<E> {
    let anchor_ptr = cfg
        .fields
        .get("anchor")
        .map(|f| f.pointer().to_owned())
        .unwrap_or_default();
    let anchor = match id_text(at(item, &anchor_ptr)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(RestError::NoAnchor {
                at: at_.clone(),
                item: index,
                pointer: anchor_ptr,
            }
            .into());
        }
        Err(what) => {
            return Err(RestError::Type {
                at: at_.clone(),
                item: index,
                pointer: anchor_ptr,
                what,
            }
            .into());
        }
    };
    let mut e = E::default();
    e.set_anchor(Anchor::new(anchor));
    let type_err = |pointer: &str, what: String| -> Error {
        RestError::Type {
            at: at_.clone(),
            item: index,
            pointer: pointer.to_owned(),
            what,
        }
        .into()
    };
    if let Some(ap) = &cfg.attrs {
        match at(item, ap) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !v.is_null() {
                        e.set(&format!("attrs.{k}"), v.clone())
                            .map_err(|err| type_err(ap, err.message().to_owned()))?;
                    }
                }
            }
            Some(other) => {
                return Err(type_err(
                    ap,
                    format!("expected an object of attributes, got {}", kind_of(other)),
                ));
            }
        }
    }
    for (field, spec) in &cfg.fields {
        if field == "anchor" {
            continue;
        }
        let raw = at(item, spec.pointer()).cloned().unwrap_or(Value::Null);
        if matches!(raw, Value::Object(_)) || (matches!(raw, Value::Array(_)) && field != "orgs") {
            return Err(type_err(
                spec.pointer(),
                format!("field {field}: expected a scalar, got {}", kind_of(&raw)),
            ));
        }
        if field == "orgs"
            && let Value::Array(items) = &raw
            && let Some(bad) = items
                .iter()
                .find(|i| !matches!(i, Value::String(_) | Value::Number(_)))
        {
            return Err(type_err(
                spec.pointer(),
                format!("field orgs: expected ids, got {}", kind_of(bad)),
            ));
        }
        let v = spec
            .transforms()
            .iter()
            .fold(raw, |v, t| apply_transform(t, v));
        e.set(field, v)
            .map_err(|err| type_err(spec.pointer(), err.message().to_owned()))?;
    }
    Ok(e)
}

fn apply_transform(t: &idsync_core::Transform, v: Value) -> Value {
    // The engine's mapping transforms, applied through a one-rule mapping.
    let mut a = idsync_core::Account::new("x", "x");
    a.attrs.insert("v".into(), v);
    let m = idsync_core::mapping::EntityMapping::rules(vec![
        idsync_core::FieldRule::copy("attrs.v", "attrs.v").with(t.clone()),
    ]);
    match m.map(&a) {
        Ok(Some(out)) => out.get("attrs.v"),
        _ => a.get("attrs.v"),
    }
}

/// Reads the account status.
pub(crate) fn read_status(
    item: &Value,
    spec: &StatusSpec,
    at_: &At,
    index: usize,
) -> Result<Status> {
    match at(item, &spec.pointer) {
        None | Some(Value::Null) if spec.absent_is_active => Ok(Status::Active),
        Some(v) if *v == spec.active => Ok(Status::Active),
        Some(v) if *v == spec.disabled || spec.disabled_also.contains(v) => Ok(Status::Disabled),
        other => Err(RestError::Type {
            at: at_.clone(),
            item: index,
            pointer: spec.pointer.clone(),
            what: format!(
                "status {} is neither the active value {} nor a disabled one {}",
                other.map_or("absent".to_owned(), Value::to_string),
                spec.active,
                spec.disabled
            ),
        }
        .into()),
    }
}

/// Sets `v` at `pointer` in `root`, making objects on the way.
pub(crate) fn set_at(root: &mut Value, pointer: &str, v: Value) {
    if pointer.is_empty() {
        *root = v;
        return;
    }
    let mut cur = root;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = parts.split_last() else {
        return;
    };
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), v);
    }
}

/// Merges `patch` into `base` (objects key by key, everything else replaced).
pub(crate) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn status_value(spec: &StatusSpec, v: &Value) -> Result<Value> {
    match v.as_str() {
        Some(s) if s.eq_ignore_ascii_case("active") => Ok(spec.active.clone()),
        Some(s) if s.eq_ignore_ascii_case("disabled") => Ok(spec.disabled.clone()),
        _ => Err(Error::invalid_data(format!(
            "rest: status {v} is neither active nor disabled"
        ))),
    }
}

/// Where a model field is written, with the value to write there.
fn place(cfg: &EntityConfig, field: &str, v: &Value) -> Result<Option<(String, Value)>> {
    if field == "status" {
        return match &cfg.status {
            Some(s) => Ok(Some((s.pointer.clone(), status_value(s, v)?))),
            None => Err(Error::unsupported(
                "rest: the status is not mapped (set `status` of the entity)",
            )),
        };
    }
    if let Some(spec) = cfg.fields.get(field) {
        return Ok((!spec.read_only()).then(|| (spec.pointer().to_owned(), v.clone())));
    }
    if let (Some(name), Some(ap)) = (field.strip_prefix("attrs."), &cfg.attrs) {
        let esc = name.replace('~', "~0").replace('/', "~1");
        return Ok(Some((format!("{ap}/{esc}"), v.clone())));
    }
    Err(Error::unsupported(format!(
        "rest: field {field} has no JSON pointer in the config (add it to `fields`, or set \
         `attrs` for attributes)"
    ))
    .with_context("field", field))
}

/// The body of a create: every mapped field of the entity (nulls left out), the anchor
/// only when `with_anchor`.
pub(crate) fn body_of<E: Entity>(e: &E, cfg: &EntityConfig, with_anchor: bool) -> Result<Value> {
    let mut body = Value::Object(Map::new());
    if with_anchor && let Some(spec) = cfg.fields.get("anchor") {
        set_at(&mut body, spec.pointer(), Value::from(e.anchor().as_str()));
    }
    for field in cfg.fields.keys().filter(|f| *f != "anchor") {
        let v = e.get(field);
        if v.is_null() || v.as_array().is_some_and(Vec::is_empty) && field != "orgs" {
            continue;
        }
        if let Some((p, v)) = place(cfg, field, &v)? {
            set_at(&mut body, &p, v);
        }
    }
    for (k, v) in e.attrs() {
        let f = format!("attrs.{k}");
        if cfg.fields.contains_key(&f) {
            continue;
        }
        if let Some((p, v)) = place(cfg, &f, v)? {
            set_at(&mut body, &p, v);
        }
    }
    Ok(body)
}

/// The body of an account create, with its status.
pub(crate) fn account_body(a: &Account, cfg: &EntityConfig, with_anchor: bool) -> Result<Value> {
    let mut body = body_of(a, cfg, with_anchor)?;
    if let Some(s) = &cfg.status {
        let v = match a.status {
            Status::Active => s.active.clone(),
            Status::Disabled => s.disabled.clone(),
        };
        set_at(&mut body, &s.pointer, v);
    }
    Ok(body)
}

/// The body of an update: the changed fields only, at their pointers.
pub(crate) fn patch_body(patch: &Patch, cfg: &EntityConfig) -> Result<Value> {
    let mut body = Value::Object(Map::new());
    for (field, v) in patch {
        if let Some((p, v)) = place(cfg, field, v)? {
            set_at(&mut body, &p, v);
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_set_with_objects_on_the_way() {
        let mut v = json!({});
        set_at(&mut v, "/a/b", json!(1));
        set_at(&mut v, "/a/c~1d", json!(2));
        set_at(&mut v, "/x", json!("y"));
        assert_eq!(v, json!({"a": {"b": 1, "c/d": 2}, "x": "y"}));
        let mut base = json!({"a": {"b": 1, "k": 3}, "z": 0});
        merge(&mut base, json!({"a": {"b": 2}}));
        assert_eq!(base, json!({"a": {"b": 2, "k": 3}, "z": 0}));
    }

    #[test]
    fn ids_and_kinds() {
        assert_eq!(id_text(Some(&json!(7))).unwrap().as_deref(), Some("7"));
        assert_eq!(id_text(Some(&json!(""))).unwrap(), None);
        assert!(id_text(Some(&json!(1.5))).is_err());
        assert!(id_text(Some(&json!({"id": 1}))).is_err());
    }
}
