/**
 * Server options and their defaults. Every limit has a safe default; `resolve` fills them in.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { defaultFor, type EnhancedCode } from "../../EnhancedCode.ts"
import type { BareLineEndingPolicy } from "../codec/DotCodec.ts"
import type { Endpoint, ProxyProtocolOptions, TlsServerOptions, UnixSocketAccess } from "../../Transport.ts"
import type * as MailOptions from "../../MailOptions.ts"
import type { BodyDeadline, DataBodyOptions } from "../codec/LineReader.ts"
import type { ServerReplies } from "./Replies.ts"
import * as IpNetworks from "../transport/IpNetworks.ts"

/** One listening socket. `implicitTls` listeners speak TLS from the first byte (port 465). */
export interface ListenSpec {
  /** Where to listen: a TCP address (port 0 picks a free one) or a Unix socket path. */
  readonly endpoint: Endpoint
  /** TLS from the first byte (port 465, RFC 8314); needs the server's `tls`. Default false. */
  readonly implicitTls?: boolean | undefined
  /**
   * A Unix socket's mode, owner and group, e.g. `{ mode: 0o660, group: "postfix" }` for
   * Postfix's LMTP client. The socket is reachable only once they are set.
   */
  readonly unix?: UnixSocketAccess | undefined
  /**
   * TCP: other processes may listen on the same address and port (SO_REUSEPORT), and the kernel
   * spreads connections between them. Run one server process per core this way; each process's
   * limits are its own.
   */
  readonly reusePort?: boolean | undefined
  /**
   * Behind a load balancer or TCP proxy: every connection starts with a PROXY protocol header
   * (v1 or v2) from one of `trusted`, and the client address it carries is the connection's
   * remote endpoint for every limit, the backend, logs and spans. Anyone else is closed at once.
   */
  readonly proxyProtocol?: ProxyProtocolOptions | undefined
}

/** XCLIENT (Postfix's extension): trusted clients may say whom they speak for. */
export interface XclientOptions {
  /**
   * Addresses and CIDR networks of the clients XCLIENT is offered to (e.g. a content filter, a
   * test tool). Unix socket clients are never trusted.
   */
  readonly trusted: ReadonlyArray<string>
}

/** Extensions that can be switched on or off; each is advertised only when on and usable. */
export interface Extensions {
  /** PIPELINING (RFC 2920): commands sent without waiting for each reply. Default on. */
  readonly pipelining: boolean
  /** 8BITMIME (RFC 6152): bodies with 8-bit bytes. Default on. */
  readonly eightBitMime: boolean
  /** ENHANCEDSTATUSCODES (RFC 2034): "5.1.1" after the reply code. Default on. */
  readonly enhancedStatusCodes: boolean
  /** CHUNKING (RFC 3030): BDAT, the body in sized chunks. Default on. */
  readonly chunking: boolean
  /** BINARYMIME (RFC 3030): bodies of any bytes, sent with BDAT. Needs `chunking`. Default off. */
  readonly binaryMime: boolean
  /** SMTPUTF8 (RFC 6531): non-ASCII addresses. Default off. */
  readonly smtputf8: boolean
  /** REQUIRETLS (RFC 8689): the sender asks for TLS all the way. Advertised only over TLS. Default off. */
  readonly requireTls: boolean
  /** DSN (RFC 3461): delivery status notification parameters (RET, ENVID, NOTIFY, ORCPT). Default off. */
  readonly dsn: boolean
  /** RRVS (RFC 7293): the require-recipient-valid-since parameter. Default off. */
  readonly rrvs: boolean
  /** DELIVERBY (RFC 2852): a deadline for delivery. Default off. */
  readonly deliverBy: boolean
  /** MT-PRIORITY (RFC 6710): a message priority. Default off. */
  readonly mtPriority: boolean
  /** LIMITS (RFC 9422): `LIMITS RCPTMAX=…`, the recipient limit told up front. Default on. */
  readonly limits: boolean
}

/**
 * How long each step may take. A timeout that runs out closes the connection (`421 4.4.2`
 * where a reply can still go out).
 */
export interface Timeouts {
  /** Receiving a whole command line; partial lines do not extend it. Default 5 minutes. */
  readonly command: Duration.Input
  /** A message body without progress; see `minDataRate`. Default 5 minutes. */
  readonly data: Duration.Input
  /** One write to be taken by the peer. Default 1 minute. */
  readonly write: Duration.Input
  /** A TLS handshake, STARTTLS or implicit TLS. Default 60 seconds. */
  readonly tlsHandshake: Duration.Input
  /**
   * A session the backend refused (`newSession` failed with a reply other than 421) gets that
   * reply, then 503 to every command until QUIT (RFC 5321 3.1), for at most this long per
   * command. Default 10 seconds.
   */
  readonly refusedSession: Duration.Input
  /** On shutdown, how long transactions in progress may go on before 421. Default 30 seconds. */
  readonly shutdown: Duration.Input
}

