//! The observatory's indicators, declared per form in a small JSON file beside it
//! (`examples/forms/<form>.indicators.json`; the format and every definition are in
//! `docs/indicators.md`), computed over the current state of a form's submissions.
//!
//! Pure: no storage, no I/O. The caller hands each submission as the map from field path to
//! winning value that the read model keeps (`district`, `group/question`,
//! `repeat/<row>/question`, metadata fields starting with `_`).
//!
//! - [`IndicatorSet::from_json`] reads a definition and checks every question and choice it names
//!   against the [`Form`], naming the JSON path of anything wrong.
//! - [`IndicatorSet::compute`] gives one [`IndicatorTable`] per indicator and breakdown, with
//!   Wilson 95% intervals for proportions and small cells suppressed.
//! - [`svg::bar_chart`] draws a table as a self-contained SVG.
//!
//! Nothing here panics on any input: a value of an unexpected type counts as missing, and no
//! error message ever quotes a survey answer.

mod def;
mod eval;
pub mod stats;
pub mod svg;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use tejido_core::form::Form;

pub use def::DefinitionError;
use def::{Breakdown, DimSource, IndicatorDef, KindDef};
pub use stats::{wilson, Interval};

/// Text in Spanish (the observatories' language) and English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Text {
    pub es: String,
    pub en: String,
}

impl Text {
    /// The same text in both languages.
    pub fn both(text: &str) -> Text {
        Text { es: text.to_owned(), en: text.to_owned() }
    }

    /// The text in a language: English for `en…`, Spanish otherwise.
    pub fn get(&self, lang: &str) -> &str {
        if lang.trim().to_ascii_lowercase().starts_with("en") {
            &self.en
        } else {
            &self.es
        }
    }
}

/// What an indicator measures, and so what a row's estimate means.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// numerator / denominator, a share in [0, 1], with a Wilson interval.
    Proportion,
    /// sum of a measure / denominator × `per` (incidents per 100 respondents).
    Rate { per: f64 },
    /// Submissions (matching a condition) in each cell.
    Count,
    /// Sum of numeric answers in each cell.
    Sum,
}

/// One cell of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorRow {
    /// The category's code: a choice name, an age band (`15_29`), a month (`2026-03`), a field
    /// group's key, or `total`.
    pub key: String,
    pub label: Text,
    /// Proportion: submissions meeting the numerator; rate: the measure summed; count: the
    /// count; sum: the sum. `None` when suppressed.
    pub numerator: Option<f64>,
    /// Submissions in the cell (those meeting the denominator for proportions and rates).
    /// `None` when suppressed.
    pub denominator: Option<u64>,
    /// The indicator's value: a share in [0, 1], a rate per `per`, a count or a sum. `None`
    /// when suppressed or when the denominator is 0.
    pub estimate: Option<f64>,
    /// The Wilson 95% interval of a proportion.
    pub ci: Option<Interval>,
    /// Hidden because the cell has fewer than `min_cell` submissions (or to protect such a cell
    /// from being worked out by subtraction).
    pub suppressed: bool,
}

/// One indicator broken down by one dimension: the table behind one chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorTable {
    /// `<indicator>.<dimension>`, e.g. `victimization_prevalence.sex`.
    pub id: String,
    pub indicator: String,
    pub title: Text,
    pub description: Option<Text>,
    #[serde(flatten)]
    pub kind: Kind,
    /// `total`, `fields`, or a dimension id of the definition (`sex`, `age_band`, `district`,
    /// `month`, `topic`…).
    pub dimension: String,
    pub dimension_label: Text,
    /// A submission may fall in several cells (a select_multiple dimension such as topics):
    /// the cells do not add up to the total.
    pub overlapping: bool,
    pub rows: Vec<IndicatorRow>,
    /// The suppression threshold the table was computed with (0 when the indicator is not
    /// suppressed).
    pub min_cell: u64,
}

/// A form's indicators, checked against the form.
#[derive(Debug, Clone)]
pub struct IndicatorSet {
    form_id: String,
    description: Option<Text>,
    dimensions: Vec<def::Dimension>,
    indicators: Vec<IndicatorDef>,
}

