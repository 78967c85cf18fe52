/**
 * The typed failure of SMTP: what a backend fails with, what the server turns into a
 * reply, and what the client fails with when a server says no.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as EnhancedCode from "./EnhancedCode.ts"
import { Reply, ReplyCode } from "./Reply.ts"

/**
 * How the enhanced status code of an error is chosen:
 * - a code `[c, s, d]`: sent as is;
 * - `"unset"` (the default): the server fills in `X.0.0` from the reply code's class;
 * - `"none"`: no enhanced code is sent, even when ENHANCEDSTATUSCODES is on.
 */
export const EnhancedCodeChoice = Schema.Union([EnhancedCode.EnhancedCode, Schema.Literals(["unset", "none"])])
export type EnhancedCodeChoice = typeof EnhancedCodeChoice.Type

/**
 * A refusal: a reply code, an enhanced code, and a text. A backend fails with one to refuse
 * (that exact reply goes out); the client fails with one when the server said no.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as SmtpError from "effect-smtp/SmtpError"
 *
 * // In a backend's session: one of the common refusals, or a reply of your own.
 * const rcpt = (to: string) =>
 *   to.endsWith("@example.com")
 *     ? Effect.void
 *     : Effect.fail(SmtpError.SmtpError.of(550, [5, 7, 1], "Relaying denied"))
 * const data = () => Effect.fail(SmtpError.localError) // 451 4.3.0: try again later
 * ```
 */
export class SmtpError extends Schema.TaggedError<SmtpError>()("SmtpError", {
  /** 4xx or 5xx, second digit 0-5 (RFC 5321 4.2.1): every value is a valid reply. */
  code: ReplyCode.check(Schema.isGreaterThanOrEqualTo(400)),
  /** The enhanced code, or how to choose one (see `EnhancedCodeChoice`). */
  enhancedCode: EnhancedCodeChoice,
  /** The reply text; each line of it is a line of the reply. */
  message: Schema.String
}) {
  /** 4xx: the same command may succeed later. */
  get isTemporary(): boolean {
    return this.code < 500
  }

  /** The enhanced code that goes on the wire, after "unset" is filled in. */
  get resolvedEnhancedCode(): EnhancedCode.EnhancedCode | undefined {
    const e = this.enhancedCode
    return e === "none" ? undefined : e === "unset" ? EnhancedCode.defaultFor(this.code) : e
  }

  /** The reply for this error; a message with newlines becomes a multi-line reply. */
  toReply(options?: { readonly enhancedStatusCodes?: boolean }): Reply {
    const raw = this.message.split(/\r\n|\r|\n/)
    const lines: [string, ...Array<string>] = [raw[0]!, ...raw.slice(1)]
    const enhanced = options?.enhancedStatusCodes === false ? undefined : this.resolvedEnhancedCode
    // The fields were validated when the error was made; lines cannot hold CR or LF after the split.
    return new Reply(
      enhanced === undefined ? { code: this.code, lines } : { code: this.code, enhancedCode: enhanced, lines },
      { disableChecks: true }
    )
  }

  /** The error a client reports for a negative reply from a server. */
  static fromReply(reply: Reply): SmtpError {
    return new SmtpError({
      code: reply.code < 400 ? 554 : reply.code,
      enhancedCode: reply.enhancedCode ?? "none",
      message: reply.lines.join("\n")
    })
  }

  /** Shorthand: `SmtpError.of(550, [5, 1, 1], "No such user")`. */
  static of(code: number, enhancedCode: EnhancedCodeChoice, message: string): SmtpError {
    return new SmtpError({ code, enhancedCode, message })
  }
}

// The errors every server and backend reaches for (the same set go-smtp exports, and a few more).

/** 530 5.7.0: MAIL before AUTH, where AUTH is required. */
export const authRequired = SmtpError.of(530, [5, 7, 0], "Authentication required")
/** 535 5.7.8: wrong credentials. */
export const authFailed = SmtpError.of(535, [5, 7, 8], "Authentication credentials invalid")
/** 502 5.7.0: AUTH where it is not offered. */
export const authUnsupported = SmtpError.of(502, [5, 7, 0], "Authentication not supported")
/** 504 5.5.4: a SASL mechanism the server does not offer. */
export const authUnknownMechanism = SmtpError.of(504, [5, 5, 4], "Unrecognized authentication mechanism")
/** 538 5.7.11: a mechanism that needs TLS, asked for without it (RFC 4954). */
export const authEncryptionRequired = SmtpError.of(538, [5, 7, 11], "Encryption required for requested authentication mechanism")
/** 454 4.7.0: the credentials could not be checked now (a directory down). */
export const authTemporaryFailure = SmtpError.of(454, [4, 7, 0], "Temporary authentication failure")
/** 503 5.5.1: AUTH a second time in one session. */
export const authAlreadyDone = SmtpError.of(503, [5, 5, 1], "Already authenticated")
/** 552 5.3.4: the message is over the size limit. */
export const dataTooLarge = SmtpError.of(552, [5, 3, 4], "Maximum message size exceeded")
/** 452 4.5.3: one recipient too many for this transaction; the client sends the rest in another. */
export const tooManyRecipients = SmtpError.of(452, [4, 5, 3], "Too many recipients")
/** 503 5.5.1: a command out of order (RCPT before MAIL, DATA before RCPT). */
export const badSequence = SmtpError.of(503, [5, 5, 1], "Bad sequence of commands")
/** 501 5.5.4: arguments that do not parse. */
export const syntaxError = SmtpError.of(501, [5, 5, 4], "Syntax error in parameters or arguments")
/** 500 5.5.2: a verb the server does not know. */
export const unknownCommand = SmtpError.of(500, [5, 5, 2], "Command not recognized")
/** 502 5.5.1: a known command the server does not do (EXPN, TURN). */
export const commandUnsupported = SmtpError.of(502, [5, 5, 1], "Command not supported")
/** 555 5.5.4: a MAIL or RCPT parameter that is unknown or not offered. */
export const parameterNotRecognized = SmtpError.of(555, [5, 5, 4], "MAIL FROM/RCPT TO parameter not recognized or not supported")
/** 550 5.1.1: no such recipient here. */
export const mailboxUnavailable = SmtpError.of(550, [5, 1, 1], "Mailbox unavailable")
/** 451 4.3.0: something went wrong on this side; the client tries again later. */
export const localError = SmtpError.of(451, [4, 3, 0], "Requested action aborted: local error in processing")
/** 554 5.0.0: refused, with no more specific reason. */
export const transactionFailed = SmtpError.of(554, [5, 0, 0], "Transaction failed")
/** 530 5.7.0: this needs STARTTLS first. */
export const tlsRequired = SmtpError.of(530, [5, 7, 0], "Must issue a STARTTLS command first")
/** 530 5.7.10: REQUIRETLS asked for where it cannot be honoured (RFC 8689). */
export const requireTlsNotAvailable = SmtpError.of(530, [5, 7, 10], "REQUIRETLS needed")
/** 421 4.3.2: the server is going away; the connection closes after this reply. */
export const serviceNotAvailable = SmtpError.of(421, [4, 3, 2], "Service not available, closing transmission channel")
