/**
 * One connection's read side: a single byte buffer over a `Transport`, from which
 * command lines, reply lines, DATA bodies and BDAT chunks are taken in turn.
 *
 * Lines are bounded (over the limit is an error and the buffer never grows past it).
 * Bodies are Streams that read from the transport only when pulled, so a slow consumer
 * slows the peer (TCP backpressure) and memory stays bounded whatever the message size.
 * Bytes after a body's end stay buffered for the next command (pipelining).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Stream from "effect/Stream"
import * as SmtpError from "../SmtpError.ts"
import { type Transport, TransportError } from "../Transport.ts"
import { type BareLineEndingPolicy, DotDecoder } from "./DotCodec.ts"
import type { Watchdog } from "./Watchdog.ts"

export class LineTooLong extends Data.TaggedError("LineTooLong")<{ readonly limit: number }> {}

const LF = 10
const CR = 13
const EMPTY = new Uint8Array(0)
const utf8 = new TextDecoder("utf-8")

/** Command lines are nearly always ASCII: built from char codes, short ones need no decoder. */
const decodeLine = (buf: Uint8Array, start: number, end: number): string => {
  if (end - start > 64) return utf8.decode(buf.subarray(start, end))
  let ascii = true
  for (let i = start; i < end; i++) {
    if (buf[i]! >= 0x80) {
      ascii = false
      break
    }
  }
  return ascii ? String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as Array<number>) : utf8.decode(buf.subarray(start, end))
}

/**
 * How long a body may take: it starts with `idle` to get going; every byte received
 * buys `1 / minBytesPerSecond` seconds more, never more than `idle` ahead of now.
 * A sender that trickles bytes slower than that rate runs out of time.
 */
export interface BodyDeadline {
  readonly idle: Duration.Input
  readonly minBytesPerSecond: number
}

export interface BodyOptions {
  readonly deadline: BodyDeadline
  /** Larger bodies fail the stream with 552 5.3.4; the rest is still read by `drain`. */
  readonly maxBytes: number
}

export interface DataBodyOptions extends BodyOptions {
  readonly bareLineEndings: BareLineEndingPolicy
}

export interface Body {
  /** The body's bytes. Fails with an `SmtpError` on a policy violation (size, bare line endings). */
  readonly stream: Stream.Stream<Uint8Array, SmtpError.SmtpError | TransportError>
  /** Reads and drops whatever the stream did not deliver, up to the body's real end. */
  readonly drain: Effect.Effect<void, TransportError>
  /** The reply-worthy violation seen so far, if any (also when the consumer ignored the stream's failure). */
  readonly violation: () => SmtpError.SmtpError | undefined
  /** Body bytes seen so far (after dot-unstuffing). */
  readonly bytes: () => number
}

const bodyTimeout = () => new TransportError({ reason: "Timeout", message: "message body not received in time" })

export const bareLineEndingError = SmtpError.SmtpError.of(
  550,
  [5, 5, 2],
  "Message contains a bare CR or LF; lines must end with CRLF"
)

export interface LineReader {
  /** The next line without its line ending (CRLF, or a lone LF). Time limits are the caller's. */
  readonly readLine: Effect.Effect<string, TransportError | LineTooLong>
  /**
   * The next line if a whole one is buffered (synchronous: no read), `undefined` if not yet,
   * `LineTooLong` once the limit is crossed, with or without a line ending in sight.
   */
  readonly nextLine: () => string | LineTooLong | undefined
  /** Reads one more chunk from the transport into the buffer (the end of stream is a failure). */
  readonly fill: Effect.Effect<void, TransportError>
  /** The size on the wire of the line `readLine` returned last, line ending included. */
  readonly lastLineBytes: () => number
  /** The error the connection itself failed with, if it did (a body stream's consumer may see others). */
  readonly transportFailure: () => TransportError | undefined
  /** Whether a whole line is already buffered (pipelining: replies are flushed when not). */
  readonly hasBufferedLine: () => boolean
  /** Drops every buffered byte (plaintext pipelined after STARTTLS) and says how many. */
  readonly discardBuffered: () => number
  /** The DATA body that follows a 354 reply, up to CRLF "." CRLF. */
  readonly dataBody: (options: DataBodyOptions) => Body
  /** Exactly `size` bytes (a BDAT chunk). */
  readonly chunkBody: (size: number, options: BodyOptions) => Body
}

