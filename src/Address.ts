/**
 * Mailbox addresses and the paths of MAIL FROM / RCPT TO (RFC 5321 section 4.1.2),
 * with the internationalised forms of RFC 6531.
 *
 * An `Address` is kept exactly as written (quotes, case, literals): the parser
 * validates, it does not rewrite. Parsing is a hand-written single pass, linear in
 * the input, and never throws.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { SmtpError } from "./SmtpError.ts"

/** RFC 5321 4.5.3.1: the longest local part, in octets (UTF-8 octets for internationalised addresses). */
export const MAX_LOCAL_PART = 64
/** RFC 5321 4.5.3.1: the longest domain, in octets. */
export const MAX_DOMAIN = 255
/** RFC 1035 2.3.4: the longest label of a domain, in octets. */
export const MAX_LABEL = 63
/** A path is at most 256 octets with its angle brackets, so the mailbox is at most 254. */
export const MAX_PATH = 256
const MAX_MAILBOX = MAX_PATH - 2

// Character classes of RFC 5321 / 5322, for ASCII only.
const ATEXT = 1 // atext
const LETDIG = 2 // Let-dig
const QTEXT = 4 // qtextSMTP
const DCONTENT = 8 // dcontent
const classes = new Uint8Array(128)
for (let c = 32; c < 127; c++) {
  const ch = String.fromCharCode(c)
  const letdig = /[A-Za-z0-9]/.test(ch)
  if (letdig || "!#$%&'*+-/=?^_`{|}~".includes(ch)) classes[c]! |= ATEXT
  if (letdig) classes[c]! |= LETDIG
  if (c !== 34 && c !== 92) classes[c]! |= QTEXT
  if (c >= 33 && c !== 91 && c !== 92 && c !== 93) classes[c]! |= DCONTENT
}
const is = (c: number, cls: number) => c < 128 && (classes[c]! & cls) !== 0

const DQUOTE = 34
const AT = 64
const DOT = 46
const HYPHEN = 45
const isWsp = (c: number) => c === 32 || c === 9

/** Scanner state: a failed scan leaves its reason in `error`. */
interface Cursor {
  readonly s: string
  i: number
  error: string
}

const fail = (c: Cursor, error: string): false => {
  c.error = error
  return false
}

/** Steps over one non-ASCII character (a surrogate pair counts as one); lone surrogates are refused. */
const scanNonAscii = (c: Cursor): boolean => {
  const code = c.s.charCodeAt(c.i)
  if (code >= 0xd800 && code <= 0xdbff) {
    const next = c.s.charCodeAt(c.i + 1)
    if (!(next >= 0xdc00 && next <= 0xdfff)) return fail(c, "invalid Unicode")
    c.i += 2
  } else if (code >= 0xdc00 && code <= 0xdfff) {
    return fail(c, "invalid Unicode")
  } else if (code === 0xfffd || code < 0xa0) {
    // U+FFFD is what invalid UTF-8 on the wire decodes to; C1 controls are never address text.
    return fail(c, "invalid UTF-8")
  } else {
    c.i++
  }
  return true
}

/** UTF-8 length of s[from, to), which holds no lone surrogates. */
const octets = (s: string, from: number, to: number): number => {
  let n = 0
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdfff ? 2 : 3
  }
  return n
}

/** Dot-string / Quoted-string. */
const scanLocalPart = (c: Cursor): boolean => {
  const s = c.s
  const start = c.i
  if (s.charCodeAt(c.i) === DQUOTE) {
    c.i++
    for (;;) {
      if (c.i >= s.length) return fail(c, "unterminated quoted local part")
      const ch = s.charCodeAt(c.i)
      if (ch === DQUOTE) {
        c.i++
        break
      }
      if (ch === 92) {
        const next = s.charCodeAt(c.i + 1)
        if (!(next >= 32 && next <= 126)) return fail(c, "invalid quoted pair in local part")
        c.i += 2
      } else if (is(ch, QTEXT)) {
        c.i++
      } else if (ch >= 128) {
        if (!scanNonAscii(c)) return false
      } else {
        return fail(c, "invalid character in quoted local part")
      }
    }
  } else {
    for (;;) {
      const atomStart = c.i
      for (;;) {
        const ch = s.charCodeAt(c.i)
        if (is(ch, ATEXT)) c.i++
        else if (ch >= 128) {
          if (!scanNonAscii(c)) return false
        } else break
      }
      if (c.i === atomStart) {
        return fail(c, c.i === start ? "empty local part" : "empty atom in local part")
      }
      if (s.charCodeAt(c.i) !== DOT) break
      c.i++
    }
  }
  if (octets(s, start, c.i) > MAX_LOCAL_PART) return fail(c, `local part longer than ${MAX_LOCAL_PART} octets`)
  return true
}

