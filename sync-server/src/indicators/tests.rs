//! Indicators against figures worked out by hand for small fixed data sets, over the real demo
//! forms and their definition files in `examples/forms`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};
use tejido_core::form::{import_xlsform, Form};

use super::*;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/forms")
}

fn form(name: &str) -> Form {
    import_xlsform(&examples().join(format!("{name}.xlsx"))).unwrap()
}

fn victimization_form() -> &'static Form {
    static F: OnceLock<Form> = OnceLock::new();
    F.get_or_init(|| form("victimizacion_hogares"))
}

fn youth_form() -> &'static Form {
    static F: OnceLock<Form> = OnceLock::new();
    F.get_or_init(|| form("bitacora_red_juvenil"))
}

fn definition(name: &str) -> String {
    std::fs::read_to_string(examples().join(format!("{name}.indicators.json"))).unwrap()
}

fn victimization() -> IndicatorSet {
    IndicatorSet::from_json(&definition("victimizacion_hogares"), victimization_form()).unwrap()
}

fn youth() -> IndicatorSet {
    IndicatorSet::from_json(&definition("bitacora_red_juvenil"), youth_form()).unwrap()
}

type Sub = BTreeMap<String, Value>;

fn row_id(n: u32) -> String {
    format!("0190a000-0000-7000-8000-{n:012}")
}

/// A roster row: `survey/roster/<row>/…`.
fn member(s: &mut Sub, row: u32, relationship: &str, sex: Value, age: Value) {
    let r = format!("survey/roster/{}", row_id(row));
    s.insert(format!("{r}/_row"), json!(true));
    s.insert(format!("{r}/member_name"), json!("X"));
    s.insert(format!("{r}/member_relationship"), json!(relationship));
    s.insert(format!("{r}/member_sex"), sex);
    s.insert(format!("{r}/member_age"), age);
}

/// A household as the read model keeps it: district, the head in the roster (when `sex` is
/// given), crimes (space-separated, as select_multiple answers are written), reported, and the
/// perceived safety at night.
fn household(
    district: &str,
    head: Option<(&str, i64)>,
    crimes: &str,
    reported: Option<&str>,
    night: &str,
) -> Sub {
    let mut s = Sub::new();
    s.insert("_form".into(), json!("victimizacion_hogares"));
    s.insert("_status".into(), json!("finalized"));
    s.insert("consent".into(), json!("yes"));
    s.insert("survey/location/district".into(), json!(district));
    s.insert("survey/household_size".into(), json!(3));
    s.insert("survey/perception/safe_night".into(), json!(night));
    s.insert("survey/victimization/crimes".into(), json!(crimes));
    if let Some(r) = reported {
        s.insert("survey/victimization/crime_followup/reported".into(), json!(r));
    }
    if let Some((sex, age)) = head {
        // A child listed before the head, so the head is found by relationship, not position.
        member(&mut s, 1, "child", json!("male"), json!(8));
        member(&mut s, 2, "head", json!(sex), json!(age));
    }
    s
}