/** The server's timeouts when none are given. */
export const defaultTimeouts: Timeouts = {
  command: "5 minutes",
  data: "5 minutes",
  write: "1 minute",
  tlsHandshake: "60 seconds",
  refusedSession: "10 seconds",
  shutdown: "30 seconds"
}

export type ResolvedTimeouts = { readonly [K in keyof Timeouts]: Duration.Duration }

/** The server's options; only `listen` is required, every limit has a safe default. */
export interface ServerOptions {
  /** The sockets to listen on; at least one. */
  readonly listen: ReadonlyArray<ListenSpec>
  /** The server's name in the greeting and replies. Default "localhost". */
  readonly domain?: string | undefined
  /** "lmtp" answers LHLO and replies once per recipient after the body. Default "smtp". */
  readonly protocol?: "smtp" | "lmtp" | undefined
  /** Certificates for STARTTLS and implicit TLS listeners. Without them STARTTLS is not offered. */
  readonly tls?: TlsServerOptions | undefined
  /** Text after "220 <domain> " in the greeting. */
  readonly greeting?: string | undefined
  /** Extensions to switch on or off; those not given keep their defaults (`defaultExtensions`). */
  readonly extensions?: Partial<Extensions> | undefined
  /** Largest message accepted, advertised in SIZE. Default 32 MiB. */
  readonly maxMessageBytes?: number | undefined
  /** Recipients per transaction; more get 452 4.5.3. Default 1000. */
  readonly maxRecipients?: number | undefined
  /**
   * Longest command line, CRLF included; longer gets 500 5.5.2 as soon as the limit is crossed,
   * and the connection closes. Default 2000.
   */
  readonly maxLineLength?: number | undefined
  /**
   * Longest line of a 7BIT or 8BITMIME message, in bytes without its line ending (BINARYMIME is
   * exempt). A longer line gets 550 5.6.0 once the whole message is read. RFC 5322 says 998;
   * real senders go beyond that, never near the default. 0 lifts the limit. Default 1 MiB.
   */
  readonly maxBodyLineLength?: number | undefined
  /** Simultaneous connections in all. Default 1000. */
  readonly maxConnections?: number | undefined
  /** Simultaneous connections from one IP address. Default 50. */
  readonly maxConnectionsPerIp?: number | undefined
  /** Error replies after which each further error reply is delayed by `errorDelay`. Default 10. */
  readonly softErrorLimit?: number | undefined
  /** Error replies after which the connection is closed with 421. Default 20. */
  readonly hardErrorLimit?: number | undefined
  /** How long each error reply past `softErrorLimit` waits. Default 1 second. */
  readonly errorDelay?: Duration.Input | undefined
  /** Consecutive unrecognised commands before the connection is closed. Default 5. */
  readonly maxUnknownCommands?: number | undefined
  /**
   * Commands that move no mail (NOOP, RSET, VRFY, EXPN, HELP) a connection may send before each
   * further one counts as an error, so that the error limits end a session kept open with them
   * (Postfix's `smtpd_junk_command_limit`). The count starts again when a message is accepted.
   * Default 100.
   */
  readonly junkCommandLimit?: number | undefined
  /** Failed AUTH attempts before 421 and close. Default 3. */
  readonly maxAuthFailures?: number | undefined
  /**
   * Hang up at once (221 2.7.0) on a line that is not SMTP at all: a verb of `forbiddenCommands`,
   * a message header line (`Subject: hi`: message content taken for commands), or a line that
   * does not start with a letter (binary, a TLS ClientHello). Postfix's `smtpd_forbidden_commands`.
   * Only unknown verbs are looked at. Default true.
   */
  readonly refuseNonSmtp?: boolean | undefined
  /** The verbs `refuseNonSmtp` hangs up on, in any case. Default the HTTP methods (GET, POST, CONNECT, …) and PRI. */
  readonly forbiddenCommands?: ReadonlyArray<string> | undefined
  /**
   * Hang up (554 5.5.0) on a client that does not wait for a reply where it must: more input
   * right behind DATA (before the 354), behind HELO, or behind any command of a session without
   * PIPELINING (a HELO session, or EHLO with `pipelining` off); and, with `greetingDelay`, input
   * before the greeting. Nothing of that transaction reaches the backend. Postfix's
   * `smtpd_forbid_unauth_pipelining`. Default true.
   */
  readonly forbidUnauthorizedPipelining?: boolean | undefined
  /**
   * How long to wait before the greeting. A client that talks in that time is refused (554 5.5.0
   * under `forbidUnauthorizedPipelining`): spam software often does not wait. Not on implicit-TLS
   * listeners. Default 0 (no wait: the greeting goes out at once, and nothing is checked).
   */
  readonly greetingDelay?: Duration.Input | undefined
  /** How long each step may take; each one given replaces its default. */
  readonly timeouts?: Partial<Timeouts> | undefined
  /** Bytes per second that keep a body's deadline from shrinking (slow-drip protection). Default 1024. */
  readonly minDataRate?: number | undefined
  /**
   * Log every command and reply at Debug level (annotation `smtp`: "C" or "S"), AUTH data
   * redacted and message content as a byte count. Default false.
   */
  readonly logTraffic?: boolean | undefined
  /** Bare CR or LF inside DATA. Default "reject" (550 5.5.2): SMTP smuggling cannot work. */
  readonly bareLineEndings?: BareLineEndingPolicy | undefined
  /** Offer AUTH over plaintext connections. Default false. */
  readonly allowInsecureAuth?: boolean | undefined
  /** Refuse MAIL until AUTH succeeded (530 5.7.0). Default false. */
  readonly requireAuth?: boolean | undefined
  /** Refuse MAIL until STARTTLS (530 5.7.0). Default false. */
  readonly requireTlsForMail?: boolean | undefined
  /**
   * Offer XCLIENT to these trusted clients: NAME, ADDR, PORT, PROTO, HELO, LOGIN, DESTADDR and
   * DESTPORT replace what the server knows about the connection, and the session starts over
   * (a new backend session, 220). Off by default.
   */
  readonly xclient?: XclientOptions | undefined
  /** The reply to VRFY. Default 252 2.5.0 (RFC 5321 3.5.3: "cannot verify, but will accept"). */
  readonly vrfyReply?: {
    /** The reply code, e.g. 252 or 502. */
    readonly code: number
    /** The enhanced code; default the class's `X.0.0`. */
    readonly enhancedCode?: EnhancedCode | undefined
    /** The reply text. */
    readonly text: string
  } | undefined
}

