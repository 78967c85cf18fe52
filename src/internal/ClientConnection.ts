/**
 * One client connection: greeting, hello, STARTTLS, AUTH and transactions, with the
 * state a server's replies build up (extensions, TLS, the open transaction).
 *
 * Operations run one at a time. A failure that leaves the conversation in an unknown state
 * (a transport error or timeout, a protocol violation, a 421, an interruption, a message
 * body that failed half-way) closes the connection, and every later operation fails with
 * that first error.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Address from "../Address.ts"
import type * as MailOptions from "../MailOptions.ts"
import type { Reply } from "../Reply.ts"
import * as Sasl from "../Sasl.ts"
import { SmtpError } from "../SmtpError.ts"
import { Network, type TlsClientOptions, type TlsState, type Transport, TransportError } from "../Transport.ts"
import * as ClientBody from "./ClientBody.ts"
import * as Config from "./ClientConfig.ts"
import type { AuthInput, ResolvedClientConfig } from "./ClientConfig.ts"
import * as Envelope from "./ClientEnvelope.ts"
import {
  type ClientError,
  invalidArgument,
  RecipientsRefused,
  type RejectedRecipient,
  SmtpClientError,
  SmtpProtocolError,
  unsupported
} from "./ClientErrors.ts"
import * as Wire from "./ClientWire.ts"

/** BDAT chunk size when none is given. */
export const DEFAULT_CHUNK_SIZE = 256 * 1024

/** A recipient with its RCPT TO parameters. */
export interface Recipient {
  readonly address: string
  readonly options?: MailOptions.RcptOptions | undefined
}

/** A message and its envelope, for `send`. */
export interface Message<E = never, R = never> {
  /** The reverse-path; `null` sends `MAIL FROM:<>` (bounces, DSNs). */
  readonly from: string | null
  readonly to: string | Recipient | ReadonlyArray<string | Recipient>
  /** The whole message (headers and body). Line endings are normalised to CRLF unless BODY=BINARYMIME. */
  readonly body: ClientBody.Body<E, R>
  /**
   * MAIL FROM parameters. SIZE is filled in for a body in memory, BODY=8BITMIME when it has
   * 8-bit bytes and the server offers it, SMTPUTF8 when an address is non-ASCII.
   */
  readonly mailOptions?: MailOptions.MailOptions | undefined
  /**
   * `"data"`, `"bdat"` (CHUNKING), or `"auto"` (the default): BDAT for BODY=BINARYMIME, which
   * needs it, DATA otherwise.
   */
  readonly transfer?: "auto" | "data" | "bdat" | undefined
  /** BDAT chunk size in bytes. Default 256 KiB. */
  readonly chunkSize?: number | undefined
}

/** A recipient the server accepted: its RCPT reply (SMTP) or its reply after the message (LMTP). */
export interface AcceptedRecipient {
  readonly recipient: string
  readonly reply: Reply
}

export interface SendResult {
  readonly accepted: ReadonlyArray<AcceptedRecipient>
  /** Recipients refused at RCPT, or (LMTP) after the message; the message still went to the others. */
  readonly rejected: ReadonlyArray<RejectedRecipient>
  /** The reply that accepted the message (LMTP: the first recipient's). */
  readonly reply: Reply
}

/** LMTP: what happened to the message for one recipient. */
export interface LmtpStatus {
  readonly recipient: string
  readonly reply: Reply
  /** Set when the reply is negative. */
  readonly error: SmtpError | undefined
}

