/**
 * The mail transaction's commands: HELO/EHLO/LHLO, MAIL, RCPT, DATA and RSET, and handing a
 * message body to the backend and answering it.
 */
import * as Effect from "effect/Effect"
import * as Address from "../../Address.ts"
import type { Address as AddressT } from "../../Address.ts"
import type { MessageBody } from "../../Backend.ts"
import type * as Command from "../../Command.ts"
import * as MailOptions from "../../MailOptions.ts"
import type * as SmtpError from "../../SmtpError.ts"
import type { TransportError } from "../../Transport.ts"
import type { DotDecoder } from "../codec/DotCodec.ts"
import type * as LineReader from "../codec/LineReader.ts"
import type { Bdat } from "./Chunking.ts"
import type { Conversation } from "./Conversation.ts"
import * as Metrics from "./Metrics.ts"
import { isNegative, type ServerReplies } from "./Replies.ts"
import type { Outcome, Step } from "./Step.ts"
import * as Xclient from "./Xclient.ts"

type Recipient = { readonly to: AddressT; readonly options: MailOptions.RcptOptions }

export interface Transaction {
  readonly from: AddressT | null
  readonly options: MailOptions.MailOptions
  readonly rcpts: Array<Recipient>
  bdat: Bdat | undefined
  /** BDAT bytes announced so far. */
  chunked: number
  /** The line rules of a text message sent with BDAT: one decoder for all its chunks. */
  text: DotDecoder | undefined
}

/** The client's name as a reply may echo it: printable ASCII, at most 255 characters. */
const echoName = (name: string): string => {
  let safe = name.length <= 255
  for (let i = 0; safe && i < name.length; i++) {
    const c = name.charCodeAt(i)
    safe = c > 32 && c < 127
  }
  if (safe) return name
  let out = ""
  for (let i = 0; i < name.length && out.length < 255; i++) {
    const c = name.charCodeAt(i)
    out += c > 32 && c < 127 ? name[i] : "?"
  }
  return out
}

export function hello(self: Conversation, cmd: Command.Helo | Command.Ehlo | Command.Lhlo): Step {
  if (self.lmtp && cmd._tag !== "Lhlo") return self.r.lmtpNeedsLhlo
  if (!self.lmtp && cmd._tag === "Lhlo") return self.r.smtpRefusesLhlo
  const greet = () => {
    self.helo = cmd.domain
    self.extended = cmd._tag !== "Helo"
    self.pipelining = self.extended && self.c.extensions.pipelining
    return self.extended ? ehloReply(self) : self.r.format(250, undefined, `${self.c.domain} Hello ${echoName(self.helo)}`)
  }
  const reset = self.resetTransaction()
  return reset === undefined ? greet() : Effect.map(reset, greet)
}

function ehloReply(self: Conversation): string {
  const c = self.c
  const ext = c.extensions
  const tls = self.transport.tls() !== undefined
  const lines = [`${c.domain} Hello ${echoName(self.helo!)}`]
  if (ext.pipelining) lines.push("PIPELINING")
  if (c.maxMessageBytes > 0) lines.push(`SIZE ${c.maxMessageBytes}`)
  if (ext.eightBitMime) lines.push("8BITMIME")
  if (ext.enhancedStatusCodes) lines.push("ENHANCEDSTATUSCODES")
  if (ext.chunking) lines.push("CHUNKING")
  if (ext.chunking && ext.binaryMime) lines.push("BINARYMIME")
  if (ext.smtputf8) lines.push("SMTPUTF8")
  if (ext.requireTls && tls) lines.push("REQUIRETLS")
  if (ext.dsn) lines.push("DSN")
  if (ext.rrvs) lines.push("RRVS")
  if (ext.deliverBy) lines.push("DELIVERBY")
  if (ext.mtPriority) lines.push("MT-PRIORITY")
  if (ext.limits) lines.push(`LIMITS RCPTMAX=${c.maxRecipients}`)
  if (self.xclientAllowed) lines.push(Xclient.KEYWORD)
  if (c.tls !== undefined && !tls) lines.push("STARTTLS")
  const mechanisms = self.authMechanisms()
  if (mechanisms.length > 0 && self.authIdentity === undefined) lines.push(`AUTH ${mechanisms.join(" ")}`)
  let out = ""
  for (let i = 0; i < lines.length; i++) out += `250${i === lines.length - 1 ? " " : "-"}${lines[i]}\r\n`
  return out
}

