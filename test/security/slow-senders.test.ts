/**
 * Slow senders (slowloris), in virtual time over the in-memory network: a peer that drips a
 * byte every few seconds cannot hold a connection open past its deadline, whether it drips a
 * command line (the command timeout counts from the start of the line, partial lines do not
 * extend it), a SASL response, or a message body (the body deadline grows only by 1 s per
 * `minDataRate` bytes). A sender at or above that rate is never cut off, and connections held by
 * slow senders are given back once they are cut.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"
import * as Sasl from "../../src/Sasl.ts"
import { makeBackend } from "../support/backend.ts"
import { envelope, show, start, type TestServer } from "../support/server.ts"
import { property } from "./support/fuzz.ts"
import { settle, toLatin1 } from "./support/hostile.ts"
import { parseTranscript, showReply } from "./support/transcript.ts"

interface Dripper {
  readonly write: (text: string) => Effect.Effect<void>
  /** What the server said so far. */
  readonly said: () => string
  readonly closed: () => boolean
  /** Virtual milliseconds this connection has waited in `wait`. */
  readonly elapsed: () => number
  /** Lets `ms` of virtual time pass (and the server act on it). */
  readonly wait: (ms: number) => Effect.Effect<void>
}

/** A raw connection whose replies are collected in the background. */
const dripper = (s: TestServer): Effect.Effect<Dripper, never, Scope.Scope> =>
  Effect.gen(function*() {
    const t = yield* Effect.orDie(s.network.connect({ endpoint: s.endpoint }))
    let said = ""
    let closed = false
    let elapsed = 0
    yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        const chunk = yield* t.read.pipe(Effect.orElseSucceed(() => undefined))
        if (chunk === undefined) break
        said += toLatin1(chunk)
      }
      closed = true
    }))
    yield* settle
    return {
      write: (text) => Effect.andThen(t.write(text).pipe(Effect.ignore), settle),
      said: () => said,
      closed: () => closed,
      elapsed: () => elapsed,
      wait: (ms) =>
        Effect.gen(function*() {
          yield* TestClock.adjust(Duration.millis(ms))
          elapsed += ms
          yield* settle
        })
    }
  })

/** Writes `piece(i)` every `everyMs` until the server hangs up; the virtual time that took. */
const sendUntilClosed = (d: Dripper, piece: (i: number) => string, everyMs: number, limitMs: number) =>
  Effect.gen(function*() {
    const start = d.elapsed()
    for (let i = 0; !d.closed(); i++) {
      if (d.elapsed() - start > limitMs) return yield* Effect.die(new Error(`still open after ${limitMs} ms`))
      yield* d.write(piece(i))
      yield* d.wait(everyMs)
    }
    return d.elapsed() - start
  })

/** One byte of `text` (cycling) at a time. */
const drip = (text: string) => (i: number) => text[i % text.length]!

const lastReply = (d: Dripper) => {
  const t = parseTranscript(d.said(), { complete: true, closedByServer: true })
  assert.deepStrictEqual(t.problems, [])
  return showReply(t.replies.at(-1)!)
}

const MINUTE = 60_000

/**
 * When a body sent in equal pieces every `everyMs` is cut off, as the documented rule says: the
 * deadline starts `idleMs` ahead, each piece buys `msPerPiece` more, but never more than `idleMs`
 * ahead of now. (The first multiple of `everyMs` at or past the deadline, as the test observes it.)
 */
const bodyDeadlineModel = (o: { readonly idleMs: number; readonly msPerPiece: number; readonly everyMs: number }): number => {
  let deadline = o.idleMs
  for (let now = 0; ; now += o.everyMs) {
    if (now >= deadline) return now
    deadline = Math.min(deadline + o.msPerPiece, now + o.idleMs)
  }
}

