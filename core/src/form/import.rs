//! XLSForm import: the survey, choices and settings sheets of an .xlsx, .xls or .ods workbook
//! into a [`Form`]. Every problem found is reported, each with its sheet, row and column.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Cursor;
use std::path::Path;

use calamine::{Data, Reader};

use super::expr::{self, Expr};
use super::model::{
    Choice, EntityDeclaration, Form, Node, QuestionType, Settings, Translations, DEFAULT_LANGUAGE,
};

mod cfb;

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

fn whole_file_error(file: &str, message: String) -> ImportErrors {
    ImportErrors(vec![ImportError { sheet: file.to_owned(), row: 0, column: String::new(), message }])
}

/// Imports the XLSForm at `path`.
pub fn import_xlsform(path: &Path) -> Result<Form, ImportErrors> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes =
        std::fs::read(path).map_err(|e| whole_file_error(&name, format!("cannot read the file: {e}")))?;
    import_xlsform_bytes(&bytes, &name)
}

/// Imports an XLSForm from its bytes; the format (.xlsx or .xlsm, .xls, .ods) is read from the
/// bytes, whatever `file_name` says. `file_name` names the file in errors, and its stem is the
/// form_id when the settings give none.
pub fn import_xlsform_bytes(bytes: &[u8], file_name: &str) -> Result<Form, ImportErrors> {
    let sheets = read_workbook(bytes, file_name)?;
    let stem = Path::new(file_name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Importer::default().run(sheets, &stem)
}

/// A sheet as text cells, with the spreadsheet row number (1-based) of each row.
struct Sheet {
    name: String,
    rows: Vec<(u32, Vec<String>)>,
}

/// A workbook's format, from its first bytes (a name can lie: an old `.xls` saved as `.xlsx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Office Open XML (.xlsx, .xlsm): a ZIP archive.
    Xlsx,
    /// Excel 97-2003 (.xls): an OLE compound file.
    Xls,
    /// OpenDocument (.ods): a ZIP archive whose first entry says so.
    Ods,
}

fn sniff_format(bytes: &[u8]) -> Option<Format> {
    const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    const ODS_MIME: &[u8] = b"application/vnd.oasis.opendocument.spreadsheet";
    if bytes.starts_with(OLE) {
        return Some(Format::Xls);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        // An OpenDocument file starts with an uncompressed entry `mimetype` naming its kind
        // (local header of 30 bytes, then the name, then the content).
        let name_len = bytes.get(26..28).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let extra_len = bytes.get(28..30).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let content = 30 + name_len + extra_len;
        if bytes.get(30..30 + name_len) == Some(b"mimetype".as_slice())
            && bytes.get(content..content + ODS_MIME.len()) == Some(ODS_MIME)
        {
            return Some(Format::Ods);
        }
        return Some(Format::Xlsx);
    }
    None
}

fn read_workbook(bytes: &[u8], file_name: &str) -> Result<Vec<Sheet>, ImportErrors> {
    let Some(format) = sniff_format(bytes) else {
        return Err(whole_file_error(file_name, "not an .xlsx, .xls or .ods file".into()));
    };
    // calamine's .xls reader does not bound a looping sector chain; refuse one first.
    if cfb::is_compound_file(bytes) {
        cfb::check(bytes)
            .map_err(|e| whole_file_error(file_name, format!("not a readable spreadsheet: {e}")))?;
    }
    let data = bytes.to_vec();
    // A spreadsheet parser is a large attack surface: a broken file must give an error, never
    // take the process down, whatever the parser does with it.
    let result = std::panic::catch_unwind(move || -> Result<Vec<Sheet>, String> {
        let cursor = Cursor::new(data);
        let mut book: calamine::Sheets<Cursor<Vec<u8>>> = match format {
            Format::Xlsx => calamine::Sheets::Xlsx(calamine::Xlsx::new(cursor).map_err(|e| e.to_string())?),
            Format::Xls => calamine::Sheets::Xls(calamine::Xls::new(cursor).map_err(|e| e.to_string())?),
            Format::Ods => calamine::Sheets::Ods(calamine::Ods::new(cursor).map_err(|e| e.to_string())?),
        };
        let mut out = Vec::new();
        for name in book.sheet_names() {
            if let calamine::Sheets::Xlsx(xlsx) = &mut book {
                out.push(read_xlsx_sheet(xlsx, &name)?);
                continue;
            }
            // .xls and .ods: the parser has read the sheet already; its extent was checked
            // before (.xls, in `cfb`) or is bounded by the file (.ods), and is checked again
            // before it is copied. Only cells with content are kept: formatted empty cells far to
            // the right cost nothing.
            let range = book.worksheet_range(&name).map_err(|e| format!("sheet {name}: {e}"))?;
            let (first_row, first_col) = range.start().unwrap_or((0, 0));
            let (end_row, end_col) = range.end().unwrap_or((0, 0));
            check_sheet_extent(&name, end_row, end_col)?;
            let mut sparse: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
            let mut kept = 0usize;
            for (r, c, cell) in range.used_cells() {
                let text = cell_text(cell);
                if text.is_empty() {
                    continue;
                }
                kept += 1;
                if kept > MAX_SHEET_CELLS {
                    return Err(too_many_cells(&name));
                }
                let (r, c) = (first_row.saturating_add(r as u32), first_col.saturating_add(c as u32));
                sparse.entry(r).or_default().push((c, text));
            }
            out.push(dense_sheet(&name, sparse)?);
        }
        Ok(out)
    });
    match result {
        Ok(Ok(sheets)) => Ok(sheets),
        Ok(Err(e)) => Err(whole_file_error(file_name, format!("not a readable spreadsheet: {e}"))),
        Err(_) => Err(whole_file_error(file_name, "not a readable spreadsheet: the file is corrupt".into())),
    }
}

/// Empty header cells in a row after which pyxform reads no more columns.
const MAX_EMPTY_HEADERS: usize = 20;
/// Empty rows in a row after which pyxform reads no more of a sheet.
const MAX_EMPTY_ROWS: u32 = 60;

/// Bytes a form_id may have.
pub const MAX_FORM_ID_BYTES: usize = 255;

