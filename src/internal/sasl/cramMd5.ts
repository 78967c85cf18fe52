/**
 * CRAM-MD5 (RFC 2195): the server sends a challenge, the client answers with its name and
 * `hex(HMAC-MD5(password, challenge))`. Nothing replayable crosses the wire, but the server
 * must store the password in the clear. Server and client halves.
 */
import * as Clock from "effect/Clock"
import { timingSafeEqual } from "effect/crypto/Mac"
import * as Effect from "effect/Effect"
import * as Hex from "effect/encoding/Hex"
import * as Redacted from "effect/Redacted"
import type { ClientMechanism, Compare, ExchangeOptions, PasswordCredentials, ServerMechanism } from "../../Sasl.ts"
import * as Bytes from "./bytes.ts"
import * as Crypto from "./crypto.ts"
import type { SaslError } from "./error.ts"
import { fail } from "./error.ts"
import { challengeText, hasNul, invalid, mechanism, scripted, success } from "./exchange.ts"

/** Finds the plaintext secret of a user (CRAM-MD5 needs it); `undefined` for an unknown user. */
export type SecretLookup = (username: string) => Effect.Effect<Redacted.Redacted<string> | undefined, SaslError>

const DUMMY_SECRET = "\0dummy secret for unknown users\0"

const hexDigest = (secret: string, challenge: string): Effect.Effect<string> =>
  Effect.map(Crypto.hmacMd5(Bytes.utf8(secret), Bytes.utf8(challenge)), Hex.encode)

/** `<random.timestamp@hostname>`, a msg-id as RFC 2195 suggests. */
const randomChallenge = (hostname: string): Effect.Effect<string> =>
  Effect.all([Crypto.randomBytes(8), Clock.currentTimeMillis]).pipe(
    Effect.map(([r, now]) => {
      const n = new DataView(r.buffer, r.byteOffset, r.byteLength).getBigUint64(0)
      return `<${n}.${Math.floor(now)}@${hostname}>`
    })
  )

/** `username SP digest`, the digest 32 lowercase hex digits; `undefined` otherwise. */
const parseResponse = (response: Uint8Array): { readonly username: string; readonly digest: string } | undefined => {
  const text = Bytes.fromUtf8(response)
  const space = text === undefined ? -1 : text.lastIndexOf(" ")
  if (text === undefined || space <= 0) return undefined
  const username = text.slice(0, space)
  const digest = text.slice(space + 1)
  return /^[0-9a-f]{32}$/.test(digest) && !hasNul(username) ? { username, digest } : undefined
}

/**
 * CRAM-MD5: the server sends `<random.timestamp@hostname>`, the client answers
 * `username SP hex(HMAC-MD5(secret, challenge))`. An unknown user costs the same work as
 * a wrong secret.
 */
export const cramMd5Server = (
  lookup: SecretLookup,
  options?: ExchangeOptions & {
    /** The host part of the challenge. Default "localhost". */
    readonly hostname?: string | undefined
    /** The challenge to send, for tests; default a random msg-id. */
    readonly challenge?: Effect.Effect<string> | undefined
    readonly compare?: Compare | undefined
  }
): ServerMechanism =>
  mechanism("CRAM-MD5", true, () => {
    const compare = options?.compare ?? timingSafeEqual
    const makeChallenge = options?.challenge ?? randomChallenge(options?.hostname ?? "localhost")
    let sent: string | undefined
    return {
      start: (ir) =>
        ir !== undefined
          ? fail("MalformedResponse", "CRAM-MD5 takes no initial response", "CRAM-MD5")
          : makeChallenge.pipe(Effect.map((c) => {
            sent = c
            return challengeText(c)
          })),
      next: (response) => {
        const challenge = sent
        if (challenge === undefined) return fail("Unexpected", "no challenge sent", "CRAM-MD5")
        const parsed = parseResponse(response)
        if (parsed === undefined) return fail("MalformedResponse", "expected username SP digest", "CRAM-MD5")
        const { digest, username } = parsed
        return lookup(username).pipe(
          Effect.flatMap((secret) =>
            hexDigest(secret === undefined ? DUMMY_SECRET : Redacted.value(secret), challenge).pipe(
              Effect.flatMap((expected) =>
                compare(Bytes.utf8(expected), Bytes.utf8(digest)) && secret !== undefined
                  ? Effect.succeed(success(username, username))
                  : fail("AuthenticationFailed", "wrong digest or unknown user", "CRAM-MD5")
              )
            )
          )
        )
      }
    }
  }, options)

/** CRAM-MD5 (RFC 2195): answers the challenge with `username SP hex(HMAC-MD5(password, challenge))`. */
export const cramMd5 = (credentials: Omit<PasswordCredentials, "authzid">): ClientMechanism => ({
  name: "CRAM-MD5",
  sendsSecret: false,
  client: Effect.suspend(() => {
    if (credentials.username === "") return invalid("CRAM-MD5", "empty username")
    return Effect.succeed(scripted("CRAM-MD5", undefined, (c) => {
      if (c.length === 0) return fail("MalformedChallenge", "empty challenge", "CRAM-MD5")
      return Crypto.hmacMd5(Bytes.utf8(Redacted.value(credentials.password)), c).pipe(
        Effect.map((mac) => Bytes.utf8(`${credentials.username} ${Hex.encode(mac)}`))
      )
    }, 1))
  })
})
