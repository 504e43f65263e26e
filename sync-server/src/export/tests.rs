#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use serde_json::{json, Value};
use tejido_core::form::{Form, Node, QuestionType, Settings};
use uuid::Uuid;

use super::*;

const FORM_ID: &str = "victimizacion_hogares";
const A: &str = "0190a3c0-0000-7000-8000-00000000000a";
const B: &str = "0190a3c0-0000-7000-8000-00000000000b";
const ROW1: &str = "0190a3c1-0000-7000-8000-000000000001";
const ROW2: &str = "0190a3c1-0000-7000-8000-000000000002";
const ROW_GONE: &str = "0190a3c1-0000-7000-8000-000000000003";
/// 2026-01-15T14:30:00.000Z
const RECEIVED: i64 = 1_768_487_400_000;

fn form() -> Form {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/forms/victimizacion_hogares.xlsx");
    tejido_core::form::import_xlsform(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"))
}

fn answers(pairs: &[(&str, Value)]) -> Answers {
    pairs.iter().map(|(k, v)| (*k, v.clone())).collect()
}

/// Two households: A with a two-member roster (a third row removed), a select_multiple, a GPS
/// point, no answer to `safe_night` and a name starting with `=`; B with no point and no roster.
fn submissions() -> Vec<ExportRow> {
    let roster = |row: &str, q: &str| format!("survey/roster/{row}/{q}");
    let a = answers(&[
        ("_form", json!(FORM_ID)),
        ("start", json!("2026-01-15T09:00:00.000-05:00")),
        ("today", json!("2026-01-15")),
        ("consent", json!("yes")),
        ("survey/location/district", json!("panama")),
        ("survey/location/corregimiento", json!("pan_san_felipe")),
        ("survey/location/home_gps", json!("8.9824 -79.5199 12.5 4")),
        ("survey/household_size", json!(2)),
        (&roster(ROW1, "_row"), json!(true)),
        (&roster(ROW1, "member_name"), json!("Ana")),
        (&roster(ROW1, "member_sex"), json!("female")),
        (&roster(ROW1, "member_age"), json!(34)),
        (&roster(ROW1, "member_relationship"), json!("head")),
        (&roster(ROW2, "_row"), json!(true)),
        (&roster(ROW2, "member_name"), json!("=HYPERLINK(\"http://x.invalid\")")),
        (&roster(ROW2, "member_sex"), json!("male")),
        (&roster(ROW2, "member_age"), json!(36)),
        (&roster(ROW_GONE, "_row"), json!(false)),
        (&roster(ROW_GONE, "member_name"), json!("Removed")),
        ("survey/members_listed", json!("2")),
        ("survey/perception/safe_day", json!("safe")),
        ("survey/perception/problems", json!("drugs gangs")),
        ("survey/victimization/crimes", json!("theft")),
        ("survey/victimization/crime_followup/recent_crime", json!("theft")),
        ("survey/victimization/crime_followup/reported", json!("no")),
        ("survey/victimization/crime_followup/why_not_reported", json!("no_trust fear")),
        ("survey/respondent_alone", json!("no")),
        ("survey/victim", json!("1")),
    ]);
    let b = answers(&[
        ("consent", json!("yes")),
        ("survey/location/district", json!("arraijan")),
        ("survey/household_size", json!(1)),
        ("survey/victimization/crimes", json!("none")),
        ("survey/victim", json!("0")),
    ]);
    vec![
        ExportRow {
            doc: Uuid::parse_str(A).unwrap(),
            meta: ExportMeta {
                author: Some("Tableta 3".into()),
                received_ms: RECEIVED,
                review_state: Some("approved".into()),
                form_version: Some("2026112901".into()),
            },
            answers: a,
        },
        ExportRow {
            doc: Uuid::parse_str(B).unwrap(),
            meta: ExportMeta {
                author: None,
                received_ms: RECEIVED + 1,
                review_state: Some("has_issues".into()),
                form_version: Some("2026112901".into()),
            },
            answers: b,
        },
    ]
}

fn run(form: &Form, rows: Vec<ExportRow>, options: &ExportOptions) -> (Vec<u8>, ExportSummary) {
    let mut out = Vec::new();
    // A streaming source, as the caller's pages are.
    let source = rows.into_iter().map(Ok::<_, std::io::Error>);
    let summary = export(form, source, options, &mut out).unwrap_or_else(|e| panic!("{e}"));
    (out, summary)
}

fn opts(format: Format, headers: Headers, lang: Option<&str>) -> ExportOptions {
    ExportOptions { format, headers, lang: lang.map(str::to_owned), geopoint: None }
}

/// The zip's entries in order, each parsed as CSV.
fn read_zip(bytes: &[u8]) -> Vec<(String, Vec<Vec<String>>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        assert!(text.contains("\r\n"), "CSV records end with CRLF");
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let records = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
        out.push((entry.name().unwrap().into_owned(), records));
    }
    out
}

