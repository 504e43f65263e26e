//! The GeoJSON export (RFC 7946): a FeatureCollection written feature by feature, one Feature
//! per submission whose chosen geopoint holds a valid point (`[longitude, latitude]`, with the
//! altitude when there is one), its `id` the submission's document id and its properties the
//! main table's columns (header → value: numbers as numbers, empty cells as `null`).

use std::io::{BufWriter, Write};

use serde_json::Value;
use tejido_core::form::QuestionType;

use super::table::{point_of, recycle, Cell, Col, Layout};
use super::{Answer, ExportError, ExportRow, ExportSummary};

/// The node of the geopoint that places features: the one asked for (by name or path), or the
/// form's first geopoint outside repeats.
fn geopoint_node(layout: &Layout<'_>, wanted: Option<&str>) -> Result<usize, ExportError> {
    let candidates = layout.tables[0].cols.iter().filter_map(|c| match c {
        Col::Question { node, kind: QuestionType::Geopoint | QuestionType::StartGeopoint, .. } => Some(*node),
        _ => None,
    });
    match wanted {
        Some(w) => {
            let w = w.trim();
            candidates
                .into_iter()
                .find(|&i| layout.form.nodes.get(i).is_some_and(|n| n.path == w || n.name == w))
                .ok_or_else(|| ExportError::NotAGeopoint(w.to_owned()))
        }
        None => {
            let all: Vec<usize> = candidates.collect();
            all.iter()
                .copied()
                .find(|&i| layout.form.nodes.get(i).is_some_and(|n| n.kind == QuestionType::Geopoint))
                .or_else(|| all.first().copied())
                .ok_or(ExportError::NoGeopoint)
        }
    }
}

/// Property names: the main table's headers, made unique (labels may repeat).
fn property_names(headers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(headers.len());
    for h in headers {
        let mut name = h.clone();
        let mut n = 2;
        while out.contains(&name) {
            name = format!("{h} ({n})");
            n += 1;
        }
        out.push(name);
    }
    out
}

fn json_number(text: &str, f: f64) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    serde_json::Number::from_f64(f).map(Value::Number).unwrap_or_else(|| Value::from(text))
}

pub(super) fn write<W, I>(
    layout: &Layout<'_>,
    geopoint: Option<&str>,
    rows: I,
    out: W,
) -> Result<ExportSummary, ExportError>
where
    W: Write,
    I: Iterator<Item = Result<ExportRow, ExportError>>,
{
    let node = geopoint_node(layout, geopoint)?;
    let path = layout.form.nodes.get(node).map(|n| n.path.as_str()).unwrap_or_default();
    let names = property_names(&layout.tables[0].headers);
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    out.write_all(b"{\"type\":\"FeatureCollection\",\"features\":[")?;
    let mut summary = ExportSummary::default();
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let mut values_spare: Vec<Option<Answer<'static>>> = Vec::new();
    for row in rows {
        let row = row?;
        summary.submissions += 1;
        let Some((lat, lon, alt)) = row.answers.get(path).and_then(point_of) else { continue };
        let mut cells = recycle(std::mem::take(&mut spare));
        let mut values = recycle(std::mem::take(&mut values_spare));
        if summary.features > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"\n{\"type\":\"Feature\",\"id\":")?;
        serde_json::to_writer(&mut out, &row.doc.to_string()).map_err(std::io::Error::from)?;
        let mut coordinates = vec![lon, lat];
        coordinates.extend(alt);
        out.write_all(b",\"geometry\":")?;
        let geometry = serde_json::json!({"type": "Point", "coordinates": coordinates});
        serde_json::to_writer(&mut out, &geometry).map_err(std::io::Error::from)?;
        out.write_all(b",\"properties\":{")?;
        layout.main_cells(&row, &mut values, &mut cells);
        for (i, (name, cell)) in names.iter().zip(&cells).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut out, name).map_err(std::io::Error::from)?;
            out.write_all(b":")?;
            let value = match cell {
                Cell::Empty => Value::Null,
                Cell::Number(t, f) => json_number(t, *f),
                Cell::Json(n) => serde_json::from_str(n).unwrap_or_else(|_| Value::String((*n).to_owned())),
                Cell::Uuid(u) => Value::String(u.to_string()),
                Cell::Text(t) => Value::String(t.to_string()),
            };
            serde_json::to_writer(&mut out, &value).map_err(std::io::Error::from)?;
        }
        out.write_all(b"}}")?;
        summary.features += 1;
        spare = recycle(cells);
        values_spare = recycle(values);
    }
    out.write_all(b"\n]}\n")?;
    out.flush()?;
    Ok(summary)
}
