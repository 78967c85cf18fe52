/**
 * `Transport` over node:net / node:tls: TCP and Unix sockets, STARTTLS in place and
 * implicit TLS. The only module of the library that imports `node:*` (with
 * internal/UnixSocketAccess, which resolves a socket's owner and group).
 *
 * - Reads happen on demand: the socket starts paused, and once read from it flows ('data'
 *   events, the cheapest read path Node has) but pauses whenever `READ_AHEAD` bytes are waiting
 *   for a `read`, so a consumer that stops pulling applies TCP backpressure.
 * - `write` waits for `'drain'` only when `socket.write()` returned false.
 * - `close` flushes (`end()`), then destroys; a short deadline bounds the flush.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as net from "node:net"
import { dirname, join } from "node:path"
import type * as tls from "node:tls"
import * as ProxyListener from "./internal/ProxyListener.ts"
import * as UnixSocketAccess from "./internal/UnixSocketAccess.ts"
import {
  type ConnectOptions,
  type Endpoint,
  formatEndpoint,
  type Listener,
  type ListenOptions,
  Network,
  type PeerCertificate,
  type TlsClientOptions,
  type TlsServerOptions,
  type TlsState,
  type Transport,
  TransportError,
  type UnixSocketAccess as Access
} from "./Transport.ts"

/** Options of {@link make} / {@link makeUnsafe}. */
export interface MakeOptions {
  /** Overrides what is read from the socket (Unix sockets have no address on one side). */
  readonly localEndpoint?: Endpoint | undefined
  readonly remoteEndpoint?: Endpoint | undefined
  /**
   * The host name the client side connected to: the default `servername` (SNI) of a client
   * `upgradeTls` and the name the server certificate is checked against.
   */
  readonly hostname?: string | undefined
  /** How long `close` waits for buffered writes to flush before destroying. Default 2 seconds. */
  readonly closeTimeout?: Duration.Input | undefined
}

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

// node:tls costs a server about 5 MiB once loaded: it is loaded by the first connection that
// uses TLS, not by importing this module.
let tlsModule: typeof tls | undefined
const nodeTls = (): typeof tls => (tlsModule ??= process.getBuiltinModule("node:tls"))

/** A TLSSocket, whoever loaded node:tls. */
const isTlsSocket = (s: net.Socket): s is tls.TLSSocket => (s as { readonly encrypted?: unknown }).encrypted === true

// ---------------------------------------------------------------------------------------------
// Errors

const ignore = () => {}

const errorCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

const errorMessage = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

// The peer went away (abruptly): the same for the protocol as a clean close.
const peerGoneCodes = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED", "ERR_STREAM_DESTROYED", "ERR_STREAM_WRITE_AFTER_END"])

const socketError = (cause: unknown, reason: "Read" | "Write"): TransportError =>
  peerGoneCodes.has(errorCode(cause) ?? "")
    ? TransportError.closed(`connection closed by peer: ${errorMessage(cause)}`, cause)
    : new TransportError({ reason, message: errorMessage(cause), cause })

const closedByPeer = () => TransportError.closed("connection closed")
const closedLocally = () => TransportError.closed("connection closed locally")
const tlsError = (message: string, cause?: unknown) =>
  new TransportError(cause === undefined ? { reason: "Tls", message } : { reason: "Tls", message, cause })

// ---------------------------------------------------------------------------------------------
// Endpoints and TLS facts

// "::ffff:192.0.2.1" (an IPv4 peer on a dual-stack socket) reads better as "192.0.2.1".
const normalizeHost = (host: string): string => {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)
  return m !== null ? m[1]! : host
}

const tcpEndpoint = (host: string | undefined, port: number | undefined): Endpoint | undefined =>
  host === undefined || port === undefined ? undefined : { _tag: "Tcp", host: normalizeHost(host), port }

const certNames = (
  names: object | undefined
): Readonly<Record<string, string | ReadonlyArray<string>>> => {
  const out: Record<string, string | ReadonlyArray<string>> = {}
  if (names === undefined || names === null) return out
  for (const [k, v] of Object.entries(names)) {
    if (typeof v === "string") out[k] = v
    else if (Array.isArray(v)) out[k] = v.map(String)
  }
  return out
}

