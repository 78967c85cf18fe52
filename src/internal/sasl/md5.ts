/**
 * MD5 (RFC 1321) and HMAC-MD5 (RFC 2104), only for CRAM-MD5: WebCrypto has no MD5.
 * MD5 is broken as a hash; HMAC-MD5 is what RFC 2195 specifies and is not used elsewhere.
 */

// Per-round shift amounts and the sine-derived constants of RFC 1321 section 3.4.
const S = [
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21
]
const K: Int32Array = (() => {
  const k = new Int32Array(64)
  for (let i = 0; i < 64; i++) k[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0
  return k
})()

export const md5 = (message: Uint8Array): Uint8Array => {
  const len = message.length
  // Pad: 0x80, zeros to 56 mod 64, then the bit length as 64-bit little endian.
  const padded = new Uint8Array(((len + 8) >>> 6) * 64 + 64)
  padded.set(message)
  padded[len] = 0x80
  const bitLen = len * 8
  const view = new DataView(padded.buffer)
  view.setUint32(padded.length - 8, bitLen >>> 0, true)
  view.setUint32(padded.length - 4, Math.floor(bitLen / 2 ** 32), true)

  let a0 = 0x67452301
  let b0 = 0xefcdab89 | 0
  let c0 = 0x98badcfe | 0
  let d0 = 0x10325476
  const m = new Int32Array(16)
  for (let off = 0; off < padded.length; off += 64) {
    for (let j = 0; j < 16; j++) m[j] = view.getInt32(off + j * 4, true)
    let a = a0
    let b = b0
    let c = c0
    let d = d0
    for (let i = 0; i < 64; i++) {
      let f: number
      let g: number
      if (i < 16) {
        f = (b & c) | (~b & d)
        g = i
      } else if (i < 32) {
        f = (d & b) | (~d & c)
        g = (5 * i + 1) & 15
      } else if (i < 48) {
        f = b ^ c ^ d
        g = (3 * i + 5) & 15
      } else {
        f = c ^ (b | ~d)
        g = (7 * i) & 15
      }
      const t = d
      d = c
      c = b
      const x = (a + f + K[i]! + m[g]!) | 0
      const s = S[i]!
      b = (b + ((x << s) | (x >>> (32 - s)))) | 0
      a = t
    }
    a0 = (a0 + a) | 0
    b0 = (b0 + b) | 0
    c0 = (c0 + c) | 0
    d0 = (d0 + d) | 0
  }
  const out = new Uint8Array(16)
  const ov = new DataView(out.buffer)
  ov.setInt32(0, a0, true)
  ov.setInt32(4, b0, true)
  ov.setInt32(8, c0, true)
  ov.setInt32(12, d0, true)
  return out
}

const BLOCK = 64

export const hmacMd5 = (key: Uint8Array, message: Uint8Array): Uint8Array => {
  const k = new Uint8Array(BLOCK)
  k.set(key.length > BLOCK ? md5(key) : key)
  const inner = new Uint8Array(BLOCK + message.length)
  const outer = new Uint8Array(BLOCK + 16)
  for (let i = 0; i < BLOCK; i++) {
    inner[i] = k[i]! ^ 0x36
    outer[i] = k[i]! ^ 0x5c
  }
  inner.set(message, BLOCK)
  outer.set(md5(inner), BLOCK)
  return md5(outer)
}
