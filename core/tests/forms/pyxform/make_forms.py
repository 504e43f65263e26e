#!/usr/bin/env python3
"""Writes the small XLSForms of core's differential test against pyxform
(core/tests/form_pyxform_diff.rs), one per feature. Those named `refused_*` are forms pyxform
refuses; Tejido must refuse them too, naming the row.

Run: `.venv-pyxform/bin/python core/tests/forms/pyxform/make_forms.py` (openpyxl comes with
pyxform, which scripts/setup installs). The .xlsx files are committed beside this script;
regenerate them after editing it.
"""

from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).resolve().parent


def book(name, sheets):
    """sheets: {sheet name: [header row, row, ...]}, in order."""
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(list(row))
    wb.save(HERE / f"{name}.xlsx")


SURVEY = ["type", "name", "label"]
YES_NO = [["list_name", "name", "label"], ["yes_no", "yes", "Yes"], ["yes_no", "no", "No"]]

book("basic_text", {"survey": [SURVEY, ["text", "a", "A"]]})

book("metadata", {"survey": [
    SURVEY,
    ["start", "start", ""],
    ["end", "end", ""],
    ["today", "today", ""],
    ["deviceid", "deviceid", ""],
    ["imei", "imei", ""],
    ["simserial", "simserial", ""],
    ["subscriberid", "subscriberid", ""],
    ["phonenumber", "phonenumber", ""],
    ["username", "username", ""],
    ["email", "email", ""],
    ["audit", "audit", ""],
    ["uri:deviceid", "uri_deviceid", ""],
    ["uri:simserial", "uri_simserial", ""],
    ["uri:subscriberid", "uri_subscriberid", ""],
    ["uri:phonenumber", "uri_phonenumber", ""],
    ["uri:username", "uri_username", ""],
    ["uri:email", "uri_email", ""],
    ["phone number", "contact_phone", "A phone number to call back"],
    ["text", "a", "A"],
]})

book("legacy_selects", {
    "survey": [
        SURVEY,
        ["select one from yes_no", "q1", "One"],
        ["select all that apply from yes_no", "q2", "Several"],
        ["select one from yes_no or specify other", "q3", "One or other"],
        ["select_one yes_no or_other", "q4", "One or other"],
        ["select all that apply from yes_no or specify other", "q5", "Several or other"],
        ["select_multiple yes_no or_other", "q6", "Several or other"],
    ],
    "choices": YES_NO,
})

book("legacy_loop", {
    "survey": [
        SURVEY,
        ["begin loop over yes_no", "per_answer", "For each answer"],
        ["integer", "count", "How many for ${per_answer}?"],
        ["end loop", "", ""],
    ],
    "choices": YES_NO,
})

book("lone_sheet1", {"Sheet1": [SURVEY, ["text", "a", "A"], ["integer", "b", "B"]]})

book("choice_duplicates", {
    "survey": [SURVEY, ["select_one l", "q", "Q"]],
    "choices": [["list_name", "name", "label"], ["l", "a", "A"], ["l", "a", "A again"], ["l", "b", "B"]],
    "settings": [["form_id", "allow_choice_duplicates"], ["choice_duplicates", "yes"]],
})

book("nameless_notes", {"survey": [
    SURVEY,
    ["note", "", "Welcome"],
    ["text", "a", "A"],
    ["note", "", "Thank you"],
]})

book("group_child_group_name", {"survey": [
    SURVEY,
    ["begin group", "household", "Household"],
    ["integer", "household", "How many in the household?"],
    ["end group", "", ""],
]})

book("comment_rows", {"survey": [
    ["_category"] + SURVEY + [""],
    ["Background (a comment row: text only under a column pyxform does not know)", "", "", "", ""],
    ["", "text", "a", "A", 1200],
    ["", "", "", "", 600],
    ["", "integer", "b", "B"],
]})

book("form_id_values", {
    "survey": [SURVEY, ["text", "a", "A"]],
    "settings": [["form_id", "version"], ["2024 household survey", "1"]],
})

book("entities", {
    "survey": [SURVEY, ["text", "tree_name", "Name"], ["geopoint", "location", "Where"]],
    "entities": [["list_name", "label"], ["trees", "${tree_name}"]],
})

book("select_from_file", {"survey": [
    SURVEY,
    ["select_one_from_file places.csv", "place", "Place"],
    ["select_multiple_from_file crops.xml", "crops", "Crops"],
]})

book("pulldata", {"survey": [
    SURVEY + ["calculation"],
    ["text", "code", "Code"],
    ["calculate", "district", "", "pulldata('places', 'district', 'code', ${code})"],
]})

book("select_external", {
    "survey": [SURVEY + ["choice_filter"], ["select_one_external places", "place", "Place", "district='a'"]],
    "external_choices": [["list_name", "name", "label", "district"], ["places", "p1", "P1", "a"]],
})

book("refused_unknown_type", {"survey": [SURVEY, ["text", "a", "A"], ["textt", "b", "B"]]})
book("refused_unclosed_group", {"survey": [SURVEY, ["begin group", "g", "G"], ["text", "a", "A"]]})
book("refused_end_without_begin", {"survey": [SURVEY, ["text", "a", "A"], ["end group", "", ""]]})
book("refused_duplicate_name", {"survey": [SURVEY, ["text", "a", "A"], ["text", "a", "A again"]]})
book("refused_missing_list", {"survey": [SURVEY, ["select_one nowhere", "a", "A"]]})
book("refused_unknown_reference", {"survey": [SURVEY + ["relevant"], ["text", "a", "A", "${b} = 1"]]})
book("refused_duplicate_header", {"survey": [SURVEY + ["label"], ["text", "a", "A", "A2"]]})
book("refused_choice_duplicates", {
    "survey": [SURVEY, ["select_one l", "q", "Q"]],
    "choices": [["list_name", "name", "label"], ["l", "a", "A"], ["l", "a", "A again"]],
})
book("refused_bad_name", {"survey": [SURVEY, ["text", "a b", "A"]]})
book("refused_no_name", {"survey": [SURVEY, ["text", "", "A"]]})
book("refused_audit_name", {"survey": [SURVEY, ["audit", "log", ""]]})
book("refused_ambiguous_reference", {"survey": [
    SURVEY + ["relevant"],
    ["begin group", "g1", "G1"], ["integer", "age", "Age"], ["end group", "", ""],
    ["begin group", "g2", "G2"], ["integer", "age", "Age"], ["end group", "", ""],
    ["text", "why", "Why?", "${age} > 10"],
]})
book("refused_unclosed_loop", {
    "survey": [SURVEY, ["begin loop over yes_no", "l", "L"], ["integer", "n", "N"]],
    "choices": YES_NO,
})
book("refused_loop_without_list", {
    "survey": [SURVEY, ["begin loop over nowhere", "l", "L"], ["integer", "n", "N"], ["end loop", "", ""]],
    "choices": YES_NO,
})
book("refused_uri_text", {"survey": [SURVEY, ["uri:text", "a", "A"]]})
book("refused_end_loop_closes_group", {"survey": [SURVEY, ["begin group", "g", "G"], ["text", "a", "A"], ["end loop", "", ""]]})
# Errors pyxform leaves to ODK Validate (and so accepts with --skip_validate); Tejido refuses
# them at import (docs/forms.md lists them).
book("stricter_unterminated_string", {"survey": [SURVEY + ["relevant"], ["text", "a", "A"], ["text", "b", "B", "${a} = 'yes"]]})
book("stricter_typographic_quotes", {"survey": [SURVEY + ["relevant"], ["text", "a", "A"], ["text", "b", "B", "${a} = \u2018yes\u2019"]]})
