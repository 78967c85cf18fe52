/**
 * The DATA body codec of RFC 5321 4.5.2, as synchronous byte state machines.
 *
 * `DotDecoder` (server) undoes dot-stuffing and stops only at CRLF "." CRLF; bare CR and
 * bare LF are handled by a policy, so an SMTP-smuggling terminator such as LF "." LF or
 * LF "." CRLF never ends a message. `DotEncoder` (client) turns any bytes into a body that
 * decodes back to them: lone CR and LF become CRLF, lines starting with "." are stuffed,
 * and the terminator is appended.
 */

/** What to do with a CR or LF that is not part of a CRLF pair inside DATA. */
export type BareLineEndingPolicy = "reject" | "normalize" | "allow"

const CR = 13
const LF = 10
const DOT = 46
const CRLF: Uint8Array = Uint8Array.of(CR, LF)
const CR_ONLY: Uint8Array = Uint8Array.of(CR)

// Decoder states. A line start is only ever a position after a real CRLF.
const LINE_START = 0
const MIDDLE = 1
const AFTER_CR = 2 // the CR is held back until we know whether LF follows
const AFTER_DOT = 3 // "." at line start, dropped whatever comes next
const AFTER_DOT_CR = 4 // "." CR at line start: LF would end the message

export interface DecodeResult {
  /** Decoded slices; they may alias the input buffer. */
  readonly out: Array<Uint8Array>
  /** How many input bytes were used; the rest belongs to the next command. */
  readonly consumed: number
  /** The terminating CRLF "." CRLF was seen. */
  readonly done: boolean
}

export class DotDecoder {
  private state = LINE_START
  /** The held-back CR of AFTER_CR / AFTER_DOT_CR sits in an earlier chunk. */
  private crFromEarlierChunk = false
  /** A bare CR or LF was seen (counted under every policy). */
  bareLineEndings = 0
  readonly policy: BareLineEndingPolicy

  constructor(policy: BareLineEndingPolicy) {
    this.policy = policy
  }

  decode(input: Uint8Array, start = 0): DecodeResult {
    const out: Array<Uint8Array> = []
    let run = start // start of the bytes copied through unchanged
    const flush = (end: number) => {
      if (end > run) out.push(input.subarray(run, end))
    }
    // A bare line ending at [at, at + len): keep, or replace with CRLF.
    const bare = (at: number, len: number) => {
      this.bareLineEndings++
      if (this.policy === "normalize") {
        flush(at)
        out.push(CRLF)
        run = at + len
      }
    }
    // The held CR turned out to be bare: it is at `i - 1`, or in an earlier chunk.
    const bareHeldCr = (i: number) => {
      if (this.crFromEarlierChunk) {
        this.crFromEarlierChunk = false
        this.bareLineEndings++
        out.push(this.policy === "normalize" ? CRLF : CR_ONLY)
      } else {
        bare(i - 1, 1)
      }
    }

    for (let i = start; i < input.length; i++) {
      const b = input[i]!
      switch (this.state) {
        case LINE_START:
          if (b === DOT) {
            flush(i) // the leading dot is dropped: stuffing or terminator
            run = i + 1
            this.state = AFTER_DOT
            continue
          }
          break
        case AFTER_DOT:
          if (b === CR) {
            this.state = AFTER_DOT_CR
            continue
          }
          break
        case AFTER_DOT_CR:
          if (b === LF) {
            this.state = LINE_START
            this.crFromEarlierChunk = false
            return { out, consumed: i + 1 - start, done: true }
          }
          bareHeldCr(i)
          break
        case AFTER_CR:
          if (b === LF) {
            if (this.crFromEarlierChunk) {
              this.crFromEarlierChunk = false
              out.push(CR_ONLY)
            }
            this.state = LINE_START
            continue
          }
          bareHeldCr(i)
          break
      }
      // MIDDLE handling for `b` (also reached from the states above).
      if (b === CR) {
        this.state = AFTER_CR
      } else if (b === LF) {
        bare(i, 1)
        this.state = MIDDLE
      } else {
        this.state = MIDDLE
      }
    }
    // Hold back a trailing CR: whether it is bare depends on the next chunk.
    if (this.state === AFTER_CR || this.state === AFTER_DOT_CR) {
      if (!this.crFromEarlierChunk) {
        flush(input.length - 1)
        this.crFromEarlierChunk = true
      }
      // else: the chunk was empty past the CR; nothing to flush
      run = input.length
    }
    flush(input.length)
    return { out, consumed: input.length - start, done: false }
  }
}

/** Client side: normalises line endings, stuffs dots, and terminates. */
export class DotEncoder {
  private lineStart = true
  private afterCr = false
  private empty = true

  encode(input: Uint8Array): Uint8Array {
    // Worst case every byte doubles ("\n" -> CRLF, "." -> "..").
    const out = new Uint8Array(input.length * 2 + 2)
    let n = 0
    for (let i = 0; i < input.length; i++) {
      const b = input[i]!
      this.empty = false
      if (this.afterCr) {
        this.afterCr = false
        out[n++] = LF
        this.lineStart = true
        if (b === LF) continue
      }
      if (b === CR) {
        out[n++] = CR
        this.afterCr = true
      } else if (b === LF) {
        out[n++] = CR
        out[n++] = LF
        this.lineStart = true
      } else {
        if (b === DOT && this.lineStart) out[n++] = DOT
        out[n++] = b
        this.lineStart = false
      }
    }
    return out.subarray(0, n)
  }

  /** The bytes that end the body: a missing final CRLF, then "." CRLF. */
  end(): Uint8Array {
    const tail: Array<number> = []
    if (this.afterCr) {
      tail.push(LF)
      this.afterCr = false
      this.lineStart = true
    }
    if (!this.lineStart && !this.empty) tail.push(CR, LF)
    tail.push(DOT, CR, LF)
    return Uint8Array.from(tail)
  }
}

/** What the decoder returns for an encoded body: lone CR/LF as CRLF, a final CRLF added to a non-empty body. */
export const normalizeBody = (input: Uint8Array): Uint8Array => {
  const out: Array<number> = []
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!
    if (b === CR) {
      out.push(CR, LF)
      if (input[i + 1] === LF) i++
    } else if (b === LF) {
      out.push(CR, LF)
    } else {
      out.push(b)
    }
  }
  const len = out.length
  if (len > 0 && !(out[len - 2] === CR && out[len - 1] === LF)) out.push(CR, LF)
  return Uint8Array.from(out)
}
