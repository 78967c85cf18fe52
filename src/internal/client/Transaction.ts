/**
 * Transactions on a client session: MAIL, RCPT, the body by DATA or BDAT, LMTP's reply per
 * recipient, and `send`, the whole transaction with PIPELINING (RFC 2920).
 *
 * `send` prepares every line and the body's wire form before the first byte goes out. With
 * PIPELINING, a body in memory goes in two writes (the envelope with DATA, then the body) or,
 * by BDAT when it fits one chunk, in one (the envelope and a single BDAT LAST).
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import * as Address from "../../Address.ts"
import type * as MailOptions from "../../MailOptions.ts"
import type { Reply } from "../../Reply.ts"
import { SmtpError } from "../../SmtpError.ts"
import { TransportError } from "../../Transport.ts"
import * as ClientBody from "./Body.ts"
import * as Envelope from "./Envelope.ts"
import * as Slab from "./Slab.ts"
import {
  type ClientError,
  invalidArgument,
  RecipientsRefused,
  type RejectedRecipient,
  type SmtpClientError,
  type SmtpProtocolError,
  unsupported
} from "./Errors.ts"
import { exitOf, expect, failure, is2xx, isFatal, type Session, chain, unexpected } from "./Session.ts"

/** BDAT chunk size when none is given. */
export const DEFAULT_CHUNK_SIZE = 256 * 1024

/** A recipient with its RCPT TO parameters. */
export interface Recipient {
  /** The address, without angle brackets. */
  readonly address: string
  /** RCPT TO parameters: DSN's NOTIFY and ORCPT, RRVS. */
  readonly options?: MailOptions.RcptOptions | undefined
}

/** A message and its envelope, for `send`. */
export interface Message<E = never, R = never> {
  /** The reverse-path; `null` sends `MAIL FROM:<>` (bounces, DSNs). */
  readonly from: string | null
  /** One recipient or several, each an address or a `Recipient` with its parameters. */
  readonly to: string | Recipient | ReadonlyArray<string | Recipient>
  /** The whole message (headers and body). Line endings are normalised to CRLF unless BODY=BINARYMIME. */
  readonly body: ClientBody.Body<E, R>
  /**
   * MAIL FROM parameters. SIZE is filled in for a body in memory, BODY=8BITMIME when it has
   * 8-bit bytes and the server offers it, SMTPUTF8 when an address is non-ASCII.
   */
  readonly mailOptions?: MailOptions.MailOptions | undefined
  /**
   * `"data"`, `"bdat"` (CHUNKING), or `"auto"` (the default): BDAT for BODY=BINARYMIME, which
   * needs it, DATA otherwise.
   *
   * With PIPELINING, BDAT sends the first chunk with the envelope: a body in memory of up to
   * `chunkSize` bytes takes one round trip instead of DATA's two. But the body then reaches the
   * server before it has accepted the recipients, so a send interrupted (or timed out) while
   * waiting for those replies may still be delivered; with DATA the body goes only after the
   * 354. That is why `"auto"` does not pick BDAT for other bodies.
   */
  readonly transfer?: "auto" | "data" | "bdat" | undefined
  /** BDAT chunk size in bytes. Default 256 KiB. */
  readonly chunkSize?: number | undefined
}

/** A recipient the server accepted: its RCPT reply (SMTP) or its reply after the message (LMTP). */
export interface AcceptedRecipient {
  /** The address, as given. */
  readonly recipient: string
  /** The server's reply for it. */
  readonly reply: Reply
}

/** What became of a message: who took it, who refused it, and the final reply. */
export interface SendResult {
  /** Recipients the message went to, in the order given. */
  readonly accepted: ReadonlyArray<AcceptedRecipient>
  /** Recipients refused at RCPT, or (LMTP) after the message; the message still went to the others. */
  readonly rejected: ReadonlyArray<RejectedRecipient>
  /** The reply that accepted the message (LMTP: the first recipient's). */
  readonly reply: Reply
}

