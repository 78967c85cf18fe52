/**
 * The SMTP/LMTP server as a Layer. Building the layer binds every listener; closing its scope
 * stops accepting, lets transactions in progress finish for a grace period, answers `421` to
 * every connection still open, and runs every session's finalizer.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { Backend } from "./Backend.ts"
import { Reply } from "./Reply.ts"
import * as ServerConfig from "./internal/server/Config.ts"
import { FlatContext, serve, type ServerContext } from "./internal/server/Conversation.ts"
import * as Metrics from "./internal/server/Metrics.ts"
import * as ServerReplies from "./internal/server/Replies.ts"
import * as Watchdog from "./internal/server/Deadlines.ts"
import { handover } from "./internal/transport/Handover.ts"
import { AUTH_LINE_LENGTH } from "./internal/server/Security.ts"
import { type Endpoint, formatEndpoint, type Listener, Network, type Transport, TransportError } from "./Transport.ts"

export type { Extensions, ListenSpec, ServerOptions, Timeouts, XclientOptions } from "./internal/server/Config.ts"
export type { BareLineEndingPolicy } from "./internal/codec/DotCodec.ts"
export { defaultExtensions, defaultTimeouts } from "./internal/server/Config.ts"

/** One bound listener, as clients see it. */
export interface BoundListener {
  /** Where it listens; with port 0 asked for, the port the system picked. */
  readonly endpoint: Endpoint
  /** The address in the form `host:port` or `unix:/path`. */
  readonly address: string
  /** What it speaks: the server's `protocol`. */
  readonly protocol: "smtp" | "lmtp"
  /** "implicit": TLS from the first byte; "starttls": STARTTLS offered; "none": plaintext only. */
  readonly tls: "none" | "starttls" | "implicit"
}

/** A running server, the service `layer` provides: where it listens and how busy it is. */
export class SmtpServer extends Context.Service<SmtpServer, {
  /** Every listener, bound, in the order of the `listen` option. */
  readonly listeners: ReadonlyArray<BoundListener>
  /** Connections open right now. */
  readonly activeConnections: Effect.Effect<number>
}>()("effect-smtp/SmtpServer") {}

const refuse = (transport: Transport, text: string) =>
  transport.write(Reply.of(421, [4, 7, 0], text).toWire()).pipe(
    Effect.timeout(Duration.seconds(5)),
    Effect.ignore,
    Effect.andThen(Metric.update(Metrics.connectionsRefused, 1)),
    Effect.ensuring(transport.close)
  )

const hostOf = (e: Endpoint | undefined) => e?._tag === "Tcp" ? e.host : undefined

