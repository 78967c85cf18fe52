import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../src/NodeTransport.ts"
import * as Sasl from "../src/Sasl.ts"
import * as SmtpClient from "../src/SmtpClient.ts"
import { SmtpError } from "../src/SmtpError.ts"
import { Network, type TransportError, TransportError as TransportErrorClass } from "../src/Transport.ts"
import { testCerts } from "./support/certs.ts"
import * as Scripted from "./support/ScriptedServer.ts"
import { makeBackend } from "./support/backend.ts"
import { start as startServer } from "./support/server.ts"

const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1")

/** The failure of an exit, which must be a typed failure. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure, got a success")
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (reason === undefined || reason._tag !== "Fail") throw new Error(`expected a typed failure: ${String(exit.cause)}`)
  return reason.error
}

/** Lets a forked client run until it waits (a bound on scheduled steps, not on time). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 200; i++) yield* Effect.yieldNow
})

/** A client over a scripted in-memory server. */
const scripted = (
  script: (peer: Scripted.ServerPeer) => Effect.Effect<void, unknown>,
  options: SmtpClient.ClientOptions = {}
) =>
  Effect.gen(function*() {
    const s = yield* Scripted.pair(script)
    const client = yield* SmtpClient.fromTransport(s.client, { security: "none", ...options })
    return { ...s, client }
  })

describe("SmtpClient: greeting and hello", () => {
  it.effect("reads the greeting and the EHLO keywords", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* p.reply(220, "mx.test first line", "second line")
          assert.strictEqual(yield* p.line, "EHLO client.test")
          yield* Scripted.ehlo(p, "PIPELINING", "SIZE 1000", "8BITMIME", "AUTH PLAIN login", "AUTH=XOAUTH2", "x-custom a b")
        }), { localName: "client.test" })
      yield* Fiber.join(fiber)
      assert.strictEqual(client.greeting.code, 220)
      assert.deepStrictEqual(client.greeting.lines, ["mx.test first line", "second line"])
      assert.strictEqual(client.extension("pipelining"), "")
      assert.strictEqual(client.extension("X-CUSTOM"), "a b")
      assert.strictEqual(client.extension("CHUNKING"), undefined)
      assert.strictEqual(client.maxMessageSize(), 1000)
      assert.deepStrictEqual(client.authMechanisms(), ["PLAIN", "LOGIN", "XOAUTH2"])
      assert.isTrue(client.supportsAuth("login"))
      assert.isFalse(client.supportsAuth("CRAM-MD5"))
    }))

  it.effect.each([500, 502])("falls back to HELO when EHLO gets %i", (code) =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* p.reply(220, "old.test")
          yield* p.expect("EHLO localhost")
          yield* p.reply(code, "what?")
          yield* p.expect("HELO localhost")
          yield* p.reply(250, "old.test")
        }))
      yield* Fiber.join(fiber)
      assert.strictEqual(client.extensions().size, 0)
    }))

  it.effect("does not fall back on other replies: 421 ends the session, 554 is an SmtpError", () =>
    Effect.gen(function*() {
      for (const code of [421, 554]) {
        const s = yield* Scripted.pair((p) =>
          Effect.gen(function*() {
            yield* p.reply(220, "mx.test")
            yield* p.expect("EHLO localhost")
            yield* p.reply(code, "4.3.2 go away")
            // 421: the client closes at once; 554: it says QUIT first.
            if (code === 554) {
              yield* p.expect("QUIT")
              yield* p.reply(221, "bye")
            }
            assert.isTrue(yield* p.closed)
          }))
        const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none" }))))
        assert.instanceOf(error, SmtpError)
        assert.strictEqual((error as SmtpError).code, code)
        yield* Fiber.join(s.fiber)
      }
    }))

  it.effect("refuses a hello name that could inject a command, before writing anything", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* scripted((p) => Scripted.greet(p))
      const reads = peer.reads()
      for (const name of ["evil\r\nRSET", "a b", "nul\0", ""]) {
        const error = failureOf(yield* Effect.exit(client.hello(name)))
        assert.strictEqual(error._tag, "SmtpClientError")
        assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      }
      assert.strictEqual(peer.reads(), reads)
      assert.isTrue(client.isOpen())
    }))
})

describe("SmtpClient: pipelining", () => {
  it.effect("sends MAIL, every RCPT and DATA in one write, then the body in one write", () =>
    Effect.gen(function*() {
      let envelopeReads = 0
      let envelope = ""
      let body = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "8BITMIME", "SIZE 100000", "ENHANCEDSTATUSCODES")
          const before = p.reads()
          envelope = latin1(yield* p.chunk)
          envelopeReads = p.reads() - before
          yield* p.send("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 No such user here\r\n250 2.1.5 ok\r\n354 go\r\n")
          const before2 = p.reads()
          body = latin1(yield* p.chunk)
          assert.strictEqual(p.reads() - before2, 1)
          yield* p.reply(250, "2.0.0 queued as 42")
        }))
      const result = yield* client.send({
        from: "sender@example.com",
        to: ["a@example.org", "nobody@example.org", { address: "c@example.org" }],
        body: "Subject: hi\r\n\r\nhello\r\n"
      })
      yield* Fiber.join(fiber)
      assert.strictEqual(envelopeReads, 1)
      assert.strictEqual(
        envelope,
        "MAIL FROM:<sender@example.com> SIZE=22\r\n" +
          "RCPT TO:<a@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
      )
      assert.strictEqual(body, "Subject: hi\r\n\r\nhello\r\n.\r\n")
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["a@example.org", "c@example.org"])
      assert.strictEqual(result.rejected.length, 1)
      const rejected = result.rejected[0]!
      assert.strictEqual(rejected.recipient, "nobody@example.org")
      assert.strictEqual(rejected.error.code, 550)
      assert.deepStrictEqual(rejected.error.enhancedCode, [5, 1, 1])
      assert.strictEqual(rejected.error.message, "No such user here")
      assert.strictEqual(result.reply.text, "queued as 42")
    }))

  it.effect("the same replies again and again are read right each time, among others", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "ENHANCEDSTATUSCODES")
          for (let i = 0; i < 40; i++) {
            yield* p.chunk
            // A rejection every third time, and a final reply that changes every time.
            yield* p.send(i % 3 === 2 ? "250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go\r\n" : "250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
            yield* p.until("\r\n.\r\n")
            yield* p.send(i % 2 === 0 ? `250-2.0.0 queued\r\n250 2.0.0 as ${i}\r\n` : `250 2.0.0 queued as ${i}\r\n`)
          }
        }))
      for (let i = 0; i < 40; i++) {
        const result = yield* client.send({ from: "a@b.example", to: ["x@y.example", "z@y.example"], body: "b" })
        assert.deepStrictEqual(result.accepted.map((a) => a.recipient), i % 3 === 2 ? ["z@y.example"] : ["x@y.example", "z@y.example"])
        assert.deepStrictEqual(result.accepted[0]!.reply.enhancedCode, [2, 1, 5])
        assert.strictEqual(result.reply.text, i % 2 === 0 ? `queued\nas ${i}` : `queued as ${i}`)
        assert.isTrue(Object.isFrozen(result.accepted[0]!.reply.lines), "a reply shared between sends cannot be changed")
      }
      yield* Fiber.join(fiber)
    }))

  it.effect("without PIPELINING, waits for each reply before the next command", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          assert.strictEqual(latin1(yield* p.chunk), "MAIL FROM:<>\r\n")
          yield* p.reply(250, "ok")
          assert.strictEqual(latin1(yield* p.chunk), "RCPT TO:<postmaster>\r\n")
          yield* p.reply(250, "ok")
          assert.strictEqual(latin1(yield* p.chunk), "DATA\r\n")
          yield* p.reply(354, "go")
          assert.strictEqual(yield* p.until("\r\n.\r\n"), "x\r\n.\r\n")
          yield* p.reply(250, "done")
        }))
      const result = yield* client.send({ from: null, to: "postmaster", body: "x" })
      yield* Fiber.join(fiber)
      assert.strictEqual(result.reply.text, "done")
    }))

  it.effect("when no recipient is accepted, the body is not sent and the transaction is reset", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n550 5.1.1 no\r\n450 4.2.1 busy, try later\r\n554 5.5.1 no valid recipients\r\n")
          // Not the body: RSET comes next, then a NOOP on the same connection.
          yield* p.expect("RSET")
          yield* p.reply(250, "reset")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: ["x@y.example", "z@y.example"], body: "never sent" })))
      assert.instanceOf(error, SmtpClient.RecipientsRefused)
      const refused = error as SmtpClient.RecipientsRefused
      assert.deepStrictEqual(refused.rejected.map((r) => [r.recipient, r.error.code]), [["x@y.example", 550], ["z@y.example", 450]])
      assert.isFalse(refused.isTemporary)
      assert.isFalse(SmtpClient.isTemporary(refused))
      yield* client.noop
      yield* Fiber.join(fiber)
    }))

  it.effect("a server that answers 354 with no recipient gets an empty message, never the body", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n550 no\r\n354 go ahead anyway\r\n")
          assert.strictEqual(latin1(yield* p.chunk), ".\r\n")
          yield* p.reply(554, "no recipients")
          yield* p.expect("RSET")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "x@y.example", body: "secret" })))
      assert.strictEqual(error._tag, "RecipientsRefused")
      yield* Fiber.join(fiber)
    }))

  it.effect("a refused MAIL fails the send with its error; no RSET is needed", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("451 4.3.0 try later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no RCPT\r\n")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "x@y.example", body: "b" })))
      assert.instanceOf(error, SmtpError)
      assert.strictEqual((error as SmtpError).code, 451)
      assert.isTrue(SmtpClient.isTemporary(error))
      yield* client.noop
      yield* Fiber.join(fiber)
    }))

  it.effect("a 421 mid-transaction ends the session with that error", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n421 4.4.2 mx.test closing, timeout\r\n")
          // No QUIT: the client closes.
          assert.isTrue(yield* p.closed)
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: ["x@y.example", "z@y.example"], body: "b" })))
      assert.instanceOf(error, SmtpError)
      assert.strictEqual((error as SmtpError).code, 421)
      yield* Fiber.join(fiber)
      assert.isFalse(client.isOpen())
      const again = failureOf(yield* Effect.exit(client.noop))
      assert.strictEqual(again, error)
    }))
})

