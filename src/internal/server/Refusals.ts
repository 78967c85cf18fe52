/** Lines that are not SMTP at all, and pipelining where it was not allowed: refused the way Postfix refuses them. */
import type * as Command from "../../Command.ts"

/**
 * A verb that cannot begin an SMTP command: one of `forbidden` (another protocol's), a message
 * header's name and colon (message content read as commands), or anything not starting with a
 * letter (binary, a TLS ClientHello).
 */
export const isNotSmtp = (verb: string, forbidden: ReadonlySet<string>): boolean => {
  if (!isLetter(verb.charCodeAt(0))) return true
  const colon = verb.indexOf(":")
  if (colon > 0) {
    let name = true
    for (let i = 0; name && i < colon; i++) {
      const c = verb.charCodeAt(i)
      name = c > 32 && c < 127
    }
    if (name) return true
  }
  return verb.length <= 16 && forbidden.has(verb.toUpperCase())
}

const isLetter = (c: number) => (c | 0x20) >= 97 && (c | 0x20) <= 122

/** A line the parser refused that is binary rather than a botched command (a TLS ClientHello). */
export const isBinary = (line: string): boolean => {
  const c = line.charCodeAt(0)
  return line.length > 0 && !isLetter(c) && c !== 32 && c !== 9
}

/**
 * Whether a client must have seen this command's reply before it sends more (RFC 2920 3.1,
 * RFC 5321 without PIPELINING). QUIT ends the session anyway.
 */
export const mustWait = (cmd: Command.Command, pipelining: boolean, offered: boolean): boolean => {
  switch (cmd._tag) {
    case "Data":
    case "Helo":
      return true
    case "Ehlo":
    case "Lhlo":
      return !offered
    case "Quit":
      return false
    default:
      return !pipelining
  }
}

/** Commands that move no mail: past `junkCommandLimit` each counts as an error (Postfix's junk commands). */
export const isJunk = (cmd: Command.Command): boolean => {
  switch (cmd._tag) {
    case "Noop":
    case "Rset":
    case "Vrfy":
    case "Expn":
    case "Help":
      return true
    default:
      return false
  }
}