/// Rows a sheet may have (a national list of places fits many times over).
pub const MAX_SHEET_ROWS: u32 = 100_000;
/// Columns a sheet may have (column `AMJ`; a form in ten languages uses a few dozen).
pub const MAX_SHEET_COLUMNS: u32 = 1_024;
/// Cells a sheet may hold, counting the empty cells to the left of each row's last one.
pub const MAX_SHEET_CELLS: usize = 2_000_000;
/// Cells an .xls sheet's span (rows × columns of its used range) may cover: calamine holds an
/// .xls sheet densely, one cell (about 32 bytes) per row and column of the span, so this bounds
/// it near 200 MB. Formatted empty cells count here (pyxform's own `extra_columns.xls` spans
/// 19,999 rows of 256 columns, 5.1 million cells, and pyxform takes it).
pub const MAX_XLS_SPAN_CELLS: usize = 6_000_000;

/// Refuses a sheet that reaches past [`MAX_SHEET_ROWS`] or [`MAX_SHEET_COLUMNS`]
/// (0-based, inclusive `end_row` and `end_col`).
fn check_sheet_extent(name: &str, end_row: u32, end_col: u32) -> Result<(), String> {
    let (rows, cols) = (u64::from(end_row) + 1, u64::from(end_col) + 1);
    if rows > u64::from(MAX_SHEET_ROWS) || cols > u64::from(MAX_SHEET_COLUMNS) {
        return Err(format!(
            "sheet {name} reaches row {rows} and column {cols}; a form's sheets may have at most \
             {MAX_SHEET_ROWS} rows and {MAX_SHEET_COLUMNS} columns (delete the cells far down or \
             to the right)"
        ));
    }
    Ok(())
}

fn too_many_cells(name: &str) -> String {
    format!("sheet {name} has more than {MAX_SHEET_CELLS} cells")
}

/// Reads an .xlsx sheet cell by cell: the declared dimension is checked before anything is
/// read, every cell's position as it arrives (the declaration may lie or be missing), and only
/// cells with content are kept, so a lone cell at `XFD1048576` costs nothing.
fn read_xlsx_sheet<RS: std::io::Read + std::io::Seek>(
    book: &mut calamine::Xlsx<RS>,
    name: &str,
) -> Result<Sheet, String> {
    let mut reader = book.worksheet_cells_reader(name).map_err(|e| format!("sheet {name}: {e}"))?;
    let declared = reader.dimensions();
    check_sheet_extent(name, declared.end.0, declared.end.1)?;
    let mut sparse: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
    let mut kept = 0usize;
    while let Some(cell) = reader.next_cell().map_err(|e| format!("sheet {name}: {e}"))? {
        let (row, col) = cell.get_position();
        check_sheet_extent(name, row, col)?;
        let text = cell_text(&Data::from(cell.get_value().clone()));
        if text.is_empty() {
            continue;
        }
        kept += 1;
        if kept > MAX_SHEET_CELLS {
            return Err(too_many_cells(name));
        }
        sparse.entry(row).or_default().push((col, text));
    }
    dense_sheet(name, sparse)
}

/// A sheet from its cells with content (0-based row to (0-based column, text)), refused when
/// the dense rows would pass [`MAX_SHEET_CELLS`].
fn dense_sheet(name: &str, sparse: BTreeMap<u32, Vec<(u32, String)>>) -> Result<Sheet, String> {
    let area: usize =
        sparse.values().map(|cells| cells.iter().map(|(c, _)| *c as usize + 1).max().unwrap_or(0)).sum();
    if area > MAX_SHEET_CELLS {
        return Err(too_many_cells(name));
    }
    let rows = sparse
        .into_iter()
        .map(|(row, cells)| {
            let width = cells.iter().map(|(c, _)| *c as usize + 1).max().unwrap_or(0);
            let mut dense = vec![String::new(); width];
            for (c, text) in cells {
                dense[c as usize] = text;
            }
            (row.saturating_add(1), dense)
        })
        .collect();
    Ok(Sheet { name: name.to_owned(), rows })
}

fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => expr::format_number(*f),
        Data::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
        Data::DateTime(dt) => {
            let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
            if dt.is_datetime() && (h, mi, s) != (0, 0, 0) {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02}")
            }
        }
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// A column header: its canonical name and language (`label::Español (es)`).
#[derive(Debug, Clone)]
struct Column {
    header: String,
    base: String,
    lang: Option<String>,
}

fn parse_header(raw: &str) -> Column {
    let header = raw.trim().to_owned();
    let (base, lang) = match header.split_once("::") {
        Some((b, l)) => (b.trim().to_owned(), Some(l.trim().to_owned())),
        None => (header.clone(), None),
    };
    let lower = base.to_ascii_lowercase().replace(' ', "_");
    let canonical = match lower.as_str() {
        "caption" => "label",
        "calculate" => "calculation",
        "readonly" | "read-only" => "read_only",
        "jr:constraintmsg" | "constraint_msg" => "constraint_message",
        "jr:requiredmsg" | "required_msg" => "required_message",
        "jr:count" | "repeat_count" => "repeat_count",
        "list_name" => "list_name",
        "value" => "name",
        "form_title" | "title" => "form_title",
        "media::image" => "image",
        _ => lower.as_str(),
    }
    .to_owned();
    Column { header, base: canonical, lang }
}

/// A sheet's rows as maps from canonical column to cell, with the header of each column.
struct Table {
    sheet: String,
    columns: Vec<Column>,
    rows: Vec<(u32, Vec<String>)>,
    /// The spreadsheet row of the header.
    header_row: u32,
}