/** LMTP: what happened to the message for one recipient. */
export interface LmtpStatus {
  /** The address, as given at RCPT. */
  readonly recipient: string
  /** The server's reply for it after the message. */
  readonly reply: Reply
  /** Set when the reply is negative. */
  readonly error: SmtpError | undefined
}

const recipientsOf = (to: Message["to"]): ReadonlyArray<string | Recipient> =>
  typeof to === "string" || !Array.isArray(to) ? [to as string | Recipient] : to as ReadonlyArray<string | Recipient>

const NO_OPTIONS: MailOptions.RcptOptions = {}

const checkChunkSize = (size: number | undefined): Result.Result<number, SmtpClientError> => {
  const n = size ?? DEFAULT_CHUNK_SIZE
  return Number.isSafeInteger(n) && n > 0 ? Result.succeed(n) : Result.fail(invalidArgument("the BDAT chunk size must be a positive integer"))
}

const bdatHeader = (chunk: ClientBody.Chunk) => `BDAT ${chunk.bytes.length}${chunk.last ? " LAST" : ""}\r\n`

const withPrefix = Slab.withText

/** What the traffic log shows for a write of commands followed by message bytes. */
const shownWith = (commands: string, bytes: number) =>
  `${commands.replace(/\r\n$/, "").split("\r\n").join(" | ")} <${bytes} bytes>`

const fromReply = (r: Reply): Exit.Exit<never, SmtpError> => Exit.fail(SmtpError.fromReply(r))

// --- the commands one by one ---

export const mail = (s: Session, from: string | null, options: MailOptions.MailOptions): Effect.Effect<Reply, ClientError> => {
  const m = Envelope.mailCommand(from, options, s.extensions, s.addresses)
  if (Result.isFailure(m)) return Exit.fail(m.failure)
  return chain(s.wire.send(m.success.line, s.t.mail), () =>
    chain(s.reply(s.t.mail, "MAIL FROM"), (r) => {
      const checked = expect(r, is2xx, "MAIL FROM")
      if (Exit.isSuccess(checked)) s.tx = { smtputf8: m.success.smtputf8, binary: m.success.binary, accepted: [] }
      return checked
    }))
}

export const rcpt = (s: Session, to: string, options: MailOptions.RcptOptions): Effect.Effect<Reply, ClientError> => {
  const c = Envelope.rcptCommand(to, options, s.extensions, s.tx?.smtputf8 ?? false, s.addresses)
  if (Result.isFailure(c)) return Exit.fail(c.failure)
  return chain(s.wire.send(c.success.line, s.t.rcpt), () =>
    chain(s.reply(s.t.rcpt, "RCPT TO"), (r) => {
      const checked = expect(r, is2xx, "RCPT TO")
      if (Exit.isSuccess(checked)) s.tx?.accepted.push(c.success.address)
      return checked
    }))
}

/**
 * The replies after the final dot or the last chunk: one (SMTP), or one per accepted recipient
 * (LMTP), handed to `then`. (A continuation rather than a result: after a wait for the server,
 * one step of the fiber instead of two.)
 */
