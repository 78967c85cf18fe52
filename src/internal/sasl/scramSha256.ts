/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) with GS2 flag "n" (no channel binding; a client's "y"
 * is accepted, "p=" refused). Each side proves it knows the password, or on the server the
 * keys derived from it, without sending anything replayable. Server and client halves, and
 * {@link deriveScramCredential}, which makes what the server stores.
 */
import * as Mac from "effect/crypto/Mac"
import * as SecureRandom from "effect/crypto/SecureRandom"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type {
  Authorizer,
  ClientMechanism,
  Compare,
  ExchangeOptions,
  PasswordCredentials,
  SaslClient,
  ServerMechanism,
  Step
} from "../../Sasl.ts"
import * as B64 from "./base64.ts"
import * as Bytes from "./bytes.ts"
import * as Crypto from "./crypto.ts"
import type { SaslError } from "./error.ts"
import { cryptoFailure, fail } from "./error.ts"
import { authorizeSelf, challengeText, clientFirst, EMPTY, hasNul, invalid, mechanism, success } from "./exchange.ts"
import { decodeSaslname, encodeSaslname, gs2Header } from "./gs2.ts"
import { saslprep } from "./saslprep.ts"

/** What a SCRAM-SHA-256 server stores per user (RFC 5802 section 3); derive it with {@link deriveScramCredential}. */
export interface ScramCredential {
  /** The random salt the password was derived with. */
  readonly salt: Uint8Array
  /** PBKDF2's iteration count (4096 at least, RFC 7677). */
  readonly iterations: number
  /** H(ClientKey): 32 bytes. Together with `serverKey`, enough to impersonate the server: keep it secret. */
  readonly storedKey: Uint8Array
  /** HMAC(SaltedPassword, "Server Key"): 32 bytes. */
  readonly serverKey: Uint8Array
}

/** Finds a user's SCRAM credential by SASLprep-ed username; `undefined` for an unknown user. */
export type ScramLookup = (username: string) => Effect.Effect<ScramCredential | undefined, SaslError>

const SCRAM = "SCRAM-SHA-256"
const CLIENT_KEY = Bytes.utf8("Client Key")
const SERVER_KEY = Bytes.utf8("Server Key")
/** PBKDF2's largest iteration count (WebCrypto and node:crypto take a signed 32-bit integer). */
const MAX_ITERATIONS = 0x7fff_ffff

/** `a=1,b=2` → [["a","1"],["b","2"]]; `undefined` unless every attribute is `letter=value`. */
const parseAttributes = (s: string): Array<readonly [string, string]> | undefined => {
  const out: Array<readonly [string, string]> = []
  for (const part of s.split(",")) {
    if (part.length < 2 || part[1] !== "=" || !/^[A-Za-z]$/.test(part[0]!)) return undefined
    out.push([part[0]!, part.slice(2)])
  }
  return out
}

// printable = %x21-2B / %x2D-7E: anything visible but ",".
const scramNonce = /^[\x21-\x2b\x2d-\x7e]+$/

const randomNonce = (bytes: number): Effect.Effect<string> => Effect.map(Crypto.randomBytes(bytes), B64.encode)

const hmac = (key: Uint8Array, data: Uint8Array) => Effect.mapError(Crypto.hmacSha256(key, data), cryptoFailure(SCRAM))

/** The keys SCRAM derives from a password (RFC 5802 section 3). */
const scramKeys = (password: string, salt: Uint8Array, iterations: number) =>
  Effect.gen(function*() {
    const salted = yield* Crypto.pbkdf2Sha256(Bytes.utf8(password), salt, iterations).pipe(
      Effect.mapError(cryptoFailure(SCRAM))
    )
    const clientKey = yield* hmac(salted, CLIENT_KEY)
    const storedKey = yield* Crypto.sha256(clientKey)
    const serverKey = yield* hmac(salted, SERVER_KEY)
    return { clientKey, storedKey, serverKey }
  })

