/**
 * The DATA body codec of RFC 5321 4.5.2, as synchronous byte state machines.
 *
 * `DotDecoder` (server) undoes dot-stuffing and stops only at CRLF "." CRLF; bare CR and
 * bare LF are handled by a policy, so an SMTP-smuggling terminator such as LF "." LF or
 * LF "." CRLF never ends a message. It also measures lines, and without dot-stuffing it
 * applies the same rules to the text of a BDAT message. `DotEncoder` (client) turns any bytes into a body that
 * decodes back to them: lone CR and LF become CRLF, lines starting with "." are stuffed,
 * and the terminator is appended.
 */

/**
 * What to do with a CR or LF that is not part of a CRLF pair inside DATA: `reject` the message
 * (550 5.5.2, so SMTP smuggling cannot split it), `normalize` it to CRLF, or `allow` it as is.
 */
export type BareLineEndingPolicy = "reject" | "normalize" | "allow"

const CR = 13
const LF = 10
const DOT = 46
const CRLF: Uint8Array = Uint8Array.of(CR, LF)
const CR_ONLY: Uint8Array = Uint8Array.of(CR)
const EMPTY: Uint8Array = new Uint8Array(0)

/**
 * Scanning four bytes at a time. `words` views the whole 32-bit words of an input, the first
 * at index `wordStart` (the first 4-byte aligned position of its buffer). A word holds a byte
 * below 14 exactly when `(w - 0x0e0e0e0e) & ~w & 0x80808080` is not zero: only such a word
 * can hold a CR or LF, and only its four bytes are looked at one by one.
 */
export const wordStartOf = (input: Uint8Array): number => Math.min((4 - (input.byteOffset & 3)) & 3, input.length)

/** Inputs shorter than this are scanned a byte at a time. */
const MIN_WORDS_INPUT = 32

export const wordsOf = (input: Uint8Array, wordStart: number): Int32Array | undefined =>
  input.length < MIN_WORDS_INPUT
    ? undefined
    : new Int32Array(input.buffer, input.byteOffset + wordStart, (input.length - wordStart) >> 2)

/** The first CR or LF of `input` at or after `from`, or `input.length`. */
const nextLineBreak = (input: Uint8Array, words: Int32Array | undefined, wordStart: number, from: number): number => {
  const len = input.length
  let i = from
  // Short lines and empty ones end within a few bytes: look at those first.
  const near = Math.min(len, from + 8)
  for (; i < near; i++) {
    const b = input[i]!
    if (b === CR || b === LF) return i
  }
  if (words !== undefined) {
    const kn = words.length
    let k = i <= wordStart ? 0 : (i - wordStart + 3) >> 2
    if (k < kn) {
      const head = wordStart + (k << 2)
      for (; i < head; i++) {
        const b = input[i]!
        if (b === CR || b === LF) return i
      }
      for (; k < kn; k++) {
        const w = words[k]!
        if (((w - 0x0e0e0e0e) & ~w & 0x80808080) !== 0) {
          const at = wordStart + (k << 2)
          for (let j = at; j < at + 4; j++) {
            const b = input[j]!
            if (b === CR || b === LF) return j
          }
        }
      }
      i = wordStart + (kn << 2)
    }
  }
  for (; i < len; i++) {
    const b = input[i]!
    if (b === CR || b === LF) return i
  }
  return len
}

// Decoder states. A line start is only ever a position after a real CRLF (or, under
// "normalize", after a bare line ending turned into one).
const LINE_START = 0
const MIDDLE = 1
const AFTER_CR = 2 // the CR is held back until we know whether LF follows
const AFTER_DOT = 3 // "." at line start, dropped whatever comes next
const AFTER_DOT_CR = 4 // "." CR at line start: LF would end the message
const AFTER_BARE = 5 // "normalize": just after a bare line ending made into CRLF
const AFTER_BARE_DOT = 6 // "normalize": "." after it, held: a stuffing dot unless a line break follows

const DOT_ONLY: Uint8Array = Uint8Array.of(DOT)

