/**
 * `Transport` over node:net / node:tls: TCP and Unix sockets, STARTTLS in place and
 * implicit TLS. With the modules behind it in internal/transport/ (the connection, the
 * listeners, socket facts and TLS handshakes, Unix socket access), the only code of the
 * library that imports `node:*`.
 *
 * - Reads happen on demand: the socket starts paused, and once read from it flows ('data'
 *   events, the cheapest read path Node has) but pauses whenever `READ_AHEAD` bytes are waiting
 *   for a `read`, so a consumer that stops pulling applies TCP backpressure.
 * - `write` waits for `'drain'` only when `socket.write()` returned false.
 * - `close` flushes (`end()`), then destroys; a short deadline bounds the flush.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import {
  type ConnectOptions,
  type Endpoint,
  formatEndpoint,
  Network,
  type TlsClientOptions,
  type Transport,
  TransportError
} from "./Transport.ts"
import {
  nodeTls,
  ignore,
  errorMessage,
  tlsError,
  tcpEndpoint,
  defaultServername
} from "./internal/transport/NodeSockets.ts"
import { makeConn } from "./internal/transport/NodeConnection.ts"
import type { MakeOptions } from "./internal/transport/NodeConnection.ts"
import { listen } from "./internal/transport/NodeListener.ts"

export type { MakeOptions } from "./internal/transport/NodeConnection.ts"
export { adopt, listen, listenSockets, type SocketListenOptions } from "./internal/transport/NodeListener.ts"

/**
 * A `Transport` over a connected socket (a `tls.TLSSocket` whose handshake is done counts as
 * already encrypted). The caller owns it: nothing closes it but `close`.
 */
export const makeUnsafe = (socket: net.Socket, role: "server" | "client", options?: MakeOptions): Transport =>
  makeConn(socket, role, options ?? {})

/** {@link makeUnsafe} as an Effect whose scope closes the transport. */
export const make = (
  socket: net.Socket,
  role: "server" | "client",
  options?: MakeOptions
): Effect.Effect<Transport, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.sync(() => makeUnsafe(socket, role, options)), (t) => t.close)


// ---------------------------------------------------------------------------------------------
// Connecting

const connectError = (endpoint: Endpoint, cause: unknown) =>
  new TransportError({ reason: "Connect", message: `cannot connect to ${formatEndpoint(endpoint)}: ${errorMessage(cause)}`, cause })

/** Connects without a scope: the caller must `close` the transport. */
export const connectUnsafe = (options: ConnectOptions): Effect.Effect<Transport, TransportError> =>
  Effect.callback((resume) => {
    const endpoint = options.endpoint
    const hostname = endpoint._tag === "Tcp" ? endpoint.host : undefined
    const target = endpoint._tag === "Unix"
      ? { path: endpoint.path }
      : { host: endpoint.host, port: endpoint.port, ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}) }
    const clientTls: TlsClientOptions | undefined = options.tls
    const servername = clientTls === undefined ? undefined : clientTls.servername ?? defaultServername(hostname)
    let socket: net.Socket
    try {
      socket = clientTls === undefined
        ? net.connect(target)
        : nodeTls().connect({ ...clientTls, ...target, ...(servername !== undefined ? { servername } : {}) })
    } catch (cause) {
      return resume(Effect.fail(connectError(endpoint, cause)))
    }
    socket.on("error", ignore)
    let tcpConnected = false
    const cleanup = () => {
      socket.off("connect", onConnect).off("secureConnect", onReady).off("error", onError).off("close", onClose)
    }
    const onConnect = () => {
      tcpConnected = true
      if (clientTls === undefined) onReady()
    }
    const onReady = () => {
      cleanup()
      const endpoints: MakeOptions = endpoint._tag === "Unix"
        ? { remoteEndpoint: endpoint }
        : { localEndpoint: tcpEndpoint(socket.localAddress, socket.localPort), remoteEndpoint: tcpEndpoint(socket.remoteAddress, socket.remotePort) }
      resume(Effect.succeed(makeConn(socket, "client", { ...endpoints, hostname })))
    }
    const onError = (cause: unknown) => {
      cleanup()
      socket.destroy()
      resume(Effect.fail(
        tcpConnected
          ? tlsError(`TLS handshake with ${formatEndpoint(endpoint)} failed: ${errorMessage(cause)}`, cause)
          : connectError(endpoint, cause)
      ))
    }
    const onClose = () => onError(new Error("connection closed"))
    socket.once("connect", onConnect).once("error", onError).once("close", onClose)
    if (clientTls !== undefined) socket.once("secureConnect", onReady)
    return Effect.sync(() => {
      cleanup()
      socket.destroy()
    })
  })

/**
 * Connects over TCP or a Unix socket; the scope owns the connection. With `tls`, implicit TLS:
 * certificates are verified by default and `servername` defaults to the host when it is a name.
 * Timeouts are the caller's (`Effect.timeout`).
 */
export const connect = (options: ConnectOptions): Effect.Effect<Transport, TransportError, Scope.Scope> =>
  Effect.acquireRelease(connectUnsafe(options), (t) => t.close)

/**
 * The real network: TCP and Unix sockets through node:net and node:tls. What a server or a
 * client needs in production.
 *
 * @example
 * ```ts
 * import * as Layer from "effect/Layer"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpServer from "effect-smtp/SmtpServer"
 *
 * const Server = SmtpServer.layer({ listen: [{ endpoint: { _tag: "Unix", path: "/run/app/lmtp.sock" } }], protocol: "lmtp" })
 *   .pipe(Layer.provide(Inbox), Layer.provide(NodeTransport.layer)) // Inbox: your Backend
 * ```
 */
export const layer: Layer.Layer<Network> = Layer.succeed(Network, Network.of({ listen, connect }))
