/**
 * In-memory `Transport`s for tests: a connected pair over Queues, and a `Network` layer whose
 * listeners and connections live in a registry inside the process.
 *
 * TLS is simulated: no bytes are encrypted and no certificate is checked, but the observable
 * behaviour follows real TLS where protocol code depends on it:
 * - both ends must call `upgradeTls`, one as client and one as server;
 * - bytes the peer sent in plaintext that were not read when `upgradeTls` is called are
 *   dropped (like Node feeding them to the TLS engine);
 * - `tls()` then returns TLSv1.3 facts; `peerCertificate` is always undefined.
 * A handshake fails (reason "Tls", both ends) when both ends take the same role, when the
 * server options carry no certificate (`cert`, `pfx`, `secureContext` or `SNICallback`), or
 * when the server requires a client certificate (`requestCert`, `rejectUnauthorized` not
 * false) and the client has none.
 *
 * Platform-free: no `node:*` import.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as IpNetworks from "./internal/transport/IpNetworks.ts"
import * as ProxyListener from "./internal/transport/ProxyListener.ts"
import { TransportView } from "./internal/transport/TransportView.ts"
import {
  type ConnectOptions,
  type Endpoint,
  formatEndpoint,
  type Listener,
  type ListenOptions,
  Network,
  type TlsClientOptions,
  type TlsServerOptions,
  type TlsState,
  type Transport,
  TransportError
} from "./Transport.ts"

/** Options of {@link pair}. */
export interface PairOptions {
  /** The client's own address (the server's `remoteEndpoint`). */
  readonly clientEndpoint?: Endpoint | undefined
  /** The server's own address (the client's `remoteEndpoint`). */
  readonly serverEndpoint?: Endpoint | undefined
  /** The name the client connected to: its default SNI name. */
  readonly hostname?: string | undefined
  /** Start already encrypted (implicit TLS), as if both ends had upgraded. */
  readonly tls?: {
    /** The client end's options, as `upgradeTls` would take them. */
    readonly client: TlsClientOptions
    /** The server end's options: they need a certificate, as for real TLS. */
    readonly server: TlsServerOptions
  } | undefined
}

// Every chunk carries the TLS epoch of its writer: 0 in plaintext, 1 after the upgrade.
interface Chunk {
  readonly bytes: Uint8Array
  readonly epoch: number
}

type Hello = Parameters<Transport["upgradeTls"]>[0]

interface End {
  readonly inbound: Queue.Queue<Chunk, TransportError | Cause.Done>
  readonly hello: Deferred.Deferred<Hello, TransportError>
  closed: boolean
  reading: boolean
  upgrading: boolean
  readEpoch: number
  writeEpoch: number
  failure: TransportError | undefined
  tlsState: TlsState | undefined
}

const closedLocally = () => TransportError.closed("connection closed locally")
const closedByPeer = () => TransportError.closed("connection closed by peer")
const tlsError = (message: string) => new TransportError({ reason: "Tls", message })

const isIp = (host: string) => /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(":")

const encoder = new TextEncoder()

const makeEnd = (): Effect.Effect<End> =>
  Effect.map(Queue.unbounded<Chunk, TransportError | Cause.Done>(), (inbound) => ({
    inbound,
    hello: Deferred.makeUnsafe<Hello, TransportError>(),
    closed: false,
    reading: false,
    upgrading: false,
    readEpoch: 0,
    writeEpoch: 0,
    failure: undefined,
    tlsState: undefined
  }))

const hasCertificate = (o: TlsServerOptions | TlsClientOptions): boolean =>
  o.cert !== undefined || o.pfx !== undefined || o.secureContext !== undefined

/**
 * The outcome of a simulated handshake, computed identically by both ends from the two
 * hellos: the TLS state of each end, or the error both fail with.
 */
