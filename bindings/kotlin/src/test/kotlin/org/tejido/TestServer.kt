package org.tejido

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Path
import java.util.concurrent.TimeUnit

/** A real `tejido-server` process on 127.0.0.1 and its admin CLI, for the end-to-end tests. */
class TestServer(private val data: Path) {
    companion object {
        val bin: String = System.getProperty("tejido.server.bin") ?: System.getenv("TEJIDO_SERVER_BIN") ?: ""
        val formsDir: File =
            File(System.getProperty("tejido.forms.dir") ?: System.getenv("TEJIDO_FORMS_DIR") ?: "examples/forms")
        val activityLog: File = File(formsDir, "bitacora_red_juvenil.xlsx")
        const val ADMIN_TOKEN = "coordinators-admin-token-for-tests"
    }

    private var process: Process? = null
    var address = "127.0.0.1:0"
        private set
    val url get() = "http://$address"

    /** Starts `serve`; after stop(), starting again reuses the same port. */
    fun start(): TestServer {
        val p = ProcessBuilder(
            bin, "--data", data.toString(), "serve", "--listen", address, "--admin-token", ADMIN_TOKEN,
        ).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        process = p
        val out = BufferedReader(InputStreamReader(p.inputStream))
        while (true) {
            val line = out.readLine() ?: error("tejido-server exited with ${p.waitFor()} before listening")
            if (line.startsWith("listening on http://")) {
                address = line.trim().removePrefix("listening on http://")
                return this
            }
        }
    }

    fun stop() {
        process?.let {
            it.destroy()
            it.waitFor(30, TimeUnit.SECONDS)
        }
        process = null
    }

    /** Runs an admin command with --json and returns its one-line JSON answer. */
    fun admin(vararg args: String): String {
        val p = ProcessBuilder(listOf(bin, "--data", data.toString(), "--json") + args)
            .redirectError(ProcessBuilder.Redirect.INHERIT).start()
        val out = p.inputStream.bufferedReader().readText()
        check(p.waitFor() == 0) { "tejido-server ${args.joinToString(" ")} failed: $out" }
        return out.trim().lines().last()
    }

    /** A coordinator's review through the server's HTTP API. */
    fun review(submissionId: String, state: String, comment: String): Int {
        val body = """{"state": ${json(state)}, "comment": ${json(comment)}}"""
        val request = HttpRequest.newBuilder(URI.create("$url/v1/submissions/$submissionId/review"))
            .header("authorization", "Bearer $ADMIN_TOKEN")
            .header("content-type", "application/json")
            .header("tejido-protocol", "1")
            .POST(HttpRequest.BodyPublishers.ofString(body))
            .build()
        return HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString()).statusCode()
    }
}

/** One string field of a flat JSON object (the admin CLI's answers). */
fun field(json: String, name: String): String =
    Regex("\"$name\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").find(json)?.groupValues?.get(1)?.replace("\\/", "/")
        ?: error("no $name in $json")

private fun json(s: String): String =
    "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""
