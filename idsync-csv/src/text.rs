//! Reading CSV text the way spreadsheets write it: encoding detection, physical lines,
//! and an RFC 4180 record parser that knows the physical line and byte offset where each
//! record starts.
//!
//! Why not `csv::Reader` for reading: its `Position` reports the start of a record after a
//! CRLF on the previous line and counts skipped blank lines, and it works on decoded bytes
//! only. Row errors need the exact physical line, and resumable pages need the byte offset
//! in the *original* file (which differs from the decoded offset for GB18030 and UTF-16).
//! So records are assembled line by line here; the `csv` crate writes every export and
//! is the reference the parser is tested against.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use encoding_rs::{Decoder, Encoding as RsEncoding};

use crate::error::CsvError;

/// How many bytes are sampled to detect the encoding, line ending and delimiter.
const SAMPLE: usize = 64 * 1024;

/// A text encoding of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextEncoding(&'static RsEncoding);

impl TextEncoding {
    /// UTF-8.
    pub const UTF_8: TextEncoding = TextEncoding(encoding_rs::UTF_8);
    /// GB18030 (a superset of GBK and GB2312: what Excel writes in a Chinese locale).
    pub const GB18030: TextEncoding = TextEncoding(encoding_rs::GB18030);
    /// UTF-16, little endian (Excel's "Unicode text").
    pub const UTF_16LE: TextEncoding = TextEncoding(encoding_rs::UTF_16LE);
    /// UTF-16, big endian.
    pub const UTF_16BE: TextEncoding = TextEncoding(encoding_rs::UTF_16BE);

    /// An encoding from a WHATWG label: `"utf-8"`, `"gbk"`, `"gb18030"`, `"utf-16le"`, ...
    /// `gbk` and `gb2312` decode as GB18030, their superset.
    pub fn from_label(label: &str) -> Option<TextEncoding> {
        let e = RsEncoding::for_label(label.trim().as_bytes())?;
        Some(if e == encoding_rs::GBK {
            TextEncoding::GB18030
        } else {
            TextEncoding(e)
        })
    }

    /// The encoding's canonical name (`"UTF-8"`, `"gb18030"`, `"UTF-16LE"`).
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    fn unit(self) -> usize {
        if self.0 == encoding_rs::UTF_16LE || self.0 == encoding_rs::UTF_16BE {
            2
        } else {
            1
        }
    }

    fn bom(self) -> &'static [u8] {
        if self.0 == encoding_rs::UTF_8 {
            b"\xEF\xBB\xBF"
        } else if self.0 == encoding_rs::UTF_16LE {
            b"\xFF\xFE"
        } else if self.0 == encoding_rs::UTF_16BE {
            b"\xFE\xFF"
        } else {
            b""
        }
    }
}

/// Everything needed to read a file from any line start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) encoding: TextEncoding,
    /// Bytes of byte-order mark at the start of the file.
    pub(crate) bom_len: u64,
    /// The field delimiter (ASCII).
    pub(crate) delimiter: u8,
    /// `b'\n'` (LF and CRLF files) or `b'\r'` (old Mac files, CR only).
    pub(crate) terminator: u8,
}