describe("slow senders (virtual time)", () => {
  it.effect("a command line dripped a byte at a time is cut off when the command timeout ends", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      yield* property("slow: command line", fc.integer({ min: 1, max: 120 }), (seconds) =>
        Effect.scoped(Effect.gen(function*() {
          const d = yield* dripper(s)
          // Never a line end: the line never completes, so only the deadline can end it.
          const took = yield* sendUntilClosed(d, drip("NOOP keep-me-open-"), seconds * 1000, 30 * MINUTE)
          assert.isAtLeast(took, 5 * MINUTE)
          assert.isBelow(took, 5 * MINUTE + seconds * 1000 + 1)
          assert.match(lastReply(d), /^421 4\.4\.2/)
        })), { runs: 15 })
      yield* settle
      assert.strictEqual(yield* s.server.activeConnections, 0)
    }))

  it.effect("complete commands sent slowly are fine; only the wait for each one is bounded", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, junkCommandLimit: Number.POSITIVE_INFINITY, timeouts: { command: "30 seconds" } })
      const d = yield* dripper(s)
      // One NOOP every 29 s for an hour: each is answered, the connection stays.
      for (let i = 0; i < 120; i++) {
        yield* d.write("NOOP\r\n")
        yield* d.wait(29_000)
      }
      assert.isFalse(d.closed())
      assert.strictEqual(d.said().split("250 2.0.0 OK").length - 1, 120)
      yield* d.wait(1_000)
      assert.isTrue(d.closed())
      assert.match(lastReply(d), /^421 4\.4\.2/)
    }))

  it.effect("a SASL response dripped a byte at a time is cut off by the command timeout", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        auth: Sasl.serverMechanisms({ password: Sasl.passwordVerifier(() => Effect.succeed(Redacted.make("pass"))) })
      })
      const s = yield* start({ backend: layer, allowInsecureAuth: true, timeouts: { command: "1 minute" } })
      const d = yield* dripper(s)
      yield* d.write("EHLO c\r\nAUTH LOGIN\r\n")
      assert.include(d.said(), "334 ")
      const took = yield* sendUntilClosed(d, drip("dXNlcg"), 5_000, 30 * MINUTE)
      assert.isAtMost(took, MINUTE)
      assert.match(lastReply(d), /^421 4\.4\.2/)
    }))

  describe.each(["DATA", "BDAT"] as const)("a %s body", (kind) => {
    const open = (d: Dripper) =>
      d.write(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n" + (kind === "DATA" ? "DATA\r\n" : "BDAT 30000000 LAST\r\n")
      )

    it.effect("dripped a byte at a time is cut off about timeouts.data after it started", () =>
      Effect.gen(function*() {
        const { layer, rec } = makeBackend()
        const s = yield* start({ backend: layer })
        yield* property(`slow: ${kind} drip`, fc.integer({ min: 1, max: 60 }), (seconds) =>
          Effect.scoped(Effect.gen(function*() {
            const d = yield* dripper(s)
            yield* open(d)
            // Each byte buys 1/1024 s: after 5 minutes, a few hundred bytes bought well under a second.
            const took = yield* sendUntilClosed(d, drip("slowly "), seconds * 1000, 30 * MINUTE)
            assert.isAtLeast(took, 5 * MINUTE)
            assert.isBelow(took, 5 * MINUTE + seconds * 1000 + 1000)
            assert.match(lastReply(d), /^421 4\.4\.2/)
          })), { runs: 10 })
        assert.strictEqual(rec.messages.length, 0)
      }))

    it.effect("sent below minDataRate is cut off once the deadline catches up; at the rate it never is", () =>
      Effect.gen(function*() {
        const { layer, rec } = makeBackend()
        const s = yield* start({ backend: layer, timeouts: { data: "1 minute" }, minDataRate: 1000 })
        yield* property(`slow: ${kind} rate`, fc.integer({ min: 0, max: 900 }), (rate) =>
          Effect.scoped(Effect.gen(function*() {
            const d = yield* dripper(s)
            yield* open(d)
            // Every 10 s, 10 s worth of bytes at `rate` bytes/s.
            const piece = rate === 0 ? "" : "x".repeat(rate * 10)
            const expected = bodyDeadlineModel({ idleMs: 60_000, msPerPiece: piece.length, everyMs: 10_000 })
            const took = yield* sendUntilClosed(d, () => piece, 10_000, expected + 60_000)
            assert.strictEqual(took, expected)
            assert.match(lastReply(d), /^421 4\.4\.2/)
          })), { runs: 10 })
        assert.strictEqual(rec.messages.length, 0)

        // Exactly at the rate, an hour-long upload is never cut off.
        const d = yield* dripper(s)
        if (kind === "DATA") {
          yield* open(d)
        } else {
          yield* d.write("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
          yield* d.write(`BDAT ${360 * 10_000} LAST\r\n`)
        }
        for (let i = 0; i < 360; i++) {
          yield* d.write("y".repeat(9_998) + "\r\n")
          yield* d.wait(10_000)
        }
        assert.isFalse(d.closed())
        if (kind === "DATA") yield* d.write(".\r\n")
        assert.match(d.said(), /250 2\.0\.0 OK: message accepted\r\n$/)
        assert.strictEqual(rec.messages.at(-1)?.body.length, 360 * 10_000)
      }))
  })

  it.effect("slow senders holding every connection slot are cut off, and the slots come back", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, maxConnections: 5, timeouts: { command: "1 minute" } })
      const slow = yield* Effect.forEach(Array.from({ length: 5 }), () => dripper(s))
      for (const d of slow) yield* d.write("NOOP ")
      const refused = yield* dripper(s)
      assert.isTrue(refused.closed())
      assert.match(lastReply(refused), /^421 4\.7\.0/)
      for (let i = 0; i < 20 && !slow.every((d) => d.closed()); i++) {
        for (const d of slow) yield* d.write("x")
        yield* slow[0]!.wait(5_000)
      }
      assert.isTrue(slow.every((d) => d.closed() && lastReply(d).startsWith("421 4.4.2")))
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      assert.strictEqual(show(yield* p.command("hello\r\n.")), "250 2.0.0")
    }))
})