export interface DecodeResult {
  /** Decoded slices; they may alias the input buffer. */
  readonly out: Array<Uint8Array>
  /** How many input bytes were used; the rest belongs to the next command. */
  readonly consumed: number
  /** The terminating CRLF "." CRLF was seen. */
  readonly done: boolean
}

export interface DotDecoderOptions {
  /**
   * DATA's dot-stuffing and terminator. Without it (the text of a BDAT message) the same line
   * rules apply, every byte is content and the input never ends: `finish` ends it. Default true.
   */
  readonly stuffing?: boolean | undefined
  /** Lines longer than this (in bytes, without the line ending) are counted in `longLines`. Default none. */
  readonly maxLineLength?: number | undefined
}

export class DotDecoder {
  private state = LINE_START
  /** The held-back CR of AFTER_CR / AFTER_DOT_CR sits in an earlier chunk. */
  private crFromEarlierChunk = false
  /** Bytes of the current line in earlier chunks (-Infinity once it was counted as too long). */
  private lineLength = 0
  /** A bare CR or LF was seen (counted under every policy). */
  bareLineEndings = 0
  /** Lines longer than `maxLineLength` (any CR or LF ends a line here), counted once they are. */
  longLines = 0
  readonly policy: BareLineEndingPolicy
  readonly maxLineLength: number
  private readonly stuffing: boolean
  /** Under "normalize" with dot-stuffing, a bare line ending starts a line. */
  private readonly bareStarts: boolean

  constructor(policy: BareLineEndingPolicy, options?: DotDecoderOptions) {
    this.policy = policy
    this.stuffing = options?.stuffing ?? true
    this.maxLineLength = options?.maxLineLength ?? Number.POSITIVE_INFINITY
    this.bareStarts = this.stuffing && policy === "normalize"
  }

  decode(input: Uint8Array, start = 0): DecodeResult {
    const out: Array<Uint8Array> = []
    const len = input.length
    const normalize = this.policy === "normalize"
    const stuffing = this.stuffing
    const maxLine = this.maxLineLength
    // After a bare line ending: where its normalised line starts, or an ordinary middle of line.
    const afterBare = this.bareStarts ? AFTER_BARE : MIDDLE
    let state = this.state
    let run = start // start of the bytes copied through unchanged
    let i = start
    // The current line: its bytes in earlier chunks, and where it starts in this one.
    let carried = this.lineLength
    let lineFrom = start
    const wordStart = wordStartOf(input)
    const words = wordsOf(input, wordStart)

    while (i < len) {
      if (state === MIDDLE) {
        // Inside a line only CR and LF matter: jump to the next one.
        const p = nextLineBreak(input, words, wordStart, i)
        if (p === len) break // the rest of the chunk is line content
        if (carried + p - lineFrom > maxLine) this.longLines++
        carried = 0
        if (input[p] === CR) {
          // The usual line end, CRLF and then an ordinary byte: straight on to the next line.
          const q = p + 2
          if (q < len && input[p + 1] === LF) {
            const c = input[q]!
            if (c !== CR && c !== LF && (c !== DOT || !stuffing)) {
              lineFrom = q
              i = q
              continue
            }
          }
          lineFrom = p + 1
          state = AFTER_CR
          i = p + 1
          continue
        }
        lineFrom = p + 1
        // A bare LF: keep it, or replace it with CRLF.
        this.bareLineEndings++
        if (normalize) {
          if (p > run) out.push(input.subarray(run, p))
          out.push(CRLF)
          run = p + 1
          state = afterBare
        }
        i = p + 1
        continue
      }

      const b = input[i]!
      switch (state) {
        case LINE_START:
          if (b === DOT && stuffing) {
            if (i > run) out.push(input.subarray(run, i)) // the leading dot is dropped: stuffing or terminator
            run = i + 1
            state = AFTER_DOT
            i++
            continue
          }
          break
        case AFTER_DOT:
          if (b === CR) {
            if (carried + i - lineFrom > maxLine) this.longLines++
            carried = 0
            lineFrom = i + 1
            state = AFTER_DOT_CR
            i++
            continue
          }
          break
        case AFTER_DOT_CR:
          if (b === LF) {
            this.state = LINE_START
            this.crFromEarlierChunk = false
            this.lineLength = 0
            return { out, consumed: i + 1 - start, done: true }
          }
          run = this.bareHeldCr(out, input, run, i)
          if (this.bareStarts) {
            state = AFTER_BARE
            continue // `b` starts the normalised line
          }
          break
        case AFTER_CR:
          if (b === LF) {
            if (this.crFromEarlierChunk) {
              this.crFromEarlierChunk = false
              out.push(CR_ONLY)
            }
            lineFrom = i + 1
            state = LINE_START
            i++
            continue
          }
          run = this.bareHeldCr(out, input, run, i)
          if (this.bareStarts) {
            state = AFTER_BARE
            continue // `b` starts the normalised line
          }
          break
        case AFTER_BARE:
          if (b === DOT) {
            // Stuffing, unless the line is nothing but the dot: then it is content (a fake
            // terminator such as LF "." LF never ends the message, and never vanishes either).
            if (i > run) out.push(input.subarray(run, i))
            run = i + 1
            state = AFTER_BARE_DOT
            i++
            continue
          }
          break
        case AFTER_BARE_DOT:
          if (b === CR || b === LF) out.push(DOT_ONLY)
          break
      }
      // MIDDLE handling for `b` (reached from the states above).
      if (b === CR) {
        if (carried + i - lineFrom > maxLine) this.longLines++
        carried = 0
        lineFrom = i + 1
        state = AFTER_CR
      } else if (b === LF) {
        if (carried + i - lineFrom > maxLine) this.longLines++
        carried = 0
        lineFrom = i + 1
        run = this.bare(out, input, run, i)
        state = afterBare
      } else {
        state = MIDDLE
      }
      i++
    }
    this.state = state
    this.lineLength = carried + (len - lineFrom)
    // A line already too long is counted now, not once (if ever) it ends; -Infinity: not again.
    if (this.lineLength > maxLine) {
      this.longLines++
      this.lineLength = Number.NEGATIVE_INFINITY
    }
    // Hold back a trailing CR: whether it is bare depends on the next chunk.
    if (state === AFTER_CR || state === AFTER_DOT_CR) {
      if (!this.crFromEarlierChunk) {
        if (len - 1 > run) out.push(input.subarray(run, len - 1))
        this.crFromEarlierChunk = true
      }
      // else: the chunk was empty past the CR; nothing to flush
      run = len
    }
    if (len > run) out.push(input.subarray(run, len))
    return { out, consumed: len - start, done: false }
  }