/// The victimization data set. Sixteen households count (H1–H16), H17 is deleted and H18 has
/// only values of the wrong type. "Victim" = any crime other than `none`.
///
/// | #  | district      | head  | crimes                    | reported | night       |
/// |----|---------------|-------|---------------------------|----------|-------------|
/// | 1  | panama        | F 15  | robbery theft             | yes      | unsafe      |
/// | 2  | panama        | F 29  | none                      |          | safe        |
/// | 3  | panama        | F 30  | burglary                  | no       | very_unsafe |
/// | 4  | san_miguelito | F 44  | theft                     | no       | unsafe      |
/// | 5  | san_miguelito | F 45  | none                      |          | very_safe   |
/// | 6  | arraijan      | F 64  | assault threats extortion | yes      | unsafe      |
/// | 7  | arraijan      | F 65  | none                      |          | safe        |
/// | 8  | la_chorrera   | F 14  | fraud                     | no       | safe        |
/// | 9  | panama        | F 70  | none                      |          | unsafe      |
/// | 10 | panama        | M 33  | none                      |          | safe        |
/// | 11 | san_miguelito | M 50  | robbery                   | no       | very_unsafe |
/// | 12 | san_miguelito | M 22  | none                      |          | safe        |
/// | 13 | arraijan      | M 40  | vehicle_theft             | yes      | unsafe      |
/// | 14 | panama        | M 80  | none                      |          | very_safe   |
/// | 15 | san_miguelito | M 58  | theft burglary            | no       | unsafe      |
/// | 16 | panama        | (none)| none                      |          | safe        |
/// | 17 | panama, F 40, robbery, yes, unsafe — but `_deleted`                            |
/// | 18 | crimes `{}`, district `12`, night `true`, head sex `[male, female]`, age `"abc"` |
fn households() -> Vec<Sub> {
    let h = household;
    let mut v = vec![
        h("panama", Some(("female", 15)), "robbery theft", Some("yes"), "unsafe"),
        h("panama", Some(("female", 29)), "none", None, "safe"),
        h("panama", Some(("female", 30)), "burglary", Some("no"), "very_unsafe"),
        h("san_miguelito", Some(("female", 44)), "theft", Some("no"), "unsafe"),
        h("san_miguelito", Some(("female", 45)), "none", None, "very_safe"),
        h("arraijan", Some(("female", 64)), "assault threats extortion", Some("yes"), "unsafe"),
        h("arraijan", Some(("female", 65)), "none", None, "safe"),
        h("la_chorrera", Some(("female", 14)), "fraud", Some("no"), "safe"),
        h("panama", Some(("female", 70)), "none", None, "unsafe"),
        h("panama", Some(("male", 33)), "none", None, "safe"),
        h("san_miguelito", Some(("male", 50)), "robbery", Some("no"), "very_unsafe"),
        h("san_miguelito", Some(("male", 22)), "none", None, "safe"),
        h("arraijan", Some(("male", 40)), "vehicle_theft", Some("yes"), "unsafe"),
        h("panama", Some(("male", 80)), "none", None, "very_safe"),
        h("san_miguelito", Some(("male", 58)), "theft burglary", Some("no"), "unsafe"),
        h("panama", None, "none", None, "safe"),
    ];
    // H2 also had a row marked head that was removed (`_row` false): it must not count.
    let removed = format!("survey/roster/{}", row_id(0));
    v[1].insert(format!("{removed}/_row"), json!(false));
    v[1].insert(format!("{removed}/member_relationship"), json!("head"));
    v[1].insert(format!("{removed}/member_sex"), json!("male"));
    v[1].insert(format!("{removed}/member_age"), json!(50));
    // H16 lists a member who is not the head: no head, so no sex or age band.
    member(&mut v[15], 1, "child", json!("female"), json!(30));

    let mut deleted = h("panama", Some(("female", 40)), "robbery", Some("yes"), "unsafe");
    deleted.insert("_deleted".into(), json!({"deleted": true, "covers": []}));
    v.push(deleted);

    let mut odd = h("x", None, "x", None, "x");
    odd.insert("survey/victimization/crimes".into(), json!({"robbery": true}));
    odd.insert("survey/location/district".into(), json!(12));
    odd.insert("survey/perception/safe_night".into(), json!(true));
    member(&mut odd, 2, "head", json!(["male", "female"]), json!("abc"));
    v.push(odd);
    v
}

const MIN_CELL: u64 = 3;

fn tables(set: &IndicatorSet, subs: &[Sub], min_cell: u64) -> BTreeMap<String, IndicatorTable> {
    set.compute(subs.iter(), min_cell).into_iter().map(|t| (t.id.clone(), t)).collect()
}

fn row<'a>(t: &'a IndicatorTable, key: &str) -> &'a IndicatorRow {
    t.rows.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("{} has no row {key}", t.id))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 5e-5
}

