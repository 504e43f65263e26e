//! A form version's media files, as the engine reads them: the choices of
//! `select_one_from_file` and `select_multiple_from_file` (CSV, ODK's XML `root/item`, or
//! GeoJSON) and the tables of `pulldata()` (CSV). Each file is read into rows of named columns.

use std::collections::BTreeMap;

use super::expr::{self, Expr};
use super::model::{Choice, Form, DEFAULT_LANGUAGE};

/// The largest media file a form version carries (bytes).
pub const MAX_MEDIA_BYTES: usize = 16 * 1024 * 1024;
/// The most rows (choices, features, lines) one media file may hold.
pub const MAX_MEDIA_ROWS: usize = 100_000;

/// One row of a media file: its columns by name (`name`, `label`, `label::English (en)`, …).
pub type MediaRow = BTreeMap<String, String>;

/// Why a media file cannot be read. Messages name the file and the line, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("media file {file}: {message}")]
pub struct MediaError {
    pub file: String,
    pub message: String,
}

/// The media files a form needs, sorted: the files of its `…_from_file` questions and the
/// `.csv` of each `pulldata('name', …)`.
pub fn needed_media(form: &Form) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in &form.nodes {
        if let Some(f) = &n.file {
            out.push(f.clone());
        }
        let expressions = [
            &n.relevant,
            &n.constraint,
            &n.calculation,
            &n.default,
            &n.required,
            &n.choice_filter,
            &n.repeat_count,
        ];
        for e in expressions.into_iter().flatten() {
            let Ok(parsed) = expr::parse(e) else { continue };
            parsed.walk(&mut |x| {
                if let Expr::Call(name, args) = x {
                    if name == "pulldata" {
                        if let Some(Expr::Str(file)) = args.first() {
                            out.push(format!("{file}.csv"));
                        }
                    }
                }
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a name is a media file name a form may use: a plain file name (no folder), with
/// an extension the engine reads.
pub fn is_media_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && kind_of(name).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Xml,
    GeoJson,
}

fn kind_of(name: &str) -> Option<Kind> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some(Kind::Csv),
        "xml" => Some(Kind::Xml),
        "geojson" => Some(Kind::GeoJson),
        _ => None,
    }
}

/// A media file's rows as the choices of a `…_from_file` question, for readers that show
/// choice labels outside a session (the server's pages and exports): rows without a name are
/// left out, `label` is the default language's label and `label::<language>` that language's,
/// and the other columns are kept as the choice's extra columns.
pub fn file_choices(rows: &[MediaRow]) -> Vec<Choice> {
    rows.iter()
        .filter_map(|row| {
            let name = row.get("name").filter(|n| !n.is_empty())?;
            let mut choice = Choice { name: name.clone(), label: BTreeMap::new(), extra: BTreeMap::new() };
            for (column, value) in row {
                if column == "label" {
                    choice.label.insert(DEFAULT_LANGUAGE.to_owned(), value.clone());
                } else if let Some(lang) = column.strip_prefix("label::") {
                    choice.label.insert(lang.to_owned(), value.clone());
                } else if column != "name" {
                    choice.extra.insert(column.clone(), value.clone());
                }
            }
            Some(choice)
        })
        .collect()
}

/// Reads a media file into rows, by the kind its name gives.
pub fn parse_media(name: &str, bytes: &[u8]) -> Result<Vec<MediaRow>, MediaError> {
    let err = |message: String| MediaError { file: name.to_owned(), message };
    if bytes.len() > MAX_MEDIA_BYTES {
        return Err(err(format!("larger than {MAX_MEDIA_BYTES} bytes")));
    }
    let rows = match kind_of(name) {
        Some(Kind::Csv) => parse_csv(bytes).map_err(err)?,
        Some(Kind::Xml) => parse_xml(bytes).map_err(err)?,
        Some(Kind::GeoJson) => parse_geojson(bytes).map_err(err)?,
        None => return Err(err("not a .csv, .xml or .geojson file".into())),
    };
    Ok(rows)
}

fn too_many() -> String {
    format!("more than {MAX_MEDIA_ROWS} rows")
}

fn parse_csv(bytes: &[u8]) -> Result<Vec<MediaRow>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the header line cannot be read: {}", csv_position(&e)))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("line {} cannot be read: {}", i + 2, csv_position(&e)))?;
        if out.len() == MAX_MEDIA_ROWS {
            return Err(too_many());
        }
        let row: MediaRow = headers
            .iter()
            .zip(record.iter())
            .filter(|(h, _)| !h.is_empty())
            .map(|(h, v)| (h.clone(), v.trim().to_owned()))
            .collect();
        out.push(row);
    }
    Ok(out)
}

/// What went wrong in a CSV file, without the bytes it holds.
fn csv_position(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "it is not UTF-8".into(),
        _ => "it is not CSV".into(),
    }
}