/** A connected SMTP or LMTP client. Operations run one at a time, in call order. */
export interface SmtpClient {
  /** The server's 220 greeting. */
  readonly greeting: Reply
  readonly lmtp: boolean
  /** EHLO keywords (upper case) and their parameters, from the latest hello. Empty after HELO. */
  readonly extensions: () => ReadonlyMap<string, string>
  /** The parameters of an EHLO keyword ("" when it has none); `undefined` when not offered. */
  readonly extension: (name: string) => string | undefined
  /** SIZE's limit in bytes, when the server states one. */
  readonly maxMessageSize: () => number | undefined
  /** The AUTH mechanisms offered, upper case. */
  readonly authMechanisms: () => ReadonlyArray<string>
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
  readonly mail: (from: string | null, options?: MailOptions.MailOptions) => Effect.Effect<Reply, ClientError>
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

interface Transaction {
  readonly smtputf8: boolean
  readonly binary: boolean
  readonly accepted: Array<string>
}

const is2xx = (code: number) => code >= 200 && code < 300

/** Errors after which the conversation cannot go on. */
const isFatal = (e: unknown): e is TransportError | SmtpProtocolError | SmtpError =>
  e instanceof TransportError || e instanceof SmtpProtocolError || (e instanceof SmtpError && e.code === 421)

const unexpected = (reply: Reply, what: string) =>
  new SmtpProtocolError({ reason: "UnexpectedReply", message: `unexpected reply to ${what}: ${reply.code} ${reply.text}`, reply })

/** `ok` codes succeed; a negative reply is its SmtpError; anything else breaks the protocol. */
const expect = (reply: Reply, ok: (code: number) => boolean, what: string): Effect.Effect<Reply, SmtpError | SmtpProtocolError> =>
  ok(reply.code)
    ? Effect.succeed(reply)
    : reply.code >= 400
    ? Effect.fail(SmtpError.fromReply(reply))
    : Effect.fail(unexpected(reply, what))

const recipientsOf = (to: Message["to"]): ReadonlyArray<Recipient> => {
  const list = typeof to === "string" || !Array.isArray(to) ? [to as string | Recipient] : to as ReadonlyArray<string | Recipient>
  return list.map((r) => (typeof r === "string" ? { address: r } : r))
}

const checkChunkSize = (size: number | undefined): Result.Result<number, SmtpClientError> => {
  const n = size ?? DEFAULT_CHUNK_SIZE
  return Number.isSafeInteger(n) && n > 0 ? Result.succeed(n) : Result.fail(invalidArgument("the BDAT chunk size must be a positive integer"))
}

const bdatHeader = (chunk: ClientBody.Chunk) => `BDAT ${chunk.bytes.length}${chunk.last ? " LAST" : ""}\r\n`

const textEncoder = new TextEncoder()

const withPrefix = (prefix: string, bytes: Uint8Array): Uint8Array => {
  const head = textEncoder.encode(prefix)
  const out = new Uint8Array(head.length + bytes.length)
  out.set(head, 0)
  out.set(bytes, head.length)
  return out
}

const isCredentials = (input: AuthInput): input is Sasl.Credentials => !Array.isArray(input) && "_tag" in input

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
    const t = config.timeouts
    const lock = yield* Semaphore.make(1)
    let localName = config.localName
    let greeting: Reply | undefined
    let extensions: Envelope.Extensions = new Map()
    let authenticatedWith: string | undefined
    let tx: Transaction | undefined
    let broken: ClientError | undefined
    let closed = false
    let progress = 0

    const breakWith = (e: ClientError) =>
      Effect.suspend(() => {
        broken ??= e
        return transport.close
      })

    /** Runs one operation: one at a time, refused once the connection is gone, breaking it on fatal errors. */
    const op = <A, E, R>(eff: Effect.Effect<A, E, R>): Effect.Effect<A, E | ClientError, R> =>
      lock.withPermits(1)(Effect.suspend((): Effect.Effect<A, E | ClientError, R> => {
        if (closed) return Effect.fail(new SmtpClientError({ reason: "Closed", message: "the client has quit" }))
        if (broken !== undefined) return Effect.fail(broken)
        return eff.pipe(
          Effect.tapError((e) => (isFatal(e) ? breakWith(e) : Effect.void)),
          Effect.onInterrupt(() =>
            breakWith(new TransportError({ reason: "Closed", message: "the client was interrupted during an exchange" }))
          )
        )
      }))

    const reply = (timeout: typeof t.command, what: string) =>
      Effect.tap(wire.reply(timeout, what), (r) =>
        Effect.sync(() => {
          if (r.code !== 421) progress++
        }))

    const command = (line: string, timeout: typeof t.command, what: string, shown?: string) =>
      Effect.suspend((): Effect.Effect<Reply, ClientError> => {
        const checked = Wire.commandLine(line)
        if (Result.isFailure(checked)) return Effect.fail(checked.failure)
        return Effect.andThen(wire.write(checked.success, timeout, shown), reply(timeout, what))
      })

