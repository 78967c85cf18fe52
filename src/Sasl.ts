/**
 * SASL (RFC 4422) for SMTP AUTH (RFC 4954): the interface every mechanism implements, the
 * server's registry and the client's choice. The mechanisms themselves, each with its
 * client and server halves, live in `internal/sasl/` and are re-exported here: PLAIN and
 * LOGIN, CRAM-MD5, SCRAM-SHA-256, XOAUTH2 and OAUTHBEARER, ANONYMOUS and EXTERNAL.
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
 * Cryptography is `effect/crypto`'s and needs no layer: each operation uses the `Digest`,
 * `Mac`, `Kdf` or `SecureRandom` service when the program provides one (for example
 * `NodeCrypto.layer` from `@effect/platform-node`, which runs them on `node:crypto`), and
 * otherwise WebCrypto on `globalThis.crypto`.
 *
 * Channel binding: SCRAM-SHA-256 and OAUTHBEARER run with the GS2 flag "n" (or accept
 * "y" from a client); the -PLUS variants are not offered.
 *
 * @since 0.1.0
 */
import { timingSafeEqual } from "effect/crypto/Mac"
import * as Effect from "effect/Effect"
import type * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import { anonymous, anonymousServer, external, externalServer } from "./internal/sasl/anonymousExternal.ts"
import type { AnonymousVerifier, ExternalVerifier } from "./internal/sasl/anonymousExternal.ts"
import * as B64 from "./internal/sasl/base64.ts"
import { oauthBearer, oauthBearerServer, xoauth2, xoauth2Server } from "./internal/sasl/bearer.ts"
import type { BearerVerifier } from "./internal/sasl/bearer.ts"
import { cramMd5, cramMd5Server } from "./internal/sasl/cramMd5.ts"
import type { SecretLookup } from "./internal/sasl/cramMd5.ts"
import { cancelled, type OAuthErrorDetails, saslError, type SaslError, tooLong } from "./internal/sasl/error.ts"
import { DEFAULT_MAX_RESPONSE_LENGTH } from "./internal/sasl/exchange.ts"
import { login, loginServer, plain, plainServer } from "./internal/sasl/plainLogin.ts"
import type { PasswordVerifier } from "./internal/sasl/plainLogin.ts"
import { scramSha256, scramSha256Server } from "./internal/sasl/scramSha256.ts"
import type { ScramLookup } from "./internal/sasl/scramSha256.ts"
import type { TlsState } from "./Transport.ts"

// The mechanisms, each module with its client and server halves and its verifier's type.
export { anonymous, anonymousServer, external, externalServer, isValidTrace } from "./internal/sasl/anonymousExternal.ts"
export type { AnonymousVerifier, ExternalVerifier } from "./internal/sasl/anonymousExternal.ts"
export { oauthBearer, oauthBearerServer, xoauth2, xoauth2Server } from "./internal/sasl/bearer.ts"
export type { BearerVerifier } from "./internal/sasl/bearer.ts"
export { cramMd5, cramMd5Server } from "./internal/sasl/cramMd5.ts"
export type { SecretLookup } from "./internal/sasl/cramMd5.ts"
export { login, loginServer, passwordVerifier, plain, plainServer } from "./internal/sasl/plainLogin.ts"
export type { PasswordVerifier } from "./internal/sasl/plainLogin.ts"
export { deriveScramCredential, scramSha256, scramSha256Server } from "./internal/sasl/scramSha256.ts"
export type { ScramCredential, ScramLookup } from "./internal/sasl/scramSha256.ts"

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/** The mechanisms this module implements, by their IANA names. */
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
// Errors and the wire
// ---------------------------------------------------------------------------------------

export { cancelled, SaslError, toSmtpError, tooLong } from "./internal/sasl/error.ts"
export type { OAuthErrorDetails, SaslErrorReason } from "./internal/sasl/error.ts"
export { DEFAULT_MAX_RESPONSE_LENGTH } from "./internal/sasl/exchange.ts"

/** Base64 with padding: how a challenge goes on the wire after `334 `. */
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

// ---------------------------------------------------------------------------------------
// Credential comparison
// ---------------------------------------------------------------------------------------

/** Compares two byte strings; `true` when equal. */
export type Compare = (a: Uint8Array, b: Uint8Array) => boolean

/**
 * Byte equality whose running time depends only on the lengths, never on how many
 * leading bytes match: `effect/crypto`'s `Mac.timingSafeEqual`, which visits every byte
 * and answers `false` at once only for different lengths. The built-in checks compare
 * fixed-length digests with it, so not even the length of a password leaks.
 */