#[test]
fn prevalence_by_sex_with_a_wilson_interval_worked_by_hand() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    let total = row(&t["victimization_prevalence.total"], "total");
    // Victims H1 H3 H4 H6 H8 H11 H13 H15 = 8 of 16.
    assert_eq!((total.numerator, total.denominator), (Some(8.0), Some(16)));
    assert_eq!(total.estimate, Some(0.5));

    let by_sex = &t["victimization_prevalence.sex"];
    let keys: Vec<&str> = by_sex.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["female", "male"], "the sex choices, in the form's order");
    assert_eq!(row(by_sex, "female").label.es, "Mujer");
    assert_eq!(row(by_sex, "female").label.en, "Female");

    // Women heads H1–H9: victims H1 H3 H4 H6 H8 = 5 of 9.
    let f = row(by_sex, "female");
    assert_eq!((f.numerator, f.denominator), (Some(5.0), Some(9)));
    // Wilson, z = 1.959964, z² = 3.841459, n = 9, p̂ = 5/9 = 0.555556:
    //   z²/n = 0.426829, so 1 + z²/n = 1.426829;
    //   centre = (0.555556 + z²/2n = 0.213414) / 1.426829 = 0.769 / 1.426829 = 0.538936;
    //   p̂(1−p̂)/n = 0.027435, z²/4n² = 0.011856, √0.039291 = 0.198220;
    //   half = 1.959964 × 0.198220 / 1.426829 = 0.272285;
    //   interval = [0.266651, 0.811221].
    let ci = f.ci.unwrap();
    assert!(close(f.estimate.unwrap(), 0.5556), "{f:?}");
    assert!(close(ci.low, 0.2667) && close(ci.high, 0.8112), "{ci:?}");
    assert_eq!(format!("{:.4} {:.4}", ci.low, ci.high), "0.2667 0.8112");

    // Men heads H10–H15: victims H11 H13 H15 = 3 of 6; p̂ = 0.5 so the interval is symmetric:
    //   1 + z²/6 = 1.640243; half = z·√(0.25/6 + z²/144) / 1.640243 = 0.312384.
    let m = row(by_sex, "male");
    assert_eq!((m.numerator, m.denominator, m.estimate), (Some(3.0), Some(6), Some(0.5)));
    let ci = m.ci.unwrap();
    assert_eq!(format!("{:.4} {:.4}", ci.low, ci.high), "0.1876 0.8124");
    // H16 has no head and H18 no usable head: 9 + 6 = 15 of the 16.
}

#[test]
fn small_cells_are_suppressed_with_their_values_hidden() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    let d = &t["victimization_prevalence.district"];
    let keys: Vec<&str> = d.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["panama", "san_miguelito", "arraijan", "la_chorrera"]);
    // Panamá H1 H2 H3 H9 H10 H14 H16: 2 of 7; San Miguelito H4 H5 H11 H12 H15: 3 of 5.
    let p = row(d, "panama");
    assert_eq!((p.numerator, p.denominator, p.suppressed), (Some(2.0), Some(7), false));
    let s = row(d, "san_miguelito");
    assert_eq!((s.numerator, s.denominator, s.estimate), (Some(3.0), Some(5), Some(0.6)));
    // La Chorrera has one household (H8) < 3: suppressed. Being the only suppressed cell, the
    // total minus the others would reveal it, so the smallest other cell (Arraiján, 3) goes too.
    for key in ["la_chorrera", "arraijan"] {
        let r = row(d, key);
        assert!(r.suppressed, "{key}");
        assert_eq!((r.numerator, r.denominator, r.estimate, r.ci), (None, None, None, None), "{key}");
    }
    assert_eq!(d.min_cell, MIN_CELL);
    // With no threshold nothing is hidden: Arraiján H6 H13 of H6 H7 H13.
    let t0 = tables(&victimization(), &households(), 0);
    let a = row(&t0["victimization_prevalence.district"], "arraijan");
    assert_eq!((a.numerator, a.denominator, a.suppressed), (Some(2.0), Some(3), false));
    // A higher threshold suppresses more than one cell; no complement is needed then.
    let t6 = tables(&victimization(), &households(), 6);
    let d6 = &t6["victimization_prevalence.district"];
    let hidden: Vec<&str> = d6.rows.iter().filter(|r| r.suppressed).map(|r| r.key.as_str()).collect();
    assert_eq!(hidden, ["san_miguelito", "arraijan", "la_chorrera"]);
}

