/**
 * The mail queue on a private PostgreSQL (Debian's), over its Unix socket, through
 * @effect/sql-pg: the store contract.
 */
import { layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as MailQueue from "../../src/MailQueue.ts"
import { contract } from "./support/contract.ts"
import * as Stores from "./support/stores.ts"

class Postgres extends Context.Service<Postgres, Stores.PostgresServer>()("test/Postgres") {
  static readonly layer = Layer.effect(Postgres, Stores.postgres)
}

layer(Postgres.layer, { excludeTestServices: true, timeout: "60 seconds" })("MailQueue on PostgreSQL", (it) => {
  contract({
    it,
    // The SQL store counts delays in whole seconds.
    retryDelay: "1 second",
    store: Effect.map(Postgres, (server) =>
      MailQueue.layerStoreSql({ pollInterval: "20 millis" }).pipe(Layer.provide(server.client)))
  })
})