describe("SmtpClient: capabilities that are odd but harmless", () => {
  it.effect("an AUTH line naming a thousand mechanisms, SIZE beyond 2^53, LIMITS RCPTMAX=0: tolerated, and the send goes through", () =>
    Effect.gen(function*() {
      const mechanisms = Array.from({ length: 1000 }, (_, i) => `X-MECH-${i}`).join(" ")
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* p.reply(220, "mx.test")
          yield* p.expect("EHLO localhost")
          yield* Scripted.ehlo(p, `AUTH PLAIN ${mechanisms}`, "SIZE 18446744073709551616", "LIMITS RCPTMAX=0 MAILMAX=0", "8BITMIME")
          yield* p.expect(/^MAIL FROM:<a@b\.example>/)
          yield* p.reply(250, "ok")
          for (let i = 0; i < 3; i++) {
            yield* p.expect(`RCPT TO:<r${i}@b.example>`)
            yield* p.reply(250, "ok")
          }
          yield* p.expect("DATA")
          yield* p.reply(354, "go")
          yield* p.until("\r\n.\r\n")
          yield* p.reply(250, "2.0.0 queued")
        }))
      assert.strictEqual(client.maxMessageSize(), undefined)
      // The AUTH line is cut to the reply line limit (4096): the mechanisms up to there are known.
      assert.include(client.authMechanisms(), "PLAIN")
      assert.include(client.authMechanisms(), "X-MECH-100")
      assert.notInclude(client.authMechanisms(), "X-MECH-999")
      const result = yield* client.send({ from: "a@b.example", to: ["r0@b.example", "r1@b.example", "r2@b.example"], body: "Subject: x\r\n\r\nhi\r\n" })
      assert.strictEqual(result.accepted.length, 3)
      yield* Fiber.join(fiber)
    }))
})

describe("SmtpClient: malformed and missing replies", () => {
  const badReplies = [
    ["a code that is not three digits", "2x0 hello\r\n"],
    ["a code out of range", "699 nope\r\n"],
    ["mixed codes in one reply", "250-first\r\n251 second\r\n"],
    ["no space or hyphen after the code", "250_ok\r\n"],
    ["a reply over 64 KiB in one line", `250 ${"x".repeat(70_000)}\r\n`],
    ["a reply over 64 KiB in many lines", `${"250-".padEnd(1000, "y")}\r\n`.repeat(70) + "250 end\r\n"],
    ["a line ended by a bare LF", "250 ok\n"],
    ["a line of a multi-line reply ended by a bare LF", "250-first\n250 second\r\n"]
  ] as const
  it.effect.each(badReplies)("%s is an SmtpProtocolError and closes the connection", ([, wire]) =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("NOOP")
          yield* p.send(wire)
          assert.isTrue(yield* p.closed)
        }))
      const error = failureOf(yield* Effect.exit(client.noop))
      assert.strictEqual(error._tag, "SmtpProtocolError")
      assert.strictEqual((error as SmtpClient.SmtpProtocolError).reason, "MalformedReply")
      yield* Fiber.join(fiber)
      assert.isFalse(client.isOpen())
    }))

  it.effect("a reply that does not answer the command is an SmtpProtocolError", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("MAIL FROM:<a@b.example>")
          yield* p.reply(354, "go ahead")
          assert.isTrue(yield* p.closed)
        }))
      const error = failureOf(yield* Effect.exit(client.mail("a@b.example")))
      assert.strictEqual(error._tag, "SmtpProtocolError")
      assert.strictEqual((error as SmtpClient.SmtpProtocolError).reason, "UnexpectedReply")
      yield* Fiber.join(fiber)
    }))

  it.effect("a silent server times out after the RFC 5321 greeting time (5 minutes)", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair(() => Effect.never)
      const connecting = yield* Effect.forkChild(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none" })))
      yield* settle
      yield* TestClock.adjust("299 seconds")
      assert.isUndefined(connecting.pollUnsafe())
      yield* TestClock.adjust("1 second")
      const error = failureOf(yield* Fiber.await(connecting)) as TransportError
      assert.strictEqual(error._tag, "TransportError")
      assert.strictEqual(error.reason, "Timeout")
    }))

  it.effect("waits 10 minutes for the reply after the final dot, then gives up", () =>
    Effect.gen(function*() {
      const received = yield* Deferred.make<void>()
      const { client } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* Deferred.succeed(received, undefined)
          yield* Effect.never
        }))
      const sending = yield* Effect.forkChild(client.send({ from: "a@b.example", to: "c@d.example", body: "hi" }))
      yield* Deferred.await(received)
      yield* TestClock.adjust("9 minutes")
      assert.isUndefined(sending.pollUnsafe())
      yield* TestClock.adjust("1 minute")
      const error = failureOf(yield* Fiber.await(sending)) as TransportError
      assert.strictEqual(error.reason, "Timeout")
      assert.isFalse(client.isOpen())
    }))

  it.effect("timeouts can be overridden", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair(() => Effect.never)
      const connecting = yield* Effect.forkChild(
        Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none", timeouts: { greeting: "10 seconds" } }))
      )
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const error = failureOf(yield* Fiber.await(connecting)) as TransportError
      assert.strictEqual(error.reason, "Timeout")
    }))
})

