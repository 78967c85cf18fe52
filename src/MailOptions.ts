/**
 * The ESMTP parameters of MAIL FROM and RCPT TO: their typed form, how the server
 * parses them (which ones are legal depends on the extensions it offers), and how
 * the client formats them.
 *
 * MAIL: BODY (RFC 6152, 3030), SIZE (RFC 1870), SMTPUTF8 (RFC 6531), REQUIRETLS
 * (RFC 8689), AUTH (RFC 4954), RET and ENVID (RFC 3461), BY (RFC 2852),
 * MT-PRIORITY (RFC 6710). RCPT: NOTIFY and ORCPT (RFC 3461, 6533), RRVS (RFC 7293).
 *
 * @since 0.1.0
 */
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Address from "./Address.ts"
import { SmtpError } from "./SmtpError.ts"
import * as Xtext from "./Xtext.ts"
import { asciiUpper } from "./internal/codec/Ascii.ts"

// ---------------------------------------------------------------------------
// Value schemas

/** BODY (RFC 6152, 3030): what the body's bytes are; 7BIT when not given. */
export const BodyType = Schema.Literals(["7BIT", "8BITMIME", "BINARYMIME"])
/** `7BIT`, `8BITMIME` or `BINARYMIME`. */
export type BodyType = typeof BodyType.Type

/** RET (RFC 3461): what a bounce carries back, the whole message or its headers. */
export const DsnReturn = Schema.Literals(["FULL", "HDRS"])
/** `FULL` or `HDRS`. */
export type DsnReturn = typeof DsnReturn.Type

/** One NOTIFY condition (RFC 3461): when the sender wants a delivery status notification. */
export const DsnNotify = Schema.Literals(["NEVER", "SUCCESS", "FAILURE", "DELAY"])
/** `NEVER`, `SUCCESS`, `FAILURE` or `DELAY`. */
export type DsnNotify = typeof DsnNotify.Type

/** RFC 3461 4.4: an ENVID is at most 100 characters (counted here in its xtext form). */
export const MAX_ENVID = 100
/** RFC 3461 4.2: an ORCPT value is at most 500 characters. */
export const MAX_ORCPT = 500

const isPrintableAscii = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 32 || c > 126) return false
  }
  return true
}

/** No C0 controls, no DEL, no lone surrogates. */
const isPrintableUnicode = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 32 || c === 127) return false
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1)
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false
      i++
    } else if (c >= 0xdc00 && c <= 0xdfff) return false
  }
  return true
}

/** SIZE: the declared message size in octets. */
export const Size = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** ENVID, decoded: printable ASCII, 1 to 100 characters once xtext-encoded. */
export const EnvelopeId = Schema.String.check(
  Schema.makeFilter((s: string) =>
    (s.length > 0 && isPrintableAscii(s) && Xtext.encode(s).length <= MAX_ENVID) ||
    `an envelope id is 1 to ${MAX_ENVID} printable ASCII characters (xtext-encoded)`
  )
)

/** BY (RFC 2852): deliver within `seconds`, else return (R) or notify (N); `trace` asks for T. */
export const DeliverBy = Schema.Struct({
  /** Seconds from now; N mode allows 0 and negative times (already late: just notify). */
  seconds: Schema.Int.check(Schema.isBetween({ minimum: -999_999_999, maximum: 999_999_999 })),
  /** `R`: return the message if it is late; `N`: deliver anyway and notify. */
  mode: Schema.Literals(["N", "R"]),
  /** Ask every relay for a trace notification. */
  trace: Schema.Boolean
}).check(Schema.makeFilter((by) => by.mode === "N" || by.seconds > 0 || "BY in R mode needs a positive time"))
/** A BY parameter, decoded. */
export type DeliverBy = typeof DeliverBy.Type

/** MT-PRIORITY (RFC 6710): -9 (lowest) to 9 (highest). */
export const MtPriority = Schema.Int.check(Schema.isBetween({ minimum: -9, maximum: 9 }))

