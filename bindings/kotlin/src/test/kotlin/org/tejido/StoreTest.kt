package org.tejido

import java.nio.file.Files
import java.nio.file.Path
import java.util.Collections
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

/** The device store from Kotlin: answers, repeats, finalize, attachments, typed errors, threads. */
class StoreTest {
    @TempDir
    lateinit var dir: Path

    private fun open(): TejidoStore = TejidoStore.open(dir.resolve("device.db").toString())

    private fun answers(store: TejidoStore, id: String): Map<String, AnswerValue> =
        store.readSubmission(id).answers.associate { it.field to it.value }

    @Test
    fun versionIsTheCrateVersion() {
        assertEquals("0.1.0", tejidoVersion())
    }

    @Test
    fun typedAnswersReadBackAndFinalize(): Unit = open().use { store ->
        val sub = store.startSubmission("youth_activity_log", "2026-11")
        store.setAnswer(sub, "place", AnswerValue.Text("Parque Omar"))
        store.setAnswer(sub, "total", AnswerValue.Integer(25))
        store.setAnswer(sub, "hours", AnswerValue.Decimal(2.5))
        store.setAnswer(sub, "outdoors", AnswerValue.Bool(true))
        store.setAnswer(sub, "date", AnswerValue.Date("2026-11-28"))
        store.setAnswer(sub, "remarks", AnswerValue.Text("borrar"))
        store.clearAnswer(sub, "remarks")

        assertEquals(
            mapOf(
                "place" to AnswerValue.Text("Parque Omar"),
                "total" to AnswerValue.Integer(25),
                "hours" to AnswerValue.Decimal(2.5),
                "outdoors" to AnswerValue.Bool(true),
                "date" to AnswerValue.Text("2026-11-28"),
            ),
            answers(store, sub),
        )
        val draft = store.listSubmissions(SubmissionFilter.DRAFTS).single()
        assertEquals(sub, draft.id)
        assertEquals("youth_activity_log", draft.formId)
        assertEquals(SubmissionStatus.DRAFT, draft.status)
        assertEquals(0uL, store.pendingChangeCount())

        store.finalize(sub)
        assertTrue(store.listSubmissions(SubmissionFilter.DRAFTS).isEmpty())
        val done = store.listSubmissions(SubmissionFilter.FINALIZED).single()
        assertEquals(SubmissionStatus.FINALIZED, done.status)
        assertNull(done.reviewState)
        assertEquals(1uL, store.pendingChangeCount())
        val e = assertThrows<TejidoException.NotAllowed> { store.finalize(sub) }
        assertTrue(e.message!!.contains("already finalized"), e.message)
    }

    @Test
    fun repeatRowsAreAddressedById(): Unit = open().use { store ->
        val sub = store.startSubmission("household", "1")
        val first = store.addRepeatRow(sub, "members")
        val second = store.addRepeatRow(sub, "members")
        store.setAnswer(sub, "members/$first/age", AnswerValue.Integer(34))
        store.setAnswer(sub, "members/$second/age", AnswerValue.Integer(7))
        assertEquals(listOf(first, second), store.repeatRows(sub, "members"))

        store.removeRepeatRow(sub, "members", first)
        assertEquals(listOf(second), store.repeatRows(sub, "members"))
        assertThrows<TejidoException.NotFound> { store.removeRepeatRow(sub, "members", first) }
        assertThrows<TejidoException.InvalidInput> { store.removeRepeatRow(sub, "members", "not-a-row") }
    }

    @Test
    fun attachmentsAreKeptByHash(): Unit = open().use { store ->
        val sub = store.startSubmission("youth_activity_log", "2026-11")
        val photo = ByteArray(10_000) { (it % 251).toByte() }
        val sha = store.attachFile(sub, "photo", photo, "image/jpeg")
        assertEquals(64, sha.length)
        assertEquals(AnswerValue.Attachment(sha), answers(store, sub)["photo"])
        assertArrayEquals(photo, Files.readAllBytes(Path.of(store.attachmentPath(sha))))

        val camera = dir.resolve("camera.jpg")
        Files.write(camera, byteArrayOf(-1, -40, 1, 2, 3))
        val sha2 = store.attachFileFromPath(sub, "photo2", camera.toString(), "image/jpeg")
        assertEquals(AnswerValue.Attachment(sha2), answers(store, sub)["photo2"])
        assertThrows<TejidoException.Io> {
            store.attachFileFromPath(sub, "photo3", dir.resolve("missing.jpg").toString(), "image/jpeg")
        }
        assertThrows<TejidoException.NotFound> { store.attachmentPath("0".repeat(64)) }
    }

