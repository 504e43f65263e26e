//! The CSV export: a zip, written as a stream (entries with data descriptors, no seeking), of the
//! main table's CSV, written straight into its entry as submissions arrive, then one CSV per
//! repeat. A zip entry must be written in one piece, so each repeat's CSV is compressed as the
//! submissions pass into a one-entry zip in an anonymous temporary file, whose compressed entry
//! is copied as it is into the export at the end: nothing is compressed twice, and the spool on
//! disk is the compressed size.

use std::fs::File;
use std::io::Write;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::table::{civil, is_plain_number, rfc3339_bytes, Cell, Layout, RowSink, Scratch};
use super::{ExportError, ExportRow, ExportSummary};

/// Deflate level: the fastest of zlib's levels still shrinks CSV about fivefold.
const LEVEL: i64 = 1;

/// A CSV writer of records into a buffer, handed to `out` in blocks of [`BLOCK`] bytes.
///
/// RFC 4180 as the csv crate writes it with `QuoteStyle::Necessary` and CRLF line ends: a field
/// holding a comma, a double quote, a carriage return or a line feed is quoted, its quotes
/// doubled; any other field is written as it is. Every record here has at least two fields, so
/// the csv crate's one special case (a record of one empty field) never arises. Writing the
/// bytes directly, instead of field by field through `csv::Writer`'s state machine, took the
/// CSV writing from about 26% of the export's own time to 20% in a profile;
/// `tests::csv_records_read_back_with_the_csv_crate` holds it to the crate's reading.
pub(super) struct CsvOut<W: Write> {
    out: W,
    buf: Vec<u8>,
}

/// How many bytes the writer gathers before handing them on.
const BLOCK: usize = 64 * 1024;

impl<W: Write> CsvOut<W> {
    pub(super) fn new(out: W) -> CsvOut<W> {
        CsvOut { out, buf: Vec::with_capacity(BLOCK + 4096) }
    }

    fn field(&mut self, field: &[u8]) {
        if needs_quotes(field) {
            self.buf.push(b'"');
            for part in field.split_inclusive(|&b| b == b'"') {
                self.buf.extend_from_slice(part);
                if part.last() == Some(&b'"') {
                    self.buf.push(b'"');
                }
            }
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(field);
        }
    }

