/**
 * PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login): the password itself crosses the
 * wire, so both need TLS. Server and client halves, and {@link passwordVerifier}, the
 * verifier over stored plaintext passwords.
 */
import { timingSafeEqual } from "effect/crypto/Mac"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type {
  AuthResult,
  Authorizer,
  ClientMechanism,
  Compare,
  ExchangeOptions,
  PasswordCredentials,
  ServerMechanism
} from "../../Sasl.ts"
import * as Bytes from "./bytes.ts"
import * as Crypto from "./crypto.ts"
import type { SaslError } from "./error.ts"
import { fail } from "./error.ts"
import {
  authorizeSelf,
  challengeText,
  clientFirst,
  EMPTY,
  hasNul,
  invalid,
  mechanism,
  scripted,
  success,
  utf8OrFail
} from "./exchange.ts"
import { saslprep } from "./saslprep.ts"

/** Checks a username and password (PLAIN, LOGIN). Fail with `AuthenticationFailed` to refuse. */
export type PasswordVerifier = (input: {
  readonly mechanism: "PLAIN" | "LOGIN"
  readonly authzid: string | undefined
  readonly username: string
  readonly password: Redacted.Redacted<string>
}) => Effect.Effect<AuthResult, SaslError>

// --- Server ------------------------------------------------------------------------------

/** PLAIN: `[authzid] NUL authcid NUL passwd`, exactly three fields, authcid and passwd not empty. */
export const plainServer = (verify: PasswordVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("PLAIN", false, () =>
    clientFirst("PLAIN", (message) => {
      const parts = Bytes.split(message, 0)
      if (parts.length !== 3) return fail("MalformedResponse", "expected authzid NUL authcid NUL passwd", "PLAIN")
      const [authzid, username, password] = parts.map(Bytes.fromUtf8)
      if (authzid === undefined || username === undefined || password === undefined) {
        return fail("MalformedResponse", "response is not valid UTF-8", "PLAIN")
      }
      if (username === "" || password === "") return fail("MalformedResponse", "empty authcid or password", "PLAIN")
      return verify({
        mechanism: "PLAIN",
        authzid: authzid === "" ? undefined : authzid,
        username,
        password: Redacted.make(password)
      }).pipe(Effect.map((r) => success(r.identity, username)))
    }), options)

const validLoginField = (s: string) => !hasNul(s)

/**
 * LOGIN: challenges "Username:" then "Password:". An initial response is taken as the
 * username, as most clients that send one mean it.
 */
export const loginServer = (verify: PasswordVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("LOGIN", false, () => {
    let username: string | undefined
    const takeUsername = (bytes: Uint8Array) =>
      utf8OrFail(bytes, "LOGIN", "username").pipe(
        Effect.flatMap((u) => {
          if (u === "" || !validLoginField(u)) return fail("MalformedResponse", "invalid username", "LOGIN")
          username = u
          return Effect.succeed(challengeText("Password:"))
        })
      )
    return {
      start: (ir) => (ir === undefined ? Effect.succeed(challengeText("Username:")) : takeUsername(ir)),
      next: (response) => {
        if (username === undefined) return takeUsername(response)
        const user = username
        return utf8OrFail(response, "LOGIN", "password").pipe(
          Effect.flatMap((password) => {
            if (!validLoginField(password)) return fail("MalformedResponse", "invalid password", "LOGIN")
            return verify({ mechanism: "LOGIN", authzid: undefined, username: user, password: Redacted.make(password) })
          }),
          Effect.map((r) => success(r.identity, user))
        )
      }
    }
  }, options)

const DUMMY_SECRET = "\0dummy secret for unknown users\0"

/** SASLprep when it applies; a string it refuses is compared as is, on both sides alike. */
const prepOrRaw = (s: string): Effect.Effect<string> => Effect.map(saslprep(s), (prepared) => prepared ?? s)

/**
 * A {@link PasswordVerifier} over a lookup of stored plaintext passwords. Both passwords
 * are SASLprep-ed, hashed with SHA-256 and the digests compared with `compare` (default
 * `constantTimeEqual`), so timing reveals neither how much matched nor the length.
 * An unknown user is compared against a dummy, costing the same. The authzid goes to
 * `authorize` (default: only the user itself).
 */
export const passwordVerifier = (
  lookup: (username: string) => Effect.Effect<Redacted.Redacted<string> | undefined, SaslError>,
  options?: { readonly compare?: Compare | undefined; readonly authorize?: Authorizer | undefined }
): PasswordVerifier => {
  const compare = options?.compare ?? timingSafeEqual
  const authorize = options?.authorize ?? authorizeSelf
  return (input) =>
    Effect.gen(function*() {
      const stored = yield* lookup(input.username)
      const expected = stored === undefined ? DUMMY_SECRET : yield* prepOrRaw(Redacted.value(stored))
      const supplied = yield* prepOrRaw(Redacted.value(input.password))
      const [a, b] = yield* Effect.all([
        Crypto.sha256(Bytes.utf8(supplied)),
        Crypto.sha256(Bytes.utf8(expected))
      ])
      if (!compare(a, b) || stored === undefined) {
        return yield* fail("AuthenticationFailed", "wrong password or unknown user", input.mechanism)
      }
      return yield* authorize({ mechanism: input.mechanism, username: input.username, authzid: input.authzid })
    })
}

// --- Client ------------------------------------------------------------------------------

/** PLAIN (RFC 4616): sends `authzid NUL username NUL password` as the initial response. */
export const plain = (credentials: PasswordCredentials): ClientMechanism => ({
  name: "PLAIN",
  sendsSecret: true,
  client: Effect.suspend(() => {
    const password = Redacted.value(credentials.password)
    const authzid = credentials.authzid ?? ""
    if (credentials.username === "" || password === "") return invalid("PLAIN", "empty username or password")
    if (hasNul(credentials.username) || hasNul(password) || hasNul(authzid)) return invalid("PLAIN", "NUL in credentials")
    const ir = Bytes.utf8(`${authzid}\0${credentials.username}\0${password}`)
    return Effect.succeed(scripted("PLAIN", ir, () => Effect.succeed(EMPTY), 0))
  })
})

/**
 * LOGIN: no initial response; answers a challenge starting with "User" with the username
 * and one starting with "Pass" with the password, in that order only.
 */
export const login = (credentials: Omit<PasswordCredentials, "authzid">): ClientMechanism => ({
  name: "LOGIN",
  sendsSecret: true,
  client: Effect.suspend(() => {
    const password = Redacted.value(credentials.password)
    if (credentials.username === "" || hasNul(credentials.username) || hasNul(password)) {
      return invalid("LOGIN", "empty username or NUL in credentials")
    }
    return Effect.succeed(scripted("LOGIN", undefined, (c, step) => {
      const prompt = (Bytes.fromUtf8(c) ?? "").trim().toLowerCase()
      if (step === 0 && prompt.startsWith("user")) return Effect.succeed(Bytes.utf8(credentials.username))
      if (step === 1 && prompt.startsWith("pass")) return Effect.succeed(Bytes.utf8(password))
      return fail("MalformedChallenge", "unexpected LOGIN prompt", "LOGIN")
    }, 2))
  })
})