#[test]
fn incidents_per_100_households() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    // Crime types: H1 2, H3 1, H4 1, H6 3, H8 1, H11 1, H13 1, H15 2 = 12 over 16 households.
    let total = row(&t["incidents_per_100.total"], "total");
    assert_eq!((total.numerator, total.denominator), (Some(12.0), Some(16)));
    assert_eq!(total.estimate, Some(75.0));
    assert_eq!(t["incidents_per_100.total"].kind, Kind::Rate { per: 100.0 });
    assert!(total.ci.is_none());
    // Women: 2 + 1 + 1 + 3 + 1 = 8 over 9 = 88.89; men: 1 + 1 + 2 = 4 over 6 = 66.67.
    let by_sex = &t["incidents_per_100.sex"];
    assert!(close(row(by_sex, "female").estimate.unwrap(), 88.8889));
    assert!(close(row(by_sex, "male").estimate.unwrap(), 66.6667));
}

#[test]
fn reporting_rate_and_unreported_share_add_up_to_one() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    // Said whether they reported: H1 y, H3 n, H4 n, H6 y, H8 n, H11 n, H13 y, H15 n: 3 of 8.
    let rate = row(&t["reporting_rate.total"], "total");
    let hidden = row(&t["unreported_share.total"], "total");
    assert_eq!((rate.numerator, rate.denominator, rate.estimate), (Some(3.0), Some(8), Some(0.375)));
    assert_eq!((hidden.numerator, hidden.denominator, hidden.estimate), (Some(5.0), Some(8), Some(0.625)));
    // Wilson 3/8: 1 + z²/8 = 1.480182, centre 0.415551, half 0.278707.
    let ci = rate.ci.unwrap();
    assert_eq!(format!("{:.4} {:.4}", ci.low, ci.high), "0.1368 0.6943");
    // By sex too: women 2 of 5 reported, 3 of 5 not; men 1 of 3, 2 of 3.
    for sex in ["female", "male"] {
        let r = row(&t["reporting_rate.sex"], sex).estimate.unwrap();
        let u = row(&t["unreported_share.sex"], sex).estimate.unwrap();
        assert!((r + u - 1.0).abs() < 1e-12, "{sex}: {r} + {u}");
    }
    assert_eq!(row(&t["reporting_rate.sex"], "female").estimate, Some(0.4));
    // Perceived insecurity at night: H1 H3 H4 H6 H9 H11 H13 H15 = 8 of 16 (H18's `true` is
    // not an answer).
    let ins = row(&t["insecurity_perception.total"], "total");
    assert_eq!((ins.numerator, ins.denominator), (Some(8.0), Some(16)));
}

#[test]
fn age_bands_take_their_boundaries_and_leave_out_under_15() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    let a = &t["victimization_prevalence.age_band"];
    let keys: Vec<&str> = a.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["15_29", "30_44", "45_64", "65_plus"]);
    let labels: Vec<&str> = a.rows.iter().map(|r| r.label.es.as_str()).collect();
    assert_eq!(labels, ["15–29", "30–44", "45–64", "65+"]);
    // 15–29: H1 (15) H2 (29) H12 (22), victim H1.        1 of 3
    // 30–44: H3 (30) H4 (44) H10 (33) H13 (40).          3 of 4
    // 45–64: H5 (45) H6 (64) H11 (50) H15 (58).          3 of 4
    // 65+:   H7 (65) H9 (70) H14 (80).                   0 of 3
    // H8 (14) is in no band; H16 has no head.
    let got: Vec<(Option<f64>, Option<u64>)> = a.rows.iter().map(|r| (r.numerator, r.denominator)).collect();
    assert_eq!(got, [(Some(1.0), Some(3)), (Some(3.0), Some(4)), (Some(3.0), Some(4)), (Some(0.0), Some(3))]);
    // 0 of 3: the interval starts at 0 exactly and reaches z²/n / (1 + z²/n) = 0.561497.
    let ci = row(a, "65_plus").ci.unwrap();
    assert_eq!(ci.low, 0.0);
    assert_eq!(format!("{:.4}", ci.high), "0.5615");
}

#[test]
fn deleted_and_malformed_submissions_do_not_count() {
    let set = victimization();
    let mut subs = households();
    let t = tables(&set, &subs, 0);
    assert_eq!(row(&t["victimization_prevalence.total"], "total").denominator, Some(16));
    // Dropping H17 (deleted) and H18 (wrong types) changes nothing.
    subs.truncate(16);
    assert_eq!(tables(&set, &subs, 0), t);
    // Another form's submission is left out as well.
    let mut other = household("panama", Some(("female", 30)), "robbery", Some("yes"), "unsafe");
    other.insert("_form".into(), json!("bitacora_red_juvenil"));
    subs.push(other);
    assert_eq!(tables(&set, &subs, 0), t);
}

