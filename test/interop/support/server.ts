/**
 * effect-smtp's server as the peers see it: `SmtpServer.layer` over the real network
 * (`NodeTransport.layer`) on port 0, with a backend that records every accepted message —
 * envelope, parameters, connection facts and the exact body bytes — so tests can compare
 * what a real client sent with what the server understood.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Address } from "../../../src/Address.ts"
import { Backend, type ConnectionInfo, type Session } from "../../../src/Backend.ts"
import type { MailOptions, RcptOptions } from "../../../src/MailOptions.ts"
import * as NodeTransport from "../../../src/NodeTransport.ts"
import * as Sasl from "../../../src/Sasl.ts"
import type { SmtpError } from "../../../src/SmtpError.ts"
import { layer, type ServerOptions, SmtpServer } from "../../../src/SmtpServer.ts"
import type { Endpoint, Network, TlsState, TransportError } from "../../../src/Transport.ts"
import { testCerts } from "../../support/certs.ts"

/** One message the backend accepted. */
export interface Received {
  readonly connection: string
  readonly helo: string | undefined
  readonly tls: TlsState | undefined
  readonly authenticatedAs: string | undefined
  readonly from: Address | null
  readonly mailOptions: MailOptions
  readonly rcpts: ReadonlyArray<{ readonly to: Address; readonly options: RcptOptions }>
  readonly body: Uint8Array
}

export interface Behaviour {
  /** RCPT: the error to refuse this recipient with, if any. */
  readonly rejectRcpt?: ((to: Address) => SmtpError | undefined) | undefined
  /** LMTP: the delivery result for this recipient (`undefined` = delivered). */
  readonly deliverTo?: ((to: Address) => SmtpError | undefined) | undefined
  /** AUTH: users and their passwords. PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256 are offered. */
  readonly users?: Readonly<Record<string, string>> | undefined
  /** Restricts and orders the offered mechanisms. */
  readonly mechanisms?: ReadonlyArray<Sasl.MechanismName> | undefined
}

export interface Running {
  /** Every listener, in the order of `listen`. */
  readonly endpoints: ReadonlyArray<Endpoint>
  /** The TCP port of the listener at `index`. */
  readonly port: (index?: number) => number
  /** Messages accepted so far, in order. */
  readonly received: ReadonlyArray<Received>
  /** Sessions opened so far (one per connection). */
  readonly sessions: () => number
  /** The connection of every session, in order. */
  readonly connections: ReadonlyArray<ConnectionInfo>
}

/** A TCP listener on 127.0.0.1 with a port of the kernel's choice. */
export const tcp = (implicitTls = false) => ({
  endpoint: { _tag: "Tcp" as const, host: "127.0.0.1", port: 0 },
  implicitTls
})

/** A Unix socket listener. */
export const unix = (path: string) => ({ endpoint: { _tag: "Unix" as const, path } })

const recordingBackend = (
  behaviour: Behaviour,
  received: Array<Received>,
  sessions: { count: number },
  connections: Array<ConnectionInfo>
) =>
  Effect.gen(function*() {
    const users = behaviour.users
    let auth: Sasl.ServerMechanisms | undefined
    if (users !== undefined) {
      const scram = new Map<string, Sasl.ScramCredential>()
      for (const [user, password] of Object.entries(users)) {
        scram.set(user, yield* Effect.orDie(Sasl.deriveScramCredential(password)))
      }
      const secret = (user: string) => Effect.succeed(users[user] === undefined ? undefined : Redacted.make(users[user]))
      auth = Sasl.serverMechanisms({
        password: Sasl.passwordVerifier(secret),
        cramMd5: secret,
        scramSha256: (user) => Effect.succeed(scram.get(user))
      }, { mechanisms: behaviour.mechanisms, hostname: "localhost" })
    }
    return Backend.of({
      newSession: (info) =>
        Effect.sync((): Session => {
          sessions.count++
          connections.push(info)
          let from: Address | null = null
          let mailOptions: MailOptions = {}
          let rcpts: Array<{ readonly to: Address; readonly options: RcptOptions }> = []
          const collect = (body: Stream.Stream<Uint8Array, SmtpError | TransportError>) =>
            Stream.mkUint8Array(body).pipe(Effect.map((bytes) => {
              received.push({
                connection: info.id,
                helo: info.helo(),
                tls: info.tls(),
                authenticatedAs: info.authenticatedAs(),
                from,
                mailOptions,
                rcpts,
                body: bytes
              })
            }))
          const session: Session = {
            mail: (address, options) =>
              Effect.sync(() => {
                from = address
                mailOptions = options
                rcpts = []
              }),
            rcpt: (to, options) => {
              const refusal = behaviour.rejectRcpt?.(to)
              if (refusal !== undefined) return Effect.fail(refusal)
              return Effect.sync(() => {
                rcpts.push({ to, options })
              })
            },
            data: collect,
            reset: Effect.sync(() => {
              from = null
              mailOptions = {}
              rcpts = []
            }),
            ...(auth === undefined ? {} : { auth })
          }
          const deliverTo = behaviour.deliverTo
          return deliverTo === undefined ? session : {
            ...session,
            lmtpData: (body, recipients) => Effect.as(collect(body), recipients.map(deliverTo))
          }
        })
    })
  })

/**
 * Starts a server for the rest of the test (its scope). TLS certificates from `testCerts()`
 * are configured unless `tls: undefined` is passed explicitly.
 */
export const start = (
  options: Partial<ServerOptions> & {
    readonly behaviour?: Behaviour | undefined
    /** Default Node's network (`NodeTransport.layer`). */
    readonly network?: Layer.Layer<Network> | undefined
  }
): Effect.Effect<Running, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const received: Array<Received> = []
    const sessions = { count: 0 }
    const connections: Array<ConnectionInfo> = []
    const certs = testCerts()
    const { behaviour, network, ...serverOptions } = options
    const backend = Layer.effect(Backend, recordingBackend(behaviour ?? {}, received, sessions, connections))
    const ctx = yield* Layer.build(
      layer({
        listen: [tcp()],
        tls: { key: certs.server.key, cert: certs.server.cert },
        ...serverOptions
      }).pipe(Layer.provide(backend), Layer.provide(network ?? NodeTransport.layer))
    )
    const endpoints = Context.get(ctx, SmtpServer).listeners.map((l) => l.endpoint)
    return {
      endpoints,
      port: (index = 0) => {
        const e = endpoints[index]
        if (e?._tag !== "Tcp") throw new Error(`listener ${index} is not TCP`)
        return e.port
      },
      received,
      sessions: () => sessions.count,
      connections
    }
  })
