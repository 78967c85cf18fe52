/**
 * The cryptography of the SASL mechanisms, on `effect/crypto`: SHA-256, HMAC-SHA-256 and
 * PBKDF2-HMAC-SHA-256 for SCRAM and password checks, HMAC-MD5 for CRAM-MD5, and secure
 * random bytes for nonces, salts and challenges.
 *
 * Nothing is required of the caller. Each operation takes the `Digest`, `Mac`, `Kdf` or
 * `SecureRandom` service from the context when the program provides one (`NodeCrypto.layer`
 * from `@effect/platform-node` runs them on `node:crypto`), and otherwise uses the
 * `effect/crypto` WebCrypto layers on `globalThis.crypto`, built once on first use.
 */
import * as Context from "effect/Context"
import type { CryptoError } from "effect/crypto/CryptoError"
import * as Digest from "effect/crypto/Digest"
import * as Kdf from "effect/crypto/Kdf"
import * as Mac from "effect/crypto/Mac"
import * as SecureRandom from "effect/crypto/SecureRandom"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

type Services = Digest.Digest | Kdf.Kdf | Mac.Mac | SecureRandom.SecureRandom

const webCrypto: Layer.Layer<Services> = Layer.mergeAll(Digest.layerWebCrypto, Kdf.layerWebCrypto, Mac.layerWebCrypto)
  .pipe(Layer.provideMerge(SecureRandom.layerWebCrypto))

let defaults: Context.Context<Services> | undefined

// The layers have no finalizers, so the services outlive the scope they were built in.
const fallback = <I extends Services, S>(key: Context.Key<I, S>): S => {
  defaults ??= Effect.runSync(Effect.scoped(Layer.build(webCrypto)))
  return Context.get(defaults, key)
}

/** Runs `f` with the program's service for `key`, or the WebCrypto one. */
const use = <I extends Services, S, A, E>(
  key: Context.Key<I, S>,
  f: (service: S) => Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.flatMap(Effect.serviceOption(key), (service) => f(Option.isSome(service) ? service.value : fallback(key)))

export const randomBytes = (size: number): Effect.Effect<Uint8Array> =>
  use(SecureRandom.SecureRandom, (random) => random.randomBytes(size))

export const sha256 = (data: Uint8Array): Effect.Effect<Uint8Array> =>
  use(Digest.Digest, (digest) => digest.digest(Digest.sha256, data))

export const hmacSha256 = (key: Uint8Array, data: Uint8Array): Effect.Effect<Uint8Array, CryptoError> =>
  use(Mac.Mac, (mac) => Effect.flatMap(Mac.key(Mac.hmacSha256, key), (k) => mac.sign(k, data)))

export const pbkdf2Sha256 = (
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number
): Effect.Effect<Uint8Array, CryptoError> =>
  use(Kdf.Kdf, (kdf) => kdf.derive(Kdf.pbkdf2({ hash: Digest.sha256, iterations }), password, { salt, length: 32 }))

const BLOCK = 64 // MD5's block size

/** HMAC-MD5 (RFC 2104) on `Digest.md5`: `Mac` offers HMAC with SHA hashes only, and RFC 2195 needs MD5. */
export const hmacMd5 = (key: Uint8Array, message: Uint8Array): Effect.Effect<Uint8Array> =>
  use(Digest.Digest, (digest) =>
    Effect.gen(function*() {
      const k = new Uint8Array(BLOCK)
      k.set(key.length > BLOCK ? yield* digest.digest(Digest.md5, key) : key)
      const inner = new Uint8Array(BLOCK + message.length)
      const outer = new Uint8Array(BLOCK + 16)
      for (let i = 0; i < BLOCK; i++) {
        inner[i] = k[i]! ^ 0x36
        outer[i] = k[i]! ^ 0x5c
      }
      inner.set(message, BLOCK)
      outer.set(yield* digest.digest(Digest.md5, inner), BLOCK)
      return yield* digest.digest(Digest.md5, outer)
    }))
