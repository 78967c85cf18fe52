/**
 * SASL (RFC 4422) for SMTP AUTH (RFC 4954): the client and server sides of PLAIN, LOGIN,
 * CRAM-MD5, SCRAM-SHA-256, XOAUTH2, OAUTHBEARER, ANONYMOUS and EXTERNAL.
 *
 * Bytes in, bytes out: a mechanism never sees base64. The SMTP layer decodes each client
 * line with {@link decodeResponse} (which also turns `*` into a cancel) and encodes each
 * challenge with {@link encodeBase64}. Every failure is a {@link SaslError} whose `reason`
 * {@link toSmtpError} maps to the RFC 4954 reply.
 *
 * Server: {@link serverMechanisms} builds the mechanisms a backend has verifiers for and
 * says which to advertise on a connection. Client: {@link plain}, {@link scramSha256}, …
 * build a mechanism from credentials, and {@link choose} picks the strongest one a server
 * offers. Secrets are `Redacted` everywhere, so they stay out of logs and `toString`.
 *
 * Channel binding: SCRAM-SHA-256 and OAUTHBEARER run with the GS2 flag "n" (or accept
 * "y" from a client); the -PLUS variants are not offered.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as B64 from "./internal/sasl/base64.ts"
import * as Bytes from "./internal/sasl/bytes.ts"
import { hmacMd5 } from "./internal/sasl/md5.ts"
import { saslprep } from "./internal/sasl/saslprep.ts"
import * as WebCrypto from "./internal/sasl/webcrypto.ts"
import { SmtpError } from "./SmtpError.ts"
import type { PeerCertificate, TlsState } from "./Transport.ts"

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

export type MechanismName =
  | "EXTERNAL"
  | "SCRAM-SHA-256"
  | "OAUTHBEARER"
  | "XOAUTH2"
  | "CRAM-MD5"
  | "PLAIN"
  | "LOGIN"
  | "ANONYMOUS"

/**
 * Every mechanism, strongest first: the order the server advertises in and the client
 * prefers. EXTERNAL and SCRAM prove possession without sending a reusable secret;
 * the OAuth mechanisms send a bearer token; CRAM-MD5 hides the password but needs it
 * stored in the clear; PLAIN and LOGIN send it; ANONYMOUS proves nothing.
 */
export const mechanismNames: ReadonlyArray<MechanismName> = [
  "EXTERNAL",
  "SCRAM-SHA-256",
  "OAUTHBEARER",
  "XOAUTH2",
  "CRAM-MD5",
  "PLAIN",
  "LOGIN",
  "ANONYMOUS"
]

