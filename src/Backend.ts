/**
 * What a server application provides: a `Backend` service that opens a `Session` for each
 * connection. Session operations are Effects; failing with an `SmtpError` sends that reply,
 * failing with anything else sends a generic `451 4.3.0` (and is logged), dying closes the
 * connection with `421`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { Address } from "./Address.ts"
import type { MailOptions, RcptOptions } from "./MailOptions.ts"
import type { ProxyInfo } from "./ProxyProtocol.ts"
import type { SaslServerMechanisms } from "./Sasl.ts"
import type { SmtpError } from "./SmtpError.ts"
import type { Endpoint, TlsState, TransportError } from "./Transport.ts"

/** What the server knows about one connection. Fields that change during the session are getters. */
export interface ConnectionInfo {
  /** Unique within this server process. */
  readonly id: string
  /** What the server speaks: its `protocol` option. */
  readonly protocol: "smtp" | "lmtp"
  /**
   * The address the client connected to: behind a PROXY protocol listener the one at the
   * proxy; after XCLIENT DESTADDR/DESTPORT, those.
   */
  readonly localEndpoint: Endpoint | undefined
  /**
   * The client: behind a PROXY protocol listener the client the proxy spoke for; after XCLIENT
   * ADDR/PORT, those (undefined for ADDR=[UNAVAILABLE], port 0 when only ADDR was given).
   */
  readonly remoteEndpoint: Endpoint | undefined
  /** The PROXY protocol header the connection started with, and the proxy's own address. */
  readonly proxy?: ProxyInfo | undefined
  /** What a trusted client said with XCLIENT, once it has. */
  readonly xclient?: (() => XclientAttributes | undefined) | undefined
  /** The TLS session, after STARTTLS or on an implicit TLS listener. */
  readonly tls: () => TlsState | undefined
  /** The name the client gave in HELO, EHLO or LHLO. */
  readonly helo: () => string | undefined
  /** The identity that AUTH established, if any. */
  readonly authenticatedAs: () => string | undefined
}

/**
 * Attributes a trusted client set with XCLIENT (Postfix's extension), as it sent them once
 * xtext-decoded; each stays until set again. `[UNAVAILABLE]` and `[TEMPUNAVAIL]` are given in
 * upper case. HELO, LOGIN, ADDR/PORT and DESTADDR/DESTPORT also become `helo()`,
 * `authenticatedAs()`, `remoteEndpoint` and `localEndpoint`.
 */
export interface XclientAttributes {
  /** The client's host name, `[UNAVAILABLE]` (lookup failed) or `[TEMPUNAVAIL]` (failed for now). */
  readonly name?: string | undefined
  /** Its IPv4 or IPv6 address (without the `IPV6:` prefix), or `[UNAVAILABLE]`. */
  readonly addr?: string | undefined
  /** Its TCP port, or `[UNAVAILABLE]`. */
  readonly port?: string | undefined
  /** Whether it greeted with HELO (`SMTP`) or EHLO (`ESMTP`). */
  readonly proto?: "SMTP" | "ESMTP" | undefined
  /** Its HELO name, or `[UNAVAILABLE]`. */
  readonly helo?: string | undefined
  /** The SASL login name it authenticated with, or `[UNAVAILABLE]` (none). */
  readonly login?: string | undefined
  /** The address it connected to. */
  readonly destaddr?: string | undefined
  /** The port it connected to. */
  readonly destport?: string | undefined
}

/** The current connection, available to every session operation. */
export class Connection extends Context.Service<Connection, ConnectionInfo>()("effect-smtp/Connection") {}

/** A message body as it arrives: streamed from the socket, ends at the body's end. */
export type MessageBody = Stream.Stream<Uint8Array, SmtpError | TransportError>

/**
 * One connection's conversation with the backend. Every operation may fail with an `SmtpError`
 * (sent as the reply) or any other error (sent as `451 4.3.0`, logged), and may use the
 * `Connection` service, which the server provides.
 */
export interface Session {
  /** MAIL FROM. `from` is `null` for the null reverse-path `<>`. */
  readonly mail: (from: Address | null, options: MailOptions) => Effect.Effect<void, unknown, Connection>
  /** RCPT TO, once per recipient. */
  readonly rcpt: (to: Address, options: RcptOptions) => Effect.Effect<void, unknown, Connection>
  /**
   * The message body (DATA or BDAT). The stream pulls from the socket: reading slowly slows the
   * client. What the session leaves unread is drained by the server. A failure of the stream
   * (too large, bare line endings, a line too long, lost connection) must not be stored as a
   * message. A message in several BDAT chunks is answered chunk by chunk only once the session
   * has taken in each chunk, so a failure is the reply to the chunk it happened on.
   */
  readonly data: (body: MessageBody) => Effect.Effect<void, unknown, Connection>
  /**
   * LMTP only: deliver the body and say, for each recipient in order, whether delivery
   * succeeded (`undefined`) or failed (an `SmtpError`). Without it, `data`'s outcome is
   * every recipient's outcome.
   */
  readonly lmtpData?: (
    body: MessageBody,
    recipients: ReadonlyArray<Address>
  ) => Effect.Effect<ReadonlyArray<SmtpError | undefined>, unknown, Connection>
  /**
   * Ends the current transaction: after every message (accepted or not), and on RSET, a new
   * EHLO or STARTTLS while a transaction is open. Not called when there is none to end.
   */
  readonly reset: Effect.Effect<void, never, Connection>
  /**
   * AUTH: the server-side SASL mechanisms this session accepts. Without it the server does not
   * offer AUTH. The identity they return becomes `ConnectionInfo.authenticatedAs`.
   */
  readonly auth?: SaslServerMechanisms
}

/**
 * The application's side of the server: provide it as a Layer to `SmtpServer.layer`.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Stream from "effect/Stream"
 * import { Backend } from "effect-smtp/Backend"
 * import * as SmtpError from "effect-smtp/SmtpError"
 *
 * // Accepts mail for example.com and counts the bytes of each message.
 * const Inbox = Layer.succeed(Backend, Backend.of({
 *   newSession: (connection) =>
 *     Effect.succeed({
 *       mail: (from) => Effect.logInfo(`MAIL FROM ${from ?? "<>"} via ${connection.helo()}`),
 *       rcpt: (to) => to.endsWith("@example.com") ? Effect.void : Effect.fail(SmtpError.mailboxUnavailable),
 *       data: (body) => Stream.runFold(body, () => 0, (n, chunk) => n + chunk.length).pipe(
 *         Effect.flatMap((bytes) => Effect.logInfo(`received ${bytes} bytes`))
 *       ),
 *       reset: Effect.void
 *     })
 * }))
 * ```
 */
export class Backend extends Context.Service<Backend, {
  /**
   * Opens the session of a new connection. It runs in the connection's scope: its finalizers
   * run when the connection ends, however it ends (go-smtp's Logout). Failing with an
   * `SmtpError` refuses the session: that reply replaces the greeting, and the server then
   * waits for QUIT, answering 503 to anything else (RFC 5321 3.1), unless the code is 421 (it
   * closes at once). Any other failure is 421 4.3.0, logged.
   */
  readonly newSession: (connection: ConnectionInfo) => Effect.Effect<Session, unknown, Scope.Scope>
}>()("effect-smtp/Backend") {}
