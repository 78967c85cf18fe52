/**
 * The OAuth 2.0 bearer-token mechanisms: XOAUTH2 (Google's) and OAUTHBEARER (RFC 7628).
 * Both send the token in one client message of `key=value ^A` pairs; on refusal the server
 * sends a JSON error challenge, the client a dummy answer, then the exchange fails.
 * Server and client halves.
 */
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type {
  AuthResult,
  BearerCredentials,
  ClientMechanism,
  ExchangeOptions,
  SaslClient,
  ServerMechanism
} from "../../Sasl.ts"
import * as Bytes from "./bytes.ts"
import type { OAuthErrorDetails, SaslError } from "./error.ts"
import { fail } from "./error.ts"
import type { Exchange } from "./exchange.ts"
import { challenge, clientFirst, EMPTY, hasNul, invalid, mechanism, scripted, success } from "./exchange.ts"
import { decodeSaslname, encodeSaslname, gs2Header } from "./gs2.ts"

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

const KVSEP = 0x01

// --- Server ------------------------------------------------------------------------------

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

// --- Client ------------------------------------------------------------------------------

const b64token = /^[A-Za-z0-9\-._~+/]+=*$/

const oauthClient = (name: "XOAUTH2" | "OAUTHBEARER", ir: Uint8Array, dummy: Uint8Array): SaslClient => {
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
