/**
 * SMTP replies (RFC 5321 section 4.2) with optional RFC 2034 enhanced status codes.
 *
 * One Schema, `ReplyFromWire`, parses the bytes of a (multi-line) reply and formats
 * a `Reply` back to them: the server formats, the client parses.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as EnhancedCode from "./EnhancedCode.ts"

/** A three-digit reply code: first digit 2-5, second 0-5 (RFC 5321 4.2.1). */
export const ReplyCode = Schema.Int.check(
  Schema.isBetween({ minimum: 200, maximum: 559 }),
  Schema.makeFilter((n: number) => n % 100 < 60 || "the second digit of a reply code is 0-5")
)

/** A reply text line: printable, no CR or LF. */
export const ReplyText = Schema.String.check(
  Schema.isPattern(/^[^\r\n]*$/, { message: "reply text may not contain CR or LF" })
)

/**
 * A reply: its code, its enhanced code when it has one, and its text lines. A Schema class, so
 * `new Reply({ … })` checks its fields; `Reply.of` is the short way to make one.
 *
 * @example
 * ```ts
 * import { Reply } from "effect-smtp/Reply"
 *
 * Reply.of(250, [2, 1, 0], "Sender OK").toWire() // "250 2.1.0 Sender OK\r\n"
 * Reply.of(250, "mx.example.com", "PIPELINING", "SIZE 1000").toWire()
 * // "250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
 * ```
 */
export class Reply extends Schema.Class<Reply>("effect-smtp/Reply")({
  /** The three-digit code: 2xx done, 3xx go on, 4xx try again later, 5xx no. */
  code: ReplyCode,
  /** The RFC 3463 code after it, `[5, 1, 1]` for "5.1.1", when the reply has one. */
  enhancedCode: Schema.optional(EnhancedCode.EnhancedCode),
  /** One text per line, without code or enhanced code. */
  lines: Schema.NonEmptyArray(ReplyText)
}) {
  /** `Reply.of(250, "OK")`, `Reply.of(250, [2, 0, 0], "OK")`, several lines for a multi-line reply. */
  static of(code: number, ...rest: [EnhancedCode.EnhancedCode | string, ...Array<string>]): Reply {
    const [first, ...others] = rest
    if (typeof first === "string") return new Reply({ code, lines: [first, ...others] })
    return new Reply({ code, enhancedCode: first, lines: others.length === 0 ? [""] : [others[0]!, ...others.slice(1)] })
  }

  /** 2xx or 3xx: the command went through. */
  get isPositive(): boolean {
    return this.code < 400
  }
  /** 4xx: refused for now, worth trying again later. */
  get isTemporary(): boolean {
    return this.code >= 400 && this.code < 500
  }
  /** 5xx: refused for good. */
  get isPermanent(): boolean {
    return this.code >= 500
  }
  /** The text of every line joined with newlines, without codes. */
  get text(): string {
    return this.lines.join("\n")
  }

  /** The reply as it goes on the wire, CRLF after every line. */
  toWire(): string {
    return formatReply(this)
  }
}

/** The fields of a reply, as a plain object. */
export type ReplyFields = typeof Reply.Encoded

/** The reply as it goes on the wire: `code-` on every line but the last, `code ` on the last, CRLF after each. */
export const formatReply = (reply: ReplyFields): string => {
  const prefix = reply.enhancedCode === undefined ? "" : EnhancedCode.format(reply.enhancedCode)
  const last = reply.lines.length - 1
  let out = ""
  for (let i = 0; i <= last; i++) {
    const line = reply.lines[i]!
    const text = prefix === "" ? line : line === "" ? prefix : `${prefix} ${line}`
    // The separator is always written, also before an empty text: RFC 4954 clients expect
    // "334 " for an empty challenge, and some refuse a bare "334".
    out += `${reply.code}${i === last ? " " : "-"}${text}\r\n`
  }
  return out
}

/** Why a reply from the wire was refused. */
export class ReplyParseError extends Data.TaggedError("ReplyParseError")<{
  /** What is wrong, e.g. "reply mixes codes 250 and 550". */
  readonly message: string
  /** The line it is wrong in ("" when no single line is). */
  readonly line: string
}> {}

/** One reply line split into its parts. */
export interface ReplyLine {
  /** The line's three-digit code. */
  readonly code: number
  /** True for `code text` (the last line), false for `code-text`. */
  readonly last: boolean
  /** What follows the code and its separator, the enhanced code included. */
  readonly text: string
}

/** Longest reply line accepted, without CRLF. RFC 5321 says 512 with CRLF; servers exceed it, so allow more. */
export const MAX_LINE_LENGTH = 4096
/** Most lines in one reply (an EHLO reply has one per extension). */
export const MAX_LINES = 128

const isDigit = (c: number) => c >= 48 && c <= 57

