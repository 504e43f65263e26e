//! The XLSX export: one worksheet per table, every one in rust_xlsxwriter's constant-memory
//! mode. The worksheets are standalone (`Workbook::new_worksheet_with_constant_memory`), so all
//! of them are open at once, each keeping only its current row in memory and flushing earlier
//! rows to its own temporary file; rows are written in order, which is all that mode asks. The
//! workbook is assembled from those files when the submissions are done. Strings are written
//! inline (constant-memory mode keeps no shared-string table), so memory does not grow with the
//! number of distinct answers either.

use std::io::Write;

use rust_xlsxwriter::{Format, Workbook, Worksheet};

use super::table::{rfc3339_ms, Cell, Layout, RowSink, Scratch};
use super::{ExportError, ExportRow, ExportSummary};

/// The rows a worksheet holds.
const MAX_ROWS: u32 = 1_048_576;
/// The characters a cell holds.
const MAX_CHARS: usize = 32_767;

struct Sheet {
    ws: Worksheet,
    next_row: u32,
}

/// The workbook's worksheets as one [`RowSink`]: each cell is written to the current row of its
/// table's worksheet; the first error is kept and reported at the row's end.
struct Sheets {
    sheets: Vec<Sheet>,
    table: usize,
    col: u16,
    err: Option<ExportError>,
}

impl Sheets {
    fn put(&mut self, cell: Cell<'_>) -> Result<(), ExportError> {
        let (c, table) = (self.col, self.table);
        let Some(sheet) = self.sheets.get_mut(table) else { return Ok(()) };
        let r = sheet.next_row;
        let ws = &mut sheet.ws;
        match cell {
            Cell::Empty => {}
            Cell::Number(t) => match t.parse::<f64>().ok().filter(|f| f.is_finite()) {
                Some(f) => {
                    ws.write_number(r, c, f)?;
                }
                None => {
                    ws.write_string(r, c, truncate(&t))?;
                }
            },
            Cell::Uuid(u) => {
                ws.write_string(r, c, u.to_string())?;
            }
            Cell::Time(ms) => {
                if let Some(t) = rfc3339_ms(ms) {
                    ws.write_string(r, c, t)?;
                }
            }
            Cell::Text(t) => {
                ws.write_string(r, c, truncate(&t))?;
            }
        }
        Ok(())
    }
}

impl RowSink for Sheets {
    fn begin(&mut self, table: usize) {
        self.table = table;
        self.col = 0;
        if let Some(sheet) = self.sheets.get(table) {
            if sheet.next_row >= MAX_ROWS && self.err.is_none() {
                self.err = Some(ExportError::TooManyRows { sheet: sheet.ws.name() });
            }
        }
    }

    fn cell(&mut self, cell: Cell<'_>) {
        if self.err.is_none() {
            if let Err(e) = self.put(cell) {
                self.err = Some(e);
            }
        }
        // A cell past the 16,384 columns a worksheet holds fails in `put`.
        self.col = self.col.saturating_add(1);
    }

    fn end(&mut self) -> Result<(), ExportError> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        if let Some(sheet) = self.sheets.get_mut(self.table) {
            sheet.next_row += 1;
        }
        Ok(())
    }
}

/// Text cut to what a cell holds, at a character boundary.
fn truncate(t: &str) -> &str {
    if t.len() <= MAX_CHARS {
        return t;
    }
    match t.char_indices().nth(MAX_CHARS) {
        Some((i, _)) => &t[..i],
        None => t,
    }
}

pub(super) fn write<W, I>(layout: &Layout<'_>, rows: I, out: W) -> Result<ExportSummary, ExportError>
where
    W: Write + Send,
    I: Iterator<Item = Result<ExportRow, ExportError>>,
{
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let mut sheets = Vec::with_capacity(layout.tables.len());
    for table in &layout.tables {
        let mut ws = workbook.new_worksheet_with_constant_memory()?;
        ws.set_name(&table.sheet_name)?;
        for (c, h) in table.headers.iter().enumerate() {
            let Ok(c) = u16::try_from(c) else { break };
            ws.write_string_with_format(0, c, truncate(h), &bold)?;
        }
        ws.set_freeze_panes(1, 0)?;
        sheets.push(Sheet { ws, next_row: 1 });
    }
    let mut summary = ExportSummary::default();
    let mut sink = Sheets { sheets, table: 0, col: 0, err: None };
    let mut scratch = Scratch::default();
    for row in rows {
        let row = row?;
        summary.repeat_rows += layout.write_submission(&row, &mut scratch, &mut sink, true)?;
        summary.submissions += 1;
    }
    let sheets = sink.sheets;
    for sheet in sheets {
        workbook.push_worksheet(sheet.ws);
    }
    workbook.save_to_writer(out)?;
    Ok(summary)
}
