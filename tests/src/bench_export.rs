//! `tejido-bench export [--submissions N]`: N (default 100,000) generated submissions of the
//! victimization survey, streamed from an iterator (never held in memory), exported to the CSV
//! zip and to XLSX, with time and peak memory; beside the same rows, read back from the CSV
//! export and held in memory, written with the csv crate into a zip with the same compression in
//! the same run (the baseline), and as plain CSV.
//!
//! - `export.csv_submissions_per_s` and `.ratio` against the baseline (target at least 0.5;
//!   the export and the baseline run three times each, interleaved, and each keeps its best):
//!   the export's own rate, leaving out the time the source spends producing rows (timed around
//!   each `next()`: the generator here, the database in production), since the baseline's rows
//!   are already in memory; dropping each row stays in the export's time.
//!   `export.csv_with_source_submissions_per_s` (and its `.ratio`) is the end-to-end rate;
//! - `export.xlsx_submissions_per_s` (own) and `export.xlsx_with_source_submissions_per_s`;
//! - `export.peak_memory`: the larger peak resident memory of the two exports, in bytes
//!   (target under 150 MB). The peak (VmHWM) is reset before each export through
//!   `/proc/self/clear_refs`, so each figure is that export's own.

use std::convert::Infallible;
use std::io::{Cursor, Read, Write};
use std::time::Instant;

use serde_json::{json, Value};
use tejido_core::form::{import_xlsform, Form};
use tejido_server::export::{export, Answers, ExportMeta, ExportOptions, ExportRow, Format, Headers};
use uuid::Uuid;

use crate::{report, report_ratio};

/// Counts the bytes written and keeps none.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident memory to the current one (Linux `clear_refs` 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Plausible answers of the victimization survey, generated one submission at a time.
struct Households {
    next: u64,
    count: u64,
    state: u64,
    corregimientos: Vec<(String, String)>,
}

