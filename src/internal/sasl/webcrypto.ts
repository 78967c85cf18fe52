/**
 * SHA-256, HMAC-SHA-256 and PBKDF2-HMAC-SHA-256 through WebCrypto (`globalThis.crypto.subtle`),
 * which Node, Deno, Bun and browsers all provide. Failures (a rejected promise) come back
 * as the error value so the caller can give them its own type.
 */
import * as Effect from "effect/Effect"
import { own } from "./bytes.ts"

const subtle = () => globalThis.crypto.subtle

const run = <A>(f: () => Promise<A>): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: f, catch: (cause) => cause })

export const sha256 = (data: Uint8Array): Effect.Effect<Uint8Array, unknown> =>
  run(async () => new Uint8Array(await subtle().digest("SHA-256", own(data))))

export const hmacSha256 = (key: Uint8Array, data: Uint8Array): Effect.Effect<Uint8Array, unknown> =>
  run(async () => {
    const k = await subtle().importKey("raw", own(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"])
    return new Uint8Array(await subtle().sign("HMAC", k, own(data)))
  })

export const pbkdf2Sha256 = (
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number
): Effect.Effect<Uint8Array, unknown> =>
  run(async () => {
    const k = await subtle().importKey("raw", own(password), "PBKDF2", false, ["deriveBits"])
    const bits = await subtle().deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: own(salt), iterations }, k, 256)
    return new Uint8Array(bits)
  })