const negotiate = (
  a: Hello,
  b: Hello,
  hostname: string | undefined
): { readonly client: TlsState; readonly server: TlsState } | TransportError => {
  if (a.role === b.role) return tlsError(`TLS handshake failed: both ends act as TLS ${a.role}`)
  const client = a.role === "client" ? a.tls : b.role === "client" ? b.tls : undefined
  const server = a.role === "server" ? a.tls : b.role === "server" ? b.tls : undefined
  if (client === undefined || server === undefined) return tlsError("TLS handshake failed")
  if (!hasCertificate(server) && server.SNICallback === undefined) {
    return tlsError("TLS handshake failed: the server has no certificate")
  }
  const clientHasCert = hasCertificate(client)
  if (server.requestCert === true && server.rejectUnauthorized !== false && !clientHasCert) {
    return tlsError("TLS handshake failed: the server requires a client certificate")
  }
  const servername = client.servername ?? (hostname !== undefined && hostname !== "" && !isIp(hostname) ? hostname : undefined)
  const common = { protocol: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", servername, peerCertificate: undefined }
  const requested = server.requestCert === true
  return {
    client: { ...common, authorized: true, authorizationError: undefined },
    server: {
      ...common,
      authorized: requested && clientHasCert,
      authorizationError: requested && !clientHasCert ? "UNABLE_TO_GET_ISSUER_CERT" : undefined
    }
  }
}

const makeTransport = (
  me: End,
  peer: End,
  endpoints: { readonly local: Endpoint | undefined; readonly remote: Endpoint | undefined },
  hostname: string | undefined
): Transport => {
  // Closing ends the peer's stream and fails our own pending read.
  const shut = (failure: TransportError) => {
    if (me.closed) return
    me.closed = true
    me.failure ??= failure
    Queue.endUnsafe(peer.inbound)
    Queue.failCauseUnsafe(me.inbound, Cause.fail(me.failure))
    Deferred.doneUnsafe(me.hello, Effect.fail(tlsError("TLS handshake failed: connection closed")))
  }

  const takeChunk: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.suspend(() =>
    Queue.take(me.inbound).pipe(
      Effect.catchIf(Cause.isDone, () => Effect.succeed(undefined)),
      Effect.flatMap((c) =>
        c === undefined
          ? Effect.succeed(undefined)
          : c.epoch < me.readEpoch // plaintext from before our upgrade: dropped
          ? takeChunk
          : Effect.succeed(c.bytes)
      )
    )
  )

  const read: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.suspend(() => {
    if (me.failure !== undefined) return Effect.fail(me.failure)
    if (me.reading) return Effect.fail(new TransportError({ reason: "Read", message: "another read is already pending" }))
    me.reading = true
    return Effect.ensuring(takeChunk, Effect.sync(() => {
      me.reading = false
    }))
  })

  const writeUnsafe = (data: Uint8Array | string): Effect.Effect<void, TransportError> => {
    if (me.failure !== undefined) return Effect.fail(me.failure)
    if (me.upgrading) return Effect.fail(tlsError("cannot write while the TLS handshake is running"))
    if (peer.closed) return Effect.fail(closedByPeer())
    // A copy, as the kernel makes one: the caller may reuse its buffer.
    const bytes = typeof data === "string" ? encoder.encode(data) : data.slice()
    if (bytes.length === 0) return Effect.void
    return Queue.offerUnsafe(peer.inbound, { bytes, epoch: me.writeEpoch }) ? Effect.void : Effect.fail(closedByPeer())
  }
  const write = (data: Uint8Array | string): Effect.Effect<void, TransportError> =>
    Effect.suspend(() => writeUnsafe(data))

  const upgradeTls: Transport["upgradeTls"] = (options) =>
    Effect.suspend(() => {
      if (me.failure !== undefined) return Effect.fail(me.failure)
      if (me.tlsState !== undefined) return Effect.fail(tlsError("the connection is already encrypted"))
      if (me.upgrading) return Effect.fail(tlsError("a TLS handshake is already running"))
      me.upgrading = true
      me.readEpoch = 1
      Deferred.doneUnsafe(me.hello, Effect.succeed(options))
      return Deferred.await(peer.hello).pipe(
        Effect.flatMap((theirs) => {
          // The peer gave up (closed, timed out) after starting its side of the handshake.
          if (peer.closed && peer.tlsState === undefined) return Effect.fail(tlsError("TLS handshake failed: connection closed"))
          const outcome = negotiate(options, theirs, hostname)
          if (outcome instanceof TransportError) return Effect.fail(outcome)
          me.tlsState = options.role === "client" ? outcome.client : outcome.server
          me.writeEpoch = 1
          me.upgrading = false
          return Effect.void
        }),
        // Failed or interrupted: the connection is unusable, as after a real failed handshake.
        Effect.tapError((error) => Effect.sync(() => shut(error))),
        Effect.onInterrupt(() => Effect.sync(() => shut(tlsError("TLS handshake interrupted"))))
      )
    })

  return {
    read,
    write,
    writeUnsafe,
    upgradeTls,
    tls: () => me.tlsState,
    localEndpoint: endpoints.local,
    remoteEndpoint: endpoints.remote,
    close: Effect.sync(() => shut(closedLocally()))
  }
}

const makePair = (options: PairOptions | undefined) =>
  Effect.gen(function*() {
    const a = yield* makeEnd()
    const b = yield* makeEnd()
    const hostname = options?.hostname ?? (options?.serverEndpoint?._tag === "Tcp" ? options.serverEndpoint.host : undefined)
    const tls = options?.tls
    if (tls !== undefined) {
      const outcome = negotiate({ role: "client", tls: tls.client }, { role: "server", tls: tls.server }, hostname)
      if (outcome instanceof TransportError) return yield* outcome
      a.tlsState = outcome.client
      b.tlsState = outcome.server
      a.readEpoch = a.writeEpoch = b.readEpoch = b.writeEpoch = 1
    }
    const client = makeTransport(a, b, { local: options?.clientEndpoint, remote: options?.serverEndpoint }, hostname)
    const server = makeTransport(b, a, { local: options?.serverEndpoint, remote: options?.clientEndpoint }, hostname)
    return [client, server] as const
  })

/**
 * Two connected transports. `close` on one ends the other's stream (its `read` gives
 * `undefined` once it has read what was sent); writes fail with "Closed" after either end
 * closed. Writes never wait: nothing models a full buffer.
 */
export function pair(
  options?: PairOptions & { readonly tls?: undefined }
): Effect.Effect<readonly [client: Transport, server: Transport]>
export function pair(options: PairOptions): Effect.Effect<readonly [client: Transport, server: Transport], TransportError>
export function pair(options?: PairOptions): Effect.Effect<readonly [client: Transport, server: Transport], TransportError> {
  return makePair(options)
}

// ---------------------------------------------------------------------------------------------
// The in-memory network

interface Registration {
  readonly endpoint: Endpoint
  /** Hands a new connection to the listener; false when it no longer accepts. */
  readonly offer: (server: Transport) => boolean
  readonly tls: TlsServerOptions | undefined
}

/** `t`, whose next read returns `rest` first (bytes read with a PROXY header); an upgrade drops them. */
const withPrefix = (t: Transport, rest: Uint8Array): Transport => {
  let prefix: Uint8Array | undefined = rest
  return new TransportView(t, {
    read: Effect.suspend(() => {
      if (prefix === undefined) return t.read
      const p = prefix
      prefix = undefined
      return Effect.succeed(p)
    }),
    upgradeTls: (options) => {
      prefix = undefined // unread plaintext never survives an upgrade
      return t.upgradeTls(options)
    }
  })
}


/**
 * A fresh in-memory network: `listen` registers an endpoint (port 0 picks a free one),
 * `connect` to a registered endpoint makes a {@link pair} and hands its server end to the
 * listener's `accept`. A listener on `0.0.0.0` or `::` takes connections to any host with its
 * port. Connecting where nobody listens fails with "Connect"; implicit TLS on one side only
 * fails with "Tls". Connections `accept` returns belong to the taker.
 */
export const makeNetwork: Effect.Effect<Network["Service"]> = Effect.sync(() => {
  const listeners = new Map<string, Registration>()
  let nextPort = 49152
  const freePort = () => {
    const used = new Set<number>()
    for (const r of listeners.values()) if (r.endpoint._tag === "Tcp") used.add(r.endpoint.port)
    while (used.has(nextPort)) nextPort = nextPort >= 65535 ? 49152 : nextPort + 1
    const port = nextPort
    nextPort = nextPort >= 65535 ? 49152 : nextPort + 1
    return port
  }

  const lookup = (e: Endpoint): Registration | undefined => {
    const exact = listeners.get(formatEndpoint(e))
    if (exact !== undefined || e._tag === "Unix") return exact
    for (const r of listeners.values()) {
      if (r.endpoint._tag === "Tcp" && r.endpoint.port === e.port && IpNetworks.isWildcardHost(r.endpoint.host)) return r
    }
    return undefined
  }

  const listen = (options: ListenOptions): Effect.Effect<Listener, TransportError, Scope.Scope> =>
    Effect.gen(function*() {
      const requested = options.endpoint
      const endpoint: Endpoint = requested._tag === "Tcp" && requested.port === 0
        ? { ...requested, port: freePort() }
        : requested
      const key = formatEndpoint(endpoint)
      if (listeners.has(key)) {
        return yield* new TransportError({ reason: "Listen", message: `cannot listen on ${key}: address in use` })
      }
      if (options.reusePort === true && endpoint._tag === "Unix") {
        return yield* new TransportError({ reason: "Listen", message: `cannot listen on ${key}: reusePort is for TCP listeners` })
      }
      const proxy = options.proxyProtocol === undefined ? undefined : ProxyListener.make(options.proxyProtocol)
      if (proxy !== undefined && Result.isFailure(proxy)) return yield* ProxyListener.listenError(endpoint, proxy.failure)
      const queue = yield* Queue.unbounded<Transport, TransportError>()
      // PROXY headers are read with the listener's services (its clock, its logger).
      const context = yield* Effect.context<never>()
      const pending = new Set<() => void>()
      let open = true
      const acceptor = proxy?.success
      const offer = acceptor === undefined ? (t: Transport) => Queue.offerUnsafe(queue, t) : (t: Transport) => {
        if (!open) return false
        const fiber = Effect.runForkWith(context)(
          Effect.flatMap(
            acceptor.accept(t, (rest) => withPrefix(t, rest)),
            (a) => a === undefined || Queue.offerUnsafe(queue, a) ? Effect.void : a.close
          )
        )
        const cancel = () => fiber.interruptUnsafe()
        pending.add(cancel)
        fiber.addObserver(() => pending.delete(cancel))
        return true
      }
      const registration: Registration = { endpoint, offer, tls: options.tls }
      listeners.set(key, registration)
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          open = false
          if (listeners.get(key) === registration) listeners.delete(key)
          for (const cancel of pending) cancel()
          for (const t of yield* Queue.clear(queue)) yield* t.close
          yield* Queue.fail(queue, new TransportError({ reason: "Closed", message: `listener ${key} closed` }))
        }).pipe(Effect.orDie)
      )
      return { endpoint, implicitTls: options.tls !== undefined, accept: Queue.take(queue) } satisfies Listener
    })

  let nextClientPort = 30000
  const connectUnscoped = (options: ConnectOptions): Effect.Effect<Transport, TransportError> =>
    Effect.gen(function*() {
      const target = options.endpoint
      const registration = lookup(target)
      if (registration === undefined) {
        return yield* new TransportError({ reason: "Connect", message: `cannot connect to ${formatEndpoint(target)}: connection refused` })
      }
      if ((registration.tls === undefined) !== (options.tls === undefined)) {
        return yield* tlsError(`TLS handshake with ${formatEndpoint(target)} failed: implicit TLS on one side only`)
      }
      const clientEndpoint: Endpoint | undefined = target._tag === "Tcp"
        ? { _tag: "Tcp", host: options.localAddress ?? (target.host.includes(":") ? "::1" : "127.0.0.1"), port: nextClientPort++ }
        : undefined
      if (nextClientPort > 48000) nextClientPort = 30000
      const pairOptions: PairOptions = {
        clientEndpoint,
        serverEndpoint: target,
        hostname: target._tag === "Tcp" ? target.host : undefined,
        tls: registration.tls !== undefined && options.tls !== undefined
          ? { client: options.tls, server: registration.tls }
          : undefined
      }
      const [client, server] = yield* makePair(pairOptions)
      if (!registration.offer(server)) {
        return yield* new TransportError({ reason: "Connect", message: `cannot connect to ${formatEndpoint(target)}: connection refused` })
      }
      return client
    })

  const connect = (options: ConnectOptions): Effect.Effect<Transport, TransportError, Scope.Scope> =>
    Effect.acquireRelease(connectUnscoped(options), (t) => t.close)

  return Network.of({ listen, connect })
})

/**
 * `Network` in memory; every build of the layer is a separate network. Provide one layer to
 * both a server and a client, and they talk over it without a socket or a port.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as MemoryTransport from "effect-smtp/MemoryTransport"
 * import * as SmtpClient from "effect-smtp/SmtpClient"
 * import * as SmtpServer from "effect-smtp/SmtpServer"
 *
 * const endpoint = { _tag: "Tcp", host: "mx.test", port: 25 } as const
 * const Server = SmtpServer.layer({ listen: [{ endpoint }] }).pipe(Layer.provide(MyBackend))
 *
 * // The real protocol, in memory: a test of the backend, with no port to pick.
 * const test = SmtpClient.sendMail({
 *   endpoint,
 *   security: "none",
 *   from: "app@example.com",
 *   to: "alice@example.com",
 *   body: "Subject: hi\r\n\r\nhello\r\n"
 * }).pipe(Effect.provide(Server.pipe(Layer.provideMerge(MemoryTransport.layer))))
 * ```
 */
export const layer: Layer.Layer<Network> = Layer.effect(Network, makeNetwork)
