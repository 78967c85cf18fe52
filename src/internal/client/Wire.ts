/**
 * The client's side of the wire: writes under a deadline, and whole replies read and
 * checked line by line (three-digit code, continuation markers, one code per reply,
 * bounded length and line count). Anything else is an `SmtpProtocolError`.
 *
 * Work that needs no waiting is done at once: a write the kernel takes is an `Exit`, and a
 * reply already buffered (the usual case for the replies to a pipelined group) is parsed and
 * returned as an `Exit`, with no timer armed and no fiber suspended.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Reply from "../../Reply.ts"
import { type Transport, TransportError } from "../../Transport.ts"
import { invalidArgument, type SmtpClientError, SmtpProtocolError } from "./Errors.ts"
import { ReplyLines, TOO_LONG } from "./ReplyLines.ts"

export interface Wire {
  readonly transport: Transport
  /**
   * Writes bytes now, when called; the returned Effect waits for the kernel to take them,
   * under a deadline that covers the whole write (a full kernel buffer included). It is an
   * `Exit` when there is nothing to wait for. `shown` is what the traffic log says instead of
   * the data (credentials, binary content).
   */
  readonly send: (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) => Effect.Effect<void, TransportError>
  /** `send`, done when the Effect runs. */
  readonly write: (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) => Effect.Effect<void, TransportError>
  /**
   * The next whole reply; the deadline covers all its lines. An `Exit` when it is already
   * buffered.
   */
  readonly reply: (timeout: Duration.Duration, what: string) => Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError>
  /** Drops buffered bytes (what a server sent after its 220 to STARTTLS) and says how many. */
  readonly discardBuffered: () => number
  /** Replies read so far that were not 421. */
  readonly progress: () => number
}

// Effect's two kinds of Exit, told apart by prototype: `Exit.isExit` looks a symbol up along
// the prototype chain of whatever it is given, a cost paid for every step of every command.
const SUCCESS = Object.getPrototypeOf(Exit.void)
const FAILURE = Object.getPrototypeOf(Exit.fail(undefined))

/**
 * The `Exit` `eff` is, when it is one already (done, nothing to run). An Exit made some other
 * way than by `Exit.succeed` and `Exit.fail*` would be run like any Effect: slower, still correct.
 */
export const exitOf = <A, E, R>(eff: Effect.Effect<A, E, R>): Exit.Exit<A, E> | undefined => {
  const proto = Object.getPrototypeOf(eff)
  return proto === SUCCESS || proto === FAILURE ? eff as unknown as Exit.Exit<A, E> : undefined
}

const malformed = (message: string, line?: string) =>
  new SmtpProtocolError({
    reason: "MalformedReply",
    message: line === undefined ? message : `${message}: ${JSON.stringify(line.slice(0, 200))}`
  })

const oneLine = (text: string) => text.replace(/\r\n$/, "").split("\r\n").join(" | ")

/** Logs traffic at Debug level: commands and replies as text, message data as byte counts. */
const logSent = (data: string | Uint8Array, shown: string | undefined) =>
  Effect.logDebug(shown ?? (typeof data === "string" ? oneLine(data) : `<${data.length} bytes>`)).pipe(
    Effect.annotateLogs("smtp", "C")
  )

const logReceived = (reply: Reply.Reply) => Effect.logDebug(oneLine(reply.toWire())).pipe(Effect.annotateLogs("smtp", "S"))

/**
 * The deadlines of one connection, with one timer instead of a timeout (two fibers and a
 * timer) around every read and write. An operation arms the deadline (an assignment) and
 * disarms it when done; a single sleeper fiber wakes up at the deadline, and when it finds
 * the operation still running, closes the transport: the pending read or write fails (a
 * `Transport` fails a pending read on `close`; NodeTransport fails a write waiting for
 * 'drain' once its close deadline destroyed the socket) and the operation reports the
 * timeout instead. A timeout ends the connection anyway.
 *
 * The sleeper never sleeps longer than the shortest timeout armed so far, so a later,
 * shorter deadline never needs an earlier wake-up: it is only replaced the first time a
 * shorter timeout than any before comes. It stops when it wakes up twice in a row to nothing
 * armed (an idle connection), and the next operation starts another. It sleeps through the
 * `Clock` service, so TestClock drives it in tests.
 */
