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
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as References from "effect/References"
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
import type * as Sasl from "../Sasl.ts"
import * as SmtpError from "../SmtpError.ts"
import { type Endpoint, type Transport, TransportError } from "../Transport.ts"
import { DotDecoder } from "./DotCodec.ts"
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
  /** The server's deadline keeper: every connection's timeouts. */
  readonly deadlines: Watchdog.Deadlines
  /** Added to every log line of the connection. */
  readonly logAnnotations: Readonly<Record<string, string>>
}

/** RFC 4954 4: a SASL response line may be up to 12288 octets. */
const AUTH_LINE_LENGTH = 12288

/**
 * The longest SASL response dropped to answer 500 5.5.6 and go on; a longer one is an attack,
 * answered like an over-long command line (500 5.5.2, closed), and never read much further.
 */
const AUTH_SKIP_LIMIT = 2 * AUTH_LINE_LENGTH

/** An over-long SASL response, dropped. */
const TOO_LONG = Symbol("TOO_LONG")

/** Replies queued before they are written even though more commands are buffered. */
const MAX_QUEUED_REPLIES = 64

type Recipient = { readonly to: AddressT; readonly options: MailOptions.RcptOptions }

/**
 * A message arriving in several BDAT chunks, handed to the backend as it comes. The backend's
 * stream is pulled here, so a chunk is answered only once the backend has taken all of it in
 * (asked for more) or has finished: a backend failure is the reply to the chunk it failed on.
 */
interface Bdat {
  readonly queue: Queue.Queue<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>
  fiber: Fiber.Fiber<ReadonlyArray<string>>
  /** Message bytes handed over so far. */
  bytes: number
  /** Slices offered, and taken by the backend. */
  offered: number
  taken: number
  /** The backend asked for more with every slice offered taken. */
  hungry: boolean
  /** The backend's `data` (or `lmtpData`) has finished. */
  ended: boolean
  /** The chunk's reply waits for `hungry` or `ended`. */
  waiter: Deferred.Deferred<void> | undefined
}

interface Transaction {
  readonly from: AddressT | null
  readonly options: MailOptions.MailOptions
  readonly rcpts: Array<Recipient>
  bdat: Bdat | undefined
  /** BDAT bytes announced so far. */
  chunked: number
  /** The line rules of a text message sent with BDAT: one decoder for all its chunks. */
  text: DotDecoder | undefined
}

