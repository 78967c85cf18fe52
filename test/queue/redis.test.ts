/**
 * The mail queue and the Mailer's rate limit on a private redis-server (Debian's), over its
 * Unix socket: the store contract, and one rate limit shared by two Mailers.
 */
import { layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as MailQueue from "../../src/MailQueue.ts"
import { contract } from "./support/contract.ts"
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
})