export interface Deadlines {
  /** Arms the deadline of an operation about to wait, `timeout` from now; returns its ticket. */
  readonly arm: (timeout: Duration.Duration) => number
  /** The operation is over: its deadline no longer holds. */
  readonly disarm: (ticket: number) => void
  /** Whether the operation's deadline passed (and the transport was closed for it). */
  readonly expired: (ticket: number) => boolean
}

/** A ticket for an operation without a time limit. */
const UNLIMITED = 0

const makeDeadlines = (transport: Transport): Effect.Effect<Deadlines, never, Scope.Scope> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const fork = Effect.runForkWith(yield* Effect.context<never>())
    let operation = 0 // the current operation's ticket
    let deadline = Infinity // when it times out; Infinity when none is running
    let expired = 0 // the operation that timed out
    let shortest = Infinity // the shortest timeout armed so far, in milliseconds
    let sleeper: Fiber.Fiber<void> | undefined
    let generation = 0 // the sleeper's: a replaced one stops when it wakes up
    let wakeAt = Infinity // when the sleeper looks next
    let closed = false

    const sleeperLoop = (g: number): Effect.Effect<void> => {
      let idle = false // it woke up to nothing armed once already
      return Effect.suspend(function loop(): Effect.Effect<void> {
        if (g !== generation) return Effect.void
        const now = clock.currentTimeMillisUnsafe()
        if (deadline === Infinity) {
          // Nothing armed: operations tend to follow each other, so it looks once more, a
          // while later, before it stops.
          if (idle) {
            sleeper = undefined
            wakeAt = Infinity
            return Effect.void
          }
          idle = true
          wakeAt = now + shortest
          return Effect.flatMap(clock.sleep(Duration.millis(shortest)), () => Effect.suspend(loop))
        }
        idle = false
        if (now < deadline) {
          wakeAt = Math.min(deadline, now + shortest)
          return Effect.flatMap(clock.sleep(Duration.millis(wakeAt - now)), () => Effect.suspend(loop))
        }
        // The operation is still running past its deadline: fail it by closing the connection.
        expired = operation
        deadline = Infinity
        sleeper = undefined
        wakeAt = Infinity
        return transport.close
      })
    }

    const arm = (timeout: Duration.Duration): number => {
      const ms = Duration.toMillis(timeout)
      if (ms === Infinity || closed) return UNLIMITED
      const ticket = ++operation
      deadline = clock.currentTimeMillisUnsafe() + ms
      if (ms < shortest) shortest = ms
      // The sleeper looks by this deadline already, or one is started that does.
      if (sleeper === undefined || wakeAt > deadline) {
        sleeper?.interruptUnsafe()
        wakeAt = deadline // at the latest; the sleeper sets it when it starts
        sleeper = fork(sleeperLoop(++generation))
      }
      return ticket
    }
    const disarm = (ticket: number) => {
      if (ticket === operation) deadline = Infinity
    }

    // Registered before the connection's finalizers, so run after them: QUIT at close time
    // still has its deadline.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        deadline = Infinity
        generation++
        sleeper?.interruptUnsafe()
        sleeper = undefined
      })
    )
    return { arm, disarm, expired: (ticket) => ticket !== UNLIMITED && ticket === expired }
  })

/**
 * The most bytes one reply may take, all its lines together. A longer line than
 * `Reply.MAX_LINE_LENGTH` is tolerated within it, cut to that length (an EHLO reply naming a
 * thousand AUTH mechanisms still lets the client send).
 */
const MAX_REPLY_BYTES = 64 * 1024

/** One-line replies remembered per connection. */
const KNOWN_REPLIES = 16

const writeTimedOut = () => new TransportError({ reason: "Timeout", message: "write timed out" })

