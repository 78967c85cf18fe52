/**
 * One server connection: the SMTP/LMTP state machine from greeting to close.
 *
 * A `Conversation` holds the connection's state and has one handler per command. Commands are
 * handled synchronously: a handler returns the reply to queue, and an Effect only when it must
 * wait (a backend call that is not already complete, a message body, TLS, AUTH). Every
 * buffered command is answered before anything is written, so a pipelined group costs one
 * write; the usual write completes at once and needs no timer.
 *
 * Everything the peer can make us wait for has a deadline; every bad input gets a reply.
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as Address from "../Address.ts"
import type { Address as AddressT } from "../Address.ts"
import {
  Backend,
  Connection,
  type ConnectionInfo,
  type MessageBody,
  type Session,
  type XclientAttributes
} from "../Backend.ts"
import * as Command from "../Command.ts"
import * as MailOptions from "../MailOptions.ts"
import * as Sasl from "../Sasl.ts"
import * as SmtpError from "../SmtpError.ts"
import { type Endpoint, type Transport, TransportError } from "../Transport.ts"
import * as LineReader from "./LineReader.ts"
import type { ResolvedConfig } from "./ServerConfig.ts"
import * as Metrics from "./ServerMetrics.ts"
import { codeOf, isNegative, type ServerReplies } from "./ServerReplies.ts"
import * as Watchdog from "./Watchdog.ts"
import * as Xclient from "./Xclient.ts"

export interface ConnectionContext {
  readonly config: ResolvedConfig
  readonly replies: ServerReplies
  readonly id: string
  readonly implicitTls: boolean
  /** Opens when the server starts shutting down. */
  readonly shutdown: Latch.Latch
  /**
   * Registers what to do when the server starts shutting down (a connection waiting for a
   * command outside a transaction is told 421 at once); returns the unregistration.
   */
  readonly onShutdown: (f: () => void) => () => void
}

/** RFC 4954 4: a SASL response line may be up to 12288 octets. */
const AUTH_LINE_LENGTH = 12288

/** Replies queued before they are written even though more commands are buffered. */
const MAX_QUEUED_REPLIES = 64

type Recipient = { readonly to: AddressT; readonly options: MailOptions.RcptOptions }

interface Bdat {
  readonly queue: Queue.Queue<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>
  readonly fiber: Fiber.Fiber<ReadonlyArray<string>>
  bytes: number
}

interface Transaction {
  readonly from: AddressT | null
  readonly options: MailOptions.MailOptions
  readonly rcpts: Array<Recipient>
  bdat: Bdat | undefined
}

/** Why the conversation ends early; the reply (if any) is sent before closing. */
class Close {
  readonly reply: string | undefined
  constructor(reply: string | undefined) {
    this.reply = reply
  }
}

type Stop = Close | TransportError | LineReader.LineTooLong

/** A handler's outcome: the reply to queue (or none), now or once the Effect is done. */
type Outcome = string | undefined
type Step = Outcome | Effect.Effect<Outcome, Stop>

const timeoutError = (message: string) => new TransportError({ reason: "Timeout", message })

const rejectionsByCode = new Map<number, Metric.Metric<number, unknown>>()
const rejectionsOf = (code: number) => {
  let m = rejectionsByCode.get(code)
  if (m === undefined) {
    m = Metric.withAttributes(Metrics.rejections, { code: String(code) })
    rejectionsByCode.set(code, m)
  }
  return m
}

class Conversation {
  readonly c: ResolvedConfig
  readonly r: ServerReplies
  readonly lmtp: boolean
  readonly reader: LineReader.LineReader
  readonly bodyDeadline: LineReader.BodyDeadline
  readonly mailEnabled: MailOptions.Enabled
  readonly info: ConnectionInfo
  session!: Session
  backend!: Backend["Service"]
  /** The connection's scope; with XCLIENT on, each session has a child scope of its own. */
  scope!: Scope.Scope
  sessionScope: Scope.Closeable | undefined = undefined

  // --- connection state ---
  helo: string | undefined = undefined
  extended = false
  authIdentity: string | undefined = undefined
  remote: Endpoint | undefined
  local: Endpoint | undefined
  /** XCLIENT is offered to this client (its address is in `xclient.trusted`). */
  readonly xclientAllowed: boolean
  xclientAttributes: XclientAttributes | undefined = undefined
  authFailures = 0
  errors = 0
  unknownInARow = 0
  tx: Transaction | undefined = undefined
  /** Replies waiting to be written, and how many. */
  pending = ""
  pendingCount = 0
  /** Waiting for a command outside a transaction: shutdown need not wait for it. */
  idle = false
  /** The deadline of the command line being read is set. */
  lineDeadline = false
  /** A write the peer did not take in time: the conversation stops where it is stuck. */
  writeStuck = false