/// ODK's external XML instance: `<root><item><name>…</name><label>…</label>…</item>…</root>`.
fn parse_xml(bytes: &[u8]) -> Result<Vec<MediaRow>, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_owned())?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = Vec::new();
    // Depth 1: root; 2: an item; 3: one of its columns.
    let mut depth = 0usize;
    let mut row: Option<MediaRow> = None;
    let mut column: Option<(String, String)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|_| format!("not well-formed XML (near byte {})", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name().as_ref().to_owned();
                match depth {
                    2 => row = Some(MediaRow::new()),
                    3 => column = Some((name, String::new())),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if depth == 2 {
                    if let Some(r) = row.as_mut() {
                        r.insert(e.local_name().as_ref().to_owned(), String::new());
                    }
                } else if depth == 1 {
                    out.push(MediaRow::new());
                }
            }
            Event::Text(t) => {
                if let Some((_, v)) = column.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, v)) = column.as_mut() {
                    let c = match r.as_ref() {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        _ => r
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .map(String::from)
                            .ok_or_else(|| "an unknown entity".to_owned())?,
                    };
                    v.push_str(&c);
                }
            }
            Event::CData(t) => {
                if let Some((_, v)) = column.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::End(_) => {
                match depth {
                    3 => {
                        if let (Some((k, v)), Some(r)) = (column.take(), row.as_mut()) {
                            r.insert(k, v.trim().to_owned());
                        }
                    }
                    2 => {
                        if let Some(r) = row.take() {
                            if out.len() == MAX_MEDIA_ROWS {
                                return Err(too_many());
                            }
                            out.push(r);
                        }
                    }
                    _ => {}
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("the XML ends inside an element".into());
    }
    Ok(out)
}

/// A GeoJSON FeatureCollection: each feature a row of its properties, its `id` (or the
/// property `id`) as `name`, `title` as `label`, and a Point's position as `geometry` in ODK's
/// `lat lon altitude accuracy` form.
fn parse_geojson(bytes: &[u8]) -> Result<Vec<MediaRow>, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON (line {})", e.line()))?;
    if v.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err("not a GeoJSON FeatureCollection".into());
    }
    let features =
        v.get("features").and_then(Value::as_array).ok_or("a FeatureCollection without features")?;
    if features.len() > MAX_MEDIA_ROWS {
        return Err(too_many());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = Vec::with_capacity(features.len());
    for (i, f) in features.iter().enumerate() {
        let mut row = MediaRow::new();
        if let Some(props) = f.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                row.insert(k.clone(), text(v));
            }
        }
        if let Some(id) = f.get("id") {
            row.insert("id".into(), text(id));
        }
        let id = row.get("id").cloned().ok_or_else(|| format!("feature {} has no id", i + 1))?;
        row.entry("name".into()).or_insert(id);
        if let Some(title) = row.get("title").cloned() {
            row.entry("label".into()).or_insert(title);
        }
        let geometry = f.get("geometry");
        if geometry.and_then(|g| g.get("type")).and_then(Value::as_str) == Some("Point") {
            let c = geometry.and_then(|g| g.get("coordinates")).and_then(Value::as_array);
            let n = |i: usize| c.and_then(|c| c.get(i)).and_then(Value::as_f64);
            if let (Some(lon), Some(lat)) = (n(0), n(1)) {
                row.insert("geometry".into(), format!("{lat} {lon} {} 0", n(2).unwrap_or(0.0)));
            }
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_rows_become_choices_with_their_labels_by_language() {
        let rows = parse_media(
            "d.csv",
            "name,label,label::English (en),region\nd1,Distrito Uno,District One,norte\n,sin nombre,,x\n"
                .as_bytes(),
        )
        .unwrap();
        let choices = file_choices(&rows);
        assert_eq!(choices.len(), 1, "a row without a name is no choice");
        assert_eq!(choices[0].name, "d1");
        assert_eq!(choices[0].label[DEFAULT_LANGUAGE], "Distrito Uno");
        assert_eq!(choices[0].label["English (en)"], "District One");
        assert_eq!(choices[0].extra["region"], "norte");
        assert!(!choices[0].extra.contains_key("name"));
    }

    #[test]
    fn csv_xml_and_geojson_read_into_rows() {
        let csv = parse_media(
            "p.csv",
            "\u{feff}name,label,district\np1,Uno,a\n\"p,2\",\"Dos \"\"b\"\"\",b\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(csv.len(), 2);
        assert_eq!(csv[1]["name"], "p,2");
        assert_eq!(csv[1]["label"], "Dos \"b\"");
        let xml = parse_media(
            "c.xml",
            b"<?xml version='1.0'?><root><item><name>maize</name><label>Ma&amp;iz</label></item><item><name>rice</name><label/></item></root>",
        )
        .unwrap();
        assert_eq!(xml.len(), 2);
        assert_eq!(xml[0]["label"], "Ma&iz");
        assert_eq!(xml[1]["label"], "");
        let geo = parse_media(
            "g.geojson",
            br#"{"type":"FeatureCollection","features":[{"type":"Feature","id":"w1","geometry":{"type":"Point","coordinates":[-79.5,8.9]},"properties":{"title":"Pozo"}}]}"#,
        )
        .unwrap();
        assert_eq!(geo[0]["name"], "w1");
        assert_eq!(geo[0]["label"], "Pozo");
        assert_eq!(geo[0]["geometry"], "8.9 -79.5 0 0");
    }

    #[test]
    fn a_broken_file_is_an_error_that_names_it_and_not_its_content() {
        for (name, bytes) in [
            ("p.csv", &b"name,label\n\xff\xfe,secret\n"[..]),
            ("c.xml", b"<root><item><name>secret</name></item>"),
            ("g.geojson", b"{\"type\":\"Feature\",\"title\":\"secret\"}"),
            ("x.txt", b"secret"),
        ] {
            let e = parse_media(name, bytes).unwrap_err();
            assert_eq!(e.file, name);
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        assert!(!is_media_name("../etc/passwd.csv"));
        assert!(!is_media_name("places.exe"));
        assert!(is_media_name("places.csv"));
    }
}
