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
import * as SmtpError from "../../SmtpError.ts"
import { type Transport, TransportError } from "../../Transport.ts"
import { type BareLineEndingPolicy, DotDecoder } from "./DotCodec.ts"
import { joinUnread } from "./Unread.ts"
import type { Watchdog } from "../server/Deadlines.ts"

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
 * How long a body may take: it starts with `idleMillis` to get going; every byte received
 * buys `1 / minBytesPerSecond` seconds more, never more than `idleMillis` ahead of now.
 * A sender that trickles bytes slower than that rate runs out of time. (Milliseconds, converted
 * once per server: every body reads them.)
 */
export interface BodyDeadline {
  readonly idleMillis: number
  readonly minBytesPerSecond: number
}

export interface BodyOptions {
  readonly deadline: BodyDeadline
  /** Larger bodies fail the stream with 552 5.3.4; the rest is still read by `drain`. */
  readonly maxBytes: number
}

/** The line rules of a text body (7BIT, 8BITMIME): not of a BINARYMIME one. */
interface TextRules {
  readonly bareLineEndings: BareLineEndingPolicy
  /** Longest line in bytes, without its line ending. Default no limit. */
  readonly maxLineLength?: number | undefined
  /** The reply to a body with a longer line. */
  readonly lineTooLong?: SmtpError.SmtpError | undefined
}

export interface DataBodyOptions extends BodyOptions, TextRules {}

/** A BDAT chunk of a text message: every chunk of the message shares one decoder. */
export interface TextChunk {
  readonly decoder: DotDecoder
  readonly lineTooLong: SmtpError.SmtpError
  /** The chunk ends the message (BDAT LAST): a CR still held back at its end was bare. */
  readonly last: boolean
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

/** The refusal of a body with a line longer than `max` bytes. */
export const lineTooLongError = (max: number) =>
  SmtpError.SmtpError.of(550, [5, 6, 0], `Message contains a line longer than ${max} bytes`)

/** The body's own verdict on its lines, if any. */
const textViolation = (decoder: DotDecoder, lineTooLong: SmtpError.SmtpError | undefined): SmtpError.SmtpError | undefined =>
  decoder.policy === "reject" && decoder.bareLineEndings > 0
    ? bareLineEndingError
    : decoder.longLines > 0
    ? lineTooLong ?? lineTooLongError(decoder.maxLineLength)
    : undefined

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
  /** Whether that line ended with CRLF (rather than a lone LF). */
  readonly lastLineCrlf: () => boolean
  /** Bytes received and not yet taken (pipelined input, or the start of a line). */
  readonly buffered: () => number
  /** Whether the buffered bytes start with `prefix` (ASCII, upper case), in any case. */
  readonly bufferedStartsWith: (prefix: string) => boolean
  /**
   * Drops the rest of an over-long line, up to and including its LF, reading as needed;
   * `LineTooLong` past `maxBytes` dropped.
   */
  readonly skipLine: (maxBytes: number) => Effect.Effect<void, TransportError | LineTooLong>
  /** The error the connection itself failed with, if it did (a body stream's consumer may see others). */
  readonly transportFailure: () => TransportError | undefined
  /** Whether a whole line is already buffered (pipelining: replies are flushed when not). */
  readonly hasBufferedLine: () => boolean
  /** Drops every buffered byte (plaintext pipelined after STARTTLS) and says how many. */
  readonly discardBuffered: () => number
  /** The DATA body that follows a 354 reply, up to CRLF "." CRLF. */
  readonly dataBody: (options: DataBodyOptions) => Body
  /** Exactly `size` bytes (a BDAT chunk); with `text`, under the line rules of its decoder. */
  readonly chunkBody: (size: number, options: BodyOptions, text?: TextChunk) => Body
}

