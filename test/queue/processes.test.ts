/**
 * The queue across real processes: worker processes (./support/worker.ts) on a private Redis or
 * PostgreSQL, sending to effect-smtp's own server over TCP. Two workers keep one rate limit
 * together; a worker killed with SIGKILL in the middle of a send loses nothing.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as MailQueue from "../../src/MailQueue.ts"
import { message, quiet } from "./support/contract.ts"
import * as Inbox from "./support/inbox.ts"
import * as Stores from "./support/stores.ts"
import * as Workers from "./support/workers.ts"

class Servers extends Context.Service<Servers, {
  readonly redis: Stores.RedisServer
  readonly postgres: Stores.PostgresServer
}>()("test/Servers") {
  static readonly layer = Layer.effect(
    Servers,
    Effect.all({ redis: Stores.redis, postgres: Stores.postgres }, { concurrency: 2 })
  )
}

type Kind = "redis" | "postgres"

/** The test's own view of the queue (it enqueues and reads statuses; it sends nothing). */
const queueOn = (kind: Kind, name: string) =>
  Effect.gen(function*() {
    const servers = yield* Servers
    const store: Layer.Layer<MailQueue.MailQueueStore, unknown> = kind === "redis"
      ? MailQueue.layerStoreRedis().pipe(Layer.provide(servers.redis.client))
      : MailQueue.layerStoreSql().pipe(Layer.provide(servers.postgres.client))
    const context = yield* Layer.build(MailQueue.layer({ name }).pipe(Layer.provide(store), Layer.provide(quiet)))
    return Context.get(context, MailQueue.MailQueue)
  })

const workerEnv = (kind: Kind, servers: Servers["Service"], queue: string, inbox: Inbox.Inbox, extra: Record<string, string> = {}) => {
  if (inbox.endpoint._tag !== "Tcp") throw new Error("the workers need a TCP server")
  return {
    STORE: kind,
    STORE_SOCKET: kind === "redis" ? servers.redis.socket : servers.postgres.socket,
    QUEUE: queue,
    SMTP_PORT: String(inbox.endpoint.port),
    CONCURRENCY: "1",
    ...extra
  }
}

/** Waits until every message's status is delivered, and returns the statuses. */
const allDelivered = (queue: MailQueue.MailQueue["Service"], ids: ReadonlyArray<string>) =>
  Effect.forEach(ids, (id) =>
    queue.status(id).pipe(
      Effect.map(Option.getOrThrow),
      Effect.filterOrFail((s) => s.state === "delivered", (s) => `${id} is ${s.state}`),
      Effect.retry(Schedule.spaced("20 millis")),
      Effect.timeout("20 seconds")
    ))

const uniqueName = (label: string) => `${label}_${process.pid}_${Date.now()}`

layer(Servers.layer, { excludeTestServices: true, timeout: "60 seconds" })("MailQueue across processes", (it) => {
  for (const kind of ["redis", "postgres"] as const) {
    it.effect(`${kind}: a worker killed with SIGKILL mid-send loses nothing, and each message arrives once`, () =>
      Effect.gen(function*() {
        const servers = yield* Servers
        const inbox = yield* Inbox.start("tcp")
        const name = uniqueName(`kill_${kind}`)
        const env = workerEnv(kind, servers, name, inbox)
        const [w1, w2] = yield* Effect.all([Workers.start("w1", env), Workers.start("w2", env)], { concurrency: 2 })
        const queue = yield* queueOn(kind, name)

        const hold = inbox.holdRcpt("victim@example.org")
        const victim = yield* queue.enqueue(message("victim@example.org", "victim"))
        const held = yield* hold
        const others = yield* Effect.forEach([1, 2, 3, 4, 5], (i) => queue.enqueue(message(`r${i}@example.org`, `r${i}`)))
        // The worker sending the victim dies between its RCPT and the reply: nothing acknowledged.
        assert.include(["w1", "w2"], held.helo)
        const dying = held.helo === "w1" ? w1! : w2!
        yield* dying.kill
        yield* held.release
        // Its replacement, or the other worker once the dead one's lock expires, sends it.
        yield* Workers.start(dying.name, env)

        const arrived = yield* Effect.forEach([victim, ...others], () => Queue.take(inbox.arrivals)).pipe(
          Effect.timeout("20 seconds")
        )
        assert.sameMembers(arrived.flatMap((m) => m.rcpts), ["victim@example.org", ...[1, 2, 3, 4, 5].map((i) => `r${i}@example.org`)])
        const statuses = yield* allDelivered(queue, [victim, ...others])
        assert.isAtLeast(statuses[0]!.attempts, 2, "the killed attempt counts")
        for (const address of ["victim@example.org", ...[1, 2, 3, 4, 5].map((i) => `r${i}@example.org`)]) {
          assert.strictEqual(inbox.copiesFor(address), 1, address)
        }
        assert.strictEqual((yield* queue.stats).depth, 0)
      }))
  }

  it.effect("redis: two worker processes keep one rate limit together", () =>
    Effect.gen(function*() {
      const servers = yield* Servers
      const inbox = yield* Inbox.start("tcp")
      const name = uniqueName("rate")
      const interval = 400
      const env = workerEnv("redis", servers, name, inbox, {
        CONCURRENCY: "4",
        RATE: `2/${interval}`,
        RATE_SOCKET: servers.redis.socket
      })
      yield* Effect.all([Workers.start("w1", env), Workers.start("w2", env)], { concurrency: 2 })
      const queue = yield* queueOn("redis", name)
      const ids = yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (i) => queue.enqueue(message(`n${i}@example.org`, `n${i}`)))
      yield* Effect.forEach(ids, () => Queue.take(inbox.arrivals)).pipe(Effect.timeout("20 seconds"))
      yield* allDelivered(queue, ids)

      // Both processes sent; together they started 8 transactions at 2 per 400 ms: at least
      // three intervals from the first to the last, whatever the timing (with a limit each,
      // about one: 384 ms when tried). The slack is for the first connection's set-up.
      assert.sameMembers([...new Set(inbox.messages.map((m) => m.helo))], ["w1", "w2"])
      const span = Math.max(...inbox.mailTimes) - Math.min(...inbox.mailTimes)
      assert.isAtLeast(span, 3 * interval - 250, `8 transactions in ${span} ms`)
    }))
})
