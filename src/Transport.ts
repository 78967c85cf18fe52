/**
 * The connection seam: the only abstraction the protocol code uses to move bytes.
 * `NodeTransport` implements it over node:net / node:tls; `MemoryTransport` gives an
 * in-memory pair for tests. Protocol modules import only the types here.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as tls from "node:tls"
import type { ProxyInfo } from "./ProxyProtocol.ts"

/** Why a connection failed. `Closed` is an orderly or abrupt end of the peer. */
export class TransportError extends Data.TaggedError("TransportError")<{
  /**
   * Which step failed: the peer went away (`Closed`), reading, writing, TLS (a handshake, or
   * STARTTLS required and not to be had), a timeout, opening the connection, or binding a listener.
   */
  readonly reason: "Closed" | "Read" | "Write" | "Tls" | "Timeout" | "Connect" | "Listen"
  /** What happened, for logs, e.g. "no reply to MAIL in time". */
  readonly message: string
  /** The underlying error (Node's, for example), when there is one. */
  readonly cause?: unknown
}> {
  /**
   * A "Closed" error. It is made without a stack trace: a peer going away is routine, and
   * capturing a stack costs more than the rest of ending a connection.
   */
  static closed(message: string, cause?: unknown): TransportError {
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      return new TransportError(cause === undefined ? { reason: "Closed", message } : { reason: "Closed", message, cause })
    } finally {
      Error.stackTraceLimit = limit
    }
  }
}

/** Where a connection's end is: a TCP host and port, or a Unix socket path. */
export type Endpoint =
  | {
    /** A TCP address. */
    readonly _tag: "Tcp"
    /** A host name or an IP address (IPv6 without brackets). */
    readonly host: string
    /** The port; 0 asks the system for a free one when listening. */
    readonly port: number
  }
  | {
    /** A Unix domain socket. */
    readonly _tag: "Unix"
    /** The socket file's path. */
    readonly path: string
  }

