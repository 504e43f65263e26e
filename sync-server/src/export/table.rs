//! The tables of an export (the main table and one per repeat), their columns and headers, and
//! how one submission's answers become their rows of cells. Shared by every format.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use tejido_core::doc::meta::ROW_MARKER;
use tejido_core::form::model::{language_code, language_name, translate};
use tejido_core::form::{Form, QuestionType};

use super::answers::{Answer, Answers};
use super::{ExportError, ExportOptions, ExportRow, Headers};

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Empty,
    /// A number, with its text as written (so CSV keeps every digit).
    Number(Cow<'a, str>, f64),
    /// A number as the device wrote it in JSON (its JSON text).
    Json(&'a str),
    /// A document id.
    Uuid(uuid::Uuid),
    Text(Cow<'a, str>),
}

impl Cell<'_> {
    /// The cell as CSV text, with the formula-injection prefix on text; numbers and ids are
    /// formatted into `scratch`.
    pub(crate) fn csv_text<'s>(&'s self, scratch: &'s mut String) -> Cow<'s, str> {
        use std::fmt::Write;
        match self {
            Cell::Empty => Cow::Borrowed(""),
            Cell::Number(t, _) => Cow::Borrowed(t),
            Cell::Json(n) => Cow::Borrowed(n),
            Cell::Uuid(u) => {
                scratch.clear();
                let _ = write!(scratch, "{}", u.hyphenated());
                Cow::Borrowed(scratch.as_str())
            }
            Cell::Text(t) => escape_formula(t),
        }
    }
}

/// Protects a CSV cell against formula injection, as OWASP recommends: text starting with `=`,
/// `+`, `-`, `@`, a tab or a carriage return gets a leading `'` (so a spreadsheet shows it as
/// text instead of evaluating it), unless it is a plain number such as `-12.5`.
pub fn escape_formula(text: &str) -> Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') if !is_plain_number(text) => {
            Cow::Owned(format!("'{text}"))
        }
        _ => Cow::Borrowed(text),
    }
}

fn is_plain_number(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The metadata columns of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaCol {
    SubmissionDate,
    Device,
    ReviewState,
    FormVersion,
}

/// Receives each repeat row: its table and its cells.
pub(crate) type Emit<'e> = dyn FnMut(usize, &[Cell<'_>]) -> Result<(), ExportError> + 'e;

/// One column (a geopoint question spans four).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Col {
    Key,
    ParentKey,
    RowId,
    /// A question: its node and its field path relative to its table's row.
    Question {
        node: usize,
        rel: String,
        kind: QuestionType,
    },
    Meta(MetaCol),
}

/// The main table or one repeat's.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The repeat's name (the form id for the main table), used in row keys.
    pub name: String,
    /// The repeat's field path from its parent table's row (the whole path for a top-level one).
    pub rel: String,
    pub cols: Vec<Col>,
    /// Each question's path from the table's row and its index in `cols`, sorted by path (a
    /// row's fields arrive sorted, so one merge pass places them).
    pub by_rel: Vec<(String, usize)>,
    /// Repeat tables whose rows sit in this table's rows.
    pub children: Vec<usize>,
    pub headers: Vec<String>,
    /// The CSV file's name in the zip.
    pub file_name: String,
    /// The worksheet's name in the workbook.
    pub sheet_name: String,
}

impl Table {
    /// How many cells a row has.
    pub fn width(&self) -> usize {
        self.headers.len()
    }
}

/// The export's tables, in order (the main table first, then repeats in form order).
#[derive(Debug)]
pub(crate) struct Layout<'f> {
    pub form: &'f Form,
    pub headers: Headers,
    pub lang: String,
    pub tables: Vec<Table>,
    /// Labels mode: choice label by list and choice name.
    choice_labels: HashMap<&'f str, HashMap<&'f str, &'f str>>,
}

const POINT_PARTS: [&str; 4] = ["Latitude", "Longitude", "Altitude", "Accuracy"];
const POINT_PARTS_ES: [&str; 4] = ["Latitud", "Longitud", "Altitud", "Precisión"];

fn is_point(kind: QuestionType) -> bool {
    matches!(kind, QuestionType::Geopoint | QuestionType::StartGeopoint)
}

/// Whether a question has a column (notes, groups and repeats hold no answer).
fn has_column(kind: QuestionType) -> bool {
    !kind.is_container() && kind != QuestionType::Note
}

