/**
 * Strict base64 (RFC 4648 section 4, the alphabet RFC 4954 uses).
 *
 * The decoder accepts only canonical input: length a multiple of 4, padding only at the
 * end, no whitespace or line breaks, and zero bits in the unused tail. Anything else is
 * refused rather than repaired, so two different strings never decode to the same bytes.
 *
 * Encoding is `effect/encoding`'s `Base64.encode`. Its decoder is not used because it is
 * lenient: it drops CR and LF anywhere in the input and ignores the unused tail bits, so
 * "Zm9v\r\n" and "Zh==" decode (test/internal/SaslPrimitives.test.ts shows both).
 */
import * as Base64 from "effect/encoding/Base64"

export const encode: (bytes: Uint8Array) => string = Base64.encode

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

const DECODE: Int8Array = (() => {
  const t = new Int8Array(128).fill(-1)
  for (let i = 0; i < ALPHABET.length; i++) t[ALPHABET.charCodeAt(i)] = i
  return t
})()

const PAD = 61 // "="

const value = (c: number): number => (c < 128 ? DECODE[c]! : -1)

/** How many bytes `text` decodes to, without decoding it; `undefined` when its length is not valid. */
export const decodedLength = (text: string): number | undefined => {
  const n = text.length
  if (n % 4 !== 0) return undefined
  if (n === 0) return 0
  const pad = text.charCodeAt(n - 1) === PAD ? (text.charCodeAt(n - 2) === PAD ? 2 : 1) : 0
  return (n / 4) * 3 - pad
}

/** Decodes canonical base64; `undefined` for anything else. */
export const decode = (text: string): Uint8Array | undefined => {
  const size = decodedLength(text)
  if (size === undefined) return undefined
  const out = new Uint8Array(size)
  const n = text.length
  let o = 0
  for (let i = 0; i < n; i += 4) {
    const last = i + 4 === n
    const a = value(text.charCodeAt(i))
    const b = value(text.charCodeAt(i + 1))
    if (a < 0 || b < 0) return undefined
    const c3 = text.charCodeAt(i + 2)
    const c4 = text.charCodeAt(i + 3)
    if (last && c3 === PAD) {
      // "xx==": one byte; the 4 low bits of b must be zero.
      if (c4 !== PAD || (b & 15) !== 0) return undefined
      out[o++] = (a << 2) | (b >> 4)
      break
    }
    const c = value(c3)
    if (c < 0) return undefined
    if (last && c4 === PAD) {
      // "xxx=": two bytes; the 2 low bits of c must be zero.
      if ((c & 3) !== 0) return undefined
      out[o++] = (a << 2) | (b >> 4)
      out[o++] = ((b & 15) << 4) | (c >> 2)
      break
    }
    const d = value(c4)
    if (d < 0) return undefined
    out[o++] = (a << 2) | (b >> 4)
    out[o++] = ((b & 15) << 4) | (c >> 2)
    out[o++] = ((c & 3) << 6) | d
  }
  return out
}