/**
 * Derives what a SCRAM-SHA-256 server stores from a password: SaltedPassword =
 * PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations), then StoredKey and ServerKey.
 * Defaults: a random 16-byte salt and 4096 iterations (RFC 7677's minimum; use more
 * where logins are rare). At most 2^31 - 1 iterations.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Sasl from "effect-smtp/Sasl"
 *
 * // When the user sets a password: store this, never the password.
 * const credential = yield* Sasl.deriveScramCredential(password, { iterations: 100_000 })
 *
 * // In the server: SCRAM-SHA-256 from stored credentials, safe without TLS too.
 * const auth = Sasl.serverMechanisms({ scramSha256: (username) => Effect.succeed(credentials.get(username)) })
 * ```
 */
export const deriveScramCredential = (
  password: Redacted.Redacted<string> | string,
  options?: { readonly salt?: Uint8Array | undefined; readonly iterations?: number | undefined }
): Effect.Effect<ScramCredential, SaslError> =>
  Effect.gen(function*() {
    const prepared = yield* saslprep(typeof password === "string" ? password : Redacted.value(password))
    if (prepared === undefined || prepared === "") {
      return yield* fail("InvalidCredentials", "password fails SASLprep", SCRAM)
    }
    const iterations = options?.iterations ?? 4096
    if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
      return yield* fail("InvalidCredentials", "iterations must be an integer from 1 to 2^31 - 1", SCRAM)
    }
    const salt = options?.salt === undefined ? yield* Crypto.randomBytes(16) : new Uint8Array(options.salt)
    if (salt.length === 0) return yield* fail("InvalidCredentials", "empty salt", SCRAM)
    const keys = yield* scramKeys(prepared, salt, iterations)
    return { salt, iterations, storedKey: keys.storedKey, serverKey: keys.serverKey }
  })

// --- Server ------------------------------------------------------------------------------

/** What the server keeps between the client's two messages. */
interface ServerFirst {
  readonly gs2: string
  readonly bare: string
  readonly serverFirst: string
  readonly nonce: string
  readonly username: string
  readonly authzid: string | undefined
  readonly credential: ScramCredential
  readonly known: boolean
}

/** What one server mechanism needs for every exchange. */
interface ServerConfig {
  readonly lookup: ScramLookup
  readonly makeNonce: Effect.Effect<string>
  readonly compare: Compare
  readonly authorize: Authorizer
  /** A made-up credential for an unknown user, so that the exchange does not reveal which users exist. */
  readonly fakeCredential: (username: string) => Effect.Effect<ScramCredential, SaslError>
  /** Called with every real credential's iteration count. */
  readonly seen: (credential: ScramCredential) => void
}

/** Parses `gs2-header n=user,r=nonce[,extensions]`. */
const parseClientFirst = (message: Uint8Array) =>
  Effect.gen(function*() {
    const text = Bytes.fromUtf8(message)
    const m = text === undefined ? null : gs2Header.exec(text)
    if (text === undefined || m === null) return yield* fail("MalformedResponse", "invalid GS2 header", SCRAM)
    if (m[1]!.startsWith("p=")) return yield* fail("AuthenticationFailed", "channel binding is not supported", SCRAM)
    const authzid = m[2] === undefined ? undefined : decodeSaslname(m[2])
    if (m[2] !== undefined && (authzid === undefined || authzid === "" || hasNul(authzid))) {
      return yield* fail("MalformedResponse", "invalid authzid", SCRAM)
    }
    const bare = text.slice(m[0].length)
    const attrs = parseAttributes(bare)
    if (attrs === undefined || attrs.length < 2) return yield* fail("MalformedResponse", "invalid client-first-message", SCRAM)
    // "m" is reserved: its presence must fail the exchange (RFC 5802 5.1).
    if (attrs[0]![0] === "m") return yield* fail("MalformedResponse", "mandatory extensions are not supported", SCRAM)
    const [[nKey, nValue], [rKey, clientNonce]] = [attrs[0]!, attrs[1]!]
    if (nKey !== "n" || rKey !== "r" || !scramNonce.test(clientNonce)) {
      return yield* fail("MalformedResponse", "invalid client-first-message", SCRAM)
    }
    const decoded = decodeSaslname(nValue)
    const username = decoded === undefined || hasNul(decoded) ? undefined : yield* saslprep(decoded)
    if (username === undefined || username === "") return yield* fail("MalformedResponse", "invalid username", SCRAM)
    return { gs2: text.slice(0, m[0].length), bare, authzid, username, clientNonce }
  })

