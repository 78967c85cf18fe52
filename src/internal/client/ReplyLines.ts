/**
 * The client's read side: reply lines cut out of the bytes a server sends, each bounded in
 * length, and the one-line replies a server says again and again ("250 2.1.0 Ok", "354 …")
 * recognised by their bytes, so that they are neither decoded nor parsed a second time.
 *
 * (The server reads with `LineReader`, which also takes DATA bodies and BDAT chunks; a client
 * only ever reads reply lines.)
 */
import { joinUnread } from "../codec/Unread.ts"

const LF = 10
const CR = 13
const EMPTY = new Uint8Array(0)
const utf8 = new TextDecoder("utf-8")

/** `nextLine`'s answer for a line over the limit, with or without its end in sight. */
export const TOO_LONG = Symbol("ReplyLines/TooLong")

/** `A`: what a remembered line stands for (the client's parsed reply). */
export class ReplyLines<A> {
  private buf: Uint8Array = EMPTY
  private pos = 0
  // The line `nextLine` took last: where it was, its size with its line ending, how it ended.
  private lastBuf: Uint8Array = EMPTY
  private lastStart = 0
  private lastBytes = 0
  private lastCrlf = true
  // Lines remembered by `remember`, with the line ending, and what each stands for.
  private readonly knownBytes: Array<Uint8Array> = []
  private readonly knownValues: Array<A> = []
  private nextKnown = 0
  /** The longest line, its line ending included. */
  private readonly limit: number

  constructor(limit: number) {
    this.limit = limit
  }

  /** Adds bytes read from the connection. */
  append(chunk: Uint8Array) {
    this.buf = joinUnread(this.buf, this.pos, chunk)
    this.pos = 0
  }

  /** The next line without its line ending (CRLF or a lone LF), `undefined` if not all here yet. */
  nextLine(): string | typeof TOO_LONG | undefined {
    const buf = this.buf
    const pos = this.pos
    const nl = buf.indexOf(LF, pos)
    if (nl < 0) return buf.length - pos >= this.limit ? TOO_LONG : undefined
    if (nl + 1 - pos > this.limit) return TOO_LONG
    const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl
    this.lastBuf = buf
    this.lastStart = pos
    this.lastBytes = nl + 1 - pos
    this.lastCrlf = end !== nl
    this.pos = nl + 1
    return utf8.decode(buf.subarray(pos, end))
  }

  /** The size on the wire of the line `nextLine` took last, line ending included. */
  lastLineBytes(): number {
    return this.lastBytes
  }

  /** Whether that line ended with CRLF (rather than a lone LF). */
  lastLineCrlf(): boolean {
    return this.lastCrlf
  }

  /** Remembers the line `nextLine` took last as standing for `value` (at most `max` lines are). */
  remember(value: A, max: number) {
    if (this.knownBytes.length >= max || !this.lastCrlf) return
    this.knownBytes.push(this.lastBuf.slice(this.lastStart, this.lastStart + this.lastBytes))
    this.knownValues.push(value)
  }

  /** When the next line is one remembered, takes it and returns what it stands for. */
  known(): A | undefined {
    const buf = this.buf
    const pos = this.pos
    const known = this.knownBytes
    const count = known.length
    // A server answers each transaction in the same order: the line after the one matched
    // last is looked at first.
    for (let tried = 0, k = this.nextKnown; tried < count; tried++, k = k + 1 === count ? 0 : k + 1) {
      const line = known[k]!
      const n = line.length
      // Every remembered line ends with LF and holds no other: a match is one whole line.
      if (pos + n > buf.length || buf[pos + n - 1] !== LF) continue
      let i = 0
      while (i < n && buf[pos + i] === line[i]) i++
      if (i === n) {
        this.pos = pos + n
        this.nextKnown = k + 1 === count ? 0 : k + 1
        return this.knownValues[k]
      }
    }
    return undefined
  }

  /** Drops every buffered byte and says how many. */
  discardBuffered(): number {
    const n = this.buf.length - this.pos
    this.buf = EMPTY
    this.pos = 0
    return n
  }
}
