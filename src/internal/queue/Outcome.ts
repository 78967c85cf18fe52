/**
 * What one delivery attempt did to each of the recipients it was for: accepted (delivered),
 * refused for now (retried later, alone), or refused for good. A failure of the attempt as a
 * whole applies to every recipient alike.
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import { RateLimiterError } from "effect/persistence/RateLimiter"
import * as EnhancedCode from "../../EnhancedCode.ts"
import type { Reply } from "../../Reply.ts"
import { RecipientsRefused, type SendResult, SmtpClientError, SmtpProtocolError } from "../../SmtpClient.ts"
import { SmtpError } from "../../SmtpError.ts"
import { TransportError } from "../../Transport.ts"
import type { DeliveryFailure } from "./Ledger.ts"

interface Refusal {
  readonly address: string
  readonly error: DeliveryFailure
}

export interface Outcome {
  readonly delivered: ReadonlyArray<{ readonly address: string; readonly reply: string }>
  readonly deferred: ReadonlyArray<Refusal>
  readonly failed: ReadonlyArray<Refusal>
  /** The failure that ended the attempt as a whole, if one did. */
  readonly error: DeliveryFailure | undefined
}

/** A reply as one line of text: "250 2.0.0 OK queued as 1234". */
const replyText = (reply: Reply): string =>
  [String(reply.code), reply.enhancedCode === undefined ? "" : EnhancedCode.format(reply.enhancedCode), ...reply.lines]
    .filter((part) => part !== "")
    .join(" ")

const refused = (e: SmtpError): DeliveryFailure => {
  const enhanced = e.resolvedEnhancedCode
  return enhanced === undefined
    ? { kind: "Refused", code: e.code, message: e.message }
    : { kind: "Refused", code: e.code, enhancedCode: EnhancedCode.format(enhanced), message: e.message }
}

/**
 * A failure of a whole attempt, and whether trying again later may help. Unlike
 * `SmtpClient.isTemporary`, a failed TLS handshake and a protocol error are temporary here,
 * as in an MTA: the server may be fixed before the message expires.
 */
const failureOf = (error: unknown): { readonly failure: DeliveryFailure; readonly temporary: boolean } => {
  if (error instanceof SmtpError) return { failure: refused(error), temporary: error.isTemporary }
  if (error instanceof TransportError) {
    return { failure: { kind: "Connection", message: `${error.reason}: ${error.message}` }, temporary: true }
  }
  if (error instanceof SmtpProtocolError) {
    return { failure: { kind: "Protocol", message: `${error.reason}: ${error.message}` }, temporary: true }
  }
  if (error instanceof SmtpClientError) {
    // Nothing was sent: an invalid address or parameter, or a server without the extension
    // the message needs, will not change by waiting; a closed client will.
    return { failure: { kind: "Client", message: error.message }, temporary: error.reason === "Closed" }
  }
  if (error instanceof RateLimiterError) return { failure: { kind: "RateLimit", message: error.message }, temporary: true }
  return { failure: { kind: "Defect", message: String(error) }, temporary: true }
}

/** Sorts the attempt's recipients by what happened to them. */
export const classify = (
  recipients: ReadonlyArray<string>,
  exit: Exit.Exit<SendResult, unknown>
): Outcome => {
  if (Exit.isSuccess(exit)) {
    const reply = replyText(exit.value.reply)
    const deferred: Array<Refusal> = []
    const failed: Array<Refusal> = []
    for (const r of exit.value.rejected) {
      ;(r.error.isTemporary ? deferred : failed).push({ address: r.recipient, error: refused(r.error) })
    }
    return { delivered: exit.value.accepted.map((a) => ({ address: a.recipient, reply })), deferred, failed, error: undefined }
  }
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined && failure.error instanceof RecipientsRefused) {
    const deferred: Array<Refusal> = []
    const failed: Array<Refusal> = []
    for (const r of failure.error.rejected) {
      ;(r.error.isTemporary ? deferred : failed).push({ address: r.recipient, error: refused(r.error) })
    }
    return { delivered: [], deferred, failed, error: (deferred[0] ?? failed[0])?.error }
  }
  const { failure: error, temporary } = failure !== undefined
    ? failureOf(failure.error)
    : { failure: { kind: "Defect" as const, message: Cause.pretty(exit.cause) }, temporary: true }
  const all = recipients.map((address) => ({ address, error }))
  return temporary
    ? { delivered: [], deferred: all, failed: [], error }
    : { delivered: [], deferred: [], failed: all, error }
}
