"""The device store from Python: answers, repeats, finalize, attachments, typed errors, threads."""

import gc
import threading

import pytest

import tejido
from tejido import AnswerValue, SubmissionFilter, SubmissionStatus, TejidoError, TejidoStore


@pytest.fixture
def store(tmp_path):
    return TejidoStore.open(str(tmp_path / "device.db"))


def answers(store, submission):
    return {a.field: a.value for a in store.read_submission(submission).answers}


def test_version_is_the_crate_version():
    assert tejido.tejido_version() == "0.1.0"


def test_typed_answers_read_back_and_finalize(store):
    sub = store.start_submission("youth_activity_log", "2026-11")
    store.set_answer(sub, "place", AnswerValue.TEXT("Parque Omar"))
    store.set_answer(sub, "total", AnswerValue.INTEGER(25))
    store.set_answer(sub, "hours", AnswerValue.DECIMAL(2.5))
    store.set_answer(sub, "outdoors", AnswerValue.BOOL(True))
    store.set_answer(sub, "date", AnswerValue.DATE("2026-11-28"))
    store.set_answer(sub, "remarks", AnswerValue.TEXT("borrar"))
    store.clear_answer(sub, "remarks")

    got = answers(store, sub)
    assert got == {
        "place": AnswerValue.TEXT("Parque Omar"),
        "total": AnswerValue.INTEGER(25),
        "hours": AnswerValue.DECIMAL(2.5),
        "outdoors": AnswerValue.BOOL(True),
        "date": AnswerValue.TEXT("2026-11-28"),
    }
    [summary] = store.list_submissions(SubmissionFilter.DRAFTS)
    assert summary.id == sub
    assert summary.form_id == "youth_activity_log"
    assert summary.status == SubmissionStatus.DRAFT
    assert store.pending_change_count() == 0

    store.finalize(sub)
    assert store.list_submissions(SubmissionFilter.DRAFTS) == []
    [summary] = store.list_submissions(SubmissionFilter.FINALIZED)
    assert summary.status == SubmissionStatus.FINALIZED
    assert summary.review_state is None
    assert store.pending_change_count() == 1
    with pytest.raises(TejidoError.NotAllowed, match="already finalized"):
        store.finalize(sub)


def test_repeat_rows_are_addressed_by_id(store):
    sub = store.start_submission("household", "1")
    first = store.add_repeat_row(sub, "members")
    second = store.add_repeat_row(sub, "members")
    store.set_answer(sub, f"members/{first}/age", AnswerValue.INTEGER(34))
    store.set_answer(sub, f"members/{second}/age", AnswerValue.INTEGER(7))
    assert store.repeat_rows(sub, "members") == [first, second]

    store.remove_repeat_row(sub, "members", first)
    assert store.repeat_rows(sub, "members") == [second]
    with pytest.raises(TejidoError.NotFound):
        store.remove_repeat_row(sub, "members", first)
    with pytest.raises(TejidoError.InvalidInput):
        store.remove_repeat_row(sub, "members", "not-a-row")


def test_attachments_are_kept_by_hash(store, tmp_path):
    sub = store.start_submission("youth_activity_log", "2026-11")
    photo = bytes(range(256)) * 40
    sha = store.attach_file(sub, "photo", photo, "image/jpeg")
    assert len(sha) == 64
    assert answers(store, sub)["photo"] == AnswerValue.ATTACHMENT(sha)
    with open(store.attachment_path(sha), "rb") as f:
        assert f.read() == photo

    on_disk = tmp_path / "camera.jpg"
    on_disk.write_bytes(b"\xff\xd8 second photo")
    sha2 = store.attach_file_from_path(sub, "photo2", str(on_disk), "image/jpeg")
    assert answers(store, sub)["photo2"] == AnswerValue.ATTACHMENT(sha2)
    with pytest.raises(TejidoError.Io):
        store.attach_file_from_path(sub, "photo3", str(tmp_path / "missing.jpg"), "image/jpeg")
    with pytest.raises(TejidoError.NotFound):
        store.attachment_path("0" * 64)