const isIPv4 = (s: string): boolean => {
  let parts = 0
  let i = 0
  while (i <= s.length) {
    let digits = 0
    let value = 0
    while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) {
      value = value * 10 + s.charCodeAt(i) - 48
      digits++
      i++
    }
    if (digits === 0 || digits > 3 || value > 255) return false
    parts++
    if (i === s.length) return parts === 4
    if (s.charCodeAt(i) !== DOT || parts === 4) return false
    i++
  }
  return false
}

const isHexGroup = (g: string): boolean => {
  if (g.length === 0 || g.length > 4) return false
  for (let i = 0; i < g.length; i++) {
    const c = g.charCodeAt(i) | 32
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false
  }
  return true
}

/**
 * IPv6-addr of RFC 5321 4.1.3: eight groups, or fewer around one "::" that stands
 * for at least two, the last two groups optionally written as IPv4.
 */
const isIPv6 = (s: string): boolean => {
  if (s.length > 45) return false
  const gap = s.indexOf("::")
  if (gap >= 0 && s.indexOf("::", gap + 1) >= 0) return false
  const split = (part: string) => (part === "" ? [] : part.split(":"))
  const head = split(gap < 0 ? s : s.slice(0, gap))
  const tail = gap < 0 ? [] : split(s.slice(gap + 2))
  const last = gap < 0 ? head : tail
  let groups = head.length + tail.length
  if (last.length > 0 && last[last.length - 1]!.includes(".")) {
    if (!isIPv4(last.pop()!)) return false
    groups++ // the IPv4 form is two groups
  }
  if (!head.every(isHexGroup) || !tail.every(isHexGroup)) return false
  return gap < 0 ? groups === 8 : groups <= 6
}

/** Standardized-tag = Ldh-str. */
const isLdhStr = (s: string): boolean => {
  if (s.length === 0 || s.charCodeAt(s.length - 1) === HYPHEN) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!is(c, LETDIG) && c !== HYPHEN) return false
  }
  return true
}

/** "[" IPv4 / "IPv6:" IPv6 / tag ":" dcontent "]". */
const scanAddressLiteral = (c: Cursor): boolean => {
  const s = c.s
  const open = c.i
  c.i++
  while (c.i < s.length && s.charCodeAt(c.i) !== 93) {
    if (!is(s.charCodeAt(c.i), DCONTENT)) return fail(c, "invalid character in address literal")
    c.i++
  }
  if (c.i >= s.length) return fail(c, "unterminated address literal")
  const content = s.slice(open + 1, c.i)
  c.i++
  const colon = content.indexOf(":")
  if (colon < 0) return isIPv4(content) || fail(c, "invalid IPv4 address literal")
  const tag = content.slice(0, colon)
  if (tag.toLowerCase() === "ipv6") return isIPv6(content.slice(colon + 1)) || fail(c, "invalid IPv6 address literal")
  if (!isLdhStr(tag)) return fail(c, "invalid address literal tag")
  return colon < content.length - 1 || fail(c, "empty address literal")
}

/**
 * Domain (LDH labels; U-labels only mark the address as non-ASCII) or address literal.
 * The length of a U-label is left to the 255-octet domain limit: its real limit
 * applies to its A-label form.
 */
const scanDomain = (c: Cursor): boolean => {
  const s = c.s
  const start = c.i
  if (s.charCodeAt(c.i) === 91) {
    if (!scanAddressLiteral(c)) return false
  } else {
    for (;;) {
      const label = c.i
      let uLabel = false
      for (;;) {
        const ch = s.charCodeAt(c.i)
        if (is(ch, LETDIG) || (ch === HYPHEN && c.i > label)) c.i++
        else if (ch >= 128) {
          if (!scanNonAscii(c)) return false
          uLabel = true
        } else break
      }
      if (c.i === label) {
        if (s.charCodeAt(c.i) === HYPHEN) return fail(c, "domain label starts with a hyphen")
        return fail(c, c.i === start ? "missing domain" : "empty domain label")
      }
      if (s.charCodeAt(c.i - 1) === HYPHEN) return fail(c, "domain label ends with a hyphen")
      if (!uLabel && c.i - label > MAX_LABEL) return fail(c, `domain label longer than ${MAX_LABEL} octets`)
      if (s.charCodeAt(c.i) !== DOT) break
      c.i++
    }
  }
  if (octets(s, start, c.i) > MAX_DOMAIN) return fail(c, `domain longer than ${MAX_DOMAIN} octets`)
  return true
}

