//! Values and ODK's conversions between them: answers are strings, an unanswered question is
//! the empty string, numbers that do not parse are NaN, dates are days since the epoch, and a
//! multiple selection is one space-separated string.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// The result of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    /// A date or date-time: days since 1970-01-01 (fractional with a time of day), and whether
    /// it carries a time.
    Date {
        days: f64,
        time: bool,
    },
    /// The values of the questions a reference or path selects (one per repeat row).
    Nodes(Vec<String>),
}

const MS_PER_DAY: f64 = 86_400_000.0;

/// Formats a number as XPath does: integers without a fraction, `NaN`, `Infinity`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == 0.0 {
        "0".into()
    } else {
        format!("{n}")
    }
}

/// Parses XPath number syntax: optional sign, digits, optional fraction; surrounding spaces are
/// allowed. Anything else is NaN (a date string gives its days since the epoch).
pub fn string_to_number(s: &str) -> f64 {
    // As JavaRosa: a decimal comma reads as a point (`'4,6'` is 4.6).
    let replaced;
    let t = if s.contains(',') {
        replaced = s.replace(',', ".");
        replaced.trim()
    } else {
        s.trim()
    };
    if t.is_empty() {
        return f64::NAN;
    }
    let body = t.strip_prefix('-').unwrap_or(t);
    let valid = !body.is_empty()
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && body.chars().filter(|&c| c == '.').count() <= 1
        && body != ".";
    if valid {
        return t.parse().unwrap_or(f64::NAN);
    }
    parse_date_days(t).unwrap_or(f64::NAN)
}

/// Days since the epoch of `YYYY-MM-DD` or an ISO date-time (`YYYY-MM-DDTHH:MM[:SS[.fff]]` with
/// an optional `Z` or `±HH:MM`).
pub fn parse_date_days(s: &str) -> Option<f64> {
    let normalized = normalize_iso(s.trim())?;
    let s = normalized.as_str();
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let date = NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let days = (date - epoch).num_days() as f64;
    if s.len() == 10 {
        return Some(days);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis() as f64 / MS_PER_DAY);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            // A date-time without an offset is local time, as the device wrote it.
            let local = chrono::Local.from_local_datetime(&dt).earliest()?;
            return Some(local.timestamp_millis() as f64 / MS_PER_DAY);
        }
    }
    // `2024-05-15T14:35:45.123+05:00` without seconds' fraction handled by rfc3339 above;
    // anything else is not a date.
    None
}

/// An ISO date or date-time as JavaRosa reads it, written out in full: the date's parts may
/// lack their leading zeros (`2024-1-5`), and an offset may lack its minutes (`+02`, `+0200`).
fn normalize_iso(s: &str) -> Option<String> {
    let (date, rest) = match s.find('T') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits =
        |p: &str, max: usize| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !digits(y, 4) || y.len() != 4 || !digits(m, 2) || !digits(d, 2) {
        return None;
    }
    let mut out = format!("{y}-{m:0>2}-{d:0>2}");
    if rest.is_empty() {
        return Some(out);
    }
    // The offset after the time: `Z`, `±HH`, `±HHMM` or `±HH:MM`.
    let time_end = rest.rfind(['+', '-']).filter(|&i| i > 0).unwrap_or(rest.len());
    let (time, offset) = rest.split_at(time_end);
    out.push_str(time);
    match offset.len() {
        0 => {}
        3 => out.push_str(&format!("{offset}:00")),
        5 if offset.is_ascii() && !offset.contains(':') => {
            out.push_str(&format!("{}:{}", &offset[..3], &offset[3..]))
        }
        _ => out.push_str(offset),
    }
    Some(out)
}

