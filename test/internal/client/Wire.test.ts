/**
 * The client wire's deadlines: one sleeper per connection instead of a timeout per read and
 * write. Each deadline still holds on its own (a short one after a long one, a write that
 * never completes), a finished operation leaves nothing armed, and a busy connection does
 * not start a timer per operation.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import * as ClientWire from "../../../src/internal/client/Wire.ts"
import * as MemoryTransport from "../../../src/MemoryTransport.ts"
import { type Transport, TransportError } from "../../../src/Transport.ts"
import { countingSleeps } from "../../support/observe.ts"

/** Lets forked fibers run up to their next suspension. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

const timeoutOf = <A, E>(exit: Exit.Exit<A, E>): TransportError => {
  assert.isTrue(Exit.isFailure(exit))
  const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
  assert.isDefined(error)
  const e = (error as { readonly error: unknown }).error
  assert.instanceOf(e, TransportError)
  assert.strictEqual((e as TransportError).reason, "Timeout")
  return e as TransportError
}

/** A wire over an in-memory pair, its clock counting the sleeps started. */
const setup = Effect.gen(function*() {
  const [client, server] = yield* MemoryTransport.pair()
  const clock = yield* Clock.Clock
  const counter = { sleeps: 0 }
  const counting = countingSleeps(clock, counter)
  const wire = yield* ClientWire.make(client, { logTraffic: false }).pipe(Effect.provideService(Clock.Clock, counting))
  return { wire, client, server, counter }
})

describe("ClientWire deadlines", () => {
  it.effect("a reply that does not come in time fails with Timeout, exactly at the deadline", () =>
    Effect.gen(function*() {
      const { wire } = yield* setup
      const reading = yield* Effect.forkChild(wire.reply(Duration.minutes(5), "EHLO"))
      yield* settle
      yield* TestClock.adjust("299 seconds")
      assert.isUndefined(reading.pollUnsafe())
      yield* TestClock.adjust("1 second")
      const error = timeoutOf(yield* Fiber.await(reading))
      assert.strictEqual(error.message, "no reply to EHLO in time")
    }))

  it.effect("a short deadline after a long one holds (the sleeper is replaced)", () =>
    Effect.gen(function*() {
      const { wire, server } = yield* setup
      yield* server.write("250 ok\r\n")
      yield* wire.reply(Duration.minutes(10), "the message")
      const reading = yield* Effect.forkChild(wire.reply(Duration.seconds(30), "NOOP"))
      yield* settle
      yield* TestClock.adjust("29 seconds")
      assert.isUndefined(reading.pollUnsafe())
      yield* TestClock.adjust("1 second")
      timeoutOf(yield* Fiber.await(reading))
    }))

  it.effect("a finished operation leaves nothing armed: an idle connection never times out", () =>
    Effect.gen(function*() {
      const { wire, server, client } = yield* setup
      yield* server.write("250 one\r\n")
      yield* wire.write("NOOP\r\n", Duration.seconds(10))
      assert.strictEqual((yield* wire.reply(Duration.seconds(10), "NOOP")).code, 250)
      yield* TestClock.adjust("1 hour")
      yield* server.write("250 two\r\n")
      assert.strictEqual((yield* wire.reply(Duration.seconds(10), "NOOP")).text, "two")
      yield* client.write("still open\r\n")
    }))

  it.effect("a failed operation is its own error, not a timeout", () =>
    Effect.gen(function*() {
      const { wire, server } = yield* setup
      yield* server.write("garbage\r\n")
      const exit = yield* Effect.exit(wire.reply(Duration.seconds(10), "NOOP"))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(JSON.stringify(exit), "MalformedReply")
      yield* TestClock.adjust("1 hour")
    }))

  it.effect("a write that never completes times out, and the transport is closed", () =>
    Effect.gen(function*() {
      let closed = false
      const pending = new Set<(effect: Effect.Effect<void, TransportError>) => void>()
      // A transport whose writes wait until it is closed (a peer that never reads).
      const neverTaken = () =>
        Effect.callback<void, TransportError>((resume) => {
          pending.add(resume)
          return Effect.sync(() => pending.delete(resume))
        })
      const stuck: Transport = {
        read: Effect.never,
        write: neverTaken,
        writeUnsafe: neverTaken,
        upgradeTls: () => Effect.never,
        tls: () => undefined,
        localEndpoint: undefined,
        remoteEndpoint: undefined,
        close: Effect.sync(() => {
          closed = true
          for (const resume of pending) resume(Effect.fail(new TransportError({ reason: "Closed", message: "closed locally" })))
          pending.clear()
        })
      }
      const wire = yield* ClientWire.make(stuck, { logTraffic: false })
      const writing = yield* Effect.forkChild(wire.write("DATA\r\n", Duration.minutes(3)))
      yield* settle
      yield* TestClock.adjust("179 seconds")
      assert.isFalse(closed)
      yield* TestClock.adjust("1 second")
      assert.isTrue(closed)
      const error = timeoutOf(yield* Fiber.await(writing))
      assert.strictEqual(error.message, "write timed out")
    }))

  it.effect("many operations with a few different timeouts start only a few timers", () =>
    Effect.gen(function*() {
      const { wire, server, counter } = yield* setup
      const timeouts = [Duration.minutes(5), Duration.minutes(5), Duration.minutes(2), Duration.minutes(3), Duration.minutes(10)]
      for (let i = 0; i < 500; i++) {
        const t = timeouts[i % timeouts.length]!
        yield* wire.write("NOOP\r\n", t)
        yield* server.write("250 ok\r\n")
        yield* wire.reply(t, "NOOP")
        yield* TestClock.adjust("10 millis") // time passes; every sleeper started gets to sleep
      }
      yield* settle
      // One sleeper, replaced once when the 2-minute timeout first came: not one per operation.
      assert.isAtMost(counter.sleeps, 3)
    }))
})
