//! XLSForm import: the survey, choices and settings sheets of an .xlsx, .xls or .ods workbook
//! into a [`Form`]. Every problem found is reported, each with its sheet, row and column.

use std::fmt;
use std::path::Path;

use super::model::Form;

/// One problem in a spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub sheet: String,
    /// 1-based spreadsheet row; 0 when the problem is not on one row.
    pub row: u32,
    /// The column's header (`relevant`, `label::Español (es)`); empty when not about one cell.
    pub column: String,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.row, self.column.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.sheet, self.message),
            (0, false) => write!(f, "{}, column {}: {}", self.sheet, self.column, self.message),
            (r, true) => write!(f, "{}, row {}: {}", self.sheet, r, self.message),
            (r, false) => write!(f, "{}, row {}, column {}: {}", self.sheet, r, self.column, self.message),
        }
    }
}

/// Every problem found in a spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

/// Imports the XLSForm at `path`.
pub fn import_xlsform(path: &Path) -> Result<Form, ImportErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        ImportErrors(vec![ImportError {
            sheet: path.display().to_string(),
            row: 0,
            column: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    import_xlsform_bytes(&bytes, &name)
}

/// Imports an XLSForm from its bytes; `file_name`'s extension says the format.
pub fn import_xlsform_bytes(_bytes: &[u8], file_name: &str) -> Result<Form, ImportErrors> {
    Err(ImportErrors(vec![ImportError {
        sheet: file_name.to_owned(),
        row: 0,
        column: String::new(),
        message: "XLSForm import is being built".into(),
    }]))
}