impl Table {
    fn from_sheet(sheet: Sheet) -> Option<Table> {
        let mut rows = sheet.rows.into_iter().skip_while(|(_, r)| r.iter().all(|c| c.trim().is_empty()));
        let (header_row, mut header) = rows.next()?;
        // As pyxform: the headers end at a run of more than 20 empty ones, and the rows at a
        // run of more than 60 empty ones (the rest of the sheet is taken as not part of the form).
        let mut empty_run = 0;
        for i in 0..header.len() {
            if header[i].trim().is_empty() {
                empty_run += 1;
                if empty_run > MAX_EMPTY_HEADERS {
                    header.truncate(i);
                    break;
                }
            } else {
                empty_run = 0;
            }
        }
        let columns = header.iter().map(|h| parse_header(h)).collect();
        // As pyxform: a column with no header is ignored, so a row whose only content is under
        // no header (a stray number off to the side) is an empty row.
        let named = |i: usize| header.get(i).is_some_and(|h| !h.trim().is_empty());
        let mut last = header_row;
        let rows = rows
            .filter(|(_, r)| r.iter().enumerate().any(|(i, c)| named(i) && !c.trim().is_empty()))
            .take_while(|(n, _)| {
                let gap = n.saturating_sub(last).saturating_sub(1);
                last = *n;
                gap <= MAX_EMPTY_ROWS
            })
            .collect();
        Some(Table { sheet: sheet.name, columns, rows, header_row })
    }

    /// Headers written twice (after collapsing whitespace), which pyxform refuses.
    fn duplicate_headers(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for c in &self.columns {
            let h = c.header.split_whitespace().collect::<Vec<_>>().join(" ");
            if !h.is_empty() && !seen.insert(h.clone()) && !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    fn has(&self, base: &str) -> bool {
        self.columns.iter().any(|c| c.base == base)
    }

    /// The untranslated cell of column `base` (the first such column).
    fn cell<'a>(&self, row: &'a [String], base: &str) -> Option<(&'a str, &str)> {
        let i = self.columns.iter().position(|c| c.base == base && c.lang.is_none())?;
        let v = row.get(i)?.trim();
        (!v.is_empty()).then_some((v, self.columns[i].header.as_str()))
    }

    /// Every language of column `base` in a row.
    fn text(&self, row: &[String], base: &str) -> Translations {
        let mut out = Translations::new();
        for (i, c) in self.columns.iter().enumerate() {
            if c.base != base {
                continue;
            }
            let v = row.get(i).map(|s| s.trim()).unwrap_or("");
            if !v.is_empty() {
                out.insert(c.lang.clone().unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned()), v.to_owned());
            }
        }
        out
    }

    fn header_of(&self, base: &str) -> String {
        self.columns
            .iter()
            .find(|c| c.base == base)
            .map(|c| c.header.clone())
            .unwrap_or_else(|| base.to_owned())
    }
}

/// Columns whose text may be translated.
const TRANSLATED: &[&str] = &["label", "hint", "constraint_message", "required_message", "guidance_hint"];

#[derive(Default)]
struct Importer {
    errors: Vec<ImportError>,
    /// Names used by several questions (in different groups): no expression may name them.
    ambiguous: std::collections::HashSet<String>,
}

impl Importer {
    /// Why `${name}` names no single question.
    fn unknown_reference(&self, name: &str) -> String {
        if self.ambiguous.contains(name) {
            format!("${{{name}}} is ambiguous: several questions are named {name}")
        } else {
            format!("${{{name}}} is not a question of this form")
        }
    }
}

enum RowKind {
    /// `begin group`, `begin repeat`; `begin loop over X` is a group with a list.
    Begin(QuestionType, Option<String>),
    End(QuestionType, bool),
    Question(Parsed),
}

/// What a question's type cell says.
struct Parsed {
    kind: QuestionType,
    list: Option<String>,
    file: Option<String>,
    /// `or_other`, `or specify other`: an "other" choice and a text question for it.
    or_other: bool,
    /// The `uri:` form of a metadata type.
    uri: bool,
}

/// The name a list of the `external_choices` sheet is kept under in [`Form::choice_lists`]
/// (`external_choices:places`): the `choices` sheet may hold a list of the same name.
pub const EXTERNAL_LIST_PREFIX: &str = "external_choices:";

/// The spellings of select types pyxform reads, longest first, with their kind.
const SELECT_SPELLINGS: &[(&str, QuestionType)] = &[
    ("add select multiple prompt using", QuestionType::SelectMultiple),
    ("add select one prompt using", QuestionType::SelectOne),
    ("select all that apply from", QuestionType::SelectMultiple),
    ("select multiple from file", QuestionType::SelectMultipleFromFile),
    ("select one from file", QuestionType::SelectOneFromFile),
    ("select_multiple_from_file", QuestionType::SelectMultipleFromFile),
    ("select_one_from_file", QuestionType::SelectOneFromFile),
    // Choices from the `external_choices` sheet (pyxform writes them to itemsets.csv for
    // Collect); Tejido keeps them with the form as any other list.
    ("select_one_external", QuestionType::SelectOne),
    ("select one external", QuestionType::SelectOne),
    ("select all that apply", QuestionType::SelectMultiple),
    ("select multiple using", QuestionType::SelectMultiple),
    ("select multiple from", QuestionType::SelectMultiple),
    ("select_all_that_apply", QuestionType::SelectMultiple),
    ("select one using", QuestionType::SelectOne),
    ("select one from", QuestionType::SelectOne),
    ("select_multiple", QuestionType::SelectMultiple),
    ("select multiple", QuestionType::SelectMultiple),
    ("select_one", QuestionType::SelectOne),
    ("select one", QuestionType::SelectOne),
    ("select1", QuestionType::SelectOne),
    ("rank", QuestionType::Rank),
];

