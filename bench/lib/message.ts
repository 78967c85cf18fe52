/** The test message the client benchmarks send: plain headers and 78-character lines. */

const encoder = new TextEncoder()

export const FROM = "sender@bench.invalid"
export const TO = "rcpt@bench.invalid"

/** A message of exactly `size` bytes (at least the headers), CRLF line endings, no leading dots. */
export const makeMessage = (size: number): Uint8Array => {
  const header = encoder.encode(
    `From: <${FROM}>\r\nTo: <${TO}>\r\nSubject: benchmark\r\nMessage-ID: <bench@bench.invalid>\r\n\r\n`
  )
  const out = new Uint8Array(Math.max(size, header.length))
  out.set(header)
  const line = encoder.encode(`${"abcdefghijklmnopqrstuvwxyz".repeat(3)}\r\n`) // 80 bytes with CRLF
  let at = header.length
  while (at + line.length <= out.length) {
    out.set(line, at)
    at += line.length
  }
  // The rest: one short line (without CRLF when only one byte is left; clients add it).
  out.fill(0x78, at)
  if (out.length - at >= 2) out.set([13, 10], out.length - 2)
  return out
}

/** How the client benchmark children are asked to send. */
export interface SendRequest {
  readonly port: number
  /** "one": one connection; "pool": `connections` reused connections; "per-message": a connection per message. */
  readonly mode: "one" | "pool" | "per-message"
  readonly connections: number
  readonly messages: number
  readonly size: number
}