def test_malformed_answers_raise_typed_errors_without_the_answer(store):
    sub = store.start_submission("youth_activity_log", "2026-11")
    cases = [
        (AnswerValue.DATE("violencia-2026-31-31"), "YYYY-MM-DD"),
        (AnswerValue.DECIMAL(float("nan")), "finite"),
        (AnswerValue.ATTACHMENT("violencia"), "SHA-256"),
        (AnswerValue.JSON("{violencia"), "JSON"),
    ]
    for value, hint in cases:
        with pytest.raises(TejidoError.InvalidAnswer) as err:
            store.set_answer(sub, "q", value)
        assert hint in str(err.value)
        assert "violencia" not in str(err.value)
    assert answers(store, sub) == {}


def test_bad_field_names_and_ids_are_typed_errors(store):
    sub = store.start_submission("f", "1")
    with pytest.raises(TejidoError.UnknownQuestion):
        store.set_answer(sub, "a b", AnswerValue.TEXT("x"))
    with pytest.raises(TejidoError.UnknownQuestion):
        store.set_answer(sub, "", AnswerValue.TEXT("x"))
    with pytest.raises(TejidoError.InvalidInput):
        store.set_answer("not-an-id", "a", AnswerValue.TEXT("x"))
    with pytest.raises(TejidoError.NotFound):
        store.set_answer("0190a3b4-0000-7000-8000-000000000000", "a", AnswerValue.TEXT("x"))
    # Every variant is a TejidoError, so one except clause catches them all.
    with pytest.raises(TejidoError):
        store.read_submission("0190a3b4-0000-7000-8000-000000000000")


def test_missing_and_corrupt_store_files(tmp_path):
    missing = tmp_path / "nowhere" / "device.db"
    with pytest.raises(TejidoError.StoreMissing, match="no store"):
        TejidoStore.open_existing(str(missing))
    assert not missing.exists()

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite at all " * 200)
    with pytest.raises(TejidoError.StoreCorrupt, match="corrupt"):
        TejidoStore.open(str(corrupt))
    with pytest.raises(TejidoError.StoreCorrupt):
        TejidoStore.open_existing(str(corrupt))

    # A store that exists opens again with its data and its identity.
    path = str(tmp_path / "device.db")
    first = TejidoStore.open(path)
    sub = first.start_submission("f", "1")
    first.set_answer(sub, "a", AnswerValue.INTEGER(1))
    # One owner per store: a second handle while the first is open is refused.
    with pytest.raises(TejidoError.StoreLocked, match="already open"):
        TejidoStore.open_existing(path)
    replica = first.replica_id()
    del first
    gc.collect()
    again = TejidoStore.open_existing(path)
    assert again.replica_id() == replica
    assert answers(again, sub) == {"a": AnswerValue.INTEGER(1)}


def test_eight_threads_set_answers_while_another_reads(store):
    sub = store.start_submission("f", "1")
    store.finalize(sub)
    per_thread = 150
    errors = []
    done = threading.Event()

    def writer(t):
        try:
            for i in range(per_thread):
                store.set_answer(sub, f"t{t}/q{i}", AnswerValue.INTEGER(t * 1000 + i))
        except Exception as e:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(e)

    reads = 0

    def reader():
        nonlocal reads
        try:
            while not done.is_set():
                store.read_submission(sub)
                store.list_submissions(SubmissionFilter.ALL)
                store.pending_change_count()
                reads += 1
        except Exception as e:
            errors.append(e)

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    r.join()

    assert errors == []
    assert reads > 0
    got = answers(store, sub)
    expected = {f"t{t}/q{i}": AnswerValue.INTEGER(t * 1000 + i) for t in range(8) for i in range(per_thread)}
    assert got == expected
    # Finalized: every edit is one pending change, none lost.
    assert store.pending_change_count() == 1 + 8 * per_thread


KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PHOTO = b"\xff\xd8\xff\xe0" + b"PY-PHOTO-CANARY-" * 6000