fn question_type(t: &str) -> Option<RowKind> {
    let l = t.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    let original: Vec<&str> = t.split_whitespace().collect();
    use QuestionType as Q;
    // begin/end of a group, repeat or loop (`begin_group`, `begin lgroup`, `end loop`).
    for (prefix, begin) in [("begin", true), ("end", false)] {
        let Some(rest) = l.strip_prefix(prefix).and_then(|r| r.strip_prefix([' ', '_'])) else { continue };
        let (control, list) = match rest.split_once(' ') {
            Some((c, r)) if begin => {
                let r = r.strip_prefix("over ").unwrap_or(r);
                if c == "looped" && r == "group" {
                    (rest, None)
                } else {
                    (c, Some(r))
                }
            }
            _ => (rest, None),
        };
        let kind = match control {
            "group" => (Q::Group, false),
            "repeat" | "lgroup" | "looped group" => (Q::Repeat, false),
            "loop" => (Q::Group, true),
            _ => continue,
        };
        // The list of a loop, in its original case; a name after `begin group` is ignored.
        let list =
            list.filter(|r| !r.contains(' ')).map(|_| original.last().copied().unwrap_or("").to_owned());
        return Some(if begin {
            match (kind, list) {
                ((k, true), Some(l)) => RowKind::Begin(k, Some(l)),
                ((_, true), None) => return None,
                ((k, false), _) => RowKind::Begin(k, None),
            }
        } else {
            RowKind::End(kind.0, kind.1)
        });
    }
    for (spelling, kind) in SELECT_SPELLINGS {
        let Some(rest) = l.strip_prefix(spelling).and_then(|r| r.strip_prefix(' ')) else { continue };
        let (rest, or_other) = match ["or specify other", "or_other", "or other"]
            .iter()
            .find_map(|o| rest.strip_suffix(o).and_then(|r| r.strip_suffix(' ')))
        {
            Some(r) => (r, true),
            None => (rest, false),
        };
        if rest.is_empty() || rest.contains(' ') {
            return None;
        }
        // The list or file name as written (names are case-sensitive).
        let words_before = spelling.split(' ').count();
        let name = original.get(words_before).copied().unwrap_or(rest).to_owned();
        let from_file = matches!(kind, Q::SelectOneFromFile | Q::SelectMultipleFromFile);
        let name = if spelling.contains("external") { format!("{EXTERNAL_LIST_PREFIX}{name}") } else { name };
        return Some(RowKind::Question(Parsed {
            kind: *kind,
            list: (!from_file).then(|| name.clone()),
            file: from_file.then_some(name),
            or_other,
            uri: false,
        }));
    }
    let (uri, l) = match l.strip_prefix("uri:") {
        Some(rest) => (true, rest.to_owned()),
        None => (false, l),
    };
    // pyxform's older spellings: `q integer`, `add integer prompt`, `get device id`.
    let base = l
        .strip_prefix("q ")
        .or_else(|| l.strip_prefix("add ").and_then(|r| r.strip_suffix(" prompt")))
        .or_else(|| l.strip_prefix("get "))
        .unwrap_or(&l);
    let kind = match base {
        "text" | "string" | "phone number" => Q::Text,
        "integer" | "int" | "percentage" => Q::Integer,
        "number of days in last month"
        | "number of days in last six months"
        | "number of days in last year" => Q::Integer,
        "decimal" => Q::Decimal,
        "range" => Q::Range,
        "note" => Q::Note,
        "date" => Q::Date,
        "time" => Q::Time,
        "datetime" | "date time" => Q::DateTime,
        "geopoint" | "location" | "gps" => Q::Geopoint,
        "geotrace" => Q::Geotrace,
        "geoshape" => Q::Geoshape,
        "image" | "photo" | "picture" => Q::Image,
        "audio" => Q::Audio,
        "video" => Q::Video,
        "file" => Q::File,
        "barcode" => Q::Barcode,
        "acknowledge" => Q::Acknowledge,
        "trigger" => Q::Trigger,
        "calculate" => Q::Calculate,
        "hidden" => Q::Hidden,
        "start" | "start time" => Q::Start,
        "end" | "end time" => Q::End,
        "today" => Q::Today,
        "deviceid" | "device id" | "imei" => Q::DeviceId,
        "simserial" | "sim id" => Q::SimSerial,
        "subscriberid" | "subscriber id" => Q::SubscriberId,
        "username" => Q::Username,
        "phonenumber" => Q::PhoneNumber,
        "email" => Q::Email,
        "audit" => Q::Audit,
        "audio_audit" | "audio-audit" => Q::AudioAudit,
        "start-geopoint" | "start_geopoint" => Q::StartGeopoint,
        _ => return None,
    };
    // Only metadata has a `uri:` form, and only these spellings (as pyxform).
    if uri
        && !matches!(
            l.as_str(),
            "deviceid" | "simserial" | "subscriberid" | "phonenumber" | "username" | "email"
        )
    {
        return None;
    }
    Some(RowKind::Question(Parsed { kind, list: None, file: None, or_other: false, uri }))
}

/// A spreadsheet boolean (`TRUE`, `False`) as the XPath expression it means.
fn xpath_boolean(v: String) -> String {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => "true()".to_owned(),
        "false" | "no" => "false()".to_owned(),
        _ => v,
    }
}

fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "true()" | "1" | "y" => Some(true),
        "no" | "false" | "false()" | "0" | "n" | "" => Some(false),
        _ => None,
    }
}

/// The expression columns of a question, and which of them create value dependencies.
const EXPRESSION_COLUMNS: &[&str] =
    &["required", "relevant", "constraint", "calculation", "choice_filter", "repeat_count", "default"];

impl Importer {
    fn error(&mut self, sheet: &str, row: u32, column: &str, message: impl Into<String>) {
        self.errors.push(ImportError {
            sheet: sheet.to_owned(),
            row,
            column: column.to_owned(),
            message: message.into(),
        });
    }

