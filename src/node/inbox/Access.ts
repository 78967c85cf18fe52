/**
 * Who may use the inbox. It holds people's mail and can delete it, so:
 * - with a password (`--http-auth`), every request needs it (HTTP basic authentication);
 * - without one, it listens on loopback only (checked at start), and a request must name a
 *   loopback host, so that a web page elsewhere cannot reach it by rebinding its own DNS name to
 *   127.0.0.1.
 * Every response also tells the browser not to guess types, cache, or leak referrers.
 */
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as NetAddress from "effect/net/NetAddress"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import { createHash, timingSafeEqual } from "node:crypto"

export interface Credentials {
  readonly user: string
  readonly password: Redacted.Redacted<string>
}

/** Parses `USER:PASSWORD`. */
export const parseCredentials = (text: string): Result.Result<Credentials, string> => {
  const i = text.indexOf(":")
  if (i <= 0) return Result.fail(`invalid --http-auth "${text.replace(/:.*/, ":…")}": expected USER:PASSWORD`)
  return Result.succeed({ user: text.slice(0, i), password: Redacted.make(text.slice(i + 1)) })
}

/** A host name or address that only reaches this machine. */
export const isLoopbackHost = (host: string): boolean => {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
  const name = bare.toLowerCase().replace(/\.$/, "")
  if (name === "localhost" || name.endsWith(".localhost")) return true
  const ip = NetAddress.ipFromString(bare)
  return Result.isSuccess(ip) && NetAddress.isLoopback(ip.success)
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/** Compares in constant time (both sides hashed to the same length first). */
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b))

const basicCredentials = (header: string | undefined): string | undefined => {
  const m = header === undefined ? null : /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header)
  return m === null ? undefined : Buffer.from(m[1]!, "base64").toString("utf8")
}

/** The name in a Host header, without its port. */
const hostName = (host: string) => {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d*)?$/.exec(host)
  return m === null ? host : m[1]!
}

const refuse = (status: number, error: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe({ error }, { status, headers })

const hardening = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store"
}

/** The check, as a router middleware for every route. */
export const layer = (credentials: Credentials | undefined) => {
  const expected = credentials === undefined ? undefined : `${credentials.user}:${Redacted.value(credentials.password)}`
  const refusal = (request: HttpServerRequest.HttpServerRequest) => {
    if (expected !== undefined) {
      const given = basicCredentials(request.headers["authorization"])
      return given !== undefined && sameSecret(given, expected) ? undefined : refuse(401, "authentication required", {
        "www-authenticate": `Basic realm="effect-smtp inbox", charset="UTF-8"`
      })
    }
    const host = request.headers["host"]
    return host === undefined || isLoopbackHost(hostName(host))
      ? undefined
      : refuse(403, `the inbox answers to loopback names only, not to "${host}"`)
  }
  return HttpRouter.middleware((app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      const refused = refusal(request)
      return refused === undefined ? app : Effect.succeed(refused)
    }).pipe(Effect.map(HttpServerResponse.setHeaders(hardening))), { global: true })
}
