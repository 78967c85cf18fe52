/**
 * SMTP / LMTP commands (RFC 5321 section 4.1, RFC 2033, 3030, 3207, 4954).
 *
 * `Command` is the Schema of a command; `CommandFromLine` is its wire codec, a line
 * without CRLF. The server's hot path calls `parse` directly (synchronous, linear,
 * never throws) and the client calls `format`; `CommandFromLine` is built from the
 * same two functions, so the Schema and the fast path cannot disagree.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as Address from "./Address.ts"
import { isParameter } from "./MailOptions.ts"
import { SmtpError } from "./SmtpError.ts"
import { asciiUpper, isAsciiLower } from "./internal/codec/Ascii.ts"

const isWsp = (c: number) => c === 32 || c === 9
const isLineBreaker = (c: number) => c === 0 || c === 10 || c === 13

/** A control character other than tab (which separates words anyway): C0 and DEL. */
const isControl = (c: number) => (c < 32 && c !== 9) || c === 127

/** Free of control characters: what a HELO/EHLO/LHLO argument must be. */
const hasNoControls = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) if (isControl(s.charCodeAt(i))) return false
  return true
}

const isWord = (s: string): boolean => {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (isWsp(c) || isLineBreaker(c)) return false
  }
  return true
}

/** Free text: no CR, LF or NUL, and no space or tab at either end (the parser trims them). */
const isText = (s: string): boolean => {
  if (s.length > 0 && (isWsp(s.charCodeAt(0)) || isWsp(s.charCodeAt(s.length - 1)))) return false
  for (let i = 0; i < s.length; i++) if (isLineBreaker(s.charCodeAt(i))) return false
  return true
}

/** RFC 4422 sasl-mech: 1 to 20 of A-Z, 0-9, "-", "_". */
const isMechanism = (s: string): boolean => {
  if (s.length === 0 || s.length > 20) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 95)) return false
  }
  return true
}

/** Base64 with padding, or "=" for an empty initial response (RFC 4954 4). */
const isInitialResponse = (s: string): boolean => {
  if (s === "=") return true
  if (s.length === 0 || s.length % 4 !== 0) return false
  let padding = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 61) {
      if (i < s.length - 2) return false
      padding++
    } else {
      const b64 = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47
      if (padding > 0 || !b64) return false
    }
  }
  return true
}

const KNOWN_VERBS: ReadonlySet<string> = new Set([
  "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "AUTH", "STARTTLS"
])

// ---------------------------------------------------------------------------
// Schema

/**
 * A HELO/EHLO/LHLO argument: one word without control characters, not checked further
 * (clients send all sorts of names).
 */
export const HeloDomain = Schema.String.check(
  Schema.makeFilter((s: string) => (isWord(s) && hasNoControls(s)) || "expected one word without control characters")
)

/** Free-text argument (VRFY, EXPN, NOOP, HELP). */
export const Argument = Schema.String.check(
  Schema.makeFilter((s: string) => (s.length > 0 && isText(s)) || "expected non-empty text without CR, LF or NUL")
)

/** One `KEYWORD[=VALUE]` item of MAIL or RCPT. */
export const Parameter = Schema.String.check(
  Schema.makeFilter((s: string) => isParameter(s) || "expected an ESMTP parameter KEYWORD[=VALUE]")
)

/** A SASL mechanism name (RFC 4422): 1 to 20 of A-Z, 0-9, "-", "_". */
export const Mechanism = Schema.String.check(
  Schema.makeFilter((s: string) => isMechanism(s) || "expected a SASL mechanism name")
)

/** AUTH's initial response: base64, or "=" for an empty one (RFC 4954 4). */
export const InitialResponse = Schema.String.check(
  Schema.makeFilter((s: string) => isInitialResponse(s) || "expected base64 or \"=\"")
)

const UnknownVerb = Schema.String.check(
  Schema.makeFilter((s: string) => (isWord(s) && !KNOWN_VERBS.has(asciiUpper(s))) || "expected an unknown verb")
)