/** Local-part "@" ( Domain / address-literal ). */
const scanMailbox = (c: Cursor): boolean => {
  const start = c.i
  if (!scanLocalPart(c)) return false
  if (c.s.charCodeAt(c.i) !== AT) {
    const ch = c.s.charCodeAt(c.i)
    return fail(c, c.i >= c.s.length || ch === 62 || isWsp(ch) ? "missing @domain" : "invalid character in local part")
  }
  c.i++
  if (!scanDomain(c)) return false
  if (octets(c.s, start, c.i) > MAX_MAILBOX) return fail(c, `address longer than ${MAX_MAILBOX} octets`)
  return true
}

const POSTMASTER = "postmaster"

/** "postmaster" in any case (ASCII letters only) at index i. */
const postmasterAt = (s: string, i: number): boolean => {
  if (s.length < i + POSTMASTER.length) return false
  for (let k = 0; k < POSTMASTER.length; k++) {
    if ((s.charCodeAt(i + k) | 32) !== POSTMASTER.charCodeAt(k)) return false
  }
  return true
}

// ---------------------------------------------------------------------------
// The Address type

/** Why a text is not an address: `undefined` when it is one (any form, UTF-8 allowed). */
const check = (text: string): string | undefined => {
  if (text.length === POSTMASTER.length && postmasterAt(text, 0)) return undefined
  const c: Cursor = { s: text, i: 0, error: "" }
  if (!scanMailbox(c)) return c.error
  return c.i === text.length ? undefined : "unexpected text after the address"
}

/**
 * A mailbox, `local@domain`, or RFC 5321's special recipient `postmaster` (no domain).
 * UTF-8 forms are valid addresses: whether one may be sent depends on SMTPUTF8.
 */
export const Address = Schema.String.pipe(
  Schema.check(Schema.makeFilter((s: string) => check(s) ?? true, { expected: "an email address" })),
  Schema.brand("Address")
)
export type Address = typeof Address.Type

/** True for the special recipient `<postmaster>`, which has no domain (RFC 5321 4.5.1). */
export const isPostmaster = (address: Address): boolean => address.indexOf("@") < 0

/** An address with a domain: anything but bare `postmaster`. What MAIL FROM and AUTH= carry. */
export const Mailbox = Address.check(
  Schema.makeFilter((a: Address) => !isPostmaster(a) || "postmaster without a domain is only a recipient")
)

/** A failure to parse an address, with a reason fit for a reply text. */
export class AddressError extends Data.TaggedError("AddressError")<{
  /** What is wrong with the address, e.g. "domain label longer than 63 octets". */
  readonly message: string
}> {}

/** How `parse`, `parseReversePath` and `parseForwardPath` read an address. */
export interface ParseOptions {
  /** Accept non-ASCII local parts and U-labels: SMTPUTF8 is in effect (RFC 6531). Default false. */
  readonly utf8?: boolean | undefined
}

/** True when the address needs SMTPUTF8 (it holds a non-ASCII character). */
export const isUtf8 = (address: string): boolean => {
  for (let i = 0; i < address.length; i++) if (address.charCodeAt(i) >= 128) return true
  return false
}

/** Parses a bare address (no angle brackets): `local@domain` or `postmaster`. */
export const parse = (text: string, options?: ParseOptions): Result.Result<Address, AddressError> => {
  const reason = check(text)
  if (reason !== undefined) return Result.fail(new AddressError({ message: reason }))
  if (options?.utf8 !== true && isUtf8(text)) {
    return Result.fail(new AddressError({ message: "non-ASCII address needs SMTPUTF8" }))
  }
  return Result.succeed(text as Address)
}

/** Builds an address from a trusted literal; throws an `AddressError` when it is not one. UTF-8 is allowed. */
export const make = (text: string): Address => {
  const r = parse(text, { utf8: true })
  if (Result.isFailure(r)) throw r.failure
  return r.success
}

/** Index of the "@" between local part and domain, -1 for `postmaster`. */
const atIndex = (address: Address): number => {
  if (address.charCodeAt(0) !== DQUOTE) return address.indexOf("@")
  for (let i = 1; i < address.length; i++) {
    const c = address.charCodeAt(i)
    if (c === 92) i++
    else if (c === DQUOTE) return i + 1
  }
  return -1
}

/** The local part as written (a quoted local part keeps its quotes). */
export const localPart = (address: Address): string => {
  const at = atIndex(address)
  return at < 0 ? address : address.slice(0, at)
}

/** The domain or address literal as written; "" for `postmaster`. */
export const domain = (address: Address): string => {
  const at = atIndex(address)
  return at < 0 ? "" : address.slice(at + 1)
}

// ---------------------------------------------------------------------------
// Paths

/** Which command a path belongs to: they differ in `<>`, `<postmaster>` and the error reply. */
export type PathKind = "sender" | "recipient"

