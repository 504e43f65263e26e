//! XLSForm import: the survey, choices and settings sheets of an .xlsx, .xls or .ods workbook
//! into a [`Form`]. Every problem found is reported, each with its sheet, row and column.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Cursor;
use std::path::Path;

use calamine::{Data, Reader};

use super::expr::{self, Expr};
use super::model::{Choice, Form, Node, QuestionType, Settings, Translations, DEFAULT_LANGUAGE};

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

/// Imports an XLSForm from its bytes; `file_name`'s extension says the format (.xlsx, .xls,
/// .ods; anything else is detected).
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

fn read_workbook(bytes: &[u8], file_name: &str) -> Result<Vec<Sheet>, ImportErrors> {
    let lower = file_name.to_ascii_lowercase();
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
        let mut book: calamine::Sheets<Cursor<Vec<u8>>> =
            if lower.ends_with(".xlsx") || lower.ends_with(".xlsm") {
                calamine::Sheets::Xlsx(calamine::Xlsx::new(cursor).map_err(|e| e.to_string())?)
            } else if lower.ends_with(".xls") {
                calamine::Sheets::Xls(calamine::Xls::new(cursor).map_err(|e| e.to_string())?)
            } else if lower.ends_with(".ods") {
                calamine::Sheets::Ods(calamine::Ods::new(cursor).map_err(|e| e.to_string())?)
            } else {
                calamine::open_workbook_auto_from_rs(cursor).map_err(|e| e.to_string())?
            };
        let mut out = Vec::new();
        for name in book.sheet_names() {
            if let calamine::Sheets::Xlsx(xlsx) = &mut book {
                out.push(read_xlsx_sheet(xlsx, &name)?);
                continue;
            }
            // .xls and .ods: the parser has read the sheet already; its extent was checked
            // before (.xls, in `cfb`) or is bounded by the file (.ods), and is checked again
            // before it is copied.
            let range = book.worksheet_range(&name).map_err(|e| format!("sheet {name}: {e}"))?;
            let first_row = range.start().map(|(r, _)| r).unwrap_or(0);
            let first_col = range.start().map(|(_, c)| c).unwrap_or(0) as usize;
            let (end_row, end_col) = range.end().unwrap_or((0, 0));
            check_sheet_extent(&name, end_row, end_col)?;
            if (range.height() as u64).saturating_mul(end_col as u64 + 1) > MAX_SHEET_CELLS as u64 {
                return Err(too_many_cells(&name));
            }
            let mut rows = Vec::new();
            for (i, row) in range.rows().enumerate() {
                let mut cells = vec![String::new(); first_col];
                cells.extend(row.iter().map(cell_text));
                rows.push((first_row.saturating_add(i as u32).saturating_add(1), cells));
            }
            out.push(Sheet { name, rows });
        }
        Ok(out)
    });
    match result {
        Ok(Ok(sheets)) => Ok(sheets),
        Ok(Err(e)) => Err(whole_file_error(file_name, format!("not a readable spreadsheet: {e}"))),
        Err(_) => Err(whole_file_error(file_name, "not a readable spreadsheet: the file is corrupt".into())),
    }
}

/// Rows a sheet may have (a national list of places fits many times over).
pub const MAX_SHEET_ROWS: u32 = 100_000;
/// Columns a sheet may have (column `AMJ`; a form in ten languages uses a few dozen).
pub const MAX_SHEET_COLUMNS: u32 = 1_024;
/// Cells a sheet may hold, counting the empty cells to the left of each row's last one.
pub const MAX_SHEET_CELLS: usize = 2_000_000;

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
}