fn is_spanish(lang: &str) -> bool {
    language_code(lang).is_some_and(|c| c.eq_ignore_ascii_case("es"))
        || ["español", "espanol", "spanish"].iter().any(|n| language_name(lang).eq_ignore_ascii_case(n))
}

/// A file name made of safe characters only.
pub(crate) fn safe_file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let s = s.trim_start_matches('.').to_owned();
    if s.is_empty() {
        "export".to_owned()
    } else {
        s
    }
}

/// A worksheet name Excel accepts (at most 31 characters, none of `[]:*?/\`), unique in `taken`.
fn sheet_name(wanted: &str, taken: &mut Vec<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| if matches!(c, '[' | ']' | ':' | '*' | '?' | '/' | '\\') { '_' } else { c })
        .collect();
    let clean = clean.trim_matches('\'').trim();
    let base: String = if clean.is_empty() { "Sheet".to_owned() } else { clean.chars().take(31).collect() };
    let mut name = base.clone();
    let mut n = 2;
    while taken.iter().any(|t| t.to_lowercase() == name.to_lowercase())
        || name.eq_ignore_ascii_case("history")
    {
        let suffix = format!("~{n}");
        let keep = 31usize.saturating_sub(suffix.chars().count());
        name = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
        n += 1;
    }
    taken.push(name.clone());
    name
}

