/**
 * One server connection: the SMTP/LMTP state machine from greeting to close.
 *
 * A `Conversation` holds the connection's state, queues its replies and runs the loop; the
 * commands' handlers live beside it, one module per part of the protocol (Mail: HELO to DATA
 * and RSET; Chunking: BDAT; Security: STARTTLS and AUTH; Xclient). Commands are handled
 * synchronously: a handler returns the reply to queue, and an Effect only when it must wait (a
 * backend call that is not already complete, a message body, TLS, AUTH). Every buffered command
 * is answered before anything is written, so a pipelined group costs one write; the usual write
 * completes at once and needs no timer.
 *
 * Everything the peer can make us wait for has a deadline; every bad input gets a reply.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import {
  Backend,
  Connection,
  type ConnectionInfo,
  type Session,
  type XclientAttributes
} from "../../Backend.ts"
import * as Command from "../../Command.ts"
import * as MailOptions from "../../MailOptions.ts"
import type * as Sasl from "../../Sasl.ts"
import * as SmtpError from "../../SmtpError.ts"
import { type Endpoint, type TlsState, type Transport, TransportError } from "../../Transport.ts"
import * as LineReader from "../codec/LineReader.ts"
import type { ResolvedConfig, TimeoutMillis } from "./Config.ts"
import * as Metrics from "./Metrics.ts"
import { codeOf, isNegative, type ServerReplies } from "./Replies.ts"
import * as Watchdog from "./Deadlines.ts"
import * as Chunking from "./Chunking.ts"
import * as Mail from "./Mail.ts"
import type { Transaction } from "./Mail.ts"
import * as Security from "./Security.ts"
import { loadSasl } from "./Security.ts"
import { isBinary, isJunk, isNotSmtp, mustWait } from "./Refusals.ts"
import { Close, type Outcome, type Step, type Stop } from "./Step.ts"
import { redactAuth, traceLog } from "./Trace.ts"
import * as Xclient from "./Xclient.ts"

/** What every connection of one server shares: made once, when the server starts. */
export interface ServerContext {
  readonly config: ResolvedConfig
  readonly replies: ServerReplies
  /** Opens when the server starts shutting down. */
  readonly shutdown: Latch.Latch
  /**
   * The connections open now: told when the server starts shutting down (one waiting for a
   * command outside a transaction is told 421 at once).
   */
  readonly open: Set<Conversation>
  /** The server's deadline keeper: every connection's timeouts. */
  readonly deadlines: Watchdog.Deadlines
  /** Whether spans are made: only where a tracer receives them. */
  readonly traced: boolean
  /** The protocol is LMTP. */
  readonly lmtp: boolean
  /** The longest line a connection's reader takes: AUTH's, or longer when configured. */
  readonly readLimit: number
  readonly bodyDeadline: LineReader.BodyDeadline
  /** How a DATA body is read: the same for every message. */
  readonly dataBody: LineReader.DataBodyOptions
  /** A message's one reply (SMTP) when the backend took it. */
  readonly accepted: Effect.Effect<ReadonlyArray<string>>
  /** The timeouts a connection's watchdog is armed with, in milliseconds (converted once). */
  readonly timeoutMillis: TimeoutMillis
  /** The MAIL and RCPT parameters the server's extensions allow. */
  readonly mailEnabled: MailOptions.Enabled
  /** Called once when a connection has ended. */
  readonly release: (conversation: Conversation) => void
  /** The context connections extend. */
  readonly contexts: FlatContext
}

/** What is known of one connection before its conversation starts. */
export interface ConnectionContext {
  readonly id: string
  /** The peer's address, for the per-address limit. */
  readonly ip: string | undefined
  readonly implicitTls: boolean
  /** Added to every log line of the connection. */
  readonly logAnnotations: Readonly<Record<string, string>>
}

/**
 * What the backend sees of a connection (`Connection`): read through the conversation, since
 * HELO, AUTH, STARTTLS and XCLIENT change it. Its functions are made on first use: most
 * backends never call them.
 */