    fn run(mut self, sheets: Vec<Sheet>, stem: &str) -> Result<Form, ImportErrors> {
        let lone = sheets.len() == 1;
        let mut by_name: HashMap<String, Sheet> = HashMap::new();
        for s in sheets {
            by_name.entry(s.name.trim().to_ascii_lowercase()).or_insert(s);
        }
        // As pyxform: a workbook's only sheet is the survey, whatever its name (`Sheet1`).
        if lone && !by_name.contains_key("survey") {
            let only: Vec<String> = by_name.keys().cloned().collect();
            if let [name] = only.as_slice() {
                if !["choices", "settings", "external_choices", "entities"].contains(&name.as_str()) {
                    if let Some(sheet) = by_name.remove(name) {
                        by_name.insert("survey".to_owned(), sheet);
                    }
                }
            }
        }
        let survey = by_name.remove("survey").and_then(Table::from_sheet);
        let choices = by_name.remove("choices").and_then(Table::from_sheet);
        let external = by_name.remove("external_choices").and_then(Table::from_sheet);
        let settings = by_name.remove("settings").and_then(Table::from_sheet);
        let entities = by_name.remove("entities").and_then(Table::from_sheet);
        let Some(survey) = survey else {
            self.error("survey", 0, "", "the workbook has no survey sheet (or it is empty)");
            return Err(ImportErrors(self.errors));
        };
        for t in [Some(&survey), choices.as_ref(), external.as_ref(), settings.as_ref(), entities.as_ref()]
            .into_iter()
            .flatten()
        {
            for h in t.duplicate_headers() {
                self.error(&t.sheet, t.header_row, &h, format!("the column header {h} is written twice"));
            }
        }
        let allow_choice_duplicates = settings
            .as_ref()
            .and_then(|t| t.rows.first().and_then(|(_, row)| t.cell(row, "allow_choice_duplicates")))
            .is_some_and(|(v, _)| truthy(v) == Some(true));
        let settings = self.settings(settings.as_ref(), stem);
        let mut choice_lists = match &choices {
            Some(t) => self.choices(t, allow_choice_duplicates),
            None => BTreeMap::new(),
        };
        if let Some(t) = &external {
            // A list of the same name may be on both sheets (pyxform keeps them apart).
            for (name, list) in self.choices(t, allow_choice_duplicates) {
                choice_lists.insert(format!("{EXTERNAL_LIST_PREFIX}{name}"), list);
            }
        }
        let nodes = self.survey(&survey, &mut choice_lists);
        let entities = entities.map(|t| self.entities(&t)).unwrap_or_default();
        let mut languages: Vec<String> = Vec::new();
        for t in std::iter::once(&survey).chain(choices.as_ref()).chain(external.as_ref()) {
            for c in &t.columns {
                // Untranslated hints beside translated labels do not make a language of their own.
                let l = match &c.lang {
                    Some(l) if TRANSLATED.contains(&c.base.as_str()) => l.clone(),
                    None if c.base == "label" => DEFAULT_LANGUAGE.to_owned(),
                    _ => continue,
                };
                if !languages.contains(&l) {
                    languages.push(l);
                }
            }
        }
        if languages.is_empty() {
            languages.push(DEFAULT_LANGUAGE.to_owned());
        }
        let form = Form { settings, languages, nodes, choice_lists, entities, media: BTreeMap::new() };
        self.check_expressions(&form, &survey);
        if self.errors.is_empty() {
            // The same check as every other way in (JSON publishing, the engine).
            if let Err(e) = form.validate() {
                let row = e.node_name().and_then(|name| form.node(name)).map_or(0, |n| n.row);
                self.error(&survey.sheet, row, "", e.to_string());
                return Err(ImportErrors(self.errors));
            }
            Ok(form)
        } else {
            Err(ImportErrors(self.errors))
        }
    }

    fn settings(&mut self, table: Option<&Table>, stem: &str) -> Settings {
        let mut s = Settings {
            form_id: stem.to_owned(),
            version: String::new(),
            title: String::new(),
            default_language: None,
            instance_name: None,
        };
        if let Some(t) = table {
            if let Some((_, row)) = t.rows.first() {
                if let Some((v, _)) = t.cell(row, "form_id") {
                    s.form_id = v.to_owned();
                }
                if let Some((v, _)) = t.cell(row, "version") {
                    s.version = v.to_owned();
                }
                if let Some((v, _)) = t.cell(row, "form_title") {
                    s.title = v.to_owned();
                }
                s.default_language = t.cell(row, "default_language").map(|(v, _)| v.to_owned());
                s.instance_name = t.cell(row, "instance_name").map(|(v, _)| v.to_owned());
                if let (Some((v, col)), Some(rown)) =
                    (t.cell(row, "instance_name"), t.rows.first().map(|r| r.0))
                {
                    if let Err(e) = expr::parse(v) {
                        let sheet = t.sheet.clone();
                        self.error(
                            &sheet,
                            rown,
                            col,
                            format!("instance_name is not a valid expression: {e}"),
                        );
                    }
                }
            }
        }
        // pyxform takes any form_id (it is an attribute's value in the XForm); it names the
        // form's documents, so it must be text on one line.
        s.form_id = s.form_id.trim().to_owned();
        if s.form_id.is_empty()
            || s.form_id.chars().any(char::is_control)
            || s.form_id.len() > MAX_FORM_ID_BYTES
        {
            self.error(
                "settings",
                0,
                "form_id",
                format!("the form needs a form_id: text on one line, at most {MAX_FORM_ID_BYTES} bytes"),
            );
        }
        if s.title.is_empty() {
            s.title = s.form_id.clone();
        }
        s
    }

    /// The survey's rows with every `begin loop over X` ... `end loop` written out as pyxform
    /// does: a group, holding a group per choice of X (named and labelled as the choice) with
    /// the loop's rows inside, `%(name)s` and `%(label)s` in their cells replaced.
    fn expand_loops(&mut self, t: &Table, lists: &BTreeMap<String, Vec<Choice>>) -> Vec<(u32, Vec<String>)> {
        self.expand_rows(t, &t.rows, lists, 0).unwrap_or_default()
    }