    /** RSET after an abandoned transaction; only a failure that ends the connection matters. */
    const resetQuietly = Effect.suspend(() => {
      tx = undefined
      return command("RSET", t.command, "RSET").pipe(
        Effect.flatMap((r) => expect(r, is2xx, "RSET")),
        Effect.catchIf((e) => !isFatal(e), () => Effect.void),
        Effect.asVoid
      )
    })

    // --- hello, STARTTLS, AUTH ---

    const hello = (name: string): Effect.Effect<Reply, ClientError> =>
      Effect.gen(function*() {
        yield* Effect.fromResult(Envelope.checkLocalName(name))
        localName = name
        tx = undefined
        if (config.lmtp) {
          const r = yield* command(`LHLO ${name}`, t.command, "LHLO").pipe(Effect.flatMap((r) => expect(r, is2xx, "LHLO")))
          extensions = Envelope.parseExtensions(r)
          return r
        }
        const r = yield* command(`EHLO ${name}`, t.command, "EHLO")
        if (r.code === 500 || r.code === 502) {
          const h = yield* command(`HELO ${name}`, t.command, "HELO").pipe(Effect.flatMap((h) => expect(h, is2xx, "HELO")))
          extensions = new Map()
          return h
        }
        yield* expect(r, is2xx, "EHLO")
        extensions = Envelope.parseExtensions(r)
        return r
      })

    /**
     * True when the connection is now encrypted; false when opportunistic STARTTLS was not
     * possible. Where `security` requires it, a server that does not offer it or refuses it is a
     * TLS failure (the connection is dropped, nothing more is sent in plaintext), not a refusal.
     */
    const startTls = (options: TlsClientOptions, policy: "required" | "opportunistic" | "asked"): Effect.Effect<boolean, ClientError> =>
      Effect.gen(function*() {
        if (transport.tls() !== undefined) return yield* unsupported("the connection is already encrypted")
        const tlsRequired = (why: string) => new TransportError({ reason: "Tls", message: `STARTTLS is required, but ${why}` })
        if (!extensions.has("STARTTLS")) {
          if (policy === "opportunistic") return false
          if (policy === "required") return yield* tlsRequired("the server does not offer it")
          return yield* unsupported("the server does not offer STARTTLS")
        }
        const r = yield* command("STARTTLS", t.command, "STARTTLS")
        if (r.code !== 220) {
          if (policy === "opportunistic" && r.code >= 400 && r.code !== 421) return false
          if (policy === "required" && r.code !== 421) return yield* tlsRequired(`the server refused it: ${r.code} ${r.text}`)
          yield* expect(r, (code) => code === 220, "STARTTLS")
        }
        // RFC 3207 5: whatever arrived in plaintext after the 220 could only be injected.
        const injected = wire.discardBuffered()
        if (injected > 0) {
          return yield* new SmtpProtocolError({
            reason: "TlsInjection",
            message: `the server sent ${injected} bytes after its 220 to STARTTLS, before the TLS handshake`
          })
        }
        yield* transport.upgradeTls({ role: "client", tls: options }).pipe(Effect.timeoutOrElse({
          duration: t.tlsHandshake,
          orElse: () => Effect.fail(new TransportError({ reason: "Timeout", message: "TLS handshake timed out" }))
        }))
        // Nothing learnt in plaintext is kept (RFC 3207 4.2).
        extensions = new Map()
        authenticatedWith = undefined
        yield* hello(localName)
        return true
      })

    const authFailure = (e: Sasl.SaslError): ClientError =>
      e.reason === "InvalidCredentials"
        ? invalidArgument(`cannot authenticate with ${e.mechanism ?? "SASL"}: ${e.message}`)
        : new SmtpProtocolError({ reason: "AuthExchange", message: e.message, cause: e })

    /** RFC 4954 4: an AUTH line stays within SMTP's 512 octets, else the response waits for a 334. */
    const MAX_AUTH_LINE = 512