describe("SmtpClient: the message body", () => {
  it.effect("normalises line endings and stuffs dots, so the content cannot end the message", () =>
    Effect.gen(function*() {
      let wire = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("MAIL FROM:<a@b.example>")
          yield* p.reply(250, "ok")
          yield* p.expect("RCPT TO:<c@d.example>")
          yield* p.reply(250, "ok")
          yield* p.expect("DATA")
          yield* p.reply(354, "go")
          wire = yield* p.until("\r\n.\r\n")
          yield* p.reply(250, "ok")
        }))
      const body = Stream.make(".starts\nbare LF\rbare CR\n.\nsmuggled\r\n.\r", "\nend without newline")
        .pipe(Stream.map((s) => new TextEncoder().encode(s)))
      yield* client.mail("a@b.example")
      yield* client.rcpt("c@d.example")
      yield* client.data(body)
      yield* Fiber.join(fiber)
      assert.strictEqual(
        wire,
        "..starts\r\nbare LF\r\nbare CR\r\n..\r\nsmuggled\r\n..\r\nend without newline\r\n.\r\n"
      )
    }))

  it.effect("a body that fails half-way closes the connection: no partial message is delivered", () =>
    Effect.gen(function*() {
      let received = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          const closed = yield* Effect.gen(function*() {
            while (true) received += latin1(yield* p.chunk)
          }).pipe(Effect.catchTag("TransportError", (e) => Effect.succeed(e.reason)))
          assert.strictEqual(closed, "Closed")
        }))
      const body = Stream.concat(
        Stream.succeed(new TextEncoder().encode("part one\r\n")),
        Stream.fail("disk error" as const)
      )
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "c@d.example", body })))
      assert.strictEqual(error, "disk error")
      yield* Fiber.join(fiber)
      assert.notInclude(received, "\r\n.\r\n")
      assert.isFalse(client.isOpen())
    }))

  it.effect("without PIPELINING, a chunked body that fails before its first chunk is abandoned with RSET", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "CHUNKING")
          yield* p.expect(/^MAIL FROM:<a@b\.example>/)
          yield* p.reply(250, "ok")
          yield* p.expect("RCPT TO:<c@d.example>")
          yield* p.reply(250, "ok")
          // Nothing of the body was read before the recipients were accepted, then it failed.
          yield* p.expect("RSET")
          yield* p.reply(250, "reset")
          yield* p.expect(/^MAIL FROM:<a@b\.example>/)
          yield* p.reply(250, "ok")
          yield* p.expect("RCPT TO:<c@d.example>")
          yield* p.reply(250, "ok")
          yield* p.expect("BDAT 6 LAST")
          assert.strictEqual(latin1(yield* p.bytes(6)), "next\r\n")
          yield* p.reply(250, "queued")
        }))
      const failing = Stream.fail("disk error" as const)
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "c@d.example", body: failing, transfer: "bdat" })))
      assert.strictEqual(error, "disk error")
      assert.isTrue(client.isOpen())
      const sent = yield* client.send({ from: "a@b.example", to: "c@d.example", body: "next\r\n", transfer: "bdat" })
      assert.strictEqual(sent.reply.code, 250)
      yield* Fiber.join(fiber)
    }))

  it.effect("an interrupted send closes the connection", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          const seen = yield* Effect.gen(function*() {
            while (true) {
              yield* p.chunk
              yield* Deferred.succeed(started, undefined)
            }
          }).pipe(Effect.catchTag("TransportError", (e) => Effect.succeed(e.reason)))
          assert.strictEqual(seen, "Closed")
        }))
      // Big enough to be written before the stream stalls.
      const body = Stream.concat(Stream.succeed(new Uint8Array(100_000).fill(120)), Stream.never)
      const sending = yield* Effect.forkChild(client.send({ from: "a@b.example", to: "c@d.example", body }))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(sending)
      yield* Fiber.join(fiber)
      assert.isFalse(client.isOpen())
    }))
})

const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64")

describe("SmtpClient: one operation at a time", () => {
  it.effect("operations started together go one after the other, in call order", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("NOOP")
          // The next command must wait for this reply.
          const next = yield* Effect.forkChild(p.line)
          yield* settle
          assert.isUndefined(next.pollUnsafe())
          yield* p.reply(250, "2.0.0 noop")
          assert.strictEqual(yield* Fiber.join(next), "RSET")
          yield* p.reply(250, "2.0.0 reset")
          yield* p.expect("VRFY someone")
          yield* p.reply(252, "2.1.5 maybe")
        }))
      const replies = yield* Effect.all([client.noop, client.reset, client.verify("someone")], { concurrency: "unbounded" })
      assert.deepStrictEqual(replies.map((r) => r.code), [250, 250, 252])
      yield* Fiber.join(fiber)
    }))

  // The interrupted one is another operation (RSET), or the very Effect the others run (client.noop
  // is one Effect, run again and again: each run keeps its own state).
  for (const [name, interruptedOf] of [
    ["another operation", (client: SmtpClient.SmtpClient) => client.reset],
    ["the same Effect as the others", (client: SmtpClient.SmtpClient) => client.noop]
  ] as const) {
    it.effect(`an operation interrupted before its turn (${name}) sends nothing and leaves the connection open`, () =>
      Effect.gen(function*() {
        const reply = yield* Deferred.make<void>()
        const { client, fiber } = yield* scripted((p) =>
          Effect.gen(function*() {
            yield* Scripted.greet(p)
            yield* p.expect("NOOP")
            const next = yield* Effect.forkChild(p.line)
            yield* Deferred.await(reply)
            // The interrupted one gave up no turn it did not have: the next still waits.
            assert.isUndefined(next.pollUnsafe())
            yield* p.reply(250, "2.0.0 first")
            assert.strictEqual(yield* Fiber.join(next), "NOOP")
            yield* p.reply(250, "2.0.0 second")
          }))
        const first = yield* Effect.forkChild(client.noop)
        yield* settle
        const interrupted = yield* Effect.forkChild(interruptedOf(client))
        yield* settle
        yield* Fiber.interrupt(interrupted)
        const second = yield* Effect.forkChild(client.noop)
        yield* settle
        yield* Deferred.succeed(reply, undefined)
        assert.strictEqual((yield* Fiber.join(first)).text, "first")
        assert.strictEqual((yield* Fiber.join(second)).text, "second")
        assert.isTrue(client.isOpen())
        yield* Fiber.join(fiber)
      }))
  }

  it.effect("an operation waiting its turn behind one that ends the connection fails with that error", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("NOOP")
          yield* p.reply(421, "4.3.2 going down")
        }))
      const [first, second] = yield* Effect.all([Effect.exit(client.noop), Effect.exit(client.reset)], { concurrency: "unbounded" })
      assert.strictEqual((failureOf(first) as SmtpError).code, 421)
      assert.strictEqual(failureOf(second), failureOf(first))
      assert.isFalse(client.isOpen())
      yield* Fiber.join(fiber)
    }))
})

