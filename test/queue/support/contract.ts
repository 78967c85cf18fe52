/**
 * What every store of the mail queue must do, run by each store's test file against
 * effect-smtp's own server over the network: durability across a restart, retries of
 * temporary failures, dead letters, partial acceptance, idempotent enqueue, depth.
 *
 * A "process" here is a Layer built over a store: a fresh MailQueue, Mailer and store client
 * (for Redis and PostgreSQL, a new connection to the same server), closed as a process would be.
 */
import { assert, type Vitest } from "@effect/vitest"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as References from "effect/References"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Mailer from "../../../src/Mailer.ts"
import * as MailQueue from "../../../src/MailQueue.ts"
import { Network } from "../../../src/Transport.ts"
import * as Inbox from "./inbox.ts"

export interface Process {
  readonly queue: MailQueue.MailQueue["Service"]
  /** One delivery attempt, through this process's Mailer. */
  readonly deliverNext: Effect.Effect<MailQueue.MessageStatus, MailQueue.MailQueueError>
  readonly close: Effect.Effect<void>
}

/** A process: MailQueue and Mailer over a new build of `store`, closed with `close` or the test. */
export const open = (
  store: Layer.Layer<MailQueue.MailQueueStore, unknown>,
  inbox: Inbox.Inbox,
  options: MailQueue.QueueOptions
): Effect.Effect<Process, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const layer = Layer.merge(
      MailQueue.layer(options).pipe(Layer.provide(store)),
      Mailer.layer({ endpoint: inbox.endpoint, security: "none", retry: false, localName: "queue.test" }).pipe(
        Layer.provide(Layer.succeed(Network, inbox.network))
      )
    ).pipe(Layer.provideMerge(quiet))
    const context = yield* Layer.buildWithScope(layer, scope)
    const queue = Context.get(context, MailQueue.MailQueue)
    return { queue, deliverNext: Effect.provideContext(queue.deliverNext, context), close: Scope.close(scope, Exit.void) }
  })

/** The queue logs every delivery at Info; the tests keep only errors. */
export const quiet = Layer.succeed(References.MinimumLogLevel, "Error")

export const message = (to: string | ReadonlyArray<string>, subject = "hello"): MailQueue.OutgoingMessage => ({
  from: "app@example.com",
  to,
  body: `Subject: ${subject}\r\n\r\nqueued ${subject}\r\n`
})

const get = (p: Process, id: string) => Effect.map(p.queue.status(id), Option.getOrThrow)

export interface ContractOptions<R> {
  readonly it: Vitest.MethodsNonLive<R>
  /** The store under test; each build is a new client of the same data. */
  readonly store: Effect.Effect<Layer.Layer<MailQueue.MailQueueStore, unknown>, never, R | Scope.Scope>
  /** The retry delay (SQL stores round delays up to whole seconds). */
  readonly retryDelay: Duration.Input
}