export function mail(self: Conversation, cmd: Command.Mail): Step {
  const r = self.r
  if (self.helo === undefined) return r.heloFirst
  if (self.tx !== undefined) return r.senderAlreadySpecified
  if (self.c.requireTlsForMail && self.transport.tls() === undefined) return r.startTlsFirst
  // Also when the session offers no mechanism: then nobody may send (fail closed).
  if (self.c.requireAuth && self.authIdentity === undefined) return r.authRequired
  const enabled = self.session.auth === undefined
    ? self.mailEnabled
    : { ...self.mailEnabled, auth: self.authMechanisms().length > 0 }
  const parsed = MailOptions.parseMailParameters(cmd.params, enabled)
  if (parsed._tag === "Failure") return r.error(parsed.failure)
  // RFC 4954 5: from a client that has not authenticated, AUTH= is taken as AUTH=<>.
  const options = parsed.success.auth !== undefined && self.authIdentity === undefined
    ? { ...parsed.success, auth: null }
    : parsed.success
  if (cmd.from !== null && !options.smtputf8 && Address.isUtf8(cmd.from)) return r.utf8AddressNeedsSmtputf8
  if (options.size !== undefined && self.c.maxMessageBytes > 0 && options.size > self.c.maxMessageBytes) {
    return r.dataTooLarge
  }
  if (options.requireTls && self.transport.tls() === undefined) return r.requireTlsNeedsTls
  return self.call("mail", self.session.mail(cmd.from, options), () => {
    self.tx = { from: cmd.from, options, rcpts: [], bdat: undefined, chunked: 0, text: undefined }
    return r.senderOk
  })
}

export function rcpt(self: Conversation, cmd: Command.Rcpt): Step {
  const r = self.r
  const t = self.tx
  if (t === undefined) return r.mailFirst
  if (t.bdat !== undefined) return r.rcptDuringBdat
  if (t.rcpts.length >= self.c.maxRecipients) return r.tooManyRecipients
  const parsed = MailOptions.parseRcptParameters(cmd.params, self.mailEnabled)
  if (parsed._tag === "Failure") return r.error(parsed.failure)
  if (!t.options.smtputf8 && Address.isUtf8(cmd.to)) return r.utf8AddressNeedsSmtputf8
  const options = parsed.success
  return self.call("rcpt", self.session.rcpt(cmd.to, options), () => {
    t.rcpts.push({ to: cmd.to, options })
    return r.recipientOk
  })
}

export function data(self: Conversation): Step {
  const r = self.r
  const t = self.tx
  if (t === undefined) return r.mailFirst
  if (t.rcpts.length === 0) return r.rcptFirst
  if (t.bdat !== undefined) return r.dataDuringBdat
  if (t.options.body === "BINARYMIME") return r.binaryMimeNeedsBdat
  self.push(r.startMailInput)
  const receiveBody = () => receive(self, t, self.reader.dataBody(self.server.dataBody), "DATA")
  const flushed = self.flush()
  return flushed === undefined ? receiveBody() : Effect.flatMap(flushed, receiveBody)
}

/** A whole message body: delivered, read to its real end, answered. */
export function receive(self: Conversation, t: Transaction, body: LineReader.Body, transfer: "DATA" | "BDAT"): Effect.Effect<Outcome, TransportError> {
  return Effect.flatMap(
    deliver(self, t, body.stream, transfer),
    (replies) => Effect.flatMap(body.drain, () => finishMessage(self, t, replies, body.violation(), body.bytes()))
  )
}

