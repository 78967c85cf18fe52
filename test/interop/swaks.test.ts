/**
 * swaks against effect-smtp's server: what a real client sends (plaintext, pipelined,
 * STARTTLS, implicit TLS, AUTH) is what the backend receives, byte for byte; failures come
 * back as the codes and exit statuses swaks documents.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { SmtpError } from "../../src/SmtpError.ts"
import { testCerts } from "../support/certs.ts"
import * as Files from "./support/files.ts"
import { describeRun } from "./support/process.ts"
import * as Server from "./support/server.ts"
import { replies, swaks, transcript } from "./support/swaks.ts"

const users = { alice: "correct horse" }
const noSuchUser = SmtpError.of(550, [5, 1, 1], "No such user here")
const behaviour: Server.Behaviour = {
  users,
  rejectRcpt: (to) => to.startsWith("nobody@") ? noSuchUser : undefined
}
/** A server with a STARTTLS listener (index 0) and an implicit TLS one (index 1). */
const startServer = (options: Partial<Parameters<typeof Server.start>[0]> = {}) =>
  Server.start({ listen: [Server.tcp(), Server.tcp(true)], behaviour, ...options })

describe("swaks → effect-smtp server", () => {
  it.live("plain SMTP: envelope, HELO name and exact body; dot-leading lines survive stuffing", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--data",
        "Subject: dots\n\n.leading dot\n..two dots\n.\nlast line"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      // swaks stuffed the lone "." and the dot-leading lines; the server removed exactly that.
      assert.include(r.stdout, " -> ...two dots")
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.strictEqual(m.helo, "client.test")
      assert.strictEqual(m.from, "sender@example.org")
      assert.deepStrictEqual(m.rcpts.map((x) => x.to), ["rcpt@example.net"])
      assert.strictEqual(m.tls, undefined)
      assert.strictEqual(m.authenticatedAs, undefined)
      assert.strictEqual(Files.latin1(m.body), "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n")
      assert.match(replies(r.stdout).at(-1) ?? "", /^221 2\.0\.0 /)
    }))

  it.live("8-bit body bytes arrive unchanged (8BITMIME is advertised)", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const high = Uint8Array.from({ length: 128 }, (_, i) => 0x80 + i)
      const message = Buffer.concat([
        Buffer.from("Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, ça va? 日本語\r\n"),
        high.subarray(0, 64),
        Buffer.from("\r\n"),
        high.subarray(64)
      ])
      // swaks ends the data with CRLF "." CRLF, adding the CRLF: the file has no final line ending.
      const r = yield* swaks(server.port(), ["--to", "rcpt@example.net", "--data", `@${files.write("8bit.eml", message)}`])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(replies(r.stdout), "250-8BITMIME")
      assert.strictEqual(server.received.length, 1)
      assert.deepStrictEqual(Buffer.from(server.received[0]!.body), Buffer.concat([message, Buffer.from("\r\n")]))
    }))

  it.live("PIPELINING: MAIL, every RCPT and DATA go out before the first reply", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const r = yield* swaks(server.port(), [
        "--pipeline",
        "--to",
        "one@example.net,two@example.net,three@example.net",
        "--data",
        "Subject: pipelined\n\nbody"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      const lines = transcript(r.stdout)
      const mail = lines.findIndex((l) => l.kind === "sent" && l.text.startsWith("MAIL FROM"))
      const data = lines.findIndex((l) => l.kind === "sent" && l.text === "DATA")
      const firstReply = lines.findIndex((l, i) => i > mail && l.kind === "received")
      assert.isTrue(mail >= 0 && data > mail && firstReply > data, r.stdout)
      // The batch's replies came in order: sender, three recipients, go ahead.
      assert.deepStrictEqual(lines.slice(firstReply, firstReply + 5).map((l) => l.text.slice(0, 3)), [
        "250",
        "250",
        "250",
        "250",
        "354"
      ])
      assert.strictEqual(server.received.length, 1)
      assert.deepStrictEqual(server.received[0]!.rcpts.map((x) => x.to), [
        "one@example.net",
        "two@example.net",
        "three@example.net"
      ])
      assert.strictEqual(Files.latin1(server.received[0]!.body), "Subject: pipelined\r\n\r\nbody\r\n")
    }))

  it.live("STARTTLS, the certificate verified against the test CA", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        files.caFile(),
        "--tls-sni",
        "localhost"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(r.stdout, "=== TLS started with cipher")
      // The EHLO after the handshake no longer offers STARTTLS, but now offers PLAIN and LOGIN.
      const ehloAfterTls = replies(r.stdout).filter((l) => l.startsWith("250"))
      assert.include(ehloAfterTls, "250 AUTH SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN")
      assert.notInclude(transcript(r.stdout).filter((l) => l.tls).map((l) => l.text), "250-STARTTLS")
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.match(m.tls?.protocol ?? "", /^TLSv1\.[23]$/)
      assert.strictEqual(m.tls?.servername, "localhost")
      assert.strictEqual(m.helo, "client.test")
    }))

  it.live("STARTTLS to a certificate the client does not trust: swaks gives up (exit 29), nothing is delivered", () =>
    Effect.gen(function*() {
      const { untrusted } = testCerts()
      const server = yield* startServer({ tls: { key: untrusted.key, cert: untrusted.cert } })
      const files = yield* Files.scratch
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        files.caFile()
      ])
      assert.strictEqual(r.code, 29, describeRun(r))
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("implicit TLS (--tls-on-connect), verified", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* swaks(server.port(1), [
        "--to",
        "rcpt@example.net",
        "--tls-on-connect",
        "--tls-verify",
        "--tls-ca-path",
        files.caFile(),
        "--data",
        "Subject: over TLS\n\nsecret"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      // The greeting itself came over TLS; STARTTLS is not offered on a TLS connection.
      const lines = transcript(r.stdout)
      const greeting = lines.find((l) => l.kind === "received")
      assert.isTrue(greeting?.tls)
      assert.match(greeting?.text ?? "", /^220 localhost /)
      assert.notInclude(replies(r.stdout), "250-STARTTLS")
      assert.strictEqual(server.received.length, 1)
      assert.isDefined(server.received[0]!.tls)
      assert.strictEqual(Files.latin1(server.received[0]!.body), "Subject: over TLS\r\n\r\nsecret\r\n")
    }))

  const authCases = [
    { mechanism: "PLAIN", how: "over STARTTLS", tls: ["--tls"] },
    { mechanism: "LOGIN", how: "over implicit TLS", tls: ["--tls-on-connect"] },
    { mechanism: "CRAM-MD5", how: "over STARTTLS", tls: ["--tls"] }
  ] as const
  for (const c of authCases) {
    it.live(`AUTH ${c.mechanism} ${c.how}`, () =>
      Effect.gen(function*() {
        const server = yield* startServer()
        const files = yield* Files.scratch
        const port = c.tls[0] === "--tls-on-connect" ? server.port(1) : server.port()
        const r = yield* swaks(port, [
          "--to",
          "rcpt@example.net",
          ...c.tls,
          "--tls-verify",
          "--tls-ca-path",
          files.caFile(),
          "--auth",
          c.mechanism,
          "--auth-user",
          "alice",
          "--auth-password",
          users.alice
        ])
        assert.strictEqual(r.code, 0, describeRun(r))
        assert.isTrue(replies(r.stdout).some((l) => l.startsWith("235 2.7.0 ")), r.stdout)
        assert.strictEqual(server.received.length, 1)
        assert.strictEqual(server.received[0]!.authenticatedAs, "alice")
      }))
  }

  it.live("AUTH is not offered in plaintext: swaks cannot authenticate (exit 28)", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        users.alice
      ])
      assert.strictEqual(r.code, 28, describeRun(r))
      assert.isFalse(replies(r.stdout).some((l) => /^250.AUTH/.test(l)), r.stdout)
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("a wrong password: 535 5.7.8 and exit 28, nothing delivered", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        files.caFile(),
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "wrong"
      ])
      assert.strictEqual(r.code, 28, describeRun(r))
      assert.isTrue(replies(r.stdout).some((l) => l.startsWith("535 5.7.8")), r.stdout)
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("a rejected recipient gets the backend's 550 5.1.1; the other recipient still gets the message", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const r = yield* swaks(server.port(), ["--to", "rcpt@example.net,nobody@example.net"])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(replies(r.stdout), "550 5.1.1 No such user here")
      assert.strictEqual(server.received.length, 1)
      assert.deepStrictEqual(server.received[0]!.rcpts.map((x) => x.to), ["rcpt@example.net"])
    }))

  it.live("every recipient rejected: swaks stops before DATA with exit 24", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const r = yield* swaks(server.port(), ["--to", "nobody@example.net"])
      assert.strictEqual(r.code, 24, describeRun(r))
      assert.include(replies(r.stdout), "550 5.1.1 No such user here")
      assert.notInclude(transcript(r.stdout).map((l) => l.text), "DATA")
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("a 4 MiB message arrives byte for byte", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const message = Files.bigMessage(4 * 1024 * 1024)
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--suppress-data",
        "--data",
        `@${files.write("big.eml", message.subarray(0, -2))}` // swaks adds the final CRLF
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 1)
      const body = server.received[0]!.body
      assert.strictEqual(body.length, message.length)
      assert.strictEqual(Files.sha256(body), Files.sha256(message))
    }))

  it.live("a body over the size limit: 552 5.3.4 after the dot (exit 26), nothing stored, QUIT still answered", () =>
    Effect.gen(function*() {
      const server = yield* startServer({ maxMessageBytes: 256 * 1024 })
      const files = yield* Files.scratch
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--suppress-data",
        "--data",
        `@${files.write("big.eml", Files.bigMessage(1024 * 1024))}`
      ])
      assert.strictEqual(r.code, 26, describeRun(r))
      assert.include(replies(r.stdout), "250-SIZE 262144")
      assert.isTrue(replies(r.stdout).some((l) => l.startsWith("552 5.3.4 ")), r.stdout)
      assert.match(replies(r.stdout).at(-1) ?? "", /^221 2\.0\.0 /)
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("LMTP: one reply per recipient after the body, a failed delivery in the middle", () =>
    Effect.gen(function*() {
      const full = SmtpError.of(452, [4, 2, 2], "Mailbox full")
      const server = yield* Server.start({
        protocol: "lmtp",
        behaviour: { deliverTo: (to) => to.startsWith("full@") ? full : undefined }
      })
      const r = yield* swaks(server.port(), [
        "--protocol",
        "LMTP",
        "--to",
        "a@example.net,full@example.net,b@example.net",
        "--data",
        "Subject: lmtp\n\nhello"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(transcript(r.stdout).map((l) => l.text), "LHLO client.test")
      const [first, second, third] = replies(r.stdout).slice(-4, -1)
      assert.match(first ?? "", /^250 2\.0\.0 .*<a@example\.net>/)
      assert.strictEqual(second, "452 4.2.2 Mailbox full")
      assert.match(third ?? "", /^250 2\.0\.0 .*<b@example\.net>/)
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(Files.latin1(server.received[0]!.body), "Subject: lmtp\r\n\r\nhello\r\n")
    }))
})