/// An activity of the youth log.
fn activity(date: &str, district: &str, topics: Option<&str>, attendance: [Value; 6]) -> Sub {
    let mut s = Sub::new();
    s.insert("_form".into(), json!("bitacora_red_juvenil"));
    s.insert("activity_type".into(), json!("workshop"));
    s.insert("activity_name".into(), json!("Taller"));
    s.insert("activity_date".into(), json!(date));
    s.insert("district".into(), json!(district));
    if let Some(t) = topics {
        s.insert("topics".into(), json!(t));
    }
    let names =
        ["women_under_18", "women_18_29", "women_30_plus", "men_under_18", "men_18_29", "men_30_plus"];
    for (n, v) in names.iter().zip(attendance) {
        s.insert(format!("attendance/{n}"), v);
    }
    s
}

/// | #  | date        | district      | topics                                | W<18 W18–29 W30+ M<18 M18–29 M30+ |
/// |----|-------------|---------------|---------------------------------------|-----------------------------------|
/// | A1 | 2026-01-15  | panama        | gender human_rights                   | 3 5 2 4 1 0   (15)                |
/// | A2 | 2026-01-30  | arraijan      | public_safety                         | 1 2 3 4 5 6   (21)                |
/// | A3 | 2026-03-02  | panama        | gender                                | 0 0 10 0 0 5  (15)                |
/// | A4 | 2026-03-31  | san_miguelito | gender public_spaces culture_of_peace | – 7 – – – –   (7)                 |
/// | A5 | "not a date"| panama        | –                                     | −3 – – – "4" – (4: −3 is missing) |
fn activities() -> Vec<Sub> {
    let n = Value::Null;
    vec![
        activity(
            "2026-01-15",
            "panama",
            Some("gender human_rights"),
            [json!(3), json!(5), json!(2), json!(4), json!(1), json!(0)],
        ),
        activity(
            "2026-01-30",
            "arraijan",
            Some("public_safety"),
            [json!(1), json!(2), json!(3), json!(4), json!(5), json!(6)],
        ),
        activity(
            "2026-03-02",
            "panama",
            Some("gender"),
            [json!(0), json!(0), json!(10), json!(0), json!(0), json!(5)],
        ),
        activity(
            "2026-03-31",
            "san_miguelito",
            Some("gender public_spaces culture_of_peace"),
            [n.clone(), json!(7), n.clone(), n.clone(), n.clone(), n.clone()],
        ),
        activity("not a date", "panama", None, [json!(-3), n.clone(), n.clone(), n.clone(), json!("4"), n]),
    ]
}

#[test]
fn youth_activities_by_month_district_and_topic() {
    let t = tables(&youth(), &activities(), MIN_CELL);
    assert_eq!(row(&t["activities.total"], "total").estimate, Some(5.0));
    // January A1 A2, February none (filled in), March A3 A4; A5 has no usable date.
    let m = &t["activities.month"];
    let got: Vec<(&str, Option<f64>)> = m.rows.iter().map(|r| (r.key.as_str(), r.estimate)).collect();
    assert_eq!(got, [("2026-01", Some(2.0)), ("2026-02", Some(0.0)), ("2026-03", Some(2.0))]);
    assert_eq!(row(m, "2026-03").label.es, "mar 2026");
    assert_eq!(row(m, "2026-03").label.en, "Mar 2026");
    // Panamá A1 A3 A5, Arraiján A2, San Miguelito A4, La Chorrera none; the log's cells are
    // not suppressed (`"suppress": false`), so the 1s show.
    let d = &t["activities.district"];
    let got: Vec<Option<f64>> = d.rows.iter().map(|r| r.estimate).collect();
    assert_eq!(got, [Some(3.0), Some(1.0), Some(1.0), Some(0.0)]);
    assert!(d.rows.iter().all(|r| !r.suppressed));
    // Topics overlap: gender A1 A3 A4; the others once each.
    let topics = &t["activities.topic"];
    assert!(topics.overlapping);
    let got: Vec<(&str, Option<f64>)> = topics.rows.iter().map(|r| (r.key.as_str(), r.estimate)).collect();
    assert_eq!(
        got,
        [
            ("gender", Some(3.0)),
            ("public_safety", Some(1.0)),
            ("human_rights", Some(1.0)),
            ("culture_of_peace", Some(1.0)),
            ("public_spaces", Some(1.0))
        ]
    );
}

