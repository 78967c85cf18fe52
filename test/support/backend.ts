/**
 * A recording `Backend` for server tests: every session call is written to an event log,
 * bodies are collected, and each operation can be replaced to fail, die, stall or stop early.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type { Address } from "../../src/Address.ts"
import { Backend, Connection, type ConnectionInfo, type MessageBody, type Session } from "../../src/Backend.ts"
import type { MailOptions, RcptOptions } from "../../src/MailOptions.ts"
import type { SaslServerMechanisms } from "../../src/Sasl.ts"
import type { SmtpError } from "../../src/SmtpError.ts"

/** A body the default `data` read to its end. */
interface Message {
  readonly from: string | null
  readonly rcpts: ReadonlyArray<string>
  /** The body, one char per byte (latin1). */
  readonly body: string
  /** The connection's id, as the `Connection` service gave it during `data`. */
  readonly connection: string
}

export interface Recorder {
  /** "session", "mail:<from>", "rcpt:<to>", "data", "reset", "logout" in the order they happened. */
  readonly events: Array<string>
  /** Bodies read to a clean end (what a backend would store). */
  readonly messages: Array<Message>
  /** Bodies whose stream failed: what had arrived, and the failure. */
  readonly failedBodies: Array<{ readonly partial: string; readonly error: unknown }>
  /** Every ConnectionInfo a session was opened with. */
  readonly sessions: Array<ConnectionInfo>
  /** How many session finalizers ran. */
  readonly logouts: () => number
  /** MAIL options as the session received them. */
  readonly mailOptions: Array<MailOptions>
  readonly rcptOptions: Array<RcptOptions>
}

export interface BackendOptions {
  readonly newSession?: (info: ConnectionInfo) => Effect.Effect<void, unknown>
  readonly mail?: (from: Address | null, options: MailOptions) => Effect.Effect<void, unknown, Connection>
  readonly rcpt?: (to: Address, options: RcptOptions) => Effect.Effect<void, unknown, Connection>
  /** Replaces the default body handling (which reads everything and records it). */
  readonly data?: (body: MessageBody, rec: Recorder) => Effect.Effect<void, unknown, Connection>
  readonly lmtpData?: (
    body: MessageBody,
    recipients: ReadonlyArray<Address>,
    rec: Recorder
  ) => Effect.Effect<ReadonlyArray<SmtpError | undefined>, unknown, Connection>
  readonly auth?: SaslServerMechanisms
  /** Runs as the session finalizer, after "logout" is recorded. */
  readonly logout?: Effect.Effect<void>
}

const latin1 = (chunks: ReadonlyArray<Uint8Array>) => Buffer.concat(chunks).toString("latin1")

/** Reads a body to its end, recording it as a message or as a failed body. */
export const collect = (body: MessageBody, rec: Recorder, tx: { readonly from: string | null; readonly rcpts: ReadonlyArray<string> }) =>
  Effect.gen(function*() {
    const info = yield* Connection
    const chunks: Array<Uint8Array> = []
    yield* body.pipe(
      Stream.runForEach((c) => Effect.sync(() => void chunks.push(c.slice()))),
      Effect.tapError((error) => Effect.sync(() => rec.failedBodies.push({ partial: latin1(chunks), error })))
    )
    rec.messages.push({ from: tx.from, rcpts: [...tx.rcpts], body: latin1(chunks), connection: info.id })
  })

export const makeBackend = (options: BackendOptions = {}) => {
  let logouts = 0
  const rec: Recorder = {
    events: [],
    messages: [],
    failedBodies: [],
    sessions: [],
    logouts: () => logouts,
    mailOptions: [],
    rcptOptions: []
  }
  const layer = Layer.succeed(
    Backend,
    Backend.of({
      newSession: (info) =>
        Effect.gen(function*() {
          rec.events.push("session")
          rec.sessions.push(info)
          yield* Effect.addFinalizer(() =>
            Effect.andThen(
              Effect.sync(() => {
                logouts++
                rec.events.push("logout")
              }),
              options.logout ?? Effect.void
            )
          )
          if (options.newSession !== undefined) yield* options.newSession(info)
          const tx: { from: Address | null; rcpts: Array<Address> } = { from: null, rcpts: [] }
          const session: Session = {
            mail: (from, mailOptions) =>
              Effect.andThen(
                Effect.sync(() => {
                  rec.events.push(`mail:${from ?? ""}`)
                  rec.mailOptions.push(mailOptions)
                }),
                options.mail === undefined ? Effect.sync(() => {
                  tx.from = from
                  tx.rcpts = []
                }) : options.mail(from, mailOptions).pipe(Effect.tap(() =>
                  Effect.sync(() => {
                    tx.from = from
                    tx.rcpts = []
                  })
                ))
              ),
            rcpt: (to, rcptOptions) =>
              Effect.andThen(
                Effect.sync(() => {
                  rec.events.push(`rcpt:${to}`)
                  rec.rcptOptions.push(rcptOptions)
                }),
                (options.rcpt === undefined ? Effect.void : options.rcpt(to, rcptOptions)).pipe(
                  Effect.tap(() => Effect.sync(() => void tx.rcpts.push(to)))
                )
              ),
            data: (body) =>
              Effect.andThen(
                Effect.sync(() => void rec.events.push("data")),
                options.data === undefined ? collect(body, rec, tx) : options.data(body, rec)
              ),
            reset: Effect.sync(() => {
              rec.events.push("reset")
              tx.from = null
              tx.rcpts = []
            }),
            ...(options.lmtpData === undefined ? {} : {
              lmtpData: (body: MessageBody, recipients: ReadonlyArray<Address>) =>
                Effect.andThen(
                  Effect.sync(() => void rec.events.push("lmtpData")),
                  options.lmtpData!(body, recipients, rec)
                )
            }),
            ...(options.auth === undefined ? {} : { auth: options.auth })
          }
          return session
        })
    })
  )
  return { rec, layer }
}