fn cell<'a>(table: &'a [Vec<String>], row: usize, header: &str) -> &'a str {
    let col = table[0].iter().position(|h| h == header).unwrap_or_else(|| panic!("no column {header}"));
    &table[row][col]
}

const MAIN_HEADERS: &[&str] = &[
    "KEY",
    "start",
    "end",
    "today",
    "deviceid",
    "username",
    "consent",
    "survey-location-district",
    "survey-location-corregimiento",
    "survey-location-home_gps-Latitude",
    "survey-location-home_gps-Longitude",
    "survey-location-home_gps-Altitude",
    "survey-location-home_gps-Accuracy",
    "survey-household_size",
    "survey-members_listed",
    "survey-perception-safe_day",
    "survey-perception-safe_night",
    "survey-perception-problems",
    "survey-perception-avoids_places",
    "survey-victimization-crimes",
    "survey-victimization-crime_followup-recent_crime",
    "survey-victimization-crime_followup-crime_when",
    "survey-victimization-crime_followup-crime_where",
    "survey-victimization-crime_followup-reported",
    "survey-victimization-crime_followup-why_not_reported",
    "survey-victimization-crime_followup-why_not_other",
    "survey-respondent_alone",
    "survey-dv_consent",
    "survey-domestic_violence-dv_physical",
    "survey-domestic_violence-dv_psychological",
    "survey-domestic_violence-dv_help",
    "survey-victim",
    "meta-instanceID",
    "SubmissionDate",
    "Device",
    "ReviewState",
    "FormVersion",
];

#[test]
fn csv_zip_has_a_main_file_and_one_per_repeat_joined_by_keys() {
    let (bytes, summary) = run(&form(), submissions(), &opts(Format::CsvZip, Headers::Names, None));
    assert_eq!(summary, ExportSummary { submissions: 2, repeat_rows: 2, features: 0 });
    let files = read_zip(&bytes);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["victimizacion_hogares.csv", "victimizacion_hogares-roster.csv"]);
    // Another implementation reads it too, CRCs checked: Info-ZIP's, which checks each entry's
    // local header and data descriptor against the central directory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.zip");
    std::fs::write(&path, &bytes).unwrap();
    let test = std::process::Command::new("unzip").arg("-tq").arg(&path).output().expect("unzip runs");
    assert!(
        test.status.success(),
        "unzip -t: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    let main = &files[0].1;
    assert_eq!(main.len(), 3, "a header and two submissions");
    assert_eq!(main[0], MAIN_HEADERS);
    let expected_a: Vec<&str> = vec![
        A,
        "2026-01-15T09:00:00.000-05:00",
        "",
        "2026-01-15",
        "",
        "",
        "yes",
        "panama",
        "pan_san_felipe",
        "8.9824",
        "-79.5199",
        "12.5",
        "4",
        "2",
        "2",
        "safe",
        "", // safe_night: no answer
        "drugs gangs",
        "",
        "theft",
        "theft",
        "",
        "",
        "no",
        "no_trust fear",
        "",
        "no",
        "",
        "",
        "",
        "",
        "1",
        "",
        "2026-01-15T14:30:00.000Z",
        "Tableta 3",
        "approved",
        "2026112901",
    ];
    assert_eq!(main[1], expected_a);
    assert_eq!(cell(main, 2, "KEY"), B);
    assert_eq!(cell(main, 2, "survey-location-district"), "arraijan");
    assert_eq!(cell(main, 2, "survey-location-home_gps-Latitude"), "");
    assert_eq!(cell(main, 2, "Device"), "");
    assert_eq!(cell(main, 2, "ReviewState"), "has_issues");
    assert_eq!(cell(main, 2, "SubmissionDate"), "2026-01-15T14:30:00.001Z");

    let roster = &files[1].1;
    assert_eq!(
        roster.as_slice(),
        [
            vec![
                "PARENT_KEY",
                "KEY",
                "member_name",
                "member_sex",
                "member_age",
                "member_relationship",
                "ROW_ID"
            ],
            vec![A, &format!("{A}/roster[1]"), "Ana", "female", "34", "head", ROW1],
            vec![A, &format!("{A}/roster[2]"), "'=HYPERLINK(\"http://x.invalid\")", "male", "36", "", ROW2],
        ]
    );
}

