package org.tejido

import java.nio.file.Path
import java.util.Collections
import kotlin.concurrent.thread
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

/**
 * A youth-network member's field day, end to end, from Kotlin against a real tejido-server:
 * enroll with the QR setup link, fill the activity log with a photo, go offline, fill two more,
 * sync when the server is back, receive a coordinator's "has issues" and comment, fix and sync.
 */
class FieldDayTest {
    @TempDir
    lateinit var dir: Path

    private val photo = ByteArray(30_000) { (it % 256).toByte() }

    private fun fill(session: TejidoFormSession, name: String, total: Long) {
        session.setAnswer("activity_type", AnswerValue.Text("workshop"))
        session.setAnswer("activity_name", AnswerValue.Text(name))
        session.setAnswer("activity_date", AnswerValue.Date("2026-11-20"))
        session.setAnswer("district", AnswerValue.Text("san_miguelito"))
        session.setAnswer("corregimiento", AnswerValue.Text("san_belisario_porras"))
        session.setAnswer("place", AnswerValue.Text("Cancha del barrio"))
        session.setAnswer("place_gps", AnswerValue.Geopoint(9.03, -79.51, null, 6.0))
        session.setAnswer("topics", AnswerValue.Choices(listOf("gender", "public_safety")))
        val parts = listOf("women_under_18", "women_18_29", "women_30_plus", "men_under_18", "men_18_29", "men_30_plus")
        parts.forEachIndexed { i, part ->
            session.setAnswer(part, AnswerValue.Integer(total / 6 + if (i < total % 6) 1 else 0))
        }
        session.setAnswer("total_attendees", AnswerValue.Integer(total))
        session.attachFile("photo_1", photo + name.toByteArray(), "image/jpeg")
    }

    @Test
    fun formSessionRefusesWrongTypesAndUnknownQuestions() {
        assumeTrue(TestServer.activityLog.exists(), "${TestServer.activityLog} is not there yet")
        TejidoStore.open(dir.resolve("device.db").toString()).use { store ->
            val form = TejidoForm.importXlsform(TestServer.activityLog.toString())
            val session = store.startFormSession(form)
            val wrong = assertThrows<TejidoException.InvalidAnswer> {
                session.setAnswer("total_attendees", AnswerValue.Text("muchos jóvenes"))
            }
            assertTrue(wrong.message!!.contains("total_attendees"), wrong.message)
            assertTrue(!wrong.message!!.contains("muchos"), wrong.message)
            val unknown = assertThrows<TejidoException.UnknownQuestion> {
                session.setAnswer("favourite_colour", AnswerValue.Text("azul"))
            }
            assertTrue(unknown.message!!.contains("favourite_colour"), unknown.message)
            assertThrows<TejidoException.Incomplete> { session.finalize() }

            fill(session, "Taller de cultura de paz", 12)
            session.setAnswer("total_attendees", AnswerValue.Integer(13))
            val issue = session.errors("en").single()
            assertEquals("total_attendees", issue.name)
            assertEquals(IssueKind.CONSTRAINT, issue.kind)
            session.setAnswer("total_attendees", AnswerValue.Integer(12))
            assertEquals(emptyList<FormIssue>(), session.errors("es"))
            val shown = session.visibleQuestions("es").associateBy { it.name }
            assertEquals(AnswerValue.Choices(listOf("gender", "public_safety")), shown.getValue("topics").value)
            assertEquals("Fecha", shown.getValue("activity_date").label)
            session.finalize()
            assertEquals(SubmissionStatus.FINALIZED, store.listSubmissions(SubmissionFilter.ALL).single().status)
        }
    }