    @Test
    fun malformedAnswersAreTypedErrorsWithoutTheAnswer(): Unit = open().use { store ->
        val sub = store.startSubmission("youth_activity_log", "2026-11")
        val cases = listOf(
            AnswerValue.Date("violencia-2026-31-31") to "YYYY-MM-DD",
            AnswerValue.Decimal(Double.NaN) to "finite",
            AnswerValue.Attachment("violencia") to "SHA-256",
            AnswerValue.Json("{violencia") to "JSON",
        )
        for ((value, hint) in cases) {
            val e = assertThrows<TejidoException.InvalidAnswer> { store.setAnswer(sub, "q", value) }
            assertTrue(e.message!!.contains(hint), e.message)
            assertFalse(e.message!!.contains("violencia"), e.message)
        }
        assertTrue(answers(store, sub).isEmpty())
    }

    @Test
    fun badFieldNamesAndIdsAreTypedErrors(): Unit = open().use { store ->
        val sub = store.startSubmission("f", "1")
        assertThrows<TejidoException.UnknownQuestion> { store.setAnswer(sub, "a b", AnswerValue.Text("x")) }
        assertThrows<TejidoException.UnknownQuestion> { store.setAnswer(sub, "", AnswerValue.Text("x")) }
        assertThrows<TejidoException.InvalidInput> { store.setAnswer("not-an-id", "a", AnswerValue.Text("x")) }
        val unknown = "0190a3b4-0000-7000-8000-000000000000"
        assertThrows<TejidoException.NotFound> { store.setAnswer(unknown, "a", AnswerValue.Text("x")) }
        // Every case is a TejidoException, so one catch handles them all.
        assertThrows<TejidoException> { store.readSubmission(unknown) }
    }

    @Test
    fun missingAndCorruptStoreFiles() {
        val missing = dir.resolve("nowhere").resolve("device.db")
        val e = assertThrows<TejidoException.StoreMissing> { TejidoStore.openExisting(missing.toString()) }
        assertTrue(e.message!!.contains("no store"), e.message)
        assertFalse(Files.exists(missing))

        val corrupt = dir.resolve("corrupt.db")
        Files.write(corrupt, "this is not sqlite at all ".repeat(200).toByteArray())
        val c = assertThrows<TejidoException.StoreCorrupt> { TejidoStore.open(corrupt.toString()) }
        assertTrue(c.message!!.contains("corrupt"), c.message)
        assertThrows<TejidoException.StoreCorrupt> { TejidoStore.openExisting(corrupt.toString()) }

        val path = dir.resolve("device.db").toString()
        val (sub, replica) = TejidoStore.open(path).use { first ->
            val sub = first.startSubmission("f", "1")
            first.setAnswer(sub, "a", AnswerValue.Integer(1))
            // One owner per store: a second handle while the first is open is refused.
            assertThrows<TejidoException.StoreLocked> { TejidoStore.openExisting(path) }
            sub to first.replicaId()
        }
        // Once the first handle is closed, the store opens again with its data and identity.
        TejidoStore.openExisting(path).use { again ->
            assertEquals(replica, again.replicaId())
            assertEquals(mapOf("a" to AnswerValue.Integer(1)), answers(again, sub))
        }
    }