describe("SmtpClient: STARTTLS", () => {
  it.effect("upgrades, forgets what it learnt in plaintext, and says EHLO again", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "STARTTLS", "AUTH PLAIN", "SIZE 10")
          yield* p.expect("STARTTLS")
          yield* p.reply(220, "2.0.0 go ahead")
          yield* p.startTls()
          yield* p.expect("EHLO localhost")
          yield* Scripted.ehlo(p, "SIZE 2000", "AUTH SCRAM-SHA-256")
        }), { security: "starttls" })
      yield* Fiber.join(fiber)
      assert.strictEqual(client.tls()?.protocol, "TLSv1.3")
      assert.strictEqual(client.extension("STARTTLS"), undefined)
      assert.strictEqual(client.maxMessageSize(), 2000)
      assert.deepStrictEqual(client.authMechanisms(), ["SCRAM-SHA-256"])
    }))

  it.effect("bytes sent after the 220 and before the handshake are an attack: the connection is dropped", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "STARTTLS")
          yield* p.expect("STARTTLS")
          yield* p.send("220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
          assert.isTrue(yield* p.closed)
        }))
      const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "starttls" }))))
      assert.strictEqual(error._tag, "SmtpProtocolError")
      assert.strictEqual((error as SmtpClient.SmtpProtocolError).reason, "TlsInjection")
      yield* Fiber.join(s.fiber)
    }))

  it.effect("required: a server without STARTTLS is a TLS failure; nothing more is sent, not even QUIT", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          assert.isTrue(yield* p.closed)
        }))
      const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.fromTransport(s.client))))
      assert.strictEqual(error._tag, "TransportError")
      assert.strictEqual((error as TransportError).reason, "Tls")
      assert.strictEqual(error.message, "STARTTLS is required, but the server does not offer it")
      yield* Fiber.join(s.fiber)
    }))

  it.effect("required: a refused STARTTLS (454) is a TLS failure naming the reply, not a refusal; a 421 stays a 421", () =>
    Effect.gen(function*() {
      for (const [code, text] of [[454, "4.7.0 TLS not available now"], [502, "5.5.1 no"], [421, "4.3.2 shutting down"]] as const) {
        const s = yield* Scripted.pair((p) =>
          Effect.gen(function*() {
            yield* Scripted.greet(p, "STARTTLS")
            yield* p.expect("STARTTLS")
            yield* p.reply(code, text)
            assert.isTrue(yield* p.closed)
          }))
        const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.fromTransport(s.client))))
        if (code === 421) {
          assert.instanceOf(error, SmtpError)
          assert.strictEqual((error as SmtpError).code, 421)
        } else {
          assert.strictEqual(error._tag, "TransportError")
          assert.strictEqual((error as TransportError).reason, "Tls")
          assert.include(error.message, `STARTTLS is required, but the server refused it: ${code} `)
        }
        yield* Fiber.join(s.fiber)
      }
    }))

  it.effect("asked for with client.startTls: a server without it is Unsupported, and the connection goes on", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.startTls()))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "Unsupported")
      yield* client.noop
      yield* Fiber.join(fiber)
    }))

  it.effect("opportunistic: goes on in plaintext when STARTTLS is missing or refused", () =>
    Effect.gen(function*() {
      for (const offered of [false, true]) {
        const { client, fiber } = yield* scripted((p) =>
          Effect.gen(function*() {
            yield* Scripted.greet(p, ...(offered ? ["STARTTLS"] : []))
            if (offered) {
              yield* p.expect("STARTTLS")
              yield* p.reply(454, "not now")
            }
            yield* p.expect("NOOP")
            yield* p.reply(250, "ok")
          }), { security: "opportunistic" })
        yield* client.noop
        yield* Fiber.join(fiber)
        assert.isUndefined(client.tls())
      }
    }))
})