  readonly transport: Transport
  readonly ctx: ConnectionContext
  readonly watchdog: Watchdog.Watchdog
  readonly fiber: Fiber.Fiber<unknown, unknown>
  readonly services: Context.Context<never>
  readonly traced: boolean

  constructor(
    transport: Transport,
    ctx: ConnectionContext,
    watchdog: Watchdog.Watchdog,
    fiber: Fiber.Fiber<unknown, unknown>,
    services: Context.Context<never>
  ) {
    this.transport = transport
    this.ctx = ctx
    this.watchdog = watchdog
    this.fiber = fiber
    this.services = services
    // Spans cost a little per transaction: none when no tracer would receive them.
    this.traced = fiber.getRef(Tracer.Tracer) !== Tracer.nativeTracer
    const c = ctx.config
    this.c = c
    this.r = ctx.replies
    this.lmtp = c.protocol === "lmtp"
    this.reader = LineReader.make(transport, {
      maxLineLength: Math.max(c.maxLineLength, AUTH_LINE_LENGTH),
      watchdog: { watchdog, onBodyTimeout: this.expireRead }
    })
    this.bodyDeadline = { idle: c.dataTimeout, minBytesPerSecond: c.minDataRate }
    const ext = c.extensions
    this.mailEnabled = {
      size: c.maxMessageBytes > 0,
      eightBitMime: ext.eightBitMime,
      binaryMime: ext.binaryMime && ext.chunking,
      smtputf8: ext.smtputf8,
      requireTls: ext.requireTls,
      dsn: ext.dsn,
      auth: false,
      rrvs: ext.rrvs,
      deliverBy: ext.deliverBy,
      mtPriority: ext.mtPriority
    }
    this.remote = transport.remoteEndpoint
    this.local = transport.localEndpoint
    const peer = transport.remoteEndpoint
    this.xclientAllowed = c.xclient !== undefined && peer?._tag === "Tcp" && c.xclient.contains(peer.host)
    const self = this
    this.info = {
      id: ctx.id,
      protocol: c.protocol,
      // Getters: XCLIENT may change them.
      get localEndpoint() {
        return self.local
      },
      get remoteEndpoint() {
        return self.remote
      },
      proxy: transport.proxy,
      xclient: () => self.xclientAttributes,
      tls: () => transport.tls(),
      helo: () => self.helo,
      authenticatedAs: () => self.authIdentity
    }
  }

  count(metric: Metric.Metric<number, unknown>, n: number) {
    metric.updateUnsafe(n, this.services)
  }

  // --- deadlines ---

  /** A peer too slow to send gets 421 4.4.2. */
  readonly expireRead: Effect.Effect<void> = Effect.suspend(() =>
    Effect.andThen(this.farewell(this.r.timeout), this.transport.close)
  )

  /** A peer too slow to read our replies is just closed: a farewell would only wait again. */
  readonly expireWrite: Effect.Effect<void> = Effect.sync(() => {
    this.writeStuck = true
    this.fiber.interruptUnsafe()
  })

  readonly disarmWrite = () => {
    this.watchdog.disarm()
  }

  // --- replies ---