/** Binds the listeners and serves until the scope closes. */
export const make = Effect.fnUntraced(function*(
  options: ServerConfig.ServerOptions
): Effect.fn.Return<SmtpServer["Service"], TransportError, Backend | Network | Scope.Scope> {
  const c = yield* Effect.try({
    try: () => ServerConfig.resolve(options),
    catch: (e) => new TransportError({ reason: "Listen", message: (e as Error).message })
  })
  const network = yield* Network
  const shutdown = yield* Latch.make(false)
  const connections = yield* FiberSet.make<void, never>()
  const replies = ServerReplies.make(c)
  // Counters are updated in place, with the server's services (where the metrics registry is).
  const services = yield* Effect.context<never>()
  const perIp = new Map<string, number>()
  let active = 0
  let nextId = 0

  // Spans only where a tracer receives them: the default one keeps them nowhere.
  const traced = (yield* Effect.withFiber((fiber) => Effect.succeed(fiber.getRef(Tracer.Tracer)))) !== Tracer.nativeTracer
  const server: ServerContext = {
    config: c,
    replies,
    shutdown,
    open: new Set(),
    deadlines: yield* Watchdog.make,
    traced,
    lmtp: c.protocol === "lmtp",
    readLimit: Math.max(c.maxLineLength, AUTH_LINE_LENGTH),
    ...ServerConfig.connectionSettings(c, replies),
    contexts: new FlatContext(),
    release: (conversation) => {
      active--
      Metrics.activeConnections.updateUnsafe(-1, services)
      const ip = conversation.ip
      if (ip === undefined) return
      const n = (perIp.get(ip) ?? 1) - 1
      if (n === 0) perIp.delete(ip)
      else perIp.set(ip, n)
    }
  }

  if (c.listen.some((l) => l.implicitTls) && c.tls === undefined) {
    return yield* new TransportError({ reason: "Listen", message: "an implicit TLS listener needs TLS certificates" })
  }
  // Closing runs finalizers last-in first-out: the accept loops stop first, then the listeners
  // close (new clients are refused at once, not kept waiting through the grace period), then
  // this one lets transactions finish for the grace period and interrupts what is left (each
  // says 421).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* shutdown.open
      for (const conversation of server.open) conversation.onShutdown()
      yield* FiberSet.awaitEmpty(connections).pipe(Effect.timeoutOption(c.timeouts.shutdown))
      yield* FiberSet.clear(connections)
    })
  )
  const listeners: Array<readonly [Listener, BoundListener]> = []
  // Implicit TLS: the handshake happens before the connection reaches us, so bound it there.
  const implicitTls = c.tls === undefined
    ? undefined
    : { ...c.tls, handshakeTimeout: c.tls.handshakeTimeout ?? Duration.toMillis(c.timeouts.tlsHandshake) }
  for (const spec of c.listen) {
    const l = yield* network.listen({
      endpoint: spec.endpoint,
      unix: spec.unix,
      tls: spec.implicitTls ? implicitTls : undefined,
      // Clients that never finish a handshake (or a PROXY header) would otherwise escape maxConnections.
      maxHandshakes: c.maxConnections,
      reusePort: spec.reusePort,
      proxyProtocol: spec.proxyProtocol
    })
    listeners.push([l, {
      endpoint: l.endpoint,
      address: formatEndpoint(l.endpoint),
      protocol: c.protocol,
      tls: spec.implicitTls ? "implicit" : c.tls !== undefined ? "starttls" : "none"
    }])
  }

  const handle = (transport: Transport, listener: Listener) => {
    const ip = hostOf(transport.remoteEndpoint)
    if (active >= c.maxConnections) return refuse(transport, `${c.domain} Too many connections, try again later`)
    const fromIp = ip === undefined ? 0 : perIp.get(ip) ?? 0
    if (ip !== undefined && fromIp >= c.maxConnectionsPerIp) {
      return refuse(transport, `${c.domain} Too many connections from your address, try again later`)
    }
    active++
    if (ip !== undefined) perIp.set(ip, fromIp + 1)
    const id = (++nextId).toString(36)
    const remote = transport.remoteEndpoint === undefined ? "unknown" : formatEndpoint(transport.remoteEndpoint)
    Metrics.connections.updateUnsafe(1, services)
    Metrics.activeConnections.updateUnsafe(1, services)
    const serving = serve(transport, server, {
      id,
      ip,
      implicitTls: listener.implicitTls,
      logAnnotations: { connection: id, remote }
    })
    return traced
      ? Effect.withSpan(serving, "smtp.connection", {
        attributes: { "smtp.connection": id, "net.peer": remote },
        captureStackTrace: false
      })
      : serving
  }

  // A listener that hands connections over as they are accepted (NodeTransport's) is served
  // without a fiber taking them from its queue; any other through `accept`.
  const runFork = yield* FiberSet.runtime(connections)<Backend>()
  const run = FiberSet.run(connections)
  for (const [listener] of listeners) {
    const take = handover(listener)
    if (take !== undefined) {
      // The connection's fiber starts at once, in the listener's callback: no gap between accepting and serving.
      take((transport) => void runFork(handle(transport, listener)))
      // Runs where the accept loop would stop: before the listeners close (then `accept` queues, and closes, the rest).
      yield* Effect.addFinalizer(() => Effect.sync(() => take(undefined)))
      continue
    }
    // Once accepted, a connection is handed over without a gap an interruption could fall into
    // (its fiber, interruptible as usual, then owns the transport).
    yield* Effect.uninterruptibleMask((restore) =>
      restore(listener.accept).pipe(Effect.flatMap((transport) => run(handle(transport, listener))))
    ).pipe(
      Effect.catch((e) => Effect.andThen(Effect.logWarning("accept failed", e), Effect.sleep(Duration.millis(100)))),
      Effect.forever,
      Effect.forkScoped
    )
  }
  return SmtpServer.of({
    listeners: listeners.map(([, b]) => b),
    activeConnections: Effect.sync(() => active)
  })
})

