/**
 * The state of one client connection and the steps every command is made of: write a line,
 * read a reply, check it, and end the connection when a failure leaves the conversation in
 * an unknown state.
 *
 * The steps do their work when called, not when run: a write goes to the socket at once, a
 * reply already buffered is parsed at once, and both give an `Exit` when there was nothing to
 * wait for. Operations are chains of such steps, and `chain` follows an `Exit` without going
 * through the runtime. `op` runs an operation's first step only once it holds the lock.
 */
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import type { Reply } from "../../Reply.ts"
import { SmtpError } from "../../SmtpError.ts"
import { type Transport, TransportError } from "../../Transport.ts"
import type { ResolvedClientConfig, ResolvedTimeouts } from "./Config.ts"
import { CheckedAddresses, type Extensions } from "./Envelope.ts"
import { type ClientError, SmtpClientError, SmtpProtocolError } from "./Errors.ts"
import { OperationLock } from "./OperationLock.ts"
import * as Wire from "./Wire.ts"
import { exitOf } from "./Wire.ts"

/** The open transaction: what MAIL FROM set, and the recipients accepted so far. */
export interface Transaction {
  readonly smtputf8: boolean
  readonly binary: boolean
  readonly accepted: Array<string>
}

export const is2xx = (code: number) => code >= 200 && code < 300

/** Errors after which the conversation cannot go on. */
export const isFatal = (e: unknown): e is TransportError | SmtpProtocolError | SmtpError =>
  e instanceof TransportError || e instanceof SmtpProtocolError || (e instanceof SmtpError && e.code === 421)

export const unexpected = (reply: Reply, what: string) =>
  new SmtpProtocolError({ reason: "UnexpectedReply", message: `unexpected reply to ${what}: ${reply.code} ${reply.text}`, reply })

/** `ok` codes succeed; a negative reply is its SmtpError; anything else breaks the protocol. */
export const expect = (reply: Reply, ok: (code: number) => boolean, what: string): Exit.Exit<Reply, SmtpError | SmtpProtocolError> =>
  ok(reply.code)
    ? Exit.succeed(reply)
    : reply.code >= 400
    ? Exit.fail(SmtpError.fromReply(reply))
    : Exit.fail(unexpected(reply, what))

export { exitOf } from "./Wire.ts"

/** A failed `Exit`, as the failure of any type. */
export const failure = <E>(exit: Exit.Failure<unknown, E>): Exit.Exit<never, E> => exit as unknown as Exit.Exit<never, E>

/** `f` after `eff`: at once when `eff` is an `Exit` already, through the runtime otherwise. */
export const chain = <A, E, R, B, E2, R2>(
  eff: Effect.Effect<A, E, R>,
  f: (a: A) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, E | E2, R | R2> => {
  const done = exitOf(eff)
  if (done === undefined) return Effect.flatMap(eff, f)
  return Exit.isSuccess(done) ? f(done.value) : failure(done)
}

const closedClient = () => new SmtpClientError({ reason: "Closed", message: "the client has quit" })
const interrupted = () =>
  new TransportError({ reason: "Closed", message: "the client was interrupted during an exchange" })

export class Session {
  readonly t: ResolvedTimeouts
  readonly lmtp: boolean
  localName: string
  extensions: Extensions = new Map()
  readonly addresses = new CheckedAddresses()
  authenticatedWith: string | undefined
  tx: Transaction | undefined
  /** The first error that ended the conversation. */
  broken: ClientError | undefined
  /** QUIT was said (or tried). */
  closed = false
  private readonly lock = new OperationLock()
  readonly transport: Transport
  readonly wire: Wire.Wire
  readonly config: ResolvedClientConfig

  constructor(transport: Transport, wire: Wire.Wire, config: ResolvedClientConfig) {
    this.transport = transport
    this.wire = wire
    this.config = config
    this.t = config.timeouts
    this.lmtp = config.protocol === "lmtp"
    this.localName = config.localName
  }

  /** Ends the conversation with `e` (the first such error is kept). */
  breakWith(e: ClientError): Effect.Effect<void> {
    this.broken ??= e
    return this.transport.close
  }

  /**
   * Runs one operation: one at a time, refused once the connection is gone, ending the
   * connection on fatal errors and on interruption. `run` starts once the lock is held.
   */
  op<A, E, R>(run: () => Effect.Effect<A, E, R>): Effect.Effect<A, E | ClientError, R> {
    return this.lock.run((): Effect.Effect<A, E | ClientError, R> => {
      if (this.closed) return Exit.fail(closedClient())
      if (this.broken !== undefined) return Exit.fail(this.broken)
      return run()
    }, this.ended)
  }

  /** After an operation: a fatal failure or an interruption ends the conversation. */
  private readonly ended = (exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> | undefined => {
    if (Exit.isSuccess(exit)) return undefined
    const cause = exit.cause
    if (Cause.hasInterrupts(cause)) return this.breakWith(interrupted())
    const e = Cause.findErrorOption(cause)
    if (e._tag === "None") return undefined
    const error = e.value
    return isFatal(error) ? this.breakWith(error) : undefined
  }

  /** The next reply. */
  reply(timeout: Duration.Duration, what: string): Effect.Effect<Reply, TransportError | SmtpProtocolError> {
    return this.wire.reply(timeout, what)
  }

  /** Replies read so far that were not 421: unchanged across a failed send, nothing was done. */
  get progress(): number {
    return this.wire.progress()
  }

  /** Writes a line (CR, LF and NUL refused), then reads its reply. */
  command(line: string, timeout: Duration.Duration, what: string, shown?: string): Effect.Effect<Reply, ClientError> {
    const checked = Wire.commandLine(line)
    if (Result.isFailure(checked)) return Exit.fail(checked.failure)
    return chain(this.wire.send(checked.success, timeout, shown), () => this.reply(timeout, what))
  }

  /** A command whose reply must be one of `ok`. */
  expectCommand(line: string, ok: (code: number) => boolean, what: string): Effect.Effect<Reply, ClientError> {
    return chain(this.command(line, this.t.command, what), (r) => expect(r, ok, what))
  }

  /** RSET after an abandoned transaction; only a failure that ends the connection matters. */
  resetQuietly(): Effect.Effect<void, ClientError> {
    this.tx = undefined
    const reset = this.expectCommand("RSET", is2xx, "RSET")
    const done = exitOf(reset)
    if (done !== undefined) return Exit.isSuccess(done) || !isFatal(Cause.squash(done.cause)) ? Exit.void : failure(done)
    return Effect.catchIf(Effect.asVoid(reset), (e) => !isFatal(e), () => Effect.void)
  }

  has(keyword: string): boolean {
    return this.extensions.has(keyword)
  }

  /** QUIT, then close whatever the reply. */
  quit(timeout: Duration.Duration): Effect.Effect<void, ClientError> {
    return Effect.suspend(() => this.command("QUIT", timeout, "QUIT")).pipe(
      Effect.flatMap((r) => expect(r, is2xx, "QUIT")),
      Effect.ensuring(Effect.suspend(() => {
        this.closed = true
        return this.transport.close
      })),
      Effect.asVoid
    )
  }

  /**
   * Closing the scope: QUIT when the conversation allows it (and no operation holds the
   * lock), then close whatever happens.
   */
  finalize(): Effect.Effect<void> {
    return this.lock.ifFree(Effect.suspend(() =>
      this.closed || this.broken !== undefined ? Effect.void : this.quit(this.t.quit).pipe(Effect.ignore)
    )).pipe(Effect.andThen(this.transport.close))
  }
}
