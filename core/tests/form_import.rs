//! XLSForm import: every real fixture form imports and agrees, question by question, with the
//! XForm pyxform produced from it; broken spreadsheets give every error, with sheet, row and
//! column; arbitrary bytes never panic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use quick_xml::events::Event;
use tejido_core::form::expr::{parse, Expr, PathStart};
use tejido_core::form::{import_xlsform, import_xlsform_bytes, Form, Node, QuestionType};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/forms")
}

/// Every (xlsx, xml) pair under the fixtures folder.
fn fixture_pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let mut dirs = vec![fixtures_dir()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "xlsx" || e == "xls" || e == "ods")
                && p.with_extension("xml").exists()
            {
                // Only forms that come with the XForm pyxform made of them can be compared;
                // pyxform's own test sheets (some of which it refuses) come without one.
                out.push((p.clone(), p.with_extension("xml")));
            }
        }
    }
    out.sort();
    out
}

/// One `<bind>` of an XForm.
#[derive(Debug, Default)]
struct Bind {
    attrs: BTreeMap<String, String>,
}

fn xform_binds(xml: &str) -> BTreeMap<String, Bind> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = BTreeMap::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "bind" => {
                let mut bind = Bind::default();
                for a in e.attributes() {
                    let a = a.unwrap();
                    let key = a.key.as_ref().to_owned();
                    let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).unwrap().into_owned();
                    bind.attrs.insert(key, value);
                }
                let nodeset = bind.attrs["nodeset"].clone();
                // `/data/group/question` → `group/question`.
                let path = nodeset.trim_start_matches('/').split_once('/').unwrap().1.to_owned();
                out.insert(path, bind);
            }
            _ => {}
        }
    }
    out
}

/// The choice names of each internal secondary instance (`<instance id="list">`), in order.
fn xform_choice_lists(xml: &str) -> BTreeMap<String, Vec<String>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut list: Option<String> = None;
    let mut in_name = false;
    let mut depth_in_item = 0usize;
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) => {
                let tag = e.name().as_ref().to_owned();
                if tag == "instance" {
                    let attr = |k: &str| {
                        e.attributes().flatten().find(|a| a.key.as_ref() == k).map(|a| {
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0).unwrap().into_owned()
                        })
                    };
                    list = attr("id").filter(|_| attr("src").is_none());
                } else if tag == "item" {
                    depth_in_item = 1;
                } else if depth_in_item > 0 {
                    depth_in_item += 1;
                    in_name = tag == "name" && depth_in_item == 2;
                    if let (true, Some(l)) = (in_name, &list) {
                        out.entry(l.clone()).or_default().push(String::new());
                    }
                }
            }
            Event::Text(t) if in_name => {
                if let Some(l) = &list {
                    if let Some(last) = out.entry(l.clone()).or_default().last_mut() {
                        last.push_str(&t.xml10_content());
                    }
                }
            }
            Event::GeneralRef(r) if in_name => {
                // `&amp;` inside a name comes as its own event.
                if let Some(l) = &list {
                    let ch = match r.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        _ => "'",
                    };
                    if let Some(last) = out.entry(l.clone()).or_default().last_mut() {
                        last.push_str(ch);
                    }
                }
            }
            Event::End(e) => {
                let tag = e.name().as_ref().to_owned();
                if tag == "instance" {
                    list = None;
                } else if depth_in_item > 0 {
                    depth_in_item -= 1;
                    in_name = false;
                }
            }
            _ => {}
        }
    }
    out
}

/// The XForm bind type pyxform gives each question type.
fn xform_type(n: &Node) -> &'static str {
    use QuestionType::*;
    match n.kind {
        Integer => "int",
        Decimal => "decimal",
        Range => {
            let decimal = ["start", "end", "step"]
                .iter()
                .any(|k| n.parameters.get(*k).is_some_and(|v| v.contains('.')));
            if decimal {
                "decimal"
            } else {
                "int"
            }
        }
        Date | Today => "date",
        Time => "time",
        DateTime | Start | End => "dateTime",
        Geopoint | StartGeopoint => "geopoint",
        Geotrace => "geotrace",
        Geoshape => "geoshape",
        Image | Audio | Video | File | AudioAudit => "binary",
        Barcode => "barcode",
        Rank => "odk:rank",
        _ => "string",
    }
}