const validCredential = (c: ScramCredential) =>
  Number.isSafeInteger(c.iterations) && c.iterations >= 1 && c.salt.length > 0 &&
  c.storedKey.length === 32 && c.serverKey.length === 32

/** Looks the user up and answers with `r=nonce,s=salt,i=iterations`. */
const answerClientFirst = (config: ServerConfig, message: Uint8Array) =>
  Effect.gen(function*() {
    const { authzid, bare, clientNonce, gs2, username } = yield* parseClientFirst(message)
    const stored = yield* config.lookup(username)
    if (stored !== undefined && !validCredential(stored)) {
      return yield* fail("TemporaryFailure", "stored SCRAM credential is invalid", SCRAM)
    }
    if (stored !== undefined) config.seen(stored)
    const credential = stored ?? (yield* config.fakeCredential(username))
    const serverNonce = yield* config.makeNonce
    if (!scramNonce.test(serverNonce)) return yield* fail("TemporaryFailure", "invalid server nonce", SCRAM)
    const nonce = clientNonce + serverNonce
    const serverFirst = `r=${nonce},s=${B64.encode(credential.salt)},i=${credential.iterations}`
    const first: ServerFirst = { gs2, bare, serverFirst, nonce, username, authzid, credential, known: stored !== undefined }
    return first
  })

/** Checks `c=binding,r=nonce,p=proof` and succeeds with the server signature as success data. */
const answerClientFinal = (config: ServerConfig, f: ServerFirst, message: Uint8Array) =>
  Effect.gen(function*() {
    const text = Bytes.fromUtf8(message)
    const p = text === undefined ? -1 : text.lastIndexOf(",p=")
    if (text === undefined || p < 0) return yield* fail("MalformedResponse", "invalid client-final-message", SCRAM)
    const withoutProof = text.slice(0, p)
    const attrs = parseAttributes(withoutProof)
    const proof = B64.decode(text.slice(p + 3))
    if (
      attrs === undefined || attrs.length < 2 || attrs[0]![0] !== "c" || attrs[1]![0] !== "r" ||
      proof === undefined || proof.length !== 32
    ) {
      return yield* fail("MalformedResponse", "invalid client-final-message", SCRAM)
    }
    const binding = B64.decode(attrs[0]![1])
    if (binding === undefined || !Mac.timingSafeEqual(binding, Bytes.utf8(f.gs2))) {
      return yield* fail("AuthenticationFailed", "channel binding does not match", SCRAM)
    }
    if (attrs[1]![1] !== f.nonce) return yield* fail("AuthenticationFailed", "nonce does not match", SCRAM)
    const authMessage = Bytes.utf8(`${f.bare},${f.serverFirst},${withoutProof}`)
    const clientSignature = yield* hmac(f.credential.storedKey, authMessage)
    const storedKeyOfProof = yield* Crypto.sha256(Bytes.xor(proof, clientSignature))
    const serverSignature = yield* hmac(f.credential.serverKey, authMessage)
    if (!config.compare(storedKeyOfProof, f.credential.storedKey) || !f.known) {
      return yield* fail("AuthenticationFailed", "invalid proof or unknown user", SCRAM)
    }
    const r = yield* config.authorize({ mechanism: SCRAM, username: f.username, authzid: f.authzid })
    return success(r.identity, f.username, Bytes.utf8(`v=${B64.encode(serverSignature)}`))
  })

/**
 * SCRAM-SHA-256. Verifies the client proof against the stored key and sends the server
 * signature. An unknown user gets a made-up salt (stable per username) so that the
 * exchange does not reveal which users exist; it fails at the proof.
 */
