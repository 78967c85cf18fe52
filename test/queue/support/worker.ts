/**
 * A mail queue worker process, as an application would run one: MailQueue workers over a Redis
 * or PostgreSQL store, sending through a Mailer (with a rate limit kept in Redis when asked).
 * The process tests start several and kill them. It prints READY once its workers run.
 *
 * Environment: STORE (redis | postgres), STORE_SOCKET, QUEUE, SMTP_PORT, NAME (the EHLO name),
 * CONCURRENCY, and RATE_SOCKET + RATE ("messages/milliseconds") for a shared rate limit.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as References from "effect/References"
import * as Schedule from "effect/Schedule"
import * as Mailer from "../../../src/Mailer.ts"
import * as MailQueue from "../../../src/MailQueue.ts"
import * as NodeTransport from "../../../src/NodeTransport.ts"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`${name} is not set`)
  return value
}

// Short locks, so that a killed worker's message comes back within a second or two.
const shared = { pollInterval: "20 millis", lockRefreshInterval: "200 millis", lockExpiration: "1 second" } as const

const redis = (socket: string) => NodeRedis.layer({ socket: { path: socket, tls: false } })

const store: Layer.Layer<MailQueue.MailQueueStore, unknown> = env("STORE") === "redis"
  ? MailQueue.layerStoreRedis(shared).pipe(Layer.provide(redis(env("STORE_SOCKET"))))
  : MailQueue.layerStoreSql(shared).pipe(
    Layer.provide(PgClient.layer({ path: env("STORE_SOCKET"), username: "postgres", database: "postgres" }))
  )

const rate = process.env["RATE"]?.split("/").map(Number)
const limiter = rate === undefined
  ? Layer.empty
  : RateLimiter.layer.pipe(Layer.provide(RateLimiter.layerStoreRedis()), Layer.provide(redis(env("RATE_SOCKET"))))

const mailer = Mailer.layer({
  host: "127.0.0.1",
  port: Number(env("SMTP_PORT")),
  security: "none",
  localName: env("NAME"),
  retry: false,
  ...(rate === undefined ? {} : { rateLimit: { messages: rate[0]!, interval: `${rate[1]!} millis`, key: env("QUEUE") } })
}).pipe(Layer.provide(limiter), Layer.provide(NodeTransport.layer))

const workers = MailQueue.layerWorker({ concurrency: Number(env("CONCURRENCY")) }).pipe(
  Layer.provide(mailer),
  Layer.provide(MailQueue.layer({ name: env("QUEUE"), retry: { schedule: Schedule.spaced("200 millis") } })),
  Layer.provide(store),
  Layer.provide(Layer.succeed(References.MinimumLogLevel, "Warn"))
)

NodeRuntime.runMain(
  Effect.scoped(Effect.gen(function*() {
    yield* Layer.build(workers)
    yield* Effect.sync(() => process.stdout.write("READY\n"))
    return yield* Effect.never
  }))
)