const peerCertificate = (s: tls.TLSSocket): PeerCertificate | undefined => {
  const cert = s.getPeerCertificate()
  // Node returns {} (or null once destroyed) when the peer sent no certificate.
  if (cert === null || cert === undefined || cert.raw === undefined) return undefined
  return {
    subject: certNames(cert.subject),
    issuer: certNames(cert.issuer),
    subjectAltName: cert.subjectaltname,
    fingerprint256: cert.fingerprint256,
    raw: new Uint8Array(cert.raw)
  }
}

const nonEmptyString = (u: unknown): string | undefined => typeof u === "string" && u !== "" ? u : undefined

const readTlsState = (s: tls.TLSSocket): TlsState => {
  // `authorizationError` is a string (an OpenSSL code) at runtime, typed as Error.
  const authError: unknown = s.authorizationError
  return {
    protocol: s.getProtocol() ?? undefined,
    cipher: s.getCipher()?.name,
    // Server side: the name the client asked for (false when none); client side: the name sent.
    servername: nonEmptyString(s.servername),
    authorized: s.authorized,
    authorizationError: authError === null || authError === undefined
      ? undefined
      : nonEmptyString(errorCode(authError)) ?? (typeof authError === "string" ? authError : errorMessage(authError)),
    peerCertificate: peerCertificate(s)
  }
}

const defaultServername = (hostname: string | undefined): string | undefined =>
  hostname !== undefined && hostname !== "" && net.isIP(hostname) === 0 ? hostname : undefined

// ---------------------------------------------------------------------------------------------
// Server-side handshakes
//
// A bare `new tls.TLSSocket(raw, { isServer: true })` never checks a client certificate
// (`authorized` stays false and `rejectUnauthorized` is not enforced: that is done by
// tls.Server's own 'secure' handler). So the handshake is run by a tls.Server that never
// listens: `server.emit("connection", raw)` is how Node lets a socket be injected. One
// server per options object, so certificates are parsed once and session tickets resume.

type HandshakeResult = (socket: tls.TLSSocket | undefined, error: unknown) => void

const handshakeServers = new WeakMap<TlsServerOptions, tls.Server>()
const pendingHandshakes = new Map<net.Socket, HandshakeResult>()

// The raw socket a server TLSSocket wraps (`_parent`, set by Node since v0.11).
const parentOf = (s: tls.TLSSocket): unknown => (s as unknown as { readonly _parent?: unknown })._parent

const settleHandshake = (raw: unknown, socket: tls.TLSSocket | undefined, error: unknown) => {
  if (!(raw instanceof net.Socket)) return
  const done = pendingHandshakes.get(raw)
  if (done === undefined) return
  pendingHandshakes.delete(raw)
  done(socket, error)
}

const handshakeServer = (options: TlsServerOptions): tls.Server => {
  let server = handshakeServers.get(options)
  if (server === undefined) {
    server = nodeTls().createServer(options)
    server.on("secureConnection", (s: tls.TLSSocket) => settleHandshake(parentOf(s), s, undefined))
    server.on("tlsClientError", (error: Error, s: tls.TLSSocket) => {
      // Certificate refused by `rejectUnauthorized`: Node destroys without a useful error.
      const reason: unknown = s.authorizationError
      settleHandshake(parentOf(s), undefined, reason === null || reason === undefined ? error : new Error(`client certificate rejected: ${String(reason)}`, { cause: error }))
    })
    handshakeServers.set(options, server)
  }
  return server
}

/**
 * Runs the server side of a TLS handshake over `raw`; calls `done` once. Bytes Node already
 * buffered on `raw` go to the TLS engine: an early ClientHello is kept, injected plaintext
 * fails the handshake. Returns a canceller that destroys the connection.
 */