/// Running totals of one cell.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    num: f64,
    den: u64,
}

/// How many months a month breakdown fills in between the first and the last it saw.
const MAX_FILLED_MONTHS: i64 = 240;

impl IndicatorSet {
    /// Reads a definition file and checks it against the form.
    pub fn from_json(text: &str, form: &Form) -> Result<IndicatorSet, DefinitionError> {
        let p = def::parse(text, form)?;
        Ok(IndicatorSet {
            form_id: form.settings.form_id.clone(),
            description: p.description,
            dimensions: p.dimensions,
            indicators: p.indicators,
        })
    }

    /// The form the set was checked against.
    pub fn form_id(&self) -> &str {
        &self.form_id
    }

    /// The definition's own description, if it has one.
    pub fn description(&self) -> Option<&Text> {
        self.description.as_ref()
    }

    /// The ids of the indicators, in the definition's order.
    pub fn indicator_ids(&self) -> impl Iterator<Item = &str> {
        self.indicators.iter().map(|i| i.id.as_str())
    }

    /// Computes every table in one pass over the submissions. Deleted submissions and those of
    /// another form (by `_form`, when present) are left out. Cells with fewer than `min_cell`
    /// submissions are suppressed (see `docs/indicators.md`).
    pub fn compute<I>(&self, submissions: I, min_cell: u64) -> Vec<IndicatorTable>
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<BTreeMap<String, Value>>,
    {
        // acc[indicator][breakdown]: category key -> totals.
        let mut acc: Vec<Vec<HashMap<String, Acc>>> =
            self.indicators.iter().map(|i| vec![HashMap::new(); i.by.len()]).collect();
        let mut months: Vec<std::collections::BTreeSet<String>> =
            vec![Default::default(); self.dimensions.len()];
        for sub in submissions {
            let sub: &BTreeMap<String, Value> = std::borrow::Borrow::borrow(&sub);
            if eval::is_deleted(sub) || !eval::is_form(sub, &self.form_id) {
                continue;
            }
            let cats: Vec<Vec<String>> = self.dimensions.iter().map(|d| eval::categories(d, sub)).collect();
            for (i, d) in self.dimensions.iter().enumerate() {
                if matches!(d.source, DimSource::Month(_)) {
                    months[i].extend(cats[i].iter().cloned());
                }
            }
            for (ind, acc) in self.indicators.iter().zip(acc.iter_mut()) {
                let Some(contribution) = eval::contribution(&ind.kind, sub) else { continue };
                for (b, cells) in ind.by.iter().zip(acc.iter_mut()) {
                    match b {
                        Breakdown::Total => add(cells, "total", contribution.num, 1),
                        Breakdown::Fields => {
                            for (key, value, counted) in &contribution.fields {
                                if *counted {
                                    add(cells, key, *value, 1);
                                }
                            }
                        }
                        Breakdown::Dim(d) => {
                            for c in cats.get(*d).into_iter().flatten() {
                                add(cells, c, contribution.num, 1);
                            }
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (ind, acc) in self.indicators.iter().zip(acc) {
            for (b, cells) in ind.by.iter().zip(acc) {
                out.push(self.table(ind, b, &cells, &months, min_cell));
            }
        }
        out
    }

    fn table(
        &self,
        ind: &IndicatorDef,
        b: &Breakdown,
        cells: &HashMap<String, Acc>,
        months: &[std::collections::BTreeSet<String>],
        min_cell: u64,
    ) -> IndicatorTable {
        let (dimension, dimension_label, categories, overlapping, partition) = match b {
            Breakdown::Total => (
                "total".to_owned(),
                Text::both("Total"),
                vec![("total".to_owned(), Text::both("Total"))],
                false,
                false,
            ),
            Breakdown::Fields => {
                let cats = match &ind.kind {
                    KindDef::Sum { fields, .. } => {
                        fields.iter().map(|f| (f.key.clone(), f.label.clone())).collect()
                    }
                    _ => Vec::new(),
                };
                (
                    "fields".to_owned(),
                    Text { es: "Grupo".to_owned(), en: "Group".to_owned() },
                    cats,
                    false,
                    false,
                )
            }
            Breakdown::Dim(i) => {
                let d = &self.dimensions[*i];
                let cats = match &d.source {
                    DimSource::Month(_) => month_categories(&months[*i]),
                    _ => d.categories.clone(),
                };
                (d.id.clone(), d.label.clone(), cats, d.multi, !d.multi)
            }
        };
        let kind = ind.kind.public();
        let threshold = if ind.suppress { min_cell } else { 0 };
        let mut rows: Vec<IndicatorRow> = categories
            .into_iter()
            .map(|(key, label)| {
                let a = cells.get(&key).copied().unwrap_or_default();
                let (estimate, ci) = match kind {
                    Kind::Proportion if a.den > 0 => {
                        let x = a.num.max(0.0) as u64;
                        (Some(a.num / a.den as f64), wilson(x, a.den))
                    }
                    Kind::Rate { per } if a.den > 0 => (Some(a.num / a.den as f64 * per), None),
                    Kind::Proportion | Kind::Rate { .. } => (None, None),
                    Kind::Count | Kind::Sum => (Some(a.num), None),
                };
                IndicatorRow {
                    key,
                    label,
                    numerator: Some(a.num),
                    denominator: Some(a.den),
                    estimate,
                    ci,
                    suppressed: a.den > 0 && a.den < threshold,
                }
            })
            .collect();
        if partition && threshold > 0 {
            complementary_suppression(&mut rows);
        }
        for r in rows.iter_mut().filter(|r| r.suppressed) {
            r.numerator = None;
            r.denominator = None;
            r.estimate = None;
            r.ci = None;
        }
        IndicatorTable {
            id: format!("{}.{}", ind.id, dimension),
            indicator: ind.id.clone(),
            title: ind.title.clone(),
            description: ind.description.clone(),
            kind,
            dimension,
            dimension_label,
            overlapping,
            rows,
            min_cell: threshold,
        }
    }
}

fn add(cells: &mut HashMap<String, Acc>, key: &str, num: f64, den: u64) {
    let a = cells.entry(key.to_owned()).or_default();
    a.num += num;
    a.den = a.den.saturating_add(den);
}

/// When exactly one cell of a table whose cells partition the submissions is suppressed, the
/// total minus the others would give it away: the smallest other non-empty cell is suppressed
/// too.
fn complementary_suppression(rows: &mut [IndicatorRow]) {
    if rows.iter().filter(|r| r.suppressed).count() != 1 {
        return;
    }
    let next = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.suppressed && r.denominator.unwrap_or(0) > 0)
        .min_by_key(|(_, r)| r.denominator.unwrap_or(0))
        .map(|(i, _)| i);
    if let Some(i) = next {
        rows[i].suppressed = true;
    }
}

const MONTHS_ES: [&str; 12] =
    ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"];
const MONTHS_EN: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The months seen, with the months between them filled in (when the span is not absurd).
fn month_categories(seen: &std::collections::BTreeSet<String>) -> Vec<(String, Text)> {
    let parsed: Vec<(i64, i64)> = seen.iter().filter_map(|m| eval::parse_month(m)).collect();
    let span = match (parsed.first(), parsed.last()) {
        (Some(&(y0, m0)), Some(&(y1, m1))) => (y1 * 12 + m1) - (y0 * 12 + m0),
        _ => return Vec::new(),
    };
    let list: Vec<(i64, i64)> = if span <= MAX_FILLED_MONTHS {
        let start = parsed[0].0 * 12 + parsed[0].1 - 1;
        (0..=span).map(|k| ((start + k) / 12, (start + k) % 12 + 1)).collect()
    } else {
        parsed
    };
    list.into_iter()
        .map(|(y, m)| {
            let i = (m - 1).clamp(0, 11) as usize;
            (
                format!("{y:04}-{m:02}"),
                Text { es: format!("{} {y}", MONTHS_ES[i]), en: format!("{} {y}", MONTHS_EN[i]) },
            )
        })
        .collect()
}
