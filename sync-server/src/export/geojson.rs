//! The GeoJSON export (RFC 7946): a FeatureCollection written feature by feature, one Feature
//! per submission whose chosen geopoint holds a valid point (`[longitude, latitude]`, with the
//! altitude when there is one), its `id` the submission's document id and its properties the
//! main table's columns (header → value: numbers as numbers, empty cells as `null`).

use std::io::{BufWriter, Write};

use serde_json::Value;
use tejido_core::form::QuestionType;

use super::table::{point_of, rfc3339_ms, Cell, Col, Layout, RowSink, Scratch};
use super::{ExportError, ExportRow, ExportSummary};

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

fn json_number(text: &str) -> Value {
    let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) else {
        return Value::String(text.to_owned());
    };
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::from(u);
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
    let mut scratch = Scratch::default();
    for row in rows {
        let row = row?;
        summary.submissions += 1;
        let Some((lat, lon, alt)) = row.answers.get(path).and_then(point_of) else { continue };
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
        let mut sink = Properties { out: &mut out, names: &names, col: 0, err: None };
        layout.write_submission(&row, &mut scratch, &mut sink, false)?;
        out.write_all(b"}}")?;
        summary.features += 1;
    }
    out.write_all(b"\n]}\n")?;
    out.flush()?;
    Ok(summary)
}

/// Writes the main table's cells as a feature's properties, `"header":value`.
struct Properties<'a, W: Write> {
    out: &'a mut W,
    names: &'a [String],
    col: usize,
    err: Option<std::io::Error>,
}

impl<W: Write> Properties<'_, W> {
    fn put(&mut self, cell: Cell<'_>) -> std::io::Result<()> {
        let Some(name) = self.names.get(self.col) else { return Ok(()) };
        if self.col > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *self.out, name)?;
        self.out.write_all(b":")?;
        let value = match cell {
            Cell::Empty => Value::Null,
            Cell::Number(t) => json_number(&t),
            Cell::Uuid(u) => Value::String(u.to_string()),
            Cell::Time(ms) => rfc3339_ms(ms).map_or(Value::Null, Value::String),
            Cell::Text(t) => Value::String(t.into_owned()),
        };
        serde_json::to_writer(&mut *self.out, &value)?;
        Ok(())
    }
}

impl<W: Write> RowSink for Properties<'_, W> {
    fn begin(&mut self, _table: usize) {
        self.col = 0;
    }

    fn cell(&mut self, cell: Cell<'_>) {
        if self.err.is_none() {
            if let Err(e) = self.put(cell) {
                self.err = Some(e);
            }
        }
        self.col += 1;
    }

    fn end(&mut self) -> Result<(), ExportError> {
        match self.err.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