const wakeBdat = (b: Bdat) => {
  const w = b.waiter
  b.waiter = undefined
  if (w !== undefined) Deferred.doneUnsafe(w, Effect.void)
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

/**
 * A verb that cannot begin an SMTP command: one of `forbidden` (another protocol's), a message
 * header's name and colon (message content read as commands), or anything not starting with a
 * letter (binary, a TLS ClientHello).
 */
const isNotSmtp = (verb: string, forbidden: ReadonlySet<string>): boolean => {
  if (!isLetter(verb.charCodeAt(0))) return true
  const colon = verb.indexOf(":")
  if (colon > 0) {
    let name = true
    for (let i = 0; name && i < colon; i++) {
      const c = verb.charCodeAt(i)
      name = c > 32 && c < 127
    }
    if (name) return true
  }
  return verb.length <= 16 && forbidden.has(verb.toUpperCase())
}

const isLetter = (c: number) => (c | 0x20) >= 97 && (c | 0x20) <= 122

/** A line the parser refused that is binary rather than a botched command (a TLS ClientHello). */
const isBinary = (line: string): boolean => {
  const c = line.charCodeAt(0)
  return line.length > 0 && !isLetter(c) && c !== 32 && c !== 9
}

/** A trace entry: "C" or "S", then the text. */
const traceLog = (entry: string) =>
  Effect.logDebug(entry.slice(1)).pipe(Effect.annotateLogs("smtp", entry[0]!))

/** An AUTH command line as the trace shows it: its initial response redacted. */
const redactAuth = (line: string): string => {
  if (!/^auth[ \t]/i.test(line)) return line
  const m = /^(\S+[ \t]+\S+)[ \t]+\S/.exec(line)
  return m === null ? line : `${m[1]} <redacted>`
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

/**
 * The Sasl module, loaded by the first connection whose session offers AUTH (its mechanisms and
 * their cryptography cost a server that never authenticates about 5 MiB).
 */
let sasl: typeof Sasl | undefined
const loadSasl: Effect.Effect<typeof Sasl> = Effect.suspend(() =>
  sasl !== undefined ? Effect.succeed(sasl) : Effect.map(Effect.promise(() => import("../Sasl.ts")), (m) => (sasl = m))
)

/** What every connection of a server reads alike, made once per server. */
const shared = new WeakMap<ResolvedConfig, { readonly bodyDeadline: LineReader.BodyDeadline; readonly mailEnabled: MailOptions.Enabled }>()
const sharedOf = (c: ResolvedConfig) => {
  let s = shared.get(c)
  if (s === undefined) {
    const ext = c.extensions
    s = {
      bodyDeadline: { idle: c.dataTimeout, minBytesPerSecond: c.minDataRate },
      mailEnabled: {
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
    }
    shared.set(c, s)
  }
  return s
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
  /** Commands may be pipelined: not after HELO, nor after EHLO without PIPELINING. */
  pipelining = true
  /** The reply a refused session started with (then only QUIT is accepted). */
  refusal: string | undefined = undefined
  /** The time for a whole command line. */
  commandTimeout: Duration.Duration
  /** What `trace` logs next, oldest first (undefined when not tracing). */
  trace: Array<string> | undefined
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
    this.commandTimeout = c.commandTimeout
    this.trace = c.trace ? [] : undefined
    this.lmtp = c.protocol === "lmtp"
    this.reader = LineReader.make(transport, {
      maxLineLength: Math.max(c.maxLineLength, AUTH_LINE_LENGTH),
      watchdog: { watchdog, onBodyTimeout: this.expireRead }
    })
    const shared = sharedOf(c)
    this.bodyDeadline = shared.bodyDeadline
    this.mailEnabled = shared.mailEnabled
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
      this.push(last)
      const out = this.pending
      this.pending = ""
      this.pendingCount = 0
      const write = this.transport.write(out).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore)
      return this.trace === undefined ? write : Effect.andThen(this.logTrace(), write)
    })
  }

  push(wire: string) {
    this.pending += wire
    this.pendingCount++
    if (this.trace !== undefined) this.trace.push("S" + wire.slice(0, -2).replaceAll("\r\n", " | "))
  }

  /** Writes the queued replies; an Effect only when the peer is slow to take them (or when tracing). */
  flush(): Effect.Effect<void, TransportError> | undefined {
    if (this.pendingCount === 0) return undefined
    const out = this.pending
    this.pending = ""
    this.pendingCount = 0
    if (this.trace !== undefined) return Effect.andThen(this.logTrace(), Effect.suspend(() => this.write(out) ?? Effect.void))
    return this.write(out)
  }

  write(out: string): Effect.Effect<void, TransportError> | undefined {
    const written = this.transport.writeUnsafe(out)
    if (Exit.isExit(written)) return Exit.isSuccess(written) ? undefined : written
    this.watchdog.arm(this.c.writeTimeout, this.expireWrite)
    return Effect.map(written, this.disarmWrite)
  }

  /** Logs what the trace holds, in order. */
  logTrace(): Effect.Effect<void> {
    const entries = this.trace!
    this.trace = []
    return Effect.forEach(entries, traceLog, { discard: true })
  }

  /** A command line as the trace shows it. */
  traceCommand(line: string) {
    this.trace!.push("C" + redactAuth(line))
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
      : sasl!.advertised(auth, this.saslContext())
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
    if (this.trace !== undefined) this.trace.push(`C<message: ${bytes} bytes>`)
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

  /** A BDAT message that failed before its last chunk: one reply, to that chunk, and it is over. */
  abandonMessage(reply: string, bytes: number): Effect.Effect<Outcome> {
    this.count(Metrics.bytes, bytes)
    if (this.trace !== undefined) this.trace.push(`C<message, abandoned: ${bytes} bytes>`)
    this.tx = undefined
    this.push(reply)
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
      this.pipelining = this.extended && this.c.extensions.pipelining
      return this.extended ? this.ehloReply() : this.r.format(250, undefined, `${this.c.domain} Hello ${echoName(this.helo)}`)
    }
    const reset = this.resetTransaction()
    return reset === undefined ? greet() : Effect.map(reset, greet)
  }

  ehloReply(): string {
    const c = this.c
    const ext = c.extensions
    const tls = this.transport.tls() !== undefined
    const lines = [`${c.domain} Hello ${echoName(this.helo!)}`]
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
      this.tx = { from: cmd.from, options, rcpts: [], bdat: undefined, chunked: 0, text: undefined }
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
        bareLineEndings: this.c.bareLineEndings,
        maxLineLength: this.c.maxBodyLineLength,
        lineTooLong: r.bodyLineTooLong
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
    // Without CHUNKING what follows is raw content that would run as commands: hang up.
    if (!c.extensions.chunking || !this.extended) return Effect.fail(new Close(r.bdatNotNegotiated))
    const max = c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY
    const t = this.tx
    const usable = t !== undefined && t.rcpts.length > 0
    // A chunk that cannot fit is never read (it could be gigabytes): told at once, then closed.
    if (cmd.size > max - (usable ? t.chunked : 0)) return Effect.fail(new Close(r.bdatTooLarge))
    // The announced bytes are read whatever the verdict: they are not commands.
    if (!usable) {
      const reply = t === undefined ? r.mailFirst : r.rcptFirst
      return Effect.as(this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY }).drain, reply)
    }
    t.chunked += cmd.size
    const text = this.textChunk(t, cmd.last)
    // A message in one chunk (the usual small message) is a body like DATA's.
    if (t.bdat === undefined && cmd.last) {
      return this.receive(t, this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: max }, text), "BDAT")
    }
    return this.chunk(t, cmd, max, text)
  }

  /** The line rules for a BDAT chunk of `t`: none for BINARYMIME, nor when there are none to apply. */
  textChunk(t: Transaction, last: boolean): LineReader.TextChunk | undefined {
    const c = this.c
    if (t.options.body === "BINARYMIME") return undefined
    if (c.bareLineEndings === "allow" && c.maxBodyLineLength === Number.POSITIVE_INFINITY) return undefined
    t.text ??= new DotDecoder(c.bareLineEndings, { stuffing: false, maxLineLength: c.maxBodyLineLength })
    return { decoder: t.text, last, lineTooLong: this.r.bodyLineTooLong }
  }

  /** Starts handing a message in several chunks to the backend. */
  startChunks(t: Transaction): Effect.Effect<Bdat> {
    return Effect.gen({ self: this }, function*() {
      const queue = yield* Queue.bounded<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>(4)
      const b: Bdat = {
        queue,
        fiber: undefined as unknown as Fiber.Fiber<ReadonlyArray<string>>,
        bytes: 0,
        offered: 0,
        taken: 0,
        hungry: false,
        ended: false,
        waiter: undefined
      }
      const pull = Effect.suspend(() => {
        if (b.taken === b.offered) {
          b.hungry = true
          wakeBdat(b)
        }
        return Effect.map(Queue.takeAll(queue), (slices) => {
          b.taken += slices.length
          return slices
        })
      })
      b.fiber = yield* this.deliver(t, Stream.fromPull(Effect.succeed(pull)), "BDAT").pipe(
        // Once the backend is done, offers return false and the chunk's reply need not wait.
        Effect.ensuring(Effect.andThen(
          Queue.shutdown(queue),
          Effect.sync(() => {
            b.ended = true
            wakeBdat(b)
          })
        )),
        Effect.forkChild({ startImmediately: true })
      )
      t.bdat = b
      return b
    })
  }

  /** Once the backend has taken in every slice offered, or has finished. */
  caughtUp(b: Bdat): Effect.Effect<void> {
    if (b.hungry || b.ended) return Effect.void
    return Effect.suspend(() => {
      const waiter = Deferred.makeUnsafe<void>()
      b.waiter = waiter
      return Deferred.await(waiter)
    })
  }

  /** One chunk of a message in several. */
  chunk(t: Transaction, cmd: Command.Bdat, max: number, text: LineReader.TextChunk | undefined): Effect.Effect<Outcome, Stop> {
    return Effect.gen({ self: this }, function*() {
      const b = t.bdat ?? (yield* this.startChunks(t))
      const chunk = this.reader.chunkBody(cmd.size, { deadline: this.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY }, text)
      let tooLarge = false
      yield* chunk.stream.pipe(
        Stream.runForEach((slice) => {
          if (tooLarge) return Effect.void
          b.bytes += slice.length
          // (Sizes were checked as announced; normalised line endings can still add a few bytes.)
          if (b.bytes > max) {
            tooLarge = true
            return Effect.void
          }
          b.offered++
          b.hungry = false
          return Queue.offer(b.queue, slice)
        }),
        Effect.catchTag("SmtpError", () => Effect.void) // the chunk's own verdict, seen below
      )
      yield* chunk.drain
      const violation = tooLarge ? SmtpError.dataTooLarge : chunk.violation()
      if (violation !== undefined) {
        // The backend's stream fails, so nothing is stored; the body's verdict is the reply.
        yield* Queue.fail(b.queue, violation)
        yield* Fiber.join(b.fiber)
        return yield* cmd.last
          ? this.finishMessage(t, [], violation, b.bytes)
          : this.abandonMessage(this.r.error(violation), b.bytes)
      }
      if (cmd.last) {
        yield* Queue.end(b.queue)
        return yield* this.finishMessage(t, yield* Fiber.join(b.fiber), undefined, b.bytes)
      }
      yield* this.caughtUp(b)
      if (b.ended) {
        const replies = yield* Fiber.join(b.fiber)
        // A backend that failed is answered at this chunk; one that succeeded early, at LAST.
        if (replies.every(isNegative)) return yield* this.abandonMessage(replies[0]!, b.bytes)
      }
      return this.r.format(250, [2, 0, 0], `${cmd.size} octets received`)
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
      this.pipelining = true
      this.authIdentity = undefined
      return undefined
    })
  }

  /**
   * Reads one SASL response line within the command timeout. An over-long one is read to its
   * end and dropped: the exchange fails (500 5.5.6) and the session goes on.
   */
  readonly readAuthLine: Effect.Effect<string | typeof TOO_LONG, TransportError | LineReader.LineTooLong> = Effect.suspend(() => {
    this.watchdog.arm(this.commandTimeout, this.expireRead)
    return Effect.matchEffect(this.reader.readLine, {
      onSuccess: (line) => {
        this.watchdog.disarm()
        if (this.trace !== undefined) this.trace.push(line === "*" ? "C*" : "C<redacted>")
        return Effect.succeed(line)
      },
      onFailure: (e) =>
        e._tag === "LineTooLong"
          ? Effect.map(this.reader.skipLine(AUTH_SKIP_LIMIT), () => {
            this.watchdog.disarm()
            if (this.trace !== undefined) this.trace.push("C<redacted, too long>")
            return TOO_LONG
          })
          : Effect.fail(e)
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
      const err = sasl!.toSmtpError(e)
      if (err.code === 535) {
        this.authFailures++
        this.count(Metrics.authFailures, 1)
      }
      return r.error(err)
    }
    const decode = (text: string) => text === "=" ? Result.succeed(new Uint8Array(0)) : sasl!.decodeBase64(text)
    return Effect.gen({ self: this }, function*() {
      let input: Uint8Array | undefined
      if (cmd.initialResponse !== undefined) {
        const d = decode(cmd.initialResponse)
        if (d._tag === "Failure") return fail(d.failure)
        input = d.success
      }
      const mechanism = sasl!.startServer(mechanisms, cmd.mechanism, this.saslContext())
      let step = yield* Effect.result(mechanism.start(input))
      while (true) {
        if (step._tag === "Failure") return fail(step.failure)
        const s = step.success
        if (s._tag === "Success") {
          this.authIdentity = s.identity
          return r.authSucceeded
        }
        this.push(r.format(334, undefined, sasl!.encodeBase64(s.data)))
        yield* this.flushEffect
        const line = yield* this.readAuthLine
        if (line === TOO_LONG || line.length > AUTH_LINE_LENGTH) return fail(sasl!.tooLong())
        if (line === "*") return fail(sasl!.cancelled())
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
      const refused = yield* this.openSession()
      if (refused !== undefined) return yield* Effect.fail(new Close(refused === "unavailable" ? r.unavailable : r.error(refused)))
      if (this.session.auth !== undefined) yield* loadSasl
      return r.greeting
    })
  }

  /**
   * Opens the backend's session: `undefined`, or its refusal (an SmtpError), or "unavailable"
   * (any other failure, logged). With XCLIENT on, the session gets a scope of its own, so that
   * XCLIENT can end it.
   */
  openSession(): Effect.Effect<SmtpError.SmtpError | "unavailable" | undefined> {
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
      if (refusal !== undefined) return refusal
      yield* Effect.logError("backend newSession failed", cause)
      return "unavailable" as const
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
        // An over-long command line is refused as soon as it is, not once (if ever) its LF comes.
        if (reader.buffered() >= c.maxLineLength && !reader.bufferedStartsWith("AUTH ")) {
          return Effect.fail(new Close(this.r.lineTooLong))
        }
        // A whole command line within commandTimeout: the deadline is set once per line, so a
        // peer dripping a partial line does not extend it.
        if (!this.lineDeadline) {
          this.lineDeadline = true
          this.watchdog.arm(this.commandTimeout, this.expireRead)
        }
        this.idle = this.tx === undefined
        return Effect.flatMap(reader.fill, this.afterFill)
      }
      if (this.lineDeadline) {
        this.lineDeadline = false
        this.watchdog.disarm()
      }
      if (typeof line !== "string") return Effect.fail(line)
      if (this.trace !== undefined) this.traceCommand(line)
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
    if (this.refusal !== undefined) {
      // RFC 5321 3.1: a refused session waits for QUIT, and answers anything else with 503.
      if (parsed._tag === "Success" && parsed.success._tag === "Quit") return QUIT
      step = this.r.refusedSession
    } else if (parsed._tag === "Failure") {
      // The bytes after a refused BDAT line cannot be framed: hang up rather than guess.
      if (Command.isBdatSyntaxError(parsed.failure)) return Effect.fail(new Close(this.r.bdatMalformed))
      if (c.refuseNonSmtp && isBinary(line)) return Effect.fail(new Close(this.r.notSmtp))
      step = this.r.error(parsed.failure)
    } else {
      const cmd = parsed.success
      if (cmd._tag === "Unknown" && !this.isXclient(cmd)) {
        if (c.refuseNonSmtp && isNotSmtp(cmd.verb, c.forbiddenCommands)) return Effect.fail(new Close(this.r.notSmtp))
        this.unknownInARow++
        if (this.unknownInARow >= c.maxUnknownCommands) {
          const queued = this.send(this.r.unknownCommand)
          const close = Effect.fail(new Close(this.r.tooManyUnknownCommands))
          return queued === undefined ? close : Effect.andThen(queued, close)
        }
      } else {
        this.unknownInARow = 0
        // Input already behind a command that must wait for its reply: the client did not wait.
        if (c.forbidUnauthorizedPipelining && this.mustWait(cmd) && this.reader.buffered() > 0) {
          return Effect.fail(new Close(this.r.unauthorizedPipelining))
        }
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

  /**
   * Whether a client must have seen this command's reply before it sends more (RFC 2920 3.1,
   * RFC 5321 without PIPELINING). QUIT ends the session anyway.
   */
  mustWait(cmd: Command.Command): boolean {
    switch (cmd._tag) {
      case "Data":
      case "Helo":
        return true
      case "Ehlo":
      case "Lhlo":
        return !this.c.extensions.pipelining
      case "Quit":
        return false
      default:
        return !this.pipelining
    }
  }

  /** A session refused by the backend: its reply instead of the greeting, then only QUIT. */
  refuse(wire: string) {
    this.refusal = wire
    this.commandTimeout = this.c.refusedSessionTimeout
  }

  /** The greeting, then the conversation. */
  readonly greet = (): Effect.Effect<void, Stop> => {
    this.push(this.refusal ?? this.r.greeting)
    return this.next()
  }

  /** Waits `greetingDelay` before the greeting: a client that talks first did not wait for it. */
  greetLate(delay: Duration.Duration): Effect.Effect<void, Stop> {
    this.idle = true
    return Effect.flatMap(Effect.timeoutOption(this.reader.fill, delay), (early) => {
      this.idle = false
      return Option.isSome(early) && this.c.forbidUnauthorizedPipelining
        ? Effect.fail(new Close(this.r.unauthorizedPipelining))
        : this.greet()
    })
  }

  /** Runs the conversation and ends it: a last reply where one is owed, never a failure. */
  run(): Effect.Effect<void> {
    const delay = this.c.greetingDelay
    // (Not after implicit TLS: a client may send its first command with the end of the handshake.)
    const conversation = Duration.isZero(delay) || this.ctx.implicitTls || this.refusal !== undefined
      ? this.greet()
      : this.greetLate(delay)
    return conversation.pipe(
      Effect.matchCauseEffect({ onSuccess: () => Effect.void, onFailure: (cause) => this.ending(cause) }),
      Effect.onExit((exit) => {
        const abort = this.abortBdat(this.tx)
        // Interrupted (shutdown, or a write the peer never took): 421, unless writing is stuck.
        return Exit.hasInterrupts(exit) && !this.writeStuck ? Effect.andThen(this.farewell(this.r.shuttingDown), abort) : abort
      })
    )
  }

  /** How the conversation ended early, and the last reply that is owed for it. */
  ending(cause: Cause.Cause<Stop>): Effect.Effect<void> {
    if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>) // stays interrupted
    const e = Cause.findErrorOption(cause)
    if (e._tag === "Some") {
      const error = e.value
      if (error instanceof Close) return error.reply === undefined ? Effect.void : this.farewell(error.reply)
      if (error._tag === "LineTooLong") return this.farewell(this.r.lineTooLong)
      return error.reason === "Timeout" ? this.farewell(this.r.timeout) : Effect.logDebug(`connection ended: ${error.message}`)
    }
    return Effect.andThen(
      Effect.logError("connection failed with a defect", cause),
      this.farewell(this.r.internalError)
    )
  }

  /** Opens the session, then converses; a session the backend refuses gets its refusal, then only QUIT. */
  converse(): Effect.Effect<void, never, Connection> {
    return Effect.flatMap(this.openSession(), (refused) => {
      if (refused === undefined) {
        return this.session.auth === undefined || sasl !== undefined
          ? this.run()
          : Effect.andThen(loadSasl, Effect.suspend(() => this.run()))
      }
      // Any other failure than a refusal, and a 421, close at once; other refusals wait for QUIT (RFC 5321 3.1).
      if (refused === "unavailable") return this.farewell(this.r.unavailable)
      const wire = this.r.error(refused)
      if (refused.code === 421) return this.farewell(wire)
      this.refuse(wire)
      return this.run()
    })
  }
}

const QUIT = Symbol("QUIT")

/**
 * Serves one accepted connection until it ends; never fails. The connection's services (its
 * scope, `Connection`, log annotations) are added to the fiber's context at once, and one
 * finalizer ends it: an idle connection holds as little as can be.
 */
export const serve = (transport: Transport, ctx: ConnectionContext): Effect.Effect<void, never, Backend> =>
  Effect.withFiber((fiber) => {
    const parent = fiber.context as Context.Context<Backend>
    const watchdog = ctx.deadlines.watchdog()
    const conversation = new Conversation(transport, ctx, watchdog, fiber, parent)
    const scope = Scope.makeUnsafe()
    conversation.scope = scope
    conversation.backend = Context.get(parent, Backend)
    const context = Context.add(
      Context.add(Context.add(parent, Scope.Scope, scope), Connection, conversation.info),
      References.CurrentLogAnnotations,
      { ...fiber.getRef(References.CurrentLogAnnotations), ...ctx.logAnnotations }
    )
    // Shutdown does not wait for an idle peer's next command (inside a transaction, the loop
    // answers 421 once the transaction is over).
    const unregister = ctx.onShutdown(() => {
      if (conversation.idle) fiber.interruptUnsafe()
    })
    const conversing = Effect.andThen(Effect.logDebug("connection opened"), conversation.converse())
    return Effect.provideContext(
      Effect.onExit(conversing, (exit) => {
        unregister()
        watchdog.close()
        // The session's finalizers run before the connection closes.
        return Scope.close(scope, exit).pipe(Effect.ensuring(transport.close), Effect.ensuring(Effect.logDebug("connection closed")))
      }),
      context
    )
  })