const UnknownArgument = Schema.String.check(Schema.makeFilter((s: string) => isText(s) || "expected text"))

/**
 * Every command, as a tagged union: `{ _tag: "Mail", from, params }` and so on. `Command.cases`
 * holds each case's schema, `Command.match` matches on the tag.
 *
 * @example
 * ```ts
 * import * as Address from "effect-smtp/Address"
 * import * as Command from "effect-smtp/Command"
 *
 * const parsed = Command.parse("MAIL FROM:<a@example.com> SIZE=1000")
 * // Result.succeed({ _tag: "Mail", from: "a@example.com", params: ["SIZE=1000"] })
 * Command.format({ _tag: "Rcpt", to: Address.make("b@example.org"), params: [] }) // "RCPT TO:<b@example.org>"
 * ```
 */
export const Command = Schema.TaggedUnion({
  Helo: {
    /** The client's name, as sent. */
    domain: HeloDomain
  },
  Ehlo: {
    /** The client's name, as sent. */
    domain: HeloDomain
  },
  Lhlo: {
    /** The client's name, as sent. */
    domain: HeloDomain
  },
  Mail: {
    /** The reverse-path; `null` for the null path `<>`. */
    from: Schema.NullOr(Address.Mailbox),
    /** The ESMTP parameters, `KEYWORD[=VALUE]` each, as sent (see `MailOptions.parseMailParameters`). */
    params: Schema.Array(Parameter)
  },
  Rcpt: {
    /** The forward-path. */
    to: Address.Address,
    /** The ESMTP parameters, as sent (see `MailOptions.parseRcptParameters`). */
    params: Schema.Array(Parameter)
  },
  Data: {},
  Bdat: {
    /** The chunk's size in octets. */
    size: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
    /** Whether it is the last chunk (`BDAT n LAST`). */
    last: Schema.Boolean
  },
  Rset: {},
  Noop: {
    /** Text after NOOP, which the server ignores. */
    arg: Schema.optionalKey(Argument)
  },
  Quit: {},
  Vrfy: {
    /** The user or mailbox to verify. */
    arg: Argument
  },
  Expn: {
    /** The mailing list to expand. */
    arg: Argument
  },
  Help: {
    /** The topic, if any. */
    arg: Schema.optionalKey(Argument)
  },
  Auth: {
    /** The mechanism, upper case. */
    mechanism: Mechanism,
    /** The initial response, still base64 text; "=" means an empty one. */
    initialResponse: Schema.optionalKey(InitialResponse)
  },
  StartTls: {},
  /** Any other verb (XCLIENT, ETRN, TURN…): the server decides what to answer. */
  Unknown: {
    /** The verb, as sent. */
    verb: UnknownVerb,
    /** The rest of the line, trimmed ("" when there is none). */
    arg: UnknownArgument
  }
})
/** A command, decoded. */
export type Command = typeof Command.Type

/** HELO: RFC 821's greeting, no extensions. */
export type Helo = typeof Command.cases.Helo.Type
/** EHLO: the greeting that asks for the extensions. */
export type Ehlo = typeof Command.cases.Ehlo.Type
/** LHLO: LMTP's greeting (RFC 2033). */
export type Lhlo = typeof Command.cases.Lhlo.Type
/** MAIL FROM: starts a transaction. */
export type Mail = typeof Command.cases.Mail.Type
/** RCPT TO: one recipient. */
export type Rcpt = typeof Command.cases.Rcpt.Type
/** DATA: the body follows, ended by a line with a single dot. */
export type Data = typeof Command.cases.Data.Type
/** BDAT (RFC 3030): a chunk of the body, its size given up front. */
export type Bdat = typeof Command.cases.Bdat.Type
/** RSET: aborts the transaction. */
export type Rset = typeof Command.cases.Rset.Type
/** NOOP: does nothing, answers 250. */
export type Noop = typeof Command.cases.Noop.Type
/** QUIT: ends the session. */
export type Quit = typeof Command.cases.Quit.Type
/** VRFY: asks whether a user or mailbox exists. */
export type Vrfy = typeof Command.cases.Vrfy.Type
/** EXPN: asks for a mailing list's members. */
export type Expn = typeof Command.cases.Expn.Type
/** HELP. */
export type Help = typeof Command.cases.Help.Type
/** AUTH (RFC 4954): starts a SASL exchange. */
export type Auth = typeof Command.cases.Auth.Type
/** STARTTLS (RFC 3207): switches the connection to TLS. */
export type StartTls = typeof Command.cases.StartTls.Type
/** A verb this module does not know. */
export type Unknown = typeof Command.cases.Unknown.Type