    /// Writes one record of `fields`.
    pub(super) fn record<'f>(&mut self, fields: impl IntoIterator<Item = &'f [u8]>) -> std::io::Result<()> {
        for (i, f) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.field(f);
        }
        self.end_record()
    }

    /// Ends the record whose fields were pushed.
    fn end_record(&mut self) -> std::io::Result<()> {
        self.buf.extend_from_slice(b"\r\n");
        if self.buf.len() >= BLOCK {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Hands on what is buffered.
    fn flush_block(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Hands on what is buffered and returns the writer.
    pub(super) fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The bytes that make a CSV field need quotes.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t
};

/// Whether `field` holds a comma, a double quote, a carriage return or a line feed; eight bytes
/// at a time (a byte equal to `c` is a zero byte of `word ^ c…c`, found with the classic
/// `(x - 0x01…) & !x & 0x80…` test, which is exact for "any").
fn needs_quotes(field: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    fn has(word: u64, c: u8) -> u64 {
        let x = word ^ (LO * u64::from(c));
        x.wrapping_sub(LO) & !x & HI
    }
    let mut chunks = field.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else { return true };
        let w = u64::from_le_bytes(bytes);
        if has(w, b',') | has(w, b'"') | has(w, b'\r') | has(w, b'\n') != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// Writes a text cell: the formula-injection prefix when it needs one, quotes when it needs them.
fn push_text(buf: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let prefix =
        matches!(bytes.first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')) && !is_plain_number(text);
    if prefix {
        buf.push(b'\'');
    }
    let start = buf.len();
    // Most answers (choice names, short text) are short: copied a byte at a time while looking
    // for a byte that needs quotes, in one pass; longer ones a word at a time, then copied.
    let plain = if bytes.len() < 16 {
        let mut special = false;
        buf.extend(bytes.iter().map(|&b| {
            special |= SPECIAL[usize::from(b)];
            b
        }));
        !special
    } else if needs_quotes(bytes) {
        false
    } else {
        buf.extend_from_slice(bytes);
        true
    };
    if plain {
        return;
    }
    buf.truncate(start);
    if prefix {
        // The prefix goes inside the quotes.
        buf.pop();
    }
    buf.push(b'"');
    if prefix {
        buf.push(b'\'');
    }
    for part in bytes.split_inclusive(|&b| b == b'"') {
        buf.extend_from_slice(part);
        if part.last() == Some(&b'"') {
            buf.push(b'"');
        }
    }
    buf.push(b'"');
}

/// The CSV files of an export as one [`RowSink`]: the main table's (`main`) and each repeat
/// table's spool. A row is written into `row` (the buffer of its table, swapped in at `begin`
/// and back at `end`), so each cell goes straight to its bytes.
struct CsvTables<M: Write> {
    main: CsvOut<M>,
    spools: Vec<Option<CsvOut<ZipWriter<File>>>>,
    table: usize,
    row: Vec<u8>,
    first: bool,
}

impl<M: Write> CsvTables<M> {
    fn buffer_of(&mut self, t: usize) -> Option<&mut Vec<u8>> {
        if t == 0 {
            Some(&mut self.main.buf)
        } else {
            self.spools.get_mut(t)?.as_mut().map(|w| &mut w.buf)
        }
    }
}

impl<M: Write> RowSink for CsvTables<M> {
    fn begin(&mut self, table: usize) {
        self.table = table;
        self.first = true;
        let mut row = std::mem::take(&mut self.row);
        if let Some(buf) = self.buffer_of(table) {
            std::mem::swap(buf, &mut row);
        }
        self.row = row;
    }

    #[inline]
    fn cell(&mut self, cell: Cell<'_>) {
        if !self.first {
            self.row.push(b',');
        }
        self.first = false;
        match cell {
            Cell::Empty => {}
            // Digits, signs, points and exponents only: nothing to quote or prefix.
            Cell::Number(t) => self.row.extend_from_slice(t.as_bytes()),
            Cell::Uuid(u) => {
                let mut b = [0u8; uuid::fmt::Hyphenated::LENGTH];
                self.row.extend_from_slice(u.hyphenated().encode_lower(&mut b).as_bytes());
            }
            Cell::Time(ms) => {
                if let Some(b) = rfc3339_bytes(ms) {
                    self.row.extend_from_slice(&b);
                }
            }
            Cell::Text(t) => push_text(&mut self.row, &t),
        }
    }

    fn end(&mut self) -> Result<(), ExportError> {
        self.row.extend_from_slice(b"\r\n");
        let mut row = std::mem::take(&mut self.row);
        let table = self.table;
        match self.buffer_of(table) {
            Some(buf) => std::mem::swap(buf, &mut row),
            None => row.clear(),
        }
        self.row = row;
        let full = self.buffer_of(table).is_some_and(|b| b.len() >= BLOCK);
        if full {
            if table == 0 {
                self.main.flush_block()?;
            } else if let Some(Some(w)) = self.spools.get_mut(table) {
                w.flush_block()?;
            }
        }
        Ok(())
    }
}

fn write_headers<W: Write>(w: &mut CsvOut<W>, headers: &[String]) -> Result<(), ExportError> {
    let escaped: Vec<_> = headers.iter().map(|h| super::escape_formula(h)).collect();
    w.record(escaped.iter().map(|h| h.as_bytes()))?;
    Ok(())
}

fn options(large: bool) -> SimpleFileOptions {
    let now = crate::now_ms() / 1000;
    let (y, mo, d, h, mi, s) = civil(now);
    let mut o = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(LEVEL))
        .large_file(large);
    if let Ok(t) = zip::DateTime::from_date_and_time(y.clamp(1980, 2107) as u16, mo, d, h, mi, s) {
        o = o.last_modified_time(t);
    }
    o
}

pub(super) fn write<W, I>(layout: &Layout<'_>, rows: I, out: W) -> Result<ExportSummary, ExportError>
where
    W: Write,
    I: Iterator<Item = Result<ExportRow, ExportError>>,
{
    let mut zip = zip::ZipWriter::new_stream(out);
    let mut summary = ExportSummary::default();
    // Repeat tables spool to temporary files (deleted when dropped, even on error).
    let mut spools: Vec<Option<CsvOut<ZipWriter<File>>>> = Vec::with_capacity(layout.tables.len());
    for (t, table) in layout.tables.iter().enumerate() {
        if t == 0 {
            spools.push(None);
            continue;
        }
        let mut spool = ZipWriter::new(tempfile::tempfile()?);
        spool.start_file(table.file_name.as_str(), options(true))?;
        let mut w = CsvOut::new(spool);
        write_headers(&mut w, &table.headers)?;
        spools.push(Some(w));
    }
    zip.start_file(layout.tables[0].file_name.as_str(), options(true))?;
    let spools = {
        let mut main = CsvOut::new(&mut zip);
        write_headers(&mut main, &layout.tables[0].headers)?;
        let mut sink =
            CsvTables { main, spools, table: 0, row: Vec::with_capacity(BLOCK + 4096), first: true };
        let mut scratch = Scratch::default();
        for row in rows {
            let row = row?;
            summary.repeat_rows += layout.write_submission(&row, &mut scratch, &mut sink, true)?;
            summary.submissions += 1;
        }
        sink.main.finish()?;
        sink.spools
    };
    for w in spools.into_iter().flatten() {
        let mut spool = w.finish()?.finish_into_readable()?;
        zip.raw_copy_file(spool.by_index_raw(0)?)?;
    }
    let mut out = zip.finish()?;
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{needs_quotes, CsvOut};

    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![Just(b','), Just(b'"'), Just(b'\r'), Just(b'\n'), Just(b' '), any::<u8>(), b'a'..=b'z']
    }

    proptest! {
        /// Whatever the fields hold, the csv crate reads back exactly the fields written.
        #[test]
        fn csv_records_read_back_with_the_csv_crate(
            records in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(byte(), 0..40), 2..6),
                1..8,
            )
        ) {
            let mut out = CsvOut::new(Vec::new());
            for r in &records {
                out.record(r.iter().map(Vec::as_slice)).unwrap();
            }
            let bytes = out.finish().unwrap();
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes.as_slice());
            let read: Vec<Vec<Vec<u8>>> = reader
                .byte_records()
                .map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect())
                .collect();
            prop_assert_eq!(read, records);
        }

        /// The eight-bytes-at-a-time test agrees with a plain scan, at every offset.
        #[test]
        fn needs_quotes_agrees_with_a_plain_scan(field in prop::collection::vec(byte(), 0..50)) {
            let plain = field.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
            prop_assert_eq!(needs_quotes(&field), plain);
        }
    }

    #[test]
    fn a_special_byte_is_found_at_every_position_of_a_word() {
        for len in 1..20 {
            for at in 0..len {
                for c in [b',', b'"', b'\r', b'\n'] {
                    let mut field = vec![b'x'; len];
                    field[at] = c;
                    assert!(needs_quotes(&field), "{c} at {at} of {len}");
                }
                // Bytes one off each special one are not special.
                let field: Vec<u8> = (0..len).map(|i| if i == at { b'-' } else { b'#' }).collect();
                assert!(!needs_quotes(&field));
            }
        }
    }
}
