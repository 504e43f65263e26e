//! The definition file: read by hand from JSON (so every error names its JSON path) and checked
//! against the form, into the compiled shapes [`super::eval`] runs.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use tejido_core::form::{model::translate, Form, QuestionType};

use super::{Kind, Text};

/// A definition that cannot be used: where (a JSON path such as
/// `$.indicators[2].numerator.question`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    pub path: String,
    pub message: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, DefinitionError> {
    Err(DefinitionError { path: path.to_owned(), message: message.into() })
}

/// A question of the form, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    /// Its schema path (`survey/roster/member_age`).
    pub path: String,
    pub kind: QuestionType,
    /// The segments of its field paths: a row id follows every repeat.
    pub pattern: Vec<Seg>,
    /// The innermost repeat around it (index in `Form::nodes`).
    pub repeat: Option<usize>,
    /// The path below its innermost repeat's row (`member_age`).
    pub rest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Lit(String),
    Row,
}

#[derive(Debug, Clone)]
pub(crate) enum Cond {
    In(Question, BTreeSet<String>),
    Answered(Question, bool),
    Range(Question, Option<f64>, Option<f64>),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone)]
pub(crate) enum Measure {
    Sum(Vec<Question>),
    CountSelected(Question, BTreeSet<String>),
    If(Cond),
}

#[derive(Debug, Clone)]
pub(crate) struct Band {
    pub key: String,
    pub min: f64,
    /// Exclusive: the `max` written, plus one (so 29 takes in 29.5).
    pub below: f64,
}

#[derive(Debug, Clone)]
pub(crate) enum DimSource {
    Choice(Question),
    Bands(Question, Vec<Band>),
    Month(Question),
}

#[derive(Debug, Clone)]
pub(crate) struct Dimension {
    pub id: String,
    pub label: Text,
    pub source: DimSource,
    /// For a question inside a repeat: which row gives the submission's value.
    pub row_where: Option<Cond>,
    /// The categories in order (choices, bands; months are found while computing).
    pub categories: Vec<(String, Text)>,
    /// A submission may fall in several categories (select_multiple).
    pub multi: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub key: String,
    pub label: Text,
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone)]
pub(crate) enum KindDef {
    Proportion { numerator: Cond, denominator: Cond },
    Rate { numerator: Measure, denominator: Cond, per: f64 },
    Count { filter: Option<Cond> },
    Sum { filter: Option<Cond>, fields: Vec<Field> },
}