/** The canonical name for `name` (case-insensitive), if it is one this module implements. */
export const parseMechanismName = (name: string): MechanismName | undefined => {
  const upper = name.toUpperCase()
  return mechanismNames.find((m) => m === upper)
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/**
 * Why an exchange failed.
 * - Server side: `MalformedResponse` (bad base64, field counts, NUL, syntax), `AuthenticationFailed`,
 *   `Cancelled` (the client sent `*`), `TooLong`, `Unexpected` (a response out of sequence),
 *   `TemporaryFailure` (a backend or crypto failure), `EncryptionRequired`, `UnknownMechanism`.
 * - Client side: `MalformedChallenge` (the server sent something the mechanism cannot use),
 *   `ServerVerificationFailed` (SCRAM: the server did not prove it knows the password),
 *   `InvalidCredentials` (the caller's own credentials cannot be sent, e.g. a NUL in a PLAIN password).
 */
export type SaslErrorReason =
  | "MalformedResponse"
  | "AuthenticationFailed"
  | "Cancelled"
  | "TooLong"
  | "Unexpected"
  | "TemporaryFailure"
  | "EncryptionRequired"
  | "UnknownMechanism"
  | "MalformedChallenge"
  | "ServerVerificationFailed"
  | "InvalidCredentials"

/** The JSON error of an OAUTHBEARER (RFC 7628 3.2.2) or XOAUTH2 failure challenge. */
export interface OAuthErrorDetails {
  readonly status: string
  readonly scope?: string | undefined
  readonly schemes?: string | undefined
  readonly openidConfiguration?: string | undefined
}

/**
 * A failed SASL step. `message` is for logs and never holds a secret; what the peer sees
 * comes from {@link toSmtpError}, which uses fixed texts.
 */
export class SaslError extends Data.TaggedError("SaslError")<{
  readonly reason: SaslErrorReason
  readonly message: string
  readonly mechanism?: MechanismName | undefined
  /** OAUTHBEARER/XOAUTH2: what a bearer verifier wants the client told (server), or what the server said (client). */
  readonly oauth?: OAuthErrorDetails | undefined
  readonly cause?: unknown
}> {}

const saslError = (reason: SaslErrorReason, message: string, mechanism?: MechanismName): SaslError =>
  new SaslError({ reason, message, mechanism })

const fail = (reason: SaslErrorReason, message: string, mechanism?: MechanismName): Effect.Effect<never, SaslError> =>
  Effect.fail(saslError(reason, message, mechanism))

const cryptoFailure = (mechanism: MechanismName) => (cause: unknown): SaslError =>
  new SaslError({ reason: "TemporaryFailure", message: "cryptographic operation failed", mechanism, cause })

// Built once: SmtpError validates its fields when constructed.
const replies = {
  MalformedResponse: SmtpError.of(501, [5, 5, 2], "Malformed authentication response"),
  AuthenticationFailed: SmtpError.of(535, [5, 7, 8], "Authentication credentials invalid"),
  Cancelled: SmtpError.of(501, [5, 0, 0], "Authentication cancelled"),
  TooLong: SmtpError.of(500, [5, 5, 6], "Authentication exchange line is too long"),
  Unexpected: SmtpError.of(501, [5, 5, 2], "Unexpected authentication response"),
  TemporaryFailure: SmtpError.of(454, [4, 7, 0], "Temporary authentication failure"),
  EncryptionRequired: SmtpError.of(538, [5, 7, 11], "Encryption required for requested authentication mechanism"),
  UnknownMechanism: SmtpError.of(504, [5, 5, 4], "Unrecognized authentication type")
} as const

/**
 * The SMTP reply for a failed exchange (RFC 4954 sections 4 and 6). The texts are fixed so
 * that nothing from a verifier or the parser reaches the peer. Client-side reasons never
 * arise on a server; they map to 454.
 */
export const toSmtpError = (error: SaslError): SmtpError => {
  switch (error.reason) {
    case "MalformedResponse":
    case "AuthenticationFailed":
    case "Cancelled":
    case "TooLong":
    case "Unexpected":
    case "TemporaryFailure":
    case "EncryptionRequired":
    case "UnknownMechanism":
      return replies[error.reason]
    case "MalformedChallenge":
    case "ServerVerificationFailed":
    case "InvalidCredentials":
      return replies.TemporaryFailure
  }
}

// ---------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------

/** Most bytes one client response may decode to. RFC 4954 limits an AUTH line to 12288 octets. */
export const DEFAULT_MAX_RESPONSE_LENGTH = 12 * 1024

export const encodeBase64 = (bytes: Uint8Array): string => B64.encode(bytes)

/**
 * Strict base64: canonical padding, no whitespace, zero unused bits. Fails with
 * `MalformedResponse`, or `TooLong` when the result would exceed `maxLength` bytes
 * (checked before decoding). Synchronous; `Effect.fromResult` lifts it.
 */
export const decodeBase64 = (
  text: string,
  options?: { readonly maxLength?: number | undefined }
): Result.Result<Uint8Array, SaslError> => {
  const size = B64.decodedLength(text)
  if (size === undefined) return Result.fail(saslError("MalformedResponse", "invalid base64"))
  if (options?.maxLength !== undefined && size > options.maxLength) return Result.fail(tooLong())
  const bytes = B64.decode(text)
  return bytes === undefined ? Result.fail(saslError("MalformedResponse", "invalid base64")) : Result.succeed(bytes)
}

/**
 * Decodes one client line of an AUTH exchange (the initial response or a continuation):
 * `*` fails with `Cancelled`, `=` and the empty line are an empty response, anything else
 * must be strict base64 of at most `maxLength` bytes (default 12 KiB).
 */
export const decodeResponse = (
  line: string,
  options?: { readonly maxLength?: number | undefined }
): Result.Result<Uint8Array, SaslError> => {
  if (line === "*") return Result.fail(cancelled())
  if (line === "=" || line === "") return Result.succeed(new Uint8Array(0))
  return decodeBase64(line, { maxLength: options?.maxLength ?? DEFAULT_MAX_RESPONSE_LENGTH })
}

/** The failure for a client's `*` (501 5.0.0). */
export const cancelled = (mechanism?: MechanismName): SaslError =>
  saslError("Cancelled", "the client cancelled the exchange", mechanism)

/** The failure for an over-long response line (500 5.5.6). */
export const tooLong = (mechanism?: MechanismName): SaslError =>
  saslError("TooLong", "response too long", mechanism)

// ---------------------------------------------------------------------------------------
// Credential comparison
// ---------------------------------------------------------------------------------------

/** Compares two byte strings; `true` when equal. */
export type Compare = (a: Uint8Array, b: Uint8Array) => boolean

/**
 * Byte equality whose running time depends only on the lengths, never on how many
 * leading bytes match: no early exit. The built-in checks compare fixed-length digests
 * with it, so not even the length of a password leaks.
 */
export const constantTimeEqual: Compare = Bytes.constantTimeEqual

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

/** What a verifier returns when it accepts the credentials. */
export interface AuthResult {
  /** The identity the session acts as (the authorization identity), usually the username. */
  readonly identity: string
}

/** One step of a server exchange. */
export type Step =
  | {
    readonly _tag: "Challenge"
    /** Sent as `334 <base64>`; empty means `334 ` (RFC 4954). */
    readonly data: Uint8Array
  }
  | {
    readonly _tag: "Success"
    /** Who the session acts as, as the verifier decided. */
    readonly identity: string
    /** Whose credentials were checked (authcid, username), when the mechanism has one. */
    readonly username: string | undefined
    /**
     * RFC 4422 "additional data with success". SMTP cannot carry it, so by default the
     * server mechanisms send it as a last challenge instead and this is never set; see
     * {@link ExchangeOptions.successDataAsChallenge}.
     */
    readonly data?: Uint8Array | undefined
  }

/** One server-side exchange. Not safe for concurrent use; make one per AUTH command. */
export interface SaslServer {
  /** The mechanism's name (the name the client asked for, when it is not one this server offers). */
  readonly mechanism: string
  /** Begins with the client's initial response, or `undefined` when the AUTH command had none. */
  readonly start: (initialResponse: Uint8Array | undefined) => Effect.Effect<Step, SaslError>
  /** Takes the client's answer to the last challenge. */
  readonly next: (response: Uint8Array) => Effect.Effect<Step, SaslError>
  /** The client sent `*`: ends the exchange, failing with `Cancelled`. */
  readonly cancel: Effect.Effect<never, SaslError>
}

/** What the server knows about the connection an exchange runs on. */
export interface ServerContext {
  /** The TLS state (STARTTLS done or implicit TLS); EXTERNAL reads the client certificate from it. */
  readonly tls?: TlsState | undefined
  /** Whether the connection is encrypted. Default: whether `tls` is set. */
  readonly secure?: boolean | undefined
  /** Allow mechanisms that send secrets on this unencrypted connection (or for the whole server, see {@link ServerOptions}). */
  readonly allowInsecureAuth?: boolean | undefined
}

const isSecure = (context: ServerContext): boolean => context.secure ?? context.tls !== undefined

/** A server mechanism: a factory of exchanges. */
export interface ServerMechanism {
  readonly name: MechanismName
  /**
   * Whether the exchange is safe on an unencrypted connection: nothing an eavesdropper
   * sees can be replayed (EXTERNAL, SCRAM-SHA-256, CRAM-MD5, ANONYMOUS).
   */
  readonly plaintextSafe: boolean
  /** Whether the mechanism can work on this connection (EXTERNAL needs a client certificate). */
  readonly available: (context: ServerContext) => boolean
  /** A new exchange on this connection. */
  readonly make: (context: ServerContext) => SaslServer
}

export interface ExchangeOptions {
  /** Most bytes one client response may have; longer fails with `TooLong`. Default 12 KiB. */
  readonly maxResponseLength?: number | undefined
  /**
   * SMTP has no "additional data with success" (RFC 4422 3.6), so by default a mechanism
   * that has some (SCRAM's server signature) sends it as a final challenge and succeeds
   * once the client answers it with an empty response. `false` returns it in `Success.data`.
   */
  readonly successDataAsChallenge?: boolean | undefined
}

/** Decides whether `username` may act as `authzid`. */
export type Authorizer = (input: {
  readonly mechanism: MechanismName
  readonly username: string
  readonly authzid: string | undefined
}) => Effect.Effect<AuthResult, SaslError>

/** The default authorization: a client may only act as itself. */
export const authorizeSelf: Authorizer = ({ authzid, mechanism, username }) =>
  authzid === undefined || authzid === username
    ? Effect.succeed({ identity: username })
    : fail("AuthenticationFailed", "not authorized to act as the requested identity", mechanism)

/** Checks a username and password (PLAIN, LOGIN). Fail with `AuthenticationFailed` to refuse. */
export type PasswordVerifier = (input: {
  readonly mechanism: "PLAIN" | "LOGIN"
  readonly authzid: string | undefined
  readonly username: string
  readonly password: Redacted.Redacted<string>
}) => Effect.Effect<AuthResult, SaslError>

/** Finds the plaintext secret of a user (CRAM-MD5 needs it); `undefined` for an unknown user. */
export type SecretLookup = (username: string) => Effect.Effect<Redacted.Redacted<string> | undefined, SaslError>

/** What a SCRAM-SHA-256 server stores per user (RFC 5802 section 3); derive it with {@link deriveScramCredential}. */
export interface ScramCredential {
  readonly salt: Uint8Array
  readonly iterations: number
  /** H(ClientKey): 32 bytes. Together with `serverKey`, enough to impersonate the server: keep it secret. */
  readonly storedKey: Uint8Array
  /** HMAC(SaltedPassword, "Server Key"): 32 bytes. */
  readonly serverKey: Uint8Array
}

/** Finds a user's SCRAM credential by SASLprep-ed username; `undefined` for an unknown user. */
export type ScramLookup = (username: string) => Effect.Effect<ScramCredential | undefined, SaslError>

/**
 * Checks a bearer token (XOAUTH2, OAUTHBEARER). To refuse, fail with `AuthenticationFailed`,
 * optionally with `oauth` details for the client (otherwise status "invalid_token", or "401"
 * for XOAUTH2); a `TemporaryFailure` ends the exchange at once.
 */
export type BearerVerifier = (input: {
  readonly mechanism: "XOAUTH2" | "OAUTHBEARER"
  /** XOAUTH2's `user`, OAUTHBEARER's authzid (`a=`), if given. */
  readonly username: string | undefined
  readonly token: Redacted.Redacted<string>
  readonly host: string | undefined
  readonly port: number | undefined
}) => Effect.Effect<AuthResult, SaslError>

/** Accepts or refuses an ANONYMOUS login, given its trace information (RFC 4505). */
export type AnonymousVerifier = (input: { readonly trace: string }) => Effect.Effect<AuthResult, SaslError>

/**
 * Maps a TLS client certificate (and the identity the client asks for, if any) to an
 * identity (EXTERNAL, RFC 4422 appendix A).
 */
export type ExternalVerifier = (input: {
  readonly authzid: string | undefined
  readonly certificate: PeerCertificate
  /** Whether the certificate verified against the trusted CAs (always true unless `allowUnverified`). */
  readonly authorized: boolean
}) => Effect.Effect<AuthResult, SaslError>

const EMPTY = new Uint8Array(0)

const challenge = (data: Uint8Array): Step => ({ _tag: "Challenge", data })
const challengeText = (text: string): Step => ({ _tag: "Challenge", data: Bytes.utf8(text) })
const success = (identity: string, username: string | undefined, data?: Uint8Array): Step =>
  data === undefined ? { _tag: "Success", identity, username } : { _tag: "Success", identity, username, data }

/** One mechanism's protocol, without the bookkeeping `wrapServer` does. */
interface Exchange {
  readonly start: (initialResponse: Uint8Array | undefined) => Effect.Effect<Step, SaslError>
  readonly next: (response: Uint8Array) => Effect.Effect<Step, SaslError>
}

/**
 * The bookkeeping every server mechanism shares: length limit, sequencing (a response
 * before `start`, after success or after a failure is `Unexpected`), cancel, and success
 * data sent as a final challenge.
 */
const wrapServer = (mechanism: MechanismName, options: ExchangeOptions | undefined, exchange: Exchange): SaslServer => {
  const max = options?.maxResponseLength ?? DEFAULT_MAX_RESPONSE_LENGTH
  const dataAsChallenge = options?.successDataAsChallenge !== false
  let state: "new" | "running" | "final" | "done" = "new"
  let pending: { readonly identity: string; readonly username: string | undefined } | undefined

  const run = (data: Uint8Array | undefined, step: () => Effect.Effect<Step, SaslError>) => {
    if (data !== undefined && data.length > max) {
      state = "done"
      return Effect.fail(tooLong(mechanism))
    }
    return step().pipe(
      Effect.map((s): Step => {
        if (s._tag === "Challenge") return s
        if (s.data !== undefined && s.data.length > 0 && dataAsChallenge) {
          pending = { identity: s.identity, username: s.username }
          state = "final"
          return challenge(s.data)
        }
        state = "done"
        return s
      }),
      Effect.tapError(() => Effect.sync(() => (state = "done")))
    )
  }

  return {
    mechanism,
    start: (initialResponse) =>
      Effect.suspend(() => {
        if (state !== "new") {
          state = "done"
          return fail("Unexpected", "exchange already started", mechanism)
        }
        state = "running"
        return run(initialResponse, () => exchange.start(initialResponse))
      }),
    next: (response) =>
      Effect.suspend(() => {
        if (state === "final") {
          state = "done"
          // The answer to success data carried as a challenge must be empty (RFC 4422 3.6).
          return response.length === 0 && pending !== undefined
            ? Effect.succeed(success(pending.identity, pending.username))
            : fail("MalformedResponse", "expected an empty response", mechanism)
        }
        if (state !== "running") {
          const before = state
          state = "done"
          return fail("Unexpected", before === "new" ? "response before start" : "response after the exchange ended", mechanism)
        }
        return run(response, () => exchange.next(response))
      }),
    cancel: Effect.suspend(() => {
      state = "done"
      return Effect.fail(cancelled(mechanism))
    })
  }
}

/**
 * A mechanism where the client speaks first: no initial response gets an empty challenge,
 * then the client's one message is handled; anything after it is `Unexpected` unless
 * `after` handles it.
 */
const clientFirst = (
  mechanism: MechanismName,
  handle: (message: Uint8Array) => Effect.Effect<Step, SaslError>,
  after?: (response: Uint8Array) => Effect.Effect<Step, SaslError>
): Exchange => {
  let received = false
  return {
    start: (ir) => {
      if (ir === undefined) return Effect.succeed(challenge(EMPTY))
      received = true
      return handle(ir)
    },
    next: (response) => {
      if (!received) {
        received = true
        return handle(response)
      }
      return after !== undefined ? after(response) : fail("Unexpected", "no further response expected", mechanism)
    }
  }
}

const utf8OrFail = (
  bytes: Uint8Array,
  mechanism: MechanismName,
  what: string
): Effect.Effect<string, SaslError> => {
  const s = Bytes.fromUtf8(bytes)
  return s === undefined ? fail("MalformedResponse", `${what} is not valid UTF-8`, mechanism) : Effect.succeed(s)
}

const hasNul = (s: string) => s.includes("\0")

const mechanism = (
  name: MechanismName,
  plaintextSafe: boolean,
  exchange: (context: ServerContext) => Exchange,
  options: ExchangeOptions | undefined,
  available: (context: ServerContext) => boolean = () => true
): ServerMechanism => ({
  name,
  plaintextSafe,
  available,
  make: (context) => wrapServer(name, options, exchange(context))
})

// --- PLAIN (RFC 4616) ------------------------------------------------------------------

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

// --- LOGIN (draft-murchison-sasl-login) ------------------------------------------------

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

// --- CRAM-MD5 (RFC 2195) ---------------------------------------------------------------

const DUMMY_SECRET = "\0dummy secret for unknown users\0"

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
    const compare = options?.compare ?? constantTimeEqual
    let sent: string | undefined
    const makeChallenge = options?.challenge ?? Clock.currentTimeMillis.pipe(
      Effect.map((now) => {
        const r = Bytes.randomBytes(8)
        const n = new DataView(r.buffer).getBigUint64(0)
        return `<${n}.${Math.floor(now)}@${options?.hostname ?? "localhost"}>`
      })
    )
    return {
      start: (ir) =>
        ir !== undefined
          ? fail("MalformedResponse", "CRAM-MD5 takes no initial response", "CRAM-MD5")
          : makeChallenge.pipe(Effect.map((c) => {
            sent = c
            return challengeText(c)
          })),
      next: (response) => {
        if (sent === undefined) return fail("Unexpected", "no challenge sent", "CRAM-MD5")
        const text = Bytes.fromUtf8(response)
        const space = text === undefined ? -1 : text.lastIndexOf(" ")
        if (text === undefined || space <= 0) return fail("MalformedResponse", "expected username SP digest", "CRAM-MD5")
        const username = text.slice(0, space)
        const digest = text.slice(space + 1)
        if (!/^[0-9a-f]{32}$/.test(digest) || hasNul(username)) {
          return fail("MalformedResponse", "expected username SP digest", "CRAM-MD5")
        }
        const c = sent
        return lookup(username).pipe(Effect.flatMap((secret) => {
          const key = Bytes.utf8(secret === undefined ? DUMMY_SECRET : Redacted.value(secret))
          const expected = Bytes.utf8(Bytes.toHex(hmacMd5(key, Bytes.utf8(c))))
          const ok = compare(expected, Bytes.utf8(digest))
          return ok && secret !== undefined
            ? Effect.succeed(success(username, username))
            : fail("AuthenticationFailed", "wrong digest or unknown user", "CRAM-MD5")
        }))
      }
    }
  }, options)