    const exchange = (mechanism: Sasl.ClientMechanism): Effect.Effect<void, ClientError> =>
      Effect.gen(function*() {
        const sasl = yield* Effect.mapError(mechanism.client, authFailure)
        const initial = yield* Effect.mapError(sasl.start, authFailure)
        let withheld: Uint8Array | undefined
        let line = `AUTH ${mechanism.name}`
        if (initial !== undefined) {
          const encoded = initial.length === 0 ? "=" : Sasl.encodeBase64(initial)
          if (line.length + 1 + encoded.length + 2 <= MAX_AUTH_LINE) line += ` ${encoded}`
          else withheld = initial
        }
        // On a failure of our side mid-exchange, "*" cancels it and the server answers 501.
        const cancel = (error: ClientError) =>
          command("*", t.command, "AUTH cancellation").pipe(Effect.andThen(Effect.fail(error)))
        const shown = withheld === undefined && initial !== undefined ? `AUTH ${mechanism.name} <redacted>` : line
        let r = yield* command(line, t.command, "AUTH", shown)
        while (r.code === 334) {
          let response: Uint8Array
          if (withheld !== undefined) {
            response = withheld
            withheld = undefined
          } else {
            const challenge = Sasl.decodeBase64(r.lines[0].trim())
            if (Result.isFailure(challenge)) {
              return yield* cancel(new SmtpProtocolError({ reason: "AuthExchange", message: "AUTH challenge is not base64", reply: r }))
            }
            const next = yield* Effect.result(sasl.next(challenge.success))
            if (Result.isFailure(next)) return yield* cancel(authFailure(next.failure))
            response = next.success
          }
          r = yield* command(Sasl.encodeBase64(response), t.command, "AUTH response", "<redacted>")
        }
        yield* expect(r, (code) => code === 235, "AUTH")
        // SCRAM: a server that did not prove it knows the password is not trusted.
        yield* Effect.mapError(sasl.finish(), authFailure)
        authenticatedWith = mechanism.name
      })

    const auth = (input: AuthInput, allowInsecure: boolean): Effect.Effect<void, ClientError> =>
      Effect.suspend(() => {
        const checked = Config.checkAuth(input)
        if (Result.isFailure(checked)) return Effect.fail(checked.failure)
        const offered = Envelope.authMechanisms(extensions)
        if (offered.length === 0) return Effect.fail(unsupported("the server does not offer AUTH"))
        const candidates: ReadonlyArray<Sasl.ClientMechanism> = isCredentials(input)
          ? Sasl.clientMechanisms(input)
          : Array.isArray(input)
          ? input
          : [input as Sasl.ClientMechanism]
        const secure = transport.tls() !== undefined
        const chosen = Sasl.choose(offered, candidates, { secure, allowInsecure })
        if (chosen !== undefined) return exchange(chosen)
        if (Sasl.choose(offered, candidates, { secure: true }) !== undefined) {
          return Effect.fail(new SmtpClientError({
            reason: "InsecureAuth",
            message: "the mechanisms the server offers would send the secret without TLS (allowInsecureAuth permits it)"
          }))
        }
        return Effect.fail(unsupported(`no mechanism fits both the credentials and the server (${offered.join(" ")})`))
      })

    // --- transactions ---

    const mail = (from: string | null, options: MailOptions.MailOptions): Effect.Effect<Reply, ClientError> =>
      Effect.gen(function*() {
        const m = yield* Effect.fromResult(Envelope.mailCommand(from, options, extensions))
        const r = yield* Effect.andThen(wire.write(m.line, t.mail), reply(t.mail, "MAIL FROM"))
        yield* expect(r, is2xx, "MAIL FROM")
        tx = { smtputf8: m.smtputf8, binary: m.binary, accepted: [] }
        return r
      })

    const rcpt = (to: string, options: MailOptions.RcptOptions): Effect.Effect<Reply, ClientError> =>
      Effect.gen(function*() {
        const c = yield* Effect.fromResult(Envelope.rcptCommand(to, options, extensions, tx?.smtputf8 ?? false))
        const r = yield* Effect.andThen(wire.write(c.line, t.rcpt), reply(t.rcpt, "RCPT TO"))
        yield* expect(r, is2xx, "RCPT TO")
        tx?.accepted.push(c.address)
        return r
      })

