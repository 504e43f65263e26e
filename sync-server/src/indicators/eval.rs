//! Reading a submission's current state: values of a question (in every live repeat row, or in
//! one row), conditions, measures and the categories of a dimension. A value of an unexpected
//! type is missing; nothing here panics.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::def::{Cond, DimSource, Dimension, KindDef, Measure, Question, Seg};

type Sub = BTreeMap<String, Value>;

const ROW_MARKER: &str = "_row";

/// A tombstoned submission: `_deleted` is `true` or `{"deleted": true, …}`.
pub(crate) fn is_deleted(sub: &Sub) -> bool {
    match sub.get("_deleted") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(o)) => o.get("deleted").and_then(Value::as_bool).unwrap_or(false),
        _ => false,
    }
}

/// Filled against this form (or does not say).
pub(crate) fn is_form(sub: &Sub, form_id: &str) -> bool {
    match sub.get("_form") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s == form_id,
        Some(_) => false,
    }
}

/// The answers of a question: the one value outside repeats, or one per live row (a row whose
/// `_row` marker is `true`, and whose enclosing rows are live too).
fn values<'a>(q: &Question, sub: &'a Sub) -> Vec<&'a Value> {
    matches(&q.pattern, sub).into_iter().map(|(_, v)| v).collect()
}

/// Field values whose path fits a pattern, with the path up to the last row id of each.
fn matches<'a>(pattern: &[Seg], sub: &'a Sub) -> Vec<(String, &'a Value)> {
    let first_row = pattern.iter().position(|s| *s == Seg::Row);
    let lits = |segs: &[Seg]| -> Vec<String> {
        segs.iter()
            .filter_map(|s| match s {
                Seg::Lit(l) => Some(l.clone()),
                Seg::Row => None,
            })
            .collect()
    };
    let Some(first_row) = first_row else {
        let path = lits(pattern).join("/");
        return sub.get(&path).map(|v| vec![(String::new(), v)]).unwrap_or_default();
    };
    let prefix = format!("{}/", lits(&pattern[..first_row]).join("/"));
    let rest = &pattern[first_row..];
    let mut out = Vec::new();
    for (key, value) in sub.range(prefix.clone()..) {
        let Some(tail) = key.strip_prefix(prefix.as_str()) else { break };
        let segs: Vec<&str> = tail.split('/').collect();
        if segs.len() != rest.len() {
            continue;
        }
        let mut row_prefix = prefix.trim_end_matches('/').to_owned();
        let mut ok = true;
        let mut last_row = String::new();
        for (seg, pat) in segs.iter().zip(rest) {
            match pat {
                Seg::Lit(l) if l == seg => {}
                Seg::Lit(_) => {
                    ok = false;
                    break;
                }
                Seg::Row => {
                    if seg.is_empty() || seg.starts_with('_') {
                        ok = false;
                        break;
                    }
                }
            }
            row_prefix.push('/');
            row_prefix.push_str(seg);
            if *pat == Seg::Row {
                let marker = format!("{row_prefix}/{ROW_MARKER}");
                if sub.get(&marker) != Some(&Value::Bool(true)) {
                    ok = false;
                    break;
                }
                last_row = row_prefix.clone();
            }
        }
        if ok {
            out.push((last_row, value));
        }
    }
    out
}

/// The live rows of the repeat around a question, in key order (the order rows were added:
/// row ids are UUIDv7).
fn rows(q: &Question, sub: &Sub) -> Vec<String> {
    let Some(last) = q.pattern.iter().rposition(|s| *s == Seg::Row) else { return Vec::new() };
    let mut pattern = q.pattern[..=last].to_vec();
    pattern.push(Seg::Lit(ROW_MARKER.to_owned()));
    matches(&pattern, sub).into_iter().map(|(p, _)| p).collect()
}

/// Where a condition is read: the whole submission, or one row of a repeat.
#[derive(Clone, Copy)]
struct Scope<'s> {
    row: Option<(usize, &'s str)>,
}

fn scoped<'a>(q: &Question, sub: &'a Sub, scope: Scope<'_>) -> Vec<&'a Value> {
    match scope.row {
        Some((repeat, prefix)) if q.repeat == Some(repeat) => {
            sub.get(&format!("{prefix}/{}", q.rest)).into_iter().collect()
        }
        _ => values(q, sub),
    }
}

/// The choice names (or, for other questions, the text) a value holds.
fn tokens(q: &Question, v: &Value) -> Vec<String> {
    let split = q.kind.is_select();
    match v {
        Value::String(s) if split => s.split_whitespace().map(str::to_owned).collect(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Vec::new()
            } else {
                vec![t.to_owned()]
            }
        }
        Value::Number(n) => number_text(n).into_iter().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => number_text(n),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn number_text(n: &serde_json::Number) -> Option<String> {
    if n.is_i64() || n.is_u64() {
        return Some(n.to_string());
    }
    let f = n.as_f64()?;
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Some(format!("{}", f as i64))
    } else {
        Some(n.to_string())
    }
}

/// A value as a number: JSON numbers and numeric text, finite only.
fn number(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    f.is_finite().then_some(f)
}

fn answered(q: &Question, v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::String(_) | Value::Array(_) => !tokens(q, v).is_empty(),
        _ => false,
    }
}

