/**
 * Write buffers for small messages, cut from shared slabs.
 *
 * A `new Uint8Array` of a kilobyte gets a backing store of its own, allocated outside the
 * heap and tracked by the garbage collector: about ten times the cost of a view on a slab,
 * once per message. Views are handed out one after the other and a region is never handed
 * out twice, so a write still holding one is never overwritten: a full slab is left to the
 * garbage collector, which frees it with its last view.
 */

const SLAB_BYTES = 64 * 1024

/** Larger buffers get their own backing store: a slab serves at least eight. */
const MAX_FROM_SLAB = SLAB_BYTES / 8

let slab = new Uint8Array(0)
let used = 0

/** A new buffer of `size` bytes (its contents unspecified: the caller fills all of it). */
const alloc = (size: number): Uint8Array => {
  if (size > MAX_FROM_SLAB) return new Uint8Array(size)
  if (used + size > slab.length) {
    slab = new Uint8Array(SLAB_BYTES)
    used = 0
  }
  const out = slab.subarray(used, used + size)
  // 8-byte aligned, so that word-at-a-time scans of a view start on a word.
  used += (size + 7) & ~7
  return out
}

/** `a` then `b`, in one buffer. */
export const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = alloc(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

const encoder = new TextEncoder()

/** `text` as UTF-8, then `bytes`, in one buffer: commands followed by message data. */
export const withText = (text: string, bytes: Uint8Array): Uint8Array => {
  let ascii = true
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) >= 0x80) {
      ascii = false
      break
    }
  }
  if (!ascii) return concat(encoder.encode(text), bytes)
  const out = alloc(text.length + bytes.length)
  encoder.encodeInto(text, out)
  out.set(bytes, text.length)
  return out
}
