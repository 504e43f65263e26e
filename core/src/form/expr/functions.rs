//! The functions of the ODK XPath subset.

use chrono::{Datelike, TimeZone, Timelike};

use super::eval::Env;
use super::value::{parse_time_seconds_local, Value};
use super::{Expr, PathStart};

/// Every supported function with its least and greatest number of arguments (`usize::MAX`:
/// any number).
pub const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("if", 3, 3),
    ("coalesce", 2, 2),
    ("not", 1, 1),
    ("true", 0, 0),
    ("false", 0, 0),
    ("boolean", 1, 1),
    ("boolean-from-string", 1, 1),
    ("number", 0, 1),
    ("string", 0, 1),
    ("int", 1, 1),
    ("round", 1, 2),
    ("floor", 1, 1),
    ("ceiling", 1, 1),
    ("abs", 1, 1),
    ("pow", 2, 2),
    ("sqrt", 1, 1),
    ("exp", 1, 1),
    ("exp10", 1, 1),
    ("log", 1, 1),
    ("log10", 1, 1),
    ("sin", 1, 1),
    ("cos", 1, 1),
    ("tan", 1, 1),
    ("asin", 1, 1),
    ("acos", 1, 1),
    ("atan", 1, 1),
    ("atan2", 2, 2),
    ("pi", 0, 0),
    ("concat", 0, usize::MAX),
    ("join", 1, usize::MAX),
    ("string-length", 0, 1),
    ("substr", 2, 3),
    ("substring", 2, 3),
    ("substring-before", 2, 2),
    ("substring-after", 2, 2),
    ("contains", 2, 2),
    ("starts-with", 2, 2),
    ("ends-with", 2, 2),
    ("translate", 3, 3),
    ("normalize-space", 0, 1),
    ("regex", 2, 2),
    ("selected", 2, 2),
    ("count-selected", 1, 1),
    ("selected-at", 2, 2),
    ("jr:choice-name", 2, 2),
    ("jr:itext", 1, 1),
    ("today", 0, 0),
    ("now", 0, 0),
    ("date", 1, 1),
    ("date-time", 1, 1),
    ("decimal-date-time", 1, 1),
    ("decimal-date", 1, 1),
    ("decimal-time", 1, 1),
    ("format-date", 2, 2),
    ("format-date-time", 2, 2),
    ("sum", 1, 1),
    ("count", 1, 1),
    ("count-non-empty", 1, 1),
    ("max", 1, usize::MAX),
    ("min", 1, usize::MAX),
    ("position", 0, 1),
    ("indexed-repeat", 3, 7),
    ("once", 1, 1),
    ("instance", 1, 1),
    ("pulldata", 4, 4),
    ("uuid", 0, 1),
    ("digest", 2, 3),
    ("base64-decode", 1, 1),
    ("version", 0, 0),
    ("area", 1, 1),
    ("distance", 1, usize::MAX),
    ("geofence", 2, 2),
    ("random", 0, 0),
    ("checklist", 2, usize::MAX),
    ("weighted-checklist", 2, usize::MAX),
];

/// Whether `name` is a supported function, and if so, whether it takes `arity` arguments
/// (`Some(true)`), or another number (`Some(false)`).
pub fn is_known_function(name: &str, arity: usize) -> Option<bool> {
    FUNCTIONS.iter().find(|(n, _, _)| *n == name).map(|(_, lo, hi)| arity >= *lo && arity <= *hi)
}

fn num(n: f64) -> Value {
    Value::Num(n)
}

/// The question name a reference argument names: `${q}`, a path's last step, or the string
/// `'${q}'` / `'/data/g/q'` (as `jr:choice-name` takes it).
fn referenced_name(e: &Expr, env: &Env<'_>) -> Option<String> {
    match e {
        Expr::Ref(n) => Some(n.clone()),
        Expr::Path(p) if !matches!(p.start, PathStart::Expr(_)) => p.steps.last().map(|s| s.name.clone()),
        other => {
            let s = env.eval(other).to_str();
            let s = s.trim();
            if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                return Some(inner.trim().to_owned());
            }
            s.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_owned)
        }
    }
}

