"""Repeat rows in a form session: the household roster of the victimization survey."""

from pathlib import Path

import pytest

from tejido import AnswerValue, TejidoError, TejidoForm, TejidoStore

from server import FORMS_DIR

SURVEY = FORMS_DIR / "victimizacion_hogares.xlsx"


@pytest.mark.skipif(not SURVEY.exists(), reason=f"{SURVEY} is not there yet")
def test_roster_rows_are_added_answered_and_removed(tmp_path):
    store = TejidoStore.open(str(tmp_path / "device.db"))
    session = store.start_form_session(TejidoForm.import_xlsform(str(SURVEY)))
    session.set_answer("consent", AnswerValue.TEXT("yes"))
    session.set_answer("household_size", AnswerValue.INTEGER(2))

    first = session.add_repeat_row("roster")
    second = session.add_repeat_row("roster")
    assert session.repeat_rows("roster") == [first, second]
    session.set_answer(f"survey/roster/{first}/member_name", AnswerValue.TEXT("M. G."))
    session.set_answer(f"survey/roster/{first}/member_age", AnswerValue.INTEGER(41))
    session.set_answer(f"survey/roster/{second}/member_age", AnswerValue.INTEGER(9))
    assert session.value("members_listed") in (AnswerValue.TEXT("2"), AnswerValue.INTEGER(2))

    with pytest.raises(TejidoError.InvalidAnswer, match="member_age"):
        session.set_answer(f"survey/roster/{first}/member_age", AnswerValue.TEXT("cuarenta"))
    with pytest.raises(TejidoError.UnknownQuestion, match="member_name"):
        session.set_answer("member_name", AnswerValue.TEXT("sin fila"))  # inside a repeat: needs its row

    paths = {q.path for q in session.visible_questions("en")}
    assert f"survey/roster/{first}/member_age" in paths and f"survey/roster/{second}/member_age" in paths
    # Required questions of each row are reported by path.
    assert any(i.path == f"survey/roster/{second}/member_name" for i in session.errors("en"))

    session.remove_repeat_row("roster", second)
    assert session.repeat_rows("roster") == [first]
    with pytest.raises(TejidoError.NotFound):
        session.remove_repeat_row("roster", second)
    answers = {a.field: a.value for a in store.read_submission(session.submission_id()).answers}
    assert answers[f"survey/roster/{first}/member_age"] in (AnswerValue.INTEGER(41), AnswerValue.TEXT("41"))


AUDIT_FORM = Path(__file__).resolve().parents[3] / "core/tests/forms/pyxform/audit_parameters.xlsx"


def test_the_audit_log_is_attached_at_finalize(tmp_path):
    store = TejidoStore.open(str(tmp_path / "device.db"))
    store.set_device_metadata("username", "ana")
    form = TejidoForm.import_xlsform(str(AUDIT_FORM))
    session = store.start_form_session(form)
    session.set_answer("name", AnswerValue.TEXT("Ana"))
    row = session.add_repeat_row("member")
    session.set_answer(f"member/{row}/age", AnswerValue.INTEGER(30))
    # The app is closed; the enumerator comes back to the draft.
    session = store.resume_form_session(form, session.submission_id())
    session.set_answer(f"member/{row}/age", AnswerValue.INTEGER(31))
    session.finalize()

    answers = {a.field: a.value for a in store.read_submission(session.submission_id()).answers}
    audit = answers["audit"]
    assert isinstance(audit, AnswerValue.ATTACHMENT)
    lines = store.read_attachment(audit.sha256).decode().splitlines()
    assert lines[0] == "event,node,start,end,old-value,new-value,user"
    events = [line.split(",") for line in lines[1:]]
    assert [(e[0], e[1], e[4], e[5], e[6]) for e in events] == [
        ("form start", "", "", "", "ana"),
        ("question", "/data/name", "", "Ana", "ana"),
        ("add repeat", "/data/member[1]", "", "", "ana"),
        ("question", "/data/member[1]/age", "", "30", "ana"),
        ("form resume", "", "", "", "ana"),
        ("question", "/data/member[1]/age", "30", "31", "ana"),
        ("form finalize", "", "", "", "ana"),
    ]