    @Test
    fun fieldDayEndToEnd() {
        assumeTrue(TestServer.activityLog.exists(), "${TestServer.activityLog} is not there yet")
        assumeTrue(TestServer.bin.isNotEmpty(), "tejido.server.bin is not set")
        val server = TestServer(dir.resolve("server")).start()
        try {
            val project = field(server.admin("project", "create", "Red juvenil Arraiján"), "id")
            server.admin("form", "publish", "--project", project, TestServer.activityLog.toString())
            val youth = server.admin("enroll", "--project", project, "--role", "youth", "--server", server.url)
            val boss = server.admin("enroll", "--project", project, "--role", "coordinator", "--server", server.url)

            TejidoStore.open(dir.resolve("phone.db").toString()).use { phone ->
                val enrollment = runBlocking { phone.enrollWithLink(field(youth, "link"), "teléfono de Luis") }
                assertEquals("youth", enrollment.role)
                runBlocking { phone.sync(null, null) }
                val form = phone.listForms().single { it.formId() == "bitacora_red_juvenil" }

                val first = phone.startFormSession(form)
                fill(first, "Taller de género", 10)
                first.finalize()

                server.stop()
                for (name in listOf("Campaña en el parque", "Recuperación de la cancha")) {
                    val s = phone.startFormSession(form)
                    fill(s, name, 8)
                    s.finalize()
                }
                val pending = phone.pendingChangeCount()
                // Offline, the sync keeps retrying; cancelling the coroutine stops it, losing nothing.
                val result = runBlocking { withTimeoutOrNull(1_000) { phone.sync(null, null) } }
                assertNull(result)
                assertEquals(pending, phone.pendingChangeCount())

                server.start()
                val events = Collections.synchronizedList(mutableListOf<SyncProgress>())
                val listener = object : SyncListener {
                    override fun onProgress(progress: SyncProgress) {
                        events.add(progress)
                    }
                }
                val summary = runBlocking { phone.sync(listener, null) }
                assertEquals(3uL, summary.attachmentsUploaded)
                assertEquals(pending, summary.changesPushed)
                assertEquals(0uL, phone.pendingChangeCount())
                assertEquals(SyncPhase.DONE, events.last().phase)

                val ids = phone.listSubmissions(SubmissionFilter.FINALIZED).map { it.id }
                assertEquals(3, ids.size)
                assertEquals(200, server.review(ids[2], "has_issues", "La foto no muestra la actividad."))
                runBlocking { phone.sync(null, null) }
                val reviewed = phone.listSubmissions(SubmissionFilter.ALL).associateBy { it.id }
                assertEquals("has_issues", reviewed.getValue(ids[2]).reviewState)
                assertEquals("La foto no muestra la actividad.", reviewed.getValue(ids[2]).comments.single().text)
                assertTrue(reviewed.getValue(ids[0]).comments.isEmpty())

                val fix = phone.resumeFormSession(phone.formOfSubmission(ids[2]), ids[2])
                val newPhoto = fix.attachFile("photo_1", ByteArray(20_000) { 7 }, "image/jpeg")
                val fixed = runBlocking { phone.sync(null, null) }
                assertEquals(1uL, fixed.changesPushed)
                assertEquals(1uL, fixed.attachmentsUploaded)

                TejidoStore.open(dir.resolve("office.db").toString()).use { office ->
                    runBlocking { office.enroll(server.url, field(boss, "code"), "oficina") }
                    runBlocking { office.sync(null, null) }
                    val seen = office.readSubmission(ids[2]).answers.associate { it.field to it.value }
                    assertEquals(AnswerValue.Attachment(newPhoto), seen["photo_1"])
                    assertEquals(3, office.listSubmissions(SubmissionFilter.ALL).size)
                }
            }
        } finally {
            server.stop()
        }
    }

    /** A new project's enrollment codes for an enumerator and for a coordinator. */
    private fun enumeratorAndCoordinator(server: TestServer): Pair<String, String> {
        val project = field(server.admin("project", "create", "Observatorio"), "id")
        val member = server.admin("enroll", "--project", project, "--role", "enumerator", "--server", server.url)
        val boss = server.admin("enroll", "--project", project, "--role", "coordinator", "--server", server.url)
        return member to boss
    }