fn selections(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

pub(super) fn call(name: &str, args: &[Expr], env: &Env<'_>) -> Value {
    let arg = |i: usize| args.get(i).map(|a| env.eval(a)).unwrap_or(Value::Str(String::new()));
    let s = |i: usize| arg(i).to_str();
    let n = |i: usize| arg(i).to_num();
    match name {
        "if" => {
            if arg(0).to_bool() {
                arg(1)
            } else {
                arg(2)
            }
        }
        "coalesce" => {
            let a = arg(0);
            if a.to_str().is_empty() {
                arg(1)
            } else {
                a
            }
        }
        "not" => Value::Bool(!arg(0).to_bool()),
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "boolean" => Value::Bool(arg(0).to_bool()),
        "boolean-from-string" => {
            let v = s(0);
            Value::Bool(v == "true" || v == "1")
        }
        "number" => num(if args.is_empty() { env.ctx.current().to_num() } else { n(0) }),
        "string" => Value::Str(if args.is_empty() { env.ctx.current().to_str() } else { s(0) }),
        "int" => num(n(0).trunc()),
        "round" => {
            // As JavaRosa: half toward positive infinity (XPath 3.0), keeping the sign of zero.
            let x = n(0);
            let digits = if args.len() < 2 { 0.0 } else { n(1).trunc() };
            if !digits.is_finite() {
                return num(f64::NAN);
            }
            let digits = digits.clamp(-300.0, 300.0) as i32;
            let r = if digits >= 0 {
                let scale = 10f64.powi(digits);
                let scaled = x * scale;
                if !scaled.is_finite() {
                    return num(x);
                }
                (scaled + 0.5).floor() / scale
            } else {
                let scale = 10f64.powi(-digits);
                (x / scale + 0.5).floor() * scale
            };
            num(if r == 0.0 { 0f64.copysign(x) } else { r })
        }
        "floor" => num(n(0).floor()),
        "ceiling" => num(n(0).ceil()),
        "abs" => num(n(0).abs()),
        "pow" => num(n(0).powf(n(1))),
        "sqrt" => num(n(0).sqrt()),
        "exp" => num(n(0).exp()),
        "exp10" => num(10f64.powf(n(0))),
        "log" => num(n(0).ln()),
        "log10" => num(n(0).log10()),
        "sin" => num(n(0).sin()),
        "cos" => num(n(0).cos()),
        "tan" => num(n(0).tan()),
        "asin" => num(n(0).asin()),
        "acos" => num(n(0).acos()),
        "atan" => num(n(0).atan()),
        "atan2" => num(n(0).atan2(n(1))),
        "pi" => num(std::f64::consts::PI),
        "concat" => {
            let mut out = String::new();
            for a in args {
                for item in env.eval(a).items() {
                    out.push_str(&item.to_str());
                }
            }
            Value::Str(out)
        }
        "join" => {
            let sep = s(0);
            let parts: Vec<String> =
                args.iter().skip(1).flat_map(|a| env.eval(a).items()).map(|v| v.to_str()).collect();
            Value::Str(parts.join(&sep))
        }
        "string-length" => {
            let v = if args.is_empty() { env.ctx.current().to_str() } else { s(0) };
            num(v.chars().count() as f64)
        }
        "substr" => {
            let chars: Vec<char> = s(0).chars().collect();
            let len = chars.len() as f64;
            let clampi = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, len) } as usize;
            let mut start = n(1);
            if start < 0.0 {
                start += len;
            }
            let mut end = if args.len() > 2 { n(2) } else { len };
            if end < 0.0 {
                end += len;
            }
            let (a, b) = (clampi(start), clampi(end));
            Value::Str(if a < b { chars[a..b].iter().collect() } else { String::new() })
        }
        "substring" => {
            // XPath: 1-based, rounding, characters at positions p with start <= p < start+len.
            let chars: Vec<char> = s(0).chars().collect();
            let start = (n(1) + 0.5).floor();
            let end = if args.len() > 2 { start + (n(2) + 0.5).floor() } else { f64::INFINITY };
            let out: String = chars
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    let p = (*i + 1) as f64;
                    p >= start && p < end
                })
                .map(|(_, c)| *c)
                .collect();
            Value::Str(out)
        }
        "substring-before" => {
            let (a, b) = (s(0), s(1));
            Value::Str(a.find(&b).map(|i| a[..i].to_owned()).unwrap_or_default())
        }
        "substring-after" => {
            let (a, b) = (s(0), s(1));
            Value::Str(a.find(&b).map(|i| a[i + b.len()..].to_owned()).unwrap_or_default())
        }
        "contains" => Value::Bool(s(0).contains(&s(1))),
        "starts-with" => Value::Bool(s(0).starts_with(&s(1))),
        "ends-with" => Value::Bool(s(0).ends_with(&s(1))),
        "translate" => {
            let from: Vec<char> = s(1).chars().collect();
            let to: Vec<char> = s(2).chars().collect();
            let out: String = s(0)
                .chars()
                .filter_map(|c| match from.iter().position(|f| *f == c) {
                    Some(i) => to.get(i).copied(),
                    None => Some(c),
                })
                .collect();
            Value::Str(out)
        }
        "normalize-space" => {
            // XPath's whitespace only: space, tab, carriage return, line feed.
            let v = if args.is_empty() { env.ctx.current().to_str() } else { s(0) };
            Value::Str(
                v.split([' ', '\t', '\r', '\n']).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "),
            )
        }
        "regex" => {
            let pattern = s(1);
            let re = regex::RegexBuilder::new(&pattern).size_limit(1 << 20).build();
            Value::Bool(re.map(|r| r.is_match(&s(0))).unwrap_or(false))
        }
        "selected" => {
            let list = s(0);
            let wanted = s(1);
            let wanted = wanted.trim();
            Value::Bool(selections(&list).contains(&wanted))
        }
        "count-selected" => num(selections(&s(0)).len() as f64),
        "selected-at" => {
            let list = s(0);
            let i = n(1);
            let parts = selections(&list);
            let v = if i.is_finite() && i >= 0.0 { parts.get(i as usize).copied() } else { None };
            Value::Str(v.unwrap_or_default().to_owned())
        }
        "jr:choice-name" => {
            let choice = s(0);
            let question = args.get(1).and_then(|a| referenced_name(a, env));
            let label = question.and_then(|q| env.ctx.choice_label(&q, choice.trim()));
            Value::Str(label.unwrap_or_default())
        }
        "jr:itext" => Value::Str(s(0)),
        "today" => {
            let now = env.ctx.now();
            let days = now.date_naive().signed_duration_since(epoch()).num_days() as f64;
            Value::Date { days, time: false }
        }
        "now" => Value::Date { days: env.ctx.now().timestamp_millis() as f64 / 86_400_000.0, time: true },
        "date" => Value::Date { days: arg(0).to_days(), time: false },
        "date-time" => Value::Date { days: arg(0).to_days(), time: true },
        "decimal-date-time" | "decimal-date" => num(arg(0).to_days()),
        "decimal-time" => num(parse_time_seconds_local(&s(0)).map(|x| x / 86_400.0).unwrap_or(f64::NAN)),
        "format-date" | "format-date-time" => {
            let v = arg(0);
            let days = if v.to_str().trim().is_empty() { f64::NAN } else { v.to_days() };
            Value::Str(format_date_with(days, &s(1), name == "format-date-time"))
        }
        "sum" => num(arg(0).items().iter().map(Value::to_num).sum()),
        "count" => num(match arg(0) {
            Value::Nodes(v) => v.len() as f64,
            _ => 0.0,
        }),
        "count-non-empty" => num(match arg(0) {
            Value::Nodes(v) => v.iter().filter(|s| !s.is_empty()).count() as f64,
            _ => 0.0,
        }),
        "max" | "min" => {
            let values: Vec<f64> =
                args.iter().flat_map(|a| env.eval(a).items()).map(|v| v.to_num()).collect();
            if values.is_empty() || values.iter().any(|v| v.is_nan()) {
                return num(f64::NAN);
            }
            let pick = if name == "max" { f64::max } else { f64::min };
            num(values.into_iter().reduce(pick).unwrap_or(f64::NAN))
        }
        "position" => num(env.ctx.position()),
        "indexed-repeat" => {
            let Some(question) = args.first().and_then(|a| referenced_name(a, env)) else {
                return Value::Nodes(Vec::new());
            };
            let mut indices = Vec::new();
            for pair in args[1..].chunks(2) {
                let [repeat, index] = pair else { return Value::Nodes(Vec::new()) };
                let Some(r) = referenced_name(repeat, env) else { return Value::Nodes(Vec::new()) };
                indices.push((r, env.eval(index).to_num()));
            }
            env.ctx.indexed_repeat(&question, &indices)
        }
        "once" => {
            let current = env.ctx.current();
            if current.to_str().is_empty() {
                arg(0)
            } else {
                current
            }
        }
        "instance" => Value::Nodes(Vec::new()),
        "pulldata" => Value::Str(env.ctx.pulldata(&s(0), &s(1), &s(2), &s(3))),
        "uuid" if args.is_empty() => Value::Str(uuid::Uuid::new_v4().to_string()),
        "uuid" => Value::Str(random_string(n(0))),
        "digest" => {
            let algorithm = s(1);
            let encoding = if args.len() > 2 { s(2) } else { "base64".to_owned() };
            digest(&s(0), &algorithm, &encoding).map_or_else(|| Value::Str(String::new()), Value::Str)
        }
        "base64-decode" => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD.decode(s(0).trim());
            Value::Str(decoded.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
        }
        "version" => Value::Str(env.ctx.form_version()),
        "area" => num(geo_points(&s(0)).map_or(f64::NAN, |p| spherical_area(&p))),
        "distance" => {
            // One geotrace or geoshape, or several points (or traces) in turn.
            let mut points = Vec::new();
            for a in args {
                for item in env.eval(a).items() {
                    match geo_points(&item.to_str()) {
                        Some(p) => points.extend(p),
                        None => return num(f64::NAN),
                    }
                }
            }
            num(points.windows(2).map(|w| haversine(w[0], w[1])).sum())
        }
        "geofence" => match (geo_points(&s(0)).as_deref(), geo_points(&s(1))) {
            (Some([point]), Some(shape)) if shape.len() >= 3 => Value::Bool(inside(*point, &shape)),
            _ => Value::Bool(false),
        },
        "random" => {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            let mut x = [0u8; 8];
            x.copy_from_slice(&bytes[..8]);
            num((u64::from_le_bytes(x) >> 11) as f64 / (1u64 << 53) as f64)
        }
        "checklist" => {
            let (lo, hi) = (n(0), n(1));
            let count =
                args.iter().skip(2).flat_map(|a| env.eval(a).items()).filter(Value::to_bool).count() as f64;
            Value::Bool((lo < 0.0 || count >= lo) && (hi < 0.0 || count <= hi))
        }
        "weighted-checklist" => {
            let (lo, hi) = (n(0), n(1));
            let mut total = 0.0;
            for pair in args[2.min(args.len())..].chunks(2) {
                if let [v, w] = pair {
                    if env.eval(v).to_bool() {
                        total += env.eval(w).to_num();
                    }
                }
            }
            Value::Bool((lo < 0.0 || total >= lo) && (hi < 0.0 || total <= hi))
        }
        _ => Value::Str(String::new()),
    }
}