/// Detect encoding, BOM, line ending and delimiter from the start of a file.
pub(crate) fn detect(
    path: &Path,
    encoding: Option<TextEncoding>,
    delimiter: Option<u8>,
) -> Result<Format, CsvError> {
    let mut f = File::open(path).map_err(|e| CsvError::io(path, e))?;
    let mut sample = Vec::with_capacity(SAMPLE);
    (&mut f)
        .take(SAMPLE as u64)
        .read_to_end(&mut sample)
        .map_err(|e| CsvError::io(path, e))?;
    let (enc, bom_len) = match encoding {
        Some(e) => {
            let bom = e.bom();
            let n = if !bom.is_empty() && sample.starts_with(bom) {
                bom.len()
            } else {
                0
            };
            (e, n)
        }
        None => match RsEncoding::for_bom(&sample) {
            Some((e, n)) => (TextEncoding(e), n),
            None => match utf16_without_bom(&sample) {
                Some(e) => (e, 0),
                None => {
                    let utf8 = match std::str::from_utf8(&sample) {
                        Ok(_) => true,
                        // A sequence cut by the sample's end is not an error.
                        Err(e) => e.error_len().is_none(),
                    };
                    (
                        if utf8 {
                            TextEncoding::UTF_8
                        } else {
                            TextEncoding::GB18030
                        },
                        0,
                    )
                }
            },
        },
    };
    let (text, _) = enc.0.decode_without_bom_handling(&sample[bom_len..]);
    let terminator = if text.contains('\r') && !text.contains('\n') {
        b'\r'
    } else {
        b'\n'
    };
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            let first = text
                .split(terminator as char)
                .next()
                .unwrap_or_default()
                .trim_end_matches('\r');
            detect_delimiter(first)
        }
    };
    Ok(Format {
        encoding: enc,
        bom_len: bom_len as u64,
        delimiter,
        terminator,
    })
}

/// UTF-16 without a BOM: text of mostly ASCII has a zero byte in every other position.
fn utf16_without_bom(sample: &[u8]) -> Option<TextEncoding> {
    let head = &sample[..sample.len().min(1024) & !1];
    if head.len() < 4 {
        return None;
    }
    let pairs = head.len() / 2;
    let even = head.iter().step_by(2).filter(|b| **b == 0).count();
    let odd = head.iter().skip(1).step_by(2).filter(|b| **b == 0).count();
    if odd * 2 > pairs && even * 10 < pairs {
        Some(TextEncoding::UTF_16LE)
    } else if even * 2 > pairs && odd * 10 < pairs {
        Some(TextEncoding::UTF_16BE)
    } else {
        None
    }
}

/// The most frequent of `,` `;` and tab outside quotes in a header line (`,` on a tie or
/// when none occurs).
pub(crate) fn detect_delimiter(header: &str) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for b in header.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let cands = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    cands[best]
}

/// One parsed record: its fields, where it starts, and what went wrong reading it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Record {
    text: String,
    ends: Vec<usize>,
    /// Physical line (1-based) where the record starts.
    pub(crate) line: u64,
    /// Byte offset in the file where the record starts.
    pub(crate) offset: u64,
    /// Some bytes were not valid in the file's encoding (replaced by U+FFFD).
    pub(crate) bad_encoding: bool,
    /// The file ended inside a quoted field.
    pub(crate) unterminated: bool,
}

impl Record {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.bad_encoding = false;
        self.unterminated = false;
    }

    /// The number of fields.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i`, or `""` past the end.
    pub(crate) fn get(&self, i: usize) -> &str {
        let Some(end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..*end).unwrap_or_default()
    }

    /// All fields.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(move |i| self.get(i))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Reads records from a file, starting at a line start.
pub(crate) struct RecordReader {
    input: BufReader<File>,
    format: Format,
    decoder: Decoder,
    raw: Vec<u8>,
    line_buf: String,
    /// Raw offset of the next unread line.
    offset: u64,
    /// Physical number of the next unread line.
    line: u64,
    eof: bool,
    /// The most raw bytes one record may take.
    max_record: u64,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("offset", &self.offset)
            .field("line", &self.line)
            .finish()
    }
}