export const contract = <R>({ it, retryDelay, store: makeStore }: ContractOptions<R>) => {
  let n = 0
  const setUp = Effect.gen(function*() {
    const store = yield* makeStore
    const inbox = yield* Inbox.start("tcp")
    const options: MailQueue.QueueOptions = {
      name: `t${++n}_${process.pid}_${Date.now()}`,
      retry: { schedule: Schedule.spaced(retryDelay) }
    }
    return { store, inbox, options, open: () => open(store, inbox, options) }
  })

  it.effect("enqueue returns once the message is stored; a new process delivers it, once", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const first = yield* open()
      const ids = yield* Effect.forEach(["a", "b", "c"], (s) => first.queue.enqueue(message(`${s}@example.org`, s)))
      assert.strictEqual(new Set(ids).size, 3)
      for (const id of ids) assert.strictEqual((yield* get(first, id)).state, "queued")
      yield* first.close

      const second = yield* open()
      const delivered = yield* Effect.forEach(ids, () => second.deliverNext)
      assert.deepStrictEqual(delivered.map((s) => s.state), ["delivered", "delivered", "delivered"])
      assert.sameMembers(delivered.map((s) => s.id), ids)
      assert.sameMembers(inbox.messages.map((m) => m.body), ["a", "b", "c"].map((s) => `Subject: ${s}\r\n\r\nqueued ${s}\r\n`))
      const status = yield* get(second, ids[0]!)
      assert.deepStrictEqual(status.recipients.map((r) => [r.address, r.state]), [["a@example.org", "delivered"]])
      assert.match(status.recipients[0]!.reply ?? "", /^250 2\.0\.0 /)
      assert.strictEqual(status.attempts, 1)
      assert.deepStrictEqual((yield* second.queue.stats).depth, 0)
    }))

  it.effect("a 4xx is deferred with the reply and the next attempt, then delivered exactly once", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const p = yield* open()
      inbox.refuseRcpt("later@example.org", Inbox.tempFailure)
      const id = yield* p.queue.enqueue(message("later@example.org"))
      const deferred = yield* p.deliverNext
      assert.strictEqual(deferred.state, "deferred")
      assert.strictEqual(deferred.deferrals, 1)
      assert.deepInclude(deferred.lastError, { kind: "Refused", code: 451, enhancedCode: "4.3.0" })
      assert.isDefined(deferred.nextAttemptAt)
      assert.deepStrictEqual(yield* get(p, id), deferred)
      assert.strictEqual(inbox.messages.length, 0)

      const delivered = yield* p.deliverNext
      assert.strictEqual(delivered.state, "delivered")
      assert.strictEqual(delivered.attempts, 2)
      assert.strictEqual(inbox.copiesFor("later@example.org"), 1)
    }))

  it.effect("a 4xx to the whole message after DATA is retried, and it arrives once", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const p = yield* open()
      inbox.refuseData(Inbox.tempFailure)
      yield* p.queue.enqueue(message(["x@example.org", "y@example.org"]))
      const deferred = yield* p.deliverNext
      assert.strictEqual(deferred.state, "deferred")
      assert.deepStrictEqual(deferred.recipients.map((r) => r.state), ["pending", "pending"])
      assert.strictEqual((yield* p.deliverNext).state, "delivered")
      assert.deepStrictEqual(inbox.messages.map((m) => m.rcpts), [["x@example.org", "y@example.org"]])
    }))

  it.effect("a 5xx goes to the dead-letter queue with the server's reply", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const p = yield* open()
      inbox.refuseRcpt("nobody@example.org", Inbox.noSuchUser)
      const id = yield* p.queue.enqueue(message("nobody@example.org", "bounce"))
      const dead = yield* p.deliverNext
      assert.strictEqual(dead.state, "dead")
      assert.deepStrictEqual(dead.recipients, [{
        address: "nobody@example.org",
        state: "failed",
        error: { kind: "Refused", code: 550, enhancedCode: "5.1.1", message: "No such user" }
      }])
      assert.strictEqual(inbox.messages.length, 0)
      const letter = yield* p.queue.takeDeadLetter(Effect.succeed)
      assert.strictEqual(letter.id, id)
      assert.strictEqual(new TextDecoder().decode(letter.message.body), "Subject: bounce\r\n\r\nqueued bounce\r\n")
      assert.deepStrictEqual(letter.status, dead)
    }))

  it.effect("partial acceptance: only the recipients refused for now are retried", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const p = yield* open()
      inbox.refuseRcpt("b@example.org", Inbox.tempFailure)
      inbox.refuseRcpt("d@example.org", Inbox.noSuchUser)
      yield* p.queue.enqueue(message(["a@example.org", "b@example.org", "c@example.org", "d@example.org"]))
      const first = yield* p.deliverNext
      assert.strictEqual(first.state, "deferred")
      assert.deepStrictEqual(first.recipients.map((r) => [r.address, r.state]), [
        ["a@example.org", "delivered"],
        ["b@example.org", "pending"],
        ["c@example.org", "delivered"],
        ["d@example.org", "failed"]
      ])
      const second = yield* p.deliverNext
      // b got it on the retry; d never will: the message is dead, for d alone.
      assert.strictEqual(second.state, "dead")
      assert.deepStrictEqual(second.recipients.map((r) => r.state), ["delivered", "delivered", "delivered", "failed"])
      assert.deepStrictEqual(inbox.messages.map((m) => m.rcpts), [["a@example.org", "c@example.org"], ["b@example.org"]])
      for (const r of ["a", "b", "c"]) assert.strictEqual(inbox.copiesFor(`${r}@example.org`), 1)
      const letter = yield* p.queue.takeDeadLetter(Effect.succeed)
      assert.deepStrictEqual(letter.status.recipients.filter((r) => r.state === "failed").map((r) => r.address), ["d@example.org"])
    }))

  it.effect("enqueueing an id again is a no-op: one delivery", () =>
    Effect.gen(function*() {
      const { inbox, open } = yield* setUp
      const p = yield* open()
      const first = yield* p.queue.enqueue(message("once@example.org"), { id: "order-42" })
      const again = yield* p.queue.enqueue(message("once@example.org"), { id: "order-42" })
      assert.deepStrictEqual([first, again], ["order-42", "order-42"])
      assert.strictEqual((yield* p.queue.stats).depth, 1)
      assert.strictEqual((yield* p.deliverNext).state, "delivered")
      yield* p.queue.enqueue(message("once@example.org"), { id: "order-42" })
      yield* Queue.take(inbox.arrivals)
      assert.strictEqual((yield* p.queue.stats).depth, 0)
      assert.strictEqual(inbox.copiesFor("once@example.org"), 1)
    }))

  it.effect("depth and the oldest age count the messages not yet delivered", () =>
    Effect.gen(function*() {
      const { open } = yield* setUp
      const p = yield* open()
      assert.deepStrictEqual(yield* p.queue.stats, { depth: 0, oldestAge: undefined })
      yield* p.queue.enqueue(message("one@example.org"))
      yield* p.queue.enqueue(message("two@example.org"))
      const before = yield* p.queue.stats
      assert.strictEqual(before.depth, 2)
      assert.isDefined(before.oldestAge)
      yield* p.deliverNext
      assert.strictEqual((yield* p.queue.stats).depth, 1)
    }))
}