/// The radius JavaRosa measures the earth with (its equatorial radius), in meters.
const EARTH_RADIUS_METERS: f64 = 6_378_100.0;

/// The (latitude, longitude) points of a geopoint, geotrace or geoshape (`lat lon [alt acc]`
/// separated by `;`); `None` when any is not a point on the earth.
fn geo_points(s: &str) -> Option<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let mut nums = part.split_whitespace().map(|x| x.parse::<f64>().ok());
        let (lat, lon) = (nums.next()??, nums.next()??);
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        out.push((lat, lon));
    }
    (!out.is_empty()).then_some(out)
}

/// Great-circle distance in meters, as JavaRosa measures it.
fn haversine(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let (dla, dlo) = (la2 - la1, (b.1 - a.1).to_radians());
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_METERS * h.sqrt().min(1.0).asin()
}

/// Area in square meters of a polygon on the sphere (Chamberlain and Duquette's formula, as
/// JavaRosa computes it); the polygon closes itself.
fn spherical_area(points: &[(f64, f64)]) -> f64 {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    if p.len() > 1 && p.first() == p.last() {
        p.pop();
    }
    let n = p.len();
    if n < 3 {
        return 0.0;
    }
    let mut total = 0.0;
    for i in 0..n {
        let prev = p[(i + n - 1) % n];
        let next = p[(i + 1) % n];
        total += (next.1 - prev.1).to_radians() * p[i].0.to_radians().sin();
    }
    (total * EARTH_RADIUS_METERS * EARTH_RADIUS_METERS / 2.0).abs()
}