#[test]
fn csv_labels_mode_in_spanish_and_english() {
    let form = form();
    let (bytes, _) = run(&form, submissions(), &opts(Format::CsvZip, Headers::Labels, Some("es")));
    let files = read_zip(&bytes);
    let (main, roster) = (&files[0].1, &files[1].1);
    assert_eq!(main[0][0], "KEY");
    assert_eq!(cell(main, 1, "Distrito"), "Panamá");
    assert_eq!(cell(main, 1, "Corregimiento"), "San Felipe");
    assert_eq!(cell(main, 1, "Ubicación GPS de la vivienda (Latitud)"), "8.9824");
    assert_eq!(cell(main, 1, "Ubicación GPS de la vivienda (Longitud)"), "-79.5199");
    assert_eq!(
        cell(main, 1, "¿Cuáles de estos problemas hay en su barrio?"),
        "Venta o consumo de drogas; Pandillas"
    );
    assert_eq!(cell(main, 1, "¿Cuántas personas viven en este hogar?"), "2");
    assert_eq!(cell(main, 1, "¿Acepta participar en esta encuesta?"), "Sí");
    assert_eq!(cell(main, 1, "Estado de revisión"), "Aprobada");
    assert_eq!(cell(main, 2, "Estado de revisión"), "Con problemas");
    assert_eq!(cell(main, 1, "Dispositivo"), "Tableta 3");
    // A question without a label keeps its name.
    assert_eq!(cell(main, 1, "survey-victim"), "1");
    assert_eq!(
        roster[0],
        [
            "PARENT_KEY",
            "KEY",
            "Nombre (o iniciales)",
            "Sexo",
            "Edad",
            "Relación con el jefe del hogar",
            "ROW_ID"
        ]
    );
    assert_eq!(roster[1][2..6], ["Ana", "Mujer", "34", "Jefe(a) del hogar"]);
    assert_eq!(roster[2][3], "Hombre");

    let (bytes, _) = run(&form, submissions(), &opts(Format::CsvZip, Headers::Labels, Some("en")));
    let files = read_zip(&bytes);
    let (main, roster) = (&files[0].1, &files[1].1);
    assert_eq!(cell(main, 1, "District"), "Panama");
    assert_eq!(cell(main, 1, "GPS location of the dwelling (Latitude)"), "8.9824");
    assert_eq!(
        cell(main, 1, "Which of these problems are there in your neighbourhood?"),
        "Drug dealing or use; Gangs"
    );
    assert_eq!(cell(main, 1, "Review state"), "Approved");
    assert_eq!(
        cell(
            main,
            2,
            "In the last 12 months, did you or anyone in your household suffer any of these crimes?"
        ),
        "None"
    );
    assert_eq!(
        roster[0][2..6],
        ["Name (or initials)", "Sex", "Age", "Relationship to the head of household"]
    );
    assert_eq!(roster[1][3], "Female");
}

#[test]
fn csv_cells_that_could_run_as_formulas_are_prefixed() {
    for (text, escaped) in [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("-inf", "'-inf"),
        ("-79.5199", "-79.5199"),
        ("+5", "+5"),
        ("-1e3", "-1e3"),
        ("Ana", "Ana"),
        ("", ""),
        ("a=b", "a=b"),
    ] {
        assert_eq!(escape_formula(text), escaped, "{text:?}");
    }
    // Any text answer, wherever it is, gets the prefix; numbers do not.
    let mut rows = submissions();
    rows[1].answers.insert("survey/location/corregimiento", &json!("@evil"));
    rows[1].answers.insert("survey/household_size", &json!(-3));
    rows[1].meta.author = Some("=cmd".into());
    let (bytes, _) = run(&form(), rows, &opts(Format::CsvZip, Headers::Names, None));
    let files = read_zip(&bytes);
    let main = &files[0].1;
    assert_eq!(cell(main, 2, "survey-location-corregimiento"), "'@evil");
    assert_eq!(cell(main, 2, "survey-household_size"), "-3");
    assert_eq!(cell(main, 2, "Device"), "'=cmd");
}