impl KindDef {
    pub fn public(&self) -> Kind {
        match self {
            KindDef::Proportion { .. } => Kind::Proportion,
            KindDef::Rate { per, .. } => Kind::Rate { per: *per },
            KindDef::Count { .. } => Kind::Count,
            KindDef::Sum { .. } => Kind::Sum,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Breakdown {
    Total,
    Fields,
    Dim(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct IndicatorDef {
    pub id: String,
    pub title: Text,
    pub description: Option<Text>,
    pub kind: KindDef,
    pub by: Vec<Breakdown>,
    pub suppress: bool,
}

/// Limits that keep a definition small.
const MAX_INDICATORS: usize = 200;
const MAX_DIMENSIONS: usize = 50;
const MAX_DEPTH: usize = 16;

struct Parser<'f> {
    form: &'f Form,
    es: String,
    en: String,
}

type Obj = Map<String, Value>;

pub(crate) struct Parsed {
    pub description: Option<Text>,
    pub dimensions: Vec<Dimension>,
    pub indicators: Vec<IndicatorDef>,
}

/// Parses and checks a definition.
pub(crate) fn parse(source: &str, form: &Form) -> Result<Parsed, DefinitionError> {
    let root: Value = match serde_json::from_str(source) {
        Ok(v) => v,
        Err(e) => return err("$", format!("not valid JSON: {e}")),
    };
    let p = Parser { form, es: form.language(Some("es")), en: form.language(Some("en")) };
    let obj = object(&root, "$")?;
    keys(obj, "$", &["form", "description", "dimensions", "indicators"])?;
    if let Some(f) = obj.get("form") {
        let Some(f) = f.as_str() else { return err("$.form", "must be the form's id, a string") };
        if f != form.settings.form_id {
            return err("$.form", format!("names form `{f}`, but the form is `{}`", form.settings.form_id));
        }
    }
    let description = obj.get("description").map(|d| text(d, "$.description")).transpose()?;
    let mut dimensions = Vec::new();
    if let Some(d) = obj.get("dimensions") {
        let d = object(d, "$.dimensions")?;
        if d.len() > MAX_DIMENSIONS {
            return err("$.dimensions", format!("at most {MAX_DIMENSIONS} dimensions"));
        }
        for (id, v) in d {
            let path = format!("$.dimensions.{id}");
            identifier(id, &path)?;
            if id == "total" || id == "fields" {
                return err(&path, format!("`{id}` is a built-in breakdown; name the dimension otherwise"));
            }
            dimensions.push(p.dimension(id, v, &path)?);
        }
    }
    let Some(list) = obj.get("indicators") else { return err("$", "missing `indicators`") };
    let Some(list) = list.as_array() else { return err("$.indicators", "must be a list") };
    if list.len() > MAX_INDICATORS {
        return err("$.indicators", format!("at most {MAX_INDICATORS} indicators"));
    }
    let mut indicators: Vec<IndicatorDef> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("$.indicators[{i}]");
        let ind = p.indicator(v, &path, &dimensions)?;
        if indicators.iter().any(|o| o.id == ind.id) {
            return err(&format!("{path}.id"), format!("`{}` is used by an earlier indicator", ind.id));
        }
        indicators.push(ind);
    }
    Ok(Parsed { description, dimensions, indicators })
}

fn object<'v>(v: &'v Value, path: &str) -> Result<&'v Obj, DefinitionError> {
    match v.as_object() {
        Some(o) => Ok(o),
        None => err(path, "must be an object"),
    }
}

fn keys(obj: &Obj, path: &str, allowed: &[&str]) -> Result<(), DefinitionError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return err(
                &format!("{path}.{k}"),
                format!("unknown key (expected one of: {})", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

fn string<'v>(obj: &'v Obj, key: &str, path: &str) -> Result<&'v str, DefinitionError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => err(&format!("{path}.{key}"), "must be a string"),
        None => err(path, format!("missing `{key}`")),
    }
}

fn number(v: &Value, path: &str) -> Result<f64, DefinitionError> {
    match v.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => err(path, "must be a number"),
    }
}

/// Ids name tables and chart elements: letters, digits, `_` and `-`.
fn identifier(id: &str, path: &str) -> Result<(), DefinitionError> {
    if id.is_empty()
        || id.len() > 64
        || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return err(path, "an id must be 1 to 64 letters, digits, `_` or `-`");
    }
    Ok(())
}

/// `{"es": …, "en": …}` (English defaults to the Spanish) or one string for both.
fn text(v: &Value, path: &str) -> Result<Text, DefinitionError> {
    match v {
        Value::String(s) => Ok(Text::both(s)),
        Value::Object(o) => {
            keys(o, path, &["es", "en"])?;
            let es = string(o, "es", path)?;
            let en = match o.get("en") {
                Some(_) => string(o, "en", path)?,
                None => es,
            };
            Ok(Text { es: es.to_owned(), en: en.to_owned() })
        }
        _ => err(path, "must be {\"es\": …, \"en\": …} or a string"),
    }
}

fn string_list(v: &Value, path: &str) -> Result<Vec<String>, DefinitionError> {
    let Some(a) = v.as_array() else { return err(path, "must be a list of strings") };
    let mut out = Vec::new();
    for (i, x) in a.iter().enumerate() {
        match x {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            _ => return err(&format!("{path}[{i}]"), "must be a string"),
        }
    }
    if out.is_empty() {
        return err(path, "must not be empty");
    }
    Ok(out)
}