describe("SmtpClient: AUTH", () => {
  /** Greets, upgrades to TLS, and offers `mechanisms`. */
  const tlsGreet = (p: Scripted.ServerPeer, mechanisms: string) =>
    Effect.gen(function*() {
      yield* Scripted.greet(p, "STARTTLS")
      yield* p.expect("STARTTLS")
      yield* p.reply(220, "go")
      yield* p.startTls()
      yield* p.expect(/^EHLO /)
      yield* Scripted.ehlo(p, `AUTH ${mechanisms}`)
    })

  it.effect("PLAIN over TLS sends the initial response at once", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* tlsGreet(p, "LOGIN PLAIN")
          yield* p.expect(`AUTH PLAIN ${b64("\0user\0secret")}`)
          yield* p.reply(235, "2.7.0 ok")
        }), {
        security: "starttls",
        auth: { _tag: "Password", username: "user", password: Redacted.make("secret") }
      })
      yield* Fiber.join(fiber)
      assert.strictEqual(client.authenticatedWith(), "PLAIN")
    }))

  it.effect("PLAIN and LOGIN are refused over plaintext unless allowed; nothing is sent", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* scripted((p) => Scripted.greet(p, "AUTH PLAIN LOGIN"))
      const reads = peer.reads()
      const credentials = { _tag: "Password", username: "user", password: Redacted.make("secret") } as const
      const error = failureOf(yield* Effect.exit(client.auth(credentials)))
      assert.strictEqual(error._tag, "SmtpClientError")
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InsecureAuth")
      assert.strictEqual(peer.reads(), reads)
    }))

  const poisoned: ReadonlyArray<readonly [string, Sasl.Credentials]> = [
    ["a user name with CR LF", { _tag: "Password", username: "user\r\nMAIL FROM:<x@y>", password: Redacted.make("secret") }],
    ["a password with LF", { _tag: "Password", username: "user", password: Redacted.make("sec\nret") }],
    ["a password with NUL", { _tag: "Password", username: "user", password: Redacted.make("sec\0ret") }],
    ["an authorization identity with NUL", { _tag: "Password", username: "user", password: Redacted.make("secret"), authzid: "boss\0" }],
    ["a token with CR", { _tag: "Bearer", username: "user", token: Redacted.make("tok\ren") }],
    ["a bearer host with LF", { _tag: "Bearer", token: Redacted.make("token"), host: "mx\n" }],
    ["an EXTERNAL identity with LF", { _tag: "External", authzid: "me\n" }],
    ["an ANONYMOUS trace with CR", { _tag: "Anonymous", trace: "me\r" }]
  ]

  it.effect.each(poisoned)("%s: InvalidArgument before anything is sent", ([, credentials]) =>
    Effect.gen(function*() {
      // At set-up: before the greeting is even read.
      const s = yield* Scripted.pair((p) => Effect.map(p.closed, (closed) => assert.isTrue(closed, "the client sent something")))
      const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none", auth: credentials }))))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      assert.match(error.message, /may not contain CR, LF or NUL/)
      yield* Fiber.join(s.fiber)
      // With client.auth: nothing is sent, and the connection goes on.
      const { client, peer, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER EXTERNAL ANONYMOUS SCRAM-SHA-256")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
        }))
      const reads = peer.reads()
      const again = failureOf(yield* Effect.exit(client.auth(credentials, { allowInsecure: true })))
      assert.strictEqual((again as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      assert.strictEqual(peer.reads(), reads)
      yield* client.noop
      yield* Fiber.join(fiber)
    }))

  it.live("connect: credentials that cannot be sent open no connection at all", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* startServer({ backend: layer })
      const error = failureOf(yield* Effect.exit(Effect.scoped(SmtpClient.connect({
        endpoint: s.endpoint,
        security: "none",
        auth: { _tag: "Password", username: "user", password: Redacted.make("a\r\nb") }
      }).pipe(Effect.provideService(Network, s.network)))))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      assert.strictEqual(rec.sessions.length, 0)
    }))

  it.effect("LOGIN answers the prompts when insecure auth is allowed", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "AUTH LOGIN")
          yield* p.expect("AUTH LOGIN")
          yield* p.reply(334, b64("Username:"))
          yield* p.expect(b64("user"))
          yield* p.reply(334, b64("Password:"))
          yield* p.expect(b64("secret"))
          yield* p.reply(235, "ok")
        }))
      yield* client.auth({ _tag: "Password", username: "user", password: Redacted.make("secret") }, { allowInsecure: true })
      yield* Fiber.join(fiber)
      assert.strictEqual(client.authenticatedWith(), "LOGIN")
    }))

  it.effect("a refusal is an SmtpError and the connection stays usable", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "AUTH PLAIN")
          yield* p.expect(/^AUTH PLAIN /)
          yield* p.reply(535, "5.7.8 bad credentials")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
        }), { allowInsecureAuth: true })
      const error = failureOf(yield* Effect.exit(client.auth(Sasl.plain({ username: "u", password: Redacted.make("p") }))))
      assert.instanceOf(error, SmtpError)
      assert.strictEqual((error as SmtpError).code, 535)
      assert.deepStrictEqual((error as SmtpError).enhancedCode, [5, 7, 8])
      yield* client.noop
      yield* Fiber.join(fiber)
    }))

  it.effect("an initial response that would make the line too long waits for the first 334", () =>
    Effect.gen(function*() {
      const token = "t".repeat(600)
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "AUTH OAUTHBEARER")
          yield* p.expect("AUTH OAUTHBEARER")
          yield* p.reply(334, "")
          const response = Buffer.from(yield* p.line, "base64").toString("latin1")
          assert.include(response, `auth=Bearer ${token}`)
          yield* p.reply(235, "ok")
        }), { allowInsecureAuth: true })
      yield* client.auth({ _tag: "Bearer", token: Redacted.make(token) })
      yield* Fiber.join(fiber)
    }))

  it.effect("a challenge that is not base64 is cancelled with * and is an SmtpProtocolError", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "AUTH CRAM-MD5")
          yield* p.expect("AUTH CRAM-MD5")
          yield* p.reply(334, "not base64!")
          yield* p.expect("*")
          yield* p.reply(501, "5.0.0 cancelled")
        }))
      const error = failureOf(yield* Effect.exit(client.auth({ _tag: "Password", username: "u", password: Redacted.make("p") })))
      assert.strictEqual(error._tag, "SmtpProtocolError")
      assert.strictEqual((error as SmtpClient.SmtpProtocolError).reason, "AuthExchange")
      yield* Fiber.join(fiber)
    }))

  it.effect("a server without AUTH is Unsupported", () =>
    Effect.gen(function*() {
      const { client } = yield* scripted((p) => Scripted.greet(p, "PIPELINING"))
      const error = failureOf(yield* Effect.exit(client.auth({ _tag: "Anonymous" })))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "Unsupported")
    }))
})

describe("SmtpClient: envelope safety and parameters", () => {
  it.effect("refuses CR, LF and NUL in addresses, parameters and VRFY before writing anything", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* scripted((p) => Scripted.greet(p, "PIPELINING", "DSN"))
      const reads = peer.reads()
      const attempts: ReadonlyArray<Effect.Effect<unknown, SmtpClient.SendError>> = [
        client.send({ from: "a@b.example\r\nRCPT TO:<x@y>", to: "c@d.example", body: "x" }),
        client.send({ from: "a@b.example", to: "c@d.example>\r\nDATA", body: "x" }),
        client.send({ from: "a@b.example", to: "c\0@d.example", body: "x" }),
        client.send({ from: "a@b.example", to: "c@d.example", body: "x", mailOptions: { envelopeId: "id\r\nRSET" } }),
        client.mail("a@b.example", { envelopeId: "bad\nid" }),
        client.rcpt("c@d.example", { originalRecipient: { addressType: "RFC822", address: "x\r\ny@z" } }),
        client.verify("user\r\nRSET"),
        client.send({ from: "a@b.example", to: [], body: "x" }),
        client.send({ from: "postmaster", to: "c@d.example", body: "x" })
      ]
      for (const attempt of attempts) {
        const error = failureOf(yield* Effect.exit(attempt))
        assert.strictEqual(error._tag, "SmtpClientError")
        assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      }
      assert.strictEqual(peer.reads(), reads)
      assert.isTrue(client.isOpen())
    }))

  it.effect("sends DSN parameters in xtext when DSN is offered, and drops them when it is not", () =>
    Effect.gen(function*() {
      for (const dsn of [true, false]) {
        let envelope = ""
        const { client, fiber } = yield* scripted((p) =>
          Effect.gen(function*() {
            yield* Scripted.greet(p, "PIPELINING", ...(dsn ? ["DSN"] : []))
            envelope = latin1(yield* p.chunk)
            yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
            yield* p.until("\r\n.\r\n")
            yield* p.reply(250, "ok")
          }))
        yield* client.send({
          from: "a@b.example",
          to: { address: "c@d.example", options: { notify: ["SUCCESS", "FAILURE"], originalRecipient: { addressType: "RFC822", address: "c+x@d.example" } } },
          body: "x",
          mailOptions: { ret: "HDRS", envelopeId: "id+1=2" }
        })
        yield* Fiber.join(fiber)
        assert.strictEqual(
          envelope,
          dsn
            ? "MAIL FROM:<a@b.example> RET=HDRS ENVID=id+2B1+3D2\r\nRCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=RFC822;c+2Bx@d.example\r\nDATA\r\n"
            : "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        )
      }
    }))

  it.effect("adds SMTPUTF8 for non-ASCII addresses and BODY=8BITMIME for 8-bit content", () =>
    Effect.gen(function*() {
      let envelope = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "SMTPUTF8", "8BITMIME")
          envelope = Buffer.from(yield* p.chunk).toString("utf8")
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* p.reply(250, "ok")
        }))
      yield* client.send({ from: "a@b.example", to: "jörg@exämple.de", body: "Grüße\r\n" })
      yield* Fiber.join(fiber)
      assert.strictEqual(envelope, "MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<jörg@exämple.de>\r\nDATA\r\n")
    }))

  it.effect("refuses what the server does not offer and cannot be dropped: SMTPUTF8, REQUIRETLS, BINARYMIME", () =>
    Effect.gen(function*() {
      const { client } = yield* scripted((p) => Scripted.greet(p, "PIPELINING"))
      const attempts = [
        client.send({ from: "a@b.example", to: "jörg@exämple.de", body: "x" }),
        client.send({ from: "a@b.example", to: "c@d.example", body: "x", mailOptions: { requireTls: true } }),
        client.send({ from: "a@b.example", to: "c@d.example", body: "x", mailOptions: { body: "BINARYMIME" } }),
        client.send({ from: "a@b.example", to: "c@d.example", body: "x", transfer: "bdat" })
      ]
      for (const attempt of attempts) {
        const error = failureOf(yield* Effect.exit(attempt))
        assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "Unsupported")
      }
    }))
})

