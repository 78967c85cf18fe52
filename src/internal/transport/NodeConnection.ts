/** One connection over a Node socket: the `Transport` that `NodeTransport` hands out. */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as net from "node:net"
import type * as tls from "node:tls"
import { type Endpoint, type TlsState, type Transport, TransportError } from "../../Transport.ts"
import {
  nodeTls,
  isTlsSocket,
  ignore,
  errorMessage,
  socketError,
  closedByPeer,
  closedLocally,
  tlsError,
  tcpEndpoint,
  readTlsState,
  defaultServername,
  serverHandshake
} from "./NodeSockets.ts"

/** Options of `NodeTransport.make`: facts the socket does not tell, and how it closes. */
export interface MakeOptions {
  /** This end's address, instead of what is read from the socket (Unix sockets have no address on one side). */
  readonly localEndpoint?: Endpoint | undefined
  /** The peer's address, instead of what is read from the socket. */
  readonly remoteEndpoint?: Endpoint | undefined
  /**
   * The host name the client side connected to: the default `servername` (SNI) of a client
   * `upgradeTls` and the name the server certificate is checked against.
   */
  readonly hostname?: string | undefined
  /** How long `close` waits for buffered writes to flush before destroying. Default 2 seconds. */
  readonly closeTimeout?: Duration.Input | undefined
}

// ---------------------------------------------------------------------------------------------
// The connection

type Resume<A> = (effect: Effect.Effect<A, TransportError>) => void

/** Bytes read from the socket that no `read` has taken yet, past which the socket pauses. */
const READ_AHEAD = 64 * 1024

export const makeConn = (socket: net.Socket, role: "server" | "client", options: MakeOptions): Transport =>
  new NodeConnection(socket, role, options)


/** The connection a socket's events belong to: one set of listener functions serves every socket. */
const kConnection = Symbol("effect-smtp/NodeConnection")
type Owned = net.Socket & { [kConnection]?: NodeConnection }
const owner = (s: net.Socket): NodeConnection | undefined => (s as Owned)[kConnection]

// Node calls a listener with the socket as `this`. Each connection listens through these shared
// functions rather than through closures of its own: a server holds thousands of connections.
// 'error' and 'close' listeners stay on a socket for its life (an 'error' without a listener
// crashes the process); they act only for the socket the connection currently reads from.
function onSocketData(this: net.Socket, chunk: Buffer) {
  owner(this)?.onData(chunk)
}
function onSocketEnd(this: net.Socket) {
  const c = owner(this)
  if (c !== undefined && c.attached === this) c.onEnd()
}
function onSocketError(this: net.Socket, cause: unknown) {
  const c = owner(this)
  if (c !== undefined && c.attached === this) c.onError(cause)
}
function onSocketClose(this: net.Socket) {
  const c = owner(this)
  if (c === undefined) return
  if (c.attached === this) c.onClose()
  if (c.lingering === this) c.destroyAll()
  if (c.raw === this) c.onRawClose()
}
// The lingering close's, shared the same way: every connection closes.
function onLingerFinish(this: net.Socket) {
  const c = owner(this)
  if (c !== undefined && c.lingering === this) c.linger(this)
}
function onLingerEnd(this: net.Socket) {
  const c = owner(this)
  if (c !== undefined && c.lingering === this) c.destroyAll()
}
const destroyConnection = (c: NodeConnection) => c.destroyAll()

/**
 * One connection, as an object rather than a closure per operation: a server holds thousands
 * of them. The Transport's functions are on the prototype: a wrapper delegates to them (see
 * `TransportView`) rather than copying them with a spread.
 */
