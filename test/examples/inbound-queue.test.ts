/**
 * examples/inbound-queue.ts on a private Redis, over TCP: a 250 means the message is in the
 * queue (a worker in another "process" gets it after the server is gone), and a store that
 * fails gets the client a 451.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as PersistedQueue from "effect/persistence/PersistedQueue"
import type * as Redis from "effect/persistence/Redis"
import * as Queue from "effect/Queue"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { Inbound, QueueBackend, type Received, workers } from "../../examples/inbound-queue.ts"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import * as SmtpServer from "../../src/SmtpServer.ts"
import * as Stores from "../queue/support/stores.ts"

class RedisServer extends Context.Service<RedisServer, Stores.RedisServer>()("test/RedisServer") {
  static readonly layer = Layer.effect(RedisServer, Stores.redis)
}

/** The inbound queue over Redis, as one process of the application opens it. */
const inboundOn = (client: Layer.Layer<Redis.Redis, Redis.RedisError>, prefix: string) =>
  Inbound.layer.pipe(
    Layer.provide(PersistedQueue.layer),
    Layer.provide(PersistedQueue.layerStoreRedis({ prefix, pollInterval: "20 millis" })),
    Layer.provide(client)
  )

/** The example's server on a free port, in a scope of its own. */
const serve = (inbound: Layer.Layer<Inbound, unknown>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const server = SmtpServer.layer({ listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } }] }).pipe(
      Layer.provide(QueueBackend),
      Layer.provide(inbound),
      Layer.provide(NodeTransport.layer),
      Layer.provide(Layer.succeed(References.MinimumLogLevel, "None"))
    )
    const context = yield* Layer.buildWithScope(server, scope)
    const endpoint = Context.get(context, SmtpServer.SmtpServer).listeners[0]!.endpoint
    return { endpoint, stop: Scope.close(scope, Exit.void) }
  })

const send = (endpoint: SmtpClient.ConnectOptions["endpoint"]) =>
  SmtpClient.sendMail({
    endpoint,
    security: "none",
    from: "alice@example.org",
    to: ["inbox@example.com", "sales@example.com"],
    body: "Subject: Order 42\r\n\r\nPlease ship it.\r\n"
  }).pipe(Effect.provide(NodeTransport.layer))

layer(RedisServer.layer, { excludeTestServices: true })("examples/inbound-queue", (it) => {
  it.effect("250 means queued: a worker in another process handles the message after the server is gone", () =>
    Effect.gen(function*() {
      const redis = yield* RedisServer
      const prefix = `inbound-${Date.now()}:`
      const server = yield* serve(inboundOn(redis.client, prefix))
      const result = yield* send(server.endpoint)
      assert.strictEqual(result.reply.code, 250)
      yield* server.stop

      const handled = yield* Queue.unbounded<Received>()
      const context = yield* Layer.build(inboundOn(redis.client, prefix))
      const fiber = yield* Effect.forkChild(
        workers((m: Received) => Queue.offer(handled, m), 2).pipe(Effect.provideContext(context))
      )
      const message = yield* Queue.take(handled)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(message.from, "alice@example.org")
      assert.deepStrictEqual(message.to, ["inbox@example.com", "sales@example.com"])
      assert.strictEqual(new TextDecoder().decode(message.body), "Subject: Order 42\r\n\r\nPlease ship it.\r\n")
    }))

  it.effect("a store that fails gets the client a 451, so it keeps the message", () =>
    Effect.gen(function*() {
      // A Redis of its own, stopped before the message comes.
      const scope = yield* Scope.make()
      const redis = yield* Stores.redis.pipe(Scope.provide(scope))
      const client = NodeRedis.layer({ socket: { path: redis.socket, tls: false }, disableOfflineQueue: true })
      const server = yield* serve(inboundOn(client, "gone:"))
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(send(server.endpoint))
      assert.instanceOf(error, SmtpError)
      assert.strictEqual((error as SmtpError).code, 451)
    }))
})
