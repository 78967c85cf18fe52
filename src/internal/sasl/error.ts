/**
 * The one error of every SASL exchange, the helpers the mechanisms build it with, and its
 * mapping to RFC 4954 replies. Re-exported by `Sasl`.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { SmtpError } from "../../SmtpError.ts"
import type { MechanismName } from "../../Sasl.ts"

/**
 * Why an exchange failed.
 * - Server side: `MalformedResponse` (bad base64, field counts, NUL, syntax), `AuthenticationFailed`,
 *   `Cancelled` (the client sent `*`), `TooLong`, `Unexpected` (a response out of sequence),
 *   `TemporaryFailure` (a backend or crypto failure), `EncryptionRequired`, `UnknownMechanism`.
 * - Client side: `MalformedChallenge` (the server sent something the mechanism cannot use),
 *   `ServerVerificationFailed` (SCRAM: the server did not prove it knows the password),
 *   `InvalidCredentials` (the caller's own credentials cannot be sent, e.g. a NUL in a PLAIN password).
 */
export type SaslErrorReason =
  | "MalformedResponse"
  | "AuthenticationFailed"
  | "Cancelled"
  | "TooLong"
  | "Unexpected"
  | "TemporaryFailure"
  | "EncryptionRequired"
  | "UnknownMechanism"
  | "MalformedChallenge"
  | "ServerVerificationFailed"
  | "InvalidCredentials"

/** The JSON error of an OAUTHBEARER (RFC 7628 3.2.2) or XOAUTH2 failure challenge. */
export interface OAuthErrorDetails {
  /** The OAuth error, e.g. "invalid_token" (RFC 6750 3.1), or an HTTP-like status. */
  readonly status: string
  /** The scope the token would need. */
  readonly scope?: string | undefined
  /** The authorization schemes the server takes. */
  readonly schemes?: string | undefined
  /** Where the client can discover how to get a new token (OpenID Connect discovery). */
  readonly openidConfiguration?: string | undefined
}

/**
 * A failed SASL step. `message` is for logs and never holds a secret; what the peer sees
 * comes from {@link toSmtpError}, which uses fixed texts.
 */
export class SaslError extends Data.TaggedError("SaslError")<{
  /** Why, as `SaslErrorReason` lists; decides the reply (see `toSmtpError`). */
  readonly reason: SaslErrorReason
  /** What happened, for logs. */
  readonly message: string
  /** The mechanism it happened in, when there is one. */
  readonly mechanism?: MechanismName | undefined
  /** OAUTHBEARER/XOAUTH2: what a bearer verifier wants the client told (server), or what the server said (client). */
  readonly oauth?: OAuthErrorDetails | undefined
  /** The underlying failure (a verifier's, a crypto operation's), when there is one. */
  readonly cause?: unknown
}> {}

export const saslError = (reason: SaslErrorReason, message: string, mechanism?: MechanismName): SaslError =>
  new SaslError({ reason, message, mechanism })

export const fail = (reason: SaslErrorReason, message: string, mechanism?: MechanismName): Effect.Effect<never, SaslError> =>
  Effect.fail(saslError(reason, message, mechanism))

/** A crypto operation failed: nothing the peer did, so a temporary failure (454). */
export const cryptoFailure = (mechanism: MechanismName) => (cause: unknown): SaslError =>
  new SaslError({ reason: "TemporaryFailure", message: "cryptographic operation failed", mechanism, cause })

/** The failure for a client's `*` (501 5.0.0). */
export const cancelled = (mechanism?: MechanismName): SaslError =>
  saslError("Cancelled", "the client cancelled the exchange", mechanism)

/** The failure for an over-long response line (500 5.5.6). */
export const tooLong = (mechanism?: MechanismName): SaslError => saslError("TooLong", "response too long", mechanism)

// Built once: SmtpError validates its fields when constructed.
const replies = {
  MalformedResponse: SmtpError.of(501, [5, 5, 2], "Malformed authentication response"),
  AuthenticationFailed: SmtpError.of(535, [5, 7, 8], "Authentication credentials invalid"),
  Cancelled: SmtpError.of(501, [5, 0, 0], "Authentication cancelled"),
  TooLong: SmtpError.of(500, [5, 5, 6], "Authentication exchange line is too long"),
  Unexpected: SmtpError.of(501, [5, 5, 2], "Unexpected authentication response"),
  TemporaryFailure: SmtpError.of(454, [4, 7, 0], "Temporary authentication failure"),
  EncryptionRequired: SmtpError.of(538, [5, 7, 11], "Encryption required for requested authentication mechanism"),
  UnknownMechanism: SmtpError.of(504, [5, 5, 4], "Unrecognized authentication type")
} as const

/**
 * The SMTP reply for a failed exchange (RFC 4954 sections 4 and 6). The texts are fixed so
 * that nothing from a verifier or the parser reaches the peer. Client-side reasons never
 * arise on a server; they map to 454.
 */
export const toSmtpError = (error: SaslError): SmtpError => {
  switch (error.reason) {
    case "MalformedResponse":
    case "AuthenticationFailed":
    case "Cancelled":
    case "TooLong":
    case "Unexpected":
    case "TemporaryFailure":
    case "EncryptionRequired":
    case "UnknownMechanism":
      return replies[error.reason]
    case "MalformedChallenge":
    case "ServerVerificationFailed":
    case "InvalidCredentials":
      return replies.TemporaryFailure
  }
}
