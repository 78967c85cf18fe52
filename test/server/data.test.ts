/**
 * DATA bodies: they stream from the socket as the backend pulls, end only at CRLF "." CRLF,
 * follow the bare CR / bare LF policy, and survive backends that stop early, fail, or never read.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import type { BareLineEndingPolicy } from "../../src/internal/codec/DotCodec.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, type Net, replies, show, start, waitFor } from "../support/server.ts"

const smuggled = "MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: forged\r\n\r\nevil\r\n"

describe.each<Net>(["memory", "tcp"])("DATA over %s", (net) => {
  it.live("ends only at CRLF . CRLF, whatever the dots and however the bytes are split", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const wire = "..\r\n...\r\n..x\r\n x.\r\n x\r\n..\r\n.\r\n"
      const expected = ".\r\n..\r\n.x\r\n x.\r\n x\r\n.\r\n"
      const p = yield* s.open()
      yield* envelope(p)
      const splits = net === "memory" ? wire.length : 8
      for (let at = 1; at < splits; at++) {
        assert.strictEqual(show(yield* p.command("DATA")), "354")
        yield* p.write(wire.slice(0, at))
        yield* p.write(wire.slice(at) + "NOOP\r\n")
        assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "250 2.0.0"], `split at ${at}`)
        yield* dialog(p, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>")
      }
      assert.isTrue(rec.messages.every((m) => m.body === expected))
      assert.strictEqual(rec.messages.length, splits - 1)
    }))

  it.live("a backend that stops reading early: the rest is drained and the reply is still right", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        data: (body) =>
          Stream.runCollect(Stream.take(body, 1)).pipe(Effect.tap(() => Effect.sync(() => void rec.events.push("stopped"))))
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      for (let i = 0; i < 20; i++) yield* p.write(`line ${i} `.repeat(500) + "\r\n")
      yield* p.write(".\r\nNOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "250 2.0.0"])
      assert.include(rec.events, "stopped")
    }))

  it.live("a backend that fails early with an SmtpError: its reply comes after the real end", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        data: (body) =>
          Stream.runDrain(Stream.take(body, 1)).pipe(Effect.andThen(Effect.fail(SmtpError.of(554, [5, 7, 1], "Spam"))))
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* p.write("Subject: buy now\r\n\r\n" + "x".repeat(100_000) + "\r\n")
      yield* p.write("MAIL FROM:<not-a-command@example.com>\r\n.\r\nNOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["554 5.7.1", "250 2.0.0"])
    }))

  it.live("a backend that never reads its body: drained, 250, and the conversation goes on", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({ data: () => Effect.void })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* p.write("RSET\r\n" + "y".repeat(200_000) + "\r\n.\r\nRCPT TO:<c@example.com>\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "503 5.5.1"])
      assert.notInclude(rec.events, "rcpt:c@example.com")
    }))

  it.live("a body the backend stops reading is not read from the socket either", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      let received = 0
      const { layer, rec } = makeBackend({
        data: (body) =>
          body.pipe(
            Stream.runForEach((chunk) =>
              Effect.gen(function*() {
                received += chunk.length
                yield* Deferred.await(release) // the first chunk never finishes being processed until released
              })
            ),
            Effect.andThen(Effect.sync(() => void rec.events.push(`got ${received}`)))
          )
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      const total = 8 * 1024 * 1024
      const line = "z".repeat(1022) + "\r\n"
      // The client writes as fast as the connection lets it.
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        for (let sent = 0; sent < total; sent += 1024 * 64) yield* p.write(line.repeat(64))
        yield* p.write(".\r\n")
      }))
      yield* waitFor(() => received > 0)
      const readAtStall = s.tap.bytesRead
      yield* Effect.sleep("100 millis")
      // Nothing more was read while the backend held its chunk.
      assert.strictEqual(s.tap.bytesRead, readAtStall)
      assert.isBelow(readAtStall, 1024 * 1024)
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      yield* Fiber.join(writer)
      assert.include(rec.events, `got ${total}`)
    }))
})

describe("a slow backend slows the client (TCP)", () => {
  it.live("the sender's writes stall while the backend does not pull", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      let received = 0
      const { layer } = makeBackend({
        data: (body) =>
          Stream.runForEach(body, (chunk) =>
            Effect.andThen(Effect.sync(() => (received += chunk.length)), Deferred.await(release)))
      })
      const s = yield* start({ net: "tcp", backend: layer, maxMessageBytes: 128 * 1024 * 1024 })
      const endpoint = s.endpoint
      if (endpoint._tag !== "Tcp") return assert.fail("expected TCP")
      const socket = net.connect({ host: endpoint.host, port: endpoint.port })
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      let inbox = ""
      socket.on("data", (b: Buffer) => (inbox += b.toString("latin1")))
      socket.write("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
      yield* waitFor(() => inbox.includes("354 "))

      const total = 64 * 1024 * 1024
      const piece = Buffer.from(("q".repeat(1022) + "\r\n").repeat(64)) // 64 KiB
      let handed = 0
      let waiting = false
      const pump = () => {
        while (handed < total) {
          handed += piece.length
          if (!socket.write(piece)) {
            waiting = true
            socket.once("drain", () => {
              waiting = false
              pump()
            })
            return
          }
        }
        socket.write(".\r\n")
      }
      pump()
      // Wait until the sender is blocked and has made no progress for a while.
      let last = -1
      let still = 0
      yield* waitFor(() => {
        still = waiting && handed === last ? still + 1 : 0
        last = handed
        return still >= 25
      }, 20_000)
      assert.isBelow(handed, total / 2, "the sender was not slowed down")
      assert.isBelow(s.tap.bytesRead, 1024 * 1024)
      yield* Deferred.succeed(release, undefined)
      yield* waitFor(() => inbox.includes("250 2.0.0 OK"), 60_000)
      assert.strictEqual(received, total)
    }), 90_000)
})

describe.each<BareLineEndingPolicy>(["reject", "normalize", "allow"])("bare line endings: %s", (policy) => {
  const options = policy === "reject" ? {} : { bareLineEndings: policy }

  it.live("bare LF and bare CR inside a body", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer, ...options })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "one\ntwo\rthree\r\n."), ["354", policy === "reject" ? "550 5.5.2" : "250 2.0.0"])
      if (policy === "reject") {
        assert.strictEqual(rec.messages.length, 0)
        assert.strictEqual(rec.failedBodies.length, 1) // the backend's stream failed: it stores nothing
      } else {
        assert.strictEqual(rec.messages[0]!.body, policy === "normalize" ? "one\r\ntwo\r\nthree\r\n" : "one\ntwo\rthree\r\n")
      }
      // The transaction is over either way; the connection goes on.
      assert.deepStrictEqual(yield* dialog(p, "DATA", "NOOP"), ["503 5.5.1", "250 2.0.0"])
    }))

  for (const separator of ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r"]) {
    it.live(`smuggling with ${JSON.stringify(separator)} never splits one message into two`, () =>
      Effect.gen(function*() {
        const { layer, rec } = makeBackend()
        const s = yield* start({ backend: layer, ...options })
        const p = yield* s.open()
        yield* envelope(p)
        assert.strictEqual(show(yield* p.command("DATA")), "354")
        yield* p.write("Subject: hello\r\n\r\nhi" + separator + smuggled + ".\r\nNOOP\r\n")
        const answer = yield* replies(p, 2)
        assert.deepStrictEqual(answer, [policy === "reject" ? "550 5.5.2" : "250 2.0.0", "250 2.0.0"])
        assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:")), [
          "mail:sender@example.com",
          "rcpt:rcpt@example.com"
        ])
        assert.strictEqual(rec.events.filter((e) => e === "data").length, 1)
        if (policy !== "reject") {
          assert.strictEqual(rec.messages.length, 1)
          assert.include(rec.messages[0]!.body, "MAIL FROM:<evil@example.net>")
        } else {
          assert.strictEqual(rec.messages.length, 0)
        }
      }))
  }
})