describe("SmtpClient: BDAT", () => {
  const allBytes = Uint8Array.from({ length: 256 * 3 }, (_, i) => i % 256)

  it.effect("sends BINARYMIME content byte-exact, with no dot-stuffing, in the pipelined write", () =>
    Effect.gen(function*() {
      let first: Uint8Array = new Uint8Array(0)
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "CHUNKING", "BINARYMIME")
          first = yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n250 2.0.0 message accepted\r\n")
        }))
      // Every byte value, and sequences that would end or be stuffed in DATA.
      const body = Buffer.concat([allBytes, Buffer.from("\r\n.\r\n.\n\r.\r")])
      const result = yield* client.send({ from: "a@b.example", to: "c@d.example", body, mailOptions: { body: "BINARYMIME" } })
      yield* Fiber.join(fiber)
      const head = `MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\nBDAT ${body.length} LAST\r\n`
      assert.strictEqual(latin1(first.subarray(0, head.length)), head)
      assert.deepStrictEqual(first.subarray(head.length), new Uint8Array(body))
      assert.strictEqual(result.reply.text, "message accepted")
    }))

  it.effect("cuts the body into chunks of the given size; the last one says LAST", () =>
    Effect.gen(function*() {
      const chunks: Array<string> = []
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "CHUNKING")
          yield* p.expect("MAIL FROM:<a@b.example>")
          yield* p.reply(250, "ok")
          yield* p.expect("RCPT TO:<c@d.example>")
          yield* p.reply(250, "ok")
          while (true) {
            const header = yield* p.line
            const [, size, last] = /^BDAT (\d+)( LAST)?$/.exec(header)!
            chunks.push(`${header}|${latin1(yield* p.bytes(Number(size)))}`)
            yield* p.reply(250, "ok")
            if (last !== undefined) break
          }
        }))
      const body = Stream.make("abcdef", "ghij\nk").pipe(Stream.map((s) => new TextEncoder().encode(s)))
      yield* client.send({ from: "a@b.example", to: "c@d.example", body, transfer: "bdat", chunkSize: 4 })
      yield* Fiber.join(fiber)
      // Not BINARYMIME: the lone LF became CRLF.
      assert.deepStrictEqual(chunks, ["BDAT 4|abcd", "BDAT 4|efgh", "BDAT 4|ij\r\n", "BDAT 1 LAST|k"])
    }))

  it.effect("normalises line endings split across stream chunks (not BINARYMIME)", () =>
    Effect.gen(function*() {
      let wire = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "CHUNKING", "PIPELINING")
          yield* p.until("BDAT 11 LAST\r\n")
          wire = latin1(yield* p.bytes(11))
          yield* p.send("250 ok\r\n250 ok\r\n250 ok\r\n")
        }))
      const body = Stream.make("a\r", "\nb\r", "c\n", "\r").pipe(Stream.map((s) => new TextEncoder().encode(s)))
      yield* client.send({ from: "a@b.example", to: "c@d.example", body, transfer: "bdat" })
      yield* Fiber.join(fiber)
      assert.strictEqual(wire, "a\r\nb\r\nc\r\n\r\n")
    }))

  it.effect("a text body in memory that fits one chunk goes with the envelope, lone line endings made CRLF", () =>
    Effect.gen(function*() {
      let wire = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "CHUNKING", "SIZE 1000")
          wire = latin1(yield* p.chunk)
          yield* p.send("250 ok\r\n250 ok\r\n250 2.0.0 accepted\r\n")
        }))
      const result = yield* client.send({ from: "a@b.example", to: "c@d.example", body: "Subject: x\n\n.dot\rend", transfer: "bdat" })
      yield* Fiber.join(fiber)
      // No dot-stuffing, no final CRLF added: BDAT carries the message as it is, normalised.
      const message = "Subject: x\r\n\r\n.dot\r\nend"
      assert.strictEqual(
        wire,
        `MAIL FROM:<a@b.example> SIZE=${message.length}\r\nRCPT TO:<c@d.example>\r\nBDAT ${message.length} LAST\r\n${message}`
      )
      assert.strictEqual(result.reply.text, "accepted")
    }))

  it.effect("auto uses DATA even when CHUNKING is offered: no body before the recipients are accepted", () =>
    Effect.gen(function*() {
      let envelope = ""
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING", "CHUNKING", "BINARYMIME")
          envelope = latin1(yield* p.chunk)
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* p.reply(250, "queued")
        }))
      yield* client.send({ from: "a@b.example", to: "c@d.example", body: "Subject: x\r\n\r\nhi\r\n" })
      yield* Fiber.join(fiber)
      assert.strictEqual(envelope, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    }))

  it.effect("DATA cannot carry BINARYMIME", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "CHUNKING", "BINARYMIME")
          yield* p.expect("MAIL FROM:<a@b.example> BODY=BINARYMIME")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "c@d.example", body: "x", mailOptions: { body: "BINARYMIME" }, transfer: "data" })))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      yield* client.mail("a@b.example", { body: "BINARYMIME" })
      const low = failureOf(yield* Effect.exit(client.data("x")))
      assert.strictEqual((low as SmtpClient.SmtpClientError).reason, "InvalidArgument")
      yield* Fiber.join(fiber)
    }))

  it.effect("a refused chunk abandons the transaction with RSET", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "CHUNKING", "PIPELINING")
          yield* p.until("BDAT 2\r\nab")
          yield* p.send("250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n")
          yield* p.expect("RSET")
          yield* p.reply(250, "ok")
        }))
      const error = failureOf(yield* Effect.exit(client.send({ from: "a@b.example", to: "c@d.example", body: "abcd", transfer: "bdat", chunkSize: 2 })))
      assert.strictEqual((error as SmtpError).code, 552)
      yield* Fiber.join(fiber)
      assert.isTrue(client.isOpen())
    }))
})

describe("SmtpClient: LMTP", () => {
  it.effect("LHLO, then one reply per accepted recipient after the message", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* p.reply(220, "lmtp.test LMTP")
          yield* p.expect("LHLO localhost")
          yield* Scripted.ehlo(p, "PIPELINING", "ENHANCEDSTATUSCODES")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* p.send("250 2.0.0 <a@x.example> delivered\r\n452 4.2.2 <c@x.example> mailbox full\r\n")
        }), { protocol: "lmtp" })
      const result = yield* client.send({ from: "s@x.example", to: ["a@x.example", "b@x.example", "c@x.example"], body: "hi" })
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(result.accepted.map((a) => [a.recipient, a.reply.text]), [["a@x.example", "<a@x.example> delivered"]])
      assert.deepStrictEqual(result.rejected.map((r) => [r.recipient, r.error.code]), [["b@x.example", 550], ["c@x.example", 452]])
    }))

  it.effect("lmtpData gives a status per recipient; data is for SMTP only", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* p.reply(220, "lmtp.test LMTP")
          yield* p.expect("LHLO localhost")
          yield* Scripted.ehlo(p)
          yield* p.expect("MAIL FROM:<s@x.example>")
          yield* p.reply(250, "ok")
          for (const r of ["a", "b"]) {
            yield* p.expect(`RCPT TO:<${r}@x.example>`)
            yield* p.reply(250, "ok")
          }
          yield* p.expect("DATA")
          yield* p.reply(354, "go")
          yield* p.until("\r\n.\r\n")
          yield* p.send("450 4.2.0 try later\r\n250 delivered\r\n")
        }), { protocol: "lmtp" })
      const wrong = failureOf(yield* Effect.exit(client.data("x")))
      assert.strictEqual((wrong as SmtpClient.SmtpClientError).reason, "Unsupported")
      yield* client.mail("s@x.example")
      yield* client.rcpt("a@x.example")
      yield* client.rcpt("b@x.example")
      const statuses = yield* client.lmtpData("body")
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(statuses.map((s) => [s.recipient, s.reply.code, s.error?.isTemporary]), [
        ["a@x.example", 450, true],
        ["b@x.example", 250, undefined]
      ])
    }))
})