// ---------------------------------------------------------------------------
// Parsing

/** How `parse` reads a command line. */
export interface ParseOptions {
  /**
   * Accept non-ASCII addresses (RFC 6531): the transaction is under SMTPUTF8. MAIL
   * also accepts them when its own parameters include SMTPUTF8. Default false.
   */
  readonly utf8?: boolean | undefined
}

const syntaxError = (message: string) => SmtpError.of(501, [5, 5, 4], message)
const badLine = SmtpError.of(500, [5, 5, 2], "Syntax error: command line holds CR, LF or NUL")
const noVerb = SmtpError.of(500, [5, 5, 2], "Syntax error: no command")

const ok = (command: Command): Result.Result<Command, SmtpError> => Result.succeed(command)

/** The space- or tab-separated words of a trimmed text. */
const words = (text: string, from = 0): Array<string> => {
  const out: Array<string> = []
  let i = from
  while (i < text.length) {
    while (i < text.length && isWsp(text.charCodeAt(i))) i++
    const start = i
    while (i < text.length && !isWsp(text.charCodeAt(i))) i++
    if (i > start) out.push(text.slice(start, i))
  }
  return out
}

/** `text` starts with `prefix` (upper case ASCII) in any case; compared in place. */
const startsWithUpper = (text: string, prefix: string): boolean => {
  if (text.length < prefix.length) return false
  for (let i = 0; i < prefix.length; i++) {
    const c = text.charCodeAt(i)
    if ((isAsciiLower(c) ? c - 32 : c) !== prefix.charCodeAt(i)) return false
  }
  return true
}

interface PathAndParams {
  readonly address: Address.Address | null
  readonly params: Array<string>
}

/** `FROM:<path> params` / `TO:<path> params`; a space after the colon is tolerated. */
const pathAndParams = (
  arg: string,
  verb: "MAIL" | "RCPT",
  prefix: "FROM:" | "TO:",
  kind: Address.PathKind
): Result.Result<PathAndParams, SmtpError> => {
  if (!startsWithUpper(arg, prefix)) return Result.fail(syntaxError(`Syntax: ${verb} ${prefix}<address>`))
  let i = prefix.length
  while (isWsp(arg.charCodeAt(i))) i++
  const scan = Address.scanPath(arg, i, kind)
  if (Result.isFailure(scan)) return Result.fail(scan.failure)
  const params = words(arg, scan.success.end)
  for (const p of params) {
    if (!isParameter(p)) return Result.fail(syntaxError(`Syntax error in ${verb} parameters`))
  }
  return Result.succeed({ address: scan.success.address, params })
}

const bdatNeedsSize = syntaxError("BDAT needs a chunk size")
const bdatTooManyArguments = syntaxError("Too many BDAT arguments")
const bdatMalformedSize = syntaxError("Malformed BDAT chunk size")
const bdatUnknownArgument = syntaxError("Unknown BDAT argument")
const bdatErrors: ReadonlySet<SmtpError> = new Set([bdatNeedsSize, bdatTooManyArguments, bdatMalformedSize, bdatUnknownArgument])

/**
 * Whether `parse` refused a BDAT line (its chunk size or its arguments). The bytes after such a
 * line cannot be framed: a server hangs up rather than guess where the chunk ends.
 */
export const isBdatSyntaxError = (e: SmtpError): boolean => bdatErrors.has(e)