export const scramSha256Server = (
  lookup: ScramLookup,
  options?: ExchangeOptions & {
    /** The server's part of the nonce, for tests; default 18 random bytes in base64. */
    readonly nonce?: Effect.Effect<string> | undefined
    readonly compare?: Compare | undefined
    readonly authorize?: Authorizer | undefined
  }
): ServerMechanism => {
  // Keyed per mechanism instance: fake salts are stable but unpredictable. This constructor
  // is not an Effect, hence the synchronous `randomBytesUnsafe` (from globalThis.crypto).
  const fakeSaltKey = SecureRandom.randomBytesUnsafe(32)
  // Fake credentials use the iteration count real ones were last seen with, so `i=` does not
  // tell an unknown user from a known one.
  let typicalIterations = 4096
  const config: ServerConfig = {
    lookup,
    makeNonce: options?.nonce ?? randomNonce(18),
    compare: options?.compare ?? Mac.timingSafeEqual,
    authorize: options?.authorize ?? authorizeSelf,
    fakeCredential: (username) =>
      Effect.all([hmac(fakeSaltKey, Bytes.utf8(username)), Crypto.randomBytes(32), Crypto.randomBytes(32)]).pipe(
        Effect.map(([h, storedKey, serverKey]): ScramCredential => ({
          salt: h.subarray(0, 16),
          iterations: typicalIterations,
          storedKey,
          serverKey
        }))
      ),
    seen: (credential) => {
      typicalIterations = credential.iterations
    }
  }

  return mechanism(SCRAM, true, () => {
    let first: ServerFirst | undefined
    return clientFirst(
      SCRAM,
      (message): Effect.Effect<Step, SaslError> =>
        answerClientFirst(config, message).pipe(Effect.map((f) => {
          first = f
          return challengeText(f.serverFirst)
        })),
      (message) => {
        const f = first
        if (f === undefined) return fail("Unexpected", "no client-first-message", SCRAM)
        first = undefined // one proof per exchange
        return answerClientFinal(config, f, message)
      }
    )
  }, options)
}

// --- Client ------------------------------------------------------------------------------

/** What a client exchange is set up with, its credentials already checked. */
interface ClientSetup {
  readonly password: string
  readonly gs2: string
  readonly bare: string
  readonly nonce: string
  readonly minIterations: number
  readonly maxIterations: number
}

/** Reads `r=nonce,s=salt,i=iterations`: the values, or why they are not acceptable. */
const parseServerFirst = (s: ClientSetup, text: string) => {
  const attrs = parseAttributes(text)
  if (attrs === undefined || attrs.length < 3) return "invalid server-first-message"
  if (attrs[0]![0] === "m") return "mandatory extensions are not supported"
  const [[rKey, combined], [sKey, saltText], [iKey, iterText]] = [attrs[0]!, attrs[1]!, attrs[2]!]
  const salt = B64.decode(saltText)
  const iterations = /^[1-9][0-9]{0,9}$/.test(iterText) ? Number(iterText) : NaN
  if (
    rKey !== "r" || sKey !== "s" || iKey !== "i" || salt === undefined || salt.length === 0 ||
    !combined.startsWith(s.nonce) || combined.length === s.nonce.length || !scramNonce.test(combined) ||
    !Number.isSafeInteger(iterations)
  ) {
    return "invalid server-first-message"
  }
  if (iterations < s.minIterations || iterations > s.maxIterations) {
    return `iteration count ${iterations} outside ${s.minIterations}-${s.maxIterations}`
  }
  return { combined, salt, iterations }
}

/** The client-final-message with its proof, and the server signature to expect. */
const clientFinal = (s: ClientSetup, challenge: Uint8Array) =>
  Effect.gen(function*() {
    const text = Bytes.fromUtf8(challenge)
    const parsed = text === undefined ? "invalid server-first-message" : parseServerFirst(s, text)
    if (typeof parsed === "string") return yield* fail("MalformedChallenge", parsed, SCRAM)
    const keys = yield* scramKeys(s.password, parsed.salt, parsed.iterations)
    const withoutProof = `c=${B64.encode(Bytes.utf8(s.gs2))},r=${parsed.combined}`
    const authMessage = Bytes.utf8(`${s.bare},${text},${withoutProof}`)
    const clientSignature = yield* hmac(keys.storedKey, authMessage)
    const serverSignature = yield* hmac(keys.serverKey, authMessage)
    const response = Bytes.utf8(`${withoutProof},p=${B64.encode(Bytes.xor(keys.clientKey, clientSignature))}`)
    return { response, serverSignature }
  })