export class NodeConnection implements Transport {
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
  // The socket whose 'end', 'error' and 'close' count (`current`, but also a failed one's).
  attached: net.Socket | undefined = undefined
  secure: tls.TLSSocket | undefined = undefined
  tlsState: TlsState | undefined = undefined
  waiter: Resume<Uint8Array | undefined> | undefined = undefined
  // Chunks no read has taken yet, oldest first (rarely more than one).
  ahead: Array<Buffer> | undefined = undefined
  aheadBytes = 0
  pausedAhead = false
  // A 'data' listener is on `current`: set by the first read, kept across a TLS upgrade.
  flowing = false
  failure: TransportError | undefined = undefined
  // What the socket failed with, made into a TransportError only when something fails with it
  // (a peer that resets the connection is routine).
  errorCause: unknown = undefined
  // The socket closed: a failure too, built only when something fails with it.
  peerClosed = false
  eof = false
  closing = false
  closed = false // the socket holding the file descriptor has emitted 'close'
  // Rarely more than one: an array costs less than a Set.
  closeWaiters: Array<() => void> | undefined = undefined
  // Closing: the socket whose last bytes are flushed, then read to its end, and the timer bounding that.
  lingering: net.Socket | undefined = undefined
  lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined

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
    const unix = options.remoteEndpoint === undefined && raw.remoteAddress === undefined && raw.remotePort === undefined
    this.localEndpoint = options.localEndpoint ?? (unix ? undefined : tcpEndpoint(raw.localAddress, raw.localPort))
    this.remoteEndpoint = options.remoteEndpoint ?? (unix ? undefined : tcpEndpoint(raw.remoteAddress, raw.remotePort))
    ;(raw as Owned)[kConnection] = this
    raw.on("error", onSocketError).on("close", onSocketClose)
    if (isTlsSocket(raw)) {
      this.secure = raw
      this.tlsState = readTlsState(raw)
    }
    this.attach(raw)
  }

  // --- the Transport ---

  // Made once per connection: an idle connection waits in it.
  readonly read: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.callback((resume) => {
    if (this.waiter !== undefined) {
      return resume(Effect.fail(new TransportError({ reason: "Read", message: "another read is already pending" })))
    }
    if (this.aheadBytes > 0 && !this.closing) return resume(Effect.succeed(this.takeAhead()))
    this.waiter = resume
    if (!this.flowing) {
      this.flowing = true
      // (a socket accepted with pauseOnConnect does not start flowing on its own)
      this.current?.on("data", onSocketData).resume()
    }
    this.wake()
    return this.waiter === resume ? this.cancelRead : undefined // undefined: resumed synchronously
  })

  writeUnsafe(data: Uint8Array | string): Effect.Effect<void, TransportError> {
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

  write(data: Uint8Array | string): Effect.Effect<void, TransportError> {
    return Effect.suspend(() => this.writeUnsafe(data))
  }

  upgradeTls(upgrade: Parameters<Transport["upgradeTls"]>[0]): Effect.Effect<void, TransportError> {
    return Effect.callback<void, TransportError>((resume) => this.startUpgrade(upgrade, resume))
  }

  tls(): TlsState | undefined {
    return this.tlsState
  }

  // Made when asked for (once or twice per connection), not kept by every idle one.
  get close(): Effect.Effect<void> {
    return Effect.callback((resume) => {
      this.beginClose()
      if (this.closed) return resume(Effect.void)
      const done = () => resume(Effect.void)
      const waiters = this.closeWaiters ??= []
      waiters.push(done)
      return Effect.sync(() => {
        const i = waiters.indexOf(done)
        if (i >= 0) waiters.splice(i, 1)
      })
    })
  }

  // --- reading ---

  currentFailure(): TransportError | undefined {
    if (this.failure === undefined) {
      if (this.errorCause !== undefined) this.failure = socketError(this.errorCause, "Read")
      else if (this.peerClosed) this.failure = closedByPeer()
    }
    return this.failure
  }

  takeAhead(): Buffer {
    const ahead = this.ahead!
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
    else if (this.aheadBytes > 0) result = Effect.succeed(this.takeAhead())
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

  onData(chunk: Buffer) {
    const waiter = this.waiter
    if (waiter !== undefined && this.aheadBytes === 0 && !this.closing) {
      this.waiter = undefined
      return waiter(Effect.succeed(chunk))
    }
    if (chunk.length === 0) return
    ;(this.ahead ??= []).push(chunk)
    this.aheadBytes += chunk.length
    if (this.aheadBytes >= READ_AHEAD && !this.pausedAhead) {
      this.pausedAhead = true
      this.current?.pause()
    }
  }

  onEnd() {
    this.eof = true
    this.wake()
  }

  onError(cause: unknown) {
    if (this.failure === undefined && this.errorCause === undefined && !this.peerClosed) this.errorCause = cause ?? "error"
    this.wake()
  }

  onClose() {
    this.peerClosed = true
    this.wake()
  }

  onRawClose() {
    this.closed = true
    const waiters = this.closeWaiters
    if (waiters === undefined) return
    this.closeWaiters = undefined
    for (const f of waiters) f()
  }

  /**
   * Puts bytes back in front of what the next `read` returns: what came after a PROXY header in
   * the same chunk. (A TLS upgrade hands them to the TLS engine with the rest read ahead.)
   */
  unread(bytes: Uint8Array) {
    if (bytes.length === 0) return
    ;(this.ahead ??= []).unshift(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length))
    this.aheadBytes += bytes.length
  }

  attach(s: net.Socket) {
    this.attached = s
    if (s !== this.raw) {
      ;(s as Owned)[kConnection] = this
      s.on("error", onSocketError).on("close", onSocketClose)
    }
    s.on("end", onSocketEnd)
    // Reading starts with the first read.
    if (this.flowing) s.on("data", onSocketData).resume()
  }

  /**
   * Stops reading from `s` for a TLS upgrade: what was read ahead goes back to the socket, where
   * Node hands it to the TLS engine (an early ClientHello is kept, injected plaintext fails).
   */
  detach(s: net.Socket) {
    s.off("data", onSocketData).off("end", onSocketEnd)
    this.attached = undefined
    s.pause()
    this.pausedAhead = false
    const ahead = this.ahead
    if (ahead !== undefined) for (let i = ahead.length - 1; i >= 0; i--) s.unshift(ahead[i]!)
    this.ahead = undefined
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
    const s = this.current ?? this.raw
    // During a handshake (or after a failed one) there is nothing to flush.
    if (this.current === undefined || s.destroyed || s.writableFinished) return this.destroyAll()
    // A stuck peer (full buffers, never reading) cannot hold the connection open.
    this.lingerTimer = setTimeout(destroyConnection, this.closeTimeoutMillis, this)
    this.lingerTimer.unref()
    // Lingering close: once our last bytes and FIN are out, read and drop what the peer still
    // sends until it closes too (onLingerFinish, then onLingerEnd or 'close'). Destroying a
    // socket with unread input makes the kernel send a reset, which can destroy our final
    // reply (a 421, a 500) before the peer has read it.
    this.lingering = s
    s.on("finish", onLingerFinish)
    if (!s.writableEnded) s.end() // flush what was written, then FIN (close_notify first on TLS)
  }

  /** Our side is flushed and shut: drop what the peer still sends until it ends. */
  linger(s: net.Socket) {
    s.off("data", onSocketData)
    this.ahead = undefined
    this.aheadBytes = 0
    s.on("data", ignore)
    s.on("end", onLingerEnd)
    s.resume()
  }

  destroyAll() {
    clearTimeout(this.lingerTimer)
    const s = this.lingering ?? this.current ?? this.raw
    this.lingering = undefined
    s.destroy()
    this.raw.destroy()
  }
}
