//! The XLSX export: one worksheet per table, every one in rust_xlsxwriter's constant-memory
//! mode. The worksheets are standalone (`Workbook::new_worksheet_with_constant_memory`), so all
//! of them are open at once, each keeping only its current row in memory and flushing earlier
//! rows to its own temporary file; rows are written in order, which is all that mode asks. The
//! workbook is assembled from those files when the submissions are done. Strings are written
//! inline (constant-memory mode keeps no shared-string table), so memory does not grow with the
//! number of distinct answers either.

use std::io::Write;

use rust_xlsxwriter::{Format, Workbook, Worksheet};

use super::table::{recycle, Cell, Layout};
use super::{ExportError, ExportRow, ExportSummary};

/// The rows a worksheet holds.
const MAX_ROWS: u32 = 1_048_576;
/// The characters a cell holds.
const MAX_CHARS: usize = 32_767;

struct Sheet {
    ws: Worksheet,
    next_row: u32,
}

impl Sheet {
    fn row(&mut self, cells: &[Cell<'_>], bold: Option<&Format>) -> Result<(), ExportError> {
        if self.next_row >= MAX_ROWS {
            return Err(ExportError::TooManyRows { sheet: self.ws.name() });
        }
        let r = self.next_row;
        for (c, cell) in cells.iter().enumerate() {
            let Ok(c) = u16::try_from(c) else { break };
            match cell {
                Cell::Empty => {}
                Cell::Number(_, f) if f.is_finite() => {
                    self.ws.write_number(r, c, *f)?;
                }
                Cell::Json(n) => match n.parse::<f64>().ok().filter(|f| f.is_finite()) {
                    Some(f) => {
                        self.ws.write_number(r, c, f)?;
                    }
                    None => {
                        self.ws.write_string(r, c, n.to_string())?;
                    }
                },
                Cell::Uuid(u) => {
                    self.ws.write_string(r, c, u.to_string())?;
                }
                Cell::Number(t, _) | Cell::Text(t) => {
                    let t = truncate(t);
                    match bold {
                        Some(f) => self.ws.write_string_with_format(r, c, t, f)?,
                        None => self.ws.write_string(r, c, t)?,
                    };
                }
            }
        }
        self.next_row += 1;
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
        let mut sheet = Sheet { ws, next_row: 0 };
        let header: Vec<Cell<'_>> =
            table.headers.iter().map(|h| Cell::Text(std::borrow::Cow::Borrowed(h.as_str()))).collect();
        sheet.row(&header, Some(&bold))?;
        sheet.ws.set_freeze_panes(1, 0)?;
        sheets.push(sheet);
    }
    let mut summary = ExportSummary::default();
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let mut repeat_spare = Vec::new();
    let mut values_spare: Vec<Option<super::Answer<'static>>> = Vec::new();
    for row in rows {
        let row = row?;
        let mut cells = recycle(std::mem::take(&mut spare));
        let mut values = recycle(std::mem::take(&mut values_spare));
        layout.main_cells(&row, &mut values, &mut cells);
        if let Some(main) = sheets.first_mut() {
            main.row(&cells, None)?;
        }
        spare = recycle(cells);
        values_spare = recycle(values);
        summary.submissions += 1;
        summary.repeat_rows +=
            layout.repeat_rows(&row, &mut repeat_spare, &mut |t, cells| match sheets.get_mut(t) {
                Some(s) => s.row(cells, None),
                None => Ok(()),
            })?;
    }
    for sheet in sheets {
        workbook.push_worksheet(sheet.ws);
    }
    workbook.save_to_writer(out)?;
    Ok(summary)
}
