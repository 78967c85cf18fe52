/**
 * The envelope as the client sends it: the server's EHLO keywords, and MAIL FROM /
 * RCPT TO lines built from checked addresses and the parameters the server offers.
 *
 * Parameters whose extension the server lacks are dropped when they are only advice
 * (SIZE, AUTH=, the DSN requests, MT-PRIORITY) and refused when dropping them would change
 * what happens to the message (BODY, SMTPUTF8, REQUIRETLS, BY, RRVS).
 */
import * as Result from "effect/Result"
import * as Address from "../../Address.ts"
import * as Command from "../../Command.ts"
import * as MailOptions from "../../MailOptions.ts"
import type { Reply } from "../../Reply.ts"
import { invalidArgument, type SmtpClientError, unsupported } from "./Errors.ts"
import { commandLine } from "./Wire.ts"

/** EHLO keywords (upper case) and their parameters ("" when none). */
export type Extensions = ReadonlyMap<string, string>

/** Reads the keywords of an EHLO/LHLO reply; the first line is the server's greeting. */
export const parseExtensions = (reply: Reply): Extensions => {
  const out = new Map<string, string>()
  for (const raw of reply.lines.slice(1)) {
    const line = raw.trim()
    if (line === "") continue
    const space = line.indexOf(" ")
    let keyword = (space < 0 ? line : line.slice(0, space)).toUpperCase()
    let params = space < 0 ? "" : line.slice(space + 1).trim()
    // Old servers advertise "AUTH=PLAIN LOGIN" as well as (or instead of) "AUTH PLAIN LOGIN".
    if (keyword.startsWith("AUTH=")) {
      params = `${line.slice(5, space < 0 ? undefined : space)} ${params}`.trim()
      keyword = "AUTH"
    }
    const known = out.get(keyword)
    out.set(keyword, known === undefined || known === "" ? params : params === "" ? known : `${known} ${params}`)
  }
  return out
}

/** The mechanisms of the AUTH keyword, upper-cased, without repeats. */
export const authMechanisms = (extensions: Extensions): ReadonlyArray<string> => {
  const params = extensions.get("AUTH")
  if (params === undefined) return []
  return [...new Set(params.split(/\s+/).filter((m) => m !== "").map((m) => m.toUpperCase()))]
}

/** SIZE's limit; `undefined` when SIZE is absent, has no number, or is 0 (no limit). */
export const maxMessageSize = (extensions: Extensions): number | undefined => {
  const params = extensions.get("SIZE")
  if (params === undefined || !/^\d{1,15}$/.test(params)) return undefined
  const n = Number(params)
  return n > 0 ? n : undefined
}

/** An address as the caller wrote it, without one pair of angle brackets around it. */
const bare = (text: string): string =>
  text.length >= 2 && text.startsWith("<") && text.endsWith(">") ? text.slice(1, -1) : text

const parseAddress = (text: string, role: "sender" | "recipient"): Result.Result<Address.Address, SmtpClientError> => {
  const r = Address.parse(bare(text), { utf8: true })
  if (Result.isFailure(r)) return Result.fail(invalidArgument(`invalid ${role} address: ${r.failure.message}`))
  if (role === "sender" && Address.isPostmaster(r.success)) {
    return Result.fail(invalidArgument("invalid sender address: postmaster without a domain is only a recipient"))
  }
  return Result.succeed(r.success)
}

/** Addresses remembered per connection, in each role. */
const REMEMBERED_ADDRESSES = 64

/** An address checked, and the start of its command line. */
export interface CheckedAddress {
  readonly address: Address.Address
  /** Non-ASCII: needs SMTPUTF8. */
  readonly utf8: boolean
  /** `MAIL FROM:<address>` or `RCPT TO:<address>`, without parameters or CRLF. */
  readonly head: string
  /** A RCPT command without parameters: the same every time. */
  plain: RcptCommand | undefined
}

/**
 * The addresses one connection has checked: a client sends from and to the same few again
 * and again, and each is parsed, and its command started, once (the first
 * `REMEMBERED_ADDRESSES` of each role).
 */
export class CheckedAddresses {
  private readonly senders = new Map<string, Result.Result<CheckedAddress, SmtpClientError>>()
  private readonly recipients = new Map<string, Result.Result<CheckedAddress, SmtpClientError>>()

  check(text: string, role: "sender" | "recipient"): Result.Result<CheckedAddress, SmtpClientError> {
    const known = role === "sender" ? this.senders : this.recipients
    const seen = known.get(text)
    if (seen !== undefined) return seen
    const parsed = parseAddress(text, role)
    if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
    const address = parsed.success
    const head = Command.format(role === "sender" ? { _tag: "Mail", from: address, params: [] } : { _tag: "Rcpt", to: address, params: [] })
    const r = Result.succeed({ address, utf8: Address.isUtf8(address), head, plain: undefined })
    if (known.size < REMEMBERED_ADDRESSES) known.set(text, r)
    return r
  }
}

/** `head` and `params` as a command line (what `Command.format` makes), CR, LF and NUL refused. */
const withParams = (head: string, params: ReadonlyArray<string>): Result.Result<string, SmtpClientError> =>
  commandLine(params.length === 0 ? head : `${head} ${params.join(" ")}`)

export interface MailCommand {
  readonly line: string
  readonly smtputf8: boolean
  readonly binary: boolean
}

