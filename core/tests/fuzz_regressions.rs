//! Inputs the fuzz targets in `fuzz/` found (docs/fuzzing.md), kept as tests that run without
//! nightly. Each names the target that found it.

use std::path::Path;

use tejido_core::form::import_xlsform_bytes;
use tejido_core::sync::wire::PushRequest;

fn input(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_inputs").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `wire`: a number in an answer came back one ulp off after a round trip through JSON
/// (serde_json's fast float parser is not exact; core needs `float_roundtrip`), so a change
/// re-serialized by the server or a device carried a different answer than the one written.
#[test]
fn wire_numbers_survive_a_round_trip_exactly() {
    for text in [
        "1.111111111117977e308",
        "1.7976931348623157e308",
        "5e-324",
        "0.1",
        "-79.52",
        "2.2250738585072014e-308",
    ] {
        let body = format!(
            r#"{{"changes":[{{"doc":"0192d8a4-8000-7000-8000-000000000001","collection":"submission",
            "replica":"0192d8a4-7c1e-7b3a-9f00-1a2b3c4d5e6f","hlc":"000192d8a47c1e00",
            "ops":[{{"field":"survey/big","value":{text}}}]}}]}}"#
        );
        let first: PushRequest = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{text}: {e}"));
        let again: PushRequest = serde_json::from_str(&serde_json::to_string(&first).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, again, "{text}");
        let written: f64 = text.parse().unwrap_or_default();
        assert_eq!(first.changes[0].ops[0].value.as_f64(), Some(written), "{text}");
    }
}

/// `xlsform_import`: an .xls whose compound-file sector chain runs past the end of the file
/// makes calamine's CFB reader panic (slice index out of range); the importer contains it and
/// reports a corrupt file, whatever the extension says.
#[test]
fn xls_with_a_sector_chain_past_the_end_is_a_corrupt_file() {
    let bytes = input("xlsform_import-cfb-chain-past-end.xls");
    for name in ["form.xls", "form.xlsx", "form"] {
        let e = import_xlsform_bytes(&bytes, name).expect_err(name);
        assert!(e.to_string().contains("not a readable spreadsheet"), "{name}: {e}");
    }
}

/// `xlsform_import`: an .xls whose directory sector chain loops made calamine append the same
/// sectors until memory ran out (a 2 GiB allocation, then an abort: `catch_unwind` cannot stop
/// that). The importer now checks the compound file's allocation table for loops first.
#[test]
fn xls_whose_sector_chain_loops_is_refused_before_reading() {
    let bytes = input("xlsform_import-cfb-directory-chain-loops.xls");
    for name in ["form.xls", "form"] {
        let e = import_xlsform_bytes(&bytes, name).expect_err(name);
        assert!(e.to_string().contains("loops"), "{name}: {e}");
    }
}

/// `xlsform_import`: an .xls with cells far apart (up to column 65535) made calamine allocate
/// one cell per row and column of their span, 137 GB, and abort; `.xls` sheets are not bounded
/// by the format as the importer assumed. Their extents are now checked before calamine reads
/// them ([`tejido_core::form::import::MAX_XLS_SPAN_CELLS`] and the row and column limits).
#[test]
fn xls_sheet_spanning_too_many_cells_is_refused_before_reading() {
    let bytes = input("xlsform_import-xls-cell-at-column-65535.xls");
    for name in ["form.xls", "form"] {
        let e = import_xlsform_bytes(&bytes, name).expect_err(name);
        assert!(e.to_string().contains("sheets may span at most"), "{name}: {e}");
    }
}

/// `xlsform_import`: an .xls whose DIMENSIONS record names a first column past 255 (or past its
/// last column). calamine then takes the first column as 0 and reserves a cell for every row
/// and column up to the last (gigabytes, then an abort), while the check took the record at its
/// word and saw a narrow sheet. The check now reads the record as calamine does.
#[test]
fn xls_dimensions_with_a_first_column_past_255_are_read_as_calamine_reads_them() {
    let bytes = input("xlsform_import-xls-dimensions-first-column-past-255.xls");
    for name in ["form.xls", "form"] {
        let e = import_xlsform_bytes(&bytes, name).expect_err(name);
        assert!(e.to_string().contains("sheets may span at most"), "{name}: {e}");
    }
}
