/**
 * Node socket facts shared by the connection and the listeners: errors, endpoints, TLS state,
 * and the server side of TLS handshakes.
 */
import * as net from "node:net"
import type * as tls from "node:tls"
import {
  type Endpoint,
  type PeerCertificate,
  type TlsServerOptions,
  type TlsState,
  TransportError
} from "../../Transport.ts"

// node:tls costs a server about 5 MiB once loaded: it is loaded by the first connection that
// uses TLS, not by importing this module.
let tlsModule: typeof tls | undefined
export const nodeTls = (): typeof tls => (tlsModule ??= process.getBuiltinModule("node:tls"))

/** A TLSSocket, whoever loaded node:tls. */
export const isTlsSocket = (s: net.Socket): s is tls.TLSSocket => (s as { readonly encrypted?: unknown }).encrypted === true

// ---------------------------------------------------------------------------------------------
// Errors

export const ignore = () => {}

export const errorCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

export const errorMessage = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

// The peer went away (abruptly): the same for the protocol as a clean close.
const peerGoneCodes = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED", "ERR_STREAM_DESTROYED", "ERR_STREAM_WRITE_AFTER_END"])

export const socketError = (cause: unknown, reason: "Read" | "Write"): TransportError =>
  peerGoneCodes.has(errorCode(cause) ?? "")
    ? TransportError.closed(`connection closed by peer: ${errorMessage(cause)}`, cause)
    : new TransportError({ reason, message: errorMessage(cause), cause })

export const closedByPeer = () => TransportError.closed("connection closed")
export const closedLocally = () => TransportError.closed("connection closed locally")
export const tlsError = (message: string, cause?: unknown) =>
  new TransportError(cause === undefined ? { reason: "Tls", message } : { reason: "Tls", message, cause })

// ---------------------------------------------------------------------------------------------
// Endpoints and TLS facts

// "::ffff:192.0.2.1" (an IPv4 peer on a dual-stack socket) reads better as "192.0.2.1".
const normalizeHost = (host: string): string => {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)
  return m !== null ? m[1]! : host
}

export const tcpEndpoint = (host: string | undefined, port: number | undefined): Endpoint | undefined =>
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

export const readTlsState = (s: tls.TLSSocket): TlsState => {
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

export const defaultServername = (hostname: string | undefined): string | undefined =>
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

export const handshakeServer = (options: TlsServerOptions): tls.Server => {
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
export const serverHandshake = (
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