const parseBdat = (arg: string): Result.Result<Command, SmtpError> => {
  const [size, last, ...extra] = words(arg)
  if (size === undefined) return Result.fail(bdatNeedsSize)
  if (extra.length > 0) return Result.fail(bdatTooManyArguments)
  let digits = size.length <= 15
  for (let i = 0; digits && i < size.length; i++) digits = size.charCodeAt(i) >= 48 && size.charCodeAt(i) <= 57
  if (!digits) return Result.fail(bdatMalformedSize)
  if (last !== undefined && asciiUpper(last) !== "LAST") return Result.fail(bdatUnknownArgument)
  return ok({ _tag: "Bdat", size: Number(size), last: last !== undefined })
}

const parseAuth = (arg: string): Result.Result<Command, SmtpError> => {
  const [name, initialResponse, ...extra] = words(arg)
  if (name === undefined) return Result.fail(syntaxError("AUTH needs a mechanism"))
  if (extra.length > 0) return Result.fail(syntaxError("Too many AUTH arguments"))
  const mechanism = asciiUpper(name)
  if (!isMechanism(mechanism)) return Result.fail(syntaxError("Malformed AUTH mechanism name"))
  if (initialResponse === undefined) return ok({ _tag: "Auth", mechanism })
  if (!isInitialResponse(initialResponse)) {
    return Result.fail(SmtpError.of(501, [5, 5, 2], "Cannot decode the base64 initial response"))
  }
  return ok({ _tag: "Auth", mechanism, initialResponse })
}

const noArgument = (verb: string, arg: string, command: Command): Result.Result<Command, SmtpError> =>
  arg === "" ? ok(command) : Result.fail(syntaxError(`${verb} takes no arguments`))

/**
 * Parses one command line (without its CRLF). Verbs are case-insensitive; an
 * unrecognised verb is `Unknown`, for the server to answer. Fails with the reply to
 * send: `500 5.5.2` (no verb, CR/LF/NUL in the line), `501 5.5.4` (bad arguments),
 * `501 5.1.7` / `501 5.1.3` (bad sender / recipient), `553 5.6.7` (non-ASCII address
 * without SMTPUTF8), `501 5.5.2` (AUTH initial response not base64). A HELO, EHLO or LHLO
 * argument with a control character (C0 other than tab, or DEL) is `501 5.5.4`; a refused
 * BDAT line is told apart by {@link isBdatSyntaxError}.
 */
export const parse = (line: string, options?: ParseOptions): Result.Result<Command, SmtpError> => {
  const n = line.length
  let verbEnd = 0
  while (verbEnd < n && !isWsp(line.charCodeAt(verbEnd))) verbEnd++
  for (let i = 0; i < n; i++) if (isLineBreaker(line.charCodeAt(i))) return Result.fail(badLine)
  if (verbEnd === 0) return Result.fail(noVerb)
  let start = verbEnd
  while (start < n && isWsp(line.charCodeAt(start))) start++
  let end = n
  while (end > start && isWsp(line.charCodeAt(end - 1))) end--
  const verb = line.slice(0, verbEnd)
  const arg = line.slice(start, end)
  const upper = verb.length <= 8 ? asciiUpper(verb) : ""
  switch (upper) {
    case "HELO":
    case "EHLO":
    case "LHLO": {
      const domain = words(arg)[0]
      if (domain === undefined) return Result.fail(syntaxError(`${upper} needs a domain or address literal`))
      if (!hasNoControls(arg)) return Result.fail(syntaxError(`${upper} argument holds control characters`))
      return ok(upper === "HELO" ? { _tag: "Helo", domain } : upper === "EHLO" ? { _tag: "Ehlo", domain } : { _tag: "Lhlo", domain })
    }
    case "MAIL": {
      const r = pathAndParams(arg, "MAIL", "FROM:", "sender")
      if (Result.isFailure(r)) return Result.fail(r.failure)
      const { address: from, params } = r.success
      if (
        from !== null && options?.utf8 !== true && Address.isUtf8(from) &&
        !params.some((p) => asciiUpper(p) === "SMTPUTF8")
      ) return Result.fail(Address.utf8Required("sender"))
      return ok({ _tag: "Mail", from, params })
    }
    case "RCPT": {
      const r = pathAndParams(arg, "RCPT", "TO:", "recipient")
      if (Result.isFailure(r)) return Result.fail(r.failure)
      const { address: to, params } = r.success
      if (to === null) return Result.fail(syntaxError("Syntax: RCPT TO:<address>"))
      if (options?.utf8 !== true && Address.isUtf8(to)) return Result.fail(Address.utf8Required("recipient"))
      return ok({ _tag: "Rcpt", to, params })
    }
    case "DATA":
      return noArgument(upper, arg, { _tag: "Data" })
    case "BDAT":
      return parseBdat(arg)
    case "RSET":
      return noArgument(upper, arg, { _tag: "Rset" })
    case "NOOP":
      return ok(arg === "" ? { _tag: "Noop" } : { _tag: "Noop", arg })
    case "QUIT":
      return noArgument(upper, arg, { _tag: "Quit" })
    case "VRFY":
    case "EXPN":
      if (arg === "") return Result.fail(syntaxError(`${upper} needs an argument`))
      return ok(upper === "VRFY" ? { _tag: "Vrfy", arg } : { _tag: "Expn", arg })
    case "HELP":
      return ok(arg === "" ? { _tag: "Help" } : { _tag: "Help", arg })
    case "AUTH":
      return parseAuth(arg)
    case "STARTTLS":
      return noArgument(upper, arg, { _tag: "StartTls" })
    default:
      return ok({ _tag: "Unknown", verb, arg })
  }
}

