/** STARTTLS (RFC 3207) and AUTH (RFC 4954) on the server side. */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import type * as Command from "../../Command.ts"
import type * as Sasl from "../../Sasl.ts"
import { TransportError } from "../../Transport.ts"
import type * as LineReader from "../codec/LineReader.ts"
import type { Conversation } from "./Conversation.ts"
import * as Metrics from "./Metrics.ts"
import { Close, type Step } from "./Step.ts"

/** RFC 4954 4: a SASL response line may be up to 12288 octets. */
export const AUTH_LINE_LENGTH = 12288

/**
 * The longest SASL response dropped to answer 500 5.5.6 and go on; a longer one is an attack,
 * answered like an over-long command line (500 5.5.2, closed), and never read much further.
 */
const AUTH_SKIP_LIMIT = 2 * AUTH_LINE_LENGTH

/** An over-long SASL response, dropped. */
const TOO_LONG = Symbol("TOO_LONG")

/**
 * The Sasl module, loaded by the first connection whose session offers AUTH (its mechanisms and
 * their cryptography cost a server that never authenticates about 5 MiB).
 */
export let sasl: typeof Sasl | undefined
export const loadSasl: Effect.Effect<typeof Sasl> = Effect.suspend(() =>
  sasl !== undefined ? Effect.succeed(sasl) : Effect.map(Effect.promise(() => import("../../Sasl.ts")), (m) => (sasl = m))
)

const timeoutError = (message: string) => new TransportError({ reason: "Timeout", message })

export function startTls(self: Conversation): Step {
  const c = self.c
  if (c.tls === undefined) return self.r.startTlsUnsupported
  if (self.transport.tls() !== undefined) return self.r.alreadyTls
  const tlsOptions = c.tls
  return Effect.gen(function*() {
    self.push(self.r.readyForTls)
    yield* self.flushEffect
    // RFC 3207 5: anything pipelined after STARTTLS was sent in plaintext: never act on it.
    const dropped = self.reader.discardBuffered()
    if (dropped > 0) yield* Effect.logWarning(`discarded ${dropped} plaintext bytes pipelined after STARTTLS`)
    const upgraded = yield* Effect.exit(
      self.transport.upgradeTls({ role: "server", tls: tlsOptions }).pipe(Effect.timeoutOrElse({
        duration: c.timeouts.tlsHandshake,
        orElse: () => Effect.fail(timeoutError("TLS handshake timed out"))
      }))
    )
    if (Exit.isFailure(upgraded)) {
      self.count(Metrics.tlsFailures, 1)
      yield* Effect.logInfo("STARTTLS handshake failed", upgraded.cause)
      return yield* Effect.fail(new Close(undefined))
    }
    self.count(Metrics.tlsUpgrades, 1)
    // The client starts over: forget everything learned in plaintext.
    yield* self.resetTransaction() ?? Effect.void
    self.helo = undefined
    self.extended = false
    self.pipelining = true
    self.authIdentity = undefined
    return undefined
  })
}

/**
 * Reads one SASL response line within the command timeout. An over-long one is read to its
 * end and dropped: the exchange fails (500 5.5.6) and the session goes on.
 */
const readAuthLine = (self: Conversation): Effect.Effect<string | typeof TOO_LONG, TransportError | LineReader.LineTooLong> =>
Effect.suspend(() => {
  self.watchdog.arm(self.commandTimeoutMillis, self.expireRead)
  return Effect.matchEffect(self.reader.readLine, {
    onSuccess: (line) => {
      self.watchdog.disarm()
      if (self.trace !== undefined) self.trace.push(line === "*" ? "C*" : "C<redacted>")
      return Effect.succeed(line)
    },
    onFailure: (e) =>
      e._tag === "LineTooLong"
        ? Effect.map(self.reader.skipLine(AUTH_SKIP_LIMIT), () => {
          self.watchdog.disarm()
          if (self.trace !== undefined) self.trace.push("C<redacted, too long>")
          return TOO_LONG
        })
        : Effect.fail(e)
  })
})

export function auth(self: Conversation, cmd: Command.Auth): Step {
  const r = self.r
  if (!self.extended) return r.ehloFirst
  if (self.authIdentity !== undefined) return r.authAlreadyDone
  if (self.tx !== undefined) return r.authDuringTransaction
  const mechanisms = self.session.auth
  if (mechanisms === undefined) return r.authUnsupported
  if (self.transport.tls() === undefined && !self.c.allowInsecureAuth) return r.authNeedsEncryption
  const fail = (e: Sasl.SaslError): string => {
    const err = sasl!.toSmtpError(e)
    if (err.code === 535) {
      self.authFailures++
      self.count(Metrics.authFailures, 1)
    }
    return r.error(err)
  }
  const decode = (text: string) => text === "=" ? Result.succeed(new Uint8Array(0)) : sasl!.decodeBase64(text)
  return Effect.gen(function*() {
    let input: Uint8Array | undefined
    if (cmd.initialResponse !== undefined) {
      const d = decode(cmd.initialResponse)
      if (d._tag === "Failure") return fail(d.failure)
      input = d.success
    }
    const mechanism = sasl!.startServer(mechanisms, cmd.mechanism, self.saslContext())
    let step = yield* Effect.result(mechanism.start(input))
    while (true) {
      if (step._tag === "Failure") return fail(step.failure)
      const s = step.success
      if (s._tag === "Success") {
        self.authIdentity = s.identity
        return r.authSucceeded
      }
      self.push(r.format(334, undefined, sasl!.encodeBase64(s.data)))
      yield* self.flushEffect
      const line = yield* readAuthLine(self)
      if (line === TOO_LONG || line.length > AUTH_LINE_LENGTH) return fail(sasl!.tooLong())
      if (line === "*") return fail(sasl!.cancelled())
      const d = decode(line)
      if (d._tag === "Failure") return fail(d.failure)
      step = yield* Effect.result(mechanism.next(d.success))
    }
  })
}