const finalReplies = <B, E2, R2>(
  s: Session,
  count: number,
  first: Reply | undefined,
  then: (replies: ReadonlyArray<Reply>) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, ClientError | E2, R2> => {
  const out: Array<Reply> = first === undefined ? [] : [first]
  const n = s.lmtp ? Math.max(count, 1) : 1
  const loop = (): Effect.Effect<B, ClientError | E2, R2> => {
    while (out.length < n) {
      const r = s.reply(s.t.dataTermination, "the message")
      const done = exitOf(r)
      if (done === undefined) return Effect.flatMap(r, add)
      if (Exit.isFailure(done)) return failure(done)
      if (done.value.code === 421) return fromReply(done.value)
      out.push(done.value)
    }
    s.tx = undefined
    return then(out)
  }
  const add = (r: Reply) => {
    if (r.code === 421) return fromReply(r)
    out.push(r)
    return loop()
  }
  return loop()
}

/**
 * The body after a 354, then the replies to it for `then`. A body that fails half-way cannot
 * be ended cleanly: the connection is closed.
 */
const dataBody = <E, R, B, E2, R2>(
  s: Session,
  body: ClientBody.Body<E, R> | ClientBody.PreparedData,
  recipients: number,
  then: (replies: ReadonlyArray<Reply>) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, ClientError | E | E2, R | R2> => {
  if (typeof body === "object" && "wire" in body) {
    // In memory: only the connection can fail, and that ends it anyway. A small body is one
    // write, made now (this runs once the 354 is in).
    const written = body.wire !== undefined
      ? s.wire.send(body.wire, s.t.dataBlock)
      : ClientBody.writePreparedData(body, s.wire.send, s.t.dataBlock)
    return chain(written, () => finalReplies(s, recipients, undefined, then))
  }
  return ClientBody.writeDataBody(body, s.wire.send, s.t.dataBlock).pipe(
    Effect.tapError((e) =>
      s.breakWith(isFatal(e) ? e : new TransportError({
        reason: "Closed",
        message: "the message body failed; the connection was closed so that no partial message is delivered"
      }))
    ),
    Effect.andThen(Effect.suspend(() => finalReplies(s, recipients, undefined, then)))
  )
}

/**
 * Sends BDAT chunks until the last. `sent` chunks went out already (pipelined). A negative
 * reply to a chunk, or a body failing between chunks, abandons the transaction with RSET; so
 * does a body failing before its first chunk when `send` opened the transaction (`owned`):
 * after `client.bdat` the caller, who sent MAIL and RCPT, decides.
 */
const bdatChunks = <E, R>(
  s: Session,
  next: Effect.Effect<ClientBody.Chunk, E, R>,
  recipients: number,
  sent: number,
  owned: boolean
): Effect.Effect<ReadonlyArray<Reply>, ClientError | E, R> =>
  Effect.gen(function*() {
    let chunks = sent
    while (true) {
      const chunk = yield* next.pipe(Effect.tapError(() => (chunks > 0 || owned ? s.resetQuietly() : Effect.void)))
      const header = bdatHeader(chunk)
      yield* s.wire.send(withPrefix(header, chunk.bytes), s.t.dataBlock, `${header.trim()} <${chunk.bytes.length} bytes>`)
      chunks++
      if (chunk.last) return yield* finalReplies(s, recipients, undefined, Exit.succeed)
      const r = yield* s.reply(s.t.dataBlock, "BDAT")
      if (r.code >= 400 && r.code !== 421) {
        yield* s.resetQuietly()
        return yield* fromReply(r)
      }
      yield* expect(r, is2xx, "BDAT")
    }
  })

const dataCommand = (s: Session): Effect.Effect<Reply, ClientError> => {
  if (s.tx?.binary === true) return Exit.fail(invalidArgument("BODY=BINARYMIME needs BDAT"))
  return chain(s.command("DATA", s.t.dataInitiation, "DATA"), (r) => expect(r, (code) => code === 354, "DATA"))
}

/** SMTP: the single final reply, positive or the transaction's error. */
const smtpFinal = (replies: ReadonlyArray<Reply>) => expect(replies[0]!, is2xx, "the message")

const lmtpStatuses = (
  recipients: ReadonlyArray<string>,
  replies: ReadonlyArray<Reply>
): Exit.Exit<Array<LmtpStatus>, SmtpProtocolError> => {
  const out: Array<LmtpStatus> = []
  for (let i = 0; i < recipients.length; i++) {
    const recipient = recipients[i]!
    const r = replies[i]!
    if (is2xx(r.code)) out.push({ recipient, reply: r, error: undefined })
    else if (r.code >= 400) out.push({ recipient, reply: r, error: SmtpError.fromReply(r) })
    else return Exit.fail(unexpected(r, "the message"))
  }
  return Exit.succeed(out)
}

const chunkerFor = <E, R>(s: Session, body: ClientBody.Body<E, R>, chunkSize: number | undefined, binary: boolean) =>
  Effect.gen(function*() {
    if (!s.has("CHUNKING")) return yield* unsupported("the server does not offer CHUNKING (BDAT)")
    const size = yield* Effect.fromResult(checkChunkSize(chunkSize))
    return yield* ClientBody.chunker(body, { size, binary })
  })

export const data = <E, R>(s: Session, body: ClientBody.Body<E, R>): Effect.Effect<Reply, ClientError | E, R> => {
  if (s.lmtp) return Exit.fail(unsupported("an LMTP client sends the message with lmtpData"))
  return chain(dataCommand(s), () => dataBody(s, body, 1, smtpFinal))
}

export const bdat = <E, R>(s: Session, body: ClientBody.Body<E, R>, chunkSize: number | undefined) =>
  Effect.scoped(Effect.gen(function*() {
    if (s.lmtp) return yield* unsupported("an LMTP client sends the message with lmtpData")
    const next = yield* chunkerFor(s, body, chunkSize, s.tx?.binary === true)
    return yield* smtpFinal(yield* bdatChunks(s, next, 1, 0, false))
  }))

export const lmtpData = <E, R>(s: Session, body: ClientBody.Body<E, R>, chunking: boolean, chunkSize: number | undefined) =>
  Effect.scoped(Effect.gen(function*() {
    if (!s.lmtp) return yield* unsupported("lmtpData is for LMTP clients; use data or bdat")
    const recipients = [...(s.tx?.accepted ?? [])]
    if (recipients.length === 0) return yield* invalidArgument("no recipient of this transaction was accepted")
    let replies: ReadonlyArray<Reply>
    if (chunking) {
      replies = yield* bdatChunks(s, yield* chunkerFor(s, body, chunkSize, s.tx?.binary === true), recipients.length, 0, false)
    } else {
      yield* dataCommand(s)
      replies = yield* dataBody(s, body, recipients.length, Exit.succeed)
    }
    return yield* lmtpStatuses(recipients, replies)
  }))

// --- send: the whole transaction ---

/** How the server took the envelope. */
interface Outcome {
  mailError: SmtpError | undefined
  readonly accepted: Array<AcceptedRecipient>
  readonly rejected: Array<RejectedRecipient>
}

/** Files a reply to MAIL (`i` = -1) or to RCPT `i`; a 421 or an odd reply ends the conversation. */
const fileReply = (
  o: Outcome,
  rcpts: ReadonlyArray<Envelope.RcptCommand>,
  i: number,
  r: Reply
): Exit.Failure<never, ClientError> | undefined => {
  if (r.code === 421) return fromReply(r) as Exit.Failure<never, ClientError>
  if (i < 0) {
    if (r.code >= 400) o.mailError = SmtpError.fromReply(r)
    else if (!is2xx(r.code)) return Exit.fail(unexpected(r, "MAIL FROM")) as Exit.Failure<never, ClientError>
  } else if (r.code >= 400) o.rejected.push({ recipient: rcpts[i]!.address, error: SmtpError.fromReply(r) })
  else if (!is2xx(r.code)) return Exit.fail(unexpected(r, "RCPT TO")) as Exit.Failure<never, ClientError>
  else o.accepted.push({ recipient: rcpts[i]!.address, reply: r })
  return undefined
}

/** Reads the replies to MAIL and each RCPT (pipelined), and hands how it went to `then`. */
const envelopeReplies = <B, E2, R2>(
  s: Session,
  rcpts: ReadonlyArray<Envelope.RcptCommand>,
  then: (o: Outcome) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, ClientError | E2, R2> => {
  const o: Outcome = { mailError: undefined, accepted: [], rejected: [] }
  let i = -1
  const loop = (): Effect.Effect<B, ClientError | E2, R2> => {
    while (i < rcpts.length) {
      const r = i < 0 ? s.reply(s.t.mail, "MAIL FROM") : s.reply(s.t.rcpt, "RCPT TO")
      const done = exitOf(r)
      if (done === undefined) return Effect.flatMap(r, filed)
      if (Exit.isFailure(done)) return failure(done)
      const stop = fileReply(o, rcpts, i++, done.value)
      if (stop !== undefined) return failure(stop)
    }
    return then(o)
  }
  const filed = (reply: Reply) => {
    const stop = fileReply(o, rcpts, i++, reply)
    return stop === undefined ? loop() : failure(stop)
  }
  return loop()
}

/** Ends a transaction that cannot carry a message: MAIL refused, or every recipient. */
const abandon = (s: Session, o: Outcome): Effect.Effect<never, ClientError | RecipientsRefused> => {
  if (o.mailError !== undefined) return Exit.fail(o.mailError)
  return chain(s.resetQuietly(), () => Exit.fail(RecipientsRefused.of(o.rejected)))
}

/** A 354 that should not have come (no recipient): send an empty message to no one, then go on. */
const swallowData = (s: Session): Effect.Effect<void, ClientError> =>
  chain(s.wire.send(".\r\n", s.t.dataBlock), () =>
    chain(s.reply(s.t.dataTermination, "the message"), (r) => r.code === 421 ? fromReply(r) : Exit.void))

const result = (s: Session, o: Outcome, replies: ReadonlyArray<Reply>): Effect.Effect<SendResult, ClientError | RecipientsRefused> => {
  if (!s.lmtp) {
    return chain(smtpFinal(replies), (reply): Exit.Exit<SendResult> => Exit.succeed({ accepted: o.accepted, rejected: o.rejected, reply }))
  }
  const statuses = lmtpStatuses(o.accepted.map((a) => a.recipient), replies)
  if (Exit.isFailure(statuses)) return failure(statuses)
  const accepted: Array<AcceptedRecipient> = []
  const rejected: Array<RejectedRecipient> = [...o.rejected]
  for (const st of statuses.value) {
    if (st.error === undefined) accepted.push({ recipient: st.recipient, reply: st.reply })
    else rejected.push({ recipient: st.recipient, error: st.error })
  }
  if (accepted.length === 0) return Exit.fail(RecipientsRefused.of(rejected))
  return Exit.succeed({ accepted, rejected, reply: accepted[0]!.reply })
}

/** A body in memory sent as one BDAT chunk: its first is its last. */
type WholeBody = ClientBody.Chunk & { readonly last: true }

/** A transaction ready to go: every line built and checked, and the body's form decided. */
interface Plan<E, R> {
  readonly mail: Envelope.MailCommand
  readonly rcpts: ReadonlyArray<Envelope.RcptCommand>
  /** DATA with a body in memory. */
  readonly data: ClientBody.PreparedData | undefined
  /** BDAT with a body in memory that is one chunk, the last. */
  readonly chunk: WholeBody | undefined
  /** BDAT with the body cut as it is read (a stream, or more than one chunk). */
  readonly chunked: boolean
  readonly body: ClientBody.Body<E, R>
}

const plan = <E, R>(s: Session, message: Message<E, R>): Result.Result<Plan<E, R>, SmtpClientError> => {
  const recipients = recipientsOf(message.to)
  if (recipients.length === 0) return Result.fail(invalidArgument("a message needs at least one recipient"))
  const bytes = ClientBody.bytesOf(message.body)
  const options: { -readonly [K in keyof MailOptions.MailOptions]: MailOptions.MailOptions[K] } = { ...message.mailOptions }
  const binary = options.body === "BINARYMIME"
  const transfer = message.transfer ?? "auto"
  const bdat = transfer === "bdat" || binary
  const chunkSize = bdat ? checkChunkSize(message.chunkSize) : undefined
  let data: ClientBody.PreparedData | undefined
  let chunk: WholeBody | undefined
  // Whether the body is 8-bit, when a pass over it for its size found out already.
  let eightBit: boolean | undefined
  if (bytes !== undefined) {
    if (chunkSize !== undefined) {
      if (Result.isSuccess(chunkSize) && bytes.length <= chunkSize.success) {
        const whole = ClientBody.wholeChunk(bytes, { binary })
        if (whole.length <= chunkSize.success) chunk = { bytes: whole, last: true }
      }
      if (options.size === undefined) {
        if (binary) options.size = bytes.length
        else if (chunk !== undefined) options.size = chunk.bytes.length
        else {
          const facts = ClientBody.inspect(bytes, { finalCrlf: false })
          options.size = facts.size
          eightBit = facts.eightBit
        }
      }
    } else {
      data = ClientBody.prepareData(bytes)
      options.size ??= data.size
      eightBit = data.eightBit
    }
    if (options.body === undefined && s.has("8BITMIME") && (eightBit ?? ClientBody.hasEightBit(bytes))) {
      options.body = "8BITMIME"
    }
  }
  for (const r of recipients) {
    if (Address.isUtf8(typeof r === "string" ? r : r.address)) options.smtputf8 = true
  }
  const mail = Envelope.mailCommand(message.from, options, s.extensions, s.addresses)
  if (Result.isFailure(mail)) return Result.fail(mail.failure)
  const rcpts: Array<Envelope.RcptCommand> = []
  for (const r of recipients) {
    const c = typeof r === "string"
      ? Envelope.rcptCommand(r, NO_OPTIONS, s.extensions, mail.success.smtputf8, s.addresses)
      : Envelope.rcptCommand(r.address, r.options ?? NO_OPTIONS, s.extensions, mail.success.smtputf8, s.addresses)
    if (Result.isFailure(c)) return Result.fail(c.failure)
    rcpts.push(c.success)
  }
  if (mail.success.binary && transfer === "data") return Result.fail(invalidArgument("BODY=BINARYMIME needs BDAT"))
  const chunked = bdat && chunk === undefined
  if (chunked || chunk !== undefined) {
    if (!s.has("CHUNKING")) return Result.fail(unsupported("the server does not offer CHUNKING (BDAT)"))
    if (chunkSize !== undefined && Result.isFailure(chunkSize)) return Result.fail(chunkSize.failure)
  }
  return Result.succeed({ mail: mail.success, rcpts, data, chunk, chunked, body: message.body })
}

/** With PIPELINING: the envelope and DATA in one write, the body in another (RFC 2920). */
const pipelinedData = <E, R>(s: Session, p: Plan<E, R>, envelope: string): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> =>
  chain(s.wire.send(envelope + "DATA\r\n", s.t.mail), () =>
    envelopeReplies(s, p.rcpts, (o) => {
      opened(s, p, o)
      const count = o.accepted.length
      return chain(s.reply(s.t.dataInitiation, "DATA"), (d): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> => {
        if (d.code === 421) return fromReply(d)
        if (o.mailError !== undefined || count === 0) return d.code === 354 ? chain(swallowData(s), () => abandon(s, o)) : abandon(s, o)
        if (d.code >= 400) return chain(s.resetQuietly(), () => fromReply(d))
        if (d.code !== 354) return Exit.fail(unexpected(d, "DATA"))
        return dataBody(s, p.data ?? p.body, count, (replies) => result(s, o, replies))
      })
    }))

/** With PIPELINING: the envelope and the first BDAT chunk in one write; the others after its reply. */
const pipelinedBdat = <E, R>(
  s: Session,
  p: Plan<E, R>,
  envelope: string,
  first: ClientBody.Chunk,
  next: Effect.Effect<ClientBody.Chunk, E, R> | undefined
): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> => {
  const commands = envelope + bdatHeader(first)
  const shown = s.config.logTraffic ? shownWith(commands, first.bytes.length) : undefined
  return chain(s.wire.send(withPrefix(commands, first.bytes), s.t.mail, shown), () =>
    envelopeReplies(s, p.rcpts, (o) => {
      opened(s, p, o)
      const count = o.accepted.length
      return chain(s.reply(first.last ? s.t.dataTermination : s.t.dataBlock, "BDAT"), (b): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> => {
        if (b.code === 421) return fromReply(b)
        if (o.mailError !== undefined || count === 0) return abandon(s, o)
        if (first.last) return finalReplies(s, count, b, (replies) => result(s, o, replies))
        if (b.code >= 400) return chain(s.resetQuietly(), () => fromReply(b))
        if (!is2xx(b.code)) return Exit.fail(unexpected(b, "BDAT"))
        return chain(bdatChunks(s, next!, count, 1, true), (replies) => result(s, o, replies))
      })
    }))
}

/** MAIL was accepted: a transaction is open (until the final reply or RSET). */
const opened = (s: Session, p: Plan<unknown, unknown>, o: Outcome) => {
  s.tx = o.mailError === undefined ? { smtputf8: p.mail.smtputf8, binary: p.mail.binary, accepted: [] } : undefined
}

/**
 * Without PIPELINING: each command waits for its reply. The body goes by BDAT as `first` (a
 * body in memory, whole in one chunk) or as the chunks `next` reads now, or else by DATA.
 */
const stepwise = <E, R>(
  s: Session,
  p: Plan<E, R>,
  first: WholeBody | undefined,
  next: Effect.Effect<ClientBody.Chunk, E, R> | undefined
): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> =>
  Effect.gen(function*() {
    const t = s.t
    const mr = yield* chain(s.wire.send(p.mail.line, t.mail), () => s.reply(t.mail, "MAIL FROM"))
    yield* expect(mr, is2xx, "MAIL FROM")
    s.tx = { smtputf8: p.mail.smtputf8, binary: p.mail.binary, accepted: [] }
    const o: Outcome = { mailError: undefined, accepted: [], rejected: [] }
    for (let i = 0; i < p.rcpts.length; i++) {
      const r = yield* chain(s.wire.send(p.rcpts[i]!.line, t.rcpt), () => s.reply(t.rcpt, "RCPT TO"))
      const stop = fileReply(o, p.rcpts, i, r)
      if (stop !== undefined) return yield* stop
    }
    if (o.accepted.length === 0) return yield* abandon(s, o)
    const count = o.accepted.length
    if (next !== undefined) return yield* result(s, o, yield* bdatChunks(s, next, count, 0, true))
    if (first !== undefined) {
      const header = bdatHeader(first)
      yield* s.wire.send(withPrefix(header, first.bytes), t.dataBlock, shownWith(header, first.bytes.length))
      return yield* finalReplies(s, count, undefined, (replies) => result(s, o, replies))
    }
    const d = yield* s.command("DATA", t.dataInitiation, "DATA")
    if (d.code >= 400 && d.code !== 421) {
      yield* s.resetQuietly()
      return yield* fromReply(d)
    }
    yield* expect(d, (code) => code === 354, "DATA")
    return yield* dataBody(s, p.data ?? p.body, count, (replies) => result(s, o, replies))
  })

/**
 * A whole transaction: MAIL, every RCPT, DATA or BDAT. Refused recipients are reported in
 * the result; when none is accepted it fails with `RecipientsRefused` and resets.
 */
export const send = <E, R>(s: Session, message: Message<E, R>): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> => {
  const planned = plan(s, message)
  if (Result.isFailure(planned)) return Exit.fail(planned.failure)
  const p = planned.success
  s.tx = undefined
  const pipelining = s.has("PIPELINING")
  if (p.chunked) {
    // The body is cut as it is read: the chunker's pull lives in a scope of its own.
    return Effect.scoped(Effect.gen(function*() {
      const size = Result.getOrThrow(checkChunkSize(message.chunkSize))
      const next = yield* ClientBody.chunker(p.body, { size, binary: p.mail.binary })
      // Without PIPELINING, nothing of the body is read before the recipients are accepted.
      if (!pipelining) return yield* stepwise(s, p, undefined, next)
      const envelope = p.mail.line + p.rcpts.map((c) => c.line).join("")
      return yield* pipelinedBdat(s, p, envelope, yield* next, next)
    }))
  }
  if (!pipelining) return stepwise(s, p, p.chunk, undefined)
  let envelope = p.mail.line
  for (const c of p.rcpts) envelope += c.line
  return p.chunk !== undefined ? pipelinedBdat(s, p, envelope, p.chunk, undefined) : pipelinedData(s, p, envelope)
}