  /**
   * Last words: the replies still queued (one may acknowledge a message the backend has
   * stored), then `last`, written within 5 seconds or not at all.
   */
  farewell(last: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      const out = this.pending + last
      this.pending = ""
      this.pendingCount = 0
      return this.transport.write(out).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore)
    })
  }

  push(wire: string) {
    this.pending += wire
    this.pendingCount++
  }

  /** Writes the queued replies; an Effect only when the peer is slow to take them. */
  flush(): Effect.Effect<void, TransportError> | undefined {
    if (this.pendingCount === 0) return undefined
    const out = this.pending
    this.pending = ""
    this.pendingCount = 0
    const written = this.transport.writeUnsafe(out)
    if (Exit.isExit(written)) return Exit.isSuccess(written) ? undefined : written
    this.watchdog.arm(this.c.writeTimeout, this.expireWrite)
    return Effect.map(written, this.disarmWrite)
  }

  readonly flushEffect: Effect.Effect<void, TransportError> = Effect.suspend(() => this.flush() ?? Effect.void)

  /** Queues a reply; negative replies count towards the error limits. */
  send(wire: string): Effect.Effect<void, Close | TransportError> | undefined {
    if (!isNegative(wire)) {
      this.push(wire)
      return undefined
    }
    this.errors++
    this.count(rejectionsOf(codeOf(wire)), 1)
    const stop = this.errors >= this.c.hardErrorLimit ? new Close(this.r.tooManyErrors) : undefined
    if (this.errors <= this.c.softErrorLimit) {
      this.push(wire)
      return stop === undefined ? undefined : Effect.fail(stop)
    }
    // Past the soft limit the error reply itself is held back (what was waiting goes first).
    return this.flushEffect.pipe(
      Effect.andThen(Effect.sleep(this.c.errorDelay)),
      Effect.andThen(Effect.suspend(() => {
        this.push(wire)
        return stop === undefined ? Effect.void : Effect.fail(stop)
      }))
    )
  }

  // --- calling the backend ---

  /**
   * Runs a session operation: an SmtpError becomes its reply, any other failure 451 (logged).
   * Defects propagate. A backend answering with a completed Effect (`Effect.void`) is answered
   * without running anything.
   */
  call<A>(op: string, eff: Effect.Effect<A, unknown, Connection>, onSuccess: (a: A) => Outcome): Step {
    if (Exit.isExit(eff) && Exit.isSuccess(eff)) return onSuccess(eff.value as A)
    return Effect.matchEffect(eff as Effect.Effect<A, unknown>, {
      onSuccess: (a) => Effect.succeed(onSuccess(a)),
      onFailure: (e) => Effect.as(this.logFailure(op, e), this.failureReply(e))
    })
  }

  failureReply(e: unknown): string {
    return e instanceof SmtpError.SmtpError ? this.r.error(e) : this.r.localError
  }

  logFailure(op: string, e: unknown): Effect.Effect<void> {
    if (e instanceof SmtpError.SmtpError) return Effect.void
    // The client went away mid-body: not the backend's fault.
    if (e !== undefined && e === this.reader.transportFailure()) return Effect.logDebug(`${op} ended: the connection failed`)
    return Effect.logError(`backend ${op} failed`, Cause.fail(e))
  }

  /** Runs `reset` (`undefined`: already done). A defect ends the connection like any other. */
  reset(): Effect.Effect<void> | undefined {
    const eff = this.session.reset
    return Exit.isExit(eff) && Exit.isSuccess(eff) ? undefined : eff as Effect.Effect<void>
  }

  /** `reset` after a message, whose replies are settled: a failure is logged, never answered. */
  resetAfterMessage(): Effect.Effect<void> | undefined {
    const reset = this.reset()
    return reset === undefined ? undefined : Effect.exit(reset).pipe(
      Effect.flatMap((exit) => Exit.isFailure(exit) ? Effect.logError("backend reset failed", exit.cause) : Effect.void)
    )
  }

  authMechanisms(): ReadonlyArray<string> {
    const auth = this.session.auth
    // AUTH is not offered at all before TLS unless allowed, whatever the mechanisms.
    return auth === undefined || (this.transport.tls() === undefined && !this.c.allowInsecureAuth)
      ? []
      : Sasl.advertised(auth, this.saslContext())
  }

  saslContext(): Sasl.ServerContext {
    return { tls: this.transport.tls(), allowInsecureAuth: this.c.allowInsecureAuth }
  }

  // --- transactions ---

  abortBdat(t: Transaction | undefined): Effect.Effect<void> {
    return t?.bdat === undefined ? Effect.void : Effect.andThen(Queue.shutdown(t.bdat.queue), Fiber.interrupt(t.bdat.fiber))
  }

  /** Ends the open transaction, if any: an Effect only when something has to wait. */
  resetTransaction(): Effect.Effect<void> | undefined {
    const t = this.tx
    this.tx = undefined
    if (t === undefined) return undefined
    const reset = this.reset()
    if (t.bdat === undefined) return reset
    return reset === undefined ? this.abortBdat(t) : Effect.andThen(this.abortBdat(t), reset)
  }

  /** Hands a body to the backend: one reply (SMTP) or one per recipient (LMTP). */
  deliver(t: Transaction, body: MessageBody, transfer: "DATA" | "BDAT"): Effect.Effect<ReadonlyArray<string>> {
    const delivering = this.deliverBody(t, body)
    return this.traced
      ? Effect.withSpan(delivering, "smtp.transaction", {
        attributes: { "smtp.recipients": t.rcpts.length, "smtp.transfer": transfer },
        captureStackTrace: false
      })
      : delivering
  }

  deliverBody(t: Transaction, body: MessageBody): Effect.Effect<ReadonlyArray<string>> {
    const r = this.r
    const delivered = (rcpt: AddressT) => r.format(250, [2, 0, 0], `<${rcpt}> delivered`)
    const session = this.session
    if (this.lmtp && session.lmtpData !== undefined) {
      const rcpts = t.rcpts.map((x) => x.to)
      return Effect.matchEffect(session.lmtpData(body, rcpts) as Effect.Effect<ReadonlyArray<SmtpError.SmtpError | undefined>, unknown>, {
        onFailure: (e) => Effect.as(this.logFailure("lmtpData", e), rcpts.map(() => this.failureReply(e))),
        onSuccess: (statuses) =>
          Effect.succeed(rcpts.map((rcpt, i) => {
            // A recipient the backend gave no status for was not delivered: say so (451), so
            // the client retries rather than the message being silently lost.
            if (i >= statuses.length) return r.localError
            const status = statuses[i]
            return status === undefined ? delivered(rcpt) : r.error(status)
          }))
      })
    }
    return Effect.matchEffect(session.data(body) as Effect.Effect<void, unknown>, {
      onFailure: (e) => {
        const failed = this.failureReply(e)
        return Effect.as(this.logFailure("data", e), this.lmtp ? t.rcpts.map(() => failed) : [failed])
      },
      onSuccess: () => Effect.succeed(this.lmtp ? t.rcpts.map((x) => delivered(x.to)) : [r.messageAccepted])
    })
  }

  /** The body's own verdict (too large, bare line endings) wins over the backend's. */
  finishMessage(
    t: Transaction,
    replies: ReadonlyArray<string>,
    violation: SmtpError.SmtpError | undefined,
    bytes: number
  ): Effect.Effect<Outcome> {
    this.count(Metrics.bytes, bytes)
    const final = violation === undefined
      ? replies
      : t.rcpts.slice(0, this.lmtp ? t.rcpts.length : 1).map(() => this.r.error(violation))
    if (violation === undefined && final.some((x) => !isNegative(x))) this.count(Metrics.messages, 1)
    this.tx = undefined
    // The outcome of a message is not a protocol error: it never counts towards the error
    // limits (an LMTP message refused for 25 recipients must still get all 25 replies).
    for (const x of final) this.push(x)
    // The replies are settled before reset runs: whatever reset does cannot change them.
    const reset = this.resetAfterMessage()
    return reset === undefined ? Effect.succeed(undefined) : Effect.as(reset, undefined)
  }

  // --- commands ---

  hello(cmd: Command.Helo | Command.Ehlo | Command.Lhlo): Step {
    if (this.lmtp && cmd._tag !== "Lhlo") return this.r.lmtpNeedsLhlo
    if (!this.lmtp && cmd._tag === "Lhlo") return this.r.smtpRefusesLhlo
    const greet = () => {
      this.helo = cmd.domain
      this.extended = cmd._tag !== "Helo"
      return this.extended ? this.ehloReply() : this.r.format(250, undefined, `${this.c.domain} Hello ${this.helo}`)
    }
    const reset = this.resetTransaction()
    return reset === undefined ? greet() : Effect.map(reset, greet)
  }

  ehloReply(): string {
    const c = this.c
    const ext = c.extensions
    const tls = this.transport.tls() !== undefined
    const lines = [`${c.domain} Hello ${this.helo}`]
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
    if (this.xclientAllowed) lines.push(Xclient.KEYWORD)
    if (c.tls !== undefined && !tls) lines.push("STARTTLS")
    const mechanisms = this.authMechanisms()
    if (mechanisms.length > 0 && this.authIdentity === undefined) lines.push(`AUTH ${mechanisms.join(" ")}`)
    let out = ""
    for (let i = 0; i < lines.length; i++) out += `250${i === lines.length - 1 ? " " : "-"}${lines[i]}\r\n`
    return out
  }

  mail(cmd: Command.Mail): Step {
    const r = this.r
    if (this.helo === undefined) return r.heloFirst
    if (this.tx !== undefined) return r.senderAlreadySpecified
    if (this.c.requireTlsForMail && this.transport.tls() === undefined) return r.startTlsFirst
    // Also when the session offers no mechanism: then nobody may send (fail closed).
    if (this.c.requireAuth && this.authIdentity === undefined) return r.authRequired
    const enabled = this.session.auth === undefined
      ? this.mailEnabled
      : { ...this.mailEnabled, auth: this.authMechanisms().length > 0 }
    const parsed = MailOptions.parseMailParameters(cmd.params, enabled)
    if (parsed._tag === "Failure") return r.error(parsed.failure)
    // RFC 4954 5: from a client that has not authenticated, AUTH= is taken as AUTH=<>.
    const options = parsed.success.auth !== undefined && this.authIdentity === undefined
      ? { ...parsed.success, auth: null }
      : parsed.success
    if (cmd.from !== null && !options.smtputf8 && Address.isUtf8(cmd.from)) return r.utf8AddressNeedsSmtputf8
    if (options.size !== undefined && this.c.maxMessageBytes > 0 && options.size > this.c.maxMessageBytes) {
      return r.dataTooLarge
    }
    if (options.requireTls && this.transport.tls() === undefined) return r.requireTlsNeedsTls
    return this.call("mail", this.session.mail(cmd.from, options), () => {
      this.tx = { from: cmd.from, options, rcpts: [], bdat: undefined }
      return r.senderOk
    })
  }

  rcpt(cmd: Command.Rcpt): Step {
    const r = this.r
    const t = this.tx
    if (t === undefined) return r.mailFirst
    if (t.bdat !== undefined) return r.rcptDuringBdat
    if (t.rcpts.length >= this.c.maxRecipients) return r.tooManyRecipients
    const parsed = MailOptions.parseRcptParameters(cmd.params, this.mailEnabled)
    if (parsed._tag === "Failure") return r.error(parsed.failure)
    if (!t.options.smtputf8 && Address.isUtf8(cmd.to)) return r.utf8AddressNeedsSmtputf8
    const options = parsed.success
    return this.call("rcpt", this.session.rcpt(cmd.to, options), () => {
      t.rcpts.push({ to: cmd.to, options })
      return r.recipientOk
    })
  }

  data(): Step {
    const r = this.r
    const t = this.tx
    if (t === undefined) return r.mailFirst
    if (t.rcpts.length === 0) return r.rcptFirst
    if (t.bdat !== undefined) return r.dataDuringBdat
    if (t.options.body === "BINARYMIME") return r.binaryMimeNeedsBdat
    this.push(r.startMailInput)
    const receive = () => {
      const body = this.reader.dataBody({
        deadline: this.bodyDeadline,
        maxBytes: this.c.maxMessageBytes > 0 ? this.c.maxMessageBytes : Number.POSITIVE_INFINITY,
        bareLineEndings: this.c.bareLineEndings
      })
      return this.receive(t, body, "DATA")
    }
    const flushed = this.flush()
    return flushed === undefined ? receive() : Effect.flatMap(flushed, receive)
  }

  /** A whole message body: delivered, read to its real end, answered. */
  receive(t: Transaction, body: LineReader.Body, transfer: "DATA" | "BDAT"): Effect.Effect<Outcome, TransportError> {
    return Effect.flatMap(
      this.deliver(t, body.stream, transfer),
      (replies) => Effect.flatMap(body.drain, () => this.finishMessage(t, replies, body.violation(), body.bytes()))
    )
  }

  bdat(cmd: Command.Bdat): Step {
    const r = this.r
    const c = this.c
    const max = c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY
    const t = this.tx
    // The announced bytes are read whatever the verdict: they are not commands.
    const refuse = (reply: string) =>
      Effect.as(this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY }).drain, reply)
    if (!c.extensions.chunking) return refuse(r.bdatUnsupported)
    if (t === undefined || t.rcpts.length === 0) return refuse(t === undefined ? r.mailFirst : r.rcptFirst)
    // A message in one chunk (the usual small message) is a body like DATA's.
    if (t.bdat === undefined && cmd.last) {
      return this.receive(t, this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: max }), "BDAT")
    }
    return Effect.gen({ self: this }, function*() {
      if (t.bdat === undefined) {
        const queue = yield* Queue.bounded<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>(4)
        const fiber = yield* this.deliver(t, Stream.fromQueue(queue), "BDAT").pipe(
          Effect.ensuring(Queue.shutdown(queue)), // once the consumer is gone, offers return false
          Effect.forkChild({ startImmediately: true })
        )
        t.bdat = { queue, fiber, bytes: 0 }
      }
      const b = t.bdat
      const chunk = this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY })
      let violation: SmtpError.SmtpError | undefined
      yield* chunk.stream.pipe(
        Stream.runForEach((slice) => {
          if (violation !== undefined) return Effect.void
          b.bytes += slice.length
          if (b.bytes > max) {
            violation = SmtpError.dataTooLarge
            return Queue.fail(b.queue, violation)
          }
          return Queue.offer(b.queue, slice)
        }),
        Effect.catchTag("SmtpError", () => Effect.void)
      )
      yield* chunk.drain
      if (violation === undefined && !cmd.last) return r.format(250, [2, 0, 0], `${cmd.size} octets received`)
      if (violation === undefined) yield* Queue.end(b.queue)
      const replies = yield* Fiber.join(b.fiber)
      return yield* this.finishMessage(t, replies, violation, b.bytes)
    })
  }

  rset(): Step {
    const reset = this.resetTransaction()
    return reset === undefined ? this.r.ok : Effect.as(reset, this.r.ok)
  }

  startTls(): Step {
    const c = this.c
    if (c.tls === undefined) return this.r.startTlsUnsupported
    if (this.transport.tls() !== undefined) return this.r.alreadyTls
    const tlsOptions = c.tls
    return Effect.gen({ self: this }, function*() {
      this.push(this.r.readyForTls)
      yield* this.flushEffect
      // RFC 3207 5: anything pipelined after STARTTLS was sent in plaintext: never act on it.
      const dropped = this.reader.discardBuffered()
      if (dropped > 0) yield* Effect.logWarning(`discarded ${dropped} plaintext bytes pipelined after STARTTLS`)
      const upgraded = yield* Effect.exit(
        this.transport.upgradeTls({ role: "server", tls: tlsOptions }).pipe(Effect.timeoutOrElse({
          duration: c.tlsHandshakeTimeout,
          orElse: () => Effect.fail(timeoutError("TLS handshake timed out"))
        }))
      )
      if (Exit.isFailure(upgraded)) {
        this.count(Metrics.tlsFailures, 1)
        yield* Effect.logInfo("STARTTLS handshake failed", upgraded.cause)
        return yield* Effect.fail(new Close(undefined))
      }
      this.count(Metrics.tlsUpgrades, 1)
      // The client starts over: forget everything learned in plaintext.
      yield* this.resetTransaction() ?? Effect.void
      this.helo = undefined
      this.extended = false
      this.authIdentity = undefined
      return undefined
    })
  }

  /** Reads one SASL response line within the command timeout. */
  readonly readAuthLine: Effect.Effect<string, TransportError | LineReader.LineTooLong> = Effect.suspend(() => {
    this.watchdog.arm(this.c.commandTimeout, this.expireRead)
    return Effect.map(this.reader.readLine, (line) => {
      this.watchdog.disarm()
      return line
    })
  })

  auth(cmd: Command.Auth): Step {
    const r = this.r
    if (!this.extended) return r.ehloFirst
    if (this.authIdentity !== undefined) return r.authAlreadyDone
    if (this.tx !== undefined) return r.authDuringTransaction
    const mechanisms = this.session.auth
    if (mechanisms === undefined) return r.authUnsupported
    if (this.transport.tls() === undefined && !this.c.allowInsecureAuth) return r.authNeedsEncryption
    const fail = (e: Sasl.SaslError): string => {
      const err = Sasl.toSmtpError(e)
      if (err.code === 535) {
        this.authFailures++
        this.count(Metrics.authFailures, 1)
      }
      return r.error(err)
    }
    const decode = (text: string) => text === "=" ? Result.succeed(new Uint8Array(0)) : Sasl.decodeBase64(text)
    return Effect.gen({ self: this }, function*() {
      let input: Uint8Array | undefined
      if (cmd.initialResponse !== undefined) {
        const d = decode(cmd.initialResponse)
        if (d._tag === "Failure") return fail(d.failure)
        input = d.success
      }
      const mechanism = Sasl.startServer(mechanisms, cmd.mechanism, this.saslContext())
      let step = yield* Effect.result(mechanism.start(input))
      while (true) {
        if (step._tag === "Failure") return fail(step.failure)
        const s = step.success
        if (s._tag === "Success") {
          this.authIdentity = s.identity
          return r.authSucceeded
        }
        this.push(r.format(334, undefined, Sasl.encodeBase64(s.data)))
        yield* this.flushEffect
        const line = yield* this.readAuthLine
        if (line.length > AUTH_LINE_LENGTH) return fail(Sasl.tooLong())
        if (line === "*") return fail(Sasl.cancelled())
        const d = decode(line)
        if (d._tag === "Failure") return fail(d.failure)
        step = yield* Effect.result(mechanism.next(d.success))
      }
    })
  }

  /** One command line: its reply, now or later. QUIT is handled by the loop. */
  command(cmd: Command.Command): Step {
    const r = this.r
    switch (cmd._tag) {
      case "Helo":
      case "Ehlo":
      case "Lhlo":
        return this.hello(cmd)
      case "Mail":
        return this.mail(cmd)
      case "Rcpt":
        return this.rcpt(cmd)
      case "Data":
        return this.data()
      case "Bdat":
        return this.bdat(cmd)
      case "Rset":
        return this.rset()
      case "StartTls":
        return this.startTls()
      case "Auth":
        return this.auth(cmd)
      case "Noop":
        return r.ok
      case "Vrfy":
        return r.vrfy
      case "Expn":
        return r.expnUnsupported
      case "Help":
        return r.help
      case "Quit": // answered by the loop, which then ends the conversation
        return undefined
      case "Unknown":
        return this.isXclient(cmd) ? this.xclient(cmd.arg) : r.unknownCommand
    }
  }

  /** XCLIENT is a command only where it is configured; elsewhere it is unknown. */
  isXclient(cmd: Command.Unknown): boolean {
    return this.c.xclient !== undefined && Xclient.isVerb(cmd.verb)
  }

  /**
   * XCLIENT: a trusted client says whom it speaks for. As Postfix does, the session starts over
   * as if the client had just connected with those facts: a new backend session and a 220.
   */
  xclient(arg: string): Step {
    const r = this.r
    if (!this.xclientAllowed) return r.xclientRefused
    if (this.tx !== undefined) return r.xclientDuringTransaction
    const parsed = Xclient.parse(arg)
    if (Result.isFailure(parsed)) return r.format(501, [5, 5, 4], parsed.failure)
    const a: XclientAttributes = { ...this.xclientAttributes, ...parsed.success }
    return Effect.gen({ self: this }, function*() {
      this.xclientAttributes = a
      this.remote = Xclient.endpoint(this.transport.remoteEndpoint, a.addr, a.port)
      this.local = Xclient.endpoint(this.transport.localEndpoint, a.destaddr, a.destport)
      this.helo = Xclient.known(a.helo)
      this.extended = this.helo !== undefined && a.proto !== "SMTP"
      this.authIdentity = Xclient.known(a.login)
      yield* Effect.logInfo("XCLIENT", a)
      if (this.sessionScope !== undefined) yield* Scope.close(this.sessionScope, Exit.void)
      const refusal = yield* this.openSession()
      if (refusal !== undefined) return yield* Effect.fail(new Close(refusal))
      return r.greeting
    })
  }

  /**
   * Opens the backend's session; the refusal to send (and close) when it cannot be. With
   * XCLIENT on, the session gets a scope of its own, so that XCLIENT can end it.
   */
  openSession(): Effect.Effect<string | undefined> {
    return Effect.gen({ self: this }, function*() {
      let scope = this.scope
      if (this.c.xclient !== undefined) {
        this.sessionScope = yield* Scope.fork(this.scope)
        scope = this.sessionScope
      }
      // A defect here is answered like any other failure: 421, and the connection closes.
      const opened = yield* Effect.exit(Scope.provide(this.backend.newSession(this.info), scope))
      if (Exit.isSuccess(opened)) {
        this.session = opened.value
        return undefined
      }
      const cause = opened.cause
      if (Cause.hasInterruptsOnly(cause)) return yield* Effect.interrupt
      const e = Cause.findErrorOption(cause)
      const refusal = e._tag === "Some" && e.value instanceof SmtpError.SmtpError ? e.value : undefined
      if (refusal === undefined) yield* Effect.logError("backend newSession failed", cause)
      return refusal !== undefined ? this.r.error(refusal) : this.r.unavailable
    })
  }

  // --- the conversation ---

  /**
   * Answers commands until one has to wait, then returns what to wait for. Replies wait while
   * the peer has more commands buffered, so a pipelined group is answered in one write; too
   * many waiting replies are written (and may block) first.
   */
  next(): Effect.Effect<void, Stop> {
    const c = this.c
    const reader = this.reader
    while (true) {
      if (this.pendingCount >= MAX_QUEUED_REPLIES || !reader.hasBufferedLine()) {
        const flushed = this.flush()
        if (flushed !== undefined) return Effect.flatMap(flushed, this.loop)
      }
      if (this.ctx.shutdown.isOpen() && this.tx === undefined) return Effect.fail(new Close(this.r.shuttingDown))
      const line = reader.nextLine()
      if (line === undefined) {
        // A whole command line within commandTimeout: the deadline is set once per line, so a
        // peer dripping a partial line does not extend it.
        if (!this.lineDeadline) {
          this.lineDeadline = true
          this.watchdog.arm(c.commandTimeout, this.expireRead)
        }
        this.idle = this.tx === undefined
        return Effect.flatMap(reader.fill, this.afterFill)
      }
      if (this.lineDeadline) {
        this.lineDeadline = false
        this.watchdog.disarm()
      }
      if (typeof line !== "string") return Effect.fail(line)
      const step = this.line(line)
      if (step === QUIT) {
        this.push(this.r.closing)
        return this.flushEffect
      }
      if (step !== undefined) return step
    }
  }

  readonly loop = (): Effect.Effect<void, Stop> => this.next()

  readonly afterFill = (): Effect.Effect<void, Stop> => {
    this.idle = false
    return this.next()
  }

  readonly afterStep = (outcome: Outcome): Effect.Effect<void, Stop> => {
    const queued = outcome === undefined ? undefined : this.send(outcome)
    if (queued !== undefined) return Effect.flatMap(queued, this.checkAuthFailures)
    return this.checkAuthFailures()
  }

  readonly checkAuthFailures = (): Effect.Effect<void, Stop> =>
    this.authFailures >= this.c.maxAuthFailures ? Effect.fail(new Close(this.r.tooManyAuthFailures)) : this.next()

  /**
   * Handles one line: `undefined` when it is answered and the loop goes on, QUIT, or the rest
   * of the conversation (what to wait for, then the loop again).
   */
  line(line: string): Effect.Effect<void, Stop> | typeof QUIT | undefined {
    const c = this.c
    // Lines up to 12288 bytes are read (AUTH's limit, RFC 4954 4); others are held to ours.
    if (this.reader.lastLineBytes() > c.maxLineLength && !/^auth /i.test(line)) {
      return Effect.fail(new Close(this.r.lineTooLong))
    }
    const parsed = Command.parse(line, { utf8: c.extensions.smtputf8 })
    let step: Step
    if (parsed._tag === "Failure") {
      step = this.r.error(parsed.failure)
      // A refused "BDAT 10 FOO" is still followed by its 10 bytes: read them, never parse them.
      const announced = /^bdat[ \t]+(\d{1,15})(?:[ \t]|$)/i.exec(line)
      if (announced !== null) {
        const chunk = this.reader.chunkBody(Number(announced[1]), { deadline: this.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY })
        step = Effect.as(chunk.drain, step)
      }
    } else {
      const cmd = parsed.success
      if (cmd._tag === "Unknown" && !this.isXclient(cmd)) {
        this.unknownInARow++
        if (this.unknownInARow >= c.maxUnknownCommands) {
          const queued = this.send(this.r.unknownCommand)
          const close = Effect.fail(new Close(this.r.tooManyUnknownCommands))
          return queued === undefined ? close : Effect.andThen(queued, close)
        }
      } else {
        this.unknownInARow = 0
      }
      if (cmd._tag === "Quit") return QUIT
      step = this.command(cmd)
    }
    if (typeof step === "object") return Effect.flatMap(step, this.afterStep)
    const queued = step === undefined ? undefined : this.send(step)
    if (queued !== undefined) return Effect.flatMap(queued, this.checkAuthFailures)
    if (this.authFailures >= c.maxAuthFailures) return Effect.fail(new Close(this.r.tooManyAuthFailures))
    return undefined
  }

  /** Runs the conversation and ends it: a last reply where one is owed, never a failure. */
  run(): Effect.Effect<void> {
    const closeWith = (wire: string | undefined) => wire === undefined ? Effect.void : this.farewell(wire)
    const greeting = this.send(this.r.greeting)
    const conversation = greeting === undefined ? this.next() : Effect.flatMap(greeting, this.loop)
    return conversation.pipe(
      Effect.catchIf(
        (e): e is Close => e instanceof Close,
        (e) => closeWith(e.reply)
      ),
      Effect.catchTags({
        LineTooLong: () => closeWith(this.r.lineTooLong),
        TransportError: (e) =>
          e.reason === "Timeout" ? closeWith(this.r.timeout) : Effect.logDebug(`connection ended: ${e.message}`)
      }),
      Effect.onInterrupt(() => this.writeStuck ? Effect.void : closeWith(this.r.shuttingDown)),
      Effect.catchDefect((defect) =>
        Effect.andThen(
          Effect.logError("connection failed with a defect", Cause.die(defect)),
          closeWith(this.r.internalError)
        )
      ),
      Effect.ensuring(Effect.suspend(() => this.abortBdat(this.tx)))
    )
  }
}