/// Rewrites XForm paths (`/data/g/q`, `../q`) as `${q}`, so both sides compare as trees.
fn normalise(e: &Expr) -> Expr {
    match e {
        Expr::Path(p) => {
            let plain = !matches!(p.start, PathStart::Expr(_))
                && p.steps.iter().all(|s| s.predicates.is_empty() && s.name != "." && s.name != "*");
            if plain {
                if let Some(last) = p.steps.last().filter(|s| s.name != "..") {
                    return Expr::Ref(last.name.clone());
                }
            }
            let mut p = (**p).clone();
            if let PathStart::Expr(base) = &p.start {
                p.start = PathStart::Expr(normalise(base));
            }
            for s in &mut p.steps {
                s.predicates = s.predicates.iter().map(normalise).collect();
            }
            Expr::Path(Box::new(p))
        }
        Expr::Neg(a) => Expr::Neg(Box::new(normalise(a))),
        Expr::Binary(op, a, b) => Expr::Binary(*op, Box::new(normalise(a)), Box::new(normalise(b))),
        Expr::Call(n, args) => Expr::Call(n.clone(), args.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

fn same_expression(ours: Option<&str>, theirs: Option<&String>) -> Result<(), String> {
    match (ours, theirs) {
        (None, None) => Ok(()),
        (Some(a), Some(b)) => {
            let a = normalise(&parse(a).map_err(|e| format!("ours {a:?}: {e}"))?);
            let b = normalise(&parse(b).map_err(|e| format!("XForm's {b:?}: {e}"))?);
            if a == b {
                Ok(())
            } else {
                Err(format!("ours is {a}, the XForm's is {b}"))
            }
        }
        (a, b) => Err(format!("ours is {a:?}, the XForm's is {b:?}")),
    }
}

fn compare(form: &Form, xml: &str) -> Vec<String> {
    let binds = xform_binds(xml);
    let mut problems = Vec::new();
    for (path, bind) in &binds {
        let Some(node) = form.node_at(path) else {
            problems.push(format!("{path}: in the XForm but not imported"));
            continue;
        };
        let want_type = bind.attrs.get("type").map(String::as_str).unwrap_or("string");
        if xform_type(node) != want_type {
            problems.push(format!(
                "{path}: type {:?} maps to {}, the XForm says {want_type}",
                node.kind,
                xform_type(node)
            ));
        }
        for (attr, ours) in [
            ("relevant", node.relevant.as_deref()),
            ("constraint", node.constraint.as_deref()),
            ("required", node.required.as_deref()),
            ("calculate", node.calculation.as_deref()),
        ] {
            if let Err(e) = same_expression(ours, bind.attrs.get(attr)) {
                problems.push(format!("{path}: {attr}: {e}"));
            }
        }
        let readonly = bind.attrs.get("readonly").is_some_and(|v| v == "true()");
        let ours_readonly = node.read_only || node.kind == QuestionType::Note || node.kind.is_metadata();
        if readonly != ours_readonly {
            problems.push(format!("{path}: read-only is {ours_readonly}, the XForm says {readonly}"));
        }
        if let Some(msg) = bind.attrs.get("jr:constraintMsg").filter(|m| !m.starts_with("jr:itext")) {
            let lang = form.language(None);
            let ours = tejido_core::form::model::translate(&node.constraint_message, &lang);
            if ours != Some(msg.as_str()) {
                problems.push(format!("{path}: constraint message {ours:?}, the XForm says {msg:?}"));
            }
        }
    }
    for (list, names) in xform_choice_lists(xml) {
        let ours: Vec<String> = form
            .choice_lists
            .get(&list)
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        if ours != names {
            problems.push(format!("choice list {list}: ours is {ours:?}, the XForm's is {names:?}"));
        }
    }
    for node in &form.nodes {
        // pyxform writes no bind for groups, repeats or a bare trigger.
        if node.kind.is_container() || node.kind == QuestionType::Trigger {
            continue;
        }
        if !binds.contains_key(&node.path) {
            problems.push(format!("{}: imported but not in the XForm", node.path));
        }
    }
    problems
}

#[test]
fn every_fixture_imports_and_matches_its_xform() {
    let pairs = fixture_pairs();
    assert!(pairs.len() >= 2, "expected the fixture forms under {}", fixtures_dir().display());
    for (xlsx, xml) in pairs {
        let form =
            import_xlsform(&xlsx).unwrap_or_else(|e| panic!("{} does not import:\n{e}", xlsx.display()));
        let xml = std::fs::read_to_string(&xml).unwrap();
        let problems = compare(&form, &xml);
        assert!(problems.is_empty(), "{}:\n{}", xlsx.display(), problems.join("\n"));
        // The form survives JSON.
        assert_eq!(Form::from_json(&form.to_json()).unwrap(), form);
    }
}

#[test]
fn fixture_details_come_through() {
    let dir = fixtures_dir().join("odk-web-forms");
    let form = import_xlsform(&dir.join("socio-economic-survey-v20240515.xlsx")).unwrap();
    assert_eq!(form.settings.form_id, "socio-economic-survey");
    assert_eq!(form.settings.version, "20240515143545");
    assert_eq!(form.settings.title, "Socio-economic Survey");
    assert_eq!(form.languages, vec!["English (en)".to_owned(), "French (fr)".to_owned()]);
    let district = form.node("district").unwrap();
    assert_eq!(district.kind, QuestionType::SelectOne);
    assert_eq!(district.list.as_deref(), Some("district"));
    assert_eq!(district.choice_filter.as_deref(), Some("region=${region}"));
    let choices = &form.choice_lists["district"];
    assert_eq!(choices[0].name, "Garden");
    assert_eq!(choices[0].extra.get("region").map(String::as_str), Some("Sindh"));
    assert_eq!(form.node("familyMembers").unwrap().kind, QuestionType::Repeat);
    assert_eq!(form.node("healthVisit").unwrap().path, "familyMembers/persons/health/healthVisit");
    assert_eq!(
        form.node("internetHH").unwrap().label["English (en)"],
        "Does the household have access to internet?"
    );

    let all = import_xlsform(&dir.join("all-question-types-v2024091201-3.xlsx")).unwrap();
    assert_eq!(all.languages, vec!["default".to_owned()]);
    assert_eq!(all.node("map").unwrap().kind, QuestionType::SelectOneFromFile);
    assert_eq!(all.node("map").unwrap().file.as_deref(), Some("cities.geojson"));
    assert_eq!(all.node("range_decimal").unwrap().parameters["step"], "0.5");
    assert_eq!(all.node("rank").unwrap().kind, QuestionType::Rank);
}

/// A minimal .xlsx writer for test spreadsheets: inline strings, one or more sheets.
fn xlsx(sheets: &[(&str, &[&[&str]])]) -> Vec<u8> {
    xlsx_with(sheets, None, "")
}

/// An .xlsx whose first sheet also declares `dimension` and holds the raw `extra_rows` XML
/// after its rows.
fn xlsx_with(sheets: &[(&str, &[&[&str]])], dimension: Option<&str>, extra_rows: &str) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        let esc = |s: &str| {
            s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
        };
        zip.start_file("[Content_Types].xml", opts).unwrap();
        let mut ct = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>"#,
        );
        for i in 0..sheets.len() {
            ct.push_str(&format!(r#"<Override PartName="/xl/worksheets/sheet{}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#, i + 1));
        }
        ct.push_str("</Types>");
        zip.write_all(ct.as_bytes()).unwrap();
        zip.start_file("_rels/.rels", opts).unwrap();
        zip.write_all(br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#).unwrap();
        let mut wb = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>"#,
        );
        let mut rels = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">"#,
        );
        for (i, (name, _)) in sheets.iter().enumerate() {
            wb.push_str(&format!(r#"<sheet name="{}" sheetId="{}" r:id="rId{}"/>"#, esc(name), i + 1, i + 1));
            rels.push_str(&format!(r#"<Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{}.xml"/>"#, i + 1, i + 1));
        }
        wb.push_str("</sheets></workbook>");
        rels.push_str("</Relationships>");
        zip.start_file("xl/workbook.xml", opts).unwrap();
        zip.write_all(wb.as_bytes()).unwrap();
        zip.start_file("xl/_rels/workbook.xml.rels", opts).unwrap();
        zip.write_all(rels.as_bytes()).unwrap();
        for (i, (_, rows)) in sheets.iter().enumerate() {
            let mut x = String::from(
                r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#,
            );
            if let (0, Some(d)) = (i, dimension) {
                x.push_str(&format!(r#"<dimension ref="{d}"/>"#));
            }
            x.push_str("<sheetData>");
            for (r, row) in rows.iter().enumerate() {
                x.push_str(&format!(r#"<row r="{}">"#, r + 1));
                for (c, cell) in row.iter().enumerate() {
                    if cell.is_empty() {
                        continue;
                    }
                    let col = (b'A' + c as u8) as char;
                    x.push_str(&format!(
                        r#"<c r="{col}{}" t="inlineStr"><is><t>{}</t></is></c>"#,
                        r + 1,
                        esc(cell)
                    ));
                }
                x.push_str("</row>");
            }
            if i == 0 {
                x.push_str(extra_rows);
            }
            x.push_str("</sheetData></worksheet>");
            zip.start_file(format!("xl/worksheets/sheet{}.xml", i + 1), opts).unwrap();
            zip.write_all(x.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn a_broken_form_reports_every_error_with_sheet_row_and_column() {
    let survey: &[&[&str]] = &[
        &["type", "name", "label", "relevant", "calculation", "constraint"],
        &["text", "name", "Name", "", "", ""],
        &["integer", "age", "Age", "${nmae} != ''", "", ". > 0 and"],
        &["select_one colors", "color", "Color", "", "", ""],
        &["calculate", "a", "", "", "${b} + 1", ""],
        &["calculate", "b", "", "", "${a} + 1", ""],
        &["text", "name", "Again", "", "", ""],
        &["decimal", "score", "Score", "", "frobnicate(1)", ""],
        &["selct_one x", "bad_type", "?", "", "", ""],
        &["integer", "2bad", "?", "", "", ""],
        &["end_group", "", "", "", "", ""],
        &["begin_group", "open", "Open", "", "", ""],
        &["text", "in_open", "Label ${ghost}", "", "", ""],
        &["calculate", "selfish", "", "", "${selfish}", ""],
        &["text", "arity", "", "if(1, 2)", "", ""],
    ];
    let choices: &[&[&str]] =
        &[&["list_name", "name", "label"], &["yesno", "yes", "Yes"], &["yesno", "yes", "Sí"]];
    let settings: &[&[&str]] = &[&["form_title", "form_id", "version"], &["Broken", "broken", "1"]];
    let bytes = xlsx(&[("survey", survey), ("choices", choices), ("settings", settings)]);
    let errors = import_xlsform_bytes(&bytes, "broken.xlsx").unwrap_err();
    let text = errors.to_string();
    let expect = [
        ("survey", 3, "relevant", "${nmae} is not a question"),
        ("survey", 3, "constraint", "not a valid expression"),
        ("survey", 4, "type", "choice list colors"),
        ("survey", 7, "name", "already used on row 2"),
        ("survey", 8, "calculation", "unknown function frobnicate()"),
        ("survey", 9, "type", "unknown question type"),
        ("survey", 10, "name", "not a valid name"),
        ("survey", 11, "type", "without a matching begin"),
        ("survey", 12, "type", "never closed"),
        ("survey", 13, "label", "${ghost} is not a question"),
        ("survey", 15, "relevant", "if() does not take 2"),
        ("choices", 3, "name", "choice yes appears twice in list yesno"),
    ];
    for (sheet, row, column, message) in expect {
        assert!(
            errors.0.iter().any(|e| e.sheet == sheet
                && e.row == row
                && e.column == column
                && e.message.contains(message)),
            "missing {sheet} row {row} column {column}: {message}\nall errors:\n{text}"
        );
    }
    assert!(
        errors.0.iter().any(|e| e.message.contains("dependency cycle") && e.message.contains("a -> b -> a")
            || e.message.contains("b -> a -> b")),
        "{text}"
    );
    assert!(errors.0.iter().any(|e| e.message.contains("dependency cycle: selfish -> selfish")), "{text}");
    // Display prints every error, one per line.
    assert_eq!(text.lines().count(), errors.0.len());
    assert!(text.contains("survey, row 8, column calculation: unknown function frobnicate()"), "{text}");
}

#[test]
fn translations_settings_and_aliases_are_read() {
    let survey: &[&[&str]] = &[
        &[
            "type",
            "name",
            "label::Español (es)",
            "label::English (en)",
            "required",
            "read_only",
            "jr:constraintMsg::English (en)",
            "constraint",
        ],
        &["begin repeat", "people", "Personas", "People", "", "", "", ""],
        &["select all that apply yesno", "things", "Cosas", "Things", "yes", "", "", ""],
        &["int", "n", "Número", "Number", "TRUE", "no", "Too big", ". < 10"],
        &["end repeat", "", "", "", "", "", "", ""],
        &["location", "where", "Dónde", "Where", "", "", "", ""],
        &["start", "start", "", "", "", "", "", ""],
    ];
    let choices: &[&[&str]] = &[
        &["list name", "value", "label::Español (es)", "label::English (en)"],
        &["yesno", "1", "Sí", "Yes"],
    ];
    let settings: &[&[&str]] =
        &[&["title", "form_id", "version", "default_language"], &["Prueba", "prueba", "7", "Español (es)"]];
    let bytes = xlsx(&[("survey", survey), ("choices", choices), ("settings", settings)]);
    let form = import_xlsform_bytes(&bytes, "prueba.xlsx").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(form.settings.title, "Prueba");
    assert_eq!(form.settings.default_language.as_deref(), Some("Español (es)"));
    assert_eq!(form.language(None), "Español (es)");
    assert_eq!(form.language(Some("en")), "English (en)");
    assert_eq!(form.language(Some("English")), "English (en)");
    let things = form.node("things").unwrap();
    assert_eq!(things.kind, QuestionType::SelectMultiple);
    assert_eq!(things.path, "people/things");
    assert_eq!(things.required.as_deref(), Some("true()"));
    let n = form.node("n").unwrap();
    assert_eq!(n.kind, QuestionType::Integer);
    assert_eq!(n.required.as_deref(), Some("true()"));
    assert_eq!(n.constraint_message["English (en)"], "Too big");
    assert_eq!(form.node("where").unwrap().kind, QuestionType::Geopoint);
    assert_eq!(form.node("start").unwrap().kind, QuestionType::Start);
    assert_eq!(form.choice_lists["yesno"][0].label["Español (es)"], "Sí");
    assert_eq!(form.node("instanceID").unwrap().path, "meta/instanceID");
}

#[test]
fn cells_under_no_header_are_ignored_as_pyxform_ignores_them() {
    // pyxform's allow_comment_rows_test.xls: a stray number in a column with no header, on a
    // row that is otherwise empty, is no choice at all.
    let survey: &[&[&str]] = &[&["type", "name", "label"], &["select_one yn", "ok", "OK?"]];
    let choices: &[&[&str]] = &[
        &["list_name", "name", "label"],
        &["yn", "yes", "Yes"],
        &["yn", "no", "No", "", "note to self"],
        &["", "", "", "", "0"],
    ];
    let bytes = xlsx(&[("survey", survey), ("choices", choices)]);
    let form = import_xlsform_bytes(&bytes, "form.xlsx").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(form.choice_lists["yn"].len(), 2);
}

/// A cell moved far away (`XFD1048576`, `CV1048576`) once made the reader allocate the whole
/// rectangle up to it (512 GiB, aborting the process; 5.8 GB): sheets beyond the limits are
/// refused before anything is allocated, whether the sheet declares its dimension or not.
#[test]
fn sheets_beyond_the_size_limits_are_refused_before_allocating() {
    let survey: &[&[&str]] = &[&["type", "name", "label"], &["text", "name", "Name"]];
    let far = |cell: &str, row: u32| {
        format!(r#"<row r="{row}"><c r="{cell}" t="inlineStr"><is><t>x</t></is></c></row>"#)
    };
    let cases = [
        (None, far("XFD1048576", 1_048_576)),
        (None, far("CV1048576", 1_048_576)),
        (None, far("A100001", 100_001)),
        (None, far("AMK3", 3)),
        (Some("A1:XFD1048576"), String::new()),
    ];
    for (dimension, extra) in cases {
        let bytes = xlsx_with(&[("survey", survey)], dimension, &extra);
        let started = std::time::Instant::now();
        let e = import_xlsform_bytes(&bytes, "far.xlsx").unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.to_string().contains("at most 100000 rows and 1024 columns"), "{e}");
    }
    // Within the limits, a far cell is fine and costs only itself.
    let bytes = xlsx_with(&[("survey", survey)], Some("A1:AMJ100000"), &far("AMJ100000", 100_000));
    let form = import_xlsform_bytes(&bytes, "near.xlsx").unwrap_or_else(|e| panic!("{e}"));
    assert!(form.node("name").is_some());
}

#[test]
fn a_form_nested_beyond_the_limit_is_refused_on_its_row() {
    let mut rows: Vec<Vec<String>> = vec![vec!["type".into(), "name".into(), "label".into()]];
    for i in 0..40 {
        rows.push(vec!["begin group".into(), format!("g{i}"), format!("G{i}")]);
    }
    rows.push(vec!["text".into(), "q".into(), "Q".into()]);
    for _ in 0..40 {
        rows.push(vec!["end group".into(), String::new(), String::new()]);
    }
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
    let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    let e = import_xlsform_bytes(&xlsx(&[("survey", &rows)]), "deep.xlsx").unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].sheet, "survey");
    assert_eq!(e.0[0].row, 34, "the first group past the limit (row 2 is g0)");
    assert!(e.to_string().contains("the limit is 32"), "{e}");
}

#[test]
fn not_a_spreadsheet_is_one_clear_error() {
    let e = import_xlsform_bytes(b"hello", "form.xlsx").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.to_string(), "form.xlsx: not an .xlsx, .xls or .ods file");
    // A ZIP archive that is no workbook: the parser says why.
    let mut not_a_workbook = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(&mut not_a_workbook);
        zip.start_file("readme.txt", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"hello").unwrap();
        zip.finish().unwrap();
    }
    let e = import_xlsform_bytes(not_a_workbook.get_ref(), "form.xlsx").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.contains("not a readable spreadsheet"), "{e}");
    let e = import_xlsform(Path::new("/nonexistent/form.xlsx")).unwrap_err();
    assert!(e.to_string().contains("cannot read the file"), "{e}");
    let no_survey = xlsx(&[("other", &[&["a"]]), ("choices", &[&["list_name", "name"]])]);
    let e = import_xlsform_bytes(&no_survey, "form.xlsx").unwrap_err();
    assert!(e.to_string().contains("no survey sheet"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), ext in prop::sample::select(vec!["x.xlsx", "x.xls", "x.ods", "x.bin"])) {
        let _ = import_xlsform_bytes(&bytes, ext);
    }

    #[test]
    fn a_real_spreadsheet_with_flipped_bytes_never_panics(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let path = fixtures_dir().join("odk-web-forms/socio-economic-survey-v20240515.xlsx");
        let mut bytes = std::fs::read(path).unwrap();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= b | 1;
        }
        let _ = import_xlsform_bytes(&bytes, "x.xlsx");
    }

    #[test]
    fn arbitrary_cells_never_panic(cells in prop::collection::vec("\\PC{0,12}", 12)) {
        let row: Vec<&str> = cells.iter().map(String::as_str).collect();
        let survey: &[&[&str]] = &[&["type", "name", "label", "relevant", "calculation", "constraint"], &row[0..6], &row[6..12]];
        let _ = import_xlsform_bytes(&xlsx(&[("survey", survey)]), "x.xlsx");
    }
}

#[test]
fn the_format_is_read_from_the_bytes_not_the_name() {
    let survey: &[&[&str]] = &[&["type", "name", "label"], &["text", "a", "A"]];
    let legacy = std::fs::read(fixtures_dir().join("pyxform-xls/gps.xls")).unwrap();
    let cases: [(&str, Vec<u8>); 7] = [
        // An old Excel 97-2003 workbook saved under the new name, as real forms arrive.
        ("really-xls.xlsx", legacy.clone()),
        ("really-xls.ods", legacy.clone()),
        ("macros.xlsm", xlsx(&[("survey", survey)])),
        ("really-xlsx.xls", xlsx(&[("survey", survey)])),
        ("no-extension", xlsx(&[("survey", survey)])),
        ("really-ods.xlsx", ods(&[("survey", survey)])),
        ("really-ods.bin", ods(&[("survey", survey)])),
    ];
    for (name, bytes) in cases {
        let form = import_xlsform_bytes(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!form.nodes.is_empty(), "{name}");
    }
    let form = import_xlsform_bytes(&legacy, "really-xls.xlsx").unwrap();
    assert!(form.nodes.iter().any(|n| n.kind == QuestionType::Geopoint));
    for (name, bytes) in [
        ("form.csv", b"type,name,label\ntext,a,A\n".to_vec()),
        ("form.xlsx", Vec::new()),
        ("form.pdf", b"%PDF-1.4".to_vec()),
    ] {
        let e = import_xlsform_bytes(&bytes, name).unwrap_err();
        assert_eq!(e.to_string(), format!("{name}: not an .xlsx, .xls or .ods file"));
    }
}

/// A minimal OpenDocument spreadsheet with string cells.
fn ods(sheets: &[(&str, &[&[&str]])]) -> Vec<u8> {
    use std::io::Write;
    let esc =
        |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let stored =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("mimetype", stored).unwrap();
        zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet").unwrap();
        zip.start_file("META-INF/manifest.xml", stored).unwrap();
        zip.write_all(br#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#).unwrap();
        let mut c = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet>"#,
        );
        for (name, rows) in sheets {
            c.push_str(&format!(r#"<table:table table:name="{}">"#, esc(name)));
            for row in rows.iter() {
                c.push_str("<table:table-row>");
                for cell in row.iter() {
                    if cell.is_empty() {
                        c.push_str("<table:table-cell/>");
                    } else {
                        c.push_str(&format!(r#"<table:table-cell office:value-type="string"><text:p>{}</text:p></table:table-cell>"#, esc(cell)));
                    }
                }
                c.push_str("</table:table-row>");
            }
            c.push_str("</table:table>");
        }
        c.push_str("</office:spreadsheet></office:body></office:document-content>");
        zip.start_file("content.xml", stored).unwrap();
        zip.write_all(c.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn ods_spreadsheets_import_too() {
    let survey: &[&[&str]] = &[
        &["type", "name", "label", "relevant"],
        &["select_one yn", "ok", "OK?", ""],
        &["text", "why", "Why?", "${ok} = 'no'"],
        &["text", "bad", "", "${ghost}"],
    ];
    let choices: &[&[&str]] = &[&["list_name", "name", "label"], &["yn", "yes", "Yes"], &["yn", "no", "No"]];
    let errors =
        import_xlsform_bytes(&ods(&[("survey", survey), ("choices", choices)]), "form.ods").unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!((errors.0[0].row, errors.0[0].column.as_str()), (4, "relevant"));
    let form = import_xlsform_bytes(&ods(&[("survey", &survey[..3]), ("choices", choices)]), "my-form.ods")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(form.settings.form_id, "my-form");
    assert_eq!(form.node("why").unwrap().relevant.as_deref(), Some("${ok} = 'no'"));
    assert_eq!(form.choice_lists["yn"].len(), 2);
}

#[test]
fn loops_that_would_make_millions_of_questions_are_refused() {
    let choices: &[&[&str]] = &[
        &["list_name", "name", "label"],
        &["l", "a", "A"],
        &["l", "b", "B"],
        &["l", "c", "C"],
        &["l", "d", "D"],
    ];
    let survey = |depth: usize| {
        let mut rows: Vec<Vec<String>> = vec![vec!["type".into(), "name".into(), "label".into()]];
        for k in 0..depth {
            rows.push(vec!["begin loop over l".into(), format!("loop{k}"), "L".into()]);
        }
        rows.push(vec!["integer".into(), "n".into(), "N".into()]);
        for _ in 0..depth {
            rows.push(vec!["end loop".into(), String::new(), String::new()]);
        }
        rows
    };
    for (depth, message) in [(10, "makes more than 20000"), (40, "nested more than 32 deep")] {
        let rows = survey(depth);
        let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
        let started = std::time::Instant::now();
        let e = import_xlsform_bytes(&xlsx(&[("survey", &rows), ("choices", choices)]), "loops.xlsx")
            .unwrap_err();
        assert!(e.to_string().contains(message), "{e}");
        assert!(e.0[0].row >= 2, "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    // Three levels of four choices are fine: 4 x 4 x 4 questions.
    let rows = survey(3);
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
    let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    let form = import_xlsform_bytes(&xlsx(&[("survey", &rows), ("choices", choices)]), "loops.xlsx").unwrap();
    assert_eq!(form.nodes.iter().filter(|n| n.name == "n").count(), 64);
    assert!(form.node_at("loop0/a/loop1/b/loop2/c/n").is_some());
}
