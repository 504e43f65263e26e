//! The CSV export: a zip, written as a stream (entries with data descriptors, no seeking), of the
//! main table's CSV, written straight into its entry as submissions arrive, then one CSV per
//! repeat, each spooled to an anonymous temporary file while the submissions pass and copied
//! into the zip at the end (a zip entry must be written in one piece).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::table::{civil, recycle, Cell, Layout};
use super::{ExportError, ExportRow, ExportSummary};

/// Deflate level: the fastest of zlib's levels still shrinks CSV about fivefold.
const LEVEL: i64 = 1;

fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).flexible(true).from_writer(out)
}

fn write_record<W: Write>(
    w: &mut csv::Writer<W>,
    cells: &[Cell<'_>],
    scratch: &mut String,
) -> Result<(), ExportError> {
    for c in cells {
        w.write_field(c.csv_text(scratch).as_bytes())?;
    }
    w.write_record(None::<&[u8]>)?;
    Ok(())
}

fn write_headers<W: Write>(w: &mut csv::Writer<W>, headers: &[String]) -> Result<(), ExportError> {
    for h in headers {
        w.write_field(super::escape_formula(h).as_bytes())?;
    }
    w.write_record(None::<&[u8]>)?;
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
    let mut spools: Vec<Option<csv::Writer<BufWriter<File>>>> = Vec::with_capacity(layout.tables.len());
    for (t, table) in layout.tables.iter().enumerate() {
        if t == 0 {
            spools.push(None);
            continue;
        }
        let mut w = csv_writer(BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?));
        write_headers(&mut w, &table.headers)?;
        spools.push(Some(w));
    }
    zip.start_file(layout.tables[0].file_name.as_str(), options(true))?;
    {
        let mut main = csv_writer(&mut zip);
        write_headers(&mut main, &layout.tables[0].headers)?;
        let mut spare = Vec::with_capacity(layout.tables[0].width());
        let mut repeat_spare = Vec::new();
        let mut scratch = String::new();
        for row in rows {
            let row = row?;
            let mut cells = recycle(std::mem::take(&mut spare));
            layout.main_cells(&row, &mut cells);
            write_record(&mut main, &cells, &mut scratch)?;
            spare = recycle(cells);
            summary.submissions += 1;
            summary.repeat_rows +=
                layout.repeat_rows(&row, &mut repeat_spare, &mut |t, cells| match spools.get_mut(t) {
                    Some(Some(w)) => write_record(w, cells, &mut scratch),
                    _ => Ok(()),
                })?;
        }
        main.flush()?;
    }
    for (t, spool) in spools.into_iter().enumerate() {
        let Some(w) = spool else { continue };
        let mut file = w
            .into_inner()
            .map_err(|e| ExportError::Io(e.into_error()))?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let len = file.stream_position()?;
        file.seek(SeekFrom::Start(0))?;
        zip.start_file(layout.tables[t].file_name.as_str(), options(len >= u32::MAX as u64 / 2))?;
        std::io::copy(&mut file, &mut zip)?;
    }
    let mut out = zip.finish()?;
    out.flush()?;
    Ok(summary)
}
