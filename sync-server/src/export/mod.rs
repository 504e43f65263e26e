//! Streaming exports of a form's submissions: a zip of CSV files (one per table, joined by
//! keys, as ODK Briefcase and Central do), an XLSX workbook (one worksheet per table, written in
//! rust_xlsxwriter's constant-memory mode) and a GeoJSON FeatureCollection.
//!
//! The caller hands [`export`] the form, its submissions as an iterator (read page by page from
//! the database: nothing here collects them) and an `impl Write`. Memory stays bounded by one
//! submission and the tables' current rows whatever the number of submissions: the main CSV is
//! written straight into the zip, each repeat's CSV into an anonymous temporary file appended to
//! the zip at the end, and every XLSX worksheet to its own temporary file (constant-memory mode).
//!
//! # Tables and columns
//!
//! - The **main table** (`<form_id>.csv`, the first worksheet): `KEY` (the submission's document
//!   id), one column per question outside repeats in form order, then `SubmissionDate` (received,
//!   RFC 3339 UTC), `Device` (the author device's label), `ReviewState` and `FormVersion`.
//! - One **table per repeat** (`<form_id>-<repeat name>.csv`, a worksheet named after the repeat),
//!   nested repeats included: `PARENT_KEY`, `KEY`, the repeat's own questions (not those of
//!   repeats inside it, which have their own table), then `ROW_ID` (the row's UUID, by which
//!   Tejido addresses it). A row's `KEY` is `<PARENT_KEY>/<repeat name>[<n>]`, `n` counting the
//!   parent's rows of that repeat from 1 in row order (groups between repeats are skipped), as ODK
//!   does; the `PARENT_KEY` of a top-level repeat's row is the submission's `KEY`.
//! - Question headers (in [`Headers::Names`]) are the question's path from its table, groups
//!   included, joined by `-` (`survey-location-district`); in [`Headers::Labels`], its label in
//!   the chosen language. A geopoint takes four columns, `-Latitude`, `-Longitude`, `-Altitude`,
//!   `-Accuracy`. Notes, groups and repeats take none.
//!
//! # Values
//!
//! Answers are written as the device wrote them: numbers as numbers, a select_multiple as its
//! space-separated choice names (in labels mode, its choice labels joined by `; `), a select_one
//! as its choice name (or label), an attachment as its `sha256:<hex>` reference, dates as their
//! ISO text. A value of an unexpected type is written as its JSON text; nothing panics on any
//! answer. Errors never quote an answer.
//!
//! # Formula injection
//!
//! Values are untrusted. In CSV files, a text cell that starts with `=`, `+`, `-`, `@`, a tab or
//! a carriage return, and is not a plain number, gets a leading `'` so that a spreadsheet opening
//! the file shows it as text instead of running it as a formula (OWASP's "CSV Injection"
//! advice). XLSX cells are typed strings, which spreadsheets never evaluate, and GeoJSON values
//! are JSON strings: neither needs the prefix.

mod answers;
mod csv_zip;
mod geojson;
mod table;
mod xlsx;

#[cfg(test)]
mod tests;

use std::io::Write;

use tejido_core::form::Form;
use uuid::Uuid;

pub use answers::{Answer, Answers};
pub use table::escape_formula;

/// What a submission carries besides its answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportMeta {
    /// The label of the device that created it.
    pub author: Option<String>,
    /// When the server received it (milliseconds since the Unix epoch).
    pub received_ms: i64,
    /// The coordinator's review state (`approved`, `has_issues`), if any.
    pub review_state: Option<String>,
    /// The form version it was filled against.
    pub form_version: Option<String>,
}

/// One submission to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportRow {
    pub doc: Uuid,
    pub meta: ExportMeta,
    /// Field path to winning value, as the device wrote it: top-level questions by their
    /// `Node::path`, repeat rows as `repeat/<row>/question` with a `repeat/<row>/_row` marker
    /// (`true` while the row exists), nested repeats nesting the same way. Fields starting with
    /// `_` and fields the form does not know are ignored.
    pub answers: Answers,
}

/// What the header row names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Headers {
    /// Question paths (`survey-location-district`), choice names.
    #[default]
    Names,
    /// Question labels and choice labels in the chosen language.
    Labels,
}

/// The output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// A zip of CSV files, one per table.
    #[default]
    CsvZip,
    /// An XLSX workbook, one worksheet per table.
    Xlsx,
    /// A GeoJSON FeatureCollection, one Feature per submission with a point.
    GeoJson,
}

impl Format {
    /// `csv`, `xlsx` or `geojson`, as the CLI and the API name it.
    pub fn parse(name: &str) -> Option<Format> {
        match name.trim().to_ascii_lowercase().as_str() {
            "csv" | "zip" | "csv.zip" => Some(Format::CsvZip),
            "xlsx" => Some(Format::Xlsx),
            "geojson" | "json" => Some(Format::GeoJson),
            _ => None,
        }
    }

    /// The HTTP content type of the output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::CsvZip => "application/zip",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::GeoJson => "application/geo+json",
        }
    }

    /// The file extension of the output (without a dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::CsvZip => "zip",
            Format::Xlsx => "xlsx",
            Format::GeoJson => "geojson",
        }
    }

    /// A file name for the export of `form`: `<form_id>.zip`, `.xlsx`, `.geojson`.
    pub fn file_name(self, form: &Form) -> String {
        format!("{}.{}", table::safe_file_stem(&form.settings.form_id), self.extension())
    }
}

/// How to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub format: Format,
    pub headers: Headers,
    /// The language of labels: a form's language key (`Español (es)`), code (`es`) or name;
    /// `None` for the form's default language.
    pub lang: Option<String>,
    /// GeoJSON only: the geopoint question (name or path) that places each feature; by default
    /// the form's first geopoint outside repeats.
    pub geopoint: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Submissions read from the source.
    pub submissions: u64,
    /// Rows written to repeat tables (CSV and XLSX).
    pub repeat_rows: u64,
    /// GeoJSON: features written (submissions with a valid point).
    pub features: u64,
}

/// Why an export failed. Messages name files, sheets and questions, never an answer.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the workbook: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("reading the submissions: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("the form has no geopoint question outside repeats to place features")]
    NoGeopoint,
    #[error("{0:?} is not a geopoint question of the form outside repeats")]
    NotAGeopoint(String),
    #[error("worksheet {sheet:?} would pass the 1,048,576 rows an XLSX worksheet holds")]
    TooManyRows { sheet: String },
}

/// Exports `rows`, submissions of `form`, to `out` in the format `options` chose, reading the
/// rows one at a time. A row the source fails to read stops the export with
/// [`ExportError::Source`]. The writer gets a complete file only when this returns `Ok`.
///
/// Runs synchronously: from async code, call it in `spawn_blocking` with a writer that forwards
/// its bytes through a bounded channel.
pub fn export<I, E, W>(
    form: &Form,
    rows: I,
    options: &ExportOptions,
    out: W,
) -> Result<ExportSummary, ExportError>
where
    I: IntoIterator<Item = Result<ExportRow, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    W: Write + Send,
{
    let layout = table::Layout::new(form, options);
    let rows = rows.into_iter().map(|r| r.map_err(|e| ExportError::Source(e.into())));
    match options.format {
        Format::CsvZip => csv_zip::write(&layout, rows, out),
        Format::Xlsx => xlsx::write(&layout, rows, out),
        Format::GeoJson => geojson::write(&layout, options.geopoint.as_deref(), rows, out),
    }
}