impl Households {
    fn new(form: &Form, count: u64) -> Households {
        let corregimientos = form
            .choice_lists
            .get("corregimiento")
            .map(|l| {
                l.iter()
                    .map(|c| (c.extra.get("district").cloned().unwrap_or_default(), c.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Households { next: 0, count, state: 0x9e37_79b9_7f4a_7c15, corregimientos }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rand(items.len() as u64) as usize]
    }

    fn some(&mut self, items: &[&str], max: u64) -> String {
        let k = 1 + self.rand(max);
        let mut chosen: Vec<&str> = Vec::new();
        for _ in 0..k {
            let c = self.pick(items);
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        chosen.join(" ")
    }

    fn submission(&mut self, i: u64) -> ExportRow {
        let mut a = Answers::new();
        let mut put = |k: &str, v: Value| a.insert(k, &v);
        let day = 1 + i % 28;
        put("start", json!(format!("2026-02-{day:02}T09:{:02}:00.000-05:00", i % 60)));
        put("end", json!(format!("2026-02-{day:02}T09:{:02}:00.000-05:00", (i + 25) % 60)));
        put("today", json!(format!("2026-02-{day:02}")));
        put("deviceid", json!(format!("tejido:{}", Uuid::from_u64_pair(7, i % 40))));
        put("meta/instanceID", json!(format!("uuid:{}", Uuid::from_u64_pair(i, 0))));
        put("consent", json!("yes"));
        let district = self.pick(&["panama", "san_miguelito", "arraijan", "la_chorrera"]);
        put("survey/location/district", json!(district));
        let options: Vec<String> =
            self.corregimientos.iter().filter(|(d, _)| d == district).map(|(_, c)| c.clone()).collect();
        if !options.is_empty() {
            let c = options[self.rand(options.len() as u64) as usize].clone();
            put("survey/location/corregimiento", json!(c));
        }
        if self.rand(10) < 8 {
            let lat = 8.9 + self.rand(20_000) as f64 / 100_000.0;
            let lon = -79.8 + self.rand(40_000) as f64 / 100_000.0;
            put(
                "survey/location/home_gps",
                json!(format!("{lat:.6} {lon:.6} {} {}", 10 + self.rand(40), 3 + self.rand(12))),
            );
        }
        let size = 1 + self.rand(6);
        put("survey/household_size", json!(size));
        for k in 0..size {
            let row = Uuid::from_u64_pair(i, k + 1);
            let p = |q: &str| format!("survey/roster/{row}/{q}");
            let sex = self.pick(&["female", "male"]);
            let age = self.rand(90);
            let rel = self.pick(&["head", "spouse", "child", "other_relative", "non_relative"]);
            put(&p("_row"), json!(true));
            put(&p("member_name"), json!(format!("Persona {}", k + 1)));
            put(&p("member_sex"), json!(sex));
            put(&p("member_age"), json!(age));
            put(&p("member_relationship"), json!(rel));
        }
        put("survey/members_listed", json!(size.to_string()));
        let safety = ["very_safe", "safe", "unsafe", "very_unsafe"];
        let (day_safe, night_safe) = (self.pick(&safety), self.pick(&safety));
        put("survey/perception/safe_day", json!(day_safe));
        put("survey/perception/safe_night", json!(night_safe));
        let problems = self.some(&["drugs", "gangs", "robberies", "poor_lighting", "vandalism"], 3);
        put("survey/perception/problems", json!(problems));
        let avoids = self.pick(&["yes", "no"]);
        put("survey/perception/avoids_places", json!(avoids));
        let victim = self.rand(10) < 3;
        if victim {
            let crimes = ["robbery", "theft", "burglary", "assault", "extortion", "fraud", "threats"];
            let chosen = self.some(&crimes, 2);
            let recent = chosen.split(' ').next().unwrap_or("theft").to_owned();
            put("survey/victimization/crimes", json!(chosen));
            put("survey/victimization/crime_followup/recent_crime", json!(recent));
            let when = self.pick(&["0_3", "3_6", "6_12"]);
            let place = self.pick(&["home", "street", "transport", "work_school", "business"]);
            put("survey/victimization/crime_followup/crime_when", json!(when));
            put("survey/victimization/crime_followup/crime_where", json!(place));
            let reported = self.pick(&["yes", "no", "no"]);
            put("survey/victimization/crime_followup/reported", json!(reported));
            if reported == "no" {
                let why = self.some(&["not_serious", "no_trust", "fear", "no_proof", "too_slow"], 2);
                put("survey/victimization/crime_followup/why_not_reported", json!(why));
            }
        } else {
            put("survey/victimization/crimes", json!("none"));
        }
        let alone = self.pick(&["yes", "no"]);
        put("survey/respondent_alone", json!(alone));
        if alone == "yes" {
            put("survey/dv_consent", json!("yes"));
            let (physical, psychological) = (self.pick(&["no", "no", "yes"]), self.pick(&["no", "yes"]));
            put("survey/domestic_violence/dv_physical", json!(physical));
            put("survey/domestic_violence/dv_psychological", json!(psychological));
        }
        put("survey/victim", json!(if victim { "1" } else { "0" }));
        ExportRow {
            doc: Uuid::from_u64_pair(i, 0),
            meta: ExportMeta {
                author: Some(format!("Tableta {}", i % 40)),
                received_ms: 1_770_000_000_000 + i as i64 * 1000,
                review_state: ["approved", "has_issues", ""][(i % 3) as usize].to_owned().into(),
                form_version: Some("2026112901".into()),
            },
            answers: a,
        }
    }
}

impl Iterator for Households {
    type Item = Result<ExportRow, Infallible>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some(Ok(self.submission(i)))
    }
}

/// Times the source: the time spent producing rows, which the baseline (rows already in
/// memory) does not spend.
struct Timed<I> {
    inner: I,
    secs: std::rc::Rc<std::cell::Cell<f64>>,
}

impl<I: Iterator> Iterator for Timed<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let t = Instant::now();
        let item = self.inner.next();
        self.secs.set(self.secs.get() + t.elapsed().as_secs_f64());
        item
    }
}

struct Run {
    /// Wall time of the whole export, the source included.
    secs: f64,
    /// Of which the source's.
    source_secs: f64,
    bytes: u64,
    peak: Option<u64>,
}

fn timed_export(form: &Form, n: u64, format: Format) -> Result<Run, String> {
    let reset = reset_peak();
    let options = ExportOptions { format, headers: Headers::Names, lang: None, geopoint: None };
    let mut out = Counter::default();
    let source_secs = std::rc::Rc::new(std::cell::Cell::new(0.0));
    let rows = Timed { inner: Households::new(form, n), secs: source_secs.clone() };
    let t = Instant::now();
    export(form, rows, &options, &mut out).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Run {
        secs,
        source_secs: source_secs.get(),
        bytes: out.0,
        peak: if reset { status_bytes("VmHWM:") } else { None },
    })
}

/// Zip entries of the CSV export, each read back as CSV records.
fn read_back(zip_bytes: &[u8]) -> Result<Vec<(String, Vec<csv::ByteRecord>)>, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(zip_bytes)).map_err(|e| e.to_string())?;
    let mut tables = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes.as_slice());
        let records: Result<Vec<_>, _> = reader.byte_records().collect();
        tables.push((name, records.map_err(|e| e.to_string())?));
    }
    Ok(tables)
}

