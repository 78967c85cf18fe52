/**
 * One client connection: greeting, hello, STARTTLS, AUTH and transactions, with the
 * state a server's replies build up (extensions, TLS, the open transaction).
 *
 * Operations run one at a time. A failure that leaves the conversation in an unknown state
 * (a transport error or timeout, a protocol violation, a 421, an interruption, a message
 * body that failed half-way) closes the connection, and every later operation fails with
 * that first error. The state and the steps of a command are in `ClientSession`, AUTH in
 * `ClientAuth`, transactions in `ClientTransaction`.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type * as MailOptions from "../../MailOptions.ts"
import type { Reply } from "../../Reply.ts"
import { Network, type TlsClientOptions, type TlsState, type Transport, TransportError } from "../../Transport.ts"
import { auth } from "./Auth.ts"
import type * as ClientBody from "./Body.ts"
import * as Config from "./Config.ts"
import type { AuthInput, ResolvedClientConfig } from "./Config.ts"
import * as Envelope from "./Envelope.ts"
import { type ClientError, invalidArgument, type RecipientsRefused, SmtpProtocolError, unsupported } from "./Errors.ts"
import { expect, is2xx, Session, chain } from "./Session.ts"
import * as Transaction from "./Transaction.ts"
import type { LmtpStatus, Message, SendResult } from "./Transaction.ts"
import * as Wire from "./Wire.ts"

export type { AcceptedRecipient, LmtpStatus, Message, Recipient, SendResult } from "./Transaction.ts"
export { DEFAULT_CHUNK_SIZE } from "./Transaction.ts"

/** A connected SMTP or LMTP client. Operations run one at a time, in call order. */
export interface SmtpClient {
  /** The server's 220 greeting. */
  readonly greeting: Reply
  /** "lmtp" for an LMTP client (LHLO, and `lmtpData` rather than `data` or `bdat`). */
  readonly protocol: "smtp" | "lmtp"
  /** EHLO keywords (upper case) and their parameters, from the latest hello. Empty after HELO. */
  readonly extensions: () => ReadonlyMap<string, string>
  /** The parameters of an EHLO keyword ("" when it has none); `undefined` when not offered. */
  readonly extension: (name: string) => string | undefined
  /** SIZE's limit in bytes, when the server states one. */
  readonly maxMessageSize: () => number | undefined
  /** The AUTH mechanisms offered, upper case. */
  readonly authMechanisms: () => ReadonlyArray<string>
  /** Whether AUTH offers this mechanism (any case). */
  readonly supportsAuth: (mechanism: string) => boolean
  /** The TLS session, once the connection is encrypted. */
  readonly tls: () => TlsState | undefined
  /** The mechanism AUTH succeeded with. */
  readonly authenticatedWith: () => string | undefined
  /** False once the connection was closed (QUIT, or after an error that ended it). */
  readonly isOpen: () => boolean

