//! SCIM filters (RFC 7644 §3.4.2.2): parse, then evaluate against a resource's JSON.
//!
//! The whole grammar: `eq ne co sw ew pr gt ge lt le`, `and` / `or` / `not`, grouping with
//! parentheses, schema-URN-prefixed attribute paths and value paths such as
//! `emails[type eq "work" and primary eq true].value`. Operators and attribute names are
//! case-insensitive; string comparisons honour each attribute's `caseExact`.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::{ScimError, ScimResult};
use crate::schema::{Attr, ResourceType, Scope, Type};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains.
    Co,
    /// Starts with.
    Sw,
    /// Ends with.
    Ew,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
}

/// An attribute path: an optional schema URN, an attribute, an optional sub-attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    /// The path as written.
    pub text: String,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`.
    Compare(AttrPath, CompareOp, Value),
    /// `attr pr`.
    Present(AttrPath),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`.
    ValuePath(AttrPath, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
}

fn tokenize(s: &str) -> ScimResult<Vec<Tok>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                // `]` directly followed by `.sub`
                if chars.get(i + 1) == Some(&'.') {
                    out.push(Tok::Dot);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                let start = i;
                i += 1;
                let mut raw = String::from('"');
                let mut closed = false;
                while i < chars.len() {
                    let ch = chars[i];
                    raw.push(ch);
                    i += 1;
                    if ch == '\\' {
                        if let Some(&n) = chars.get(i) {
                            raw.push(n);
                            i += 1;
                        }
                    } else if ch == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(ScimError::filter(format!(
                        "unterminated string starting at character {}",
                        start + 1
                    )));
                }
                let v: String = serde_json::from_str(&raw).map_err(|e| {
                    ScimError::filter(format!("bad string at character {}: {e}", start + 1))
                })?;
                out.push(Tok::Str(v));
            }
            _ => {
                let mut w = String::new();
                while i < chars.len() && !matches!(chars[i], ' ' | '(' | ')' | '[' | ']' | '"') {
                    w.push(chars[i]);
                    i += 1;
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> ScimResult<Filter> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> ScimResult<Filter> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> ScimResult<Filter> {
        if self.peek_keyword("not") && self.toks.get(self.pos + 1) == Some(&Tok::LParen) {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.group()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            return self.group();
        }
        self.atom()
    }

    fn group(&mut self) -> ScimResult<Filter> {
        if self.next() != Some(Tok::LParen) {
            return Err(ScimError::filter("expected '('"));
        }
        let f = self.or()?;
        if self.next() != Some(Tok::RParen) {
            return Err(ScimError::filter("missing ')'"));
        }
        Ok(f)
    }

    fn atom(&mut self) -> ScimResult<Filter> {
        let path = match self.next() {
            Some(Tok::Word(w)) => AttrPath { text: w },
            other => {
                return Err(ScimError::filter(format!(
                    "expected an attribute name, found {}",
                    describe(other.as_ref())
                )));
            }
        };
        check_attr_path(&path.text)?;
        if self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Tok::RBracket) {
                return Err(ScimError::filter(format!(
                    "missing ']' after {}[",
                    path.text
                )));
            }
            if self.peek() == Some(&Tok::Dot) {
                return Err(ScimError::filter(
                    "a value path with a sub-attribute is a PATCH path, not a filter",
                ));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let op = match self.next() {
            Some(Tok::Word(w)) => w.to_ascii_lowercase(),
            other => {
                return Err(ScimError::filter(format!(
                    "expected an operator after {}, found {}",
                    path.text,
                    describe(other.as_ref())
                )));
            }
        };
        let op = match op.as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => {
                return Err(ScimError::filter(format!("unknown operator {other:?}")));
            }
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                n => serde_json::from_str::<serde_json::Number>(n)
                    .map(Value::Number)
                    .map_err(|_| {
                        ScimError::filter(format!(
                            "bad value {n:?} after {} (strings need double quotes)",
                            path.text
                        ))
                    })?,
            },
            other => {
                return Err(ScimError::filter(format!(
                    "expected a value after {}, found {}",
                    path.text,
                    describe(other.as_ref())
                )));
            }
        };
        Ok(Filter::Compare(path, op, value))
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Word(w)) => format!("{w:?}"),
        Some(Tok::Str(s)) => format!("string {s:?}"),
        Some(Tok::LParen) => "'('".into(),
        Some(Tok::RParen) => "')'".into(),
        Some(Tok::LBracket) => "'['".into(),
        Some(Tok::RBracket) => "']'".into(),
        Some(Tok::Dot) => "'.'".into(),
    }
}

fn check_attr_path(p: &str) -> ScimResult<()> {
    let name = crate::schema::split_urn(p).map(|(_, a)| a).unwrap_or(p);
    let ok = !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|seg| {
            let mut cs = seg.chars();
            cs.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
                && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(ScimError::filter(format!("bad attribute path {p:?}")))
    }
}

