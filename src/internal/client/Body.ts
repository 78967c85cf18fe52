/**
 * Message bodies on the client side: DATA (line endings normalised, dots stuffed, the
 * terminator appended, writes batched) and BDAT (exact-size chunks, line endings
 * normalised unless the body is BINARYMIME, no stuffing).
 */
import type { NonEmptyReadonlyArray } from "effect/Array"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Pull from "effect/Pull"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { TransportError } from "../../Transport.ts"
import { DotEncoder, wordsOf, wordStartOf } from "../codec/DotCodec.ts"
import * as Slab from "./Slab.ts"
import { exitOf } from "./Wire.ts"

/**
 * A message: text (sent as UTF-8), bytes, or a stream of bytes. Bytes that need no change
 * go to the socket as they are, not copied (DATA and BDAT alike): a stream must not reuse a
 * buffer it has emitted.
 */
export type Body<E = never, R = never> = string | Uint8Array | Stream.Stream<Uint8Array, E, R>

const encoder = new TextEncoder()
const CR = 13
const LF = 10

const toStream = <E, R>(body: Body<E, R>): Stream.Stream<Uint8Array, E, R> =>
  typeof body === "string" ? Stream.succeed(encoder.encode(body)) : body instanceof Uint8Array ? Stream.succeed(body) : body

/** The body's bytes when it is already in memory (a SIZE estimate, an 8-bit check). */
export const bytesOf = <E, R>(body: Body<E, R>): Uint8Array | undefined =>
  typeof body === "string" ? encoder.encode(body) : body instanceof Uint8Array ? body : undefined

/** What `send` learns from a body in memory, in one pass: its SIZE and whether it is 8-bit. */
export interface BodyFacts {
  /** The size once lone CR and LF are CRLF (and, for DATA, a final CRLF is added): see `normalizedSize`. */
  readonly size: number
  /** Some byte has the high bit set. */
  readonly eightBit: boolean
}

/**
 * `normalizedSize` and `hasEightBit` in one pass. Four bytes at a time: only a word with a
 * byte below 14 (CR, LF, and a few other controls) or above 127 is looked at byte by byte.
 */
export const inspect = (bytes: Uint8Array, options: { readonly finalCrlf: boolean }): BodyFacts => {
  const len = bytes.length
  let n = len
  let eightBit = false
  const wordStart = wordStartOf(bytes)
  const words = wordsOf(bytes, wordStart)
  let i = 0
  const head = words === undefined ? len : wordStart
  for (; i < head; i++) {
    const b = bytes[i]!
    if (b >= 0x80) eightBit = true
    else if ((b === LF && (i === 0 || bytes[i - 1] !== CR)) || (b === CR && bytes[i + 1] !== LF)) n++
  }
  if (words !== undefined) {
    const kn = words.length
    for (let k = 0; k < kn; k++) {
      const w = words[k]!
      // Once an 8-bit byte was seen, only CR and LF matter.
      if (((((w - 0x0e0e0e0e) & ~w) | (eightBit ? 0 : w)) & 0x80808080) === 0) continue
      const at = wordStart + (k << 2)
      for (let j = at; j < at + 4; j++) {
        const b = bytes[j]!
        if (b >= 0x80) eightBit = true
        else if ((b === LF && (j === 0 || bytes[j - 1] !== CR)) || (b === CR && bytes[j + 1] !== LF)) n++
      }
    }
    for (i = wordStart + (kn << 2); i < len; i++) {
      const b = bytes[i]!
      if (b >= 0x80) eightBit = true
      else if ((b === LF && (i === 0 || bytes[i - 1] !== CR)) || (b === CR && bytes[i + 1] !== LF)) n++
    }
  }
  const last = bytes[len - 1]
  if (options.finalCrlf && len > 0 && last !== LF && last !== CR) n += 2
  return { size: n, eightBit }
}

/**
 * The size of `bytes` once lone CR and LF are CRLF (and, for DATA, a final CRLF is added):
 * what the server will count for SIZE (RFC 1870 4).
 */
export const normalizedSize = (bytes: Uint8Array, options: { readonly finalCrlf: boolean }): number =>
  inspect(bytes, options).size