describe("SmtpClient: the rest of the commands, QUIT and closing", () => {
  it.effect("VRFY, NOOP and RSET return the server's reply", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("VRFY someone")
          yield* p.reply(252, "2.5.0 cannot verify")
          yield* p.expect("NOOP")
          yield* p.reply(250, "ok")
          yield* p.expect("RSET")
          yield* p.reply(250, "flushed")
        }))
      assert.strictEqual((yield* client.verify("someone")).code, 252)
      assert.strictEqual((yield* client.noop).code, 250)
      assert.strictEqual((yield* client.reset).text, "flushed")
      yield* Fiber.join(fiber)
    }))

  it.effect("quit says QUIT and closes; the client cannot be used afterwards", () =>
    Effect.gen(function*() {
      const { client, fiber } = yield* scripted((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("QUIT")
          yield* p.reply(221, "bye")
          assert.isTrue(yield* p.closed)
        }))
      yield* client.quit
      yield* Fiber.join(fiber)
      assert.isFalse(client.isOpen())
      const error = failureOf(yield* Effect.exit(client.noop))
      assert.strictEqual((error as SmtpClient.SmtpClientError).reason, "Closed")
    }))

  it.effect("closing the scope says QUIT when the conversation allows it", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p)
          yield* p.expect("QUIT")
          yield* p.reply(221, "bye")
          assert.isTrue(yield* p.closed)
        }))
      yield* Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none" }))
      yield* Fiber.join(s.fiber)
    }))
})

describe("SmtpClient: traffic log", () => {
  it.effect("logs commands and replies at Debug level, without credentials or message content", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const capture = Logger.make(({ message }) => {
        logged.push(Array.isArray(message) ? message.join(" ") : String(message))
      })
      yield* Effect.gen(function*() {
        const { client, fiber } = yield* scripted((p) =>
          Effect.gen(function*() {
            yield* Scripted.greet(p, "PIPELINING", "AUTH PLAIN")
            yield* p.expect(/^AUTH PLAIN /)
            yield* p.reply(235, "ok")
            yield* p.chunk
            yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
            yield* p.until("\r\n.\r\n")
            yield* p.reply(250, "queued")
          }), { logTraffic: true, allowInsecureAuth: true })
        yield* client.auth({ _tag: "Password", username: "user", password: Redacted.make("hunter2") })
        yield* client.send({ from: "a@b.example", to: "c@d.example", body: "top secret content" })
        yield* Fiber.join(fiber)
      }).pipe(Effect.provide(Logger.layer([capture])), Effect.provideService(References.MinimumLogLevel, "Debug"))
      const all = logged.join("\n")
      assert.include(all, "EHLO localhost")
      assert.include(all, "AUTH PLAIN <redacted>")
      assert.include(all, "MAIL FROM:<a@b.example> | RCPT TO:<c@d.example> | DATA")
      assert.include(all, "354 go")
      assert.include(all, "<23 bytes>")
      assert.notInclude(all, b64("\0user\0hunter2"))
      assert.notInclude(all, "top secret")
    }))
})

describe("SmtpClient.connect", () => {
  it.effect("gives up connecting after 30 seconds by default", () =>
    Effect.gen(function*() {
      const stalled = Network.of({ listen: () => Effect.never, connect: () => Effect.never })
      const connecting = yield* Effect.forkChild(
        Effect.scoped(SmtpClient.connect({ host: "mx.example" })).pipe(Effect.provideService(Network, stalled))
      )
      yield* settle
      yield* TestClock.adjust("29 seconds")
      assert.isUndefined(connecting.pollUnsafe())
      yield* TestClock.adjust("1 second")
      const error = failureOf(yield* Fiber.await(connecting)) as TransportError
      assert.strictEqual(error.reason, "Timeout")
    }))

  it.effect("connects to the default ports: 587, 465 for implicit TLS, 24 for LMTP", () =>
    Effect.gen(function*() {
      const asked: Array<string> = []
      const recording = Network.of({
        listen: () => Effect.never,
        connect: (o) => Effect.suspend(() => {
          asked.push(`${o.endpoint._tag === "Tcp" ? `${o.endpoint.host}:${o.endpoint.port}` : o.endpoint.path} tls=${o.tls !== undefined}`)
          return Effect.fail(new TransportErrorClass({ reason: "Connect", message: "refused" }))
        })
      })
      for (const options of [{ host: "a.example" }, { host: "b.example", security: "implicit" as const }, { host: "c.example", protocol: "lmtp" as const }, { host: "d.example", port: 2525 }]) {
        yield* Effect.exit(Effect.scoped(SmtpClient.connect(options)).pipe(Effect.provideService(Network, recording)))
      }
      assert.deepStrictEqual(asked, ["a.example:587 tls=false", "b.example:465 tls=true", "c.example:24 tls=false", "d.example:2525 tls=false"])
    }))
})