/** `host:port`, `[v6]:port` or `unix:/path`: the form logs and `SmtpServer.parseListenAddress` use. */
export const formatEndpoint = (e: Endpoint): string =>
  e._tag === "Unix" ? `unix:${e.path}` : e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`

/** What is known about an established TLS session. */
export interface TlsState {
  /** The TLS version, e.g. "TLSv1.3". */
  readonly protocol: string | undefined
  /** The cipher suite's name, e.g. "TLS_AES_256_GCM_SHA384". */
  readonly cipher: string | undefined
  /** SNI name the client asked for (server side) or sent (client side). */
  readonly servername: string | undefined
  /** Whether the peer's certificate was verified against the trusted CAs. */
  readonly authorized: boolean
  /** Why it was not, e.g. "SELF_SIGNED_CERT_IN_CHAIN". */
  readonly authorizationError: string | undefined
  /** The certificate the peer presented; a server sees one only from clients it asked (`requestCert`). */
  readonly peerCertificate: PeerCertificate | undefined
}

/** The facts of a peer's certificate that checks usually look at. */
export interface PeerCertificate {
  /** The subject's fields, e.g. `{ CN: "client.example.com", O: "Example" }`. */
  readonly subject: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** The issuer's fields, in the same form. */
  readonly issuer: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** The subject alternative names as Node gives them, e.g. "DNS:a.example, DNS:b.example". */
  readonly subjectAltName: string | undefined
  /** The SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint256: string
  /** The certificate itself, DER-encoded. */
  readonly raw: Uint8Array
}

/**
 * TLS settings for the server side (STARTTLS and implicit TLS). Node's own option type:
 * certificates, keys, SNICallback, requestCert, minVersion and the rest pass through.
 */
export type TlsServerOptions = tls.TlsOptions

/** TLS settings for the client side: `servername`, `ca`, `rejectUnauthorized` (default true), client certificates. */
export type TlsClientOptions = Omit<tls.ConnectionOptions, "socket" | "host" | "port" | "path">

/**
 * One connection, server or client side.
 *
 * A transport's members may live on its prototype (NodeTransport's do: an object with its
 * methods shared costs an idle connection less). To wrap one, delegate to it, member by member;
 * a spread copy (`{ ...transport }`) would lose them.
 */
export interface Transport {
  /**
   * The next chunk of bytes from the peer, `undefined` at a clean end of stream.
   * Nothing is read from the kernel until this is called, so a reader that stops
   * pulling applies TCP backpressure. At most one read may be pending.
   */
  readonly read: Effect.Effect<Uint8Array | undefined, TransportError>
  /**
   * Writes bytes; waits only when the kernel buffer is full. A Uint8Array is not copied: it
   * must not be modified afterwards (Node may still hold it after `write` returned).
   */
  readonly write: (data: Uint8Array | string) => Effect.Effect<void, TransportError>
  /**
   * `write`, done when called rather than when run: the bytes are handed to the connection at
   * once and the returned Effect only waits for the kernel to take them. It is an `Exit`
   * (`Effect.void`, or the failure) when there is nothing to wait for, which lets the protocol
   * code skip the write timeout on the usual path.
   */
  readonly writeUnsafe: (data: Uint8Array | string) => Effect.Effect<void, TransportError>
  /**
   * Switches the connection to TLS in place (STARTTLS). On the server side, bytes the
   * peer sent in plaintext that were not yet read never reach a later `read`.
   */
  readonly upgradeTls: (
    options:
      | { readonly role: "server"; readonly tls: TlsServerOptions }
      | { readonly role: "client"; readonly tls: TlsClientOptions }
  ) => Effect.Effect<void, TransportError>
  /** The TLS state, once the connection is encrypted. */
  readonly tls: () => TlsState | undefined
  /** On a `proxyProtocol` listener: the address the client connected to at the proxy. */
  readonly localEndpoint: Endpoint | undefined
  /** On a `proxyProtocol` listener: the client the proxy spoke for (its own address for LOCAL). */
  readonly remoteEndpoint: Endpoint | undefined
  /** The PROXY protocol header the connection started with, and the proxy that sent it. */
  readonly proxy?: ProxyInfo | undefined
  /**
   * Flushes what was written, then closes; a peer that does not take the data cannot hold it
   * open beyond a short deadline. A pending `read` fails with "Closed". Idempotent.
   */
  readonly close: Effect.Effect<void>
}

/** Accepted connections of one listening socket. */
export interface Listener {
  /** The bound address (with the real port when 0 was asked for). */
  readonly endpoint: Endpoint
  /** Whether connections are TLS from the first byte (implicit TLS). */
  readonly implicitTls: boolean
  /**
   * Waits for the next connection. Interrupting it leaves the listener usable; once the
   * listener's scope is closed it fails with reason "Closed". The connection belongs to the
   * caller, not to the listener's scope: close it with `close` (e.g.
   * `Effect.acquireRelease(listener.accept, (t) => t.close)`).
   */
  readonly accept: Effect.Effect<Transport, TransportError>
}

/**
 * Who may connect to a Unix socket listener: the socket file's mode, owner and group (Dovecot's
 * `unix_listener { mode, user, group }`). The socket appears at its path only once they are set.
 * Changing the owner needs root; the group can be any group the process belongs to.
 */
export interface UnixSocketAccess {
  /** File mode, e.g. `0o660`. Default `0o660` when `group` is given, `0o600` otherwise. */
  readonly mode?: number | undefined
  /** The owner: a user name or a uid. Default the process's user. */
  readonly owner?: string | number | undefined
  /** The group: a group name or a gid. Default the process's group. */
  readonly group?: string | number | undefined
}

/**
 * The PROXY protocol (v1 and v2) on a listener: every connection starts with a header from a
 * trusted proxy, and the client address it carries becomes the connection's `remoteEndpoint`.
 * A connection from any other address is closed at once, before anything is read; so is one
 * whose header is malformed, truncated or late. On a Unix socket listener, whoever may connect
 * to the socket (its permissions) is trusted.
 */
export interface ProxyProtocolOptions {
  /** Addresses and CIDR networks of the proxies, e.g. `["10.0.0.0/8", "2001:db8::5"]`. */
  readonly trusted: ReadonlyArray<string>
  /** Time for the whole header from the moment of connecting. Default 5 seconds. */
  readonly timeout?: Duration.Input | undefined
}

/** What a listener binds to. */
export interface ListenOptions {
  /** The address to bind; port 0 picks a free one. */
  readonly endpoint: Endpoint
  /**
   * Unix socket endpoints: the socket file's mode, owner and group. Without it the file gets
   * the mode the process's umask leaves (with the usual 022, only its owner can connect).
   */
  readonly unix?: UnixSocketAccess | undefined
  /** Implicit TLS: every accepted connection is TLS from the start. */
  readonly tls?: TlsServerOptions | undefined
  /** Backlog for the kernel's accept queue. */
  readonly backlog?: number | undefined
  /**
   * Most connections not yet handed to `accept` (implicit TLS handshakes, PROXY headers) at once;
   * connections beyond it are closed at once. (No other limit sees them yet.)
   */
  readonly maxHandshakes?: number | undefined
  /**
   * TCP: several processes may listen on the same address and port, and the kernel spreads
   * connections between them (SO_REUSEPORT; Linux, FreeBSD and a few others: elsewhere listening
   * fails). Every process must run as the same user. Not for Unix sockets.
   */
  readonly reusePort?: boolean | undefined
  /** Every connection starts with a PROXY protocol header from a trusted proxy. */
  readonly proxyProtocol?: ProxyProtocolOptions | undefined
}

/** What a client connects to. */
export interface ConnectOptions {
  /** The address to connect to. */
  readonly endpoint: Endpoint
  /** Implicit TLS from the first byte (port 465). */
  readonly tls?: TlsClientOptions | undefined
  /** Local address to connect from. */
  readonly localAddress?: string | undefined
}

/**
 * The service that opens listeners and connections. `NodeTransport.layer` provides the real
 * network; `MemoryTransport.layer` an in-process one for tests.
 */
export class Network extends Context.Service<Network, {
  /** Binds; the scope owns the listening socket (closing it stops accepting). */
  readonly listen: (options: ListenOptions) => Effect.Effect<Listener, TransportError, Scope.Scope>
  /** Connects; the scope owns the connection. Timeouts are the caller's (see `Effect.timeout`). */
  readonly connect: (options: ConnectOptions) => Effect.Effect<Transport, TransportError, Scope.Scope>
}>()("effect-smtp/Network") {}
