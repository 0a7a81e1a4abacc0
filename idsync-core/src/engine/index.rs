//! Compact per-field fingerprints of accounts, so that a million target accounts can be
//! indexed in a few hundred bytes each: the engine keeps hashes, not records.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::model::{ATTR_PREFIX, Account, Status};

/// An owned account field, resolved once from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccField {
    Username,
    DisplayName,
    Email,
    Phone,
    EmployeeId,
    Title,
    Orgs,
    Manager,
    Status,
    Attr(String),
    AllAttrs,
}

impl AccField {
    pub(crate) fn parse(name: &str) -> Option<AccField> {
        Some(match name {
            "username" => AccField::Username,
            "display_name" => AccField::DisplayName,
            "email" => AccField::Email,
            "phone" => AccField::Phone,
            "employee_id" => AccField::EmployeeId,
            "title" => AccField::Title,
            "orgs" => AccField::Orgs,
            "manager" => AccField::Manager,
            "status" => AccField::Status,
            "attrs.*" => AccField::AllAttrs,
            other => AccField::Attr(other.strip_prefix(ATTR_PREFIX)?.to_owned()),
        })
    }

    pub(crate) fn name(&self) -> String {
        match self {
            AccField::Username => "username".into(),
            AccField::DisplayName => "display_name".into(),
            AccField::Email => "email".into(),
            AccField::Phone => "phone".into(),
            AccField::EmployeeId => "employee_id".into(),
            AccField::Title => "title".into(),
            AccField::Orgs => "orgs".into(),
            AccField::Manager => "manager".into(),
            AccField::Status => "status".into(),
            AccField::Attr(a) => format!("{ATTR_PREFIX}{a}"),
            AccField::AllAttrs => "attrs.*".into(),
        }
    }
}

/// A stable 64-bit hasher (FNV-1a); stable across runs and platforms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn h_opt_str(v: Option<&str>) -> u64 {
    let mut h = Fnv::default();
    match v {
        None => h.write_u8(0),
        Some(s) => {
            h.write_u8(1);
            h.write(s.as_bytes());
        }
    }
    h.finish()
}

pub(crate) fn hash_value(v: &Value) -> u64 {
    let mut h = Fnv::default();
    hash_value_into(v, &mut h);
    h.finish()
}

fn hash_value_into(v: &Value, h: &mut Fnv) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        Value::Number(n) => {
            h.write_u8(2);
            h.write(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.write_u8(3);
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for i in items {
                hash_value_into(i, h);
            }
        }
        Value::Object(map) => {
            h.write_u8(5);
            h.write_usize(map.len());
            for (k, v) in map {
                h.write(k.as_bytes());
                h.write_u8(0xff);
                hash_value_into(v, h);
            }
        }
    }
}

/// The text of a string-valued field (correlation keys), without copying.
pub(crate) fn field_str<'a>(a: &'a Account, f: &AccField) -> Option<&'a str> {
    match f {
        AccField::Username => Some(&a.username),
        AccField::DisplayName => a.display_name.as_deref(),
        AccField::Email => a.email.as_deref(),
        AccField::Phone => a.phone.as_deref(),
        AccField::EmployeeId => a.employee_id.as_deref(),
        AccField::Title => a.title.as_deref(),
        AccField::Manager => a.manager.as_ref().map(|m| m.as_str()),
        AccField::Attr(name) => a.attrs.get(name).and_then(Value::as_str),
        AccField::Orgs | AccField::Status | AccField::AllAttrs => None,
    }
}

/// Hash of one field of an account; `AllAttrs` is handled by [`attr_hashes`].
pub(crate) fn field_hash(a: &Account, f: &AccField) -> u64 {
    match f {
        AccField::Username => h_opt_str(Some(&a.username)),
        AccField::DisplayName => h_opt_str(a.display_name.as_deref()),
        AccField::Email => h_opt_str(a.email.as_deref()),
        AccField::Phone => h_opt_str(a.phone.as_deref()),
        AccField::EmployeeId => h_opt_str(a.employee_id.as_deref()),
        AccField::Title => h_opt_str(a.title.as_deref()),
        AccField::Orgs => {
            let mut h = Fnv::default();
            h.write_usize(a.orgs.len());
            for o in &a.orgs {
                h.write(o.as_str().as_bytes());
                h.write_u8(0xff);
            }
            h.finish()
        }
        AccField::Manager => h_opt_str(a.manager.as_ref().map(|m| m.as_str())),
        AccField::Status => match a.status {
            Status::Active => 1,
            Status::Disabled => 2,
        },
        AccField::Attr(name) => a.attrs.get(name).map(hash_value).unwrap_or(0),
        AccField::AllAttrs => 0,
    }
}

/// Interned attribute names, so each indexed account stores a small id per attribute.
#[derive(Debug, Default)]
pub(crate) struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Sorted (attribute id, value hash) pairs of an account's attributes.
pub(crate) fn attr_hashes(a: &Account, names: &mut Names) -> Box<[(u32, u64)]> {
    let mut v: Vec<(u32, u64)> = a
        .attrs
        .iter()
        .map(|(k, val)| (names.id(k), hash_value(val)))
        .collect();
    v.sort_unstable();
    v.into_boxed_slice()
}

/// Normalized correlation key hash: trimmed, lowercased, tagged with the rule index.
pub(crate) fn key_hash(rule: usize, value: &str) -> Option<u64> {
    let t = value.trim();
    if t.is_empty() {
        return None;
    }
    let mut h = Fnv::default();
    h.write_usize(rule);
    h.write(t.to_lowercase().as_bytes());
    Some(h.finish())
}