export interface ResolvedConfig {
  readonly listen: ReadonlyArray<ListenSpec>
  readonly domain: string
  readonly protocol: "smtp" | "lmtp"
  readonly tls: TlsServerOptions | undefined
  readonly greeting: string
  readonly extensions: Extensions
  readonly maxMessageBytes: number
  readonly maxRecipients: number
  readonly maxLineLength: number
  /** Infinity when lifted. */
  readonly maxBodyLineLength: number
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  readonly softErrorLimit: number
  readonly hardErrorLimit: number
  readonly errorDelay: Duration.Duration
  readonly maxUnknownCommands: number
  readonly junkCommandLimit: number
  readonly maxAuthFailures: number
  readonly refuseNonSmtp: boolean
  /** Upper case. */
  readonly forbiddenCommands: ReadonlySet<string>
  readonly forbidUnauthorizedPipelining: boolean
  readonly greetingDelay: Duration.Duration
  readonly timeouts: ResolvedTimeouts
  readonly minDataRate: number
  readonly logTraffic: boolean
  readonly bareLineEndings: BareLineEndingPolicy
  readonly allowInsecureAuth: boolean
  readonly requireAuth: boolean
  readonly requireTlsForMail: boolean
  /** The clients XCLIENT is offered to; undefined: XCLIENT is not a command here. */
  readonly xclient: IpNetworks.Networks | undefined
  readonly vrfyReply: { readonly code: number; readonly enhancedCode: EnhancedCode | undefined; readonly text: string }
}

/** The extensions offered when `extensions` does not say otherwise. */
export const defaultExtensions: Extensions = {
  pipelining: true,
  eightBitMime: true,
  enhancedStatusCodes: true,
  chunking: true,
  binaryMime: false,
  smtputf8: false,
  requireTls: false,
  dsn: false,
  rrvs: false,
  deliverBy: false,
  mtPriority: false,
  limits: true
}

const duration = (d: Duration.Input | undefined, fallback: Duration.Input) => Duration.fromInputUnsafe(d ?? fallback)

/** Verbs of other protocols: HTTP/1 methods and HTTP/2's connection preface. */
const defaultForbiddenCommands: ReadonlyArray<string> = [
  "CONNECT",
  "DELETE",
  "GET",
  "HEAD",
  "OPTIONS",
  "PATCH",
  "POST",
  "PRI",
  "PUT",
  "TRACE"
]

const MiB = 1024 * 1024

const resolveTimeouts = (t: Partial<Timeouts> | undefined): ResolvedTimeouts => ({
  command: duration(t?.command, defaultTimeouts.command),
  data: duration(t?.data, defaultTimeouts.data),
  write: duration(t?.write, defaultTimeouts.write),
  tlsHandshake: duration(t?.tlsHandshake, defaultTimeouts.tlsHandshake),
  refusedSession: duration(t?.refusedSession, defaultTimeouts.refusedSession),
  shutdown: duration(t?.shutdown, defaultTimeouts.shutdown)
})

