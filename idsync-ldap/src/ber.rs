//! A small, panic-free BER reader and writer for the control values this crate decodes
//! itself (paged results, content sync, DirSync).
//!
//! ldap3's own control parsers panic on malformed input; these return `None` instead.

/// One decoded element: its tag byte(s) and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// Class bits (0 universal, 1 application, 2 context, 3 private).
    pub(crate) class: u8,
    /// Constructed (true) or primitive.
    pub(crate) constructed: bool,
    /// Tag number.
    pub(crate) number: u64,
    /// Content octets.
    pub(crate) content: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// The children of a constructed element.
    pub(crate) fn children(&self) -> Option<Vec<Tlv<'a>>> {
        if !self.constructed {
            return None;
        }
        let mut out = Vec::new();
        let mut rest = self.content;
        while !rest.is_empty() {
            let (tlv, r) = read(rest)?;
            out.push(tlv);
            rest = r;
        }
        Some(out)
    }

    /// The content as an unsigned/signed integer (up to 8 octets).
    pub(crate) fn int(&self) -> Option<i64> {
        if self.constructed || self.content.is_empty() || self.content.len() > 8 {
            return None;
        }
        let mut v: i64 = if self.content[0] & 0x80 != 0 { -1 } else { 0 };
        for b in self.content {
            v = (v << 8) | i64::from(*b);
        }
        Some(v)
    }

    /// The content as a boolean.
    pub(crate) fn boolean(&self) -> Option<bool> {
        match self.content {
            [b] if !self.constructed => Some(*b != 0),
            _ => None,
        }
    }

    /// True for a universal element with this tag number.
    pub(crate) fn is_universal(&self, number: u64) -> bool {
        self.class == 0 && self.number == number
    }
}

/// Universal tag numbers.
pub(crate) const BOOLEAN: u64 = 1;
pub(crate) const INTEGER: u64 = 2;
pub(crate) const OCTET_STRING: u64 = 4;
pub(crate) const ENUMERATED: u64 = 10;
#[cfg(test)]
pub(crate) const SEQUENCE: u64 = 16;
pub(crate) const SET: u64 = 17;

/// Reads one element from the front of `input`; returns it and the rest.
pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let first = *input.first()?;
    let class = first >> 6;
    let constructed = first & 0x20 != 0;
    let mut pos = 1;
    let mut number = u64::from(first & 0x1f);
    if number == 0x1f {
        number = 0;
        loop {
            let b = *input.get(pos)?;
            pos += 1;
            number = number.checked_mul(128)? | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
            if pos > 10 {
                return None;
            }
        }
    }
    let lb = *input.get(pos)?;
    pos += 1;
    let len = if lb & 0x80 == 0 {
        usize::from(lb)
    } else {
        let n = usize::from(lb & 0x7f);
        if n == 0 || n > 8 {
            return None; // indefinite lengths are not allowed in LDAP
        }
        let mut l: usize = 0;
        for _ in 0..n {
            let b = *input.get(pos)?;
            pos += 1;
            l = l.checked_mul(256)?.checked_add(usize::from(b))?;
        }
        l
    };
    let end = pos.checked_add(len)?;
    let content = input.get(pos..end)?;
    Some((
        Tlv {
            class,
            constructed,
            number,
            content,
        },
        &input[end..],
    ))
}

/// Reads exactly one element that fills `input`.
pub(crate) fn read_all(input: &[u8]) -> Option<Tlv<'_>> {
    match read(input)? {
        (tlv, []) => Some(tlv),
        _ => None,
    }
}

/// Writes one element with a single-byte tag.
pub(crate) fn write(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// Encodes an INTEGER's content octets (two's complement, minimal).
pub(crate) fn int_content(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let b = bytes[start];
        let next = bytes[start + 1];
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sequences_and_long_lengths() {
        let mut inner = Vec::new();
        write(&mut inner, 0x02, &int_content(1_048_576));
        write(&mut inner, 0x04, &[7u8; 300]);
        let mut seq = Vec::new();
        write(&mut seq, 0x30, &inner);
        let tlv = read_all(&seq).unwrap();
        assert!(tlv.is_universal(SEQUENCE) && tlv.constructed);
        let kids = tlv.children().unwrap();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0].int(), Some(1_048_576));
        assert_eq!(kids[1].content.len(), 300);
    }

    #[test]
    fn integers_are_minimal_and_signed() {
        assert_eq!(int_content(0), vec![0]);
        assert_eq!(int_content(127), vec![0x7f]);
        assert_eq!(int_content(128), vec![0, 0x80]);
        assert_eq!(int_content(-1), vec![0xff]);
        let mut b = Vec::new();
        write(&mut b, 0x02, &int_content(-129));
        assert_eq!(read_all(&b).unwrap().int(), Some(-129));
    }

    #[test]
    fn malformed_input_is_none_not_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x01],
            &[0x30, 0x80, 0, 0],
            &[0x04, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[
                0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(read_all(bad).is_none(), "{bad:?}");
        }
        // trailing garbage inside a constructed element
        let t = read_all(&[0x30, 0x03, 0x02, 0x01]).unwrap_or(Tlv {
            class: 0,
            constructed: true,
            number: 16,
            content: &[0x02, 0x05],
        });
        assert!(t.children().is_none());
    }
}