describe("SmtpClient against the project's own server", () => {
  const text = (b: Uint8Array) => new TextDecoder().decode(b)

  it.effect("sendMail: STARTTLS, pipelined envelope, per-recipient refusal, the body as the server stores it", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({
        tls: Scripted.memoryTls,
        hooks: { rcpt: (to) => (to.startsWith("nobody") ? Effect.fail(SmtpError.of(550, [5, 1, 1], "No such user")) : Effect.void) }
      })
      const result = yield* SmtpClient.sendMail({
        endpoint: server.endpoint,
        from: "sender@example.com",
        to: ["a@example.org", "nobody@example.org", "b@example.org"],
        body: "Subject: test\n\n.leading dot\nlast line"
      }).pipe(Effect.provideService(Network, server.network))
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["a@example.org", "b@example.org"])
      assert.deepStrictEqual(result.rejected.map((r) => [r.recipient, r.error.code, r.error.enhancedCode]), [["nobody@example.org", 550, [5, 1, 1]]])
      assert.strictEqual(server.received.length, 1)
      const stored = server.received[0]!
      assert.deepStrictEqual(stored.to as ReadonlyArray<string>, ["a@example.org", "b@example.org"])
      assert.strictEqual(text(stored.body), "Subject: test\r\n\r\n.leading dot\r\nlast line\r\n")
      // SIZE declared what the server counted.
      assert.strictEqual(stored.options.size, stored.body.length)
    }))

  it.effect("connect: the client sees TLS, and several transactions share the connection", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ tls: Scripted.memoryTls })
      const client = yield* SmtpClient.connect({ endpoint: server.endpoint }).pipe(Effect.provideService(Network, server.network))
      assert.strictEqual(client.tls()?.protocol, "TLSv1.3")
      assert.isDefined(client.extension("PIPELINING"))
      for (const n of [1, 2]) yield* client.send({ from: "a@example.com", to: `r${n}@example.org`, body: `n=${n}` })
      assert.strictEqual(server.sessions().total, 1)
      assert.deepStrictEqual(server.received.map((r) => text(r.body)), ["n=1\r\n", "n=2\r\n"])
    }))

  it.effect("BDAT with BINARYMIME delivers every byte value exactly", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ extensions: { binaryMime: true } })
      const client = yield* SmtpClient.connect({ endpoint: server.endpoint, security: "none" }).pipe(
        Effect.provideService(Network, server.network)
      )
      const bytes = Uint8Array.from({ length: 256 * 40 }, (_, i) => (i * 7 + (i >> 8)) % 256)
      const body = Stream.fromIterable([bytes.subarray(0, 1000), bytes.subarray(1000, 5000), bytes.subarray(5000)])
      yield* client.send({ from: "a@example.com", to: "b@example.org", body, mailOptions: { body: "BINARYMIME" }, chunkSize: 3000 })
      assert.strictEqual(server.received[0]!.options.body, "BINARYMIME")
      assert.deepStrictEqual(server.received[0]!.body, bytes)
      // The low-level path too: MAIL, RCPT, BDAT.
      yield* client.mail("a@example.com", { body: "BINARYMIME" })
      yield* client.rcpt("b@example.org")
      const reply = yield* client.bdat(bytes, { chunkSize: 1024 })
      assert.strictEqual(reply.code, 250)
      assert.deepStrictEqual(server.received[1]!.body, bytes)
    }))

  it.effect("a large streamed body arrives whole through DATA", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const line = "x".repeat(70) + "\r\n.dot\r\n"
      const chunks = Array.from({ length: 2000 }, () => new TextEncoder().encode(line))
      yield* SmtpClient.sendMail({ endpoint: server.endpoint, security: "none", from: "a@example.com", to: "b@example.org", body: Stream.fromIterable(chunks) })
        .pipe(Effect.provideService(Network, server.network))
      assert.strictEqual(text(server.received[0]!.body), line.repeat(2000))
    }))

  it.effect("AUTH picks SCRAM-SHA-256 when the server offers it; a wrong password is 535", () =>
    Effect.gen(function*() {
      const credential = yield* Sasl.deriveScramCredential("correct horse")
      const auth = Sasl.serverMechanisms({
        password: Sasl.passwordVerifier((user) => Effect.succeed(user === "alice" ? Redacted.make("correct horse") : undefined)),
        scramSha256: (user) => Effect.succeed(user === "alice" ? credential : undefined)
      })
      const server = yield* Scripted.ownServer({ tls: Scripted.memoryTls, hooks: { auth } })
      const connect = (password: string) =>
        SmtpClient.connect({
          endpoint: server.endpoint,
          auth: { _tag: "Password", username: "alice", password: Redacted.make(password) }
        }).pipe(Effect.provideService(Network, server.network))
      const client = yield* connect("correct horse")
      assert.strictEqual(client.authenticatedWith(), "SCRAM-SHA-256")
      const error = failureOf(yield* Effect.exit(Effect.scoped(connect("wrong"))))
      assert.strictEqual((error as SmtpError).code, 535)
      // Only PLAIN offered: it is used, as the connection is encrypted.
      const plainOnly = yield* SmtpClient.connect({ endpoint: server.endpoint }).pipe(Effect.provideService(Network, server.network))
      yield* plainOnly.auth(Sasl.plain({ username: "alice", password: Redacted.make("correct horse") }))
      assert.strictEqual(plainOnly.authenticatedWith(), "PLAIN")
    }))

  it.effect("LMTP: one outcome per recipient after the message", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({
        protocol: "lmtp",
        hooks: { lmtp: (_, rcpts) => rcpts.map((r) => (r.startsWith("full") ? SmtpError.of(452, [4, 2, 2], "Mailbox full") : undefined)) }
      })
      const result = yield* SmtpClient.sendMail({
        endpoint: server.endpoint,
        security: "none",
        protocol: "lmtp",
        from: "a@example.com",
        to: ["one@example.org", "full@example.org", "two@example.org"],
        body: "hello"
      }).pipe(Effect.provideService(Network, server.network))
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["one@example.org", "two@example.org"])
      assert.deepStrictEqual(result.rejected.map((r) => [r.recipient, r.error.code, r.error.message]), [["full@example.org", 452, "Mailbox full"]])
    }))
})

describe("SmtpClient over real sockets", () => {
  const certs = testCerts()
  const serverTls = { key: certs.server.key, cert: certs.server.cert }
  const message = { from: "a@example.com", to: "b@example.org", body: "Subject: tcp\r\n\r\nover the wire\r\n" }

  it.live("STARTTLS with certificate verification, then a transaction", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ node: true, tls: serverTls })
      const client = yield* SmtpClient.connect({ endpoint: server.endpoint, tls: { ca: certs.ca } }).pipe(
        Effect.provideService(Network, server.network)
      )
      const tls = client.tls()
      assert.isTrue(tls?.authorized)
      assert.include(tls?.peerCertificate?.subjectAltName ?? "", "127.0.0.1")
      const result = yield* client.send(message)
      assert.strictEqual(result.reply.code, 250)
      yield* client.quit
      assert.strictEqual(new TextDecoder().decode(server.received[0]!.body), message.body)
    }))

  it.live("plaintext injected after the 220 to STARTTLS never reaches the conversation", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.listen((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "STARTTLS")
          yield* p.expect("STARTTLS")
          yield* p.send("220 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n")
          yield* p.closed
        })).pipe(Effect.provide(NodeTransport.layer))
      const exit = yield* Effect.exit(
        SmtpClient.sendMail({ ...message, endpoint: server.endpoint, tls: { ca: certs.ca } }).pipe(Effect.provide(NodeTransport.layer))
      )
      // Read with the 220, it is an attack; read after it, it breaks the TLS handshake.
      const error = failureOf(exit)
      assert.include(["SmtpProtocolError", "TransportError"], error._tag)
      if (error._tag === "TransportError") assert.strictEqual((error as TransportError).reason, "Tls")
      else assert.strictEqual((error as SmtpClient.SmtpProtocolError).reason, "TlsInjection")
    }))

  it.live("implicit TLS", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ node: true, tls: serverTls, listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 }, implicitTls: true }] })
      const result = yield* SmtpClient.sendMail({ ...message, endpoint: server.endpoint, security: "implicit", tls: { ca: certs.ca } }).pipe(
        Effect.provideService(Network, server.network)
      )
      assert.strictEqual(result.accepted.length, 1)
    }))

  it.live("a certificate that does not verify is refused by default", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ node: true, tls: { key: certs.untrusted.key, cert: certs.untrusted.cert } })
      const error = failureOf(
        yield* Effect.exit(SmtpClient.sendMail({ ...message, endpoint: server.endpoint, tls: { ca: certs.ca } }).pipe(
          Effect.provideService(Network, server.network)
        ))
      )
      assert.strictEqual(error._tag, "TransportError")
      assert.strictEqual((error as TransportError).reason, "Tls")
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("over a Unix socket (plaintext by default there)", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-client-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const socket = path.join(dir, "smtp.sock")
      const server = yield* Scripted.ownServer({ node: true, listen: [{ endpoint: { _tag: "Unix", path: socket } }] })
      const result = yield* SmtpClient.sendMail({ ...message, path: socket }).pipe(Effect.provideService(Network, server.network))
      assert.strictEqual(result.accepted.length, 1)
      assert.strictEqual(server.received.length, 1)
    }))
})
