/**
 * CHUNKING (RFC 3030) and BINARYMIME: BDAT reads exactly the announced bytes, always, even
 * when it refuses the command; LAST ends the message; the size limit holds across chunks (a
 * chunk that cannot fit is refused unread); backends that stop early, fail, die or never read
 * still get a correct conversation, a failure answered at the chunk it happened on.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, type Net, replies, show, start, waitFor } from "../support/server.ts"

const bdat = (chunk: string, last = false) => `BDAT ${chunk.length}${last ? " LAST" : ""}\r\n${chunk}`
const commandsAsBytes = "MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nQUIT\r\n"

describe.each<Net>(["memory", "tcp"])("BDAT over %s", (net) => {
  it.live("chunks are concatenated untouched (bare line endings allowed); LAST ends the message", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, bareLineEndings: "allow" })
      const p = yield* s.open()
      yield* envelope(p)
      const raw = "line\n.\r\n..\r.x\x00\xff"
      // Written as latin1: one byte per char, so that the announced sizes are right.
      yield* p.write(new Uint8Array(Buffer.from(bdat("hello ") + bdat(raw) + bdat("!\r\n", true) + "NOOP\r\n", "latin1")))
      const got = yield* replies(p, 4)
      assert.deepStrictEqual(got, ["250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0"])
      assert.strictEqual(rec.messages.length, 1)
      assert.strictEqual(rec.messages[0]!.body, "hello " + raw + "!\r\n")
    }))

  it.live("BDAT 0 LAST ends a message; a 0-byte middle chunk is fine", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("abc") + bdat("") + bdat("", true))
      assert.deepStrictEqual(yield* replies(p, 3), ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
      assert.strictEqual(rec.messages[0]!.body, "abc")
    }))

  it.live("refused BDAT (no MAIL, no RCPT) still reads its bytes instead of running them as commands", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      yield* p.write(bdat(commandsAsBytes, true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["503 5.5.1", "250 2.0.0"])
      yield* dialog(p, "MAIL FROM:<a@example.com>")
      yield* p.write(bdat(commandsAsBytes) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["503 5.5.1", "250 2.0.0"])
      assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail:")), ["mail:a@example.com"])
      assert.notInclude(rec.events, "rcpt:victim@example.com")
    }))

  it.live("MAIL, RCPT and DATA are refused between chunks; the message still completes", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("part one, "))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<x@example.com>", "RCPT TO:<y@example.com>", "DATA"), [
        "503 5.5.1",
        "503 5.5.1",
        "503 5.5.1"
      ])
      yield* p.write(bdat("part two", true))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(rec.messages[0]!.body, "part one, part two")
      assert.deepStrictEqual(rec.messages[0]!.rcpts, ["rcpt@example.com"])
    }))

  it.live("RSET between chunks abandons the message; QUIT too", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("abandoned"))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(show(yield* p.command("RSET")), "250 2.0.0")
      yield* p.write(bdat("orphan", true))
      assert.strictEqual(show(yield* p.reply), "503 5.5.1")
      yield* envelope(p, ["b@example.com"], "NOOP")
      yield* p.write(bdat("kept", true))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.deepStrictEqual(rec.messages.map((m) => m.body), ["kept"])

      yield* envelope(p, ["c@example.com"], "NOOP")
      yield* p.write(bdat("never finished"))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.messages.length, 1)
      assert.strictEqual(rec.logouts(), 1)
    }))

  it.live("BODY=BINARYMIME: DATA is refused with 503 5.5.1, BDAT carries any byte", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, extensions: { binaryMime: true } })
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com> BODY=BINARYMIME", "RCPT TO:<b@example.com>", "DATA"),
        ["250", "250 2.1.0", "250 2.1.5", "503 5.5.1"]
      )
      const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      yield* p.write(`BDAT ${binary.length} LAST\r\n`)
      yield* p.write(new Uint8Array(binary))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(rec.messages[0]!.body, binary.toString("latin1"))
      assert.strictEqual(rec.mailOptions[0]!.body, "BINARYMIME")
    }))

  it.live("a chunk that would go over maxMessageBytes: 552 5.3.4 before it is read, and the connection closes", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, maxMessageBytes: 100 })
      const p = yield* s.open()
      yield* envelope(p)
      const sixty = "m".repeat(60)
      yield* p.write(bdat(sixty) + bdat(commandsAsBytes.padEnd(60, "."), true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "552 5.3.4"])
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.messages.length, 0)
      assert.notInclude(rec.events, "mail:evil@example.net")
      // Exactly the limit is accepted, in one chunk or across several.
      const q = yield* s.open()
      yield* envelope(q)
      yield* q.write(bdat("y".repeat(100), true))
      assert.strictEqual(show(yield* q.reply), "250 2.0.0")
      yield* envelope(q, ["b@example.com"], "NOOP")
      yield* q.write(bdat("y".repeat(40)) + bdat("z".repeat(60), true))
      assert.deepStrictEqual(yield* replies(q, 2), ["250 2.0.0", "250 2.0.0"])
      assert.deepStrictEqual(rec.messages.map((m) => m.body.length), [100, 100])
    }))

  it.live("a backend that stops reading after the first chunk: later chunks are drained, 250 at LAST", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({ data: (body) => Stream.runDrain(Stream.take(body, 1)) })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      const big = "b".repeat(100_000)
      yield* p.write(bdat("first") + bdat(big) + bdat(big) + bdat(commandsAsBytes, true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 5), ["250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0"])
      assert.notInclude(rec.events, "mail:evil@example.net")
    }))

  it.live("a backend that fails on the first chunk: its error is the reply to that chunk; the chunks already sent are read and refused", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        data: (body) => Stream.runDrain(Stream.take(body, 1)).pipe(Effect.andThen(Effect.fail(SmtpError.of(554, [5, 7, 1], "Rejected"))))
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("first") + bdat(commandsAsBytes) + bdat("third", true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 4), ["554 5.7.1", "503 5.5.1", "503 5.5.1", "250 2.0.0"])
      assert.notInclude(rec.events, "mail:evil@example.net")
    }))

  it.live("a backend that fails on the second chunk: 250 to the first, its error to the second", () =>
    Effect.gen(function*() {
      let seen = 0
      const { layer } = makeBackend({
        data: (body) =>
          Stream.runForEach(body, (c) => {
            seen += c.length
            return seen > 5 ? Effect.fail(SmtpError.of(452, [4, 3, 1], "Disk full")) : Effect.void
          })
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("first") + bdat("second") + bdat("third", true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 4), ["250 2.0.0", "452 4.3.1", "503 5.5.1", "250 2.0.0"])
    }))

  it.live("a backend that never reads: every chunk is drained and the message is acknowledged", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ data: () => Effect.void })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("z".repeat(50_000)) + bdat(commandsAsBytes, true) + "NOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 3), ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
    }))

  it.live("a backend that dies during BDAT: 421 4.3.0 and the connection closes", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        data: (body) => Stream.runDrain(Stream.take(body, 1)).pipe(Effect.andThen(Effect.die("backend bug")))
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write(bdat("one") + bdat("two", true))
      const got = yield* replies(p, 1)
      assert.deepStrictEqual(got, ["421 4.3.0"])
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.logouts(), 1)
    }))

  it.live("a stalled backend stops the server reading the chunk", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      let received = 0
      const { layer } = makeBackend({
        data: (body) =>
          Stream.runForEach(body, (c) => Effect.andThen(Effect.sync(() => (received += c.length)), Deferred.await(release)))
      })
      // (One line of 4 MiB: the line limit is lifted, this is about backpressure.)
      const s = yield* start({ net, backend: layer, maxBodyLineLength: 0 })
      const p = yield* s.open()
      yield* envelope(p)
      const size = 4 * 1024 * 1024
      yield* p.write(`BDAT ${size} LAST\r\n`)
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        const piece = new Uint8Array(64 * 1024).fill(0x61)
        for (let sent = 0; sent < size; sent += piece.length) yield* p.write(piece)
      }))
      yield* waitFor(() => received > 0)
      yield* Effect.sleep("100 millis")
      // Held back: the queue between the reader and the backend (4 slices), and a read or two.
      assert.isBelow(s.tap.bytesRead, 1024 * 1024)
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(received, size)
      yield* Fiber.join(writer)
    }))
})
