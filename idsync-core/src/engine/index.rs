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
    /// The account's own anchor: a correlation rule (`"anchor"`) that matches a target
    /// account of the same anchor, e.g. a hub account made by another job.
    Anchor,
    /// The orgs as a set (order and repeats ignored): for targets that keep no primary org.
    OrgSet,
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
            "anchor" => AccField::Anchor,
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
            AccField::Orgs | AccField::OrgSet => "orgs".into(),
            AccField::Anchor => "anchor".into(),
            AccField::Manager => "manager".into(),
            AccField::Status => "status".into(),
            AccField::Attr(a) => format!("{ATTR_PREFIX}{a}"),
            AccField::AllAttrs => "attrs.*".into(),
        }
    }
}

/// The hasher of fingerprints: fast and deterministic (FxHash). Fingerprints live only
/// as long as one plan; they are never stored.
type Fp = rustc_hash::FxHasher;

fn h_opt_str(v: Option<&str>) -> u64 {
    let mut h = Fp::default();
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
    let mut h = Fp::default();
    hash_value_into(v, &mut h);
    h.finish()
}

fn hash_value_into(v: &Value, h: &mut Fp) {
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
        AccField::Anchor => Some(a.anchor.as_str()),
        AccField::DisplayName => a.display_name.as_deref(),
        AccField::Email => a.email.as_deref(),
        AccField::Phone => a.phone.as_deref(),
        AccField::EmployeeId => a.employee_id.as_deref(),
        AccField::Title => a.title.as_deref(),
        AccField::Manager => a.manager.as_ref().map(|m| m.as_str()),
        AccField::Attr(name) => a.attrs.get(name).and_then(Value::as_str),
        AccField::Orgs | AccField::OrgSet | AccField::Status | AccField::AllAttrs => None,
    }
}