export interface LineReaderOptions {
  readonly maxLineLength: number
  /**
   * Body deadlines through the connection's watchdog (one timer per connection) rather than a
   * timeout per read; `onBodyTimeout` runs when a body's deadline passes. The watchdog holds one
   * deadline at a time, shared with the command, write and AUTH deadlines: arming one replaces
   * another, so the conversation never needs two at once.
   */
  readonly watchdog?: { readonly watchdog: Watchdog; readonly onBodyTimeout: Effect.Effect<void> } | undefined
}

export const make = (transport: Transport, options: LineReaderOptions): LineReader => new Reader(transport, options)

/** One object per connection (a server holds thousands), its operations on the prototype. */
class Reader implements LineReader {
  readonly transport: Transport
  readonly limit: number
  readonly watch: LineReaderOptions["watchdog"]
  buf: Uint8Array = EMPTY
  pos = 0
  lineBytes = 0
  lineCrlf = true
  // The first failure of the connection, kept so that callers can tell it from other errors.
  failure: TransportError | undefined = undefined
  // The server asks hasBufferedLine after each command, then reads that line: one scan serves both.
  scannedBuf: Uint8Array | undefined = undefined
  scannedPos = -1
  scannedLf = -1

  /** Reads one chunk into the buffer; made once per connection: a read allocates nothing of its own. */
  readonly fill: Effect.Effect<void, TransportError>

  constructor(transport: Transport, options: LineReaderOptions) {
    this.transport = transport
    this.limit = options.maxLineLength
    this.watch = options.watchdog
    this.fill = Effect.matchCauseEffect(transport.read, {
      onFailure: (cause) => {
        const e = Cause.findErrorOption(cause)
        if (e._tag === "Some") this.failure ??= e.value
        return Effect.failCause(cause)
      },
      onSuccess: (chunk) => {
        if (chunk === undefined) return this.fail(TransportError.closed("connection closed by peer"))
        this.append(chunk)
        return Effect.void
      }
    })
  }

