/** Byte helpers shared by the codec and reader tests: one byte per char (latin1) both ways. */
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