fn xlsx_sheets(bytes: &[u8]) -> Vec<(String, Vec<Vec<calamine::Data>>)> {
    use calamine::Reader;
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes.to_vec())).unwrap();
    let names = wb.sheet_names();
    names
        .into_iter()
        .map(|n| {
            let range = wb.worksheet_range(&n).unwrap();
            let rows = range.rows().map(|r| r.to_vec()).collect();
            (n, rows)
        })
        .collect()
}

#[test]
fn xlsx_opens_with_calamine_and_holds_the_csv_cells() {
    use calamine::Data;
    let form = form();
    for (headers, lang) in [(Headers::Names, None), (Headers::Labels, Some("en"))] {
        let (csv_bytes, _) = run(&form, submissions(), &opts(Format::CsvZip, headers, lang));
        let (bytes, summary) = run(&form, submissions(), &opts(Format::Xlsx, headers, lang));
        assert_eq!(summary.submissions, 2);
        assert_eq!(summary.repeat_rows, 2);
        let csv = read_zip(&csv_bytes);
        let sheets = xlsx_sheets(&bytes);
        let names: Vec<&str> = sheets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["victimizacion_hogares", "roster"]);
        for ((_, table), (sheet, rows)) in csv.iter().zip(&sheets) {
            assert_eq!(rows.len(), table.len(), "{sheet}");
            for (r, (xrow, crow)) in rows.iter().zip(table).enumerate() {
                let width = crow.len().max(xrow.len());
                for c in 0..width {
                    let x = xrow.get(c).cloned().unwrap_or(Data::Empty);
                    let text = crow.get(c).map(String::as_str).unwrap_or("");
                    let matches = match &x {
                        Data::Empty => text.is_empty(),
                        Data::String(s) => s == text || format!("'{s}") == text,
                        Data::Float(f) => text.parse::<f64>().ok() == Some(*f),
                        Data::Int(i) => text.parse::<i64>().ok() == Some(*i),
                        other => panic!("unexpected cell {other:?}"),
                    };
                    assert!(matches, "{sheet} row {r} column {c}: {x:?} vs {text:?}");
                }
            }
        }
        // Numbers are numbers, and text that looks like a formula stays text.
        let roster = &sheets[1].1;
        assert_eq!(roster[1][4], Data::Float(34.0));
        assert_eq!(roster[2][2], Data::String("=HYPERLINK(\"http://x.invalid\")".into()));
        let main = &sheets[0].1;
        let lon = main[0]
            .iter()
            .position(|h| h.to_string().ends_with("Longitude)") || h.to_string().ends_with("-Longitude"))
            .unwrap();
        assert_eq!(main[1][lon], Data::Float(-79.5199));
    }
}

#[test]
fn geojson_has_one_feature_per_submission_with_a_point_in_lon_lat_order() {
    let (bytes, summary) = run(&form(), submissions(), &opts(Format::GeoJson, Headers::Names, None));
    assert_eq!(summary, ExportSummary { submissions: 2, repeat_rows: 0, features: 1 });
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["type"], "FeatureCollection");
    let features = doc["features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "B has no point");
    let f = &features[0];
    assert_eq!(f["type"], "Feature");
    assert_eq!(f["id"], A);
    assert_eq!(f["geometry"], json!({"type": "Point", "coordinates": [-79.5199, 8.9824, 12.5]}));
    let p = &f["properties"];
    assert_eq!(p["KEY"], A);
    assert_eq!(p["survey-location-district"], "panama");
    assert_eq!(p["survey-household_size"], 2);
    assert_eq!(p["survey-location-home_gps-Latitude"], 8.9824);
    assert_eq!(p["survey-perception-safe_night"], Value::Null);
    assert_eq!(p["survey-perception-problems"], "drugs gangs");
    assert_eq!(p["ReviewState"], "approved");
    assert_eq!(p.as_object().unwrap().len(), MAIN_HEADERS.len());

    // Labels in Spanish, and the point named explicitly.
    let options = ExportOptions {
        geopoint: Some("home_gps".into()),
        ..opts(Format::GeoJson, Headers::Labels, Some("es"))
    };
    let (bytes, _) = run(&form(), submissions(), &options);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["features"][0]["properties"]["Distrito"], "Panamá");

    let bad = ExportOptions {
        geopoint: Some("survey/household_size".into()),
        ..opts(Format::GeoJson, Headers::Names, None)
    };
    let err = export(&form(), submissions().into_iter().map(Ok::<_, std::io::Error>), &bad, Vec::new())
        .unwrap_err();
    assert!(matches!(err, ExportError::NotAGeopoint(_)), "{err}");
}