class Info implements ConnectionInfo {
  readonly #conversation: Conversation
  readonly id: string
  readonly protocol: "smtp" | "lmtp"
  readonly proxy: ConnectionInfo["proxy"]
  #xclient: (() => XclientAttributes | undefined) | undefined = undefined
  #tls: (() => TlsState | undefined) | undefined = undefined
  #helo: (() => string | undefined) | undefined = undefined
  #authenticatedAs: (() => string | undefined) | undefined = undefined
  constructor(conversation: Conversation, id: string) {
    this.#conversation = conversation
    this.id = id
    this.protocol = conversation.c.protocol
    this.proxy = conversation.transport.proxy
  }
  get localEndpoint() {
    return this.#conversation.local
  }
  get remoteEndpoint() {
    return this.#conversation.remote
  }
  get xclient() {
    const c = this.#conversation
    return this.#xclient ??= () => c.xclientAttributes
  }
  get tls() {
    const t = this.#conversation.transport
    return this.#tls ??= () => t.tls()
  }
  get helo() {
    const c = this.#conversation
    return this.#helo ??= () => c.helo
  }
  get authenticatedAs() {
    const c = this.#conversation
    return this.#authenticatedAs ??= () => c.authIdentity
  }
}

/** Replies queued before they are written even though more commands are buffered. */
const MAX_QUEUED_REPLIES = 64

/**
 * One connection's state. What is the same for every connection of the server is read from the
 * `ServerContext` (the getters below) rather than copied into each: a server holds thousands.
 */
export class Conversation {
  readonly reader: LineReader.LineReader
  readonly info: ConnectionInfo
  session!: Session

  // --- connection state ---
  helo: string | undefined = undefined
  extended = false
  /** Commands may be pipelined: not after HELO, nor after EHLO without PIPELINING. */
  pipelining = true
  /** The reply a refused session started with (then only QUIT is accepted). */
  refusal: string | undefined = undefined
  /** What `trace` logs next, oldest first (undefined when not tracing). */
  trace: Array<string> | undefined
  authIdentity: string | undefined = undefined
  remote: Endpoint | undefined
  local: Endpoint | undefined
  xclientAttributes: XclientAttributes | undefined = undefined
  /** For a client offered XCLIENT: how its session is replaced. */
  sessions: Xclient.Sessions | undefined = undefined
  authFailures = 0
  errors = 0
  /** Commands that moved no mail since the last message accepted (junkCommandLimit). */
  junkCommands = 0
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
  /** The greeting (or the refusal) is under way: a last reply may be owed. */
  started = false

  readonly transport: Transport
  readonly server: ServerContext
  /** The peer's address as accepted (XCLIENT does not change it): what the per-address limit counts. */
  readonly ip: string | undefined
  readonly implicitTls: boolean
  readonly watchdog: Watchdog.Watchdog & { readonly close: () => void }
  readonly fiber: Fiber.Fiber<unknown, unknown>
  readonly services: Context.Context<never>

  constructor(
    transport: Transport,
    server: ServerContext,
    connection: ConnectionContext,
    fiber: Fiber.Fiber<unknown, unknown>,
    services: Context.Context<never>
  ) {
    this.transport = transport
    this.server = server
    this.implicitTls = connection.implicitTls
    this.ip = connection.ip
    this.watchdog = server.deadlines.watchdog()
    this.fiber = fiber
    this.services = services
    this.trace = server.config.logTraffic ? [] : undefined
    // The conversation holds the reader's body deadlines (`watchdog`, `onBodyTimeout`) itself.
    this.reader = LineReader.make(transport, { maxLineLength: server.readLimit, watchdog: this })
    this.remote = transport.remoteEndpoint
    this.local = transport.localEndpoint
    this.info = new Info(this, connection.id)
  }

