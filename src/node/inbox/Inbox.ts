/**
 * `effect-smtp serve --http ADDR`: the dev mail server with a web inbox beside it. The command
 * line imports this module only when `--http` is given, so a plain `serve` never loads the HTTP
 * stack or the MIME parser.
 *
 * Start-up order: the store reads the Maildir, the HTTP server listens, then the SMTP server
 * does. Each delivery is indexed before the client gets its 250, so a test that has sent a
 * message finds it in the API at once. Shutdown runs the other way round, and ends the live
 * responses first so that open pages do not hold the HTTP server up.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as http from "node:http"
import * as SmtpServer from "../../SmtpServer.ts"
import { type Endpoint, formatEndpoint } from "../../Transport.ts"
import * as DevServer from "../DevServer.ts"
import { writeStderr } from "../output.ts"
import * as Access from "./Access.ts"
import * as Api from "./Api.ts"
import * as Events from "./Events.ts"
import * as MessageStore from "./MessageStore.ts"
import * as Page from "./Page.ts"

/** The inbox cannot listen where it was told to. */
export class InboxListenError extends Data.TaggedError("InboxListenError")<{ readonly message: string }> {}

export interface HttpOptions {
  readonly listen: Endpoint
  readonly credentials: Access.Credentials | undefined
}

/**
 * Reads `--http` and `--http-auth`. The inbox shows and deletes mail, so anything but loopback
 * (or a Unix socket) needs a password.
 */
export const parseOptions = (listen: string, auth: string | undefined): Result.Result<HttpOptions, string> => {
  let endpoint: Endpoint
  try {
    endpoint = SmtpServer.parseListenAddress(listen)
  } catch (e) {
    return Result.fail((e as Error).message.replace("listen address", "--http address"))
  }
  const credentials = auth === undefined ? Result.succeed(undefined) : Access.parseCredentials(auth)
  if (Result.isFailure(credentials)) return Result.fail(credentials.failure)
  if (endpoint._tag === "Tcp" && !Access.isLoopbackHost(endpoint.host) && credentials.success === undefined) {
    return Result.fail(
      `refusing to serve the inbox on ${formatEndpoint(endpoint)} without a password: it shows and deletes mail. ` +
        "Add --http-auth USER:PASSWORD, or listen on 127.0.0.1"
    )
  }
  return Result.succeed({ listen: endpoint, credentials: credentials.success })
}

const addressOf = (address: NetAddress.SocketAddress): string =>
  NetAddress.isUnixPathAddress(address)
    ? `unix:${address.path}`
    : formatEndpoint({ _tag: "Tcp", host: NetAddress.formatIp(address.address), port: address.port })

/** The dev server of `options`, with the inbox on `httpOptions.listen`. */
export const layer = (options: DevServer.DevServerOptions, httpOptions: HttpOptions) => {
  const listening: Array<{ address: string; protocol: string; tls: string }> = []
  const emit = (event: DevServer.Event) => {
    if (event.event === "listening") listening.push({ address: event.address, protocol: event.protocol, tls: event.tls })
    return options.emit(event)
  }

  const app = Layer.mergeAll(Api.routes, Events.routes, Page.routes, Access.layer(httpOptions.credentials))
  const served = HttpRouter.serve(app, { disableLogger: true, disableListenLog: true })
  const listen = httpOptions.listen._tag === "Unix"
    ? { path: httpOptions.listen.path }
    : { host: httpOptions.listen.host, port: httpOptions.listen.port }
  const announce = Layer.effectDiscard(Effect.gen(function*() {
    const address = addressOf((yield* HttpServer.HttpServer).address)
    yield* emit({ event: "listening", address, protocol: "http", tls: "none" })
    yield* writeStderr(`effect-smtp: inbox at ${address.startsWith("unix:") ? address : `http://${address}/`}\n`)
  }))
  const web = Layer.mergeAll(announce, Events.stopOnRelease).pipe(
    Layer.provide(served),
    Layer.provide(Layer.mergeAll(
      Layer.effect(
        HttpServer.HttpServer,
        NodeHttpServer.make(() => http.createServer(), listen).pipe(Effect.mapError(({ cause }) =>
          new InboxListenError({
            message: `cannot listen on ${formatEndpoint(httpOptions.listen)}: ${cause instanceof Error ? cause.message : String(cause)}`
          })
        ))
      ),
      NodeHttpServer.layerHttpServices
    ))
  )

  const smtp = Layer.unwrap(Effect.map(MessageStore.MessageStore, (store) =>
    DevServer.layer({
      ...options,
      emit: (event) => Effect.andThen(emit(event), event.event === "received" ? store.record(event) : Effect.void)
    })))

  return smtp.pipe(
    Layer.provide(web),
    Layer.provide(Layer.mergeAll(
      Events.Stopping.layer,
      Layer.succeed(Api.Listeners, Api.Listeners.of({ current: () => listening }))
    )),
    Layer.provide(MessageStore.layer(options.maildir))
  )
}