    @Test
    fun aPlainStoreEncryptedInPlaceSealsAnswersAndPhotos() {
        val path = dir.resolve("device.db").toString()
        val key = ByteArray(32) { it.toByte() }
        val photo = byteArrayOf(-1, -40) + "KT-PHOTO-CANARY-".repeat(6000).toByteArray()
        val (sub, sha) = TejidoStore.open(path).use { plain ->
            val sub = plain.startSubmission("f", "1")
            plain.setAnswer(sub, "a", AnswerValue.Text("KT-ANSWER-CANARY"))
            val sha = plain.attachFile(sub, "photo", photo, "image/jpeg")
            assertThrows<TejidoException.StoreLocked> { TejidoStore.encryptInPlace(path, key) }
            sub to sha
        }
        TejidoStore.encryptInPlace(path, key).use { store ->
            assertEquals(AnswerValue.Text("KT-ANSWER-CANARY"), answers(store, sub)["a"])
            assertArrayEquals(photo, store.readAttachment(sha))
            val viewer = dir.resolve("viewer.jpg")
            assertEquals(photo.size.toULong(), store.exportAttachment(sha, viewer.toString()))
            assertArrayEquals(photo, Files.readAllBytes(viewer))
            Files.delete(viewer)
            assertThrows<TejidoException.NotAllowed> { store.attachmentPath(sha) }
        }
        Files.walk(dir).use { paths ->
            for (f in paths.filter { Files.isRegularFile(it) }.toList()) {
                val text = String(Files.readAllBytes(f), Charsets.ISO_8859_1)
                assertFalse(text.contains("KT-PHOTO-CANARY"), f.toString())
                assertFalse(text.contains("KT-ANSWER-CANARY"), f.toString())
            }
        }
        val e = assertThrows<TejidoException.StoreEncrypted> { TejidoStore.open(path) }
        assertTrue(e.message!!.contains("is encrypted"), e.message)
        assertThrows<TejidoException.WrongKey> { TejidoStore.openEncrypted(path, ByteArray(32) { 9 }) }

        val sealed = dir.resolve("device.db.attachments").resolve(sha)
        val bytes = Files.readAllBytes(sealed)
        bytes[bytes.size / 2] = (bytes[bytes.size / 2].toInt() xor 1).toByte()
        Files.write(sealed, bytes)
        TejidoStore.openEncrypted(path, key).use { store ->
            assertThrows<TejidoException.AttachmentDamaged> { store.readAttachment(sha) }
        }
    }

    @Test
    fun choicesReadBackAsWrittenAndACoordinatorReviews(): Unit = open().use { store ->
        val sub = store.startSubmission("f", "1")
        val picks = AnswerValue.Choices(listOf("drugs", "robberies"))
        store.setAnswer(sub, "problems", picks)
        store.setAnswer(sub, "age", AnswerValue.Integer(200))
        assertEquals(picks, answers(store, sub)["problems"])
        store.finalize(sub)

        val comment = store.reviewSubmission(sub, "has_issues", "¿200 años?")
        assertTrue(comment != null)
        assertNull(store.reviewSubmission(sub, "approved", null))
        val reply = store.addComment(sub, "Corregido")
        assertThrows<TejidoException.InvalidInput> { store.reviewSubmission(sub, "maybe", null) }

        val history = store.reviewHistory(sub)
        assertEquals("approved", history.currentState)
        assertTrue(history.concurrentStates.isEmpty())
        assertEquals(listOf("has_issues", "approved"), history.reviews.map { it.state })
        assertTrue(history.reviews.all { it.replica == store.replicaId() })
        assertEquals(
            listOf(Triple(comment, "¿200 años?", "has_issues"), Triple(reply, "Corregido", null)),
            history.comments.map { Triple(it.id, it.text, it.reviewState) },
        )
        assertEquals("approved", store.readSubmission(sub).reviewState)
        assertEquals(5uL, store.pendingChangeCount())
    }

    @Test
    fun eightThreadsSetAnswersWhileAnotherReads(): Unit = open().use { store ->
        val sub = store.startSubmission("f", "1")
        store.finalize(sub)
        val perThread = 150
        val errors = Collections.synchronizedList(mutableListOf<Throwable>())
        val done = AtomicBoolean(false)
        val reads = AtomicInteger(0)
        val reader = thread {
            try {
                while (!done.get()) {
                    store.readSubmission(sub)
                    store.listSubmissions(SubmissionFilter.ALL)
                    store.pendingChangeCount()
                    reads.incrementAndGet()
                }
            } catch (t: Throwable) {
                errors.add(t)
            }
        }
        val writers = (0 until 8).map { t ->
            thread {
                try {
                    for (i in 0 until perThread) {
                        store.setAnswer(sub, "t$t/q$i", AnswerValue.Integer((t * 1000 + i).toLong()))
                    }
                } catch (e: Throwable) {
                    errors.add(e)
                }
            }
        }
        writers.forEach { it.join() }
        done.set(true)
        reader.join()

        assertEquals(emptyList<Throwable>(), errors)
        assertTrue(reads.get() > 0)
        val expected = (0 until 8).flatMap { t ->
            (0 until perThread).map { i -> "t$t/q$i" to AnswerValue.Integer((t * 1000 + i).toLong()) }
        }.toMap()
        assertEquals(expected, answers(store, sub))
        assertEquals((1 + 8 * perThread).toULong(), store.pendingChangeCount())
    }
}