  get c(): ResolvedConfig {
    return this.server.config
  }
  get r(): ServerReplies {
    return this.server.replies
  }
  get lmtp(): boolean {
    return this.server.lmtp
  }
  get bodyDeadline(): LineReader.BodyDeadline {
    return this.server.bodyDeadline
  }
  get mailEnabled(): MailOptions.Enabled {
    return this.server.mailEnabled
  }
  /** Spans cost a little per transaction: none when no tracer would receive them. */
  get traced(): boolean {
    return this.server.traced
  }
  /** The time for a whole command line (a refused session waits for QUIT a shorter time). */
  get commandTimeoutMillis(): number {
    const t = this.server.timeoutMillis
    return this.refusal === undefined ? t.command : t.refusedSession
  }
  /** XCLIENT is offered to this client (its address, as accepted, is in `xclient.trusted`). */
  get xclientAllowed(): boolean {
    const trusted = this.server.config.xclient
    const peer = this.transport.remoteEndpoint
    return trusted !== undefined && peer?._tag === "Tcp" && trusted.contains(peer.host)
  }
  /** When a body's deadline passes (the reader's watchdog holder is the conversation). */
  get onBodyTimeout(): Effect.Effect<void> {
    return this.expireRead
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
  expireWrite(): Effect.Effect<void> {
    return Effect.sync(() => {
      this.writeStuck = true
      this.fiber.interruptUnsafe()
    })
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
    this.watchdog.arm(this.server.timeoutMillis.write, this.expireWrite())
    return Effect.map(written, () => this.watchdog.disarm())
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

  /** `flush` as an Effect. */
  get flushEffect(): Effect.Effect<void, TransportError> {
    return Effect.suspend(() => this.flush() ?? Effect.void)
  }

  /** Queues a reply; negative replies count towards the error limits. */
  send(wire: string): Effect.Effect<void, Close | TransportError> | undefined {
    if (!isNegative(wire)) {
      this.push(wire)
      return undefined
    }
    this.count(Metrics.rejectionsOf(codeOf(wire)), 1)
    return this.countError(wire)
  }

  /** Queues `wire` as an error: past the soft limit it is held back, at the hard limit 421 follows. */
  countError(wire: string): Effect.Effect<void, Close | TransportError> | undefined {
    this.errors++
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
      : Security.sasl!.advertised(auth, this.saslContext())
  }

  saslContext(): Sasl.ServerContext {
    return { tls: this.transport.tls(), allowInsecureAuth: this.c.allowInsecureAuth }
  }

  // --- transactions ---

  /** Ends the open transaction, if any: an Effect only when something has to wait. */
  resetTransaction(): Effect.Effect<void> | undefined {
    const t = this.tx
    this.tx = undefined
    if (t === undefined) return undefined
    const reset = this.reset()
    if (t.bdat === undefined) return reset
    return reset === undefined ? Chunking.abortBdat(t) : Effect.andThen(Chunking.abortBdat(t), reset)
  }

  // --- commands ---

  /** One command line: its reply, now or later. QUIT is handled by the loop. */
  command(cmd: Command.Command): Step {
    const r = this.r
    switch (cmd._tag) {
      case "Helo":
      case "Ehlo":
      case "Lhlo":
        return Mail.hello(this, cmd)
      case "Mail":
        return Mail.mail(this, cmd)
      case "Rcpt":
        return Mail.rcpt(this, cmd)
      case "Data":
        return Mail.data(this)
      case "Bdat":
        return Chunking.bdat(this, cmd)
      case "Rset":
        return Mail.rset(this)
      case "StartTls":
        return Security.startTls(this)
      case "Auth":
        return Security.auth(this, cmd)
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
        return Xclient.isXclient(this, cmd) ? Xclient.xclient(this, cmd.arg) : r.unknownCommand
    }
  }

  /** The reply to a session the backend would not open: its refusal, or 421 when it failed (logged). */
  refused(cause: Cause.Cause<unknown>): Effect.Effect<string> {
    if (Cause.hasInterruptsOnly(cause)) return Effect.interrupt
    const e = Cause.findErrorOption(cause)
    if (e._tag === "Some" && e.value instanceof SmtpError.SmtpError) return Effect.succeed(this.r.error(e.value))
    // A defect here is answered like any other failure: 421, and the connection closes.
    return Effect.as(Effect.logError("backend newSession failed", cause), this.r.unavailable)
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
        if (flushed !== undefined) return Effect.flatMap(flushed, () => this.next())
      }
      if (this.server.shutdown.isOpen() && this.tx === undefined) return Effect.fail(new Close(this.r.shuttingDown))
      const line = reader.nextLine()
      if (line === undefined) {
        // An over-long command line is refused as soon as it is, not once (if ever) its LF comes.
        if (reader.buffered() >= c.maxLineLength && !reader.bufferedStartsWith("AUTH ")) {
          return Effect.fail(new Close(this.r.lineTooLong))
        }
        // A whole command line within timeouts.command: the deadline is set once per line, so a
        // peer dripping a partial line does not extend it.
        if (!this.lineDeadline) {
          this.lineDeadline = true
          this.watchdog.arm(this.commandTimeoutMillis, this.expireRead)
        }
        this.idle = this.tx === undefined
        return this.awaitCommand
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

  readonly afterFill = (): Effect.Effect<void, Stop> => {
    this.idle = false
    return this.next()
  }

  #awaitCommand: Effect.Effect<void, Stop> | undefined = undefined
  /** Reads more of the peer's input, then goes on: made once per connection, run for most commands. */
  get awaitCommand(): Effect.Effect<void, Stop> {
    return this.#awaitCommand ??= Effect.flatMap(this.reader.fill, this.afterFill)
  }

  afterStep(outcome: Outcome): Effect.Effect<void, Stop> {
    const queued = outcome === undefined ? undefined : this.send(outcome)
    if (queued !== undefined) return Effect.flatMap(queued, () => this.checkAuthFailures())
    return this.checkAuthFailures()
  }

  checkAuthFailures(): Effect.Effect<void, Stop> {
    return this.authFailures >= this.c.maxAuthFailures ? Effect.fail(new Close(this.r.tooManyAuthFailures)) : this.next()
  }

  /** What follows a handler's Effect: made once per connection, on first use. */
  #afterStep: ((outcome: Outcome) => Effect.Effect<void, Stop>) | undefined = undefined
  get afterStepFn() {
    return this.#afterStep ??= (outcome) => this.afterStep(outcome)
  }

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
      if (cmd._tag === "Unknown" && !Xclient.isXclient(this, cmd)) {
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
        if (c.forbidUnauthorizedPipelining && mustWait(cmd, this.pipelining, c.extensions.pipelining) && this.reader.buffered() > 0) {
          return Effect.fail(new Close(this.r.unauthorizedPipelining))
        }
      }
      if (cmd._tag === "Quit") return QUIT
      step = this.command(cmd)
      if (isJunk(cmd) && ++this.junkCommands > c.junkCommandLimit) step = this.penalise(step)
    }
    if (typeof step === "object") return Effect.flatMap(step, this.afterStepFn)
    const queued = step === undefined ? undefined : this.send(step)
    if (queued !== undefined) return Effect.flatMap(queued, () => this.checkAuthFailures())
    if (this.authFailures >= c.maxAuthFailures) return Effect.fail(new Close(this.r.tooManyAuthFailures))
    return undefined
  }

  /** A junk command past the limit: its reply, even a positive one, counts as an error. */
  penalise(step: Step): Step {
    if (typeof step === "object") return Effect.flatMap(step, (outcome) => this.asError(outcome))
    return this.asError(step)
  }

  asError(reply: Outcome): Effect.Effect<Outcome, Stop> {
    // A negative reply is counted once, by send.
    if (reply === undefined || isNegative(reply)) return Effect.succeed(reply)
    const queued = this.countError(reply)
    return queued === undefined ? Effect.succeed(undefined) : Effect.as(queued, undefined)
  }

  /** A session refused by the backend: its reply instead of the greeting, then only QUIT. */
  refuse(wire: string) {
    this.refusal = wire
  }

  /** The greeting, then the conversation. */
  greet(): Effect.Effect<void, Stop> {
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

  /** The conversation, from the greeting; how it ended is settled by `finish`. */
  run(): Effect.Effect<void, Stop> {
    this.started = true
    const delay = this.c.greetingDelay
    // (Not after implicit TLS: a client may send its first command with the end of the handshake.)
    return Duration.isZero(delay) || this.implicitTls || this.refusal !== undefined ? this.greet() : this.greetLate(delay)
  }

  /**
   * After the conversation: the last reply owed for how it ended, then the session's finalizers
   * (which see it interrupted, or done: a failure has had its reply), then the connection
   * closes. One finalizer for all of it: an idle connection's fiber holds one frame.
   */
  finish(scope: Scope.Closeable, exit: Exit.Exit<void, Stop>): Effect.Effect<void> {
    // A deadline still armed (a partial line's, a write's) must not fire a farewell of its own
    // while the last reply is written: the last reply has its own bound.
    this.watchdog.close()
    const interrupted = Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
    const last = Exit.isSuccess(exit) || !this.started
      ? Effect.void
      : interrupted
      // Interrupted (shutdown, or a write the peer never took): 421, unless writing is stuck.
      ? this.writeStuck ? Effect.void : this.farewell(this.r.shuttingDown)
      : this.ending(exit.cause)
    return last.pipe(
      Effect.andThen(Effect.suspend(() => Chunking.abortBdat(this.tx))),
      Effect.andThen(Effect.suspend(() => this.end(scope, interrupted ? exit : Exit.void)))
    )
  }

  /** `finish` as the connection's finalizer: made here, it keeps nothing else of `serve` alive. */
  finisher(scope: Scope.Closeable): (exit: Exit.Exit<void, Stop>) => Effect.Effect<void> {
    return (exit) => this.finish(scope, exit)
  }

  /** How the conversation ended early (not interrupted), and the last reply that is owed for it. */
  ending(cause: Cause.Cause<Stop>): Effect.Effect<void> {
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

  /** The session's finalizers run before the connection closes. */
  end(scope: Scope.Closeable, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> {
    this.server.open.delete(this)
    return Scope.close(scope, exit).pipe(
      Effect.ensuring(this.transport.close),
      Effect.ensuring(Effect.andThen(logClosed, Effect.sync(() => this.server.release(this))))
    )
  }

  /** The server is shutting down: an idle peer's next command is not waited for. */
  onShutdown() {
    if (this.idle) this.fiber.interruptUnsafe()
  }

  /** Opens the session, then converses; a session the backend refuses gets its refusal, then only QUIT. */
  converse(backend: Backend["Service"], scope: Scope.Scope): Effect.Effect<void, Stop, Connection | Scope.Scope> {
    let opening: Effect.Effect<Session, unknown, Scope.Scope> = backend.newSession(this.info)
    if (this.xclientAllowed) {
      this.sessions = { backend, parent: scope, current: undefined }
      opening = Xclient.openSession(this, this.sessions)
    }
    return Effect.flatMap(Effect.exit(opening), (opened) => {
      if (Exit.isSuccess(opened)) {
        this.session = opened.value
        return opened.value.auth === undefined || Security.sasl !== undefined
          ? this.run()
          : Effect.andThen(loadSasl, Effect.suspend(() => this.run()))
      }
      return Effect.flatMap(this.refused(opened.cause), (wire) => {
        // A 421 closes; any other refusal waits for QUIT (RFC 5321 3.1).
        if (codeOf(wire) === 421) return this.farewell(wire)
        this.refuse(wire)
        return this.run()
      })
    })
  }
}

const QUIT = Symbol("QUIT")

// Made once: a log Effect holds only its message, and every connection logs these two.
const logOpened = Effect.logDebug("connection opened")
const logClosed = Effect.logDebug("connection closed")

/**
 * The accepting fiber's context as one flat map, made once per server for all its connections.
 * A context deep in overlays (each layer adds some) copies its whole map on every `add` past
 * its depth limit: three adds per connection would make two copies, kept as long as the
 * connection.
 */
export class FlatContext {
  #parent: Context.Context<never> | undefined = undefined
  #flat: Context.Context<never> | undefined = undefined

  of<R>(parent: Context.Context<R>): Context.Context<R> {
    if (parent !== this.#parent) {
      this.#parent = parent
      this.#flat = Context.makeUnsafe(parent.mapUnsafe)
    }
    return this.#flat as Context.Context<R>
  }
}

/** No annotations: the usual parent of a connection's. */
const isEmpty = (o: object) => {
  for (const _ in o) return false
  return true
}

/** A conversation that ended early has had its last reply (`finish`): only an interruption stays. */
const settled = (cause: Cause.Cause<Stop>): Effect.Effect<void> =>
  Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : Effect.void

/**
 * Serves one accepted connection until it ends; never fails. The connection's services (its
 * scope, `Connection`, log annotations) are added to the fiber's context at once, and one
 * finalizer ends it: an idle connection holds as little as can be.
 */
export const serve = (
  transport: Transport,
  server: ServerContext,
  connection: ConnectionContext
): Effect.Effect<void, never, Backend> =>
  Effect.withFiber((fiber) => {
    const parent = server.contexts.of(fiber.context as Context.Context<Backend>)
    const conversation = new Conversation(transport, server, connection, fiber, parent)
    const scope = Scope.makeUnsafe()
    const inherited = fiber.getRef(References.CurrentLogAnnotations)
    const context = Context.add(
      Context.add(Context.add(parent, Scope.Scope, scope), Connection, conversation.info),
      References.CurrentLogAnnotations,
      isEmpty(inherited) ? connection.logAnnotations : { ...inherited, ...connection.logAnnotations }
    )
    server.open.add(conversation)
    const conversing = Effect.andThen(logOpened, conversation.converse(Context.get(parent, Backend), scope))
    // The whole context, in place of the fiber's (which it extends): providing it would merge
    // the two, copying every service into a map of its own. Not restored: the fiber is the
    // connection's own, and ends with it.
    fiber.setContext(context)
    const served = Effect.catchCause(Effect.onExit(conversing, conversation.finisher(scope)), settled)
    return served as Effect.Effect<void, never, unknown> as Effect.Effect<void> // its services: the context just set
  })
