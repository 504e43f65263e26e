//! Indicator tables as horizontal bar charts: self-contained SVG (no scripts, fonts or links),
//! every text escaped (labels come from forms and definitions, and are not trusted).

use std::fmt::Write;

use super::{IndicatorRow, IndicatorTable, Kind};

const WIDTH: f64 = 760.0;
const LABEL_END: f64 = 230.0;
const BAR_START: f64 = 240.0;
const BAR_END: f64 = 580.0;
const VALUE_X: f64 = 590.0;
const TOP: f64 = 64.0;
const ROW: f64 = 26.0;
const BAR: f64 = 16.0;
const MAX_LABEL_CHARS: usize = 34;

/// Escapes text for XML content and attribute values, dropping characters XML cannot hold.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_LABEL_CHARS {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(MAX_LABEL_CHARS - 1).collect();
    s.push('…');
    s
}

fn spanish(lang: &str) -> bool {
    !lang.trim().to_ascii_lowercase().starts_with("en")
}

/// A number with a fixed count of decimals, with a decimal comma in Spanish.
fn num(x: f64, decimals: usize, lang: &str) -> String {
    let s = format!("{x:.decimals$}");
    if spanish(lang) {
        s.replace('.', ",")
    } else {
        s
    }
}

fn plain(x: f64, lang: &str) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        num(x, 1, lang)
    }
}

fn value_text(kind: Kind, row: &IndicatorRow, lang: &str) -> String {
    let Some(e) = row.estimate else { return "—".to_owned() };
    match kind {
        Kind::Proportion => match row.ci {
            Some(ci) => format!(
                "{} % [{}–{}]",
                num(e * 100.0, 1, lang),
                num(ci.low * 100.0, 1, lang),
                num(ci.high * 100.0, 1, lang)
            ),
            None => format!("{} %", num(e * 100.0, 1, lang)),
        },
        Kind::Rate { .. } => num(e, 1, lang),
        Kind::Count | Kind::Sum => plain(e, lang),
    }
}

/// A round number at or above `x`.
fn nice_ceiling(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 1.0;
    }
    let exp = 10f64.powf(x.log10().floor());
    let f = x / exp;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|n| *n >= f - 1e-9).unwrap_or(10.0);
    nice * exp
}

/// Draws a table as a bar chart in a language (`es` or `en`): one bar per row, the Wilson 95%
/// interval as a whisker on proportions, suppressed cells hatched and labelled.
pub fn bar_chart(table: &IndicatorTable, lang: &str) -> String {
    let es = spanish(lang);
    let rows = &table.rows;
    let max = match table.kind {
        Kind::Proportion => 1.0,
        _ => nice_ceiling(
            rows.iter()
                .filter(|r| !r.suppressed)
                .filter_map(|r| r.estimate.map(|e| r.ci.map_or(e, |c| c.high.max(e))))
                .fold(0.0, f64::max),
        ),
    };
    let scale = |v: f64| BAR_START + (v / max).clamp(0.0, 1.0) * (BAR_END - BAR_START);
    let any_suppressed = rows.iter().any(|r| r.suppressed);
    let body = (rows.len().max(1)) as f64 * ROW;
    let axis_y = TOP + body;
    let height = axis_y + 30.0 + if any_suppressed { 20.0 } else { 0.0 } + 10.0;
    let id: String = table
        .id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .collect();
    let hatch = format!("hatch-{id}");
    let title = escape(table.title.get(lang));
    let unit = match table.kind {
        Kind::Proportion if es => "% · IC 95 % (Wilson)".to_owned(),
        Kind::Proportion => "% · 95% CI (Wilson)".to_owned(),
        Kind::Rate { per } if es => format!("por {}", plain(per, lang)),
        Kind::Rate { per } => format!("per {}", plain(per, lang)),
        Kind::Count if es => "número".to_owned(),
        Kind::Count => "count".to_owned(),
        Kind::Sum if es => "suma".to_owned(),
        Kind::Sum => "sum".to_owned(),
    };
    let by = if es { "por" } else { "by" };
    let subtitle = format!("{} {} · {}", by, escape(table.dimension_label.get(lang)), escape(&unit));

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="title-{id}" font-family="sans-serif" font-size="12">"##
    );
    let _ = write!(s, r##"<title id="title-{id}">{title}</title>"##);
    let _ = write!(
        s,
        r##"<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>"##
    );
    let _ = write!(s, r##"<rect width="{WIDTH}" height="{height}" fill="#fff"/>"##);
    let _ =
        write!(s, r##"<text x="16" y="24" font-size="16" font-weight="bold" fill="#222">{title}</text>"##);
    let _ = write!(s, r##"<text x="16" y="44" fill="#555">{subtitle}</text>"##);

    // Grid and axis.
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let x = scale(v);
        let label = match table.kind {
            Kind::Proportion => format!("{} %", plain(v * 100.0, lang)),
            _ => plain(v, lang),
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{axis_y}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            axis_y + 16.0,
            escape(&label)
        );
    }

    if rows.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{BAR_START}" y="{:.1}" fill="#555">{}</text>"##,
            TOP + ROW / 2.0 + 4.0,
            if es { "Sin datos" } else { "No data" }
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW + (ROW - BAR) / 2.0;
        let mid = y + BAR / 2.0;
        let full = escape(r.label.get(lang));
        let short = escape(&truncate(r.label.get(lang)));
        let _ = write!(
            s,
            r##"<text x="{LABEL_END}" y="{:.1}" text-anchor="end" fill="#222"><title>{full}</title>{short}</text>"##,
            mid + 4.0
        );
        if r.suppressed {
            let _ = write!(
                s,
                r##"<rect x="{BAR_START}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="url(#{hatch})" stroke="#999"/><text x="{VALUE_X}" y="{:.1}" fill="#555" font-style="italic">{}</text>"##,
                BAR_END - BAR_START,
                mid + 4.0,
                if es { "suprimido" } else { "suppressed" }
            );
            continue;
        }
        if let Some(e) = r.estimate {
            let w = scale(e) - BAR_START;
            let _ = write!(
                s,
                r##"<rect x="{BAR_START}" y="{y:.1}" width="{w:.1}" height="{BAR}" fill="#3b6ea5"/>"##
            );
            if let Some(ci) = r.ci {
                let (x0, x1) = (scale(ci.low), scale(ci.high));
                let _ = write!(
                    s,
                    r##"<g stroke="#222" stroke-width="1.5"><line x1="{x0:.1}" y1="{mid:.1}" x2="{x1:.1}" y2="{mid:.1}"/><line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{:.1}"/><line x1="{x1:.1}" y1="{:.1}" x2="{x1:.1}" y2="{:.1}"/></g>"##,
                    mid - 5.0,
                    mid + 5.0,
                    mid - 5.0,
                    mid + 5.0
                );
            }
        }
        let _ = write!(
            s,
            r##"<text x="{VALUE_X}" y="{:.1}" fill="#222">{}</text>"##,
            mid + 4.0,
            escape(&value_text(table.kind, r, lang))
        );
    }
    if any_suppressed {
        let note = if es {
            format!("Celdas con menos de {} casos suprimidas.", table.min_cell)
        } else {
            format!("Cells with fewer than {} cases suppressed.", table.min_cell)
        };
        let _ = write!(
            s,
            r##"<rect x="16" y="{:.1}" width="12" height="10" fill="url(#{hatch})" stroke="#999"/><text x="34" y="{:.1}" fill="#555">{}</text>"##,
            axis_y + 30.0,
            axis_y + 39.0,
            escape(&note)
        );
    }
    s.push_str("</svg>");
    s
}