impl Table {
    fn from_sheet(sheet: Sheet) -> Option<Table> {
        let mut rows = sheet.rows.into_iter().skip_while(|(_, r)| r.iter().all(|c| c.trim().is_empty()));
        let (_, header) = rows.next()?;
        let columns = header.iter().map(|h| parse_header(h)).collect();
        // As pyxform: a column with no header is ignored, so a row whose only content is under
        // no header (a stray number off to the side) is an empty row.
        let named = |i: usize| header.get(i).is_some_and(|h| !h.trim().is_empty());
        let rows = rows
            .filter(|(_, r)| r.iter().enumerate().any(|(i, c)| named(i) && !c.trim().is_empty()))
            .collect();
        Some(Table { sheet: sheet.name, columns, rows })
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
}

enum RowKind {
    Begin(QuestionType),
    End(QuestionType),
    Question(QuestionType, Option<String>, Option<String>),
}

fn question_type(t: &str) -> Option<RowKind> {
    let words: Vec<&str> = t.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    use QuestionType as Q;
    let simple = |q| Some(RowKind::Question(q, None, None));
    match l.as_slice() {
        ["begin", "group"] | ["begin_group"] => Some(RowKind::Begin(Q::Group)),
        ["end", "group"] | ["end_group"] => Some(RowKind::End(Q::Group)),
        ["begin", "repeat"] | ["begin_repeat"] => Some(RowKind::Begin(Q::Repeat)),
        ["end", "repeat"] | ["end_repeat"] => Some(RowKind::End(Q::Repeat)),
        ["select_one" | "select1", _, rest @ ..]
        | ["select", "one", _, rest @ ..]
        | ["select_multiple", _, rest @ ..]
        | ["select", "multiple", _, rest @ ..]
        | ["select", "all", "that", "apply", _, rest @ ..]
        | ["select_all_that_apply", _, rest @ ..]
        | ["rank", _, rest @ ..]
            if rest.is_empty() || rest == ["or_other"] =>
        {
            let kind = if l[0] == "rank" {
                Q::Rank
            } else if l[0] == "select_one" || l[0] == "select1" || l.get(1) == Some(&"one") {
                Q::SelectOne
            } else {
                Q::SelectMultiple
            };
            let list_at = words.len() - rest.len() - 1;
            Some(RowKind::Question(kind, Some(words[list_at].to_owned()), None))
        }
        ["select_one_from_file", file] => Some(RowKind::Question(
            Q::SelectOneFromFile,
            None,
            Some(words[1].to_owned()).filter(|_| !file.is_empty()),
        )),
        ["select_multiple_from_file", _] => {
            Some(RowKind::Question(Q::SelectMultipleFromFile, None, Some(words[1].to_owned())))
        }
        ["text" | "string"] => simple(Q::Text),
        ["integer" | "int"] => simple(Q::Integer),
        ["decimal"] => simple(Q::Decimal),
        ["range"] => simple(Q::Range),
        ["note"] => simple(Q::Note),
        ["date"] => simple(Q::Date),
        ["time"] => simple(Q::Time),
        ["datetime"] => simple(Q::DateTime),
        ["geopoint" | "location" | "gps"] => simple(Q::Geopoint),
        ["geotrace"] => simple(Q::Geotrace),
        ["geoshape"] => simple(Q::Geoshape),
        ["image" | "photo"] => simple(Q::Image),
        ["audio"] => simple(Q::Audio),
        ["video"] => simple(Q::Video),
        ["file"] => simple(Q::File),
        ["barcode"] => simple(Q::Barcode),
        ["acknowledge"] => simple(Q::Acknowledge),
        ["trigger"] => simple(Q::Trigger),
        ["calculate"] => simple(Q::Calculate),
        ["hidden"] => simple(Q::Hidden),
        ["start"] => simple(Q::Start),
        ["end"] => simple(Q::End),
        ["today"] => simple(Q::Today),
        ["deviceid" | "imei"] => simple(Q::DeviceId),
        ["username"] => simple(Q::Username),
        ["phonenumber"] => simple(Q::PhoneNumber),
        ["email"] => simple(Q::Email),
        ["audio_audit" | "audio-audit"] => simple(Q::AudioAudit),
        ["start-geopoint" | "start_geopoint"] => simple(Q::StartGeopoint),
        _ => None,
    }
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
        let mut by_name: HashMap<String, Sheet> = HashMap::new();
        for s in sheets {
            by_name.entry(s.name.trim().to_ascii_lowercase()).or_insert(s);
        }
        let survey = by_name.remove("survey").and_then(Table::from_sheet);
        let choices = by_name.remove("choices").and_then(Table::from_sheet);
        let settings = by_name.remove("settings").and_then(Table::from_sheet);
        let Some(survey) = survey else {
            self.error("survey", 0, "", "the workbook has no survey sheet (or it is empty)");
            return Err(ImportErrors(self.errors));
        };
        let settings = self.settings(settings.as_ref(), stem);
        let choice_lists = match &choices {
            Some(t) => self.choices(t),
            None => BTreeMap::new(),
        };
        let nodes = self.survey(&survey, &choice_lists);
        let mut languages: Vec<String> = Vec::new();
        for t in std::iter::once(&survey).chain(choices.as_ref()) {
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
        let form = Form { settings, languages, nodes, choice_lists };
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
        if s.form_id.is_empty() || !is_xml_name(&s.form_id) {
            self.error(
                "settings",
                0,
                "form_id",
                "the form needs a form_id made of letters, digits, '_', '-' or '.'",
            );
        }
        if s.title.is_empty() {
            s.title = s.form_id.clone();
        }
        s
    }

    fn choices(&mut self, t: &Table) -> BTreeMap<String, Vec<Choice>> {
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
            if let Some(first) = seen.insert((list.to_owned(), name.to_owned()), *rown) {
                let sheet = t.sheet.clone();
                self.error(
                    &sheet,
                    *rown,
                    &t.header_of("name"),
                    format!("choice {name} appears twice in list {list} (first on row {first})"),
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

    fn survey(&mut self, t: &Table, lists: &BTreeMap<String, Vec<Choice>>) -> Vec<Node> {
        let sheet = t.sheet.clone();
        if !t.has("type") {
            self.error(&sheet, 0, "", "the survey sheet needs a type column");
            return Vec::new();
        }
        let type_col = t.header_of("type");
        let name_col = t.header_of("name");
        let mut nodes: Vec<Node> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        let mut names: HashMap<String, u32> = HashMap::new();
        for (rown, row) in &t.rows {
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
            let (kind, list, file) = match kind {
                RowKind::End(k) => {
                    match stack.pop() {
                        Some(i) if nodes[i].kind == k => {}
                        Some(i) => {
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
                RowKind::Begin(k) => (k, None, None),
                RowKind::Question(k, l, f) => (k, l, f),
            };
            let Some((name, _)) = t.cell(row, "name") else {
                self.error(&sheet, rown, &name_col, format!("a {} needs a name", kind.as_str()));
                continue;
            };
            if !is_xml_name(name) {
                self.error(
                    &sheet,
                    rown,
                    &name_col,
                    format!("{name:?} is not a valid name: use letters, digits, '_', '-' or '.', starting with a letter or '_'"),
                );
                continue;
            }
            if let Some(first) = names.insert(name.to_owned(), rown) {
                self.error(
                    &sheet,
                    rown,
                    &name_col,
                    format!("the name {name} is already used on row {first}"),
                );
            }
            let parent = stack.last().copied();
            let path = match parent {
                Some(p) => format!("{}/{}", nodes[p].path, name),
                None => name.to_owned(),
            };
            let mut node = Node::new(name, &path, kind, parent);
            node.row = rown;
            node.list = list;
            node.file = file;
            if let Some(l) = &node.list {
                if !lists.contains_key(l) {
                    self.error(
                        &sheet,
                        rown,
                        &type_col,
                        format!("the choice list {l} is not on the choices sheet"),
                    );
                }
            }
            if kind == QuestionType::SelectOneFromFile && node.file.is_none() {
                self.error(&sheet, rown, &type_col, "select_one_from_file needs a file name");
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
            nodes.push(node);
            if container {
                stack.push(nodes.len() - 1);
            }
        }
        for i in stack {
            let (k, n, r) = (nodes[i].kind, nodes[i].name.clone(), nodes[i].row);
            self.error(&sheet, r, &type_col, format!("{} {n} is never closed", k.as_str()));
        }
        if !names.contains_key("meta") && !names.contains_key("instanceID") {
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
        let known: HashMap<&str, usize> =
            form.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
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
                            self.error(
                                &sheet,
                                node.row,
                                &header,
                                format!("${{{name}}} is not a question of this form"),
                            );
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
                self.error(sheet, row, header, format!("${{{r}}} is not a question of this form"));
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