  #readLine: Effect.Effect<string, TransportError | LineTooLong> | undefined = undefined
  // Made on first use: only AUTH exchanges read lines this way.
  get readLine(): Effect.Effect<string, TransportError | LineTooLong> {
    return this.#readLine ??= Effect.suspend(() => {
      const line = this.nextLine()
      if (line === undefined) return Effect.flatMap(this.fill, () => this.readLine)
      return typeof line === "string" ? Effect.succeed(line) : Effect.fail(line)
    })
  }

  fail(e: TransportError) {
    this.failure ??= e
    return Effect.fail(e)
  }

  append(chunk: Uint8Array) {
    this.buf = joinUnread(this.buf, this.pos, chunk)
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
      this.lineCrlf = end !== nl
      this.pos = nl + 1
      return line
    }
    if (nl >= 0 || buf.length - pos >= this.limit) return new LineTooLong({ limit: this.limit })
    return undefined
  }

  lastLineBytes(): number {
    return this.lineBytes
  }

  lastLineCrlf(): boolean {
    return this.lineCrlf
  }

  buffered(): number {
    return this.buf.length - this.pos
  }

  bufferedStartsWith(prefix: string): boolean {
    const buf = this.buf
    const pos = this.pos
    if (buf.length - pos < prefix.length) return false
    for (let i = 0; i < prefix.length; i++) {
      const c = buf[pos + i]!
      if ((c >= 97 && c <= 122 ? c - 32 : c) !== prefix.charCodeAt(i)) return false
    }
    return true
  }

  skipLine(maxBytes: number): Effect.Effect<void, TransportError | LineTooLong> {
    let skipped = 0
    const loop: Effect.Effect<void, TransportError | LineTooLong> = Effect.suspend(() => {
      const nl = this.buf.indexOf(LF, this.pos)
      skipped += (nl >= 0 ? nl + 1 : this.buf.length) - this.pos
      if (skipped > maxBytes) return Effect.fail(new LineTooLong({ limit: maxBytes }))
      if (nl >= 0) {
        this.pos = nl + 1
        return Effect.void
      }
      this.buf = EMPTY
      this.pos = 0
      return Effect.flatMap(this.fill, () => loop)
    })
    return loop
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

  /**
   * Turns a synchronous `step` over the buffer into a Body. `step` consumes buffered bytes
   * and returns decoded slices; `isDone` says the body's end was reached.
   */
  body(
    step: () => Array<Uint8Array>,
    isDone: () => boolean,
    checkStep: () => SmtpError.SmtpError | undefined,
    o: BodyOptions,
    end?: () => Array<Uint8Array>
  ): Body {
    return new BodyRead(this, step, isDone, checkStep, o, end)
  }

  dataBody(o: DataBodyOptions): Body {
    const decoder = new DotDecoder(o.bareLineEndings, { maxLineLength: o.maxLineLength })
    let done = false
    return this.body(
      () => {
        const r = decoder.decode(this.buf, this.pos)
        this.pos += r.consumed
        if (r.done) done = true
        return r.out
      },
      () => done,
      () => textViolation(decoder, o.lineTooLong),
      o
    )
  }

  chunkBody(size: number, o: BodyOptions, text?: TextChunk): Body {
    let left = size
    if (text === undefined) {
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
    const decoder = text.decoder
    return this.body(
      () => {
        const n = Math.min(left, this.buf.length - this.pos)
        const out = decoder.decode(this.buf.subarray(this.pos, this.pos + n)).out
        this.pos += n
        left -= n
        return out
      },
      () => left === 0,
      () => textViolation(decoder, text.lineTooLong),
      o,
      text.last ? () => decoder.finish() : undefined
    )
  }
}

/**
 * One body being read: its counters, its deadline and the Effects its stream pulls with, in
 * one object (its steps are methods) rather than a closure each: every message has one.
 */
class BodyRead implements Body {
  readonly reader: Reader
  readonly step: () => Array<Uint8Array>
  readonly isDone: () => boolean
  readonly checkStep: () => SmtpError.SmtpError | undefined
  readonly maxBytes: number
  /** What `end` still has to say at the end (a held-back CR), once. */
  ending: (() => Array<Uint8Array>) | undefined
  bytesSeen = 0
  violationSeen: SmtpError.SmtpError | undefined = undefined

  // The deadline: it starts `idleMs` ahead at the first fill; every byte received buys
  // `msPerByte` more, never more than `idleMs` ahead of now.
  readonly idleMs: number
  readonly msPerByte: number
  deadline: number | undefined = undefined
  lastFillEnd: number | undefined = undefined
  bufferedBefore = 0

  /** Raw pull: the next decoded slices, or undefined at the end of the body. */
  readonly next: Effect.Effect<Array<Uint8Array> | undefined, TransportError>
  readonly fillThenNext: Effect.Effect<Array<Uint8Array> | undefined, TransportError>
  readonly stream: Stream.Stream<Uint8Array, SmtpError.SmtpError | TransportError>
  readonly drain: Effect.Effect<void, TransportError>

  constructor(
    reader: Reader,
    step: () => Array<Uint8Array>,
    isDone: () => boolean,
    checkStep: () => SmtpError.SmtpError | undefined,
    o: BodyOptions,
    end: (() => Array<Uint8Array>) | undefined
  ) {
    this.reader = reader
    this.step = step
    this.isDone = isDone
    this.checkStep = checkStep
    this.maxBytes = o.maxBytes
    this.ending = end
    this.idleMs = o.deadline.idleMillis
    this.msPerByte = 1000 / o.deadline.minBytesPerSecond
    this.next = Effect.suspend(() => this.advance())
    const w = reader.watch
    const fill = w === undefined ? this.timedFill() : this.watchedFill(w.watchdog, w.onBodyTimeout)
    this.fillThenNext = Effect.flatMap(fill, () => this.next)
    const pull: Effect.Effect<NonEmptyReadonlyArray<Uint8Array>, SmtpError.SmtpError | TransportError | Cause.Done> =
      Effect.flatMap(this.next, (out) => this.checked(out))
    this.stream = Stream.fromPull(Effect.succeed(pull))
    this.drain = Effect.flatMap(this.next, (out) => out === undefined ? Effect.void : this.drain)
  }

  violation(): SmtpError.SmtpError | undefined {
    return this.violationSeen
  }

  bytes(): number {
    return this.bytesSeen
  }

  account(out: Array<Uint8Array>): Array<Uint8Array> {
    for (const c of out) this.bytesSeen += c.length
    if (this.violationSeen === undefined) {
      this.violationSeen = this.bytesSeen > this.maxBytes ? SmtpError.dataTooLarge : this.checkStep()
    }
    return out
  }

  advance(): Effect.Effect<Array<Uint8Array> | undefined, TransportError> {
    if (this.isDone()) return this.ended()
    const r = this.reader
    const out = this.account(r.pos < r.buf.length ? this.step() : [])
    if (out.length > 0) return Effect.succeed(out)
    if (this.isDone()) return this.ended()
    return this.fillThenNext
  }

  ended(): Effect.Effect<Array<Uint8Array> | undefined> {
    const ending = this.ending
    if (ending === undefined) return Effect.succeed(undefined)
    this.ending = undefined
    const tail = this.account(ending())
    return Effect.succeed(tail.length > 0 ? tail : undefined)
  }

  checked(out: Array<Uint8Array> | undefined): Effect.Effect<NonEmptyReadonlyArray<Uint8Array>, SmtpError.SmtpError | Cause.Done> {
    if (this.violationSeen !== undefined) return Effect.fail(this.violationSeen)
    if (out === undefined) return Cause.done()
    return Effect.succeed(out as unknown as NonEmptyReadonlyArray<Uint8Array>)
  }

  /** The time left before this fill must have brought bytes (the consumer's time excluded). */
  remainingAt(now: number): number {
    let deadline = this.deadline ?? now + this.idleMs
    // Time the consumer (the backend) spent between reads is not the peer's to answer for.
    if (this.lastFillEnd !== undefined) deadline += now - this.lastFillEnd
    this.deadline = deadline
    const r = this.reader
    this.bufferedBefore = r.buf.length - r.pos
    return deadline - now
  }

  filledAt(now: number) {
    const r = this.reader
    const received = r.buf.length - r.pos - this.bufferedBefore
    this.lastFillEnd = now
    // (received > 0: an empty chunk buys nothing, and 0 * Infinity would make the deadline NaN)
    if (received > 0) this.deadline = Math.min(this.deadline! + received * this.msPerByte, now + this.idleMs)
  }

  /** A fill under the body's deadline, for a reader without a watchdog: a timeout per fill. */
  timedFill(): Effect.Effect<void, TransportError> {
    const fill = this.reader.fill
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const remaining = this.remainingAt(now)
      if (remaining <= 0) return Effect.fail(bodyTimeout())
      return fill.pipe(
        Effect.timeoutOrElse({ duration: Duration.millis(remaining), orElse: () => Effect.fail(bodyTimeout()) }),
        Effect.andThen(Clock.currentTimeMillis),
        Effect.map((end) => this.filledAt(end))
      )
    })
  }

  /** A fill under the body's deadline, kept by the connection's watchdog (one timer per connection). */
  watchedFill(watchdog: Watchdog, onBodyTimeout: Effect.Effect<void>): Effect.Effect<void, TransportError> {
    const filled = Effect.onError(
      Effect.map(this.reader.fill, () => {
        watchdog.disarm()
        this.filledAt(watchdog.now())
      }),
      () => Effect.sync(() => watchdog.disarm())
    )
    return Effect.suspend(() => {
      const remaining = this.remainingAt(watchdog.now())
      if (remaining <= 0) return Effect.fail(bodyTimeout())
      watchdog.arm(remaining, onBodyTimeout)
      return filled
    })
  }
}