    /** The replies after the final dot or the last chunk: one (SMTP), or one per accepted recipient (LMTP). */
    const finalReplies = (count: number, first?: Reply): Effect.Effect<ReadonlyArray<Reply>, ClientError> =>
      Effect.gen(function*() {
        const out: Array<Reply> = first === undefined ? [] : [first]
        const n = config.lmtp ? Math.max(count, 1) : 1
        while (out.length < n) {
          const r = yield* reply(t.dataTermination, "the message")
          if (r.code === 421) return yield* SmtpError.fromReply(r)
          out.push(r)
        }
        tx = undefined
        return out
      })

    /** The body after a 354. A body that fails half-way cannot be ended cleanly: the connection is closed. */
    const dataBody = <E, R>(body: ClientBody.Body<E, R>, recipients: number) =>
      ClientBody.writeDataBody(body, wire.write, t.dataBlock).pipe(
        Effect.tapError((e) =>
          breakWith(isFatal(e) ? e : new TransportError({
            reason: "Closed",
            message: "the message body failed; the connection was closed so that no partial message is delivered"
          }))
        ),
        Effect.andThen(finalReplies(recipients))
      )

    /**
     * Sends BDAT chunks until the last. `sent` chunks went out already (pipelined). A negative
     * reply to a chunk, or a body failing between chunks, abandons the transaction with RSET.
     */
    const bdatChunks = <E, R>(
      next: Effect.Effect<ClientBody.Chunk, E, R>,
      recipients: number,
      sent: number
    ): Effect.Effect<ReadonlyArray<Reply>, ClientError | E, R> =>
      Effect.gen(function*() {
        let chunks = sent
        while (true) {
          const chunk = yield* next.pipe(Effect.tapError(() => (chunks > 0 ? resetQuietly : Effect.void)))
          const header = bdatHeader(chunk)
          yield* wire.write(withPrefix(header, chunk.bytes), t.dataBlock, `${header.trim()} <${chunk.bytes.length} bytes>`)
          chunks++
          if (chunk.last) return yield* finalReplies(recipients)
          const r = yield* reply(t.dataBlock, "BDAT")
          if (r.code >= 400 && r.code !== 421) {
            yield* resetQuietly
            return yield* SmtpError.fromReply(r)
          }
          yield* expect(r, is2xx, "BDAT")
        }
      })

    const dataCommand = Effect.gen(function*() {
      if (tx?.binary === true) return yield* invalidArgument("BODY=BINARYMIME needs BDAT")
      const r = yield* command("DATA", t.dataInitiation, "DATA")
      yield* expect(r, (code) => code === 354, "DATA")
    })

    /** SMTP: the single final reply, positive or the transaction's error. */
    const smtpFinal = (replies: ReadonlyArray<Reply>) => expect(replies[0]!, is2xx, "the message")

    const lmtpStatuses = (recipients: ReadonlyArray<string>, replies: ReadonlyArray<Reply>) =>
      Effect.forEach(recipients, (recipient, i): Effect.Effect<LmtpStatus, SmtpProtocolError> => {
        const r = replies[i]!
        if (is2xx(r.code)) return Effect.succeed({ recipient, reply: r, error: undefined })
        if (r.code >= 400) return Effect.succeed({ recipient, reply: r, error: SmtpError.fromReply(r) })
        return Effect.fail(unexpected(r, "the message"))
      })

    const chunkerFor = <E, R>(body: ClientBody.Body<E, R>, chunkSize: number | undefined, binary: boolean) =>
      Effect.gen(function*() {
        if (!extensions.has("CHUNKING")) return yield* unsupported("the server does not offer CHUNKING (BDAT)")
        const size = yield* Effect.fromResult(checkChunkSize(chunkSize))
        return yield* ClientBody.chunker(body, { size, binary })
      })

    const data = <E, R>(body: ClientBody.Body<E, R>) =>
      Effect.gen(function*() {
        if (config.lmtp) return yield* unsupported("an LMTP client sends the message with lmtpData")
        yield* dataCommand
        return yield* smtpFinal(yield* dataBody(body, 1))
      })

    const bdat = <E, R>(body: ClientBody.Body<E, R>, chunkSize: number | undefined) =>
      Effect.scoped(Effect.gen(function*() {
        if (config.lmtp) return yield* unsupported("an LMTP client sends the message with lmtpData")
        const next = yield* chunkerFor(body, chunkSize, tx?.binary === true)
        return yield* smtpFinal(yield* bdatChunks(next, 1, 0))
      }))

