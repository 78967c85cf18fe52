/**
 * The mail queue with its in-memory store: the contract every store meets (real time, over
 * TCP to effect-smtp's own server), then what the TestClock shows: expiry by age, the default
 * backoff, interruption, workers.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import { TestClock } from "effect/testing"
import * as Mailer from "../src/Mailer.ts"
import * as MailQueue from "../src/MailQueue.ts"
import { Network } from "../src/Transport.ts"
import { contract, message, open, quiet } from "./queue/support/contract.ts"
import * as Inbox from "./queue/support/inbox.ts"

/** One store for the whole test: each "process" is a new MailQueue over it. */
const memoryStore = Effect.map(
  Layer.build(MailQueue.layerStoreMemory()),
  (context) => Layer.succeedContext(context)
)

layer(Layer.empty, { excludeTestServices: true })("MailQueue in memory", (it) => {
  contract({ it, retryDelay: "50 millis", store: memoryStore })
})

/** A process over the in-memory network, for the TestClock. */
const onClock = (retry: MailQueue.RetryOptions, inbox?: Inbox.Inbox) =>
  Effect.gen(function*() {
    const server = inbox ?? (yield* Inbox.start("memory"))
    const p = yield* open(yield* memoryStore, server, { retry })
    return { inbox: server, ...p }
  })

const minutesBetween = (from: DateTime.Utc, to: DateTime.Utc | undefined) =>
  to === undefined ? undefined : Duration.toMinutes(DateTime.distance(from, to))

describe("MailQueue on the TestClock", () => {
  it.effect("a message still deferred at its maximum age is dead, with the last reply", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({ schedule: Schedule.spaced("1 hour"), maxAge: "3 hours" })
      inbox.refuseRcpt("slow@example.org", ...Array.from({ length: 10 }, () => Inbox.tempFailure))
      const id = yield* queue.enqueue(message("slow@example.org"))
      for (const hour of [0, 1, 2]) {
        const status = yield* deliverNext
        assert.strictEqual(status.state, "deferred", `after the attempt at ${hour} h`)
        assert.strictEqual(minutesBetween(status.updatedAt, status.nextAttemptAt), 60)
        yield* TestClock.adjust("1 hour")
      }
      const dead = yield* deliverNext
      assert.strictEqual(dead.state, "dead")
      assert.strictEqual(dead.attempts, 4)
      assert.strictEqual(dead.deferrals, 3)
      assert.strictEqual(dead.lastError?.kind, "Expired")
      assert.match(dead.lastError?.message ?? "", /^gave up after 4 attempts in 3h: Try again later$/)
      assert.deepStrictEqual(dead.recipients[0]?.error, {
        kind: "Refused",
        code: 451,
        enhancedCode: "4.3.0",
        message: "Try again later"
      })
      assert.strictEqual((yield* queue.takeDeadLetter(Effect.succeed)).id, id)
      assert.strictEqual(inbox.messages.length, 0)
    }))

  it.effect("not before its maximum age: the attempt just under it is deferred again", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({ schedule: Schedule.spaced("1 hour"), maxAge: "2 hours" })
      inbox.refuseRcpt("slow@example.org", Inbox.tempFailure, Inbox.tempFailure)
      yield* queue.enqueue(message("slow@example.org"))
      assert.strictEqual((yield* deliverNext).state, "deferred")
      yield* TestClock.adjust("1 hour")
      assert.strictEqual((yield* deliverNext).state, "deferred")
      yield* TestClock.adjust("1 hour")
      assert.strictEqual((yield* deliverNext).state, "delivered")
    }))

  it.effect("a message whose last attempt never finished (its worker died) is dead past its maximum age", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox.start("memory")
      const store = yield* memoryStore
      const p = yield* open(store, inbox, { name: "crashed", retry: { maxAge: "1 day" } })
      const id = yield* p.queue.enqueue(message("poison@example.org"))
      // What a worker killed during its send leaves behind.
      const queued = Option.getOrThrow(yield* p.queue.status(id))
      const ledger = (yield* Effect.provide(MailQueue.MailQueueStore, store)).ledgers.forQueue("crashed")
      yield* ledger.put({ ...queued, state: "sending", attempts: 1 })
      yield* TestClock.adjust("1 day")
      const dead = yield* p.deliverNext
      assert.strictEqual(dead.state, "dead")
      assert.strictEqual(dead.lastError?.kind, "Expired")
      assert.match(dead.lastError?.message ?? "", /the last one never finished/)
      assert.strictEqual(inbox.messages.length, 0)
    }))

  it.effect("the default backoff: 5 minutes, doubling up to an hour", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({})
      inbox.refuseRcpt("busy@example.org", ...Array.from({ length: 7 }, () => Inbox.tempFailure))
      yield* queue.enqueue(message("busy@example.org"))
      const waits: Array<number | undefined> = []
      for (let i = 0; i < 7; i++) {
        const status = yield* deliverNext
        const wait = minutesBetween(status.updatedAt, status.nextAttemptAt)
        waits.push(wait)
        yield* TestClock.adjust(Duration.minutes(wait ?? 0))
      }
      assert.deepStrictEqual(waits, [5, 10, 20, 40, 60, 60, 60])
      assert.strictEqual((yield* deliverNext).state, "delivered")
    }))

  it.effect("a server nobody answers at is a temporary failure", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox.start("memory")
      const nowhere = { ...inbox, endpoint: { _tag: "Tcp", host: "nowhere.test", port: 25 } as const }
      const { deliverNext, queue } = yield* onClock({}, nowhere)
      yield* queue.enqueue(message("someone@example.org"))
      const status = yield* deliverNext
      assert.strictEqual(status.state, "deferred")
      assert.strictEqual(status.lastError?.kind, "Connection")
      assert.match(status.lastError?.message ?? "", /connection refused/)
    }))

  it.effect("a message the server cannot take as it is (SMTPUTF8 not offered) is dead at once", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({})
      yield* queue.enqueue(message("jöran@example.org"))
      const dead = yield* deliverNext
      assert.strictEqual(dead.state, "dead")
      assert.strictEqual(dead.attempts, 1)
      assert.strictEqual(dead.recipients[0]?.error?.kind, "Client")
      assert.match(dead.recipients[0]?.error?.message ?? "", /SMTPUTF8/)
      assert.strictEqual(inbox.messages.length, 0)
    }))

  it.effect("a send interrupted by a shutdown puts the message back, as it was", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({})
      const id = yield* queue.enqueue(message("held@example.org"))
      const hold = inbox.holdRcpt("held@example.org")
      const sending = yield* Effect.forkChild(deliverNext)
      const held = yield* hold
      assert.strictEqual(Option.getOrThrow(yield* queue.status(id)).state, "sending")
      yield* Fiber.interrupt(sending)
      const back = Option.getOrThrow(yield* queue.status(id))
      assert.strictEqual(back.state, "queued")
      // The server notices the connection is gone once it answers (and stores nothing).
      yield* held.release
      const delivered = yield* deliverNext
      assert.strictEqual(delivered.state, "delivered")
      assert.strictEqual(delivered.attempts, 1, "an interrupted attempt does not count")
      assert.strictEqual(inbox.copiesFor("held@example.org"), 1)
    }))

  it.effect("a message that cannot be sent as it is, is refused by enqueue", () =>
    Effect.gen(function*() {
      const { queue } = yield* onClock({})
      const bad = yield* Effect.flip(queue.enqueue(message("not an address")))
      assert.strictEqual(bad.reason, "InvalidMessage")
      assert.match(bad.message, /^<not an address>: /)
      const none = yield* Effect.flip(queue.enqueue({ ...message("x@example.org"), to: [] }))
      assert.strictEqual(none.reason, "InvalidMessage")
      assert.strictEqual((yield* queue.stats).depth, 0)
    }))

  it.effect("an id already used by another message's record is not overwritten", () =>
    Effect.gen(function*() {
      const { deliverNext, inbox, queue } = yield* onClock({})
      yield* queue.enqueue(message("first@example.org", "first"), { id: "same" })
      yield* queue.enqueue(message("second@example.org", "second"), { id: "same" })
      yield* deliverNext
      assert.deepStrictEqual(inbox.messages.map((m) => m.rcpts), [["first@example.org"]])
    }))
})