/// Parse a filter.
pub fn parse(s: &str) -> ScimResult<Filter> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    if p.toks.is_empty() {
        return Err(ScimError::filter("empty filter"));
    }
    let f = p.or()?;
    if p.pos < p.toks.len() {
        return Err(ScimError::filter(format!(
            "unexpected {} after a complete filter",
            describe(p.peek())
        )));
    }
    Ok(f)
}

/// Parse the inside of a PATCH value path's brackets, with the multi-valued attribute as
/// context: `type eq "work"` of `emails[type eq "work"]`.
pub fn parse_inner(s: &str) -> ScimResult<Filter> {
    parse(s)
}

/// Where the evaluator is: at the top of a resource, or inside one value of a complex
/// multi-valued attribute.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Top(&'a ResourceType),
    Sub(&'a Attr),
}

/// Evaluate `f` against a resource (canonical attribute names).
pub fn matches(f: &Filter, rt: &ResourceType, resource: &Value) -> ScimResult<bool> {
    eval(f, Ctx::Top(rt), resource)
}

/// Evaluate `f` against one value of the complex multi-valued `attr`.
pub fn matches_value(f: &Filter, attr: &Attr, value: &Value) -> ScimResult<bool> {
    eval(f, Ctx::Sub(attr), value)
}

/// The values an attribute path selects, with the attribute describing them.
fn select<'v>(
    ctx: Ctx<'_>,
    path: &str,
    obj: &'v Value,
) -> ScimResult<(&'static Attr, Vec<&'v Value>)> {
    match ctx {
        Ctx::Top(rt) => {
            let (head, sub) = match crate::schema::split_urn(path) {
                Some((urn, rest)) => {
                    let (h, s) = split_dot(rest);
                    (format!("{urn}:{h}"), s)
                }
                None => {
                    let (h, s) = split_dot(path);
                    (h.to_owned(), s)
                }
            };
            let (scope, attr) = rt
                .resolve(&head)
                .ok_or_else(|| ScimError::filter(format!("unknown attribute {path:?}")))?;
            let container = match scope {
                Scope::Core => Some(obj),
                Scope::Extension(u) => obj.get(u),
            };
            let top = container.and_then(|c| c.get(attr.name));
            let vals: Vec<&Value> = match top {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
            };
            match sub {
                None => Ok((attr, vals)),
                Some(s) => {
                    let sa = attr.sub_attr(s).ok_or_else(|| {
                        ScimError::filter(format!("unknown sub-attribute {path:?}"))
                    })?;
                    let out = vals
                        .into_iter()
                        .filter_map(|v| v.get(sa.name))
                        .flat_map(|v| match v {
                            Value::Array(a) => a.iter().collect(),
                            Value::Null => Vec::new(),
                            v => vec![v],
                        })
                        .collect();
                    Ok((sa, out))
                }
            }
        }
        Ctx::Sub(parent) => {
            let sa = parent
                .sub_attr(path)
                .ok_or_else(|| ScimError::filter(format!("unknown sub-attribute {path:?}")))?;
            let v: Vec<&Value> = obj
                .get(sa.name)
                .filter(|v| !v.is_null())
                .into_iter()
                .collect();
            Ok((sa, v))
        }
    }
}