/** MAIL FROM:<> */
const NULL_SENDER = Command.format({ _tag: "Mail", from: null, params: [] })

/**
 * MAIL FROM for `from` (`null` for the null reverse-path `<>`). SMTPUTF8 is added when
 * the sender is non-ASCII.
 */
export const mailCommand = (
  from: string | null,
  options: MailOptions.MailOptions,
  extensions: Extensions,
  addresses: CheckedAddresses
): Result.Result<MailCommand, SmtpClientError> => {
  let sender: CheckedAddress | undefined
  if (from !== null) {
    const checked = addresses.check(from, "sender")
    if (Result.isFailure(checked)) return Result.fail(checked.failure)
    sender = checked.success
  }
  const has = (keyword: string) => extensions.has(keyword)
  const o: { -readonly [K in keyof MailOptions.MailOptions]: MailOptions.MailOptions[K] } = {}
  const smtputf8 = options.smtputf8 === true || sender?.utf8 === true
  if (options.body !== undefined) {
    if (options.body === "8BITMIME" && !has("8BITMIME")) return Result.fail(unsupported("the server does not offer 8BITMIME"))
    if (options.body === "BINARYMIME" && !(has("BINARYMIME") && has("CHUNKING"))) {
      return Result.fail(unsupported("the server does not offer BINARYMIME with CHUNKING"))
    }
    // BODY=7BIT is only a parameter where BODY is.
    if (options.body !== "7BIT" || has("8BITMIME") || has("BINARYMIME")) o.body = options.body
  }
  if (options.size !== undefined && has("SIZE")) o.size = options.size
  if (smtputf8) {
    if (!has("SMTPUTF8")) return Result.fail(unsupported("the server does not offer SMTPUTF8 (needed for non-ASCII addresses)"))
    o.smtputf8 = true
  }
  if (options.requireTls === true) {
    if (!has("REQUIRETLS")) return Result.fail(unsupported("the server does not offer REQUIRETLS"))
    o.requireTls = true
  }
  if (options.auth !== undefined && has("AUTH")) o.auth = options.auth
  if (has("DSN")) {
    if (options.ret !== undefined) o.ret = options.ret
    if (options.envelopeId !== undefined) o.envelopeId = options.envelopeId
  }
  if (options.deliverBy !== undefined) {
    if (!has("DELIVERBY")) return Result.fail(unsupported("the server does not offer DELIVERBY"))
    o.deliverBy = options.deliverBy
  }
  if (options.mtPriority !== undefined && has("MT-PRIORITY")) o.mtPriority = options.mtPriority
  const params = MailOptions.formatMailParameters(o)
  if (Result.isFailure(params)) return Result.fail(invalidArgument(params.failure.message))
  const line = withParams(sender?.head ?? NULL_SENDER, params.success)
  if (Result.isFailure(line)) return Result.fail(line.failure)
  return Result.succeed({ line: line.success, smtputf8, binary: o.body === "BINARYMIME" })
}

export interface RcptCommand {
  readonly line: string
  /** The address as sent. */
  readonly address: string
}

/** RCPT TO for `to`; a non-ASCII recipient needs a transaction under SMTPUTF8. */
export const rcptCommand = (
  to: string,
  options: MailOptions.RcptOptions,
  extensions: Extensions,
  smtputf8: boolean,
  addresses: CheckedAddresses
): Result.Result<RcptCommand, SmtpClientError> => {
  const checked = addresses.check(to, "recipient")
  if (Result.isFailure(checked)) return Result.fail(checked.failure)
  const rcpt = checked.success
  if (!smtputf8 && rcpt.utf8) {
    return Result.fail(invalidArgument("a non-ASCII recipient needs SMTPUTF8 in MAIL FROM"))
  }
  const dsn = extensions.has("DSN") && (options.notify !== undefined || options.originalRecipient !== undefined)
  if (!dsn && options.requireRecipientValidSince === undefined) {
    // No parameter: the line depends on the address alone.
    if (rcpt.plain === undefined) {
      const line = commandLine(rcpt.head)
      if (Result.isFailure(line)) return Result.fail(line.failure)
      rcpt.plain = { line: line.success, address: rcpt.address }
    }
    return Result.succeed(rcpt.plain)
  }
  const o: { -readonly [K in keyof MailOptions.RcptOptions]: MailOptions.RcptOptions[K] } = {}
  if (dsn) {
    if (options.notify !== undefined) o.notify = options.notify
    if (options.originalRecipient !== undefined) o.originalRecipient = options.originalRecipient
  }
  if (options.requireRecipientValidSince !== undefined) {
    if (!extensions.has("RRVS")) return Result.fail(unsupported("the server does not offer RRVS"))
    o.requireRecipientValidSince = options.requireRecipientValidSince
  }
  const params = MailOptions.formatRcptParameters(o)
  if (Result.isFailure(params)) return Result.fail(invalidArgument(params.failure.message))
  const line = withParams(rcpt.head, params.success)
  if (Result.isFailure(line)) return Result.fail(line.failure)
  return Result.succeed({ line: line.success, address: rcpt.address })
}

/** A HELO/EHLO/LHLO name: one word of printable ASCII (a domain or an address literal). */
export const checkLocalName = (name: string): Result.Result<string, SmtpClientError> =>
  /^[\x21-\x7e]{1,255}$/.test(name)
    ? Result.succeed(name)
    : Result.fail(invalidArgument("the hello name must be one word of printable ASCII (a domain or address literal)"))
