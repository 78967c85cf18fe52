/**
 * curl's SMTP client (smtp:// with STARTTLS or not, smtps://) against effect-smtp's server.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { SmtpError } from "../../src/SmtpError.ts"
import { testCerts } from "../support/certs.ts"
import * as Files from "./support/files.ts"
import { describeRun, run } from "./support/process.ts"
import * as Server from "./support/server.ts"

const users = { alice: "correct horse" }
const behaviour: Server.Behaviour = {
  users,
  rejectRcpt: (to) => to.startsWith("nobody@") ? SmtpError.of(550, [5, 1, 1], "No such user here") : undefined
}
const startServer = () => Server.start({ listen: [Server.tcp(), Server.tcp(true)], behaviour })

// The URL's path is the name curl gives in EHLO.
const curl = (url: string, args: ReadonlyArray<string>) =>
  run("curl", ["--silent", "--show-error", "--verbose", "--max-time", "15", url, "--mail-from", "curl@example.org", ...args])

const message = "From: curl@example.org\r\nSubject: curl\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast\r\n"

describe("curl → effect-smtp server", () => {
  it.live("smtp://: envelope, EHLO name, SIZE and the exact bytes of the uploaded file", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* curl(`smtp://127.0.0.1:${server.port()}/client.test`, [
        "--mail-rcpt",
        "a@example.net",
        "--mail-rcpt",
        "b@example.net",
        "--upload-file",
        files.write("m.eml", message)
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.strictEqual(m.helo, "client.test")
      assert.strictEqual(m.from, "curl@example.org")
      assert.deepStrictEqual(m.rcpts.map((x) => x.to), ["a@example.net", "b@example.net"])
      assert.strictEqual(m.mailOptions.size, message.length)
      assert.strictEqual(m.tls, undefined)
      assert.strictEqual(Files.latin1(m.body), message)
    }))

  it.live("--crlf turns a file's bare LF line endings into CRLF; the server stores CRLF lines", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* curl(`smtp://127.0.0.1:${server.port()}/client.test`, [
        "--mail-rcpt",
        "a@example.net",
        "--crlf",
        "--upload-file",
        files.write("m.eml", message.replaceAll("\r\n", "\n"))
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(Files.latin1(server.received[0]!.body), message)
    }))

  it.live("a refused recipient fails the transfer (exit 55) unless --mail-rcpt-allowfails", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const file = files.write("m.eml", message)
      const url = `smtp://127.0.0.1:${server.port()}/client.test`
      const rcpts = ["--mail-rcpt", "a@example.net", "--mail-rcpt", "nobody@example.net"]
      const strict = yield* curl(url, [...rcpts, "--upload-file", file])
      assert.strictEqual(strict.code, 55, describeRun(strict))
      assert.include(strict.stderr, "< 550 5.1.1 No such user here")
      assert.strictEqual(server.received.length, 0)

      const lenient = yield* curl(url, [...rcpts, "--mail-rcpt-allowfails", "--upload-file", file])
      assert.strictEqual(lenient.code, 0, describeRun(lenient))
      assert.strictEqual(server.received.length, 1)
      assert.deepStrictEqual(server.received[0]!.rcpts.map((x) => x.to), ["a@example.net"])
    }))

  it.live("smtp:// with --ssl-reqd: STARTTLS verified with --cacert, then AUTH", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* curl(`smtp://localhost:${server.port()}/client.test`, [
        "--ssl-reqd",
        "--cacert",
        files.caFile(),
        "--resolve",
        `localhost:${server.port()}:127.0.0.1`,
        "--user",
        `alice:${users.alice}`,
        "--mail-rcpt",
        "a@example.net",
        "--upload-file",
        files.write("m.eml", message)
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(r.stderr, "> STARTTLS")
      // Offered SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN, curl picks the strongest it implements.
      assert.include(r.stderr, "> AUTH CRAM-MD5")
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.isDefined(m.tls)
      assert.strictEqual(m.tls?.servername, "localhost")
      assert.strictEqual(m.authenticatedAs, "alice")
      assert.strictEqual(Files.latin1(m.body), message)
    }))

  it.live("smtps:// (implicit TLS) verified with --cacert, AUTH LOGIN forced with --login-options", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* curl(`smtps://localhost:${server.port(1)}/client.test`, [
        "--cacert",
        files.caFile(),
        "--resolve",
        `localhost:${server.port(1)}:127.0.0.1`,
        "--user",
        `alice:${users.alice}`,
        "--login-options",
        "AUTH=LOGIN",
        "--mail-rcpt",
        "a@example.net",
        "--upload-file",
        files.write("m.eml", message)
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(r.stderr, "> AUTH LOGIN")
      assert.notInclude(r.stderr, "> STARTTLS")
      assert.strictEqual(server.received.length, 1)
      assert.isDefined(server.received[0]!.tls)
      assert.strictEqual(server.received[0]!.authenticatedAs, "alice")
      assert.strictEqual(Files.latin1(server.received[0]!.body), message)
    }))

  it.live("smtps:// with a CA that did not sign the server's certificate: curl refuses (exit 60)", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* curl(`smtps://localhost:${server.port(1)}/client.test`, [
        "--cacert",
        files.write("other-ca.pem", testCerts().untrusted.cert),
        "--resolve",
        `localhost:${server.port(1)}:127.0.0.1`,
        "--mail-rcpt",
        "a@example.net",
        "--upload-file",
        files.write("m.eml", message)
      ])
      assert.strictEqual(r.code, 60, describeRun(r))
      assert.strictEqual(server.received.length, 0)
    }))
})