    @Test
    fun eightThreadsWriteAnswersWhileSyncsRun() {
        assumeTrue(TestServer.bin.isNotEmpty(), "tejido.server.bin is not set")
        val server = TestServer(dir.resolve("server")).start()
        try {
            val (member, boss) = enumeratorAndCoordinator(server)
            TejidoStore.open(dir.resolve("phone.db").toString()).use { phone ->
                runBlocking { phone.enrollWithLink(field(member, "link"), null) }
                val sub = phone.startSubmission("victimizacion_hogares", "1")
                phone.finalize(sub)
                val perThread = 60
                val errors = Collections.synchronizedList(mutableListOf<Throwable>())
                val writers = (0 until 8).map { t ->
                    thread {
                        try {
                            for (i in 0 until perThread) {
                                phone.setAnswer(sub, "t$t/q$i", AnswerValue.Integer((t * 1000 + i).toLong()))
                            }
                        } catch (e: Throwable) {
                            errors.add(e)
                        }
                    }
                }
                var syncs = 0
                while (writers.any { it.isAlive } || syncs == 0) {
                    runBlocking { phone.sync(null, null) }
                    syncs++
                }
                writers.forEach { it.join() }
                runBlocking { phone.sync(null, null) }
                assertEquals(emptyList<Throwable>(), errors)
                assertEquals(0uL, phone.pendingChangeCount())

                TejidoStore.open(dir.resolve("office.db").toString()).use { office ->
                    runBlocking { office.enrollWithLink(field(boss, "link"), null) }
                    runBlocking { office.sync(null, null) }
                    val got = office.readSubmission(sub).answers.associate { it.field to it.value }
                    val expected = (0 until 8).flatMap { t ->
                        (0 until perThread).map { i -> "t$t/q$i" to AnswerValue.Integer((t * 1000 + i).toLong()) }
                    }.toMap()
                    assertEquals(expected, got)
                }
            }
        } finally {
            server.stop()
        }
    }

    @Test
    fun aCoordinatorResolvesAConflictAndTheEnumeratorSeesOneValue() {
        assumeTrue(TestServer.bin.isNotEmpty(), "tejido.server.bin is not set")
        val server = TestServer(dir.resolve("server")).start()
        try {
            val (member, boss) = enumeratorAndCoordinator(server)
            TejidoStore.open(dir.resolve("phone.db").toString()).use { phone ->
                TejidoStore.open(dir.resolve("office.db").toString()).use { office ->
                    runBlocking { phone.enrollWithLink(field(member, "link"), null) }
                    runBlocking { office.enrollWithLink(field(boss, "link"), null) }
                    val sub = phone.startSubmission("victimizacion_hogares", "1")
                    phone.setAnswer(sub, "household_size", AnswerValue.Integer(4))
                    phone.finalize(sub)
                    runBlocking { phone.sync(null, null) }
                    runBlocking { office.sync(null, null) }
                    assertEquals(emptyList<DocumentConflicts>(), office.conflicts())

                    // Each corrects the same answer without having seen the other's correction.
                    phone.setAnswer(sub, "household_size", AnswerValue.Integer(5))
                    office.setAnswer(sub, "household_size", AnswerValue.Integer(6))
                    runBlocking { phone.sync(null, null) }
                    runBlocking { office.sync(null, null) }

                    val conflicts = office.conflicts()
                    assertEquals(listOf(sub), conflicts.map { it.documentId })
                    val conflict = conflicts.single().fields.single()
                    assertEquals("household_size", conflict.field)
                    assertEquals(
                        setOf(AnswerValue.Integer(5), AnswerValue.Integer(6)),
                        (listOf(conflict.current) + conflict.others).toSet(),
                    )
                    assertEquals(2, conflict.others.size + 1)

                    office.resolveConflict(sub, "household_size", AnswerValue.Integer(7))
                    assertEquals(emptyList<DocumentConflicts>(), office.conflicts())
                    runBlocking { office.sync(null, null) }
                    runBlocking { phone.sync(null, null) }

                    assertEquals(emptyList<DocumentConflicts>(), phone.conflicts())
                    val seen = phone.readSubmission(sub)
                    assertEquals(emptyList<FieldConflict>(), seen.conflicts)
                    val values = seen.answers.filter { it.field == "household_size" }.map { it.value }
                    assertEquals(listOf<AnswerValue>(AnswerValue.Integer(7)), values)
                }
            }
        } finally {
            server.stop()
        }
    }

    @Test
    fun syncBeforeEnrollingIsATypedError() {
        TejidoStore.open(dir.resolve("phone.db").toString()).use { phone ->
            assertNull(phone.enrollment())
            assertThrows<TejidoException.NotAllowed> { runBlocking { phone.sync(null, null) } }
            assertThrows<TejidoException.InvalidInput> { runBlocking { phone.enrollWithLink("no es un enlace", null) } }
        }
    }
}
