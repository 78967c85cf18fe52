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
export type SendRequest = {
  readonly port: number
  /** "one": every message over one connection; "pool": the library's pool of `connections`, as many messages in flight. */
  readonly mode: "one" | "pool"
  readonly connections: number
  readonly messages: number
  readonly size: number
  /** effect-smtp only: `transfer` of each message (the client's default is "auto"). */
  readonly transfer?: "auto" | "bdat" | undefined
}

/** What a client child answers: measured around the sending alone (building the message excluded). */
export type SendAnswer = {
  readonly seconds: number
  readonly cpuSeconds: number
  /** Messages the server accepted (a 250 for the recipient). */
  readonly accepted: number
  /** Where the sending started on the child's monotonic clock (µs), to cut a CPU profile. */
  readonly startedUs: number
}
