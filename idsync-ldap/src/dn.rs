//! Distinguished names (RFC 4514) and search filter values (RFC 4515).
//!
//! [`Dn::parse`] accepts the string form servers send: escaped specials (`\,`, `\+`, `\\`,
//! `\"` ...), hex escapes (`\C3\A9` is `é`; consecutive hex bytes form one UTF-8 sequence),
//! multi-valued RDNs joined by `+`, raw UTF-8, and the `#hexstring` form. [`Dn`]'s `Display`
//! writes the RFC 4514 string form back, escaping what must be escaped.
//!
//! [`escape_filter_value`] and [`escape_filter_bytes`] escape assertion values for filters.

use std::fmt;

/// An error in a DN string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DN {dn:?}: {reason}")]
pub struct DnError {
    dn: String,
    reason: &'static str,
}

/// One `type=value` pair of an RDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    /// The attribute type as written (`ou`, `CN`, `2.5.4.3`).
    pub attr: String,
    /// The value, unescaped. For the `#hexstring` form this is the `#...` text itself.
    pub value: String,
    /// The value was written in the `#hexstring` form and is kept verbatim.
    pub hex: bool,
}

impl Ava {
    /// A pair with a plain string value.
    pub fn new(attr: impl Into<String>, value: impl Into<String>) -> Self {
        Ava {
            attr: attr.into(),
            value: value.into(),
            hex: false,
        }
    }
}

/// A relative distinguished name: one or more [`Ava`]s (`cn=a+uid=b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn(pub Vec<Ava>);

impl Rdn {
    /// A single-valued RDN.
    pub fn new(attr: impl Into<String>, value: impl Into<String>) -> Self {
        Rdn(vec![Ava::new(attr, value)])
    }

    /// The value of the first pair whose type matches `attr` (case-insensitive).
    pub fn get(&self, attr: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|a| a.attr.eq_ignore_ascii_case(attr))
            .map(|a| a.value.as_str())
    }

    /// The first pair's value.
    pub fn first_value(&self) -> &str {
        self.0.first().map(|a| a.value.as_str()).unwrap_or("")
    }
}

impl fmt::Display for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ava) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(&ava.attr)?;
            f.write_str("=")?;
            if ava.hex {
                f.write_str(&ava.value)?;
            } else {
                f.write_str(&escape_dn_value(&ava.value))?;
            }
        }
        Ok(())
    }
}

/// A distinguished name: RDNs from the entry itself (first) up to the root (last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn(pub Vec<Rdn>);

impl Dn {
    /// Parses a DN string (RFC 4514, with RFC 2253's leniency for spaces around separators,
    /// `;` separators and quoted values).
    pub fn parse(s: &str) -> Result<Dn, DnError> {
        Parser {
            src: s,
            bytes: s.as_bytes(),
            pos: 0,
        }
        .dn()
    }

    /// The empty DN (the root DSE).
    pub fn root() -> Dn {
        Dn(Vec::new())
    }

    /// True for the empty DN.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The first (leftmost) RDN.
    pub fn rdn(&self) -> Option<&Rdn> {
        self.0.first()
    }

    /// The DN without its first RDN; `None` for the root.
    pub fn parent(&self) -> Option<Dn> {
        if self.0.is_empty() {
            None
        } else {
            Some(Dn(self.0[1..].to_vec()))
        }
    }

    /// `rdn,self`.
    pub fn child(&self, rdn: Rdn) -> Dn {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.push(rdn);
        v.extend(self.0.iter().cloned());
        Dn(v)
    }

    /// A comparison key: attribute types and values lowercased, pairs of a multi-valued RDN
    /// sorted. Two DNs that differ only in case or in escaping have the same key.
    pub fn key(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut avas: Vec<String> = rdn
                .0
                .iter()
                .map(|a| {
                    let v = if a.hex {
                        a.value.to_lowercase()
                    } else {
                        escape_dn_value(&a.value.to_lowercase())
                    };
                    format!("{}={}", a.attr.to_ascii_lowercase(), v)
                })
                .collect();
            avas.sort();
            out.push_str(&avas.join("+"));
        }
        out
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &Dn) -> bool {
        if other.0.len() > self.0.len() {
            return false;
        }
        let tail = Dn(self.0[self.0.len() - other.0.len()..].to_vec());
        tail.key() == other.key()
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rdn}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Dn {
    type Err = DnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dn::parse(s)
    }
}