/** Whether any byte has the high bit set. */
export const hasEightBit = (bytes: Uint8Array): boolean => {
  const len = bytes.length
  const wordStart = wordStartOf(bytes)
  const words = wordsOf(bytes, wordStart)
  if (words === undefined) {
    for (let i = 0; i < len; i++) if (bytes[i]! >= 0x80) return true
    return false
  }
  for (let i = 0; i < wordStart; i++) if (bytes[i]! >= 0x80) return true
  const kn = words.length
  let any = 0
  for (let k = 0; k < kn; k++) {
    any |= words[k]!
    // Look now and then, so that an early 8-bit byte ends the scan early.
    if ((k & 255) === 255 && (any & 0x80808080) !== 0) return true
  }
  if ((any & 0x80808080) !== 0) return true
  for (let i = wordStart + (kn << 2); i < len; i++) if (bytes[i]! >= 0x80) return true
  return false
}

/** Writes are batched up to this many bytes: one write for a small message. */
const WRITE_BATCH = 64 * 1024

/** Larger pieces of a body are encoded this much at a time, so that a copy never holds a whole large body. */
const ENCODE_WINDOW = 256 * 1024

const concat = (parts: ReadonlyArray<Uint8Array>, size: number): Uint8Array => {
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(size)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

type Write = (bytes: Uint8Array, timeout: Duration.Duration) => Effect.Effect<void, TransportError>

/**
 * Writes the pieces `next` gives, one after the other, until it gives `undefined`. A write
 * that completes at once (an `Exit`) is followed by the next one at once.
 */
const writeEach = (next: () => Uint8Array | undefined, write: Write, timeout: Duration.Duration) => {
  const loop = (): Effect.Effect<void, TransportError> => {
    while (true) {
      const piece = next()
      if (piece === undefined) return Effect.void
      const w = write(piece, timeout)
      const done = exitOf(w)
      if (done === undefined) return Effect.flatMap(w, loop)
      if (Exit.isFailure(done)) return done
    }
  }
  return Effect.suspend(loop)
}

/**
 * A DATA body in memory, encoded before MAIL FROM is sent: its size for SIZE, and how it goes
 * out. One pass over the body serves both: a small body is encoded whole; a large one is
 * measured a window at a time, and if it needed no change it is later written as it is.
 */
export interface PreparedData {
  /** The body once lone CR and LF are CRLF, with a final CRLF: what SIZE declares (RFC 1870 4). */
  readonly size: number
  readonly bytes: Uint8Array
  /** The whole wire form (stuffed, terminated), for a body of one window. */
  readonly wire: Uint8Array | undefined
  /** A larger body that needs no change: written as it is, then this terminator. */
  readonly tail: Uint8Array | undefined
  /** Some byte has the high bit set: known for a body of one window, `undefined` otherwise. */
  readonly eightBit: boolean | undefined
}

/** What ends a body whose last line ends with CRLF, and one whose last line does not. */
const END = Uint8Array.of(0x2e, CR, LF)
const END_WITH_CRLF = Uint8Array.of(CR, LF, 0x2e, CR, LF)

const DOT = 0x2e

/**
 * A LF or CR at `j` that DATA must change: a lone one, or a line break before a dot. (Reads
 * stay within the array: a read past its end makes V8 compile every read here slower.)
 */
const needsChange = (bytes: Uint8Array, j: number): boolean => {
  const next = j + 1 < bytes.length ? bytes[j + 1]! : -1
  return bytes[j] === LF ? j === 0 || bytes[j - 1] !== CR || next === DOT : next !== LF
}

/**
 * Whether DATA sends `bytes` as they are (every line ending is CRLF, no line starts with a
 * dot), and whether some byte is 8-bit: one pass, four bytes at a time (see `inspect`).
 */
const scanForData = (bytes: Uint8Array): { readonly clean: boolean; readonly eightBit: boolean } => {
  const len = bytes.length
  let clean = len === 0 || bytes[0] !== DOT
  let high = 0
  const wordStart = wordStartOf(bytes)
  const words = wordsOf(bytes, wordStart)
  let i = 0
  if (words !== undefined) {
    for (; i < wordStart; i++) {
      const b = bytes[i]!
      high |= b
      if ((b === LF || b === CR) && needsChange(bytes, i)) clean = false
    }
    const kn = words.length
    for (let k = 0; k < kn; k++) {
      const w = words[k]!
      high |= w
      // Only a word with a byte below 14 can hold a CR or LF.
      if ((((w - 0x0e0e0e0e) | 0) & ~w & 0x80808080) === 0) continue
      const at = wordStart + (k << 2)
      for (let j = at; j < at + 4; j++) {
        const b = bytes[j]!
        if ((b === LF || b === CR) && needsChange(bytes, j)) clean = false
      }
    }
    i = wordStart + (kn << 2)
  }
  for (; i < len; i++) {
    const b = bytes[i]!
    high |= b
    if ((b === LF || b === CR) && needsChange(bytes, i)) clean = false
  }
  return { clean, eightBit: (high & 0x80808080) !== 0 }
}

export const prepareData = (bytes: Uint8Array): PreparedData => {
  if (bytes.length <= ENCODE_WINDOW) {
    const { clean, eightBit } = scanForData(bytes)
    if (clean) {
      // As `DotEncoder` would send it, without its pass: the body, then the terminator.
      const crlf = bytes.length === 0 || bytes[bytes.length - 1] === LF
      return { size: bytes.length + (crlf ? 0 : 2), bytes, wire: Slab.concat(bytes, crlf ? END : END_WITH_CRLF), tail: undefined, eightBit }
    }
    const dots = new DotEncoder()
    const encoded = dots.encode(bytes)
    const wire = Slab.concat(encoded, dots.end())
    return { size: bytes.length + dots.added, bytes, wire, tail: undefined, eightBit }
  }
  const dots = new DotEncoder()
  for (let at = 0; at < bytes.length; at += ENCODE_WINDOW) dots.encode(bytes.subarray(at, at + ENCODE_WINDOW))
  const tail = dots.end()
  return { size: bytes.length + dots.added, bytes, wire: undefined, tail: dots.changed ? undefined : tail, eightBit: undefined }
}

/** Sends a prepared body after the 354 (see `writeDataBody`). */
export const writePreparedData = (data: PreparedData, write: Write, timeout: Duration.Duration): Effect.Effect<void, TransportError> => {
  if (data.wire !== undefined) return Effect.suspend(() => write(data.wire!, timeout))
  const bytes = data.bytes
  let at = 0
  if (data.tail !== undefined) {
    // Needs no change: the body itself, a window at a time, then the terminator.
    let tail: Uint8Array | undefined = data.tail
    return writeEach(() => {
      if (at < bytes.length) return bytes.subarray(at, at += ENCODE_WINDOW)
      const last = tail
      tail = undefined
      return last
    }, write, timeout)
  }
  const dots = new DotEncoder()
  let done = false
  return writeEach(() => {
    if (done) return undefined
    if (at < bytes.length) return dots.encode(bytes.subarray(at, at += ENCODE_WINDOW))
    done = true
    return dots.end()
  }, write, timeout)
}

/**
 * Sends a DATA body after the 354: lone CR and LF become CRLF, a leading dot is doubled,
 * and CRLF "." CRLF ends it, so nothing in the content can end the message early.
 *
 * Text already in that form goes out as it is, without a copy (the encoder returns its
 * input); a large piece is encoded and written a window at a time.
 */
export const writeDataBody = <E, R>(
  body: Body<E, R>,
  write: Write,
  timeout: Duration.Duration
): Effect.Effect<void, E | TransportError, R> => {
  const bytes = bytesOf(body)
  if (bytes !== undefined) return writePreparedData(prepareData(bytes), write, timeout)
  return Effect.suspend(() => {
    const dots = new DotEncoder()
    let parts: Array<Uint8Array> = []
    let size = 0
    const flush = Effect.suspend(() => {
      const bytes = concat(parts, size)
      parts = []
      size = 0
      return write(bytes, timeout)
    })
    const add = (bytes: Uint8Array) => {
      if (bytes.length === 0) return
      parts.push(bytes)
      size += bytes.length
    }
    // Encodes the pieces of one pull, writing whenever a batch is full.
    const feed = (chunks: ReadonlyArray<Uint8Array>): Effect.Effect<void, TransportError> => {
      let k = 0
      let at = 0 // how much of chunks[k] was encoded
      const loop: Effect.Effect<void, TransportError> = Effect.suspend(() => {
        while (k < chunks.length) {
          const c = chunks[k]!
          const end = Math.min(c.length, at + ENCODE_WINDOW)
          add(dots.encode(at === 0 && end === c.length ? c : c.subarray(at, end)))
          if (end === c.length) {
            k++
            at = 0
          } else {
            at = end
          }
          if (size >= WRITE_BATCH) return Effect.andThen(flush, loop)
        }
        return Effect.void
      })
      return loop
    }
    return (body as Stream.Stream<Uint8Array, E, R>).pipe(
      Stream.runForEachArray(feed),
      Effect.andThen(Effect.suspend(() => {
        add(dots.end())
        return flush
      }))
    )
  })
}

/** A body in memory as one BDAT chunk: lone CR and LF made CRLF, unless `binary` (see `chunker`). */
export const wholeChunk = (bytes: Uint8Array, options: { readonly binary: boolean }): Uint8Array => {
  if (options.binary) return bytes
  const crlf = new CrlfNormalizer()
  const head = crlf.push(bytes)
  const pending = crlf.end()
  return pending.length === 0 ? head : Slab.concat(head, pending)
}

/** Turns lone CR and lone LF into CRLF, across chunk boundaries. */
class CrlfNormalizer {
  private afterCr = false

  push(input: Uint8Array): Uint8Array {
    let clean = !this.afterCr
    for (let i = 0; clean && i < input.length; i++) {
      const b = input[i]!
      if (b === LF && (i === 0 || input[i - 1] !== CR)) clean = false
      else if (b === CR && i + 1 < input.length && input[i + 1] !== LF) clean = false
    }
    // The common case, text already in CRLF form, is passed through without a copy
    // (a CR at the very end is decided by the next chunk).
    if (clean) {
      this.afterCr = input.length > 0 && input[input.length - 1] === CR
      return this.afterCr ? input.subarray(0, input.length - 1) : input
    }
    const out = new Uint8Array(input.length * 2 + 1)
    let n = 0
    for (let i = 0; i < input.length; i++) {
      const b = input[i]!
      if (this.afterCr) {
        this.afterCr = false
        out[n++] = CR
        out[n++] = LF
        if (b === LF) continue
      }
      if (b === CR) this.afterCr = true
      else if (b === LF) {
        out[n++] = CR
        out[n++] = LF
      } else out[n++] = b
    }
    return out.subarray(0, n)
  }

  /** What a pending CR becomes at the end of the body. */
  end(): Uint8Array {
    if (!this.afterCr) return new Uint8Array(0)
    this.afterCr = false
    return Uint8Array.of(CR, LF)
  }
}

export interface Chunk {
  readonly bytes: Uint8Array
  readonly last: boolean
}

/**
 * Cuts a body into BDAT chunks of `size` bytes; the last one (possibly empty) is marked.
 * Memory stays within one chunk plus one piece of the stream. `binary` keeps bytes as they
 * are (BINARYMIME); otherwise line endings are normalised to CRLF.
 */
export const chunker = <E, R>(
  body: Body<E, R>,
  options: { readonly size: number; readonly binary: boolean }
): Effect.Effect<Effect.Effect<Chunk, E>, never, R | Scope.Scope> =>
  Effect.map(Stream.toPull(toStream(body)), (pull) => {
    const crlf = options.binary ? undefined : new CrlfNormalizer()
    let parts: Array<Uint8Array> = []
    let buffered = 0
    let ended = false
    const add = (bytes: Uint8Array) => {
      if (bytes.length === 0) return
      parts.push(bytes)
      buffered += bytes.length
    }
    const fill: Effect.Effect<void, E> = Effect.suspend(() => {
      if (ended || buffered > options.size) return Effect.void
      return pull.pipe(
        Effect.map((chunks: NonEmptyReadonlyArray<Uint8Array>) => {
          for (const c of chunks) add(crlf === undefined ? c : crlf.push(c))
        }),
        Pull.catchDone(() =>
          Effect.sync(() => {
            ended = true
            if (crlf !== undefined) add(crlf.end())
          })
        ),
        Effect.andThen(fill)
      )
    })
    // Takes `n` bytes off the front of the buffer.
    const take = (n: number): Uint8Array => {
      const all = concat(parts, buffered)
      parts = n < all.length ? [all.subarray(n)] : []
      buffered = all.length - n
      return all.subarray(0, n)
    }
    return Effect.map(fill, (): Chunk =>
      ended && buffered <= options.size
        ? { bytes: take(buffered), last: true }
        : { bytes: take(options.size), last: false })
  })