describe("MailQueue workers", () => {
  it.live("layerWorker delivers in the background, each message once", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox.start("tcp")
      const queueLayer = MailQueue.layer({ name: "workers" }).pipe(Layer.provide(MailQueue.layerStoreMemory()))
      const workers = MailQueue.layerWorker({ concurrency: 3 }).pipe(
        Layer.provide(Mailer.layer({ endpoint: inbox.endpoint, security: "none", pool: { size: 3 } })),
        Layer.provide(Layer.succeed(Network, inbox.network))
      )
      const context = yield* Layer.build(Layer.provideMerge(workers, queueLayer).pipe(Layer.provide(quiet)))
      const queue = Context.get(context, MailQueue.MailQueue)
      const ids = yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => queue.enqueue(message(`user${i}@example.org`, `n${i}`)))
      const arrived = yield* Effect.forEach(ids, () => Queue.take(inbox.arrivals))
      assert.sameMembers(arrived.map((m) => m.rcpts[0]), ids.map((_, i) => `user${i}@example.org`))
      assert.strictEqual(inbox.messages.length, 10)
      // The status is written right after the server's reply: wait for the last one.
      yield* Effect.forEach(ids, (id) =>
        queue.status(id).pipe(
          Effect.flatMap((s) => Option.getOrThrow(s).state === "delivered" ? Effect.void : Effect.fail("not yet")),
          Effect.retry(Schedule.spaced("5 millis"))
        ))
      assert.strictEqual((yield* queue.stats).depth, 0)
    }))
})