  /** EHLO (LHLO) again, with HELO as the fallback when EHLO gets 500 or 502. Resets the transaction. */
  readonly hello: (localName?: string) => Effect.Effect<Reply, ClientError>
  /** STARTTLS, the TLS handshake, and EHLO again. Fails when the server does not offer it. */
  readonly startTls: (options?: TlsClientOptions) => Effect.Effect<void, ClientError>
  /**
   * AUTH with the strongest mechanism the server offers that the input can drive. PLAIN, LOGIN
   * and bearer tokens are not used without TLS unless `allowInsecure`.
   */
  readonly auth: (input: AuthInput, options?: { readonly allowInsecure?: boolean | undefined }) => Effect.Effect<void, ClientError>
  /** MAIL FROM (`null`: the null path `<>`), with its parameters; the 250, or the refusal as `SmtpError`. */
  readonly mail: (from: string | null, options?: MailOptions.MailOptions) => Effect.Effect<Reply, ClientError>
  /** RCPT TO one recipient, with its parameters; the 250, or the refusal as `SmtpError`. */
  readonly rcpt: (to: string, options?: MailOptions.RcptOptions) => Effect.Effect<Reply, ClientError>
  /** DATA (SMTP): the body, dot-stuffed; the reply after the final dot. */
  readonly data: <E = never, R = never>(body: ClientBody.Body<E, R>) => Effect.Effect<Reply, ClientError | E, R>
  /** BDAT (SMTP, CHUNKING): the body in chunks, byte-exact under BODY=BINARYMIME; the reply to the last chunk. */
  readonly bdat: <E = never, R = never>(
    body: ClientBody.Body<E, R>,
    options?: { readonly chunkSize?: number | undefined }
  ) => Effect.Effect<Reply, ClientError | E, R>
  /** LMTP: the body (by DATA, or BDAT with `chunking`), then one status per accepted recipient. */
  readonly lmtpData: <E = never, R = never>(
    body: ClientBody.Body<E, R>,
    options?: { readonly chunking?: boolean | undefined; readonly chunkSize?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<LmtpStatus>, ClientError | E, R>
  /**
   * A whole transaction: MAIL, every RCPT, DATA or BDAT. With PIPELINING the envelope and
   * DATA (or the first BDAT chunk) go out in one write. Refused recipients are reported in
   * the result; when none is accepted it fails with `RecipientsRefused` and resets.
   */
  readonly send: <E = never, R = never>(message: Message<E, R>) => Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R>
  /** VRFY; any 2xx reply (252 means the server would not say). */
  readonly verify: (address: string) => Effect.Effect<Reply, ClientError>
  /** NOOP: checks the connection is alive (and keeps it so). */
  readonly noop: Effect.Effect<Reply, ClientError>
  /** RSET: aborts the transaction. */
  readonly reset: Effect.Effect<Reply, ClientError>
  /** QUIT, then close. Closing the client's scope does the same. */
  readonly quit: Effect.Effect<void, ClientError>
}

/** What the pooled `Mailer` needs besides the public interface. */
export interface PooledClient extends SmtpClient {
  /** Replies read so far that were not 421: unchanged across a failed send, nothing was done. */
  readonly progress: () => number
}

/** EHLO (LHLO), with HELO as the fallback when EHLO gets 500 or 502. Resets the transaction. */
const hello = (s: Session, name: string): Effect.Effect<Reply, ClientError> => {
  const checked = Envelope.checkLocalName(name)
  if (Result.isFailure(checked)) return Exit.fail(checked.failure)
  s.localName = name
  s.tx = undefined
  if (s.lmtp) {
    return chain(s.expectCommand(`LHLO ${name}`, is2xx, "LHLO"), (r) => {
      s.extensions = Envelope.parseExtensions(r)
      return Exit.succeed(r)
    })
  }
  return chain(s.command(`EHLO ${name}`, s.t.command, "EHLO"), (r) => {
    if (r.code === 500 || r.code === 502) {
      return chain(s.expectCommand(`HELO ${name}`, is2xx, "HELO"), (h) => {
        s.extensions = new Map()
        return Exit.succeed(h)
      })
    }
    const ok = expect(r, is2xx, "EHLO")
    if (Exit.isSuccess(ok)) s.extensions = Envelope.parseExtensions(r)
    return ok
  })
}

/**
 * True when the connection is now encrypted; false when opportunistic STARTTLS was not
 * possible. Where `security` requires it, a server that does not offer it or refuses it is a
 * TLS failure (the connection is dropped, nothing more is sent in plaintext), not a refusal.
 */
const startTls = (
  s: Session,
  options: TlsClientOptions,
  policy: "required" | "opportunistic" | "asked"
): Effect.Effect<boolean, ClientError> =>
  Effect.gen(function*() {
    if (s.transport.tls() !== undefined) return yield* unsupported("the connection is already encrypted")
    const tlsRequired = (why: string) => new TransportError({ reason: "Tls", message: `STARTTLS is required, but ${why}` })
    if (!s.has("STARTTLS")) {
      if (policy === "opportunistic") return false
      if (policy === "required") return yield* tlsRequired("the server does not offer it")
      return yield* unsupported("the server does not offer STARTTLS")
    }
    const r = yield* s.command("STARTTLS", s.t.command, "STARTTLS")
    if (r.code !== 220) {
      if (policy === "opportunistic" && r.code >= 400 && r.code !== 421) return false
      if (policy === "required" && r.code !== 421) return yield* tlsRequired(`the server refused it: ${r.code} ${r.text}`)
      yield* expect(r, (code) => code === 220, "STARTTLS")
    }
    // RFC 3207 5: whatever arrived in plaintext after the 220 could only be injected.
    const injected = s.wire.discardBuffered()
    if (injected > 0) {
      return yield* new SmtpProtocolError({
        reason: "TlsInjection",
        message: `the server sent ${injected} bytes after its 220 to STARTTLS, before the TLS handshake`
      })
    }
    yield* s.transport.upgradeTls({ role: "client", tls: options }).pipe(Effect.timeoutOrElse({
      duration: s.t.tlsHandshake,
      orElse: () => Effect.fail(new TransportError({ reason: "Timeout", message: "TLS handshake timed out" }))
    }))
    // Nothing learnt in plaintext is kept (RFC 3207 4.2).
    s.extensions = new Map()
    s.authenticatedWith = undefined
    yield* hello(s, s.localName)
    return true
  })

const verify = (s: Session, address: string): Effect.Effect<Reply, ClientError> =>
  address.trim() !== address || address === ""
    ? Exit.fail(invalidArgument("VRFY needs a non-empty argument"))
    : s.expectCommand(`VRFY ${address}`, is2xx, "VRFY")

const simple = (s: Session, verb: "NOOP" | "RSET"): Effect.Effect<Reply, ClientError> =>
  chain(s.command(verb, s.t.command, verb), (r) => {
    if (verb === "RSET") s.tx = undefined
    return expect(r, is2xx, verb)
  })

/** Greeting, hello, STARTTLS as `security` says, hello again, AUTH. */
const setUp = (s: Session): Effect.Effect<Reply, ClientError> =>
  Effect.gen(function*() {
    const config = s.config
    if (config.security === "implicit" && s.transport.tls() === undefined) {
      return yield* invalidArgument("implicit TLS was asked for, but the connection is not encrypted")
    }
    const g = yield* s.reply(s.t.greeting, "the connection (greeting)")
    const greeting = yield* expect(g, (code) => code === 220, "the connection (greeting)")
    yield* hello(s, s.localName)
    if (config.security === "starttls" || config.security === "opportunistic") {
      yield* startTls(s, config.tls, config.security === "opportunistic" ? "opportunistic" : "required")
    }
    if (config.auth !== undefined) yield* auth(s, config.auth, config.allowInsecureAuth)
    return greeting
  })

/**
 * Sets up a client over a connected transport: greeting, hello, STARTTLS as `security`
 * says, AUTH when credentials are given. The scope owns the transport: closing it sends
 * QUIT when the conversation is in a state to, then closes the connection.
 */
export const make = (
  transport: Transport,
  config: ResolvedClientConfig
): Effect.Effect<PooledClient, ClientError, Scope.Scope> =>
  Effect.gen(function*() {
    // Credentials that cannot be sent: not a byte goes out, not even QUIT.
    const credentials = Config.checkAuth(config.auth)
    if (Result.isFailure(credentials)) return yield* Effect.andThen(transport.close, Effect.fail(credentials.failure))
    const wire = yield* Wire.make(transport, { logTraffic: config.logTraffic })
    const s = new Session(transport, wire, config)
    yield* Effect.addFinalizer(() => s.finalize())
    const greeting = yield* s.op(() => setUp(s))
    const extensions = () => s.extensions
    const client: PooledClient = {
      greeting,
      protocol: config.protocol,
      extensions,
      extension: (name) => s.extensions.get(name.toUpperCase()),
      maxMessageSize: () => Envelope.maxMessageSize(s.extensions),
      authMechanisms: () => Envelope.authMechanisms(s.extensions),
      supportsAuth: (mechanism) => Envelope.authMechanisms(s.extensions).includes(mechanism.toUpperCase()),
      tls: () => transport.tls(),
      authenticatedWith: () => s.authenticatedWith,
      isOpen: () => !s.closed && s.broken === undefined,
      progress: () => s.progress,
      hello: (name) => s.op(() => hello(s, name ?? s.localName)),
      startTls: (options) => s.op(() => Effect.asVoid(startTls(s, { ...config.tls, ...options }, "asked"))),
      auth: (input, options) => s.op(() => auth(s, input, options?.allowInsecure ?? config.allowInsecureAuth)),
      mail: (from, options) => s.op(() => Transaction.mail(s, from, options ?? {})),
      rcpt: (to, options) => s.op(() => Transaction.rcpt(s, to, options ?? {})),
      data: (body) => s.op(() => Transaction.data(s, body)),
      bdat: (body, options) => s.op(() => Transaction.bdat(s, body, options?.chunkSize)),
      lmtpData: (body, options) =>
        s.op(() => Transaction.lmtpData(s, body, options?.chunking === true, options?.chunkSize)),
      send: (message) => s.op(() => Transaction.send(s, message)),
      verify: (address) => s.op(() => verify(s, address)),
      noop: s.op(() => simple(s, "NOOP")),
      reset: s.op(() => simple(s, "RSET")),
      quit: s.op(() => s.quit(s.t.command))
    }
    return client
  })

/** Opens the connection `options` point at, then sets up a client over it (see `make`). */
export const connect = (options: Config.ConnectOptions): Effect.Effect<PooledClient, ClientError, Network | Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = Config.endpointOf(options)
    const config = Config.resolve(options, endpoint._tag === "Unix" ? "none" : "starttls")
    // Nothing is sent, nor a connection opened, for credentials that cannot be sent.
    yield* Effect.fromResult(Config.checkAuth(config.auth))
    const network = yield* Network
    const transport = yield* network.connect({
      endpoint,
      tls: config.security === "implicit" ? config.tls : undefined,
      localAddress: options.localAddress
    }).pipe(Effect.timeoutOrElse({
      duration: config.timeouts.connect,
      orElse: () => Effect.fail(new TransportError({ reason: "Timeout", message: "connection timed out" }))
    }))
    return yield* make(transport, config)
  })
