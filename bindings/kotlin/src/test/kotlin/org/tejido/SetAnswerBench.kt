package org.tejido

import java.io.File
import java.nio.file.Path
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.condition.EnabledIfSystemProperty
import org.junit.jupiter.api.io.TempDir

/**
 * The Kotlin side of scripts/bench-bindings: sets N answers through the generated bindings and
 * writes one result line to the file named by `tejido.bench.out`. Runs only when that is set.
 */
@EnabledIfSystemProperty(named = "tejido.bench.out", matches = ".+")
class SetAnswerBench {
    @TempDir
    lateinit var dir: Path

    @Test
    fun setAnswers() {
        val n = (System.getProperty("tejido.bench.n") ?: "10000").toInt()
        TejidoStore.open(dir.resolve("kotlin-bench.db").toString()).use { store ->
            val sub = store.startSubmission("bench", "1")
            // Warm the JIT and JNA's method lookups on a separate submission first.
            val warm = store.startSubmission("bench", "1")
            for (i in 0 until 3_000) store.setAnswer(warm, "q${i % 100}", AnswerValue.Integer(i.toLong()))
            val start = System.nanoTime()
            for (i in 0 until n) store.setAnswer(sub, "q${i % 100}", AnswerValue.Integer(i.toLong()))
            val secs = (System.nanoTime() - start) / 1e9
            val line = "ffi.kotlin.set_answer_per_s = %.0f answers/s".format(n / secs)
            File(System.getProperty("tejido.bench.out")).writeText(line + "\n")
        }
    }
}
