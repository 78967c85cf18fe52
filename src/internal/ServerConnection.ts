/**
 * One server connection: the SMTP/LMTP state machine from greeting to close.
 *
 * Replies are queued and written together when no further pipelined command is buffered
 * (or before anything that waits on the peer), so a pipelined group costs one write.
 * Everything the peer can make us wait for has a deadline; every bad input gets a reply.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Address from "../Address.ts"
import type { Address as AddressT } from "../Address.ts"
import { Backend, Connection, type ConnectionInfo, type MessageBody, type Session } from "../Backend.ts"
import * as Command from "../Command.ts"
import type { EnhancedCode } from "../EnhancedCode.ts"
import * as MailOptions from "../MailOptions.ts"
import { Reply } from "../Reply.ts"
import * as Sasl from "../Sasl.ts"
import * as SmtpError from "../SmtpError.ts"
import { type Transport, TransportError } from "../Transport.ts"
import * as LineReader from "./LineReader.ts"
import * as Watchdog from "./Watchdog.ts"
import * as Metrics from "./ServerMetrics.ts"
import type { ResolvedConfig } from "./ServerConfig.ts"

export interface ConnectionContext {
  readonly config: ResolvedConfig
  readonly id: string
  readonly implicitTls: boolean
  /** Opens when the server starts shutting down. */
  readonly shutdown: Latch.Latch
}

/** RFC 4954 4: a SASL response line may be up to 12288 octets. */
const AUTH_LINE_LENGTH = 12288

type Recipient = { readonly to: AddressT; readonly options: MailOptions.RcptOptions }

interface Bdat {
  readonly queue: Queue.Queue<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>
  readonly fiber: Fiber.Fiber<ReadonlyArray<Reply>>
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
  readonly reply: Reply | undefined
  constructor(reply: Reply | undefined) {
    this.reply = reply
  }
}

const timeoutError = (message: string) => new TransportError({ reason: "Timeout", message })