/// A date value as text: `YYYY-MM-DD`, or an ISO date-time in local time with its offset.
pub fn format_date(days: f64, time: bool) -> String {
    if !days.is_finite() {
        return String::new();
    }
    let ms = (days * MS_PER_DAY).round();
    if !(-8.64e15..=8.64e15).contains(&ms) {
        return String::new();
    }
    let Some(utc) = DateTime::from_timestamp_millis(ms as i64) else { return String::new() };
    if !time {
        return utc.date_naive().format("%Y-%m-%d").to_string();
    }
    chrono::Local.from_utc_datetime(&utc.naive_utc()).format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
}

/// Seconds since midnight, on the device's clock, of a `HH:MM[:SS[.fff]]` time with an optional
/// offset (`Z`, `±HH:MM`): a time with an offset is moved to the device's time zone, as
/// JavaRosa's `decimal-time` does.
pub fn parse_time_seconds_local(s: &str) -> Option<f64> {
    let t = s.trim();
    let (time, offset_secs) = if let Some(x) = t.strip_suffix('Z') {
        (x, Some(0i64))
    } else {
        match t.rfind(['+', '-']) {
            Some(i) if i > 0 => {
                let (time, off) = t.split_at(i);
                let sign = if off.starts_with('-') { -1 } else { 1 };
                let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
                if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let h: i64 = digits[..2].parse().ok()?;
                let m: i64 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
                (time, Some(sign * (h * 3600 + m * 60)))
            }
            _ => (t, None),
        }
    };
    let fraction = match time.split_once('.') {
        Some((_, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("0.{f}").parse::<f64>().unwrap_or(0.0)
        }
        Some(_) => return None,
        None => 0.0,
    };
    let whole = time.split('.').next().unwrap_or(time);
    let secs = parse_time_seconds(whole)?.floor() + fraction;
    let Some(offset) = offset_secs else { return Some(secs) };
    let local = chrono::Local::now().offset().local_minus_utc() as f64;
    Some((secs - offset as f64 + local).rem_euclid(86_400.0))
}

/// Seconds since midnight of a `HH:MM[:SS]` time, if it is one.
pub fn parse_time_seconds(s: &str) -> Option<f64> {
    let t = s.trim();
    let core = t.get(..8).unwrap_or(t);
    let time = NaiveTime::parse_from_str(core, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
        .ok()?;
    Some(time.signed_duration_since(NaiveTime::MIN).num_milliseconds() as f64 / 1000.0)
}

impl Value {
    /// XPath `string()`.
    pub fn to_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Num(n) => format_number(*n),
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            Value::Date { days, time } => format_date(*days, *time),
            Value::Nodes(v) => v.first().cloned().unwrap_or_default(),
        }
    }

    /// XPath `number()`.
    pub fn to_num(&self) -> f64 {
        match self {
            Value::Str(s) => string_to_number(s),
            Value::Num(n) => *n,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Date { days, .. } => *days,
            Value::Nodes(v) => v.first().map(|s| string_to_number(s)).unwrap_or(f64::NAN),
        }
    }

    /// XPath `boolean()`, with ODK's reading of a single question as its value.
    pub fn to_bool(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Num(n) => *n != 0.0 && !n.is_nan(),
            Value::Bool(b) => *b,
            Value::Date { days, .. } => *days != 0.0 && !days.is_nan(),
            Value::Nodes(v) => match v.len() {
                0 => false,
                1 => !v[0].is_empty(),
                _ => true,
            },
        }
    }

    /// Days since the epoch, for date functions: dates, date strings and numbers.
    pub fn to_days(&self) -> f64 {
        match self {
            Value::Date { days, .. } => *days,
            Value::Num(n) => *n,
            Value::Bool(_) => f64::NAN,
            other => {
                let s = other.to_str();
                parse_date_days(&s).unwrap_or_else(|| string_to_number(&s))
            }
        }
    }

    /// The individual values a node-set holds (a single value for anything else).
    pub fn items(&self) -> Vec<Value> {
        match self {
            Value::Nodes(v) => v.iter().map(|s| Value::Str(s.clone())).collect(),
            other => vec![other.clone()],
        }
    }
}