/** Fills in the defaults. Throws on an `xclient.trusted` entry that is not an address or network. */
export const resolve = (o: ServerOptions): ResolvedConfig => ({
  listen: o.listen,
  domain: o.domain ?? "localhost",
  protocol: o.protocol ?? "smtp",
  tls: o.tls,
  greeting: o.greeting ?? (o.protocol === "lmtp" ? "LMTP service ready" : "ESMTP service ready"),
  extensions: { ...defaultExtensions, ...o.extensions },
  maxMessageBytes: o.maxMessageBytes ?? 32 * 1024 * 1024,
  maxRecipients: o.maxRecipients ?? 1000,
  maxLineLength: o.maxLineLength ?? 2000,
  maxBodyLineLength: o.maxBodyLineLength === 0 ? Number.POSITIVE_INFINITY : o.maxBodyLineLength ?? MiB,
  maxConnections: o.maxConnections ?? 1000,
  maxConnectionsPerIp: o.maxConnectionsPerIp ?? 50,
  softErrorLimit: o.softErrorLimit ?? 10,
  hardErrorLimit: o.hardErrorLimit ?? 20,
  errorDelay: duration(o.errorDelay, "1 second"),
  maxUnknownCommands: o.maxUnknownCommands ?? 5,
  junkCommandLimit: o.junkCommandLimit ?? 100,
  maxAuthFailures: o.maxAuthFailures ?? 3,
  refuseNonSmtp: o.refuseNonSmtp ?? true,
  forbiddenCommands: new Set((o.forbiddenCommands ?? defaultForbiddenCommands).map((v) => v.toUpperCase())),
  forbidUnauthorizedPipelining: o.forbidUnauthorizedPipelining ?? true,
  greetingDelay: duration(o.greetingDelay, 0),
  timeouts: resolveTimeouts(o.timeouts),
  minDataRate: o.minDataRate ?? 1024,
  logTraffic: o.logTraffic ?? false,
  bareLineEndings: o.bareLineEndings ?? "reject",
  allowInsecureAuth: o.allowInsecureAuth ?? false,
  requireAuth: o.requireAuth ?? false,
  requireTlsForMail: o.requireTlsForMail ?? false,
  xclient: o.xclient === undefined ? undefined : xclientNetworks(o.xclient),
  vrfyReply: o.vrfyReply === undefined
    ? { code: 252, enhancedCode: [2, 5, 0], text: "Cannot VRFY user, but will accept message and attempt delivery" }
    : { ...o.vrfyReply, enhancedCode: o.vrfyReply.enhancedCode ?? defaultFor(o.vrfyReply.code) }
})

const xclientNetworks = (o: XclientOptions): IpNetworks.Networks => {
  const parsed = IpNetworks.parse(o.trusted)
  if (parsed._tag === "Failure") throw new Error(`xclient.trusted: ${parsed.failure}`)
  return parsed.success
}

/** The timeouts a connection's watchdog is armed with for each command or write, in milliseconds. */
export interface TimeoutMillis {
  readonly command: number
  readonly refusedSession: number
  readonly write: number
}

/** What every connection of a server reads alike, made once per server. */
export const connectionSettings = (c: ResolvedConfig, replies: ServerReplies): {
  readonly bodyDeadline: BodyDeadline
  readonly dataBody: DataBodyOptions
  readonly accepted: Effect.Effect<ReadonlyArray<string>>
  readonly timeoutMillis: TimeoutMillis
  readonly mailEnabled: MailOptions.Enabled
} => {
  const ext = c.extensions
  const bodyDeadline = { idleMillis: Duration.toMillis(c.timeouts.data), minBytesPerSecond: c.minDataRate }
  return {
    bodyDeadline,
    dataBody: {
      deadline: bodyDeadline,
      maxBytes: c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY,
      bareLineEndings: c.bareLineEndings,
      maxLineLength: c.maxBodyLineLength,
      lineTooLong: replies.bodyLineTooLong
    },
    accepted: Effect.succeed([replies.messageAccepted]),
    timeoutMillis: {
      command: Duration.toMillis(c.timeouts.command),
      refusedSession: Duration.toMillis(c.timeouts.refusedSession),
      write: Duration.toMillis(c.timeouts.write)
    },
    mailEnabled: {
      size: c.maxMessageBytes > 0,
      eightBitMime: ext.eightBitMime,
      binaryMime: ext.binaryMime && ext.chunking,
      smtputf8: ext.smtputf8,
      requireTls: ext.requireTls,
      dsn: ext.dsn,
      auth: false,
      rrvs: ext.rrvs,
      deliverBy: ext.deliverBy,
      mtPriority: ext.mtPriority
    }
  }
}
