/** Listening sockets: binding (Unix sockets with their access rights), accepting, PROXY headers and implicit TLS before `accept`. */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as net from "node:net"
import { dirname, join } from "node:path"
import { type Taker, withHandover } from "./Handover.ts"
import * as IpNetworks from "./IpNetworks.ts"
import * as ProxyListener from "./ProxyListener.ts"
import * as UnixSocketAccess from "./UnixSocketAccess.ts"
import {
  type Endpoint,
  formatEndpoint,
  type Listener,
  type ListenOptions,
  type Transport,
  TransportError,
  type UnixSocketAccess as Access
} from "../../Transport.ts"
import { ignore, errorCode, errorMessage, tcpEndpoint, handshakeServer, serverHandshake } from "./NodeSockets.ts"
import { makeConn, type MakeOptions, NodeConnection } from "./NodeConnection.ts"

// ---------------------------------------------------------------------------------------------
// Listening

const listenError = (endpoint: Endpoint, cause: unknown) =>
  new TransportError({ reason: "Listen", message: `cannot listen on ${formatEndpoint(endpoint)}: ${errorMessage(cause)}`, cause })

const isAbstract = (path: string) => path.startsWith("\0")

interface BindOptions {
  readonly backlog?: number | undefined
  readonly reusePort?: boolean | undefined
}

const bind = (server: net.Server, endpoint: Endpoint, options: BindOptions): Effect.Effect<void, unknown> =>
  Effect.callback((resume) => {
    const onError = (cause: unknown) => {
      server.off("listening", onListening)
      resume(Effect.fail(cause))
    }
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.void)
    }
    server.once("error", onError).once("listening", onListening)
    const b = options.backlog !== undefined ? { backlog: options.backlog } : {}
    // `exclusive`: in a cluster worker too, this process binds its own socket (else the cluster
    // primary would, once for all, and SO_REUSEPORT would spread nothing).
    const reuse = options.reusePort === true ? { reusePort: true, exclusive: true } : {}
    server.listen(
      endpoint._tag === "Unix" ? { path: endpoint.path, ...b } : { host: endpoint.host, port: endpoint.port, ...b, ...reuse }
    )
    return Effect.sync(() => {
      server.off("error", onError).off("listening", onListening)
      server.close()
    })
  })

// Whether something accepts connections on a Unix socket path.
const unixSocketAlive = (path: string): Effect.Effect<boolean> =>
  Effect.callback((resume) => {
    const probe = net.connect({ path })
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.succeed(true))
    })
    probe.once("error", (cause) => {
      const code = errorCode(cause)
      resume(Effect.succeed(!(code === "ECONNREFUSED" || code === "ENOENT")))
    })
    return Effect.sync(() => probe.destroy())
  })

const isSocketFile = (path: string): boolean => {
  try {
    return fs.lstatSync(path).isSocket()
  } catch {
    return false
  }
}

const removeSocketFile = (path: string) => {
  if (isAbstract(path) || !isSocketFile(path)) return
  try {
    fs.unlinkSync(path)
  } catch {
    // already gone
  }
}

const inUse = (path: string) => new Error(`address already in use: ${path}`)

// Where a socket is about to be renamed into place there may be nothing, or a stale socket
// (left by a process that died), which the rename replaces.
const checkFreeForSocket = (path: string): Effect.Effect<void, unknown> =>
  Effect.suspend(() => {
    if (!fs.existsSync(path)) return Effect.void
    if (!isSocketFile(path)) return Effect.fail(inUse(path))
    return Effect.flatMap(unixSocketAlive(path), (alive) => alive ? Effect.fail(inUse(path)) : Effect.void)
  })

/**
 * A Unix socket with a mode, owner or group must never be reachable without them. It is bound
 * in a fresh directory that only this process's user can enter (mkdtemp makes it 0700), given
 * its mode and owner there, then renamed into place: one atomic step for whoever connects.
 */
const bindUnixWithAccess = (
  server: net.Server,
  path: string,
  backlog: number | undefined,
  access: Access
): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    if (isAbstract(path)) return yield* Effect.fail(new Error("an abstract socket has no file mode or owner"))
    const { gid, mode, uid } = yield* UnixSocketAccess.resolve(access)
    yield* checkFreeForSocket(path)
    const staging = yield* Effect.try(() => fs.mkdtempSync(join(dirname(path), ".sock-")))
    const staged = join(staging, "s")
    yield* bind(server, { _tag: "Unix", path: staged }, { backlog }).pipe(
      Effect.andThen(Effect.try(() => {
        fs.chmodSync(staged, mode)
        if (uid !== -1 || gid !== -1) fs.chownSync(staged, uid, gid)
        fs.renameSync(staged, path)
      })),
      Effect.tapError(() => Effect.sync(() => server.close())),
      Effect.ensuring(Effect.sync(() => fs.rmSync(staging, { recursive: true, force: true })))
    )
  })