const serverHandshake = (
  raw: net.Socket,
  options: TlsServerOptions,
  done: (result: { readonly socket: tls.TLSSocket } | { readonly error: TransportError }) => void
): () => void => {
  let server: tls.Server
  try {
    server = handshakeServer(options)
  } catch (cause) {
    done({ error: tlsError(`invalid TLS options: ${errorMessage(cause)}`, cause) })
    return ignore
  }
  // Node reports a close during the handshake through 'tlsClientError' (with the reason, e.g. a
  // refused certificate); this is only a safety net, so it waits for that report first.
  const onRawClose = () =>
    setImmediate(() => settleHandshake(raw, undefined, new Error("connection closed during the TLS handshake")))
  pendingHandshakes.set(raw, (socket, error) => {
    raw.off("close", onRawClose)
    if (socket !== undefined) {
      socket.on("error", ignore) // until the transport adds its own listener
      done({ socket })
    } else {
      raw.destroy()
      done({ error: tlsError(`TLS handshake failed: ${errorMessage(error)}`, error) })
    }
  })
  raw.once("close", onRawClose)
  server.emit("connection", raw)
  return () => {
    if (pendingHandshakes.delete(raw)) {
      raw.off("close", onRawClose)
      raw.destroy() // the TLSSocket over it closes with it
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The connection

type Resume<A> = (effect: Effect.Effect<A, TransportError>) => void

/** Bytes read from the socket that no `read` has taken yet, past which the socket pauses. */
const READ_AHEAD = 64 * 1024

const makeConn = (socket: net.Socket, role: "server" | "client", options: MakeOptions): Transport =>
  new NodeConnection(socket, role, options)

/**
 * A connection, and `unread`, which puts bytes back in front of what the next `read` returns
 * (what came after a PROXY header in the same chunk).
 */
const makeConnection = (
  socket: net.Socket,
  role: "server" | "client",
  options: MakeOptions
): { readonly transport: Transport; readonly unread: (bytes: Uint8Array) => void } => {
  const connection = new NodeConnection(socket, role, options)
  return { transport: connection, unread: (bytes) => connection.unread(bytes) }
}

/**
 * One connection, as an object rather than a closure per operation: a server holds thousands
 * of them. The Transport's functions are own properties (a copy made with `{ ...transport }`
 * keeps working); everything else is on the prototype.
 */
class NodeConnection implements Transport {
  readonly raw: net.Socket
  readonly role: "server" | "client"
  readonly hostname: string | undefined
  readonly closeTimeoutMillis: number
  readonly localEndpoint: Endpoint | undefined
  readonly remoteEndpoint: Endpoint | undefined
  // `current` is the socket bytes are read from and written to: `raw`, then the TLSSocket.
  // It is undefined while a handshake runs and after one failed: no byte read before an
  // upgrade can come out of a read after it, and nothing is written in plaintext by mistake.
  current: net.Socket | undefined
  secure: tls.TLSSocket | undefined = undefined
  tlsState: TlsState | undefined = undefined
  waiter: Resume<Uint8Array | undefined> | undefined = undefined
  // Chunks no read has taken yet, oldest first (rarely more than one).
  ahead: Array<Buffer> = []
  aheadBytes = 0
  pausedAhead = false
  // A 'data' listener is on `current`: set by the first read, kept across a TLS upgrade.
  flowing = false
  failure: TransportError | undefined = undefined
  // The socket closed: a failure too, built (with its stack trace) only when something fails with it.
  peerClosed = false
  eof = false
  closing = false
  closed = false // the socket holding the file descriptor has emitted 'close'
  closeWaiters: Set<() => void> | undefined = undefined

  constructor(socket: net.Socket, role: "server" | "client", options: MakeOptions) {
    const raw = socket
    this.raw = raw
    this.role = role
    this.hostname = options.hostname
    this.current = raw
    // Replies and commands are batched into one write already: Nagle's algorithm would only
    // hold the last segment of a batch back (a no-op on Unix sockets).
    raw.setNoDelay(true)
    this.closeTimeoutMillis = options.closeTimeout === undefined ? 2000 : Duration.toMillis(options.closeTimeout)
    // A Unix socket has neither address nor port (and the client end has no path).
    const unix = raw.remoteAddress === undefined && raw.remotePort === undefined
    this.localEndpoint = options.localEndpoint ?? (unix ? undefined : tcpEndpoint(raw.localAddress, raw.localPort))
    this.remoteEndpoint = options.remoteEndpoint ?? (unix ? undefined : tcpEndpoint(raw.remoteAddress, raw.remotePort))
    // An 'error' without a listener crashes the process, whatever state we are in.
    raw.on("error", ignore)
    raw.once("close", this.onRawClose)
    if (isTlsSocket(raw)) {
      this.secure = raw
      this.tlsState = readTlsState(raw)
    }
    this.attach(raw)
  }

  // --- the Transport ---

  readonly read: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.suspend(() => {
    if (this.waiter !== undefined) {
      return Effect.fail(new TransportError({ reason: "Read", message: "another read is already pending" }))
    }
    if (this.ahead.length > 0 && !this.closing) return Effect.succeed(this.takeAhead())
    return this.awaitChunk
  })

  readonly writeUnsafe = (data: Uint8Array | string): Effect.Effect<void, TransportError> => {
    if (this.closing) return Effect.fail(closedLocally())
    const s = this.current
    if (s === undefined) {
      return Effect.fail(this.currentFailure() ?? tlsError("cannot write while the TLS handshake is running"))
    }
    const f = this.currentFailure()
    if (f !== undefined) return Effect.fail(f)
    if (s.destroyed || s.writableEnded) return Effect.fail(closedByPeer())
    return s.write(data) ? Effect.void : this.awaitDrain(s)
  }

  readonly write = (data: Uint8Array | string): Effect.Effect<void, TransportError> =>
    Effect.suspend(() => this.writeUnsafe(data))

  readonly upgradeTls: Transport["upgradeTls"] = (upgrade) =>
    Effect.callback<void, TransportError>((resume) => this.startUpgrade(upgrade, resume))

  readonly tls = (): TlsState | undefined => this.tlsState

  readonly close: Effect.Effect<void> = Effect.callback((resume) => {
    this.beginClose()
    if (this.closed) return resume(Effect.void)
    const done = () => resume(Effect.void)
    const waiters = this.closeWaiters ??= new Set()
    waiters.add(done)
    return Effect.sync(() => {
      waiters.delete(done)
    })
  })

  // --- reading ---

  currentFailure(): TransportError | undefined {
    if (this.failure === undefined && this.peerClosed) this.failure = closedByPeer()
    return this.failure
  }

  takeAhead(): Buffer {
    const ahead = this.ahead
    const chunk = ahead.length === 1 ? ahead.pop()! : ahead.shift()!
    this.aheadBytes -= chunk.length
    if (this.pausedAhead && this.aheadBytes < READ_AHEAD) {
      this.pausedAhead = false
      this.current?.resume()
    }
    return chunk
  }

  wake() {
    if (this.waiter === undefined) return
    let result: Effect.Effect<Uint8Array | undefined, TransportError> | undefined
    if (this.closing) result = Effect.fail(closedLocally())
    else if (this.ahead.length > 0) result = Effect.succeed(this.takeAhead())
    else if (this.eof && this.current !== undefined) result = Effect.succeed(undefined)
    else {
      const f = this.currentFailure()
      if (f !== undefined) result = Effect.fail(f)
    }
    if (result === undefined) return
    const resume = this.waiter
    this.waiter = undefined
    resume(result)
  }

  readonly cancelRead: Effect.Effect<void> = Effect.sync(() => {
    this.waiter = undefined // interrupted: the next read takes over
  })

  readonly awaitChunk: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.callback((resume) => {
    this.waiter = resume
    if (!this.flowing) {
      this.flowing = true
      // (a socket accepted with pauseOnConnect does not start flowing on its own)
      this.current?.on("data", this.onData).resume()
    }
    this.wake()
    return this.waiter === resume ? this.cancelRead : undefined // undefined: resumed synchronously
  })

  readonly onData = (chunk: Buffer) => {
    const waiter = this.waiter
    if (waiter !== undefined && this.ahead.length === 0 && !this.closing) {
      this.waiter = undefined
      return waiter(Effect.succeed(chunk))
    }
    this.ahead.push(chunk)
    this.aheadBytes += chunk.length
    if (this.aheadBytes >= READ_AHEAD && !this.pausedAhead) {
      this.pausedAhead = true
      this.current?.pause()
    }
  }

  readonly onEnd = () => {
    this.eof = true
    this.wake()
  }

  readonly onError = (cause: unknown) => {
    if (this.failure === undefined && !this.peerClosed) this.failure = socketError(cause, "Read")
    this.wake()
  }

  readonly onClose = () => {
    this.peerClosed = true
    this.wake()
  }

  readonly onRawClose = () => {
    this.closed = true
    const waiters = this.closeWaiters
    if (waiters === undefined) return
    for (const f of waiters) f()
    waiters.clear()
  }

  /** Puts bytes back in front of what the next `read` returns. */
  unread(bytes: Uint8Array) {
    this.ahead.unshift(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length))
    this.aheadBytes += bytes.length
  }

  attach(s: net.Socket) {
    s.on("end", this.onEnd).on("error", this.onError).on("close", this.onClose)
    // Reading starts with the first read.
    if (this.flowing) s.on("data", this.onData).resume()
  }

  /**
   * Stops reading from `s` for a TLS upgrade: what was read ahead goes back to the socket, where
   * Node hands it to the TLS engine (an early ClientHello is kept, injected plaintext fails).
   */
  detach(s: net.Socket) {
    s.off("data", this.onData).off("end", this.onEnd).off("error", this.onError).off("close", this.onClose)
    s.pause()
    this.pausedAhead = false
    const ahead = this.ahead
    for (let i = ahead.length - 1; i >= 0; i--) s.unshift(ahead[i]!)
    this.ahead = []
    this.aheadBytes = 0
  }

  // --- writing ---

  awaitDrain(s: net.Socket): Effect.Effect<void, TransportError> {
    return Effect.callback((resume) => {
      const cleanup = () => {
        s.off("drain", onDrain).off("close", onDrainClose)
      }
      const onDrain = () => {
        cleanup()
        resume(Effect.void)
      }
      // 'error' is always followed by 'close'; onError has recorded the cause by then.
      const onDrainClose = () => {
        cleanup()
        resume(Effect.fail(this.closing ? closedLocally() : this.currentFailure() ?? closedByPeer()))
      }
      s.on("drain", onDrain).on("close", onDrainClose)
      return Effect.sync(cleanup)
    })
  }

  // --- TLS ---

  finishUpgrade(s: tls.TLSSocket) {
    this.secure = s
    this.tlsState = readTlsState(s)
    this.current = s
    this.attach(s)
    this.wake()
  }

  failUpgrade(error: TransportError, s?: net.Socket) {
    this.failure = error
    s?.destroy()
    this.raw.destroy()
    this.wake()
  }

  startUpgrade(
    upgrade: Parameters<Transport["upgradeTls"]>[0],
    resume: (effect: Effect.Effect<void, TransportError>) => void
  ): Effect.Effect<void> | void {
    const raw = this.raw
    if (this.closing) return resume(Effect.fail(closedLocally()))
    if (this.secure !== undefined) return resume(Effect.fail(tlsError("the connection is already encrypted")))
    if (upgrade.role !== this.role) return resume(Effect.fail(tlsError(`this is the ${this.role} side of the connection`)))
    if (this.current === undefined) {
      return resume(Effect.fail(this.currentFailure() ?? tlsError("a TLS handshake is already running")))
    }
    if (this.currentFailure() !== undefined || this.eof || raw.destroyed) {
      return resume(Effect.fail(this.currentFailure() ?? closedByPeer()))
    }
    this.detach(raw)
    this.current = undefined // Node feeds what it buffered on `raw` to the TLS engine, never to us
    if (upgrade.role === "server") {
      const cancel = serverHandshake(raw, upgrade.tls, (result) => {
        if ("socket" in result) {
          this.finishUpgrade(result.socket)
          resume(Effect.void)
        } else {
          this.failUpgrade(result.error)
          resume(Effect.fail(result.error))
        }
      })
      return Effect.sync(() => {
        cancel()
        this.failUpgrade(tlsError("TLS handshake interrupted"))
      })
    }
    const servername = upgrade.tls.servername ?? defaultServername(this.hostname)
    // `host` is what the server certificate is checked against (an IP checks IP SANs).
    const remote = this.remoteEndpoint
    const host = this.hostname ?? (remote?._tag === "Tcp" ? remote.host : undefined)
    let s: tls.TLSSocket
    try {
      s = nodeTls().connect({
        ...upgrade.tls,
        socket: raw,
        ...(servername !== undefined ? { servername } : {}),
        ...(host !== undefined ? { host } : {})
      })
    } catch (cause) {
      const error = tlsError(`invalid TLS options: ${errorMessage(cause)}`, cause)
      this.failUpgrade(error)
      return resume(Effect.fail(error))
    }
    s.on("error", ignore)
    const cleanup = () => {
      s.off("secureConnect", ok).off("error", ko).off("close", onEarlyClose)
    }
    const ok = () => {
      cleanup()
      this.finishUpgrade(s)
      resume(Effect.void)
    }
    const ko = (cause: unknown) => {
      cleanup()
      const error = tlsError(`TLS handshake failed: ${errorMessage(cause)}`, cause)
      this.failUpgrade(error, s)
      resume(Effect.fail(error))
    }
    const onEarlyClose = () => ko(new Error("connection closed during the TLS handshake"))
    s.once("secureConnect", ok).once("error", ko).once("close", onEarlyClose)
    return Effect.sync(() => {
      cleanup()
      this.failUpgrade(tlsError("TLS handshake interrupted"), s)
    })
  }

  // --- closing ---

  beginClose() {
    if (this.closing) return
    this.closing = true
    this.wake() // a pending read fails with Closed
    const raw = this.raw
    const s = this.current ?? raw
    const destroyAll = () => {
      clearTimeout(timer)
      s.destroy()
      raw.destroy()
    }
    // A stuck peer (full buffers, never reading) cannot hold the connection open.
    const timer = setTimeout(destroyAll, this.closeTimeoutMillis)
    timer.unref()
    // During a handshake (or after a failed one) there is nothing to flush.
    if (this.current === undefined || s.destroyed || s.writableFinished) return destroyAll()
    // Lingering close: once our last bytes and FIN are out, read and drop what the peer still
    // sends until it closes too. Destroying a socket with unread input makes the kernel send a
    // reset, which can destroy our final reply (a 421, a 500) before the peer has read it.
    s.once("finish", () => {
      s.off("data", this.onData)
      this.ahead = []
      s.on("data", ignore)
      s.once("end", destroyAll)
      s.resume()
    }).once("close", destroyAll)
    if (!s.writableEnded) s.end() // flush what was written, then FIN (close_notify first on TLS)
  }
}

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
  readonly endpoint: Endpoint
  readonly unix?: Access | undefined
  readonly backlog?: number | undefined
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

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        accepting = false
        for (const cancel of pending) cancel()
        pending.clear()
        for (const t of yield* Queue.clear(queue)) yield* t.close // destroyed at once: nobody wrote
        yield* Queue.fail(queue, new TransportError({ reason: "Closed", message: `listener ${formatEndpoint(bound)} closed` }))
      }).pipe(Effect.orDie)
    )

    const offer = (t: Transport): Effect.Effect<void> => accepting && Queue.offerUnsafe(queue, t) ? Effect.void : t.close

    // PROXY header first (read with the listener's services: its clock, its logger), then TLS.
    const acceptProxied = (acceptor: ProxyListener.Acceptor, socket: net.Socket, endpoints: MakeOptions) => {
      const { transport, unread } = makeConnection(socket, "server", endpoints)
      const accepted = acceptor.accept(transport, (rest) => {
        unread(rest)
        return transport
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
      socket.on("error", ignore)
      const endpoints: MakeOptions = bound._tag === "Unix"
        ? { localEndpoint: bound }
        : { localEndpoint: tcpEndpoint(socket.localAddress, socket.localPort), remoteEndpoint: tcpEndpoint(socket.remoteAddress, socket.remotePort) }
      if (tlsOptions === undefined && proxyAcceptor === undefined) {
        if (!accepting || !Queue.offerUnsafe(queue, makeConn(socket, "server", endpoints))) socket.destroy()
        return
      }
      if (pending.size >= maxPending) return void socket.destroy()
      if (proxyAcceptor !== undefined) return acceptProxied(proxyAcceptor, socket, endpoints)
      const cancel = serverHandshake(socket, tlsOptions!, (result) => {
        pending.delete(cancel)
        // A failed handshake is the client's problem: the socket is already destroyed.
        if (!("socket" in result)) return
        if (!accepting || !Queue.offerUnsafe(queue, makeConn(result.socket, "server", endpoints))) result.socket.destroy()
      })
      pending.add(cancel)
    }

    return {
      onSocket,
      // A socket the caller reads first (TLS through a PROXY header) is taken paused.
      pauseOnConnect: tlsOptions === undefined || proxyAcceptor !== undefined,
      listener: (at: Endpoint): Listener => {
        bound = at
        return { endpoint: at, implicitTls: tlsOptions !== undefined, accept: Queue.take(queue) }
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
    return acceptor.listener(bound)
  })

/**
 * A listener for connections that another process accepted and sent here (Node's
 * `subprocess.send(message, socket)`; see {@link listenSockets}): give each socket to
 * `handOver`. Everything else is as {@link listen}: TLS, PROXY headers, `accept`, closing.
 */
export const adopt = (
  options: ListenOptions
): Effect.Effect<{ readonly listener: Listener; readonly handOver: (socket: net.Socket) => void }, TransportError, Scope.Scope> =>
  Effect.map(makeAcceptor(options), (acceptor) => ({ listener: acceptor.listener(options.endpoint), handOver: acceptor.onSocket }))

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

/** The real network. */
export const layer: Layer.Layer<Network> = Layer.succeed(Network, Network.of({ listen, connect }))