/// A form with a repeat inside a group inside a repeat, and no geopoint.
fn nested_form() -> Form {
    let mut nodes = vec![
        Node::new("name", "name", QuestionType::Text, None),
        Node::new("visits", "visits", QuestionType::Repeat, None),
        Node::new("place", "visits/place", QuestionType::Text, Some(1)),
        Node::new("details", "visits/details", QuestionType::Group, Some(1)),
        Node::new("people", "visits/details/people", QuestionType::Repeat, Some(3)),
        Node::new("age", "visits/details/people/age", QuestionType::Integer, Some(4)),
        Node::new("info", "visits/details/people/info", QuestionType::Note, Some(4)),
    ];
    nodes[5].label.insert("default".into(), "Age".into());
    Form {
        settings: Settings {
            form_id: "nested".into(),
            version: "1".into(),
            title: "Nested".into(),
            default_language: None,
            instance_name: None,
        },
        languages: vec!["default".into()],
        nodes,
        choice_lists: BTreeMap::new(),
        entities: Vec::new(),
        media: Default::default(),
    }
}

#[test]
fn nested_repeats_get_their_own_files_keyed_by_their_parent_row() {
    let v1 = "0190a3c2-0000-7000-8000-000000000001";
    let v2 = "0190a3c2-0000-7000-8000-000000000002";
    let p1 = "0190a3c3-0000-7000-8000-000000000001";
    let p2 = "0190a3c3-0000-7000-8000-000000000002";
    let row = ExportRow {
        doc: Uuid::parse_str(A).unwrap(),
        meta: ExportMeta::default(),
        answers: answers(&[
            ("name", json!("x")),
            (&format!("visits/{v1}/_row"), json!(true)),
            (&format!("visits/{v1}/place"), json!("market")),
            (&format!("visits/{v1}/details/people/{p1}/_row"), json!(true)),
            (&format!("visits/{v1}/details/people/{p1}/age"), json!(30)),
            (&format!("visits/{v1}/details/people/{p2}/_row"), json!(true)),
            (&format!("visits/{v1}/details/people/{p2}/age"), json!(31)),
            (&format!("visits/{v2}/_row"), json!(true)),
            (&format!("visits/{v2}/details/people/{p1}/_row"), json!(true)),
            (&format!("visits/{v2}/details/people/{p1}/age"), json!(40)),
        ]),
    };
    let (bytes, summary) =
        run(&nested_form(), vec![row.clone()], &opts(Format::CsvZip, Headers::Names, None));
    assert_eq!(summary.repeat_rows, 5);
    let files = read_zip(&bytes);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["nested.csv", "nested-visits.csv", "nested-people.csv"]);
    assert_eq!(files[0].1[0], ["KEY", "name", "SubmissionDate", "Device", "ReviewState", "FormVersion"]);
    assert_eq!(files[0].1[1], [A, "x", "1970-01-01T00:00:00.000Z", "", "", ""]);
    assert_eq!(
        files[1].1,
        [
            vec!["PARENT_KEY", "KEY", "place", "ROW_ID"],
            vec![A, &format!("{A}/visits[1]"), "market", v1],
            vec![A, &format!("{A}/visits[2]"), "", v2],
        ]
    );
    assert_eq!(
        files[2].1,
        [
            vec!["PARENT_KEY", "KEY", "age", "ROW_ID"],
            vec![&format!("{A}/visits[1]"), &format!("{A}/visits[1]/people[1]"), "30", p1],
            vec![&format!("{A}/visits[1]"), &format!("{A}/visits[1]/people[2]"), "31", p2],
            vec![&format!("{A}/visits[2]"), &format!("{A}/visits[2]/people[1]"), "40", p1],
        ]
    );
    let (bytes, _) = run(&nested_form(), vec![row], &opts(Format::Xlsx, Headers::Labels, None));
    let sheets = xlsx_sheets(&bytes);
    let names: Vec<&str> = sheets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["nested", "visits", "people"]);
    assert_eq!(sheets[2].1[0][2], calamine::Data::String("Age".into()));
    assert_eq!(sheets[2].1.len(), 4);

    let err = export(
        &nested_form(),
        std::iter::empty::<Result<ExportRow, std::io::Error>>(),
        &opts(Format::GeoJson, Headers::Names, None),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::NoGeopoint), "{err}");
}