export interface LineReaderOptions {
  readonly maxLineLength: number
  /**
   * Body deadlines through the connection's watchdog (one timer per connection) rather than a
   * timeout per read; `onBodyTimeout` runs when a body's deadline passes.
   */
  readonly watchdog?: { readonly watchdog: Watchdog; readonly onBodyTimeout: Effect.Effect<void> } | undefined
}

export const make = (transport: Transport, options: LineReaderOptions): LineReader => new Reader(transport, options)

/** One object per connection (a server holds thousands), its operations on the prototype. */
class Reader implements LineReader {
  readonly transport: Transport
  readonly options: LineReaderOptions
  readonly limit: number
  buf: Uint8Array = EMPTY
  pos = 0
  lineBytes = 0
  // The first failure of the connection, kept so that callers can tell it from other errors.
  failure: TransportError | undefined = undefined
  // The server asks hasBufferedLine after each command, then reads that line: one scan serves both.
  scannedBuf: Uint8Array | undefined = undefined
  scannedPos = -1
  scannedLf = -1

  constructor(transport: Transport, options: LineReaderOptions) {
    this.transport = transport
    this.options = options
    this.limit = options.maxLineLength
  }

  readonly fill: Effect.Effect<void, TransportError> = Effect.suspend(() =>
    Effect.matchEffect(this.transport.read, {
      onFailure: (e) => this.fail(e),
      onSuccess: (chunk) => {
        if (chunk === undefined) return this.fail(TransportError.closed("connection closed by peer"))
        this.append(chunk)
        return Effect.void
      }
    })
  )

  readonly readLine: Effect.Effect<string, TransportError | LineTooLong> = Effect.suspend(() => {
    const line = this.nextLine()
    if (line === undefined) return Effect.flatMap(this.fill, () => this.readLine)
    return typeof line === "string" ? Effect.succeed(line) : Effect.fail(line)
  })

  fail(e: TransportError) {
    this.failure ??= e
    return Effect.fail(e)
  }

  append(chunk: Uint8Array) {
    const buf = this.buf
    if (this.pos >= buf.length) {
      this.buf = chunk
    } else {
      const rest = buf.length - this.pos
      const next = new Uint8Array(rest + chunk.length)
      next.set(buf.subarray(this.pos), 0)
      next.set(chunk, rest)
      this.buf = next
    }
    this.pos = 0
  }

  nextLf(): number {
    if (this.buf !== this.scannedBuf || this.pos !== this.scannedPos) {
      this.scannedBuf = this.buf
      this.scannedPos = this.pos
      this.scannedLf = this.buf.indexOf(LF, this.pos)
    }
    return this.scannedLf
  }

  nextLine(): string | LineTooLong | undefined {
    const nl = this.nextLf()
    const buf = this.buf
    const pos = this.pos
    // The limit counts the line ending too, as RFC 5321's 512 does.
    if (nl >= 0 && nl + 1 - pos <= this.limit) {
      const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl
      const line = decodeLine(buf, pos, end)
      this.lineBytes = nl + 1 - pos
      this.pos = nl + 1
      return line
    }
    if (nl >= 0 || buf.length - pos >= this.limit) return new LineTooLong({ limit: this.limit })
    return undefined
  }

  lastLineBytes(): number {
    return this.lineBytes
  }

  transportFailure(): TransportError | undefined {
    return this.failure
  }

  hasBufferedLine(): boolean {
    return this.nextLf() >= 0
  }

  discardBuffered(): number {
    const n = this.buf.length - this.pos
    this.buf = EMPTY
    this.pos = 0
    return n
  }

