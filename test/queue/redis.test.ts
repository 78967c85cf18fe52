/**
 * The mail queue and the Mailer's rate limit on a private redis-server (Debian's), over its
 * Unix socket: the store contract, and one rate limit shared by two Mailers.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Mailer from "../../src/Mailer.ts"
import * as MailQueue from "../../src/MailQueue.ts"
import { Network } from "../../src/Transport.ts"
import { contract, message } from "./support/contract.ts"
import * as Inbox from "./support/inbox.ts"
import * as Stores from "./support/stores.ts"

class RedisServer extends Context.Service<RedisServer, Stores.RedisServer>()("test/RedisServer") {
  static readonly layer = Layer.effect(RedisServer, Stores.redis)
}

layer(RedisServer.layer, { excludeTestServices: true })("MailQueue on Redis", (it) => {
  contract({
    it,
    retryDelay: "100 millis",
    store: Effect.map(RedisServer, (server) =>
      MailQueue.layerStoreRedis({ pollInterval: "20 millis" }).pipe(Layer.provide(server.client)))
  })

  it.effect("one rate limit holds for two Mailers, each with its own connection to the Redis", () =>
    Effect.gen(function*() {
      const server = yield* RedisServer
      const inbox = yield* Inbox.start("tcp")
      const interval = 300
      const key = `shared-${Date.now()}`
      const mailer = (name: string) =>
        Layer.build(
          Mailer.layer({
            endpoint: inbox.endpoint,
            security: "none",
            localName: name,
            retry: false,
            rateLimit: { messages: 2, interval: `${interval} millis`, key }
          }).pipe(
            Layer.provide(RateLimiter.layer),
            Layer.provide(RateLimiter.layerStoreRedis()),
            Layer.provide(server.client),
            Layer.provide(Layer.succeed(Network, inbox.network))
          )
        ).pipe(Effect.map(Context.get(Mailer.Mailer)))
      const [a, b] = [yield* mailer("a"), yield* mailer("b")]
      yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (i) => (i % 2 === 0 ? a : b).send(message(`n${i}@example.org`)), {
        concurrency: "unbounded"
      })
      // 8 transactions at 2 per 300 ms, whichever Mailer starts them: three intervals at least
      // from the first to the last (the slack is the first connection's set-up).
      const span = Math.max(...inbox.mailTimes) - Math.min(...inbox.mailTimes)
      assert.isAtLeast(span, 3 * interval - 150, `8 transactions in ${span} ms`)
      assert.deepStrictEqual(inbox.messages.map((m) => m.helo).sort(), ["a", "a", "a", "a", "b", "b", "b", "b"])
    }))
})