/** NOTIFY: NEVER alone, or SUCCESS / FAILURE / DELAY without repeats, in the order given. */
export const Notify = Schema.NonEmptyArray(DsnNotify).check(
  Schema.makeFilter((list: ReadonlyArray<DsnNotify>) =>
    (list.includes("NEVER") ? list.length === 1 : new Set(list).size === list.length) ||
    "NOTIFY is NEVER alone, or SUCCESS, FAILURE and DELAY without repeats"
  )
)

const isAtom = (s: string): boolean => {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    const alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
    if (!alnum && !"!#$%&'*+-/=?^_`{|}~".includes(s[i]!)) return false
  }
  return true
}

const encodeOrcpt = (addressType: string, address: string): string =>
  addressType === "UTF-8" ? Xtext.encodeUtf8Address(address) : Xtext.encode(address)

/**
 * ORCPT, decoded: the address type (an atom, upper case: "RFC822", "UTF-8", …) and the
 * original address. RFC822 and other types hold printable ASCII; UTF-8 any printable text.
 */
export const OriginalRecipient = Schema.Struct({
  /** The address type, e.g. "RFC822" or "UTF-8". */
  addressType: Schema.String,
  /** The recipient as the sender first gave it. */
  address: Schema.String
}).check(
  Schema.makeFilter(({ address, addressType }) =>
    (isAtom(addressType) && addressType === addressType.toUpperCase() && address.length > 0 &&
      (addressType === "UTF-8" ? isPrintableUnicode(address) : isPrintableAscii(address)) &&
      addressType.length + 1 + encodeOrcpt(addressType, address).length <= MAX_ORCPT) ||
    "invalid original recipient"
  )
)
/** An ORCPT parameter, decoded. */
export type OriginalRecipient = typeof OriginalRecipient.Type

/** RRVS (RFC 7293): the mailbox must have had its owner since `date`; C = continue, R = reject otherwise. */
export const RequireRecipientValidSince = Schema.Struct({
  /** The date the mailbox's owner must go back to. */
  date: Schema.Date.check(
    Schema.makeFilter((d: Date) => {
      const year = d.getUTCFullYear()
      return (year >= 0 && year <= 9999) || "RRVS dates are years 0000 to 9999"
    })
  ),
  /** `C`: continue and tell the owner; `R`: reject (the default). */
  mode: Schema.optionalKey(Schema.Literals(["C", "R"]))
})
/** An RRVS parameter, decoded. */
export type RequireRecipientValidSince = typeof RequireRecipientValidSince.Type

// ---------------------------------------------------------------------------
// Options

/** The parameters of MAIL FROM. Absent and `false` flags mean the same. */
export const MailOptions = Schema.Struct({
  /** BODY=: 7BIT, 8BITMIME or BINARYMIME. */
  body: Schema.optionalKey(BodyType),
  /** SIZE=: the size the sender declares, in octets. */
  size: Schema.optionalKey(Size),
  /** SMTPUTF8: the transaction may carry non-ASCII addresses. */
  smtputf8: Schema.optionalKey(Schema.Boolean),
  /** REQUIRETLS: the message must travel over TLS all the way (RFC 8689). */
  requireTls: Schema.optionalKey(Schema.Boolean),
  /** AUTH=: the authenticated originator; `null` for `AUTH=<>` (unknown or not trusted). */
  auth: Schema.optionalKey(Schema.NullOr(Address.Mailbox)),
  /** RET=: what a bounce carries back. */
  ret: Schema.optionalKey(DsnReturn),
  /** ENVID=: the sender's identifier of the message, returned in DSNs. */
  envelopeId: Schema.optionalKey(EnvelopeId),
  /** BY=: deliver within a time. */
  deliverBy: Schema.optionalKey(DeliverBy),
  /** MT-PRIORITY=: -9 to 9. */
  mtPriority: Schema.optionalKey(MtPriority)
})
/** The MAIL FROM parameters, decoded. */
export type MailOptions = typeof MailOptions.Type