/** What {@link listenSockets} binds. */
export interface SocketListenOptions {
  /** The address to bind; port 0 picks a free one. */
  readonly endpoint: Endpoint
  /** A Unix socket's mode, owner and group, set before the socket appears at its path. */
  readonly unix?: Access | undefined
  /** Backlog for the kernel's accept queue. */
  readonly backlog?: number | undefined
  /** TCP: other processes may listen on the same address and port (SO_REUSEPORT). */
  readonly reusePort?: boolean | undefined
  /** Nothing is read from a connection before its taker reads (Node's `pauseOnConnect`). Default true. */
  readonly pauseOnConnect?: boolean | undefined
}

/**
 * Binds a listening socket and hands every connection to `onConnection` as a raw `net.Socket`:
 * for a process that passes connections on to others (see {@link adopt}). Returns the bound
 * address (with the real port when 0 was asked for). The scope owns the listening socket:
 * closing it stops accepting and removes a Unix socket file. Unix sockets: a stale socket file
 * is replaced, a live one is an error; with `unix` the socket appears with its mode and owner set.
 */
export const listenSockets = (
  options: SocketListenOptions,
  onConnection: (socket: net.Socket) => void
): Effect.Effect<Endpoint, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = options.endpoint
    if (endpoint._tag === "Unix" && options.reusePort === true) {
      return yield* listenError(endpoint, "reusePort is for TCP listeners (a Unix socket path has one listener)")
    }
    const server = net.createServer({ pauseOnConnect: options.pauseOnConnect ?? true })
    server.on("error", ignore) // after listening: accept errors (EMFILE...) land here; the server keeps listening
    const bindOptions: BindOptions = { backlog: options.backlog, reusePort: options.reusePort }
    yield* Effect.acquireRelease(
      (endpoint._tag === "Unix" && options.unix !== undefined
        ? bindUnixWithAccess(server, endpoint.path, options.backlog, options.unix)
        : bind(server, endpoint, bindOptions)).pipe(
        Effect.catch((cause) =>
          endpoint._tag === "Unix" && options.unix === undefined && errorCode(cause) === "EADDRINUSE" &&
            isSocketFile(endpoint.path)
            ? Effect.flatMap(unixSocketAlive(endpoint.path), (alive) => {
              if (alive) return Effect.fail(cause)
              removeSocketFile(endpoint.path) // stale: left by a process that died
              return bind(server, endpoint, bindOptions)
            })
            : Effect.fail(cause)
        ),
        Effect.mapError((cause) => listenError(endpoint, cause))
      ),
      () =>
        Effect.sync(() => {
          server.close() // the port (or socket file) is released now; accepted connections live on
          if (endpoint._tag === "Unix") removeSocketFile(endpoint.path)
        })
    )
    server.on("connection", onConnection)
    const address = server.address()
    return endpoint._tag === "Unix" || address === null || typeof address === "string"
      ? endpoint
      : { _tag: "Tcp", host: address.address, port: address.port } satisfies Endpoint
  })

/**
 * Accepted sockets to `Transport`s: implicit TLS handshakes and PROXY headers first, then the
 * queue `accept` takes from. Its finalizer stops everything not yet taken.
 */