#[test]
fn youth_attendance_sums_by_sex_and_age_group() {
    let t = tables(&youth(), &activities(), MIN_CELL);
    // W<18 3+1+0 (A5's −3 is no count) = 4; W18–29 5+2+0+7 = 14; W30+ 2+3+10 = 15;
    // M<18 4+4+0 = 8; M18–29 1+5+0+"4" = 10; M30+ 0+6+5 = 11.
    let f = &t["attendance_sex_age.fields"];
    let got: Vec<Option<f64>> = f.rows.iter().map(|r| r.estimate).collect();
    assert_eq!(got, [Some(4.0), Some(14.0), Some(15.0), Some(8.0), Some(10.0), Some(11.0)]);
    // Activities that answered women 18–29: A1 A2 A3 A4.
    assert_eq!(row(f, "women_18_29").denominator, Some(4));
    assert_eq!(row(&t["attendance_sex_age.total"], "total").estimate, Some(62.0));
    // By month: January 15 + 21, March 15 + 7.
    let m = &t["attendance_sex_age.month"];
    let got: Vec<Option<f64>> = m.rows.iter().map(|r| r.estimate).collect();
    assert_eq!(got, [Some(36.0), Some(0.0), Some(22.0)]);
    // Women 4 + 14 + 15 = 33, men 8 + 10 + 11 = 29.
    let s = &t["attendance_sex.fields"];
    assert_eq!(row(s, "women").estimate, Some(33.0));
    assert_eq!(row(s, "men").estimate, Some(29.0));
    // Under 18: 4 + 8; 18–29: 14 + 10; 30+: 15 + 11.
    let a = &t["attendance_age.fields"];
    let got: Vec<Option<f64>> = a.rows.iter().map(|r| r.estimate).collect();
    assert_eq!(got, [Some(12.0), Some(24.0), Some(26.0)]);
}

fn refused(def: Value, form: &Form) -> DefinitionError {
    IndicatorSet::from_json(&def.to_string(), form).unwrap_err()
}

#[test]
fn a_definition_naming_an_unknown_question_is_refused_with_its_path() {
    let f = victimization_form();
    let e = refused(
        json!({"indicators": [{"id": "x", "kind": "proportion", "title": "X",
            "numerator": {"all": [{"question": "crimes", "answered": true}, {"question": "no_such_question", "in": ["a"]}]},
            "denominator": {"question": "crimes", "answered": true}}]}),
        f,
    );
    assert_eq!(e.path, "$.indicators[0].numerator.all[1].question");
    assert!(e.message.contains("no_such_question"), "{e}");
    assert!(e.to_string().starts_with("$.indicators[0].numerator.all[1].question: "), "{e}");

    let e = refused(json!({"dimensions": {"d": {"question": "nowhere"}}, "indicators": []}), f);
    assert_eq!(e.path, "$.dimensions.d.question");
    assert!(e.message.contains("nowhere"));
}