export const constantTimeEqual: Compare = timingSafeEqual

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
    /** The server needs another response from the client. */
    readonly _tag: "Challenge"
    /** Sent as `334 <base64>`; empty means `334 ` (RFC 4954). */
    readonly data: Uint8Array
  }
  | {
    /** The client is authenticated: `235 2.7.0`. */
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

/** A server mechanism: a factory of exchanges. */
export interface ServerMechanism {
  /** Its name, as advertised after AUTH. */
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

/** Options every server mechanism takes. */
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

export { authorizeSelf } from "./internal/sasl/exchange.ts"

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

/** Options of {@link serverMechanisms}. */
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
  /** Whether mechanisms that send secrets are offered without TLS: `ServerOptions.allowInsecureAuth`. */
  readonly allowInsecureAuth: boolean
}

/** The same type under the name the Backend uses. */
export type SaslServerMechanisms = ServerMechanisms

/**
 * Builds the mechanisms whose verifiers are given: what a backend's session returns as `auth`.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Redacted from "effect/Redacted"
 * import * as Sasl from "effect-smtp/Sasl"
 *
 * const users = new Map([["alice", Redacted.make("correct horse")]])
 *
 * // PLAIN and LOGIN from stored passwords (compared in constant time), offered only over TLS.
 * const auth = Sasl.serverMechanisms({
 *   password: Sasl.passwordVerifier((username) => Effect.succeed(users.get(username)))
 * })
 * // In the Backend: newSession: () => Effect.succeed({ ...session, auth })
 * // The identity a verifier returns is then ConnectionInfo.authenticatedAs().
 * ```
 */
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

const isSecure = (context: ServerContext): boolean => context.secure ?? context.tls !== undefined

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
  /** The mechanism this exchange runs. */
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
  /** Its name, as the server advertises it. */
  readonly name: MechanismName
  /**
   * Whether what it sends could be replayed by an eavesdropper (PLAIN, LOGIN, XOAUTH2,
   * OAUTHBEARER): {@link choose} uses such mechanisms only over TLS unless told otherwise.
   */
  readonly sendsSecret: boolean
  /** A new exchange. */
  readonly client: Effect.Effect<SaslClient, SaslError>
}

/** A user name and password: SCRAM-SHA-256, CRAM-MD5, PLAIN and LOGIN. */
export interface PasswordCredentials {
  /** The authentication identity (authcid). */
  readonly username: string
  /** The password; `Redacted` so that it stays out of logs. */
  readonly password: Redacted.Redacted<string>
  /** Act as this identity instead (PLAIN and SCRAM only). */
  readonly authzid?: string | undefined
}

/** An OAuth 2.0 access token: OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's, Microsoft's). */
export interface BearerCredentials {
  /** XOAUTH2's `user` (required there); OAUTHBEARER's authzid (optional). */
  readonly username?: string | undefined
  /** The access token. */
  readonly token: Redacted.Redacted<string>
  /** OAUTHBEARER's `host` key: the server's name. */
  readonly host?: string | undefined
  /** OAUTHBEARER's `port` key: the server's port. */
  readonly port?: number | undefined
}

// --- Choosing ----------------------------------------------------------------------------

/**
 * What a client can authenticate with; {@link clientMechanisms} turns it into mechanisms, and
 * `SmtpClient`'s `auth` option takes it as is.
 *
 * @example
 * ```ts
 * import * as Redacted from "effect/Redacted"
 * import type * as Sasl from "effect-smtp/Sasl"
 *
 * const password: Sasl.Credentials = { _tag: "Password", username: "app", password: Redacted.make("secret") }
 * const token: Sasl.Credentials = { _tag: "Bearer", username: "app@example.com", token: Redacted.make(accessToken) }
 * const certificate: Sasl.Credentials = { _tag: "External" } // the TLS client certificate says who
 * ```
 */
export type Credentials =
  | ({
    /** A user name and password. */
    readonly _tag: "Password"
  } & PasswordCredentials)
  | ({
    /** An OAuth 2.0 access token. */
    readonly _tag: "Bearer"
  } & BearerCredentials)
  | {
    /** EXTERNAL: the TLS client certificate is the credential. */
    readonly _tag: "External"
    /** Act as this identity instead of the certificate's. */
    readonly authzid?: string | undefined
  }
  | {
    /** ANONYMOUS (RFC 4505): no credential at all. */
    readonly _tag: "Anonymous"
    /** Trace information for the server's logs, e.g. an email address. */
    readonly trace?: string | undefined
  }

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
