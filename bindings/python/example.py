"""Fill in a youth-network activity log and sync it: the device API from Python in one page.

    scripts/build-bindings                          # builds the library and bindings/generated
    cargo run -p tejido-server -- project create "Red juvenil"
    cargo run -p tejido-server -- form publish --project "Red juvenil" examples/forms/bitacora_red_juvenil.xlsx
    cargo run -p tejido-server -- enroll --project "Red juvenil" --role youth   # prints a setup link
    cargo run -p tejido-server -- serve &
    PYTHONPATH=bindings/generated/python python3 bindings/python/example.py 'tejido://enroll?server=…&code=…'

Answers live in phone.db beside you; run it again to add another activity (no link needed).
"""

import asyncio
import sys

import tejido
from tejido import AnswerValue


class Progress(tejido.SyncListener):
    def on_progress(self, p):
        total = f"/{p.items_total}" if p.items_total is not None else ""
        print(f"  sync: {p.phase.name.lower()} {p.items_done}{total}, {p.bytes_sent} bytes sent")


async def main():
    store = tejido.TejidoStore.open("phone.db")
    if store.enrollment() is None:
        if len(sys.argv) < 2:
            sys.exit("usage: example.py SETUP_LINK   (the link `tejido-server enroll` printed)")
        enrollment = await store.enroll_with_link(sys.argv[1], "example.py")
        print(f"enrolled in {enrollment.project_name} as {enrollment.role}")
    await store.sync(Progress(), None)  # receives the published forms

    form = next(f for f in store.list_forms() if f.form_id() == "bitacora_red_juvenil")
    session = store.start_form_session(form)
    session.set_answer("activity_type", AnswerValue.TEXT("workshop"))
    session.set_answer("activity_name", AnswerValue.TEXT("Taller de cultura de paz"))
    session.set_answer("activity_date", AnswerValue.DATE("2026-11-20"))
    session.set_answer("district", AnswerValue.TEXT("arraijan"))
    session.set_answer("corregimiento", AnswerValue.TEXT("arr_burunga"))
    session.set_answer("place", AnswerValue.TEXT("Escuela de Burunga"))
    session.set_answer("place_gps", AnswerValue.GEOPOINT(8.95, -79.66, None, 8.0))
    session.set_answer("topics", AnswerValue.CHOICES(["culture_of_peace", "gender"]))
    for part, n in [("women_under_18", 6), ("women_18_29", 3), ("women_30_plus", 1),
                    ("men_under_18", 5), ("men_18_29", 2), ("men_30_plus", 0)]:
        session.set_answer(part, AnswerValue.INTEGER(n))
    session.set_answer("total_attendees", AnswerValue.INTEGER(17))
    session.attach_file("photo_1", b"\xff\xd8\xff\xe0 a photo from the camera", "image/jpeg")

    for q in session.visible_questions("es"):
        shown = ", ".join(f"{k}={v}" for k, v in vars(q.value).items())
        print(f"{q.label}: {shown}" + (f"  <- {q.error}" if q.error else ""))
    try:
        session.finalize()
    except tejido.TejidoError.Incomplete as e:
        sys.exit(f"not finished: {e}")

    summary = await store.sync(Progress(), None)
    print(f"sent {summary.changes_pushed} change(s) and {summary.attachments_uploaded} photo(s)")
    for s in store.list_submissions(tejido.SubmissionFilter.ALL):
        comments = "; ".join(c.text for c in s.comments)
        print(f"{s.id} {s.status.name.lower()} review={s.review_state or '-'} {comments}")


if __name__ == "__main__":
    asyncio.run(main())
