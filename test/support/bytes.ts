/** Byte helpers shared by the codec and reader tests: one byte per char (latin1) both ways, and the body normalisation the DATA codec must reproduce. */
export const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0))

export const text = (b: Uint8Array): string => Buffer.from(b).toString("latin1")

export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let n = 0
  for (const p of parts) {
    out.set(p, n)
    n += p.length
  }
  return out
}

const CR = 13
const LF = 10

/** What the decoder returns for an encoded body: lone CR/LF as CRLF, a final CRLF added to a non-empty body. */
export const normalizeBody = (input: Uint8Array): Uint8Array => {
  const out: Array<number> = []
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!
    if (b === CR) {
      out.push(CR, LF)
      if (input[i + 1] === LF) i++
    } else if (b === LF) {
      out.push(CR, LF)
    } else {
      out.push(b)
    }
  }
  const len = out.length
  if (len > 0 && !(out[len - 2] === CR && out[len - 1] === LF)) out.push(CR, LF)
  return Uint8Array.from(out)
}