/** A path read from a command line: the address (`null` for `<>`) and the index just after it. */
export interface PathScan {
  /** The address, `null` for the null path `<>`. */
  readonly address: Address | null
  /** The index in the text just after the path (after its `>`). */
  readonly end: number
}

const badPath = (kind: PathKind, reason: string): SmtpError =>
  kind === "sender"
    ? SmtpError.of(501, [5, 1, 7], `Bad sender address syntax: ${reason}`)
    : SmtpError.of(501, [5, 1, 3], `Bad recipient address syntax: ${reason}`)

/** RFC 6531 3.5: a non-ASCII address without SMTPUTF8. */
export const utf8Required = (kind: PathKind): SmtpError =>
  SmtpError.of(553, [5, 6, 7], `Non-ASCII ${kind} address requires SMTPUTF8`)

/**
 * Reads a path starting at `start`: `<mailbox>`, `<>` (sender only), a source route
 * (`<@a,@b:mailbox>`, accepted and dropped), `<postmaster>` (recipient only), or a
 * mailbox without brackets. The path must be followed by the end of the text or a
 * space/tab. Non-ASCII is accepted here; the caller applies the SMTPUTF8 rule.
 */
export const scanPath = (text: string, start: number, kind: PathKind): Result.Result<PathScan, SmtpError> => {
  const c: Cursor = { s: text, i: start, error: "" }
  const bracketed = text.charCodeAt(c.i) === 60
  if (bracketed) c.i++
  let address: Address | null
  if (bracketed && text.charCodeAt(c.i) === 62) {
    if (kind === "recipient") return Result.fail(badPath(kind, "the null path <> is not a recipient"))
    address = null
  } else {
    if (text.charCodeAt(c.i) === AT) {
      // A-d-l ":" — source routes are obsolete (RFC 5321 4.1.1.3 and appendix C): read and drop.
      for (;;) {
        c.i++
        if (!scanDomain(c)) return Result.fail(badPath(kind, `source route: ${c.error}`))
        const ch = text.charCodeAt(c.i)
        c.i++
        if (ch === 58) break
        if (ch !== 44 || text.charCodeAt(c.i) !== AT) return Result.fail(badPath(kind, "malformed source route"))
      }
    }
    const from = c.i
    const afterPostmaster = text.charCodeAt(from + POSTMASTER.length)
    if (from >= text.length || text.charCodeAt(from) === 62 || isWsp(text.charCodeAt(from))) {
      return Result.fail(badPath(kind, "missing address"))
    }
    if (
      kind === "recipient" && from === start + (bracketed ? 1 : 0) && postmasterAt(text, from) &&
      (bracketed ? afterPostmaster === 62 : from + POSTMASTER.length === text.length || isWsp(afterPostmaster))
    ) {
      c.i += POSTMASTER.length
    } else if (!scanMailbox(c)) {
      return Result.fail(badPath(kind, c.error))
    }
    address = text.slice(from, c.i) as Address
  }
  if (bracketed) {
    if (text.charCodeAt(c.i) !== 62) return Result.fail(badPath(kind, "missing closing >"))
    c.i++
  }
  if (c.i < text.length && !isWsp(text.charCodeAt(c.i))) {
    return Result.fail(badPath(kind, "unexpected text after the address"))
  }
  return Result.succeed({ address, end: c.i })
}

const wholePath = (text: string, kind: PathKind, options?: ParseOptions): Result.Result<Address | null, SmtpError> => {
  const r = scanPath(text, 0, kind)
  if (Result.isFailure(r)) return Result.fail(r.failure)
  if (r.success.end !== text.length) return Result.fail(badPath(kind, "unexpected text after the address"))
  const address = r.success.address
  if (address !== null && options?.utf8 !== true && isUtf8(address)) return Result.fail(utf8Required(kind))
  return Result.succeed(address)
}

/**
 * Parses the reverse-path of MAIL FROM (the text after "FROM:"): `null` for `<>`.
 * Fails with `501 5.1.7`, or `553 5.6.7` for a non-ASCII address without `utf8`.
 */
export const parseReversePath = (text: string, options?: ParseOptions): Result.Result<Address | null, SmtpError> =>
  wholePath(text, "sender", options)

/**
 * Parses the forward-path of RCPT TO (the text after "TO:"); `<postmaster>` is accepted.
 * Fails with `501 5.1.3`, or `553 5.6.7` for a non-ASCII address without `utf8`.
 */
export const parseForwardPath = (text: string, options?: ParseOptions): Result.Result<Address, SmtpError> =>
  wholePath(text, "recipient", options) as Result.Result<Address, SmtpError>
