/**
 * effect-smtp's client against Postfix's smtp-sink: what the client sends (envelope,
 * parameters, dot-stuffed body; with and without PIPELINING; SMTP and LMTP) is what a real
 * server records, and the sink's refusals come back as typed errors.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import type { Network } from "../../src/Transport.ts"
import * as Files from "./support/files.ts"
import * as SmtpSink from "./support/smtpSink.ts"

const lf = (crlf: string) => crlf.replaceAll("\r\n", "\n")

const message = (n: number) =>
  `From: client@example.org\r\nSubject: message ${n}\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line ${n}\r\n`

/** A client on the sink's socket: plaintext (a Unix socket), EHLO client.test. */
const connect = (sink: SmtpSink.Sink, options: { readonly protocol?: "smtp" | "lmtp" } = {}) =>
  SmtpClient.connect({ path: sink.socket, security: "none", localName: "client.test", ...options })

/** A live test with the real network (`NodeTransport`) provided. */
const live = <E>(name: string, body: () => Effect.Effect<void, E, Network | Scope.Scope>) =>
  it.live(name, () => Effect.provide(body(), NodeTransport.layer))

describe("effect-smtp client → smtp-sink", () => {
  live("one message with PIPELINING: envelope and dot-stuffed body arrive as sent", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files)
      const result = yield* SmtpClient.sendMail({
        path: sink.socket,
        security: "none",
        localName: "client.test",
        from: "client@example.org",
        to: ["a@example.net", "b@example.net"],
        body: message(1)
      })
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["a@example.net", "b@example.net"])
      assert.deepStrictEqual(result.rejected, [])
      assert.strictEqual(result.reply.code, 250)
      const { counters, messages } = yield* sink.finished
      assert.deepStrictEqual(counters, { sessions: 1, quits: 1, messages: 1 })
      assert.deepStrictEqual(messages, [{
        proto: "ESMTP",
        helo: "client.test",
        mail: "<client@example.org>",
        rcpts: ["<a@example.net>", "<b@example.net>"],
        content: lf(message(1))
      }])
    }))

  live("50 messages on one pipelined connection", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files)
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* connect(sink)
        assert.strictEqual(client.extension("PIPELINING"), "")
        for (let n = 0; n < 50; n++) {
          yield* client.send({ from: "client@example.org", to: `rcpt${n}@example.net`, body: message(n) })
        }
      }))
      const { counters, messages } = yield* sink.finished
      assert.deepStrictEqual(counters, { sessions: 1, quits: 1, messages: 50 })
      const bySubject = new Map(messages.map((m) => [/Subject: message (\d+)/.exec(m.content)?.[1], m]))
      for (let n = 0; n < 50; n++) {
        const m = bySubject.get(String(n))
        assert.deepStrictEqual(m?.rcpts, [`<rcpt${n}@example.net>`])
        assert.strictEqual(m?.content, lf(message(n)))
      }
    }))

  live("without PIPELINING (-p): 20 messages, one command at a time", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files, ["-p"])
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* connect(sink)
        assert.isUndefined(client.extension("PIPELINING"))
        for (let n = 0; n < 20; n++) {
          yield* client.send({ from: "client@example.org", to: ["a@example.net", "b@example.net"], body: message(n) })
        }
      }))
      const { counters, messages } = yield* sink.finished
      assert.deepStrictEqual(counters, { sessions: 1, quits: 1, messages: 20 })
      for (const m of messages) assert.deepStrictEqual(m.rcpts, ["<a@example.net>", "<b@example.net>"])
    }))

  live("an 8-bit body is declared BODY=8BITMIME and arrives unchanged", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files)
      const body = "Subject: 8bit\r\n\r\nGrüße aus Köln ✓\r\n"
      yield* SmtpClient.sendMail({
        path: sink.socket,
        security: "none",
        from: "client@example.org",
        to: "a@example.net",
        body
      })
      const { messages } = yield* sink.finished
      assert.strictEqual(messages.length, 1)
      assert.include(messages[0]!.mail.split(" "), "BODY=8BITMIME")
      assert.strictEqual(Buffer.from(messages[0]!.content, "latin1").toString("utf8"), lf(body))
    }))

  live("a streamed 8 MiB body: every byte arrives, dot-stuffing undone by the sink", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files)
      const big = Files.bigMessage(8 * 1024 * 1024)
      // Uneven chunks, so that lines and the ".\r\n" of dot-leading lines split across them.
      const chunks: Array<Uint8Array> = []
      for (let at = 0; at < big.length; at += 65_521) chunks.push(big.subarray(at, at + 65_521))
      yield* SmtpClient.sendMail({
        path: sink.socket,
        security: "none",
        from: "client@example.org",
        to: "a@example.net",
        body: Stream.fromIterable(chunks)
      })
      const { messages } = yield* sink.finished
      assert.strictEqual(messages.length, 1)
      const expected = Buffer.from(lf(Files.latin1(big)), "latin1")
      const got = Buffer.from(messages[0]!.content, "latin1")
      assert.strictEqual(got.length, expected.length)
      assert.strictEqual(Files.sha256(got), Files.sha256(expected))
    }))

  live("every recipient soft-refused (-r RCPT): RecipientsRefused, temporary; nothing delivered", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files, ["-r", "RCPT"])
      const sent = yield* Effect.result(SmtpClient.sendMail({
        path: sink.socket,
        security: "none",
        from: "client@example.org",
        to: ["a@example.net", "b@example.net"],
        body: message(1)
      }))
      assert.isTrue(Result.isFailure(sent))
      const error = Result.isFailure(sent) ? sent.failure : undefined
      assert.instanceOf(error, SmtpClient.RecipientsRefused)
      assert.isTrue(SmtpClient.isTemporary(error))
      assert.deepStrictEqual(
        error instanceof SmtpClient.RecipientsRefused ? error.rejected.map((r) => [r.recipient, r.error.code]) : [],
        [["a@example.net", 450], ["b@example.net", 450]]
      )
      const { counters } = yield* sink.finished
      assert.strictEqual(counters.messages, 0)
    }))

  live("421 in reply to DATA (-Q DATA): a temporary SmtpError 421, and the client closes the connection", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      // smtp-sink does not count a session it ended itself, so it is not waited for here.
      const sink = yield* SmtpSink.start(files, ["-Q", "DATA"])
      const client = yield* connect(sink)
      const sent = yield* Effect.result(client.send({ from: "client@example.org", to: "a@example.net", body: message(1) }))
      assert.isTrue(Result.isFailure(sent))
      const error = Result.isFailure(sent) ? sent.failure : undefined
      assert.instanceOf(error, SmtpError)
      assert.strictEqual(error instanceof SmtpError ? error.code : 0, 421)
      assert.isTrue(SmtpClient.isTemporary(error))
      assert.isFalse(client.isOpen())
      // Every later operation fails with that first error.
      const again = yield* Effect.flip(client.noop)
      assert.strictEqual(again instanceof SmtpError ? again.code : 0, 421)
    }))

  live("LMTP (-L): LHLO, then one reply per recipient", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const sink = yield* SmtpSink.start(files, ["-L"])
      const result = yield* SmtpClient.sendMail({
        path: sink.socket,
        security: "none",
        protocol: "lmtp",
        localName: "client.test",
        from: "client@example.org",
        to: ["a@example.net", "b@example.net", "c@example.net"],
        body: message(1)
      })
      assert.deepStrictEqual(result.accepted.map((a) => [a.recipient, a.reply.code]), [
        ["a@example.net", 250],
        ["b@example.net", 250],
        ["c@example.net", 250]
      ])
      const { messages } = yield* sink.finished
      assert.strictEqual(messages.length, 1)
      assert.strictEqual(messages[0]!.proto, "LMTP")
      assert.strictEqual(messages[0]!.helo, "client.test")
      assert.strictEqual(messages[0]!.content, lf(message(1)))
    }))
})
