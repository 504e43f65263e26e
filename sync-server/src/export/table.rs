//! The tables of an export (the main table and one per repeat), their columns and headers, and
//! how one submission's answers become their rows of cells. Shared by every format.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use tejido_core::doc::meta::ROW_MARKER;
use tejido_core::form::model::{language_code, language_name, translate};
use tejido_core::form::{Form, QuestionType};

use super::answers::{compare, equal, Answer, Answers};
use super::{ExportError, ExportOptions, ExportRow, Headers};

/// One cell of a row, handed to a [`RowSink`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Empty,
    /// A number, as written: only digits, signs, `.`, `e` and `E` (a JSON number's text, or text
    /// that [`is_plain_number`] accepted), so CSV writes it with neither quotes nor a prefix.
    Number(Cow<'a, str>),
    /// A document id.
    Uuid(uuid::Uuid),
    /// A time in milliseconds since the epoch, in 1970 to 9999 ([`rfc3339_ms`]).
    Time(i64),
    /// Anything else: untrusted text.
    Text(Cow<'a, str>),
}

/// Receives an export's rows cell by cell: [`begin`](RowSink::begin) with the row's table, its
/// cells in column order, then [`end`](RowSink::end). Each format writes them straight to its
/// output, so no row is gathered in memory first.
pub(crate) trait RowSink {
    fn begin(&mut self, table: usize);
    fn cell(&mut self, cell: Cell<'_>);
    /// Ends the row; a format whose writing failed in a cell reports it here.
    fn end(&mut self) -> Result<(), ExportError>;
}

/// Scratch space for [`Layout::write_submission`], reused across submissions so that a
/// submission's rows allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Per column of the row being read, the index of its answer (`NO_ANSWER` for none).
    slots: Vec<u32>,
    /// Per nesting depth of repeats: the field prefix of the rows and the key of the current row.
    levels: Vec<Level>,
    /// The answers of each top-level repeat of the submission: table, first and past-the-end
    /// index.
    ranges: Vec<(usize, usize, usize)>,
}

#[derive(Debug, Default)]
struct Level {
    prefix: String,
    key: String,
}

const NO_ANSWER: u32 = u32::MAX;

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

/// Whether `text` is a finite number made only of digits, a sign, a point and an exponent (as
/// `str::parse::<f64>` reads them), checked by its grammar so that the usual short number costs
/// no float parsing (`tests::plain_numbers_are_what_f64_parses`).
pub(crate) fn is_plain_number(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits(i);
    let mut mantissa = int_end - i;
    i = int_end;
    if b.get(i) == Some(&b'.') {
        let frac_end = digits(i + 1);
        mantissa += frac_end - i - 1;
        i = frac_end;
    }
    if mantissa == 0 {
        return false;
    }
    if i == b.len() {
        // At most 300 digits, no exponent: far below f64::MAX.
        return b.len() <= 300 || text.parse::<f64>().is_ok_and(f64::is_finite);
    }
    if !matches!(b.get(i), Some(b'e' | b'E')) {
        return false;
    }
    i += 1;
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let exp_end = digits(i);
    exp_end > i && exp_end == b.len() && text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The metadata columns of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaCol {
    SubmissionDate,
    Device,
    ReviewState,
    FormVersion,
}

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
    /// `rel` followed by `0`, the character after `/`: every field of the repeat's rows
    /// (`<rel>/<row>/…`) sorts before it.
    pub rel_end: String,
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
            rel_end: String::new(),
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
                rel_end: format!("{}0", self.rel_path(i, parent)),
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

    /// Writes submission `row` to `sink`: its main-table row, then (with `repeats`) every row
    /// of every repeat table, parents before their nested rows. Returns how many repeat rows
    /// were written.
    pub fn write_submission<S: RowSink>(
        &self,
        row: &ExportRow,
        scratch: &mut Scratch,
        sink: &mut S,
        repeats: bool,
    ) -> Result<u64, ExportError> {
        let table = &self.tables[0];
        let answers = &row.answers;
        let slots = &mut scratch.slots;
        slots.clear();
        slots.resize(table.cols.len(), NO_ANSWER);
        let ranges = &mut scratch.ranges;
        ranges.clear();
        // The answers and the table's question paths are both sorted: one merge pass places
        // every answer. A top-level repeat's fields sort together, so the first of them is
        // enough to find them all and skip past them.
        let mut cursor = 0;
        let mut i = 0;
        let n = answers.len();
        'answers: while i < n {
            let field = answers.key_at(i);
            while let Some((rel, col)) = table.by_rel.get(cursor) {
                match compare(rel.as_bytes(), field.as_bytes()) {
                    std::cmp::Ordering::Less => cursor += 1,
                    std::cmp::Ordering::Equal => {
                        if let Some(slot) = slots.get_mut(*col) {
                            *slot = i as u32;
                        }
                        cursor += 1;
                        i += 1;
                        continue 'answers;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            for &child in &table.children {
                let rel = &self.tables[child].rel;
                let under = field.as_bytes().get(rel.len()) == Some(&b'/')
                    && field.as_bytes().get(..rel.len()).is_some_and(|f| equal(f, rel.as_bytes()));
                if under {
                    let end = answers.position_in(i, n, &self.tables[child].rel_end);
                    ranges.push((child, i, end));
                    i = end.max(i + 1);
                    continue 'answers;
                }
            }
            i += 1;
        }
        sink.begin(0);
        for (col, &slot) in table.cols.iter().zip(slots.iter()) {
            match col {
                Col::Key => sink.cell(Cell::Uuid(row.doc)),
                Col::ParentKey | Col::RowId => sink.cell(Cell::Empty),
                Col::Question { node, kind, .. } => {
                    self.value_cells(*node, *kind, answer_at(answers, slot), sink)
                }
                Col::Meta(m) => sink.cell(self.meta_cell(*m, row)),
            }
        }
        sink.end()?;
        if !repeats {
            return Ok(0);
        }
        let mut doc = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let key = row.doc.hyphenated().encode_lower(&mut doc);
        let levels = &mut scratch.levels;
        if levels.is_empty() {
            levels.resize_with(self.tables.len(), Level::default);
        }
        let mut count = 0;
        for &(child, lo, hi) in ranges.iter() {
            let rel = &self.tables[child].rel;
            count += self.table_rows(child, answers, (lo, hi), true, rel, key, slots, levels, sink)?;
        }
        Ok(count)
    }

    fn meta_cell<'a>(&self, m: MetaCol, row: &'a ExportRow) -> Cell<'a> {
        let text = |s: &'a Option<String>| match s {
            Some(s) if !s.is_empty() => Cell::Text(Cow::Borrowed(s.as_str())),
            _ => Cell::Empty,
        };
        match m {
            MetaCol::SubmissionDate => match rfc3339_bytes(row.meta.received_ms) {
                Some(_) => Cell::Time(row.meta.received_ms),
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
            .and_then(|n| n.list.as_deref().or(n.file.as_deref()))
            .and_then(|l| self.choice_labels.get(l))
            .and_then(|m| m.get(name).copied())
            .unwrap_or(name)
    }

    /// The cells of one question's value (four for a geopoint).
    fn value_cells<S: RowSink>(
        &self,
        node: usize,
        kind: QuestionType,
        value: Option<Answer<'_>>,
        sink: &mut S,
    ) {
        if is_point(kind) {
            point_cells(value, sink);
        } else {
            sink.cell(self.value_cell(node, kind, value));
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
                    Cell::Number(Cow::Borrowed(n))
                }
            }
            Some(Answer::String(s)) => {
                if matches!(kind, QuestionType::Integer | QuestionType::Decimal | QuestionType::Range) {
                    let t = s.trim();
                    if is_plain_number(t) {
                        return Cell::Number(Cow::Borrowed(t));
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

    /// Writes the rows of table `t` under one parent row, whose answers are those in `range`
    /// (indices into `answers`; `exact` when they are the repeat's answers and no others): the
    /// repeat's fields (`<prefix>/<row>/…`) are contiguous in the
    /// sorted answers, so one pass over them groups each row's values. `levels` holds one
    /// buffer per depth left (a form nests repeats less deeply than it has tables).
    #[allow(clippy::too_many_arguments)]
    fn table_rows<S: RowSink>(
        &self,
        t: usize,
        answers: &Answers,
        range: (usize, usize),
        exact: bool,
        prefix: &str,
        parent_key: &str,
        slots: &mut Vec<u32>,
        levels: &mut [Level],
        sink: &mut S,
    ) -> Result<u64, ExportError> {
        let Some((level, deeper)) = levels.split_first_mut() else { return Ok(0) };
        let table = &self.tables[t];
        let start = &mut level.prefix;
        start.clear();
        start.push_str(prefix);
        start.push('/');
        // Exactly the answers under `<prefix>/`: from the first at or after it to the first at
        // or after `<prefix>0` (`0` follows `/`), unless `range` is already just those.
        let (mut i, end) = if exact {
            range
        } else {
            let i = answers.position_in(range.0, range.1, start);
            start.pop();
            start.push('0');
            let end = answers.position_in(i, range.1, start);
            start.pop();
            start.push('/');
            (i, end)
        };
        let skip = start.len();
        let mut n: u64 = 0;
        let mut count = 0;
        while i < end {
            let rest = answers.key_at(i).get(skip..).unwrap_or_default();
            let row = rest.split_once('/').map_or(rest, |(r, _)| r);
            let first = i;
            slots.clear();
            slots.resize(table.cols.len(), NO_ANSWER);
            let mut exists = false;
            let mut cursor = 0;
            while i < end {
                let rest = answers.key_at(i).get(skip..).unwrap_or_default();
                if !starts_with_row(rest.as_bytes(), row.as_bytes()) {
                    break;
                }
                match rest.get(row.len()..).unwrap_or_default().strip_prefix('/') {
                    Some(field) => {
                        if field == ROW_MARKER {
                            exists = answers.answer_at(i) == Some(Answer::Bool(true));
                        } else if table
                            .by_rel
                            .get(cursor)
                            .is_some_and(|(rel, _)| equal(rel.as_bytes(), field.as_bytes()))
                        {
                            // The usual case: the next column's field, as in every row before.
                            if let Some(slot) =
                                table.by_rel.get(cursor).and_then(|(_, col)| slots.get_mut(*col))
                            {
                                *slot = i as u32;
                            }
                            cursor += 1;
                        } else {
                            while table
                                .by_rel
                                .get(cursor)
                                .is_some_and(|(rel, _)| compare(rel.as_bytes(), field.as_bytes()).is_lt())
                            {
                                cursor += 1;
                            }
                            if let Some((rel, col)) = table.by_rel.get(cursor) {
                                if equal(rel.as_bytes(), field.as_bytes()) {
                                    if let Some(slot) = slots.get_mut(*col) {
                                        *slot = i as u32;
                                    }
                                }
                            }
                        }
                    }
                    // The repeat's own path with a row and nothing after it: not a field.
                    None if rest.len() == row.len() => {}
                    None => break,
                }
                i += 1;
            }
            if !exists || uuid::Uuid::try_parse(row).is_err() {
                continue;
            }
            n += 1;
            let key = &mut level.key;
            key.clear();
            key.push_str(parent_key);
            key.push('/');
            key.push_str(&table.name);
            key.push('[');
            push_decimal(key, n);
            key.push(']');
            sink.begin(t);
            for (col, &slot) in table.cols.iter().zip(slots.iter()) {
                match col {
                    Col::ParentKey => sink.cell(Cell::Text(Cow::Borrowed(parent_key))),
                    Col::Key => sink.cell(Cell::Text(Cow::Borrowed(key.as_str()))),
                    Col::RowId => sink.cell(Cell::Text(Cow::Borrowed(row))),
                    Col::Question { node, kind, .. } => {
                        self.value_cells(*node, *kind, answer_at(answers, slot), sink)
                    }
                    Col::Meta(_) => sink.cell(Cell::Empty),
                }
            }
            sink.end()?;
            count += 1;
            if table.children.is_empty() {
                continue;
            }
            // Nested rows sit among this row's answers: `<prefix>/<row>/<nested repeat>/…`.
            let mut row_prefix = String::with_capacity(start.len() + row.len() + 16);
            for &child in &table.children {
                row_prefix.clear();
                row_prefix.push_str(start);
                row_prefix.push_str(row);
                row_prefix.push('/');
                row_prefix.push_str(&self.tables[child].rel);
                count += self.table_rows(
                    child,
                    answers,
                    (first, i),
                    false,
                    &row_prefix,
                    key,
                    slots,
                    deeper,
                    sink,
                )?;
            }
        }
        Ok(count)
    }
}

/// Whether `rest` starts with `row`, compared inline (this runs for every field of every repeat
/// row).
#[inline]
fn starts_with_row(rest: &[u8], row: &[u8]) -> bool {
    rest.get(..row.len()).is_some_and(|start| equal(start, row))
}

/// The answer in `slot` (an index into `answers`, or [`NO_ANSWER`]).
fn answer_at(answers: &Answers, slot: u32) -> Option<Answer<'_>> {
    if slot == NO_ANSWER {
        None
    } else {
        answers.answer_at(slot as usize)
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
fn point_cells<S: RowSink>(value: Option<Answer<'_>>, sink: &mut S) {
    let mut written = 0;
    match value {
        None | Some(Answer::Null) => {}
        Some(Answer::String(s)) => {
            if s.split_whitespace().count() <= 4 {
                for p in s.split_whitespace() {
                    sink.cell(if is_plain_number(p) {
                        Cell::Number(Cow::Borrowed(p))
                    } else {
                        Cell::Text(Cow::Borrowed(p))
                    });
                    written += 1;
                }
            } else {
                sink.cell(Cell::Text(Cow::Borrowed(s)));
                written += 1;
            }
        }
        Some(Answer::Json(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) if items.len() <= 4 => {
                for x in items {
                    sink.cell(match x {
                        Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                            Cell::Number(Cow::Owned(n.to_string()))
                        }
                        Value::Number(n) => Cell::Text(Cow::Owned(n.to_string())),
                        Value::String(s) => Cell::Text(Cow::Owned(s)),
                        other => Cell::Text(Cow::Owned(other.to_string())),
                    });
                    written += 1;
                }
            }
            _ => {
                sink.cell(Cell::Text(Cow::Borrowed(text)));
                written += 1;
            }
        },
        Some(Answer::Number(t)) => {
            sink.cell(Cell::Text(Cow::Borrowed(t)));
            written += 1;
        }
        Some(Answer::Bool(b)) => {
            sink.cell(Cell::Text(Cow::Borrowed(if b { "true" } else { "false" })));
            written += 1;
        }
    }
    for _ in written..4 {
        sink.cell(Cell::Empty);
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
/// 9999 (`tests::rfc3339_agrees_with_humantime`).
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    rfc3339_bytes(ms).map(|b| b.iter().map(|&c| char::from(c)).collect())
}

/// [`rfc3339_ms`] as ASCII bytes, written digit by digit from [`civil`] with no allocation, since
/// this runs for every submission.
pub(crate) fn rfc3339_bytes(ms: i64) -> Option<[u8; 24]> {
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if !(0..=MAX).contains(&ms) {
        return None;
    }
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000));
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], y.unsigned_abs());
    put_digits(&mut out[5..7], u64::from(mo));
    put_digits(&mut out[8..10], u64::from(d));
    put_digits(&mut out[11..13], u64::from(h));
    put_digits(&mut out[14..16], u64::from(mi));
    put_digits(&mut out[17..19], u64::from(s));
    put_digits(&mut out[20..23], ms.rem_euclid(1000).unsigned_abs());
    Some(out)
}

/// Writes the last `out.len()` decimal digits of `n` into `out`.
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
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