impl RecordReader {
    /// Open `path` at raw `offset`, which must be a line start, numbered `line`.
    pub(crate) fn open(
        path: &Path,
        format: Format,
        offset: u64,
        line: u64,
    ) -> Result<RecordReader, CsvError> {
        let mut f = File::open(path).map_err(|e| CsvError::io(path, e))?;
        let offset = offset.max(format.bom_len);
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| CsvError::io(path, e))?;
        Ok(RecordReader {
            input: BufReader::with_capacity(64 * 1024, f),
            format,
            decoder: format.encoding.0.new_decoder_without_bom_handling(),
            raw: Vec::with_capacity(256),
            line_buf: String::with_capacity(256),
            offset,
            line,
            eof: false,
            max_record: u64::MAX,
        })
    }

    /// Fail a record longer than `n` raw bytes (an unterminated quote would otherwise
    /// read the rest of the file into one record).
    pub(crate) fn with_max_record(mut self, n: usize) -> Self {
        self.max_record = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        self
    }

    /// Raw offset and physical line number of the next unread line.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.offset, self.line)
    }

    /// Read one raw line (terminator included) into `self.raw`, at most `limit` bytes;
    /// false at end of file. A longer line leaves `self.raw` longer than `limit`.
    fn read_raw_line(&mut self, limit: u64) -> std::io::Result<bool> {
        self.raw.clear();
        let t = self.format.terminator;
        if self.format.encoding.unit() == 1 {
            let n = (&mut self.input)
                .take(limit.saturating_add(1))
                .read_until(t, &mut self.raw)?;
            return Ok(n > 0);
        }
        let le = self.format.encoding == TextEncoding::UTF_16LE;
        loop {
            let room = limit
                .saturating_add(1)
                .saturating_sub(self.raw.len() as u64);
            if room == 0 {
                return Ok(true);
            }
            let n = (&mut self.input).take(room).read_until(t, &mut self.raw)?;
            if n == 0 {
                return Ok(!self.raw.is_empty());
            }
            let last = self.raw.len() - 1;
            if self.raw[last] != t {
                return Ok(true); // end of file
            }
            if le {
                // The terminator unit is [t, 0] at an even position.
                if last % 2 == 0 {
                    let mut next = [0u8; 1];
                    let got = self.input.read(&mut next)?;
                    if got == 0 {
                        return Ok(true);
                    }
                    self.raw.push(next[0]);
                    if next[0] == 0 {
                        return Ok(true);
                    }
                }
            } else if last % 2 == 1 && self.raw[last - 1] == 0 {
                // Big endian: [0, t] ending at an odd position.
                return Ok(true);
            }
        }
    }

    /// Read and decode the next physical line into `self.line_buf` (terminator stripped);
    /// returns the terminator text, or `None` at end of file.
    ///
    /// Past `limit` raw bytes it fails, naming `record_line`, where the record began.
    fn next_line(
        &mut self,
        limit: u64,
        record_line: u64,
    ) -> std::io::Result<Option<(&'static str, bool)>> {
        if self.eof {
            return Ok(None);
        }
        if !self.read_raw_line(limit)? {
            self.eof = true;
            return Ok(None);
        }
        if self.raw.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "line {record_line}: the record is longer than {} bytes \
                     (max_record_bytes); an unterminated quote?",
                    self.max_record
                ),
            ));
        }
        self.offset += self.raw.len() as u64;
        self.line += 1;
        self.line_buf.clear();
        let need = self
            .decoder
            .max_utf8_buffer_length(self.raw.len())
            .unwrap_or(self.raw.len() * 3 + 16);
        self.line_buf.reserve(need);
        let (_, _, had_errors) =
            self.decoder
                .decode_to_string(&self.raw, &mut self.line_buf, false);
        let term = if self.format.terminator == b'\r' {
            if self.line_buf.ends_with('\r') {
                self.line_buf.pop();
                "\r"
            } else {
                ""
            }
        } else if self.line_buf.ends_with("\r\n") {
            self.line_buf.truncate(self.line_buf.len() - 2);
            "\r\n"
        } else if self.line_buf.ends_with('\n') {
            self.line_buf.pop();
            "\n"
        } else {
            ""
        };
        Ok(Some((term, had_errors)))
    }

    /// Read the next record into `rec`; false at end of file. Blank lines are skipped.
    pub(crate) fn next_record(&mut self, rec: &mut Record) -> std::io::Result<bool> {
        rec.clear();
        let q = b'"';
        let d = self.format.delimiter;
        let mut st = St::FieldStart;
        let mut started = false;
        let mut first_line = self.line + 1;
        let mut first_offset = self.offset;
        loop {
            let start_offset = self.offset;
            let start_line = self.line + 1;
            if !started {
                first_line = start_line;
                first_offset = start_offset;
            }
            let used = self.offset - first_offset;
            let limit = self.max_record.saturating_sub(used);
            let Some((term, had_errors)) = self.next_line(limit, first_line)? else {
                if started {
                    // End of file inside a quoted field.
                    rec.unterminated = st == St::Quoted;
                    rec.ends.push(rec.text.len());
                    return Ok(true);
                }
                return Ok(false);
            };
            if !started {
                if self.line_buf.is_empty() {
                    continue; // blank line
                }
                started = true;
                rec.line = start_line;
                rec.offset = start_offset;
            }
            rec.bad_encoding |= had_errors;
            let line = self.line_buf.as_str();
            let bytes = line.as_bytes();
            let mut run = 0usize;
            for (i, &b) in bytes.iter().enumerate() {
                match st {
                    St::FieldStart => {
                        if b == q {
                            st = St::Quoted;
                            run = i + 1;
                        } else if b == d {
                            rec.ends.push(rec.text.len());
                        } else {
                            st = St::Unquoted;
                            run = i;
                        }
                    }
                    St::Unquoted => {
                        if b == d {
                            rec.text.push_str(&line[run..i]);
                            rec.ends.push(rec.text.len());
                            st = St::FieldStart;
                        }
                    }
                    St::Quoted => {
                        if b == q {
                            rec.text.push_str(&line[run..i]);
                            st = St::QuoteInQuoted;
                        }
                    }
                    St::QuoteInQuoted => {
                        if b == q {
                            rec.text.push('"');
                            st = St::Quoted;
                            run = i + 1;
                        } else if b == d {
                            rec.ends.push(rec.text.len());
                            st = St::FieldStart;
                        } else {
                            // Lenient, like the csv crate: text after a closing quote is kept.
                            st = St::Unquoted;
                            run = i;
                        }
                    }
                }
            }
            match st {
                St::Quoted => {
                    // The newline belongs to the field; the record goes on.
                    rec.text.push_str(&line[run..]);
                    rec.text.push_str(term);
                    if term.is_empty() {
                        rec.unterminated = true;
                        rec.ends.push(rec.text.len());
                        return Ok(true);
                    }
                }
                St::Unquoted => {
                    rec.text.push_str(&line[run..]);
                    rec.ends.push(rec.text.len());
                    return Ok(true);
                }
                St::FieldStart | St::QuoteInQuoted => {
                    rec.ends.push(rec.text.len());
                    return Ok(true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn read_all(bytes: &[u8]) -> (Format, Vec<(u64, u64, Vec<String>)>) {
        let f = write(bytes);
        let fmt = detect(f.path(), None, None).unwrap();
        let mut r = RecordReader::open(f.path(), fmt, 0, 0).unwrap();
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.next_record(&mut rec).unwrap() {
            out.push((
                rec.line,
                rec.offset,
                rec.iter().map(str::to_owned).collect(),
            ));
        }
        (fmt, out)
    }

    #[test]
    fn physical_lines_with_crlf_blank_lines_and_embedded_newlines() {
        let (fmt, recs) = read_all(b"a,b\r\n1,2\r\n\r\n3,\"x\r\ny\"\r\n4,\"say \"\"hi\"\"\"\r\n");
        assert_eq!(fmt.delimiter, b',');
        let lines: Vec<u64> = recs.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![1, 2, 4, 6]);
        assert_eq!(recs[2].2, vec!["3", "x\r\ny"]);
        assert_eq!(recs[3].2, vec!["4", "say \"hi\""]);
        assert_eq!(recs[1].1, 5);
    }

    #[test]
    fn utf16le_with_bom_and_semicolons() {
        let text = "名;部门\r\n张三;\"研发\n中心\"\r\n李四;产品\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let (fmt, recs) = read_all(&bytes);
        assert_eq!(fmt.encoding, TextEncoding::UTF_16LE);
        assert_eq!(fmt.delimiter, b';');
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].2, vec!["张三", "研发\n中心"]);
        assert_eq!(recs[2].0, 4);
        // resuming at the recorded offset yields the same record
        let f = write(&bytes);
        let mut r = RecordReader::open(f.path(), fmt, recs[2].1, 3).unwrap();
        let mut rec = Record::default();
        assert!(r.next_record(&mut rec).unwrap());
        assert_eq!(rec.get(0), "李四");
        assert_eq!(rec.line, 4);
    }

    #[test]
    fn unit_boundary_newline_byte_in_utf16_is_not_a_line_end() {
        // U+0A0A (Gurmukhi) has 0x0A bytes in both halves.
        let text = "a\tb\r\n\u{0A0A}x\ty\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let (fmt, recs) = read_all(&bytes);
        assert_eq!(fmt.delimiter, b'\t');
        assert_eq!(recs[1].2, vec!["\u{0A0A}x", "y"]);
        let mut be = vec![0xFE, 0xFF];
        for u in text.encode_utf16() {
            be.extend_from_slice(&u.to_be_bytes());
        }
        let (fmt, recs) = read_all(&be);
        assert_eq!(fmt.encoding, TextEncoding::UTF_16BE);
        assert_eq!(recs[1].2, vec!["\u{0A0A}x", "y"]);
        assert_eq!(recs[1].0, 2);
    }

    #[test]
    fn utf16_without_bom_is_detected() {
        let text = "id,name\r\nu1,张三\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let (fmt, recs) = read_all(&le);
        assert_eq!(fmt.encoding, TextEncoding::UTF_16LE);
        assert_eq!(recs[1].2, vec!["u1", "张三"]);
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let (fmt, recs) = read_all(&be);
        assert_eq!(fmt.encoding, TextEncoding::UTF_16BE);
        assert_eq!(recs[1].2, vec!["u1", "张三"]);
        let (fmt, _) = read_all(b"id,name\nu1,x\n");
        assert_eq!(fmt.encoding, TextEncoding::UTF_8);
    }

    #[test]
    fn gb18030_is_detected() {
        let (bytes, _, _) = encoding_rs::GB18030.encode("工号,姓名\n1,张三\n");
        let (fmt, recs) = read_all(&bytes);
        assert_eq!(fmt.encoding, TextEncoding::GB18030);
        assert_eq!(recs[1].2, vec!["1", "张三"]);
    }

    #[test]
    fn cr_only_files_and_unterminated_quotes() {
        let (fmt, recs) = read_all(b"a,b\r1,2\r3,\"open");
        assert_eq!(fmt.terminator, b'\r');
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].0, 3);
        let f = write(b"a,b\n1,\"never closed\n2,3\n");
        let fmt = detect(f.path(), None, None).unwrap();
        let mut r = RecordReader::open(f.path(), fmt, 0, 0).unwrap();
        let mut rec = Record::default();
        assert!(r.next_record(&mut rec).unwrap());
        assert!(r.next_record(&mut rec).unwrap());
        assert!(rec.unterminated);
        assert_eq!(rec.line, 2);
    }

    #[test]
    fn agrees_with_the_csv_crate_on_written_data() {
        let rows: Vec<Vec<String>> = vec![
            vec![
                "plain".into(),
                "with,comma".into(),
                "with \"quotes\"".into(),
            ],
            vec!["line\nbreak".into(), "".into(), "crlf\r\ninside".into()],
            vec!["  spaces ".into(), "中文，全角".into(), "\"".into()],
            vec!["".into(), "".into(), "".into()],
        ];
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        for r in &rows {
            w.write_record(r).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let (_, recs) = read_all(&bytes);
        let mut reference = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let theirs: Vec<Vec<String>> = reference
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let ours: Vec<Vec<String>> = recs.into_iter().map(|r| r.2).collect();
        assert_eq!(ours, rows);
        assert_eq!(theirs, rows);
    }
}
