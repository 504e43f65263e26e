"""A youth-network member's field day, end to end, from Python against a real tejido-server:
enroll with the QR setup link, fill the activity log with a photo, go offline, fill two more,
sync when the server is back, receive a coordinator's "has issues" and comment, fix and sync.
Also: form sessions' typed errors, and eight threads writing answers while syncs run."""

import asyncio
import threading

import pytest

from tejido import (
    AnswerValue,
    IssueKind,
    SubmissionFilter,
    SubmissionStatus,
    SyncCancellation,
    SyncListener,
    SyncPhase,
    TejidoError,
    TejidoForm,
    TejidoStore,
)

from server import ACTIVITY_LOG, SERVER_BIN, Server

needs_form = pytest.mark.skipif(not ACTIVITY_LOG.exists(), reason=f"{ACTIVITY_LOG} is not there yet")
needs_server = pytest.mark.skipif(not SERVER_BIN, reason="TEJIDO_SERVER_BIN is not set")

PHOTO = bytes(range(256)) * 120  # a 30 KB "photo"


class Progress(SyncListener):
    def __init__(self):
        self.events = []

    def on_progress(self, progress):
        self.events.append(progress)


def fill_activity(session, name, total=10, photo=None):
    """Answers every required question of the activity log; `total` is split over the groups."""
    session.set_answer("activity_type", AnswerValue.TEXT("workshop"))
    session.set_answer("activity_name", AnswerValue.TEXT(name))
    session.set_answer("activity_date", AnswerValue.DATE("2026-11-20"))
    session.set_answer("district", AnswerValue.TEXT("san_miguelito"))
    session.set_answer("corregimiento", AnswerValue.TEXT("san_belisario_porras"))
    session.set_answer("place", AnswerValue.TEXT("Cancha del barrio"))
    session.set_answer("place_gps", AnswerValue.GEOPOINT(9.03, -79.51, None, 6.0))
    session.set_answer("topics", AnswerValue.CHOICES(["gender", "human_rights"]))
    parts = ["women_under_18", "women_18_29", "women_30_plus", "men_under_18", "men_18_29", "men_30_plus"]
    for i, part in enumerate(parts):
        session.set_answer(part, AnswerValue.INTEGER(total // 6 + (1 if i < total % 6 else 0)))
    session.set_answer("total_attendees", AnswerValue.INTEGER(total))
    session.attach_file("photo_1", photo or PHOTO + name.encode(), "image/jpeg")


@needs_form
def test_form_session_refuses_wrong_types_and_unknown_questions(tmp_path):
    store = TejidoStore.open(str(tmp_path / "device.db"))
    form = TejidoForm.import_xlsform(str(ACTIVITY_LOG))
    assert form.form_id() == "bitacora_red_juvenil"
    session = store.start_form_session(form)

    with pytest.raises(TejidoError.InvalidAnswer, match="total_attendees"):
        session.set_answer("total_attendees", AnswerValue.TEXT("muchos jóvenes"))
    with pytest.raises(TejidoError.InvalidAnswer, match="activity_date"):
        session.set_answer("activity_date", AnswerValue.INTEGER(20))
    with pytest.raises(TejidoError.InvalidAnswer):
        session.set_answer("topics", AnswerValue.CHOICES(["astrology"]))
    with pytest.raises(TejidoError.UnknownQuestion, match="favourite_colour"):
        session.set_answer("favourite_colour", AnswerValue.TEXT("azul"))
    assert session.value("total_attendees") == AnswerValue.NULL()

    with pytest.raises(TejidoError.Incomplete, match="activity_name"):
        session.finalize()
    issues = session.errors("en")
    assert any(i.name == "activity_name" and i.kind == IssueKind.REQUIRED for i in issues)

    fill_activity(session, "Taller de derechos humanos", total=12)
    session.set_answer("total_attendees", AnswerValue.INTEGER(13))
    [issue] = session.errors("en")
    assert issue.name == "total_attendees" and issue.kind == IssueKind.CONSTRAINT
    assert "add up to the total" in issue.message
    session.set_answer("total_attendees", AnswerValue.INTEGER(12))
    assert session.errors("es") == []

    shown = {q.name: q for q in session.visible_questions("es")}
    assert shown["activity_date"].value == AnswerValue.DATE("2026-11-20")
    assert shown["topics"].value == AnswerValue.CHOICES(["gender", "human_rights"])
    assert shown["activity_date"].label == "Fecha"
    assert "activity_type_other" not in shown  # relevant only for "other"

    session.finalize()
    [summary] = store.list_submissions(SubmissionFilter.FINALIZED)
    assert summary.id == session.submission_id()
    assert summary.form_id == "bitacora_red_juvenil"


@needs_form
@needs_server
def test_field_day_end_to_end(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        project = server.admin("project", "create", "Red juvenil San Miguelito")["id"]
        server.admin("form", "publish", "--project", project, str(ACTIVITY_LOG))
        youth = server.admin("enroll", "--project", project, "--role", "youth", "--server", server.url)
        coordinator = server.admin("enroll", "--project", project, "--role", "coordinator", "--server", server.url)

        # Morning: enroll with the QR link and receive the forms.
        phone = TejidoStore.open(str(tmp_path / "phone.db"))
        enrollment = asyncio.run(phone.enroll_with_link(youth["link"], "teléfono de Ana"))
        assert enrollment.role == "youth"
        assert enrollment.server_url == server.url
        asyncio.run(phone.sync(None, None))
        [form] = [f for f in phone.list_forms() if f.form_id() == "bitacora_red_juvenil"]

        first = phone.start_form_session(form)
        fill_activity(first, "Taller de género")
        first.finalize()

        # The server goes away (no coverage); two more activities are logged offline.
        server.stop()
        for name in ["Campaña en el parque", "Recuperación de la cancha"]:
            session = phone.start_form_session(form)
            fill_activity(session, name, total=8)
            session.finalize()
        assert len(phone.list_submissions(SubmissionFilter.FINALIZED)) == 3
        pending = phone.pending_change_count()

        # A sync attempted offline keeps retrying until the user cancels it: nothing is lost.
        cancellation = SyncCancellation()
        timer = threading.Timer(1.0, cancellation.cancel)
        timer.start()
        with pytest.raises(TejidoError.Cancelled):
            asyncio.run(phone.sync(None, cancellation))
        timer.join()
        assert phone.pending_change_count() == pending

        # Back in coverage: everything goes up, photos included.
        server.start()
        progress = Progress()
        summary = asyncio.run(phone.sync(progress, None))
        assert summary.attachments_uploaded == 3
        assert summary.changes_pushed == pending
        assert phone.pending_change_count() == 0
        assert progress.events[-1].phase == SyncPhase.DONE
        assert any(e.phase == SyncPhase.PUSHING for e in progress.events)

        # A coordinator sends the second one back with a comment.
        ids = [s.id for s in phone.list_submissions(SubmissionFilter.FINALIZED)]
        server.review(ids[1], "has_issues", "Falta el nombre completo del lugar.")
        asyncio.run(phone.sync(None, None))
        reviewed = {s.id: s for s in phone.list_submissions(SubmissionFilter.ALL)}
        assert reviewed[ids[1]].review_state == "has_issues"
        [comment] = reviewed[ids[1]].comments
        assert comment.text == "Falta el nombre completo del lugar."
        assert reviewed[ids[0]].review_state is None and reviewed[ids[0]].comments == []
        assert phone.read_submission(ids[1]).comments == [comment]

        # The member fixes the answer; it syncs and the coordinator sees it.
        assert phone.form_of_submission(ids[1]).version() == form.version()
        fix = phone.resume_form_session(phone.form_of_submission(ids[1]), ids[1])
        fix.set_answer("place", AnswerValue.TEXT("Cancha techada de Belisario Porras"))
        assert phone.pending_change_count() == 1
        assert asyncio.run(phone.sync(None, None)).changes_pushed == 1
        assert phone.pending_change_count() == 0

        office = TejidoStore.open(str(tmp_path / "office.db"))
        asyncio.run(office.enroll(server.url, coordinator["code"], "oficina"))
        asyncio.run(office.sync(None, None))
        seen = {a.field: a.value for a in office.read_submission(ids[1]).answers}
        assert seen["place"] == AnswerValue.TEXT("Cancha techada de Belisario Porras")
        assert office.read_submission(ids[1]).review_state == "has_issues"
        assert len(office.list_submissions(SubmissionFilter.ALL)) == 3
    finally:
        server.stop()


def enumerator_and_coordinator(server):
    """A new project's enrollment codes for an enumerator and for a coordinator."""
    project = server.admin("project", "create", "Observatorio")["id"]
    member = server.admin("enroll", "--project", project, "--role", "enumerator", "--server", server.url)
    boss = server.admin("enroll", "--project", project, "--role", "coordinator", "--server", server.url)
    return member, boss


@needs_server
def test_eight_threads_write_answers_while_syncs_run(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        member, boss = enumerator_and_coordinator(server)
        phone = TejidoStore.open(str(tmp_path / "phone.db"))
        asyncio.run(phone.enroll_with_link(member["link"], None))
        sub = phone.start_submission("victimizacion_hogares", "1")
        phone.finalize(sub)

        per_thread = 60
        errors = []

        def writer(t):
            try:
                for i in range(per_thread):
                    phone.set_answer(sub, f"t{t}/q{i}", AnswerValue.INTEGER(t * 1000 + i))
            except Exception as e:  # surfaced by the assertion below
                errors.append(e)

        writers = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for w in writers:
            w.start()
        syncs = 0
        while any(w.is_alive() for w in writers) or syncs == 0:
            asyncio.run(phone.sync(None, None))
            syncs += 1
        for w in writers:
            w.join()
        asyncio.run(phone.sync(None, None))
        assert errors == []
        assert phone.pending_change_count() == 0

        office = TejidoStore.open(str(tmp_path / "office.db"))
        asyncio.run(office.enroll_with_link(boss["link"], None))
        asyncio.run(office.sync(None, None))
        got = {a.field: a.value for a in office.read_submission(sub).answers}
        assert got == {f"t{t}/q{i}": AnswerValue.INTEGER(t * 1000 + i) for t in range(8) for i in range(per_thread)}
    finally:
        server.stop()


@needs_server
def test_a_coordinator_resolves_a_conflict_and_the_enumerator_sees_one_value(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        member, boss = enumerator_and_coordinator(server)
        phone = TejidoStore.open(str(tmp_path / "phone.db"))
        office = TejidoStore.open(str(tmp_path / "office.db"))
        asyncio.run(phone.enroll_with_link(member["link"], None))
        asyncio.run(office.enroll_with_link(boss["link"], None))
        sub = phone.start_submission("victimizacion_hogares", "1")
        phone.set_answer(sub, "household_size", AnswerValue.INTEGER(4))
        phone.finalize(sub)
        asyncio.run(phone.sync(None, None))
        asyncio.run(office.sync(None, None))
        assert office.conflicts() == []

        # Each corrects the same answer without having seen the other's correction.
        phone.set_answer(sub, "household_size", AnswerValue.INTEGER(5))
        office.set_answer(sub, "household_size", AnswerValue.INTEGER(6))
        asyncio.run(phone.sync(None, None))
        asyncio.run(office.sync(None, None))

        [doc] = office.conflicts()
        assert doc.document_id == sub
        [conflict] = doc.fields
        assert conflict.field == "household_size"
        values = [conflict.current, *conflict.others]
        assert len(values) == 2
        assert AnswerValue.INTEGER(5) in values and AnswerValue.INTEGER(6) in values

        office.resolve_conflict(sub, "household_size", AnswerValue.INTEGER(7))
        assert office.conflicts() == []
        asyncio.run(office.sync(None, None))
        asyncio.run(phone.sync(None, None))

        assert phone.conflicts() == []
        seen = phone.read_submission(sub)
        assert seen.conflicts == []
        assert [a.value for a in seen.answers if a.field == "household_size"] == [AnswerValue.INTEGER(7)]
    finally:
        server.stop()


def test_sync_before_enrolling_is_a_typed_error(tmp_path):
    phone = TejidoStore.open(str(tmp_path / "phone.db"))
    assert phone.enrollment() is None
    with pytest.raises(TejidoError.NotAllowed, match="not enrolled"):
        asyncio.run(phone.sync(None, None))
    sub = phone.start_submission("bitacora_red_juvenil", "1")
    with pytest.raises(TejidoError.NotFound, match="has not received the form"):
        phone.form_of_submission(sub)
    with pytest.raises(TejidoError.InvalidInput, match="setup link"):
        asyncio.run(phone.enroll_with_link("no es un enlace", None))
