/**
 * Byte helpers for the SASL mechanisms. Platform-free: TextEncoder and TextDecoder are
 * globals in Node, Deno, Bun and browsers.
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

export const xor = (a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ (b[i] ?? 0)
  return out
}