/** The parameters of RCPT TO. */
export const RcptOptions = Schema.Struct({
  /** NOTIFY=: when a DSN is wanted for this recipient. */
  notify: Schema.optionalKey(Notify),
  /** ORCPT=: the recipient as first given, for DSNs. */
  originalRecipient: Schema.optionalKey(OriginalRecipient),
  /** RRVS=: refuse if the mailbox changed owner since a date. */
  requireRecipientValidSince: Schema.optionalKey(RequireRecipientValidSince)
})
/** The RCPT TO parameters, decoded. */
export type RcptOptions = typeof RcptOptions.Type

/** The extensions a server has on for this transaction; a parameter of one that is off is refused. */
export interface Enabled {
  /** SIZE= */
  readonly size: boolean
  /** BODY=8BITMIME */
  readonly eightBitMime: boolean
  /** BODY=BINARYMIME */
  readonly binaryMime: boolean
  /** SMTPUTF8 */
  readonly smtputf8: boolean
  /** REQUIRETLS */
  readonly requireTls: boolean
  /** RET=, ENVID=, NOTIFY=, ORCPT= */
  readonly dsn: boolean
  /** AUTH= */
  readonly auth: boolean
  /** RRVS= */
  readonly rrvs: boolean
  /** BY= */
  readonly deliverBy: boolean
  /** MT-PRIORITY= */
  readonly mtPriority: boolean
}

/** No extension: only BODY=7BIT is accepted. */
export const noneEnabled: Enabled = {
  size: false,
  eightBitMime: false,
  binaryMime: false,
  smtputf8: false,
  requireTls: false,
  dsn: false,
  auth: false,
  rrvs: false,
  deliverBy: false,
  mtPriority: false
}

/** Every extension: every parameter this module knows is accepted. */
export const allEnabled: Enabled = {
  size: true,
  eightBitMime: true,
  binaryMime: true,
  smtputf8: true,
  requireTls: true,
  dsn: true,
  auth: true,
  rrvs: true,
  deliverBy: true,
  mtPriority: true
}

// ---------------------------------------------------------------------------
// Errors

const malformed = (keyword: string) => SmtpError.of(501, [5, 5, 4], `Malformed ${keyword} parameter value`)
const duplicate = (keyword: string) => SmtpError.of(501, [5, 5, 4], `Duplicate ${keyword} parameter`)
const notSupported = (what: string) => SmtpError.of(555, [5, 5, 4], `${what} parameter not supported`)
const unrecognized = (command: string) => SmtpError.of(555, [5, 5, 4], `${command} parameter not recognized`)
const badSyntax = (command: string) => SmtpError.of(501, [5, 5, 4], `Syntax error in ${command} parameters`)

// ---------------------------------------------------------------------------
// Parsing

const isDigit = (c: number) => c >= 48 && c <= 57

/** esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
const isKeyword = (s: string, end: number): boolean => {
  if (end === 0) return false
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i)
    const alnum = isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
    if (!alnum && !(i > 0 && c === 45)) return false
  }
  return true
}

/** esmtp-value: printable ASCII but "=", and (RFC 6531) non-ASCII characters. */
const isValue = (s: string, start: number): boolean => {
  if (start >= s.length) return false
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 33 || c === 61 || c === 127) return false
  }
  return true
}

/** True when the text is one `KEYWORD[=VALUE]` item of a MAIL or RCPT command. */
export const isParameter = (param: string): boolean => {
  const eq = param.indexOf("=")
  return eq < 0 ? isKeyword(param, param.length) : isKeyword(param, eq) && isValue(param, eq + 1)
}

const NO_ITEMS: Result.Result<ReadonlyArray<readonly [string, string | undefined]>, SmtpError> = Result.succeed([])