#[test]
fn other_mistakes_in_a_definition_are_refused_with_their_path() {
    let f = victimization_form();
    let count = |extra: Value| {
        let mut ind = json!({"id": "c", "kind": "count", "title": {"es": "C"}});
        for (k, v) in extra.as_object().unwrap() {
            ind[k] = v.clone();
        }
        json!({"indicators": [ind]})
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"indicators": [{"id": "c", "kind": "count", "title": "C", "where": {"question": "crimes", "in": ["piracy"]}}]}),
            "$.indicators[0].where.in[0]",
            "piracy",
        ),
        (count(json!({"by": ["planet"]})), "$.indicators[0].by[0]", "planet"),
        (count(json!({"wher": {}})), "$.indicators[0].wher", "unknown key"),
        (json!({"form": "bitacora_red_juvenil", "indicators": []}), "$.form", "victimizacion_hogares"),
        (
            json!({"dimensions": {"sex": {"question": "member_sex"}}, "indicators": []}),
            "$.dimensions.sex",
            "row_where",
        ),
        (
            json!({"dimensions": {"d": {"question": "district", "row_where": {"question": "consent", "in": ["yes"]}}}, "indicators": []}),
            "$.dimensions.d.row_where",
            "not inside a repeat",
        ),
        (
            json!({"dimensions": {"d": {"question": "household_size"}}, "indicators": []}),
            "$.dimensions.d.question",
            "bands",
        ),
        (
            json!({"dimensions": {"a": {"question": "household_size", "bands": [{"min": 0, "max": 10}, {"min": 5}]}}, "indicators": []}),
            "$.dimensions.a.bands[1]",
            "overlaps",
        ),
        (
            json!({"indicators": [{"id": "r", "kind": "rate", "title": "R", "numerator": {"sum": ["district"]}, "denominator": {"question": "crimes", "answered": true}}]}),
            "$.indicators[0].numerator.sum[0]",
            "not a number",
        ),
        (
            json!({"indicators": [{"id": "s", "kind": "sum", "title": "S", "fields": [{"key": "k", "questions": ["household_size"]}], "by": ["fields", "fields"]}]}),
            "$.indicators[0].by[1]",
            "twice",
        ),
        (count(json!({"by": ["fields"]})), "$.indicators[0].by[0]", "sum"),
        (
            json!({"indicators": [{"id": "bad id", "kind": "count", "title": "C"}]}),
            "$.indicators[0].id",
            "id",
        ),
        (
            json!({"indicators": [{"id": "c", "kind": "median", "title": "C"}]}),
            "$.indicators[0].kind",
            "proportion",
        ),
        (json!({"indicators": [{"id": "c", "kind": "count"}]}), "$.indicators[0]", "title"),
        (
            json!({"indicators": [{"id": "c", "kind": "count", "title": "C", "where": {"question": "survey"}}]}),
            "$.indicators[0].where.question",
            "group",
        ),
        (json!([1, 2]), "$", "object"),
    ];
    for (def, path, needle) in cases {
        let e = refused(def.clone(), f);
        assert_eq!(e.path, path, "{def} gave {e}");
        assert!(e.message.contains(needle), "{def} gave {e}");
    }
    let e = IndicatorSet::from_json("{\"indicators\": [", f).unwrap_err();
    assert_eq!(e.path, "$");
    // Duplicate ids.
    let e = refused(
        json!({"indicators": [{"id": "c", "kind": "count", "title": "C"}, {"id": "c", "kind": "count", "title": "D"}]}),
        f,
    );
    assert_eq!(e.path, "$.indicators[1].id");
}

#[test]
fn the_example_definitions_load_against_the_demo_forms() {
    let v = victimization();
    let ids: Vec<&str> = v.indicator_ids().collect();
    assert_eq!(
        ids,
        [
            "victimization_prevalence",
            "incidents_per_100",
            "reporting_rate",
            "unreported_share",
            "insecurity_perception"
        ]
    );
    let y = youth();
    let ids: Vec<&str> = y.indicator_ids().collect();
    assert_eq!(ids, ["activities", "attendance_sex_age", "attendance_sex", "attendance_age"]);
    // Each definition names its own form.
    let e = IndicatorSet::from_json(&definition("bitacora_red_juvenil"), victimization_form()).unwrap_err();
    assert_eq!(e.path, "$.form");
    // Every table of every indicator, even over no submissions.
    let empty: Vec<Sub> = Vec::new();
    assert_eq!(v.compute(empty.iter(), 5).len(), 5 * 4);
    assert_eq!(y.compute(empty.iter(), 5).len(), 5 + 4 + 1 + 1);
}

