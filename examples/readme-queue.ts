/** The queue tour of the README, kept here so that the type check covers it. */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as Mailer from "effect-smtp/Mailer"
import * as MailQueue from "effect-smtp/MailQueue"
import * as NodeTransport from "effect-smtp/NodeTransport"

const Redis = NodeRedis.layer({ url: "redis://127.0.0.1:6379" })
const Queue = MailQueue.layer().pipe(Layer.provide(MailQueue.layerStoreRedis()), Layer.provide(Redis))
const Workers = MailQueue.layerWorker({ concurrency: 4 }).pipe(
  Layer.provide(Mailer.layer({ host: "smtp.example.com", retry: false })), // the queue retries
  Layer.provide(NodeTransport.layer)
)

export const signup = (email: string) =>
  Effect.gen(function*() {
    const queue = yield* MailQueue.MailQueue
    const id = yield* queue.enqueue({ from: "app@example.com", to: email, body: "Subject: Welcome\r\n\r\nHi!\r\n" })
    return id // queue.status(id): queued, sending, deferred (last error, next attempt), delivered, dead
  })
// Layer.provideMerge(Workers, Queue) in worker processes; Queue alone where you only enqueue.

export const Live = Layer.provideMerge(Workers, Queue)