/** Hands a body to the backend: one reply (SMTP) or one per recipient (LMTP). */
export function deliver(self: Conversation, t: Transaction, body: MessageBody, transfer: "DATA" | "BDAT"): Effect.Effect<ReadonlyArray<string>> {
  const delivering = deliverBody(self, t, body)
  return self.traced
    ? Effect.withSpan(delivering, "smtp.transaction", {
      attributes: { "smtp.recipients": t.rcpts.length, "smtp.transfer": transfer },
      captureStackTrace: false
    })
    : delivering
}

/** LMTP's reply for one recipient whose copy the backend took. */
const delivered = (r: ServerReplies, rcpt: AddressT) => r.format(250, [2, 0, 0], `<${rcpt}> delivered`)

function deliverBody(self: Conversation, t: Transaction, body: MessageBody): Effect.Effect<ReadonlyArray<string>> {
  const r = self.r
  const session = self.session
  if (self.lmtp && session.lmtpData !== undefined) {
    const rcpts = t.rcpts.map((x) => x.to)
    return Effect.matchEffect(session.lmtpData(body, rcpts) as Effect.Effect<ReadonlyArray<SmtpError.SmtpError | undefined>, unknown>, {
      onFailure: (e) => Effect.as(self.logFailure("lmtpData", e), rcpts.map(() => self.failureReply(e))),
      onSuccess: (statuses) =>
        Effect.succeed(rcpts.map((rcpt, i) => {
          // A recipient the backend gave no status for was not delivered: say so (451), so
          // the client retries rather than the message being silently lost.
          if (i >= statuses.length) return r.localError
          const status = statuses[i]
          return status === undefined ? delivered(r, rcpt) : r.error(status)
        }))
    })
  }
  return Effect.matchEffect(session.data(body) as Effect.Effect<void, unknown>, {
    onFailure: (e): Effect.Effect<ReadonlyArray<string>> => {
      const failed = self.failureReply(e)
      return Effect.as(self.logFailure("data", e), self.lmtp ? t.rcpts.map(() => failed) : [failed])
    },
    onSuccess: () => self.lmtp ? Effect.succeed(t.rcpts.map((x) => delivered(r, x.to))) : self.server.accepted
  })
}

/** The body's own verdict (too large, bare line endings) wins over the backend's. */
export function finishMessage(
  self: Conversation,
  t: Transaction,
  replies: ReadonlyArray<string>,
  violation: SmtpError.SmtpError | undefined,
  bytes: number
): Effect.Effect<Outcome> {
  self.count(Metrics.bytes, bytes)
  if (self.trace !== undefined) self.trace.push(`C<message: ${bytes} bytes>`)
  const final = violation === undefined
    ? replies
    : t.rcpts.slice(0, self.lmtp ? t.rcpts.length : 1).map(() => self.r.error(violation))
  if (violation === undefined && final.some((x) => !isNegative(x))) {
    self.count(Metrics.messages, 1)
    self.junkCommands = 0
  }
  self.tx = undefined
  // The outcome of a message is not a protocol error: it never counts towards the error
  // limits (an LMTP message refused for 25 recipients must still get all 25 replies).
  for (const x of final) self.push(x)
  // The replies are settled before reset runs: whatever reset does cannot change them.
  const reset = self.resetAfterMessage()
  return reset === undefined ? Effect.succeed(undefined) : Effect.as(reset, undefined)
}

/** A BDAT message that failed before its last chunk: one reply, to that chunk, and it is over. */
export function abandonMessage(self: Conversation, reply: string, bytes: number): Effect.Effect<Outcome> {
  self.count(Metrics.bytes, bytes)
  if (self.trace !== undefined) self.trace.push(`C<message, abandoned: ${bytes} bytes>`)
  self.tx = undefined
  self.push(reply)
  const reset = self.resetAfterMessage()
  return reset === undefined ? Effect.succeed(undefined) : Effect.as(reset, undefined)
}

export function rset(self: Conversation): Step {
  const reset = self.resetTransaction()
  return reset === undefined ? self.r.ok : Effect.as(reset, self.r.ok)
}