    /// `None` (with the error reported) when loops nest past [`limits::MAX_DEPTH`] or write out
    /// more than [`limits::MAX_NODES`] rows: a few nested loops over long lists would
    /// otherwise make a form of billions of questions.
    fn expand_rows(
        &mut self,
        t: &Table,
        rows: &[(u32, Vec<String>)],
        lists: &BTreeMap<String, Vec<Choice>>,
        nesting: usize,
    ) -> Option<Vec<(u32, Vec<String>)>> {
        use super::validate::limits::{MAX_DEPTH, MAX_NODES};
        let kind_of = |row: &[String]| t.cell(row, "type").and_then(|(ty, _)| question_type(ty));
        let type_at = t.columns.iter().position(|c| c.base == "type");
        let name_at = t.columns.iter().position(|c| c.base == "name" && c.lang.is_none());
        let with = |row: &[String], ty: &str, name: Option<&str>| {
            let mut r = row.to_vec();
            r.resize(t.columns.len().max(r.len()), String::new());
            if let Some(i) = type_at {
                r[i] = ty.to_owned();
            }
            if let (Some(i), Some(n)) = (name_at, name) {
                r[i] = n.to_owned();
            }
            r
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut i = 0;
        while i < rows.len() {
            let (rown, row) = &rows[i];
            let Some(RowKind::Begin(QuestionType::Group, Some(list))) = kind_of(row) else {
                out.push((*rown, row.clone()));
                i += 1;
                continue;
            };
            let mut depth = 1;
            let mut end = i + 1;
            while end < rows.len() {
                match kind_of(&rows[end].1) {
                    Some(RowKind::Begin(_, Some(_))) => depth += 1,
                    Some(RowKind::End(_, true)) => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                end += 1;
            }
            if end == rows.len() {
                // Never closed: the survey reports it on this row.
                out.push((*rown, row.clone()));
                i += 1;
                continue;
            }
            if nesting >= MAX_DEPTH {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("type"),
                    format!("loops are nested more than {MAX_DEPTH} deep"),
                );
                return None;
            }
            let body = self.expand_rows(t, &rows[i + 1..end], lists, nesting + 1)?;
            let Some(choices) = lists.get(&list) else {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("type"),
                    format!("the choice list {list} is not on the choices sheet"),
                );
                i = end + 1;
                continue;
            };
            out.push((*rown, with(row, "begin group", None)));
            for c in choices.iter().filter(|c| c.name != "none") {
                let mut group = vec![String::new(); t.columns.len()];
                for (k, col) in t.columns.iter().enumerate() {
                    if col.base == "label" {
                        let lang = col.lang.as_deref().unwrap_or(DEFAULT_LANGUAGE);
                        group[k] = super::model::translate(&c.label, lang).unwrap_or(&c.name).to_owned();
                    }
                }
                out.push((*rown, with(&group, "begin group", Some(&c.name))));
                for (r, body_row) in &body {
                    let cells = body_row
                        .iter()
                        .enumerate()
                        .map(|(k, cell)| {
                            let lang = t
                                .columns
                                .get(k)
                                .and_then(|col| col.lang.as_deref())
                                .unwrap_or(DEFAULT_LANGUAGE);
                            let label = super::model::translate(&c.label, lang).unwrap_or(&c.name);
                            cell.replace("%(name)s", &c.name).replace("%(label)s", label)
                        })
                        .collect();
                    out.push((*r, cells));
                }
                out.push((*rown, with(&[], "end group", None)));
                if out.len() > MAX_NODES {
                    let sheet = t.sheet.clone();
                    self.error(
                        &sheet,
                        *rown,
                        &t.header_of("type"),
                        format!("the loop over {list} makes more than {MAX_NODES} questions and groups"),
                    );
                    return None;
                }
            }
            out.push((rows[end].0, with(&rows[end].1, "end group", None)));
            i = end + 1;
        }
        Some(out)
    }