// --- XOAUTH2 and OAUTHBEARER (RFC 7628) ------------------------------------------------

const KVSEP = 0x01

// RFC 6750 b64token, after "Bearer" and one or more spaces; the scheme is case-insensitive.
const bearerAuth = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i

const oauthJson = (d: OAuthErrorDetails): Uint8Array => {
  const o: Record<string, string> = { status: d.status }
  if (d.schemes !== undefined) o["schemes"] = d.schemes
  if (d.scope !== undefined) o["scope"] = d.scope
  if (d.openidConfiguration !== undefined) o["openid-configuration"] = d.openidConfiguration
  return Bytes.utf8(JSON.stringify(o))
}

/** Key/value pairs ending with an empty pair: `k=v ^A k=v ^A ^A`. `undefined` when malformed. */
const parseKvPairs = (bytes: Uint8Array, strictValues: boolean): Map<string, string> | undefined => {
  const parts = Bytes.split(bytes, KVSEP)
  // The last two parts are the empty string after the last ^A and the empty pair before it.
  if (parts.length < 2 || parts[parts.length - 1]!.length !== 0 || parts[parts.length - 2]!.length !== 0) {
    return undefined
  }
  const pairs = new Map<string, string>()
  for (let i = 0; i < parts.length - 2; i++) {
    const text = Bytes.fromUtf8(parts[i]!)
    if (text === undefined) return undefined
    const eq = text.indexOf("=")
    if (eq <= 0) return undefined
    const key = text.slice(0, eq)
    const value = text.slice(eq + 1)
    if (!/^[A-Za-z]+$/.test(key) || pairs.has(key)) return undefined
    // RFC 7628: value = *(VCHAR / SP / HTAB / CR / LF).
    if (strictValues && !/^[\x21-\x7e \t\r\n]*$/.test(value)) return undefined
    pairs.set(key, value)
  }
  return pairs
}