#[test]
fn values_of_unexpected_types_are_written_as_json_or_left_empty() {
    let odd = answers(&[
        ("consent", json!(["yes", 2, null])),
        ("survey/location/district", json!({"nested": "panama"})),
        ("survey/location/corregimiento", json!(7)),
        ("survey/location/home_gps", json!("not a point at all, no")),
        ("survey/household_size", json!("many")),
        ("survey/perception/problems", json!(["drugs", "gangs"])),
        ("survey/perception/safe_day", json!(true)),
        ("survey/victim", json!(1.5)),
        ("survey/roster/not-a-uuid/_row", json!(true)),
        ("survey/roster/not-a-uuid/member_name", json!("x")),
        (&format!("survey/roster/{ROW1}/_row"), json!("yes")),
        (&format!("survey/roster/{ROW2}/_row"), json!(true)),
        (&format!("survey/roster/{ROW2}/member_age"), json!([1, 2])),
        (&format!("survey/roster/{ROW2}/member_name"), json!("x".repeat(40_000))),
        ("survey/unknown_question", json!("ignored")),
        ("_review/state", json!("approved")),
        ("", json!(null)),
        ("/", json!("x")),
        ("survey/roster", json!("x")),
        ("survey/roster/", json!("x")),
    ]);
    let row = ExportRow {
        doc: Uuid::nil(),
        meta: ExportMeta { received_ms: i64::MIN, ..ExportMeta::default() },
        answers: odd,
    };
    let form = form();
    for headers in [Headers::Names, Headers::Labels] {
        for format in [Format::CsvZip, Format::Xlsx, Format::GeoJson] {
            let options = opts(format, headers, Some("klingon"));
            run(&form, vec![row.clone()], &options);
        }
    }
    let (bytes, summary) = run(&form, vec![row], &opts(Format::CsvZip, Headers::Names, None));
    assert_eq!(summary.repeat_rows, 1, "only the row whose marker is true and whose id is a UUID");
    let files = read_zip(&bytes);
    let main = &files[0].1;
    assert_eq!(cell(main, 1, "consent"), "yes 2 null");
    assert_eq!(cell(main, 1, "survey-location-district"), r#"{"nested":"panama"}"#);
    assert_eq!(cell(main, 1, "survey-location-corregimiento"), "7");
    assert_eq!(cell(main, 1, "survey-location-home_gps-Latitude"), "not a point at all, no");
    assert_eq!(cell(main, 1, "survey-household_size"), "many");
    assert_eq!(cell(main, 1, "survey-perception-problems"), "drugs gangs");
    assert_eq!(cell(main, 1, "survey-perception-safe_day"), "true");
    assert_eq!(cell(main, 1, "survey-victim"), "1.5");
    assert_eq!(cell(main, 1, "SubmissionDate"), "");
    let roster = &files[1].1;
    assert_eq!(roster[1][4], "[1,2]");
    assert_eq!(roster[1][2].len(), 40_000);
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the database went away")]
struct PageError;

#[test]
fn a_source_error_stops_the_export_without_quoting_answers() {
    let rows = submissions();
    let source = [Ok(rows[0].clone()), Err(PageError)];
    for format in [Format::CsvZip, Format::Xlsx, Format::GeoJson] {
        let err = export(&form(), source.iter().cloned(), &opts(format, Headers::Names, None), Vec::new())
            .unwrap_err();
        assert!(matches!(err, ExportError::Source(_)), "{err}");
        let message = err.to_string();
        assert!(!message.contains("Ana") && !message.contains("panama"), "{message}");
        assert!(message.contains("the database went away"), "{message}");
    }
}

#[test]
fn file_names_and_formats() {
    let form = form();
    assert_eq!(Format::CsvZip.file_name(&form), "victimizacion_hogares.zip");
    assert_eq!(Format::Xlsx.file_name(&form), "victimizacion_hogares.xlsx");
    assert_eq!(Format::GeoJson.file_name(&form), "victimizacion_hogares.geojson");
    assert_eq!(Format::parse("CSV"), Some(Format::CsvZip));
    assert_eq!(Format::parse("xlsx"), Some(Format::Xlsx));
    assert_eq!(Format::parse("geojson"), Some(Format::GeoJson));
    assert_eq!(Format::parse("pdf"), None);
    assert_eq!(table::safe_file_stem("../evil id"), "_evil_id");
    // Nothing is written for an empty source but the headers.
    let (bytes, summary) = run(&form, Vec::new(), &opts(Format::CsvZip, Headers::Names, None));
    assert_eq!(summary, ExportSummary::default());
    let files = read_zip(&bytes);
    assert_eq!(files[0].1, [MAIN_HEADERS]);
    assert_eq!(files[1].1.len(), 1);
    let (bytes, _) = run(&form, Vec::new(), &opts(Format::GeoJson, Headers::Names, None));
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc, json!({"type": "FeatureCollection", "features": []}));
}

#[test]
fn civil_dates() {
    assert_eq!(table::civil(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(table::civil(1_768_487_400), (2026, 1, 15, 14, 30, 0));
    assert_eq!(table::civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    for n in [0u64, 7, 10, 1234, u64::MAX] {
        let mut s = String::from("x");
        table::push_decimal(&mut s, n);
        assert_eq!(s, format!("x{n}"));
    }
}

proptest::proptest! {
    /// The hand-written RFC 3339 text is humantime's, for every millisecond from 1970 to 9999.
    #[test]
    fn rfc3339_agrees_with_humantime(ms in 0i64..=253_402_300_799_999) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
        let expected = humantime::format_rfc3339_millis(t).to_string();
        proptest::prop_assert_eq!(table::rfc3339_ms(ms), Some(expected));
    }
}

#[test]
fn rfc3339_at_the_ends_of_its_range() {
    assert_eq!(table::rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
    assert_eq!(table::rfc3339_ms(253_402_300_799_999).as_deref(), Some("9999-12-31T23:59:59.999Z"));
    assert_eq!(table::rfc3339_ms(-1), None);
    assert_eq!(table::rfc3339_ms(253_402_300_800_000), None);
    assert_eq!(table::rfc3339_ms(i64::MIN), None);
}

proptest::proptest! {
    /// The grammar check is exactly "only digits, signs, points and exponents, and a finite
    /// `f64`", the definition it replaced, on number-like text and on anything else.
    #[test]
    fn plain_numbers_are_what_f64_parses(
        text in proptest::prop_oneof![
            "[-+]?[0-9]{0,4}[.]?[0-9]{0,4}([eE][-+]?[0-9]{0,4})?",
            "[-+.eE0-9]{0,8}",
            "[0-9]{290,320}([.][0-9]{0,3})?",
            ".{0,8}",
        ]
    ) {
        let by_parse = text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
            && text.parse::<f64>().is_ok_and(f64::is_finite);
        proptest::prop_assert_eq!(table::is_plain_number(&text), by_parse, "{:?}", text);
    }
}

#[test]
fn plain_numbers_at_the_edges() {
    for yes in ["0", "-12.5", "+3", "1.", ".5", "1e5", "1E-5", "-0.0e+0", "1e308"] {
        assert!(table::is_plain_number(yes), "{yes}");
    }
    for no in
        ["", "-", "+", ".", "e5", "1e", "1e+", "--1", "1.2.3", "1e5e5", "1e309", "-1e400", "inf", "NaN", " 1"]
    {
        assert!(!table::is_plain_number(no), "{no}");
    }
}
