"""A form published with its media files, from Python against a real tejido-server: the phone
receives the CSV, XML and GeoJSON files with the form, and the form session offers their choices
and looks a code up with pulldata()."""

import asyncio
import pathlib

import pytest

from tejido import AnswerValue, TejidoStore

from server import SERVER_BIN, Server

MEDIA_FORM = pathlib.Path(__file__).resolve().parents[3] / "core/tests/forms/pyxform/media_form.xlsx"

needs_server = pytest.mark.skipif(not SERVER_BIN, reason="TEJIDO_SERVER_BIN is not set")


def choices(session, name):
    [q] = [q for q in session.visible_questions(None) if q.name == name]
    return [(c.name, c.label) for c in q.choices]


@needs_server
def test_media_files_travel_with_the_form_and_feed_the_session(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        project = server.admin("project", "create", "Observatorio")["id"]
        # The files come from media_form-media/ beside the form.
        published = server.admin("form", "publish", "--project", project, "--roles", "enumerator", str(MEDIA_FORM))
        assert published["media"] == ["crops.xml", "districts.csv", "places.csv", "wells.geojson"]
        member = server.admin("enroll", "--project", project, "--role", "enumerator", "--server", server.url)

        phone = TejidoStore.open(str(tmp_path / "phone.db"))
        asyncio.run(phone.enroll_with_link(member["link"], None))
        asyncio.run(phone.sync(None, None))
        [form] = [f for f in phone.list_forms() if f.form_id() == "media_form"]

        session = phone.start_form_session(form)
        assert choices(session, "district") == [("a", "Arraiján"), ("b", "La Chorrera")]
        session.set_answer("district", AnswerValue.TEXT("b"))
        assert choices(session, "place") == [("p3", "Barrio Colón")]
        session.set_answer("place", AnswerValue.TEXT("p3"))
        assert session.value("code") in (AnswerValue.TEXT("0805"), AnswerValue.INTEGER(805))
        assert choices(session, "well") == [("w1", "Pozo norte"), ("w2", "Pozo sur")]
        session.finalize()
    finally:
        server.stop()
