/**
 * effect-smtp's server as the benchmark children run it (servers/effect-smtp.ts and
 * servers/effect-smtp-index.ts differ only in how they import NodeRuntime and Layer): the
 * package as it ships (`effect-smtp/*` resolves to dist/), `SmtpServer.layer` with
 * `NodeTransport.layer` on 127.0.0.1:0, and a backend that reads every body to its end and
 * keeps nothing ("sink"), or hashes it ("hash"). Options are the defaults, except room for
 * the 1 GiB message and, in the idle-connections case, 20,000 connections in all and per IP.
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Backend, type MessageBody } from "effect-smtp/Backend"
import * as NodeTransport from "effect-smtp/NodeTransport"
import * as SmtpServer from "effect-smtp/SmtpServer"
import { type Received, resolvedFiles, serveRequests, serverArgs } from "../lib/child.ts"

const options = serverArgs(process.argv.slice(2))
const received: Received = { messages: 0, bytes: 0, digest: "" }

const sink = (body: MessageBody) =>
  Stream.runForEachArray(body, (chunks) =>
    Effect.sync(() => {
      for (const c of chunks) received.bytes += c.length
    }))

const hash = (body: MessageBody) =>
  Effect.suspend(() => {
    const h = createHash("sha256")
    return Stream.runForEachArray(body, (chunks) =>
      Effect.sync(() => {
        for (const c of chunks) {
          h.update(c)
          received.bytes += c.length
        }
      })).pipe(Effect.andThen(Effect.sync(() => (received.digest = h.digest("hex")))))
  })

const consume = options.hashing ? hash : sink

const BenchBackend = Layer.succeed(Backend, Backend.of({
  newSession: () =>
    Effect.succeed({
      mail: () => Effect.void,
      rcpt: () => Effect.void,
      data: (body) => Effect.andThen(consume(body), Effect.sync(() => received.messages++)),
      reset: Effect.void
    })
}))

const Server = SmtpServer.layer({
  listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } }],
  domain: "bench.invalid",
  maxMessageBytes: 2 ** 31, // room for the 1 GiB message
  ...(options.connections !== undefined
    ? { maxConnections: options.connections, maxConnectionsPerIp: options.connections }
    : {})
}).pipe(Layer.provide(BenchBackend), Layer.provide(NodeTransport.layer))

/** The server, and once it listens, the `ready` message with its port for the runner. */
export const BenchServer = Layer.effectDiscard(Effect.gen(function*() {
  const server = yield* SmtpServer.SmtpServer
  const endpoint = server.listeners[0]!.endpoint
  serveRequests({
    port: endpoint._tag === "Tcp" ? endpoint.port : 0,
    resolved: resolvedFiles(["effect-smtp/SmtpServer", "effect-smtp/NodeTransport", "effect"])
  }, { stats: () => ({ ...received }) })
})).pipe(Layer.provide(Server))