    const lmtpData = <E, R>(body: ClientBody.Body<E, R>, chunking: boolean, chunkSize: number | undefined) =>
      Effect.scoped(Effect.gen(function*() {
        if (!config.lmtp) return yield* unsupported("lmtpData is for LMTP clients; use data or bdat")
        const recipients = [...(tx?.accepted ?? [])]
        if (recipients.length === 0) return yield* invalidArgument("no recipient of this transaction was accepted")
        let replies: ReadonlyArray<Reply>
        if (chunking) {
          replies = yield* bdatChunks(yield* chunkerFor(body, chunkSize, tx?.binary === true), recipients.length, 0)
        } else {
          yield* dataCommand
          replies = yield* dataBody(body, recipients.length)
        }
        return yield* lmtpStatuses(recipients, replies)
      }))

    // --- send: the whole transaction ---

    /** How the server took the envelope. */
    interface Outcome {
      mailError: SmtpError | undefined
      readonly accepted: Array<AcceptedRecipient>
      readonly rejected: Array<RejectedRecipient>
    }

    /** Files a RCPT reply under accepted or rejected; a 421 or an odd reply ends the conversation. */
    const recipientReply = (e: Outcome, c: Envelope.RcptCommand, r: Reply) =>
      Effect.gen(function*() {
        if (r.code === 421) return yield* SmtpError.fromReply(r)
        if (r.code >= 400) e.rejected.push({ recipient: c.address, error: SmtpError.fromReply(r) })
        else e.accepted.push({ recipient: c.address, reply: yield* expect(r, is2xx, "RCPT TO") })
      })

    /** Reads the replies to MAIL and each RCPT (pipelined). */
    const envelopeReplies = (rcpts: ReadonlyArray<Envelope.RcptCommand>, mailReply: Reply) =>
      Effect.gen(function*() {
        const out: Outcome = { mailError: undefined, accepted: [], rejected: [] }
        if (mailReply.code === 421) return yield* SmtpError.fromReply(mailReply)
        if (mailReply.code >= 400) out.mailError = SmtpError.fromReply(mailReply)
        else yield* expect(mailReply, is2xx, "MAIL FROM")
        for (const c of rcpts) yield* recipientReply(out, c, yield* reply(t.rcpt, "RCPT TO"))
        return out
      })

    /** Ends a transaction that cannot carry a message: MAIL refused, or every recipient. */
    const abandon = (e: Outcome) =>
      Effect.gen(function*() {
        if (e.mailError !== undefined) return yield* e.mailError
        yield* resetQuietly
        return yield* RecipientsRefused.of(e.rejected)
      })

    /** A 354 that should not have come (no recipient): send an empty message to no one, then go on. */
    const swallowData = Effect.gen(function*() {
      yield* wire.write(".\r\n", t.dataBlock)
      const r = yield* reply(t.dataTermination, "the message")
      if (r.code === 421) return yield* SmtpError.fromReply(r)
    })

    const result = (e: Outcome, replies: ReadonlyArray<Reply>) =>
      Effect.gen(function*() {
        if (!config.lmtp) {
          const final = yield* smtpFinal(replies)
          return { accepted: e.accepted, rejected: e.rejected, reply: final } satisfies SendResult
        }
        const statuses = yield* lmtpStatuses(e.accepted.map((a) => a.recipient), replies)
        const accepted: Array<AcceptedRecipient> = []
        const rejected: Array<RejectedRecipient> = [...e.rejected]
        for (const s of statuses) {
          if (s.error === undefined) accepted.push({ recipient: s.recipient, reply: s.reply })
          else rejected.push({ recipient: s.recipient, error: s.error })
        }
        if (accepted.length === 0) return yield* RecipientsRefused.of(rejected)
        return { accepted, rejected, reply: accepted[0]!.reply } satisfies SendResult
      })

