/**
 * effect-smtp's server as a benchmark child: `SmtpServer.layer` on 127.0.0.1:0 with a backend
 * that reads every body to its end and keeps nothing ("sink"), or hashes it ("hash").
 * Usage: node effect-smtp.mjs sink|hash (through the runner, which talks to it over IPC).
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Backend, type MessageBody } from "../../src/Backend.ts"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpServer from "../../src/SmtpServer.ts"
import { type Received, serveRequests } from "../lib/child.ts"

const hashing = process.argv[2] === "hash"
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

const consume = hashing ? hash : sink

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
  maxMessageBytes: 2 ** 31 // room for the 1 GiB message
}).pipe(Layer.provide(BenchBackend), Layer.provide(NodeTransport.layer))

const main = Effect.gen(function*() {
  const server = yield* SmtpServer.SmtpServer
  const endpoint = server.listeners[0]!.endpoint
  serveRequests({ port: endpoint._tag === "Tcp" ? endpoint.port : 0 }, { stats: () => ({ ...received }) })
  return yield* Effect.never
}).pipe(Effect.provide(Server))

Effect.runFork(main)
