/**
 * Protocol and resource limits, with their defaults and overrides: command line length,
 * message size, recipients, connections (total and per address), error counts and
 * unrecognised commands. Time-based limits are in timeouts.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { activeIs, dialog, envelope, type Net, replies, show, start } from "../support/server.ts"

const noop = (length: number) => "NOOP " + "x".repeat(length - "NOOP \r\n".length)

describe.each<Net>(["memory", "tcp"])("limits over %s", (net) => {
  it.live("a command line may be 2000 bytes with its CRLF; 2001 gets 500 5.5.2 and the connection closes", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command(noop(2000))), "250 2.0.0")
      assert.strictEqual(show(yield* p.command(noop(2001))), "500 5.5.2")
      assert.isTrue(yield* p.closed)
    }))

  it.live("the limit counts bytes, not characters: a non-ASCII line of 2001 bytes is refused", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      // "NOOP " + 997 two-byte characters + CRLF = 2001 bytes in 1004 characters.
      assert.strictEqual(show(yield* p.command("NOOP " + "é".repeat(996) + "x")), "250 2.0.0")
      assert.strictEqual(show(yield* p.command("NOOP " + "é".repeat(997))), "500 5.5.2")
      assert.isTrue(yield* p.closed)
    }))

  it.live("maxLineLength overrides the limit; a line longer than any buffer is refused as well", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, maxLineLength: 100 })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command(noop(100))), "250 2.0.0")
      assert.strictEqual(show(yield* p.command(noop(101))), "500 5.5.2")
      assert.isTrue(yield* p.closed)
      // 64 KiB without a line ending: refused without being buffered whole. (In memory only: over
      // TCP, closing with unread input makes the kernel send RST, which may overtake the reply.)
      if (net === "memory") {
        const q = yield* s.open()
        const before = s.tap.bytesRead
        yield* q.write("NOOP ")
        for (let i = 0; i < 16; i++) yield* q.write("y".repeat(4096))
        assert.strictEqual(show(yield* q.reply), "500 5.5.2")
        assert.isTrue(yield* q.closed)
        assert.isBelow(s.tap.bytesRead - before, 16 * 1024)
      }
    }))

  it.live("SIZE: the default of 32 MiB is advertised; MAIL with a larger SIZE gets 552 5.3.4", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      const ehlo = yield* p.command("EHLO c")
      assert.include(ehlo.lines, "SIZE 33554432")
      assert.deepStrictEqual(
        yield* dialog(p, "MAIL FROM:<a@example.com> SIZE=33554433", "MAIL FROM:<a@example.com> SIZE=33554432"),
        ["552 5.3.4", "250 2.1.0"]
      )
    }))

  it.live("a DATA body over maxMessageBytes: 552 5.3.4 after the real end, nothing stored, the next command parsed", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, maxMessageBytes: 100 })
      const p = yield* s.open()
      assert.include((yield* p.command("EHLO c")).lines, "SIZE 100")
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<a@example.com> SIZE=101", "MAIL FROM:<a@example.com> SIZE=100"), [
        "552 5.3.4",
        "250 2.1.0"
      ])
      assert.deepStrictEqual(yield* dialog(p, "RCPT TO:<b@example.com>", "DATA"), ["250 2.1.5", "354"])
      // 101 bytes of body (a line of 99 + CRLF), then the terminator and a pipelined command.
      yield* p.write("z".repeat(99) + "\r\n" + ".\r\nNOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["552 5.3.4", "250 2.0.0"])
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(rec.failedBodies.length, 1)
      // The backend's stream failed with the same error.
      assert.strictEqual(show((rec.failedBodies[0]!.error as SmtpError).toReply()), "552 5.3.4")
      // Exactly the limit is fine; the transaction was reset in between.
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "z".repeat(98) + "\r\n."), ["354", "250 2.0.0"])
      assert.strictEqual(rec.messages[0]!.body.length, 100)
    }))

  it.live("recipients: 1000 by default, then 452 4.5.3; maxRecipients overrides", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>")
      let group = ""
      for (let i = 0; i <= 1000; i++) group += `RCPT TO:<r${i}@example.com>\r\n`
      yield* p.write(group)
      const got = yield* replies(p, 1001)
      assert.isTrue(got.slice(0, 1000).every((r) => r === "250 2.1.5"))
      assert.strictEqual(got[1000], "452 4.5.3")
      assert.strictEqual(rec.events.filter((e) => e.startsWith("rcpt:")).length, 1000)

      const small = yield* start({ net, backend: layer, maxRecipients: 2 })
      const q = yield* small.open()
      assert.deepStrictEqual(
        yield* dialog(q, "EHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<1@example.com>", "RCPT TO:<2@example.com>", "RCPT TO:<3@example.com>", "DATA", "x\r\n."),
        ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "452 4.5.3", "354", "250 2.0.0"]
      )
      assert.deepStrictEqual(rec.messages.at(-1)!.rcpts, ["1@example.com", "2@example.com"])
    }))

  it.live("maxConnections: further connections get 421 4.7.0 and are closed; a freed slot is reused", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, maxConnections: 2 })
      const a = yield* s.open()
      yield* s.open()
      const refused = yield* s.connect()
      const r = yield* refused.reply
      assert.strictEqual(show(r), "421 4.7.0")
      assert.isTrue(yield* refused.closed)
      assert.strictEqual(rec.sessions.length, 2) // no session for a refused connection
      assert.strictEqual(yield* s.server.activeConnections, 2)
      assert.strictEqual(show(yield* a.command("QUIT")), "221 2.0.0")
      assert.isTrue(yield* a.closed)
      yield* activeIs(s, 1)
      const c = yield* s.open()
      assert.strictEqual(show(yield* c.command("NOOP")), "250 2.0.0")
    }))

  it.live("maxConnectionsPerIp: one address is capped, the others are not", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, maxConnectionsPerIp: 1 })
      yield* s.open()
      const second = yield* s.connect()
      const r = yield* second.reply
      assert.strictEqual(show(r), "421 4.7.0")
      assert.include(r.text, "your address")
      assert.isTrue(yield* second.closed)
      if (net === "memory") {
        const other = yield* s.open({ localAddress: "192.0.2.7" })
        assert.strictEqual(show(yield* other.command("NOOP")), "250 2.0.0")
      }
    }))

  it.live("unrecognised commands: the 5th in a row is answered and then 421 4.7.0 closes", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      // A recognised command in between starts the count again.
      assert.deepStrictEqual(yield* dialog(p, "X1", "X2", "X3", "X4", "NOOP", "X1", "X2", "X3", "X4"), [
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2",
        "250 2.0.0",
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2"
      ])
      yield* p.write("X5\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["500 5.5.2", "421 4.7.0"])
      assert.isTrue(yield* p.closed)
    }))

  it.live("maxUnknownCommands overrides the count", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, maxUnknownCommands: 2 })
      const p = yield* s.open()
      yield* p.write("FOO\r\nBAR\r\nNOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 3), ["500 5.5.2", "500 5.5.2", "421 4.7.0"])
      assert.isTrue(yield* p.closed)
    }))

  it.live("the hard error limit closes with 421 4.7.0 after the reply that reached it", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      // (Pipelined past DATA, which forbidUnauthorizedPipelining would refuse first.)
      const s = yield* start({ net, backend: layer, softErrorLimit: 100, hardErrorLimit: 3, forbidUnauthorizedPipelining: false })
      const p = yield* s.open()
      yield* p.write("RCPT TO:<a@example.com>\r\nNOOP\r\nDATA\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\n")
      assert.deepStrictEqual(yield* replies(p, 5), ["503 5.5.1", "250 2.0.0", "503 5.5.1", "503 5.5.1", "421 4.7.0"])
      assert.isTrue(yield* p.closed)
    }))

  it.live("junk commands: 100 by default, then each NOOP, RSET, VRFY, EXPN or HELP counts as an error", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, softErrorLimit: 100, hardErrorLimit: 1 })
      const p = yield* s.open()
      const junk = ["NOOP", "RSET", "VRFY postmaster", "HELP"]
      for (let i = 0; i < 100; i++) assert.strictEqual((yield* p.command(junk[i % junk.length]!)).code < 400, true)
      // The 101st is answered as usual, and it is the error that reaches the hard limit.
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
      assert.strictEqual(show(yield* p.reply), "421 4.7.0")
      assert.isTrue(yield* p.closed)
    }))

  it.live("junkCommandLimit overrides the count, which starts again when a message is accepted", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, junkCommandLimit: 2, softErrorLimit: 100, hardErrorLimit: 2 })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "NOOP", "NOOP", "NOOP"), ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
      // One error counted (the third NOOP); a message accepted resets the junk count, not the errors.
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      assert.strictEqual(show(yield* p.command("Subject: hi\r\n\r\nhello\r\n.")), "250 2.0.0")
      assert.strictEqual(rec.messages.length, 1)
      assert.deepStrictEqual(yield* dialog(p, "NOOP", "RSET"), ["250 2.0.0", "250 2.0.0"])
      assert.strictEqual(show(yield* p.command("HELP")), "214 2.0.0")
      assert.strictEqual(show(yield* p.reply), "421 4.7.0")
      assert.isTrue(yield* p.closed)
    }))
})

describe("the message size at its default", () => {
  it.live("a DATA body of 32 MiB is accepted; one byte more is 552 5.3.4", () =>
    Effect.gen(function*() {
      let received = 0
      const { layer } = makeBackend({
        data: (body) => Stream.runForEach(body, (c) => Effect.sync(() => void (received += c.length)))
      })
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      const line = "s".repeat(1022) + "\r\n"
      const MiB = line.repeat(1024)
      for (const extra of ["", "!"]) {
        yield* envelope(p)
        assert.strictEqual(show(yield* p.command("DATA")), "354")
        for (let i = 0; i < 31; i++) yield* p.write(MiB)
        yield* p.write(line.repeat(1023) + extra + "s".repeat(1022) + "\r\n.\r\n")
        assert.strictEqual(show(yield* p.reply), extra === "" ? "250 2.0.0" : "552 5.3.4")
        if (extra === "") assert.strictEqual(received, 32 * 1024 * 1024)
      }
    }))
})

describe("connection limits at their defaults", () => {
  it.live("1000 connections in all, 50 from one address", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      // 20 addresses x 50 connections = 1000.
      for (let host = 1; host <= 20; host++) {
        for (let i = 0; i < 50; i++) yield* s.connect({ localAddress: `10.0.0.${host}` })
      }
      yield* activeIs(s, 1000)
      const overall = yield* s.connect({ localAddress: "10.0.1.1" })
      assert.strictEqual(show(yield* overall.reply), "421 4.7.0")
      assert.isTrue(yield* overall.closed)
    }), 60_000)

  it.live("the 51st connection from one address is refused", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      for (let i = 0; i < 50; i++) yield* s.open({ localAddress: "10.0.0.1" })
      const refused = yield* s.connect({ localAddress: "10.0.0.1" })
      assert.strictEqual(show(yield* refused.reply), "421 4.7.0")
      const other = yield* s.open({ localAddress: "10.0.0.2" })
      assert.strictEqual(show(yield* other.command("NOOP")), "250 2.0.0")
    }))
})