const makeAcceptor = (options: ListenOptions) =>
  Effect.gen(function*() {
    const endpoint = options.endpoint
    const tlsOptions = options.tls
    if (tlsOptions !== undefined) {
      // Fail now on bad certificates, not on the first connection.
      yield* Effect.try({ try: () => handshakeServer(tlsOptions), catch: (cause) => listenError(endpoint, cause) })
    }
    const proxy = options.proxyProtocol === undefined ? undefined : ProxyListener.make(options.proxyProtocol)
    if (proxy !== undefined && Result.isFailure(proxy)) return yield* listenError(endpoint, proxy.failure)
    const proxyAcceptor = proxy?.success
    const queue = yield* Queue.unbounded<Transport, TransportError>()
    // Connections not yet accepted (handshakes, PROXY headers): how to abandon each.
    const pending = new Set<() => void>()
    const maxPending = options.maxHandshakes ?? Number.POSITIVE_INFINITY
    const context = yield* Effect.context<never>()
    let accepting = true
    // Where the listener is bound: set once bound (Unix connections have it as their local endpoint).
    let bound: Endpoint = endpoint
    // A TCP listener bound to one address: every connection's local end is that address and
    // port, known without a getsockname per connection. (Not for a wildcard address.)
    let boundLocal: Endpoint | undefined = undefined

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        accepting = false
        for (const cancel of pending) cancel()
        pending.clear()
        for (const t of yield* Queue.clear(queue)) yield* t.close // destroyed at once: nobody wrote
        yield* Queue.fail(queue, new TransportError({ reason: "Closed", message: `listener ${formatEndpoint(bound)} closed` }))
      }).pipe(Effect.orDie)
    )

    // Where accepted connections go: to the taker handed them, else into the queue `accept` takes from.
    let taker: Taker | undefined = undefined
    const deliver = (t: Transport): boolean => {
      if (!accepting) return false
      if (taker === undefined) return Queue.offerUnsafe(queue, t)
      taker(t)
      return true
    }
    const offer = (t: Transport): Effect.Effect<void> => deliver(t) ? Effect.void : t.close

    // PROXY header first (read with the listener's services: its clock, its logger), then TLS.
    const acceptProxied = (acceptor: ProxyListener.Acceptor, socket: net.Socket, endpoints: MakeOptions) => {
      const conn = new NodeConnection(socket, "server", endpoints)
      const accepted = acceptor.accept(conn, (rest) => {
        conn.unread(rest)
        return conn
      }).pipe(
        Effect.flatMap((t) =>
          t === undefined || tlsOptions === undefined ? Effect.succeed(t) : t.upgradeTls({ role: "server", tls: tlsOptions }).pipe(
            Effect.as(t),
            // A failed handshake is the client's problem.
            Effect.catch(() => Effect.as(t.close, undefined))
          )
        ),
        Effect.flatMap((t) => t === undefined ? Effect.void : offer(t))
      )
      const fiber = Effect.runForkWith(context)(accepted)
      const cancel = () => fiber.interruptUnsafe()
      pending.add(cancel)
      fiber.addObserver(() => pending.delete(cancel))
    }

    const onSocket = (socket: net.Socket) => {
      if (!accepting) return void socket.destroy()
      const endpoints: MakeOptions = bound._tag === "Unix"
        ? { localEndpoint: bound }
        : {
          localEndpoint: boundLocal ?? tcpEndpoint(socket.localAddress, socket.localPort),
          remoteEndpoint: tcpEndpoint(socket.remoteAddress, socket.remotePort)
        }
      if (tlsOptions === undefined && proxyAcceptor === undefined) {
        if (!deliver(makeConn(socket, "server", endpoints))) socket.destroy()
        return
      }
      socket.on("error", ignore) // until a transport adds its own listener
      if (pending.size >= maxPending) return void socket.destroy()
      if (proxyAcceptor !== undefined) return acceptProxied(proxyAcceptor, socket, endpoints)
      const cancel = serverHandshake(socket, tlsOptions!, (result) => {
        pending.delete(cancel)
        // A failed handshake is the client's problem: the socket is already destroyed.
        if (!("socket" in result)) return
        if (!deliver(makeConn(result.socket, "server", endpoints))) result.socket.destroy()
      })
      pending.add(cancel)
    }

    return {
      onSocket,
      // A socket the caller reads first (TLS through a PROXY header) is taken paused.
      pauseOnConnect: tlsOptions === undefined || proxyAcceptor !== undefined,
      /** `at`: where it is bound; `exact` when it is the listening socket's own address. */
      listener: (at: Endpoint, exact: boolean): Listener => {
        bound = at
        if (exact && at._tag === "Tcp" && !IpNetworks.isWildcardHost(at.host)) boundLocal = tcpEndpoint(at.host, at.port)
        return withHandover({ endpoint: at, implicitTls: tlsOptions !== undefined, accept: Queue.take(queue) }, (t) => {
          taker = t
          if (t === undefined) return
          // What was accepted before there was a taker goes to it first.
          for (let e = Queue.takeUnsafe(queue); e !== undefined && Exit.isSuccess(e); e = Queue.takeUnsafe(queue)) t(e.value)
        })
      }
    }
  })

/**
 * Binds a listening socket; the scope owns it. Closing the scope stops accepting, closes the
 * listening socket (a Unix socket file is removed) and destroys connections Node accepted that
 * no `accept` took yet. A waiting `accept` then fails with reason "Closed".
 *
 * A connection returned by `accept` belongs to the caller: it stays open after the listener's
 * scope closes and must be closed with `close` (e.g. `Effect.acquireRelease(listener.accept,
 * (t) => t.close)`).
 *
 * With `tls`, the handshake is done before `accept` returns the connection; a connection whose
 * handshake fails is dropped silently. With `proxyProtocol`, so is one whose PROXY header does
 * not come, or not from a trusted proxy; the header comes before the TLS handshake. Unix socket:
 * a stale socket file (nothing listening) is replaced; a live one is an error ("Listen"). With
 * `unix` access options the socket appears at its path with its mode, owner and group already
 * set. With `reusePort`, other processes may listen on the same TCP address and port.
 */
export const listen = (options: ListenOptions): Effect.Effect<Listener, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const acceptor = yield* makeAcceptor(options)
    const bound = yield* listenSockets({ ...options, pauseOnConnect: acceptor.pauseOnConnect }, acceptor.onSocket)
    return acceptor.listener(bound, true)
  })

/**
 * A listener for connections that another process accepted and sent here (Node's
 * `subprocess.send(message, socket)`; see {@link listenSockets}): give each socket to
 * `handOver`. Everything else is as {@link listen}: TLS, PROXY headers, `accept`, closing.
 */
export const adopt = (
  options: ListenOptions
): Effect.Effect<{
  /** Accepts the connections handed over, like every other listener. */
  readonly listener: Listener
  /** Gives it a socket another process accepted. */
  readonly handOver: (socket: net.Socket) => void
}, TransportError, Scope.Scope> =>
  Effect.map(makeAcceptor(options), (acceptor) => ({ listener: acceptor.listener(options.endpoint, false), handOver: acceptor.onSocket }))