/// Whether a point is inside a polygon (ray casting over latitude and longitude).
fn inside(point: (f64, f64), shape: &[(f64, f64)]) -> bool {
    let (y, x) = point;
    let mut result = false;
    let n = shape.len();
    let mut j = n - 1;
    for i in 0..n {
        let (yi, xi) = shape[i];
        let (yj, xj) = shape[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            result = !result;
        }
        j = i;
    }
    result
}

/// Longest string `uuid(n)` makes.
const MAX_RANDOM_STRING: f64 = 10_000.0;

/// `uuid(n)`: `n` random letters and digits, as ODK Collect makes them.
fn random_string(n: f64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if !n.is_finite() || n < 1.0 {
        return String::new();
    }
    let n = n.min(MAX_RANDOM_STRING) as usize;
    let mut out = String::with_capacity(n);
    while out.len() < n {
        // A random UUID's bytes (its 122 random bits); the version bytes are skipped.
        for (i, b) in uuid::Uuid::new_v4().into_bytes().iter().enumerate() {
            if i == 6 || i == 8 || out.len() == n {
                continue;
            }
            // 62 letters and digits: take bytes below 248 (4 x 62) so each is equally likely.
            if *b < 248 {
                out.push(ALPHABET[(*b % 62) as usize] as char);
            }
        }
    }
    out
}

