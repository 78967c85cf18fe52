/**
 * Every read has a deadline, checked in virtual time (TestClock) over the in-memory network:
 * the command timeout, the body deadline that grows only with progress, the TLS handshake,
 * writes to a peer that does not read, and the delay of the soft error limit.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import * as Sasl from "../../src/Sasl.ts"
import { makeBackend } from "../support/backend.ts"
import { activeIs, dialog, envelope, eventually, replies, show, start } from "../support/server.ts"
import { testCerts } from "../support/certs.ts"

const certs = testCerts()

/** Lets the server run until it waits again (on the peer or on the clock). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

describe("timeouts", () => {
  it.effect("a command must arrive within 5 minutes by default, then 421 4.4.2 and close", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* settle
      yield* TestClock.adjust(Duration.subtract(Duration.minutes(5), Duration.millis(1)))
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
      yield* settle
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
      assert.isTrue(yield* p.closed)
    }))

  it.effect("a partial line does not extend the command timeout", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, timeouts: { command: "30 seconds" } })
      const p = yield* s.open()
      yield* settle
      yield* TestClock.adjust("20 seconds")
      yield* p.write("NO")
      yield* settle
      yield* TestClock.adjust("9 seconds")
      yield* p.write("O")
      yield* settle
      yield* TestClock.adjust("1 second")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
      assert.isTrue(yield* p.closed)
    }))

  it.effect("the command timeout also bounds an unanswered SASL challenge", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ auth: Sasl.serverMechanisms({ password: () => Effect.succeed({ identity: "x" }) }) })
      const s = yield* start({ backend: layer, timeouts: { command: "30 seconds" }, allowInsecureAuth: true })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command("AUTH LOGIN")), "334")
      yield* settle
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
      assert.isTrue(yield* p.closed)
    }))

  it.effect("a DATA body gets 5 minutes, plus 1 s per KiB received, never more than 5 minutes ahead", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* settle
      yield* TestClock.adjust("4 minutes")
      yield* p.write("x".repeat(30 * 1024 - 2) + "\r\n") // 30 KiB: 30 s more, the deadline is now 5:30
      yield* settle
      yield* TestClock.adjust("89 seconds") // 5:29
      yield* p.write("y") // one byte buys a millisecond
      yield* settle
      assert.strictEqual(rec.failedBodies.length, 0)
      yield* TestClock.adjust("2 seconds") // 5:31
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(rec.failedBodies.length, 1)
    }))

  it.effect("progress cannot push the body deadline more than timeouts.data ahead of now", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, timeouts: { data: "10 seconds" }, minDataRate: 1 })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* settle
      // 1 MB at 1 byte/s would buy 11 days; the cap is 10 s after the last progress.
      yield* p.write("z".repeat(1_000_000))
      yield* settle
      yield* TestClock.adjust("9 seconds")
      yield* p.write("\r\n.\r\n")
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      yield* p.write("DATA\r\n")
      assert.strictEqual(show(yield* p.reply), "503 5.5.1")
      yield* envelope(p, ["b@example.com"], "RSET")
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* settle
      yield* p.write("z".repeat(1_000_000))
      yield* settle
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
    }))

  it.effect("a BDAT chunk has the same deadline", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, timeouts: { data: "10 seconds" }, minDataRate: 1024 })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write("BDAT 100000 LAST\r\n")
      yield* settle
      yield* TestClock.adjust("9 seconds")
      yield* p.write("b".repeat(10240)) // 10 KiB buy 10 s, but at most 10 s from now: 19 s
      yield* settle
      const written = s.tap.writes.length
      yield* TestClock.adjust("9900 millis")
      yield* settle
      assert.strictEqual(s.tap.writes.length, written)
      yield* TestClock.adjust("100 millis")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
      assert.isTrue(yield* p.closed)
    }))

  it.effect("the TLS handshake after STARTTLS must finish in 60 seconds by default", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, tls: { key: certs.server.key, cert: certs.server.cert } })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      // The client never starts its handshake.
      yield* settle
      yield* TestClock.adjust("59 seconds")
      yield* settle
      assert.strictEqual(yield* s.server.activeConnections, 1)
      yield* TestClock.adjust("1 second")
      assert.isTrue(yield* p.closed) // no reply: the connection is not in a state to carry one
      yield* eventually(() => Effect.runSync(s.server.activeConnections) === 0)
    }))

  it.effect("timeouts.tlsHandshake overrides it", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, tls: { key: certs.server.key, cert: certs.server.cert }, timeouts: { tlsHandshake: "5 seconds" } })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* settle
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(yield* p.closed)
    }))

  it.effect("a write the peer does not take within a minute ends the connection", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* s.tap.writeGate.close
      yield* p.write("NOOP\r\n")
      yield* eventually(() => s.tap.heldWrites === 1)
      yield* TestClock.adjust("59 seconds")
      yield* settle
      assert.strictEqual(rec.logouts(), 0)
      yield* TestClock.adjust("1 second")
      // The 421 cannot be written either; that attempt is bounded too.
      yield* settle
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.logouts(), 1)
      yield* activeIs(s, 0)
    }))

  it.effect("a deadline armed before the last reply does not fire a second farewell while it is written", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, timeouts: { command: "10 seconds" } })
      const p = yield* s.open()
      yield* p.write("NOO") // a partial line: the command deadline runs, 10 s from now
      yield* settle
      yield* TestClock.adjust("6 seconds")
      yield* s.tap.writeGate.close // the peer stops reading
      const stopping = yield* Effect.forkChild(s.stop)
      // The idle connection is told 421 at once; that write is held.
      yield* eventually(() => s.tap.heldWrites === 1)
      yield* TestClock.adjust("4 seconds") // the command deadline passes while the 421 waits
      yield* settle
      assert.strictEqual(s.tap.heldWrites, 1)
      yield* TestClock.adjust("1 second") // the last reply's own 5 s bound
      yield* Fiber.join(stopping)
      assert.strictEqual(s.tap.heldWrites, 0)
    }))

  it.effect("after 10 error replies each further one is delayed by 1 s; the 20th closes with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      for (let i = 1; i <= 10; i++) assert.strictEqual(show(yield* p.command("RCPT TO:<a@example.com>")), "503 5.5.1")
      for (let i = 11; i <= 19; i++) {
        const written = s.tap.writes.length
        yield* p.write("RCPT TO:<a@example.com>\r\n")
        yield* settle
        assert.strictEqual(s.tap.writes.length, written, `error ${i} answered without delay`)
        yield* TestClock.adjust("1 second")
        assert.strictEqual(show(yield* p.reply), "503 5.5.1")
      }
      // Good commands are not delayed.
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
      yield* p.write("RCPT TO:<a@example.com>\r\n")
      yield* settle
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* replies(p, 2), ["503 5.5.1", "421 4.7.0"])
      assert.isTrue(yield* p.closed)
    }))

  it.effect("softErrorLimit and errorDelay override the delay", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, softErrorLimit: 1, errorDelay: "10 seconds" })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "DATA"), ["503 5.5.1"])
      yield* p.write("DATA\r\n")
      yield* settle
      yield* TestClock.adjust("9 seconds")
      yield* settle
      assert.strictEqual(s.tap.writes.length, 2)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(show(yield* p.reply), "503 5.5.1")
    }))
})