    const send = <E, R>(message: Message<E, R>): Effect.Effect<SendResult, ClientError | RecipientsRefused | E, R> =>
      Effect.scoped(Effect.gen(function*() {
        const recipients = recipientsOf(message.to)
        if (recipients.length === 0) return yield* invalidArgument("a message needs at least one recipient")
        const bytes = ClientBody.bytesOf(message.body)
        // A string body is encoded once, here.
        const body: ClientBody.Body<E, R> = bytes ?? message.body
        const options: { -readonly [K in keyof MailOptions.MailOptions]: MailOptions.MailOptions[K] } = {
          ...message.mailOptions
        }
        const binary = options.body === "BINARYMIME"
        const bdat = message.transfer === "bdat" || binary
        if (bytes !== undefined) {
          // One pass over the body for both, when both are needed.
          const eightBitMime = options.body === undefined && extensions.has("8BITMIME")
          if (options.size === undefined && !binary) {
            const facts = ClientBody.inspect(bytes, { finalCrlf: !bdat })
            options.size = facts.size
            if (eightBitMime && facts.eightBit) options.body = "8BITMIME"
          } else {
            if (options.size === undefined) options.size = bytes.length
            if (eightBitMime && ClientBody.hasEightBit(bytes)) options.body = "8BITMIME"
          }
        }
        if (recipients.some((r) => Address.isUtf8(r.address))) options.smtputf8 = true
        // Every line is built and checked before the first byte is sent.
        const m = yield* Effect.fromResult(Envelope.mailCommand(message.from, options, extensions))
        const rcpts: Array<Envelope.RcptCommand> = []
        for (const r of recipients) {
          rcpts.push(yield* Effect.fromResult(Envelope.rcptCommand(r.address, r.options ?? {}, extensions, m.smtputf8)))
        }
        const transfer = message.transfer ?? "auto"
        if (m.binary && transfer === "data") return yield* invalidArgument("BODY=BINARYMIME needs BDAT")
        tx = undefined
        const next = transfer === "bdat" || m.binary
          ? yield* chunkerFor(body, message.chunkSize, m.binary)
          : undefined
        const envelope = m.line + rcpts.map((c) => c.line).join("")

        if (!extensions.has("PIPELINING")) {
          const mr = yield* Effect.andThen(wire.write(m.line, t.mail), reply(t.mail, "MAIL FROM"))
          yield* expect(mr, is2xx, "MAIL FROM")
          tx = { smtputf8: m.smtputf8, binary: m.binary, accepted: [] }
          const e: Outcome = { mailError: undefined, accepted: [], rejected: [] }
          for (const c of rcpts) {
            const r = yield* Effect.andThen(wire.write(c.line, t.rcpt), reply(t.rcpt, "RCPT TO"))
            yield* recipientReply(e, c, r)
          }
          if (e.accepted.length === 0) return yield* abandon(e)
          const count = e.accepted.length
          if (next !== undefined) return yield* result(e, yield* bdatChunks(next, count, 0))
          const d = yield* command("DATA", t.dataInitiation, "DATA")
          if (d.code >= 400 && d.code !== 421) {
            yield* resetQuietly
            return yield* SmtpError.fromReply(d)
          }
          yield* expect(d, (code) => code === 354, "DATA")
          return yield* result(e, yield* dataBody(body, count))
        }

        // PIPELINING (RFC 2920): MAIL, every RCPT and DATA (or the first BDAT chunk) in one write.
        const first = next === undefined ? undefined : yield* next
        yield* first === undefined
          ? wire.write(envelope + "DATA\r\n", t.mail)
          : wire.write(
            withPrefix(envelope + bdatHeader(first), first.bytes),
            t.mail,
            `${envelope}${bdatHeader(first)}`.replace(/\r\n$/, "").split("\r\n").join(" | ") + ` <${first.bytes.length} bytes>`
          )
        const e = yield* Effect.flatMap(reply(t.mail, "MAIL FROM"), (r) => envelopeReplies(rcpts, r))
        tx = e.mailError === undefined ? { smtputf8: m.smtputf8, binary: m.binary, accepted: [] } : undefined
        const count = e.accepted.length
        const usable = e.mailError === undefined && count > 0

        if (first === undefined) {
          const d = yield* reply(t.dataInitiation, "DATA")
          if (d.code === 421) return yield* SmtpError.fromReply(d)
          if (!usable) {
            if (d.code === 354) yield* swallowData
            return yield* abandon(e)
          }
          if (d.code >= 400) {
            yield* resetQuietly
            return yield* SmtpError.fromReply(d)
          }
          yield* expect(d, (code) => code === 354, "DATA")
          return yield* result(e, yield* dataBody(body, count))
        }

        const b = yield* reply(first.last ? t.dataTermination : t.dataBlock, "BDAT")
        if (b.code === 421) return yield* SmtpError.fromReply(b)
        if (!usable) return yield* abandon(e)
        if (first.last) return yield* result(e, yield* finalReplies(count, b))
        if (b.code >= 400) {
          yield* resetQuietly
          return yield* SmtpError.fromReply(b)
        }
        yield* expect(b, is2xx, "BDAT")
        return yield* result(e, yield* bdatChunks(next!, count, 1))
      }))

