/**
 * A stored message as a person reads it: decoded headers, the text and HTML bodies in Unicode,
 * and the attachments. postal-mime does the MIME work (multipart, transfer encodings, charsets,
 * encoded words); this module turns its result into the inbox's model, and copes with mail that
 * postal-mime refuses or that is not MIME at all.
 */
import * as Effect from "effect/Effect"
import PostalMime, { type Address, decodeWords } from "postal-mime"

export interface Mailbox {
  readonly name: string
  readonly address: string
}

interface Header {
  readonly name: string
  readonly value: string
}

interface Attachment {
  /** Its position in the message, the key of its download URL. */
  readonly index: number
  readonly filename: string | null
  readonly mimeType: string
  readonly size: number
  readonly disposition: string | null
  readonly contentId: string | null
  /** An inline part the HTML refers to by Content-ID (an embedded image). */
  readonly related: boolean
}

export interface Message {
  /** Every header in order, encoded words decoded. */
  readonly headers: ReadonlyArray<Header>
  readonly from: Mailbox | null
  readonly to: ReadonlyArray<Mailbox>
  readonly cc: ReadonlyArray<Mailbox>
  readonly bcc: ReadonlyArray<Mailbox>
  readonly replyTo: ReadonlyArray<Mailbox>
  readonly subject: string
  /** The Date header as ISO 8601, or null when missing or unreadable. */
  readonly date: string | null
  readonly messageId: string | null
  readonly text: string | null
  readonly html: string | null
  readonly attachments: ReadonlyArray<Attachment>
  /** What was wrong with the message, for people; empty for well-formed mail. */
  readonly problems: ReadonlyArray<string>
}

export interface Parsed {
  readonly message: Message
  /** The decoded bytes of attachment `index`. */
  readonly content: (index: number) => Uint8Array | undefined
}

/** postal-mime's own limits, stated here so that they are visible: a message beyond them is refused. */
const limits = {
  maxHeadersSize: 2 * 1024 * 1024,
  maxNestingDepth: 100,
  maxRfc822NestingDepth: 10
}

/** A header field name (RFC 5322: printable ASCII but the colon) followed by its colon. */
const headerStart = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/

/** Bytes as text: UTF-8 when they are UTF-8, otherwise Windows-1252 (which maps every byte). */
const decodeText = (bytes: Uint8Array): string => {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  } catch {
    return new TextDecoder("windows-1252").decode(bytes)
  }
}

const mailboxes = (addresses: ReadonlyArray<Address> | Address | undefined): Array<Mailbox> => {
  if (addresses === undefined) return []
  const list: ReadonlyArray<Address> = Array.isArray(addresses) ? addresses : [addresses as Address]
  return list.flatMap((a): Array<Mailbox> =>
    a.group !== undefined ? a.group.map((m) => ({ name: m.name, address: m.address })) : [{ name: a.name, address: a.address }]
  )
}

const isoDate = (value: string | undefined): string | null => {
  if (value === undefined) return null
  const t = Date.parse(value)
  return Number.isNaN(t) ? null : new Date(t).toISOString()
}

const decodeHeader = (value: string): string => {
  try {
    return decodeWords(value)
  } catch {
    return value
  }
}

const empty: Message = {
  headers: [],
  from: null,
  to: [],
  cc: [],
  bcc: [],
  replyTo: [],
  subject: "",
  date: null,
  messageId: null,
  text: null,
  html: null,
  attachments: [],
  problems: []
}

/** Parses a stored message. Never fails: what cannot be read is reported in `problems`. */
export const parse = (raw: Uint8Array): Effect.Effect<Parsed> => {
  const firstLine = decodeText(raw.subarray(0, Math.min(raw.length, 1000))).split(/\r?\n/, 1)[0] ?? ""
  if (raw.length > 0 && firstLine !== "" && !headerStart.test(firstLine)) {
    // No header section at all: people still want to read it.
    const message: Message = { ...empty, text: decodeText(raw), problems: ["The message has no header section; it is shown as plain text."] }
    return Effect.succeed({ message, content: () => undefined })
  }
  return Effect.tryPromise(() => PostalMime.parse(raw, { ...limits, attachmentEncoding: "arraybuffer" })).pipe(
    Effect.map((email): Parsed => {
      const contents = email.attachments.map((a) =>
        typeof a.content === "string" ? new TextEncoder().encode(a.content) : new Uint8Array(a.content)
      )
      const problems: Array<string> = []
      if (raw.length === 0) problems.push("The message is empty.")
      const message: Message = {
        headers: email.headers.map((h) => ({ name: h.originalKey, value: decodeHeader(h.value) })),
        from: mailboxes(email.from)[0] ?? null,
        to: mailboxes(email.to),
        cc: mailboxes(email.cc),
        bcc: mailboxes(email.bcc),
        replyTo: mailboxes(email.replyTo),
        subject: email.subject ?? "",
        date: isoDate(email.date),
        messageId: email.messageId ?? null,
        text: email.text ?? null,
        html: email.html ?? null,
        attachments: email.attachments.map((a, index) => ({
          index,
          filename: a.filename,
          mimeType: a.mimeType,
          size: contents[index]!.length,
          disposition: a.disposition,
          contentId: a.contentId ?? null,
          related: a.related === true
        })),
        problems
      }
      return { message, content: (index) => contents[index] }
    }),
    Effect.catch((error) => {
      const reason = error.cause instanceof Error ? error.cause.message : String(error.cause)
      return Effect.succeed<Parsed>({
        message: { ...empty, problems: [`The message could not be parsed: ${reason}. Its source is still available.`] },
        content: () => undefined
      })
    })
  )
}

const entities: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: " " }

/**
 * The first words of an HTML body, for a one-line preview that is never rendered as HTML. A
 * linear scan: hostile HTML (thousands of unclosed `<`) must not make a regular expression
 * backtrack.
 */
const htmlWords = (html: string, max: number): string => {
  const headEnd = html.search(/<\/head\s*>/i)
  let i = headEnd >= 0 ? headEnd : 0
  let out = ""
  while (i < html.length && out.length < max) {
    const lt = html.indexOf("<", i)
    out += html.slice(i, lt < 0 ? html.length : lt) + " "
    if (lt < 0) break
    const gt = html.indexOf(">", lt)
    if (gt < 0) break
    i = gt + 1
  }
  return out.replace(/&(#\d{1,7}|[a-z]{2,8});/gi, (m, name: string) =>
    name.startsWith("#") ? String.fromCodePoint(Math.min(Number(name.slice(1)), 0x10ffff)) : entities[name.toLowerCase()] ?? m
  )
}

/** The start of the text, on one line, for the list. */
export const snippet = (message: Message, length = 160): string => {
  const source = message.text?.slice(0, 4 * length) ?? (message.html === null ? "" : htmlWords(message.html, 4 * length))
  const flat = source.replace(/\s+/g, " ").trim()
  return flat.length > length ? flat.slice(0, length - 1) + "…" : flat
}