const parsePort = (s: string | undefined): number | undefined | null => {
  if (s === undefined) return undefined
  if (!/^[0-9]{1,5}$/.test(s)) return null
  const n = Number(s)
  return n <= 65535 ? n : null
}

/**
 * The shared shape of both bearer mechanisms: verify, and on refusal send a JSON error
 * challenge, wait for the client's dummy response, then fail.
 */
const bearerExchange = (
  name: "XOAUTH2" | "OAUTHBEARER",
  parse: (message: Uint8Array) => Parameters<BearerVerifier>[0] | undefined,
  verify: BearerVerifier,
  defaultError: OAuthErrorDetails,
  dummyOk: (response: Uint8Array) => boolean
): Exchange => {
  let failure: SaslError | undefined
  return clientFirst(name, (message) => {
    const input = parse(message)
    if (input === undefined) return fail("MalformedResponse", `malformed ${name} response`, name)
    return verify(input).pipe(
      Effect.map((r) => success(r.identity, input.username)),
      Effect.catch((e) => {
        if (e.reason !== "AuthenticationFailed") return Effect.fail(e)
        failure = e
        return Effect.succeed(challenge(oauthJson(e.oauth ?? defaultError)))
      })
    )
  }, (response) => {
    const f = failure
    if (f === undefined) return fail("Unexpected", "no further response expected", name)
    return dummyOk(response) ? Effect.fail(f) : fail("MalformedResponse", "expected the dummy response after an error", name)
  })
}

/**
 * XOAUTH2 (Google): `user=<user> ^A auth=Bearer <token> ^A ^A`. After a refusal the client
 * answers the JSON error challenge with an empty response, then the exchange fails.
 */
