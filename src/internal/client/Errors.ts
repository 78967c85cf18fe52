/**
 * The client's own failures, besides `SmtpError` (the server said no) and `TransportError`
 * (the connection failed): the server broke the protocol, the caller asked for something
 * that cannot be sent, or no recipient was accepted.
 */
import * as Data from "effect/Data"
import type { Reply } from "../../Reply.ts"
import type { SmtpError } from "../../SmtpError.ts"
import type { TransportError } from "../../Transport.ts"

/**
 * The server broke the protocol; the connection is closed, as nothing it sends can be trusted.
 * - `MalformedReply`: not a reply (bad code, over-long line, mixed codes, too many lines);
 * - `UnexpectedReply`: a well-formed reply that does not answer the command (354 to MAIL…);
 * - `TlsInjection`: bytes after the 220 to STARTTLS, before the handshake (RFC 3207 5);
 * - `AuthExchange`: a SASL challenge the mechanism cannot use, or a server that did not
 *   prove it knows the password (SCRAM).
 */
export class SmtpProtocolError extends Data.TaggedError("SmtpProtocolError")<{
  /** Which rule the server broke, as listed above. */
  readonly reason: "MalformedReply" | "UnexpectedReply" | "TlsInjection" | "AuthExchange"
  /** What happened, for logs. */
  readonly message: string
  /** The reply that did not fit, when there was one. */
  readonly reply?: Reply | undefined
  /** The underlying failure (a `SaslError`, for `AuthExchange`). */
  readonly cause?: unknown
}> {}

/**
 * The request cannot be made; nothing was sent for it and the connection is still usable.
 * - `InvalidArgument`: a CR, LF or NUL in a caller's string, an invalid address or parameter;
 * - `Unsupported`: the server does not offer what the request needs (STARTTLS, CHUNKING,
 *   SMTPUTF8, AUTH, a mechanism…), or the operation does not fit the protocol (LMTP vs SMTP);
 * - `InsecureAuth`: the only mechanisms left would send a password in the clear;
 * - `Closed`: the client was used after `quit`.
 */
export class SmtpClientError extends Data.TaggedError("SmtpClientError")<{
  /** What is wrong with the request, as listed above. */
  readonly reason: "InvalidArgument" | "Unsupported" | "InsecureAuth" | "Closed"
  /** What exactly, e.g. "the AUTH password may not contain CR, LF or NUL". */
  readonly message: string
}> {}

/** One recipient the server refused, at RCPT or (LMTP) after the message. */
export interface RejectedRecipient {
  /** The address, as given. */
  readonly recipient: string
  /** The server's refusal: its code, enhanced code and text. */
  readonly error: SmtpError
}

/** No recipient of a transaction was accepted: the message was not sent. */
export class RecipientsRefused extends Data.TaggedError("RecipientsRefused")<{
  /** Every refusal in one line, for logs. */
  readonly message: string
  /** Each recipient with its refusal, in the order given. */
  readonly rejected: ReadonlyArray<RejectedRecipient>
}> {
  /** Every refusal was temporary (4xx): trying again later may work. */
  get isTemporary(): boolean {
    return this.rejected.length > 0 && this.rejected.every((r) => r.error.isTemporary)
  }

  /** The error for these refusals, with a message that lists them. */
  static of(rejected: ReadonlyArray<RejectedRecipient>): RecipientsRefused {
    const summary = rejected.map((r) => `<${r.recipient}>: ${r.error.code} ${r.error.message}`).join("; ")
    return new RecipientsRefused({ message: `all recipients were refused: ${summary}`, rejected })
  }
}

/** Everything a client operation can fail with. */
export type ClientError = SmtpError | TransportError | SmtpProtocolError | SmtpClientError

export const invalidArgument = (message: string) => new SmtpClientError({ reason: "InvalidArgument", message })
export const unsupported = (message: string) => new SmtpClientError({ reason: "Unsupported", message })