/** Splits the items, upper-cases keywords, and refuses malformed items and repeats. */
const split = (
  params: ReadonlyArray<string>,
  command: string
): Result.Result<ReadonlyArray<readonly [string, string | undefined]>, SmtpError> => {
  // The usual MAIL and RCPT have no parameters: nothing to allocate for them.
  if (params.length === 0) return NO_ITEMS
  const out: Array<readonly [string, string | undefined]> = []
  const seen = new Set<string>()
  for (const param of params) {
    if (!isParameter(param)) return Result.fail(badSyntax(command))
    const eq = param.indexOf("=")
    const keyword = asciiUpper(eq < 0 ? param : param.slice(0, eq))
    if (seen.has(keyword)) return Result.fail(duplicate(keyword))
    seen.add(keyword)
    out.push([keyword, eq < 0 ? undefined : param.slice(eq + 1)])
  }
  return Result.succeed(out)
}

const parseSize = (v: string): number | undefined => {
  if (v.length > 20) return undefined
  for (let i = 0; i < v.length; i++) if (!isDigit(v.charCodeAt(i))) return undefined
  const n = Number(v)
  return Number.isSafeInteger(n) ? n : undefined
}

/** BY=<seconds>;<N|R>[T] */
const parseBy = (v: string): DeliverBy | undefined => {
  const semi = v.indexOf(";")
  if (semi < 0) return undefined
  let i = v.charCodeAt(0) === 45 || v.charCodeAt(0) === 43 ? 1 : 0
  if (semi - i < 1 || semi - i > 9) return undefined
  for (; i < semi; i++) if (!isDigit(v.charCodeAt(i))) return undefined
  const seconds = Number(v.slice(0, semi))
  const rest = asciiUpper(v.slice(semi + 1))
  const mode = rest[0]
  if ((mode !== "N" && mode !== "R") || (rest.length === 2 && rest[1] !== "T") || rest.length > 2) return undefined
  if (mode === "R" && seconds <= 0) return undefined
  return { seconds: seconds === 0 ? 0 : seconds, mode, trace: rest.length === 2 }
}

/** MT-PRIORITY=0..9 or -1..-9 */
const parseMtPriority = (v: string): number | undefined => {
  if (v.length === 1 && isDigit(v.charCodeAt(0))) return Number(v)
  if (v.length === 2 && v[0] === "-" && v.charCodeAt(1) >= 49 && v.charCodeAt(1) <= 57) return -Number(v[1])
  return undefined
}