export const xoauth2Server = (verify: BearerVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("XOAUTH2", false, () =>
    bearerExchange("XOAUTH2", (message) => {
      const pairs = parseKvPairs(message, false)
      const user = pairs?.get("user")
      const auth = pairs?.get("auth")
      if (user === undefined || auth === undefined || user === "" || hasNul(user)) return undefined
      const m = bearerAuth.exec(auth)
      if (m === null) return undefined
      return { mechanism: "XOAUTH2", username: user, token: Redacted.make(m[1]!), host: undefined, port: undefined }
    }, verify, { status: "401", schemes: "bearer" }, (r) => r.length === 0), options)

/** GS2 header (RFC 5801) as OAUTHBEARER and SCRAM use it: cb-flag, optional authzid. */
const gs2Header = /^(n|y|p=[A-Za-z0-9.-]+),(?:a=([^,]+))?,/

/** Decodes a saslname (`=2C` → ",", `=3D` → "="); `undefined` for any other "=". */
const decodeSaslname = (s: string): string | undefined =>
  /=(?!2C|3D)/.test(s) ? undefined : s.replace(/=2C/g, ",").replace(/=3D/g, "=")

const encodeSaslname = (s: string): string => s.replace(/=/g, "=3D").replace(/,/g, "=2C")

/** OAUTHBEARER (RFC 7628): `n,a=<authzid>, ^A host=… ^A port=… ^A auth=Bearer <token> ^A ^A`. */
export const oauthBearerServer = (verify: BearerVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("OAUTHBEARER", false, () =>
    bearerExchange("OAUTHBEARER", (message) => {
      const sep = message.indexOf(KVSEP)
      if (sep < 0) return undefined
      const header = Bytes.fromUtf8(message.subarray(0, sep))
      const m = header === undefined ? null : gs2Header.exec(header)
      // The whole header must match; channel binding ("p=") is not supported by OAUTHBEARER.
      if (header === undefined || m === null || m[0].length !== header.length || m[1]!.startsWith("p=")) return undefined
      const authzid = m[2] === undefined ? undefined : decodeSaslname(m[2])
      if (m[2] !== undefined && (authzid === undefined || authzid === "" || hasNul(authzid))) return undefined
      const pairs = parseKvPairs(message.subarray(sep + 1), true)
      const auth = pairs?.get("auth")
      if (pairs === undefined || auth === undefined) return undefined
      const token = bearerAuth.exec(auth)
      const port = parsePort(pairs.get("port"))
      if (token === null || port === null) return undefined
      return {
        mechanism: "OAUTHBEARER",
        username: authzid,
        token: Redacted.make(token[1]!),
        host: pairs.get("host"),
        port
      }
    }, verify, { status: "invalid_token" }, (r) => r.length === 1 && r[0] === KVSEP), options)

// --- ANONYMOUS (RFC 4505) --------------------------------------------------------------

// The "trace" stringprep profile's prohibited output (RFC 4505 section 3, RFC 3454 tables
// C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.8, C.9). Its bidi check is not applied.
const prohibitedInTrace = (cp: number): boolean =>
  cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || // C.2.1, C.2.2 controls
  cp === 0x06dd || cp === 0x070f || cp === 0x180e || cp === 0xfeff ||
  (cp >= 0x200c && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
  (cp >= 0x2060 && cp <= 0x2063) || (cp >= 0x206a && cp <= 0x206f) ||
  (cp >= 0x1d173 && cp <= 0x1d17a) ||
  (cp >= 0x0340 && cp <= 0x0341) || // C.8
  (cp >= 0xe000 && cp <= 0xf8ff) || cp >= 0xf0000 || // C.3 private use
  (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe || // C.4 non-characters
  (cp >= 0xd800 && cp <= 0xdfff) || // C.5
  (cp >= 0xfff9 && cp <= 0xfffd) || // C.6
  cp === 0xe0001 || (cp >= 0xe0020 && cp <= 0xe007f) // C.9

/** Whether `trace` is valid ANONYMOUS trace information: at most 255 characters, none prohibited. */
export const isValidTrace = (trace: string): boolean => {
  let count = 0
  for (const ch of trace) {
    if (++count > 255 || prohibitedInTrace(ch.codePointAt(0)!)) return false
  }
  return true
}

/** ANONYMOUS: one message of optional trace information (an email address or a token). */
export const anonymousServer = (verify: AnonymousVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("ANONYMOUS", true, () =>
    clientFirst("ANONYMOUS", (message) =>
      utf8OrFail(message, "ANONYMOUS", "trace").pipe(
        Effect.flatMap((trace) =>
          isValidTrace(trace)
            ? verify({ trace }).pipe(Effect.map((r) => success(r.identity, undefined)))
            : fail("MalformedResponse", "invalid trace information", "ANONYMOUS")
        )
      )), options)

// --- EXTERNAL (RFC 4422 appendix A) ----------------------------------------------------

/**
 * EXTERNAL: the client's TLS certificate is the credential; its one message is the
 * authzid it asks for (empty: whatever the certificate maps to). By default only a
 * certificate that verified against the trusted CAs is accepted.
 */
export const externalServer = (
  verify: ExternalVerifier,
  options?: ExchangeOptions & {
    /** Pass unverified certificates to the verifier too (for pinning by fingerprint). Default false. */
    readonly allowUnverified?: boolean | undefined
  }
): ServerMechanism => {
  const usable = (context: ServerContext) =>
    context.tls?.peerCertificate !== undefined && (context.tls.authorized || options?.allowUnverified === true)
  return mechanism("EXTERNAL", true, (context) =>
    clientFirst("EXTERNAL", (message) => {
      const tls = context.tls
      if (tls === undefined || tls.peerCertificate === undefined || !usable(context)) {
        return fail("AuthenticationFailed", "no verified client certificate", "EXTERNAL")
      }
      const certificate = tls.peerCertificate
      return utf8OrFail(message, "EXTERNAL", "authzid").pipe(
        Effect.flatMap((authzid) =>
          hasNul(authzid)
            ? fail("MalformedResponse", "NUL in authzid", "EXTERNAL")
            : verify({ authzid: authzid === "" ? undefined : authzid, certificate, authorized: tls.authorized })
        ),
        Effect.map((r) => success(r.identity, undefined))
      )
    }), options, usable)
}

// --- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------------------

const SCRAM = "SCRAM-SHA-256"
const CLIENT_KEY = Bytes.utf8("Client Key")
const SERVER_KEY = Bytes.utf8("Server Key")

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

const randomNonce: Effect.Effect<string> = Effect.sync(() => B64.encode(Bytes.randomBytes(18)))

/** The keys SCRAM derives from a password (RFC 5802 section 3). */
const scramKeys = (password: string, salt: Uint8Array, iterations: number) =>
  Effect.gen(function*() {
    const salted = yield* WebCrypto.pbkdf2Sha256(Bytes.utf8(password), salt, iterations)
    const clientKey = yield* WebCrypto.hmacSha256(salted, CLIENT_KEY)
    const storedKey = yield* WebCrypto.sha256(clientKey)
    const serverKey = yield* WebCrypto.hmacSha256(salted, SERVER_KEY)
    return { clientKey, storedKey, serverKey }
  }).pipe(Effect.mapError(cryptoFailure(SCRAM)))

/**
 * Derives what a SCRAM-SHA-256 server stores from a password: SaltedPassword =
 * PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations), then StoredKey and ServerKey.
 * Defaults: a random 16-byte salt and 4096 iterations (RFC 7677's minimum; use more
 * where logins are rare).
 */
export const deriveScramCredential = (
  password: Redacted.Redacted<string> | string,
  options?: { readonly salt?: Uint8Array | undefined; readonly iterations?: number | undefined }
): Effect.Effect<ScramCredential, SaslError> =>
  Effect.gen(function*() {
    const prepared = saslprep(typeof password === "string" ? password : Redacted.value(password))
    if (prepared === undefined || prepared === "") {
      return yield* fail("InvalidCredentials", "password fails SASLprep", SCRAM)
    }
    const iterations = options?.iterations ?? 4096
    if (!Number.isSafeInteger(iterations) || iterations < 1) {
      return yield* fail("InvalidCredentials", "iterations must be a positive integer", SCRAM)
    }
    const salt = options?.salt ?? Bytes.randomBytes(16)
    if (salt.length === 0) return yield* fail("InvalidCredentials", "empty salt", SCRAM)
    const keys = yield* scramKeys(prepared, salt, iterations)
    return { salt: Bytes.own(salt), iterations, storedKey: keys.storedKey, serverKey: keys.serverKey }
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
  // Keyed per mechanism instance: fake salts are stable but unpredictable.
  const fakeSaltKey = Bytes.randomBytes(32)
  // Fake credentials use the iteration count real ones were last seen with, so `i=` does not
  // tell an unknown user from a known one.
  let typicalIterations = 4096
  const compare = options?.compare ?? constantTimeEqual
  const authorize = options?.authorize ?? authorizeSelf
  const makeNonce = options?.nonce ?? randomNonce

  const fakeCredential = (username: string) =>
    WebCrypto.hmacSha256(fakeSaltKey, Bytes.utf8(username)).pipe(
      Effect.mapError(cryptoFailure(SCRAM)),
      Effect.map((h): ScramCredential => ({
        salt: h.subarray(0, 16),
        iterations: typicalIterations,
        storedKey: Bytes.randomBytes(32),
        serverKey: Bytes.randomBytes(32)
      }))
    )

  const validCredential = (c: ScramCredential) =>
    Number.isSafeInteger(c.iterations) && c.iterations >= 1 && c.salt.length > 0 &&
    c.storedKey.length === 32 && c.serverKey.length === 32

  return mechanism("SCRAM-SHA-256", true, () => {
    let first:
      | {
        readonly gs2: string
        readonly bare: string
        readonly serverFirst: string
        readonly nonce: string
        readonly username: string
        readonly authzid: string | undefined
        readonly credential: ScramCredential
        readonly known: boolean
      }
      | undefined

    const clientFirstMessage = (message: Uint8Array) =>
      Effect.gen(function*() {
        const text = Bytes.fromUtf8(message)
        const m = text === undefined ? null : gs2Header.exec(text)
        if (text === undefined || m === null) return yield* fail("MalformedResponse", "invalid GS2 header", SCRAM)
        if (m[1]!.startsWith("p=")) {
          return yield* fail("AuthenticationFailed", "channel binding is not supported", SCRAM)
        }
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
        const username = decoded === undefined || hasNul(decoded) ? undefined : saslprep(decoded)
        if (username === undefined || username === "") return yield* fail("MalformedResponse", "invalid username", SCRAM)
        const stored = yield* lookup(username)
        if (stored !== undefined && !validCredential(stored)) {
          return yield* fail("TemporaryFailure", "stored SCRAM credential is invalid", SCRAM)
        }
        if (stored !== undefined) typicalIterations = stored.iterations
        const credential = stored ?? (yield* fakeCredential(username))
        const serverNonce = yield* makeNonce
        if (!scramNonce.test(serverNonce)) return yield* fail("TemporaryFailure", "invalid server nonce", SCRAM)
        const nonce = clientNonce + serverNonce
        const serverFirst = `r=${nonce},s=${B64.encode(credential.salt)},i=${credential.iterations}`
        first = {
          gs2: text.slice(0, m[0].length),
          bare,
          serverFirst,
          nonce,
          username,
          authzid,
          credential,
          known: stored !== undefined
        }
        return challengeText(serverFirst)
      })

    const clientFinalMessage = (message: Uint8Array) =>
      Effect.gen(function*() {
        const f = first
        if (f === undefined) return yield* fail("Unexpected", "no client-first-message", SCRAM)
        first = undefined // one proof per exchange
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
        if (binding === undefined || !Bytes.constantTimeEqual(binding, Bytes.utf8(f.gs2))) {
          return yield* fail("AuthenticationFailed", "channel binding does not match", SCRAM)
        }
        if (attrs[1]![1] !== f.nonce) return yield* fail("AuthenticationFailed", "nonce does not match", SCRAM)
        const authMessage = Bytes.utf8(`${f.bare},${f.serverFirst},${withoutProof}`)
        const { serverSignature, storedKeyOfProof } = yield* Effect.gen(function*() {
          const clientSignature = yield* WebCrypto.hmacSha256(f.credential.storedKey, authMessage)
          const clientKey = Bytes.xor(proof, clientSignature)
          return {
            storedKeyOfProof: yield* WebCrypto.sha256(clientKey),
            serverSignature: yield* WebCrypto.hmacSha256(f.credential.serverKey, authMessage)
          }
        }).pipe(Effect.mapError(cryptoFailure(SCRAM)))
        if (!compare(storedKeyOfProof, f.credential.storedKey) || !f.known) {
          return yield* fail("AuthenticationFailed", "invalid proof or unknown user", SCRAM)
        }
        const r = yield* authorize({ mechanism: SCRAM, username: f.username, authzid: f.authzid })
        return success(r.identity, f.username, Bytes.utf8(`v=${B64.encode(serverSignature)}`))
      })

    return clientFirst(SCRAM, clientFirstMessage, clientFinalMessage)
  }, options)
}

// --- Password checking helper ------------------------------------------------------------

/** SASLprep when it applies; a string it refuses is compared as is, on both sides alike. */
const prepOrRaw = (s: string): string => saslprep(s) ?? s

/**
 * A {@link PasswordVerifier} over a lookup of stored plaintext passwords. Both passwords
 * are SASLprep-ed, hashed with SHA-256 and the digests compared with `compare` (default
 * {@link constantTimeEqual}), so timing reveals neither how much matched nor the length.
 * An unknown user is compared against a dummy, costing the same. The authzid goes to
 * `authorize` (default: only the user itself).
 */
export const passwordVerifier = (
  lookup: (username: string) => Effect.Effect<Redacted.Redacted<string> | undefined, SaslError>,
  options?: { readonly compare?: Compare | undefined; readonly authorize?: Authorizer | undefined }
): PasswordVerifier => {
  const compare = options?.compare ?? constantTimeEqual
  const authorize = options?.authorize ?? authorizeSelf
  return (input) =>
    Effect.gen(function*() {
      const stored = yield* lookup(input.username)
      const expected = stored === undefined ? DUMMY_SECRET : prepOrRaw(Redacted.value(stored))
      const supplied = prepOrRaw(Redacted.value(input.password))
      const [a, b] = yield* Effect.all([
        WebCrypto.sha256(Bytes.utf8(supplied)),
        WebCrypto.sha256(Bytes.utf8(expected))
      ]).pipe(Effect.mapError(cryptoFailure(input.mechanism)))
      if (!compare(a, b) || stored === undefined) {
        return yield* fail("AuthenticationFailed", "wrong password or unknown user", input.mechanism)
      }
      return yield* authorize({ mechanism: input.mechanism, username: input.username, authzid: input.authzid })
    })
}

// --- Registry --------------------------------------------------------------------------

/** What a backend can check; each one enables the mechanisms listed beside it. */
export interface Verifiers {
  /** PLAIN and LOGIN. */
  readonly password?: PasswordVerifier | undefined
  /** CRAM-MD5 (needs plaintext secrets). */
  readonly cramMd5?: SecretLookup | undefined
  /** SCRAM-SHA-256. */
  readonly scramSha256?: ScramLookup | undefined
  /** XOAUTH2 and OAUTHBEARER. */
  readonly bearer?: BearerVerifier | undefined
  /** ANONYMOUS. */
  readonly anonymous?: AnonymousVerifier | undefined
  /** EXTERNAL (TLS client certificates). */
  readonly external?: ExternalVerifier | undefined
}

export interface ServerOptions extends ExchangeOptions {
  /** Which mechanisms to offer, in this order; default every one with a verifier, strongest first. */
  readonly mechanisms?: ReadonlyArray<MechanismName> | undefined
  /**
   * Offer and accept PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER on unencrypted connections
   * (go-smtp's AllowInsecureAuth). Default false: they answer 538 until STARTTLS.
   */
  readonly allowInsecureAuth?: boolean | undefined
  /** CRAM-MD5's challenge host part. */
  readonly hostname?: string | undefined
  /** Used by CRAM-MD5 and SCRAM to compare secrets; default {@link constantTimeEqual}. */
  readonly compare?: Compare | undefined
  /** SCRAM's authzid policy; default {@link authorizeSelf}. */
  readonly authorize?: Authorizer | undefined
  /** EXTERNAL: accept certificates that did not verify (the verifier pins them). */
  readonly allowUnverifiedCertificates?: boolean | undefined
}

/** The server's set of mechanisms, built by {@link serverMechanisms}. */
export interface ServerMechanisms {
  /** Every configured mechanism, in advertising order. */
  readonly mechanisms: ReadonlyArray<ServerMechanism>
  readonly allowInsecureAuth: boolean
}

/** The same type under the name the Backend uses. */
export type SaslServerMechanisms = ServerMechanisms

/** Builds the mechanisms whose verifiers are given. */
export const serverMechanisms = (verifiers: Verifiers, options?: ServerOptions): ServerMechanisms => {
  const exchange: ExchangeOptions = {
    maxResponseLength: options?.maxResponseLength,
    successDataAsChallenge: options?.successDataAsChallenge
  }
  const build = (name: MechanismName): ServerMechanism | undefined => {
    switch (name) {
      case "PLAIN":
        return verifiers.password && plainServer(verifiers.password, exchange)
      case "LOGIN":
        return verifiers.password && loginServer(verifiers.password, exchange)
      case "CRAM-MD5":
        return verifiers.cramMd5 &&
          cramMd5Server(verifiers.cramMd5, { ...exchange, hostname: options?.hostname, compare: options?.compare })
      case "SCRAM-SHA-256":
        return verifiers.scramSha256 &&
          scramSha256Server(verifiers.scramSha256, {
            ...exchange,
            compare: options?.compare,
            authorize: options?.authorize
          })
      case "XOAUTH2":
        return verifiers.bearer && xoauth2Server(verifiers.bearer, exchange)
      case "OAUTHBEARER":
        return verifiers.bearer && oauthBearerServer(verifiers.bearer, exchange)
      case "ANONYMOUS":
        return verifiers.anonymous && anonymousServer(verifiers.anonymous, exchange)
      case "EXTERNAL":
        return verifiers.external &&
          externalServer(verifiers.external, { ...exchange, allowUnverified: options?.allowUnverifiedCertificates })
    }
  }
  const mechanisms: Array<ServerMechanism> = []
  for (const name of options?.mechanisms ?? mechanismNames) {
    const m = mechanisms.some((x) => x.name === name) ? undefined : build(name)
    if (m !== undefined) mechanisms.push(m)
  }
  return { mechanisms, allowInsecureAuth: options?.allowInsecureAuth === true }
}

const allowedOn = (set: ServerMechanisms, m: ServerMechanism, context: ServerContext) =>
  m.plaintextSafe || isSecure(context) || set.allowInsecureAuth || context.allowInsecureAuth === true

/**
 * The names to list after `AUTH` in the EHLO reply on this connection: mechanisms that
 * send secrets only when it is encrypted (or insecure auth is allowed), EXTERNAL only
 * with a client certificate.
 */
export const advertised = (set: ServerMechanisms, context: ServerContext): ReadonlyArray<MechanismName> =>
  set.mechanisms.filter((m) => allowedOn(set, m, context) && m.available(context)).map((m) => m.name)

/** An exchange that fails with `error` at its every step. */
const failing = (mechanism: string, error: SaslError): SaslServer => ({
  mechanism,
  start: () => Effect.fail(error),
  next: () => Effect.fail(error),
  cancel: Effect.fail(error)
})

/**
 * A new exchange for the mechanism a client named (case-insensitive). Total: when the
 * mechanism is not configured its `start` fails with `UnknownMechanism` (504), when it
 * sends secrets over an unencrypted connection with `EncryptionRequired` (538).
 */
export const startServer = (set: ServerMechanisms, name: string, context: ServerContext): SaslServer => {
  const upper = name.toUpperCase()
  const m = set.mechanisms.find((x) => x.name === upper)
  if (m === undefined) return failing(upper, saslError("UnknownMechanism", "mechanism not offered"))
  if (!allowedOn(set, m, context)) {
    return failing(m.name, saslError("EncryptionRequired", "mechanism needs an encrypted connection", m.name))
  }
  return m.make(context)
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/** One client-side exchange. Not safe for concurrent use; make one per AUTH command. */
export interface SaslClient {
  readonly mechanism: MechanismName
  /** The initial response, or `undefined` when the mechanism waits for a first challenge. */
  readonly start: Effect.Effect<Uint8Array | undefined, SaslError>
  /** Answers one server challenge. */
  readonly next: (challenge: Uint8Array) => Effect.Effect<Uint8Array, SaslError>
  /**
   * The server said the exchange succeeded (235), with its additional data if the protocol
   * carried any. Fails when the client's side is not complete: SCRAM refuses a success
   * from a server that has not proven it knows the password.
   */
  readonly finish: (data?: Uint8Array) => Effect.Effect<void, SaslError>
  /** Whether the client's side is complete (a success from the server is acceptable). */
  readonly done: Effect.Effect<boolean>
  /** OAUTHBEARER and XOAUTH2: the JSON error the server sent, once it has. */
  readonly oauthError?: Effect.Effect<OAuthErrorDetails | undefined>
}

/** A client mechanism bound to credentials: a factory of exchanges. */
export interface ClientMechanism {
  readonly name: MechanismName
  /**
   * Whether what it sends could be replayed by an eavesdropper (PLAIN, LOGIN, XOAUTH2,
   * OAUTHBEARER): {@link choose} uses such mechanisms only over TLS unless told otherwise.
   */
  readonly sendsSecret: boolean
  /** A new exchange. */
  readonly client: Effect.Effect<SaslClient, SaslError>
}

export interface PasswordCredentials {
  readonly username: string
  readonly password: Redacted.Redacted<string>
  /** Act as this identity instead (PLAIN and SCRAM only). */
  readonly authzid?: string | undefined
}

export interface BearerCredentials {
  /** XOAUTH2's `user` (required there); OAUTHBEARER's authzid (optional). */
  readonly username?: string | undefined
  readonly token: Redacted.Redacted<string>
  /** OAUTHBEARER's `host` and `port` keys. */
  readonly host?: string | undefined
  readonly port?: number | undefined
}

/** Client state shared by the simple mechanisms: a list of responses, given in order. */
const scripted = (
  name: MechanismName,
  initial: Uint8Array | undefined,
  answer: (challenge: Uint8Array, step: number) => Effect.Effect<Uint8Array, SaslError>,
  steps: number,
  extra?: { readonly oauthError?: () => OAuthErrorDetails | undefined }
): SaslClient => {
  let step = 0
  let failed = false
  const guard = <A>(e: Effect.Effect<A, SaslError>) => Effect.tapError(e, () => Effect.sync(() => (failed = true)))
  const client: SaslClient = {
    mechanism: name,
    start: Effect.succeed(initial),
    next: (c) =>
      Effect.suspend(() => {
        if (failed || step >= steps) return guard(fail("MalformedChallenge", "unexpected challenge", name))
        return guard(answer(c, step++))
      }),
    finish: (data) =>
      Effect.suspend(() => {
        if (data !== undefined && data.length > 0) return fail("MalformedChallenge", "unexpected success data", name)
        if (failed) return fail("Unexpected", "success after a failed step", name)
        if (extra?.oauthError?.() !== undefined) return fail("Unexpected", "success after an error challenge", name)
        return Effect.void
      }),
    done: Effect.sync(() => !failed && extra?.oauthError?.() === undefined)
  }
  const oauthError = extra?.oauthError
  return oauthError === undefined ? client : { ...client, oauthError: Effect.sync(oauthError) }
}

const invalid = (name: MechanismName, message: string) => fail("InvalidCredentials", message, name)

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

/** CRAM-MD5 (RFC 2195): answers the challenge with `username SP hex(HMAC-MD5(password, challenge))`. */
export const cramMd5 = (credentials: Omit<PasswordCredentials, "authzid">): ClientMechanism => ({
  name: "CRAM-MD5",
  sendsSecret: false,
  client: Effect.suspend(() => {
    if (credentials.username === "") return invalid("CRAM-MD5", "empty username")
    return Effect.succeed(scripted("CRAM-MD5", undefined, (c) => {
      if (c.length === 0) return fail("MalformedChallenge", "empty challenge", "CRAM-MD5")
      const digest = Bytes.toHex(hmacMd5(Bytes.utf8(Redacted.value(credentials.password)), c))
      return Effect.succeed(Bytes.utf8(`${credentials.username} ${digest}`))
    }, 1))
  })
})

const b64token = /^[A-Za-z0-9\-._~+/]+=*$/

const oauthClient = (
  name: "XOAUTH2" | "OAUTHBEARER",
  ir: Uint8Array,
  dummy: Uint8Array
): SaslClient => {
  let error: OAuthErrorDetails | undefined
  return scripted(name, ir, (c) => {
    error = parseOAuthError(c)
    return Effect.succeed(dummy)
  }, 1, { oauthError: () => error })
}

/** Reads a JSON error challenge; a challenge that is not one still counts as an error. */
const parseOAuthError = (c: Uint8Array): OAuthErrorDetails => {
  const text = Bytes.fromUtf8(c)
  let json: unknown
  try {
    json = text === undefined ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  if (typeof json !== "object" || json === null) return { status: "invalid_response" }
  const o = json as Record<string, unknown>
  const str = (k: string) => (typeof o[k] === "string" ? o[k] : undefined)
  return {
    status: str("status") ?? "invalid_response",
    scope: str("scope"),
    schemes: str("schemes"),
    openidConfiguration: str("openid-configuration")
  }
}

/** XOAUTH2 (Google): `user=<username> ^A auth=Bearer <token> ^A ^A`; an error challenge gets an empty reply. */
export const xoauth2 = (credentials: BearerCredentials & { readonly username: string }): ClientMechanism => ({
  name: "XOAUTH2",
  sendsSecret: true,
  client: Effect.suspend(() => {
    const token = Redacted.value(credentials.token)
    if (!b64token.test(token)) return invalid("XOAUTH2", "token is not a bearer token")
    if (credentials.username === "" || /[\x00\x01]/.test(credentials.username)) return invalid("XOAUTH2", "invalid username")
    const ir = Bytes.utf8(`user=${credentials.username}\x01auth=Bearer ${token}\x01\x01`)
    return Effect.succeed(oauthClient("XOAUTH2", ir, EMPTY))
  })
})

/**
 * OAUTHBEARER (RFC 7628): `n,a=<username>, ^A host=… ^A port=… ^A auth=Bearer <token> ^A ^A`;
 * an error challenge gets the dummy reply `^A`, and its JSON is kept in `oauthError`.
 */
export const oauthBearer = (credentials: BearerCredentials): ClientMechanism => ({
  name: "OAUTHBEARER",
  sendsSecret: true,
  client: Effect.suspend(() => {
    const token = Redacted.value(credentials.token)
    const { host, port, username } = credentials
    if (!b64token.test(token)) return invalid("OAUTHBEARER", "token is not a bearer token")
    if (username !== undefined && (username === "" || hasNul(username))) return invalid("OAUTHBEARER", "invalid username")
    if (host !== undefined && !/^[\x21-\x7e]+$/.test(host)) return invalid("OAUTHBEARER", "invalid host")
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
      return invalid("OAUTHBEARER", "invalid port")
    }
    let s = `n,${username === undefined ? "" : `a=${encodeSaslname(username)}`},\x01`
    if (host !== undefined) s += `host=${host}\x01`
    if (port !== undefined) s += `port=${port}\x01`
    s += `auth=Bearer ${token}\x01\x01`
    return Effect.succeed(oauthClient("OAUTHBEARER", Bytes.utf8(s), Uint8Array.of(KVSEP)))
  })
})

/** ANONYMOUS (RFC 4505): the initial response is the trace information (may be empty). */
export const anonymous = (credentials: { readonly trace?: string | undefined } = {}): ClientMechanism => ({
  name: "ANONYMOUS",
  sendsSecret: false,
  client: Effect.suspend(() => {
    const trace = credentials.trace ?? ""
    if (!isValidTrace(trace)) return invalid("ANONYMOUS", "invalid trace information")
    return Effect.succeed(scripted("ANONYMOUS", Bytes.utf8(trace), () => Effect.succeed(EMPTY), 0))
  })
})

/** EXTERNAL (RFC 4422 appendix A): the initial response is the authzid, empty for "what my certificate says". */
export const external = (credentials: { readonly authzid?: string | undefined } = {}): ClientMechanism => ({
  name: "EXTERNAL",
  sendsSecret: false,
  client: Effect.suspend(() => {
    const authzid = credentials.authzid ?? ""
    if (hasNul(authzid)) return invalid("EXTERNAL", "NUL in authzid")
    return Effect.succeed(scripted("EXTERNAL", Bytes.utf8(authzid), () => Effect.succeed(EMPTY), 0))
  })
})

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
    const username = saslprep(credentials.username)
    const password = saslprep(Redacted.value(credentials.password))
    if (username === undefined || username === "") return yield* invalid(SCRAM, "username fails SASLprep")
    if (password === undefined || password === "") return yield* invalid(SCRAM, "password fails SASLprep")
    const authzid = credentials.authzid
    if (authzid !== undefined && (authzid === "" || hasNul(authzid))) return yield* invalid(SCRAM, "invalid authzid")
    const nonce = yield* (options?.nonce ?? Effect.sync(() => B64.encode(Bytes.randomBytes(24))))
    if (!scramNonce.test(nonce)) return yield* invalid(SCRAM, "invalid nonce")
    const minIterations = options?.minIterations ?? 4096
    const maxIterations = options?.maxIterations ?? 1_000_000

    const gs2 = `n,${authzid === undefined ? "" : `a=${encodeSaslname(authzid)}`},`
    const bare = `n=${encodeSaslname(username)},r=${nonce}`
    let state: "new" | "first" | "final" | "verified" | "failed" = "new"
    let expectedSignature: Uint8Array | undefined

    const malformed = (message: string) => {
      state = "failed"
      return fail("MalformedChallenge", message, SCRAM)
    }

    const serverFirst = (c: Uint8Array) =>
      Effect.gen(function*() {
        const text = Bytes.fromUtf8(c)
        const attrs = text === undefined ? undefined : parseAttributes(text)
        if (text === undefined || attrs === undefined || attrs.length < 3) {
          return yield* malformed("invalid server-first-message")
        }
        if (attrs[0]![0] === "m") return yield* malformed("mandatory extensions are not supported")
        const [[rKey, combined], [sKey, saltText], [iKey, iterText]] = [attrs[0]!, attrs[1]!, attrs[2]!]
        const salt = B64.decode(saltText)
        const iterations = /^[1-9][0-9]{0,9}$/.test(iterText) ? Number(iterText) : NaN
        if (
          rKey !== "r" || sKey !== "s" || iKey !== "i" || salt === undefined || salt.length === 0 ||
          !combined.startsWith(nonce) || combined.length === nonce.length || !scramNonce.test(combined) ||
          !Number.isSafeInteger(iterations)
        ) {
          return yield* malformed("invalid server-first-message")
        }
        if (iterations < minIterations || iterations > maxIterations) {
          return yield* malformed(`iteration count ${iterations} outside ${minIterations}-${maxIterations}`)
        }
        const keys = yield* scramKeys(password, salt, iterations)
        const withoutProof = `c=${B64.encode(Bytes.utf8(gs2))},r=${combined}`
        const authMessage = Bytes.utf8(`${bare},${text},${withoutProof}`)
        const [clientSignature, serverSignature] = yield* Effect.all([
          WebCrypto.hmacSha256(keys.storedKey, authMessage),
          WebCrypto.hmacSha256(keys.serverKey, authMessage)
        ]).pipe(Effect.mapError(cryptoFailure(SCRAM)))
        expectedSignature = serverSignature
        state = "final"
        return Bytes.utf8(`${withoutProof},p=${B64.encode(Bytes.xor(keys.clientKey, clientSignature))}`)
      })

    const serverFinal = (c: Uint8Array): Effect.Effect<Uint8Array, SaslError> => {
      const text = Bytes.fromUtf8(c)
      const attrs = text === undefined ? undefined : parseAttributes(text)
      if (attrs === undefined || attrs.length < 1) return malformed("invalid server-final-message")
      const [key, value] = attrs[0]!
      if (key === "e") {
        state = "failed"
        return fail("AuthenticationFailed", `server error: ${value.slice(0, 100)}`, SCRAM)
      }
      const signature = key === "v" ? B64.decode(value) : undefined
      if (signature === undefined) return malformed("invalid server-final-message")
      if (expectedSignature === undefined || !Bytes.constantTimeEqual(signature, expectedSignature)) {
        state = "failed"
        return fail("ServerVerificationFailed", "server signature does not match", SCRAM)
      }
      state = "verified"
      return Effect.succeed(EMPTY)
    }

    const client: SaslClient = {
      mechanism: SCRAM,
      start: Effect.sync(() => {
        state = "first"
        return Bytes.utf8(gs2 + bare)
      }),
      next: (c) =>
        Effect.suspend(() => {
          switch (state) {
            case "first":
              return serverFirst(c)
            case "final":
              return serverFinal(c)
            default:
              state = "failed"
              return fail("MalformedChallenge", "unexpected challenge", SCRAM)
          }
        }),
      finish: (data) =>
        Effect.suspend(() => {
          const check = state === "final" && data !== undefined && data.length > 0
            ? serverFinal(data)
            : Effect.succeed(EMPTY)
          return check.pipe(Effect.flatMap(() =>
            state === "verified"
              ? Effect.void
              : fail("ServerVerificationFailed", "the server did not prove it knows the password", SCRAM)
          ))
        }),
      done: Effect.sync(() => state === "verified")
    }
    return client
  })
})

// --- Choosing ----------------------------------------------------------------------------

/** What a client can authenticate with; {@link clientMechanisms} turns it into mechanisms. */
export type Credentials =
  | ({ readonly _tag: "Password" } & PasswordCredentials)
  | ({ readonly _tag: "Bearer" } & BearerCredentials)
  | { readonly _tag: "External"; readonly authzid?: string | undefined }
  | { readonly _tag: "Anonymous"; readonly trace?: string | undefined }

/**
 * Every mechanism the credentials can drive, strongest first. A password gives
 * SCRAM-SHA-256, CRAM-MD5, PLAIN and LOGIN (only SCRAM and PLAIN when an authzid is set:
 * the others cannot carry one); a bearer token gives OAUTHBEARER and, with a username, XOAUTH2.
 */
export const clientMechanisms = (credentials: Credentials): ReadonlyArray<ClientMechanism> => {
  switch (credentials._tag) {
    case "Password": {
      const { authzid, password, username } = credentials
      return authzid === undefined
        ? [scramSha256(credentials), cramMd5({ username, password }), plain(credentials), login({ username, password })]
        : [scramSha256(credentials), plain(credentials)]
    }
    case "Bearer": {
      const { username } = credentials
      return username === undefined
        ? [oauthBearer(credentials)]
        : [oauthBearer(credentials), xoauth2({ ...credentials, username })]
    }
    case "External":
      return [external(credentials)]
    case "Anonymous":
      return [anonymous(credentials)]
  }
}

/**
 * Picks the strongest mechanism that the server advertised and the credentials can
 * drive. On an unencrypted connection, mechanisms that send a replayable secret are
 * skipped unless `allowInsecure`. `undefined` when nothing fits.
 */
export const choose = (
  advertised: Iterable<string>,
  candidates: Credentials | ReadonlyArray<ClientMechanism>,
  options: { readonly secure: boolean; readonly allowInsecure?: boolean | undefined }
): ClientMechanism | undefined => {
  const offered = new Set<string>()
  for (const a of advertised) offered.add(a.toUpperCase())
  const list = "_tag" in candidates ? clientMechanisms(candidates) : candidates
  let best: ClientMechanism | undefined
  for (const m of list) {
    if (!offered.has(m.name)) continue
    if (m.sendsSecret && !options.secure && options.allowInsecure !== true) continue
    if (best === undefined || mechanismNames.indexOf(m.name) < mechanismNames.indexOf(best.name)) best = m
  }
  return best
}
