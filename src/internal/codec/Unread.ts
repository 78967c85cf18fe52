/** A read buffer's unread bytes, kept when the next chunk arrives: shared by the server's and the client's readers. */

/** What `buf` holds from `pos` on (not taken yet), then `chunk`: one buffer, `chunk` itself when nothing is left. */
export const joinUnread = (buf: Uint8Array, pos: number, chunk: Uint8Array): Uint8Array => {
  if (pos >= buf.length) return chunk
  const rest = buf.length - pos
  const joined = new Uint8Array(rest + chunk.length)
  joined.set(buf.subarray(pos), 0)
  joined.set(chunk, rest)
  return joined
}
