/**
 * Live updates for the page: `GET /api/events` is a server-sent event stream of the store's
 * changes (`received` with the message's summary, `deleted` with its id, `cleared`).
 *
 * Such a response never ends by itself, and neither does a test waiting on `/api/wait`, so the
 * server has a `Stopping` signal: shutting down completes it first, every live response ends,
 * and the HTTP server can close at once instead of waiting out its grace period.
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Sse from "effect/encoding/Sse"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { type Change, MessageStore } from "./MessageStore.ts"

export class Stopping extends Context.Service<Stopping, Deferred.Deferred<void>>()("effect-smtp/inbox/Stopping") {
  static readonly layer = Layer.effect(Stopping, Deferred.make<void>())
}

/** Registers, in the layer that uses it, a finalizer that ends the live responses. */
export const stopOnRelease = Layer.effectDiscard(
  Effect.flatMap(Stopping, (stopping) => Effect.addFinalizer(() => Deferred.succeed(stopping, undefined)))
)

const encode = (change: Change): string =>
  Sse.encoder.write({
    _tag: "Event",
    event: change.type,
    id: undefined,
    data: JSON.stringify(change.type === "received" ? change.message : change.type === "deleted" ? { id: change.id } : {})
  })

/** Proxies and browsers drop a silent connection; a comment now and then keeps it. */
const keepAlive = Stream.tick("20 seconds").pipe(Stream.map(() => ": keep-alive\n\n"))

export const routes = HttpRouter.use((router) =>
  router.add(
    "GET",
    "/api/events",
    Effect.gen(function*() {
      const store = yield* MessageStore
      const stopping = yield* Stopping
      // Subscribed before the response starts, in the request's scope (open while it streams).
      const subscription = yield* store.subscribe
      const events = Stream.fromSubscription(subscription).pipe(
        Stream.map(encode),
        Stream.merge(keepAlive),
        Stream.prepend(["retry: 2000\n\n"]),
        Stream.interruptWhen(Deferred.await(stopping)),
        Stream.encodeText
      )
      return HttpServerResponse.stream(events, {
        contentType: "text/event-stream",
        headers: { "x-accel-buffering": "no" }
      })
    })
  )
)