fn write_tables<W: Write>(
    tables: &[(String, Vec<csv::ByteRecord>)],
    mut out: W,
    zip: bool,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    if !zip {
        for (_, records) in tables {
            let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(&mut out);
            for r in records {
                w.write_byte_record(r).map_err(|e| err(&e))?;
            }
            w.flush().map_err(|e| err(&e))?;
        }
        return Ok(());
    }
    let mut z = zip::ZipWriter::new_stream(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    for (name, records) in tables {
        z.start_file(name.as_str(), options).map_err(|e| err(&e))?;
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(&mut z);
        for r in records {
            w.write_byte_record(r).map_err(|e| err(&e))?;
        }
        w.flush().map_err(|e| err(&e))?;
    }
    z.finish().map_err(|e| err(&e))?;
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut n: u64 = 100_000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--submissions" => {
                n = it.next().and_then(|v| v.parse().ok()).ok_or("--submissions takes a number")?
            }
            other => return Err(format!("unknown option {other:?}; expected --submissions N")),
        }
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forms/victimizacion_hogares.xlsx");
    let form = import_xlsform(&path).map_err(|e| format!("{} does not import:\n{e}", path.display()))?;
    let start_rss = status_bytes("VmRSS:").unwrap_or(0);

    // Generating alone, to see what the exports' times include.
    let t = Instant::now();
    let mut fields = 0usize;
    for row in Households::new(&form, n).flatten() {
        fields += row.answers.len();
    }
    let generate = t.elapsed().as_secs_f64();
    report("export.generate_submissions_per_s", n as f64 / generate, "submissions/s");
    report("export.fields_per_submission", fields as f64 / n.max(1) as f64, "fields");

    // The CSV export and its baseline (below) run three times each, interleaved, and each keeps
    // its best run: on this noisy machine a single run of either can lose a third of its rate.
    let mut csv_runs = vec![timed_export(&form, n, Format::CsvZip)?];
    let xlsx = timed_export(&form, n, Format::Xlsx)?;
    let own = |r: &Run| (r.secs - r.source_secs).max(1e-9);

    // The baseline: the same rows, from memory, written with the csv crate.
    let options =
        ExportOptions { format: Format::CsvZip, headers: Headers::Names, lang: None, geopoint: None };
    let mut zip_bytes = Vec::new();
    export(&form, Households::new(&form, n), &options, &mut zip_bytes).map_err(|e| e.to_string())?;
    let tables = read_back(&zip_bytes)?;
    drop(zip_bytes);
    let mut baseline = f64::INFINITY;
    for round in 0..3 {
        if round > 0 {
            csv_runs.push(timed_export(&form, n, Format::CsvZip)?);
        }
        let t = Instant::now();
        let mut out = Counter::default();
        write_tables(&tables, &mut out, true)?;
        baseline = baseline.min(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    write_tables(&tables, Counter::default(), false)?;
    let plain = t.elapsed().as_secs_f64();
    let best = |key: fn(&Run) -> f64| csv_runs.iter().map(key).fold(f64::INFINITY, f64::min);
    // The peak memory is the first run's: the later ones run beside the baseline's rows.
    let csv =
        Run { secs: best(|r| r.secs), source_secs: 0.0, bytes: csv_runs[0].bytes, peak: csv_runs[0].peak };
    let csv_own = best(|r| (r.secs - r.source_secs).max(1e-9));
    report("export.csv_submissions_per_s", n as f64 / csv_own, "submissions/s");
    report("export.csv_with_source_submissions_per_s", n as f64 / csv.secs, "submissions/s");
    report("export.csv_bytes", csv.bytes as f64, "bytes");
    report("export.xlsx_submissions_per_s", n as f64 / own(&xlsx), "submissions/s");
    report("export.xlsx_with_source_submissions_per_s", n as f64 / xlsx.secs, "submissions/s");
    report("export.xlsx_bytes", xlsx.bytes as f64, "bytes");
    match (csv.peak, xlsx.peak) {
        (Some(c), Some(x)) => {
            report("export.csv_peak_memory", c as f64, "bytes");
            report("export.xlsx_peak_memory", x as f64, "bytes");
            report("export.peak_memory", c.max(x) as f64, "bytes");
        }
        _ => {
            // No per-run reset: the process's peak so far covers both exports.
            report("export.peak_memory", status_bytes("VmHWM:").unwrap_or(0) as f64, "bytes");
        }
    }
    report("export.rss_before", start_rss as f64, "bytes");

    report("export.baseline_csv_zip_submissions_per_s", n as f64 / baseline, "submissions/s");
    report("export.baseline_plain_csv_submissions_per_s", n as f64 / plain, "submissions/s");
    report_ratio("export.csv_submissions_per_s", baseline / csv_own);
    report_ratio("export.csv_with_source_submissions_per_s", baseline / csv.secs);
    Ok(())
}