/** Parses the items after `MAIL FROM:<...>` against the extensions the server offers. */
export const parseMailParameters = (
  params: ReadonlyArray<string>,
  enabled: Enabled
): Result.Result<MailOptions, SmtpError> => {
  const items = split(params, "MAIL")
  if (Result.isFailure(items)) return Result.fail(items.failure)
  const out: { -readonly [K in keyof MailOptions]: MailOptions[K] } = {}
  for (const [keyword, value] of items.success) {
    switch (keyword) {
      case "SIZE": {
        if (!enabled.size) return Result.fail(notSupported(keyword))
        const size = value === undefined ? undefined : parseSize(value)
        if (size === undefined) return Result.fail(malformed(keyword))
        out.size = size
        break
      }
      case "BODY": {
        const body = value === undefined ? undefined : asciiUpper(value)
        if (body !== "7BIT" && body !== "8BITMIME" && body !== "BINARYMIME") return Result.fail(malformed(keyword))
        const on = body === "8BITMIME"
          ? enabled.eightBitMime
          : body === "BINARYMIME"
          ? enabled.binaryMime
          : enabled.eightBitMime || enabled.binaryMime
        if (!on) return Result.fail(notSupported(`BODY=${body}`))
        out.body = body
        break
      }
      case "SMTPUTF8":
      case "REQUIRETLS": {
        if (!(keyword === "SMTPUTF8" ? enabled.smtputf8 : enabled.requireTls)) return Result.fail(notSupported(keyword))
        if (value !== undefined) return Result.fail(malformed(keyword))
        if (keyword === "SMTPUTF8") out.smtputf8 = true
        else out.requireTls = true
        break
      }
      case "AUTH": {
        if (!enabled.auth) return Result.fail(notSupported(keyword))
        if (value === "<>") {
          out.auth = null
          break
        }
        const decoded = value === undefined ? undefined : Xtext.decode(value)
        const address = decoded === undefined ? undefined : Address.parse(decoded, { utf8: true })
        if (address === undefined || Result.isFailure(address) || Address.isPostmaster(address.success)) {
          return Result.fail(malformed(keyword))
        }
        out.auth = address.success
        break
      }
      case "RET": {
        if (!enabled.dsn) return Result.fail(notSupported(keyword))
        const ret = value === undefined ? undefined : asciiUpper(value)
        if (ret !== "FULL" && ret !== "HDRS") return Result.fail(malformed(keyword))
        out.ret = ret
        break
      }
      case "ENVID": {
        if (!enabled.dsn) return Result.fail(notSupported(keyword))
        const id = value === undefined || value.length > MAX_ENVID ? undefined : Xtext.decode(value)
        if (id === undefined || id.length === 0 || !isPrintableAscii(id)) return Result.fail(malformed(keyword))
        out.envelopeId = id
        break
      }
      case "BY": {
        if (!enabled.deliverBy) return Result.fail(notSupported(keyword))
        const by = value === undefined ? undefined : parseBy(value)
        if (by === undefined) return Result.fail(malformed(keyword))
        out.deliverBy = by
        break
      }
      case "MT-PRIORITY": {
        if (!enabled.mtPriority) return Result.fail(notSupported(keyword))
        const priority = value === undefined ? undefined : parseMtPriority(value)
        if (priority === undefined) return Result.fail(malformed(keyword))
        out.mtPriority = priority
        break
      }
      default:
        return Result.fail(unrecognized("MAIL"))
    }
  }
  return Result.succeed(out)
}

const parseNotify = (v: string): typeof Notify.Type | undefined => {
  const list: Array<DsnNotify> = []
  for (const item of asciiUpper(v).split(",")) {
    if (item !== "NEVER" && item !== "SUCCESS" && item !== "FAILURE" && item !== "DELAY") return undefined
    if (list.includes(item)) return undefined
    list.push(item)
  }
  const [first, ...rest] = list
  if (first === undefined || (rest.length > 0 && list.includes("NEVER"))) return undefined
  return [first, ...rest]
}

const parseOrcpt = (v: string): OriginalRecipient | undefined => {
  const semi = v.indexOf(";")
  if (semi < 0 || v.length > MAX_ORCPT) return undefined
  const addressType = asciiUpper(v.slice(0, semi))
  if (!isAtom(addressType)) return undefined
  const raw = v.slice(semi + 1)
  if (addressType === "UTF-8") {
    const address = Xtext.decodeUtf8Address(raw)
    return address !== undefined && address.length > 0 && isPrintableUnicode(address)
      ? { addressType, address }
      : undefined
  }
  const address = Xtext.decode(raw)
  return address !== undefined && address.length > 0 && isPrintableAscii(address) ? { addressType, address } : undefined
}

/** Digits at s[i, i+n) as a number, -1 when any is not a digit. */
const digitsAt = (s: string, i: number, n: number): number => {
  let v = 0
  for (let k = i; k < i + n; k++) {
    const c = s.charCodeAt(k)
    if (!isDigit(c)) return -1
    v = v * 10 + c - 48
  }
  return v
}

