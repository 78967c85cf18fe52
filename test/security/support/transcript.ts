/**
 * What a server said to a hostile peer, checked against the standard every reply must meet:
 * well-formed lines, an enhanced status code on every negative reply, no line break smuggled
 * into a reply, and a documented last word before the server hangs up.
 */

export interface WireReply {
  readonly code: number
  /** "4.7.0", or undefined when the first line does not start with one. */
  readonly enhanced: string | undefined
  /** The text of every line, without code and enhanced code. */
  readonly lines: ReadonlyArray<string>
}

export interface Transcript {
  readonly replies: ReadonlyArray<WireReply>
  /** Everything wrong with it; empty when the server behaved. */
  readonly problems: ReadonlyArray<string>
}

const LINE = /^([2-5][0-5]\d)([ -])(.*)$/s
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/

/** What a reply looks like in messages: "421 4.7.0 text". */
export const showReply = (r: WireReply): string =>
  `${r.code}${r.enhanced === undefined ? "" : ` ${r.enhanced}`} ${r.lines[0] ?? ""}`.trimEnd()

/**
 * The replies a server may close a connection after, as documented: QUIT (221), a timeout
 * (421 4.4.2), too many errors, unknown commands or failed AUTH (421 4.7.0), a line over the
 * limit (500 5.5.2), the 220 to STARTTLS when the handshake then fails (no reply possible), a
 * line that is not SMTP (221 2.7.0), unauthorised pipelining (554 5.5.0), a BDAT that cannot be
 * framed (521 5.5.4) or without CHUNKING (521 5.5.1), and a BDAT chunk too large to read (552
 * 5.3.4, which otherwise does not close: there it says so).
 */
const key = (r: WireReply) => `${r.code}${r.enhanced === undefined ? "" : ` ${r.enhanced}`}`

const closingReplies: ReadonlySet<string> = new Set([
  "221 2.0.0",
  "421 4.4.2",
  "421 4.7.0",
  "500 5.5.2",
  "220 2.0.0",
  "221 2.7.0",
  "554 5.5.0",
  "521 5.5.4",
  "521 5.5.1"
])

const isClosingReply = (r: WireReply): boolean =>
  closingReplies.has(key(r)) || (key(r) === "552 5.3.4" && (r.lines[0] ?? "").endsWith("closing connection"))


/**
 * Parses `text` (one char per byte) into replies and lists what is wrong with them.
 * `complete`: the connection ended cleanly, so the text is all the server said (when it was
 * reset, a trailing partial line is ignored). `closedByServer`: the server hung up on its own,
 * so its last reply must be a documented closing one.
 */
export const parseTranscript = (
  text: string,
  options: { readonly complete: boolean; readonly closedByServer: boolean }
): Transcript => {
  const problems: Array<string> = []
  const replies: Array<WireReply> = []
  const parts = text.split("\r\n")
  const tail = parts.pop()!
  if (tail !== "" && options.complete) problems.push(`the server's output ends without CRLF: ${JSON.stringify(tail.slice(0, 100))}`)
  let open: { code: number; lines: Array<string> } | undefined
  for (const line of parts) {
    if (/[\r\n\0]/.test(line)) {
      problems.push(`a reply line holds CR, LF or NUL: ${JSON.stringify(line.slice(0, 100))}`)
      continue
    }
    const m = LINE.exec(line)
    if (m === null) {
      problems.push(`not a reply line: ${JSON.stringify(line.slice(0, 100))}`)
      continue
    }
    const code = Number(m[1])
    if (open !== undefined && open.code !== code) problems.push(`a reply mixes codes ${open.code} and ${code}`)
    open ??= { code, lines: [] }
    open.lines.push(m[3]!)
    if (m[2] === " ") {
      const first = ENHANCED.exec(open.lines[0]!)
      const enhanced = first === null ? undefined : `${first[1]}.${first[2]}.${first[3]}`
      const lines = open.lines.map((l) => enhanced !== undefined && l.startsWith(enhanced) ? l.slice(enhanced.length).trimStart() : l)
      const reply: WireReply = { code: open.code, enhanced, lines }
      replies.push(reply)
      if (code >= 400 && enhanced === undefined) problems.push(`a negative reply without an enhanced status code: ${line}`)
      if (enhanced !== undefined && Number(enhanced[0]) !== Math.floor(code / 100)) {
        problems.push(`enhanced code class differs from the reply code: ${line}`)
      }
      if (code === 421 && enhanced === "4.3.0") problems.push(`the server hit an internal error: ${showReply(reply)}`)
      open = undefined
    }
  }
  if (open !== undefined && options.complete) problems.push("the server closed in the middle of a multi-line reply")
  if (options.closedByServer) {
    const last = replies.at(-1)
    if (last === undefined) problems.push("the server closed without saying anything")
    else if (!isClosingReply(last)) problems.push(`the server closed after ${showReply(last)}, not a documented closing reply`)
  }
  return { replies, problems }
}

/** How many messages the server said it accepted (SMTP: one reply per message). */
export const acceptedMessages = (t: Transcript): number =>
  t.replies.filter((r) => r.code === 250 && r.enhanced === "2.0.0" && r.lines[0] === "OK: message accepted").length