impl Parser<'_> {
    /// A question by path (`survey/location/district`) or by name when no other node shares it.
    fn question(&self, v: &Value, path: &str) -> Result<Question, DefinitionError> {
        let Some(name) = v.as_str() else { return err(path, "must be a question's name or path") };
        let found: Vec<usize> = if name.contains('/') {
            self.form.nodes.iter().position(|n| n.path == name).into_iter().collect()
        } else {
            self.form.nodes.iter().enumerate().filter(|(_, n)| n.name == name).map(|(i, _)| i).collect()
        };
        let i = match found.as_slice() {
            [] => return err(path, format!("the form has no question `{name}`")),
            [i] => *i,
            many => {
                let paths: Vec<&str> = many.iter().map(|&i| self.form.nodes[i].path.as_str()).collect();
                return err(
                    path,
                    format!("`{name}` names several questions; use its path: {}", paths.join(", ")),
                );
            }
        };
        let node = &self.form.nodes[i];
        if node.kind.is_container() || matches!(node.kind, QuestionType::Note) {
            return err(path, format!("`{name}` is a {}, which holds no answer", node.kind.as_str()));
        }
        // The repeats around it, outermost first.
        let mut chain = Vec::new();
        let mut at = node.parent;
        let mut guard = 0;
        while let Some(p) = at {
            guard += 1;
            if guard > self.form.nodes.len() {
                return err(path, "the form's groups loop");
            }
            if self.form.nodes.get(p).is_some_and(|n| n.kind == QuestionType::Repeat) {
                chain.push(p);
            }
            at = self.form.nodes.get(p).and_then(|n| n.parent);
        }
        chain.reverse();
        let repeat_paths: BTreeSet<&str> = chain.iter().map(|&r| self.form.nodes[r].path.as_str()).collect();
        let mut pattern = Vec::new();
        let mut prefix = String::new();
        for seg in node.path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            pattern.push(Seg::Lit(seg.to_owned()));
            if repeat_paths.contains(prefix.as_str()) {
                pattern.push(Seg::Row);
            }
        }
        let repeat = chain.last().copied();
        let rest = match repeat {
            Some(r) => {
                let rp = &self.form.nodes[r].path;
                node.path.strip_prefix(rp.as_str()).unwrap_or(&node.path).trim_start_matches('/').to_owned()
            }
            None => node.path.clone(),
        };
        Ok(Question { path: node.path.clone(), kind: node.kind, pattern, repeat, rest })
    }

    /// The choices of a select question.
    fn choices(&self, q: &Question) -> Option<&Vec<tejido_core::form::Choice>> {
        let node = self.form.node_at(&q.path)?;
        if !node.kind.is_select() {
            return None;
        }
        self.form.choices_of(node)
    }

    fn choice_label(&self, c: &tejido_core::form::Choice) -> Text {
        let es = translate(&c.label, &self.es).unwrap_or(&c.name);
        let en = translate(&c.label, &self.en).unwrap_or(es);
        Text { es: es.to_owned(), en: en.to_owned() }
    }

    /// Checks that listed values are choices of a select question.
    fn values(&self, q: &Question, v: &Value, path: &str) -> Result<BTreeSet<String>, DefinitionError> {
        let list = string_list(v, path)?;
        if let Some(choices) = self.choices(q) {
            for (i, x) in list.iter().enumerate() {
                if !choices.iter().any(|c| &c.name == x) {
                    return err(&format!("{path}[{i}]"), format!("`{x}` is not a choice of `{}`", q.path));
                }
            }
        }
        Ok(list.into_iter().collect())
    }

    fn condition(&self, v: &Value, path: &str, depth: usize) -> Result<Cond, DefinitionError> {
        if depth > MAX_DEPTH {
            return err(path, format!("conditions nest at most {MAX_DEPTH} deep"));
        }
        let obj = object(v, path)?;
        let list = |key: &str| -> Result<Vec<Cond>, DefinitionError> {
            let p = format!("{path}.{key}");
            let Some(a) = obj.get(key).and_then(Value::as_array) else { return err(&p, "must be a list") };
            if a.is_empty() {
                return err(&p, "must not be empty");
            }
            a.iter().enumerate().map(|(i, c)| self.condition(c, &format!("{p}[{i}]"), depth + 1)).collect()
        };
        if obj.contains_key("all") {
            keys(obj, path, &["all"])?;
            return Ok(Cond::All(list("all")?));
        }
        if obj.contains_key("any") {
            keys(obj, path, &["any"])?;
            return Ok(Cond::Any(list("any")?));
        }
        if let Some(inner) = obj.get("not") {
            keys(obj, path, &["not"])?;
            return Ok(Cond::Not(Box::new(self.condition(inner, &format!("{path}.not"), depth + 1)?)));
        }
        let Some(qv) = obj.get("question") else {
            return err(
                path,
                "a condition needs `question` (with `in`, `answered` or `min`/`max`), or `all`, `any`, `not`",
            );
        };
        let q = self.question(qv, &format!("{path}.question"))?;
        if let Some(vals) = obj.get("in") {
            keys(obj, path, &["question", "in"])?;
            return Ok(Cond::In(q.clone(), self.values(&q, vals, &format!("{path}.in"))?));
        }
        if let Some(a) = obj.get("answered") {
            keys(obj, path, &["question", "answered"])?;
            let Some(b) = a.as_bool() else {
                return err(&format!("{path}.answered"), "must be true or false");
            };
            return Ok(Cond::Answered(q, b));
        }
        if obj.contains_key("min") || obj.contains_key("max") {
            keys(obj, path, &["question", "min", "max"])?;
            numeric(&q, &format!("{path}.question"))?;
            let min = obj.get("min").map(|v| number(v, &format!("{path}.min"))).transpose()?;
            let max = obj.get("max").map(|v| number(v, &format!("{path}.max"))).transpose()?;
            return Ok(Cond::Range(q, min, max));
        }
        keys(obj, path, &["question", "in", "answered", "min", "max"])?;
        err(path, "a question condition needs `in`, `answered`, or `min`/`max`")
    }

    fn numeric_list(&self, v: &Value, path: &str) -> Result<Vec<Question>, DefinitionError> {
        let Some(a) = v.as_array() else { return err(path, "must be a list of questions") };
        if a.is_empty() {
            return err(path, "must not be empty");
        }
        let mut out = Vec::new();
        for (i, x) in a.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let q = self.question(x, &p)?;
            numeric(&q, &p)?;
            out.push(q);
        }
        Ok(out)
    }

    fn measure(&self, v: &Value, path: &str) -> Result<Measure, DefinitionError> {
        let obj = object(v, path)?;
        keys(obj, path, &["sum", "count_selected", "if"])?;
        if obj.len() != 1 {
            return err(path, "a measure is one of `sum`, `count_selected`, `if`");
        }
        if let Some(s) = obj.get("sum") {
            return Ok(Measure::Sum(self.numeric_list(s, &format!("{path}.sum"))?));
        }
        if let Some(c) = obj.get("count_selected") {
            let p = format!("{path}.count_selected");
            let o = object(c, &p)?;
            keys(o, &p, &["question", "in"])?;
            let q = self.question(o.get("question").unwrap_or(&Value::Null), &format!("{p}.question"))?;
            if !q.kind.is_select() {
                return err(&format!("{p}.question"), format!("`{}` is not a select question", q.path));
            }
            let Some(vals) = o.get("in") else { return err(&p, "missing `in`") };
            return Ok(Measure::CountSelected(q.clone(), self.values(&q, vals, &format!("{p}.in"))?));
        }
        let c = obj.get("if").unwrap_or(&Value::Null);
        Ok(Measure::If(self.condition(c, &format!("{path}.if"), 0)?))
    }

    fn dimension(&self, id: &str, v: &Value, path: &str) -> Result<Dimension, DefinitionError> {
        let obj = object(v, path)?;
        keys(obj, path, &["label", "question", "row_where", "bands", "period"])?;
        let label = match obj.get("label") {
            Some(l) => text(l, &format!("{path}.label"))?,
            None => Text::both(id),
        };
        let q = self.question(obj.get("question").unwrap_or(&Value::Null), &format!("{path}.question"))?;
        let row_where = match (obj.get("row_where"), q.repeat) {
            (Some(c), Some(r)) => {
                let p = format!("{path}.row_where");
                let cond = self.condition(c, &p, 0)?;
                let mut outside = None;
                visit(&cond, &mut |cq| {
                    if cq.repeat.is_some() && cq.repeat != Some(r) && outside.is_none() {
                        outside = Some(cq.path.clone());
                    }
                });
                if let Some(o) = outside {
                    return err(&p, format!("`{o}` is not in the repeat of `{}`", q.path));
                }
                Some(cond)
            }
            (Some(_), None) => {
                return err(&format!("{path}.row_where"), format!("`{}` is not inside a repeat", q.path));
            }
            (None, Some(r)) => {
                return err(
                    path,
                    format!(
                        "`{}` is inside the repeat `{}`: say which row gives the value with `row_where`",
                        q.path, self.form.nodes[r].path
                    ),
                );
            }
            (None, None) => None,
        };
        if let Some(b) = obj.get("bands") {
            let p = format!("{path}.bands");
            if obj.contains_key("period") {
                return err(path, "a dimension has `bands` or `period`, not both");
            }
            numeric(&q, &format!("{path}.question"))?;
            let Some(list) = b.as_array() else { return err(&p, "must be a list") };
            if list.is_empty() {
                return err(&p, "must not be empty");
            }
            let mut bands: Vec<Band> = Vec::new();
            let mut categories = Vec::new();
            for (i, bv) in list.iter().enumerate() {
                let bp = format!("{p}[{i}]");
                let o = object(bv, &bp)?;
                keys(o, &bp, &["key", "label", "min", "max"])?;
                let min = number(o.get("min").unwrap_or(&Value::Null), &format!("{bp}.min"))?;
                let max = o.get("max").map(|m| number(m, &format!("{bp}.max"))).transpose()?;
                if max.is_some_and(|m| m < min) {
                    return err(&format!("{bp}.max"), "is below `min`");
                }
                let below = max.map_or(f64::INFINITY, |m| m + 1.0);
                let auto = match max {
                    Some(m) => format!("{}–{}", fmt_num(min), fmt_num(m)),
                    None => format!("{}+", fmt_num(min)),
                };
                let key = match o.get("key") {
                    Some(_) => string(o, "key", &bp)?.to_owned(),
                    None => auto.replace('–', "_").replace('+', "_plus"),
                };
                identifier(&key, &format!("{bp}.key"))?;
                let label = match o.get("label") {
                    Some(l) => text(l, &format!("{bp}.label"))?,
                    None => Text::both(&auto),
                };
                if bands.iter().any(|o| o.key == key) {
                    return err(&format!("{bp}.key"), format!("`{key}` is used by an earlier band"));
                }
                if bands.iter().any(|o| min < o.below && o.min < below) {
                    return err(&bp, "overlaps an earlier band");
                }
                bands.push(Band { key: key.clone(), min, below });
                categories.push((key, label));
            }
            return Ok(Dimension {
                id: id.to_owned(),
                label,
                source: DimSource::Bands(q, bands),
                row_where,
                categories,
                multi: false,
            });
        }
        if let Some(per) = obj.get("period") {
            if per.as_str() != Some("month") {
                return err(&format!("{path}.period"), "the only period is \"month\"");
            }
            if !matches!(
                q.kind,
                QuestionType::Date
                    | QuestionType::DateTime
                    | QuestionType::Today
                    | QuestionType::Start
                    | QuestionType::End
                    | QuestionType::Calculate
                    | QuestionType::Text
            ) {
                return err(&format!("{path}.question"), format!("`{}` is not a date", q.path));
            }
            return Ok(Dimension {
                id: id.to_owned(),
                label,
                source: DimSource::Month(q),
                row_where,
                categories: Vec::new(),
                multi: false,
            });
        }
        let Some(choices) = self.choices(&q) else {
            return err(
                &format!("{path}.question"),
                format!(
                    "`{}` is not a select question with choices: give `bands` (numbers) or `period` (dates)",
                    q.path
                ),
            );
        };
        let categories = choices.iter().map(|c| (c.name.clone(), self.choice_label(c))).collect();
        let multi = q.kind.is_multiple();
        Ok(Dimension { id: id.to_owned(), label, source: DimSource::Choice(q), row_where, categories, multi })
    }

    fn indicator(&self, v: &Value, path: &str, dims: &[Dimension]) -> Result<IndicatorDef, DefinitionError> {
        let obj = object(v, path)?;
        let id = string(obj, "id", path)?.to_owned();
        identifier(&id, &format!("{path}.id"))?;
        let kind = string(obj, "kind", path)?;
        let common = ["id", "kind", "title", "description", "by", "suppress"];
        let extra: &[&str] = match kind {
            "proportion" => &["numerator", "denominator"],
            "rate" => &["numerator", "denominator", "per"],
            "count" => &["where"],
            "sum" => &["where", "fields"],
            _ => return err(&format!("{path}.kind"), "must be one of proportion, rate, count, sum"),
        };
        let allowed: Vec<&str> = common.iter().chain(extra).copied().collect();
        keys(obj, path, &allowed)?;
        let Some(t) = obj.get("title") else { return err(path, "missing `title`") };
        let title = text(t, &format!("{path}.title"))?;
        let description =
            obj.get("description").map(|d| text(d, &format!("{path}.description"))).transpose()?;
        let suppress = match obj.get("suppress") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return err(&format!("{path}.suppress"), "must be true or false"),
        };
        let cond = |key: &str| -> Result<Cond, DefinitionError> {
            match obj.get(key) {
                Some(c) => self.condition(c, &format!("{path}.{key}"), 0),
                None => err(path, format!("missing `{key}`")),
            }
        };
        let filter = |key: &str| -> Result<Option<Cond>, DefinitionError> {
            obj.get(key).map(|c| self.condition(c, &format!("{path}.{key}"), 0)).transpose()
        };
        let kind = match kind {
            "proportion" => {
                KindDef::Proportion { numerator: cond("numerator")?, denominator: cond("denominator")? }
            }
            "rate" => {
                let Some(m) = obj.get("numerator") else { return err(path, "missing `numerator`") };
                let numerator = self.measure(m, &format!("{path}.numerator"))?;
                let per = match obj.get("per") {
                    Some(p) => number(p, &format!("{path}.per"))?,
                    None => 100.0,
                };
                if per <= 0.0 {
                    return err(&format!("{path}.per"), "must be positive");
                }
                KindDef::Rate { numerator, denominator: cond("denominator")?, per }
            }
            "count" => KindDef::Count { filter: filter("where")? },
            _ => {
                let p = format!("{path}.fields");
                let Some(list) = obj.get("fields").and_then(Value::as_array) else {
                    return err(&p, "must be a list of {\"key\", \"label\", \"questions\"}");
                };
                if list.is_empty() {
                    return err(&p, "must not be empty");
                }
                let mut fields: Vec<Field> = Vec::new();
                for (i, f) in list.iter().enumerate() {
                    let fp = format!("{p}[{i}]");
                    let o = object(f, &fp)?;
                    keys(o, &fp, &["key", "label", "questions"])?;
                    let key = string(o, "key", &fp)?.to_owned();
                    identifier(&key, &format!("{fp}.key"))?;
                    if fields.iter().any(|o| o.key == key) {
                        return err(&format!("{fp}.key"), format!("`{key}` is used by an earlier field"));
                    }
                    let label = match o.get("label") {
                        Some(l) => text(l, &format!("{fp}.label"))?,
                        None => Text::both(&key),
                    };
                    let questions = self.numeric_list(
                        o.get("questions").unwrap_or(&Value::Null),
                        &format!("{fp}.questions"),
                    )?;
                    fields.push(Field { key, label, questions });
                }
                KindDef::Sum { filter: filter("where")?, fields }
            }
        };
        let mut by = Vec::new();
        match obj.get("by") {
            None => by.push(Breakdown::Total),
            Some(b) => {
                let names = string_list(b, &format!("{path}.by"))?;
                let mut seen = BTreeSet::new();
                for (i, n) in names.iter().enumerate() {
                    let bp = format!("{path}.by[{i}]");
                    if !seen.insert(n.clone()) {
                        return err(&bp, format!("`{n}` is listed twice"));
                    }
                    by.push(match n.as_str() {
                        "total" => Breakdown::Total,
                        "fields" if matches!(kind, KindDef::Sum { .. }) => Breakdown::Fields,
                        "fields" => return err(&bp, "`fields` breaks down only a `sum` indicator"),
                        d => match dims.iter().position(|x| x.id == d) {
                            Some(i) => Breakdown::Dim(i),
                            None => {
                                let known: Vec<&str> = dims.iter().map(|x| x.id.as_str()).collect();
                                return err(
                                    &bp,
                                    format!("no dimension `{d}` (defined: total, {})", known.join(", ")),
                                );
                            }
                        },
                    });
                }
            }
        }
        Ok(IndicatorDef { id, title, description, kind, by, suppress })
    }
}

fn numeric(q: &Question, path: &str) -> Result<(), DefinitionError> {
    use QuestionType as Q;
    if matches!(q.kind, Q::Integer | Q::Decimal | Q::Range | Q::Calculate | Q::Hidden) {
        Ok(())
    } else {
        err(path, format!("`{}` is a {} question, not a number", q.path, q.kind.as_str()))
    }
}

/// Every question a condition reads.
pub(crate) fn visit(c: &Cond, f: &mut dyn FnMut(&Question)) {
    match c {
        Cond::In(q, _) | Cond::Answered(q, _) | Cond::Range(q, _, _) => f(q),
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| visit(c, f)),
        Cond::Not(c) => visit(c, f),
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}
