/**
 * The shape of a real inbound pipeline: the server says 250 only once the message is in a
 * persisted queue (Effect's PersistedQueue), and workers, here or in other processes, take it
 * from there. If storing fails the client gets 451 and keeps the message, so nothing accepted
 * is lost when this process dies; a worker that dies mid-message leaves it for another.
 *
 * Run in this repository (REDIS_URL for a queue shared by several processes):
 *   node_modules/.bin/node --conditions=source examples/inbound-queue.ts
 * then send to 127.0.0.1:2525, e.g. `./bin/effect-smtp send --server 127.0.0.1:2525 ...`.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as PersistedQueue from "effect/persistence/PersistedQueue"
import { Backend } from "effect-smtp/Backend"
import * as NodeTransport from "effect-smtp/NodeTransport"
import * as SmtpError from "effect-smtp/SmtpError"
import * as SmtpServer from "effect-smtp/SmtpServer"

/** A received message, as the queue stores it. */
export const Received = Schema.Struct({
  from: Schema.NullOr(Schema.String),
  to: Schema.Array(Schema.String),
  body: Schema.Uint8Array,
  receivedAt: Schema.DateTimeUtc,
  helo: Schema.NullOr(Schema.String)
})
export type Received = typeof Received.Type

/** The inbound queue. */
export class Inbound extends Context.Service<Inbound, PersistedQueue.PersistedQueue<Received>>()("example/Inbound") {
  static readonly layer = Layer.effect(Inbound, PersistedQueue.make({ name: "inbound", schema: Received }))
}

/** A backend that acknowledges a message once the queue has it. */
export const QueueBackend = Layer.effect(
  Backend,
  Effect.gen(function*() {
    const inbound = yield* Inbound
    return Backend.of({
      newSession: (connection) =>
        Effect.sync(() => {
          let from: string | null = null
          let to: Array<string> = []
          return {
            mail: (sender) =>
              Effect.sync(() => {
                from = sender
                to = []
              }),
            rcpt: (recipient) => Effect.sync(() => void to.push(recipient)),
            // The body is read into memory (the server's maxMessageBytes bounds it), then offered;
            // the server replies 250 only when this succeeds. A store that fails or hangs (Redis
            // away) gets the client a 451: it keeps the message and tries again later.
            data: (body) =>
              Effect.gen(function*() {
                const chunks = yield* Stream.runCollect(body)
                const received: Received = {
                  from,
                  to: [...to],
                  body: Buffer.concat(chunks),
                  receivedAt: yield* DateTime.now,
                  helo: connection.helo() ?? null
                }
                yield* inbound.offer(received).pipe(
                  Effect.timeout("30 seconds"),
                  Effect.tapError((e) => Effect.logError("could not queue a message", e)),
                  Effect.mapError(() => SmtpError.localError) // 451 4.3.0
                )
              }),
            reset: Effect.sync(() => {
              from = null
              to = []
            })
          }
        })
    })
  })
)

/**
 * Workers: `concurrency` fibers each taking one message at a time. A message is done when
 * `handle` succeeds; when it fails, PersistedQueue offers it again later (at-least-once:
 * `handle` should be idempotent, e.g. keyed on the Message-ID).
 */
export const workers = <E, R>(handle: (message: Received) => Effect.Effect<void, E, R>, concurrency = 4) =>
  Effect.gen(function*() {
    const inbound = yield* Inbound
    const loop = inbound.take(handle).pipe(
      Effect.catch((e) => Effect.logWarning("inbound message failed; it will be retried", e)),
      Effect.forever
    )
    return yield* Effect.forEach(Array.from({ length: concurrency }), () => loop, { concurrency: "unbounded", discard: true })
  })

/** What this example does with a message: log its subject. */
const logSubject = (message: Received) =>
  Effect.logInfo(
    `from <${message.from ?? ""}> to ${message.to.map((t) => `<${t}>`).join(", ")}: ` +
      (/^Subject: (.*)$/im.exec(new TextDecoder().decode(message.body))?.[1] ?? "(no subject)")
  )

if (import.meta.main) {
  const redisUrl = process.env["REDIS_URL"]
  const Store = redisUrl === undefined
    ? PersistedQueue.layerStoreMemory
    : PersistedQueue.layerStoreRedis({ prefix: "inbound:" }).pipe(Layer.provide(NodeRedis.layer({ url: redisUrl })))
  const Queue = Inbound.layer.pipe(Layer.provide(PersistedQueue.layer), Layer.provide(Store))
  const Server = SmtpServer.layer({
    listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 2525 } }],
    domain: "mx.example.com"
  }).pipe(Layer.provide(QueueBackend), Layer.provide(NodeTransport.layer))
  const Workers = Layer.effectDiscard(Effect.forkScoped(workers(logSubject)))
  NodeRuntime.runMain(Layer.launch(Layer.merge(Server, Workers).pipe(Layer.provide(Queue))))
}