/// `digest(text, algorithm, encoding)`: MD5, SHA-1, SHA-256, SHA-384 or SHA-512 of the text's
/// UTF-8 bytes, as base64 or hex; `None` for another algorithm or encoding.
fn digest(text: &str, algorithm: &str, encoding: &str) -> Option<String> {
    use sha2::Digest as _;
    let bytes = text.as_bytes();
    let hash: Vec<u8> = match algorithm.trim().to_ascii_uppercase().as_str() {
        "MD5" => md5::Md5::digest(bytes).to_vec(),
        "SHA-1" => sha1::Sha1::digest(bytes).to_vec(),
        "SHA-256" => sha2::Sha256::digest(bytes).to_vec(),
        "SHA-384" => sha2::Sha384::digest(bytes).to_vec(),
        "SHA-512" => sha2::Sha512::digest(bytes).to_vec(),
        _ => return None,
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "base64" => {
            use base64::Engine as _;
            Some(base64::engine::general_purpose::STANDARD.encode(hash))
        }
        "hex" => Some(hex::encode(hash)),
        _ => None,
    }
}

fn epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// `format-date`: `%Y %y %m %n %b %d %e %a %H %h %M %S %3`.
fn format_date_with(days: f64, pattern: &str, _time: bool) -> String {
    if !days.is_finite() || days.abs() > 1e8 {
        return String::new();
    }
    let ms = (days * 86_400_000.0).round() as i64;
    let Some(utc) = chrono::DateTime::from_timestamp_millis(ms) else { return String::new() };
    // Whole days are calendar dates; with a time of day, show local time.
    let dt = if days.fract() == 0.0 {
        utc.naive_utc()
    } else {
        chrono::Local.from_utc_datetime(&utc.naive_utc()).naive_local()
    };
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{:04}", dt.year())),
            Some('y') => out.push_str(&format!("{:02}", dt.year().rem_euclid(100))),
            Some('m') => out.push_str(&format!("{:02}", dt.month())),
            Some('n') => out.push_str(&dt.month().to_string()),
            Some('b') => out.push_str(&dt.format("%b").to_string()),
            Some('d') => out.push_str(&format!("{:02}", dt.day())),
            Some('e') => out.push_str(&dt.day().to_string()),
            Some('a') => out.push_str(&dt.format("%a").to_string()),
            Some('H') => out.push_str(&format!("{:02}", dt.hour())),
            Some('h') => out.push_str(&dt.hour().to_string()),
            Some('M') => out.push_str(&format!("{:02}", dt.minute())),
            Some('S') => out.push_str(&format!("{:02}", dt.second())),
            Some('%') => out.push('%'),
            Some('3') => out.push_str(&format!("{:03}", dt.and_utc().timestamp_subsec_millis())),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
