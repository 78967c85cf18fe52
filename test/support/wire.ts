/**
 * A raw SMTP peer for tests: writes exact bytes and reads whole replies, so tests can
 * assert on what crosses the wire (codes, enhanced codes, pipelining, timing).
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as LineReader from "../../src/internal/codec/LineReader.ts"
import * as Reply from "../../src/Reply.ts"
import { type ConnectOptions, Network, type Transport, TransportError } from "../../src/Transport.ts"

export interface Peer {
  readonly transport: Transport
  /** Writes the text as is (add CRLF yourself). */
  readonly write: (text: string | Uint8Array) => Effect.Effect<void, TransportError>
  /** Reads one whole (possibly multi-line) reply. */
  readonly reply: Effect.Effect<Reply.Reply, TransportError>
  /** Writes `line` + CRLF and reads the reply. */
  readonly command: (line: string) => Effect.Effect<Reply.Reply, TransportError>
  /** Reads until the server closes; true if it closed (EOF), failing on other data. */
  readonly closed: Effect.Effect<boolean, TransportError>
  /** Switches to TLS (after the server's 220 to STARTTLS). */
  readonly startTls: (options?: { readonly ca?: string | undefined; readonly servername?: string }) => Effect.Effect<void, TransportError>
}

export const peer = (transport: Transport): Peer => {
  let reader = LineReader.make(transport, { maxLineLength: 100_000 })
  const reply: Effect.Effect<Reply.Reply, TransportError> = Effect.gen(function*() {
    const lines: Array<Reply.ReplyLine> = []
    while (true) {
      const line = yield* reader.readLine.pipe(
        Effect.catchTag("LineTooLong", () => Effect.fail(new TransportError({ reason: "Read", message: "too long" })))
      )
      const parsed = Reply.parseLine(line)
      if (Result.isFailure(parsed)) {
        return yield* new TransportError({ reason: "Read", message: `bad reply line: ${JSON.stringify(line)}` })
      }
      lines.push(parsed.success)
      if (parsed.success.last) break
    }
    const r = Reply.fromLines(lines)
    if (Result.isFailure(r)) return yield* new TransportError({ reason: "Read", message: r.failure.message })
    return r.success
  })
  const write = (text: string | Uint8Array) => transport.write(text)
  return {
    transport,
    write,
    reply,
    command: (line) => Effect.andThen(write(line + "\r\n"), reply),
    closed: Effect.gen(function*() {
      const chunk = yield* transport.read.pipe(
        Effect.catchTag("TransportError", (e) => e.reason === "Closed" ? Effect.succeed(undefined) : Effect.fail(e))
      )
      if (chunk === undefined) return true
      return yield* new TransportError({
        reason: "Read",
        message: `expected close, got ${JSON.stringify(new TextDecoder().decode(chunk))}`
      })
    }),
    startTls: (options) =>
      Effect.andThen(
        transport.upgradeTls({
          role: "client",
          tls: { ca: options?.ca, servername: options?.servername ?? "localhost", rejectUnauthorized: options?.ca !== undefined }
        }),
        Effect.sync(() => {
          reader = LineReader.make(transport, { maxLineLength: 100_000 })
        })
      )
  }
}

/** Connects through the `Network` service and wraps the connection as a `Peer`. */
export const connect = (options: ConnectOptions): Effect.Effect<Peer, TransportError, Network | Scope.Scope> =>
  Effect.gen(function*() {
    const network = yield* Network
    return peer(yield* network.connect(options))
  })