def files_beside(tmp_path):
    return [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_plain_store_encrypted_in_place_seals_answers_and_photos(tmp_path):
    path = str(tmp_path / "device.db")
    plain = TejidoStore.open(path)
    sub = plain.start_submission("f", "1")
    plain.set_answer(sub, "a", AnswerValue.TEXT("PY-ANSWER-CANARY"))
    sha = plain.attach_file(sub, "photo", PHOTO, "image/jpeg")
    with pytest.raises(TejidoError.StoreLocked):
        TejidoStore.encrypt_in_place(path, KEY)
    del plain
    gc.collect()

    store = TejidoStore.encrypt_in_place(path, KEY)
    assert answers(store, sub)["a"] == AnswerValue.TEXT("PY-ANSWER-CANARY")
    assert store.read_attachment(sha) == PHOTO
    out = tmp_path / "viewer" / "photo.jpg"
    out.parent.mkdir()
    assert store.export_attachment(sha, str(out)) == len(PHOTO)
    assert out.read_bytes() == PHOTO
    out.unlink()
    with pytest.raises(TejidoError.NotAllowed, match="encrypted on disk"):
        store.attachment_path(sha)
    del store
    gc.collect()
    for f in files_beside(tmp_path):
        data = f.read_bytes()
        assert b"PY-PHOTO-CANARY" not in data, f
        assert b"PY-ANSWER-CANARY" not in data, f

    with pytest.raises(TejidoError.StoreEncrypted, match="is encrypted"):
        TejidoStore.open(path)
    with pytest.raises(TejidoError.WrongKey):
        TejidoStore.open_encrypted(path, OTHER_KEY)

    # A tampered attachment is an error, never wrong bytes.
    sealed = tmp_path / "device.db.attachments" / sha
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 1
    sealed.write_bytes(bytes(data))
    store = TejidoStore.open_encrypted(path, KEY)
    with pytest.raises(TejidoError.AttachmentDamaged, match="tampered"):
        store.read_attachment(sha)


def test_choices_read_back_as_written_and_a_coordinator_reviews(store):
    sub = store.start_submission("f", "1")
    picks = AnswerValue.CHOICES(["drugs", "robberies"])
    store.set_answer(sub, "problems", picks)
    store.set_answer(sub, "age", AnswerValue.INTEGER(200))
    assert answers(store, sub)["problems"] == picks
    store.finalize(sub)

    comment = store.review_submission(sub, "has_issues", "¿200 años?")
    assert comment is not None
    assert store.review_submission(sub, "approved", None) is None
    reply = store.add_comment(sub, "Corregido")
    with pytest.raises(TejidoError.InvalidInput, match="approved, has_issues"):
        store.review_submission(sub, "maybe", None)

    history = store.review_history(sub)
    assert history.current_state == "approved"
    assert history.concurrent_states == []
    assert [r.state for r in history.reviews] == ["has_issues", "approved"]
    assert all(r.replica == store.replica_id() for r in history.reviews)
    assert [(c.id, c.text, c.review_state) for c in history.comments] == [
        (comment, "¿200 años?", "has_issues"),
        (reply, "Corregido", None),
    ]
    assert store.read_submission(sub).review_state == "approved"
    # The submission, both reviews, the review's comment and the reply all wait to sync.
    assert store.pending_change_count() == 5


def test_device_metadata_is_set_read_and_cleared(store):
    assert store.device_metadata("username") is None
    store.set_device_metadata("username", " ana.p ")
    store.set_device_metadata("phonenumber", "+507 6000-0000")
    assert store.device_metadata("username") == "ana.p"
    assert store.device_metadata("phonenumber") == "+507 6000-0000"
    with pytest.raises(TejidoError.InvalidInput):
        store.set_device_metadata("imei", "x")
    with pytest.raises(TejidoError.InvalidInput) as err:
        store.set_device_metadata("email", "violencia" * 40)
    assert "violencia" not in str(err.value)
    assert store.device_metadata("email") is None
    store.set_device_metadata("username", None)
    assert store.device_metadata("username") is None
