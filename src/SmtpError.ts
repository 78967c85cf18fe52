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

export class SmtpError extends Schema.TaggedError<SmtpError>()("SmtpError", {
  /** 4xx or 5xx, second digit 0-5 (RFC 5321 4.2.1): every value is a valid reply. */
  code: ReplyCode.check(Schema.isGreaterThanOrEqualTo(400)),
  enhancedCode: EnhancedCodeChoice,
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

  /** Shorthand: `SmtpError.make(550, [5, 1, 1], "No such user")`. */
  static of(code: number, enhancedCode: EnhancedCodeChoice, message: string): SmtpError {
    return new SmtpError({ code, enhancedCode, message })
  }
}

// The errors every server and backend reaches for (the same set go-smtp exports, and a few more).
export const authRequired = SmtpError.of(530, [5, 7, 0], "Authentication required")
export const authFailed = SmtpError.of(535, [5, 7, 8], "Authentication credentials invalid")
export const authUnsupported = SmtpError.of(502, [5, 7, 0], "Authentication not supported")
export const authUnknownMechanism = SmtpError.of(504, [5, 5, 4], "Unrecognized authentication mechanism")
export const authEncryptionRequired = SmtpError.of(538, [5, 7, 11], "Encryption required for requested authentication mechanism")
export const authTemporaryFailure = SmtpError.of(454, [4, 7, 0], "Temporary authentication failure")
export const authAlreadyDone = SmtpError.of(503, [5, 5, 1], "Already authenticated")
export const dataTooLarge = SmtpError.of(552, [5, 3, 4], "Maximum message size exceeded")
export const tooManyRecipients = SmtpError.of(452, [4, 5, 3], "Too many recipients")
export const badSequence = SmtpError.of(503, [5, 5, 1], "Bad sequence of commands")
export const syntaxError = SmtpError.of(501, [5, 5, 4], "Syntax error in parameters or arguments")
export const unknownCommand = SmtpError.of(500, [5, 5, 2], "Command not recognized")
export const commandUnsupported = SmtpError.of(502, [5, 5, 1], "Command not supported")
export const parameterNotRecognized = SmtpError.of(555, [5, 5, 4], "MAIL FROM/RCPT TO parameter not recognized or not supported")
export const mailboxUnavailable = SmtpError.of(550, [5, 1, 1], "Mailbox unavailable")
export const localError = SmtpError.of(451, [4, 3, 0], "Requested action aborted: local error in processing")
export const transactionFailed = SmtpError.of(554, [5, 0, 0], "Transaction failed")
export const tlsRequired = SmtpError.of(530, [5, 7, 0], "Must issue a STARTTLS command first")
export const requireTlsNotAvailable = SmtpError.of(530, [5, 7, 10], "REQUIRETLS needed")
export const serviceNotAvailable = SmtpError.of(421, [4, 3, 2], "Service not available, closing transmission channel")