    // --- the rest ---

    const verify = (address: string) =>
      Effect.gen(function*() {
        if (address.trim() !== address || address === "") return yield* invalidArgument("VRFY needs a non-empty argument")
        const r = yield* command(`VRFY ${address}`, t.command, "VRFY")
        return yield* expect(r, is2xx, "VRFY")
      })

    const simple = (verb: "NOOP" | "RSET") =>
      Effect.gen(function*() {
        const r = yield* command(verb, t.command, verb)
        if (verb === "RSET") tx = undefined
        return yield* expect(r, is2xx, verb)
      })

    const quitWith = (timeout: typeof t.quit) =>
      command("QUIT", timeout, "QUIT").pipe(
        Effect.flatMap((r) => expect(r, is2xx, "QUIT")),
        Effect.ensuring(Effect.suspend(() => {
          closed = true
          return transport.close
        })),
        Effect.asVoid
      )

    // Closing the scope: QUIT when the conversation allows it, then close whatever happens.
    yield* Effect.addFinalizer(() =>
      lock.withPermitsIfAvailable(1)(Effect.suspend(() =>
        closed || broken !== undefined ? Effect.void : quitWith(t.quit).pipe(Effect.ignore)
      )).pipe(Effect.andThen(transport.close))
    )

    // Set up: greeting, hello, STARTTLS, hello again, AUTH.
    yield* op(Effect.gen(function*() {
      if (config.security === "implicit" && transport.tls() === undefined) {
        return yield* invalidArgument("implicit TLS was asked for, but the connection is not encrypted")
      }
      const g = yield* reply(t.greeting, "the connection (greeting)")
      greeting = yield* expect(g, (code) => code === 220, "the connection (greeting)")
      yield* hello(localName)
      if (config.security === "starttls" || config.security === "opportunistic") {
        yield* startTls(config.tls, config.security === "opportunistic" ? "opportunistic" : "required")
      }
      if (config.auth !== undefined) yield* auth(config.auth, config.allowInsecureAuth)
    }))

    const client: PooledClient = {
      greeting: greeting!,
      lmtp: config.lmtp,
      extensions: () => extensions,
      extension: (name) => extensions.get(name.toUpperCase()),
      maxMessageSize: () => Envelope.maxMessageSize(extensions),
      authMechanisms: () => Envelope.authMechanisms(extensions),
      supportsAuth: (mechanism) => Envelope.authMechanisms(extensions).includes(mechanism.toUpperCase()),
      tls: () => transport.tls(),
      authenticatedWith: () => authenticatedWith,
      isOpen: () => !closed && broken === undefined,
      progress: () => progress,
      hello: (name) => op(hello(name ?? localName)),
      startTls: (options) => op(Effect.asVoid(startTls({ ...config.tls, ...options }, "asked"))),
      auth: (input, options) => op(auth(input, options?.allowInsecure ?? config.allowInsecureAuth)),
      mail: (from, options) => op(mail(from, options ?? {})),
      rcpt: (to, options) => op(rcpt(to, options ?? {})),
      data: (body) => op(data(body)),
      bdat: (body, options) => op(bdat(body, options?.chunkSize)),
      lmtpData: (body, options) => op(lmtpData(body, options?.chunking === true, options?.chunkSize)),
      send: (message) => op(send(message)),
      verify: (address) => op(verify(address)),
      noop: op(simple("NOOP")),
      reset: op(simple("RSET")),
      quit: op(quitWith(t.command))
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