/**
 * The server as a Layer; needs a `Backend` and a `Network` (`NodeTransport.layer`, or
 * `MemoryTransport.layer` in tests). Building it binds every listener (a failure to bind fails
 * the layer with a `TransportError`); closing it shuts the server down as the module says.
 *
 * @example
 * ```ts
 * import * as Layer from "effect/Layer"
 * import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpServer from "effect-smtp/SmtpServer"
 *
 * const Server = SmtpServer.layer({
 *   listen: [
 *     { endpoint: { _tag: "Tcp", host: "0.0.0.0", port: 25 } },
 *     { endpoint: { _tag: "Tcp", host: "0.0.0.0", port: 465 }, implicitTls: true }
 *   ],
 *   domain: "mx.example.com",
 *   tls: { key, cert }, // PEM: STARTTLS on port 25, TLS from the first byte on 465
 *   maxMessageBytes: 50 * 1024 * 1024,
 *   timeouts: { command: "2 minutes" }
 * }).pipe(Layer.provide(Inbox), Layer.provide(NodeTransport.layer)) // Inbox: your Backend
 *
 * NodeRuntime.runMain(Layer.launch(Server)) // Ctrl-C: 421 to clients, every session closed
 * ```
 */
export const layer = (options: ServerConfig.ServerOptions): Layer.Layer<SmtpServer, TransportError, Backend | Network> =>
  Layer.effect(SmtpServer, make(options))

/**
 * The server with its options from `Config` (environment variables by default), each named
 * SMTP_SERVER_ and its option's path in CONSTANT_CASE:
 *
 * - `SMTP_SERVER_LISTEN`: comma-separated `host:port`, `[v6]:port` or `unix:/path` (default
 *   `127.0.0.1:2525`);
 * - `SMTP_SERVER_DOMAIN`, `SMTP_SERVER_PROTOCOL` (`smtp` or `lmtp`);
 * - `SMTP_SERVER_MAX_MESSAGE_BYTES`, `SMTP_SERVER_MAX_RECIPIENTS`, `SMTP_SERVER_MAX_CONNECTIONS`,
 *   `SMTP_SERVER_MAX_CONNECTIONS_PER_IP`;
 * - `SMTP_SERVER_REQUIRE_AUTH`, `SMTP_SERVER_ALLOW_INSECURE_AUTH`, `SMTP_SERVER_LOG_TRAFFIC`
 *   (`true` or `false`);
 * - `SMTP_SERVER_TIMEOUTS_COMMAND`, `_DATA`, `_WRITE`, `_TLS_HANDSHAKE`, `_REFUSED_SESSION`,
 *   `_SHUTDOWN` (durations: `30 seconds`, `5 minutes`).
 *
 * A variable not set leaves its option to its default, as in `layer`. Fields of `overrides` win
 * (`timeouts` field by field): what the environment cannot say, such as `tls` or the backend's
 * limits, goes there. Effect's Config module is loaded only when this layer is built, so a
 * server that does not read the environment never loads it.
 *
 * @example
 * ```ts
 * import * as Layer from "effect/Layer"
 * import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpServer from "effect-smtp/SmtpServer"
 *
 * // SMTP_SERVER_LISTEN=0.0.0.0:25 SMTP_SERVER_DOMAIN=mx.example.com node server.js
 * const Server = SmtpServer.layerConfig({ greeting: "ESMTP ready" }).pipe(
 *   Layer.provide(Inbox), // your Backend
 *   Layer.provide(NodeTransport.layer)
 * )
 * NodeRuntime.runMain(Layer.launch(Server))
 * ```
 */
export const layerConfig = (
  overrides: Partial<ServerConfig.ServerOptions> = {}
): Layer.Layer<SmtpServer, TransportError | Config.ConfigError, Backend | Network> =>
  Layer.unwrap(Effect.flatMap(
    Effect.promise(() => import("./internal/server/Environment.ts")),
    (env) =>
      Effect.map(env.fromConfig(parseListenAddress), (options) =>
        layer({ ...options, ...overrides, timeouts: { ...options.timeouts, ...overrides.timeouts } }))
  ))

/** Parses `host:port`, `[v6]:port` or `unix:/path`. Throws on anything else (configuration error). */
export const parseListenAddress = (text: string): Endpoint => {
  if (text.startsWith("unix:")) return { _tag: "Unix", path: text.slice(5) }
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || port > 65535) throw new Error(`invalid listen address "${text}": use HOST:PORT or unix:PATH`)
  return { _tag: "Tcp", host: m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]!), port }
}
