/**
 * A durable outbound queue: the application enqueues and moves on; workers (in this process
 * here, in as many as you run in production) deliver, retry temporary failures for up to five
 * days, and dead-letter what cannot be delivered. With REDIS_URL, the queue and the rate limit
 * live in Redis and every process running this shares them; without, they live in memory.
 *
 * Run in this repository against the dev server (`npm start`):
 *   node_modules/.bin/node --conditions=source examples/outbound-queue.ts
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Mailer from "effect-smtp/Mailer"
import * as MailQueue from "effect-smtp/MailQueue"
import * as NodeTransport from "effect-smtp/NodeTransport"

const redisUrl = process.env["REDIS_URL"]
const Redis = redisUrl === undefined ? undefined : NodeRedis.layer({ url: redisUrl })

// Where the queue lives: Redis when there is one, memory otherwise.
const Store = Redis === undefined
  ? MailQueue.layerStoreMemory()
  : MailQueue.layerStoreRedis().pipe(Layer.provide(Redis))

// The Mailer's rate limit: in Redis, it holds for every process together.
const SharedLimit = Redis === undefined
  ? Layer.empty
  : RateLimiter.layer.pipe(Layer.provide(RateLimiter.layerStoreRedis()), Layer.provide(Redis))

const MailerLive = Mailer.layer({
  host: "127.0.0.1",
  port: 2525,
  security: "opportunistic",
  retry: false, // the queue retries, on its own schedule
  rateLimit: { messages: 20, interval: "1 second" }
}).pipe(Layer.provide(SharedLimit), Layer.provide(NodeTransport.layer))

const Queue = MailQueue.layer().pipe(Layer.provide(Store))
const Workers = MailQueue.layerWorker({ concurrency: 4 }).pipe(Layer.provide(MailerLive))

const program = Effect.gen(function*() {
  const queue = yield* MailQueue.MailQueue
  const ids = yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) =>
    queue.enqueue({
      from: "noreply@example.com",
      to: `user${i}@example.com`,
      body: `Subject: Your receipt ${i}\r\n\r\nThank you.\r\n`
    }, { id: `receipt-${i}` })) // an id of your own makes enqueueing again after a crash harmless
  yield* Effect.sleep("2 seconds")
  for (const id of ids) {
    const status = yield* queue.status(id)
    yield* Console.log(id, Option.match(status, { onNone: () => "unknown", onSome: (s) => s.state }))
  }
  yield* Console.log(yield* queue.stats)
})

NodeRuntime.runMain(program.pipe(Effect.provide(Layer.provideMerge(Workers, Queue))))