/// Escapes an attribute value for the string form of a DN (RFC 4514 §2.4).
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a string assertion value for a search filter (RFC 4515 §3): `*`, `(`, `)`, `\`
/// and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes every byte of a binary assertion value (e.g. an `objectGUID`) as `\xx`.
pub fn escape_filter_bytes(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value {
        out.push_str(&format!("\\{b:02x}"));
    }
    out
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> DnError {
        DnError {
            dn: self.src.to_owned(),
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn dn(mut self) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        self.skip_spaces();
        if self.peek().is_none() {
            return Ok(Dn(rdns));
        }
        loop {
            rdns.push(self.rdn()?);
            match self.peek() {
                None => return Ok(Dn(rdns)),
                Some(b',') | Some(b';') => self.pos += 1,
                Some(_) => return Err(self.err("expected ',' between RDNs")),
            }
        }
    }

    fn rdn(&mut self) -> Result<Rdn, DnError> {
        let mut avas = Vec::new();
        loop {
            avas.push(self.ava()?);
            if self.peek() == Some(b'+') {
                self.pos += 1;
            } else {
                return Ok(Rdn(avas));
            }
        }
    }

    fn ava(&mut self) -> Result<Ava, DnError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let attr = &self.src[start..self.pos];
        if attr.is_empty() {
            return Err(self.err("empty attribute type"));
        }
        if !(attr.as_bytes()[0].is_ascii_alphabetic()
            || attr.bytes().all(|c| c.is_ascii_digit() || c == b'.'))
        {
            return Err(self.err("bad attribute type"));
        }
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(self.err("expected '=' after the attribute type"));
        }
        self.pos += 1;
        self.skip_spaces();
        let attr = attr.to_owned();
        match self.peek() {
            Some(b'#') => {
                let start = self.pos;
                self.pos += 1;
                while let Some(c) = self.peek() {
                    if c.is_ascii_hexdigit() {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                let hex = &self.src[start..self.pos];
                if hex.len() < 3 || hex.len() % 2 == 0 {
                    return Err(self.err("bad #hexstring value"));
                }
                self.skip_spaces();
                Ok(Ava {
                    attr,
                    value: hex.to_owned(),
                    hex: true,
                })
            }
            Some(b'"') => {
                self.pos += 1;
                let mut buf = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated quoted value")),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') => self.escape(&mut buf)?,
                        Some(c) => {
                            buf.push(c);
                            self.pos += 1;
                        }
                    }
                }
                self.skip_spaces();
                let value = String::from_utf8(buf).map_err(|_| self.err("value is not UTF-8"))?;
                Ok(Ava {
                    attr,
                    value,
                    hex: false,
                })
            }
            _ => {
                let mut buf = Vec::new();
                // length of buf up to the last escaped or non-space byte
                let mut keep = 0;
                loop {
                    match self.peek() {
                        None | Some(b',') | Some(b';') | Some(b'+') => break,
                        Some(b'\\') => {
                            self.escape(&mut buf)?;
                            keep = buf.len();
                        }
                        Some(b'"') | Some(b'<') | Some(b'>') => {
                            return Err(self.err("unescaped special character in a value"));
                        }
                        Some(c) => {
                            buf.push(c);
                            self.pos += 1;
                            if c != b' ' {
                                keep = buf.len();
                            }
                        }
                    }
                }
                buf.truncate(keep);
                let value = String::from_utf8(buf).map_err(|_| self.err("value is not UTF-8"))?;
                Ok(Ava {
                    attr,
                    value,
                    hex: false,
                })
            }
        }
    }

    fn escape(&mut self, buf: &mut Vec<u8>) -> Result<(), DnError> {
        // at a backslash
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(self.err("dangling backslash"));
        };
        if c.is_ascii_hexdigit() {
            let Some(d) = self.bytes.get(self.pos + 1).copied() else {
                return Err(self.err("truncated hex escape"));
            };
            if !d.is_ascii_hexdigit() {
                // a hex letter that is also special? only specials may follow a lone backslash
                return Err(self.err("bad hex escape"));
            }
            buf.push(hex_val(c) * 16 + hex_val(d));
            self.pos += 2;
            return Ok(());
        }
        match c {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b' ' | b'#' | b'=' | b'*' | b'('
            | b')' => {
                buf.push(c);
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.err("bad escape")),
        }
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_and_multi_valued() {
        let dn = Dn::parse("cn=Jane Doe+uid=jd,OU=Sales, dc=example,dc=com").unwrap();
        assert_eq!(dn.0.len(), 4);
        assert_eq!(dn.0[0].0.len(), 2);
        assert_eq!(dn.0[0].get("UID"), Some("jd"));
        assert_eq!(dn.0[0].get("cn"), Some("Jane Doe"));
        assert_eq!(dn.0[1].get("ou"), Some("Sales"));
        assert_eq!(
            dn.to_string(),
            "cn=Jane Doe+uid=jd,OU=Sales,dc=example,dc=com"
        );
        assert_eq!(
            dn.parent().unwrap().to_string(),
            "OU=Sales,dc=example,dc=com"
        );
    }

    #[test]
    fn escaped_specials_round_trip() {
        let dn = Dn::parse(r"cn=Doe\, Jane\+x\\y\3Bz,ou=a\=b,dc=com").unwrap();
        assert_eq!(dn.0[0].first_value(), r"Doe, Jane+x\y;z");
        assert_eq!(dn.0[1].first_value(), "a=b");
        let back = dn.to_string();
        assert_eq!(back, r"cn=Doe\, Jane\+x\\y\;z,ou=a\=b,dc=com");
        assert_eq!(Dn::parse(&back).unwrap(), dn);
    }

    #[test]
    fn hex_escapes_form_utf8() {
        let dn = Dn::parse(r"cn=Lu\C4\8Di\C4\87,ou=\E9\94\80\E5\94\AE,dc=example").unwrap();
        assert_eq!(dn.0[0].first_value(), "Lučić");
        assert_eq!(dn.0[1].first_value(), "销售");
        // raw UTF-8 is kept raw on output
        assert_eq!(dn.to_string(), "cn=Lučić,ou=销售,dc=example");
        assert!(
            Dn::parse(r"cn=\C4,dc=x").is_err(),
            "a lone lead byte is not UTF-8"
        );
    }

    #[test]
    fn leading_and_trailing_spaces_and_hash() {
        let v = " #lead and trail ";
        let dn = Dn(vec![Rdn::new("cn", v), Rdn::new("dc", "com")]);
        let s = dn.to_string();
        assert_eq!(s, r"cn=\ #lead and trail\ ,dc=com");
        assert_eq!(Dn::parse(&s).unwrap().0[0].first_value(), v);
        let h = Dn(vec![Rdn::new("cn", "#x")]).to_string();
        assert_eq!(h, r"cn=\#x");
        assert_eq!(Dn::parse(&h).unwrap().0[0].first_value(), "#x");
        // unescaped spaces around separators are dropped
        let dn = Dn::parse("cn = a b ,  dc=com ").unwrap();
        assert_eq!(dn.0[0].first_value(), "a b");
        assert_eq!(dn.0[1].first_value(), "com");
    }

    #[test]
    fn hexstring_values_and_quotes() {
        let dn = Dn::parse("1.3.6.1.4.1.1466.0=#04024869,dc=com").unwrap();
        assert!(dn.0[0].0[0].hex);
        assert_eq!(dn.to_string(), "1.3.6.1.4.1.1466.0=#04024869,dc=com");
        let q = Dn::parse(r#"cn="a,b",dc=com"#).unwrap();
        assert_eq!(q.0[0].first_value(), "a,b");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "cn", "=x", "cn=a,", r"cn=a\", r"cn=a\zz", "cn=a\"b", "cn=#zz", "1cn=x",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Dn::parse("").unwrap().is_root());
    }

    #[test]
    fn keys_ignore_case_escaping_and_ava_order() {
        let a = Dn::parse(r"CN=A\2C B+UID=x,DC=Example").unwrap();
        let b = Dn::parse(r"uid=X+cn=a\, b,dc=example").unwrap();
        assert_eq!(a.key(), b.key());
        assert!(a.is_within(&Dn::parse("dc=EXAMPLE").unwrap()));
        assert!(!a.is_within(&Dn::parse("dc=other").unwrap()));
    }

    #[test]
    fn filter_escaping() {
        assert_eq!(escape_filter_value("a*(b)\\c\0"), r"a\2a\28b\29\5cc\00");
        assert_eq!(escape_filter_value("张三"), "张三");
        assert_eq!(escape_filter_bytes(&[0x00, 0xff, 0x2a]), r"\00\ff\2a");
    }
}