impl<'f> Layout<'f> {
    pub fn new(form: &'f Form, options: &ExportOptions) -> Layout<'f> {
        let lang = form.language(options.lang.as_deref());
        let mut choice_labels: HashMap<&str, HashMap<&str, &str>> = HashMap::new();
        if options.headers == Headers::Labels {
            for (list, choices) in &form.choice_lists {
                let labels = choices
                    .iter()
                    .map(|c| (c.name.as_str(), translate(&c.label, &lang).unwrap_or(c.name.as_str())))
                    .collect();
                choice_labels.insert(list.as_str(), labels);
            }
        }
        let mut layout = Layout { form, headers: options.headers, lang, tables: Vec::new(), choice_labels };
        layout.build_tables();
        layout
    }

    /// The nearest repeat enclosing node `i` (not counting itself).
    fn enclosing_repeat(&self, i: usize) -> Option<usize> {
        let nodes = &self.form.nodes;
        let mut at = nodes.get(i)?.parent;
        // A validated form's parents come before their children; the bound guards any other.
        for _ in 0..nodes.len() {
            let p = at?;
            let node = nodes.get(p)?;
            if node.kind == QuestionType::Repeat {
                return Some(p);
            }
            at = node.parent;
        }
        None
    }

    /// The path of node `i` relative to its table's repeat `repeat`.
    fn rel_path(&self, i: usize, repeat: Option<usize>) -> String {
        let node = &self.form.nodes[i];
        match repeat.and_then(|r| self.form.nodes.get(r)) {
            None => node.path.clone(),
            Some(r) => match node.path.strip_prefix(&r.path).and_then(|p| p.strip_prefix('/')) {
                Some(rest) if !rest.is_empty() => rest.to_owned(),
                _ => node.name.clone(),
            },
        }
    }

    fn build_tables(&mut self) {
        let form = self.form;
        let stem = safe_file_stem(&form.settings.form_id);
        let mut sheets = Vec::new();
        let mut files: Vec<String> = vec![format!("{stem}.csv")];
        let main = Table {
            name: form.settings.form_id.clone(),
            rel: String::new(),
            cols: vec![Col::Key],
            by_rel: Vec::new(),
            children: Vec::new(),
            headers: Vec::new(),
            file_name: files[0].clone(),
            sheet_name: sheet_name(&form.settings.form_id, &mut sheets),
        };
        self.tables.push(main);
        // Repeats in form order: a parent repeat precedes its nested ones.
        let mut table_of: HashMap<usize, usize> = HashMap::new();
        for (i, node) in form.nodes.iter().enumerate() {
            if node.kind != QuestionType::Repeat {
                continue;
            }
            let parent = self.enclosing_repeat(i);
            let parent_table = parent.and_then(|p| table_of.get(&p).copied()).unwrap_or(0);
            let mut file = format!("{stem}-{}.csv", safe_file_stem(&node.name));
            if files.contains(&file) {
                file = format!("{stem}-{}.csv", safe_file_stem(&node.path.replace('/', "-")));
            }
            let mut n = 2;
            while files.contains(&file) {
                file = format!("{stem}-{}-{n}.csv", safe_file_stem(&node.name));
                n += 1;
            }
            files.push(file.clone());
            let t = self.tables.len();
            self.tables.push(Table {
                name: node.name.clone(),
                rel: self.rel_path(i, parent),
                cols: vec![Col::ParentKey, Col::Key],
                by_rel: Vec::new(),
                children: Vec::new(),
                headers: Vec::new(),
                file_name: file,
                sheet_name: sheet_name(&node.name, &mut sheets),
            });
            table_of.insert(i, t);
            self.tables[parent_table].children.push(t);
        }
        for (i, node) in form.nodes.iter().enumerate() {
            if !has_column(node.kind) {
                continue;
            }
            let repeat = self.enclosing_repeat(i);
            let t = match repeat {
                None => 0,
                Some(r) => match table_of.get(&r) {
                    Some(&t) => t,
                    None => continue,
                },
            };
            let rel = self.rel_path(i, repeat);
            let table = &mut self.tables[t];
            table.by_rel.push((rel.clone(), table.cols.len()));
            table.cols.push(Col::Question { node: i, rel, kind: node.kind });
        }
        for (t, table) in self.tables.iter_mut().enumerate() {
            if t == 0 {
                table.cols.extend([
                    Col::Meta(MetaCol::SubmissionDate),
                    Col::Meta(MetaCol::Device),
                    Col::Meta(MetaCol::ReviewState),
                    Col::Meta(MetaCol::FormVersion),
                ]);
            } else {
                table.cols.push(Col::RowId);
            }
        }
        for table in &mut self.tables {
            table.by_rel.sort();
        }
        for t in 0..self.tables.len() {
            let headers = self.headers_of(&self.tables[t].cols);
            self.tables[t].headers = headers;
        }
    }

    fn headers_of(&self, cols: &[Col]) -> Vec<String> {
        let es = is_spanish(&self.lang);
        let labels = self.headers == Headers::Labels;
        let mut out = Vec::new();
        for col in cols {
            match col {
                Col::Key => out.push("KEY".to_owned()),
                Col::ParentKey => out.push("PARENT_KEY".to_owned()),
                Col::RowId => out.push("ROW_ID".to_owned()),
                Col::Meta(m) => {
                    let (name, label_es, label_en) = match m {
                        MetaCol::SubmissionDate => {
                            ("SubmissionDate", "Fecha de recepción", "Submission date")
                        }
                        MetaCol::Device => ("Device", "Dispositivo", "Device"),
                        MetaCol::ReviewState => ("ReviewState", "Estado de revisión", "Review state"),
                        MetaCol::FormVersion => ("FormVersion", "Versión del formulario", "Form version"),
                    };
                    out.push(
                        if !labels {
                            name
                        } else if es {
                            label_es
                        } else {
                            label_en
                        }
                        .to_owned(),
                    );
                }
                Col::Question { node, rel, kind } => {
                    let base = if labels {
                        self.form
                            .nodes
                            .get(*node)
                            .and_then(|n| translate(&n.label, &self.lang))
                            .map(str::to_owned)
                            .filter(|l| !l.trim().is_empty())
                            .unwrap_or_else(|| rel.replace('/', "-"))
                    } else {
                        rel.replace('/', "-")
                    };
                    if is_point(*kind) {
                        let parts = if labels && es { POINT_PARTS_ES } else { POINT_PARTS };
                        for part in parts {
                            out.push(if labels {
                                format!("{base} ({part})")
                            } else {
                                format!("{base}-{part}")
                            });
                        }
                    } else {
                        out.push(base);
                    }
                }
            }
        }
        out
    }

    /// The cells of a submission's row in the main table. `values` is scratch space (one slot
    /// per column), reused across rows like `out`.
    pub fn main_cells<'a>(
        &'a self,
        row: &'a ExportRow,
        values: &mut Vec<Option<Answer<'a>>>,
        out: &mut Vec<Cell<'a>>,
    ) {
        let table = &self.tables[0];
        out.clear();
        values.clear();
        values.resize(table.cols.len(), None);
        // The answers and the table's question paths are both sorted: one merge pass places
        // every answer (repeat rows' fields sort among them and match no column).
        let mut cursor = 0;
        'answers: for (field, value) in row.answers.iter() {
            while let Some((rel, i)) = table.by_rel.get(cursor) {
                match rel.as_str().cmp(field) {
                    std::cmp::Ordering::Less => cursor += 1,
                    std::cmp::Ordering::Equal => {
                        if let Some(slot) = values.get_mut(*i) {
                            *slot = Some(value);
                        }
                        cursor += 1;
                        continue 'answers;
                    }
                    std::cmp::Ordering::Greater => continue 'answers,
                }
            }
            break;
        }
        for (col, value) in table.cols.iter().zip(values.iter()) {
            match col {
                Col::Key => out.push(Cell::Uuid(row.doc)),
                Col::ParentKey | Col::RowId => out.push(Cell::Empty),
                Col::Question { node, kind, .. } => self.value_cells(*node, *kind, *value, out),
                Col::Meta(m) => out.push(self.meta_cell(*m, row)),
            }
        }
    }

    fn meta_cell<'a>(&self, m: MetaCol, row: &'a ExportRow) -> Cell<'a> {
        let text = |s: &'a Option<String>| match s {
            Some(s) if !s.is_empty() => Cell::Text(Cow::Borrowed(s.as_str())),
            _ => Cell::Empty,
        };
        match m {
            MetaCol::SubmissionDate => match rfc3339_ms(row.meta.received_ms) {
                Some(s) => Cell::Text(Cow::Owned(s)),
                None => Cell::Empty,
            },
            MetaCol::Device => text(&row.meta.author),
            MetaCol::FormVersion => text(&row.meta.form_version),
            MetaCol::ReviewState => {
                let Some(state) = row.meta.review_state.as_deref().filter(|s| !s.is_empty()) else {
                    return Cell::Empty;
                };
                if self.headers == Headers::Labels {
                    let es = is_spanish(&self.lang);
                    let label = match state {
                        "approved" if es => Some("Aprobada"),
                        "approved" => Some("Approved"),
                        "has_issues" if es => Some("Con problemas"),
                        "has_issues" => Some("Has issues"),
                        _ => None,
                    };
                    if let Some(l) = label {
                        return Cell::Text(Cow::Borrowed(l));
                    }
                }
                Cell::Text(Cow::Borrowed(state))
            }
        }
    }

    fn choice_label<'a>(&'a self, node: usize, name: &'a str) -> &'a str {
        self.form
            .nodes
            .get(node)
            .and_then(|n| n.list.as_deref())
            .and_then(|l| self.choice_labels.get(l))
            .and_then(|m| m.get(name).copied())
            .unwrap_or(name)
    }

    /// The cells of one question's value (four for a geopoint).
    pub fn value_cells<'a>(
        &'a self,
        node: usize,
        kind: QuestionType,
        value: Option<Answer<'a>>,
        out: &mut Vec<Cell<'a>>,
    ) {
        if is_point(kind) {
            point_cells(value, out);
        } else {
            out.push(self.value_cell(node, kind, value));
        }
    }

    fn value_cell<'a>(&'a self, node: usize, kind: QuestionType, value: Option<Answer<'a>>) -> Cell<'a> {
        let labels = self.headers == Headers::Labels && kind.is_select();
        match value {
            None | Some(Answer::Null) => Cell::Empty,
            Some(Answer::Number(n)) => {
                if labels {
                    Cell::Text(Cow::Borrowed(self.choice_label(node, n)))
                } else {
                    Cell::Json(n)
                }
            }
            Some(Answer::String(s)) => {
                if matches!(kind, QuestionType::Integer | QuestionType::Decimal | QuestionType::Range) {
                    let t = s.trim();
                    if let Some(f) = t.parse::<f64>().ok().filter(|f| f.is_finite() && is_plain_number(t)) {
                        return Cell::Number(Cow::Borrowed(t), f);
                    }
                }
                if labels {
                    if kind.is_multiple() {
                        let joined: Vec<&str> =
                            s.split_whitespace().map(|c| self.choice_label(node, c)).collect();
                        return Cell::Text(Cow::Owned(joined.join("; ")));
                    }
                    return Cell::Text(Cow::Borrowed(self.choice_label(node, s.trim())));
                }
                Cell::Text(Cow::Borrowed(s))
            }
            Some(Answer::Json(text)) if kind.is_select() => match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(items)) => {
                    let names: Vec<Cow<'a, str>> = items
                        .iter()
                        .map(|x| match x {
                            Value::String(s) if labels => {
                                Cow::Owned(self.choice_label(node, s.trim()).to_owned())
                            }
                            Value::String(s) => Cow::Owned(s.clone()),
                            Value::Number(n) if labels => {
                                Cow::Owned(self.choice_label(node, &n.to_string()).to_owned())
                            }
                            other => Cow::Owned(other.to_string()),
                        })
                        .collect();
                    Cell::Text(Cow::Owned(names.join(if labels { "; " } else { " " })))
                }
                _ => Cell::Text(Cow::Borrowed(text)),
            },
            Some(Answer::Bool(b)) => Cell::Text(Cow::Borrowed(if b { "true" } else { "false" })),
            Some(Answer::Json(text)) => Cell::Text(Cow::Borrowed(text)),
        }
    }

    /// Calls `emit(table, cells)` for every row of every repeat table in this submission, parents
    /// before their nested rows; returns how many rows were emitted.
    pub fn repeat_rows(
        &self,
        row: &ExportRow,
        spare: &mut Vec<Cell<'static>>,
        emit: &mut Emit<'_>,
    ) -> Result<u64, ExportError> {
        let key = row.doc.to_string();
        let mut count = 0;
        for &child in &self.tables[0].children {
            let rel = &self.tables[child].rel;
            count += self.table_rows(child, &row.answers, rel, &key, spare, emit)?;
        }
        Ok(count)
    }

    /// The rows of table `t` under one parent row: the repeat's fields are contiguous in the
    /// sorted answers (`<prefix>/<row>/…`), so one pass over them groups each row's values.
    fn table_rows(
        &self,
        t: usize,
        answers: &Answers,
        prefix: &str,
        parent_key: &str,
        spare: &mut Vec<Cell<'static>>,
        emit: &mut Emit<'_>,
    ) -> Result<u64, ExportError> {
        let table = &self.tables[t];
        let mut start = String::with_capacity(prefix.len() + 1);
        start.push_str(prefix);
        start.push('/');
        let mut values: Vec<Option<Answer<'_>>> = vec![None; table.cols.len()];
        let mut key = String::with_capacity(parent_key.len() + table.name.len() + 8);
        let mut range = answers.from_key(&start).peekable();
        let mut n: u64 = 0;
        let mut count = 0;
        while let Some((first, _)) = range.peek() {
            let Some(rest) = first.strip_prefix(start.as_str()) else { break };
            let row = rest.split_once('/').map_or(rest, |(r, _)| r);
            values.iter_mut().for_each(|v| *v = None);
            let mut exists = false;
            let mut cursor = 0;
            while let Some((key, value)) = range.peek() {
                let Some(rest) = key.strip_prefix(start.as_str()) else { break };
                match rest.strip_prefix(row).map(|s| s.strip_prefix('/')) {
                    Some(Some(field)) => {
                        if field == ROW_MARKER {
                            exists = *value == Answer::Bool(true);
                        } else {
                            while table.by_rel.get(cursor).is_some_and(|(rel, _)| rel.as_str() < field) {
                                cursor += 1;
                            }
                            if let Some((rel, i)) = table.by_rel.get(cursor) {
                                if rel == field {
                                    if let Some(slot) = values.get_mut(*i) {
                                        *slot = Some(*value);
                                    }
                                }
                            }
                        }
                    }
                    // The repeat's own path with a row and nothing after it: not a field.
                    Some(None) if rest == row => {}
                    _ => break,
                }
                range.next();
            }
            if !exists || uuid::Uuid::try_parse(row).is_err() {
                continue;
            }
            n += 1;
            key.clear();
            key.push_str(parent_key);
            key.push('/');
            key.push_str(&table.name);
            key.push('[');
            push_decimal(&mut key, n);
            key.push(']');
            let mut cells = recycle(std::mem::take(spare));
            for (col, value) in table.cols.iter().zip(&values) {
                match col {
                    Col::ParentKey => cells.push(Cell::Text(Cow::Borrowed(parent_key))),
                    Col::Key => cells.push(Cell::Text(Cow::Borrowed(key.as_str()))),
                    Col::RowId => cells.push(Cell::Text(Cow::Borrowed(row))),
                    Col::Question { node, kind, .. } => self.value_cells(*node, *kind, *value, &mut cells),
                    Col::Meta(_) => cells.push(Cell::Empty),
                }
            }
            emit(t, &cells)?;
            *spare = recycle(cells);
            count += 1;
            for &child in &table.children {
                let child_prefix = format!("{start}{row}/{}", self.tables[child].rel);
                count += self.table_rows(child, answers, &child_prefix, &key, spare, emit)?;
            }
        }
        Ok(count)
    }
}