export const serve = (transport: Transport, ctx: ConnectionContext): Effect.Effect<void, never, Backend | Scope.Scope> =>
  Effect.gen(function*() {
    const c = ctx.config
    const lmtp = c.protocol === "lmtp"
    const ext = c.extensions
    // Every wait on the peer has a deadline, kept by one watchdog per connection. Its verdicts:
    // a peer too slow to send gets 421 4.4.2; one too slow to read our replies is just closed.
    const watchdog = yield* Watchdog.make
    const self = yield* Effect.withFiber((fiber) => Effect.succeed(fiber))
    // A write the peer does not take: stop the conversation where it is stuck; writing a
    // farewell to a peer that does not read would only wait again.
    let writeStuck = false
    const expireWrite = Effect.sync(() => {
      writeStuck = true
      self.interruptUnsafe()
    })
    /**
     * Last words: the replies still queued (one may acknowledge a message the backend has
     * stored), then `r`, written within 5 seconds or not at all.
     */
    const farewell = (r: Reply) =>
      Effect.suspend(() => {
        const out = pending.join("") + r.toWire()
        pending = []
        return transport.write(out).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore)
      })
    const expireRead = Effect.suspend(() =>
      Effect.andThen(farewell(reply(421, [4, 4, 2], `${c.domain} Error: timeout exceeded`)), transport.close)
    )
    const reader = LineReader.make(transport, {
      maxLineLength: Math.max(c.maxLineLength, AUTH_LINE_LENGTH),
      watchdog: { watchdog, onBodyTimeout: expireRead }
    })
    /** Waiting for a command outside a transaction: shutdown need not wait for it. */
    let idle = false

    // --- connection state ---
    let helo: string | undefined
    let extended = false
    let authIdentity: string | undefined
    let authFailures = 0
    let errors = 0
    let unknownInARow = 0
    let tx: Transaction | undefined
    let pending: Array<string> = []

    const info: ConnectionInfo = {
      id: ctx.id,
      protocol: c.protocol,
      localEndpoint: transport.localEndpoint,
      remoteEndpoint: transport.remoteEndpoint,
      tls: () => transport.tls(),
      helo: () => helo,
      authenticatedAs: () => authIdentity
    }

    // --- replies ---
    const reply = (code: number, enhanced: EnhancedCode | undefined, ...lines: Array<string>): Reply =>
      new Reply(
        ext.enhancedStatusCodes && enhanced !== undefined
          ? { code, enhancedCode: enhanced, lines: [lines[0] ?? "", ...lines.slice(1)] }
          : { code, lines: [lines[0] ?? "", ...lines.slice(1)] },
        { disableChecks: true }
      )
    const fromError = (e: SmtpError.SmtpError): Reply => e.toReply({ enhancedStatusCodes: ext.enhancedStatusCodes })

    const flush: Effect.Effect<void, TransportError> = Effect.suspend(() => {
      if (pending.length === 0) return Effect.void
      const out = pending.length === 1 ? pending[0]! : pending.join("")
      pending = []
      watchdog.arm(c.writeTimeout, expireWrite)
      return Effect.map(transport.write(out), watchdog.disarm)
    })

    /** Queues a reply; negative replies count towards the error limits. */
    const send = (r: Reply): Effect.Effect<void, Close | TransportError> => {
      if (r.code < 400) {
        pending.push(r.toWire())
        return Effect.void
      }
      errors++
      const queue = Effect.sync(() => pending.push(r.toWire()))
      // Past the soft limit the error reply itself is held back (what was waiting goes first).
      const delayed = errors > c.softErrorLimit ? flush.pipe(Effect.andThen(Effect.sleep(c.errorDelay)), Effect.andThen(queue)) : queue
      const next = errors >= c.hardErrorLimit
        ? Effect.fail(new Close(reply(421, [4, 7, 0], `${c.domain} Error: too many errors`)))
        : Effect.void
      return Metrics.rejection(r.code).pipe(Effect.andThen(delayed), Effect.andThen(next))
    }

    // --- calling the backend ---
    const backend = yield* Backend
    const provide = <A, E, R>(eff: Effect.Effect<A, E, R>) => Effect.provideService(eff, Connection, info)

    /** Runs a session operation: an SmtpError becomes its reply, any other failure 451 (logged). Defects propagate. */
    const call = <A>(op: string, eff: Effect.Effect<A, unknown, Connection>): Effect.Effect<Result.Result<A, Reply>> =>
      // Spans without stack traces: capturing one costs more than the rest of a command.
      Effect.matchEffect(Effect.withSpan(provide(eff), `smtp.session.${op}`, { captureStackTrace: false }), {
        onSuccess: (a) => Effect.succeed(Result.succeed(a)),
        onFailure: (e) =>
          e instanceof SmtpError.SmtpError
            ? Effect.succeed(Result.fail(fromError(e)))
            : e !== undefined && e === reader.transportFailure() // the client went away mid-body: not the backend's fault
            ? Effect.logDebug(`${op} ended: the connection failed`).pipe(Effect.as(Result.fail(fromError(SmtpError.localError))))
            : Effect.logError(`backend ${op} failed`, Cause.fail(e)).pipe(
              Effect.as(Result.fail(fromError(SmtpError.localError)))
            )
      })

    // A defect here is answered like any other failure: 421, and the connection closes.
    const sessionOrError = yield* Effect.exit(provide(backend.newSession(info)))
    if (Exit.isFailure(sessionOrError)) {
      const cause = sessionOrError.cause
      if (Cause.hasInterruptsOnly(cause)) return yield* Effect.interrupt
      const e = Cause.findErrorOption(cause)
      const refusal = e._tag === "Some" && e.value instanceof SmtpError.SmtpError ? e.value : undefined
      if (refusal === undefined) yield* Effect.logError("backend newSession failed", cause)
      const r = refusal !== undefined
        ? fromError(refusal)
        : reply(421, [4, 3, 0], `${c.domain} Service not available, closing transmission channel`)
      yield* transport.write(r.toWire()).pipe(Effect.ignore)
      return
    }
    const session: Session = sessionOrError.value

    const saslContext = (): Sasl.ServerContext => ({ tls: transport.tls(), allowInsecureAuth: c.allowInsecureAuth })
    // AUTH is not offered at all before TLS unless allowed, whatever the mechanisms.
    const authMechanisms = (): ReadonlyArray<string> =>
      session.auth === undefined || (transport.tls() === undefined && !c.allowInsecureAuth)
        ? []
        : Sasl.advertised(session.auth, saslContext())

    // --- transactions ---
    const abortBdat = (t: Transaction | undefined) =>
      t?.bdat === undefined ? Effect.void : Effect.andThen(Queue.shutdown(t.bdat.queue), Fiber.interrupt(t.bdat.fiber))

    const resetTransaction = Effect.gen(function*() {
      const t = tx
      tx = undefined
      if (t === undefined) return
      yield* abortBdat(t)
      yield* provide(session.reset)
    })

    /** Hands a body to the backend; one reply (SMTP) or one per recipient (LMTP). */
    const deliver = (t: Transaction, body: MessageBody, transfer: "DATA" | "BDAT"): Effect.Effect<ReadonlyArray<Reply>> =>
      Effect.withSpan(deliverBody(t, body), "smtp.transaction", {
        attributes: { "smtp.recipients": t.rcpts.length, "smtp.transfer": transfer },
        captureStackTrace: false
      })

    const deliverBody = (t: Transaction, body: MessageBody): Effect.Effect<ReadonlyArray<Reply>> => {
      const ok = (rcpt?: AddressT) =>
        lmtp
          ? reply(250, [2, 0, 0], `<${rcpt}> delivered`)
          : reply(250, [2, 0, 0], "OK: message accepted")
      if (lmtp && session.lmtpData !== undefined) {
        const rcpts = t.rcpts.map((r) => r.to)
        return Effect.map(call("lmtpData", session.lmtpData(body, rcpts)), (r) =>
          Result.isFailure(r)
            ? rcpts.map(() => r.failure)
            : rcpts.map((rcpt, i) => {
              // A recipient the backend gave no status for was not delivered: say so (451), so
              // the client retries rather than the message being silently lost.
              if (i >= r.success.length) return fromError(SmtpError.localError)
              const status = r.success[i]
              return status === undefined ? ok(rcpt) : fromError(status)
            }))
      }
      return Effect.map(call("data", session.data(body)), (r) =>
        lmtp
          ? t.rcpts.map((rcpt) => Result.isFailure(r) ? r.failure : ok(rcpt.to))
          : [Result.isFailure(r) ? r.failure : ok()])
    }

    /** The body's own verdict (too large, bare line endings) wins over the backend's. */
    const finishMessage = (t: Transaction, replies: ReadonlyArray<Reply>, violation: SmtpError.SmtpError | undefined) =>
      Effect.gen(function*() {
        const final = violation === undefined ? replies : t.rcpts.slice(0, lmtp ? t.rcpts.length : 1).map(() =>
          fromError(violation)
        )
        if (violation === undefined && final.some((r) => r.code < 400)) yield* Metric.update(Metrics.messages, 1)
        tx = undefined
        // The outcome of a message is not a protocol error: it never counts towards the error
        // limits (an LMTP message refused for 25 recipients must still get all 25 replies).
        for (const r of final) pending.push(r.toWire())
        // The replies are settled before reset runs: whatever reset does cannot change them.
        const reset = yield* Effect.exit(provide(session.reset))
        if (Exit.isFailure(reset)) yield* Effect.logError("backend reset failed", reset.cause)
      })

    const bodyDeadline: LineReader.BodyDeadline = { idle: c.dataTimeout, minBytesPerSecond: c.minDataRate }

    const mailEnabled: MailOptions.Enabled = {
      size: c.maxMessageBytes > 0,
      eightBitMime: ext.eightBitMime,
      binaryMime: ext.binaryMime && ext.chunking,
      smtputf8: ext.smtputf8,
      requireTls: ext.requireTls,
      dsn: ext.dsn,
      auth: session.auth !== undefined,
      rrvs: ext.rrvs,
      deliverBy: ext.deliverBy,
      mtPriority: ext.mtPriority
    }

    const ehloLines = (): Array<string> => {
      const tls = transport.tls() !== undefined
      const lines = [`${c.domain} Hello ${helo}`]
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
      if (c.tls !== undefined && !tls) lines.push("STARTTLS")
      const mechanisms = authMechanisms()
      if (mechanisms.length > 0 && authIdentity === undefined) lines.push(`AUTH ${mechanisms.join(" ")}`)
      return lines
    }

    // --- commands ---
    function* hello(cmd: Command.Helo | Command.Ehlo | Command.Lhlo) {
      if (lmtp && cmd._tag !== "Lhlo") {
        return reply(500, [5, 5, 1], "This is an LMTP server: use LHLO")
      }
      if (!lmtp && cmd._tag === "Lhlo") {
        return reply(500, [5, 5, 1], "This is not an LMTP server: use EHLO or HELO")
      }
      yield* resetTransaction
      helo = cmd.domain
      extended = cmd._tag !== "Helo"
      if (!extended) return reply(250, undefined, `${c.domain} Hello ${helo}`)
      return new Reply({ code: 250, lines: ehloLines() as [string, ...Array<string>] }, { disableChecks: true })
    }

    function* mail(cmd: Command.Mail) {
      if (helo === undefined) return reply(503, [5, 5, 1], "Send HELO or EHLO first")
      if (tx !== undefined) return reply(503, [5, 5, 1], "Sender already specified")
      if (c.requireTlsForMail && transport.tls() === undefined) {
        return reply(530, [5, 7, 0], "Must issue a STARTTLS command first")
      }
      // Also when the session offers no mechanism: then nobody may send (fail closed).
      if (c.requireAuth && authIdentity === undefined) {
        return fromError(SmtpError.authRequired)
      }
      const parsed = MailOptions.parseMailParameters(cmd.params, { ...mailEnabled, auth: authMechanisms().length > 0 })
      if (Result.isFailure(parsed)) return fromError(parsed.failure)
      // RFC 4954 5: from a client that has not authenticated, AUTH= is taken as AUTH=<>.
      const options = parsed.success.auth !== undefined && authIdentity === undefined
        ? { ...parsed.success, auth: null }
        : parsed.success
      if (cmd.from !== null && !options.smtputf8 && Address.isUtf8(cmd.from)) {
        return reply(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8")
      }
      if (options.size !== undefined && c.maxMessageBytes > 0 && options.size > c.maxMessageBytes) {
        return fromError(SmtpError.dataTooLarge)
      }
      if (options.requireTls && transport.tls() === undefined) {
        return reply(530, [5, 7, 10], "REQUIRETLS needs a TLS connection")
      }
      const r = yield* call("mail", session.mail(cmd.from, options))
      if (Result.isFailure(r)) return r.failure
      tx = { from: cmd.from, options, rcpts: [], bdat: undefined }
      return reply(250, [2, 1, 0], "Sender OK")
    }

    function* rcpt(cmd: Command.Rcpt) {
      if (tx === undefined) return reply(503, [5, 5, 1], "Send MAIL FROM first")
      if (tx.bdat !== undefined) return reply(503, [5, 5, 1], "RCPT not allowed during BDAT")
      if (tx.rcpts.length >= c.maxRecipients) return fromError(SmtpError.tooManyRecipients)
      const parsed = MailOptions.parseRcptParameters(cmd.params, mailEnabled)
      if (Result.isFailure(parsed)) return fromError(parsed.failure)
      if (!tx.options.smtputf8 && Address.isUtf8(cmd.to)) {
        return reply(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8")
      }
      const r = yield* call("rcpt", session.rcpt(cmd.to, parsed.success))
      if (Result.isFailure(r)) return r.failure
      tx.rcpts.push({ to: cmd.to, options: parsed.success })
      return reply(250, [2, 1, 5], "Recipient OK")
    }

    function* data() {
      if (tx === undefined) return reply(503, [5, 5, 1], "Send MAIL FROM first")
      if (tx.rcpts.length === 0) return reply(503, [5, 5, 1], "Send RCPT TO first")
      if (tx.bdat !== undefined) return reply(503, [5, 5, 1], "DATA not allowed during BDAT")
      if (tx.options.body === "BINARYMIME") return reply(503, [5, 5, 1], "BODY=BINARYMIME requires BDAT")
      const t = tx
      yield* send(reply(354, undefined, "Start mail input; end with <CRLF>.<CRLF>"))
      yield* flush
      const body = reader.dataBody({
        deadline: bodyDeadline,
        maxBytes: c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY,
        bareLineEndings: c.bareLineEndings
      })
      const replies = yield* deliver(t, body.stream, "DATA")
      yield* body.drain
      yield* Metric.update(Metrics.bytes, body.bytes())
      yield* finishMessage(t, replies, body.violation())
      return undefined
    }

    function* bdat(cmd: Command.Bdat) {
      // The announced bytes are read whatever the verdict: they are not commands.
      const chunk = reader.chunkBody(cmd.size, { deadline: bodyDeadline, maxBytes: Number.POSITIVE_INFINITY })
      if (!ext.chunking) {
        yield* chunk.drain
        return reply(502, [5, 5, 1], "BDAT not supported")
      }
      if (tx === undefined || tx.rcpts.length === 0) {
        yield* chunk.drain
        return reply(503, [5, 5, 1], tx === undefined ? "Send MAIL FROM first" : "Send RCPT TO first")
      }
      const t = tx
      if (t.bdat === undefined) {
        const queue = yield* Queue.bounded<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>(4)
        const fiber = yield* deliver(t, Stream.fromQueue(queue), "BDAT").pipe(
          Effect.ensuring(Queue.shutdown(queue)), // once the consumer is gone, offers return false
          Effect.forkChild({ startImmediately: true })
        )
        t.bdat = { queue, fiber, bytes: 0 }
      }
      const b = t.bdat
      const max = c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY
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
      if (violation !== undefined) {
        const replies = yield* Fiber.join(b.fiber)
        yield* Metric.update(Metrics.bytes, b.bytes)
        yield* finishMessage(t, replies, violation)
        return undefined
      }
      if (!cmd.last) return reply(250, [2, 0, 0], `${cmd.size} octets received`)
      yield* Queue.end(b.queue)
      const replies = yield* Fiber.join(b.fiber)
      yield* Metric.update(Metrics.bytes, b.bytes)
      yield* finishMessage(t, replies, undefined)
      return undefined
    }

    function* rset() {
      yield* resetTransaction
      return reply(250, [2, 0, 0], "OK")
    }

    function* startTls() {
      if (c.tls === undefined) return reply(502, [5, 5, 1], "STARTTLS not supported")
      if (transport.tls() !== undefined) return reply(503, [5, 5, 1], "Already running TLS")
      yield* send(reply(220, [2, 0, 0], "Ready to start TLS"))
      yield* flush
      // RFC 3207 5: anything pipelined after STARTTLS was sent in plaintext: never act on it.
      const dropped = reader.discardBuffered()
      if (dropped > 0) yield* Effect.logWarning(`discarded ${dropped} plaintext bytes pipelined after STARTTLS`)
      const upgraded = yield* Effect.exit(
        transport.upgradeTls({ role: "server", tls: c.tls }).pipe(Effect.timeoutOrElse({
          duration: c.tlsHandshakeTimeout,
          orElse: () => Effect.fail(timeoutError("TLS handshake timed out"))
        }))
      )
      if (Exit.isFailure(upgraded)) {
        yield* Metric.update(Metrics.tlsFailures, 1)
        yield* Effect.logInfo("STARTTLS handshake failed", upgraded.cause)
        return yield* Effect.fail(new Close(undefined))
      }
      yield* Metric.update(Metrics.tlsUpgrades, 1)
      // The client starts over: forget everything learned in plaintext.
      yield* resetTransaction
      helo = undefined
      extended = false
      authIdentity = undefined
      return undefined
    }

    /** Reads one SASL response line; "*" cancels. */
    const readAuthLine = Effect.suspend(() => {
      watchdog.arm(c.commandTimeout, expireRead)
      return Effect.map(reader.readLine, (line) => {
        watchdog.disarm()
        return line
      })
    })

    function* auth(cmd: Command.Auth) {
      if (!extended) return reply(503, [5, 5, 1], "Send EHLO first")
      if (authIdentity !== undefined) return fromError(SmtpError.authAlreadyDone)
      if (tx !== undefined) return reply(503, [5, 5, 1], "AUTH not allowed during a mail transaction")
      if (session.auth === undefined) return reply(502, [5, 5, 1], "AUTH not supported")
      if (transport.tls() === undefined && !c.allowInsecureAuth) return fromError(SmtpError.authEncryptionRequired)
      const fail = function*(e: Sasl.SaslError) {
        const err = Sasl.toSmtpError(e)
        if (err.code === 535) {
          authFailures++
          yield* Metric.update(Metrics.authFailures, 1)
        }
        return fromError(err)
      }
      const decode = (text: string) => text === "=" ? Result.succeed(new Uint8Array(0)) : Sasl.decodeBase64(text)
      let input: Uint8Array | undefined
      if (cmd.initialResponse !== undefined) {
        const d = decode(cmd.initialResponse)
        if (Result.isFailure(d)) return yield* fail(d.failure)
        input = d.success
      }
      const mechanism = Sasl.startServer(session.auth, cmd.mechanism, saslContext())
      let step = yield* Effect.result(provide(mechanism.start(input)))
      while (true) {
        if (Result.isFailure(step)) return yield* fail(step.failure)
        const s = step.success
        if (s._tag === "Success") {
          authIdentity = s.identity
          return reply(235, [2, 7, 0], "Authentication successful")
        }
        pending.push(reply(334, undefined, Sasl.encodeBase64(s.data)).toWire())
        yield* flush
        const line = yield* readAuthLine
        if (line.length > AUTH_LINE_LENGTH) return yield* fail(Sasl.tooLong())
        if (line === "*") return yield* fail(Sasl.cancelled())
        const d = decode(line)
        if (Result.isFailure(d)) return yield* fail(d.failure)
        step = yield* Effect.result(provide(mechanism.next(d.success)))
      }
    }

    const dispatch = (cmd: Command.Command): Generator<
      Effect.Effect<unknown, Close | TransportError | LineReader.LineTooLong>,
      Reply | undefined,
      unknown
    > => {
      switch (cmd._tag) {
        case "Helo":
        case "Ehlo":
        case "Lhlo":
          return hello(cmd)
        case "Mail":
          return mail(cmd)
        case "Rcpt":
          return rcpt(cmd)
        case "Data":
          return data()
        case "Bdat":
          return bdat(cmd)
        case "Rset":
          return rset()
        case "StartTls":
          return startTls()
        case "Auth":
          return auth(cmd)
        case "Noop":
          return constant(reply(250, [2, 0, 0], "OK"))
        case "Vrfy":
          return constant(reply(c.vrfyReply.code, c.vrfyReply.enhancedCode, c.vrfyReply.text))
        case "Expn":
          return constant(reply(502, [5, 5, 1], "EXPN not supported"))
        case "Help":
          return constant(reply(214, [2, 0, 0], "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY"))
        case "Quit":
          return constant(undefined)
        case "Unknown":
          return constant(reply(500, [5, 5, 2], "Command not recognized"))
      }
    }

    // --- the conversation ---
    // A whole command line within commandTimeout: the deadline is set once per line, so a peer
    // dripping a partial line does not extend it.
    const readCommand = Effect.suspend(() => {
      watchdog.arm(c.commandTimeout, expireRead)
      idle = tx === undefined
      return Effect.map(reader.readLine, (line) => {
        watchdog.disarm()
        idle = false
        return line
      })
    })

    // Shutdown does not wait for an idle peer's next command (inside a transaction, the loop
    // answers 421 once the transaction is over).
    yield* Effect.forkScoped(Effect.andThen(
      ctx.shutdown.await,
      Effect.suspend(() =>
        idle
          ? Effect.andThen(farewell(reply(421, [4, 3, 2], `${c.domain} Service shutting down`)), transport.close)
          : Effect.void
      )
    ))

    const conversation = Effect.gen(function*() {
      yield* send(reply(220, undefined, `${c.domain} ${c.greeting}`))
      while (true) {
        // Replies wait while the peer has more commands buffered, so a pipelined group is
        // answered in one write; too many waiting replies are written (and may block) first.
        if (!reader.hasBufferedLine() || pending.length >= 64) yield* flush
        if (ctx.shutdown.isOpen() && tx === undefined) {
          return yield* Effect.fail(new Close(reply(421, [4, 3, 2], `${c.domain} Service shutting down`)))
        }
        const line = yield* readCommand
        // Lines up to 12288 bytes are read (AUTH's limit, RFC 4954 4); others are held to ours.
        if (reader.lastLineBytes() > c.maxLineLength && !/^auth /i.test(line)) {
          return yield* Effect.fail(new Close(reply(500, [5, 5, 2], "Line too long")))
        }
        const parsed = Command.parse(line, { utf8: ext.smtputf8 })
        let r: Reply | undefined
        let quit = false
        if (Result.isFailure(parsed)) {
          r = fromError(parsed.failure)
          // A refused "BDAT 10 FOO" is still followed by its 10 bytes: read them, never parse them.
          const announced = /^bdat[ \t]+(\d{1,15})(?:[ \t]|$)/i.exec(line)
          if (announced !== null) {
            yield* reader.chunkBody(Number(announced[1]), { deadline: bodyDeadline, maxBytes: Number.POSITIVE_INFINITY })
              .drain
          }
        } else {
          const cmd = parsed.success
          if (cmd._tag === "Unknown") {
            unknownInARow++
            if (unknownInARow >= c.maxUnknownCommands) {
              yield* send(reply(500, [5, 5, 2], "Command not recognized"))
              return yield* Effect.fail(new Close(reply(421, [4, 7, 0], `${c.domain} Error: too many unrecognized commands`)))
            }
          } else {
            unknownInARow = 0
          }
          quit = cmd._tag === "Quit"
          r = yield* dispatch(cmd)
        }
        if (quit) {
          yield* send(reply(221, [2, 0, 0], `${c.domain} Service closing transmission channel`))
          yield* flush
          return
        }
        if (r !== undefined) yield* send(r)
        if (authFailures >= c.maxAuthFailures) {
          return yield* Effect.fail(new Close(reply(421, [4, 7, 0], `${c.domain} Error: too many failed authentications`)))
        }
      }
    })

    const closeWith = (r: Reply | undefined) => r === undefined ? Effect.void : farewell(r)

    yield* conversation.pipe(
      Effect.catchIf(
        (e): e is Close => e instanceof Close,
        (e) => closeWith(e.reply)
      ),
      Effect.catchTags({
        LineTooLong: () => closeWith(reply(500, [5, 5, 2], "Line too long")),
        TransportError: (e) =>
          e.reason === "Timeout"
            ? closeWith(reply(421, [4, 4, 2], `${c.domain} Error: timeout exceeded`))
            : Effect.logDebug(`connection ended: ${e.message}`)
      }),
      Effect.onInterrupt(() =>
        writeStuck ? Effect.void : closeWith(reply(421, [4, 3, 2], `${c.domain} Service shutting down`))
      ),
      Effect.catchDefect((defect) =>
        Effect.andThen(
          Effect.logError("connection failed with a defect", Cause.die(defect)),
          closeWith(reply(421, [4, 3, 0], `${c.domain} Error: internal error, closing connection`))
        )
      ),
      Effect.ensuring(Effect.suspend(() => abortBdat(tx)))
    )
  })

const constant = function*(r: Reply | undefined): Generator<never, Reply | undefined, unknown> {
  return r
}