export const make = (
  transport: Transport,
  options: { readonly logTraffic: boolean }
): Effect.Effect<Wire, never, Scope.Scope> =>
  Effect.map(makeDeadlines(transport), (deadlines) => {
    // The limit counts CRLF.
    const reader = new ReplyLines<Exit.Exit<Reply.Reply>>(MAX_REPLY_BYTES + 2)
    const log = options.logTraffic

    const sendNow = (data: string | Uint8Array, timeout: Duration.Duration): Effect.Effect<void, TransportError> => {
      const written = transport.writeUnsafe(data)
      if (exitOf(written) !== undefined) return written
      const ticket = deadlines.arm(timeout)
      return Effect.matchEffect(written, {
        onSuccess: () => {
          deadlines.disarm(ticket)
          return Effect.void
        },
        onFailure: (e) => {
          deadlines.disarm(ticket)
          return Effect.fail(deadlines.expired(ticket) ? writeTimedOut() : e)
        }
      })
    }
    const send = (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) =>
      log ? Effect.andThen(logSent(data, shown), Effect.suspend(() => sendNow(data, timeout))) : sendNow(data, timeout)
    const write = (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) =>
      Effect.suspend(() => send(data, timeout, shown))

    // The lines of a reply read so far.
    let lines: Array<Reply.ReplyLine> = []
    let bytes = 0
    /** The next whole reply if it is buffered, checked; `undefined` when more must be read. */
    const take = (): Exit.Exit<Reply.Reply, SmtpProtocolError> | undefined => {
      while (true) {
        // A server says the same few one-line replies again and again: each is parsed once
        // per connection. A Reply is immutable, so one object serves every time.
        if (lines.length === 0) {
          const seen = reader.known()
          if (seen !== undefined) return seen
        }
        const whole = reader.nextLine()
        if (whole === undefined) return undefined
        if (whole === TOO_LONG) return Exit.fail(malformed(`reply longer than ${MAX_REPLY_BYTES} octets`))
        // A lone LF ends no reply line: a server that sends one cannot be trusted to frame replies.
        if (!reader.lastLineCrlf()) return Exit.fail(malformed("reply line ended by a bare LF", whole))
        bytes += reader.lastLineBytes()
        if (bytes > MAX_REPLY_BYTES) return Exit.fail(malformed(`reply longer than ${MAX_REPLY_BYTES} octets`))
        const line = whole.length > Reply.MAX_LINE_LENGTH ? whole.slice(0, Reply.MAX_LINE_LENGTH) : whole
        const parsed = Reply.parseLine(line)
        if (Result.isFailure(parsed)) return Exit.fail(malformed(parsed.failure.message, line))
        lines.push(parsed.success)
        if (parsed.success.last) break
        if (lines.length >= Reply.MAX_LINES) return Exit.fail(malformed(`reply longer than ${Reply.MAX_LINES} lines`))
      }
      const whole = Reply.fromLines(lines)
      const single = lines.length === 1 && bytes <= Reply.MAX_LINE_LENGTH
      lines = []
      bytes = 0
      if (Result.isFailure(whole)) return Exit.fail(malformed(whole.failure.message, whole.failure.line))
      const r = Exit.succeed(whole.success)
      if (single) {
        Object.freeze(whole.success.lines)
        if (whole.success.enhancedCode !== undefined) Object.freeze(whole.success.enhancedCode)
        reader.remember(r, KNOWN_REPLIES)
      }
      return r
    }
    let progress = 0
    // Every reply comes out here: counted, and logged when asked.
    const logged = (r: Exit.Exit<Reply.Reply, SmtpProtocolError>) => {
      if (Exit.isFailure(r)) return r
      if (r.value.code !== 421) progress++
      return log ? Effect.andThen(logReceived(r.value), r) : r
    }

    // The reply being waited for: operations run one at a time, and so do their reads (a
    // Transport allows one pending read), so one Effect serves every wait.
    let waitTicket = 0
    let waitFor = ""
    const failed = (e: TransportError) => {
      deadlines.disarm(waitTicket)
      return Exit.fail(
        deadlines.expired(waitTicket) ? new TransportError({ reason: "Timeout", message: `no reply to ${waitFor} in time` }) : e
      )
    }
    const waiting: Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError> = Effect.matchEffect(transport.read, {
      onSuccess: (chunk) => {
        if (chunk === undefined) return failed(TransportError.closed("connection closed by peer"))
        reader.append(chunk)
        const r = take()
        if (r === undefined) return waiting
        deadlines.disarm(waitTicket)
        return logged(r)
      },
      onFailure: failed
    })
    const reply = (timeout: Duration.Duration, what: string): Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError> => {
      const buffered = take()
      if (buffered !== undefined) return logged(buffered)
      waitTicket = deadlines.arm(timeout)
      waitFor = what
      return waiting
    }

    return {
      transport,
      send,
      write,
      reply,
      discardBuffered: () => reader.discardBuffered(),
      progress: () => progress
    } satisfies Wire
  })

/** A command line as it goes on the wire: CR, LF and NUL are refused whatever their origin. */
export const commandLine = (line: string): Result.Result<string, SmtpClientError> => {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i)
    if (c === 13 || c === 10 || c === 0) return Result.fail(invalidArgument("a command may not contain CR, LF or NUL"))
  }
  return Result.succeed(line + "\r\n")
}