/// Appends `n` in decimal (without the formatting machinery: this runs for every row).
pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// A geopoint's four cells: latitude, longitude, altitude, accuracy.
fn point_cells<'a>(value: Option<Answer<'a>>, out: &mut Vec<Cell<'a>>) {
    let start = out.len();
    match value {
        None | Some(Answer::Null) => {}
        Some(Answer::String(s)) => {
            let parts: Vec<&str> = s.split_whitespace().collect();
            if parts.len() <= 4 {
                for p in parts {
                    out.push(match p.parse::<f64>() {
                        Ok(f) if f.is_finite() && is_plain_number(p) => Cell::Number(Cow::Borrowed(p), f),
                        _ => Cell::Text(Cow::Borrowed(p)),
                    });
                }
            } else {
                out.push(Cell::Text(Cow::Borrowed(s)));
            }
        }
        Some(Answer::Json(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) if items.len() <= 4 => {
                for x in items {
                    out.push(match x {
                        Value::Number(n) => match n.as_f64().filter(|f| f.is_finite()) {
                            Some(f) => Cell::Number(Cow::Owned(n.to_string()), f),
                            None => Cell::Text(Cow::Owned(n.to_string())),
                        },
                        Value::String(s) => Cell::Text(Cow::Owned(s)),
                        other => Cell::Text(Cow::Owned(other.to_string())),
                    });
                }
            }
            _ => out.push(Cell::Text(Cow::Borrowed(text))),
        },
        Some(Answer::Number(t)) => out.push(Cell::Text(Cow::Borrowed(t))),
        Some(Answer::Bool(b)) => out.push(Cell::Text(Cow::Borrowed(if b { "true" } else { "false" }))),
    }
    while out.len() < start + 4 {
        out.push(Cell::Empty);
    }
}