#[test]
fn charts_escape_labels_and_mark_suppressed_cells() {
    let t = tables(&victimization(), &households(), MIN_CELL);
    let chart = svg::bar_chart(&t["victimization_prevalence.district"], "es");
    assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(chart.ends_with("</svg>"));
    assert!(chart.contains("Hogares victimizados en los últimos 12 meses"));
    assert!(chart.contains("suprimido"));
    assert!(chart.contains("url(#hatch-victimization_prevalence-district)"));
    assert!(chart.contains("Celdas con menos de 3 casos suprimidas."));
    // Panamá 2 of 7 = 28,6 % with its interval.
    assert!(chart.contains("28,6 % ["), "{chart}");
    let en = svg::bar_chart(&t["victimization_prevalence.sex"], "en");
    assert!(
        en.contains("Households victimized") && en.contains("Female") && en.contains("55.6 % [26.7–81.1]")
    );
    assert!(!en.contains("suppressed"));

    // A hostile label from a form or definition stays text.
    let mut table = t["victimization_prevalence.total"].clone();
    table.title = Text::both("<script>alert(1)</script> & \"quotes\" 'x' \u{0}");
    table.rows[0].label = Text::both("</text><a href=\"javascript:x\">");
    table.id = "x\"><script>".into();
    let chart = svg::bar_chart(&table, "es");
    assert!(!chart.contains("<script") && !chart.contains("<a ") && !chart.contains('\u{0}'), "{chart}");
    assert!(chart.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot; &#39;x&#39;"));
    // Counts and sums, and an empty table, draw too.
    let y = tables(&youth(), &activities(), 0);
    assert!(svg::bar_chart(&y["attendance_sex_age.fields"], "en").contains(">15<"));
    table.rows.clear();
    assert!(svg::bar_chart(&table, "es").contains("Sin datos"));
}

#[test]
fn wilson_matches_the_formula_at_the_edges() {
    assert_eq!(wilson(0, 0), None);
    let all = wilson(4, 4).unwrap();
    assert_eq!(all.high, 1.0);
    assert_eq!(format!("{:.4}", all.low), "0.5101");
    let none = wilson(0, 10).unwrap();
    assert_eq!(none.low, 0.0);
    assert_eq!(format!("{:.4}", none.high), "0.2775");
    // More successes than trials is read as all.
    assert_eq!(wilson(9, 4), wilson(4, 4));
}

/// Any JSON value anywhere in a submission.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "[a-z_ ]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("female"),
            Just("male"),
            Just("robbery none"),
            Just("2026-13-01"),
            Just("2026-02-30"),
            Just("ñ€😀")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn the_wilson_interval_contains_the_estimate_within_0_and_1(n in 1u64..2_000_000, k in 0u64..2_000_000) {
        let x = k % (n + 1);
        let ci = wilson(x, n).unwrap();
        let p = x as f64 / n as f64;
        prop_assert!(0.0 <= ci.low && ci.low <= p && p <= ci.high && ci.high <= 1.0, "{x}/{n}: {ci:?}");
    }

    #[test]
    fn any_values_compute_and_draw_without_panicking(
        values in proptest::collection::vec(any_json(), 12),
        min_cell in 0u64..4,
    ) {
        let paths = [
            "survey/location/district", "survey/victimization/crimes", "survey/perception/safe_night",
            "survey/victimization/crime_followup/reported", "_deleted", "_form",
            "survey/roster/0190a000-0000-7000-8000-000000000002/_row",
            "survey/roster/0190a000-0000-7000-8000-000000000002/member_relationship",
            "survey/roster/0190a000-0000-7000-8000-000000000002/member_sex",
            "survey/roster/0190a000-0000-7000-8000-000000000002/member_age",
            "survey/roster//member_age", "survey/roster/_row",
        ];
        let mut sub = households().swap_remove(0);
        for (p, v) in paths.iter().zip(values) {
            sub.insert((*p).to_owned(), v);
        }
        let subs = [sub.clone(), households().swap_remove(3), sub];
        for t in victimization().compute(subs.iter(), min_cell) {
            let _ = svg::bar_chart(&t, "es");
            for r in &t.rows {
                if let Some(ci) = r.ci {
                    prop_assert!(ci.low >= 0.0 && ci.high <= 1.0);
                }
            }
        }
        let mut act = activities().swap_remove(0);
        for (p, v) in ["activity_date", "district", "topics", "attendance/women_18_29"].iter().zip(subs[0].values()) {
            act.insert((*p).to_owned(), v.clone());
        }
        for t in youth().compute([act].iter(), min_cell) {
            let _ = svg::bar_chart(&t, "en");
        }
    }
}
