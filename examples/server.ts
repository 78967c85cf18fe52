/**
 * A backend Layer composed into an Effect app: accepts mail for example.com and logs its size.
 * Run in this repository: node_modules/.bin/node --conditions=source examples/server.ts, then send to 127.0.0.1:2525.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Backend } from "effect-smtp/Backend"
import * as SmtpError from "effect-smtp/SmtpError"
import * as SmtpServer from "effect-smtp/SmtpServer"
import * as NodeTransport from "effect-smtp/NodeTransport"

const Inbox = Layer.succeed(Backend, Backend.of({
  newSession: (connection) => Effect.succeed({
    mail: (from) => Effect.logInfo(`MAIL FROM ${from ?? "<>"} via ${connection.helo()}`),
    rcpt: (to) => to.endsWith("@example.com") ? Effect.void : Effect.fail(SmtpError.mailboxUnavailable),
    data: (body) => Stream.runFold(body, () => 0, (n, chunk) => n + chunk.length).pipe(
      Effect.flatMap((bytes) => Effect.logInfo(`received ${bytes} bytes`))
    ),
    reset: Effect.void
  })
}))

const Server = SmtpServer.layer({
  listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 2525 } }],
  domain: "mx.example.com"
}).pipe(Layer.provide(Inbox), Layer.provide(NodeTransport.layer))

NodeRuntime.runMain(Layer.launch(Server)) // Ctrl-C: 421 to clients, every session closed
