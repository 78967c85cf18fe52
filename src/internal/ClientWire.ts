/**
 * The client's side of the wire: writes under a deadline, and whole replies read and
 * checked line by line (three-digit code, continuation markers, one code per reply, CRLF
 * line ends, bounded length and line count). Anything else is an `SmtpProtocolError`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as Reply from "../Reply.ts"
import { type Transport, TransportError } from "../Transport.ts"
import { invalidArgument, type SmtpClientError, SmtpProtocolError } from "./ClientErrors.ts"
import * as LineReader from "./LineReader.ts"

export interface Wire {
  readonly transport: Transport
  /**
   * Writes bytes; the deadline covers the whole write (a full kernel buffer included).
   * `shown` is what the traffic log says instead of the data (credentials, binary content).
   */
  readonly write: (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) => Effect.Effect<void, TransportError>
  /** Reads one whole reply; the deadline covers all its lines. */
  readonly reply: (timeout: Duration.Duration, what: string) => Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError>
  /** Drops buffered bytes (what a server sent after its 220 to STARTTLS) and says how many. */
  readonly discardBuffered: () => number
}

const malformed = (message: string, line?: string) =>
  new SmtpProtocolError({
    reason: "MalformedReply",
    message: line === undefined ? message : `${message}: ${JSON.stringify(line.slice(0, 200))}`
  })

/** Logs traffic at Debug level: commands and replies as text, message data as byte counts. */
const logSent = (data: string | Uint8Array, shown: string | undefined) =>
  Effect.logDebug(
    shown ?? (typeof data === "string" ? data.replace(/\r\n$/, "").split("\r\n").join(" | ") : `<${data.length} bytes>`)
  ).pipe(Effect.annotateLogs("smtp", "C"))

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
interface Deadlines {
  /** Runs `eff` under a deadline of `timeout`; past it, fails with `timedOut()`. */
  readonly within: <A, E>(
    eff: Effect.Effect<A, E>,
    timeout: Duration.Duration,
    timedOut: () => TransportError
  ) => Effect.Effect<A, E | TransportError>
}

const makeDeadlines = (transport: Transport): Effect.Effect<Deadlines, never, Scope.Scope> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    // The sleeper's own scope, made before the connection's finalizers (QUIT at close time
    // still has its deadline), so closed after them.
    const scope = yield* Scope.fork(yield* Effect.scope)
    let operation = 0 // the current operation's number
    let deadline = Infinity // when it times out; Infinity when none is running
    let expired = 0 // the operation that timed out
    let shortest = Infinity // the shortest timeout armed so far, in milliseconds
    let sleeper: Fiber.Fiber<void> | undefined
    let generation = 0 // the sleeper's: a replaced one stops when it wakes up
    let wakeAt = Infinity // when the sleeper looks next

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

    const start = Effect.suspend(() => {
      sleeper?.interruptUnsafe()
      wakeAt = deadline // at the latest; the sleeper sets it when it starts
      return Effect.map(Effect.forkIn(sleeperLoop(++generation), scope), (fiber) => {
        sleeper = fiber
      })
    })

    const within = <A, E>(eff: Effect.Effect<A, E>, timeout: Duration.Duration, timedOut: () => TransportError) =>
      Effect.suspend(() => {
        const id = ++operation
        const ms = Duration.toMillis(timeout)
        deadline = clock.currentTimeMillisUnsafe() + ms
        if (deadline === Infinity) return eff // no time limit
        if (ms < shortest) shortest = ms
        const done = () => {
          if (operation === id) deadline = Infinity
        }
        const watched = Effect.matchEffect(eff, {
          onSuccess: (a) => {
            done()
            return Effect.succeed(a)
          },
          onFailure: (e) => {
            done()
            return Effect.fail(expired === id ? timedOut() : e)
          }
        })
        // The sleeper looks by this deadline already, or one is started that does.
        return sleeper !== undefined && wakeAt <= deadline ? watched : Effect.andThen(start, watched)
      })

    return { within }
  })

/**
 * The most bytes one reply may take, all its lines together. A longer line than
 * `Reply.MAX_LINE_LENGTH` is tolerated within it, cut to that length (an EHLO reply naming a
 * thousand AUTH mechanisms still lets the client send).
 */
export const MAX_REPLY_BYTES = 64 * 1024

export const make = (
  transport: Transport,
  options: { readonly logTraffic: boolean }
): Effect.Effect<Wire, never, Scope.Scope> =>
  Effect.gen(function*() {
    // The limit counts CRLF.
    const reader = LineReader.make(transport, { maxLineLength: MAX_REPLY_BYTES + 2 })
    const deadlines = yield* makeDeadlines(transport)

    const writeTimedOut = () => new TransportError({ reason: "Timeout", message: "write timed out" })
    const write = (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) => {
      const written = deadlines.within(transport.write(data), timeout, writeTimedOut)
      return options.logTraffic ? Effect.andThen(logSent(data, shown), written) : written
    }

    const readLine = reader.readLine.pipe(
      Effect.catchTag("LineTooLong", () => Effect.fail(malformed(`reply longer than ${MAX_REPLY_BYTES} octets`)))
    )

    const readReply: Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError> = Effect.gen(function*() {
      const lines: Array<Reply.ReplyLine> = []
      let bytes = 0
      while (true) {
        const whole = yield* readLine
        // A lone LF ends no reply line: a server that sends one cannot be trusted to frame replies.
        if (!reader.lastLineCrlf()) return yield* malformed("reply line ended by a bare LF", whole)
        bytes += reader.lastLineBytes()
        if (bytes > MAX_REPLY_BYTES) return yield* malformed(`reply longer than ${MAX_REPLY_BYTES} octets`)
        const line = whole.length > Reply.MAX_LINE_LENGTH ? whole.slice(0, Reply.MAX_LINE_LENGTH) : whole
        const parsed = Reply.parseLine(line)
        if (Result.isFailure(parsed)) return yield* malformed(parsed.failure.message, line)
        lines.push(parsed.success)
        if (parsed.success.last) break
        if (lines.length >= Reply.MAX_LINES) return yield* malformed(`reply longer than ${Reply.MAX_LINES} lines`)
      }
      const reply = Reply.fromLines(lines)
      if (Result.isFailure(reply)) return yield* malformed(reply.failure.message, reply.failure.line)
      if (options.logTraffic) {
        yield* Effect.logDebug(reply.success.toWire().replace(/\r\n$/, "").split("\r\n").join(" | ")).pipe(
          Effect.annotateLogs("smtp", "S")
        )
      }
      return reply.success
    })

    const reply = (timeout: Duration.Duration, what: string) =>
      deadlines.within(
        readReply,
        timeout,
        () => new TransportError({ reason: "Timeout", message: `no reply to ${what} in time` })
      )

    return {
      transport,
      write,
      reply,
      discardBuffered: reader.discardBuffered
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