const QUIT = Symbol("QUIT")

/** Serves one accepted connection until it ends; never fails. */
export const serve = (transport: Transport, ctx: ConnectionContext): Effect.Effect<void, never, Backend | Scope.Scope> =>
  Effect.gen(function*() {
    const watchdog = yield* Watchdog.make
    const fiber = yield* Effect.withFiber((fiber) => Effect.succeed(fiber))
    const services = yield* Effect.context<never>()
    const conversation = new Conversation(transport, ctx, watchdog, fiber, services)
    conversation.backend = yield* Backend
    conversation.scope = yield* Scope.Scope
    yield* Effect.provideService(converse(conversation, transport, ctx), Connection, conversation.info)
  })

const converse = (
  conversation: Conversation,
  transport: Transport,
  ctx: ConnectionContext
): Effect.Effect<void, never, Connection> =>
  Effect.gen(function*() {
    const refusal = yield* conversation.openSession()
    if (refusal !== undefined) {
      yield* transport.write(refusal).pipe(Effect.ignore)
      return
    }
    // Shutdown does not wait for an idle peer's next command (inside a transaction, the loop
    // answers 421 once the transaction is over).
    const unregister = ctx.onShutdown(() => {
      if (conversation.idle) conversation.fiber.interruptUnsafe()
    })
    yield* Effect.ensuring(conversation.run(), Effect.sync(unregister))
  })
