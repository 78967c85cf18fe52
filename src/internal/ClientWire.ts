/**
 * The client's side of the wire: writes under a deadline, and whole replies read and
 * checked line by line (three-digit code, continuation markers, one code per reply,
 * bounded length and line count). Anything else is an `SmtpProtocolError`.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
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

export const make = (transport: Transport, options: { readonly logTraffic: boolean }): Wire => {
  // The limit counts CRLF; Reply.MAX_LINE_LENGTH does not.
  const reader = LineReader.make(transport, { maxLineLength: Reply.MAX_LINE_LENGTH + 2 })

  const write = (data: string | Uint8Array, timeout: Duration.Duration, shown?: string) => {
    const written = transport.write(data).pipe(Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.fail(new TransportError({ reason: "Timeout", message: "write timed out" }))
    }))
    return options.logTraffic ? Effect.andThen(logSent(data, shown), written) : written
  }

  const readLine = reader.readLine.pipe(
    Effect.catchTag("LineTooLong", () => Effect.fail(malformed(`reply line longer than ${Reply.MAX_LINE_LENGTH} octets`)))
  )

  const readReply: Effect.Effect<Reply.Reply, TransportError | SmtpProtocolError> = Effect.gen(function*() {
    const lines: Array<Reply.ReplyLine> = []
    while (true) {
      const line = yield* readLine
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
    readReply.pipe(Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.fail(new TransportError({ reason: "Timeout", message: `no reply to ${what} in time` }))
    }))

  return {
    transport,
    write,
    reply,
    discardBuffered: reader.discardBuffered
  }
}

/** A command line as it goes on the wire: CR, LF and NUL are refused whatever their origin. */
export const commandLine = (line: string): Result.Result<string, SmtpClientError> => {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i)
    if (c === 13 || c === 10 || c === 0) return Result.fail(invalidArgument("a command may not contain CR, LF or NUL"))
  }
  return Result.succeed(line + "\r\n")
}