/// A geopoint's coordinates, `[lat, lon, altitude?]`, when it is a valid point.
pub(crate) fn point_of(value: Answer<'_>) -> Option<(f64, f64, Option<f64>)> {
    let parts: Vec<f64> = match value {
        Answer::String(s) => {
            let texts: Vec<&str> = s.split_whitespace().collect();
            let nums: Vec<f64> = texts.iter().filter_map(|t| t.parse::<f64>().ok()).collect();
            if nums.len() != texts.len() {
                return None;
            }
            nums
        }
        Answer::Json(text) => {
            let items: Vec<Value> = serde_json::from_str(text).ok()?;
            let nums: Vec<f64> = items.iter().filter_map(Value::as_f64).collect();
            if nums.len() != items.len() {
                return None;
            }
            nums
        }
        _ => return None,
    };
    if !(2..=4).contains(&parts.len()) || !parts.iter().all(|x| x.is_finite()) {
        return None;
    }
    let (lat, lon) = (parts[0], parts[1]);
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    Some((lat, lon, parts.get(2).copied()))
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-01-31T12:00:00.000Z`), for years 1970 to
/// 9999. Written digit by digit from [`civil`], since this runs for every submission
/// (`tests::rfc3339_agrees_with_humantime`).
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if !(0..=MAX).contains(&ms) {
        return None;
    }
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000));
    let mut out = String::with_capacity(24);
    push_padded(&mut out, y.unsigned_abs(), 4);
    for (sep, n) in [('-', mo), ('-', d), ('T', h), (':', mi), (':', s)] {
        out.push(sep);
        push_padded(&mut out, u64::from(n), 2);
    }
    out.push('.');
    push_padded(&mut out, ms.rem_euclid(1000).unsigned_abs(), 3);
    out.push('Z');
    Some(out)
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 && i > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len().saturating_sub(width));
    for &d in digits.get(start..).unwrap_or_default() {
        out.push(char::from(d));
    }
}

/// The civil date and time (UTC) of `secs` since the epoch: year, month, day, hour, minute,
/// second (for zip entries' timestamps).
pub(crate) fn civil(secs: i64) -> (i64, u8, u8, u8, u8, u8) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u8, d as u8, (rem / 3600) as u8, (rem % 3600 / 60) as u8, (rem % 60) as u8)
}

/// An empty vector reusing `v`'s allocation, for the next row's borrows (`T` and `U` are one
/// type under different lifetimes, so the in-place collect keeps the allocation).
// `filter_map` (not `filter`) because the item type changes: the collect reuses the allocation.
#[allow(clippy::unnecessary_filter_map)]
pub(crate) fn recycle<T, U>(v: Vec<T>) -> Vec<U> {
    v.into_iter().filter_map(|_| None).collect()
}