/** Splits one reply line (without CRLF). Linear, no regexes. */
export const parseLine = (line: string): Result.Result<ReplyLine, ReplyParseError> => {
  if (line.length > MAX_LINE_LENGTH) return Result.fail(new ReplyParseError({ message: "reply line too long", line }))
  if (
    line.length < 3 || !isDigit(line.charCodeAt(0)) || !isDigit(line.charCodeAt(1)) || !isDigit(line.charCodeAt(2))
  ) {
    return Result.fail(new ReplyParseError({ message: "reply does not start with a three-digit code", line }))
  }
  const code = Number(line.slice(0, 3))
  if (code < 200 || code > 559 || code % 100 >= 60) {
    return Result.fail(new ReplyParseError({ message: `invalid reply code ${line.slice(0, 3)}`, line }))
  }
  if (line.length === 3) return Result.succeed({ code, last: true, text: "" })
  const sep = line[3]
  if (sep !== " " && sep !== "-") {
    return Result.fail(new ReplyParseError({ message: "reply code not followed by space or hyphen", line }))
  }
  const text = line.slice(4)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 13 || c === 10 || c === 0) {
      return Result.fail(new ReplyParseError({ message: "reply text holds CR, LF or NUL", line }))
    }
  }
  return Result.succeed({ code, last: sep === " ", text })
}

/** Splits "X.Y.Z rest" into its enhanced code and the rest, when its class matches the reply code. */
const splitEnhanced = (code: number, text: string): [EnhancedCode.EnhancedCode, string] | undefined => {
  const space = text.indexOf(" ")
  const head = space < 0 ? text : text.slice(0, space)
  if (head.length > 11) return undefined
  const enhanced = EnhancedCode.parse(head)
  if (enhanced === undefined || enhanced[0] !== Math.floor(code / 100)) return undefined
  return [enhanced, space < 0 ? "" : text.slice(space + 1)]
}

/**
 * A reply from fields this module parsed itself: the same object `new Reply` makes (the
 * prototype and own fields, in the struct's order), without the constructor's schema pass,
 * which costs more than the parsing. `enhancedCode` is left out when there is none, as the
 * constructor does.
 */
const trusted = (
  code: number,
  enhancedCode: EnhancedCode.EnhancedCode | undefined,
  lines: readonly [string, ...Array<string>]
): Reply => {
  const reply = Object.create(Reply.prototype) as { code: number; enhancedCode?: EnhancedCode.EnhancedCode; lines: readonly [string, ...Array<string>] }
  reply.code = code
  if (enhancedCode !== undefined) reply.enhancedCode = enhancedCode
  reply.lines = lines
  return reply as Reply
}

/**
 * Builds a reply from its lines. The enhanced code is taken from the first line when it starts
 * with one whose class matches the reply code, and then stripped from every line that repeats it.
 */
export const fromLines = (lines: ReadonlyArray<ReplyLine>): Result.Result<Reply, ReplyParseError> => {
  if (lines.length === 0) return Result.fail(new ReplyParseError({ message: "empty reply", line: "" }))
  if (lines.length > MAX_LINES) return Result.fail(new ReplyParseError({ message: "reply has too many lines", line: "" }))
  const code = lines[0]!.code
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!
    if (l.code !== code) {
      return Result.fail(new ReplyParseError({ message: `reply mixes codes ${code} and ${l.code}`, line: l.text }))
    }
    if (l.last !== (i === lines.length - 1)) {
      return Result.fail(new ReplyParseError({ message: "reply continuation lines out of order", line: l.text }))
    }
  }
  const split = splitEnhanced(code, lines[0]!.text)
  if (split === undefined) {
    const texts = lines.map((l) => l.text) as unknown as readonly [string, ...Array<string>]
    return Result.succeed(trusted(code, undefined, texts))
  }
  const [enhanced, firstText] = split
  const prefix = EnhancedCode.format(enhanced)
  const texts = [firstText]
  for (let i = 1; i < lines.length; i++) {
    const t = lines[i]!.text
    texts.push(t === prefix ? "" : t.startsWith(prefix + " ") ? t.slice(prefix.length + 1) : t)
  }
  return Result.succeed(trusted(code, enhanced, texts as unknown as readonly [string, ...Array<string>]))
}

/** Parses a whole reply as it came off the wire (CRLF-separated lines, the final CRLF optional). */
export const parse = (wire: string): Result.Result<Reply, ReplyParseError> => {
  const body = wire.endsWith("\r\n") ? wire.slice(0, -2) : wire
  const raw = body.split("\r\n")
  if (raw.length > MAX_LINES) return Result.fail(new ReplyParseError({ message: "reply has too many lines", line: "" }))
  const lines: Array<ReplyLine> = []
  for (const line of raw) {
    const parsed = parseLine(line)
    if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
    lines.push(parsed.success)
  }
  return fromLines(lines)
}

/** Wire codec: `Encoded` is the reply's text on the wire, `Type` is a `Reply`. */
export const ReplyFromWire = Schema.String.pipe(
  Schema.decodeTo(
    Reply,
    SchemaTransformation.transformEffect({
      decode: (wire: string) => {
        const r = parse(wire)
        return Result.isSuccess(r)
          ? Effect.succeed<ReplyFields>(r.success)
          : Effect.fail(new SchemaIssue.InvalidValue({ message: r.failure.message }, wire))
      },
      encode: (reply: ReplyFields) => Effect.succeed(formatReply(reply))
    })
  )
)