  /** A fill under the body's deadline, which grows only with bytes actually received. */
  bodyFill(d: BodyDeadline): Effect.Effect<void, TransportError> {
    const idleMs = Duration.toMillis(Duration.fromInputUnsafe(d.idle))
    const msPerByte = 1000 / d.minBytesPerSecond
    let deadline: number | undefined
    let lastFillEnd: number | undefined
    let before = 0
    /** The time left before this fill must have brought bytes (the consumer's time excluded). */
    const remainingAt = (now: number): number => {
      deadline ??= now + idleMs
      // Time the consumer (the backend) spent between reads is not the peer's to answer for.
      if (lastFillEnd !== undefined) deadline += now - lastFillEnd
      before = this.buf.length - this.pos
      return deadline - now
    }
    const account = (now: number) => {
      const received = this.buf.length - this.pos - before
      lastFillEnd = now
      // (received > 0: an empty chunk buys nothing, and 0 * Infinity would make the deadline NaN)
      if (received > 0) deadline = Math.min(deadline! + received * msPerByte, now + idleMs)
    }
    const w = this.options.watchdog
    if (w !== undefined) {
      const watchdog = w.watchdog
      const filled = Effect.map(this.fill, () => {
        watchdog.disarm()
        account(watchdog.now())
      })
      return Effect.suspend(() => {
        const remaining = remainingAt(watchdog.now())
        if (remaining <= 0) return Effect.fail(bodyTimeout())
        watchdog.arm(Duration.millis(remaining), w.onBodyTimeout)
        return Effect.onError(filled, () => Effect.sync(() => watchdog.disarm()))
      })
    }
    const fill = this.fill
    return Effect.gen(function*() {
      const remaining = remainingAt(yield* Clock.currentTimeMillis)
      if (remaining <= 0) return yield* bodyTimeout()
      yield* fill.pipe(Effect.timeoutOrElse({ duration: Duration.millis(remaining), orElse: () => Effect.fail(bodyTimeout()) }))
      account(yield* Clock.currentTimeMillis)
    })
  }

  /**
   * Turns a synchronous `step` over the buffer into a Body. `step` consumes buffered bytes
   * and returns decoded slices; `isDone` says the body's end was reached.
   */
  body(
    step: () => Array<Uint8Array>,
    isDone: () => boolean,
    checkStep: () => SmtpError.SmtpError | undefined,
    o: BodyOptions
  ): Body {
    const fillBody = this.bodyFill(o.deadline)
    let bytes = 0
    let violation: SmtpError.SmtpError | undefined
    const take = (): Array<Uint8Array> => {
      const out = this.pos < this.buf.length ? step() : []
      for (const c of out) bytes += c.length
      if (violation === undefined) {
        violation = bytes > o.maxBytes ? SmtpError.dataTooLarge : checkStep()
      }
      return out
    }
    // Raw pull: the next decoded slices, or undefined at the end of the body.
    const next: Effect.Effect<Array<Uint8Array> | undefined, TransportError> = Effect.suspend(() => {
      if (isDone()) return Effect.succeed(undefined)
      const out = take()
      if (out.length > 0) return Effect.succeed(out)
      if (isDone()) return Effect.succeed(undefined)
      return Effect.flatMap(fillBody, () => next)
    })
    const pull: Effect.Effect<NonEmptyReadonlyArray<Uint8Array>, SmtpError.SmtpError | TransportError | Cause.Done> =
      Effect.flatMap(
        next,
        (out): Effect.Effect<NonEmptyReadonlyArray<Uint8Array>, SmtpError.SmtpError | Cause.Done> => {
          if (violation !== undefined) return Effect.fail(violation)
          if (out === undefined) return Cause.done()
          return Effect.succeed(out as unknown as NonEmptyReadonlyArray<Uint8Array>)
        }
      )
    const drain: Effect.Effect<void, TransportError> = Effect.flatMap(
      next,
      (out) => out === undefined ? Effect.void : drain
    )
    return {
      stream: Stream.fromPull(Effect.succeed(pull)),
      drain,
      violation: () => violation,
      bytes: () => bytes
    }
  }

  dataBody(o: DataBodyOptions): Body {
    const decoder = new DotDecoder(o.bareLineEndings)
    let done = false
    return this.body(
      () => {
        const r = decoder.decode(this.buf, this.pos)
        this.pos += r.consumed
        if (r.done) done = true
        return r.out
      },
      () => done,
      () => o.bareLineEndings === "reject" && decoder.bareLineEndings > 0 ? bareLineEndingError : undefined,
      o
    )
  }

  chunkBody(size: number, o: BodyOptions): Body {
    let left = size
    return this.body(
      () => {
        const n = Math.min(left, this.buf.length - this.pos)
        const slice = this.buf.subarray(this.pos, this.pos + n)
        this.pos += n
        left -= n
        return n > 0 ? [slice] : []
      },
      () => left === 0,
      () => undefined,
      o
    )
  }
}