  /**
   * The end of a message without a terminator (BDAT): a CR still held back was bare, and the
   * last line, which no line ending closed, is measured too. Returns what is left to emit.
   */
  finish(): Array<Uint8Array> {
    const out: Array<Uint8Array> = []
    if (this.lineLength > this.maxLineLength) this.longLines++
    if (this.state === AFTER_CR && this.crFromEarlierChunk) {
      this.bareLineEndings++
      out.push(this.policy === "normalize" ? CRLF : CR_ONLY)
    }
    this.state = LINE_START
    this.crFromEarlierChunk = false
    this.lineLength = 0
    return out
  }

  /** A bare line ending of one byte at `at`: kept, or replaced with CRLF. Returns the new run start. */
  private bare(out: Array<Uint8Array>, input: Uint8Array, run: number, at: number): number {
    this.bareLineEndings++
    if (this.policy !== "normalize") return run
    if (at > run) out.push(input.subarray(run, at))
    out.push(CRLF)
    return at + 1
  }

  /** The held CR turned out to be bare: it is at `i - 1`, or in an earlier chunk. Returns the new run start. */
  private bareHeldCr(out: Array<Uint8Array>, input: Uint8Array, run: number, i: number): number {
    if (!this.crFromEarlierChunk) return this.bare(out, input, run, i - 1)
    this.crFromEarlierChunk = false
    this.bareLineEndings++
    out.push(this.policy === "normalize" ? CRLF : CR_ONLY)
    return run
  }
}

const END: Uint8Array = Uint8Array.of(DOT, CR, LF)
const END_AFTER_CR: Uint8Array = Uint8Array.of(LF, DOT, CR, LF)
const END_WITH_CRLF: Uint8Array = Uint8Array.of(CR, LF, DOT, CR, LF)

