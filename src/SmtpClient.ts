/**
 * The SMTP and LMTP client.
 *
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Redacted from "effect/Redacted"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpClient from "effect-smtp/SmtpClient"
 *
 * // One message, one connection: STARTTLS (required), AUTH, MAIL, RCPT, DATA, QUIT.
 * const sent = SmtpClient.sendMail({
 *   host: "smtp.example.com",
 *   auth: { _tag: "Password", username: "me", password: Redacted.make("secret") },
 *   from: "me@example.com",
 *   to: ["you@example.org"],
 *   body: "Subject: Hello\r\n\r\nHi!\r\n"
 * }).pipe(Effect.provide(NodeTransport.layer))
 *
 * // Several operations on one connection, closed (QUIT) with the scope.
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const client = yield* SmtpClient.connect({ host: "smtp.example.com" })
 *   yield* client.send({ from: "me@example.com", to: "a@example.org", body: "..." })
 *   yield* client.send({ from: "me@example.com", to: "b@example.org", body: "..." })
 * }))
 * ```
 *
 * Safety: no caller string reaches the wire with CR, LF or NUL in it; addresses are checked
 * and parameters xtext-encoded; DATA bodies are normalised to CRLF and dot-stuffed, so the
 * content cannot end the message early; certificates are verified unless told otherwise;
 * PLAIN and LOGIN are not used without TLS unless allowed; bytes a server slips in after its
 * 220 to STARTTLS end the connection.
 *
 * Failures: `SmtpError` (the server said no), `TransportError` (the connection failed or
 * timed out), `SmtpProtocolError` (the server broke the protocol), `SmtpClientError` (the
 * request cannot be made), and `RecipientsRefused` from `send` when no recipient was accepted.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { SmtpError } from "./SmtpError.ts"
import { type Network, type Transport, TransportError } from "./Transport.ts"
import * as Config from "./internal/client/Config.ts"
import * as Connection from "./internal/client/Connection.ts"
import { type ClientError, RecipientsRefused } from "./internal/client/Errors.ts"

export type { Body } from "./internal/client/Body.ts"
export type { AuthInput, ClientOptions, ConnectOptions, Security, Timeouts } from "./internal/client/Config.ts"
export { defaultTimeouts } from "./internal/client/Config.ts"
export type {
  AcceptedRecipient,
  LmtpStatus,
  Message,
  Recipient,
  SendResult,
  SmtpClient
} from "./internal/client/Connection.ts"
export { DEFAULT_CHUNK_SIZE } from "./internal/client/Connection.ts"
export type { ClientError, RejectedRecipient } from "./internal/client/Errors.ts"
export { RecipientsRefused, SmtpClientError, SmtpProtocolError } from "./internal/client/Errors.ts"

/** Everything `send` and `sendMail` can fail with. */
export type SendError = ClientError | RecipientsRefused

/**
 * True for failures worth trying again later: a 4xx reply (421 included), every recipient
 * refused temporarily, or a connection that failed or timed out (but not a failed TLS
 * handshake, which is a matter of configuration).
 */
export const isTemporary = (error: unknown): boolean =>
  error instanceof SmtpError
    ? error.isTemporary
    : error instanceof RecipientsRefused
    ? error.isTemporary
    : error instanceof TransportError
    ? error.reason !== "Tls"
    : false

/**
 * Opens a client: TCP (or a Unix socket with `path`), the greeting, EHLO (LHLO), STARTTLS as
 * `security` says (required by default; plaintext by default over a Unix socket), EHLO again,
 * and AUTH when `auth` is given. The scope owns the connection: closing it sends QUIT when it
 * can, and always closes. Needs a `Network` (`NodeTransport.layer`, or `MemoryTransport.layer`
 * in tests).
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpClient from "effect-smtp/SmtpClient"
 *
 * // Delivers to a Dovecot LMTP socket, one status per recipient, on one connection.
 * const deliver = (from: string, to: ReadonlyArray<string>, body: Uint8Array) =>
 *   Effect.scoped(Effect.gen(function*() {
 *     const client = yield* SmtpClient.connect({ path: "/run/dovecot/lmtp", protocol: "lmtp" })
 *     yield* client.mail(from)
 *     for (const rcpt of to) yield* client.rcpt(rcpt)
 *     return yield* client.lmtpData(body) // [{ recipient, reply, error }, …]
 *   })).pipe(Effect.provide(NodeTransport.layer))
 * ```
 */
export const connect: (
  options: Config.ConnectOptions
) => Effect.Effect<Connection.SmtpClient, ClientError, Network | Scope.Scope> = Effect.fn("SmtpClient.connect")(
  function*(options: Config.ConnectOptions) {
    return yield* Connection.connect(options)
  }
)

/**
 * A client over a connection that is already open (`security: "implicit"` for one that is
 * already encrypted). The client owns the transport from now on: closing the scope sends QUIT
 * when it can and closes the transport. Security defaults to `"starttls"` on a plaintext
 * transport.
 */
export const fromTransport = (
  transport: Transport,
  options: Config.ClientOptions = {}
): Effect.Effect<Connection.SmtpClient, ClientError, Scope.Scope> =>
  Effect.suspend(() =>
    Connection.make(transport, Config.resolve(options, transport.tls() !== undefined ? "implicit" : "starttls"))
  )

/** Where and how to connect, and the message. */
export interface SendMailOptions<E = never, R = never> extends Config.ConnectOptions, Connection.Message<E, R> {}

/**
 * Sends one message on a connection of its own: connect, STARTTLS (required unless
 * `security` says otherwise), AUTH when `auth` is given, the transaction, QUIT. The result
 * lists accepted and refused recipients and the server's final reply.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Redacted from "effect/Redacted"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 * import * as SmtpClient from "effect-smtp/SmtpClient"
 *
 * const sent = SmtpClient.sendMail({
 *   host: "smtp.example.com", // port 587, STARTTLS required, the certificate verified
 *   auth: { _tag: "Password", username: "app", password: Redacted.make("secret") },
 *   from: "app@example.com",
 *   to: ["alice@example.com", "bob@example.com"],
 *   body: "Subject: Hello\r\n\r\nHi there.\r\n"
 * }).pipe(
 *   Effect.tap((result) => Effect.logInfo(`refused: ${result.rejected.map((r) => r.recipient).join(", ")}`)),
 *   Effect.provide(NodeTransport.layer)
 * )
 * ```
 */
export const sendMail = <E = never, R = never>(
  options: SendMailOptions<E, R>
): Effect.Effect<Connection.SendResult, SendError | E, Network | R> => {
  const sending = Effect.scoped(Effect.gen(function*() {
    const client = yield* Connection.connect(options)
    const result = yield* client.send(options)
    yield* client.quit.pipe(Effect.ignore)
    return result
  }))
  // Spans only where a tracer receives them: the default one keeps them nowhere.
  return Effect.withFiber((fiber) =>
    fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer
      ? sending
      : Effect.withSpan(sending, "SmtpClient.sendMail", { captureStackTrace: false }) // a stack trace per message costs more than the span
  )
}
