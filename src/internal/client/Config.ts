/**
 * Client options and their defaults: the RFC 5321 4.5.3.2 timeouts, TLS policy and AUTH.
 */
import * as Duration from "effect/Duration"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Sasl from "../../Sasl.ts"
import { invalidArgument, type SmtpClientError } from "./Errors.ts"
import type { Endpoint, TlsClientOptions } from "../../Transport.ts"

/**
 * How the connection is protected:
 * - `"starttls"`: STARTTLS is required; a server that does not offer it, or refuses it, is an error;
 * - `"opportunistic"`: STARTTLS when the server offers it, plaintext otherwise (or if it refuses);
 * - `"implicit"`: TLS from the first byte (port 465);
 * - `"none"`: plaintext only.
 */
export type Security = "starttls" | "opportunistic" | "implicit" | "none"

/** How long each step may take. Defaults follow RFC 5321 4.5.3.2. */
export interface Timeouts {
  /** Opening the connection (TCP, and the TLS handshake with implicit TLS). Default 30 seconds. */
  readonly connect: Duration.Input
  /** The server's 220 greeting. Default 5 minutes. */
  readonly greeting: Duration.Input
  /** The reply to EHLO, STARTTLS, AUTH, RSET, NOOP, VRFY. Default 5 minutes. */
  readonly command: Duration.Input
  /** The reply to MAIL FROM. Default 5 minutes. */
  readonly mail: Duration.Input
  /** The reply to RCPT TO. Default 5 minutes. */
  readonly rcpt: Duration.Input
  /** The 354 reply to DATA. Default 2 minutes. */
  readonly dataInitiation: Duration.Input
  /** Each write of message data, and the reply to a BDAT chunk that is not the last. Default 3 minutes. */
  readonly dataBlock: Duration.Input
  /** The reply (or, LMTP, each reply) after the final dot or the last BDAT chunk. Default 10 minutes. */
  readonly dataTermination: Duration.Input
  /** The STARTTLS handshake. Default 1 minute. */
  readonly tlsHandshake: Duration.Input
  /** The QUIT sent when the client's scope closes; the connection is closed anyway after it. Default 10 seconds. */
  readonly quit: Duration.Input
}

export type ResolvedTimeouts = { readonly [K in keyof Timeouts]: Duration.Duration }

/** The client's timeouts when none are given (RFC 5321 4.5.3.2's, where it has one). */
export const defaultTimeouts: Timeouts = {
  connect: "30 seconds",
  greeting: "5 minutes",
  command: "5 minutes",
  mail: "5 minutes",
  rcpt: "5 minutes",
  dataInitiation: "2 minutes",
  dataBlock: "3 minutes",
  dataTermination: "10 minutes",
  tlsHandshake: "1 minute",
  quit: "10 seconds"
}

/** What AUTH uses: credentials (the strongest mechanism both sides know is picked), or mechanisms. */
export type AuthInput = Sasl.Credentials | Sasl.ClientMechanism | ReadonlyArray<Sasl.ClientMechanism>

/** Options of every client: how to greet, protect and authenticate the connection. */
export interface ClientOptions {
  /** The name sent in EHLO / HELO / LHLO. Default "localhost". */
  readonly localName?: string | undefined
  /** Default `"starttls"` (required), `"none"` over a Unix socket. */
  readonly security?: Security | undefined
  /**
   * TLS settings for STARTTLS and implicit TLS: `ca`, `servername`, client certificates…
   * The server certificate is verified unless `rejectUnauthorized: false` is given.
   */
  readonly tls?: TlsClientOptions | undefined
  /** `"lmtp"` speaks LMTP (RFC 2033): LHLO, and one reply per recipient after the message. Default `"smtp"`. */
  readonly protocol?: "smtp" | "lmtp" | undefined
  /** Authenticate once the connection is set up (after STARTTLS). */
  readonly auth?: AuthInput | undefined
  /** Allow PLAIN, LOGIN and bearer tokens over a connection without TLS. Default false. */
  readonly allowInsecureAuth?: boolean | undefined
  /** How long each step may take; each one given replaces its default (`defaultTimeouts`). */
  readonly timeouts?: Partial<Timeouts> | undefined
  /**
   * Log every command and reply at Debug level (go-smtp's DebugWriter). AUTH data is
   * redacted and message content appears only as byte counts. Default false.
   */
  readonly logTraffic?: boolean | undefined
}