// ---------------------------------------------------------------------------
// Formatting

const withParams = (head: string, params: ReadonlyArray<string>): string =>
  params.length === 0 ? head : `${head} ${params.join(" ")}`

/**
 * The line for a command, without CRLF. It trusts its input: a command built from
 * unchecked strings goes through `Schema.encodeResult(CommandFromLine)` first.
 */
export const format = (command: Command): string => {
  switch (command._tag) {
    case "Helo":
      return `HELO ${command.domain}`
    case "Ehlo":
      return `EHLO ${command.domain}`
    case "Lhlo":
      return `LHLO ${command.domain}`
    case "Mail":
      return withParams(`MAIL FROM:<${command.from ?? ""}>`, command.params)
    case "Rcpt":
      return withParams(`RCPT TO:<${command.to}>`, command.params)
    case "Data":
      return "DATA"
    case "Bdat":
      return command.last ? `BDAT ${command.size} LAST` : `BDAT ${command.size}`
    case "Rset":
      return "RSET"
    case "Noop":
      return command.arg === undefined ? "NOOP" : `NOOP ${command.arg}`
    case "Quit":
      return "QUIT"
    case "Vrfy":
      return `VRFY ${command.arg}`
    case "Expn":
      return `EXPN ${command.arg}`
    case "Help":
      return command.arg === undefined ? "HELP" : `HELP ${command.arg}`
    case "Auth":
      return command.initialResponse === undefined
        ? `AUTH ${command.mechanism}`
        : `AUTH ${command.mechanism} ${command.initialResponse}`
    case "StartTls":
      return "STARTTLS"
    case "Unknown":
      return command.arg === "" ? command.verb : `${command.verb} ${command.arg}`
  }
}

/**
 * Wire codec: `Encoded` is one command line without CRLF, `Type` is a `Command`.
 * Decoding is `parse` with non-ASCII addresses allowed: whether SMTPUTF8 is in force
 * is session state, not syntax.
 */
export const CommandFromLine = Schema.String.pipe(
  Schema.decodeTo(
    Command,
    SchemaTransformation.transformEffect({
      decode: (line: string) => {
        const r = parse(line, { utf8: true })
        return Result.isSuccess(r)
          ? Effect.succeed<typeof Command.Encoded>(r.success)
          : Effect.fail(new SchemaIssue.InvalidValue({ message: r.failure.message }, line))
      },
      encode: (command: typeof Command.Encoded) => Effect.succeed(format(command as Command))
    })
  )
)
