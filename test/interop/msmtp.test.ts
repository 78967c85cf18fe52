/**
 * msmtp (GnuTLS, GNU SASL) against effect-smtp's server, configured the way a user would:
 * a config file with TLS on, the test CA as trust file, and AUTH.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Files from "./support/files.ts"
import { describeRun, run } from "./support/process.ts"
import * as Server from "./support/server.ts"

const users = { alice: "correct horse" }
const startServer = () => Server.start({ listen: [Server.tcp(), Server.tcp(true)], behaviour: { users } })

/** Writes an msmtp configuration (mode 0600, as msmtp insists for a file with a password). */
const config = (files: Files.Scratch, account: Readonly<Record<string, string | number>>, password = users.alice) =>
  files.write(
    "msmtprc",
    [
      "defaults",
      "logfile -",
      "account test",
      "host 127.0.0.1",
      "from alice@example.org",
      "user alice",
      `password ${password}`,
      `tls_trust_file ${files.caFile()}`,
      ...Object.entries(account).map(([k, v]) => `${k} ${v}`)
    ].join("\n") + "\n",
    0o600
  )

const msmtp = (configFile: string, recipients: ReadonlyArray<string>, message: string) =>
  run("msmtp", ["--debug", "-C", configFile, "-a", "test", ...recipients], { input: message })

// msmtp reads a text message with LF line endings and sends CRLF lines, dot-stuffed; it adds
// no From, Date or Message-ID header when the message has them.
const message = "From: alice@example.org\nDate: Sat, 28 Nov 2026 12:00:00 +0000\nMessage-ID: <1@example.org>\n" +
  "Subject: msmtp\n\n.dot\nbody\n"
const expected = message.replaceAll("\n", "\r\n")

describe("msmtp → effect-smtp server", () => {
  it.live("STARTTLS verified against the test CA, AUTH chosen by msmtp, two recipients pipelined", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const rc = config(files, { port: server.port(), tls: "on", tls_starttls: "on", auth: "on" })
      const r = yield* msmtp(rc, ["bob@example.net", "carol@example.net"], message)
      assert.strictEqual(r.code, 0, describeRun(r))
      // Over TLS msmtp prefers PLAIN; and it pipelines the envelope with DATA.
      assert.include(r.stdout, "--> AUTH PLAIN ")
      assert.include(
        r.stdout,
        "--> MAIL FROM:<alice@example.org>\r\n--> RCPT TO:<bob@example.net>\r\n--> RCPT TO:<carol@example.net>\r\n" +
          "--> DATA\r\n<-- 250 2.1.0 Sender OK"
      )
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.isDefined(m.tls)
      assert.strictEqual(m.authenticatedAs, "alice")
      assert.strictEqual(m.from, "alice@example.org")
      assert.deepStrictEqual(m.rcpts.map((x) => x.to), ["bob@example.net", "carol@example.net"])
      assert.strictEqual(Files.latin1(m.body), expected)
    }))

  // scram-sha-256 sends AUTH without an initial response and needs an empty "334 " challenge.
  for (const mechanism of ["plain", "login", "cram-md5", "scram-sha-256"]) {
    it.live(`implicit TLS (tls_starttls off), auth ${mechanism}`, () =>
      Effect.gen(function*() {
        const server = yield* startServer()
        const files = yield* Files.scratch
        const rc = config(files, { port: server.port(1), tls: "on", tls_starttls: "off", auth: mechanism })
        const r = yield* msmtp(rc, ["bob@example.net"], message)
        assert.strictEqual(r.code, 0, describeRun(r))
        assert.include(r.stdout, `--> AUTH ${mechanism.toUpperCase()}`)
        assert.strictEqual(server.received.length, 1)
        assert.isDefined(server.received[0]!.tls)
        assert.strictEqual(server.received[0]!.authenticatedAs, "alice")
        assert.strictEqual(Files.latin1(server.received[0]!.body), expected)
      }))
  }

  it.live("a wrong password: msmtp reports the 535 reply and exits EX_NOPERM (77)", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const rc = config(files, { port: server.port(), tls: "on", tls_starttls: "on", auth: "plain" }, "wrong")
      const r = yield* msmtp(rc, ["bob@example.net"], message)
      assert.strictEqual(r.code, 77, describeRun(r))
      assert.include(r.stderr, "535 5.7.8")
      assert.strictEqual(server.received.length, 0)
    }))
})