const daysIn = (year: number, month: number): number =>
  month === 2
    ? (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28
    : [4, 6, 9, 11].includes(month)
    ? 30
    : 31

/** An RFC 3339 date-time (`2024-05-01T12:00:00Z`, `...T12:00:00.5+02:00`); seconds up to 60. */
export const parseDateTime = (s: string): Date | undefined => {
  const year = digitsAt(s, 0, 4)
  const month = digitsAt(s, 5, 2)
  const day = digitsAt(s, 8, 2)
  const hour = digitsAt(s, 11, 2)
  const minute = digitsAt(s, 14, 2)
  const second = digitsAt(s, 17, 2)
  if (
    year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour < 0 || hour > 23 ||
    minute < 0 || minute > 59 || second < 0 || second > 60 || s[4] !== "-" || s[7] !== "-" ||
    (s[10] !== "T" && s[10] !== "t") || s[13] !== ":" || s[16] !== ":"
  ) return undefined
  let i = 19
  let ms = 0
  if (s[i] === ".") {
    const start = ++i
    while (isDigit(s.charCodeAt(i))) i++
    if (i === start) return undefined
    ms = Number((s.slice(start, Math.min(i, start + 3)) + "00").slice(0, 3))
  }
  let offset = 0
  if (s[i] === "Z" || s[i] === "z") {
    i++
  } else if (s[i] === "+" || s[i] === "-") {
    const oh = digitsAt(s, i + 1, 2)
    const om = digitsAt(s, i + 4, 2)
    if (oh < 0 || oh > 23 || om < 0 || om > 59 || s[i + 3] !== ":") return undefined
    offset = (s[i] === "-" ? -1 : 1) * (oh * 60 + om)
    i += 6
  } else {
    return undefined
  }
  if (i !== s.length) return undefined
  const date = new Date(0)
  date.setUTCFullYear(year, month - 1, day)
  date.setUTCHours(hour, minute, second, ms)
  const utc = new Date(date.getTime() - offset * 60_000)
  const y = utc.getUTCFullYear()
  return y >= 0 && y <= 9999 ? utc : undefined
}

/** RRVS=<date-time>[;C|;R] */
const parseRrvs = (v: string): RequireRecipientValidSince | undefined => {
  const semi = v.indexOf(";")
  const date = parseDateTime(semi < 0 ? v : v.slice(0, semi))
  if (date === undefined) return undefined
  if (semi < 0) return { date }
  const mode = asciiUpper(v.slice(semi + 1))
  return mode === "C" || mode === "R" ? { date, mode } : undefined
}

/** Parses the items after `RCPT TO:<...>` against the extensions the server offers. */
export const parseRcptParameters = (
  params: ReadonlyArray<string>,
  enabled: Enabled
): Result.Result<RcptOptions, SmtpError> => {
  const items = split(params, "RCPT")
  if (Result.isFailure(items)) return Result.fail(items.failure)
  const out: { -readonly [K in keyof RcptOptions]: RcptOptions[K] } = {}
  for (const [keyword, value] of items.success) {
    switch (keyword) {
      case "NOTIFY": {
        if (!enabled.dsn) return Result.fail(notSupported(keyword))
        const notify = value === undefined ? undefined : parseNotify(value)
        if (notify === undefined) return Result.fail(malformed(keyword))
        out.notify = notify
        break
      }
      case "ORCPT": {
        if (!enabled.dsn) return Result.fail(notSupported(keyword))
        const orcpt = value === undefined ? undefined : parseOrcpt(value)
        if (orcpt === undefined) return Result.fail(malformed(keyword))
        out.originalRecipient = orcpt
        break
      }
      case "RRVS": {
        if (!enabled.rrvs) return Result.fail(notSupported(keyword))
        const rrvs = value === undefined ? undefined : parseRrvs(value)
        if (rrvs === undefined) return Result.fail(malformed(keyword))
        out.requireRecipientValidSince = rrvs
        break
      }
      default:
        return Result.fail(unrecognized("RCPT"))
    }
  }
  return Result.succeed(out)
}

// ---------------------------------------------------------------------------
// Formatting (client side)

const isBody = Schema.is(BodyType)
// `Size` as a plain test (Schema.Int is Number.isSafeInteger): SIZE is formatted for every
// MAIL FROM, where a Schema pass cost more than the rest of the line.
const isSize = (n: unknown): boolean => typeof n === "number" && Number.isSafeInteger(n) && n >= 0
const isAuth = Schema.is(Schema.NullOr(Address.Mailbox))
const isRet = Schema.is(DsnReturn)
const isEnvelopeId = Schema.is(EnvelopeId)
const isDeliverBy = Schema.is(DeliverBy)
const isMtPriority = Schema.is(MtPriority)
const isNotify = Schema.is(Notify)
const isOriginalRecipient = Schema.is(OriginalRecipient)
const isRrvs = Schema.is(RequireRecipientValidSince)

/**
 * The `KEY=VALUE` items for MAIL FROM, xtext applied where the RFCs say. Every value is
 * checked first, so nothing but printable ASCII reaches the wire; a bad one fails with
 * the same `501 5.5.4` a server would send.
 */
export const formatMailParameters = (options: MailOptions): Result.Result<ReadonlyArray<string>, SmtpError> => {
  const out: Array<string> = []
  const o = options
  if (o.body !== undefined) {
    if (!isBody(o.body)) return Result.fail(malformed("BODY"))
    out.push(`BODY=${o.body}`)
  }
  if (o.size !== undefined) {
    if (!isSize(o.size)) return Result.fail(malformed("SIZE"))
    out.push(`SIZE=${o.size}`)
  }
  if (o.smtputf8 === true) out.push("SMTPUTF8")
  if (o.requireTls === true) out.push("REQUIRETLS")
  if (o.auth !== undefined) {
    if (!isAuth(o.auth)) return Result.fail(malformed("AUTH"))
    out.push(o.auth === null ? "AUTH=<>" : `AUTH=${Xtext.encode(o.auth)}`)
  }
  if (o.ret !== undefined) {
    if (!isRet(o.ret)) return Result.fail(malformed("RET"))
    out.push(`RET=${o.ret}`)
  }
  if (o.envelopeId !== undefined) {
    if (!isEnvelopeId(o.envelopeId)) return Result.fail(malformed("ENVID"))
    out.push(`ENVID=${Xtext.encode(o.envelopeId)}`)
  }
  if (o.deliverBy !== undefined) {
    if (!isDeliverBy(o.deliverBy)) return Result.fail(malformed("BY"))
    const by = o.deliverBy
    out.push(`BY=${by.seconds};${by.mode}${by.trace ? "T" : ""}`)
  }
  if (o.mtPriority !== undefined) {
    if (!isMtPriority(o.mtPriority)) return Result.fail(malformed("MT-PRIORITY"))
    out.push(`MT-PRIORITY=${o.mtPriority}`)
  }
  return Result.succeed(out)
}

/** The `KEY=VALUE` items for RCPT TO; see `formatMailParameters`. */
export const formatRcptParameters = (options: RcptOptions): Result.Result<ReadonlyArray<string>, SmtpError> => {
  const out: Array<string> = []
  const o = options
  if (o.notify !== undefined) {
    if (!isNotify(o.notify)) return Result.fail(malformed("NOTIFY"))
    out.push(`NOTIFY=${o.notify.join(",")}`)
  }
  if (o.originalRecipient !== undefined) {
    if (!isOriginalRecipient(o.originalRecipient)) return Result.fail(malformed("ORCPT"))
    const { address, addressType } = o.originalRecipient
    out.push(`ORCPT=${addressType};${encodeOrcpt(addressType, address)}`)
  }
  if (o.requireRecipientValidSince !== undefined) {
    if (!isRrvs(o.requireRecipientValidSince)) return Result.fail(malformed("RRVS"))
    const { date, mode } = o.requireRecipientValidSince
    out.push(`RRVS=${date.toISOString()}${mode === undefined ? "" : `;${mode}`}`)
  }
  return Result.succeed(out)
}
