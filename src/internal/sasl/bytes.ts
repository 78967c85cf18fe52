/**
 * Byte helpers for the SASL mechanisms. Platform-free: TextEncoder, TextDecoder and
 * `crypto.getRandomValues` are globals in Node, Deno, Bun and browsers.
 */

const encoder = new TextEncoder()
// fatal: invalid UTF-8 is refused, not replaced with U+FFFD. ignoreBOM: a leading BOM is data.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

export const utf8 = (s: string): Uint8Array<ArrayBuffer> => encoder.encode(s)

/** Strict UTF-8 decoding; `undefined` for malformed input. */
export const fromUtf8 = (bytes: Uint8Array): string | undefined => {
  try {
    return decoder.decode(bytes)
  } catch {
    return undefined
  }
}

/** Bytes 0x00-0x7f only, decoded; `undefined` otherwise. */
export const fromAscii = (bytes: Uint8Array): string | undefined => {
  let s = ""
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if (b > 0x7f) return undefined
    s += String.fromCharCode(b)
  }
  return s
}

export const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array<ArrayBuffer> => {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/** A copy whose buffer is a plain ArrayBuffer (what WebCrypto's types ask for). */
export const own = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(bytes.length)
  out.set(bytes)
  return out
}

/** Splits at every `sep` byte. */
export const split = (bytes: Uint8Array, sep: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let start = 0
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === sep) {
      out.push(bytes.subarray(start, i))
      start = i + 1
    }
  }
  out.push(bytes.subarray(start))
  return out
}

export const includesByte = (bytes: Uint8Array, b: number): boolean => bytes.indexOf(b) >= 0

export const xor = (a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ (b[i] ?? 0)
  return out
}

/**
 * Compares two byte strings in time that depends only on their lengths, never on where
 * they first differ: every byte is visited and differences are OR-ed together.
 */
export const constantTimeEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  const n = Math.max(a.length, b.length)
  let diff = a.length ^ b.length
  for (let i = 0; i < n; i++) {
    // Out-of-range reads give undefined; `| 0` keeps the loop branch-free either way.
    diff |= (a[i]! | 0) ^ (b[i]! | 0)
  }
  return diff === 0
}

export const randomBytes = (n: number): Uint8Array<ArrayBuffer> => globalThis.crypto.getRandomValues(new Uint8Array(n))

export const toHex = (bytes: Uint8Array): string => {
  let s = ""
  for (let i = 0; i < bytes.length; i++) s += bytes[i]!.toString(16).padStart(2, "0")
  return s
}