    /// The `entities` sheet, kept as written: every row names its list.
    fn entities(&mut self, t: &Table) -> Vec<EntityDeclaration> {
        let mut out = Vec::new();
        for (rown, row) in &t.rows {
            let Some((list, _)) = t.cell(row, "list_name") else {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("list_name"),
                    "an entity declaration needs a list_name",
                );
                continue;
            };
            let mut columns = BTreeMap::new();
            for (i, c) in t.columns.iter().enumerate() {
                if c.base == "list_name" || c.header.is_empty() {
                    continue;
                }
                if let Some(v) = row.get(i).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    columns.insert(c.header.clone(), v.to_owned());
                }
            }
            out.push(EntityDeclaration { list_name: list.to_owned(), columns, row: *rown });
        }
        out
    }

    fn choices(&mut self, t: &Table, allow_duplicates: bool) -> BTreeMap<String, Vec<Choice>> {
        let mut lists: BTreeMap<String, Vec<Choice>> = BTreeMap::new();
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        if !t.has("list_name") || !t.has("name") {
            let sheet = t.sheet.clone();
            self.error(&sheet, 0, "", "the choices sheet needs list_name and name columns");
            return lists;
        }
        for (rown, row) in &t.rows {
            let Some((list, _)) = t.cell(row, "list_name") else {
                let sheet = t.sheet.clone();
                self.error(&sheet, *rown, &t.header_of("list_name"), "a choice needs a list_name");
                continue;
            };
            let Some((name, _)) = t.cell(row, "name") else {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("name"),
                    format!("a choice of list {list} needs a name"),
                );
                continue;
            };
            if let Some(first) =
                seen.insert((list.to_owned(), name.to_owned()), *rown).filter(|_| !allow_duplicates)
            {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("name"),
                    format!(
                        "choice {name} appears twice in list {list} (first on row {first}); if that \
                         is meant, set allow_choice_duplicates to yes on the settings sheet"
                    ),
                );
            }
            let mut extra = BTreeMap::new();
            for (i, c) in t.columns.iter().enumerate() {
                if c.base == "list_name" || c.base == "name" || TRANSLATED.contains(&c.base.as_str()) {
                    continue;
                }
                if let Some(v) = row.get(i).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    extra.insert(c.header.clone(), v.to_owned());
                }
            }
            lists.entry(list.to_owned()).or_default().push(Choice {
                name: name.to_owned(),
                label: t.text(row, "label"),
                extra,
            });
        }
        lists
    }

    fn survey(&mut self, t: &Table, lists: &mut BTreeMap<String, Vec<Choice>>) -> Vec<Node> {
        let sheet = t.sheet.clone();
        if !t.has("type") {
            self.error(&sheet, 0, "", "the survey sheet needs a type column");
            return Vec::new();
        }
        let type_col = t.header_of("type");
        let name_col = t.header_of("name");
        let rows = self.expand_loops(t, lists);
        let mut nodes: Vec<Node> = Vec::new();
        // Open groups and repeats, each with whether it began as a loop.
        let mut stack: Vec<(usize, bool)> = Vec::new();
        // Names are unique among siblings, as pyxform requires.
        let mut names: HashMap<(Option<usize>, String), u32> = HashMap::new();
        let mut other_lists: Vec<String> = Vec::new();
        for (rown, row) in &rows {
            let rown = *rown;
            let Some((ty, _)) = t.cell(row, "type") else {
                if t.cell(row, "name").is_some() {
                    self.error(&sheet, rown, &type_col, "a row with a name needs a type");
                }
                continue;
            };
            let Some(kind) = question_type(ty) else {
                self.error(&sheet, rown, &type_col, format!("unknown question type {ty:?}"));
                continue;
            };
            let parsed = match kind {
                RowKind::End(k, is_loop) => {
                    match stack.pop() {
                        Some((i, began_loop)) if nodes[i].kind == k && began_loop == is_loop => {}
                        Some((i, _)) => {
                            self.error(
                                &sheet,
                                rown,
                                &type_col,
                                format!(
                                    "{ty} closes {} {} begun on row {}",
                                    nodes[i].kind.as_str(),
                                    nodes[i].name,
                                    nodes[i].row
                                ),
                            );
                        }
                        None => self.error(&sheet, rown, &type_col, format!("{ty} without a matching begin")),
                    }
                    continue;
                }
                // Loops were expanded into groups above; one left here lacks its list.
                RowKind::Begin(k, list) => Parsed { kind: k, list, file: None, or_other: false, uri: false },
                RowKind::Question(p) => p,
            };
            let is_loop = parsed.list.is_some() && parsed.kind.is_container();
            let (kind, file) = (parsed.kind, parsed.file);
            let list = if kind.is_container() { None } else { parsed.list };
            let name = match (t.cell(row, "name"), kind) {
                (Some(("audit", _)) | None, QuestionType::Audit) => "audit".to_owned(),
                (Some(_), QuestionType::Audit) => {
                    self.error(
                        &sheet,
                        rown,
                        &name_col,
                        "an audit is always named audit: leave its name empty",
                    );
                    continue;
                }
                (Some((name, _)), _) => name.to_owned(),
                // As pyxform: a note without a name gets one from its row.
                (None, QuestionType::Note) => format!("generated_note_name_{rown}"),
                (None, _) => {
                    self.error(&sheet, rown, &name_col, format!("a {} needs a name", kind.as_str()));
                    continue;
                }
            };
            let name = name.as_str();
            if !is_xml_name(name) {
                self.error(
                    &sheet,
                    rown,
                    &name_col,
                    format!("{name:?} is not a valid name: use letters, digits, '_', '-' or '.', starting with a letter or '_'"),
                );
                continue;
            }
            let parent = stack.last().map(|(i, _)| *i);
            if let Some(first) = names.insert((parent, name.to_owned()), rown) {
                let within = match parent {
                    Some(p) => format!("{} {}", nodes[p].kind.as_str(), nodes[p].name),
                    None => "the survey".to_owned(),
                };
                self.error(
                    &sheet,
                    rown,
                    &name_col,
                    format!("the name {name} is already used on row {first}, in the same {within}"),
                );
            }
            let path = match parent {
                Some(p) => format!("{}/{}", nodes[p].path, name),
                None => name.to_owned(),
            };
            let mut node = Node::new(name, &path, kind, parent);
            node.row = rown;
            node.list = list;
            node.file = file;
            node.uri = parsed.uri;
            if let Some(l) = &node.list {
                if !lists.contains_key(l) {
                    self.error(
                        &sheet,
                        rown,
                        &type_col,
                        format!("the choice list {l} is not on the choices sheet"),
                    );
                } else if parsed.or_other && !other_lists.contains(l) {
                    other_lists.push(l.clone());
                }
            }
            if matches!(kind, QuestionType::SelectOneFromFile | QuestionType::SelectMultipleFromFile)
                && node.file.is_none()
            {
                self.error(&sheet, rown, &type_col, format!("{} needs a file name", kind.as_str()));
            }
            node.label = t.text(row, "label");
            node.hint = t.text(row, "hint");
            node.required_message = t.text(row, "required_message");
            node.constraint_message = t.text(row, "constraint_message");
            let get = |c: &str| t.cell(row, c).map(|(v, _)| v.to_owned());
            node.required = match get("required") {
                None => None,
                Some(v) => match truthy(&v) {
                    Some(true) => Some("true()".to_owned()),
                    Some(false) => None,
                    None => Some(v),
                },
            };
            node.relevant = get("relevant").map(xpath_boolean);
            node.constraint = get("constraint").map(xpath_boolean);
            node.calculation = get("calculation");
            node.default = get("default");
            node.appearance = get("appearance");
            node.choice_filter = get("choice_filter");
            node.repeat_count = get("repeat_count");
            if let Some((v, col)) = t.cell(row, "read_only") {
                match truthy(v) {
                    Some(b) => node.read_only = b,
                    None => self.error(&sheet, rown, col, "read_only must be yes or no"),
                }
            }
            if let Some((v, col)) = t.cell(row, "parameters") {
                for part in v.split([';', ' ', ',']).filter(|p| !p.trim().is_empty()) {
                    match part.split_once('=') {
                        Some((k, val)) => {
                            node.parameters.insert(k.trim().to_owned(), val.trim().to_owned());
                        }
                        None => self.error(&sheet, rown, col, format!("parameter {part:?} is not key=value")),
                    }
                }
            }
            if kind == QuestionType::Calculate && node.calculation.is_none() {
                self.error(&sheet, rown, &t.header_of("calculation"), "a calculate row needs a calculation");
            }
            if node.repeat_count.is_some() && kind != QuestionType::Repeat {
                self.error(
                    &sheet,
                    rown,
                    &t.header_of("repeat_count"),
                    "repeat_count is only for begin repeat",
                );
            }
            let container = kind.is_container();
            let other = parsed
                .or_other
                .then(|| (format!("{name}_other"), format!("{path}_other"), node.label.clone()));
            nodes.push(node);
            if container {
                stack.push((nodes.len() - 1, is_loop));
            }
            if let Some((other_name, other_path, label)) = other {
                // As pyxform: a text question for the other answer, shown when "other" is picked.
                let mut q = Node::new(&other_name, &other_path, QuestionType::Text, parent);
                q.row = rown;
                q.label = label.keys().map(|lang| (lang.clone(), "Specify other.".to_owned())).collect();
                if q.label.is_empty() {
                    q.label.insert(DEFAULT_LANGUAGE.to_owned(), "Specify other.".to_owned());
                }
                q.relevant = Some(format!("selected(${{{name}}}, 'other')"));
                if let Some(first) = names.insert((parent, other_name.clone()), rown) {
                    self.error(
                        &sheet,
                        rown,
                        &name_col,
                        format!(
                            "the name {other_name} (for the other answer) is already used on row {first}"
                        ),
                    );
                }
                nodes.push(q);
            }
        }
        for list in other_lists {
            let choices = lists.entry(list).or_default();
            if !choices.iter().any(|c| c.name == "other") {
                let label = choices
                    .iter()
                    .flat_map(|c| c.label.keys())
                    .map(|lang| (lang.clone(), "Other".to_owned()))
                    .collect::<Translations>();
                let label = if label.is_empty() {
                    [(DEFAULT_LANGUAGE.to_owned(), "Other".to_owned())].into()
                } else {
                    label
                };
                choices.push(Choice { name: "other".to_owned(), label, extra: BTreeMap::new() });
            }
        }
        for (i, _) in stack {
            let (k, n, r) = (nodes[i].kind, nodes[i].name.clone(), nodes[i].row);
            self.error(&sheet, r, &type_col, format!("{} {n} is never closed", k.as_str()));
        }
        if !names.contains_key(&(None, "meta".to_owned())) && !nodes.iter().any(|n| n.name == "instanceID") {
            let meta = nodes.len();
            nodes.push(Node::new("meta", "meta", QuestionType::Group, None));
            nodes.push(Node::new("instanceID", "meta/instanceID", QuestionType::InstanceId, Some(meta)));
        }
        nodes
    }

    /// Every expression parses, names known questions and calls known functions, and no value
    /// depends on itself.
    fn check_expressions(&mut self, form: &Form, t: &Table) {
        let sheet = t.sheet.clone();
        let mut known: HashMap<&str, usize> = HashMap::new();
        let mut ambiguous: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, n) in form.nodes.iter().enumerate() {
            if known.insert(n.name.as_str(), i).is_some() {
                ambiguous.insert(n.name.as_str());
            }
        }
        for name in &ambiguous {
            known.remove(name);
        }
        self.ambiguous = ambiguous.iter().map(|s| (*s).to_owned()).collect();
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); form.nodes.len()];
        for (i, node) in form.nodes.iter().enumerate() {
            if let Some(p) = node.parent {
                deps[i].push(p);
            }
            for col in EXPRESSION_COLUMNS {
                let src = match *col {
                    "required" => node.required.as_deref(),
                    "relevant" => node.relevant.as_deref(),
                    "constraint" => node.constraint.as_deref(),
                    "calculation" => node.calculation.as_deref(),
                    "choice_filter" => node.choice_filter.as_deref(),
                    "repeat_count" => node.repeat_count.as_deref(),
                    _ => node.default.as_deref().filter(|d| d.contains("${")),
                };
                let Some(src) = src else { continue };
                let header = t.header_of(col);
                let e = match expr::parse(src) {
                    Ok(e) => e,
                    Err(err) => {
                        self.error(&sheet, node.row, &header, format!("not a valid expression: {err}"));
                        continue;
                    }
                };
                self.check_one(&e, &known, &sheet, node.row, &header);
                if matches!(*col, "relevant" | "calculation") {
                    deps[i].extend(e.references().iter().filter_map(|r| known.get(r.as_str()).copied()));
                }
            }
            for (col, text) in [("label", &node.label), ("hint", &node.hint)] {
                for (lang, s) in text {
                    for name in label_references(s) {
                        if !known.contains_key(name.as_str()) {
                            let header = if lang == DEFAULT_LANGUAGE {
                                col.to_owned()
                            } else {
                                format!("{col}::{lang}")
                            };
                            let message = self.unknown_reference(&name);
                            self.error(&sheet, node.row, &header, message);
                        }
                    }
                }
            }
        }
        self.check_cycles(form, &deps, &sheet);
    }

    fn check_one(&mut self, e: &Expr, known: &HashMap<&str, usize>, sheet: &str, row: u32, header: &str) {
        for r in e.references() {
            if !known.contains_key(r.as_str()) {
                let message = self.unknown_reference(&r);
                self.error(sheet, row, header, message);
            }
        }
        let mut calls = Vec::new();
        e.walk(&mut |x| {
            if let Expr::Call(n, args) = x {
                calls.push((n.clone(), args.len()));
            }
        });
        for (name, arity) in calls {
            match expr::is_known_function(&name, arity) {
                None => self.error(sheet, row, header, format!("unknown function {name}()")),
                Some(false) => {
                    self.error(sheet, row, header, format!("{name}() does not take {arity} argument(s)"))
                }
                Some(true) => {}
            }
        }
    }

    fn check_cycles(&mut self, form: &Form, deps: &[Vec<usize>], sheet: &str) {
        // Iterative depth-first search; 0 = new, 1 = on the stack, 2 = done.
        let n = deps.len();
        let mut state = vec![0u8; n];
        let mut reported = vec![false; n];
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            state[root] = 1;
            while let Some(&mut (v, ref mut next)) = stack.last_mut() {
                if let Some(&w) = deps[v].get(*next) {
                    *next += 1;
                    if state[w] == 0 {
                        state[w] = 1;
                        stack.push((w, 0));
                    } else if state[w] == 1 && !reported[w] {
                        let pos = stack.iter().position(|(x, _)| *x == w).unwrap_or(0);
                        let cycle: Vec<usize> = stack[pos..].iter().map(|(x, _)| *x).collect();
                        for &c in &cycle {
                            reported[c] = true;
                        }
                        let mut names: Vec<&str> =
                            cycle.iter().map(|&c| form.nodes[c].name.as_str()).collect();
                        names.push(form.nodes[w].name.as_str());
                        self.error(
                            sheet,
                            form.nodes[w].row,
                            "",
                            format!("dependency cycle: {} (each value needs the next)", names.join(" -> ")),
                        );
                    }
                } else {
                    state[v] = 2;
                    stack.pop();
                }
            }
        }
    }
}

/// The `${names}` inside label or hint text.
pub(crate) fn label_references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].trim();
        if !name.is_empty() {
            out.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    out
}