/** Client side: normalises line endings, stuffs dots, and terminates. */
export class DotEncoder {
  /**
   * CR and LF bytes added so far to make lone ones CRLF, and the final CRLF `end` adds: the
   * input's length plus this is its size once normalised, what SIZE declares (RFC 1870).
   */
  added = 0
  /** Some input so far was changed (a line ending fixed, a dot stuffed): see `encode`. */
  changed = false
  private lineStart = true
  private afterCr = false
  private empty = true
  /** The output of the current `encode` call, once it differs from the input. */
  private buf: Uint8Array = EMPTY
  private n = 0
  private inputLength = 0

  /**
   * Encodes the next piece of the body. When nothing needs changing (CRLF lines, no leading
   * dot: the usual case) the input itself is returned, not a copy; otherwise a new buffer
   * only a little larger than the input, grown if a body needs many changes.
   */
  encode(input: Uint8Array): Uint8Array {
    const len = input.length
    if (len === 0) return input
    this.empty = false
    this.buf = EMPTY
    this.n = 0
    this.inputLength = len
    let run = 0 // start of the input bytes not yet copied to the output
    let i = 0
    let lineStart = this.lineStart
    if (this.afterCr) {
      // The CR that ended the previous piece went out already: an LF here completes it.
      this.afterCr = false
      lineStart = true
      if (input[0] === LF) i = 1
      else this.put(input, 0, 0, LF)
    }
    const wordStart = wordStartOf(input)
    const words = wordsOf(input, wordStart)
    while (i < len) {
      if (lineStart) {
        lineStart = false
        if (input[i] === DOT) {
          // The dot goes out twice: once with the bytes before it, once with those after.
          this.put(input, run, i + 1, -1)
          run = i
        }
      }
      const c = input[i]!
      const p = c === CR || c === LF ? i : nextLineBreak(input, words, wordStart, i + 1)
      if (p === len) break
      if (input[p] === CR) {
        if (p + 1 === len) {
          this.afterCr = true // its LF (or the one that replaces it) comes with the next piece
          break
        }
        if (input[p + 1] !== LF) {
          // A lone CR: add the LF.
          this.put(input, run, p + 1, LF)
          run = p + 1
          i = p + 1
        } else {
          i = p + 2
        }
      } else {
        // A lone LF: add the CR before it.
        this.put(input, run, p, CR)
        run = p
        i = p + 1
      }
      lineStart = true
    }
    this.lineStart = lineStart
    if (this.buf === EMPTY) return input // unchanged
    this.changed = true
    this.put(input, run, len, -1)
    const out = this.buf.subarray(0, this.n)
    this.buf = EMPTY
    return out
  }

  /** Copies `input[from, to)` to the output, then the byte `extra` unless it is -1. */
  private put(input: Uint8Array, from: number, to: number, extra: number): void {
    const count = to - from
    let buf = this.buf
    let n = this.n
    if (n + count + 1 > buf.length) {
      buf = this.grow(count + 1)
    }
    if (count > 32) {
      buf.set(input.subarray(from, to), n)
      n += count
    } else {
      for (let k = from; k < to; k++) buf[n++] = input[k]!
    }
    if (extra !== -1) {
      buf[n++] = extra
      this.added++
    }
    this.n = n
  }

  /** A bigger output buffer, with room for `count` more bytes; the first is sized from the input, an eighth over it. */
  private grow(count: number): Uint8Array {
    const need = this.n + count
    const len = this.inputLength
    const size = Math.max(need, this.buf === EMPTY ? len + (len >> 3) + 16 : this.buf.length * 2)
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.n))
    this.buf = next
    return next
  }

  /** The bytes that end the body: a missing final CRLF, then "." CRLF. Shared: not to be modified. */
  end(): Uint8Array {
    let tail: Uint8Array
    if (this.afterCr) {
      tail = END_AFTER_CR
      this.added += 1
    } else if (!this.lineStart && !this.empty) {
      tail = END_WITH_CRLF
      this.added += 2
    } else {
      tail = END
    }
    this.afterCr = false
    this.lineStart = true
    return tail
  }
}