/** Where to connect, besides the client options. */
export interface ConnectOptions extends ClientOptions {
  /** Host name or IP address. Default "localhost". */
  readonly host?: string | undefined
  /** Default 465 with implicit TLS, 24 for LMTP, 587 otherwise. */
  readonly port?: number | undefined
  /** A Unix socket path instead of host and port. */
  readonly path?: string | undefined
  /** The endpoint itself, instead of host/port/path. */
  readonly endpoint?: Endpoint | undefined
  /** Local address to connect from. */
  readonly localAddress?: string | undefined
}

export interface ResolvedClientConfig {
  readonly localName: string
  readonly security: Security
  readonly tls: TlsClientOptions
  readonly protocol: "smtp" | "lmtp"
  readonly auth: AuthInput | undefined
  readonly allowInsecureAuth: boolean
  readonly timeouts: ResolvedTimeouts
  readonly logTraffic: boolean
}

const resolveTimeouts = (t: Partial<Timeouts> | undefined): ResolvedTimeouts => {
  const merged: Timeouts = { ...defaultTimeouts, ...t }
  return {
    connect: Duration.fromInputUnsafe(merged.connect),
    greeting: Duration.fromInputUnsafe(merged.greeting),
    command: Duration.fromInputUnsafe(merged.command),
    mail: Duration.fromInputUnsafe(merged.mail),
    rcpt: Duration.fromInputUnsafe(merged.rcpt),
    dataInitiation: Duration.fromInputUnsafe(merged.dataInitiation),
    dataBlock: Duration.fromInputUnsafe(merged.dataBlock),
    dataTermination: Duration.fromInputUnsafe(merged.dataTermination),
    tlsHandshake: Duration.fromInputUnsafe(merged.tlsHandshake),
    quit: Duration.fromInputUnsafe(merged.quit)
  }
}

export const resolve = (o: ClientOptions, defaultSecurity: Security): ResolvedClientConfig => ({
  localName: o.localName ?? "localhost",
  security: o.security ?? defaultSecurity,
  tls: o.tls ?? {},
  protocol: o.protocol ?? "smtp",
  auth: o.auth,
  allowInsecureAuth: o.allowInsecureAuth ?? false,
  timeouts: resolveTimeouts(o.timeouts),
  logTraffic: o.logTraffic ?? false
})

const hasLineBreaker = (s: string | undefined) => s !== undefined && /[\r\n\0]/.test(s)

/**
 * Credentials as every caller string: no CR, LF or NUL (they would break PLAIN's framing, or a
 * server's parser, once decoded), checked before anything is sent. Mechanisms made by the
 * caller are theirs to check.
 */
export const checkAuth = (auth: AuthInput | undefined): Result.Result<void, SmtpClientError> => {
  if (auth === undefined || Array.isArray(auth) || !("_tag" in auth)) return Result.void
  const c = auth as Sasl.Credentials
  const fields: ReadonlyArray<readonly [string, string | undefined]> = c._tag === "Password"
    ? [["user name", c.username], ["password", Redacted.value(c.password)], ["authorization identity", c.authzid]]
    : c._tag === "Bearer"
    ? [["user name", c.username], ["token", Redacted.value(c.token)], ["host", c.host]]
    : c._tag === "External"
    ? [["authorization identity", c.authzid]]
    : [["trace", c.trace]]
  for (const [name, value] of fields) {
    if (hasLineBreaker(value)) return Result.fail(invalidArgument(`the AUTH ${name} may not contain CR, LF or NUL`))
  }
  return Result.void
}

/** The endpoint of `connect`, with the default port for the security mode and protocol. */
export const endpointOf = (o: ConnectOptions): Endpoint => {
  if (o.endpoint !== undefined) return o.endpoint
  if (o.path !== undefined) return { _tag: "Unix", path: o.path }
  const port = o.port ?? (o.security === "implicit" ? 465 : o.protocol === "lmtp" ? 24 : 587)
  return { _tag: "Tcp", host: o.host ?? "localhost", port }
}