/** Checks `v=signature` (or reports `e=error`). */
const checkServerFinal = (challenge: Uint8Array, expected: Uint8Array): Effect.Effect<void, SaslError> => {
  const text = Bytes.fromUtf8(challenge)
  const attrs = text === undefined ? undefined : parseAttributes(text)
  if (attrs === undefined || attrs.length < 1) return fail("MalformedChallenge", "invalid server-final-message", SCRAM)
  const [key, value] = attrs[0]!
  if (key === "e") return fail("AuthenticationFailed", `server error: ${value.slice(0, 100)}`, SCRAM)
  const signature = key === "v" ? B64.decode(value) : undefined
  if (signature === undefined) return fail("MalformedChallenge", "invalid server-final-message", SCRAM)
  return Mac.timingSafeEqual(signature, expected)
    ? Effect.void
    : fail("ServerVerificationFailed", "server signature does not match", SCRAM)
}

/** The client's state machine: first message, proof, then the server's signature; any failure ends it. */
const scramClient = (s: ClientSetup): SaslClient => {
  let state: "new" | "first" | "final" | "verified" | "failed" = "new"
  let expectedSignature: Uint8Array = EMPTY
  const guard = <A>(e: Effect.Effect<A, SaslError>) => Effect.tapError(e, () => Effect.sync(() => (state = "failed")))
  const serverFinal = (c: Uint8Array) =>
    guard(checkServerFinal(c, expectedSignature)).pipe(Effect.map(() => {
      state = "verified"
      return EMPTY
    }))
  return {
    mechanism: SCRAM,
    start: Effect.sync(() => {
      state = "first"
      return Bytes.utf8(s.gs2 + s.bare)
    }),
    next: (c) =>
      Effect.suspend(() => {
        switch (state) {
          case "first":
            return guard(clientFinal(s, c)).pipe(Effect.map(({ response, serverSignature }) => {
              expectedSignature = serverSignature
              state = "final"
              return response
            }))
          case "final":
            return serverFinal(c)
          default:
            state = "failed"
            return fail("MalformedChallenge", "unexpected challenge", SCRAM)
        }
      }),
    finish: (data) =>
      Effect.suspend(() => {
        const check = state === "final" && data !== undefined && data.length > 0 ? serverFinal(data) : Effect.void
        return Effect.flatMap(check, () =>
          state === "verified"
            ? Effect.void
            : fail("ServerVerificationFailed", "the server did not prove it knows the password", SCRAM))
      }),
    done: Effect.sync(() => state === "verified")
  }
}

/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) with GS2 flag "n" (no channel binding). The client
 * checks the server's signature and {@link SaslClient.finish} fails unless it did.
 * `minIterations` (default 4096, RFC 7677's floor) and `maxIterations` (default 1,000,000)
 * bound the server's iteration count: too few helps an attacker who recorded the
 * exchange, too many is a denial of service against the client.
 */
export const scramSha256 = (
  credentials: PasswordCredentials,
  options?: {
    /** The client nonce, for tests; default 24 random bytes in base64. */
    readonly nonce?: Effect.Effect<string> | undefined
    readonly minIterations?: number | undefined
    readonly maxIterations?: number | undefined
  }
): ClientMechanism => ({
  name: SCRAM,
  sendsSecret: false,
  client: Effect.gen(function*() {
    const username = yield* saslprep(credentials.username)
    const password = yield* saslprep(Redacted.value(credentials.password))
    if (username === undefined || username === "") return yield* invalid(SCRAM, "username fails SASLprep")
    if (password === undefined || password === "") return yield* invalid(SCRAM, "password fails SASLprep")
    const authzid = credentials.authzid
    if (authzid !== undefined && (authzid === "" || hasNul(authzid))) return yield* invalid(SCRAM, "invalid authzid")
    const nonce = yield* (options?.nonce ?? randomNonce(24))
    if (!scramNonce.test(nonce)) return yield* invalid(SCRAM, "invalid nonce")
    return scramClient({
      password,
      gs2: `n,${authzid === undefined ? "" : `a=${encodeSaslname(authzid)}`},`,
      bare: `n=${encodeSaslname(username)},r=${nonce}`,
      nonce,
      minIterations: options?.minIterations ?? 4096,
      maxIterations: options?.maxIterations ?? 1_000_000
    })
  })
})