fn holds(c: &Cond, sub: &Sub, scope: Scope<'_>) -> bool {
    match c {
        Cond::In(q, set) => {
            scoped(q, sub, scope).iter().any(|v| tokens(q, v).iter().any(|t| set.contains(t)))
        }
        Cond::Answered(q, want) => scoped(q, sub, scope).iter().any(|v| answered(q, v)) == *want,
        Cond::Range(q, min, max) => scoped(q, sub, scope)
            .iter()
            .filter_map(|v| number(v))
            .any(|x| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m)),
        Cond::All(cs) => cs.iter().all(|c| holds(c, sub, scope)),
        Cond::Any(cs) => cs.iter().any(|c| holds(c, sub, scope)),
        Cond::Not(c) => !holds(c, sub, scope),
    }
}

const WHOLE: Scope<'static> = Scope { row: None };

/// Non-negative numbers of these questions, summed, and whether any was answered.
fn sum(qs: &[Question], sub: &Sub) -> (f64, bool) {
    let mut total = 0.0;
    let mut any = false;
    for q in qs {
        for x in values(q, sub).into_iter().filter_map(number) {
            if x >= 0.0 {
                total += x;
                any = true;
            }
        }
    }
    (total, any)
}

fn measure(m: &Measure, sub: &Sub) -> f64 {
    match m {
        Measure::Sum(qs) => sum(qs, sub).0,
        Measure::CountSelected(q, set) => values(q, sub)
            .into_iter()
            .map(|v| {
                tokens(q, v).into_iter().filter(|t| set.contains(t)).collect::<BTreeSet<_>>().len() as f64
            })
            .sum(),
        Measure::If(c) => {
            if holds(c, sub, WHOLE) {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// What one submission adds to an indicator's cells: `num` to the numerator of every cell it
/// falls in (and one to its denominator), and for a sum, each field group's part.
pub(crate) struct Contribution {
    pub num: f64,
    /// (field key, its sum, whether any of its questions was answered).
    pub fields: Vec<(String, f64, bool)>,
}

/// `None` when the submission is outside the indicator's denominator (or filter).
pub(crate) fn contribution(kind: &KindDef, sub: &Sub) -> Option<Contribution> {
    let plain = |num: f64| Some(Contribution { num, fields: Vec::new() });
    match kind {
        KindDef::Proportion { numerator, denominator } => {
            if !holds(denominator, sub, WHOLE) {
                return None;
            }
            plain(if holds(numerator, sub, WHOLE) { 1.0 } else { 0.0 })
        }
        KindDef::Rate { numerator, denominator, .. } => {
            if !holds(denominator, sub, WHOLE) {
                return None;
            }
            plain(measure(numerator, sub))
        }
        KindDef::Count { filter } => {
            if filter.as_ref().is_some_and(|f| !holds(f, sub, WHOLE)) {
                return None;
            }
            plain(1.0)
        }
        KindDef::Sum { filter, fields } => {
            if filter.as_ref().is_some_and(|f| !holds(f, sub, WHOLE)) {
                return None;
            }
            let fields: Vec<(String, f64, bool)> = fields
                .iter()
                .map(|f| {
                    let (s, any) = sum(&f.questions, sub);
                    (f.key.clone(), s, any)
                })
                .collect();
            let num = fields.iter().map(|f| f.1).sum();
            Some(Contribution { num, fields })
        }
    }
}

/// `(year, month)` of a date or date-time written `YYYY-MM…`.
pub(crate) fn parse_month(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    let head = s.get(0..7)?;
    let (y, m) = head.split_once('-')?;
    if y.len() != 4
        || m.len() != 2
        || !y.bytes().all(|b| b.is_ascii_digit())
        || !m.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if s.len() > 7 && s.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    ((1..=12).contains(&m) && y >= 1).then_some((y, m))
}

/// The categories (keys) a submission falls in for a dimension: none when the value is missing
/// or fits no category, several for a select_multiple.
pub(crate) fn categories(d: &Dimension, sub: &Sub) -> Vec<String> {
    let q = match &d.source {
        DimSource::Choice(q) | DimSource::Bands(q, _) | DimSource::Month(q) => q,
    };
    let picked: Vec<&Value> = match (&d.row_where, q.repeat) {
        (Some(cond), Some(repeat)) => {
            let chosen = rows(q, sub)
                .into_iter()
                .find(|prefix| holds(cond, sub, Scope { row: Some((repeat, prefix.as_str())) }));
            match chosen {
                Some(prefix) => sub.get(&format!("{prefix}/{}", q.rest)).into_iter().collect(),
                None => Vec::new(),
            }
        }
        (_, Some(_)) => Vec::new(),
        _ => values(q, sub),
    };
    let Some(v) = picked.first() else { return Vec::new() };
    match &d.source {
        DimSource::Choice(q) => {
            let toks = tokens(q, v);
            if !d.multi && toks.len() != 1 {
                return Vec::new();
            }
            let known: BTreeSet<String> =
                toks.into_iter().filter(|t| d.categories.iter().any(|(k, _)| k == t)).collect();
            known.into_iter().collect()
        }
        DimSource::Bands(_, bands) => match number(v) {
            Some(x) => {
                bands.iter().find(|b| x >= b.min && x < b.below).map(|b| b.key.clone()).into_iter().collect()
            }
            None => Vec::new(),
        },
        DimSource::Month(_) => match v.as_str().and_then(parse_month) {
            Some((y, m)) => vec![format!("{y:04}-{m:02}")],
            None => Vec::new(),
        },
    }
}