fn split_dot(s: &str) -> (&str, Option<&str>) {
    match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

fn eval(f: &Filter, ctx: Ctx<'_>, obj: &Value) -> ScimResult<bool> {
    match f {
        Filter::And(a, b) => Ok(eval(a, ctx, obj)? && eval(b, ctx, obj)?),
        Filter::Or(a, b) => Ok(eval(a, ctx, obj)? || eval(b, ctx, obj)?),
        Filter::Not(a) => Ok(!eval(a, ctx, obj)?),
        Filter::Present(p) => {
            let (_, vals) = select(ctx, &p.text, obj)?;
            Ok(vals.iter().any(|v| present(v)))
        }
        Filter::ValuePath(p, inner) => {
            let (attr, vals) = select(ctx, &p.text, obj)?;
            if attr.ty != Type::Complex {
                return Err(ScimError::filter(format!(
                    "{} is not a complex attribute",
                    p.text
                )));
            }
            for v in vals {
                if eval(inner, Ctx::Sub(attr), v)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Filter::Compare(p, op, want) => {
            let (attr, vals) = select(ctx, &p.text, obj)?;
            // A complex attribute compares through its `value` sub-attribute.
            let (attr, vals): (&Attr, Vec<&Value>) = if attr.ty == Type::Complex {
                match attr.sub_attr("value") {
                    Some(sa) => (sa, vals.iter().filter_map(|v| v.get(sa.name)).collect()),
                    None => {
                        return Err(ScimError::filter(format!(
                            "{} is complex; name a sub-attribute",
                            p.text
                        )));
                    }
                }
            } else {
                (attr, vals)
            };
            if attr.ty == Type::Boolean && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return Err(ScimError::filter(format!(
                    "{} is a boolean: only eq and ne apply",
                    p.text
                )));
            }
            if *op == CompareOp::Ne {
                let any_eq = vals
                    .iter()
                    .map(|v| compare(attr, CompareOp::Eq, v, want))
                    .collect::<ScimResult<Vec<bool>>>()?
                    .into_iter()
                    .any(|b| b);
                return Ok(!any_eq);
            }
            for v in vals {
                if compare(attr, *op, v, want)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn fold(attr: &Attr, s: &str) -> String {
    if attr.case_exact {
        s.to_owned()
    } else {
        s.to_lowercase()
    }
}

fn compare(attr: &Attr, op: CompareOp, have: &Value, want: &Value) -> ScimResult<bool> {
    match (have, want) {
        (Value::String(h), Value::String(w)) => {
            let (h, w) = (fold(attr, h), fold(attr, w));
            Ok(match op {
                CompareOp::Eq => h == w,
                CompareOp::Ne => h != w,
                CompareOp::Co => h.contains(&w),
                CompareOp::Sw => h.starts_with(&w),
                CompareOp::Ew => h.ends_with(&w),
                CompareOp::Gt => h > w,
                CompareOp::Ge => h >= w,
                CompareOp::Lt => h < w,
                CompareOp::Le => h <= w,
            })
        }
        (Value::Bool(h), Value::Bool(w)) => Ok(match op {
            CompareOp::Eq => h == w,
            CompareOp::Ne => h != w,
            _ => false,
        }),
        (Value::Number(h), Value::Number(w)) => {
            let ord = h
                .as_f64()
                .zip(w.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b))
                .unwrap_or(Ordering::Equal);
            Ok(match op {
                CompareOp::Eq => ord == Ordering::Equal,
                CompareOp::Ne => ord != Ordering::Equal,
                CompareOp::Gt => ord == Ordering::Greater,
                CompareOp::Ge => ord != Ordering::Less,
                CompareOp::Lt => ord == Ordering::Less,
                CompareOp::Le => ord != Ordering::Greater,
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                    return Err(ScimError::filter("co, sw and ew apply to strings"));
                }
            })
        }
        (_, Value::Null) => Ok(match op {
            CompareOp::Eq => have.is_null(),
            _ => false,
        }),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::USER_TYPE;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "u1",
            "userName": "Alice",
            "displayName": "Alice Liddell",
            "active": true,
            "title": "Tour Guide",
            "emails": [
                {"value": "alice@work.example", "type": "work", "primary": true},
                {"value": "alice@home.example", "type": "home"}
            ],
            "meta": {"lastModified": "2026-01-02T03:04:05Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984", "department": "Tour Operations"
            }
        })
    }

    fn m(f: &str) -> bool {
        matches(&parse(f).unwrap(), &USER_TYPE, &user()).unwrap()
    }

    #[test]
    fn every_operator() {
        assert!(m(r#"userName eq "alice""#)); // caseExact false
        assert!(!m(r#"id eq "U1""#)); // id is caseExact
        assert!(m(r#"userName ne "bob""#));
        assert!(m(r#"displayName co "lidd""#));
        assert!(m(r#"displayName sw "ALICE""#));
        assert!(m(r#"displayName ew "dell""#));
        assert!(m("title pr"));
        assert!(!m("nickName pr"));
        assert!(m(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#));
        assert!(m(r#"meta.lastModified ge "2026-01-02T03:04:05Z""#));
        assert!(!m(r#"meta.lastModified lt "2026-01-01T00:00:00Z""#));
        assert!(m(r#"meta.lastModified le "2026-01-02T03:04:05Z""#));
        assert!(m("active eq true"));
        assert!(!m("active eq false"));
    }

    #[test]
    fn logic_grouping_and_precedence() {
        // and binds tighter than or
        assert!(m(
            r#"userName eq "x" or userName eq "alice" and active eq true"#
        ));
        assert!(!m(
            r#"(userName eq "x" or userName eq "alice") and active eq false"#
        ));
        assert!(m(r#"not (userName eq "bob")"#));
        assert!(!m(r#"NOT (userName EQ "alice")"#));
    }

    #[test]
    fn value_paths_and_multi_valued_attributes() {
        assert!(m(r#"emails[type eq "work" and value co "@work"]"#));
        assert!(!m(r#"emails[type eq "work" and value co "@home"]"#));
        assert!(m(r#"emails.value ew "home.example""#));
        assert!(m(r#"emails eq "alice@home.example""#));
        assert!(m(r#"emails[not (type eq "other")]"#));
    }

    #[test]
    fn urn_prefixed_paths() {
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "al""#
        ));
    }

    #[test]
    fn bad_filters_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            r#"userName zz "a""#,
            r#"userName eq alice"#,
            r#"(userName eq "a""#,
            r#"userName eq "a" extra"#,
            r#"emails[type eq "work""#,
            r#"userName eq "unterminated"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{bad}");
        }
        let e = matches(&parse(r#"shoeSize eq "9""#).unwrap(), &USER_TYPE, &user()).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidFilter"));
        let e = matches(&parse("active gt true").unwrap(), &USER_TYPE, &user()).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidFilter"));
    }

    #[test]
    fn escaped_quotes_in_strings() {
        let f = parse(r#"displayName eq "a \"b\"""#).unwrap();
        assert_eq!(
            f,
            Filter::Compare(
                AttrPath {
                    text: "displayName".into()
                },
                CompareOp::Eq,
                json!("a \"b\"")
            )
        );
    }
}