/// Hash of one field of an account; `AllAttrs` is handled by [`attr_hashes`].
pub(crate) fn field_hash(a: &Account, f: &AccField) -> u64 {
    match f {
        AccField::Username => h_opt_str(Some(&a.username)),
        AccField::Anchor => h_opt_str(Some(a.anchor.as_str())),
        AccField::DisplayName => h_opt_str(a.display_name.as_deref()),
        AccField::Email => h_opt_str(a.email.as_deref()),
        AccField::Phone => h_opt_str(a.phone.as_deref()),
        AccField::EmployeeId => h_opt_str(a.employee_id.as_deref()),
        AccField::Title => h_opt_str(a.title.as_deref()),
        AccField::Orgs => {
            let mut h = Fp::default();
            h.write_usize(a.orgs.len());
            for o in &a.orgs {
                h.write(o.as_str().as_bytes());
                h.write_u8(0xff);
            }
            h.finish()
        }
        AccField::OrgSet => {
            let mut set: Vec<&str> = a.orgs.iter().map(|o| o.as_str()).collect();
            set.sort_unstable();
            set.dedup();
            let mut h = Fp::default();
            h.write_usize(set.len());
            for o in set {
                h.write(o.as_bytes());
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

/// Hash of a correlation key ([`correlation_key`](crate::model::correlation_key): the one
/// rule of every path), tagged with the rule index.
pub(crate) fn key_hash(rule: usize, value: &str) -> Option<u64> {
    let k = crate::model::correlation_key(value)?;
    let mut h = Fp::default();
    h.write_usize(rule);
    h.write(k.as_bytes());
    Some(h.finish())
}

/// "No id" in the planner's id-indexed tables.
pub(crate) const NONE: u32 = u32::MAX;

/// Anchors interned into one text buffer: each distinct anchor gets a dense `u32` id, so
/// per-anchor state lives in flat vectors instead of maps keyed by owned strings (a
/// million anchors cost one buffer and a table, not a million allocations).
///
/// The table is open addressing with linear probing; a slot packs the upper half of the
/// anchor's hash with its id + 1 (0: empty). Lookups of a batch go in two passes:
/// [`hash`](Self::hash) + [`peek`](Self::peek) for every anchor first, whose loads of
/// independent slots the CPU overlaps, then [`intern_at`](Self::intern_at) /
/// [`get_at`](Self::get_at), which find the slots in cache. On a million anchors that
/// is about twice as fast as one lookup after the other, which waits for memory each time.
/// A peek only warms the cache: the lookup reads the table again, so inserts between the
/// two passes are harmless. Where the ids of a batch are scattered, a second warming pass
/// ([`touch`](Self::touch)) loads their texts as well.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    text: String,
    /// End offset in `text` of each id's anchor (its start is the previous id's end).
    ends: Vec<usize>,
    slots: Vec<u64>,
}

impl Interner {
    /// The hash a lookup of `s` needs.
    pub(crate) fn hash(s: &str) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        h.write(s.as_bytes());
        h.write_u8(0xff);
        h.finish()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Load the first slot a lookup of hash `h` reads, so that it is in cache when the
    /// lookup comes.
    pub(crate) fn peek(&self, h: u64) {
        std::hint::black_box(self.slots.get(h as usize & self.mask()).copied());
    }

    /// After [`peek`](Self::peek): load the text the first slot points to, so that the
    /// comparison of the lookup finds it in cache too.
    pub(crate) fn touch(&self, h: u64) {
        let w = self
            .slots
            .get(h as usize & self.mask())
            .copied()
            .unwrap_or(0);
        if w != 0 && w >> 32 == h >> 32 {
            std::hint::black_box(self.resolve((w as u32).wrapping_sub(1)).as_bytes().first());
        }
    }

    /// The text of an id.
    pub(crate) fn resolve(&self, id: u32) -> &str {
        let i = id as usize;
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(usize::MAX),
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.text.get(start..end).unwrap_or("")
    }

    fn matches(&self, w: u64, h: u64, s: &str) -> Option<u32> {
        let id = (w as u32).wrapping_sub(1);
        (w >> 32 == h >> 32 && self.resolve(id) == s).then_some(id)
    }

    /// Find `s` (hash `h`): its id, or the empty slot where it would go.
    fn probe(&self, h: u64, s: &str) -> std::result::Result<u32, usize> {
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let w = self.slots.get(i).copied().unwrap_or(0);
            if w == 0 {
                return Err(i);
            }
            if let Some(id) = self.matches(w, h, s) {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// The id of `s`, if interned.
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.get_at(Self::hash(s), s)
    }

    /// [`get`](Self::get) with the hash already computed.
    pub(crate) fn get_at(&self, h: u64, s: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(h, s).ok()
    }

    /// The id of `s`, interning it if new; `None` past `u32::MAX - 1` anchors.
    #[cfg(test)]
    pub(crate) fn intern(&mut self, s: &str) -> Option<u32> {
        self.intern_at(Self::hash(s), s)
    }

    /// [`intern`](Self::intern) with the hash already computed.
    pub(crate) fn intern_at(&mut self, h: u64, s: &str) -> Option<u32> {
        if (self.ends.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let at = match self.probe(h, s) {
            Ok(id) => return Some(id),
            Err(at) => at,
        };
        let id = u32::try_from(self.ends.len())
            .ok()
            .filter(|i| *i < NONE - 1)?;
        self.text.push_str(s);
        self.ends.push(self.text.len());
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = (h >> 32 << 32) | (u64::from(id) + 1);
        }
        Some(id)
    }

    /// Double the table (at most half full) and place every id again.
    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(1024);
        self.slots = vec![0; n];
        let mask = n - 1;
        let mut start = 0;
        for (id, end) in self.ends.iter().enumerate() {
            let h = Self::hash(self.text.get(start..*end).unwrap_or(""));
            start = *end;
            let mut i = h as usize & mask;
            while self.slots.get(i).is_some_and(|w| *w != 0) {
                i = (i + 1) & mask;
            }
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = (h >> 32 << 32) | (id as u64 + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_ignores_case_and_outer_space_only() {
        let k = |v: &str| key_hash(0, v);
        assert_eq!(k(" Zhang.San@Example.COM "), k("zhang.san@example.com"));
        assert_eq!(k("ÄRGER"), k("ärger"), "non-ASCII lowercased too");
        assert_eq!(k("\u{212A}"), k("k"), "the Kelvin sign lowercases to k");
        let long = "X".repeat(300);
        assert_eq!(k(&long), k(&long.to_lowercase()), "past the stack buffer");
        assert_ne!(k("zhang san"), k("zhangsan"));
        assert_ne!(key_hash(0, "a"), key_hash(1, "a"), "tagged with the rule");
        assert_eq!(k("   "), None);
    }

    #[test]
    fn interner_gives_dense_ids_and_finds_them_again() {
        let mut i = Interner::default();
        assert_eq!(i.get("u1"), None, "an empty table finds nothing");
        let a = i.intern("u1").unwrap();
        let b = i.intern("用户/2").unwrap();
        let e = i.intern("").unwrap();
        assert_eq!((a, b, e), (0, 1, 2));
        assert_eq!(i.intern("u1"), Some(a));
        assert_eq!(i.get("用户/2"), Some(b));
        assert_eq!(i.get(""), Some(e));
        assert_eq!(i.get("u2"), None);
        assert_eq!(i.resolve(a), "u1");
        assert_eq!(i.resolve(b), "用户/2");
        assert_eq!(i.resolve(e), "");
        assert_eq!(i.resolve(99), "");
    }

    #[test]
    fn interner_survives_growth_and_batched_lookups() {
        let mut i = Interner::default();
        let words: Vec<String> = (0..5000).map(|n| format!("anchor-{n}")).collect();
        for (n, w) in words.iter().enumerate() {
            assert_eq!(i.intern(w), Some(n as u32));
        }
        // Two passes, as the planner does them.
        let hs: Vec<u64> = words.iter().map(|w| Interner::hash(w)).collect();
        for h in &hs {
            i.peek(*h);
        }
        for (n, (w, h)) in words.iter().zip(hs).enumerate() {
            assert_eq!(i.get_at(h, w), Some(n as u32));
            assert_eq!(i.resolve(n as u32), w);
        }
        assert_eq!(i.get("anchor-5000"), None);
    }

    #[test]
    fn interner_keeps_apart_texts_whose_hashes_collide() {
        let mut i = Interner::default();
        let a = i.intern("a").unwrap();
        // Place "b" as if it had the hash of "a": the next free slot after a's.
        let h = Interner::hash("a");
        let Err(at) = i.probe(h, "b") else {
            panic!("b is not interned yet");
        };
        i.text.push('b');
        i.ends.push(i.text.len());
        i.slots[at] = (h >> 32 << 32) | 2;
        assert_eq!(i.get_at(h, "a"), Some(a));
        assert_eq!(i.get_at(h, "b"), Some(1), "found one slot further");
        assert_eq!(i.get_at(h, "c"), None);
        // The ids stay apart when the table grows.
        for n in 0..2000 {
            i.intern(&format!("x{n}"));
        }
        assert_eq!(i.get("a"), Some(a));
        assert_eq!(i.get("b"), Some(1));
    }
}
